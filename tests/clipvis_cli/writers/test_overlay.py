"""The overlay's label anchors, found for all labels in one pass, are those of the per-track loop they replace."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from clipvis.cli import rle
from clipvis.cli.writers import overlay as O


def _centroid(region: np.ndarray) -> tuple[float, float]:
    """(row, column) of the centroid of ``region`` (bool, not empty): the old per-label computation."""
    moments = cv2.moments(region.view(np.uint8), binaryImage=True)
    return moments["m01"] / moments["m00"], moments["m10"] / moments["m00"]


def _peak(values: np.ndarray, centre: tuple[float, float]) -> tuple[int, int]:
    """(row, column), of the pixels at least DEEP_SHARE of the largest value, of the one nearest ``centre`` (the
    first in raster order of equally near ones): the old per-label pick."""
    rows, columns = np.nonzero(values >= O.DEEP_SHARE * values.max())
    nearest = np.argmin((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2)
    return int(rows[nearest]), int(columns[nearest])


def _reference_anchors(labels: np.ndarray, boxes: np.ndarray, numbers: np.ndarray) -> dict[int, tuple[int, int]]:
    """`_label_anchors` as it was: each label within its box."""
    height, width = labels.shape
    step = max(1, math.isqrt(height * width // O.ANCHOR_PIXELS))
    offset = step // 2
    small = np.ascontiguousarray(labels[offset::step, offset::step])
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.bitwise_and(cv2.compare(cv2.dilate(small, kernel), cv2.erode(small, kernel), cv2.CMP_EQ),
                            cv2.compare(small, 0, cv2.CMP_GT))
    distance = O._distance_inside(inner)
    anchors: dict[int, tuple[int, int]] = {}
    for number in numbers.tolist():
        x, y, w, h = (int(v) for v in boxes[number - 1])
        r0, r1 = max(0, -((offset - y) // step)), -((offset - y - h) // step)
        c0, c1 = max(0, -((offset - x) // step)), -((offset - x - w) // step)
        region = small[r0:r1, c0:c1] == number
        if region.any():
            i, j = _peak(np.where(region, distance[r0:r1, c0:c1], -1), _centroid(region))
            anchors[number] = (offset + step * (c0 + j), offset + step * (r0 + i))
        else:
            region = labels[y : y + h, x : x + w] == number
            i, j = _peak(np.where(region, O._distance_inside(region.view(np.uint8)), -1), _centroid(region))
            anchors[number] = (x + j, y + i)
    return anchors


def _random_masks(height: int, width: int, tracks: int, rng: np.random.Generator) -> np.ndarray:
    """Overlapping rectangles and blobs, one-pixel masks, thin lines and a few empty masks."""
    masks = np.zeros((tracks, height, width), bool)
    for k in range(tracks):
        kind = k % 5
        if kind == 0:  # a rectangle, often overlapping others
            y0, x0 = rng.integers(height), rng.integers(width)
            masks[k, y0 : y0 + rng.integers(1, height + 1), x0 : x0 + rng.integers(1, width + 1)] = True
        elif kind == 1:  # a blob
            small = rng.random((max(1, height // 16), max(1, width // 16))) > 0.6
            masks[k] = cv2.resize(small.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
        elif kind == 2:  # one pixel
            masks[k, rng.integers(height), rng.integers(width)] = True
        elif kind == 3:  # a one-pixel line
            masks[k, rng.integers(height), rng.integers(width // 2): rng.integers(width // 2, width) + 1] = True
        # kind 4: empty
    return masks


@pytest.mark.parametrize("height,width,tracks", [(1, 1, 3), (5, 7, 6), (31, 17, 12), (97, 131, 40), (241, 403, 30),
                                                 (480, 854, 60), (333, 1001, 300), (720, 1280, 25)])
def test_label_anchors_match_the_per_track_loop(height: int, width: int, tracks: int) -> None:
    rng = np.random.default_rng(height * 7 + width + tracks)
    for _ in range(3):
        masks = _random_masks(height, width, tracks, rng)
        painted = rle.label_map([rle.encode(m) if m.any() else None for m in masks], height, width)
        shown = np.flatnonzero(painted.visible) + 1
        got = O._label_anchors(painted.labels, painted.boxes, shown)
        want = _reference_anchors(painted.labels, painted.boxes, shown)
        assert list(got.items()) == list(want.items())
        assert all(type(v) is int for anchor in got.values() for v in anchor)


def test_label_anchors_of_nothing() -> None:
    painted = rle.label_map([None, None], 20, 30)
    assert O._label_anchors(painted.labels, painted.boxes, np.flatnonzero(painted.visible) + 1) == {}


@pytest.mark.parametrize("height,width,tracks", [(1, 1, 2), (6, 9, 5), (37, 23, 15), (120, 161, 40), (480, 854, 50)])
def test_full_size_anchor_matches_measuring_the_whole_box(height: int, width: int, tracks: int) -> None:
    """The thin labels' anchor, measured on the label's own box plus a margin, is the one measured on the mask's box
    (labels in part covered by others, touching the box's and the frame's edges, one pixel, lines, specks)."""
    rng = np.random.default_rng(height + width * 3 + tracks)
    checked = 0
    for _ in range(3):
        masks = _random_masks(height, width, tracks, rng)
        masks[1::7] |= rng.random((len(masks[1::7]), height, width)) > 0.995  # specks far from the rest
        painted = rle.label_map([rle.encode(m) if m.any() else None for m in masks], height, width)
        for number in (np.flatnonzero(painted.visible) + 1).tolist():
            x, y, w, h = (int(v) for v in painted.boxes[number - 1])
            region = painted.labels[y : y + h, x : x + w] == number
            i, j = _peak(np.where(region, O._distance_inside(region.view(np.uint8)), -1), _centroid(region))
            assert O._full_size_anchor(painted.labels, painted.boxes[number - 1], number) == (x + j, y + i)
            checked += 1
    assert checked > 0


def _old_full_size_anchor(labels: np.ndarray, box: np.ndarray, number: int) -> tuple[int, int]:
    """`_full_size_anchor` as it was (numpy's ==, any() and flatnonzero to find the label's own box)."""
    x, y, w, h = (int(v) for v in box)
    inside = labels[y : y + h, x : x + w] == number
    rows, columns = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    top, left = max(int(rows[0]) - 1, 0), max(int(columns[0]) - 1, 0)
    region = np.ascontiguousarray(inside[top : int(rows[-1]) + 2, left : int(columns[-1]) + 2])
    values = np.where(region, O._distance_inside(region.view(np.uint8)), -1)
    moments = cv2.moments(region.view(np.uint8), binaryImage=True)
    area = int(moments["m00"])
    centre_row = (int(moments["m01"]) + top * area) / area
    centre_column = (int(moments["m10"]) + left * area) / area
    deep_rows, deep_columns = np.nonzero(values >= O.DEEP_SHARE * values.max())
    deep_rows, deep_columns = deep_rows + top, deep_columns + left
    nearest = np.argmin((deep_rows - centre_row) ** 2 + (deep_columns - centre_column) ** 2)
    return x + int(deep_columns[nearest]), y + int(deep_rows[nearest])


@pytest.mark.parametrize("height,width,tracks", [(1, 1, 2), (9, 6, 7), (64, 48, 30), (480, 854, 50), (90, 160, 300)])
def test_full_size_anchor_is_the_one_it_was(height: int, width: int, tracks: int) -> None:
    """The label's own box found with OpenCV (compare, boundingRect) and its deep pixels picked from the distances
    directly give the anchors the numpy version gave: the overlay's labels stay where they were (uint8 labels, and
    uint16 ones from 255 masks on)."""
    rng = np.random.default_rng(height * 7 + width + tracks)
    masks = _random_masks(height, width, tracks, rng)
    masks[1::7] |= rng.random((len(masks[1::7]), height, width)) > 0.995
    painted = rle.label_map([rle.encode(m) if m.any() else None for m in masks], height, width)
    numbers = (np.flatnonzero(painted.visible) + 1).tolist()
    assert numbers
    for number in numbers:
        box = painted.boxes[number - 1]
        assert O._full_size_anchor(painted.labels, box, number) == _old_full_size_anchor(painted.labels, box, number)
