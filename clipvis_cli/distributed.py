"""Many devices, many machines: deterministic shards of an input list, and runs under `torchrun`.

``--shard K/N`` keeps input K of every N (K counted from 0) of the inputs sorted by path, so N independent jobs
(SLURM job arrays, Kubernetes indexed jobs, GNU parallel) split a folder between them without talking to each other;
every shard writes into the same output root and ``--skip-existing`` makes each restartable.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the environment) every process takes its share of
the inputs (of shard K/N when ``--shard K/N`` is given too) and its own GPU (``cuda:LOCAL_RANK``). The share is not
fixed in advance: rank 0 orders the inputs, largest first, and each process takes the next one whenever it is free
(``DistributedRun.claimed``: a counter in the job's own store), so one long video or a restart where most inputs are
done already does not leave the other GPUs idle. The processes meet through a ``gloo`` process group (CPU objects
only: it works whatever backend the tensors would use) to agree on the inputs and, at the end, on the summary and
the exit status.

Every rank joins the group before anything that could fail on it alone (``DistributedRun.joined``): a rank that never
joined would leave the others waiting in the group's start for days, and one that left early would leave them in a
gather that fails. A rank that stops with an error (or a Ctrl-C) sends ``RankStopped`` to the gather the others make
next, where they raise ``OtherRankFailed`` and stop too. A rank that ends without a word (kill -9, the OOM killer, a
machine down) makes the collective the others are in, or come to, fail: they raise ``RankLost`` and stop too. When
every rank learns from one gather that they differ in what they must share (the model, the vocabulary, the settings),
each raises ``RanksDifferError`` and they stop without another gather. Ctrl-C, SIGTERM and SIGHUP are held while a
collective runs and raised once it is complete (``signals_held``).
"""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

T = TypeVar("T")

# Ranks wait for each other only at the end of their share, which may take days on a large folder.
COLLECTIVE_TIMEOUT = timedelta(days=7)
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0 <= index < count)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= K < N (K counts from 0)")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` -> Shard(K, N). Raises ValueError with a one-line reason."""
        match = _SHARD.match(text)
        if match is None:
            raise ValueError(f"shard {text!r}: expected K/N, e.g. 0/4 (K counts from 0)")
        return cls(int(match.group(1)), int(match.group(2)))

    def select(self, items: Sequence[T], key: Callable[[T], str]) -> list[int]:
        """Positions (in ``items``' own order) of the items in this shard: every ``count``-th of the items sorted
        by ``key``, starting at ``index``. Deterministic whatever order the items come in."""
        ranked = sorted(range(len(items)), key=lambda i: (key(items[i]), i))
        return sorted(ranked[self.index :: self.count])


def visible_gpu(local_rank: int, visible: int) -> int:
    """The index among this process' ``visible`` CUDA devices of the GPU for the process with ``local_rank``.

    torchrun's usual layout shows every process all GPUs of its machine, one per process: ``cuda:LOCAL_RANK``. A
    scheduler may instead give each process its own GPUs through ``CUDA_VISIBLE_DEVICES`` (SLURM's
    ``--gpus-per-task``, one pod per rank on Kubernetes): LOCAL_RANK still counts the processes, but the process sees
    fewer devices, so its GPU is ``LOCAL_RANK`` modulo their number (``cuda:0`` with one visible GPU), not an
    ordinal that does not exist there.
    """
    if visible < 1:
        raise ValueError(f"no visible CUDA device for local rank {local_rank}")
    return local_rank % visible


class InputsDifferError(ValueError):
    """Under torchrun: this rank's input list is not rank 0's."""


def _first_difference(names: Sequence[str], main_names: Sequence[str]) -> str:
    """``", input N differs: X here, Y on rank 0"``: where two lists first differ (nothing when one begins the
    other)."""
    for position, (here, there) in enumerate(zip(names, main_names, strict=False)):
        if here != there:
            return f", input {position + 1} differs: {here} here, {there} on rank 0"
    return ""


class OtherRankFailed(RuntimeError):
    """Under torchrun: another rank stopped with an error (and reported why itself), or was interrupted
    (``interrupted``: it, or this rank too, got Ctrl-C, SIGTERM or SIGHUP); this rank stops too. ``said``: the
    command has told the user already (its progress reporter, before the batch's summary)."""

    def __init__(self, message: str, interrupted: bool = False) -> None:
        super().__init__(message)
        self.interrupted = interrupted
        self.said = False


class RankLost(OtherRankFailed):
    """Under torchrun: a collective failed because another process is gone without a word (kill -9, the OOM killer,
    its machine down), so it could not say why; this rank stops too. ``speaks``: this rank is the one to say so (rank
    0, or the other rank of two: only then is it known which rank is gone); ``done``: what this rank had completed
    that the user should know of (e.g. a results.json written), set by the command."""

    def __init__(self, message: str, speaks: bool) -> None:
        super().__init__(message)
        self.speaks = speaks
        self.done: str | None = None


class RanksDifferError(ValueError):
    """Under torchrun: every rank learnt from one gather that some rank differs from the others in what they must
    share (``DistributedRun.joined`` makes no further gather: each rank knows); rank 0 says what."""


@dataclass(frozen=True)
class RankStopped:
    """What a rank that stopped with an error, or was interrupted, sends to the gather the other ranks make next."""

    rank: int
    interrupted: bool = False


def is_interruption(error: BaseException) -> bool:
    """Ctrl-C, SIGTERM or SIGHUP (KeyboardInterrupt, or the exit status 130 a command turned it into)."""
    return isinstance(error, KeyboardInterrupt) or getattr(error, "exit_code", None) == 130


# The signals a command ends on as on Ctrl-C (the launcher raises KeyboardInterrupt for each).
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


@contextmanager
def signals_held() -> Iterator[list[int]]:
    """Hold Ctrl-C, SIGTERM and SIGHUP for the body (in the main thread; elsewhere nothing changes); yields the list
    of those that arrived, for the caller to raise again (``deliver``).

    A collective must not be left half done: ``all_gather_object`` is two collectives, and a rank that Ctrl-C took
    out between them would pair its next gather with the other ranks' second half ("pickle data was truncated").
    A rank blocked in a collective does not see a signal before the collective returns anyway (the handler runs in
    Python), so holding it costs no responsiveness."""
    held: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield held
        return
    previous = {}
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            number = getattr(signal, name)
            if signal.getsignal(number) is signal.SIG_IGN:  # ignored (nohup): not held, not delivered later
                continue
            previous[number] = signal.signal(number, lambda signum, frame: held.append(signum))
    try:
        yield held
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def ignore_stop_signals() -> None:
    """From now on, in the main thread: Ctrl-C, SIGTERM and SIGHUP do nothing. For a process on its way out whose last
    word is being said or was said: a command stopped by a signal (an impatient user's Ctrl-C pressed again: Python's
    handler, back in place, killed the process by SIGINT on its way out instead of the exit status 130, with
    tracebacks after the summary), or a rank stopping because another is gone (torchrun's agent sends it SIGTERM at
    about the moment its collective fails, and the signal must not cut short the one line it prints on its way out,
    "clipvis: interrupted" instead)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in STOP_SIGNALS:
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)


def deliver(held: list[int]) -> None:
    """Raise the signals ``signals_held`` held, now, through their own handlers (a KeyboardInterrupt in a command)."""
    for signum in dict.fromkeys(held):
        signal.raise_signal(signum)


@dataclass
class DistributedRun:
    """This process' place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int
    #: which machine (torchrun's ``GROUP_RANK``, its node rank): the processes of one share its stdout and stderr
    machine: int = 0
    _last_gather_done: bool = field(default=False, init=False, repr=False, compare=False)
    _others_stopped: bool = field(default=False, init=False, repr=False, compare=False)
    #: Set when this rank stopped with an error and rank 0 stopped too at the same gather (a usage error every rank
    #: finds in the same command line): rank 0 alone need say it.
    main_stopped_too: bool = field(default=False, init=False, repr=False, compare=False)
    _queues_made: int = field(default=0, init=False, repr=False, compare=False)
    _queue: tuple[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> DistributedRun | None:
        """The torchrun environment, or None outside torchrun (or with a single process)."""
        env = os.environ if environ is None else environ
        def whole_number(name: str, default: str) -> int:
            value = env.get(name, default)
            try:
                return int(value)
            except ValueError:  # int()'s own words named no variable ("invalid literal for int() ...: ''")
                raise ValueError(f"torchrun environment: {name}={value!r} is not a whole number") from None

        world_size = whole_number("WORLD_SIZE", "1")
        rank = whole_number("RANK", "0")
        local_rank = whole_number("LOCAL_RANK", str(rank))
        if world_size <= 1:
            return None
        if not 0 <= rank < world_size:
            raise ValueError(f"torchrun environment: RANK={rank} outside WORLD_SIZE={world_size}")
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
        if missing:  # the process group's rendezvous needs them (a traceback from torch.distributed otherwise)
            raise ValueError(
                f"torchrun environment: WORLD_SIZE={world_size} but {' and '.join(missing)} not set; torchrun sets "
                "WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (unset WORLD_SIZE to run one process)"
            )
        try:
            machine = int(env.get("GROUP_RANK", "0"))
        except ValueError:
            machine = 0  # only which machine says a once-per-machine line depends on it
        return cls(rank, world_size, local_rank, machine)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: str, visible_gpus: int) -> str:
        """``auto``/``cuda`` become this process' own GPU (``visible_gpu``: ``cuda:LOCAL_RANK`` when it sees all of
        the machine's) when it sees any; an explicit ``cuda:N`` or ``cpu`` is kept."""
        if requested in ("auto", "cuda") and visible_gpus > 0:
            return f"cuda:{visible_gpu(self.local_rank, visible_gpus)}"
        return requested

    def start(self) -> None:
        """Join the job's gloo process group (rendezvous from torchrun's MASTER_ADDR / MASTER_PORT)."""
        import torch.distributed as dist

        if not dist.is_initialized():
            form_process_group("gloo", COLLECTIVE_TIMEOUT, rank=self.rank, world_size=self.world_size)

    @contextmanager
    def joined(self) -> Iterator[DistributedRun]:
        """Be in the job's process group for the body, this process' GPU the current one (streams, events); leave
        together after a normal end. Joining comes first, whether this machine's CUDA works or not. When the body
        raises, first send ``RankStopped`` to the gather the other ranks make next (unless the last gather was made,
        ``last_gather``, or this rank is stopping because another did), so that they end with this rank."""
        self.start()
        try:
            gpus = visible_cuda_devices()
            if gpus:
                import torch

                torch.cuda.set_device(visible_gpu(self.local_rank, gpus))
            yield self
        except (OtherRankFailed, RanksDifferError):  # every rank that is still there knows: no gather to tell them
            self.stop(synchronise=False)
            raise
        except BaseException as error:
            try:  # a rank gone without a word makes this gather fail too: RankLost instead of this rank's error
                if not self._last_gather_done and not self._others_stopped:
                    values = self.gather(RankStopped(self.rank, interrupted=is_interruption(error)))
                    self.main_stopped_too = not self.is_main and isinstance(values[0], RankStopped)
            finally:
                self.stop(synchronise=False)
            raise
        self.stop()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank; returns once all ranks got here.
        Raises OtherRankFailed when another rank sent ``RankStopped`` instead (see ``joined``). A stop signal that
        arrives meanwhile is raised once the gather is complete on this rank (``signals_held``)."""
        return self._gather(value, last=False)

    def _gather(self, value: Any, last: bool) -> list[Any]:
        with signals_held() as held:
            try:
                values = self._exchange(value)
            except RuntimeError:  # a signal held meanwhile is dropped: this rank stops anyway
                values = None
        if values is None:
            raise self._lost() from None
        stopped = [v for v in values if isinstance(v, RankStopped) and v.rank != self.rank]
        if stopped:
            self._others_stopped = True  # they left the group: no gather would meet this rank's RankStopped
        if stopped and not isinstance(value, RankStopped):
            interrupted = any(v.interrupted for v in stopped) or bool(held)
            what = "was interrupted" if stopped[0].interrupted else "stopped with an error"
            raise OtherRankFailed(f"rank {stopped[0].rank} {what}", interrupted=interrupted)
        self._last_gather_done = self._last_gather_done or last
        deliver(held)
        return values

    def _exchange(self, value: Any) -> list[Any]:
        """The collective under ``gather``: every rank's ``value``, over the process group."""
        import torch.distributed as dist

        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def from_main(self, value: T | None) -> T:
        """Rank 0's ``value`` on every rank (the others pass None). A gather of nothing first, where a rank that
        stopped is noticed as in ``gather``, then one broadcast: the value crosses once to each rank, where a gather
        of it would send every rank a copy of every rank's object padded to the largest (a list of 100,000 inputs to
        160 ranks: 160 copies of it in each)."""
        self.gather(None)
        lost = False
        with signals_held() as held:
            try:
                value = self._broadcast(value if self.is_main else None)
            except RuntimeError:
                lost = True
        if lost:
            raise self._lost() from None
        deliver(held)
        return value

    def _lost(self) -> RankLost:
        """The collective failed (gloo's "Connection closed by peer", a rank that never came): another process is
        gone without sending ``RankStopped``. Which one gloo does not say; of two processes it is the other."""
        self._others_stopped = True  # no gather would meet this rank's RankStopped
        ignore_stop_signals()
        return rank_lost(self.rank, self.world_size)

    def _broadcast(self, value: Any) -> Any:
        """The collective under ``from_main``: rank 0's ``value``, over the process group."""
        import torch.distributed as dist

        objects = [value]
        dist.broadcast_object_list(objects, src=0)
        return objects[0]

    def largest_first(
        self, names: Sequence[str], positions: Sequence[int], size: Callable[[int], int]
    ) -> Iterator[int]:
        """The ``positions`` (into ``names``, the job's whole input list) this rank takes, from rank 0's order of them:
        largest ``size`` first, ties in ``positions``' order, one at a time as this rank is free (``claimed``).

        Made now (``from_main``): rank 0's order and the names it saw. A rank that does not see the same ``names`` (a
        folder still being copied, a machine with other files) raises InputsDifferError: the ranks would not take the
        same inputs for the same positions."""
        plan = self.from_main((list(names), sorted(positions, key=lambda p: -size(p))) if self.is_main else None)
        main_names, order = plan
        if list(names) != main_names:
            raise InputsDifferError(
                f"rank {self.rank} finds {len(names)} input(s) and rank 0 finds {len(main_names)}"
                + _first_difference(names, main_names)
                + "; every process must see the same inputs (a folder still being copied?)"
            )
        return self.claimed(order)

    def claimed(self, order: Sequence[T]) -> Iterator[T]:
        """The items of ``order`` (the same list on every rank, e.g. rank 0's by ``from_main``) that this rank takes:
        each time it asks for one it gets the next that no rank took yet, so a rank that is free takes the next item
        whichever rank was given the previous ones. Every item goes to exactly one rank. Every rank makes its queues
        in the same order (their keys are numbered). The job's progress over this queue is ``input_ended`` and
        ``inputs_ended``."""
        number = self._queues_made
        self._queues_made += 1
        self._queue = (f"clipvis/ended/{number}", len(order))
        return self._take(f"clipvis/queue/{number}", order)

    def _take(self, key: str, order: Sequence[T]) -> Iterator[T]:
        while (taken := self._add(key, 1) - 1) < len(order):
            yield order[taken]

    def input_ended(self) -> tuple[int, int]:
        """Count one input of the last queue (``claimed``) as ended on this rank (complete, skipped or failed);
        ``(ended, total)``: how many of its inputs all ranks have ended now, of how many."""
        if self._queue is None:
            raise RuntimeError("input_ended before a queue was made")
        key, total = self._queue
        return self._add(key, 1), total

    def inputs_ended(self) -> tuple[int, int] | None:
        """``(ended, total)``: how many inputs of the last queue all ranks have ended so far, of how many; None before
        a queue was made. One round trip to the store: fine once a second, from any thread."""
        if self._queue is None:
            return None
        key, total = self._queue
        return self._add(key, 0), total

    def first_on_this_machine(self, event: str) -> bool:
        """Whether this rank is the first process of its machine to find ``event`` (such as stdout's reader gone),
        which they all find alike and need say once: they share the machine's stdout and stderr. True too where the
        job's store cannot be reached (a line said twice rather than never)."""
        try:
            return self._add(f"clipvis/first/{event}/{self.machine}", 1) == 1
        except (RuntimeError, OSError, ValueError):
            return True

    def _add(self, key: str, amount: int) -> int:
        """Add ``amount`` to the job's counter ``key`` (0 before the first add) and return its new value, atomically
        over all ranks. The counters live in the store torchrun's rendezvous made for the process group (a new one on
        every restart of the job); its client serialises the calls of this process' threads.

        Raises RankLost when the store is gone (torchrun's agent, which hosts it, killed: "Broken pipe"), in place
        of the store client's error and its C++ traceback: this rank can take no further input, nor count one."""
        try:
            return self._store_add(key, amount)
        except (RuntimeError, OSError):  # torch.distributed.DistNetworkError, DistStoreError: RuntimeErrors
            raise self._store_lost() from None

    def _store_add(self, key: str, amount: int) -> int:
        """The store call under ``_add``."""
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store().add(key, amount)

    def _store_lost(self) -> RankLost:
        """The job's store cannot be reached. No gather tells the others (``joined``): they find the store gone at
        their next input, or this rank gone at their last gather, and stop with one line then. Every rank that finds
        it says so (the store's host is gone, so no rank is known to say it)."""
        self._others_stopped = True
        return RankLost(f"rank {self.rank} lost the job's store (torchrun's agent killed?)", speaks=True)

    def last_gather(self, value: Any) -> list[Any]:
        """``gather`` for the last time in the body of ``joined``: an error after it (a Ctrl-C held during it
        included) is this rank's own."""
        return self._gather(value, last=True)

    def stop(self, synchronise: bool = True) -> None:
        """Leave the process group. ``synchronise``: first wait until every rank got here (the normal end), so no
        rank tears gloo down while another is still finishing a collective with it (that aborted a rank at exit,
        "terminate called without an active exception"); after an error, leave at once."""
        import torch.distributed as dist

        if dist.is_initialized():
            if synchronise:
                with signals_held() as held:
                    try:
                        dist.barrier()
                    except RuntimeError:  # a rank left after the last gather, on an error or a Ctrl-C of its own
                        pass
                dist.destroy_process_group()
                deliver(held)
                return
            dist.destroy_process_group()


# torch modules whose functions take the default process group as a default argument (``group=group.WORLD`` in
# torch/distributed/nn/functional.py), evaluated once, as the module is imported. One imported while a group exists
# (open_clip imports torchvision, torchvision torch._dynamo, and that this module: the model's first build) kept that
# group for the rest of the process: ``destroy_process_group`` ended nothing, and its gloo threads ran on into the
# interpreter's shutdown. A gloo worker still releasing its last collective's tensors then (a busy machine: a stop
# right after a collective) needed the interpreter's lock, Python ended that thread from under C++, and the process
# died by SIGABRT ("terminate called without an active exception") instead of by the user's SIGTERM.
_MODULES_HOLDING_THE_GROUP = ("torch.distributed.nn.functional",)


def form_process_group(backend: str, timeout: timedelta, **options: Any) -> None:
    """``torch.distributed.init_process_group(backend, timeout=timeout, **options)``, once the modules that would
    hold the group for good are imported (`_MODULES_HOLDING_THE_GROUP`, their defaults then None: the group in use
    when called), so that ``destroy_process_group`` ends it: its threads are joined there, not left to the
    interpreter's exit."""
    import importlib

    import torch.distributed as dist

    for name in _MODULES_HOLDING_THE_GROUP:
        importlib.import_module(name)
    dist.init_process_group(backend, timeout=timeout, **options)


def rank_lost(rank: int, world_size: int) -> RankLost:
    """What rank ``rank`` of ``world_size`` says when another process of the job is gone without a word. Which one
    gloo does not say; of two processes it is the other."""
    who = f"rank {1 - rank}" if world_size == 2 else "another process"
    return RankLost(f"{who} ended without a word (killed? out of memory?)", speaks=rank == 0 or world_size == 2)


# How gloo says that the other end of a connection is gone (a process killed, its machine down).
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def lost_a_peer(error: BaseException) -> bool:
    """Whether ``error``, raised where a collective runs (an all-reduce, a barrier, DistributedDataParallel's
    gradient all-reduce in ``backward``), is gloo's word that another process of the job is gone, rather than an
    error of this process' own."""
    message = str(error)
    return isinstance(error, RuntimeError) and "gloo" in message and any(gone in message for gone in _PEER_GONE)


def visible_cuda_devices() -> int:
    """How many CUDA devices this process sees (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


# torchrun ends every worker as soon as one exits with an error: a worker that stops in silence, because another says
# why, waits this long first, or it could take the one that says it down before its line is printed (seen under load).
SILENT_STOP_GRACE_S = 5.0


def stop_in_silence() -> None:
    """Wait ``SILENT_STOP_GRACE_S`` before this worker ends without a word (another says why)."""
    import time

    time.sleep(SILENT_STOP_GRACE_S)


def is_later_rank(environ: dict[str, str] | None = None) -> bool:
    """Whether this process is one of several torchrun started (``WORLD_SIZE`` above 1) and not rank 0: work that
    one process does for the job (scoring a results file) is left to rank 0. ``RANK`` alone is no job: launchers that
    set it for a program of their own reach a clipvis it runs."""
    env = os.environ if environ is None else environ
    try:
        return int(env.get("WORLD_SIZE", "1")) > 1 and int(env.get("RANK", "0")) != 0
    except ValueError:  # DistributedRun.from_env says what is wrong with the environment
        return False


def repeats_a_first_process(environ: dict[str, str] | None = None) -> bool:
    """Whether this process is a torchrun worker that its machine's first worker (``LOCAL_RANK`` 0) repeats: every
    worker of a machine is started with the same command line, in the same folder, so a usage error found before
    the job starts is found by each alike and need be said once per machine, by the first."""
    env = os.environ if environ is None else environ
    try:
        return int(env.get("WORLD_SIZE", "1")) > 1 and int(env.get("LOCAL_RANK", "0")) != 0
    except ValueError:  # DistributedRun.from_env says what is wrong with the environment
        return False


# Under torchrun, where the ranks meet before the process group forms (`meet_before_the_group`): keys on torchrun's
# own store, which lives as long as the job, per restart of the job (``TORCHELASTIC_RESTART_COUNT``) and per
# clipvis command the ranks run in it (a script running `clipvis train` twice under one torchrun: each rank counts
# its own commands, so the second's meeting is not the first's). A variable so that tests running several cases in
# one job can give each its own.
BEFORE_GROUP_KEYS = "clipvis/before-group"
_BEFORE_GROUP_POLL_S = 0.5


def _agent_store() -> Any | None:
    """torchrun's store, as a client (``TORCHELASTIC_USE_AGENT_STORE``: the launcher serves it at MASTER_ADDR and
    MASTER_PORT before its workers start, so connecting waits for no rank); None elsewhere (another launcher, whose
    store rank 0 serves only once it forms the group, or ``--num-gpus``) or where it cannot be reached."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    try:
        from torch.distributed import TCPStore

        return TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                        timeout=timedelta(seconds=30))
    except (KeyError, ValueError, RuntimeError):
        return None


def _meeting_keys(store: Any, rank: int) -> str:
    """The prefix of this command's meeting keys: the job's restart and the number of this rank's command in it."""
    job = f"{BEFORE_GROUP_KEYS}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
    return f"{job}/{store.add(f'{job}/commands-of-rank-{rank}', 1)}"


def tell_ranks_before_the_group(message: str) -> bool:
    """Under torchrun: this rank failed before the process group formed (its command line or the files it names:
    a node-local run folder without config.yaml), with ``message``; the ranks that did not, waiting for it in
    `meet_before_the_group`, stop, rank 0 saying ``rank N: message`` (this rank said it on its machine only when it
    is the machine's first worker, and rank 0 waited for it in the group's rendezvous for up to its timeout).
    Returns whether they were told."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    store = _agent_store()
    if store is None:
        return False
    try:
        rank = int(os.environ.get("RANK", "0"))
        keys = _meeting_keys(store, rank)
        store.set(f"{keys}/error-{rank}", " ".join(message.split()))
        store.add(f"{keys}/failed", 1)
    except RuntimeError:  # the store is gone: torchrun is ending the job
        return False
    return True


def meet_before_the_group(rank: int, world: int, timeout: timedelta = timedelta(hours=2)) -> str | None:
    """Under torchrun, before the process group forms: wait for every rank to get this far, or one to fail before
    it (`tell_ranks_before_the_group`); returns ``"rank N: its message"`` of the first rank that failed (the lowest
    that told it), None once every rank is here, after ``timeout`` (the group's own, whose rendezvous then waits and
    says what follows: a rank that ended without telling, a usage error) or without torchrun's store. Stop signals
    are acted on between looks (every half second)."""
    import time

    store = _agent_store() if world > 1 else None
    if store is None:
        return None
    deadline = time.monotonic() + timeout.total_seconds()
    try:
        keys = _meeting_keys(store, rank)
        store.add(f"{keys}/ready", 1)
        while store.add(f"{keys}/failed", 0) == 0:
            if store.add(f"{keys}/ready", 0) >= world or time.monotonic() >= deadline:
                return None
            time.sleep(_BEFORE_GROUP_POLL_S)
        for other in range(world):
            key = f"{keys}/error-{other}"
            if other != rank and store.check([key]):
                return f"rank {other}: {store.get(key).decode('utf-8', 'replace')}"
    except RuntimeError:  # the store is gone (torchrun ending the job): the group's rendezvous says what follows
        return None
    return None
