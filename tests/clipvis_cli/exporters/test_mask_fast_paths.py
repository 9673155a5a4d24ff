"""The vectorised / cropped mask conversions give byte-identical results to straightforward references."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from clipvis.cli.exporters import masks as M

from .conftest import mask_iou, mask_polygon, polygon_mask


def _reference_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """`_outlines` as it was: traced on the whole frame."""
    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    every, _ = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    scale = 1
    if any(_reference_runs_over_itself(contour.reshape(-1, 2)) for contour in every):
        scale = 2
        binary = np.ascontiguousarray(np.repeat(np.repeat(binary, 2, axis=0), 2, axis=1))
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    outlines = []
    for index, contour in enumerate(contours):
        points = contour.reshape(-1, 2).astype(np.float64)
        if len(points) < 3:
            continue
        outlines.append(_reference_pixel_outline(points, grow=hierarchy[0][index][3] < 0) / scale)
    return outlines


def _reference_runs_over_itself(points: np.ndarray) -> bool:
    """`_runs_over_itself` as it was: one contour at a time, through np.unique."""
    return len(points) < 3 or len(np.unique(points, axis=0)) < len(points)


def _reference_pixel_outline(points: np.ndarray, grow: bool) -> np.ndarray:
    """`_pixel_outline` as it was, with np.roll."""
    centre = points + 0.5
    previous = points - np.roll(points, 1, axis=0)
    following = np.roll(points, -1, axis=0) - points
    normals = M._unit_normals(previous) + M._unit_normals(following)
    length = np.maximum(np.abs(normals).max(axis=1, keepdims=True), 1e-9)
    offset = normals / length * 0.5
    plus, minus = centre + offset, centre - offset

    def area(p: np.ndarray) -> float:
        x, y = p[:, 0], p[:, 1]
        return abs(0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)))

    larger, smaller = (plus, minus) if area(plus) >= area(minus) else (minus, plus)
    return larger if grow else smaller


def _reference_bridge(ring: np.ndarray, contour: np.ndarray) -> np.ndarray:
    distances = ((ring[:, None, :] - contour[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(distances.argmin()), distances.shape)
    loop = np.concatenate([contour[j:], contour[: j + 1]])
    return np.concatenate([ring[: i + 1], loop, ring[i:]])


def _reference_polygon(mask: np.ndarray) -> np.ndarray | None:
    contours = _reference_outlines(mask)
    if not contours:
        return None
    contours.sort(key=lambda c: -abs(cv2.contourArea(c.astype(np.float32))))
    ring = contours[0]
    for contour in contours[1:]:
        ring = _reference_bridge(ring, contour)
    return ring


def _random_masks(height: int, width: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Empty, full, one-pixel, edge-touching, blobby with holes, noisy, thin lines."""
    out = [np.zeros((height, width), bool), np.ones((height, width), bool)]
    one = np.zeros((height, width), bool)
    one[rng.integers(height), rng.integers(width)] = True
    out.append(one)
    corner = np.zeros((height, width), bool)
    corner[0, 0] = corner[-1, -1] = corner[0, -1] = True
    out.append(corner)
    for _ in range(6):
        small = rng.random((max(1, height // 8), max(1, width // 8))) > rng.uniform(0.4, 0.8)
        blob = cv2.resize(small.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
        y, x = rng.integers(height), rng.integers(width)
        blob[max(0, y - 3): y + 3, max(0, x - 3): x + 3] = False  # a hole
        out.append(blob)
    out.append(rng.random((height, width)) > 0.97)  # specks
    line = np.zeros((height, width), bool)
    line[rng.integers(height), :] = True
    line[:, rng.integers(width)] = True
    out.append(line)
    return out


@pytest.mark.parametrize("height,width", [(1, 1), (2, 3), (7, 5), (31, 17), (64, 48), (97, 131)])
def test_mask_polygon_matches_whole_frame_reference(height: int, width: int) -> None:
    """Also from the mask's crop (cvat-video cuts a track's masks to their boxes, a block of frames at a time: no
    mask decoded whole), and the polygon's IoU computed on the RLEs as it was on rasterised pixels."""
    from clipvis.cli import rle

    rng = np.random.default_rng(height * 1000 + width)
    masks = _random_masks(height, width, rng)
    crops = rle.mask_crops([rle.encode(mask) for mask in masks], height, width)
    for mask, crop in zip(masks, crops, strict=True):
        got, want = mask_polygon(mask), _reference_polygon(mask)
        cropped = M.crop_polygon(crop, height, width) if crop is not None else None
        if want is None:
            assert got is None and cropped is None
        else:
            assert got is not None and got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == want.tobytes()
            assert cropped is not None and cropped.tobytes() == want.tobytes()
            expected = mask_iou(polygon_mask(want, height, width), mask)
            assert M.polygon_iou(want, rle.encode(mask), height, width) == expected


def test_bridge_matches_reference() -> None:
    """The closest pair from the ring vertices near the contour's box is the whole table's, ties included."""
    rng = np.random.default_rng(0)
    for r, c in [(1, 1), (3, 5), (40, 7), (200, 333), (3000, 20), (5, 900)]:
        for spread in (50, 5, 2000):
            ring = rng.integers(0, spread, (r, 2)).astype(np.float64) / 2 + rng.choice([0.0, 0.5], (r, 2))
            contour = rng.integers(0, spread, (c, 2)).astype(np.float64) / 2
            contour += rng.choice([0.0, spread / 4, -spread / 4], 2)  # inside the ring's span, or off to a side
            if rng.random() < 0.5:  # fractional coordinates, as outlines moved along bisectors have
                ring += rng.random((r, 2)) * 1e-3
                contour -= rng.random((c, 2)) * 1e-3
            assert M._bridge(ring, contour).tobytes() == _reference_bridge(ring, contour).tobytes()
            ring_with_ties = np.concatenate([ring, ring[::-1], contour[:1]])  # the same closest distance many times
            assert M._bridge(ring_with_ties, contour).tobytes() == _reference_bridge(ring_with_ties,
                                                                                     contour).tobytes()


def _reference_id_map(masks: list[np.ndarray], ids: list[int], scores: list[float], dtype) -> np.ndarray:
    """The id map as the exporters made it before `rle_id_map`: each mask decoded, painted lowest score first."""
    result = np.zeros(masks[0].shape, dtype=dtype)
    for i in sorted(range(len(masks)), key=lambda i: (scores[i], -i)):
        result[masks[i]] = ids[i]
    return result


@pytest.mark.parametrize("height,width,tracks,dtype", [(1, 1, 2, np.uint8), (5, 7, 4, np.uint8),
                                                       (31, 17, 20, np.uint16), (97, 131, 60, np.uint8),
                                                       (240, 427, 300, np.uint16), (480, 854, 30, np.uint16)])
def test_rle_id_map_matches_painting_decoded_masks(height: int, width: int, tracks: int, dtype) -> None:
    from clipvis.cli import rle

    rng = np.random.default_rng(height + width + tracks)
    for trial in range(3):
        masks = np.zeros((tracks, height, width), bool)
        for k in range(tracks):
            if k % 4 == 0:  # overlapping rectangles
                y, x = rng.integers(height), rng.integers(width)
                masks[k, y : y + rng.integers(1, height + 1), x : x + rng.integers(1, width + 1)] = True
            elif k % 4 == 1:
                masks[k] = rng.random((height, width)) > 0.7
            elif k % 4 == 2:  # one pixel
                masks[k, rng.integers(height), rng.integers(width)] = True
            # k % 4 == 3: empty
        ids = rng.permutation(np.arange(1, np.iinfo(dtype).max + 1))[:tracks].tolist()
        # ties: few distinct scores
        scores = rng.choice([0.25, 0.5, 0.75, 0.9], tracks).tolist() if trial else rng.random(tracks).tolist()
        segmentations = [rle.encode(m) for m in masks]
        if trial == 2:
            segmentations = [None if k % 3 == 0 else s for k, s in enumerate(segmentations)]
        kept = [k for k, s in enumerate(segmentations) if s is not None]
        want = _reference_id_map([masks[k] for k in kept], [ids[k] for k in kept], [scores[k] for k in kept], dtype)
        got = M.rle_id_map(segmentations, ids, scores, height, width, dtype=dtype)
        assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def _reference_cvat_rle(mask: np.ndarray) -> tuple[list[int], int, int, int, int]:
    """CVAT's mask RLE as cvat-images made it before the crops: the box from the decoded mask's rows and columns."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    crop = mask[top : bottom + 1, left : right + 1].reshape(-1).astype(np.int8)
    changes = np.flatnonzero(np.diff(crop)) + 1
    bounds = np.concatenate(([0], changes, [crop.size]))
    runs = np.diff(bounds).tolist()
    if crop[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs], left, top, right - left + 1, bottom - top + 1


def _reference_fiftyone_object(mask: np.ndarray, height: int, width: int) -> tuple[dict, str]:
    """The bounding box and serialised mask a fiftyone detection had before the crops (decoded mask)."""
    from clipvis.cli.exporters.video_tools import serialize_mask

    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    box = {"top_left": {"x": left / width, "y": top / height},
           "bottom_right": {"x": right / width, "y": bottom / height}}
    return box, serialize_mask(mask[top:bottom, left:right])


def _frame_of_masks(height: int, width: int, tracks: int, rng: np.random.Generator) -> np.ndarray:
    """`tracks` masks of one frame: the `_random_masks` kinds, overlapping rectangles, columns, specks."""
    kinds = _random_masks(height, width, rng)
    masks = np.zeros((tracks, height, width), bool)
    for k in range(tracks):
        if k < len(kinds):
            masks[k] = kinds[k]
        elif k % 3 == 0:  # overlapping rectangles, some across the whole height (runs across columns)
            y, x = rng.integers(height), rng.integers(width)
            masks[k, y : y + rng.integers(1, height + 1), x : x + rng.integers(1, width + 1)] = True
        elif k % 3 == 1:
            masks[k] = rng.random((height, width)) > rng.uniform(0.5, 0.999)
        else:  # one pixel
            masks[k, rng.integers(height), rng.integers(width)] = True
    return masks


@pytest.mark.parametrize("height,width,tracks", [(1, 1, 3), (2, 3, 14), (7, 5, 20), (31, 17, 40), (97, 131, 60),
                                                 (240, 427, 300), (480, 854, 30)])
def test_mask_crops_match_the_decoded_masks(height: int, width: int, tracks: int) -> None:
    """cvat-images' and fiftyone's masks cut to their boxes from the RLEs give what the decoded masks gave."""
    from clipvis.cli import rle
    from clipvis.cli.exporters.masks import cvat_crop_rle
    from clipvis.cli.exporters.video_tools import serialize_mask

    rng = np.random.default_rng(height * 7 + width + tracks)
    masks = _frame_of_masks(height, width, tracks, rng)
    segmentations = [None if k % 5 == 4 else s for k, s in enumerate(rle.encode(m) for m in masks)]
    crops = rle.mask_crops(segmentations, height, width)
    assert len(crops) == tracks
    for k, crop in enumerate(crops):
        if segmentations[k] is None or not masks[k].any():
            assert crop is None
            continue
        assert crop is not None
        assert list(crop.box) == rle.bbox(segmentations[k])  # COCO's toBbox
        decoded = rle.decode(segmentations[k])  # as the writers had it: column-major, as pycocotools decodes
        assert cvat_crop_rle(crop) == _reference_cvat_rle(decoded)
        left, top, w, h = crop.box
        box = {"top_left": {"x": left / width, "y": top / height},
               "bottom_right": {"x": (left + w) / width, "y": (top + h) / height}}
        assert (box, serialize_mask(crop.mask)) == _reference_fiftyone_object(decoded, height, width)


def test_mask_crops_of_no_masks() -> None:
    from clipvis.cli import rle

    assert rle.mask_crops([], 4, 5) == []
    assert rle.mask_crops([None, None], 4, 5) == [None, None]
    assert rle.mask_crops([rle.encode(np.zeros((4, 5), bool))], 4, 5) == [None]


def _reference_id_counts(segmentations, ids, scores, height: int, width: int) -> list[tuple[int, str]]:
    """mots-txt's objects as it wrote them before `rle_id_counts`: the id map made, each id's region encoded."""
    from clipvis.cli import rle

    frame = M.rle_id_map(segmentations, ids, scores, height, width, dtype=np.uint16)
    present = [int(v) for v in np.unique(frame) if v]
    encoded = [rle.encode(m) for m in frame[None] == np.array(present, dtype=np.int64)[:, None, None]]
    return [(object_id, e["counts"]) for object_id, e in zip(present, encoded, strict=True)]


@pytest.mark.parametrize("height,width,tracks", [(1, 1, 3), (2, 3, 14), (7, 5, 20), (31, 17, 40), (97, 131, 60),
                                                 (240, 427, 300), (480, 854, 30)])
def test_rle_id_counts_match_encoding_the_id_map(height: int, width: int, tracks: int) -> None:
    """mots-txt's per-object RLEs made from the painted runs are the strings encoding the id map gave."""
    from clipvis.cli import rle

    rng = np.random.default_rng(height * 3 + width + tracks)
    for trial in range(3):
        masks = _frame_of_masks(height, width, tracks, rng)
        rng.shuffle(masks)  # the empty, full and one-pixel masks anywhere in the ranking
        segmentations: list = [rle.encode(m) for m in masks]
        if trial == 2:
            segmentations = [None if k % 3 == 0 else s for k, s in enumerate(segmentations)]
        ids = rng.permutation(np.arange(1, 65536))[:tracks].tolist()
        scores = rng.choice([0.25, 0.5, 0.9], tracks).tolist() if trial else rng.random(tracks).tolist()  # ties
        kept = [k for k, s in enumerate(segmentations) if s is not None]
        args = ([segmentations[k] for k in kept], [ids[k] for k in kept], [scores[k] for k in kept], height, width)
        assert M.rle_id_counts(*args) == _reference_id_counts(*args)


def test_cvat_points_text_matches_formatting_numpy_rows() -> None:
    """cvat-video's `points` formats Python floats: the text numpy's float64 rows gave, halves and -0 included."""
    from clipvis.cli.exporters.cvat import _points

    rng = np.random.default_rng(3)
    polygon = np.concatenate([
        rng.integers(-4, 5000, (500, 2)) / 2.0,  # the outlines' half pixels
        rng.random((500, 2)) * 4000 - 10,
        np.array([[0.005, 0.015], [0.125, -0.125], [-0.0, 0.0], [1e-9, -1e-9], [2.675, 1.005]]),
    ])
    assert _points(polygon) == ";".join(f"{x:.2f},{y:.2f}" for x, y in polygon)
