"""Hungarian matching of predicted queries to ground-truth instances for training.

See docs/training.md, "Matching" (official: `CV:clipvis/modeling/matcher.py`).

Per image, every (query, instance) pair gets a cost

    5 * BCE(mask logits, GT mask) + 2 * (-p_object) + 5 * Dice(mask, GT mask)

where ``p_object`` is the softmax probability of class 0 ("object") and the mask terms are averaged over K points
drawn uniformly once per image and shared by all masks of that image. The assignment minimising the summed cost is
found with ``scipy.optimize.linear_sum_assignment``; each instance gets exactly one query (if Q >= N).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clipvis.model.point_sampling import SamplerLike, at_least_float32, per_image_samplers, point_sample


def pairwise_sigmoid_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE-with-logits over points for every pair: logits ``[Q, P]``, targets ``[N, P]`` -> ``[Q, N]``."""
    points = logits.shape[1]
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    return (positive @ targets.T + negative @ (1 - targets).T) / points


def pairwise_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``1 - (2 sum(s*g) + 1) / (sum(s) + sum(g) + 1)`` with ``s = sigmoid(logits)`` for every pair -> ``[Q, N]``."""
    probs = logits.sigmoid()
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


@dataclass
class Match:
    """One image's assignment: ``query_indices[k]`` predicts instance ``target_indices[k]`` (int64, sorted by
    query)."""

    query_indices: torch.Tensor  # [M]
    target_indices: torch.Tensor  # [M]


class HungarianMatcher:
    """Minimum-cost one-to-one assignment of queries to instances (official weights by default)."""

    def __init__(
        self, cost_object: float = 2.0, cost_mask: float = 5.0, cost_dice: float = 5.0, num_points: int = 12544
    ) -> None:
        self.cost_object = cost_object
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def cost_matrix(
        self, object_logits: torch.Tensor, mask_logits: torch.Tensor, target_masks: torch.Tensor, points: torch.Tensor
    ) -> torch.Tensor:
        """One image: object_logits ``[Q, 2]``, mask_logits ``[Q, h, w]``, target_masks ``[N, H, W]``, points
        ``[P, 2]`` -> cost ``[Q, N]`` (float32 whatever autocast is active)."""
        with torch.autocast(device_type=mask_logits.device.type, enabled=False):
            p_object = at_least_float32(object_logits).softmax(-1)[:, 0]
            pred = at_least_float32(mask_logits[:, None])
            pred = point_sample(pred, points[None].expand(pred.shape[0], -1, -1).to(pred.dtype))[:, 0]  # [Q, P]
            gt = target_masks[:, None].to(pred.dtype)
            gt = point_sample(gt, points[None].expand(gt.shape[0], -1, -1).to(pred.dtype))[:, 0]  # [N, P]
            cost = (
                self.cost_mask * pairwise_sigmoid_ce(pred, gt)
                + self.cost_object * -p_object[:, None]
                + self.cost_dice * pairwise_dice(pred, gt)
            )
        return cost

    @staticmethod
    def assign(cost: torch.Tensor) -> Match:
        """Solve a cost ``[Q, N]`` (infinite entries replaced by a large finite value first)."""
        from scipy.optimize import linear_sum_assignment

        array = cost.detach().cpu().double().numpy()
        array = np.nan_to_num(array, nan=1e8, posinf=1e8, neginf=-1e8)
        rows, cols = linear_sum_assignment(array)
        return Match(torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))

    @torch.no_grad()
    def __call__(
        self,
        object_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        target_masks: list[torch.Tensor],
        point_sampler: SamplerLike | Sequence[SamplerLike] = None,
    ) -> list[Match]:
        """object_logits ``[B, Q, 2]``, mask_logits ``[B, Q, h, w]``, target_masks B tensors ``[N_b, H, W]`` ->
        B matches (empty for an image without instances). ``point_sampler``: one, or one per image."""
        samplers = per_image_samplers(point_sampler, len(target_masks))
        matches = []
        for b, masks in enumerate(target_masks):
            if masks.shape[0] == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                matches.append(Match(empty, empty))
                continue
            points = samplers[b].uniform(1, self.num_points, mask_logits.device)[0]
            matches.append(self.assign(self.cost_matrix(object_logits[b], mask_logits[b], masks, points)))
        return matches
