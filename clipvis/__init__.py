"""clipvis: open-vocabulary video instance segmentation (CLIP-VIS), checkpoint-compatible, in plain PyTorch.

The installed package has three parts, kept in the repository as top-level folders:

* ``clipvis.model`` (``model/``): the model core, importable on its own (no CLI, file formats or video I/O);
* ``clipvis.weights`` (``weights/``): the registry of released checkpoints and how to get them;
* ``clipvis.cli`` (``clipvis_cli/``): the ``clipvis`` command and the application around the model.

The names below are loaded on first use, so ``import clipvis`` (and the CLI's start-up) does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

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
    module = _LAZY_EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clipvis' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
