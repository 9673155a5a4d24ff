"""Training's periodic evaluation (``TEST.EVAL_PERIOD``) with `clipvis evaluate`'s code."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import typer

from clipvis.cli.dataset_evaluation import run_dataset_evaluation
from clipvis.cli.datasets import get_dataset
from clipvis.cli.evaluation.scoring import score_results_file
from clipvis.cli.standard_streams import stderr_lines_recorded
from clipvis.cli.train.config import TrainConfig

log = logging.getLogger("clipvis.train")


def has_test_set(config: TrainConfig) -> bool:
    """Whether the run has data to evaluate (``DATASETS.TEST`` names or ``CLIPVIS.TEST_DATA`` entries), as
    `periodic_evaluator` finds it."""
    return any(n for n in (config.get("DATASETS.TEST") or [])) or any(
        isinstance(e, dict) for e in (config.get("CLIPVIS.TEST_DATA") or []))


def periodic_evaluator(config: TrainConfig,
                       device: torch.device) -> Callable[[Path, int], dict[str, Any] | None] | None:
    """Periodic evaluation with `clipvis evaluate`'s code: registered ``DATASETS.TEST`` names and custom
    ``CLIPVIS.TEST_DATA`` entries ``{json: YouTube-VIS GT, frames: folder}``; None when there is nothing to run."""
    if not has_test_set(config):
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
            said_on_stderr: list[str] = []

            try:  # in this process alone: the other ranks wait at a barrier meanwhile
                # A registered benchmark is scored as its own evaluator does (BURST); custom data by its GT.
                protocol = get_dataset(job["dataset"]).protocol if job["dataset"] else None

                def score(results: Path, gt: Path, said: Sequence[str]) -> None:  # said: printed already
                    result = score_results_file(results, gt, protocol)  # noqa: B023 - called at once
                    metrics.update(result.to_dict()["metrics"])  # noqa: B023 - called at once

                with stderr_lines_recorded() as said_on_stderr:
                    run_dataset_evaluation(
                        weights=str(checkpoint), data_root=config.get("CLIPVIS.DATA_ROOT") or None, output=folder,
                        score=score, device=device.type,
                        max_videos=int(config.get("CLIPVIS.EVAL_VIDEOS") or 0) or None, alone=True, **job,
                    )
            except (typer.Exit, Exception) as exc:  # noqa: BLE001 - an evaluation failure must not end training
                # its lines (the error, a video's failure, the summary) went to the console alone: train.log, which
                # says "its error is above", holds them too
                for line in said_on_stderr:
                    if line.startswith("clipvis: "):
                        log.warning("%s", line.removeprefix("clipvis: "), extra={"file_only": True})
                why = "its error is above" if isinstance(exc, typer.Exit) else " ".join(str(exc).split())
                log.warning("warning: evaluation on %s failed (%s); training goes on", name, why)
                continue
            out.update({f"eval/{name}/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
        return out or None

    return evaluate
