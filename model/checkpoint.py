"""State-dict I/O: official detectron2 ``.pth`` files and clipvis' own safetensors format (no model building here).

Key layout (docs/architecture.md, "Key layout"): official ``backbone.clip_model.*`` (the whole open_clip CLIP),
``sem_seg_head.pixel_decoder.*`` and ``sem_seg_head.predictor.*`` are clipvis' ``backbone.clip_model.*``,
``pixel_decoder.*`` and ``mask_decoder.*``. Building a model from a state dict is :mod:`clipvis.model.build`'s job.
"""

from __future__ import annotations

import errno
import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipvis.model.config import OBJECT_CLASS_WEIGHTS
from clipvis.model.errors import ParameterHint
from clipvis.weights.cache_files import new_file_mode

# Official prefix -> clipvis module prefix.
_PREFIX_MAP = (
    ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
    ("sem_seg_head.predictor.", "mask_decoder."),
    ("backbone.clip_model.", "backbone.clip_model."),
)
# Present in official files but not parameters of the model (buffers the official code saves or used to save).
_IGNORED_KEYS = re.compile(r"^(criterion\.empty_object_weight|pixel_mean|pixel_std|backbone\.clip_model\.attn_mask)$")
FORMAT_TAG = "clipvis"


class CheckpointError(ParameterHint, ValueError):
    """A checkpoint that cannot be read or does not fit the model (a message that says which parameter to give names
    it as Python does: ``ParameterHint.worded`` for other names)."""


def _torch_load(path: Path) -> Any:
    try:
        return _weights_only_load(path)
    except Exception as first:  # noqa: BLE001 - retried with numpy allowed, then reported
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        allowed = [np.ndarray, np.dtype, core.multiarray._reconstruct]
        allowed += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "uint8", "bool")]
        try:
            with torch.serialization.safe_globals(allowed):
                return _weights_only_load(path)
        except Exception:  # noqa: BLE001
            raise CheckpointError(_unreadable(path, first)) from first


def _weights_only_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` without torch's warning that a file "looks like a TorchScript archive" (it
    came before the error that says so: `_unreadable`)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*looks like a TorchScript archive")
        return torch.load(path, map_location="cpu", weights_only=True)


def _unreadable(path: Path, error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` could not read ``path``, in words: torch's own message is mostly advice
    to load the file unsafely, with the cause in the middle ("Unsupported operand 103")."""
    try:
        with open(path, "rb") as file:
            head = file.read(4)
    except OSError:
        head = b""
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or a legacy pickle
        return f"{path}: not a PyTorch checkpoint (neither the zip archive torch.save writes nor a pickle)"
    text = " ".join(str(error).split())
    what = "a zip archive" if head.startswith(b"PK") else "a pickle"
    if "central directory" in text or "failed reading zip archive" in text:
        return (f"{path}: not a readable PyTorch checkpoint: the zip archive is incomplete (a download or copy cut "
                "short?)")
    if "TorchScript" in text:
        return f"{path}: a TorchScript archive (torch.jit.save), not a checkpoint of weights (torch.save(state_dict))"
    if "WeightsUnpickler error:" not in text:  # e.g. a zip archive that torch.save did not write, a truncated file
        text = text if len(text) <= 160 else text[:157] + "..."
        return f"{path}: not a readable PyTorch checkpoint ({what}: {text})"
    cause = text.split("WeightsUnpickler error:", 1)[1]
    cause = cause.split(" Check the documentation", 1)[0].split(" Please use `torch.serialization", 1)[0].strip()
    cause = cause if len(cause) <= 160 else cause[:157] + "..."
    return (f"{path}: not a readable PyTorch checkpoint: {what} holding more than tensors and plain containers "
            f"({cause}); clipvis reads weights only, never runs code from a file")


# The first names of the model's keys, clipvis's and the official code's (``_PREFIX_MAP``, ``_IGNORED_KEYS``): a key
# prefix whose removal leaves keys that all begin so was a training wrapper's
_MODEL_KEY_ROOTS = ("backbone.", "pixel_decoder.", "mask_decoder.", "sem_seg_head.", "criterion.", "pixel_mean",
                    "pixel_std")
# The prefixes training wrappers give every key: a LightningModule's attribute holding the model (``self.model``:
# Lightning saves the LightningModule's state dict), and DataParallel's / DistributedDataParallel's ``module.``, alone
# or around a module holding ``.model``
_WRAPPER_PREFIXES = ("model.", "module.model.", "module.")


def _without_wrapper_prefix(state: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """``state`` without the one wrapper prefix (``_WRAPPER_PREFIXES``) every tensor's key has, where removing it (and
    a ``module.`` after it) leaves keys that are the model's (``_MODEL_KEY_ROOTS``); else ``state`` as it is, for the
    missing/unexpected keys a load reports."""
    keys = [key for key, value in state.items()
            if isinstance(key, str) and _is_weight(value)]
    for prefix in _WRAPPER_PREFIXES:
        if keys and all(
            key.startswith(prefix) and key[len(prefix):].removeprefix("module.").startswith(_MODEL_KEY_ROOTS)
            for key in keys
        ):
            return {key[len(prefix):] if isinstance(key, str) else key: value for key, value in state.items()}
    return state


def _names_keys_officially(state: Mapping[Any, Any]) -> bool:
    """Whether an official-format (``torch.save``) state dict names the head's keys as the official code does
    (``sem_seg_head.*``): true unless a key has clipvis' own head names (``pixel_decoder.*``, ``mask_decoder.*``; a
    clipvis model's ``state_dict()`` saved with torch.save)."""
    ours = tuple(prefix for _, prefix in _PREFIX_MAP if not prefix.startswith("backbone."))
    return not any(isinstance(key, str) and key.removeprefix("module.").startswith(ours)
                   for key in _without_wrapper_prefix(state))


def official_key(key: str) -> str:
    """A clipvis state-dict key under its official (detectron2) name: ``mask_decoder.x`` is
    ``sem_seg_head.predictor.x`` (``_PREFIX_MAP``); other keys are their own."""
    for official, ours in _PREFIX_MAP:
        if key.startswith(ours):
            return official + key[len(ours):]
    return key


def from_official_keys(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """An official (detectron2) state dict with clipvis key names: a training wrapper's prefix all keys share stripped
    (Lightning's ``model.``: `_without_wrapper_prefix`), ``module.`` stripped, prefixes mapped, buffers that are not
    model parameters dropped, numpy arrays converted; non-tensor entries are skipped."""
    tensors: dict[str, torch.Tensor] = {}
    for key, value in _without_wrapper_prefix(state).items():
        if not isinstance(key, str):
            continue
        key = key.removeprefix("module.")
        if _IGNORED_KEYS.match(key):
            continue
        for old, new in _PREFIX_MAP:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        if not isinstance(value, torch.Tensor):
            if not _is_numpy_array(value):  # an optimizer's state, an epoch number, a note
                continue
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):  # an array of objects
                continue
        tensors[key] = value
    return tensors


def _is_numpy_array(value: Any) -> bool:
    """Whether ``value`` is a numpy array or scalar (what detectron2's pickled checkpoints hold), without importing
    numpy for files that hold none."""
    return type(value).__module__ == "numpy" and hasattr(value, "dtype")


def _is_weight(value: Any) -> bool:
    """Whether a checkpoint's entry is a weight: a tensor, or a numpy array (detectron2's pickles)."""
    return isinstance(value, torch.Tensor) or _is_numpy_array(value)


def _holds_tensors(value: Any) -> bool:
    """Whether ``value`` is a mapping with at least one tensor (or numpy array) among its values: a state dict."""
    return isinstance(value, Mapping) and any(_is_weight(item) for item in value.values())


# The keys training code commonly saves a model's state dict under, beside other entries (an optimizer's state, an
# epoch): Lightning's "state_dict", the PyTorch tutorials' "model_state_dict", and others' "net" / "network".
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "net", "network")


def _unwrapped_state(path: Path, raw: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """The state dict in a ``torch.load``-ed checkpoint: detectron2's ``{"model": ..., "iteration": ...}``, a bare
    state dict (its non-tensor entries skipped later), or the one tensor-holding entry under a common wrapper key
    (``_WRAPPER_KEYS``). A file whose weights sit only under another key, or under several, is refused naming them."""
    if isinstance(raw.get("model"), Mapping):  # detectron2 (the official checkpoints)
        return raw["model"]
    # a 'model' entry that is no state dict (a name: {"state_dict": ..., "model": "clipvis-r50"}) is metadata
    if any(_is_weight(value) for value in raw.values()):
        return raw
    holders = [key for key, value in raw.items() if _holds_tensors(value)]
    if not holders:
        return raw  # no tensors anywhere: "not a CLIP-VIS checkpoint" names what it holds
    if len(holders) == 1 and holders[0] in _WRAPPER_KEYS:
        return raw[holders[0]]
    if len(holders) == 1:
        known = ", ".join(repr(key) for key in ("model", *_WRAPPER_KEYS))
        raise CheckpointError(f"{path}: the weights sit under the key {holders[0]!r}, not at the top level or under a "
                              f"key clipvis reads them from ({known}); save checkpoint[{holders[0]!r}] on its own "
                              "with torch.save")
    shown = ", ".join(repr(key) for key in holders[:5]) + (", ..." if len(holders) > 5 else "")
    raise CheckpointError(f"{path}: tensors sit under {len(holders)} keys ({shown}): which is the model's weights is "
                          "not clear; save that entry on its own with torch.save(checkpoint[KEY], 'model.pth')")


def to_official_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A clipvis state dict under the official detectron2 key names (plus the criterion buffer official files hold)."""
    out = {official_key(key): value for key, value in state.items()}
    out["criterion.empty_object_weight"] = torch.tensor(OBJECT_CLASS_WEIGHTS)
    return out


@dataclass
class CheckpointContents:
    """What a checkpoint file holds: its tensors under clipvis' key names, the model config a clipvis file embeds
    (None for an official file), and whether the file names its keys officially (``sem_seg_head.predictor.*``, so
    that messages name a key as the file does: :func:`official_key`)."""

    tensors: dict[str, torch.Tensor]
    config: dict[str, Any] | None
    official_names: bool


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Tensors with clipvis key names, and the embedded model config (clipvis format) or None (official):
    :func:`read_checkpoint`'s tensors and config."""
    contents = read_checkpoint(path)
    return contents.tensors, contents.config


def read_checkpoint(path: str | Path) -> CheckpointContents:
    """A checkpoint file's tensors with clipvis key names, its embedded model config (clipvis format) or None
    (official), and whether it names its keys officially.

    The tensors hold their own memory, never a mapping of the file: the file may change or go while they live.

    Official files are read with ``torch.load(weights_only=True)`` (numpy arrays allowed): no code in a checkpoint
    runs. Raises :class:`CheckpointError` (one line naming the file) for anything unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    try:  # the format by the file's first bytes: save_pretrained("x.pth") writes safetensors too
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from exc
    if b"<html" in head.lower() or head.lstrip().lower().startswith(b"<!doctype html"):
        raise CheckpointError(f"{path}: an HTML page, not a checkpoint (a failed Google Drive download?); download "
                              "it again in a browser or with gdown")
    # safetensors: an 8-byte little-endian header length, then the JSON header
    safetensors = head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 2**32
    if safetensors or path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            if not _utf8_name(path):  # safe_open takes UTF-8 names alone ("Path ... is not valid UTF-8")
                metadata, tensors = _safetensors_from_bytes(path.read_bytes())
            else:
                with safe_open(str(path), framework="pt") as handle:
                    metadata = handle.metadata() or {}
                    # Copies: safetensors' tensors are views of a mapping of the file, which a model would keep for
                    # as long as it runs (load_model makes these tensors its weights), and a file overwritten in
                    # place meanwhile (cp, wget -O) would end the process with SIGBUS.
                    tensors = {key: handle.get_tensor(key).clone() for key in handle.keys()}
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
        config = None
        if metadata.get("format") == FORMAT_TAG:
            try:
                config = json.loads(metadata["config"])
            except KeyError:
                raise CheckpointError(f"{path}: a clipvis safetensors file without its model config (metadata "
                                      "'config'); save it again with clipvis") from None
            except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to read
                reason = exc if isinstance(exc, ValueError) else "nested too deeply"
                raise CheckpointError(
                    f"{path}: the model config in its metadata is not valid JSON ({reason})") from None
            if not isinstance(config, dict):
                raise CheckpointError(f"{path}: the model config in its metadata is not a JSON object")
        return CheckpointContents(tensors, config, official_names=False)  # safetensors keys are read as they are
    raw = _torch_load(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(raw).__name__}")
    state = _unwrapped_state(path, raw)
    return CheckpointContents(from_official_keys(state), None, official_names=_names_keys_officially(state))


def _utf8_name(path: Path) -> bool:
    """Whether ``path``'s name is valid UTF-8 (not a name whose bytes Python holds as lone surrogates)."""
    try:
        os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _safetensors_from_bytes(data: bytes) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A safetensors file's metadata and tensors from its bytes (the header: an 8-byte little-endian length, then
    JSON with the metadata under ``__metadata__``), for a file safe_open cannot be given the name of."""
    from safetensors.torch import load

    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return dict(metadata or {}), load(data)


def write_state_dict(state: Mapping[str, torch.Tensor], config: Mapping[str, Any], path: str | Path) -> Path:
    """Write tensors + a model config into one self-describing safetensors file, atomically (temp file + rename)."""
    from safetensors.torch import save, save_file

    path = Path(path).expanduser()  # "~/x.safetensors", as load_model reads it
    if path.is_dir():  # (the whole file was written, then the rename failed naming the temporary file)
        raise IsADirectoryError(f"{path} is a folder: give a file name (e.g. {path / 'model.safetensors'})")
    if not path.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "no such folder to write the checkpoint in", str(path.parent))
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        metadata = {"format": FORMAT_TAG, "config": json.dumps(dict(config))}
        if _utf8_name(tmp):
            save_file(tensors, str(tmp), metadata=metadata)
        else:  # save_file takes UTF-8 names alone: the bytes, written by Python
            with open(tmp, "wb") as handle:
                handle.write(save(tensors, metadata=metadata))
        # safetensors creates its file readable by its owner alone: give it the mode open() would (a training
        # run's checkpoints are read by the rest of the team)
        os.chmod(tmp, new_file_mode())
        _flush_to_disk(tmp)  # before the rename: a crash after it never leaves the name on a file not yet written
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _flush_to_disk(path: Path) -> None:
    """Flush a closed file's data to disk (``fsync``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _max_index(keys: list[str], pattern: str) -> int | None:
    found = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    return max(found) + 1 if found else None


def has_clip_weights(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether the state dict holds the CLIP (released files may leave it out; it is then taken from open_clip)."""
    return any(key.startswith("backbone.clip_model.") for key in state)


def infer_head_config(state: Mapping[str, torch.Tensor], encoder_points: int = 4) -> dict[str, Any]:
    """Head sizes that the key names and shapes tell: ClipVisConfig fields (decoder layers from the highest
    ``transformer_ffn_layers.i``, attention heads from the deformable-attention offsets, widths from shapes)."""
    keys = list(state)
    out: dict[str, Any] = {}
    layers = _max_index(keys, r"mask_decoder\.transformer_ffn_layers\.(\d+)\.")
    if layers is not None:
        out["decoder_layers"] = layers
    enc_layers = _max_index(keys, r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\.")
    if enc_layers is not None:
        out["encoder_layers"] = enc_layers
    shapes = {
        "mask_decoder.query_feat.weight": ("num_queries", 0),
        "mask_decoder.transformer_ffn_layers.0.linear1.weight": ("dim_feedforward", 0),
        "pixel_decoder.input_proj.0.0.weight": ("conv_dim", 0),
        "pixel_decoder.mask_features.weight": ("mask_dim", 0),
        "pixel_decoder.transformer.encoder.layers.0.linear1.weight": ("encoder_dim_feedforward", 0),
    }
    for key, (name, dim) in shapes.items():
        if key in state:
            out[name] = int(state[key].shape[dim])
    if "mask_decoder.query_feat.weight" in state:
        out["hidden_dim"] = int(state["mask_decoder.query_feat.weight"].shape[1])
    # sampling_offsets has heads * levels (3) * points * 2 rows and attention_weights heads * levels * points rows.
    offsets = state.get("pixel_decoder.transformer.encoder.layers.0.self_attn.sampling_offsets.weight")
    weights = state.get("pixel_decoder.transformer.encoder.layers.0.self_attn.attention_weights.weight")
    if offsets is not None and weights is not None and offsets.shape[0] == 2 * weights.shape[0]:
        heads, rest = divmod(int(weights.shape[0]), 3 * encoder_points)
        if heads > 0 and rest == 0:
            out["num_heads"] = heads
    return out


def infer_clip_model(state: Mapping[str, torch.Tensor]) -> tuple[str, str] | None:
    """Which released CLIP the backbone keys belong to: (open_clip name, pretrained tag), if recognisable."""
    conv1 = state.get("backbone.clip_model.visual.conv1.weight")
    token = state.get("backbone.clip_model.token_embedding.weight")
    if conv1 is not None and token is not None and conv1.shape[0] == 32 and token.shape[1] == 512:
        blocks = [_max_index(list(state), rf"backbone\.clip_model\.visual\.layer{i}\.(\d+)\.") for i in range(1, 5)]
        if blocks == [3, 4, 6, 3]:
            return "RN50", "openai"
    stem = state.get("backbone.clip_model.visual.trunk.stem.0.weight")
    if stem is not None and stem.shape[0] == 128 and token is not None and token.shape[1] == 640:
        return "convnext_base_w_320", "laion_aesthetic_s13b_b82k"
    return None
