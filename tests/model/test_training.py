"""clipvis.model.training: the optimiser's parameter groups, the schedule and gradient clipping as the official recipe
has them."""

from __future__ import annotations

import pytest
import torch

from clipvis.model.training import clip_gradients, gradient_clipping


def test_full_model_clipping_needs_a_positive_clip_value_as_the_official_build_optimizer():
    """Official build_optimizer clips the full model only when CLIP_VALUE > 0: 0 froze the head, -1 made it climb."""
    assert gradient_clipping(True, "full_model", 0.01) == "full_model"
    assert gradient_clipping(True, "full_model", 0.0) is None and gradient_clipping(True, "full_model", -1.0) is None
    assert gradient_clipping(False, "value", 1.0) is None and gradient_clipping(True, "norm", 1.0) == "norm"
    with pytest.raises(ValueError, match="CLIP_TYPE must be one of full_model, value, norm, not 'l2'"):
        gradient_clipping(True, "l2", 1.0)


def test_value_and_norm_clipping_are_detectron2s_per_parameter_clippers():
    """CLIP_TYPE value / norm (detectron2's maybe_add_gradient_clipping): each parameter on its own."""
    def params():
        a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
        a.grad, b.grad = torch.tensor([3.0, -4.0]), torch.tensor([0.3, 0.4])
        return [a, b]

    clipped = params()
    total = clip_gradients(clipped, "value", 1.0)
    assert clipped[0].grad.tolist() == [1.0, -1.0] and clipped[1].grad.tolist() == pytest.approx([0.3, 0.4])
    assert float(total) == pytest.approx((25 + 0.25) ** 0.5)  # the norm before clipping
    clipped = params()
    clip_gradients(clipped, "norm", 1.0)
    assert clipped[0].grad.tolist() == pytest.approx([0.6, -0.8], rel=1e-5)  # its own norm 5 -> 1
    assert clipped[1].grad.tolist() == pytest.approx([0.3, 0.4])  # norm 0.5: untouched
    clipped = params()
    clip_gradients(clipped, "full_model", 1.0)
    assert torch.linalg.vector_norm(torch.cat([p.grad for p in clipped])) == pytest.approx(1.0, rel=1e-4)


def test_without_clipping_the_norm_of_every_gradient_is_returned_and_none_is_changed():
    a, b, frozen = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 4.0])  # frozen: no gradient, skipped
    assert float(clip_gradients([a, b, frozen], None, 0.01)) == pytest.approx(5.0)
    assert a.grad.tolist() == [3.0, 0.0] and b.grad.tolist() == [0.0, 4.0]
    assert float(clip_gradients([frozen], None, 0.01)) == 0.0


def test_the_optimiser_gives_norms_and_embeddings_their_own_decay_and_the_backbone_its_multiplier():
    """The official build_optimizer's groups: WEIGHT_DECAY_NORM on norm layers, WEIGHT_DECAY_EMBED on embeddings,
    BACKBONE_MULTIPLIER on the backbone's rate; frozen parameters are left out, a shared one counted once."""
    from clipvis.model.training import build_optimizer

    model = torch.nn.Module()
    model.backbone = torch.nn.Linear(2, 2)
    model.norm = torch.nn.LayerNorm(2)
    model.embed = torch.nn.Embedding(3, 2)
    model.head = torch.nn.Linear(2, 2)
    model.frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    model.tied = model.head  # the same parameters under a second name
    groups = {group["name"]: group for group in build_optimizer(model, 1e-4, 0.05, 0.0, 0.01, 0.1).param_groups}
    assert sorted(groups) == ["backbone.bias", "backbone.weight", "embed.weight", "head.bias", "head.weight",
                              "norm.bias", "norm.weight"]
    decays = [groups[name]["weight_decay"] for name in ("head.weight", "norm.weight", "embed.weight")]
    assert decays == [0.05, 0.0, 0.01]
    assert groups["backbone.weight"]["lr"] == pytest.approx(1e-5) and groups["head.weight"]["lr"] == 1e-4


def test_the_schedule_is_detectron2s_warmup_multistep():
    """WarmupMultiStepLR, linear warm-up: factor from WARMUP_FACTOR to 1 over WARMUP_ITERS, x GAMMA at each step
    (the iteration at a step already has the lower rate)."""
    from clipvis.model.training import warmup_multistep_factor

    factors = [warmup_multistep_factor(it, (6, 8), 0.1, 4, 0.5) for it in range(10)]
    assert factors == pytest.approx([0.5, 0.625, 0.75, 0.875, 1, 1, 0.1, 0.1, 0.01, 0.01])
    # steps out of order ([3, 1] gave x0.01 from iteration 1 on) or between iterations: refused, as detectron2 does
    for steps in ((3, 1), (2, 2), (1.5,)):
        with pytest.raises(ValueError, match="increasing whole iteration numbers"):
            warmup_multistep_factor(0, steps, 0.1, 0, 1.0)
