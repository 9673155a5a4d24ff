"""Keep a long-running process's heap from growing with video length.

Every frame allocates and frees large, varying-size buffers (full-resolution masks, RLE copies). glibc raises its
mmap threshold each time such a buffer is freed, after which those buffers come from the heap and fragment it: the
resident size grows by megabytes per frame and is never returned. Fixing the threshold (``mallopt``) keeps large
buffers on mmap, so they go back to the system when freed and memory stays flat however long the video.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 128 * 1024  # glibc's initial default, no longer adjusted dynamically


def keep_large_allocations_off_the_heap() -> bool:
    """Fix glibc's mmap threshold for this process; True if applied (False on non-glibc systems)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
