"""`clipvis segment` with a checkpoint whose config names a CLIP to download: refused in one line unless allowed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
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


def test_hub_clip_is_refused_without_the_flag(tmp_path, tiny_config, monkeypatch) -> None:
    attempts: list[str] = []

    def create(name: str, *args, **kwargs):
        attempts.append(name)
        raise RuntimeError("download attempted")

    monkeypatch.setattr(open_clip, "create_model", create)
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
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
