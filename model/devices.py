"""Which device a model runs on: the one rule ``load_model`` and ``VideoPredictor`` read a ``device`` argument by."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`: ``"auto"`` is CUDA where there is a GPU, else the CPU. ValueError,
    before anything is read or moved, for a name that is no device or a CUDA device this machine does not have."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:  # torch lists every device type it knows, on many lines
        raise ValueError(f"device {str(device)!r} is not a device: use 'cpu', 'cuda', 'cuda:N' or 'auto'") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(device)!r}: no CUDA device is available here (torch.cuda.is_available() "
                             "is False); use device='cpu'")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}")
    return device
