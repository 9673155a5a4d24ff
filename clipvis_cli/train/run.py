"""One training run from a resolved config: processes, data, model, trainer (what ``clipvis train`` executes).

Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process joins the process group
(NCCL on GPUs, gloo on CPU); ``num_processes > 1`` without torchrun spawns that many local processes. Rank 0
logs and writes; every process reads its share of each global batch.

The run's components live beside it: the processes (``processes.py``), how the ranks agree (``rank_agreement.py``),
the model and its CLIP (``model_building.py``), the device (``device_choice.py``), the loader's workers
(``loader_resources.py``), the periodic evaluation (``periodic_evaluation.py``) and the run's logging
(``run_logging.py``).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from clipvis.cli.atomic import atomic_write_text, ensure_output_dir
from clipvis.cli.hub_logging import clip_fetch_logging
from clipvis.cli.json_io import parse_json
from clipvis.cli.locks import FolderLock
from clipvis.cli.messages import counted, print_warning
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
from clipvis.cli.train.device_choice import check_device, process_device
from clipvis.cli.train.loader_resources import check_shared_memory, loader_workers
from clipvis.cli.train.model_building import (
    ModelBuildError,
    build_model,
    check_clip_available,
    random_clip_warning,
    recorded_config,
    starting_weights,
    weights_model_config,
)
from clipvis.cli.train.periodic_evaluation import has_test_set, periodic_evaluator
from clipvis.cli.train.processes import ProcessFailedError, distributed_main, train_in_spawned_processes
from clipvis.cli.train.rank_agreement import (
    ErrorOfOneRank,
    RankZerosCheckError,
    SaidByAnotherRank,
    as_rank_0_chose,
    as_rank_0_resumes,
    check_ranks_agree,
    checked_by_rank_0_alone,
    data_of,
    settings_of,
    taken_alone,
)
from clipvis.cli.train.run_logging import setup_logging, train_logger_restored
from clipvis.cli.train.sources import load_sources
from clipvis.cli.train.stopping import StopRequests
from clipvis.cli.train.trainer import (
    FolderInUseError,
    Trainer,
    TrainerSettings,
    checkpoints_in,
    drop_metrics_from,
    evaluated_after,
    evaluation_recorded,
    hold_training_folder,
    purge_tensorboard_from,
    remove_stale_temporaries,
    resume_point,
    state_damage,
)
from clipvis.model import ClipVis
from clipvis.weights.training_folder import RUN_DATA_NAME, TRAIN_CHECKPOINT_FILE, read_last_checkpoint, state_path

# What the command (clipvis_cli/commands/train.py) and the Python API take from here; some live in the run's component
# modules (model_building.py, device_choice.py, rank_agreement.py, processes.py).
__all__ = [
    "ErrorOfOneRank", "ModelBuildError", "ProcessFailedError", "RunRequest", "SaidByAnotherRank", "check_device",
    "launch", "run_training", "starting_weights", "weights_model_config",
]

log = logging.getLogger("clipvis.train")


@dataclass
class RunRequest:
    """What the command line asked for."""

    config: TrainConfig
    weights: str | None = None
    resume: bool = False
    num_processes: int = 1
    autoscale: bool = True


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
        with checked_by_rank_0_alone():
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
    with taken_alone(rank, world, requests):
        sources = load_sources(
            list(config.get("DATASETS.TRAIN") or []), list(config.get("CLIPVIS.TRAIN_DATA") or []),
            config.get("CLIPVIS.DATA_ROOT") or None, filter_empty, say=log.info,
            crowd_as_instances=bool(config.get("CLIPVIS.CROWD_AS_INSTANCES")),
        )
    for source in sources:
        for message in source.warnings:
            log.warning("warning: %s", message)
    summary = data_of(sources)
    if world > 1:  # each rank reads its share of every batch from its own copy of the data: the same items
        check_ranks_agree(world, "training data", summary)
    with taken_alone(rank, world, requests):  # every rank learns of rank 0's refusal
        if rank == 0:
            with checked_by_rank_0_alone():
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

    with warnings.catch_warnings(record=True) as caught, taken_alone(rank, world, requests), \
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
        with taken_alone(rank, world, requests):  # every rank learns whether any failed (an error one rank found
            # left the others waiting in the next collective until the process group's timeout)
            preflight = _preflight(request, rank, world)
        with train_logger_restored():
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
        with taken_alone(rank, world, requests):
            request.weights = as_rank_0_chose(preflight.given, request.weights, chosen[0])
            if request.weights:
                config.set("MODEL.WEIGHTS", request.weights)
            resume_from = as_rank_0_resumes(output_dir, resume_from, chosen[1])
    if request.resume and resume_from is None:  # nothing to resume yet: the run starts afresh (a fresh run's CLIP is
        # checked in _preflight)
        with taken_alone(rank, world, requests):
            check_clip_available(config, request.weights or config.get("MODEL.WEIGHTS") or None, None)
    setup_logging(output_dir, rank)
    if rank == 0:  # what a run killed while saving left (a checkpoint's size each): --resume never took it away
        removed = remove_stale_temporaries(output_dir, preflight.folder_lock)
        if removed:
            log.info("removed %s a killed run left in %s (%.1f MB): %s", counted(len(removed), "temporary file"),
                     output_dir, sum(size for _, size in removed) / 1e6,
                     ", ".join(path.name for path, _ in removed[:3]) + (", ..." if len(removed) > 3 else ""))
    if resume_from not in (None, preflight.newest):
        damage = state_damage(preflight.newest)
        if damage is not None:  # as a state that is lost (README, Resume)
            log.warning("warning: %s cannot be read (%s): it counts as lost; resuming from %s",
                        state_path(preflight.newest), damage, resume_from.name)
        else:
            log.warning("warning: %s has no training state; resuming from %s", preflight.newest.name,
                        resume_from.name)
    device = process_device(config, local_rank)
    if world > 1:  # a rank started with other settings trained silently on them, or hung at the end of its schedule;
        # compared before a negative SEED is drawn: a rank with SEED -1 beside one with SEED 5 waited for good in the
        # broadcast of rank 0's draw
        check_ranks_agree(world, "settings", settings_of(config))
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
        if _saves_only_at_the_end(schedule, has_test_set(config)):
            kept = (f"only {resume_from.name}, the checkpoint it resumed from," if resume_from is not None
                    else "nothing")
            log.warning("warning: SOLVER.CHECKPOINT_PERIOD %d is not below SOLVER.MAX_ITER %d: the next checkpoint is "
                        "saved at the end, after iteration %d, and a run killed before (kill -9, out of memory) keeps "
                        "%s to --resume from (a stop signal still saves one); set SOLVER.CHECKPOINT_PERIOD, e.g. "
                        "SOLVER.CHECKPOINT_PERIOD=%d", schedule.checkpoint_period, schedule.max_iter, schedule.max_iter,
                        kept, max(schedule.max_iter // 5, 1))
        # said before the data loads (minutes on LVIS), not only in a model useless once trained
        random_clip = random_clip_warning(config, request.weights or config.get("MODEL.WEIGHTS") or None,
                                          resuming=resume_from is not None)
        if random_clip is not None:
            log.warning("warning: %s", random_clip)

    finished = _finished_already(config, schedule, output_dir, resume_from, rank, world)
    if finished is not None:  # before the data loads and the model is built (minutes on LVIS), as the trainer would
        log.info("nothing to do: %s already has %s", output_dir, counted(finished, "iteration"))
        if rank == 0:  # a killed run's records past the checkpoint this run stands on
            drop_metrics_from(output_dir, finished)
            purge_tensorboard_from(output_dir, finished)
        return read_last_checkpoint(output_dir)
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
    trainer = Trainer(model, loader_factory, settings, device, evaluate=periodic_evaluator(config, device))
    trainer.folder_lock = preflight.folder_lock
    if resume_from is not None:
        with taken_alone(rank, world, requests):  # a state that cannot be read: one line, every rank stops by it
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


def _finished_already(config: TrainConfig, schedule: Schedule, output_dir: Path, resume_from: Path | None, rank: int,
                      world: int) -> int | None:
    """The iterations a resumed run has done when it has nothing left to do: its checkpoint at or past MAX_ITER and
    that checkpoint's evaluation, where one is due, recorded (``Trainer.evaluation_pending``'s rule: rank 0 decides
    from its metrics.jsonl and tells the others); None otherwise. Read from the checkpoint's name, which carries its
    iteration as its training state does."""
    named = TRAIN_CHECKPOINT_FILE.fullmatch(resume_from.name) if resume_from is not None else None
    if named is None:
        return None
    previous = int(named.group(1))
    if previous + 1 < schedule.max_iter:
        return None
    pending = [evaluated_after(previous, schedule.eval_period, schedule.max_iter, has_test_set(config))
               and not evaluation_recorded(output_dir, previous) if rank == 0 else False]
    if world > 1:
        dist.broadcast_object_list(pending, src=0)
    return None if pending[0] else previous + 1


def _resume_point(output_dir: Path, newest: Path | None) -> Path | None:
    """The checkpoint ``--resume`` continues from; ConfigError when the folder has checkpoints (``newest``: the
    newest) but none with its training state (``.state.pt``): starting again from iteration 0 would overwrite them."""
    point = resume_point(output_dir)
    if point is None and newest is not None:
        damage = state_damage(newest)
        lost = f"cannot be read: {damage}" if damage is not None else "is missing"
        raise ConfigError(
            f"{output_dir}: cannot resume, no checkpoint there has its training state ({state_path(newest).name} "
            f"{lost}); its weights can still start a new run: --weights " + str(newest)
        )
    return point


def launch(request: RunRequest) -> Path | None:
    """Run under torchrun (its environment), spawn ``num_processes`` local processes, or train in this process."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return distributed_main(request)
    if request.num_processes > 1:
        return train_in_spawned_processes(request)
    return run_training(request)
