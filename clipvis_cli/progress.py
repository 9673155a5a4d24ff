"""Progress and event reporting on stderr: rich progress bars for people, JSON lines for machines."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol, TextIO

from rich.markup import escape

from clipvis.cli.inputs import VideoSource
from clipvis.cli.messages import error_line, path_text


class Reporter(Protocol):
    def batch_started(self, num_videos: int | None) -> None: ...  # None: not known in advance (torchrun ranks)
    def video_started(self, source: VideoSource, stem: str, total_frames: int | None) -> None: ...
    def frames_done(self, count: int) -> None: ...
    def video_finished(
        self, source: VideoSource, stem: str, frames: int, fps: float, outputs: list[Path]
    ) -> None: ...
    def video_skipped(self, source: VideoSource, stem: str, reason: str = ...) -> None: ...
    def video_failed(self, source: VideoSource, stem: str, message: str) -> None: ...
    def close(self) -> None: ...


SKIPPED_COMPLETE = "already complete in its output folder with the same settings (--overwrite redoes it)"


class SerializedReporter:
    """A Reporter that passes each call on to ``inner`` under a lock, so that threads may report (`segment`
    writes one video's files on a thread of its own while the next video is tracked). ``inner`` None: nothing."""

    def __init__(self, inner: Reporter | None) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        if self.inner is not None:
            with self._lock:
                getattr(self.inner, name)(*args, **kwargs)

    def batch_started(self, num_videos: int | None) -> None:
        self._call("batch_started", num_videos)

    def video_started(self, source: VideoSource, stem: str, total_frames: int | None) -> None:
        self._call("video_started", source, stem, total_frames)

    def frames_done(self, count: int) -> None:
        self._call("frames_done", count)

    def video_finished(self, source: VideoSource, stem: str, frames: int, fps: float, outputs: list[Path]) -> None:
        self._call("video_finished", source, stem, frames, fps, outputs)

    def video_skipped(self, source: VideoSource, stem: str, **kwargs: str) -> None:
        self._call("video_skipped", source, stem, **kwargs)  # the inner reporter's default reason, unless given

    def video_failed(self, source: VideoSource, stem: str, message: str) -> None:
        self._call("video_failed", source, stem, message)

    def close(self) -> None:
        self._call("close")


class JsonlReporter:
    """One JSON object per line: batch_start, video_start, progress (every `every` frames), video_done,
    video_skipped, video_failed."""

    def __init__(self, stream: TextIO | None = None, every: int = 25) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._frames = 0
        self._since = 0
        self._video: str | None = None
        self._started = time.perf_counter()

    def _emit(self, event: str, **fields: Any) -> None:
        self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        self.stream.flush()

    def batch_started(self, num_videos: int | None) -> None:
        self._emit("batch_start", videos=num_videos)

    def video_started(self, source, stem, total_frames) -> None:
        self._video, self._frames, self._since = str(source.path), 0, 0
        self._started = time.perf_counter()
        self._emit("video_start", input=path_text(source.path), stem=stem, frames_expected=total_frames)

    def frames_done(self, count: int) -> None:
        self._frames += count
        self._since += count
        if self._since >= self.every:
            self._since = 0
            fps = self._frames / max(time.perf_counter() - self._started, 1e-9)
            self._emit("progress", input=self._video, frames=self._frames, fps=round(fps, 3))

    def video_finished(self, source, stem, frames, fps, outputs) -> None:
        self._emit("video_done", input=path_text(source.path), stem=stem, frames=frames, fps=round(fps, 3),
                   outputs=[path_text(p) for p in outputs], status="ok")

    def video_skipped(self, source, stem, reason: str = SKIPPED_COMPLETE) -> None:
        self._emit("video_skipped", input=path_text(source.path), stem=stem, reason=reason)

    def video_failed(self, source, stem, message) -> None:
        self._emit("video_failed", input=path_text(source.path), stem=stem, error=message, status="failed")

    def close(self) -> None:
        pass


class HumanReporter:
    """rich progress bars (overall and per video, frames/s, ETA) on stderr when it is a terminal; failures are
    always printed as one line. User text (file names, stems) is never read as rich markup: `clip[1].mp4` or
    `a[/b]` print as they are."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        """``interactive``: progress bars (default: when the stream is a terminal)."""
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

    def batch_started(self, num_videos: int | None) -> None:
        if self.progress is not None:
            self.progress.start()
            self._overall = self.progress.add_task("videos", total=num_videos, rate="")

    def video_started(self, source, stem, total_frames) -> None:
        self._frames, self._started = 0, time.perf_counter()
        if self.progress is not None:
            if self._video_task is not None:
                self.progress.remove_task(self._video_task)
            self._video_task = self.progress.add_task(escape(path_text(stem)), total=total_frames, rate="")

    def frames_done(self, count: int) -> None:
        self._frames += count
        if self.progress is not None and self._video_task is not None:
            fps = self._frames / max(time.perf_counter() - self._started, 1e-9)
            self.progress.update(self._video_task, advance=count, rate=f"{fps:.2f} frames/s")

    def _video_ended(self) -> None:
        if self.progress is not None and self._overall is not None:
            self.progress.advance(self._overall)

    def video_finished(self, source, stem, frames, fps, outputs) -> None:
        self._video_ended()

    def video_skipped(self, source, stem, reason: str = SKIPPED_COMPLETE) -> None:
        self._video_ended()
        if self.interactive or reason != SKIPPED_COMPLETE:
            self.console.print(f"skipped {path_text(source.path)}: {reason}", markup=False, soft_wrap=True)

    def video_failed(self, source, stem, message) -> None:
        self._video_ended()
        self.console.print(error_line(message), markup=False, soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
