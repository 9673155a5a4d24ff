"""Masked-attention transformer decoder with object, mask and IoU heads (docs/architecture.md;
``CV:clipvis/modeling/transformer_decoder/mask2former_transformer_decoder.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from clipvis.model.position_encoding import SinePositionEncoding


class MLP(nn.Module):
    """Linear layers with ReLU between them (``layers.{i}`` keys)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs, strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[..., in_dim]`` (e.g. queries ``[B, Q, D]``) -> ``[..., out_dim]``."""
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
        """tgt, query_pos ``[Q, B, C]`` (sequence first) -> ``[Q, B, C]``: self-attention among the queries, then
        residual and LayerNorm (post-norm)."""
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
        """tgt ``[Q, B, C]`` -> ``[Q, B, C]``: Linear-ReLU-Linear, then residual and LayerNorm (post-norm)."""
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


@dataclass
class DecoderOutput:
    """Last-layer predictions for a batch of B frames."""

    object_logits: torch.Tensor  # [B, Q, 2]; index 0 = object, 1 = no object
    mask_logits: torch.Tensor  # [B, Q, Hp/4, Wp/4]: a quarter of the padded frame size
    ious: torch.Tensor  # [B, Q] predicted mask IoU (after the activation)
    query_embeds: torch.Tensor  # [B, Q, D] decoder_norm(last layer output), used for tracking
    # With ``deep_supervision=True``: the earlier predictions (from the raw queries, then after layers 1..L-1), each
    # with full-size mask logits, for the auxiliary losses; empty otherwise.
    aux: list[DecoderOutput] = field(default_factory=list)


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

    def _heads(self, output: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """output ``[Q, B, C]``, features ``[B, C_m, *spatial]`` -> normed queries ``[B, Q, C]`` and mask logits
        ``[B, Q, *spatial]`` (mask embedding . features)."""
        decoded = self.decoder_norm(output).transpose(0, 1)
        masks = torch.einsum("bqc,bc...->bq...", self.mask_embed(decoded), features)
        return decoded, masks

    def attention_mask(self, mask_logits: torch.Tensor) -> torch.Tensor:
        """Mask logits ``[B, Q, hw]`` at a memory level's size -> ``[B*heads, Q, hw]``, True = masked.

        ``sigmoid < 0.5`` as the official code (a logit within ~3e-8 of 0 rounds to 0.5 and stays unmasked); a fully
        masked query sees everything.
        """
        attn = mask_logits.sigmoid() < 0.5
        attn = attn & ~attn.all(-1, keepdim=True)
        return attn.unsqueeze(1).expand(-1, self.num_heads, -1, -1).flatten(0, 1)

    def _prediction(self, output: torch.Tensor, mask_features: torch.Tensor) -> DecoderOutput:
        """Queries ``[Q, B, C]`` -> object logits, full-size mask logits, IoUs and normed queries."""
        decoded, masks = self._heads(output, mask_features)
        iou = self.iou_head(decoded).squeeze(-1)
        iou = iou.sigmoid() if self.iou_activation == "sigmoid" else F.relu(iou)
        return DecoderOutput(self.object_embed(decoded), masks, iou, decoded)

    def forward(
        self, memory: list[torch.Tensor], mask_features: torch.Tensor, deep_supervision: bool = False
    ) -> DecoderOutput:
        """Args: memory = 3 maps ``[B, C, h_l, w_l]`` (strides 32, 16, 8); mask_features ``[B, C_m, H/4, W/4]``;
        ``deep_supervision``: also return every earlier prediction in ``aux`` (training).

        Each layer's attention mask comes from the previous prediction's mask logits resized (bilinear,
        align_corners=False) to the next memory level. Resizing is linear, so the mask features are resized once per
        level and projected there: the same values as projecting at full resolution and then resizing (the
        official order), without a full-resolution product per layer. Only the last layer's masks are full size.
        """
        srcs, pos, sizes = [], [], []
        for level, x in enumerate(memory):
            h, w = x.shape[-2:]
            sizes.append((h, w))
            pos.append(self.pe_layer(h, w, x.device).to(x.dtype).flatten(2).permute(2, 0, 1))
            srcs.append((x.flatten(2) + self.level_embed.weight[level][None, :, None]).permute(2, 0, 1))
        level_features = [
            F.interpolate(mask_features, size=size, mode="bilinear", align_corners=False).flatten(2) for size in sizes
        ]
        batch = srcs[0].shape[1]
        query_pos = self.query_embed.weight.unsqueeze(1).expand(-1, batch, -1)
        output = self.query_feat.weight.unsqueeze(1).expand(-1, batch, -1)
        _, level_masks = self._heads(output, level_features[0])
        aux: list[DecoderOutput] = []
        if deep_supervision:
            aux.append(self._prediction(output, mask_features))
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            attn_mask = self.attention_mask(level_masks)
            output = self.transformer_cross_attention_layers[i](output, srcs[level], attn_mask, pos[level], query_pos)
            output = self.transformer_self_attention_layers[i](output, query_pos)
            output = self.transformer_ffn_layers[i](output)
            if i + 1 < self.num_layers:
                _, level_masks = self._heads(output, level_features[(i + 1) % self.num_feature_levels])
                if deep_supervision:
                    aux.append(self._prediction(output, mask_features))
        final = self._prediction(output, mask_features)
        final.aux = aux
        return final
