"""MSDeformAttn pixel decoder (Mask2Former's; docs/architecture.md) with the official module names."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipvis.model.deformable_attention import MSDeformAttn, keep_newest
from clipvis.model.norms import GroupNorm
from clipvis.model.position_encoding import SinePositionEncoding


class ConvNorm(nn.Conv2d):
    """A conv followed by an optional norm (attribute ``norm``) and activation, as detectron2's Conv2d."""

    def __init__(self, *args: Any, norm: nn.Module | None = None, activation: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, C_in, H, W]`` -> ``[B, C_out, H', W']`` (``H'``, ``W'`` as the conv's stride and padding make
        them)."""
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.relu(x, inplace=True) if self.activation else x


class DeformableEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention, then FFN (ReLU)."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """src, pos: ``[N, S, C]``; reference_points ``[N, S, L, 2]``. Returns ``[N, S, C]``."""
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src), inplace=True)))


class DeformableEncoder(nn.Module):
    """``num_layers`` ``DeformableEncoderLayer``s, each made with ``layer_kwargs`` (d_model, d_ffn, n_levels,
    n_heads, n_points)."""

    def __init__(self, num_layers: int, **layer_kwargs: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DeformableEncoderLayer(**layer_kwargs) for _ in range(num_layers))
        # Per (spatial shapes, device): the reference points, made once (as MSDeformAttn's level constants): the
        # frames of a video all have one size.
        self._reference_points: dict[tuple, torch.Tensor] = {}

    def cached_reference_points(self, spatial_shapes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
        """`reference_points`, made at the first forward of a frame size and kept (the newest MAX_CACHED_SHAPES)."""
        key = (tuple(tuple(shape) for shape in spatial_shapes), torch.device(device))
        points = self._reference_points.get(key)
        if points is None:
            points = self.reference_points(spatial_shapes, device)
            keep_newest(self._reference_points, key, points)
        return points

    @staticmethod
    def reference_points(spatial_shapes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
        """Normalised pixel centres of every token, replicated for each level: ``[1, S, L, 2]``."""
        points = []
        for h, w in spatial_shapes:
            # The official linspace(0.5, h - 0.5, h): the same floats (its step is exactly 1), as a range, which ONNX
            # also gets right on a level 1 pixel high or wide (linspace exports as (end - start) / (steps - 1): 0/0).
            ref_y, ref_x = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=device) + 0.5,
                torch.arange(w, dtype=torch.float32, device=device) + 0.5,
                indexing="ij",
            )
            points.append(torch.stack((ref_x.reshape(-1) / w, ref_y.reshape(-1) / h), -1))
        ref = torch.cat(points, 0)[None]
        return ref[:, :, None].expand(-1, -1, len(spatial_shapes), -1)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, spatial_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """src, pos ``[N, S, C]``: the tokens of every level, flattened and concatenated (``S`` = sum of
        ``H_l * W_l`` over ``spatial_shapes``) -> ``[N, S, C]``."""
        reference_points = self.cached_reference_points(spatial_shapes, src.device)
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes)
        return src


class DeformableTransformer(nn.Module):
    """Holds ``level_embed`` and the encoder, as the official ``transformer`` submodule."""

    def __init__(self, d_model: int, num_layers: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        self.encoder = DeformableEncoder(
            num_layers, d_model=d_model, d_ffn=d_ffn, n_levels=n_levels, n_heads=n_heads, n_points=n_points
        )
        nn.init.normal_(self.level_embed)
        for layer in self.encoder.layers:
            for name in ("linear1", "linear2"):
                nn.init.xavier_uniform_(getattr(layer, name).weight)


class MSDeformAttnPixelDecoder(nn.Module):
    """Turns backbone features res2..res5 into mask features and a 3-level memory for the decoder.

    Input channels are those of res2, res3, res4, res5; the deformable encoder runs on res3..res5.
    """

    def __init__(
        self,
        in_channels: tuple[int, int, int, int],
        conv_dim: int = 256,
        mask_dim: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        num_points: int = 4,
        dim_feedforward: int = 1024,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        res2_ch, res3_ch, res4_ch, res5_ch = in_channels
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch, conv_dim, kernel_size=1), GroupNorm(norm_groups, conv_dim))
            for ch in (res5_ch, res4_ch, res3_ch)
        )
        self.transformer = DeformableTransformer(conv_dim, num_layers, dim_feedforward, 3, num_heads, num_points)
        self.pe_layer = SinePositionEncoding(conv_dim // 2)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        self.adapter_1 = ConvNorm(res2_ch, conv_dim, kernel_size=1, bias=False, norm=GroupNorm(norm_groups, conv_dim))
        self.layer_1 = ConvNorm(
            conv_dim, conv_dim, kernel_size=3, padding=1, bias=False,
            norm=GroupNorm(norm_groups, conv_dim), activation=True,
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)
        for conv in (self.mask_features, self.adapter_1, self.layer_1):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            if conv.bias is not None:
                nn.init.constant_(conv.bias, 0)

    def forward(
        self, features: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Args: features ``res2..res5`` ``[B, C_l, H/s, W/s]``.

        Returns:
            mask features ``[B, mask_dim, H/4, W/4]`` and the decoder memory ``[stride 32, 16, 8]`` maps
            ``[B, conv_dim, h_l, w_l]``. Runs in float32 whatever the input dtype (as the official code).
        """
        with torch.autocast(device_type=features["res5"].device.type, enabled=False):
            srcs, pos, shapes = [], [], []
            for idx, name in enumerate(("res5", "res4", "res3")):
                x = features[name].float()
                proj = self.input_proj[idx](x)
                h, w = proj.shape[-2:]
                shapes.append((h, w))
                srcs.append(proj.flatten(2).transpose(1, 2))
                level_pos = self.pe_layer(h, w, x.device).flatten(2).transpose(1, 2)
                pos.append(level_pos + self.transformer.level_embed[idx].view(1, 1, -1))
            src = torch.cat(srcs, 1)
            pos_all = torch.cat(pos, 1)
            memory = self.transformer.encoder(src, pos_all, shapes)
            batch = memory.shape[0]
            levels = memory.split([h * w for h, w in shapes], dim=1)
            maps = [z.transpose(1, 2).reshape(batch, -1, h, w) for z, (h, w) in zip(levels, shapes, strict=True)]
            lateral = self.adapter_1(features["res2"].float())
            top_down = F.interpolate(maps[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            fine = self.layer_1(lateral + top_down)
            return self.mask_features(fine), maps
