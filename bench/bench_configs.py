"""The model configurations the benchmarks build with random weights (shared by the bench scripts)."""

from __future__ import annotations

from clipvis.model import ClipVisConfig

TINY_CLIP = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
MODEL_CONFIGS = {
    # Tiny head and CLIP, but the official query count and test size: mask upsampling and RLE cost as with R50.
    "tiny": ClipVisConfig(
        clip_model_config=TINY_CLIP, hidden_dim=32, num_queries=100, decoder_layers=2, num_heads=4,
        dim_feedforward=64, conv_dim=32, mask_dim=32, encoder_layers=1, encoder_dim_feedforward=64,
    ),
    "r50": ClipVisConfig(),  # RN50, openai
    "convnext-b": ClipVisConfig(clip_model_name="convnext_base_w_320", clip_pretrained="laion_aesthetic_s13b_b82k"),
}
