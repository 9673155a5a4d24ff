"""Loading a run's model and predictor (segment, export, evaluate, training's periodic evaluation): the checks of
``--precision``, ``--config`` and ``--clip-config`` before anything loads, and weights, config and vocabulary
problems said as one line."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clipvis.cli.exits import fail
from clipvis.cli.gc_pause import collector_paused
from clipvis.cli.hub_logging import clip_fetch_logging
from clipvis.cli.messages import (
    MODEL_PARAMETER_FLAGS,
    describe_exception,
    model_error_message,
    print_warning,
    shown_path,
    subject_message,
)
from clipvis.cli.progress import download_lines
from clipvis.cli.run_identity import checkpoint_identity

if TYPE_CHECKING:  # the model package: imported when the weights load, not when the CLI starts
    from clipvis.cli.segment import SegmentOptions
    from clipvis.model import VideoPredictor
    from clipvis.weights import DownloadReporter


LONG_TEXT_ENCODING_PROMPTS = 7000  # 500 classes of 14 prompts: a minute or more for a CPU's text tower


def _say_long_text_encoding(classes: int, prompts: int, say: Callable[[str], None]) -> None:
    """One line before a large vocabulary's text is encoded: 20,000 names took minutes without a word."""
    if prompts >= LONG_TEXT_ENCODING_PROMPTS:
        say(f"encoding the {classes} class names' {prompts} prompts with CLIP's text tower first (minutes on a CPU "
            "for thousands of names; the cache keeps them for later runs)")


def check_precision(precision: str) -> None:
    """Raise typer.BadParameter unless `precision` is one the predictor runs (`clipvis.model.PRECISIONS`)."""
    from clipvis.model import PRECISIONS  # imports torch: only when a command runs, not for --help

    if precision not in PRECISIONS:
        raise typer.BadParameter(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def check_config_file(config: Path | None, clip_config: Path | None = None) -> None:
    """Read `--config` and `--clip-config` once before anything loads, so a bad file (unreadable, a `_BASE_` cycle,
    a value no model runs with, a setting open_clip does not know) ends the run with one line naming it (exit 1)."""
    from clipvis.cli.train.config import RUN_CONFIG_NAME
    from clipvis.model.config import FOLDER_NOT_CONFIG, load_clip_model_config, load_config_file

    for path, read in ((config, load_config_file), (clip_config, load_clip_model_config)):
        if path is None:
            continue
        if path.is_dir():  # a training run's folder holds its config.yaml: say which file to give
            run_config = path / RUN_CONFIG_NAME
            hint = f" (a training run's folder: give {shown_path(run_config)})" if run_config.is_file() else ""
            raise fail(f"{shown_path(path)}: {FOLDER_NOT_CONFIG}{hint}")
        try:
            read(path)
        except (ValueError, OSError) as error:
            raise fail(subject_message(error, path)) from None


def _say_warnings(caught: list[warnings.WarningMessage], say: Callable[[str], None]) -> None:
    """The warnings caught while the model loaded, each said by ``say``."""
    for warning in caught:
        say(str(warning.message))


def load_predictor(
    options: SegmentOptions, weights_option: str = "weights", say: Callable[[str], None] = print_warning,
    vocabulary_source: str = "the vocabulary", downloads: DownloadReporter | None = None,
    weights_flag: str = "--weights",
) -> VideoPredictor:
    """The model and predictor for a run; weights problems end the run with one line (exit 1), naming the weights
    as ``weights_option`` (export's ``--model``) and the option that takes a checkpoint file's path as
    ``weights_flag`` (export's ``--model``), and vocabulary problems naming ``vocabulary_source`` (evaluate's
    GT file). Warnings while the model loads (a config that differs from the checkpoint, an unusable text-embedding
    cache) are said by ``say`` (default: `clipvis: warning:` lines), and a released checkpoint's download by
    ``downloads`` (default: `clipvis:` lines, `download_lines`; gdown prints nothing of its own).

    Also records the identity of the checkpoint file the weights resolved to in `options.checkpoint` (replacing
    that file re-runs inputs that `--skip-existing` would otherwise skip), and a default `options.max_tracks` as the
    number it stands for, the model config's `detections_per_video`.
    """
    from clipvis.model import CheckpointError, VideoPredictor, VocabularyError, load_model
    from clipvis.weights import WeightsError, download_reporter, release_named, resolve_weights
    from clipvis.weights.resolve import EMPTY_CHECKPOINT_NAME

    caught: list[warnings.WarningMessage] = []
    try:
        # Importing open_clip and building the model make long-lived objects, not garbage (clipvis.cli.gc_pause).
        with collector_paused(), warnings.catch_warnings(record=True) as caught, \
                download_reporter(downloads or download_lines()), clip_fetch_logging(say):
            warnings.simplefilter("always")
            # load_model downloads and verifies a released checkpoint (or replaces a damaged cached copy) first; the
            # identity is then taken of the file it loaded.
            source: str | Path = options.weights
            # A training folder: its latest checkpoint, picked once (a run still writing it adds later ones).
            if release_named(options.weights) is None and Path(options.weights).expanduser().is_dir():
                source = resolve_weights(options.weights, download=False)
            model = load_model(
                source, config=options.config, clip_config=options.clip_config, device=options.device,
                allow_hub_clip=options.allow_hub_clip,
            )
            options.checkpoint = checkpoint_identity(resolve_weights(source, download=False))
            try:
                predictor = VideoPredictor(
                    model, options.vocabulary, device=options.device, precision=options.precision,
                    exact=options.exact, allow_duplicate_names=options.allow_duplicate_names,
                    on_text_encoding=lambda classes, prompts: _say_long_text_encoding(classes, prompts, say),
                    batch_frames=options.batch_frames,  # the batches VideoStream pushes run through the network whole
                )
            except VocabularyError as error:  # the class names (the weights loaded): not the weights'
                refused = describe_exception(error)
            else:
                refused = None
        _say_warnings(caught, say)
        if refused is None:
            if options.max_tracks is None:  # the config's TEST.DETECTIONS_PER_IMAGE: run.json records the number
                options.max_tracks = predictor.model.config.detections_per_video  # (50 as outputs made before said)
            return predictor
    except TypeError as error:  # open_clip building a CLIP from a config with a value of the wrong type
        _say_warnings(caught, say)  # before the error too: a download lock that could not be opened, the config's notes
        flag, path = ("--clip-config", options.clip_config) if options.clip_config else ("--config", options.config)
        if path is None:
            raise
        raise fail(f"{flag} {path}: open_clip cannot build the CLIP it describes ({describe_exception(error)})") \
            from None
    except (CheckpointError, WeightsError, ValueError, RuntimeError, OSError) as error:
        _say_warnings(caught, say)
        message = model_error_message(error, {**MODEL_PARAMETER_FLAGS, "weights": f"{weights_flag} PATH"})
        if not options.weights.strip():  # "--weights is empty: give ...", not "--weights : ..."
            raise fail(message.replace(EMPTY_CHECKPOINT_NAME, f"{weights_flag} is empty", 1)) from None
        raise fail(message if options.weights in message else f"{weights_option} {options.weights}: {message}") \
            from None
    raise fail(f"{vocabulary_source}: {refused}")
