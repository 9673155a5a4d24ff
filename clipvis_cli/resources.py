"""How much of the machine this process may use: its CPUs, shared among the processes torchrun started here."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuShare:
    """The CPUs this process may run on and the processes of this machine that share them."""

    cpus: int  # its affinity mask, as set by taskset, cgroups' cpusets or SLURM (os.cpu_count() where there is none)
    processes: int  # the processes torchrun started on this machine (LOCAL_WORLD_SIZE), 1 without torchrun

    @property
    def per_process(self) -> int:
        """This process' share of the CPUs, one at least."""
        return max(1, self.cpus // self.processes)


def cpu_share() -> CpuShare:
    """The CPUs this process may run on and ``LOCAL_WORLD_SIZE`` (a missing or malformed one is 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    return CpuShare(cpus=cpus, processes=processes)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as set by taskset, cgroups' cpusets or SLURM), divided
    among the processes torchrun started on this machine (``LOCAL_WORLD_SIZE``)."""
    return cpu_share().per_process
