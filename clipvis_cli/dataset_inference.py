"""Inference over a benchmark dataset in the official evaluator's mode, resumable, writing `results.json`.

Per-video results are cached under `OUTPUT/per_video/<video_id>.json` (atomic writes), keyed by the weights,
vocabulary and options in `OUTPUT/per_video/cache.json`, so an interrupted evaluation resumes where it stopped and a
changed setting never reuses stale results.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clipvis.cli import rle
from clipvis.cli.atomic import atomic_write_json, ensure_output_dir
from clipvis.cli.datasets import DatasetInputs
from clipvis.cli.evaluation.ground_truth import GtVideo
from clipvis.cli.inputs import VideoSource
from clipvis.cli.progress import Reporter
from clipvis.cli.segment import SegmentOptions, SegmentRunner
from clipvis.cli.video_io import VideoReadError

CACHE_DIR = "per_video"


@dataclass
class DatasetRunSummary:
    results: list[dict[str, Any]]
    computed: int  # videos run now
    reused: int  # videos taken from the per-video cache
    results_path: Path


def cache_identity(weights: str, vocabulary: list[str], options: dict[str, Any]) -> str:
    text = json.dumps({"weights": weights, "vocabulary": vocabulary, "options": options}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class DatasetInference:
    """Runs the predictor (exact mode) over a dataset's videos, official results format."""

    def __init__(self, predictor, inputs: DatasetInputs, options: SegmentOptions, reporter: Reporter) -> None:
        self.inputs = inputs
        self.options = options
        self.reporter = reporter
        self.runner = SegmentRunner(predictor, options, reporter, categories=inputs.vocabulary)
        self.category_ids = self._category_ids()

    def _category_ids(self) -> list[int]:
        """Contiguous label -> the dataset's category id (vocabulary is in category-id order)."""
        from clipvis.cli.datasets import read_dataset_index

        index = read_dataset_index(self.inputs.gt_path)
        return [c.id for c in sorted(index.categories, key=lambda c: c.id)]

    def _prepare_cache(self, output: Path) -> Path:
        cache = ensure_output_dir(output / CACHE_DIR)
        identity = cache_identity(self.options.weights, self.options.vocabulary, self.options.result_options())
        marker = cache / "cache.json"
        try:
            previous = json.loads(marker.read_text())["identity"]
        except (OSError, ValueError, KeyError, TypeError):
            previous = None
        if previous != identity:
            shutil.rmtree(cache)
            cache = ensure_output_dir(cache)
            atomic_write_json(marker, {"identity": identity, "weights": self.options.weights})
        return cache

    def video_source(self, video: GtVideo) -> VideoSource:
        frames = tuple(self.inputs.frame_paths(video))
        missing = next((p for p in frames if not p.is_file()), None)
        folder = frames[0].parent if frames else self.inputs.frames_root
        if not frames:
            return VideoSource(path=folder, kind="images", error="the GT lists no frames for this video")
        if missing is not None:
            return VideoSource(path=folder, kind="images", error=f"frame {missing} listed in the GT is missing")
        return VideoSource(path=folder, kind="images", frame_files=frames)

    def run_video(self, video: GtVideo) -> list[dict[str, Any]]:
        source = self.video_source(video)
        if not source.ok:
            raise VideoReadError(source.path, source.error or "unreadable")
        with self.runner.track(source, video.id, f"video{video.id}") as tracked:
            info = tracked.info
            if (info.height, info.width) != (video.height, video.width):
                raise VideoReadError(
                    source.path, f"frames are {info.width}x{info.height}, the GT says {video.width}x{video.height}"
                )
            empty = rle.encode(np.zeros((info.height, info.width), dtype=bool))
            return [
                {
                    "video_id": video.id,
                    "score": track.score,
                    "category_id": self.category_ids[track.category_id - 1],
                    "segmentations": [seg if seg is not None else empty for seg in track.segmentations],
                }
                for track in tracked.tracks
            ]

    def run(self, output: Path, max_videos: int | None = None) -> DatasetRunSummary:
        output = ensure_output_dir(output)
        cache = self._prepare_cache(output)
        videos = sorted(self.inputs.videos, key=lambda v: v.id)[:max_videos]
        results: list[dict[str, Any]] = []
        computed = reused = 0
        self.reporter.batch_started(len(videos))
        for video in videos:
            path = cache / f"{video.id}.json"
            entries = None
            if path.is_file():
                try:
                    entries = json.loads(path.read_text())
                    reused += 1
                    self.reporter.video_skipped(VideoSource(path=path), f"video{video.id}")
                except (OSError, ValueError):
                    entries = None
            if entries is None:
                entries = self.run_video(video)
                atomic_write_json(path, entries)
                computed += 1
                self.reporter.video_finished(VideoSource(path=path), f"video{video.id}", video.num_frames or 0, 0.0,
                                             [path])
            results.extend(entries)
        results_path = atomic_write_json(output / "results.json", results)
        return DatasetRunSummary(results, computed, reused, results_path)
