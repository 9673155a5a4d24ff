"""The vectorised evaluator against a slow literal transcription of the reference evaluators on random data.

Random cases (see `vis_gt_builders.random_case`) mix score ties, crowd GTs, a GT with id 0, absent and empty frames,
GT tracks shorter/longer than the video, float and inconsistent GT `areas`, a GT frame of the wrong size, unknown
categories and unsorted video ids. Area ranges and max_dets are shrunk so that every bucket and the per-(video,
category) truncation are exercised on tiny masks; one run uses the default parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from clipvis.cli.evaluation import (
    AreaRange,
    VideoAPEvaluator,
    VideoAPParams,
    parse_ground_truth,
    parse_results,
)

SMALL_AREAS = (("all", 0.0, 1e10), ("small", 0.0, 30.0), ("medium", 30.0, 60.0), ("large", 60.0, 1e10))
SMALL_MAX_DETS = (1, 2, 4)
SEEDS = range(40)


def check_case(
    gt_dict: dict, results: list, protocol: str, reference: Callable, areas: tuple, max_dets: tuple
) -> dict[str, float]:
    expected_precision, expected_recall, expected_stats = reference(gt_dict, results, protocol, areas, max_dets)
    params = VideoAPParams(area_ranges=tuple(AreaRange(*area) for area in areas), max_dets=max_dets)
    gt = parse_ground_truth(gt_dict)
    out = VideoAPEvaluator(protocol, params).evaluate(gt, parse_results(results, gt))
    np.testing.assert_allclose(out.precision, expected_precision, rtol=0, atol=1e-9)
    np.testing.assert_allclose(out.recall, expected_recall, rtol=0, atol=1e-9)
    ours = dict(out.stats)
    for block in out.blocks:
        ours.update(block.named_stats())
    for name, value in expected_stats.items():
        got = -1.0 if ours.get(name) is None else ours[name]
        assert got == pytest.approx(value, abs=1e-9), f"{name}: {got} != {value}"
    return ours


@pytest.mark.parametrize("protocol", ["ytvis", "lvvis", "burst"])
def test_matches_literal_reference_on_random_cases(
    protocol: str, vis: ModuleType, reference_evaluate: Callable
) -> None:
    defined = 0
    for seed in SEEDS:
        gt_dict, results = vis.random_case(seed, protocol)
        stats = check_case(gt_dict, results, protocol, reference_evaluate, SMALL_AREAS, SMALL_MAX_DETS)
        defined += sum(value is not None and value > 0 for value in stats.values())
    assert defined > len(SEEDS)  # the cases are not degenerate: many non-zero numbers were compared


def test_matches_literal_reference_with_default_parameters(vis: ModuleType, reference_evaluate: Callable) -> None:
    default_areas = tuple((area.label, area.low, area.high) for area in VideoAPParams().area_ranges)
    for seed in range(100, 110):
        gt_dict, results = vis.random_case(seed, "lvvis")
        check_case(gt_dict, results, "lvvis", reference_evaluate, default_areas, (1, 10, 100))


def test_default_parameters_are_the_reference_ones() -> None:
    params = VideoAPParams()
    assert params.iou_thresholds == tuple(np.linspace(0.5, 0.95, 10))
    assert len(params.recall_thresholds) == 101 and params.recall_thresholds[-1] == 1.0
    assert params.max_dets == (1, 10, 100)
    assert [(a.label, a.low, a.high) for a in params.area_ranges] == [
        ("all", 0.0, 1e10),
        ("small", 0.0, 16384.0),
        ("medium", 16384.0, 65536.0),
        ("large", 65536.0, 1e10),
    ]
