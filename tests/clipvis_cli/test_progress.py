"""Progress reporting: the JSON lines machines read, the bars people watch, and under torchrun the job's progress
over every process on rank 0."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

from clipvis.cli.inputs import VideoSource
from clipvis.cli.messages import shown_path
from clipvis.cli.progress import HumanReporter, JobProgressReporter, JsonlReporter, SerializedReporter

SOURCE = VideoSource(path=Path("a.mp4"))


class CountingJob:
    """The job-wide counter of a torchrun job (DistributedRun.input_ended / inputs_ended) for one rank."""

    def __init__(self, total: int, rank: int = 0, shared: dict[str, int] | None = None) -> None:
        self.total = total
        self.is_main = rank == 0
        self.shared = shared if shared is not None else {"ended": 0}
        self.lock = threading.Lock()

    def input_ended(self) -> tuple[int, int]:
        with self.lock:
            self.shared["ended"] += 1
            return self.shared["ended"], self.total

    def inputs_ended(self) -> tuple[int, int]:
        return self.shared["ended"], self.total


class JobRecorder:
    """A Reporter that keeps the ``job_progress`` calls (and nothing else)."""

    def __init__(self) -> None:
        self.job: list[tuple[int, int]] = []
        self.closed = 0

    def batch_started(self, num_videos) -> None: ...
    def video_started(self, source, stem, total_frames) -> None: ...
    def frames_done(self, count) -> None: ...
    def video_finished(self, source, stem, frames, fps, outputs) -> None: ...
    def video_skipped(self, source, stem, reason: str = "") -> None: ...
    def video_failed(self, source, stem, message) -> None: ...

    def job_progress(self, ended: int, total: int) -> None:
        self.job.append((ended, total))

    def close(self) -> None:
        self.closed += 1


def wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_jsonl_reports_the_job_progress_when_it_changes() -> None:
    stream = io.StringIO()
    reporter = JsonlReporter(stream)
    for ended in (0, 1, 1, 1, 3):
        reporter.job_progress(ended, 3)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events == [{"event": "job_progress", "ended": e, "total": 3} for e in (0, 1, 3)]
    ranked = io.StringIO()
    JsonlReporter(ranked, rank=0).job_progress(2, 3)
    assert json.loads(ranked.getvalue()) == {"event": "job_progress", "ended": 2, "total": 3, "rank": 0}


def test_the_overall_bar_counts_the_job_once_job_progress_comes() -> None:
    reporter = HumanReporter(stream=io.StringIO(), interactive=True)
    reporter.batch_started(None)
    reporter.video_finished(SOURCE, "a", 4, 1.0, [])
    overall = reporter.progress.tasks[0]
    assert (overall.completed, overall.total) == (1, None)  # this process' own videos
    reporter.job_progress(5, 12)
    reporter.video_finished(SOURCE, "b", 4, 1.0, [])  # the job's counter says when it counts
    reporter.video_failed(SOURCE, "c", "c.mp4: broken")
    assert (overall.completed, overall.total, overall.description) == (5, 12, "videos, all processes")
    reporter.close()


def test_every_rank_counts_its_inputs_and_only_rank_0_shows_the_job() -> None:
    shared = {"ended": 0}
    main, other = JobRecorder(), JobRecorder()
    rank_0 = JobProgressReporter(main, CountingJob(4, 0, shared), interval=0.01)
    rank_1 = JobProgressReporter(other, CountingJob(4, 1, shared), interval=0.01)
    rank_0.batch_started(None)
    rank_1.batch_started(None)
    rank_0.video_finished(SOURCE, "a", 4, 1.0, [])
    assert (1, 4) in main.job  # its own input at once
    rank_1.video_skipped(SOURCE, "b")
    rank_1.video_failed(SOURCE, "c", "c.mp4: broken")
    # rank 0 is busy or waiting for the others: its thread shows their inputs meanwhile
    assert wait_until(lambda: main.job[-1] == (3, 4)), main.job
    rank_1.video_finished(SOURCE, "d", 4, 1.0, [])
    assert wait_until(lambda: main.job[-1] == (4, 4)), main.job
    assert rank_0._watcher is not None and wait_until(lambda: not rank_0._watcher.is_alive())  # all ended: it stops
    rank_1.close()
    rank_0.close()
    assert other.job == [] and main.job[-1] == (4, 4) and (main.closed, other.closed) == (1, 1)
    assert shared["ended"] == 4


def test_rank_0_shows_the_last_counts_when_it_closes() -> None:
    shared = {"ended": 0}
    main = JobRecorder()
    rank_0 = JobProgressReporter(main, CountingJob(3, 0, shared), interval=60.0)  # the thread never wakes
    rank_0.batch_started(0)  # no input of its own
    assert main.job == [(0, 3)]
    shared["ended"] = 3  # the other ranks' inputs, ended before the last gather
    rank_0.close()
    assert main.job == [(0, 3), (3, 3)] and main.closed == 1
    rank_0.close()  # again (after Ctrl-C): nothing more
    assert main.job == [(0, 3), (3, 3)]


def test_the_job_count_never_goes_back() -> None:
    """Rank 0's runner counts its input (2 ended) but the thread reads the store (3 ended) and shows it first: the
    runner's older count is not shown after it."""

    class SlowCountJob(CountingJob):
        def input_ended(self):
            counts = super().input_ended()
            self.shared["ended"] += 1  # another rank ends an input between this read and its display
            reporter._show_job()
            return counts

    main = JobRecorder()
    reporter = JobProgressReporter(main, SlowCountJob(4, 0, {"ended": 1}), interval=60.0)
    reporter.batch_started(None)
    reporter.video_finished(SOURCE, "a", 4, 1.0, [])
    assert main.job == [(1, 4), (3, 4)]
    reporter.close()


def test_a_job_whose_store_is_gone_stops_the_display_quietly() -> None:
    class GoneJob(CountingJob):
        def inputs_ended(self):
            if self.shared["ended"]:
                raise RuntimeError("Connection reset by peer")
            return super().inputs_ended()

    main = JobRecorder()
    reporter = JobProgressReporter(main, GoneJob(2), interval=0.01)
    reporter.batch_started(None)
    reporter.job.shared["ended"] = 1
    assert wait_until(lambda: not reporter._watcher.is_alive())
    reporter.close()
    assert main.job == [(0, 2)] and main.closed == 1


def test_without_a_terminal_each_input_gets_a_line_and_long_videos_a_line_a_minute() -> None:
    stream = io.StringIO()
    reporter = HumanReporter(stream=stream, interactive=False, log_every=0.0)
    reporter.batch_started(3)
    reporter.video_skipped(SOURCE, "a")  # complete already: counted, not listed
    clip = VideoSource(path=Path("clip[1].mp4"))
    reporter.video_started(clip, "clip[1]", 8)
    reporter.frames_done(4)
    reporter.video_finished(clip, "clip[1]", 8, 6.8, [])
    reporter.video_failed(SOURCE, "b", "b.mp4: moov atom not found")
    reporter.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("clipvis: clip[1].mp4: 4/8 frames, ")
    assert lines[1:] == [
        "clipvis: [2/3] clip[1].mp4: 8 frames, 6.80 frames/s", "clipvis: error: b.mp4: moov atom not found"
    ]


def test_a_log_line_shows_a_name_holding_a_newline_on_one_line_and_jsonl_keeps_it_whole() -> None:
    """A file name holding a newline split the log's progress line in two (`clipvis: [1/1] nl/new` and
    `line.mp4: 5 frames, ...`); every line naming it now shows it escaped, as `ls -b` does, while the JSON events
    keep the exact name (JSON escapes it)."""
    odd = VideoSource(path=Path("nl/new\nline.mp4"))
    log = io.StringIO()
    human = HumanReporter(stream=log, interactive=False, log_every=0.0)
    human.batch_started(3)
    human.video_started(odd, "new\nline", 5)
    human.frames_done(2)
    human.video_writing(odd, "new\nline", 0, 5)
    human.video_writing(odd, "new\nline", 3, 5)
    human.video_finished(odd, "new\nline", 5, 5.0, [])
    human.video_skipped(VideoSource(path=Path("tab\there.mp4")), "tab_here", reason="another process is writing")
    human.video_started(VideoSource(path=Path("back\\n.mp4")), "back_n", None)  # a backslash and an n: not a newline
    human.frames_done(1)
    lines = log.getvalue().splitlines()
    assert [line.split(": ")[:2] for line in lines] == [
        ["clipvis", "nl/new\\nline.mp4"], ["clipvis", "nl/new\\nline.mp4"], ["clipvis", "[1/3] nl/new\\nline.mp4"],
        ["skipped tab\\there.mp4", "another process is writing"], ["clipvis", "back\\\\n.mp4"],
    ]
    stream = io.StringIO()
    events = JsonlReporter(stream, every=1)
    events.video_started(odd, "new\nline", 5)
    events.frames_done(1)
    assert {json.loads(line)["input"] for line in stream.getvalue().splitlines()} == {"nl/new\nline.mp4"}


def test_without_a_terminal_rank_0_logs_the_job_count_at_most_every_interval() -> None:
    stream = io.StringIO()
    reporter = HumanReporter(stream=stream, interactive=False, log_every=3600.0)
    reporter.batch_started(None)
    for ended in (0, 0, 1, 2):
        reporter.job_progress(ended, 3)
    reporter.video_finished(SOURCE, "a", 4, 1.0, [])  # the job's count stands for it
    reporter.job_progress(3, 3)
    assert stream.getvalue().splitlines() == [
        "clipvis: 0/3 input(s) ended over all processes", "clipvis: 3/3 input(s) ended over all processes"
    ]
    quiet = io.StringIO()
    other_rank = HumanReporter(stream=quiet, interactive=False, log_lines=False, log_every=0.0)
    other_rank.batch_started(None)
    other_rank.video_started(SOURCE, "a", 4)
    other_rank.frames_done(4)
    other_rank.video_finished(SOURCE, "a", 4, 1.0, [])
    assert quiet.getvalue() == ""


def test_every_json_event_names_an_input_the_same_way() -> None:
    """A file name that is not UTF-8 is written as \\xNN in every event: progress lines wrote it as a lone surrogate,
    which strict JSON readers refuse and which does not match the video_start line."""
    import os

    stream = io.StringIO()
    reporter = JsonlReporter(stream, every=1)
    source = VideoSource(path=Path(os.fsdecode(b"n\xffme.mp4")))
    reporter.video_started(source, "n_xffme", 2)
    reporter.frames_done(1)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [event["event"] for event in events] == ["video_start", "progress"]
    assert {event["input"] for event in events} == {"n\\xffme.mp4"}


def test_progress_says_the_time_left_when_the_frame_count_is_known() -> None:
    stream = io.StringIO()
    reporter = JsonlReporter(stream, every=2)
    reporter.video_started(SOURCE, "a", 10)
    reporter._started -= 2.0  # 2 s in: 4 frames at 2 frames/s, 6 left
    reporter.frames_done(4)
    unknown = VideoSource(path=Path("b.mp4"))
    reporter.video_started(unknown, "b", None)
    reporter.frames_done(2)
    progress = [json.loads(line) for line in stream.getvalue().splitlines() if '"progress"' in line]
    assert progress[0]["frames_expected"] == 10 and 2.9 <= progress[0]["eta_s"] <= 3.1
    assert progress[1]["frames_expected"] is None and progress[1]["eta_s"] is None
    log = io.StringIO()
    human = HumanReporter(stream=log, interactive=False, log_every=0.0)
    human.video_started(SOURCE, "a", 100)
    human._started -= 10.0  # 10 frames in 10 s: 90 s left
    human.frames_done(10)
    assert log.getvalue().splitlines()[0].endswith("frames/s, ETA 1:30")


def test_writing_a_video_s_files_is_reported_while_it_lasts() -> None:
    """Writing a long video's overlay and JSON files takes minutes, during which a log said nothing."""
    log = io.StringIO()
    human = HumanReporter(stream=log, interactive=False, log_every=0.0)
    human.video_writing(SOURCE, "a", 0, 4500)  # starts: nothing yet
    human.video_writing(SOURCE, "a", 1200, 4500)
    human.video_writing(SOURCE, "a", None, None)
    assert log.getvalue().splitlines() == ["clipvis: a.mp4: writing outputs, overlay frame 1200/4500",
                                           "clipvis: a.mp4: writing outputs"]
    quiet = io.StringIO()
    hourly = HumanReporter(stream=quiet, interactive=False, log_every=3600.0)
    for frames in (0, 10, 20):
        hourly.video_writing(SOURCE, "a", frames, 20)
    assert quiet.getvalue() == ""
    stream = io.StringIO()
    reporter = JsonlReporter(stream, every=25)
    for frames in (0, 10, 30, 40, 60):
        reporter.video_writing(SOURCE, "a", frames, 60)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["event"], e["frames"], e["frames_expected"]) for e in events] == [
        ("writing", 0, 60), ("writing", 30, 60), ("writing", 60, 60)]


def test_the_formats_still_written_after_the_overlay_are_named() -> None:
    """cvat-video and mots-txt took 6 of a 2-hour video's 10 minutes of writing after the overlay, while the log read
    'overlay frame 36010/36010': the formats being written are named once none draws; JSONL events carry them and
    come when they change."""
    log = io.StringIO()
    human = HumanReporter(stream=log, interactive=False, log_every=0.0)
    human.video_writing(SOURCE, "a", 0, 4500, formats=["overlay"])
    human.video_writing(SOURCE, "a", 1200, 4500, formats=["overlay", "ytvis"])
    human.video_writing(SOURCE, "a", None, 4500, formats=["cvat-video", "mots-txt"])
    assert log.getvalue().splitlines() == ["clipvis: a.mp4: writing outputs, overlay frame 1200/4500",
                                           "clipvis: a.mp4: writing cvat-video, mots-txt"]
    stream = io.StringIO()
    reporter = JsonlReporter(stream, every=25)
    reporter.video_writing(SOURCE, "a", 0, 60, formats=["overlay"])
    reporter.video_writing(SOURCE, "a", 10, 60, formats=["overlay"])  # too soon: nothing
    reporter.video_writing(SOURCE, "a", None, 60, formats=["cvat-video"])  # another format: said at once
    reporter.video_writing(SOURCE, "a", None, 60, formats=["cvat-video"])
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["frames"], e["formats"]) for e in events] == [(0, ["overlay"]), (None, ["cvat-video"])]


def test_a_reporter_of_the_older_interface_is_called_as_before() -> None:
    """A library user's reporter written before ``formats`` existed still gets its four arguments."""

    class Older:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def video_writing(self, source, stem, frames, total) -> None:
            self.calls.append((stem, frames, total))

    older, newer = Older(), io.StringIO()
    SerializedReporter(older).video_writing(SOURCE, "a", 3, 9, formats=["overlay"])
    SerializedReporter(JsonlReporter(newer)).video_writing(SOURCE, "a", 3, 9, formats=["overlay"])
    assert older.calls == [("a", 3, 9)] and json.loads(newer.getvalue())["formats"] == ["overlay"]


def test_jsonl_says_how_an_interrupted_video_and_the_batch_ended() -> None:
    stream = io.StringIO()
    reporter = JsonlReporter(stream)
    reporter.video_interrupted(SOURCE, "a", "a.mp4: interrupted by SIGTERM")
    reporter.batch_finished({"complete": 1, "skipped": 0, "failed": 0}, 3,
                            "interrupted; incomplete outputs were not written", error=True, interrupted=True)
    reporter.batch_finished({"complete": 1, "skipped": 1, "failed": 1}, 3, "1 of 3 input(s) failed")
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events == [
        {"event": "video_interrupted", "input": "a.mp4", "stem": "a", "error": "a.mp4: interrupted by SIGTERM",
         "status": "interrupted"},
        {"event": "summary", "inputs": 3, "complete": 1, "skipped": 0, "failed": 0, "scope": "job",
         "status": "interrupted",
         "message": "interrupted; incomplete outputs were not written"},
        {"event": "summary", "inputs": 3, "complete": 1, "skipped": 1, "failed": 1, "scope": "job",
         "status": "failed",
         "message": "1 of 3 input(s) failed"},
    ]


def test_lines_about_the_batch_are_plain_lines_for_people_and_events_in_jsonl() -> None:
    human = io.StringIO()
    people = HumanReporter(stream=human, interactive=False)
    machines = io.StringIO()
    jsonl = JsonlReporter(machines, rank=1)
    for reporter in (people, jsonl):
        reporter.say("error", "rank 0 stopped with an error; kept")
        reporter.say("warning", "a.mp4: odd\nthing")
        reporter.say("note", "shard 3/4 holds none")
        reporter.batch_finished({"complete": 2, "skipped": 0, "failed": 0}, 2, "this one took 2", own=True)
    assert human.getvalue().splitlines() == [
        "clipvis: error: rank 0 stopped with an error; kept", "clipvis: warning: a.mp4: odd thing",
        "clipvis: shard 3/4 holds none", "clipvis: this one took 2"]
    events = [json.loads(line) for line in machines.getvalue().splitlines()]
    assert [(e["event"], e["message"]) for e in events[:3]] == [
        ("error", "rank 0 stopped with an error; kept"), ("warning", "a.mp4: odd thing"),
        ("note", "shard 3/4 holds none")]
    # a summary of one process' own inputs comes only when the job did not end together: not "ok"
    assert (events[3]["scope"], events[3]["status"], events[3]["inputs"]) == ("process", "failed", 2)


def test_writing_progress_gives_the_overlay_s_frames_until_it_has_drawn_them_all() -> None:
    """With the JSON writers beside the overlay (a machine with CPUs to spare), a format that started first had the
    overlay's count null before the overlay began; the formats are listed in the order segment writes them. The
    first event names a format (it came before any writer started, with none: hunter 90)."""
    from clipvis.cli.segment_outputs import WritingProgress

    class Recorder:
        def __init__(self) -> None:
            self.events: list[tuple] = []

        def video_writing(self, source, stem, frames, total, formats=(), written=None) -> None:
            self.events.append((frames, list(formats)))

    recorder = Recorder()
    progress = WritingProgress(recorder, SOURCE, "a", 4, interval=3600)
    with progress:
        with progress.writing(0, "coco", False):
            with progress.writing(2, "overlay", True):
                for _ in progress.counted(range(4)):
                    pass
        with progress.writing(3, "cvat-video", False):
            pass
    assert recorder.events == [(0, ["coco"]), (0, ["coco", "overlay"]), (None, ["coco"]), (None, ["cvat-video"])]


def _screen(raw: bytes) -> list[str]:
    """What a terminal shows after ``raw``: carriage return, line feed, ESC[2K (erase the line), ESC[nA (cursor up);
    other escapes (colours, the cursor's visibility) are dropped."""
    import re

    text, lines, row, col = raw.decode("utf-8", "replace"), [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]", text):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            lines += [""] * (row + 1 - len(lines))
        elif token.startswith("\x1b"):
            if token == "\x1b[2K":
                lines[row] = ""
            elif token.endswith("A"):
                row = max(0, row - int(token[2:-1] or 1))
        else:
            lines[row] = lines[row][:col].ljust(col) + token + lines[row][col + 1:]
            col += 1
    return [line.rstrip() for line in lines if line.strip()]


def test_listed_paths_show_above_the_live_bars_when_stdout_is_their_terminal(tmp_path: Path, monkeypatch) -> None:
    """`clipvis segment videos/ --vocab cat` in a terminal: stdout and the bars (stderr) share it. Each listed path
    shows whole on a line of its own above the bars, none glued onto a bar or erased by its redraw; the bars show
    once. stdout elsewhere (a pipe) gets the paths' bytes exactly."""
    import os
    import pty

    from clipvis.cli.listing import StdoutListing

    master, follower = pty.openpty()
    try:
        with open(os.dup(follower), "w", encoding="utf-8") as stderr, \
                open(os.dup(follower), "w", encoding="utf-8") as stdout:
            monkeypatch.setattr("sys.stdout", stdout)
            reporter = HumanReporter(stream=stderr)
            assert reporter.interactive
            serialized = SerializedReporter(reporter)  # as the commands wrap it
            listing = StdoutListing(reporter.say, "see run.json", above_progress=serialized.above_progress)
            reporter.batch_started(2)
            for stem in ("one", "clip"):
                reporter.video_started(VideoSource(path=Path(f"{stem}.mp4")), stem, 3)
                reporter.frames_done(3)
                reporter.video_finished(VideoSource(path=Path(f"{stem}.mp4")), stem, 3, 5.0, [])
                for name in ("ytvis.json", "overlay.mp4"):
                    listing.list(Path("out") / stem / name)
                    stdout.flush()
            reporter.close()
            stderr.flush()
        os.close(follower)
        follower = -1
        raw = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # every writer closed: EIO once read to the end
                break
            if not chunk:
                break
            raw += chunk
    finally:
        os.close(master)
        if follower >= 0:
            os.close(follower)
    screen = _screen(raw)
    paths = [f"out/{stem}/{name}" for stem in ("one", "clip") for name in ("ytvis.json", "overlay.mp4")]
    assert screen[:4] == paths, screen
    assert [line.split()[0] for line in screen[4:]] == ["videos", "clip"], screen

    read, write = os.pipe()  # stdout a pipe, the bars still live on a terminal: the bytes as they are
    with open(write, "w", encoding="utf-8") as pipe:
        monkeypatch.setattr("sys.stdout", pipe)
        shown = HumanReporter(stream=io.StringIO(), interactive=True)
        shown.batch_started(1)
        StdoutListing(shown.say, "see run.json", above_progress=shown.above_progress).list(Path("out/one/coco.json"))
        shown.close()
    with open(read, "rb") as piped:
        assert piped.read() == b"out/one/coco.json\n"


def test_past_the_container_s_frame_count_the_total_is_unknown_not_an_eta_of_zero() -> None:
    """Joined recordings (`cat a.ts b.ts`): the container tells the first one's length; once the frames pass it,
    the total is unknown (`?`, no ETA; `frames_expected` null in the progress events), not 4513/300 with ETA 0:00."""
    stream = io.StringIO()
    reporter = JsonlReporter(stream, every=2)
    reporter.video_started(SOURCE, "a", 4)
    reporter._started -= 2.0
    reporter.frames_done(4)  # at the container's count: ETA 0
    reporter.frames_done(2)  # past it
    progress = [json.loads(line) for line in stream.getvalue().splitlines() if '"progress"' in line]
    assert progress[0]["frames_expected"] == 4 and progress[0]["eta_s"] == 0.0
    assert progress[1]["frames"] == 6 and progress[1]["frames_expected"] is None and progress[1]["eta_s"] is None
    log = io.StringIO()
    human = HumanReporter(stream=log, interactive=False, log_every=0.0)
    human.video_started(SOURCE, "a", 300)
    human._started -= 10.0
    human.frames_done(4513)
    assert log.getvalue().splitlines()[0].startswith("clipvis: a.mp4: 4513/? frames, ")
    assert "ETA" not in log.getvalue()
    bars = HumanReporter(stream=io.StringIO(), interactive=True)
    bars.batch_started(1)
    bars.video_started(SOURCE, "a", 3)
    bars.frames_done(5)
    assert [task.total for task in bars.progress.tasks] == [1, None]  # the bar's count: 5/?
    bars.close()


def test_writing_says_the_overlay_s_time_left_once_it_has_a_rate() -> None:
    """A long video's writing took minutes after its model pass said ETA 0:00, the overlay's frames shown without a
    time left: once the overlay has drawn for a second, its time left comes in the line and the event."""
    log = io.StringIO()
    human = HumanReporter(stream=log, interactive=False, log_every=0.0)
    human.video_writing(SOURCE, "a", 0, 4500, formats=["overlay"])
    human._writing_rates[shown_path(SOURCE.path)] = (time.monotonic() - 10.0, 0)  # drawing since 10 s
    human.video_writing(SOURCE, "a", 1000, 4500, formats=["overlay"])  # 100 frames/s: 35 s left
    human.video_writing(SOURCE, "a", None, 4500, formats=["coco"])
    assert log.getvalue().splitlines() == [
        "clipvis: a.mp4: writing outputs, overlay frame 1000/4500, overlay ETA 0:35", "clipvis: a.mp4: writing coco"]
    stream = io.StringIO()
    reporter = JsonlReporter(stream, every=25)
    reporter.video_writing(SOURCE, "a", 0, 4500, formats=["overlay"])
    reporter._writing_rates[str(SOURCE.path)] = (time.monotonic() - 10.0, 0)
    reporter.video_writing(SOURCE, "a", 1000, 4500, formats=["overlay"])
    reporter.video_writing(SOURCE, "a", None, 4500, formats=["coco"])
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events[0]["overlay_eta_s"] is None and 34.5 <= events[1]["overlay_eta_s"] <= 35.5
    assert events[2]["overlay_eta_s"] is None and events[2]["formats"] == ["coco"]


def test_the_json_formats_written_after_the_overlay_say_their_time_left() -> None:
    """After the overlay, a long video's ytvis.json and coco.json took minutes with no time left said ('the JSON
    and export formats written after it have no ETA'): from the masks written, once they have written for a second,
    the line says the time left and the event its seconds, each format measured from its own start."""
    log = io.StringIO()
    human = HumanReporter(stream=log, interactive=False, log_every=0.0)
    human.video_writing(SOURCE, "a", None, 4500, formats=["ytvis"], written=(0, 10_000))
    human._formats_rates[shown_path(SOURCE.path)]["ytvis"] = (time.monotonic() - 10.0, 0)  # writing since 10 s
    human.video_writing(SOURCE, "a", None, 4500, formats=["ytvis"], written=(2000, 10_000))  # 200/s: 40 s left
    human.video_writing(SOURCE, "a", None, 4500, formats=["coco"], written=(512, 10_000))  # just started: no rate
    human.video_writing(SOURCE, "a", None, 4500, formats=["cvat-video"])  # counts nothing
    assert log.getvalue().splitlines() == [
        "clipvis: a.mp4: writing ytvis, ETA 0:40", "clipvis: a.mp4: writing coco", "clipvis: a.mp4: writing cvat-video"]
    stream = io.StringIO()
    reporter = JsonlReporter(stream, every=25)
    reporter.video_writing(SOURCE, "a", None, 4500, formats=["ytvis"], written=(0, 10_000))
    reporter._formats_rates[str(SOURCE.path)]["ytvis"] = (time.monotonic() - 10.0, 0)
    reporter.video_writing(SOURCE, "a", None, 4500, formats=["ytvis"], written=(10, 10_000))  # too few: nothing
    reporter.video_writing(SOURCE, "a", None, 4500, formats=["ytvis"], written=(2000, 10_000))
    reporter.video_writing(SOURCE, "a", None, 4500, formats=["coco"], written=(0, 10_000))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["formats"], e["formats_eta_s"]) for e in events[::2]] == [(["ytvis"], None), (["coco"], None)]
    assert len(events) == 3 and events[1]["overlay_eta_s"] is None and 39.5 <= events[1]["formats_eta_s"] <= 40.5
    # as WritingProgress reports: a writer's start before it counted anything (written None), then its counts
    stream = io.StringIO()
    reporter = JsonlReporter(stream, every=25)
    reporter.video_writing(SOURCE, "a", None, 4500, formats=["coco"])
    reporter.video_writing(SOURCE, "a", None, 4500, formats=["coco"], written=(0, 10_000))
    reporter._formats_rates[str(SOURCE.path)]["coco"] = (time.monotonic() - 10.0, 0)
    reporter.video_writing(SOURCE, "a", None, 4500, formats=["coco"], written=(2000, 10_000))
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert events[-1]["formats"] == ["coco"] and 39.5 <= events[-1]["formats_eta_s"] <= 40.5, events
    older, newer = [], []  # a reporter without ``written`` gets the formats as before

    class Older:
        def video_writing(self, source, stem, frames, total, formats=()) -> None:
            older.append(list(formats))

    class Newer:
        def video_writing(self, source, stem, frames, total, formats=(), written=None) -> None:
            newer.append(written)

    for inner in (Older(), Newer()):
        SerializedReporter(inner).video_writing(SOURCE, "a", None, 9, formats=["coco"], written=(3, 9))
    assert older == [["coco"]] and newer == [(3, 9)]


def test_writing_progress_gives_the_masks_the_json_writer_at_work_has_written() -> None:
    """Each writer that does not draw is handed a counter of its own (write_outputs): the reports carry the masks
    written by the one at work, out of the video's, from its first count on; none for a writer that counts none."""
    from clipvis.cli.results import TrackResult, VideoInfo
    from clipvis.cli.segment_outputs import WritingProgress, write_outputs
    from clipvis.cli.writers import SegmentedVideo, VideoOutputPaths

    reported: list[tuple] = []
    seen = threading.Event()

    class Recorder:
        def video_writing(self, source, stem, frames, total, formats=(), written=None) -> None:
            reported.append((list(formats), written))
            if written == (7, 8):
                seen.set()

    class Counting:
        format, file_name, draws_frames = "ytvis", "ytvis.json", False

        def write_video(self, path, video):
            video.masks_written(7)
            assert seen.wait(10.0), reported  # a report while it writes carries its count
            return path

    class Silent(Counting):
        format, file_name = "cvat-video", "cvat-video.zip"

        def write_video(self, path, video):
            return path

    info = VideoInfo(1, "a.mp4", "a", 2, 2, 30.0, 1, [0, 1, 2, 3])
    tracks = [TrackResult(track_id=k, category_id=1, score=0.5, segmentations=[None] * 4) for k in (1, 2)]
    video = SegmentedVideo(info, tracks, ["thing"], frames=lambda: iter(()))
    progress = WritingProgress(Recorder(), SOURCE, "a", None, interval=0.001, masks=8)
    with progress:
        write_outputs([Counting(), Silent()], VideoOutputPaths(Path("out/a")), video, {}, progress)
    # (the reporting thread may say "writing" before the first writer starts: formats [] then)
    assert [written for formats, written in reported if formats][0] is None and (["ytvis"], (7, 8)) in reported
    assert [formats for formats, written in reported if formats][0] == ["ytvis"], reported
    assert all(written is None for formats, written in reported if formats == ["cvat-video"]), reported
