"""The exportable network: the ONNX-friendly deformable-attention gather equals the default one, and the export
module gives the model's own outputs (onnxruntime parity: tests/clipvis_cli/exporters/test_export_onnx.py)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clipvis.model.deformable_attention import multi_scale_deformable_attention
from clipvis.model.onnx_export import FrameNetwork, export_mode
from clipvis.model.text_classifier import TextEmbeddings


def test_index_gather_equals_embedding_bag() -> None:
    torch.manual_seed(0)
    shapes = [(6, 8), (3, 4), (2, 2)]
    value = torch.randn(2, sum(h * w for h, w in shapes), 4, 8)
    locations = torch.rand(2, 5, 4, 3, 4, 2) * 1.4 - 0.2  # some outside [0, 1]
    weights = torch.rand(2, 5, 4, 3, 4).softmax(-1)
    default = multi_scale_deformable_attention(value, shapes, locations, weights)
    index = multi_scale_deformable_attention(value, shapes, locations, weights, gather="index")
    assert torch.allclose(default, index, atol=1e-6)


def test_export_mode_switches_the_gather_with_the_same_outputs(tiny_model_factory) -> None:
    model = tiny_model_factory("rn")
    embeddings = F.normalize(torch.randn(5, model.backbone.embed_dim), dim=-1)
    text = TextEmbeddings(["cat", "dog", "kite", "bus"], embeddings, [1, 2, 1, 1], 50.0)
    network = FrameNetwork(model, text)
    frames = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        eager = network(frames)
        with export_mode(network):
            assert {m.gather for m in model.modules() if hasattr(m, "gather")} == {"index"}
            exportable = network(frames)
        raw = model(frames)
    assert {m.gather for m in model.modules() if hasattr(m, "gather")} == {"embedding_bag"}
    assert network.output_names[-1] == "class_logits" and len(eager) == 7
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(eager, exportable, strict=True))
    assert torch.equal(eager[-1], model.classify(raw.clip_dense, raw.mask_logits, text))  # synonyms: max
    assert FrameNetwork(model).output_names[-1] == "clip_embeds"


def test_convnext_exports_in_fp16(tiny_convnext_model, tmp_path) -> None:
    """The ConvNeXt path and --precision fp16 (CLIP trunk in half precision, float32 interface) through onnxruntime."""
    import copy

    import pytest

    pytest.importorskip("onnxruntime")
    from clipvis.model.onnx_export import check_parity, export_onnx

    network = FrameNetwork(copy.deepcopy(tiny_convnext_model))
    path = export_onnx(network, tmp_path / "convnext16.onnx", 64, 96, precision="fp16")
    assert network.model.backbone.clip_model.visual.trunk.stem[0].weight.dtype == torch.float32  # a copy is halved
    parity = check_parity(network, path, torch.randn(3, 3, 64, 96), precision="fp16")
    assert parity.max_abs_diff["object_logits"] <= 1e-3
    assert max(parity.max_abs_diff.values()) <= 1e-2  # half-precision trunk: float16 rounding in both runtimes


def test_fp16_export_leaves_the_callers_model_usable(tiny_model_factory, tmp_path) -> None:
    """export_onnx(precision="fp16") halved the caller's CLIP backbone in place: a VideoPredictor made from the same
    model afterwards failed (half weights, float input)."""
    import pytest

    pytest.importorskip("onnxruntime")
    from clipvis.model.onnx_export import export_onnx
    from clipvis.model.predictor import VideoPredictor

    model = tiny_model_factory("rn")
    before = {name: p.clone() for name, p in model.state_dict().items()}
    export_onnx(FrameNetwork(model), tmp_path / "rn16.onnx", 64, 64, precision="fp16")
    after = model.state_dict()
    assert all(after[name].dtype == p.dtype and torch.equal(after[name], p) for name, p in before.items())
    session = VideoPredictor(model, ["cat"], device="cpu", text_cache=False).new_video()
    session.push(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    session.finish()


def test_a_frame_size_off_the_32_grid_is_named_by_its_parameters(tiny_model_factory, tmp_path) -> None:
    """export_onnx's error named the command line's --height/--width, which a Python caller does not have."""
    import pytest

    from clipvis.model.onnx_export import export_onnx

    with pytest.raises(ValueError) as caught:
        export_onnx(FrameNetwork(tiny_model_factory("rn")), tmp_path / "m.onnx", height=100, width=96)
    assert str(caught.value) == "height and width must be multiples of 32 (got 100x96)"
    assert not (tmp_path / "m.onnx").exists()
