"""Loading a checkpoint: what every `clipvis segment` process, `--shard` job and torchrun rank pays before its first
frame.

    python bench/bench_load.py [--arch r50 convnext-b] [--format safetensors official] [--repeats 3]

For each architecture and file format, random weights are written once to a temporary folder; then each load runs in
a fresh process (as a new job's does) and reports seconds and peak resident memory for

* ``load_model``: clipvis' loader (the model is built on the meta device and takes the file's tensors as weights);
* ``initialise + copy``: building the model with randomly initialised weights and copying the file's tensors into
  them with ``load_state_dict`` (what clipvis did before, and what most loaders do).

Both read the file the same way (clipvis.model.checkpoint.read_state_dict) and give the same model, tensor for tensor
(tests/model/test_build_and_loading.py). Prints the best of ``--repeats`` runs and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_configs import MODEL_CONFIGS  # bench/ is the script's folder

CHILD = r"""
import json, resource, sys, time
import torch
from clipvis.model import create_model, load_model
from clipvis.model.build import resolve_config
from clipvis.model.checkpoint import read_state_dict
import open_clip  # imported by both ways of loading; kept out of the timing

path, way, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
start = time.perf_counter()
if way == "load_model":
    model = load_model(path, config=config)
else:
    state, embedded = read_state_dict(path)
    model = create_model(resolve_config(state, embedded, config))
    model.load_state_dict(state, strict=True)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

WAYS = ("load_model", "initialise + copy")


def write_weights(arch: str, layout: str, folder: Path) -> Path:
    import torch

    from clipvis.model import create_model, save_pretrained, to_official_state_dict

    model = create_model(MODEL_CONFIGS[arch])
    if layout == "safetensors":
        return save_pretrained(model, folder / f"{arch}.safetensors")
    path = folder / f"{arch}.pth"
    torch.save({"model": to_official_state_dict(model)}, path)
    return path


def measure(path: Path, way: str, config: dict) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), way, json.dumps(config)],
        check=True, capture_output=True, text=True, cwd=tempfile.gettempdir(),
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["r50", "convnext-b"], choices=["tiny", "r50", "convnext-b"])
    parser.add_argument("--format", nargs="+", default=["safetensors", "official"], choices=["safetensors", "official"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()


    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs; best of {args.repeats} fresh processes each")
    print(f"{'weights':28s} {'way':18s} {'seconds':>8s} {'peak RSS':>10s}")
    with tempfile.TemporaryDirectory(prefix="clipvis-bench-load-") as tmp:
        for arch in args.arch:
            for layout in args.format:
                path = write_weights(arch, layout, Path(tmp))
                config = MODEL_CONFIGS[arch].to_dict()
                best = {}
                for way in WAYS:
                    runs = [measure(path, way, config) for _ in range(args.repeats)]
                    best[way] = {key: min(run[key] for run in runs) for key in ("seconds", "peak_rss_mb")}
                    print(f"{arch + ' ' + layout:28s} {way:18s} {best[way]['seconds']:8.2f} "
                          f"{best[way]['peak_rss_mb']:8.0f} MB")
                new, old = best["load_model"], best["initialise + copy"]
                print(f"{'':28s} {'ratio':18s} {old['seconds'] / new['seconds']:7.2f}x "
                      f"{new['peak_rss_mb'] / old['peak_rss_mb']:9.2f} of the memory")
                path.unlink()


if __name__ == "__main__":
    main()
