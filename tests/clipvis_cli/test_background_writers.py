"""`SegmentRunner(background_writers=True)`: a video's files are written while the next video goes through the
model (the default on an accelerator; forced here on the CPU). The same files, outcomes in input order, failures
kept to their input, and Ctrl-C finishes the files being written."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from clipvis.cli.inputs import VideoSource
from clipvis.cli.output_formats import create_writers
from clipvis.cli.predictor_loading import load_predictor
from clipvis.cli.segment import SegmentOptions, SegmentRunner
from clipvis.cli.writers.base import WriterDefaults


class RecordingReporter:
    """Records the events and the thread each came from; ``on_event`` (name, stem) may act on them."""

    def __init__(self, on_event=None) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.on_event = on_event

    def _record(self, name: str, stem: str) -> None:
        self.events.append((name, stem, threading.current_thread().name))
        if self.on_event is not None:
            self.on_event(name, stem)

    def batch_started(self, num_videos: int) -> None: ...
    def frames_done(self, count: int) -> None: ...
    def close(self) -> None: ...

    def video_started(self, source, stem, total_frames) -> None:
        self._record("started", stem)

    def video_finished(self, source, stem, frames, fps, outputs) -> None:
        self._record("finished", stem)

    def video_skipped(self, source, stem, reason: str = "") -> None:
        self._record("skipped", stem)

    def video_failed(self, source, stem, message) -> None:
        self._record("failed", stem)


def copies(media: dict[str, Path], folder: Path, names: dict[str, str]) -> list[VideoSource]:
    """Distinct files, one per entry ``stem: media key``: ``folder/<stem>.<ext>`` with that medium's bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for name, key in names.items():
        original = media[key]
        path = folder / f"{name}{original.suffix}"
        path.write_bytes(original.read_bytes())
        sources.append(VideoSource(path))
    return sources


TWO = {"h264_1": "h264", "h264_2": "h264"}


def runner_for(weights: Path, out: Path, background: bool, reporter, writers=None) -> SegmentRunner:
    options = SegmentOptions(["bar", "sky"], str(weights), output=out, batch_frames=4)
    return SegmentRunner(load_predictor(options), options, reporter, writers=writers, background_writers=background)


def comparable(folder: Path) -> dict[str, object]:
    """A folder's files as they must agree between runs (run.json: status, frames, outputs; coco.json: but for its
    creation date)."""
    out: dict[str, object] = {}
    for path in sorted(folder.iterdir()):
        if path.name == "run.json":
            run = json.loads(path.read_text())
            out[path.name] = (run["status"], run["frames"], [entry["file"] for entry in run["outputs"]])
        elif path.name == "coco.json":
            coco = json.loads(path.read_text())
            coco["info"].pop("date_created")
            out[path.name] = coco
        else:
            out[path.name] = path.read_bytes()
    return out


def test_background_writers_give_the_same_files_and_outcomes_in_order(media, synth, tmp_path, tiny_weights,
                                                                       isolated_cache) -> None:
    names = {"h264_a": "h264", "truncated_b": "truncated_faststart", "h264_d": "h264"}
    sources = copies(media, tmp_path / "in", names)
    long_c = synth.write_bar_video(tmp_path / "in" / "long_c.mp4", 40, faststart=True)  # 10 batches of 4 frames
    sources.insert(2, VideoSource(long_c))
    results = {}
    for background in (False, True):
        reporter = RecordingReporter()
        runner = runner_for(tiny_weights, tmp_path / f"out_{background}", background, reporter)
        assert runner.background_writers is background
        outcomes = list(runner.run_batch(sources))
        assert [(o.stem, o.status) for o in outcomes] == [
            ("h264_a", "complete"), ("truncated_b", "failed"), ("long_c", "complete"), ("h264_d", "complete")
        ]
        assert "truncated or corrupt" in outcomes[1].error
        results[background] = {o.stem: comparable(tmp_path / f"out_{background}" / o.stem) for o in outcomes}
        finished = {stem: thread for name, stem, thread in reporter.events if name == "finished"}
        if background:  # reported by the writing thread as soon as written
            assert all(thread.startswith("clipvis-finish") for thread in finished.values())
        else:
            assert set(finished.values()) == {"MainThread"}
    assert results[True] == results[False]
    assert results[True]["truncated_b"]["run.json"][0] == "failed"


def test_one_video_is_written_while_the_next_is_tracked(media, tmp_path, tiny_weights, isolated_cache) -> None:
    """The first video's writers wait until the second video's model pass has begun: without the overlap they
    would wait forever (here: time out and fail the test)."""
    second_started = threading.Event()
    reporter = RecordingReporter(lambda name, stem: name == "started" and stem == "h264_2" and second_started.set())

    class WaitingWriter(WriterDefaults):
        format, file_name, draws_frames = "wait", "wait.txt", False

        def write_video(self, path: Path, video) -> Path:
            if video.info.stem == "h264_1":
                assert second_started.wait(timeout=60), "the next video did not start while this one was written"
            path.write_text(video.info.stem)
            return path

    writers = [*create_writers(["ytvis"]), WaitingWriter()]
    runner = runner_for(tiny_weights, tmp_path / "out", True, reporter, writers=writers)
    outcomes = list(runner.run_batch(copies(media, tmp_path / "in", TWO)))
    assert [o.status for o in outcomes] == ["complete", "complete"]
    order = [(name, stem) for name, stem, _ in reporter.events]
    assert order.index(("started", "h264_2")) < order.index(("finished", "h264_1"))


def test_a_writer_failure_in_the_background_fails_only_its_video(media, tmp_path, tiny_weights,
                                                                 isolated_cache) -> None:
    class FailingWriter(WriterDefaults):
        format, file_name, draws_frames = "boom", "boom.txt", False

        def write_video(self, path: Path, video) -> Path:
            if video.info.stem == "h264_1":
                raise OSError("disk on fire")
            path.write_text("ok")
            return path

    reporter = RecordingReporter()
    runner = runner_for(tiny_weights, tmp_path / "out", True, reporter, writers=[FailingWriter()])
    outcomes = list(runner.run_batch(copies(media, tmp_path / "in", TWO)))
    assert [o.status for o in outcomes] == ["failed", "complete"]
    assert "disk on fire" in outcomes[0].error and str(tmp_path / "in" / "h264_1.mp4") in outcomes[0].error
    assert json.loads((tmp_path / "out" / "h264_1" / "run.json").read_text())["status"] == "failed"
    assert ("failed", "h264_1") in [(name, stem) for name, stem, _ in reporter.events]


def test_ctrl_c_during_the_next_video_finishes_the_files_being_written(media, tmp_path, tiny_weights,
                                                                       isolated_cache, monkeypatch) -> None:
    """Ctrl-C while the second video is tracked: the first video's files (being written meanwhile) are finished
    and its run.json says complete, and its outcome reaches the caller before KeyboardInterrupt does; the second's
    run.json says interrupted."""
    first_writing = threading.Event()
    release_first = threading.Event()

    class SlowWriter(WriterDefaults):
        format, file_name, draws_frames = "slow", "slow.txt", False

        def write_video(self, path: Path, video) -> Path:
            if video.info.stem == "h264_1":
                first_writing.set()
                assert release_first.wait(timeout=60)
            path.write_text(video.info.stem)
            return path

    runner = runner_for(tiny_weights, tmp_path / "out", True, RecordingReporter(), writers=[SlowWriter()])
    original = runner._run_model

    def interrupted_second(store, reader, source, video_id, stem, *rest):
        if stem == "h264_2":
            assert first_writing.wait(timeout=60)
            threading.Timer(0.3, release_first.set).start()  # the first video's files end after the interrupt
            raise KeyboardInterrupt
        return original(store, reader, source, video_id, stem, *rest)

    monkeypatch.setattr(runner, "_run_model", interrupted_second)
    outcomes = []
    with pytest.raises(KeyboardInterrupt):
        for outcome in runner.run_batch(copies(media, tmp_path / "in", TWO)):
            outcomes.append(outcome)
    # the first outcome, due after the second video's model pass, still comes (its paths were not printed)
    assert [(outcome.stem, outcome.status) for outcome in outcomes] == [("h264_1", "complete")]
    first = json.loads((tmp_path / "out" / "h264_1" / "run.json").read_text())
    assert first["status"] == "complete" and (tmp_path / "out" / "h264_1" / "slow.txt").read_text() == "h264_1"
    assert json.loads((tmp_path / "out" / "h264_2" / "run.json").read_text())["status"] == "interrupted"


def test_the_default_follows_the_model_device(tmp_path) -> None:
    class OnDevice:
        def __init__(self, kind: str) -> None:
            self.device = type("Device", (), {"type": kind})()

    options = SegmentOptions(["a"], "w", output=tmp_path)
    assert SegmentRunner(OnDevice("cuda"), options, None).background_writers is True
    assert SegmentRunner(OnDevice("cpu"), options, None).background_writers is False
    assert SegmentRunner(None, options, None).background_writers is False
