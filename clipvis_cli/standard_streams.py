"""The command's stderr as a pipeline may leave it: its reader gone (``clipvis segment ... 2>&1 | head -1``), a full
log disk (``2>/dev/full``), a closed descriptor (``2>&-``).

Messages are not results: a write to stderr that fails must not fail the input being processed (an input whose files
were in place was recorded ``failed`` when its progress line could not be written), nor stop the batch (rich ends the
process with exit 1 on a broken pipe). `install_quiet_stderr` makes the command's ``sys.stderr`` a stream that, on its
first failed write, points file descriptor 2 at the null device and writes nothing from then on: every input still
runs, the exit code is the inputs' (README, "Segment videos": output streams).

Installed by the command's entry point only (clipvis.cli.launcher): a program that imports clipvis keeps its own
streams.
"""

from __future__ import annotations

import io
import os
import sys
from typing import TextIO


class QuietOnFailureStream(io.TextIOBase):
    """A text stream that writes through to ``stream`` until a write or flush fails (OSError, or ValueError on a
    closed file), then goes quiet: the descriptor behind it is pointed at the null device (output that C libraries
    write there, and the original stream's own buffered text, then go nowhere instead of failing), and later writes
    are accepted and dropped.

    Not a ``.buffer``: writers that would write bytes past this stream (click with an odd encoding) write text
    through it instead."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self.failed = False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._stream, "errors", None)

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        if self.failed:
            return False
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    def write(self, text: str) -> int:
        if not self.failed:
            try:
                self._stream.write(text)
            except (OSError, ValueError):
                self._go_quiet()
        return len(text)

    def flush(self) -> None:
        if not self.failed:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._go_quiet()

    def _go_quiet(self) -> None:
        self.failed = True
        try:
            descriptor = self._stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError, AttributeError):
            return
        try:
            os.dup2(null, descriptor)
        except OSError:
            pass
        finally:
            os.close(null)
        try:  # what the failed write left in the stream's buffer now goes to the null device
            self._stream.flush()
        except (OSError, ValueError):
            pass


def install_quiet_stderr() -> QuietOnFailureStream:
    """Make ``sys.stderr`` a `QuietOnFailureStream` (of the null device where there is no stderr: ``2>&-``)."""
    stream: TextIO | None = sys.stderr
    if stream is None:  # descriptor 2 was closed when the process started: the null device is put there, not at the
        null = os.open(os.devnull, os.O_WRONLY)  # lowest free descriptor (with stdin closed too, 0; then the next file
        if null != 2:  # opened took 2, and a library's message to stderr went into it)
            os.dup2(null, 2)
            os.close(null)
        stream = open(2, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 - the process' stderr, until it ends
    quiet = stream if isinstance(stream, QuietOnFailureStream) else QuietOnFailureStream(stream)
    sys.stderr = quiet
    return quiet

