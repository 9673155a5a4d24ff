"""The layout of a training run's output folder, the one place it is defined: what `clipvis train` writes (and the
resolver reads, as it reads a detectron2 ``OUTPUT_DIR``)::

    model_0004999.safetensors        weights after 5000 iterations (detectron2 writes model_0004999.pth)
    model_0004999.state.pt           clipvis train's optimiser, scheduler, scaler, RNG states (for --resume)
    last_checkpoint                  the newest model file's name
    model_final.pth                  detectron2: the weights at the end of the run
    metrics.jsonl                    clipvis train: one JSON line per logged iteration and per evaluation
    data.json                        clipvis train: the items the run trains on (a --resume must give the same)
    .clipvis-train.lock              clipvis train: held by the live run for its whole life (a save writes under it)
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
#: The metrics `clipvis train` logs, one JSON line per logged iteration and per evaluation.
METRICS_NAME = "metrics.jsonl"
#: The items a run trains on: a ``--resume`` must give the same.
RUN_DATA_NAME = "data.json"
#: The lock a checkpoint's save holds while it writes (not ``clipvis.cli.locks.LOCK_NAME``, which marks a folder of
#: clipvis outputs that a folder search for videos skips: a training folder among a user's videos hid them).
TRAINING_LOCK_NAME = ".clipvis-train.lock"
#: The temporary files of a checkpoint's save, until their rename: the weights' (``write_state_dict``:
#: ``.model_0000007.safetensors.tmp<pid>``), the training state's (``model_0000007.state.pt.tmp``) and
#: last_checkpoint's (``atomic_write_text``: ``.last_checkpoint.XXXXXXXX.tmp``). A process killed while saving leaves
#: them, a checkpoint's size each. Only these: a save writes them holding ``TRAINING_LOCK_NAME`` (the live run holds it
#: for its whole life), which their removal takes (metrics.jsonl, config.yaml and data.json are written without it,
#: and their temporaries, a few kilobytes, are left alone).
SAVE_TEMPORARY_FILE = re.compile("|".join([
    r"\.model_\d{7}\.safetensors\.tmp\d+", r"model_\d{7}\.state\.pt\.tmp",
    re.escape(f".{Path(LAST_CHECKPOINT).stem}.") + r"[a-z0-9_]{8}" + re.escape(f".tmp{Path(LAST_CHECKPOINT).suffix}"),
]))


def checkpoint_name(iteration: int) -> str:
    """``model_XXXXXXX.safetensors`` for the weights after ``iteration + 1`` iterations (detectron2 numbering)."""
    return f"model_{iteration:07d}{_WEIGHTS_SUFFIX}"


def state_path(model_path: Path) -> Path:
    """The training state file beside the checkpoint ``model_path``."""
    return model_path.with_name(model_path.name.replace(_WEIGHTS_SUFFIX, STATE_SUFFIX))


def read_last_checkpoint(folder: Path) -> Path | None:
    """The model file ``last_checkpoint`` names in ``folder``; None when there is no such pointer, it cannot be read
    or is not UTF-8 text (a damaged file), or the file it names is not there."""
    pointer = folder / LAST_CHECKPOINT
    try:
        if not pointer.is_file():
            return None
        named = folder / pointer.read_text(encoding="utf-8").strip()
        return named if named.is_file() else None
    except (OSError, UnicodeDecodeError):  # OSError: also a name too long for the file system
        return None


def not_weights_reason(path: Path) -> str | None:
    """Why ``path`` is a file of a training folder that holds no weights (with the file to give instead), or None."""
    if path.name.endswith(STATE_SUFFIX):
        weights = path.with_name(path.name.removesuffix(STATE_SUFFIX) + _WEIGHTS_SUFFIX)
        return f"a training run's resume state (optimiser, schedule), not the model's weights: give {weights} or the " \
               "run's folder"
    return None
