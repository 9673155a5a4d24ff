"""The masks of the tracks read from a results file, kept on disk while `clipvis export` writes its formats.

A 2-hour video's `ytvis.json` holds millions of compressed RLEs: as Python dicts they took several times the file's
size in memory (1.24 GiB to export a 36,000-frame video against 0.71 GiB at 3,600 frames). Each track's RLE strings
go back to back into one anonymous temporary file per results file (unlinked from the start: nothing is left behind
however the process ends), in the order they were read; memory keeps 8 bytes per (track, frame): where the frame's
string ends in the file, bitwise inverted where the track has no mask on that frame.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Iterable

from clipvis.cli import rle
from clipvis.cli.mask_store import FrameMasks, MaskStoreError

WRITE_BYTES = 1 << 20  # strings are written to the file this many bytes at a time


class SpilledTracks:
    """The temporary file the tracks of one results file are spilled to (`add`); `finish` before reading them, `close`
    (or a ``with`` block) when they are done."""

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or tempfile.gettempdir()
        try:
            self._file = tempfile.TemporaryFile(prefix="clipvis-export-", suffix=".rle", dir=directory)
        except OSError as error:
            raise MaskStoreError(self.directory, error) from None
        self._pending = bytearray()
        self._size = 0  # bytes in the file and pending
        self.start_track()

    def add(self, segmentations: Iterable[rle.RleDict | None]) -> SpilledSegmentations:
        """Spill one track's per-frame compressed RLEs (None where it has no mask); its masks are read back from
        what this returns."""
        self.start_track()
        for segmentation in segmentations:
            self.append(segmentation)
        return self.end_track()

    def start_track(self) -> None:
        """Begin a track: its masks are then given one at a time (`append`), as a file is read."""
        self._ends = array("q", [self._size])  # where the track's first string begins, then each frame's end
        self._first_size: list[int] | None = None
        self._last_size: list[int] | None = None
        self._size_changes: dict[int, list[int]] = {}

    def append(self, segmentation: rle.RleDict | None) -> None:
        """The track's mask on its next frame. Every mask's ``size`` is kept (the same for all of them but where a
        file says otherwise)."""
        if segmentation is None:
            self._ends.append(~self._size)
            return
        text = segmentation["counts"].encode("utf-8")
        self._pending += text
        self._size += len(text)
        self._ends.append(self._size)
        size = segmentation["size"]
        if self._first_size is None:
            self._first_size = size
        elif size != self._last_size:
            self._size_changes[len(self._ends) - 2] = size
        self._last_size = size
        if len(self._pending) >= WRITE_BYTES:
            self._write()

    def end_track(self) -> SpilledSegmentations:
        """The track begun last, its masks read back from this file (after `finish`)."""
        track = SpilledSegmentations(self, self._ends, self._first_size, self._size_changes)
        self.start_track()
        return track

    def finish(self) -> None:
        """Write out what is still pending: the tracks can be read from here on."""
        self._write()
        try:
            self._file.flush()
        except OSError as error:
            raise MaskStoreError(self.directory, error) from None

    def close(self) -> None:
        """Close the file (the tracks can no longer be read); its space is freed at once, as it has no name."""
        self._file.close()

    def __enter__(self) -> SpilledTracks:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def read(self, start: int, end: int) -> str:
        return os.pread(self._file.fileno(), end - start, start).decode("utf-8")  # safe from several threads

    def _write(self) -> None:
        if self._pending:
            try:
                self._file.write(self._pending)
            except OSError as error:
                raise MaskStoreError(self.directory, error) from None
            self._pending = bytearray()


class SpilledSegmentations(FrameMasks):
    """One track's per-frame RLEs, read from its `SpilledTracks` file on access (None where it has no mask).

    ``ends[0]`` is where the track's strings begin in the file, ``ends[i + 1]`` where frame i's ends (bitwise
    inverted where it has no mask: its string is empty)."""

    def __init__(self, spill: SpilledTracks, ends: array, size: list[int] | None,
                 size_changes: dict[int, list[int]]) -> None:
        self.spill = spill
        self.ends = ends
        self.size = size
        # the frames from which another size holds (a file written by another tool), in frame order
        self.size_changes = size_changes

    def __len__(self) -> int:
        return len(self.ends) - 1

    @property
    def mask_size(self) -> list[int] | None:
        """``[height, width]`` of every mask, known without reading one; None where the masks' sizes differ (each
        mask's own is then read)."""
        return None if self.size_changes or self.size is None else list(self.size)

    def _mask(self, frame: int) -> rle.RleDict | None:
        end = self.ends[frame + 1]
        if end < 0:
            return None
        start = self.ends[frame]
        start = start if start >= 0 else ~start
        return {"size": self._size_at(frame), "counts": self.spill.read(start, end)}

    def _size_at(self, frame: int) -> list[int]:
        size = self.size
        for position in self.size_changes:
            if position > frame:
                break
            size = self.size_changes[position]
        return list(size)
