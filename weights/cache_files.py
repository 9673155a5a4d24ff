"""Files and folders of the shared weights cache: the modes they get (the process' umask, as ``open()`` and
``mkdir()`` would give them: a cache may be shared by several users)."""

from __future__ import annotations

import os


def process_umask() -> int:
    """The process' umask, read from /proc where it can be (setting the umask to read it is process-wide)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def new_file_mode() -> int:
    """0666 less the umask: the mode ``open()`` gives a new file."""
    return 0o666 & ~process_umask()


def new_folder_mode() -> int:
    """0777 less the umask: the mode ``mkdir()`` gives a new folder."""
    return 0o777 & ~process_umask()
