"""Per-folder locks, so that two clipvis processes never write the same output folder at once.

A lock is an advisory `flock` on a small file inside the folder (`.clipvis.lock`), holding the owner's pid and
host for messages. The kernel drops the lock when its process ends, however it ends (crash, kill -9, power
loss), so a lock can never go stale; the lock file itself stays and is harmless. Where the file system does not
support `flock` (some network file systems), locking degrades to no locking rather than failing the run.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".clipvis.lock"


class FolderBusyError(OSError):
    """The folder's lock is held by another live process; `str()` is one line naming the folder and holder."""

    def __init__(self, directory: Path, holder: str) -> None:
        from clipvis.cli.messages import shown_path

        who = f" ({holder})" if holder else ""
        super().__init__(errno.EBUSY, f"{shown_path(directory)}: another clipvis process is writing here{who}")
        self.directory = directory
        self.holder = holder

    def __str__(self) -> str:
        return str(self.strerror)


class FolderLock:
    """An exclusive lock on `directory` (created if needed). Use as a context manager, or `acquire`/`release`.

    `acquire(wait=False)` raises FolderBusyError at once when another process holds the lock; `wait=True`
    blocks until it is free (`timeout` seconds at most, then FolderBusyError).
    """

    def __init__(self, directory: Path | str, name: str = LOCK_NAME) -> None:
        """``name``: the lock file's (LOCK_NAME marks a folder of clipvis outputs, which a folder search skips; a
        training folder's lock has a name of its own)."""
        self.directory = Path(directory)
        self.path = self.directory / name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, wait: bool = False, timeout: float | None = None) -> FolderLock:
        if self._fd is not None:
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait or (deadline is not None and time.monotonic() >= deadline):
                        raise FolderBusyError(self.directory, _read_holder(fd)) from None
                    time.sleep(0.1)
                except OSError as error:
                    if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                        break  # no flock on this file system: go on unlocked
                    raise
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        _write_holder(fd)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing drops the flock

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _write_holder(fd: int) -> None:
    text = f"pid {os.getpid()} on {socket.gethostname()}\n".encode()
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text, 0)
    except OSError:
        pass


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def remove_unused_folder(folder: Path, clipvis_files: tuple[str, ...] = ()) -> None:
    """Remove ``folder`` (one a command made and then wrote nothing into) when it holds nothing but clipvis' lock
    file and ``clipvis_files``; anything else there keeps it."""
    try:
        entries = list(folder.iterdir())
        if all(entry.name in (LOCK_NAME, *clipvis_files) and entry.is_file() for entry in entries):
            for entry in entries:
                entry.unlink(missing_ok=True)
            folder.rmdir()
    except OSError:
        pass
