"""clipvis model core: a checkpoint-compatible CLIP-VIS in plain PyTorch (no CLI, file-format or video I/O)."""

from clipvis.model.build import (
    UntrustedClipError,
    check_checkpoint,
    create_model,
    load_model,
    save_pretrained,
    to_official_state_dict,
)
from clipvis.model.checkpoint import CheckpointError
from clipvis.model.clip_backbone import UnknownClipError
from clipvis.model.clipvis import ClipVis, FrameOutputs
from clipvis.model.config import ClipVisConfig
from clipvis.model.criterion import CriterionOutput, LossWeights, SetCriterion
from clipvis.model.errors import ParameterHint, VocabularyError
from clipvis.model.matcher import HungarianMatcher, Match
from clipvis.model.point_sampling import PointSampler, RandomPointSampler
from clipvis.model.predictor import PRECISIONS, VideoPredictor

__all__ = [
    "PRECISIONS",
    "CheckpointError",
    "ClipVis",
    "ClipVisConfig",
    "CriterionOutput",
    "HungarianMatcher",
    "LossWeights",
    "Match",
    "ParameterHint",
    "PointSampler",
    "RandomPointSampler",
    "SetCriterion",
    "FrameOutputs",
    "UnknownClipError",
    "UntrustedClipError",
    "VideoPredictor",
    "VocabularyError",
    "check_checkpoint",
    "create_model",
    "load_model",
    "save_pretrained",
    "to_official_state_dict",
]
