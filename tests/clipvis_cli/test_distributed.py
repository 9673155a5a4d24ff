"""Many devices, many machines: `segment --shard K/N` and `segment` / `evaluate` under torchrun (2 gloo processes on
the CPU, one thread each), against one process: the same files, byte for byte."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from clipvis.cli.app import app
from clipvis.cli.distributed import (
    DistributedRun,
    InputsDifferError,
    OtherRankFailed,
    RankLost,
    RanksDifferError,
    Shard,
    visible_gpu,
)
from clipvis.cli.inputs import VideoSource
from clipvis.cli.job_outcome import check_same_producer
from clipvis.cli.progress import JobProgressReporter
from clipvis.cli.run_identity import checkpoint_identity
from clipvis.cli.segment import SegmentOptions

from .process_trees import kill_process_tree, start_process_tree
from .thread_ranks import ThreadJob, ThreadRanks
from .torchrun_cases import case_outcomes, torchrun_cases, write_cases

RUN_JSON = "run.json"  # holds timings: the only file that differs between runs


def test_shards_partition_the_sorted_inputs_whatever_their_order() -> None:
    names = [f"v{i:02d}.mp4" for i in range(11)]
    shuffled = list(np.random.default_rng(0).permutation(names))
    for count in (1, 2, 3, 11, 13):
        parts = [Shard(k, count).select(shuffled, key=str) for k in range(count)]
        chosen = sorted(shuffled[i] for part in parts for i in part)
        assert chosen == names  # every input in exactly one shard
        assert [shuffled[i] for i in Shard(0, count).select(shuffled, key=str)] == sorted(
            [shuffled[i] for i in parts[0]], key=shuffled.index
        )
        assert {shuffled[i] for i in parts[0]} == set(names[::count])
    assert Shard.parse(" 2 / 5 ") == Shard(2, 5)
    for bad in ("2/2", "-1/3", "a/b", "3", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(bad)


def test_torchrun_environment() -> None:
    assert DistributedRun.from_env({}) is None and DistributedRun.from_env({"WORLD_SIZE": "1"}) is None
    master = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    job = DistributedRun.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", **master})
    assert job == DistributedRun(3, 4, 1) and not job.is_main
    assert job.device("auto", 8) == "cuda:1" and job.device("cuda", 8) == "cuda:1"
    assert job.device("auto", 0) == "auto" and job.device("cpu", 8) == "cpu" and job.device("cuda:3", 8) == "cuda:3"
    with pytest.raises(ValueError, match="RANK"):
        DistributedRun.from_env({"WORLD_SIZE": "2", "RANK": "2", **master})
    # a variable set but empty, or not a number: named (int()'s words named none)
    with pytest.raises(ValueError, match=r"^torchrun environment: WORLD_SIZE='' is not a whole number$"):
        DistributedRun.from_env({"WORLD_SIZE": "", **master})
    with pytest.raises(ValueError, match=r"^torchrun environment: LOCAL_RANK='abc' is not a whole number$"):
        DistributedRun.from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "abc", **master})


def test_torchrun_variables_without_master_address_give_one_line(tiny_weights, tmp_path, isolated_cache) -> None:
    """WORLD_SIZE and RANK set by hand, without MASTER_ADDR/MASTER_PORT: one line naming what is missing and who sets
    it, not torch.distributed's traceback."""
    args = ["segment", str(tmp_path), "--vocab", "box", "--weights", str(tiny_weights), "-o", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args, env={"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": None,
                                                "MASTER_PORT": None})
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        "clipvis: error: torchrun environment: WORLD_SIZE=2 but MASTER_ADDR and MASTER_PORT not set; torchrun sets "
        "WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (unset WORLD_SIZE to run one process)\n"
    )
    assert not (tmp_path / "out").exists()


def test_each_process_takes_a_gpu_it_can_see() -> None:
    """torchrun's usual layout: every process sees the machine's GPUs and takes cuda:LOCAL_RANK. A scheduler that
    gives each process its own GPU (CUDA_VISIBLE_DEVICES, e.g. SLURM's --gpus-per-task) leaves one visible: cuda:0,
    not an ordinal that does not exist there; with 2 per process, local ranks share them round robin."""
    assert [visible_gpu(rank, 8) for rank in range(8)] == list(range(8))
    assert [visible_gpu(rank, 1) for rank in range(8)] == [0] * 8
    assert [visible_gpu(rank, 2) for rank in range(4)] == [0, 1, 0, 1]
    assert DistributedRun(7, 8, 7).device("auto", 1) == "cuda:0"
    with pytest.raises(ValueError, match="no visible CUDA device"):
        visible_gpu(0, 0)


def write_video(path: Path, num_frames: int, shift: int, flat: bool = False) -> Path:
    """A red block moving right over random noise (``flat``: a flat background; a long video encodes ~10x faster)."""
    rng = np.random.default_rng(shift)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t in range(num_frames):
            frame = np.full((48, 64, 3), 30, np.uint8) if flat else rng.integers(0, 60, (48, 64, 3), dtype=np.uint8)
            frame[10:30, shift + t : shift + t + 20] = (230, 40, 40)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """A folder of 5 short videos (and one broken file, which fails alone on whichever rank gets it)."""
    folder = tmp_path_factory.mktemp("videos")
    for i, frames in enumerate((3, 4, 2, 3, 4)):
        write_video(folder / f"clip{i}.mp4", frames, shift=5 * i)
    (folder / "broken.mp4").write_bytes(b"not a video")  # sorted first: shard 0's, rank 0's
    return folder


def child_env(cache: Path) -> dict[str, str]:
    """A clipvis subprocess' environment: its own cache, no downloads, one thread, no torchrun variables of ours."""
    env = {**os.environ, "CLIPVIS_CACHE": str(cache), "CLIPVIS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def clipvis(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    """``python -m clipvis args`` in a process of its own (child_env)."""
    return subprocess.run([sys.executable, "-m", "clipvis", *args], capture_output=True, text=True,
                          env=child_env(cache), timeout=300)


def segment_args(videos: Path, weights: Path, out: Path, *extra: str) -> list[str]:
    return ["segment", str(videos), "--vocab", "box,sky", "--weights", str(weights), "-o", str(out),
            "--device", "cpu", "--batch-frames", "2", *extra]


def many_classes(args: list[str]) -> list[str]:
    """``args`` with a vocabulary of 60 classes: with the tiny model's 6 queries, up to 360 tracks a video."""
    args = list(args)
    args[args.index("--vocab") + 1] = ",".join(f"c{i}" for i in range(60))
    return args


def output_files(root: Path) -> dict[str, bytes]:
    """Every output file's bytes (coco.json's creation time aside; overlay.mp4 too: the encoder runs with the same
    threads on one machine and reads no unwritten memory); not run.json (timings) nor the lock files."""
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name == RUN_JSON or path.name.startswith("."):
            continue
        files[str(path.relative_to(root))] = re.sub(rb'"date_created":"[^"]*"', b"", path.read_bytes())
    return files


@pytest.fixture
def one_thread(isolated_cache):
    """In-process CLI runs with one torch thread, as the subprocesses (the same float results)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def single_process(videos, tiny_weights, tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("single")
    result = clipvis(segment_args(videos, tiny_weights, root / "out"), root / "cache")
    assert result.returncode == 1 and "broken.mp4" in result.stderr, result.stderr
    files = output_files(root / "out")
    assert len(files) == 15  # 5 videos x (overlay, ytvis, coco)
    return files


def test_shards_write_what_one_process_writes(videos, tiny_weights, single_process, tmp_path, one_thread) -> None:
    out = tmp_path / "out"
    written = []
    for k in range(3):
        result = CliRunner().invoke(app, segment_args(videos, tiny_weights, out, "--shard", f"{k}/3"))
        assert result.exit_code == (1 if k == 0 else 0), result.output
        if k == 0:  # the shard's summary counts its own inputs (broken.mp4, clip2), not the folder's 6
            assert "clipvis: 1 of 2 input(s) failed" in result.stderr, result.stderr
        written.append(sorted(Path(line).parent.name for line in result.stdout.split()))
    assert written == [["clip2"] * 3, ["clip0"] * 3 + ["clip3"] * 3, ["clip1"] * 3 + ["clip4"] * 3]
    assert output_files(out) == single_process
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in out.rglob(RUN_JSON)}
    assert statuses == {"broken": "failed", **{f"clip{i}": "complete" for i in range(5)}}
    again = CliRunner().invoke(app, segment_args(videos, tiny_weights, out, "--shard", "1/3"))  # restartable
    assert again.exit_code == 0 and again.stdout == ""
    bad = CliRunner().invoke(app, segment_args(videos, tiny_weights, out, "--shard", "3/3"))
    assert bad.exit_code == 2 and "K counts from 0" in bad.output
    empty = CliRunner().invoke(app, segment_args(videos, tiny_weights, out, "--shard", "6/7"))  # 6 inputs, 7 shards
    assert empty.exit_code == 0 and "shard 6/7 holds none of the 6 input(s): nothing to do" in empty.stderr
    alone = CliRunner().invoke(app, segment_args(videos, tiny_weights, tmp_path / "new", "--shard", "6/7"))
    assert alone.exit_code == 0 and not (tmp_path / "new").exists()  # no empty output root made for nothing


def test_a_shard_without_inputs_says_so_in_json_with_jsonl(videos, tiny_weights, tmp_path, isolated_cache) -> None:
    """--log-format jsonl: the shard's "holds none" line was a plain line among the JSON events."""
    args = segment_args(videos, tiny_weights, tmp_path / "out", "--shard", "6/7", "--log-format", "jsonl")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [json.loads(line) for line in result.stderr.splitlines()] == [
        {"event": "note", "message": "shard 6/7 holds none of the 6 input(s): nothing to do"},
        {"event": "summary", "inputs": 0, "complete": 0, "skipped": 0, "failed": 0, "already_complete": 0,
         "scope": "job", "status": "ok", "message": None},
    ]


@pytest.fixture(scope="module")
def torchrun_job(videos, tiny_weights, tmp_path_factory) -> dict[str, Any]:
    """The single-machine torchrun cases below as one torchrun job (one process start, torch import and rendezvous
    instead of one per case; tests/clipvis_cli/torchrun_cases.py): {case name: Outcome}. The last, segment with
    --log-format jsonl of the videos listed on stdin (`segment -`), runs as a job on its own would (torchrun's own
    output and exit status)."""
    from .test_evaluate_dataset import make_lvvis

    root = tmp_path_factory.mktemp("torchrun")
    make_lvvis(root / "datasets")
    evaluate = ["evaluate", "--dataset", "lvvis_val", "--weights", tiny_weights, "--data-root", root / "datasets",
                "--device", "cpu", "-o", root / "evaluate"]
    config = root / "det300.yaml"
    config.write_text("TEST:\n  DETECTIONS_PER_IMAGE: 300\n")
    cases = {
        **{f"usage-{i}": [segment_args(videos, tiny_weights, root / f"usage-{i}", *bad)] * 2
           for i, (bad, _) in enumerate(USAGE_ERRORS)},
        "config-tracks": [many_classes(segment_args(videos, tiny_weights, root / "config-tracks", "--formats",
                                                    "ytvis,png-masks", "--config", str(config)))] * 2,
        "evaluate": [evaluate] * 2,
        "segment": [segment_args(Path("-"), tiny_weights, root / "segment", "--log-format", "jsonl")] * 2,
    }
    listing = "".join(f"{path}\n" for path in sorted(videos.iterdir()))
    outcomes = torchrun_cases(root / "job", list(cases.values()), env=child_env(root / "cache"), stdin=listing)
    return {"root": root, **dict(zip(cases, outcomes, strict=True))}


def test_torchrun_two_processes_write_what_one_process_writes(single_process, torchrun_job) -> None:
    """The broken file's failure (whichever rank took it) shows in rank 0's summary and in torchrun's exit code; rank
    0's progress counts every rank's inputs."""
    result = torchrun_job["segment"]
    assert output_files(torchrun_job["root"] / "segment") == single_process
    assert result.stderr.count("6 input(s) over 2 processes: 5 complete, 0 skipped, 1 failed") == 1, result.stderr
    assert result.codes[0] != 0 and "broken.mp4" in result.stderr
    assert len(result.stdout.split()) == 15
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    job = [(e["ended"], e["total"]) for e in events if e["event"] == "job_progress"]
    # the first count is the job's when rank 0 began (the other rank may have ended inputs by then); it never goes back
    assert job[-1] == (6, 6) and job == sorted(job) and len(set(job)) == len(job), job
    assert sum(e["event"] in ("video_done", "video_failed") for e in events) == 6
    assert {e["rank"] for e in events if e["event"] == "job_progress"} == {0}
    assert {e["rank"] for e in events if e["event"] == "batch_start"} == {0, 1}  # each event says whose it is


def test_torchrun_reads_the_input_list_on_stdin_once(single_process, torchrun_job) -> None:
    """`find ... | torchrun ... clipvis segment -` (torchrun_job's segment case): the processes share stdin, and
    whichever read first took the whole list (the other found no input); rank 0 reads it and every rank gets its
    lines."""
    result = torchrun_job["segment"]
    assert output_files(torchrun_job["root"] / "segment") == single_process
    assert result.stderr.count("6 input(s) over 2 processes: 5 complete, 0 skipped, 1 failed") == 1, result.stderr


USAGE_ERRORS = [(("--formats", "overlay,nope"), "--formats: unknown nope"),
                (("--max-tracks", "0"), "greater than or equal to 1")]


@pytest.mark.parametrize("case", range(len(USAGE_ERRORS)))
def test_a_usage_error_under_torchrun_is_printed_once(torchrun_job, case) -> None:
    """Every rank finds the same bad command line; each printed the usage box, interleaved line by line (once the job
    had started, or while Typer parsed the options)."""
    result, said = torchrun_job[f"usage-{case}"], USAGE_ERRORS[case][1]
    assert all(code != 0 for code in result.codes), result
    assert result.stderr.count(said) == 1, result.stderr
    assert result.stderr.count("clipvis: error:") == 1, result.stderr


def test_a_config_keeping_more_tracks_than_a_format_holds_is_one_usage_error_under_torchrun(torchrun_job) -> None:
    """A config's TEST.DETECTIONS_PER_IMAGE above png-masks' 255 ids, known once each rank has loaded the weights:
    every rank stops with exit 2 before taking an input, and the error is said once."""
    result = torchrun_job["config-tracks"]
    assert result.codes == [2, 2], result
    assert result.stderr.count("clipvis: error:") == 1, result.stderr
    assert "TEST.DETECTIONS_PER_IMAGE keeps up to 300 tracks per video" in " ".join(result.stderr.split())
    assert not list((torchrun_job["root"] / "config-tracks").rglob("ytvis.json"))


@pytest.mark.parametrize("args, said", [
    (["segment", "v.mp4", "--vocab", "a", "--stride", "0"], "Invalid value for '--stride'"),
    (["evaluate", "--dataset", "bogus"], "unknown dataset 'bogus'"),
    (["segmnet", "v.mp4"], "No such command 'segmnet'"),
])
def test_usage_errors_before_a_torchrun_job_starts_are_said_by_each_machines_first_worker(args, said,
                                                                                         monkeypatch) -> None:
    """Every worker of a machine has the same command line: local rank 0 says its usage error, the others exit with
    the same code in silence."""
    monkeypatch.setattr("clipvis.cli.distributed.SILENT_STOP_GRACE_S", 0.0)  # no other process to wait for here
    torchrun = {"WORLD_SIZE": "4", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    runner = CliRunner()
    quiet = runner.invoke(app, args, env={**torchrun, "LOCAL_RANK": "1"})
    assert quiet.exit_code == 2 and quiet.output == "", quiet.output
    first = runner.invoke(app, args, env={**torchrun, "RANK": "2", "LOCAL_RANK": "0"})
    assert first.exit_code == 2 and said in first.output, first.output
    alone = runner.invoke(app, args, env={"LOCAL_RANK": "1"})  # not under torchrun: said
    assert alone.exit_code == 2 and said in alone.output, alone.output


@pytest.mark.parametrize("args, exit_code, said", [
    (["segment", "--help"], 0, "--vocab-file"),
    (["--help"], 0, "segment"),
    ([], 2, "segment"),  # `clipvis` alone prints the help
    (["--version"], 0, "clipvis "),
])
def test_help_under_torchrun_is_printed_by_each_machines_first_worker(args, exit_code, said) -> None:
    """Every worker of a machine gets the same command line: each printed the whole help, interleaved; local rank 0
    prints it, the others exit as it does in silence."""
    torchrun = {"WORLD_SIZE": "4", "RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    runner = CliRunner()
    quiet = runner.invoke(app, args, env={**torchrun, "LOCAL_RANK": "1"})
    assert quiet.exit_code == exit_code and quiet.output == "", quiet.output
    first = runner.invoke(app, args, env={**torchrun, "RANK": "2", "LOCAL_RANK": "0"})
    assert first.exit_code == exit_code and said in first.output, first.output
    alone = runner.invoke(app, args, env={"LOCAL_RANK": "1"})  # not under torchrun: printed
    assert alone.exit_code == exit_code and alone.output == first.output


def test_stdout_closed_under_torchrun_is_said_once_per_machine(monkeypatch) -> None:
    """The ranks of a machine share its stdout: when its reader goes away (`torchrun ... | head -1`) each rank found
    the broken pipe and each said the warning; the first of each machine says it, every rank stops listing."""
    from functools import partial

    from clipvis.cli import listing as listing_module
    from clipvis.cli.listing import StdoutListing

    def broken_pipe(path, null):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(listing_module, "print_path", broken_pipe)
    monkeypatch.setattr(listing_module, "silence_stdout", lambda: None)
    ranks = ThreadRanks(4)
    said: list[tuple[int, str]] = []
    listings = []
    for rank in range(4):
        job = ThreadJob(ranks, rank)
        job.machine = rank // 2  # two machines of two processes
        listings.append(StdoutListing(lambda kind, message, rank=rank: said.append((rank, message)), "see run.json",
                                      speaks=partial(job.first_on_this_machine, "stdout-closed")))
    for listing in (listings[1], listings[0], listings[3], listings[2]):
        listing.list(Path("out/clip/overlay.mp4"))
        listing.list(Path("out/clip/ytvis.json"))
    assert all(listing.closed for listing in listings)
    assert [rank for rank, _ in said] == [1, 3], said  # the first of each machine to find it
    assert all(message.startswith("stdout closed (broken pipe): files written are no longer listed")
               for _, message in said)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_machines(folder: Path, cases: list[tuple[list[str], list[str]]],
                 cache: Path) -> list[list[tuple[str, str, int]]]:
    """Run ``cases`` (each: the first machine's clipvis arguments and the second's, as a machine that differs) under
    two torchrun agents, as on two machines (`--nnodes 2` and the README's rendezvous flags, one process each), in
    one job: the cases run in turn in the same two processes (tests/clipvis_cli/torchrun_cases.py: one start, torch
    import and rendezvous for all, ~20 s each on 2 cores), ``folder`` for the launcher and the cases' files. For each
    case, each machine's (stdout, stderr, exit code): its process' for every case but the last, which runs as a job
    on its own would: each agent's (torchrun's output and exit code).

    The first agent hosts the rendezvous store, as the machine named in `--rdzv-endpoint` does: the second starts
    once the store answers. Each agent has an address of its own, as a machine does (127.0.0.1 and 127.0.0.2, both
    this machine's loopback): the rendezvous ranks agents by address before process id, so the first agent's process
    is rank 0 (by process id alone, whichever pid was lower). The job must end within 240 s: an agent whose processes
    exited 0 while the other's failed would wait out torchrun's exit barrier (300 s); a case's process that exited 0
    while the other's failed shows in its exit code."""
    launcher = write_cases(folder, [[first, second] for first, second in cases])
    env = {**child_env(cache), "CLIPVIS_CASES": str(folder)}
    port = free_port()
    nodes: list[subprocess.Popen] = []
    try:
        for machine in (1, 2):
            nodes.append(start_process_tree(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                 "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "clipvis-test",
                 "--local-addr", f"127.0.0.{machine}", str(launcher)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            ))
            if len(nodes) == 1:
                wait_for_port(port, nodes[0])
        deadline = time.monotonic() + 240
        last: list[tuple[str, str, int]] = []
        try:
            for node in nodes:
                last.append((*node.communicate(timeout=max(deadline - time.monotonic(), 1)), node.returncode))
        except subprocess.TimeoutExpired:  # a case hung: both trees killed, what the agents said kept for the message
            for node in nodes[len(last):]:
                out, err = kill_process_tree(node)
                last.append((out or "", err or "", node.returncode))
            job_stderr = "\n".join(f"agent {machine}: {err}" for machine, (_, err, _) in enumerate(last, 1))
            case_outcomes(folder, len(cases) - 1, 2, job_stderr)  # names the earlier case that did not end
            raise AssertionError(f"case {len(cases) - 1} did not end within 240 s:\n{job_stderr}") from None
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_process_tree(node)  # the agent and its worker (in a session of its own)
    return [*case_outcomes(folder, len(cases) - 1, 2, "\n".join(err for _, err, _ in last)), last]


@pytest.fixture(scope="module")
def two_machine_job(videos, tiny_weights, tmp_path_factory) -> dict[str, Any]:
    """The two-machine cases of the tests below as one two-machine job (two_machines): {case name: each machine's
    (stdout, stderr, exit code)}, and the files they used. The last, an evaluate whose second machine cannot load the
    weights, checks torchrun's own report."""
    from .test_evaluate_dataset import make_lvvis

    root = tmp_path_factory.mktemp("two_machines")
    data = root / "datasets"
    make_lvvis(data)
    (root / "a_file").write_text("")
    other = root / "other.safetensors"
    content = bytearray(tiny_weights.read_bytes())
    content[-1] ^= 0xFF  # the last byte of the last tensor
    other.write_bytes(bytes(content))
    missing = str(root / "not_on_this_machine.safetensors")

    def evaluate(name: str, weights: Path | str = tiny_weights, *extra: str) -> list[str]:
        return ["evaluate", "--dataset", "lvvis_val", "--weights", str(weights), "--data-root", str(data),
                "--device", "cpu", "-o", str(root / name), *extra]

    def segment(name: str, *extra: str) -> list[str]:
        return segment_args(videos, tiny_weights, root / name, *extra)

    no_cuda = segment("no_cuda", "--formats", "ytvis")
    no_weights = segment("no_weights", "--formats", "ytvis")
    cases = {
        "segment": [segment("segment")] * 2,
        "metrics": [evaluate("metrics", tiny_weights, "--json", str(root / "a_file" / "metrics.json"))] * 2,
        "no_cuda": [no_cuda, [*no_cuda[: no_cuda.index("--device")], "--device", "cuda:0",
                              *no_cuda[no_cuda.index("--device") + 2 :]]],
        "no_weights": [no_weights, [missing if arg == str(tiny_weights) else arg for arg in no_weights]],
        "other_weights": [evaluate("other_weights"), evaluate("other_weights", other)],
        "could_not_start": [evaluate("could_not_start"), evaluate("could_not_start", missing)],
    }
    outcomes = two_machines(root / "job", [(first, second) for first, second in cases.values()], root / "cache")
    return {"root": root, **dict(zip(cases, outcomes, strict=True))}


def wait_for_port(port: int, process: subprocess.Popen, seconds: float = 60.0) -> None:
    """Until something listens on ``port`` of this machine (or ``process`` ended, or ``seconds`` passed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)


def test_two_machines_with_c10d_rendezvous_write_what_one_process_writes(single_process, two_machine_job) -> None:
    """Two machines sharing one output root: the files of one process; the summary once, from the machine that got
    rank 0; the broken file's error once, from whichever rank took it; both machines' processes exit non-zero, and at
    once."""
    results = two_machine_job["segment"]
    assert output_files(two_machine_job["root"] / "segment") == single_process
    summary = "6 input(s) over 2 processes: 5 complete, 0 skipped, 1 failed"
    main = [i for i, (_, stderr, _) in enumerate(results) if summary in stderr]
    assert len(main) == 1, [stderr for _, stderr, _ in results]
    assert all(code != 0 for _, _, code in results)
    assert sum(stderr.count("broken.mp4") for _, stderr, _ in results) == 1
    assert sum(len(stdout.split()) for stdout, _, _ in results) == 15


def test_evaluate_under_torchrun_equals_one_process(tiny_weights, torchrun_job, tmp_path, one_thread) -> None:
    """Videos spread over 2 ranks; rank 0 writes one results.json and one set of metrics, as one process does."""
    result, two = torchrun_job["evaluate"], torchrun_job["root"] / "evaluate"
    common = ["evaluate", "--dataset", "lvvis_val", "--weights", str(tiny_weights), "--data-root",
              str(torchrun_job["root"] / "datasets"), "--device", "cpu"]
    single = CliRunner().invoke(app, [*common, "-o", str(tmp_path / "one")])
    assert single.exit_code == 0, single.output
    assert result.codes == [0, 0], result.stderr
    for name in ("results.json", "per_video/1.json", "per_video/2.json"):
        assert (two / name).read_bytes() == (tmp_path / "one" / name).read_bytes()
    metrics = [json.loads((run / "metrics.json").read_text())["metrics"] for run in (tmp_path / "one", two)]
    assert metrics[0] == metrics[1]
    assert result.stdout.count("AP") == single.stdout.count("AP")  # one table, from rank 0
    assert result.stderr.count("2 videos run, 0 reused") == 1


def test_same_stem_inputs_get_the_same_folders_whatever_shard_runs_first(tiny_weights, tmp_path, one_thread) -> None:
    """a/clip.mp4 and b/clip.mp4 in one batch: a gets clip/ and b clip-2/, as one process gives them, also when b's
    shard runs before a's."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    a = write_video(tmp_path / "a" / "clip.mp4", 2, 1)
    b = write_video(tmp_path / "b" / "clip.mp4", 2, 7)
    out = tmp_path / "out"
    for shard in ("1/2", "0/2"):  # shard 1 is b's
        args = ["segment", str(a), str(b), "--vocab", "box,sky", "--weights", str(tiny_weights), "-o", str(out),
                "--device", "cpu", "--formats", "ytvis", "--shard", shard]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
    owners = {p.parent.name: Path(json.loads(p.read_text())["source"]["path"]).parent.name for p in out.rglob(RUN_JSON)}
    assert owners == {"clip": "a", "clip-2": "b"}


def test_two_machines_evaluate_end_together_when_rank_0_cannot_write_the_metrics(two_machine_job) -> None:
    """Every video runs, then rank 0's scoring fails (--json under a regular file): rank 0 says why in one line and
    both machines' processes exit non-zero at once; the other rank waited for rank 0's outcome instead of exiting 0
    first (which left its agent at torchrun's exit barrier for 300 s, then exiting 0)."""
    results, out = two_machine_job["metrics"], two_machine_job["root"] / "metrics"
    errors = [stderr for _, stderr, _ in results if "a_file" in stderr and "clipvis: error:" in stderr]
    assert len(errors) == 1, [stderr for _, stderr, _ in results]
    assert all(code != 0 for _, _, code in results), [stderr for _, stderr, _ in results]
    assert (out / "results.json").is_file() and sorted(p.name for p in (out / "per_video").glob("*.json")) == [
        "1.json", "2.json", "cache.json"]


@pytest.mark.parametrize("failure", ["no_cuda", "no_weights"])
def test_a_machine_that_fails_before_its_first_input_ends_the_job(two_machine_job, failure) -> None:
    """The second machine has no CUDA but is told `--device cuda:0`, or lacks the weights file: it fails at its
    start, where it used to exit before joining the job, leaving the first machine's process in the group's start
    for good. Now it joins first and says it stopped at the gather the other makes once no input is left: both end,
    non-zero, without a traceback of a worker; the first machine took every input (it takes the next whenever it is
    free), none of them lost to the machine that could not start (it used to claim one before loading the weights)."""
    message = {"no_cuda": "--device cuda:0: CUDA is not available",
               "no_weights": "not_on_this_machine.safetensors"}[failure]
    results = two_machine_job[failure]
    (_, _, code), (_, stderr, second_code) = results
    assert code != 0 and second_code != 0, [err for _, err, _ in results]
    assert message in stderr
    assert all(not re.search(r"\[rank\d\]: Traceback|Traceback \(most recent call last\)", err)
               for _, err, _ in results), [err for _, err, _ in results]
    written = sorted(p.parent.name for p in (two_machine_job["root"] / failure).rglob("ytvis.json"))
    assert written == ["clip0", "clip1", "clip2", "clip3", "clip4"], written  # and the broken one failed


def run_threads(world_size: int, body) -> tuple[list, list[int]]:
    """``body(job)`` inside ``job.joined()`` on each of ``world_size`` thread ranks: each outcome (value or
    exception) and the gathers each rank made."""
    ranks = ThreadRanks(world_size)

    def rank(r: int):
        job = ThreadJob(ranks, r)
        try:
            with job.joined():
                return body(job)
        except Exception as error:  # noqa: BLE001 - the outcome under test
            return error

    with ThreadPoolExecutor(world_size) as pool:
        return list(pool.map(rank, range(world_size))), ranks.gathers


def test_an_error_after_the_last_gather_is_the_rank_own() -> None:
    """After ``last_gather`` nobody gathers again: an error there must not send RankStopped (no gather would meet
    it; the barrier would break after its timeout)."""

    def body(job):
        job.last_gather(job.rank)
        if job.rank == 0:
            raise ValueError("rank 0's own")
        return "done"

    outcomes, gathers = run_threads(2, body)
    assert isinstance(outcomes[0], ValueError) and outcomes[1] == "done" and gathers == [1, 1]


def test_ranks_that_fail_together_raise_their_own_errors() -> None:
    def body(job):
        job.gather("setup")
        raise KeyError(f"rank {job.rank}")

    outcomes, gathers = run_threads(3, body)
    assert [type(o) for o in outcomes] == [KeyError] * 3 and gathers == [2, 2, 2]


def test_a_rank_stopping_ends_the_others_at_their_next_gather() -> None:
    def body(job):
        values = job.gather(job.rank)
        if job.rank == 2:
            raise KeyError("rank 2 stops")
        job.gather("second")
        return values

    outcomes, gathers = run_threads(3, body)
    assert [type(o) for o in outcomes] == [OtherRankFailed, OtherRankFailed, KeyError]
    assert str(outcomes[0]) == "rank 2 stopped with an error" and gathers == [2, 2, 2]


def test_evaluate_on_two_machines_stops_when_one_cannot_start(two_machine_job) -> None:
    """The second machine cannot load the weights (a path missing there): it says so, rank 0 says that rank stopped
    and that nothing was scored; both end at once, non-zero; no results.json. (The two-machine job's last case: each
    agent's own output and exit code.)"""
    (_, first_err, first_code), (_, second_err, second_code) = two_machine_job["could_not_start"]
    assert first_code != 0 and second_code != 0, [first_err, second_err]
    assert "not_on_this_machine.safetensors" in second_err
    # each agent's torchrun reports the rank of its failed process: the first machine's must be rank 0
    ranks = [re.findall(r"^\s*rank\s+:\s+(\d+)", err, re.M) for err in (first_err, second_err)]
    assert ranks == [["0"], ["1"]], [first_err, second_err]
    assert "rank 1 stopped with an error; nothing was scored" in first_err, first_err
    assert not (two_machine_job["root"] / "could_not_start" / "results.json").exists()


def test_ranks_take_the_largest_inputs_first_and_the_next_when_free() -> None:
    """Rank 0 orders the inputs largest first (ties in input order); a rank takes the next input no rank took yet
    whenever it asks, so a rank held up by a long input leaves the rest to the others; every input goes once."""
    names = ["a", "b", "c", "d", "e"]
    sizes = {"a": 10, "b": 50, "c": 10, "d": 30, "e": 0}
    rank_0_took_one, rank_1_took_the_rest = threading.Event(), threading.Event()

    def body(job):
        taken = job.largest_first(names, [0, 1, 2, 3, 4], lambda p: sizes[names[p]])
        if job.rank == 1:
            assert rank_0_took_one.wait(20)
            mine = [names[p] for p in taken]
            rank_1_took_the_rest.set()
            return mine
        first = names[next(taken)]
        rank_0_took_one.set()
        assert rank_1_took_the_rest.wait(20)  # a long input: rank 1 takes the rest meanwhile
        return [first, *(names[p] for p in taken)]

    outcomes, gathers = run_threads(2, body)
    assert outcomes == [["b"], ["d", "a", "c", "e"]] and gathers == [1, 1]


def test_a_rank_that_finds_other_inputs_stops_with_one_line() -> None:
    def body(job):
        names = ["a.mp4", "b.mp4"] if job.rank == 0 else ["a.mp4", "c.mp4", "d.mp4"]
        taken = list(job.largest_first(names, range(len(names)), lambda p: 0))
        job.last_gather(taken)  # where rank 0 learns that rank 1 stopped

    outcomes, gathers = run_threads(2, body)
    assert gathers == [2, 2] and isinstance(outcomes[1], InputsDifferError) and isinstance(outcomes[0], OtherRankFailed)
    assert str(outcomes[1]) == (
        "rank 1 finds 3 input(s) and rank 0 finds 2, input 2 differs: c.mp4 here, b.mp4 on rank 0; every process "
        "must see the same inputs (a folder still being copied?)"
    )


def test_rank_0_shows_how_many_inputs_every_rank_ended() -> None:
    """Each rank counts the inputs it ends in the job's counter; rank 0's reporter shows the job's count, also while it
    waits for the other ranks at the end, and every rank's own count is kept apart from the next queue's."""
    names = ["a", "b", "c", "d"]
    rank_0_ended_one = threading.Event()

    class Shown:
        def __init__(self) -> None:
            self.job: list[tuple[int, int]] = []

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

        def job_progress(self, ended: int, total: int) -> None:
            self.job.append((ended, total))

    def body(job):
        assert job.inputs_ended() is None
        shown = Shown()
        reporter = JobProgressReporter(shown, job, interval=0.01)
        taken = job.largest_first(names, range(len(names)), lambda p: 0)
        reporter.batch_started(None)
        if job.rank == 0:
            reporter.video_finished(VideoSource(path=Path(names[next(taken)])), "a", 1, 1.0, [])
            rank_0_ended_one.set()
            # waiting at the end while rank 1 ends the rest: the thread shows them
            deadline = time.monotonic() + 20
            while (not shown.job or shown.job[-1] != (4, 4)) and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            assert rank_0_ended_one.wait(20)
            for p in taken:
                reporter.video_skipped(VideoSource(path=Path(names[p])), names[p])
        job.last_gather(None)
        reporter.close()
        second = list(job.claimed(["x"]))  # a later queue counts from 0
        return shown.job, job.inputs_ended(), second

    outcomes, _ = run_threads(2, body)
    (shown_0, after_0, second_0), (shown_1, after_1, second_1) = outcomes
    assert shown_0[0] == (0, 4) and (1, 4) in shown_0 and shown_0[-1] == (4, 4), shown_0
    assert shown_1 == []
    assert after_0 == after_1 == (0, 1) and sorted(second_0 + second_1) == ["x"]


def test_rank_0_value_reaches_every_rank_and_a_stopped_rank_ends_them() -> None:
    """``from_main`` hands rank 0's value (an input list, rank 0's stdin) to every rank; a rank that stopped before
    it is noticed there, as at a gather."""

    def body(job):
        return job.from_main(["a.mp4", "b.mp4"] if job.rank == 0 else ["not", "sent"])

    outcomes, gathers = run_threads(3, body)
    assert outcomes == [["a.mp4", "b.mp4"]] * 3 and gathers == [1, 1, 1]

    def stopping(job):
        if job.rank == 1:
            raise KeyError("rank 1 cannot read its inputs")
        return job.from_main("plan")

    outcomes, _ = run_threads(3, stopping)
    assert [type(o) for o in outcomes] == [OtherRankFailed, KeyError, OtherRankFailed]


def _rank_in_the_main_thread(ranks: ThreadRanks, other: callable) -> BaseException | None:
    """Rank 0 makes its last gather in the main thread (where signals are handled) while rank 1 runs ``other(job)``
    in a thread once rank 0 is inside the gather; rank 0's exception (or None)."""
    jobs = [ThreadJob(ranks, r) for r in range(2)]

    def rank1() -> None:
        while ranks.gathers[0] == 0:
            time.sleep(0.01)
        try:
            with jobs[1].joined():
                other(jobs[1])
        except BaseException:  # noqa: BLE001 - rank 1's own end, not under test
            pass

    thread = threading.Thread(target=rank1)
    thread.start()
    try:
        with jobs[0].joined():
            jobs[0].last_gather("counts")
    except BaseException as error:  # noqa: BLE001 - the outcome under test
        return error
    finally:
        thread.join()
    return None


def test_ctrl_c_at_the_last_gather_while_another_rank_is_interrupted_mid_video_ends_both_after_one_gather() -> None:
    """The terminal's Ctrl-C reaches rank 0, waiting at its last gather, and rank 1, still on a video: rank 1 says
    so at the gather; rank 0 holds its Ctrl-C until the gather is complete and stops without gathering again (it
    used to raise between the two collectives of the gather and pair its next one with the wrong half: gloo
    tracebacks)."""
    import signal

    def interrupted(job) -> None:
        # to the main thread itself (rank 0, inside its gather), which wakes from its wait and takes it there
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(0.2)
        raise KeyboardInterrupt

    ranks = ThreadRanks(2, timeout=10)
    error = _rank_in_the_main_thread(ranks, interrupted)
    assert isinstance(error, OtherRankFailed) and error.interrupted and str(error) == "rank 1 was interrupted"
    assert ranks.gathers == [1, 1]


def test_ctrl_c_at_the_last_gather_is_raised_once_it_is_complete_and_needs_no_other_gather() -> None:
    import signal

    def finishing(job) -> None:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # to rank 0, inside its gather
        time.sleep(0.2)
        job.last_gather("counts")

    ranks = ThreadRanks(2, timeout=10)
    # Ctrl-C as Python has it in a terminal: a test run started in the background by a non-interactive shell (CI)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler to deliver it to
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        error = _rank_in_the_main_thread(ranks, finishing)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert isinstance(error, KeyboardInterrupt) and ranks.gathers == [1, 1]


def test_ctrl_c_under_torchrun_while_one_rank_waits_for_the_other_ends_every_rank_without_a_traceback(
    tiny_weights, tmp_path
) -> None:
    """One rank is done with the short video and waits at the last gather when Ctrl-C reaches the job (the terminal
    signals every process; torchrun passes it on again): the long video is marked interrupted, the short one stays
    complete, and no worker prints a traceback (torchrun prints its own)."""
    import signal

    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "a_long.mp4", 3000, shift=0, flat=True)
    write_video(folder / "b_short.mp4", 2, shift=1)
    out = tmp_path / "out"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    process = start_process_tree([*launcher, "-m", "clipvis", *segment_args(folder, tiny_weights, out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=child_env(tmp_path / "cache"))
    deadline = time.monotonic() + 120
    while not (out / "b_short" / "ytvis.json").is_file() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    long_run = json.loads((out / "a_long" / RUN_JSON).read_text())
    assert long_run["status"] == "interrupted", err
    assert json.loads((out / "b_short" / RUN_JSON).read_text())["status"] == "complete"
    assert not re.search(r"\[rank\d\]", err) and "Unpickling" not in err, err
    assert "clipvis: error: interrupted; incomplete outputs were not written" in err, err


def test_a_rank_gone_without_a_word_ends_the_others_with_one_line() -> None:
    """kill -9 or the OOM killer: the rank never comes to the gather (gloo: "Connection closed by peer"; here the
    barrier breaks). The others raise RankLost, which rank 0 reports, instead of a collective's traceback."""

    def body(job):
        if job.rank == 1:
            raise SystemExit  # stands for a process gone without a word: no RankStopped, no gather
        return job.last_gather("counts")

    ranks = ThreadRanks(2, timeout=1)
    jobs = [ThreadJob(ranks, r) for r in range(2)]

    def rank(r: int):
        if r == 1:
            return "gone"
        try:
            with jobs[r].joined():
                return body(jobs[r])
        except Exception as error:  # noqa: BLE001 - the outcome under test
            return error

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(rank, range(2)))
    assert isinstance(outcomes[0], RankLost) and outcomes[0].speaks
    assert str(outcomes[0]) == "rank 1 ended without a word (killed? out of memory?)"


def test_a_rank_gone_without_a_word_is_a_json_event_before_rank_0_summary_of_its_own_inputs(capsys) -> None:
    """--log-format jsonl: rank 0's line about a rank gone without a word was a plain line after its summary event,
    and the summary mixed the job's input count with rank 0's own counts. Now the error is an event before the
    summary, which counts the inputs rank 0 took (scope "process"), and nothing plain follows."""
    from clipvis.cli.commands.segment import KEPT, TakenInputs, _finish
    from clipvis.cli.job_outcome import outcome_of_the_job
    from clipvis.cli.progress import JsonlReporter

    ranks = ThreadRanks(2, timeout=1)
    job, stream = ThreadJob(ranks, 0), io.StringIO()
    taken = TakenInputs(iter([4, 1]))
    assert list(taken) == [4, 1]

    def rank_0() -> int:  # in a thread: a rank that learns another is lost stops heeding Ctrl-C in the main thread
        try:
            with outcome_of_the_job(job, KEPT), job.joined():  # rank 1 never comes to the last gather
                _finish({"complete": 1, "skipped": 0, "failed": 1}, 6, job, JsonlReporter(stream, rank=0), taken)
        except typer.Exit as stop:
            return stop.exit_code
        return 0

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(rank_0).result() == 1
    assert capsys.readouterr().err == ""  # no plain line
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == [
        {"event": "error", "message": f"rank 1 ended without a word (killed? out of memory?); {KEPT}", "rank": 0},
        {"event": "summary", "inputs": 2, "complete": 1, "skipped": 0, "failed": 1, "scope": "process",
         "status": "failed", "message": "6 input(s) over 2 processes; this one took 2 and ended 1 complete, "
         "0 skipped, 1 failed", "rank": 0},
    ]


def _producer_options(tmp_path: Path, weights: Path, vocabulary: list[str], stride: int = 1) -> SegmentOptions:
    options = SegmentOptions(vocabulary=vocabulary, weights=str(weights), output=tmp_path / "out", stride=stride)
    options.checkpoint = checkpoint_identity(weights)
    return options


@pytest.mark.parametrize("case", ["copy", "other_weights", "vocabulary", "stride", "could_not_start"])
def test_ranks_with_another_model_vocabulary_or_settings_stop_before_any_input(tmp_path, case) -> None:
    """Every rank compares what produces its results with the others' (one gather, two when checkpoint files of one
    size must be compared by content) and, on a difference, every rank stops with the same one line. A copy of the
    weights at another path (another machine) is the same model; a rank that could not start is left out."""
    weights = tmp_path / "a.safetensors"
    weights.write_bytes(bytes(range(256)) * 8)
    copy = tmp_path / "elsewhere" / "a.safetensors"
    copy.parent.mkdir()
    copy.write_bytes(weights.read_bytes())
    os.utime(copy, ns=(1, 1))
    other = tmp_path / "b.safetensors"
    other.write_bytes(bytes(reversed(range(256))) * 8)
    second = {
        "copy": (copy, ["box", "sky"], 1), "other_weights": (other, ["box", "sky"], 1),
        "vocabulary": (weights, ["box", "cat"], 1), "stride": (weights, ["box", "sky"], 2),
        "could_not_start": None,
    }[case]
    mine = [_producer_options(tmp_path, weights, ["box", "sky"]),
            None if second is None else _producer_options(tmp_path, *second)]

    outcomes, gathers = run_threads(2, lambda job: check_same_producer(job, mine[job.rank]))
    if case in ("copy", "could_not_start"):
        assert outcomes == [None, None] and gathers == ([2, 2] if case == "copy" else [1, 1])
        return
    assert all(isinstance(o, RanksDifferError) for o in outcomes) and str(outcomes[0]) == str(outcomes[1])
    expected = {
        "other_weights": f"rank 1 has other weights (same size, other content): {other} (2048 bytes) on rank 1, "
                         f"{weights} (2048 bytes) on rank 0",
        "vocabulary": "rank 1 has another vocabulary: class 2 is 'cat' on rank 1, 'sky' on rank 0",
        "stride": "rank 1 has other settings: --stride 2 on rank 1, 1 on rank 0",
    }[case]
    assert str(outcomes[0]) == expected + "; every process must run the same weights, vocabulary and settings, " \
        "nothing was run"


def test_evaluate_on_two_machines_with_other_weights_runs_nothing(two_machine_job) -> None:
    """The second machine is given other weights (the same size): no video runs, rank 0 names the difference in one
    line, both machines' processes exit 1, and the output folder is not made (its per-video cache would have held
    results of two models under rank 0's key, reused by later runs)."""
    results = two_machine_job["other_weights"]
    errors = [stderr for _, stderr, _ in results]
    assert all(code == 1 for _, _, code in results), errors
    lines = [line for err in errors for line in err.splitlines() if line.startswith("clipvis: error:")]
    assert len(lines) == 1 and "has other weights (same size, other content)" in lines[0], errors
    assert all(not re.search(r"\[rank\d\]: Traceback|Traceback \(most recent call last\)", err)
               for err in errors), errors
    assert not (two_machine_job["root"] / "other_weights").exists()


def test_a_usage_error_one_rank_finds_alone_once_the_job_started_is_said_by_that_rank(monkeypatch, capsys) -> None:
    """The application keeps a torchrun worker's usage errors quiet where its machine's first worker says them; one
    that this rank alone found is said here, with its rank."""
    import typer

    from clipvis.cli.job_outcome import outcome_of_the_job

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr("clipvis.cli.distributed.SILENT_STOP_GRACE_S", 0.0)
    job = DistributedRun(rank=1, world_size=2, local_rank=1)
    with pytest.raises(typer.Exit) as ended, outcome_of_the_job(job, "kept"):
        raise typer.BadParameter("a list without NUL characters")
    assert ended.value.exit_code == 2
    said = capsys.readouterr().err
    assert said.startswith("clipvis: error: rank 1: ") and said.count("\n") == 1 and "without NUL" in said, said
    job.main_stopped_too = True  # rank 0 found it too and says it
    with pytest.raises(typer.Exit), outcome_of_the_job(job, "kept"):
        raise typer.BadParameter("a list without NUL characters")
    assert capsys.readouterr().err == ""


def test_rank_0_summary_counts_every_rank_inputs_skipped_as_complete() -> None:
    """Under torchrun rank 0's last line summed every rank's skipped inputs without saying which were complete
    already (a folder another process was writing is skipped too); now it says how many of them were."""
    from clipvis.cli.commands.segment import _finish
    from clipvis.cli.progress import JsonlReporter

    streams = [io.StringIO(), io.StringIO()]
    counts = [{"complete": 1, "skipped": 2, "failed": 0, "already_complete": 2},
              {"complete": 0, "skipped": 3, "failed": 0, "already_complete": 2}]  # one folder busy

    def body(job):
        return _finish(counts[job.rank], 6, job, JsonlReporter(streams[job.rank], rank=job.rank))

    outcomes, _ = run_threads(2, body)
    assert outcomes == [0, 0] and streams[1].getvalue() == ""
    summary = json.loads(streams[0].getvalue())
    assert summary["message"] == ("6 input(s) over 2 processes: 1 complete, 5 skipped (4 already complete, 1 being "
                                  "written by another process), 0 failed")
    # the count a program reads, beside the line a person does
    assert (summary["skipped"], summary["already_complete"]) == (5, 4), summary


def test_a_lost_store_leaves_an_input_whose_files_are_written_complete_and_ends_the_rank_with_one_line(
    videos, tiny_weights, tmp_path, one_thread, capsys
) -> None:
    """torchrun's agent, which hosts the job's store, killed: counting a finished input raised the store client's
    DistNetworkError ("Broken pipe"), which recorded the input "failed" in its run.json over the "complete" one, with
    its files all written, and the rank died with C++ tracebacks. Now the input stays complete and the rank stops
    with RankLost: one line (the launcher sets TORCH_CPP_LOG_LEVEL=ERROR under torchrun for the C++ warnings)."""
    from clipvis.cli.commands.segment import KEPT
    from clipvis.cli.job_outcome import outcome_of_the_job
    from clipvis.cli.predictor_loading import load_predictor
    from clipvis.cli.progress import JsonlReporter
    from clipvis.cli.segment import SegmentRunner

    class AgentKilled(DistributedRun):
        """Rank 0 of two whose store is gone once its first input is written (the input counted ended)."""

        gone = False

        def _store_add(self, key: str, amount: int) -> int:
            self.gone = self.gone or (key.startswith("clipvis/ended/") and amount == 1)
            if self.gone:
                raise torch.distributed.DistNetworkError("Broken pipe")
            return amount

    job = AgentKilled(rank=0, world_size=2, local_rank=0)
    options = SegmentOptions(["bar", "sky"], str(tiny_weights), output=tmp_path / "out", formats=("ytvis",))
    runner = SegmentRunner(load_predictor(options), options, JobProgressReporter(JsonlReporter(io.StringIO()), job))
    sources = [VideoSource(videos / "clip0.mp4"), VideoSource(videos / "clip1.mp4")]
    with pytest.raises(typer.Exit) as ended, outcome_of_the_job(job, KEPT):
        list(runner.run_batch(sources, job.claimed([0, 1])))
    assert ended.value.exit_code == 1
    record = json.loads((tmp_path / "out" / "clip0" / "run.json").read_text())
    assert record["status"] == "complete" and record["error"] is None, record
    assert (tmp_path / "out" / "clip0" / "ytvis.json").is_file() and not (tmp_path / "out" / "clip1").exists()
    said = capsys.readouterr().err
    assert said == f"clipvis: error: rank 0 lost the job's store (torchrun's agent killed?); {KEPT}\n", said


class _CountingStore:
    """torchrun's store as `meet_before_the_group` uses it: counters and keys."""

    def __init__(self) -> None:
        self.values: dict[str, int | bytes] = {}

    def add(self, key: str, amount: int) -> int:
        self.values[key] = int(self.values.get(key, 0)) + amount
        return int(self.values[key])

    def set(self, key: str, value: str) -> None:
        self.values[key] = value.encode()

    def check(self, keys: list[str]) -> bool:
        return all(key in self.values for key in keys)

    def get(self, key: str) -> bytes:
        return bytes(self.values[key])


def test_ranks_meeting_before_the_group_give_up_after_the_groups_timeout(monkeypatch) -> None:
    """A rank that ended without telling the store (a usage error) left the others looking for it without end; they
    wait the group's own timeout, then go on to its rendezvous (which says what follows); a rank's told failure is
    still said with its rank, to that command's ranks only (a second command in the job met the first's failure)."""
    from datetime import timedelta

    from clipvis.cli import distributed

    stores = [_CountingStore(), _CountingStore()]
    monkeypatch.setattr(distributed, "_agent_store", lambda: stores[0])
    monkeypatch.setattr(distributed, "_BEFORE_GROUP_POLL_S", 0.01)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    started = time.monotonic()
    assert distributed.meet_before_the_group(0, 2, timeout=timedelta(seconds=0.2)) is None
    assert 0.2 <= time.monotonic() - started < 5
    stores.pop(0)
    assert distributed.tell_ranks_before_the_group("DIR: no training run to resume here")
    assert distributed.meet_before_the_group(0, 2) == "rank 1: DIR: no training run to resume here"
    # the job's next clipvis command (its store lives on): not the first one's failure, its own meeting
    assert distributed.meet_before_the_group(0, 2, timeout=timedelta(seconds=0.1)) is None
