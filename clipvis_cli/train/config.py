"""Training configuration: the official (detectron2-style) key tree, shipped configs, overrides and autoscaling.

A training config is a nested mapping with the official key names (``SOLVER.BASE_LR``, ``MODEL.MASK_FORMER.
DEC_LAYERS``, ...). It is assembled as: :data:`DEFAULTS` (the official base config's training values) < the config
file (a shipped name such as ``lvis_r50.yaml``, or any official/clipvis YAML, ``_BASE_`` includes followed) <
``KEY=VALUE`` overrides (values parsed as YAML). Keys the official code has that clipvis does not use are kept and
ignored; clipvis' own additions live under ``CLIPVIS``. A file's key that is neither (a typo: ``SOLVER.MAX_ITERS``) is
refused, as an override's is, rather than training with the default it meant to change.

Autoscaling (linear scaling rule, as detectron2's ``REFERENCE_WORLD_SIZE``): a config states the global batch
``SOLVER.IMS_PER_BATCH`` it was tuned for on ``SOLVER.REFERENCE_WORLD_SIZE`` processes. Run on W processes, the
global batch becomes ``IMS_PER_BATCH * W / REFERENCE_WORLD_SIZE`` (the per-process batch stays), unless the batch
was set on the command line. With the scale ``s = new batch / config batch``, the learning rate is multiplied by
``s`` and ``MAX_ITER``, ``STEPS``, ``WARMUP_ITERS``, ``CHECKPOINT_PERIOD`` and ``TEST.EVAL_PERIOD`` divided by
``s``, so the number of epochs and the schedule's shape are kept. Those typed as ``KEY=VALUE`` are taken as written:
they are meant for the run being started (``SOLVER.MAX_ITER=5000`` is 5000 iterations). ``REFERENCE_WORLD_SIZE: 0``
or ``--no-autoscale`` keeps every value as written. 0 is the default, as in detectron2: the official CLIP-VIS files
do not set the key and are not scaled (their ``IMS_PER_BATCH`` is the global batch on any number of processes);
the shipped configs set ``REFERENCE_WORLD_SIZE: 4`` (the official 4-GPU setup). As detectron2's auto-scaling does,
the config a run records (config.yaml) has ``REFERENCE_WORLD_SIZE`` set to the run's number of processes (where it
was not 0): its values are the run's, reused as ``--config`` on as many processes they are not scaled again.
"""

from __future__ import annotations

import ast
import copy
import difflib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from clipvis.model.config import (
    CLIP_PIXEL_MEAN,
    CLIP_PIXEL_STD,
    FOLDER_NOT_CONFIG,
    ClipVisConfig,
    deep_merge,
    official_key,
    official_key_files,
    official_yaml_chain,
    overrides_from_official,
    read_official_yaml,
)
from clipvis.paths import NO_SUCH_FILE, missing_reason

SHIPPED_CONFIGS = (
    "lvis_r50.yaml", "lvis_convnext_b.yaml", "coco_r50.yaml", "coco_convnext_b.yaml", "ytvis19_r50.yaml",
    "ytvis19_convnext_b.yaml",
)

DEFAULTS: dict[str, Any] = {
    "MODEL": {
        "WEIGHTS": "",
        "DEVICE": "auto",
        "PIXEL_MEAN": list(CLIP_PIXEL_MEAN),
        "PIXEL_STD": list(CLIP_PIXEL_STD),
        "FC_CLIP": {"CLIP_MODEL_NAME": "RN50", "CLIP_PRETRAINED_WEIGHTS": "openai"},
        "SEM_SEG_HEAD": {"CONVS_DIM": 256, "MASK_DIM": 256, "TRANSFORMER_ENC_LAYERS": 6},
        "MASK_FORMER": {
            "DEC_LAYERS": 7, "NUM_OBJECT_QUERIES": 100, "HIDDEN_DIM": 256, "NHEADS": 8, "DIM_FEEDFORWARD": 2048,
            "DEEP_SUPERVISION": True, "OBJECT_WEIGHT": 2.0, "MASK_WEIGHT": 5.0, "DICE_WEIGHT": 5.0,
            "MASKIOU_WEIGHT": 2.0, "NO_OBJECT_WEIGHT": 0.1, "TRAIN_NUM_POINTS": 12544, "OVERSAMPLE_RATIO": 3.0,
            "IMPORTANCE_SAMPLE_RATIO": 0.75, "SIZE_DIVISIBILITY": 32,
        },
    },
    "DATASETS": {"TRAIN": ["lvis_v1_train_norare"], "TEST": []},
    "DATALOADER": {
        "NUM_WORKERS": 4, "FILTER_EMPTY_ANNOTATIONS": True, "SAMPLER_TRAIN": "RepeatFactorTrainingSampler",
        "REPEAT_THRESHOLD": 0.001, "ASPECT_RATIO_GROUPING": True,
    },
    "INPUT": {
        "DATASET_MAPPER_NAME": "coco_instance_lsj", "IMAGE_SIZE": 1024, "MIN_SCALE": 0.1, "MAX_SCALE": 2.0,
        "RANDOM_FLIP": "horizontal", "MIN_SIZE_TRAIN": [800], "MAX_SIZE_TRAIN": 1333, "SAMPLING_FRAME_NUM": 1,
        "FORMAT": "RGB",
        # test-time settings the checkpoints carry (clipvis' model defaults, the official video configs'), so that
        # every config takes them as KEY=VALUE: the image configs name none
        "MIN_SIZE_TEST": 480, "MAX_SIZE_TEST": 1333,
    },
    "SOLVER": {
        "IMS_PER_BATCH": 8, "REFERENCE_WORLD_SIZE": 0, "BASE_LR": 1e-4, "WEIGHT_DECAY": 0.05,
        "WEIGHT_DECAY_NORM": 0.0, "WEIGHT_DECAY_EMBED": 0.0, "BACKBONE_MULTIPLIER": 0.1, "OPTIMIZER": "ADAMW",
        "LR_SCHEDULER_NAME": "WarmupMultiStepLR", "STEPS": [327778, 355092], "MAX_ITER": 368750, "GAMMA": 0.1,
        "WARMUP_FACTOR": 1.0, "WARMUP_ITERS": 10, "WARMUP_METHOD": "linear", "CHECKPOINT_PERIOD": 10000,
        "CLIP_GRADIENTS": {"ENABLED": True, "CLIP_TYPE": "full_model", "CLIP_VALUE": 0.01, "NORM_TYPE": 2.0},
        "AMP": {"ENABLED": True},
    },
    "TEST": {"EVAL_PERIOD": 0, "NUM_FRAME": 9, "NUM_TOPK": 5, "DETECTIONS_PER_IMAGE": 50},
    "SEED": -1,
    "OUTPUT_DIR": "./output",
    "CLIPVIS": {
        # ClipVisConfig field overrides (e.g. a tiny model, or an open_clip model config for the CLIP).
        "MODEL": {},
        # Custom training data: a list of {json: annotation file, images: image or frame folder}.
        "TRAIN_DATA": [],
        # Custom periodic-evaluation data: a list of {json: YouTube-VIS GT, frames: frames folder}.
        "TEST_DATA": [],
        "DATA_ROOT": "",
        "AMP_DTYPE": "auto",  # auto (GPU: fp16 + GradScaler, as official; CPU: fp32), bf16 (a deviation), fp16
        "LOG_PERIOD": 20,
        "EVAL_VIDEOS": 0,  # periodic evaluation on at most this many videos (0 = all)
        # Custom data: train on iscrowd masks too (CVAT and Datumaro write every mask shape as crowd RLE)
        "CROWD_AS_INSTANCES": False,
        # An open_clip model config JSON for a CLIP open_clip does not know by name (as segment --clip-config)
        "CLIP_CONFIG": "",
    },
}


# The official config's keys beyond DEFAULTS' (detectron2's defaults, Mask2Former's, FC-CLIP's and CLIP-VIS' own, as
# the official code's add_*_config functions define them): a config file may set them; clipvis reads the ones in
# DEFAULTS and _RECIPE_CHOICES. A group in OFFICIAL_GROUPS_NOT_READ (detectron2 parts CLIP-VIS does not build: RPN,
# ROI heads, other backbones, test-time augmentation, ...) is taken whole, whatever keys it holds: nothing reads it.
OFFICIAL_KEYS_NOT_READ = (
    "CUDNN_BENCHMARK", "FLOAT32_PRECISION", "VERSION", "VIS_PERIOD",
    "DATALOADER.REPEAT_SQRT",
    "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TEST", "DATASETS.PRECOMPUTED_PROPOSAL_TOPK_TRAIN",
    "DATASETS.PROPOSAL_FILES_TEST", "DATASETS.PROPOSAL_FILES_TRAIN",
    "INPUT.AUGMENTATIONS", "INPUT.COLOR_AUG_SSD", "INPUT.CROP.ENABLED", "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA",
    "INPUT.CROP.SIZE", "INPUT.CROP.TYPE", "INPUT.MASK_FORMAT", "INPUT.MIN_SIZE_TRAIN_SAMPLING",
    "INPUT.SAMPLING_FRAME_RANGE", "INPUT.SAMPLING_FRAME_SHUFFLE", "INPUT.SIZE_DIVISIBILITY",
    "MODEL.KEYPOINT_ON", "MODEL.LOAD_PROPOSALS", "MODEL.MASK_ON", "MODEL.META_ARCHITECTURE",
    "MODEL.FC_CLIP.EMBED_DIM", "MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_ALPHA", "MODEL.FC_CLIP.GEOMETRIC_ENSEMBLE_BETA",
    "MODEL.FC_CLIP.ENSEMBLE_ON_VALID_MASK",
    "MODEL.MASK_FORMER.AGNOSTIC_CLASSIFIER", "MODEL.MASK_FORMER.CLIP_CLASSIFIER", "MODEL.MASK_FORMER.CLIP_PATH",
    "MODEL.MASK_FORMER.CLASS_WEIGHT", "MODEL.MASK_FORMER.DROPOUT", "MODEL.MASK_FORMER.ENC_LAYERS",
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ", "MODEL.MASK_FORMER.PRE_NORM", "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME",
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE",
    "MODEL.SEM_SEG_HEAD.ASPP_CHANNELS", "MODEL.SEM_SEG_HEAD.ASPP_DILATIONS", "MODEL.SEM_SEG_HEAD.ASPP_DROPOUT",
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_HEADS",
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES", "MODEL.SEM_SEG_HEAD.LOSS_TYPE", "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT",
    "MODEL.SEM_SEG_HEAD.NAME", "MODEL.SEM_SEG_HEAD.NORM", "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME", "MODEL.SEM_SEG_HEAD.PROJECT_CHANNELS",
    "MODEL.SEM_SEG_HEAD.PROJECT_FEATURES", "MODEL.SEM_SEG_HEAD.USE_DEPTHWISE_SEPARABLE_CONV",
    "SOLVER.BASE_LR_END", "SOLVER.BIAS_LR_FACTOR", "SOLVER.MOMENTUM", "SOLVER.NESTEROV", "SOLVER.NUM_DECAYS",
    "SOLVER.POLY_LR_CONSTANT_ENDING", "SOLVER.POLY_LR_POWER", "SOLVER.RESCALE_INTERVAL", "SOLVER.WEIGHT_DECAY_BIAS",
    "TEST.EXPECTED_RESULTS", "TEST.KEYPOINT_OKS_SIGMAS", "TEST.TEST_NUM_CLASSES", "TEST.WINDOW_INFERENCE",
)
OFFICIAL_GROUPS_NOT_READ = (
    "GLOBAL", "MODEL.ANCHOR_GENERATOR", "MODEL.BACKBONE", "MODEL.FPN", "MODEL.PANOPTIC_FPN",
    "MODEL.PROPOSAL_GENERATOR", "MODEL.RESNETS", "MODEL.RETINANET", "MODEL.ROI_BOX_CASCADE_HEAD", "MODEL.ROI_BOX_HEAD",
    "MODEL.ROI_HEADS", "MODEL.ROI_KEYPOINT_HEAD", "MODEL.ROI_MASK_HEAD", "MODEL.RPN", "MODEL.SWIN", "MODEL.CONVNEXT",
    "MODEL.MASK_FORMER.TEST", "TEST.AUG", "TEST.PRECISE_BN",
    # the values CLIPVIS.MODEL holds are ClipVisConfig fields: it checks their names
    "CLIPVIS.MODEL",
)


def _known_key_tree() -> dict[str, Any]:
    """The keys a config file may set, as a tree: a leaf is None, a group taken whole is ``...``."""
    def tree_of(defaults: dict[str, Any]) -> dict[str, Any]:
        return {key: tree_of(value) if isinstance(value, dict) else None for key, value in defaults.items()}

    known = tree_of(DEFAULTS)
    for dotted, leaf in [(k, None) for k in (*OFFICIAL_KEYS_NOT_READ, *_RECIPE_CHOICES)] + [
            (k, ...) for k in OFFICIAL_GROUPS_NOT_READ]:
        *groups, last = dotted.split(".")
        node = known
        for group in groups:
            node = node.setdefault(group, {})
        if leaf is ... or last not in node:
            node[last] = leaf
    return known


def check_known_keys(tree: dict[str, Any], source: str) -> None:
    """ConfigError naming a config file's key that is neither clipvis' nor the official recipe's (a typo such as
    ``SOLVER.MAX_ITERS``, which would leave the default in place), with the nearest known key at that place."""
    def walk(node: dict[str, Any], known: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if key not in known:
                close = difflib.get_close_matches(str(key), [str(k) for k in known], n=1, cutoff=0.6)
                hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
                raise ConfigError(f"{source}: unknown config key {dotted}{hint}; clipvis takes the official keys of "
                                  "the CLIP-VIS recipe it implements, and CLIPVIS.*")
            below = known[key]
            if isinstance(below, dict) and isinstance(value, dict):
                walk(value, below, f"{dotted}.")

    walk(tree, _known_key_tree(), "")


class ConfigError(ValueError):
    """A config file or override that cannot be used (one-line message)."""


def shipped_config_path(name: str) -> Path | None:
    """The packaged config file for a bare name (``lvis_r50.yaml``, also without ``.yaml``), or None."""
    file_name = name if name.endswith((".yaml", ".yml")) else f"{name}.yaml"
    if "/" in file_name or file_name not in SHIPPED_CONFIGS:
        return None
    return Path(str(resources.files("clipvis.cli.train") / "configs" / file_name))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``A.B.C=value`` -> (["A", "B", "C"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. SOLVER.BASE_LR=0.0002)")
    key, raw = text.split("=", 1)
    keys = [k for k in key.strip().split(".") if k]
    if not keys:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({exc.problem})") from exc
    if isinstance(value, str):  # YAML 1.1 reads "2e-5" (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return keys, value


def _set(tree: dict[str, Any], keys: list[str], value: Any, source: str) -> None:
    node = tree
    for i, key in enumerate(keys[:-1]):
        if not isinstance(node.get(key), dict):
            if key in node:
                raise ConfigError(f"{source}: {'.'.join(keys[: i + 1])} is a value, not a group of keys")
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def _get(tree: dict[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = tree
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


RUN_CONFIG_NAME = "config.yaml"  # the resolved config a run writes into its output folder (what --resume reads)


@dataclass
class TrainConfig:
    """A resolved training config tree plus what the command line set."""

    tree: dict[str, Any]
    source: str  # the config file read
    overridden: frozenset[str]  # dotted keys set on the command line
    # the file each key's value comes from where a _BASE_ file gave it (its paths are relative to that file's folder)
    key_files: dict[str, str] = field(default_factory=dict)

    def get(self, dotted: str, default: Any = None) -> Any:
        """The value at a dotted key (``SOLVER.BASE_LR``), or ``default`` when it is absent."""
        return _get(self.tree, dotted, default)

    def set(self, dotted: str, value: Any) -> None:
        _set(self.tree, dotted.split("."), value, "config")

    def model_config(self) -> ClipVisConfig:
        """The architecture (official keys, then ``CLIPVIS.MODEL`` field overrides). ConfigError naming the file that
        set the value refused (a `_BASE_` file's ``DEC_LAYERS: 1`` was blamed on the config given), its cause the
        model's error."""
        values = ClipVisConfig().to_dict()
        try:  # PRE_NORM true, a DEC_LAYERS below 2: ValueError (a traceback from `clipvis train`)
            values.update(overrides_from_official(self.tree))
            values.update(self.get("CLIPVIS.MODEL") or {})
            return ClipVisConfig.from_dict(values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self._files_setting(getattr(exc, 'settings', ()))}: {exc}") from exc

    def file_setting(self, dotted: str) -> str:
        """The config file the value of ``dotted`` comes from: the `_BASE_` file that set it, else the config file
        given (a ``KEY=VALUE`` override is not told apart: see ``overridden``)."""
        return _file_setting(self.key_files, self.source)(dotted)

    def _files_setting(self, settings: tuple[str, ...]) -> str:
        """The config files that set the model ``settings`` a ModelSettingError refuses (dotted official keys, or
        ClipVisConfig fields: ``CLIPVIS.MODEL``'s when it sets them, else their official keys'), ``; ``-joined: a
        `_BASE_` file's, the config file given for a value it holds. A default value is not blamed beside another
        (``HIDDEN_DIM: 250`` with the default ``NHEADS`` 8 is the file that set ``HIDDEN_DIM``); the config file given
        when the error names none."""
        clipvis_fields = self.get("CLIPVIS.MODEL")
        file_of = _file_setting(self.key_files, self.source)
        files: list[str] = []
        for setting in settings:
            if "." in setting:
                dotted: str | None = setting
            elif isinstance(clipvis_fields, dict) and setting in clipvis_fields:
                dotted = f"CLIPVIS.MODEL.{setting}"
            else:
                dotted = official_key(setting)
            if dotted is not None and len(settings) > 1 and dotted not in self.key_files \
                    and self.get(dotted, _ABSENT) == _get(DEFAULTS, dotted, _ABSENT):
                continue
            file = self.source if dotted is None else file_of(dotted)
            if file not in files:
                files.append(file)
        return "; ".join(files) or self.source

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.tree, sort_keys=False)


def load_train_config(name_or_file: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Defaults < config file (shipped name or path) < ``KEY=VALUE`` overrides."""
    text = str(name_or_file)
    path = Path(text).expanduser()
    if path.is_dir():  # it said "config file not found"; a run's folder is continued with --output-dir and --resume
        held_run = (path / RUN_CONFIG_NAME).is_file()
        resume = f" (to continue the run in it: --output-dir {text} --resume)" if held_run else ""
        raise ConfigError(f"{text}: {FOLDER_NOT_CONFIG}{resume}")
    if not path.is_file():
        shipped = shipped_config_path(text)
        if shipped is None or not shipped.is_file():
            reason = missing_reason(path) if not path.exists() else NO_SUCH_FILE
            found = "config file not found" if reason == NO_SUCH_FILE else f"a {reason}, no config file"
            raise ConfigError(f"{text}: {found} and not a shipped config ({', '.join(SHIPPED_CONFIGS)})")
        path = shipped
    try:
        chain = official_yaml_chain(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    tree: dict[str, Any] = {}
    for _, data in chain:
        tree = deep_merge(tree, data)
    key_files = {key: str(file) for key, file in official_key_files(chain).items() if file != path}
    for file, data in reversed(chain):  # a key the file itself holds: the top config's first, then its _BASE_ files'
        check_known_keys(data, str(path) if file == path else os.path.normpath(file))
    file_of = _file_setting(key_files, str(path))
    from_file = deep_merge(DEFAULTS, _typed_tree(tree, DEFAULTS, file_of))
    merged, set_by = _overridden(from_file, overrides)
    _check_values(merged, lambda dotted: f"override {set_by[dotted]!r}" if dotted in set_by else file_of(dotted))
    config = TrainConfig(merged, str(path), frozenset(set_by), key_files)
    try:  # the model settings too, before any data loads (TEST.NUM_FRAME=0 failed after minutes of LVIS records)
        config.model_config()
    except ConfigError as error:
        if set_by:  # blamed on the overrides when the files alone are fine
            TrainConfig(from_file, str(path), frozenset(), key_files).model_config()
            cause = str(error.__cause__)
            culprits = _model_culprits(from_file, str(path), list(set_by.values()))
            raise ConfigError(f"{'; '.join(f'override {item!r}' for item in culprits)}: {cause}") from None
        raise
    return config


def _file_setting(key_files: dict[str, str], top: str) -> Callable[[str], str]:
    """A message's name for the config file a dotted key's value comes from: the `_BASE_` file ``key_files`` says set
    it (or, for a group of keys, one of its keys; its path as `os.path.normpath` writes it, `cfgs/common/solver.yaml`
    for `cfgs/lvis/../common/solver.yaml`, symlinks not followed), else ``top``, the config file given."""
    def file_of(dotted: str) -> str:
        file = key_files.get(dotted)
        if file is None:
            file = next((found for key, found in reversed(key_files.items()) if key.startswith(f"{dotted}.")), None)
        return top if file is None else os.path.normpath(file)

    return file_of


def _overridden(tree: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> tuple[dict[str, Any], dict[str, str]]:
    """A copy of ``tree`` with the ``KEY=VALUE`` overrides applied, typed as the values they replace, and each
    dotted key set with the override that set it (the last, for a key set twice), for messages."""
    merged = copy.deepcopy(tree)
    set_by: dict[str, str] = {}
    for item in overrides:
        keys, value = parse_override(item)
        dotted = ".".join(keys)
        current = _get(merged, dotted, _ABSENT)
        # CLIPVIS.MODEL fields: ClipVisConfig checks them; an official key clipvis has no default for, but checks (a
        # dropout, the pixel decoder's norm), is taken and checked as in a config file
        if current is _ABSENT and keys[:2] != ["CLIPVIS", "MODEL"] and dotted not in _RECIPE_CHOICES:
            raise ConfigError(f"override {item!r}: no config key {dotted} (a typo? clipvis takes the official keys "
                              "of the CLIP-VIS recipe it implements, and CLIPVIS.*)")
        _set(merged, keys, _typed(value, None if current is _ABSENT else current, f"override {item!r}"),
             f"override {item!r}")
        set_by[dotted] = item
    return merged, set_by


def _model_culprits(from_file: dict[str, Any], source: str, overrides: list[str]) -> list[str]:
    """The ``KEY=VALUE`` overrides the model settings fail with: each that the file's settings fail with alone
    (``CLIPVIS.MODEL.nope=3`` beside ``SOLVER.MAX_ITER=1`` blamed both); all of them when none fails alone (only a
    combination does)."""
    alone = []
    for item in overrides:
        try:
            TrainConfig(_overridden(from_file, [item])[0], source, frozenset()).model_config()
        except ConfigError:
            alone.append(item)
    return alone or overrides


_ABSENT = object()


# Keys whose default changed: a run's config.yaml written before holds none, and its run goes on as it started.
_RUN_DEFAULTS_BEFORE = {"DATALOADER.ASPECT_RATIO_GROUPING": False}


def load_run_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """A run's own ``config.yaml`` (what ``--resume`` reads) with ``overrides``: as :func:`load_train_config`, except
    that a key the file lacks because the run started before clipvis had it keeps the behaviour the run had
    (``DATALOADER.ASPECT_RATIO_GROUPING`` false), so the resumed run takes the batches the run would have taken. An
    override of the model's settings (``CLIPVIS.MODEL.num_queries=16``, ``MODEL.MASK_FORMER.DEC_LAYERS=5``) is a
    ConfigError: the resumed model is the checkpoint's."""
    config = load_train_config(path, overrides)
    model = load_train_config(path).model_config().to_dict()
    changed = [item for item in overrides if load_train_config(path, [item]).model_config().to_dict() != model]
    if changed:  # the model is the checkpoint's: such an override was ignored, yet written to config.yaml
        raise ConfigError(f"--resume with {', '.join(repr(item) for item in changed)}: the model settings of a "
                          "resumed run are its checkpoint's; to train another model, start a new run (--weights "
                          f"{Path(path).parent} and another --output-dir)")
    saved = read_official_yaml(Path(path))
    for dotted, before in _RUN_DEFAULTS_BEFORE.items():
        if _get(saved, dotted, _ABSENT) is _ABSENT and dotted not in config.overridden:
            config.set(dotted, before)
    return config


def _typed(value: Any, like: Any, where: str) -> Any:
    """``value`` as the type of ``like`` (the value it replaces), by the official config system's rules: a tuple
    written as text, ``(327778, 355092)``, is a list; a single value given for a list is a one-item list; a number
    given as text is a number. ConfigError (one line) when it cannot be."""
    if isinstance(value, str) and value.strip()[:1] in ("(", "["):
        try:
            parsed = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            parsed = value
        if isinstance(parsed, (tuple, list)):
            value = parsed
    if isinstance(value, tuple):
        value = list(value)
    if like is None or value is None:
        return value
    if isinstance(like, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: that key is a group of keys, not a value")
        return value
    if isinstance(like, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, not {value!r}")
        return value
    if isinstance(like, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                value = float(str(value))
            except ValueError:
                raise ConfigError(f"{where}: expected a number, not {value!r}") from None
        return int(value) if isinstance(like, int) and float(value).is_integer() else value
    if isinstance(like, list) and not isinstance(value, list):
        return [value]
    return value


def _typed_tree(tree: dict[str, Any], defaults: dict[str, Any], source: Callable[[str], str],
                prefix: str = "") -> dict[str, Any]:
    """A config file's tree with every value of a key clipvis knows typed as its default (``_typed``); ``source``
    names the file a dotted key's value comes from."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        like = defaults.get(key) if isinstance(defaults, dict) else None
        if isinstance(value, dict) and isinstance(like, dict) and dotted != "CLIPVIS.MODEL":
            out[key] = _typed_tree(value, like, source, f"{dotted}.")
        else:
            out[key] = _typed(value, like, f"{source(dotted)}: {dotted}")
    return out


def _check_values(tree: dict[str, Any], source: Callable[[str], str]) -> None:
    """The values a run cannot start with (or would fail with midway), as one ConfigError line naming where the value
    came from (``source(key)``: the config file, or the ``KEY=VALUE`` override that set it)."""
    # Counts of iterations, images, points, pixels: whole numbers (SOLVER.MAX_ITER=2.5 trained 2 iterations).
    at_least = {"SOLVER.MAX_ITER": 1, "SOLVER.CHECKPOINT_PERIOD": 1, "SOLVER.IMS_PER_BATCH": 1,
                "SOLVER.WARMUP_ITERS": 0, "SOLVER.REFERENCE_WORLD_SIZE": 0, "DATALOADER.NUM_WORKERS": 0,
                "CLIPVIS.LOG_PERIOD": 1, "TEST.EVAL_PERIOD": 0,
                "CLIPVIS.EVAL_VIDEOS": 0, "INPUT.IMAGE_SIZE": 1, "INPUT.MAX_SIZE_TRAIN": 1,
                "MODEL.MASK_FORMER.TRAIN_NUM_POINTS": 1}
    for dotted, low in at_least.items():
        value = _get(tree, dotted)
        if not _is_whole(value) or value < low:
            raise ConfigError(f"{source(dotted)}: {dotted} must be a whole number of at least {low}, not {value!r}")
    # An empty OUTPUT_DIR (OUTPUT_DIR="$DIR" with DIR unset) trained into the working folder; "-" made a folder named -
    output_dir = _get(tree, "OUTPUT_DIR")
    dash = output_dir in ("-", [None])  # (YAML reads a bare - as a list of one null: OUTPUT_DIR=- said "not [None]")
    if not isinstance(output_dir, str) or not output_dir.strip() or dash:
        given = "- (./- for a folder named -)" if dash else repr(output_dir)
        raise ConfigError(f"{source('OUTPUT_DIR')}: OUTPUT_DIR must name the folder for the run's checkpoints and "
                          f"logs, not {given}")
    # Fractions and rates (a non-finite one is no value: SOLVER.BASE_LR=.inf trained to a NaN loss).
    lr = _get(tree, "SOLVER.BASE_LR")
    if not _is_number(lr) or not 0 < lr < math.inf:
        raise ConfigError(f"{source('SOLVER.BASE_LR')}: SOLVER.BASE_LR must be a positive number, not {lr!r}")
    ranges = {  # key: (lowest, highest, what the range is said as); detectron2's point sampling asserts the last two
        "INPUT.MIN_SCALE": (0.0, math.inf, "a positive number"),
        # The schedule's and optimizer's: SOLVER.GAMMA=0 stopped learning at the first step, -1 turned it around, .nan
        # trained to a NaN loss; a warmup starts from a fraction of the rate (detectron2's linear warmup: the rate
        # times WARMUP_FACTOR at iteration 0, rising to the full rate at WARMUP_ITERS)
        "SOLVER.GAMMA": (0.0, math.inf, "a positive number"),
        "SOLVER.WARMUP_FACTOR": (0.0, 1.0, "a number from 0 to 1"),
        "SOLVER.WEIGHT_DECAY": (0.0, math.inf, "a number of at least 0"),
        "SOLVER.WEIGHT_DECAY_NORM": (0.0, math.inf, "a number of at least 0"),
        "SOLVER.WEIGHT_DECAY_EMBED": (0.0, math.inf, "a number of at least 0"),
        "SOLVER.BACKBONE_MULTIPLIER": (0.0, math.inf, "a number of at least 0"),
        "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO": (0.0, 1.0, "a number from 0 to 1"),
        "MODEL.MASK_FORMER.OVERSAMPLE_RATIO": (1.0, math.inf, "a number of at least 1"),
    }
    for dotted, (low, high, said) in ranges.items():
        value = _get(tree, dotted)
        inside = _is_number(value) and math.isfinite(value) and low <= value <= high
        if not inside or (dotted in ("INPUT.MIN_SCALE", "SOLVER.GAMMA") and not value > 0):
            raise ConfigError(f"{source(dotted)}: {dotted} must be {said}, not {value!r}")
    low_scale, high_scale = _get(tree, "INPUT.MIN_SCALE"), _get(tree, "INPUT.MAX_SCALE")
    if not _is_number(high_scale) or not low_scale <= high_scale < math.inf:
        raise ConfigError(f"{source('INPUT.MAX_SCALE')}: INPUT.MAX_SCALE must be a number of at least INPUT.MIN_SCALE "
                          f"({low_scale!r}), not {high_scale!r}")
    sizes = _get(tree, "INPUT.MIN_SIZE_TRAIN")
    if not isinstance(sizes, list) or not sizes or not all(_is_whole(v) and v >= 1 for v in sizes):
        raise ConfigError(f"{source('INPUT.MIN_SIZE_TRAIN')}: INPUT.MIN_SIZE_TRAIN must be a list of shorter-side "
                          f"lengths in pixels (whole numbers of at least 1), not {sizes!r}")
    steps = _get(tree, "SOLVER.STEPS")
    if not isinstance(steps, list) or not all(_is_whole(v) and v >= 0 for v in steps):
        raise ConfigError(f"{source('SOLVER.STEPS')}: SOLVER.STEPS must be a list of iteration numbers (whole "
                          f"numbers), not {steps!r}")
    # detectron2's WarmupMultiStepLR refuses them too ([3, 1] multiplied the rate by GAMMA twice from iteration 1 on)
    if any(later <= earlier for earlier, later in zip(steps, steps[1:], strict=False)):
        raise ConfigError(f"{source('SOLVER.STEPS')}: SOLVER.STEPS must be increasing iteration numbers, not "
                          f"{steps!r}")
    amp = _get(tree, "CLIPVIS.AMP_DTYPE")
    if amp not in ("auto", "bf16", "fp16"):
        raise ConfigError(f"{source('CLIPVIS.AMP_DTYPE')}: CLIPVIS.AMP_DTYPE must be auto, bf16 or fp16, not {amp!r}")
    clip = _get(tree, "SOLVER.CLIP_GRADIENTS") or {}
    if clip.get("ENABLED") and str(clip.get("CLIP_TYPE")).lower() in ("value", "norm"):
        value = clip.get("CLIP_VALUE")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            # detectron2 would clip every gradient to 0 (or turn it around): certainly not what was meant
            raise ConfigError(
                f"{source('SOLVER.CLIP_GRADIENTS.CLIP_VALUE')}: SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be positive with "
                f"CLIP_TYPE {clip.get('CLIP_TYPE')}, not {value!r} (SOLVER.CLIP_GRADIENTS.ENABLED=false: no clipping)")
    # Official keys with other values in detectron2 that CLIP-VIS' recipe (and so clipvis) does not implement: one line
    # rather than training with another recipe than the config says.
    for dotted, supported in _RECIPE_CHOICES.items():
        value = _get(tree, dotted)
        if value is not None and _choice_text(value) not in {choice.lower() for choice in supported}:
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            raise ConfigError(f"{source(dotted)}: {dotted} {shown} is not supported; clipvis trains with "
                              f"{' or '.join(supported)}{_RECIPE_NOTES.get(dotted, '')}")


def _is_number(value: Any) -> bool:
    """An int or float config value (true and false are no numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    """A config value that is a whole number (``3`` or ``3.0``; not 2.5, inf or true)."""
    return _is_number(value) and math.isfinite(value) and float(value).is_integer()


def _choice_text(value: Any) -> str:
    """A config value as `_RECIPE_CHOICES` lists it: text, case aside (a config's 1 and "1", true and True are the
    same), a list's items joined by commas (``[res3, res4, res5]``: ``res3,res4,res5``)."""
    if isinstance(value, (list, tuple)):
        return ",".join(_choice_text(item) for item in value)
    return str(value).lower()


# Values are compared as `_choice_text` gives them.
_RECIPE_CHOICES = {
    "SOLVER.OPTIMIZER": ("ADAMW",),
    "SOLVER.LR_SCHEDULER_NAME": ("WarmupMultiStepLR",),
    "SOLVER.WARMUP_METHOD": ("linear",),
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": ("full_model", "value", "norm"),
    "INPUT.RANDOM_FLIP": ("horizontal", "none"),
    "INPUT.FORMAT": ("RGB",),  # CLIP takes RGB: BGR was accepted and ignored
    # These were accepted and ignored too: 2 frames trained on 1, RandomSubsetTrainingSampler sampled every item.
    "INPUT.SAMPLING_FRAME_NUM": ("1",),
    "DATALOADER.SAMPLER_TRAIN": ("RepeatFactorTrainingSampler", "TrainingSampler"),
    # detectron2 keys a config file may hold (no clipvis default: not there, not checked)
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": ("choice",),
    "INPUT.CROP.ENABLED": ("false",),
    "DATALOADER.REPEAT_SQRT": ("true",),
    # model keys the official code reads, which clipvis' network hard-codes at the official configs' values (the
    # decoders' dropout, a projection before the queries' decoder, the pixel decoder's norm, features and strides):
    # trained with another value, the run was another model than the config says. (Its DEFORMABLE_TRANSFORMER_ENCODER_
    # N_HEADS and _N_POINTS are not read by the official pixel decoder either: MASK_FORMER.NHEADS and 4 points are.)
    "MODEL.MASK_FORMER.DROPOUT": ("0.0", "0"),
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": ("false",),
    "MODEL.MASK_FORMER.TRANSFORMER_DECODER_NAME": ("MultiScaleMaskedTransformerDecoder",),
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": ("multi_scale_pixel_decoder",),
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": ("MSDeformAttnPixelDecoder",),
    "MODEL.SEM_SEG_HEAD.NORM": ("GN",),
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": ("4",),
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ("res2,res3,res4,res5",),
    "MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES": ("res3,res4,res5",),
}
_RECIPE_NOTES = {
    "INPUT.SAMPLING_FRAME_NUM": " (one frame of a video per sample, as the official video configs set it; an image "
                                "run does not read it: set INPUT.SAMPLING_FRAME_NUM=1)",
    "INPUT.MIN_SIZE_TRAIN_SAMPLING": " (a shorter side drawn from INPUT.MIN_SIZE_TRAIN)",
    "INPUT.CROP.ENABLED": " (no random crop but large-scale jitter's, as in the official recipe)",
    "DATALOADER.REPEAT_SQRT": " (repeat factors by the square root, as LVIS' recipe)",
    "MODEL.MASK_FORMER.DROPOUT": " (no dropout, as every official config sets it)",
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": " (the queries' decoder reads the pixel decoder's channels as they "
                                            "are)",
    "MODEL.SEM_SEG_HEAD.NORM": " (GroupNorm in the pixel decoder)",
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": " (the pixel decoder adds its stride-4 level, res2)",
}


# The image test sets the official image configs and README commands name (detectron2's COCO / LVIS evaluators).
IMAGE_TEST_SETS = ("lvis_v1_val", "lvis_v1_minival", "coco_2017_val")


def check_evaluation_data(config: TrainConfig, eval_period: int) -> None:
    """ConfigError (one line) for periodic-evaluation data the run would fail on at its first evaluation, hours in:
    a ``DATASETS.TEST`` name that is not a registered dataset, a ``CLIPVIS.TEST_DATA`` entry that is not
    ``{json: file, frames: folder}`` or whose file or folder is not there, a test set whose files the evaluation
    cannot read (``_check_evaluation_inputs``). Only when the run evaluates
    (``eval_period > 0``: every period and after the last iteration, also where the period is past SOLVER.MAX_ITER,
    as detectron2's EvalHook; ``TEST.EVAL_PERIOD=0`` never evaluates, so a test set named then is not read)."""
    from clipvis.cli.datasets import UnknownDatasetError, dataset_names, get_dataset

    if not eval_period > 0:
        return

    def where(dotted: str) -> str:
        return f"{dotted} (set on the command line)" if dotted in config.overridden else f"{config.source}: {dotted}"

    # CLIPVIS.TEST_DATA is evaluated besides DATASETS.TEST's names (docs/training.md), so the advice is the
    # command line that runs: TEST_DATA alone would repeat this error.
    if any(isinstance(entry, dict) for entry in config.get("CLIPVIS.TEST_DATA") or []):
        own_data = ("add DATASETS.TEST=[] to evaluate on CLIPVIS.TEST_DATA alone (it is evaluated besides "
                    "DATASETS.TEST's names, not instead)")
    else:
        own_data = "evaluate on your own data with DATASETS.TEST=[] CLIPVIS.TEST_DATA=[{json: GT.json, frames: folder}]"
    for name in config.get("DATASETS.TEST") or []:
        if str(name) in IMAGE_TEST_SETS:
            raise ConfigError(
                f"{where('DATASETS.TEST')}: {name!r} is an image test set, which clipvis does not evaluate during "
                "training (it evaluates video datasets: " + ", ".join(dataset_names()) + "); with an official "
                "image config add TEST.EVAL_PERIOD=0, evaluate on video data with DATASETS.TEST=[lvvis_val], or "
                + own_data
            )
        try:
            get_dataset(str(name))
        except UnknownDatasetError:
            raise ConfigError(
                f"{where('DATASETS.TEST')}: {name!r} is not a registered dataset (known: "
                f"{', '.join(dataset_names())}); {own_data}, or set TEST.EVAL_PERIOD=0"
            ) from None
    for entry in config.get("CLIPVIS.TEST_DATA") or []:
        if not isinstance(entry, dict) or not entry.get("json") or not entry.get("frames"):
            raise ConfigError(f"{where('CLIPVIS.TEST_DATA')}: an entry is {{json: YouTube-VIS GT file, frames: "
                              f"frames folder}}, not {entry!r}")
        if not Path(str(entry["json"])).expanduser().is_file():
            raise ConfigError(f"{where('CLIPVIS.TEST_DATA')}: {entry['json']}: no such file")
        if not Path(str(entry["frames"])).expanduser().is_dir():
            raise ConfigError(f"{where('CLIPVIS.TEST_DATA')}: {entry['frames']}: no such folder")
    _check_evaluation_inputs(config, where)


def _check_evaluation_inputs(config: TrainConfig, where: Callable[[str], str]) -> None:
    """ConfigError (one line) for a test set whose files the evaluation cannot read, found as the evaluation finds
    it (its own readers: ``dataset_inputs``, ``custom_inputs``): a registered dataset that is not on disk, a GT file
    that is not YouTube-VIS JSON (a COCO file, invalid JSON, no annotations), a frames folder holding none of the
    videos the evaluation takes (`check_some_video_found`). Found at the first evaluation, each period's evaluation
    failed with a warning and the run finished, exit 0, never evaluated. The whole GT is read (LV-VIS val: about
    2 s), once, by rank 0."""
    from clipvis.cli.dataset_evaluation import custom_inputs
    from clipvis.cli.dataset_inference import NoVideoFoundError, check_some_video_found
    from clipvis.cli.datasets import DatasetError, dataset_inputs
    from clipvis.cli.evaluation.errors import EvaluationInputError

    max_videos = int(config.get("CLIPVIS.EVAL_VIDEOS") or 0) or None

    def refused(dotted: str, error: Exception) -> ConfigError:  # (the error names the dataset or the file)
        return ConfigError(f"{where(dotted)}: {' '.join(str(error).split()).rstrip('.')}; the run evaluates on it "
                           "every TEST.EVAL_PERIOD: fix it, or set TEST.EVAL_PERIOD=0")

    for name in config.get("DATASETS.TEST") or []:
        try:
            check_some_video_found(dataset_inputs(str(name), config.get("CLIPVIS.DATA_ROOT") or None), max_videos)
        except (DatasetError, EvaluationInputError, NoVideoFoundError) as error:
            raise refused("DATASETS.TEST", error) from None
    for entry in config.get("CLIPVIS.TEST_DATA") or []:
        try:
            check_some_video_found(custom_inputs(Path(str(entry["json"])).expanduser(),
                                                 Path(str(entry["frames"])).expanduser()), max_videos, "frames")
        except (DatasetError, EvaluationInputError, NoVideoFoundError) as error:
            raise refused("CLIPVIS.TEST_DATA", error) from None


@dataclass(frozen=True)
class Schedule:
    """What autoscaling decided (also written to the run's log)."""

    global_batch: int
    base_lr: float
    max_iter: int
    steps: tuple[int, ...]
    warmup_iters: int
    checkpoint_period: int
    eval_period: int
    scale: float


def autoscale(config: TrainConfig, world_size: int, enabled: bool = True) -> Schedule:
    """Apply the documented linear scaling rule (module docstring) to ``config`` in place; returns the result."""
    solver = config.tree["SOLVER"]
    batch = int(solver["IMS_PER_BATCH"])
    reference = int(solver.get("REFERENCE_WORLD_SIZE") or 0)
    scale = 1.0
    if enabled and reference > 0 and world_size != reference and "SOLVER.IMS_PER_BATCH" not in config.overridden:
        new_batch = batch * world_size / reference
        if new_batch != int(new_batch) or new_batch < 1:
            raise ConfigError(
                f"cannot scale SOLVER.IMS_PER_BATCH {batch} from {reference} to {world_size} processes; "
                "set SOLVER.IMS_PER_BATCH=N or use --no-autoscale"
            )
        scale = new_batch / batch
    elif enabled and reference > 0 and "SOLVER.IMS_PER_BATCH" in config.overridden:
        # The batch was chosen on the command line: scale from the batch the config was tuned for.
        tuned = _get(deep_merge(DEFAULTS, read_official_yaml(Path(config.source))), "SOLVER.IMS_PER_BATCH")
        scale = batch / int(tuned)
        batch = int(tuned)
    if scale != 1.0:
        # What was typed as KEY=VALUE is taken as written (meant for this run's batch); the config file's values scale.
        def typed(key: str) -> bool:
            return key in config.overridden

        solver["IMS_PER_BATCH"] = int(round(batch * scale))
        if not typed("SOLVER.BASE_LR"):
            solver["BASE_LR"] = float(solver["BASE_LR"]) * scale
        if not typed("SOLVER.MAX_ITER"):
            solver["MAX_ITER"] = max(int(round(int(solver["MAX_ITER"]) / scale)), 1)
        if not typed("SOLVER.STEPS"):
            steps = [int(round(int(s) / scale)) for s in solver["STEPS"]]
            if any(later <= earlier for earlier, later in zip(steps, steps[1:], strict=False)):
                raise ConfigError(f"SOLVER.STEPS {solver['STEPS']} divided by {scale:g} for a global batch of "
                                  f"{int(round(batch * scale))} are {steps}, no longer increasing; set "
                                  "SOLVER.STEPS=[...] for this run or use --no-autoscale")
            solver["STEPS"] = steps
        if not typed("SOLVER.WARMUP_ITERS"):
            solver["WARMUP_ITERS"] = int(round(int(solver["WARMUP_ITERS"]) / scale))
        if not typed("SOLVER.CHECKPOINT_PERIOD"):
            solver["CHECKPOINT_PERIOD"] = max(int(round(int(solver["CHECKPOINT_PERIOD"]) / scale)), 1)
        if int(config.tree["TEST"].get("EVAL_PERIOD") or 0) > 0 and not typed("TEST.EVAL_PERIOD"):
            config.tree["TEST"]["EVAL_PERIOD"] = max(int(round(int(config.tree["TEST"]["EVAL_PERIOD"]) / scale)), 1)
    if int(solver["IMS_PER_BATCH"]) % world_size:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH {solver['IMS_PER_BATCH']} is not divisible by the {world_size} processes"
        )
    if reference > 0:  # as detectron2's auto-scaling keeps its invariant: the values are now those of `world_size`
        # processes, so the run's config.yaml given again as --config on as many is not scaled a second time (it
        # halved the batch and doubled MAX_ITER), and on another number is scaled from this one (0 stays 0)
        solver["REFERENCE_WORLD_SIZE"] = world_size
    return Schedule(
        global_batch=int(solver["IMS_PER_BATCH"]),
        base_lr=float(solver["BASE_LR"]),
        max_iter=int(solver["MAX_ITER"]),
        steps=tuple(int(s) for s in solver["STEPS"]),
        warmup_iters=int(solver["WARMUP_ITERS"]),
        checkpoint_period=int(solver["CHECKPOINT_PERIOD"]),
        eval_period=int(config.tree["TEST"].get("EVAL_PERIOD") or 0),
        scale=scale,
    )
