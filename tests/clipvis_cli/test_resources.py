"""clipvis.cli.resources: the CPUs a process may use, shared among the processes torchrun started on its machine."""

from __future__ import annotations

import os

from clipvis.cli.resources import CpuShare, cpu_share, usable_cpus


def test_the_cpus_of_the_affinity_mask_are_shared_among_the_local_processes(monkeypatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert cpu_share() == CpuShare(cpus=16, processes=1) and usable_cpus() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun --nproc-per-node 8: 2 CPUs each
    assert cpu_share() == CpuShare(cpus=16, processes=8) and usable_cpus() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")  # more processes than CPUs: one each still
    assert usable_cpus() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "eight")  # not a number: this process alone
    assert cpu_share().processes == 1


def test_without_an_affinity_mask_the_cpu_count_is_taken(monkeypatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS, Windows
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cpu_share() == CpuShare(cpus=6, processes=2) and usable_cpus() == 3
