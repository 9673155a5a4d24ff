"""Result types shared by the `segment` pipeline and its writers (no tensor math here).

A video's results are one `VideoInfo` (what was processed) plus a list of `TrackResult`s (one per
tracked object).
Category ids are 1-based indices into the vocabulary (`categories[category_id - 1]` is the class name).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal
from urllib.parse import quote_from_bytes, unquote_to_bytes

from clipvis.cli.messages import path_text
from clipvis.cli.rle import RleDict

#: Beside ``source`` in a ``videos[]`` entry, for a source path that is not valid UTF-8 (possible on Linux):
#: its bytes, percent-encoded. ``source`` itself shows the undecodable bytes as ``\xNN``, which is no path to read.
SOURCE_BYTES = "source_bytes"


def source_fields(source: str) -> dict[str, str]:
    """How a ``videos[]`` entry records the source path ``source`` (a path as Python holds it: an undecodable byte
    of the name is a lone surrogate): ``{"source": <the path as text>}``, plus ``source_bytes``, its exact bytes
    percent-encoded (``/`` and ASCII letters, digits, ``_.-~`` kept), when the name is not valid UTF-8. A valid UTF-8
    name gets ``source`` alone, as it always did."""
    fields = {"source": path_text(source)}
    try:
        raw = os.fsencode(source)
    except UnicodeEncodeError:  # a lone surrogate that no file name can hold: shown, nothing to record
        return fields
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        fields[SOURCE_BYTES] = quote_from_bytes(raw, safe="/")
    return fields


def recorded_source(entry: Mapping[str, Any]) -> str | None:
    """The source path a ``videos[]`` (or ``video_sources``) entry records, exactly (``source_fields``): from
    ``source_bytes`` when present, else ``source``; None when it names none."""
    encoded = entry.get(SOURCE_BYTES)
    if isinstance(encoded, str) and encoded:
        return os.fsdecode(unquote_to_bytes(encoded))
    source = entry.get("source")
    return source if isinstance(source, str) and source else None


@dataclass
class VideoInfo:
    """One processed video.

    `frame_indices[i]` is the index (0-based, in decode order) of the i-th processed frame in the source
    video; every per-frame list (`TrackResult.segmentations`, `file_names`) has one entry per processed
    frame.
    `height`/`width` are the displayed size (after rotation metadata), which is the size of every mask.
    `fps` is the source frame rate; the processed frames play at `fps / frame_stride` (`processed_fps`).
    `file_names` default to synthetic `<stem>/<frame_index:05d>.jpg` (`synthetic_file_names`); `kind` is "video"
    for a video file, "images" for an image folder (whose file_names are then the real image names). `frame_times`
    (seconds from the video's start, one per processed frame) is set only for a source whose frames are not evenly
    spaced at `fps` (variable frame rate); the overlay and Label Studio then place each frame at its own time.
    `start_time`: for a constant rate, the seconds from the file's start to frame 0 where the video starts later than
    the file (after its audio); Label Studio counts its frames from there. `end_time` (with `frame_times`): when the
    last processed frame stops showing, from its own duration (a GIF's last frame may show for seconds), where known.
    """

    video_id: int
    source: str
    stem: str
    height: int
    width: int
    fps: float | Fraction
    frame_stride: int
    frame_indices: list[int]
    file_names: list[str] = field(default_factory=list)
    kind: Literal["video", "images"] = "video"
    frame_times: list[float] | None = None  # seconds from the start per processed frame, for variable frame rates
    pixel_aspect: Fraction | None = None  # a pixel's width/height when not square (anamorphic source)
    start_time: float = 0.0  # constant rate: seconds from the file's start to frame 0 (a video after its audio)
    end_time: float | None = None  # variable rate: seconds from the file's start to the last frame's end

    def __post_init__(self) -> None:
        if not self.file_names:
            self.file_names = synthetic_file_names(self.stem, self.frame_indices)
        if len(self.file_names) != len(self.frame_indices):
            raise ValueError(
                f"VideoInfo {self.stem!r}: {len(self.file_names)} file_names "
                f"for {len(self.frame_indices)} frames"
            )
        if self.frame_times is not None and len(self.frame_times) != len(self.frame_indices):
            raise ValueError(
                f"VideoInfo {self.stem!r}: {len(self.frame_times)} frame_times for {len(self.frame_indices)} frames"
            )
        if self.frame_stride < 1:
            raise ValueError(f"VideoInfo {self.stem!r}: frame_stride must be >= 1, got {self.frame_stride}")

    @property
    def num_frames(self) -> int:
        """Number of processed frames."""
        return len(self.frame_indices)

    @property
    def processed_fps(self) -> Fraction:
        """Frame rate of the processed frames (source fps / stride) as an exact fraction."""
        return fps_fraction(self.fps) / self.frame_stride


@dataclass
class TrackResult:
    """One tracked object: its class, confidence and one mask per processed frame.

    `segmentations[i]` is a compressed COCO RLE at the video's (height, width) for processed frame i, or
    None where the object is absent (a list, or a ``StoredSegmentations`` that reads them from the mask store).
    """

    #: The id the output files show: 1.. in the order of the video's results (best score first, or the official
    #: evaluator's order with ``--exact``); not the model's 0-based query index (``VideoInstance.track_id``).
    track_id: int
    category_id: int  # 1..C in vocabulary order
    score: float
    segmentations: Sequence[RleDict | None]


def synthetic_file_names(stem: str, frame_indices: Sequence[int]) -> list[str]:
    """YouTube-VIS style relative frame names: `<stem>/<frame_index:05d>.jpg` (one per processed frame), with as
    many more digits as a video past frame 99,999 needs, for all its names (`00000.jpg` ... `99999.jpg`, then
    `100000.jpg`, sorted before `99999.jpg`, put its frames out of order for a tool that sorts the names)."""
    digits = max(5, len(str(max(frame_indices, default=0))))
    return [f"{stem}/{index:0{digits}d}.jpg" for index in frame_indices]


def fps_fraction(fps: float | Fraction) -> Fraction:
    """An exact frame-rate fraction (29.97002997 -> 30000/1001)."""
    if isinstance(fps, Fraction):
        return fps
    if fps <= 0:
        raise ValueError(f"frame rate must be positive, got {fps}")
    return Fraction(fps).limit_denominator(1001)


def check_tracks(video: VideoInfo, tracks: list[TrackResult], num_categories: int) -> None:
    """Raise ValueError if a track does not fit the video (wrong frame count, mask size or category id)."""
    for track in tracks:
        if len(track.segmentations) != video.num_frames:
            raise ValueError(
                f"track {track.track_id} of {video.stem!r} has {len(track.segmentations)} segmentations "
                f"for {video.num_frames} processed frames"
            )
        if not 1 <= track.category_id <= num_categories:
            raise ValueError(
                f"track {track.track_id} of {video.stem!r} has category_id {track.category_id}, "
                f"outside 1..{num_categories}"
            )
        # Masks read from a mask store all have its size: checked once, not by reading every mask (each writer checks
        # its tracks: three reads of every mask of the video before).
        known_size = getattr(track.segmentations, "mask_size", None)
        sizes = [known_size] if known_size is not None else \
            (rle["size"] for rle in track.segmentations if rle is not None)
        for size in sizes:
            if list(size) != [video.height, video.width]:
                raise ValueError(
                    f"track {track.track_id} of {video.stem!r} has a mask of size {list(size)}, "
                    f"video is {[video.height, video.width]}"
                )
