"""Throughput of the model-free parts of `clipvis segment`: decoding, RLE encoding, JSON and overlay writing.

    python bench/bench_segment_io.py                        # 720p and 1080p, 90 frames, 10 tracks
    python bench/bench_segment_io.py --sizes 480x854 --frames 60 --tracks 20

A synthetic H.264 video (moving shapes over a noisy gradient) is made in a temporary directory, then timed:
decode only (VideoReader), decode through BackgroundDecoder (batches of 8), RLE encoding of the track masks,
writing ytvis.json + coco.json, and rendering + encoding overlay.mp4. Prints frames per second for each stage.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from clipvis.cli import rle
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.video_io import BackgroundDecoder, VideoReader
from clipvis.cli.writers import CocoWriter, OverlayVideoWriter, YtvisWriter


def make_video(path: Path, frames: int, height: int, width: int) -> None:
    rng = np.random.default_rng(0)
    base = (np.linspace(0, 200, width)[None, :, None] + rng.integers(0, 40, (height, width, 3))).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            image = base.copy()
            image[height // 4 : height // 2, (i * 7) % width : (i * 7) % width + width // 6] = (200, 60, 60)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def ellipse_masks(tracks: int, frames: int, height: int, width: int) -> np.ndarray:
    """tracks x frames x H x W bool, each track a moving ellipse covering ~5 % of the frame."""
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((tracks, frames, height, width), bool)
    ry, rx = height * 0.15, width * 0.1
    for t in range(tracks):
        for f in range(frames):
            cy = height * (0.2 + 0.6 * ((t * 0.13 + f * 0.01) % 1))
            cx = width * (0.15 + 0.7 * ((t * 0.29 + f * 0.013) % 1))
            masks[t, f] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


def timed(label: str, frames: int, action) -> object:
    start = time.perf_counter()
    result = action()
    seconds = time.perf_counter() - start
    print(f"  {label:<34} {seconds:7.2f} s  {frames / seconds:8.1f} frames/s")
    return result


def run(size: tuple[int, int], frames: int, tracks: int, directory: Path) -> None:
    height, width = size
    print(f"{height}x{width}, {frames} frames, {tracks} tracks")
    video_path = directory / f"bench_{height}x{width}.mp4"
    make_video(video_path, frames, height, width)
    reader = VideoReader(video_path)
    timed("decode (VideoReader)", frames, lambda: sum(1 for _ in reader))

    def background() -> int:
        with BackgroundDecoder(reader, batch_size=8) as batches:
            return sum(len(b) for b in batches)

    timed("decode (BackgroundDecoder, 8/batch)", frames, background)
    masks = ellipse_masks(tracks, frames, height, width)
    encoded = timed(
        "RLE encode (all tracks)", frames, lambda: [[rle.encode(m) for m in masks[t]] for t in range(tracks)]
    )
    info = VideoInfo(1, str(video_path), "bench", height, width, 30.0, 1, list(range(frames)))
    results = [TrackResult(t + 1, 1, 0.5, list(encoded[t])) for t in range(tracks)]
    timed("ytvis.json", frames, lambda: YtvisWriter().write(directory / "ytvis.json", info, results, ["x"]))
    timed("coco.json", frames, lambda: CocoWriter().write(directory / "coco.json", info, results, ["x"]))
    timed(
        "overlay.mp4 (decode+draw+encode)",
        frames,
        lambda: OverlayVideoWriter().write(directory / "overlay.mp4", reader, info, results, ["x"]),
    )
    sizes = {name: (directory / name).stat().st_size / 1e6 for name in ("ytvis.json", "coco.json", "overlay.mp4")}
    print("  sizes (MB): " + ", ".join(f"{name} {mb:.2f}" for name, mb in sizes.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["720x1280", "1080x1920"], help="HxW, e.g. 480x854")
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--tracks", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            height, width = (int(v) for v in size.lower().split("x"))
            run((height, width), args.frames, args.tracks, Path(tmp))


if __name__ == "__main__":
    main()
