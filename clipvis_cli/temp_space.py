"""An early warning when a long video's temporary files will not fit in their folder.

While a video streams, every track's masks go to a temporary file (``clipvis.cli.mask_store``), and so do the
per-frame scores, all of them, once they pass 64 MiB (``clipvis.model.scoring.FrameSpill``: 4 x queries x
(classes + 3) bytes per frame). Both grow with the video: tens of GB for hours of video with a large vocabulary
(README, "How it runs"). When the folder fills up the input fails with `No space left on device`, possibly hours in.
:class:`TemporarySpaceWatch` projects the files' final size from the frames so far and the video's expected frame
count, and says so once, early, when it exceeds what the folder has free, so that a user can point ``TMPDIR``
elsewhere before the hours are spent.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from clipvis.cli.mask_store import INDEX_MEMORY_BYTES

FIRST_CHECK_FRAMES = 256  # the first projection: enough frames for a rate, early in a long video
CHECK_EVERY_FRAMES = 4096  # then at every multiple of this (the rate, or the free space, may change)
# clipvis.model.scoring.FrameSpill's default memory budget: past it, every frame's scores go to the disk (not imported:
# the model package brings torch, which `segment` imports once a video runs)
SCORES_IN_MEMORY_BYTES = 64 << 20


def free_bytes(directory: str) -> int | None:
    """The bytes free for this user in ``directory``'s file system; None where that cannot be told."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def size_text(size: float) -> str:
    """``"512 MB"``, ``"61.3 GB"``, ``"1.2 TB"`` (powers of 1000, as `df -H` prints)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if size < 100 * scale else f"{size / scale:.0f} {unit}"
    return f"{max(size, 0) / 1e3:.0f} KB"


@dataclass
class TemporarySpaceWatch:
    """Projects a video's temporary files to its last frame, at frame ``FIRST_CHECK_FRAMES`` and at every multiple
    of ``CHECK_EVERY_FRAMES``, and returns one warning line (once per video) when what is still to be written
    passes the free space of ``directory``.

    ``expected_frames``: the video's processed frames as its container says (None: unknown, nothing is checked).
    ``free``: how free space is measured (default ``free_bytes``).
    """

    directory: str
    expected_frames: int | None
    free: Callable[[str], int | None] | None = None
    warned: bool = field(default=False, init=False)

    def update(self, frames: int, mask_bytes: int, queries: int, classes: int) -> str | None:
        """After ``frames`` frames of ``queries`` tracks scored over ``classes`` classes, the masks' file holding
        ``mask_bytes``: the warning, the first time the projection does not fit, else None."""
        if self.warned or self.expected_frames is None or frames >= self.expected_frames or frames < 1:
            return None
        if frames != FIRST_CHECK_FRAMES and (frames < FIRST_CHECK_FRAMES or frames % CHECK_EVERY_FRAMES):
            return None
        total_frames = self.expected_frames
        # The masks' index goes to the same file past its memory budget (4 bytes a track and frame): projected on its
        # own, and what of it is written already kept out of the masks' rate (counted twice, it warned early).
        index_written = max(0, 4 * queries * frames - INDEX_MEMORY_BYTES)
        index_to_come = max(0, 4 * queries * total_frames - INDEX_MEMORY_BYTES) - index_written
        masks_to_come = max(0, mask_bytes - index_written) / frames * (total_frames - frames)
        # Once the scores pass their memory budget, the file takes every frame's, those held in memory so far
        # included (FrameSpill writes them all, then the rest as it goes and at the end). Of what is written already,
        # only what cannot still be in memory counts: the projection errs towards saying too much is to come.
        score_bytes_per_frame = 4 * queries * (classes + 3)
        scores_total = score_bytes_per_frame * total_frames
        if scores_total <= SCORES_IN_MEMORY_BYTES:
            scores_total = 0
        scores_written = max(0, score_bytes_per_frame * frames - SCORES_IN_MEMORY_BYTES)
        to_come = masks_to_come + index_to_come + scores_total - min(scores_written, scores_total)
        available = (self.free or free_bytes)(self.directory)
        if available is None or to_come <= available:
            return None
        self.warned = True
        needed = mask_bytes + masks_to_come + index_to_come + scores_total
        return (
            f"its temporary files (masks, scores) will need about {size_text(needed)} in {self.directory} by its "
            f"last frame ({self.expected_frames}), at the rate of its first {frames}, and {size_text(available)} are "
            "free there: point TMPDIR at a disk with room, or the video fails when that folder is full"
        )
