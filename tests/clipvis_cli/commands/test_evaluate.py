"""`clipvis evaluate --results --gt [--protocol] [--json]`: output, metrics JSON and exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from typer.testing import CliRunner

from clipvis.cli.app import app
from clipvis.cli.evaluation import score_results_file

runner = CliRunner()


def square(top: int, left: int, side: int = 3) -> np.ndarray:
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[top : top + side, left : left + side] = 1
    return mask


@pytest.fixture
def files(tmp_path: Path, vis: ModuleType) -> tuple[Path, Path]:
    """LV-VIS style GT (partition field) with 2 categories; results: one TP, one FP, one unknown category."""
    categories = [{"id": 1, "name": "cat", "partition": 0}, {"id": 2, "name": "dog_toy", "partition": 2}]
    tracks = [vis.gt_track(1, 1, 1, [square(0, 0), square(0, 1)]), vis.gt_track(2, 1, 2, [square(5, 5), None])]
    gt = vis.gt_file([(1, 10, 12, 2)], categories, tracks)
    results = [
        vis.result(1, 1, 0.9, [square(0, 0), square(0, 1)]),
        vis.result(1, 2, 0.8, [square(0, 8), None]),
        vis.result(1, 7, 0.7, [square(0, 0), None]),
    ]
    gt_path, results_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    results_path.write_text(json.dumps(results))
    return gt_path, results_path


def test_a_json_folder_that_cannot_be_made_is_said_before_the_table(files: tuple[Path, Path], tmp_path: Path) -> None:
    """`--json /proc/nope/m.json` printed the whole metrics table, then the error (exit 1)."""
    gt_path, results_path = files
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json",
                                 str(blocker / "m.json")])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"clipvis: error: --json {blocker}: output not writable"), result.stderr


def test_a_json_folder_made_for_a_scoring_that_fails_is_removed(files: tuple[Path, Path], tmp_path: Path) -> None:
    """`--json new/deeper/m.json` with a GT that could not be scored left new/deeper/ behind, empty; a folder the
    user had stays."""
    gt_path, results_path = files
    gt_path.write_text(json.dumps({**json.loads(gt_path.read_text()), "annotations": []}))
    had = tmp_path / "had"
    had.mkdir()
    for json_path in (tmp_path / "new" / "deeper" / "m.json", had / "m.json", had / "new" / "m.json"):
        result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json",
                                     str(json_path)])
        assert result.exit_code == 1 and "no annotations, so nothing can be scored" in result.stderr, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gt.json", "had", "results.json"]
    assert list(had.iterdir()) == []
    # a path through a folder it makes and back (review15: `x/../had` did not exist as written, so `had` was removed
    # and `x` left behind)
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json",
                                 str(tmp_path / "x" / ".." / "had" / "m.json")])
    assert result.exit_code == 1 and "no annotations, so nothing can be scored" in result.stderr, result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["gt.json", "had", "results.json"]


def test_a_results_file_is_scored_by_one_process_under_torchrun(files: tuple[Path, Path], tmp_path: Path,
                                                                 monkeypatch) -> None:
    """`torchrun --nproc-per-node 2 -m clipvis evaluate --results R --gt G --json M` printed the table twice and
    wrote M twice: scoring a file is one process' work (rank 0's)."""
    gt_path, results_path = files
    out = tmp_path / "m.json"
    monkeypatch.setenv("RANK", "1")  # RANK alone is no torchrun job (review13: it scored nothing, exit 0)
    result = runner.invoke(app, ["evaluate", "--results", str(tmp_path / "none.json"), "--gt", str(gt_path)])
    assert result.exit_code == 1 and "none.json" in result.stderr
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json", str(out)])
    assert result.exit_code == 0 and result.output == "" and not out.exists()
    monkeypatch.setenv("RANK", "0")
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json", str(out)])
    assert result.exit_code == 0 and "protocol lvvis" in result.stdout and out.is_file()


def test_scores_prints_a_table_and_writes_metrics_json(files: tuple[Path, Path], tmp_path: Path) -> None:
    gt_path, results_path = files
    out = tmp_path / "out" / "metrics.json"
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "protocol lvvis" in result.stdout
    ap_row = next(line for line in result.stdout.splitlines() if line.startswith("│ AP "))
    # category 1 found (AP 1), category 2 missed (AP 0): AP 50%, base 100%, novel 0%.
    assert [cell.strip() for cell in ap_row.split("│")[2:5]] == ["50.00", "100.00", "0.00"]
    assert "1 result(s) with category ids not in the GT were dropped (category ids: 7)" in result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["protocol"] == "lvvis"
    assert metrics["results"] == str(results_path) and metrics["gt"] == str(gt_path)
    assert metrics["metrics"]["AP"] == pytest.approx(0.5, abs=1e-12)
    assert metrics["metrics"]["APm"] is None
    assert metrics["blocks"]["novel"]["metrics"]["APn"] == 0.0
    assert metrics["blocks"]["base"]["num_categories"] == 1
    assert metrics["per_category_ap"]["2"] == 0.0
    assert metrics["num_detections"] == 2
    # The JSON holds the same numbers as the library call.
    library = score_results_file(results_path, gt_path)
    assert metrics["metrics"] == library.stats
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


def test_metrics_json_records_the_paths_typed_as_absolute_ones(files: tuple[Path, Path], tmp_path: Path,
                                                              monkeypatch) -> None:
    """metrics.json recorded --results, --gt and --weights as typed ("out1/results.json", "w/tiny.safetensors"):
    read from another folder it named other files. Now absolute, as per_video/cache.json records weights; a released
    checkpoint by its registry name."""
    gt_path, results_path = files
    monkeypatch.chdir(tmp_path)
    relative_results, relative_gt = results_path.relative_to(tmp_path), gt_path.relative_to(tmp_path)
    result = runner.invoke(app, ["evaluate", "--results", str(relative_results), "--gt", str(relative_gt), "--json",
                                 "metrics.json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["results"] == str(results_path) and metrics["gt"] == str(gt_path)
    from clipvis.cli.commands.evaluate import recorded_weights

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "tiny.safetensors").write_bytes(b"")
    assert recorded_weights("w/tiny.safetensors") == str(tmp_path / "w" / "tiny.safetensors")
    assert recorded_weights("CLIPVIS_LVIS_R50") == "clipvis-lvis-r50"
    assert recorded_weights("no-such-thing") == "no-such-thing"


def test_json_dash_writes_the_metrics_to_stdout_and_the_table_to_stderr(
    files: tuple[Path, Path], tmp_path: Path, monkeypatch
) -> None:
    """`--json -` wrote a file named `-`; now the JSON is stdout's only content (for `| jq`), the table on stderr,
    and `./-` still names a file."""
    gt_path, results_path = files
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json", "-"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["metrics"] == score_results_file(results_path, gt_path).stats
    assert "protocol lvvis" in result.stderr and "│ AP " in result.stderr
    assert not (tmp_path / "-").exists()
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json", "./-"])
    assert result.exit_code == 0 and "protocol lvvis" in result.stdout
    assert json.loads((tmp_path / "-").read_text()) == metrics


def test_protocol_option_overrides_the_default(files: tuple[Path, Path], tmp_path: Path) -> None:
    gt_path, results_path = files
    out = tmp_path / "m.json"
    args = ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--protocol", "YTVIS", "--json", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["protocol"] == "ytvis" and metrics["blocks"] == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "results file not found"),
        ("[", "is not valid JSON"),
        ("[]", "the results list is empty"),
        (json.dumps([{"video_id": 5, "category_id": 1, "score": 1, "segmentations": []}]), "entry 0 (video_id 5)"),
    ],
)
def test_bad_input_exits_1_with_one_error_line(
    files: tuple[Path, Path], tmp_path: Path, content: str | None, message: str
) -> None:
    gt_path, _ = files
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    out = tmp_path / "never.json"
    result = runner.invoke(app, ["evaluate", "--results", str(bad), "--gt", str(gt_path), "--json", str(out)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clipvis: error: ") and message in lines[0]
    assert not out.exists()


def test_json_never_deletes_a_file_evaluate_did_not_write(files: tuple[Path, Path], tmp_path: Path) -> None:
    """`--json` named the GT file, a checkpoint, or anything else by mistake: it was deleted before any check (and
    also on a usage error). Only an earlier metrics file is replaced."""
    gt_path, results_path = files
    precious = tmp_path / "model.pth"
    precious.write_bytes(b"weights")
    for extra, message in (([], "exists and is not a metrics file clipvis evaluate wrote"),
                           (["--max-videos", "1"], "--results is scored whole")):  # a run, and another usage error
        result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json",
                                     str(precious), *extra])
        assert result.exit_code == 2 and message in result.output, result.output
        assert precious.read_bytes() == b"weights"
    metrics = tmp_path / "metrics.json"
    assert runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json",
                               str(metrics)]).exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text("[")
    failed = runner.invoke(app, ["evaluate", "--results", str(bad), "--gt", str(gt_path), "--json", str(metrics)])
    assert failed.exit_code == 1 and not metrics.exists()  # a failed run leaves no stale scores


def test_bad_gt_exits_1(files: tuple[Path, Path], tmp_path: Path) -> None:
    _, results_path = files
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(results_path)])
    assert result.exit_code == 1
    assert "expected a YouTube-VIS JSON object" in result.stderr


@pytest.mark.parametrize("annotations", ["null", "missing", "empty"])
def test_a_gt_without_annotations_is_an_error_not_a_table_of_dashes(
    files: tuple[Path, Path], tmp_path: Path, annotations: str
) -> None:
    """A split without public GT (YTVIS/OVIS valid.json: no 'annotations', or null) printed a table of dashes,
    exit 0."""
    gt_path, results_path = files
    gt = json.loads(gt_path.read_text())
    if annotations == "missing":
        del gt["annotations"]
    else:
        gt["annotations"] = None if annotations == "null" else []
    gt_path.write_text(json.dumps(gt))
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json", str(out)])
    assert result.exit_code == 1 and result.stdout == "" and not out.exists()
    assert result.stderr.splitlines() == [
        f"clipvis: error: {gt_path}: no annotations, so nothing can be scored (a split without public ground truth, "
        "such as YTVIS or OVIS val? its server scores the zip `clipvis evaluate --dataset NAME` writes)"
    ]


def test_a_gt_without_categories_is_an_error_not_a_table_of_dashes(files: tuple[Path, Path], tmp_path: Path) -> None:
    """A GT with annotations and an empty 'categories' list printed a table of dashes, exit 0 (each annotation of a
    category it does not list, each result dropped)."""
    gt_path, results_path = files
    gt = json.loads(gt_path.read_text())
    gt["categories"] = []
    gt_path.write_text(json.dumps(gt))
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json", str(out)])
    assert result.exit_code == 1 and result.stdout == "" and not out.exists()
    assert result.stderr.splitlines() == [
        f"clipvis: error: {gt_path}: no categories to score (its 'categories' list is empty; its 2 annotation(s) count "
        "only under a category it lists)"
    ]


def test_an_unknown_option_is_a_usage_error_exit_2() -> None:
    """(evaluate's other usage errors, each with its line: tests/clipvis_cli/test_app.py)"""
    result = runner.invoke(app, ["evaluate", "--results", "r.json", "--gt", "g.json", "--bogus"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == "clipvis: error: No such option: --bogus (see 'clipvis evaluate --help')\n"


def test_the_paper_column_is_shown_only_for_the_release_itself(tmp_path: Path, monkeypatch, capsys) -> None:
    """The paper's number followed the file name: any model saved as clipvis_lvis_r50_7.pth showed the paper's 19.5.
    Now: a released name (the cache's copy), or a file with the cache's copy's content, however it is typed."""
    from clipvis.cli.commands.evaluate import published_numbers
    from clipvis.cli.dataset_inference import is_subset_ground_truth, subset_ground_truth_name

    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clipvis_lvis_r50_7.pth").write_bytes(b"my own model")
    (tmp_path / "mine.pth").write_bytes(b"x")
    paper = published_numbers("clipvis-lvis-r50", "lvvis_val")
    assert paper == {"AP": 19.5}
    assert published_numbers("CLIPVIS_LVIS_R50", "lvvis_val") == paper
    for typed in ("clipvis_lvis_r50_7.pth", "./clipvis_lvis_r50_7.pth", str(tmp_path / "clipvis_lvis_r50_7.pth")):
        assert published_numbers(typed, "lvvis_val") is None, typed  # not the release: no cache copy to match
    assert "is not the copy in clipvis' cache" in capsys.readouterr().err
    cache = tmp_path / "cache" / "weights"
    cache.mkdir(parents=True)
    (cache / "clipvis_lvis_r50_7.pth").write_bytes(b"the release")
    assert published_numbers("clipvis_lvis_r50_7.pth", "lvvis_val") is None  # same name and size class, other bytes
    (tmp_path / "clipvis_lvis_r50_7.pth").write_bytes(b"the release")  # downloaded by hand: the same bytes
    for typed in ("clipvis_lvis_r50_7.pth", "./clipvis_lvis_r50_7.pth", str(tmp_path / "clipvis_lvis_r50_7.pth"),
                  str(cache / "clipvis_lvis_r50_7.pth")):
        assert published_numbers(typed, "lvvis_val") == paper, typed
    assert published_numbers("mine.pth", "lvvis_val") is None and published_numbers(str(tmp_path), "lvvis_val") is None
    # a copy downloaded by hand keeps the name the browser gave it: its bytes make it the release (it needed the
    # release's file name)
    for name in ("copy_clipvis_lvis_r50_7.pth", "CLIPVIS_LVIS_R50_7.pth", "model_final.pth"):
        (tmp_path / name).write_bytes(b"the release")
        assert published_numbers(name, "lvvis_val") == paper, name
    assert is_subset_ground_truth(tmp_path / subset_ground_truth_name(3))
    assert not is_subset_ground_truth(tmp_path / "x.json")


def test_a_tilde_after_the_equals_sign_of_json_is_the_home_folder(files: tuple[Path, Path], tmp_path: Path,
                                                                   monkeypatch) -> None:
    """`--json=~/m.json` (bash leaves a `~` after `=` as it is) wrote `./~/m.json`; it is the home folder's now, as
    evaluate's -o (segment's callback) takes it."""
    gt_path, results_path = files
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    result = runner.invoke(app, ["evaluate", "--results", str(results_path), "--gt", str(gt_path), "--json=~/m.json"])
    assert result.exit_code == 0, result.output
    assert (home / "m.json").is_file() and not (work / "~").exists()


def test_a_tilde_after_the_equals_sign_of_results_and_gt_is_the_home_folder(files: tuple[Path, Path], tmp_path: Path,
                                                                            monkeypatch) -> None:
    """Review: `--results=~/r.json --gt=~/g.json` (bash leaves a `~` after `=` as it is) said "GT file not found:
    ~/g.json", while --weights, -o and --json expanded it; every path option's leading `~` is the home folder now."""
    gt_path, results_path = files
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path.parent)
    result = runner.invoke(app, ["evaluate", f"--results=~/{results_path.name}", f"--gt=~/{gt_path.name}"])
    assert result.exit_code == 0, result.output
    assert "AP" in result.stdout


def test_a_folder_for_a_file_option_is_a_usage_error_however_its_path_is_spelled(files: tuple[Path, Path],
                                                                                  tmp_path: Path, monkeypatch) -> None:
    """Review 275: click checked `--gt`'s folder / `--frames`' file on the text as typed, so `--gt=~/d` (a folder)
    was one `GT file is a directory` line with exit 1 while `--gt home/d` was a usage error, and `--frames=~/g.json`
    (a file) said 'folder not found'. The check runs on the path the `~` was expanded in: a usage error either way."""
    gt_path, _ = files
    (tmp_path / "d").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for given in (["--gt=~/d"], ["--gt", "d"]):
        result = runner.invoke(app, ["evaluate", "--results", str(gt_path), *given])
        said = " ".join(result.output.replace("│", " ").split())
        assert result.exit_code == 2 and "is a directory." in said, result.output
    for given in ([f"--frames=~/{gt_path.name}"], ["--frames", str(gt_path)]):
        result = runner.invoke(app, ["evaluate", "--gt", str(gt_path), *given])
        said = " ".join(result.output.replace("│", " ").split())
        assert result.exit_code == 2 and "is a file." in said, result.output


def test_a_name_that_is_not_utf8_is_recorded_and_said_as_its_escaped_text(files: tuple[Path, Path],
                                                                          tmp_path: Path) -> None:
    """A results file and a --json named with bytes that are not UTF-8: metrics.json recorded the name as lone
    surrogates (invalid Unicode, refused by strict JSON parsers) and the 'wrote' line showed them; both are the
    `\\xNN` text other messages give now (hunt 276)."""
    gt_path, results_path = files
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/r\xff.json"))
    odd.write_bytes(results_path.read_bytes())
    out = Path(os.fsdecode(bytes(tmp_path) + b"/m\xff.json"))
    result = runner.invoke(app, ["evaluate", "--results", str(odd), "--gt", str(gt_path), "--json", str(out)])
    assert result.exit_code == 0, result.output
    recorded = json.loads(out.read_bytes().decode("utf-8"))  # strict: no surrogates
    assert recorded["results"] == f"{tmp_path}/r\\xff.json", recorded["results"]
    assert f"wrote {tmp_path}/m\\xff.json" in result.stderr
