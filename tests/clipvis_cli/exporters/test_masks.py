"""`clipvis.cli.exporters.masks`: the CVAT box RLE, polygons (holes, parts, one-pixel-thick parts) and the id map
(overlap to the higher score) from Python (the export command's tests: commands/test_export.py)."""

from __future__ import annotations

import numpy as np

from clipvis.cli import rle
from clipvis.cli.exporters.masks import cvat_crop_rle, rle_id_map

from .conftest import decode_cvat_rle, mask_iou, mask_polygon, polygon_mask


def test_cvat_rle_is_row_major_over_the_box_starting_with_background() -> None:
    mask = np.zeros((6, 8), bool)
    mask[2, 3:5] = True
    mask[3, 4] = True
    [crop] = rle.mask_crops([rle.encode(mask)], 6, 8)
    runs, left, top, width, height = cvat_crop_rle(crop)
    assert (left, top, width, height) == (3, 2, 2, 2)
    assert runs == [0, 2, 1, 1]  # box rows: [1 1], [0 1]
    assert np.array_equal(decode_cvat_rle(runs, left, top, width, height, 6, 8), mask)
    random = np.random.default_rng(0).random((30, 40)) > 0.6
    [crop] = rle.mask_crops([rle.encode(random)], 30, 40)
    assert np.array_equal(decode_cvat_rle(*cvat_crop_rle(crop), 30, 40), random)


def test_polygon_keeps_holes_and_parts() -> None:
    mask = np.zeros((40, 60), bool)
    mask[5:25, 5:30] = True
    mask[10:15, 10:20] = False  # a hole
    mask[30:38, 40:55] = True  # a second part
    polygon = mask_polygon(mask)
    assert mask_iou(polygon_mask(polygon, 40, 60), mask) == 1.0
    yy, xx = np.mgrid[:120, :160]
    ellipse = ((yy - 60) / 41.0) ** 2 + ((xx - 70) / 57.0) ** 2 <= 1
    assert mask_iou(polygon_mask(mask_polygon(ellipse), 120, 160), ellipse) > 0.995


def test_polygon_keeps_parts_one_pixel_thick() -> None:
    """Lines, tails, lone pixels and pixels touching at a corner trace out and back through pixel centres; they
    must still be covered exactly (CVAT would otherwise lose whole thin objects)."""
    shapes = {}
    shapes["line"] = np.zeros((30, 40), bool)
    shapes["line"][12, 3:35] = True
    shapes["pixel"] = np.zeros((30, 40), bool)
    shapes["pixel"][0, 39] = True
    shapes["tail"] = np.zeros((30, 40), bool)
    shapes["tail"][5:15, 5:15] = True
    shapes["tail"][10, 15:30] = True
    shapes["diagonal"] = np.eye(30, 40, dtype=bool)
    shapes["ring"] = np.zeros((30, 40), bool)
    shapes["ring"][4:20, 4:20] = True
    shapes["ring"][5:19, 5:19] = False
    shapes["random"] = np.random.default_rng(3).random((30, 40)) > 0.7
    shapes["edge tail"] = np.zeros((30, 40), bool)  # a tail continuing the top edge of a block: lost 5 pixels
    shapes["edge tail"][5:9, 5:9] = True
    shapes["edge tail"][5, 9:19] = True
    shapes["edge strip"] = np.zeros((30, 40), bool)  # a 1-px strip along a 2-px part
    shapes["edge strip"][10:12, 5:25] = True
    shapes["edge strip"][12, 5:15] = True
    for name, mask in shapes.items():
        polygon = mask_polygon(mask)
        assert polygon is not None, name
        assert mask_iou(polygon_mask(polygon, 30, 40), mask) == 1.0, name


def test_id_map_overlap_goes_to_the_higher_score() -> None:
    a = np.zeros((4, 4), bool)
    a[:, :3] = True
    b = np.zeros((4, 4), bool)
    b[:, 1:] = True
    low_first = rle_id_map([rle.encode(a), rle.encode(b)], [1, 2], [0.2, 0.8], 4, 4)
    assert (low_first[:, 0] == 1).all() and (low_first[:, 1:] == 2).all()
    high_first = rle_id_map([rle.encode(a), rle.encode(b)], [1, 2], [0.8, 0.2], 4, 4)
    assert (high_first[:, :3] == 1).all() and (high_first[:, 3] == 2).all()
