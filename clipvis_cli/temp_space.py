"""An early warning when a long video's temporary files will not fit in their folder.

While a video streams, every track's masks go to a temporary file (``clipvis.cli.mask_store``), and so do the
per-frame scores, all of them, once they pass 64 MiB (``clipvis.model.scoring.FrameSpill``: 4 x queries x
(classes + 3) bytes per frame). Both grow with the video: tens of GB for hours of video with a large vocabulary
(README, "How it runs"). When the folder fills up the input fails with `No space left on device`, possibly hours in.
:class:`TemporarySpaceWatch` projects the files' final size from the frames so far and the video's expected frame
count, and says so once, early, when it exceeds what the folder has free, so that a user can point ``TMPDIR``
elsewhere before the hours are spent.

The output files come on top: every one of a video's files is written in its output folder under a temporary name
and renamed into place only once all are written (clipvis.cli.atomic.OutputStaging), while the masks' temporary file
is still there (the writers read it). They are several times the size of the masks' file (a track's mask string per
frame in `ytvis.json` and again in `coco.json`, each with the JSON around it, for every track the video keeps):
:class:`OutputProjection` projects them from the masks so far, and the watch checks the output folder too, the two
added up where both are on one file system.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from clipvis.cli.mask_store import INDEX_MEMORY_BYTES

FIRST_CHECK_FRAMES = 256  # the first projection: enough frames for a rate, early in a long video
CHECK_EVERY_FRAMES = 4096  # then at every multiple of this (the rate, or the free space, may change)
# clipvis.model.scoring.FrameSpill's default memory budget: past it, every frame's scores go to the disk (not imported:
# the model package brings torch, which `segment` imports once a video runs)
SCORES_IN_MEMORY_BYTES = 64 << 20
# The output files' bytes beside each mask string, measured on segment's files (96x64 and 854x480 frames):
YTVIS_MASK_BYTES = 36  # `{"size": [480, 854], "counts": "..."}, ` around a track's string on a frame
YTVIS_EMPTY_BYTES = 6  # `null, ` for a frame where a track has no pixel
YTVIS_FRAME_BYTES = 48  # a frame's file name and index in `videos[]`
COCO_MASK_BYTES = 260  # an annotation's fields around its string (ids, area, bbox, score, attributes)
COCO_FRAME_BYTES = 140  # a frame's `images[]` entry
# overlay.mp4 (H.264, crf 23): a frame's bytes, on the high side of what it takes (masks' edges, labels), as
# OVERLAY_FRAME_BYTES + OVERLAY_PIXELS_SCALE x pixels ** OVERLAY_PIXELS_POWER: x264 spends fewer bytes per pixel on
# larger frames (0.12 B per pixel at 96x64, 0.027 measured at 1280x720); the power keeps 720p's projection ~1.3x and
# 96x64's at its measured size, where a flat 0.12 B per pixel projected 720p 4.5x too high (a false warning)
OVERLAY_FRAME_BYTES = 1000
OVERLAY_PIXELS_SCALE = 1.06
OVERLAY_PIXELS_POWER = 0.75
PROJECTED_FORMATS = ("ytvis", "coco", "overlay")  # the export formats' zips are not projected


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


def file_system(directory: str) -> int | None:
    """The device ``directory`` is on (two folders on one device share its free space); None where unknown."""
    try:
        return os.stat(directory).st_dev
    except OSError:
        return None


def overlay_frame_bytes(height: int, width: int) -> float:
    """The bytes an overlay.mp4 frame of ``height`` x ``width`` is projected to take (on the high side)."""
    return OVERLAY_FRAME_BYTES + OVERLAY_PIXELS_SCALE * float(height * width) ** OVERLAY_PIXELS_POWER


@dataclass(frozen=True)
class OutputProjection:
    """A video's output files, projected from its masks so far: those of ``formats`` that are `PROJECTED_FORMATS`,
    written in ``directory`` for at most ``tracks`` tracks (the most a video keeps: --max-tracks) of
    ``height`` x ``width`` frames."""

    directory: str
    formats: Sequence[str]
    tracks: int
    height: int
    width: int

    @property
    def projected(self) -> list[str]:
        return [name for name in self.formats if name in PROJECTED_FORMATS]

    def total_bytes(self, total_frames: int, frames: int, queries: int, classes: int, string_bytes: int,
                    masks: int) -> float:
        """The files' bytes for ``total_frames`` frames, at the rate of the first ``frames``: ``masks`` of the
        ``frames`` x ``queries`` tracks' masks held a pixel, their strings ``string_bytes`` in all. A video keeps up
        to ``tracks`` of its queries x ``classes`` (query, class) pairs (``tracks`` 0: all of them)."""
        if frames < 1 or queries < 1:
            return 0.0
        pairs = queries * max(classes, 1)
        tracks = min(self.tracks, pairs) if self.tracks > 0 else pairs
        shown = masks / (frames * queries)  # the share of a track's frames holding a mask
        string = string_bytes / masks if masks else 0.0
        per_frame = 0.0
        if "ytvis" in self.formats:
            per_frame += tracks * (shown * (string + YTVIS_MASK_BYTES) + (1 - shown) * YTVIS_EMPTY_BYTES)
            per_frame += YTVIS_FRAME_BYTES
        if "coco" in self.formats:
            per_frame += tracks * shown * (string + COCO_MASK_BYTES) + COCO_FRAME_BYTES
        if "overlay" in self.formats:
            per_frame += overlay_frame_bytes(self.height, self.width)
        return per_frame * total_frames


@dataclass
class TemporarySpaceWatch:
    """Projects a video's temporary files (and with ``outputs``, its output files) to its last frame, at frame
    ``FIRST_CHECK_FRAMES`` and at every multiple of ``CHECK_EVERY_FRAMES``, and returns one warning line (once per
    video and folder) when what is still to be written in a folder passes its free space: the temporary files'
    ``directory``, the output folder, or both together where they are on one file system.

    ``expected_frames``: the video's processed frames as its container says (None: unknown, nothing is checked;
    once the frames pass it, as joined recordings' do, the frames so far are projected: what they need is certain).
    ``free``: how free space is measured (default ``free_bytes``); ``device``: which file system a folder is on
    (default ``file_system``).
    """

    directory: str
    expected_frames: int | None
    free: Callable[[str], int | None] | None = None
    outputs: OutputProjection | None = None
    device: Callable[[str], int | None] | None = None
    warned: bool = field(default=False, init=False)
    warned_outputs: bool = field(default=False, init=False)

    def update(self, frames: int, mask_bytes: int, queries: int, classes: int, string_bytes: int | None = None,
               masks: int | None = None) -> str | None:
        """After ``frames`` frames of ``queries`` tracks scored over ``classes`` classes, the masks' file holding
        ``mask_bytes`` (of which ``string_bytes`` the strings of ``masks`` masks that held a pixel; without them the
        outputs are not projected): the warning, the first time a projection does not fit, else None."""
        if (self.warned and (self.warned_outputs or self.outputs is None)) or self.expected_frames is None \
                or frames < 1:
            return None
        if frames != FIRST_CHECK_FRAMES and (frames < FIRST_CHECK_FRAMES or frames % CHECK_EVERY_FRAMES):
            return None
        total_frames = max(self.expected_frames, frames)
        temporary = self._temporary_to_come(frames, total_frames, mask_bytes, queries, classes)
        outputs = 0.0
        if self.outputs is not None and string_bytes is not None and masks is not None:
            outputs = self.outputs.total_bytes(total_frames, frames, queries, classes, string_bytes, masks)
        measure = self.free or free_bytes
        where = self.device or file_system
        shared = self.outputs is not None and outputs > 0 and where(self.directory) is not None and \
            where(self.directory) == where(self.outputs.directory)
        available = measure(self.directory)
        rate = self._rate_text(frames, total_frames)
        if shared and not (self.warned or self.warned_outputs):
            if available is None or temporary + outputs <= available:
                return None
            self.warned = self.warned_outputs = True
            return (
                f"its temporary files (masks, scores) and its output files ({', '.join(self.outputs.projected)}) "
                f"will need about {size_text(mask_bytes + temporary)} in {self.directory} and "
                f"{size_text(outputs)} in {self.outputs.directory}, on one disk, {rate}, and "
                f"{size_text(available)} are free there: make room, point TMPDIR or -o at another disk, or the video "
                "fails when that disk is full"
            )
        if not self.warned and available is not None and temporary > available:
            self.warned = True
            return (
                f"its temporary files (masks, scores) will need about {size_text(mask_bytes + temporary)} in "
                f"{self.directory} {rate}, and {size_text(available)} are free there: point TMPDIR at a disk with "
                "room, or the video fails when that folder is full"
            )
        if self.outputs is not None and outputs > 0 and not self.warned_outputs:
            room = measure(self.outputs.directory)
            if room is not None and outputs > room:
                self.warned_outputs = True
                return (
                    f"its output files ({', '.join(self.outputs.projected)}) will need about {size_text(outputs)} "
                    f"in {self.outputs.directory} {rate}, and {size_text(room)} are free there: make room or "
                    "write them elsewhere (-o), or the video fails once its model pass is over, when they are "
                    "written"
                )
        return None

    def _rate_text(self, frames: int, total_frames: int) -> str:
        """``"by its last frame (216000), at the rate of its first 256"``; past the container's count, the frames
        so far."""
        if frames > (self.expected_frames or 0):
            return (f"for its {frames} frames so far (more than the {self.expected_frames} its container tells), "
                    "more if it goes on")
        return f"by its last frame ({total_frames}), at the rate of its first {frames}"

    @staticmethod
    def _temporary_to_come(frames: int, total_frames: int, mask_bytes: int, queries: int, classes: int) -> float:
        """The temporary files' bytes still to be written by frame ``total_frames``."""
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
        return masks_to_come + index_to_come + scores_total - min(scores_written, scores_total)
