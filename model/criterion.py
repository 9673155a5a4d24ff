"""The training criterion of CLIP-VIS: object CE, point BCE + Dice, mask-IoU L1, deep supervision.

See docs/training.md, "Losses" (official: `CV:clipvis/modeling/criterion.py`).

For every prediction of the decoder (the last one and each auxiliary one, ``DEC_LAYERS`` in all) the queries are
matched to the ground-truth instances by :class:`HungarianMatcher` and four terms are computed:

* ``loss_object_ce``: 2-way cross-entropy over all Q queries of every image, target 0 ("object") for matched
  queries and 1 ("no object") for the rest, class weights ``[1.0, 0.4]``, weighted mean ``sum(w CE) / sum(w)``.
* ``loss_mask``: BCE-with-logits of each matched mask on K importance-sampled points, mean over the points, summed
  over the masks and divided by the number of GT masks (averaged over processes in distributed training).
* ``loss_dice``: ``1 - (2 sum(s g) + 1) / (sum(s) + sum(g) + 1)`` on the same points, summed / number of masks.
* ``loss_iou``: L1 between the IoU head's output and the IoU of the binarised prediction (``sigmoid > 0.5``) with
  the GT as sampled on those points (bilinear, left soft, as the official ``mask_iou``), over the matched queries
  whose GT IoU is > 0, averaged over them (0 if none).

Keys of the last prediction are as above; the auxiliary ones get ``_0``, ``_1``, ... (from the raw queries up).
The weighted total is ``sum over predictions of 2 L_obj + 5 L_mask + 5 L_dice + 2 L_iou``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from clipvis.model.config import OBJECT_CLASS_WEIGHTS
from clipvis.model.mask_decoder import DecoderOutput
from clipvis.model.matcher import HungarianMatcher, Match
from clipvis.model.point_sampling import (
    PointSampler,
    SamplerLike,
    at_least_float32,
    per_image_samplers,
    point_sample,
)

#: The four terms of every prediction (the final one and each auxiliary one, suffixed ``_<layer>``).
LOSS_NAMES = ("loss_object_ce", "loss_mask", "loss_dice", "loss_iou")


@dataclass(frozen=True)
class LossWeights:
    """Official weights (``OBJECT_WEIGHT``, ``MASK_WEIGHT``, ``DICE_WEIGHT``, ``MASKIOU_WEIGHT``)."""

    object_ce: float = 2.0
    mask: float = 5.0
    dice: float = 5.0
    iou: float = 2.0

    def of(self, key: str) -> float:
        """The weight of a loss key, auxiliary suffix ignored (``loss_dice_3`` -> dice)."""
        base = re.sub(r"_\d+$", "", key)
        return dict(zip(LOSS_NAMES, (self.object_ce, self.mask, self.dice, self.iou), strict=True))[base]


@dataclass
class CriterionOutput:
    """Unweighted terms by official key, the weighted total to backpropagate, and each prediction's matches."""

    terms: dict[str, torch.Tensor]
    total: torch.Tensor
    matches: list[list[Match]] = field(default_factory=list)  # [prediction][image], the last prediction last


def sigmoid_ce_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """logits, labels ``[M, P]`` -> sum over masks of the mean BCE over points, / num_masks."""
    return F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1).sum() / num_masks


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, num_masks: float) -> torch.Tensor:
    """logits, labels ``[M, P]`` -> sum over masks of ``1 - (2 sum(s g) + 1) / (sum(s) + sum(g) + 1)``, / num_masks."""
    probs = logits.sigmoid()
    numerator = 2 * (probs * labels).sum(-1)
    denominator = probs.sum(-1) + labels.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


def point_iou(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """IoU of ``sigmoid(logits) > 0.5`` with the point labels as sampled (bilinear, so fractional at the mask's
    edge: the official ``mask_iou`` in ``CV:clipvis/modeling/criterion.py`` leaves them soft): ``[M, P]`` -> ``[M]``
    (no grad). 0 where the union is empty (officially NaN there, which the IoU loss leaves out as it leaves out 0)."""
    pred = (logits.detach().sigmoid() > 0.5).to(logits.dtype)
    gt = labels.detach().to(logits.dtype)
    intersection = (pred * gt).sum(-1)
    union = pred.sum(-1) + gt.sum(-1) - intersection
    return torch.where(union > 0, intersection / union.clamp_min(torch.finfo(union.dtype).tiny), 0.0)


def check_targets(targets: Sequence[torch.Tensor], batch_size: int, mask_size: tuple[int, int] | None = None) -> None:
    """Raise ValueError / TypeError, saying what is expected, unless ``targets`` is one ``[N_b, Hp, Wp]`` mask tensor
    per image, bool or float in [0, 1]: fewer targets than images made the others empty images, a 2-D target failed
    deep inside ``grid_sample``, and 0/255 masks gave a negative loss. (A float target's range is read on its
    device: one synchronisation per float target; bool targets, as the trainer's, cost nothing.)

    ``mask_size``: the predictions' ``(h, w)``. Points are read at the same relative positions of a prediction and
    its target, so a target must cover what the padded image covers: its ``Hp : Wp`` must be ``h : w`` (``Hp = 4h``
    at the model's stride). A target at the unpadded image size was read stretched, without a word."""
    if isinstance(targets, torch.Tensor) and targets.dim() != 4:
        raise TypeError(f"targets must be a sequence of {batch_size} mask tensors [N_b, Hp, Wp] (one per image), "
                        f"not one tensor of shape {tuple(targets.shape)}")
    if len(targets) != batch_size:
        raise ValueError(f"{len(targets)} target mask tensors for {batch_size} images: give one [N_b, Hp, Wp] tensor "
                         "per image (N_b = 0 for an image without instances)")
    for b, target in enumerate(targets):
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"targets[{b}] is a {type(target).__name__}: expected a torch tensor [N_b, Hp, Wp]")
        if target.dim() != 3:
            hint = " (one instance: target[None])" if target.dim() == 2 else ""
            raise ValueError(f"targets[{b}] has shape {tuple(target.shape)}: expected [N_b, Hp, Wp], one mask per "
                             f"instance{hint}")
        if mask_size is not None and target.shape[1] * mask_size[1] != target.shape[2] * mask_size[0]:
            height, width = mask_size
            raise ValueError(f"targets[{b}] masks are {target.shape[1]}x{target.shape[2]}, not in the proportions of "
                             f"the {height}x{width} predictions (the padded image's: {4 * height}x{4 * width} at the "
                             "model's stride 4): pad each mask as its image was padded (zeros at the bottom and "
                             "right), to [N_b, Hp, Wp]")
        if b and tuple(target.shape[1:]) != tuple(targets[0].shape[1:]):
            raise ValueError(f"targets[{b}] masks are {target.shape[1]}x{target.shape[2]} but targets[0]'s are "
                             f"{targets[0].shape[1]}x{targets[0].shape[2]}: a batch's masks share its padded size")
        if target.dtype == torch.bool:
            continue
        if not target.is_floating_point():
            raise TypeError(f"targets[{b}] is {target.dtype}: masks must be torch.bool (or float in [0, 1]); "
                            "convert 0/1 or 0/255 masks with target > 0")
        if target.numel() and not bool(((target >= 0) & (target <= 1)).all()):
            raise ValueError(f"targets[{b}] holds values outside [0, 1] (min {float(target.min()):g}, max "
                             f"{float(target.max()):g}): masks must be torch.bool or float in [0, 1]")


class SetCriterion:
    """Losses of a decoder's training outputs against per-image instance masks.

    Example::

        outputs = model.forward_train(images)           # [B, 3, Hp, Wp]
        result = criterion(outputs, [masks_0, masks_1])  # masks_b: [N_b, Hp, Wp] bool/float, padded like images
        result.total.backward()
    """

    def __init__(
        self,
        matcher: HungarianMatcher | None = None,
        weights: LossWeights = LossWeights(),
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_ratio: float = 0.75,
        object_class_weights: Sequence[float] = OBJECT_CLASS_WEIGHTS,
        deep_supervision: bool = True,
    ) -> None:
        # The matcher's costs are the loss weights, as the official from_config builds both from OBJECT_WEIGHT,
        # MASK_WEIGHT and DICE_WEIGHT (``CV:clipvis/clipvis.py``).
        self.matcher = matcher or HungarianMatcher(weights.object_ce, weights.mask, weights.dice, num_points)
        self.weights = weights
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_ratio = importance_ratio
        self.object_class_weights = tuple(float(w) for w in object_class_weights)
        self.deep_supervision = deep_supervision

    def __call__(
        self,
        outputs: DecoderOutput,
        targets: Sequence[torch.Tensor],
        point_sampler: SamplerLike | Sequence[SamplerLike] = None,
        num_masks: float | None = None,
    ) -> CriterionOutput:
        """outputs: :meth:`ClipVis.forward_train`'s result (``aux`` holds the earlier predictions); targets: B
        tensors ``[N_b, Hp, Wp]``, bool or float in [0, 1] (anything else raises: :func:`check_targets`);
        point_sampler: where to read masks (a sampler, a generator, None = global RNG, or a sequence of those, one
        per image); num_masks: the loss normaliser (default: the number of GT masks in
        ``targets``; at least 1).
        """
        check_targets(targets, int(outputs.mask_logits.shape[0]), tuple(outputs.mask_logits.shape[-2:]))
        samplers = per_image_samplers(point_sampler, len(targets))
        if num_masks is None:
            num_masks = float(sum(int(t.shape[0]) for t in targets))
        num_masks = max(float(num_masks), 1.0)
        predictions = list(outputs.aux) + [outputs] if self.deep_supervision else [outputs]
        terms: dict[str, torch.Tensor] = {}
        all_matches = []
        for index, prediction in enumerate(predictions):
            matches = self.matcher(prediction.object_logits, prediction.mask_logits, list(targets), samplers)
            layer = self.prediction_losses(prediction, targets, matches, samplers, num_masks)
            suffix = "" if index == len(predictions) - 1 else f"_{index}"
            terms.update({f"{key}{suffix}": value for key, value in layer.items()})
            all_matches.append(matches)
        total = sum(self.weights.of(key) * value for key, value in terms.items())
        return CriterionOutput(terms, total, all_matches)

    def prediction_losses(
        self,
        prediction: DecoderOutput,
        targets: Sequence[torch.Tensor],
        matches: list[Match],
        samplers: Sequence[PointSampler],
        num_masks: float,
    ) -> dict[str, torch.Tensor]:
        """The four unweighted terms of one prediction given its matches.

        ``prediction``: object_logits ``[B, Q, 2]``, mask_logits ``[B, Q, h, w]``, ious ``[B, Q]``; ``targets``: B
        ground-truth masks ``[N_b, Hp, Wp]`` bool; ``matches``: per image, its matched (query, target) indices ->
        ``LOSS_NAMES`` -> scalar tensors ``[]``."""
        logits = at_least_float32(prediction.object_logits)  # [B, Q, 2]
        device = logits.device
        batch_idx = torch.cat([torch.full_like(m.query_indices, b) for b, m in enumerate(matches)]).to(device)
        query_idx = torch.cat([m.query_indices for m in matches]).to(device)
        object_target = torch.ones(logits.shape[:2], dtype=torch.int64, device=device)
        object_target[batch_idx, query_idx] = 0
        class_weights = torch.tensor(self.object_class_weights, dtype=logits.dtype, device=device)
        losses = {"loss_object_ce": F.cross_entropy(logits.transpose(1, 2), object_target, class_weights)}

        pred_masks = prediction.mask_logits[batch_idx, query_idx]  # [M, h, w]
        if pred_masks.shape[0] == 0:
            zero = prediction.mask_logits.sum() * 0.0 + prediction.ious.sum() * 0.0
            losses.update(dict.fromkeys(LOSS_NAMES[1:], zero))  # no matched mask: the mask terms are 0
            return losses
        gt_masks = torch.cat([t[m.target_indices.to(t.device)] for t, m in zip(targets, matches, strict=True)])
        pred_masks = at_least_float32(pred_masks[:, None])
        gt_masks = gt_masks.to(device=device, dtype=pred_masks.dtype)[:, None]  # [M, 1, Hp, Wp]
        counts = [int(m.query_indices.numel()) for m in matches]
        coords = torch.cat([
            sampler.importance(chunk.detach(), self.num_points, self.oversample_ratio, self.importance_ratio)
            for sampler, chunk, count in zip(samplers, pred_masks.split(counts), counts, strict=True)
            if count
        ])
        with torch.no_grad():
            labels = point_sample(gt_masks, coords)[:, 0]
        point_logits = point_sample(pred_masks, coords)[:, 0]  # [M, K]
        losses["loss_mask"] = sigmoid_ce_loss(point_logits, labels, num_masks)
        losses["loss_dice"] = dice_loss(point_logits, labels, num_masks)
        gt_iou = point_iou(point_logits, labels)
        pred_iou = at_least_float32(prediction.ious[batch_idx, query_idx])
        positive = gt_iou > 0
        if bool(positive.any()):
            losses["loss_iou"] = F.l1_loss(pred_iou[positive], gt_iou[positive])
        else:
            losses["loss_iou"] = pred_iou.sum() * 0.0
        return losses
