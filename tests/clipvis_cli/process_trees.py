"""The tests' process trees (a torchrun job, `clipvis train --num-gpus`): ended whole, never their first process alone.

A job that hit its timeout (``subprocess.run(..., timeout=...)`` kills the process it started) or a test that failed
before waiting for it left the job's workers running, busy on 2 cores for minutes (a 5000-iteration training run),
or for good. Killing the tree's process group is not enough: torchrun starts each worker in a session of its own
(``start_new_session``), and a worker whose launcher is gone is a child of init. So every process of a tree carries a
mark in its environment (inherited by whatever it starts), and `kill_process_tree` kills the processes that carry it
(Linux: /proc), then the first process' group. The autouse fixture ``no_process_tree_left`` (tests/clipvis_cli/
conftest.py) ends, after each test, the trees it started that are still running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The environment variable marking the processes of one tree (its value: the tree's own token).
TREE_MARK = "CLIPVIS_TEST_PROCESS_TREE"

_started: list[tuple[subprocess.Popen, str]] = []  # this test process' trees and their tokens


def start_process_tree(command: Sequence[str], env: dict[str, str] | None = None,
                       **popen_options) -> subprocess.Popen:
    """``subprocess.Popen(command, ...)`` in a session of its own, its processes marked as one tree."""
    token = uuid.uuid4().hex
    process = subprocess.Popen(command, env={**(os.environ if env is None else env), TREE_MARK: token},
                               start_new_session=True, **popen_options)
    _started.append((process, token))
    return process


def run_process_tree(command: Sequence[str], timeout: float, input: str | None = None,
                     env: dict[str, str] | None = None, **popen_options) -> subprocess.CompletedProcess:
    """``subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input, env=env)``, except that
    a timeout (or any other interruption) kills the whole tree before subprocess.TimeoutExpired is raised."""
    process = start_process_tree(command, env=env, stdin=subprocess.PIPE if input is not None else None,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_options)
    try:
        out, err = process.communicate(input, timeout=timeout)
    except BaseException:
        kill_process_tree(process)
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def kill_process_tree(process: subprocess.Popen) -> tuple[Any, Any]:
    """SIGKILL to every process of ``process``' tree (those carrying its mark, and its process group), then wait for
    ``process`` itself; what it wrote to its stdout and stderr pipes (``communicate``: all of it, also after a
    ``communicate(timeout=...)`` that timed out), None for one not piped or not read to its end."""
    token = next((token for started, token in _started if started is process), None)
    if token is not None:
        for pid in marked_processes(token):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:  # ended meanwhile
                pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its group (start_new_session: the group is its process id)
    except OSError:
        pass
    try:
        return process.communicate(timeout=30)  # reaped, its pipes read to their end and closed
    except subprocess.TimeoutExpired:
        return None, None


def marked_processes(token: str) -> list[int]:
    """The process ids of the running processes whose environment marks them as the tree ``token`` (empty where
    /proc cannot tell)."""
    mark = f"{TREE_MARK}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc/self/environ").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:  # ended meanwhile, or another user's
            continue
    return found


def end_process_trees() -> None:
    """Kill every tree this test process started whose first process, or any other, is still running."""
    while _started:
        process, token = _started[-1]
        if process.poll() is None or marked_processes(token):
            kill_process_tree(process)
        _started.pop()
