"""The training records as the loader workers see them: one shared byte buffer (RecordStore), not a list of objects
that each forked worker copies as it reads it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from clipvis.cli import rle
from clipvis.cli.train.data import AugmentationConfig, TrainDataset
from clipvis.cli.train.records import (
    FrameRecord,
    InstanceAnnotation,
    RecordStore,
    TrainRecord,
    read_annotation_file,
    read_ytvis,
)

from .conftest import SIZE, render_shapes, write_coco


def _mixed_records(tmp_path: Path) -> list[TrainRecord]:
    """Images with polygons, compressed and uncompressed RLE, one image missing from disk, and a video."""
    ann, images = write_coco(tmp_path / "coco", num_images=3)  # rectangles as polygons, discs as compressed RLE
    doc = json.loads(ann.read_text())
    for annotation in doc["annotations"]:
        if annotation["image_id"] == 2 and annotation["category_id"] == 2:  # a disc as uncompressed RLE
            _, masks = render_shapes(1)
            runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], masks[1].T.reshape(-1), [2]]))), prepend=0)
            annotation["segmentation"] = {"size": [SIZE, SIZE], "counts": runs.tolist()}
    doc["images"].append({"id": 9, "file_name": "not_there.png", "height": SIZE, "width": SIZE})
    doc["annotations"].append({"id": 99, "image_id": 9, "category_id": 1, "iscrowd": 0,
                               "segmentation": [[1.0, 1.0, 30.0, 1.0, 30.0, 30.0]], "area": 1.0, "bbox": [0, 0, 1, 1]})
    ann.write_text(json.dumps(doc))
    records, warnings = read_annotation_file(ann, images)
    assert warnings == []
    assert any(isinstance(i.segmentation, dict) and isinstance(i.segmentation["counts"], list)
               for r in records for i in r.frames[0].instances)

    frames = tmp_path / "frames" / "clip"
    frames.mkdir(parents=True)
    segmentations = []
    for t in range(3):
        image, masks = render_shapes(t + 5)
        cv2.imwrite(str(frames / f"{t:03d}.png"), image[:, :, ::-1])
        segmentations.append(rle.encode(masks[0].astype(bool)) if t != 1 else None)
    video = {"videos": [{"id": 1, "name": "clip", "width": SIZE, "height": SIZE, "length": 3,
                         "file_names": [f"clip/{t:03d}.png" for t in range(3)]}],
             "categories": [{"id": 1, "name": "box"}],
             "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": segmentations}]}
    (tmp_path / "ytvis.json").write_text(json.dumps(video))
    videos, warnings = read_ytvis(tmp_path / "ytvis.json", tmp_path / "frames")
    assert warnings == []
    return records + videos


@pytest.mark.parametrize("augmentation", [
    AugmentationConfig(kind="lsj", image_size=48, min_scale=0.5, max_scale=1.5),
    AugmentationConfig(kind="shortest_edge", min_sizes=(40, 56), max_size=90),
])
def test_the_samples_are_those_of_the_record_objects(tmp_path, augmentation):
    """The dataset reads its records back from bytes: the same records, and the very same samples (images, masks,
    names, warnings of unreadable images) as from the record objects themselves."""
    records = _mixed_records(tmp_path)
    dataset = TrainDataset(records, augmentation, seed=7)
    assert isinstance(dataset.records, RecordStore) and len(dataset) == len(records)
    assert list(dataset.records) == records and dataset.records[-1] == records[-1]
    with pytest.raises(IndexError):
        dataset.records[len(records)]
    objects = TrainDataset(records, augmentation, seed=7)
    objects.records = records  # as the dataset kept them before
    warned = 0
    for position in range(24):
        key = (position % len(records), position)
        got, want = dataset[key], objects[key]
        assert (got.name, got.position, got.warnings) == (want.name, want.position, want.warnings)
        assert got.image.equal(want.image) and got.masks.equal(want.masks)
        warned += bool(got.warnings)
    assert warned  # the image that is not there was drawn and replaced, and said so


def test_an_empty_store_has_no_records():
    store = RecordStore([])
    assert len(store) == 0 and list(store) == []


def _private_dirty() -> int:
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no Private_Dirty in /proc/self/smaps_rollup")


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup") or not hasattr(os, "fork"),
                    reason="needs fork and /proc/self/smaps_rollup (Linux 4.14+) to measure a child's private memory")
def test_a_forked_loader_worker_reading_every_record_does_not_copy_them(tmp_path):
    """A loader worker is a fork of the training process. With the records a list of objects, reading each one
    wrote its reference counts, so a worker came to hold a private copy of all of them (LVIS: GBs per worker, times
    4 workers, times 8 GPUs: out of memory hours into a run). Read from the shared buffer, a worker gains a small
    fraction of it."""
    rng = np.random.default_rng(0)
    records = [
        TrainRecord(f"r{i}", [FrameRecord(tmp_path / f"{i}.jpg", 480, 640, [
            InstanceAnnotation([rng.uniform(0, 400, 60).tolist() for _ in range(2)], int(k), f"a {i}.{k}")
            for k in range(8)])])
        for i in range(2000)
    ]
    python_size = sum(sys.getsizeof(part) + 24 * len(part)
                      for r in records for i in r.frames[0].instances for part in i.segmentation)
    dataset = TrainDataset(records, AugmentationConfig())
    del records  # as the training run does once its dataset is made
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: read every record as TrainDataset._map does
        try:
            os.close(read)
            before = _private_dirty()
            points = 0
            for index in range(len(dataset)):
                for frame in dataset.records[index].frames:
                    for inst in frame.instances:
                        points += sum(len(np.asarray(part, np.float64).reshape(-1, 2)) for part in inst.segmentation)
            os.write(write, json.dumps([_private_dirty() - before, points]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as handle:
        answer = handle.read()
    os.waitpid(pid, 0)
    gained, points = json.loads(answer)
    assert points == 2000 * 8 * 2 * 30
    assert gained < python_size / 5, f"the worker gained {gained >> 20} MiB reading {python_size >> 20} MiB of records"
