"""Results files (what `clipvis segment` and the official code write): parsing and validation.

A results file is a JSON list of `{video_id, category_id, score, segmentations}` with one entry per listed frame of
the video in `segmentations`: a compressed RLE `{"size": [h, w], "counts": "<str>"}` or null (absent). As in the
reference loader, a detection's `id` is its 1-based position in the file and `iscrowd` is 0.

Validation is stricter than the reference where the reference would crash or silently mis-score: every problem
raises `EvaluationInputError` naming the entry (index and video_id). Detections whose category is not in the GT
are dropped with a warning, as the reference drops them silently.

Segment's `ytvis.json` (an object whose `annotations` are the results) also says what its ids mean: its categories
are matched to the GT's by name (`category_name_key`: first synonym, case and accent forms aside; a name not in the
GT drops its results with a warning) and its videos by their `file_names`, else by `name` (the GT video's name or
frames folder); a video that matches no GT video, or several, is an error. A bare results list is taken by id.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from clipvis.cli.evaluation.errors import EvaluationInputError
from clipvis.cli.evaluation.files import read_json_file
from clipvis.cli.evaluation.ground_truth import (
    GtVideo,
    VideoGroundTruth,
    category_name_key,
    check_runs,
    is_absent,
    is_whole_number,
)
from clipvis.cli.rle import RleDict, coco_areas


@dataclass
class Detection:
    """One predicted track. `id` is the 1-based position in the results list."""

    id: int
    video_id: int
    category_id: int
    score: float
    segmentations: list[RleDict | None]
    areas: np.ndarray | None = field(default=None, repr=False, compare=False)
    """[T] float64 pixels of each frame's mask (0 where absent), as the masks' checks found them; None: not known."""


@dataclass
class DetectionSet:
    """The detections kept for scoring plus what was dropped."""

    detections: list[Detection]
    num_results: int
    dropped_categories: dict[int, int] = field(default_factory=dict)
    """Category id (not in the GT) -> number of results dropped for it."""
    dropped_names: dict[str, int] = field(default_factory=dict)
    """Category name of a ytvis.json (not in the GT) -> number of results dropped for it."""
    matched_by_id: str | None = None
    """Why a ytvis.json naming its videos had them taken by id (a GT naming none), else None."""
    short_gt_tracks: str | None = None
    """The warning for GT tracks shorter than their video's frame count where only the annotations and the results
    give that count (`counted_frames`), else None."""

    @property
    def warnings(self) -> list[str]:
        warnings = [line for line in (self.matched_by_id, self.short_gt_tracks) if line]
        if self.dropped_categories:
            count = sum(self.dropped_categories.values())
            ids = sorted(self.dropped_categories)
            shown = ", ".join(str(i) for i in ids[:8]) + (", ..." if len(ids) > 8 else "")
            warnings.append(f"{count} result(s) with category ids not in the GT were dropped (category ids: {shown})")
        if self.dropped_names:
            count = sum(self.dropped_names.values())
            names = list(self.dropped_names)
            shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            warnings.append(f"{count} result(s) of categories whose names are not in the GT were dropped "
                            f"(categories: {shown})")
        return warnings


def load_results(path: Path, gt: VideoGroundTruth) -> DetectionSet:
    """Read a results JSON file and validate it against `gt` (see `parse_results`)."""
    path = Path(path)
    return parse_results(read_json_file(path, "results file"), gt, source=str(path))


def parse_results(results: Any, gt: VideoGroundTruth, source: str = "<results>") -> DetectionSet:
    """Validate an in-memory results list against `gt` and return the detections to score."""
    if isinstance(results, Mapping):
        annotations = results.get("annotations")
        scored = isinstance(annotations, list) and annotations and all(
            isinstance(a, Mapping) and "score" in a for a in annotations)
        if not scored:  # a GT file (no scores), or some other object
            hint = " (this looks like a GT file)" if "annotations" in results else ""
            raise EvaluationInputError(f"{source}: expected a JSON list of results, got a JSON object{hint}")
        # segment's ytvis.json: its annotations are the results list, its categories and videos say what the ids mean
        category_map = gt_category_map(results.get("categories"), gt, source)
        video_map, matched_by_id = gt_video_map(results.get("videos"), gt, source)
        results = annotations
    else:
        category_map, video_map, matched_by_id = None, None, None
    if not isinstance(results, list):
        raise EvaluationInputError(f"{source}: expected a JSON list of results, got {type(results).__name__}")
    if not results:
        raise EvaluationInputError(f"{source}: the results list is empty (nothing to score)")
    known_categories = {category.id for category in gt.categories}
    entries: list[tuple[Any, str | None]] = []  # each entry with its ids as the GT's; the name of a dropped category
    for entry in results:
        name = None  # a ytvis.json category not in the GT
        if isinstance(entry, Mapping) and (category_map or video_map):
            entry, name = _mapped_entry(entry, category_map or {}, video_map or {})
        entries.append((entry, name))
    frame_counts = counted_frames(gt, [entry for entry, name in entries if name is None], known_categories)
    detections: list[Detection] = []
    dropped: Counter[int] = Counter()
    dropped_names: Counter[str] = Counter()
    for index, (entry, name) in enumerate(entries):
        detection = _parse_entry(index, entry, gt, known_categories if name is None else set(), frame_counts, source)
        if detection is None and name is not None:
            dropped_names[name] += 1
        elif detection is None:
            dropped[int(entry["category_id"])] += 1
        else:
            detections.append(detection)
    # The masks pycocotools will compare with a GT mask (a GT track of their video and category): their run lengths
    # must add up to the mask (its IoU loops forever where they do not); the others only give an area (above).
    compared = {(track.video_id, track.category_id) for track in gt.tracks}
    check_runs((f"{source}: entry {d.id - 1} (video_id {d.video_id})", d.segmentations) for d in detections
               if (d.video_id, d.category_id) in compared)
    return DetectionSet(detections=detections, num_results=len(results), dropped_categories=dict(dropped),
                        dropped_names=dict(dropped_names), matched_by_id=matched_by_id,
                        short_gt_tracks=_short_gt_tracks(gt, frame_counts))


def _mapped_entry(
    entry: Mapping[str, Any], categories: Mapping[int, tuple[str, int | None]], videos: Mapping[int, int]
) -> tuple[Mapping[str, Any], str | None]:
    """``entry`` with its ytvis.json category and video ids as the GT's; and the category's name when it is not in
    the GT (the entry is dropped)."""
    changed = dict(entry)
    category_id, video_id = entry.get("category_id"), entry.get("video_id")
    if is_whole_number(video_id) and int(video_id) in videos:
        changed["video_id"] = videos[int(video_id)]
    if is_whole_number(category_id) and int(category_id) in categories:
        name, gt_id = categories[int(category_id)]
        if gt_id is None:
            return changed, name
        changed["category_id"] = gt_id
    return changed, None


def gt_category_map(categories: Any, gt: VideoGroundTruth, source: str) -> dict[int, tuple[str, int | None]]:
    """A ytvis.json's category id -> (its name, the GT category id of that name or None); {} without categories."""
    if not isinstance(categories, list):
        return {}
    by_key: dict[str, list[int]] = {}
    for category in gt.categories:
        by_key.setdefault(category_name_key(category.name), []).append(category.id)
    mapping: dict[int, tuple[str, int | None]] = {}
    for index, entry in enumerate(categories):
        if not (isinstance(entry, Mapping) and is_whole_number(entry.get("id")) and isinstance(entry.get("name"), str)):
            raise EvaluationInputError(f"{source}: categories[{index}] needs an integer 'id' and a 'name'")
        name = entry["name"]
        ids = by_key.get(category_name_key(name), [])
        if len(ids) > 1:
            raise EvaluationInputError(f"{source}: category {name!r} matches several categories of the GT file "
                                       f"{gt.source} (ids {', '.join(map(str, ids))}); its results cannot be scored")
        mapping[int(entry["id"])] = (name, ids[0] if ids else None)
    return mapping


def _frames_key(file_names: Sequence[Any]) -> tuple[str, ...]:
    return tuple(str(name).replace("\\", "/") for name in file_names)


def _folder_of(file_names: Sequence[Any]) -> str | None:
    """The frames folder of a video (``vid/00000.jpg`` -> ``vid``), None when its frames are not in one."""
    parts = _frames_key(file_names[:1])[0].rsplit("/", 1) if file_names else []
    return parts[0] if len(parts) == 2 and parts[0] else None


def gt_video_map(videos: Any, gt: VideoGroundTruth, source: str) -> tuple[dict[int, int], str | None]:
    """A ytvis.json's video id -> the GT video of the same file_names (else of its name or frames folder); a video
    named neither way, or a GT naming none, keeps the ids. EvaluationInputError when one matches no GT video, or
    several. Second: the warning when the ytvis.json names its videos but the GT names none (taken by id), else
    None."""
    if not isinstance(videos, list):
        return {}, None
    by_frames: dict[tuple[str, ...], list[int]] = {}
    by_name: dict[str, set[int]] = {}
    for video in gt.videos.values():
        if video.file_names:
            by_frames.setdefault(_frames_key(video.file_names), []).append(video.id)
        for name in (video.name, _folder_of(video.file_names)):
            if name:
                by_name.setdefault(name, set()).add(video.id)
    if not by_frames and not by_name:  # a GT naming its videos no way: ids are all there is to go by
        named = any(isinstance(v, Mapping) and (v.get("name") or v.get("file_names")) for v in videos)
        return {}, (f"{source}: the GT names no videos (no name or file_names in {gt.source}): matched by video id"
                    if named else None)
    mapping: dict[int, int] = {}
    taken: dict[int, int] = {}
    for index, entry in enumerate(videos):
        if not isinstance(entry, Mapping) or not is_whole_number(entry.get("id")):
            raise EvaluationInputError(f"{source}: videos[{index}] needs an integer 'id'")
        file_names = entry.get("file_names") if isinstance(entry.get("file_names"), list) else []
        names = {n for n in (entry.get("name"), _folder_of(file_names)) if isinstance(n, str) and n}
        if not file_names and not names:
            continue  # nothing but an id: taken as the GT's
        ids = by_frames.get(_frames_key(file_names), []) if file_names else []
        if len(ids) != 1:
            ids = sorted({i for name in names for i in by_name.get(name, ())})
        named = f", {entry['name']!r}" if isinstance(entry.get("name"), str) else ""
        label = f"videos[{index}] (id {entry['id']}{named})"
        if not ids:
            raise EvaluationInputError(f"{source}: {label} is not in the GT file {gt.source} (no GT video has its "
                                       "file_names, name or frames folder)")
        if len(ids) > 1:
            raise EvaluationInputError(f"{source}: {label} matches several videos of the GT file {gt.source} (ids "
                                       f"{', '.join(map(str, ids))})")
        if ids[0] in taken:
            raise EvaluationInputError(f"{source}: {label} and videos[{taken[ids[0]]}] are both video {ids[0]} of the "
                                       f"GT file {gt.source}")
        taken[ids[0]] = index
        mapping[int(entry["id"])] = ids[0]
    return mapping, None


def counted_frames(gt: VideoGroundTruth, entries: Sequence[Any], known_categories: set[int]) -> dict[int, int]:
    """The frame count of each GT video that gives neither ``file_names`` nor ``length``, as its annotations and the
    results say it: the most segmentations among its GT tracks and the results ``entries`` of it that are scored (of a
    category of the GT). Entries that are not well formed count nothing (they are refused on their own)."""
    uncounted = {video.id for video in gt.videos.values() if video.num_frames is None}
    counts: dict[int, int] = {}
    for track in gt.tracks:
        if track.video_id in uncounted:
            counts[track.video_id] = max(counts.get(track.video_id, 0), len(track.segmentations))
    for entry in entries:
        _count_frames(counts, entry, uncounted, known_categories)
    return counts


def _count_frames(counts: dict[int, int], entry: Any, uncounted: set[int], known_categories: set[int]) -> None:
    """Count a results entry's segmentations in ``counts`` (`counted_frames`) where it is of a video in ``uncounted``
    and a category in ``known_categories``, and well formed."""
    if not isinstance(entry, Mapping):
        return
    video_id, category_id, segmentations = entry.get("video_id"), entry.get("category_id"), entry.get("segmentations")
    if is_whole_number(video_id) and int(video_id) in uncounted and is_whole_number(category_id) and \
            int(category_id) in known_categories and isinstance(segmentations, list):
        counts[int(video_id)] = max(counts.get(int(video_id), 0), len(segmentations))


def _short_gt_tracks(gt: VideoGroundTruth, counts: Mapping[int, int]) -> str | None:
    """The warning for GT tracks of videos counted by `counted_frames` that have fewer segmentations than that count
    (the reference ignores the frames past the shorter of a result and the track), else None."""
    short = [f"annotation {track.id}: {len(track.segmentations)} for {counts[track.video_id]}" for track in gt.tracks
             if track.video_id in counts and len(track.segmentations) < counts[track.video_id]]
    if not short:
        return None
    listed = ", ".join(short[:3]) + (", ..." if len(short) > 3 else "")
    return (f"{gt.source}: {len(short)} GT annotation(s) of videos without length or file_names have fewer "
            "segmentations than the longest annotation or result of their video; frames past the shorter of a result "
            f"and the annotation are ignored, as in the reference ({listed})")


def _parse_entry(
    index: int,
    entry: Any,
    gt: VideoGroundTruth,
    known_categories: set[int],
    frame_counts: Mapping[int, int],
    source: str,
) -> Detection | None:
    head = _entry_head(index, entry, gt, known_categories, source)
    if head is None:
        return None
    where, video, category_id, score, segmentations = head
    mismatch = frame_count_mismatch(len(segmentations), video, frame_counts.get(video.id))
    if mismatch is not None:
        raise EvaluationInputError(f"{where}: {mismatch}")
    return _detection(index, head)


_EntryHead = tuple[str, GtVideo, int, float, list[Any]]  # where, its video, category id, score, segmentations


def _entry_head(
    index: int, entry: Any, gt: VideoGroundTruth, known_categories: set[int], source: str
) -> _EntryHead | None:
    """A results entry's checks before its number of frames: its ids, score and segmentations list (None: a category
    not in ``known_categories``, dropped)."""
    where = f"{source}: entry {index}"
    if not isinstance(entry, Mapping):
        raise EvaluationInputError(f"{where} is not an object")
    missing = [key for key in ("video_id", "category_id", "score") if key not in entry]
    if missing:  # said as missing, not as "got None"
        raise EvaluationInputError(f"{where} has no {' or '.join(repr(key) for key in missing)} (a results entry holds "
                                   "video_id, category_id, score and segmentations)")
    video_id = entry.get("video_id")
    if not is_whole_number(video_id):
        raise EvaluationInputError(f"{where}: 'video_id' must be an integer, got {video_id!r}")
    where = f"{where} (video_id {video_id})"
    video = gt.videos.get(int(video_id))
    if video is None:
        raise EvaluationInputError(f"{where}: video_id {video_id} is not in the GT file {gt.source}")
    category_id = entry.get("category_id")
    if not is_whole_number(category_id):
        raise EvaluationInputError(f"{where}: 'category_id' must be an integer, got {category_id!r}")
    score = entry.get("score")
    if not isinstance(score, numbers.Real) or isinstance(score, bool) or not math.isfinite(score):
        raise EvaluationInputError(f"{where}: 'score' must be a finite number, got {score!r}")
    if "segmentations" not in entry:
        raise EvaluationInputError(f"{where} has no 'segmentations' (box-only results cannot be scored with mask AP)")
    if int(category_id) not in known_categories:
        return None
    segmentations = entry["segmentations"]
    if not isinstance(segmentations, list):
        raise EvaluationInputError(f"{where}: 'segmentations' must be a list with one mask or null per frame")
    return where, video, int(category_id), float(score), segmentations


def _detection(index: int, head: _EntryHead) -> Detection:
    """The detection of an entry whose head passed (`_entry_head`), its masks checked."""
    where, video, category_id, score, segmentations = head
    masks, areas = _check_masks(segmentations, video, where)
    return Detection(
        id=index + 1,
        video_id=video.id,
        category_id=category_id,
        score=score,
        segmentations=masks,
        areas=areas,
    )


def frame_count_mismatch(segmentations: int, video: GtVideo, counted: int | None) -> str | None:
    """Why ``segmentations`` masks per result cannot be scored against the GT ``video`` ("2 segmentations but the
    video has 3 frames (...)"), else None. ``counted``: its frame count as `counted_frames` gives it, where the GT
    gives it no length or file_names (None: unknown, anything goes)."""
    expected = video.num_frames if video.num_frames is not None else counted
    if expected is None or segmentations == expected:
        return None
    stride = -(-expected // segmentations) if 0 < segmentations < expected else 0
    strided = stride > 1 and -(-expected // stride) == segmentations  # as many as every stride-th frame
    notes = [] if video.num_frames is not None else [
        "the most segmentations of its GT annotations and results: the GT gives it no length or file_names"]
    if strided:
        notes.append(f"results of one frame in {stride}, as `segment --stride {stride}` writes? the GT needs a "
                     "mask or null for every frame it lists: segment without --stride")
    said = f" ({'; '.join(notes)})" if notes else ""
    return f"{segmentations} segmentations but the video has {expected} frames{said}"


def mask_size_mismatch(size: Any, video: GtVideo) -> str | None:
    """Why a mask of ``size`` ([height, width]) cannot be scored against the GT ``video`` ("mask size [48, 64] but
    video 7 is 96x128 (height x width)"), else None."""
    if isinstance(size, list | tuple) and [*size] == [video.height, video.width]:
        return None
    return f"mask size {size!r} but video {video.id} is {video.height}x{video.width} (height x width)"


def _check_masks(frames: Sequence[Any], video: GtVideo, where: str) -> tuple[list[RleDict | None], np.ndarray]:
    """The masks of a results entry as compressed RLEs (None where absent) and their areas [T] (0 where absent)."""
    out: list[RleDict | None] = [None] * len(frames)
    frame_areas = np.zeros(len(frames), dtype=np.float64)
    expected_size = [video.height, video.width]
    uncompressed: list[tuple[int, RleDict]] = []
    for frame, rle in enumerate(frames):
        if is_absent(rle):
            continue
        if not isinstance(rle, Mapping) or "counts" not in rle or "size" not in rle:
            raise EvaluationInputError(
                f"{where}: segmentations[{frame}] must be an RLE object {{size, counts}} or null"
            )
        size_mismatch = mask_size_mismatch(rle["size"], video)
        if size_mismatch is not None:
            raise EvaluationInputError(f"{where}: segmentations[{frame}] has {size_mismatch}")
        counts = rle["counts"]
        if isinstance(counts, str | bytes) and not counts:
            raise EvaluationInputError(f"{where}: segmentations[{frame}] has empty RLE 'counts'")
        if isinstance(counts, str | bytes):
            out[frame] = rle if isinstance(rle, dict) else dict(rle)
        elif isinstance(counts, list):
            uncompressed.append((frame, {"size": expected_size, "counts": counts}))
        else:
            raise EvaluationInputError(f"{where}: segmentations[{frame}] has invalid RLE 'counts'")
    if uncompressed:
        try:
            converted = mask_utils.frPyObjects([rle for _, rle in uncompressed], video.height, video.width)
        except Exception as error:
            raise EvaluationInputError(f"{where}: an uncompressed RLE has invalid counts ({error})") from error
        for (frame, _), rle in zip(uncompressed, converted, strict=True):
            out[frame] = rle
    present = [(frame, rle) for frame, rle in enumerate(out) if rle is not None]
    if present:  # corrupt counts decode to any number of pixels (4e9 on a 64x64 frame): caught by their area
        areas = coco_areas([{"size": rle["size"], "counts": rle["counts"]} for _, rle in present])
        pixels = video.height * video.width
        for (frame, _), area in zip(present, areas, strict=True):
            if not 0 <= int(area) <= pixels:
                raise EvaluationInputError(f"{where}: segmentations[{frame}] has corrupt RLE 'counts' ({int(area)} "
                                           f"pixels on a {video.height}x{video.width} frame)")
        frame_areas[[frame for frame, _ in present]] = areas
    return out, frame_areas



STREAM_BATCH_MASKS = 1 << 13  # masks of a results file held at most at once by `ResultsStream` (fewer where long)
STREAM_BATCH_CHARACTERS = 1 << 22  # characters of counts held at most at once (plus the entry that passes it)


class ResultsStream:
    """A results file's entries validated as `parse_results` validates them, as they are read (`entry`, in file
    order), the detections given to ``scored`` a batch at a time (their runs checked: `check_runs`) and then dropped,
    so memory holds one batch of masks (``STREAM_BATCH_MASKS``, ``STREAM_BATCH_CHARACTERS``), not the file's.

    The problems are raised by `finish` in `parse_results`' order, which looks at every entry before it: an object
    that is not a results file, its categories' and videos' (`arriving`), an empty list, the first entry's problem
    in file order (the frame counts of GT videos without ``length`` or ``file_names`` known once the last entry is
    read, `counted_frames`), then the first mask of bad runs. Once an entry has a problem, later entries are only
    counted."""

    def __init__(self, gt: VideoGroundTruth, source: str, scored: Callable[[list[Detection]], None]) -> None:
        self.gt, self.source, self.scored = gt, source, scored
        self.known_categories = {category.id for category in gt.categories}
        self.compared = {(track.video_id, track.category_id) for track in gt.tracks}
        self.uncounted = {video.id for video in gt.videos.values() if video.num_frames is None}
        self.frame_counts = counted_frames(gt, [], self.known_categories)  # grows with the entries of uncounted videos
        # entries of uncounted videos (index, where, video, segmentations): their frame counts checked at the end
        self.unchecked_counts: list[tuple[int, str, GtVideo, int]] = []
        self.count = 0
        self.kept = 0
        self.dropped: Counter[int] = Counter()
        self.dropped_names: Counter[str] = Counter()
        self.category_map: dict[int, tuple[str, int | None]] = {}
        self.video_map: dict[int, int] = {}
        self.matched_by_id: str | None = None
        self.in_object = False
        self.pending: list[Any] | None = None  # a ytvis.json's annotations read before its categories and videos
        self.maps_read_from: dict[str, Any] = {}
        self.all_scored = True  # every annotation of an object an object with a score
        self.object_problem: EvaluationInputError | None = None
        self.problem: tuple[int, EvaluationInputError] | None = None
        self.runs_problem: EvaluationInputError | None = None
        self.batch: list[Detection] = []
        self.batch_masks = 0
        self.batch_characters = 0

    def arriving(self, members: Mapping[str, Any]) -> None:
        """The annotations of a ytvis.json begin, ``members`` read before them: its categories and videos say what
        its ids mean (`gt_category_map`, `gt_video_map`)."""
        self.in_object = True
        if "categories" in members and "videos" in members:  # as segment writes them
            self._read_maps(members)
        else:  # they may come after the annotations: those are held until they are read
            self.pending = []

    def _read_maps(self, members: Mapping[str, Any]) -> None:
        self.maps_read_from = {key: members.get(key) for key in ("categories", "videos")}
        try:
            self.category_map = gt_category_map(members.get("categories"), self.gt, self.source)
            self.video_map, self.matched_by_id = gt_video_map(members.get("videos"), self.gt, self.source)
        except EvaluationInputError as error:
            self.object_problem = error

    def entry(self, entry: Any) -> None:
        if self.pending is not None:
            self.pending.append(entry)
            return
        index = self.count
        self.count += 1
        if self.in_object:
            self.all_scored &= isinstance(entry, Mapping) and "score" in entry
        name = None  # a ytvis.json category not in the GT
        if isinstance(entry, Mapping) and (self.category_map or self.video_map):
            entry, name = _mapped_entry(entry, self.category_map, self.video_map)
        if name is None and self.uncounted:
            _count_frames(self.frame_counts, entry, self.uncounted, self.known_categories)
        if self.problem is not None or self.object_problem is not None:
            return
        try:
            head = _entry_head(index, entry, self.gt, self.known_categories if name is None else set(), self.source)
            if head is None:
                if name is not None:
                    self.dropped_names[name] += 1
                else:
                    self.dropped[int(entry["category_id"])] += 1
                return
            video = head[1]
            if video.id in self.uncounted:
                self.unchecked_counts.append((index, head[0], video, len(head[4])))
            else:
                mismatch = frame_count_mismatch(len(head[4]), video, None)
                if mismatch is not None:
                    raise EvaluationInputError(f"{head[0]}: {mismatch}")
            detection = _detection(index, head)
        except EvaluationInputError as error:
            self.problem = (index, error)
            self.batch.clear()
            return
        self.kept += 1
        if self.runs_problem is not None:
            return
        self.batch.append(detection)
        for rle in detection.segmentations:
            if rle is not None:
                self.batch_masks += 1
                counts = rle["counts"]
                self.batch_characters += len(counts) if isinstance(counts, str | bytes) else 0
        if self.batch_masks >= STREAM_BATCH_MASKS or self.batch_characters >= STREAM_BATCH_CHARACTERS:
            self._score_batch()

    def _score_batch(self) -> None:
        batch, self.batch, self.batch_masks, self.batch_characters = self.batch, [], 0, 0
        try:
            check_runs((f"{self.source}: entry {d.id - 1} (video_id {d.video_id})", d.segmentations) for d in batch
                       if (d.video_id, d.category_id) in self.compared)
        except EvaluationInputError as error:
            self.runs_problem = error
            return
        self.scored(batch)

    def finish(self, document: Any) -> DetectionSet:
        """Raise the problem `parse_results` raises first, if any; else score the last batch and return what was
        dropped (the detections are given to ``scored``: its list is empty). ``document``: the file as read, its
        streamed arrays empty (`stream_json_file`)."""
        source = self.source
        if self.pending is not None:  # a ytvis.json listing its categories or videos after its annotations
            entries, self.pending = self.pending, None
            self._read_maps(document)
            for entry in entries:
                self.entry(entry)
        elif self.in_object and any(document.get(key) is not self.maps_read_from.get(key)
                                    for key in ("categories", "videos")):
            raise EvaluationInputError(f"{source}: 'categories' or 'videos' given twice in one object; which one is "
                                       "meant is not known")
        if isinstance(document, Mapping):
            if not (self.in_object and self.count and self.all_scored):  # a GT file (no scores), or another object
                hint = " (this looks like a GT file)" if "annotations" in document else ""
                raise EvaluationInputError(f"{source}: expected a JSON list of results, got a JSON object{hint}")
            if self.object_problem is not None:
                raise self.object_problem
        elif not isinstance(document, list):
            raise EvaluationInputError(f"{source}: expected a JSON list of results, got {type(document).__name__}")
        if not self.count:
            raise EvaluationInputError(f"{source}: the results list is empty (nothing to score)")
        problems: list[tuple[int, EvaluationInputError]] = []
        for index, where, video, segmentations in self.unchecked_counts:
            if self.problem is not None and index > self.problem[0]:
                break
            mismatch = frame_count_mismatch(segmentations, video, self.frame_counts.get(video.id))
            if mismatch is not None:  # before the masks' problems of its entry
                problems.append((index, EvaluationInputError(f"{where}: {mismatch}")))
                break
        if self.problem is not None:
            problems.append(self.problem)
        if problems:
            raise min(problems, key=lambda problem: problem[0])[1]
        if self.runs_problem is None and self.batch:
            self._score_batch()
        if self.runs_problem is not None:
            raise self.runs_problem
        return DetectionSet(detections=[], num_results=self.count, dropped_categories=dict(self.dropped),
                            dropped_names=dict(self.dropped_names), matched_by_id=self.matched_by_id,
                            short_gt_tracks=_short_gt_tracks(self.gt, self.frame_counts))
