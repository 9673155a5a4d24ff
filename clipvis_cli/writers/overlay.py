"""Overlay video writer (`overlay.mp4`): the processed frames with translucent masks, contours and labels.

Encoding: H.264 (libx264), yuv420p, MP4 with `movflags=+faststart` (the index is at the front, so browsers
start playing before the download ends). The frame rate is the processed rate (`fps / stride`, exact
fraction); the frame count is the number of processed frames. H.264 4:2:0 needs even dimensions: an odd
width or height is padded by one pixel (a copy of the last column/row) on the right/bottom, so the
overlay is the video's size rounded up to even and masks stay pixel-aligned. Colours: BT.601's matrix in limited
range, each chroma sample its 2x2 block's mean colour's (`rgb_to_yuv420p`), and the stream tagged so (`_add_stream`);
the frames drawn on are decoded as players show them (`FrameReader.frames_as_players_show`). An HDR source (PQ, HLG)
is not tone-mapped: its coded values are drawn on as SDR. No audio: the overlay is video only (README says how to add
the source's sound back).

Drawing: each track gets a fixed colour (clipvis.cli.track_colours: stable across frames and runs), its visible
part (smaller objects on top where masks overlap) blended at `alpha` and outlined, and the label
"class #track score" on a dark box centred inside that visible part, clear of the other labels (`OverlayRenderer`).
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from clipvis.cli import rle
from clipvis.cli.atomic import OutputNotWritableError, atomic_output_path
from clipvis.cli.resources import usable_cpus
from clipvis.cli.results import TrackResult, VideoInfo, check_tracks
from clipvis.cli.track_colours import track_colour
from clipvis.cli.video_io import BackgroundDecoder
from clipvis.cli.writers.base import SegmentedVideo, WriterDefaults
from clipvis.cli.writers.layout import OVERLAY_NAME

# A variable-frame-rate source's overlay keeps each frame's own time, in milliseconds.
VARIABLE_RATE_CLOCK = 1000


def _clock(video: VideoInfo) -> tuple[Fraction, list[int] | None]:
    """The overlay's time base and each processed frame's pts in it, strictly increasing (None: pts = position),
    from the source's start, as ytvis.json's ``frame_times`` and ``start_time`` place the frames: a video that starts
    after its audio (``start_time``) has its overlay's first frame that late too (it started at 0, so times read off
    the overlay were off by the start). A constant rate ticks at the processed rate where the start is a whole number
    of its frames, else in milliseconds, as a variable rate does."""
    rate = video.processed_fps
    if video.frame_times is None:
        frames_before = video.start_time * rate
        if not video.start_time or abs(frames_before - round(frames_before)) < 1e-3:
            offset = round(frames_before)
            return 1 / rate, [offset + position for position in range(video.num_frames)] if offset else None
        times = [video.start_time + float(position / rate) for position in range(video.num_frames)]
    else:
        times = video.frame_times
    time_base = Fraction(1, VARIABLE_RATE_CLOCK)
    stamps: list[int] = []
    for seconds in times:
        stamp = max(0, round(seconds / time_base))
        stamps.append(max(stamp, stamps[-1] + 1) if stamps else stamp)
    return time_base, stamps


# Latin letters that NFKD does not split into an ASCII letter and accents.
_LATIN_LETTERS = str.maketrans({
    "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "đ": "d", "Đ": "D",
    "ð": "d", "Ð": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "Th", "ı": "i",
})


@functools.lru_cache(maxsize=4096)
def ascii_class_name(name: str, category_id: int) -> str:
    """``name`` as OpenCV's Hershey fonts can draw it (printable ASCII; any other character comes out as '?'):
    accents dropped ("café" -> "cafe", "Straße" -> "Strasse", "½ cup" -> "1/2 cup"), symbols left out ("🐶 dog" ->
    "dog"), and ``"class <category_id>"`` when a letter has no ASCII form ("狗", "кошка", "Ωmega": a name with
    letters left out could read as another class) or nothing is left. ASCII names ("3", "t-shirt") stay as they
    are."""
    folded = unicodedata.normalize("NFKD", name.translate(_LATIN_LETTERS)).replace("\u2044", "/")
    if any(c.isalpha() and not c.isascii() for c in folded):
        return f"class {category_id}"
    text = " ".join("".join(c for c in folded if c.isascii() and c.isprintable()).split())
    return text or f"class {category_id}"


@dataclass(frozen=True)
class OverlayStyle:
    """Drawing and encoding settings of the overlay video."""

    alpha: float = 0.45
    draw_contours: bool = True
    draw_labels: bool = True
    crf: int = 23
    preset: str = "veryfast"


class OverlayRenderer:
    """Draw the tracks of one processed frame onto an RGB image (no encoding).

    The frame's masks are painted into one label image (``clipvis.cli.rle.label_map``: straight from the run
    lengths, no mask decoded on its own). Where masks overlap the smaller mask is on top, as detectron2's Visualizer
    draws larger masks first, so that an object inside another (a hat on a person, a wheel on a car) stays visible:
    the track with the smaller mean mask area over the video (``painting_order``; one order for every frame, so
    overlaps do not flicker), the better-ranked one (earlier in ``tracks``) between equal areas. Tinting and
    outlines are then a few whole-image operations, whatever the number of tracks: the tint is the track's colour
    blended at ``alpha``, the outline the inner border (``thickness`` pixels wide) of the track's visible part in
    the track's colour.

    Labels go to the tracks with visible pixels, best score first, each centred deep inside its visible part (of the
    points at least ``DEEP_SHARE`` as far from that part's border as its farthest, the one nearest the part's
    centroid, so a label moves as steadily as its object; on a subsampled label image, ``ANCHOR_PIXELS``), and moved
    up or down, left or right, when that would cover a label placed before; where every place is taken the label
    shrinks to ``#<track id>``, and where that is taken too the track goes unlabelled. Labels stay inside the frame:
    a class name too long for the width is cut short and ends in '.', keeping ``#<track id> <score>``.
    """

    def __init__(self, style: OverlayStyle | None = None) -> None:
        self.style = style or OverlayStyle()

    def render(
        self, frame: np.ndarray, position: int, tracks: Sequence[TrackResult], categories: Sequence[str],
        order: Sequence[int] | None = None,
    ) -> np.ndarray:
        """A copy of `frame` (H×W×3 uint8 RGB) with processed frame `position` of every track drawn on it.
        ``order``: ``painting_order(tracks)``, given to spare working it out again for every frame."""
        canvas = frame.copy()
        height, width = canvas.shape[:2]
        order = painting_order(tracks) if order is None else order
        painted = _paint(tracks, order, position, height, width)
        if not painted.visible.any():
            return canvas
        thickness = max(1, round(2 * _scale(height, width)))
        # label -> RGB (label 0: unused); 256 rows for uint8 labels, the table of OpenCV's per-channel lookup
        colours = np.zeros((256 if painted.labels.dtype == np.uint8 else len(tracks) + 1, 3), dtype=np.uint8)
        colours[1 : len(tracks) + 1] = [track_colour(tracks[k].track_id) for k in order]
        border = 2 * thickness + 1 if self.style.draw_contours else 0
        rows = max(1, STRIP_PIXELS // width)  # strips: temporaries stay small at 4K
        for top in range(0, height, rows):
            self._tint_strip(canvas, frame, painted.labels, colours, top, min(height, top + rows), border)
        if self.style.draw_labels:
            font = LabelFont.for_frame(height, width)
            for label in _layout(painted, order, tracks, categories, font):
                _draw_label(canvas, label, font)
        return canvas

    def layout(
        self, height: int, width: int, position: int, tracks: Sequence[TrackResult], categories: Sequence[str]
    ) -> list[PlacedLabel]:
        """The labels ``render`` draws on an ``height`` x ``width`` frame ``position`` (none without
        ``draw_labels``), in the order they were placed."""
        if not self.style.draw_labels:
            return []
        order = painting_order(tracks)
        painted = _paint(tracks, order, position, height, width)
        return _layout(painted, order, tracks, categories, LabelFont.for_frame(height, width))

    def _tint_strip(
        self, canvas: np.ndarray, frame: np.ndarray, labels: np.ndarray, colours: np.ndarray,
        top: int, bottom: int, border: int,
    ) -> None:
        """Rows ``top:bottom`` of the canvas: tint under every mask, then (``border`` > 0: the outline kernel's
        size) each mask's inner border in its colour."""
        strip = labels[top:bottom]
        covered = _compare(strip, 0, cv2.CMP_GT)
        if not covered.any():
            return
        colour = _colour_image(strip, colours)  # [h, W, 3]
        tinted = cv2.addWeighted(frame[top:bottom], 1 - self.style.alpha, colour, self.style.alpha, 0)
        cv2.copyTo(tinted, covered, canvas[top:bottom])
        if border:
            # A pixel is on a border when its neighbourhood holds another label, or the frame's edge (beyond it
            # counts as background: a mask touching the edge is outlined there too); rows beyond the strip count too
            # (they are in the window, so the window's own edge is only ever the frame's).
            margin = border // 2
            above, below = max(0, top - margin), min(labels.shape[0], bottom + margin)
            kernel = np.ones((border, border), np.uint8)
            window = labels[above:below]
            outside = {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0}
            edges = cv2.compare(cv2.dilate(window, kernel, **outside), cv2.erode(window, kernel, **outside),
                                cv2.CMP_NE)
            edges = cv2.bitwise_and(edges[top - above : top - above + bottom - top], covered)
            cv2.copyTo(colour, edges, canvas[top:bottom])



@dataclass(frozen=True)
class PlacedLabel:
    """One label of a frame: its text and its box ``[x0, x1) x [y0, y1)`` in pixels, inside the frame."""

    track_id: int
    text: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1


@dataclass(frozen=True)
class LabelFont:
    """OpenCV's Hershey font at the size labels get on a frame (smaller on frames under 900 pixels a side, larger
    above 1080)."""

    scale: float
    thickness: int
    face: int = cv2.FONT_HERSHEY_SIMPLEX

    @classmethod
    def for_frame(cls, height: int, width: int) -> LabelFont:
        scale = _scale(height, width)
        if scale > 1:  # above 1080p: 1080p's font, grown with the frame
            return cls(0.8 * scale, round(2 * scale))
        return cls(0.25 + 0.55 * scale, 2 if scale >= 0.9 else 1)

    def size(self, text: str) -> tuple[int, int, int]:
        """(width, height above the baseline, depth below it) of ``text`` in pixels."""
        return _text_size(text, self.face, self.scale, self.thickness)


@functools.lru_cache(maxsize=4096)
def _text_size(text: str, face: int, scale: float, thickness: int) -> tuple[int, int, int]:
    """``cv2.getTextSize`` of ``text`` as (width, height above the baseline, depth below it), memoised: a pure
    function of its arguments, and the same labels come back frame after frame (docs/architecture.md, "State")."""
    (width, height), baseline = cv2.getTextSize(text, face, scale, thickness)
    return width, height, baseline


def _scale(height: int, width: int) -> float:
    """Size of outlines and labels: relative to a 900-pixel frame (0.15 to 1) up to 1080 pixels a side, relative to
    a 1080-pixel one above (2 at 2160), so that labels and outlines keep their share of a 4K frame (capped at 1, a 4K
    frame's labels were half as tall as a 1080p frame's, relative to the frame)."""
    side = min(height, width)
    if side > SCALE_GROWS_FROM:
        return side / SCALE_GROWS_FROM
    return max(0.15, min(1.0, side / 900))


SCALE_GROWS_FROM = 1080  # above this many pixels a side, labels and outlines grow with the frame


def painting_order(tracks: Sequence[TrackResult]) -> list[int]:
    """The indices of ``tracks`` from the one drawn on top to the one drawn below all others where masks overlap:
    smallest mean mask area first (over the frames where the mask is not empty), then the better-ranked (earlier
    in ``tracks``). One order for the whole video: ordered frame by frame, overlapping masks of about the same
    size would swap places from frame to frame, and the overlap flicker."""
    means = []
    for track in tracks:
        present = [mask for mask in track.segmentations if mask is not None]
        areas = np.asarray(rle.areas(present), dtype=np.int64)
        shown = areas[areas > 0]
        means.append(int(shown.sum()) // shown.size if shown.size else 0)
    return sorted(range(len(tracks)), key=lambda k: (means[k], k))


def _paint(
    tracks: Sequence[TrackResult], order: Sequence[int], position: int, height: int, width: int
) -> rle.LabelMap:
    """Frame ``position`` of ``tracks`` painted into one label image, in ``order`` (``painting_order``): label
    ``j + 1`` is ``tracks[order[j]]``, on top of the labels after it."""
    return rle.label_map([tracks[k].segmentations[position] for k in order], height, width)


def _layout(
    painted: rle.LabelMap, order: Sequence[int], tracks: Sequence[TrackResult], categories: Sequence[str],
    font: LabelFont,
) -> list[PlacedLabel]:
    """The labels of the tracks with visible pixels, best score first: each centred on its anchor or as near as it
    fits clear of the labels placed before it; a compact ``#<id>`` label, or none, where nothing fits."""
    height, width = painted.labels.shape
    shown = np.flatnonzero(painted.visible)  # a track hidden under smaller masks gets no label
    anchors = _label_anchors(painted.labels, painted.boxes, shown + 1)
    placed: list[PlacedLabel] = []
    taken: list[tuple[int, int, int, int]] = []  # the placed labels' boxes
    for j in sorted(shown.tolist(), key=lambda j: (-tracks[order[j]].score, order[j])):
        track = tracks[order[j]]
        name = ascii_class_name(categories[track.category_id - 1], track.category_id)
        label = _place(track.track_id, [_fitted_label(name, track, width - 2 * LABEL_PAD, font), f"#{track.track_id}"],
                       anchors[j + 1], font, height, width, taken)
        if label is not None:
            placed.append(label)
            taken.append(label.box)
    return placed


def _place(
    track_id: int, texts: Sequence[str], anchor: tuple[int, int], font: LabelFont, height: int, width: int,
    taken: Sequence[tuple[int, int, int, int]],
) -> PlacedLabel | None:
    """The first of ``texts`` at the first of ``LABEL_SHIFTS`` around ``anchor`` (kept inside the frame) whose box
    overlaps none of the ``taken`` ones; a text wider or taller than the frame is passed over (cut off, "#1 0.73"
    read "#1 0.7" on a 32-pixel frame, where "#1" fits); None where none fits."""
    for text in texts:
        text_width, text_height, baseline = font.size(text)
        box_width = text_width + 2 * LABEL_PAD
        box_height = text_height + baseline + 2 * LABEL_PAD
        if box_width > width or box_height > height:
            continue
        for dx, dy in LABEL_SHIFTS:
            x = min(max(int(anchor[0] - box_width // 2 + dx * box_width), 0), width - box_width)
            y = min(max(int(anchor[1] - box_height // 2 + dy * box_height), 0), height - box_height)
            if _clear(x, y, x + box_width, y + box_height, taken):
                return PlacedLabel(track_id, text, (x, y, x + box_width, y + box_height))
    return None


def _clear(x0: int, y0: int, x1: int, y1: int, taken: Sequence[tuple[int, int, int, int]]) -> bool:
    """Whether the box ``[x0, x1) x [y0, y1)`` overlaps none of the ``taken`` ones. A plain loop: asked ~40 times per
    label, over every label placed before it (a generator in all() took twice as long)."""
    for left, top, right, bottom in taken:
        if x0 < right and left < x1 and y0 < bottom and top < y1:
            return False
    return True


def _draw_label(canvas: np.ndarray, label: PlacedLabel, font: LabelFont) -> None:
    """White text on a darkened box outlined in the track's colour."""
    x, y, x2, y2 = label.box
    canvas[y:y2, x:x2] = (canvas[y:y2, x:x2].astype(np.float32) * 0.35).astype(np.uint8)
    cv2.rectangle(canvas, (x, y), (x2 - 1, y2 - 1), track_colour(label.track_id), 1)
    origin = (x + LABEL_PAD, y + LABEL_PAD + font.size(label.text)[1])
    cv2.putText(canvas, label.text, origin, font.face, font.scale, (255, 255, 255), font.thickness, cv2.LINE_AA)


LABEL_PAD = 2  # pixels between a label's text and its box
# Where a label goes, in label widths (dx) and heights (dy) from centred on its anchor; the first clear one is used.
LABEL_SHIFTS = ((0, 0), (0, -1), (0, 1), (0, -2), (0, 2), (-0.5, 0), (0.5, 0), (-0.5, -1), (0.5, -1), (-0.5, 1),
                (0.5, 1))
ANCHOR_PIXELS = 1 << 15  # labels are anchored on a label image subsampled to about this many pixels


def _fitted_label(name: str, track: TrackResult, room: int, font: LabelFont) -> str:
    """``"<name> #<id> <score>"``, the name cut short and ending in '.' (the Hershey fonts have no '…') where the
    label would be wider than ``room`` pixels, and left out where even one letter does not fit."""
    tail = f"#{track.track_id} {track.score:.2f}"

    def fits(text: str) -> bool:
        return font.size(text)[0] <= room

    if fits(f"{name} {tail}"):
        return f"{name} {tail}"
    lo, hi = 0, len(name) - 1  # the longest cut name[:n] + "." that fits (widths grow with n)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(f"{name[:mid].rstrip()}. {tail}") else (lo, mid - 1)
    return f"{name[:lo].rstrip()}. {tail}" if lo > 0 else tail


def _label_anchors(labels: np.ndarray, boxes: np.ndarray, numbers: np.ndarray) -> dict[int, tuple[int, int]]:
    """For each label number in ``numbers`` (all present in ``labels``), the (x, y) of a pixel deep inside its region
    (of its pixels at least ``DEEP_SHARE`` as far from the region's border as its farthest — the frame's edge counting
    as border — the one nearest its centroid, the first in raster order of equally near ones: the centroid moves
    little while an object moves or changes shape a little, so the label does too, where the deepest pixel alone
    jumps along a body's length from frame to frame). Measured on
    ``labels`` subsampled to about ``ANCHOR_PIXELS`` (one distance transform for all labels, then each label within
    its box); a region too thin or small to show there is measured at full size in its box."""
    height, width = labels.shape
    step = max(1, math.isqrt(height * width // ANCHOR_PIXELS))
    offset = step // 2
    small = np.ascontiguousarray(labels[offset::step, offset::step])
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.bitwise_and(cv2.compare(cv2.dilate(small, kernel), cv2.erode(small, kernel), cv2.CMP_EQ),
                            _compare(small, 0, cv2.CMP_GT))
    distance = _distance_inside(inner)
    # All labels in one pass over the subsampled image, each as if measured within its box: per label, the
    # centroid (box-local rows/columns, as cv2.moments sums them: exact integer sums), the largest distance, then
    # among its pixels at least DEEP_SHARE as deep the one nearest the centroid (ties: the first in raster order).
    count = len(boxes) + 1
    wanted = np.zeros(max(count, int(small.max()) + 1), bool)
    wanted[numbers] = True
    flat = small.ravel()
    where = np.flatnonzero(wanted[flat])
    label = flat[where].astype(np.int64)
    rows, columns = np.divmod(where, small.shape[1])
    # the first subsampled row / column inside each box (0 for the background's dummy entry)
    first_row = np.concatenate(([0], np.maximum(0, -((offset - boxes[:, 1].astype(np.int64)) // step))))
    first_column = np.concatenate(([0], np.maximum(0, -((offset - boxes[:, 0].astype(np.int64)) // step))))
    local_rows, local_columns = rows - first_row[label], columns - first_column[label]
    pixels = np.maximum(np.bincount(label, minlength=count), 1).astype(np.float64)
    centre_row = np.bincount(label, weights=local_rows, minlength=count) / pixels
    centre_column = np.bincount(label, weights=local_columns, minlength=count) / pixels
    depth = distance.ravel()[where]
    deepest = np.full(count, -1, distance.dtype)
    np.maximum.at(deepest, label, depth)
    # DEEP_SHARE * a scalar of distance's dtype in the dtype numpy gives that product (`DEEP_SHARE * max`), then
    # compared in distance's dtype (numpy 1 casts a same-kind scalar to the array's dtype; numpy 2 has it already)
    threshold = (DEEP_SHARE * deepest.astype(type(DEEP_SHARE * deepest.dtype.type(1)))).astype(distance.dtype)
    deep = np.flatnonzero(depth >= threshold[label])
    near = (local_rows[deep] - centre_row[label[deep]]) ** 2 + (local_columns[deep] - centre_column[label[deep]]) ** 2
    ranked = deep[np.lexsort((where[deep], near, label[deep]))]
    chosen = ranked[np.flatnonzero(np.diff(label[ranked], prepend=-1) != 0)]
    found = dict(zip(label[chosen].tolist(), zip((offset + step * columns[chosen]).tolist(),
                                                 (offset + step * rows[chosen]).tolist(), strict=True), strict=True))
    anchors: dict[int, tuple[int, int]] = {}
    for number in numbers.tolist():
        if number in found:
            anchors[number] = found[number]
        else:  # too thin or small to show in the subsampled image: measured at full size in its box
            anchors[number] = _full_size_anchor(labels, boxes[number - 1], number)
    return anchors


def _full_size_anchor(labels: np.ndarray, box: np.ndarray, number: int) -> tuple[int, int]:
    """The (x, y) anchor (`_label_anchors`' rule) of label ``number`` (present) within its box (x, y, w, h) of the
    full-size ``labels`` (the box's edge counting as border), measured on the label's own bounding box plus a
    one-pixel margin (within the box): the same distances there (the margin's pixels are border already) and the same
    centroid (the crop's moments moved to the box's origin: exact integer sums), in a fraction of the box's area."""
    x, y, w, h = (int(v) for v in box)
    # OpenCV's compare and bounding rectangle: one pass each over the mask's box, which is often far larger than the
    # label's visible part (numpy's ==, any() per axis and flatnonzero took longer).
    inside = _compare(labels[y : y + h, x : x + w], number, cv2.CMP_EQ)  # 255 inside, 0 elsewhere
    left, top, region_width, region_height = cv2.boundingRect(inside)
    bottom, right = min(top + region_height + 1, h), min(left + region_width + 1, w)
    top, left = max(top - 1, 0), max(left - 1, 0)
    region = np.ascontiguousarray(inside[top:bottom, left:right])
    # Outside the label the distance is 0, below the threshold (the label's pixels are at least 1 from its border):
    # the deep pixels are picked from the distances as they are.
    distance = _distance_inside(region)
    moments = cv2.moments(region, binaryImage=True)
    area = int(moments["m00"])
    centre_row = (int(moments["m01"]) + top * area) / area
    centre_column = (int(moments["m10"]) + left * area) / area
    deep_rows, deep_columns = np.nonzero(distance >= DEEP_SHARE * distance.max())
    deep_rows, deep_columns = deep_rows + top, deep_columns + left
    nearest = np.argmin((deep_rows - centre_row) ** 2 + (deep_columns - centre_column) ** 2)
    return x + int(deep_columns[nearest]), y + int(deep_rows[nearest])


_NUMPY_COMPARISONS = {cv2.CMP_EQ: np.equal, cv2.CMP_GT: np.greater}


def _compare(image: np.ndarray, value: int, operation: int) -> np.ndarray:
    """``cv2.compare`` of a 2-D image with a number: 255 where it holds, 0 elsewhere, the image's shape. OpenCV's
    binding takes a one-column image of 1 or 4 rows for a scalar itself and the number for the 4-vector (value, 0, 0,
    0): a 1x1 image gave a 4x1 result (the overlay of 1x1 frames failed in copyTo) and a 4x1 one compared its rows
    2-4 with 0. One-column images are compared in numpy."""
    if image.shape[1] == 1:
        return _NUMPY_COMPARISONS[operation](image, value).astype(np.uint8) * np.uint8(255)
    return cv2.compare(image, value, operation)


def _distance_inside(region: np.ndarray) -> np.ndarray:
    """Each pixel's distance to the nearest pixel outside ``region`` (uint8, non-zero inside) or to the image's
    edge."""
    padded = cv2.copyMakeBorder(region, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_3)[1:-1, 1:-1]


# A label is anchored among a region's pixels at least this share of its largest distance from the border.
DEEP_SHARE = 0.8


def _colour_image(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """``colours[labels]`` as an ``[h, w, 3]`` image: one OpenCV table lookup per channel for uint8 labels (~10x
    faster than numpy's gather; ``colours`` then has 256 rows), numpy's ``take`` otherwise."""
    if labels.dtype != np.uint8:
        return np.take(colours, labels, axis=0)
    return cv2.merge([cv2.LUT(labels, np.ascontiguousarray(colours[:, channel])) for channel in range(3)])


STRIP_PIXELS = 1 << 20  # the tint and outlines are drawn in strips of about this many pixels
# Above 1920x1080 the encoder looks 2 frames ahead instead of its preset's 10: ~170 MB less at 3840x2160, where
# encoder memory would otherwise make peak memory grow with resolution (bench/bench_segment.py part d).
SHORT_LOOKAHEAD_PIXELS = 1920 * 1088
SHORT_LOOKAHEAD = "rc-lookahead=2:sync-lookahead=0"
# With x264's macroblock-tree rate control the same frames gave other bytes from run to run: its result depends on
# memory nobody wrote (MALLOC_PERTURB_ changes it; rc-lookahead=0, which also turns the tree off, or mbtree=0 alone
# make it stable). Without it the overlay is the same file whatever ran before, in any process or thread; on the
# bench video (854x480, 50 tracks drawn) 0.3 % smaller, 0.1 dB lower PSNR, ~8 % less encoder CPU time.
DETERMINISTIC = "mbtree=0"
# A variable rate's overlay is coded without B-frames, each frame coded in the order it shows: its last frame shows
# until the source's end (`_lasting_until`), and the MP4 muxer ends the track at the last packet coded (its decoding
# time plus duration) where the last frame's own end is its presentation time plus duration. With B-frames the last
# packet coded is often not the last frame, and the two timelines differ by the frames' reordering, which varies
# with the frames' intervals: FFmpeg read the overlay 0.1-0.2 s short, or its last frame lasting one frame.
NO_REORDERING = "bframes=0"
# x264's threads: a fixed number, so that the file does not depend on the machine. With its own choice (threads=0)
# the count came from the CPUs the process may use, and with it the slices of every frame: a shard on a 1-CPU slot
# wrote another overlay than one on 2 CPUs. Frame threads, not slices, keep one thread's compression (2 slices made
# a synthetic 854x480 clip 14 % larger, 4 slices 21 %); fewer above 1080p, where each frame thread holds another
# 50-70 MB of x264 buffers (3840x2160).
ENCODER_THREADS, LARGE_FRAME_ENCODER_THREADS = 4, 2
# Frames drawn at once: the CPUs this process may use, shared with the other ranks on the machine, within these
# bounds, and fewer when frames are so large that their drawing buffers would pass OVERLAY_RENDER_BYTES.
MIN_RENDER_THREADS, MAX_RENDER_THREADS = 2, 8
OVERLAY_RENDER_BYTES = 256 * 2**20
OVERLAY_READ_AHEAD_BYTES = 32 * 2**20  # frames decoded ahead of the overlay: up to 4, fewer when they are large


def decoded_ahead(frames: Iterable[tuple[int, np.ndarray]], depth: int = 4) -> Iterator[tuple[int, np.ndarray]]:
    """The same ``(frame_index, frame)`` pairs, decoded in a background thread up to ``depth`` frames ahead, so
    decoding overlaps drawing and encoding. Decoding errors are re-raised here (VideoReadError keeps its line)."""
    with BackgroundDecoder(frames, batch_size=1, max_queued_batches=depth) as batches:
        for batch in batches:
            yield batch.frame_indices[0], batch.frames[0]


def render_threads_for(height: int, width: int, cpus: int | None = None) -> int:
    """How many frames of ``height`` x ``width`` are drawn at once: ``cpus`` (default: ``usable_cpus()``) between
    ``MIN_RENDER_THREADS`` and ``MAX_RENDER_THREADS``, and no more than ``OVERLAY_RENDER_BYTES`` allows. A frame
    being drawn holds its canvas (3 bytes a pixel), label image (1-2), yuv420p planes (1.5) and one strip's
    temporaries (``STRIP_PIXELS`` x ~10 bytes)."""
    cpus = usable_cpus() if cpus is None else cpus
    per_frame = 6 * height * width + 10 * STRIP_PIXELS
    by_memory = OVERLAY_RENDER_BYTES // per_frame
    return max(MIN_RENDER_THREADS, min(MAX_RENDER_THREADS, cpus, by_memory))


def _bt601_limited_range() -> np.ndarray:
    """RGB (0-255) to BT.601's Y, Cb, Cr in limited range (16-235, 16-240), as a 3x4 ``cv2.transform`` matrix."""
    red, blue = 0.299, 0.114
    green = 1 - red - blue
    luma = np.array([red, green, blue]) * 219 / 255
    blue_difference = np.array([-red, -green, 1 - blue]) / (2 * (1 - blue)) * 224 / 255
    red_difference = np.array([1 - red, -green, -blue]) / (2 * (1 - red)) * 224 / 255
    return np.column_stack([np.stack([luma, blue_difference, red_difference]), [16, 128, 128]]).astype(np.float32)


_BT601_LIMITED = _bt601_limited_range()


def rgb_to_yuv420p(image: np.ndarray) -> np.ndarray:
    """An even-sized H×W×3 uint8 RGB image as yuv420p planes (``[3H/2, W]``: Y, then Cb, then Cr), BT.601 limited
    range. Each chroma sample is that of its 2x2 block's mean colour, as FFmpeg's conversion gives within 1:
    OpenCV's RGB2YUV_I420 took each block's chroma from one of its pixels, so a one-pixel outline at odd positions
    lost its colour (73 % of a blue outline's pixels stayed blue, 99 % now). Luma is OpenCV's (exact); the chroma
    costs ~0.7-1 ms more a frame at 854x480 (docs/streaming.md)."""
    height, width = image.shape[:2]
    planes = cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420)
    block_means = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    converted = cv2.transform(block_means, _BT601_LIMITED)  # a 3x4 matrix: OpenCV's fixed-point path
    chroma = planes[height:].reshape(2, height // 2, width // 2)  # views of the Cb and Cr planes
    cv2.extractChannel(converted, 1, chroma[0])
    cv2.extractChannel(converted, 2, chroma[1])
    return planes


def _lasting_until(packet: av.Packet, end_time: float | None, time_base: Fraction) -> av.Packet:
    """The encoder's last packet, with the duration that makes the overlay end at ``end_time`` (seconds, the last
    frame's end: a variable rate's ``VideoInfo.end_time``). The MP4 muxer ends the video at this packet's time plus
    its duration, and gave it one frame at the average rate (a GIF's 3-second last frame showed for 1.3 s: 5.1 s of
    6.5). Unchanged where the end is not known, or not past the packet's time. The last packet is the last frame
    where frames are coded in the order they show (`NO_REORDERING`, as a variable rate's are)."""
    if end_time is None or packet.pts is None:
        return packet
    end = round(end_time / time_base)
    if end > packet.pts:
        packet.duration = end - packet.pts
    return packet


# H.264's largest level (6.2, ITU-T H.264 Table A-1): at most 139,264 macroblocks (16x16 pixels) a frame, and at most
# sqrt(8 x that) = 1,055 of them along either side (A.3.1). Decoders and players refuse larger streams.
H264_MAX_FRAME_MACROBLOCKS = 139_264
H264_MAX_SIDE_MACROBLOCKS = math.isqrt(8 * H264_MAX_FRAME_MACROBLOCKS)


# What can be encoded at all: libx264 refuses a side above 16,384 pixels (avcodec_open2 fails), and FFmpeg's frames
# stop where 8 x (width + 128) x (height + 128) bytes reach 2**31 (av_image_check_size2: 16384x16130 is refused).
X264_MAX_SIDE = 16_384
FFMPEG_MAX_FRAME_BYTES = 2**31 - 1


def unencodable_overlay_reason(height: int, width: int) -> str | None:
    """Why an overlay of a ``height`` x ``width`` video cannot be encoded (one line), or None when it can. The encoder
    only finds out when its first frame comes, after the whole model pass; `oversized_overlay_warning` covers the
    sizes that can be encoded but that players refuse."""
    height, width = even_size(height, width)
    if max(height, width) > X264_MAX_SIDE:
        return (f"its frames are {width}x{height}: overlay.mp4 cannot be written, the H.264 encoder (libx264) takes "
                f"at most {X264_MAX_SIDE} pixels a side")
    if 8 * (width + 128) * (height + 128) > FFMPEG_MAX_FRAME_BYTES:
        return (f"its frames are {width}x{height}: overlay.mp4 cannot be written, FFmpeg takes frames of at most "
                "about 264 megapixels (16384x16128)")
    return None


def oversized_overlay_warning(height: int, width: int) -> str | None:
    """The warning an overlay of a ``height`` x ``width`` video deserves (one line), or None: a frame above H.264 level
    6.2's limits (about 35 megapixels, e.g. 9000x6000, or more than 16,880 pixels along a side) makes a file that
    many players refuse to play. The overlay keeps the source's size (its masks pixel-aligned): it is written
    anyway. Above `X264_MAX_SIDE` it cannot be (`unencodable_overlay_reason`)."""
    height, width = even_size(height, width)
    columns, rows = -(-width // 16), -(-height // 16)
    if columns * rows <= H264_MAX_FRAME_MACROBLOCKS and max(columns, rows) <= H264_MAX_SIDE_MACROBLOCKS:
        return None
    return (f"the overlay will be {width}x{height}, above H.264's largest level (6.2: about 35 megapixels, "
            f"{16 * H264_MAX_SIDE_MACROBLOCKS} pixels a side): many players will refuse to play overlay.mp4 "
            "(--formats without overlay leaves it out)")


def even_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) rounded up to even numbers (H.264 4:2:0 requirement)."""
    return height + height % 2, width + width % 2


def pad_to_even(image: np.ndarray) -> np.ndarray:
    """Pad an odd-sized H×W×3 image by one replicated row/column at the bottom/right."""
    height, width = image.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return image
    return np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


class OverlayVideoWriter(WriterDefaults):
    """Encode the overlay video of one processed video to MP4 (H.264, yuv420p, faststart), atomically.

    `frames` must yield the processed frames in order — either H×W×3 uint8 RGB arrays or the
    `(frame_index, frame)` pairs a reader yields (then each index is checked against
    `video.frame_indices`). Exactly `video.num_frames` frames of size (video.height, video.width) are
    required; otherwise ValueError is raised and no file is left behind.

    As an `OutputWriter` (`write_video`) it draws the tracks scoring at least `min_score`. Frames are drawn by
    `render_threads` threads (default: `render_threads_for` the video's size) and encoded by x264 with `threads`
    frame threads (0: ENCODER_THREADS, LARGE_FRAME_ENCODER_THREADS above 1080p: a number that does not depend on the
    machine, so neither do the bytes).
    """

    format = "overlay"
    file_name = OVERLAY_NAME
    draws_frames = True  # decodes and draws every frame: SegmentRunner runs it first, the others beside or after it

    def __init__(
        self, style: OverlayStyle | None = None, threads: int = 0, min_score: float = 0.0,
        render_threads: int | None = None,
    ) -> None:
        if render_threads is not None and render_threads < 1:
            raise ValueError(f"render_threads must be >= 1, not {render_threads}")
        self.style = style or OverlayStyle()
        self.renderer = OverlayRenderer(self.style)
        self.threads = threads
        self.min_score = min_score
        self.render_threads = render_threads

    def drawing_cpus(self, video: VideoInfo) -> int:
        """The CPUs this writer keeps busy on ``video``: its drawing threads and the encoder's thread."""
        return (self.render_threads or render_threads_for(video.height, video.width)) + 1

    def write_video(self, path: Path, video: SegmentedVideo) -> Path:
        """The `OutputWriter` interface: decode the processed frames again and draw the shown tracks on them."""
        shown = [track for track in video.tracks if track.score >= self.min_score]
        depth = max(1, min(4, OVERLAY_READ_AHEAD_BYTES // (3 * video.info.height * video.info.width)))
        return self.write(path, decoded_ahead(video.frames(), depth), video.info, shown, video.categories)

    def write(
        self,
        path: Path | str,
        frames: Iterable[np.ndarray | tuple[int, np.ndarray]],
        video: VideoInfo,
        tracks: Sequence[TrackResult],
        categories: Sequence[str],
    ) -> Path:
        check_tracks(video, list(tracks), len(categories))
        if video.num_frames == 0:
            raise ValueError(f"overlay for {video.stem!r}: no processed frames")
        if (reason := unencodable_overlay_reason(video.height, video.width)) is not None:
            raise ValueError(f"overlay for {video.stem!r}: {reason}")  # before the frames are decoded and drawn
        final = Path(path)
        with atomic_output_path(final) as tmp:
            try:
                self._encode(tmp, frames, video, tracks, categories)
            except OSError as error:  # file-system failures while muxing (disk full, permissions)
                raise OutputNotWritableError(final, error) from error
        return final

    def _encode(
        self,
        path: Path,
        frames: Iterable[np.ndarray | tuple[int, np.ndarray]],
        video: VideoInfo,
        tracks: Sequence[TrackResult],
        categories: Sequence[str],
    ) -> None:
        rate = video.processed_fps
        time_base, stamps = _clock(video)
        held: list[av.Packet] = []  # the last packet encoded, muxed once the next one comes (or with its duration)

        def mux(packets: Iterable[av.Packet]) -> None:
            for packet in packets:
                if held:
                    container.mux(held.pop())
                held.append(packet)

        def encode(planes: np.ndarray, position: int) -> None:
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = stamps[position] if stamps is not None else position
            frame.time_base = time_base
            mux(stream.encode(frame))

        # Frames are drawn (and converted to YUV) by the drawing threads, encoded in order here.
        drawing = self.render_threads or render_threads_for(video.height, video.width)
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container, \
                ThreadPoolExecutor(drawing, thread_name_prefix="clipvis-overlay") as renderers:
            stream = self._add_stream(container, video, rate, time_base)
            pending: deque[tuple[Future, int]] = deque()
            order = painting_order(tracks)
            written = 0
            for item in frames:
                if written >= video.num_frames:
                    raise ValueError(
                        f"overlay for {video.stem!r}: more frames than the {video.num_frames} processed"
                    )
                image = self._checked_frame(item, written, video)
                pending.append((renderers.submit(self._render_yuv, image, written, tracks, categories, order), written))
                written += 1
                if len(pending) > drawing:
                    future, position = pending.popleft()
                    encode(future.result(), position)
            while pending:
                future, position = pending.popleft()
                encode(future.result(), position)
            if written != video.num_frames:
                raise ValueError(f"overlay for {video.stem!r}: got {written} frames, expected {video.num_frames}")
            mux(stream.encode(None))
            if held:
                container.mux(_lasting_until(held.pop(), video.end_time if stamps is not None else None, time_base))

    def _render_yuv(
        self, image: np.ndarray, position: int, tracks: Sequence[TrackResult], categories: Sequence[str],
        order: Sequence[int] | None = None,
    ) -> np.ndarray:
        """The drawn frame as the encoder's yuv420p planes (``rgb_to_yuv420p``), converted here in the drawing
        threads rather than by the encoding thread."""
        drawn = self.renderer.render(image, position, tracks, categories, order)
        return rgb_to_yuv420p(pad_to_even(drawn))

    def _add_stream(self, container: av.container.OutputContainer, video: VideoInfo, rate: Fraction,
                    time_base: Fraction) -> av.video.stream.VideoStream:
        params = [DETERMINISTIC]
        if video.frame_times is not None:
            params.append(NO_REORDERING)
        if video.height * video.width > SHORT_LOOKAHEAD_PIXELS:
            params.append(SHORT_LOOKAHEAD)  # x264's look-ahead frames dominate memory above 1080p
        options = {"crf": str(self.style.crf), "preset": self.style.preset, "x264-params": ":".join(params)}
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.height, stream.width = even_size(video.height, video.width)
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        if video.pixel_aspect is not None:  # an anamorphic source: players stretch the overlay as they do it
            stream.codec_context.sample_aspect_ratio = video.pixel_aspect
        # What the frames are, said in the stream: players took untagged HD for BT.709 and shifted the colours of
        # frames `_render_yuv` converts with BT.601's matrix in limited range. The RGB converted is the source's as
        # players show it (`SegmentedVideo.frames`: an untagged HD source read as BT.709), or an image's sRGB: BT.709
        # primaries and transfer for HD video and images, nothing converts them.
        # FFmpeg's AVCOL_* numbers: SPC_SMPTE170M (BT.601), RANGE_MPEG (limited), PRI_BT709, TRC_BT709.
        for name, value in (("colorspace", 6), ("color_range", 1), ("color_primaries", 1), ("color_trc", 1)):
            if hasattr(stream.codec_context, name):  # (a PyAV without one of them writes the others)
                setattr(stream.codec_context, name, value)
        large = video.height * video.width > SHORT_LOOKAHEAD_PIXELS
        stream.codec_context.thread_type = "FRAME"
        stream.codec_context.thread_count = self.threads or (LARGE_FRAME_ENCODER_THREADS if large else ENCODER_THREADS)
        return stream

    @staticmethod
    def _checked_frame(item: np.ndarray | tuple[int, np.ndarray], position: int, video: VideoInfo) -> np.ndarray:
        if isinstance(item, tuple):
            index, image = item
            if index != video.frame_indices[position]:
                raise ValueError(
                    f"overlay for {video.stem!r}: frame {position} has source index {index}, "
                    f"expected {video.frame_indices[position]}"
                )
        else:
            image = item
        if image.shape != (video.height, video.width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"overlay for {video.stem!r}: frame {position} is {image.shape} {image.dtype}, "
                f"expected ({video.height}, {video.width}, 3) uint8"
            )
        return image
