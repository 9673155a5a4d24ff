"""How the processes of a run agree: each rank's outcome of a step it takes alone meets every other rank's (one
error said once), their settings and data are compared, and they take rank 0's starting and resume checkpoints."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch.distributed as dist

from clipvis.cli.distributed import RanksDifferError, stop_in_silence
from clipvis.cli.json_io import parse_json
from clipvis.cli.train.config import ConfigError, TrainConfig
from clipvis.cli.train.model_building import ModelBuildError
from clipvis.cli.train.stopping import StopRequests, TrainingStopped, ignore_stop_signals


class ErrorOfOneRank(RuntimeError):
    """Under several processes: an error this rank found and not every rank did (its own copy of the data or of
    the weights missing): ``rank N: <its message>``, said by this rank."""


class RankZerosCheckError(ConfigError):
    """A check rank 0 alone makes (the output folder's lock): said as the command alone says it, without the
    ``rank 0:`` that names the rank of an error no other rank found (under torchrun the folder-in-use line read
    ``rank 0: DIR is in use by ...``)."""


@contextlib.contextmanager
def checked_by_rank_0_alone() -> Iterator[None]:
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
def taken_alone(rank: int, world: int, requests: StopRequests | None = None) -> Iterator[None]:
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


def check_ranks_agree(world: int, what: str, mine: dict[str, str]) -> None:
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


# Where the data is: a machine may have its copy elsewhere. The data itself is compared once loaded (``data_of``).
# Nor need the ranks agree on where the starting weights are (DistributedDataParallel gives every rank rank 0's
# parameters when it wraps the model) or where the run's folder is (rank 0 alone writes there); the CLIP config is
# compared by its contents.
_DATA_LOCATIONS = ("CLIPVIS.TRAIN_DATA", "CLIPVIS.DATA_ROOT", "CLIPVIS.TEST_DATA", "MODEL.WEIGHTS", "OUTPUT_DIR")


def settings_of(config: TrainConfig) -> dict[str, str]:
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


def data_of(sources: list[Any]) -> dict[str, str]:
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


def as_rank_0_chose(given: str | None, mine: str | None, rank_0s: str | None) -> str | None:
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


def as_rank_0_resumes(output_dir: Path, mine: Path | None, rank_0s: str | None) -> Path | None:
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
    from clipvis.cli.train.trainer import has_training_state

    same = output_dir / rank_0s
    if not same.is_file() or not has_training_state(same):
        newest = f", its newest: {mine.name}" if mine is not None else ""
        raise ConfigError(f"{output_dir}: --resume: no {rank_0s} with its training state here, the checkpoint rank 0 "
                          f"resumes from{newest}; every process must see the run's folder")
    return same
