"""Time `clipvis evaluate` scoring on an LV-VIS-val-sized synthetic GT + results (seeded).

Default size: 800 videos x 30 frames at 480x854, 1196 categories (LV-VIS partitions), ~5 GT tracks per video,
50 results per video (a third of them near a GT track, some of those with the wrong class, the rest random).
Masks are moving ellipses whose RLEs are built analytically (no per-pixel encoding), so generation is quick.

    python bench/bench_evaluate.py                  # full size, in memory
    python bench/bench_evaluate.py --videos 100     # smaller
    python bench/bench_evaluate.py --via-json DIR   # also write GT/results JSON to DIR and time the file path
                                                    # (and its peak RSS in a fresh process)

Prints seconds for each stage and the headline metrics.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from clipvis.cli.evaluation import VideoAPEvaluator, parse_ground_truth, parse_results, score_results_file


def ellipse_counts(height: int, width: int, cx: float, cy: float, rx: float, ry: float) -> list[int]:
    """Uncompressed column-major RLE counts of a filled ellipse clipped to the frame (may be empty)."""
    xs = np.arange(max(0, int(np.ceil(cx - rx))), min(width, int(np.floor(cx + rx)) + 1))
    if xs.size:
        half = ry * np.sqrt(np.clip(1.0 - ((xs - cx) / rx) ** 2, 0.0, 1.0))
        tops = np.clip(np.ceil(cy - half), 0, height).astype(np.int64)
        bottoms = np.clip(np.floor(cy + half) + 1, 0, height).astype(np.int64)
        keep = bottoms > tops
        xs, tops, bottoms = xs[keep], tops[keep], bottoms[keep]
    if xs.size == 0:
        return [height * width]
    starts = xs * height + tops
    ends = xs * height + bottoms
    zeros = starts - np.concatenate([[0], ends[:-1]])
    ones = bottoms - tops
    counts = np.empty(2 * xs.size + 1, dtype=np.int64)
    counts[0:-1:2] = zeros
    counts[1::2] = ones
    counts[-1] = height * width - ends[-1]
    return counts.tolist()


class SyntheticLvvis:
    """Seeded generator of an LV-VIS-like GT dict and results list."""

    def __init__(
        self,
        seed: int,
        videos: int,
        frames: int,
        height: int,
        width: int,
        categories: int,
        tracks: float,
        results: int,
    ) -> None:
        self.rng = np.random.default_rng(seed)
        self.num_videos, self.frames, self.height, self.width = videos, frames, height, width
        self.num_categories, self.tracks, self.results = categories, tracks, results

    def _trajectory(self) -> tuple[np.ndarray, ...]:
        rng, t = self.rng, np.arange(self.frames)
        rx = rng.uniform(8, 160)
        ry = rx * rng.uniform(0.5, 2.0)
        cx = rng.uniform(0, self.width) + rng.uniform(-4, 4) * t
        cy = rng.uniform(0, self.height) + rng.uniform(-3, 3) * t
        present = rng.random(self.frames) > 0.1
        return cx, cy, np.full(self.frames, rx), np.full(self.frames, ry), present

    def _frames(self, trajectory: tuple[np.ndarray, ...]) -> list[dict[str, Any] | None]:
        cx, cy, rx, ry, present = trajectory
        out: list[dict[str, Any] | None] = []
        for t in range(self.frames):
            counts = ellipse_counts(self.height, self.width, cx[t], cy[t], rx[t], ry[t]) if present[t] else None
            out.append({"size": [self.height, self.width], "counts": counts} if counts is not None else None)
        return out

    def build(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rng = self.rng
        partitions = np.repeat([0, 1, 2, 3], [77, 564, 240, 315])[: self.num_categories]
        if partitions.size < self.num_categories:
            partitions = rng.integers(0, 4, self.num_categories)
        categories = [
            {"id": k + 1, "name": f"class_{k + 1}", "partition": int(partitions[k])} for k in range(self.num_categories)
        ]
        videos, annotations, results = [], [], []
        for vid in range(1, self.num_videos + 1):
            videos.append(
                {
                    "id": vid,
                    "height": self.height,
                    "width": self.width,
                    "length": self.frames,
                    "file_names": [f"{vid:05d}/{t:05d}.jpg" for t in range(self.frames)],
                }
            )
            gt_tracks = []
            for _ in range(max(1, int(rng.poisson(self.tracks)))):
                trajectory = self._trajectory()
                category = int(rng.integers(1, self.num_categories + 1))
                frames = self._frames(trajectory)
                uncompressed = [f for f in frames if f is not None]
                areas = iter(mask_utils.area(mask_utils.frPyObjects(uncompressed, self.height, self.width)))
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "video_id": vid,
                        "category_id": category,
                        "iscrowd": 0,
                        "segmentations": frames,
                        "areas": [float(next(areas)) if f is not None else None for f in frames],
                    }
                )
                gt_tracks.append((trajectory, category))
            for r in range(self.results):
                if r < self.results // 3:
                    (cx, cy, rx, ry, present), category = gt_tracks[int(rng.integers(len(gt_tracks)))]
                    scale = rng.uniform(0.7, 1.3)
                    trajectory = (cx + rng.normal(0, 6), cy + rng.normal(0, 6), rx * scale, ry * scale, present)
                    if rng.random() < 0.3:
                        category = int(rng.integers(1, self.num_categories + 1))
                else:
                    trajectory = self._trajectory()
                    category = int(rng.integers(1, self.num_categories + 1))
                frames = self._frames(trajectory)
                # Results use compressed RLE strings and, like CLIP-VIS, encode every frame (empty masks too).
                empty = {"size": [self.height, self.width], "counts": [self.height * self.width]}
                filled = [f if f is not None else empty for f in frames]
                compressed = mask_utils.frPyObjects(filled, self.height, self.width)
                results.append(
                    {
                        "video_id": vid,
                        "category_id": category,
                        "score": float(rng.random()),
                        "segmentations": [
                            {"size": [self.height, self.width], "counts": c["counts"].decode("ascii")}
                            for c in compressed
                        ],
                    }
                )
        return {"videos": videos, "categories": categories, "annotations": annotations}, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=int, default=800)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--categories", type=int, default=1196)
    parser.add_argument("--tracks", type=float, default=5.0, help="mean GT tracks per video (Poisson)")
    parser.add_argument("--results", type=int, default=50, help="results per video")
    parser.add_argument("--via-json", type=Path, default=None, help="also write JSON files here and time the CLI path")
    args = parser.parse_args()

    start = time.perf_counter()
    generator = SyntheticLvvis(
        args.seed, args.videos, args.frames, args.height, args.width, args.categories, args.tracks, args.results
    )
    gt_dict, results = generator.build()
    print(
        f"generated {len(gt_dict['videos'])} videos, {len(gt_dict['annotations'])} GT tracks, {len(results)} results "
        f"({args.frames} frames at {args.height}x{args.width}, {args.categories} categories) "
        f"in {time.perf_counter() - start:.1f} s"
    )

    start = time.perf_counter()
    gt = parse_ground_truth(gt_dict, source="synthetic-gt")
    parsed_gt = time.perf_counter() - start
    start = time.perf_counter()
    detections = parse_results(results, gt, source="synthetic-results")
    parsed_results = time.perf_counter() - start
    start = time.perf_counter()
    result = VideoAPEvaluator("lvvis").evaluate(gt, detections)
    scored = time.perf_counter() - start
    print(f"parse+validate GT:      {parsed_gt:6.2f} s")
    print(f"parse+validate results: {parsed_results:6.2f} s")
    print(f"match+accumulate:       {scored:6.2f} s")
    print(f"total scoring:          {parsed_gt + parsed_results + scored:6.2f} s")
    named = {**result.stats, **{k: v for block in result.blocks for k, v in block.named_stats().items()}}
    shown = [name for name in ("AP", "AP50", "APb", "APn", "AR100") if named.get(name)]  # blocks: --categories
    print("  ".join(f"{name} {100 * named[name]:.2f}" for name in shown))

    if args.via_json is not None:
        args.via_json.mkdir(parents=True, exist_ok=True)
        gt_path, results_path = args.via_json / "gt.json", args.via_json / "results.json"
        gt_path.write_text(json.dumps(gt_dict))
        results_path.write_text(json.dumps(results))
        size_mb = (gt_path.stat().st_size + results_path.stat().st_size) / 1e6
        start = time.perf_counter()
        score_results_file(results_path, gt_path)
        print(f"from JSON files ({size_mb:.0f} MB, incl. reading): {time.perf_counter() - start:6.2f} s")
        # Memory of the file path alone: a fresh process (this one holds the generated data), as `clipvis evaluate
        # --results --gt` scores. It reads both files a track at a time: its peak grows with the GT's compressed
        # masks (~0.2 MB per 720p video of 10 tracks x 25 frames), not with the results file.
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys; from clipvis.cli.evaluation import score_results_file; "
                        "score_results_file(sys.argv[1], sys.argv[2])", str(results_path), str(gt_path)], check=True)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kilobytes on Linux
        print(f"  in a fresh process: {time.perf_counter() - start:6.2f} s, peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
