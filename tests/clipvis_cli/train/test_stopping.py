"""Stop requests during training: the first signal is recorded, a repeat a moment later is not, a later one stops
at once, and work marked as droppable stops at once."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from clipvis.cli.train.stopping import StopRequests, TrainingStopped


def test_the_first_signal_is_recorded_a_forwarded_repeat_is_ignored_and_a_later_one_stops_at_once():
    lines: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    with StopRequests(lines.append, repeat_after=3600.0) as requests:
        os.kill(os.getpid(), signal.SIGTERM)
        assert requests.requested and requests.signum == signal.SIGTERM
        assert len(lines) == 1 and lines[0].startswith("SIGTERM: stopping after this iteration")
        os.kill(os.getpid(), signal.SIGINT)  # torchrun passing the terminal's Ctrl-C on: within repeat_after
        assert requests.signum == signal.SIGTERM and len(lines) == 1
        requests.repeat_after = 0.0
        with pytest.raises(TrainingStopped) as stopped:
            os.kill(os.getpid(), signal.SIGHUP)
        assert stopped.value.signum == signal.SIGHUP and not stopped.value.saved
    assert signal.getsignal(signal.SIGINT) is before


def test_droppable_work_is_interrupted_at_once():
    with StopRequests(lambda line: None) as requests:
        with pytest.raises(TrainingStopped), requests.immediately():
            os.kill(os.getpid(), signal.SIGINT)
        assert requests.requested
        with pytest.raises(TrainingStopped), requests.immediately():  # a stop already asked for: not even begun
            raise AssertionError("not reached")


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def enter() -> None:
        with StopRequests(lambda line: None) as requests:
            seen.append(requests._previous)

    thread = threading.Thread(target=enter)
    thread.start()
    thread.join()
    assert seen == [{}]


def test_a_signal_the_parent_left_ignored_stays_ignored():
    """`nohup clipvis train ...` or `clipvis train ... &` from a script (SIGHUP, SIGINT ignored): the run stopped on a
    hangup or a Ctrl-C meant for the shell anyway (exit 129, 130)."""
    lines: list[str] = []
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with StopRequests(lines.append) as requests:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            assert not requests.requested and lines == []
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)
