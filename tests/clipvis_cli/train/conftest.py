"""Synthetic training data (rendered shapes with instance masks) and tiny training configs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from clipvis.cli import rle

SIZE = 64


def render_shapes(seed: int, size: int = SIZE) -> tuple[np.ndarray, list[np.ndarray]]:
    """An RGB image with a filled rectangle and a filled disc on a flat background, and their masks."""
    rng = np.random.default_rng(seed)
    image = np.full((size, size, 3), rng.integers(20, 60), np.uint8)
    masks = []
    x0, y0 = rng.integers(4, size // 2 - 8, 2)
    w, h = rng.integers(14, size // 2 - 4, 2)
    rect = np.zeros((size, size), np.uint8)
    rect[y0:y0 + h, x0:x0 + w] = 1
    masks.append(rect)
    disc = np.zeros((size, size), np.uint8)
    cx, cy = rng.integers(size // 2 + 6, size - 10, 2)
    cv2.circle(disc, (int(cx), int(cy)), int(rng.integers(7, 10)), 1, -1)
    disc &= 1 - rect
    masks.append(disc)
    image[rect.astype(bool)] = (220, 60, 60)
    image[disc.astype(bool)] = (60, 200, 80)
    return image, masks


def polygon_of(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]


def write_coco(folder: Path, num_images: int = 4, polygons: bool = True) -> tuple[Path, Path]:
    """A COCO instances file + image folder; the rectangles as polygons (or RLE), the discs as RLE, and one crowd
    annotation (dropped by the reader)."""
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        image, masks = render_shapes(i)
        name = f"img_{i}.png"
        cv2.imwrite(str(images_dir / name), image[:, :, ::-1])
        images.append({"id": i + 1, "file_name": name, "height": SIZE, "width": SIZE})
        for k, mask in enumerate(masks):
            seg = polygon_of(mask) if (polygons and k == 0) else rle.encode(mask.astype(bool))
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": k + 1,
                                "segmentation": seg, "iscrowd": 0, "area": float(mask.sum()),
                                "bbox": [0, 0, 1, 1]})
    annotations.append({"id": len(annotations) + 1, "image_id": 1, "category_id": 1, "iscrowd": 1,
                        "segmentation": rle.encode(np.ones((SIZE, SIZE), bool)), "area": 1.0, "bbox": [0, 0, 1, 1]})
    path = folder / "coco.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "box"}, {"id": 2, "name": "disc"}]}))
    return path, images_dir


def _tiny_train_config(model_fields: dict, folder: Path, **solver) -> Path:
    tree = {
        "MODEL": {"DEVICE": "cpu", "MASK_FORMER": {"TRAIN_NUM_POINTS": 1024}},
        "DATASETS": {"TRAIN": [], "TEST": []},
        "INPUT": {"DATASET_MAPPER_NAME": "coco_instance_lsj", "IMAGE_SIZE": SIZE, "MIN_SCALE": 0.9, "MAX_SCALE": 1.1},
        "DATALOADER": {"NUM_WORKERS": 0, "SAMPLER_TRAIN": "TrainingSampler"},
        "SOLVER": {"IMS_PER_BATCH": 2, "REFERENCE_WORLD_SIZE": 0, "BASE_LR": 1e-3, "MAX_ITER": 10, "STEPS": [],
                   "WARMUP_ITERS": 0, "CHECKPOINT_PERIOD": 1000, **solver},
        "SEED": 0,
        "CLIPVIS": {"MODEL": model_fields, "LOG_PERIOD": 5},
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture(scope="session")
def tiny_train_config(tiny_config):
    """Factory: ``tiny_train_config(folder, **SOLVER overrides)`` -> a training config file for the tiny model
    (official keys + CLIPVIS.MODEL field overrides), CPU, one process, no autoscaling, seed 0."""
    fields = tiny_config().to_dict()
    fields.pop("notes")

    def make(folder: Path, **solver) -> Path:
        return _tiny_train_config(fields, folder, **solver)

    return make


@pytest.fixture
def coco_folder(tmp_path) -> tuple[Path, Path]:
    return write_coco(tmp_path / "data")


@pytest.fixture(autouse=True)
def _no_downloads(isolated_cache):
    """Every test here runs with a private cache (the periodic evaluations write text embeddings there) and no
    network."""
