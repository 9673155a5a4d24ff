"""train.log and the ``clipvis.train`` logger of a run: the run's handlers live as long as the run."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..commands.test_train import train
from .conftest import write_coco


def _open_files() -> set[Path]:
    """The files this process holds open (Linux: /proc/self/fd)."""
    folder = Path("/proc/self/fd")
    return {Path(os.readlink(fd)) for fd in folder.iterdir() if os.path.lexists(fd)} if folder.is_dir() else set()


def test_a_run_s_train_log_gets_nothing_after_the_run_ends(tmp_path, tiny_train_config) -> None:
    """The run attached its train.log handler to the process-wide clipvis.train logger and left it there: after the
    run returned (the Python API, a test, a second run in one process) later records still went to that train.log,
    held open. Now the logger is as it was before the run, and the file is closed."""
    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=1)
    logger = logging.getLogger("clipvis.train")
    before = (list(logger.handlers), logger.level, logger.propagate)
    train(config, tmp_path / "one", data)
    first_log = tmp_path / "one" / "train.log"
    first = first_log.read_text()
    assert "config" in first  # the run's own lines are there
    assert (list(logger.handlers), logger.level, logger.propagate) == before
    assert first_log.resolve() not in _open_files()
    logger.warning("warning: a record after the run")
    train(config, tmp_path / "two", data)
    assert first_log.read_text() == first
    assert "a record after the run" not in (tmp_path / "two" / "train.log").read_text()
