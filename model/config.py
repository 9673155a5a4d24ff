"""Model configuration as plain data, and readers for the official CLIP-VIS (detectron2) config files."""

from __future__ import annotations

import copy
import json
import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from clipvis.paths import NO_SUCH_FILE, missing_reason

# CLIP mean/std x 255, RGB order: the official PIXEL_MEAN / PIXEL_STD for both backbones (docs/fidelity.md).
CLIP_PIXEL_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_PIXEL_STD = (68.5005327, 66.6321579, 70.32316305)
# The CLIP backbones' total stride (res5; RN50 and ConvNeXt alike): an image side under it leaves no res5 pixel (a
# pooling or ConvNeXt downsampling then fails), so images are padded to a multiple of it (the official
# SIZE_DIVISIBILITY 32, docs/fidelity.md "Normalisation and padding").
BACKBONE_STRIDE = 32
# Class weights of the object cross-entropy, object / no object (CLIP-VIS: the no-object class weighs 0.4;
# detectron2's NO_OBJECT_WEIGHT is not used). `SetCriterion`'s default, and the ``criterion.empty_object_weight``
# buffer an official checkpoint holds.
OBJECT_CLASS_WEIGHTS: tuple[float, float] = (1.0, 0.4)


class ModelSettingError(ValueError):
    """A model setting no model is built or run with (one-line message). ``settings`` names what it refuses, so that
    a caller reading the values from several places can say which one set it: ClipVisConfig field names
    (``num_queries``; two for sizes that do not fit together) or, for the official tree's own checks, dotted
    official keys (``MODEL.MASK_FORMER.DEC_LAYERS``)."""

    def __init__(self, message: str, settings: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.settings = settings


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

    def __post_init__(self) -> None:
        """Refuse values no model runs with (a config typo such as ``NUM_FRAME: "nine"`` or ``MIN_SIZE_TEST: -8``
        failed deep inside a run, blamed on the video or the weights), naming the setting; ValueError."""
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ModelSettingError(f"{_setting(name)} must be a positive integer, not {value!r}", (name,))
            setattr(self, name, int(value))
        self._check_sizes_fit()
        if isinstance(self.min_size_test, bool) or not isinstance(self.min_size_test, numbers.Integral) \
                or self.min_size_test < 0:  # 0: frames are not resized (detectron2's ResizeShortestEdge of 0)
            raise ModelSettingError(f"{_setting('min_size_test')} must be a positive integer, or 0 for no resize, "
                                    f"not {self.min_size_test!r}", ("min_size_test",))
        self.min_size_test = int(self.min_size_test)
        if isinstance(self.size_divisibility, bool) or not isinstance(self.size_divisibility, numbers.Integral):
            # 0 or below: no padding (detectron2's SIZE_DIVISIBILITY 0; preprocess.padded_shape)
            raise ModelSettingError(f"{_setting('size_divisibility')} must be an integer, not "
                                    f"{self.size_divisibility!r}", ("size_divisibility",))
        self.size_divisibility = int(self.size_divisibility)
        if self.size_divisibility > 1 and self.size_divisibility % BACKBONE_STRIDE:
            # 7 padded a thin frame to 7 pixels, which no backbone runs (a pooling's "output size is too small")
            raise ModelSettingError(f"{_setting('size_divisibility')} must be a multiple of {BACKBONE_STRIDE} (the "
                                    f"CLIP backbones' stride; the official {BACKBONE_STRIDE}), or 0 for no padding, "
                                    f"not {self.size_divisibility}", ("size_divisibility",))
        for name in ("clip_model_name", "clip_pretrained"):
            if not isinstance(getattr(self, name), str):
                raise ModelSettingError(f"{_setting(name)} must be a string, not {getattr(self, name)!r}", (name,))
        if self.iou_activation not in ("sigmoid", "relu"):
            raise ModelSettingError(f"iou_activation must be sigmoid or relu, not {self.iou_activation!r}",
                                    ("iou_activation",))
        if self.clip_model_config is not None:
            if not isinstance(self.clip_model_config, dict):
                raise ModelSettingError(f"clip_model_config must be an open_clip model config object, not "
                                        f"{type(self.clip_model_config).__name__}", ("clip_model_config",))
            try:
                check_clip_model_config(self.clip_model_config, "clip_model_config")
            except ValueError as exc:
                raise ModelSettingError(str(exc), ("clip_model_config",)) from None
        if not _is_number(self.max_logit_scale) or self.max_logit_scale <= 0:
            raise ModelSettingError(f"max_logit_scale must be a positive number, not {self.max_logit_scale!r}",
                                    ("max_logit_scale",))
        for name in ("pixel_mean", "pixel_std"):
            value = getattr(self, name)
            if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 3 \
                    or not all(map(_is_number, value)) or (name == "pixel_std" and min(value) <= 0):
                kind = "positive numbers" if name == "pixel_std" else "numbers"
                raise ModelSettingError(f"{_setting(name)} must be 3 {kind} (R, G, B), not {value!r}", (name,))
            setattr(self, name, tuple(float(v) for v in value))

    def _check_sizes_fit(self) -> None:
        """Refuse head sizes the layers cannot be built or run with (``hidden_dim`` 250 with 8 heads was a bare
        AssertionError from ``nn.MultiheadAttention``, ``conv_dim`` 250 torch's GroupNorm error): each attention
        splits its width among ``num_heads`` (the decoder's ``hidden_dim``, the pixel decoder's deformable
        attention's ``conv_dim``), GroupNorm splits ``conv_dim`` into ``norm_groups``, and the sine position encoding
        gives half of a width to each axis. ValueError naming the settings."""
        for name in ("hidden_dim", "conv_dim"):
            width = getattr(self, name)
            if width % self.num_heads:
                raise ModelSettingError(f"{_setting(name)} must be divisible by {_setting('num_heads')}: {width} is "
                                        f"not a multiple of {self.num_heads}", (name, "num_heads"))
            if width % 2:
                raise ModelSettingError(f"{_setting(name)} must be even (the position encoding gives half of it to "
                                        f"each axis), not {width}", (name,))
        if self.conv_dim % self.norm_groups:
            raise ModelSettingError(f"{_setting('conv_dim')} must be divisible by norm_groups (the pixel decoder's "
                                    f"GroupNorm groups, 32 in the official code): {self.conv_dim} is not a multiple "
                                    f"of {self.norm_groups}", ("conv_dim", "norm_groups"))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pixel_mean"] = list(self.pixel_mean)
        data["pixel_std"] = list(self.pixel_std)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipVisConfig:
        data = dict(data)
        if data.pop("pre_norm", False):  # written by clipvis <= 0.1.0 files, always False there
            raise ModelSettingError(PRE_NORM_UNSUPPORTED, ("pre_norm",))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelSettingError(f"unknown model config keys: {', '.join(unknown)}", tuple(unknown))
        return cls(**copy.deepcopy(dict(data)))  # __post_init__ checks the values


_POSITIVE_INTS = (
    "hidden_dim", "num_queries", "decoder_layers", "num_heads", "dim_feedforward", "conv_dim", "mask_dim",
    "encoder_layers", "encoder_dim_feedforward", "encoder_points", "norm_groups", "max_size_test",
    "memory_length", "top_k", "detections_per_video",
)


def clip_name(name: str, pretrained: str) -> str:
    """A CLIP as messages name it: ``RN50/openai``, or the name alone when it has no pretrained tag (``NoSuchCLIP``,
    not ``NoSuchCLIP/``)."""
    return f"{name}/{pretrained}" if pretrained else name


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _setting(name: str) -> str:
    """A field's name for messages, with its official config key: ``memory_length (TEST.NUM_FRAME)``."""
    keys = next((keys for keys, field_name in _OFFICIAL_KEYS.items() if field_name == name), None)
    if name == "decoder_layers":
        return "decoder_layers (MODEL.MASK_FORMER.DEC_LAYERS - 1)"
    return f"{name} ({'.'.join(keys)})" if keys else name


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


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new tree: ``override``'s values over ``base``'s, nested dicts merged key by key. The result shares nothing
    with either input (deep copies): changing it changes neither."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_official_yaml(path: str | Path, _including: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read an official CLIP-VIS config file as a nested dict, following `_BASE_` includes.

    A `_BASE_` is relative to the folder of the file that names it (as detectron2 reads it: a config in
    `configs/lvis/` names `../Base.yaml`, whose own `_BASE_` is relative to `configs/`). A chain of includes that
    comes back to a file already in it raises ValueError naming the chain.
    """
    tree: dict[str, Any] = {}
    for _, data in official_yaml_chain(path, _including):
        tree = deep_merge(tree, data)
    return tree


def official_yaml_chain(path: str | Path, _including: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """The files an official config file is made of, the furthest `_BASE_` first and `path` last, each with its
    own keys (its `_BASE_` taken out): `read_official_yaml` merges them in this order. ValueError as there."""
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
    except RecursionError:  # a document nested too deeply for the parser
        raise ValueError(f"{path}: cannot read config file: nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping of config keys")
    base = data.pop("_BASE_", None)
    if base is not None and not isinstance(base, str):
        raise ValueError(f"{path}: _BASE_ must be one file name, not {base!r}")
    bases: list[tuple[Path, dict[str, Any]]] = []
    if base:
        base_path = Path(base) if Path(base).is_absolute() else path.parent / base
        bases = official_yaml_chain(base_path, (*_including, resolved))
    return [*bases, (path, data)]


def official_key_files(chain: list[tuple[Path, dict[str, Any]]]) -> dict[str, Path]:
    """For each dotted key (``CLIPVIS.TRAIN_DATA``, ``MODEL.WEIGHTS``) whose value the files of an
    `official_yaml_chain` give, the file the merged value comes from (the last in the chain to set it): a path it
    holds is relative to that file's folder. A mapping's keys are listed one by one, a list or other value as one
    key."""
    files: dict[str, Path] = {}

    def walk(node: dict[str, Any], file: Path, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, file, f"{dotted}.")
            else:
                files[dotted] = file

    for file, data in chain:
        walk(data, file, "")
    return files


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


def official_key(field: str) -> str | None:
    """The dotted official config key a ClipVisConfig field is read from (``MODEL.MASK_FORMER.NUM_OBJECT_QUERIES``;
    ``MODEL.MASK_FORMER.DEC_LAYERS`` for ``decoder_layers``, one more than it), if any."""
    if field == "decoder_layers":
        return "MODEL.MASK_FORMER.DEC_LAYERS"
    return next((".".join(keys) for keys, name in _OFFICIAL_KEYS.items() if name == field), None)


def overrides_from_official(tree: dict[str, Any]) -> dict[str, Any]:
    """Translate an official detectron2-style config tree into ClipVisConfig field overrides."""
    out: dict[str, Any] = {}
    for keys, name in _OFFICIAL_KEYS.items():
        value = _lookup(tree, keys)
        if value is None or value == "":
            continue
        out[name] = value  # ClipVisConfig checks it (a list for PIXEL_MEAN, a positive integer for NUM_FRAME, ...)
    if _lookup(tree, ("MODEL", "MASK_FORMER", "PRE_NORM")):
        raise ModelSettingError(PRE_NORM_UNSUPPORTED, ("MODEL.MASK_FORMER.PRE_NORM",))
    dec_layers = _lookup(tree, ("MODEL", "MASK_FORMER", "DEC_LAYERS"))
    if dec_layers is not None:
        if isinstance(dec_layers, bool) or not isinstance(dec_layers, int) or dec_layers < 2:
            raise ModelSettingError(f"MODEL.MASK_FORMER.DEC_LAYERS must be an integer of at least 2, not "
                                    f"{dec_layers!r}", ("MODEL.MASK_FORMER.DEC_LAYERS",))
        out["decoder_layers"] = dec_layers - 1
    return out


#: The official meta-architecture clipvis implements: the video model (``CV:clipvis/clipvis_video.py``). The image
#: model ``CLIPVIS`` (``CV:clipvis/clipvis.py``; the official image configs name it) has the same modules and
#: checkpoint keys but scores each image on its own, ``sqrt(p * u * o)`` (docs/fidelity.md, "Scoring and selection").
VIDEO_META_ARCHITECTURE = "CLIPVIS_Video"
IMAGE_META_ARCHITECTURE = "CLIPVIS"


def official_settings_notes(tree: dict[str, Any]) -> list[str]:
    """Warnings for the settings of an official config tree that change what the official code computes and that
    clipvis does not follow (it runs the video model whatever ``MODEL.META_ARCHITECTURE`` says: an architecture other
    than the official two is said). ValueError for one
    that would make clipvis' results wrong: ``INPUT.FORMAT`` other than RGB (the official code would feed the model
    BGR frames, which a checkpoint trained with that config expects; clipvis feeds RGB, as the official configs say).
    ``TEST.TEST_NUM_CLASSES`` is not one: the vocabulary sets it (open vocabulary)."""
    input_format = _lookup(tree, ("INPUT", "FORMAT"))
    if input_format is not None and str(input_format).upper() != "RGB":
        raise ValueError(f"INPUT.FORMAT {input_format!r} is not supported: clipvis feeds the model RGB frames, as the "
                         f"official configs do, and a checkpoint trained on {input_format} frames would give other "
                         "results (set INPUT.FORMAT: RGB if it was trained on RGB frames)")
    notes: list[str] = []
    architecture = _lookup(tree, ("MODEL", "META_ARCHITECTURE"))
    # The image architecture is no difference: the LVIS releases were trained under it and the official code
    # evaluates them on video with the video one too (docs/fidelity.md), so their own configs say nothing.
    if architecture is not None and architecture not in (VIDEO_META_ARCHITECTURE, IMAGE_META_ARCHITECTURE):
        notes.append(f"config says META_ARCHITECTURE {architecture}, which clipvis does not know; it runs the video "
                     f"model ({VIDEO_META_ARCHITECTURE}: video scores, tracks across frames)")
    return notes


def _clipvis_model_fields(tree: dict[str, Any]) -> dict[str, Any]:
    """The ``CLIPVIS.MODEL`` mapping of a clipvis training config (ClipVisConfig field overrides), or none."""
    fields = _lookup(tree, ("CLIPVIS", "MODEL"))
    if fields is None:
        return {}
    if not isinstance(fields, dict):
        raise ValueError(f"CLIPVIS.MODEL must be a mapping of model settings, not {fields!r}")
    return dict(fields)


def config_file_key(path: str | Path, field_name: str) -> str | None:
    """The key of config file ``path`` that sets ClipVisConfig field ``field_name``, as the file spells it
    (``TEST.DETECTIONS_PER_IMAGE`` in an official YAML, ``CLIPVIS.MODEL.detections_per_video`` in a training run's
    config.yaml, ``detections_per_video`` in a clipvis JSON), or None when it does not set it (or cannot be read:
    `load_config_file` says why). Where both an official key and ``CLIPVIS.MODEL`` set it, the latter wins, as
    `load_config_file` reads it."""
    path = Path(path)
    try:
        tree = json.loads(path.read_text()) if path.suffix.lower() == ".json" else read_official_yaml(path)
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(tree, dict):
        return None
    if not any(k in tree for k in ("MODEL", "INPUT", "TEST", "CLIPVIS")):
        return field_name if field_name in tree else None
    clipvis_fields = _lookup(tree, ("CLIPVIS", "MODEL"))
    if isinstance(clipvis_fields, dict) and field_name in clipvis_fields:
        return f"CLIPVIS.MODEL.{field_name}"
    keys = next((keys for keys, name in _OFFICIAL_KEYS.items() if name == field_name), None)
    return ".".join(keys) if keys is not None and _lookup(tree, keys) not in (None, "") else None


#: What `load_config_file` says of a folder given as a config file.
FOLDER_NOT_CONFIG = "a folder, not a config file"


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Overrides from a config file: an official CLIP-VIS YAML, or a clipvis JSON/YAML of field names."""
    path = Path(path)
    if path.is_dir():  # it said "config file not found"
        raise ValueError(f"{path}: {FOLDER_NOT_CONFIG}")
    if not path.is_file():
        reason = missing_reason(path) if not path.exists() else NO_SUCH_FILE
        raise ValueError(f"{path}: config file not found" if reason == NO_SUCH_FILE else f"{path}: {reason}")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read config file: {exc}") from exc
        except RecursionError:
            raise ValueError(f"{path}: cannot read config file: nested too deeply") from None
    else:
        data = read_official_yaml(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a mapping of config keys, but a JSON {type(data).__name__}")
    try:
        if any(k in data for k in ("MODEL", "INPUT", "TEST", "CLIPVIS")):
            # a training run's config.yaml: the official keys, then its CLIPVIS.MODEL fields (as train reads it)
            overrides = {**overrides_from_official(data), **_clipvis_model_fields(data)}
            notes = official_settings_notes(data)
            if notes:  # said as the checkpoint's contradictions are (ClipVisConfig.notes, warned by load_model)
                overrides["notes"] = [*(overrides.get("notes") or []), *notes]
        else:
            overrides = data
        ClipVisConfig.from_dict({**ClipVisConfig().to_dict(), **overrides})  # checks the names and the values
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    return overrides


def load_clip_model_config(source: str | Path | dict[str, Any]) -> dict[str, Any]:
    """An open_clip model config given as a dict or a JSON file."""
    if isinstance(source, dict):
        return copy.deepcopy(source)
    path = Path(source)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read open_clip model config: {exc}") from exc
    except RecursionError:
        raise ValueError(f"{path}: cannot read open_clip model config: nested too deeply") from None
    check_clip_model_config(data, str(path))
    return data


def check_clip_model_config(data: Any, where: str) -> None:
    """Refuse what open_clip cannot build a CLIP from, before it tries (a TypeError traceback then): not an object
    with ``embed_dim``, ``vision_cfg`` and ``text_cfg``, or tower settings open_clip's configs do not have
    (``vision_cfg.bogus``); one ValueError starting with ``where``."""
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    if not isinstance(data, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= set(data):
        raise ValueError(f"{where}: not an open_clip model config (needs embed_dim, vision_cfg, text_cfg)")
    for key, tower in (("vision_cfg", CLIPVisionCfg), ("text_cfg", CLIPTextCfg)):
        value = data[key]
        if not isinstance(value, dict):
            raise ValueError(f"{where}: {key} must be an object of open_clip settings")
        unknown = sorted(set(value) - {f.name for f in fields(tower)})
        if unknown:
            raise ValueError(f"{where}: {key} has settings open_clip does not know: {', '.join(unknown)}")
