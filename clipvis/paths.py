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
SYMLINK_LOOP = "symbolic-link loop"


def missing_reason(path: str | os.PathLike[str]) -> str:
    """Why ``path``, which `Path.exists` says is not there, names nothing: a symbolic-link loop (ELOOP: a link to
    itself, two links to each other, or a loop in a folder on the way; Path calls such a path missing), a broken
    symbolic link, or no such file. The loop is said without the system's words for ELOOP ("Too many levels of
    symbolic links" says the same), so that a message wrapping the reason in parentheses stays one clean line."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return SYMLINK_LOOP
    return BROKEN_SYMLINK if Path(path).is_symlink() else NO_SUCH_FILE
