"""The command's stderr as a pipeline may leave it: its reader gone (``clipvis segment ... 2>&1 | head -1``), a full
log disk (``2>/dev/full``), a closed descriptor (``2>&-``).

Messages are not results: a write to stderr that fails must not fail the input being processed (an input whose files
were in place was recorded ``failed`` when its progress line could not be written), nor stop the batch (rich ends the
process with exit 1 on a broken pipe). `install_quiet_stderr` makes the command's ``sys.stderr`` a stream that, on its
first failed write, points file descriptor 2 at the null device and writes nothing from then on: every input still
runs, the exit code is the inputs' (README, "Segment videos": output streams).

A command line that only prints an answer (the help, the version, shell completions: nothing else is done) gets the
same stream as stdout (`install_quiet_stdout`), and the entry point judges the answer once it is printed
(`unwritten_answer`): a reader that went away (``clipvis --help | head -1``) has read what it wanted, said nothing of,
the exit status as ever; a stdout that could not take it (``> /dev/full``, ``>&-``) is one `clipvis: error:` line and
exit 1, instead of rich's silent exit 1 or a traceback. A command's own stdout is left as it is: what it lists, and
what happens when the listing stops, is clipvis.cli.listing's.

Installed by the command's entry point only (clipvis.cli.launcher): a program that imports clipvis keeps its own
streams.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import sys
from collections.abc import Iterator
from typing import TextIO


class _TextStreamWrapper(io.TextIOBase):
    """A text stream writing through to another, ``_stream``, with its encoding and error handler."""

    _stream: TextIO

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._stream, "errors", None)

    def writable(self) -> bool:
        return True


class QuietOnFailureStream(_TextStreamWrapper):
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
        self.error: OSError | ValueError | None = None  # what the first failed write or flush raised

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
            except (OSError, ValueError) as error:
                self._go_quiet(error)
        return len(text)

    def flush(self) -> None:
        if not self.failed:
            try:
                self._stream.flush()
            except (OSError, ValueError) as error:
                self._go_quiet(error)

    def _go_quiet(self, error: OSError | ValueError) -> None:
        self.failed = True
        self.error = error
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


#: A terminal's control sequence (ECMA-48 CSI: cursor moves, erasing a line, colours)
_TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class LineRecordingStream(_TextStreamWrapper):
    """A text stream that writes through to ``stream`` and keeps each whole line written (``lines``, without its
    newline): what a step printed on stderr, for a log file to hold too (training's periodic evaluation, whose errors
    went to the console alone)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._partial = ""
        self.lines: list[str] = []

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # (click asks whether a stream takes bytes by writing b"")
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._stream.write(text)
        *whole, self._partial = (self._partial + text).split("\n")
        # a progress line redrawn: its last state; without a terminal's cursor and erase codes (rich's live display
        # puts them before the lines it prints on a terminal)
        self.lines.extend(_TERMINAL_CONTROL.sub("", line.rsplit("\r", 1)[-1]) for line in whole)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()


@contextlib.contextmanager
def stderr_lines_recorded() -> Iterator[list[str]]:
    """The lines written to ``sys.stderr`` inside the block (``LineRecordingStream``), written there as ever. Under
    rich's live display (train's progress line), which makes ``sys.stderr`` a proxy printing through its console, the
    recorder writes to the stream behind the proxy, as rich's consoles do (their ``rich_proxied_file``): through the
    proxy, an evaluation's own live display came out as its escape codes, highlighted as text."""
    recorder = LineRecordingStream(getattr(sys.stderr, "rich_proxied_file", sys.stderr))
    with contextlib.redirect_stderr(recorder):
        yield recorder.lines


def _stream_at(descriptor: int, stream: TextIO | None) -> TextIO:
    """``stream``, or where the process started with ``descriptor`` closed (``2>&-``), a stream of the null device put
    at that descriptor, not at the lowest free one (with stdin closed too, 0; then the next file opened took the
    descriptor, and a library's message to it went into that file)."""
    if stream is not None:
        return stream
    null = os.open(os.devnull, os.O_WRONLY)
    if null != descriptor:
        os.dup2(null, descriptor)
        os.close(null)
    return open(descriptor, "w", encoding="utf-8", closefd=False)  # noqa: SIM115 - the process' stream, until it ends


def install_quiet_stderr() -> QuietOnFailureStream:
    """Make ``sys.stderr`` a `QuietOnFailureStream` (of the null device where there is no stderr: ``2>&-``)."""
    stream = _stream_at(2, sys.stderr)
    quiet = stream if isinstance(stream, QuietOnFailureStream) else QuietOnFailureStream(stream)
    sys.stderr = quiet
    return quiet


def install_quiet_stdout() -> QuietOnFailureStream:
    """Make ``sys.stdout`` a `QuietOnFailureStream`, for a command line that only prints an answer (help, version,
    completions). Where there is no stdout (``>&-``) it is one of the null device that has failed already, with the
    error a write to a closed descriptor gets (EBADF)."""
    closed = sys.stdout is None
    stream = _stream_at(1, sys.stdout)
    quiet = stream if isinstance(stream, QuietOnFailureStream) else QuietOnFailureStream(stream)
    if closed:
        quiet.failed = True
        quiet.error = OSError(errno.EBADF, os.strerror(errno.EBADF))
    sys.stdout = quiet
    return quiet


def unwritten_answer(stdout: QuietOnFailureStream) -> OSError | ValueError | None:
    """Flush ``stdout`` (from `install_quiet_stdout`); the error that kept the answer from being written, or None
    where it was written or its reader went away (a broken pipe: ``| head -1`` took what it wanted, as with any
    other tool)."""
    stdout.flush()
    if stdout.error is None or isinstance(stdout.error, BrokenPipeError):
        return None
    return stdout.error
