"""Files and folders of the shared weights cache: the modes they get (the process' umask, as ``open()`` and
``mkdir()`` would give them: a cache may be shared by several users), the lock of a download in progress and the
record of the last download that failed. `new_file_mode` is also the mode of every file clipvis writes through a
temporary file and a rename (``mkstemp`` makes them 0600): checkpoints (`clipvis.model.checkpoint`), the
text-embedding cache, the CLI's outputs.

The `weights` package stands alone: it does not use `clipvis.cli.locks`."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Serialises the fallback of `process_umask` (set the umask, set it back) between the threads that call it.
_UMASK_LOCK = threading.Lock()


def process_umask() -> int:
    """The process' umask as it is now. Read from ``/proc/self/status`` (Linux 4.7+), which leaves it untouched;
    elsewhere by setting it and setting it back, under a lock for the threads that call this (the umask is
    process-wide: a file another thread creates in that instant gets the umask 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o022)
        os.umask(umask)
    return umask


def new_file_mode() -> int:
    """0666 less the umask: the mode ``open()`` gives a new file."""
    return 0o666 & ~process_umask()


def new_folder_mode() -> int:
    """0777 less the umask: the mode ``mkdir()`` gives a new folder."""
    return 0o777 & ~process_umask()


class DownloadLock:
    """An advisory `flock` on ``<cache>/weights/.<file name>.lock``, taken by each process downloading that file.

    The kernel drops it when its process ends, however it ends (SIGKILL, a crash), so it never goes stale: a staging
    folder of that file found while nobody holds the lock belongs to a download that was killed. The file is opened
    read-only (a flock needs no write access) and made readable by all whatever the umask (it is empty), so the users
    of a shared cache can all take it. Where the lock file cannot be made (a read-only cache) or opened (another
    user's, made private by an older clipvis under umask 077) or the file system has no `flock`, `acquire` says so
    by returning None (`unlocked_reason` then says why, for a lock file that is there but cannot be opened): the
    caller goes on unlocked."""

    def __init__(self, target: Path) -> None:
        self.path = target.with_name(f".{target.name}.lock")
        self._fd: int | None = None
        #: Why the last `acquire` returned None though the lock file is there (it cannot be opened); None otherwise.
        self.unlocked_reason: str | None = None

    def acquire(self, *, exclusive: bool, wait: bool, on_wait: Callable[[], object] | None = None) -> bool | None:
        """Take the lock (shared or exclusive): True once held; False when another process holds it and not `wait`;
        None when locking is not possible here. `on_wait` is called once if it has to wait."""
        if self._fd is not None:
            raise RuntimeError("lock already held")
        self.unlocked_reason = None
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            if os.path.lexists(self.path):  # not a cache that cannot be written (the download says that itself)
                self.unlocked_reason = exc.strerror or str(exc)
            return None
        _readable_by_all(fd)
        operation = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        said = False
        try:
            while True:
                try:
                    fcntl.flock(fd, operation | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        os.close(fd)
                        return False
                    if not said and on_wait is not None:
                        on_wait()
                    said = True
                    time.sleep(_POLL_S)
                except OSError:  # no flock on this file system (ENOLCK, EOPNOTSUPP...)
                    os.close(fd)
                    return None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing drops the flock


def _readable_by_all(fd: int) -> None:
    """Make the lock file open as `fd` readable by every user when it is ours: under umask 077 it was made 0600, and
    the other users of a shared cache could not open it to take the lock (their downloads went on unlocked)."""
    try:
        info = os.fstat(fd)
        if info.st_uid == os.geteuid() and info.st_mode & 0o444 != 0o444:
            os.fchmod(fd, (info.st_mode & 0o7777) | 0o444)
    except OSError:  # a file system without modes: nothing to do
        pass


#: How often a process waiting for a download lock looks again.
_POLL_S = 0.2


@dataclass(frozen=True)
class DownloadFailure:
    """Why a download of a cached file failed, as its process recorded it (`record_failure`)."""

    reason: str
    """The one-line reason its error gave."""
    remedy: str | None
    """What its error said to do (None: the usual remedy)."""
    time: float
    """When it failed (seconds since the epoch)."""
    pid: int
    """The process whose download it was."""


def failure_record_path(target: Path) -> Path:
    """``.<file name>.failed.json`` beside `target`: the last failed download of it (`record_failure`)."""
    return target.with_name(f".{target.name}.failed.json")


def read_failure_record(target: Path) -> bytes | None:
    """The failure record of `target` as it is now (its bytes: any new record differs, its time and pid at least), or
    None when there is none or it cannot be read. Compared before and after a wait for `target`'s lock, it tells
    whether the download waited for failed (`failure_since`)."""
    try:
        return failure_record_path(target).read_bytes()
    except OSError:
        return None


def failure_since(target: Path, before: bytes | None) -> DownloadFailure | None:
    """The failure recorded for `target` since its record read `before` (`read_failure_record`), or None: the record
    is the same (an old failure's, which says nothing of this wait), gone, or not one this version can read."""
    now = read_failure_record(target)
    if now is None or now == before:
        return None
    try:
        fields = json.loads(now)
        failure = DownloadFailure(str(fields["reason"]), fields.get("remedy"), float(fields["time"]),
                                  int(fields["pid"]))
    except (ValueError, TypeError, KeyError):
        return None
    return failure if failure.reason and isinstance(failure.remedy, (str, type(None))) else None


def record_failure(target: Path, reason: str, remedy: str | None) -> None:
    """Record why this process' download of `target` failed, for the processes waiting for it (they fail with this
    reason instead of trying again, each in turn). Called holding `target`'s `DownloadLock`, so the record is
    complete before a waiter can take the lock; it replaces the file at once (a new file renamed over it), and is
    made readable by all, as the lock is. Never raises: without a record the waiters download it themselves."""
    record = json.dumps({"reason": reason, "remedy": remedy, "time": time.time(), "pid": os.getpid()})
    path = failure_record_path(target)
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(record)
            os.fchmod(handle.fileno(), 0o644)
        os.replace(temporary, path)
    except OSError:
        try:
            os.unlink(temporary)
        except OSError:
            pass


def forget_failure(target: Path) -> None:
    """Remove `target`'s failure record (its download succeeded). Never raises."""
    try:
        failure_record_path(target).unlink(missing_ok=True)
    except OSError:
        pass
