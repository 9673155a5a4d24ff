"""The ConvNeXt CLIP path (timm trunk, masked-average pooling + CLIP head), which the golden cases do not cover."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipvis.model.predictor import VideoPredictor

pytest.importorskip("timm")


@pytest.fixture(scope="module")
def convnext_model(tiny_model_factory):
    model = tiny_model_factory("convnext", num_queries=6)
    with torch.no_grad():  # a trained head LayerNorm has a bias; the random init's is 0 (zero vector -> zero output)
        model.backbone.clip_model.visual.trunk.head.norm.bias.normal_()
    return model


def test_backbone_levels_and_channels(convnext_model) -> None:
    backbone = convnext_model.backbone
    assert backbone.kind == "convnext"
    assert backbone.channels == (40, 80, 160, 320)
    features = backbone(torch.randn(2, 3, 64, 96))
    for level, (name, stride) in enumerate(zip(("res2", "res3", "res4", "res5"), (4, 8, 16, 32), strict=True)):
        assert features[name].shape == (2, backbone.channels[level], 64 // stride, 96 // stride)
    assert features["clip_vis_dense"] is features["res5"]


def test_masked_average_pooling_then_clip_head(convnext_model) -> None:
    torch.manual_seed(1)
    backbone = convnext_model.backbone
    dense = torch.randn(1, 320, 4, 6)
    masks = torch.zeros(1, 3, 4, 6, dtype=torch.bool)
    masks[0, 0, 1:3, 2:5] = True
    masks[0, 1, 0, 0] = True  # query 2 stays empty: the zero vector goes through the head
    pooled, empty = convnext_model.mask_pooler(dense, masks)
    assert empty.tolist() == [[False, False, True]]
    with torch.no_grad():
        expected0 = backbone.visual_head(dense[0, :, 1:3, 2:5].mean((-1, -2)))
        expected1 = backbone.visual_head(dense[0, :, 0, 0])
    torch.testing.assert_close(pooled[0, 0], expected0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled[0, 1], expected1, atol=1e-5, rtol=1e-5)
    visual = backbone.clip_model.visual
    head_of_zero = visual.head.proj.weight @ visual.trunk.head.norm.bias  # LayerNorm(0) = its bias, then projected
    assert pooled.shape == (1, 3, 32) and head_of_zero.abs().max() > 0.1
    torch.testing.assert_close(pooled[0, 2], head_of_zero, atol=1e-5, rtol=1e-5)


def test_video_through_the_predictor(convnext_model) -> None:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(5, 60, 90, 3), dtype=np.uint8)
    predictor = VideoPredictor(convnext_model, ["cat", "dog", "traffic light"], device="cpu", text_cache=False)
    session = predictor.new_video()
    tracked = session.push(frames[:3]) + session.push(frames[3:])
    assert len(tracked) == 5
    for frame in tracked:
        assert frame.masks.shape == (6, 60, 90)
        torch.testing.assert_close(frame.class_probs.sum(-1), torch.ones(6))
    video = session.finish(max_tracks=4)
    assert 0 < len(video.instances) <= 4
    assert all(0 <= inst.label < 3 for inst in video.instances)
