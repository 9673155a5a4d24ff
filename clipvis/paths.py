"""What a path that names nothing is, in the words every part of clipvis says it with: the command line's inputs and
options (``clipvis.cli``), a checkpoint's path (``clipvis.weights``, which imports nothing of ``clipvis.cli``) and a
config file's (``clipvis.model``). The standard library only."""

from __future__ import annotations

import errno
import os
from pathlib import Path

# What `missing_reason` says of a path that names nothing at all, and of a symbolic link to nothing.
NO_SUCH_FILE = "no such file or directory"
BROKEN_SYMLINK = "broken symbolic link"


def missing_reason(path: str | os.PathLike[str]) -> str:
    """Why ``path``, which `Path.exists` says is not there, names nothing: a symbolic-link loop (ELOOP: a link to
    itself, two links to each other, or a loop in a folder on the way; Path calls such a path missing), a broken
    symbolic link, or no such file."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"symbolic-link loop ({' '.join(str(error.strerror or error).split())})"
    return BROKEN_SYMLINK if Path(path).is_symlink() else NO_SUCH_FILE
