"""Progress and event reporting on stderr: rich progress bars for people, JSON lines for machines."""

from __future__ import annotations

import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from rich.markup import escape

from clipvis.cli.inputs import VideoSource
from clipvis.cli.messages import (
    PROGRAM,
    error_line,
    one_line,
    path_text,
    print_warning,
    shown_path,
    subject_message,
    warning_line,
)

if TYPE_CHECKING:
    from clipvis.cli.distributed import DistributedRun
    from clipvis.weights import DownloadLines


class Reporter(Protocol):
    def batch_started(self, num_videos: int | None) -> None: ...  # None: not known in advance (torchrun ranks)
    # The batch holds ``count`` more videos than it said (export: a results file holding several).
    def more_videos(self, count: int) -> None: ...
    def video_started(self, source: VideoSource, stem: str, total_frames: int | None) -> None: ...
    def frames_done(self, count: int) -> None: ...
    def video_finished(
        self, source: VideoSource, stem: str, frames: int, fps: float, outputs: list[Path]
    ) -> None: ...
    def video_skipped(self, source: VideoSource, stem: str, reason: str = ...) -> None: ...
    # `segment --skip-existing` runs an input again although an earlier run completed it: ``reason`` (one line,
    # without the input's name) says why, ``changed`` names the settings that differ (clipvis.cli.rerun); before its
    # video_started.
    def video_rerun(self, source: VideoSource, stem: str, reason: str, changed: Sequence[str] = ()) -> None: ...
    def video_failed(self, source: VideoSource, stem: str, message: str) -> None: ...
    # Ctrl-C or a stop signal ended the input in progress (``message``: by what); the batch ends next.
    def video_interrupted(self, source: VideoSource, stem: str, message: str) -> None: ...
    # A warning about the input in progress, which goes on (``message``: one line, without the input's name).
    def video_warning(self, source: VideoSource, stem: str, message: str) -> None: ...
    # A video's files are being written: called when that starts and then every second or so, with the frames the
    # overlay has drawn (``frames`` None when no writer that draws frames is at work) out of ``total`` and the formats
    # being written at that moment (``formats``, in writer order; empty from a caller of the older interface);
    # ``written``: (masks written, masks in all) of the JSON formats among them that count theirs (ytvis, coco), None
    # when none does.
    def video_writing(self, source: VideoSource, stem: str, frames: int | None, total: int | None,
                      formats: Sequence[str] = (), written: tuple[int, int] | None = None) -> None: ...
    # The batch ended: the inputs' counts ("complete", "skipped", "failed"; segment's also ALREADY_COMPLETE, those of
    # the skipped an earlier run completed) out of ``total``, and the one line that
    # says how (an error when ``error``: some failed, or interrupted), if any. ``own``: under torchrun, the counts and
    # ``total`` are this process' inputs alone (those it took), the other processes' being unknown; else the job's.
    def batch_finished(self, counts: dict[str, int], total: int, message: str | None = None,
                       error: bool = False, interrupted: bool = False, own: bool = False) -> None: ...
    # A line about the batch rather than one input, such as another process' end under torchrun or an export's
    # warning: ``level`` "error", "warning" or "note".
    def say(self, level: str, message: str) -> None: ...
    # Under torchrun, on rank 0: how many of the job's inputs all processes have ended (JobProgressReporter).
    def job_progress(self, ended: int, total: int) -> None: ...
    # Print ``line`` (an output path listed for stdout) above the live progress bars, when stdout is the terminal the
    # bars are drawn on: True. False when it did not (no bars, or stdout is elsewhere): the caller writes stdout itself.
    def above_progress(self, line: str) -> bool: ...
    def close(self) -> None: ...


SKIPPED_COMPLETE = "already complete in its output folder with the same settings (--overwrite redoes it)"
# segment's count of the inputs skipped as complete already (`--skip-existing`), beside the outcomes' counts: of the
# "skipped", those not skipped for another reason (a folder another process was writing, under torchrun)
ALREADY_COMPLETE = "already_complete"
WRITING_HEARTBEAT_S = 60.0  # a `writing` JSON event at least this often while a video's files are written


def rerun_line(source: VideoSource, reason: str) -> str:
    """``"v/one.mp4: re-running: --overlay-min-score differs from the earlier run (0.5 vs 0.3)"``."""
    return subject_message(f"re-running: {one_line(reason)}", source.path)


def known_total(done: int, expected: int | None) -> int | None:
    """``expected`` (the frame count the container told) while ``done`` has not passed it; None past it: joined
    recordings (`cat a.ts b.ts`) tell the first one's length, and the total is then unknown, not ``done`` of fewer."""
    return expected if expected is not None and done <= expected else None


def remaining_seconds(done: int, expected: int | None, fps: float) -> float | None:
    """Seconds left at ``fps`` for the ``expected - done`` frames; None when the count is unknown or no rate yet."""
    if expected is None or fps <= 0 or done <= 0:
        return None
    return max(expected - done, 0) / fps


OVERLAY_RATE_AFTER_S = 1.0  # the overlay's drawing rate is measured over at least this long before a time left is said


def overlay_seconds_left(rates: dict[str, tuple[float, int]], name: str, frames: int | None,
                         total: int | None) -> float | None:
    """The seconds the overlay of input ``name`` still takes to draw its ``total`` frames, ``frames`` drawn, at its
    rate since ``rates[name]`` (when, and at which frame, it was first seen drawing: recorded here); None while it
    is not drawing, or has drawn for less than ``OVERLAY_RATE_AFTER_S``. The formats written after it are not in it."""
    if frames is None or total is None:
        return None
    now = time.monotonic()
    since, first = rates.setdefault(name, (now, frames))
    if now - since < OVERLAY_RATE_AFTER_S or frames <= first:
        return None
    return max(total - frames, 0) / ((frames - first) / (now - since))


def formats_seconds_left(rates: dict[str, dict[str, tuple[float, int]]], name: str, formats: Sequence[str],
                         written: tuple[int, int] | None) -> float | None:
    """The seconds the JSON formats being written (``formats``) of input ``name`` still take, ``written`` = (masks
    written, masks in all), at their rate since first seen (``overlay_seconds_left``'s rule, per set of formats:
    each starts its count at 0); None without a count or before a second of writing."""
    if written is None or not formats:
        return None
    return overlay_seconds_left(rates.setdefault(name, {}), ",".join(formats), *written)


def writing_text(frames: int | None, total: int | None, formats: Sequence[str]) -> str:
    """What a video's writing is at: ``"writing outputs, overlay frame 1200/4500"`` while the overlay draws, and
    ``"writing cvat-video"`` (the formats being written) once it has drawn them all (``frames`` None)."""
    if frames is not None:
        return f"writing outputs, overlay frame {frames}/{total or '?'}"
    return f"writing {', '.join(formats)}" if formats else "writing outputs"


def duration_text(seconds: float) -> str:
    """``"0:42"``, ``"3:56"``, ``"1:02:03"``."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _takes(method: Callable[..., Any] | None, name: str) -> bool:
    """Whether ``method`` (None: there is none) takes a keyword argument ``name``."""
    if method is None:
        return False
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature Python can read: assume the newer interface
        return True
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class SerializedReporter:
    """A Reporter that passes each call on to ``inner`` under a lock, so that threads may report (`segment`
    writes one video's files on a thread of its own while the next video is tracked). ``inner`` None: nothing."""

    def __init__(self, inner: Reporter | None) -> None:
        self.inner = inner
        self._lock = threading.Lock()
        # a reporter of an older interface: video_writing without ``formats``
        self._writing_takes_formats = _takes(getattr(inner, "video_writing", None), "formats")
        self._writing_takes_written = _takes(getattr(inner, "video_writing", None), "written")

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        if self.inner is not None:
            with self._lock:
                method = getattr(self.inner, name, None)
                if method is not None:  # a reporter of an older interface lacks the later calls
                    method(*args, **kwargs)

    def batch_started(self, num_videos: int | None) -> None:
        self._call("batch_started", num_videos)

    def more_videos(self, count: int) -> None:
        self._call("more_videos", count)

    def video_started(self, source: VideoSource, stem: str, total_frames: int | None) -> None:
        self._call("video_started", source, stem, total_frames)

    def frames_done(self, count: int) -> None:
        self._call("frames_done", count)

    def video_finished(self, source: VideoSource, stem: str, frames: int, fps: float, outputs: list[Path]) -> None:
        self._call("video_finished", source, stem, frames, fps, outputs)

    def video_skipped(self, source: VideoSource, stem: str, **kwargs: str) -> None:
        self._call("video_skipped", source, stem, **kwargs)  # the inner reporter's default reason, unless given

    def video_rerun(self, source: VideoSource, stem: str, reason: str, changed: Sequence[str] = ()) -> None:
        if self.inner is not None and not hasattr(self.inner, "video_rerun"):  # a reporter of an older interface
            self._call("say", "note", rerun_line(source, reason))
        else:
            self._call("video_rerun", source, stem, reason, tuple(changed))

    def video_failed(self, source: VideoSource, stem: str, message: str) -> None:
        self._call("video_failed", source, stem, message)

    def video_interrupted(self, source: VideoSource, stem: str, message: str) -> None:
        self._call("video_interrupted", source, stem, message)

    def video_warning(self, source: VideoSource, stem: str, message: str) -> None:
        if self.inner is not None and not hasattr(self.inner, "video_warning"):  # a reporter of an older interface
            self._call("say", "warning", subject_message(message, source.path))
        else:
            self._call("video_warning", source, stem, message)

    def video_writing(self, source: VideoSource, stem: str, frames: int | None, total: int | None,
                      formats: Sequence[str] = (), written: tuple[int, int] | None = None) -> None:
        if self.inner is not None and not self._writing_takes_formats:
            self._call("video_writing", source, stem, frames, total)  # a reporter of an older interface
        elif self.inner is not None and not self._writing_takes_written:
            self._call("video_writing", source, stem, frames, total, formats=tuple(formats))
        else:
            self._call("video_writing", source, stem, frames, total, formats=tuple(formats), written=written)

    def batch_finished(self, counts: dict[str, int], total: int, message: str | None = None,
                       error: bool = False, interrupted: bool = False, own: bool = False) -> None:
        self._call("batch_finished", counts, total, message, error, interrupted, own)

    def say(self, level: str, message: str) -> None:
        self._call("say", level, message)

    def job_progress(self, ended: int, total: int) -> None:
        self._call("job_progress", ended, total)

    def above_progress(self, line: str) -> bool:
        if self.inner is None or getattr(self.inner, "above_progress", None) is None:  # an older interface
            return False
        with self._lock:
            return bool(self.inner.above_progress(line))

    def close(self) -> None:
        self._call("close")


class JsonlReporter:
    """One JSON object per line, and nothing else on stderr while a batch runs: batch_start, video_start, progress
    (every `every` frames, with `frames_expected` and `eta_s` when the frame count is known), writing (while a
    video's files are written, `overlay_eta_s` the overlay's time left while it draws: at their start, then on a
    call (segment makes one a second, and one as a format starts
    or ends) that finds `every` more overlay frames drawn than the last event said, other formats being written, or
    a minute gone since it), video_done,
    video_skipped, video_rerun (an input an earlier run completed runs again: why), video_failed, video_interrupted,
    video_warning (about one input, which goes on), error / warning /
    note (a line about the batch, not one input),
    summary (the batch's end); under torchrun, on rank 0, job_progress (the job's inputs ended over all processes,
    whenever that changes)."""

    def __init__(self, stream: TextIO | None = None, every: int = 25, rank: int | None = None) -> None:
        """``rank``: under torchrun, this process' rank, added to every event (the ranks share torchrun's stderr)."""
        self.stream = stream or sys.stderr
        self.every = every
        self.rank = rank
        self._frames = 0
        self._since = 0
        self._video: str | None = None
        self._started = time.perf_counter()
        self._expected: int | None = None
        self._job: tuple[int, int] | None = None
        # input -> when, at which overlay frame and mask and with which formats it last said so
        self._writing: dict[str, tuple[float, int | None, int | None, list[str]]] = {}
        self._writing_rates: dict[str, tuple[float, int]] = {}  # input -> when and at which frame the overlay drew
        # input -> formats being written -> when and at which mask they were first seen writing
        self._formats_rates: dict[str, dict[str, tuple[float, int]]] = {}

    def _emit(self, event: str, **fields: Any) -> None:
        if self.rank is not None:
            fields["rank"] = self.rank
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()

    def batch_started(self, num_videos: int | None) -> None:
        self._emit("batch_start", videos=num_videos)

    def more_videos(self, count: int) -> None:
        self._emit("batch_more", videos=count)

    def video_started(self, source: VideoSource, stem: str, total_frames: int | None) -> None:
        self._video, self._frames, self._since = path_text(source.path), 0, 0
        self._started, self._expected = time.perf_counter(), total_frames
        self._emit("video_start", input=path_text(source.path), stem=stem, frames_expected=total_frames)

    def frames_done(self, count: int) -> None:
        self._frames += count
        self._since += count
        if self._since >= self.every:
            self._since = 0
            fps = self._frames / max(time.perf_counter() - self._started, 1e-9)
            expected = known_total(self._frames, self._expected)
            eta = remaining_seconds(self._frames, expected, fps)
            self._emit("progress", input=self._video, frames=self._frames, fps=round(fps, 3),
                       frames_expected=expected, eta_s=None if eta is None else round(eta, 1))

    def video_writing(self, source: VideoSource, stem: str, frames: int | None, total: int | None,
                      formats: Sequence[str] = (), written: tuple[int, int] | None = None) -> None:
        name, now, formats = path_text(source.path), time.monotonic(), list(formats)
        formats_left = formats_seconds_left(self._formats_rates, name, formats, written)  # measured on every call
        last = self._writing.get(name)
        masks = written[0] if written is not None else None
        if last is not None:
            when, at, at_mask, before = last
            moved = frames is not None and at is not None and frames - at >= self.every
            # the JSON formats after the overlay: as often, counting masks written as it counts frames drawn
            # (the writer's first count after its start, reported before it counted, moves it too)
            moved = moved or (masks is not None and (at_mask is None or masks - at_mask >= self.every))
            if not moved and formats == before and now - when < WRITING_HEARTBEAT_S:
                return
        self._writing[name] = (now, frames, masks, formats)
        left = overlay_seconds_left(self._writing_rates, name, frames, total)
        self._emit("writing", input=name, stem=stem, frames=frames, frames_expected=total, formats=formats,
                   overlay_eta_s=None if left is None else round(left, 1),
                   formats_eta_s=None if formats_left is None else round(formats_left, 1))

    def video_finished(self, source: VideoSource, stem: str, frames: int, fps: float, outputs: list[Path]) -> None:
        self._writing.pop(path_text(source.path), None)
        self._writing_rates.pop(path_text(source.path), None)
        self._formats_rates.pop(path_text(source.path), None)
        # fps: null where no model ran (export)
        self._emit("video_done", input=path_text(source.path), stem=stem, frames=frames,
                   fps=round(fps, 3) if fps > 0 else None,
                   outputs=[path_text(p) for p in outputs], status="ok")

    def video_skipped(self, source: VideoSource, stem: str, reason: str = SKIPPED_COMPLETE) -> None:
        self._emit("video_skipped", input=path_text(source.path), stem=stem, reason=reason)

    def video_rerun(self, source: VideoSource, stem: str, reason: str, changed: Sequence[str] = ()) -> None:
        self._emit("video_rerun", input=path_text(source.path), stem=stem, reason=one_line(reason),
                   changed=list(changed))

    def video_failed(self, source: VideoSource, stem: str, message: str) -> None:
        self._writing.pop(path_text(source.path), None)
        self._writing_rates.pop(path_text(source.path), None)
        self._formats_rates.pop(path_text(source.path), None)
        self._emit("video_failed", input=path_text(source.path), stem=stem, error=message, status="failed")

    def video_interrupted(self, source: VideoSource, stem: str, message: str) -> None:
        self._writing.pop(path_text(source.path), None)
        self._writing_rates.pop(path_text(source.path), None)
        self._formats_rates.pop(path_text(source.path), None)
        self._emit("video_interrupted", input=path_text(source.path), stem=stem, error=message,
                   status="interrupted")

    def video_warning(self, source: VideoSource, stem: str, message: str) -> None:
        self._emit("video_warning", input=path_text(source.path), stem=stem, message=one_line(message))

    def batch_finished(self, counts: dict[str, int], total: int, message: str | None = None,
                       error: bool = False, interrupted: bool = False, own: bool = False) -> None:
        # a summary of this process' own inputs comes only when the job did not end together: never "ok"
        status = "interrupted" if interrupted else "failed" if error or own or counts.get("failed") else "ok"
        fields = {key: counts.get(key, 0) for key in ("complete", "skipped", "failed")}
        if ALREADY_COMPLETE in counts:  # segment's (export skips nothing)
            fields[ALREADY_COMPLETE] = counts[ALREADY_COMPLETE]
        self._emit("summary", inputs=total, **fields, scope="process" if own else "job", status=status,
                   message=message)

    def say(self, level: str, message: str) -> None:
        self._emit(level, message=one_line(message))

    def job_progress(self, ended: int, total: int) -> None:
        if self._job != (ended, total):
            self._job = (ended, total)
            self._emit("job_progress", ended=ended, total=total)

    def above_progress(self, line: str) -> bool:
        return False  # no live display: stdout is written as it is

    def close(self) -> None:
        pass


class HumanReporter:
    """rich progress bars (overall and per video, frames/s, ETA) on stderr when it is a terminal; failures are
    always printed as one line. User text (file names, stems) is never read as rich markup: `clip[1].mp4` or
    `a[/b]` print as they are. The overall bar counts this process' inputs, or, once ``job_progress`` is called
    (torchrun, rank 0), the whole job's.

    Without a terminal (a SLURM or nohup log, a pipeline) and with ``log_lines``, plain lines take the bars' place:
    one per input ended (``clipvis: [3/40] clip.mp4: 120 frames, 6.80 frames/s``), one every ``log_every`` seconds
    while a long video runs (with its ETA when its frame count is known) and while its files are written
    (``clip.mp4: writing outputs, overlay frame 1200/4500``; ``writing cvat-video``, the format being written, once
    the overlay is drawn), and under torchrun, instead of the per-input lines, the
    job's count at most every ``log_every`` seconds and when the last input ended."""

    def __init__(
        self,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        log_lines: bool = True,
        log_every: float = 60.0,
    ) -> None:
        """``interactive``: progress bars (default: when the stream is a terminal). ``log_lines``: the plain lines
        when not interactive."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.stream = stream or sys.stderr
        self.console = Console(file=self.stream, highlight=False)
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.log_lines = log_lines and not self.interactive
        self.log_every = log_every
        self.progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            if self.interactive
            else None
        )
        self._overall = None
        self._video_task = None
        self._frames = 0
        self._started = time.perf_counter()
        self._job_wide = False  # the overall count is the job's inputs (job_progress), not this process' own
        self._batch_size: int | None = None
        self._ended = 0  # this process' inputs ended
        self._video: str = ""
        self._video_frames: int | None = None
        self._last_line = time.monotonic()  # of the current video's progress lines
        self._job_line: tuple[float, tuple[int, int]] | None = None  # when and what the last job line said
        self._writing: dict[str, float] = {}  # input whose files are being written -> when its last line came
        self._writing_rates: dict[str, tuple[float, int]] = {}  # input -> when and at which frame the overlay drew
        # input -> formats being written -> when and at which mask they were first seen writing
        self._formats_rates: dict[str, dict[str, tuple[float, int]]] = {}

    def _line(self, text: str) -> None:
        self.console.print(f"clipvis: {text}", markup=False, soft_wrap=True)

    def batch_started(self, num_videos: int | None) -> None:
        self._batch_size = num_videos
        if self.progress is not None:
            self.progress.start()
            self._overall = self.progress.add_task("videos", total=num_videos, rate="")

    def more_videos(self, count: int) -> None:
        if self._batch_size is None:
            return
        self._batch_size += count
        if self.progress is not None and self._overall is not None:
            self.progress.update(self._overall, total=self._batch_size)

    def video_started(self, source: VideoSource, stem: str, total_frames: int | None) -> None:
        self._frames, self._started = 0, time.perf_counter()
        self._video, self._video_frames, self._last_line = shown_path(source.path), total_frames, time.monotonic()
        if self.progress is not None:
            if self._video_task is not None:
                self.progress.remove_task(self._video_task)
            self._video_task = self.progress.add_task(escape(shown_path(stem)), total=total_frames, rate="")

    def frames_done(self, count: int) -> None:
        self._frames += count
        fps = self._frames / max(time.perf_counter() - self._started, 1e-9)
        expected = known_total(self._frames, self._video_frames)
        if self.progress is not None and self._video_task is not None:
            if expected is None and self._video_frames is not None:  # past the container's count: unknown from now
                self._video_frames = None
                for task in self.progress.tasks:  # rich's update() takes total=None for "unchanged": set directly
                    if task.id == self._video_task:
                        task.total = None
            self.progress.update(self._video_task, advance=count, rate=f"{fps:.2f} frames/s")
        if self.log_lines and time.monotonic() - self._last_line >= self.log_every:
            self._last_line = time.monotonic()
            eta = remaining_seconds(self._frames, expected, fps)
            left = f", ETA {duration_text(eta)}" if eta is not None else ""
            self._line(f"{self._video}: {self._frames}/{expected or '?'} frames, {fps:.2f} frames/s{left}")

    def video_writing(self, source: VideoSource, stem: str, frames: int | None, total: int | None,
                      formats: Sequence[str] = (), written: tuple[int, int] | None = None) -> None:
        if not self.log_lines:
            return
        name, now = shown_path(source.path), time.monotonic()
        left = overlay_seconds_left(self._writing_rates, name, frames, total)
        formats_left = formats_seconds_left(self._formats_rates, name, formats, written)
        if name not in self._writing:  # writing starts: a line once it has taken `log_every`
            self._writing[name] = now
        elif now - self._writing[name] >= self.log_every:
            self._writing[name] = now
            eta = f", overlay ETA {duration_text(left)}" if left is not None else ""
            if left is None and frames is None and formats_left is not None:  # the overlay drawn (or none)
                eta = f", ETA {duration_text(formats_left)}"
            self._line(f"{name}: {writing_text(frames, total, formats)}{eta}")

    def _video_ended(self) -> str:
        """Count an input as ended; ``"[k/N] "`` for its line."""
        self._ended += 1
        if self.progress is not None and self._overall is not None and not self._job_wide:
            self.progress.advance(self._overall)
        return f"[{self._ended}/{self._batch_size or '?'}] "

    def video_finished(self, source: VideoSource, stem: str, frames: int, fps: float, outputs: list[Path]) -> None:
        self._writing.pop(shown_path(source.path), None)
        self._writing_rates.pop(shown_path(source.path), None)
        self._formats_rates.pop(shown_path(source.path), None)
        count = self._video_ended()
        if self.log_lines and not self._job_wide:
            rate = f", {fps:.2f} frames/s" if fps > 0 else ""
            self._line(f"{count}{shown_path(source.path)}: {frames} frames{rate}")

    def video_skipped(self, source: VideoSource, stem: str, reason: str = SKIPPED_COMPLETE) -> None:
        self._video_ended()  # counted in the next line; a rerun's log does not list what was complete already
        if self.interactive or reason != SKIPPED_COMPLETE:
            self.console.print(f"skipped {shown_path(source.path)}: {reason}", markup=False, soft_wrap=True)

    def video_rerun(self, source: VideoSource, stem: str, reason: str, changed: Sequence[str] = ()) -> None:
        self.console.print(f"{PROGRAM}: {rerun_line(source, reason)}", markup=False, soft_wrap=True)

    def video_failed(self, source: VideoSource, stem: str, message: str) -> None:
        self._writing.pop(shown_path(source.path), None)
        self._writing_rates.pop(shown_path(source.path), None)
        self._formats_rates.pop(shown_path(source.path), None)
        self._video_ended()
        self.console.print(error_line(message), markup=False, soft_wrap=True)

    def video_interrupted(self, source: VideoSource, stem: str, message: str) -> None:
        pass  # the batch's end says it: `clipvis: error: interrupted; ...`

    def video_warning(self, source: VideoSource, stem: str, message: str) -> None:
        self.console.print(warning_line(subject_message(message, source.path)), markup=False, soft_wrap=True)

    def batch_finished(self, counts: dict[str, int], total: int, message: str | None = None,
                       error: bool = False, interrupted: bool = False, own: bool = False) -> None:
        if message is not None:
            self.console.print(error_line(message) if error else f"clipvis: {message}", markup=False, soft_wrap=True)

    def say(self, level: str, message: str) -> None:
        line = {"error": error_line, "warning": warning_line}.get(level, lambda text: f"clipvis: {one_line(text)}")
        self.console.print(line(message), markup=False, soft_wrap=True)

    def job_progress(self, ended: int, total: int) -> None:
        self._job_wide = True
        if self.progress is not None and self._overall is not None:
            self.progress.update(self._overall, description="videos, all processes", completed=ended, total=total)
        if not self.log_lines or (self._job_line is not None and self._job_line[1] == (ended, total)):
            return
        now = time.monotonic()
        if ended >= total or self._job_line is None or now - self._job_line[0] >= self.log_every:
            self._job_line = (now, (ended, total))
            self._line(f"{ended}/{total} input(s) ended over all processes")

    def above_progress(self, line: str) -> bool:
        """While the bars are live on the terminal that stdout also writes to (a command run in a terminal), a line
        written to stdout would land on the bars' last line and be erased by their next redraw: ``line`` is printed
        through the live display instead, on a line of its own above the bars (as rich's own stdout redirection
        does). Anywhere else (stdout a file or a pipe, no bars) stdout keeps its bytes: False."""
        if self.progress is None or not self.progress.live.is_started or not _same_terminal(sys.stdout, self.stream):
            return False
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        return True

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _same_terminal(first: TextIO, second: TextIO) -> bool:
    """Whether both streams write to one terminal device (not a file, not a pipe, not two terminals)."""
    try:
        if not first.isatty() or not second.isatty():
            return False
        return os.path.samestat(os.fstat(first.fileno()), os.fstat(second.fileno()))
    except (AttributeError, OSError, ValueError):  # a stream without a file (a test's capture), or closed
        return False


def download_lines(log_format: str = "human", rank: int | None = None) -> DownloadLines:
    """What a released checkpoint's download says while the weights load (before any input runs): ``clipvis:``
    lines, its progress as a bar on a terminal, else a line a minute; with ``--log-format jsonl``, ``note`` events
    (with ``rank`` under torchrun), stderr holding JSON lines only (gdown says nothing itself: clipvis.weights)."""
    from clipvis.weights import DownloadLines

    if log_format == "jsonl":
        events = JsonlReporter(rank=rank)
        return DownloadLines(lambda message: events.say("note", message), bar=False)

    def line(message: str) -> None:
        import typer  # typer.echo also reaches the streams of typer's CliRunner

        typer.echo(f"{PROGRAM}: {one_line(message)}", err=True)

    return DownloadLines(line)


class JobProgress(Protocol):
    """The job-wide input counts of a torchrun job (clipvis.cli.distributed.DistributedRun)."""

    @property
    def is_main(self) -> bool: ...
    def input_ended(self) -> tuple[int, int]: ...
    def inputs_ended(self) -> tuple[int, int] | None: ...


class JobProgressReporter(SerializedReporter):
    """Under torchrun: ``inner`` plus the job's progress over all processes.

    Every rank counts each input it ends (complete, skipped, failed) in the job's counter (``input_ended``). On rank 0
    ``inner`` also gets ``job_progress(ended, total)``: at once for rank 0's own inputs, and from a thread every
    ``interval`` seconds for the other ranks', also while rank 0 waits for them at the end, until every input ended or
    the reporter is closed. ``inner`` is called under a lock (the thread and the runner's calls).
    """

    def __init__(self, inner: Reporter, job: JobProgress, interval: float = 1.0) -> None:
        super().__init__(inner)
        self.job = job
        self.interval = interval
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._shown = -1  # the highest count passed on: a count read earlier but passed later is not shown

    def _pass_on(self, ended: int, total: int) -> None:
        """Show ``ended`` unless a higher count was shown already (the runner and the thread read the store
        unlocked, so their reads can reach the lock in the other order)."""
        with self._lock:
            if ended < self._shown:
                return
            self._shown = ended
            self.inner.job_progress(ended, total)

    def _ended(self) -> None:
        """One of this rank's inputs ended: count it, and on rank 0 show the job's count at once."""
        counts = self.job.input_ended()
        if self.job.is_main:
            self._pass_on(*counts)

    def _show_job(self) -> bool:
        """Rank 0: pass the job's counts on to ``inner``; True once every input ended."""
        counts = self.job.inputs_ended()
        if counts is None:
            return False
        self._pass_on(*counts)
        return counts[0] >= counts[1]

    def _watch(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                if self._show_job():
                    return
        except Exception:  # noqa: BLE001 - the job's store went away (the job is ending): the display stops
            return

    def batch_started(self, num_videos: int | None) -> None:
        super().batch_started(num_videos)
        if self.job.is_main and self._watcher is None:
            if self._show_job():
                return
            self._watcher = threading.Thread(target=self._watch, name="clipvis-job-progress", daemon=True)
            self._watcher.start()

    def video_finished(self, source: VideoSource, stem: str, frames: int, fps: float, outputs: list[Path]) -> None:
        super().video_finished(source, stem, frames, fps, outputs)
        self._ended()

    def video_skipped(self, source: VideoSource, stem: str, **kwargs: str) -> None:
        super().video_skipped(source, stem, **kwargs)
        self._ended()

    def video_failed(self, source: VideoSource, stem: str, message: str) -> None:
        super().video_failed(source, stem, message)
        self._ended()

    def close(self) -> None:
        """Stop the thread; on rank 0 show the job's last counts first (the job's store may be gone: then not)."""
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
            try:
                self._show_job()
            except Exception:  # noqa: BLE001 - see _watch
                pass
        super().close()


def human_reporter(job: DistributedRun | None) -> HumanReporter:
    """Progress bars on a terminal, plain progress lines in a log; under torchrun only rank 0's, of the whole job
    (the others print their one-line errors)."""
    return HumanReporter() if job is None or job.is_main else HumanReporter(interactive=False, log_lines=False)


def make_reporter(log_format: str, job: DistributedRun | None) -> Reporter:
    """The ``--log-format`` reporter; under torchrun it also counts the job's progress, which rank 0 shows (its
    overall bar, or ``job_progress`` lines) until every rank is done."""
    if log_format == "jsonl":
        reporter: Reporter = JsonlReporter(rank=job.rank if job is not None else None)
    else:
        reporter = human_reporter(job)
    return reporter if job is None else JobProgressReporter(reporter, job)


def warning_sayer(log_format: str, job: DistributedRun | None = None) -> Callable[[str], None]:
    """How a warning is said before the run's reporter exists: a `clipvis: warning:` line, or with ``--log-format
    jsonl`` a `warning` event (stderr holds JSON lines only)."""
    if log_format == "jsonl":
        events = JsonlReporter(rank=job.rank if job is not None else None)
        return lambda message: events.say("warning", message)
    return print_warning
