"""Masked-attention transformer decoder with object, mask and IoU heads (spec §1.4)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.position_encoding import SinePositionEncoding


class MLP(nn.Module):
    """Linear layers with ReLU between them (``layers.{i}`` keys)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        attn_mask: torch.Tensor,
        pos: torch.Tensor,
        query_pos: torch.Tensor,
    ) -> torch.Tensor:
        """tgt ``[Q, B, C]``, memory ``[HW, B, C]``, attn_mask ``[B*heads, Q, HW]`` (True = masked)."""
        out = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory, attn_mask=attn_mask,
                                  need_weights=False)[0]
        return self.norm(tgt + out)


class SelfAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        q = k = tgt + query_pos
        out = self.self_attn(q, k, value=tgt, need_weights=False)[0]
        return self.norm(tgt + out)


class FFNLayer(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


@dataclass
class DecoderOutput:
    """Last-layer predictions for a batch of B frames."""

    object_logits: torch.Tensor  # [B, Q, 2]; index 0 = object, 1 = no object
    mask_logits: torch.Tensor  # [B, Q, H/4, W/4]
    ious: torch.Tensor  # [B, Q] predicted mask IoU (after the activation)
    query_embeds: torch.Tensor  # [B, Q, D] decoder_norm(last layer output), used for tracking


class MaskedTransformerDecoder(nn.Module):
    """Mask2Former decoder: masked cross-attention -> self-attention -> FFN per layer, 3 memory levels."""

    def __init__(
        self,
        hidden_dim: int = 256,
        num_queries: int = 100,
        num_layers: int = 6,
        num_heads: int = 8,
        dim_feedforward: int = 2048,
        mask_dim: int = 256,
        iou_activation: str = "sigmoid",
    ) -> None:
        super().__init__()
        if iou_activation not in ("sigmoid", "relu"):
            raise ValueError(f"iou_activation must be 'sigmoid' or 'relu', not {iou_activation!r}")
        self.num_heads = num_heads
        self.num_layers = num_layers
        self.num_feature_levels = 3
        self.iou_activation = iou_activation
        self.pe_layer = SinePositionEncoding(hidden_dim // 2)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, num_heads) for _ in range(num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, num_heads) for _ in range(num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(hidden_dim, dim_feedforward) for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        self.object_embed = MLP(hidden_dim, hidden_dim, 2, 3)
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.iou_head = MLP(hidden_dim, hidden_dim, 1, 3)
        for layers in (self.transformer_self_attention_layers, self.transformer_cross_attention_layers):
            for layer in layers:
                attn = layer.self_attn if hasattr(layer, "self_attn") else layer.multihead_attn
                nn.init.xavier_uniform_(attn.in_proj_weight)
                nn.init.xavier_uniform_(attn.out_proj.weight)
        for ffn in self.transformer_ffn_layers:
            nn.init.xavier_uniform_(ffn.linear1.weight)
            nn.init.xavier_uniform_(ffn.linear2.weight)

    def _heads(
        self, output: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """output ``[Q, B, C]`` -> normed ``[B, Q, C]``, masks ``[B, Q, h, w]``, attn mask ``[B*heads, Q, hw]``."""
        decoded = self.decoder_norm(output).transpose(0, 1)
        mask_embed = self.mask_embed(decoded)
        masks = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        attn = F.interpolate(masks, size=attn_size, mode="bilinear", align_corners=False)
        attn = attn.sigmoid().flatten(2) < 0.5
        attn = attn.unsqueeze(1).expand(-1, self.num_heads, -1, -1).flatten(0, 1)
        return decoded, masks, attn

    def forward(self, memory: list[torch.Tensor], mask_features: torch.Tensor) -> DecoderOutput:
        """Args: memory = 3 maps ``[B, C, h_l, w_l]`` (strides 32, 16, 8); mask_features ``[B, C_m, H/4, W/4]``."""
        srcs, pos, sizes = [], [], []
        for level, x in enumerate(memory):
            h, w = x.shape[-2:]
            sizes.append((h, w))
            pos.append(self.pe_layer(h, w, x.device).to(x.dtype).flatten(2).permute(2, 0, 1))
            srcs.append((x.flatten(2) + self.level_embed.weight[level][None, :, None]).permute(2, 0, 1))
        batch = srcs[0].shape[1]
        query_pos = self.query_embed.weight.unsqueeze(1).expand(-1, batch, -1)
        output = self.query_feat.weight.unsqueeze(1).expand(-1, batch, -1)
        decoded, masks, attn_mask = self._heads(output, mask_features, sizes[0])
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            attn_mask = attn_mask & ~attn_mask.all(-1, keepdim=True)  # a fully masked query sees everything
            output = self.transformer_cross_attention_layers[i](output, srcs[level], attn_mask, pos[level], query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            decoded, masks, attn_mask = self._heads(output, mask_features, sizes[(i + 1) % self.num_feature_levels])
        iou = self.iou_head(decoded).squeeze(-1)
        iou = iou.sigmoid() if self.iou_activation == "sigmoid" else F.relu(iou)
        return DecoderOutput(self.object_embed(decoded), masks, iou, decoded)
