"""Video instance segmentation metrics (YouTube-VIS / LV-VIS / BURST style video mask AP)."""

from clipvis.cli.evaluation.detections import Detection, DetectionSet, load_results, parse_results
from clipvis.cli.evaluation.errors import EvaluationInputError
from clipvis.cli.evaluation.ground_truth import (
    GtCategory,
    GtTrack,
    GtVideo,
    VideoGroundTruth,
    load_ground_truth,
    parse_ground_truth,
)
from clipvis.cli.evaluation.protocols import PROTOCOLS, EvaluationProtocol, default_protocol_name, get_protocol
from clipvis.cli.evaluation.scoring import score_results, score_results_file
from clipvis.cli.evaluation.video_ap import (
    STAT_NAMES,
    AreaRange,
    BlockStats,
    VideoAPEvaluator,
    VideoAPParams,
    VideoAPResult,
)

__all__ = [
    "PROTOCOLS",
    "STAT_NAMES",
    "AreaRange",
    "BlockStats",
    "Detection",
    "DetectionSet",
    "EvaluationInputError",
    "EvaluationProtocol",
    "GtCategory",
    "GtTrack",
    "GtVideo",
    "VideoAPEvaluator",
    "VideoAPParams",
    "VideoAPResult",
    "VideoGroundTruth",
    "default_protocol_name",
    "get_protocol",
    "load_ground_truth",
    "load_results",
    "parse_ground_truth",
    "parse_results",
    "score_results",
    "score_results_file",
]
