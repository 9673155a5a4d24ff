"""Stopping a training run on a signal with a checkpoint of where it stopped.

Ctrl-C (SIGINT), a scheduler's SIGTERM (SLURM's time limit or preemption, Kubernetes' pod deletion) and SIGHUP
(a closed terminal) do not end training mid-iteration: :class:`StopRequests` records the first one, the loop
finishes its iteration, every process agrees to stop at that same iteration (one all-reduce of a flag, so a signal
that reached one process stops them all together), and rank 0 saves a checkpoint with its training state there.
``clipvis train --output-dir D --resume`` then continues exactly as if nothing had happened.

A second signal a moment later (``repeat_after`` seconds: torchrun forwards the Ctrl-C its workers already got from
the terminal, milliseconds apart) stops at once without saving. Schedulers give a grace period before SIGKILL
(SLURM's ``KillWait``, Kubernetes' ``terminationGracePeriodSeconds``, torchrun's 30 s): the current iteration and
one save must fit in it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from clipvis.cli.distributed import STOP_SIGNALS


class TrainingStopped(KeyboardInterrupt):
    """Training ended early by a signal.

    ``signum``: the signal; ``checkpoint``: the checkpoint to resume from (saved at the stop when ``saved``), or
    None; ``iteration``: the last iteration completed (0-based), when known.
    """

    def __init__(self, signum: int, checkpoint: Path | None = None, iteration: int | None = None,
                 saved: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.checkpoint = checkpoint
        self.iteration = iteration
        self.saved = saved


def write_to_stderr(line: str) -> None:
    """A line straight to file descriptor 2: safe in a signal handler, which may run while the main thread is in
    the middle of writing to ``sys.stderr`` (a logging call there raised "reentrant call" errors)."""
    try:
        os.write(sys.stderr.fileno(), f"{line}\n".encode(errors="replace"))
    except (OSError, ValueError, AttributeError):  # no usable stderr (closed, captured without a descriptor)
        pass


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader ``worker_init_fn``: worker processes leave stop signals to the main process, which finishes its
    iteration and saves before it shuts them down (a terminal's Ctrl-C reaches every process of the group; a worker
    that died of it would fail the batch the main process waits for)."""
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


class StopRequests:
    """While entered (in the main thread; elsewhere it changes nothing): the first stop signal is recorded for the
    loop to act on at its next iteration boundary; one more, ``repeat_after`` seconds or later after it, raises
    :class:`TrainingStopped` at once. Inside :meth:`immediately`, a signal raises at once.

    ``announce`` is called once, with a line for the user, when the first signal arrives: from the signal handler,
    so it must not write through Python's buffered streams or logging (``write_to_stderr`` does not). ``quiet``,
    when given and true then, keeps that line back (the signal still stops): the process is being ended because
    another process of the run is gone, which the command says itself; the user sent no signal.
    """

    def __init__(self, announce: Callable[[str], None], repeat_after: float = 2.0,
                 quiet: Callable[[], bool] | None = None) -> None:
        self.announce = announce
        self.repeat_after = repeat_after
        self.quiet = quiet
        self.signum: int | None = None
        self._first_at = 0.0
        self._raise_at_once = False
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for name in STOP_SIGNALS:
                if hasattr(signal, name):
                    number = getattr(signal, name)
                    if signal.getsignal(number) is signal.SIG_IGN:  # left ignored by the parent (nohup, `cmd &`)
                        continue
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def ignore_from_now(self) -> None:
        """Stop signals are ignored from now on, also once this is left: the process ends by one already, and a
        later one (torchrun's SIGTERM to the ranks left) must not cut its line short."""
        ignore_stop_signals()
        self._previous = {number: signal.SIG_IGN for number in self._previous}

    @contextmanager
    def immediately(self) -> Iterator[None]:
        """A block that a signal interrupts at once (work that can be dropped, such as an evaluation)."""
        if self.signum is not None:
            raise TrainingStopped(self.signum)
        self._raise_at_once = True
        try:
            yield
        finally:
            self._raise_at_once = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._first_at = signum, now
            if self._raise_at_once:
                raise TrainingStopped(signum)
            if self.quiet is not None and self.quiet():
                return
            self.announce(f"{signal.Signals(signum).name}: stopping after this iteration to save a checkpoint "
                          "(once more to stop at once, without saving)")
            return
        if self._raise_at_once or now - self._first_at >= self.repeat_after:
            raise TrainingStopped(signum)
