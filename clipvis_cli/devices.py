"""How the commands name a device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (segment's and evaluate's
``--device``, train's ``MODEL.DEVICE``)."""

from __future__ import annotations

import re

DEVICE_SYNTAX = re.compile(r"auto|cpu|cuda(?::[0-9]+)?")  # ASCII digits only: int() also reads "٣" and " 3"
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N (N = 0, 1, ...)"


def cuda_index(device: str) -> int | None:
    """N of ``cuda:N``; None for ``cuda`` (the current device), ``cpu`` and ``auto``."""
    prefix = "cuda:"
    return int(device[len(prefix):]) if device.startswith(prefix) else None
