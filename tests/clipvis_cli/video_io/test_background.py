"""BackgroundDecoder (clipvis.cli.video_io.background): batches, errors, bounded memory, stopping."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from clipvis.cli.video_io import BackgroundDecoder, VideoReader, VideoReadError


def test_background_decoder_batches(media: dict[str, Path], synth) -> None:
    with BackgroundDecoder(VideoReader(media["h264"], stride=2), batch_size=4) as decoder:
        batches = list(decoder)
    assert [b.frame_indices for b in batches] == [[0, 2, 4, 6], [8, 10]]
    assert batches[0].frames.shape == (4, 48, 64, 3) and batches[0].frames.dtype == np.uint8
    assert [synth.bar_index(f) for f in batches[1].frames] == [8, 10]


def test_background_decoder_propagates_read_errors(media: dict[str, Path]) -> None:
    received = 0
    with pytest.raises(VideoReadError, match="truncated or corrupt"):
        with BackgroundDecoder(VideoReader(media["truncated_faststart"]), batch_size=8) as decoder:
            for batch in decoder:
                received += len(batch)
    assert received > 0


def test_background_decoder_propagates_other_exceptions() -> None:
    def frames():
        yield 0, np.zeros((2, 2, 3), np.uint8)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with BackgroundDecoder(frames(), batch_size=1) as decoder:
            list(decoder)


def test_background_decoder_bounds_memory_and_stops_on_early_exit() -> None:
    produced = itertools.count()
    closed = threading.Event()
    filled = threading.Event()  # the producer read every frame the bound lets it: it now waits for room
    overran = threading.Event()  # it read past the bound

    def endless():
        try:
            for index in produced:
                if index == 3 * 4 - 1:  # consumed batch + 2 queued + the one being filled, then a put that blocks
                    filled.set()
                elif index > 3 * 4:  # past that, and the one frame read ahead
                    overran.set()
                yield index, np.zeros((4, 4, 3), np.uint8)
        finally:
            closed.set()

    decoder = BackgroundDecoder(endless(), batch_size=3, max_queued_batches=2)
    with decoder:
        batches = iter(decoder)  # keep the generator alive: dropping it would stop the thread
        first = next(batches)
        assert filled.wait(10)  # the producer ran ahead as far as it may
        assert not overran.wait(0.3)  # and, given every chance, no further
        assert decoder.is_alive
        made = next(produced)
        assert first.frame_indices == [0, 1, 2]
        # consumed batch + 2 queued + 1 being filled/blocked, plus one frame read ahead
        assert made <= 3 * 4 + 1
    assert closed.wait(2.0) and not decoder.is_alive


def test_a_decoder_thread_that_cannot_start_is_the_error_said(monkeypatch) -> None:
    """A container's pids limit (or `ulimit -u`): the thread's start failed, then closing joined the thread that never
    started, and the input's error was "cannot join thread before it is started", the cause lost."""
    def refuse(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    decoder = BackgroundDecoder(iter([(0, np.zeros((4, 4, 3), np.uint8))]), batch_size=1)
    with pytest.raises(RuntimeError, match="^can't start new thread$"):
        with decoder:
            pass
    decoder.close()  # nothing to join: no error


def test_background_decoder_close_without_iterating_does_not_hang(media: dict[str, Path]) -> None:
    decoder = BackgroundDecoder(VideoReader(media["long_faststart"]), batch_size=2, max_queued_batches=1)
    with decoder:
        time.sleep(0.05)
    assert not decoder.is_alive


def test_abandoned_iteration_stops_the_thread(media: dict[str, Path]) -> None:
    decoder = BackgroundDecoder(VideoReader(media["long_faststart"]), batch_size=2, max_queued_batches=1)
    for _ in decoder:
        break  # no context manager: leaving the loop closes the generator, which stops the thread
    decoder._thread.join(2.0)
    assert not decoder.is_alive
