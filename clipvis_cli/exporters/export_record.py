"""An export folder's record (EXPORT_RECORD) of the entries `clipvis export` wrote there: which video each was
exported from, and its files then, so that an export replaces only its own unchanged entries and `segment` knows
which exports show results it replaces (docs/outputs.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from clipvis.cli.atomic import atomic_write_text, is_temp_file_name, replaced_folder_of
from clipvis.cli.json_io import parse_json
from clipvis.cli.locks import LOCK_NAME
from clipvis.cli.writers.layout import YTVIS_NAME

if TYPE_CHECKING:
    from clipvis.cli.exporters.loading import ExportVideo

# Which video each entry of an export folder was exported from, and its files then:
# {"entries": {name: {"from": identity, "files": {path: [size, mtime_ns]}}}}. An entry that exists and is not
# recorded as this video's export (nor listed by segment's run.json there), or whose files changed, is never replaced.
EXPORT_RECORD = ".clipvis-export.json"


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


def write_export_record(folder: Path, record: dict[str, dict]) -> None:
    atomic_write_text(folder / EXPORT_RECORD, json.dumps({"entries": record}, indent=1) + "\n")


def entry_identity(entry: object) -> object:
    """The video an entry of the record (``{"from": identity, "files": ...}``) was exported from."""
    return entry.get("from") if isinstance(entry, dict) else None


def file_stats(entry: Path) -> dict[str, list[int]]:
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


def changed_files(entry: Path, recorded: object) -> list[str]:
    """The files of ``entry`` added or changed since the export recorded them ([] when the record has no list)."""
    files = recorded.get("files") if isinstance(recorded, dict) else None
    if not isinstance(files, dict):
        return []
    now = file_stats(entry)
    changed = [name for name in sorted(now) if now[name] != files.get(name)]
    # a hard link to the source video (labelstudio's media/, fiftyone's data/) changes with the source, not by hand
    return [name or entry.name for name in changed if (entry / name if name else entry).stat().st_nlink == 1]


def edited_export(folder: Path, name: str, record: dict[str, dict]) -> str | None:
    """Of the entry ``name`` of ``folder``, which an export ``record``ed: a file added or edited since (corrections),
    or None (`segment` replaces such an entry only while it is as exported)."""
    entry = folder / name
    if name not in record or not entry.exists():
        return None
    changed = changed_files(entry, record[name])
    return changed[0] if changed else None


def forget_exported(folder: Path, names: Iterable[str]) -> None:
    """Drop ``names`` from ``folder``'s export record: `segment` wrote them since (under the folder's lock), so they
    are its files, as its run.json says, no longer an export's."""
    names = set(names)
    record = read_export_record(folder)
    if names & set(record):
        try:
            write_export_record(folder, {name: entry for name, entry in record.items() if name not in names})
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
    return all(entry_identity(record.get(name)) == identity for name in _own_entries(folder, record))
