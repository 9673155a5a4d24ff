"""The files a command lists on stdout, for pipelines, and what happens when stdout's reader goes away.

The files on disk are a command's product; the list on stdout is a convenience. When the reader of stdout goes away
(`clipvis segment videos/ ... | head -1`), writing to it fails with a broken pipe: the command says so once, as a
warning through its reporter (a ``warning`` event with ``--log-format jsonl``), lists nothing more, and goes on with
every input, to its usual summary and exit status; stdout going where no more can be written (`> /dev/full`, a full
disk) is said the same way. stdout is then pointed at the null device, so that the
interpreter's last flush at exit does not fail again ("Exception ignored ... BrokenPipeError").
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from clipvis.cli.messages import error_reason, print_path, shown_path

STDOUT_CLOSED = "stdout closed (broken pipe)"


def silence_stdout() -> None:
    """Send whatever is still written to stdout (the interpreter's last flush included) to the null device."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file of this process (a test's captured stream)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the rest of the process
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, descriptor)
    finally:
        os.close(null)


@dataclass
class StdoutListing:
    """Lists output paths on stdout (``print_path``: byte for byte, NUL-ended with ``null``) until stdout's reader
    goes away; then ``say("warning", ...)`` once: ``STDOUT_CLOSED``, that files written are no longer listed, and
    ``where`` (where a user finds them instead). ``speaks``: whether this process says it (None: it does); under
    torchrun the processes of a machine share its stdout, and the first to find it gone says so for all.
    ``above_progress``: the reporter's (`Reporter.above_progress`), which shows a path above live progress bars
    drawn on the terminal stdout also writes to (there a path written to stdout would run into the bars); stdout
    anywhere else gets the path's bytes as they are."""

    say: Callable[[str, str], None]
    where: str
    null: bool = False
    closed: bool = False
    speaks: Callable[[], bool] | None = None
    above_progress: Callable[[str], bool] | None = None

    def list(self, path: Path) -> None:
        if self.closed:
            return
        if self.above_progress is not None and self.above_progress(shown_path(path)):
            return
        try:
            print_path(path, self.null)
        except OSError as error:  # its reader gone (a broken pipe), or where it goes full (`> /dev/full`, a disk)
            self.closed = True
            silence_stdout()
            closed = isinstance(error, BrokenPipeError)
            why = STDOUT_CLOSED if closed else f"stdout not writable ({error_reason(error)})"
            if self.speaks is None or self.speaks():
                self.say("warning", f"{why}: files written are no longer listed; {self.where}")


__all__ = ["STDOUT_CLOSED", "StdoutListing", "silence_stdout"]
