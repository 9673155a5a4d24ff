"""`clipvis export --model W --to onnx`: the per-frame network of a tiny checkpoint as ONNX; onnxruntime reproduces
PyTorch on a batch size other than the export example's (dynamic batch axis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from clipvis.cli.app import app


def test_onnx_export_parity(tiny_weights, tmp_path, isolated_cache) -> None:
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

    from clipvis.model import ClipVis
    from clipvis.model.onnx_export import FrameNetwork
    from clipvis.model.predictor import VideoPredictor

    model = ClipVis.from_pretrained(tiny_weights)
    predictor = VideoPredictor(model, ["cat", "dog", "kite"], device="cpu")
    network = FrameNetwork(model, predictor.text)
    frames = torch.randn(3, 3, 64, 96)
    got = session.run(None, {"images": frames.numpy()})
    with torch.no_grad():
        want = network(frames)
    diffs = {name: float(np.abs(g - w.numpy()).max()) for name, g, w in zip(names, got, want, strict=True)}
    print(f"tiny ONNX parity (batch 3, fp32): {diffs}")
    assert got[-1].shape == (3, 6, 3)
    assert diffs["object_logits"] <= 1e-3 and diffs["class_logits"] <= 1e-3
    assert max(diffs.values()) <= 1e-3


def test_onnx_needs_a_model(tmp_path) -> None:
    result = CliRunner().invoke(app, ["export", "--to", "onnx", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "--model" in result.output
    assert not (tmp_path / "m.onnx").exists()
