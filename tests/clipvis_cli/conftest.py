"""Fixtures shared by the command tests: a tiny random checkpoint and an isolated cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from clipvis.model import ClipVisConfig, create_model, save_pretrained

TINY_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny random CLIP-VIS (6 queries, 2 decoder layers) saved in clipvis' safetensors format."""
    torch.manual_seed(0)
    config = ClipVisConfig(
        clip_model_config=TINY_CLIP, hidden_dim=32, num_queries=6, decoder_layers=2, num_heads=4,
        dim_feedforward=64, conv_dim=32, mask_dim=32, encoder_layers=1, encoder_dim_feedforward=64,
        min_size_test=64, max_size_test=128,
    )
    return save_pretrained(create_model(config), tmp_path_factory.mktemp("weights") / "tiny.safetensors")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """CLIPVIS_CACHE in a temp folder and no downloads."""
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPVIS_OFFLINE", "1")
    return tmp_path / "cache"
