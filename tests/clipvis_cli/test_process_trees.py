"""The tests' torchrun jobs end whole: a job that times out leaves none of its workers running."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .process_trees import run_process_tree

# A launcher as torchrun is one: it starts its worker in a session of its own (torchrun's start_new_session), says
# the worker's process id, and waits.
LAUNCHER = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
open(sys.argv[1], "w").write(str(worker.pid))
time.sleep(120)
"""


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped by init, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc (Linux)")
def test_a_job_that_times_out_leaves_no_worker_running(tmp_path: Path) -> None:
    """`subprocess.run([... torch.distributed.run ...], timeout=...)` killed torchrun alone on a timeout: its workers,
    each in a session of its own, ran on (busy for minutes on a 2-core machine, or for good)."""
    said = tmp_path / "worker.pid"
    with pytest.raises(subprocess.TimeoutExpired):
        run_process_tree([sys.executable, "-c", LAUNCHER, str(said)], timeout=2)
    worker = int(said.read_text())
    deadline = time.monotonic() + 10  # SIGKILL ends a process soon, not at once (a loaded machine: tens of ms)
    while running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(worker)
