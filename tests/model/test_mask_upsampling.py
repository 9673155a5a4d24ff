"""The CPU's composed mask resize (clipvis.model.mask_upsampling) against the official two bilinear resizes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipvis.model.mask_upsampling import BandedMatrix, ComposedMaskResize, resize_matrix
from clipvis.model.preprocess import FrameGeometry


def official_logits(logits: torch.Tensor, geo: FrameGeometry) -> torch.Tensor:
    """``[Q, h4, w4]`` -> ``[Q, H, W]``: bilinear to the padded size, crop, bilinear to the original size."""
    x = F.interpolate(logits[:, None], size=geo.padded, mode="bilinear", align_corners=False)
    x = x[..., : geo.resized[0], : geo.resized[1]]
    if tuple(geo.resized) != tuple(geo.original):
        x = F.interpolate(x, size=geo.original, mode="bilinear", align_corners=False)
    return x[:, 0]


GEOMETRIES = [
    FrameGeometry((480, 854), (384, 683), (384, 704)),  # down-scaled 480p, cropped padding
    FrameGeometry((97, 61), (160, 101), (160, 128)),  # up-scaled: the frame is smaller than the model's input
    FrameGeometry((128, 301), (128, 301), (128, 320)),  # the frame at the model's size: one resize and the crop
    FrameGeometry((1, 1), (32, 32), (32, 32)),  # a one-pixel frame
    FrameGeometry((200, 7), (800, 28), (800, 32)),  # a thin frame: a band wider than a block
]


@pytest.mark.parametrize("geo", GEOMETRIES, ids=lambda g: "x".join(map(str, g.original)))
def test_composed_resize_gives_the_official_masks_up_to_float_rounding(geo) -> None:
    """Random logits (the worst case: many pixels near 0): a pixel may change side only where the official value
    is within rounding of 0, and few do."""
    logits = torch.randn(9, *geo.mask_size, generator=torch.Generator().manual_seed(sum(geo.original)))
    logits[3] = -1.0  # empty
    logits[4] = 2.0  # full
    official = official_logits(logits, geo)
    got = ComposedMaskResize(geo.mask_size, geo).positive_column_major(logits)
    assert got.dtype == torch.bool and got.shape == (9, geo.original[1], geo.original[0])
    masks = got.transpose(1, 2)
    differ = masks != (official > 0)
    assert official[differ].abs().max().item() < 1e-5 if differ.any() else True
    assert int(differ.sum()) <= max(2, official.numel() // 10**6)
    assert not masks[3].any() and masks[4].all()


def test_composed_values_equal_the_official_values_closely() -> None:
    """The product itself (before the threshold) is the two resizes' value within float32 rounding."""
    geo = GEOMETRIES[0]
    logits = torch.randn(3, *geo.mask_size, generator=torch.Generator().manual_seed(0)) * 10
    resize = ComposedMaskResize(geo.mask_size, geo)
    dense_rows = resize_matrix(geo.mask_size[0], geo.padded[0], geo.resized[0], geo.original[0])
    along_height = resize.rows.matmul(logits)
    torch.testing.assert_close(along_height, dense_rows @ logits, atol=1e-5, rtol=1e-5)
    dense_columns = resize_matrix(geo.mask_size[1], geo.padded[1], geo.resized[1], geo.original[1])
    torch.testing.assert_close(along_height @ dense_columns.T, official_logits(logits, geo), atol=2e-5, rtol=1e-6)


@pytest.mark.parametrize("sizes", [(24, 96, 90, 61), (40, 160, 160, 160), (8, 32, 25, 400), (5, 20, 20, 1)])
def test_resize_matrix_is_the_two_resizes_along_one_axis(sizes) -> None:
    low, padded, resized, original = sizes
    matrix = resize_matrix(low, padded, resized, original)
    assert matrix.shape == (original, low)
    torch.testing.assert_close(matrix.sum(1), torch.ones(original))
    signal = torch.randn(low)
    x = F.interpolate(signal[None, None, :, None], size=(padded, 1), mode="bilinear", align_corners=False)
    x = x[..., :resized, :]
    if resized != original:
        x = F.interpolate(x, size=(original, 1), mode="bilinear", align_corners=False)
    torch.testing.assert_close(matrix @ signal, x[0, 0, :, 0])
    # a narrow band: each output pixel reads at most 4 neighbouring input pixels
    touched = matrix != 0
    assert int(touched.sum(1).max()) <= 4


def test_banded_matrix_products_equal_the_dense_ones() -> None:
    generator = torch.Generator().manual_seed(1)
    matrix = torch.zeros(150, 40)
    for row in range(150):
        start = row * 40 // 150
        matrix[row, start : start + 3] = torch.rand(3, generator=generator)[: 40 - start]
    matrix[64:80] = 0  # a whole block of rows without weights
    banded = BandedMatrix(matrix, block_rows=16)
    assert max(block.weights.shape[1] for block in banded.blocks) < 10  # blocks hold their band, not every column
    x = torch.randn(3, 40, 11, generator=generator)
    torch.testing.assert_close(banded.matmul(x), matrix @ x)
    strided = torch.randn(3, 11, 40, generator=generator).transpose(1, 2)  # any strides
    torch.testing.assert_close(banded.matmul(strided), matrix @ strided)
    out = torch.empty(3, 150, 11, dtype=torch.bool)
    assert torch.equal(banded.matmul_positive(x, out), (matrix @ x) > 0)


def test_logits_of_another_size_are_refused() -> None:
    geo = GEOMETRIES[2]
    with pytest.raises(ValueError, match="mask logits of size"):
        ComposedMaskResize(geo.mask_size, geo).positive_column_major(torch.zeros(2, 5, 5))
