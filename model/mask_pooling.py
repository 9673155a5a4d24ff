"""Mask pooling of the frozen CLIP dense map into one CLIP embedding per query (docs/fidelity.md, "Classification",
the item "Mask pooling"; official code: ``CV:clipvis/modeling/backbone/clip.py`` visual_prediction_forward,
``CV:clipvis/clipvis_video.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipvis.model.clip_backbone import ClipBackbone


class MaskPooler:
    """Pools CLIP dense features inside each query's mask and maps them into the CLIP embedding space.

    RN (ModifiedResNet): mask-restricted attention pooling with the CLIP attnpool weights; the query is the
    global mean token (no mask) plus the class positional embedding, keys are the masked positions only. An empty
    mask leaves nothing to attend to (NaN in the official code), so the official code forces that query's class
    logits to 0: ``zero_logits_of_empty_masks`` is True.
    ConvNeXt: masked average, then the CLIP head (LayerNorm + projection). An empty mask averages to the zero vector,
    which still goes through the head and gives a real embedding (the head's LayerNorm bias, projected); its class
    logits are kept: ``zero_logits_of_empty_masks`` is False.
    """

    def __init__(self, backbone: ClipBackbone) -> None:
        self.backbone = backbone  # shared with the model, not a submodule (no duplicate state-dict keys)

    @property
    def zero_logits_of_empty_masks(self) -> bool:
        """Whether the class logits of a query with an empty mask are forced to 0 (RN path only)."""
        return self.backbone.kind == "resnet"

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

        Returns: features ``[B, Q, E]`` (unnormalised) and ``empty`` bool ``[B, Q]`` (no mask pixel). RN: rows of
        empty masks are zeros (the attention has no key). ConvNeXt: they are the CLIP head applied to the zero vector.
        """
        dense = dense.float()
        empty = ~masks.flatten(2).any(-1)
        if self.backbone.kind == "resnet":
            return self._attention_pool(dense, masks).masked_fill(empty[..., None], 0.0), empty
        weights = masks.to(dense.dtype)
        pooled = torch.einsum("bqhw,bchw->bqc", weights, dense) / (weights.sum((-1, -2))[..., None] + 1e-8)
        return self.backbone.visual_head(pooled), empty

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
