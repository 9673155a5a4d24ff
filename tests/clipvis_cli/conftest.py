"""Fixtures shared by the command tests: an isolated cache (the tiny checkpoint is in tests/conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Iterator[Path]:
    """CLIPVIS_CACHE in a temp folder and no downloads, for the whole test. ``monkeypatch.undo()`` in the test would
    undo these too (the rest of the test then ran against the user's cache, downloads allowed): a test that restores
    its own patches halfway makes them in a ``pytest.MonkeyPatch.context()``, and one that undid these fails here."""
    user_cache = os.environ.get("CLIPVIS_CACHE")
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPVIS_OFFLINE", "1")
    yield tmp_path / "cache"
    assert os.environ.get("CLIPVIS_CACHE") != user_cache, "the test undid isolated_cache (monkeypatch.undo()?)"


# A probe run in a fresh process: three threads allocate buffers below the mmap threshold, then glibc's malloc_info
# says how many arenas ("heaps") serve the process. `{prelude}` runs first, while the process has one thread.
ARENA_PROBE = """
import ctypes, re, sys, tempfile, threading
{prelude}
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.fopen.restype, libc.fopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]

def allocate():
    blocks = [libc.malloc(100_000) for _ in range(20)]
    for block in blocks:
        libc.free(block)

threads = [threading.Thread(target=allocate) for _ in range(3)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
path = tempfile.mktemp()
report = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, report)
libc.fclose(report)
print(len(re.findall("<heap nr=", open(path).read())))
"""


@pytest.fixture
def malloc_arenas_after():
    """``probe(prelude, env=None) -> (arenas, output)``: how many glibc malloc arenas a fresh process uses once three
    threads allocated, after running ``prelude`` first (its printed words come back as ``output``). The process has
    neither MALLOC_ARENA_MAX nor OMP_NUM_THREADS (unless ``env`` sets them): with the suite's OMP_NUM_THREADS=1,
    importing numpy and torch starts no thread, and a launcher that shares one arena only after them would pass.
    Skips where the C library is not glibc."""
    import platform
    import subprocess
    import sys

    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc arenas are glibc's")

    def probe(prelude: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        unset = ("MALLOC_ARENA_MAX", "OMP_NUM_THREADS")
        environment = {k: v for k, v in os.environ.items() if k not in unset} | (env or {})
        result = subprocess.run(
            [sys.executable, "-c", ARENA_PROBE.format(prelude=prelude)],
            capture_output=True, text=True, env=environment, timeout=300,
        )
        assert result.returncode == 0, result.stderr
        *words, arenas = result.stdout.split()
        return int(arenas), " ".join(words)

    return probe
