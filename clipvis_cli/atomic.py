"""Atomic file output: write to a temporary name in the same directory, then `os.replace` onto the final name
(docs/outputs.md).

A reader never sees a half-written file under the final name: either the old file (or none) or the
complete new one. The data is fsync'ed before the rename and the directory after it, so a file that has its final
name survives a power cut. On any exception (KeyboardInterrupt included) the temporary file is removed and the
final name is untouched; temporary files (`.<name>.XXXX.tmp<suffix>`) and export staging folders (`.export-XXXX.tmp`)
of a process that was killed outright are removed by `remove_stale_temp_files` once the folder's lock shows no live
process writes there.

Text that cannot be encoded as UTF-8 (a file name that is not valid UTF-8 reaches Python as lone surrogates) is
written as JSON escapes (`\udcff`) instead of failing: json.loads gives back the exact name.

`OutputStaging` defers the renames of several files so that they appear together: while it is active, a file that
`atomic_output_path` finishes stays under its temporary name (fsync'ed) until `commit()` renames them all into place;
`discard()` deletes them (a failed or interrupted run leaves none of its files).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from clipvis.cli.distributed import deliver, signals_held
from clipvis.cli.json_io import JSON_TEXT_ERRORS, JsonObjectItems, streamed_json
from clipvis.cli.messages import error_reason, shown_path
from clipvis.paths import BROKEN_SYMLINK, NO_SUCH_FILE, missing_reason
from clipvis.weights.cache_files import new_file_mode


class OutputNotWritableError(OSError):
    """An output directory or file cannot be created or written; `str()` is one line naming the path."""

    def __init__(self, path: Path | str, cause: BaseException | str) -> None:
        reason = cause if isinstance(cause, str) else error_reason(cause)
        super().__init__(f"{shown_path(path)}: output not writable ({reason})")
        self.path = Path(path)



TEMP_MARKER = ".tmp"


NAME_MAX_BYTES = 255  # the longest file name Linux, macOS and Windows file systems take (ext4, APFS: bytes)


def temp_stem(path: Path) -> str:
    """The part of `path`'s name its temporary files carry (`.<stem>.XXXXXXXX.tmp<suffix>`): its stem; where the
    temporary name would pass NAME_MAX_BYTES, the stem cut short (whole characters) and ended by `~` and 7 hex digits
    of the whole name's hash, so that a name that fits has a temporary name that fits too, and two long names alike
    in their first 230 bytes still have temporary names of their own."""
    room = NAME_MAX_BYTES - len(os.fsencode(f"..12345678{TEMP_MARKER}{path.suffix}"))
    if len(os.fsencode(path.stem)) <= room:
        return path.stem
    kept, size = [], 0
    for char in path.stem:
        size += len(os.fsencode(char))
        if size > room - 8:
            break
        kept.append(char)
    return "".join(kept) + "~" + hashlib.sha1(os.fsencode(path.name)).hexdigest()[:7]


def temp_path_for(path: Path) -> Path:
    """A fresh, unused temporary path next to `path`, keeping its suffix (for format-by-extension tools)."""
    handle, name = tempfile.mkstemp(prefix=f".{temp_stem(path)}.", suffix=f"{TEMP_MARKER}{path.suffix}",
                                    dir=path.parent)
    os.close(handle)
    return Path(name)


def output_file_target(path: Path) -> Path:
    """Where the output file a user named with ``path`` is written: the file a symbolic link there points to (written
    through, as a shell's ``>`` does; the link stays), else ``path``. Raises OutputNotWritableError for a folder, a
    device, a pipe or a socket, which writing a new file and renaming it into place would replace (``-o /dev/null``
    would replace the system's)."""
    target = Path(os.path.realpath(path)) if os.path.islink(path) else path
    if target != path and not target.parent.is_dir():  # as `>` does; not a folder made where a disk is unmounted
        raise OutputNotWritableError(path, f"a symbolic link to {shown_path(os.readlink(path))}, whose folder does "
                                           "not exist")
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):  # a folder above that is missing, or a file: ensure_output_dir's
        return target
    except OSError as error:
        raise OutputNotWritableError(path, error) from error
    if stat.S_ISDIR(mode):
        raise OutputNotWritableError(path, "a folder, not a file")
    if not stat.S_ISREG(mode):
        raise OutputNotWritableError(path, "a device, pipe or socket, not a regular file: clipvis writes a file under "
                                           "a temporary name and renames it into place, which would replace it")
    return target


# The temporary names clipvis makes, exactly (so that a user's own `.notes.tmp` is never taken for one and deleted):
# `temp_path_for`'s `.<stem>.XXXXXXXX.tmp<suffix>` and export's staging folders `.export-XXXXXXXX.tmp` (the 8
# characters are tempfile's).
_TEMP_NAME = re.compile(r"\.(?:.+\.[a-z0-9_]{8}" + re.escape(TEMP_MARKER) + r"(?:\.[^.]*)?|export-[a-z0-9_]{8}"
                        + re.escape(TEMP_MARKER) + ")", re.DOTALL)


def is_temp_file_name(name: str) -> bool:
    """True for the names `temp_path_for` makes (`.<stem>.XXXXXXXX.tmp<suffix>`) and export staging folders'."""
    return _TEMP_NAME.fullmatch(name) is not None


# A folder an export replaces waits under `.<name>.old-<pid>.tmp` between its two renames (a temporary name: no
# export takes it for someone's own folder, and one a killed export left is put back, or removed, by the next run).
_REPLACED_FOLDER = re.compile(r"\.(?P<name>.+)\.old-\d+" + re.escape(TEMP_MARKER), re.DOTALL)


def replaced_folder_name(name: str) -> str:
    """Where the folder `name` waits while an export puts its new one in place."""
    return f".{name}.old-{os.getpid()}{TEMP_MARKER}"


def replaced_folder_of(name: str) -> str | None:
    """The folder whose earlier version `name` is, when it is one moved aside (`replaced_folder_name`), else None."""
    match = _REPLACED_FOLDER.fullmatch(name)
    return match["name"] if match else None


def settle_replaced_folders(folder: Path | str, names: Iterable[str]) -> list[Path]:
    """The folders of `names` (clipvis' own entries of `folder`) that a killed export had moved aside
    (`replaced_folder_name`): put back where its new one never got in place (the earlier export's files come back),
    else deleted. A folder of such a name that is not one of `names` is left alone (someone's own). Call only while
    holding the folder's lock. Returns the folders put back."""
    own = set(names)
    restored: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return restored
    for entry in entries:
        name = replaced_folder_of(entry.name)
        if name is None or name not in own or not entry.is_dir(follow_symlinks=False):
            continue
        final = Path(folder) / name
        try:
            if final.exists() or final.is_symlink():  # the new one got in place: the old one only to delete
                shutil.rmtree(entry.path)
            else:
                os.replace(entry.path, final)
                restored.append(final)
        except OSError:
            continue
    return restored


def remove_stale_temp_files(directory: Path | str, finals: Iterable[str] | None = None,
                            exported: Iterable[str] = ()) -> list[Path]:
    """Delete the temporary files `temp_path_for` left in `directory` (a crash, a kill -9): all of them, and the
    staging folders of exports (`.export-XXXXXXXX.tmp`), or only the files of the final file names `finals`. Call it
    only while holding the lock that keeps other clipvis processes from writing there. With all of them, the folders
    of `exported` (the folder's export record) that a killed export had moved aside are settled first
    (`settle_replaced_folders`). Returns what was removed."""
    removed: list[Path] = []
    prefixes = None if finals is None else tuple(f".{temp_stem(Path(name))}." for name in finals)
    if finals is None:
        settle_replaced_folders(directory, exported)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if prefixes is not None and not entry.name.startswith(prefixes):
            continue
        if not is_temp_file_name(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
            elif prefixes is None and entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                continue
        except OSError:
            continue
        removed.append(Path(entry.path))
    return removed


@contextmanager
def temp_file_held(path: Path | str) -> Iterator[None]:
    """Hold an advisory lock (`flock`) on the temporary file `path` while the block writes it (in place: the same
    file, truncated and rewritten, keeps the lock), so that `remove_stale_temp_files_of` tells it from the file of a
    killed run. Where the file system has no `flock`, the file is written unlocked."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pass  # no flock here (or, impossibly, someone else's): written unlocked
        yield
    finally:
        os.close(fd)  # closing drops the lock


def remove_stale_temp_files_of(final: Path | str, started: float) -> list[Path]:
    """Delete the temporary files of the final file `final` (`.<stem>.XXXXXXXX.tmp<suffix>` beside it, the names
    `temp_path_for` makes for it and for no other name) that a killed run left: last modified before `started` (a
    `time.time()`) and locked by no live process (`temp_file_held`). A file that cannot be locked to check (no
    `flock` on the file system) is kept. Returns what was removed."""
    final = Path(final)
    pattern = re.compile(rf"\.{re.escape(temp_stem(final))}\.[a-z0-9_]{{8}}{re.escape(TEMP_MARKER + final.suffix)}")
    removed: list[Path] = []
    try:
        entries = [entry for entry in os.scandir(final.parent or ".") if pattern.fullmatch(entry.name)]
    except OSError:
        return removed
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= started:
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live writer: BlockingIOError, kept
            os.unlink(entry.path)
        except OSError:
            continue
        finally:
            os.close(fd)
        removed.append(Path(entry.path))
    return removed


def fsync_file(path: Path | str) -> None:
    """Flush a closed file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: Path | str) -> None:
    """Make a rename or a new file in `directory` durable (a no-op where directories cannot be fsync'ed)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OutputStaging:
    """Files written together, renamed into place together (see the module docstring). Use::

        staging = OutputStaging()
        try:
            with staging.active():      # in this thread, and in those run in a copy of its context
                write_the_files()       # each by atomic_output_path: left under its temporary name
            staging.commit()
        except BaseException:
            staging.discard()
            raise
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._staged: dict[Path, Path] = {}  # final path -> its finished temporary file
        self.committed: list[Path] = []  # final paths renamed into place so far

    @contextmanager
    def active(self) -> Iterator[OutputStaging]:
        token = _STAGING.set(self)
        try:
            yield self
        finally:
            _STAGING.reset(token)

    def add(self, final: Path, temporary: Path) -> None:
        with self._lock:
            earlier = self._staged.pop(final, None)
            self._staged[final] = temporary
        if earlier is not None and earlier != temporary:
            earlier.unlink(missing_ok=True)

    def staged(self) -> dict[Path, Path]:
        """Each final path with its finished temporary file, not yet renamed into place."""
        with self._lock:
            return dict(self._staged)

    def pending(self) -> list[Path]:
        """The final paths of the files staged and not yet renamed into place."""
        with self._lock:
            return list(self._staged)

    def commit(self) -> list[Path]:
        """Rename every staged file onto its final name (in the order they were finished), then make the renames
        durable. Returns the final paths."""
        with self._lock:
            staged = list(self._staged.items())
        folders: set[Path] = set()
        for final, temporary in staged:
            try:
                os.replace(temporary, final)
            except OSError as error:
                raise OutputNotWritableError(final, error) from error
            with self._lock:
                del self._staged[final]
            self.committed.append(final)
            folders.add(final.parent)
        for folder in folders:
            fsync_directory(folder)
        return [final for final, _ in staged]

    def discard(self) -> None:
        """Delete the staged files not yet renamed into place."""
        with self._lock:
            staged, self._staged = list(self._staged.values()), {}
        for temporary in staged:
            try:
                temporary.unlink(missing_ok=True)
            except OSError:
                pass


_STAGING: ContextVar[OutputStaging | None] = ContextVar("clipvis_output_staging", default=None)


@contextmanager
def atomic_output_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` (or, while an `OutputStaging` is active, is
    left to its commit), on any exception it is deleted.

    The parent directory must exist. Raises OutputNotWritableError if the temporary file cannot be created.
    Example::

        with atomic_output_path(out_dir / "overlay.mp4") as tmp:
            encode_video(tmp)
    """
    final = Path(path)
    if len(os.fsencode(final.name)) > NAME_MAX_BYTES:  # said before the work, not at the rename after it
        raise OutputNotWritableError(final, f"a file name longer than {NAME_MAX_BYTES} bytes")
    tmp: Path | None = None
    try:
        # Ctrl-C and SIGTERM (raised in the main thread between any two statements) wait while the file is made and
        # named here, so that the cleanup below knows every file this made (one made just before a stop was left:
        # `.coco.XXXX.tmp.json`)
        held: list[int] = []
        try:
            with signals_held() as held:
                tmp = temp_path_for(final)
        except OSError as error:  # a name too long is the file's, not its folder's
            raise OutputNotWritableError(final if error.errno == errno.ENAMETOOLONG else final.parent, error) \
                from error
        finally:
            deliver(held)
        yield tmp
        try:
            fsync_file(tmp)
        except OSError as error:
            raise OutputNotWritableError(final, error) from error
        os.chmod(tmp, new_file_mode())  # mkstemp made it 0600; open() gives 0666 less the umask in force
        staging = _STAGING.get()
        if staging is not None:
            staging.add(final, tmp)
            return
        try:
            os.replace(tmp, final)
        except OSError as error:
            raise OutputNotWritableError(final, error) from error
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        raise
    fsync_directory(final.parent)


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path` atomically (fsync'ed before the rename)."""
    final = Path(path)
    with atomic_output_path(final) as tmp:
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
        except OSError as error:  # e.g. disk full
            raise OutputNotWritableError(final, error) from error
    return final


def atomic_write_text(path: Path | str, text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: Path | str, obj: Any, indent: int | None = None) -> Path:
    """Serialise `obj` as JSON (UTF-8, non-ASCII kept) and write it atomically.

    The object is serialised completely before anything is written, so a serialisation error leaves no file.
    """
    separators = (",", ":") if indent is None else None
    text = json.dumps(obj, ensure_ascii=False, indent=indent, separators=separators)
    return atomic_write_bytes(path, (text + "\n").encode("utf-8", JSON_TEXT_ERRORS))


def atomic_write_streamed_json(path: Path | str, value: Any) -> Path:
    """Write ``value`` as ``streamed_json`` writes it (an iterator as a list, a chunk of items at a time; a dict
    holding an iterator key by key) and a newline, atomically: the bytes ``atomic_write_json`` writes for the value
    with its iterators as lists, without the whole text in memory (a results file of every mask of a long video)."""
    return _atomic_write_pieces(path, itertools.chain(streamed_json(value), ("\n",)))


def atomic_write_json_stream(path: Path | str, fields: Iterable[tuple[str, Any]]) -> Path:
    """Write a JSON object field by field, atomically; a value that is an iterator is written as a list item by
    item, also inside a dict (an item ``{"segmentations": iter(masks), ...}`` of an iterator), so a document far
    larger than memory (every mask of a long video) is never held at once: ``atomic_write_streamed_json`` of the
    object whose pairs are ``fields`` (``JsonObjectItems``), non-ASCII kept in keys as in values."""
    return atomic_write_streamed_json(path, JsonObjectItems(fields))


def _atomic_write_pieces(path: Path | str, pieces: Iterable[str]) -> Path:
    """Write the text ``pieces`` make, one after another as they come, atomically (UTF-8, JSON's error rule)."""
    final = Path(path)
    with atomic_output_path(final) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8", errors=JSON_TEXT_ERRORS) as handle:
                for text in pieces:
                    handle.write(text)
        except OSError as error:
            raise OutputNotWritableError(final, error) from error
    return final


def ensure_output_dir(path: Path | str) -> Path:
    """Create `path` (and parents) if needed and check that files can be created in it.

    Raises OutputNotWritableError with a one-line message if not.
    """
    directory = Path(path)
    if not directory.exists() and (reason := missing_reason(directory)) != NO_SUCH_FILE:
        if reason == BROKEN_SYMLINK:
            reason = f"a symbolic link to {os.readlink(directory)}, which does not exist"
        raise OutputNotWritableError(directory, reason)  # (or a symbolic-link loop: no folder can be made there)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = temp_path_for(directory / "write-check")
        probe.unlink()
    except OSError as error:
        if error.errno in (errno.EEXIST, errno.ENOTDIR):  # a file where a folder goes: name it ("File exists" did not)
            blocking = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
            if blocking is not None:
                what = "a file" if blocking == directory else f"{shown_path(blocking)} is a file"
                raise OutputNotWritableError(directory, f"{what}, not a folder") from error
        raise OutputNotWritableError(directory, error) from error
    return directory


@contextmanager
def output_dir_for_now(path: Path | str) -> Iterator[Path]:
    """`ensure_output_dir(path)` for what the body then writes there; where the body (or the check itself) fails, an
    exception or Ctrl-C, the folders this made are removed again, deepest first, each only while it is empty: a run
    that fails leaves no empty folder it made for nothing, and a folder the user had, or anything put in one meanwhile,
    stays."""
    directory = Path(path)
    made = _folders_to_make(directory)
    try:
        ensure_output_dir(directory)
        yield directory
    except BaseException:
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # not empty (or not there, or not ours to remove): it stays
                pass
        raise


def _folders_to_make(directory: Path) -> list[Path]:
    """The folders that making ``directory`` with its parents will make, deepest first, as the kernel walks the path:
    a ``..`` goes up from the folder reached (``x/../y`` with no ``x`` makes ``x`` alone where ``y`` is there; as
    written, ``x/../y`` did not exist, and ``y`` was taken for a folder this run made), a symbolic link that is there
    is followed."""
    current = Path(os.path.realpath(directory.anchor or os.getcwd()))
    made: list[Path] = []
    for part in directory.parts[1 if directory.anchor else 0:]:
        if part == "..":
            current = current.parent
            continue
        if part == ".":
            continue
        current = current / part
        if os.path.lexists(current):
            current = Path(os.path.realpath(current))
        else:
            made.append(current)
    return made[::-1]
