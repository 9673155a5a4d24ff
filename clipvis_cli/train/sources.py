"""Training datasets by name or path: LVIS v1 without rare categories, COCO 2017, YouTube-VIS train, custom files.

Image datasets live under the same data root as ``clipvis evaluate`` (``--data-root``, else the first of
``$CLIPVIS_DATASETS``, ``$DETECTRON2_DATASETS`` and ``./datasets`` that holds every registered dataset the config
names: ``train_data_root``), in the official layout::

    coco/train2017/*.jpg                      coco/annotations/instances_train2017.json
    lvis/lvis_v1_train.json                   lvis/lvis_v1_train_norare.json (built from the former on first use)

YouTube-VIS 2019/2021 train come from the evaluation registry (``ytvis2019/train/JPEGImages`` + ``train.json``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from clipvis.cli.atomic import atomic_write_json
from clipvis.cli.datasets import DatasetError, UnknownDatasetError, locate_dataset, resolve_data_root
from clipvis.cli.json_io import parse_json
from clipvis.cli.train.records import TrainDataError, TrainRecord, read_annotation_file, read_annotations
from clipvis.paths import NO_SUCH_FILE, missing_reason

LVIS_TRAIN = "lvis/lvis_v1_train.json"
LVIS_NORARE = "lvis/lvis_v1_train_norare.json"
IMAGE_DATASETS = {
    "lvis_v1_train_norare": (LVIS_NORARE, "coco"),
    "lvis_v1_train": (LVIS_TRAIN, "coco"),
    "coco_2017_train": ("coco/annotations/instances_train2017.json", "coco/train2017"),
}
VIDEO_DATASETS = ("ytvis_2019_train", "ytvis_2021_train")


@dataclass
class TrainSource:
    """Records of one training dataset and whether they are videos."""

    name: str
    records: list[TrainRecord]
    is_video: bool
    warnings: list[str]
    annotation_file: Path | None = None  # the file the records were read from


def remove_lvis_rare(source: Path, target: Path, progress: Callable[[str], None] | None = None) -> Path:
    """Write ``target``: the LVIS file ``source`` without the annotations of rare (frequency "r") categories
    (the official ``tools/remove_lvis_rare.py``), atomically: a partial file never appears at ``target``."""
    say = progress or (lambda message: None)
    say(f"building {target.name} from {source} (removing rare-category annotations; one-time step)")
    data: dict[str, Any] = parse_json(_read_with_progress(source))
    rare = {c["id"] for c in data.get("categories", []) if c.get("frequency") == "r"}
    before = len(data.get("annotations", []))
    data["annotations"] = [a for a in data.get("annotations", []) if a.get("category_id") not in rare]
    say(f"kept {len(data['annotations'])} of {before} annotations ({len(rare)} rare categories removed); writing")
    atomic_write_json(target, data)
    return target


def _read_with_progress(path: Path, chunk_bytes: int = 16 << 20) -> bytearray:
    """The file's bytes, read in chunks behind a progress bar on stderr (shown on a terminal; LVIS train is ~1 GB)."""
    buffer = bytearray()
    with open(path, "rb") as handle, tqdm(
        total=path.stat().st_size, desc=f"reading {path.name}", unit="B", unit_scale=True, disable=None, leave=False
    ) as bar:
        while chunk := handle.read(chunk_bytes):
            buffer += chunk
            bar.update(len(chunk))
    return buffer


def holds_datasets(root: Path, names: list[str]) -> bool:
    """Whether ``root`` is a folder holding the files of every registered dataset in ``names`` (training or test;
    names it does not know are not counted): the annotation file and image/frame folder."""
    if not root.is_dir():
        return False
    for name in names:
        key = str(name).strip().lower()
        if key in IMAGE_DATASETS:
            annotation, images = IMAGE_DATASETS[key]
            annotations = [root / annotation] + ([root / LVIS_TRAIN] if key == "lvis_v1_train_norare" else [])
            if not any(path.is_file() for path in annotations) or not (root / images).is_dir():
                return False
        else:
            try:
                locate_dataset(key, root)
            except UnknownDatasetError:  # said later, with the known names
                continue
            except DatasetError:
                return False
    return True


def train_data_root(
    data_root: str | Path | None, names: list[str], environ: Mapping[str, str] | None = None
) -> Path:
    """The data root of a training run: ``data_root`` when given; else the first of $CLIPVIS_DATASETS,
    $DETECTRON2_DATASETS and ./datasets that holds every registered dataset of ``names`` (DATASETS.TRAIN and
    DATASETS.TEST; no name: the first existing folder); when none does, the first of them (its messages then say
    what is missing there)."""
    return resolve_data_root(data_root or None, environ, holds=lambda root: holds_datasets(root, names))


def _image_source(name: str, root: Path, filter_empty: bool, say: Callable[[str], None]) -> TrainSource:
    annotation, images = IMAGE_DATASETS[name]
    annotation_path, image_root = root / annotation, root / images
    if name == "lvis_v1_train_norare" and not annotation_path.is_file():
        if not (root / LVIS_TRAIN).is_file():
            raise TrainDataError(
                f"dataset {name}: neither {annotation_path} nor {root / LVIS_TRAIN} exists; download LVIS v1 "
                f"(https://www.lvisdataset.org/dataset) to {root / 'lvis'} and the COCO 2017 train and val images "
                f"to {root / 'coco/train2017'} and {root / 'coco/val2017'}, where LVIS' coco_url names each (data "
                f"root {root}: --data-root or $CLIPVIS_DATASETS)"
            )
        remove_lvis_rare(root / LVIS_TRAIN, annotation_path, say)
    if not annotation_path.is_file():
        raise TrainDataError(
            f"dataset {name}: {annotation_path} not found (data root {root}: --data-root or $CLIPVIS_DATASETS)"
        )
    if not image_root.is_dir():
        raise TrainDataError(f"dataset {name}: image folder {image_root} not found")
    records, warnings = read_annotation_file(annotation_path, image_root, filter_empty=filter_empty)
    return TrainSource(name, records, False, warnings, annotation_path)


def load_sources(
    dataset_names: list[str],
    custom: list[dict[str, Any]],
    data_root: str | Path | None,
    filter_empty: bool,
    say: Callable[[str], None] | None = None,
    crowd_as_instances: bool = False,
) -> list[TrainSource]:
    """Every training dataset the config names (registered names and custom ``{json, images}`` entries).
    ``crowd_as_instances``: the custom entries' crowd masks are instances too (registered datasets follow the
    official recipe: crowd regions are left out)."""
    say = say or (lambda message: None)
    root = train_data_root(data_root, [*dataset_names])
    sources: list[TrainSource] = []
    shared_categories: dict[str, int] = {}  # the custom files' classes, by name (repeat-factor sampling)
    for entry in custom:
        if not isinstance(entry, dict) or "json" not in entry:
            raise TrainDataError(f"custom training data entry {entry!r} needs 'json' (and 'images', unless every "
                                 "frame comes from the input segment recorded)")
        annotation = Path(entry["json"]).expanduser()
        images = Path(entry["images"]).expanduser() if entry.get("images") else None
        if annotation.is_dir():
            raise TrainDataError(f"{annotation}: a folder, not a file: --data takes an annotation file (COCO instances "
                                 "or YouTube-VIS JSON)")
        if not annotation.is_file():
            reason = missing_reason(annotation)
            raise TrainDataError(f"{annotation}: annotation file not found" if reason == NO_SUCH_FILE
                                 else f"{annotation}: {reason}")
        if images is not None and images.is_file():
            raise TrainDataError(f"{images}: a file, not a folder: --images takes the folder of the images (COCO) "
                                 f"or frames (YouTube-VIS) that {annotation.name} names")
        # no --images: the frames are looked for under the annotation file itself, where none can be, so that each
        # is read from the input segment recorded, never from a folder nobody named
        read = read_annotations(annotation, images or annotation, filter_empty=filter_empty,
                                crowd_as_instances=crowd_as_instances, shared_categories=shared_categories)
        # no such folder: fine where every frame is read from the input segment recorded (a video, an image folder)
        if images is None or not images.is_dir():
            _check_recorded_inputs(annotation, images, read.records, read.is_video, several=len(custom) > 1)
        # a YouTube-VIS file is a video source, a COCO file an image one (`segment`'s coco.json too: one image per
        # frame), by the file's top-level keys (a head of the text sniffed for "videos" took a COCO file with a class
        # of that name for videos, and a YouTube-VIS file with a long "info" first for images)
        sources.append(TrainSource(str(annotation), read.records, read.is_video, read.warnings, annotation))
    for name in dataset_names:
        key = name.strip().lower()
        if key in IMAGE_DATASETS:
            sources.append(_image_source(key, root, filter_empty, say))
        elif key in VIDEO_DATASETS:
            try:
                located = locate_dataset(key, root)
            except DatasetError as exc:
                raise TrainDataError(str(exc)) from exc
            records, warnings = read_annotation_file(located.annotation_file, located.frames_root)
            sources.append(TrainSource(key, records, True, warnings, located.annotation_file))
        else:
            known = ", ".join([*IMAGE_DATASETS, *VIDEO_DATASETS])
            raise TrainDataError(f"unknown training dataset {name!r}; known: {known}, or custom data by path")
    if not sources:
        raise TrainDataError("no training data: set DATASETS.TRAIN or pass --data JSON --images DIR")
    return sources


def _check_recorded_inputs(annotation: Path, images: Path | None, records: list[TrainRecord], is_video: bool,
                           several: bool = False) -> None:
    """With no ``images`` folder (none there, or none given), every frame must come from the input ``segment``
    recorded (a video, an image folder): TrainDataError naming the first recorded input that is gone (the folder
    alone was blamed) and how to point the file at where it is now; else, when frames have no recorded input, the
    videos (or images) lacking one where others have one, else the folder, or the annotation file where none was
    given. ``several``: more than one ``--data`` file, so that ``--images`` pair up in order."""
    frames = [frame for record in records for frame in record.frames]
    field = "videos[].source" if is_video else "video_sources[].source"
    gone = list(dict.fromkeys(frame.source_video for frame in frames
                              if frame.source_video is not None and not frame.source_video.exists()))
    if gone:
        more = len(gone) - 1
        others = f" (and {more} other input{'' if more == 1 else 's'} it records)" if more else ""
        where_now = f"write where it is now in the file's {field} (relative to {annotation.parent}, or absolute)"
        remedy = (f": {where_now}, or give --images FOLDER with its frames as images" if images is None else
                  f", and {images}, where its frames were looked for as images, does not exist: {where_now}")
        raise TrainDataError(f"{gone[0]}: no such video (or image folder): {annotation} records its frames as "
                             f"segmented from it{others} (moved or deleted since?){remedy}")
    lacking = [record for record in records if any(frame.source_video is None for frame in record.frames)]
    if not lacking:
        return
    if images is not None:
        raise TrainDataError(f"{images}: image/frame folder not found")
    pairing = (" (one --images for each --data, in order: --images '' for a --data file whose inputs it records)"
               if several else "")
    if len(lacking) == len(records):
        raise TrainDataError(f"{annotation}: its {'frames' if is_video else 'images'} record no video or image "
                             "folder they were read from (only segment's ytvis.json and coco.json do): give "
                             f"--images FOLDER for it{pairing}")
    one = len(lacking) == 1
    root = f"{annotation}/"  # no --images: a COCO record is named by the annotation file and the image's file_name
    names = [repr(record.name.removeprefix(root)) for record in lacking]
    listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    kind = "video" if is_video else "image"
    add = ("add `source` (the video's path" if is_video else
           f"give {'it' if one else 'them'} a video_id that video_sources records (with the video's path")
    raise TrainDataError(f"{annotation}: {kind}{'' if one else 's'} {listed} record{'s' if one else ''} no video or "
                         f"image folder {'it was' if one else 'they were'} read from, unlike its other {kind}s: "
                         f"{add}, relative to {annotation.parent} or absolute), or give --images FOLDER with "
                         f"{'its' if one else 'their'} frames as images{pairing}")
