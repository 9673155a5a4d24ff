"""clipvis model core: a checkpoint-compatible CLIP-VIS in plain PyTorch (no CLI, file-format or video I/O)."""

from clipvis.model.build import create_model
from clipvis.model.checkpoint import CheckpointError, load_model, save_pretrained
from clipvis.model.clipvis import ClipVis, FrameOutputs
from clipvis.model.config import ClipVisConfig
from clipvis.model.predictor import VideoPredictor

__all__ = [
    "CheckpointError",
    "ClipVis",
    "ClipVisConfig",
    "FrameOutputs",
    "VideoPredictor",
    "create_model",
    "load_model",
    "save_pretrained",
]
