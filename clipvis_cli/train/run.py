"""One training run from a resolved config: processes, data, model, trainer (what ``clipvis train`` executes).

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process joins the process group
(NCCL on GPUs, gloo on CPU); ``num_processes > 1`` without torchrun spawns that many local processes. Rank 0
logs and writes; every process reads its share of each global batch.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import logging
import multiprocessing.connection
import os
import shutil
import signal
import socket
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import typer

from clipvis.cli.atomic import atomic_write_text, ensure_output_dir
from clipvis.cli.dataset_evaluation import run_dataset_evaluation
from clipvis.cli.datasets import get_dataset
from clipvis.cli.devices import DeviceChoiceError, command_device
from clipvis.cli.distributed import (
    RankLost,
    RanksDifferError,
    form_process_group,
    lost_a_peer,
    meet_before_the_group,
    rank_lost,
    stop_in_silence,
    visible_gpu,
)
from clipvis.cli.evaluation.scoring import score_results_file
from clipvis.cli.gc_pause import freeze_before_exit
from clipvis.cli.hub_logging import clip_fetch_logging
from clipvis.cli.json_io import parse_json
from clipvis.cli.locks import FolderLock
from clipvis.cli.messages import counted, print_warning
from clipvis.cli.resources import cpu_share
from clipvis.cli.train.config import (
    RUN_CONFIG_NAME,
    ConfigError,
    Schedule,
    TrainConfig,
    autoscale,
    check_evaluation_data,
)
from clipvis.cli.train.data import (
    AugmentationConfig,
    StreamBatchSampler,
    TrainDataset,
    aspect_ratio_groups,
    build_loader,
    repeat_factors,
)
from clipvis.cli.train.errors import train_model_error_message
from clipvis.cli.train.sources import load_sources
from clipvis.cli.train.stopping import StopRequests, TrainingStopped, ignore_stop_signals
from clipvis.cli.train.trainer import (
    FolderInUseError,
    Trainer,
    TrainerSettings,
    checkpoints_in,
    drop_metrics_from,
    hold_training_folder,
    purge_tensorboard_from,
    remove_stale_temporaries,
    resume_point,
)
from clipvis.model import CheckpointError, ClipVis, ClipVisConfig, UnknownClipError, UntrustedClipError
from clipvis.weights import offline_mode
from clipvis.weights.training_folder import RUN_DATA_NAME, read_last_checkpoint, state_path

log = logging.getLogger("clipvis.train")


@dataclass
class RunRequest:
    """What the command line asked for."""

    config: TrainConfig
    weights: str | None = None
    resume: bool = False
    num_processes: int = 1
    autoscale: bool = True


class _ConsoleFormatter(logging.Formatter):
    """Progress lines as they are; a warning or an error as every command prints one (``clipvis: warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING and not message.startswith("clipvis: "):
            return f"clipvis: {message}"
        return message


@contextlib.contextmanager
def _train_logger_restored() -> Iterator[None]:
    """The ``clipvis.train`` logger as it was before the run, once the run ends (returns, fails or is stopped): the
    handlers the run attached (``_setup_logging``: the console's and train.log's) are closed and removed, and the
    logger's own handlers, level and propagation come back. They stayed: after ``launch()`` returned (the Python API,
    a second run in one process) every later record still went to the first run's train.log, held open."""
    logger = logging.getLogger("clipvis.train")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    try:
        yield
    finally:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _setup_logging(output_dir: Path, rank: int) -> None:
    """This rank's ``clipvis.train`` handlers for the run (inside ``_train_logger_restored``)."""
    logger = logging.getLogger("clipvis.train")
    logger.handlers.clear()
    logger.propagate = False
    if rank != 0:  # rank 0 says what happens; without a handler Python's last resort printed this rank's errors
        logger.setLevel(logging.ERROR)
        logger.addHandler(logging.NullHandler())
        return
    logger.setLevel(logging.INFO)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_ConsoleFormatter("%(message)s"))
    console.addFilter(lambda record: not getattr(record, "file_only", False))  # the command prints its own line
    logger.addHandler(console)
    file_handler = logging.FileHandler(output_dir / "train.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(file_handler)


def check_device(config: TrainConfig, processes: int) -> None:
    """ConfigError unless ``MODEL.DEVICE`` is auto, cpu, cuda or cuda:N that this machine has
    (`clipvis.cli.devices.command_device`); ``cuda:N`` is for one process (several take their own GPUs, one each:
    give ``cuda``). Anything else was taken for CUDA, its N ignored (``cuda:1`` trained on GPU 0), and a machine
    without CUDA failed with a traceback."""
    from clipvis.cli.train.config import ConfigError

    wanted = str(config.get("MODEL.DEVICE") or "auto")
    try:
        device = _config_device(config)
    except DeviceChoiceError as error:
        raise ConfigError(str(error)) from None
    if device.index is not None and processes > 1:
        raise ConfigError(f"MODEL.DEVICE {wanted} with {processes} processes: each process trains on its own GPU; "
                          "give MODEL.DEVICE cuda (and CUDA_VISIBLE_DEVICES to pick the GPUs)")


def _config_device(config: TrainConfig) -> torch.device:
    """The device ``MODEL.DEVICE`` names (default auto); DeviceChoiceError where it names none this machine has."""
    return command_device(str(config.get("MODEL.DEVICE") or "auto"), "MODEL.DEVICE", "MODEL.DEVICE=cpu")


def _device(config: TrainConfig, local_rank: int) -> torch.device:
    """The device of this process (``check_device`` passed): the CPU, ``cuda:N`` of one process, or a process' own
    GPU by its local rank."""
    device = _config_device(config)
    if device.type == "cpu":
        return device
    index = device.index
    if index is None:
        index = visible_gpu(local_rank, torch.cuda.device_count())  # cuda:0 where each process sees only its own
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


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


def _has_test_set(config: TrainConfig) -> bool:
    """Whether the run has data to evaluate (``DATASETS.TEST`` names or ``CLIPVIS.TEST_DATA`` entries), as
    `_evaluator` finds it."""
    return any(n for n in (config.get("DATASETS.TEST") or [])) or any(
        isinstance(e, dict) for e in (config.get("CLIPVIS.TEST_DATA") or []))


def _evaluator(config: TrainConfig, device: torch.device) -> Callable[[Path, int], dict[str, Any] | None] | None:
    """Periodic evaluation with `clipvis evaluate`'s code: registered ``DATASETS.TEST`` names and custom
    ``CLIPVIS.TEST_DATA`` entries ``{json: YouTube-VIS GT, frames: folder}``; None when there is nothing to run."""
    if not _has_test_set(config):
        return None
    names = [n for n in (config.get("DATASETS.TEST") or []) if n]
    custom = [e for e in (config.get("CLIPVIS.TEST_DATA") or []) if isinstance(e, dict)]
    jobs = [(name, {"dataset": name}) for name in names]
    taken = set(names)
    for entry in custom:  # each its own folder and metric names, also when files share a name (ytvis.json)
        stem = name = Path(entry["json"]).stem
        suffix = 2
        while name in taken:
            name, suffix = f"{stem}-{suffix}", suffix + 1
        taken.add(name)
        jobs.append((name, {"dataset": None, "gt": Path(entry["json"]), "frames": Path(entry["frames"])}))

    def evaluate(checkpoint: Path, iteration: int) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for name, job in jobs:
            folder = Path(config.get("OUTPUT_DIR")) / "eval" / f"{name}_{iteration:07d}"
            metrics: dict[str, Any] = {}

            try:  # in this process alone: the other ranks wait at a barrier meanwhile
                # A registered benchmark is scored as its own evaluator does (BURST); custom data by its GT.
                protocol = get_dataset(job["dataset"]).protocol if job["dataset"] else None

                def score(results: Path, gt: Path, said: Sequence[str]) -> None:  # said: printed already
                    result = score_results_file(results, gt, protocol)  # noqa: B023 - called at once
                    metrics.update(result.to_dict()["metrics"])  # noqa: B023 - called at once

                run_dataset_evaluation(
                    weights=str(checkpoint), data_root=config.get("CLIPVIS.DATA_ROOT") or None, output=folder,
                    score=score, device=device.type, max_videos=int(config.get("CLIPVIS.EVAL_VIDEOS") or 0) or None,
                    alone=True, **job,
                )
            except (typer.Exit, Exception) as exc:  # noqa: BLE001 - an evaluation failure must not end training
                why = "its error is above" if isinstance(exc, typer.Exit) else " ".join(str(exc).split())
                log.warning("warning: evaluation on %s failed (%s); training goes on", name, why)
                continue
            out.update({f"eval/{name}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        return out or None

    return evaluate


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


def _as_rank_0_chose(given: str | None, mine: str | None, rank_0s: str | None) -> str | None:
    """This rank's starting weights: of its ``--weights`` folder (``given``), the checkpoint file rank 0 took from
    its own (``rank_0s``), by name, whichever is newest here; its own resolved file or name (``mine``) otherwise."""
    from clipvis.weights import WeightsError

    if not given or not rank_0s or not Path(given).expanduser().is_dir() or not Path(rank_0s).is_absolute():
        return mine
    same = Path(given).expanduser().resolve() / Path(rank_0s).name
    if not same.is_file():
        raise WeightsError(f"--weights {given}: no {same.name} there, the checkpoint rank 0 starts from (every process "
                           "must start from the same checkpoint of a training folder)")
    return str(same)


def _as_rank_0_resumes(output_dir: Path, mine: Path | None, rank_0s: str | None) -> Path | None:
    """The checkpoint this rank resumes from: the one rank 0 resumes from (``rank_0s``, its name; None: rank 0 starts
    afresh), by name, in this rank's ``output_dir`` (its own copy of the run's folder, or the same folder on a shared
    file system). ConfigError where this rank has no such checkpoint with its training state, or has one to resume
    from where rank 0 has none: such a rank (a node-local folder of another run, or none) started at iteration 0
    beside rank 0 going on from its checkpoint, and the run saved a wrong checkpoint, then hung."""
    if rank_0s is None:
        if mine is not None:
            raise ConfigError(f"{output_dir}: --resume: this process has {mine.name} to resume from, rank 0 none (it "
                              "starts the run afresh); every process must see the run's folder")
        return None
    same = output_dir / rank_0s
    if not same.is_file() or not state_path(same).is_file():
        newest = f", its newest: {mine.name}" if mine is not None else ""
        raise ConfigError(f"{output_dir}: --resume: no {rank_0s} with its training state here, the checkpoint rank 0 "
                          f"resumes from{newest}; every process must see the run's folder")
    return same


def run_training(request: RunRequest, rank: int = 0, world: int = 1, local_rank: int = 0,
                 quiet: Callable[[], bool] | None = None) -> Path:
    """Train in this process (one rank of ``world``); returns the final checkpoint path.

    With several processes stop signals are held from the start, not only once training runs: a signal to one rank
    while the data loads or the model is built (its steps taken alone) stops that step at once, and every rank
    learns of it when the step's outcomes meet, so every rank stops by it (``TrainingStopped``, nothing saved)
    where one rank used to die of it and the others to fail in their next collective. A signal that reaches a rank
    while it waits for the others is acted on at its next step, or after the first iteration (with a checkpoint).
    ``quiet``: see :class:`StopRequests` (a signal that ends this process because another is gone is not announced)."""
    if world == 1:
        return _run_training(request, rank, world, local_rank, None)
    with StopRequests(announce=lambda line: None, quiet=quiet) as requests:  # the trainer announces its stops
        return _run_training(request, rank, world, local_rank, requests)


@dataclass
class _Preflight:
    """What a run checked before anything loads: its schedule, output folder and the checkpoint it resumes from."""

    schedule: Schedule
    output_dir: Path
    newest: Path | None  # the folder's newest checkpoint
    resume_from: Path | None  # the checkpoint --resume continues from (None: a fresh run)
    given: str | None  # --weights as the command line gave it
    folder_lock: FolderLock | None  # the output folder's, held by rank 0 for the run's life (hold_training_folder)


def _preflight(request: RunRequest, rank: int, world: int) -> _Preflight:
    """This rank's ``--weights``, the schedule, the test set (rank 0), and the output folder: a fresh run never mixes
    with another run's checkpoints, a resumed one finds its checkpoint. Raises ConfigError / WeightsError."""
    config = request.config
    given = request.weights
    if world > 1 and given:  # this rank's own, checked once the ranks meet (the command did it alone)
        request.weights = starting_weights(given)
    schedule = autoscale(config, world, enabled=request.autoscale)
    # before anything loads or is written: a test set named wrongly failed at the first evaluation, hours in
    if rank == 0:  # rank 0 alone evaluates: the test set need be on its machine only
        with _checked_by_rank_0_alone():
            check_evaluation_data(config, schedule.eval_period)
    if not request.resume:  # a CLIP that cannot be had was refused once the data had loaded; before the folder is
        # made here (a --resume run's checkpoint, known once the ranks agree on it, holds its CLIP: _train_in_folder)
        check_clip_available(config, request.weights or config.get("MODEL.WEIGHTS") or None, None)
    output_dir = ensure_output_dir(Path(config.get("OUTPUT_DIR")).expanduser())
    folder_lock = None
    if rank == 0:  # rank 0 alone writes the folder (every rank may see it on a shared file system)
        try:  # a run living there: neither a fresh start nor a --resume beside it (it held the lock only to save)
            folder_lock = hold_training_folder(output_dir)
        except FolderInUseError as error:
            raise RankZerosCheckError(str(error)) from None
    try:
        # Before anything is written there (config.yaml): a fresh run never mixes with the checkpoints of another.
        newest = read_last_checkpoint(output_dir) or (checkpoints_in(output_dir) or [None])[-1]
        if newest is not None and not request.resume:
            raise ConfigError(f"{output_dir} holds a training run already (its newest checkpoint: {newest.name}): "
                              "continue it with --resume, or give another --output-dir")
        resume_from = _resume_point(output_dir, newest) if request.resume else None
    except BaseException:
        if folder_lock is not None:
            folder_lock.release()
        raise
    return _Preflight(schedule, output_dir, newest, resume_from, given, folder_lock)


def _saves_only_at_the_end(schedule: Schedule, has_test_set: bool) -> bool:
    """Whether a run of more than one iteration writes no checkpoint before its last: its checkpoint period (as
    scaled: the shipped configs' 10,000 is 40,000 at a batch of 2) at or past MAX_ITER, and no periodic evaluation
    (which saves the checkpoint it evaluates; without a test set there is none) before the end."""
    return schedule.max_iter > 1 and schedule.checkpoint_period >= schedule.max_iter and not (
        has_test_set and 0 < schedule.eval_period < schedule.max_iter)


def _run_seed(config: TrainConfig, world: int, device: torch.device) -> int:
    """``SEED``; a negative one is drawn at random (rank 0's, for every rank) and recorded in the config."""
    seed = int(config.get("SEED"))
    if seed < 0:
        seed_tensor = torch.randint(0, 2**31 - 1, (1,))
        if world > 1:
            dist.broadcast(seed_tensor.to(device), 0) if device.type == "cuda" else dist.broadcast(seed_tensor, 0)
        seed = int(seed_tensor.item())
        config.set("SEED", seed)
    return seed


def _load_training_data(config: TrainConfig, rank: int, world: int, requests: StopRequests | None,
                        output_dir: Path, resuming: bool) -> list[Any]:
    """The sources of ``DATASETS.TRAIN`` and ``CLIPVIS.TRAIN_DATA``, their warnings logged; under several ranks,
    checked to be the same items on every rank; ``resuming``: checked to be the run's own (`RUN_DATA_NAME`)."""
    filter_empty = bool(config.get("DATALOADER.FILTER_EMPTY_ANNOTATIONS"))
    with _taken_alone(rank, world, requests):
        sources = load_sources(
            list(config.get("DATASETS.TRAIN") or []), list(config.get("CLIPVIS.TRAIN_DATA") or []),
            config.get("CLIPVIS.DATA_ROOT") or None, filter_empty, say=log.info,
            crowd_as_instances=bool(config.get("CLIPVIS.CROWD_AS_INSTANCES")),
        )
    for source in sources:
        for message in source.warnings:
            log.warning("warning: %s", message)
    summary = _data_of(sources)
    if world > 1:  # each rank reads its share of every batch from its own copy of the data: the same items
        _check_ranks_agree(world, "training data", summary)
    with _taken_alone(rank, world, requests):  # every rank learns of rank 0's refusal
        if rank == 0:
            with _checked_by_rank_0_alone():
                _check_the_runs_data(output_dir / RUN_DATA_NAME, summary, resuming)
    return sources


def _check_the_runs_data(record: Path, summary: dict[str, str], resuming: bool) -> None:
    """Write the run's data summary (a fresh run; a resumed run of an earlier version, which has none), or, resuming,
    ConfigError when the data given differs from the run's: `--data`/`--images` on --resume are for data that moved
    (the summary is of names and contents, not of where they are); other data trained the rest of the run on it
    without a word, and config.yaml then named only the new data."""
    recorded = None
    if resuming:
        try:
            recorded = parse_json(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            recorded = None
    if isinstance(recorded, dict) and recorded != summary:
        key = next(k for k in [*summary, *recorded] if summary.get(k) != recorded.get(k))
        raise ConfigError(
            f"{record.parent}: --resume with other training data than the run's ({key}: {summary.get(key, '(none)')}"
            f" given, {recorded.get(key, '(none)')} in the run): the rest of the run would train on other data than "
            "its start; give the run's own data (moved elsewhere is fine), or start a new run with --weights "
            f"{record.parent} and another --output-dir"
        )
    if recorded is None:  # (the folder was made before: _preflight)
        atomic_write_text(record, json.dumps(summary, indent=1) + "\n")


def _build_run_model(config: TrainConfig, weights: str | None, resume_from: Path | None, seed: int, rank: int,
                     world: int, requests: StopRequests | None) -> ClipVis:
    """The model, built once the data is known to be there; the checkpoint's notes said once (rank 0), as segment
    says them. Resuming: the checkpoint holds the architecture and every weight (no CLIP to fetch); Trainer.resume
    then loads it again with its optimiser, schedule and RNG state."""
    def say(message: str) -> None:  # huggingface_hub's first warning while the CLIP is fetched: said at once
        if rank == 0:
            print_warning(message)
            log.warning("warning: %s", message, extra={"file_only": True})

    with warnings.catch_warnings(record=True) as caught, _taken_alone(rank, world, requests), \
            clip_fetch_logging(say):
        warnings.simplefilter("always")
        model = build_model(config, str(resume_from) if resume_from else weights, seed,
                            resuming=resume_from is not None)
    if rank == 0:
        for warning in dict.fromkeys(str(w.message) for w in caught):
            print_warning(warning)
            log.warning("warning: %s", warning, extra={"file_only": True})
    return model


def _run_training(request: RunRequest, rank: int, world: int, local_rank: int,
                  requests: StopRequests | None) -> Path:
    preflight: _Preflight | None = None
    try:
        with _taken_alone(rank, world, requests):  # every rank learns whether any failed (an error one rank found
            # left the others waiting in the next collective until the process group's timeout)
            preflight = _preflight(request, rank, world)
        with _train_logger_restored():
            return _train_in_folder(request, rank, world, local_rank, requests, preflight)
    finally:  # (the kernel drops it too when the process ends)
        if preflight is not None and preflight.folder_lock is not None:
            preflight.folder_lock.release()


def _train_in_folder(request: RunRequest, rank: int, world: int, local_rank: int, requests: StopRequests | None,
                     preflight: _Preflight) -> Path:
    """The run once its output folder is its own (``_preflight``)."""
    config = request.config
    schedule, output_dir, resume_from = preflight.schedule, preflight.output_dir, preflight.resume_from
    if world > 1:  # a training folder still being written: its newest checkpoint could differ from rank to rank
        chosen: list[str | None] = [request.weights, resume_from.name if resume_from is not None else None]
        dist.broadcast_object_list(chosen, src=0)
        with _taken_alone(rank, world, requests):
            request.weights = _as_rank_0_chose(preflight.given, request.weights, chosen[0])
            if request.weights:
                config.set("MODEL.WEIGHTS", request.weights)
            resume_from = _as_rank_0_resumes(output_dir, resume_from, chosen[1])
    if request.resume and resume_from is None:  # nothing to resume yet: the run starts afresh (a fresh run's CLIP is
        # checked in _preflight)
        with _taken_alone(rank, world, requests):
            check_clip_available(config, request.weights or config.get("MODEL.WEIGHTS") or None, None)
    _setup_logging(output_dir, rank)
    if rank == 0:  # what a run killed while saving left (a checkpoint's size each): --resume never took it away
        removed = remove_stale_temporaries(output_dir, preflight.folder_lock)
        if removed:
            log.info("removed %s a killed run left in %s (%.1f MB): %s", counted(len(removed), "temporary file"),
                     output_dir, sum(size for _, size in removed) / 1e6,
                     ", ".join(path.name for path, _ in removed[:3]) + (", ..." if len(removed) > 3 else ""))
    if resume_from not in (None, preflight.newest):
        log.warning("warning: %s has no training state; resuming from %s", preflight.newest.name, resume_from.name)
    device = _device(config, local_rank)
    if world > 1:  # a rank started with other settings trained silently on them, or hung at the end of its schedule;
        # compared before a negative SEED is drawn: a rank with SEED -1 beside one with SEED 5 waited for good in the
        # broadcast of rank 0's draw
        _check_ranks_agree(world, "settings", _settings_of(config))
    seed = _run_seed(config, world, device)
    if rank == 0:
        log.info("config %s -> %s (global batch %d on %s, %s each, lr %.3g, %s, scale %.3g, seed %d)",
                 config.source, output_dir, schedule.global_batch, counted(world, "process", "processes"),
                 counted(torch.get_num_threads(), "CPU thread"), schedule.base_lr,
                 counted(schedule.max_iter, "iteration"), schedule.scale, seed)
        late = [step for step in schedule.steps if step >= schedule.max_iter]
        if late:  # detectron2's WarmupMultiStepLR warns of them too
            log.warning("warning: SOLVER.STEPS %s lie at or past SOLVER.MAX_ITER %d (the last iteration is "
                        "MAX_ITER - 1): the learning rate does not decay at them (set SOLVER.STEPS with "
                        "SOLVER.MAX_ITER)", ", ".join(map(str, late)), schedule.max_iter)
        if _saves_only_at_the_end(schedule, _has_test_set(config)):
            kept = (f"only {resume_from.name}, the checkpoint it resumed from," if resume_from is not None
                    else "nothing")
            log.warning("warning: SOLVER.CHECKPOINT_PERIOD %d is not below SOLVER.MAX_ITER %d: the next checkpoint is "
                        "saved at the end, after iteration %d, and a run killed before (kill -9, out of memory) keeps "
                        "%s to --resume from (a stop signal still saves one); set SOLVER.CHECKPOINT_PERIOD, e.g. "
                        "SOLVER.CHECKPOINT_PERIOD=%d", schedule.checkpoint_period, schedule.max_iter, schedule.max_iter,
                        kept, max(schedule.max_iter // 5, 1))

    sources = _load_training_data(config, rank, world, requests, output_dir, resume_from is not None)
    records = [r for s in sources for r in s.records]
    video = all(s.is_video for s in sources)
    augmentation = AugmentationConfig.from_config(config, video)
    factors = None
    if str(config.get("DATALOADER.SAMPLER_TRAIN")).lower() == "repeatfactortrainingsampler" and not video:
        factors = repeat_factors(records, float(config.get("DATALOADER.REPEAT_THRESHOLD")))
    if rank == 0:
        log.info("%s from %s; augmentation %s; %s sampling", counted(len(records), "training item"),
                 ", ".join(s.name for s in sources), augmentation.kind,
                 "repeat-factor" if factors is not None else "uniform")
    dataset = TrainDataset(records, augmentation, seed)
    # detectron2's DATALOADER.ASPECT_RATIO_GROUPING (default true): a batch of one orientation
    groups = aspect_ratio_groups(records, augmentation) if config.get("DATALOADER.ASPECT_RATIO_GROUPING") else None
    # The dataset holds the records as bytes from here on: the record objects go, so that no loader worker (a fork
    # of this process) copies them page by page (its garbage collector writes to every object's header).
    del records, sources
    gc.collect()
    weights = request.weights or (config.get("MODEL.WEIGHTS") or None)
    model = _build_run_model(config, weights, resume_from, seed, rank, world, requests)
    if rank == 0:  # once the data and the model are there: a run that cannot start leaves no config.yaml that a later
        # --resume would take for a run's own
        atomic_write_text(output_dir / RUN_CONFIG_NAME, recorded_config(config, model).to_yaml())
    num_workers = loader_workers(int(config.get("DATALOADER.NUM_WORKERS")))
    if rank == 0:
        check_shared_memory(num_workers)
    divisibility = int(config.get("MODEL.MASK_FORMER.SIZE_DIVISIBILITY"))

    def loader_factory(start_iteration: int) -> torch.utils.data.DataLoader:
        sampler = StreamBatchSampler(len(dataset), schedule.global_batch, seed, rank, world, start_iteration, factors,
                                     groups)
        return build_loader(dataset, sampler, num_workers, divisibility, pin_memory=device.type == "cuda")

    settings = TrainerSettings.from_config(config, schedule, output_dir, seed)
    trainer = Trainer(model, loader_factory, settings, device, evaluate=_evaluator(config, device))
    trainer.folder_lock = preflight.folder_lock
    if resume_from is not None:
        trainer.resume(resume_from)
    elif request.resume:
        log.info("--resume: no checkpoint in %s yet, starting from the beginning", output_dir)
    if trainer.start_iteration >= settings.max_iter and not trainer.evaluation_pending():
        log.info("nothing to do: %s already has %s", output_dir, counted(trainer.start_iteration, "iteration"))
        if trainer.rank == 0:  # a killed run's records past the checkpoint this run stands on
            drop_metrics_from(output_dir, trainer.start_iteration)
            purge_tensorboard_from(output_dir, trainer.start_iteration)
        return read_last_checkpoint(output_dir)
    try:
        return trainer.train(requests)
    except FloatingPointError as error:  # the command prints it; train.log keeps it too
        log.error("error: %s", error, extra={"file_only": True})
        raise


# Where the data is: a machine may have its copy elsewhere. The data itself is compared once loaded (``_data_of``).
# Nor need the ranks agree on where the starting weights are (DistributedDataParallel gives every rank rank 0's
# parameters when it wraps the model) or where the run's folder is (rank 0 alone writes there); the CLIP config is
# compared by its contents.
_DATA_LOCATIONS = ("CLIPVIS.TRAIN_DATA", "CLIPVIS.DATA_ROOT", "CLIPVIS.TEST_DATA", "MODEL.WEIGHTS", "OUTPUT_DIR")


def loader_workers(asked: int) -> int:
    """``DATALOADER.NUM_WORKERS``, at most this process' share of the CPUs it may run on (its affinity: taskset, a
    cgroup's cpuset, SLURM) among the training processes of this machine (``LOCAL_WORLD_SIZE``: torchrun's, or the
    ``--num-gpus`` count), one at least, with one ``clipvis: warning:`` line from rank 0 when that is fewer (the
    shipped configs' 4 on a 2-core machine; 2 processes x 2 workers there). More workers than CPUs only compete for
    them, and PyTorch printed its raw UserWarning about it once per loader. The data a run draws does not depend on
    the number of workers (clipvis.cli.train.data)."""
    machine = cpu_share()
    cpus, processes, share = machine.cpus, machine.processes, machine.per_process
    if asked <= share:
        return asked
    plural = "" if share == 1 else "es"
    if processes == 1:
        log.warning("warning: DATALOADER.NUM_WORKERS is %d but this process may use %d CPU%s: the data loads with %d "
                    "worker process%s", asked, cpus, "" if cpus == 1 else "s", share, plural)
    else:
        log.warning("warning: DATALOADER.NUM_WORKERS is %d but the %d training processes of this machine share %d "
                    "CPU%s: the data loads with %d worker process%s each", asked, processes, cpus,
                    "" if cpus == 1 else "s", share, plural)
    return share


#: Below this much free shared memory, loader workers are warned about (a container's default /dev/shm is 64 MB).
SHARED_MEMORY_WARNING_BYTES = 1 << 30


def check_shared_memory(num_workers: int, folder: str = "/dev/shm") -> None:
    """One ``clipvis: warning:`` line when loader workers will run (``num_workers`` > 0) and ``folder``, where they
    hand their batches to the training process, has less than `SHARED_MEMORY_WARNING_BYTES` free: when it fills,
    the workers fail and PyTorch's loader waits for their batches for good (a container's 64 MB default: the run hung
    at its first iteration, a SIGTERM only asked for a checkpoint that never came). Nothing where it cannot be read."""
    if num_workers <= 0:
        return
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < SHARED_MEMORY_WARNING_BYTES:
        log.warning("warning: %s has %d MB free, and the %s pass every batch through it: PyTorch's data loader hangs "
                    "when it fills; give the container more (docker run --shm-size 8g; Kubernetes: an emptyDir of "
                    "medium Memory at /dev/shm) or set DATALOADER.NUM_WORKERS=0", folder, free // 2**20,
                    counted(num_workers, "loader worker"))


def _settings_of(config: TrainConfig) -> dict[str, str]:
    """The resolved config as ``{dotted key: YAML value}`` in the config's order, without the data locations."""
    import yaml

    flat: dict[str, str] = {}

    def walk(node: Any, prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if dotted in _DATA_LOCATIONS:
                continue
            if isinstance(value, dict) and value and dotted != "CLIPVIS.MODEL":
                walk(value, f"{dotted}.")
            else:
                if dotted == "CLIPVIS.CLIP_CONFIG" and value:
                    value = _file_contents(value)
                flat[dotted] = yaml.safe_dump(_as_compared(value), default_flow_style=True,
                                              sort_keys=True).strip().removesuffix("\n...")
    walk(config.tree, "")
    return flat


def _as_compared(value: Any) -> Any:
    """``value`` with every whole float an int: ``0`` and ``0.0`` in two copies of a config are the same setting."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [_as_compared(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_compared(item) for key, item in value.items()}
    return value


def _file_contents(path: Any) -> Any:
    """A JSON file's document (a copy elsewhere is the same file), or the path where it cannot be read."""
    try:
        return parse_json(Path(str(path)).expanduser().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path


def _data_of(sources: list[Any]) -> dict[str, str]:
    """Per training dataset: its item count and a digest of its items (file names, sizes, instances and their
    categories) and of its annotation file's bytes (the masks: hashed, not decoded), not of where its files are."""
    import hashlib

    out: dict[str, str] = {}
    for number, source in enumerate(sources):
        digest = hashlib.sha256()
        for record in source.records:
            for frame in record.frames:
                digest.update(repr((frame.path.name, frame.height, frame.width, frame.frame_index,
                                    [i.category_id for i in frame.instances])).encode())
            digest.update(b"|")
        if source.annotation_file is not None:
            with open(source.annotation_file, "rb") as handle:
                while chunk := handle.read(16 << 20):
                    digest.update(chunk)
        out[f"dataset {number + 1}"] = f"{len(source.records)} items, digest {digest.hexdigest()[:12]}"
    return out


class ErrorOfOneRank(RuntimeError):
    """Under several processes: an error this rank found and not every rank did (its own copy of the data or of
    the weights missing): ``rank N: <its message>``, said by this rank."""


class RankZerosCheckError(ConfigError):
    """A check rank 0 alone makes (the output folder's lock): said as the command alone says it, without the
    ``rank 0:`` that names the rank of an error no other rank found (under torchrun the folder-in-use line read
    ``rank 0: DIR is in use by ...``)."""


@contextlib.contextmanager
def _checked_by_rank_0_alone() -> Iterator[None]:
    """A check rank 0 alone makes (the test set, the resumed run's data): its ConfigError said as the command alone
    says it (RankZerosCheckError), not as an error of rank 0's own (under torchrun it read ``rank 0: DATASETS.TEST
    ...`` where one process says ``DATASETS.TEST ...``)."""
    try:
        yield
    except RankZerosCheckError:
        raise
    except ConfigError as error:
        raise RankZerosCheckError(str(error)) from None


class SaidByAnotherRank(RuntimeError):
    """Under several processes: this rank failed as another did, and that one says why (the command exits 1 in
    silence): an error every rank finds alike (a missing --data file, a batch the process count does not divide) is
    said once, by rank 0."""


def _one_line_error_types() -> tuple[type[BaseException], ...]:
    from clipvis.cli.atomic import OutputNotWritableError
    from clipvis.cli.train.records import TrainDataError
    from clipvis.model.checkpoint import CheckpointError
    from clipvis.weights import WeightsError

    return ConfigError, TrainDataError, OutputNotWritableError, WeightsError, CheckpointError, ModelBuildError


_ONE_LINE_ERROR_TYPES = _one_line_error_types()


@contextlib.contextmanager
def _taken_alone(rank: int, world: int, requests: StopRequests | None = None) -> Iterator[None]:
    """A step each rank takes alone (its checks, its data, its model): its one-line error, or its success, meets
    every other rank's at its end (``_agree_on_errors``). With ``requests`` a stop signal ends the step at once (or
    before it starts, one that came earlier) and every rank stops by it at the step's end."""
    try:
        with requests.immediately() if requests is not None else contextlib.nullcontext():
            yield
    except TrainingStopped:  # requests.signum: said at the step's end
        pass
    except _ONE_LINE_ERROR_TYPES as error:
        if _agree_on_errors(rank, world, error, requests) and not isinstance(error, RankZerosCheckError):
            raise ErrorOfOneRank(f"rank {rank}: {' '.join(str(error).split())}") from None
        raise
    _agree_on_errors(rank, world, None, requests)


def _agree_on_errors(rank: int, world: int, error: BaseException | None, requests: StopRequests | None = None) -> bool:
    """Every rank's outcome of a step each takes alone (``error`` None: it succeeded). When some rank got a stop
    signal (``requests.signum``), every rank raises TrainingStopped by it (the largest number when they got
    several), nothing saved, and ignores stop signals from then on. Else, when some rank failed, every rank stops:
    the failed ones raise their error, except that of the ranks with the first such rank's message only that rank
    says it (the caller raises ``error``); the others raise SaidByAnotherRank, as the ranks that succeeded do.
    Returns whether ``error`` is this rank's alone (not every rank's): the caller names the rank in it."""
    signum = requests.signum if requests is not None else None
    if world == 1:
        if signum is not None:
            raise TrainingStopped(signum)
        return False
    outcomes: list[tuple[str | None, int]] = [(None, 0)] * world
    dist.all_gather_object(outcomes, (None if error is None else " ".join(str(error).split()), signum or 0))
    signals = [number for _, number in outcomes if number]
    if signals:
        if requests is not None:
            requests.ignore_from_now()
        else:
            ignore_stop_signals()
        raise TrainingStopped(max(signals)) from None
    every = [message for message, _ in outcomes]
    failed = [r for r, message in enumerate(every) if message is not None]
    if not failed:
        return False
    alone = any(message != every[rank] for message in every)
    if rank == failed[0] and error is not None:
        return alone  # the caller raises this rank's own error
    if error is not None and every[rank] != every[failed[0]]:
        return True  # an error of its own: said too
    stop_in_silence()  # the rank that says it must not be ended before its line is printed
    raise SaidByAnotherRank(every[failed[0]])


def _check_ranks_agree(world: int, what: str, mine: dict[str, str]) -> None:
    """Gather every rank's ``mine`` (``{name: value}``); on a difference every rank raises RanksDifferError naming the
    first rank that differs and the first name (rank 0 prints it: the command)."""
    every: list[dict[str, str]] = [{} for _ in range(world)]
    dist.all_gather_object(every, mine)
    first = every[0]
    for other in range(1, world):
        theirs = every[other]
        for key in [*first, *(k for k in theirs if k not in first)]:
            if first.get(key) != theirs.get(key):
                raise RanksDifferError(
                    f"rank {other} has other {what}: {key} {theirs.get(key, '(none)')} (rank 0: "
                    f"{first.get(key, '(none)')}); every process must train with the same settings and data, nothing "
                    "was trained"
                )


def _resume_point(output_dir: Path, newest: Path | None) -> Path | None:
    """The checkpoint ``--resume`` continues from; ConfigError when the folder has checkpoints (``newest``: the
    newest) but none with its training state (``.state.pt``): starting again from iteration 0 would overwrite them."""
    point = resume_point(output_dir)
    if point is None and newest is not None:
        raise ConfigError(
            f"{output_dir}: cannot resume, no checkpoint there has its training state ({state_path(newest).name} "
            "is missing); its weights can still start a new run: --weights " + str(newest)
        )
    return point


class ProcessFailedError(RuntimeError):
    """One of the processes ``--num-gpus`` started failed; ``str()`` is its error's one line."""


# The errors whose message is the whole story (the command prints them after "clipvis: error:").
_ONE_LINE_ERRORS = ("ConfigError", "RankZerosCheckError", "TrainDataError", "CheckpointError", "ModelBuildError",
                    "WeightsError", "InvalidWeightsError", "WeightsNotAvailableError", "FloatingPointError",
                    "OutputNotWritableError", "RanksDifferError", "SaidByAnotherRank", "ErrorOfOneRank")


def _last_error_line(report: str) -> str:
    """``ConfigError: message`` -> ``message`` from the traceback a spawned process sent (other errors keep their
    class name)."""
    lines = [line for line in report.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "a training process failed"
    name, _, message = last.partition(": ")
    return message if message and name.rsplit(".", 1)[-1] in _ONE_LINE_ERRORS else last


def _stop_processes(context: Any, signum: int, output_dir: Path) -> TrainingStopped:
    """Pass a stop signal this process got on to the training processes it spawned (a terminal's Ctrl-C reached
    them already: a repeat this soon is ignored), wait while they save their checkpoint, and say where the run can
    resume. One more signal meanwhile is passed on too: they stop at once."""
    def signal_processes() -> None:
        for process in context.processes:
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)

    signal_processes()
    while True:
        try:
            if context.join():
                break
        except KeyboardInterrupt:
            signal_processes()
        except Exception:  # noqa: BLE001 - a process that ended by the signal before training began
            break
    checkpoint = resume_point(output_dir)
    return TrainingStopped(signum, checkpoint, saved=checkpoint is not None)


# The value of ``launch()``'s shared stop value once a process ended with an error or a signal before the others:
# the SIGTERM that PyTorch's spawn then sends the others is not a stop the user asked for, and they do not announce it
# (the command's one line says what happened). The processes' own stops are signal numbers (> 0).
_PEER_LOST = -1

# Rank 0 evaluates while the others wait at a barrier: allow long evaluations before a collective times out (also
# the longest the ranks wait for each other before the group forms).
_GROUP_TIMEOUT = timedelta(hours=2)


def _join(context: Any, stop_signal: Any) -> bool:
    """``context.join()`` (PyTorch spawn's: True once every process ended, an exception for one that failed), with
    ``stop_signal`` set to ``_PEER_LOST`` first when a process ended with a non-zero status: before ``join`` SIGTERMs
    the processes left, so that they know the signal is not the user's."""
    if context.sentinels:
        for sentinel in multiprocessing.connection.wait(list(context.sentinels)):
            process = context.processes[context.sentinels[sentinel]]
            process.join()
            if process.exitcode != 0:
                with stop_signal.get_lock():
                    stop_signal.value = _PEER_LOST
                break
    return context.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, request: RunRequest, world: int, port: int, threads: int | None,
            stop_signal: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    if threads is not None:  # as torchrun: N processes with every core's threads each ran ~8x slower on the CPU
        torch.set_num_threads(threads)
    try:
        _distributed_main(request, quiet=lambda: stop_signal.value == _PEER_LOST)
    except KeyboardInterrupt as interrupt:  # spawn ends a process on it with status 0 and no word: told to launch()
        with stop_signal.get_lock():  # kept quiet for the processes that are still to end, once one is lost
            if stop_signal.value != _PEER_LOST:
                stop_signal.value = max(stop_signal.value, int(getattr(interrupt, "signum", signal.SIGINT)))
    finally:  # the process ends here (spawn's, not the launcher's): its exit need not scan torch's objects
        freeze_before_exit()


def _distributed_main(request: RunRequest, quiet: Callable[[], bool] | None = None) -> Path:
    """One process of a run under torchrun or ``--num-gpus``; ``quiet``: see :class:`StopRequests`."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = torch.cuda.is_available() and str(request.config.get("MODEL.DEVICE")) != "cpu"
    if use_cuda:
        torch.cuda.set_device(visible_gpu(local_rank, torch.cuda.device_count()))
    # A rank that failed before the group (a node-local folder without config.yaml): rank 0 says its line, where it
    # waited in the group's rendezvous until torchrun ended it (one machine) or for the 2 hours below (several)
    failed = meet_before_the_group(rank, world, timeout=_GROUP_TIMEOUT)
    if failed is not None:
        if rank == 0:
            raise ErrorOfOneRank(failed)
        stop_in_silence()  # rank 0 says it: not ended by torchrun before its line
        raise SaidByAnotherRank(failed)
    form_process_group("nccl" if use_cuda else "gloo", _GROUP_TIMEOUT)
    try:
        result = run_training(request, rank, world, local_rank, quiet)
    except TrainingStopped as stopped:
        if stopped.saved:  # every process stopped at the same iteration: they can still tear down together
            gc.collect()
            dist.barrier()
        raise
    except RuntimeError as error:  # a rank killed (kill -9, the OOM killer): gloo's traceback said it on rank 0
        if world > 1 and lost_a_peer(error):
            ignore_stop_signals()  # torchrun's SIGTERM to the ranks left must not cut this rank's line short
            raise rank_lost(rank, world) from None
        raise
    else:
        # Tear down together: free the DDP reducer (it holds the group) and let every rank arrive before the group
        # goes away; a rank still using it while rank 0 (the store's host) exits can abort at interpreter exit.
        gc.collect()
        dist.barrier()
        return result
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def _spawn_warnings_silenced() -> Iterator[None]:
    """PyTorch spawn's own warnings while it ends the processes left once one failed ("Terminating process N via
    signal SIGTERM", with a timestamp and spawn.py's line), which came before the one line the command prints: the
    processes end anyway, and that line says why."""
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")

    def errors_only(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    spawn_log.addFilter(errors_only)
    try:
        yield
    finally:
        spawn_log.removeFilter(errors_only)


def launch(request: RunRequest) -> Path | None:
    """Run under torchrun (its environment), spawn ``num_processes`` local processes, or train in this process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _distributed_main(request)
    if request.num_processes > 1:
        import torch.multiprocessing as mp

        from clipvis.cli.train.config import ConfigError

        gpus = torch.cuda.device_count() if str(request.config.get("MODEL.DEVICE")) != "cpu" else 0
        if 0 < gpus < request.num_processes:
            raise ConfigError(f"--num-gpus {request.num_processes}: this machine has {gpus} GPU(s)")

        # One thread per process unless OMP_NUM_THREADS says otherwise, as torchrun gives its processes (set before
        # they start: their torch reads it when imported).
        threads = None if os.environ.get("OMP_NUM_THREADS") else 1
        if threads is not None:
            os.environ["OMP_NUM_THREADS"] = str(threads)
        # A stop signal one of them got (SIGTERM to one process, a scheduler's preemption): they all stop and save,
        # and this process says so, as for a signal it got itself (it printed the checkpoint as if training ended).
        stop_signal = mp.get_context("spawn").Value("i", 0)
        try:
            context = mp.start_processes(
                _worker, args=(request, request.num_processes, _free_port(), threads, stop_signal),
                nprocs=request.num_processes, join=False, start_method="spawn",
            )
        finally:
            if threads is not None:
                os.environ.pop("OMP_NUM_THREADS", None)
        output_dir = Path(request.config.get("OUTPUT_DIR")).expanduser()
        try:
            with _spawn_warnings_silenced():
                while not _join(context, stop_signal):
                    pass
        except mp.ProcessRaisedException as error:  # a process' error, without the traceback spawn wraps it in
            raise ProcessFailedError(_last_error_line(str(error))) from None
        except mp.ProcessExitedException as error:  # gone without a word (kill -9, the OOM killer): spawn's traceback
            how = f"by {error.signal_name}" if error.signal_name else f"with exit status {error.exit_code}"
            raise RankLost(f"process {error.error_index} of --num-gpus {request.num_processes} ended {how} without a "
                           "word (killed? out of memory?)", speaks=True) from None
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM/SIGHUP (the launcher's Terminated)
            with _spawn_warnings_silenced():
                raise _stop_processes(context, getattr(interrupt, "signum", signal.SIGINT), output_dir) from None
        if stop_signal.value > 0:
            checkpoint = resume_point(output_dir)
            raise TrainingStopped(stop_signal.value, checkpoint, saved=checkpoint is not None)
        return read_last_checkpoint(output_dir)
    return run_training(request)
