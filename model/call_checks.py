"""Checks of a public call's arguments whose errors name the argument, and where the call's warnings point.

A flag is taken as given only when it is True or False: ``exact="False"`` is a true string, and turned exact mode
on. A path is a ``str`` or ``os.PathLike``: ``cache_dir=123`` failed in ``os.fspath`` with a message naming no
argument. A tensor argument given as a numpy array failed on a tensor method (AttributeError).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

# This package's folder: frames of its code are the library's, the first frame outside it is the caller's.
_MODEL_FOLDER = os.path.dirname(os.path.abspath(__file__)) + os.sep  # as code objects name their files


def _shown(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters (a long string or a big array in a one-line message)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def checked_flag(value: object, name: str) -> bool:
    """``value`` as a bool (numpy's ``bool_`` too); TypeError naming ``name`` for anything else."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(f"{name} must be True or False, not {type(value).__name__} {_shown(value)}")


def checked_path(value: object, name: str, what: str = "a path") -> str | os.PathLike[str]:
    """``value`` when it is a ``str`` or ``os.PathLike``; TypeError naming ``name`` (as ``what``) for anything
    else."""
    if isinstance(value, str | os.PathLike):
        return value
    raise TypeError(f"{name} must be {what} (str or os.PathLike), not {type(value).__name__} {_shown(value)}")


def check_tensors(**named: tuple[object, str]) -> None:
    """Each argument ``name=(value, shape)`` a torch tensor; TypeError naming the first that is not and its expected
    ``shape`` (``"[Q, D]"``), with the conversion for a numpy array."""
    for name, (value, shape) in named.items():
        if not isinstance(value, torch.Tensor):
            hint = f": torch.from_numpy({name})" if isinstance(value, np.ndarray) else ""
            raise TypeError(f"{name} must be a torch tensor {shape}, not {type(value).__name__}{hint}")


def caller_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the function calling this that names the first frame outside
    ``clipvis.model``: the user's call (``VideoPredictor(...)``), however deep inside the library the warning is
    raised (``set_vocabulary`` from ``__init__``; the text-embedding cache from the text classifier)."""
    frame = sys._getframe(1)  # the function that warns: stacklevel 1
    level = 1
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_MODEL_FOLDER):
        frame = frame.f_back
        level += 1
    return level
