"""The processed frames of an exported video, decoded again from the source `segment` read (no model)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from clipvis.cli.exporters.loading import ExportInputError
from clipvis.cli.inputs import VideoSource, list_image_frames
from clipvis.cli.messages import path_text, shown_path
from clipvis.cli.results import VideoInfo, synthetic_file_names
from clipvis.cli.video_io import VideoReadError, open_reader

#: Formats that need the frames only for their images, which --no-media leaves out (README "Export").
MEDIA_OPTIONAL = ("coco", "cvat-images", "mots-png")
#: Formats that carry the source video itself (README "Export").
CARRY_THE_VIDEO = ("labelstudio", "fiftyone")


def check_source(info: VideoInfo, results_file: Path, formats: tuple[str, ...] = ()) -> None:
    """Raise ExportInputError (one line) when the video that `info` was made from is not there; the message names
    the ``formats`` that need its frames, and says when --no-media would do without them."""
    source = Path(info.source) if info.source else None
    try:
        kind = source.stat().st_mode if source is not None else None
    except OSError:  # missing, or a name no file system takes (too long)
        kind = None
    if kind is not None and stat.S_ISFIFO(kind):  # its frames are read again, and opening a pipe waits for a writer
        raise ExportInputError(results_file, f"source {shown_path(source)} (videos[].source) is a named pipe (FIFO), "
                                             "not a video file to read the frames again from")
    if kind is not None:
        return
    carry = [name for name in formats if name in CARRY_THE_VIDEO]
    framed = [name for name in formats if name not in CARRY_THE_VIDEO]
    needs = [f"{', '.join(group)} need{'s' if len(group) == 1 else ''} {what}"
             for group, what in ((framed, "its frames"), (carry, "the video file itself")) if group]
    needing = "; ".join(needs) if needs else "this format needs the frames"
    optional = [name for name in formats if name in MEDIA_OPTIONAL]
    if optional and len(optional) == len(formats):
        needing += " (--no-media writes them without the images)"
    elif optional:
        needing += f" (--no-media writes {', '.join(optional)} without the images)"
    if source is None:
        raise ExportInputError(results_file, f"the results name no source video (videos[].source); {needing}; "
                                             "cvat-video, mots-txt, png-masks and ytvis do not")
    raise ExportInputError(results_file, f"source video {shown_path(source)} (videos[].source) not found; {needing}")


def check_frame_size(info: VideoInfo, results_file: Path, source: Path, height: int, width: int) -> None:
    """Raise ExportInputError (one line) when the source's frames are not the size the results were made at."""
    if (height, width) != (info.height, info.width):
        raise ExportInputError(results_file, f"source {shown_path(source)} is {width}x{height}, the results "
                                             f"{info.width}x{info.height} (not the video these results were made "
                                             "from)")


def processed_frames(info: VideoInfo, results_file: Path) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(position, frame)` for every processed frame of `info` (H×W×3 uint8 RGB), in order.

    Raises ExportInputError when the source is missing, or its frames differ from the processed ones.
    """
    check_source(info, results_file)
    if not info.frame_indices:  # a video with no processed frames exports as empty, in every format
        return
    source_path = Path(info.source)
    wanted = info.frame_indices
    if info.kind == "images":
        named = _named_frames(info, results_file, source_path) if source_path.is_dir() else None
        if named is not None:  # the very files the results name, whatever the folder gained or lost since
            source = VideoSource(source_path, kind="images", frame_files=tuple(named))
            wanted = list(range(len(named)))
        else:
            files = tuple(list_image_frames(source_path)) if source_path.is_dir() else (source_path,)
            source = VideoSource(source_path, kind="images", frame_files=files)
    else:
        source = VideoSource(source_path, kind="video")
    regular = all(index == position * info.frame_stride for position, index in enumerate(wanted))
    reader = open_reader(source, stride=info.frame_stride if regular else 1,
                         max_frames=len(wanted) if regular else None)
    position = 0
    try:
        for index, frame in reader:
            if position == len(wanted):
                break
            if index != wanted[position]:
                if regular or index > wanted[position]:
                    break
                continue
            check_frame_size(info, results_file, source_path, frame.shape[0], frame.shape[1])
            yield position, frame
            position += 1
    except VideoReadError as error:
        raise ExportInputError(results_file, f"source video: {error}") from None
    if position != len(wanted):
        raise ExportInputError(results_file, f"source {shown_path(source_path)} has fewer frames than the results "
                                             f"({position} of {len(wanted)} found)")


def _named_frames(info: VideoInfo, results_file: Path, folder: Path) -> list[Path] | None:
    """The image files of an image-folder video that the results' ``file_names`` name, one per processed frame, in
    order: an image added to the folder (or one removed) after ``segment`` shifts the folder's natural order, not
    these. None when the results name no files (their ``file_names`` are the synthetic ``<stem>/<index:05d>.jpg``
    that another tool's file without names gets) and the folder does not hold every one of those names (a
    YouTube-VIS folder's ``00000.jpg``, ``00005.jpg``, ... holds some): the frames are then taken by position.
    Raises ExportInputError (one line, naming the folder and the first missing file) when a named file is not
    there."""
    names = [name.rsplit("/", 1)[-1] for name in info.file_names]
    listed = {path_text(file.name): file for file in list_image_frames(folder)}  # names as recorded (\xNN escapes)
    if info.file_names == synthetic_file_names(info.stem, info.frame_indices) and not all(
            name in listed for name in names):
        return None
    files = []
    for name in names:
        file = listed.get(name)
        if file is None:
            file = folder / name
            if not file.is_file():
                raise ExportInputError(results_file, f"source folder {shown_path(folder)} has no frame "
                                                     f"{shown_path(name)} (named in the results' file_names): not the "
                                                     "folder the results were made from, or it changed since")
        files.append(file)
    return files


def save_image(path: Path, frame: np.ndarray, quality: int = 95) -> None:
    """Write an RGB frame as JPEG (or PNG by suffix)."""
    image = Image.fromarray(frame)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, quality=quality)
    else:
        image.save(path)
