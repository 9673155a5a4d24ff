"""The training criterion and matcher against hand computations on tiny inputs with fixed points."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from clipvis.model import HungarianMatcher, LossWeights, SetCriterion
from clipvis.model.mask_decoder import DecoderOutput
from clipvis.model.point_sampling import RandomPointSampler, point_sample


class FixedPoints:
    """Hands out given points: the same set to the matcher and to every mask's loss."""

    def __init__(self, points: torch.Tensor) -> None:
        self.points = points  # [P, 2]
        self.importance_calls = 0

    def uniform(self, batch, num_points, device):
        return self.points[None].expand(batch, -1, -1).to(device)

    def importance(self, logits, num_points, oversample_ratio, importance_ratio):
        self.importance_calls += 1
        return self.points[None].expand(logits.shape[0], -1, -1).to(logits.device)


def pixel_centres(size: int) -> torch.Tensor:
    """Normalised centres of a size x size grid, row-major: ``[size*size, 2]`` (x, y)."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.stack(((xs.flatten() + 0.5) / size, (ys.flatten() + 0.5) / size), -1).double()


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def bce(logit, label):
    return -(label * math.log(sigmoid(logit)) + (1 - label) * math.log(1 - sigmoid(logit)))


def test_point_sample_reads_pixel_centres_exactly():
    grid = torch.arange(16.0).view(1, 1, 4, 4)
    values = point_sample(grid, pixel_centres(4).float()[None])
    assert torch.equal(values.flatten(), torch.arange(16.0))


def test_matcher_solves_a_constructed_cost_optimally():
    # Greedy (row by row) picks (0,0) then is forced to (1,1): 1 + 100. The optimum is (0,1), (1,0): 2 + 2.
    cost = torch.tensor([[1.0, 2.0, 50.0], [2.0, 100.0, 60.0]])
    match = HungarianMatcher.assign(cost)
    assert match.query_indices.tolist() == [0, 1] and match.target_indices.tolist() == [1, 0]
    # More queries than targets: each target gets exactly one query; inf entries are tolerated.
    cost = torch.tensor([[5.0, float("inf")], [1.0, 9.0], [7.0, 0.5], [3.0, 3.0]])
    match = HungarianMatcher.assign(cost)  # 4 queries x 2 targets
    assert match.query_indices.tolist() == [1, 2] and match.target_indices.tolist() == [0, 1]


def test_matcher_cost_is_the_official_formula():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 2).double()
    objects = torch.randn(3, 2).double()
    targets = (torch.rand(2, 2, 2) > 0.5).double()
    matcher = HungarianMatcher(num_points=4)
    cost = matcher.cost_matrix(objects, logits, targets, pixel_centres(2))
    expected = np.zeros((3, 2))
    for q in range(3):
        p_obj = math.exp(objects[q, 0]) / (math.exp(objects[q, 0]) + math.exp(objects[q, 1]))
        for n in range(2):
            lg, gt = logits[q].flatten().numpy(), targets[n].flatten().numpy()
            ce = np.mean([bce(a, b) for a, b in zip(lg, gt, strict=True)])
            s = sigmoid(lg)
            dice = 1 - (2 * (s * gt).sum() + 1) / (s.sum() + gt.sum() + 1)
            expected[q, n] = 5 * ce - 2 * p_obj + 5 * dice
    np.testing.assert_allclose(cost.numpy(), expected, rtol=1e-6, atol=1e-8)


def tiny_outputs(num_aux: int = 1, dtype=torch.float64, seed: int = 0) -> DecoderOutput:
    """B=2 images, Q=3 queries, 2x2 mask logits (targets at 4x4, 4x the resolution like the model)."""
    gen = torch.Generator().manual_seed(seed)

    def one():
        return DecoderOutput(
            object_logits=torch.randn(2, 3, 2, generator=gen, dtype=dtype),
            mask_logits=torch.randn(2, 3, 2, 2, generator=gen, dtype=dtype) * 2,
            ious=torch.rand(2, 3, generator=gen, dtype=dtype),
            query_embeds=torch.zeros(2, 3, 4, dtype=dtype),
        )

    final = one()
    final.aux = [one() for _ in range(num_aux)]
    return final


def tiny_targets() -> list[torch.Tensor]:
    a = torch.zeros(2, 4, 4)
    a[0, :2, :2] = 1  # top-left quarter
    a[1, 2:, :] = 1  # bottom half
    b = torch.zeros(1, 4, 4)
    b[0, :, 2:] = 1  # right half
    return [a, b]


def hand_losses(pred: DecoderOutput, targets, pairs, points_2x2) -> dict[str, float]:
    """The four terms by the spec's formulas, with loops, for the given (image, query, target) pairs."""
    # With points at the centres of a 2x2 grid, a 2x2 logit map is read exactly, and a 4x4 GT is read as the mean of
    # the 2x2 block around each point (bilinear at a block's centre).
    logits = pred.object_logits.numpy()
    weights = {0: 1.0, 1: 0.4}
    num, den = 0.0, 0.0
    matched = {(b, q) for b, q, _ in pairs}
    for b in range(logits.shape[0]):
        for q in range(logits.shape[1]):
            target = 0 if (b, q) in matched else 1
            log_softmax = logits[b, q] - np.log(np.exp(logits[b, q]).sum())
            num += weights[target] * -log_softmax[target]
            den += weights[target]
    n_masks = sum(t.shape[0] for t in targets)
    mask_sum, dice_sum, iou_terms = 0.0, 0.0, []
    for b, q, n in pairs:
        lg = pred.mask_logits[b, q].numpy().flatten()
        gt_full = targets[b][n].numpy()
        gt = np.array([gt_full[2 * i:2 * i + 2, 2 * j:2 * j + 2].mean() for i in range(2) for j in range(2)])
        mask_sum += np.mean([bce(x, y) for x, y in zip(lg, gt, strict=True)])
        s = sigmoid(lg)
        dice_sum += 1 - (2 * (s * gt).sum() + 1) / (s.sum() + gt.sum() + 1)
        pb = (s > 0.5).astype(float)  # the prediction binarised, the sampled GT as it is (official mask_iou)
        inter = (pb * gt).sum()
        gt_iou = inter / (pb.sum() + gt.sum() - inter) if pb.sum() + gt.sum() > 0 else 0.0
        if gt_iou > 0:
            iou_terms.append(abs(float(pred.ious[b, q]) - gt_iou))
    return {
        "loss_object_ce": num / den,
        "loss_mask": mask_sum / n_masks,
        "loss_dice": dice_sum / n_masks,
        "loss_iou": float(np.mean(iou_terms)) if iou_terms else 0.0,
    }


def test_every_term_matches_a_hand_computation_with_fixed_points():
    outputs = tiny_outputs(num_aux=1)
    targets = [t.double() for t in tiny_targets()]
    sampler = FixedPoints(pixel_centres(2))
    criterion = SetCriterion(num_points=4)
    result = criterion(outputs, targets, point_sampler=sampler)
    assert set(result.terms) == {f"{k}{s}" for k in ("loss_object_ce", "loss_mask", "loss_dice", "loss_iou")
                                 for s in ("", "_0")}
    for prediction, matches, suffix in ((outputs.aux[0], result.matches[0], "_0"), (outputs, result.matches[1], "")):
        pairs = [(b, int(q), int(n)) for b, m in enumerate(matches)
                 for q, n in zip(m.query_indices, m.target_indices, strict=True)]
        assert sorted(n for b, _, n in pairs if b == 0) == [0, 1] and [n for b, _, n in pairs if b == 1] == [0]
        # The matcher's choice is the brute-force optimum of its cost.
        for b, m in enumerate(matches):
            cost = criterion.matcher.cost_matrix(
                prediction.object_logits[b], prediction.mask_logits[b], targets[b], pixel_centres(2)
            )
            best = min(
                sum(cost[q, n] for n, q in enumerate(perm))
                for perm in itertools.permutations(range(3), targets[b].shape[0])
            )
            assert float(cost[m.query_indices, m.target_indices].sum()) == pytest.approx(float(best))
        expected = hand_losses(prediction, targets, pairs, pixel_centres(2))
        for key, value in expected.items():
            assert float(result.terms[key + suffix]) == pytest.approx(value, rel=1e-9, abs=1e-12), key
    weights = LossWeights()
    total = sum(weights.of(k) * float(v) for k, v in result.terms.items())
    assert float(result.total) == pytest.approx(total)
    assert sampler.importance_calls == 4  # one importance draw per image and prediction


def test_matcher_costs_follow_the_loss_weights():
    """The official from_config gives the matcher OBJECT_WEIGHT, MASK_WEIGHT and DICE_WEIGHT as costs: a config that
    overrides them changes the assignment too, not only the loss."""
    matcher = SetCriterion(weights=LossWeights(object_ce=1.0, mask=20.0, dice=3.0), num_points=7).matcher
    assert (matcher.cost_object, matcher.cost_mask, matcher.cost_dice, matcher.num_points) == (1.0, 20.0, 3.0, 7)
    default = SetCriterion().matcher
    assert (default.cost_object, default.cost_mask, default.cost_dice) == (2.0, 5.0, 5.0)


def test_iou_target_keeps_the_sampled_gt_soft():
    """At a mask's edge a bilinear GT sample is fractional; the official ``mask_iou`` uses it as it is (only the
    prediction is binarised), with no epsilon: 0.25 + 1 over 3 points of which 2 are predicted is (0 + 1) / (2 +
    1.25 - 1)."""
    from clipvis.model.criterion import point_iou

    logits = torch.tensor([[-3.0, 2.0, 4.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    labels = torch.tensor([[0.25, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    assert point_iou(logits, labels).tolist() == [1.0 / (2 + 1.25 - 1), 0.0]  # empty union: 0, not NaN


def test_iou_loss_counts_only_matches_with_positive_gt_iou():
    outputs = tiny_outputs(num_aux=0)
    outputs.mask_logits = torch.full_like(outputs.mask_logits, -5.0)  # every prediction empty: GT IoU 0
    result = SetCriterion(num_points=4)(outputs, [t.double() for t in tiny_targets()], FixedPoints(pixel_centres(2)))
    assert float(result.terms["loss_iou"]) == 0.0
    assert float(result.terms["loss_dice"]) > 0.3  # the masks are still supervised


def test_images_without_instances_only_have_the_object_term():
    outputs = tiny_outputs(num_aux=0)
    outputs.mask_logits.requires_grad_(True)
    targets = [torch.zeros(0, 4, 4, dtype=torch.float64), torch.zeros(0, 4, 4, dtype=torch.float64)]
    result = SetCriterion(num_points=4)(outputs, targets, FixedPoints(pixel_centres(2)))
    logits = outputs.object_logits
    expected = torch.nn.functional.cross_entropy(logits.transpose(1, 2), torch.ones(2, 3, dtype=torch.int64))
    assert float(result.terms["loss_object_ce"]) == pytest.approx(float(expected))
    assert float(result.terms["loss_mask"].detach()) == 0.0
    result.total.backward()  # the graph still reaches the mask logits (zero gradient), as DDP needs


def test_targets_that_do_not_fit_the_batch_are_refused_clearly():
    """Fewer targets than images left the rest as images without instances, 0/255 masks gave a negative loss, and a
    2-D target failed inside grid_sample."""
    outputs, targets = tiny_outputs(num_aux=0), tiny_targets()
    criterion = SetCriterion(num_points=4)
    with pytest.raises(ValueError, match=r"^1 target mask tensors for 2 images: give one \[N_b, Hp, Wp\] tensor"):
        criterion(outputs, targets[:1])
    with pytest.raises(TypeError, match=r"^targets\[0\] is torch.uint8: masks must be torch.bool \(or float in"):
        criterion(outputs, [(t * 255).to(torch.uint8) for t in targets])
    with pytest.raises(ValueError, match=r"^targets\[1\] holds values outside \[0, 1\] \(min 0, max 255\)"):
        criterion(outputs, [targets[0], targets[1] * 255])
    with pytest.raises(ValueError, match=r"^targets\[0\] has shape \(4, 4\): expected \[N_b, Hp, Wp\].*target\[None\]"):
        criterion(outputs, [targets[0][0], targets[1]])
    # Masks at an unpadded image's size (4x3 where the batch is padded to 4x4 here): they were read stretched.
    with pytest.raises(ValueError, match=r"^targets\[1\] masks are 4x3, not in the proportions of the 2x2 "
                       r"predictions .*: pad each mask as its image was padded"):
        criterion(outputs, [targets[0], targets[1][:, :, :3]])
    with pytest.raises(ValueError, match=r"^targets\[1\] masks are 4x4 but targets\[0\]'s are 2x2: a batch's masks"):
        criterion(outputs, [targets[0][:, ::2, ::2], targets[1]])
    criterion(outputs, [t[:, ::2, ::2] for t in targets], FixedPoints(pixel_centres(2)))  # any scale of the layout
    as_bool = criterion(outputs, [t > 0 for t in targets], FixedPoints(pixel_centres(2)))
    as_float = criterion(outputs, targets, FixedPoints(pixel_centres(2)))
    assert float(as_bool.total) == pytest.approx(float(as_float.total))


def test_gradients_through_the_criterion_match_finite_differences():
    outputs = tiny_outputs(num_aux=1, seed=3)
    targets = [t.double() for t in tiny_targets()]
    sampler = FixedPoints(pixel_centres(2) * 0.9 + 0.03)  # off-centre points: bilinear mixing of neighbours
    criterion = SetCriterion(num_points=4)
    tensors = []
    for pred in (outputs, outputs.aux[0]):
        for name in ("object_logits", "mask_logits", "ious"):
            tensors.append(getattr(pred, name).clone().requires_grad_(True))

    def total(*xs):
        final = DecoderOutput(xs[0], xs[1], xs[2], outputs.query_embeds)
        final.aux = [DecoderOutput(xs[3], xs[4], xs[5], outputs.query_embeds)]
        return criterion(final, targets, sampler).total

    assert torch.autograd.gradcheck(total, tuple(tensors), eps=1e-6, atol=1e-6, fast_mode=True)


def test_random_sampler_keeps_the_most_uncertain_points():
    logits = torch.full((1, 1, 8, 8), 10.0)
    logits[..., :, :2] = 0.0  # the uncertain band: x < 0.25
    gen = torch.Generator().manual_seed(0)
    points = RandomPointSampler(gen).importance(logits, 400, 3.0, 0.75)
    assert points.shape == (1, 400, 2)
    # The 300 kept candidates come from the ~25 % uncertain band (x < 0.25 reads a logit near 0).
    assert (points[0, :300, 0] < 0.3).float().mean() > 0.95
    same = RandomPointSampler(torch.Generator().manual_seed(0)).importance(logits, 400, 3.0, 0.75)
    assert torch.equal(points, same)  # a generator makes the points reproducible


def test_model_training_forward_feeds_the_criterion_with_deep_supervision(tiny_model_factory):
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    model = tiny_model_factory()
    out = model.forward_train(images)
    assert len(out.aux) == model.config.decoder_layers  # DEC_LAYERS predictions in all
    assert out.mask_logits.shape == (2, model.config.num_queries, 16, 16)
    assert all(a.mask_logits.shape == out.mask_logits.shape for a in out.aux)
    inference = model(images)
    torch.testing.assert_close(inference.mask_logits, out.mask_logits)
    torch.testing.assert_close(inference.object_logits, out.object_logits)
    targets = [torch.zeros(1, 64, 64), torch.zeros(2, 64, 64)]
    targets[0][0, 10:40, 5:30] = 1
    targets[1][0, :20] = 1
    targets[1][1, 30:, 30:] = 1
    result = SetCriterion(num_points=64)(out, targets, torch.Generator().manual_seed(0))
    assert len(result.terms) == 4 * (model.config.decoder_layers + 1)
    model.zero_grad()
    result.total.backward()
    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    assert all(p.grad is not None for p in head if p.requires_grad)
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("backbone."))


def test_the_no_object_weight_the_criterion_trains_with_is_the_one_official_checkpoints_get():
    """One constant (clipvis.model.config.OBJECT_CLASS_WEIGHTS) for the criterion's default and the
    ``criterion.empty_object_weight`` buffer written into official-format state dicts."""
    from clipvis.model.checkpoint import to_official_keys

    written = to_official_keys({})["criterion.empty_object_weight"]
    assert torch.equal(written, torch.tensor(SetCriterion().object_class_weights))
    assert SetCriterion().object_class_weights == (1.0, 0.4)
