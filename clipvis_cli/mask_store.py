"""Compact storage of every track's per-frame mask while a video streams: compressed RLE spilled to a temp file
(unlinked as soon as it is created, so nothing is left behind whatever ends the process).

Memory holds the index of the strings: 4 bytes per (frame, track) (where the track's string ends among the frame's,
which are back to back; the top bit marks an empty mask) and 8 per frame (where its strings begin): a string is
found from two entries, with no sum over the tracks before it. Past ``index_memory_bytes`` its
blocks of ``INDEX_BLOCK_FRAMES`` frames go to the same file, so memory stays flat with video length (16-byte
(offset, length) pairs in memory before: 370 MB for a 2-hour 30 frames/s video with 100 queries); the masks
themselves live on disk until the selected tracks are assembled.
"""

from __future__ import annotations

import os
import struct
import tempfile
from array import array
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


INDEX_BLOCK_FRAMES = 1024  # frames per block of the index (in memory, or in the file past the budget)
INDEX_MEMORY_BYTES = 16 << 20  # the index's default memory budget: past it, its blocks go to the file
_EMPTY = 1 << 31  # the top bit of an index entry: the track's mask is empty on that frame
_LENGTH = _EMPTY - 1


class TrackMaskStore:
    """Per frame, the compressed RLE of each track's mask (track order and count fixed for the video)."""

    def __init__(
        self, height: int, width: int, directory: str | None = None, index_memory_bytes: int = INDEX_MEMORY_BYTES
    ) -> None:
        self.size = [height, width]
        # Unlinked from the start (TemporaryFile): a crash or kill -9 leaves nothing behind in the temp folder.
        self.directory = directory or tempfile.gettempdir()
        try:
            self._file = tempfile.TemporaryFile(prefix="clipvis-masks-", suffix=".rle", dir=directory)
        except OSError as error:
            raise MaskStoreError(self.directory, error) from None
        self._offset = 0
        self._frames = 0
        self._tracks: int | None = None
        self._bases = array("q")  # per frame: the file offset of its first string
        # per INDEX_BLOCK_FRAMES frames: a [INDEX_BLOCK_FRAMES, Q] uint32 block in memory, or its offset in the file
        self._blocks: list[np.ndarray | int] = []
        self._index_memory = index_memory_bytes
        self._resident_bytes = 0
        self.string_bytes = 0  # the masks' strings written so far, and how many masks were not empty
        self.masks = 0
        self._writes = 0  # writes so far, and how many of them the last flush covered: a read flushes the rest first
        self._flushed_writes = 0

    def __len__(self) -> int:
        return self._frames

    @property
    def file_bytes(self) -> int:
        """The bytes written to the temporary file so far (the strings, and the index blocks spilled)."""
        return self._offset

    def _write(self, data: bytes | memoryview) -> None:
        try:
            self._file.write(data)
        except OSError as error:  # a full or failing temp disk, named as such
            raise MaskStoreError(self.directory, error) from None
        self._offset += len(data)
        self._writes += 1

    def add_compressed(self, compressed: rle.CompressedRuns, empty: np.ndarray) -> None:
        """One frame's track masks as COCO compressed strings (``rle.compress_runs``), written in one piece;
        ``empty[q]`` marks tracks without a pixel (stored as none)."""
        if list(compressed.size) != self.size:
            raise ValueError(f"masks of size {list(compressed.size)} in a store of size {self.size}")
        sizes = np.asarray(compressed.sizes, dtype=np.int64)
        if self._tracks is None:
            self._tracks = len(sizes)
        elif len(sizes) != self._tracks:
            raise ValueError(f"{len(sizes)} tracks in a store of {self._tracks} per frame")
        ends = np.cumsum(sizes)  # where each track's string ends among the frame's
        data: bytes | memoryview = compressed.data
        if not np.array_equal(compressed.offsets, ends - sizes):  # not back to back: made so
            view = memoryview(compressed.data)
            data = b"".join(view[o : o + n] for o, n in zip(compressed.offsets.tolist(), sizes.tolist(), strict=True))
        if len(ends) and int(ends[-1]) > _LENGTH:
            raise ValueError(f"a frame's RLE strings of {int(ends[-1])} bytes: the store takes up to {_LENGTH}")
        row = ends.astype(np.uint32) | np.where(np.asarray(empty, dtype=bool), np.uint32(_EMPTY), np.uint32(0))
        # The strings first, then the index: a write that fails leaves the frames stored so far as they were.
        base = self._offset
        self._write(data)
        position = self._frames % INDEX_BLOCK_FRAMES
        if position == 0:
            self._spill_index()
            self._blocks.append(np.empty((INDEX_BLOCK_FRAMES, len(sizes)), dtype=np.uint32))
            self._resident_bytes += self._blocks[-1].nbytes
        self._blocks[-1][position] = row
        self._bases.append(base)
        self._frames += 1
        self.string_bytes += int(ends[-1]) if len(ends) else 0
        self.masks += len(sizes) - int(np.count_nonzero(empty))

    def _spill_index(self) -> None:
        """Before a new block of the index is started (so every block in memory is full): write the blocks in memory
        to the file, oldest first, until the new one fits the budget beside those left."""
        new_block = INDEX_BLOCK_FRAMES * 4 * (self._tracks or 0)
        for number, block in enumerate(self._blocks):
            if self._resident_bytes + new_block <= self._index_memory:
                break
            if isinstance(block, np.ndarray):
                offset = self._offset
                self._write(memoryview(block).cast("B"))
                self._blocks[number] = offset  # once written: a read meanwhile still finds the block in memory
                self._resident_bytes -= block.nbytes

    def _read(self, length: int, offset: int) -> bytes:
        writes = self._writes
        if self._flushed_writes != writes:
            try:
                self._file.flush()
            except OSError as error:
                raise MaskStoreError(self.directory, error) from None
            self._flushed_writes = writes  # a write after `writes` was read is flushed by the next read
        return os.pread(self._file.fileno(), length, offset)  # no shared file position: safe from several threads

    def _entries(self, frame: int, track: int) -> tuple[int, int]:
        """The index entries of ``track - 1`` (0 for the first track) and ``track`` on ``frame``."""
        block = self._blocks[frame // INDEX_BLOCK_FRAMES]
        position = frame % INDEX_BLOCK_FRAMES
        if isinstance(block, np.ndarray):
            row = block[position]
            return (int(row[track - 1]) if track else 0), int(row[track])
        entry = block + 4 * (position * (self._tracks or 0) + track)
        if track == 0:
            return 0, *struct.unpack("=I", self._read(4, entry))
        before, this = struct.unpack("=II", self._read(8, entry - 4))
        return before, this

    def get(self, frame: int, track: int) -> rle.RleDict | None:
        """The RLE of a track on a frame (negative indices count from the end), or None when the mask is empty."""
        tracks = self._tracks or 0
        if not -self._frames <= frame < self._frames:
            raise IndexError(f"frame {frame} of a store of {self._frames}")
        if not -tracks <= track < tracks:
            raise IndexError(f"track {track} of a store of {tracks} per frame")
        frame, track = frame % self._frames, track % tracks
        before, entry = self._entries(frame, track)
        if entry & _EMPTY:
            return None
        base = self._bases[frame]
        start, end = base + (before & _LENGTH), base + (entry & _LENGTH)
        counts = self._read(end - start, start).decode("ascii")
        return {"size": list(self.size), "counts": counts}

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


class FrameMasks(Sequence["rle.RleDict | None"]):
    """A track's per-frame RLEs read on access (None where it has no mask): subclasses give ``__len__`` and
    ``_mask`` (a frame in range), this the indexing of a list (negative positions, slices, IndexError)."""

    def _mask(self, frame: int) -> rle.RleDict | None:
        raise NotImplementedError

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
        return self._mask(frame)


class StoredSegmentations(FrameMasks):
    """One track's per-frame RLEs, read from a TrackMaskStore on access (None where empty or suppressed)."""

    def __init__(self, store: TrackMaskStore, track: int, suppressed: Sequence[bool]) -> None:
        self.store = store
        self.track = track
        self.suppressed = suppressed

    def __len__(self) -> int:
        return len(self.suppressed)

    @property
    def mask_size(self) -> list[int]:
        """``[height, width]`` of every mask (the store's), known without reading one."""
        return list(self.store.size)

    def _mask(self, frame: int) -> rle.RleDict | None:
        return None if self.suppressed[frame] else self.store.get(frame, self.track)
