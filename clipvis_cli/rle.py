"""COCO run-length encoded masks: clipvis' own vectorised codec of COCO's compressed ``counts`` strings, mask
compositing from run lengths, and typed calls of pycocotools.mask for the rest.

* The codec: ``compress_runs`` (many masks' run lengths -> their ``counts`` strings, byte-identical to pycocotools'
  ``rleToString``) and ``decompress_many`` / ``decompress_counts`` (the inverse, ``rleFrString``), numpy over every
  run or character at once, with ``compressed_counts_problems`` saying why a string is not a valid RLE of its mask.
* Compositing without decoding a mask: ``label_map`` paints a frame's masks into one label image (the earliest mask
  wins where they overlap), ``visible_counts`` gives each mask's visible part as ``counts``, ``mask_crops`` cuts
  masks to their boxes; all from the run lengths (docs/streaming.md).
* pycocotools for single masks and areas/boxes: ``encode`` (C-ordered bool/uint8 masks in, the Fortran-ordered
  copy pycocotools wants made here), ``decode``, ``area``, ``bbox``, ``areas``, ``bboxes``, ``coco_areas``.

Compressed RLE dicts here always carry ``counts`` as an ASCII ``str`` (JSON-ready), ``size`` as ``[height, width]``.
"""

from __future__ import annotations

import functools
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


def compressed(rle: RleDict) -> RleDict:
    """An RLE with compressed (string) counts; uncompressed RLE (a list of counts, as ground-truth files hold) is
    compressed with pycocotools."""
    return _to_json_rle(_to_coco_rle(rle)) if isinstance(rle["counts"], list) else rle


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


_INT32_SAFE = frozenset(np.dtype(t) for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32))
# Characters per run length in COCO's string form: 5 bits each, a 32-bit signed difference needs at most 7.
_MAX_CHARS = 7
# Values from -_TABLE_LIMIT to _TABLE_LIMIT - 1 (3 characters at most) have their characters in a table, 4 to a row.
_TABLE_LIMIT = 1 << 14
_TABLE_WIDTH = 4


def _value_characters(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO's characters of each value (``compress_runs``' rule: the fewest 5-bit groups holding it as a signed
    number, low bits first, ``0x20`` where another follows, offset by 48) as ``[N, _MAX_CHARS]`` uint8 rows (0 after
    the value's last character), and how many characters each value takes (uint8)."""
    values = values.astype(np.int64)
    magnitude = values ^ (values >> 63)  # ~v for a negative v, v otherwise
    used = np.ones(values.size, dtype=np.uint8)
    for k in range(1, _MAX_CHARS):
        used += magnitude >= 1 << (5 * k - 1)
    chars = np.zeros((values.size, _MAX_CHARS), dtype=np.uint8)
    for k in range(_MAX_CHARS):
        character = (((values >> (5 * k)) & 0x1F) | ((used > k + 1).astype(np.int64) << 5)) + 48
        chars[:, k] = np.where(used > k, character, 0)
    return chars, used


@functools.cache
def _character_table() -> tuple[np.ndarray, np.ndarray]:
    """The characters of every value from -_TABLE_LIMIT to _TABLE_LIMIT - 1 (`_value_characters`), each row of
    _TABLE_WIDTH as one uint32 (index: value + _TABLE_LIMIT), and how many each takes. Made once (160 kB)."""
    chars, used = _value_characters(np.arange(-_TABLE_LIMIT, _TABLE_LIMIT))
    return np.ascontiguousarray(chars[:, :_TABLE_WIDTH]).view(np.uint32).ravel(), used


def compress_runs(counts: np.ndarray, lengths: np.ndarray, size: tuple[int, int]) -> CompressedRuns:
    """Uncompressed COCO run lengths of many masks -> their compressed ``counts`` strings, byte-identical to
    pycocotools (``rleToString``): every run length from the third on is stored as the difference to the one two
    before it, written 5 bits per character (low bits first, ``0x20`` = more to come, offset by 48).

    ``counts`` holds every mask's runs back to back, ``lengths[q]`` how many belong to mask ``q`` (see
    ``clipvis.model.mask_runs``). Vectorised over all runs of all masks: no Python loop over masks or runs.
    """
    counts = np.asarray(counts)
    # In 32-bit integers where the run lengths fit (every real frame: COCO's run lengths are 32-bit), half the memory
    # traffic of int64: the differences of two such lengths fit too.
    small = counts.size == 0 or counts.dtype in _INT32_SAFE or (int(counts.max()) < 2**31 and int(counts.min()) >= 0)
    counts = counts.astype(np.int32 if small else np.int64, copy=False)
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    values = counts.copy()
    if counts.shape[0] > 2:
        later = np.ones(counts.shape[0], dtype=bool)  # each mask's runs from its fourth on: stored as differences
        for position in range(3):
            later[starts[lengths > position] + position] = False
        np.subtract(values[2:], counts[:-2], out=values[2:], where=later[2:])
    # Each value's characters from a table where it is small (every difference of two runs shorter than 2**14: nearly
    # all of them), worked out only for the others (a mask's first runs, long runs): one row of bytes per value, its
    # characters then zeros, and the string is those rows with the zeros left out (no character is 0). A handful of
    # passes over the values where working out every character of every value took ~30 (100 masks of 1,170 runs at
    # 854x480: 1.7 -> 0.9 ms per frame).
    table, table_used = _character_table()
    index = values + _TABLE_LIMIT
    rows = np.take(table, index, mode="clip")  # [N] uint32: a value's characters, up to 4
    used = np.take(table_used, index, mode="clip")
    far = np.flatnonzero(index.view(np.dtype(f"u{index.itemsize}")) >= 2 * _TABLE_LIMIT)  # past the table (or wrapped)
    if far.size:
        far_chars, far_used = _value_characters(values[far])
        used[far] = far_used
        if int(far_used.max()) > _TABLE_WIDTH:  # up to 7 characters: rows of 8 bytes
            rows = rows.astype(np.uint64)  # the 4 bytes, and 4 zeros
        rows[far] = 0
        width = min(rows.itemsize, _MAX_CHARS)
        rows.view(np.uint8).reshape(rows.size, -1)[far, :width] = far_chars[:, :width]
    data = rows.tobytes().translate(None, b"\0")
    per_mask = np.add.reduceat(used, starts, dtype=np.int64) if counts.shape[0] else np.zeros(len(lengths), np.int64)
    per_mask = np.where(lengths > 0, per_mask, 0)
    return CompressedRuns(data, np.cumsum(per_mask) - per_mask, per_mask, (int(size[0]), int(size[1])))


def decompress_many(counts: Sequence[str | bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Many compressed ``counts`` strings -> their uncompressed run lengths back to back (int64) and how many
    belong to each string: the inverse of ``compress_runs`` (pycocotools' ``rleFrString``), vectorised over every
    character of every string (no Python loop over strings, runs or characters).

    Raises ValueError when a string ends in the middle of a value (a truncated or corrupt ``counts``).
    """
    encoded = [c.encode("ascii") if isinstance(c, str) else bytes(c) for c in counts]
    chars_per_string = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    return _decompress_chars(np.frombuffer(b"".join(encoded), dtype=np.uint8) - np.uint8(48), chars_per_string)


def _decompress_chars(chars: np.ndarray, chars_per_string: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`decompress_many` of strings given as their characters less 48 (``chars``, uint8, back to back) and how many
    characters each string has."""
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(len(chars_per_string), dtype=np.int64)
    ends = np.flatnonzero(chars < 0x20)  # the last character of each value: no continuation bit
    string_ends = np.cumsum(chars_per_string)
    if not (chars[string_ends[chars_per_string > 0] - 1] < 0x20).all():
        raise ValueError("malformed RLE counts: a string ends in the middle of a run length")
    values_before = np.searchsorted(ends, string_ends)  # values that end before each string's end
    runs_per_string = np.diff(values_before, prepend=0)
    # Each value: 5 bits per character, low bits first; the top bit of its last character is the sign. Most values
    # take one character c: c's low 4 bits, less 16 where its sign bit is set (x - 2**5 for x = c & 0x1F). Those
    # of two or more characters (the values holding a continuation character) are then read character k at a time.
    last_chars = chars[ends]
    values = (last_chars & 0x0F).astype(np.int64)
    values -= last_chars & 0x10
    value_chars_all = np.diff(ends, prepend=-1)
    longer = np.flatnonzero(value_chars_all > 1)
    if longer.size:
        value_chars = value_chars_all[longer]
        first_chars = ends[longer] - value_chars + 1
        read = (chars[first_chars] & 0x1F).astype(np.int64)
        going = np.arange(longer.size)
        for k in range(1, int(value_chars.max())):
            going = going[value_chars[going] > k]
            read[going] |= (chars[first_chars[going] + k] & 0x1F).astype(np.int64) << (5 * k)
        read -= ((last_chars[longer] & 0x10) != 0).astype(np.int64) << (5 * value_chars)  # x | (-1 << bits)
        values[longer] = read
    # From index 3 of a string on, each value is a difference to the run two before it: along each string's two
    # chains (indices 1, 3, 5, ... and 2, 4, 6, ...) the runs are running sums. The elements of one global parity
    # hold one chain of every string, back to back: one running sum over that strided view, less its value before
    # each string's part. Index 0 belongs to no chain: it adds 0 and is set afterwards.
    string_starts = values_before - runs_per_string
    heads = string_starts[runs_per_string > 0]
    head_values = values[heads]
    values[heads] = 0  # the chains' values from here on
    runs = np.empty_like(values)
    for parity in (0, 1):
        sums = np.cumsum(values[parity::2])
        # each string's elements of this parity: entries first .. after - 1 of the strided view
        first = (string_starts - parity + 1) // 2
        after = (values_before - parity + 1) // 2
        before = np.where(first > 0, sums[np.maximum(first - 1, 0)], 0) if sums.size else np.zeros_like(first)
        sums -= np.repeat(before, after - first)
        runs[parity::2] = sums
    runs[heads] = head_values
    return runs, runs_per_string


def compressed_counts_problems(counts: Sequence[str | bytes], pixels: Sequence[int]) -> list[str | None]:
    """For each compressed ``counts`` string, why it is not a valid RLE of its ``pixels`` pixels, or None: its run
    lengths must add up to the mask's height x width (where they do not, pycocotools reads or writes memory outside
    the mask, or its IoU never ends). Vectorised over all strings (a YouTube-VIS file holds ~10^5 of them): the
    characters stay bytes (uint8), the runs are read straight from them, and Python visits only the strings refused.
    Only the strings whose runs add up to another number, or hold a negative run or one over the largest mask's
    size, are looked at one by one."""
    problems: list[str | None] = [None] * len(counts)
    encoded: list[bytes] = []
    for i, text in enumerate(counts):
        if not text:
            problems[i] = "RLE with empty counts"
        elif isinstance(text, str) and not text.isascii():
            problems[i] = "RLE counts string with characters COCO's encoding never writes"
        if problems[i] is not None:
            encoded.append(b"")
        else:
            encoded.append(text if isinstance(text, bytes) else text.encode("ascii"))
    lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
    chars = np.frombuffer(b"".join(encoded), np.uint8) - np.uint8(48)  # a byte under 48 wraps round to 208 or more
    string_starts = np.cumsum(lengths) - lengths
    refused = np.zeros(len(encoded), bool)
    outside = np.flatnonzero(chars >= 64)  # bytes COCO's encoding never writes (its characters are 48 .. 111)
    if outside.size:
        for i in np.unique(np.searchsorted(string_starts, outside, side="right") - 1).tolist():
            problems[i] = "RLE counts string with characters COCO's encoding never writes"
            refused[i] = True
    nonempty = np.flatnonzero(lengths)
    cut = nonempty[chars[string_starts[nonempty] + lengths[nonempty] - 1] >= 0x20]  # the last value goes on past it
    for i in cut.tolist():
        if not refused[i]:
            problems[i] = "RLE counts string cut short (it ends in the middle of a run length)"
            refused[i] = True
    refused |= lengths == 0
    valid = np.flatnonzero(~refused)
    if not valid.size:
        return problems
    if valid.size == len(encoded):
        runs, per_string = _decompress_chars(chars, lengths)
    else:
        kept = np.repeat(~refused, lengths)
        runs, per_string = _decompress_chars(chars[kept], lengths[valid])
    heads = np.cumsum(per_string) - per_string  # every valid string has at least one run
    totals = np.add.reduceat(runs, heads)
    expected = np.asarray(pixels, np.int64)[valid]
    suspect = totals != expected
    # a negative run, or one over every mask's size (only the sum overflowing int64 hides it in the totals)
    if runs.min() < 0 or runs.max() > expected.max():
        outliers = np.flatnonzero((runs < 0) | (runs > expected.max()))
        suspect[np.searchsorted(heads, outliers, side="right") - 1] = True
    for k in np.flatnonzero(suspect).tolist():
        i = int(valid[k])
        string_runs = runs[heads[k]: heads[k] + per_string[k]]
        within = string_runs.min() >= 0 and string_runs.max() <= pixels[i]
        if within and totals[k] == pixels[i]:
            continue
        total = int(totals[k]) if within else "a negative or huge number of"
        problems[i] = f"corrupt RLE counts (its runs add up to {total} pixels, not height x width = {pixels[i]})"
    return problems


def _positions(lengths: np.ndarray) -> np.ndarray:
    """For sequences of the given lengths stored back to back: each element's position inside its sequence, in the
    lengths' integer type. Made as one running sum of +1 steps that restarts at each sequence's first element
    (~10x faster than ``np.repeat`` when the sequences are short)."""
    lengths = lengths[lengths > 0]
    steps = np.ones(int(lengths.sum()), dtype=lengths.dtype)
    if steps.size:
        heads = np.cumsum(lengths) - lengths
        steps[0] = 0
        steps[heads[1:]] = 1 - lengths[:-1]  # back from the previous sequence's last position to 0
    return np.cumsum(steps, dtype=lengths.dtype)


def _segmented_cumsum(values: np.ndarray, heads: np.ndarray) -> np.ndarray:
    """Running sums of ``values`` that restart wherever ``heads`` is True (``heads[0]`` must be True)."""
    if values.size == 0:
        return values.copy()
    total = np.cumsum(values)
    before_head = (total - values)[heads]
    return total - before_head[np.cumsum(heads) - 1]


def decompress_counts(counts: str | bytes) -> np.ndarray:
    """A compressed ``counts`` string -> the uncompressed run lengths (int64)."""
    return decompress_many([counts])[0]


_MASKS_PER_BLOCK = 63  # masks whose coverage bits fit one int64
_SORT_KEY_BITS = 62  # a boundary's value and index packed into one non-negative int64 sort key


@dataclass
class LabelMap:
    """Several masks of one frame painted into one image: ``labels[y, x] = k`` where the ``k``-th mask (1-based,
    in list order) covers the pixel, 0 where none does; where masks overlap the earliest in the list wins.

    ``boxes[k - 1]`` is mask ``k``'s bounding box ``[x, y, width, height]`` (COCO ``toBbox``; all zeros when the
    mask is empty or absent); ``visible[k - 1]`` the number of pixels labelled ``k`` (0 for a mask covered by
    earlier ones).
    """

    labels: np.ndarray  # [H, W] uint8 (fewer than 255 masks) or uint16
    boxes: np.ndarray  # [N, 4] int64
    visible: np.ndarray  # [N] int64


def label_map(masks: Sequence[RleDict | None], height: int, width: int) -> LabelMap:
    """Paint ``masks`` (RLEs of an H×W frame, or None for absent ones) into a ``LabelMap``.

    Cost: proportional to the masks' run lengths (per 63 masks), plus one pass writing the H×W labels; no mask is
    ever decoded on its own, and overlapping masks cost nothing extra. In COCO's column-major order the label image
    is constant between consecutive run boundaries of any mask: each such segment gets the smallest mask number
    covering it, and the segments are expanded into the image in one ``np.repeat``.
    """
    bounds, top, boxes = _painted_segments(masks, height, width)
    if top.size == 1 and top[0] == 0:
        return LabelMap(np.zeros((height, width), top.dtype), boxes, np.zeros(len(masks), np.int64))
    segment_lengths = np.diff(bounds)
    visible = np.bincount(top, weights=segment_lengths, minlength=len(masks) + 1)[1:].astype(np.int64)
    column_major = np.repeat(top, segment_lengths).reshape(width, height)
    return LabelMap(cv2.transpose(column_major), boxes, visible)


def visible_counts(masks: Sequence[RleDict | None], height: int, width: int) -> list[str | None]:
    """The COCO compressed ``counts`` of each mask's visible part when ``masks`` are painted as ``label_map`` paints
    them (the earliest mask wins where they overlap): byte-identical to ``encode(label_map(...).labels == k + 1)``;
    None where mask ``k`` is absent or shows no pixel. Made from the painted segments' boundaries, no image made."""
    bounds, top, _ = _painted_segments(masks, height, width)
    counts: list[str | None] = [None] * len(masks)
    shown = np.flatnonzero((top > 0) & (bounds[1:] > bounds[:-1]))
    if shown.size == 0:
        return counts
    order = np.argsort(top[shown], kind="stable")  # by label, each label's segments in image order
    labels, begins, ends = top[shown][order].astype(np.int64), bounds[shown][order], bounds[shown + 1][order]
    # A label's consecutive segments that touch form one run of its mask
    new_label = np.concatenate([[True], labels[1:] != labels[:-1]])
    starts = np.flatnonzero(new_label | np.concatenate([[True], begins[1:] != ends[:-1]]))
    run_labels, run_begins = labels[starts], begins[starts]
    run_ends = ends[np.concatenate([starts[1:], [labels.size]]) - 1]
    first = np.concatenate([[True], run_labels[1:] != run_labels[:-1]])  # each label's first run
    last = np.concatenate([first[1:], [True]])
    previous_end = np.concatenate([[0], run_ends[:-1]])
    previous_end[first] = 0
    tail = height * width - run_ends[last]  # the background after a label's last run (none when it is 0)
    has_tail = (tail > 0).astype(np.int64)
    label_index = np.cumsum(first) - 1
    tails_before = np.cumsum(has_tail) - has_tail
    where = 2 * np.arange(run_labels.size) + tails_before[label_index]
    values = np.empty(2 * run_labels.size + int(has_tail.sum()), dtype=np.int64)
    values[where] = run_begins - previous_end
    values[where + 1] = run_ends - run_begins
    values[(where + 2)[last][has_tail > 0]] = tail[has_tail > 0]
    runs_per_label = np.bincount(label_index, minlength=int(first.sum())) * 2 + has_tail
    encoded = compress_runs(values, runs_per_label, (height, width))
    for index, label in enumerate(run_labels[first].tolist()):
        counts[label - 1] = encoded.counts(index)
    return counts


def _painted_segments(masks: Sequence[RleDict | None], height: int,
                      width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``masks`` painted as ``label_map`` paints them, as segments of the image in column-major order: segment ``s``
    is pixels ``bounds[s] .. bounds[s + 1] - 1``, all labelled ``top[s]`` (uint8 for fewer than 255 masks, else
    uint16; segments may be empty); and the masks' boxes (``LabelMap.boxes``)."""
    if len(masks) >= 2**16 - 1:
        raise ValueError(f"label_map paints at most {2**16 - 2} masks, got {len(masks)}")
    pixels = int(height) * int(width)
    present = np.asarray([k for k, mask in enumerate(masks) if mask is not None], dtype=np.int64)
    runs, lengths = _runs_of([masks[k] for k in present.tolist()], height, width)
    # A run is foreground where its index within its mask is odd: where the parity of its index among all runs
    # differs from that of its mask's first run (one repeat of a bool per mask). Each mask's runs sum to the frame's
    # pixels, so one running sum over all of them gives each foreground run's end as `which * pixels + end`, `which`
    # the present mask it belongs to (the run is not empty: its last pixel is inside that mask's `pixels`).
    starts = np.cumsum(lengths) - lengths
    foreground = np.zeros(runs.size, dtype=bool)
    foreground[1::2] = True
    foreground ^= np.repeat((starts & 1).astype(bool), lengths)
    foreground &= runs > 0
    foreground = np.flatnonzero(foreground)
    which, ends = np.divmod(np.cumsum(runs)[foreground] - 1, pixels)
    ends += 1
    begins = ends - runs[foreground]
    number = present[which] + 1
    boxes = _boxes(begins, ends, number, len(masks), height)
    dtype = np.uint8 if len(masks) < 255 else np.uint16
    if begins.size == 0:
        return np.array([0, pixels], dtype=np.int64), np.zeros(1, dtype), boxes
    # All run boundaries in order, equal ones in list order (a stable sort); where each run's begin and end landed
    # gives the segments it covers. Sorted as one key per boundary, its value above its index (unique keys: any
    # sort gives the same order). The keys come as one increasing sequence per mask (its runs in order, each begin
    # before its end), which numpy's stable sort of integers (a merge sort that finds such sequences and merges them)
    # sorts ~4x faster than its default quicksort, which looks for none (50 masks of 730 runs each: 0.5 against
    # 2.5 ms per frame at 854x480).
    boundaries = np.empty(2 * begins.size + 2, dtype=np.int64)
    boundaries[0], boundaries[1], boundaries[2::2], boundaries[3::2] = 0, pixels, begins, ends
    shift = int(boundaries.size - 1).bit_length()
    if pixels.bit_length() + shift <= _SORT_KEY_BITS:
        keys = np.sort((boundaries << shift) | np.arange(boundaries.size), kind="stable")
        order, bounds = keys & ((1 << shift) - 1), keys >> shift
    else:  # a frame too large for one int64 key (far past any video's size)
        order = np.argsort(boundaries, kind="stable")
        bounds = boundaries[order]
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    first, last = rank[2::2], rank[3::2]  # segment first .. last - 1: [bounds[first], bounds[last]) = the run
    top = np.zeros(bounds.size - 1, dtype=dtype)
    # Masks in blocks of 63: per segment, the set of a block's masks covering it as the bits of one int64, made by a
    # single running sum (a mask's runs never overlap, so its bit is added at most once); the lowest bit set is the
    # earliest mask. Cost: segments + runs per block, whatever the overlap depth.
    block_starts = np.searchsorted(number, np.arange(1, len(masks) + 1, _MASKS_PER_BLOCK))
    for block, (lo, hi) in enumerate(zip(block_starts, [*block_starts[1:], number.size], strict=True)):
        if lo == hi:
            continue
        bit = np.left_shift(np.int64(1), (number[lo:hi] - 1) % _MASKS_PER_BLOCK)
        steps = np.zeros(bounds.size, dtype=np.int64)
        steps[first[lo:hi]] = bit  # every boundary has a rank of its own: no two runs write the same place
        steps[last[lo:hi]] = -bit
        covering = np.cumsum(steps[:-1])
        if block == 0:  # every segment unpainted: the lowest bit of each at once (frexp: 2**j -> j + 1, 0 -> 0)
            top[:] = np.frexp((covering & -covering).astype(np.float64))[1]
            continue
        unpainted = np.flatnonzero((covering != 0) & (top == 0))
        lowest = covering[unpainted] & -covering[unpainted]
        top[unpainted] = block * _MASKS_PER_BLOCK + np.frexp(lowest.astype(np.float64))[1]  # 2**j -> j + 1
    return bounds, top, boxes


@dataclass
class MaskCrop:
    """A mask cut to its bounding box: ``box`` is ``(x, y, width, height)`` as COCO's ``toBbox`` gives it (the
    tight box of the pixels), ``mask`` the ``[height, width]`` bool pixels inside it: a view into the box's columns
    laid out as the same crop of a decoded mask (pycocotools decodes column-major), so what depends on the layout
    (``np.save`` writes a crop spanning the whole height in Fortran order) is unchanged."""

    box: tuple[int, int, int, int]
    mask: np.ndarray


def mask_crops(masks: Sequence[RleDict | None], height: int, width: int) -> list[MaskCrop | None]:
    """Each RLE of an H×W frame cut to its bounding box; None where a mask is absent or empty.

    No mask is decoded whole: the boxes come from the run lengths (``_boxes``, one vectorised pass over every mask's
    runs), and since COCO's column-major order keeps the box's columns back to back, only those columns are expanded
    (one ``np.repeat`` per mask), then the box's rows taken. Cost: the runs plus the boxes' areas, not masks x frame.
    """
    crops: list[MaskCrop | None] = [None] * len(masks)
    present = [k for k, mask in enumerate(masks) if mask is not None]
    if not present:
        return crops
    runs, lengths = _runs_of([masks[k] for k in present], height, width)
    position = _positions(lengths)
    ends = _segmented_cumsum(runs, position == 0)
    number = np.repeat(np.arange(1, len(present) + 1, dtype=np.int64), lengths)
    foreground = ((position & 1) == 1) & (runs > 0)
    ends, number = ends[foreground], number[foreground]
    begins = ends - runs[foreground]
    boxes = _boxes(begins, ends, number, len(present), height).tolist()
    firsts = np.searchsorted(number, np.arange(1, len(present) + 2)).tolist()  # mask j's runs: firsts[j]:firsts[j+1]
    for j, k in enumerate(present):
        x, y, w, h = boxes[j]
        if w == 0:
            continue
        lo, hi = firsts[j], firsts[j + 1]
        origin = x * height
        edges = np.empty(2 * (hi - lo) + 2, dtype=np.int64)  # 0, begin, end, begin, ..., end, the columns' size
        edges[0], edges[-1] = 0, w * height
        edges[1:-1:2] = begins[lo:hi] - origin
        edges[2:-1:2] = ends[lo:hi] - origin
        values = np.zeros(edges.size - 1, dtype=bool)
        values[1::2] = True
        columns = np.repeat(values, np.diff(edges)).reshape(w, height)
        crops[k] = MaskCrop((x, y, w, h), columns[:, y : y + h].T)
    return crops


def _runs_of(masks: Sequence[RleDict], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The run lengths of RLEs (compressed or list counts) of an H×W frame, back to back, and how many each has."""
    for mask in masks:
        if [int(v) for v in mask["size"]] != [height, width]:
            raise ValueError(f"RLE of size {mask['size']} on a {height}x{width} frame")
    if all(isinstance(mask["counts"], str | bytes) for mask in masks):
        runs, lengths = decompress_many([mask["counts"] for mask in masks])
    else:
        parts = [
            np.asarray(m["counts"], np.int64) if isinstance(m["counts"], list) else decompress_counts(m["counts"])
            for m in masks
        ]
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
        runs = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    sums = np.add.reduceat(runs, starts[lengths > 0]) if runs.size else np.zeros(0, np.int64)
    if (lengths == 0).any() or (sums != height * width).any() or (runs < 0).any():
        raise ValueError(f"RLE counts do not cover a {height}x{width} frame")
    return runs, lengths


def _boxes(begins: np.ndarray, ends: np.ndarray, number: np.ndarray, count: int, height: int) -> np.ndarray:
    """``[count, 4]`` boxes ``[x, y, w, h]`` of masks given as foreground runs ``[begins, ends)`` in column-major
    order, grouped by mask ``number`` (1-based); as COCO's ``toBbox`` (a run across columns spans every row)."""
    boxes = np.zeros((count, 4), dtype=np.int64)
    if begins.size == 0:
        return boxes
    first_column, last_column = begins // height, (ends - 1) // height
    one_column = first_column == last_column
    top = np.where(one_column, begins % height, 0)
    bottom = np.where(one_column, (ends - 1) % height, height - 1)
    group_starts = np.flatnonzero(np.concatenate([[True], number[1:] != number[:-1]]))
    group_ends = np.concatenate([group_starts[1:], [number.size]]) - 1
    rows = number[group_starts] - 1
    y0 = np.minimum.reduceat(top, group_starts)
    y1 = np.maximum.reduceat(bottom, group_starts)
    boxes[rows, 0] = first_column[group_starts]
    boxes[rows, 1] = y0
    boxes[rows, 2] = last_column[group_ends] - first_column[group_starts] + 1
    boxes[rows, 3] = y1 - y0 + 1
    return boxes


def decode(rle: RleDict | dict) -> np.ndarray:
    """Decode one RLE dict (compressed counts, as text or bytes: pycocotools' own objects too; or uncompressed, a
    list of run lengths) to an H×W bool mask.

    Not pycocotools' ``decode``: with numpy 2 it warns (``__array__`` without ``copy``) on every call, which
    ``PYTHONWARNINGS=error`` made an error, and which a later numpy turns into one. ValueError when the run lengths
    do not cover ``H × W`` pixels."""
    height, width = (int(side) for side in rle["size"])
    counts = rle["counts"]
    runs = np.asarray(counts, np.int64) if isinstance(counts, list) else decompress_counts(counts)
    if runs.size and (runs.min() < 0 or int(runs.sum()) != height * width):
        raise ValueError(f"RLE run lengths add up to {int(runs.sum())}, not {height}x{width} pixels")
    if not runs.size and height * width:
        raise ValueError(f"RLE without run lengths for {height}x{width} pixels")
    values = np.zeros(runs.size, bool)
    values[1::2] = True  # runs alternate background, foreground, ... from the first (column-major) pixel
    return np.repeat(values, runs).reshape(width, height).T


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
