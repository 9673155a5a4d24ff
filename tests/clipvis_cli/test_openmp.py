"""clipvis.cli.openmp: the caller's OpenMP workers end before the model thread starts its own team."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from clipvis.cli import streaming
from clipvis.cli.openmp import _libgomp
from clipvis.cli.streaming import VideoStream
from clipvis.model.predictor import VideoPredictor

# Runs in a fresh process: the thread count of this one depends on the tests before.
RELEASE_SCRIPT = textwrap.dedent("""
    import os, time, torch
    from clipvis.cli.openmp import release_openmp_workers

    def threads():
        return len(os.listdir("/proc/self/task"))

    def settle(expected):
        deadline = time.monotonic() + 10
        while threads() != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        return threads()

    torch.set_num_threads(2)
    before = threads()
    x = torch.rand(1 << 22)
    (x * 2).sum()  # a parallel region: the main thread's team gets a worker
    with_team = threads()
    released = release_openmp_workers()
    after = settle(with_team - 1)
    assert torch.equal((x * 2).sum(), (x * 2).sum())  # a later region makes a new team
    print(before, with_team, released, after, threads())
""")


def test_release_ends_the_calling_threads_openmp_workers() -> None:
    if _libgomp() is None:
        pytest.skip("PyTorch here does not run on GNU OpenMP (libgomp), whose workers this releases")
    result = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    before, with_team, released, after, again = result.stdout.split()
    assert int(with_team) == int(before) + 1
    assert released == "True"
    assert int(after) == int(with_team) - 1  # the worker thread ended
    assert int(again) == int(with_team)  # and a new one serves the next parallel region


@pytest.fixture(scope="module")
def predictor(tiny_model_factory, tmp_path_factory) -> VideoPredictor:
    return VideoPredictor(tiny_model_factory("rn", num_queries=4), ["box"], cache_dir=tmp_path_factory.mktemp("text"))


def test_video_stream_releases_the_callers_workers_before_the_model_runs(predictor, monkeypatch) -> None:
    calls: list[tuple[int, int]] = []
    pushed: list[int] = []
    monkeypatch.setattr(streaming, "release_openmp_workers", lambda: calls.append((threading.get_ident(), len(pushed))))
    frames = [np.full((32, 48, 3), 40 * i, np.uint8) for i in range(3)]
    with VideoStream(predictor, frames, batch_frames=2) as stream:
        push = stream.session.push
        stream.session.push = lambda batch: (pushed.append(len(batch)), push(batch))[1]
        assert len(list(stream)) == 3
    assert calls == [(threading.get_ident(), 0)]  # once, from the caller's thread, before any push
    assert pushed == [2, 1]
