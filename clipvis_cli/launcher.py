"""The `clipvis` command's entry point (also `python -m clipvis` and every `torchrun -m clipvis` rank).

Process-wide settings that must come before any other thread exists are made here, before the application (and
with it numpy and PyAV) is imported: one glibc malloc arena for every thread (clipvis.cli.memory,
``share_one_malloc_arena``). Python's garbage collector is paused while the application is imported, and what the
imports made is frozen then and again at exit (clipvis.cli.gc_pause: ~1 s less per process). Kept out of
``clipvis.cli.app`` so that importing the application as a library changes nothing about the importing process.

The application imports torch only where a command needs it, so help and version answer in
~0.4 s instead of ~1.6 s; a command line whose command uses torch (`uses_torch`: segment, train, evaluate running a
model, export --to onnx) gets it imported here, with the collector paused. `export` of results formats and `evaluate
--results` never touch torch and do not import it (~0.8 GB of memory and ~1 s less per process).

Before that, the surroundings every command needs are checked, each said in one line (`start_up_problem`): a working
folder deleted since the shell entered it (torch's oneMKL loader aborted on it, exit 2), no writable temporary folder
(torch's import failed on it, said as a problem of the weights). And a process whose file names are not UTF-8 (an
ASCII or Latin-1 locale without Python's UTF-8 mode) is started again in UTF-8 mode (`utf8_mode_command`).
"""

from __future__ import annotations

import codecs
import os
import signal
import sys
from collections.abc import Mapping, MutableMapping, Sequence

from clipvis.cli.distributed import STOP_SIGNALS, ignore_stop_signals, repeats_a_first_process, stop_in_silence
from clipvis.cli.gc_pause import collector_paused, freeze_before_exit
from clipvis.cli.memory import share_one_malloc_arena
from clipvis.cli.messages import error_line, error_reason, shown_path
from clipvis.cli.standard_streams import install_quiet_stderr, install_quiet_stdout, unwritten_answer

# Options that print something and exit before any command runs (Typer's help and completion, the app's --version).
ANSWERED_WITHOUT_A_COMMAND = frozenset({"--help", "--version", "--install-completion", "--show-completion"})


def runs_a_command(argv: Sequence[str], environ: dict[str, str] | None = None) -> bool:
    """Whether this command line runs a command, rather than only printing help, the version or shell
    completions."""
    env = os.environ if environ is None else environ
    arguments = list(argv[1:])
    if not arguments or "_CLIPVIS_COMPLETE" in env:
        return False
    return not ANSWERED_WITHOUT_A_COMMAND.intersection(arguments)


def _option_values(words: Sequence[str], option: str) -> list[str | None]:
    """The values ``option`` (a long option taking one value) is given in ``words``, as ``--name VALUE`` or
    ``--name=VALUE``; None for one given last, without its value."""
    values: list[str | None] = []
    for index, word in enumerate(words):
        if word == option:
            values.append(words[index + 1] if index + 1 < len(words) else None)
        elif word.startswith(option + "="):
            values.append(word[len(option) + 1 :])
    return values


def uses_torch(argv: Sequence[str]) -> bool:
    """Whether the command this command line runs (`runs_a_command`) uses torch, read from the words alone and
    erring towards yes: only `export` of results formats (``--to`` given once, naming no ``onnx``) and `evaluate
    --results` (neither ``--dataset`` nor ``--frames`` given) never use it. A command line read wrongly as not
    using it still runs: its command imports torch where it uses it, only not with the collector paused. Anything
    the words leave open (``--`` among them, an option given twice) counts as using it."""
    arguments = list(argv[1:])
    if not arguments or "--" in arguments:
        return True
    command, words = arguments[0], arguments[1:]
    if command == "export":
        formats = _option_values(words, "--to")
        return len(formats) != 1 or formats[0] is None or "onnx" in formats[0].lower()
    if command == "evaluate":
        inference = any(_option_values(words, option) for option in ("--dataset", "--frames"))
        return inference or len(_option_values(words, "--results")) != 1
    return True


# Set in the environment of the process `utf8_mode_command` starts (and removed there at once): it is not started again.
# Its value says whether PYTHONIOENCODING was set for that process alone (then removed there too).
UTF8_RESTART_VARIABLE = "_CLIPVIS_UTF8_RESTARTED"
_STREAMS_KEPT = "streams-kept"


def utf8_mode_command(orig_argv: Sequence[str], executable: str, filesystem_encoding: str) -> list[str] | None:
    """The command line that runs a process again in Python's UTF-8 mode (``-X utf8``, before the rest of its own
    ``orig_argv``), where its file names are not UTF-8 (``filesystem_encoding``); None where they are.

    Under an ASCII locale without UTF-8 mode (``LC_ALL=C PYTHONUTF8=0``), or a Latin-1 one, a file name is decoded
    byte by byte: the output folder named after ``vidé.mp4`` (its name as UTF-8 text, the text that JSON files
    record) could not be encoded back ("'ascii' codec can't encode character '\\xe9'", naming no file), nor a file
    name read from a results file. In UTF-8 mode every name comes and goes as its bytes, as on any UTF-8 system; the
    arguments, given back as the bytes they came as, are unchanged."""
    if not executable or codecs.lookup(filesystem_encoding).name == "utf-8":
        return None
    return [executable, "-X", "utf8", *orig_argv[1:]]


def _restart_in_utf8_mode() -> None:
    """Run this process' command again in UTF-8 mode where `utf8_mode_command` says to (the process is replaced; no
    thread has started, nothing was written). Its standard streams keep the locale's encoding (PYTHONIOENCODING, for
    that process alone, unless the user set it): UTF-8 mode is for the file names, and a Latin-1 terminal still gets
    Latin-1 text (help's frames drawn in ASCII where the encoding has no box characters, as before)."""
    restarted = os.environ.pop(UTF8_RESTART_VARIABLE, None)
    if restarted is not None:  # started again already; the marks go, so that its children do not inherit them
        if restarted == _STREAMS_KEPT:
            os.environ.pop("PYTHONIOENCODING", None)
        return
    if sys.platform == "win32":  # Windows' file names are Unicode whatever the locale
        return
    command = utf8_mode_command(sys.orig_argv, sys.executable, sys.getfilesystemencoding())
    if command is None:
        return
    environment = {**os.environ, UTF8_RESTART_VARIABLE: "1"}
    if "PYTHONIOENCODING" not in os.environ and sys.stdout is not None:
        environment.update(PYTHONIOENCODING=f"{sys.stdout.encoding}:{sys.stdout.errors}",
                           **{UTF8_RESTART_VARIABLE: _STREAMS_KEPT})
    try:
        os.execve(command[0], command, environment)
    except OSError:  # the interpreter cannot be started again (gone, or no longer executable): run as it is
        pass


def start_up_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """What in this process' surroundings stops every command before it starts, as one line; None where nothing
    does. Checked before torch is imported, which fails on both without naming them:

    * the working folder no longer exists (``mkdir d; cd d; rmdir ../d``): torch's oneMKL loader aborted the process
      ("Intel oneMKL FATAL ERROR: Cannot load libtorch_cpu.so", exit 2);
    * no folder of Python's list for temporary files can be written (``$TMPDIR``, then ``/tmp``, ``/var/tmp``,
      ``/usr/tmp`` and the working folder: the rule of Python's tempfile module, which torch's import uses): the
      import failed, and the command said it of the weights it was loading."""
    env = os.environ if environ is None else environ
    try:
        os.getcwd()
    except FileNotFoundError:
        shell_folder = env.get("PWD")
        named = f" ({shown_path(shell_folder)})" if shell_folder and not os.path.lexists(shell_folder) else ""
        return f"the current folder{named} no longer exists: cd to a folder that does and run the command again"
    import tempfile

    try:
        tempfile.gettempdir()  # kept for the rest of the process (tempfile's own rule)
    except FileNotFoundError:
        value = env.get("TMPDIR")
        given = f"TMPDIR ({shown_path(value)}), " if value else ""
        unset = "" if value else " (TMPDIR is not set)"
        return (f"no writable temporary folder: none of {given}/tmp, /var/tmp and the current folder can be "
                f"written{unset}; point TMPDIR at a folder you can write")
    return None


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


def quiet_torch_cpp_warnings(environ: MutableMapping[str, str] | None = None) -> None:
    """Under torchrun (``WORLD_SIZE`` above 1), unless the user chose: ``TORCH_CPP_LOG_LEVEL=ERROR`` (read once, as
    torch's C++ library loads). A call to the job's store that fails (torchrun's agent killed) logged a C++ warning of
    ~20 lines, stack frames included, before clipvis' own line saying it (clipvis.cli.distributed)."""
    env = os.environ if environ is None else environ
    try:
        torchrun = int(env.get("WORLD_SIZE", "1")) > 1
    except ValueError:  # DistributedRun.from_env says what is wrong with it
        return
    if torchrun:
        env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


def main() -> None:
    """Run the `clipvis` application with the process set up for it."""
    _restart_in_utf8_mode()
    quiet_torch_cpp_warnings()  # before torch is imported
    share_one_malloc_arena()
    install_quiet_stderr()  # a stderr that cannot be written stops no input (clipvis.cli.standard_streams)
    if runs_a_command(sys.argv):
        problem = start_up_problem()
        if problem is not None:
            if repeats_a_first_process():  # under torchrun: said by each machine's first worker, as a usage error
                stop_in_silence()
            else:
                sys.stderr.write(error_line(problem) + "\n")
            sys.exit(1)
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
            sys.stderr.write(error_line(f"stdout not writable ({error_reason(error)})") + "\n")
            sys.exit(1)


# The exit statuses of a command stopped by a signal, 128 + its number.
_STOPPED_STATUSES = frozenset(128 + getattr(signal, name) for name in STOP_SIGNALS if hasattr(signal, name))


def _run() -> None:
    """Import the application (torch too where the command uses it, `uses_torch`) and run it; SIGTERM and SIGHUP
    stop it as Ctrl-C does (`Terminated`), and a stop no command caught is said in one line. Once stopped, the way out
    ignores further stop signals (Ctrl-C pressed again), which would kill it by SIGINT, tracebacks after its last
    line (`ignore_stop_signals`; a command ignores them from its own last line on)."""
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

            if runs_a_command(sys.argv) and uses_torch(sys.argv):
                import torch  # noqa: F401 - imported by the command anyway; here its >100,000 objects are frozen
        try:
            run_application()
        finally:
            freeze_before_exit()
    except KeyboardInterrupt:  # before a command took over (while importing), or one without a Ctrl-C path
        ignore_stop_signals()
        sys.stderr.write("clipvis: interrupted\n")
        sys.exit(128 + received[0] if received else 130)
    except SystemExit as done:
        if received or done.code in _STOPPED_STATUSES:
            ignore_stop_signals()
        if done.code == 130 and isinstance(getattr(done.__context__, "__cause__", None), KeyboardInterrupt):
            # Typer's own exit for a KeyboardInterrupt no command caught (a stop as a command is being called,
            # before its body's Ctrl-C path), which says nothing
            sys.stderr.write("clipvis: interrupted\n")
        if received and done.code == 130:  # a command's Ctrl-C exit, for a termination signal
            sys.exit(128 + received[0])
        raise


if __name__ == "__main__":
    main()
