"""The exportable network: the ONNX-friendly deformable-attention gather equals the default one, and the export
module gives the model's own outputs (the ONNX file and onnxruntime parity: tests/clipvis_cli/exporters/)."""

from __future__ import annotations

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
