"""The disk cache of vocabularies' text embeddings (docs/architecture.md, "TextClassifier"): one safetensors file
per key under ``<cache>/text_embeddings``, the cache root being `clipvis.weights.cache_dir()` (``CLIPVIS_CACHE``, ...)
unless given. Entries are written to a temporary file and renamed into place with the umask's mode; a folder that
cannot be written costs time only (one warning, then no disk cache)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from clipvis.model.call_checks import caller_stacklevel
from clipvis.weights import CacheLocationError
from clipvis.weights import cache_dir as clipvis_cache_dir
from clipvis.weights.cache_files import new_file_mode

_TEMP_SUFFIX = ".tmp.safetensors"
_STALE_TEMP_SECONDS = 3600


class TextEmbeddingCache:
    """Text embeddings ``[S, E]`` on disk by key (`TextClassifier.cache_key`).

    ``cache_root``: the clipvis cache folder whose ``text_embeddings`` holds the entries (None: `clipvis.weights`'
    cache, located when first used; ``~`` is the home folder); ``enabled``: False reads and writes nothing."""

    def __init__(self, cache_root: Path | str | None = None, enabled: bool = True) -> None:
        self._cache_root = Path(cache_root).expanduser() if cache_root is not None else None
        self.enabled = enabled
        self._warned = False

    @property
    def cache_dir(self) -> Path:
        """The folder of the disk cache: ``<cache>/text_embeddings``. Located when used, not before (a bad
        ``CLIPVIS_CACHE`` raises `clipvis.weights.CacheLocationError` here, which `save` turns into its warning)."""
        return (self._cache_root or clipvis_cache_dir()) / "text_embeddings"

    def path(self, key: str) -> Path:
        """The file of the entry ``key``: ``<cache_dir>/<key>.safetensors``."""
        return self.cache_dir / f"{key}.safetensors"

    def load(self, key: str, num_synonyms: int) -> torch.Tensor | None:
        """The embeddings ``[S, E]`` stored under ``key``; None when absent, unreadable or not ``num_synonyms``
        rows."""
        if not self.enabled:
            return None
        from safetensors.torch import load_file

        try:
            if not self.path(key).is_file():
                return None
            embeddings = load_file(str(self.path(key)))["embeddings"]
        except Exception:  # noqa: BLE001 - a corrupt or unreadable cache entry is recomputed, never fatal
            return None
        return embeddings if embeddings.shape[0] == num_synonyms else None

    def save(self, key: str, embeddings: torch.Tensor, vocabulary: list[str]) -> None:
        """Store an entry on disk. A cache folder that is read-only, full or otherwise unusable costs time only:
        one warning, then the run goes on without the disk cache."""
        if not self.enabled:
            return
        from safetensors.torch import save_file

        tmp: str | None = None
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self._remove_stale_temp_files()
            handle, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=_TEMP_SUFFIX, dir=self.cache_dir)
            os.close(handle)
            save_file({"embeddings": embeddings.contiguous()}, tmp, metadata={"vocabulary": json.dumps(vocabulary)})
            # mkstemp made it readable by its owner alone: give it the mode open() would (the umask's), as the
            # weights cache's files get, so the users sharing a cache share its embeddings too
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, self.path(key))
            tmp = None
        except Exception as error:  # noqa: BLE001 - OSError, or safetensors' own error type for the same causes
            self._disable(error)
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _remove_stale_temp_files(self) -> None:
        """Delete temporary files that a process killed while saving left behind (older than an hour: no live
        save takes that long)."""
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for path in self.cache_dir.glob(f".*{_TEMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def _disable(self, error: BaseException) -> None:
        self.enabled = False
        if not self._warned:
            self._warned = True
            reason = " ".join(str(error).split()) or type(error).__name__
            try:
                what = (f"text-embedding cache {self.cache_dir} is not writable ({reason}); going on without it (set "
                        "CLIPVIS_CACHE to a writable folder to keep embeddings between runs)")
            except CacheLocationError:  # the error itself says where, why and what to set
                what = f"text-embedding cache: {reason}; going on without it"
            warnings.warn(what, RuntimeWarning, stacklevel=caller_stacklevel())
