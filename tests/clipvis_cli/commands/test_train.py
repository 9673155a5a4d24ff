"""`clipvis train` end to end on CPU with the tiny model: overfit, resume, DDP, bad data."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from clipvis.cli import rle
from clipvis.cli.app import app
from clipvis.model import load_model

from ..process_trees import start_process_tree
from ..train.conftest import (
    SIZE,
    _no_downloads,  # noqa: F401 - its autouse fixture, for this module's tests
    render_shapes,
    write_coco,
)

runner = CliRunner()
GLOO = pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not built into this torch")


def train(config, out, data, *extra):
    ann, images = data
    args = ["train", "--config", str(config), "--output-dir", str(out), "--data", str(ann), "--images", str(images)]
    result = runner.invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def final_weights(folder):
    pointer = (folder / "last_checkpoint").read_text().strip()
    return load_file(str(folder / pointer))


def predicted_ious(model, num_images: int) -> list[float]:
    """For every GT instance of the training images: the best IoU of a query the model calls an object."""
    ious = []
    mean = torch.tensor(model.config.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.pixel_std).view(1, 3, 1, 1)
    for i in range(num_images):
        image, masks = render_shapes(i)
        x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() - mean) / std
        out = model(x)
        logits = torch.nn.functional.interpolate(out.mask_logits, size=(SIZE, SIZE), mode="bilinear")[0] > 0
        objects = out.object_logits[0].softmax(-1)[:, 0] > 0.5
        for gt in masks:
            gt = torch.from_numpy(gt.astype(bool))
            inter = (logits & gt).flatten(1).sum(1).float()
            union = (logits | gt).flatten(1).sum(1).float()
            ious.append(float((inter / union.clamp(min=1))[objects].max()) if objects.any() else 0.0)
    return ious


def test_overfit_a_tiny_dataset_then_segment_with_the_training_folder(tmp_path, tiny_train_config):
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=60, BASE_LR=3e-3)
    out = tmp_path / "run"
    train(config, out, data, "INPUT.MIN_SCALE=1.0", "INPUT.MAX_SCALE=1.0", "MODEL.MASK_FORMER.TRAIN_NUM_POINTS=512",
          "SOLVER.CHECKPOINT_PERIOD=30")
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["total_loss"] for r in records]
    assert losses[0] >= 5 * losses[-1], losses
    assert {"loss_object_ce", "loss_mask", "loss_dice", "loss_iou", "loss_dice_0", "loss_iou_1"} <= set(records[-1])
    assert {"iterations_per_second", "data_wait_share", "eta_seconds", "lr"} <= set(records[-1])
    assert (out / "last_checkpoint").read_text().strip() == "model_0000059.safetensors"
    assert (out / "model_0000029.safetensors").is_file() and (out / "model_0000029.state.pt").is_file()
    model = load_model(out / "model_0000059.safetensors")
    ious = predicted_ious(model, 2)
    assert np.mean(ious) >= 0.7 and min(ious) >= 0.5, ious

    # The training folder is a --weights for segment (the newest checkpoint is used).
    frames = tmp_path / "clip"
    frames.mkdir()
    import cv2

    for i in range(2):
        cv2.imwrite(str(frames / f"{i:03d}.png"), render_shapes(i)[0][:, :, ::-1])
    result = runner.invoke(app, ["segment", str(frames), "--vocab", "box,disc", "--weights", str(out),
                                 "-o", str(tmp_path / "seg"), "--formats", "ytvis", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    doc = json.loads(next((tmp_path / "seg").rglob("ytvis.json")).read_text())
    assert doc["annotations"]


def test_resume_continues_exactly(tmp_path, tiny_train_config, tiny_config):
    data = write_coco(tmp_path / "data", num_images=3)
    config = tiny_train_config(tmp_path, MAX_ITER=4)
    train(config, tmp_path / "straight", data)
    train(config, tmp_path / "split", data, "SOLVER.MAX_ITER=2")
    train(config, tmp_path / "split", data, "--resume", "SOLVER.MAX_ITER=4")  # a finished run extended
    straight, split = final_weights(tmp_path / "straight"), final_weights(tmp_path / "split")
    assert (tmp_path / "split" / "last_checkpoint").read_text().strip() == "model_0000003.safetensors"
    assert straight.keys() == split.keys()
    different = [k for k in straight if not torch.equal(straight[k], split[k])]
    assert not different, different[:5]
    trained = load_file(str(tmp_path / "split" / "model_0000001.safetensors"))
    assert any(not torch.equal(trained[k], split[k]) for k in split)  # the resumed steps did train

    # The training folder exported to the official detectron2 layout loads back to the same weights.
    to_folder = runner.invoke(app, ["train", "--weights", str(tmp_path / "split"), "--export-pth", str(tmp_path)])
    for extra, said in ((["--output-dir", str(tmp_path / "o"), "--num-gpus", "2"], "--output-dir, --num-gpus has no "
                         "use with it"), (["SOLVER.MAX_ITER=3"], "give --config with them")):  # they were ignored
        ignored = runner.invoke(app, ["train", "--weights", str(tmp_path / "split"), "--export-pth",
                                      str(tmp_path / "x.pth"), *extra])
        assert ignored.exit_code == 2 and said in ignored.output and not (tmp_path / "x.pth").exists()
    assert to_folder.exit_code == 2 and "is a folder" in to_folder.output
    export = ["train", "--weights", str(tmp_path / "split"), "--export-pth", str(tmp_path / "f.pth")]
    result = runner.invoke(app, export)
    assert result.exit_code == 0, result.output
    official = torch.load(tmp_path / "f.pth", weights_only=True)["model"]
    assert "sem_seg_head.predictor.query_feat.weight" in official and "criterion.empty_object_weight" in official
    fields = tiny_config().to_dict()  # the official layout holds no config: the tiny CLIP must be described
    reloaded = load_model(tmp_path / "f.pth", config={k: v for k, v in fields.items() if k != "notes"}).state_dict()
    assert all(torch.equal(reloaded[k], split[k]) for k in split)
    # a pipe (or a device) was replaced by a regular file; a symbolic link by the file, leaving the one it named
    os.mkfifo(tmp_path / "pipe.pth")
    to_pipe = runner.invoke(app, [*export[:-1], str(tmp_path / "pipe.pth")])
    assert to_pipe.exit_code == 1 and "output not writable (a device, pipe or socket" in to_pipe.output
    (tmp_path / "link.pth").symlink_to(tmp_path / "f.pth")
    (tmp_path / "f.pth").write_bytes(b"stale")
    through_link = runner.invoke(app, [*export[:-1], str(tmp_path / "link.pth")])
    assert through_link.exit_code == 0 and (tmp_path / "link.pth").is_symlink()
    assert "sem_seg_head.predictor.query_feat.weight" in torch.load(tmp_path / "f.pth", weights_only=True)["model"]


def test_a_resume_trains_at_the_learning_rate_and_weight_decay_it_is_given(tmp_path, tiny_train_config):
    """`--resume SOLVER.BASE_LR=... SOLVER.WEIGHT_DECAY=...` was logged and recorded in config.yaml, and the run went
    on at the old rate and decay, restored with the optimiser (hunter 84)."""
    data = write_coco(tmp_path / "data", num_images=3)
    config = tiny_train_config(tmp_path, MAX_ITER=2)
    run = tmp_path / "run"
    train(config, run, data)
    train(config, run, data, "--resume", "SOLVER.MAX_ITER=4", "SOLVER.BASE_LR=0.003", "SOLVER.WEIGHT_DECAY=0.5")
    state = torch.load(run / "model_0000003.state.pt", map_location="cpu", weights_only=False)
    groups = state["optimizer"]["param_groups"]
    assert {group["initial_lr"] for group in groups} == {0.003}
    assert 0.5 in {group["weight_decay"] for group in groups}  # norm layers keep WEIGHT_DECAY_NORM
    assert state["scheduler"]["base_lrs"] == [0.003] * len(groups)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rates = {entry["iteration"]: entry["lr"] for entry in logged if "lr" in entry}
    assert rates[3] == pytest.approx(0.003 * rates[1] / yaml.safe_load(config.read_text())["SOLVER"]["BASE_LR"])


def test_steps_past_the_last_iteration_are_said(tmp_path, tiny_train_config):
    """SOLVER.MAX_ITER=5000 on a shipped config left its STEPS (in the hundreds of thousands) in place: the learning
    rate never decayed, without a word (hunter 84; detectron2 warns of it)."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=1, STEPS=[1, 7])
    result = train(config, tmp_path / "run", data)
    # a step at MAX_ITER never takes effect either (iterations 0..MAX_ITER-1): "at or past", not "past"
    assert "warning: SOLVER.STEPS 1, 7 lie at or past SOLVER.MAX_ITER 1 (the last iteration is MAX_ITER - 1): the " \
        "learning rate does not decay at them" in result.output


def _random_clip_warnings(text: str) -> list[str]:
    return [line for line in text.splitlines() if "with random weights" in line]


def test_a_clip_given_by_model_config_without_weights_is_said_to_start_random(tmp_path, tiny_train_config):
    """A CLIP given by open_clip model config (CLIPVIS.MODEL.clip_model_config, --clip-config) has no weights to
    download: without --weights train built it random and trained the head on its frozen random features for hours
    without a word. One warning says so now (stderr and train.log), naming where the CLIP's config came from and what
    to give; a run from --weights, or resumed from its own checkpoint, has its CLIP's weights and says nothing."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    run = tmp_path / "run"
    result = train(config, run, data)
    said = _random_clip_warnings(result.stderr)
    assert said == [f"clipvis: warning: the CLIP is built from CLIPVIS.MODEL.clip_model_config of {config} with random "
                    "weights, which stay frozen while the model trains: a model for tests only; to train a usable one "
                    "give --weights a checkpoint that holds this CLIP's weights (backbone.clip_model.* keys; README, "
                    "Train: a CLIP of your own)"], result.stderr
    assert len(_random_clip_warnings((run / "train.log").read_text())) == 1
    # --clip-config: the file named (the config's own clip_model_config is not the one built)
    clip_json = tmp_path / "clip.json"
    model_fields = yaml.safe_load(config.read_text())["CLIPVIS"]["MODEL"]
    clip_json.write_text(json.dumps(model_fields["clip_model_config"]))
    result = train(config, tmp_path / "run2", data, "--clip-config", str(clip_json))
    said = _random_clip_warnings(result.stderr)
    assert len(said) == 1 and said[0].startswith(f"clipvis: warning: the CLIP is built from {clip_json.resolve()} "
                                                 "(--clip-config, CLIPVIS.CLIP_CONFIG) with random weights"), said
    # weights given, or resumed: nothing said
    result = train(config, tmp_path / "run3", data, "--weights", str(run))
    assert _random_clip_warnings(result.stderr) == [], result.stderr
    result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume", "SOLVER.MAX_ITER=2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert _random_clip_warnings(result.stderr) == [], result.stderr


def test_a_checkpoint_period_at_or_past_the_last_iteration_is_said(tmp_path, tiny_train_config):
    """README's fine-tune (SOLVER.MAX_ITER=5000 with lvis_r50.yaml: CHECKPOINT_PERIOD 10,000 scaled to 40,000) saved
    nothing before its end for a kill -9 or the OOM killer to leave, without a word (STEPS past the end get one)."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=3, CHECKPOINT_PERIOD=3)
    result = train(config, tmp_path / "run", data)
    said = [line for line in result.stderr.splitlines() if "CHECKPOINT_PERIOD" in line]
    assert said == ["clipvis: warning: SOLVER.CHECKPOINT_PERIOD 3 is not below SOLVER.MAX_ITER 3: the next checkpoint "
                    "is saved at the end, after iteration 3, and a run killed before (kill -9, out of memory) keeps "
                    "nothing to --resume from (a stop signal still saves one); set SOLVER.CHECKPOINT_PERIOD, e.g. "
                    "SOLVER.CHECKPOINT_PERIOD=1"], result.stderr
    assert "SOLVER.CHECKPOINT_PERIOD 3 is not below" in (tmp_path / "run" / "train.log").read_text()
    # a resumed run keeps the checkpoint it resumed from (review14: it said "nothing")
    result = train(config, tmp_path / "run", data, "--resume", "SOLVER.MAX_ITER=6", "SOLVER.CHECKPOINT_PERIOD=6")
    said = [line for line in result.stderr.splitlines() if "CHECKPOINT_PERIOD" in line]
    assert len(said) == 1 and "keeps only model_0000002.safetensors, the checkpoint it resumed from, to --resume " \
        "from" in said[0], result.stderr
    result = train(config, tmp_path / "saved", data, "SOLVER.CHECKPOINT_PERIOD=2")
    assert "CHECKPOINT_PERIOD" not in result.stderr and (tmp_path / "saved" / "model_0000001.safetensors").is_file()
    # an evaluation period without a test set saves nothing either: said too (it was taken for a periodic save)
    result = train(config, tmp_path / "no_tests", data, "TEST.EVAL_PERIOD=1")
    assert "SOLVER.CHECKPOINT_PERIOD 3 is not below SOLVER.MAX_ITER 3" in result.stderr, result.stderr


def test_the_log_counts_one_of_a_thing_in_the_singular(tmp_path, tiny_train_config):
    """'1 training items', 'finished 1 iterations'."""
    data = write_coco(tmp_path / "data", num_images=1)
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    result = train(config, tmp_path / "run", data)
    for said in ("on 1 process, 1 CPU thread each, lr 0.001, 1 iteration, scale", "\n1 training item from ",
                 "\nfinished 1 iteration in ", " s; 0 samples skipped; weights: "):
        assert said in result.output, result.output
    result = train(config, tmp_path / "run", data, "--resume")
    assert f"nothing to do: {tmp_path / 'run'} already has 1 iteration\n" in result.output, result.output


def test_a_run_from_weights_gives_its_checkpoints_the_configs_test_time_settings(tmp_path, tiny_train_config):
    """With --weights, the checkpoints kept the starting checkpoint's INPUT.MIN_SIZE_TEST / TEST.NUM_FRAME, not the
    --config's: segment and evaluate then ran the trained model with settings the run never had."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    train(config, tmp_path / "first", data)
    tree = yaml.safe_load(config.read_text())
    first = load_model(tmp_path / "first" / "model_0000000.safetensors").config
    tree["CLIPVIS"]["MODEL"].update(min_size_test=first.min_size_test + 16, memory_length=first.memory_length + 2)
    config.write_text(yaml.safe_dump(tree))
    train(config, tmp_path / "second", data, "--weights", str(tmp_path / "first"))
    second = load_model(tmp_path / "second" / "model_0000000.safetensors").config
    assert (second.min_size_test, second.memory_length) == (first.min_size_test + 16, first.memory_length + 2)


def test_a_runs_config_yaml_given_again_as_config_is_not_scaled_a_second_time(tmp_path, tiny_train_config):
    """config.yaml kept SOLVER.REFERENCE_WORLD_SIZE 2 beside values already scaled to 1 process: given again as
    --config on 1 process, the run halved the batch and the rate again and trained twice the iterations. It records
    the number of processes its values are for, as detectron2's auto-scaling does."""
    from clipvis.cli.train.config import autoscale, load_train_config

    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, REFERENCE_WORLD_SIZE=2, IMS_PER_BATCH=4, BASE_LR=4e-3, MAX_ITER=2)
    result = train(config, tmp_path / "run", data)
    assert "global batch 2 on 1 process" in result.output and "lr 0.002, 4 iterations" in result.output
    recorded = tmp_path / "run" / "config.yaml"
    assert yaml.safe_load(recorded.read_text())["SOLVER"]["REFERENCE_WORLD_SIZE"] == 1
    for world, expected in ((1, (2, 2e-3, 4)), (2, (4, 4e-3, 2))):  # the run's own schedule; scaled from it
        schedule = autoscale(load_train_config(recorded), world)
        assert (schedule.global_batch, schedule.base_lr, schedule.max_iter) == pytest.approx(expected), world
    unscaled = tiny_train_config(tmp_path)  # REFERENCE_WORLD_SIZE 0 stays 0
    config_of_unscaled = load_train_config(unscaled)
    autoscale(config_of_unscaled, 2)
    assert config_of_unscaled.get("SOLVER.REFERENCE_WORLD_SIZE") == 0


def test_an_empty_or_dash_output_folder_is_a_usage_error(tmp_path, tiny_train_config, monkeypatch):
    """`--output-dir ""` (an unset shell variable) trained into the working folder, `--output-dir -` into a folder
    named -: as segment's, evaluate's and export's -o, both are usage errors; so is such an OUTPUT_DIR."""
    config = tiny_train_config(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for given, said, config_said in (("", "an empty name (an unset shell variable?)", "''"),
                                     ("-", "cannot go to stdout", "- (./- for a folder named -)")):
        result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", given])
        assert result.exit_code == 2 and "'--output-dir'" in result.output and said in result.output, result.output
        result = runner.invoke(app, ["train", "--config", str(config), f"OUTPUT_DIR={given}"])
        # (YAML reads - as [None], which the line said: review 278)
        assert result.exit_code == 1 and "OUTPUT_DIR must name the folder for the run's checkpoints and logs, not " \
            f"{config_said}\n" in result.output, result.output
    assert not list(work.iterdir())


def test_resume_takes_the_interrupted_runs_own_settings(tmp_path, tiny_train_config, monkeypatch):
    """`--output-dir D --resume` alone continues the run in D as it was started (schedule, data given by relative
    paths from another directory, seed), whatever config file the command names, and keeps D's config.yaml."""
    data = write_coco(tmp_path / "data", num_images=3)
    config = tiny_train_config(tmp_path, MAX_ITER=4, CHECKPOINT_PERIOD=2)
    train(config, tmp_path / "straight", data, "SOLVER.MAX_ITER=6", "SEED=-1")
    seed = yaml.safe_load((tmp_path / "straight" / "config.yaml").read_text())["SEED"]
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "split"
    train(config, run, (Path("data/coco.json"), Path("data/images")), "SOLVER.MAX_ITER=6", f"SEED={seed}")
    # As if killed after iteration 4: the newest checkpoint is model_0000003.
    for name in ("model_0000005.safetensors", "model_0000005.state.pt"):
        (run / name).unlink()
    (run / "last_checkpoint").write_text("model_0000003.safetensors")
    recorded = (run / "config.yaml").read_text()
    saved = yaml.safe_load(recorded)["CLIPVIS"]
    assert saved["DATA_ROOT"] == str(tmp_path / "datasets")  # ./datasets, as the run resolved it
    assert saved["TRAIN_DATA"] == [{"json": str(tmp_path / "data" / "coco.json"), "images": str(tmp_path / "data"
                                                                                                / "images")}]

    monkeypatch.chdir(tmp_path / "data")  # the data were given relative to tmp_path
    # The named config (MAX_ITER 4, no data) is not read; the second command finds the run complete.
    for command in (["--config", str(config), "--output-dir", str(run)], ["--output-dir", str(run)]):
        result = runner.invoke(app, ["train", *command, "--resume"])
        assert result.exit_code == 0, result.output + repr(result.exception)
        assert "resuming with the run's own settings" in result.output
    assert (run / "last_checkpoint").read_text().strip() == "model_0000005.safetensors"
    straight, split = final_weights(tmp_path / "straight"), final_weights(run)
    assert all(torch.equal(straight[k], split[k]) for k in straight)
    assert (run / "config.yaml").read_text() == recorded
    # A finished run is found so before its data loads and its model is built (minutes on LVIS): the images moved
    # away, it is still nothing to do
    (tmp_path / "data" / "images").rename(tmp_path / "data" / "moved")
    result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume"])
    assert result.exit_code == 0 and "nothing to do" in result.output, result.output
    assert "training items" not in result.output and "starting from" not in result.output, result.output

    # No run in the folder: --resume alone says so; with --config it starts one.
    result = runner.invoke(app, ["train", "--output-dir", str(tmp_path / "none"), "--resume"])
    assert result.exit_code == 1 and "no training run to resume here" in result.output


def test_resume_takes_a_checkpoint_with_its_state_and_a_new_run_never_mixes_with_an_old_one(
    tmp_path, tiny_train_config
) -> None:
    data = write_coco(tmp_path / "data", num_images=3)
    config = tiny_train_config(tmp_path, MAX_ITER=4, CHECKPOINT_PERIOD=2, STEPS=[2], BASE_LR=1e-3)
    run = tmp_path / "run"
    train(config, run, data, "CLIPVIS.LOG_PERIOD=1")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # The rate each iteration trained with: x0.1 from iteration 2 (STEPS), not one iteration early.
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]
    assert [r["lr"] for r in records] == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4])
    finished = final_weights(run)

    # The newest checkpoint lost its training state: resume from the newest one that has it, not from iteration 0.
    (run / "model_0000003.state.pt").unlink()
    result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "resumed from" in result.output and "model_0000001" in result.output
    resumed = final_weights(run)
    assert all(torch.equal(finished[k], resumed[k]) for k in finished)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2, 3]  # the records after the resume point are not doubled

    # A state that cannot be read (truncated: a crash, a full disk) is lost too: one warning naming it (it was a
    # 71-line traceback); damaged inside, where only loading it tells: one line naming it and what to do.
    state = run / "model_0000003.state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"warning: {state} cannot be read (truncated or damaged): it counts as lost; resuming from " \
           "model_0000001.safetensors" in result.output
    assert all(torch.equal(finished[k], v) for k, v in final_weights(run).items())
    import zipfile

    with zipfile.ZipFile(state, "w") as archive:
        archive.writestr("archive/data.pkl", b"not a pickle")
    result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume", "SOLVER.MAX_ITER=5"])  # (finished:
    # nothing to do, its state not read)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"clipvis: error: {state}: the training state cannot be read (" in result.output
    assert f"to resume from the checkpoint before, or start a new run from these weights: --weights " \
           f"{run / 'model_0000003.safetensors'}" in " ".join(result.output.split())

    for state in run.glob("*.state.pt"):
        state.unlink()
    result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume"])
    assert result.exit_code == 1 and "cannot resume, no checkpoint there has its training state" in result.output

    recorded = (run / "config.yaml").read_text()
    result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(run), "--data", str(data[0]),
                                 "--images", str(data[1])])
    assert result.exit_code == 1 and "holds a training run already" in result.output
    assert (run / "config.yaml").read_text() == recorded


def test_a_loss_that_is_no_longer_a_number_ends_the_run_with_one_line_in_the_log_too(tmp_path, tiny_train_config):
    """The line also names the checkpoints written just before, which may hold diverged weights (--resume with a
    lower rate diverged again from them); segment with such weights failed with scipy's 'matrix contains invalid
    numeric entries': one line saying the model produced NaN."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=30, BASE_LR=1e12, CHECKPOINT_PERIOD=1)
    args = ["train", "--config", str(config), "--output-dir", str(tmp_path / "run"), "--data", str(data[0]),
            "--images", str(data[1])]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "clipvis: error: the loss became" in result.output, result.output
    assert "the loss became" in (tmp_path / "run" / "train.log").read_text()
    saved = sorted(path.stem for path in (tmp_path / "run").glob("model_*.safetensors"))
    said = " ".join(result.output.split())
    assert saved and f"{saved[-1]}, written in the iterations just before, may hold diverged weights (--resume " \
        f"would continue from {saved[-1]}): start again from" in said and "rather than --resume" in said, said
    frames = tmp_path / "clip"
    frames.mkdir()
    import cv2

    cv2.imwrite(str(frames / "000.png"), render_shapes(0)[0])
    result = runner.invoke(app, ["segment", str(frames), "--vocab", "box", "--weights", str(tmp_path / "run"),
                                 "-o", str(tmp_path / "seg"), "--formats", "ytvis", "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert f"clipvis: error: {frames}: the model produced NaN or infinite values: its weights are broken" in \
        result.output and "invalid numeric entries" not in result.output, result.output


def test_a_corrupt_image_and_a_bad_annotation_are_skipped_with_one_warning_each(tmp_path, tiny_train_config):
    ann, images = write_coco(tmp_path / "data", num_images=3)
    (images / "img_1.png").write_bytes(b"not a png at all")
    doc = json.loads(ann.read_text())
    doc["annotations"][4]["segmentation"] = [[3.0, 4.0, 5.0]]  # image 3's rectangle: an odd-length polygon
    doc["annotations"].append({"id": 101, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0})
    ann.write_text(json.dumps(doc))
    config = tiny_train_config(tmp_path, MAX_ITER=6)
    result = train(config, tmp_path / "run", (ann, images))
    log = (tmp_path / "run" / "train.log").read_text()
    corrupt = [line for line in log.splitlines() if "img_1.png" in line]
    bad = [line for line in log.splitlines() if "annotation 5" in line]
    assert len(corrupt) == 1 and "unreadable image" in corrupt[0], log
    assert len(bad) == 1 and "bad annotation" in bad[0], log
    box_only = [line for line in log.splitlines() if "annotation 101" in line]
    assert len(box_only) == 1 and "1 annotation skipped, without a segmentation" in box_only[0], log
    assert "model_0000005.safetensors" in result.output
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_samples"] >= 1
    said = [line for line in result.stderr.splitlines() if "annotation 101" in line]  # as every command warns
    assert len(said) == 1 and said[0].startswith("clipvis: warning: "), result.stderr


@pytest.fixture(scope="module")
def one_and_two_gloo_processes(tmp_path_factory, tiny_train_config, tiny_config):
    """The same training run in this process and as `--num-gpus 2` gloo processes (global batch 2 both, an evaluation
    after every iteration), both from a checkpoint that contradicts the config (one more decoder layer): the two tests
    below share them (each run starts its processes, imports torch and builds the model once for both). {"root": the
    runs' parent folder ("one", "two"), "two": the --num-gpus run's CliRunner result, "stderr": what the command and
    its processes wrote to stderr, "cpus": the CPUs this process may use}."""
    import os

    root = tmp_path_factory.mktemp("gloo")
    data = write_coco(root / "data", num_images=4)
    gt, frames = write_ytvis(root / "ytvis", num_videos=2, length=2)
    config = tiny_train_config(root, MAX_ITER=2, IMS_PER_BATCH=2)
    same = ["INPUT.MIN_SCALE=1.0", "INPUT.MAX_SCALE=1.0", "MODEL.MASK_FORMER.MASKIOU_WEIGHT=0", "CLIPVIS.LOG_PERIOD=1",
            "TEST.EVAL_PERIOD=1", f"CLIPVIS.TEST_DATA=[{{json: {gt}, frames: {frames}}}]", "--weights",
            str(root / "first"), f"CLIPVIS.MODEL.decoder_layers={tiny_config().decoder_layers + 1}"]
    threads = torch.get_num_threads()
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else set()
    with pytest.MonkeyPatch.context() as patch:  # isolated_cache's, for this module-scoped fixture
        patch.setenv("CLIPVIS_CACHE", str(root / "cache"))
        patch.setenv("CLIPVIS_OFFLINE", "1")
        train(config, root / "first", data, "SOLVER.MAX_ITER=1")
        train(config, root / "one", data, *same)
        patch.delenv("OMP_NUM_THREADS")
        torch.set_num_threads(max(os.cpu_count() or 2, 2))  # what a process without OMP_NUM_THREADS takes
        if len(cpus) >= 2:
            os.sched_setaffinity(0, sorted(cpus)[:2])  # a 2-CPU machine: the processes started now inherit it
        said = root / "stderr"
        saved = os.dup(2)
        try:
            with open(said, "w") as stderr:  # the processes' stderr, this process' own
                os.dup2(stderr.fileno(), 2)
                two = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(root / "two"),
                                          "--data", str(data[0]), "--images", str(data[1]), *same, "--num-gpus", "2",
                                          "DATALOADER.NUM_WORKERS=2"])
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            torch.set_num_threads(threads)
            if cpus:
                os.sched_setaffinity(0, cpus)
        assert "OMP_NUM_THREADS" not in os.environ  # the command's own environment is left as it was
    assert two.exit_code == 0, two.output + said.read_text() + repr(two.exception)
    return {"root": root, "two": two, "stderr": two.stderr + said.read_text(), "cpus": cpus}


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not built into this torch")
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(one_and_two_gloo_processes):
    """Global batch 2 as 2 processes x 1 image == 1 process x 2 images.

    The mask losses are normalised by the global mask count and the object CE has equal weights per image here, so
    the gradients agree to rounding. The IoU term is a per-process mean over the matches with IoU > 0 (as the
    official code), which differs from the one-process mean when processes have different counts: it is off here.

    --num-gpus N without GPUs started N processes with every core's threads each (~8x slower than torchrun's one
    thread per process, and DDP 'Grad strides' warnings): the 2 processes run here without OMP_NUM_THREADS. Their
    loader workers are capped at each process' share of the CPUs (2 processes x 2 workers on 2 CPUs were not).

    Both runs evaluate after every iteration: rank 0 evaluates in its own process while the other rank waits at the
    barrier, and the evaluation must not take the training's process group for its own (a torchrun `evaluate`'s
    gathers against the other rank's barrier); nor may it change what is trained (the weights still agree).
    """
    root, cpus = one_and_two_gloo_processes["root"], one_and_two_gloo_processes["cpus"]
    log = (root / "two" / "train.log").read_text()
    assert "on 2 processes, 1 CPU thread each" in log
    if len(cpus) >= 2:  # the loader workers: each process' share of the machine's CPUs (2 x 2 on 2 CPUs were not)
        assert "DATALOADER.NUM_WORKERS is 2 but the 2 training processes of this machine share 2 CPUs: the data " \
               "loads with 1 worker process each" in log, log
    one, two = final_weights(root / "one"), final_weights(root / "two")
    metrics = [[json.loads(line) for line in (root / run / "metrics.jsonl").read_text().splitlines()]
               for run in ("one", "two")]
    for run, records in zip(("one", "two"), metrics, strict=True):
        assert [r["iteration"] for r in records if "eval/ytvis/AP" in r] == [0, 1], records
        assert "failed" not in (root / run / "train.log").read_text()
        results = [json.loads((root / run / "eval" / f"ytvis_{i:07d}" / "results.json").read_text())
                   for i in (0, 1)]
        assert all({r["video_id"] for r in result} == {1, 2} for result in results)  # every video, in rank 0's
    losses = [[r["total_loss"] for r in records if "total_loss" in r] for records in metrics]
    assert len(losses[0]) == 2 and losses[0] == pytest.approx(losses[1], rel=1e-5)
    for key in one:
        # A conv bias right before a GroupNorm has a zero gradient up to rounding; Adam turns that noise into +-lr.
        if re.fullmatch(r"pixel_decoder\.input_proj\.\d\.0\.bias", key):
            continue
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not built into this torch")
def test_a_checkpoint_that_contradicts_the_config_is_one_clipvis_warning_from_one_process(one_and_two_gloo_processes):
    """The checkpoint's notes were raw Python UserWarnings (file:line and the source line), one per process; segment
    says them as `clipvis: warning:` lines. (The --num-gpus 2 run of one_and_two_gloo_processes: the command runs
    here, its processes write to this process' stderr.)"""
    stderr = one_and_two_gloo_processes["stderr"]  # the command's own lines, and its processes'
    lines = [line for line in stderr.splitlines() if "config says DEC_LAYERS" in line]
    assert len(lines) == 1 and lines[0].startswith("clipvis: warning: config says DEC_LAYERS"), stderr
    assert "UserWarning" not in stderr and "warnings.warn" not in stderr, stderr
    assert "config says DEC_LAYERS" in (one_and_two_gloo_processes["root"] / "two" / "train.log").read_text()


def write_ytvis(folder, num_videos: int = 2, length: int = 3):
    """A YouTube-VIS GT (with ids, areas, iscrowd) and its frames folder <video>/<frame>.png."""
    import cv2

    from clipvis.cli import rle

    frames_root = folder / "frames"
    videos, annotations = [], []
    for v in range(num_videos):
        names, per_track = [], [[], []]
        (frames_root / f"v{v}").mkdir(parents=True)
        for t in range(length):
            image, masks = render_shapes(10 * v + t)
            cv2.imwrite(str(frames_root / f"v{v}" / f"{t:03d}.png"), image[:, :, ::-1])
            names.append(f"v{v}/{t:03d}.png")
            for k in range(2):
                per_track[k].append(rle.encode(masks[k].astype(bool)))
        videos.append({"id": v + 1, "width": SIZE, "height": SIZE, "length": length, "file_names": names})
        for k in range(2):
            annotations.append({"id": len(annotations) + 1, "video_id": v + 1, "category_id": k + 1, "iscrowd": 0,
                                "segmentations": per_track[k], "areas": [float(a) for a in rle.areas(per_track[k])],
                                "bboxes": [[0, 0, 1, 1]] * length})
    path = folder / "ytvis.json"
    path.write_text(json.dumps({"videos": videos, "annotations": annotations,
                                "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "disc"}]}))
    return path, frames_root


def test_video_fine_tuning_with_periodic_evaluation(tmp_path, tiny_train_config):
    gt, frames = write_ytvis(tmp_path / "data", num_videos=2, length=2)
    other_gt, other_frames = write_ytvis(tmp_path / "other", num_videos=1, length=2)  # also named ytvis.json
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    test_data = f"CLIPVIS.TEST_DATA=[{{json: {gt}, frames: {frames}}}, {{json: {other_gt}, frames: {other_frames}}}]"
    train(config, tmp_path / "run", (gt, frames), "TEST.EVAL_PERIOD=1", test_data, "INPUT.MIN_SIZE_TRAIN=[64]",
          "INPUT.MAX_SIZE_TRAIN=128")
    log = (tmp_path / "run" / "train.log").read_text()
    assert "augmentation shortest_edge" in log and "2 training items" in log
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluation = [r for r in records if any(k.startswith("eval/ytvis/") for k in r)]
    assert evaluation and 0.0 <= evaluation[-1]["eval/ytvis/AP"] <= 1.0, records
    # Two test sets with one file name: each its own folder and metrics (the second reused the first's results).
    assert "eval/ytvis-2/AP" in evaluation[-1], records
    ran = [json.loads((tmp_path / "run" / "eval" / name / "results.json").read_text())
           for name in ("ytvis_0000000", "ytvis-2_0000000")]
    assert [sorted({r["video_id"] for r in results}) for results in ran] == [[1, 2], [1]]


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not built into this torch")
def test_metrics_reach_tensorboard_event_files(tmp_path, tiny_train_config):
    pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = write_coco(tmp_path / "data", num_images=2)
    train(tiny_train_config(tmp_path, MAX_ITER=2), tmp_path / "run", data, "CLIPVIS.LOG_PERIOD=1")
    events = EventAccumulator(str(tmp_path / "run"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"total_loss", "loss_dice", "lr", "data_wait_share"} <= set(scalars)
    assert [e.step for e in events.Scalars("total_loss")] == [0, 1]


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_started_again_in_a_folder_killed_before_its_first_checkpoint_records_its_metrics_once(
        tmp_path, tiny_train_config, resume):
    """The killed run's metrics.jsonl lines (and TensorBoard scalars) stayed, so every iteration appeared twice."""
    data = write_coco(tmp_path / "data", num_images=2)
    run = tmp_path / "run"
    config = tiny_train_config(tmp_path, MAX_ITER=3)
    train(config, run, data, "CLIPVIS.LOG_PERIOD=1")
    for path in [*run.glob("model_*"), run / "last_checkpoint"]:  # as if killed before its first checkpoint
        path.unlink()
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"iteration": 3, "total_lo')  # a line cut short by the kill
    train(config, run, data, "CLIPVIS.LOG_PERIOD=1", "SOLVER.MAX_ITER=2", "SEED=7", *(["--resume"] if resume else []))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return
    events = EventAccumulator(str(run))
    events.Reload()
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("total_loss")] == [
        (r["iteration"], r["total_loss"]) for r in records]


def test_a_run_removes_the_temporaries_a_run_killed_while_saving_left_unless_a_live_one_saves_there(
    tmp_path, tiny_train_config, monkeypatch
) -> None:
    """A kill -9 during a checkpoint's write left its hidden temporary files (the weights' a full model's size) that
    no --resume removed. A run in the folder removes them when it starts, not those of a process saving there."""
    from clipvis.cli.locks import FolderLock
    from clipvis.cli.train import trainer

    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=2)
    run = tmp_path / "run"
    train(config, run, data)
    stale = [".model_0000003.safetensors.tmp4242", "model_0000003.state.pt.tmp", ".last_checkpoint.k2j4h5g6.tmp"]
    others = [".notes.tmp", "notes.txt", ".model_0000003.safetensors.tmp", "model_0000003.safetensors.tmp4242",
              ".other.ab12cd34.tmp.json",  # not the run's own temporaries: left alone
              # written without the lock (a live run's could be taken for a killed one's): small, left alone too
              ".metrics.ab12cd34.tmp.jsonl", ".config.ab12cd_4.tmp.yaml", ".data.0a1b2c3d.tmp.json"]
    for name in stale + others:
        (run / name).write_bytes(b"x" * 1000)
    with FolderLock(run, trainer.TRAINING_LOCK_NAME):  # a live run there: not a killed run's files (nor a resume)
        ann, images = data
        result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(run), "--data", str(ann),
                                     "--images", str(images), "--resume", "SOLVER.MAX_ITER=3"])
    assert result.exit_code == 1 and "is in use by a live training run" in result.output, result.output
    assert all((run / name).is_file() for name in stale + others) and "temporary file" not in result.output
    result = train(config, run, data, "--resume", "SOLVER.MAX_ITER=4")
    assert sorted(name for name in stale + others if (run / name).exists()) == sorted(others)
    assert f"removed 3 temporary files a killed run left in {run} (0.0 MB): .last_checkpoint.k2j4h5g6.tmp, " \
           ".model_0000003.safetensors.tmp4242, model_0000003.state.pt.tmp\n" in result.output, result.output
    assert not (run / ".clipvis.lock").exists()  # a training folder among videos is searched (review14)
    assert (run / "last_checkpoint").read_text().strip() == "model_0000003.safetensors"


def test_a_symbolic_link_loop_as_data_is_one_line(tmp_path, tiny_train_config):
    """--data naming a symbolic-link loop ended in a traceback (Python's resolve() raises RuntimeError for it)."""
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop.name)
    args = ["train", "--config", str(tiny_train_config(tmp_path, MAX_ITER=1)), "--output-dir", str(tmp_path / "run"),
            "--data", str(loop), "--images", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and f"{loop}: symbolic-link loop" in result.output, (result.output,
                                                                                         result.exception)


def test_a_run_that_cannot_start_leaves_no_config_for_a_later_resume(tmp_path, tiny_train_config):
    """Data that fails (no usable mask) left config.yaml in --output-dir, and `--resume` there then 'resumed' with
    it."""
    ann, images = write_coco(tmp_path / "data", num_images=2)
    broken = json.loads(ann.read_text())
    for annotation in broken["annotations"]:
        annotation["segmentation"] = None
    ann.write_text(json.dumps(broken))
    run = tmp_path / "run"
    config = tiny_train_config(tmp_path, MAX_ITER=2)
    args = ["train", "--config", str(config), "--output-dir", str(run), "--data", str(ann), "--images", str(images)]
    failed = runner.invoke(app, args)
    assert failed.exit_code == 1 and "no image with a usable" in failed.output, failed.output
    assert not (run / "config.yaml").exists()
    resumed = runner.invoke(app, ["train", "--output-dir", str(run), "--resume"])
    assert resumed.exit_code != 0 and "no training run to resume here" in resumed.output, resumed.output


def test_a_resume_with_nothing_to_do_still_drops_a_killed_runs_records_past_its_checkpoint(tmp_path, tiny_train_config):
    data = write_coco(tmp_path / "data", num_images=2)
    run = tmp_path / "run"
    config = tiny_train_config(tmp_path, MAX_ITER=2)
    train(config, run, data, "CLIPVIS.LOG_PERIOD=1")
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as handle:  # a longer run killed past this checkpoint
        handle.write('{"iteration": 2, "total_loss": 1.0}\n{"iteration": 3, "total_loss": 1.0}\n')
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        EventAccumulator = None
    if EventAccumulator is not None:  # the killed run's TensorBoard scalars past the checkpoint, too
        with SummaryWriter(str(run)) as writer:
            writer.add_scalar("total_loss", 1.0, 2)
            writer.add_scalar("total_loss", 1.0, 3)
    train(config, run, data, "CLIPVIS.LOG_PERIOD=1", "--resume")  # nothing to do: 2 of 2 iterations done
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1]
    if EventAccumulator is not None:
        events = EventAccumulator(str(run))
        events.Reload()
        assert [e.step for e in events.Scalars("total_loss")] == [0, 1]


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_steps_train_with_the_pixel_decoder_in_float32(tmp_path, tiny_train_config, dtype):
    """AMP as configured (bf16, or fp16 with the GradScaler) trains; the pixel decoder stays float32 under it."""
    from clipvis.model.pixel_decoder import MSDeformAttnPixelDecoder

    decoder_dtypes: set[torch.dtype] = set()
    linear_dtypes: set[torch.dtype] = set()

    def record(module, args, out):
        if isinstance(module, MSDeformAttnPixelDecoder):
            decoder_dtypes.add(out[0].dtype)
        elif isinstance(module, torch.nn.Linear) and module.weight.requires_grad:
            linear_dtypes.add(out.dtype)

    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=3)
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        train(config, tmp_path / "run", data, "SOLVER.AMP.ENABLED=True", f"CLIPVIS.AMP_DTYPE={dtype}")
    finally:
        handle.remove()
    assert decoder_dtypes == {torch.float32}
    assert {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype] in linear_dtypes  # autocast was on (the head)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) >= 1 and all(np.isfinite(r["total_loss"]) for r in records), records
    weights = final_weights(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def signal_self_during(monkeypatch, target, name: str, signum: int, call: int, then=None) -> None:
    """Send ``signum`` to this process during call number ``call`` (1-based) of ``target.name``; ``then`` replaces
    the call's own work (default: the original)."""
    import os

    original = getattr(target, name)
    calls = []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signum)
            if then is not None:
                return then(*args, **kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapped)


def test_a_stop_signal_ends_training_after_its_iteration_with_a_checkpoint_that_resumes_exactly(
    tmp_path, tiny_train_config, monkeypatch
):
    """SIGTERM (a scheduler's time limit) in iteration 3 of 6: the iteration finishes, a checkpoint with its training
    state is saved there, the command says where and exits 143; --resume then ends where an uninterrupted run ends."""
    import signal

    from clipvis.cli.train.trainer import Trainer

    data = write_coco(tmp_path / "data", num_images=3)
    config = tiny_train_config(tmp_path, MAX_ITER=6)
    train(config, tmp_path / "straight", data)
    with monkeypatch.context() as patch:
        signal_self_during(patch, Trainer, "step", signal.SIGTERM, call=3)
        run = tmp_path / "split"
        result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(run), "--data",
                                     str(data[0]), "--images", str(data[1])])
    assert result.exit_code == 143, result.output + repr(result.exception)
    # training's handlers are gone with it; the stopped command ignores another stop signal on its way out
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    assert f"clipvis: stopped by SIGTERM; saved {run / 'model_0000002.safetensors'}; continue with: clipvis train " \
           f"--output-dir {run} --resume" in result.output
    assert (run / "last_checkpoint").read_text().strip() == "model_0000002.safetensors"
    assert (run / "model_0000002.state.pt").is_file()
    assert "stopped by SIGTERM after iteration 3" in (run / "train.log").read_text()
    moved = data[1].rename(tmp_path / "moved_images")  # the images moved meanwhile: --images alone says where
    result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume", "--images", str(moved)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    straight, split = final_weights(tmp_path / "straight"), final_weights(run)
    assert all(torch.equal(straight[k], split[k]) for k in straight)


def test_ctrl_c_during_a_periodic_evaluation_drops_the_evaluation_at_once_and_keeps_its_checkpoint(
    tmp_path, tiny_train_config
):
    import signal
    import time

    from clipvis.cli.train import periodic_evaluation

    def evaluation_that_waits(*args, **kwargs):
        time.sleep(300)  # interrupted at once, not waited for

    gt, frames = write_ytvis(tmp_path / "data", num_videos=1, length=2)
    config = tiny_train_config(tmp_path, MAX_ITER=6)
    run = tmp_path / "run"
    started = time.monotonic()
    with pytest.MonkeyPatch.context() as patch:  # (monkeypatch.undo() would also undo the autouse fixtures' patches)
        signal_self_during(patch, periodic_evaluation, "run_dataset_evaluation", signal.SIGINT, call=2,
                           then=evaluation_that_waits)
        result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(run), "--data", str(gt),
                                     "--images", str(frames), "TEST.EVAL_PERIOD=2",
                                     f"CLIPVIS.TEST_DATA=[{{json: {gt}, frames: {frames}}}]",
                                     "INPUT.MIN_SIZE_TRAIN=[64]", "INPUT.MAX_SIZE_TRAIN=128"])
    assert time.monotonic() - started < 150  # well under the evaluation's 300 s, however busy the machine
    assert result.exit_code == 130, result.output + repr(result.exception)
    assert f"stopped by SIGINT; saved {run / 'model_0000003.safetensors'}" in result.output
    assert "the evaluation at iteration 4 was interrupted" in (run / "train.log").read_text()
    assert (run / "last_checkpoint").read_text().strip() == "model_0000003.safetensors"
    assert (run / "model_0000003.state.pt").is_file() and not (run / "model_0000005.safetensors").exists()
    # The resumed run evaluates that checkpoint first (it went on to iteration 6's evaluation alone: hunter 84)
    resumed = runner.invoke(app, ["train", "--output-dir", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "lr" not in r] == [1, 3, 5]  # after iterations 2, 4 and 6
    again = runner.invoke(app, ["train", "--output-dir", str(run), "--resume", "SOLVER.MAX_ITER=8"])
    assert again.exit_code == 0  # one done is not done again (it resumes after iteration 6's, recorded)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "lr" not in r] == [1, 3, 5, 7]


def test_an_interrupted_last_evaluation_stops_the_run_and_is_done_by_the_resume(tmp_path, tiny_train_config):
    """Ctrl-C during the evaluation after the last iteration: the run said "finished", exit 0, and --resume had
    "nothing to do": that evaluation was lost (review9)."""
    import signal
    import time

    from clipvis.cli.train import periodic_evaluation

    def evaluation_that_waits(*args, **kwargs):
        time.sleep(300)

    gt, frames = write_ytvis(tmp_path / "data", num_videos=1, length=2)
    config = tiny_train_config(tmp_path, MAX_ITER=4)
    run = tmp_path / "run"
    args = ["train", "--config", str(config), "--output-dir", str(run), "--data", str(gt), "--images", str(frames),
            "TEST.EVAL_PERIOD=2", f"CLIPVIS.TEST_DATA=[{{json: {gt}, frames: {frames}}}]",
            "INPUT.MIN_SIZE_TRAIN=[64]", "INPUT.MAX_SIZE_TRAIN=128"]
    with pytest.MonkeyPatch.context() as patch:  # (monkeypatch.undo() would also undo the autouse fixtures' patches)
        signal_self_during(patch, periodic_evaluation, "run_dataset_evaluation", signal.SIGINT, call=2,
                           then=evaluation_that_waits)
        result = runner.invoke(app, args)
    assert result.exit_code == 130, result.output + repr(result.exception)
    assert "--resume" in result.output
    resumed = runner.invoke(app, ["train", "--output-dir", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output + repr(resumed.exception)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "lr" not in r] == [1, 3]
    assert "nothing to do" in runner.invoke(app, ["train", "--output-dir", str(run), "--resume"]).output


def test_a_resume_with_other_steps_trains_its_first_step_at_their_rate(tmp_path, tiny_train_config):
    """STEPS changed on --resume: the first resumed step kept the rate the old schedule had given it (review9)."""
    data = write_coco(tmp_path / "data", num_images=3)
    straight = tiny_train_config(tmp_path, MAX_ITER=4, STEPS=[1])
    train(straight, tmp_path / "straight", data, "CLIPVIS.LOG_PERIOD=1")
    split = tiny_train_config(tmp_path, MAX_ITER=2, STEPS=[])
    train(split, tmp_path / "split", data, "CLIPVIS.LOG_PERIOD=1")
    train(split, tmp_path / "split", data, "--resume", "SOLVER.MAX_ITER=4", "SOLVER.STEPS=[1]")

    def rates(run):
        return [entry["lr"] for entry in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if "lr" in entry]

    assert len(rates(tmp_path / "straight")) == 4 and rates(tmp_path / "straight")[2] < rates(tmp_path / "straight")[0]
    assert rates(tmp_path / "split")[2:] == rates(tmp_path / "straight")[2:]


@pytest.mark.parametrize("signum", [2, 15], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_in_the_commands_first_seconds_says_its_line(tmp_path, tiny_train_config, monkeypatch, signum):
    """A signal while the command still reads its config and checks the device (before the data loads), as the
    launcher raises it: Typer turned it into exit 130 without a word (143 and no line for a scheduler's SIGTERM)."""
    import signal

    from clipvis.cli.launcher import Terminated
    from clipvis.cli.train import run

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt if signum == signal.SIGINT else Terminated(signum)

    monkeypatch.setattr(run, "check_device", stopped)
    data = write_coco(tmp_path / "data", num_images=1)
    result = runner.invoke(app, ["train", "--config", str(tiny_train_config(tmp_path)), "--output-dir",
                                 str(tmp_path / "run"), "--data", str(data[0]), "--images", str(data[1])])
    assert result.exit_code == 128 + signum, result.output + repr(result.exception)
    name = signal.Signals(signum).name
    assert result.output == f"clipvis: stopped by {name} before the first checkpoint\n", result.output
    assert not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not built into this torch")
def test_sigterm_to_the_command_stops_the_processes_it_spawned_together_at_one_saved_iteration(
    tmp_path, tiny_train_config
):
    """`--num-gpus 2` and a SIGTERM to the command's process alone (a scheduler signalling the job's main process):
    the signal is passed on, both processes stop after the same iteration, rank 0 saves there, the command says so
    once and exits 143, and no process is left."""
    import signal

    process, run = start_long_run(tmp_path, tiny_train_config, NUM_GPUS_TWO)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    last = (run / "last_checkpoint").read_text().strip()
    assert (run / last).is_file() and (run / last.replace(".safetensors", ".state.pt")).is_file()
    assert err.count("clipvis: stopped by SIGTERM; saved ") == 1 and last in err, err
    assert f"--output-dir {run} --resume --num-gpus 2" in err  # the same batch split: the same result
    assert "Traceback" not in err, err
    iteration = int(last.split("_")[1].split(".")[0])
    assert iteration < 4999
    log = (run / "train.log").read_text()
    assert f"stopped by SIGTERM after iteration {iteration + 1};" in log


def test_an_official_checkpoint_with_its_own_clip_fine_tunes_with_clip_config(tmp_path, golden_case):
    """An official-layout .pth holds no config: with a CLIP open_clip does not know by name, train built another
    CLIP and failed with hundreds of key names. --clip-config (as segment's) builds the right one, and the run's
    config.yaml keeps it for --resume."""
    import shutil

    case = golden_case("case1")
    data = write_coco(tmp_path / "data", num_images=2)
    run = tmp_path / "run"
    clip_config = Path(shutil.copy(case / "open_clip_config.json", tmp_path / "clip.json"))
    args = ["train", "--config", str(case / "official_config.yaml"), "--weights", str(case / "model.pth"),
            "--clip-config", str(clip_config), "--output-dir", str(run), "--data", str(data[0]),
            "--images", str(data[1]), "SOLVER.MAX_ITER=1", "SOLVER.IMS_PER_BATCH=1", "DATALOADER.NUM_WORKERS=0",
            "MODEL.DEVICE=cpu", "DATASETS.TEST=[]", "TEST.EVAL_PERIOD=0", "INPUT.IMAGE_SIZE=64",
            "INPUT.MIN_SIZE_TRAIN=[64]", "INPUT.MAX_SIZE_TRAIN=64", "SOLVER.AMP.ENABLED=False",
            "DATALOADER.SAMPLER_TRAIN=TrainingSampler", "MODEL.MASK_FORMER.TRAIN_NUM_POINTS=256"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (run / "model_0000000.safetensors").is_file()
    assert yaml.safe_load((run / "config.yaml").read_text())["CLIPVIS"]["CLIP_CONFIG"] == str(clip_config)
    # The config's test-time settings are the checkpoint's (they were dropped: segment ran at MIN_SIZE_TEST 480).
    assert load_model(run / "model_0000000.safetensors").config.min_size_test == 128
    # --export-pth builds the .pth's model as training does, with --config and --clip-config (it read --weights
    # alone, and failed asking for the --clip-config it had been given).
    export = ["train", "--weights", str(case / "model.pth"), "--config", str(case / "official_config.yaml"),
              "--clip-config", str(clip_config), "--export-pth", str(tmp_path / "exported.pth")]
    result = runner.invoke(app, export)
    assert result.exit_code == 0, result.output + repr(result.exception)
    exported = torch.load(tmp_path / "exported.pth", weights_only=True)["model"]
    original = torch.load(case / "model.pth", weights_only=True, map_location="cpu")
    original = original.get("model", original)
    assert all(torch.equal(exported[k], original[k]) for k in original if k in exported)
    assert "sem_seg_head.predictor.query_feat.weight" in exported
    clip_config.unlink()  # the checkpoint being resumed holds its model config: the file is not needed any more
    result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume", "SOLVER.MAX_ITER=2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (run / "model_0000001.safetensors").is_file()


class SpawnedRunThatFails:
    """Spawn's context for --num-gpus processes whose rank 0 fails as a run in this process does: ``join()`` runs the
    training here (``run_training``, the work of a process without its process group) and raises what spawn raises
    for the error it ends with, ProcessRaisedException with the process' traceback in spawn's words."""

    sentinels: dict[int, int] = {}  # none to wait on: join() says what happened

    def __init__(self, args: tuple) -> None:
        self.request = args[0]

    def join(self) -> bool:
        import traceback

        import torch.multiprocessing as mp

        from clipvis.cli.train.run import run_training

        try:
            run_training(self.request)
        except Exception:  # noqa: BLE001 - what the spawned process would send
            message = f"\n\n-- Process 0 terminated with the following error:\n{traceback.format_exc()}"
            raise mp.ProcessRaisedException(message, 0, 4242) from None
        raise AssertionError("the run did not fail")


@pytest.mark.parametrize("processes", [1, 2])
def test_a_checkpoint_whose_clip_open_clip_does_not_know_is_one_line_naming_clip_config(tmp_path, tiny_config,
                                                                                      processes, monkeypatch):
    """Without --clip-config, the model library's UnknownClipError (a ValueError, not a CheckpointError) ended train
    with a traceback saying 'load_model's clip_config='; segment and --export-pth said one line naming --clip-config.
    Also from the processes --num-gpus spawns (SpawnedRunThatFails stands in for them)."""
    import torch.multiprocessing as mp

    from clipvis.model import create_model
    from clipvis.model.checkpoint import write_state_dict

    from ..train.conftest import _tiny_train_config

    monkeypatch.setattr(mp, "start_processes", lambda *args, **kwargs: SpawnedRunThatFails(kwargs["args"]))
    model = create_model(tiny_config())
    fields = {**model.config.to_dict(), "clip_model_config": None, "clip_model_name": "NoSuchCLIP",
              "clip_pretrained": ""}
    weights = write_state_dict(model.state_dict(), {**fields, "notes": []}, tmp_path / "unknown.safetensors")
    fields.pop("notes")
    data = write_coco(tmp_path / "data", num_images=2)
    config = _tiny_train_config(fields, tmp_path, MAX_ITER=1)
    result = runner.invoke(app, ["train", "--config", str(config), "--weights", str(weights), "--output-dir",
                                 str(tmp_path / "run"), "--data", str(data[0]), "--images", str(data[1]),
                                 "--num-gpus", str(processes)])
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert result.stderr.splitlines()[-1] == (
        f"clipvis: error: {weights}: open_clip does not know the model 'NoSuchCLIP'; give its open_clip model config "
        "(--clip-config)"), result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "run" / "config.yaml").exists()


@pytest.mark.parametrize("clip", ["NoSuchCLIP", "hf-hub:someone/some-clip"])
def test_a_config_whose_clip_train_cannot_download_is_one_line_in_trains_words(tmp_path, tiny_config, clip,
                                                                              monkeypatch):
    """Without --weights, train said 'create_model(pretrained_clip=True) takes the CLIP weights from open_clip and its
    config names CLIP NoSuchCLIP/, ...; train cannot download another CLIP': a Python call, a '/' for the empty
    pretrained tag, and download advice for a name open_clip does not know at all."""
    import open_clip

    from ..train.conftest import _tiny_train_config

    monkeypatch.setattr(open_clip, "create_model", lambda *args, **kwargs: pytest.fail("download attempted"))
    fields = {**tiny_config().to_dict(), "clip_model_config": None, "clip_model_name": clip, "clip_pretrained": ""}
    fields.pop("notes")
    data = write_coco(tmp_path / "data", num_images=2)
    config = _tiny_train_config(fields, tmp_path, MAX_ITER=1)
    result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(tmp_path / "run"),
                                 "--data", str(data[0]), "--images", str(data[1])])
    assert result.exit_code == 1, result.output + repr(result.exception)
    line = result.stderr.splitlines()[-1]
    assert line.startswith(f"clipvis: error: {config}: the config's CLIPVIS.MODEL.clip_model_name names the CLIP "
                           f"{clip}, which "), line
    assert f"{clip}/" not in line and "create_model" not in line and "pretrained_clip" not in line, line
    if clip == "NoSuchCLIP":
        assert "open_clip does not know" in line and "download" not in line and "--clip-config" in line, line
    else:
        assert "not one of the released models' CLIPs (RN50/openai, " in line and "--weights" in line, line
    assert "Traceback" not in result.output and not (tmp_path / "run" / "config.yaml").exists()


def test_images_may_be_left_out_and_a_data_file_that_needs_them_is_named(tmp_path, tiny_train_config):
    """README: `--images` "need not exist when every frame comes from the recorded input", yet leaving it out was
    `give one --images folder for each --data file`; now it may be, and a --data file whose images come from no
    recorded input is named (before the model loads), as is a count of --images that pairs with no --data."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    base = ["train", "--config", str(config), "--output-dir", str(tmp_path / "run"), "--data", str(data[0])]
    result = runner.invoke(app, base)
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == (f"clipvis: error: {data[0]}: its images record no video or image "
                                              "folder they were read from (only segment's ytvis.json and coco.json "
                                              "do): give --images FOLDER for it"), result.output
    result = runner.invoke(app, [*base, "--data", str(data[0]), "--images", str(data[1])])
    assert result.exit_code == 2 and "give one --images folder for each --data file, in order (or none, where every " \
        "--data file records the inputs segment read; --images '' for one that does, among others that do not)" \
        in " ".join(result.output.replace("│", "").split()), result.output


def test_images_given_empty_stands_for_a_data_file_read_from_its_recorded_inputs(tmp_path, tiny_train_config):
    """--data recorded.json --data plain.json: the error asked for "one --images for each --data, in order", yet no
    --images value said "the recorded inputs" for the first (`--images ''` was this folder, '.'). '' does now."""
    data = write_coco(tmp_path / "data", num_images=2)
    gone = tmp_path / "videos" / "clip.mp4"  # the recorded video, moved away: the check that reads it names it
    recorded = tmp_path / "corrected" / "ytvis.json"
    recorded.parent.mkdir()
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:7] = True
    recorded.write_text(json.dumps({
        "videos": [{"id": 1, "height": 8, "width": 10, "length": 1, "file_names": ["clip/00000.jpg"],
                    "frame_indices": [0], "source": str(gone)}],
        "categories": [{"id": 1, "name": "box"}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [rle.encode(mask)]}],
    }))
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(tmp_path / "run"),
                                 "--data", str(recorded), "--images", "", "--data", str(data[0]), "--images",
                                 str(data[1])])
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines()[-1] == (
        f"clipvis: error: {gone}: no such video (or image folder): {recorded} records its frames as segmented from it "
        f"(moved or deleted since?): write where it is now in the file's videos[].source (relative to "
        f"{recorded.parent}, or absolute), or give --images FOLDER with its frames as images"), result.output


def test_a_test_set_the_periodic_evaluation_cannot_run_is_one_line_before_the_data_loads(tmp_path, tiny_train_config):
    """A misspelt DATASETS.TEST (or a CLIPVIS.TEST_DATA file that is not there) ended training with a traceback at
    the first evaluation, TEST.EVAL_PERIOD iterations (hours) in: now one line naming the setting, at once."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=2)
    base = ["train", "--config", str(config), "--data", str(data[0]), "--images", str(data[1]), "TEST.EVAL_PERIOD=1"]
    result = runner.invoke(app, [*base, "--output-dir", str(tmp_path / "a"), "DATASETS.TEST=[lvvis_vall]"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("clipvis: error: DATASETS.TEST (set on the command line): 'lvvis_vall' is not a "
                                    "registered dataset (known: lvvis_train, lvvis_val"), result.output
    assert len(result.output.strip().splitlines()) == 1 and "training items" not in result.output
    assert not (tmp_path / "a" / "config.yaml").exists() and not (tmp_path / "a" / "train.log").exists()
    missing = f"CLIPVIS.TEST_DATA=[{{json: {tmp_path / 'gone.json'}, frames: {tmp_path}}}]"
    result = runner.invoke(app, [*base, "--output-dir", str(tmp_path / "b"), missing])
    assert result.exit_code == 1 and f"CLIPVIS.TEST_DATA (set on the command line): {tmp_path / 'gone.json'}: no " \
        "such file" in result.output, result.output
    # Files the evaluation cannot read (a COCO file, a registered dataset not on disk): each evaluation failed with a
    # warning and the run ended, exit 0, never evaluated; now found by the evaluation's own readers at the start.
    not_ytvis = f"CLIPVIS.TEST_DATA=[{{json: {data[0]}, frames: {data[1]}}}]"
    gt, _ = write_ytvis(tmp_path / "test_set", num_videos=1, length=1)
    one_level_off = f"CLIPVIS.TEST_DATA=[{{json: {gt}, frames: {tmp_path / 'test_set'}}}]"  # (review 279)
    for name, test_set, said in (
            ("g", one_level_off, f"CLIPVIS.TEST_DATA (set on the command line): frames {tmp_path / 'test_set'}: none "
                                 "of the 1 GT videos has its frames there (the first, video 1: "),
            ("e", not_ytvis, f"CLIPVIS.TEST_DATA (set on the command line): {data[0]}: missing or invalid 'videos' "
                             "list (not a YouTube-VIS GT file?); the run evaluates on it every TEST.EVAL_PERIOD: fix "
                             "it, or set TEST.EVAL_PERIOD=0"),
            ("f", "DATASETS.TEST=[lvvis_val]", "DATASETS.TEST (set on the command line): dataset lvvis_val (LV-VIS "
                                               "val): annotation file not found")):
        result = runner.invoke(app, [*base, "--output-dir", str(tmp_path / name), "--data-root",
                                     str(tmp_path / "no_datasets"), test_set])
        assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
        assert result.output.startswith(f"clipvis: error: {said}"), result.output
        assert not (tmp_path / name / "config.yaml").exists()
    # A test set the run never evaluates on is no error (TEST.EVAL_PERIOD=0); a period past MAX_ITER evaluates the
    # final model, so its test set is checked as well.
    result = runner.invoke(app, [*base[:-1], "--output-dir", str(tmp_path / "c"), "TEST.EVAL_PERIOD=0",
                                 "DATASETS.TEST=[lvvis_vall]"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [*base[:-1], "--output-dir", str(tmp_path / "d"), "TEST.EVAL_PERIOD=100",
                                 "DATASETS.TEST=[lvvis_vall]"])
    assert result.exit_code == 1 and "'lvvis_vall' is not a registered dataset" in result.output, result.output


def rank_process(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker of ``rank`` among the descendants of ``parent`` (Linux /proc), or None."""
    import os

    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if f"RANK={rank}".encode() not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
            pid = int(entry)
            while pid > 1:  # one of its ancestors is the launcher
                pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                if pid == parent:
                    return int(entry)
        except OSError:  # a process that ended meanwhile, or another user's
            continue
    return None


@pytest.mark.skipif(not torch.distributed.is_gloo_available() or not Path("/proc/self/environ").exists(),
                    reason="gloo backend not built into this torch, or no /proc")
def test_sigterm_to_one_torchrun_rank_stops_every_rank_by_that_signal(tmp_path, tiny_train_config):
    """A SIGTERM to rank 1 alone (a scheduler signalling one task): rank 0 said 'stopped by SIGINT' and exited 130;
    now every rank stops after the same iteration by SIGTERM, and exits 143. A job of its own, not a case of
    torchrun_stops: the ranks' real exits after a stop mid-training (DDP's group torn down, the interpreter's
    shutdown: a gloo thread left running there ended a process by SIGABRT) and torchrun's summary of them."""
    import os
    import signal

    process, run = start_long_run(tmp_path, tiny_train_config, TORCHRUN_TWO)
    rank1 = rank_process(process.pid, 1)
    assert rank1 is not None
    os.kill(rank1, signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert err.count("clipvis: stopped by SIGTERM; saved ") == 1, err
    assert "SIGINT" not in err and "exitcode: 130" not in err and "SIGABRT" not in err, err
    assert "terminate called" not in err, err
    assert "exitcode: 143" in err, err  # torchrun's summary of the ranks' exit statuses
    last = (run / "last_checkpoint").read_text().strip()
    iteration = int(last.split("_")[1].split(".")[0])
    assert f"stopped by SIGTERM after iteration {iteration + 1};" in (run / "train.log").read_text()


def test_a_released_weights_name_that_cannot_be_had_is_one_line_before_the_data_loads(tmp_path, tiny_train_config,
                                                                                      monkeypatch):
    """--weights NAME of a release not in the cache, offline: said only once the training data had loaded (minutes for
    a real dataset)."""
    from clipvis.cli.train import run

    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPVIS_OFFLINE", "1")
    monkeypatch.setattr(run, "load_sources", lambda *args, **kwargs: pytest.fail("the data was loaded"))
    data = write_coco(tmp_path / "data", num_images=1)
    result = runner.invoke(app, ["train", "--config", str(tiny_train_config(tmp_path)), "--output-dir",
                                 str(tmp_path / "run"), "--data", str(data[0]), "--images", str(data[1]),
                                 "--weights", "clipvis-lvis-r50"])
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert result.output.startswith("clipvis: error: checkpoint 'clipvis-lvis-r50' is not available: it is not in "
                                    "the cache and CLIPVIS_OFFLINE is set. Download it by hand from "), result.output
    assert result.output.count("\n") == 1, result.output
    # train's option, not the library's Python wording "(load_model(PATH) in Python)"
    assert result.output.endswith("instead of the name (--weights PATH).\n"), result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["offline", "offline --resume", "offline --num-gpus 2", "unknown", "untrusted"])
def test_a_clip_train_cannot_have_is_one_line_before_the_data_loads(tmp_path, tiny_config, case, monkeypatch):
    """Without --weights, a CLIP that cannot be had (CLIPVIS_OFFLINE and not in the Hugging Face cache, a name
    open_clip does not know, an untrusted hub CLIP) was refused only once the training data had loaded (minutes on
    LVIS): now before, and before the output folder is made (a --resume run with nothing to resume: before its data
    too). Nothing is fetched or built."""
    import open_clip
    import torch.multiprocessing as mp

    from clipvis.cli.train import run
    from clipvis.model.config import clip_name

    from ..train.conftest import _tiny_train_config

    clip, tag = {"unknown": ("NoSuchCLIP", ""), "untrusted": ("hf-hub:someone/some-clip", "")}.get(case, ("RN50",
                                                                                                          "openai"))
    monkeypatch.setenv("CLIPVIS_OFFLINE", "1")
    monkeypatch.setattr(open_clip, "create_model", lambda *args, **kwargs: pytest.fail("the CLIP was built"))
    monkeypatch.setattr(run, "load_sources", lambda *args, **kwargs: pytest.fail("the data was loaded"))
    monkeypatch.setattr(mp, "start_processes", lambda *args, **kwargs: SpawnedRunThatFails(kwargs["args"]))
    fields = {**tiny_config().to_dict(), "clip_model_config": None, "clip_model_name": clip, "clip_pretrained": tag}
    fields.pop("notes")
    data = write_coco(tmp_path / "data", num_images=1)
    config = _tiny_train_config(fields, tmp_path, MAX_ITER=1)
    out = tmp_path / "run"
    if "--resume" in case:  # a run folder with nothing to resume from yet: the run starts afresh
        out.mkdir()
    result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(out), "--data", str(data[0]),
                                 "--images", str(data[1]), *case.split()[1:]])
    assert result.exit_code == 1, result.output + repr(result.exception)
    line = result.stderr.splitlines()[-1]
    named = (f"clipvis: error: {config}: the config's CLIPVIS.MODEL.clip_model_name names the CLIP "
             f"{clip_name(clip, tag)}")
    why = {"unknown": ", which open_clip does not know",
           "untrusted": ", which is not one of the released models' CLIPs"}
    assert line.startswith(named + why.get(case, ", whose weights train downloads from open_clip, and CLIPVIS_OFFLINE "
                                                 "is set: unset it, or start from a checkpoint")), line
    assert "Traceback" not in result.output and "training item" not in result.output
    if "--resume" in case:  # (its folder lock's file aside)
        assert not {"data.json", "train.log", "config.yaml"} & {path.name for path in out.iterdir()}
    else:
        assert not out.exists()


@pytest.mark.parametrize("case", ["offline", "unknown"])
def test_weights_without_a_clip_that_cannot_be_had_is_one_line_before_the_data_loads(tmp_path, tiny_config, case,
                                                                                      monkeypatch):
    """--weights FILE of a checkpoint without CLIP weights, its CLIP not in the Hugging Face cache and CLIPVIS_OFFLINE
    set (or a CLIP open_clip does not know): refused only once the training data had loaded (minutes on LVIS), as a
    run without --weights was before; now before, and before the output folder is made. Nothing is fetched."""
    import huggingface_hub.constants
    import open_clip

    from clipvis.cli.train import run
    from clipvis.model import create_model
    from clipvis.model.checkpoint import write_state_dict

    clip = "RN50" if case == "offline" else "NoSuchCLIP"
    config = {**tiny_config().to_dict(), "clip_model_config": None, "clip_model_name": clip,
              "clip_pretrained": "openai", "notes": []}
    with torch.device("meta"):  # the tiny head for the CLIP's features (zeros, shaped as a skeleton's)
        skeleton = create_model(config if case == "offline" else tiny_config()).state_dict()
    head = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in skeleton.items() if not k.startswith("backbone.")}
    weights = write_state_dict(head, config, tmp_path / "head_only.safetensors")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("CLIPVIS_OFFLINE", "1")
    monkeypatch.setattr(open_clip, "create_model", lambda *args, **kwargs: pytest.fail("the CLIP was built"))
    monkeypatch.setattr(run, "load_sources", lambda *args, **kwargs: pytest.fail("the data was loaded"))
    data = write_coco(tmp_path / "data", num_images=1)
    train_config = tmp_path / "train.yaml"
    train_config.write_text(yaml.safe_dump({"SOLVER": {"MAX_ITER": 1},
                                            "CLIPVIS": {"MODEL": {"clip_model_name": clip}}}))
    result = runner.invoke(app, ["train", "--config", str(train_config), "--output-dir", str(tmp_path / "run"),
                                 "--data", str(data[0]), "--images", str(data[1]), "--weights", str(weights)])
    assert result.exit_code == 1, result.output + repr(result.exception)
    line = result.stderr.splitlines()[-1]
    said = ("the checkpoint has no CLIP weights and CLIPVIS_OFFLINE is set, so the RN50/openai CLIP weights"
            if case == "offline" else "CLIP NoSuchCLIP/openai, which open_clip does not know")
    assert line.startswith(f"clipvis: error: {weights}: ") and said in line, line
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_a_warning_of_the_weights_download_is_one_clipvis_warning_line(tmp_path, tiny_train_config, monkeypatch):
    """A warning of --weights NAME's download (its lock cannot be opened) was Python's two lines (file:line, then the
    source line); it is one `clipvis: warning:` line, before the error that ends the run."""
    import warnings

    from clipvis.cli.train import run
    from clipvis.weights import WeightsNotAvailableError

    def warns_then_fails(weights):
        warnings.warn("lock: cannot open this download lock", RuntimeWarning, stacklevel=2)
        raise WeightsNotAvailableError("not available", checkpoint=weights, url="u", target="t")

    monkeypatch.setattr(run, "starting_weights", warns_then_fails)
    data = write_coco(tmp_path / "data", num_images=1)
    result = runner.invoke(app, ["train", "--config", str(tiny_train_config(tmp_path)), "--output-dir",
                                 str(tmp_path / "run"), "--data", str(data[0]), "--images", str(data[1]),
                                 "--weights", "clipvis-lvis-r50"])
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert result.output == ("clipvis: warning: lock: cannot open this download lock\n"
                             "clipvis: error: not available\n"), result.output


def test_a_run_from_a_training_folder_records_the_checkpoint_it_started_from(tmp_path, tiny_train_config):
    """--weights FOLDER was recorded as the folder: a --resume of a run stopped before its first checkpoint started
    from the folder's newest checkpoint of that moment, not the one the run started from. A mistyped --weights is one
    line before the data loads."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    train(config, tmp_path / "first", data)
    result = train(config, tmp_path / "second", data, "--weights", str(tmp_path / "first"))
    started = tmp_path / "first" / "model_0000000.safetensors"
    assert yaml.safe_load((tmp_path / "second" / "config.yaml").read_text())["MODEL"]["WEIGHTS"] == str(started)
    assert f"starting from {started}" in result.output
    args = ["train", "--config", str(config), "--output-dir", str(tmp_path / "third"), "--data", str(data[0]),
            "--images", str(data[1]), "--weights", str(tmp_path / "frist")]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"clipvis: error: no such file or folder: {tmp_path / 'frist'}"), result.output
    assert "training items" not in result.output and not (tmp_path / "third" / "train.log").exists()


def test_export_pth_makes_its_folders_and_is_written_by_rank_0_alone(tmp_path, tiny_train_config, monkeypatch):
    """--export-pth into a folder not there yet failed 'output not writable' (segment -o makes folders); under
    torchrun every rank wrote the file and printed its path."""
    data = write_coco(tmp_path / "data", num_images=2)
    train(tiny_train_config(tmp_path, MAX_ITER=1), tmp_path / "run", data)
    target = tmp_path / "new" / "sub" / "model.pth"
    export = ["train", "--weights", str(tmp_path / "run"), "--export-pth", str(target)]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    result = runner.invoke(app, export)
    assert result.exit_code == 0 and result.output == "" and not target.parent.exists(), result.output
    monkeypatch.setenv("RANK", "0")
    result = runner.invoke(app, export)
    assert result.exit_code == 0 and result.output.strip() == str(target), result.output
    assert "sem_seg_head.predictor.query_feat.weight" in torch.load(target, weights_only=True)["model"]

    # A file-size limit (a full disk alike) was a 58-line traceback (torch.save's "unexpected pos"): one line
    import resource

    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    full = tmp_path / "full.pth"
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, limits[1]))  # (Python ignores SIGXFSZ: a write fails EFBIG)
    try:
        result = runner.invoke(app, ["train", "--weights", str(tmp_path / "run"), "--export-pth", str(full)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert result.exit_code == 1 and result.output == f"clipvis: error: {full}: output not writable (File too " \
        "large)\n", result.output
    assert sorted(path.name for path in tmp_path.iterdir() if "full" in path.name) == []  # no temporary left
    # A torch pickle under another name (x.safetensors) could not be loaded by segment: the name ends in .pth
    for name in ("x.safetensors", "x.pkl", "x"):
        result = runner.invoke(app, ["train", "--weights", str(tmp_path / "run"), "--export-pth", str(tmp_path / name)])
        assert result.exit_code == 2 and "give a name ending in .pth, e.g. " in result.output, result.output
        assert not (tmp_path / name).exists()
    # --export-pth=~/m.pth (bash leaves a ~ after = as it is) wrote ./~/m.pth; --clip-config=~/c.json was refused as
    # missing though it was there: both are the home folder's now, as -o and segment's paths are
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--weights", str(tmp_path / "run"), "--export-pth=~/m.pth"])
    assert result.exit_code == 0 and (tmp_path / "home" / "m.pth").is_file() and not (tmp_path / "~").exists()
    result = runner.invoke(app, ["train", "--weights", str(tmp_path / "run"), "--export-pth", "./~/n.pth"])
    assert result.exit_code == 0 and result.output.strip() == str(tmp_path / "~" / "n.pth"), result.output  # not ~/n
    result = runner.invoke(app, ["train", "--weights", str(tmp_path / "run"), "--export-pth", "m.pth",
                                 "--clip-config=~/c.json"])
    said = " ".join(result.output.replace("│", " ").split())
    assert result.exit_code == 2 and f"--clip-config {tmp_path / 'home' / 'c.json'}: no such file" in said, said


def test_export_pth_stopped_by_a_signal_says_so_in_one_line(tmp_path, monkeypatch):
    """Ctrl-C or SIGTERM while --export-pth loads or writes: exit 130/143 without a word before."""
    import signal

    import clipvis.model
    from clipvis.cli.launcher import Terminated

    target = tmp_path / "model.pth"
    for stop, status, name in ((KeyboardInterrupt(), 130, "SIGINT"), (Terminated(signal.SIGTERM), 143, "SIGTERM")):
        def stopped(*args, stop=stop, **kwargs):
            raise stop

        monkeypatch.setattr(clipvis.model, "load_model", stopped)
        result = runner.invoke(app, ["train", "--weights", str(tmp_path / "w.pth"), "--export-pth", str(target)])
        assert result.exit_code == status, result.output + repr(result.exception)
        assert result.output == f"clipvis: stopped by {name}; {target} was not written\n"
        assert not target.exists()


def test_export_pth_names_weights_that_do_not_fit_once_with_their_option(tmp_path, tiny_config):
    """A checkpoint that does not fit the model said "weights W: W: checkpoint does not fit the model: ...": the
    path twice, and no option; segment names it once, export with its option."""
    from clipvis.model import create_model
    from clipvis.model.checkpoint import write_state_dict

    model = create_model(tiny_config())
    weights = write_state_dict(model.state_dict(), model.config.to_dict(), tmp_path / "w.safetensors")
    clip_config = tmp_path / "other_clip.json"  # another CLIP than the one the file holds
    clip = model.config.clip_model_config
    clip_config.write_text(json.dumps({**clip, "embed_dim": clip["embed_dim"] * 2}))
    target = tmp_path / "model.pth"
    result = runner.invoke(app, ["train", "--weights", str(weights), "--clip-config", str(clip_config),
                                 "--export-pth", str(target)])
    assert result.exit_code == 1, result.output + repr(result.exception)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"clipvis: error: --weights {weights}: checkpoint does not fit the model: "), line
    assert line.count(str(weights)) == 1 and not target.exists()


def test_export_pth_naming_a_folder_is_refused_also_before_it_exists(tmp_path, monkeypatch):
    """--export-pth exp2/ (a trailing slash, no such folder yet) wrote a file named exp2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "there").mkdir()
    for given, example in (("exp2/", "exp2/model.pth"), ("there", "there/model.pth")):
        result = runner.invoke(app, ["train", "--weights", "run", "--export-pth", given])
        assert result.exit_code == 2, result.output
        said = " ".join(result.output.replace("│", " ").split())
        assert f"--export-pth {given} is a folder: give the file to write, e.g. {example}" in said, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["there"] and not any((tmp_path / "there").iterdir())


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not built into this torch")
def test_more_loader_workers_than_cpus_is_one_clipvis_warning_and_the_cpus_it_may_use(tmp_path, tiny_train_config,
                                                                                    monkeypatch):
    """The shipped configs' DATALOADER.NUM_WORKERS 4 on a 2-core machine: PyTorch's raw UserWarning ("This DataLoader
    will create 4 worker processes in total. Our suggested max number of worker in current system is 2 ...") came
    twice. The workers are capped at the CPUs this process may use, said in one `clipvis: warning:` line."""
    import os
    import warnings

    import torch.utils.data

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    made = []
    original = torch.utils.data.DataLoader.__init__

    def recording(self, *args, **kwargs):
        made.append(kwargs.get("num_workers"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(torch.utils.data.DataLoader, "__init__", recording)
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=2, IMS_PER_BATCH=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config, tmp_path / "run", data, "DATALOADER.NUM_WORKERS=3")
    assert made and set(made) == {1}
    said = "clipvis: warning: DATALOADER.NUM_WORKERS is 3 but this process may use 1 CPU: the data loads with 1 " \
           "worker process"
    assert [line for line in result.stderr.splitlines() if "NUM_WORKERS" in line] == [said]
    assert not [w for w in caught if "worker" in str(w.message)], [str(w.message) for w in caught]
    assert "DATALOADER.NUM_WORKERS is 3" in (tmp_path / "run" / "train.log").read_text()


@pytest.fixture(scope="module")
def torchrun_job(tmp_path_factory, tiny_train_config, tiny_config):
    """The 2-rank torchrun cases of the tests below, run as one torchrun job (one process start, torch import and
    rendezvous instead of one per case): {case name: Outcome}, and the files they used. The last case, a loss gone
    non-finite, runs as a job on its own would (torchrun's own stderr and exit status, the silent ranks' grace)."""
    import shutil

    from ..torchrun_cases import torchrun_cases

    tmp_path = tmp_path_factory.mktemp("torchrun")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = write_coco(tmp_path / "data", num_images=2)
        config = tiny_train_config(tmp_path, MAX_ITER=3, IMS_PER_BATCH=2)
        train(config, tmp_path / "first", data, "SOLVER.MAX_ITER=1")
        train(config, tmp_path / "other_arch", data, "SOLVER.MAX_ITER=1",
              f"CLIPVIS.MODEL.decoder_layers={tiny_config().decoder_layers + 1}")
        official = tmp_path / "official.pth"
        result = runner.invoke(app, ["train", "--weights", str(tmp_path / "first"), "--export-pth", str(official)])
        assert result.exit_code == 0, result.output
    finally:
        torch.set_num_threads(threads)
    other = write_coco(tmp_path / "other", num_images=3)
    shutil.copytree(tmp_path / "data", tmp_path / "copy")  # the same data where another machine keeps it
    copy = tuple(tmp_path / "copy" / Path(path).relative_to(tmp_path / "data") for path in data)
    masks = tmp_path / "masks.json"  # the same images and categories, one polygon moved by a pixel
    coco = json.loads(data[0].read_text())
    coco["annotations"][0]["segmentation"][0][0] += 1
    masks.write_text(json.dumps(coco))
    shutil.copytree(tmp_path / "first", tmp_path / "later")  # the folder as rank 1 sees it a moment later
    shutil.copy(tmp_path / "other_arch" / "model_0000000.safetensors",
                tmp_path / "later" / "model_0000001.safetensors")
    (tmp_path / "later" / "last_checkpoint").write_text("model_0000001.safetensors")
    gone, nope = tmp_path / "gone.json", tmp_path / "nope"
    for name in ("resume-1", "resume-0-node", "resume-run"):  # the run's folder, seen by one rank only (node-local)
        shutil.copytree(tmp_path / "first", tmp_path / name)

    def train_args(name: str, data_files, *extra) -> list:
        return ["train", "--config", config, "--output-dir", tmp_path / name, "--data", data_files[0], "--images",
                data_files[1], *extra]

    unfit = "CLIPVIS.MODEL.encoder_points=3"  # the official file's: 4
    cases = {  # name: (rank 0's arguments, rank 1's)
        "gone": [train_args("gone", (gone, data[1]))] * 2,
        "batch": [train_args("batch", data, "SOLVER.IMS_PER_BATCH=3")] * 2,
        "weights": [train_args("weights", data, "--weights", nope)] * 2,
        "gone-1": [train_args("gone-1", data), train_args("gone-1", (gone, data[1]))],
        "weights-1": [train_args("weights-1", data, "--weights", tmp_path / "first"),
                      train_args("weights-1", data, "--weights", nope)],
        "data": [train_args("data", data), train_args("data", other)],
        "masks": [train_args("masks", data), train_args("masks", (masks, data[1]))],
        "iter": [train_args("iter", data), train_args("iter", data, "SOLVER.MAX_ITER=5")],
        "copy": [train_args("copy", data), train_args("copy", copy, "SOLVER.WEIGHT_DECAY_NORM=0")],
        "unfit": [train_args("unfit", data, unfit, "--weights", official)] * 2,
        "unfit-1": [train_args("unfit-1", data, unfit), train_args("unfit-1", data, unfit, "--weights", official)],
        "folder": [train_args("folder", data, "SOLVER.MAX_ITER=1", "--weights", tmp_path / "first"),
                   train_args("folder", data, "SOLVER.MAX_ITER=1", "--weights", tmp_path / "later")],
        "seed": [train_args("seed", data, "SEED=5"), train_args("seed", data, "SEED=-1")],
        "resume-1": [train_args("resume-1", data, "--resume", "SOLVER.MAX_ITER=2"),
                     train_args("resume-1-node", data, "--resume", "SOLVER.MAX_ITER=2")],
        "resume-0": [train_args("resume-0", data, "--resume", "SOLVER.MAX_ITER=2"),
                     train_args("resume-0-node", data, "--resume", "SOLVER.MAX_ITER=2")],
        "resume-run": [["train", "--output-dir", tmp_path / "resume-run", "--resume"],  # no --config
                       ["train", "--output-dir", tmp_path / "resume-run-node", "--resume"]],
        "locked": [train_args("locked", data)] * 2,
        "testset": [train_args("testset", data, "DATASETS.TEST=[nosuch]", "TEST.EVAL_PERIOD=1")] * 2,
        "nan": [train_args("nan", data, "SOLVER.MAX_ITER=4", "SOLVER.BASE_LR=1e30",
                           "SOLVER.CLIP_GRADIENTS.ENABLED=false")] * 2,
    }
    from clipvis.cli.locks import FolderLock
    from clipvis.cli.train.trainer import TRAINING_LOCK_NAME

    (tmp_path / "locked").mkdir()
    with FolderLock(tmp_path / "locked", TRAINING_LOCK_NAME):  # as a live run holds it
        outcomes = torchrun_cases(tmp_path / "job", list(cases.values()))
    files = {"root": tmp_path, "gone": gone, "nope": nope, "official": official, "first": tmp_path / "first"}
    return dict(zip(cases, outcomes, strict=True)), files


def said_once(outcome, message: str) -> None:
    """Every rank stopped (torchrun: non-zero); one `clipvis:` line in all, an error containing ``message``, which no
    other line repeats; no worker's traceback."""
    assert outcome.codes and all(code != 0 for code in outcome.codes), outcome
    lines = outcome.stderr.splitlines()
    said = [line for line in lines if line.startswith("clipvis: ") and "warning" not in line]
    assert len(said) == 1 and said[0].startswith("clipvis: error: ") and message in said[0], outcome.stderr
    assert sum(message in line for line in lines) == 1, outcome.stderr
    assert not re.search(r'File "[^"]*(/clipvis|launch\.py)', outcome.stderr), outcome.stderr  # torchrun's alone
    assert "[rank" not in outcome.stderr, outcome.stderr


@GLOO
def test_torchrun_ranks_with_other_settings_or_data_stop_before_training_with_one_line(torchrun_job):
    """Ranks given other --data trained silently on different data (config.yaml said rank 0's); ranks given another
    SOLVER.MAX_ITER hung until the process group's timeout. Every rank now stops before training, rank 0 says why."""
    outcomes, files = torchrun_job
    for name, message in (
        ("data", "clipvis: error: rank 1 has other training data: dataset 1 3 items, digest "),
        ("masks", "clipvis: error: rank 1 has other training data: dataset 1 2 items, digest "),
        ("iter", "clipvis: error: rank 1 has other settings: SOLVER.MAX_ITER 5 (rank 0: 3); every process must "
         "train with the same settings and data, nothing was trained"),
    ):
        said_once(outcomes[name], message)
        run = files["root"] / name
        assert not list(run.glob("model_*")) and not (run / "config.yaml").exists(), outcomes[name].stderr
    copy = outcomes["copy"]  # 0 for 0.0, the data's copy elsewhere: the same
    assert copy.codes == [0, 0] and "clipvis: error" not in copy.stderr, copy.stderr


@GLOO
def test_torchrun_folder_in_use_is_the_line_a_single_process_gives(torchrun_job):
    """Rank 0 alone takes the folder's lock: its refusal read `clipvis: error: rank 0: DIR is in use by ...`."""
    import os

    outcomes, files = torchrun_job
    said_once(outcomes["locked"], f"clipvis: error: {files['root'] / 'locked'} is in use by a live training run (pid "
              f"{os.getpid()})")


@GLOO
def test_torchrun_test_set_check_is_the_line_a_single_process_gives(torchrun_job):
    """Rank 0 alone checks the test set: a wrong DATASETS.TEST read `clipvis: error: rank 0: DATASETS.TEST ...` under
    torchrun, `clipvis: error: DATASETS.TEST ...` in one process."""
    outcomes, files = torchrun_job
    said_once(outcomes["testset"], "clipvis: error: DATASETS.TEST (set on the command line): 'nosuch' is not a "
              "registered dataset")
    assert not (files["root"] / "testset" / "config.yaml").exists(), outcomes["testset"].stderr


@GLOO
def test_torchrun_ranks_with_a_negative_seed_on_some_stop_with_one_line(torchrun_job):
    """SEED -1 on rank 1 beside 5 on rank 0: rank 1 waited for rank 0's draw, rank 0 in the settings check, for good."""
    outcomes, files = torchrun_job
    said_once(outcomes["seed"], "clipvis: error: rank 1 has other settings: SEED -1 (rank 0: 5); every process")
    assert not list((files["root"] / "seed").glob("model_*")), outcomes["seed"].stderr


@GLOO
def test_torchrun_resume_where_one_rank_sees_another_folder_stops_with_one_line(torchrun_job):
    """--resume with node-local folders where only one rank finds the run's checkpoint: the other started at iteration
    0 while rank 0 went on from its checkpoint, a wrong checkpoint was saved, then every rank hung. Every rank now
    stops before training, the rank that differs naming its folder and rank 0's checkpoint."""
    outcomes, files = torchrun_job
    root = files["root"]

    def refused(outcome, message: str) -> None:  # (rank 0 says first that it resumes with the run's config.yaml)
        assert outcome.codes and all(code != 0 for code in outcome.codes), outcome
        errors = [line for line in outcome.stderr.splitlines() if line.startswith("clipvis: error: ")]
        assert len(errors) == 1 and errors[0].startswith(message), outcome.stderr
        assert "Traceback" not in outcome.stderr, outcome.stderr

    refused(outcomes["resume-1"], f"clipvis: error: rank 1: {root / 'resume-1-node'}: --resume: no "
            "model_0000000.safetensors with its training state here, the checkpoint rank 0 resumes from; every "
            "process must see the run's folder")
    assert sorted(path.name for path in (root / "resume-1").glob("model_*")) == [
        "model_0000000.safetensors", "model_0000000.state.pt"], outcomes["resume-1"].stderr
    refused(outcomes["resume-0"], f"clipvis: error: rank 1: {root / 'resume-0-node'}: --resume: this process has "
            "model_0000000.safetensors to resume from, rank 0 none (it starts the run afresh)")
    assert not list((root / "resume-0").glob("model_*")), outcomes["resume-0"].stderr
    assert not (root / "resume-0" / "config.yaml").exists(), outcomes["resume-0"].stderr


@GLOO
def test_torchrun_resume_where_one_rank_finds_no_run_is_said_by_rank_0(torchrun_job):
    """--resume without --config, node-local folders, rank 1's without config.yaml: rank 1 (not its machine's first
    worker) stopped without a word before the process group formed, and rank 0 waited in its rendezvous until torchrun
    ended it (across machines: the group's 2-hour timeout), no line saying why. Rank 0 now says rank 1's line."""
    outcomes, files = torchrun_job
    outcome = outcomes["resume-run"]
    assert outcome.codes == [1, 1], outcome
    errors = [line for line in outcome.stderr.splitlines() if line.startswith("clipvis: error: ")]
    assert errors == [f"clipvis: error: rank 1: {files['root'] / 'resume-run-node'}: no training run to resume here "
                      "(no config.yaml); give --config to start one"], outcome.stderr
    assert "Traceback" not in outcome.stderr, outcome.stderr
    assert sorted(path.name for path in (files["root"] / "resume-run").glob("model_*")) == [
        "model_0000000.safetensors", "model_0000000.state.pt"], outcome.stderr  # nothing trained


@pytest.fixture
def train_log(monkeypatch) -> Iterator[list[str]]:
    """The lines the `clipvis.train` logger says (INFO and up) while the test runs."""
    import logging

    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logger = logging.getLogger("clipvis.train")
    monkeypatch.setattr(logger, "level", logging.INFO)
    logger.addHandler(handler)
    try:
        yield said
    finally:
        logger.removeHandler(handler)


def test_torchrun_ranks_of_one_machine_share_its_cpus_among_their_loader_workers(monkeypatch, train_log):
    import os

    from clipvis.cli.train.loader_resources import loader_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loader_workers(2) == 2 and not train_log
    assert loader_workers(4) == 2
    assert train_log == ["warning: DATALOADER.NUM_WORKERS is 4 but the 4 training processes of this machine share 8 "
                         "CPUs: the data loads with 2 worker processes each"]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")  # more processes than CPUs: one worker each still
    assert loader_workers(4) == 1 and loader_workers(0) == 0


def test_loader_workers_with_little_shared_memory_are_one_warning(monkeypatch, tmp_path, train_log):
    """A container's 64 MB /dev/shm: the loader workers failed to hand over their batches and training hung at its
    first iteration without a word of clipvis'."""
    import shutil

    from clipvis.cli.train.loader_resources import check_shared_memory

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=64 * 2**20))
    check_shared_memory(0)  # no workers: nothing goes through it
    assert train_log == []
    check_shared_memory(4)
    assert train_log == ["warning: /dev/shm has 64 MB free, and the 4 loader workers pass every batch through it: "
                         "PyTorch's data loader hangs when it fills; give the container more (docker run --shm-size "
                         "8g; Kubernetes: an emptyDir of medium Memory at /dev/shm) or set DATALOADER.NUM_WORKERS=0"]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=8 * 2**30))
    check_shared_memory(4)
    assert len(train_log) == 1


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not built into this torch")
def test_an_error_under_num_gpus_is_the_commands_line_alone(tmp_path, tiny_train_config):
    """A process of --num-gpus that failed: PyTorch's spawn logged 'W... spawn.py:165] Terminating process N via signal
    SIGTERM' for the others before the command's own line."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    spawn_log.addHandler(handler)
    data = write_coco(tmp_path / "data", num_images=2)
    try:
        result = runner.invoke(app, ["train", "--config", str(tiny_train_config(tmp_path, IMS_PER_BATCH=3)),
                                     "--output-dir", str(tmp_path / "run"), "--data", str(data[0]), "--images",
                                     str(data[1]), "--num-gpus", "2"])
    finally:
        spawn_log.removeHandler(handler)
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert result.output == "clipvis: error: SOLVER.IMS_PER_BATCH 3 is not divisible by the 2 processes\n"
    assert not records, [record.getMessage() for record in records]


def test_a_process_of_num_gpus_killed_outright_is_one_line_naming_what_was_saved(tmp_path, tiny_train_config,
                                                                                   monkeypatch):
    """kill -9 (or the OOM killer) on one --num-gpus process: PyTorch spawn's ProcessExitedException traceback ended
    the command; now one line, as under torchrun, and what there is to resume from. (Spawn's context stands in for the
    processes: what they do is the other tests'.)"""
    import torch.multiprocessing as mp

    class KilledProcess:
        sentinels: dict[int, int] = {}  # none to wait on: join() says what happened

        def join(self) -> bool:
            raise mp.ProcessExitedException("process 1 terminated with signal SIGKILL", error_index=1, error_pid=4242,
                                            exit_code=-9, signal_name="SIGKILL")

    monkeypatch.setattr(mp, "start_processes", lambda *args, **kwargs: KilledProcess())
    data = write_coco(tmp_path / "data", num_images=2)
    result = runner.invoke(app, ["train", "--config", str(tiny_train_config(tmp_path, IMS_PER_BATCH=2)),
                                 "--output-dir", str(tmp_path / "run"), "--data", str(data[0]), "--images",
                                 str(data[1]), "--num-gpus", "2"])
    assert result.exit_code == 1, result.output + repr(result.exception)
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "clipvis: error: process 1 of --num-gpus 2 ended by SIGKILL without a word (killed? out of memory?)"), lines
    assert "Traceback" not in result.output


@GLOO
def test_torchrun_errors_every_rank_finds_are_said_once_and_one_ranks_own_does_not_hang(torchrun_job):
    """A missing --data file, a batch the process count does not divide, a mistyped --weights: every rank printed the
    same line. A data file only rank 1 misses left rank 0 waiting in a collective (2 h); a --weights only rank 1
    misses ended rank 1 without a word (rank 0 said nothing either). Rank 1 now says it, naming itself."""
    outcomes, files = torchrun_job
    gone, nope = files["gone"], files["nope"]
    for name, message in (
        ("gone", str(gone)),
        ("batch", "SOLVER.IMS_PER_BATCH 3 is not divisible by the 2 processes"),
        ("weights", f"no such file or folder: {nope}"),
        ("gone-1", f"clipvis: error: rank 1: {gone}"),
        ("weights-1", f"clipvis: error: rank 1: no such file or folder: {nope}"),
    ):
        said_once(outcomes[name], message)
        if name.startswith("weights"):  # before the data loads
            assert "training items" not in outcomes[name].stderr, outcomes[name].stderr
        assert not (files["root"] / name / "config.yaml").exists()


@GLOO
def test_a_loss_gone_non_finite_under_torchrun_is_said_once(torchrun_job):
    """Every rank sees the same (all-reduced) loss: each said it (and the ranks but 0 once more through Python's last
    resort logging handler), three lines for two processes. The job's last case: torchrun's own stderr."""
    outcomes, _ = torchrun_job
    said_once(outcomes["nan"], "the loss became")


@pytest.mark.skipif(not torch.distributed.is_gloo_available() or not Path("/proc/self/stat").exists(),
                    reason="gloo backend not built into this torch, or no /proc")
def test_sigterm_to_one_process_of_num_gpus_stops_the_run_by_that_signal(tmp_path, tiny_train_config):
    """--num-gpus 2 and a SIGTERM to one of its processes: PyTorch's spawn ended that process with status 0 on the
    stop, and the command printed the checkpoint as if training had ended (exit 0)."""
    import os
    import signal

    process, run = start_long_run(tmp_path, tiny_train_config, NUM_GPUS_TWO)
    workers = spawned_processes(process.pid)
    assert len(workers) == 2, workers
    os.kill(max(workers), signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, (out, err)
    assert err.count("clipvis: stopped by SIGTERM; saved ") == 1, err
    assert out == "", out  # no checkpoint listed as the finished run's



def spawned_processes(parent: int) -> list[int]:
    """The process ids of the processes ``clipvis train --num-gpus`` (process ``parent``) spawned (Linux /proc)."""
    import os

    workers = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == parent and b"spawn_main" in Path(f"/proc/{entry}/cmdline").read_bytes():
                workers.append(int(entry))
        except OSError:
            continue
    return workers


NUM_GPUS_TWO = ("-m", "clipvis", "train", "--num-gpus", "2")


TORCHRUN_TWO = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "clipvis", "train")


def start_long_run(tmp_path, tiny_train_config, launch: tuple[str, ...], *overrides: str):
    """A training run of 5000 iterations in 2 processes (``launch``: the Python arguments up to the train command's
    own; ``overrides``: more KEY=VALUE), started in a subprocess and returned once it logged its second iteration:
    (the process, its folder)."""
    import os
    import subprocess
    import sys
    import time

    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=5000, IMS_PER_BATCH=2)
    run = tmp_path / "run"
    command = [sys.executable, *launch, "--config", str(config), "--output-dir", str(run), "--data", str(data[0]),
               "--images", str(data[1]), "CLIPVIS.LOG_PERIOD=1", *overrides]
    process = start_process_tree(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    return process, run


@pytest.mark.skipif(not torch.distributed.is_gloo_available() or not Path("/proc/self/environ").exists(),
                    reason="gloo backend not built into this torch, or no /proc")
def test_a_torchrun_rank_killed_during_training_is_one_line_naming_what_was_saved(torchrun_stops):
    """kill -9 of rank 1 while training: rank 0 printed gloo's traceback ("Connection closed by peer"). (The last
    case of torchrun_stops: torchrun's own output and exit status.)"""
    outcome, _, run = torchrun_stops["killed"]
    err = outcome.stderr
    assert outcome.codes[0] != 0, err
    said = [line for line in err.splitlines() if line.startswith("clipvis: ") and "warning" not in line]
    last = run / (run / "last_checkpoint").read_text().strip()
    assert said == ["clipvis: error: rank 1 ended without a word (killed? out of memory?); nothing saved since "
                    f"{last}; continue with the same torchrun command and --resume (2 processes)"], err
    assert "[rank0]" not in err and "pair.cc" not in err, err  # no traceback from rank 0


@GLOO
def test_torchrun_ranks_start_from_the_checkpoint_rank_0_takes_from_a_training_folder(torchrun_job):
    """--weights FOLDER of a run still being written: each rank took the folder's newest checkpoint of its moment,
    and a rank that saw a newer one (here of another architecture) started from it (DDP failed)."""
    outcomes, files = torchrun_job
    assert outcomes["folder"].codes == [0, 0], outcomes["folder"].stderr
    started = yaml.safe_load((files["root"] / "folder" / "config.yaml").read_text())["MODEL"]["WEIGHTS"]
    assert started == str(files["first"] / "model_0000000.safetensors")


# The train command with the data reading of the rank named by $SLOW_RANK slowed down: that rank writes its process id
# to $MARKER and sleeps $SLOW_S seconds (the time a large annotation file takes to read) before it reads the data.
# The processes --num-gpus spawns import it (as __mp_main__) and patch their own reading.
SLOW_DATA_LAUNCHER = """\
import os, runpy, sys, time
from pathlib import Path

import clipvis.cli.train.run as run

load_sources = run.load_sources


def slow(*args, **kwargs):
    if os.environ["RANK"] == os.environ["SLOW_RANK"]:
        Path(os.environ["MARKER"]).write_text(str(os.getpid()))
        time.sleep(float(os.environ["SLOW_S"]))
    return load_sources(*args, **kwargs)


run.load_sources = slow
if __name__ == "__main__":
    sys.argv = ["clipvis", *sys.argv[1:]]
    runpy.run_module("clipvis", run_name="__main__")
"""


def start_with_slow_data(tmp_path, tiny_train_config, launch: tuple[str, ...], slow: int, seconds: float,
                         *args: str):
    """A 3-iteration run in 2 processes (``launch``: the Python arguments before the train command, the launcher
    script ``LAUNCHER`` standing for ``-m clipvis``; ``args``: more of the command's own) whose rank ``slow`` takes
    ``seconds`` to read its data, returned once that rank is reading (and the other is done): (the process, the
    reading rank's process id, the folder)."""
    import os
    import subprocess
    import sys
    import time

    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=3, IMS_PER_BATCH=2)
    launcher, marker, run = tmp_path / "launch.py", tmp_path / "reading", tmp_path / "run"
    launcher.write_text(SLOW_DATA_LAUNCHER)
    command = [sys.executable, *(str(launcher) if arg == "LAUNCHER" else arg for arg in launch), "train", "--config",
               str(config), "--output-dir", str(run), "--data", str(data[0]), "--images", str(data[1]), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLOW_RANK": str(slow), "MARKER": str(marker),
           "SLOW_S": str(seconds)}
    process = start_process_tree(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), process.communicate(timeout=60)
    time.sleep(1)  # the other rank is done with its data meanwhile
    return process, int(marker.read_text()), run


# Each rank of the torchrun_stops job: its data reading in case `number` (torchrun_cases' launcher's) slowed as that
# case's entry of slow.json says: the slow rank writes its process id to the entry's marker, then sleeps its seconds
# (SLOW_DATA_LAUNCHER's patch, per case).
SLOW_DATA_PRELUDE = """\
import json as _json, os as _os, time as _time
from pathlib import Path as _Path

import clipvis.cli.train.run as _train_run

_load_sources = _train_run.load_sources


def _slow(*args, **kwargs):
    slow = _json.loads((_Path(_os.environ["CLIPVIS_CASES"]) / "slow.json").read_text())[number]
    if slow is not None and _os.environ["RANK"] == str(slow["rank"]):
        _Path(slow["marker"]).write_text(str(_os.getpid()))
        _time.sleep(slow["seconds"])
    return _load_sources(*args, **kwargs)


_train_run.load_sources = _slow
"""

# The cases of torchrun_stops: (the rank that reads its data slowly and for how many seconds, None for a 5000-iteration
# run; the rank signalled; the signal; more KEY=VALUE). A rank waiting in a collective acts once it completes: the
# slow rank's whole minute otherwise. The last case's signal kills a process of the job: torchrun's own report.
TORCHRUN_STOPS = {
    "rank-1-reading": ((1, 60), 1, "SIGTERM", ()),
    "rank-0-reading": ((0, 60), 0, "SIGTERM", ()),
    "rank-0-waiting-for-rank-1": ((1, 6), 0, "SIGTERM", ()),
    "killed": (None, 1, "SIGKILL", ("SOLVER.CHECKPOINT_PERIOD=1",)),
}


@pytest.fixture(scope="module")
def torchrun_stops(tmp_path_factory, tiny_train_config):
    """A signal to one rank of a 2-rank torchrun train, in each case of TORCHRUN_STOPS, the cases run in turn by one
    torchrun job (tests/clipvis_cli/torchrun_cases.py: one process start, torch import and rendezvous for all): to a
    rank of a 5000-iteration run once it logged its second iteration ("killed"), or while the data loads,
    1 s after the slow rank began reading (the other is done with its data meanwhile). {case: (its Outcome, the
    seconds from the signal to the case's end, its run folder)}; the last case's Outcome is torchrun's own."""
    import os
    import signal
    import time

    from ..process_trees import kill_process_tree
    from ..torchrun_cases import case_ended, job_outcomes, start_torchrun_cases

    root = tmp_path_factory.mktemp("torchrun_stops")
    data = write_coco(root / "data", num_images=2)
    config = tiny_train_config(root, MAX_ITER=3, IMS_PER_BATCH=2)
    folder, cases, slow = root / "job", [], []
    for name, (reading, _, _, overrides) in TORCHRUN_STOPS.items():
        args = ["train", "--config", str(config), "--output-dir", str(root / name), "--data", str(data[0]),
                "--images", str(data[1]), *overrides]
        cases.append([[*args, "SOLVER.MAX_ITER=5000", "CLIPVIS.LOG_PERIOD=1"] if reading is None else args] * 2)
        slow.append(None if reading is None else {"rank": reading[0], "seconds": reading[1],
                                                  "marker": str(root / f"{name}.reading")})
    folder.mkdir()
    (folder / "slow.json").write_text(json.dumps(slow))

    def started(name: str, reading: tuple[int, int] | None) -> bool:
        if reading is None:
            metrics = root / name / "metrics.jsonl"
            return metrics.is_file() and len(metrics.read_text().splitlines()) >= 2
        marker = root / f"{name}.reading"
        return marker.is_file() and bool(marker.read_text())

    process = start_torchrun_cases(folder, cases, SLOW_DATA_PRELUDE)
    seconds: dict[str, float] = {}
    try:
        for number, (name, (reading, signalled, signal_name, _)) in enumerate(TORCHRUN_STOPS.items()):
            deadline = time.monotonic() + 240
            while not started(name, reading):
                if time.monotonic() > deadline or process.poll() is not None:
                    out, err = kill_process_tree(process)
                    job_outcomes(folder, number + 1, out or "", err or "", process.returncode)  # names a case stuck
                    raise AssertionError(f"case {name} did not start:\n{err}")
                time.sleep(0.1)
            if reading is not None:
                time.sleep(1)  # the other rank is done with its data meanwhile
            target = rank_process(process.pid, signalled)
            assert target is not None
            signalled_at = time.monotonic()
            os.kill(target, getattr(signal, signal_name))
            if number == len(TORCHRUN_STOPS) - 1:
                out, err = process.communicate(timeout=120)
            else:
                while not case_ended(folder, number) and time.monotonic() < signalled_at + 120:
                    time.sleep(0.05)
            seconds[name] = time.monotonic() - signalled_at
    finally:
        if process.poll() is None:
            out, err = kill_process_tree(process)
    outcomes = job_outcomes(folder, len(cases), out, err, process.returncode)
    return {name: (outcome, seconds[name], root / name) for name, outcome in zip(TORCHRUN_STOPS, outcomes, strict=True)}


def stopped_by_sigterm(outcome) -> None:
    """Every rank of a case of torchrun_stops but the last exited 143."""
    assert outcome.codes == [143, 143], outcome


@pytest.mark.skipif(not torch.distributed.is_gloo_available() or not Path("/proc/self/environ").exists(),
                    reason="gloo backend not built into this torch, or no /proc")
@pytest.mark.parametrize("case", ["rank-1-reading", "rank-0-reading", "rank-0-waiting-for-rank-1"])
def test_sigterm_to_one_torchrun_rank_before_training_stops_every_rank_by_that_signal(torchrun_stops, case):
    """A SIGTERM to one rank while the data loads (rank 1 reading: rank 0 printed gloo's traceback): every rank now
    stops by that signal, with one line from rank 0 and nothing saved, and exits 143."""
    outcome, seconds, run = torchrun_stops[case]
    err = outcome.stderr
    assert seconds < 40, err
    said = [line for line in err.splitlines() if line.startswith("clipvis: ") and "warning" not in line]
    assert said == ["clipvis: stopped by SIGTERM before the first checkpoint"], err
    assert not re.search(r'File "[^"]*(/clipvis|launch\.py)', err) and "[rank" not in err, err  # torchrun's own alone
    stopped_by_sigterm(outcome)
    assert not list(run.glob("model_*")) and not (run / "config.yaml").exists()


# The train command with rank 0 pausing $SLOW_S seconds after it recorded its second iteration's metrics, outside any
# collective (the other rank waits in one meanwhile), its process id in $MARKER.
SLOW_METRICS_LAUNCHER = """\
import os, runpy, sys, time
from pathlib import Path

from clipvis.cli.train.trainer import MetricsSink

write = MetricsSink.write


def slow(self, record):
    write(self, record)
    if record["iteration"] == 1:
        Path(os.environ["MARKER"]).write_text(str(os.getpid()))
        time.sleep(float(os.environ["SLOW_S"]))


MetricsSink.write = slow
if __name__ == "__main__":
    sys.argv = ["clipvis", *sys.argv[1:]]
    runpy.run_module("clipvis", run_name="__main__")
"""


@pytest.mark.skipif(not torch.distributed.is_gloo_available() or not Path("/proc/self/stat").exists(),
                    reason="gloo backend not built into this torch, or no /proc")
def test_a_process_of_num_gpus_killed_during_training_is_the_commands_line_alone(tmp_path, tiny_train_config):
    """kill -9 (the OOM killer) of one --num-gpus process while training: PyTorch's spawn ends the one left with a
    SIGTERM, and that process announced 'SIGTERM: stopping after this iteration to save a checkpoint' before the
    command's line saying the other was killed: a SIGTERM the user never sent."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=5000, IMS_PER_BATCH=2)
    launcher, marker, run = tmp_path / "launch.py", tmp_path / "paused", tmp_path / "run"
    launcher.write_text(SLOW_METRICS_LAUNCHER)
    process = start_process_tree(
        [sys.executable, str(launcher), "train", "--num-gpus", "2", "--config", str(config), "--output-dir", str(run),
         "--data", str(data[0]), "--images", str(data[1]), "CLIPVIS.LOG_PERIOD=1", "SOLVER.CHECKPOINT_PERIOD=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MARKER": str(marker), "SLOW_S": "3"})
    deadline = time.monotonic() + 120
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert marker.exists(), process.communicate(timeout=60)
    rank1 = [pid for pid in spawned_processes(process.pid) if pid != int(marker.read_text())]
    assert len(rank1) == 1, rank1
    os.kill(rank1[0], signal.SIGKILL)  # while rank 0, the one that speaks, is busy: spawn's SIGTERM reaches it there
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    said = [line for line in err.splitlines() if line.startswith(("clipvis: error", "SIGTERM"))]
    assert len(said) == 1 and said[0].startswith(
        "clipvis: error: process 1 of --num-gpus 2 ended by SIGKILL without a word (killed? out of memory?); nothing "
        "saved since "), err
    assert "stopping after this iteration" not in err, err


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="gloo backend not built into this torch")
def test_sigterm_to_one_process_of_num_gpus_before_training_stops_the_run_by_that_signal(tmp_path, tiny_train_config):
    """--num-gpus 2 and a SIGTERM to one of its processes while it reads the data: the process died of it and the
    command printed PyTorch spawn's traceback ('process 1 terminated with signal SIGTERM'), exit 1."""
    import os
    import signal

    process, reading, run = start_with_slow_data(tmp_path, tiny_train_config, ("LAUNCHER",), 1, 60, "--num-gpus", "2")
    os.kill(reading, signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    said = [line for line in err.splitlines() if line.startswith("clipvis: ") and "warning" not in line]
    assert said == ["clipvis: stopped by SIGTERM before the first checkpoint"], err
    assert "Traceback" not in err and out == "", err
    assert not list(run.glob("model_*")) and not (run / "config.yaml").exists()


# One training process of a run (`distributed_main`, as `--num-gpus` and torchrun start it) in a fresh interpreter, in
# a group of one: its run imports what building the model imports (open_clip: torchvision, torch._dynamo and with them
# torch.distributed.nn) and is stopped by SIGTERM (argv[1] "training": after a step through a DDP wrapper, saved);
# then the gloo and store threads still running are printed.
ONE_PROCESS_STOPPED = """\
import gc, os, signal, socket, sys
from types import SimpleNamespace

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(s.getsockname()[1]), RANK="0", LOCAL_RANK="0",
                      WORLD_SIZE="1")
import clipvis.cli.train.processes as processes
import clipvis.cli.train.run as run
from clipvis.cli.train.stopping import TrainingStopped


def stopped_run(*args, **kwargs):
    import torch
    import torch.distributed.nn  # noqa: F401

    if sys.argv[1] == "training":  # the wrapper a run trains through holds the group, from a reference cycle
        gc.disable()  # the step's reference cycles not collected by chance before the process ends (then frozen)
        model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(2, 2))
        model(torch.ones(1, 2)).sum().backward()
        raise TrainingStopped(signal.SIGTERM)
    raise TrainingStopped(signal.SIGTERM)


run.run_training = stopped_run
try:
    processes.distributed_main(SimpleNamespace(config=SimpleNamespace(get=lambda key: "cpu")))
except TrainingStopped:
    pass
gc.freeze()  # as a spawned process does on its way out (gc_pause.freeze_before_exit): nothing is collected after
names = [open(f"/proc/self/task/{task}/comm").read().strip() for task in os.listdir("/proc/self/task")]
print(sorted(name for name in names if "gloo" in name or "tcpstore" in name))
"""


@pytest.mark.skipif(not torch.distributed.is_gloo_available() or not Path("/proc/self/task").exists(),
                    reason="gloo backend not built into this torch, or no /proc")
@pytest.mark.parametrize("when", ["before-training", "training"])
def test_a_training_process_ends_its_process_group_before_it_exits(when):
    """A process of a --num-gpus run stopped by SIGTERM before training ended now and then by SIGABRT ("terminate
    called without an active exception"): its process group, held by torch.distributed.nn (imported with the model,
    after the group formed), outlived destroy_process_group, and a gloo thread still dropping its last collective
    needed the interpreter while it was shutting down. The group's threads end before the process does now. Stopped
    while training, the DDP wrapper held the group too: the stop's traceback kept it alive through the teardown, then
    it was cyclic garbage the exit's gc freeze never collects."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", ONE_PROCESS_STOPPED, when], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n", result.stdout


@GLOO
def test_a_checkpoint_that_does_not_fit_is_said_once_under_torchrun_and_one_ranks_own_names_it(torchrun_job):
    """An official .pth (no model config of its own) that the config does not fit (its deformable attention's
    sampling points: other shapes than the file's): found by every rank, each printed
    it; found by rank 1 alone, rank 1 said it unnamed and rank 0 went on into a collective (gloo's traceback or a
    wait). It is said once now, by rank 1 with its number when it alone finds it, and every rank stops."""
    outcomes, files = torchrun_job
    official = files["official"]
    for name, prefix in (("unfit", f"clipvis: error: {official}: checkpoint does not fit the model: "),
                         ("unfit-1", f"clipvis: error: rank 1: {official}: checkpoint does not fit the model: ")):
        said_once(outcomes[name], prefix)
        assert [line for line in outcomes[name].stderr.splitlines() if prefix in line][0].startswith(prefix)
        assert not (files["root"] / name / "config.yaml").exists()


@pytest.mark.parametrize("device, said", [
    ("gpu", "MODEL.DEVICE must be auto, cpu, cuda or cuda:N (N = 0, 1, ...), not 'gpu'"),
    ("cuda:x", "MODEL.DEVICE must be auto, cpu, cuda or cuda:N (N = 0, 1, ...), not 'cuda:x'"),
    ("cuda:3", "MODEL.DEVICE cuda:3: this machine has 2 CUDA devices (cuda:0 to cuda:1)"),
])
def test_a_model_device_this_machine_has_not_is_one_line_before_anything_loads(tmp_path, tiny_train_config,
                                                                               monkeypatch, device, said):
    """Any MODEL.DEVICE but cpu/auto was taken for CUDA (`cuda:1` trained on GPU 0; `gpu` too), and a machine without
    CUDA failed with a traceback."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    result = runner.invoke(app, ["train", "--config", str(config), "--data", str(data[0]), "--images", str(data[1]),
                                 "--output-dir", str(tmp_path / "run"), f"MODEL.DEVICE={device}"])
    assert result.exit_code == 1 and result.output == f"clipvis: error: {said}\n", result.output
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_cuda_n_is_for_one_process_and_needs_cuda(tmp_path, tiny_train_config, monkeypatch):
    from clipvis.cli.train.config import ConfigError, load_train_config
    from clipvis.cli.train.run import check_device

    config = load_train_config(tiny_train_config(tmp_path, MAX_ITER=1), ["MODEL.DEVICE=cuda:1"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^MODEL.DEVICE cuda:1: CUDA is not available on this machine \(use "
                                          r"MODEL.DEVICE=cpu\)$"):
        check_device(config, 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # segment's --device words: one device, singular
    with pytest.raises(ConfigError, match=r"^MODEL.DEVICE cuda:1: this machine has 1 CUDA device \(cuda:0\)$"):
        check_device(config, 1)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_device(config, 1)
    with pytest.raises(ConfigError, match=r"^MODEL.DEVICE cuda:1 with 2 processes: each process trains on its own"):
        check_device(config, 2)


def test_a_resume_with_other_data_is_refused_and_with_the_same_data_moved_goes_on(tmp_path, tiny_train_config):
    """--resume --data OTHER trained the rest of the run on other data without a word, and config.yaml then named
    only it (a finished run's "nothing to do" rewrote it too); --data/--images on --resume are for data that moved."""
    import shutil

    config = tiny_train_config(tmp_path, MAX_ITER=2)
    data = write_coco(tmp_path / "data", num_images=2)
    other = write_coco(tmp_path / "other", num_images=3)
    train(config, tmp_path / "run", data)
    assert json.loads((tmp_path / "run" / "data.json").read_text())["dataset 1"].startswith("2 items, digest ")
    written = (tmp_path / "run" / "config.yaml").read_text()
    ann, images = other
    refused = runner.invoke(app, ["train", "--output-dir", str(tmp_path / "run"), "--resume", "--data", str(ann),
                                  "--images", str(images), "SOLVER.MAX_ITER=4"])
    assert refused.exit_code != 0 and "--resume with other training data than the run's (dataset 1: 3 items" in \
        refused.output
    assert (tmp_path / "run" / "config.yaml").read_text() == written
    shutil.move(tmp_path / "data", tmp_path / "moved")  # the same data elsewhere: the run goes on
    moved = (tmp_path / "moved" / data[0].relative_to(tmp_path / "data"), tmp_path / "moved" / "images")
    train(config, tmp_path / "run", moved, "--resume", "SOLVER.MAX_ITER=4")
    assert (tmp_path / "run" / "last_checkpoint").read_text().strip() == "model_0000003.safetensors"


def test_a_second_run_or_resume_in_the_folder_of_a_live_run_is_refused(tmp_path, tiny_train_config):
    """A --resume (a scheduler's requeue, a second terminal) while the run lived trained beside it on the same
    model_N names and metrics.jsonl, and a fresh start before its first checkpoint rewrote its config.yaml: the live
    run holds the folder for its whole life (an flock, which a killed run drops), and either is one line."""
    from clipvis.cli.locks import FolderLock
    from clipvis.cli.train import trainer

    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    run = tmp_path / "run"
    train(config, run, data)
    recorded = (run / "config.yaml").read_text()
    ann, images = data
    with FolderLock(run, trainer.TRAINING_LOCK_NAME):  # as a live run holds it
        for extra in (["--resume", "SOLVER.MAX_ITER=2"], []):
            result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(run), "--data",
                                         str(ann), "--images", str(images), *extra])
            assert result.exit_code == 1, result.output
            assert f"clipvis: error: {run} is in use by a live training run (pid {os.getpid()})" in result.output
            assert "Traceback" not in result.output and "holds a training run already" not in result.output
    assert (run / "config.yaml").read_text() == recorded and not (run / "model_0000001.safetensors").exists()
    train(config, run, data, "--resume", "SOLVER.MAX_ITER=2")  # the lock is dropped with its holder
    assert (run / "last_checkpoint").read_text().strip() == "model_0000001.safetensors"


@pytest.mark.parametrize("failing", ["weights", "state"])
def test_a_full_disk_while_saving_a_checkpoint_is_one_line_naming_the_last_usable_one(
    tmp_path, tiny_train_config, monkeypatch, failing
) -> None:
    """No space left while saving was a 30-line traceback (safetensors' SafetensorError, or torch.save's 'unexpected
    pos') that left model_N.state.pt.tmp behind: one line naming the checkpoint, the cause and the one to resume
    from, the half-written files gone, last_checkpoint still naming the usable one."""
    import errno

    from safetensors import SafetensorError

    from clipvis.cli.train import trainer

    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=4, CHECKPOINT_PERIOD=2)
    run = tmp_path / "run"
    real_save, real_open = trainer.save_pretrained, open

    def full_disk_weights(model, path):
        if "0000003" not in str(path):
            return real_save(model, path)
        (Path(path).parent / f".{Path(path).name}.tmp{os.getpid()}").write_bytes(b"x" * 100)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.handle.close()

        def write(self, data):
            self.handle.write(bytes(data[:100]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_disk_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FullDisk(handle) if "0000003" in str(file) and "w" in mode else handle

    if failing == "weights":
        monkeypatch.setattr(trainer, "save_pretrained", full_disk_weights)
    else:
        monkeypatch.setattr(trainer, "open", full_disk_open, raising=False)
    ann, images = data
    result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(run), "--data", str(ann),
                                 "--images", str(images)])
    assert result.exit_code == 1, result.output
    assert (f"clipvis: error: {run}: cannot save checkpoint model_0000003 (No space left on device); the last usable "
            "checkpoint is model_0000001\n") in result.output, result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in run.glob("*model_0000003*")) == []  # no temporaries, no weights without a state
    assert (run / "last_checkpoint").read_text().strip() == "model_0000001.safetensors"


def test_a_live_run_on_another_machine_is_named_with_its_host(tmp_path: Path) -> None:
    """A folder shared over NFS by a multi-node run or a requeue: the holder's pid alone named a process of another
    machine, one a user could `kill` here by mistake (review29); its host is kept where it is not this machine."""
    from clipvis.cli.locks import FolderLock
    from clipvis.cli.train import trainer

    run = tmp_path / "run"
    run.mkdir()
    with FolderLock(run, trainer.TRAINING_LOCK_NAME):
        (run / trainer.TRAINING_LOCK_NAME).write_text("pid 4242 on node17\n")  # as another machine's run wrote it
        with pytest.raises(trainer.FolderInUseError, match=r"live training run \(pid 4242 on node17\)"):
            trainer.hold_training_folder(run)


def test_resume_with_a_model_override_is_refused_naming_it(tmp_path, tiny_train_config):
    """`--resume CLIPVIS.MODEL.num_queries=16 MODEL.MASK_FORMER.DEC_LAYERS=5` was ignored (the model is the
    checkpoint's) yet written to config.yaml, which then disagreed with the model: one line naming them."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    run = tmp_path / "run"
    train(config, run, data)
    recorded = (run / "config.yaml").read_text()
    result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume", "SOLVER.MAX_ITER=2",
                                 "CLIPVIS.MODEL.num_queries=16", "CLIPVIS.MODEL.decoder_layers=4"])
    assert result.exit_code == 1, result.output
    assert ("clipvis: error: --resume with 'CLIPVIS.MODEL.num_queries=16', 'CLIPVIS.MODEL.decoder_layers=4': the "
            "model settings of a resumed run are its checkpoint's") in result.output, result.output
    assert (run / "config.yaml").read_text() == recorded and not (run / "model_0000001.safetensors").exists()


def test_paths_in_a_config_file_are_read_from_its_folder_and_its_weights_recorded_as_weights_are(
        tmp_path, tiny_train_config, monkeypatch):
    """A config file's CLIPVIS.TRAIN_DATA and MODEL.WEIGHTS were read from the current folder (a run from another
    folder trained on another dataset without a word) and MODEL.WEIGHTS was recorded as written (a training folder,
    relative): a --resume from elsewhere failed after the data loaded. Now they are the file's folder's, with a warning
    where the current folder's reading names another file, and MODEL.WEIGHTS is recorded as --weights is."""
    first = tmp_path / "a" / "first"
    data = write_coco(tmp_path / "a" / "data", num_images=2)
    train(tiny_train_config(tmp_path / "a", MAX_ITER=1), first, data)
    write_coco(tmp_path / "b" / "data", num_images=3)  # another dataset where the current folder's reading points
    config = tiny_train_config(tmp_path / "a", MAX_ITER=1)
    tree = yaml.safe_load(config.read_text())
    tree["MODEL"]["WEIGHTS"] = "first"
    tree["CLIPVIS"]["TRAIN_DATA"] = [{"json": "data/coco.json", "images": "data/images"}]
    config.write_text(yaml.safe_dump(tree))
    (tmp_path / "b" / "first").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    run = tmp_path / "b" / "run"
    result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(run)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (f"clipvis: warning: {config}: CLIPVIS.TRAIN_DATA data/coco.json is read relative to the config file's "
            f"folder: {tmp_path / 'a' / 'data' / 'coco.json'} (not data/coco.json in the current folder, as before)"
            ) in result.stderr, result.stderr
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["MODEL"]["WEIGHTS"] == str(first / (first / "last_checkpoint").read_text().strip())
    assert recorded["CLIPVIS"]["TRAIN_DATA"] == [{"json": str(data[0]), "images": str(data[1])}]
    # a KEY=VALUE override is the current folder's, and a path that is not there is one line before the data loads
    from clipvis.cli.train import run as run_module

    loads = run_module.load_sources
    monkeypatch.setattr("clipvis.cli.train.run.load_sources", lambda *a, **k: pytest.fail("the data loaded"))
    missing = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(tmp_path / "run2"),
                                  "MODEL.WEIGHTS=nothing/here"])
    assert missing.exit_code == 1 and missing.stderr.splitlines()[-1] == (
        "clipvis: error: no such file or folder: nothing/here"), missing.output
    monkeypatch.setattr("clipvis.cli.train.run.load_sources", loads)
    # options replacing the file's paths: no word of how the file's would have been read
    monkeypatch.chdir(tmp_path / "b")
    replaced = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(tmp_path / "run3"),
                                   "--weights", str(first), "--data", str(data[0]), "--images", str(data[1])])
    assert replaced.exit_code == 0 and "relative to the config file's folder" not in replaced.stderr, replaced.output
    # a config written for the current folder (as clipvis read it before), its folder holding no such path: read
    # from the current folder, with a warning (review 236: every such project config failed)
    nested = tmp_path / "proj" / "configs" / "mine.yaml"
    nested.parent.mkdir(parents=True)
    data_here = write_coco(tmp_path / "proj" / "data", num_images=2)
    tree["MODEL"].pop("WEIGHTS")
    nested.write_text(yaml.safe_dump(tree))
    monkeypatch.chdir(tmp_path / "proj")
    old_style = runner.invoke(app, ["train", "--config", str(nested), "--output-dir", str(tmp_path / "run4")])
    assert old_style.exit_code == 0, old_style.output + repr(old_style.exception)
    assert (f"clipvis: warning: {nested}: CLIPVIS.TRAIN_DATA data/coco.json is not in the config file's folder "
            f"({nested.parent / 'data' / 'coco.json'}): read from the current folder ({data_here[0]})") \
        in old_style.stderr, old_style.stderr
    recorded = yaml.safe_load((tmp_path / "run4" / "config.yaml").read_text())
    assert recorded["CLIPVIS"]["TRAIN_DATA"] == [{"json": str(data_here[0]), "images": str(data_here[1])}]


def test_paths_in_a_base_file_in_another_folder_are_read_from_that_files_folder(
        tmp_path, tiny_train_config, monkeypatch):
    """configs/lvis/top.yaml -> ../Base.yaml -> common/data.yaml (the official configs' layout, a config naming a
    base in the folder above): each _BASE_ was read from the folder of the file naming it, but the CLIPVIS.TRAIN_DATA
    that data.yaml wrote was read from top.yaml's folder (the README said to write such paths absolute). It is now
    data.yaml's folder's, as detectron2 reads paths; a base written for the top folder's reading still loads, with a
    warning."""
    configs = tmp_path / "proj" / "configs"
    (configs / "lvis").mkdir(parents=True)
    (configs / "common").mkdir()
    data = write_coco(configs / "common" / "data", num_images=2)
    (tmp_path / "tiny").mkdir()
    tiny = yaml.safe_load(tiny_train_config(tmp_path / "tiny", MAX_ITER=1).read_text())
    tiny["CLIPVIS"].pop("TRAIN_DATA", None)
    (configs / "Base.yaml").write_text(yaml.safe_dump({"_BASE_": "common/data.yaml", **tiny}))
    (configs / "common" / "data.yaml").write_text(yaml.safe_dump(
        {"CLIPVIS": {"TRAIN_DATA": [{"json": "data/coco.json", "images": "data/images"}]}}))
    top = configs / "lvis" / "top.yaml"
    top.write_text("_BASE_: ../Base.yaml\nSOLVER:\n  MAX_ITER: 1\n")
    seen: list[list[dict]] = []

    def loaded(names, custom, *args, **kwargs):
        seen.append(custom)
        raise SystemExit(3)  # the paths are what is checked: no training

    monkeypatch.setattr("clipvis.cli.train.run.load_sources", loaded)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--config", str(top), "--output-dir", str(tmp_path / "run")])
    assert seen, result.output + repr(result.exception)
    assert [(entry["json"], entry["images"]) for entry in seen[-1]] == [(str(data[0]), str(data[1]))], result.output
    # (the tiny model's random CLIP is said: _random_clip_warnings)
    assert "warning" not in "\n".join(set(result.stderr.splitlines()) - set(_random_clip_warnings(result.stderr)))
    # a base written for the earlier reading (its path relative to the top config's folder): read there, said
    elsewhere = write_coco(configs / "lvis" / "other", num_images=2)
    (configs / "common" / "data.yaml").write_text(yaml.safe_dump(
        {"CLIPVIS": {"TRAIN_DATA": [{"json": "other/coco.json", "images": "other/images"}]}}))
    result = runner.invoke(app, ["train", "--config", str(top), "--output-dir", str(tmp_path / "run")])
    assert [(entry["json"], entry["images"]) for entry in seen[-1]] == [(str(elsewhere[0]), str(elsewhere[1]))]
    data_yaml = configs / "common" / "data.yaml"  # normalised: the chain's lvis/../common/data.yaml was shown as is
    assert (f"clipvis: warning: {data_yaml}: CLIPVIS.TRAIN_DATA other/coco.json is not in the config file's folder "
            f"({data_yaml.parent / 'other' / 'coco.json'}): read from the folder of {top} ({elsewhere[0]})"
            ) in result.stderr, result.stderr


def test_resume_with_other_starting_weights_is_one_line(tmp_path, tiny_train_config, monkeypatch):
    """`--resume --weights X` ignored X (the run goes on from its own checkpoint) yet wrote X into config.yaml."""
    data = write_coco(tmp_path / "data", num_images=2)
    run = tmp_path / "run"
    train(tiny_train_config(tmp_path, MAX_ITER=1), run, data)
    before = (run / "config.yaml").read_text()
    from clipvis.cli.train import run as run_module

    loads = run_module.load_sources
    monkeypatch.setattr("clipvis.cli.train.run.load_sources", lambda *a, **k: pytest.fail("the data loaded"))
    for given, said in ((["--weights", str(run)], f"--weights {run}"),
                        ([f"MODEL.WEIGHTS={run}"], f"override 'MODEL.WEIGHTS={run}'")):
        result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume", *given])
        assert result.exit_code == 1 and result.stderr.splitlines()[-1] == (
            f"clipvis: error: --resume continues the run in {run} from its own checkpoint (its starting weights: the "
            f"official initialisation): {said} has no use with it; to train from other weights, start a new run "
            "(another --output-dir, without --resume)"), result.output
    assert (run / "config.yaml").read_text() == before
    # the weights it started from, as a requeued job script gives its whole command again: it goes on (review 236)
    started = tmp_path / "from_weights"
    command = ["train", "--config", str(tiny_train_config(tmp_path, MAX_ITER=1)), "--weights", str(run),
               "--data", str(data[0]), "--images", str(data[1]), "--output-dir", str(started), "--resume"]
    monkeypatch.setattr("clipvis.cli.train.run.load_sources", loads)
    assert runner.invoke(app, command).exit_code == 0
    again = runner.invoke(app, [*command, "SOLVER.MAX_ITER=2"])
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert (started / "model_0000001.safetensors").is_file()
    # its --weights folder's newest checkpoint moved on since (stage 1 went on): still the folder it started from
    assert runner.invoke(app, ["train", "--output-dir", str(run), "--resume", "SOLVER.MAX_ITER=2"]).exit_code == 0
    moved_on = runner.invoke(app, [*command, "SOLVER.MAX_ITER=3"])
    assert moved_on.exit_code == 0, moved_on.output + repr(moved_on.exception)
    # a release it did not start from: refused at once, nothing fetched (it was downloaded, then refused)
    monkeypatch.setattr("clipvis.cli.train.run.starting_weights", lambda *a: pytest.fail("the release was fetched"))
    release = runner.invoke(app, ["train", "--output-dir", str(started), "--resume", "--weights", "clipvis-lvis-r50"])
    assert release.exit_code == 1 and "--weights clipvis-lvis-r50 has no use with it" in release.stderr, release.output


@pytest.mark.filterwarnings("ignore:config says")  # the shipped config's sizes, not the tiny checkpoint's
def test_a_run_from_a_checkpoint_with_its_own_clip_records_it_for_segment_config(tmp_path, tiny_weights):
    """train --weights tiny.safetensors (a checkpoint holding its own, non-release CLIP) wrote a config.yaml naming
    the config's CLIP, RN50/openai, so `--export-pth exp/model.pth` then `segment --weights exp/model.pth --config
    runs/x/config.yaml` failed: `checkpoint does not fit the model: missing keys (312)`. config.yaml now records the
    checkpoint's open_clip model config (CLIPVIS.MODEL.clip_model_config), and the .pth loads with it alone."""
    data = write_coco(tmp_path / "data", num_images=2)
    run = tmp_path / "run"
    args = ["train", "--config", "ytvis19_r50.yaml", "--weights", str(tiny_weights), "--output-dir", str(run),
            "--data", str(data[0]), "--images", str(data[1]), "SOLVER.MAX_ITER=1", "SOLVER.IMS_PER_BATCH=1",
            "SOLVER.REFERENCE_WORLD_SIZE=0", "DATALOADER.NUM_WORKERS=0", "MODEL.DEVICE=cpu", "TEST.EVAL_PERIOD=0",
            "INPUT.IMAGE_SIZE=64", "INPUT.MIN_SIZE_TRAIN=[64]", "INPUT.MAX_SIZE_TRAIN=64", "SOLVER.AMP.ENABLED=False",
            "MODEL.MASK_FORMER.TRAIN_NUM_POINTS=256"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    trained = load_model(run)
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["CLIPVIS"]["MODEL"]["clip_model_config"] == trained.config.clip_model_config
    exported = tmp_path / "exp" / "model.pth"
    result = runner.invoke(app, ["train", "--weights", str(run), "--export-pth", str(exported)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    loaded = load_model(exported, config=str(run / "config.yaml"))  # as segment --weights ... --config ... does
    assert loaded.config.clip_model_config == trained.config.clip_model_config
    theirs = trained.state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in loaded.state_dict().items())
    assert loaded.state_dict().keys() == theirs.keys()
    # the run goes on from it, and config.yaml reads back as a training config
    result = runner.invoke(app, ["train", "--output-dir", str(run), "--resume", "SOLVER.MAX_ITER=2"])
    assert result.exit_code == 0, result.output + repr(result.exception)
