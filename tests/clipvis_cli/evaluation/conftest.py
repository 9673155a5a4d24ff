"""Shared helpers for the evaluation tests, handed to tests as fixtures.

Tests run with `--import-mode=importlib`, so sibling helper modules are loaded here by path:
`vis` = GT/results builders (`vis_gt_builders.py`), `reference_evaluate` = the slow literal transcription of
the reference evaluators (`video_ap_oracle.py`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"clipvis_evaluation_tests_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_BUILDERS = _load("vis_gt_builders")
_ORACLE = _load("video_ap_oracle")


@pytest.fixture
def vis() -> ModuleType:
    """Builders: box_mask, uncompressed_rle, compressed_rle, gt_track, result, gt_file, random_case."""
    return _BUILDERS


@pytest.fixture
def reference_evaluate() -> Callable:
    """(gt, results, protocol, area_ranges, max_dets) -> (precision, recall, stats) by literal loops."""
    return _ORACLE.reference_evaluate
