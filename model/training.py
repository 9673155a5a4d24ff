"""Training-step math beside the loss (``criterion.py``), as the official recipe has it (docs/training.md,
"Optimisation"; ``CV:train_net.py`` build_optimizer): the optimiser's parameter groups (no weight decay on norms and
embeddings, the backbone's learning-rate multiplier), detectron2's warm-up multi-step schedule, and gradient clipping
as the official optimiser wrappers do it (CLIP-VIS' full-model clipper, detectron2's per-parameter ``value`` /
``norm`` clippers), and one optimisation step of the model on a batch (``training_step``: mixed precision, the
gradient scaler, clipping, the step, the losses averaged over the processes)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from clipvis.model.clipvis import ClipVis
    from clipvis.model.criterion import SetCriterion
    from clipvis.model.mask_decoder import DecoderOutput
    from clipvis.model.point_sampling import RandomPointSampler

CLIP_TYPES = ("full_model", "value", "norm")
#: The layers whose parameters get ``SOLVER.WEIGHT_DECAY_NORM`` (the norm layers of the official build_optimizer).
NORM_TYPES = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm2d, nn.BatchNorm1d, nn.SyncBatchNorm, nn.InstanceNorm2d)


def gradient_clipping(enabled: bool, clip_type: str, clip_value: float) -> str | None:
    """The clipping a ``SOLVER.CLIP_GRADIENTS`` block asks for, as the official ``build_optimizer`` decides it:
    ``full_model`` clips only with ``ENABLED`` and ``CLIP_VALUE > 0`` (0 or less is no clipping); ``value`` and
    ``norm`` (detectron2's ``maybe_add_gradient_clipping``, per parameter) whenever ``ENABLED``. None: no clipping."""
    if not enabled or (clip_type == "full_model" and not clip_value > 0.0):
        return None
    if clip_type not in CLIP_TYPES:
        raise ValueError(f"SOLVER.CLIP_GRADIENTS.CLIP_TYPE must be one of {', '.join(CLIP_TYPES)}, not {clip_type!r}")
    return clip_type


def clip_gradients(params: list[nn.Parameter], clip_type: str | None, clip_value: float,
                   norm_type: float = 2.0) -> torch.Tensor:
    """Clip the (unscaled) gradients of ``params`` as the official optimiser wrappers do before each step, and return
    the L2 norm of all of them before clipping (logged as ``grad_norm``).

    ``full_model``: the L2 norm of every gradient together at most ``clip_value`` (CLIP-VIS' own wrapper, which
    passes no norm type); ``value``: every gradient element within +-``clip_value``; ``norm``: each parameter's
    gradient norm (``norm_type``) at most ``clip_value`` (detectron2's per-parameter clippers); None: none."""
    grads = [p for p in params if p.grad is not None]
    if clip_type == "full_model":
        return torch.nn.utils.clip_grad_norm_(grads, clip_value)
    total = torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in grads])) if grads else \
        torch.zeros(())
    for p in grads if clip_type is not None else ():
        if clip_type == "value":
            torch.nn.utils.clip_grad_value_(p, clip_value)
        else:
            torch.nn.utils.clip_grad_norm_(p, clip_value, norm_type)
    return total


def build_optimizer(model: nn.Module, base_lr: float, weight_decay: float, weight_decay_norm: float,
                    weight_decay_embed: float, backbone_multiplier: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on norm layers and embeddings (official groups)."""
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            decay = weight_decay
            if isinstance(module, NORM_TYPES):
                decay = weight_decay_norm
            elif isinstance(module, nn.Embedding):
                decay = weight_decay_embed
            lr = base_lr * (backbone_multiplier if module_name.startswith("backbone") else 1.0)
            groups.append({"params": [param], "lr": lr, "weight_decay": decay, "name": f"{module_name}.{name}"})
    return torch.optim.AdamW(groups, lr=base_lr)


def warmup_multistep_factor(iteration: int, steps: tuple[int, ...], gamma: float, warmup_iters: int,
                            warmup_factor: float) -> float:
    """detectron2 WarmupMultiStepLR with linear warm-up: the LR multiplier at ``iteration``. ValueError for
    ``steps`` that are not increasing whole numbers (which detectron2 refuses too: ``[3, 1]`` multiplied by
    ``gamma ** 2`` from iteration 1 on)."""
    if any(int(step) != step for step in steps) or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        raise ValueError(f"the schedule's steps must be increasing whole iteration numbers, not {list(steps)}")
    factor = gamma ** bisect.bisect_right(steps, iteration)
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1 - alpha) + alpha
    return factor


class TrainingForward(nn.Module):
    """``forward`` = the model's training forward, so DistributedDataParallel hooks run around it."""

    def __init__(self, model: ClipVis) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> DecoderOutput:
        """images ``[B, 3, Hp, Wp]`` normalised and padded -> ``ClipVis.forward_train``'s ``DecoderOutput``:
        ``object_logits [B, Q, 2]``, ``mask_logits [B, Q, Hp/4, Wp/4]``, ``ious [B, Q]``, and the earlier layers'
        predictions in ``aux``."""
        return self.model.forward_train(images)


def masks_per_process(targets: Sequence[torch.Tensor], device: torch.device, world: int) -> float:
    """The loss normaliser: the number of ground-truth masks of the batch (``targets``: one ``[N_i, H, W]`` per
    sample) summed over the ``world`` processes (an all-reduce when there are several) and divided by their number,
    at least 1."""
    count = torch.tensor([float(sum(m.shape[0] for m in targets))], device=device)
    if world > 1:
        dist.all_reduce(count)
    return max(float(count.item()) / world, 1.0)


@dataclass(frozen=True)
class GradientClipping:
    """How ``clip_gradients`` clips: ``clip_type`` (None: no clipping), ``value``, ``norm_type``."""

    clip_type: str | None
    value: float
    norm_type: float = 2.0


@dataclass(frozen=True)
class TrainingStepResult:
    """One step's numbers: ``losses`` (``total_loss`` and each criterion term, averaged over the processes) and the
    gradients' L2 norm before clipping (``grad_norm``)."""

    losses: dict[str, float]
    grad_norm: float


def training_step(model: ClipVis, forward: nn.Module, criterion: SetCriterion, optimizer: torch.optim.Optimizer,
                  scaler: torch.amp.GradScaler, images: torch.Tensor, targets: list[torch.Tensor],
                  samplers: list[RandomPointSampler], amp_dtype: torch.dtype | None, clipping: GradientClipping,
                  world: int) -> TrainingStepResult:
    """One optimisation step (the learning-rate schedule's step is the caller's).

    ``images [B, 3, Hp, Wp]`` normalised and padded, on the model's device; ``targets``: each sample's ground-truth
    masks ``[N_i, Hp, Wp]``; ``samplers``: each sample's point sampler; ``forward``: ``TrainingForward(model)``,
    maybe wrapped in DistributedDataParallel; ``amp_dtype``: the autocast dtype, None for float32. The forward runs
    under autocast, the losses (normalised by ``masks_per_process``) are scaled by ``scaler`` and backpropagated, the
    gradients unscaled and clipped (``clipping``), then the optimiser steps through the scaler. With ``world > 1``
    every process calls this at the same point (two all-reduces)."""
    device = images.device
    num_masks = masks_per_process(targets, device, world)
    amp = amp_dtype is not None
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp):
        outputs = forward(images)
    losses = criterion(outputs, targets, samplers, num_masks=num_masks)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(losses.total).backward()
    scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = clip_gradients(params, clipping.clip_type, clipping.value, clipping.norm_type)
    scaler.step(optimizer)
    scaler.update()
    values = torch.stack([losses.total.detach()] + [v.detach().float() for v in losses.terms.values()])
    if world > 1:
        dist.all_reduce(values)
        values /= world
    numbers = values.tolist()
    return TrainingStepResult({"total_loss": numbers[0], **dict(zip(losses.terms, numbers[1:], strict=True))},
                              float(grad_norm))
