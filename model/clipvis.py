"""The CLIP-VIS network: frozen CLIP + pixel decoder + masked-attention decoder, per-frame outputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clipvis.model.clip_backbone import ClipBackbone
from clipvis.model.config import ClipVisConfig
from clipvis.model.mask_decoder import DecoderOutput, MaskedTransformerDecoder
from clipvis.model.mask_pooling import MaskPooler
from clipvis.model.pixel_decoder import MSDeformAttnPixelDecoder
from clipvis.model.text_classifier import TextEmbeddings


@dataclass
class FrameOutputs:
    """Raw per-frame predictions for a batch of B frames (before temporal matching)."""

    object_logits: torch.Tensor  # [B, Q, 2]
    mask_logits: torch.Tensor  # [B, Q, Hp/4, Wp/4]
    ious: torch.Tensor  # [B, Q]
    query_embeds: torch.Tensor  # [B, Q, D]
    clip_dense: torch.Tensor  # [B, C_d, Hp/32, Wp/32]


class ClipVis(nn.Module):
    """CLIP-VIS model. State-dict names: ``backbone.clip_model.*``, ``pixel_decoder.*``, ``mask_decoder.*``.

    Build with :func:`clipvis.model.create_model` (random weights) or :func:`clipvis.model.load_model` (a checkpoint
    file or a released checkpoint's name).
    """

    def __init__(self, config: ClipVisConfig, backbone: ClipBackbone) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.pixel_decoder = MSDeformAttnPixelDecoder(
            in_channels=backbone.channels,
            conv_dim=config.conv_dim,
            mask_dim=config.mask_dim,
            num_layers=config.encoder_layers,
            num_heads=config.num_heads,
            num_points=config.encoder_points,
            dim_feedforward=config.encoder_dim_feedforward,
            norm_groups=config.norm_groups,
        )
        self.mask_decoder = MaskedTransformerDecoder(
            hidden_dim=config.hidden_dim,
            num_queries=config.num_queries,
            num_layers=config.decoder_layers,
            num_heads=config.num_heads,
            dim_feedforward=config.dim_feedforward,
            mask_dim=config.mask_dim,
            iou_activation=config.iou_activation,
        )
        self.mask_pooler = MaskPooler(backbone)

    @property
    def device(self) -> torch.device:
        return self.mask_decoder.query_feat.weight.device

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> FrameOutputs:
        """images ``[B, 3, Hp, Wp]`` normalised and padded -> per-frame predictions (frames are independent)."""
        features = self.backbone(images)
        mask_features, memory = self.pixel_decoder(features)
        out = self.mask_decoder(memory, mask_features)
        return FrameOutputs(out.object_logits, out.mask_logits, out.ious, out.query_embeds, features["clip_vis_dense"])

    @torch.no_grad()
    def classify(self, dense: torch.Tensor, mask_logits: torch.Tensor, text: TextEmbeddings) -> torch.Tensor:
        """Open-vocabulary class logits of every query's mask region: :meth:`pool`, then :meth:`class_logits`.

        Args: dense CLIP features ``[B, C_d, h32, w32]``; mask logits ``[B, Q, h4, w4]``; the vocabulary's text
        embeddings. Returns logits ``[B, Q, C]`` (float32).
        """
        return self.class_logits(*self.pool(dense, mask_logits), text)

    @torch.no_grad()
    def pool(self, dense: torch.Tensor, mask_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each query's mask-pooled CLIP embedding ``[B, Q, E]`` (unnormalised, float32) and whether its mask is
        empty at the dense resolution ``[B, Q]``. Each mask is resized to the dense map (``[B, C_d, h32, w32]``) and
        binarised (logit > 0), the dense features are pooled inside it (RN: attention pooling; ConvNeXt: average
        and the CLIP head)."""
        dense = dense.float()
        masks = self.mask_pooler.binary_masks(mask_logits, (dense.shape[-2], dense.shape[-1]))
        return self.mask_pooler(dense, masks)

    def class_logits(self, embeds: torch.Tensor, empty: torch.Tensor, text: TextEmbeddings) -> torch.Tensor:
        """Pooled embeddings ``[B, Q, E]`` and their empty-mask flags ``[B, Q]`` (:meth:`pool`) -> class logits
        ``[B, Q, C]``: scale * cosine with the text embeddings, the best synonym of each class. A query whose mask is
        empty gets all-zero logits (a uniform distribution) on the RN path only; on the ConvNeXt path the zero vector
        went through the CLIP head and gives real logits (docs/fidelity.md)."""
        logits = text.logits(embeds)
        if self.mask_pooler.zero_logits_of_empty_masks:
            logits = logits.masked_fill(empty[..., None], 0.0)
        return logits

    def forward_train(self, images: torch.Tensor) -> DecoderOutput:
        """Training forward with gradients through the head (the CLIP stays frozen and in eval mode).

        images ``[B, 3, Hp, Wp]`` normalised and padded -> the last prediction with every earlier one in ``aux``
        (deep supervision: DEC_LAYERS predictions in all), each with ``object_logits [B, Q, 2]``, full-size
        ``mask_logits [B, Q, Hp/4, Wp/4]`` and ``ious [B, Q]``; the input of :class:`clipvis.model.SetCriterion`.
        """
        features = self.backbone(images)
        mask_features, memory = self.pixel_decoder(features)
        return self.mask_decoder(memory, mask_features, deep_supervision=True)
