"""`clipvis evaluate --gt --frames` / `--dataset` on bad inputs: one line each, the other videos still run, non-zero
exit, and the per-video cache never deletes what clipvis did not write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from clipvis.cli.app import app
from clipvis.cli.locks import FolderLock


@pytest.fixture(autouse=True)
def _no_downloads(isolated_cache):
    """Every test here runs with a private cache and no network."""


def make_custom(root: Path, file_names: dict[int, list[str]] | None = None) -> tuple[Path, Path]:
    """frames/<video>/<t>.jpg for videos 1 and 2 (3 frames of 40x56) and gt.json listing them."""
    rng = np.random.default_rng(0)
    frames = root / "frames"
    videos, annotations = [], []
    for vid in (1, 2):
        folder = frames / f"v{vid}"
        folder.mkdir(parents=True)
        names = []
        for t in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(folder / f"{t}.jpg")
            names.append(f"v{vid}/{t}.jpg")
        mask = np.zeros((40, 56), dtype=np.uint8)
        mask[5:20, 5:30] = 1
        rle = mask_utils.encode(np.asfortranarray(mask))
        segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
        names = (file_names or {}).get(vid, names)
        videos.append({"id": vid, "width": 56, "height": 40, "length": 3, "file_names": names})
        annotations.append({"id": vid, "video_id": vid, "category_id": 1, "iscrowd": 0,
                            "segmentations": [segmentation] * 3, "areas": [375.0] * 3})
    gt = root / "gt.json"
    gt.write_text(json.dumps({"videos": videos, "categories": [{"id": 1, "name": "thing"}],
                              "annotations": annotations}))
    return gt, frames


def evaluate(weights: Path, gt: Path, frames: Path, out: Path):
    args = ["evaluate", "--gt", str(gt), "--frames", str(frames), "--weights", str(weights), "-o", str(out),
            "--device", "cpu"]
    return CliRunner().invoke(app, args)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("clipvis: error:")]


def test_frame_names_must_stay_inside_the_frames_folder(tmp_path, tiny_weights) -> None:
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (56, 40)).save(secret)
    gt, frames = make_custom(tmp_path, {1: ["../secret.jpg"] * 3})
    out = tmp_path / "eval"
    result = evaluate(tiny_weights, gt, frames, out)
    assert result.exit_code == 1, result.output
    assert error_lines(result) == [
        f"clipvis: error: {frames}: video 1: frame name '../secret.jpg' leads outside the frames folder {frames}"
    ]
    assert "1 video(s) of" in result.stderr and "not scored" in result.stderr
    assert (out / "per_video" / "2.json").is_file() and not (out / "per_video" / "1.json").exists()
    assert not (out / "results.json").exists()  # no results.json that silently lacks a video


def test_unwritable_output_bad_gt_and_model_errors(tmp_path, tiny_weights, monkeypatch) -> None:
    gt, frames = make_custom(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = evaluate(tiny_weights, gt, frames, blocker / "eval")
    assert result.exit_code == 1 and len(error_lines(result)) == 1, result.output
    assert error_lines(result)[0].startswith(f"clipvis: error: {blocker}") and "output not writable" in result.stderr

    bad_gt = tmp_path / "bad.json"
    bad_gt.write_text('{"videos": [{"id": 1}], "categories": []')
    result = evaluate(tiny_weights, bad_gt, frames, tmp_path / "eval-bad")
    assert result.exit_code == 1 and len(error_lines(result)) == 1 and "not valid JSON" in result.stderr
    bad_gt.write_text('{"videos": [{"id": "x"}], "categories": [{"id": 1, "name": "a"}], "annotations": []}')
    result = evaluate(tiny_weights, bad_gt, frames, tmp_path / "eval-bad")
    assert result.exit_code == 1 and error_lines(result) == [
        f"clipvis: error: {bad_gt}: videos[0] has no integer 'id'"
    ]

    from clipvis.model.predictor import VideoPredictor

    def out_of_memory(self):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB\nsee documentation")

    monkeypatch.setattr(VideoPredictor, "new_video", out_of_memory)
    result = evaluate(tiny_weights, gt, frames, tmp_path / "eval-oom")
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"clipvis: error: {frames / f'v{vid}'}: video {vid}: CUDA out of memory. Tried to allocate 20.00 GiB see "
        "documentation"
        for vid in (1, 2)
    ]
    assert "Traceback" not in result.output


def test_per_video_cache_never_deletes_foreign_files(tmp_path, tiny_weights) -> None:
    gt, frames = make_custom(tmp_path)
    out = tmp_path / "eval"
    (out / "per_video").mkdir(parents=True)
    (out / "per_video" / "notes.txt").write_text("mine")
    result = evaluate(tiny_weights, gt, frames, out)
    assert result.exit_code == 1
    assert error_lines(result) == [
        f"clipvis: error: {out / 'per_video'}: exists and was not made by clipvis evaluate (no cache.json); nothing "
        "was deleted. Choose another --output, or empty that folder."
    ]
    assert (out / "per_video" / "notes.txt").read_text() == "mine"
    assert [p.name for p in (out / "per_video").iterdir()] == ["notes.txt"]  # no .clipvis.lock left there either

    (out / "per_video" / "notes.txt").unlink()
    assert evaluate(tiny_weights, gt, frames, out).exit_code == 0
    (out / "per_video" / "notes.txt").write_text("mine")
    (out / "per_video" / ".1.abcd1234.tmp.json").write_text("[")  # left by a killed run
    (out / ".results.x9y8z7w6.tmp.json").write_text("[")
    (out / ".notes.x9y8.tmp.txt").write_text("someone else's")
    stamp = out / "per_video" / "cache.json"
    stamp.write_text(json.dumps({"identity": "from another checkpoint"}))
    before = (out / "per_video" / "1.json").stat().st_mtime_ns
    result = evaluate(tiny_weights, gt, frames, out)
    assert result.exit_code == 0, result.output
    assert "2 videos run, 0 reused" in result.stderr  # the key changed: clipvis' own files were redone
    assert (out / "per_video" / "notes.txt").read_text() == "mine"
    assert (out / "per_video" / "1.json").stat().st_mtime_ns != before
    assert not (out / "per_video" / ".1.abcd1234.tmp.json").exists()
    assert not (out / ".results.x9y8z7w6.tmp.json").exists()
    assert (out / ".notes.x9y8.tmp.txt").exists()  # not a name evaluate writes: left alone


def test_second_evaluation_into_a_busy_folder(tmp_path, tiny_weights) -> None:
    gt, frames = make_custom(tmp_path)
    out = tmp_path / "eval"
    with FolderLock(out / "per_video"):  # another process is evaluating into out/
        result = evaluate(tiny_weights, gt, frames, out)
    assert result.exit_code == 1
    [line] = error_lines(result)
    assert line.startswith(f"clipvis: error: {out / 'per_video'}: another clipvis process is writing here (pid ")
    assert not (out / "per_video" / "1.json").exists()


def test_an_evaluation_interrupted_before_any_video_keeps_nothing_and_says_so(tmp_path, tiny_weights,
                                                                              monkeypatch) -> None:
    """Ctrl-C while the model loaded said "finished videos are kept in OUT/per_video", a folder that did not exist."""
    import clipvis.cli.dataset_evaluation as dataset_evaluation

    gt, frames = make_custom(tmp_path)
    out = tmp_path / "out"

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_evaluation, "load_predictor", interrupted)
    result = evaluate(tiny_weights, gt, frames, out)
    assert result.exit_code == 130 and error_lines(result) == ["clipvis: error: interrupted; nothing was scored"]
    assert not (out / "per_video").exists()


@pytest.mark.parametrize("signum", [None, 15])
def test_an_interrupted_evaluation_says_so_and_a_rerun_resumes(tmp_path, tiny_weights, monkeypatch, signum) -> None:
    """Ctrl-C or a scheduler's SIGTERM ended evaluate with exit 130/143 and no line at all."""
    from clipvis.cli import dataset_inference
    from clipvis.cli.launcher import Terminated

    gt, frames = make_custom(tmp_path)
    out = tmp_path / "out"
    original = dataset_inference.DatasetInference.run_video
    calls = []

    def interrupted_at_the_second(self, video):
        calls.append(video.id)
        if len(calls) == 2:
            raise KeyboardInterrupt if signum is None else Terminated(signum)
        return original(self, video)

    with monkeypatch.context() as patch:
        patch.setattr(dataset_inference.DatasetInference, "run_video", interrupted_at_the_second)
        result = evaluate(tiny_weights, gt, frames, out)
    assert result.exit_code == (130 if signum is None else 143), result.output
    assert error_lines(result) == [f"clipvis: error: interrupted; nothing was scored (finished videos are kept in "
                                   f"{out / 'per_video'}, a rerun resumes)"]
    again = evaluate(tiny_weights, gt, frames, out)
    assert again.exit_code == 0 and "reused" in again.stderr


def test_scores_are_not_written_over_another_evaluate_output_folders_file(tmp_path, tiny_weights) -> None:
    """`evaluate --results R --gt G --json OUT/metrics.json` into another run's output folder was accepted (a metrics
    file evaluate wrote), and that folder then refused its next run: "changed since clipvis evaluate wrote it"."""
    gt, frames = make_custom(tmp_path)
    out = tmp_path / "out"
    assert evaluate(tiny_weights, gt, frames, out).exit_code == 0
    scored = CliRunner().invoke(app, ["evaluate", "--results", str(out / "results.json"), "--gt", str(gt),
                                      "--json", str(out / "metrics.json")])
    assert scored.exit_code == 2 and "is a file of the evaluate output folder" in scored.stderr
    again = evaluate(tiny_weights, gt, frames, out)
    assert again.exit_code == 0, again.output
    elsewhere = CliRunner().invoke(app, ["evaluate", "--results", str(out / "results.json"), "--gt", str(gt),
                                         "--json", str(tmp_path / "mine.json")])
    assert elsewhere.exit_code == 0 and (tmp_path / "mine.json").is_file()
    # and a run's own --json in its own folder is still its own
    own = CliRunner().invoke(app, ["evaluate", "--gt", str(gt), "--frames", str(frames), "--weights", str(tiny_weights),
                                   "-o", str(out), "--device", "cpu", "--json", str(out / "metrics.json")])
    assert own.exit_code == 0, own.output
