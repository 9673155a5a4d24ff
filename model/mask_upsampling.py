"""Mask logits to the frame's resolution on the CPU: the official two bilinear resizes, composed into one.

The official evaluator takes each mask's logits ``[h4, w4]`` bilinearly to the padded input size, crops the part that
holds the resized frame, takes that bilinearly to the original frame size and thresholds at 0 (docs/fidelity.md,
"Masks at the output resolution"). Both resizes are linear and separable, so the whole is one product per mask::

    M = A_h @ L @ A_w.T        # L [h4, w4] logits, A_h [H, h4], A_w [W, w4], M [H, W]

where ``A_h`` (``A_w``) is the composition of the two 1-D resizes along that axis. The weights are PyTorch's own: each
matrix is the two ``F.interpolate`` calls applied to an identity. A row of either matrix has 2-4 neighbouring
non-zero weights, so a block of output rows needs only a narrow band of input rows: the products run as a few
small matrix products per block (:class:`BandedMatrix`), straight into the column-major ``[Q, W, H]`` layout COCO's
run lengths walk, and the padded-size intermediate never exists.

On the CPU this is several times faster than the two resizes plus a threshold into a transposed buffer. The values
differ from the two resizes' only by float rounding (about 1e-6 of the logits' size), so a pixel lands on the other
side of 0 only where its logit is that close to 0: a few pixels in 10^7 in the tests, far inside the fidelity
tolerance (the official outputs themselves differ that much between CPU and GPU). ``exact=True`` predictors keep the
official operations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipvis.model.preprocess import FrameGeometry

# Output rows per block of a banded product: small enough that a block's band of input rows stays narrow, large
# enough that each product is worth a call.
BLOCK_ROWS = 64


def resize_matrix(low: int, padded: int, resized: int, original: int) -> torch.Tensor:
    """``[original, low]`` float32: along one axis, bilinear ``low -> padded``, keep the first ``resized``, bilinear
    ``resized -> original`` (skipped when the sizes are equal: a same-size bilinear resize is the identity).

    Row ``i`` holds the weights of output pixel ``i`` over the ``low`` input pixels (they sum to 1). Made in float32
    as the official float32 logits are resized: PyTorch then places the source pixels in float32 too, and those
    positions (off by up to ~1e-4 pixel on a large frame) are the official ones; float64 would be more exact than
    the official values and differ from them by more.
    """
    identity = torch.eye(low, dtype=torch.float32)[:, None, :, None]  # [low, 1, low, 1]: one image per input pixel
    x = F.interpolate(identity, size=(padded, 1), mode="bilinear", align_corners=False)[:, :, :resized]
    if resized != original:
        x = F.interpolate(x, size=(original, 1), mode="bilinear", align_corners=False)
    return x[:, 0, :, 0].T.contiguous()


@dataclass(frozen=True)
class MatrixBlock:
    """Rows ``rows`` of a banded matrix restricted to its non-zero columns ``columns``: ``weights`` ``[r, c]``."""

    rows: slice
    columns: slice
    weights: torch.Tensor


class BandedMatrix:
    """A matrix whose rows have their non-zero weights in a narrow moving band, stored as dense blocks of
    ``block_rows`` rows times the columns that block touches."""

    def __init__(self, matrix: torch.Tensor, block_rows: int = BLOCK_ROWS,
                 dtype: torch.dtype = torch.float32) -> None:
        self.shape = tuple(matrix.shape)
        self.blocks: list[MatrixBlock] = []
        touched = matrix != 0
        for start in range(0, matrix.shape[0], block_rows):
            rows = slice(start, min(start + block_rows, matrix.shape[0]))
            columns = touched[rows].any(0).nonzero()[:, 0]
            if columns.numel() == 0:  # rows of zeros only (not produced by a resize; kept correct anyway)
                columns = torch.zeros(1, dtype=torch.int64)
            band = slice(int(columns[0]), int(columns[-1]) + 1)
            self.blocks.append(MatrixBlock(rows, band, matrix[rows, band].to(dtype).contiguous()))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """``self @ x`` for ``x`` ``[B, K, N]`` (any strides) -> ``[B, R, N]``."""
        out = x.new_empty(x.shape[0], self.shape[0], x.shape[2])
        for block in self.blocks:
            torch.matmul(block.weights, x[:, block.columns], out=out[:, block.rows])
        return out

    def matmul_positive(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``(self @ x) > 0`` into the bool ``out`` ``[B, R, N]``, one block of rows at a time (the float product
        never exists whole)."""
        for block in self.blocks:
            torch.gt(torch.matmul(block.weights, x[:, block.columns]), 0, out=out[:, block.rows])
        return out


class ComposedMaskResize:
    """One video's mask logits ``[Q, h4, w4]`` -> the masks ``logits > 0`` at the frame's size, column-major.

    Built once per frame size (the matrices depend only on the sizes): ``mask_size`` is ``(h4, w4)``, the size of the
    model's mask logits (a quarter of the padded input).
    """

    def __init__(self, mask_size: tuple[int, int], geometry: FrameGeometry, device: torch.device | str = "cpu",
                 block_rows: int = BLOCK_ROWS) -> None:
        self.mask_size = tuple(mask_size)
        self.geometry = geometry
        rows = resize_matrix(mask_size[0], geometry.padded[0], geometry.resized[0], geometry.original[0])
        columns = resize_matrix(mask_size[1], geometry.padded[1], geometry.resized[1], geometry.original[1])
        self.rows = BandedMatrix(rows.to(device), block_rows)  # [H, h4]
        self.columns = BandedMatrix(columns.to(device), block_rows)  # [W, w4]

    def positive_column_major(self, logits: torch.Tensor) -> torch.Tensor:
        """float ``[Q, h4, w4]`` -> bool ``[Q, W, H]``: mask ``q`` at the original size is ``out[q].T``."""
        if tuple(logits.shape[1:]) != self.mask_size:
            raise ValueError(f"mask logits of size {tuple(logits.shape[1:])}, expected {self.mask_size}")
        height, width = self.geometry.original
        along_height = self.rows.matmul(logits.float())  # [Q, H, w4]: A_h @ L
        out = torch.empty(logits.shape[0], width, height, dtype=torch.bool, device=logits.device)
        return self.columns.matmul_positive(along_height.transpose(1, 2), out)  # (A_w @ (A_h @ L).T) > 0
