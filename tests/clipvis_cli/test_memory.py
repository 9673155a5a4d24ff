"""HeapTrimmer: free heap memory goes back to the kernel while a long run is in progress."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from clipvis.cli.memory import GrowthTrigger, HeapTrimmer

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")


def trimmer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "clipvis-heap-trimmer"]


# Mid-sized buffers (below glibc's mmap threshold once it has adapted) come from the heap; small live allocations
# between them (as a long run's bookkeeping) stop free() from returning the space, so freeing the buffers leaves
# ~200 MB resident in the heap: the fragmentation that made a long run's memory grow. Run in a fresh process: the
# heap and glibc's adaptive thresholds of this one depend on the tests before (models run on other threads).
TRIM_SCRIPT = """
import numpy as np
from clipvis.cli.memory import HeapTrimmer, resident_bytes

trimmer = HeapTrimmer()
warm_up = np.ones(1 << 18)
del warm_up  # freeing a 2 MiB mmapped buffer raises glibc's mmap threshold above 1 MiB
buffers, pins = [], []
for _ in range(200):
    buffers.append(np.ones(1 << 17))  # 1 MiB
    pins.append(np.ones(1 << 10))  # 8 KiB, stays alive
del buffers
before = resident_bytes()
trimmer.trim()
after = resident_bytes()
print(trimmer.active, trimmer.trims, before, after)
"""


@linux_only
def test_trim_returns_freed_heap_memory_to_the_kernel() -> None:
    import subprocess

    result = subprocess.run([sys.executable, "-c", TRIM_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    active, trims, before, after = result.stdout.split()
    assert active == "True"
    assert int(trims) == 1
    assert int(before) - int(after) > 100 * 2**20, (before, after)


# A run shorter than the growth check (one short video per `segment` call, from Python): the trimmer's thread never
# trims, and free() no longer does (NO_TRIM_IN_FREE outlives the trimmer), so without a trim on exit every call left
# its free heap resident (a loop of 90 one-video calls: ~200 MB of free heap, RSS 897 -> 1029 MB).
EXIT_SCRIPT = """
import numpy as np
from clipvis.cli.memory import HeapTrimmer, resident_bytes

with HeapTrimmer(period_s=1000) as trimmer:  # its thread never wakes up
    buffers, pins = [], []
    for _ in range(200):
        buffers.append(np.ones(1 << 17))  # 1 MiB, from the heap (buffers up to 64 MiB are, while open)
        pins.append(np.ones(1 << 10))  # 8 KiB, stays alive
    del buffers
    before = resident_bytes()
after = resident_bytes()
print(trimmer.trims, before, after)
"""


@linux_only
def test_closing_the_trimmer_returns_the_runs_free_heap() -> None:
    import subprocess

    result = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    trims, before, after = map(int, result.stdout.split())
    assert trims == 1
    assert before - after > 100 * 2**20, (before, after)


@linux_only
def test_trims_periodically_while_open_and_stops_on_exit() -> None:
    with HeapTrimmer(period_s=0.01, growth_bytes=None) as trimmer:
        assert len(trimmer_threads()) == 1
        deadline = time.monotonic() + 5
        while trimmer.trims < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert trimmer.trims >= 3
    assert trimmer_threads() == []
    count = trimmer.trims
    time.sleep(0.05)
    assert trimmer.trims == count


def test_trims_only_when_resident_memory_grew() -> None:
    """Every trim makes the model fault its transient buffers back in: a steady run is not trimmed at all; a run
    whose resident size grows is trimmed once it has grown by growth_bytes over the size seen after the last
    trim."""
    trigger = GrowthTrigger(growth_bytes=100)
    assert [trigger.due(r) for r in (1000, 1050, 1100, 1090)] == [False, False, False, False]  # reference 1000
    assert trigger.due(1101)  # grown by more than 100
    assert [trigger.due(r) for r in (900, 990, 1001)] == [False, False, True]  # new reference: 900
    assert GrowthTrigger(growth_bytes=None).due(5) and GrowthTrigger(growth_bytes=10).due(None)


@linux_only
def test_trimmer_thread_trims_on_growth() -> None:
    with HeapTrimmer(period_s=0.01, growth_bytes=16 * 2**20) as trimmer:
        time.sleep(0.1)
        quiet = trimmer.trims
        buffers, pins = [], []
        for _ in range(64):  # 64 MiB in the heap, pinned by small live allocations: resident until trimmed
            buffers.append(np.ones(1 << 17))
            pins.append(np.ones(1 << 10))
        del buffers
        deadline = time.monotonic() + 5
        while trimmer.trims == quiet and time.monotonic() < deadline:
            time.sleep(0.01)
    assert quiet == 0
    assert trimmer.trims >= 1
    del pins


def test_disabled_trimmer_does_nothing() -> None:
    with HeapTrimmer(enabled=False) as trimmer:
        assert not trimmer.active
        assert trimmer_threads() == []
        trimmer.trim()
    assert trimmer.trims == 0


def test_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="period_s"):
        HeapTrimmer(period_s=0)
    with pytest.raises(ValueError, match="period_s must be a positive number of seconds, not nan"):
        HeapTrimmer(period_s=float("nan"))  # accepted: its thread died at its first wait, nothing trimmed
    with pytest.raises(ValueError, match="growth_bytes"):
        HeapTrimmer(growth_bytes=-1)


def test_a_nested_block_on_one_trimmer_keeps_it_running_until_the_outer_one_ends() -> None:
    trimmer = HeapTrimmer(period_s=1000)
    if not trimmer.active:
        pytest.skip("no malloc_trim in this C library")
    with trimmer:
        with trimmer:
            pass
        assert len(trimmer_threads()) == 1  # the inner block's end stopped it: the outer block went on untrimmed
    assert trimmer_threads() == []


HUGE_PAGES_SCRIPT = """
import sys
from clipvis.cli.memory import prefer_huge_pages
set_here = prefer_huge_pages()
import torch
x = torch.ones(64 * 2**20 // 4)  # 64 MB: above PyTorch's 2 MB huge-page threshold
huge = sum(int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if line.startswith("AnonHugePages:"))
print(set_here, huge)
"""


def _transparent_huge_pages() -> str | None:
    try:
        setting = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return None
    return setting.split("[")[1].split("]")[0] if "[" in setting else None


@pytest.mark.parametrize("preset", [None, "0"])
def test_prefer_huge_pages_backs_large_tensors_with_huge_pages_unless_the_user_said_no(preset) -> None:
    import os
    import subprocess

    if _transparent_huge_pages() not in ("always", "madvise") or not os.path.exists("/proc/self/smaps_rollup"):
        pytest.skip("this kernel does not offer transparent huge pages to madvise")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if preset is not None:
        env["THP_MEM_ALLOC_ENABLE"] = preset
    result = subprocess.run([sys.executable, "-c", HUGE_PAGES_SCRIPT], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    set_here, huge_kb = result.stdout.split()
    if preset is None:
        assert set_here == "True" and int(huge_kb) >= 32 * 1024  # most of the 64 MB in 2 MB pages
    else:
        assert set_here == "False"
        if _transparent_huge_pages() == "madvise":
            assert int(huge_kb) < 32 * 1024  # the user's "0" kept: no madvise, no huge pages


SHARE = "from clipvis.cli.memory import share_one_malloc_arena; print(share_one_malloc_arena())"


def test_threads_started_after_sharing_one_arena_allocate_from_the_main_arena(malloc_arenas_after) -> None:
    assert malloc_arenas_after("")[0] > 1  # glibc's default: a thread gets an arena of its own
    arenas, said = malloc_arenas_after(SHARE)
    assert said == "True" and arenas == 1


def test_a_users_malloc_arena_max_stands(malloc_arenas_after) -> None:
    arenas, said = malloc_arenas_after(SHARE, {"MALLOC_ARENA_MAX": "4"})
    assert said == "False" and arenas > 1


@linux_only
def test_one_arena_is_not_set_once_other_threads_run() -> None:
    """Set late, new threads could be handed an arena other threads already own: the call refuses instead."""
    from clipvis.cli.memory import share_one_malloc_arena

    started, stop = threading.Event(), threading.Event()
    helper = threading.Thread(target=lambda: (started.set(), stop.wait()))
    helper.start()
    started.wait()
    try:
        assert share_one_malloc_arena() is False
    finally:
        stop.set()
        helper.join()
