"""clipvis command-line application: commands, video I/O, writers, datasets and evaluation.

Its modules are loaded on first use (``clipvis.cli.memory.HeapTrimmer`` after ``import clipvis.cli``), so importing
the package alone imports none of them (nor torch).
"""

from __future__ import annotations

from importlib import import_module
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from clipvis import __version__

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    """A submodule or subpackage not imported yet (``clipvis.cli.memory``), as an eager package gives it."""
    if name.startswith("__") or not name.isidentifier() or find_spec(f"{__name__}.{name}") is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return import_module(f"{__name__}.{name}")


def __dir__() -> list[str]:
    here = Path(__file__).parent
    modules = {path.stem for path in here.glob("*.py") if path.stem != "__init__"}
    modules |= {path.parent.name for path in here.glob("*/__init__.py")}
    return sorted({*(name for name in globals() if name.startswith("__")), *__all__, *modules})
