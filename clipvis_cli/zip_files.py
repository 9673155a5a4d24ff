"""Zip entries whose bytes depend on their content only: the same results zip the same, byte for byte, whenever and
by whichever process they were written (one process or the ranks of a torchrun job; README "Many GPUs, many
machines"). Python's zipfile stamps each entry with the time it was written (``writestr``) or the file's modification
time (``write``); these helpers stamp 1980-01-01 00:00, the zip format's first representable time, as reproducible
builds do, and mode 0644."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import IO

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_ZIP64_FROM = 2**31 - 2**20  # zipfile needs to know in advance that a streamed entry may pass 2 GiB


def _entry(name: str, compress_type: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = compress_type
    info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
    return info


def add_bytes(archive: zipfile.ZipFile, name: str, data: bytes | str,
              compress_type: int = zipfile.ZIP_DEFLATED) -> None:
    """Add ``data`` as the entry ``name``."""
    archive.writestr(_entry(name, compress_type), data)


def add_stream(archive: zipfile.ZipFile, name: str, source: IO[bytes], size: int,
               compress_type: int = zipfile.ZIP_DEFLATED) -> None:
    """Add the ``size`` bytes read from ``source`` as the entry ``name``, streamed: the same archive bytes as
    ``add_bytes`` of those bytes (the size known in advance decides, as there, whether the entry is ZIP64)."""
    info = _entry(name, compress_type)
    info.file_size = size
    with archive.open(info, "w") as target:
        shutil.copyfileobj(source, target, 1 << 20)


def add_file(archive: zipfile.ZipFile, path: Path, name: str, compress_type: int = zipfile.ZIP_DEFLATED) -> None:
    """Add the file at ``path`` as the entry ``name``, streamed (a video need not fit in memory)."""
    large = path.stat().st_size >= _ZIP64_FROM
    with open(path, "rb") as source, archive.open(_entry(name, compress_type), "w", force_zip64=large) as target:
        shutil.copyfileobj(source, target, 1 << 20)
