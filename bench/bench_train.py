"""Training throughput: iterations/s, samples/s and the data-wait share of `clipvis train` on synthetic data.

    python bench/bench_train.py                                   # tiny model, CPU (the CI-sized check)
    python bench/bench_train.py --device cuda --arch r50 --precision bf16 --image-size 1024 --batch 2 --workers 8

Builds a synthetic COCO-instances dataset (rendered rectangles and discs with instance masks) in a temporary folder,
runs the real trainer (data loader with workers, LSJ augmentation, criterion with the official point counts, AdamW,
gradient clipping, AMP on CUDA) for --warmup + --iterations steps with random weights (no download), and reports the
rate over the last --iterations steps. For R50 the official rate is printed for comparison: 368,750 iterations x
batch 8 in 2 days 9 hours on 4 RTX 3090 = 3.6 samples/s per GPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

OFFICIAL_SAMPLES_PER_GPU = 368_750 * 8 / ((2 * 24 + 9) * 3600) / 4

TINY_MODEL = {
    "clip_model_config": {
        "embed_dim": 32, "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 16, "patch_size": None},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "hidden_dim": 32, "num_queries": 8, "decoder_layers": 2, "num_heads": 4, "dim_feedforward": 64, "conv_dim": 32,
    "mask_dim": 32, "encoder_layers": 1, "encoder_dim_feedforward": 64,
}


def random_clip_model(arch: str) -> dict:
    """ClipVisConfig fields for the architecture with a random CLIP (open_clip's model config, no weights)."""
    import open_clip

    if arch == "tiny":
        return dict(TINY_MODEL)
    name = {"r50": "RN50", "convnext-b": "convnext_base_w_320"}[arch]
    config = dict(open_clip.get_model_config(name))
    if arch == "r50":
        config["quick_gelu"] = True
    return {"clip_model_config": config}


def write_dataset(folder: Path, num_images: int, size: int) -> tuple[Path, Path]:
    from pycocotools import mask as coco_mask

    images_dir = folder / "images"
    images_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(num_images):
        image = np.full((size, size, 3), 40, np.uint8)
        image_id = i + 1
        images.append({"id": image_id, "file_name": f"{i}.jpg", "height": size, "width": size})
        for _ in range(int(rng.integers(2, 6))):
            mask = np.zeros((size, size), np.uint8)
            x, y = rng.integers(0, size * 3 // 4, 2)
            w, h = rng.integers(size // 10, size // 4, 2)
            if rng.uniform() < 0.5:
                mask[y:y + h, x:x + w] = 1
            else:
                cv2.circle(mask, (int(x + w // 2), int(y + h // 2)), int(min(w, h) // 2), 1, -1)
            image[mask.astype(bool)] = rng.integers(60, 255, 3)
            rle = coco_mask.encode(np.asfortranarray(mask))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "segmentation": {"size": [size, size], "counts": rle["counts"].decode()}})
        cv2.imwrite(str(images_dir / f"{i}.jpg"), image)
    path = folder / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}))
    return path, images_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["tiny", "r50", "convnext-b"], default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--image-size", type=int, default=None, help="LSJ crop size (default: 128 tiny, 1024 else)")
    parser.add_argument("--batch", type=int, default=2, help="Images per iteration (one process).")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes.")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--images", type=int, default=32, help="Synthetic dataset size.")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.image_size or (128 if args.arch == "tiny" else 1024)

    from clipvis.cli.train.config import load_train_config
    from clipvis.cli.train.run import RunRequest, run_training

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        annotation, images = write_dataset(root / "data", args.images, min(size, 640))
        tree = {
            "MODEL": {"DEVICE": args.device, "MASK_FORMER": {"DEC_LAYERS": 7 if args.arch != "tiny" else 3}},
            "DATASETS": {"TRAIN": [], "TEST": []},
            "INPUT": {"IMAGE_SIZE": size},
            "DATALOADER": {"NUM_WORKERS": args.workers},
            "SOLVER": {"IMS_PER_BATCH": args.batch, "REFERENCE_WORLD_SIZE": 0,
                       "MAX_ITER": args.warmup + args.iterations, "CHECKPOINT_PERIOD": 10**9,
                       "AMP": {"ENABLED": args.precision != "fp32"}},
            "SEED": 0,
            "OUTPUT_DIR": str(root / "out"),
            "CLIPVIS": {"MODEL": random_clip_model(args.arch), "LOG_PERIOD": args.iterations,
                        "AMP_DTYPE": args.precision if args.precision != "fp32" else "auto",
                        "TRAIN_DATA": [{"json": str(annotation), "images": str(images)}]},
        }
        config_path = root / "bench.yaml"
        config_path.write_text(yaml.safe_dump(tree))
        run_training(RunRequest(load_train_config(config_path)))
        record = [json.loads(line) for line in (root / "out" / "metrics.jsonl").read_text().splitlines()][-1]
    its = record["iterations_per_second"]
    print(f"arch {args.arch}  device {args.device}  precision {args.precision}  image {size}x{size}  "
          f"batch {args.batch}  workers {args.workers}  threads {torch.get_num_threads()}")
    print(f"iterations/s {its:.3f}   samples/s {its * args.batch:.3f}   "
          f"data-wait share {100 * record['data_wait_share']:.1f} %   ({args.iterations} measured iterations)")
    if args.arch == "r50":
        ratio = its * args.batch / OFFICIAL_SAMPLES_PER_GPU
        print(f"official R50 rate {OFFICIAL_SAMPLES_PER_GPU:.2f} samples/s per GPU (4x RTX 3090, AMP): x{ratio:.2f}")


if __name__ == "__main__":
    main()
