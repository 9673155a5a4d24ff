"""The `clipvis` entry point (console script and `python -m clipvis`): process-wide settings are made before the
application, torch included, starts any thread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The entry point runs `segment` with a checkpoint file that does not exist, which imports the whole application and
# torch (numpy, PyAV) and ends with the one-line error (exit 1) naming it; then the probe's three new threads
# allocate: with one arena set before torch and numpy started threads, the main arena serves all.
CONSOLE_SCRIPT = """
from clipvis.cli.launcher import main
sys.argv = ["clipvis", "segment", "video.mp4", "--vocab", "cat", "--device", "cpu", "--weights", "/no/such/w.pth"]
try:
    main()
except SystemExit as done:
    assert done.code == 1, done.code
assert "torch" in sys.modules
print("ran")
"""
PYTHON_DASH_M = """
import runpy
sys.argv = ["clipvis", "segment", "video.mp4", "--vocab", "cat", "--device", "cpu", "--weights", "/no/such/w.pth"]
try:
    runpy.run_module("clipvis", run_name="__main__", alter_sys=True)
except SystemExit as done:
    assert done.code == 1, done.code
assert "torch" in sys.modules
print("ran")
"""


@pytest.mark.parametrize("entry", [CONSOLE_SCRIPT, PYTHON_DASH_M], ids=["console-script", "python-m"])
def test_the_clipvis_command_runs_every_thread_in_one_malloc_arena(malloc_arenas_after, entry) -> None:
    arenas, printed = malloc_arenas_after(entry)
    assert printed == "ran"  # the application ran its command
    assert arenas == 1


def test_help_into_a_pipe_shows_every_option_name_whole() -> None:
    """Help read through a pipe (`clipvis segment --help | less`) was laid out 80 columns wide and cut the longest
    option names short (`--overlay-min-sco…`)."""
    import os
    import subprocess
    import sys

    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    for command in ("segment", "export", "train", "evaluate"):
        shown = subprocess.run([sys.executable, "-m", "clipvis", command, "--help"], capture_output=True, text=True,
                               env=environment, timeout=120, check=True).stdout
        assert "…" not in shown, shown
        if command == "segment":
            assert "--overlay-min-score" in shown and "--score-threshold" in shown


def test_shell_completion_is_offered_and_answers_without_torch() -> None:
    """`clipvis --show-completion bash` prints the script `--install-completion` installs, and a completion request
    (the shell sets _CLIPVIS_COMPLETE) lists the commands without importing torch (the launcher's fast path)."""
    import os
    import subprocess
    import sys

    show = ("import sys\nfrom clipvis.cli.launcher import main\n"
            "sys.argv = ['clipvis', '--show-completion', 'bash']\nmain()")
    # the shell named, not detected: Typer finds it among the process' ancestors, and a test run started detached
    # (nohup ... &, cron) has none ("Shell  not supported.")
    named = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True, env=named, timeout=120)
    script = shown.stdout
    assert "_clipvis_completion" in script and "complete " in script, (shown.returncode, shown.stderr[-2000:])
    probe = ("import runpy, sys\nsys.argv = ['clipvis']\ntry:\n    runpy.run_module('clipvis', run_name='__main__')\n"
             "except SystemExit:\n    pass\nprint('torch' in sys.modules, file=sys.stderr)\n")
    environment = {**os.environ, "_CLIPVIS_COMPLETE": "complete_bash", "COMP_WORDS": "clipvis seg", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=environment, timeout=120)
    assert done.stdout.split() == ["segment"] and done.stderr.strip().endswith("False"), (done.stdout, done.stderr)


STOPPED_AS_A_COMMAND_IS_CALLED = """
import os, signal, sys
import clipvis.cli.commands.evaluate as evaluate

def stopped(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # the launcher's handler raises it here, outside any Ctrl-C path

evaluate.score_and_report = stopped
from clipvis.cli.launcher import main
sys.argv = ["clipvis", "evaluate", "--results", "r.json", "--gt", "g.json"]
main()
"""


def test_a_stop_no_command_caught_is_said(tmp_path) -> None:
    """A SIGTERM as Typer called the command (before the command's own Ctrl-C path) exited 143 without a word:
    Typer turns an uncaught KeyboardInterrupt into exit 130 silently."""
    result = subprocess.run([sys.executable, "-c", STOPPED_AS_A_COMMAND_IS_CALLED], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 143, result.stderr
    assert result.stderr == "clipvis: interrupted\n"


@pytest.mark.parametrize(("args", "code"), [(["--help"], 0), (["segment", "--help"], 0), (["--version"], 0), ([], 2)],
                         ids=["help", "segment-help", "version", "alone"])
def test_an_answer_whose_reader_went_away_exits_as_ever_without_a_word(args, code) -> None:
    """`clipvis --help | head -1` and `clipvis segment --help | head -1` exited 1 (rich's reaction to a broken pipe;
    click's for `--version`), where other tools exit as they would have: the reader took what it wanted."""
    from .test_listing import run_with_stdout_closed

    assert run_with_stdout_closed(*args) == (code, "")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
@pytest.mark.parametrize("args", [["--version"], ["evaluate", "--help"]], ids=["version", "evaluate-help"])
def test_an_answer_into_a_full_stdout_is_one_error_line(args) -> None:
    """`clipvis --version > /dev/full` ended with an OSError traceback (the help too)."""
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "clipvis", *args], stdout=full, stderr=subprocess.PIPE,
                                text=True, timeout=120)
    assert (result.returncode, result.stderr) == (1, "clipvis: error: stdout not writable (No space left on device)\n")


def test_an_answer_without_a_stdout_is_one_error_line() -> None:
    """`clipvis --help >&-` ended with AttributeError: 'NoneType' object has no attribute 'isatty'."""
    result = subprocess.run(f"{sys.executable} -m clipvis --help >&-", shell=True, stderr=subprocess.PIPE, text=True,
                            timeout=120, executable="/bin/bash")
    assert (result.returncode, result.stderr) == (1, "clipvis: error: stdout not writable (Bad file descriptor)\n")


def test_a_working_folder_deleted_before_the_start_is_one_line_naming_it(tmp_path) -> None:
    """`mkdir d; cd d; rmdir ../d; clipvis segment /abs/video.mp4 ...`: torch's oneMKL loader aborted the process
    ("Intel oneMKL FATAL ERROR: Cannot load .../libtorch_cpu.so", exit 2)."""
    gone = tmp_path / "gone"
    gone.mkdir()
    script = f'cd "{gone}" && rmdir "{gone}" && exec "{sys.executable}" -m clipvis segment /no/video.mp4 --vocab cat'
    result = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PWD": str(gone)})
    assert (result.returncode, result.stderr) == (
        1, f"clipvis: error: the current folder ({gone}) no longer exists: cd to a folder that does and run the "
        "command again\n")


def test_no_writable_temporary_folder_is_one_line_naming_tmpdir_not_the_weights(tmp_path) -> None:
    """TMPDIR missing and /tmp, /var/tmp and the working folder read-only: torch's import failed in Python's tempfile
    ("No usable temporary directory found in [...]") as the weights loaded, and the command blamed the weights. Here
    tempfile fails as it does then (a read-only /tmp needs privileges a test does not have)."""
    probe = ("import sys, tempfile\n"
             "def none_usable():\n"
             "    raise FileNotFoundError(2, 'No usable temporary directory found in [...]')\n"
             "tempfile.gettempdir = none_usable\n"
             "from clipvis.cli.launcher import main\n"
             "sys.argv = ['clipvis', 'segment', 'video.mp4', '--vocab', 'cat', '--weights', '/no/such/w.pth']\n"
             "main()\n")
    missing = tmp_path / "missing"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "TMPDIR": str(missing)})
    assert (result.returncode, result.stderr) == (
        1, f"clipvis: error: no writable temporary folder: none of TMPDIR ({missing}), /tmp, /var/tmp and the current "
        "folder can be written; point TMPDIR at a folder you can write\n")


@pytest.mark.parametrize(("encoding", "restarted"), [("ascii", True), ("ANSI_X3.4-1968", True),
                                                     ("iso8859-1", True), ("utf-8", False), ("UTF8", False)])
def test_a_process_whose_file_names_are_not_utf8_is_started_again_in_utf8_mode(encoding, restarted) -> None:
    from clipvis.cli.launcher import utf8_mode_command

    argv = ["python", "-W", "error", "-m", "clipvis", "segment", "vid\udcc3\udca9.mp4"]
    expected = ["/usr/bin/python3", "-X", "utf8", *argv[1:]] if restarted else None
    assert utf8_mode_command(argv, "/usr/bin/python3", encoding) == expected


ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}


@pytest.mark.skipif(sys.platform == "win32", reason="Windows' file names are Unicode whatever the locale")
def test_the_process_started_again_in_utf8_mode_keeps_the_locales_streams_and_no_mark() -> None:
    """UTF-8 mode is for the file names: stdout and stderr keep the locale's encoding (a Latin-1 or ASCII terminal
    gets what it got), and the restart's marks are not passed on to the processes the command starts."""
    probe = ("import os, sys\nfrom clipvis.cli.launcher import _restart_in_utf8_mode\n_restart_in_utf8_mode()\n"
             "print(sys.flags.utf8_mode, sys.getfilesystemencoding(), sys.stdout.encoding, sys.stderr.encoding,\n"
             "      sorted(name for name in os.environ if 'CLIPVIS' in name or name == 'PYTHONIOENCODING'))\n")
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONIOENCODING"}
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True,
                           env={**environment, **ASCII_LOCALE}).stdout
    assert shown.split(maxsplit=4) == ["1", "utf-8", "ascii", "ascii", "[]\n"], shown


@pytest.mark.skipif(sys.platform == "win32", reason="Windows' file names are Unicode whatever the locale")
def test_a_utf8_file_name_under_an_ascii_locale_is_exported(tmp_path) -> None:
    """Under `LC_ALL=C PYTHONUTF8=0` (no UTF-8 mode: Python decodes file names as ASCII), the output folder of a
    video named `vidé` failed: "'ascii' codec can't encode character '\\xe9' in position ...", naming no file."""
    from .exporters.conftest import make_segment_output

    output = make_segment_output(tmp_path / "out", stem="vidé")
    environment = {**os.environ, **ASCII_LOCALE}
    result = subprocess.run([sys.executable, "-m", "clipvis", "export", str(output.folder), "--to", "png-masks",
                             "-o", str(tmp_path / "dest")], capture_output=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr.decode("utf-8", "replace")
    assert (tmp_path / "dest" / "vidé" / "png-masks").is_dir()
    assert result.stdout.splitlines() == [os.fsencode(tmp_path / "dest" / "vidé" / "png-masks")]


def imported_top_level_modules(importtime_report: str) -> set[str]:
    """The top-level packages of the modules a ``python -X importtime`` run imported (its report on stderr)."""
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in importtime_report.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_exporting_results_and_scoring_them_import_no_torch(tmp_path) -> None:
    """`clipvis export --to coco,...` and `clipvis evaluate --results R --gt G` never use torch, yet the launcher
    imported it for them (~0.8 GB of memory and ~1 s more per process, paid by every export of a shell loop)."""
    from .exporters.conftest import make_segment_output

    output = make_segment_output(tmp_path / "out")
    dest = tmp_path / "dest"
    exported = subprocess.run([sys.executable, "-X", "importtime", "-m", "clipvis", "export", str(output.folder),
                               "--to", "coco,ytvis", "-o", str(dest)], capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "torch" not in imported_top_level_modules(exported.stderr)
    scored = subprocess.run([sys.executable, "-X", "importtime", "-m", "clipvis", "evaluate", "--results",
                             str(dest / "results.json"), "--gt", str(output.ytvis)], capture_output=True, text=True,
                            timeout=120)
    assert scored.returncode == 0 and "AP" in scored.stdout, scored.stderr[-2000:]
    assert "torch" not in imported_top_level_modules(scored.stderr)


@pytest.mark.parametrize(("words", "expected"), [
    ("segment v.mp4 --vocab cat", True),
    ("train --config c.yaml", True),
    ("export out --to coco", False),
    ("export out --to=cvat-video,ytvis --zip", False),
    ("export --to onnx --model m.pth", True),
    ("export --to=ONNX --model m.pth", True),
    ("export out", True),  # no --to: unsure
    ("export out --to coco --to onnx", True),  # given twice: unsure
    ("export --to coco -- --to", True),  # `--`: unsure
    ("evaluate --results r.json --gt g.json", False),
    ("evaluate --results=r.json --gt g.json --json -", False),
    ("evaluate --dataset lvvis_val --weights w.pth", True),
    ("evaluate --gt g.json --frames frames", True),
    ("evaluate --results r.json --dataset lvvis_val", True),
    ("evaluate --gt g.json", True),
], ids=lambda value: value if isinstance(value, str) else None)
def test_torch_is_imported_up_front_for_every_command_line_that_may_use_it(words: str, expected: bool) -> None:
    from clipvis.cli.launcher import uses_torch

    assert uses_torch(["clipvis", *words.split()]) is expected


def test_torch_cpp_warnings_are_quiet_under_torchrun_unless_the_user_chose() -> None:
    """A torchrun worker whose job's store went away (its agent killed) printed torch's C++ warning, ~20 lines of
    stack frames, before clipvis' one line; the launcher now sets TORCH_CPP_LOG_LEVEL=ERROR before torch loads."""
    from clipvis.cli.launcher import quiet_torch_cpp_warnings

    worker, alone, chosen = {"WORLD_SIZE": "2"}, {}, {"WORLD_SIZE": "2", "TORCH_CPP_LOG_LEVEL": "INFO"}
    for env in (worker, alone, chosen, {"WORLD_SIZE": "x"}):
        quiet_torch_cpp_warnings(env)
    assert worker["TORCH_CPP_LOG_LEVEL"] == "ERROR" and alone == {} and chosen["TORCH_CPP_LOG_LEVEL"] == "INFO"
