"""clipvis model core: a checkpoint-compatible CLIP-VIS in plain PyTorch (no CLI, file-format or video I/O)."""

from model.build import create_model
from model.checkpoint import CheckpointError, load_model, save_pretrained
from model.clipvis import ClipVis, FrameOutputs
from model.config import ClipVisConfig

__all__ = [
    "CheckpointError",
    "ClipVis",
    "ClipVisConfig",
    "FrameOutputs",
    "create_model",
    "load_model",
    "save_pretrained",
]
