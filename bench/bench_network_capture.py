"""The network's forward eager, replayed from a CUDA graph, and through torch.compile: time per batch, start-up cost,
and whether the outputs are bit-equal to eager (random weights, one batch of video frames at the test size).

    python bench/bench_network_capture.py --device cuda --arch r50 --precision bf16 --size 1280x720 --batch 4
    python bench/bench_network_capture.py --arch tiny --size 320x240 --variants eager compile   # anywhere, slowly

A CUDA graph records the eager kernels once and replays them with one launch, so its outputs are those of eager
(when capture works: no host synchronisation inside the forward); torch.compile generates other kernels, whose
results may differ in the last bits. `clipvis segment` keeps a variant only if it measurably helps with exact
outputs (docs/streaming.md). Each variant is measured on its own; one that fails prints its error and the others go on.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import traceback
from collections.abc import Callable

import numpy as np
import torch
from bench_configs import MODEL_CONFIGS  # bench/ is the script's folder

from clipvis.model import create_model
from clipvis.model.predictor import PRECISIONS
from clipvis.model.preprocess import FramePreprocessor

VARIANTS = ("eager", "cuda-graph", "compile", "compile-reduce-overhead")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def outputs_of(out) -> dict[str, torch.Tensor]:
    return {name: value for name, value in vars(out).items() if isinstance(value, torch.Tensor)}


def time_calls(call: Callable[[], dict[str, torch.Tensor]], device: torch.device, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        call()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def prepare(variant: str, model: torch.nn.Module, images: torch.Tensor, autocast) -> Callable[[], dict]:
    """A function that runs the forward of ``variant`` on ``images`` and returns its outputs."""
    if variant == "eager":
        def eager() -> dict[str, torch.Tensor]:
            with autocast():
                return outputs_of(model(images))
        return eager
    if variant == "cuda-graph":
        static = images.clone()
        side = torch.cuda.Stream(images.device)
        side.wait_stream(torch.cuda.current_stream(images.device))
        with torch.cuda.stream(side), autocast():  # warm-up on a side stream, as capture requires
            for _ in range(3):
                model(static)
        torch.cuda.current_stream(images.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), autocast():
            captured = outputs_of(model(static))

        def replay() -> dict[str, torch.Tensor]:
            static.copy_(images)
            graph.replay()
            return captured
        return replay
    mode = "reduce-overhead" if variant == "compile-reduce-overhead" else None
    compiled = torch.compile(model, mode=mode)

    def compiled_call() -> dict[str, torch.Tensor]:
        with autocast():
            return outputs_of(compiled(images))
    return compiled_call


def measure(variant: str, model, images, autocast, reference: dict[str, torch.Tensor] | None, repeats: int):
    device = images.device
    start = time.perf_counter()
    call = prepare(variant, model, images, autocast)
    first = call()  # compiles / captures on the first call where it does
    synchronize(device)
    startup = time.perf_counter() - start
    seconds = time_calls(call, device, repeats)
    outputs = {name: value.clone() for name, value in call().items()}
    if reference is None:
        equal, worst = True, 0.0
    else:
        equal = all(torch.equal(outputs[name], reference[name]) for name in reference)
        worst = max((outputs[name].float() - reference[name].float()).abs().max().item() for name in reference)
    del first
    return {"startup_s": startup, "median_s": statistics.median(seconds), "best_s": min(seconds),
            "bit_equal": equal, "max_abs_diff": worst, "outputs": outputs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=sorted(MODEL_CONFIGS), default="r50")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="bf16")
    parser.add_argument("--size", default="1280x720", help="video frame WIDTHxHEIGHT (resized to the test size)")
    parser.add_argument("--batch", type=int, default=4, help="frames per forward (segment's --batch-frames)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(MODEL_CONFIGS[args.arch]).to(device).eval()
    cfg = model.config
    width, height = (int(v) for v in args.size.lower().split("x"))
    frames = np.random.default_rng(0).integers(0, 255, (args.batch, height, width, 3), dtype=np.uint8)
    preprocess = FramePreprocessor(
        cfg.min_size_test, cfg.max_size_test, cfg.size_divisibility, cfg.pixel_mean, cfg.pixel_std
    )
    images, _ = preprocess(frames, device)

    def autocast():
        if args.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=PRECISIONS[args.precision])

    print(f"torch {torch.__version__}, device={device}"
          f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, {args.arch}, "
          f"{args.precision}, batch {args.batch} x {tuple(images.shape[-2:])} (from {width}x{height})")
    reference = None
    eager_s = None
    with torch.no_grad():
        for variant in ["eager", *[v for v in args.variants if v != "eager"]]:
            if variant in ("cuda-graph", "compile-reduce-overhead") and device.type != "cuda":
                print(f"{variant:<24} skipped: needs a CUDA device")
                continue
            try:
                result = measure(variant, model, images, autocast, reference, args.repeats)
            except Exception as error:  # noqa: BLE001 - report the variant's failure, measure the others
                print(f"{variant:<24} failed: {type(error).__name__}: {str(error).splitlines()[0][:300]}")
                traceback.print_exc(limit=3)
                continue
            if variant == "eager":
                reference, eager_s = result["outputs"], result["median_s"]
            speedup = eager_s / result["median_s"] if eager_s else float("nan")
            print(f"{variant:<24} {result['median_s'] * 1e3:9.2f} ms/batch (best {result['best_s'] * 1e3:.2f}), "
                  f"{args.batch / result['median_s']:8.1f} frames/s, {speedup:5.2f}x eager, first call "
                  f"{result['startup_s']:7.1f} s, bit-equal to eager: {result['bit_equal']} "
                  f"(max abs diff {result['max_abs_diff']:.3g})", flush=True)


if __name__ == "__main__":
    main()
