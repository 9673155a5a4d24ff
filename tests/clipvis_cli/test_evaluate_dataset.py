"""`clipvis evaluate --dataset` end to end: a tiny LV-VIS-layout dataset and a tiny random checkpoint."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zipfile
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from clipvis.cli import datasets
from clipvis.cli.app import app

CATEGORIES = [
    {"id": 1, "name": "person", "partition": 0},
    {"id": 2, "name": "aerosol_can", "partition": 1},
    {"id": 3, "name": "red_panda", "partition": 2},
]


@pytest.fixture(autouse=True)
def _no_downloads(isolated_cache):
    """Every test here runs with a private cache and no network."""


@pytest.fixture(autouse=True)
def _registered_category_counts_of_the_fixtures(monkeypatch):
    """The GT files made here list 3 (LV-VIS) and 2 (BURST) categories where the benchmarks have 1196 and 482:
    registered so here, so that only the test of that warning (which sets the real count) sees it."""
    for name, count in (("lvvis_val", len(CATEGORIES)), ("lvvis_test", len(CATEGORIES)), ("burst_val", 2)):
        register(monkeypatch, dataclasses.replace(datasets.DATASETS[name], num_classes=count))


def register(monkeypatch, spec: datasets.DatasetSpec) -> None:
    """`spec` in place of the registered dataset of its name, for one test (`DATASETS` is read-only)."""
    monkeypatch.setattr(datasets, "DATASETS", MappingProxyType({**datasets.DATASETS, spec.name: spec}))


def make_lvvis(root: Path, split: str = "val", annotation: str = "val_instances_.json") -> Path:
    """datasets/lvvis/<split>/JPEGImages/<video>/<frame>.jpg + the YouTube-VIS-style GT with RLE masks."""
    rng = np.random.default_rng(0)
    videos, annotations = [], []
    for vid, name in ((1, "00001"), (2, "00002")):
        folder = root / "lvvis" / split / "JPEGImages" / name
        folder.mkdir(parents=True)
        names, segs, areas = [], [], []
        for t in range(3):
            frame = rng.integers(0, 50, (40, 56, 3), dtype=np.uint8)
            frame[8:24, 10 + 3 * t : 30 + 3 * t] = (220, 200, 30)
            Image.fromarray(frame).save(folder / f"{t:05d}.jpg")
            names.append(f"{name}\\{t:05d}.jpg" if vid == 2 else f"{name}/{t:05d}.jpg")  # backslashes occur too
            mask = np.zeros((40, 56), dtype=np.uint8)
            mask[8:24, 10 + 3 * t : 30 + 3 * t] = 1
            rle = mask_utils.encode(np.asfortranarray(mask))
            segs.append({"size": rle["size"], "counts": rle["counts"].decode()})
            areas.append(float(mask.sum()))
        videos.append({"id": vid, "width": 56, "height": 40, "length": 3, "file_names": names})
        annotations.append({"id": vid, "video_id": vid, "category_id": vid, "iscrowd": 0, "segmentations": segs,
                            "areas": areas, "bboxes": [None] * 3, "height": 40, "width": 56, "length": 3})
    gt = root / "lvvis" / split / annotation
    gt.write_text(json.dumps({"videos": videos, "categories": CATEGORIES, "annotations": annotations}))
    return gt


def evaluate(args: list[str]):
    return CliRunner().invoke(app, ["evaluate", *args], catch_exceptions=False)


def test_lvvis_val_end_to_end_and_resume(tmp_path, tiny_weights) -> None:
    data = tmp_path / "datasets"
    make_lvvis(data)
    out = tmp_path / "eval"
    args = ["--dataset", "lvvis_val", "--weights", str(tiny_weights), "--data-root", str(data), "-o", str(out),
            "--device", "cpu"]
    first = evaluate(args)
    assert first.exit_code == 0, first.output
    assert "2 videos run, 0 reused" in first.stderr
    logged = [line for line in first.stderr.splitlines() if line.startswith("clipvis: [")]
    assert len(logged) == 2 and all("JPEGImages" in line and "frames" in line for line in logged), logged
    results = json.loads((out / "results.json").read_text())
    assert {r["video_id"] for r in results} == {1, 2}
    assert len(results) == 2 * min(50, 6 * 3)  # official mode: top 50 of Q x C per video (Q = 6)
    for entry in results:
        assert entry["category_id"] in (1, 2, 3) and len(entry["segmentations"]) == 3
        assert all(mask_utils.decode(rle).shape == (40, 56) for rle in entry["segmentations"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "lvvis"
    assert 0.0 <= metrics["metrics"]["AP"] <= 1.0
    assert "AP" in first.stdout and "novel" in first.stdout
    # Interrupted run: one per-video result lost -> only that video is recomputed, same results.
    (out / "per_video" / "2.json").unlink()
    second = evaluate(args)
    assert second.exit_code == 0 and "1 videos run, 1 reused" in second.stderr
    assert json.loads((out / "results.json").read_text()) == results
    # A different vocabulary/weights/option invalidates the cache.
    third = evaluate([*args, "--max-videos", "1"])
    assert third.exit_code == 0
    assert json.loads((out / "results.json").read_text()) == [r for r in results if r["video_id"] == 1]
    # --max-videos is scored on the videos run: with perfect predictions for video 1, AP is 1 (the objects of
    # video 2, never run, are not counted as missed).
    gt = json.loads((data / "lvvis" / "val" / "val_instances_.json").read_text())
    truth = gt["annotations"][0]
    perfect = [{"video_id": 1, "category_id": truth["category_id"], "score": 1.0,
                "segmentations": truth["segmentations"]}]
    cached = json.loads((out / "per_video" / "1.json").read_text())
    (out / "per_video" / "1.json").write_text(json.dumps({"key": cached["key"], "results": perfect}))
    fourth = evaluate([*args, "--max-videos", "1"])
    assert fourth.exit_code == 0 and "0 videos run, 1 reused" in fourth.stderr, fourth.output
    assert "scored against the ground truth of the 1 video(s) run" in fourth.stderr
    assert [v["id"] for v in json.loads((out / "ground_truth_first_1.json").read_text())["videos"]] == [1]
    assert json.loads((out / "metrics.json").read_text())["metrics"]["AP"] == pytest.approx(1.0)

    # Cached results are the frames' and the category ids': other frames (another copy of the dataset, frames
    # extracted again) or renumbered category ids run the video again; they were reused without a word.
    frame = next((data / "lvvis" / "val" / "JPEGImages").rglob("*.jpg"))
    os.utime(frame, ns=(frame.stat().st_atime_ns, frame.stat().st_mtime_ns + 10**9))
    fifth = evaluate([*args, "--max-videos", "1"])
    assert fifth.exit_code == 0 and "1 videos run, 0 reused" in fifth.stderr, fifth.output
    gt_path = data / "lvvis" / "val" / "val_instances_.json"
    for category in gt["categories"]:
        category["id"] += 10
    for annotation in gt["annotations"]:
        annotation["category_id"] += 10
    gt_path.write_text(json.dumps(gt))
    sixth = evaluate([*args, "--max-videos", "1"])
    assert sixth.exit_code == 0 and "1 videos run, 0 reused" in sixth.stderr, sixth.output
    assert {r["category_id"] for r in json.loads((out / "results.json").read_text())} <= {11, 12, 13}
    # A run over every video leaves no GT of an earlier --max-videos run beside its results.json (that pair given
    # to --results/--gt would fail, or score a part).
    assert (out / "ground_truth_first_1.json").is_file()
    seventh = evaluate(args)
    assert seventh.exit_code == 0, seventh.output
    assert not list(out.glob("ground_truth_first_*"))


def test_the_cache_knows_the_weights_by_their_resolved_path(tmp_path, tiny_weights, monkeypatch) -> None:
    """The per-video cache survives the weights typed another way: relative in their folder, then absolute from
    elsewhere."""
    data = tmp_path / "datasets"
    make_lvvis(data)
    out = tmp_path / "eval"
    args = ["--dataset", "lvvis_val", "--data-root", str(data), "-o", str(out), "--device", "cpu"]
    monkeypatch.chdir(tiny_weights.parent)
    first = evaluate([*args, "--weights", tiny_weights.name])
    assert first.exit_code == 0 and "2 videos run, 0 reused" in first.stderr, first.output
    monkeypatch.chdir(tmp_path)
    second = evaluate([*args, "--weights", str(tiny_weights)])
    assert second.exit_code == 0 and "0 videos run, 2 reused" in second.stderr, second.output
    assert json.loads((out / "per_video" / "cache.json").read_text())["weights"] == str(tiny_weights.resolve())


def test_split_without_public_gt_writes_server_zip(tmp_path, tiny_weights) -> None:
    data = tmp_path / "datasets"
    make_lvvis(data, split="test", annotation="test_instances.json")
    out = tmp_path / "eval"
    result = evaluate(["--dataset", "lvvis_test", "--weights", str(tiny_weights), "--data-root", str(data),
                       "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    zips = list(out.glob("*.zip"))
    assert len(zips) == 1 and "Codabench" in result.stderr
    with zipfile.ZipFile(zips[0]) as archive:
        assert json.loads(archive.read("results.json")) == json.loads((out / "results.json").read_text())
    part = evaluate(["--dataset", "lvvis_test", "--weights", str(tiny_weights), "--data-root", str(data),
                     "-o", str(out), "--device", "cpu", "--max-videos", "1"])
    assert part.exit_code == 0 and "holds 1 of the 2 videos (--max-videos)" in part.stderr, part.output
    assert "Codabench" not in part.stderr  # a part is no submission: not told to upload it
    metrics = evaluate(["--dataset", "LVVIS-test", "--weights", str(tiny_weights), "--data-root", str(data),
                        "-o", str(out), "--json", str(tmp_path / "m.json")])  # the name as the library takes it
    assert metrics.exit_code == 2 and "lvvis_test has no public ground truth" in metrics.output  # not a silent no-op
    # A rerun that fails (a frame gone) leaves no zip of an earlier run with other settings to be uploaded by mistake
    next((data / "lvvis" / "test" / "JPEGImages").rglob("*.jpg")).unlink()
    failed = evaluate(["--dataset", "lvvis_test", "--weights", str(tiny_weights), "--data-root", str(data),
                       "-o", str(out), "--device", "cpu", "--precision", "bf16"])
    assert failed.exit_code == 1 and not list(out.glob("*.zip")), failed.output


def test_custom_data_without_annotations_or_frames_folder_stops_before_the_model(tmp_path, tiny_weights) -> None:
    """A GT without annotations was 'scored' as a table of dashes (exit 0); a --frames folder that does not exist
    gave one line per video after the model loaded."""
    gt = make_lvvis(tmp_path / "d")
    frames = gt.parent / "JPEGImages"
    args = ["--weights", str(tiny_weights), "--device", "cpu", "-o", str(tmp_path / "out")]
    missing = evaluate(["--gt", str(gt), "--frames", str(tmp_path / "nope"), *args])
    assert missing.exit_code == 1 and missing.stderr.strip() == f"clipvis: error: --frames {tmp_path / 'nope'}: " \
        "folder not found", missing.output
    bare = json.loads(gt.read_text())
    bare["annotations"] = None
    empty = tmp_path / "valid.json"
    empty.write_text(json.dumps(bare))
    unscored = evaluate(["--gt", str(empty), "--frames", str(frames), *args])
    assert unscored.exit_code == 1 and "no annotations, so nothing can be scored" in unscored.stderr
    assert not (tmp_path / "out").exists()


def test_a_frames_folder_holding_no_gt_video_is_one_line_before_the_model(tmp_path, tiny_weights, monkeypatch):
    """--frames naming a folder that holds none of the GT's videos (a wrong folder, an empty JPEGImages) loaded the
    model, then printed one error line per video (~800 for LV-VIS val) and left a per_video/ folder."""
    from clipvis.cli import dataset_evaluation

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(dataset_evaluation, "load_predictor", no_model)
    data = tmp_path / "datasets"
    gt = make_lvvis(data)
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    args = ["--weights", str(tiny_weights), "--device", "cpu", "-o", str(tmp_path / "out")]
    custom = evaluate(["--gt", str(gt), "--frames", str(wrong), *args])
    assert custom.exit_code == 1, custom.output
    assert custom.stderr.splitlines() == [
        f"clipvis: error: --frames {wrong}: none of the 2 GT videos has its frames there (the first, video 1: frame "
        f"{wrong / '00001' / '00000.jpg'} listed in the GT is missing); nothing was run"]
    part = evaluate(["--gt", str(gt), "--frames", str(wrong), *args, "--max-videos", "1"])
    assert part.exit_code == 1 and "none of the first 1 GT videos (--max-videos 1) has" in part.stderr, part.output
    for video in (data / "lvvis" / "val" / "JPEGImages").iterdir():  # a dataset's frames folder, emptied
        shutil.rmtree(video)
    named = evaluate(["--dataset", "lvvis_val", "--data-root", str(data), *args])
    frames = data / "lvvis" / "val" / "JPEGImages"
    said = f"clipvis: error: lvvis_val's frames folder {frames}: none of the 2 GT videos has its frames there"
    assert named.exit_code == 1 and named.stderr.startswith(said), named.output
    assert len(named.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_frames_folder_holding_some_gt_videos_runs_them(tmp_path, tiny_weights) -> None:
    """Only where not one video is found does the run stop before the model: each missing one is its own line."""
    gt = make_lvvis(tmp_path / "d")
    shutil.rmtree(gt.parent / "JPEGImages" / "00002")
    result = evaluate(["--gt", str(gt), "--frames", str(gt.parent / "JPEGImages"), "--weights", str(tiny_weights),
                       "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    assert "00002/00000.jpg listed in the GT is missing" in result.stderr
    assert "1 video(s) of" in result.stderr and "1 run, 0 reused" in result.stderr
    assert (tmp_path / "out" / "per_video" / "1.json").is_file()


def test_custom_gt_and_frames(tmp_path, tiny_weights) -> None:
    gt = make_lvvis(tmp_path / "d")
    frames = gt.parent / "JPEGImages"
    fixed = json.loads(gt.read_text())  # LV-VIS style names with Windows separators, as --dataset lvvis_val takes
    assert any("\\" in name for video in fixed["videos"] for name in video["file_names"])
    result = evaluate(["--gt", str(gt), "--frames", str(frames), "--weights", str(tiny_weights),
                       "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "metrics.json").is_file()
    # A malformed annotation stops the run before any video runs (it was found after all of them had run).
    del fixed["annotations"][0]["category_id"]
    gt.write_text(json.dumps(fixed))
    result = evaluate(["--gt", str(gt), "--frames", str(frames), "--weights", str(tiny_weights),
                       "-o", str(tmp_path / "out2"), "--device", "cpu"])
    assert result.exit_code == 1 and "annotations[0] needs integer 'id', 'video_id' and 'category_id'" in result.stderr
    assert "videos run" not in result.stderr and not list((tmp_path / "out2").rglob("1.json"))


def test_videos_listing_the_same_frame_files_are_warned_about_before_the_model_runs(tmp_path, tiny_weights) -> None:
    """GT videos whose file_names have no folder (00000.jpg in each) all ran on the same frames of --frames, without
    a word; a warning names them and the shared frame (before the model runs, and in metrics.json)."""
    gt = make_lvvis(tmp_path / "d")
    frames = tmp_path / "flat"
    frames.mkdir()
    document = json.loads(gt.read_text())
    for video in document["videos"]:
        video["file_names"] = [name.replace("\\", "/").split("/")[-1] for name in video["file_names"]]
    for name in document["videos"][0]["file_names"]:
        shutil.copy(gt.parent / "JPEGImages" / "00001" / name, frames / name)
    gt.write_text(json.dumps(document))
    result = evaluate(["--gt", str(gt), "--frames", str(frames), "--weights", str(tiny_weights),
                       "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    warning = (f"{gt}: videos 1 and 2 both list the frame {frames / '00000.jpg'} (3 frame file(s) listed by 2 "
               "videos): those videos run on the same frames; give each video's file_names a folder of its own "
               "(<video>/<frame>.jpg) unless they are meant to share them")
    assert [line for line in result.stderr.splitlines() if "warning" in line] == [f"clipvis: warning: {warning}"]
    assert result.stderr.index(warning) < result.stderr.index("[1/2]")  # before any video runs
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["warnings"] == [warning]


def test_a_config_the_checkpoint_contradicts_is_recorded_with_the_metrics(tmp_path, tiny_weights) -> None:
    """A --config the checkpoint contradicts (the model runs with the checkpoint's value) was said on stderr alone
    as the model loaded: metrics.json's "warnings" held the other warnings but not this one, which changes what its
    numbers are the numbers of."""
    gt = make_lvvis(tmp_path / "d")
    config = tmp_path / "cfg.yaml"
    config.write_text("MODEL:\n  MASK_FORMER:\n    HIDDEN_DIM: 512\n")
    result = evaluate(["--gt", str(gt), "--frames", str(gt.parent / "JPEGImages"), "--weights", str(tiny_weights),
                       "--config", str(config), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    said = [line.removeprefix("clipvis: warning: ") for line in result.stderr.splitlines() if "HIDDEN_DIM" in line]
    assert len(said) == 1 and said[0].startswith("config says HIDDEN_DIM 512 but the checkpoint has "), result.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["warnings"] == said


def test_missing_dataset_says_where_to_put_it(tmp_path, tiny_weights) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--dataset", "lvvis_val", "--weights", str(tiny_weights),
                                      "--data-root", str(tmp_path / "nothing"), "--device", "cpu"])
    assert result.exit_code == 1
    assert "val_instances" in result.stderr and str(tmp_path / "nothing") in result.stderr
    unknown = CliRunner().invoke(app, ["evaluate", "--dataset", "nope", "--weights", str(tiny_weights)])
    assert unknown.exit_code == 2


def make_burst(root: Path) -> Path:
    """datasets/burst/val/<dataset>/<sequence>/<frame>.jpg + the b2y ground truth (categories with LVIS frequency
    and BURST split, annotations without areas, ids from 0)."""
    categories = [{"id": 1, "name": "person", "frequency": "f", "split": "common"},
                  {"id": 2, "name": "red_panda", "frequency": "r", "split": "uncommon"}]
    videos, annotations = [], []
    for vid, sequence in ((1, "ArgoVerse/seq_a"), (2, "BDD/seq_b")):
        folder = root / "burst" / "val" / sequence
        folder.mkdir(parents=True)
        names, segmentations = [], []
        for t in range(2):
            frame = np.full((40, 56, 3), 30, np.uint8)
            frame[8:24, 10 + 3 * t : 30 + 3 * t] = (220, 200, 30)
            Image.fromarray(frame).save(folder / f"frame{t:04d}.jpg")
            names.append(f"{sequence}/frame{t:04d}.jpg")
            mask = np.zeros((40, 56), np.uint8)
            mask[8:24, 10 + 3 * t : 30 + 3 * t] = 1
            rle = mask_utils.encode(np.asfortranarray(mask))
            segmentations.append({"size": rle["size"], "counts": rle["counts"].decode()})
        videos.append({"id": vid, "width": 56, "height": 40, "length": 2, "file_names": names})
        annotations.append({"id": len(annotations), "video_id": vid, "category_id": vid, "width": 56, "height": 40,
                            "segmentations": segmentations, "bboxes": [None] * 2})
    gt = root / "burst" / "val" / "b2y_val.json"
    gt.write_text(json.dumps({"videos": videos, "categories": categories, "annotations": annotations}))
    return gt


def test_a_benchmark_is_scored_with_its_own_protocol(tmp_path, tiny_weights) -> None:
    """BURST's categories carry no LV-VIS partition: scored by the GT's look alone it was YouTube-VIS's protocol
    (other numbers, no base/novel/common/uncommon blocks). `--dataset burst_val` scores with BURST's evaluator."""
    data = tmp_path / "datasets"
    make_burst(data)
    out = tmp_path / "eval"
    result = evaluate(["--dataset", "burst_val", "--weights", str(tiny_weights), "--data-root", str(data),
                       "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "burst", metrics
    assert "protocol burst" in result.stdout


def test_metrics_json_is_always_written_with_what_produced_it_and_a_failed_run_leaves_no_stale_scores(
    tiny_weights, tmp_path
) -> None:
    """--json replaced OUTPUT/metrics.json (an older one stayed beside a newer results.json, with nothing saying
    which weights made it); a run with a failed video left the previous run's results.json and metrics.json."""
    data = tmp_path / "datasets"
    make_lvvis(data)
    out = tmp_path / "eval"
    args = ["--dataset", "lvvis_val", "--weights", str(tiny_weights), "--data-root", str(data), "-o", str(out),
            "--device", "cpu"]
    result = evaluate([*args, "--json", str(tmp_path / "mine.json")])
    assert result.exit_code == 0, result.output
    for path in (out / "metrics.json", tmp_path / "mine.json"):
        metrics = json.loads(path.read_text())
        assert metrics["weights"] == str(tiny_weights) and metrics["dataset"] == "lvvis_val"
        assert metrics["max_videos"] is None and "AP" in metrics["metrics"]
    next((data / "lvvis" / "val" / "JPEGImages").rglob("*.jpg")).unlink()  # a video fails now
    failed = evaluate([*args, "--json", str(tmp_path / "mine.json")])
    assert failed.exit_code == 1
    assert not (out / "results.json").exists() and not (out / "metrics.json").exists()
    assert not (tmp_path / "mine.json").exists()


def write_moving_box_video(path: Path) -> Path:
    """6 frames, 56x40, a red box moving right: a video segment read."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 56, 40, "yuv420p"
        for t in range(6):
            image = np.full((40, 56, 3), 30, np.uint8)
            image[5:25, 4 + 3 * t : 24 + 3 * t] = (230, 40, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_segment_ytvis_json_corrected_is_a_ground_truth_whose_frames_come_from_its_video(tiny_weights, tmp_path):
    """The loop an annotation team runs: segment a video, correct its ytvis.json, score a checkpoint on it. The
    file names frames (`clip/00000.jpg`) nothing extracted and its annotations have no ids: evaluate failed on both.
    Frames not found under --frames are decoded from the video segment recorded (every Nth, as it ran)."""

    video = tmp_path / "clip.mp4"
    write_moving_box_video(video)
    segmented = CliRunner().invoke(app, ["segment", str(video), "--vocab", "box,sky", "--weights", str(tiny_weights),
                                         "-o", str(tmp_path / "seg"), "--formats", "ytvis", "--stride", "2",
                                         "--device", "cpu"])
    assert segmented.exit_code == 0, segmented.output
    gt = tmp_path / "seg" / "clip" / "ytvis.json"
    document = json.loads(gt.read_text())
    for annotation in document["annotations"]:  # "corrected": a person kept what was right
        annotation.pop("score")
    document["annotations"] = document["annotations"][:2]
    gt.write_text(json.dumps(document))
    args = ["--gt", str(gt), "--frames", str(tmp_path / "no_frames_here"), "--weights", str(tiny_weights),
            "-o", str(tmp_path / "eval"), "--device", "cpu"]
    (tmp_path / "no_frames_here").mkdir()
    result = evaluate(args)
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results and all(len(r["segmentations"]) == 3 for r in results)  # frames 0, 2, 4
    assert "1 videos run, 0 reused" in result.stderr
    again = evaluate(args)
    assert again.exit_code == 0 and "0 videos run, 1 reused" in again.stderr  # cached by the video file


@pytest.mark.parametrize("keep_indices", [True, False])
def test_a_corrected_ytvis_json_with_a_frame_deleted_is_scored_on_the_frames_it_lists(tiny_weights, tmp_path,
                                                                                     keep_indices):
    """A person deleted frame 2 from segment's ytvis.json (and a tool may drop frame_indices): evaluate refused it
    ("frame .../00000.jpg listed in the GT is missing", frames 0, 1, 3, ... being no regular stride, and without
    frame_indices no frame at all). The frames its names number are decoded from the recorded video, those alone:
    the results equal segment's on a video of just those frames."""
    import av

    from clipvis.cli.video_io import VideoReader

    video = tmp_path / "clip.mp4"
    write_moving_box_video(video)
    kept = [0, 1, 3, 4, 5]
    decoded = dict(VideoReader(video))
    alone = tmp_path / "alone" / "clip.mkv"  # the kept frames as clipvis decodes them, losslessly
    alone.parent.mkdir()
    with av.open(str(alone), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 56, 40, "bgr0"
        for index in kept:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(decoded[index], format="rgb24")))
        container.mux(stream.encode())
    common = ["--vocab", "box,sky", "--weights", str(tiny_weights), "--formats", "ytvis", "--device", "cpu",
              "--exact"]
    for source, out in ((video, "seg"), (alone, "seg_alone")):
        segmented = CliRunner().invoke(app, ["segment", str(source), "-o", str(tmp_path / out), *common])
        assert segmented.exit_code == 0, segmented.output
    gt = tmp_path / "seg" / "clip" / "ytvis.json"
    document = json.loads(gt.read_text())
    entry = document["videos"][0]
    entry["file_names"] = [entry["file_names"][i] for i in kept]
    entry["length"] = len(kept)
    if keep_indices:
        entry["frame_indices"] = kept
    else:
        del entry["frame_indices"]
    for annotation in document["annotations"]:
        annotation.pop("score")
        for key in ("segmentations", "areas", "bboxes"):
            if isinstance(annotation.get(key), list):
                annotation[key] = [annotation[key][i] for i in kept]
    gt.write_text(json.dumps(document))
    (tmp_path / "no_frames_here").mkdir()
    result = evaluate(["--gt", str(gt), "--frames", str(tmp_path / "no_frames_here"), "--weights",
                       str(tiny_weights), "-o", str(tmp_path / "eval"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    expected = json.loads((tmp_path / "seg_alone" / "clip" / "ytvis.json").read_text())["annotations"]
    assert len(results) == len(expected) > 0
    for got, want in zip(results, expected, strict=True):
        assert got["score"] == pytest.approx(want["score"], rel=1e-5)
        assert [mask_utils.decode(m).sum() if m else 0 for m in got["segmentations"]] == [
            mask_utils.decode(m).sum() if m else 0 for m in want["segmentations"]]


def test_a_gt_whose_recorded_video_is_gone_says_so(tiny_weights, tmp_path) -> None:
    """The error named a frame no one meant to be on disk ("frame .../00000.jpg listed in the GT is missing")."""
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({
        "videos": [{"id": 1, "height": 40, "width": 56, "length": 2, "file_names": ["clip/00000.jpg", "clip/00001.jpg"],
                    "source": str(tmp_path / "moved.mp4"), "frame_indices": [0, 1]}],
        "categories": [{"id": 1, "name": "box"}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [None, None]}],
    }))
    (tmp_path / "frames").mkdir()
    result = evaluate(["--gt", str(gt), "--frames", str(tmp_path / "frames"), "--weights", str(tiny_weights),
                       "-o", str(tmp_path / "eval"), "--device", "cpu"])
    assert result.exit_code == 1
    assert f"listed in the GT is missing, and so is the input it was segmented from ({tmp_path / 'moved.mp4'})" in (
        result.output), result.output


def test_an_image_folders_corrected_ytvis_json_takes_its_frames_from_the_folder_segment_read(tiny_weights, tmp_path):
    """The same loop over a folder of frames: its file_names (`<folder>/<image>`, or `<folder>-2/...` for a second
    input of that name) are under no --frames that holds the folder, and the image folder segment recorded was not
    used (only a recorded video file was): "frame ... listed in the GT is missing"."""
    from PIL import Image

    folder = tmp_path / "frames" / "clip"
    folder.mkdir(parents=True)
    for t in range(4):
        image = np.full((40, 56, 3), 30, np.uint8)
        image[5:25, 4 + 3 * t : 24 + 3 * t] = (230, 40, 40)
        Image.fromarray(image).save(folder / f"{t + 1}.png")
    segmented = CliRunner().invoke(app, ["segment", str(folder), "--vocab", "box,sky", "--weights", str(tiny_weights),
                                         "-o", str(tmp_path / "seg"), "--formats", "ytvis", "--device", "cpu"])
    assert segmented.exit_code == 0, segmented.output
    gt = tmp_path / "seg" / "clip" / "ytvis.json"
    document = json.loads(gt.read_text())
    for annotation in document["annotations"]:
        annotation.pop("score")
    document["annotations"] = document["annotations"][:2]
    document["videos"][0]["file_names"] = [f"clip-2/{t + 1}.png" for t in range(4)]  # as a second input's were
    gt.write_text(json.dumps(document))
    result = evaluate(["--gt", str(gt), "--frames", str(folder), "--weights", str(tiny_weights),
                       "-o", str(tmp_path / "eval"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results and all(len(r["segmentations"]) == 4 for r in results)


def test_files_in_output_that_evaluate_did_not_write_are_never_replaced(tmp_path, tiny_weights) -> None:
    """-o's results.json, metrics.json or server zip that evaluate did not write (a user's, the official code's
    output/inference/results.json) were overwritten; now the run stops with one line before the model loads."""
    data = tmp_path / "datasets"
    make_lvvis(data)
    make_lvvis(data, split="test", annotation="test_instances.json")
    args = ["--weights", str(tiny_weights), "--data-root", str(data), "--device", "cpu"]
    theirs = tmp_path / "inference"
    theirs.mkdir()
    for name, text in (("results.json", '["my results"]'), ("metrics.json", '{"mine": 1}'),
                       ("lvvis_test_results.zip", "a zip of mine")):
        (theirs / name).write_text(text)
        dataset = "lvvis_test" if name.endswith(".zip") else "lvvis_val"
        result = evaluate(["--dataset", dataset, *args, "-o", str(theirs)])
        assert result.exit_code == 1, result.output
        assert result.stderr.strip().splitlines() == [
            f"clipvis: error: {theirs / name}: exists and was not written by clipvis evaluate; nothing was changed "
            "(move it away, or choose another --output)"
        ]
        assert (theirs / name).read_text() == text and not (theirs / "per_video").exists()  # before the model ran
        (theirs / name).unlink()
    ok = tmp_path / "eval"
    assert evaluate(["--dataset", "lvvis_val", *args, "-o", str(ok)]).exit_code == 0
    assert evaluate(["--dataset", "lvvis_val", *args, "-o", str(ok), "--max-videos", "1"]).exit_code == 0  # its own
    assert (ok / "ground_truth_first_1.json").is_file()
    (ok / "metrics.json").write_text('{"edited": true}')  # changed by hand since evaluate wrote it
    edited = evaluate(["--dataset", "lvvis_val", *args, "-o", str(ok)])
    assert edited.exit_code == 1 and "metrics.json: changed since clipvis evaluate wrote it" in edited.stderr
    assert (ok / "metrics.json").read_text() == '{"edited": true}' and (ok / "results.json").is_file()
    (ok / "metrics.json").unlink()
    assert evaluate(["--dataset", "lvvis_val", *args, "-o", str(ok)]).exit_code == 0
    assert not (ok / "ground_truth_first_1.json").exists()  # the earlier run's, removed


def test_a_gt_repeating_category_names_is_evaluated_as_the_official_code_does(tmp_path, tiny_weights) -> None:
    """Category names equal case aside or after the official comma split ("car", "Car", "Car, red") stopped the
    run with "weights ...: duplicate class names in the vocabulary"; the official code builds one class per entry."""
    data = tmp_path / "datasets"
    gt = make_lvvis(data)
    document = json.loads(gt.read_text())
    document["categories"] = [{"id": 1, "name": "car", "partition": 0}, {"id": 2, "name": "Car, red", "partition": 1},
                              {"id": 3, "name": "Car", "partition": 2}]
    gt.write_text(json.dumps(document))
    out = tmp_path / "eval"
    result = evaluate(["--dataset", "lvvis_val", "--weights", str(tiny_weights), "--data-root", str(data), "-o",
                       str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    scored = json.loads((out / "results.json").read_text())
    assert {entry["category_id"] for entry in scored} == {1, 2, 3}  # every class of the three, by its own id
    assert json.loads((out / "metrics.json").read_text())["per_category_ap"].keys() == {"1", "2", "3"}


def test_a_benchmark_file_with_other_categories_is_warned_about_and_not_shown_beside_the_paper(
    tmp_path, tiny_weights, monkeypatch
) -> None:
    """An lvvis_val annotation file with 3 categories (filtered, re-converted) was scored with a 3-class vocabulary and
    printed beside the paper's AP for 1196 classes, only "3 categories" hinting at it."""
    from clipvis.cli.commands import evaluate as evaluate_command

    monkeypatch.setattr(evaluate_command, "published_numbers", lambda weights, dataset: {"AP": 19.5})
    registered = dataclasses.replace(datasets.DATASETS["lvvis_val"], num_classes=1196)  # as in the registry
    register(monkeypatch, registered)
    data = tmp_path / "datasets"
    gt = make_lvvis(data)
    args = ["--dataset", "lvvis_val", "--weights", str(tiny_weights), "--data-root", str(data), "--device", "cpu"]
    result = evaluate([*args, "-o", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("clipvis: warning:")]
    assert warnings == [f"clipvis: warning: {gt}: 3 categories, but lvvis_val (LV-VIS val) has 1196: scored with "
                        "this file's 3 as the vocabulary, not comparable with the paper's numbers (no paper column)"]
    # said before the model ran, and recorded with the metrics (metrics.json and --json had "warnings": [])
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["warnings"] == [warnings[0][18:]]
    assert "paper" not in result.stdout and "19.5" not in result.stdout
    assert "AP" in result.stdout

    # The registered count found: no warning, and the paper's number beside the run's.
    register(monkeypatch, dataclasses.replace(registered, num_classes=3))
    result = evaluate([*args, "-o", str(tmp_path / "eval-3")])
    assert result.exit_code == 0, result.output
    assert "clipvis: warning:" not in result.stderr
    assert "paper" in result.stdout and "19.5" in result.stdout


def test_a_benchmark_gt_without_annotations_stops_before_the_model(tmp_path, tiny_weights) -> None:
    """lvvis_val's file without annotations (the test split's, copied by mistake) ran every video, then printed a
    table of dashes, exit 0."""
    data = tmp_path / "datasets"
    gt = make_lvvis(data)
    document = json.loads(gt.read_text())
    del document["annotations"]
    gt.write_text(json.dumps(document))
    out = tmp_path / "eval"
    result = evaluate(["--dataset", "lvvis_val", "--weights", str(tiny_weights), "--data-root", str(data), "-o",
                       str(out), "--device", "cpu"])
    assert result.exit_code == 1 and not out.exists()
    assert result.stderr.splitlines() == [f"clipvis: error: {gt}: no annotations, so lvvis_val cannot be scored (the "
                                          "file of a split without public ground truth?)"]


def test_a_copy_of_an_evaluate_folder_with_new_file_times_is_not_refused_as_changed(tmp_path, tiny_weights) -> None:
    """`cp -r`, unzip or rsync without -t give evaluate's files new modification times: byte-identical, they were
    refused as changed. Their SHA-256 (recorded) says they are the same; an edit of the same size is still refused,
    and a record of an earlier version (size and time only) still needs the time."""
    data = tmp_path / "datasets"
    make_lvvis(data)
    args = ["--dataset", "lvvis_val", "--weights", str(tiny_weights), "--data-root", str(data), "--device", "cpu"]
    first = tmp_path / "eval"
    assert evaluate([*args, "-o", str(first)]).exit_code == 0
    copies = {}
    for name in ("copy", "edited", "earlier"):
        copies[name] = tmp_path / name
        shutil.copytree(first, copies[name], copy_function=shutil.copyfile)  # contents only, as cp -r
        for file in copies[name].rglob("*"):
            os.utime(file, ns=(10**18, 10**18))
    assert evaluate([*args, "-o", str(copies["copy"])]).exit_code == 0

    metrics = copies["edited"] / "metrics.json"
    text = metrics.read_text()
    metrics.write_text(text.replace("{", "[", 1))  # the same size, other bytes
    os.utime(metrics, ns=(10**18, 10**18))
    edited = evaluate([*args, "-o", str(copies["edited"])])
    assert edited.exit_code == 1 and "metrics.json: changed since clipvis evaluate wrote it" in edited.stderr

    stamp = copies["earlier"] / "per_video" / "cache.json"
    tree = json.loads(stamp.read_text())
    tree["outputs"] = {name: record[:2] for name, record in tree["outputs"].items()}
    stamp.write_text(json.dumps(tree))
    earlier = evaluate([*args, "-o", str(copies["earlier"])])
    assert earlier.exit_code == 1 and "changed since clipvis evaluate wrote it" in earlier.stderr


def test_results_json_is_written_without_its_whole_text_in_memory(tmp_path) -> None:
    """results.json (and each per-video file) was serialised whole, then encoded, before it was written: for a long
    video ~2x the file's size on top of the entries (1204 MB peak at that step for 5,000 frames, now 1086 MB). The
    bytes stay json.dumps' compact ones."""
    import tracemalloc

    from clipvis.cli.dataset_inference import DatasetInference

    entries = [{"video_id": 1, "score": 0.5 + track / 100, "category_id": 1,
                "segmentations": [{"size": [40, 56], "counts": f"{frame}x{track}abcdefghijklmnopqrstuv"}
                                  for frame in range(4000)]} for track in range(4)]
    text = json.dumps(entries, ensure_ascii=False, separators=(",", ":")) + "\n"
    tracemalloc.start()
    try:
        summary = DatasetInference._summarise(None, tmp_path, tmp_path, [], 1, 0, entries, [])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.results_path.read_text() == text
    assert peak < len(text) // 4, (peak, len(text))


def test_a_video_above_the_memory_limit_says_the_flag_that_fixes_it(tmp_path, tiny_weights, monkeypatch) -> None:
    """The streaming loop words its fix as a Python caller gives it (batch_frames=1): evaluate says its flag."""
    from clipvis.cli import memory

    gt = make_lvvis(tmp_path / "d")
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1000)
    result = CliRunner().invoke(app, ["evaluate", "--gt", str(gt), "--frames", str(gt.parent / "JPEGImages"),
                                      "--weights", str(tiny_weights), "-o", str(tmp_path / "out"), "--device", "cpu"])
    limits = [line for line in result.stderr.splitlines() if "frames need" in line]
    assert limits and all(line.endswith("of memory is available (try --batch-frames 1)") for line in limits), (
        result.stderr)
