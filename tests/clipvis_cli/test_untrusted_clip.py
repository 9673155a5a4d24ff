"""`clipvis segment`, `export --to onnx` and `train` with a checkpoint whose config names a CLIP to download: refused
in one line that says what each command offers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
from PIL import Image
from typer.testing import CliRunner

from clipvis.cli.app import app
from clipvis.model import create_model
from clipvis.model.checkpoint import write_state_dict


def _head_only_weights(path: Path, tiny_config, clip_name: str) -> Path:
    model = create_model(tiny_config())
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    config = {**model.config.to_dict(), "clip_model_config": None, "clip_model_name": clip_name,
              "clip_pretrained": "", "notes": []}
    return write_state_dict(state, config, path)


def _frames(folder: Path) -> Path:
    folder.mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 48, 3), 40 * i, np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def _recorded_downloads(monkeypatch, tmp_path: Path) -> list[str]:
    """The CLIP names open_clip is asked to download (each attempt fails: "download attempted"); a fresh cache."""
    attempts: list[str] = []

    def create(name: str, *args, **kwargs):
        attempts.append(name)
        raise RuntimeError("download attempted")

    monkeypatch.setattr(open_clip, "create_model", create)
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    return attempts


def test_hub_clip_is_refused_without_the_flag(tmp_path, tiny_config, monkeypatch) -> None:
    attempts = _recorded_downloads(monkeypatch, tmp_path)
    weights = _head_only_weights(tmp_path / "w.safetensors", tiny_config, "hf-hub:someone/clip")
    args = ["segment", str(_frames(tmp_path / "frames")), "--vocab", "cat", "--weights", str(weights),
            "-o", str(tmp_path / "out"), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "hf-hub:someone/clip" in lines[0] and "--allow-hub-clip" in lines[0]
    assert attempts == []

    result = CliRunner().invoke(app, [*args, "--allow-hub-clip"])
    assert result.exit_code == 1 and "download attempted" in result.stderr
    assert attempts == ["hf-hub:someone/clip"]


def test_the_settings_that_describe_a_checkpoint_are_named_as_flags(tmp_path, tiny_config, monkeypatch) -> None:
    """The model library names its Python parameters (config=, clip_config=); segment's users have flags."""
    import json

    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    model = create_model(tiny_config())
    state = model.state_dict()
    frames = _frames(tmp_path / "frames")
    unknown = write_state_dict(state, {**model.config.to_dict(), "clip_model_config": None,
                                       "clip_model_name": "NoSuchCLIP", "clip_pretrained": "", "notes": []},
                               tmp_path / "unknown.safetensors")
    other_clip = tmp_path / "convnext.json"
    other_clip.write_text(json.dumps(tiny_config("convnext").clip_model_config))
    known = write_state_dict(state, {**model.config.to_dict(), "notes": []}, tmp_path / "rn.safetensors")
    for weights, extra, expected in [
        (unknown, [], "open_clip does not know the model 'NoSuchCLIP'; give its open_clip model config "
                      "(--clip-config)"),
        (known, ["--clip-config", str(other_clip)],
         "its config (--config) and, for a CLIP open_clip does not know by name, its open_clip model config "
         "(--clip-config)"),
    ]:
        result = CliRunner().invoke(app, ["segment", str(frames), "--vocab", "cat", "--weights", str(weights),
                                          "-o", str(tmp_path / "out"), "--device", "cpu", *extra])
        assert result.exit_code == 1
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("clipvis: error: ") and str(weights) in line and expected in line, line
        assert "clip_config=" not in line and "load_model" not in line
        assert not (tmp_path / "out").exists()


def test_export_onnx_offers_allow_hub_clip_and_names_its_model_option(tmp_path, tiny_config, monkeypatch) -> None:
    """export --to onnx said 'pass --allow-hub-clip', which it refused as 'No such option', and named its --model
    'weights'."""
    attempts = _recorded_downloads(monkeypatch, tmp_path)
    weights = _head_only_weights(tmp_path / "w.safetensors", tiny_config, "hf-hub:someone/clip")
    args = ["export", "--to", "onnx", "--model", str(weights), "-o", str(tmp_path / "x.onnx")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"clipvis: error: --model {weights}: ") and "hf-hub:someone/clip" in line, line
    assert line.endswith("; pass --allow-hub-clip to let open_clip download it"), line
    assert attempts == []

    result = CliRunner().invoke(app, [*args, "--allow-hub-clip"])
    assert result.exit_code == 1 and "download attempted" in result.stderr, result.stderr
    assert attempts == ["hf-hub:someone/clip"] and not (tmp_path / "x.onnx").exists()


def test_train_says_what_to_do_instead_of_a_hub_clip_it_cannot_download(tmp_path, tiny_config, monkeypatch) -> None:
    """train has no --allow-hub-clip: it told its users to 'pass allow_hub_clip=True' (a Python keyword)."""
    monkeypatch.setattr(open_clip, "create_model", lambda *args, **kwargs: pytest.fail("download attempted"))
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    weights = _head_only_weights(tmp_path / "w.safetensors", tiny_config, "hf-hub:someone/clip")
    result = CliRunner().invoke(app, ["train", "--weights", str(weights), "--export-pth", str(tmp_path / "y.pth")])
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"clipvis: error: --weights {weights}: ") and "hf-hub:someone/clip" in line, line
    assert line.endswith("; train cannot download another CLIP: start from a checkpoint that holds its weights (e.g. "
                         "saved in Python with clipvis.save_pretrained(clipvis.load_model(..., allow_hub_clip=True), "
                         "path)) and give the CLIP's open_clip model config with --clip-config"), line
    assert "pass allow_hub_clip" not in line and "--allow-hub-clip" not in line
    assert not (tmp_path / "y.pth").exists()


def test_a_checkpoint_without_clip_weights_naming_a_clip_open_clip_does_not_know_says_so(
    tmp_path, tiny_config, monkeypatch
) -> None:
    """No download can give such a CLIP: the error says open_clip does not know the name (it said the CLIP was not a
    released one and to pass --allow-hub-clip, which then failed in open_clip)."""
    attempts = _recorded_downloads(monkeypatch, tmp_path)
    weights = _head_only_weights(tmp_path / "w.safetensors", tiny_config, "NoSuchCLIP")
    for extra in ([], ["--allow-hub-clip"]):
        result = CliRunner().invoke(app, ["segment", str(_frames(tmp_path / f"frames{len(extra)}")), "--vocab", "cat",
                                          "--weights", str(weights), "-o", str(tmp_path / "out"), "--device", "cpu",
                                          *extra])
        assert result.exit_code == 1
        [line] = result.stderr.strip().splitlines()
        assert "CLIP NoSuchCLIP, which open_clip does not know" in line and "--allow-hub-clip" not in line, line
    assert attempts == []
