"""The processes of a run: one under torchrun (the process group formed once every rank is there) and the ones
``--num-gpus`` spawns on this machine (started, joined, stopped by a signal, their errors as one line)."""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing.connection
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from clipvis.cli.distributed import (
    RankLost,
    form_process_group,
    lost_a_peer,
    meet_before_the_group,
    rank_lost,
    stop_in_silence,
    visible_gpu,
)
from clipvis.cli.gc_pause import freeze_before_exit
from clipvis.cli.train.rank_agreement import ErrorOfOneRank, SaidByAnotherRank
from clipvis.cli.train.stopping import TrainingStopped, ignore_stop_signals
from clipvis.cli.train.trainer import resume_point
from clipvis.weights.training_folder import read_last_checkpoint

if TYPE_CHECKING:
    from clipvis.cli.train.run import RunRequest

log = logging.getLogger("clipvis.train")


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
        distributed_main(request, quiet=lambda: stop_signal.value == _PEER_LOST)
    except KeyboardInterrupt as interrupt:  # spawn ends a process on it with status 0 and no word: told to launch()
        with stop_signal.get_lock():  # kept quiet for the processes that are still to end, once one is lost
            if stop_signal.value != _PEER_LOST:
                stop_signal.value = max(stop_signal.value, int(getattr(interrupt, "signum", signal.SIGINT)))
    finally:  # the process ends here (spawn's, not the launcher's): its exit need not scan torch's objects
        freeze_before_exit()


def distributed_main(request: RunRequest, quiet: Callable[[], bool] | None = None) -> Path:
    """One process of a run under torchrun or ``--num-gpus``; ``quiet``: see :class:`StopRequests`."""
    from clipvis.cli.train.run import run_training  # (run.py imports this module: its launch() starts the processes)

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
        result = _run_training_dropping_its_frames(run_training, request, rank, world, local_rank, quiet)
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
        # what still holds the group (see _run_training_dropping_its_frames) goes before it does; here, not as the
        # exception leaves the run: a rank that lost its peer ignores torchrun's SIGTERM first (a collection of the
        # whole process takes a while, and that signal cut its line short), and a saved stop collects before its barrier
        gc.collect()
        dist.destroy_process_group()


def _run_training_dropping_its_frames(run_training: Callable[..., Path], *args: Any) -> Path:
    """``run_training(*args)``; an exception on its way out of it (a stop, an error) leaves with the frames of the run
    cleared. Their locals (the DDP wrapper, the step's reference cycles) hold the process group: kept alive by the
    exception through ``destroy_process_group``, that ended nothing, and once the exception was dropped they were
    cyclic garbage the exit's gc freeze (`freeze_before_exit`) never collects, so the group's gloo threads ran into
    the interpreter's shutdown, where one still dropping a collective's tensors ended the process by SIGABRT. The
    exceptions it was raised from (``__cause__``/``__context__``, the run's own) are cleared alike; the caller's are
    not touched."""
    callers = sys.exc_info()[1]  # an exception the caller is handling: the run's get it as their __context__
    try:
        return run_training(*args)
    except BaseException as error:
        pending: BaseException | None = error
        seen: set[int] = set()
        while pending is not None and pending is not callers and id(pending) not in seen:
            seen.add(id(pending))
            traceback.clear_frames(pending.__traceback__)  # the frames still running (this one) are left as they are
            pending = pending.__cause__ or pending.__context__
        raise


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


def train_in_spawned_processes(request: RunRequest) -> Path | None:
    """Spawn ``request.num_processes`` local processes (``--num-gpus``), each one rank of the run, and wait for them;
    the final checkpoint path."""
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
