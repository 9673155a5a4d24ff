"""Output layout of `clipvis segment`: `OUTPUT/<stem>/{overlay.mp4, ytvis.json, coco.json, run.json}`, and which
folder an input gets.

A folder belongs to the source its run.json records (resolved path). `claim_output_folder` gives an input its own
folder, `stem/`, else `stem-2/`, `stem-3/`, … : one recording the same source, or a new one. A folder made by
another source (`a/clip.mp4` yesterday, `b/clip.mp4` today) or by someone else (files but no run.json) is never
written into. The choice is made under a lock on the output root, and the chosen folder stays locked while the
input is processed, so two processes never interleave in one folder.

Within one batch, the names are planned from the whole input list (`plan_folder_names`: the first `clip.mp4` gets
`clip/`, the second `clip-2/`), so shards of the batch (`--shard`, torchrun ranks) agree whatever order they run
in; a folder an earlier run made for the same source is still reused first.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clipvis.cli.atomic import OutputNotWritableError, ensure_output_dir, is_temp_file_name
from clipvis.cli.inputs import VideoSource
from clipvis.cli.locks import LOCK_NAME, FolderLock
from clipvis.cli.writers.manifest import RunManifest, source_fingerprint

OVERLAY_NAME = "overlay.mp4"
YTVIS_NAME = "ytvis.json"
COCO_NAME = "coco.json"
MANIFEST_NAME = "run.json"

_ROOT_LOCK_TIMEOUT_S = 60.0  # the root lock is held only while a folder is chosen: milliseconds
_MAX_SUFFIX = 10_000


@dataclass(frozen=True)
class VideoOutputPaths:
    """Where one input's outputs go."""

    directory: Path

    @classmethod
    def for_stem(cls, output_root: Path | str, stem: str) -> VideoOutputPaths:
        return cls(Path(output_root) / stem)

    @property
    def stem(self) -> str:
        return self.directory.name

    @property
    def overlay(self) -> Path:
        return self.directory / OVERLAY_NAME

    @property
    def ytvis(self) -> Path:
        return self.directory / YTVIS_NAME

    @property
    def coco(self) -> Path:
        return self.directory / COCO_NAME

    @property
    def manifest(self) -> Path:
        return self.directory / MANIFEST_NAME

    def prepare(self) -> VideoOutputPaths:
        """Create the directory; raises OutputNotWritableError (one line) if it cannot be written."""
        ensure_output_dir(self.directory)
        return self


@dataclass
class ClaimedFolder:
    """An input's output folder, locked by this process until `lock.release()`.

    `previous` is the folder's run.json from an earlier run of the same source (None for a new folder).
    """

    paths: VideoOutputPaths
    lock: FolderLock
    previous: RunManifest | None


def claim_output_folder(
    output_root: Path | str,
    manifest: RunManifest,
    source: VideoSource,
    taken: set[str] | None = None,
    reserved: set[str] | frozenset[str] = frozenset(),
    preferred: str | None = None,
) -> ClaimedFolder:
    """Choose, lock and return the output folder of `source` (see module docstring).

    `manifest` is the run's "running" manifest; its `stem` is the natural folder name and is set to the folder
    chosen; it is written into a new folder at once (so the folder is marked as this source's before the root lock
    is released). `taken`: lower-case names already given to other inputs of this batch (updated). `reserved`:
    lower-case natural names of other inputs of this batch, which a `-N` suffix avoids. `preferred`: the name to try
    first (`plan_folder_names`), before `stem`, `stem-2`, ….

    Raises FolderBusyError when this source's folder is locked by another live process, OutputNotWritableError
    when the output root or folder cannot be written.
    """
    root = ensure_output_dir(output_root)
    taken = set() if taken is None else taken
    owner = source_fingerprint(source)["path"]
    stem = manifest.stem
    try:
        root_lock = FolderLock(root).acquire(wait=True, timeout=_ROOT_LOCK_TIMEOUT_S)
    except OSError as error:
        raise OutputNotWritableError(root, error) from error
    try:
        # This source's folder from an earlier run comes first wherever it is, then the planned name, then the rest.
        first = [n for n in (*_own_folders(root, stem, owner), preferred) if n and n.lower() not in taken]
        for name in itertools.chain(first, (n for n in _candidates(stem, taken, reserved) if n not in first)):
            directory = root / name
            previous = RunManifest.read(directory / MANIFEST_NAME)
            if previous is not None and previous.source_path != owner:
                continue  # another source's outputs
            if previous is None and _holds_files(directory):
                continue  # not made by clipvis (or its run.json is gone): never write into it
            paths = VideoOutputPaths(directory).prepare()
            lock = FolderLock(directory).acquire()  # FolderBusyError: this source is being processed elsewhere
            try:
                manifest.stem = name
                if previous is None:
                    manifest.write(paths.manifest)
            except BaseException:
                lock.release()
                raise
            taken.add(name.lower())
            return ClaimedFolder(paths, lock, previous)
        raise OutputNotWritableError(root / stem, f"no free folder name {stem}-N below {_MAX_SUFFIX}")
    finally:
        root_lock.release()


def plan_folder_names(stems: Sequence[str]) -> list[str]:
    """The folder names a batch's inputs get, in order, when the output root holds none of their folders yet: the
    choice `claim_output_folder` makes claiming them one after another, made without touching the disk. Shards
    of one batch (`--shard`, torchrun ranks) each plan the whole list, so they agree whatever order they run in."""
    natural = frozenset(stem.lower() for stem in stems)
    taken: set[str] = set()
    names = []
    for stem in stems:
        name = next(_candidates(stem, taken, natural - {stem.lower()}))
        taken.add(name.lower())
        names.append(name)
    return names


def _own_folders(root: Path, stem: str, owner: str) -> list[str]:
    """The folders `stem`, `stem-N` under `root` whose run.json records the source `owner`, by suffix."""
    prefix = stem.lower()
    found: list[tuple[int, str]] = []
    try:
        entries = [entry.name for entry in os.scandir(root) if entry.is_dir()]
    except OSError:
        return []
    for name in entries:
        lower = name.lower()
        suffix = 1 if lower == prefix else None
        if lower.startswith(prefix + "-") and lower[len(prefix) + 1 :].isdigit():
            suffix = int(lower[len(prefix) + 1 :])
        if suffix is None:
            continue
        previous = RunManifest.read(root / name / MANIFEST_NAME)
        if previous is not None and previous.source_path == owner:
            found.append((suffix, name))
    return [name for _, name in sorted(found)]


def _candidates(stem: str, taken: set[str], reserved: set[str] | frozenset[str]):
    if stem.lower() not in taken:
        yield stem
    for suffix in range(2, _MAX_SUFFIX):
        name = f"{stem}-{suffix}"
        if name.lower() not in taken and name.lower() not in reserved:
            yield name


def _holds_files(directory: Path) -> bool:
    """True if `directory` exists and holds anything besides clipvis' lock and temporary files."""
    try:
        return any(
            entry.name != LOCK_NAME and not is_temp_file_name(entry.name) for entry in directory.iterdir()
        )
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        return True
