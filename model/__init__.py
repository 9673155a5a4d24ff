"""clipvis model core: a checkpoint-compatible CLIP-VIS in plain PyTorch (no CLI, output formats or video I/O).

The names below are loaded on first use, so that a torch-free module of the package (`vocabulary`: the rules of
class names) imports without torch: the CLI reads a vocabulary before (and ``--help`` without) loading the model.
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

_LAZY_EXPORTS = {
    "ClipFetchError": "clipvis.model.build",
    "DamagedClipError": "clipvis.model.build",
    "UntrustedClipError": "clipvis.model.build",
    "check_checkpoint": "clipvis.model.build",
    "check_checkpoint_clip": "clipvis.model.build",
    "check_pretrained_clip": "clipvis.model.build",
    "create_model": "clipvis.model.build",
    "load_model": "clipvis.model.build",
    "save_pretrained": "clipvis.model.build",
    "to_official_state_dict": "clipvis.model.build",
    "CheckpointError": "clipvis.model.checkpoint",
    "ClipBackbone": "clipvis.model.clip_backbone",
    "UnknownClipError": "clipvis.model.clip_backbone",
    "ClipVis": "clipvis.model.clipvis",
    "FrameOutputs": "clipvis.model.clipvis",
    "ClipVisConfig": "clipvis.model.config",
    "CriterionOutput": "clipvis.model.criterion",
    "LossWeights": "clipvis.model.criterion",
    "SetCriterion": "clipvis.model.criterion",
    "NonFiniteOutputError": "clipvis.model.errors",
    "ParameterHint": "clipvis.model.errors",
    "VocabularyError": "clipvis.model.errors",
    "MaskedTransformerDecoder": "clipvis.model.mask_decoder",
    "MaskPooler": "clipvis.model.mask_pooling",
    "MaskRuns": "clipvis.model.mask_runs",
    "HungarianMatcher": "clipvis.model.matcher",
    "Match": "clipvis.model.matcher",
    "MSDeformAttnPixelDecoder": "clipvis.model.pixel_decoder",
    "PointSampler": "clipvis.model.point_sampling",
    "RandomPointSampler": "clipvis.model.point_sampling",
    "PRECISIONS": "clipvis.model.predictor",
    "TrackedFrame": "clipvis.model.predictor",
    "VideoInstance": "clipvis.model.predictor",
    "VideoInstances": "clipvis.model.predictor",
    "VideoPredictor": "clipvis.model.predictor",
    "VideoSession": "clipvis.model.predictor",
    "FrameGeometry": "clipvis.model.preprocess",
    "StreamingVideoScorer": "clipvis.model.scoring",
    "MatchResult": "clipvis.model.temporal_matcher",
    "TemporalMatcher": "clipvis.model.temporal_matcher",
    "TextClassifier": "clipvis.model.text_classifier",
}

__all__ = [
    "PRECISIONS",
    "CheckpointError",
    "ClipBackbone",
    "ClipVis",
    "ClipVisConfig",
    "ClipFetchError",
    "CriterionOutput",
    "DamagedClipError",
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
    "NonFiniteOutputError",
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
    "check_checkpoint_clip",
    "check_pretrained_clip",
    "create_model",
    "load_model",
    "save_pretrained",
    "to_official_state_dict",
]

if TYPE_CHECKING:
    from clipvis.model.build import (
        ClipFetchError,
        DamagedClipError,
        UntrustedClipError,
        check_checkpoint,
        check_checkpoint_clip,
        check_pretrained_clip,
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
    from clipvis.model.errors import NonFiniteOutputError, ParameterHint, VocabularyError
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


def __getattr__(name: str) -> Any:
    module = _LAZY_EXPORTS.get(name)
    if module is None:  # a submodule not imported yet (``clipvis.model.predictor``), as the eager package gave it
        if name.startswith("__") or find_spec(f"{__name__}.{name}") is None:
            raise AttributeError(f"module 'clipvis.model' has no attribute {name!r}")
        return import_module(f"{__name__}.{name}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
