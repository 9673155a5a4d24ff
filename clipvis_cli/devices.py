"""How the commands name a device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (segment's and evaluate's
``--device``, train's ``MODEL.DEVICE``), and the one check that this machine has it (`device_problem`), which each
command words as its own error."""

from __future__ import annotations

import re

DEVICE_SYNTAX = re.compile(r"auto|cpu|cuda(?::[0-9]+)?")  # ASCII digits only: int() also reads "٣" and " 3"
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N (N = 0, 1, ...)"


def cuda_index(device: str) -> int | None:
    """N of ``cuda:N``; None for ``cuda`` (the current device), ``cpu`` and ``auto``."""
    prefix = "cuda:"
    return int(device[len(prefix):]) if device.startswith(prefix) else None


def device_problem(device: str, cpu_setting: str) -> str | None:
    """Why ``device`` (one ``DEVICE_SYNTAX`` takes) cannot run on this machine, in words that follow
    ``"<option> <device>: "`` (the CPU is offered as ``cpu_setting``, as the command takes it: ``--device cpu``,
    ``MODEL.DEVICE=cpu``); None when it can.
    ``auto`` and ``cpu`` always can; ``cuda`` and ``cuda:N`` need CUDA, and a GPU N. Imports torch for the others."""
    if device in ("auto", "cpu"):
        return None
    import torch

    if not torch.cuda.is_available():
        return f"CUDA is not available on this machine (use {cpu_setting})"
    index = cuda_index(device)
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        present = " (cuda:0)" if count == 1 else f" (cuda:0 to cuda:{count - 1})" if count else ""
        return f"this machine has {count} CUDA device{'' if count == 1 else 's'}{present}"
    return None
