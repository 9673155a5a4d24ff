"""The run's model: built from ``--weights`` / a checkpoint or fresh, its CLIP checked before the data loads, and the
config a run records for it; the model library's errors in train's words."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from clipvis.cli.train.config import ConfigError, TrainConfig
from clipvis.cli.train.errors import train_model_error_message
from clipvis.model import CheckpointError, ClipVis, ClipVisConfig, UnknownClipError, UntrustedClipError
from clipvis.weights import offline_mode

log = logging.getLogger("clipvis.train")


def weights_model_config(config: TrainConfig) -> dict[str, Any]:
    """The model config a run from ``--weights`` gives its checkpoints: the training config's (test-time settings
    such as INPUT.MIN_SIZE_TEST and TEST.NUM_FRAME, the CLIP's name), as a run without ``--weights`` has; the
    checkpoint's own open_clip model config is kept unless ``--clip-config`` gives one."""
    values = config.model_config().to_dict()
    values.pop("notes", None)
    if values.get("clip_model_config") is None:
        values.pop("clip_model_config", None)
    return values


def recorded_config(config: TrainConfig, model: ClipVis) -> TrainConfig:
    """The config a run's config.yaml records: ``config``, plus the open_clip model config of a CLIP that came with
    the ``--weights`` checkpoint (not an open_clip release the config names) as ``CLIPVIS.MODEL.clip_model_config``
    where the config gives none. Without it config.yaml named the config's CLIP (RN50, openai), and `segment --config
    config.yaml` with the run's `--export-pth` file (which holds no config) built that CLIP: `checkpoint does not fit
    the model: missing keys`. ``CLIPVIS.MODEL`` is what `segment --config` and `train --config` read it from."""
    own = model.config.clip_model_config
    if own is None or config.model_config().clip_model_config is not None:
        return config
    recorded = TrainConfig(copy.deepcopy(config.tree), config.source, config.overridden, dict(config.key_files))
    recorded.set("CLIPVIS.MODEL.clip_model_config", json.loads(json.dumps(own)))  # plain lists for YAML
    return recorded


def build_model(config: TrainConfig, weights: str | None, seed: int, resuming: bool = False) -> ClipVis:
    """From a released checkpoint / file / training folder, or fresh: official head init + open_clip CLIP.
    ``CLIPVIS.CLIP_CONFIG`` (``--clip-config``) describes a CLIP open_clip does not know by name, as for segment
    (an official-layout ``.pth`` holds no config). The model library's errors are a ModelBuildError."""
    with _model_problems_in_trains_words(config, weights):
        return _build_model(config, weights, seed, resuming)


@contextlib.contextmanager
def _model_problems_in_trains_words(config: TrainConfig, weights: str | None) -> Iterator[None]:
    """The model library's errors (``ParameterHint``) as a ModelBuildError: worded with train's flags, and as one line
    under every launcher (the ranks and the processes --num-gpus spawns pass on str(error)): UnknownClipError was a
    traceback."""
    from clipvis.model.errors import ParameterHint

    try:
        yield
    except ParameterHint as error:
        message = train_model_error_message(error)
        subject = weights or str(config.source)
        raise ModelBuildError(message if subject in message else f"{subject}: {message}") from None


class ModelBuildError(ValueError):
    """The run's model cannot be built from its weights and config (a CLIP open_clip does not know and no
    ``--clip-config``, a checkpoint the config does not fit, ...): one line, worded with train's flags."""


def _build_model(config: TrainConfig, weights: str | None, seed: int, resuming: bool) -> ClipVis:
    import dataclasses

    from clipvis.model import create_model, load_model
    from clipvis.model.config import load_clip_model_config

    # a checkpoint of the run being resumed holds its model config: the file is not needed (it may have moved)
    clip_config = None if resuming else str(config.get("CLIPVIS.CLIP_CONFIG") or "") or None
    if clip_config is not None and not Path(clip_config).is_file():
        raise ConfigError(f"CLIPVIS.CLIP_CONFIG (--clip-config) {clip_config}: no such file")
    if weights:
        log.info("starting from %s", weights)
        # a released name (downloaded once), a checkpoint file or a training folder; resuming, the run's own
        # checkpoint holds this config already. The architecture is the checkpoint's whatever the config says.
        return load_model(weights, config=None if resuming else weights_model_config(config),
                          clip_config=clip_config)
    model_config = config.model_config()
    if clip_config is not None:
        model_config = dataclasses.replace(model_config, clip_model_config=load_clip_model_config(clip_config))
    torch.manual_seed(seed)
    # The CLIP comes from its open_clip release unless the config gives an open_clip model config (random CLIP,
    # e.g. a tiny test model); the head gets the official initialisation from the module constructors.
    pretrained_clip = model_config.clip_model_config is None
    with _clip_problems_in_trains_words(config, model_config, pretrained_clip):
        return create_model(model_config, pretrained_clip=pretrained_clip)


def random_clip_warning(config: TrainConfig, weights: str | None, resuming: bool) -> str | None:
    """The warning of a run whose frozen CLIP starts, and so stays, random: no ``weights`` and not ``resuming`` (a
    checkpoint of its own holds the CLIP it started with), and the CLIP given by an open_clip model config
    (``CLIPVIS.CLIP_CONFIG``/``--clip-config``, which wins, or ``CLIPVIS.MODEL.clip_model_config``), which has no
    pretrained weights to download (``_build_model``). It names where that config came from and what to give. None
    for any other run (tests train such tiny random CLIPs on purpose: said, not refused)."""
    if weights or resuming:
        return None
    clip_config = str(config.get("CLIPVIS.CLIP_CONFIG") or "")
    if clip_config:
        where = f"{clip_config} (--clip-config, CLIPVIS.CLIP_CONFIG)"
    elif config.model_config().clip_model_config is not None:
        key = "CLIPVIS.MODEL.clip_model_config"
        given = ("a KEY=VALUE override" if any(k == key or k.startswith(f"{key}.") for k in config.overridden)
                 else config.file_setting(key))
        where = f"{key} of {given}"
    else:
        return None
    return (f"the CLIP is built from {where} with random weights, which stay frozen while the model trains: a model "
            "for tests only; to train a usable one give --weights a checkpoint that holds this CLIP's weights "
            "(backbone.clip_model.* keys; README, Train: a CLIP of your own)")


def check_clip_available(config: TrainConfig, weights: str | None, resume_from: Path | None) -> None:
    """Before the data loads (minutes on LVIS): a ModelBuildError, as building the model would raise, where the run
    takes open_clip's pretrained CLIP (no checkpoint ``resume_from``; no ``weights`` and no CLIP model config, or
    ``weights`` a checkpoint without CLIP weights: see ``_build_model``) and that CLIP cannot be had here (a name
    open_clip does not know, not one of the released models' CLIPs, ``CLIPVIS_OFFLINE`` set and not in the Hugging
    Face cache). Nothing is built or fetched (``weights``' file is read)."""
    from clipvis.model import check_checkpoint_clip, check_pretrained_clip

    clip_config = str(config.get("CLIPVIS.CLIP_CONFIG") or "") or None
    if resume_from is not None:
        return
    if weights:  # said as building the model says it (--clip-config not there: said by _build_model)
        if clip_config is None or Path(clip_config).is_file():
            with _model_problems_in_trains_words(config, weights):
                check_checkpoint_clip(weights, config=weights_model_config(config), clip_config=clip_config)
        return
    if clip_config is not None:
        return
    model_config = config.model_config()
    if model_config.clip_model_config is not None:
        return
    with _clip_problems_in_trains_words(config, model_config, pretrained_clip=True):
        check_pretrained_clip(model_config)


@contextlib.contextmanager
def _clip_problems_in_trains_words(config: TrainConfig, model_config: ClipVisConfig,
                                   pretrained_clip: bool) -> Iterator[None]:
    """The library's errors about the CLIP download (they name create_model(pretrained_clip=True)) as a
    ModelBuildError in train's words (``_clip_problem``)."""
    try:
        yield
    except UnknownClipError:  # no download could help
        raise ModelBuildError(f"{config.source}: {_clip_problem(config, model_config, 'unknown')}") from None
    except UntrustedClipError:
        raise ModelBuildError(f"{config.source}: {_clip_problem(config, model_config, 'untrusted')}") from None
    except CheckpointError:
        if pretrained_clip and offline_mode():
            raise ModelBuildError(f"{config.source}: {_clip_problem(config, model_config, 'offline')}") from None
        raise


def _clip_problem(config: TrainConfig, model_config: ClipVisConfig, why: str) -> str:
    """Why a run without ``--weights`` cannot take its CLIP's weights from open_clip, naming the config key that
    names the CLIP and train's flags. ``why``: "unknown" (open_clip does not know the name), "untrusted" (not one
    of the released models' CLIPs), "offline" (``CLIPVIS_OFFLINE``)."""
    from clipvis.model.config import clip_name
    from clipvis.weights import OFFLINE_ENV, known_clip_models

    clip = clip_name(model_config.clip_model_name, model_config.clip_pretrained)
    model_keys = config.get("CLIPVIS.MODEL") or {}
    key = ("CLIPVIS.MODEL.clip_model_name" if "clip_model_name" in model_keys
           else "MODEL.FC_CLIP.CLIP_MODEL_NAME")
    named = f"the config's {key} names the CLIP {clip}"
    from_checkpoint = "start from a checkpoint that holds the CLIP's weights (--weights)"
    if why == "unknown":
        return (f"{named}, which open_clip does not know: correct the name, or give the CLIP's open_clip model "
                "config with --clip-config (and its weights with --weights; without, the CLIP starts random)")
    if why == "offline":
        return (f"{named}, whose weights train downloads from open_clip, and {OFFLINE_ENV} is set: unset it, or "
                f"{from_checkpoint}")
    known = ", ".join(clip_name(n, t) for n, t in sorted(known_clip_models()))
    return (f"{named}, which is not one of the released models' CLIPs ({known}), the only ones train downloads: "
            f"{from_checkpoint}, e.g. saved in Python with clipvis.save_pretrained(clipvis.load_model(..., "
            "allow_hub_clip=True), path), and give the CLIP's open_clip model config with --clip-config")


def starting_weights(weights: str) -> str:
    """``--weights`` as a run records it: a released name as given (in the cache now, downloaded first when it is
    not: a release that cannot be had is said before the data loads, not once it loaded), a file or folder as the
    absolute path of the checkpoint file in it, the one the run starts from (a training folder's newest checkpoint
    moves on while that run goes on: a resume before this run's first checkpoint must start from the same one).
    WeightsError with a one-line message when it is not there."""
    from clipvis.cli.progress import download_lines
    from clipvis.model import check_checkpoint
    from clipvis.weights import (
        WeightsError,
        WeightsNotAvailableError,
        download_reporter,
        release_named,
        resolve_weights,
    )
    from clipvis.weights.resolve import EMPTY_CHECKPOINT_NAME

    release = release_named(weights)
    if release is not None:
        expected = release.model_config()
        # verified before it enters the cache, as load_model verifies it; the model is built from the cached copy. A
        # download says so in `clipvis:` lines, as segment's do
        with download_reporter(download_lines()):
            try:
                resolve_weights(weights, verify=lambda path: check_checkpoint(path, expected=expected))
            except WeightsNotAvailableError as error:  # said by a rank too: worded with train's --weights PATH here
                raise WeightsError(train_model_error_message(error)) from None
        return weights
    try:
        return str(resolve_weights(weights, download=False))
    except WeightsError as error:
        message = " ".join(str(error).split())
        if not weights.strip():  # "--weights is empty: give ...", not "--weights : ..."
            raise WeightsError(message.replace(EMPTY_CHECKPOINT_NAME, "--weights is empty", 1)) from None
        raise WeightsError(message if weights in message else f"--weights {weights}: {message}") from None
