"""Which frame of its source video each frame of a results or annotation file is.

A YouTube-VIS file made by `clipvis segment` names a video's frames by their number in the source video
(`clip/00012.jpg`; its coco.json `frame_000012.jpg`) and lists the numbers again in `frame_indices`. A person who
deletes a frame by hand, or a tool that drops `frame_indices`, leaves the names: they say which frame each is, so
train, evaluate and export read frames decoded from a video by the numbers their names give (counting positions
instead moved every later frame onto the next one's masks).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from clipvis.cli.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

_NUMBERED_FRAME = re.compile(r"(?:frame_)?(\d+)\.[A-Za-z]+")  # segment's `00012.jpg` (ytvis), `frame_000012.jpg`


def frame_number_in_name(name: str) -> int | None:
    """The source frame number a video frame's file name gives (`clip/00012.jpg`, YouTube-VIS's naming, which
    segment's ytvis.json uses; `clip/frame_000012.jpg`, its coco.json's and CVAT's), else None."""
    match = _NUMBERED_FRAME.fullmatch(re.split(r"[\\/]", str(name))[-1])
    return int(match.group(1)) if match else None


def video_frame_numbers(names: list[Any], recorded: Any, from_video: bool) -> list[int]:
    """The source frame of each of a video's ``names``: for frames decoded from a recorded video (``from_video``), the
    number each name gives (a hand edit that dropped a name, or a tool that dropped ``frame_indices``, shifted every
    later frame onto the next one's masks); else ``recorded`` (``frame_indices``), else (frames read from files, a
    dataset's) positions. ValueError where that cannot be told: names that give no number, from a video, with no
    ``frame_indices`` or one of another count."""
    if not from_video:  # read from files by name: the numbers are only the record's (a stale count is no matter)
        indices = [int(i) for i in recorded] if recorded else []
        return indices if len(indices) == len(names) else list(range(len(names)))
    numbers = [frame_number_in_name(name) for name in names]
    if None not in numbers:
        return [int(n) for n in numbers]
    if recorded:
        indices = [int(i) for i in recorded]
        if len(indices) != len(names):
            raise ValueError(f"frame_indices lists {len(indices)} frames and file_names {len(names)}")
        return indices
    if names:
        raise ValueError("its file names give no frame number and it has no frame_indices")
    return []


def increasing_from_zero(numbers: list[int]) -> bool:
    """Whether frame numbers can be read in one pass of a video: at least one, none below 0, each above the last."""
    return bool(numbers) and numbers[0] >= 0 and all(a < b for a, b in zip(numbers, numbers[1:], strict=False))


def recorded_frame_numbers(names: list[Any], recorded: Any) -> list[int] | None:
    """The frames of its recorded video a file's video entry lists, for frames decoded from it: the numbers its
    ``names`` give, else ``recorded`` (``frame_indices``: all there is without names), as `video_frame_numbers`
    tells them; None where that cannot be told or they cannot be read in one pass (`increasing_from_zero`)."""
    try:
        numbers = video_frame_numbers(names, recorded, from_video=True) if names else [int(i) for i in recorded or []]
    except (TypeError, ValueError):
        return None
    return numbers if increasing_from_zero(numbers) else None


def decoded_from_video(source: Path | None) -> bool:
    """Whether the frames of a recorded ``source`` are decoded from a video: a file that is no image, or an animated
    one (a still image segmented alone keeps its own name: `0042.png` is not frame 42), or, where it is gone
    (moved), a name with a video's extension (an image folder moved away is still read by name)."""
    if source is None:
        return False
    suffix = source.suffix.lower()
    if source.is_file():
        return suffix not in IMAGE_EXTENSIONS or _animated(source)
    return not source.exists() and suffix in VIDEO_EXTENSIONS


def _animated(path: Path) -> bool:
    """Whether an image file holds several pictures (an animated WebP or PNG, which segment decodes as a video and
    whose frames it names by number as a video's)."""
    from PIL import Image  # only for an image file recorded as a source

    from clipvis.cli.video_io import picture_count  # as segment counts them: a phone's MPO photo is one still

    try:
        with Image.open(path) as image:
            return picture_count(image) > 1
    except Exception:  # noqa: BLE001 - not an image Pillow reads: a still, as its suffix says
        return False
