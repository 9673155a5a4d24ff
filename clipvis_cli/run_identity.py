"""What identifies a run's results: the checkpoint file (`checkpoint_identity`), the config files
(`config_identity`), a file's content (`file_digest`) and, under torchrun, what the ranks compare before any input
runs (`Producer`). `segment`'s run.json and evaluate's cache record these (clipvis.cli.segment.SegmentOptions)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipvis.cli.messages import path_text

if TYPE_CHECKING:
    from clipvis.cli.segment import SegmentOptions


def checkpoint_identity(path: Path | str) -> dict[str, Any]:
    """A checkpoint file's identity for `--skip-existing`: resolved path, size and modification time (ns)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    return {"file": path_text(real), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


# Under torchrun, what the ranks compare before any input runs (``Producer``). Not the cache key / run.json identity
# itself: that holds the checkpoint's resolved path and modification time and the config files' paths, which differ
# between machines holding copies of the same files (another mount point; a copy gets a new mtime), so comparing it
# would stop legitimate jobs. What must agree is what the results depend on: the weights' content, the vocabulary and
# the result options (config files by their resolved content). Rank 0's key is the one evaluate's cache records for
# every rank's videos, which is right exactly when the other ranks ran the same weights. The same checkpoint identity
# (path, size, mtime: one file on a shared file system) is taken as the same weights without reading them; another
# size as other weights; otherwise (a copy elsewhere) the ranks compare the files' SHA-256, read only then.
_OPTION_NAMES = {"clipvis": "clipvis version", "config": "--config (its content)",
                 "clip_config": "--clip-config (its content)"}


@dataclass
class Producer:
    """What produces a run's results, as torchrun ranks compare it: the weights (``weights_identity``, the checkpoint
    file's identity and, when asked for, its SHA-256), the vocabulary and the result options (config files by the
    digest of their content, not their path)."""

    weights: str
    checkpoint: dict[str, Any] | None
    vocabulary: list[str]
    options: dict[str, Any]
    digest: str | None = None

    @classmethod
    def of(cls, options: SegmentOptions) -> Producer:
        result = options.result_options()
        checkpoint = result.pop("checkpoint", None)
        for key in ("config", "clip_config"):
            if result.get(key) is not None:
                result[key] = result[key]["sha256"]
        return cls(options.weights_identity(), checkpoint, list(options.vocabulary), result)

    def same_file(self, other: Producer) -> bool:
        return self.checkpoint is not None and self.checkpoint == other.checkpoint

    def needs_digest(self, other: Producer) -> bool:
        """Whether the weights are the same only if their contents are (another file of the same size)."""
        size = (self.checkpoint or {}).get("bytes")
        return not self.same_file(other) and size is not None and size == (other.checkpoint or {}).get("bytes")

    def difference(self, main: Producer, here: str = "here", there: str = "there") -> str | None:
        """What differs from ``main`` (another rank's), as ``"other weights: X (N bytes) here, Y (M bytes) there"``,
        or None. Digests are compared where ``needs_digest`` (both must be set)."""
        if self.vocabulary != main.vocabulary:
            return "another vocabulary: " + _first_list_difference(self.vocabulary, main.vocabulary, here, there)
        if self.options != main.options:
            keys = sorted(k for k in {*self.options, *main.options} if self.options.get(k) != main.options.get(k))
            return "other settings: " + ", ".join(
                f"{_OPTION_NAMES.get(k, '--' + k.replace('_', '-'))} {_shown(self.options.get(k))} {here}, "
                f"{_shown(main.options.get(k))} {there}"
                for k in keys
            )
        if self.same_file(main):
            return None
        if self.needs_digest(main) and self.digest is not None and self.digest == main.digest:
            return None
        what = "" if not self.needs_digest(main) else " (same size, other content)"
        return f"other weights{what}: {self._weights_text()} {here}, {main._weights_text()} {there}"

    def _weights_text(self) -> str:
        size = (self.checkpoint or {}).get("bytes")
        return self.weights if size is None else f"{self.weights} ({size} bytes)"


def _shown(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64:  # a config's digest
        return value[:12]
    return "unset" if value is None else str(value)


def _first_list_difference(mine: list[str], main: list[str], here: str, there: str) -> str:
    """``"3 class(es) here, 2 there"`` or ``"class 2 is 'dog' here, 'cat' there"``."""
    for position, (a, b) in enumerate(zip(mine, main, strict=False)):
        if a != b:
            return f"class {position + 1} is {a!r} {here}, {b!r} {there}"
    return f"{len(mine)} class(es) {here}, {len(main)} {there}"


def file_digest(path: Path | str) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def config_identity(path: str | None, clip: bool = False, resolve: bool = True) -> dict[str, str] | None:
    """A config file's identity: its path (``resolve``: absolute, symbolic links resolved) and the SHA-256 of what it
    resolves to (after `_BASE_` includes), or of its bytes when it cannot be parsed."""
    if path is None:
        return None
    from clipvis.model.config import load_clip_model_config, load_config_file

    try:
        content = load_clip_model_config(path) if clip else load_config_file(path)
        text = json.dumps(content, sort_keys=True, default=str).encode()
    except (ValueError, OSError):
        try:
            text = Path(path).read_bytes()
        except OSError:
            text = b""
    return {"path": path_text(os.path.realpath(path) if resolve else path), "sha256": hashlib.sha256(text).hexdigest()}

