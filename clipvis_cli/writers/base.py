"""The one interface of `segment`'s output writers, and the factory that assembles them from `--formats`.

A writer has one job: write one file of one video. It names its `--formats` entry (`format`) and its file in the
video's output folder (`file_name`), and `write_video(path, video)` writes that file atomically and returns it:
through `clipvis.cli.atomic.atomic_output_path` (or the atomic_write_* helpers), whose file `SegmentRunner` keeps
under its temporary name until every writer of the video is done, then renames with the others.
`SegmentRunner` holds a list of them and knows nothing about any format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from clipvis.cli.results import TrackResult, VideoInfo

# Told how many masks a writer has just written (`SegmentedVideo.masks_written`).
MaskCounter = Callable[[int], None]


@dataclass
class SegmentedVideo:
    """One video's results, as every writer receives them.

    `tracks[i].segmentations` has one RLE (or None) per processed frame; `frames()` decodes the processed frames
    again, as `(frame_index, H×W×3 uint8 RGB)` pairs in the colours players show them in
    (`FrameReader.frames_as_players_show`), for writers that draw on them. `masks_written`, where given, is called
    by a writer that counts the masks it writes (ytvis, coco: each track's, `len(segmentations)` of it) with how many
    it has just written, a few hundred at a time, for the progress of its file (`WritingProgress`). `warn`, where
    given, is told what may be wrong with a file a writer wrote (one line each: an export format's media Label Studio
    or FiftyOne may not play), which `segment` says as the video's warnings once its files are in place.
    """

    info: VideoInfo
    tracks: Sequence[TrackResult]
    categories: Sequence[str]
    frames: Callable[[], Iterable[tuple[int, np.ndarray]]]
    masks_written: MaskCounter | None = None
    warn: Callable[[str], None] | None = None


class OutputWriter(Protocol):
    """Writes one output file of a segmented video."""

    format: str
    file_name: str
    # Whether `write_video` decodes and draws every frame (`video.frames()`): SegmentRunner runs such a writer first,
    # the others beside or after it.
    draws_frames: bool

    def refuses(self, source_kind: str, source_path: Path | None = None) -> str | None:
        """Why this writer cannot write its file for a source of ``source_kind`` ("video", "images") at
        ``source_path``, known before the model runs (one line); None when it can."""
        ...

    def write_video(self, path: Path, video: SegmentedVideo) -> Path: ...


class WriterDefaults:
    """The `OutputWriter` members most writers share, to inherit: draws no frames, refuses no source."""

    draws_frames: bool = False

    def refuses(self, source_kind: str, source_path: Path | None = None) -> str | None:
        """None: written for a video file and an image folder alike."""
        return None


# What `segment` writes when --formats is not given; clipvis.cli.output_formats.writer_formats() lists them all.
DEFAULT_FORMATS: tuple[str, ...] = ("ytvis", "coco", "overlay")
