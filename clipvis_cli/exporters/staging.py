"""The locked staging folder that makes each export format's output appear complete or not at all: written inside
the destination, then each entry renamed into place, replacing only what the folder's export record says this video's
export wrote (docs/outputs.md)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from clipvis.cli.atomic import (
    TEMP_MARKER,
    OutputNotWritableError,
    ensure_output_dir,
    remove_stale_temp_files,
    replaced_folder_name,
)
from clipvis.cli.exporters.export_record import (
    changed_files,
    entry_identity,
    file_stats,
    read_export_record,
    write_export_record,
)
from clipvis.cli.locks import FolderLock, remove_unused_folder
from clipvis.cli.messages import shown_path
from clipvis.cli.writers.layout import MANIFEST_NAME
from clipvis.cli.writers.manifest import RunManifest
from clipvis.weights.cache_files import new_folder_mode

STAGING_PREFIX = ".export-"  # staging folders are `.export-XXXX.tmp`: temporary names (clipvis.cli.atomic)


class ExportConflictError(OSError):
    """An export would replace a file or folder that clipvis did not export from the same video; one line."""


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
                if identity is None or entry_identity(record.get(name)) != identity:
                    segments = RunManifest.read(final_parent / MANIFEST_NAME)
                    made = ("changed since clipvis segment wrote it" if segments is not None and final.is_file()
                            and name in segments.clipvis_files else f"exists and is not {what} by clipvis")
                    raise ExportConflictError(
                        f"{shown_path(final)}: {made}; nothing was replaced (move it away, or export with another -o)"
                    )
                changed = changed_files(final, record[name])
                if changed:  # files added or edited in an earlier export (corrections): not thrown away
                    shown = ", ".join(changed[:3]) + (", ..." if len(changed) > 3 else "")
                    raise ExportConflictError(
                        f"{shown_path(final)}: changed since clipvis exported it ({shown}); nothing was replaced "
                        "(move it away, or export with another -o)"
                    )
            if identity is not None:  # first as this video's, without file stats: a kill while the entries move
                # into place leaves them the next export of this video replaces, not a folder it refuses
                record.update({name: {"from": identity, **made_from} for name in names})
                write_export_record(final_parent, record)
            for name in names:
                _replace(staging / name, final_parent / name)
            if identity is not None:
                record.update({name: {"from": identity, **made_from, "files": file_stats(final_parent / name)}
                               for name in names})
                write_export_record(final_parent, record)
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
