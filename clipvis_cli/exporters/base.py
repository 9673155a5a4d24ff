"""What every export format shares: the options, track selection, per-frame mask access and the staging folder
that makes each format's output appear complete or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from clipvis.cli import rle
from clipvis.cli.atomic import (
    TEMP_MARKER,
    OutputNotWritableError,
    atomic_write_text,
    ensure_output_dir,
    is_temp_file_name,
    remove_stale_temp_files,
    replaced_folder_name,
    replaced_folder_of,
)
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.json_io import parse_json
from clipvis.cli.locks import LOCK_NAME, FolderLock, remove_unused_folder
from clipvis.cli.messages import shown_path
from clipvis.cli.results import TrackResult
from clipvis.cli.writers.layout import MANIFEST_NAME, YTVIS_NAME
from clipvis.cli.writers.manifest import RunManifest

if TYPE_CHECKING:
    from clipvis.cli.evaluation.ground_truth import VideoGroundTruth
from clipvis.weights.cache_files import new_folder_mode

STAGING_PREFIX = ".export-"  # staging folders are `.export-XXXX.tmp`: temporary names (clipvis.cli.atomic)


@dataclass(frozen=True)
class ExportOptions:
    """Choices shared by the formats. `classes` None keeps every class; `media` False skips frame images where
    the format can do without them; `zip_results` zips the ytvis results file under `results_name`;
    `media_url` prefixes the video's file name in Label Studio tasks."""

    min_score: float = 0.0
    classes: tuple[str, ...] | None = None
    media: bool = True
    zip_results: bool = False
    results_name: str = "results.json"
    media_url: str = ""  # labelstudio: URL prefix under which Label Studio serves the video
    measure_polygons: bool = True  # cvat-video: the polygons' mean IoU with the masks (export reports it)
    # ytvis: the GT whose video and category ids the results file takes (`--gt`), matched by frames' names and class
    # names; None keeps the inputs' ids
    gt: VideoGroundTruth | None = None


def class_key(name: str) -> str:
    """How --classes matches a class name: case aside, and composed or decomposed accents alike (NFC), so a name
    typed on macOS (decomposed) finds the class segment wrote."""
    return unicodedata.normalize("NFC", name).casefold()


def select_tracks(video: ExportVideo, options: ExportOptions) -> ExportVideo:
    """The video with only the tracks scoring >= min_score whose class is in `classes` (track ids kept); the
    declared labels (`category_ids`) are every class, or the chosen ones, in vocabulary order."""
    if options.classes is None:
        wanted = set(range(1, len(video.categories) + 1))
    else:
        names = {class_key(name) for name in options.classes}
        wanted = {i for i, name in enumerate(video.categories, start=1) if class_key(name) in names}
    tracks = [t for t in video.tracks if t.score >= options.min_score and t.category_id in wanted]
    return replace(video, tracks=tracks, category_ids=sorted(wanted))


def frame_masks(tracks: list[TrackResult], position: int,
                progress: Callable[[int], None] | None = None) -> list[tuple[TrackResult, np.ndarray]]:
    """The (track, H×W bool mask) pairs of the tracks with a non-empty mask on processed frame `position`;
    ``progress`` (an ExportVideo's) is told how many tracks' masks were handled."""
    present = []
    for track in tracks:
        segmentation = track.segmentations[position]
        if segmentation is None:
            continue
        mask = rle.decode(segmentation)
        if mask.any():
            present.append((track, mask))
    if progress is not None:
        progress(len(tracks))
    return present


def frame_crops(tracks: list[TrackResult], position: int, height: int, width: int,
                progress: Callable[[int], None] | None = None) -> list[tuple[TrackResult, rle.MaskCrop]]:
    """The (track, mask cut to its box) pairs of the tracks with a non-empty mask on processed frame `position` of
    an H×W video, as `frame_masks` gives them but without decoding any mask whole (`clipvis.cli.rle.mask_crops`);
    ``progress`` is told how many tracks' masks were handled."""
    crops = rle.mask_crops([track.segmentations[position] for track in tracks], height, width)
    if progress is not None:
        progress(len(tracks))
    return [(track, crop) for track, crop in zip(tracks, crops, strict=True) if crop is not None]


class Exporter:
    """One output format. `export` writes one video's files into `directory` (a staging folder) and returns the
    paths of the top-level entries it made. `needs_media`: the format cannot be written without the source video's
    frames; `uses_media`: it writes frames when `options.media` (missing frames are then an error too);
    `needs_video_file`: it carries the source video file itself, so an image-folder source cannot have it."""

    name: str = ""
    description: str = ""
    needs_media: bool = False
    uses_media: bool = False
    needs_video_file: bool = False  # carries the source video itself: an image-folder source cannot be exported

    # what may be wrong with the last export's files (media the tool may not play), set by `export`; none by default
    warnings: Sequence[str] = ()

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        raise NotImplementedError

    def wants_frames(self, options: ExportOptions) -> bool:
        return self.needs_media or (self.uses_media and options.media)


# Which video each entry of an export folder was exported from, and its files then:
# {"entries": {name: {"from": identity, "files": {path: [size, mtime_ns]}}}}. An entry that exists and is not
# recorded as this video's export (nor listed by segment's run.json there), or whose files changed, is never replaced.
EXPORT_RECORD = ".clipvis-export.json"


class ExportConflictError(OSError):
    """An export would replace a file or folder that clipvis did not export from the same video; one line."""


def export_identity(video: ExportVideo) -> dict[str, object]:
    """What an export folder's record says an entry was exported from: the results file and the video in it."""
    return {"results": str(Path(os.path.abspath(video.results_file))), "video_id": video.info.video_id}


def read_export_record(folder: Path) -> dict[str, dict]:
    """The folder's record of exported entries ({} without a readable one)."""
    try:
        entries = parse_json((folder / EXPORT_RECORD).read_text(encoding="utf-8")).get("entries", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return entries if isinstance(entries, dict) else {}


def _own_entries(folder: Path, record: dict[str, dict]) -> list[str]:
    """The names in `folder` that are not clipvis' lock, record or temporary files (nor a recorded entry moved aside
    by an export killed while it put its new one in place)."""
    try:
        return [e.name for e in folder.iterdir()
                if e.name not in (LOCK_NAME, EXPORT_RECORD) and not is_temp_file_name(e.name)
                and replaced_folder_of(e.name) not in record]
    except FileNotFoundError:
        return []


def _write_record(folder: Path, record: dict[str, dict]) -> None:
    atomic_write_text(folder / EXPORT_RECORD, json.dumps({"entries": record}, indent=1) + "\n")


def _entry_identity(entry: object) -> object:
    """The video an entry of the record (``{"from": identity, "files": ...}``) was exported from."""
    return entry.get("from") if isinstance(entry, dict) else None


def _file_stats(entry: Path) -> dict[str, list[int]]:
    """Every file of an exported entry (a file, or a folder walked) with its size and modification time."""
    if entry.is_file():
        status = entry.stat()
        return {"": [status.st_size, status.st_mtime_ns]}
    stats = {}
    for path in sorted(entry.rglob("*")):
        if path.is_file():
            status = path.stat()
            stats[path.relative_to(entry).as_posix()] = [status.st_size, status.st_mtime_ns]
    return stats


def _changed_files(entry: Path, recorded: object) -> list[str]:
    """The files of ``entry`` added or changed since the export recorded them ([] when the record has no list)."""
    files = recorded.get("files") if isinstance(recorded, dict) else None
    if not isinstance(files, dict):
        return []
    now = _file_stats(entry)
    changed = [name for name in sorted(now) if now[name] != files.get(name)]
    # a hard link to the source video (labelstudio's media/, fiftyone's data/) changes with the source, not by hand
    return [name or entry.name for name in changed if (entry / name if name else entry).stat().st_nlink == 1]


def edited_export(folder: Path, name: str, record: dict[str, dict]) -> str | None:
    """Of the entry ``name`` of ``folder``, which an export ``record``ed: a file added or edited since (corrections),
    or None (`segment` replaces such an entry only while it is as exported)."""
    entry = folder / name
    if name not in record or not entry.exists():
        return None
    changed = _changed_files(entry, record[name])
    return changed[0] if changed else None


def forget_exported(folder: Path, names: Iterable[str]) -> None:
    """Drop ``names`` from ``folder``'s export record: `segment` wrote them since (under the folder's lock), so they
    are its files, as its run.json says, no longer an export's."""
    names = set(names)
    record = read_export_record(folder)
    if names & set(record):
        try:
            _write_record(folder, {name: entry for name, entry in record.items() if name not in names})
        except OSError:  # best effort: the record then names them, and an export checks them as its own
            pass


# What the record says of a results file `clipvis export --to ytvis` wrote (clipvis.cli.exporters.ytvis
# RESULTS_IDENTITY): its "from" is the same for every such file (one may replace another), its "inputs" the results
# files it was made from
RESULTS_FILE_SOURCE = "clipvis export --to ytvis"


def _made_from(folder: Path, entry: object) -> list[str]:
    """The results files the record's ``entry`` of ``folder`` was exported from: a per-video export's one, a results
    file's "inputs"; a results file recorded before they were ("from" alone): the ytvis.json beside it, which is where
    such an export writes by default."""
    if not isinstance(entry, dict):
        return []
    source = entry.get("from")
    results = source.get("results") if isinstance(source, dict) else None
    if results != RESULTS_FILE_SOURCE:
        return [results] if isinstance(results, str) else []
    inputs = entry.get("inputs")
    if inputs is None:
        return [str(folder / YTVIS_NAME)]
    return [path for path in inputs if isinstance(path, str)] if isinstance(inputs, list) else []


def exports_from(folder: Path, results_file: Path) -> list[str]:
    """The entries of ``folder`` that `clipvis export` made from ``results_file`` (its record says so: a per-video
    export, or a results file (`--to ytvis`) with it among its inputs) and that are still there, sorted: when
    `segment` replaces that file, they show the earlier results."""
    wanted = os.path.realpath(results_file)
    return sorted(name for name, entry in read_export_record(folder).items()
                  if any(os.path.realpath(path) == wanted for path in _made_from(folder, entry))
                  and os.path.lexists(folder / name))


def folder_takes_export(folder: Path, identity: dict[str, object]) -> bool:
    """Whether an export of the video `identity` may go into `folder`: it does not exist, holds nothing, or holds
    only what earlier exports of this same video wrote (a folder of another video, or of someone's files, is not
    written into: the next name is taken, as `segment` does)."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    record = read_export_record(folder)
    return all(_entry_identity(record.get(name)) == identity for name in _own_entries(folder, record))


@contextmanager
def staged_directory(final_parent: Path, identity: dict[str, object] | None = None,
                     replaceable: Iterable[str] = (), what: str = "an export of this video",
                     inputs: Sequence[str] | None = None) -> Iterator[Path]:
    """A fresh hidden folder inside `final_parent` to write into; on success every entry in it replaces the entry
    of the same name in `final_parent` (each with one rename), on failure the folder is deleted and
    `final_parent` is untouched.

    An existing entry is replaced only when the folder's record (EXPORT_RECORD) says it was exported from the video
    `identity`, or when it is one of `replaceable` (the files segment's run.json lists there); otherwise
    ExportConflictError ("exists and is not `what` by clipvis"), and nothing is replaced. The record is updated
    with the entries written (and ``inputs``, where given: the results files they were made from, which
    `exports_from` reads; a per-video export's is its ``identity``'s).

    The folder's lock (`clipvis.cli.locks`, the one `segment` holds while it writes a video's folder) is held
    throughout: another process writing there makes this raise FolderBusyError, and what a killed export or
    segment left there (staging folders, temporary files) is removed first."""
    made = not final_parent.exists()
    ensure_output_dir(final_parent)
    try:
        with _locked_staging(final_parent, identity, replaceable, what, inputs) as staging:
            yield staging
    except BaseException:
        if made:  # a folder this export made for nothing: not left holding only the lock file
            remove_unused_folder(final_parent)
        raise


@contextmanager
def _locked_staging(final_parent: Path, identity: dict[str, object] | None,
                    replaceable: Iterable[str], what: str, inputs: Sequence[str] | None = None) -> Iterator[Path]:
    made_from = {} if inputs is None else {"inputs": list(inputs)}
    with FolderLock(final_parent):
        # and puts back (or deletes) what an export killed between a folder's two renames had moved aside
        remove_stale_temp_files(final_parent, exported=read_export_record(final_parent))
        try:
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix=TEMP_MARKER, dir=final_parent))
        except OSError as error:
            raise OutputNotWritableError(final_parent, error) from error
        try:
            yield staging
            record = read_export_record(final_parent)
            names = sorted(entry.name for entry in staging.iterdir())
            allowed = set(replaceable)
            for name in names:
                final = final_parent / name
                if not (final.exists() or final.is_symlink()) or name in allowed:
                    continue
                if identity is None or _entry_identity(record.get(name)) != identity:
                    segments = RunManifest.read(final_parent / MANIFEST_NAME)
                    made = ("changed since clipvis segment wrote it" if segments is not None and final.is_file()
                            and name in segments.clipvis_files else f"exists and is not {what} by clipvis")
                    raise ExportConflictError(
                        f"{shown_path(final)}: {made}; nothing was replaced (move it away, or export with another -o)"
                    )
                changed = _changed_files(final, record[name])
                if changed:  # files added or edited in an earlier export (corrections): not thrown away
                    shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
                    raise ExportConflictError(
                        f"{shown_path(final)}: changed since clipvis exported it ({shown}); nothing was replaced "
                        "(move it away, or export with another -o)"
                    )
            if identity is not None:  # first as this video's, without file stats: a kill while the entries move
                # into place leaves them the next export of this video replaces, not a folder it refuses
                record.update({name: {"from": identity, **made_from} for name in names})
                _write_record(final_parent, record)
            for name in names:
                _replace(staging / name, final_parent / name)
            if identity is not None:
                record.update({name: {"from": identity, **made_from, "files": _file_stats(final_parent / name)}
                               for name in names})
                _write_record(final_parent, record)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _replace(new: Path, final: Path) -> None:
    if new.is_dir():
        os.chmod(new, new_folder_mode())  # mkdtemp made it private; a folder gets the umask's mode, as its files do
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(replaced_folder_name(final.name))
        os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, final)


# The formats that name an image folder's frames by their position in clipvis' natural order (frame numbers,
# NNNNNN.png), not by the images' names: a tool that orders the folder otherwise puts their masks on other images
FRAME_NUMBERED_FORMATS = ("cvat-video", "mots-png", "mots-txt", "png-masks")


def frame_order_warning(folder: Path, names: Sequence[str], formats: Iterable[str]) -> str | None:
    """A warning for an image folder whose images' natural order (``names``: 1.jpg, 2.jpg, 10.jpg, clipvis' frame
    numbers) is not their order as text (1.jpg, 10.jpg, 2.jpg: CVAT's default "Sorting method"), for those of
    ``formats`` that number its frames: a task made with the default order puts their masks on other images. None
    where no format numbers frames or the two orders agree. Said by `clipvis export` (after the video's name) and
    `clipvis segment` (after its input's) alike."""
    numbered = [name for name in formats if name in FRAME_NUMBERED_FORMATS]
    as_text = sorted(names)
    if not numbered or as_text == list(names):
        return None

    def shown(order: Sequence[str]) -> str:
        return ", ".join(order[:3]) + (", ..." if len(order) > 3 else "")

    return (f"{', '.join(numbered)} number the images of {shown_path(folder)} in natural order "
            f"({shown(names)}), which is not their order as text ({shown(as_text)}): create the CVAT task with "
            '"Sorting method: Natural" (other tools: sort the names naturally), or the masks land on other images')
