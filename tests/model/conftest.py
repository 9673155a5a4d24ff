"""Tiny models and golden-case locations shared by the model tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from clipvis.model import ClipVisConfig, create_model

# A tiny open_clip ModifiedResNet CLIP (the shape of the golden cases' CLIP, smaller text tower).
TINY_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
TINY_HEAD = dict(
    hidden_dim=32, num_queries=8, decoder_layers=2, num_heads=4, dim_feedforward=64, conv_dim=32, mask_dim=32,
    encoder_layers=1, encoder_dim_feedforward=64, min_size_test=64, max_size_test=128,
)


def _tiny_config(**changes) -> ClipVisConfig:
    return ClipVisConfig(clip_model_config=TINY_CLIP, **{**TINY_HEAD, **changes})


@pytest.fixture(scope="session")
def tiny_config():
    """Factory: a tiny ClipVisConfig, with field overrides."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_model():
    torch.manual_seed(0)
    return create_model(_tiny_config())


def fidelity_root() -> Path:
    env = os.environ.get("CLIPVIS_FIDELITY_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "fidelity"


@pytest.fixture(scope="session")
def golden_case():
    """Factory: the folder of a golden case, or skip when ../shared/fidelity is absent."""

    def locate(name: str) -> Path:
        path = fidelity_root() / name
        if not (path / "model.pth").is_file():
            pytest.skip(f"golden case {name} not found at {path} (../shared/fidelity sits beside the checkout in CI)")
        return path

    return locate
