"""stdout's reader going away (`clipvis segment videos/ ... | head -1`): the files on disk are the product, the list
on stdout a convenience. Every input still runs, one warning says the listing stopped, the summary and the exit
status are the usual ones, and Python says nothing of a broken pipe at exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from .test_segment_outputs import write_video

CLOSED = "stdout closed (broken pipe): files written are no longer listed"


@pytest.fixture(autouse=True)
def _no_downloads(isolated_cache):
    """Every test here runs with a private cache and no network."""


def run_with_a_stream_closed(closed: str, *args: str) -> tuple[int, str]:
    """Run ``python -m clipvis ARGS`` with ``closed`` ("stdout" or "stderr") a pipe whose reader is gone before
    anything is written (`| head -0`, a consumer that crashed); the exit status and the other stream."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "clipvis", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=environment)
    gone, other = (process.stdout, process.stderr) if closed == "stdout" else (process.stderr, process.stdout)
    gone.close()
    text = other.read().decode("utf-8")
    return process.wait(timeout=300), text


def run_with_stdout_closed(*args: str) -> tuple[int, str]:
    """`run_with_a_stream_closed` of stdout: the exit status and stderr."""
    return run_with_a_stream_closed("stdout", *args)


def test_segment_runs_every_input_when_stdout_s_reader_goes_away(tmp_path, tiny_weights) -> None:
    """It exited 1 after the first input listed, without a word, no summary event, the other inputs never tried."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b", "c"):
        write_video(videos / f"{name}.mp4")
    out = tmp_path / "out"
    code, stderr = run_with_stdout_closed("segment", str(videos), "--vocab", "box", "--weights", str(tiny_weights),
                                          "-o", str(out), "--device", "cpu", "--formats", "ytvis",
                                          "--log-format", "jsonl")
    assert code == 0, stderr
    events = [json.loads(line) for line in stderr.splitlines()]  # nothing but JSON lines on stderr
    warnings = [event["message"] for event in events if event["event"] == "warning"]
    assert warnings == [f"{CLOSED}; each folder's run.json lists its files"]
    assert events[-1]["event"] == "summary" and events[-1]["complete"] == 3 and events[-1]["status"] == "ok"
    for name in ("a", "b", "c"):
        assert json.loads((out / name / "run.json").read_text())["status"] == "complete"


def test_segment_s_human_log_says_it_once_and_python_says_nothing(tmp_path, tiny_weights) -> None:
    for name in ("a", "b"):
        write_video(tmp_path / f"{name}.mp4")
    code, stderr = run_with_stdout_closed("segment", str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), "--vocab",
                                          "box", "--weights", str(tiny_weights), "-o", str(tmp_path / "out"),
                                          "--device", "cpu", "--formats", "ytvis")
    assert code == 0, stderr
    assert stderr.count("clipvis: warning: stdout closed (broken pipe)") == 1, stderr
    assert "BrokenPipeError" not in stderr and "Exception ignored" not in stderr, stderr
    assert "[2/2]" in stderr


def test_export_lists_nothing_more_and_exits_by_its_exports(tmp_path) -> None:
    """(A segment folder written by segment's own YtvisWriter, without the model: exporters/conftest.py.)"""
    from .exporters.conftest import make_segment_output

    folder = make_segment_output(tmp_path / "out").folder
    code, stderr = run_with_stdout_closed("export", str(folder), "--to", "png-masks,mots-txt")
    assert code == 0, stderr
    assert f"clipvis: warning: {CLOSED}; they are written all the same" in stderr.splitlines(), stderr
    assert "Exception ignored" not in stderr, stderr
    assert (folder / "mots-txt" / "mots.txt").is_file() and (folder / "png-masks").is_dir()


def test_evaluate_still_writes_its_metrics_file(tmp_path) -> None:
    mask = np.zeros((40, 56), dtype=np.uint8)
    mask[5:20, 5:30] = 1
    encoded = mask_utils.encode(np.asfortranarray(mask))
    segmentation = {"size": encoded["size"], "counts": encoded["counts"].decode()}
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({
        "videos": [{"id": 1, "width": 56, "height": 40, "length": 3, "file_names": ["v/0.jpg", "v/1.jpg", "v/2.jpg"]}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [segmentation] * 3,
                         "areas": [375.0] * 3}],
    }))
    results = tmp_path / "results.json"
    results.write_text(json.dumps([{"video_id": 1, "category_id": 1, "score": 0.9,
                                    "segmentations": [segmentation] * 3}]))
    metrics = tmp_path / "metrics.json"
    code, stderr = run_with_stdout_closed("evaluate", "--results", str(results), "--gt", str(gt), "--json",
                                          str(metrics))
    assert code == 0, stderr
    assert (f"clipvis: warning: stdout closed (broken pipe): the metrics table was cut short; {metrics} will hold "
            "every metric") in stderr.splitlines(), stderr
    assert json.loads(Path(metrics).read_text())["metrics"]["AP"] == pytest.approx(1.0)
    assert "Exception ignored" not in stderr, stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_segment_runs_every_input_when_stdout_is_full(tmp_path, tiny_weights) -> None:
    """`clipvis segment ... > /dev/full` (a full disk under stdout) stopped after the first input with an OSError
    traceback; it is said as a closed stdout is, and every input runs."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b"):
        write_video(videos / f"{name}.mp4")
    out = tmp_path / "out"
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "clipvis", "segment", str(videos), "--vocab", "box", "--weights",
                                 str(tiny_weights), "-o", str(out), "--device", "cpu", "--formats", "ytvis"],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("clipvis: warning: stdout not writable (No space left on device): files written are "
                               "no longer listed") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert all((out / name / "ytvis.json").exists() for name in ("a", "b"))


@pytest.mark.parametrize("log_format", ["human", "jsonl"])
def test_segment_runs_every_input_when_stderr_s_reader_goes_away(log_format, tmp_path, tiny_weights) -> None:
    """`clipvis segment a b c 2>&1 | head -1` exited 1 after the first input without a word (rich's reaction to a
    broken pipe), and `--log-format jsonl 2>&1 >/dev/null | head -1` recorded the first input, its files in place,
    as failed ("Broken pipe"), with no other input run: messages are not results."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a", "b", "c"):
        write_video(videos / f"{name}.mp4")
    out = tmp_path / "out"
    code, stdout = run_with_a_stream_closed("stderr", "segment", str(videos), "--vocab", "box", "--weights",
                                            str(tiny_weights), "-o", str(out), "--device", "cpu", "--formats", "ytvis",
                                            "--log-format", log_format)
    assert code == 0
    assert stdout.splitlines() == [str(out / name / "ytvis.json") for name in ("a", "b", "c")]
    for name in ("a", "b", "c"):
        assert json.loads((out / name / "run.json").read_text())["status"] == "complete"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full on this system")
def test_segment_and_evaluate_run_whole_when_a_stream_is_full(tmp_path, tiny_weights) -> None:
    """`2>/dev/full` (a full log disk): segment recorded the first input failed after its files went in place ("No
    space left on device") and stopped. `evaluate ... > /dev/full` ended with a traceback and no --json file."""
    for name in ("a", "b"):
        write_video(tmp_path / f"{name}.mp4")
    out = tmp_path / "out"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "clipvis", "segment", str(tmp_path / "a.mp4"),
                                 str(tmp_path / "b.mp4"), "--vocab", "box", "--weights", str(tiny_weights), "-o",
                                 str(out), "--device", "cpu", "--formats", "ytvis"],
                                stdout=subprocess.PIPE, stderr=full, text=True, timeout=300, env=environment)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [str(out / name / "ytvis.json") for name in ("a", "b")]
    assert all(json.loads((out / name / "run.json").read_text())["status"] == "complete" for name in ("a", "b"))
    metrics = tmp_path / "metrics.json"
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "clipvis", "evaluate", "--results",
                                 str(out / "a" / "ytvis.json"), "--gt", str(out / "a" / "ytvis.json"), "--json",
                                 str(metrics)],
                                stdout=full, stderr=subprocess.PIPE, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr
    assert (f"clipvis: warning: stdout not writable (No space left on device): the metrics table was cut short; "
            f"{metrics} will hold every metric") in result.stderr.splitlines(), result.stderr
    assert "Traceback" not in result.stderr and json.loads(metrics.read_text())["metrics"]


@pytest.mark.parametrize("command", ["segment", "export --to coco"])
def test_a_list_on_a_closed_stdin_is_a_usage_error(command, tmp_path) -> None:
    """`clipvis segment - <&-` ended with AttributeError: 'NoneType' object has no attribute 'read'."""
    result = subprocess.run(f"{sys.executable} -m clipvis {command} - -o {tmp_path / 'out'} <&-", shell=True,
                            capture_output=True, text=True, timeout=120, executable="/bin/bash",
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2, result.stderr
    assert "clipvis: error: -: stdin is closed: there is no list of inputs to read" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


FD_CHECK = """
import os
from clipvis.cli.standard_streams import install_quiet_stderr
quiet = install_quiet_stderr()
with open({victim!r}, "w") as victim:
    os.write(2, b"a library's message to stderr\\n")
    print(quiet.fileno(), victim.fileno())
"""


def test_a_closed_stderr_is_the_null_device_at_descriptor_2(tmp_path) -> None:
    """With stdin and stderr closed (`<&- 2>&-`) the null device took descriptor 0 and the next file opened took 2:
    a message a library wrote to stderr went into that file."""
    victim = tmp_path / "victim.txt"
    script = tmp_path / "check.py"
    script.write_text(FD_CHECK.format(victim=str(victim)))
    result = subprocess.run(f"{sys.executable} {script} <&- 2>&-", shell=True, capture_output=True, text=True,
                            timeout=60, executable="/bin/bash")
    assert result.returncode == 0
    quiet, opened = map(int, result.stdout.split())
    assert quiet == 2 and opened != 2 and victim.read_text() == ""
