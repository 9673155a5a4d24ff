"""`clipvis train`: retrain the released models or fine-tune on your own labelled images/videos.

    clipvis train --config lvis_r50.yaml [--weights W] [--output-dir D] [--resume] [--num-gpus N] [KEY=VALUE ...]
    clipvis train --config ytvis19_r50.yaml --weights clipvis-coco-ytvis19-r50 --data ytvis.json --images frames/

Exit status: 0 trained, 1 bad config/data/weights (one `clipvis: error:` line), 2 usage error.
"""

from __future__ import annotations

from pathlib import Path

import typer


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(f"clipvis: error: {message}", err=True)
    return typer.Exit(code)


def train(
    overrides: list[str] = typer.Argument(
        None, metavar="[KEY=VALUE]...", help="Config overrides with official key names, e.g. SOLVER.MAX_ITER=5000."
    ),
    config: str = typer.Option(
        ..., "--config", help="A shipped config name (lvis_r50.yaml, coco_r50.yaml, ytvis19_r50.yaml, ... "
        "convnext_b variants) or a config file (official CLIP-VIS YAML accepted)."
    ),
    weights: str | None = typer.Option(
        None, "--weights", help="Start from a released checkpoint name, a checkpoint file or a training folder."
    ),
    output_dir: Path | None = typer.Option(None, "--output-dir", help="Where checkpoints and logs go (OUTPUT_DIR)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output-dir from its newest checkpoint."),
    num_gpus: int = typer.Option(
        1, "--num-gpus", min=1, help="Processes to spawn on this machine (one per GPU; CPU processes without GPUs)."
    ),
    data: list[Path] = typer.Option(
        None, "--data", help="Custom training annotations: a COCO instances or YouTube-VIS JSON (repeatable)."
    ),
    images: list[Path] = typer.Option(
        None, "--images", help="The image folder (COCO) or frames folder (YouTube-VIS) of each --data."
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Root of the registered datasets."),
    no_autoscale: bool = typer.Option(
        False, "--no-autoscale", help="Keep LR and schedule as written when the batch or process count changes."
    ),
) -> None:
    """Train CLIP-VIS (class-agnostic head on a frozen CLIP) with the official recipe."""
    from clipvis.cli.train.config import ConfigError, load_train_config
    from clipvis.cli.train.records import TrainDataError
    from clipvis.cli.train.run import RunRequest, launch
    from clipvis.model.checkpoint import CheckpointError
    from clipvis.weights import WeightsError

    data, images = list(data or []), list(images or [])
    if len(data) != len(images):
        raise typer.BadParameter("give one --images folder for each --data file")
    try:
        cfg = load_train_config(config, list(overrides or []))
    except ConfigError as error:
        raise _fail(str(error)) from None
    if output_dir is not None:
        cfg.set("OUTPUT_DIR", str(output_dir))
    if data_root is not None:
        cfg.set("CLIPVIS.DATA_ROOT", str(data_root))
    if data:
        cfg.set("CLIPVIS.TRAIN_DATA", [{"json": str(d), "images": str(i)} for d, i in zip(data, images, strict=True)])
        if "DATASETS.TRAIN" not in cfg.overridden:
            cfg.set("DATASETS.TRAIN", [])
    request = RunRequest(cfg, weights=weights, resume=resume, num_processes=num_gpus, autoscale=not no_autoscale)
    try:
        final = launch(request)
    except (ConfigError, TrainDataError, CheckpointError, WeightsError, FloatingPointError) as error:
        raise _fail(str(error)) from None
    if final is not None:
        typer.echo(str(final))
