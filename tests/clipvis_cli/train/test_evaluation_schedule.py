"""When a training run evaluates and saves: every TEST.EVAL_PERIOD iterations and after the last one (detectron2's
EvalHook, which the official train_net registers), once; no extra checkpoints when there is nothing to evaluate."""

from __future__ import annotations

import json

from clipvis.cli.app import app

from ..commands.test_train import runner, train, write_ytvis
from .conftest import write_coco


def evaluated_iterations(run) -> list[int]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [record["iteration"] for record in records if "lr" not in record]


def test_the_final_model_is_evaluated_once_also_off_the_evaluation_period(tmp_path, tiny_train_config):
    """MAX_ITER 3 with TEST.EVAL_PERIOD 2 evaluated after iteration 2 alone, and a period past MAX_ITER evaluated
    nothing: the final model, the one a run is for, was never evaluated."""
    gt, frames = write_ytvis(tmp_path / "data", num_videos=1, length=2)
    config = tiny_train_config(tmp_path, MAX_ITER=3, CHECKPOINT_PERIOD=2)
    run = tmp_path / "run"
    evaluation = ["TEST.EVAL_PERIOD=2", f"CLIPVIS.TEST_DATA=[{{json: {gt}, frames: {frames}}}]",
                  "INPUT.MIN_SIZE_TRAIN=[64]", "INPUT.MAX_SIZE_TRAIN=128"]
    train(config, run, (gt, frames), *evaluation)
    assert evaluated_iterations(run) == [1, 2]  # after iterations 2 and 3 (the last)
    resumed = runner.invoke(app, ["train", "--output-dir", str(run), "--resume"])
    assert resumed.exit_code == 0 and "nothing to do" in resumed.output, resumed.output
    assert evaluated_iterations(run) == [1, 2]  # not twice
    # a period past the (new) end: the last iteration's model alone
    longer = runner.invoke(app, ["train", "--output-dir", str(run), "--resume", "SOLVER.MAX_ITER=4",
                                 "TEST.EVAL_PERIOD=5"])
    assert longer.exit_code == 0, longer.output + repr(longer.exception)
    assert evaluated_iterations(run) == [1, 2, 3]


def test_an_evaluation_period_without_a_test_set_saves_no_extra_checkpoints_and_says_so(tmp_path, tiny_train_config):
    """TEST.EVAL_PERIOD=1 with no test set saved a checkpoint after every iteration and evaluated nothing, silently."""
    data = write_coco(tmp_path / "data", num_images=2)
    run = tmp_path / "run"
    result = train(tiny_train_config(tmp_path, MAX_ITER=3), run, data, "TEST.EVAL_PERIOD=1")
    assert sorted(path.name for path in run.glob("model_*.safetensors")) == ["model_0000002.safetensors"]
    said = [line for line in result.output.splitlines() if "TEST.EVAL_PERIOD" in line]
    assert len(said) == 1 and said[0].startswith("clipvis: warning: TEST.EVAL_PERIOD is 1 but there is no test set"), \
        result.output


def test_a_failed_evaluation_leaves_its_cause_in_train_log_too(tmp_path, tiny_train_config, capsys):
    """train.log said 'evaluation on X failed (its error is above)' while the error line had gone to stderr alone."""
    import torch

    from clipvis.cli.train.config import load_train_config
    from clipvis.cli.train.periodic_evaluation import periodic_evaluator
    from clipvis.cli.train.run_logging import setup_logging, train_logger_restored

    gt, frames = write_ytvis(tmp_path / "data", num_videos=1, length=1)
    gt.write_text(json.dumps({"images": [], "annotations": []}))  # replaced by a COCO file since the run started
    config = load_train_config(tiny_train_config(tmp_path), [f"OUTPUT_DIR={tmp_path / 'run'}",
                                                             f"CLIPVIS.TEST_DATA=[{{json: {gt}, frames: {frames}}}]"])
    (tmp_path / "run").mkdir()
    with train_logger_restored():
        setup_logging(tmp_path / "run", 0)
        assert periodic_evaluator(config, torch.device("cpu"))(tmp_path / "run" / "model.safetensors", 0) is None
    error = f"error: {gt}: missing or invalid 'videos' list (not a YouTube-VIS GT file?)"
    assert f"clipvis: {error}" in capsys.readouterr().err
    logged = [line.split(" ", 2)[2] for line in (tmp_path / "run" / "train.log").read_text().splitlines()]
    assert logged == [error, "warning: evaluation on ytvis failed (its error is above); training goes on"], logged
