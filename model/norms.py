"""Normalisation layers with a numerically careful CPU path."""

from __future__ import annotations

import torch
from torch import nn


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` with a two-pass (mean, then centred variance) float32 computation.

    Same parameters and state-dict keys as ``nn.GroupNorm``. Some PyTorch CPU kernels compute the variance in one
    pass, which loses ~1e-3 absolute accuracy on CLIP feature maps and moves the outputs away from the reference
    implementation; the two-pass form stays within ~1e-6.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        grouped = x.reshape(shape[0], self.num_groups, -1)
        mean = grouped.mean(-1, keepdim=True)
        centred = grouped - mean
        var = centred.square().mean(-1, keepdim=True)
        out = (centred * torch.rsqrt(var + self.eps)).reshape(shape)
        if self.affine:
            view = (1, -1) + (1,) * (len(shape) - 2)
            out = out * self.weight.view(view) + self.bias.view(view)
        return out
