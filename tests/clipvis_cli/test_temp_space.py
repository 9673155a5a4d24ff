"""The early warning that a long video's temporary files (masks, scores) will not fit in their folder
(clipvis.cli.temp_space): projected from the frames so far, said once per video, in `segment`'s output."""

from __future__ import annotations

import inspect
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from clipvis.cli import temp_space
from clipvis.cli.inputs import VideoSource
from clipvis.cli.mask_store import INDEX_MEMORY_BYTES, TrackMaskStore
from clipvis.cli.predictor_loading import load_predictor
from clipvis.cli.progress import HumanReporter, JsonlReporter
from clipvis.cli.segment import SegmentOptions, SegmentRunner
from clipvis.cli.temp_space import (
    CHECK_EVERY_FRAMES,
    FIRST_CHECK_FRAMES,
    SCORES_IN_MEMORY_BYTES,
    OutputProjection,
    TemporarySpaceWatch,
    size_text,
)

GB = 10**9


def watch(expected: int | None, free: int | None) -> TemporarySpaceWatch:
    return TemporarySpaceWatch("/scratch/tmp", expected, free=lambda _directory: free)


def test_masks_projected_past_the_free_space_warn_once_naming_the_folder_and_sizes() -> None:
    space = watch(expected=216_000, free=20 * GB)
    # 300 KB of masks per frame: 64.8 GB for the video, 64.7 GB still to come
    message = space.update(FIRST_CHECK_FRAMES, FIRST_CHECK_FRAMES * 300_000, 1, 0)
    assert message is not None
    assert "/scratch/tmp" in message and "TMPDIR" in message
    assert "64.8 GB" in message and "20.0 GB are free" in message and "last frame (216000)" in message
    assert "\n" not in message
    assert space.update(CHECK_EVERY_FRAMES, CHECK_EVERY_FRAMES * 300_000, 1, 0) is None  # said once


def test_no_warning_where_the_files_fit() -> None:
    space = watch(expected=216_000, free=70 * GB)
    for frames in (FIRST_CHECK_FRAMES, CHECK_EVERY_FRAMES, 50 * CHECK_EVERY_FRAMES):
        assert space.update(frames, frames * 300_000, 1, 0) is None


def test_what_is_written_already_does_not_count_against_the_free_space() -> None:
    # 10 GB written of a 20 GB total, 11 GB free: the 10 GB to come fit
    frames = 25 * CHECK_EVERY_FRAMES
    assert watch(expected=2 * frames, free=11 * GB).update(frames, 10 * GB, 1, 0) is None
    assert watch(expected=2 * frames, free=9 * GB).update(frames, 10 * GB, 1, 0) is not None


def test_scores_past_their_memory_budget_all_go_to_the_disk() -> None:
    # LVIS's 1,203 classes, 100 queries: 482,400 bytes of scores per frame, 104 GB for 2 hours at 30 frames/s
    # (and the masks' index past 16 MiB: 86 MB more)
    lvis = (100, 1203)
    assert watch(expected=216_000, free=104 * GB).update(FIRST_CHECK_FRAMES, 0, *lvis) is not None
    assert watch(expected=216_000, free=105 * GB).update(FIRST_CHECK_FRAMES, 0, *lvis) is None
    # a short video's scores stay in memory: nothing reaches the disk (257 frames x 241,200 bytes: 62 MB)
    assert watch(expected=FIRST_CHECK_FRAMES + 1, free=0).update(FIRST_CHECK_FRAMES, 0, 100, 600) is None
    # just past the budget the file takes all of them at once, those held in memory included (FrameSpill's flush):
    # 350 frames x 200,600 bytes = 70.2 MB to come against 16 MB free (a hunter's tmpfs)
    assert watch(expected=350, free=16_300_000).update(FIRST_CHECK_FRAMES, 4_668_329, 50, 1000) is not None


def test_the_masks_index_past_its_memory_budget_counts() -> None:
    # 100 queries, 2 hours: 1 KB of strings a frame (216 MB), 1.2 KB of scores (259 MB), and 86.4 MB of index, of
    # which 16 MiB stay in memory: 545 MB in all, 475 MB without the index
    frames = FIRST_CHECK_FRAMES
    assert watch(expected=216_000, free=550 * 10**6).update(frames, frames * 1000, 100, 0) is None
    assert watch(expected=216_000, free=500 * 10**6).update(frames, frames * 1000, 100, 0) is not None
    # Later, the index written so far is in the masks' file: it is not projected at the masks' rate as well (at
    # frame 61,440 of 216,000: 61.4 MB of strings and 7.8 MB of index written; to come 154.6 MB of strings, 61.8 MB
    # of index and 252.6 MB of scores, 469.0 MB; with the index counted twice, 488.6 MB)
    frames = 15 * CHECK_EVERY_FRAMES
    index_written = 4 * 100 * frames - INDEX_MEMORY_BYTES
    written = frames * 1000 + index_written
    assert watch(expected=216_000, free=470 * 10**6).update(frames, written, 100, 0) is None
    assert watch(expected=216_000, free=468 * 10**6).update(frames, written, 100, 0) is not None


def test_the_budgets_are_those_of_the_stores() -> None:
    from clipvis.model.scoring import StreamingVideoScorer

    scorer = StreamingVideoScorer()
    assert scorer._frames.budget == SCORES_IN_MEMORY_BYTES
    assert inspect.signature(TrackMaskStore).parameters["index_memory_bytes"].default == INDEX_MEMORY_BYTES


def test_the_projection_matches_what_the_scores_file_takes(tmp_path: Path) -> None:
    """FrameSpill's file, past its budget, holds every frame's scores: the projection counts that much."""
    from clipvis.model.scoring import FrameSpill

    spill = FrameSpill(memory_budget_bytes=10_000, directory=str(tmp_path))
    frame = np.zeros((5, 7 + 3), np.float32)  # 5 queries, 7 classes: 200 bytes a frame
    for _ in range(120):
        spill.append(frame)
    spill.read()
    on_disk = spill._file.seek(0, 2)
    spill.close()
    assert on_disk == 120 * 4 * 5 * (7 + 3)


@pytest.mark.parametrize("frames", [1, FIRST_CHECK_FRAMES - 1, FIRST_CHECK_FRAMES + 1, CHECK_EVERY_FRAMES + 1])
def test_checked_only_at_the_first_check_and_then_every_few_thousand_frames(frames: int) -> None:
    assert watch(expected=10**6, free=0).update(frames, frames * 10**6, 1, 0) is None


def test_nothing_checked_when_the_length_or_the_free_space_is_unknown() -> None:
    assert watch(expected=None, free=0).update(FIRST_CHECK_FRAMES, 10**12, 100, 1000) is None
    assert watch(expected=10**6, free=None).update(FIRST_CHECK_FRAMES, 10**12, 100, 1000) is None


def test_size_text() -> None:
    assert [size_text(v) for v in (512, 2.5e6, 64.84e9, 104.2e9, 1.2e12)] == [
        "1 KB", "2.5 MB", "64.8 GB", "104 GB", "1.2 TB"]


class WarningReporter:
    """Records the warnings about one input (SegmentRunner passes on only the calls a reporter has)."""

    def __init__(self) -> None:
        self.warnings: list[tuple[str, str]] = []

    def video_warning(self, source, stem: str, message: str) -> None:
        self.warnings.append((stem, message))


def run_with_little_room(media, tmp_path: Path, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch, reporter,
                         video: Path | None = None, max_frames: int | None = None):
    """segment on ``video`` (the 12-frame bar video), its free space measured at 1000 bytes (at frame 4): the
    folders measured."""
    monkeypatch.setattr(temp_space, "FIRST_CHECK_FRAMES", 4)
    measured: list[str] = []
    monkeypatch.setattr(temp_space, "free_bytes", lambda directory: measured.append(directory) or 1000)
    options = SegmentOptions(["bar", "sky"], str(tiny_weights), output=tmp_path / "out", formats=("ytvis",),
                             max_frames=max_frames)
    runner = SegmentRunner(load_predictor(options), options, reporter)
    outcome = runner.run(VideoSource(video or media["h264"]), 1, "bars")
    assert outcome.status == "complete"  # the video runs on
    return measured


def test_segment_warns_about_the_input_while_it_runs_and_still_finishes_it(
    media, tmp_path: Path, tiny_weights: Path, isolated_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    reporter = WarningReporter()
    measured = run_with_little_room(media, tmp_path, tiny_weights, monkeypatch, reporter)
    assert measured == [tempfile.gettempdir()]  # once, at frame 4, in the masks' folder
    assert len(reporter.warnings) == 1
    stem, message = reporter.warnings[0]
    assert stem == "bars" and "by its last frame (12), at the rate of its first 4," in message
    assert "1 KB are free" in message


def test_the_warning_in_the_log_and_in_json_lines(
    media, tmp_path: Path, tiny_weights: Path, isolated_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = io.StringIO()
    run_with_little_room(media, tmp_path / "jsonl", tiny_weights, monkeypatch, JsonlReporter(stream))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    warnings = [event for event in events if event["event"] == "video_warning"]
    assert len(warnings) == 1 and warnings[0]["stem"] == "bars"
    assert warnings[0]["input"] == str(media["h264"]) and "TMPDIR" in warnings[0]["message"]
    assert not any(event["event"] == "warning" for event in events)  # not a line about the batch

    console = io.StringIO()
    run_with_little_room(media, tmp_path / "log", tiny_weights, monkeypatch,
                         HumanReporter(console, interactive=False))
    lines = [line for line in console.getvalue().splitlines() if "warning" in line]
    assert len(lines) == 1 and lines[0].startswith("clipvis: warning: ") and media["h264"].name in lines[0]


def test_a_stream_of_unknown_length_is_not_projected_even_with_max_frames(
    media, synth, tmp_path: Path, tiny_weights: Path, isolated_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-frames is a cap, not the length: a raw H.264 stream's 12 frames are not projected to a million."""
    raw = synth.write_video(tmp_path / "bars.h264", [synth.bar_frame(i, 48, 64) for i in range(12)])
    reporter = WarningReporter()
    measured = run_with_little_room(media, tmp_path, tiny_weights, monkeypatch, reporter, raw, max_frames=10**6)
    assert measured == [] and reporter.warnings == []


def output_watch(free: dict[str, int], devices: dict[str, int], expected: int = 8000,
                 formats: tuple[str, ...] = ("ytvis", "coco", "overlay")) -> TemporarySpaceWatch:
    outputs = OutputProjection("/data/out/clip", formats, 50, 64, 96)
    return TemporarySpaceWatch("/scratch/tmp", expected, free=free.get, outputs=outputs, device=devices.get)


# the hunter's 8,000 frames of 96x64 (tiny model: 20 queries, 3 classes, 50 tracks kept): 430-byte strings, every
# mask holding a pixel; measured outputs ytvis 184 MB, coco 272 MB, overlay 14 MB
MASKS_SO_FAR = dict(string_bytes=FIRST_CHECK_FRAMES * 20 * 430, masks=FIRST_CHECK_FRAMES * 20)


def test_the_output_files_are_projected_in_their_own_folder() -> None:
    """Outputs are staged in the output folder until all are written: a full disk there failed the video after its
    whole model pass, though the temporary files' folder had room."""
    space = output_watch({"/scratch/tmp": 10 * GB, "/data/out/clip": 300 * 10**6}, {"/scratch/tmp": 1,
                                                                                     "/data/out/clip": 2})
    message = space.update(FIRST_CHECK_FRAMES, FIRST_CHECK_FRAMES * 20 * 430, 20, 3, **MASKS_SO_FAR)
    assert message is not None and "\n" not in message
    assert "output files (ytvis, coco, overlay)" in message and "/data/out/clip" in message
    assert "TMPDIR" not in message and "-o" in message and "300 MB are free" in message
    needed = float(message.split("need about ")[1].split(" MB")[0])
    assert 440 <= needed <= 520  # 470 MB measured
    assert space.update(CHECK_EVERY_FRAMES, CHECK_EVERY_FRAMES * 20 * 430, 20, 3, **MASKS_SO_FAR) is None  # once
    roomy = output_watch({"/scratch/tmp": 10 * GB, "/data/out/clip": 600 * 10**6}, {"/scratch/tmp": 1,
                                                                                    "/data/out/clip": 2})
    assert roomy.update(FIRST_CHECK_FRAMES, FIRST_CHECK_FRAMES * 20 * 430, 20, 3, **MASKS_SO_FAR) is None


def test_on_one_disk_the_temporary_and_output_files_add_up() -> None:
    # 69 MB of masks (+ index) and ~470 MB of outputs: each fits 500 MB alone, not both
    one = {"/scratch/tmp": 7, "/data/out/clip": 7}
    space = output_watch({"/scratch/tmp": 500 * 10**6, "/data/out/clip": 500 * 10**6}, one)
    message = space.update(FIRST_CHECK_FRAMES, FIRST_CHECK_FRAMES * 20 * 430, 20, 3, **MASKS_SO_FAR)
    assert message is not None and "on one disk" in message and "/scratch/tmp" in message
    assert "/data/out/clip" in message
    two = {"/scratch/tmp": 7, "/data/out/clip": 8}
    space = output_watch({"/scratch/tmp": 500 * 10**6, "/data/out/clip": 500 * 10**6}, two)
    assert space.update(FIRST_CHECK_FRAMES, FIRST_CHECK_FRAMES * 20 * 430, 20, 3, **MASKS_SO_FAR) is None


def test_past_the_container_s_count_the_frames_so_far_are_still_projected() -> None:
    """Joined recordings (`cat a.ts b.ts`) pass the count the container tells: the watch went quiet there; what the
    frames so far need is certain, and checked."""
    space = output_watch({"/scratch/tmp": 10 * GB, "/data/out/clip": 100 * 10**6}, {"/scratch/tmp": 1,
                                                                                     "/data/out/clip": 2},
                         expected=300)
    frames = CHECK_EVERY_FRAMES
    message = space.update(frames, frames * 20 * 430, 20, 3, string_bytes=frames * 20 * 430, masks=frames * 20)
    assert message is not None and "its 4096 frames so far (more than the 300 its container tells)" in message


def test_the_export_formats_alone_are_not_projected() -> None:
    space = output_watch({"/scratch/tmp": 10 * GB, "/data/out/clip": 0}, {"/scratch/tmp": 1, "/data/out/clip": 2},
                         formats=("mots-png",))
    assert space.update(FIRST_CHECK_FRAMES, FIRST_CHECK_FRAMES * 20 * 430, 20, 3, **MASKS_SO_FAR) is None


def test_the_projection_is_near_what_segment_writes(
    media, tmp_path: Path, tiny_weights: Path, isolated_cache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At its last frame, each format's projection is within a third of the file segment then writes."""
    monkeypatch.setattr(temp_space, "FIRST_CHECK_FRAMES", 12)  # the video's last frame
    seen: list[tuple[TemporarySpaceWatch, tuple, dict]] = []
    update = TemporarySpaceWatch.update

    def recorded(self, *args, **kwargs):
        seen.append((self, args, kwargs))
        return update(self, *args, **kwargs)

    monkeypatch.setattr(TemporarySpaceWatch, "update", recorded)
    options = SegmentOptions(["bar", "sky"], str(tiny_weights), output=tmp_path / "out",
                             formats=("ytvis", "coco", "overlay"))
    outcome = SegmentRunner(load_predictor(options), options, None).run(VideoSource(media["h264"]), 1, "bars")
    assert outcome.status == "complete"
    watch_, args, kwargs = seen[-1]
    frames, _, queries, classes = args
    assert frames == 12 and kwargs["masks"] > 0
    projection = watch_.outputs
    assert projection is not None and Path(projection.directory) == tmp_path / "out" / "bars"
    for path in outcome.outputs:
        fmt = {"ytvis.json": "ytvis", "coco.json": "coco", "overlay.mp4": "overlay"}[path.name]
        one = OutputProjection(projection.directory, (fmt,), projection.tracks, projection.height, projection.width)
        projected = one.total_bytes(frames, frames, queries, classes, kwargs["string_bytes"], kwargs["masks"])
        assert 0.67 <= projected / path.stat().st_size <= 1.5, (fmt, projected, path.stat().st_size)


def test_an_hd_overlay_is_not_projected_at_a_small_frame_s_bytes_per_pixel() -> None:
    """The overlay's bytes were projected at 0.12 B per pixel, fitted on 96x64 frames: 1280x720 then came out 4.5x
    what x264 writes (33.5 MB projected for 300 frames, 7.5 MB written) and an hour of 1080p ~27 GB, so a disk with
    room warned. Larger frames take fewer bytes per pixel: the projection stays on the high side but near."""
    hd = temp_space.overlay_frame_bytes(720, 1280)
    assert 25_000 <= hd <= 45_000  # 7.53 MB / 300 frames = 25 KB written
    hour_of_1080p = temp_space.overlay_frame_bytes(1080, 1920) * 30 * 3600
    assert hour_of_1080p < 8e9
    assert 1500 <= temp_space.overlay_frame_bytes(64, 96) <= 2000  # the small frames it was measured on
