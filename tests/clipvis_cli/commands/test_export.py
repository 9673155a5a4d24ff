"""`clipvis export`: every label format from a synthetic segment output, read back with the formats' rules
(pycocotools, PIL, XML), overlaps resolved by score, and bad input failing with one line and nothing written; and
`clipvis export --model W --to onnx`: the per-frame network of a tiny checkpoint as ONNX; onnxruntime reproduces
PyTorch on a batch size other than the export example's (dynamic batch axis), and the README's loop (ONNX frames +
Python matcher and scorer) gives the tracks the PyTorch predictor gives."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import xml.etree.ElementTree as ET
import zipfile
from fractions import Fraction
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from typer.testing import CliRunner

from clipvis.cli import rle
from clipvis.cli.app import app
from clipvis.cli.atomic import replaced_folder_name
from clipvis.cli.locks import FolderLock
from clipvis.cli.track_colours import PALETTE, track_colour

from ..exporters.conftest import (
    CATEGORIES,
    FRAMES,
    HEIGHT,
    STRIDE,
    WIDTH,
    decode_cvat_rle,
    deserialize_mask,
    make_segment_output,
    mask_iou,
    polygon_mask,
    write_video,
)


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
    assert result.exit_code == 2  # a usage error, as -o - and -o "" are
    assert result.stderr.strip() == (f"clipvis: error: -o {folder}: is a folder; give the .onnx file to write "
                                     f"(e.g. -o {folder / 'clipvis.onnx'}) (see 'clipvis export --help')")
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
    assert result.exit_code == 2 and result.stdout == ""  # a usage error, as -o - and -o "" are
    assert result.stderr == ("clipvis: error: -o models/: names a folder (ends with /); give the .onnx file to write "
                             "(e.g. -o models/clipvis.onnx) (see 'clipvis export --help')\n")  # none there: not "is"
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


def run_export(*args: str):
    return CliRunner().invoke(app, ["export", *args], catch_exceptions=False)


def expected_id_map(output, position: int, values: dict[int, int]) -> np.ndarray:
    """Overlap resolved by score: paint in ascending score order."""
    result = np.zeros((HEIGHT, WIDTH), np.int64)
    for track in sorted(output.tracks, key=lambda t: t.score):
        mask = output.masks[track.track_id][position]
        if mask is not None:
            result[mask] = values[track.track_id]
    return result


@pytest.mark.parametrize("umask", [0o077, 0o002])
def test_folder_formats_get_the_umask_s_mode_as_their_files_do(tmp_path, umask) -> None:
    """coco/, mots-png/ and png-masks/ were 0755 whatever the umask: a group-shared project (umask 002) could not
    replace them, and 077 was loosened."""
    output = make_segment_output(tmp_path / "out")
    previous = os.umask(umask)
    try:
        result = run_export(str(output.folder), "--to", "coco,mots-png,png-masks", "-o", str(tmp_path / "exp"))
    finally:
        os.umask(previous)
    assert result.exit_code == 0, result.output
    for name in ("coco", "mots-png", "png-masks"):
        folder = tmp_path / "exp" / "clip" / name
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask, name
        inside = next(path for path in folder.rglob("*") if path.is_file())
        assert inside.stat().st_mode & 0o777 == 0o666 & ~umask, inside


def test_all_formats_round_trip(tmp_path) -> None:
    output = make_segment_output(tmp_path / "out")
    dest = tmp_path / "exp"
    formats = "cvat-video,cvat-images,coco,mots-png,mots-txt,png-masks,ytvis"
    result = run_export(str(output.folder), "--to", formats, "-o", str(dest))
    assert result.exit_code == 0, result.output
    assert "mean IoU" in result.stderr
    folder = dest / "clip"
    indices = output.info.frame_indices  # stride 2: 0, 2, ..., 10

    # cvat-images: exact masks, track ids, frame numbers and names; images shipped.
    with zipfile.ZipFile(folder / "cvat-images.zip") as archive:
        root = ET.fromstring(archive.read("annotations.xml"))
        assert sorted(n for n in archive.namelist() if n.startswith("images/")) == sorted(
            f"images/frame_{i:06d}.jpg" for i in indices)
    assert [label.findtext("name") for label in root.iter("label")] == CATEGORIES
    images = root.findall("image")
    assert [int(image.get("id")) for image in images] == indices
    assert [image.get("name") for image in images] == [f"frame_{i:06d}.jpg" for i in indices]
    for position, image in enumerate(images):
        seen = set()
        for shape in image.findall("mask"):
            track_id = int(shape.find("attribute[@name='track_id']").text)
            track = next(t for t in output.tracks if t.track_id == track_id)
            assert shape.get("label") == CATEGORIES[track.category_id - 1]
            runs = [int(v) for v in shape.get("rle").split(",")]
            box = [int(shape.get(k)) for k in ("left", "top", "width", "height")]
            decoded = decode_cvat_rle(runs, *box, HEIGHT, WIDTH)
            assert np.array_equal(decoded, output.masks[track_id][position])
            seen.add(track_id)
        assert seen == {t for t, masks in output.masks.items() if masks[position] is not None}

    # cvat-video: polygon tracks, keyframes, outside after leaving, frame numbers, original size.
    with zipfile.ZipFile(folder / "cvat-video.zip") as archive:
        assert archive.namelist() == ["annotations.xml"]
        root = ET.fromstring(archive.read("annotations.xml"))
    assert root.findtext("meta/task/original_size/width") == str(WIDTH)
    assert root.findtext("meta/task/mode") == "interpolation"
    tracks = root.findall("track")
    assert [t.get("label") for t in tracks] == ["dog", "cat", "hot air balloon"]
    cat = [(int(p.get("frame")), p.get("outside")) for p in tracks[1].findall("polygon")]
    assert cat == [(0, "0"), (2, "0"), (4, "1"), (8, "0"), (10, "0")]  # absent on processed frames 2-3
    balloon = [(int(p.get("frame")), p.get("outside")) for p in tracks[2].findall("polygon")]
    assert balloon == [(0, "0"), (2, "0"), (4, "0"), (6, "1")]
    assert all(p.get("keyframe") == "1" for t in tracks for p in t.findall("polygon"))
    for position, polygon in enumerate(tracks[0].findall("polygon")):
        points = np.array([[float(v) for v in pair.split(",")] for pair in polygon.get("points").split(";")])
        assert mask_iou(polygon_mask(points, HEIGHT, WIDTH), output.masks[1][position]) > 0.98

    # coco: pycocotools reads it; file names carry the frame number; track_id in attributes.
    coco = COCO(str(folder / "coco" / "annotations" / "instances_default.json"))
    assert sorted(img["file_name"] for img in coco.dataset["images"]) == sorted(
        f"frame_{i:06d}.jpg" for i in indices)
    assert all((folder / "coco" / "images" / img["file_name"]).is_file() for img in coco.dataset["images"])
    for annotation in coco.dataset["annotations"]:
        image = coco.imgs[annotation["image_id"]]
        position = indices.index(int(image["file_name"][6:12]))
        track_id = annotation["attributes"]["track_id"]
        assert np.array_equal(coco.annToMask(annotation).astype(bool), output.masks[track_id][position])

    # mots-png: 16-bit class*1000+instance, overlap resolved by score, labels.txt line k = class k.
    labels = (folder / "mots-png" / "instances" / "labels.txt").read_text().split("\n")
    assert labels[:3] == CATEGORIES
    values = {t.track_id: t.category_id * 1000 + t.track_id for t in output.tracks}
    for position, index in enumerate(indices):
        png = Image.open(folder / "mots-png" / "instances" / f"{index:06d}.png")
        assert png.mode.startswith("I")  # 16-bit
        assert np.array_equal(np.asarray(png), expected_id_map(output, position, values))
        assert (folder / "mots-png" / "images" / f"{index:06d}.jpg").is_file()

    # mots-txt: the MOTS tools' rules (6 fields, id // 1000 == class, RLE decodes, no overlap per frame).
    per_frame: dict[int, list] = {}
    for line in (folder / "mots-txt" / "mots.txt").read_text().splitlines():
        fields = line.split(" ")
        assert len(fields) == 6
        time, object_id, class_id, height, width = map(int, fields[:5])
        assert object_id // 1000 == class_id and (height, width) == (HEIGHT, WIDTH)
        per_frame.setdefault(time, []).append(
            (object_id, {"size": [height, width], "counts": fields[5].encode("ascii")}))
    assert sorted(per_frame) == indices
    for time, objects in per_frame.items():
        rles = [r for _, r in objects]
        assert coco_mask.area(coco_mask.merge(rles, intersect=True)) == 0 or len(rles) == 1
        decoded = np.zeros((HEIGHT, WIDTH), np.int64)
        for object_id, encoded in objects:
            decoded[coco_mask.decode(encoded).astype(bool)] = object_id
        assert np.array_equal(decoded, expected_id_map(output, indices.index(time), values))

    # png-masks: indexed PNG (palette) with track ids, objects.json naming each id's class.
    objects = json.loads((folder / "png-masks" / "objects.json").read_text())["objects"]
    assert objects["2"]["class"] == "cat" and objects["1"]["class"] == "dog"
    for position, index in enumerate(indices):
        png = Image.open(folder / "png-masks" / f"{index:06d}.png")
        assert png.mode == "P" and png.getpalette()[3:6] != [0, 0, 0]
        assert np.array_equal(np.asarray(png), expected_id_map(output, position, {t: t for t in (1, 2, 3)}))

    # ytvis: the bare results list.
    results = json.loads((dest / "results.json").read_text())
    assert [(r["video_id"], r["category_id"]) for r in results] == [(1, 2), (1, 1), (1, 3)]


def test_cvat_video_tracks_keep_the_track_ids_the_other_formats_show(tmp_path) -> None:
    """cvat-video numbered its tracks by position: under --classes its tracks 0, 1 were clipvis tracks 2, 3, which
    cvat-images, COCO, MOTS and the overlay call #2, #3, so a reviewer could not match them."""
    output = make_segment_output(tmp_path / "out")
    dest = tmp_path / "exp"
    result = run_export(str(output.folder), "--to", "cvat-video,cvat-images", "--classes", "cat,hot air balloon",
                        "-o", str(dest))
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(dest / "clip" / "cvat-video.zip") as archive:
        video = ET.fromstring(archive.read("annotations.xml"))
    with zipfile.ZipFile(dest / "clip" / "cvat-images.zip") as archive:
        images = ET.fromstring(archive.read("annotations.xml"))
    tracks = video.findall("track")
    assert [(int(t.get("id")), t.get("label")) for t in tracks] == [(2, "cat"), (3, "hot air balloon")]
    for track in tracks:  # the id CVAT shows a reviewer: the track_id attribute of every shape
        assert {shape.findtext("attribute[@name='track_id']") for shape in track} == {track.get("id")}
    for label in video.iter("label"):  # declared as cvat-images declares it
        attribute = label.find("attributes/attribute")
        assert (attribute.findtext("name"), attribute.findtext("input_type"), attribute.findtext("mutable")) == (
            "track_id", "number", "False")
    assert {int(a.text) for a in images.iterfind("image/mask/attribute")} == {2, 3}


def test_cvat_and_label_studio_label_colours_are_the_overlay_colours_of_the_same_ids(tmp_path) -> None:
    """The CVAT labels and Label Studio label backgrounds were coloured one id late: category 1 took the overlay's
    colour of track 64 and category 2 track 1's red. Now category k's colour is the one the overlay gives id k."""
    output = make_segment_output(tmp_path / "out")
    result = run_export(str(output.folder), "--to", "cvat-images,labelstudio", "-o", str(tmp_path / "exp"),
                        "--media-url", "/data/local-files/?d=clips/")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "exp" / "clip"
    with zipfile.ZipFile(folder / "cvat-images.zip") as archive:
        cvat = {label.findtext("name"): label.findtext("color")
                for label in ET.fromstring(archive.read("annotations.xml")).iter("label")}
    config = ET.fromstring((folder / "labelstudio" / "config.xml").read_bytes())
    label_studio = {label.get("value"): label.get("background") for label in config.iter("Label")}
    want = {name: "#{:02x}{:02x}{:02x}".format(*track_colour(CATEGORIES.index(name) + 1)) for name in cvat}
    assert cvat == want and label_studio == want
    assert cvat["cat"] == "#{:02x}{:02x}{:02x}".format(*PALETTE[0])  # category 1: the first colour


def test_filters_zip_and_default_destination(tmp_path) -> None:
    output = make_segment_output(tmp_path / "out")
    result = run_export(str(output.ytvis), "--to", "ytvis,cvat-images", "--zip", "--min-score", "0.5",
                        "--classes", "cat,dog", "--no-media")
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(output.folder / "results.zip") as archive:
        results = json.loads(archive.read("results.json"))
    assert sorted(r["category_id"] for r in results) == [1, 2]
    with zipfile.ZipFile(output.folder / "cvat-images.zip") as archive:
        assert archive.namelist() == ["annotations.xml"]
        root = ET.fromstring(archive.read("annotations.xml"))
    assert [label.findtext("name") for label in root.iter("label")] == ["cat", "dog"]
    assert "warning" not in result.output

    # A class name that is none of the video's (a typo) is named in a warning; -o need not exist.
    result = run_export(str(output.ytvis), "--to", "ytvis", "--zip", "--classes", "cat,dgo", "-o",
                        str(tmp_path / "new" / "submission"))
    assert result.exit_code == 0, result.output
    assert "--classes dgo: no such class here (its classes: cat, dog" in result.output
    with zipfile.ZipFile(tmp_path / "new" / "submission" / "results.zip") as archive:
        assert sorted(r["category_id"] for r in json.loads(archive.read("results.json"))) == [1]


def test_arguments_are_expanded_as_segment_expands_them(tmp_path, monkeypatch) -> None:
    """A name too long for the file system ended export in a traceback (segment said it in one line), and export
    searched the folders file servers and archivers add (a NAS's `@eaDir`, a zip's `__MACOSX`) that segment skips."""
    from clipvis.cli.inputs import discover_inputs

    too_long = str(tmp_path / ("a" * 300))
    kept = make_segment_output(tmp_path / "share")
    for system in ("@eaDir", "__MACOSX", ".hidden"):
        make_segment_output(tmp_path / "share" / system)
    locked = tmp_path / "locked"
    make_segment_output(locked)
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)  # the tests run as root, where chmod 000 does not stop us
    missing_home = "~no-such-user-clipvis/ytvis.json"  # Path.expanduser raised RuntimeError
    result = run_export(too_long, str(locked), missing_home, str(tmp_path / "share"), "--to", "mots-txt",
                        "-o", str(tmp_path / "exp"))
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error")]
    assert errors == [
        f"clipvis: error: {too_long}: cannot read (File name too long)",
        f"clipvis: error: {locked}: cannot read directory (Permission denied)",
        f"clipvis: error: {missing_home}: no such file or directory",
        "clipvis: error: 3 of 4 export(s) failed",
    ]
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["clip"]
    assert (tmp_path / "exp" / "clip" / "mots-txt").exists() and kept.folder.name == "clip"
    segmented = discover_inputs([too_long, str(locked)])
    assert [source.error for source in segmented] == ["cannot read (File name too long)",
                                                      "cannot read directory (Permission denied)"]


def test_a_results_folder_reached_through_a_symlink_too_is_named_by_its_real_path(tmp_path, monkeypatch) -> None:
    """With ``tree/link -> a`` listed before ``tree/a``, the results were named ``tree/link/...`` and ``tree/a`` was
    skipped as seen: a later ``export tree/a`` made a second export folder (``clip-2``) beside the first, or refused
    to write beside the results ("not an export of this video by clipvis")."""
    tree = tmp_path / "tree"
    kept = make_segment_output(tree / "a")
    (tree / "link").symlink_to("a")
    (tree / "b").mkdir()
    (tree / "b" / "up").symlink_to("../a")  # a link in a folder walked before the real one
    real_iterdir = Path.iterdir

    def links_first(self):
        return iter(sorted(real_iterdir(self), key=lambda entry: not entry.is_symlink()))

    monkeypatch.setattr(Path, "iterdir", links_first)
    for output in (["-o", str(tmp_path / "exp")], []):
        for argument in (tree, kept.folder):
            result = run_export(str(argument), "--to", "mots-txt", *output)
            assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["clip"]
    for folder in (tmp_path / "exp" / "clip", kept.folder):
        record = json.loads((folder / ".clipvis-export.json").read_text())
        assert record["entries"]["mots-txt"]["from"]["results"] == str(kept.ytvis)


def test_a_broken_results_file_in_a_searched_folder_is_an_error_not_skipped(tmp_path) -> None:
    """A ytvis.json that is a broken symbolic link, found in a searched folder, fails with one line (it was skipped
    without a word once the search took only regular files, and the export exited 0)."""
    tree = tmp_path / "tree"
    make_segment_output(tree / "a")
    (tree / "b").mkdir()
    (tree / "b" / "ytvis.json").symlink_to(tmp_path / "gone" / "ytvis.json")
    result = run_export(str(tree), "--to", "mots-txt", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error")]
    assert errors == [f"clipvis: error: {tree / 'b' / 'ytvis.json'}: no such file",
                      "clipvis: error: 1 of 2 export(s) failed"], result.output
    assert (tmp_path / "exp" / "clip" / "mots-txt").exists()


def test_null_separated_paths_on_stdin_and_stdout(tmp_path) -> None:
    """`find out -name ytvis.json -print0 | clipvis export --null - ... | xargs -0`: a folder whose name holds a
    newline is read and listed whole."""
    odd = make_segment_output(tmp_path / "out", stem="line\nbreak")
    plain = make_segment_output(tmp_path / "out", stem="plain", video_id=2)
    result = CliRunner().invoke(app, ["export", "-", "--to", "mots-txt", "--null"], catch_exceptions=False,
                                input=f"{odd.ytvis}\0{plain.ytvis}\0")
    assert result.exit_code == 0, result.output
    listed = result.stdout_bytes.split(b"\0")
    assert listed[-1] == b""
    paths = [Path(os.fsdecode(raw)) for raw in listed[:-1]]
    assert sorted(p.parent for p in paths) == sorted([odd.folder, plain.folder]) and all(p.exists() for p in paths)
    empty = CliRunner().invoke(app, ["export", "-", "--to", "mots-txt", "--null"], input="")
    # `find -newer ... -print0 | clipvis export -0 -` found nothing new: nothing to do, as segment says (it was exit 2)
    assert empty.exit_code == 0 and empty.stderr == "clipvis: no inputs on stdin: nothing to do\n", empty.output
    assert empty.stdout == ""
    jsonl = CliRunner().invoke(app, ["export", "-", "--to", "mots-txt", "--log-format", "jsonl"], input="\n")
    summary = json.loads(jsonl.stderr)
    assert jsonl.exit_code == 0 and summary["event"] == "summary" and summary["inputs"] == 0, jsonl.stderr
    assert summary["status"] == "ok" and summary["message"] == "no inputs on stdin: nothing to do"
    lines = CliRunner().invoke(app, ["export", "-", "--to", "mots-txt", "-0"], input=f"{plain.ytvis}\n")
    assert lines.exit_code == 2 and "holds newlines but no NUL character" in lines.output


def test_zips_hold_the_same_bytes_whenever_they_are_written(tmp_path, monkeypatch) -> None:
    """One process and the ranks of a torchrun job (or a rerun an hour later) write the same zips byte for byte: the
    entries no longer carry the time they were written."""
    import time

    output = make_segment_output(tmp_path / "out")
    first = run_export(str(output.ytvis), "--to", "ytvis,cvat-video,cvat-images", "--zip", "-o", str(tmp_path / "a"))
    assert first.exit_code == 0, first.output
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    second = run_export(str(output.ytvis), "--to", "ytvis,cvat-video,cvat-images", "--zip", "-o", str(tmp_path / "b"))
    assert second.exit_code == 0, second.output
    zips = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.zip"))
    assert len(zips) == 3
    for name in zips:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with zipfile.ZipFile(tmp_path / "a" / zips[0]) as archive:
        assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_many_classes_are_renumbered_for_mots(tmp_path) -> None:
    output = make_segment_output(tmp_path / "out")
    document = json.loads(output.ytvis.read_text())
    names = [f"thing{i}" for i in range(1, 101)]
    document["categories"] = [{"id": i, "name": n} for i, n in enumerate(names, start=1)]
    document["annotations"][0]["category_id"] = 90
    output.ytvis.write_text(json.dumps(document))
    result = run_export(str(output.folder), "--to", "mots-png", "--classes", "thing1,thing2,thing3,thing90",
                        "--no-media", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    root = tmp_path / "exp" / "clip" / "mots-png"
    class_map = json.loads((root / "class_map.json").read_text())
    assert class_map["renumbered"] is True
    assert [(c["class_id"], c["name"]) for c in class_map["classes"]] == [
        (1, "thing1"), (2, "thing2"), (3, "thing3"), (4, "thing90")]
    assert (root / "instances" / "labels.txt").read_text().split() == ["thing1", "thing2", "thing3", "thing90"]
    first = np.asarray(Image.open(root / "instances" / "000000.png"))
    assert 4 * 1000 + 1 in np.unique(first)  # track 1 (thing90) -> class 4


def test_a_missing_source_video_is_named_as_segment_names_it(tmp_path) -> None:
    """A newline in the source video's name showed as a space ("two lines.mp4"), where segment writes it as \\n (a
    name with a space and one with a newline were told apart by segment only)."""
    output = make_segment_output(tmp_path / "out", stem="two\nlines")
    output.video.unlink()
    shown = str(output.video).replace("\n", "\\n")
    for formats in ("coco", "labelstudio"):
        result = run_export(str(output.folder), "--to", formats, "-o", str(tmp_path / formats))
        assert result.exit_code == 1
        assert f"source video {shown} (videos[].source) not found; " in result.stderr, result.stderr


def test_bad_inputs_fail_with_one_line_and_write_nothing(tmp_path) -> None:
    output = make_segment_output(tmp_path / "out")
    good = make_segment_output(tmp_path / "out2", stem="other")
    output.video.unlink()
    dest = tmp_path / "exp"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_export(str(output.folder), str(empty), str(good.folder), "--to", "coco", "-o", str(dest))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error")]
    assert errors[-1] == "clipvis: error: 2 of 3 export(s) failed"
    errors = errors[:-1]
    assert len(errors) == 2
    assert errors[0].endswith(f"source video {output.video} (videos[].source) not found; coco needs its frames "
                              "(--no-media writes them without the images)")
    assert str(empty) in errors[1] and "no segment outputs" in errors[1]
    mixed = run_export(str(output.folder), "--to", "coco,labelstudio,mots-txt", "-o", str(tmp_path / "mixed"))
    assert mixed.exit_code == 1 and ("not found; coco needs its frames; labelstudio needs the video file itself "
                                     "(--no-media writes coco without the images)") in mixed.stderr, mixed.stderr
    assert not (dest / "clip").exists()
    assert (dest / "other" / "coco" / "annotations" / "instances_default.json").is_file()  # the batch goes on
    assert not list(dest.rglob(".export-*"))
    # formats without media do not need the video
    assert run_export(str(output.folder), "--to", "mots-txt", "-o", str(dest)).exit_code == 0
    unknown = run_export(str(output.folder), "--to", "pascal")
    assert unknown.exit_code == 2 and "unknown format pascal" in unknown.output
    write_video(good.video, height=2 * HEIGHT, width=2 * WIDTH)  # fails while its files are being written
    failed = run_export(str(good.folder), "--to", "coco", "-o", str(tmp_path / "exp2"))
    assert failed.exit_code == 1 and not (tmp_path / "exp2" / "other").exists()  # not a folder holding a lock
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    bad = run_export(str(broken), "--to", "coco", "-o", str(dest))
    assert bad.exit_code == 1 and "not valid JSON" in bad.stderr and str(broken) in bad.stderr


def test_what_a_killed_export_left_is_swept_and_a_busy_folder_fails_alone(tmp_path) -> None:
    output = make_segment_output(tmp_path / "out")
    dest = tmp_path / "exp"
    left = dest / "clip" / ".export-k1ll3dab.tmp"  # a staging folder of an export killed with SIGKILL
    (left / "coco").mkdir(parents=True)
    (left / "coco" / "big.jpg").write_bytes(b"x" * 100)
    result = run_export(str(output.folder), "--to", "mots-txt", "-o", str(dest))
    assert result.exit_code == 0, result.output
    assert not left.exists() and (dest / "clip" / "mots-txt" / "mots.txt").is_file()

    with FolderLock(dest / "clip"):  # another clipvis process writes there (an export, or segment's own folder)
        busy = run_export(str(output.folder), "--to", "mots-txt", "-o", str(dest))
    assert busy.exit_code == 1
    assert "another clipvis process is writing here" in busy.stderr and str(dest / "clip") in busy.stderr


def test_a_export_killed_between_a_folders_two_renames_is_put_right_by_the_next(tmp_path) -> None:
    """A kill after the earlier `coco/` was moved aside and before the new one got in place left `.coco.old-PID`,
    which no cleanup knew: the next export went to `clip-2/` (for good), and the earlier `coco/` stayed hidden."""
    output = make_segment_output(tmp_path / "out")
    dest = tmp_path / "exp"
    assert run_export(str(output.folder), "--to", "coco,mots-txt", "-o", str(dest)).exit_code == 0
    folder = dest / "clip"
    earlier = sorted(path.relative_to(folder) for path in (folder / "coco").rglob("*"))
    # killed between the renames: the earlier coco/ aside, the new one still in its staging folder
    aside = folder / replaced_folder_name("coco")
    (folder / "coco").rename(aside)
    (folder / ".export-k1ll3dab.tmp" / "coco").mkdir(parents=True)
    result = run_export(str(output.folder), "--to", "mots-txt", "-o", str(dest))  # the next export of another format
    assert result.exit_code == 0, result.output
    assert not (dest / "clip-2").exists()
    assert sorted(path.relative_to(folder) for path in (folder / "coco").rglob("*")) == earlier  # put back
    assert [path.name for path in folder.iterdir() if path.name.startswith(".") and "tmp" in path.name] == []

    # killed after the new mots-txt/ got in place, before the earlier one was deleted: the next export uses the
    # folder and removes it
    aside = folder / replaced_folder_name("mots-txt")
    shutil.copytree(folder / "mots-txt", aside)
    result = run_export(str(output.folder), "--to", "coco,mots-txt", "-o", str(dest))
    assert result.exit_code == 0, result.output
    assert not aside.exists() and not (dest / "clip-2").exists()
    assert sorted(path.relative_to(folder) for path in (folder / "coco").rglob("*")) == earlier

    (folder / "coco").rename(folder / replaced_folder_name("coco"))  # the first state again, then export
    result = run_export(str(output.folder), "--to", "coco", "-o", str(dest))
    assert result.exit_code == 0, result.output
    assert not (dest / "clip-2").exists() and (folder / "coco").is_dir()
    assert [path.name for path in folder.iterdir() if ".old-" in path.name] == []


def test_an_export_root_s_own_hidden_entries_are_left_alone(tmp_path) -> None:
    """Names that merely start with a dot and hold ".tmp" were taken for clipvis' temporary files: `export -o DEST`
    deleted a user's `.tmp/` folder and `.bashrc.tmp.bak` there, and put a `.photos.old-42.tmp/` folder in place as
    `photos/`."""
    output = make_segment_output(tmp_path / "out")
    dest = tmp_path / "exp"
    dest.mkdir()
    (dest / ".tmp").mkdir()
    (dest / ".tmp" / "notes.txt").write_text("mine")
    (dest / ".bashrc.tmp.bak").write_text("mine")
    (dest / ".photos.old-42.tmp").mkdir()
    (dest / ".photos.old-42.tmp" / "a.jpg").write_bytes(b"mine")
    result = run_export(str(output.folder), "--to", "ytvis,mots-txt", "-o", str(dest))
    assert result.exit_code == 0, result.output
    assert (dest / ".tmp" / "notes.txt").read_text() == "mine" and (dest / ".bashrc.tmp.bak").read_text() == "mine"
    assert (dest / ".photos.old-42.tmp" / "a.jpg").read_bytes() == b"mine" and not (dest / "photos").exists()


def test_tools_that_carry_the_video_refuse_another_video(tmp_path) -> None:
    output = make_segment_output(tmp_path / "out")
    write_video(output.video, height=2 * HEIGHT, width=2 * WIDTH)  # the source replaced by another video
    result = run_export(str(output.folder), "--to", "labelstudio,fiftyone", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 1
    assert f"is {2 * WIDTH}x{2 * HEIGHT}, the results {WIDTH}x{HEIGHT}" in result.stderr
    assert not list((tmp_path / "exp").rglob("*.mp4"))
    write_video(output.video, frames=4)  # the right size, too short: labels up to frame 11 on a 4-frame video
    result = run_export(str(output.folder), "--to", "labelstudio,fiftyone", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 1 and "has 4 frames, the results reach frame 11" in result.stderr, result.output
    assert not list((tmp_path / "exp").rglob("*.mp4"))


def test_a_source_whose_frame_count_is_estimated_short_is_not_refused(tmp_path) -> None:
    """An MPEG-PS (.mpg) source starting half a second late: its count from the duration is short (a 12-frame file is
    counted as 1 frame), and labelstudio/fiftyone refused the very video segment had decoded in full as "not the
    video these results were made from"."""
    import av

    from clipvis.cli.video_io import VideoReader

    output = make_segment_output(tmp_path / "out")
    with av.open(str(output.video), "w", format="mpeg") as container:  # MPEG-PS in place of the source's bytes
        stream = container.add_stream("mpeg2video", rate=25)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index in range(FRAMES):
            frame = av.VideoFrame.from_ndarray(np.full((HEIGHT, WIDTH, 3), index * 20, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    probe = VideoReader(output.video).probe()
    assert probe.frame_count_estimated and probe.frame_count < FRAMES - 2  # the case: counted short
    result = run_export(str(output.folder), "--to", "labelstudio,fiftyone", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "exp").rglob("*.mp4"))


def test_exporting_again_after_the_source_video_was_touched_replaces_the_linked_copies(tmp_path) -> None:
    """Label Studio's and FiftyOne's copies of the video are hard links to it: touching the source (a backup tool,
    a sync) changed "their" time, and the next export called them corrections and refused."""
    import os

    output = make_segment_output(tmp_path / "out")
    for _ in range(2):
        result = run_export(str(output.folder), "--to", "labelstudio,fiftyone", "-o", str(tmp_path / "exp"))
        assert result.exit_code == 0, result.output
        stat = output.video.stat()
        os.utime(output.video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def test_label_studio_tasks_fit_their_config(tmp_path) -> None:
    output = make_segment_output(tmp_path / "out")
    result = run_export(str(output.folder), "--to", "labelstudio", "-o", str(tmp_path / "exp"),
                        "--media-url", "/data/local-files/?d=clips/")
    assert result.exit_code == 0, result.output
    root = tmp_path / "exp" / "clip" / "labelstudio"
    config = ET.fromstring((root / "config.xml").read_text())
    names = {element.get("name"): element.tag for element in config.iter() if element.get("name")}
    classes = {label.get("value") for label in config.iter("Label")}
    assert classes == set(CATEGORIES)
    tasks = json.loads((root / "tasks.json").read_text())
    assert tasks[0]["data"]["video"] == "/data/local-files/?d=clips/clip.mp4"
    assert (root / "media" / "clip.mp4").read_bytes() == output.video.read_bytes()
    results = tasks[0]["predictions"][0]["result"]
    assert len(results) == 3
    for region, track in zip(results, output.tracks, strict=True):
        # the names the results use are the config's controls of the right kind, the labels its classes
        assert names[region["from_name"]] == "VideoRectangle" and region["type"] == "videorectangle"
        assert names[region["to_name"]] == "Video"
        assert region["value"]["labels"] == [CATEGORIES[track.category_id - 1]]
        assert set(region["value"]["labels"]) <= classes
        assert region["value"]["framesCount"] == 12
        sequence = region["value"]["sequence"]
        present = [p for p, m in enumerate(output.masks[track.track_id]) if m is not None]
        assert [k["frame"] for k in sequence] == [output.info.frame_indices[p] + 1 for p in present]
        for keyframe, position in zip(sequence, present, strict=True):
            ys, xs = np.nonzero(output.masks[track.track_id][position])
            assert keyframe["x"] == pytest.approx(100 * xs.min() / WIDTH)
            assert keyframe["width"] == pytest.approx(100 * (xs.max() + 1 - xs.min()) / WIDTH)
            assert keyframe["y"] == pytest.approx(100 * ys.min() / HEIGHT)
            assert 0 <= keyframe["x"] + keyframe["width"] <= 100
    cat = [(k["frame"], k["enabled"]) for k in results[1]["value"]["sequence"]]
    assert cat == [(1, True), (3, False), (9, True), (11, False)]  # lifespan ends before it leaves


def test_label_studio_configs_of_videos_of_other_rates_are_one_config_taking_each_task_s_rate(tmp_path) -> None:
    """config.xml wrote each video's frame rate (`frameRate="10"`, `"25"`): one project made from one of them put the
    keyframes of every video of another rate on the wrong frames. Now every video's config is the same, its Video tag
    reads the rate from the task (`$fps`), and each task carries the rate its keyframes are numbered at."""
    make_segment_output(tmp_path / "in", stem="slow", fps=10)
    make_segment_output(tmp_path / "in", stem="fast", fps=25)
    result = run_export(str(tmp_path / "in"), "--to", "labelstudio", "-o", str(tmp_path / "exp"),
                        "--media-url", "/data/local-files/?d=clips/")
    assert result.exit_code == 0, result.output
    configs = {stem: (tmp_path / "exp" / stem / "labelstudio" / "config.xml").read_bytes() for stem in ("slow", "fast")}
    assert configs["slow"] == configs["fast"]
    (video_tag,) = ET.fromstring(configs["slow"]).iter("Video")
    assert video_tag.get("frameRate") == "$fps"
    for stem, rate in (("slow", 10), ("fast", 25)):
        (task,) = json.loads((tmp_path / "exp" / stem / "labelstudio" / "tasks.json").read_text())
        assert task["data"]["fps"] == rate
        for region in task["predictions"][0]["result"]:
            for keyframe in region["value"]["sequence"]:  # frame n is the picture at (n - 1) / fps seconds
                assert keyframe["frame"] == round(keyframe["time"] * task["data"]["fps"]) + 1


def test_sources_the_review_tools_would_not_play_as_video_are_said_and_a_gif_is_refused_for_fiftyone(tmp_path) -> None:
    """A GIF, an .mkv, an MP4 of MPEG-4 part 2 exported to fiftyone and labelstudio with exit 0 and no word: FiftyOne
    takes a .gif for an image (its media type goes by the MIME type of the extension), where per-frame labels
    cannot attach, and Label Studio plays the video in the browser. Now a GIF is refused for fiftyone as an image
    folder is, and each other such source gets one warning naming it with an ffmpeg line to re-encode it."""
    gif = make_segment_output(tmp_path / "in", stem="anim")
    frames = [Image.fromarray(np.full((HEIGHT, WIDTH, 3), 20 * k, np.uint8)) for k in range(FRAMES)]
    frames[0].save(tmp_path / "in" / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    document = json.loads(gif.ytvis.read_text())
    document["videos"][0]["source"] = str(tmp_path / "in" / "anim.gif")
    gif.ytvis.write_text(json.dumps(document))
    make_segment_output(tmp_path / "in", stem="matroska", suffix=".mkv")
    make_segment_output(tmp_path / "in", stem="nut", suffix=".nut")
    make_segment_output(tmp_path / "in", stem="fine")
    result = run_export(str(tmp_path / "in"), "--to", "labelstudio,fiftyone", "--media-url", "/m/", "-o",
                        str(tmp_path / "exp"))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error:")]
    assert any("anim.gif as an image" in line and "ffmpeg -i" in line for line in errors), result.stderr
    assert not (tmp_path / "exp" / "anim").exists()
    warnings = [line for line in result.stderr.splitlines() if line.startswith("clipvis: warning:")]
    assert any(line.startswith("clipvis: warning: labelstudio:") and "matroska.mkv" in line and "ffmpeg -i" in line
               for line in warnings), result.stderr
    assert any(line.startswith("clipvis: warning: fiftyone:") and "nut.nut" in line and "ffmpeg -i" in line
               for line in warnings), result.stderr
    assert not any("fine.mp4" in line for line in warnings), result.stderr
    for stem in ("matroska", "nut", "fine"):  # written all the same
        assert (tmp_path / "exp" / stem / "labelstudio" / "tasks.json").is_file()
    assert run_export(str(tmp_path / "in" / "anim"), "--to", "labelstudio", "--media-url", "/m/", "-o",
                      str(tmp_path / "gif")).exit_code == 0  # Label Studio takes it, with a warning


def write_video_after_its_audio(path: Path, frames: int = 6, start: float = 1.0, rate: int = 25) -> Path:
    """An MP4 whose audio starts at 0 and whose constant-rate video starts ``start`` seconds later (an empty edit)."""
    import av

    with av.open(str(path), "w") as container:
        audio = container.add_stream("aac", rate=8000)
        audio.layout = "mono"
        video = container.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.time_base = video.codec_context.time_base = Fraction(1, 1000)
        samples = 0
        for _ in range(int(8000 * (start + frames / rate) / 1024) + 1):
            tone = (0.1 * np.sin(np.arange(samples, samples + 1024) / 8000 * 2 * np.pi * 440)).astype(np.float32)
            chunk = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts = 8000, samples
            samples += 1024
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((HEIGHT, WIDTH, 3), index * 20, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(1000 * (start + index / rate)), Fraction(1, 1000)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    return path


def test_label_studio_places_a_video_that_starts_after_its_audio_where_it_plays(tmp_path) -> None:
    """A constant-rate video starting 1 s after its audio had its boxes on Label Studio's frames 1-6 (0-0.2 s),
    where the player shows its pictures from 1 s (frames 26-31 at 25 frames/s); a variable-rate one was right.
    segment records the start (ytvis.json ``start_time``), and Label Studio counts from the file's start."""
    from clipvis.cli.results import TrackResult, VideoInfo
    from clipvis.cli.video_io import VideoReader, variable_frame_times, video_start_time
    from clipvis.cli.writers import YtvisWriter

    source = write_video_after_its_audio(tmp_path / "late.mp4")
    reader = VideoReader(source)
    indices = [index for index, _ in reader]
    probe = reader.probe()
    assert variable_frame_times(reader.frame_times, indices, probe.fps) is None  # a constant rate
    assert video_start_time(reader.frame_times, indices, probe.fps) == pytest.approx(1.0)
    assert video_start_time([0.0, 0.04], [0, 1], Fraction(25)) == 0.0 and video_start_time([], [], Fraction(25)) == 0
    info = VideoInfo(video_id=1, source=str(source), stem="late", height=HEIGHT, width=WIDTH, fps=probe.fps,
                     frame_stride=1, frame_indices=indices, start_time=1.0)
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[5:20, 5:20] = True
    (tmp_path / "out" / "late").mkdir(parents=True)
    ytvis = YtvisWriter().write(tmp_path / "out" / "late" / "ytvis.json", info,
                                [TrackResult(1, 1, 0.9, [rle.encode(mask)] * len(indices))], CATEGORIES)
    assert json.loads(ytvis.read_text())["videos"][0]["start_time"] == 1.0
    result = run_export(str(ytvis), "--to", "labelstudio", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    (region,) = json.loads(next((tmp_path / "exp").rglob("tasks.json")).read_text())[0]["predictions"][0]["result"]
    assert [k["frame"] for k in region["value"]["sequence"]] == [26, 27, 28, 29, 30, 31]
    assert region["value"]["framesCount"] >= 31


def test_label_studio_video_url_gives_the_server_the_exact_file_name(tmp_path) -> None:
    """`data.video` was the media URL + the raw file name: for `my clip #1 ü?.mp4` under `?d=clips/` the server got
    d = 'clips/my clip ' (`#` starts a fragment; `?`, `&`, `+`, `%` and spaces break a query value too)."""
    name = "my clip #1 ü?&+%=x"
    output = make_segment_output(tmp_path / "out", stem=name)
    urls = {}
    for prefix in ("/data/local-files/?d=clips/", "http://host/clips/", ""):
        dest = tmp_path / f"exp{len(urls)}"
        arguments = ["--media-url", prefix] if prefix else []
        result = run_export(str(output.folder), "--to", "labelstudio", "-o", str(dest), *arguments)
        assert result.exit_code == 0, result.output
        root = dest / name / "labelstudio"
        urls[prefix] = json.loads((root / "tasks.json").read_text())[0]["data"]["video"]
        assert (root / "media" / f"{name}.mp4").is_file()
    query = urlsplit(urls["/data/local-files/?d=clips/"])
    assert query.path == "/data/local-files/" and not query.fragment
    assert parse_qs(query.query) == {"d": [f"clips/{name}.mp4"]}
    path = urlsplit(urls["http://host/clips/"])
    assert unquote(path.path) == f"/clips/{name}.mp4" and not path.query and not path.fragment
    bare = urlsplit(urls[""])
    assert unquote(bare.path) == f"{name}.mp4" and not bare.query and not bare.fragment and not bare.scheme


def test_fiftyone_directory_follows_the_documented_layout(tmp_path) -> None:

    output = make_segment_output(tmp_path / "out")
    result = run_export(str(output.folder), "--to", "fiftyone", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    root = tmp_path / "exp" / "clip" / "fiftyone"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["type"] == "eta.core.datasets.LabeledVideoDataset"
    (entry,) = manifest["index"]
    assert (root / entry["data"]).is_file() and (root / entry["labels"]).is_file()
    labels = json.loads((root / entry["labels"]).read_text())
    assert labels["filename"] == Path(entry["data"]).name
    seen = 0
    for key, frame in labels["frames"].items():
        assert int(key) == frame["frame_number"] >= 1
        position = output.info.frame_indices.index(frame["frame_number"] - 1)
        for obj in frame["objects"]["objects"]:
            assert obj["type"] == "eta.core.objects.DetectedObject"
            track = next(t for t in output.tracks if t.track_id == obj["index"])
            assert obj["label"] == CATEGORIES[track.category_id - 1] and obj["confidence"] == track.score
            box = obj["bounding_box"]
            x0, y0 = round(box["top_left"]["x"] * WIDTH), round(box["top_left"]["y"] * HEIGHT)
            x1, y1 = round(box["bottom_right"]["x"] * WIDTH), round(box["bottom_right"]["y"] * HEIGHT)
            crop = deserialize_mask(obj["mask"])
            assert crop.shape == (y1 - y0, x1 - x0)
            full = np.zeros((HEIGHT, WIDTH), bool)
            full[y0:y1, x0:x1] = crop
            assert np.array_equal(full, output.masks[track.track_id][position])
            seen += 1
    assert seen == sum(m is not None for masks in output.masks.values() for m in masks)


def test_an_export_never_replaces_what_it_did_not_export_from_the_same_video(tmp_path) -> None:
    """Annotators' corrected files in DEST/clip/ were deleted by `export -o DEST`; two videos named clip shared
    DEST/clip/ once exported in separate commands. Now a folder holding anything but earlier exports of the same
    video is left alone (the next name is taken), and beside the results an entry segment did not write is never
    replaced."""
    one = make_segment_output(tmp_path / "run1")
    two = make_segment_output(tmp_path / "run2")
    dest = tmp_path / "dest"
    corrected = dest / "clip" / "coco" / "instances_fixed.json"
    corrected.parent.mkdir(parents=True)
    corrected.write_text("corrected by annotators")
    result = run_export(str(one.ytvis), "--to", "coco", "--no-media", "-o", str(dest))
    assert result.exit_code == 0, result.output
    assert corrected.read_text() == "corrected by annotators" and (dest / "clip-2" / "coco").is_dir()
    result = run_export(str(two.ytvis), "--to", "coco,mots-txt", "--no-media", "-o", str(dest))
    assert result.exit_code == 0 and (dest / "clip-3" / "mots-txt").is_dir(), result.output
    for run, folder in ((one, "clip-2"), (two, "clip-3"), (one, "clip-2")):  # each back to its own folder
        result = run_export(str(run.ytvis), "--to", "coco,mots-txt", "--no-media", "-o", str(dest))
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in (dest / folder).iterdir() if not p.name.startswith(".")) == ["coco", "mots-txt"]
    assert sorted(p.name for p in dest.iterdir()) == ["clip", "clip-2", "clip-3"]
    # a file added to an earlier export, or one edited there (corrections), is not thrown away by the next export
    notes = dest / "clip-2" / "mots-txt" / "my_corrections.txt"
    notes.write_text("mine")
    result = run_export(str(one.ytvis), "--to", "mots-txt", "--no-media", "-o", str(dest))
    assert result.exit_code == 1 and "changed since clipvis exported it (my_corrections.txt)" in result.output
    assert notes.read_text() == "mine"
    notes.unlink()
    edited = dest / "clip-2" / "mots-txt" / "mots.txt"
    edited.write_text(edited.read_text() + "\n")
    result = run_export(str(one.ytvis), "--to", "mots-txt", "--no-media", "-o", str(dest))
    assert result.exit_code == 1 and "(mots.txt)" in result.output

    beside = one.folder / "mots-txt"
    beside.mkdir()
    (beside / "mine.txt").write_text("someone's")
    result = run_export(str(one.ytvis), "--to", "coco,mots-txt", "--no-media")
    assert result.exit_code == 1 and "mots-txt: exists and is not an export of this video by clipvis" in result.output
    assert (beside / "mine.txt").read_text() == "someone's" and not (one.folder / "coco").exists()


def test_a_results_file_of_another_tool_without_a_source_and_with_uncompressed_rle_exports(tmp_path) -> None:
    """Ground-truth style files name no source video and hold uncompressed RLE (lists of counts): every format
    refused the file, and list counts reached results.json (pycocotools' area() refuses them) and coco."""
    output = make_segment_output(tmp_path / "out")
    document = json.loads(output.ytvis.read_text())
    for video in document["videos"]:
        video.pop("source")
    for annotation in document["annotations"]:
        annotation["segmentations"] = [
            None if s is None else {"size": s["size"], "counts": [int(c) for c in np.diff(np.flatnonzero(np.diff(
                np.concatenate([[2], coco_mask.decode(s).flatten(order="F"), [2]])) != 0))]}
            for s in annotation["segmentations"]]
    other = tmp_path / "other" / "gt.json"
    other.parent.mkdir()
    other.write_text(json.dumps(document))
    dest = tmp_path / "dest"
    result = run_export(str(other), "--to", "ytvis,mots-txt,coco", "--no-media", "-o", str(dest))
    assert result.exit_code == 0, result.output
    results = json.loads((dest / "results.json").read_text())
    assert all(isinstance(s["counts"], str) for r in results for s in r["segmentations"] if s is not None)
    expected = {t.track_id: t.segmentations for t in output.tracks}
    for r, (track_id, segmentations) in zip(results, sorted(expected.items()), strict=True):
        assert [None if s is None else s["counts"] for s in r["segmentations"]] == [
            None if s is None else s["counts"] for s in segmentations], track_id
    coco = json.loads(next(dest.rglob("instances_default.json")).read_text())
    assert coco["annotations"] and all(isinstance(a["segmentation"]["counts"], str) for a in coco["annotations"])
    result = run_export(str(other), "--to", "cvat-images", "-o", str(tmp_path / "media"))
    assert result.exit_code == 1 and "the results name no source video (videos[].source)" in result.output


def test_a_large_vocabulary_exports_to_mots_when_the_tracks_classes_fit(tmp_path) -> None:
    """70 classes (no --classes) of which the tracks use ids 1..3 failed as "70 classes do not fit"; with tracks of
    ids above 65, those are renumbered."""
    output = make_segment_output(tmp_path / "out")
    document = json.loads(output.ytvis.read_text())
    document["categories"] = [{"id": i, "name": f"thing{i}"} for i in range(1, 71)]
    output.ytvis.write_text(json.dumps(document))
    result = run_export(str(output.folder), "--to", "mots-txt", "-o", str(tmp_path / "small"))
    assert result.exit_code == 0, result.output
    lines = (tmp_path / "small" / "clip" / "mots-txt" / "mots.txt").read_text().splitlines()
    assert {int(line.split()[2]) for line in lines} <= {1, 2, 3}
    document["annotations"][0]["category_id"] = 70
    output.ytvis.write_text(json.dumps(document))
    result = run_export(str(output.folder), "--to", "mots-txt", "-o", str(tmp_path / "large"))
    assert result.exit_code == 0, result.output
    class_map = json.loads((tmp_path / "large" / "clip" / "mots-txt" / "class_map.json").read_text())
    assert class_map["renumbered"] is True and [c["name"] for c in class_map["classes"]][-1] == "thing70"


def test_classes_match_whatever_the_accents_composition_and_onnx_is_named_alone(tmp_path) -> None:
    output = make_segment_output(tmp_path / "out")
    document = json.loads(output.ytvis.read_text())
    document["categories"][0]["name"] = "Çay bardağı"  # composed, as segment wrote the user's class
    output.ytvis.write_text(json.dumps(document))
    decomposed = "C\u0327ay bardag\u0306\u0131"  # typed on macOS
    result = run_export(str(output.folder), "--to", "ytvis", "--classes", decomposed, "-o", str(tmp_path / "e"))
    assert result.exit_code == 0 and "no such class" not in result.output, result.output
    assert {r["category_id"] for r in json.loads((tmp_path / "e" / "results.json").read_text())} == {1}
    result = run_export(str(output.folder), "--to", "ytvis,onnx")
    assert result.exit_code == 2 and "--to onnx exports the network and takes no results" in result.output
    # with --model (right for onnx) the same: not "--model is only for --to onnx"
    result = run_export(str(output.folder), "--to", "ytvis,onnx", "--model", "w.pth")
    assert result.exit_code == 2 and "--to onnx exports the network and takes no results" in result.output


def test_one_results_file_refuses_videos_whose_category_ids_mean_other_classes(tmp_path) -> None:
    one = make_segment_output(tmp_path / "a")
    two = make_segment_output(tmp_path / "b", stem="other", video_id=2)
    document = json.loads(two.ytvis.read_text())
    document["categories"][0]["name"] = "zebra"
    two.ytvis.write_text(json.dumps(document))
    result = run_export(str(one.folder), str(two.folder), "--to", "ytvis", "-o", str(tmp_path / "sub"))
    assert result.exit_code == 1 and "different category lists (id 1: 'cat' / 'zebra')" in result.output
    assert "clipvis: error: 1 of 1 results file(s) not written" in result.output  # not "1 of 3 export(s)"
    assert not (tmp_path / "sub" / "results.json").exists()


def test_a_long_export_reports_its_progress_as_it_goes(tmp_path) -> None:
    """An export printed nothing until a video's formats were all written (8 minutes of cvat-video for a 30-minute
    video, in a log that looked hung): progress now follows the masks each format handles."""
    from clipvis.cli.exporters.base import ExportOptions
    from clipvis.cli.exporters.loading import discover_export_inputs
    from clipvis.cli.exporters.runner import ExportRunner

    class Recorder:
        def __init__(self) -> None:
            self.total, self.done = None, []

        def video_started(self, source, stem, total) -> None:
            self.total = total

        def frames_done(self, count: int) -> None:
            self.done.append(count)

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    output = make_segment_output(tmp_path / "out")
    recorder = Recorder()
    runner = ExportRunner(["cvat-video", "mots-txt"], ExportOptions(), tmp_path / "exp", recorder)
    [item] = discover_export_inputs([str(output.ytvis)])
    [outcome] = runner.run(item)
    assert outcome.status == "complete", outcome.error
    frames = output.info.num_frames
    assert recorder.total == 2 * frames and sum(recorder.done) == 2 * frames, (frames, recorder.total, recorder.done)
    assert len(recorder.done) > 4  # frame by frame, not once at the end


def test_two_videos_of_one_name_in_one_results_file_get_a_folder_each(tmp_path) -> None:
    """Beside a results file of several videos, two named `clip` both wanted ./clip/: the second failed."""
    one = make_segment_output(tmp_path / "a")
    two = make_segment_output(tmp_path / "b", video_id=2)
    document = json.loads(one.ytvis.read_text())
    other = json.loads(two.ytvis.read_text())
    document["videos"] += other["videos"]
    document["annotations"] += other["annotations"]
    merged = tmp_path / "merged" / "results_of_both.json"
    merged.parent.mkdir()
    merged.write_text(json.dumps(document))
    result = run_export(str(merged), "--to", "mots-txt")
    assert result.exit_code == 0, result.output
    assert (merged.parent / "clip" / "mots-txt").is_dir() and (merged.parent / "clip-2" / "mots-txt").is_dir()
    assert "[2/2]" in result.stderr and "[2/1]" not in result.stderr, result.stderr  # one input, two videos


def test_one_results_file_holds_a_video_whose_other_formats_failed(tmp_path) -> None:
    """`--to labelstudio,ytvis` over a video and an image folder: labelstudio refuses the image folder, and the
    results.json of both was refused ('1 of its 2 input(s) failed (a server would score them as empty)'), though
    both inputs' results were read and nothing was missing from it. A video whose own formats failed (an image
    folder for labelstudio, a source gone for mots-png) still goes into the results file."""
    one = make_segment_output(tmp_path / "a")
    two = make_segment_output(tmp_path / "b", stem="other", video_id=2)
    data = json.loads(two.ytvis.read_text())
    data["videos"][0]["source"] = str(tmp_path)  # an image folder: Label Studio reviews videos only
    data["videos"][0]["kind"] = "images"
    two.ytvis.write_text(json.dumps(data))
    dest = tmp_path / "dest"
    result = run_export(str(one.folder), str(two.folder), "--to", "labelstudio,ytvis", "-o", str(dest))
    assert result.exit_code == 1
    assert "Label Studio reviews videos" in result.stderr and "not written" not in result.stderr
    assert "clipvis: error: 1 of 2 export(s) failed\n" in result.stderr
    assert str(dest / "results.json") in result.stdout.splitlines()
    expected = [(video_id, t.category_id, t.score) for video_id, output in ((1, one), (2, two)) for t in output.tracks]
    results = json.loads((dest / "results.json").read_text())
    assert [(r["video_id"], r["category_id"], r["score"]) for r in results] == expected
    assert (dest / "clip" / "labelstudio").is_dir() and not (dest / "other").exists()

    three = make_segment_output(tmp_path / "c", stem="third", video_id=2)
    one.video.unlink()  # mots-png needs its frames
    dest = tmp_path / "dest2"
    result = run_export(str(one.folder), str(three.folder), "--to", "mots-png,ytvis", "-o", str(dest))
    assert result.exit_code == 1 and "not written" not in result.stderr
    assert json.loads((dest / "results.json").read_text()) == results
    assert (dest / "third" / "mots-png").is_dir()  # the other video's own files are written


def test_without_o_a_failed_video_keeps_its_earlier_files_and_its_results_file_is_rewritten(tmp_path) -> None:
    """Beside `ytvis.json`, a video whose labelstudio export fails (its source is gone) keeps the labelstudio files of
    an earlier export as they were, and its `results.json` is written anew from its results (as the README says:
    the results file holds a video whose other formats failed)."""
    one = make_segment_output(tmp_path / "a")
    assert run_export(str(one.folder), "--to", "labelstudio,ytvis").exit_code == 0
    tasks = (one.folder / "labelstudio" / "tasks.json").read_bytes()
    one.video.unlink()
    result = run_export(str(one.folder), "--to", "labelstudio,ytvis", "--min-score", "0.5")
    assert result.exit_code == 1 and "labelstudio needs the video file itself" in result.stderr
    assert (one.folder / "labelstudio" / "tasks.json").read_bytes() == tasks
    assert result.stdout.splitlines() == [str(one.folder / "results.json")]
    results = json.loads((one.folder / "results.json").read_text())
    assert [r["score"] for r in results] == [t.score for t in one.tracks if t.score >= 0.5]


@pytest.mark.parametrize("destination", [False, True], ids=["beside", "under-o"])
def test_a_results_file_no_export_wrote_is_never_replaced(tmp_path, destination) -> None:
    """A `results.json` of someone's own where the export's would go (beside `ytvis.json`, or in `-o`'s folder), or
    one edited since an export wrote it, stays as it is: one line, exit 1 (it was overwritten without a word). One
    an export wrote is replaced by the next export's."""
    one = make_segment_output(tmp_path / "a")
    folder = tmp_path / "dest" if destination else one.folder
    args = (str(one.folder), "--to", "ytvis") + (("-o", str(folder)) if destination else ())
    folder.mkdir(exist_ok=True)
    (folder / "results.json").write_text("my own results\n")
    result = run_export(*args)
    assert result.exit_code == 1 and (folder / "results.json").read_text() == "my own results\n"
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert errors[0] == (f"clipvis: error: {folder / 'results.json'}: exists and is not a results file exported by "
                         "clipvis; nothing was replaced (move it away, or export with another -o)")
    assert errors[1:] == ["clipvis: error: 1 of 1 results file(s) not written"] and result.stdout == ""
    (folder / "results.json").unlink()
    assert run_export(*args).exit_code == 0 and run_export(*args, "--min-score", "0.5").exit_code == 0
    assert [r["score"] for r in json.loads((folder / "results.json").read_text())] == [
        t.score for t in one.tracks if t.score >= 0.5]
    with (folder / "results.json").open("a") as edited:
        edited.write(" ")
    result = run_export(*args)
    assert result.exit_code == 1 and "changed since clipvis exported it" in result.stderr
    assert (folder / "results.json").read_text().endswith("]\n ")


def test_one_results_file_is_not_written_without_an_input_that_could_not_be_read(tmp_path) -> None:
    """An input whose results cannot be read would be missing from the results file: a server scores a missing
    video as one without objects, so the file is not written."""
    one = make_segment_output(tmp_path / "a")
    two = make_segment_output(tmp_path / "b", stem="other", video_id=2)
    two.ytvis.write_text("{not json")
    dest = tmp_path / "dest"
    result = run_export(str(one.folder), str(two.folder), "--to", "mots-png,ytvis", "-o", str(dest))
    assert result.exit_code == 1
    assert f"{dest / 'results.json'} not written: 1 of its 2 input(s) failed" in result.output
    assert not (dest / "results.json").exists() and "results.json" not in result.stdout
    assert (dest / "clip" / "mots-png").is_dir()  # the other video's own files are written


def test_an_export_killed_while_its_files_move_into_place_is_replaced_by_the_next(tmp_path, monkeypatch) -> None:
    """Killed after moving one format into place and before recording the files: the next export of the video
    refused the folder as not its own (or as corrected)."""
    from clipvis.cli.exporters import staging

    output = make_segment_output(tmp_path / "out")
    args = (str(output.folder), "--to", "coco,mots-txt", "--no-media", "-o", str(tmp_path / "dest"))
    assert run_export(*args).exit_code == 0
    original, moved = staging._replace, []

    def killed_after_the_first(new, final):
        if moved:
            raise KeyboardInterrupt  # as a kill would stop it there
        moved.append(final)
        original(new, final)

    with monkeypatch.context() as patch:
        patch.setattr(staging, "_replace", killed_after_the_first)
        assert run_export(*args).exit_code == 130
    result = run_export(*args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "dest" / "clip").iterdir() if not p.name.startswith(".")) == [
        "coco", "mots-txt"]


def test_an_image_folder_exports_the_frames_its_results_name_after_the_folder_changed(tmp_path) -> None:
    """An image added to the folder after segment (a cover that sorts first) shifted every exported image by one,
    silently: the folder was listed again and its frames taken by position. They are taken by the names the results
    recorded; a named frame that is gone is one line naming the folder and the file."""
    from clipvis.cli import rle
    from clipvis.cli.results import TrackResult, VideoInfo
    from clipvis.cli.writers import YtvisWriter

    frames = tmp_path / "frames"
    frames.mkdir()
    shades = {f"{i}.png": 30 * i for i in range(1, 7)}
    for name, shade in shades.items():
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), shade, np.uint8)).save(frames / name)
    names = ["1.png", "3.png", "5.png"]  # --stride 2
    info = VideoInfo(video_id=1, source=str(frames), stem="frames", height=HEIGHT, width=WIDTH, fps=30.0,
                     frame_stride=2, frame_indices=[0, 2, 4], file_names=[f"frames/{n}" for n in names], kind="images")
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[5:20, 5:20] = True
    track = TrackResult(1, 1, 0.9, [rle.encode(mask)] * 3)
    (tmp_path / "out" / "frames").mkdir(parents=True)
    ytvis = YtvisWriter().write(tmp_path / "out" / "frames" / "ytvis.json", info, [track], CATEGORIES)
    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 250, np.uint8)).save(frames / "0_cover.png")  # added later
    result = run_export(str(ytvis), "--to", "coco", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    document = json.loads(next((tmp_path / "exp").rglob("instances_default.json")).read_text())
    exported = sorted(document["images"], key=lambda image: image["id"])
    assert len(exported) == 3
    for image, name in zip(exported, names, strict=True):
        pixels = np.asarray(Image.open(next((tmp_path / "exp").rglob(f"images/{image['file_name']}"))), np.int64)
        assert abs(pixels.mean() - shades[name]) < 3, (image["file_name"], name, pixels.mean())
    (frames / "3.png").unlink()
    result = run_export(str(ytvis), "--to", "coco", "-o", str(tmp_path / "exp2"))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "error" in line]
    assert lines[0] == (f"clipvis: error: {ytvis}: source folder {frames} has no frame 3.png (named in the results' "
                     "file_names): not the folder the results were made from, or it changed since"), result.output


def test_results_without_file_names_take_a_youtube_vis_folders_frames_by_position(tmp_path) -> None:
    """Results from another tool name no files (clipvis reads them as ``<stem>/00000.jpg, 00001.jpg, ...``); over a
    YouTube-VIS folder (00000.jpg, 00005.jpg, ...) the first of those names exists, and the export failed on the
    second. Names the folder does not all hold are not names: the frames are taken by position."""
    from clipvis.cli import rle

    frames = tmp_path / "vid"
    frames.mkdir()
    for k in range(3):
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 40 + 80 * k, np.uint8)).save(frames / f"{5 * k:05d}.jpg")
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[5:20, 5:20] = True
    encoded = rle.encode(mask)
    document = {
        "videos": [{"id": 1, "height": HEIGHT, "width": WIDTH, "length": 3, "source": str(frames)}],
        "categories": [{"id": 1, "name": CATEGORIES[0]}],
        "annotations": [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [encoded] * 3}],
    }
    results = tmp_path / "ytvis.json"
    results.write_text(json.dumps(document))
    result = run_export(str(results), "--to", "coco", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    exported = json.loads(next((tmp_path / "exp").rglob("instances_default.json")).read_text())
    assert len(exported["images"]) == 3


def test_jsonl_log_gives_warnings_notes_and_the_end_as_json_events(tmp_path) -> None:
    """--log-format jsonl: the warning for a class that is none of the video's, the cvat-video polygons' note and the
    failure count were plain lines after the JSON events; now every stderr line is an event, the summary last."""
    output = make_segment_output(tmp_path / "out")
    result = run_export(str(output.ytvis), str(tmp_path / "missing"), "--to", "cvat-video", "--classes", "cat,dgo",
                        "--log-format", "jsonl")
    assert result.exit_code == 1, result.output
    events = [json.loads(line) for line in result.stderr.splitlines()]  # nothing but JSON
    kinds = [event["event"] for event in events]
    warning = events[kinds.index("warning")]
    assert "--classes dgo: no such class here" in warning["message"] and not warning["message"].startswith("warning")
    assert "polygons cover the masks with mean IoU" in events[kinds.index("note")]["message"]
    assert events[-1] == {"event": "summary", "inputs": 2, "complete": 1, "skipped": 0, "failed": 1, "scope": "job",
                          "status": "failed", "message": "1 of 2 export(s) failed"}

    human = run_export(str(output.ytvis), "--to", "cvat-video", "--classes", "cat,dgo")  # the same lines as before
    assert human.exit_code == 0, human.output
    assert "clipvis: warning: " + warning["message"] in human.stderr.splitlines()
    assert "clipvis: " + events[kinds.index("note")]["message"] in human.stderr.splitlines()


def test_jsonl_events_of_a_video_come_together_in_order(tmp_path) -> None:
    """A video's warning and cvat-video note came after every video's events (after another video's
    `video_failed`, and the input's unfinished-run warning after its video's `video_done`); each is now said with
    its video: warnings after its `video_start`, notes before its `video_done`. `frames_expected` counts a video's
    frames once per format (as the progress does), `video_done`'s `frames` its frames."""
    one = make_segment_output(tmp_path / "a")
    from clipvis.cli.inputs import VideoSource
    from clipvis.cli.writers import RunManifest

    run = RunManifest.start(VideoSource(one.video), "clip", "w", CATEGORIES, {})
    run.status = "failed"  # its last segment run failed: ytvis.json is not known to be from a complete run
    run.write(one.folder / "run.json")
    two = make_segment_output(tmp_path / "b", stem="two")
    two.video.unlink()  # mots-png needs its frames: this video fails
    result = run_export(str(one.folder), str(two.folder), "--to", "cvat-video,mots-png", "--classes", "cat,dgo",
                        "--log-format", "jsonl")
    assert result.exit_code == 1, result.output
    events = [json.loads(line) for line in result.stderr.splitlines()]
    shown = [(e["event"], e["stem"] if "stem" in e else e.get("message", "").split(":")[0]) for e in events]
    assert shown[:-1] == [
        ("batch_start", ""),
        ("warning", str(one.folder)), ("video_start", "clip"), ("warning", "clip"), ("note", "clip"),
        ("video_done", "clip"),
        ("video_start", "two"), ("warning", "two"), ("video_failed", "two"),
    ], shown
    assert "run.json says its last segment run is 'failed'" in events[1]["message"]
    assert "polygons cover the masks with mean IoU" in events[4]["message"]
    frames = len(one.info.frame_indices)
    assert events[2]["frames_expected"] == 2 * frames and events[5]["frames"] == frames  # 2 formats
    assert events[5]["fps"] is None  # no model ran: no frame rate to report


def test_export_under_torchrun_is_refused_once_per_machine(tmp_path, monkeypatch) -> None:
    """Under torchrun every worker exported every input into the same folders at once (busy-folder failures, the
    results file written by each): one usage line from each machine's first worker, nothing written."""
    output = make_segment_output(tmp_path / "out")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for local_rank, said in (("0", True), ("1", False)):
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        result = run_export(str(output.folder), "--to", "coco,ytvis", "-o", str(tmp_path / "dest"))
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr == ("clipvis: error: export runs in one process, without torchrun (it needs no GPU); to "
                                 "spread many inputs over CPUs, run several exports of disjoint inputs (e.g. xargs -P) "
                                 "(see 'clipvis export --help')\n" if said else "")
    assert not (tmp_path / "dest").exists()


def _results_folders(root: Path, count: int, frames: int = 60) -> list[Path]:
    """``count`` segment folders of one synthetic output, video ids 1..count, each with ``frames`` frames."""
    base = json.loads(make_segment_output(root / "base").ytvis.read_text())
    video = base["videos"][0]
    repeat = -(-frames // len(video["frame_indices"]))
    video["frame_indices"] = list(range(frames))
    video["file_names"] = [f"clip/{i:05d}.jpg" for i in range(frames)]
    video["length"] = frames
    video["frame_stride"] = 1
    for annotation in base["annotations"]:
        annotation["segmentations"] = (annotation["segmentations"] * repeat)[:frames]
    folders = []
    for video_id in range(1, count + 1):
        video["id"] = video_id
        for annotation in base["annotations"]:
            annotation["video_id"] = video_id
        folder = root / f"v{video_id}"
        folder.mkdir()
        (folder / "ytvis.json").write_text(json.dumps(base))
        folders.append(folder)
    return folders


def test_the_results_file_of_many_videos_is_written_as_they_go_with_the_same_bytes(tmp_path) -> None:
    """`--to ytvis -o DIR` over many folders: the same bytes as the whole list dumped at once (and zipped), with
    memory that does not grow with the number of videos (each video's results go to a temporary file)."""
    import io
    import tracemalloc

    from clipvis.cli.exporters.base import ExportOptions, select_tracks
    from clipvis.cli.exporters.loading import load_videos
    from clipvis.cli.zip_files import add_bytes

    folders = _results_folders(tmp_path / "in", 40)
    videos = [select_tracks(video, ExportOptions()) for f in folders for video in load_videos(f / "ytvis.json")]
    whole = [{"video_id": video.info.video_id, "category_id": track.category_id, "score": track.score,
              "segmentations": list(track.segmentations)} for video in videos for track in video.tracks]
    expected = json.dumps(whole, separators=(",", ":")) + "\n"
    assert run_export(*map(str, folders), "--to", "ytvis", "-o", str(tmp_path / "a")).exit_code == 0
    assert (tmp_path / "a" / "results.json").read_text(encoding="utf-8") == expected
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        add_bytes(archive, "results.json", expected)
    assert run_export(*map(str, folders), "--to", "ytvis", "--zip", "-o", str(tmp_path / "z")).exit_code == 0
    assert (tmp_path / "z" / "results.zip").read_bytes() == buffer.getvalue()
    left = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert left == [".clipvis-export.json", ".clipvis.lock", "results.json"]  # no temporary file

    def peak(count: int) -> int:
        tracemalloc.start()
        try:
            result = run_export(*map(str, folders[:count]), "--to", "ytvis", "-o", str(tmp_path / f"p{count}"))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert result.exit_code == 0

    peak(10)  # imports and caches, once
    few, many = peak(10), peak(40)
    assert many < 1.5 * few, (few, many)


@pytest.mark.parametrize("failure", ["disk full", "interrupted"])
def test_a_failure_mid_export_leaves_no_results_file_that_looks_complete(tmp_path, monkeypatch, failure) -> None:
    from clipvis.cli.exporters import ytvis

    folders = _results_folders(tmp_path / "in", 6, frames=6)
    dest = tmp_path / "sub"
    assert run_export(*map(str, folders[:2]), "--to", "ytvis", "-o", str(dest)).exit_code == 0
    earlier = (dest / "results.json").read_bytes()
    add = ytvis.ResultsStream.add

    def failing(self, video) -> None:
        if self.videos == 3:
            if failure == "interrupted":
                raise KeyboardInterrupt
            self._file.write = lambda data: (_ for _ in ()).throw(OSError(28, "No space left on device"))
        add(self, video)

    monkeypatch.setattr(ytvis.ResultsStream, "add", failing)
    result = run_export(*map(str, folders), "--to", "ytvis", "-o", str(dest))
    if failure == "interrupted":
        assert result.exit_code == 130
    else:
        assert result.exit_code == 1
        errors = [line for line in result.output.splitlines() if "error" in line]
        assert any("No space left on device" in line for line in errors), result.output
        assert "1 of 1 results file(s) not written" in result.output
    assert (dest / "results.json").read_bytes() == earlier  # the earlier export's, whole
    assert sorted(p.name for p in dest.iterdir()) == [".clipvis-export.json", ".clipvis.lock", "results.json"]


def test_each_export_is_listed_as_it_ends_and_an_interrupted_batch_lists_what_it_finished(tmp_path,
                                                                                          monkeypatch) -> None:
    """export listed its files on stdout only once the whole batch had ended: a pipeline read nothing meanwhile, and
    the exports an interruption left finished were never listed."""
    from clipvis.cli.exporters.runner import ExportRunner

    folders = _results_folders(tmp_path / "in", 3, frames=4)
    run = ExportRunner.run
    seen: list[str] = []

    def interrupted_at_the_third(self, item):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(str(item.path))
        return run(self, item)

    monkeypatch.setattr(ExportRunner, "run", interrupted_at_the_third)
    result = run_export(*map(str, folders), "--to", "coco")
    assert result.exit_code == 130
    assert result.stdout.splitlines() == [str(folder / "coco") for folder in folders[:2]]
    assert not (folders[2] / "coco").exists()


class _FillingDisk(io.RawIOBase):
    """A temporary file on a disk that is full once ``room`` bytes are written (the error comes when the buffered
    file writes out what it holds: at a flush, a seek or close)."""

    def __init__(self, room: int) -> None:
        self.data = bytearray()
        self.room = room
        self.position = 0

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(self.data) + len(data) > self.room:
            raise OSError(28, "No space left on device")
        self.data += bytes(data)
        self.position = len(self.data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = offset if whence == 0 else len(self.data) + offset if whence == 2 else self.position + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        chunk = self.data[self.position : self.position + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.position += len(chunk)
        return len(chunk)


def test_a_disk_that_fills_while_the_results_file_is_written_is_one_error_line(tmp_path, monkeypatch) -> None:
    """The results' temporary file buffers its writes, so a full disk shows when the buffer is written out: at the
    end (tell/seek) or when the file is dropped. It was said, then followed by a traceback from closing the file."""
    from clipvis.cli.exporters import ytvis

    folders = _results_folders(tmp_path / "in", 3, frames=6)
    real = ytvis.tempfile.TemporaryFile  # the results' file only (the masks' spill has its own prefix)
    monkeypatch.setattr(ytvis.tempfile, "TemporaryFile",
                        lambda **kwargs: real(**kwargs) if "prefix" in kwargs else io.BufferedRandom(_FillingDisk(64)))
    result = run_export(*map(str, folders), "--to", "ytvis", "-o", str(tmp_path / "sub"))
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("clipvis: error:")]
    assert "output not writable (No space left on device)" in errors[0], result.output
    assert errors[1:] == ["clipvis: error: 1 of 1 results file(s) not written"], result.output
    assert not (tmp_path / "sub" / "results.json").exists()


@pytest.mark.parametrize("zipped", [False, True], ids=["results.json", "results.zip"])
def test_a_results_file_into_a_folder_we_may_not_write_says_output_not_writable(tmp_path, monkeypatch, zipped) -> None:
    """The results' temporary file is made before the staging folder: a folder we may not write said
    "Permission denied (<folder>/tmp8soye9iu)", a random name, where it said "<dest>: output not writable (...)"."""
    from clipvis.cli.exporters import ytvis

    folders = _results_folders(tmp_path / "in", 2, frames=6)
    readonly = tmp_path / "readonly"
    readonly.mkdir()

    real = ytvis.tempfile.TemporaryFile

    def temporary_file(dir=None, **kwargs):  # chmod 555 does not stop the tests' root
        if "prefix" in kwargs:  # the masks' spill, in $TMPDIR
            return real(dir=dir, **kwargs)
        raise PermissionError(13, "Permission denied", os.path.join(dir, "tmp8soye9iu"))

    monkeypatch.setattr(ytvis.tempfile, "TemporaryFile", temporary_file)
    dest = readonly if zipped else readonly / "results"
    result = run_export(*map(str, folders), "--to", "ytvis", *(["--zip"] if zipped else []), "-o", str(dest))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error")]
    assert errors == [f"clipvis: error: {dest}: output not writable (Permission denied)",
                      "clipvis: error: 1 of 1 results file(s) not written"]
    assert list(readonly.iterdir()) == []


def test_a_folder_of_outputs_is_exported_in_the_order_segment_lists_its_videos(tmp_path) -> None:
    """export sorted the whole relative path as one string: cam/ came after cam2/ and cam10/ ('/' sorts after the
    digits' key), and clip/ after clip-2/; segment orders each folder's entries in natural order, part by part."""
    from clipvis.cli.exporters.loading import discover_export_inputs
    from clipvis.cli.inputs import discover_inputs

    names = ["cam10", "b", "cam", "clip-10", "a", "cam2", "clip", "clip-2"]
    for name in names:
        (tmp_path / "outputs" / name).mkdir(parents=True)
        (tmp_path / "outputs" / name / "ytvis.json").write_text("{}")
        (tmp_path / "videos" / name).mkdir(parents=True)
        (tmp_path / "videos" / name / "v.mp4").write_bytes(b"x")
    exported = [item.path.parent.name for item in discover_export_inputs([str(tmp_path / "outputs")])]
    segmented = [source.path.parent.name for source in discover_inputs([str(tmp_path / "videos")])]
    assert exported == segmented == ["a", "b", "cam", "cam2", "cam10", "clip", "clip-2", "clip-10"]


def test_inputs_sharing_a_video_id_are_named_with_why(tmp_path) -> None:
    """A rerun after a video was added keeps the folders it skips with the ids of the first run: the refusal said
    "export them separately, or use the files clipvis evaluate writes", which told a user of one output root nothing."""
    folders = _results_folders(tmp_path / "in", 3)
    data = json.loads((folders[2] / "ytvis.json").read_text())
    data["videos"][0]["id"] = 2
    for annotation in data["annotations"]:
        annotation["video_id"] = 2
    (folders[2] / "ytvis.json").write_text(json.dumps(data))
    result = run_export(*map(str, folders), "--to", "ytvis", "-o", str(tmp_path / "a"))
    assert result.exit_code == 1
    assert (f"several inputs share video ids (2: {folders[1]}, {folders[2]}): a video id is the input's position in "
            "the segment run") in result.stderr and "--overwrite" in result.stderr  # paths: two runs' folders are
    # often both named after the same video (review8: "2: clip, clip")


def test_ytvis_results_take_the_ids_of_a_gt_file_given_with_gt(tmp_path) -> None:
    """The results file carries the inputs' ids: two segment runs' videos (both id 1) were refused together, and
    against a GT of other ids an evaluator scored a video of the same length and size as another one, silently.
    `--gt` gives each video the GT's id of the same frames folder and each class the GT's id of its name; a class the
    GT lacks is left out with one warning, a video it lacks refuses the file in one line."""
    a = make_segment_output(tmp_path / "run1", stem="a", stride=1)  # 12 frames, as the GT's
    b = make_segment_output(tmp_path / "run2", stem="b", stride=1)
    assert a.info.video_id == b.info.video_id == 1
    videos = [{"id": video_id, "height": 48, "width": 64, "length": 12,
               "file_names": [f"{name}/{frame:05d}.jpg" for frame in range(12)]}
              for video_id, name in ((9, "b"), (4, "a"), (2, "c"))]
    gt = {"videos": videos, "categories": [{"id": 20, "name": "Dog"}, {"id": 3, "name": "cat"}], "annotations": []}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    result = run_export(str(a.folder), str(b.folder), "--to", "ytvis", "-o", str(tmp_path / "sub"),
                        "--gt", str(tmp_path / "gt.json"))
    assert result.exit_code == 0, result.output
    entries = json.loads((tmp_path / "sub" / "results.json").read_text())
    # the inputs' tracks 1 (dog, 0.9) and 2 (cat, 0.6); track 3 (hot air balloon) is no GT class
    assert [(e["video_id"], e["category_id"], e["score"]) for e in entries] == [
        (4, 20, 0.9), (4, 3, 0.6), (9, 20, 0.9), (9, 3, 0.6)]
    assert entries[0]["segmentations"] == [rle.encode(m) for m in a.masks[1]]
    assert "2 result(s) of classes the GT file lacks were left out (hot air balloon)" in result.stderr
    gt["videos"] = gt["videos"][:1]
    (tmp_path / "gt_b.json").write_text(json.dumps(gt))
    refused = run_export(str(a.folder), str(b.folder), "--to", "ytvis", "-o", str(tmp_path / "sub2"),
                         "--gt", str(tmp_path / "gt_b.json"))
    assert refused.exit_code == 1 and not (tmp_path / "sub2" / "results.json").exists()
    assert f"{a.ytvis}: videos[0] (id 1, 'a') is not in the GT file {tmp_path / 'gt_b.json'}" in refused.stderr
    other = run_export(str(a.folder), "--to", "coco", "--gt", str(tmp_path / "gt.json"))
    assert other.exit_code == 2 and "--gt is only for --to ytvis" in other.stderr


def test_ytvis_results_of_another_length_or_frame_size_than_their_gt_video_are_refused_with_gt(tmp_path) -> None:
    """`export --to ytvis --gt GT` wrote a results file for a video of fewer frames (a --stride or --max-frames run)
    or another frame size than the GT video it matched, which evaluate then refused: with the GT in hand, one line
    per mismatch, as evaluate words it, and no file."""
    a = make_segment_output(tmp_path / "run1", stem="a", stride=1)  # 12 frames, as the GT's
    b = make_segment_output(tmp_path / "run2", stem="b", stride=1)
    videos = [{"id": 4, "height": 48, "width": 64, "length": 24,
               "file_names": [f"a/{frame:05d}.jpg" for frame in range(24)]},
              {"id": 9, "height": 96, "width": 64, "length": 12,
               "file_names": [f"b/{frame:05d}.jpg" for frame in range(12)]}]
    gt = {"videos": videos, "categories": [{"id": 20, "name": "Dog"}], "annotations": []}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    result = run_export(str(a.folder), str(b.folder), "--to", "ytvis", "-o", str(tmp_path / "sub"),
                        "--gt", str(tmp_path / "gt.json"))
    assert result.exit_code == 1 and not (tmp_path / "sub" / "results.json").exists()
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error")]
    assert errors == [
        f"clipvis: error: {tmp_path / 'sub'}: {a.ytvis}: video 1 ('a') matches GT video 4: 12 segmentations but the "
        "video has 24 frames (results of one frame in 2, as `segment --stride 2` writes? the GT needs a mask or null "
        "for every frame it lists: segment without --stride)",
        f"clipvis: error: {tmp_path / 'sub'}: {b.ytvis}: video 1 ('b') matches GT video 9: mask size [48, 64] but "
        "video 9 is 96x64 (height x width)",
        "clipvis: error: 1 of 1 results file(s) not written"]


def test_two_inputs_of_one_gt_video_are_said_so_with_gt(tmp_path) -> None:
    """With --gt, two runs' folders of the same video both take its GT id: the refusal said "several inputs share
    video ids ... give them a GT file's ids (--gt)", advice already taken; it names the GT video they both match."""
    a = make_segment_output(tmp_path / "run1", stem="a", stride=1)
    again = make_segment_output(tmp_path / "run3", stem="a", stride=1)
    gt = {"videos": [{"id": 7, "name": "a", "height": 48, "width": 64, "length": 12}],
          "categories": [{"id": 20, "name": "Dog"}], "annotations": []}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    result = run_export(str(a.folder), str(again.folder), "--to", "ytvis", "-o", str(tmp_path / "sub"),
                        "--gt", str(tmp_path / "gt.json"))
    assert result.exit_code == 1 and not (tmp_path / "sub" / "results.json").exists()
    assert (f"{a.folder} and {again.folder} both match GT video 7 ('a') of {tmp_path / 'gt.json'}: one video's "
            "results can be in the file once") in result.stderr and "--gt)" not in result.stderr


def test_class_names_longer_than_a_cvat_label_are_said_for_the_cvat_formats(tmp_path) -> None:
    """CVAT's labels hold 64 characters at most: a task cannot have a 300-character class as a label, so its shapes
    do not import; the export said nothing (hunter 82)."""
    output = make_segment_output(tmp_path / "out")
    document = json.loads(output.ytvis.read_text())
    long = "a very long class name " * 4
    document["categories"][0]["name"] = long.strip()
    output.ytvis.write_text(json.dumps(document))
    cvat = run_export(str(output.folder), "--to", "cvat-video", "-o", str(tmp_path / "a"))
    assert cvat.exit_code == 0, cvat.output
    assert "CVAT takes label names of up to 64 characters, so a task cannot have the labels 'a very long class " \
           "name a very long class'... (91)" in cvat.stderr
    coco = run_export(str(output.folder), "--to", "coco", "--no-media", "-o", str(tmp_path / "b"))
    assert coco.exit_code == 0 and "CVAT takes" not in coco.stderr


def test_results_files_beside_many_inputs_are_written_as_each_input_ends(tmp_path) -> None:
    """Without -o, each input folder's results.json held a temporary file open until the batch's end: 1,100 inputs
    ran out of file descriptors ("Too many open files" at ulimit -n 1024). Each is now written once its (last)
    input is exported: 150 inputs export under a limit of 64 descriptors."""
    import resource
    import subprocess
    import sys

    folders = _results_folders(tmp_path / "in", 150, frames=3)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    done = subprocess.run([sys.executable, "-m", "clipvis", "export", str(tmp_path / "in"), "--to", "ytvis"],
                          capture_output=True, text=True, preexec_fn=limited, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    for folder in folders:
        [entry, *_] = json.loads((folder / "results.json").read_text())
        assert entry["video_id"] == int(folder.name[1:])


@pytest.mark.parametrize("keep_indices", [False, True])
def test_a_frame_deleted_by_hand_moves_no_mask_onto_another_frame(tmp_path, keep_indices) -> None:
    """A corrected ytvis.json with one frame deleted (its name and every track's mask there) and its frame_indices
    dropped by a tool: export numbered the frames left by position, so the masks of every later frame went onto
    the picture before it. The frames' names say which frame of the video each is (as train reads them)."""
    output = make_segment_output(tmp_path / "out")
    document = json.loads(output.ytvis.read_text())
    video = document["videos"][0]
    indices = list(range(0, FRAMES, STRIDE))
    kept = [p for p in range(len(indices)) if p != 2]
    video["file_names"] = [video["file_names"][p] for p in kept]
    video["length"] = len(kept)
    if keep_indices:
        video["frame_indices"] = [video["frame_indices"][p] for p in kept]
    else:
        del video["frame_indices"]
    for annotation in document["annotations"]:
        for key in ("segmentations", "areas", "bboxes"):
            if key in annotation:
                annotation[key] = [annotation[key][p] for p in kept]
    output.ytvis.write_text(json.dumps(document))
    result = run_export(str(output.ytvis), "--to", "coco,mots-txt", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    coco = COCO(str(next((tmp_path / "exp").rglob("instances_default.json"))))
    assert sorted(img["file_name"] for img in coco.dataset["images"]) == [f"frame_{indices[p]:06d}.jpg" for p in kept]
    for annotation in coco.dataset["annotations"]:
        frame_index = int(coco.imgs[annotation["image_id"]]["file_name"][6:12])
        track_id = annotation["attributes"]["track_id"]
        assert np.array_equal(coco.annToMask(annotation).astype(bool),
                              output.masks[track_id][indices.index(frame_index)])
    for image in coco.dataset["images"]:  # each picture is the video's frame its name numbers (frame k: grey 20k)
        picture = np.asarray(Image.open(next((tmp_path / "exp").rglob(f"images/{image['file_name']}"))), np.int64)
        assert abs(picture.mean() - int(image["file_name"][6:12]) * 20 % 255) < 6, image["file_name"]
    times = sorted({int(line.split(" ")[0]) for line in
                    next((tmp_path / "exp").rglob("mots.txt")).read_text().splitlines()})
    assert set(times) <= {indices[p] for p in kept} and indices[2] not in times


def test_an_export_beside_a_running_segment_does_not_call_it_killed(tmp_path) -> None:
    """While segment wrote the folder, export's warning said its results might be from a run "killed while putting
    its files in place" (then refused the folder as busy)."""
    from clipvis.cli.exporters.runner import unfinished_run_warning
    from clipvis.cli.writers import RunManifest

    output = make_segment_output(tmp_path / "out")
    manifest = RunManifest.start(output.video, "clip", "w", CATEGORIES, {})
    manifest.earlier_outputs = ["ytvis.json"]
    manifest.write(output.folder / "run.json")
    killed = unfinished_run_warning(output.ytvis)
    assert killed is not None and killed.endswith("or from that one if it was killed while putting its files in place")
    with FolderLock(output.folder):
        running = unfinished_run_warning(output.ytvis)
    assert running is not None and running.endswith(
        "its ytvis.json is from an earlier run (a segment run is writing that folder now)")


def test_a_segment_folder_without_results_fails_its_input_and_the_results_file(tmp_path) -> None:
    """A segment folder whose run failed (run.json, no ytvis.json) was left out of a folder's export without a word,
    exit 0, and results.json written without that video; an interrupted run's too. Each is now an input that failed,
    in one line from its run.json; the other videos are exported, and results.json is not written."""
    from clipvis.cli.inputs import VideoSource
    from clipvis.cli.writers import RunManifest

    root = tmp_path / "seg"
    good = make_segment_output(root, stem="a")
    for stem, status, error in (("b", "failed", "b.mp4: not a video or corrupt (FFmpeg cannot read it)"),
                                ("c", "interrupted", "interrupted by SIGTERM")):
        (root / stem).mkdir()
        run = RunManifest.start(VideoSource(good.video), stem, "w", CATEGORIES, {"formats": ["ytvis"]})
        run.mark_failed(error, status=status)
        run.write(root / stem / "run.json")
    result = run_export(str(root), "--to", "mots-txt,ytvis", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert (f"clipvis: error: {root / 'b'}: segment run failed (b.mp4: not a video or corrupt (FFmpeg cannot read "
            "it)); no ytvis.json") in lines, result.stderr
    assert f"clipvis: error: {root / 'c'}: segment run interrupted by SIGTERM; no ytvis.json" in lines, result.stderr
    assert (tmp_path / "exp" / "a" / "mots-txt" / "mots.txt").is_file()
    assert not (tmp_path / "exp" / "results.json").exists()
    assert any("results.json not written: 2 of its 3 input(s) failed" in line for line in lines), result.stderr


def test_a_folder_search_leaves_out_runs_not_asked_for_results_and_other_tools_run_json(tmp_path) -> None:
    """Two folders a search finds beside a good segment output failed the batch (exit 1, results.json not written):
    a complete segment run with --formats overlay (it was not asked for results: left out with one warning) and a
    folder holding another tool's run.json (Sacred's: no segment output, no input). Named on the command line, the
    overlay-only folder is still an input that fails."""
    from clipvis.cli.inputs import VideoSource
    from clipvis.cli.writers import RunManifest

    root = tmp_path / "seg"
    good = make_segment_output(root, stem="a")
    (root / "b").mkdir()
    run = RunManifest.start(VideoSource(good.video), "b", "w", CATEGORIES, {"formats": ["overlay"]})
    (root / "b" / "overlay.mp4").write_bytes(b"an overlay")
    run.mark_complete(1, [root / "b" / "overlay.mp4"], {})
    run.write(root / "b" / "run.json")
    (root / "notes" / "exp1").mkdir(parents=True)
    (root / "notes" / "exp1" / "run.json").write_text('{"status": "COMPLETED", "command": "main"}')
    result = run_export(str(root), "--to", "mots-txt,ytvis", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    assert (f"clipvis: warning: {root / 'b'}: left out: no ytvis.json: segment ran with --formats overlay (add ytvis "
            "to write the results export reads)") in result.stderr.splitlines(), result.stderr
    assert "exp1" not in result.stderr and (tmp_path / "exp" / "results.json").is_file()
    named = run_export(str(root / "b"), "--to", "mots-txt", "-o", str(tmp_path / "exp2"))
    assert named.exit_code == 1 and f"clipvis: error: {root / 'b'}: no ytvis.json: segment ran" in named.stderr


def _unpadded_image_folder(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """An image folder 1.png, 2.png, 10.png (natural order: what segment numbers 0, 1, 2; as text, and in a CVAT
    task's default order: 1, 10, 2) and its results, each image's mask in another place."""
    from clipvis.cli.results import TrackResult, VideoInfo
    from clipvis.cli.writers import YtvisWriter

    frames = tmp_path / "frames"
    frames.mkdir()
    names = ["1.png", "2.png", "10.png"]
    masks = {}
    for k, name in enumerate(names):
        Image.fromarray(np.full((HEIGHT, WIDTH, 3), 40 + 80 * k, np.uint8)).save(frames / name)
        masks[name] = np.zeros((HEIGHT, WIDTH), bool)
        masks[name][5 + 10 * k : 12 + 10 * k, 5:20] = True
    info = VideoInfo(video_id=1, source=str(frames), stem="frames", height=HEIGHT, width=WIDTH, fps=30.0,
                     frame_stride=1, frame_indices=[0, 1, 2], file_names=[f"frames/{n}" for n in names], kind="images")
    track = TrackResult(1, 1, 0.9, [rle.encode(masks[name]) for name in names])
    (tmp_path / "out" / "frames").mkdir(parents=True)
    return frames, YtvisWriter().write(tmp_path / "out" / "frames" / "ytvis.json", info, [track], CATEGORIES), masks


def test_cvat_images_names_an_image_folders_frames_by_their_files(tmp_path) -> None:
    """cvat-images named an image folder's frames frame_000000.jpg, ... by position: CVAT matched no image of a task
    made from the folder by name, fell back to the frame number, and in its default order (1, 10, 2) put the masks of
    2.png on 10.png. Each <image> and image file now has the source image's name, which CVAT matches first."""
    frames, ytvis, masks = _unpadded_image_folder(tmp_path)
    result = run_export(str(ytvis), "--to", "cvat-images", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(tmp_path / "exp" / "frames" / "cvat-images.zip") as archive:
        root = ET.fromstring(archive.read("annotations.xml"))
        assert sorted(archive.namelist()) == ["annotations.xml", "images/1.png", "images/10.png", "images/2.png"]
        for image in root.iter("image"):
            [shape] = image.iter("mask")
            runs = [int(v) for v in shape.get("rle").split(",")]
            box = [int(shape.get(key)) for key in ("left", "top", "width", "height")]
            assert np.array_equal(decode_cvat_rle(runs, *box, HEIGHT, WIDTH), masks[image.get("name")])
            picture = np.asarray(Image.open(io.BytesIO(archive.read(f"images/{image.get('name')}"))), np.int64)
            source = np.asarray(Image.open(frames / image.get("name")), np.int64)
            assert abs(picture.mean() - source.mean()) < 3


def test_formats_numbering_an_image_folders_frames_warn_when_names_sort_otherwise_as_text(tmp_path) -> None:
    """cvat-video and mots-png number an image folder's frames in natural order (1, 2, 10); a CVAT task made from
    the folder in its default order (1, 10, 2) got the masks on the wrong images without a word. One warning line per
    such folder says to create the task with natural sorting; a folder whose names sort alike either way has none."""
    frames, ytvis, _ = _unpadded_image_folder(tmp_path)
    result = run_export(str(ytvis), "--to", "cvat-video,mots-png,coco", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("clipvis: warning:")]
    assert warnings == [
        f"clipvis: warning: frames: cvat-video, mots-png number the images of {frames} in natural order (1.png, 2.png, "
        '10.png), which is not their order as text (1.png, 10.png, 2.png): create the CVAT task with "Sorting method: '
        'Natural" (other tools: sort the names naturally), or the masks land on other images'], result.stderr
    named = run_export(str(ytvis), "--to", "coco,cvat-images", "-o", str(tmp_path / "exp2"))  # by name: right
    assert "warning" not in named.stderr, named.stderr
    (frames / "10.png").rename(frames / "3.png")
    (tmp_path / "out" / "frames" / "ytvis.json").write_text(ytvis.read_text().replace("10.png", "3.png"))
    padded = run_export(str(ytvis), "--to", "cvat-video", "-o", str(tmp_path / "exp3"))
    assert padded.exit_code == 0 and "warning" not in padded.stderr, padded.stderr


def test_a_video_with_no_processed_frames_exports_as_empty_in_every_format(tmp_path) -> None:
    """A video entry with `length: 0`: coco, cvat-images and mots-png failed with the internal `max_frames must be
    >= 1, got 0` where the other formats wrote empty files. Every format now writes its empty files."""
    video = write_video(tmp_path / "zero.mp4", frames=2)
    document = {
        "videos": [{"id": 1, "name": "zero", "height": HEIGHT, "width": WIDTH, "length": 0, "file_names": [],
                    "fps": 10.0, "frame_stride": 1, "frame_indices": [], "source": str(video)}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": []}],
    }
    (tmp_path / "zero").mkdir()
    (tmp_path / "zero" / "ytvis.json").write_text(json.dumps(document))
    formats = "cvat-video,cvat-images,coco,mots-png,mots-txt,png-masks,labelstudio,fiftyone,ytvis"
    result = run_export(str(tmp_path / "zero" / "ytvis.json"), "--to", formats, "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    folder = tmp_path / "exp" / "zero"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(
        ["cvat-video.zip", "cvat-images.zip", "coco", "mots-png", "mots-txt", "png-masks", "labelstudio", "fiftyone"])
    coco = json.loads((folder / "coco" / "annotations" / "instances_default.json").read_text())
    assert coco["images"] == [] and coco["annotations"] == []
    assert list((folder / "mots-png" / "instances").glob("*.png")) == []
    with zipfile.ZipFile(folder / "cvat-images.zip") as archive:
        assert archive.namelist() == ["annotations.xml"]
        assert list(ET.fromstring(archive.read("annotations.xml")).iter("image")) == []
    assert [track["segmentations"] for track in json.loads((tmp_path / "exp" / "results.json").read_text())] == [[]]


def test_classes_naming_no_class_of_any_input_is_an_error_and_nothing_is_written(tmp_path) -> None:
    """`--classes dgo` (every name a typo) gave a warning, exit 0 and files with no labels (over an earlier export of
    the right classes). It is one error line naming the names and the inputs' classes, exit 1, nothing written; a
    name that one input has and another lacks stays a warning for the other."""
    one = make_segment_output(tmp_path / "a")
    result = run_export(str(one.folder), "--to", "cvat-video", "--classes", "dgo,cta", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        "clipvis: error: --classes dgo, cta: no such class in the input (their classes: cat, dog, hot air balloon); "
        "nothing exported"]
    assert not (tmp_path / "exp").exists()
    other = tmp_path / "b" / "other"
    other.mkdir(parents=True)
    document = json.loads(one.ytvis.read_text())
    document["categories"] = [{"id": k, "name": name} for k, name in enumerate(["car", "bus", "van"], start=1)]
    (other / "ytvis.json").write_text(json.dumps(document))
    mixed = run_export(str(one.folder), str(other), "--to", "mots-txt", "--classes", "cat", "-o", str(tmp_path / "m"))
    assert mixed.exit_code == 0, mixed.output
    assert [line for line in mixed.stderr.splitlines() if "warning" in line] == [
        "clipvis: warning: clip: --classes cat: no such class here (its classes: car, bus, van)"]


def test_category_names_stop_at_the_first_annotation(tmp_path) -> None:
    """The classes of a file whose categories come first (as segment writes them) are read without its masks: a file
    broken after its first annotation still gives them; one whose categories come last is read through."""
    from clipvis.cli.exporters.loading import category_names

    first = tmp_path / "first.json"
    first.write_text('{"videos": [], "categories": [{"id": 1, "name": "cat"}], "annotations": [{"video_id": 1}, !!')
    assert category_names(first) == ["cat"]
    last = tmp_path / "last.json"
    last.write_text('{"videos": [], "annotations": [{"video_id": 1}], "categories": [{"id": 1, "name": "dog"}]}')
    assert category_names(last) == ["dog"]
    broken = tmp_path / "broken.json"
    broken.write_text('{"videos": [], "annotations": [!!')
    assert category_names(broken) is None


def test_a_second_video_of_one_name_is_not_numbered_into_another_inputs_name(tmp_path) -> None:
    """Two segment roots under one -o: run1/clip took `clip/`, run2/clip was numbered `clip-2/` and run2/clip-2 then
    went to `clip-2-2/`: each folder named like another input's video. The numbered name now skips the inputs' names,
    and a note says where the renamed video went."""
    make_segment_output(tmp_path / "run1")
    second = make_segment_output(tmp_path / "run2")
    make_segment_output(tmp_path / "run2", stem="clip-2")
    dest = tmp_path / "dest"
    result = run_export(str(tmp_path / "run1"), str(tmp_path / "run2"), "--to", "mots-txt", "-o", str(dest))
    assert result.exit_code == 0, result.output
    came_from = {folder.name: {entry["from"]["results"] for entry in json.loads(
        (folder / ".clipvis-export.json").read_text())["entries"].values()} for folder in dest.iterdir()}
    assert came_from == {"clip": {str(tmp_path / "run1" / "clip" / "ytvis.json")},
                         "clip-2": {str(tmp_path / "run2" / "clip-2" / "ytvis.json")},
                         "clip-3": {str(second.ytvis)}}
    assert (f"clipvis: clip: {second.ytvis} exported to {dest / 'clip-3'} ({dest / 'clip'} is taken by another video "
            "or by other files)") in result.stderr.splitlines(), result.stderr
    again = run_export(str(tmp_path / "run2" / "clip"), "--to", "mots-txt", "-o", str(dest))  # back to its folder
    assert again.exit_code == 0 and f"exported to {dest / 'clip-3'}" in again.stderr, again.output


def test_a_refused_results_file_says_no_video_was_exported_to_a_folder(tmp_path) -> None:
    """`--to ytvis -o DIR` over two runs' `clip` (both video id 1): the results file was refused, yet a note said the
    second was "exported to DIR/clip-2", a folder --to ytvis never writes. The note now comes only with a video's own
    files, once they are in place; the refusal and exit code stay."""
    make_segment_output(tmp_path / "run1")
    second = make_segment_output(tmp_path / "run2")
    dest = tmp_path / "dest"
    result = run_export(str(tmp_path / "run1"), str(tmp_path / "run2"), "--to", "ytvis", "-o", str(dest))
    assert result.exit_code == 1 and "several inputs share video ids" in result.stderr, result.output
    assert "exported to" not in result.stderr and not dest.exists(), result.stderr
    both = run_export(str(tmp_path / "run1"), str(tmp_path / "run2"), "--to", "ytvis,mots-txt", "-o",
                      str(tmp_path / "both"))  # its mots-txt file is written: said where
    assert both.exit_code == 1 and f"{second.ytvis} exported to {tmp_path / 'both' / 'clip-2'}" in both.stderr
    assert (tmp_path / "both" / "clip-2" / "mots-txt").exists()


def test_labelstudio_without_a_media_url_is_said_once(tmp_path) -> None:
    """tasks.json without --media-url names the video by its file name alone, which Label Studio cannot load: one
    warning for the export, none with --media-url."""
    make_segment_output(tmp_path / "in", stem="a")
    make_segment_output(tmp_path / "in", stem="b")
    result = run_export(str(tmp_path / "in"), "--to", "labelstudio", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("clipvis: warning:")]
    assert len(warnings) == 1 and "labelstudio without --media-url" in warnings[0], result.stderr
    assert 'e.g. data.video "clip.mp4" for a video clip.mp4' in warnings[0]  # not a name of these inputs' files
    served = run_export(str(tmp_path / "in"), "--to", "labelstudio", "--media-url", "/data/local-files/?d=c/", "-o",
                        str(tmp_path / "exp2"))
    assert served.exit_code == 0 and "warning" not in served.stderr, served.stderr


def test_a_damaged_run_json_beside_the_results_is_said_as_an_unfinished_run_is(tmp_path) -> None:
    """A run.json beside ytvis.json that is not JSON (`{not json`) exported with exit 0 and no word, as if there were
    none, though it cannot say whether its segment run completed (an unfinished one gets a warning). Another tool's
    run.json (JSON, not a segment run's) stays silent."""
    output = make_segment_output(tmp_path / "out")
    (output.folder / "run.json").write_text("{not json")
    result = run_export(str(output.folder), "--to", "mots-txt", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("clipvis: warning:")]
    assert warnings == [f"clipvis: warning: {output.folder / 'run.json'} is not JSON (damaged): its segment run is not "
                        "known to be complete, nor its ytvis.json to be from one"], result.stderr
    (output.folder / "run.json").write_text('{"tool": "something else"}')
    other = run_export(str(output.folder), "--to", "mots-txt", "-o", str(tmp_path / "exp2"))
    assert other.exit_code == 0 and "warning" not in other.stderr, other.stderr


def test_a_tilde_after_the_equals_sign_of_output_is_the_home_folder(tmp_path, monkeypatch) -> None:
    """`export --to coco --output=~/exports` (bash leaves a `~` after `=` as it is) wrote into a folder named `~` in
    the working folder; segment's -o and train's expand it. It is the home folder now, for --to onnx's file too."""
    output = make_segment_output(tmp_path / "out")
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    result = CliRunner().invoke(app, ["export", str(output.folder), "--to", "png-masks", "--output=~/exports"])
    assert result.exit_code == 0, result.output
    assert (home / "exports" / "clip" / "png-masks").is_dir() and not (work / "~").exists()


def test_a_short_output_option_with_an_equals_sign_is_a_usage_error(tmp_path, monkeypatch) -> None:
    """Review: `export ... -o=exports` (click gives -o the value `=exports`) wrote into a folder named `=exports`, and
    `--to onnx -o=m.onnx` a file named `=m.onnx`. Both are now a usage error saying how to write it."""
    output = make_segment_output(tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    for args in ([str(output.folder), "--to", "png-masks"], ["--to", "onnx", "--model", "none.safetensors"]):
        result = CliRunner().invoke(app, ["export", *args, "-o=exports"])
        said = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        assert "-o: '=exports' starts with '=' (-o=PATH gives -o the value =PATH): write -o PATH or --output=PATH" \
            in said
        assert not [path.name for path in tmp_path.iterdir() if path.name.startswith("=")]


def test_a_tilde_after_the_equals_sign_of_gt_is_the_home_folder(tmp_path, monkeypatch) -> None:
    """Review: `export --to ytvis --gt=~/gt.json` (bash leaves a `~` after `=` as it is) said "GT file not found:
    ~/gt.json", while -o expanded it; every path option's leading `~` is the home folder now (--to onnx's --config,
    --clip-config and --vocab-file too)."""
    output = make_segment_output(tmp_path / "run", stride=1)
    videos = [{"id": 7, "height": 48, "width": 64, "length": 12,
               "file_names": [f"clip/{frame:05d}.jpg" for frame in range(12)]}]
    (tmp_path / "gt.json").write_text(json.dumps({"videos": videos, "categories": [], "annotations": []}))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "run")
    result = run_export(str(output.folder), "--to", "ytvis", "-o", str(tmp_path / "sub"), "--gt=~/gt.json")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sub" / "results.json").is_file()
    refused = run_export("--to", "onnx", "--model", "none.safetensors", "--vocab-file=~/none.txt")
    assert refused.exit_code == 2 and f"{tmp_path / 'none.txt'}: " in " ".join(refused.output.split()), refused.output
