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
from clipvis.model.clip_backbone import ClipBackbone, UnknownClipError
from clipvis.model.clipvis import ClipVis, FrameOutputs
from clipvis.model.config import ClipVisConfig
from clipvis.model.criterion import CriterionOutput, LossWeights, SetCriterion
from clipvis.model.errors import ParameterHint, VocabularyError
from clipvis.model.mask_decoder import MaskedTransformerDecoder
from clipvis.model.mask_pooling import MaskPooler
from clipvis.model.mask_runs import MaskRuns
from clipvis.model.matcher import HungarianMatcher, Match
from clipvis.model.pixel_decoder import MSDeformAttnPixelDecoder
from clipvis.model.point_sampling import PointSampler, RandomPointSampler
from clipvis.model.predictor import (
    PRECISIONS,
    TrackedFrame,
    VideoInstance,
    VideoInstances,
    VideoPredictor,
    VideoSession,
)
from clipvis.model.preprocess import FrameGeometry
from clipvis.model.scoring import StreamingVideoScorer
from clipvis.model.temporal_matcher import MatchResult, TemporalMatcher
from clipvis.model.text_classifier import TextClassifier

__all__ = [
    "PRECISIONS",
    "CheckpointError",
    "ClipBackbone",
    "ClipVis",
    "ClipVisConfig",
    "CriterionOutput",
    "FrameGeometry",
    "FrameOutputs",
    "HungarianMatcher",
    "LossWeights",
    "MSDeformAttnPixelDecoder",
    "MaskPooler",
    "MaskRuns",
    "MaskedTransformerDecoder",
    "Match",
    "MatchResult",
    "ParameterHint",
    "PointSampler",
    "RandomPointSampler",
    "SetCriterion",
    "StreamingVideoScorer",
    "TemporalMatcher",
    "TextClassifier",
    "TrackedFrame",
    "UnknownClipError",
    "UntrustedClipError",
    "VideoInstance",
    "VideoInstances",
    "VideoPredictor",
    "VideoSession",
    "VocabularyError",
    "check_checkpoint",
    "create_model",
    "load_model",
    "save_pretrained",
    "to_official_state_dict",
]
