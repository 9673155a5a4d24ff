"""Multi-scale deformable attention in plain PyTorch (`grid_sample`), no compiled ops (spec §1.3)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Sample and mix values at fractional locations of several feature levels.

    Args:
        value: ``[N, S, M, D]`` flattened values of all levels (S = sum of H_l*W_l), M heads of D channels.
        spatial_shapes: ``[(H_l, W_l)]`` for the L levels, in the order they are concatenated in ``value``.
        sampling_locations: ``[N, Lq, M, L, P, 2]`` normalised (x, y) in [0, 1] (align_corners=False convention).
        attention_weights: ``[N, Lq, M, L, P]`` weights (softmax over L*P per head).

    Returns:
        ``[N, Lq, M*D]``.
    """
    n, _, heads, channels = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    value_per_level = value.split([h * w for h, w in spatial_shapes], dim=1)
    grids = 2 * sampling_locations - 1
    output = value.new_zeros(n * heads, channels, num_queries)
    for level, (h, w) in enumerate(spatial_shapes):
        # [N, H*W, M, D] -> [N*M, D, H, W]
        value_l = value_per_level[level].flatten(2).transpose(1, 2).reshape(n * heads, channels, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        grid_l = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False)
        # [N, Lq, M, P] -> [N*M, Lq, P]; weighted sum over the points of this level.
        weights_l = attention_weights[:, :, :, level].transpose(1, 2).flatten(0, 1)
        output += sampled.mul_(weights_l[:, None]).sum(-1)
    return output.view(n, heads * channels, num_queries).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (Deformable-DETR), official parameter names and layout."""

    def __init__(self, d_model: int = 256, n_levels: int = 3, n_heads: int = 8, n_points: int = 4) -> None:
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR init: zero offsets weights, radial offset biases scaled by point index."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.n_heads, 1, 1, 2)
        grid = grid.repeat(1, self.n_levels, self.n_points, 1)
        for i in range(self.n_points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """Args: query ``[N, Lq, C]``; reference_points ``[N, Lq, L, 2]`` (x, y in [0, 1]);
        input_flatten ``[N, S, C]``; spatial_shapes ``[(H_l, W_l)]``. Returns ``[N, Lq, C]``."""
        n, num_queries, _ = query.shape
        value = self.value_proj(input_flatten).view(n, -1, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(query).view(
            n, num_queries, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(query).view(n, num_queries, self.n_heads, self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(n, num_queries, self.n_heads, self.n_levels, self.n_points)
        normalizer = torch.tensor(
            [[w, h] for h, w in spatial_shapes], dtype=query.dtype, device=query.device
        )  # [L, 2] as (W, H)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        output = multi_scale_deformable_attention(value, spatial_shapes, locations, weights)
        return self.output_proj(output)
