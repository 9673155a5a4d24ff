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


def crop_polygon(crop: rle.MaskCrop, height: int, width: int) -> np.ndarray | None:
    """One polygon `[K, 2]` float (x, y) covering every part and hole (see module docstring) of the H×W mask that
    ``crop`` was cut from (`clipvis.cli.rle.mask_crops`), without that mask decoded whole: traced on the mask's box
    plus a one-pixel margin (the margin keeps the crop's edge background where the frame's is not its edge), made
    from the crop; None when the mask has no outline of at least 3 points."""
    x, y = crop.box[0], crop.box[1]
    pixels = crop.mask
    rows = np.flatnonzero(pixels.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(pixels.any(axis=0))
    # the tight box (COCO's box spans every row where a run crosses a column) in the frame, then the margin
    first_row, last_row = y + int(rows[0]), y + int(rows[-1])
    first_col, last_col = x + int(cols[0]), x + int(cols[-1])
    top, left = max(first_row - 1, 0), max(first_col - 1, 0)
    binary = np.zeros((min(last_row + 2, height) - top, min(last_col + 2, width) - left), np.uint8)
    binary[first_row - top : last_row + 1 - top, first_col - left : last_col + 1 - left] = pixels[
        int(rows[0]) : int(rows[-1]) + 1, int(cols[0]) : int(cols[-1]) + 1]
    return _polygon(binary, top, left)


def _polygon(binary: np.ndarray, top: int, left: int) -> np.ndarray | None:
    """The polygon of a mask's box plus margin ``binary`` (uint8, `[h, w]`), whose corner is (``left``, ``top``)
    in the frame."""
    contours = _outlines(binary, top, left)
    if not contours:
        return None
    contours.sort(key=lambda c: -abs(cv2.contourArea(c.astype(np.float32))))
    ring = contours[0]
    for contour in contours[1:]:
        ring = _bridge(ring, contour)
    return ring


def polygon_iou(points: np.ndarray, segmentation: RleDict, height: int, width: int) -> float:
    """The IoU of polygon ``points`` (rasterised as pycocotools does: even-odd) with a non-empty H×W mask, computed by
    pycocotools on the polygon's RLE and the mask's (the same counts divided as the same doubles), no mask decoded
    or rasterised to pixels."""
    polygon = coco_mask.frPyObjects([np.asarray(points, np.float64).reshape(-1).tolist()], height, width)
    return float(coco_mask.iou(polygon, [rle.compressed(segmentation)], [0])[0][0])


def _outlines(binary: np.ndarray, top: int, left: int) -> list[np.ndarray]:
    """Every outer and hole contour of a mask's box plus margin ``binary`` (uint8; its corner at (``left``, ``top``)
    in the frame), each `[K, 2]` float in frame coordinates, moved to enclose whole pixels.

    Where a part is one pixel thick somewhere (a line, a tail, a lone pixel, pixels touching at a corner), its
    contour through pixel centres runs there and back on itself and encloses nothing; the mask is then traced at
    twice its size, where every part is at least two pixels thick, and the outlines are scaled back: every pixel
    is kept, at the cost of a vertex per step along diagonal edges."""
    # Every boundary pixel (CHAIN_APPROX_NONE) to find a stretch traced out and back: the compressed chain drops the
    # repeated pixels of a straight tail that continues an edge of a thicker part
    every, _ = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    scale = 1
    if _any_runs_over_itself(every):
        scale = 2
        # every pixel doubled each way (nearest neighbour at exactly twice the size: the same image as np.repeat
        # along both axes, ~10x faster)
        binary = cv2.resize(binary, (2 * binary.shape[1], 2 * binary.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    corner = np.array([left * scale, top * scale])
    # fewer than 3 points cannot happen at twice the size: every part is then at least 2 x 2
    kept = [index for index, contour in enumerate(contours) if len(contour) >= 3]
    if not kept:
        return []
    points = [(contours[index].reshape(-1, 2) + corner).astype(np.float64) for index in kept]
    grow = [bool(hierarchy[0][index][3] < 0) for index in kept]  # a part grows, a hole shrinks
    return [outline / scale for outline in _pixel_outlines(points, grow)]


def _any_runs_over_itself(contours: Sequence[np.ndarray]) -> bool:
    """Whether one of OpenCV's contours (pixel centres, `[K, 1, 2]` int) encloses no area somewhere: fewer than 3
    points, or a point visited twice (a one-pixel-thick stretch is traced out and back). All of a mask's contours are
    checked at once: each point a key (contour, y, x) and the keys sorted, a repeated key side by side (a sort per
    contour through ``np.unique`` cost more than the tracing)."""
    if any(len(contour) < 3 for contour in contours):
        return True
    if not contours:
        return False
    points = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    owner = np.repeat(np.arange(len(contours), dtype=np.int64), [len(contour) for contour in contours])
    keys = (owner << 42) | (points[:, 1] << 21) | points[:, 0]  # coordinates < 2**21 (traced images are smaller)
    keys.sort()
    return bool((keys[1:] == keys[:-1]).any())


def _pixel_outlines(outlines: Sequence[np.ndarray], grow: Sequence[bool]) -> list[np.ndarray]:
    """Pixel-centre outlines (each `[K, 2]` float, closed) -> the outlines of the pixels themselves: every vertex
    moves half a pixel (along the bisector of its two edges' normals) away from the foreground: outwards for a part
    (``grow``), into the hole for a hole. The vertices of all a mask's outlines are moved at once (each vertex's
    neighbours taken within its own outline; a call per outline cost more than the tracing), each outline's area
    summed over its own vertices as before, so every coordinate is the same float."""
    sizes = np.fromiter(map(len, outlines), dtype=np.int64, count=len(outlines))
    ends = np.cumsum(sizes)
    starts = ends - sizes
    points = np.concatenate(outlines)
    before = np.arange(-1, len(points) - 1)  # each vertex's previous and next one, around its own outline
    before[starts] = ends - 1
    after = np.arange(1, len(points) + 1)
    after[ends - 1] = starts
    centre = points + 0.5
    previous = points - points[before]
    following = points[after] - points
    normals = _unit_normals(previous) + _unit_normals(following)
    length = np.maximum(np.abs(normals).max(axis=1, keepdims=True), 1e-9)
    offset = normals / length * 0.5
    plus, minus = centre + offset, centre - offset
    # the shoelace terms of every vertex; each outline's area is the sum of its own (the same sum as over it alone)
    plus_terms = plus[:, 0] * plus[after, 1] - plus[after, 0] * plus[:, 1]
    minus_terms = minus[:, 0] * minus[after, 1] - minus[after, 0] * minus[:, 1]
    # Summed all at once (np.add.reduceat, in order) where that cannot decide otherwise than the sum over each
    # outline alone (np.sum, pairwise) did: both are within n * eps * sum |terms| of the exact sum, far below the
    # margin asked for; a closer call is summed again as before
    plus_areas = np.abs(0.5 * np.add.reduceat(plus_terms, starts))
    minus_areas = np.abs(0.5 * np.add.reduceat(minus_terms, starts))
    margin = 1e-9 * (np.add.reduceat(np.abs(plus_terms), starts) + np.add.reduceat(np.abs(minus_terms), starts))
    clear = (np.abs(plus_areas - minus_areas) > margin).tolist()
    plus_larger = (plus_areas >= minus_areas).tolist()
    moved = []
    for k, (start, end, grows) in enumerate(zip(starts.tolist(), ends.tolist(), grow, strict=True)):
        if not clear[k]:
            plus_larger[k] = (abs(0.5 * float(np.sum(plus_terms[start:end])))
                              >= abs(0.5 * float(np.sum(minus_terms[start:end]))))
        larger, smaller = (plus, minus) if plus_larger[k] else (minus, plus)
        moved.append((larger if grows else smaller)[start:end])
    return moved


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
