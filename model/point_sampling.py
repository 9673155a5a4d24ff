"""Point sampling for the training losses and the matcher (PointRend-style; docs/training.md, "Losses" and "Matching").

The losses and the matching costs are computed on sets of points instead of whole masks. Points are normalised
``(x, y)`` coordinates in ``[0, 1]`` of the (padded) image, read from a mask with bilinear interpolation
(``grid_sample`` on ``2p - 1``, ``align_corners=False``), so predictions at 1/4 resolution and ground truth at full
resolution are sampled at the same places.

Where the points come from is a :class:`PointSampler`: :class:`RandomPointSampler` is the official recipe (uniform
points for the matcher; for the losses, ``oversample x K`` uniform candidates of which the ``importance x K`` most
uncertain, ``|logit|`` smallest, are kept and topped up with fresh uniform points). A test hands the criterion its
own sampler (any object with the two methods) to fix the points.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F


def point_sample(inputs: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear values of ``inputs [N, C, H, W]`` at ``coords [N, P, 2]`` (x, y in [0, 1]) -> ``[N, C, P]``."""
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(inputs.dtype)
    return F.grid_sample(inputs, grid, mode="bilinear", padding_mode="zeros", align_corners=False).squeeze(3)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 if it is a half type (autocast outputs), else unchanged (float64 stays float64)."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


@runtime_checkable
class PointSampler(Protocol):
    """Where the matcher and the criterion read masks."""

    def uniform(self, batch: int, num_points: int, device: torch.device) -> torch.Tensor:
        """``[batch, num_points, 2]`` points for the matching cost."""
        ...

    def importance(
        self, logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_ratio: float
    ) -> torch.Tensor:
        """``[N, num_points, 2]`` points for the losses of ``N`` matched mask logits ``[N, 1, h, w]``."""
        ...


class RandomPointSampler:
    """The official sampling, drawing from ``generator`` (the global RNG when None)."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def _rand(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        if self.generator is None:
            return torch.rand(shape, device=device)
        return torch.rand(shape, generator=self.generator, device=self.generator.device).to(device)

    def uniform(self, batch: int, num_points: int, device: torch.device) -> torch.Tensor:
        """``[batch, num_points, 2]`` points uniform in ``[0, 1)`` (x, y, normalised), on ``device``."""
        return self._rand((batch, num_points, 2), device)

    @torch.no_grad()
    def importance(
        self, logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_ratio: float
    ) -> torch.Tensor:
        """Uncertainty-weighted points (detectron2's ``get_uncertain_point_coords_with_randomness`` recipe): mask
        logits ``[N, 1, h, w]`` -> ``[N, num_points, 2]`` normalised (x, y) points in ``[0, 1)``."""
        n = logits.shape[0]
        num_candidates = int(num_points * oversample_ratio)
        candidates = self._rand((n, num_candidates, 2), logits.device)
        uncertainty = -point_sample(at_least_float32(logits), candidates).abs()[:, 0]  # [N, num_candidates]
        num_uncertain = int(importance_ratio * num_points)
        keep = uncertainty.topk(num_uncertain, dim=1).indices
        chosen = candidates.gather(1, keep.unsqueeze(-1).expand(-1, -1, 2))
        fresh = self._rand((n, num_points - num_uncertain, 2), logits.device)
        return torch.cat([chosen, fresh], dim=1)


SamplerLike = PointSampler | torch.Generator | None


def as_point_sampler(sampler: SamplerLike) -> PointSampler:
    """A sampler from what a caller passed: a sampler as is, a generator wrapped, None = global RNG."""
    if sampler is None or isinstance(sampler, torch.Generator):
        return RandomPointSampler(sampler)
    if not isinstance(sampler, PointSampler):
        raise TypeError(f"expected a PointSampler or a torch.Generator, not {type(sampler).__name__}")
    return sampler


def per_image_samplers(sampler: SamplerLike | Sequence[SamplerLike], batch: int) -> list[PointSampler]:
    """One sampler per image: a sequence gives each image its own (e.g. generators seeded by the sample, so the
    points do not depend on how a batch is split over processes); a single sampler is shared."""
    if isinstance(sampler, Sequence):
        if len(sampler) != batch:
            raise ValueError(f"{len(sampler)} point samplers for a batch of {batch} images")
        return [as_point_sampler(s) for s in sampler]
    shared = as_point_sampler(sampler)
    return [shared] * batch
