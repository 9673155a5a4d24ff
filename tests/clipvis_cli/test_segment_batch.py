"""A mixed batch through the real `clipvis segment` (CLI -> SegmentRunner -> writers) with a tiny random model.

discovery (files, stdin, an image folder) -> output folders per source -> background decoding -> model -> RLE ->
writers -> run.json; a bad input gives one line while the others complete; a rerun skips; other options redo.
"""

from __future__ import annotations

import gc
import json
import os
from pathlib import Path

import av
import pytest
from pycocotools.coco import COCO
from typer.testing import CliRunner

from clipvis.cli.app import app
from clipvis.cli.writers.base import WriterDefaults


def segment(weights: Path, out: Path, *inputs: str, stdin: str | None = None, extra: tuple[str, ...] = ()):
    args = ["segment", *inputs, "--vocab", "bar,sky", "--weights", str(weights), "-o", str(out), "--device", "cpu",
            "--batch-frames", "4", *extra]
    return CliRunner().invoke(app, args, input=stdin)


def test_mixed_batch_through_the_real_runner(media, tmp_path, synth, tiny_weights, isolated_cache) -> None:
    (tmp_path / "in" / "a").mkdir(parents=True)
    (tmp_path / "in" / "b").mkdir(parents=True)
    clip_a = tmp_path / "in" / "a" / "clip.mp4"
    clip_b = tmp_path / "in" / "b" / "clip.mp4"
    clip_a.write_bytes(media["h264"].read_bytes())
    clip_b.write_bytes(media["odd_mpeg4"].read_bytes())
    synth.write_images(tmp_path / "in" / "frames", ["1.png", "2.png", "10.png"])
    stdin = f"{media['audio']}\n{tmp_path / 'in' / 'frames'}\n"
    out = tmp_path / "out"
    inputs = [str(clip_a), str(clip_b), str(media["truncated_faststart"]), "-", str(tmp_path / "nope.mp4")]

    result = segment(tiny_weights, out, *inputs, stdin=stdin, extra=("--stride", "2"))
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error:")]
    assert len(errors) == 3, result.stderr
    assert "truncated or corrupt" in errors[0] and "no video stream (audio only)" in errors[1]
    assert "nope.mp4: no such file" in errors[2]
    assert "3 of 6 input(s) failed" in result.stderr
    failed = json.loads((out / "truncated_faststart" / "run.json").read_text())
    assert failed["status"] == "failed" and not (out / "truncated_faststart" / "ytvis.json").exists()
    for stem in ("clip", "clip-2", "frames"):
        assert json.loads((out / stem / "run.json").read_text())["status"] == "complete"

    ytvis = json.loads((out / "clip-2" / "ytvis.json").read_text())
    assert ytvis["videos"][0]["id"] == 2 and ytvis["videos"][0]["width"] == 97
    assert ytvis["videos"][0]["frame_indices"] == [0, 2, 4]
    assert ytvis["videos"][0]["source"] == str(clip_b)
    coco = COCO(str(out / "frames" / "coco.json"))
    assert [img["file_name"] for img in coco.loadImgs(coco.getImgIds())] == ["frames/1.png", "frames/10.png"]
    with av.open(str(out / "clip" / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6

    again = segment(tiny_weights, out, str(clip_a), str(clip_b), "-", stdin=f"{tmp_path / 'in' / 'frames'}\n",
                    extra=("--stride", "2"))
    assert again.exit_code == 0 and again.stdout == ""  # all three complete with the same settings: skipped
    redo = segment(tiny_weights, out, str(clip_a), extra=("--stride", "1", "--formats", "ytvis"))
    assert redo.exit_code == 0 and redo.stdout.strip() == str(out / "clip" / "ytvis.json")
    assert json.loads((out / "clip" / "ytvis.json").read_text())["videos"][0]["length"] == 12


class _Writer(WriterDefaults):
    """A writer that records when it ran and optionally fails."""

    def __init__(self, name: str, log: list, draws: bool = False, fail: bool = False, seconds: float = 0.0) -> None:
        self.format, self.file_name, self.draws_frames = name, f"{name}.out", draws
        self.log, self.fail, self.seconds = log, fail, seconds

    def write_video(self, path: Path, video) -> Path:
        import threading
        import time

        self.log.append((self.format, "start", threading.current_thread().name))
        time.sleep(self.seconds)
        if self.fail:
            raise OSError(f"{self.format} failed")
        path.write_text("done")
        self.log.append((self.format, "end"))
        return path


def test_a_name_read_from_stdin_keeps_its_leading_spaces_in_the_error_line(media, tmp_path, tiny_weights,
                                                                            isolated_cache, monkeypatch) -> None:
    """`printf '  clip.mp4\\n' | clipvis segment -`: the error line said `clip.mp4: no such file or directory` of a
    file that is there (the line's spaces were stripped, the name's with them); it names the input as given now."""
    monkeypatch.chdir(tmp_path)
    Path("clip.mp4").write_bytes(media["h264"].read_bytes())
    result = segment(tiny_weights, tmp_path / "out", "-", stdin="  clip.mp4\n")
    assert result.exit_code == 1, result.output
    # quoted: the spaces that make it another name than clip.mp4 show (docs: names with edge spaces are quoted)
    assert "clipvis: error: '  clip.mp4': no such file or directory" in result.stderr.splitlines(), result.stderr


def test_writers_overlap_and_a_failure_is_raised_once_all_stopped(tmp_path, monkeypatch) -> None:
    """The drawing writer runs in the caller's thread while the JSON writers run on a helper (where a CPU is left
    beside it); outputs come back in writer order; a failure on either side is raised only after the other side has
    finished."""
    import pytest

    from clipvis.cli import segment_outputs
    from clipvis.cli.segment import SegmentOptions, SegmentRunner
    from clipvis.cli.writers.layout import VideoOutputPaths

    monkeypatch.setattr(segment_outputs, "usable_cpus", lambda: 4)

    def run(writers):
        runner = SegmentRunner(None, SegmentOptions(["a"], "w"), reporter=None, writers=writers)
        timings: dict[str, float] = {}
        return runner._write_outputs(VideoOutputPaths(tmp_path), video=None, timings=timings), timings

    log: list = []
    outputs, timings = run([_Writer("ytvis", log, seconds=0.05), _Writer("coco", log),
                            _Writer("overlay", log, draws=True, seconds=0.05)])
    assert [p.name for p in outputs] == ["ytvis.out", "coco.out", "overlay.out"]
    assert set(timings) == {"write_ytvis", "write_coco", "write_overlay"}
    threads = {entry[0]: entry[2] for entry in log if entry[1] == "start"}
    assert threads["overlay"] != threads["ytvis"] == threads["coco"]  # the JSON files on the helper thread

    log.clear()
    with pytest.raises(OSError, match="ytvis failed"):  # the helper's failure, once the overlay has finished
        run([_Writer("ytvis", log, fail=True), _Writer("overlay", log, draws=True, seconds=0.1)])
    assert ("overlay", "end") in log
    log.clear()
    with pytest.raises(OSError, match="overlay failed"):  # the overlay's failure, once the JSON files are written
        run([_Writer("ytvis", log, seconds=0.1), _Writer("overlay", log, draws=True, fail=True)])
    assert ("ytvis", "end") in log
    log.clear()  # the helper finishes the file it is on and starts no other: the stopped video's files all go
    with pytest.raises(KeyboardInterrupt):  # (a Ctrl-C waited for every export format left, ~30 s on a short clip)
        run([_Writer("ytvis", log, seconds=0.2), _Writer("coco", log), _Interrupted("overlay", log, draws=True)])
    assert ("ytvis", "end") in log and not any(entry[0] == "coco" for entry in log), log


class _DrawingWriter(_Writer):
    """A drawing writer that keeps ``cpus`` CPUs busy."""

    def __init__(self, name: str, log: list, cpus: int) -> None:
        super().__init__(name, log, draws=True)
        self.cpus = cpus

    def drawing_cpus(self, info) -> int:
        return self.cpus


def test_writers_run_one_after_another_where_the_drawing_writer_keeps_every_cpu_busy(tmp_path, monkeypatch) -> None:
    """On 2 CPUs the overlay's drawing threads and encoder take them all: the JSON writers beside it slowed it by
    more than their own time, so they run after it in the same thread; with a CPU to spare they overlap."""
    import threading

    from clipvis.cli import segment_outputs
    from clipvis.cli.results import VideoInfo
    from clipvis.cli.segment import SegmentOptions, SegmentRunner
    from clipvis.cli.writers.base import SegmentedVideo
    from clipvis.cli.writers.layout import VideoOutputPaths
    from clipvis.cli.writers.overlay import OverlayVideoWriter, render_threads_for

    info = VideoInfo(1, "clip.mp4", "clip", 480, 854, 30.0, 1, [0, 1, 2, 3])
    video = SegmentedVideo(info, [], ["a"], lambda: iter(()))

    def threads_used(cpus: int, drawing: int) -> dict[str, str]:
        monkeypatch.setattr(segment_outputs, "usable_cpus", lambda: cpus)
        log: list = []
        writers = [_Writer("ytvis", log), _Writer("coco", log), _DrawingWriter("overlay", log, drawing)]
        runner = SegmentRunner(None, SegmentOptions(["a"], "w"), reporter=None, writers=writers)
        outputs = runner._write_outputs(VideoOutputPaths(tmp_path), video=video, timings={})
        assert [p.name for p in outputs] == ["ytvis.out", "coco.out", "overlay.out"]
        started = [entry[0] for entry in log if entry[1] == "start"]
        if cpus <= drawing:  # the overlay first (its frames are what the progress counts), then the JSON files
            assert started == ["overlay", "ytvis", "coco"]
        return {entry[0]: entry[2] for entry in log if entry[1] == "start"}

    here = threading.current_thread().name
    assert set(threads_used(cpus=2, drawing=3).values()) == {here}
    assert set(threads_used(cpus=3, drawing=3).values()) == {here}
    beside = threads_used(cpus=4, drawing=3)
    assert beside["overlay"] == here != beside["ytvis"] == beside["coco"]
    # the overlay keeps its drawing threads and the encoder's busy
    assert OverlayVideoWriter(render_threads=3).drawing_cpus(video.info) == 4
    assert OverlayVideoWriter().drawing_cpus(video.info) == render_threads_for(480, 854) + 1


class _Interrupted(_Writer):
    def write_video(self, path: Path, video) -> Path:
        raise KeyboardInterrupt


def test_an_image_folder_holding_its_own_output_root_runs_again(tmp_path, tiny_weights, isolated_cache) -> None:
    """`clipvis segment imgs/ -o imgs/out`: the first run made `imgs/out/`, and the second failed ("its 3 images are
    not processed: it holds a sub-folder too"). The folders clipvis writes are no sub-folder of an image folder: the
    rerun skips the input as complete, as any rerun does."""
    from .conftest import write_images

    images = tmp_path / "imgs"
    write_images(images, ["0.jpg", "1.jpg", "2.jpg"])
    first = segment(tiny_weights, images / "out", str(images))
    assert first.exit_code == 0, first.output
    assert json.loads((images / "out" / "imgs" / "run.json").read_text())["status"] == "complete"
    again = segment(tiny_weights, images / "out", str(images))
    assert again.exit_code == 0 and "warning" not in again.stderr and "error" not in again.stderr, again.output
    assert again.stdout == "" and "[1/1]" not in again.stderr  # skipped as complete: nothing run, nothing listed
    assert sorted(p.name for p in (images / "out").iterdir() if not p.name.startswith(".")) == ["imgs"]


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts the process' threads in /proc")
def test_a_long_batch_does_not_keep_decoder_threads_of_finished_videos(tmp_path, tiny_model, tiny_weights,
                                                                        isolated_cache) -> None:
    """The OS threads (FFmpeg's: decoders, scalers, the overlay's encoder) of a video are gone once it is done, in a
    `segment` batch and in a library process streaming video after video, without Python's garbage collector (which
    a process holding many objects, as one with torch does, runs seldom: 18 -> 125 threads over a batch)."""
    from clipvis.cli.streaming import VideoStream
    from clipvis.model.predictor import VideoPredictor

    from .conftest import write_bar_video

    codecs = [("libx264", "mp4"), ("mpeg4", "avi"), ("libvpx-vp9", "webm"), ("mpeg2video", "mpg")]
    videos = [write_bar_video(tmp_path / f"v{i}.{extension}", 5, codec=codec) for i, (codec, extension) in
              enumerate(codecs)]
    collecting = gc.isenabled()
    gc.disable()
    try:
        first = segment(tiny_weights, tmp_path / "out", str(videos[0]))
        assert first.exit_code == 0, first.output
        after_first = _os_threads()
        rest = segment(tiny_weights, tmp_path / "out", *map(str, videos[1:]))
        assert rest.exit_code == 0, rest.output
        assert len(list((tmp_path / "out").glob("*/overlay.mp4"))) == 4
        assert _os_threads() <= after_first + 2, "threads of finished videos are still running"

        predictor = VideoPredictor(tiny_model, ["bar"], cache_dir=tmp_path / "text")
        for video in videos[:4]:
            with VideoStream(predictor, video) as stream:
                assert sum(1 for _ in stream) == 5
                stream.finish()
        assert _os_threads() <= after_first + 2, "threads of streamed videos are still running"
    finally:
        if collecting:
            gc.enable()
