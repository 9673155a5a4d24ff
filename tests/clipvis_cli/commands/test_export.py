"""`clipvis export --model W --to onnx`: the per-frame network of a tiny checkpoint as ONNX; onnxruntime reproduces
PyTorch on a batch size other than the export example's (dynamic batch axis), and the README's loop (ONNX frames +
Python matcher and scorer) gives the tracks the PyTorch predictor gives."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from clipvis.cli.app import app


def test_onnx_export_parity_and_the_readme_loop(tiny_weights, tmp_path, isolated_cache) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    path = tmp_path / "tiny.onnx"
    result = CliRunner().invoke(app, ["export", "--model", str(tiny_weights), "--to", "onnx", "--height", "64",
                                      "--width", "96", "--vocab", "cat,dog,kite", "-o", str(path)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "max abs diff" in result.stderr and result.stdout.strip() == str(path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    assert names == ["object_logits", "mask_logits", "ious", "query_embeds", "clip_dense", "clip_embeds",
                     "class_logits"]

    from clipvis.model import load_model
    from clipvis.model.onnx_export import FrameNetwork
    from clipvis.model.predictor import VideoPredictor
    from clipvis.model.scoring import StreamingVideoScorer
    from clipvis.model.temporal_matcher import TemporalMatcher

    model = load_model(tiny_weights)
    predictor = VideoPredictor(model, ["cat", "dog", "kite"], device="cpu")
    frames = torch.randn(3, 3, 64, 96)
    got = session.run(None, {"images": frames.numpy()})
    with torch.no_grad():
        want = FrameNetwork(model, predictor.text)(frames)
    diffs = {name: float(np.abs(g - w.numpy()).max()) for name, g, w in zip(names, got, want, strict=True)}
    print(f"tiny ONNX parity (batch 3, fp32): {diffs}")
    assert diffs["object_logits"] <= 1e-3 and diffs["class_logits"] <= 1e-3 and max(diffs.values()) <= 1e-3

    # The README's loop on a short video, against VideoPredictor (PyTorch end to end).
    video = np.random.default_rng(0).integers(0, 256, (6, 64, 96, 3), dtype=np.uint8)
    matcher = TemporalMatcher(model.config.memory_length, model.config.top_k)
    scorer = StreamingVideoScorer()
    kept = []  # README's mask step: each frame's aligned mask logits and its geometry
    for start in (0, 3):
        images, geometry = predictor.preprocessor(video[start : start + 3], torch.device("cpu"))
        assert geometry.padded == (64, 96)
        obj, masks, ious, embeds, dense, clip_embeds, class_logits = map(
            torch.from_numpy, session.run(None, {"images": images.numpy()}))
        logits = predictor.text.logits(clip_embeds)  # the free-vocabulary way (README)
        if model.mask_pooler.zero_logits_of_empty_masks:
            logits = logits.masked_fill(~clip_embeds.any(-1, keepdim=True), 0.0)
        assert torch.allclose(logits, class_logits, atol=1e-3)  # = the baked vocabulary's logits
        raw = model(images)
        assert torch.allclose(logits, model.classify(raw.clip_dense, raw.mask_logits, predictor.text), atol=1e-3)
        for b in range(images.shape[0]):
            perm = matcher.match(embeds[b]).permutation
            scorer.add_frame(obj[b][perm], logits[b][perm].softmax(-1), ious[b][perm], masks[b][perm])
            kept.append((masks[b][perm], geometry))
    selection = scorer.select(top_n=model.config.detections_per_video)
    session_torch = predictor.new_video()
    tracked = session_torch.push(video)
    reference = session_torch.finish()

    def frame_mask(logits: torch.Tensor, geometry) -> torch.Tensor:  # README, verbatim
        x = F.interpolate(logits[None, None], size=geometry.padded, mode="bilinear", align_corners=False)
        x = x[..., : geometry.resized[0], : geometry.resized[1]]
        x = F.interpolate(x, size=geometry.original, mode="bilinear", align_corners=False)
        return x[0, 0] > 0

    pixels = 0
    for n, track in enumerate(selection.queries[:5]):
        video_masks = [frame_mask(aligned[track], geometry) & ~selection.suppressed[n, t]
                       for t, (aligned, geometry) in enumerate(kept)]
        pixels += sum(int(mask.sum()) for mask in video_masks)
        want = [frame.masks[track] & ~torch.from_numpy(reference.instances[n].suppressed_frames[t:t + 1])
                for t, frame in enumerate(tracked)]
        assert all((got != ref).float().mean() < 1e-3 for got, ref in zip(video_masks, want, strict=True))
    assert pixels > 0
    assert [int(q) for q in selection.queries[:5]] == [i.track_id for i in reference.instances[:5]]
    assert [int(c) for c in selection.labels[:5]] == [i.label for i in reference.instances[:5]]
    assert np.allclose(selection.scores[:5].numpy(), [i.score for i in reference.instances[:5]], atol=1e-4)
    scorer.close()


def test_onnx_needs_a_model(tmp_path) -> None:
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "--model" in result.output
    assert not (tmp_path / "m.onnx").exists()


def test_onnx_to_a_folder_or_with_a_bad_config_fails_before_exporting(tiny_weights, tmp_path, monkeypatch) -> None:
    """`-o EXISTING_FOLDER` crashed with IsADirectoryError after the whole export and parity check."""
    pytest.importorskip("onnxruntime")
    import clipvis.cli.commands.export as export_command

    monkeypatch.setattr(export_command, "load_predictor", lambda options: pytest.fail("the model was loaded"))
    folder = tmp_path / "models"
    folder.mkdir()
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", str(folder)])
    assert result.exit_code == 1
    assert result.stderr.strip() == (f"clipvis: error: -o {folder}: is a folder; give the .onnx file to write "
                                     f"(e.g. -o {folder / 'clipvis.onnx'})")
    config = tmp_path / "c.yaml"
    config.write_text("TEST:\n  NUM_FRAME: 0\n")
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "--config", str(config),
                                      "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "memory_length (TEST.NUM_FRAME) must be a positive integer" in result.stderr


def test_a_frame_size_off_the_32_grid_names_the_flags(tiny_weights, tmp_path) -> None:
    """The command checks --height/--width itself (the library's message names its parameters)."""
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "--height", "100",
                                      "--width", "96", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "--height/--width must be multiples of 32 (got 100x96)" in result.output
    assert not (tmp_path / "m.onnx").exists()


def exported_frame_size(weights, tmp_path, option: str, value: int) -> tuple[int, int]:
    """The ``[H, W]`` of the images input of `clipvis export --to onnx` given ``option value`` alone; the size is
    also said on stderr."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = tmp_path / f"{option.strip('-')}{value}.onnx"
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(weights), option, str(value),
                                      "-o", str(path)])
    assert result.exit_code == 0, result.output
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[1].dim_value == 3
    size = dims[2].dim_value, dims[3].dim_value
    assert f"{size[0]}x{size[1]}" in result.stderr
    return size


def test_height_alone_gives_a_16_9_width(tiny_weights, tmp_path) -> None:
    """--height 128 exported 128x128: the default width came from the model's test short edge (64), not --height."""
    assert exported_frame_size(tiny_weights, tmp_path, "--height", 128) == (128, 256)  # 227.6 up to /32


def test_width_alone_gives_a_16_9_height_as_height_alone_gives_a_16_9_width(tiny_weights, tmp_path) -> None:
    """--width 256 exported 64x256 (the test short edge, whatever the width), where --height alone derives a 16:9
    width: each alone gives the other of a 16:9 frame, rounded up to a multiple of 32 (the padded size holds it)."""
    from clipvis.cli.commands.export import default_frame_size

    assert default_frame_size(480, None, None) == (480, 864)
    assert default_frame_size(480, 256, None) == (256, 480)  # 455.1 up to 480 (the README's example)
    assert default_frame_size(480, None, 480) == (288, 480)  # 270 up to 288
    assert default_frame_size(480, None, 864) == (512, 864)  # a 16:9 frame 864 wide is 486 high
    assert default_frame_size(480, None, 1280) == (736, 1280)  # 720 up to 736
    assert default_frame_size(480, 256, 864) == (256, 864)  # both given: as given
    # INPUT.MIN_SIZE_TEST 0 (frames at their own size): a 1280x720 video's padded size, as FramePreprocessor pads it
    # (the width from 720, not from the padded 736: 1312 fitted no 1280x720 frame)
    assert default_frame_size(0, None, None) == (736, 1280) and default_frame_size(0, 256, None) == (256, 480)
    # A short edge off the 32 grid: the width of a 16:9 frame 360 high (640), not 384 high (704: a 640x360 video,
    # padded to 384x640, did not fit); INPUT.MAX_SIZE_TEST shrinks the frame as the model shrinks it (160, 200:
    # 113x200, padded 128x224; the default was 160x288)
    assert default_frame_size(360, None, None) == (384, 640)
    assert default_frame_size(160, None, None, max_size=200) == (128, 224)
    assert default_frame_size(480, None, None, max_size=1333) == (480, 864)
    assert exported_frame_size(tiny_weights, tmp_path, "--width", 256) == (160, 256)  # 144 up to /32


def test_an_fp32_file_past_the_parity_bar_is_not_written(tiny_weights, tmp_path, monkeypatch) -> None:
    """The command printed the differences and exited 0 whatever they were (README's bar, 1e-3 on logits, was never
    applied): past it, an fp32 file is refused with one line and not left in place."""
    pytest.importorskip("onnxruntime")
    import clipvis.cli.exporters.onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "FP32_BAR", 1e-12)  # any real difference is past it
    path = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", str(path)])
    assert result.exit_code == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("clipvis: onnxruntime (fp32 file) vs PyTorch fp32 (batch 2, 64x128) max abs diff: ")
    assert lines[-1].startswith(f"clipvis: error: {path} not written: onnxruntime does not reproduce PyTorch on 2 "
                                "of 2 random frames: object_logits ")
    assert len(lines) == 2 and list(tmp_path.iterdir()) == []  # far past the bar: no more batches


def test_a_correct_file_with_a_value_at_a_threshold_is_written(golden_case, tmp_path) -> None:
    """The golden case1 checkpoint at 256x448: one pooling-mask pixel 9.3e-6 from 0 flips in onnxruntime on one random
    frame (clip_embeds 1.02e-3 past the 1e-3 bar there, all else ~1e-4), and the file was refused."""
    pytest.importorskip("onnxruntime")
    case = golden_case("case1")
    path = tmp_path / "c1.onnx"
    result = CliRunner().invoke(app, [
        "export", "--to", "onnx", "--model", str(case / "model.pth"), "--config", str(case / "official_config.yaml"),
        "--clip-config", str(case / "open_clip_config.json"), "--height", "256", "--width", "448", "-o", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.stderr.strip().splitlines()
    assert [line.split(" max abs diff")[0] for line in lines[:4]] == [
        "clipvis: onnxruntime (fp32 file) vs PyTorch fp32 (batch 2, 256x448)"] * 4
    assert lines[4].startswith("clipvis: 2 of 8 random frames past the bar, the others within it: a value the ")
    assert len(lines) == 5 and path.is_file() and result.stdout == f"{path}\n"


def test_a_full_disk_while_exporting_is_one_line(tiny_weights, tmp_path, monkeypatch) -> None:
    """ENOSPC from torch.onnx.export (a full disk) ended the command with a 53-line traceback."""
    pytest.importorskip("onnxruntime")
    import clipvis.cli.exporters.onnx as onnx_exporter

    def full(network, path, *args, **kwargs):
        Path(path).write_bytes(b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_exporter, "export_onnx", full)
    path = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", str(path)])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == f"clipvis: error: {path} not written: No space left on device\n"
    assert list(tmp_path.iterdir()) == []


def test_a_training_folder_is_read_once_while_a_run_adds_checkpoints(tiny_weights, tmp_path, monkeypatch) -> None:
    """The metadata named model_0000299.pth, saved by a training run while the export loaded model_0000199.pth
    (the folder was resolved again after the load): the weights exported and the checkpoint named are one file."""
    import json
    import shutil

    onnxruntime = pytest.importorskip("onnxruntime")
    import clipvis.model as model_package

    folder = tmp_path / "train"
    folder.mkdir()
    first = folder / "model_0000199.safetensors"
    shutil.copy(tiny_weights, first)
    real_load = model_package.load_model

    def load_while_training(*args, **kwargs):
        model = real_load(*args, **kwargs)
        shutil.copy(tiny_weights, folder / "model_0000299.safetensors")  # the run's next checkpoint
        return model

    monkeypatch.setattr(model_package, "load_model", load_while_training)
    path = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(folder), "-o", str(path)])
    assert result.exit_code == 0, result.output
    props = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert props.custom_metadata_map["checkpoint"] == str(first.resolve())
    assert json.loads(props.custom_metadata_map["classes"]) == []


def test_an_opset_torch_cannot_export_is_a_usage_error_before_the_model_loads(tiny_weights, tmp_path,
                                                                              monkeypatch) -> None:
    """--opset 99 loaded the model, traced it and failed with exit 1 (and ~1,700 lines of graph on stdout)."""
    import clipvis.cli.commands.export as export_command
    from clipvis.cli.exporters.onnx import supported_opsets

    monkeypatch.setattr(export_command, "load_predictor", lambda options: pytest.fail("the model was loaded"))
    newest = supported_opsets()[-1]
    for opset in (99, newest + 1, 15):
        result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "--opset",
                                          str(opset), "-o", str(tmp_path / "m.onnx")])
        assert result.exit_code == 2 and result.stdout == ""
        assert f"--opset must be 16 to {newest} (the opsets this torch exports), not {opset}" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_empty_vocab_is_a_usage_error_not_a_free_vocabulary_file(tiny_weights, tmp_path, monkeypatch) -> None:
    """--vocab "" (an unset shell variable) exported a file without class_logits; segment --vocab "" and export
    --vocab ",," say `empty class name`."""
    import clipvis.cli.commands.export as export_command

    monkeypatch.setattr(export_command, "load_predictor", lambda options: pytest.fail("the model was loaded"))
    for vocab in ("", " ", ",,"):
        result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "--vocab", vocab,
                                          "-o", str(tmp_path / "m.onnx")])
        assert result.exit_code == 2 and result.stdout == ""
        assert "--vocab: empty class name (classes are separated by commas)" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_file_says_what_it_holds_in_its_metadata(tiny_weights, tmp_path) -> None:
    """The file carried no metadata: which checkpoint, which classes in which column, what preprocessing and frame
    size it expects. README: onnx.load(...).metadata_props or session.get_modelmeta().custom_metadata_map."""
    import hashlib
    import json

    onnxruntime = pytest.importorskip("onnxruntime")
    from clipvis import __version__
    from clipvis.model import load_model

    path = tmp_path / "m.onnx"
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("cat\ndog, puppy\nkite\n")
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "--vocab-file",
                                      str(vocab), "-o", str(path)])
    assert result.exit_code == 0, result.output
    meta = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    props = meta.custom_metadata_map
    config = load_model(tiny_weights).config
    assert props == {
        "clipvis_version": __version__,
        "classes": json.dumps([["cat"], ["dog", "puppy"], ["kite"]]),
        "precision": "fp32",
        "input_size": "[64, 128]",
        "pixel_mean": json.dumps(list(config.pixel_mean)),
        "pixel_std": json.dumps(list(config.pixel_std)),
        "min_size_test": str(config.min_size_test),
        "max_size_test": str(config.max_size_test),
        "size_divisibility": str(config.size_divisibility),
        "zero_logits_of_empty_masks": "true",
        "checkpoint": str(tiny_weights.resolve()),
        "checkpoint_bytes": str(tiny_weights.stat().st_size),
        "checkpoint_sha256": hashlib.sha256(tiny_weights.read_bytes()).hexdigest(),
    }
    free = tmp_path / "free.onnx"
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "--precision", "fp16",
                                      "-o", str(free)])
    assert result.exit_code == 0, result.output
    props = onnxruntime.InferenceSession(str(free), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert props.custom_metadata_map["classes"] == "[]"
    assert props.custom_metadata_map["precision"] == "fp16"


def test_temp_files_of_killed_exports_of_the_target_are_removed(tiny_weights, tmp_path) -> None:
    """An export killed during the parity check left its full-size `.NAME.XXXXXXXX.tmp.onnx` (~193 MB for R50) and
    no later export removed it. Only this target's, older than the run and locked by no live process, go."""
    import fcntl
    import os

    pytest.importorskip("onnxruntime")
    path = tmp_path / "m.onnx"
    killed = [tmp_path / ".m.a1b2c3d4.tmp.onnx", tmp_path / ".m.zz_9yy8x.tmp.onnx"]
    live = tmp_path / ".m.livelive.tmp.onnx"  # an export running now, which holds its file
    kept = [live, tmp_path / ".m.x.abcdefgh.tmp.onnx", tmp_path / ".m2.abcdefgh.tmp.onnx",  # other targets'
            tmp_path / ".m.abcdefgh.tmp.json", tmp_path / "m.onnx.bak"]
    for file in killed + kept:
        file.write_bytes(b"partial onnx")
        os.utime(file, (1_000_000_000, 1_000_000_000))
    newer = tmp_path / ".m.newer123.tmp.onnx"  # made after this run began (by a run that has not locked it yet)
    newer.write_bytes(b"partial onnx")
    os.utime(newer, (4_000_000_000, 4_000_000_000))
    holder = os.open(live, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", str(path)])
    finally:
        os.close(holder)
    assert result.exit_code == 0, result.output
    assert sorted(tmp_path.iterdir()) == sorted([path, newer, *kept])


def test_a_running_exports_temp_file_stays_locked_through_export_and_parity(tiny_weights, tmp_path,
                                                                             monkeypatch) -> None:
    """The lock that tells a live export's file from a killed one's must survive the exporter rewriting the file."""
    pytest.importorskip("onnxruntime")
    import clipvis.cli.exporters.onnx as onnx_exporter
    from clipvis.cli.atomic import remove_stale_temp_files_of

    path = tmp_path / "m.onnx"
    real_check = onnx_exporter.check_parity

    def check_with_a_second_export_cleaning(*args: object, **kwargs: object) -> object:
        assert remove_stale_temp_files_of(path, started=float("inf")) == []  # another export, started now
        return real_check(*args, **kwargs)

    monkeypatch.setattr(onnx_exporter, "check_parity", check_with_a_second_export_cleaning)
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert [file.name for file in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.parametrize(("args", "line"), [
    (["--to", "onnx", "--model", "W", "--min-score", "0.5"],
     "--min-score is not for --to onnx (it exports the network, not results)"),
    (["--to", "onnx", "--model", "W", "--classes", "cat"],
     "--classes is not for --to onnx (it exports the network, not results)"),
    (["--to", "onnx", "--model", "W", "--zip"], "--zip is not for --to onnx (it exports the network, not results)"),
    (["--to", "onnx", "--model", "W", "--no-media"],
     "--media/--no-media is not for --to onnx (it exports the network, not results)"),
    (["x", "--to", "ytvis", "--vocab", "cat"], "--vocab is only for --to onnx"),
    (["x", "--to", "ytvis", "--vocab-file", "v.txt"], "--vocab-file is only for --to onnx"),
    (["x", "--to", "coco", "--config", "c.yaml"], "--config is only for --to onnx"),
    (["x", "--to", "ytvis", "--clip-config", "c.json"], "--clip-config is only for --to onnx"),
    (["x", "--to", "ytvis", "--height", "480"], "--height is only for --to onnx"),
    (["x", "--to", "cvat-video", "--width", "864"], "--width is only for --to onnx"),
    (["x", "--to", "ytvis", "--precision", "fp16"], "--precision is only for --to onnx"),
    (["x", "--to", "ytvis", "--opset", "17"], "--opset is only for --to onnx"),
    (["--to", "onnx", "--model", "W", "--log-format", "jsonl"],
     "--log-format is not for --to onnx (it exports the network, not results)"),
])
def test_an_option_of_the_other_mode_is_a_usage_error(args, line) -> None:
    """--to onnx ignored --min-score, --classes and --zip; --to ytvis (any results format) ignored --vocab, --config,
    --height, --width, --precision and --opset: only --model was refused."""
    result = CliRunner().invoke(app, ["export", *args])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"clipvis: error: {line} (see 'clipvis export --help')\n"


@pytest.mark.parametrize(("args", "line"), [
    (["--height", "100"], "--height must be a multiple of 32 (got 100)"),
    (["--width", "100"], "--width must be a multiple of 32 (got 100)"),
    (["-o", "-"], "-o -: an ONNX file cannot go to stdout; give the .onnx file to write"),
])
def test_sizes_and_stdout_are_refused_before_the_model_loads(args, line, tiny_weights, tmp_path, monkeypatch) -> None:
    """--height 100's error named `got 100x256` (a width never given) after loading the model; -o - wrote a file
    named `-`."""
    pytest.importorskip("onnxruntime")
    import clipvis.cli.commands.export as export_command

    monkeypatch.setattr(export_command, "load_predictor", lambda options: pytest.fail("the model was loaded"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), *args])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"clipvis: error: {line} (see 'clipvis export --help')\n"
    assert list(tmp_path.iterdir()) == []


def test_the_output_folder_is_made_before_the_model_loads(tiny_weights, tmp_path, monkeypatch) -> None:
    """-o nodir/sub/x.onnx failed after loading the model (and, for a real one, minutes)."""
    pytest.importorskip("onnxruntime")
    import clipvis.cli.commands.export as export_command

    path = tmp_path / "nodir" / "sub" / "x.onnx"
    real_load = export_command.load_predictor

    def load_after_the_folder_exists(options: object, **keywords: object) -> object:
        assert path.parent.is_dir()
        return real_load(options, **keywords)

    monkeypatch.setattr(export_command, "load_predictor", load_after_the_folder_exists)
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(path) and path.is_file()
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setattr(export_command, "load_predictor", lambda options: pytest.fail("the model was loaded"))
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o",
                                      str(blocked / "x.onnx")])
    assert result.exit_code == 1
    assert result.stderr == f"clipvis: error: {blocked}: output not writable (a file, not a folder)\n"


def test_a_folder_to_be_or_a_pipe_is_refused_before_the_model_loads(tiny_weights, tmp_path, monkeypatch) -> None:
    """-o models/ (a folder not made yet) wrote a file named `models`; -o onto a named pipe or a device replaced it
    with a regular file (as root, -o /dev/null replaced the system's)."""
    pytest.importorskip("onnxruntime")
    import clipvis.cli.commands.export as export_command

    monkeypatch.setattr(export_command, "load_predictor", lambda options, **keywords: pytest.fail("model loaded"))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", "models/"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr == ("clipvis: error: -o models/: is a folder; give the .onnx file to write (e.g. -o "
                             "models/clipvis.onnx)\n")
    os.mkfifo("pipe.onnx")
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", "pipe.onnx"])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("clipvis: error: pipe.onnx: output not writable (a device, pipe or socket, ")
    assert sorted(os.listdir()) == ["pipe.onnx"] and stat.S_ISFIFO(os.stat("pipe.onnx").st_mode)


def test_a_link_is_written_through_and_null_ends_the_listed_path(tiny_weights, tmp_path, monkeypatch) -> None:
    """-o onto a symbolic link replaced the link with the new file and left the file it named as it was; -0 was
    ignored (the path ended in a newline)."""
    pytest.importorskip("onnxruntime")
    monkeypatch.chdir(tmp_path)
    os.mkdir("models")
    with open("models/real.onnx", "w") as old:
        old.write("the previous export")
    os.symlink("models/real.onnx", "current.onnx")
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", "current.onnx",
                                      "-0"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "current.onnx\0"
    assert os.path.islink("current.onnx") and os.path.getsize("models/real.onnx") > 1000
    assert sorted(os.listdir("models")) == ["real.onnx"]


def test_a_stopped_export_says_so_in_one_line_and_leaves_no_file(tiny_weights, tmp_path, monkeypatch) -> None:
    """Ctrl-C or SIGTERM while the network exported: exit 130/143 without a word (results exports say theirs)."""
    pytest.importorskip("onnxruntime")
    import signal

    import clipvis.cli.exporters.onnx as onnx_exporter
    from clipvis.cli.launcher import Terminated

    target = tmp_path / "m.onnx"
    for stop, status, name in ((KeyboardInterrupt(), 130, "SIGINT"), (Terminated(signal.SIGTERM), 143, "SIGTERM")):
        def stopped(*args: object, stop: BaseException = stop, **kwargs: object) -> None:
            raise stop

        monkeypatch.setattr(onnx_exporter, "check_parity", stopped)  # the file written, the check under way
        result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", str(target)])
        assert result.exit_code == status, result.output + repr(result.exception)
        assert result.stdout == "" and result.stderr.endswith(f"clipvis: stopped by {name}; {target} was not written\n")
        assert list(tmp_path.iterdir()) == []


def test_an_empty_output_name_is_refused_not_the_default(tiny_weights, tmp_path, monkeypatch) -> None:
    """`-o "$OUT"` with OUT unset wrote (over) ./clipvis.onnx, the default for no -o at all."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clipvis.onnx").write_text("precious")
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", ""])
    assert result.exit_code == 2 and "-o: an empty name" in result.stderr
    assert (tmp_path / "clipvis.onnx").read_text() == "precious"


def test_a_stop_while_onnxruntime_loads_is_a_stop_not_a_missing_package(tiny_weights, tmp_path, monkeypatch) -> None:
    """A compiled module turns an exception raised while it initialises (the launcher's SIGTERM) into ImportError: the
    command said "ONNX export needs onnx and onnxruntime: pip install ..." and exited 1."""
    import builtins
    import signal
    import sys

    from clipvis.cli.launcher import Terminated

    real_import = builtins.__import__

    def interrupted_import(name: str, *args: object, **kwargs: object) -> object:
        if name == "onnxruntime":
            try:
                raise Terminated(signal.SIGTERM)
            except Terminated as stop:
                raise ImportError("initialization failed") from stop
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "onnxruntime", raising=False)
    monkeypatch.setattr(builtins, "__import__", interrupted_import)
    target = tmp_path / "two\nlines.onnx"
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "--model", str(tiny_weights), "-o", str(target)])
    assert result.exit_code == 143, result.output
    shown = str(target).replace("\n", "\\n")  # escaped: one line
    assert result.stderr == f"clipvis: stopped by SIGTERM; {shown} was not written\n"
