"""The ``clipvis.train`` logger of a run: rank 0's console and train.log handlers, and the logger as it was once
the run ends."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path


class _ConsoleFormatter(logging.Formatter):
    """Progress lines as they are; a warning or an error as every command prints one (``clipvis: warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING and not message.startswith("clipvis: "):
            return f"clipvis: {message}"
        return message


@contextlib.contextmanager
def train_logger_restored() -> Iterator[None]:
    """The ``clipvis.train`` logger as it was before the run, once the run ends (returns, fails or is stopped): the
    handlers the run attached (``setup_logging``: the console's and train.log's) are closed and removed, and the
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


def setup_logging(output_dir: Path, rank: int) -> None:
    """This rank's ``clipvis.train`` handlers for the run (inside ``train_logger_restored``)."""
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
