"""Which device a training process trains on (``MODEL.DEVICE``, the process' local rank)."""

from __future__ import annotations

import torch

from clipvis.cli.devices import DeviceChoiceError, command_device
from clipvis.cli.distributed import visible_gpu
from clipvis.cli.train.config import TrainConfig


def check_device(config: TrainConfig, processes: int) -> None:
    """ConfigError unless ``MODEL.DEVICE`` is auto, cpu, cuda or cuda:N that this machine has
    (`clipvis.cli.devices.command_device`); ``cuda:N`` is for one process (several take their own GPUs, one each:
    give ``cuda``). Anything else was taken for CUDA, its N ignored (``cuda:1`` trained on GPU 0), and a machine
    without CUDA failed with a traceback."""
    from clipvis.cli.train.config import ConfigError

    wanted = str(config.get("MODEL.DEVICE") or "auto")
    try:
        device = _config_device(config)
    except DeviceChoiceError as error:
        raise ConfigError(str(error)) from None
    if device.index is not None and processes > 1:
        raise ConfigError(f"MODEL.DEVICE {wanted} with {processes} processes: each process trains on its own GPU; "
                          "give MODEL.DEVICE cuda (and CUDA_VISIBLE_DEVICES to pick the GPUs)")


def _config_device(config: TrainConfig) -> torch.device:
    """The device ``MODEL.DEVICE`` names (default auto); DeviceChoiceError where it names none this machine has."""
    return command_device(str(config.get("MODEL.DEVICE") or "auto"), "MODEL.DEVICE", "MODEL.DEVICE=cpu")


def process_device(config: TrainConfig, local_rank: int) -> torch.device:
    """The device of this process (``check_device`` passed): the CPU, ``cuda:N`` of one process, or a process' own
    GPU by its local rank."""
    device = _config_device(config)
    if device.type == "cpu":
        return device
    index = device.index
    if index is None:
        index = visible_gpu(local_rank, torch.cuda.device_count())  # cuda:0 where each process sees only its own
    torch.cuda.set_device(index)
    return torch.device("cuda", index)
