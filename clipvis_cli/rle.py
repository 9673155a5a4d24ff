"""COCO run-length encoding helpers (thin, typed wrappers around pycocotools.mask).

Compressed RLE dicts here always carry `counts` as an ASCII `str` (JSON-ready), `size` as `[height, width]`.
pycocotools wants Fortran-ordered uint8 arrays; the conversion is done here so callers pass ordinary C-ordered
bool/uint8 masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

import cv2
import numpy as np
from pycocotools import mask as coco_mask


class RleDict(TypedDict):
    """A COCO run-length-encoded mask, the one mask type of writers, evaluation and the mask store.

    `size` is `[height, width]`; `counts` is the compressed ASCII string (what clipvis writes), or a list of run
    lengths (uncompressed RLE, as ground-truth files often carry).
    """

    size: list[int]
    counts: str | list[int]



def _to_json_rle(rle: dict) -> RleDict:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def _to_coco_rle(rle: RleDict) -> dict:
    """pycocotools accepts str counts for decode/area/bbox; list counts (uncompressed RLE) are converted."""
    if isinstance(rle["counts"], list):
        height, width = rle["size"]
        return coco_mask.frPyObjects(rle, height, width)
    return rle


def _as_binary_uint8(mask: np.ndarray) -> np.ndarray:
    binary = mask if mask.dtype == bool else mask != 0
    return np.ascontiguousarray(binary).view(np.uint8)


def encode(mask: np.ndarray) -> RleDict:
    """Encode one H×W mask (bool, or integer where non-zero is foreground) to a compressed RLE dict."""
    if mask.ndim != 2:
        raise ValueError(f"encode expects an H×W mask, got shape {mask.shape}")
    # The column-major copy pycocotools needs, made with cv2.transpose (~3x faster than numpy's copy).
    fortran = cv2.transpose(_as_binary_uint8(mask)).T
    return _to_json_rle(coco_mask.encode(fortran))


def encode_many(masks: np.ndarray) -> list[RleDict]:
    """Encode N×H×W masks to N compressed RLE dicts (one pycocotools call)."""
    if masks.ndim != 3:
        raise ValueError(f"encode_many expects an N×H×W array, got shape {masks.shape}")
    count, height, width = masks.shape
    if count == 0:
        return []
    # An N×W×H C-ordered stack of transposed masks is the H×W×N Fortran-ordered array pycocotools wants.
    stacked = np.empty((count, width, height), np.uint8)
    for index in range(count):
        cv2.transpose(_as_binary_uint8(masks[index]), dst=stacked[index])
    return [_to_json_rle(rle) for rle in coco_mask.encode(stacked.transpose(2, 1, 0))]


def decode(rle: RleDict) -> np.ndarray:
    """Decode one RLE dict (compressed or uncompressed counts) to an H×W bool mask."""
    return coco_mask.decode(_to_coco_rle(rle)).astype(bool)


def area(rle: RleDict) -> int:
    """Number of foreground pixels."""
    return int(coco_mask.area(_to_coco_rle(rle)))


def bbox(rle: RleDict) -> list[float]:
    """Bounding box [x, y, width, height] in pixels (all zeros for an empty mask)."""
    return [float(v) for v in coco_mask.toBbox(_to_coco_rle(rle))]


# pycocotools' area() of a list stores the list length in a uint8 (numpy 2 raises past 255): call it in chunks.
_AREA_CHUNK = 255


def coco_areas(rle_objects: Sequence[dict]) -> np.ndarray:
    """pycocotools ``area`` of any number of pycocotools RLE objects, as int64."""
    chunks = [
        np.asarray(coco_mask.area(list(rle_objects[i : i + _AREA_CHUNK])), dtype=np.int64)
        for i in range(0, len(rle_objects), _AREA_CHUNK)
    ]
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)


def areas(rles: Sequence[RleDict]) -> list[int]:
    """Areas of many RLEs (any number)."""
    return [int(v) for v in coco_areas([_to_coco_rle(r) for r in rles])]


def bboxes(rles: Sequence[RleDict]) -> list[list[float]]:
    """Bounding boxes [x, y, w, h] of many RLEs in one call."""
    if not rles:
        return []
    return [[float(v) for v in row] for row in coco_mask.toBbox([_to_coco_rle(r) for r in rles])]
