"""Frozen open_clip backbone: multi-scale visual features, the dense map, the text tower
(``CV:clipvis/modeling/backbone/clip.py``)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipvis.model.errors import Parameter, ParameterHint


class UnknownClipError(ParameterHint, ValueError):
    """open_clip does not know the CLIP a config names, and no open_clip model config describes it."""


def build_open_clip_model(name: str, model_config: dict[str, Any] | None, pretrained: str) -> nn.Module:
    """Instantiate an open_clip CLIP with random weights (weights come from a checkpoint).

    ``model_config`` (an open_clip model config dict) wins over ``name``. OpenAI-pretrained models use QuickGELU,
    as open_clip does when it builds them from the OpenAI weights.
    """
    import open_clip
    from open_clip.model import CLIP, CustomTextCLIP

    if model_config is None:
        model_config = open_clip.get_model_config(name)
        if model_config is None:
            raise UnknownClipError(
                f"open_clip does not know the model {name!r}; give its open_clip model config (",
                Parameter("clip_config", "load_model's clip_config=, or create_model's config with clip_model_config"),
                ")",
            )
        model_config = dict(model_config)
        if pretrained == "openai":
            model_config["quick_gelu"] = True
    model_config = dict(model_config)
    for key in ("hf_tokenizer_name", "tokenizer_kwargs"):
        model_config.pop(key, None)
    custom_text = model_config.pop("custom_text", False) or "hf_model_name" in model_config.get("text_cfg", {})
    model_cls = CustomTextCLIP if custom_text else CLIP
    return model_cls(**model_config)


class ClipBackbone(nn.Module):
    """Wraps an open_clip ``CLIP`` (attribute ``clip_model``, the official key prefix); always frozen and in eval."""

    def __init__(self, clip_model: nn.Module, max_logit_scale: float = 100.0) -> None:
        super().__init__()
        self.clip_model = clip_model
        visual = clip_model.visual
        if hasattr(visual, "attnpool"):
            self.kind = "resnet"
            widths = [visual.layer1, visual.layer2, visual.layer3, visual.layer4]
            self.channels = tuple(layer[-1].conv3.out_channels for layer in widths)
        elif hasattr(visual, "trunk") and hasattr(visual.trunk, "stages"):
            self.kind = "convnext"
            self.channels = tuple(stage.blocks[-1].conv_dw.out_channels for stage in visual.trunk.stages)
        else:
            raise ValueError(
                f"unsupported CLIP visual tower {type(visual).__name__}: need ModifiedResNet or timm ConvNeXt"
            )
        self.max_logit_scale = max_logit_scale
        # oneDNN (CPU) and cuDNN run these convolutions ~25 % faster on NHWC tensors; weights are converted once here
        # (state-dict loading and .to() keep the layout) and images on entry to forward.
        visual.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ClipBackbone:  # the CLIP stays in eval mode (BN running stats)
        return super().train(False)

    @property
    def embed_dim(self) -> int:
        return int(self.clip_model.text_projection.shape[-1])

    def logit_scale(self) -> float:
        return float(min(self.clip_model.logit_scale.exp().item(), self.max_logit_scale))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images ``[B, 3, H, W]`` normalised -> ``res2..res5`` (strides 4..32); ``clip_vis_dense`` = res5.

        The feature maps are channels-last (NHWC) in memory.
        """
        visual = self.clip_model.visual
        out: dict[str, torch.Tensor] = {}
        if self.kind == "resnet":
            x = images.to(visual.conv1.weight.dtype, memory_format=torch.channels_last)
            x = visual.stem(x)
            for i, layer in enumerate((visual.layer1, visual.layer2, visual.layer3, visual.layer4)):
                x = layer(x)
                out[f"res{i + 2}"] = x
        else:
            trunk = visual.trunk
            x = trunk.stem(images.contiguous(memory_format=torch.channels_last))
            for i, stage in enumerate(trunk.stages):
                x = stage(x)
                out[f"res{i + 2}"] = x
            out["res5"] = trunk.norm_pre(out["res5"])
        out["clip_vis_dense"] = out["res5"]
        return out

    def visual_head(self, pooled: torch.Tensor) -> torch.Tensor:
        """ConvNeXt: pooled ``[..., C]`` -> trunk.head (LayerNorm) -> visual.head.proj -> ``[..., E]``."""
        visual = self.clip_model.visual
        shape = pooled.shape[:-1]
        x = pooled.reshape(-1, pooled.shape[-1])[:, :, None, None]
        x = visual.trunk.head(x)
        x = visual.head(x)
        return x.reshape(*shape, -1)

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``[N, 77]`` -> unnormalised text embeddings ``[N, E]``."""
        return self.clip_model.encode_text(tokens, normalize=False)

    def positional_grid(self, height: int, width: int) -> torch.Tensor:
        """RN attnpool spatial positional embedding resized to ``height x width``: ``[h*w, C]``."""
        pos = self.clip_model.visual.attnpool.positional_embedding[1:]
        side = math.isqrt(int(pos.shape[0]))  # int(): a plain number also while tracing (ONNX export)
        grid = pos.reshape(side, side, -1).permute(2, 0, 1)[None]
        grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return grid[0].flatten(1).transpose(0, 1)
