"""Helpers that build YouTube-VIS style GT dicts and results lists from numpy masks (tests only)."""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def box_mask(height: int, width: int, top: int, left: int, box_height: int, box_width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[top : top + box_height, left : left + box_width] = 1
    return mask


def uncompressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """GT-style RLE: column-major run lengths starting with a run of zeros, `counts` a list of ints."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).astype(int).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict[str, Any]:
    """Results-style RLE: `counts` an ASCII string."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def gt_track(
    track_id: int,
    video_id: int,
    category_id: int,
    masks: list[np.ndarray | None],
    iscrowd: int = 0,
    areas: list[Any] | None = None,
) -> dict[str, Any]:
    """A GT annotation; `areas` defaults to the mask areas (None for absent frames)."""
    if areas is None:
        areas = [int(m.sum()) if m is not None else None for m in masks]
    return {
        "id": track_id,
        "video_id": video_id,
        "category_id": category_id,
        "iscrowd": iscrowd,
        "segmentations": [uncompressed_rle(m) if m is not None else None for m in masks],
        "areas": areas,
    }


def result(video_id: int, category_id: int, score: float, masks: list[np.ndarray | None]) -> dict[str, Any]:
    return {
        "video_id": video_id,
        "category_id": category_id,
        "score": score,
        "segmentations": [compressed_rle(m) if m is not None else None for m in masks],
    }


def gt_file(
    videos: list[tuple[int, int, int, int]],
    categories: list[dict[str, Any]] | list[int],
    annotations: list[dict[str, Any]],
) -> dict[str, Any]:
    """videos: (id, height, width, num_frames); categories: dicts or plain ids."""
    return {
        "videos": [
            {
                "id": vid,
                "height": h,
                "width": w,
                "length": n,
                "file_names": [f"v{vid}/{i:05d}.jpg" for i in range(n)],
            }
            for vid, h, w, n in videos
        ],
        "categories": [c if isinstance(c, dict) else {"id": c, "name": f"class_{c}"} for c in categories],
        "annotations": annotations,
    }


def random_case(seed: int, protocol: str = "ytvis") -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Small random GT + results exercising ties, crowd, id 0, absent/empty frames, short tracks, odd sizes."""
    rng = np.random.default_rng(seed)
    num_videos = int(rng.integers(2, 6))
    num_categories = int(rng.integers(2, 5))
    videos = []
    annotations: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    next_id = int(rng.integers(0, 2))  # sometimes a GT has id 0 (the reference never counts its matches)

    def random_masks(h: int, w: int, n: int, base: np.ndarray | None = None) -> list[np.ndarray | None]:
        masks: list[np.ndarray | None] = []
        for t in range(n):
            r = rng.random()
            if r < 0.15:
                masks.append(None)
            elif r < 0.2:
                masks.append(np.zeros((h, w), dtype=np.uint8))  # present but empty
            elif base is not None and base[t] is not None and rng.random() < 0.7:
                jitter = np.roll(base[t], shift=(int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(0, 1))
                masks.append(jitter)
            else:
                bh, bw = int(rng.integers(2, h)), int(rng.integers(2, w))
                masks.append(box_mask(h, w, int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw))
        return masks

    video_ids = rng.permutation(np.arange(1, num_videos + 1) * 3).tolist()  # not sorted in the file
    for vid in video_ids:
        h, w, n = int(rng.integers(6, 12)), int(rng.integers(6, 12)), int(rng.integers(2, 6))
        videos.append((int(vid), h, w, n))
        gt_masks_by_cat: dict[int, list] = {}
        for _ in range(int(rng.integers(0, 5))):
            cat = int(rng.integers(1, num_categories + 1))
            length = n if rng.random() < 0.8 else int(rng.integers(1, n + 2))  # zip semantics
            masks = random_masks(h, w, length)
            areas: list[Any] = [int(m.sum()) if m is not None else None for m in masks]
            if rng.random() < 0.5:
                areas = [a + float(rng.random()) if a else a for a in areas]  # float areas: int() matters
            if rng.random() < 0.2:
                areas = [a * 3 if a else a for a in areas]  # areas field not equal to mask areas
            track = gt_track(next_id, int(vid), cat, masks, iscrowd=int(rng.random() < 0.15), areas=areas)
            if rng.random() < 0.1 and track["segmentations"][0] is not None:
                odd = np.ones((h + 1, w), dtype=np.uint8)  # GT frame whose size differs from the video's
                track["segmentations"][0] = uncompressed_rle(odd)
            annotations.append(track)
            gt_masks_by_cat.setdefault(cat, []).append(masks)
            next_id += 1
        for _ in range(int(rng.integers(0, 9))):
            cat = int(rng.integers(1, num_categories + 2))  # num_categories + 1 is unknown -> dropped
            bases = gt_masks_by_cat.get(cat)
            base = bases[int(rng.integers(0, len(bases)))] if bases else None
            if base is not None and len(base) < n:
                base = base + [None] * (n - len(base))
            masks = random_masks(h, w, n, base[:n] if base is not None else None)
            score = float(rng.choice([0.9, 0.8, 0.5, 0.5, 0.3, 0.1]))  # many ties
            results.append(result(int(vid), cat, score, masks))
    categories: list[dict[str, Any]] = []
    for c in range(1, num_categories + 1):
        entry: dict[str, Any] = {"id": c, "name": f"class_{c}"}
        if protocol == "lvvis":
            entry["partition"] = int(rng.integers(0, 4)) if c > 2 else (0 if c == 1 else 3)
        categories.append(entry)
    if not results:
        vid, h, w, n = videos[0]
        results.append(result(vid, 1, 0.5, [box_mask(h, w, 0, 0, 2, 2)] * n))
    return gt_file(videos, categories, annotations), results
