"""The top-level boxes of an ISO media file (MP4, MOV, 3GP: ISO/IEC 14496-12), read from their headers alone: how
far each runs, to tell a file cut short (it ends inside a box) from a whole one. Free of PyAV, so that run.json's
check of an overlay it lists (`clipvis.cli.writers.manifest`) imports no decoder."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path


def iso_top_level_boxes(path: Path) -> Iterator[tuple[bytes, int, int | None]]:
    """Each top-level box of the file at ``path`` as ``(type, offset, end)``, in order, until one reaches or passes
    the file's end: ``end`` past the file's size is a box the file cuts short; the file's size for a box whose size
    field says "to the end of the file" (0); None where the file ends inside a box's header; less than ``offset + 8``
    where the size field is no box's (damage, or no ISO media file). OSError where the file cannot be read."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        offset = 0
        while offset < size:
            handle.seek(offset)
            header = handle.read(16)
            kind = header[4:8]
            if len(header) < 8:
                yield kind, offset, None
                return
            length = int.from_bytes(header[:4], "big")
            if length == 1 and len(header) == 16:  # a 64-bit size follows the type
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:  # the last box, to the end of the file
                yield kind, offset, size
                return
            yield kind, offset, offset + length
            if length < 8:
                return
            offset += length
