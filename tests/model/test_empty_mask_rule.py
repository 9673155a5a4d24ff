"""The empty-mask rule of the classification (docs/fidelity.md, "Empty masks"), per backbone.

A query whose mask has no positive pixel once resized to the dense CLIP map:
* RN (attention pooling): nothing to attend to; the official code sets its class logits to 0 -> uniform probabilities.
* ConvNeXt (masked average + CLIP head): the average is the zero vector, which still goes through the head's LayerNorm
  (giving the LayerNorm bias) and projection -> real logits.
Expected values are computed here by hand from the weights, not with the pooling code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipvis.model.predictor import VideoPredictor

VOCABULARY = ["cat", "dog", "traffic light", "red car"]


def _trained_like(model):
    """A ConvNeXt head LayerNorm with a bias, as a trained one has (the random init's 0 would hide the rule)."""
    if model.backbone.kind == "convnext":
        with torch.no_grad():
            torch.manual_seed(5)
            model.backbone.clip_model.visual.trunk.head.norm.bias.normal_()
    return model


def _head_by_hand(model, pooled: torch.Tensor) -> torch.Tensor:
    """ConvNeXt CLIP head written out: LayerNorm (eps 1e-6) over channels, then the bias-free projection."""
    visual = model.backbone.clip_model.visual
    norm = visual.trunk.head.norm
    mean = pooled.mean(-1, keepdim=True)
    var = pooled.var(-1, unbiased=False, keepdim=True)
    normed = (pooled - mean) / torch.sqrt(var + 1e-6) * norm.weight + norm.bias
    return normed @ visual.head.proj.weight.T


def _logits_by_hand(model, text, features: torch.Tensor) -> torch.Tensor:
    scale = min(float(model.backbone.clip_model.logit_scale.exp()), 100.0)
    return scale * F.normalize(features, dim=-1) @ text.embeddings.T


@pytest.mark.parametrize("backbone", ["rn", "convnext"])
def test_emptiness_is_decided_at_the_dense_resolution(tiny_model_factory, backbone) -> None:
    """A mask with positive pixels at stride 4 that all vanish at stride 32 counts as empty."""
    if backbone == "convnext":
        pytest.importorskip("timm")
    model = _trained_like(tiny_model_factory(backbone))
    predictor = VideoPredictor(model, VOCABULARY, text_cache=False)
    torch.manual_seed(0)
    dense = torch.randn(1, model.backbone.channels[-1], 2, 3)
    mask_logits = torch.full((1, 3, 16, 24), -1.0)
    mask_logits[0, 0, :, 8:] = 5.0  # a large region: not empty
    mask_logits[0, 1, 0, 0] = 100.0  # one stride-4 pixel that no stride-32 sample reaches: empty
    mask_logits[0, 2, 3, 3] = 100.0  # one stride-4 pixel next to a stride-32 sample point: not empty
    logits = model.classify(dense, mask_logits, predictor.text)[0]
    assert logits.shape == (3, len(VOCABULARY))
    if backbone == "rn":
        assert torch.equal(logits[1], torch.zeros(len(VOCABULARY)))
    else:
        head_of_zero = _head_by_hand(model, torch.zeros(model.backbone.channels[-1]))
        expected = _logits_by_hand(model, predictor.text, head_of_zero)
        torch.testing.assert_close(logits[1], expected, atol=1e-4, rtol=1e-4)
        assert expected.abs().max() > 0.5  # real logits, not the RN rule's zeros
    for query in (0, 2):
        assert logits[query].abs().max() > 0.1 and logits[query].std() > 1e-3


def _constant_mask_model(model):
    """Make every mask constant over the frame: mask features = a constant channel 0, and the mask logit of a query
    = one channel of its decoded embedding, so a query's mask is either full or empty (at every resolution) and the
    sign varies between queries and frames."""
    decoder = model.mask_decoder
    with torch.no_grad():
        conv = model.pixel_decoder.mask_features
        conv.weight.zero_()
        conv.bias.zero_()
        conv.bias[0] = 1.0
        last = decoder.mask_embed.layers[-1]
        last.weight[0].zero_()
        last.weight[0, 3] = 1.0
        last.bias[0] = 0.0
    return model


@pytest.mark.parametrize("backbone", ["rn", "convnext"])
def test_empty_masks_through_the_video_predictor(tiny_model_factory, backbone) -> None:
    if backbone == "convnext":
        pytest.importorskip("timm")
    model = _constant_mask_model(_trained_like(tiny_model_factory(backbone)))
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, size=(4, 64, 96, 3), dtype=np.uint8)
    predictor = VideoPredictor(model, VOCABULARY, text_cache=False)
    session = predictor.new_video()
    tracked = session.push(frames[:2]) + session.push(frames[2:])

    images, _ = predictor.preprocessor(frames, torch.device("cpu"))
    raw = model(images)
    empty_raw = ~(raw.mask_logits > 0).flatten(2).any(-1)  # [T, Q]: constant masks are empty at every resolution
    assert empty_raw.any() and (~empty_raw).any(), "the construction must give both empty and full masks"
    uniform = torch.full((len(VOCABULARY),), 1.0 / len(VOCABULARY))
    for t, frame in enumerate(tracked):
        perm = frame.match.permutation
        empty = empty_raw[t][perm]  # track order
        if backbone == "rn":
            for j in torch.nonzero(empty).flatten().tolist():
                torch.testing.assert_close(frame.class_probs[j], uniform, atol=1e-6, rtol=0)
            for j in torch.nonzero(~empty).flatten().tolist():
                assert frame.class_probs[j].max() - frame.class_probs[j].min() > 1e-4
            continue
        # ConvNeXt by hand: full mask -> mean of the dense map; empty mask -> the zero vector; both through the head.
        dense = raw.clip_dense[t].float()
        pooled = torch.where(empty[:, None], torch.zeros(dense.shape[0]), dense.mean((-1, -2))[None])
        expected = _logits_by_hand(model, predictor.text, _head_by_hand(model, pooled)).softmax(-1)
        torch.testing.assert_close(frame.class_probs, expected, atol=1e-5, rtol=1e-4)
        for j in torch.nonzero(empty).flatten().tolist():
            assert (frame.class_probs[j] - uniform).abs().max() > 1e-3  # not the RN rule's uniform distribution
