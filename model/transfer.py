"""Copies from the host to a CUDA device that do not make the host wait.

A plain copy from pageable host memory to a GPU waits until every kernel queued before it has run: the host stops
queueing work, and the GPU then idles while the host catches up. Through pinned memory with ``non_blocking=True``
the copy is queued like a kernel (PyTorch keeps the pinned buffer alive until the copy is done). Used for the frames
(`model/preprocess.py`), the track permutations (`model/predictor.py`), the few numbers the deformable attention
builds from Python values for each frame size and the synonym classifier's index (docs/streaming.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def to_device(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """``tensor`` on ``device``: from the host to CUDA through pinned memory without waiting; otherwise ``.to``."""
    device = torch.device(device)
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def small_tensor(values: Sequence, dtype: torch.dtype, device: str | torch.device) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype, device=device)`` without making the host wait for a CUDA device."""
    return to_device(torch.tensor(values, dtype=dtype), device)
