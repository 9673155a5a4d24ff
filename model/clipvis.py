"""The CLIP-VIS network: frozen CLIP + pixel decoder + masked-attention decoder, per-frame outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from clipvis.model.clip_backbone import ClipBackbone
from clipvis.model.config import BACKBONE_STRIDE, ClipVisConfig
from clipvis.model.mask_decoder import DecoderOutput, MaskedTransformerDecoder
from clipvis.model.mask_pooling import MaskPooler
from clipvis.model.pixel_decoder import MSDeformAttnPixelDecoder
from clipvis.model.text_classifier import TextEmbeddings

# What the network takes, as its errors say how to make it
NETWORK_INPUT = ("pass a float tensor [B, 3, H, W], normalised and padded, as predictor.preprocessor(frames, device) "
                 "makes it of uint8 RGB frames [B, H, W, 3]")


def check_images(images: object, method: str) -> None:
    """Refuse what the network cannot take, naming ``images`` and what to pass, before it fails deep inside torch
    (channels last: a convolution's channel error; numpy: AttributeError; an empty batch: a reshape error) or runs
    on pixel values without a word (uint8). Type, dtype and shape only: no value is read (no device sync). Skipped
    while tracing (ONNX export), where the shapes read are the example's."""
    if torch.jit.is_tracing():
        return
    if not isinstance(images, torch.Tensor):
        what = "a numpy array" if isinstance(images, np.ndarray) else f"{type(images).__name__}, not a tensor"
        raise TypeError(f"{method}: images is {what}: {NETWORK_INPUT}")
    if not images.is_floating_point():
        raise TypeError(f"{method}: images are {images.dtype} (pixel values?): {NETWORK_INPUT}")
    shape = tuple(images.shape)
    if images.dim() != 4 or shape[1] != 3:
        layout = " (channels last? images.permute(0, 3, 1, 2))" if images.dim() == 4 and shape[3] == 3 else ""
        raise ValueError(f"{method}: images of shape {shape}{layout}: {NETWORK_INPUT}")
    if shape[0] == 0:
        raise ValueError(f"{method}: images is an empty batch {shape}: give at least one image")
    if min(shape[2:]) < BACKBONE_STRIDE:
        raise ValueError(f"{method}: images of {shape[3]}x{shape[2]} pixels are smaller than the backbone's stride: "
                         f"pad them to at least {BACKBONE_STRIDE} pixels a side ({NETWORK_INPUT})")


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
        """images ``[B, 3, Hp, Wp]`` float, normalised and padded (``VideoPredictor.preprocessor``), B >= 1 ->
        per-frame predictions (frames are independent). TypeError / ValueError for other input (:func:`check_images`).
        """
        check_images(images, "ClipVis.forward")
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
        Other input is refused as :meth:`forward` refuses it.
        """
        check_images(images, "ClipVis.forward_train")
        features = self.backbone(images)
        mask_features, memory = self.pixel_decoder(features)
        return self.mask_decoder(memory, mask_features, deep_supervision=True)
