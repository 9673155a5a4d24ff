"""The layout of a training run's output folder, the one place it is defined: what `clipvis train` writes (and the
resolver reads, as it reads a detectron2 ``OUTPUT_DIR``)::

    model_0004999.safetensors        weights after 5000 iterations (detectron2 writes model_0004999.pth)
    model_0004999.state.pt           clipvis train's optimiser, scheduler, scaler, RNG states (for --resume)
    last_checkpoint                  the newest model file's name
    model_final.pth                  detectron2: the weights at the end of the run
"""

from __future__ import annotations

import re
from pathlib import Path

#: The file naming the newest checkpoint of the folder (detectron2's pointer, kept by clipvis train too).
LAST_CHECKPOINT = "last_checkpoint"
#: detectron2's weights at the end of a run.
FINAL_CHECKPOINT = "model_final.pth"
#: The suffix of the training state kept beside each checkpoint (not weights).
STATE_SUFFIX = ".state.pt"
#: A run's checkpoint by iteration: clipvis train's safetensors or detectron2's .pth; group 1 is the iteration.
CHECKPOINT_FILE = re.compile(r"model_(\d+)\.(?:safetensors|pth)")
#: The checkpoints `clipvis train` writes (`checkpoint_name`); group 1 is the iteration.
TRAIN_CHECKPOINT_FILE = re.compile(r"model_(\d{7})\.safetensors")
_WEIGHTS_SUFFIX = ".safetensors"


def checkpoint_name(iteration: int) -> str:
    """``model_XXXXXXX.safetensors`` for the weights after ``iteration + 1`` iterations (detectron2 numbering)."""
    return f"model_{iteration:07d}{_WEIGHTS_SUFFIX}"


def state_path(model_path: Path) -> Path:
    """The training state file beside the checkpoint ``model_path``."""
    return model_path.with_name(model_path.name.replace(_WEIGHTS_SUFFIX, STATE_SUFFIX))


def not_weights_reason(path: Path) -> str | None:
    """Why ``path`` is a file of a training folder that holds no weights (with the file to give instead), or None."""
    if path.name.endswith(STATE_SUFFIX):
        weights = path.with_name(path.name.removesuffix(STATE_SUFFIX) + _WEIGHTS_SUFFIX)
        return f"a training run's resume state (optimiser, schedule), not the model's weights: give {weights} or the " \
               "run's folder"
    return None
