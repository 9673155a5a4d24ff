"""How the commands name a device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (segment's and evaluate's
``--device``, train's ``MODEL.DEVICE``), and the one check of such a name (`command_device`): its syntax, then the
model library's rule (`clipvis.model.devices.resolve_device`) for what it means on this machine, each failure in
words that name the command's option."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import typer

from clipvis.cli.exits import fail

if TYPE_CHECKING:
    import torch

DEVICE_SYNTAX = re.compile(r"auto|cpu|cuda(?::[0-9]+)?")  # ASCII digits only: int() also reads "٣" and " 3"
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N (N = 0, 1, ...)"


class DeviceChoiceError(ValueError):
    """A device a command cannot run on; ``str()`` is its one line, naming the option. ``usage``: the name is none
    the commands take (a usage error), else this machine has not got that device."""

    def __init__(self, message: str, usage: bool) -> None:
        super().__init__(message)
        self.usage = usage


def command_device(device: str, option: str, cpu_setting: str) -> torch.device:
    """The device that a command's ``option`` (``--device``, ``MODEL.DEVICE``) set to ``device`` names, as the model
    library reads it (`clipvis.model.devices.resolve_device`: ``auto`` is CUDA where there is a GPU, else the CPU;
    ``cuda`` keeps no index; ``cuda:01`` is ``cuda:1``). DeviceChoiceError for a name that is none of auto, cpu,
    cuda, cuda:N (``<option> must be ...``, usage), or a device this machine has not got (``<option> <device>:
    CUDA is not available on this machine (use <cpu_setting>)`` or ``... this machine has N CUDA devices``)."""
    if not DEVICE_SYNTAX.fullmatch(device):
        raise DeviceChoiceError(f"{option} must be {DEVICE_CHOICES}, not {device!r}", usage=True)
    from clipvis.model.devices import resolve_device

    index = _cuda_index(device)
    try:
        return resolve_device(device if index is None else f"cuda:{index}")  # torch reads no "cuda:01"
    except ValueError as error:
        raise DeviceChoiceError(f"{option} {device}: {_missing_device(index, cpu_setting) or error}",
                                usage=False) from None


def _cuda_index(device: str) -> int | None:
    """N of ``cuda:N``; None for ``cuda`` (the current device), ``cpu`` and ``auto``."""
    prefix = "cuda:"
    return int(device[len(prefix):]) if device.startswith(prefix) else None


def _missing_device(index: int | None, cpu_setting: str) -> str | None:
    """Why CUDA device ``index`` (None: any) is not on this machine, in words that follow ``"<option> <device>: "``
    (the CPU offered as ``cpu_setting``, as the command takes it); None when it is there."""
    import torch

    if not torch.cuda.is_available():
        return f"CUDA is not available on this machine (use {cpu_setting})"
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        present = " (cuda:0)" if count == 1 else f" (cuda:0 to cuda:{count - 1})" if count else ""
        return f"this machine has {count} CUDA device{'' if count == 1 else 's'}{present}"
    return None


def resolve_device(device: str) -> str:
    """The device a run uses: ``auto`` is ``cuda`` when CUDA is there, else ``cpu``. Raises typer.BadParameter for a
    device that is none of auto/cpu/cuda/cuda:N, and typer.Exit(1) after one line when this machine has not got it
    (`command_device`)."""
    try:
        return str(command_device(device, "--device", "--device cpu"))
    except DeviceChoiceError as error:
        if error.usage:
            raise typer.BadParameter(str(error)) from None
        raise fail(str(error)) from None
