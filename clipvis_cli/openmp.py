"""One OpenMP thread team at a time, so that PyTorch's CPU workers keep spinning between parallel regions.

PyTorch's CPU kernels run on OpenMP: GNU libgomp in the Linux wheels. Every thread that enters a parallel region
gets a team of worker threads of its own, kept after the region for the next one. libgomp counts the workers of
every team, and while that count exceeds the CPUs a worker waits for the next region only ~100 spins before it
sleeps on a futex, so every region then pays a sleep and a wake-up per worker.

`segment` loads the model and embeds the vocabulary on the caller's thread and then runs the network on a model
thread of its own (clipvis.cli.streaming, so that decoding, network and encoding overlap): two teams. On 2 cores with
2 torch threads the tiny bench model (bench/bench_segment.py part a) ran 8-10 % slower on the model thread than on
the main thread, with ~37,000 voluntary context switches per 120 frames against ~30 on the main thread.

:func:`release_openmp_workers` ends the calling thread's team (``omp_pause_resource_all(omp_pause_soft)``, OpenMP
5.0), so the model thread's team is the only one; the calling thread gets a new team if it enters a parallel region
again. A thread's team also ends when the thread exits, so each video's model thread leaves none behind.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: release threads, keep the runtime's state


def _libgomp() -> ctypes.CDLL | None:
    """The GNU OpenMP runtime already loaded in this process (PyTorch's), or None: not Linux, not loaded, or too
    old to pause. Looked up at each call (~1 ms), as the library may be loaded later. Only libgomp is handled: its
    throttled spinning is what costs, and other runtimes (LLVM, Intel) treat a pause differently."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    mapped = {line.rsplit(maxsplit=1)[-1] for line in maps.splitlines() if line.strip()}  # the last field: a path
    paths = sorted(path for path in mapped if "/libgomp" in path)
    if len(paths) != 1:  # none, or two runtimes whose counts are separate: pausing one would not be enough
        return None
    try:
        library = ctypes.CDLL(paths[0])
        pause = library.omp_pause_resource_all
    except (OSError, AttributeError):
        return None
    pause.argtypes = [ctypes.c_int]
    pause.restype = ctypes.c_int
    return library


def release_openmp_workers() -> bool:
    """End the calling thread's OpenMP worker team (a no-op without libgomp). Call it from a thread that is about to
    hand its PyTorch work to another thread. True when libgomp accepted the pause."""
    library = _libgomp()
    if library is None:
        return False
    return library.omp_pause_resource_all(OMP_PAUSE_SOFT) == 0
