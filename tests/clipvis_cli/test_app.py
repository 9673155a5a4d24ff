"""The `clipvis` application's help: what a user reads before running anything."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipvis.cli.app import app

WIDE = {"TERMINAL_WIDTH": "200", "COLUMNS": "200"}  # one row per option, nothing cut short


def help_rows(text: str) -> dict[str, str]:
    """Option (its first long name) -> the rest of its row in rich's help table."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^│\s*(?:\*\s+)?(--[\w-]+)(.*)$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


@pytest.mark.parametrize("command", [[], ["segment"], ["evaluate"], ["export"], ["train"]],
                         ids=["clipvis", "segment", "evaluate", "export", "train"])
def test_flags_show_no_value_placeholder_in_the_help(command) -> None:
    """Every flag read `--exact <bool>`, `--help <bool>`, as if it took a value; options that take one keep theirs."""
    result = CliRunner().invoke(app, [*command, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = help_rows(result.stdout)
    assert "--help" in rows and "<bool>" not in result.stdout, result.stdout
    if command == ["segment"]:
        assert "<str>" in rows["--vocab"] and "<int range>" in rows["--stride"] and "<path>" in rows["--output"]
        assert "Skip inputs" in rows["--skip-existing"] and "--overwrite" in rows["--skip-existing"]
    if not command:
        assert {"--version", "--install-completion", "--show-completion"} <= set(rows)


@pytest.mark.parametrize("command, usage", [
    ("segment", "Usage: clipvis segment [OPTIONS] INPUTS..."),
    ("export", "Usage: clipvis export [OPTIONS] [INPUTS]..."),
    ("train", "Usage: clipvis train [OPTIONS] [KEY=VALUE]..."),
    ("evaluate", "Usage: clipvis evaluate [OPTIONS]"),
])
def test_the_usage_line_names_the_arguments_plainly(command, usage) -> None:
    """The usage lines read `clipvis segment [OPTIONS] {inputs}...` and
    `clipvis train [OPTIONS] [[KEY=VALUE]...]...`."""
    shown = CliRunner().invoke(app, [command, "--help"], env=WIDE).stdout
    assert [line.strip() for line in shown.splitlines() if "Usage:" in line] == [usage]


@pytest.mark.parametrize("command, option", [("segment", "--weights"), ("evaluate", "--weights"),
                                             ("export", "--model"), ("train", "--weights")])
def test_every_weights_option_says_a_training_folder_is_one(command, option) -> None:
    """A training output folder works wherever weights are taken; the help of segment, evaluate and export said
    "a checkpoint name or path" only."""
    rows = help_rows(CliRunner().invoke(app, [command, "--help"], env=WIDE).stdout)
    assert "training" in rows[option] and "folder" in rows[option], rows[option]


def test_the_readme_lists_every_segment_option() -> None:
    """README's table of segment's options lacked -o/--output and --allow-hub-clip, which --help shows."""
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("Options:\n\n| option | meaning |") + len("Options:\n\n"):]
    table = table[:table.index("\n\n")]
    options = set(help_rows(CliRunner().invoke(app, ["segment", "--help"], env=WIDE).stdout)) - {"--help"}
    assert {option for option in options if f"`{option}" not in table} == set()


def test_python_dash_m_help_shows_no_value_placeholder_for_flags() -> None:
    shown = subprocess.run([sys.executable, "-m", "clipvis", "--help"], capture_output=True, text=True,
                           env={**os.environ, **WIDE}, timeout=120, check=True).stdout
    assert "--version" in shown and "--install-completion" in shown and "<bool>" not in shown, shown


@pytest.mark.parametrize("args, line", [
    (["segment", "v.mp4", "--vocab", "car,car"],
     "clipvis: error: --vocab: duplicate class names (case aside): 'car' (see 'clipvis segment --help')"),
    (["segment", "v.mp4", "--vocab", "a", "--max-tracks", "0"],
     "clipvis: error: Invalid value for '--max-tracks': Input should be greater than or equal to 1 "
     "(see 'clipvis segment --help')"),
    (["segment", "v.mp4", "--vocab", "a", "--exact", "--max-tracks", "3"],
     "clipvis: error: --exact writes the official evaluator's results (its TEST.DETECTIONS_PER_IMAGE per video, 50, "
     "unsorted, no threshold): "
     "leave out --max-tracks and --score-threshold, or --exact (see 'clipvis segment --help')"),
    (["export", "--zpi"],
     "clipvis: error: No such option: --zpi (Possible options: --zip) (see 'clipvis export --help')"),
    # scores in percent kept every track or none, silently (segfix29)
    (["segment", "v.mp4", "--vocab", "a", "--score-threshold", "50"],
     "clipvis: error: Invalid value for '--score-threshold': 50 is not a score: scores are 0..1 (for 50%, write 0.5) "
     "(see 'clipvis segment --help')"),
    (["segment", "v.mp4", "--vocab", "a", "--overlay-min-score", "-0.2"],
     "clipvis: error: Invalid value for '--overlay-min-score': -0.2 is not a score: scores are 0..1 "
     "(see 'clipvis segment --help')"),
    (["export", "out/v", "--to", "coco", "--min-score", "20"],
     "clipvis: error: Invalid value for '--min-score': 20 is not a score: scores are 0..1 (for 20%, write 0.2) "
     "(see 'clipvis export --help')"),
    # 1.0000001 was said as "1 is not a score ... (for 1%, write 0.01)": the value as given, no percent hint (hunt 194)
    (["segment", "v.mp4", "--vocab", "a", "--overlay-min-score", "1.0000001"],
     "clipvis: error: Invalid value for '--overlay-min-score': 1.0000001 is not a score: scores are 0..1 "
     "(see 'clipvis segment --help')"),
    (["segment", "v.mp4", "--vocab", "a", "--overlay-min-score", "12.5"],
     "clipvis: error: Invalid value for '--overlay-min-score': 12.5 is not a score: scores are 0..1 "
     "(for 12.5%, write 0.125) (see 'clipvis segment --help')"),
    # 1.1 / 100 is 0.011000000000000001 in floating point, and the hint said so (review 203)
    (["segment", "v.mp4", "--vocab", "a", "--overlay-min-score", "1.1"],
     "clipvis: error: Invalid value for '--overlay-min-score': 1.1 is not a score: scores are 0..1 "
     "(for 1.1%, write 0.011) (see 'clipvis segment --help')"),
    (["segment", "v.mp4", "--vocab", "a", "--overlay-min-score", "99.99"],
     "clipvis: error: Invalid value for '--overlay-min-score': 99.99 is not a score: scores are 0..1 "
     "(for 99.99%, write 0.9999) (see 'clipvis segment --help')"),
    # `-o "$OUT"` with OUT unset wrote into the working folder; `-o -` made a folder called "-" (segfix29)
    (["segment", "v.mp4", "--vocab", "a", "-o", ""],
     "clipvis: error: Invalid value for '-o' / '--output': an empty name (an unset shell variable?); give the output "
     "folder (see 'clipvis segment --help')"),
    (["segment", "v.mp4", "--vocab", "a", "-o", "-"],
     "clipvis: error: Invalid value for '-o' / '--output': the outputs are files in a folder and cannot go to stdout; "
     "give a folder (./- for a folder named -) (see 'clipvis segment --help')"),
    (["export", "out/v", "--to", "coco", "-o", "-"],
     "clipvis: error: -o: the outputs are files in a folder and cannot go to stdout; give a folder (./- for a folder "
     "named -) (see 'clipvis export --help')"),
    (["evaluate", "--gt", "gt.json", "--frames", "f", "-o", " "],
     "clipvis: error: Invalid value for '-o' / '--output': an empty name (an unset shell variable?); give the output "
     "folder (see 'clipvis evaluate --help')"),
    (["segmnet"], "clipvis: error: No such command 'segmnet'. Did you mean 'segment'? (see 'clipvis --help')"),
    (["evaluate"],
     "clipvis: error: nothing to evaluate: give --results R --gt G (score a results file), --dataset NAME (run a "
     "checkpoint on a benchmark) or --gt G --frames F (run it on custom data) (see 'clipvis evaluate --help')"),
    (["evaluate", "--gt", "gt.json"],
     "clipvis: error: --gt needs --results R (score a results file against it) or --frames F (run a checkpoint on its "
     "videos' frames) (see 'clipvis evaluate --help')"),
    (["evaluate", "--results", "r.json"],
     "clipvis: error: --results needs --gt G (the ground truth to score it against) (see 'clipvis evaluate --help')"),
    (["export", "x", "--to", "coco", "--model", "W"],
     "clipvis: error: --model is only for --to onnx (see 'clipvis export --help')"),
    # an option without its value: click's parser raised it without the command, and the line named no help
    (["evaluate", "--gt"], "clipvis: error: Option '--gt' requires an argument. (see 'clipvis evaluate --help')"),
    (["segment", "v.mp4", "--vocab"],
     "clipvis: error: Option '--vocab' requires an argument. (see 'clipvis segment --help')"),
    # typer checks a choice with pydantic: its "Value error, " and quoted list leaked into the line
    (["evaluate", "--results", "r.json", "--gt", "g.json", "--protocol", "coco"],
     "clipvis: error: Invalid value for '--protocol': 'coco' is not one of ytvis, lvvis, burst "
     "(see 'clipvis evaluate --help')"),
])
def test_a_usage_error_is_one_line_with_exit_code_2(args, line) -> None:
    """README: usage errors stay one plain `clipvis: error:` line; Typer drew a 5-8 line box (long messages wrapped
    mid-sentence) into logs and pipes."""
    result = CliRunner().invoke(app, args, env={"TERMINAL_WIDTH": "80"})
    assert result.exit_code == 2
    assert result.stderr == line + "\n" and result.stdout == ""


@pytest.mark.parametrize(("args", "line"), [
    (["segment", "v.mp4", "--vocab", "cat", "--vocab", "dog"],
     "clipvis: error: '--vocab' given twice: give one comma-separated list (see 'clipvis segment --help')"),
    (["segment", "v.mp4", "--vocab", "cat", "--formats", "ytvis", "--formats=coco"],
     "clipvis: error: '--formats' given twice: give one comma-separated list (see 'clipvis segment --help')"),
    (["segment", "v.mp4", "--vocab-file", "a.txt", "--vocab-file", "b.txt"],
     "clipvis: error: '--vocab-file' given twice: give it once (see 'clipvis segment --help')"),
    (["segment", "v.mp4", "--vocab", "cat", "-o", "a", "--output", "b"],
     "clipvis: error: '-o' / '--output' given twice: give it once (see 'clipvis segment --help')"),
    (["export", "out/v", "--to", "coco", "--to", "ytvis"],
     "clipvis: error: '--to' given twice: give one comma-separated list (see 'clipvis export --help')"),
    (["evaluate", "--results", "r.json", "--gt", "a.json", "--gt", "b.json"],
     "clipvis: error: '--gt' given twice: give it once (see 'clipvis evaluate --help')"),
])
def test_an_option_that_takes_one_value_given_twice_is_a_usage_error(args, line) -> None:
    """`--vocab cat --vocab dog` kept the last value alone (run.json recorded ['dog']): the first was lost without a
    word. Options meant to be repeated (train's --data and --images), flags and --help are as they were."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.stderr == line + "\n", result.output
    repeated = CliRunner().invoke(app, ["train", "--data", "a.json", "--data", "b.json", "--images", "a", "--images",
                                        "b", "--no-autoscale", "--no-autoscale"])
    assert repeated.exit_code == 2 and "--config is required" in repeated.stderr, repeated.output
    helped = CliRunner().invoke(app, [*args, "--help"])
    assert helped.exit_code == 0 and "Usage: clipvis" in helped.stdout


@pytest.mark.parametrize(("args", "line"), [
    (["segment", "v.mp4", "--vocab", "cat", "--skip-existing", "--overwrite"],
     "clipvis: error: --skip-existing and --overwrite contradict each other: give one (see 'clipvis segment --help')"),
    (["segment", "v.mp4", "--overwrite", "--vocab", "cat", "--skip-existing"],
     "clipvis: error: --skip-existing and --overwrite contradict each other: give one (see 'clipvis segment --help')"),
    (["export", "out/v", "--to", "coco", "--no-media", "--media"],
     "clipvis: error: --media and --no-media contradict each other: give one (see 'clipvis export --help')"),
])
def test_both_forms_of_a_flag_pair_is_a_usage_error(args, line) -> None:
    """`--skip-existing --overwrite` ran with whichever came last, without a word: one of the two was not meant."""
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.stderr == line + "\n", result.output


def test_one_form_of_a_flag_pair_given_twice_or_as_an_argument_after_a_double_dash_is_no_contradiction() -> None:
    """The same form twice says one thing; after `--` every word is an input (a file named `--overwrite`)."""
    for args in (["export", "out/v", "--to", "coco", "--media", "--media", "--width", "x"],
                 ["export", "out/v", "--to", "coco", "--media", "--width", "x", "--", "--no-media"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "contradict" not in result.stderr and "'--width'" in result.stderr, args


@pytest.mark.parametrize("command", [["segment", "v.mp4", "--vocab", "a"], ["evaluate", "--dataset", "lvvis_val"]],
                         ids=["segment", "evaluate"])
@pytest.mark.parametrize("device", ["cuda:x", "cudaX", "cuda:", "cuda:-1", "cuda:٣", "gpu"])
def test_a_device_other_than_auto_cpu_cuda_or_cuda_n_is_a_usage_error(command, device) -> None:
    """`--device cuda:x` passed a `startswith("cuda")` check: on a GPU machine PyTorch's ValueError came as a
    traceback, `cudaX` as an error blaming the weights, `cuda:-1` got to PyTorch too."""
    result = CliRunner().invoke(app, [*command, "--device", device])
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"clipvis: error: Invalid value for '--device': must be auto, cpu, cuda or cuda:N "
                             f"(N = 0, 1, ...), not {device!r} (see 'clipvis {command[0]} --help')\n")


def test_clipvis_alone_still_prints_its_help() -> None:
    result = CliRunner().invoke(app, [])
    assert "Usage: clipvis [OPTIONS] COMMAND" in result.output and "segment" in result.output
    assert "clipvis: error" not in result.output


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="HOME=/proc: a folder no one can write in (Linux)")
def test_a_shell_completion_that_cannot_be_installed_is_one_line_naming_the_file(monkeypatch) -> None:
    """`HOME=/proc clipvis --install-completion` (or a read-only HOME) printed Typer's traceback
    (FileNotFoundError: '/proc/.bashrc')."""
    import typer._completion_shared as completion

    monkeypatch.setattr(completion, "_get_shell_name", lambda: "bash")  # as from a bash session
    monkeypatch.setenv("HOME", "/proc")
    result = CliRunner().invoke(app, ["--install-completion"])
    assert (result.exit_code, result.stdout) == (1, ""), repr(result.exception)
    assert re.fullmatch(r"clipvis: error: --install-completion: cannot write /proc/\.bashrc \([^()\n]+\)\n",
                        result.stderr), result.stderr


def test_the_help_describes_every_command_under_python_oo() -> None:
    """`python -OO -m clipvis --help` (docstrings stripped) listed `segment` and `train` without a description, and
    each command's own --help lost it: Typer read them from the functions' docstrings."""
    from clipvis.cli.commands.evaluate import EVALUATE_HELP
    from clipvis.cli.commands.export import EXPORT_HELP
    from clipvis.cli.commands.segment import SEGMENT_HELP
    from clipvis.cli.commands.train import TRAIN_HELP

    probe = ("from typer.testing import CliRunner\nfrom clipvis.cli.app import app\n"
             "for command in ([], ['segment'], ['evaluate'], ['export'], ['train']):\n"
             "    print(CliRunner().invoke(app, [*command, '--help'], env={'COLUMNS': '200'}).stdout, '\\f')\n")
    done = subprocess.run([sys.executable, "-OO", "-c", probe], capture_output=True, text=True, timeout=120,
                          check=True)
    listing, *helps = [" ".join(page.replace("│", " ").split()) for page in done.stdout.split("\f")[:5]]
    assert "segment Segment and track every object" in listing and "train Train CLIP-VIS" in listing, listing
    for shown, described in zip(helps, (SEGMENT_HELP, EVALUATE_HELP, EXPORT_HELP, TRAIN_HELP), strict=True):
        assert " ".join(described.split()) in shown, shown
