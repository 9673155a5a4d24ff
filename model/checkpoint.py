"""Checkpoints: official detectron2 ``.pth`` files (spec §6) and clipvis' own safetensors format."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from clipvis.model.config import ClipVisConfig, load_clip_model_config, load_config_file

# Official prefix -> clipvis module prefix.
_PREFIX_MAP = (
    ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
    ("sem_seg_head.predictor.", "mask_decoder."),
    ("backbone.clip_model.", "backbone.clip_model."),
)
# Present in official files but not parameters of the model (spec §6.1).
_IGNORED_KEYS = re.compile(r"^(criterion\.empty_object_weight|pixel_mean|pixel_std|backbone\.clip_model\.attn_mask)$")
FORMAT_TAG = "clipvis"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as first:  # noqa: BLE001 - retried with numpy allowed, then reported
        import numpy as np

        core = getattr(np, "_core", None) or np.core
        allowed = [np.ndarray, np.dtype, core.multiarray._reconstruct]
        allowed += [type(np.dtype(t)) for t in ("float32", "float64", "int64", "int32", "uint8", "bool")]
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001
            reason = " ".join(str(first).split())
            reason = reason if len(reason) <= 160 else reason[:157] + "..."
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from first


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Tensors with clipvis key names, and the embedded model config (clipvis format) or None (official)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
        config = json.loads(metadata["config"]) if metadata.get("format") == FORMAT_TAG else None
        return tensors, config
    raw = _torch_load(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(raw).__name__}")
    state = raw.get("model", raw)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: the 'model' entry is not a state dict")
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
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
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError):
                continue
        tensors[key] = value
    return tensors, None


def _max_index(keys: list[str], pattern: str) -> int | None:
    found = [int(m.group(1)) for k in keys if (m := re.match(pattern, k))]
    return max(found) + 1 if found else None


def infer_head_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Head sizes that the key names and shapes tell (spec §6.2)."""
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
    return out


def infer_clip_model(state: dict[str, torch.Tensor]) -> tuple[str, str] | None:
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


def resolve_config(
    state: dict[str, torch.Tensor],
    embedded: dict[str, Any] | None,
    config: str | Path | dict[str, Any] | None,
    clip_config: str | Path | dict[str, Any] | None,
) -> ClipVisConfig:
    """Combine: defaults < embedded config < user config < what the checkpoint's keys tell."""
    values = ClipVisConfig().to_dict()
    if embedded:
        values.update(embedded)
    if config is not None:
        values.update(config if isinstance(config, dict) else load_config_file(config))
    notes: list[str] = list(values.get("notes") or [])
    inferred = infer_head_config(state)
    for key, value in inferred.items():
        if values.get(key) != value:
            if config is not None and key == "decoder_layers":
                notes.append(
                    f"config says DEC_LAYERS {values[key] + 1} but the checkpoint has {value} decoder layers; "
                    f"using the checkpoint's (DEC_LAYERS {value + 1})"
                )
            values[key] = value
    if clip_config is not None:
        values["clip_model_config"] = load_clip_model_config(clip_config)
    elif values.get("clip_model_config") is None:
        known = infer_clip_model(state)
        if known is not None and (known[0] != values["clip_model_name"]):
            values["clip_model_name"], values["clip_pretrained"] = known
    values["notes"] = notes
    return ClipVisConfig.from_dict(values)


def _describe(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_model(
    path: str | Path,
    config: str | Path | dict[str, Any] | None = None,
    clip_config: str | Path | dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
):
    """Build a :class:`ClipVis` for a checkpoint file and load its weights (strict: no silent partial load)."""
    from clipvis.model.build import create_model

    path = Path(path)
    state, embedded = read_state_dict(path)
    cfg = resolve_config(state, embedded, config, clip_config)
    for note in cfg.notes:
        warnings.warn(note, stacklevel=2)
    has_clip = any(k.startswith("backbone.clip_model.") for k in state)
    model = create_model(cfg, pretrained_clip=not has_clip)
    expected = model.state_dict()
    if not has_clip:
        state = {**{k: v for k, v in expected.items() if k.startswith("backbone.")}, **state}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
        if mismatched:
            parts.append(f"shape mismatches ({len(mismatched)}): {_describe(mismatched)}")
        raise CheckpointError(f"{path}: checkpoint does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def to_official_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights under the official detectron2 key names (spec §6), e.g. for the official code."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        for official, ours in _PREFIX_MAP:
            if key.startswith(ours):
                key = official + key[len(ours) :]
                break
        out[key] = value
    out["criterion.empty_object_weight"] = torch.tensor([1.0, 0.4])
    return out


def save_pretrained(model, path: str | Path) -> Path:
    """Write weights + model config into one self-describing safetensors file (atomically)."""
    import os

    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    config["notes"] = []
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": FORMAT_TAG, "config": json.dumps(config)})
    os.replace(tmp, path)
    return path
