"""clipvis.model.pixel_decoder: the deformable encoder's reference points, made once per frame size."""

from __future__ import annotations

import torch


def test_deformable_encoder_makes_its_reference_points_once_per_frame_size(monkeypatch) -> None:
    """The encoder's reference points are made at the first forward of a size and reused after (they were rebuilt,
    on the device, at every forward), at most MAX_CACHED_SHAPES sizes; the output is the same."""
    from clipvis.model.deformable_attention import MAX_CACHED_SHAPES
    from clipvis.model.pixel_decoder import DeformableEncoder

    encoder = DeformableEncoder(1, d_model=16, d_ffn=32, n_levels=3, n_heads=4, n_points=2).eval()
    made = []
    build = DeformableEncoder.reference_points
    monkeypatch.setattr(DeformableEncoder, "reference_points", staticmethod(lambda *a: made.append(a) or build(*a)))

    def forward(scale: int) -> torch.Tensor:
        shapes = [(2 * scale, 3), (4, 6), (8, 12)]
        src = torch.randn(1, sum(h * w for h, w in shapes), 16, generator=torch.Generator().manual_seed(scale))
        with torch.no_grad():
            return encoder(src, src, shapes)

    first = forward(1)
    assert torch.equal(forward(1), first) and len(made) == 1
    shapes = [(2, 3), (4, 6), (8, 12)]
    src = torch.randn(1, 6 + 24 + 96, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the kept points are the points
        assert torch.equal(encoder.layers[0](src, src, build(shapes, torch.device("cpu")), shapes), first)
    for scale in range(2, MAX_CACHED_SHAPES + 2):  # more sizes than are kept: the first one goes
        forward(scale)
    assert len(made) == MAX_CACHED_SHAPES + 1
    assert torch.equal(forward(1), first) and len(made) == MAX_CACHED_SHAPES + 2
