"""Several cases of a 2-rank command in one torchrun job (torchrun_cases; the two-machine job of
tests/clipvis_cli/test_distributed.py runs the same launcher under two agents: write_cases, case_outcomes): each rank
runs ``python -m clipvis`` once per case, in sequence, inside the same two processes (one process start, torch import
and rendezvous for all of them, ~5-10 s each on 2 cores, instead of one job per case).

Each case's process group is a real gloo group over torchrun's store (under a prefix of its own: gloo's addresses
of the case before are stale). Every case but the last writes each rank's stdout, stderr and exit status to files,
and its silent ranks do not wait ``SILENT_STOP_GRACE_S`` (nothing ends the job's processes between cases). The last
case runs as a job on its own would: the ranks' own exit, torchrun's output and exit status, the grace. Each case
starts with the stop signals' handlers a fresh process has (a case stopped by a signal leaves them ignored)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .process_trees import run_process_tree, start_process_tree

LAUNCHER = """\
import json, os, runpy, signal, sys
from pathlib import Path

import torch.distributed as dist

import clipvis.cli.distributed as distributed

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
folder = Path(os.environ["CLIPVIS_CASES"])
cases = json.loads((folder / "cases.json").read_text())
init = dist.init_process_group
number = 0


def init_for_this_case(backend, **kwargs):
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False)
    kwargs.update(rank=rank, world_size=world)
    init(backend, store=dist.PrefixStore(f"case{number}/", store), **kwargs)


def run(args):
    for name in ("SIGTERM", "SIGHUP"):  # as a fresh process has them (a case stopped by a signal ignores them)
        signal.signal(getattr(signal, name), signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["clipvis", *args]
    runpy.run_module("clipvis", run_name="__main__")


dist.init_process_group = init_for_this_case
grace, distributed.SILENT_STOP_GRACE_S = distributed.SILENT_STOP_GRACE_S, 0.0
for number, ranks_args in enumerate(cases[:-1]):
    distributed.BEFORE_GROUP_KEYS = f"case{number}/clipvis/before-group"  # the ranks meet before each case's group
    saved = {}
    for fd, stream, suffix in ((1, sys.stdout, "out"), (2, sys.stderr, "err")):
        stream.flush()
        saved[fd] = os.dup(fd)
        with open(folder / f"{number}.{rank}.{suffix}", "w") as file:
            os.dup2(file.fileno(), fd)
    try:
        run(ranks_args[rank])
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
            stream.flush()
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
    (folder / f"{number}.{rank}.code").write_text(str(code))
number = len(cases) - 1
distributed.BEFORE_GROUP_KEYS = f"case{number}/clipvis/before-group"
distributed.SILENT_STOP_GRACE_S = grace
run(cases[-1][rank])
"""


@dataclass
class Outcome:
    """One case's result: ``stdout`` and ``stderr``, every rank's (rank 0's first), and ``codes``, each rank's exit
    status; for the last case, torchrun's stdout, stderr and exit status, as one job's."""

    stdout: str
    stderr: str
    codes: list[int]


def torchrun_cases(folder: Path, cases: list[list[list[str]]], timeout: float = 300,
                   env: dict[str, str] | None = None, stdin: str | None = None) -> list[Outcome]:
    """Run ``cases`` (each: every rank's clipvis arguments, rank 0's first) in one 2-process torchrun job, with
    ``folder`` for the launcher and the cases' files; each case's Outcome. ``stdin``: the job's standard input, which
    its processes share (for the last case: the others must not read it)."""
    command, environ = _job(folder, cases, env)
    done = run_process_tree(command, timeout=timeout, env=environ, input=stdin)  # on a timeout, every worker killed
    return job_outcomes(folder, len(cases), done.stdout, done.stderr, done.returncode)


def start_torchrun_cases(folder: Path, cases: list[list[list[str]]], prelude: str = "") -> subprocess.Popen:
    """``torchrun_cases`` started (its process tree's torchrun, stdout and stderr piped), for a caller that acts on
    each case while it runs (a signal to one of its ranks); ``prelude``: Python code each rank runs before the first
    case (patches of its own; the global ``number`` is the running case's). `job_outcomes` reads the cases' ends."""
    command, environ = _job(folder, cases, None, prelude)
    return start_process_tree(command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def case_ended(folder: Path, number: int, world_size: int = 2) -> bool:
    """Whether every rank of case ``number`` (not the last) has ended it."""
    return all((folder / f"{number}.{rank}.code").is_file() for rank in range(world_size))


def job_outcomes(folder: Path, count: int, stdout: str, stderr: str, returncode: int) -> list[Outcome]:
    """The Outcomes of a job of ``count`` cases over ``folder`` that ended with torchrun's ``stdout``, ``stderr``
    and ``returncode``."""
    outcomes = [Outcome("".join(out for out, _, _ in ranks), "".join(err for _, err, _ in ranks),
                        [code for _, _, code in ranks])
                for ranks in case_outcomes(folder, count - 1, 2, stderr)]
    outcomes.append(Outcome(stdout, stderr, [returncode]))
    return outcomes


def _job(folder: Path, cases: list[list[list[str]]], env: dict[str, str] | None,
         prelude: str = "") -> tuple[list[str], dict[str, str]]:
    launcher = write_cases(folder, cases, prelude)
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {}), "CLIPVIS_CASES": str(folder)}
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(launcher)], environ


def write_cases(folder: Path, cases: list[list[list[str]]], prelude: str = "") -> Path:
    """The launcher (its path, ``prelude`` first) and ``cases`` (every rank's clipvis arguments of each case) in
    ``folder``, which the job's processes find in ``$CLIPVIS_CASES``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "launch.py").write_text(prelude + LAUNCHER)
    (folder / "cases.json").write_text(json.dumps([[[str(arg) for arg in args] for args in ranks] for ranks in cases]))
    return folder / "launch.py"


def case_outcomes(folder: Path, count: int, world_size: int, job_stderr: str) -> list[list[tuple[str, str, int]]]:
    """The first ``count`` cases' outcomes of a job over ``folder``: each rank's (stdout, stderr, exit status), in rank
    order; ``job_stderr`` says why when a case did not end."""
    outcomes = []
    for number in range(count):
        codes = [folder / f"{number}.{rank}.code" for rank in range(world_size)]
        if not all(code.is_file() for code in codes):  # what its ranks said, then the job's
            said = "".join(f"rank {rank}: {err.read_text(errors='replace').rstrip()}\n" for rank in range(world_size)
                           if (err := folder / f"{number}.{rank}.err").is_file())
            raise AssertionError(f"case {number} did not end:\n{said}{job_stderr}")
        outcomes.append([((folder / f"{number}.{rank}.out").read_text(), (folder / f"{number}.{rank}.err").read_text(),
                          int(codes[rank].read_text())) for rank in range(world_size)])
    return outcomes
