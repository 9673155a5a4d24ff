"""What the data loader may use on this machine: its worker count (the CPUs this process may run on) and the shared
memory its workers pass batches through."""

from __future__ import annotations

import logging
import shutil

from clipvis.cli.messages import counted
from clipvis.cli.resources import cpu_share

log = logging.getLogger("clipvis.train")


def loader_workers(asked: int) -> int:
    """``DATALOADER.NUM_WORKERS``, at most this process' share of the CPUs it may run on (its affinity: taskset, a
    cgroup's cpuset, SLURM) among the training processes of this machine (``LOCAL_WORLD_SIZE``: torchrun's, or the
    ``--num-gpus`` count), one at least, with one ``clipvis: warning:`` line from rank 0 when that is fewer (the
    shipped configs' 4 on a 2-core machine; 2 processes x 2 workers there). More workers than CPUs only compete for
    them, and PyTorch printed its raw UserWarning about it once per loader. The data a run draws does not depend on
    the number of workers (clipvis.cli.train.data)."""
    machine = cpu_share()
    cpus, processes, share = machine.cpus, machine.processes, machine.per_process
    if asked <= share:
        return asked
    plural = "" if share == 1 else "es"
    if processes == 1:
        log.warning("warning: DATALOADER.NUM_WORKERS is %d but this process may use %d CPU%s: the data loads with %d "
                    "worker process%s", asked, cpus, "" if cpus == 1 else "s", share, plural)
    else:
        log.warning("warning: DATALOADER.NUM_WORKERS is %d but the %d training processes of this machine share %d "
                    "CPU%s: the data loads with %d worker process%s each", asked, processes, cpus,
                    "" if cpus == 1 else "s", share, plural)
    return share


#: Below this much free shared memory, loader workers are warned about (a container's default /dev/shm is 64 MB).
SHARED_MEMORY_WARNING_BYTES = 1 << 30


def check_shared_memory(num_workers: int, folder: str = "/dev/shm") -> None:
    """One ``clipvis: warning:`` line when loader workers will run (``num_workers`` > 0) and ``folder``, where they
    hand their batches to the training process, has less than `SHARED_MEMORY_WARNING_BYTES` free: when it fills,
    the workers fail and PyTorch's loader waits for their batches for good (a container's 64 MB default: the run hung
    at its first iteration, a SIGTERM only asked for a checkpoint that never came). Nothing where it cannot be read."""
    if num_workers <= 0:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < SHARED_MEMORY_WARNING_BYTES:
        log.warning("warning: %s has %d MB free, and the %s pass every batch through it: PyTorch's data loader hangs "
                    "when it fills; give the container more (docker run --shm-size 8g; Kubernetes: an emptyDir of "
                    "medium Memory at /dev/shm) or set DATALOADER.NUM_WORKERS=0", folder, free // 2**20,
                    counted(num_workers, "loader worker"))
