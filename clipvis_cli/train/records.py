"""Training records: COCO-instances and YouTube-VIS annotation files read into plain per-image/per-video records.

A :class:`TrainRecord` is one dataset item: an image with its instance annotations, or a video whose frames each
carry theirs (the video stage samples one frame per item: docs/training.md, "Data and augmentation"). Training is
class-agnostic: category ids are kept only for repeat-factor sampling. Crowd annotations are dropped here; an
annotation whose segmentation cannot be read is dropped with a warning naming it (returned, so the caller logs each
once).

Accepted segmentations: polygons (list of flat x,y lists), uncompressed RLE (``counts`` a list) and compressed RLE
(``counts`` a string), as COCO, LVIS, YouTube-VIS and ``clipvis segment``'s own ``coco.json``/``ytvis.json`` write.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class TrainDataError(ValueError):
    """An annotation file that cannot be used at all (one-line message naming it)."""


@dataclass
class InstanceAnnotation:
    """One instance in one image: its segmentation as found in the file, and its category (for sampling only)."""

    segmentation: Any
    category_id: int
    name: str  # where it came from, for warnings: "<file>: annotation 17"


@dataclass
class FrameRecord:
    """One image (or one video frame) and its instances."""

    path: Path
    height: int
    width: int
    instances: list[InstanceAnnotation] = field(default_factory=list)
    source_video: Path | None = None  # a video file to decode the frame from when `path` does not exist
    frame_index: int = 0


@dataclass
class TrainRecord:
    """One dataset item: a single image, or the frames of one video (one is drawn per sample)."""

    name: str
    frames: list[FrameRecord]

    @property
    def category_ids(self) -> set[int]:
        return {inst.category_id for frame in self.frames for inst in frame.instances}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise TrainDataError(f"{path}: cannot read annotation file ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"{exc.msg} at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "not text"
        raise TrainDataError(f"{path}: not valid JSON ({where}); --data takes a COCO instances or YouTube-VIS JSON "
                             "file (unzip a CVAT download, and export it as COCO 1.0)") from exc
    if not isinstance(data, dict):
        raise TrainDataError(f"{path}: expected a JSON object with images/videos and annotations")
    return data


def _entries(annotation_file: Path, data: dict[str, Any] | None, key: str, kind: str) -> tuple[list, list]:
    """The ``key`` list (images or videos) and the annotations list of a file, or a one-line error."""
    data = _read_json(annotation_file) if data is None else data
    entries, annotations = data.get(key), data.get("annotations")
    if not isinstance(entries, list) or not isinstance(annotations, list):
        raise TrainDataError(f"{annotation_file}: not {kind} (needs '{key}' and 'annotations')")
    return entries, annotations


def check_segmentation(segmentation: Any, height: int, width: int) -> str | None:
    """Why a segmentation cannot be decoded for an ``height x width`` image, or None when it can."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list)]
        if len(polygons) != len(segmentation) or not polygons:
            return "polygon segmentation is not a list of coordinate lists"
        for polygon in polygons:
            if len(polygon) < 6 or len(polygon) % 2 or not all(isinstance(v, (int, float)) for v in polygon):
                return "polygon with fewer than 3 points or non-numeric coordinates"
        return None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2) or counts is None:
            return "RLE without size/counts"
        if [int(size[0]), int(size[1])] != [height, width]:
            return f"RLE size {size} differs from the image size [{height}, {width}]"
        if isinstance(counts, list):
            if sum(int(c) for c in counts) != height * width:
                return "uncompressed RLE counts do not add up to height x width"
        elif not isinstance(counts, str):
            return "RLE counts neither a string nor a list"
        return None
    return f"segmentation of type {type(segmentation).__name__}"


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A checked segmentation -> ``[height, width]`` uint8 mask (0/1)."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, list):
        rles = coco_mask.frPyObjects(segmentation, height, width)
        rle = coco_mask.merge(rles)
    elif isinstance(segmentation["counts"], list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return coco_mask.decode(rle)


def _instance(raw: dict[str, Any], segmentation: Any, height: int, width: int, name: str,
              warnings: list[str], crowd: str = "drop") -> InstanceAnnotation | None:
    """``crowd``: "drop" a crowd annotation (the official recipe), or "keep" it as an instance."""
    if raw.get("iscrowd", 0) and crowd == "drop":
        return None
    if segmentation is None:
        return None
    problem = check_segmentation(segmentation, height, width)
    if problem is not None:
        warnings.append(f"{name}: skipped bad annotation ({problem})")
        return None
    return InstanceAnnotation(segmentation, int(raw.get("category_id", 0) or 0), name)


def _crowd_note(annotation_file: Path, dropped: int, silent: bool = False) -> list[str]:
    """One warning for a file's crowd annotations left out (CVAT's and Datumaro's masks are crowd RLE)."""
    if not dropped or silent:
        return []
    return [f"{annotation_file}: {dropped} crowd annotation(s) (iscrowd: 1) not trained on, as the official recipe "
            "does; CVAT and Datumaro mark every mask shape so: CLIPVIS.CROWD_AS_INSTANCES=true trains on them"]


def read_coco_instances(
    annotation_file: Path, image_root: Path, filter_empty: bool = True, data: dict[str, Any] | None = None,
    crowd_as_instances: bool | None = None,
) -> tuple[list[TrainRecord], list[str]]:
    """A COCO/LVIS instances file -> one record per image (images without usable instances dropped when
    ``filter_empty``), and the warnings for annotations that were skipped. Crowd annotations are left out unless
    ``crowd_as_instances`` (False: with one warning counting them, for custom data; None: silently, as the official
    recipe for the registered datasets)."""
    data = _read_json(annotation_file) if data is None else data
    images, annotations = _entries(annotation_file, data, "images", "a COCO instances file")
    warnings: list[str] = []
    frames: dict[Any, FrameRecord] = {}
    sources = _video_sources(annotation_file, data.get("video_sources"))
    for image in images:
        try:
            # LVIS gives coco_url instead of file_name: the file name is its last two components (split/name).
            file_name = image.get("file_name") or "/".join(str(image["coco_url"]).split("/")[-2:])
            frames[image["id"]] = FrameRecord(
                image_root / file_name, int(image["height"]), int(image["width"]),
                # segment's coco.json of a video input: the frame is decoded from the video when no image exists
                source_video=sources.get(image.get("video_id")), frame_index=int(image.get("frame_index") or 0),
            )
        except (KeyError, TypeError, ValueError):
            warnings.append(f"{annotation_file}: skipped image entry without id/file_name/height/width: "
                            f"{str(image)[:80]}")
    crowds = 0
    for position, raw in enumerate(annotations):
        name = _annotation_name(annotation_file, raw, position)
        if not isinstance(raw, dict) or raw.get("image_id") not in frames:
            warnings.append(f"{name}: skipped bad annotation (no known image_id)")
            continue
        frame = frames[raw["image_id"]]
        if raw.get("segmentation") is None and not raw.get("iscrowd", 0):  # a box alone: nothing to train masks on
            warnings.append(f"{name}: skipped bad annotation (no segmentation)")
            continue
        if raw.get("iscrowd", 0) and not crowd_as_instances:
            crowds += 1
            continue
        inst = _instance(raw, raw.get("segmentation"), frame.height, frame.width, name, warnings, crowd="keep")
        if inst is not None:
            frame.instances.append(inst)
    records = [
        TrainRecord(str(frame.path), [frame])
        for frame in frames.values()
        if frame.instances or not filter_empty
    ]
    if not records:
        note = _crowd_note(annotation_file, crowds, silent=crowd_as_instances is None)
        hint = f" ({note[0].split(': ', 1)[1]})" if note else ""
        raise TrainDataError(f"{annotation_file}: no image with a usable (non-crowd) instance annotation{hint}")
    return records, warnings + _crowd_note(annotation_file, crowds, silent=crowd_as_instances is None)


def _annotation_name(annotation_file: Path, raw: Any, position: int) -> str:
    ident = raw.get("id", f"#{position}") if isinstance(raw, dict) else f"#{position}"
    return f"{annotation_file}: annotation {ident}"


def _frame_path(frames_root: Path, file_name: str) -> Path:
    direct = frames_root / file_name
    if direct.exists():
        return direct
    parts = [p for p in re.split(r"[\\/]+", file_name) if p]
    for candidate in (Path(*parts[-2:]), Path(parts[-1])) if parts else ():
        if (frames_root / candidate).exists():
            return frames_root / candidate
    return direct


def _source_video(annotation_file: Path, source: Any) -> Path | None:
    """The video file or image folder a ``source`` field names (as given, else relative to the annotation file), or
    None. Frames not found under ``--images`` are read from it."""
    if not isinstance(source, str) or not source:
        return None
    for candidate in (Path(source), annotation_file.parent / source):
        if candidate.is_file() or candidate.is_dir():
            return candidate
    return None


def _video_sources(annotation_file: Path, videos: Any) -> dict[Any, Path]:
    """A COCO file's non-standard ``video_sources`` list (``segment``'s ``coco.json``): video id -> video file."""
    found = {}
    for video in videos if isinstance(videos, list) else []:
        if isinstance(video, dict) and (path := _source_video(annotation_file, video.get("source"))) is not None:
            found[video.get("video_id")] = path
    return found


def read_ytvis(
    annotation_file: Path, frames_root: Path, data: dict[str, Any] | None = None,
    crowd_as_instances: bool | None = None,
) -> tuple[list[TrainRecord], list[str]]:
    """A YouTube-VIS file (also ``clipvis segment``'s ``ytvis.json``) -> one record per video, frames with their
    instances (a track's ``None`` segmentation on a frame means the instance is absent there).

    Frames are looked up under ``frames_root`` by ``file_names`` (as given, then by their last two components, as
    the official LV-VIS loader does); a video entry with a ``source`` video file and ``frame_indices`` (as
    ``segment`` writes for a video input) is decoded from that file when the frame images do not exist.
    """
    videos, annotations = _entries(annotation_file, data, "videos", "a YouTube-VIS file")
    warnings: list[str] = []
    records: dict[Any, TrainRecord] = {}
    for video in videos:
        try:
            names = list(video["file_names"])
            height, width = int(video["height"]), int(video["width"])
            source_path = _source_video(annotation_file, video.get("source"))
            indices = list(video.get("frame_indices") or range(len(names)))
            frames = [
                FrameRecord(_frame_path(frames_root, name), height, width, source_video=source_path,
                            frame_index=int(index))
                for name, index in zip(names, indices, strict=False)
            ]
            records[video["id"]] = TrainRecord(str(video.get("name") or video["id"]), frames)
        except (KeyError, TypeError, ValueError):
            warnings.append(f"{annotation_file}: skipped video entry without id/file_names/height/width")
    crowds = 0
    for position, raw in enumerate(annotations):
        name = _annotation_name(annotation_file, raw, position)
        if not isinstance(raw, dict) or raw.get("video_id") not in records:
            warnings.append(f"{name}: skipped bad annotation (no known video_id)")
            continue
        record = records[raw["video_id"]]
        if raw.get("iscrowd", 0) and not crowd_as_instances:
            crowds += 1
            continue
        segmentations = raw.get("segmentations")
        if not isinstance(segmentations, list) or len(segmentations) != len(record.frames):
            warnings.append(f"{name}: skipped bad annotation (segmentations do not list one entry per frame)")
            continue
        for t, (frame, segmentation) in enumerate(zip(record.frames, segmentations, strict=True)):
            inst = _instance(raw, segmentation, frame.height, frame.width, f"{name} frame {t}", warnings,
                             crowd="keep")
            if inst is not None:
                frame.instances.append(inst)
    usable = [r for r in records.values() if r.frames]
    if not usable:
        raise TrainDataError(f"{annotation_file}: no video with frames")
    return usable, warnings + _crowd_note(annotation_file, crowds, silent=crowd_as_instances is None)


def read_annotation_file(annotation_file: Path, image_root: Path, filter_empty: bool = True,
                         crowd_as_instances: bool | None = None) -> tuple[list[TrainRecord], list[str]]:
    """COCO instances or YouTube-VIS, told apart by the top-level keys (``images`` vs ``videos``)."""
    data = _read_json(annotation_file)
    if "videos" in data:
        return read_ytvis(annotation_file, image_root, data=data, crowd_as_instances=crowd_as_instances)
    if "images" in data:
        return read_coco_instances(annotation_file, image_root, filter_empty=filter_empty, data=data,
                                   crowd_as_instances=crowd_as_instances)
    raise TrainDataError(f"{annotation_file}: neither COCO instances ('images') nor YouTube-VIS ('videos')")


def category_image_counts(records: Iterable[TrainRecord]) -> dict[int, int]:
    """How many records contain each category (for repeat-factor sampling)."""
    counts: dict[int, int] = {}
    for record in records:
        for category in record.category_ids:
            counts[category] = counts.get(category, 0) + 1
    return counts
