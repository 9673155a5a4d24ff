"""Mask pooling of the frozen CLIP dense map into one CLIP embedding per query (spec §1.2, §3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipvis.model.clip_backbone import ClipBackbone


class MaskPooler:
    """Pools CLIP dense features inside each query's mask and maps them into the CLIP embedding space.

    RN (ModifiedResNet): mask-restricted attention pooling with the CLIP attnpool weights; the query is the
    global mean token (no mask) plus the class positional embedding, keys are the masked positions only.
    ConvNeXt: masked average, then the CLIP head (LayerNorm + projection).
    """

    def __init__(self, backbone: ClipBackbone) -> None:
        self.backbone = backbone  # shared with the model, not a submodule (no duplicate state-dict keys)

    @staticmethod
    def binary_masks(mask_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """mask_logits ``[..., Q, h4, w4]`` -> bool ``[..., Q, h32, w32]`` (bilinear resize, logit > 0)."""
        lead = mask_logits.shape[:-2]
        flat = mask_logits.reshape(-1, 1, *mask_logits.shape[-2:]).float()
        resized = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
        return (resized > 0).reshape(*lead, *size)

    @torch.no_grad()
    def __call__(self, dense: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Args: dense ``[B, C, h, w]``; masks bool ``[B, Q, h, w]``.

        Returns: features ``[B, Q, E]`` (unnormalised; rows of empty masks are zeros) and ``empty`` bool ``[B, Q]``.
        """
        dense = dense.float()
        empty = ~masks.flatten(2).any(-1)
        if self.backbone.kind == "resnet":
            feats = self._attention_pool(dense, masks)
        else:
            weights = masks.to(dense.dtype)
            pooled = torch.einsum("bqhw,bchw->bqc", weights, dense) / (weights.sum((-1, -2))[..., None] + 1e-8)
            feats = self.backbone.visual_head(pooled)
        return feats.masked_fill(empty[..., None], 0.0), empty

    def _attention_pool(self, dense: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        pool = self.backbone.clip_model.visual.attnpool
        batch, channels, h, w = dense.shape
        heads = pool.num_heads
        head_dim = channels // heads
        tokens = dense.flatten(2).transpose(1, 2)  # [B, HW, C]
        query = tokens.mean(1) + pool.positional_embedding[0]  # [B, C]
        kv = tokens + self.backbone.positional_grid(h, w).to(tokens.dtype)  # [B, HW, C]
        q = pool.q_proj(query).view(batch, heads, head_dim) * head_dim**-0.5
        k = pool.k_proj(kv).view(batch, h * w, heads, head_dim)
        v = pool.v_proj(kv).view(batch, h * w, heads, head_dim)
        scores = torch.einsum("bnd,bsnd->bns", q, k)  # [B, heads, HW], shared by all queries of a frame
        allowed = masks.flatten(2)[:, :, None, :]  # [B, Q, 1, HW]
        scores = scores[:, None].masked_fill(~allowed, float("-inf"))  # [B, Q, heads, HW]
        attn = scores.softmax(-1).nan_to_num(0.0)
        out = torch.einsum("bqns,bsnd->bqnd", attn, v).reshape(batch, -1, channels)
        return pool.c_proj(out)
