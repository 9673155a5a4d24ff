"""Multi-scale deformable attention in plain PyTorch, no compiled ops (docs/fidelity.md, "Network", the item
"Deformable attention"): grid_sample as a gather."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipvis.model.transfer import small_tensor

MAX_CACHED_SHAPES = 8  # MSDeformAttn's level constants kept per module


def keep_newest(cache: dict, key: object, value: object, limit: int = MAX_CACHED_SHAPES) -> None:
    """Put ``value`` in a per-frame-size ``cache``, dropping the oldest entries beyond ``limit`` (videos of many
    sizes). Safe when threads share the model (two predictors of one model): an entry another thread dropped first,
    or a cache changing size meanwhile, is no error (it was "KeyError" from a lookup after the check)."""
    while len(cache) >= limit:
        try:
            cache.pop(next(iter(cache)), None)
        except (StopIteration, RuntimeError):  # emptied, or changed size under the iteration, by another thread
            break
    cache[key] = value


def softmax_short_rows(x: torch.Tensor) -> torch.Tensor:
    """``x.softmax(-1)`` for many short rows (here L*P = 12 values): the same formula, exp(x - max) / sum, written
    as three elementwise passes, which on CPU runs ~10x faster than the softmax kernel does on rows this short.

    x ``[..., K]`` -> ``[..., K]``, each row summing to 1."""
    shifted = x - x.amax(-1, keepdim=True).detach()
    exp = shifted.exp()
    return exp / exp.sum(-1, keepdim=True)


@dataclass(frozen=True)
class LevelTables:
    """The per-level numbers the sampling needs for one list of spatial shapes, on one device."""

    half: torch.Tensor  # [L, 1, 2] float64: (W_l / 2, H_l / 2)
    row_stride: torch.Tensor  # [L] int32: W_l + 3, one padded row of level l
    level_start: torch.Tensor  # [L] int32: where level l's padded rows start in the table

    @classmethod
    def build(cls, spatial_shapes: list[tuple[int, int]], device: torch.device) -> LevelTables:
        heights = [h for h, _ in spatial_shapes]
        widths = [w for _, w in spatial_shapes]
        padded_sizes = [(h + 3) * (w + 3) for h, w in spatial_shapes]
        return cls(
            half=small_tensor([widths, heights], torch.float64, device).t()[:, None] / 2,
            row_stride=small_tensor(widths, torch.int32, device) + 3,
            level_start=small_tensor([0, *padded_sizes[:-1]], torch.int32, device).cumsum(0, dtype=torch.int32),
        )


def multi_scale_deformable_attention(
    value: torch.Tensor,
    spatial_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    gather: str = "embedding_bag",
    tables: LevelTables | None = None,
) -> torch.Tensor:
    """Sample and mix values at fractional locations of several feature levels.

    The same bilinear sampling as ``F.grid_sample(..., padding_mode="zeros", align_corners=False)`` (the official
    CPU fallback), computed as one weighted gather: every (query, head) output row is the sum over levels, points
    and the 4 bilinear corners of ``attention weight * corner weight * value row``, which is exactly
    ``F.embedding_bag(mode="sum", per_sample_weights=...)`` over a table of value rows. Each level's map gets a zero
    border (1 before, 2 after) so that a clamped corner reads zeros instead of needing a validity mask.

    Args:
        value: ``[N, S, M, D]`` flattened values of all levels (S = sum of H_l*W_l), M heads of D channels.
        spatial_shapes: ``[(H_l, W_l)]`` for the L levels, in the order they are concatenated in ``value``.
        sampling_locations: ``[N, Lq, M, L, P, 2]`` normalised (x, y) in [0, 1] (align_corners=False convention).
        attention_weights: ``[N, Lq, M, L, P]`` weights (softmax over L*P per head).
        gather: ``"embedding_bag"`` (fast, the default) or ``"index"``: the same weighted sum as a plain row gather
            and a reduction, which ONNX exporters translate (Gather + Mul + ReduceSum); same math, more memory.
        tables: ``LevelTables.build(spatial_shapes, value.device)``, made here when not given (MSDeformAttn keeps
            them, so a forward copies nothing from the host and can be captured in a CUDA graph).

    Returns:
        ``[N, Lq, M*D]``.
    """
    n, _, heads, channels = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    device, dtype = value.device, sampling_locations.dtype

    # Table of value rows, ordered (frame, level, padded y, padded x, head); each level padded to [H+3, W+3].
    padded_sizes = [(h + 3) * (w + 3) for h, w in spatial_shapes]
    levels = value.view(n, -1, heads * channels).split([h * w for h, w in spatial_shapes], dim=1)
    if gather == "index":  # no writes into views: ONNX exporters lose them
        table = torch.cat([F.pad(level.reshape(n, h, w, -1), (0, 0, 1, 2, 1, 2)).reshape(n, (h + 3) * (w + 3), -1)
                           for level, (h, w) in zip(levels, spatial_shapes, strict=True)], dim=1)
    else:
        table = value.new_zeros(n, sum(padded_sizes), heads * channels)
        start = 0
        for level, size, (h, w) in zip(levels, padded_sizes, spatial_shapes, strict=True):
            padded = table[:, start : start + size].view(n, h + 3, w + 3, -1)
            padded[:, 1 : h + 1, 1 : w + 1] = level.view(n, h, w, -1)
            start += size

    # Pixel coordinates with grid_sample's own CPU arithmetic: fma(2 * loc - 1, size / 2, size / 2 - 0.5), done in
    # float64 and rounded once, so the bilinear weights are bit-identical to the official grid_sample fallback.
    tables = LevelTables.build(spatial_shapes, device) if tables is None else tables
    half = tables.half  # [L, 1, 2]
    pixel = torch.addcmul(half - 0.5, sampling_locations.mul(2).sub_(1).double(), half).to(dtype)
    # Clamp to the zero border; outside [-1, size] every corner would read zeros anyway.
    pixel = pixel.clamp_(min=pixel.new_tensor(-1.0), max=(2 * half).to(dtype))
    corner = pixel.floor()
    frac = pixel.sub_(corner)
    corner = corner.to(torch.int32)

    # Row of the top-left corner: (n * S' + start_l + (y + 1) * (W_l + 3) + x + 1) * M + m.
    row_stride, level_start = tables.row_stride, tables.level_start  # [L], [L]
    offset = (
        torch.arange(n, dtype=torch.int32, device=device).view(n, 1, 1, 1) * table.shape[1]
        + (level_start + row_stride + 1).view(1, 1, num_levels, 1)
    ) * heads + torch.arange(heads, dtype=torch.int32, device=device).view(1, heads, 1, 1)  # [N, M, L, 1]
    step = row_stride * heads  # [L] one padded row down, in table rows
    top_left = corner[..., 1].mul_(step[:, None]).add_(corner[..., 0] * heads).add_(offset[:, None])
    corner_step = torch.stack([torch.zeros_like(step), torch.full_like(step, heads), step, step + heads], -1)
    indices = top_left[..., None].expand(*top_left.shape, 4).contiguous()
    indices += corner_step[:, None]

    fx, fy = frac.unbind(-1)
    gx, gy = 1 - fx, 1 - fy
    weights = torch.stack([gx * gy, fx * gy, gx * fy, fx * fy], -1).mul_(attention_weights[..., None])

    rows = n * num_queries * heads
    if gather == "index":
        sampled = table.view(-1, channels)[indices.view(rows, -1).long()]  # [rows, L*P*4, D]
        out = (sampled * weights.view(rows, -1, 1)).sum(1)
    elif gather == "embedding_bag":
        out = F.embedding_bag(
            indices.view(rows, -1), table.view(-1, channels), per_sample_weights=weights.view(rows, -1), mode="sum"
        )
    else:
        raise ValueError(f"gather must be 'embedding_bag' or 'index', not {gather!r}")
    return out.view(n, num_queries, heads * channels)


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
        self.gather = "embedding_bag"  # "index" for ONNX export (see multi_scale_deformable_attention)
        # Per (spatial shapes, device, dtype): the level tables and the offset normaliser, made once. A video's
        # frames all have one size, so every forward after the first copies nothing from the host (a copy to a GPU
        # would wait for it, and a CUDA graph cannot capture one).
        self._constants: dict[tuple, tuple[LevelTables, torch.Tensor]] = {}
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
        weights = softmax_short_rows(weights).view(n, num_queries, self.n_heads, self.n_levels, self.n_points)
        tables, normalizer = self._level_constants(spatial_shapes, query.device, query.dtype)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        output = multi_scale_deformable_attention(
            value, spatial_shapes, locations, weights, gather=self.gather, tables=tables
        )
        return self.output_proj(output)

    def _level_constants(
        self, spatial_shapes: list[tuple[int, int]], device: torch.device, dtype: torch.dtype
    ) -> tuple[LevelTables, torch.Tensor]:
        """The level tables and the ``[L, 2]`` (W, H) normaliser of the sampling offsets, made on first use."""
        key = (tuple(tuple(shape) for shape in spatial_shapes), device, dtype)
        constants = self._constants.get(key)
        if constants is None:
            normalizer = small_tensor([[w, h] for h, w in spatial_shapes], dtype, device)
            constants = (LevelTables.build(spatial_shapes, device), normalizer)
            keep_newest(self._constants, key, constants)
        return constants
