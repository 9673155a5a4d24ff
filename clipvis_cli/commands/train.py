"""`clipvis train`: retrain the released models or fine-tune on your own labelled images/videos.

    clipvis train --config lvis_r50.yaml [--weights W] [--output-dir D] [--resume] [--num-gpus N] [KEY=VALUE ...]
    clipvis train --config ytvis19_r50.yaml --weights clipvis-coco-ytvis19-r50 --data ytvis.json --images frames/
    clipvis train --output-dir runs/mine --resume    # continue an interrupted run with its own config.yaml
    clipvis train --weights runs/mine --export-pth model_final.pth    # the official detectron2 checkpoint layout

Exit status: 0 trained, 1 bad config/data/weights (one `clipvis: error:` line), 2 usage error, 128 + the signal's
number when Ctrl-C (130), SIGTERM (143) or SIGHUP (129) stopped it (with a checkpoint where it stopped).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clipvis.cli.commands.common import (
    home_path,
    home_path_option,
    input_path_option,
    output_folder_option,
    refuse_leading_equals,
)
from clipvis.cli.exits import fail
from clipvis.cli.train.errors import train_model_error_message

if TYPE_CHECKING:
    from clipvis.cli.train.config import TrainConfig


# What `clipvis train --help` says the command does (Typer's help=, clipvis.cli.app: a docstring is gone under
# python -OO, and the help with it)
TRAIN_HELP = "Train CLIP-VIS (class-agnostic head on a frozen CLIP) with the official recipe."


def train(
    overrides: list[str] = typer.Argument(
        None, metavar="KEY=VALUE", help="Config overrides with official key names, e.g. SOLVER.MAX_ITER=5000."
    ),
    config: str | None = typer.Option(
        None, "--config", help="A shipped config name (lvis_r50.yaml, coco_r50.yaml, ytvis19_r50.yaml, ... "
        "convnext_b variants) or a config file (official CLIP-VIS YAML accepted)."
    ),
    weights: str | None = typer.Option(
        None, "--weights", help="Start from a released checkpoint name, a checkpoint file or a training folder."
    ),
    output_dir_text: str | None = typer.Option(  # a str: '' (an unset shell variable) must not become Path('.')
        None, "--output-dir", callback=output_folder_option, metavar="<path>",
        help="Where checkpoints and logs go (OUTPUT_DIR)."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --output-dir from its newest checkpoint, with the run's own "
        "config.yaml (KEY=VALUE overrides apply on top; --config is then not needed)."
    ),
    num_gpus: int = typer.Option(
        1, "--num-gpus", min=1, help="Processes to spawn on this machine (one per GPU; CPU processes without GPUs)."
    ),
    data: list[Path] = typer.Option(
        None, "--data", help="Custom training annotations: a COCO instances or YouTube-VIS JSON (repeatable)."
    ),
    images: list[str] = typer.Option(  # a str: '' (a file's recorded inputs) must not become Path('.'), this folder
        None, "--images", metavar="<list[Path]>", help="The image folder (COCO) or frames folder (YouTube-VIS) of "
        "each --data, in order; none: every frame from the inputs segment recorded; '' for one --data file: its "
        "recorded inputs."
    ),
    clip_config: Path | None = input_path_option(
        "--clip-config", help="open_clip model config JSON for a CLIP open_clip does not know by name (as segment "
        "--clip-config).",
    ),
    data_root: Path | None = typer.Option(None, "--data-root", help="Root of the registered datasets."),
    no_autoscale: bool = typer.Option(
        False, "--no-autoscale", help="Keep LR and schedule as written when the batch or process count changes."
    ),
    export_pth: str | None = typer.Option(  # a str: a trailing "/" (a folder) must not be lost to Path
        None, "--export-pth", help="Write --weights (e.g. a training folder) as an official .pth checkpoint and exit."
    ),
) -> None:
    output_dir = Path(output_dir_text) if output_dir_text is not None else None
    if clip_config is not None and not clip_config.is_file():  # (checked here: a leading ~ is expanded first)
        reason = "a folder, not a file" if clip_config.is_dir() else "no such file"
        raise typer.BadParameter(f"--clip-config {clip_config}: {reason}")
    if export_pth is not None:
        refuse_leading_equals(export_pth, ("--export-pth",))
        export_pth = home_path(export_pth)  # --export-pth=~/m.pth: bash leaves that ~ as it is
        unused = [flag for flag, given in (("--output-dir", output_dir is not None), ("--resume", resume),
                                           ("--num-gpus", num_gpus != 1), ("--data", bool(data)),
                                           ("--images", bool(images)), ("--data-root", data_root is not None),
                                           ("--no-autoscale", no_autoscale)) if given]
        if unused:  # they were ignored: nothing trains
            raise typer.BadParameter(f"--export-pth writes --weights as a .pth and exits: {', '.join(unused)} "
                                     "has no use with it")
        if overrides and config is None:
            raise typer.BadParameter("--export-pth: KEY=VALUE overrides change the model --config builds: give "
                                     "--config with them")
        try:
            _export(weights, export_pth, config, list(overrides or []), clip_config)
        except KeyboardInterrupt as interrupt:  # the file is written whole or not at all: nothing more to say
            raise _stopped(interrupt, None, export=export_pth) from None
        return
    run = _RunFolder(output_dir.expanduser() if output_dir is not None else None)
    try:
        _train(run, list(overrides or []), config, weights, output_dir, resume, num_gpus, list(data or []),
               list(images or []), clip_config, data_root, no_autoscale)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM, SIGHUP, from the command's first moment (its imports,
        # the config, the checks: Typer turned a stop there into exit 130 without a word): a checkpoint was saved
        # where training stopped, or the line says what there is to resume from
        raise _stopped(interrupt, run.folder, num_gpus) from None


@dataclass
class _RunFolder:
    """The run's output folder, once known (``--output-dir``, else the config's ``OUTPUT_DIR``): what a stop
    reports."""

    folder: Path | None = None


def _train(run: _RunFolder, overrides: list[str], config: str | None, weights: str | None, output_dir: Path | None,
           resume: bool, num_gpus: int, data: list[Path], images: list[str], clip_config: Path | None,
           data_root: Path | None, no_autoscale: bool) -> None:
    from clipvis.cli.atomic import OutputNotWritableError
    from clipvis.cli.distributed import RankLost, RanksDifferError
    from clipvis.cli.train.config import ConfigError, load_run_config, load_train_config
    from clipvis.cli.train.records import TrainDataError
    from clipvis.cli.train.run import (
        ErrorOfOneRank,
        ModelBuildError,
        ProcessFailedError,
        RunRequest,
        SaidByAnotherRank,
        check_device,
        launch,
    )
    from clipvis.cli.train.trainer import CheckpointSaveError
    from clipvis.model.checkpoint import CheckpointError
    from clipvis.weights import WeightsError

    if config is None and not resume:
        raise typer.BadParameter("--config is required (a shipped name such as lvis_r50.yaml, or a file)")
    # no --images at all: every frame from the input segment recorded (the data check names a file that needs one);
    # --resume --images alone: the run's data moved
    if len(data) != len(images) and images and not (resume and not data):
        raise typer.BadParameter("give one --images folder for each --data file, in order (or none, where every "
                                 "--data file records the inputs segment read; --images '' for one that does, among "
                                 "others that do not)")
    try:
        cfg = load_train_config(config, overrides) if config is not None else None
        saved = _run_to_resume(output_dir, cfg) if resume else None
        if saved is not None:
            # The interrupted run's own resolved config (its schedule already scaled to its processes, its data,
            # its seed), with this command's KEY=VALUE overrides on top, e.g. SOLVER.MAX_ITER to extend it.
            cfg = load_run_config(saved, overrides)
            if os.environ.get("RANK", "0") == "0":
                unread = f" (--config {config} is not read)" if config is not None else ""
                typer.echo(f"clipvis: resuming with the run's own settings, {saved}{unread}", err=True)
    except ConfigError as error:
        raise fail_once(str(error)) from None
    if output_dir is not None:
        cfg.set("OUTPUT_DIR", str(output_dir))
    run.folder = Path(str(cfg.get("OUTPUT_DIR"))).expanduser()
    if saved is not None:
        _refuse_other_weights_on_resume(weights, overrides, saved)
    else:  # the keys the options replace are not the file's to read
        _resolve_config_file_paths(cfg, replaced={"MODEL.WEIGHTS": bool(weights), "CLIPVIS.TRAIN_DATA": bool(data),
                                                  "CLIPVIS.DATA_ROOT": data_root is not None,
                                                  "CLIPVIS.CLIP_CONFIG": clip_config is not None})
        if not weights and cfg.get("MODEL.WEIGHTS"):  # MODEL.WEIGHTS in the config or as KEY=VALUE: as --weights
            weights = str(cfg.get("MODEL.WEIGHTS"))
    if weights:  # recorded in config.yaml: a run resumed before its first checkpoint starts from them again
        if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # under torchrun each rank checks its own once they meet
            weights = _starting_weights(weights)
        cfg.set("MODEL.WEIGHTS", weights)
    if data_root is not None:
        cfg.set("CLIPVIS.DATA_ROOT", str(data_root))
    if clip_config is not None:  # recorded in config.yaml (absolute): --resume builds the same CLIP
        cfg.set("CLIPVIS.CLIP_CONFIG", str(clip_config.resolve()))
    if data:
        cfg.set("CLIPVIS.TRAIN_DATA", [{"json": str(d), "images": str(i)} for d, i in zip(data, images, strict=True)]
                if images else [{"json": str(d)} for d in data])
        if "DATASETS.TRAIN" not in cfg.overridden:
            cfg.set("DATASETS.TRAIN", [])
    elif images:  # --resume with only the image folders moved: the run's annotation files, these folders
        entries = list(cfg.get("CLIPVIS.TRAIN_DATA") or [])
        if len(entries) != len(images):
            raise typer.BadParameter(f"the run has {len(entries)} --data file(s): give as many --images folders, "
                                     "in their order (or --data and --images both)")
        cfg.set("CLIPVIS.TRAIN_DATA", [{**entry, "images": str(folder)} for entry, folder in zip(entries, images,
                                                                                              strict=True)])
    if saved is None or data or images or data_root is not None:
        _record_absolute_data_paths(cfg)
    try:
        check_device(cfg, max(num_gpus, int(os.environ.get("WORLD_SIZE", "1"))))
    except ConfigError as error:
        raise fail_once(str(error)) from None
    request = RunRequest(cfg, weights=weights, resume=resume, num_processes=num_gpus,
                         autoscale=not no_autoscale and saved is None)
    try:
        final = launch(request)
    except FloatingPointError as error:  # every rank's loss went non-finite at the same step: rank 0 says it
        raise (fail(str(error)) if os.environ.get("RANK", "0") == "0" else _silent_exit()) from None
    except RankLost as error:  # a rank gone without a word (kill -9, the OOM killer): one line, and what was saved
        if not error.speaks:
            raise typer.Exit(1) from None
        output = Path(str(cfg.get("OUTPUT_DIR"))).expanduser()
        raise fail(f"{error}{_saved_before_the_stop(output, num_gpus, None, saved=False)}") from None
    except CheckpointSaveError as error:  # a full disk while saving: one line, and the checkpoint to resume from
        raise fail(str(error)) from None
    except (ConfigError, TrainDataError, CheckpointError, ModelBuildError, WeightsError, OutputNotWritableError,
            ProcessFailedError, ErrorOfOneRank) as error:
        raise fail(train_model_error_message(error)) from None
    except RanksDifferError as error:  # every rank found it alike: rank 0 says it
        raise (fail(str(error)) if os.environ.get("RANK", "0") == "0" else _silent_exit()) from None
    except SaidByAnotherRank:  # the rank that found it first says it
        raise typer.Exit(1) from None
    if final is not None and os.environ.get("RANK", "0") == "0":
        typer.echo(str(final))


def fail_once(message: str) -> typer.Exit:
    """``fail`` for an error found before the processes meet, in the command line or the files it names: under
    torchrun every worker of a machine finds it alike, and the machine's first says it (exit 1 all the same). The
    other ranks, waiting for this one before the process group forms, are told (`tell_ranks_before_the_group`): where
    rank 0 did not find it (node-local folders), it says ``rank N: <message>``, so a later rank of this machine or
    one of another machine does not fail without a line where the job is watched."""
    from clipvis.cli.distributed import repeats_a_first_process, tell_ranks_before_the_group

    told = tell_ranks_before_the_group(message)  # rank 0's: the others stop at once, in silence
    if repeats_a_first_process():
        return _silent_exit()
    error = fail(message)
    if told and os.environ.get("RANK", "0") != "0":
        _silent_exit()  # rank 0 says it too: not ended by torchrun (as this worker exits) before its line
    return error


def _silent_exit() -> typer.Exit:
    """Exit 1 without a word, another process saying why (after ``stop_in_silence``'s wait)."""
    from clipvis.cli.distributed import stop_in_silence

    stop_in_silence()
    return typer.Exit(1)


def _stopped(interrupt: KeyboardInterrupt, output_dir: Path | None, num_gpus: int = 1,
             export: str | None = None) -> typer.Exit:
    """The one line a stopped run prints (rank 0) and its exit status, 128 + the signal's number. ``output_dir``
    None: stopped before the run's folder was known (the config still loading), nothing more to say; ``export``:
    the ``--export-pth`` file being written (it is not)."""
    import signal

    from clipvis.cli.distributed import ignore_stop_signals
    from clipvis.cli.train.stopping import TrainingStopped

    ignore_stop_signals()  # another one on the way out is the same stop (the exit status is this one's)
    signum = getattr(interrupt, "signum", signal.SIGINT)
    name = signal.Signals(signum).name
    if os.environ.get("RANK", "0") == "0":
        checkpoint = interrupt.checkpoint if isinstance(interrupt, TrainingStopped) else None
        saved = isinstance(interrupt, TrainingStopped) and interrupt.saved and checkpoint is not None
        said = _saved_before_the_stop(output_dir, num_gpus, checkpoint, saved) if output_dir is not None else ""
        if export is not None:
            said = f"; {export} was not written"
        typer.echo(f"clipvis: stopped by {name}{said}", err=True)
    return typer.Exit(128 + signum)


def _saved_before_the_stop(output_dir: Path, num_gpus: int, checkpoint: Path | None, saved: bool) -> str:
    """What a stopped run kept and how to continue it, to follow what stopped it: ``saved`` (``checkpoint``, at the
    stop), else the newest checkpoint of ``output_dir`` that ``--resume`` takes, or none yet."""
    from clipvis.cli.train.trainer import resume_point

    checkpoint = checkpoint if saved and checkpoint is not None else resume_point(output_dir)
    # the same processes: a resumed run equals an uninterrupted one only with the batch split the same way
    processes = f" --num-gpus {num_gpus}" if num_gpus > 1 else ""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    again = (f"continue with: clipvis train --output-dir {output_dir} --resume{processes}" if world == 1 else
             f"continue with the same torchrun command and --resume ({world} processes)")
    if checkpoint is None:
        return " before the first checkpoint"
    return f"; saved {checkpoint}; {again}" if saved else f"; nothing saved since {checkpoint}; {again}"


def _record_absolute_data_paths(config: TrainConfig) -> None:
    """Every data location of ``config`` as an absolute path (the data root resolved as the run resolves it when
    unset: the first of $CLIPVIS_DATASETS, $DETECTRON2_DATASETS and ./datasets holding the config's registered
    datasets, ``train_data_root``): config.yaml records them, and a resumed run finds them from any working
    directory."""
    from clipvis.cli.train.sources import train_data_root

    def absolute(value: object) -> str:
        path = Path(str(value)).expanduser()
        try:
            return str(path.resolve())
        except (RuntimeError, OSError):  # a symbolic-link loop (Python 3.11: RuntimeError): the data check names it
            return os.path.abspath(path)

    names = [str(name) for key in ("DATASETS.TRAIN", "DATASETS.TEST") for name in (config.get(key) or []) if name]
    config.set("CLIPVIS.DATA_ROOT", absolute(train_data_root(config.get("CLIPVIS.DATA_ROOT") or None, names)))
    for key, fields in (("CLIPVIS.TRAIN_DATA", ("json", "images")), ("CLIPVIS.TEST_DATA", ("json", "frames"))):
        entries = config.get(key) or []
        config.set(key, [{**entry, **{f: absolute(entry[f]) for f in fields if entry.get(f)}}
                         if isinstance(entry, dict) else entry for entry in entries])


def _refuse_other_weights_on_resume(weights: str | None, overrides: list[str], saved: Path) -> None:
    """``--resume`` of a run that has its ``config.yaml`` continues from that run's checkpoint, or before its first
    one from the weights it recorded: ``--weights`` (or a ``MODEL.WEIGHTS=`` override) naming others was ignored while
    config.yaml was rewritten to name them, a file the run never started from. One line instead."""
    override = next((item for item in overrides if item.split("=", 1)[0].strip() == "MODEL.WEIGHTS"), None)
    given = f"--weights {weights}" if weights else f"override {override!r}" if override is not None else None
    if given is None:
        return
    from clipvis.cli.train.config import load_train_config

    recorded = str(load_train_config(saved).get("MODEL.WEIGHTS") or "")
    value = weights or str(override).split("=", 1)[1].strip()
    if recorded and _names_the_weights(value, recorded):
        return  # the weights the run started from: a job script giving its whole command on every requeue
    recorded = recorded or "the official initialisation"
    raise fail_once(f"--resume continues the run in {saved.parent} from its own checkpoint (its starting weights: "
                    f"{recorded}): {given} has no use with it; to train from other weights, start a new run "
                    "(another --output-dir, without --resume)")


def _names_the_weights(value: str, recorded: str) -> bool:
    """Whether ``value`` (``--weights`` or ``MODEL.WEIGHTS=``) names the checkpoint a run recorded as its starting
    weights: the same text (under torchrun a run records them as given), the same release in any spelling (recorded
    as given), the same file, or the training folder that file is in (its newest checkpoint may have moved on since).
    Looked up on disk alone: nothing is fetched (a release given to a run that started from another is refused at
    once, not after its download)."""
    from clipvis.weights import release_named

    if value == recorded or os.path.abspath(value) == recorded:
        return True
    release = release_named(value)
    if release is not None:
        started = release_named(recorded)
        return started is not None and started.name == release.name
    given, file = Path(value).expanduser(), Path(recorded)
    try:
        if given.is_dir():
            return file.resolve().parent == given.resolve()
        return given.is_file() and given.resolve() == file.resolve()
    except (OSError, RuntimeError):  # a symbolic-link loop (Python 3.11: RuntimeError): not the same weights
        return False


# The path values of a config file read relative to the folder of the file that gives them (the config, or the
# _BASE_ file that sets the key), as a _BASE_ is (README, Train, "Configs"); KEY=VALUE overrides and the options stay
# relative to the current folder.
_CONFIG_FILE_PATH_KEYS = ("MODEL.WEIGHTS", "CLIPVIS.DATA_ROOT", "CLIPVIS.CLIP_CONFIG")
_CONFIG_FILE_PATH_ENTRIES = (("CLIPVIS.TRAIN_DATA", ("json", "images")), ("CLIPVIS.TEST_DATA", ("json", "frames")))


def _resolve_config_file_paths(config: TrainConfig, replaced: dict[str, bool] | None = None) -> None:
    """Every relative path ``config``'s files gave (not a ``KEY=VALUE`` override, nor a key an option replaces:
    ``replaced``) made relative to the folder of the file that gave it: the config file, or the ``_BASE_`` file that
    set the key. Where an earlier reading (the current folder, as clipvis read every such path before; the top config
    file's folder, as it read a ``_BASE_`` file's since) names another path that exists, a ``clipvis: warning:`` line
    says which is read now, so that nobody switches datasets without knowing it; where the file's folder holds no such
    path but an earlier reading's does (a config written for it), that one is read, with a warning saying how to
    write it."""
    from clipvis.cli.messages import print_warning
    from clipvis.weights import release_named

    top_folder = Path(config.source).parent

    def from_file(key: str, value: object) -> object:
        text = str(value) if isinstance(value, (str, Path)) else ""
        if not text or text.startswith("~") or Path(text).is_absolute():
            return value
        file = config.key_files.get(key, config.source)
        chosen = Path(file).parent / text
        if key == "MODEL.WEIGHTS" and not chosen.exists() and release_named(text) is not None:
            return value  # a released checkpoint's name
        earlier = [(Path(text), "the current folder")]
        if Path(file).parent != top_folder:  # a _BASE_ file in another folder: read from the top config's before
            earlier.insert(0, (top_folder / text, f"the folder of {config.source}"))
        # said as `os.path.normpath` writes them (cf/common/data.yaml, not cf/lvis/../common/data.yaml); the path
        # read stays as joined: with a symlinked folder, `..` is the link target's parent, not the one normpath drops
        shown_file, shown_chosen = os.path.normpath(file), os.path.normpath(chosen)
        for before, folder in earlier:
            if not before.exists() or os.path.abspath(before) == os.path.abspath(chosen):
                continue
            if not chosen.exists():  # written for an earlier reading: still read there
                print_warning(f"{shown_file}: {key} {text} is not in the config file's folder ({shown_chosen}): read "
                              f"from {folder} ({os.path.abspath(before)}); write it relative to the config "
                              "file's folder, or absolute, as such paths are read from there")
                return os.path.abspath(before)
            print_warning(f"{shown_file}: {key} {text} is read relative to the config file's folder: {shown_chosen} "
                          f"(not {text} in {folder}, as before)")
            break
        return str(chosen)

    skipped = {key for key, is_replaced in (replaced or {}).items() if is_replaced}
    for key in _CONFIG_FILE_PATH_KEYS:
        if key not in config.overridden and key not in skipped and config.get(key):
            config.set(key, from_file(key, config.get(key)))
    for key, fields in _CONFIG_FILE_PATH_ENTRIES:
        entries = config.get(key) or []
        if key in config.overridden or key in skipped or not isinstance(entries, list):
            continue
        config.set(key, [{**entry, **{f: from_file(key, entry[f]) for f in fields if entry.get(f)}}
                         if isinstance(entry, dict) else entry for entry in entries])


def _starting_weights(weights: str) -> str:
    """``--weights`` as the run records it (``starting_weights``), checked before the data loads: a mistyped path is
    one line at once. Under torchrun each rank checks its own once the ranks meet (``run_training``)."""
    import warnings

    from clipvis.cli.messages import print_warning
    from clipvis.cli.train.run import starting_weights
    from clipvis.weights import WeightsError

    with warnings.catch_warnings(record=True) as caught:  # a download's warning: one clipvis: warning: line
        warnings.simplefilter("always")
        try:
            chosen: str | None = starting_weights(weights)
        except WeightsError as error:
            chosen, failure = None, train_model_error_message(error)
    for warning in dict.fromkeys(str(w.message) for w in caught):
        print_warning(warning)
    if chosen is None:
        raise fail(failure)
    return chosen


def _run_to_resume(output_dir: Path | None, config: TrainConfig | None) -> Path | None:
    """The ``config.yaml`` of the run in ``output_dir`` (default: the config's ``OUTPUT_DIR``), or None when that
    folder holds no run yet (``--resume`` then starts one from ``--config``)."""
    from clipvis.cli.train.config import RUN_CONFIG_NAME, ConfigError

    folder = output_dir if output_dir is not None else Path(str(config.get("OUTPUT_DIR"))) if config else None
    if folder is None:
        raise typer.BadParameter("--resume needs --output-dir, the folder of the run to continue")
    saved = folder.expanduser() / RUN_CONFIG_NAME
    if saved.is_file():
        return saved
    if config is None:
        raise ConfigError(
            f"{folder}: no training run to resume here (no {RUN_CONFIG_NAME}); give --config to start one"
        )
    return None


def _export(weights: str | None, export_pth: str, config: str | None = None, overrides: list[str] | None = None,
            clip_config: Path | None = None) -> None:
    """The model of ``weights`` under the official key names, ``{"model": state_dict}``, written atomically. The
    model is built as training builds it: with ``--config`` (and ``KEY=VALUE``) and ``--clip-config`` when given."""
    import io
    import warnings

    import torch

    from clipvis.cli.atomic import OutputNotWritableError, atomic_output_path, ensure_output_dir, output_file_target
    from clipvis.cli.hub_logging import clip_fetch_logging
    from clipvis.cli.listing import StdoutListing
    from clipvis.cli.messages import print_warning
    from clipvis.cli.progress import download_lines
    from clipvis.cli.train.config import ConfigError, load_train_config
    from clipvis.cli.train.run import weights_model_config
    from clipvis.model import CheckpointError, load_model, to_official_state_dict
    from clipvis.weights import WeightsError, download_reporter

    if not weights:
        raise typer.BadParameter("--export-pth needs --weights (a training folder, checkpoint file or released name)")
    target = home_path_option(export_pth)  # ./~/m.pth: a folder named ~, shown as the absolute path (not ~/m.pth)
    if export_pth.endswith(tuple(filter(None, (os.sep, os.altsep)))) or target.is_dir():  # "exp2/": a folder
        raise typer.BadParameter(f"--export-pth {export_pth} is a folder: give the file to write, e.g. "
                                 f"{target / 'model.pth'}")
    if target.suffix.lower() != ".pth":  # x.safetensors held a torch pickle that segment could not load; detectron2
        # reads a .pkl with pickle, not torch.load
        raise typer.BadParameter(f"--export-pth {export_pth}: the file is detectron2's .pth checkpoint (a torch.save "
                                 f"file), give a name ending in .pth, e.g. {target.with_suffix('.pth')}; the run's "
                                 "model_XXXXXXX.safetensors files are already loadable as they are")
    try:  # a device or a pipe is refused (the final rename would replace it); a symbolic link is written through
        written = output_file_target(target)
    except OutputNotWritableError as error:
        raise fail(str(error)) from None
    if os.environ.get("RANK", "0") != "0":  # under torchrun: one file to write, by rank 0 alone
        return
    try:
        model_config = weights_model_config(load_train_config(config, overrides or [])) if config else None
    except ConfigError as error:
        raise fail(str(error)) from None
    try:
        with warnings.catch_warnings(record=True) as caught, download_reporter(download_lines()), \
                clip_fetch_logging(print_warning):
            warnings.simplefilter("always")
            model = load_model(weights, config=model_config, clip_config=clip_config)
    except (CheckpointError, WeightsError, ValueError) as error:
        message = train_model_error_message(error)
        # the path once: a checkpoint's errors start with it already ("W: checkpoint does not fit the model: ...")
        message = message.removeprefix(f"{weights}: ")
        raise fail(f"--weights {weights}: {message}") from None
    for warning in dict.fromkeys(str(w.message) for w in caught):
        print_warning(warning)
    try:
        ensure_output_dir(written.parent)  # as segment's -o: the folders are made (once the model loaded)
        # serialised first, then written by Python, as training's checkpoints (Trainer._write_checkpoint): a full
        # disk or a file-size limit is the OSError it is, one line (torch.save said "unexpected pos", in a traceback)
        serialised = io.BytesIO()
        torch.save({"model": to_official_state_dict(model)}, serialised)
        with atomic_output_path(written) as tmp:
            try:
                tmp.write_bytes(serialised.getbuffer())
            except OSError as error:
                raise OutputNotWritableError(written, error) from error
    except OutputNotWritableError as error:
        raise fail(str(error)) from None
    StdoutListing(lambda level, message: print_warning(message), "the file is written all the same").list(target)
