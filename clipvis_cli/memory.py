"""Keep a long-running process fast and its memory flat, whatever the video length.

Every frame allocates and frees large buffers (activations of tens of MB, full-resolution masks, RLE copies).
glibc serves buffers above its mmap threshold (adaptive, at most 32 MiB) with fresh pages from the kernel, so each
one pays page faults on first touch: with every buffer mapped, the R50 model ran 1.6x slower per frame than with
its buffers reused from the heap. Buffers reused from the heap, on the other hand, fragment it, and the resident size
then grows with every frame and is never returned (~2 MB per frame with all outputs on).

:class:`HeapTrimmer` takes both: buffers up to 64 MiB are reused from the heap (a fixed mmap threshold, and no
trimming inside ``free``), and a background thread hands free heap pages back to the kernel (``malloc_trim``) once
the resident size has grown by ``growth_bytes`` (64 MiB) over what it was one period after the last trim, so resident
memory tracks what is live rather than the history of the run. It checks every second but trims only on growth:
each trim also releases the pages of the model's transient buffers, which the next frame faults back in, and
trimming every second made the tiny model 5-8 % slower in `segment` (bench/bench_segment.py part a).

Trimming cannot return a page that still holds one small live allocation. The `clipvis` command puts every thread
in glibc's main arena (:func:`share_one_malloc_arena`, called by clipvis.cli.launcher before any other thread
exists): a thread's own arena grows in heaps of at most 64 MiB, so the model thread's buffers were mapped afresh and
faulted in on every frame (the R50 network 13-27 % slower than on the main thread). With one arena and all outputs
on (`bench/bench_segment.py`, part b), peak RSS for 1500 frames is 1.04x that for 150 frames, and lower in absolute
terms than with an arena per thread (1407 vs 1419 MiB).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
import threading
from types import TracebackType

from clipvis.model.errors import Parameter, ParameterHint

DEFAULT_TRIM_PERIOD_S = 1.0
DEFAULT_TRIM_GROWTH_BYTES = 64 * 2**20  # resident growth that triggers a trim
HEAP_BUFFER_MAX_BYTES = 64 * 2**20  # larger buffers (e.g. a video's full-resolution mask stack) are mapped
M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
NO_TRIM_IN_FREE = 2**31 - 1  # (mallopt takes an int) free() leaves the heap to the trimmer


def _load_libc() -> ctypes.CDLL | None:
    """glibc, or None where ``malloc_trim`` does not exist (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


class HeapTrimmer:
    """Context manager: on entry, buffers up to 64 MiB are reused from the heap (process-wide glibc settings, kept
    after exit); while open, free heap memory goes back to the kernel whenever the resident size has grown by
    ``growth_bytes`` since the last trim (checked every ``period_s`` seconds; ``growth_bytes=None``: trim at every
    check). On exit, free heap memory goes back to the kernel once more, so that a process which goes on
    after the run (many `segment` calls from Python) keeps none of the run's free heap.

    A no-op (``active`` is False) when ``enabled`` is False or where the C library has no ``malloc_trim``.
    """

    def __init__(
        self,
        period_s: float = DEFAULT_TRIM_PERIOD_S,
        enabled: bool = True,
        growth_bytes: int | None = DEFAULT_TRIM_GROWTH_BYTES,
    ) -> None:
        if not math.isfinite(period_s) or period_s <= 0:  # NaN: the trimming thread died at its first wait
            raise ValueError(f"period_s must be a positive number of seconds, not {period_s}")
        if growth_bytes is not None and growth_bytes < 0:
            raise ValueError(f"growth_bytes must be >= 0, not {growth_bytes}")
        self.period_s = period_s
        self.growth = GrowthTrigger(growth_bytes)
        self._libc = _load_libc() if enabled else None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._depth = 0  # nested `with` blocks on this trimmer: the outermost one's exit stops it
        self.trims = 0

    @property
    def active(self) -> bool:
        return self._libc is not None

    def trim(self) -> None:
        """Return free heap pages to the kernel now."""
        if self._libc is not None:
            self._libc.malloc_trim(0)
            self.trims += 1

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            if self.growth.due(resident_bytes()):
                self.trim()

    def __enter__(self) -> HeapTrimmer:
        if self._libc is not None and self._thread is None:
            self._libc.mallopt(M_MMAP_THRESHOLD, HEAP_BUFFER_MAX_BYTES)
            self._libc.mallopt(M_TRIM_THRESHOLD, NO_TRIM_IN_FREE)
            self._stop.clear()
            thread = threading.Thread(target=self._run, name="clipvis-heap-trimmer", daemon=True)
            thread.start()  # a thread that cannot start leaves the trimmer as it was, to be entered again
            self._thread = thread
        self._depth += 1
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._depth = max(0, self._depth - 1)
        if self._thread is not None and self._depth == 0:
            self._stop.set()
            self._thread.join()
            self._thread = None
            # free() never trims (NO_TRIM_IN_FREE stays set after exit), and a run shorter than the growth check
            # (one short video) never triggered a trim: the run's free heap would stay resident for good.
            self.trim()


ARENA_VARIABLE = "MALLOC_ARENA_MAX"  # the user's own choice of arenas, which glibc read at start-up


def process_thread_count() -> int | None:
    """How many threads this process has now, native ones included (Linux ``/proc/self/task``), or None."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def share_one_malloc_arena() -> bool:
    """Put every thread this process will start in glibc's main malloc arena (``mallopt(M_ARENA_MAX, 1)``), as
    ``MALLOC_ARENA_MAX=1`` in the environment would. Call it first thing, while the process has one thread: the
    `clipvis` command does (clipvis.cli.launcher). True when this call set it.

    Why: a thread's own arena grows in heaps of at most 64 MiB, so buffers the main arena keeps for reuse are mapped
    afresh there and fault their pages in on every frame. With R50 at 854x480 on 2 cores the network ran 13.8 s for 8
    frames on the main thread and 15.7-17.6 s on `segment`'s model thread with an arena of its own; sharing the main
    arena, `segment` end to end went from 0.52 to 0.55 frames/s (bench/bench_segment.py part a), and peak memory
    stays flat with video length (part b). Done later, once other threads have arenas, new threads may be handed one
    of those (glibc reuses arenas round-robin), which is why it is not done from inside a command.

    Does nothing (False) where the C library is not glibc, when the process already runs other threads, or when the
    environment sets ``MALLOC_ARENA_MAX`` or a ``glibc.malloc.arena_max`` tunable (the user's choice stands).
    """
    if ARENA_VARIABLE in os.environ or "arena_max" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    if process_thread_count() != 1:
        return False
    libc = _load_libc()
    if libc is None:
        return False
    return libc.mallopt(M_ARENA_MAX, 1) == 1


HUGE_PAGES_VARIABLE = "THP_MEM_ALLOC_ENABLE"


def prefer_huge_pages() -> bool:
    """Ask PyTorch to back its CPU buffers of 2 MB and more with transparent huge pages (its ``THP_MEM_ALLOC_ENABLE``
    setting: 2 MB-aligned and ``madvise(MADV_HUGEPAGE)``), unless the environment already says otherwise.

    Large buffers handed out afresh cost a page fault per 4 KB page on first touch (more so in a thread's own
    arena; measured before `clipvis` shared one arena): with huge pages the tiny bench model's page faults per 120
    frames fell from ~600,000 to ~30,000, and a 12-frame 3840x2160 `segment` ran in 28 s instead of 31-33 s
    (bench/bench_segment.py part d). PyTorch reads the setting once, at its first CPU allocation: call this before
    any tensor is made. Where the kernel's transparent huge pages are "never" it changes nothing. True when this call
    set it.
    """
    if HUGE_PAGES_VARIABLE in os.environ:
        return False
    os.environ[HUGE_PAGES_VARIABLE] = "1"
    return True


class GrowthTrigger:
    """When to trim: the first resident size seen after a trim (or at the start) is the reference, and a trim is
    due once the resident size exceeds it by ``growth_bytes``. ``growth_bytes=None``, or an unknown resident size:
    always due."""

    def __init__(self, growth_bytes: int | None) -> None:
        self.growth_bytes = growth_bytes
        self.reference: int | None = None

    def due(self, resident: int | None) -> bool:
        if self.growth_bytes is None or resident is None:
            return True
        if self.reference is None:
            self.reference = resident
            return False
        if resident > self.reference + self.growth_bytes:
            self.reference = None  # measured again one period after this trim, once transient buffers are back
            return True
        return False


PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int | None:
    """This process' resident set size (Linux ``/proc/self/statm``), or None where unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * PAGE_BYTES
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------------------- memory by resolution

MAX_FRAME_PIXELS = 2**31 - 1  # COCO RLE run lengths are 32-bit: no mask may have more pixels
# Bytes per frame pixel the streaming loop holds besides the decoded frame batches: the decoder's own pictures
# (~6), one frame normalised in float (~24), one chunk of full-resolution mask logits with its column-major bits and
# run boundaries (~10), and the overlay pass' frame, canvas and one track's mask (~13). Measured figures are in
# bench/bench_segment.py part (d).
WORKING_BYTES_PER_PIXEL = 53


# Frame batches larger than this are not queued two deep (decoder queue, model queue): at 4K a batch of 4 frames is
# 100 MB, and five of them in flight made peak memory grow with resolution.
LARGE_BATCH_BYTES = 64 * 2**20


class ResolutionLimitError(ParameterHint, ValueError):
    """A video's frames are too large to process here; ``str()`` is one line naming the input, and the setting that
    would fix it worded as a Python caller gives it (``batch_frames=1``); a command words it as its flag
    (``error.worded({"batch_frames": "--batch-frames 1"})``: ``clipvis.cli.messages.STREAM_PARAMETER_FLAGS``)."""


def frame_memory_bytes(
    height: int, width: int, batch_frames: int, queued_batches: int, model_batches: int = 2
) -> int:
    """Estimated memory the streaming loop needs for frames of ``height`` x ``width``: the decoded batches alive
    (the decoder's queue, the one being filled, and ``model_batches`` in or queued for the model: 3 bytes per pixel
    each) plus the per-frame working set (``WORKING_BYTES_PER_PIXEL``)."""
    pixels = height * width
    return pixels * (3 * batch_frames * (queued_batches + 1 + model_batches) + WORKING_BYTES_PER_PIXEL)


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_frame_memory(
    height: int, width: int, batch_frames: int, queued_batches: int, source: object = None,
    available: int | None = None, model_batches: int = 2,
) -> None:
    """Raise ResolutionLimitError (one line naming ``source``) when frames of this size cannot be processed: more
    than ``MAX_FRAME_PIXELS`` pixels, or an estimated working set (``frame_memory_bytes``) above the memory
    available now (``available``, default MemAvailable), where the kernel's OOM killer would end the run silently."""
    name = getattr(source, "path", source) or "video"
    pixels = height * width
    if pixels > MAX_FRAME_PIXELS:
        raise ResolutionLimitError(
            f"{name}: {width}x{height} frames have {pixels} pixels, more than COCO RLE's limit of {MAX_FRAME_PIXELS}"
        )
    need = frame_memory_bytes(height, width, batch_frames, queued_batches, model_batches)
    available = available_memory_bytes() if available is None else available
    if available is not None and need > available:
        hint = (" (try ", Parameter("batch_frames", "batch_frames=1"), ")") if batch_frames > 1 else ()
        raise ResolutionLimitError(
            f"{name}: {width}x{height} frames need ~{_size_text(need)} with batches of {batch_frames} frames, "
            f"only {_size_text(available)} of memory is available", *hint
        )


def _size_text(size: int) -> str:
    return f"{size / 2**30:.1f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
