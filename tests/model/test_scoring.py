"""clipvis.model.scoring: the streaming scorer against the formula by hand and the official offline evaluator's
form, suppression and mask scores, batches, refused frames, the frame spill, positive mask statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from clipvis.model.scoring import (
    FrameSpill,
    InstanceSelection,
    StreamingVideoScorer,
    _suppression,
    positive_mask_statistics,
)
from clipvis.model.temporal_matcher import TemporalMatcher

# The official offline evaluator's form of the scoring (whole-video tensors), the reference of the streaming scorer.


def official_video_scores(
    per_frame_object_logits: torch.Tensor, class_probs: torch.Tensor, ious: torch.Tensor
) -> torch.Tensor:
    """s_{q,c} = sqrt(o_q * mean_t sqrt(p_{q,t,c} * u_{q,t})).

    Args: per_frame_object_logits ``[Q, T, 2]`` (aligned), class_probs ``[Q, T, C]``, ious ``[Q, T]``.
    ``o_q`` = softmax of the frame-averaged object logits (summed frame by frame, as the official code does).
    """
    total = per_frame_object_logits[:, 0]
    for t in range(1, per_frame_object_logits.shape[1]):
        total = total + per_frame_object_logits[:, t]
    video_logits = total / per_frame_object_logits.shape[1]
    object_prob = video_logits.softmax(-1)[:, 0]
    mean_sqrt = (class_probs * ious[..., None]).sqrt().mean(1)
    return (object_prob[:, None] * mean_sqrt).sqrt()


def official_select_instances(
    scores: torch.Tensor,
    class_probs: torch.Tensor,
    per_frame_object_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    top_n: int = 50,
) -> InstanceSelection:
    """Top-N (query, class) pairs (``torch.topk(sorted=False)`` order), suppression, mask score.

    Args: scores ``[Q, C]``; class_probs ``[Q, T, C]``; per_frame_object_logits ``[Q, T, 2]``;
    mask_logits ``[Q, T, h, w]`` aligned, at stride 4.
    """
    num_classes = scores.shape[1]
    k = min(top_n, scores.numel())
    top_scores, flat = scores.flatten().topk(k, sorted=False)
    queries, labels = flat // num_classes, flat % num_classes
    probs_sel = class_probs[queries, :, labels]  # [N, T]
    object_prob_sel = per_frame_object_logits.softmax(-1)[queries, :, 0]
    suppressed = _suppression(top_scores, probs_sel, object_prob_sel)
    masks = mask_logits[queries].clone()
    masks[suppressed] = -1.0
    positive = (masks > 0).float()
    mask_scores = (masks.sigmoid() * positive).flatten(1).sum(1) / (positive.flatten(1).sum(1) + 1e-6)
    return InstanceSelection(queries, labels, top_scores, suppressed, mask_scores, top_scores * mask_scores)


def hand_scores(obj_logits, probs, ious):
    q, t, c = probs.shape
    out = np.zeros((q, c))
    for i in range(q):
        mean_logit = obj_logits[i].mean(0)
        o = math.exp(mean_logit[0]) / (math.exp(mean_logit[0]) + math.exp(mean_logit[1]))
        for k in range(c):
            out[i, k] = math.sqrt(o * np.mean([math.sqrt(probs[i, s, k] * ious[i, s]) for s in range(t)]))
    return out


def random_video(q=4, t=5, c=3, h=6, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    obj = torch.randn(q, t, 2, generator=g) * 3
    probs = torch.randn(q, t, c, generator=g).softmax(-1)
    ious = torch.rand(q, t, generator=g)
    masks = torch.randn(q, t, h, w, generator=g) * 4
    return obj, probs, ious, masks


def test_fused_scores_against_hand_computation() -> None:
    """The streaming scorer's s_{q,c} (and the offline reference the other tests compare it with) against the formula
    computed by hand, frame by frame."""
    obj, probs, ious, masks = random_video()
    expected = hand_scores(obj.numpy(), probs.numpy(), ious.numpy())
    scorer = StreamingVideoScorer()
    for t in range(obj.shape[1]):
        scorer.add_frame(obj[:, t], probs[:, t], ious[:, t], masks[:, t])
    np.testing.assert_allclose(scorer.fused_scores().numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(official_video_scores(obj, probs, ious).numpy(), expected, atol=1e-6)
    scorer.close()


@pytest.mark.parametrize("scorer", ["streaming", "offline reference"])
def test_suppression_quirk_and_mask_score_by_hand(scorer: str) -> None:
    """The library's selection (and the offline reference): a suppressed frame's mask is left out of the mask score."""
    obj, probs, ious, masks = random_video(q=2, t=3, c=2)
    obj[1, 2] = torch.tensor([-20.0, 20.0])  # query 1 has no object at frame 2 -> suppressed there
    scores = official_video_scores(obj, probs, ious)
    if scorer == "streaming":
        streaming = StreamingVideoScorer()
        for t in range(3):
            streaming.add_frame(obj[:, t], probs[:, t], ious[:, t], masks[:, t])
        sel = streaming.select(top_n=4, official_order=True)
        streaming.close()
    else:
        sel = official_select_instances(scores, probs, obj, masks, top_n=4)
    for n in range(4):
        q, c = int(sel.queries[n]), int(sel.labels[n])
        s = float(scores[q, c])
        expected_supp = []
        for t in range(3):
            o_t = float(obj[q, t].softmax(-1)[0])
            r = math.sqrt(1 / (1 + math.exp(-float(probs[q, t, c]))) * o_t)  # sigmoid of a probability
            expected_supp.append(r < 0.1 * s)
        assert sel.suppressed[n].tolist() == expected_supp
        kept = [masks[q, t] for t in range(3) if not expected_supp[t]]
        values = torch.cat([m[m > 0].sigmoid() for m in kept]) if kept else torch.zeros(0)
        mask_score = float(values.sum()) / (len(values) + 1e-6)
        assert float(sel.mask_scores[n]) == pytest.approx(mask_score, rel=1e-5)
        assert float(sel.scores[n]) == pytest.approx(s * mask_score, rel=1e-5)
    assert any(sel.suppressed[n, 2] for n in range(4) if sel.queries[n] == 1)


def test_streaming_scorer_equals_official_offline() -> None:
    obj, probs, ious, masks = random_video(q=6, t=9, c=4, seed=3)
    obj[2] = torch.tensor([6.0, -6.0])  # query 2: a confident object of class 1 on every frame but frame 4
    obj[2, 4] = torch.tensor([-30.0, 30.0])  # -> selected, and suppressed at frame 4 (its mask there has pixels)
    probs[2] = torch.tensor([0.05, 0.85, 0.05, 0.05])
    ious[2] = 0.9
    scorer = StreamingVideoScorer(spill_budget_bytes=64)  # forces the spill to disk
    for t in range(9):
        scorer.add_frame(obj[:, t], probs[:, t], ious[:, t], masks[:, t])
    scores = official_video_scores(obj, probs, ious)
    np.testing.assert_allclose(scorer.fused_scores().numpy(), scores.numpy(), atol=1e-6)
    offline = official_select_instances(scores, probs, obj, masks, top_n=10)
    streaming = scorer.select(top_n=10, official_order=True)
    assert streaming.queries.tolist() == offline.queries.tolist()
    assert streaming.labels.tolist() == offline.labels.tolist()
    assert offline.suppressed.any() and torch.equal(streaming.suppressed, offline.suppressed)
    np.testing.assert_allclose(streaming.mask_scores.numpy(), offline.mask_scores.numpy(), rtol=1e-5)
    np.testing.assert_allclose(streaming.scores.numpy(), offline.scores.numpy(), rtol=1e-5)
    ranked = scorer.select(top_n=10, score_threshold=float(offline.scores.median()))
    assert ranked.scores.tolist() == sorted(ranked.scores.tolist(), reverse=True)
    assert bool((ranked.scores >= offline.scores.median()).all())
    scorer.close()


def test_frames_added_in_batches_give_the_scores_of_frames_added_one_by_one() -> None:
    """VideoSession.push hands the scorer a whole batch (one host copy per batch): the same running sums, spilled
    statistics and selection, bit for bit, as frame by frame."""
    obj, probs, ious, masks = random_video(q=6, t=9, c=4, seed=5)
    one_by_one, batched = StreamingVideoScorer(), StreamingVideoScorer()
    for t in range(9):
        one_by_one.add_frame(obj[:, t], probs[:, t], ious[:, t], masks[:, t])
    for first, last in ((0, 4), (4, 8), (8, 9)):
        statistics = torch.stack([positive_mask_statistics(masks[:, t]) for t in range(first, last)])
        batched.add_frames(obj[:, first:last].transpose(0, 1), probs[:, first:last].transpose(0, 1),
                           ious[:, first:last].T, statistics)
    assert batched.num_frames == one_by_one.num_frames == 9
    assert torch.equal(batched.fused_scores(), one_by_one.fused_scores())
    expected, got = one_by_one.select(top_n=10), batched.select(top_n=10)
    assert torch.equal(got.queries, expected.queries) and torch.equal(got.labels, expected.labels)
    assert torch.equal(got.scores, expected.scores) and torch.equal(got.mask_scores, expected.mask_scores)


def test_a_refused_frame_leaves_the_scorer_and_the_matcher_as_they_were() -> None:
    """A frame of another class count had already added its object logits (later scores differed); negative ious
    (raw IoU-head logits) made every score NaN and select() returned nothing; a [B, Q, D] batch was taken as a first
    frame, then failed with an einsum error. Each is now a ValueError before any state changes."""
    obj, probs, ious, masks = random_video(t=2)
    wrong_classes = torch.rand(4, 4).softmax(-1)
    checked, plain = StreamingVideoScorer(), StreamingVideoScorer()
    checked.add_frame(obj[:, 0], probs[:, 0], ious[:, 0], masks[:, 0])
    with pytest.raises(ValueError, match="a frame of 4 queries and 4 classes after frames of 4 queries and 3"):
        checked.add_frame(obj[:, 1], wrong_classes, ious[:, 1], masks[:, 1])
    with pytest.raises(ValueError, match=r"ious must be \[Q\] per frame with Q = 4"):
        checked.add_frame(obj[:, 1], probs[:, 1], ious[:3, 1], masks[:, 1])
    with pytest.raises(ValueError, match=r"ious must be the predicted mask IoUs \(>= 0.*apply torch.sigmoid first"):
        checked.add_frame(obj[:, 1], probs[:, 1], ious[:, 1] - 2.0, masks[:, 1])
    nan_ious = ious[:, 1].clone()
    nan_ious[2] = float("nan")  # named as NaN, not as a raw logit (review29: it said -inf, apply sigmoid)
    with pytest.raises(ValueError, match=r"ious hold NaN: the network's output is not finite"):
        checked.add_frame(obj[:, 1], probs[:, 1], nan_ious, masks[:, 1])
    checked.add_frame(obj[:, 1], probs[:, 1], ious[:, 1], masks[:, 1])
    for t in range(2):
        plain.add_frame(obj[:, t], probs[:, t], ious[:, t], masks[:, t])
    assert checked.num_frames == 2 and torch.equal(checked.fused_scores(), plain.fused_scores())
    assert torch.equal(checked.select(top_n=5).scores, plain.select(top_n=5).scores)
    matcher = TemporalMatcher()
    with pytest.raises(ValueError, match=r"\[Q, D\], got shape \(2, 8, 16\): match a batch's frames one by one"):
        matcher.match(torch.randn(2, 8, 16))
    assert not matcher.memory
    matcher.match(torch.randn(8, 16))
    with pytest.raises(ValueError, match=r"embeds of shape \(8, 32\) after frames of \(8, 16\)"):
        matcher.match(torch.randn(8, 32))
    assert len(matcher.memory) == 1


def test_frame_spill_round_trip() -> None:
    spill = FrameSpill(memory_budget_bytes=100)
    frames = [np.full((3, 4), i, dtype=np.float32) for i in range(10)]
    for f in frames:
        spill.append(f)
    np.testing.assert_array_equal(np.asarray(spill.read()), np.stack(frames))
    with pytest.raises(ValueError):
        spill.append(np.zeros((2, 2), dtype=np.float32))
    spill.close()


def _reference_positive_mask_statistics(mask_logits: torch.Tensor) -> torch.Tensor:
    """`positive_mask_statistics` as it was before it multiplied in place and counted in float32."""
    positive = mask_logits > 0
    mask_sum = (mask_logits.float().sigmoid() * positive).flatten(1).sum(1)
    mask_count = positive.flatten(1).sum(1).float()
    return torch.stack([mask_sum, mask_count], 1)


@pytest.mark.parametrize("shape", [(0, 4, 5), (1, 1, 1), (3, 7, 5), (100, 120, 216), (5, 184, 320), (2, 1100, 1000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_positive_mask_statistics_are_bit_identical_to_the_plain_form(shape, dtype) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    logits = (torch.randn(shape, generator=generator) * 4).to(dtype)
    if shape[0] >= 3:  # all negative, all positive, zeros and -0 (not positive), huge magnitudes
        logits[0] = -logits[0].abs() - 1
        logits[1] = logits[1].abs() + 1
        logits[2].view(-1)[::2] = 0.0
        logits[2].view(-1)[1::2] = -0.0
    if shape[0] >= 4:
        logits[3].view(-1)[::3] = float("inf")
        logits[3].view(-1)[1::3] = float("-inf")
    got = positive_mask_statistics(logits)
    want = _reference_positive_mask_statistics(logits)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want)


def test_numpy_frames_are_refused_naming_the_argument_before_any_sum_changes() -> None:
    """``add_frame`` / ``add_frames`` with numpy arrays failed on a tensor method (AttributeError) naming nothing."""
    scorer = StreamingVideoScorer()
    frame = (torch.zeros(3, 2), torch.full((3, 4), 0.25), torch.ones(3), torch.ones(3, 8, 8))
    with pytest.raises(TypeError, match=r"^class_probs must be a torch tensor \[Q, C\], not ndarray: "
                                        r"torch.from_numpy\(class_probs\)$"):
        scorer.add_frame(frame[0], frame[1].numpy(), *frame[2:])
    with pytest.raises(TypeError, match=r"^mask_statistics must be a torch tensor \[T, Q, 2\], not list$"):
        scorer.add_frames(frame[0][None], frame[1][None], frame[2][None], [[[1.0, 2.0]] * 3])
    assert scorer.num_frames == 0
    scorer.add_frame(*frame)
    assert scorer.num_frames == 1
