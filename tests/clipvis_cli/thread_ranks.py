"""torchrun ranks as threads of one process: DistributedRun's own protocol (``joined``, ``gather``, ``from_main``,
``last_gather``, ``claimed``) over a barrier and a locked counter instead of gloo and the job's store, so tests can run
it without processes or sockets."""

from __future__ import annotations

import threading
from typing import Any

from clipvis.cli.distributed import DistributedRun


class ThreadRanks:
    """What the ranks' threads share: a barrier (a gather some rank never makes breaks it after ``timeout`` seconds
    instead of hanging the test), the exchanged values, how many gathers each rank made, and the job's counters."""

    def __init__(self, world_size: int, timeout: float = 20.0) -> None:
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size, timeout=timeout)
        self.slots: list[Any] = [None] * world_size
        self.gathers = [0] * world_size
        self.counters: dict[str, int] = {}
        self.lock = threading.Lock()


class ThreadJob(DistributedRun):
    """DistributedRun with the ranks as threads: the real protocol (``joined``, ``gather``), a barrier for gloo."""

    def __init__(self, ranks: ThreadRanks, rank: int) -> None:
        super().__init__(rank, ranks.world_size, rank)
        self.ranks = ranks

    def start(self) -> None: ...
    def stop(self, synchronise: bool = True) -> None: ...

    def _exchange(self, value: Any) -> list[Any]:
        self.ranks.gathers[self.rank] += 1
        self.ranks.slots[self.rank] = value
        self.ranks.barrier.wait()
        values = list(self.ranks.slots)
        self.ranks.barrier.wait()
        return values

    def _broadcast(self, value: Any) -> Any:
        self.ranks.slots[self.rank] = value
        self.ranks.barrier.wait()
        main = self.ranks.slots[0]
        self.ranks.barrier.wait()
        return main

    def _store_add(self, key: str, amount: int) -> int:
        with self.ranks.lock:
            value = self.ranks.counters.get(key, 0) + amount
            self.ranks.counters[key] = value
        return value
