"""Run-length encoding of binary masks as a tensor op, on the device the masks live on.

COCO's RLE (pycocotools) walks a mask in column-major (Fortran) order and stores the lengths of alternating runs of
0s and 1s, starting with 0s: an empty H×W mask is ``[H*W]``, a full one ``[0, H*W]``. Computing these lengths where
the masks are made means only a few numbers per mask cross to the host, instead of H×W booleans per mask; the host
then only turns them into COCO's compressed strings (``clipvis.cli.rle.compress_runs``).

    counts, lengths = mask_runs(masks)        # masks: bool [Q, H, W] on any device
    counts, lengths = threshold_runs(logits)  # the masks logits > 0, thresholded straight into column-major order
    # counts [R] int32: every mask's run lengths one after the other; lengths [Q] int64: how many per mask
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class MaskRuns:
    """COCO run lengths of ``Q`` masks of one size, concatenated in mask order.

    ``counts[offsets[q] : offsets[q] + lengths[q]]`` are mask ``q``'s run lengths (0s first); ``lengths[q] == 1``
    means an empty mask. ``ready`` is set while an asynchronous device-to-host copy into ``counts`` may still be
    running: call :meth:`wait` (every accessor below does) before reading ``counts`` directly.
    """

    counts: torch.Tensor  # [R] int32
    lengths: torch.Tensor  # [Q] int64
    size: tuple[int, int]  # (H, W)
    ready: torch.cuda.Event | None = None

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    def wait(self) -> MaskRuns:
        """Block until the counts are on the host (a no-op when they already are)."""
        if self.ready is not None:
            self.ready.synchronize()
            self.ready = None
        return self

    @property
    def offsets(self) -> torch.Tensor:
        """``[Q]`` int64: where each mask's run lengths start in ``counts``."""
        self.wait()
        return torch.cumsum(self.lengths, 0) - self.lengths

    @property
    def empty(self) -> torch.Tensor:
        """``[Q]`` bool: masks without a single foreground pixel."""
        self.wait()
        return self.lengths <= 1

    def areas(self) -> torch.Tensor:
        """``[Q]`` int64 foreground pixels per mask (the sum of every second run)."""
        self.wait()
        counts = self.counts.to(torch.int64)
        odd = _positions_in_masks(self.lengths) % 2 == 1
        mask_index = torch.repeat_interleave(torch.arange(len(self)), self.lengths)
        return torch.zeros(len(self), dtype=torch.int64).index_add_(0, mask_index[odd], counts[odd])

    def to_masks(self) -> torch.Tensor:
        """Decode to bool ``[Q, H, W]`` on the host."""
        self.wait()
        height, width = self.size
        values = (_positions_in_masks(self.lengths) % 2 == 1).numpy()  # [R] bool: each run's value
        # numpy's repeat writes the pixels straight out, one byte each: torch's repeat_interleave first builds an
        # int64 index of every pixel (8 bytes a pixel: 1.8 GB to decode 100 masks of 1080x1920)
        flat = torch.from_numpy(np.repeat(values, self.counts.numpy()))  # [Q * H * W] column-major per mask
        return flat.view(len(self), width, height).transpose(1, 2).contiguous()


def _flat_nonzero(flags: torch.Tensor) -> torch.Tensor:
    """Indices of the True elements of a 1-D bool tensor, int64 on its device (numpy's on the CPU: ~5x faster)."""
    if flags.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(flags.numpy()))
    return flags.nonzero().squeeze(1)


def _positions_in_masks(lengths: torch.Tensor) -> torch.Tensor:
    """For concatenated per-mask sequences of the given lengths: each element's position inside its mask."""
    total = int(lengths.sum())
    starts = torch.cumsum(lengths, 0) - lengths
    return torch.arange(total, dtype=torch.int64) - torch.repeat_interleave(starts, lengths)


def mask_runs(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """COCO run lengths of bool ``[Q, H, W]`` masks, computed on their device.

    Returns ``(counts [R] int32, lengths [Q] int64)`` on the masks' device: mask ``q``'s runs are the ``lengths[q]``
    values after the first ``lengths[:q].sum()``.
    """
    if masks.ndim != 3 or masks.dtype != torch.bool:
        raise ValueError(f"mask_runs expects bool [Q, H, W] masks, got {masks.dtype} {tuple(masks.shape)}")
    return column_major_runs(masks.transpose(1, 2).contiguous())


def threshold_runs(logits: torch.Tensor, threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """COCO run lengths of the masks ``logits > threshold`` for float ``[Q, H, W]`` logits, on their device.

    The comparison writes straight into a column-major buffer, so the bool masks are never made row-major first
    (a separate transposed copy costs more than the comparison itself).
    """
    if logits.ndim != 3:
        raise ValueError(f"threshold_runs expects [Q, H, W] logits, got shape {tuple(logits.shape)}")
    queries, height, width = logits.shape
    column_major = torch.empty(queries, width, height, dtype=torch.bool, device=logits.device)
    torch.gt(logits, threshold, out=column_major.transpose(1, 2))
    return column_major_runs(column_major)


def column_major_runs(column_major: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run lengths of bool masks given column-major as ``[Q, W, H]`` (mask ``q`` is ``column_major[q].T``).

    A run starts wherever a pixel differs from the previous one in column-major order (a virtual 0 precedes the
    first pixel, so a mask that starts with 1 begins with a 0-length run of 0s); every mask also gets a boundary at
    ``H*W``. Only the boundaries (proportional to the masks' outlines) are gathered: ``nonzero`` on the boundary
    flags, then each run's length is the distance to the previous boundary of the same mask.
    """
    queries, width, height = column_major.shape
    pixels = height * width
    if pixels >= 2**31:
        raise ValueError(f"masks of {height}x{width} pixels exceed COCO RLE's 32-bit run lengths")
    device = column_major.device
    if queries == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=device)
        return empty.to(torch.int32), empty
    flat = column_major.view(queries, pixels)
    boundaries = torch.empty(queries, pixels + 1, dtype=torch.bool, device=device)
    boundaries[:, 0] = flat[:, 0]
    torch.ne(flat[:, 1:], flat[:, :-1], out=boundaries[:, 1:pixels])
    boundaries[:, pixels] = True
    index = _flat_nonzero(boundaries.view(-1))  # masks in order, positions increasing inside each
    mask_index = torch.div(index, pixels + 1, rounding_mode="floor")
    position = index - mask_index * (pixels + 1)
    previous = torch.zeros_like(position)
    previous[1:] = position[:-1]
    first = torch.ones_like(mask_index, dtype=torch.bool)
    first[1:] = mask_index[1:] != mask_index[:-1]
    counts = torch.where(first, position, position - previous).to(torch.int32)
    # Runs per mask. Not torch.bincount: on CUDA it reads the largest index back to size its output, a second
    # wait for the device after nonzero's.
    lengths = torch.zeros(queries, dtype=torch.int64, device=device)
    lengths.index_add_(0, mask_index, torch.ones_like(mask_index))
    return counts, lengths
