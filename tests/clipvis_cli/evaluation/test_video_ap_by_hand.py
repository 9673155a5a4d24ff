"""Video AP on small cases whose numbers are worked out by hand in the comments."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np
import pytest

from clipvis.cli.evaluation import VideoAPEvaluator, VideoAPResult, parse_ground_truth, parse_results


def approx(value: float) -> object:
    """Reference precision is tp / (tp + fp + eps), so a perfect score is 1 - 2.2e-16: compare to 1e-12."""
    return pytest.approx(value, abs=1e-12)


def score(gt: dict[str, Any], results: list[dict[str, Any]], protocol: str = "ytvis") -> VideoAPResult:
    parsed = parse_ground_truth(gt)
    return VideoAPEvaluator(protocol).evaluate(parsed, parse_results(results, parsed))


def box_mask(height: int, width: int, top: int, left: int, box_height: int, box_width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top : top + box_height, left : left + box_width] = 1
    return mask


def box(top: int, left: int, height: int, width: int, size: int = 10) -> np.ndarray:
    return box_mask(size, size, top, left, height, width)


def two_track_case(vis: ModuleType) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One 10x10 video, 2 frames, category 1, two GT tracks.

    g1 = d1: the same 3x3 box in both frames -> IoU 1.
    g2: frame 0 a 4x5 box (20 px), frame 1 a 2x2 box (4 px). d2: frame 0 the same 4x5 box, frame 1 a disjoint
    2x4 box (8 px). Spatio-temporal IoU = (20 + 0) / (20 + 4 + 8) = 20/32 = 0.625 (the mean of per-frame IoUs
    would be (1 + 0) / 2 = 0.5). The two tracks never overlap each other's detections.
    """
    g1 = [box(6, 0, 3, 3), box(6, 0, 3, 3)]
    g2 = [box(0, 0, 4, 5), box(0, 0, 2, 2)]
    d2 = [box(0, 0, 4, 5), box(6, 6, 2, 4)]
    gt = vis.gt_file([(1, 10, 10, 2)], [1], [vis.gt_track(1, 1, 1, g1), vis.gt_track(2, 1, 1, g2)])
    return gt, [vis.result(1, 1, 0.9, g1), vis.result(1, 1, 0.8, d2)]


def test_two_tracks_known_ap(vis: ModuleType) -> None:
    # IoU thresholds .50 .55 .60: d1 and d2 are both TPs -> precision 1 at every recall point -> AP_t = 1.
    # Thresholds .65 ... .95 (7 of them): d1 TP, d2 FP -> rc = [.5, .5], pr = [1, .5]; the 51 recall points
    # 0.00 ... 0.50 get precision 1, the other 50 get 0 -> AP_t = 51/101.
    # AP = (3 * 1 + 7 * 51/101) / 10 = 660/1010.
    out = score(*two_track_case(vis))
    assert out.stats["AP"] == approx(660 / 1010)
    assert out.stats["AP50"] == approx(1.0)
    assert out.stats["AP75"] == approx(51 / 101)
    # All objects are small (< 128^2): medium/large have no GT -> undefined (the reference's -1).
    assert out.stats["APs"] == approx(out.stats["AP"])
    assert out.stats["APm"] is None and out.stats["APl"] is None
    # Recall: 1 at 3 thresholds, 0.5 at 7 -> 0.65; with 1 detection per (video, category) only d1 -> 0.5.
    assert out.stats["AR100"] == approx(0.65)
    assert out.stats["AR10"] == approx(0.65)
    assert out.stats["AR1"] == approx(0.5)


def test_categories_without_gt_are_excluded_and_without_detections_count_as_zero(vis: ModuleType) -> None:
    gt, results = two_track_case(vis)
    gt["categories"] += [{"id": 2, "name": "no_gt"}]
    results.append(vis.result(1, 2, 0.95, [box(0, 0, 5, 5), box(0, 0, 5, 5)]))  # an FP in a category without GT
    out = score(gt, results)
    assert out.stats["AP"] == approx(660 / 1010)
    assert out.per_category_ap[2] is None
    # A category with GT but no detection has AP 0 and counts: mean(660/1010, 0).
    gt["categories"] += [{"id": 3, "name": "missed"}]
    gt["annotations"].append(vis.gt_track(9, 1, 3, [box(0, 5, 2, 2), None]))
    out = score(gt, results)
    assert out.per_category_ap[3] == approx(0.0)
    assert out.stats["AP"] == approx(330 / 1010)


def test_empty_mask_is_the_same_as_absent(vis: ModuleType) -> None:
    # A truthy all-zero RLE adds area 0 everywhere, exactly like an absent (null) frame, on both sides.
    gt, results = two_track_case(vis)
    baseline = score(gt, results)
    empty = np.zeros((10, 10), dtype=np.uint8)
    # Top-scoring detection of g2's frame 0 only: IoU 20 / (20 + 4) with frame 1 absent or empty.
    results.append(vis.result(1, 1, 0.95, [box(0, 0, 4, 5), None]))
    gt["annotations"].append(vis.gt_track(7, 1, 1, [box(5, 5, 1, 1), None]))
    with_none = score(gt, results)
    results[-1]["segmentations"][1] = vis.compressed_rle(empty)
    gt["annotations"][-1] = vis.gt_track(7, 1, 1, [box(5, 5, 1, 1), empty])
    with_empty = score(gt, results)
    np.testing.assert_array_equal(with_none.precision, with_empty.precision)
    np.testing.assert_array_equal(with_none.recall, with_empty.recall)
    assert with_none.stats == with_empty.stats
    assert with_none.stats["AP"] != approx(baseline.stats["AP"])  # the new objects do change the score


def test_average_area_is_over_present_frames_and_from_the_gt_areas_field(vis: ModuleType) -> None:
    # GT areas field [None, 10000, 25600, None] -> avg 17800 = medium (the all-frame mean 8900 would be small).
    # The detection: a 99x100 box (9900 px) then a 122x183 box (22326 px) -> avg 16113 (small by itself).
    # IoU with the GT = (9900 + 122*160) / (10000 + 22326 + 25600 - 122*160) = 29420/38406 = 0.766 -> TP for
    # thresholds .50-.75 (6 of 10). In "medium" it is a TP (a matched detection is never ignored for its own
    # size): APm = 0.6. In "small" the GT is ignored and no GT is left -> APs undefined.
    size = 200
    g = [None, box_mask(size, size, 0, 0, 100, 100), box_mask(size, size, 0, 0, 160, 160), None]
    d = [None, box_mask(size, size, 0, 0, 99, 100), box_mask(size, size, 0, 0, 122, 183), None]
    gt = vis.gt_file([(1, size, size, 4)], [1], [vis.gt_track(1, 1, 1, g, areas=[None, 10000, 25600, None])])
    out = score(gt, [vis.result(1, 1, 0.7, d)])
    assert out.stats["APm"] == approx(0.6)
    assert out.stats["APs"] is None
    assert out.stats["AP"] == approx(0.6)


@pytest.mark.parametrize("protocol", ["ytvis", "lvvis"])
def test_area_exactly_128_squared_is_small_and_medium(protocol: str, vis: ModuleType) -> None:
    mask = box_mask(200, 200, 10, 10, 128, 128)  # 16384 px
    gt = vis.gt_file([(1, 200, 200, 1)], [1], [vis.gt_track(1, 1, 1, [mask])])
    out = score(gt, [vis.result(1, 1, 0.9, [mask])], protocol)
    assert out.stats["APs"] == approx(1.0) and out.stats["APm"] == approx(1.0) and out.stats["APl"] is None


def test_lvvis_truncates_float_areas_before_the_mean(vis: ModuleType) -> None:
    # areas [16384.9] -> ytvis avg 16384.9 (medium only), lvvis int() -> 16384 (small and medium).
    mask = box_mask(200, 200, 0, 0, 128, 128)
    gt = vis.gt_file(
        [(1, 200, 200, 1)], [{"id": 1, "name": "a", "partition": 0}], [vis.gt_track(1, 1, 1, [mask], areas=[16384.9])]
    )
    results = [vis.result(1, 1, 0.9, [mask])]
    assert score(gt, results, "ytvis").stats["APs"] is None
    assert score(gt, results, "lvvis").stats["APs"] == approx(1.0)


def test_frames_past_the_shorter_track_are_ignored(vis: ModuleType) -> None:
    # zip semantics: the GT lists 1 frame, the video (and detection) 2. Frame 1 of the detection is ignored,
    # so the IoU is 1 and AP is 1 (if frame 1 counted, IoU = 9 / (9 + 100) and AP would be 0).
    g = [box(0, 0, 3, 3)]
    gt = vis.gt_file([(1, 10, 10, 2)], [1], [vis.gt_track(1, 1, 1, g)])
    out = score(gt, [vis.result(1, 1, 0.9, [box(0, 0, 3, 3), box(0, 0, 10, 10)])])
    assert out.stats["AP"] == approx(1.0)


def test_score_ties_follow_video_id_order_not_file_order(vis: ModuleType) -> None:
    # Video 1: GT + a perfect detection. Video 2: GT + a disjoint detection. Same score 0.5; the FP comes first
    # in the file. Reference order (video id, then file order): [TP, FP] -> rc [.5, .5], pr [1, .5] ->
    # 51 recall points at precision 1 -> AP = 51/101. (File order [FP, TP] would give 25.5/101.)
    a, b = box(0, 0, 4, 4), box(6, 6, 4, 4)
    gt = vis.gt_file([(2, 10, 10, 1), (1, 10, 10, 1)], [1], [vis.gt_track(1, 1, 1, [a]), vis.gt_track(2, 2, 1, [a])])
    out = score(gt, [vis.result(2, 1, 0.5, [b]), vis.result(1, 1, 0.5, [a])])
    assert out.stats["AP"] == approx(51 / 101)


@pytest.mark.parametrize(("fp_first", "expected"), [(True, 0.5), (False, 1.0)])
def test_score_ties_inside_a_video_follow_file_order(fp_first: bool, expected: float, vis: ModuleType) -> None:
    # One GT. [FP, TP]: rc [0, 1], pr [0, .5] -> envelope .5 everywhere -> AP .5. [TP, FP]: pr [1, .5] -> AP 1.
    a, b = box(0, 0, 4, 4), box(6, 6, 4, 4)
    gt = vis.gt_file([(1, 10, 10, 1)], [1], [vis.gt_track(1, 1, 1, [a])])
    fp, tp = vis.result(1, 1, 0.5, [b]), vis.result(1, 1, 0.5, [a])
    out = score(gt, [fp, tp] if fp_first else [tp, fp])
    assert out.stats["AP"] == approx(expected)


@pytest.mark.parametrize(("num_fp_above", "expected_ap"), [(99, 0.01), (100, 0.0)])
def test_at_most_100_detections_per_video_and_category(num_fp_above: int, expected_ap: float, vis: ModuleType) -> None:
    # The TP ranks num_fp_above + 1. At rank 100 it counts: rc reaches 1 with precision 1/100 at every recall
    # point -> AP 0.01. At rank 101 it is cut off -> AP 0, AR100 0.
    a = box(0, 0, 4, 4)
    gt = vis.gt_file([(1, 10, 10, 1)], [1], [vis.gt_track(1, 1, 1, [a])])
    results = [vis.result(1, 1, 0.9 - i * 1e-4, [box(6, 6, 2, 2)]) for i in range(num_fp_above)]
    results.append(vis.result(1, 1, 0.1, [a]))
    out = score(gt, results)
    assert out.stats["AP"] == approx(expected_ap)
    assert out.stats["AR100"] == approx(1.0 if expected_ap else 0.0)


def test_max_dets_counts_per_video_and_category(vis: ModuleType) -> None:
    # Two categories in one video, each with one GT found by its top-scoring detection: AR1 = 1 (a per-video
    # limit of 1 would give 0.5).
    a, b = box(0, 0, 4, 4), box(6, 6, 4, 4)
    gt = vis.gt_file([(1, 10, 10, 1)], [1, 2], [vis.gt_track(1, 1, 1, [a]), vis.gt_track(2, 1, 2, [b])])
    out = score(gt, [vis.result(1, 1, 0.9, [a]), vis.result(1, 2, 0.8, [b])])
    assert out.stats["AR1"] == approx(1.0)


def test_gt_with_id_zero_never_gives_a_true_positive(vis: ModuleType) -> None:
    a = box(0, 0, 4, 4)
    for track_id, expected in ((5, 1.0), (0, 0.0)):
        gt = vis.gt_file([(1, 10, 10, 1)], [1], [vis.gt_track(track_id, 1, 1, [a])])
        assert score(gt, [vis.result(1, 1, 0.9, [a])]).stats["AP"] == approx(expected)


def test_crowd_gt_ignored_by_ytvis_but_not_by_lvvis(vis: ModuleType) -> None:
    a = box(0, 0, 4, 4)
    gt = vis.gt_file(
        [(1, 10, 10, 1)], [{"id": 1, "name": "a", "partition": 0}], [vis.gt_track(1, 1, 1, [a], iscrowd=1)]
    )
    results = [vis.result(1, 1, 0.9, [a])]
    assert score(gt, results, "ytvis").stats["AP"] is None  # the only GT is ignored: category has no GT
    assert score(gt, results, "lvvis").stats["AP"] == approx(1.0)


def test_burst_protocol_quirks(vis: ModuleType) -> None:
    # CLIP-VIS bursteval: avg area 0 for everything (all "small"; medium/large undefined) and a GT can be matched
    # by any number of detections: two copies of a perfect detection are both TPs -> recall 2 (ytvis: 1).
    a = box(0, 0, 8, 8)
    gt = vis.gt_file([(1, 10, 10, 1)], [1], [vis.gt_track(1, 1, 1, [a])])
    results = [vis.result(1, 1, 0.9, [a]), vis.result(1, 1, 0.8, [a])]
    burst = score(gt, results, "burst")
    ytvis = score(gt, results, "ytvis")
    assert burst.stats["AP"] == approx(1.0) and burst.stats["APs"] == approx(1.0)
    assert burst.stats["APm"] is None and burst.stats["APl"] is None
    assert burst.stats["AR100"] == 2.0
    assert ytvis.stats["AR100"] == approx(1.0)
