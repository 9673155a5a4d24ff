"""Which device a model runs on: the one rule ``load_model`` and ``VideoPredictor`` read a ``device`` argument by."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device`: ``"auto"`` is CUDA where there is a GPU, else the CPU. ValueError,
    before anything is read or moved, for a name that is no device, the meta device (shapes only: nothing runs on
    it), or a device this machine does not have: CUDA, MPS, XPU or any other type PyTorch names (``cuda:N`` past its
    last GPU too)."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as error:  # torch lists every device type it knows, on many lines
        raise ValueError(f"device {str(device)!r} is not a device: use 'cpu', 'cuda', 'cuda:N' or 'auto'") from error
    if device.type == "cpu":
        return device
    if device.type == "meta":
        raise ValueError(f"device {str(device)!r} holds shapes, not data: nothing runs on it; use device='cpu'")
    available, check = _availability(device.type)
    label = device.type.upper()
    if not available:
        raise ValueError(f"device {str(device)!r}: no {label} device is available here ({check}); use device='cpu'")
    count = _device_count(device.type)
    if device.index is not None and count is not None and device.index >= count:
        raise ValueError(f"device {str(device)!r}: this machine has {count} {label} device(s), {device.type}:0 to "
                         f"{device.type}:{count - 1}")
    return device


def _availability(device_type: str) -> tuple[bool, str]:
    """Whether this machine has a ``device_type`` device (not the CPU), and the check said in the error when not:
    ``torch.backends.mps.is_available()`` for MPS, else ``torch.<type>.is_available()`` (CUDA, XPU, MTIA, a backend
    registered under its own name). A type without such a check (``vulkan``, ``xla``, ...) is not available."""
    if device_type == "mps":
        return bool(torch.backends.mps.is_available()), "torch.backends.mps.is_available() is False"
    is_available = getattr(getattr(torch, device_type, None), "is_available", None)
    if not callable(is_available):
        return False, f"PyTorch has no torch.{device_type}.is_available() to find one"
    return bool(is_available()), f"torch.{device_type}.is_available() is False"


def _device_count(device_type: str) -> int | None:
    """How many ``device_type`` devices this machine has, where PyTorch says (``torch.<type>.device_count()``)."""
    device_count = getattr(getattr(torch, device_type, None), "device_count", None)
    return int(device_count()) if callable(device_count) else None
