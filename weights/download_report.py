"""What a released checkpoint's download says while it runs: that it starts (the release, its Google Drive page, the
file in the cache), that it waits for another process' download of the file, and how far it got.

gdown says nothing itself: it is called quiet, and its progress is read through its callback, so that a caller with
a format of its own (``clipvis segment --log-format jsonl``: JSON lines only on stderr) gets every line of a download
as its own. A caller installs its `DownloadReporter` with `download_reporter`; without one, `DownloadLines` prints
the lines on stderr, the progress as a bar on a terminal.

The `weights` package stands alone: it does not use `clipvis.cli.progress`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol


class DownloadReporter(Protocol):
    """How a download's lines and progress are said."""

    # A line about the download: it starts, or waits for another process' download of the file.
    def say(self, message: str) -> None: ...
    # ``done`` bytes of ``total`` (None: not announced) of the release ``name`` are in; called for every chunk.
    def progress(self, name: str, done: int, total: int | None) -> None: ...
    # The download ended, however it ended (a bar is closed; the next download starts afresh).
    def close(self) -> None: ...


#: How often a progress line comes while a download runs without a bar (the per-minute lines of a long video's).
PROGRESS_LINE_EVERY_S = 60.0


class DownloadLines:
    """The usual `DownloadReporter`: each line goes to ``say`` (default: printed on stderr); the progress is a bar on
    stderr when ``bar`` (default: when stderr is a terminal), else a line every ``every_s`` seconds through ``say``,
    such as ``downloading clipvis-lvis-r50: 160 of 473 MB, 12.5 MB/s, 0:25 left``."""

    def __init__(
        self, say: Callable[[str], object] | None = None, *, bar: bool | None = None,
        every_s: float = PROGRESS_LINE_EVERY_S,
    ) -> None:
        self._say = say
        self._bar_wanted = bar
        self.every_s = every_s
        self._bar: Any = None
        self._started: float | None = None
        self._last_line = 0.0

    def say(self, message: str) -> None:
        if self._say is not None:
            self._say(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def progress(self, name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self._started is None:
            self._started = self._last_line = now
        if self._wants_bar():
            self._show_bar(name, done, total)
        elif now - self._last_line >= self.every_s:
            self._last_line = now
            self.say(progress_text(name, done, total, done / max(now - self._started, 1e-9)))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._started = None, None

    def _wants_bar(self) -> bool:
        if self._bar_wanted is None:
            try:
                self._bar_wanted = sys.stderr.isatty()
            except (AttributeError, ValueError):  # no stderr, or a closed one
                self._bar_wanted = False
        return self._bar_wanted

    def _show_bar(self, name: str, done: int, total: int | None) -> None:
        if self._bar is None:
            from tqdm import tqdm  # gdown's own dependency: imported when a download shows a bar

            self._bar = tqdm(total=total, desc=name, unit="B", unit_scale=True, file=sys.stderr, leave=True)
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)


def progress_text(name: str, done: int, total: int | None, rate: float) -> str:
    """``downloading NAME: 160 of 473 MB, 12.5 MB/s, 0:25 left`` (``160 MB, 12.5 MB/s`` when the size is unknown)."""
    text = f"downloading {name}: {_megabytes(done)}"
    if total:
        text += f" of {_megabytes(total)}"
    text += f" MB, {rate / 1e6:.1f} MB/s"
    if total and rate > 0:
        left = max(total - done, 0) / rate
        minutes, seconds = divmod(int(round(left)), 60)
        text += f", {minutes // 60}:{minutes % 60:02d}:{seconds:02d} left" if minutes >= 60 else \
            f", {minutes}:{seconds:02d} left"
    return text


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.0f}"


_REPORTER: ContextVar[DownloadReporter | None] = ContextVar("clipvis_download_reporter", default=None)


@contextmanager
def download_reporter(reporter: DownloadReporter) -> Iterator[DownloadReporter]:
    """Within it, what the downloads of this thread say (`resolve_weights` with ``progress``, `load_model`) goes to
    ``reporter``: the commands' ``clipvis:`` lines or JSON events."""
    token = _REPORTER.set(reporter)
    try:
        yield reporter
    finally:
        _REPORTER.reset(token)


def active_reporter() -> DownloadReporter:
    """The reporter `download_reporter` installed, else lines on stderr (`DownloadLines`)."""
    return _REPORTER.get() or DownloadLines()
