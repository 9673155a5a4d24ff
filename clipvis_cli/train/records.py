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
import operator
import os
import pickle
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from clipvis.cli import rle as rle_codec
from clipvis.cli.frame_numbers import decoded_from_video, frame_number_in_name, video_frame_numbers
from clipvis.cli.json_io import parse_json
from clipvis.cli.messages import counted
from clipvis.cli.results import recorded_source
from clipvis.cli.rle import areas, compressed_counts_problems


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
            data = parse_json(handle.read())
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


# A polygon vertex may lie outside its image (the mask is clipped there), but not further than this many image
# sizes beyond an edge: pycocotools rasterises every edge point by point, so a coordinate such as 1e9 (or NaN) makes
# it allocate without bound or crash. -4 W <= x <= 5 W and -4 H <= y <= 5 H are accepted.
POLYGON_MARGIN = 4


def _polygon_problem(polygon: list, height: int, width: int) -> str | None:
    if len(polygon) < 6 or len(polygon) % 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon):
        return "polygon with fewer than 3 points or non-numeric coordinates"
    coordinates = np.asarray(polygon, np.float64).reshape(-1, 2)
    if not np.isfinite(coordinates).all():
        return "polygon with a non-finite (NaN or infinite) coordinate"
    low = -POLYGON_MARGIN * np.array([width, height], np.float64)
    high = (POLYGON_MARGIN + 1) * np.array([width, height], np.float64)
    outside = ((coordinates < low) | (coordinates > high)).any(1)
    if outside.any():
        x, y = coordinates[int(np.flatnonzero(outside)[0])]
        return (f"polygon point ({x:g}, {y:g}) lies more than {POLYGON_MARGIN} image sizes outside the "
                f"{width}x{height} image")
    return None


def check_segmentation(segmentation: Any, height: int, width: int, runs: bool = True) -> str | None:
    """Why a segmentation cannot be decoded for an ``height x width`` image, or None when it can. ``runs``: check
    a compressed RLE's run lengths too (else the caller does, for many at once: ``compressed_counts_problems``)."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list)]
        if len(polygons) != len(segmentation) or not polygons:
            return "polygon segmentation is not a list of coordinate lists"
        for polygon in polygons:
            if (problem := _polygon_problem(polygon, height, width)) is not None:
                return problem
        return None
    if isinstance(segmentation, dict):
        size, counts = segmentation.get("size"), segmentation.get("counts")
        if not (isinstance(size, list) and len(size) == 2) or counts is None:
            return "RLE without size/counts"
        if size != [height, width]:
            return f"RLE size {size} differs from the image size [{height}, {width}]"
        if isinstance(counts, list):
            if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and c >= 0 and float(c).is_integer()
                       for c in counts):
                return "uncompressed RLE counts that are not all non-negative integers"
            if sum(counts) != height * width:
                return "uncompressed RLE counts do not add up to height x width"
        elif isinstance(counts, str):
            return compressed_counts_problems([counts], [height * width])[0] if runs else None
        else:
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
    return rle_codec.decode(rle).astype(np.uint8)  # not pycocotools': it warns with numpy 2 (clipvis.cli.rle.decode)


def _category(raw: dict[str, Any]) -> int | None:
    """The annotation's category id as an integer (0 when it has none), or None when it is not a number."""
    return _category_number(raw.get("category_id", 0))


def _category_number(value: Any) -> int | None:
    """A category id as an integer (0 for none), or None when it is not a number."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def _instance(raw: dict[str, Any], segmentation: Any, height: int, width: int, name: str,
              warnings: list[str], crowd: str = "drop") -> InstanceAnnotation | None:
    """``crowd``: "drop" a crowd annotation (the official recipe), or "keep" it as an instance."""
    if raw.get("iscrowd", 0) and crowd == "drop":
        return None
    if segmentation is None:
        return None
    if isinstance(segmentation, list) and segmentation:
        # As detectron2's load_coco_json: polygon parts of fewer than 3 points are dropped, the instance is kept
        # while a part remains (COCO and LVIS hold such parts).
        parts = [p for p in segmentation if not (isinstance(p, list) and (len(p) < 6 or len(p) % 2))]
        if not parts:
            odd = any(isinstance(p, list) and len(p) % 2 for p in segmentation)
            why = "an odd number of coordinates" if odd else "fewer than 3 points"
            warnings.append(f"{name}: skipped bad annotation (every polygon part has {why})")
            return None
        segmentation = parts
    problem = check_segmentation(segmentation, height, width, runs=False)  # the runs: _drop_corrupt_rles
    if problem is not None:
        warnings.append(f"{name}: skipped bad annotation ({problem})")
        return None
    category = _category(raw)
    if category is None:
        warnings.append(f"{name}: skipped bad annotation (category_id {str(raw.get('category_id'))[:40]!r} is not "
                        "an integer)")
        return None
    return InstanceAnnotation(segmentation, category, name)


def _drop_corrupt_rles(frames: Iterable[FrameRecord], warnings: list[str]) -> None:
    """Remove the instances whose compressed RLE's runs do not make a mask of their frame (one warning each)."""
    found = [(frame, inst) for frame in frames for inst in frame.instances
             if isinstance(inst.segmentation, dict) and isinstance(inst.segmentation.get("counts"), str)]
    problems = compressed_counts_problems([inst.segmentation["counts"] for _, inst in found],
                                          [frame.height * frame.width for frame, _ in found])
    for (frame, inst), problem in zip(found, problems, strict=True):
        if problem is not None:
            frame.instances.remove(inst)
            warnings.append(f"{inst.name}: skipped bad annotation ({problem})")


# A polygon part whose area is below this (square pixels) covers nothing (its points on one line, or all one point):
# pycocotools draws no pixel of it at any scale.
EMPTY_POLYGON_AREA = 1e-6


def _polygon_areas(parts: Sequence[list]) -> np.ndarray:
    """The area of each polygon part (a flat x, y list of at least 3 points, checked), by the shoelace formula,
    vectorised over every part (an LVIS file holds ~10^6)."""
    points = np.fromiter((len(part) // 2 for part in parts), np.int64, len(parts))
    if not len(parts):
        return np.zeros(0)
    xy = np.fromiter(chain.from_iterable(parts), np.float64, int(points.sum()) * 2).reshape(-1, 2)
    starts = np.cumsum(points) - points
    following = np.arange(1, len(xy) + 1)
    following[starts + points - 1] = starts  # each part's last point is followed by its first
    cross = xy[:, 0] * xy[following, 1] - xy[following, 0] * xy[:, 1]
    return np.abs(np.add.reduceat(cross, starts)) / 2


def empty_masks(instances: Sequence[InstanceAnnotation]) -> list[bool]:
    """Whether each instance's (checked) segmentation covers no pixel: an RLE without a foreground run, polygons of
    no area (``EMPTY_POLYGON_AREA``). Such an instance gives no mask to train on: a sample drops it as empty."""
    empty = [False] * len(instances)
    rles = [k for k, inst in enumerate(instances) if isinstance(inst.segmentation, dict)]
    for k, area in zip(rles, areas([instances[k].segmentation for k in rles]), strict=True):
        empty[k] = area == 0
    polygons = [k for k, inst in enumerate(instances) if isinstance(inst.segmentation, list)]
    if polygons:
        parts = np.fromiter((len(instances[k].segmentation) for k in polygons), np.int64, len(polygons))
        largest = np.maximum.reduceat(
            _polygon_areas([part for k in polygons for part in instances[k].segmentation]), np.cumsum(parts) - parts)
        for k, area in zip(polygons, largest.tolist(), strict=True):
            empty[k] = area < EMPTY_POLYGON_AREA
    return empty


def _empty_note(annotation_file: Path, count: int, first: str | None, tracks: bool) -> list[str]:
    """One warning for a file's annotations (or tracks) whose masks are all empty."""
    if not count:
        return []
    first = first.removeprefix(f"{annotation_file}: ") if first else None
    what = f"track{'' if count == 1 else 's'} whose every mask is" if tracks else \
        f"annotation{'' if count == 1 else 's'} whose mask is"
    return [f"{annotation_file}: {count} {what} empty (an RLE without a pixel, or a polygon of no area"
            f"{f'; the first: {first}' if first else ''}): no mask to train on there"]


@dataclass
class _Tally:
    """What a file's annotations came to, for the error when none of them gives a mask to train on."""

    annotations: int = 0
    crowd: int = 0
    without_mask: int = 0
    shared_id: int = 0  # on an image/video whose id another one has too (skipped: whose they are cannot be told)
    empty: int = 0  # whose mask (a track's every mask) is empty: no pixel
    unknown_entry: int = 0  # whose image_id/video_id names no usable entry of the file
    bad_entries: int = 0  # image/video entries skipped for lacking a usable id, file name(s), height or width
    first_bad_entry: str = ""
    first_problem: str | None = None

    def no_masks_error(self, annotation_file: Path, what: str, crowd_hint: bool) -> TrainDataError:
        if not self.annotations:
            why = "the file has no annotations"
        else:
            parts = []
            if self.without_mask:
                parts.append(f"{self.without_mask} without a mask (boxes only)")
            if self.crowd:
                hint = ", not trained on as in the official recipe; CVAT and Datumaro mark every mask shape so: " \
                       "CLIPVIS.CROWD_AS_INSTANCES=true trains on them" if crowd_hint else ""
                parts.append(f"{self.crowd} crowd (iscrowd: 1{hint})")
            if self.shared_id:
                parts.append(f"{self.shared_id} on {what}s that share an id")
            if self.empty:
                parts.append(f"{self.empty} with an empty mask (an RLE without a pixel, or a polygon of no area)")
            if self.unknown_entry:
                fields = "id/file_names/height/width" if what == "video" else "id/file_name/height/width"
                entries = (f": {counted(self.bad_entries, f'{what} entry', f'{what} entries')} skipped for lacking "
                           f"a usable {fields} (the first: {self.first_bad_entry})" if self.bad_entries else "")
                parts.append(f"{self.unknown_entry} on no usable {what} of the file ({what}_id){entries}")
            malformed = (self.annotations - self.without_mask - self.crowd - self.shared_id - self.empty
                         - self.unknown_entry)
            if malformed > 0:
                first = self.first_problem.removeprefix(f"{annotation_file}: ") if self.first_problem else ""
                first = f"; the first: {first}" if first else ""
                parts.append(f"{malformed} skipped as malformed{first}")
            why = f"of its {self.annotations} annotation(s): " + "; ".join(parts)
        return TrainDataError(f"{annotation_file}: no {what} with a usable (non-crowd) instance mask to train on "
                              f"({why})")


def _reference(raw: dict[str, Any], key: str) -> Any:
    """``raw[key]`` when it is an id that can name an entry (a number or a string: not a list, a null...), else
    None: an entry's ``id``, an annotation's ``image_id``/``video_id``."""
    ident = raw.get(key)
    return ident if isinstance(ident, (int, float, str)) and not isinstance(ident, bool) else None


def _entry_id(entry: Any) -> Any:
    """The ``id`` of an images/videos entry when it can name one (``_reference``), else None."""
    return _reference(entry, "id") if isinstance(entry, dict) else None


def _size(value: Any) -> int:
    """An entry's height or width: a positive integer (ValueError / TypeError otherwise)."""
    number = int(value)
    if number <= 0:
        raise ValueError(f"size {number}")
    return number


def _file_name(value: Any) -> str:
    """An entry's file name: a string a path can hold (TypeError / ValueError otherwise)."""
    if not isinstance(value, str):
        raise TypeError(f"file name of type {type(value).__name__}")
    if not value or "\0" in value:
        raise ValueError("empty file name, or one with a NUL character")
    return value


def _shared_ids(entries: list[Any]) -> set[Any]:
    """The ids given to more than one entry (two exports, each numbering its images from 1, put together)."""
    counts = Counter(ident for entry in entries if (ident := _entry_id(entry)) is not None)
    return {ident for ident, count in counts.items() if count > 1}


def _shared_ids_note(annotation_file: Path, what: str, entries: list[Any], shared: set[Any],
                     annotations: int) -> str:
    """The one warning for the entries skipped because their ids are shared, and their annotations."""
    ordered = list(dict.fromkeys(ident for entry in entries if (ident := _entry_id(entry)) in shared))
    skipped = sum(_entry_id(entry) in shared for entry in entries)
    shown = ", ".join(str(ident)[:40] for ident in ordered[:5])
    ids = f"id {shown}" if len(ordered) == 1 else \
        f"{len(ordered)} ids ({shown}{f' and {len(ordered) - 5} more' if len(ordered) > 5 else ''})"
    return (f"{annotation_file}: skipped {skipped} {what} entries sharing {ids}, with their {annotations} "
            f"annotation{'' if annotations == 1 else 's'}: an id given to more than one {what} leaves which {what} an "
            "annotation is on unknown (annotation files each numbering from 1, put together?)")


def _skipped_note(annotation_file: Path, names: Sequence[str], why: str) -> list[str]:
    """One warning for a file's annotations skipped for one reason (``why``), counted, with the first few (``names``:
    `_annotation_name`'s): a line each was 300 lines for a file of 300 boxes, as empty masks and crowd annotations are
    said once per file."""
    if not names:
        return []
    ids = [name.removeprefix(f"{annotation_file}: annotation ") for name in names]
    shown = ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "")
    return [f"{annotation_file}: {counted(len(ids), 'annotation')} skipped, {why} "
            f"({'annotation' if len(ids) == 1 else 'annotations'} {shown})"]


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
    sources = _video_sources(annotation_file, data.get("video_sources"), warnings)
    from_video = {video_id: decoded_from_video(path) for video_id, path in sources.items()}  # once per video
    shared = _shared_ids(images)
    bad_entries: list[str] = []  # entries skipped for lacking an id, file name or a size: said in no_masks_error
    for image in images:
        if shared and _entry_id(image) in shared:
            continue
        try:
            image_id = _entry_id(image)
            if image_id is None:  # no id (or one of a list, a null...): no annotation can name it
                raise KeyError("id")
            # LVIS gives coco_url instead of file_name: the file name is its last two components (split/name).
            file_name = _file_name(image.get("file_name") or "/".join(str(image["coco_url"]).split("/")[-2:]))
            height, width = _size(image["height"]), _size(image["width"])
            video_id = _reference(image, "video_id")
            source, decoded = sources.get(video_id), from_video.get(video_id, False)
        except (KeyError, TypeError, ValueError, OverflowError):
            warnings.append(f"{annotation_file}: skipped image entry without id/file_name/height/width: "
                            f"{str(image)[:80]}")
            bad_entries.append(str(image)[:80])
            continue
        try:
            index = _image_frame_number(image, file_name, decoded)
        except (TypeError, ValueError) as error:
            warnings.append(f"{annotation_file}: skipped image {str(file_name)[:80]}: which frame of {source} it is "
                            f"cannot be told ({error})")
            continue
        # segment's coco.json of a video input: the frame is decoded from the video when no image exists
        frames[image_id] = FrameRecord(image_root / file_name, height, width, source_video=source, frame_index=index)
    entries_said = len(warnings)
    tally = _Tally(annotations=len(annotations), bad_entries=len(bad_entries),
                   first_bad_entry=bad_entries[0] if bad_entries else "")
    boxes_only: list[str] = []  # annotations without a segmentation
    orphans: list[str] = []  # annotations whose image_id names no usable image
    for position, raw in enumerate(annotations):
        name = _annotation_name(annotation_file, raw, position)
        before, boxes_before = len(warnings), tally.without_mask
        image_id = _reference(raw, "image_id") if isinstance(raw, dict) else None
        if image_id is not None and image_id in shared:
            tally.shared_id += 1  # said once for all (below)
        elif image_id not in frames:
            orphans.append(name)  # said once for all (below)
            tally.unknown_entry += 1
        elif raw.get("segmentation") in (None, []) and not raw.get("iscrowd", 0):  # a box alone: no mask to train
            # on (CVAT's COCO export writes a rectangle's segmentation as [])
            boxes_only.append(name)  # said once for all (below)
            tally.without_mask += 1
        elif raw.get("iscrowd", 0) and not crowd_as_instances:
            tally.crowd += 1
        else:
            frame = frames[image_id]
            inst = _instance(raw, raw.get("segmentation"), frame.height, frame.width, name, warnings, crowd="keep")
            if inst is not None:
                frame.instances.append(inst)
        if tally.first_problem is None and len(warnings) > before and tally.without_mask == boxes_before:
            tally.first_problem = warnings[-1]
    if shared:
        warnings.insert(entries_said, _shared_ids_note(annotation_file, "image", images, shared, tally.shared_id))
    warnings += _skipped_note(annotation_file, orphans, "no known image_id (no usable image of the file has it)")
    warnings += _skipped_note(annotation_file, boxes_only, "without a segmentation (a box alone: no mask to train on)")
    _drop_corrupt_rles(frames.values(), warnings)
    # Kept in the records (an image of empty masks alone is drawn as the official sampler draws it): counted.
    instances = [inst for frame in frames.values() for inst in frame.instances]
    empty = [inst for inst, no_pixel in zip(instances, empty_masks(instances), strict=True) if no_pixel]
    tally.empty = len(empty)
    if len(empty) == len(instances):
        tally.first_problem = tally.first_problem or next((w for w in warnings if "RLE" in w), None)
        raise tally.no_masks_error(annotation_file, "image", crowd_hint=crowd_as_instances is not None)
    records = [
        TrainRecord(str(frame.path), [frame])
        for frame in frames.values()
        if frame.instances or not filter_empty
    ]
    return records, warnings + _empty_note(annotation_file, len(empty), empty[0].name if empty else None,
                                           tracks=False) + _crowd_note(annotation_file, tally.crowd,
                                                                       silent=crowd_as_instances is None)


def _image_frame_number(image: dict[str, Any], file_name: str, from_video: bool) -> int:
    """The source frame of a COCO image: of a video (segment's coco.json, ``from_video``), the number its name gives
    (`frame_000012.jpg`: an image added by hand without ``frame_index`` was decoded as frame 0), else its
    ``frame_index``; ValueError when neither tells it. Of an image folder or a plain image, its ``frame_index`` or 0
    (not used: the file is read)."""
    number = frame_number_in_name(file_name) if from_video else None
    if number is not None:
        return number
    if image.get("frame_index") is not None:
        return int(image["frame_index"])
    if from_video:
        raise ValueError("its file name gives no frame number and it has no frame_index")
    return 0


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


@dataclass
class _SourceNote:
    """A relative recorded ``source`` read from elsewhere than the file's folder, or read there over another file of
    its name in the current folder: said once per data file (`_source_warnings`), not once per video."""

    entry: str
    source: str
    read: Path  # the input read
    other: Path  # the one not read
    from_file: str | None  # the source relative to the file's folder, where the current folder's was read


def _source_video(annotation_file: Path, source: Any, notes: list[_SourceNote], entry: str) -> Path | None:
    """The video file or image folder a ``source`` field names, or None when there is none. A relative one is read
    from the annotation file's folder, as a config's paths are (README, Train); only where that folder holds no such
    input is the current folder's read, noted in ``notes`` (clipvis wrote the path as typed before 2026-12-05:
    docs/formats.md), and where both hold one and they differ, the file's folder's is read, noted too.
    Frames not found under ``--images`` are read from it; one that no longer exists is kept too (the file's folder's,
    for a relative one), so that such a frame's error names it. ``entry`` names the file's entry for the notes."""
    if not isinstance(source, str) or not source:
        return None
    given = Path(source)
    if given.is_absolute():
        return given
    beside = annotation_file.parent / given
    try:
        beside_there = beside.is_file() or beside.is_dir()
        cwd_there = given.is_file() or given.is_dir()
        same = beside_there and cwd_there and beside.samefile(given)
    except OSError:  # a name no file system takes (too long): no video to read frames from
        return None
    if beside_there and cwd_there and not same:
        notes.append(_SourceNote(entry, source, beside, given.absolute(), None))
    elif cwd_there and not beside_there:
        from_file = os.path.relpath(given.absolute(), annotation_file.parent.absolute())
        notes.append(_SourceNote(entry, source, given.absolute(), beside, from_file))
        return given.absolute()
    return beside


def _source_warnings(annotation_file: Path, notes: list[_SourceNote]) -> list[str]:
    """`_source_video`'s notes of one data file as at most two warnings (a file of 500 videos written by an earlier
    segment gave 500 lines): the first entry in full, and how many more."""
    said = []
    for from_cwd in (False, True):
        kind = [note for note in notes if (note.from_file is not None) == from_cwd]
        if not kind:
            continue
        first = kind[0]
        more = f" (and {len(kind) - 1} more entr{'y' if len(kind) == 2 else 'ies'} alike)" if len(kind) > 1 else ""
        if from_cwd:
            said.append(f"{annotation_file}: {first.entry}: source {first.source!r} is not in the file's folder "
                        f"({annotation_file.parent}); reading the current folder's {first.read}{more} (a relative "
                        f"source is read from the file's folder: write it as {first.from_file!r}, or as an absolute "
                        f"path)")
        else:
            said.append(f"{annotation_file}: {first.entry}: source {first.source!r} is read from the file's folder, "
                        f"{first.read}, not the current folder's {first.other}{more} (a relative source is relative "
                        f"to the file's folder)")
    return said


def _video_sources(annotation_file: Path, videos: Any, warnings: list[str]) -> dict[Any, Path]:
    """A COCO file's non-standard ``video_sources`` list (``segment``'s ``coco.json``): video id -> video file."""
    found, notes = {}, []
    for video in videos if isinstance(videos, list) else []:
        if not isinstance(video, dict) or (video.get("video_id") is not None and _reference(video, "video_id") is None):
            continue  # a video_id no image can name (a list...)
        entry = f"video_sources entry of video_id {str(video.get('video_id'))[:40]}"
        if (path := _source_video(annotation_file, recorded_source(video), notes, entry)) is not None:
            found[video.get("video_id")] = path
    warnings.extend(_source_warnings(annotation_file, notes))
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
    source_notes: list[_SourceNote] = []
    records: dict[Any, TrainRecord] = {}
    shared = _shared_ids(videos)
    bad_entries: list[str] = []  # entries skipped for lacking an id, file names or a size: said in no_masks_error
    skipped_videos: set[Any] = set()  # videos skipped with a line naming them: their tracks are not said again
    for video in videos:
        if shared and _entry_id(video) in shared:
            continue
        try:
            video_id = _entry_id(video)
            if video_id is None:  # no id (or one of a list, a null...): no annotation can name it
                raise KeyError("id")
            if not isinstance(video["file_names"], list):
                raise TypeError("file_names is not a list")
            names = [_file_name(name) for name in video["file_names"]]
            height, width = _size(video["height"]), _size(video["width"])
            source_path = _source_video(annotation_file, recorded_source(video), source_notes,
                                        f"video {str(video_id)[:40]}")
        except (KeyError, TypeError, ValueError, OverflowError):
            warnings.append(f"{annotation_file}: skipped video entry without id/file_names/height/width: "
                            f"{str(video)[:80]}")
            bad_entries.append(str(video)[:80])
            continue
        if not names:  # its tracks were blamed: "skipped track with only null segmentations"
            warnings.append(f"{annotation_file}: skipped video {str(video_id)[:40]}: it has no frames (file_names is "
                            "empty)")
            skipped_videos.add(video_id)
            continue
        try:
            indices = video_frame_numbers(names, video.get("frame_indices"), decoded_from_video(source_path))
        except (TypeError, ValueError) as error:
            warnings.append(f"{annotation_file}: skipped video {str(video_id)[:40]}: which source frame each "
                            f"file name is cannot be told ({error})")
            skipped_videos.add(video_id)
            continue
        frames = [
            FrameRecord(_frame_path(frames_root, name), height, width, source_video=source_path, frame_index=index)
            for name, index in zip(names, indices, strict=True)
        ]
        records[video_id] = TrainRecord(str(video.get("name") or video_id), frames)
    warnings.extend(_source_warnings(annotation_file, source_notes))
    entries_said = len(warnings)
    tally = _Tally(annotations=len(annotations), bad_entries=len(bad_entries),
                   first_bad_entry=bad_entries[0] if bad_entries else "")
    tracks: list[tuple[str, list[InstanceAnnotation]]] = []  # each track's instances, frame by frame
    boxes_only: list[str] = []  # tracks without a segmentation on any frame
    orphans: list[str] = []  # tracks whose video_id names no usable video
    for position, raw in enumerate(annotations):
        name = _annotation_name(annotation_file, raw, position)
        before, boxes_before = len(warnings), tally.without_mask
        video_id = _reference(raw, "video_id") if isinstance(raw, dict) else None
        if video_id is not None and video_id in shared:
            tally.shared_id += 1  # said once for all (below)
        elif video_id not in records:
            if video_id not in skipped_videos:  # (a skipped video's line said it)
                orphans.append(name)  # said once for all (below)
            tally.unknown_entry += 1
        elif raw.get("iscrowd", 0) and not crowd_as_instances:
            tally.crowd += 1
        elif not _track_has_mask(raw.get("segmentations")):
            boxes_only.append(name)  # said once for all (below)
            tally.without_mask += 1
        elif not isinstance(raw["segmentations"], list) or len(raw["segmentations"]) != len(
                records[video_id].frames):
            warnings.append(f"{name}: skipped bad annotation (segmentations do not list one entry per frame)")
        elif _category(raw) is None:  # the track's, said once (not once per frame)
            warnings.append(f"{name}: skipped bad annotation (category_id {str(raw.get('category_id'))[:40]!r} is "
                            "not an integer)")
        else:
            track: list[InstanceAnnotation] = []
            for t, (frame, segmentation) in enumerate(zip(records[video_id].frames, raw["segmentations"],
                                                          strict=True)):
                inst = _instance(raw, segmentation, frame.height, frame.width, f"{name} frame {t}", warnings,
                                 crowd="keep")
                if inst is not None:
                    frame.instances.append(inst)
                    track.append(inst)
            tracks.append((name, track))
        if tally.first_problem is None and len(warnings) > before and tally.without_mask == boxes_before:
            tally.first_problem = warnings[-1]
    if shared:
        warnings.insert(entries_said, _shared_ids_note(annotation_file, "video", videos, shared, tally.shared_id))
    warnings += _skipped_note(annotation_file, orphans, "no known video_id (no usable video of the file has it)")
    warnings += _skipped_note(annotation_file, boxes_only, "a track of boxes alone (no segmentations, or only null "
                              "ones: no mask to train on)")
    usable = [r for r in records.values() if r.frames]
    if not usable:
        skipped = next((w for w in warnings if ": skipped video" in w or " video entries sharing " in w),
                       None)  # why, where a video was skipped
        raise TrainDataError(f"{annotation_file}: no video with frames" + (f" ({skipped})" if skipped else ""))
    _drop_corrupt_rles((frame for record in usable for frame in record.frames), warnings)
    # Kept in the records (a frame of a track's empty mask is drawn as the official sampler draws it): counted.
    instances = [inst for record in usable for frame in record.frames for inst in frame.instances]
    no_pixel = {id(inst): empty for inst, empty in zip(instances, empty_masks(instances), strict=True)}
    empty_tracks = [name for name, track in tracks
                    if (kept := [no_pixel[id(inst)] for inst in track if id(inst) in no_pixel]) and all(kept)]
    tally.empty = len(empty_tracks)
    if all(no_pixel.values()):
        tally.first_problem = tally.first_problem or next((w for w in warnings if "RLE" in w), None)
        raise tally.no_masks_error(annotation_file, "video", crowd_hint=crowd_as_instances is not None)
    return usable, warnings + _empty_note(annotation_file, len(empty_tracks), next(iter(empty_tracks), None),
                                          tracks=True) + _crowd_note(annotation_file, tally.crowd,
                                                                     silent=crowd_as_instances is None)


def _track_has_mask(segmentations: Any) -> bool:
    """Whether a YouTube-VIS track gives a segmentation on some frame (a list of only nulls, or none at all, is a
    track of boxes alone)."""
    return segmentations is not None and (not isinstance(segmentations, list) or any(
        s is not None for s in segmentations))


@dataclass
class AnnotationFile:
    """What an annotation file holds: its records, the warnings about it, and whether it is a YouTube-VIS file (a
    top-level ``videos`` key: a video source, docs/training.md "Data and augmentation") rather than COCO instances
    (``images``: an image source, whatever its images came from: `segment`'s ``coco.json`` too)."""

    records: list[TrainRecord]
    warnings: list[str]
    is_video: bool


def read_annotation_file(annotation_file: Path, image_root: Path, filter_empty: bool = True,
                         crowd_as_instances: bool | None = None,
                         shared_categories: dict[str, int] | None = None) -> tuple[list[TrainRecord], list[str]]:
    """The records and warnings of `read_annotations`."""
    read = read_annotations(annotation_file, image_root, filter_empty, crowd_as_instances, shared_categories)
    return read.records, read.warnings


def read_annotations(annotation_file: Path, image_root: Path, filter_empty: bool = True,
                     crowd_as_instances: bool | None = None,
                     shared_categories: dict[str, int] | None = None) -> AnnotationFile:
    """COCO instances or YouTube-VIS, told apart by the top-level keys (``images`` vs ``videos``).

    ``shared_categories``: one category space for several files (custom ``--data``), filled as they are read: each
    instance's category becomes the id ``shared_categories`` gives its category's name (new names get -1, -2, ...:
    apart from any dataset's own ids), so that repeat-factor sampling counts a class by its name, not by ids that
    another file gives another class (a category id missing from the file's categories is its own class)."""
    data = _read_json(annotation_file)
    is_video = "videos" in data
    if is_video:
        records, warnings = read_ytvis(annotation_file, image_root, data=data, crowd_as_instances=crowd_as_instances)
    elif "images" in data:
        records, warnings = read_coco_instances(annotation_file, image_root, filter_empty=filter_empty, data=data,
                                                crowd_as_instances=crowd_as_instances)
    else:
        raise TrainDataError(f"{annotation_file}: neither COCO instances ('images') nor YouTube-VIS ('videos')")
    if shared_categories is not None:
        _into_shared_categories(records, data.get("categories"), annotation_file, shared_categories)
    return AnnotationFile(records, warnings, is_video)


def _into_shared_categories(records: Sequence[TrainRecord], categories: Any, annotation_file: Path,
                            shared: dict[str, int]) -> None:
    names: dict[int, str] = {}
    for category in categories if isinstance(categories, list) else ():
        if isinstance(category, dict) and isinstance(category.get("name"), str) and \
                (number := _category_number(category.get("id"))) is not None:
            names.setdefault(number, " ".join(category["name"].split()).lower())
    for record in records:
        for frame in record.frames:
            for inst in frame.instances:
                key = names.get(inst.category_id, f"{annotation_file}#{inst.category_id}")
                inst.category_id = shared.setdefault(key, -1 - len(shared))


class RecordStore(Sequence[TrainRecord]):
    """Records kept as bytes: each one pickled into one numpy ``uint8`` buffer, found by an ``int64`` offsets array,
    and unpickled (a fresh :class:`TrainRecord`, equal to the one stored) each time it is read.

    A loader worker is a fork of the training process: a list of record objects would be copied into every worker
    page by page as it reads them, because reading a Python object writes its reference count (and the garbage
    collector writes its header), so over an epoch each worker came to hold a private copy of the whole list (LVIS:
    GBs per worker, times the workers, times the GPUs). Reading the buffer writes nothing: the workers share its pages
    with the main process. Polygons stay lists of floats (pickled at 9 bytes a coordinate where the objects took 32).
    """

    def __init__(self, records: Iterable[TrainRecord]) -> None:
        buffer = bytearray()
        ends = [0]
        for record in records:
            buffer += pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
            ends.append(len(buffer))
        self._offsets = np.array(ends, np.int64)
        self._buffer = np.frombuffer(buffer, np.uint8) if buffer else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, index: int) -> TrainRecord:  # type: ignore[override]  # no slices
        count = len(self)
        position = operator.index(index)  # an int or a numpy integer, as a list takes (not 1.9 or a slice)
        if position < 0:
            position += count
        if not 0 <= position < count:
            raise IndexError(f"record {index} of {count}")
        start, end = self._offsets[position], self._offsets[position + 1]
        return pickle.loads(self._buffer[start:end])

    @property
    def nbytes(self) -> int:
        """The memory the records take here: the buffer and the offsets."""
        return self._buffer.nbytes + self._offsets.nbytes


def category_image_counts(records: Iterable[TrainRecord]) -> dict[int, int]:
    """How many records contain each category (for repeat-factor sampling)."""
    counts: dict[int, int] = {}
    for record in records:
        for category in record.category_ids:
            counts[category] = counts.get(category, 0) + 1
    return counts
