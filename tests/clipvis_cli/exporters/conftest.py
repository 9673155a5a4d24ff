"""A synthetic `segment` output folder: a small video, and a ytvis.json with tracks that overlap, leave and come
back, have holes and several parts, written by segment's own YtvisWriter (no model)."""

from __future__ import annotations

import base64
import io
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from clipvis.cli import rle
from clipvis.cli.exporters.masks import crop_polygon
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.writers import YtvisWriter

HEIGHT, WIDTH, FRAMES, STRIDE = 48, 64, 12, 2
CATEGORIES = ["cat", "dog", "hot air balloon"]


def write_video(path: Path, frames: int = FRAMES, height: int = HEIGHT, width: int = WIDTH, rate: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            image = np.full((height, width, 3), (index * 20) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@dataclass
class SegmentOutput:
    folder: Path
    ytvis: Path
    video: Path
    info: VideoInfo
    tracks: list[TrackResult]
    masks: dict[int, list[np.ndarray | None]]  # track id -> per processed frame mask (None = absent)


def synthetic_masks(count: int) -> dict[int, list[np.ndarray | None]]:
    """Track 1 (dog, 0.9): a box with a hole, moving. Track 2 (cat, 0.6): two parts, overlapping track 1, absent
    on frames 2-3 (leaves and returns). Track 3 (balloon, 0.3): a disc only on the first 3 frames."""
    masks: dict[int, list[np.ndarray | None]] = {1: [], 2: [], 3: []}
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    for p in range(count):
        box = np.zeros((HEIGHT, WIDTH), bool)
        box[5 + p : 25 + p, 4:30] = True
        box[12 + p : 16 + p, 12:18] = False
        masks[1].append(box)
        two = np.zeros((HEIGHT, WIDTH), bool)
        two[20:35, 20:40] = True
        two[38:46, 50:60] = True
        masks[2].append(None if p in (2, 3) else two)
        disc = (yy - 30) ** 2 + (xx - 50) ** 2 <= 49
        masks[3].append(disc if p < 3 else None)
    return masks


def make_segment_output(root: Path, stem: str = "clip", stride: int = STRIDE, video_id: int = 1,
                        fps: int = 10, suffix: str = ".mp4") -> SegmentOutput:
    folder = root / stem
    folder.mkdir(parents=True)
    video = write_video(root / f"{stem}{suffix}", rate=fps)
    indices = list(range(0, FRAMES, stride))
    masks = synthetic_masks(len(indices))
    categories = {1: 2, 2: 1, 3: 3}
    scores = {1: 0.9, 2: 0.6, 3: 0.3}
    tracks = [
        TrackResult(t, categories[t], scores[t], [None if m is None else rle.encode(m) for m in masks[t]])
        for t in (1, 2, 3)
    ]
    info = VideoInfo(video_id=video_id, source=str(video), stem=stem, height=HEIGHT, width=WIDTH, fps=float(fps),
                     frame_stride=stride, frame_indices=indices)
    ytvis = YtvisWriter().write(folder / "ytvis.json", info, tracks, CATEGORIES)
    return SegmentOutput(folder, ytvis, video, info, tracks, masks)


@pytest.fixture
def segment_output(tmp_path) -> SegmentOutput:
    return make_segment_output(tmp_path / "out")


def decode_cvat_rle(runs: Sequence[int], left: int, top: int, width: int, height: int, image_height: int,
                    image_width: int) -> np.ndarray:
    """The H×W mask a CVAT XML mask (`rle`, `left`, `top`, `width`, `height`) stands for."""
    values = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
    mask = np.zeros((image_height, image_width), bool)
    mask[top : top + height, left : left + width] = values.reshape(height, width)
    return mask


def deserialize_mask(text: str) -> np.ndarray:
    """A FiftyOne / ETA serialised numpy array (`clipvis.cli.exporters.video_tools.serialize_mask`) read back."""
    with io.BytesIO(zlib.decompress(base64.b64decode(text))) as buffer:
        return np.load(buffer, allow_pickle=False)


def mask_polygon(mask: np.ndarray) -> np.ndarray | None:
    """The export's polygon (`crop_polygon`) of an H×W bool mask, cut to its box here; None for an empty mask or one
    without an outline of at least 3 points."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    crop = rle.MaskCrop((left, top, right - left, bottom - top), mask[top:bottom, left:right])
    return crop_polygon(crop, *mask.shape)


def polygon_mask(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Rasterise a polygon `[K, 2]` (x, y) as pycocotools does (even-odd), to an H×W bool mask."""
    encoded = coco_mask.frPyObjects([np.asarray(points, np.float64).reshape(-1).tolist()], height, width)
    return rle.decode(coco_mask.merge(encoded))  # clipvis.cli.rle.decode: pycocotools' warns with numpy 2


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks of one size (1.0 for two empty ones)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0
