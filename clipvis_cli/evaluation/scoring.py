"""One-call scoring: GT + results (files or in-memory) -> `VideoAPResult`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clipvis.cli.evaluation.detections import DetectionSet, ResultsStream, parse_results
from clipvis.cli.evaluation.errors import EvaluationInputError
from clipvis.cli.evaluation.files import stream_json_file
from clipvis.cli.evaluation.ground_truth import VideoGroundTruth, load_ground_truth
from clipvis.cli.evaluation.protocols import default_protocol_name, default_protocol_warnings
from clipvis.cli.evaluation.video_ap import VideoAPEvaluator, VideoAPParams, VideoAPResult


def require_annotations(gt: VideoGroundTruth) -> None:
    """EvaluationInputError when the GT has no annotations ('annotations' missing, null or empty) or no categories
    (an empty 'categories' list: every annotation's category is one it does not list): a table of dashes would
    measure nothing."""
    if not gt.tracks:
        raise EvaluationInputError(
            f"{gt.source}: no annotations, so nothing can be scored (a split without public ground truth, such as "
            "YTVIS or OVIS val? its server scores the zip `clipvis evaluate --dataset NAME` writes)"
        )
    if not gt.categories:
        raise EvaluationInputError(
            f"{gt.source}: no categories to score (its 'categories' list is empty; its {len(gt.tracks)} annotation(s) "
            "count only under a category it lists)"
        )


def score_results(
    results: list[dict[str, Any]],
    gt: VideoGroundTruth,
    protocol: str | None = None,
    params: VideoAPParams | None = None,
    source: str = "<results>",
) -> VideoAPResult:
    """Validate an in-memory results list against parsed GT and score it.

    `protocol` None picks `lvvis` when the GT categories carry `partition`, else `ytvis` (with a warning when they
    look like BURST's, `default_protocol_warnings`). Raises `EvaluationInputError` for bad results.
    """
    require_annotations(gt)
    detections = parse_results(results, gt, source=source)
    return _evaluate(gt, detections, protocol, params)


def score_results_file(
    results_path: Path,
    gt_path: Path,
    protocol: str | None = None,
    params: VideoAPParams | None = None,
) -> VideoAPResult:
    """Load a GT JSON and a results JSON and score them (see `score_results`), the results an entry at a time
    (`ResultsStream`, `StreamedVideoAP`): memory holds the GT's compressed masks and one batch of the results'
    masks, not the results file, and the numbers are `score_results`' of the whole file, bit for bit."""
    gt = load_ground_truth(Path(gt_path))
    require_annotations(gt)
    results_path = Path(results_path)
    scoring = VideoAPEvaluator(protocol or default_protocol_name(gt), params).streamed(gt)
    results = ResultsStream(gt, str(results_path), scoring.add)
    document = stream_json_file(results_path, "results file", {"annotations": results.entry}, array=results.entry,
                                arriving=lambda _, members: results.arriving(members))
    dropped = results.finish(document)
    result = scoring.result(dropped.warnings)
    if protocol is None:
        result.warnings.extend(default_protocol_warnings(gt))
    return result


def _evaluate(
    gt: VideoGroundTruth, detections: DetectionSet, protocol: str | None, params: VideoAPParams | None
) -> VideoAPResult:
    result = VideoAPEvaluator(protocol or default_protocol_name(gt), params).evaluate(gt, detections)
    if protocol is None:
        result.warnings.extend(default_protocol_warnings(gt))
    return result
