"""YouTube-VIS results for evaluation servers: the bare results list (`results.json`), optionally zipped
(`results.zip` holding `results.json`, what the YouTube-VIS / OVIS CodaLab and LV-VIS Codabench pages take).

Unlike the per-video formats this writes ONE file for every exported video together, in input order; video ids
and category ids are those of the inputs (for a server they must be the benchmark's, as `clipvis evaluate`
writes them), or with `--gt` (`ExportOptions.gt`) those of a GT file, matched as `clipvis evaluate` matches a
ytvis.json to it (`gt_ids`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections import Counter
from pathlib import Path
from typing import IO, TYPE_CHECKING

from clipvis.cli.atomic import OutputNotWritableError
from clipvis.cli.exporters.base import ExportOptions
from clipvis.cli.exporters.export_record import RESULTS_FILE_SOURCE
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.exporters.staging import staged_directory
from clipvis.cli.json_io import streamed_json
from clipvis.cli.messages import shown_path
from clipvis.cli.results import TrackResult
from clipvis.cli.zip_files import add_stream

if TYPE_CHECKING:
    from clipvis.cli.evaluation.ground_truth import VideoGroundTruth


def results_entry(video: ExportVideo, track: TrackResult, video_id: int | None = None,
                  category_id: int | None = None) -> dict:
    """One track's entry of a results file, its masks as an iterator (`streamed_json` writes them a chunk at a
    time); ``video_id`` and ``category_id``: the GT's (`gt_ids`), else the input's."""
    return {"video_id": video.info.video_id if video_id is None else video_id,
            "category_id": track.category_id if category_id is None else category_id, "score": track.score,
            "segmentations": iter(track.segmentations)}


def gt_ids(video: ExportVideo, gt: VideoGroundTruth) -> tuple[int, dict[int, int | None]]:
    """``video``'s id in ``gt`` and each of its category ids as the GT's (None: a class the GT lacks), matched as
    `clipvis evaluate --results` matches a ytvis.json: the video by its frames' names, else its name or frames
    folder; a class by its name (first synonym, case and accents aside). EvaluationInputError (one line) when the
    video matches no GT video, or several, or the GT names its videos no way."""
    from clipvis.cli.evaluation.detections import gt_category_map, gt_video_map
    from clipvis.cli.evaluation.errors import EvaluationInputError

    source = shown_path(video.results_file)
    info = video.info
    entry = {"id": info.video_id, "name": info.stem, "file_names": list(info.file_names)}
    videos, named_none = gt_video_map([entry], gt, source)
    if info.video_id not in videos:
        why = f"the GT file {gt.source} names no videos (no name or file_names)" if named_none else \
            "it has no name or frame names"
        raise EvaluationInputError(f"{source}: video {info.video_id} ({info.stem!r}) cannot be matched to a GT video: "
                                   f"{why}")
    categories = gt_category_map([{"id": i, "name": name} for i, name in enumerate(video.categories, start=1)],
                                 gt, source)
    return videos[info.video_id], {i: gt_id for i, (_, gt_id) in categories.items()}


def gt_mismatches(video: ExportVideo, gt_video_id: int, gt: VideoGroundTruth, counted: dict[int, int]) -> list[str]:
    """Why ``video``'s results cannot be scored against the GT video ``gt_video_id`` it matched (`gt_ids`), one line
    per problem, as `clipvis evaluate` refuses them (`detections.frame_count_mismatch`, `mask_size_mismatch`): another
    number of frames (a `--stride` or `--max-frames` run) or another frame size; none when it can. ``counted``: the
    GT's `detections.counted_frames` of its annotations alone (for a GT video of no length or file_names)."""
    from clipvis.cli.evaluation.detections import frame_count_mismatch, mask_size_mismatch

    info, gt_video = video.info, gt.videos[gt_video_id]
    where = f"{shown_path(video.results_file)}: video {info.video_id} ({info.stem!r}) matches GT video {gt_video_id}"
    frames = len(info.frame_indices)
    problems = [frame_count_mismatch(frames, gt_video, max(counted.get(gt_video_id, 0), frames)),
                mask_size_mismatch([info.height, info.width], gt_video)]
    return [f"{where}: {problem}" for problem in problems if problem is not None]


# What the folder's export record (EXPORT_RECORD) says a results file came from: an export's results file may
# replace another's (the same inputs or not), never a file of someone's own nor one edited since it was written.
# Which results files it was made from is recorded beside it ("inputs"), which `segment` reads when it replaces one
# (`exports_from`).
RESULTS_IDENTITY = {"results": RESULTS_FILE_SOURCE}


class ResultsStream:
    """The results file of one folder, built video by video: each video's entries are written as it is added to an
    anonymous temporary file (on the destination's file system, with no name in any folder: it goes with the
    process however that ends), so an export of many videos holds one video's results in memory, not all of
    them. `write` checks that the videos agree (video ids, category lists) and puts the file in place as it always
    was: the same bytes, staged, atomically, never over a results file no export wrote. An error writing the
    temporary file is raised by `write`, as the staging says it: OutputNotWritableError naming the destination
    ("<folder>: output not writable (Permission denied)"), not the temporary file's random name."""

    def __init__(self, destination: Path, gt: VideoGroundTruth | None = None) -> None:
        self.destination = destination
        self.gt = gt  # the GT whose ids the entries take (`gt_ids`), or None: the inputs' ids
        self.dropped: Counter[str] = Counter()  # with a GT: the entries left out per class the GT lacks
        # with a GT: why the file cannot be written (a video not in the GT, or not of its GT video's length or size),
        # one line each
        self.refusals: list[str] = []
        self._counted: dict[int, int] | None = None  # the GT's frame counts of its annotations (`gt_mismatches`)
        self._ids: list[int] = []
        self._inputs: list[str] = []  # the results files of the videos added, each once, absolute
        self._folders: dict[int, list[str]] = {}  # each video id's inputs (their results folders), for the message
        self._tables: set[tuple[str, ...]] = set()
        self._file: IO[bytes] | None = None
        self._entries = 0
        self._error: OSError | None = None

    @property
    def videos(self) -> int:
        """How many videos were added."""
        return len(self._ids)

    def add(self, video: ExportVideo) -> None:
        video_id, categories = video.info.video_id, None
        if self.gt is not None:
            from clipvis.cli.evaluation.detections import counted_frames
            from clipvis.cli.evaluation.errors import EvaluationInputError

            try:
                video_id, categories = gt_ids(video, self.gt)
            except EvaluationInputError as error:
                self.refusals.append(str(error))
                return
            if self._counted is None:
                self._counted = counted_frames(self.gt, [], set())
            mismatches = gt_mismatches(video, video_id, self.gt, self._counted)
            if mismatches:
                self.refusals.extend(mismatches)
                return
        self._ids.append(video_id)
        if (results_file := os.path.abspath(video.results_file)) not in self._inputs:
            self._inputs.append(results_file)
        self._folders.setdefault(video_id, []).append(str(Path(video.results_file).parent))
        if categories is None:  # with a GT the ids are its own, whatever each input's list
            self._tables.add(tuple(video.categories))
        if self._error is not None or self.refusals:
            return
        try:
            file = self._opened()
            for track in video.tracks:  # a track's masks a few hundred at a time, as they are read
                category_id = None if categories is None else categories.get(track.category_id)
                if categories is not None and category_id is None:
                    self.dropped[video.categories[track.category_id - 1]] += 1
                    continue
                if self._entries:
                    file.write(b",")
                for piece in streamed_json(results_entry(video, track, video_id, category_id)):
                    file.write(piece.encode("utf-8"))
                self._entries += 1
        except OSError as error:  # e.g. disk full, a folder we may not write: the file is not written (said by `write`)
            self._error = self._not_writable(error)

    def write(self, options: ExportOptions) -> Path:
        """Put the results file in place (``results.json``, or ``results.zip`` holding it); returns its path."""
        if self._error is not None:
            raise self._error
        if self.refusals:  # the others said by the caller, one line each
            raise ValueError(self.refusals[-1])
        destination, ids = self.destination, self._ids
        duplicated = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
        if duplicated and self.gt is not None:  # the ids are the GT's: the inputs are the same GT video
            raise ValueError(f"{destination}: {self._matched_twice(sorted(duplicated))}")
        if duplicated:
            shared = "; ".join(f"{i}: {', '.join(self._folders[i][:3])}{', ...' if len(self._folders[i]) > 3 else ''}"
                               for i in sorted(duplicated)[:3]) + ("; ..." if len(duplicated) > 3 else "")
            raise ValueError(f"{destination}: several inputs share video ids ({shared}"
                             "): a video id is the input's position in the segment run that wrote its folder, and "
                             "these come from runs over other inputs (a rerun keeps the folders it skips as they "
                             "were, when inputs were added or removed since): export them separately, rerun segment "
                             "over all of them with --overwrite, give them a GT file's ids (--gt), or use the files "
                             "clipvis evaluate writes")
        if len(self._tables) > 1:  # one category id would name different classes in different videos
            first, other = sorted(self._tables)[:2]
            pairs = enumerate(zip(first, other, strict=False), start=1)
            differ = next((f"id {i}: {a!r} / {b!r}" for i, (a, b) in pairs if a != b),
                          f"{len(first)} / {len(other)} classes")
            raise ValueError(f"{destination}: the inputs have different category lists ({differ}); one results "
                             "file needs one list: export them separately")
        try:
            file = self._opened()
            file.write(b"]\n")
            size = file.tell()  # tell and seek write out what the file still buffers: a full disk fails here too
            file.seek(0)
        except OSError as error:
            raise self._not_writable(error) from error
        name = Path(options.results_name).stem + ".zip" if options.zip_results else options.results_name
        # staged and moved into place as the per-video formats are (`-o submission/` need not exist yet)
        with staged_directory(destination, RESULTS_IDENTITY, what="a results file exported",
                              inputs=self._inputs) as staging:
            if not options.zip_results:
                with open(staging / name, "wb") as target:
                    shutil.copyfileobj(file, target, 1 << 20)
            else:
                with zipfile.ZipFile(staging / name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                    add_stream(archive, options.results_name, file, size)
        return destination / name

    def _matched_twice(self, video_ids: list[int]) -> str:
        """"r1/clip and r3/clip both match GT video 7 ('clip') of gt.json", of the first of ``video_ids`` (the GT's
        ids that several inputs matched), and how many more there are."""
        assert self.gt is not None
        first = video_ids[0]
        folders = self._folders[first]
        listed = ", ".join(folders[:3]) + (f" and {len(folders) - 3} more" if len(folders) > 3 else "")
        if len(folders) <= 3:
            listed = f"{', '.join(folders[:-1])} and {folders[-1]}"
        name = self.gt.videos[first].name
        named = f" ({name!r})" if name else ""
        more = f" (and {len(video_ids) - 1} more GT video(s) matched by several inputs)" if len(video_ids) > 1 else ""
        return (f"{listed} {'both' if len(folders) == 2 else 'all'} match GT video {first}{named} of {self.gt.source}"
                f"{more}: one video's results can be in the file once")

    def close(self) -> None:
        """Drop the temporary file (written or not)."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()  # closes its descriptor even when writing out what it buffers fails
            except OSError:  # a full disk: that error was said already (`write`), and the file goes anyway
                pass

    def _not_writable(self, error: OSError) -> OutputNotWritableError:
        if isinstance(error, OutputNotWritableError):
            return error
        wrapped = OutputNotWritableError(self.destination, error)
        wrapped.__cause__ = error
        return wrapped

    def _opened(self) -> IO[bytes]:
        if self._file is None:
            folder = self.destination  # `-o submission/` need not exist yet: its nearest existing folder then
            while not folder.is_dir() and folder.parent != folder:
                folder = folder.parent
            self._file = tempfile.TemporaryFile(dir=folder)
            self._file.write(b"[")
        return self._file
