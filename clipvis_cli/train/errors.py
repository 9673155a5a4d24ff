"""How `clipvis train` words the model library's errors: with train's flags, for the command and for the training
run (the ranks and the processes --num-gpus spawns pass on the same line)."""

from __future__ import annotations

from clipvis.cli.messages import MODEL_PARAMETER_FLAGS, model_error_message

# train's flags for what the model library's errors name (it has no --allow-hub-clip: the released CLIPs only)
TRAIN_PARAMETER_FLAGS = {k: v for k, v in MODEL_PARAMETER_FLAGS.items() if k in ("config", "clip_config", "weights")}

# What train says instead of "pass --allow-hub-clip", which it does not offer
TRAIN_HUB_CLIP_ADVICE = (
    "train cannot download another CLIP: start from a checkpoint that holds its weights (e.g. saved in Python with "
    "clipvis.save_pretrained(clipvis.load_model(..., allow_hub_clip=True), path)) and give the CLIP's open_clip "
    "model config with --clip-config"
)


def train_model_error_message(error: BaseException) -> str:
    """A model library error's one line as train says it (``model_error_message`` with train's flags)."""
    from clipvis.model import UntrustedClipError

    if isinstance(error, UntrustedClipError):
        return f"{error.problem}; {TRAIN_HUB_CLIP_ADVICE}"
    return model_error_message(error, TRAIN_PARAMETER_FLAGS)
