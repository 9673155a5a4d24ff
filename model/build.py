"""`create_model`: the one factory that assembles a CLIP-VIS model from a config."""

from __future__ import annotations

from typing import Any

from clipvis.model.clip_backbone import ClipBackbone, build_open_clip_model
from clipvis.model.clipvis import ClipVis
from clipvis.model.config import ClipVisConfig


def create_model(config: ClipVisConfig | dict[str, Any] | None = None, pretrained_clip: bool = False) -> ClipVis:
    """Build a CLIP-VIS model with random head weights.

    ``pretrained_clip=True`` loads the CLIP weights through open_clip (downloads them on first use); otherwise the
    CLIP is random too and its weights are expected from a checkpoint.
    """
    if config is None:
        config = ClipVisConfig()
    elif isinstance(config, dict):
        config = ClipVisConfig.from_dict({**ClipVisConfig().to_dict(), **config})
    if pretrained_clip:
        import open_clip

        if config.clip_model_config is not None:
            raise ValueError("a CLIP given by model config has no pretrained weights to download")
        clip_model = open_clip.create_model(config.clip_model_name, pretrained=config.clip_pretrained)
    else:
        clip_model = build_open_clip_model(config.clip_model_name, config.clip_model_config, config.clip_pretrained)
    backbone = ClipBackbone(clip_model.float(), max_logit_scale=config.max_logit_scale)
    return ClipVis(config, backbone).eval()
