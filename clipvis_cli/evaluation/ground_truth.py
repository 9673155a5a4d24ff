"""YouTube-VIS style ground truth (YTVIS 2019/2021, OVIS, LV-VIS, BURST converted with `burst2ytvis.py`).

Only what video AP needs is kept: videos (id, size, frame count), categories (id, name and the split fields
`partition` / `frequency` / `split`) and annotation tracks with one mask per listed frame. GT masks may be
uncompressed RLE (`counts` a list of ints, the usual GT form), compressed RLE (`counts` a string) or polygons (a list
of point lists, rasterised at the video size as `annToRLE` does); every present frame is converted once to a
compressed pycocotools RLE. A falsy frame (null, {}, []) means "object absent in this frame".
"""

from __future__ import annotations

import numbers
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from clipvis.cli.evaluation.errors import EvaluationInputError
from clipvis.cli.evaluation.files import read_json_file, stream_json_file
from clipvis.cli.results import recorded_source
from clipvis.cli.rle import RleDict, compressed_counts_problems


@dataclass(frozen=True)
class GtVideo:
    """One video of the GT file. `num_frames` = len(file_names), else `length`, else None (unknown: scoring counts
    the most segmentations among its tracks and the results of it, `detections.counted_frames`)."""

    id: int
    height: int
    width: int
    num_frames: int | None
    file_names: tuple[str, ...] = ()
    # segment's ytvis.json (a corrected one as ground truth): the video its frames were decoded from, and which
    source: str | None = None
    frame_indices: tuple[int, ...] = ()
    name: str | None = None  # the file's 'name' (segment's ytvis.json: the input's name), None without one


@dataclass(frozen=True)
class GtCategory:
    """One category; `partition` (LV-VIS), `frequency` and `split` (BURST) are None when the file lacks them."""

    id: int
    name: str
    partition: int | None = None
    frequency: str | None = None
    split: str | None = None


@dataclass
class GtTrack:
    """One GT object track.

    `segmentations[t]` is a compressed RLE for frames where the object is present, None where it is absent.
    `areas` is the file's `areas` list as given (the evaluators use it, not the mask areas, for the size bucket);
    None when the file has no `areas` field.
    """

    id: int
    video_id: int
    category_id: int
    iscrowd: bool
    segmentations: list[RleDict | None]
    areas: list[Any] | None


@dataclass
class VideoGroundTruth:
    """A parsed GT file. `videos` and `categories` keep file order; `tracks` too."""

    source: str
    videos: dict[int, GtVideo]
    categories: list[GtCategory]
    tracks: list[GtTrack] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Mistakes in the file the reference evaluators score around (see `gt_warnings`), one line each."""

    @property
    def category_ids(self) -> list[int]:
        """Category ids in ascending order (the evaluators' category axis)."""
        return sorted(category.id for category in self.categories)

    @property
    def vocabulary(self) -> list[str]:
        """Category names in category-id order, verbatim (underscores kept), as the official code uses them."""
        return [category.name for category in sorted(self.categories, key=lambda category: category.id)]


def load_ground_truth(path: Path) -> VideoGroundTruth:
    """Read and parse a YouTube-VIS style GT JSON file (see `parse_ground_truth`), an annotation at a time: each is
    converted to compressed RLE as it is read (where the file lists its videos before its annotations, as YouTube-VIS
    and LV-VIS files do), so the file's uncompressed masks are never all in memory; the same tracks and errors as
    `parse_ground_truth` of the whole file."""
    path = Path(path)
    source = str(path)
    reader = _StreamedTracks(source)
    document = stream_json_file(path, "GT file", {"annotations": reader.add}, arriving=reader.arriving)
    if reader.parser is None:  # its annotations were not parsed as they came: parsed with the document
        if reader.pending is not None:
            document = {**document, "annotations": reader.pending}
        return parse_ground_truth(document, source)
    if not (isinstance(document.get("videos"), list) and isinstance(document.get("categories"), list)):
        return parse_ground_truth(document, source)  # raises what is wrong with them, before any annotation's problem
    videos = _parse_videos(document["videos"], source)  # raises what parse_ground_truth raises, in its order
    categories = _parse_categories(document["categories"], source)
    if reader.parser.videos != videos:  # json.loads would have kept the last of two 'videos'
        raise EvaluationInputError(
            f"GT file {source}: 'videos' given twice in one object; which one is meant is not known"
        )
    gt = VideoGroundTruth(source=source, videos=videos, categories=categories, tracks=reader.parser.finish())
    gt.warnings = gt_warnings(gt)
    return gt


class _StreamedTracks:
    """The annotations of a GT file as `stream_json_file` hands them over: parsed as they come where the file's
    videos were read before them (``parser``), else held whole (``pending``) and parsed with the document."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.parser: _TrackParser | None = None
        self.pending: list[Any] | None = None

    def arriving(self, key: str, members: Mapping[str, Any]) -> None:
        videos = members.get("videos")
        try:
            parsed = _parse_videos(videos, self.source) if isinstance(videos, list) else None
        except EvaluationInputError:
            parsed = None  # raised again from the document, before any annotation's problem
        if parsed is not None and self.parser is None and self.pending is None:
            self.parser = _TrackParser(parsed, self.source, numbered=None)

    def add(self, entry: Any) -> None:
        if self.parser is not None:
            self.parser.add(entry)
        else:
            if self.pending is None:
                self.pending = []
            self.pending.append(entry)


def write_ground_truth_subset(gt_path: Path, video_ids: Iterable[int], destination: Path) -> Path:
    """A copy of the GT file at ``gt_path`` with only the videos ``video_ids`` and their annotations (categories
    and every other key kept), written atomically to ``destination``: what a run over some of the videos is
    scored against (the videos left out would otherwise count their objects as missed)."""
    from clipvis.cli.atomic import atomic_write_json

    data = read_json_file(Path(gt_path), "GT file")
    wanted = set(video_ids)
    subset = dict(data)
    subset["videos"] = [video for video in data.get("videos") or [] if video.get("id") in wanted]
    subset["annotations"] = [entry for entry in data.get("annotations") or [] if entry.get("video_id") in wanted]
    return atomic_write_json(destination, subset)


def parse_ground_truth(data: Any, source: str = "<ground truth>") -> VideoGroundTruth:
    """Parse an in-memory GT dict; errors name `source` and the offending entry."""
    if not isinstance(data, Mapping):
        raise EvaluationInputError(
            f"{source}: expected a YouTube-VIS JSON object with 'videos', 'categories' and 'annotations', "
            f"got a JSON {type(data).__name__}" + (" (is this a results file?)" if isinstance(data, list) else "")
        )
    for key in ("videos", "categories"):
        if not isinstance(data.get(key), list):
            raise EvaluationInputError(f"{source}: missing or invalid '{key}' list (not a YouTube-VIS GT file?)")
    videos = _parse_videos(data["videos"], source)
    categories = _parse_categories(data["categories"], source)
    annotations = data.get("annotations", [])
    if annotations is None:
        annotations = []
    if not isinstance(annotations, list):
        raise EvaluationInputError(f"{source}: 'annotations' must be a list")
    tracks = _parse_tracks(annotations, videos, source)
    gt = VideoGroundTruth(source=source, videos=videos, categories=categories, tracks=tracks)
    gt.warnings = gt_warnings(gt)
    return gt


def _listed(items: Sequence[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (", ..." if len(items) > limit else "")


def gt_warnings(gt: VideoGroundTruth) -> list[str]:
    """One line per kind of mistake in the GT that the reference evaluators take without a word, scoring around
    it (the numbers stay theirs): annotations of a category or video the file does not list (never scored), a
    track with more or fewer masks than its video has frames (frames past the shorter of a result's and the
    track's are ignored: `zip`), a mask of another size than its video (pycocotools merges it with a result's to
    an empty mask: the frame adds nothing where a result is present), a scored track with id 0 (the reference
    stores a match as the GT's id and reads 0 as "not matched": that track is never matched, its object counts as
    missed and a result on it as a false positive; ids are unique, so there is at most one)."""
    category_ids = {category.id for category in gt.categories}
    unknown_category = [t for t in gt.tracks if t.category_id not in category_ids]
    unknown_video = [t for t in gt.tracks if t.video_id not in gt.videos]
    lengths, sizes = [], []
    id_zero = [t for t in gt.tracks if t.id == 0 and t.category_id in category_ids and t.video_id in gt.videos]
    for track in gt.tracks:
        video = gt.videos.get(track.video_id)
        if video is None:
            continue
        if video.num_frames is not None and len(track.segmentations) != video.num_frames:
            lengths.append(f"annotation {track.id}: {len(track.segmentations)} for {video.num_frames}")
        wrong = [(frame, rle["size"]) for frame, rle in enumerate(track.segmentations)
                 if rle is not None and [*rle["size"]] != [video.height, video.width]]
        if wrong:
            (frame, size), = wrong[:1]
            sizes.append(f"annotation {track.id} frame {frame}: {size[0]}x{size[1]} in a {video.height}x{video.width} "
                         "video")
    warnings = []
    if unknown_category:
        ids = sorted({str(t.category_id) for t in unknown_category}, key=int)
        warnings.append(f"{gt.source}: {len(unknown_category)} GT annotation(s) of category ids not in its "
                        f"categories are not scored, as in the reference (category ids: {_listed(ids)})")
    if unknown_video:
        ids = sorted({str(t.video_id) for t in unknown_video}, key=int)
        warnings.append(f"{gt.source}: {len(unknown_video)} GT annotation(s) of video ids not in its videos are not "
                        f"scored, as in the reference (video ids: {_listed(ids)})")
    if lengths:
        warnings.append(f"{gt.source}: {len(lengths)} GT annotation(s) have more or fewer segmentations than their "
                        "video has frames; frames past the shorter of a result and the annotation are ignored, as in "
                        f"the reference ({_listed(lengths)})")
    if sizes:
        warnings.append(f"{gt.source}: {len(sizes)} GT annotation(s) have masks of another size than their video; "
                        "such a frame adds nothing to the IoU where a result is present, as in the reference "
                        f"({_listed(sizes)})")
    for track in id_zero:
        warnings.append(f"{gt.source}: GT annotation id 0 (video {track.video_id}, category {track.category_id}) is "
                        "never counted as matched, as in the reference (it stores a match as the GT's id, 0 meaning "
                        "none): a result on it is a false positive; renumber the annotation ids from 1")
    return warnings


def category_name_key(name: str) -> str:
    """How a category name is matched to another file's (as `segment --vocab` and the predictor compare class
    names): its first synonym (the official comma split, ``"car, automobile"`` -> ``"car"``), case aside, composed
    and decomposed accents alike."""
    return unicodedata.normalize("NFC", name.replace(", ", ",").split(",")[0].strip()).casefold()


def is_absent(frame: Any) -> bool:
    """True for a frame value meaning "object absent": a falsy JSON value (null, {}, [], "", 0, false).

    The reference tests `if segmentation:`; non-JSON objects (e.g. numpy arrays) are not absent and are rejected
    later as invalid masks instead of raising an ambiguous-truth error.
    """
    if frame is None:
        return True
    if isinstance(frame, Mapping | list | tuple | str | bytes | bool | int | float):
        return not frame
    return False


def is_whole_number(value: Any) -> bool:
    """True for a JSON number usable as an id or a size: an integer, or a float holding one (``1.0``, as some
    writers print ids; the reference looks ids up in dicts, where ``1.0`` finds ``1``). Not booleans."""
    if isinstance(value, bool):
        return False
    return isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())


def _parse_videos(entries: Sequence[Any], source: str) -> dict[int, GtVideo]:
    videos: dict[int, GtVideo] = {}
    for index, entry in enumerate(entries):
        where = f"{source}: videos[{index}]"
        if not isinstance(entry, Mapping):
            raise EvaluationInputError(f"{where} is not an object")
        video_id, height, width = entry.get("id"), entry.get("height"), entry.get("width")
        if not is_whole_number(video_id):
            raise EvaluationInputError(f"{where} has no integer 'id'")
        if not (is_whole_number(height) and is_whole_number(width) and height > 0 and width > 0):
            raise EvaluationInputError(f"{where} (id {video_id}) needs positive integer 'height' and 'width'")
        if video_id in videos:
            raise EvaluationInputError(f"{where}: video id {video_id} appears twice")
        file_names = entry.get("file_names")
        length = entry.get("length")
        if isinstance(file_names, list):
            names = tuple(str(name) for name in file_names)
            num_frames: int | None = len(names)
        else:
            names = ()
            num_frames = int(length) if is_whole_number(length) else None
        source_video = recorded_source(entry)  # segment's ytvis.json: source_bytes for a name not valid UTF-8
        indices = entry.get("frame_indices")
        whole = isinstance(indices, list) and all(map(is_whole_number, indices))
        indices = tuple(int(i) for i in indices) if whole else ()
        videos[int(video_id)] = GtVideo(int(video_id), int(height), int(width), num_frames, names, source_video,
                                        indices, _optional_str(entry.get("name")))
    return videos


def _optional_int(value: Any) -> int | None:
    return int(value) if is_whole_number(value) else None


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _parse_categories(entries: Sequence[Any], source: str) -> list[GtCategory]:
    categories: list[GtCategory] = []
    seen: set[int] = set()
    for index, entry in enumerate(entries):
        where = f"{source}: categories[{index}]"
        if not isinstance(entry, Mapping) or not is_whole_number(entry.get("id")):
            raise EvaluationInputError(f"{where} needs an integer 'id'")
        category_id = int(entry["id"])
        if category_id in seen:
            raise EvaluationInputError(f"{where}: category id {category_id} appears twice")
        seen.add(category_id)
        categories.append(
            GtCategory(
                id=category_id,
                name=entry["name"] if isinstance(entry.get("name"), str) else str(category_id),  # shown by its id
                partition=_optional_int(entry.get("partition")),
                frequency=_optional_str(entry.get("frequency")),
                split=_optional_str(entry.get("split")),
            )
        )
    return categories


def check_category_names(data: Any, source: str) -> None:
    """EvaluationInputError naming the first category of a GT document whose ``name`` is not a non-blank string,
    for the runs that take the GT's names as the model's classes (a null name was the class "None", a missing one
    the class "6"; scoring alone goes by ids and does not need them)."""
    entries = data.get("categories") if isinstance(data, Mapping) else None
    for index, entry in enumerate(entries if isinstance(entries, list) else ()):
        if not isinstance(entry, Mapping):
            continue  # parse_ground_truth says what is wrong with it
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise EvaluationInputError(f"{source}: categories[{index}] (id {entry.get('id')!r}) has "
                                       f"{'no name' if name is None else f'the name {name!r}'}: the model's classes "
                                       "are the GT's category names, each a non-blank string")


def _parse_tracks(entries: Sequence[Any], videos: Mapping[int, GtVideo], source: str) -> list[GtTrack]:
    # segment's ytvis.json corrected into a ground truth has no annotation ids: they are only labels, numbered here
    numbered = bool(entries) and all(isinstance(e, Mapping) and "id" not in e for e in entries)
    parser = _TrackParser(videos, source, numbered)
    for entry in entries:
        parser.add(entry)
    return parser.finish()


class _TrackParser:
    """GT annotations parsed one at a time into tracks, each problem raised as `EvaluationInputError`.

    ``numbered``: whether the annotations have no ids and are numbered from 1 (segment's ytvis.json corrected into a
    ground truth), which is known only once all of them are read: None while it is not (an annotation streamed from
    the file). Each annotation without an id is then numbered, and the first problem is kept rather than raised,
    the annotations after it unparsed: `finish` raises it, or the missing id of an earlier annotation where another
    has one."""

    def __init__(self, videos: Mapping[int, GtVideo], source: str, numbered: bool | None) -> None:
        self.videos, self.source, self.numbered = videos, source, numbered
        self.tracks: list[GtTrack] = []
        self.checked: list[tuple[str, list[RleDict | None]]] = []  # each track's masks, their runs checked at the end
        self.seen_ids: set[int] = set()
        self.count = 0
        self.without_id: int | None = None  # the first annotation without an id (numbered = None)
        self.some_id = False  # an annotation that has an id, or is not an object (numbered = None)
        self.problem: tuple[int, EvaluationInputError] | None = None

    def add(self, entry: Any) -> None:
        index = self.count
        self.count += 1
        if self.numbered is not None:
            self._add(index, entry, self.numbered)
            return
        unnumbered = isinstance(entry, Mapping) and "id" not in entry
        if unnumbered and self.without_id is None:
            self.without_id = index
        self.some_id |= not unnumbered
        if self.problem is None:
            try:
                self._add(index, entry, unnumbered)
            except EvaluationInputError as error:
                self.problem = (index, error)

    def finish(self) -> list[GtTrack]:
        problems = []
        if self.some_id and self.without_id is not None:  # not numbered after all: that annotation has no id
            problems.append((self.without_id, EvaluationInputError(
                f"{self.source}: annotations[{self.without_id}] needs integer 'id', 'video_id' and 'category_id'")))
        if self.problem is not None:
            problems.append(self.problem)
        if problems:
            raise min(problems, key=lambda problem: problem[0])[1]
        check_runs(self.checked)
        return self.tracks

    def _add(self, index: int, entry: Any, numbered: bool) -> None:
        source = self.source
        where = f"{source}: annotations[{index}]"
        if not isinstance(entry, Mapping):
            raise EvaluationInputError(f"{where} is not an object")
        track_id, video_id, category_id = entry.get("id"), entry.get("video_id"), entry.get("category_id")
        if numbered:
            track_id = index + 1
        if not (is_whole_number(track_id) and is_whole_number(video_id) and is_whole_number(category_id)):
            raise EvaluationInputError(f"{where} needs integer 'id', 'video_id' and 'category_id'")
        where = f"{where} (id {track_id}, video_id {video_id})"
        if track_id in self.seen_ids:
            # The reference API keys annotations by id, so a repeated id silently evaluates the wrong track.
            raise EvaluationInputError(f"{where}: annotation id {track_id} appears twice")
        self.seen_ids.add(int(track_id))
        segmentations = entry.get("segmentations")
        if not isinstance(segmentations, list):
            raise EvaluationInputError(f"{where} has no 'segmentations' list")
        areas = entry.get("areas")
        if areas is not None:
            if not isinstance(areas, list):
                raise EvaluationInputError(f"{where}: 'areas' must be a list")
            for frame, area in enumerate(areas):
                if area is not None and not isinstance(area, numbers.Real):
                    raise EvaluationInputError(f"{where}: areas[{frame}] is not a number or null")
        video = self.videos.get(int(video_id))
        # Annotations of videos missing from 'videos' are never evaluated (as in the reference): skip converting them.
        rles = _convert_segmentations(segmentations, video, where) if video is not None else []
        self.checked.append((where, rles))
        self.tracks.append(
            GtTrack(
                id=int(track_id),
                video_id=int(video_id),
                category_id=int(category_id),
                iscrowd=bool(entry.get("iscrowd", 0)),
                segmentations=rles,
                areas=list(areas) if areas is not None else None,
            )
        )


def _convert_segmentations(frames: Sequence[Any], video: GtVideo, where: str) -> list[RleDict | None]:
    """Compressed RLE for every present frame; uncompressed RLEs are converted in one pycocotools call."""
    out: list[RleDict | None] = [None] * len(frames)
    uncompressed_index: list[int] = []
    uncompressed: list[RleDict] = []
    for frame, segmentation in enumerate(frames):
        if is_absent(segmentation):
            continue
        if isinstance(segmentation, Mapping):
            size, counts = segmentation.get("size"), segmentation.get("counts")
            if not (isinstance(size, list | tuple) and len(size) == 2 and all(is_whole_number(v) for v in size)):
                raise EvaluationInputError(f"{where}: segmentations[{frame}] has no valid 'size' [height, width]")
            if isinstance(counts, list):
                uncompressed_index.append(frame)
                uncompressed.append({"size": [int(size[0]), int(size[1])], "counts": counts})
            elif isinstance(counts, str | bytes):
                out[frame] = {"size": [int(size[0]), int(size[1])], "counts": counts}
            else:
                raise EvaluationInputError(f"{where}: segmentations[{frame}] has no RLE 'counts'")
        elif isinstance(segmentation, list):
            try:
                parts = mask_utils.frPyObjects(segmentation, video.height, video.width)
                out[frame] = mask_utils.merge(parts)
            except Exception as error:  # pycocotools raises bare Exceptions for malformed polygons
                raise EvaluationInputError(f"{where}: segmentations[{frame}] is not a valid polygon list") from error
        else:
            raise EvaluationInputError(f"{where}: segmentations[{frame}] must be an RLE object, a polygon list or null")
    if uncompressed:
        try:
            converted = mask_utils.frPyObjects(uncompressed, video.height, video.width)
        except Exception as error:
            raise EvaluationInputError(f"{where}: an uncompressed RLE has invalid counts ({error})") from error
        for frame, rle in zip(uncompressed_index, converted, strict=True):
            out[frame] = rle
    return out


def check_runs(tracks: Iterable[tuple[str, Sequence[RleDict | None]]]) -> None:
    """EvaluationInputError naming the first mask, of ``(where, segmentations)`` pairs, whose run lengths do not add
    up to its height x width: corrupt counts decode to any number of pixels (4e9 on a 64x64 frame), and runs that
    fall short or run past the mask (a 40x64 mask labelled 48x64) made pycocotools' IoU loop forever, deaf to Ctrl-C.
    Checked many masks at a time (``RUN_CHECK_MASKS``): one call per track took a results file's validation from 3 to
    12 s at LV-VIS val's size. A batch also ends at ``RUN_CHECK_CHARACTERS`` characters of counts: the check holds a
    few 8-byte numbers per character, and 65,536 masks of a detailed 720p mask (3.6 KB of counts each) took 4 GB. A
    batch ends at either limit within a track too, so one long track (a long video's) holds no more."""
    batch: list[tuple[str, int, RleDict]] = []
    characters = 0
    for where, segmentations in tracks:
        for frame, rle in enumerate(segmentations):
            if rle is None:
                continue
            batch.append((where, frame, rle))
            counts = rle.get("counts") if isinstance(rle, dict) else None
            characters += len(counts) if isinstance(counts, str | bytes) else 0
            if len(batch) >= RUN_CHECK_MASKS or characters >= RUN_CHECK_CHARACTERS:
                _check_runs_of(batch)
                batch, characters = [], 0
    _check_runs_of(batch)


RUN_CHECK_MASKS = 1 << 16  # masks whose runs are checked at most at once (fewer where their counts are long)
# characters of counts checked at once (~30 B of arrays each: ~30 MB, plus the one mask that passes the limit; at
# 1 << 22, 120 MB, most of a streamed scoring's peak, for no measurable gain in time)
RUN_CHECK_CHARACTERS = 1 << 20


def _check_runs_of(masks: Sequence[tuple[str, int, RleDict]]) -> None:
    problems = compressed_counts_problems([rle["counts"] for _, _, rle in masks],
                                          [int(rle["size"][0]) * int(rle["size"][1]) for _, _, rle in masks])
    for (where, frame, rle), problem in zip(masks, problems, strict=True):
        if problem is not None:
            height, width = rle["size"]
            raise EvaluationInputError(f"{where}: segmentations[{frame}] has {problem} on its {height}x{width} mask")
