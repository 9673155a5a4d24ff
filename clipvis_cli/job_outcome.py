"""How a torchrun job's endings reach the user (one line, from the rank that knows, and every rank's exit code), and
the check that every rank runs the same weights, vocabulary and result options."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from clipvis.cli.distributed import (
    DistributedRun,
    OtherRankFailed,
    RankLost,
    RanksDifferError,
    repeats_a_first_process,
    stop_in_silence,
)
from clipvis.cli.messages import print_error

if TYPE_CHECKING:
    from clipvis.cli.segment import SegmentOptions


@contextmanager
def outcome_of_the_job(job: DistributedRun | None, kept: str) -> Iterator[None]:
    """How a torchrun job's endings reach the user: one line, from rank 0 (or the rank that knows), and the exit code
    every rank gives (``kept``: what is left of the work, e.g. "the finished outputs are kept ..."). Ranks that run
    other models stop at once (1); a rank gone without a word (1); a usage error every rank finds in the same command
    line, printed by rank 0 alone (2); another rank's error, which that rank printed (1, 130 when interrupted). A
    command that said another rank's end itself (``OtherRankFailed.said``: through its reporter, so that it comes
    before the batch's summary and, with ``--log-format jsonl``, as a JSON event) is not said again."""
    try:
        yield
    except RanksDifferError as error:  # every rank knows; rank 0 says what differs
        if job.is_main:
            print_error(str(error))
        raise typer.Exit(1) from None
    except RankLost as error:  # gone without a word: one line, from rank 0 (or the other rank of two)
        if error.speaks and not error.said:
            print_error(f"{error}; {error.done or kept}")
        raise typer.Exit(1) from None
    except typer.BadParameter as error:
        if job is not None and job.main_stopped_too:
            stop_in_silence()  # rank 0 says it
            raise typer.Exit(2) from None
        if job is not None and repeats_a_first_process():  # this rank's own: the application says these once
            print_error(f"rank {job.rank}: {error.format_message()}")
            raise typer.Exit(2) from None
        raise
    except OtherRankFailed as error:  # its own line came from that rank
        if job.is_main and not error.said:
            print_error(f"{error}; {kept}")
        raise typer.Exit(130 if error.interrupted else 1) from None


def check_same_producer(job: DistributedRun, options: SegmentOptions | None) -> None:
    """Under torchrun, with the weights loaded (``options.checkpoint`` set): every rank must run the same weights,
    vocabulary and result options (clipvis.cli.run_identity.Producer), or the outputs (evaluate's per-video files, which
    rank 0's cache key then vouches for) would mix two models silently. One gather (two when checkpoint files of the
    same size must be compared by content); on a difference every rank raises RanksDifferError with one line naming
    the first rank that differs. ``options`` None: this rank could not start; it is left out of the comparison."""
    from clipvis.cli.run_identity import Producer, file_digest
    from clipvis.weights import WeightsError, resolve_weights

    mine = Producer.of(options) if options is not None else None
    every: list[Producer | None] = job.gather(mine)
    started = [rank for rank, producer in enumerate(every) if producer is not None]
    if len(started) < 2:
        return
    first = every[started[0]]
    unsure = [rank for rank in started[1:] if every[rank].needs_digest(first)]
    if unsure:  # copies of one file on other machines, or other files of the same size: their contents decide
        digest = None
        if mine is not None and job.rank in (started[0], *unsure):
            try:
                digest = file_digest(resolve_weights(options.weights, download=False))
            except (OSError, WeightsError):
                digest = None  # unreadable now: counted as other weights
        for producer, theirs in zip(every, job.gather(digest), strict=True):
            if producer is not None:
                producer.digest = theirs
    for rank in started[1:]:
        difference = every[rank].difference(first, f"on rank {rank}", f"on rank {started[0]}")
        if difference is not None:
            raise RanksDifferError(
                f"rank {rank} has {difference}; every process must run the same weights, vocabulary and settings, "
                "nothing was run"
            )
