"""Per-frame time of each model stage at the official settings (random weights).

    python bench/bench_model.py [--arch r50 convnext-b] [--device cpu|cuda] [--precision fp32 bf16]
                                [--threads 2] [--repeats 3] [--height 480 --width 1129] [--no-heap-trimmer]

Prints a table: backbone, pixel decoder, transformer decoder, mask pooling + classification, temporal matching,
total, per frame. The official implementation measured about 6.3 s per frame on a 2-core CPU for R50 (64 % in the
pixel decoder's deformable attention); the target here is <= 3 s.

The process runs as `clipvis segment` runs its own: glibc's default allocator (buffers reused from the heap) with
clipvis.cli.memory.HeapTrimmer returning free pages every 2 s. --no-heap-trimmer leaves the trimmer off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from bench_configs import MODEL_CONFIGS  # bench/ is the script's folder

from clipvis.cli.memory import HeapTrimmer
from clipvis.model import create_model
from clipvis.model.predictor import PRECISIONS
from clipvis.model.temporal_matcher import TemporalMatcher
from clipvis.model.text_classifier import TextEmbeddings

ARCHS = {name: MODEL_CONFIGS[name] for name in ("r50", "convnext-b")}

STAGES = ("backbone", "pixel decoder", "decoder", "pool+classify", "match")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, *args):
    sync(device)
    start = time.perf_counter()
    out = fn(*args)
    sync(device)
    return out, time.perf_counter() - start


def classify(model, text: TextEmbeddings, dense: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    return model.classify(dense, mask_logits, text).softmax(-1)


def bench(arch: str, device: torch.device, precision: str, height: int, width: int, repeats: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model(ARCHS[arch]).to(device).eval()
    cfg = model.config
    pad_h, pad_w = -(-height // 32) * 32, -(-width // 32) * 32
    images = torch.randn(1, 3, pad_h, pad_w, device=device)
    text = TextEmbeddings(
        [f"class{i}" for i in range(40)],
        torch.nn.functional.normalize(torch.randn(40, model.backbone.embed_dim), dim=-1),
        [1] * 40,
        100.0,
    )
    matcher = TemporalMatcher(cfg.memory_length, cfg.top_k)
    for _ in range(cfg.memory_length):  # a full memory: the costliest matching branch
        matcher.match(torch.randn(cfg.num_queries, cfg.hidden_dim))
    autocast = (
        torch.autocast(device_type=device.type, dtype=PRECISIONS[precision])
        if precision != "fp32"
        else torch.autocast(device_type=device.type, enabled=False)
    )
    stages: dict[str, list[float]] = {k: [] for k in STAGES}
    with torch.no_grad(), autocast:
        for run in range(repeats + 1):
            feats, t_backbone = timed(model.backbone, device, images)
            (mask_features, memory), t_pixel = timed(model.pixel_decoder, device, feats)
            out, t_decoder = timed(model.mask_decoder, device, memory, mask_features)
            _, t_classify = timed(classify, device, model, text, feats["clip_vis_dense"], out.mask_logits)
            _, t_match = timed(matcher.match, device, out.query_embeds[0])
            if run == 0:
                continue  # warm-up
            for key, value in zip(stages, (t_backbone, t_pixel, t_decoder, t_classify, t_match), strict=True):
                stages[key].append(value)
    result = {k: statistics.median(v) for k, v in stages.items()}
    result["total"] = sum(result.values())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["r50", "convnext-b"], choices=sorted(ARCHS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=sorted(PRECISIONS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=1129)
    parser.add_argument("--no-heap-trimmer", action="store_true", help="run without the CLI's HeapTrimmer")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} threads={args.threads} frame={args.height}x{args.width} (padded to /32), 1 frame/batch")
    header = f"{'arch':<11}{'prec':<6}" + "".join(f"{k:>15}" for k in STAGES + ("total",))
    trimmer = HeapTrimmer(enabled=not args.no_heap_trimmer)
    print(f"heap trimmer (as in the CLI): {'on' if trimmer.active else 'off'}; load average {os.getloadavg()}")
    print(header)
    with trimmer:
        for arch in args.arch:
            for precision in args.precision:
                r = bench(arch, device, precision, args.height, args.width, args.repeats)
                print(
                    f"{arch:<11}{precision:<6}"
                    + "".join(f"{r[k]:>14.3f}s" for k in STAGES + ("total",)),
                    flush=True,
                )
    print("official implementation, R50 fp32, 2 CPU threads: ~6.3 s/frame (target <= 3 s)")


if __name__ == "__main__":
    main()
