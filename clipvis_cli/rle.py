"""COCO run-length encoding helpers (thin, typed wrappers around pycocotools.mask).

Compressed RLE dicts here always carry `counts` as an ASCII `str` (JSON-ready), `size` as `[height, width]`.
pycocotools wants Fortran-ordered uint8 arrays; the conversion is done here so callers pass ordinary C-ordered
bool/uint8 masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass
class CompressedRuns:
    """COCO compressed RLE strings of several masks of one size, stored back to back in one ASCII buffer.

    Mask ``q``'s ``counts`` string is ``data[offsets[q] : offsets[q] + sizes[q]]``.
    """

    data: bytes
    offsets: np.ndarray  # [Q] int64
    sizes: np.ndarray  # [Q] int64
    size: tuple[int, int]  # (height, width)

    def __len__(self) -> int:
        return len(self.sizes)

    def counts(self, index: int) -> str:
        start = int(self.offsets[index])
        return self.data[start : start + int(self.sizes[index])].decode("ascii")

    def rles(self) -> list[RleDict]:
        return [{"size": list(self.size), "counts": self.counts(q)} for q in range(len(self))]


# Characters per run length in COCO's string form: 5 bits each, a 32-bit signed difference needs at most 7.
_MAX_CHARS = 7


def compress_runs(counts: np.ndarray, lengths: np.ndarray, size: tuple[int, int]) -> CompressedRuns:
    """Uncompressed COCO run lengths of many masks -> their compressed ``counts`` strings, byte-identical to
    pycocotools (``rleToString``): every run length from the third on is stored as the difference to the one two
    before it, written 5 bits per character (low bits first, ``0x20`` = more to come, offset by 48).

    ``counts`` holds every mask's runs back to back, ``lengths[q]`` how many belong to mask ``q`` (see
    ``clipvis.model.mask_runs``). Vectorised over all runs of all masks: no Python loop over masks or runs.
    """
    counts = np.asarray(counts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    position = np.arange(counts.shape[0], dtype=np.int64) - np.repeat(starts, lengths)
    values = counts.copy()
    later = np.flatnonzero(position > 2)
    values[later] -= counts[later - 2]
    chars = np.empty((counts.shape[0], _MAX_CHARS), dtype=np.uint8)
    used = np.zeros(counts.shape[0], dtype=np.int64)
    active = np.ones(counts.shape[0], dtype=bool)
    for k in range(_MAX_CHARS):  # character k of every run length at once
        chunk = values & 0x1F
        values >>= 5
        more = np.where(chunk & 0x10, values != -1, values != 0)
        chars[:, k] = (chunk | np.where(more, 0x20, 0)) + 48
        used += active
        active &= more
        if not active.any():
            break
    data = chars[np.arange(_MAX_CHARS) < used[:, None]].tobytes()  # row by row: each run's characters in order
    per_mask = np.add.reduceat(used, starts) if counts.shape[0] else np.zeros(len(lengths), np.int64)
    per_mask = np.where(lengths > 0, per_mask, 0)
    return CompressedRuns(data, np.cumsum(per_mask) - per_mask, per_mask, (int(size[0]), int(size[1])))


def decompress_counts(counts: str | bytes) -> np.ndarray:
    """A compressed ``counts`` string -> the uncompressed run lengths (int64), the inverse of ``compress_runs``
    (pycocotools' ``rleFrString``), vectorised over the characters."""
    chars = np.frombuffer(counts.encode("ascii") if isinstance(counts, str) else counts, dtype=np.uint8)
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    chars = chars.astype(np.int64) - 48
    last = (chars & 0x20) == 0  # the last character of a value
    value_index = np.concatenate([[0], np.cumsum(last)[:-1]])
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    shift = 5 * (np.arange(chars.size) - starts[value_index])
    values = np.zeros(int(last.sum()), dtype=np.int64)
    np.add.at(values, value_index, (chars & 0x1F) << shift)
    ends = np.flatnonzero(last)
    negative = (chars[ends] & 0x10) != 0
    values[negative] |= -1 << (shift[ends][negative] + 5)
    # From the third value on, each is a difference to the value two before: undo by running sums of each parity.
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])
    runs[2::2] = np.cumsum(values[2::2])
    return runs


def decode_box(rle: RleDict, x: int, y: int, width: int, height: int) -> np.ndarray:
    """The ``height`` x ``width`` box at (x, y) of a compressed RLE's mask as uint8 (0/1), decoding only the box's
    columns (COCO RLE is column-major), not the whole frame: cost proportional to the box's columns."""
    frame_height = int(rle["size"][0])
    runs = decompress_counts(rle["counts"])
    ends = np.cumsum(runs)
    begins = ends - runs
    low, high = x * frame_height, (x + width) * frame_height
    clipped = np.clip(np.minimum(ends, high) - np.maximum(begins, low), 0, None)
    values = (np.arange(runs.size) % 2).astype(np.uint8)
    columns = np.repeat(values, clipped)
    if columns.size != high - low:
        raise ValueError(f"RLE of size {rle['size']} does not cover columns {x}..{x + width - 1}")
    return np.ascontiguousarray(columns.reshape(width, frame_height)[:, y : y + height].T)


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
