"""How fast `clipvis export` reads a long video's results, and the memory it takes.

    python bench/bench_export_read.py [--frames 36000] [--tracks 20] [--height 480 --width 854]

Writes a synthetic `ytvis.json` (``--tracks`` tracks over ``--frames`` frames, each mask a moving ellipse, one frame
in seven empty), then in a fresh process each: reads it (`load_videos`) and reads every mask back from the tracks,
printing seconds and the process's peak RSS growth, next to `json.loads` of the same file (what export did before
it streamed).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from clipvis.cli import rle
from clipvis.cli.json_io import streamed_json


def write_results(path: Path, frames: int, tracks: int, height: int, width: int) -> None:
    rows, columns = np.ogrid[:height, :width]
    masks = []  # a few hundred distinct masks, reused: the file's text is what matters here
    for k in range(64):
        cy, cx = height * (0.3 + 0.4 * (k % 8) / 8), width * (0.2 + 0.6 * (k // 8) / 8)
        masks.append(rle.encode(((rows - cy) / (height / 6)) ** 2 + ((columns - cx) / (width / 8)) ** 2 <= 1))
    document = {
        "videos": iter([{"id": 1, "name": "long", "length": frames, "height": height, "width": width, "fps": 30.0,
                    "frame_indices": iter(range(frames))}]),
        "categories": [{"id": 1, "name": "object"}],
        "annotations": iter([{"video_id": 1, "category_id": 1, "score": 0.5,
                              "segmentations": (None if (f + k) % 7 == 0 else masks[(f + 3 * k) % 64]
                                                for f in range(frames))} for k in range(tracks)]),
    }
    with open(path, "w", encoding="utf-8") as handle:
        for piece in streamed_json(document):
            handle.write(piece)


def measure(path: str, how: str) -> None:
    """In a child process: read the file as ``how`` says, print seconds and peak RSS growth (MB; imports before)."""
    from clipvis.cli.exporters.loading import load_videos

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    again = ""
    if how == "json.loads":
        document = json.loads(Path(path).read_text(encoding="utf-8"))
        read = time.perf_counter()
        masks = sum(len(a["segmentations"]) for a in document["annotations"])
    else:
        videos = load_videos(Path(path))
        read = time.perf_counter()
        masks = sum(1 for video in videos for track in video.tracks for _ in track.segmentations)
        again = f", every mask read back {time.perf_counter() - read:.2f} s"
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"{how:>11}: {masks} masks, read {read - start:.2f} s{again}, "
          f"peak RSS +{grown:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=36_000)
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=854)
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "HOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(*args.measure)
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ytvis.json"
        write_results(path, args.frames, args.tracks, args.height, args.width)
        print(f"{path.stat().st_size / 1e6:.0f} MB results file: {args.frames} frames x {args.tracks} tracks at "
              f"{args.width}x{args.height}")
        for how in ("json.loads", "export"):
            subprocess.run([sys.executable, __file__, "--measure", str(path), how], check=True)


if __name__ == "__main__":
    main()
