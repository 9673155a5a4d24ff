"""Per-frame time of the masks' run lengths at the frame's resolution (VideoSession._full_resolution_runs).

    python bench/bench_masks.py [--sizes 854x480 1280x720 1920x1080] [--queries 100] [--threads 2] [--repeats 5]

For each frame size: milliseconds per frame of the official path (two bilinear resizes, a threshold into a
column-major buffer, run lengths: what an ``exact`` predictor and every CUDA predictor run) against the CPU's default,
the two resizes composed into one banded product per axis (clipvis.model.mask_upsampling), their ratio, and how many
pixels the two disagree on (only pixels whose logit is within float rounding of 0 may). The logits are object-like:
smooth blobs over about 15 % of the frame per query, at the size the released models' test resize gives (short side
480, long side at most 1333, padded to /32, a quarter of that; --short-side to change it). The machine may be
shared: the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from clipvis.model.predictor import MASK_CHUNK_ELEMENTS, VideoSession
from clipvis.model.preprocess import FrameGeometry


def geometry(width: int, height: int, short: int = 480, max_size: int = 1333, divisibility: int = 32) -> FrameGeometry:
    """The official test resize (short side ``short``, long side at most ``max_size``: the released models' 480 and
    1333, ``ClipVisConfig``), padded to ``divisibility``."""
    scale = min(short / min(height, width), max_size / max(height, width))
    resized = (int(height * scale + 0.5), int(width * scale + 0.5))
    padded = tuple(-(-s // divisibility) * divisibility for s in resized)
    return FrameGeometry((height, width), resized, padded)


def object_like_logits(queries: int, mask_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``[Q, h4, w4]`` smooth logits, about 15 % positive per query."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(queries, 1, max(2, mask_size[0] // 8), max(2, mask_size[1] // 8), generator=generator)
    return F.interpolate(coarse * 3 - 3.1, size=mask_size, mode="bilinear", align_corners=False)[:, 0].contiguous()


def session_for(geo: FrameGeometry, exact: bool) -> VideoSession:
    """A session with only what _full_resolution_runs reads (no model is needed to time the masks)."""
    session = VideoSession.__new__(VideoSession)
    session.predictor = SimpleNamespace(exact=exact, mask_chunk_elements=MASK_CHUNK_ELEMENTS["cpu"])
    session.geometry = geo
    session._composed_resize = None
    return session


def best_ms(session: VideoSession, logits: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    session._full_resolution_runs(logits)  # warm-up (and the composed resize's matrices)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        runs = session._full_resolution_runs(logits)
        best = min(best, time.perf_counter() - start)
    return best * 1e3, runs.to_masks()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["854x480", "1280x720", "1920x1080"])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--short-side", type=int, default=480, help="the model's test short side (INPUT.MIN_SIZE_TEST)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads} queries={args.queries} best of {args.repeats}; load average {os.getloadavg()}")
    print(f"{'frame':>10} {'official ms':>12} {'composed ms':>12} {'ratio':>7} {'pixels differing':>18}")
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        geo = geometry(width, height, short=args.short_side)
        logits = object_like_logits(args.queries, geo.mask_size)
        official, official_masks = best_ms(session_for(geo, exact=True), logits, args.repeats)
        composed, composed_masks = best_ms(session_for(geo, exact=False), logits, args.repeats)
        differing = int((official_masks != composed_masks).sum())
        print(f"{size:>10} {official:>12.1f} {composed:>12.1f} {official / composed:>6.2f}x "
              f"{differing:>9} of {official_masks.numel():.2e}", flush=True)
    print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
