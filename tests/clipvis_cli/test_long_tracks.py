"""Tracks longer than 255 frames (pycocotools' area() of a list overflows a uint8 counter past 255)."""

from __future__ import annotations

import json

import numpy as np

from clipvis.cli import rle
from clipvis.cli.evaluation.ground_truth import parse_ground_truth
from clipvis.cli.evaluation.scoring import score_results
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.writers import CocoWriter

FRAMES = 300


def moving_masks() -> list[dict]:
    masks = np.zeros((FRAMES, 20, 30), dtype=bool)
    for t in range(FRAMES):
        masks[t, 5:15, t % 20 : t % 20 + 8] = True
    return [rle.encode(mask) for mask in masks]


def test_areas_of_many_rles() -> None:
    rles = moving_masks()
    assert rle.areas(rles) == [80] * FRAMES


def test_coco_writer_and_video_ap_on_a_300_frame_track(tmp_path) -> None:
    rles = moving_masks()
    video = VideoInfo(video_id=1, source="v.mp4", stem="v", height=20, width=30, fps=30, frame_stride=1,
                      frame_indices=list(range(FRAMES)))
    track = TrackResult(track_id=1, category_id=1, score=0.9, segmentations=list(rles))
    coco = json.loads(CocoWriter().write(tmp_path / "coco.json", video, [track], ["thing"]).read_text())
    assert len(coco["annotations"]) == FRAMES and coco["annotations"][0]["area"] == 80
    gt = parse_ground_truth({
        "videos": [{"id": 1, "height": 20, "width": 30, "length": FRAMES}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": rles,
                         "areas": [80.0] * FRAMES}],
    }, source="gt")
    result = score_results([{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": rles}], gt, "ytvis")
    assert abs(result.stats["AP"] - 1.0) < 1e-9
