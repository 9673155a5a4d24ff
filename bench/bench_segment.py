"""End-to-end throughput and peak memory of `clipvis segment` on a synthetic 480p H.264 video (random weights).

    python bench/bench_segment.py                         # tiny model: (a) to (f)
    python bench/bench_segment.py --parts e --device cuda --replay-frames 300   # (e) on a GPU
    python bench/bench_segment.py --model convnext-b --parts a --device cuda --precision bf16 --size 1280x720 \
        --frames 200                                      # (a) on a GPU, bf16, 720p
    python bench/bench_segment.py --model r50 --skip-rss  # (a) with the full R50 architecture (slow on CPU)
    python bench/bench_segment.py --frames 60 --rss-frames 150 1500 --out-json figures.json
    python bench/bench_segment.py --parts b --child-env MALLOC_MMAP_THRESHOLD_=1048576   # (b) under another malloc
    python bench/bench_segment.py --model r50 --parts g --device cuda --precision bf16 --size 1280x720   # (g)
    python bench/bench_segment.py --model r50 --parts h --device cuda --precision bf16 --size 1280x720   # (h)
    python bench/bench_segment.py --parts j               # (j) torchrun's queue vs fixed halves, one long video
    python bench/bench_segment.py --parts k --long-frames 20000   # (k) a long video's memory (default: 2 hours)
    bash bench/device_checks.sh run                       # every GPU figure at once, on a machine with a GPU

(a) frames/s of the real pipeline (SegmentRunner: background decode, model, RLE worker, overlay + ytvis + coco
    writers) against model-only frames/s (VideoSession.push on the same frames, already decoded in memory, no
    writers), their ratio (target >= 0.85), and the per-stage timings the runner records in run.json.
(b) peak RSS of `clipvis segment` (tiny model, all outputs) on a short and a 10x longer video of the same size,
    each in a fresh subprocess; their ratio (target <= 1.10: memory must not grow with video length).
(c) peak RSS of `clipvis segment` with the R50 architecture on a short 480p video (target < 3 GB; the official
    code needs ~8.3 GB for 20 frames).
(d) peak RSS of `clipvis segment` (tiny model, 100 queries, all outputs) at 3840x2160 against 854x480, same frame
    count, each in a fresh process (target: ratio <= 1.5).
(e) a model-free ceiling: SegmentRunner with all outputs while the network's outputs are replayed from a recording
    (tiny model's, 100 queries) at 1280x720: frames/s of everything around the network (`--device cuda` on a GPU);
    then with the masks' run lengths replayed too: what the host's work alone (decode, matching, scoring, RLE
    strings, store, writers) sustains, the ceiling where a GPU makes the masks.
(f) wall time of `clipvis segment FOLDER` over 8 short videos: one process with --threads threads, and one with
    1 thread, against `torchrun --nproc-per-node 2` with one thread per process; and, to tell apart what keeps two
    ranks from 2x, the same two halves as `--shard 0/2` and `--shard 1/2` side by side without torchrun, and
    `--shard 0/2` alone.
(g) CUDA only: peak GPU memory of SegmentRunner (--model, all outputs) on a short and a 10x longer video of the same
    size, in one process after a warm-up video (target: ratio <= 1.10, memory flat with video length).
(h) frames/s of SegmentRunner.run_batch over a folder of --folder-videos videos (--model, all outputs, one process):
    each video's files written after its model pass, against written while the next video goes through the model
    (`background_writers`, the default on a GPU).
(i) what a `clipvis segment` process costs besides its video: wall time of the command on a 4-frame video
    (--model, all outputs, fresh process) minus the video's own time from run.json; median of --overhead-runs.
(j) wall time of 2 processes x 1 thread over a folder of one long video and --rank-videos - 1 short ones: fixed
    halves (`--shard 0/2` and `--shard 1/2` side by side: every other video of the sorted folder) against
    `torchrun --nproc-per-node 2`, where each rank takes the next video (largest first) whenever it is free.
(k) the memory of a long video (default: 2 hours at 30 frames/s, 128x96, --long-frames, --long-size): this process'
    RSS through SegmentRunner.run (all outputs, the CLI's heap trimmer) with the network's outputs replayed as in (e),
    so that hours of video take minutes: the peak RSS of the model pass's last quarter against its first quarter
    (target <= 1.10), its growth per frame over the second half, and the peak after it (the tracks' selection, which
    reads every frame's scores, and the writers).

Videos (moving coloured shapes over a smoothly textured gradient, 854x480, 30 fps) and checkpoints are made once per
run in a temporary folder. Random weights are adjusted so that masks are object-sized (see make_masks_object_like).
The machine may be shared: the load average is printed with every figure, and (a) reports the best of --repeats.
On a VM that hands free memory back to its hypervisor (the first line says so), memory touched again after a few
idle seconds waits for the host, so a run's time also depends on what ran before it (see free_page_reporting).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipvis.cli.memory import ARENA_VARIABLE, share_one_malloc_arena

# As the `clipvis` command does (clipvis.cli.launcher): one malloc arena, set before torch, PyAV or numpy start a
# thread. `--own-arenas` leaves glibc's default (8 arenas per CPU) here and in the `segment` subprocesses.
if "--own-arenas" in sys.argv:
    os.environ.setdefault(ARENA_VARIABLE, str(8 * (os.cpu_count() or 1)))
ONE_ARENA = share_one_malloc_arena() or os.environ.get(ARENA_VARIABLE) == "1"

import av  # noqa: E402 - after the arena setting
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_configs import MODEL_CONFIGS  # noqa: E402 - bench/ is the script's folder

from clipvis.cli.inputs import VideoSource  # noqa: E402
from clipvis.cli.memory import HUGE_PAGES_VARIABLE, HeapTrimmer, prefer_huge_pages, resident_bytes  # noqa: E402
from clipvis.cli.predictor_loading import load_predictor  # noqa: E402
from clipvis.cli.segment import DEFAULT_FORMATS, FORMATS, SegmentOptions, SegmentRunner  # noqa: E402
from clipvis.cli.video_io import VideoReader  # noqa: E402
from clipvis.cli.writers.overlay import render_threads_for  # noqa: E402
from clipvis.model import VideoPredictor, create_model, save_pretrained  # noqa: E402
from clipvis.model.preprocess import FramePreprocessor  # noqa: E402

HEIGHT, WIDTH, FPS = 480, 854, 30
VOCABULARY = ["person", "car", "dog", "cat", "bicycle", "kite", "horse", "boat"]
BATCH_FRAMES = 4  # the `segment` default
MASK_COVERAGE = 0.03  # random-weight masks are shifted to cover ~3 % of the frame each, like objects
DEFAULT_FRAMES = {"tiny": 120, "r50": 8, "convnext-b": 8}
BENCH_FORMATS: tuple[str, ...] = DEFAULT_FORMATS  # --formats: what every part's `segment` writes
GIB = 1024**3


def cli_heap_trimmer(enabled: bool) -> HeapTrimmer:
    """What `clipvis segment` does to its own process while it runs, so that (a) measures the same."""
    return HeapTrimmer(enabled=enabled)


def free_page_reporting(sys_root: Path = Path("/sys")) -> bool:
    """Whether this Linux guest hands its free memory back to the hypervisor: a virtio balloon (device 5) that
    negotiated free page reporting (feature bit 5; the sysfs ``features`` file has one character per bit). The host
    then backs such memory again only when it is touched, which makes timings depend on what ran before: on the
    bench VM (Firecracker) touching 2 GB took 1.4 s right after it was freed, 6.1 s after 5 s idle, 14.6 s after
    60 s."""
    try:
        devices = list((sys_root / "bus" / "virtio" / "devices").iterdir())
    except OSError:
        return False
    for device in devices:
        try:
            balloon = int((device / "device").read_text().strip(), 16) == 5
            features = (device / "features").read_text().strip()
        except (OSError, ValueError):
            continue
        if balloon and len(features) > 5 and features[5] == "1":
            return True
    return False


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------------------------- inputs


def write_synthetic_video(path: Path, frames: int, height: int = HEIGHT, width: int = WIDTH, fps: int = FPS) -> Path:
    """H.264 (libx264 ultrafast) video of coloured shapes moving over a smoothly textured gradient."""
    rng = np.random.default_rng(0)
    gradient = np.linspace(30, 200, width, dtype=np.float32)[None, :, None]
    texture = cv2.GaussianBlur(rng.normal(0, 60, (height, width, 3)).astype(np.float32), (0, 0), 12)
    background = np.clip(gradient + texture, 0, 255).astype(np.uint8)
    shapes = [  # (kind, colour, size, x speed, y speed)
        ("rect", (220, 40, 40), 90, 5, 2),
        ("circle", (40, 200, 60), 55, -4, 3),
        ("rect", (50, 80, 230), 120, 3, -2),
        ("circle", (240, 220, 40), 35, 7, 5),
    ]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            image = background.copy()
            for i, (kind, colour, size, vx, vy) in enumerate(shapes):
                x = int((i * 200 + vx * t) % (width - size)) + size // 2
                y = int((i * 110 + vy * t) % (height - size)) + size // 2
                if kind == "rect":
                    cv2.rectangle(image, (x - size // 2, y - size // 2), (x + size // 2, y + size // 3), colour, -1)
                else:
                    cv2.circle(image, (x, y), size // 2, colour, -1)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@torch.no_grad()
def make_masks_object_like(network, frame: np.ndarray, coverage: float = MASK_COVERAGE) -> None:
    """Shift a random model's mask logits so that masks cover ~`coverage` of the frame.

    Random weights give masks over ~60 % of the frame with RLE strings of ~20k characters, far from a trained
    model's objects, which would make RLE, the JSON files and the overlay look much costlier than they are.
    A constant mask-feature channel (1) times a constant mask-embedding component (-offset) subtracts `offset`
    from every logit; `offset` is the (1 - coverage) quantile of the logits on `frame`.
    """
    features = network.pixel_decoder.mask_features
    embedding = network.mask_decoder.mask_embed.layers[-1]
    features.weight[0], features.bias[0] = 0.0, 1.0
    embedding.weight[0], embedding.bias[0] = 0.0, 0.0
    cfg = network.config
    preprocess = FramePreprocessor(
        cfg.min_size_test, cfg.max_size_test, cfg.size_divisibility, cfg.pixel_mean, cfg.pixel_std
    )
    images, _ = preprocess(frame, torch.device("cpu"))
    logits = network(images).mask_logits.flatten()
    offset = torch.quantile(logits[:: max(1, logits.numel() // 1_000_000)], 1 - coverage)
    embedding.bias[0] = -offset


class BenchFiles:
    """Videos and checkpoints made on first use and kept for the rest of the run."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._videos: dict[tuple[int, int, int], Path] = {}
        self._weights: dict[str, Path] = {}
        self.generation_seconds: dict[str, float] = {}

    def video(self, frames: int, height: int = HEIGHT, width: int = WIDTH, name: str = "") -> Path:
        key = (frames, height, width) if not name else (frames, height, width, name)
        if key not in self._videos:
            start = time.perf_counter()
            path = self.root / f"{name or 'synthetic'}_{width}x{height}_{frames}f.mp4"
            self._videos[key] = write_synthetic_video(path, frames, height, width)
            self.generation_seconds[f"video {path.name}"] = time.perf_counter() - start
        return self._videos[key]

    def weights(self, model: str) -> Path:
        if model not in self._weights:
            start = time.perf_counter()
            torch.manual_seed(0)
            network = create_model(MODEL_CONFIGS[model])
            make_masks_object_like(network, decode_all(self.video(BATCH_FRAMES))[:1])
            path = save_pretrained(network, self.root / f"{model}.safetensors")
            self._weights[model] = path
            self.generation_seconds[f"weights {model}"] = time.perf_counter() - start
        return self._weights[model]


# ------------------------------------------------------------------------------- (a) pipeline throughput


class SilentReporter:
    """A segment Reporter that says nothing."""

    def batch_started(self, num_videos: int) -> None: ...
    def video_started(self, source, stem, total_frames) -> None: ...
    def frames_done(self, count: int) -> None: ...
    def video_finished(self, source, stem, frames, fps, outputs) -> None: ...
    def video_skipped(self, source, stem, reason: str = "") -> None: ...
    def video_failed(self, source, stem, message) -> None: ...
    def close(self) -> None: ...


@dataclass
class ThroughputResult:
    model: str
    frames: int
    device: str
    threads: int
    model_only_fps: list[float] = field(default_factory=list)
    end_to_end_fps: list[float] = field(default_factory=list)
    run_json_timings: dict[str, float] = field(default_factory=dict)
    load_average: list[float] = field(default_factory=list)
    precision: str = "fp32"
    size: str = f"{WIDTH}x{HEIGHT}"

    @property
    def ratio(self) -> float:
        """Best end-to-end over best model-only (on a shared machine the best run is the least disturbed)."""
        return max(self.end_to_end_fps) / max(self.model_only_fps)


def bench_options(
    files: BenchFiles, model: str, output: str, device: str, precision: str = "fp32"
) -> SegmentOptions:
    """`segment`'s options for the bench: its vocabulary, ``model``'s random checkpoint, all outputs into
    ``files.root / output``, batches of BATCH_FRAMES, nothing skipped."""
    return SegmentOptions(
        vocabulary=VOCABULARY, weights=str(files.weights(model)), output=files.root / output, formats=BENCH_FORMATS,
        device=device, precision=precision, batch_frames=BATCH_FRAMES, skip_existing=False,
    )


def make_runner(
    predictor, options: SegmentOptions, render_threads: int | None, reporter: SilentReporter | None = None
) -> SegmentRunner:
    """SegmentRunner with the `segment` command's writers; `render_threads` overrides the overlay's drawing threads
    (default: clipvis.cli.writers.overlay.render_threads_for, by CPUs and frame size)."""
    runner = SegmentRunner(predictor, options, reporter or SilentReporter())
    for writer in runner.writers:
        if hasattr(writer, "render_threads"):
            writer.render_threads = render_threads
    return runner


def decode_all(video: Path) -> np.ndarray:
    return np.stack([frame for _, frame in VideoReader(video)])


def model_only_fps(predictor, frames: np.ndarray) -> float:
    """Frames/s of VideoSession.push over in-memory frames (batches of BATCH_FRAMES), plus finish()."""
    session = predictor.new_video()
    start = time.perf_counter()
    for first in range(0, len(frames), BATCH_FRAMES):
        session.push(frames[first : first + BATCH_FRAMES])
    session.finish()
    return len(frames) / (time.perf_counter() - start)


def end_to_end_fps(runner: SegmentRunner, video: Path, video_id: int) -> tuple[float, dict[str, float]]:
    """Frames/s of SegmentRunner.run (decode -> model -> RLE -> overlay/ytvis/coco) and its run.json timings."""
    start = time.perf_counter()
    outcome = runner.run(VideoSource(video), video_id, video.stem)
    seconds = time.perf_counter() - start
    if outcome.status != "complete":
        raise RuntimeError(f"segment run {outcome.status}: {outcome.error}")
    manifest = json.loads((outcome.outputs[0].parent / "run.json").read_text())  # repeats get `stem-2/`, ...
    return outcome.frames / seconds, manifest["timings"]


def measure_throughput(
    files: BenchFiles, model: str, frames: int, device: str, threads: int, repeats: int,
    precision: str = "fp32", height: int = HEIGHT, width: int = WIDTH, render_threads: int | None = None,
) -> ThroughputResult:
    video = files.video(frames, height, width)
    options = bench_options(files, model, f"out_{model}", device, precision)
    predictor = load_predictor(options)
    runner = make_runner(predictor, options, render_threads)
    decoded = decode_all(video)
    result = ThroughputResult(model, len(decoded), device, threads, load_average=load_average(),
                              precision=precision, size=f"{width}x{height}")
    predictor.new_video().push(decoded[:BATCH_FRAMES])  # warm-up (allocator, kernels, lazy inits)
    for repeat in range(repeats):
        result.model_only_fps.append(model_only_fps(predictor, decoded))
        fps, timings = end_to_end_fps(runner, video, repeat + 1)
        result.end_to_end_fps.append(fps)
        result.run_json_timings = timings
    result.load_average += load_average()
    return result


# ------------------------------------------------------------------------------------ (b), (c) peak RSS


@dataclass
class ChildRun:
    label: str
    frames: int
    peak_rss_bytes: int
    wall_seconds: float
    load_average: list[float]
    cpu_seconds: float  # user + system time of the command and the processes it waited for


# A child's ru_maxrss starts at the peak RSS of the process it was forked from (Linux keeps the high-water mark
# across exec), so the command is started from a small launcher process, which reports its child's peak (and CPU
# time, which includes the processes the child waited for: torchrun's ranks).
PEAK_RSS_LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_child(label: str, frames: int, command: list[str], env: dict[str, str], log: Path) -> ChildRun:
    """Run a command in a fresh process: its own peak RSS, wall and CPU time, and the load average around it."""
    report = log.with_suffix(".maxrss")
    before = load_average()
    start = time.perf_counter()
    with log.open("wb") as sink:
        launcher = [sys.executable, "-c", PEAK_RSS_LAUNCHER, str(report), *command]
        returncode = subprocess.run(launcher, stdout=sink, stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    if returncode != 0:
        text = log.read_text(errors="replace")
        # torchrun's own report ends the log: the ranks' errors (a Python error, a C++ abort) come before it
        errors = [line for line in text.splitlines() if re.search(r"error|terminate|what\(\)|Traceback", line, re.I)]
        raise RuntimeError(f"{label}: exit code {returncode}\n" + "\n".join(errors[:40]) + f"\n...\n{text[-2000:]}")
    peak_kib, cpu = report.read_text().split()  # ru_maxrss is in KiB on Linux
    return ChildRun(label, frames, int(peak_kib) * 1024, seconds, before + load_average(), float(cpu))


def child_env(root: Path, threads: int, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CLIPVIS_CACHE=str(root / "cache"), CLIPVIS_OFFLINE="1", OMP_NUM_THREADS=str(threads), **extra)
    return env


def segment_rss(
    files: BenchFiles, model: str, frames: int, device: str, threads: int, extra_env: dict[str, str]
) -> ChildRun:
    """Peak RSS of `python -m clipvis segment` (all outputs on) in a fresh process."""
    video = files.video(frames)
    weights = files.weights(model)
    out = files.root / f"rss_{model}_{frames}"
    command = [
        sys.executable, "-m", "clipvis", "segment", str(video), "--vocab", ",".join(VOCABULARY),
        "--weights", str(weights), "-o", str(out), "--device", device, "--batch-frames", str(BATCH_FRAMES),
        "--overwrite", "--log-format", "jsonl",
    ]
    label = f"segment {model} {frames} frames"
    run = run_child(label, frames, command, child_env(files.root, threads, extra_env), out.with_suffix(".log"))
    manifest = segment_manifest(files, model, frames)
    if manifest["frames"] != frames:
        raise RuntimeError(f"{label}: run.json says {manifest['frames']} frames")
    return run


def segment_manifest(files: BenchFiles, model: str, frames: int) -> dict[str, Any]:
    """The run.json of the last `segment_rss` run of ``model`` on the ``frames``-frame video."""
    return json.loads((files.root / f"rss_{model}_{frames}" / files.video(frames).stem / "run.json").read_text())


def baseline_rss(files: BenchFiles, threads: int, extra_env: dict[str, str]) -> ChildRun:
    """Peak RSS of a process that only imports what `segment` imports (the fixed part of every figure)."""
    command = [sys.executable, "-c", "import torch, cv2, av, open_clip, clipvis.cli.app, clipvis.model"]
    env = child_env(files.root, threads, extra_env)
    return run_child("imports only", 0, command, env, files.root / "imports.log")


# ---------------------------------------------------------------------------- (i) a process' start and end


def process_overhead(files: BenchFiles, model: str, device: str, threads: int, runs: int) -> dict[str, Any]:
    """What a `clipvis segment` process costs besides its video: wall time of the whole command on a 4-frame video
    (``model``, all outputs, a fresh process each time) minus the video's own time in run.json (timings.total):
    imports, loading the model and the text embeddings (cached after the first run), and the exit."""
    rows = []
    for _ in range(runs):
        run = segment_rss(files, model, BATCH_FRAMES, device, threads, {})
        video_seconds = segment_manifest(files, model, BATCH_FRAMES)["timings"]["total"]
        rows.append({"wall_s": run.wall_seconds, "video_s": video_seconds,
                     "overhead_s": run.wall_seconds - video_seconds, "cpu_s": run.cpu_seconds})
    return {"runs": rows, "median_overhead_s": statistics.median(r["overhead_s"] for r in rows)}


# ----------------------------------------------------------------------------- (d) peak RSS by resolution


def segment_rss_at(
    files: BenchFiles, frames: int, height: int, width: int, device: str, threads: int, extra_env: dict[str, str]
) -> ChildRun:
    """Peak RSS of `python -m clipvis segment` (tiny model, 100 queries, all outputs) on a height x width video."""
    video = files.video(frames, height, width)
    out = files.root / f"rss_{width}x{height}_{frames}"
    command = [
        sys.executable, "-m", "clipvis", "segment", str(video), "--vocab", ",".join(VOCABULARY),
        "--weights", str(files.weights("tiny")), "-o", str(out), "--device", device,
        "--batch-frames", str(BATCH_FRAMES), "--overwrite", "--log-format", "jsonl",
    ]
    label = f"segment tiny {width}x{height} {frames} frames"
    return run_child(label, frames, command, child_env(files.root, threads, extra_env), out.with_suffix(".log"))


# ------------------------------------------------------------------ (e) model-free ceiling: replayed outputs


class ReplayedNetwork:
    """Stands in for a ClipVis forward: returns recorded FrameOutputs (cycling through them), so the pipeline
    around the network (decode, preprocessing, classification, matching, full-resolution masks, RLE, writers) is
    measured alone. The recording is moved to the device once."""

    def __init__(self, recorded: list, device: torch.device) -> None:
        self.recorded = [
            type(outputs)(**{k: v.to(device) for k, v in vars(outputs).items()}) for outputs in recorded
        ]
        self.calls = 0

    def __call__(self, images: torch.Tensor):
        outputs = self.recorded[self.calls % len(self.recorded)]
        self.calls += 1
        if outputs.mask_logits.shape[0] != images.shape[0]:
            raise RuntimeError("replay: batch size differs from the recording")
        return outputs


class ReplayedMaskRuns:
    """Stands in for VideoSession._full_resolution_runs: returns the run lengths of recorded frames' masks (cycling
    through them), so neither the upsampling nor the run lengths cost anything and only the host's work is left:
    decoding, matching, scoring, compressing and storing the run lengths, and the writers. On a GPU the masks are
    made on the device; this tells what the host alone can sustain. The recorded masks do not follow the replayed
    frame's track order (the cost does not depend on it)."""

    def __init__(self, recorded: list) -> None:
        self.recorded = recorded
        self.calls = 0

    def __call__(self, mask_logits: torch.Tensor):
        runs = self.recorded[self.calls % len(self.recorded)]
        self.calls += 1
        return type(runs)(runs.counts, runs.lengths, runs.size)


def replay_ceiling(
    files: BenchFiles, frames: int, device: str, height: int, width: int, render_threads: int | None = None,
    replay_masks: bool = False,
) -> dict[str, Any]:
    """Frames/s of SegmentRunner (all outputs) with the network's outputs replayed (tiny model, 100 queries);
    ``replay_masks``: the masks' run lengths replayed too (the host's work alone)."""
    video = files.video(frames, height, width)
    options = bench_options(files, "tiny", "out_replay", device)
    with replayed_predictor(files, options, height, width, replay_masks) as predictor:
        runner = make_runner(predictor, options, render_threads)
        before = load_average()
        fps, timings = end_to_end_fps(runner, video, 1)
        fps_best = max(fps, end_to_end_fps(runner, video, 2)[0])
    return {
        "frames": frames, "size": f"{width}x{height}", "queries": predictor.model.config.num_queries, "device": device,
        "end_to_end_fps": fps_best, "timings": timings, "load_average": before + load_average(),
        "render_threads": render_threads or render_threads_for(height, width), "masks_replayed": replay_masks,
    }


@contextlib.contextmanager
def replayed_predictor(
    files: BenchFiles, options: SegmentOptions, height: int, width: int, replay_masks: bool
) -> Iterator[VideoPredictor]:
    """The predictor of ``options`` (tiny model) with its network's outputs replayed from a recording of
    ``2 * BATCH_FRAMES`` frames of ``height`` x ``width`` (and with ``replay_masks`` the masks' run lengths too), until
    the block ends."""
    predictor = load_predictor(options)
    model = predictor.model
    decoded = decode_all(files.video(2 * BATCH_FRAMES, height, width))
    recorded = []
    with torch.no_grad():
        for first in range(0, len(decoded), BATCH_FRAMES):
            images, _ = predictor.preprocessor(decoded[first : first + BATCH_FRAMES], predictor.device)
            recorded.append(model(images))
    replay = ReplayedNetwork(recorded, predictor.device)
    session_class = type(predictor.new_video())
    full_resolution_runs = session_class._full_resolution_runs
    if replay_masks:
        replayed_runs = ReplayedMaskRuns(record_mask_runs(predictor, decoded))
        session_class._full_resolution_runs = lambda _session, mask_logits: replayed_runs(mask_logits)
    model.forward = replay  # the instance's forward: nn.Module.__call__ now returns the recording
    try:
        yield predictor
    finally:
        session_class._full_resolution_runs = full_resolution_runs
        del model.forward


def record_mask_runs(predictor, decoded: np.ndarray) -> list:
    """The MaskRuns of every frame of ``decoded`` as the real pipeline makes them (on the host)."""
    session = predictor.new_video()
    runs = []
    for first in range(0, len(decoded), BATCH_FRAMES):
        runs += [frame.mask_runs.wait() for frame in session.push(decoded[first : first + BATCH_FRAMES])]
    return [type(run)(run.counts.cpu(), run.lengths.cpu(), run.size) for run in runs]


# ------------------------------------------------------- (k) a long video's memory, network outputs replayed


class MemorySampler(SilentReporter):
    """A silent Reporter that counts processed frames, while a thread samples the process' RSS every ``interval``
    seconds as (seconds, frames processed so far, RSS bytes)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.frames = 0
        self.samples: list[tuple[float, int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)

    def frames_done(self, count: int) -> None:
        self.frames += count

    def __enter__(self) -> MemorySampler:
        self._start = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.samples.append((time.perf_counter() - self._start, self.frames, resident_bytes() or 0))
            if self._stop.wait(self.interval):
                return


def long_video_memory(
    files: BenchFiles, frames: int, device: str, height: int, width: int, render_threads: int | None = None,
) -> dict[str, Any]:
    """RSS of this process through SegmentRunner.run on one ``frames``-frame video (all outputs, the CLI's heap
    trimmer), with the network's outputs replayed (tiny model, 100 queries): the model pass costs what the host does
    around the network, so a video of hours runs in minutes, and what a video keeps per frame shows as RSS growing
    with the frames processed."""
    video = files.video(frames, height, width)
    options = bench_options(files, "tiny", "out_long", device)
    with replayed_predictor(files, options, height, width, replay_masks=False) as predictor, \
            cli_heap_trimmer(enabled=True):
        sampler = MemorySampler()
        runner = make_runner(predictor, options, render_threads, sampler)
        before = resident_bytes() or 0
        with sampler:
            fps, timings = end_to_end_fps(runner, video, 1)
    during = [(frames_done, rss) for _, frames_done, rss in sampler.samples if frames_done < frames]
    after = [rss for _, frames_done, rss in sampler.samples if frames_done >= frames]
    quarter = max(1, frames // 4)
    first = [rss for done, rss in during if done < quarter]
    last = [rss for done, rss in during if done >= frames - quarter]
    by_frames = np.asarray(during[len(during) // 2 :], dtype=np.float64)
    slope = float(np.polyfit(by_frames[:, 0], by_frames[:, 1], 1)[0]) if len(by_frames) > 2 else float("nan")
    outputs = options.output / video.stem
    return {
        "frames": frames, "size": f"{width}x{height}", "device": device, "end_to_end_fps": fps, "timings": timings,
        "rss_before_bytes": before, "samples": sampler.samples,
        "model_pass_first_quarter_peak_bytes": max(first, default=0),
        "model_pass_last_quarter_peak_bytes": max(last, default=0),
        "model_pass_second_half_slope_bytes_per_frame": slope,
        "after_model_pass_peak_bytes": max(after, default=0),
        "output_bytes": {path.name: path.stat().st_size for path in sorted(outputs.iterdir()) if path.is_file()},
    }


def report_long_video(run: dict[str, Any], fps: float) -> None:
    mib = 2**20
    first, last = run["model_pass_first_quarter_peak_bytes"], run["model_pass_last_quarter_peak_bytes"]
    ratio = last / first if first else float("nan")
    hours = run["frames"] / fps / 3600
    rows = [
        ("RSS before the video", f"{run['rss_before_bytes'] / mib:8.1f} MiB"),
        ("model pass, first quarter: peak", f"{first / mib:8.1f} MiB"),
        ("model pass, last quarter: peak", f"{last / mib:8.1f} MiB"),
        ("ratio last / first quarter", f"{ratio:8.3f}  (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})"),
        ("growth over the second half", f"{run['model_pass_second_half_slope_bytes_per_frame']:8.1f} bytes/frame"
         + ("  (warm-up: the allocator's and the scores' first 64 MiB; meaningful from ~20,000 frames)"
            if run["frames"] < 20_000 else "")),
        ("after the model pass (selection, writers): peak", f"{run['after_model_pass_peak_bytes'] / mib:8.1f} MiB"),
        ("end to end", f"{run['end_to_end_fps']:8.2f} frames/s"),
        *((k, f"{v:9.1f} s") for k, v in run["timings"].items()),
        *((name, f"{size / mib:8.1f} MiB") for name, size in run["output_bytes"].items()),
    ]
    print_table(
        f"(k) a long video's memory: SegmentRunner, all outputs, network outputs replayed, {run['frames']} frames "
        f"{run['size']} ({hours:.2f} h at {fps:g} frames/s), device={run['device']}", rows,
    )


# ---------------------------------------------------------------- (g) GPU memory against video length


def device_memory_by_length(
    files: BenchFiles, model: str, frame_counts: list[int], device: str, precision: str, height: int, width: int,
) -> list[dict[str, Any]]:
    """Peak memory on the CUDA device of SegmentRunner (all outputs) over videos of ``frame_counts`` frames of one
    size, one process, after a warm-up video (kernels, cuDNN workspaces, the text embeddings): the most the
    caching allocator had allocated and reserved during each video, the model's weights included."""
    options = bench_options(files, model, "out_memory", device, precision)
    predictor = load_predictor(options)
    target = predictor.device
    runner = SegmentRunner(predictor, options, SilentReporter())
    end_to_end_fps(runner, files.video(2 * BATCH_FRAMES, height, width), 1)  # warm-up
    runs = []
    for video_id, frames in enumerate(frame_counts, start=2):
        video = files.video(frames, height, width)
        torch.cuda.synchronize(target)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(target)
        resident = torch.cuda.memory_allocated(target)
        fps, _ = end_to_end_fps(runner, video, video_id)
        runs.append({
            "frames": frames, "end_to_end_fps": fps, "resident_bytes": resident,
            "peak_allocated_bytes": torch.cuda.max_memory_allocated(target),
            "peak_reserved_bytes": torch.cuda.max_memory_reserved(target),
        })
    return runs


def report_device_memory(runs: list[dict[str, Any]], model: str, size: str, precision: str) -> float:
    short, long = runs[0], runs[-1]
    ratio = long["peak_allocated_bytes"] / short["peak_allocated_bytes"]
    rows = [
        (f"{run['frames']} frames", f"peak allocated {run['peak_allocated_bytes'] / 2**20:9.1f} MiB, reserved "
         f"{run['peak_reserved_bytes'] / 2**20:9.1f} MiB (weights and text {run['resident_bytes'] / 2**20:.1f} MiB), "
         f"{run['end_to_end_fps']:.1f} frames/s")
        for run in runs
    ]
    verdict = "met" if ratio <= 1.10 else "NOT met"
    rows.append(("ratio long / short (allocated)", f"{ratio:8.3f}  (target <= 1.10: {verdict})"))
    print_table(f"(g) peak GPU memory by video length, {model}, {size}, {precision}, all outputs", rows)
    return ratio


# ------------------------------------------------------------- (h) a folder: writers alongside the next video


def folder_throughput(
    files: BenchFiles, model: str, videos: int, frames: int, device: str, precision: str, height: int, width: int,
    repeats: int,
) -> dict[str, Any]:
    """Frames/s of SegmentRunner.run_batch over ``videos`` distinct videos (all outputs, one predictor), writing
    each video's files after its model pass (``background_writers=False``) and while the next video is tracked
    (True); the runs alternate, the best of ``repeats`` of each is kept."""
    folder = files.root / f"folder_{width}x{height}_{frames}f"
    if not folder.is_dir():
        folder.mkdir()
        for i in range(videos):
            shutil.copyfile(files.video(frames, height, width), folder / f"clip{i}.mp4")
    sources = [VideoSource(path) for path in sorted(folder.glob("*.mp4"))]
    options = bench_options(files, model, "out_folder", device, precision)
    predictor = load_predictor(options)
    predictor.new_video().push(decode_all(files.video(BATCH_FRAMES, height, width)))  # warm-up
    best: dict[str, float] = {}
    for _ in range(repeats):
        for background in (False, True):
            runner = SegmentRunner(predictor, options, SilentReporter(), background_writers=background)
            start = time.perf_counter()
            outcomes = list(runner.run_batch(sources))
            seconds = time.perf_counter() - start
            if any(outcome.status != "complete" for outcome in outcomes):
                raise RuntimeError(f"folder run: {[(o.stem, o.status, o.error) for o in outcomes]}")
            key = "background" if background else "after"
            best[key] = max(best.get(key, 0.0), sum(o.frames for o in outcomes) / seconds)
    return {"videos": len(sources), "frames": frames, "size": f"{width}x{height}", "model": model, "device": device,
            "after_fps": best["after"], "background_fps": best["background"],
            "speedup": best["background"] / best["after"]}


# ------------------------------------------------------------------------------ (f) two gloo ranks vs one


RANK_LAYOUTS = ("threads", "torchrun", "one_shard", "shards")


def rank_folder(files: BenchFiles, lengths: list[int], name: str) -> Path:
    """A folder of ``len(lengths)`` distinct videos (links are deduplicated), ``clip{i}.mp4`` of ``lengths[i]``
    frames."""
    folder = files.root / name
    if not folder.is_dir():
        folder.mkdir()
        for i, frames in enumerate(lengths):
            shutil.copyfile(files.video(frames), folder / f"clip{i}.mp4")
    return folder


def ranks_wall_time(
    files: BenchFiles, lengths: list[int], layout: str, threads: int, name: str = "folder"
) -> ChildRun:
    """Wall time of `clipvis segment FOLDER` (tiny model, all outputs) over a folder of videos of ``lengths`` frames,
    laid out as ``layout``:

    - ``threads``: one process of ``threads`` threads, the whole folder;
    - ``torchrun``: `torchrun --nproc-per-node 2`, one thread per process (the ranks take the videos largest first,
      each the next one whenever it is free);
    - ``one_shard``: one process of one thread, `--shard 0/2` alone (half the folder: a rank's work, with nothing
      beside it);
    - ``shards``: `--shard 0/2` and `--shard 1/2` started side by side, one thread each, no torchrun (fixed halves:
      every other video of the sorted folder).
    """
    if layout not in RANK_LAYOUTS:
        raise ValueError(f"layout must be one of {RANK_LAYOUTS}, not {layout!r}")
    folder = rank_folder(files, lengths, name)
    out = files.root / f"ranks_{name}_{layout}_{threads}"
    args = ["-m", "clipvis", "segment", str(folder), "--vocab", ",".join(VOCABULARY), "--weights",
            str(files.weights("tiny")), "-o", str(out), "--device", "cpu", "--overwrite", "--log-format", "jsonl"]
    env = child_env(files.root, 1, {})
    count = sum(lengths)
    if layout == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", *args]
        label = "torchrun 2 processes x 1 thread"
    elif layout == "one_shard":
        command = [sys.executable, *args, "--shard", "0/2"]
        count = fixed_halves(lengths)[0]
        label = "1 process x 1 thread, --shard 0/2 alone"
    elif layout == "shards":
        # Both shards from one shell, which waits for them: its CPU time then includes theirs (see run_child).
        shard = " ".join(shlex.quote(a) for a in [sys.executable, *args]) + " --shard {}/2"
        script = f"{shard.format(0)} & a=$!; {shard.format(1)} & b=$!; wait $a; r=$?; wait $b; exit $((r | $?))"
        command = ["bash", "-c", script]
        label = "--shard 0/2 and 1/2 side by side x 1 thread"
    else:
        command = [sys.executable, *args]
        env = child_env(files.root, threads, {})
        label = f"1 process x {threads} threads"
    return run_child(label, count, command, env, out.with_suffix(".log"))


def report_ranks(
    runs: dict[str, ChildRun], videos: int, frames: int, threads: int, repeats: int
) -> dict[str, Any]:
    """Print (f) and return its figures. Besides the speed-ups, it splits what keeps two ranks from 2x: torchrun's
    own cost (torchrun against the same two shards started by hand) and what two processes cost each other on this
    machine (the two shards side by side against one shard alone)."""
    torchrun, shards, one_shard = runs["torchrun"], runs["shards"], runs["one_shard"]
    figures: dict[str, Any] = {
        "runs": {layout: asdict(run) for layout, run in runs.items()},
        "speedup": runs["threads"].wall_seconds / torchrun.wall_seconds,
        "speedup_same_threads_per_rank": runs["single"].wall_seconds / torchrun.wall_seconds,
        "torchrun_seconds": torchrun.wall_seconds - shards.wall_seconds,
        "side_by_side_slowdown": shards.wall_seconds / one_shard.wall_seconds,
    }
    print_table(
        f"(f) {videos} videos x {frames} frames {WIDTH}x{HEIGHT}, tiny model, all outputs, best of {repeats}",
        [(r.label, _fmt_child(r)) for r in runs.values()]
        + [(f"speed-up vs 1 process x {threads} threads", f"{figures['speedup']:8.2f}x"),
           ("speed-up vs 1 process x 1 thread (same threads per rank)",
            f"{figures['speedup_same_threads_per_rank']:8.2f}x"),
           ("torchrun's own cost (torchrun - shards side by side)", f"{figures['torchrun_seconds']:8.1f} s"),
           ("two processes side by side vs one alone (same work each)",
            f"{figures['side_by_side_slowdown']:8.2f}x the time")],
    )
    return figures


def _fmt_child(run: ChildRun) -> str:
    """A (f) / (j) row: wall time, cores kept busy, load average around the run."""
    return (f"{run.wall_seconds:8.1f} s  {run.cpu_seconds / run.wall_seconds:4.2f} cores busy  "
            f"load before/after {_fmt_list(run.load_average)}")


def fixed_halves(lengths: list[int]) -> list[int]:
    """Frames of `--shard 0/2` and `--shard 1/2` over a rank_folder of videos of ``lengths`` frames (every other
    video of the folder sorted by name)."""
    by_name = sorted(range(len(lengths)), key=lambda i: f"clip{i}.mp4")
    return [sum(lengths[i] for i in by_name[k::2]) for k in (0, 1)]


def report_uneven(runs: dict[str, ChildRun], lengths: list[int], repeats: int) -> dict[str, Any]:
    """Print (j) and return its figures."""
    shards, torchrun = runs["shards"], runs["torchrun"]
    figures = {
        "lengths": lengths,
        "fixed_halves_frames": fixed_halves(lengths),
        "runs": {layout: asdict(run) for layout, run in runs.items()},
        "speedup": shards.wall_seconds / torchrun.wall_seconds,
    }
    print_table(
        f"(j) two processes x 1 thread over {len(lengths)} videos of {'+'.join(map(str, lengths))} frames "
        f"{WIDTH}x{HEIGHT}, tiny model, all outputs, best of {repeats}",
        [(r.label, _fmt_child(r)) for r in runs.values()]
        + [("frames of the fixed halves", " + ".join(map(str, figures["fixed_halves_frames"]))),
           ("torchrun (next video to the free rank) vs fixed halves", f"{figures['speedup']:8.2f}x faster")],
    )
    return figures


# ------------------------------------------------------------------------------------------------ report


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


def report_throughput(result: ThroughputResult) -> None:
    model_fps = max(result.model_only_fps)
    e2e_fps = max(result.end_to_end_fps)
    ratio = result.ratio
    print_table(
        f"(a) throughput, {result.model} model, {result.frames} frames {result.size}, device={result.device}, "
        f"{result.precision}, threads={result.threads}, batch={BATCH_FRAMES}",
        [
            ("model only (push, in memory)", f"{model_fps:8.3f} frames/s  best of {_fmt_list(result.model_only_fps)}"),
            ("end to end (SegmentRunner)", f"{e2e_fps:8.3f} frames/s  best of {_fmt_list(result.end_to_end_fps)}"),
            ("ratio end-to-end / model", f"{ratio:8.3f}  (target >= 0.85: {'met' if ratio >= 0.85 else 'NOT met'})"),
            ("load average before/after", _fmt_list(result.load_average)),
        ],
    )
    timings = result.run_json_timings
    total = timings.get("total", 0.0)
    writers = timings.get("writers", sum(v for k, v in timings.items() if k.startswith("write_")))  # they overlap
    known = sum(v for k, v in timings.items() if k in ("decode_wait", "model", "rle_wait")) + writers
    rows = [(name, f"{seconds:9.3f} s  {100 * seconds / total:5.1f} %") for name, seconds in timings.items()]
    rows.append(("other (finish, store)", f"{total - known:9.3f} s  {100 * (total - known) / total:5.1f} %"))
    print_table("    run.json timings of the last end-to-end run (model_* are inside model)", rows)


def report_rss(baseline: ChildRun, short: ChildRun, long: ChildRun) -> dict[str, float]:
    ratio = long.peak_rss_bytes / short.peak_rss_bytes
    above_imports = short.peak_rss_bytes - baseline.peak_rss_bytes
    growth = (long.peak_rss_bytes - short.peak_rss_bytes) / above_imports if above_imports > 0 else float("nan")
    rows = [(run.label, _fmt_run(run, f"{run.peak_rss_bytes / 2**20:8.1f} MiB")) for run in (baseline, short, long)]
    rows.append(("ratio long / short", f"{ratio:8.3f}  (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})"))
    rows.append(("growth above imports", f"{100 * growth:8.1f} %  of the short run's memory above the imports"))
    print_table(f"(b) peak RSS, tiny model, all outputs, {WIDTH}x{HEIGHT}, fresh process each", rows)
    return {"ratio": ratio, "growth_above_imports": growth}


def report_r50_rss(run: ChildRun) -> None:
    gib = run.peak_rss_bytes / GIB
    print_table(
        f"(c) peak RSS, R50 architecture, all outputs, {run.frames} frames {WIDTH}x{HEIGHT}",
        [
            (run.label, _fmt_run(run, f"{gib:6.2f} GiB ({run.peak_rss_bytes / 1e9:.2f} GB)")),
            ("target", f"< 3 GB: {'met' if run.peak_rss_bytes < 3e9 else 'NOT met'} (official: ~8.3 GB for 20 frames)"),
        ],
    )


def _fmt_run(run: ChildRun, memory: str) -> str:
    return f"{memory}  {run.wall_seconds:7.1f} s  load before/after {_fmt_list(run.load_average)}"


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> (1280, 720): width, height."""
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def _fmt_list(values: list[float]) -> str:
    return " ".join(f"{v:.3f}" if isinstance(v, float) and v < 100 else str(v) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_CONFIGS), default="tiny", help="model for (a)")
    parser.add_argument("--frames", type=int, default=None, help="frames for (a) (default: tiny 120, r50 8)")
    parser.add_argument(
        "--repeats", type=int, default=2, help="(a), (f), (h): runs of each kind, alternated; best reported"
    )
    parser.add_argument("--skip-rss", action="store_true", help="skip (b) and (c)")
    parser.add_argument("--rss-frames", type=int, nargs=2, default=[300, 3000], metavar=("SHORT", "LONG"))
    parser.add_argument("--r50-rss-frames", type=int, default=10)
    parser.add_argument(
        "--child-env", action="append", default=[], metavar="KEY=VALUE",
        help="environment for the (b)/(c) subprocesses, e.g. MALLOC_MMAP_THRESHOLD_=1048576 (repeatable)",
    )
    parser.add_argument(
        "--parts", nargs="+", choices=list("abcdefghijk"), default=list("abcdef"), help="what to measure (see above)"
    )
    parser.add_argument("--folder-videos", type=int, default=6, help="(h) videos in the folder")
    parser.add_argument("--folder-frames", type=int, default=None, help="(h) frames per video (default: as (a))")
    parser.add_argument("--gpu-memory-frames", type=int, nargs=2, default=[60, 600], metavar=("SHORT", "LONG"),
                        help="(g) frames of the short and the long video")
    parser.add_argument("--render-threads", type=int, default=None,
                        help="(a), (e): the overlay's drawing threads (default: by CPUs and frame size, as segment)")
    parser.add_argument("--resolution-frames", type=int, default=12, help="(d) frames at 854x480 and 3840x2160")
    parser.add_argument("--replay-frames", type=int, default=60, help="(e) frames of the replayed run")
    parser.add_argument("--replay-size", default="1280x720", help="(e) WIDTHxHEIGHT")
    parser.add_argument(
        "--replay-variants", nargs="+", choices=["network", "host"], default=["network", "host"],
        help="(e) network: the network's outputs replayed; host: the masks' run lengths replayed too",
    )
    parser.add_argument("--long-frames", type=int, default=2 * 3600 * FPS,
                        help=f"(k) frames of the long video (default: 2 hours at {FPS} frames/s)")
    parser.add_argument("--long-size", default="128x96", help="(k) WIDTHxHEIGHT")
    parser.add_argument("--overhead-runs", type=int, default=5, help="(i) fresh processes measured")
    parser.add_argument("--rank-videos", type=int, default=8, help="(f) videos in the folder")
    parser.add_argument("--rank-frames", type=int, default=20, help="(f) frames per video; (j) of the short ones")
    parser.add_argument("--uneven-long", type=int, default=None, help="(j) frames of the long video (default: 6x "
                        "--rank-frames); the other --rank-videos - 1 have --rank-frames")
    parser.add_argument(
        "--no-heap-trimmer", action="store_true", help="(a) without the CLI's HeapTrimmer (clipvis.cli.memory)"
    )
    parser.add_argument(
        "--no-huge-pages", action="store_true",
        help="without the CLI's transparent huge pages for PyTorch's buffers (clipvis.cli.memory.prefer_huge_pages)"
    )
    parser.add_argument(
        "--own-arenas", action="store_true",
        help="leave glibc's default malloc arenas (the `clipvis` command puts every thread in one)",
    )
    parser.add_argument(
        "--formats", default=",".join(DEFAULT_FORMATS),
        help="(a), (e), (h): segment's --formats, comma-separated, or `all` for every format (default: %(default)s)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="(a) precision")
    parser.add_argument("--size", default=f"{WIDTH}x{HEIGHT}", help="(a) video WIDTHxHEIGHT, e.g. 1280x720")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (OMP_NUM_THREADS in subprocesses)")
    parser.add_argument("--out-json", type=Path, default=None, help="also save the figures here")
    args = parser.parse_args()
    if args.no_huge_pages:
        os.environ[HUGE_PAGES_VARIABLE] = "0"  # here and in the `segment` subprocesses
    prefer_huge_pages()  # as `clipvis segment` does, before any tensor exists (also inherited by subprocesses)
    sys.stdout.reconfigure(line_buffering=True)  # figures appear as they are measured, also under nohup
    torch.set_num_threads(args.threads)
    global BENCH_FORMATS
    BENCH_FORMATS = FORMATS if args.formats == "all" else tuple(args.formats.split(","))
    frames = args.frames or DEFAULT_FRAMES[args.model]
    width, height = parse_size(args.size)  # (a), (g), (h)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"device={args.device}, threads={args.threads}, load average {_fmt_list(load_average())}, "
        f"PyTorch huge pages {os.environ[HUGE_PAGES_VARIABLE]}, one malloc arena {ONE_ARENA}"
        f"{', free memory reported to the hypervisor' if free_page_reporting() else ''}"
    )
    figures: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "load_average_start": load_average()}
    parts = set(args.parts) - ({"b", "c", "d"} if args.skip_rss else set())
    extra_env = dict(item.split("=", 1) for item in args.child_env)
    with tempfile.TemporaryDirectory(prefix="clipvis-bench-") as tmp:
        root = Path(tmp)
        os.environ.setdefault("CLIPVIS_CACHE", str(root / "cache"))  # text-embedding cache: keep it in the run
        os.environ["CLIPVIS_OFFLINE"] = "1"
        files = BenchFiles(root)
        if "a" in parts:
            trimmer = cli_heap_trimmer(enabled=not args.no_heap_trimmer)
            figures["heap_trimmer"] = trimmer.active
            print(f"(a) heap trimmer as in the CLI: {'on' if trimmer.active else 'off'}")
            with trimmer:
                throughput = measure_throughput(
                    files, args.model, frames, args.device, args.threads, args.repeats, args.precision, height, width,
                    args.render_threads,
                )
            report_throughput(throughput)
            figures["throughput"] = {**asdict(throughput), "ratio": throughput.ratio}
        if "b" in parts:
            short_frames, long_frames = args.rss_frames
            baseline = baseline_rss(files, args.threads, extra_env)
            short = segment_rss(files, "tiny", short_frames, args.device, args.threads, extra_env)
            long = segment_rss(files, "tiny", long_frames, args.device, args.threads, extra_env)
            figures["rss"] = {"runs": [asdict(r) for r in (baseline, short, long)], **report_rss(baseline, short, long)}
        if "c" in parts:
            r50 = segment_rss(files, "r50", args.r50_rss_frames, args.device, args.threads, extra_env)
            report_r50_rss(r50)
            figures["r50_rss"] = asdict(r50)
        if "d" in parts:
            small = segment_rss_at(files, args.resolution_frames, HEIGHT, WIDTH, args.device, args.threads, extra_env)
            large = segment_rss_at(files, args.resolution_frames, 2160, 3840, args.device, args.threads, extra_env)
            ratio = large.peak_rss_bytes / small.peak_rss_bytes
            rows = [(r.label, _fmt_run(r, f"{r.peak_rss_bytes / 2**20:8.1f} MiB")) for r in (small, large)]
            verdict = "met" if ratio <= 1.5 else "NOT met"
            rows.append(("ratio 3840x2160 / 854x480", f"{ratio:8.3f}  (target <= 1.5: {verdict})"))
            print_table("(d) peak RSS by resolution, tiny model (100 queries), all outputs, fresh process each", rows)
            figures["resolution_rss"] = {"runs": [asdict(small), asdict(large)], "ratio": ratio}
        if "e" in parts:
            replay_width, replay_height = parse_size(args.replay_size)
            for replay_masks in [variant == "host" for variant in args.replay_variants]:
                replay = replay_ceiling(
                    files, args.replay_frames, args.device, replay_height, replay_width, args.render_threads,
                    replay_masks,
                )
                what = "network outputs and masks' run lengths replayed: the host's work alone" if replay_masks \
                    else "network outputs replayed"
                print_table(
                    f"(e) model-free ceiling: SegmentRunner, all outputs, {what}, {replay['queries']} queries, "
                    f"{replay['size']}, {replay['frames']} frames, device={replay['device']}, "
                    f"{replay['render_threads']} drawing threads",
                    [("end to end", f"{replay['end_to_end_fps']:8.2f} frames/s"),
                     *((k, f"{v:9.3f} s") for k, v in replay["timings"].items()),
                     ("load average before/after", _fmt_list(replay["load_average"]))],
                )
                figures["replay_host_only" if replay_masks else "replay"] = replay
        if "k" in parts:
            long_width, long_height = parse_size(args.long_size)
            long_run = long_video_memory(files, args.long_frames, args.device, long_height, long_width,
                                         args.render_threads)
            report_long_video(long_run, FPS)
            figures["long_video"] = long_run
        if "f" in parts:
            # Each layout --repeats times, the layouts alternated; the fastest run of each is kept.
            layouts = {"threads": ("threads", args.threads), "single": ("threads", 1), "torchrun": ("torchrun", 1),
                       "shards": ("shards", 1), "one_shard": ("one_shard", 1)}
            runs: dict[str, ChildRun] = {}
            for _ in range(args.repeats):
                for name, (layout, threads) in layouts.items():
                    run = ranks_wall_time(files, [args.rank_frames] * args.rank_videos, layout, threads)
                    if name not in runs or run.wall_seconds < runs[name].wall_seconds:
                        runs[name] = run
            figures["ranks"] = report_ranks(runs, args.rank_videos, args.rank_frames, args.threads, args.repeats)
        if "j" in parts:
            lengths = [args.uneven_long or 6 * args.rank_frames] + [args.rank_frames] * (args.rank_videos - 1)
            runs = {}
            for _ in range(args.repeats):
                for layout in ("shards", "torchrun"):
                    run = ranks_wall_time(files, lengths, layout, 1, name="uneven")
                    if layout not in runs or run.wall_seconds < runs[layout].wall_seconds:
                        runs[layout] = run
            figures["uneven"] = report_uneven(runs, lengths, args.repeats)
        if "h" in parts:
            folder = folder_throughput(files, args.model, args.folder_videos, args.folder_frames or frames,
                                       args.device, args.precision, height, width, args.repeats)
            print_table(
                f"(h) {folder['videos']} videos x {folder['frames']} frames {folder['size']}, {args.model}, "
                f"device={args.device}, {args.precision}, all outputs, one process (best of {args.repeats})",
                [("files written after each video's model pass", f"{folder['after_fps']:8.3f} frames/s"),
                 ("files written while the next video is tracked", f"{folder['background_fps']:8.3f} frames/s"),
                 ("speed-up", f"{folder['speedup']:8.3f}x")],
            )
            figures["folder"] = folder
        if "g" in parts:
            if not args.device.startswith("cuda"):
                print("\n(g) skipped: it measures a CUDA device's memory (--device cuda)")
            else:
                runs = device_memory_by_length(
                    files, args.model, args.gpu_memory_frames, args.device, args.precision, height, width
                )
                ratio = report_device_memory(runs, args.model, args.size, args.precision)
                figures["device_memory"] = {"runs": runs, "ratio": ratio}
        if "i" in parts:
            overhead = process_overhead(files, args.model, args.device, args.threads, args.overhead_runs)
            print_table(
                f"(i) a `clipvis segment` process besides its video: {args.model} model, {BATCH_FRAMES} frames "
                f"{WIDTH}x{HEIGHT}, device={args.device}, threads={args.threads}, fresh process each",
                [(f"run {i + 1}", f"{r['wall_s']:6.2f} s wall, video {r['video_s']:5.2f} s, "
                  f"besides the video {r['overhead_s']:5.2f} s, {r['cpu_s']:5.2f} CPU-s")
                 for i, r in enumerate(overhead["runs"])]
                + [("median besides the video", f"{overhead['median_overhead_s']:6.2f} s")],
            )
            figures["process_overhead"] = overhead
        figures["generation_seconds"] = files.generation_seconds
        if files.generation_seconds:
            print_table("setup (not timed above)", [(k, f"{v:7.1f} s") for k, v in files.generation_seconds.items()])
    figures["load_average_end"] = load_average()
    figures["own_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if args.out_json:
        args.out_json.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\nfigures saved to {args.out_json}")


if __name__ == "__main__":
    main()
