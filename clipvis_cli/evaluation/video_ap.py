"""Video mask AP as the YouTube-VIS / LV-VIS / CLIP-VIS-BURST reference evaluators compute it.

The reference evaluators are `ytvoseval.py` (youtubevos/cocoapi) and LV-VIS `evaluate/lvviseval.py` (docs/fidelity.md,
"Evaluation (video AP)"); in short, per detection d and GT g of one
(video, category):

* IoU = sum_t |d_t & g_t| / sum_t |d_t | g_t| over `zip(d, g)` frames; a frame where only one side is present adds
  that side's area to the union; a present GT frame whose mask size differs from the video's adds nothing when the
  detection is present too (pycocotools merges masks of different sizes to an empty mask).
* average area = mean of the truthy per-frame areas (GT: the file's `areas` field; detection: its RLE areas).
* COCO greedy matching per (video, category) with at most `max_dets[-1]` detections (stable sort by -score), ten
  IoU thresholds, 101 recall points, area ranges with inclusive bounds; a GT with id 0 never yields a true positive.
* accumulation per category over videos in ascending id order: ties in score keep video order, then file order.

Computation: intersections come from one `pycocotools.mask.iou` call per (video, category, frame) on the present
masks (crowd mode, so the IoU is intersection / detection area and the integer intersection is recovered exactly),
unions from per-frame areas; matching runs all IoU thresholds and area ranges at once with numpy; accumulation is
vectorised per category. All sums are of integers, so IoUs are bit-identical to the reference loops.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from clipvis.cli.evaluation.detections import Detection, DetectionSet
from clipvis.cli.evaluation.ground_truth import GtTrack, GtVideo, VideoGroundTruth
from clipvis.cli.evaluation.protocols import (
    EvaluationProtocol,
    ResolvedBlock,
    get_protocol,
    resolve_blocks,
)
from clipvis.cli.rle import RleDict, coco_areas


@dataclass(frozen=True)
class AreaRange:
    """An object-size bucket on the average per-frame area; both bounds are inclusive."""

    label: str
    low: float
    high: float


def _reference_linspace(start: float, stop: float, step: float) -> tuple[float, ...]:
    # Same expression as the reference Params (np.arange would drift); keeps the exact float values.
    count = int(np.round((stop - start) / step)) + 1
    return tuple(float(value) for value in np.linspace(start, stop, count, endpoint=True))


@dataclass(frozen=True)
class VideoAPParams:
    """Evaluation parameters; the defaults are the reference's (YTVOSeval/LVVISeval `Params`, iouType segm)."""

    iou_thresholds: tuple[float, ...] = _reference_linspace(0.5, 0.95, 0.05)
    recall_thresholds: tuple[float, ...] = _reference_linspace(0.0, 1.0, 0.01)
    max_dets: tuple[int, int, int] = (1, 10, 100)
    area_ranges: tuple[AreaRange, ...] = (
        AreaRange("all", 0.0**2, 1e5**2),
        AreaRange("small", 0.0**2, 128.0**2),
        AreaRange("medium", 128.0**2, 256.0**2),
        AreaRange("large", 256.0**2, 1e5**2),
    )

    def __post_init__(self) -> None:
        labels = [area.label for area in self.area_ranges]
        if labels[:1] != ["all"] or not {"small", "medium", "large"} <= set(labels):
            raise ValueError(f"area_ranges must start with 'all' and include small/medium/large, got {labels}")
        if len(self.max_dets) != 3 or list(self.max_dets) != sorted(self.max_dets):
            raise ValueError(f"max_dets must be three increasing numbers, got {self.max_dets}")


@dataclass(frozen=True)
class StatDefinition:
    """One summary number: a mean over a slice of the precision (AP) or recall (AR) array."""

    name: str
    average_precision: bool
    iou_threshold: float | None
    area: str
    max_det_index: int


STAT_DEFINITIONS: tuple[StatDefinition, ...] = (
    StatDefinition("AP", True, None, "all", 2),
    StatDefinition("AP50", True, 0.5, "all", 2),
    StatDefinition("AP75", True, 0.75, "all", 2),
    StatDefinition("APs", True, None, "small", 2),
    StatDefinition("APm", True, None, "medium", 2),
    StatDefinition("APl", True, None, "large", 2),
    StatDefinition("AR1", False, None, "all", 0),
    StatDefinition("AR10", False, None, "all", 1),
    StatDefinition("AR100", False, None, "all", 2),
    StatDefinition("ARs", False, None, "small", 2),
    StatDefinition("ARm", False, None, "medium", 2),
    StatDefinition("ARl", False, None, "large", 2),
)
STAT_NAMES: tuple[str, ...] = tuple(definition.name for definition in STAT_DEFINITIONS)

Stats = dict[str, float | None]
"""Stat name -> value as a fraction; None where the reference reports -1 (nothing to average)."""


@dataclass
class BlockStats:
    """Summary numbers over one category block (e.g. LV-VIS novel)."""

    name: str
    suffix: str
    category_ids: tuple[int, ...]
    stats: Stats

    def named_stats(self) -> Stats:
        """Stats keyed the way the reference prints them: AP -> AP<suffix> (APn), AP50 -> AP50<suffix> ..."""
        return {f"{name}{self.suffix}": value for name, value in self.stats.items()}


@dataclass
class VideoAPResult:
    """Everything one evaluation produced. Arrays follow the reference layout.

    `precision[t, r, k, a, m]` and `recall[t, k, a, m]` (t: IoU threshold, r: recall point, k: category in ascending
    id order, a: area range, m: max_dets); -1 where a category has no GT in that setting.
    """

    protocol: str
    params: VideoAPParams
    category_ids: list[int]
    precision: np.ndarray
    recall: np.ndarray
    stats: Stats
    blocks: list[BlockStats]
    per_category_ap: dict[int, float | None]
    num_videos: int
    num_detections: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (fractions; null for undefined values)."""
        return {
            "protocol": self.protocol,
            "num_videos": self.num_videos,
            "num_categories": len(self.category_ids),
            "num_categories_with_gt": sum(value is not None for value in self.per_category_ap.values()),
            "num_detections": self.num_detections,
            "metrics": dict(self.stats),
            "blocks": {
                block.name: {"num_categories": len(block.category_ids), "metrics": block.named_stats()}
                for block in self.blocks
            },
            "per_category_ap": {str(category_id): ap for category_id, ap in self.per_category_ap.items()},
            "warnings": list(self.warnings),
        }


@dataclass
class _TrackMasks:
    """Per-frame masks of one track prepared for IoU: present flags, RLE areas, frames usable for intersection."""

    rles: list[RleDict | None]
    present: np.ndarray
    areas: np.ndarray
    usable: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.rles)


@dataclass
class _PairOutcome:
    """Matching result of one (video, category): detections in score order, flags per (area, threshold, det)."""

    scores: np.ndarray
    true_positive: np.ndarray
    false_positive: np.ndarray
    num_regular_gt: np.ndarray


def _track_masks(
    rles: Sequence[RleDict | None], video: GtVideo | None = None, areas: np.ndarray | None = None
) -> _TrackMasks:
    """``areas`` [T]: the masks' areas where already known (a `Detection`'s), else computed here."""
    present = np.fromiter((bool(rle) for rle in rles), dtype=bool, count=len(rles))
    present_index = np.flatnonzero(present)
    if areas is None:
        areas = np.zeros(len(rles), dtype=np.float64)
        if present_index.size:
            areas[present_index] = coco_areas([rles[i] for i in present_index])
    usable = present
    if video is not None:
        size = [video.height, video.width]
        usable = present.copy()
        for i in present_index:
            if list(rles[i]["size"]) != size:
                usable[i] = False
    return _TrackMasks(list(rles), present, areas, usable)


def _mean_of_truthy(values: Iterable[Any], truncate: bool) -> float:
    kept = [int(value) if truncate else value for value in values if value]
    return float(np.array(kept).mean()) if kept else 0.0


def _rows_by_frame(flags: np.ndarray) -> list[np.ndarray]:
    """flags [N, T] -> for each frame t, the rows n where flags[n, t] (ascending)."""
    frames, rows = np.nonzero(flags.T)
    return np.split(rows, np.searchsorted(frames, np.arange(1, flags.shape[1])))


def track_ious(detections: Sequence[_TrackMasks], gts: Sequence[_TrackMasks]) -> np.ndarray:
    """Spatio-temporal IoU matrix [detection, gt] (ratio of sums over zip(frames); see the module doc)."""
    num_dt, num_gt = len(detections), len(gts)
    dt_frames = np.array([track.num_frames for track in detections], dtype=np.intp)
    gt_frames = np.array([track.num_frames for track in gts], dtype=np.intp)
    width = int(max(dt_frames.max(), gt_frames.max()))
    dt_area = np.zeros((num_dt, width))
    gt_area = np.zeros((num_gt, width))
    dt_present = np.zeros((num_dt, width), dtype=bool)
    gt_usable = np.zeros((num_gt, width), dtype=bool)
    gt_mismatched = np.zeros((num_gt, width), dtype=bool)
    for i, track in enumerate(detections):
        dt_area[i, : track.num_frames] = track.areas
        dt_present[i, : track.num_frames] = track.present
    for j, track in enumerate(gts):
        gt_area[j, : track.num_frames] = track.areas
        gt_usable[j, : track.num_frames] = track.usable
        gt_mismatched[j, : track.num_frames] = track.present & ~track.usable
    intersection = np.zeros((num_dt, num_gt))
    lost_union = np.zeros((num_dt, num_gt))
    # Each frame's present detections and usable GTs, found once for all frames: (frame, row) in frame order.
    num_common = int(min(dt_frames.max(), gt_frames.max()))
    dt_by_frame = _rows_by_frame(dt_present[:, :num_common])
    gt_by_frame = _rows_by_frame(gt_usable[:, :num_common])
    bad_by_frame = _rows_by_frame(gt_mismatched[:, :num_common]) if gt_mismatched.any() else None
    for t in range(num_common):
        dt_index = dt_by_frame[t]
        if dt_index.size == 0:
            continue
        gt_index = gt_by_frame[t]
        if gt_index.size:
            # Crowd mode: iou = intersection / detection area, so the integer intersection is recovered exactly.
            ratio = mask_utils.iou(
                [detections[i].rles[t] for i in dt_index],
                [gts[j].rles[t] for j in gt_index],
                [1] * gt_index.size,
            )
            intersection[dt_index[:, None], gt_index] += np.rint(ratio * dt_area[dt_index, t][:, None])
        if bad_by_frame is not None:
            bad_index = bad_by_frame[t]
            if bad_index.size:
                lost_union[dt_index[:, None], bad_index] += dt_area[dt_index, t][:, None] + gt_area[bad_index, t]
    common = np.minimum.outer(dt_frames, gt_frames)
    dt_prefix = np.concatenate([np.zeros((num_dt, 1)), np.cumsum(dt_area, axis=1)], axis=1)
    gt_prefix = np.concatenate([np.zeros((num_gt, 1)), np.cumsum(gt_area, axis=1)], axis=1)
    union = (
        np.take_along_axis(dt_prefix, common, axis=1)
        + np.take_along_axis(gt_prefix, common.T, axis=1).T
        - intersection
        - lost_union
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)


def greedy_match(
    ious: np.ndarray,
    gt_ignore: np.ndarray,
    gt_reusable: np.ndarray,
    gt_counts: np.ndarray,
    dt_outside: np.ndarray,
    iou_thresholds: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """COCO greedy matching for all area ranges and IoU thresholds at once.

    ious [D, G] (detections in score order), gt_ignore [A, G], gt_reusable [G] (crowd, or every GT for BURSTeval),
    gt_counts [G] (False for a GT whose id is 0: its matches are not true positives), dt_outside [A, D].
    Returns (true_positive, false_positive), each [A, T, D]; a detection that is neither is ignored.

    For each detection the reference scans GTs (non-ignored first) keeping the last one whose IoU is >= the best so
    far (starting at the threshold) and stops at the ignored GTs once it holds a non-ignored one: that is the last
    GT with the highest IoU among the free non-ignored GTs, else among the free ignored GTs.
    """
    num_areas, num_gt = gt_ignore.shape
    num_dt = ious.shape[0]
    num_thresholds = iou_thresholds.size
    shape = (num_areas, num_thresholds, num_dt)
    matched_gt = np.full(shape, -1, dtype=np.intp)
    if num_gt and num_dt:
        thresholds = np.minimum(iou_thresholds, 1 - 1e-10)[:, None]
        taken = np.zeros((num_areas, num_thresholds, num_gt), dtype=bool)
        ignored = gt_ignore[:, None, :]
        for d in range(num_dt):
            row = ious[d]
            free = (row[None, :] >= thresholds)[None] & (gt_reusable | ~taken)
            regular = free & ~ignored
            candidates = np.where(regular.any(axis=-1, keepdims=True), regular, free & ignored)
            found = candidates.any(axis=-1)
            if not found.any():
                continue
            best_from_end = np.argmax(np.where(candidates, row, -1.0)[..., ::-1], axis=-1)
            area_index, threshold_index = np.nonzero(found)
            gt_index = num_gt - 1 - best_from_end[area_index, threshold_index]
            matched_gt[area_index, threshold_index, d] = gt_index
            taken[area_index, threshold_index, gt_index] = True
    matched = matched_gt >= 0
    safe = np.where(matched, matched_gt, 0)
    if num_gt:
        ignored_match = matched & np.take_along_axis(
            np.broadcast_to(gt_ignore[:, None, :], (num_areas, num_thresholds, num_gt)), safe, axis=2
        )
        counted_match = matched & gt_counts[safe]
    else:
        ignored_match = counted_match = np.zeros(shape, dtype=bool)
    dt_ignored = ignored_match | (~counted_match & dt_outside[:, None, :])
    return counted_match & ~dt_ignored, ~counted_match & ~dt_ignored


class VideoAPEvaluator:
    """Scores detections against YouTube-VIS style GT with one protocol (ytvis, lvvis or burst).

    >>> result = VideoAPEvaluator("lvvis").evaluate(gt, detections)   # doctest: +SKIP
    >>> result.stats["AP"], result.blocks[1].stats["AP"]               # AP and APn, as fractions
    """

    def __init__(self, protocol: str | EvaluationProtocol = "ytvis", params: VideoAPParams | None = None) -> None:
        self.protocol = get_protocol(protocol)
        self.params = params or VideoAPParams()
        self._iou_thresholds = np.array(self.params.iou_thresholds, dtype=np.float64)
        self._recall_thresholds = np.array(self.params.recall_thresholds, dtype=np.float64)
        self._area_low = np.array([area.low for area in self.params.area_ranges], dtype=np.float64)
        self._area_high = np.array([area.high for area in self.params.area_ranges], dtype=np.float64)

    # ----------------------------------------------------------------------------------------------- public API
    def evaluate(self, gt: VideoGroundTruth, detections: DetectionSet | Sequence[Detection]) -> VideoAPResult:
        """Match, accumulate and summarise; `detections` must already be validated against `gt`."""
        detection_list = detections.detections if isinstance(detections, DetectionSet) else list(detections)
        warnings = [*gt.warnings, *(detections.warnings if isinstance(detections, DetectionSet) else [])]
        category_ids = gt.category_ids
        category_index = {category_id: k for k, category_id in enumerate(category_ids)}
        gts_by_pair: dict[tuple[int, int], list[GtTrack]] = defaultdict(list)
        for track in gt.tracks:
            if track.video_id in gt.videos and track.category_id in category_index:
                gts_by_pair[track.video_id, track.category_id].append(track)
        dts_by_pair: dict[tuple[int, int], list[Detection]] = defaultdict(list)
        for detection in detection_list:
            if detection.video_id in gt.videos and detection.category_id in category_index:
                dts_by_pair[detection.video_id, detection.category_id].append(detection)
        categories_by_video: dict[int, set[int]] = defaultdict(set)
        for video_id, category_id in (*gts_by_pair, *dts_by_pair):
            categories_by_video[video_id].add(category_id)

        outcomes: list[list[_PairOutcome]] = [[] for _ in category_ids]
        for video_id in sorted(gt.videos):
            video = gt.videos[video_id]
            for category_id in sorted(categories_by_video.get(video_id, ())):
                outcome = self._evaluate_pair(
                    video, gts_by_pair.get((video_id, category_id), []), dts_by_pair.get((video_id, category_id), [])
                )
                outcomes[category_index[category_id]].append(outcome)
        return self._result(gt, outcomes, warnings, len(detection_list))

    def streamed(self, gt: VideoGroundTruth) -> StreamedVideoAP:
        """A scoring of `gt` that takes its detections a batch at a time (`StreamedVideoAP`)."""
        return StreamedVideoAP(self, gt)

    def _result(
        self, gt: VideoGroundTruth, outcomes: list[list[_PairOutcome]], warnings: list[str], num_detections: int
    ) -> VideoAPResult:
        """Accumulate and summarise ``outcomes`` (per category in id order, each its (video, category) pairs')."""
        category_ids = gt.category_ids
        category_index = {category_id: k for k, category_id in enumerate(category_ids)}
        precision, recall = self._accumulate(outcomes)
        blocks, block_warnings = resolve_blocks(self.protocol, gt.categories)
        warnings.extend(block_warnings)
        return VideoAPResult(
            protocol=self.protocol.name,
            params=self.params,
            category_ids=category_ids,
            precision=precision,
            recall=recall,
            stats=summarize(precision, recall, self.params),
            blocks=[self._block_stats(block, precision, recall, category_index) for block in blocks],
            per_category_ap=per_category_ap(precision, category_ids),
            num_videos=len(gt.videos),
            num_detections=num_detections,
            warnings=warnings,
        )

    # ------------------------------------------------------------------------------------------ per (video, cat)
    def _outside(self, avg_areas: np.ndarray) -> np.ndarray:
        """[A, N] True where an average area is outside an area range (bounds inclusive)."""
        return (avg_areas[None, :] < self._area_low[:, None]) | (avg_areas[None, :] > self._area_high[:, None])

    def _evaluate_pair(self, video: GtVideo, gts: list[GtTrack], dts: list[Detection]) -> _PairOutcome:
        order = np.argsort([-detection.score for detection in dts], kind="mergesort")[: self.params.max_dets[-1]]
        dts = [dts[i] for i in order]
        dt_masks = [_track_masks(detection.segmentations, areas=detection.areas) for detection in dts]
        gt_masks = [_track_masks(track.segmentations, video) for track in gts]
        if dts and gts:
            ious = track_ious(dt_masks, gt_masks)
        else:
            ious = np.zeros((len(dts), len(gts)))
        scores = np.array([detection.score for detection in dts], dtype=np.float64)
        return self._match_pair(gts, gt_masks, scores, self._detection_areas(dt_masks), ious)

    def _detection_areas(self, dt_masks: Sequence[_TrackMasks]) -> np.ndarray:
        """[D] the average areas of detections as the protocol takes them (zeros where it takes none)."""
        if self.protocol.zero_avg_area:
            return np.zeros(len(dt_masks))
        return np.array(
            [_mean_of_truthy(masks.areas, self.protocol.truncate_areas) for masks in dt_masks], dtype=np.float64
        )

    def _match_pair(
        self, gts: list[GtTrack], gt_masks: list[_TrackMasks], scores: np.ndarray, dt_avg: np.ndarray, ious: np.ndarray
    ) -> _PairOutcome:
        """Match one (video, category): ``scores`` [D], ``dt_avg`` [D] and ``ious`` [D, G] of its detections in score
        order (at most max_dets[-1]), ``gts`` with their masks."""
        protocol = self.protocol
        if protocol.zero_avg_area:
            gt_avg = np.zeros(len(gts))
        else:
            gt_avg = np.array(
                [
                    _mean_of_truthy(track.areas if track.areas is not None else masks.areas, protocol.truncate_areas)
                    for track, masks in zip(gts, gt_masks, strict=True)
                ],
                dtype=np.float64,
            )
        crowd = np.array([track.iscrowd for track in gts], dtype=bool)
        gt_ignore = self._outside(gt_avg)
        if protocol.crowd_gt_ignored:
            gt_ignore |= crowd[None, :]
        reusable = crowd if protocol.gt_matched_once else np.ones(len(gts), dtype=bool)
        counts = np.array([track.id != 0 for track in gts], dtype=bool)
        true_positive, false_positive = greedy_match(
            ious, gt_ignore, reusable, counts, self._outside(dt_avg), self._iou_thresholds
        )
        return _PairOutcome(
            scores=scores,
            true_positive=true_positive,
            false_positive=false_positive,
            num_regular_gt=(~gt_ignore).sum(axis=1),
        )

    # ----------------------------------------------------------------------------------------------- accumulate
    def _accumulate(self, outcomes: list[list[_PairOutcome]]) -> tuple[np.ndarray, np.ndarray]:
        num_t, num_r = self._iou_thresholds.size, self._recall_thresholds.size
        num_k, num_a, num_m = len(outcomes), len(self.params.area_ranges), len(self.params.max_dets)
        precision = np.full((num_t, num_r, num_k, num_a, num_m), -1.0)
        recall = np.full((num_t, num_k, num_a, num_m), -1.0)
        for k, entries in enumerate(outcomes):
            if not entries:
                continue
            num_regular = np.sum([entry.num_regular_gt for entry in entries], axis=0)
            areas = np.flatnonzero(num_regular > 0)
            if areas.size == 0:
                continue
            scores = np.concatenate([entry.scores for entry in entries])
            ranks = np.concatenate([np.arange(entry.scores.size) for entry in entries])
            true_positive = np.concatenate([entry.true_positive[areas] for entry in entries], axis=2)
            false_positive = np.concatenate([entry.false_positive[areas] for entry in entries], axis=2)
            npig = num_regular[areas].astype(np.float64)[:, None, None]
            for m, max_det in enumerate(self.params.max_dets):
                keep = ranks < max_det
                order = np.argsort(-scores[keep], kind="mergesort")
                tp_sum = np.cumsum(true_positive[..., keep][..., order], axis=2).astype(np.float64)
                fp_sum = np.cumsum(false_positive[..., keep][..., order], axis=2).astype(np.float64)
                num_dets = order.size
                rc = tp_sum / npig
                pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
                if num_dets:
                    recall[:, k, areas, m] = rc[:, :, -1].T
                    pr = np.maximum.accumulate(pr[..., ::-1], axis=2)[..., ::-1]
                else:
                    recall[:, k, areas, m] = 0.0
                for ai, a in enumerate(areas):
                    for t in range(num_t):
                        q = np.zeros(num_r)
                        if num_dets:
                            index = np.searchsorted(rc[ai, t], self._recall_thresholds, side="left")
                            inside = index < num_dets
                            q[inside] = pr[ai, t, index[inside]]
                        precision[t, :, k, a, m] = q
        return precision, recall

    def _block_stats(
        self, block: ResolvedBlock, precision: np.ndarray, recall: np.ndarray, category_index: dict[int, int]
    ) -> BlockStats:
        index = np.array([category_index[category_id] for category_id in block.category_ids], dtype=np.intp)
        return BlockStats(
            name=block.block.name,
            suffix=block.block.suffix,
            category_ids=block.category_ids,
            stats=summarize(precision, recall, self.params, index),
        )


@dataclass
class _PairDetections:
    """What is kept of the detections of one (video, category) as they come, in file order: scores, average areas
    as the protocol takes them, and their IoU rows with the pair's GT tracks (one [n, G] block per batch)."""

    scores: list[float] = field(default_factory=list)
    areas: list[np.ndarray] = field(default_factory=list)
    ious: list[np.ndarray] = field(default_factory=list)


class StreamedVideoAP:
    """`VideoAPEvaluator.evaluate` with the detections given a batch at a time (`add`), in file order: each batch's
    masks give their IoUs with the GT tracks of their (video, category) at once, and only those, their scores and
    average areas are kept, so memory holds one batch of masks, not the file's. The IoU of a detection and a GT
    track depends on those two alone, and matching and accumulation run on them as `evaluate` runs them: `result`
    is `evaluate`'s of the same detections, bit for bit."""

    def __init__(self, evaluator: VideoAPEvaluator, gt: VideoGroundTruth) -> None:
        self.evaluator, self.gt = evaluator, gt
        known = set(gt.category_ids)
        self.gts_by_pair: dict[tuple[int, int], list[GtTrack]] = defaultdict(list)
        for track in gt.tracks:
            if track.video_id in gt.videos and track.category_id in known:
                self.gts_by_pair[track.video_id, track.category_id].append(track)
        self.known = known
        self.pairs: dict[tuple[int, int], _PairDetections] = {}
        # GT tracks' masks prepared once per (video, category), on its first detection (present flags and areas; the
        # RLEs are the GT's own), for every batch and for `result`
        self.gt_masks: dict[tuple[int, int], list[_TrackMasks]] = {}
        self.num_detections = 0

    def add(self, detections: Sequence[Detection]) -> None:
        """Take a batch of detections validated against the GT (`parse_results`' checks, their runs included)."""
        self.num_detections += len(detections)
        batch: dict[tuple[int, int], list[Detection]] = defaultdict(list)
        for detection in detections:
            if detection.video_id in self.gt.videos and detection.category_id in self.known:
                batch[detection.video_id, detection.category_id].append(detection)
        for pair, dts in batch.items():
            kept = self.pairs.setdefault(pair, _PairDetections())
            dt_masks = [_track_masks(detection.segmentations, areas=detection.areas) for detection in dts]
            kept.scores.extend(detection.score for detection in dts)
            kept.areas.append(self.evaluator._detection_areas(dt_masks))
            if self.gts_by_pair.get(pair):
                kept.ious.append(track_ious(dt_masks, self._gt_masks(pair)))

    def _gt_masks(self, pair: tuple[int, int]) -> list[_TrackMasks]:
        masks = self.gt_masks.get(pair)
        if masks is None:
            video = self.gt.videos[pair[0]]
            masks = self.gt_masks[pair] = [_track_masks(track.segmentations, video) for track in self.gts_by_pair[pair]]
        return masks

    def result(self, warnings: list[str]) -> VideoAPResult:
        """Match, accumulate and summarise what `add` was given; ``warnings`` first among the result's."""
        evaluator, gt = self.evaluator, self.gt
        category_ids = gt.category_ids
        category_index = {category_id: k for k, category_id in enumerate(category_ids)}
        categories_by_video: dict[int, set[int]] = defaultdict(set)
        for video_id, category_id in (*self.gts_by_pair, *self.pairs):
            categories_by_video[video_id].add(category_id)
        outcomes: list[list[_PairOutcome]] = [[] for _ in category_ids]
        empty = _PairDetections()
        for video_id in sorted(gt.videos):
            for category_id in sorted(categories_by_video.get(video_id, ())):
                gts = self.gts_by_pair.get((video_id, category_id), [])
                kept = self.pairs.get((video_id, category_id), empty)
                scores = np.array(kept.scores, dtype=np.float64)
                order = np.argsort(-scores, kind="mergesort")[: evaluator.params.max_dets[-1]]
                areas = np.concatenate(kept.areas) if kept.areas else np.zeros(0)
                ious = np.concatenate(kept.ious)[order] if kept.ious else np.zeros((order.size, len(gts)))
                gt_masks = self._gt_masks((video_id, category_id)) if gts else []
                outcome = evaluator._match_pair(gts, gt_masks, scores[order], areas[order], ious)
                outcomes[category_index[category_id]].append(outcome)
        return evaluator._result(gt, outcomes, [*gt.warnings, *warnings], self.num_detections)


def summarize(
    precision: np.ndarray, recall: np.ndarray, params: VideoAPParams, category_index: np.ndarray | None = None
) -> Stats:
    """The 12 summary numbers; each is the mean of the entries > -1 of its slice (None when there are none).

    `category_index` restricts the category axis (a block such as LV-VIS novel).
    """
    labels = [area.label for area in params.area_ranges]
    thresholds = np.array(params.iou_thresholds)
    stats: Stats = {}
    for definition in STAT_DEFINITIONS:
        values = precision if definition.average_precision else recall
        if definition.iou_threshold is not None:
            values = values[np.where(definition.iou_threshold == thresholds)[0]]
        area = labels.index(definition.area)
        values = values[..., area, definition.max_det_index]
        if category_index is not None:
            values = values[..., category_index]
        valid = values[values > -1]
        stats[definition.name] = float(np.mean(valid)) if valid.size else None
    return stats


def per_category_ap(precision: np.ndarray, category_ids: Sequence[int]) -> dict[int, float | None]:
    """AP (area all, max_dets[-1]) of every category; None for a category without GT."""
    out: dict[int, float | None] = {}
    for k, category_id in enumerate(category_ids):
        values = precision[:, :, k, 0, -1]
        valid = values[values > -1]
        out[category_id] = float(np.mean(valid)) if valid.size else None
    return out
