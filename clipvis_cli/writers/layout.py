"""Output layout of `clipvis segment`: `OUTPUT/<stem>/{overlay.mp4, ytvis.json, coco.json, run.json}`, and which
folder an input gets.

A folder belongs to the source its run.json records (resolved path). `claim_output_folder` gives an input its own
folder, `stem/`, else `stem-2/`, `stem-3/`, … : one recording the same source (under any name: the same file
through a symbolic link of another name comes back to the folder its first run named, while that folder keeps the
name clipvis gave it; a folder renamed by hand is left alone), or a new one. A folder made by
another source (`a/clip.mp4` yesterday, `b/clip.mp4` today) or by someone else (files but no run.json) is never
written into. The choice is made under a lock on the output root, and the chosen folder stays locked while the
input is processed, so two processes never interleave in one folder.

Within one batch, the names are planned from the whole input list (`plan_folder_names`: the first `clip.mp4` gets
`clip/`, the second `clip-2/`), so shards of the batch (`--shard`, torchrun ranks) agree whatever order they run
in; a folder an earlier run made for the same source is still reused first. A batch lists the root once
(`OutputRootListing`) and learns of the folders other clipvis processes make later from the root's journal
(`.clipvis.folders`), so a batch of thousands of inputs does not list thousands of folders for each.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Collection, Container, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from clipvis.cli.atomic import OutputNotWritableError, ensure_output_dir, is_temp_file_name
from clipvis.cli.inputs import NAME_MAX_BYTES, VideoSource
from clipvis.cli.json_io import parse_json
from clipvis.cli.locks import LOCK_NAME, FolderLock
from clipvis.cli.writers.manifest import RunManifest, source_owner

OVERLAY_NAME = "overlay.mp4"
YTVIS_NAME = "ytvis.json"
COCO_NAME = "coco.json"
MANIFEST_NAME = "run.json"

_ROOT_LOCK_TIMEOUT_S = 60.0  # the root lock is held only while a folder is chosen: milliseconds
_MAX_SUFFIX = 10**9  # a bound for the search, not a limit anyone reaches (20,000 inputs named video.mp4 are fine)
FOLDER_JOURNAL = ".clipvis.folders"  # the folders clipvis made in an output root, one JSON string per line
_NUMBERED = re.compile(r"^(.*)-([0-9]+)$", re.DOTALL)  # "clip-12" -> ("clip", "12"); lower-case names


@dataclass(frozen=True)
class VideoOutputPaths:
    """Where one input's outputs go."""

    directory: Path

    @property
    def stem(self) -> str:
        return self.directory.name

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


class OutputRootListing:
    """The folders of an output root, by the natural stem they are named after (``clip``, ``clip-2``, … under
    ``clip``), so that a batch choosing the folders of thousands of inputs does not list thousands of folders for
    each.

    The root is listed once; the folders clipvis processes make there afterwards are read from the root's journal
    (``FOLDER_JOURNAL``: one JSON string per line, appended under the root's lock by whichever process made the
    folder, so the lines never interleave and every process holding the lock has seen all of them). A folder made by
    anything else is not listed, which only matters for finding a source's own folder, and no other program makes
    one with clipvis' run.json in it."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._by_stem: dict[str, set[tuple[int, str]]] | None = None
        self._journal_read = 0  # bytes of the journal already in the listing
        self._checked = False
        # whose each folder is (its run.json's source), read once per folder when its stem is first asked about
        self._unread: dict[str, list[tuple[int, str]]] = {}
        self._owner: dict[str, str | None] = {}
        self._owned: dict[tuple[str, str], set[tuple[int, str]]] = {}
        # the folders of each source, whatever their names, of those still named as clipvis named them (the name
        # their run.json records: a folder renamed by hand, `clip/` -> `clip_v1/` to keep a run, is never taken)
        self._by_owner: dict[str, set[str]] = {}
        self._named_by_clipvis: set[str] = set()

    def writable_root(self) -> Path:
        """The root, made and checked writable the first time (``ensure_output_dir``, which writes a probe file: not
        at every input; a root that stops being writable fails the next folder made in it)."""
        if not self._checked:
            ensure_output_dir(self.root)
            self._checked = True
        return self.root

    def named_after(self, stem: str) -> list[str]:
        """The folders named ``stem`` or ``stem-N`` (any case), by N (``stem`` first). Call with the root's lock
        held, as ``claim_output_folder`` does."""
        self._refresh()
        assert self._by_stem is not None
        return [name for _, name in sorted(self._by_stem.get(stem.lower(), ()))]

    def owned_by(self, stem: str, owner: str) -> list[str]:
        """The folders named ``stem`` or ``stem-N`` whose run.json records the source ``owner`` (a resolved path), by
        N. Each folder's run.json is read once per listing (a folder keeps its source: only that source's process
        writes it), so thousands of inputs named alike do not read thousands of run.json files each."""
        self._refresh()
        key = stem.lower()
        for suffix, name in self._unread.pop(key, ()):
            if name not in self._owner:
                previous = RunManifest.read(self.root / name / MANIFEST_NAME)
                self._owner[name] = previous.source_path if previous is not None else None
                if previous is not None and previous.stem == name:  # else renamed by someone: theirs to keep
                    self._named_by_clipvis.add(name)
            source = self._owner[name]
            if source is not None:
                self._owned.setdefault((key, source), set()).add((suffix, name))
                if name in self._named_by_clipvis:
                    self._by_owner.setdefault(source, set()).add(name)
        return [name for _, name in sorted(self._owned.get((key, owner), ()))]

    def owned_anywhere(self, owner: str) -> list[str]:
        """The folders of any name whose run.json records the source ``owner``, by name: those of the same file
        given under another name (a symbolic link, `clip_link.mp4 -> clip.mp4`), whose folder is named after the name
        its first run was given. Only a folder still bearing the name clipvis gave it (its run.json's ``stem``): one
        renamed by hand (`clip/` -> `clip_v1/`, to keep an old run) is the user's, never written into. Reads the
        run.json of every folder not read yet, once per listing: called for an input none of whose own stem's folders
        is its source's, so a rerun of a batch (each input finding its folder by its stem) reads no more than
        before."""
        self._refresh()
        for key in list(self._unread):
            self.owned_by(key, "")
        return sorted(self._by_owner.get(owner, ()), key=lambda name: (name.lower(), name))

    def folders_of(self, stem: str, owner: str) -> list[str]:
        """The folders an earlier run made for the source ``owner``: those named after ``stem`` (`owned_by`), else
        those of another name (`owned_anywhere`: the same file given under another name)."""
        return self.owned_by(stem, owner) or self.owned_anywhere(owner)

    def unavailable(self, stems: Iterable[str], owners: Collection[str]) -> frozenset[str]:
        """The lower-case names of the folders named after ``stems`` (``stem``, ``stem-N``, any case) that none of
        ``owners`` (a batch's sources, as ``source_owner`` gives them) may write into: another source's outputs, or
        a folder holding files but no run.json (not made by clipvis). Read under the root's lock, so a folder another
        process is making is seen whole (its run.json is written before the lock is released). Each folder's run.json
        is read once per listing, as `owned_by` reads it."""
        if not self.root.is_dir():
            return frozenset()
        with self._root_locked():
            return self._unavailable(stems, owners)

    def plan(self, stems: Sequence[str], owners: Sequence[str]) -> list[str]:
        """The folder names of a batch's inputs (``stems[i]`` of the source ``owners[i]``, as ``source_owner`` gives
        it), in order: ``plan_folder_names`` with the names none of them may have (`unavailable`) skipped, and the
        folder an earlier run made for an input's source (the first, by N, of those it owns: the one
        ``claim_output_folder`` comes back to) kept for it, so that the new inputs take the lowest suffixes left
        (`b/clip.mp4` after `a/clip.mp4`'s `clip/` gets `clip-2/` in either input order). Every shard plans the same
        names: the folders the batch itself made meanwhile are owned by the inputs they were planned for."""
        if not self.root.is_dir():
            return plan_folder_names(stems)
        with self._root_locked():
            unavailable = self._unavailable(stems, set(owners))
            owned = []
            for stem, owner in zip(stems, owners, strict=True):
                folders = self.folders_of(stem, owner)
                owned.append(folders[0] if folders else None)
        return plan_folder_names(stems, unavailable, owned)

    @contextmanager
    def _root_locked(self) -> Iterator[None]:
        """The root's lock held, so that a folder another process is making is seen whole (its run.json is written
        before the lock is released); without it where the root cannot be written (claiming a folder says so)."""
        try:
            lock: FolderLock | None = FolderLock(self.root).acquire(wait=True, timeout=_ROOT_LOCK_TIMEOUT_S)
        except OSError:
            lock = None
        try:
            yield
        finally:
            if lock is not None:
                lock.release()

    def _unavailable(self, stems: Iterable[str], owners: Collection[str]) -> frozenset[str]:
        names = set()
        for key in {stem.lower() for stem in stems}:
            self.owned_by(key, "")  # the run.json of every folder named after it, read (once)
            for name in self.named_after(key):
                owner = self._owner.get(name)
                if owner is not None and owner not in owners:
                    names.add(name.lower())
                elif owner is None and _holds_files(self.root / name):
                    names.add(name.lower())
        return frozenset(names)

    def holds_another_source(self, name: str, owner: str) -> bool:
        """True when the folder ``name``'s run.json, as ``owned_by`` read it, records a source other than ``owner``
        (a folder keeps its source); False when it records ``owner``, or was not read."""
        return self._owner.get(name) not in (None, owner)

    def made(self, name: str) -> None:
        """This process just made the folder ``name`` (holding the root's lock): tell the other processes' listings.
        Best effort: a journal that cannot be written leaves them without it, as a folder made by hand would."""
        line = (json.dumps(name) + "\n").encode("utf-8")
        try:
            fd = os.open(self.root / FOLDER_JOURNAL, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError:
            pass
        if self._by_stem is not None:
            self._index(name)

    def _refresh(self) -> None:
        journal = self.root / FOLDER_JOURNAL
        if self._by_stem is None:  # the journal's end first: a folder made after it is both listed and read there
            self._by_stem = {}
            try:
                self._journal_read = journal.stat().st_size
            except OSError:
                self._journal_read = 0
            try:
                names = [entry.name for entry in os.scandir(self.root) if entry.is_dir()]
            except OSError:
                names = []
            for name in names:
                self._index(name)
            return
        try:
            with open(journal, "rb") as stream:
                stream.seek(self._journal_read)
                added = stream.read()
        except OSError:
            return
        complete = added[: added.rfind(b"\n") + 1]  # a line still being written waits for the next call
        self._journal_read += len(complete)
        for line in complete.splitlines():
            try:
                name = parse_json(line)
            except ValueError:
                continue
            if isinstance(name, str):
                self._index(name)

    def _index(self, name: str) -> None:
        assert self._by_stem is not None
        lower = name.lower()
        keys = [(lower, 1)]
        numbered = _NUMBERED.match(lower)
        if numbered is not None:
            keys.append((numbered.group(1), int(numbered.group(2))))
        for key, suffix in keys:
            if (suffix, name) not in self._by_stem.setdefault(key, set()):
                self._by_stem[key].add((suffix, name))
                self._unread.setdefault(key, []).append((suffix, name))


def claim_output_folder(
    output_root: Path | str,
    manifest: RunManifest,
    source: VideoSource,
    taken: set[str] | None = None,
    reserved: Container[str] = frozenset(),
    preferred: str | None = None,
    listing: OutputRootListing | None = None,
) -> ClaimedFolder:
    """Choose, lock and return the output folder of `source` (see module docstring).

    `manifest` is the run's "running" manifest; its `stem` is the natural folder name and is set to the folder
    chosen; it is written into a new folder at once (so the folder is marked as this source's before the root lock
    is released). `taken`: lower-case names already given to other inputs of this batch (updated). `reserved`:
    lower-case natural and planned names of the inputs of this batch, which a `-N` suffix avoids. `preferred`: the
    name to try first (`plan_folder_names`), before `stem`, `stem-2`, …. `listing`: the batch's `OutputRootListing`
    of `output_root` (default: the root is listed now).

    Raises FolderBusyError when this source's folder is locked by another live process, OutputNotWritableError
    when the output root or folder cannot be written.
    """
    listing = OutputRootListing(output_root) if listing is None else listing
    root = listing.writable_root()
    taken = set() if taken is None else taken
    owner = source_owner(source)
    stem = manifest.stem
    try:
        root_lock = FolderLock(root).acquire(wait=True, timeout=_ROOT_LOCK_TIMEOUT_S)
    except OSError as error:
        raise OutputNotWritableError(root, error) from error
    try:
        # This source's folder from an earlier run comes first wherever it is, then the planned name, then the rest.
        first = [n for n in (*listing.folders_of(stem, owner), preferred) if n and n.lower() not in taken]
        # (a -N name is never its own natural name, and its planned name was tried first or is taken)
        for name in itertools.chain(first, (n for n in _candidates(stem, taken, reserved) if n not in first)):
            if listing.holds_another_source(name, owner):
                continue  # known from the listing's run.json reads: no need to read it again
            directory = root / name
            try:
                previous = RunManifest.read(directory / MANIFEST_NAME)
                if previous is not None and previous.source_path != owner:
                    continue  # another source's outputs
                if previous is None and _holds_files(directory):
                    continue  # not made by clipvis (or its run.json is gone): never write into it
                made = not directory.exists()
                paths = VideoOutputPaths(directory).prepare()
            except OutputNotWritableError:
                raise
            except OSError as error:  # this input's failure (a name too long, no permission), not the batch's
                raise OutputNotWritableError(directory, error) from error
            if made:
                listing.made(name)
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


def plan_folder_names(
    stems: Sequence[str], unavailable: Container[str] = frozenset(), owned: Sequence[str | None] = ()
) -> list[str]:
    """The folder names a batch's inputs get, in order, when the output root holds none of their folders yet: the
    choice `claim_output_folder` makes claiming them one after another. `unavailable`: the lower-case names no input
    may have (`OutputRootListing.unavailable`: a folder of files not made by clipvis, another source's outputs),
    skipped, so that the inputs keep their order (`a/clip.mp4` `clip-2/`, `b/clip.mp4` `clip-3/` beside a folder
    `clip/` of one's own). Shards of one batch (`--shard`, torchrun ranks) each plan the whole list, so they agree
    whatever order they run in (the folders they make are the batch's own: never unavailable). Linear in the inputs,
    also when thousands share a stem (`<id>/video.mp4`): the search for a stem's next free suffix starts where the
    last one ended (names only ever become taken). `owned`: per input, the folder an earlier run made for its
    source, or None (`OutputRootListing.plan`): kept for it, before the others are named, as `claim_output_folder`
    comes back to it whatever the plan says, so the others' suffixes leave no gap below it."""
    natural = frozenset(stem.lower() for stem in stems)
    taken: set[str] = set()
    kept: dict[int, str] = {}
    for index, name in enumerate(owned):
        if name is not None and name.lower() not in taken:
            kept[index] = name
            taken.add(name.lower())
    next_suffix: dict[str, int] = {}
    names = []
    for index, stem in enumerate(stems):
        if index in kept:
            names.append(kept[index])
            continue
        key = stem.lower()
        # a name with a -N suffix is never the stem's own, so the natural names are all reserved
        name = next(_candidates(stem, taken, natural, first_suffix=next_suffix.get(key, 2), unavailable=unavailable))
        if name.lower() != key:
            next_suffix[key] = int(name.rsplit("-", 1)[1]) + 1
        taken.add(name.lower())
        names.append(name)
    return names


def _candidates(stem: str, taken: set[str], reserved: Container[str], first_suffix: int = 2,
                unavailable: Container[str] = frozenset()) -> Iterator[str]:
    if stem.lower() not in taken and stem.lower() not in unavailable:
        yield stem
    for suffix in range(first_suffix, _MAX_SUFFIX):
        name = numbered_name(stem, suffix)
        if name.lower() not in taken and name.lower() not in reserved and name.lower() not in unavailable:
            yield name


def numbered_name(stem: str, suffix: int) -> str:
    """``stem-N``, the stem cut short (whole characters) where the name would pass the file systems' 255-byte limit
    on a name: an image folder's name is its output folder's stem, and may be 255 bytes long already."""
    return name_within(stem, f"-{suffix}")


def name_within(stem: str, tail: str) -> str:
    """``stem + tail`` (a ``-N`` suffix, an extension), the stem cut short (whole characters) where the name would
    pass the file systems' 255-byte limit on a name."""
    limit = NAME_MAX_BYTES - len(os.fsencode(tail))
    while stem and len(os.fsencode(stem)) > limit:
        stem = stem[:-1]
    return stem + tail


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
