"""Model configuration as plain data, and readers for the official CLIP-VIS (detectron2) config files."""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

# CLIP mean/std x 255, RGB order: the official PIXEL_MEAN / PIXEL_STD for both backbones (docs/fidelity.md).
CLIP_PIXEL_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_PIXEL_STD = (68.5005327, 66.6321579, 70.32316305)


@dataclass
class ClipVisConfig:
    """Every architectural and test-time setting of a CLIP-VIS model.

    Defaults are the official R50 video settings (``CV:configs/clipvis_video_R50.yaml``, docs/architecture.md) with
    6 transformer-decoder layers (``DEC_LAYERS 7``, the LVIS-trained release).
    """

    # Frozen CLIP (open_clip). `clip_model_config` (an open_clip model config dict) wins over the name.
    clip_model_name: str = "RN50"
    clip_pretrained: str = "openai"
    clip_model_config: dict[str, Any] | None = None
    # Head sizes.
    hidden_dim: int = 256
    num_queries: int = 100
    decoder_layers: int = 6  # transformer-decoder layers = official DEC_LAYERS - 1
    num_heads: int = 8  # decoder attention heads and MSDeformAttn heads (MASK_FORMER.NHEADS)
    dim_feedforward: int = 2048
    conv_dim: int = 256
    mask_dim: int = 256
    encoder_layers: int = 6
    encoder_dim_feedforward: int = 1024  # hard-coded in the official pixel decoder
    encoder_points: int = 4
    norm_groups: int = 32
    iou_activation: str = "sigmoid"  # "relu" for the pre-2024-06 checkpoints (docs/fidelity.md)
    # Test-time settings.
    min_size_test: int = 480
    max_size_test: int = 1333
    size_divisibility: int = 32
    pixel_mean: tuple[float, float, float] = CLIP_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = CLIP_PIXEL_STD
    memory_length: int = 9  # TEST.NUM_FRAME
    top_k: int = 5  # TEST.NUM_TOPK
    detections_per_video: int = 50  # TEST.DETECTIONS_PER_IMAGE
    max_logit_scale: float = 100.0
    # Where each value came from is not tracked; `notes` records anything a loader had to decide.
    notes: list[str] = field(default_factory=list)

    @property
    def official_dec_layers(self) -> int:
        return self.decoder_layers + 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pixel_mean"] = list(self.pixel_mean)
        data["pixel_std"] = list(self.pixel_std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipVisConfig:
        data = dict(data)
        if data.pop("pre_norm", False):  # written by clipvis <= 0.1.0 files, always False there
            raise ValueError(PRE_NORM_UNSUPPORTED)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown model config keys: {', '.join(unknown)}")
        values = copy.deepcopy(dict(data))
        for key in ("pixel_mean", "pixel_std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def updated(self, **changes: Any) -> ClipVisConfig:
        data = self.to_dict()
        data.update(changes)
        return ClipVisConfig.from_dict(data)


PRE_NORM_UNSUPPORTED = (
    "PRE_NORM True (a pre-norm transformer decoder) is not supported: every released CLIP-VIS model is post-norm"
)

# Official (detectron2) config key -> ClipVisConfig field. DEC_LAYERS is special-cased (minus one).
_OFFICIAL_KEYS: dict[tuple[str, ...], str] = {
    ("MODEL", "FC_CLIP", "CLIP_MODEL_NAME"): "clip_model_name",
    ("MODEL", "FC_CLIP", "CLIP_PRETRAINED_WEIGHTS"): "clip_pretrained",
    ("MODEL", "MASK_FORMER", "HIDDEN_DIM"): "hidden_dim",
    ("MODEL", "MASK_FORMER", "NUM_OBJECT_QUERIES"): "num_queries",
    ("MODEL", "MASK_FORMER", "NHEADS"): "num_heads",
    ("MODEL", "MASK_FORMER", "DIM_FEEDFORWARD"): "dim_feedforward",
    ("MODEL", "MASK_FORMER", "SIZE_DIVISIBILITY"): "size_divisibility",
    ("MODEL", "SEM_SEG_HEAD", "CONVS_DIM"): "conv_dim",
    ("MODEL", "SEM_SEG_HEAD", "MASK_DIM"): "mask_dim",
    ("MODEL", "SEM_SEG_HEAD", "TRANSFORMER_ENC_LAYERS"): "encoder_layers",
    ("MODEL", "PIXEL_MEAN"): "pixel_mean",
    ("MODEL", "PIXEL_STD"): "pixel_std",
    ("INPUT", "MIN_SIZE_TEST"): "min_size_test",
    ("INPUT", "MAX_SIZE_TEST"): "max_size_test",
    ("TEST", "NUM_FRAME"): "memory_length",
    ("TEST", "NUM_TOPK"): "top_k",
    ("TEST", "DETECTIONS_PER_IMAGE"): "detections_per_video",
}


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_official_yaml(path: str | Path, _including: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read an official CLIP-VIS config file as a nested dict, following `_BASE_` includes.

    A chain of includes that comes back to a file already in it raises ValueError naming the chain.
    """
    import yaml

    path = Path(path)
    resolved = path.resolve()
    if resolved in _including:
        chain = " -> ".join(str(p) for p in (*_including, resolved))
        raise ValueError(f"{_including[0]}: _BASE_ includes form a cycle ({chain})")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read config file: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping of config keys")
    base = data.pop("_BASE_", None)
    if base:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        data = _deep_merge(read_official_yaml(base_path, (*_including, resolved)), data)
    return data


def _lookup(tree: dict[str, Any], keys: tuple[str, ...]) -> Any:
    node: Any = tree
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def official_key_name(field: str) -> str | None:
    """The official config key (its last part, e.g. ``NUM_OBJECT_QUERIES``) of a ClipVisConfig field, if any."""
    return next((keys[-1] for keys, name in _OFFICIAL_KEYS.items() if name == field), None)


def overrides_from_official(tree: dict[str, Any]) -> dict[str, Any]:
    """Translate an official detectron2-style config tree into ClipVisConfig field overrides."""
    out: dict[str, Any] = {}
    for keys, name in _OFFICIAL_KEYS.items():
        value = _lookup(tree, keys)
        if value is None or value == "":
            continue
        out[name] = tuple(float(v) for v in value) if name in ("pixel_mean", "pixel_std") else value
    if _lookup(tree, ("MODEL", "MASK_FORMER", "PRE_NORM")):
        raise ValueError(PRE_NORM_UNSUPPORTED)
    dec_layers = _lookup(tree, ("MODEL", "MASK_FORMER", "DEC_LAYERS"))
    if dec_layers is not None:
        out["decoder_layers"] = int(dec_layers) - 1
    return out


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Overrides from a config file: an official CLIP-VIS YAML, or a clipvis JSON/YAML of field names."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: config file not found")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read config file: {exc}") from exc
    else:
        data = read_official_yaml(path)
    if any(key in data for key in ("MODEL", "INPUT", "TEST")):
        return overrides_from_official(data)
    ClipVisConfig.from_dict({**ClipVisConfig().to_dict(), **data})  # validates the field names
    return data


def load_clip_model_config(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """An open_clip model config given as a dict or a JSON file."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read open_clip model config: {exc}") from exc
    if not isinstance(data, dict) or "vision_cfg" not in data or "text_cfg" not in data:
        raise ValueError(f"{path}: not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
    return data
