"""Compact storage of every track's per-frame mask while a video streams: compressed RLE spilled to a temp file
(unlinked as soon as it is created, so nothing is left behind whatever ends the process).

Memory holds only an index of (offset, length) pairs, so it does not grow with video length beyond a few bytes
per (frame, track); the masks themselves live on disk until the selected tracks are assembled.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import overload

import numpy as np

from clipvis.cli import rle
from clipvis.cli.messages import error_reason


class MaskStoreError(OSError):
    """The masks' temporary file cannot be created or written; `str()` names its folder ($TMPDIR), which is not
    the output folder an operator would look at first."""

    def __init__(self, directory: str, cause: OSError) -> None:
        reason = error_reason(cause)
        super().__init__(cause.errno, f"masks' temporary file in {directory} (TMPDIR): {reason}")

    def __str__(self) -> str:
        return str(self.strerror)


class TrackMaskStore:
    """Per frame, the compressed RLE of each track's mask (track order fixed for the video)."""

    def __init__(self, height: int, width: int, directory: str | None = None) -> None:
        self.size = [height, width]
        # Unlinked from the start (TemporaryFile): a crash or kill -9 leaves nothing behind in the temp folder.
        self.directory = directory or tempfile.gettempdir()
        try:
            self._file = tempfile.TemporaryFile(prefix="clipvis-masks-", suffix=".rle", dir=directory)
        except OSError as error:
            raise MaskStoreError(self.directory, error) from None
        self._offset = 0
        self._index: list[np.ndarray] = []  # per frame [Q, 2] (offset, length); length 0 = empty mask

    def __len__(self) -> int:
        return len(self._index)

    def _write(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as error:  # a full or failing temp disk, named as such
            raise MaskStoreError(self.directory, error) from None

    def add_compressed(self, compressed: rle.CompressedRuns, empty: np.ndarray) -> None:
        """One frame's track masks as COCO compressed strings (``rle.compress_runs``), written in one piece;
        ``empty[q]`` marks tracks without a pixel (stored as none)."""
        if list(compressed.size) != self.size:
            raise ValueError(f"masks of size {list(compressed.size)} in a store of size {self.size}")
        index = np.stack([compressed.offsets + self._offset, np.where(empty, 0, compressed.sizes)], 1)
        self._write(compressed.data)
        self._offset += len(compressed.data)
        self._index.append(index)

    def get(self, frame: int, track: int) -> rle.RleDict | None:
        """The RLE of a track on a frame, or None when the mask is empty."""
        offset, length = self._index[frame][track]
        if length == 0:
            return None
        try:
            self._file.flush()
        except OSError as error:
            raise MaskStoreError(self.directory, error) from None
        counts = os.pread(self._file.fileno(), int(length), int(offset)).decode("ascii")  # no shared file position:
        return {"size": list(self.size), "counts": counts}  # safe from several threads (the overlay's renderers)

    def close(self) -> None:
        """Closes (and so deletes) the file. What it still buffers is thrown away with it: after a failed write
        that is the data which did not fit, whose flush would only fail again with a bare OSError in place of
        the MaskStoreError already raised."""
        if not self._file.closed:
            try:
                self._file.close()  # the buffered file closes its descriptor even when its flush fails
            except OSError:
                pass

    def __enter__(self) -> TrackMaskStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class StoredSegmentations(Sequence["rle.RleDict | None"]):
    """One track's per-frame RLEs, read from a TrackMaskStore on access (None where empty or suppressed)."""

    def __init__(self, store: TrackMaskStore, track: int, suppressed: Sequence[bool]) -> None:
        self.store = store
        self.track = track
        self.suppressed = suppressed

    def __len__(self) -> int:
        return len(self.suppressed)

    @overload
    def __getitem__(self, frame: int) -> rle.RleDict | None: ...

    @overload
    def __getitem__(self, frame: slice) -> list[rle.RleDict | None]: ...

    def __getitem__(self, frame: int | slice) -> rle.RleDict | None | list[rle.RleDict | None]:
        if isinstance(frame, slice):
            return [self[i] for i in range(*frame.indices(len(self)))]
        if frame < 0:
            frame += len(self)
        if not 0 <= frame < len(self):
            raise IndexError(frame)
        return None if self.suppressed[frame] else self.store.get(frame, self.track)
