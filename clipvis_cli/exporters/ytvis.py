"""YouTube-VIS results for evaluation servers: the bare results list (`results.json`), optionally zipped
(`results.zip` holding `results.json`, what the YouTube-VIS / OVIS CodaLab and LV-VIS Codabench pages take).

Unlike the per-video formats this writes ONE file for every exported video together, in input order; video ids
and category ids are those of the inputs (for a server they must be the benchmark's, as `clipvis evaluate`
writes them).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO

from clipvis.cli.atomic import OutputNotWritableError
from clipvis.cli.exporters.base import ExportOptions, staged_directory
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.json_io import streamed_json
from clipvis.cli.results import TrackResult
from clipvis.cli.zip_files import add_stream


def results_entry(video: ExportVideo, track: TrackResult) -> dict:
    """One track's entry of a results file, its masks as an iterator (`streamed_json` writes them a chunk at a
    time)."""
    return {"video_id": video.info.video_id, "category_id": track.category_id, "score": track.score,
            "segmentations": iter(track.segmentations)}


# What the folder's export record (base.EXPORT_RECORD) says a results file came from: an export's results file may
# replace another's (the same inputs or not), never a file of someone's own nor one edited since it was written.
RESULTS_IDENTITY = {"results": "clipvis export --to ytvis"}


class ResultsStream:
    """The results file of one folder, built video by video: each video's entries are written as it is added to an
    anonymous temporary file (on the destination's file system, with no name in any folder: it goes with the
    process however that ends), so an export of many videos holds one video's results in memory, not all of
    them. `write` checks that the videos agree (video ids, category lists) and puts the file in place as it always
    was: the same bytes, staged, atomically, never over a results file no export wrote. An error writing the
    temporary file is raised by `write`, as the staging says it: OutputNotWritableError naming the destination
    ("<folder>: output not writable (Permission denied)"), not the temporary file's random name."""

    def __init__(self, destination: Path) -> None:
        self.destination = destination
        self._ids: list[int] = []
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
        self._ids.append(video.info.video_id)
        self._folders.setdefault(video.info.video_id, []).append(str(Path(video.results_file).parent))
        self._tables.add(tuple(video.categories))
        if self._error is not None:
            return
        try:
            file = self._opened()
            for track in video.tracks:  # a track's masks a few hundred at a time, as they are read
                if self._entries:
                    file.write(b",")
                for piece in streamed_json(results_entry(video, track)):
                    file.write(piece.encode("utf-8"))
                self._entries += 1
        except OSError as error:  # e.g. disk full, a folder we may not write: the file is not written (said by `write`)
            self._error = self._not_writable(error)

    def write(self, options: ExportOptions) -> Path:
        """Put the results file in place (``results.json``, or ``results.zip`` holding it); returns its path."""
        if self._error is not None:
            raise self._error
        destination, ids = self.destination, self._ids
        duplicated = {i for i in ids if ids.count(i) > 1} if len(set(ids)) != len(ids) else set()
        if duplicated:
            shared = "; ".join(f"{i}: {', '.join(self._folders[i][:3])}{', ...' if len(self._folders[i]) > 3 else ''}"
                               for i in sorted(duplicated)[:3]) + ("; ..." if len(duplicated) > 3 else "")
            raise ValueError(f"{destination}: several inputs share video ids ({shared}"
                             "): a video id is the input's position in the segment run that wrote its folder, and "
                             "these come from runs over other inputs (a rerun keeps the folders it skips as they "
                             "were, when inputs were added or removed since): export them separately, rerun segment "
                             "over all of them with --overwrite, or use the files clipvis evaluate writes")
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
        with staged_directory(destination, RESULTS_IDENTITY, what="a results file exported") as staging:
            if not options.zip_results:
                with open(staging / name, "wb") as target:
                    shutil.copyfileobj(file, target, 1 << 20)
            else:
                with zipfile.ZipFile(staging / name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                    add_stream(archive, options.results_name, file, size)
        return destination / name

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
