"""Inference over a benchmark dataset in the official evaluator's mode, resumable, writing `results.json`.

Per-video results are cached under `OUTPUT/per_video/<video_id>.json` (atomic writes), keyed by the weights,
vocabulary and options in `OUTPUT/per_video/cache.json` and, per video, by its frames (paths, sizes, modification
times) and the category ids (`video_key`), so an interrupted evaluation resumes where it stopped and a changed
setting, frame or category id never reuses stale results. When the key changes only clipvis' own per-video files
are deleted, under the folder's lock; a `per_video` folder that clipvis did not make (no `cache.json`, not empty) is
left alone and the run stops with one line. `cache.json` also records the files evaluate wrote beside `per_video/`
(results.json, metrics.json, the server zip, a --max-videos GT: `OUTPUTS_KEY`, each with its size, modification
time and SHA-256, so that a copy of the folder whose files got new times still counts as evaluate's); a file of
those names that it does not list, or that changed since, is never replaced or deleted: the run
stops with one line before the model loads. A video that fails (missing frame, unreadable image, model error) is
reported on one line and the others still run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipvis.cli import rle
from clipvis.cli.atomic import (
    atomic_write_json,
    atomic_write_streamed_json,
    ensure_output_dir,
    is_temp_file_name,
    remove_stale_temp_files,
)
from clipvis.cli.datasets import DatasetInputs
from clipvis.cli.distributed import DistributedRun, InputsDifferError
from clipvis.cli.evaluation.ground_truth import GtVideo
from clipvis.cli.frame_numbers import recorded_frame_numbers
from clipvis.cli.inputs import VideoSource, is_dir_quietly, is_file_quietly, list_image_frames
from clipvis.cli.json_io import parse_json
from clipvis.cli.locks import LOCK_NAME, FolderLock
from clipvis.cli.messages import (
    STREAM_PARAMETER_FLAGS,
    describe_exception,
    model_error_message,
    path_text,
    shown_path,
    subject_message,
)
from clipvis.cli.progress import Reporter
from clipvis.cli.run_identity import file_digest
from clipvis.cli.segment import SegmentOptions, SegmentRunner
from clipvis.cli.video_io import VideoReadError

if TYPE_CHECKING:  # the model package: imported when the weights load, not when the CLI starts
    from clipvis.model import VideoPredictor

CACHE_DIR = "per_video"
CACHE_STAMP = "cache.json"
RESULTS_NAME = "results.json"
METRICS_NAME = "metrics.json"
_PER_VIDEO_FILE = re.compile(r"^\d+\.json$")
_SUBSET_GT_FILE = re.compile(r"^ground_truth_first_\d+\.json$")


def subset_ground_truth_name(num_videos: int) -> str:
    """The name of the GT file a ``--max-videos`` run is scored against (beside results.json)."""
    return f"ground_truth_first_{num_videos}.json"


def is_subset_ground_truth(path: Path) -> bool:
    """Whether ``path`` is the GT file of a ``--max-videos`` run (``subset_ground_truth_name``)."""
    return bool(_SUBSET_GT_FILE.match(Path(path).name))


class ForeignCacheFolderError(ValueError):
    """OUTPUT/per_video exists, is not empty and was not made by clipvis (no cache.json)."""


class ForeignOutputFileError(ValueError):
    """A file the run would write in OUTPUT (results.json, metrics.json, the server zip, a --max-videos GT) exists and
    is not one clipvis evaluate wrote there (or it changed since); one line, nothing was changed."""


# cache.json's record of the files evaluate wrote in OUTPUT: {name: [size, mtime_ns, sha256]}, or null while a run
# writes it (a kill then leaves a file the next run may replace). A record of an earlier version lacks the SHA-256
# ([size, mtime_ns]: the file must keep its time); a stamp of a still earlier one has no record: its folder's files of
# those names are taken as evaluate's, as that version did.
OUTPUTS_KEY = "outputs"


def server_zip_name(dataset: str) -> str:
    """The server zip evaluate writes in OUTPUT for a split without public ground truth."""
    return f"{dataset}_results.zip"


def evaluation_output_names(dataset: str, num_videos: int, max_videos: int | None) -> list[str]:
    """The files a run writes in OUTPUT beside per_video/ (``dataset``: the spec's name)."""
    names = [RESULTS_NAME, METRICS_NAME, server_zip_name(dataset)]
    if max_videos is not None and max_videos < num_videos:
        names.append(subset_ground_truth_name(max_videos))
    return names


def _file_record(path: Path) -> list[int | str]:
    """What cache.json records of a file evaluate wrote: [size, mtime_ns, SHA-256]."""
    status = path.stat()
    return [status.st_size, status.st_mtime_ns, file_digest(path)]


def _unchanged_since_written(path: Path, record: Any) -> bool:
    """Whether ``path`` is the file evaluate recorded writing (``record``; None: one being written, taken as it): the
    same size and modification time, or, where the time differs (a copy by ``cp -r``, unzip, rsync without -t), the
    same size and SHA-256. A record without the SHA-256 (an earlier version's) needs the same time."""
    if record is None:
        return True
    if not path.is_file() or not isinstance(record, list) or len(record) < 2:
        return False
    status = path.stat()
    if status.st_size != record[0]:
        return False
    if status.st_mtime_ns == record[1]:
        return True
    return len(record) > 2 and isinstance(record[2], str) and file_digest(path) == record[2]


def _read_stamp(cache: Path) -> dict[str, Any] | None:
    """per_video/cache.json as a dict (None: none, or unreadable)."""
    try:
        stamp = parse_json((cache / CACHE_STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def recorded_outputs(output: Path) -> dict[str, Any] | None:
    """The files evaluate recorded writing in ``output`` (name -> [size, mtime_ns] or None); {} in a folder evaluate
    never used, None in one an earlier version used (no record: every file of evaluate's names counts as its)."""
    stamp = _read_stamp(output / CACHE_DIR)
    if stamp is None:
        return None if (output / CACHE_DIR / CACHE_STAMP).is_file() else {}
    outputs = stamp.get(OUTPUTS_KEY)
    if OUTPUTS_KEY not in stamp:
        return None
    return outputs if isinstance(outputs, dict) else {}


def check_output_files(output: Path, names: Iterable[str]) -> None:
    """ForeignOutputFileError when a run writing ``names`` in ``output`` would replace a file evaluate did not write
    there, or one changed since it did. Read only: it runs before the model loads, and again under the lock."""
    recorded = recorded_outputs(output)
    if recorded is None:
        return
    for name in names:
        path = output / name
        if not (path.exists() or path.is_symlink()):
            continue
        if name not in recorded:
            raise ForeignOutputFileError(
                f"{shown_path(path)}: exists and was not written by clipvis evaluate; nothing was changed (move it "
                "away, or choose another --output)"
            )
        if not _unchanged_since_written(path, recorded[name]):
            raise ForeignOutputFileError(
                f"{shown_path(path)}: changed since clipvis evaluate wrote it; nothing was changed (move it away, or "
                "choose another --output)"
            )


def check_cache_folder(cache: Path) -> None:
    """ForeignCacheFolderError when ``cache`` (OUTPUT/per_video) is a folder clipvis did not make: no stamp, and files
    besides a lock and temporary files. Read only: it runs before the model loads and before the folder's lock file
    is made (nothing is left in a foreign folder), and again under the lock."""
    if not cache.is_dir() or (cache / CACHE_STAMP).exists():
        return
    if any(e.name != LOCK_NAME and not is_temp_file_name(e.name) for e in cache.iterdir()):
        raise ForeignCacheFolderError(
            f"{cache}: exists and was not made by clipvis evaluate (no {CACHE_STAMP}); nothing was deleted. "
            "Choose another --output, or empty that folder."
        )


def _update_stamp(cache: Path, **fields: Any) -> None:
    """Rewrite per_video/cache.json with ``fields`` changed, its other keys kept."""
    atomic_write_json(cache / CACHE_STAMP, {**(_read_stamp(cache) or {}), **fields})


class NoVideoFoundError(ValueError):
    """Not one video of the run has its frames under the frames folder (nor in the input its GT records)."""


class PerVideoFileError(ValueError):
    """Under torchrun, rank 0 cannot read a per-video file another rank wrote (not on a file system the machines
    share, or damaged)."""


@dataclass
class DatasetRunSummary:
    results: list[dict[str, Any]]
    computed: int  # videos run now
    reused: int  # videos taken from the per-video cache
    results_path: Path | None  # None when some video failed (no results.json is written then)
    failed: list[str] = field(default_factory=list)  # one line per failed video
    main: bool = True  # False on torchrun ranks other than 0 (which neither write nor score results.json)


def cache_identity(weights: str, vocabulary: list[str], options: dict[str, Any]) -> str:
    text = json.dumps({"weights": weights, "vocabulary": vocabulary, "options": options}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _stride_of(indices: tuple[int, ...]) -> int | None:
    """N when ``indices`` are 0, N, 2N, ... (a segment run's frames), else None."""
    if not indices or indices[0] != 0:
        return None
    stride = indices[1] - indices[0] if len(indices) > 1 else 1
    if stride < 1 or any(b - a != stride for a, b in zip(indices, indices[1:], strict=False)):
        return None
    return stride


def decoded_frame_numbers(video: GtVideo) -> list[int] | None:
    """The frames of its recorded video a GT video's frames are, for frames decoded from it: the numbers their
    names give (a frame a person deleted from the file, or ``frame_indices`` a tool dropped, moves no other frame),
    else ``frame_indices`` (`clipvis.cli.frame_numbers`); None where that cannot be told or they do not increase."""
    return recorded_frame_numbers(list(video.file_names), list(video.frame_indices))


def _size_and_time(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_size, status.st_mtime_ns


def _cached_results(path: Path, key: str | None) -> list[dict[str, Any]] | None:
    """A video's cached results when its file is whole and was computed from what ``key`` says, else None (it runs
    again; files of earlier versions, a bare list without a key, too)."""
    if key is None or not path.is_file():
        return None
    try:
        cached = parse_json(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(cached, dict) or cached.get("key") != key or not isinstance(cached.get("results"), list):
        return None
    return cached["results"]


def _streamed_entries(entries: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Result entries with their per-frame masks as iterators, for ``atomic_write_streamed_json`` to write a chunk
    of masks at a time: the text of a long video's entries (~2x their masks' bytes, and as much again encoded) was
    built whole before it was written, for its per-video file and again for results.json."""
    for entry in entries:
        yield {**entry, "segmentations": iter(entry["segmentations"])}


def locate_video(inputs: DatasetInputs, video: GtVideo) -> VideoSource:
    """Where a GT video's frames are read from: its listed frames under the frames folder, else the input its GT
    records (``_recorded_video``); a VideoSource with ``error`` (one line) when neither holds them."""
    try:
        frames = tuple(inputs.frame_paths(video))
    except ValueError as error:  # a frame name outside the frames folder, or without <video>/<frame>
        return VideoSource(path=inputs.frames_root, kind="images", error=f"video {video.id}: {error}")
    missing = next((p for p in frames if not is_file_quietly(p)), None)
    folder = frames[0].parent if frames else inputs.frames_root
    if not frames:
        return VideoSource(path=folder, kind="images", error="the GT lists no frames for this video")
    if missing is not None:
        recorded = _recorded_video(inputs, video)
        if recorded is not None:
            return recorded
        return VideoSource(path=folder, kind="images", error=f"frame {missing} listed in the GT is missing"
                                                            f"{_not_decodable(inputs, video)}")
    return VideoSource(path=folder, kind="images", frame_files=frames)


def _recorded_video(inputs: DatasetInputs, video: GtVideo) -> VideoSource | None:
    """The input segment recorded for a GT written from its ``ytvis.json`` (``source``), when its frames are not
    under the frames folder: a video file (its frames those ``decoded_frame_numbers`` tells), or an image folder
    holding every image its ``file_names`` name (by their last component, as recorded: a name that is not UTF-8
    too); None otherwise."""
    if not video.source:
        return None
    path = Path(video.source)
    if not path.is_absolute():
        path = inputs.gt_path.parent / path
    if is_dir_quietly(path) and video.file_names:
        try:
            listed = {path_text(file.name): file for file in list_image_frames(path)}
        except OSError:
            return None
        frames = tuple(listed.get(name.rsplit("/", 1)[-1]) for name in video.file_names)
        return VideoSource(path=path, kind="images", frame_files=frames) if None not in frames else None
    if decoded_frame_numbers(video) is None:
        return None
    return VideoSource(path=path, kind="video") if is_file_quietly(path) else None


def _not_decodable(inputs: DatasetInputs, video: GtVideo) -> str:
    """Why a GT video whose frames are missing is not read from the input it records either ("" with none)."""
    if not video.source:
        return ""
    path = Path(video.source)
    if not path.is_absolute():
        path = inputs.gt_path.parent / path
    where = shown_path(path)
    if not (is_file_quietly(path) or is_dir_quietly(path)):
        return f", and so is the input it was segmented from ({where})"
    if is_file_quietly(path) and decoded_frame_numbers(video) is None:
        return (f", and which frames of {where} its frames are cannot be told (file names without frame numbers "
                "and no frame_indices, or numbers that do not increase)")
    return f" (nor is it among the images of {where})" if is_dir_quietly(path) else ""


def videos_of_the_run(inputs: DatasetInputs, max_videos: int | None) -> list[GtVideo]:
    """The videos a run takes: the first ``max_videos`` by id (every one with None)."""
    return sorted(inputs.videos, key=lambda v: v.id)[:max_videos]


def check_some_video_found(inputs: DatasetInputs, max_videos: int | None, frames_option: str = "--frames") -> None:
    """NoVideoFoundError when not one of the run's videos has its frames where ``locate_video`` looks (a wrong
    --frames or frames folder): one line before the model loads, not one per video after it. Cheap: the lookup
    stops at a video's first missing frame and at the first video found. ``frames_option``: what custom data's
    frames folder is called (train's test sets: their ``frames`` key)."""
    videos = videos_of_the_run(inputs, max_videos)
    if not videos:
        return
    first = locate_video(inputs, videos[0])
    if first.ok or any(locate_video(inputs, video).ok for video in videos[1:]):
        return
    folder = shown_path(inputs.frames_root)
    where = (f"{frames_option} {folder}" if inputs.spec.name == "custom"
             else f"{inputs.spec.name}'s frames folder {folder}")
    counted = f"the {len(videos)} GT videos"
    if len(videos) < len(inputs.videos):
        counted = f"the first {len(videos)} GT videos (--max-videos {max_videos})"
    reason = (first.error or "not found").removeprefix(f"video {videos[0].id}: ")
    raise NoVideoFoundError(f"{where}: none of {counted} has its frames there (the first, video {videos[0].id}: "
                            f"{reason}); nothing was run")


class DatasetInference:
    """Runs the predictor (exact mode) over a dataset's videos, official results format."""

    def __init__(self, predictor: VideoPredictor, inputs: DatasetInputs, options: SegmentOptions,
                 reporter: Reporter) -> None:
        self.inputs = inputs
        self.options = options
        self.reporter = reporter
        self.runner = SegmentRunner(predictor, options, reporter, categories=inputs.vocabulary)
        self.category_ids = self._category_ids()

    def _category_ids(self) -> list[int]:
        """Contiguous label -> the dataset's category id (vocabulary is in category-id order)."""
        from clipvis.cli.datasets import read_dataset_index

        index = read_dataset_index(self.inputs.gt_path)
        return [c.id for c in sorted(index.categories, key=lambda c: c.id)]

    def _prepare_cache(self, cache: Path) -> None:
        """Check the cache key of `cache` (held locked by the caller); on a new key delete clipvis' own per-video
        files only. Raises ForeignCacheFolderError for a non-empty folder without clipvis' stamp."""
        # the first is the key this version writes; the others are the same run as earlier stamps recorded it
        identities = [cache_identity(w, self.options.vocabulary, o) for w, o in self.options.identities()]
        identity = identities[0]
        marker = cache / CACHE_STAMP
        remove_stale_temp_files(cache)
        own = [entry for entry in cache.iterdir() if _PER_VIDEO_FILE.match(entry.name) and entry.is_file()]
        if not marker.exists():
            check_cache_folder(cache)
            previous = None
        else:
            try:
                previous = parse_json(marker.read_text(encoding="utf-8"))["identity"]
            except (OSError, ValueError, KeyError, TypeError):
                previous = None
        if previous not in identities:
            for entry in own:
                entry.unlink(missing_ok=True)
        if previous != identity:  # a new stamp records no outputs yet (not an earlier version's, which has no record)
            fresh = {} if marker.exists() else {OUTPUTS_KEY: {}}
            _update_stamp(cache, identity=identity, weights=self.options.weights_identity(), **fresh)

    def video_key(self, video: GtVideo) -> str | None:
        """What a video's cached results were computed from besides the run's key: its frames (each file's path,
        size and modification time, in the GT's order), its size, and the category ids the results are written
        with. A video whose frames changed (another copy of the dataset, re-extracted frames, a shorter frame list)
        or whose category ids were renumbered runs again. None when the frames cannot be listed."""
        source = self.video_source(video)
        if not source.ok:
            return None
        files = source.frame_files if source.kind == "images" else (source.path,)
        try:
            stats = [(str(path.resolve()), *_size_and_time(path)) for path in files]
        except (ValueError, OSError):
            return None
        if source.kind == "video":  # decoded from the source video: which of its frames counts too
            stats.append(decoded_frame_numbers(video))
        text = json.dumps({"frames": stats, "size": [video.height, video.width], "categories": self.category_ids})
        return hashlib.sha256(text.encode()).hexdigest()

    def video_folder(self, video: GtVideo) -> Path:
        """The folder of a video's frames (the frames root when its frame names cannot be used), or the input
        segment recorded where they are read from there (a corrected ytvis.json's video: the folder is none)."""
        source = self.video_source(video)
        if source.ok and source.kind == "video":
            return source.path
        try:
            frames = self.inputs.frame_paths(video)
        except ValueError:
            frames = []
        return frames[0].parent if frames else self.inputs.frames_root

    def video_source(self, video: GtVideo) -> VideoSource:
        """Where a video's frames are read from (``locate_video``)."""
        return locate_video(self.inputs, video)

    def run_video(self, video: GtVideo) -> list[dict[str, Any]]:
        source = self.video_source(video)
        if not source.ok:
            raise VideoReadError(source.path, source.error or "unreadable")
        stride = max_frames = frames = listed = None
        if source.kind == "video":  # the frames the GT lists: every Nth as segment took them, or others
            listed = frames = decoded_frame_numbers(video) or []  # not None: video_source found them
            stride = _stride_of(tuple(frames))
            if stride is not None:  # read as segment reads a stride (the same frames either way)
                max_frames, frames = len(frames), None
        with self.runner.track(source, video.id, f"video{video.id}", stride=stride, max_frames=max_frames,
                               frames=frames) as tracked:
            if listed is not None and list(tracked.info.frame_indices) != listed:
                raise VideoReadError(source.path, f"has {len(tracked.info.frame_indices)} of the {video.num_frames} "
                                                  "frames the GT lists (not the video it was made from)")
            info = tracked.info
            if (info.height, info.width) != (video.height, video.width):
                raise VideoReadError(
                    source.path, f"frames are {info.width}x{info.height}, the GT says {video.width}x{video.height}"
                )
            empty = rle.encode(np.zeros((info.height, info.width), dtype=bool))
            return [
                {
                    "video_id": video.id,
                    "score": track.score,
                    "category_id": self.category_ids[track.category_id - 1],
                    "segmentations": [seg if seg is not None else empty for seg in track.segmentations],
                }
                for track in tracked.tracks
            ]

    def run(
        self,
        output: Path,
        max_videos: int | None = None,
        job: DistributedRun | None = None,
        conclude: Callable[[DatasetRunSummary], None] | None = None,
    ) -> DatasetRunSummary:
        """Run every video not already in the per-video cache, write ``results.json`` when none failed, then call
        ``conclude`` with the summary (report, score) while the folder's lock is still held. Raises
        OutputNotWritableError, FolderBusyError (another process evaluates into the same folder),
        ForeignCacheFolderError, ForeignOutputFileError or PerVideoFileError, with one-line messages, and whatever
        ``conclude`` raises.

        Under torchrun (``job``, inside ``job.joined()``), the ranks take the videos one at a time, the longest first,
        each the next one whenever it is free (``DistributedRun.largest_first``); rank 0 holds the folder's lock for
        the whole job, prepares the cache before anyone starts and, once every rank is done, writes ``results.json``
        from the per-video files (the same file as one process writes) and concludes for the whole job. The other
        ranks wait for that in a last gather, so that every rank ends together and with rank 0's outcome. A rank that
        raises sends ``RankStopped`` to the next gather (``joined``), where the others raise OtherRankFailed: rank
        0's setup at the first, any rank's videos at the second, rank 0's ``results.json`` or conclusion at the last.
        A rank that ended early would leave torchrun's agents of other machines waiting out their exit barrier (300 s)
        and then exiting 0."""
        names = self.output_names(max_videos)
        with self._output_held(output, names, prepares=job is None or job.is_main) as (output, cache):
            videos = self.videos_to_run(max_videos)
            if job is None:
                computed, reused, results, failures = self._run_videos(videos, cache)
                failed = list(failures.values())
            else:  # results.json is read from every video's per-video file, in video order, as one process writes it
                computed, reused, failed = self._run_videos_of_the_job(job, videos, cache)
                results = None
            self.reporter.close()  # the progress display (rank 0's: of the whole job) ends before the summary
            if job is not None and not job.is_main:
                job.last_gather(None)  # rank 0 concludes meanwhile
                return DatasetRunSummary([], computed, reused, None, failed, main=False)
            summary = self._summarise(output, cache, videos, computed, reused, results, failed)
            if conclude is not None:
                conclude(summary)
            if job is not None:
                job.last_gather(None)
            return summary

    @contextlib.contextmanager
    def _output_held(self, output: Path, names: list[str], prepares: bool) -> Iterator[tuple[Path, Path]]:
        """``(output, its per_video/ folder)`` for the run. ``prepares`` (one process, or rank 0 of a torchrun job):
        the folders are made, per_video/ checked before its lock file is made there, the lock held for the whole run
        and the output prepared (``_prepare_output``) before anyone starts; once prepared, the files of ``names`` the
        run wrote are recorded as it ends, however it ends, before the lock is released."""
        if not prepares:  # another rank of the job: rank 0 holds the folder
            yield output, output / CACHE_DIR
            return
        output = ensure_output_dir(output)
        cache = ensure_output_dir(output / CACHE_DIR)
        check_cache_folder(cache)  # before its lock file is made there
        with FolderLock(cache):
            self._prepare_output(output, cache, names)
            try:
                yield output, cache
            finally:
                self._record_outputs(output, cache, names)

    def _run_videos_of_the_job(
        self, job: DistributedRun, videos: list[GtVideo], cache: Path
    ) -> tuple[int, int, list[str]]:
        """This rank's part of ``videos`` under torchrun, the cache ready: every rank takes the longest videos first,
        the next one whenever it is free. Returns the whole job's (videos run, videos reused, one line per failed
        video, by id)."""
        try:
            taken = job.largest_first([str(v.id) for v in videos], range(len(videos)),
                                      lambda p: videos[p].num_frames or 0)
        except InputsDifferError as error:
            where = shown_path(self.inputs.gt_path)
            raise InputsDifferError(f"{where}: other videos than rank 0's: {error}") from None
        computed, reused, _, failures = self._run_videos((videos[p] for p in taken), cache, keep=False)
        # the counts and failures only: rank 0 reads the results from the per-video files (a rank's results can
        # be hundreds of MB, and the gather would send every rank's to every rank)
        every_rank = job.gather((computed, reused, failures))
        computed, reused = sum(r[0] for r in every_rank), sum(r[1] for r in every_rank)
        failures = {video_id: line for r in every_rank for video_id, line in r[2].items()}
        return computed, reused, [failures[video_id] for video_id in sorted(failures)]

    def output_names(self, max_videos: int | None) -> list[str]:
        """The files this run writes in OUTPUT beside per_video/."""
        return evaluation_output_names(self.inputs.spec.name, len(self.inputs.videos), max_videos)

    def _prepare_output(self, output: Path, cache: Path, names: list[str]) -> None:
        """With the per_video lock held: sweep what a killed run left, refuse to replace a file evaluate did not
        write (before anything changes), check the cache key, remove the files an earlier run wrote and record
        ``names`` as being written."""
        # the files evaluate writes next to per_video/, as temporary files a killed run may have left
        remove_stale_temp_files(output, names)
        check_output_files(output, names)
        recorded = recorded_outputs(output)
        self._prepare_cache(cache)
        if recorded is None:  # a folder an earlier version of evaluate wrote: its results, metrics, server zip (and
            # the GT of a --max-videos run) are another run's until rewritten
            subsets = [entry.name for entry in output.iterdir() if _SUBSET_GT_FILE.match(entry.name)]
            earlier = [RESULTS_NAME, METRICS_NAME, server_zip_name(self.inputs.spec.name), *subsets]
        else:  # what evaluate wrote here and nobody changed since (a file changed by hand is left, unrecorded)
            earlier = [name for name, stats in recorded.items() if name == Path(name).name and name not in (".", "..")
                       and (output / name).is_file() and _unchanged_since_written(output / name, stats)]
        for name in earlier:
            (output / name).unlink(missing_ok=True)
        # first as being written, without file stats: a kill while they are written leaves files the next run
        # replaces, not files it refuses
        _update_stamp(cache, **{OUTPUTS_KEY: dict.fromkeys(names)})

    @staticmethod
    def _record_outputs(output: Path, cache: Path, names: list[str]) -> None:
        """Record the files of ``names`` this run wrote in ``output`` (with the lock held)."""
        written = {name: _file_record(output / name) for name in names if (output / name).is_file()}
        _update_stamp(cache, **{OUTPUTS_KEY: written})

    def videos_to_run(self, max_videos: int | None) -> list[GtVideo]:
        """The videos of the run, by id."""
        return videos_of_the_run(self.inputs, max_videos)

    def _run_videos(
        self, videos: Iterable[GtVideo], cache: Path, keep: bool = True
    ) -> tuple[int, int, list[dict[str, Any]], dict[int, str]]:
        """Run (or take from the cache) ``videos`` (a list, or an iterator over those a torchrun rank takes as it
        goes): (videos run, videos reused, their result entries in their order (none unless ``keep``: under torchrun
        rank 0 reads them from the per-video files), one line per failed video by id)."""
        results: list[dict[str, Any]] = []
        failed: dict[int, str] = {}
        computed = reused = 0
        self.reporter.batch_started(len(videos) if isinstance(videos, Sized) else None)
        for video in videos:
            path = cache / f"{video.id}.json"
            stem = f"video{video.id}"
            key = self.video_key(video)
            entries = _cached_results(path, key)
            if entries is not None:
                reused += 1
                self.reporter.video_skipped(VideoSource(path=path), stem)
            if entries is None:
                try:
                    entries = self.run_video(video)
                except VideoReadError as error:
                    failed[video.id] = self._report_failure(video, str(error))
                    continue
                except (ValueError, RuntimeError, MemoryError) as error:  # model errors: this video only
                    where = f"{shown_path(self.video_folder(video))}: video {video.id}"
                    cause = model_error_message(error, STREAM_PARAMETER_FLAGS)  # --batch-frames 1
                    failed[video.id] = self._report_failure(video, subject_message(cause, where))
                    continue
                atomic_write_streamed_json(path, {"key": key, "results": _streamed_entries(entries)})
                computed += 1
                # the frames folder names the video (a log's line); the output is its per-video file
                self.reporter.video_finished(
                    VideoSource(path=self.video_folder(video)), stem, video.num_frames or 0, 0.0, [path]
                )
            if keep:
                results.extend(entries)
        return computed, reused, results, failed

    def _summarise(
        self,
        output: Path,
        cache: Path,
        videos: list[GtVideo],
        computed: int,
        reused: int,
        results: list[dict[str, Any]] | None,
        failed: list[str],
    ) -> DatasetRunSummary:
        """The run's summary; writes ``results.json`` when no video failed. ``results`` None: read every video's
        entries from its per-video file (other ranks ran some of them)."""
        if failed:
            return DatasetRunSummary(results or [], computed, reused, None, failed)
        if results is None:
            results = [entry for video in videos for entry in self._read_per_video(cache / f"{video.id}.json")]
        results_path = atomic_write_streamed_json(output / RESULTS_NAME, _streamed_entries(results))
        return DatasetRunSummary(results, computed, reused, results_path)

    @staticmethod
    def _read_per_video(path: Path) -> list[dict[str, Any]]:
        """A per-video file another rank wrote; PerVideoFileError with one line when it cannot be read."""
        try:
            return parse_json(path.read_text())["results"]
        except FileNotFoundError:
            raise PerVideoFileError(
                f"{shown_path(path)}: written by another process but not found here; on several machines the output "
                "folder must be on a file system they share"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise PerVideoFileError(f"{shown_path(path)}: unreadable ({describe_exception(error)})") from None

    def _report_failure(self, video: GtVideo, message: str) -> str:
        self.reporter.video_failed(VideoSource(path=self.inputs.frames_root), f"video{video.id}", message)
        return message
