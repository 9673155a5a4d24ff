"""clipvis: open-vocabulary video instance segmentation (CLIP-VIS), checkpoint-compatible, in plain PyTorch.

The installed package has three parts, kept in the repository as top-level folders:

* ``clipvis.model`` (``model/``): the model core, importable on its own (no CLI, output formats or video I/O);
* ``clipvis.weights`` (``weights/``): the registry of released checkpoints and how to get them;
* ``clipvis.cli`` (``clipvis_cli/``): the ``clipvis`` command and the application around the model.

The names below, and the three subpackages, are loaded on first use, so ``import clipvis`` (and the CLI's start-up)
does not import torch.
"""

from __future__ import annotations

import sys
from importlib import import_module
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from importlib.metadata import PackageNotFoundError, version
from importlib.util import spec_from_file_location
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The repository's folders of the subpackages (pyproject.toml's package-dir).
_SOURCE_FOLDERS = {"cli": "clipvis_cli", "model": "model", "weights": "weights"}


class _SourceTreeFinder(MetaPathFinder):
    """Finds ``clipvis.cli``, ``clipvis.model`` and ``clipvis.weights`` in the repository's top-level folders, for a
    ``clipvis`` package imported from a clone rather than from site-packages: ``python -m clipvis`` or ``torchrun -m
    clipvis`` run in the clone's root find its ``clipvis/`` first (the current folder leads ``sys.path``), which has
    no ``cli/`` inside, and failed with ModuleNotFoundError after ``pip install .``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        package, _, name = fullname.partition(".")
        if package != "clipvis" or name not in _SOURCE_FOLDERS:
            return None
        folder = self.root / _SOURCE_FOLDERS[name]
        return spec_from_file_location(fullname, folder / "__init__.py", submodule_search_locations=[str(folder)])


def _serve_the_source_tree() -> None:
    here = Path(__file__).resolve().parent
    if (here / "cli").is_dir():  # the installed layout
        return
    root = here.parent
    if all((root / folder / "__init__.py").is_file() for folder in _SOURCE_FOLDERS.values()):
        sys.meta_path.insert(0, _SourceTreeFinder(root))


_serve_the_source_tree()

try:
    __version__ = version("clipvis")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "0.0.0+unknown"

_LAZY_EXPORTS = {
    "ClipVis": "clipvis.model",
    "ClipVisConfig": "clipvis.model",
    "VideoPredictor": "clipvis.model",
    "create_model": "clipvis.model",
    "load_model": "clipvis.model",
    "save_pretrained": "clipvis.model",
}

__all__ = [
    "ClipVis",
    "ClipVisConfig",
    "VideoPredictor",
    "__version__",
    "create_model",
    "load_model",
    "save_pretrained",
]

if TYPE_CHECKING:
    from clipvis.model import ClipVis, ClipVisConfig, VideoPredictor, create_model, load_model, save_pretrained


def __getattr__(name: str) -> Any:
    if name in _SOURCE_FOLDERS:  # ``clipvis.model.SetCriterion`` after ``import clipvis``, as README writes it
        return import_module(f"{__name__}.{name}")  # (the import sets it as this module's attribute)
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clipvis' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *_SOURCE_FOLDERS})
