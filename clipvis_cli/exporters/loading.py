"""Find and read what `clipvis segment` wrote, for `clipvis export`: no model runs here.

An export input is a `ytvis.json` (as `segment` writes it, or any YouTube-VIS file whose `videos[]` carry
`frame_indices` and `source`), a `segment` output folder holding one, or a folder searched recursively for such
files. Each video of each file becomes one `ExportVideo`: its `VideoInfo`, its tracks (track id = position of the
track among the video's annotations, 1-based, as `segment` numbers them) and the category names.

Problems never raise from `discover_export_inputs`: an argument without results comes back as an `ExportInput`
with `error` set, so one bad argument fails one input, not the batch. `load_videos` (and `read_videos`) raises
`ExportInputError` (one line naming the file) for a file that is not a usable YouTube-VIS document.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from clipvis.cli import rle
from clipvis.cli.exporters.spilled_tracks import SpilledSegmentations, SpilledTracks
from clipvis.cli.frame_numbers import decoded_from_video, recorded_frame_numbers
from clipvis.cli.inputs import (
    IMAGE_EXTENSIONS,
    exists_quietly,
    expand_arguments,
    is_dir_quietly,
    safe_stem,
    search_tree,
    skipped_name,
    tree_order,
)
from clipvis.cli.json_members import JsonMembersError, ObjectArray, RepeatedMemberError, read_members
from clipvis.cli.mask_store import MaskStoreError
from clipvis.cli.messages import PathError, error_reason, one_line, shown_path, unwritable_character
from clipvis.cli.results import TrackResult, VideoInfo, recorded_source
from clipvis.cli.writers.layout import MANIFEST_NAME
from clipvis.cli.writers.manifest import STATUS_COMPLETE, STATUS_FAILED, STATUS_INTERRUPTED, RunManifest

YTVIS_NAME = "ytvis.json"
# A video's folder name under the output root at most (file systems take 255 bytes: room for "-2", ".json", ...)
EXPORT_STEM_BYTES = 200


class ExportInputError(PathError, ValueError):
    """An export input cannot be used; `str()` is one line naming the file and the problem (as VideoReadError's)."""


@dataclass(frozen=True)
class ExportInput:
    """One results file to export (`path` is a ytvis.json), or an argument that found none (`error` set)."""

    path: Path
    error: str | None = None
    argument: str = ""
    # a segment output folder a folder search found without results because its run was not asked for them
    # (`--formats` without ytvis): why, said in one warning line; the folder is left out, not a failed input
    left_out: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.left_out is None

    def describe_error(self) -> str:
        return f"{shown_path(self.path)}: {self.error}" if self.error else ""


@dataclass
class ExportVideo:
    """One video's results read back from a YouTube-VIS file.

    `tracks[i].segmentations` has one compressed RLE (or None) per processed frame; `categories[k - 1]` names
    category id k. `results_file` is the file it was read from.
    """

    info: VideoInfo
    tracks: list[TrackResult]
    categories: list[str]
    results_file: Path
    category_ids: list[int] = field(default_factory=list)
    # called with the number of (track, frame) masks a format has handled (`frame_crops`): the export's progress
    progress: Callable[[int], None] | None = field(default=None, repr=False, compare=False)

    @property
    def source_path(self) -> Path:
        return Path(self.info.source)


def discover_export_inputs(arguments: Sequence[str], stdin_arguments: Sequence[str] = ()) -> list[ExportInput]:
    """Expand command-line arguments into results files (see module docstring); ``stdin_arguments`` are what an
    argument ``-`` stands for (`clipvis.cli.inputs.read_argument_lines`). Arguments are expanded as `segment`'s are
    (`clipvis.cli.inputs.expand_arguments`): the same errors, the same folders skipped."""
    return expand_arguments(arguments, stdin_arguments, _expand_path, _failed_input,
                            no_match="no results file matches this pattern")


def _failed_input(path: Path, reason: str, argument: str) -> ExportInput:
    return ExportInput(path, reason, argument)


def _expand_path(path: Path, argument: str, explicit: bool) -> list[ExportInput]:
    if not path.is_dir():
        if path.suffix.lower() != ".json":
            return [ExportInput(path, "not a results file (expected a ytvis.json or a segment output folder)",
                                argument)]
        return [ExportInput(path, argument=argument)]

    def search(directory: Path, visited: set[str], links: list[Path]) -> Iterator[ExportInput]:
        return _search(directory, argument, visited, links)

    found = sorted(search_tree(path, search), key=tree_order(path))  # as segment orders a folder's videos
    if explicit and [item.path for item in found] == [path] and found[0].left_out:  # named: what was asked fails
        return [ExportInput(path, found[0].left_out, argument)]
    if not found:
        return [ExportInput(path, f"no segment outputs here (no {YTVIS_NAME} in this folder or below)", argument)]
    return found


def _search(directory: Path, argument: str, visited: set[str], links: list[Path]) -> Iterator[ExportInput]:
    """The results files in `directory` and below, symbolic links to folders left in ``links``
    (`clipvis.cli.inputs.search_tree`); a folder that cannot be listed is an input that failed. Hidden entries and
    file servers' folders are skipped as `segment` skips them (`clipvis.cli.inputs.skipped_name`)."""
    real = os.path.realpath(directory)
    if real in visited:  # reached at its real path already (`search_tree`), or a symbolic-link loop
        return
    visited.add(real)
    try:
        entries = [entry for entry in directory.iterdir() if not skipped_name(entry.name)]
    except OSError as error:
        yield ExportInput(directory, f"cannot read directory ({error_reason(error)})", argument)
        return
    has_results = False
    for entry in entries:
        try:
            is_dir = entry.is_dir()
            # a results file named so whatever it is: a broken link or an unreadable file fails, not skipped
            is_results = not is_dir and entry.name == YTVIS_NAME
            is_link = is_dir and entry.is_symlink()
        except OSError as error:
            yield ExportInput(entry, f"cannot read ({error_reason(error)})", argument)
            continue
        if is_link:
            links.append(entry)
        elif is_dir:
            yield from _search(entry, argument, visited, links)
        elif is_results:
            has_results = True
            yield ExportInput(entry, argument=argument)
    if not has_results and any(entry.name == MANIFEST_NAME for entry in entries):
        # a segment output folder without results (its run failed, say): an input that failed, not one left out
        # without a word (a `ytvis` results file for servers would then lack that video); a run that was not asked
        # for results is left out with a warning; a run.json that is no segment run's (another tool's) is no input
        manifest = RunManifest.read(directory / MANIFEST_NAME)
        if manifest is not None:
            reason = _without_results(manifest)
            if _results_not_asked_for(manifest):
                yield ExportInput(directory, argument=argument, left_out=reason)
            else:
                yield ExportInput(directory, reason, argument)


def _results_not_asked_for(manifest: RunManifest) -> bool:
    """Whether the complete segment run of ``manifest`` wrote no results file because its --formats left it out."""
    formats = manifest.options.get("formats") if isinstance(manifest.options, dict) else None
    return manifest.status == STATUS_COMPLETE and isinstance(formats, list) and "ytvis" not in formats


def _without_results(manifest: RunManifest) -> str:
    """Why the segment output folder of ``manifest`` (its run.json) has no results file: its last run failed or was
    interrupted, or its results were not asked for or were removed."""
    missing = f"no {YTVIS_NAME}"
    error = one_line(str(manifest.error)) if manifest.error else ""
    if manifest.status == STATUS_FAILED:
        return f"segment run failed ({error or 'no reason recorded'}); {missing}"
    if manifest.status == STATUS_INTERRUPTED:
        cause = error if error.startswith("interrupted") else f"interrupted ({error or 'no cause recorded'})"
        return f"segment run {cause}; {missing}"
    if manifest.status != STATUS_COMPLETE:
        return (f"segment run did not finish ({MANIFEST_NAME} says {str(manifest.status)!r}: still running, or "
                f"killed); {missing}")
    if _results_not_asked_for(manifest):
        formats = manifest.options["formats"]
        return (f"{missing}: segment ran with --formats {','.join(map(str, formats))} (add ytvis to write the results "
                "export reads)")
    return f"{missing} (segment's complete run wrote one: moved or deleted since)"


class _CategoriesRead(Exception):
    """`category_names` has what it needs: the reading stops."""


def category_names(path: Path) -> list[str] | None:
    """The category names of the results file ``path`` (None where it cannot be read), without reading its masks
    where its categories come before its annotations, as segment writes them: the reading then stops at the first
    annotation."""
    names: list[str] = []

    def category(entry: object) -> None:
        if isinstance(entry, dict) and "name" in entry:
            names.append(str(entry["name"]))

    def annotation(_: object) -> None:
        if names:
            raise _CategoriesRead

    try:
        read_members(path, {"categories": category, "annotations": annotation})
    except _CategoriesRead:
        pass
    except (OSError, ValueError):  # the export of that input says what is wrong with it
        return None
    return names


def load_videos(path: Path) -> list[ExportVideo]:
    """Every video of a YouTube-VIS results file. Raises ExportInputError (one line).

    The file is read a track at a time (`clipvis.cli.json_members`) and each track's masks go to a temporary file
    (`SpilledTracks`) as they are read, so a 2-hour video's results are never all in memory: the tracks read their
    masks back from there. That file is closed when the tracks are garbage; `read_videos` closes it as its block
    ends."""
    spill = _spill_for(path)
    try:
        return _read_videos(Path(path), spill)
    except BaseException:
        spill.close()
        raise


@contextmanager
def read_videos(path: Path) -> Iterator[list[ExportVideo]]:
    """`load_videos`, the temporary file the tracks read their masks from closed as the block ends: `export` left it
    to the garbage collector (a ResourceWarning under ``python -X dev``), holding its disk space until then."""
    with _spill_for(path) as spill:
        yield _read_videos(Path(path), spill)


def _spill_for(path: Path) -> SpilledTracks:
    """A new temporary file for the masks of the results file ``path`` (ExportInputError naming it where none can be
    made)."""
    try:
        return SpilledTracks()
    except MaskStoreError as error:
        raise ExportInputError(path, str(error)) from None


def _read_videos(path: Path, spill: SpilledTracks) -> list[ExportVideo]:
    """`load_videos`' reading, the masks spilled to ``spill``."""
    tracks: dict[int, list[_ReadTrack]] = {}  # by video id, in file order
    annotations = 0  # read so far
    frames = 0  # of the annotation being read
    bad_mask: tuple[int, str] | None = None  # of the annotation being read: its first mask that is not a valid RLE
    counts = _CountsChecks()  # the annotation's compressed counts, checked many at a time

    def start_track() -> None:
        nonlocal annotations, frames, bad_mask
        annotations += 1
        frames, bad_mask = 0, None
        spill.start_track()

    def found(problem: tuple[int, str] | None) -> None:
        nonlocal bad_mask
        if problem is not None and (bad_mask is None or problem[0] < bad_mask[0]):
            bad_mask = problem

    def add_mask(segmentation: object) -> None:  # each of a track's masks as it is read: never a whole track
        nonlocal frames
        try:
            mask = _compressed(segmentation)
        except (KeyError, TypeError, ValueError, OverflowError) as error:  # said if the track is a listed video's
            spill.append(None)
            found((frames, f"malformed RLE ({error})"))
        else:
            spill.append(mask)
            if mask is not None:
                found(counts.add(frames, mask))
        frames += 1

    def end_track(annotation: object) -> None:
        if not isinstance(annotation, dict):
            raise TypeError(f"annotation {annotations + 1} is a {type(annotation).__name__}, not an object")
        found(counts.check())
        stored = spill.end_track()  # its masks, streamed (`add_mask`): its "segmentations" is [] here
        tracks.setdefault(int(annotation["video_id"]), []).append(_ReadTrack(annotation, stored, annotations,
                                                                             bad_mask))

    streamed = {"annotations": ObjectArray(start_track, end_track, {"segmentations": add_mask})}
    try:
        document = read_members(path, streamed)
        spill.finish()
    except FileNotFoundError:
        raise ExportInputError(path, "no such file") from None
    except MaskStoreError as error:
        raise ExportInputError(path, str(error)) from None
    except OSError as error:
        raise ExportInputError(path, f"cannot read ({error_reason(error)})") from None
    except (UnicodeDecodeError, JsonMembersError) as error:
        raise ExportInputError(path, f"not valid JSON ({error})") from None
    except RepeatedMemberError as error:
        raise ExportInputError(path, f"malformed YouTube-VIS content ({error})") from None
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        if isinstance(error, ExportInputError):
            raise
        raise ExportInputError(path, f"malformed YouTube-VIS content ({type(error).__name__}: {error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("videos"), list):
        raise ExportInputError(path, "not a YouTube-VIS file written by segment (no videos[] list)")
    try:
        categories = {int(c["id"]): str(c["name"]) for c in document.get("categories", [])}
        names = [categories.get(i, f"class_{i}") for i in range(1, max(categories, default=0) + 1)]
        for name in names:  # XML (CVAT, Label Studio) refuses control characters; a newline shifts labels.txt
            if (problem := unwritable_character(name)) is not None:
                raise ExportInputError(path, f"category name {name[:60]!r} holds {problem}")
        listed = document.get("annotations", [])
        if not isinstance(listed, list) and listed not in ({}, ""):  # an empty one of another kind: no tracks
            raise TypeError(f"annotations is a {type(listed).__name__}, not a list")
        # annotations of videos the file does not list are not read further (whatever they hold), as before
        return [_video(path, entry, tracks.get(int(entry["id"]), []), names) for entry in document["videos"]]
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        if isinstance(error, ExportInputError):
            raise
        raise ExportInputError(path, f"malformed YouTube-VIS content ({type(error).__name__}: {error})") from None


def _frame_indices(entry: dict, file_names: list, length: int, stride: int, source: Path | None) -> list[int]:
    """Which frame of its source each listed frame is: for frames decoded from a video, the numbers their names
    give (a frame deleted from the file by hand, or ``frame_indices`` a tool dropped, put every later frame's masks
    on the frame before it: `clipvis.cli.frame_numbers`), else ``frame_indices``, else every ``stride``-th frame."""
    recorded = entry.get("frame_indices")
    if file_names and decoded_from_video(source):
        numbers = recorded_frame_numbers(file_names, recorded)
        if numbers is not None:  # else names without numbers, and frame_indices missing or of another count
            return numbers
    return [int(i) for i in recorded or range(0, length * stride, stride)]


@dataclass
class _ReadTrack:
    """One annotation as `load_videos` read it: its members (``segmentations`` streamed to ``masks``: [] here), its
    place among the file's annotations (1-based) and its first mask that is not a valid RLE, as ``(frame, why)``
    (said only for a video the file lists)."""

    annotation: dict
    masks: SpilledSegmentations
    number: int
    problem: tuple[int, str] | None


class _CountsChecks:
    """The compressed counts of one annotation's masks as they are read, checked ``BATCH`` at a time: their run
    lengths must add up to the mask's height x width (`clipvis.cli.rle.compressed_counts_problems`, no mask decoded).
    A file's ``"counts": "!!!!"`` went into the coco, labelstudio and ytvis files as it was (a box 111426075 % wide),
    where the other formats refused it."""

    BATCH = 4096

    def __init__(self) -> None:
        self.frames: list[int] = []
        self.counts: list[str] = []
        self.pixels: list[int] = []

    def add(self, frame: int, mask: rle.RleDict) -> tuple[int, str] | None:
        """Take frame ``frame``'s mask; the first problem of those taken when a batch is checked, else None."""
        self.frames.append(frame)
        self.counts.append(mask["counts"])
        height, width = mask["size"]
        self.pixels.append(height * width)
        return self.check() if len(self.counts) >= self.BATCH else None

    def check(self) -> tuple[int, str] | None:
        """The first problem of the masks taken since the last check, as ``(frame, why)``, or None."""
        problems = rle.compressed_counts_problems(self.counts, self.pixels) if self.counts else []
        first = next(((frame, problem) for frame, problem in zip(self.frames, problems, strict=True)
                      if problem is not None), None)
        self.frames, self.counts, self.pixels = [], [], []
        return first


def _video(path: Path, entry: dict, annotations: list[_ReadTrack], categories: list[str]) -> ExportVideo:
    video_id = int(entry["id"])
    length = int(entry.get("length") or len(entry.get("file_names", [])))
    stride = int(entry.get("frame_stride", 1))
    source = recorded_source(entry)  # source_bytes for a name that is not valid UTF-8
    source_path = Path(source) if source else None  # another tool's file may name none: media formats then fail
    if source_path is not None and not source_path.is_absolute():  # older files held the path as typed
        beside = Path(path).parent / source_path
        # beside the results file first, then the current folder
        if exists_quietly(beside) or not exists_quietly(source_path):
            source_path = beside
        try:
            source_path = source_path.resolve()
        except OSError:  # a name no file system takes (too long): reported where the source is needed
            source_path = source_path.absolute()
    file_names = list(entry.get("file_names") or [])
    indices = _frame_indices(entry, file_names, length, stride, source_path)
    if len(indices) != length:
        raise ExportInputError(path, f"video {video_id}: {len(indices)} frame_indices for length {length}")
    fallback = source_path.stem if source_path is not None else f"video_{video_id}"
    # a folder name under the output root, however the file was edited (a name of "../../x" or "/x" wrote there)
    stem = safe_stem(str(entry.get("name") or Path(path).parent.name or fallback), max_bytes=EXPORT_STEM_BYTES)
    kind = ("images" if source_path is not None and (is_dir_quietly(source_path)
                                                     or source_path.suffix.lower() in IMAGE_EXTENSIONS) else "video")
    info = VideoInfo(
        video_id=video_id, source=str(source_path) if source_path is not None else "", stem=stem,
        height=int(entry["height"]),
        width=int(entry["width"]), fps=float(entry.get("fps") or 30.0), frame_stride=stride,
        frame_indices=indices, file_names=file_names, kind=kind, frame_times=_frame_times(entry, length),
        start_time=_start_time(entry),
    )
    tracks = []
    for rank, read in enumerate(annotations, start=1):
        if not isinstance(read.annotation["segmentations"], list):
            raise ExportInputError(path, f"video {video_id}: track {rank}: segmentations is not a list")
        if read.problem is not None:
            frame, problem = read.problem
            raise ExportInputError(path, f"video {video_id}: track {rank} (annotation {read.number}), frame {frame}: "
                                         f"{problem}")
        segmentations = read.masks
        if len(segmentations) != length:
            raise ExportInputError(
                path, f"video {video_id}: track {rank} has {len(segmentations)} segmentations for {length} frames"
            )
        if (wrong := _other_mask_size(segmentations, info.height, info.width)) is not None:
            frame, size = wrong
            raise ExportInputError(path, f"video {video_id}: track {rank}, frame {frame}: a mask of size {size}, the "
                                         f"video is [{info.height}, {info.width}] (height, width)")
        category_id = int(read.annotation["category_id"])
        if not 1 <= category_id <= len(categories):
            raise ExportInputError(path, f"video {video_id}: track {rank} has unknown category_id {category_id}")
        score = float(read.annotation.get("score", 1.0))
        if not math.isfinite(score):  # NaN dropped the track from every format; Infinity made invalid JSON
            raise ExportInputError(path, f"video {video_id}: track {rank} has score {json.dumps(score)}, not a "
                                         "finite number")
        tracks.append(TrackResult(rank, category_id, score, segmentations))
    return ExportVideo(info, tracks, list(categories), Path(path))


def _other_mask_size(masks: SpilledSegmentations, height: int, width: int) -> tuple[int, list[int]] | None:
    """The first frame whose mask is not ``height`` x ``width`` and its size, or None: known from the sizes the
    track's masks were spilled with, none read (each format refused such a mask its own way, or none did: Label
    Studio's boxes went out scaled to the wrong frame)."""
    video = [height, width]
    if masks.size is not None and list(masks.size) != video:
        first = next(frame for frame in range(len(masks)) if masks.ends[frame + 1] >= 0)  # its first mask
        return first, list(masks.size)
    return next(((frame, list(size)) for frame, size in masks.size_changes.items() if list(size) != video), None)


def _start_time(entry: dict) -> float:
    """segment's ``start_time`` of a video starting after its file (0 without a usable one)."""
    value = entry.get("start_time")
    try:
        seconds = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
    except (OverflowError, ValueError):
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _frame_times(entry: dict, length: int) -> list[float] | None:
    """segment's ``frame_times`` of a variable-frame-rate video (ignored unless one number per frame)."""
    times = entry.get("frame_times")
    if not isinstance(times, list) or len(times) != length:
        return None
    try:
        return [float(t) for t in times]
    except (TypeError, ValueError):
        return None


def _compressed(segmentation: object) -> rle.RleDict | None:
    """A segmentation as compressed RLE (None where the track has no mask): ground-truth style files hold
    uncompressed RLE (a list of counts), which pycocotools' area() refuses and COCO tools read as a crowd region;
    anything else (a polygon, an RLE without its size) raises KeyError, TypeError, ValueError or OverflowError."""
    if segmentation is None:
        return None
    if not isinstance(segmentation, dict):
        raise TypeError(f"a {type(segmentation).__name__}, not an RLE object")
    size = [int(v) for v in segmentation["size"]]
    if len(size) != 2 or min(size) < 0:
        raise ValueError(f"size {size} is not [height, width]")
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return rle.compressed({"size": size, "counts": counts})
    if not isinstance(counts, str):
        raise TypeError(f"counts is a {type(counts).__name__}")
    return {"size": size, "counts": counts}
