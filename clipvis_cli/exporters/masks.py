"""Mask conversions the export formats need: id maps with overlaps resolved by score, CVAT's box RLE, and a
mask's outline as one polygon.

Polygons (CVAT video tracks hold one polygon per object per frame): the outline of every part and every hole is
traced (OpenCV contours through the centres of the boundary pixels, moved half a pixel outwards along the
boundary so the polygon encloses whole pixels), then the parts and holes are joined into ONE ring by zero-width
bridges, each from the ring to the nearest vertex of the next contour and back. Filled with the even-odd rule
(pycocotools, CVAT's and Datumaro's rasteriser) a bridge encloses no area, a hole is left empty and a separate part
is filled, so several parts and holes survive in a single polygon. A mask with a part one pixel thick anywhere is
traced at twice its size (see `_outlines`), so lines and single pixels are kept too.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from numpy.typing import DTypeLike
from pycocotools import mask as coco_mask

from clipvis.cli import rle
from clipvis.cli.rle import RleDict


def rle_id_map(segmentations: Sequence[RleDict | None], ids: Sequence[int], scores: Sequence[float], height: int,
               width: int, dtype: DTypeLike = np.uint16) -> np.ndarray:
    """One H×W id map from N RLEs (None: absent) of an H×W frame, none decoded: where masks overlap, the higher
    score wins (ties: the earlier mask); `ids[i]` is written where mask i wins, 0 is background. They are painted into
    one label image in that order, then labels become ids through a lookup table. Returns `[H, W]` of `dtype`."""
    scores_array = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.lexsort((np.arange(len(segmentations)), -scores_array))  # label j + 1 = segmentations[order[j]]
    painted = rle.label_map([segmentations[k] for k in order.tolist()], height, width)
    table = np.zeros(len(segmentations) + 1, dtype=dtype)
    table[1:] = np.asarray(ids, dtype=np.int64).reshape(-1)[order]
    return table[painted.labels]


def rle_id_counts(segmentations: Sequence[RleDict | None], ids: Sequence[int], scores: Sequence[float], height: int,
                  width: int) -> list[tuple[int, str]]:
    """The COCO compressed RLE ``counts`` of each id's region in `rle_id_map`'s id map (same arguments), as
    ``(id, counts)`` in increasing id order, ids with no pixel left out: byte-identical to encoding
    ``rle_id_map(...) == id`` for every id in it (ids must differ), with no image made (`rle.visible_counts`)."""
    scores_array = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.lexsort((np.arange(len(segmentations)), -scores_array)).tolist()
    counts = rle.visible_counts([segmentations[k] for k in order], height, width)
    return sorted((int(ids[k]), text) for k, text in zip(order, counts, strict=True) if text is not None)


def cvat_crop_rle(crop: rle.MaskCrop) -> tuple[list[int], int, int, int, int]:
    """CVAT XML mask encoding of a mask cut to its bounding box (`clipvis.cli.rle.mask_crops`: the box from the RLE,
    nothing decoded whole): run lengths over the box, read row by row, starting with a (possibly zero) background
    run; and the box's left, top, width, height."""
    flat = crop.mask.reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    left, top, width, height = crop.box
    return runs, left, top, width, height


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """One polygon `[K, 2]` float (x, y) covering every part and hole of an H×W bool mask (see module docstring);
    None when the mask has no outline of at least 3 points."""
    contours = _outlines(mask)
    if not contours:
        return None
    contours.sort(key=lambda c: -abs(cv2.contourArea(c.astype(np.float32))))
    ring = contours[0]
    for contour in contours[1:]:
        ring = _bridge(ring, contour)
    return ring


def polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise a polygon `[K, 2]` (x, y) as pycocotools does (even-odd), to an H×W bool mask."""
    encoded = coco_mask.frPyObjects([np.asarray(points, np.float64).reshape(-1).tolist()], height, width)
    return rle.decode(coco_mask.merge(encoded))  # clipvis.cli.rle.decode: pycocotools' warns with numpy 2


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def _outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Every outer and hole contour of the mask, each `[K, 2]` float, moved to enclose whole pixels.

    Where a part is one pixel thick somewhere (a line, a tail, a lone pixel, pixels touching at a corner), its
    contour through pixel centres runs there and back on itself and encloses nothing; the mask is then traced at
    twice its size, where every part is at least two pixels thick, and the outlines are scaled back: every pixel
    is kept, at the cost of a vertex per step along diagonal edges."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(mask.any(axis=0))
    # Traced on the mask's box plus a one-pixel margin (the same contours, in the same order, moved by the box's
    # corner): the margin keeps the crop's edge background where the frame's is not its edge
    top, left = max(int(rows[0]) - 1, 0), max(int(cols[0]) - 1, 0)
    binary = np.ascontiguousarray(mask[top : int(rows[-1]) + 2, left : int(cols[-1]) + 2], dtype=np.uint8)
    # Every boundary pixel (CHAIN_APPROX_NONE) to find a stretch traced out and back: the compressed chain drops the
    # repeated pixels of a straight tail that continues an edge of a thicker part
    every, _ = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    scale = 1
    if any(_runs_over_itself(contour.reshape(-1, 2)) for contour in every):
        scale = 2
        # every pixel doubled each way (nearest neighbour at exactly twice the size: the same image as np.repeat
        # along both axes, ~10x faster)
        binary = cv2.resize(binary, (2 * binary.shape[1], 2 * binary.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    outlines = []
    corner = np.array([left * scale, top * scale])
    for index, contour in enumerate(contours):
        points = (contour.reshape(-1, 2) + corner).astype(np.float64)
        if len(points) < 3:  # cannot happen at twice the size: every part is then at least 2 x 2
            continue
        is_hole = hierarchy[0][index][3] >= 0
        outlines.append(_pixel_outline(points, grow=not is_hole) / scale)
    return outlines


def _runs_over_itself(points: np.ndarray) -> bool:
    """Whether a contour `[K, 2]` (pixel centres) encloses no area somewhere: fewer than 3 points, or a point
    visited twice (a one-pixel-thick stretch is traced out and back)."""
    return len(points) < 3 or len(np.unique(points, axis=0)) < len(points)


def _pixel_outline(points: np.ndarray, grow: bool) -> np.ndarray:
    """Pixel-centre outline -> the outline of the pixels themselves: every vertex moves half a pixel (along the
    bisector of its two edges' normals) away from the foreground: outwards for a part, into the hole for a hole."""
    centre = points + 0.5
    previous = points - _shifted(points, 1)
    following = _shifted(points, -1) - points
    normals = _unit_normals(previous) + _unit_normals(following)
    length = np.maximum(np.abs(normals).max(axis=1, keepdims=True), 1e-9)
    offset = normals / length * 0.5
    plus, minus = centre + offset, centre - offset
    larger, smaller = (plus, minus) if _area(plus) >= _area(minus) else (minus, plus)
    return larger if grow else smaller


def _area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return abs(0.5 * float(np.sum(x * _shifted(y, -1) - _shifted(x, -1) * y)))


def _shifted(values: np.ndarray, shift: int) -> np.ndarray:
    """``np.roll(values, shift, axis=0)`` for a shift of 1 or -1, without np.roll's general-case overhead (the
    outlines roll thousands of short arrays)."""
    if shift == 1:
        return np.concatenate([values[-1:], values[:-1]])
    return np.concatenate([values[1:], values[:1]])


def _unit_normals(edges: np.ndarray) -> np.ndarray:
    normals = np.stack([edges[:, 1], -edges[:, 0]], axis=1)
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    return normals / np.maximum(norm, 1e-9)


def _bridge(ring: np.ndarray, contour: np.ndarray) -> np.ndarray:
    """Join `contour` into `ring` through the closest vertex pair, out and back along the same segment (the first
    closest pair in ring-then-contour order)."""
    # Only ring vertices that may be that close are measured against every contour vertex: a vertex's squared
    # distance to the contour's bounding box is a lower bound of its distance to any contour vertex (also in floating
    # point: subtraction, squares and sums are monotonic), and the vertex nearest the box gives an upper bound of
    # the closest pair. Every vertex of a closest pair is within that bound, so the pair found (rows kept in order)
    # is the one the whole [R, C] table gives; a mask of many parts no longer costs parts x ring length each.
    rx, ry = ring[:, 0], ring[:, 1]
    dx = np.maximum(np.maximum(contour[:, 0].min() - rx, rx - contour[:, 0].max()), 0.0)
    dy = np.maximum(np.maximum(contour[:, 1].min() - ry, ry - contour[:, 1].max()), 0.0)
    bound = dx**2 + dy**2
    nearest = int(bound.argmin())
    upper = ((ring[nearest, 0] - contour[:, 0]) ** 2 + (ring[nearest, 1] - contour[:, 1]) ** 2).min()
    rows = np.flatnonzero(bound <= upper)
    # (dx² + dy², the same sum as over a [R, C, 2] difference, without that array)
    distances = (ring[rows, None, 0] - contour[None, :, 0]) ** 2 + (ring[rows, None, 1] - contour[None, :, 1]) ** 2
    row, j = np.unravel_index(int(distances.argmin()), distances.shape)
    i = int(rows[row])
    loop = np.concatenate([contour[j:], contour[: j + 1]])
    return np.concatenate([ring[: i + 1], loop, ring[i:]])
