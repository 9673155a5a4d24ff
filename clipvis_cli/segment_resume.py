"""`segment`'s resume policy: whether an input an earlier run left in its output folder is complete with this run's
settings (`--skip-existing` skips it), complete but for files a person corrected since (skipped too), or holds files
this run may not replace (`replacement_refusal`: the input fails, nothing replaced). Why a completed input runs
again all the same is clipvis.cli.rerun's; the run itself is clipvis.cli.segment.SegmentRunner's."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from clipvis.cli.inputs import VideoSource
from clipvis.cli.messages import shown_path
from clipvis.cli.writers.manifest import RunManifest


class RefusedReplacement(RuntimeError):
    """A file the run would replace was changed by hand while the model ran (`replacement_refusal`): its message,
    one line, names the file."""


def complete_for_any(previous: RunManifest | None, identities: Iterable[tuple[str, Mapping[str, Any]]],
                     vocabulary: Sequence[str], source: VideoSource, directory: Path | None = None) -> bool:
    """Whether ``previous`` (the folder's run.json) records a complete run of ``source`` under one of this run's
    ``identities`` (``(weights, result options)``: clipvis.cli.segment.SegmentOptions.identities) and
    ``vocabulary``; with ``directory``, its outputs there as it wrote them too (`RunManifest.is_complete_for`)."""
    return previous is not None and any(previous.is_complete_for(weights, vocabulary, options, source, directory)
                                        for weights, options in identities)


def corrected_files(directory: Path, previous: RunManifest | None) -> set[str]:
    """The files of ``directory`` that a clipvis run wrote (``previous`` run.json) and a person corrected since
    (`RunManifest.corrected_files`), but for those an export wrote over since and left as it wrote them (its record
    says so: `clipvis.cli.exporters.export_record.edited_export`)."""
    if previous is None:
        return set()
    corrected = previous.corrected_files(directory)
    if not corrected:
        return corrected
    from clipvis.cli.exporters.export_record import edited_export, read_export_record

    record = read_export_record(directory)
    return {name for name in corrected if name not in record or edited_export(directory, name, record) is not None}


def complete_but_corrected(previous: RunManifest | None, identities: Iterable[tuple[str, Mapping[str, Any]]],
                           vocabulary: Sequence[str], source: VideoSource, directory: Path,
                           corrected: set[str]) -> str | None:
    """The first of the ``corrected`` files (`corrected_files`) of a complete run with this run's settings (the
    others as clipvis wrote them, none missing or cut short), or None: such an input is complete, not to be run
    again."""
    if not corrected or previous is None or not complete_for_any(previous, identities, vocabulary, source):
        return None
    damaged = set(previous.changed_files(directory)) - corrected
    if damaged or not all((directory / name).is_file() for name in previous.output_names):
        return None
    return min(corrected)


def replacement_refusal(directory: Path, previous: RunManifest | None, corrected: set[str],
                        file_names: Iterable[str]) -> str | None:
    """Why this run may not put its files (``file_names``) in ``directory`` (one line), or None: a file it would
    replace is one of the ``corrected`` (`corrected_files`: changed by hand since a clipvis run wrote it), was edited
    since an export wrote it, or neither segment nor an export wrote it."""
    if previous is None:  # a folder of this run's own (claim_output_folder)
        return None
    from clipvis.cli.exporters.export_record import edited_export, read_export_record

    ours = set(previous.clipvis_files)
    record = read_export_record(directory)
    advice = "nothing was replaced (move it away to segment this input again, or segment into another -o)"
    for name in sorted(set(file_names)):
        path = directory / name
        if not (path.exists() or path.is_symlink()):
            continue
        if name in record:  # an export wrote it last (segment takes its names back when it writes them)
            edited = edited_export(directory, name, record)
            if edited is not None:
                return f"{shown_path(path)}: changed since clipvis exported it ({edited or name}); {advice}"
        elif name in ours:
            if name in corrected:
                return f"{shown_path(path)}: changed since clipvis segment wrote it; {advice}"
        else:
            return f"{shown_path(path)}: exists and is not a file clipvis wrote; {advice}"
    return None
