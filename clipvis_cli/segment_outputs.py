"""How `segment` writes one tracked input's files: every writer's file under a temporary name (`write_outputs`;
the writers that do not draw frames beside those that do, where CPUs are left), reported as it goes
(`WritingProgress`), then all renamed into place together with run.json listing them first (`commit_staged`), and
an earlier run's files of formats this run did not write settled (`settle_stale_outputs`). The order of these steps,
and the outcome, are clipvis.cli.segment.SegmentRunner's."""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from clipvis.cli.atomic import OutputStaging
from clipvis.cli.exporters.base import FormatLimitError
from clipvis.cli.inputs import VideoSource
from clipvis.cli.output_formats import create_writers, writer_formats
from clipvis.cli.progress import Reporter
from clipvis.cli.resources import usable_cpus
from clipvis.cli.segment_resume import RefusedReplacement, corrected_files, replacement_refusal
from clipvis.cli.writers import (
    MaskCounter,
    OutputWriter,
    RunManifest,
    SegmentedVideo,
    VideoOutputPaths,
)

WRITING_REPORT_INTERVAL_S = 1.0  # how often the writing of a video's files is reported (the reporter shows less)


class WritingProgress:
    """While a video's files are written: counts the frames the drawing writers take from ``counted`` (out of
    ``total``; None when no writer draws) and the masks each writer that counts them (ytvis, coco) tells the counter
    it is handed (`mask_counter`, out of ``masks``: the tracks' masks, each writer's), keeps the formats being
    written (`writing`) and, from a thread, reports them (`video_writing`) when writing starts, every ``interval``
    seconds until it ends and when a format starts or ends, so that a log shows the writing of a long video's files
    as it goes, and which file it is at once the overlay is drawn (``frames`` None then: a format that does not draw
    may take minutes after it; the JSON formats' masks give its time left)."""

    def __init__(self, reporter: Reporter, source: VideoSource, stem: str, total: int | None,
                 interval: float | None = None, masks: int = 0) -> None:
        self.reporter, self.source, self.stem, self.total = reporter, source, stem, total
        self.interval = WRITING_REPORT_INTERVAL_S if interval is None else interval
        self.masks = masks
        self.frames = 0
        # writer index -> the masks it has written, from its first count (a writer that counts none is not in it)
        self._masks_written: dict[int, int] = {}
        self._active: dict[int, tuple[str, bool]] = {}  # writer index -> (format, draws frames)
        self._drawn = False  # a writer that draws frames has ended: its frames are no longer news
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def counted(self, frames: Iterable[Any]) -> Iterator[Any]:
        self.frames = 0  # a writer that draws reads the frames once
        for item in frames:
            yield item
            self.frames += 1

    def mask_counter(self, index: int) -> MaskCounter:
        """What writer ``index`` tells the masks it has written (`SegmentedVideo.masks_written`)."""

        def count(masks: int) -> None:
            with self._lock:
                self._masks_written[index] = self._masks_written.get(index, 0) + masks

        return count

    @contextlib.contextmanager
    def writing(self, index: int, format: str, draws: bool) -> Iterator[None]:
        """Writer ``index`` (its ``format``; ``draws``: it draws frames) writes its file meanwhile."""
        with self._lock:
            self._active[index] = (format, draws)
        self._report()
        try:
            yield
        finally:
            with self._lock:
                self._active.pop(index, None)
                self._drawn = self._drawn or draws
                others = bool(self._active)
            if others:  # the formats still being written (the last one's end is the video's end: said by it)
                self._report()

    def _report(self) -> None:
        with self._lock:
            active = [self._active[index] for index in sorted(self._active)]
            drawn = self._drawn
            counts = [self._masks_written[index] for index in self._active if index in self._masks_written]
        # the overlay's frames until it has drawn them all, not while only the formats after it are left
        frames = self.frames if self.total is not None and not drawn else None
        # the masks of the formats being written that count theirs (one at a time: those that do not draw)
        written = (sum(counts), self.masks * len(counts)) if counts else None
        self.reporter.video_writing(self.source, self.stem, frames, self.total,
                                    formats=[format for format, _ in active], written=written)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._report()

    def __enter__(self) -> WritingProgress:
        # the first report comes as the first writer starts (`writing`), naming its format
        self._thread = threading.Thread(target=self._run, name="clipvis-writing-progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def write_outputs(writers: Sequence[OutputWriter], paths: VideoOutputPaths, video: SegmentedVideo,
                  timings: dict[str, float], progress: WritingProgress | None = None,
                  not_written: dict[str, FormatLimitError] | None = None) -> list[Path]:
    """Every one of ``writers``' files, in their order (in the `OutputStaging` of the calling thread's context).
    Writers that draw on the frames (the overlay: decoding, drawing threads, the encoder) run in this thread; the others
    (JSON, mostly Python) meanwhile on a helper thread, one after another, where the drawing writers leave a CPU
    free (`overlap_writers`), and after them otherwise. A failure is raised only once both sides have stopped
    (the drawing writers' first), so no file is being written when the video is reported failed; Ctrl-C stops the
    drawing writer here and is raised once the helper has finished the file it is on (it starts no other: every
    file of a stopped video is removed anyway). ``progress`` is told which formats are being written, and the masks
    written by those that count them. ``not_written``: a format whose ids cannot hold these results (too many
    tracks for png-masks, MOTS: FormatLimitError, known only once they are) is put there by its name, the others
    written all the same, and the files returned are those written; without it, that error fails them all."""
    results: dict[int, Path] = {}

    def write(index: int) -> None:
        writer = writers[index]
        start = time.perf_counter()
        # a writer that does not draw counts its masks, where it does (ytvis, coco), for its time left
        counted = video if progress is None or writer.draws_frames else \
            replace(video, masks_written=progress.mask_counter(index))
        with progress.writing(index, writer.format, writer.draws_frames) if progress else \
                contextlib.nullcontext():
            try:
                results[index] = writer.write_video(paths.directory / writer.file_name, counted)
            except FormatLimitError as error:
                if not_written is None:
                    raise
                not_written[writer.format] = error  # nothing of it staged: its exporter failed before its zip
        timings[f"write_{writer.format}"] = time.perf_counter() - start

    here = [i for i, writer in enumerate(writers) if writer.draws_frames]
    aside = [i for i in range(len(writers)) if i not in here]
    if not here or not aside or not overlap_writers(writers, here, video):
        for index in here + aside:  # the drawing writers first: their frames are what the progress counts
            write(index)
        return [results[index] for index in range(len(writers)) if index in results]
    stopping = threading.Event()  # the drawing writers failed or were interrupted: their files go anyway

    def write_aside() -> None:
        for index in aside:
            if stopping.is_set():  # a Ctrl-C waits for the file in progress, not for every one left
                return
            write(index)

    with ThreadPoolExecutor(1, thread_name_prefix="clipvis-writer") as helper:
        context = contextvars.copy_context()  # the helper's files join this thread's OutputStaging
        background = helper.submit(context.run, write_aside)
        try:
            for index in here:
                write(index)
        except BaseException:
            stopping.set()
            raise
        finally:
            failure = background.exception()  # waits: nothing is left writing when this method returns
    if failure is not None:
        raise failure
    return [results[index] for index in range(len(writers)) if index in results]

def overlap_writers(writers: Sequence[OutputWriter], drawing: Sequence[int], video: SegmentedVideo) -> bool:
    """Whether the ``writers`` that do not draw run beside the ``drawing`` ones: only where this process has more
    CPUs (``usable_cpus``) than those keep busy (their ``drawing_cpus(info)``, 1 for a writer without it). The
    overlay sizes its drawing threads to the CPUs; beside it the JSON writers only slowed it, by more than their
    own time (docs/streaming.md: 854x480, 120 frames, 2 CPUs, writers 1.88-2.04 s beside against 1.68-1.79 s
    one after the other)."""
    busy = 0
    for index in drawing:
        cpus = getattr(writers[index], "drawing_cpus", None)
        busy += cpus(video.info) if cpus is not None else 1
    return usable_cpus() > busy


def commit_staged(staging: OutputStaging, manifest: RunManifest, paths: VideoOutputPaths,
                  previous: RunManifest | None, file_names: Iterable[str]) -> tuple[dict[str, Path], set[str]]:
    """Rename the files of ``staging`` (written, under temporary names) into ``paths.directory``, run.json
    (``manifest``) listing them first as clipvis' own; returns ``{final name: temporary path}`` and the files a person
    corrected since the earlier run (``previous``) wrote them (`corrected_files`). Raises RefusedReplacement, and
    discards them all, where one of ``file_names`` that this run would replace was corrected while the model ran.
    Call it with stop signals held (`clipvis.cli.distributed.signals_held`): a signal between two renames left the
    new ytvis.json beside the earlier overlay.mp4."""
    # a file corrected by hand while the model ran is not replaced either
    corrected = corrected_files(paths.directory, previous)
    refusal = replacement_refusal(paths.directory, previous, corrected, file_names)
    if refusal is not None:
        staging.discard()
        raise RefusedReplacement(refusal)
    # Listed first as clipvis' own: a kill between two renames leaves files run.json names, so the next
    # run deletes those it no longer writes (a file it did not know was kept as another's, `stale`).
    earlier, earlier_stats = set(manifest.earlier_outputs), dict(manifest.earlier_stats)
    staged = {final.name: temporary for final, temporary in staging.staged().items()}
    manifest.earlier_outputs = sorted(earlier | set(staged))
    # killed between two renames, a name holds the earlier run's file or this one's (a rename keeps its
    # size and time): either is clipvis', anything else a person's
    for name, temporary in staged.items():
        status = temporary.stat()
        manifest.earlier_stats[name] = [*earlier_stats.get(name, []),
                                        [status.st_size, status.st_mtime_ns]]
    try:
        manifest.write(paths.manifest)
        staging.commit()
    except BaseException:
        staging.discard()
        # the renames failed midway (or run.json could not list them first): the files already renamed
        # are clipvis' all the same, those never put in place are not (a user's file of that name stays)
        committed = {p.name for p in staging.committed}
        manifest.earlier_outputs = sorted(earlier | committed)
        manifest.earlier_stats = {name: pairs for name, pairs in manifest.earlier_stats.items()
                                  if name in committed or name in earlier_stats}
        raise
    return staged, corrected


def settle_stale_outputs(
    paths: VideoOutputPaths, outputs: Iterable[Path], previous: RunManifest | None, corrected: set[str]
) -> list[str]:
    """Output files of an earlier run that this run did not write (other `--formats`): deleted when the earlier
    run.json lists them as clipvis' (its outputs, or those a failed or killed run carried over) and they are as
    clipvis wrote them; returned, to be listed as stale in run.json, otherwise (one of the ``corrected`` is
    kept)."""
    written = {path.name for path in outputs}
    known = {writer.file_name for writer in create_writers(writer_formats())}
    ours = set(previous.clipvis_files) - corrected if previous is not None else set()
    stale: list[str] = []
    for name in sorted(known - written):
        path = paths.directory / name
        if not path.is_file():
            continue
        if name in ours:
            path.unlink(missing_ok=True)
        else:
            stale.append(name)
    return stale


def formats_not_written_message(not_written: dict[str, FormatLimitError], others_written: bool,
                                exact: bool = False) -> str:
    """The one line that says which formats' files `write_outputs` could not write (``not_written``) and how to
    write them with segment's own options (a track id is a rank there: `--max-tracks N` keeps ids 1..N; ``exact``:
    a run under --exact, which refuses --max-tracks); ``others_written``: the run's other files are in place."""
    grouped: dict[str, list[str]] = {}
    for name, error in not_written.items():  # one reason for the formats that share it (mots-png, mots-txt)
        grouped.setdefault(format_limit_reason(error, exact), []).append(f"{name}.zip")
    parts = [f"{_listed(names)} not written: {reason}" for reason, names in grouped.items()]
    return "; ".join(parts) + ("; the other files are written" if others_written else "")


def format_limit_reason(error: FormatLimitError, exact: bool = False) -> str:
    """Why a format's file was not written and how segment writes it (what run.json's `formats_not_written` says of
    it): a track id is a rank there, so `--max-tracks N` keeps ids 1..N. ``exact``: the run was under --exact, which
    refuses --max-tracks and --score-threshold and keeps the config's TEST.DETECTIONS_PER_IMAGE tracks: the remedy
    is that key."""
    if exact:
        kept = "--exact keeps the config's TEST.DETECTIONS_PER_IMAGE: set it"
        if error.tracks is not None:
            remedy = f"keep at most {error.tracks} tracks ({kept} to {error.tracks} or less)"
        else:
            remedy = f"segment with at most {error.classes} classes (--vocab), or keep fewer tracks ({kept} lower)"
    elif error.tracks is not None:
        remedy = f"keep at most {error.tracks} tracks (--max-tracks {error.tracks}, or a higher --score-threshold)"
    else:
        remedy = (f"segment with at most {error.classes} classes (--vocab), or keep fewer tracks (--max-tracks, a "
                  "higher --score-threshold)")
    return f"{error.problem}; {remedy}"


def _listed(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
