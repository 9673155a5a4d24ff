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


@dataclass
class SegmentedVideo:
    """One video's results, as every writer receives them.

    `tracks[i].segmentations` has one RLE (or None) per processed frame; `frames()` decodes the processed frames
    again, as `(frame_index, H×W×3 uint8 RGB)` pairs, for writers that draw on them.
    """

    info: VideoInfo
    tracks: Sequence[TrackResult]
    categories: Sequence[str]
    frames: Callable[[], Iterable[tuple[int, np.ndarray]]]


class OutputWriter(Protocol):
    """Writes one output file of a segmented video."""

    format: str
    file_name: str
    # Whether `write_video` decodes and draws every frame (`video.frames()`): SegmentRunner runs such a writer first,
    # the others beside or after it.
    draws_frames: bool

    def refuses(self, source_kind: str) -> str | None:
        """Why this writer cannot write its file for a source of ``source_kind`` ("video", "images"), known before
        the model runs (one line); None when it can."""
        ...

    def write_video(self, path: Path, video: SegmentedVideo) -> Path: ...


class WriterDefaults:
    """The `OutputWriter` members most writers share, to inherit: draws no frames, refuses no source."""

    draws_frames: bool = False

    def refuses(self, source_kind: str) -> str | None:
        """None: written for a video file and an image folder alike."""
        return None


# What `segment` writes when --formats is not given; writer_formats() also lists clipvis export's formats.
DEFAULT_FORMATS: tuple[str, ...] = ("ytvis", "coco", "overlay")


def writer_formats() -> tuple[str, ...]:
    """The `--formats` names, in the order `segment` writes them (the JSON files first, the overlay, then the
    `clipvis export` formats)."""
    return tuple(_factories())


def create_writers(formats: Iterable[str], overlay_min_score: float = 0.2) -> list[OutputWriter]:
    """The writers for `formats` (any order, duplicates ignored), in `writer_formats()` order.

    Raises ValueError naming an unknown format.
    """
    wanted = set(formats)
    factories = _factories(overlay_min_score)
    unknown = sorted(wanted - set(factories))
    if unknown:
        raise ValueError(f"unknown output format(s) {', '.join(unknown)} (known: {', '.join(factories)})")
    return [factory() for name, factory in factories.items() if name in wanted]


def _factories(overlay_min_score: float = 0.2) -> dict[str, Callable[[], OutputWriter]]:
    from clipvis.cli.exporters import EXPORTERS
    from clipvis.cli.exporters.adapter import ExportFormatWriter
    from clipvis.cli.writers.coco import CocoWriter
    from clipvis.cli.writers.overlay import OverlayVideoWriter
    from clipvis.cli.writers.ytvis import YtvisWriter

    factories: dict[str, Callable[[], OutputWriter]] = {
        "ytvis": YtvisWriter,
        "coco": CocoWriter,
        "overlay": lambda: OverlayVideoWriter(min_score=overlay_min_score),
    }
    for name in EXPORTERS:  # clipvis export's per-video formats, one zip each (its "coco" folder is export-only)
        factories.setdefault(name, lambda name=name: ExportFormatWriter(name))
    return factories
