"""Python's cyclic garbage collector while a `clipvis` process starts and ends.

Importing torch, open_clip and scipy and building the model make ~440,000 objects that live as long as the process
(modules, functions, classes, PyTorch's operator registrations), and almost no garbage: the full collections that
CPython runs while they are made found 0 to 130 unreachable objects each. Yet each full collection scans every
object made so far, so those of one `clipvis segment` start-up (7 of them) took ~0.65 s, and the collections of the
interpreter's exit ~0.7 s more, on the 2-core bench machine: with a short video, about a quarter of the run.

So the `clipvis` command (clipvis.cli.launcher) pauses the collector while it imports the application and then
freezes what exists (``gc.freeze``: moved to a permanent generation that no collection scans); `segment`,
`evaluate` and `export` pause it again while they load the model (``load_predictor``: the import of open_clip and the
checkpoint; :func:`collector_paused`); and the
launcher freezes everything once more as the process ends (:func:`freeze_before_exit`), as does each process that
`train --num-gpus` spawns (PyTorch's spawn runs it, not the launcher: ``clipvis.cli.train.processes._worker``), whose
exit took seconds on a busy 2-core machine after a stop or a finished run. Objects made while videos
are processed are collected as always. Reference counting still frees frozen objects; a frozen object is kept only
if it ends in a reference cycle, which is why freezing is left to the launcher (and the spawned training
processes' entry point), which owns the process, and is never done inside a function a library user may call many
times.

Measured with `bench/bench_segment.py --parts i` (start-up and exit of `clipvis segment`): docs/streaming.md.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused(freeze: bool = False) -> Iterator[None]:
    """No cyclic garbage collection inside the block; afterwards the collector is as it was (left off if it was off).

    ``freeze``: at the end of the block, move every object that exists to the permanent generation (``gc.freeze``),
    so no later collection scans them. Only for the process' owner (the launcher): a frozen reference cycle is never
    freed.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if was_enabled:
            gc.enable()


def freeze_before_exit() -> None:
    """The process is about to end: freeze every object, so the interpreter's last collections have nothing to
    scan (~0.7 s less per `clipvis` process). Objects that reference counting frees as modules are torn down are
    still finalised; reference cycles among them are left to the end of the process."""
    gc.freeze()
