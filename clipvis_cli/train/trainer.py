"""The training loop: optimiser, schedule, AMP, checkpoints, exact resume, logging, DDP.

See docs/training.md, "Optimisation"; the optimiser's parameter groups, the schedule and the gradient clipping are
`clipvis.model.training` (official: `CV:train_net.py` build_optimizer).

Output folder layout (the names of its files and how they are read: `clipvis.weights.training_folder`)::

    config.yaml                      the resolved config (after autoscaling)
    model_0004999.safetensors        weights + model config (loadable by segment/evaluate/--weights)
    model_0004999.state.pt           optimiser, scheduler, scaler, RNG states (for --resume)
    last_checkpoint                  the newest model file's name
    metrics.jsonl                    one JSON line per logged iteration and per evaluation
    events.out.tfevents.*            TensorBoard scalars (when the tensorboard package is installed)
    train.log                        the log lines
    .clipvis-train.lock              held by the live run (rank 0) for its whole life (hold_training_folder)
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import pickle
import random
import re
import signal
import socket
import sys
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from torch import nn

from clipvis.cli.atomic import atomic_write_text
from clipvis.cli.json_io import parse_json
from clipvis.cli.locks import FolderBusyError, FolderLock
from clipvis.cli.messages import counted, error_reason
from clipvis.cli.train.data import Batch
from clipvis.cli.train.stopping import StopRequests, TrainingStopped, write_to_stderr
from clipvis.model import ClipVis, LossWeights, RandomPointSampler, SetCriterion, save_pretrained
from clipvis.model.config import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD
from clipvis.model.preprocess import normalise_padded
from clipvis.model.training import (
    GradientClipping,
    TrainingForward,
    build_optimizer,
    gradient_clipping,
    training_step,
    warmup_multistep_factor,
)
from clipvis.weights.training_folder import (
    LAST_CHECKPOINT,
    METRICS_NAME,
    SAVE_TEMPORARY_FILE,
    TRAIN_CHECKPOINT_FILE,
    TRAINING_LOCK_NAME,
    checkpoint_name,
    read_last_checkpoint,
    state_path,
)

if TYPE_CHECKING:
    from clipvis.cli.train.config import Schedule, TrainConfig


log = logging.getLogger("clipvis.train")


def checkpoints_in(folder: Path) -> list[Path]:
    """The model files of a training folder, oldest first."""
    try:
        names = [entry.name for entry in folder.iterdir()]
    except OSError:
        return []
    return [folder / name for name in sorted(name for name in names if TRAIN_CHECKPOINT_FILE.fullmatch(name))]


def state_damage(checkpoint: Path) -> str | None:
    """Why the training state beside ``checkpoint`` (its ``.state.pt``) cannot be read, in a few words, or None when
    it is whole or not there. Cheap: torch.save writes a zip archive whose directory is at its end, so an empty or
    truncated file (a crash, a full disk, a copy cut short) has none; the archive's contents are not read."""
    state = state_path(checkpoint)
    try:
        if not state.is_file():
            return None
        if state.stat().st_size == 0:
            return "an empty file"
        with zipfile.ZipFile(state) as archive:
            if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in archive.namelist()):
                return "not a torch.save file"
    except (zipfile.BadZipFile, ValueError, EOFError):
        return "truncated or damaged"
    except OSError as error:
        return error.strerror or error_reason(error)
    return None


def has_training_state(checkpoint: Path) -> bool:
    """Whether ``checkpoint`` has its training state beside it, whole (``state_damage``): one --resume can take."""
    return state_path(checkpoint).is_file() and state_damage(checkpoint) is None


def evaluated_after(iteration: int, eval_period: int, max_iter: int, has_test_set: bool) -> bool:
    """Whether the checkpoint of ``iteration`` (0-based) is evaluated: every ``TEST.EVAL_PERIOD`` iterations and after
    the last one (detectron2's EvalHook, which the official train_net registers, evaluates in ``after_train`` when the
    run reached ``MAX_ITER``: the final model is always evaluated, once); never with no period (0) or nothing to
    evaluate on."""
    if eval_period <= 0 or not has_test_set:
        return False
    return (iteration + 1) % eval_period == 0 or iteration + 1 == max_iter


def evaluation_recorded(folder: Path, iteration: int) -> bool:
    """Whether the run's metrics.jsonl holds an evaluation record of ``iteration`` (training records carry the
    learning rate); no metrics, or not text: no record of it."""
    entries = _metric_lines(folder / METRICS_NAME) or []
    return any(record is not None and record.get("iteration") == iteration and "lr" not in record
               for _, record in entries)


def resume_point(folder: Path) -> Path | None:
    """The checkpoint to resume from: the one ``last_checkpoint`` names when its training state is there too,
    else the newest model file that has its state (a state file lost, empty or truncated, or a pointer left
    dangling); None when no checkpoint has one."""
    named = read_last_checkpoint(folder)
    if named is not None and has_training_state(named):
        return named
    for path in reversed(checkpoints_in(folder)):
        if has_training_state(path):
            return path
    return None


SAVE_LOCK_WAIT_S = 60.0  # how long a save waits for a removal of stale temporaries (milliseconds) to end


class CheckpointSaveError(OSError):
    """A checkpoint that could not be written (a full disk, a file-size limit, a lost network mount): one line naming
    the folder, the checkpoint, the cause and the checkpoint a ``--resume`` continues from."""

    def __init__(self, folder: Path, checkpoint: Path, reason: str, usable: Path | None) -> None:
        last = f"the last usable checkpoint is {usable.stem}" if usable is not None else "no usable checkpoint yet"
        super().__init__(f"{folder}: cannot save checkpoint {checkpoint.stem} ({reason}); {last}")


_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)|code: (\d+)")


def _save_failure_reason(error: BaseException) -> str:
    """The cause of a failed write in a few words: an OSError's ``strerror``; safetensors' (Rust) errors carry the
    OS error's number in their text ("I/O error: No space left on device (os error 28)")."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    found = _OS_ERROR_IN_TEXT.search(str(error))
    if found:
        return os.strerror(int(found.group(1) or found.group(2)))
    return error_reason(error)


class FolderInUseError(OSError):
    """Another live process trains in the folder; ``str()`` is one line naming the folder and that process."""

    def __init__(self, folder: Path, holder: str) -> None:
        super().__init__(f"{folder} is in use by a live training run{f' ({holder})' if holder else ''}: wait for it "
                         "to end or stop it, or give another --output-dir")


def hold_training_folder(folder: Path) -> FolderLock:
    """The run folder's lock (``TRAINING_LOCK_NAME``), for the live run to hold for its whole life, so that a second
    run or a ``--resume`` started there meanwhile (a second terminal, a scheduler's requeue) never trains beside it on
    the same checkpoints, metrics.jsonl and config.yaml. An ``flock``: the kernel drops it when the process ends,
    however it ends, so a killed run never keeps a resume out. FolderInUseError when another process holds it."""
    try:
        return FolderLock(folder, TRAINING_LOCK_NAME).acquire()
    except FolderBusyError as busy:
        # "pid N on HOST" (clipvis.cli.locks): the host kept where it is another machine's (a folder shared over NFS
        # by the nodes of a multi-node run or a requeue), where that pid is no process of this one
        here = f" on {socket.gethostname()}"
        holder = busy.holder.removesuffix(here) if busy.holder.endswith(here) else busy.holder
        raise FolderInUseError(folder, holder) from None


@contextmanager
def _folder_held(folder: Path, wait_s: float | None, held_by_run: FolderLock | None = None) -> Iterator[bool]:
    """The run folder's lock (``FolderLock``), which a save holds while it writes and the removal of a killed run's
    temporaries holds while it looks: the latter never takes a live save's file for a killed one's. Yields whether it
    is held; ``wait_s`` None: not waited for (another process holds it: False), else waited for up to that long and
    then gone on without. ``held_by_run``: the run's own lock (``hold_training_folder``), when this process holds it
    already: nothing else is taken."""
    if held_by_run is not None and held_by_run.held:
        yield True
        return
    lock = FolderLock(folder, TRAINING_LOCK_NAME)
    try:
        lock.acquire(wait=wait_s is not None, timeout=wait_s)
    except FolderBusyError:
        pass
    try:
        yield lock.held
    finally:
        lock.release()


def remove_stale_temporaries(folder: Path, held_by_run: FolderLock | None = None) -> list[tuple[Path, int]]:
    """Delete the temporary files (``SAVE_TEMPORARY_FILE``) that a run killed while saving left in its folder (a kill
    -9, the OOM killer, a power cut), with their sizes; nothing when another process holds the folder's lock (a run
    saving there: its files are not stale). Other files are left alone. ``held_by_run``: see ``_folder_held``."""
    removed: list[tuple[Path, int]] = []
    with _folder_held(folder, wait_s=None, held_by_run=held_by_run) as held:
        if not held:
            return removed
        try:
            entries = sorted((entry for entry in os.scandir(folder) if SAVE_TEMPORARY_FILE.fullmatch(entry.name)),
                             key=lambda entry: entry.name)
        except OSError:
            return removed
        for entry in entries:
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                size = entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append((Path(entry.path), size))
    return removed


@dataclass
class TrainerSettings:
    """Everything the loop needs, already resolved from the config."""

    output_dir: Path
    max_iter: int
    base_lr: float
    steps: tuple[int, ...]
    gamma: float = 0.1
    warmup_iters: int = 10
    warmup_factor: float = 1.0
    weight_decay: float = 0.05
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    backbone_multiplier: float = 0.1
    clip_type: str | None = "full_model"  # gradient clipping (``gradient_clipping``): None = none
    clip_value: float = 0.01
    clip_norm_type: float = 2.0  # the "norm" type's (the official full-model clipping is always L2)
    amp: bool = True
    amp_dtype: str = "auto"
    checkpoint_period: int = 10000
    log_period: int = 20
    eval_period: int = 0
    seed: int = 0
    loss_weights: LossWeights = field(default_factory=LossWeights)
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_ratio: float = 0.75
    deep_supervision: bool = True
    pixel_mean: tuple[float, float, float] = CLIP_PIXEL_MEAN
    pixel_std: tuple[float, float, float] = CLIP_PIXEL_STD

    @classmethod
    def from_config(cls, config: TrainConfig, schedule: Schedule, output_dir: Path, seed: int) -> TrainerSettings:
        """The settings of a config's ``SOLVER`` and ``MODEL.MASK_FORMER`` blocks, with its (autoscaled) schedule.
        Raises ValueError for an unknown ``SOLVER.CLIP_GRADIENTS.CLIP_TYPE``."""
        mf = config.tree["MODEL"]["MASK_FORMER"]
        solver = config.tree["SOLVER"]
        clip = solver.get("CLIP_GRADIENTS") or {}
        return cls(
            output_dir=output_dir, max_iter=schedule.max_iter, base_lr=schedule.base_lr, steps=schedule.steps,
            gamma=float(solver["GAMMA"]), warmup_iters=schedule.warmup_iters,
            warmup_factor=float(solver["WARMUP_FACTOR"]), weight_decay=float(solver["WEIGHT_DECAY"]),
            weight_decay_norm=float(solver["WEIGHT_DECAY_NORM"]),
            weight_decay_embed=float(solver["WEIGHT_DECAY_EMBED"]),
            backbone_multiplier=float(solver["BACKBONE_MULTIPLIER"]),
            clip_type=gradient_clipping(bool(clip.get("ENABLED")), str(clip.get("CLIP_TYPE", "full_model")).lower(),
                                        float(clip.get("CLIP_VALUE", 0.0))),
            clip_value=float(clip.get("CLIP_VALUE", 0.0)), clip_norm_type=float(clip.get("NORM_TYPE", 2.0)),
            amp=bool(solver["AMP"]["ENABLED"]),
            amp_dtype=str(config.get("CLIPVIS.AMP_DTYPE")), checkpoint_period=schedule.checkpoint_period,
            log_period=int(config.get("CLIPVIS.LOG_PERIOD")), eval_period=schedule.eval_period, seed=seed,
            loss_weights=LossWeights(float(mf["OBJECT_WEIGHT"]), float(mf["MASK_WEIGHT"]), float(mf["DICE_WEIGHT"]),
                                     float(mf["MASKIOU_WEIGHT"])),
            num_points=int(mf["TRAIN_NUM_POINTS"]), oversample_ratio=float(mf["OVERSAMPLE_RATIO"]),
            importance_ratio=float(mf["IMPORTANCE_SAMPLE_RATIO"]), deep_supervision=bool(mf["DEEP_SUPERVISION"]),
            pixel_mean=tuple(config.get("MODEL.PIXEL_MEAN")), pixel_std=tuple(config.get("MODEL.PIXEL_STD")),
        )


def drop_metrics_from(folder: Path, iteration: int) -> None:
    """Drop the records of ``iteration`` and later from the run folder's metrics.jsonl: what a run killed after its
    last checkpoint recorded beyond it (also when the run is not continued: ``--resume`` with nothing to do)."""
    _drop_records_from(folder / METRICS_NAME, iteration)


def purge_tensorboard_from(folder: Path, iteration: int) -> None:
    """Tell TensorBoard to hide the folder's scalars of ``iteration`` and later, as ``drop_metrics_from`` drops them
    from metrics.jsonl, for a run that writes no events itself (``--resume`` with nothing to do): an event file
    holding only a session start at that step (TensorBoard's ``purge_step``). Nothing when the folder has no event
    file or TensorBoard is not installed."""
    if not any(folder.glob("events.out.tfevents.*")):
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return
    SummaryWriter(str(folder), purge_step=iteration).close()


def _metric_lines(path: Path) -> list[tuple[str, dict[str, Any] | None]] | None:
    """Each line of a metrics.jsonl with its record (None for a line that is no JSON record, such as one cut short
    by a kill); None when the file cannot be read as text."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    entries: list[tuple[str, dict[str, Any] | None]] = []
    for line in lines:
        try:
            record = parse_json(line)
        except ValueError:
            record = None
        entries.append((line, record if isinstance(record, dict) else None))
    return entries


def _drop_records_from(path: Path, iteration: int) -> None:
    """Rewrite a metrics.jsonl without the records of ``iteration`` and later (a line that is not a JSON record,
    such as one cut short by a kill, goes too)."""
    entries = _metric_lines(path)
    if entries is None:
        return
    kept = []
    for line, record in entries:
        try:
            earlier = record is not None and int(record.get("iteration", -1)) < iteration
        except (ValueError, TypeError):
            continue
        if earlier:
            kept.append(line)
    if len(kept) != len(entries):
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))


class MetricsSink:
    """metrics.jsonl + TensorBoard (if installed) + log lines, on rank 0 only.

    A run that starts at ``start_iteration`` (0, or where it resumes) first drops what an earlier run in the folder
    recorded for that iteration and later: a run stopped or killed after its last checkpoint (or before its first)
    wrote records that this run writes again. TensorBoard is told the same (``purge_step``): it hides the earlier
    event files' scalars from that step on."""

    def __init__(self, folder: Path, enabled: bool, start_iteration: int = 0) -> None:
        self.enabled = enabled
        if enabled:
            drop_metrics_from(folder, start_iteration)
        self.jsonl = open(folder / METRICS_NAME, "a", encoding="utf-8") if enabled else None  # noqa: SIM115
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(folder), purge_step=start_iteration)
            except ImportError:
                log.info("tensorboard is not installed: metrics go to metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.tensorboard is not None:
            step = int(record.get("iteration", 0))
            for key, value in record.items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


class ProgressLine:
    """A live line (rich, on a terminal) or periodic log lines: iteration, loss, it/s, data-wait share, ETA."""

    def __init__(self, total: int, start: int, enabled: bool) -> None:
        self.total = total
        self.progress = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            # The console writes to the stderr of now, not to whatever sys.stderr is at each write: rich's live line
            # makes sys.stderr a proxy writing through this console, and the periodic evaluation's recorder
            # (standard_streams.stderr_lines_recorded) writes on to that proxy; a console taking sys.stderr at each
            # write wrote into the recorder again, for ever (a hang at the first evaluation, on a terminal alone)
            self.progress = Progress(
                TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(), transient=False, console=Console(file=sys.stderr),
            )
            self.task = self.progress.add_task("train", total=total, completed=start, info="")
            self.progress.start()

    def update(self, iteration: int, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=iteration + 1, info=info)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _format_eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


_AMP_NAMES = {torch.float16: "fp16", torch.bfloat16: "bf16"}


def resumed_amp_dtype(settings: TrainerSettings, device: torch.device, state: dict[str, Any],
                      configured: torch.dtype | None) -> torch.dtype | None:
    """The autocast dtype a run resumed from the checkpoint state ``state`` trains in (``configured``: what its
    settings give on ``device`` today).

    ``CLIPVIS.AMP_DTYPE=auto`` keeps the mixed-precision type the run trained in, so that auto's meaning never changes
    under a running run: the type the checkpoint records (``amp_dtype``); in a checkpoint written before clipvis
    recorded it, the one its gradient-scaler state shows on a GPU: a scaler state means fp16, none means the run
    trained without a scaler, i.e. bf16 (what auto gave on GPUs supporting it before it became the official fp16;
    fp16 on a GPU without bf16). A type set explicitly (``fp16``, ``bf16``), AMP off, a run that trained in fp32
    (AMP off, or auto on the CPU), and a run resumed on the CPU (auto trains there in fp32, whatever the run trained
    in on a GPU) get ``configured``."""
    if not settings.amp or settings.amp_dtype != "auto" or device.type != "cuda":
        return configured
    recorded = state.get("amp_dtype")
    if recorded is not None:
        return {name: dtype for dtype, name in _AMP_NAMES.items()}.get(recorded, configured)
    if state.get("scaler"):
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def sample_generator(seed: int, position: int, device: torch.device) -> torch.Generator:
    """The point-sampling RNG of the sample at ``position`` (independent of batch split and resume)."""
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + position * 7919 + 12345) % (2**63 - 1))
    return generator


class Trainer:
    """Single- or multi-process training of a :class:`ClipVis` head on batches from a loader."""

    def __init__(
        self,
        model: ClipVis,
        loader_factory: Callable[[int], Iterator[Batch]],
        settings: TrainerSettings,
        device: torch.device,
        evaluate: Callable[[Path, int], dict[str, Any] | None] | None = None,
    ) -> None:
        self.settings = settings
        self.device = device
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.model = model.to(device)
        self.model.train()
        forward = TrainingForward(self.model)
        if self.world > 1:
            ids = [device.index] if device.type == "cuda" else None
            forward = nn.parallel.DistributedDataParallel(forward, device_ids=ids)
        self.forward = forward
        self.loader_factory = loader_factory
        self.evaluate = evaluate
        self.folder_lock: FolderLock | None = None  # the run's own (hold_training_folder), when the caller holds it
        self.criterion = SetCriterion(  # its matcher's costs are the loss weights, as officially
            None, settings.loss_weights, settings.num_points, settings.oversample_ratio,
            settings.importance_ratio, deep_supervision=settings.deep_supervision,
        )
        self.optimizer = build_optimizer(
            self.model, settings.base_lr, settings.weight_decay, settings.weight_decay_norm,
            settings.weight_decay_embed, settings.backbone_multiplier,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda it: warmup_multistep_factor(it, settings.steps, settings.gamma, settings.warmup_iters,
                                               settings.warmup_factor),
        )
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)
        self.start_iteration = 0
        self.resumed_from: Path | None = None  # the checkpoint `resume` loaded
        self._pending: bool | None = None  # `evaluation_pending`, decided once
        self.warning_count = 0
        self._warned: set[str] = set()
        self._stop_signum: int | None = None  # the stop signal the processes agreed on (``_agree_to_stop``)
        self.mean = torch.tensor(settings.pixel_mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(settings.pixel_std, device=device).view(1, 3, 1, 1)

    def _amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for float32.

        ``auto``: fp16 with the GradScaler on a GPU, as the official trainer (detectron2's AMPTrainer, which needs
        CUDA); float32 on the CPU, where autocast is slower than float32 for this model. ``bf16`` (a deviation from
        the official recipe: no scaler, a wider range, fewer mantissa bits) / ``fp16`` are honoured on any device.
        """
        s = self.settings
        if not s.amp:
            return None
        if s.amp_dtype == "fp16":
            return torch.float16
        if s.amp_dtype == "bf16":
            return torch.bfloat16
        if s.amp_dtype != "auto":
            raise ValueError(f"CLIPVIS.AMP_DTYPE must be auto, bf16 or fp16, not {s.amp_dtype!r}")
        return torch.float16 if self.device.type == "cuda" else None

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def save(self, iteration: int) -> Path:
        """Weights (+ config) and the resume state after ``iteration``; then ``last_checkpoint`` (rank 0)."""
        folder = self.settings.output_dir
        path = folder / checkpoint_name(iteration)
        if self.rank == 0:
            with _folder_held(folder, SAVE_LOCK_WAIT_S, self.folder_lock):  # its temporaries are not a killed run's
                try:
                    self._write_checkpoint(path, iteration)
                except (OSError, RuntimeError, SafetensorError) as error:  # a full disk was a 30-line traceback
                    self._discard_checkpoint(path)
                    raise CheckpointSaveError(folder, path, _save_failure_reason(error),
                                              resume_point(folder)) from None
        if self.world > 1:
            dist.barrier()
        return path

    def _write_checkpoint(self, path: Path, iteration: int) -> None:
        """The weights, then the training state, then ``last_checkpoint`` naming them (rank 0)."""
        save_pretrained(self.model, path)
        state = {
            "iteration": iteration,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "amp_dtype": _AMP_NAMES.get(self.amp_dtype, "fp32"),  # the type a resume with auto keeps
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            "warning_count": self.warning_count,
        }
        tmp = state_path(path).with_name(state_path(path).name + ".tmp")
        # serialised first, then written by Python: a full disk is the OSError it is (torch.save said only
        # "unexpected pos")
        serialised = io.BytesIO()
        torch.save(state, serialised)
        with open(tmp, "wb") as handle:
            handle.write(serialised.getbuffer())
            handle.flush()
            # on disk before its rename, as the weights (write_state_dict) and last_checkpoint are: a crash (power
            # loss) after the renames left an empty or truncated state under its final name
            os.fsync(handle.fileno())
        del serialised
        os.replace(tmp, state_path(path))
        atomic_write_text(path.parent / LAST_CHECKPOINT, path.name)

    @staticmethod
    def _discard_checkpoint(path: Path) -> None:
        """What a failed save of ``path`` wrote: its temporaries, and its weights when its training state is not
        there (a checkpoint --resume cannot take, a model's size on a full disk). last_checkpoint, written last, still
        names the checkpoint before."""
        folder = path.parent
        try:
            names = [entry.name for entry in os.scandir(folder)]
        except OSError:
            names = []
        for name in names:
            if SAVE_TEMPORARY_FILE.fullmatch(name) and (name.startswith((f".{path.name}.tmp", state_path(path).name))
                                                        or name.startswith(f".{Path(LAST_CHECKPOINT).stem}.")):
                (folder / name).unlink(missing_ok=True)
        if not state_path(path).is_file():
            path.unlink(missing_ok=True)

    def resume(self, path: Path | None = None) -> bool:
        """Load a checkpoint (default: the output folder's ``resume_point``) with its optimiser, schedule, scaler and
        RNG state; False when there is none. The metrics recorded after it (by the run that went on before being
        stopped) are dropped when the run starts (``MetricsSink``): the resumed run records them again."""
        path = path if path is not None else resume_point(self.settings.output_dir)
        if path is None or not state_path(path).is_file():
            return False
        from clipvis.model.checkpoint import CheckpointError, read_state_dict

        tensors, _ = read_state_dict(path)
        self.model.load_state_dict(tensors, strict=True)
        try:  # damaged inside (state_damage reads the archive's directory alone): one line, not torch's traceback
            state = torch.load(state_path(path), map_location="cpu", weights_only=False)
        except (OSError, EOFError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as error:
            raise CheckpointError(
                f"{state_path(path)}: the training state cannot be read ({error_reason(error)}); remove it (and "
                f"{path.name}) to resume from the checkpoint before, or start a new run from these weights: "
                f"--weights {path}") from None
        configured = [(group["initial_lr"], group["weight_decay"]) for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._apply_configured_rates(configured)
        self._resume_amp(state)
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.warning_count = int(state.get("warning_count", 0))
        self.start_iteration = int(state["iteration"]) + 1
        self.resumed_from = path
        log.info("resumed from %s at iteration %d", path, self.start_iteration)
        return True

    def _apply_configured_rates(self, configured: list[tuple[float, float]]) -> None:
        """The run's SOLVER.BASE_LR and weight decays (``configured``: each parameter group's base rate and decay as
        this run's settings give them) over those of the loaded optimiser and schedule, which had restored the
        interrupted run's: `--resume SOLVER.BASE_LR=...` was logged and recorded, and trained at the old rate. The
        same settings leave every value as it was (the resumed run is the uninterrupted one)."""
        restored = [(group["initial_lr"], group["weight_decay"]) for group in self.optimizer.param_groups]
        # The rate of the next step from this run's schedule (STEPS, GAMMA, warm-up may have changed too), as
        # LambdaLR computes it: the same arithmetic, so unchanged settings give the restored rates bit for bit.
        factor = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        for group, (base_lr, decay) in zip(self.optimizer.param_groups, configured, strict=True):
            group["initial_lr"], group["weight_decay"], group["lr"] = base_lr, decay, base_lr * factor
        self.scheduler.base_lrs = [base_lr for base_lr, _ in configured]
        self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        changed = next((i for i, (r, c) in enumerate(zip(restored, configured, strict=True)) if r != c), None)
        if changed is not None:
            (lr, decay), (old_lr, old_decay) = configured[changed], restored[changed]
            log.info("resuming with the configured learning rates and weight decays (the first that changed, of %s: "
                     "rate %.3g and decay %.3g, where the run had %.3g and %.3g)",
                     self.optimizer.param_groups[changed].get("name", "a parameter"), lr, decay, old_lr, old_decay)

    def _resume_amp(self, state: dict[str, Any]) -> None:
        """The mixed-precision type the resumed run trains in (``resumed_amp_dtype``) and its gradient scaler: the
        checkpoint's scaler state when both use one; a fresh scaler where the run trained without one (bf16 resumed
        with ``CLIPVIS.AMP_DTYPE=fp16``); the checkpoint's scaler state unused where the run goes on without one."""
        dtype = resumed_amp_dtype(self.settings, self.device, state, self.amp_dtype)
        if dtype != self.amp_dtype:
            log.info("CLIPVIS.AMP_DTYPE=auto: resuming in %s, the mixed precision the run trained in",
                     _AMP_NAMES.get(dtype, "fp32"))
            self.amp_dtype = dtype
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=dtype == torch.float16)
        saved = state.get("scaler") or {}
        if self.scaler.is_enabled():
            if saved:
                self.scaler.load_state_dict(saved)
            else:
                log.info("the checkpoint holds no gradient-scaler state (the run trained without fp16's scaler): "
                         "fp16 goes on with a fresh scaler")

    # ---- one step ----------------------------------------------------------------------------------------------
    def _normalise(self, batch: Batch) -> torch.Tensor:
        images = batch.images.to(self.device, non_blocking=True)
        return normalise_padded(images, batch.image_sizes, self.mean, self.std)

    def step(self, batch: Batch) -> dict[str, float]:
        images = self._normalise(batch)
        targets = [m.to(self.device, non_blocking=True) for m in batch.masks]
        samplers = [RandomPointSampler(sample_generator(self.settings.seed, p, self.device)) for p in batch.positions]
        clipping = GradientClipping(self.settings.clip_type, self.settings.clip_value, self.settings.clip_norm_type)
        result = training_step(self.model, self.forward, self.criterion, self.optimizer, self.scaler, images, targets,
                               samplers, self.amp_dtype, clipping, self.world)
        with warnings.catch_warnings():  # a step the fp16 scaler skipped (inf gradients) still advances the
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()  # schedule, as in the official AMP trainer: PyTorch's warning says nothing more
        return {**result.losses, "grad_norm": result.grad_norm}

    def _report_warnings(self, batch: Batch) -> None:
        warnings = list(batch.warnings)
        if self.world > 1:
            gathered: list[list[str]] = [[] for _ in range(self.world)]
            dist.all_gather_object(gathered, warnings)
            warnings = [w for part in gathered for w in part]
        for message in warnings:
            self.warning_count += 1
            if message not in self._warned and self.rank == 0:
                self._warned.add(message)
                log.warning("warning: %s", message)

    # ---- the loop ----------------------------------------------------------------------------------------------
    def _agree_to_stop(self, requests: StopRequests) -> bool:
        """Whether any process was asked to stop (every process calls this at the same point of an iteration); the
        signal one got (the largest number when they got different ones) becomes every process' ``_stop_signum``,
        so each reports and exits with the signal some process received, not only the one that got it."""
        if self.world == 1:
            self._stop_signum = requests.signum
            return requests.requested
        number = torch.tensor([requests.signum or 0], dtype=torch.int64,
                              device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(number, op=dist.ReduceOp.MAX)
        self._stop_signum = int(number.item()) or None
        return self._stop_signum is not None

    def _stopped(self, requests: StopRequests, iteration: int, checkpoint: Path) -> TrainingStopped:
        signum = self._stop_signum or requests.signum or signal.SIGINT
        if self.rank == 0:
            log.info("stopped by %s after iteration %d; checkpoint %s", signal.Signals(signum).name, iteration + 1,
                     checkpoint, extra={"file_only": True})
        return TrainingStopped(signum, checkpoint, iteration, saved=True)

    def train(self, requests: StopRequests | None = None) -> Path:
        """Run from ``start_iteration`` to ``max_iter``; the path of the final checkpoint.

        A stop signal (Ctrl-C, SIGTERM, SIGHUP) ends the run at the end of the iteration it arrived in, with a
        checkpoint there, by raising :class:`TrainingStopped` (see ``stopping``). ``requests``: the caller's, already
        entered (it held the signals since before the data loaded: one recorded meanwhile stops after the first
        iteration), else the loop's own."""
        announce = write_to_stderr if self.rank == 0 else lambda line: None
        if requests is not None:
            requests.announce = announce
            return self._loop(requests)
        with StopRequests(announce=announce) as requests:
            return self._loop(requests)

    def _evaluate_at(self, iteration: int, path: Path | None, sink: MetricsSink, requests: StopRequests) -> None:
        """The periodic evaluation of the checkpoint of ``iteration`` (rank 0; the others wait for it). A stop while
        it runs loses only the evaluation: the resumed run does it first (``evaluation_pending``)."""
        if self.rank == 0:
            result = None
            try:
                with requests.immediately():
                    result = self.evaluate(path, iteration)
            except TrainingStopped:  # the checkpoint it evaluates is saved: only the evaluation is lost
                log.warning("warning: the evaluation at iteration %d was interrupted", iteration + 1)
            if result is not None:
                sink.write({"iteration": iteration, **result})
                log.info("evaluation at iteration %d: %s", iteration + 1, json.dumps(result))
        if self.world > 1:
            dist.barrier()  # the other ranks wait for rank 0's evaluation

    def evaluation_pending(self) -> bool:
        """Whether the run resumes right after an evaluation point whose evaluation is not in metrics.jsonl (a stop
        interrupted it: hunter 84 found it never redone). Rank 0 decides, from its metrics.jsonl, and tells the others
        (each reading its own copy could disagree and hang at the barrier); decided once."""
        if self._pending is None:
            decision = [self._evaluation_pending_here(self.resumed_from) if self.rank == 0 else False]
            if self.world > 1:
                dist.broadcast_object_list(decision, src=0)
            self._pending = bool(decision[0])
        return self._pending

    def _evaluation_pending_here(self, path: Path | None) -> bool:
        previous = self.start_iteration - 1
        if previous < 0 or not self._evaluates_after(previous):
            return False
        if path is None or path.name != checkpoint_name(previous):
            return False
        return not evaluation_recorded(self.settings.output_dir, previous)

    def _evaluates_after(self, iteration: int) -> bool:
        """Whether the checkpoint of ``iteration`` is evaluated (``evaluated_after``)."""
        s = self.settings
        return evaluated_after(iteration, s.eval_period, s.max_iter, self.evaluate is not None)

    def _divergence_message(self, loss: float, iteration: int, saved: list[tuple[int, Path]]) -> str:
        """What a non-finite loss at ``iteration`` (0-based) ends the run with: the checkpoints this run wrote in the
        iterations just before (the last SOLVER.CHECKPOINT_PERIOD), whose weights may have diverged already (a rate
        that blows the weights up gives a finite loss once more), and where to start again instead of --resume, which
        continues from the newest of them (and diverged again, with a lower rate too)."""
        s = self.settings
        suspect = [path for done, path in saved if done >= iteration - max(s.checkpoint_period, 1)]
        said = f"the loss became {loss} at iteration {iteration + 1} (lower SOLVER.BASE_LR?)"
        if not suspect:
            return said
        names = ", ".join(path.stem for path in suspect)
        earlier = [path for path in checkpoints_in(s.output_dir) if path.name < suspect[0].name]
        start = (f"from an earlier checkpoint (--weights {earlier[-1]}, another --output-dir)" if earlier else
                 "from scratch (another --output-dir)")
        return (f"{said}; {names}, written in the iterations just before, may hold diverged weights (--resume would "
                f"continue from {suspect[-1].stem}): start again {start} with a lower rate, rather than --resume")

    def _loop(self, requests: StopRequests) -> Path:
        s = self.settings
        if self.rank == 0 and s.eval_period > 0 and self.evaluate is None:
            log.warning("warning: TEST.EVAL_PERIOD is %d but there is no test set (DATASETS.TEST or "
                        "CLIPVIS.TEST_DATA): nothing is evaluated, and checkpoints are saved every "
                        "SOLVER.CHECKPOINT_PERIOD (%d) iterations and at the end", s.eval_period, s.checkpoint_period)
        sink = MetricsSink(s.output_dir, self.rank == 0, self.start_iteration)
        progress = ProgressLine(s.max_iter, self.start_iteration, self.rank == 0)
        batches = iter(self.loader_factory(self.start_iteration))
        last_path = read_last_checkpoint(s.output_dir)
        saved: list[tuple[int, Path]] = []  # the checkpoints this run wrote: (iteration, path)
        window: list[tuple[float, float]] = []
        started = time.perf_counter()
        try:
            if self.evaluation_pending():  # the one a stop interrupted (its checkpoint is the resume point)
                self._evaluate_at(self.start_iteration - 1, self.resumed_from, sink, requests)
                if self._agree_to_stop(requests):
                    raise self._stopped(requests, self.start_iteration - 1, self.resumed_from)
            for iteration in range(self.start_iteration, s.max_iter):
                t0 = time.perf_counter()
                batch = next(batches)
                t1 = time.perf_counter()
                self._report_warnings(batch)
                lr = self.scheduler.get_last_lr()[0]  # the rate this step uses (the step then moves the schedule on)
                metrics = self.step(batch)
                if not math.isfinite(metrics["total_loss"]):
                    raise FloatingPointError(self._divergence_message(metrics["total_loss"], iteration, saved))
                t2 = time.perf_counter()
                window.append((t1 - t0, t2 - t0))
                window = window[-max(s.log_period, 1):]
                data_time = sum(w[0] for w in window)
                total_time = sum(w[1] for w in window)
                its = len(window) / total_time if total_time > 0 else 0.0
                eta = (s.max_iter - iteration - 1) / its if its > 0 else 0.0
                info = (f"loss {metrics['total_loss']:.3f}  {its:.2f} it/s  data {100 * data_time / total_time:.0f}%  "
                        f"lr {lr:.2e}")
                progress.update(iteration, info)
                last = iteration + 1 == s.max_iter
                if self.rank == 0 and ((iteration + 1) % max(s.log_period, 1) == 0 or last):
                    record = {
                        "iteration": iteration, "lr": lr, **metrics,
                        "data_time": data_time / len(window), "time": total_time / len(window),
                        "iterations_per_second": its, "data_wait_share": data_time / total_time,
                        "eta_seconds": eta, "skipped_samples": self.warning_count,
                    }
                    sink.write(record)
                    if progress.progress is None:
                        log.info("iter %d/%d  %s  eta %s  skipped %d", iteration + 1, s.max_iter, info,
                                 _format_eta(eta), self.warning_count)
                stop = self._agree_to_stop(requests) and not last
                due_eval = self._evaluates_after(iteration) and not stop  # a stop ends the run without it
                if (iteration + 1) % s.checkpoint_period == 0 or last or due_eval or stop:
                    last_path = self.save(iteration)
                    saved.append((iteration, last_path))
                if stop:
                    raise self._stopped(requests, iteration, last_path)
                if due_eval:
                    self._evaluate_at(iteration, last_path, sink, requests)
                    if self._agree_to_stop(requests):  # at the last iteration too: its evaluation is not recorded,
                        raise self._stopped(requests, iteration, last_path)  # and --resume does it
        finally:
            progress.close()
            sink.close()
        log.info("finished %s in %.1f s; %s skipped; weights: %s",
                 counted(s.max_iter - self.start_iteration, "iteration"), time.perf_counter() - started,
                 counted(self.warning_count, "sample"), last_path)
        return last_path
