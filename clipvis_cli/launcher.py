"""The `clipvis` command's entry point (also `python -m clipvis` and every `torchrun -m clipvis` rank).

Process-wide settings that must come before any other thread exists are made here, before the application (and
with it numpy and PyAV) is imported: one glibc malloc arena for every thread (clipvis.cli.memory,
``share_one_malloc_arena``). Python's garbage collector is paused while the application is imported, and what the
imports made is frozen then and again at exit (clipvis.cli.collector: ~1 s less per process). Kept out of
``clipvis.cli.app`` so that importing the application as a library changes nothing about the importing process.

The application imports torch only where a command needs it, so help and version answer in
~0.4 s instead of ~1.6 s; a command line that runs a command gets torch imported here, with the collector paused.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from clipvis.cli.collector import collector_paused, freeze_before_exit
from clipvis.cli.memory import share_one_malloc_arena
from clipvis.cli.messages import error_reason
from clipvis.cli.standard_streams import install_quiet_stderr, install_quiet_stdout, unwritten_answer

# Options that print something and exit before any command runs (Typer's help and completion, the app's --version).
ANSWERED_WITHOUT_A_COMMAND = frozenset({"--help", "--version", "--install-completion", "--show-completion"})


def runs_a_command(argv: Sequence[str], environ: dict[str, str] | None = None) -> bool:
    """Whether this command line runs a command (every command uses torch), rather than only printing help, the
    version or shell completions."""
    env = os.environ if environ is None else environ
    arguments = list(argv[1:])
    if not arguments or "_CLIPVIS_COMPLETE" in env:
        return False
    return not ANSWERED_WITHOUT_A_COMMAND.intersection(arguments)


# Help printed into a pipe or a file (`clipvis segment --help | less`) is laid out this wide: at rich's default of 80
# columns the longest option names and defaults were cut short ("--overlay-min-sco…").
PIPED_HELP_WIDTH = "110"


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (a scheduler's timeout or preemption, a closed terminal), raised in the main thread as
    Ctrl-C is: every command's Ctrl-C path runs (the video in progress marked ``interrupted``, temporary files
    removed, finished outputs kept), and the process exits with 128 + the signal's number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def main() -> None:
    """Run the `clipvis` application with the process set up for it."""
    share_one_malloc_arena()
    install_quiet_stderr()  # a stderr that cannot be written stops no input (clipvis.cli.standard_streams)
    if runs_a_command(sys.argv):
        _run()
        return
    # help, the version or completions: a reader gone (`| head -1`) is no failure, a stdout that cannot take the
    # answer (`> /dev/full`) one line (clipvis.cli.standard_streams)
    answer = install_quiet_stdout()
    if not answer.isatty() and not {"COLUMNS", "TERMINAL_WIDTH"} & set(os.environ):
        os.environ["TERMINAL_WIDTH"] = PIPED_HELP_WIDTH  # read by Typer's help when it is imported below
    try:
        _run()
    finally:
        error = unwritten_answer(answer)
        if error is not None:
            sys.stderr.write(f"clipvis: error: stdout not writable ({error_reason(error)})\n")
            sys.exit(1)


def _run() -> None:
    """Import the application (torch too where a command runs) and run it; SIGTERM and SIGHUP stop it as Ctrl-C
    does (`Terminated`), and a stop no command caught is said in one line."""
    received: list[int] = []

    def terminate(signum: int, frame: object) -> None:
        received.append(signum)
        raise Terminated(signum)

    for name in ("SIGTERM", "SIGHUP"):
        # one the parent left ignored stays so (`nohup clipvis ...`: a hangup, the ssh session ending, stopped it)
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN:
            signal.signal(getattr(signal, name), terminate)
    try:
        with collector_paused(freeze=True):  # numpy, PyAV, typer, torch: objects that live as long as the process
            from clipvis.cli.app import main as run_application

            if runs_a_command(sys.argv):
                import torch  # noqa: F401 - imported by the command anyway; here its >100,000 objects are frozen
        try:
            run_application()
        finally:
            freeze_before_exit()
    except KeyboardInterrupt:  # before a command took over (while importing), or one without a Ctrl-C path
        sys.stderr.write("clipvis: interrupted\n")
        sys.exit(128 + received[0] if received else 130)
    except SystemExit as done:
        if done.code == 130 and isinstance(getattr(done.__context__, "__cause__", None), KeyboardInterrupt):
            # Typer's own exit for a KeyboardInterrupt no command caught (a stop as a command is being called,
            # before its body's Ctrl-C path), which says nothing
            sys.stderr.write("clipvis: interrupted\n")
        if received and done.code == 130:  # a command's Ctrl-C exit, for a termination signal
            sys.exit(128 + received[0])
        raise


if __name__ == "__main__":
    main()
