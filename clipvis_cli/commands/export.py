"""`clipvis export`: convert segment outputs to annotation-tool formats (no model run)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clipvis.cli.commands.common import (
    NOTHING_ON_STDIN,
    check_media_url,
    home_path,
    input_path_option,
    media_url_option,
    output_folder,
    refuse_leading_equals,
    score_option,
)
from clipvis.cli.distributed import ignore_stop_signals
from clipvis.cli.exits import fail
from clipvis.cli.exporters import EXPORT_FORMATS, ExportOptions, discover_export_inputs
from clipvis.cli.exporters.runner import ExportOutcome, ExportRunner, classes_in_no_input
from clipvis.cli.inputs import read_argument_lines
from clipvis.cli.listing import StdoutListing
from clipvis.cli.messages import describe_exception, print_warning, shown_path, subject_message
from clipvis.cli.predictor_loading import check_config_file, load_predictor
from clipvis.cli.progress import HumanReporter, JsonlReporter
from clipvis.cli.segment import SegmentOptions
from clipvis.cli.vocabulary_options import parse_vocabulary

if TYPE_CHECKING:
    from clipvis.cli.exporters.onnx import OnnxParity


def parse_formats(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    chosen = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in allowed]
    if unknown or not chosen:
        raise typer.BadParameter(f"{flag}: unknown format {', '.join(unknown) or '(empty)'} "
                                 f"(choose from {', '.join(allowed)})")
    return list(dict.fromkeys(chosen))


# The options of each mode, by parameter name: the flag named in the error when given to the other mode.
RESULTS_ONLY = {"min_score": "--min-score", "classes": "--classes", "media": "--media/--no-media",
                "zip_results": "--zip", "media_url": "--media-url", "log_format": "--log-format", "gt": "--gt"}
ONNX_ONLY = {"model": "--model", "config": "--config", "clip_config": "--clip-config",
             "allow_hub_clip": "--allow-hub-clip", "height": "--height", "width": "--width", "precision": "--precision",
             "vocab": "--vocab", "vocab_file": "--vocab-file", "opset": "--opset"}


def refuse_options_of_the_other_mode(ctx: typer.Context, onnx: bool) -> None:
    """A usage error for the first option given on the command line (or by the environment) that the mode does
    not use: silently ignored, it changed nothing the user expected it to."""
    for name, flag in (RESULTS_ONLY if onnx else ONNX_ONLY).items():
        source = ctx.get_parameter_source(name)  # by name: Typer may bring its own copy of click's enum
        if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP"):
            raise typer.BadParameter(f"{flag} is not for --to onnx (it exports the network, not results)" if onnx
                                     else f"{flag} is only for --to onnx")


# What `clipvis export --help` says the command does (Typer's help=, clipvis.cli.app: a docstring is gone under
# python -OO, and the help with it)
EXPORT_HELP = """\
Convert segment outputs to CVAT, COCO, MOTS, DAVIS-style PNG, Label Studio, FiftyOne or YouTube-VIS files;
or, with --to onnx, the per-frame network to ONNX."""


def export(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(
        None, metavar="INPUTS",
        help="segment output folders, ytvis.json files, folders of them (recursive), globs, or - for stdin.",
    ),
    to: str = typer.Option(..., "--to", help=f"Format(s), comma-separated: {', '.join(EXPORT_FORMATS)}, onnx."),
    output: str | None = typer.Option(  # a str: a trailing "/" (a folder, for --to onnx) must not be lost to Path
        None, "-o", "--output", help="Output root (one folder per video); default: beside each ytvis.json. --to onnx: "
        "the .onnx file to write (default: clipvis.onnx)."
    ),
    min_score: float = typer.Option(
        0.0, "--min-score", help="Export only tracks scoring at least this (0..1).", callback=score_option
    ),
    classes: str | None = typer.Option(None, "--classes", help='Export only these classes, e.g. "cat,dog".'),
    media: bool = typer.Option(
        True, "--media/--no-media", help="Write frame images for formats that can carry them (coco, cvat-images, "
        "mots-png); fiftyone and labelstudio always need the source video."
    ),
    zip_results: bool = typer.Option(False, "--zip", help="ytvis: write results.zip (holding results.json)."),
    gt: Path | None = input_path_option(
        "--gt", help="ytvis: give the results this YouTube-VIS GT file's video and category ids, each video "
        "matched by its frames' names (else its name), each class by name.", dir_okay=False,
    ),
    media_url: str = media_url_option(),
    log_format: str = typer.Option("human", "--log-format", help="human or jsonl."),
    model: str | None = typer.Option(
        None, "--model", help="onnx: a released checkpoint name, a checkpoint file (.pth, .safetensors) or a training "
        "output folder (its newest checkpoint).",
    ),
    config: Path | None = input_path_option("--config", help="onnx: model settings (as segment --config)."),
    clip_config: Path | None = input_path_option("--clip-config", help="onnx: open_clip model config JSON."),
    allow_hub_clip: bool = typer.Option(
        False, "--allow-hub-clip", help="onnx: let a config or a checkpoint without CLIP weights name a CLIP other "
        "than the released models' (e.g. hf-hub:...) and download it (as segment --allow-hub-clip).",
    ),
    height: int | None = typer.Option(
        None, "--height", min=32,
        help="onnx: padded input height, multiple of 32 (default: 9:16 of --width, or a 16:9 video's padded height "
             "as the model resizes it: 480 for the released models; 736 for a model that does not resize).",
    ),
    width: int | None = typer.Option(
        None, "--width", min=32,
        help="onnx: padded input width, multiple of 32 (default: 16:9 of --height, or a 16:9 video's padded width "
             "as the model resizes it: 864 for the released models; 1280 for a model that does not resize).",
    ),
    precision: str = typer.Option("fp32", "--precision", help="onnx: fp32 or fp16."),
    vocab: str | None = typer.Option(None, "--vocab", help="onnx: bake these classes in (adds class_logits)."),
    vocab_file: Path | None = input_path_option("--vocab-file", help="onnx: classes from a file."),
    opset: int = typer.Option(
        17, "--opset", help="onnx: ONNX opset version, 16 up to the newest the installed torch's exporter writes."
    ),
    null: bool = typer.Option(
        False, "-0", "--null", help="Paths on stdin (-) are separated by NUL characters and the paths written to "
        "stdout end with one (find -print0, xargs -0)."
    ),
) -> None:
    if log_format not in ("human", "jsonl"):
        raise typer.BadParameter(f"--log-format must be human or jsonl, not {log_format!r}")
    if _under_torchrun():  # every worker would export every input, into the same folders at once
        raise typer.BadParameter("export runs in one process, without torchrun (it needs no GPU); to spread many "
                                 "inputs over CPUs, run several exports of disjoint inputs (e.g. xargs -P)")
    onnx = to.strip().lower() == "onnx"
    # the network, not a results format: its own command line (said before the options, of which --model is right)
    if not onnx and "onnx" in (name.strip().lower() for name in to.split(",")):
        raise typer.BadParameter("--to onnx exports the network and takes no results: give it alone (--to onnx)")
    refuse_options_of_the_other_mode(ctx, onnx)
    if onnx:
        _export_network(inputs, output, model, config, clip_config, allow_hub_clip, height, width, precision, vocab,
                        vocab_file, opset, null)
    else:
        _export_results(inputs, to, output, min_score, classes, media, zip_results, media_url, log_format, null, gt)


def _export_network(inputs: list[str] | None, output: str | None, model: str | None, config: Path | None,
                    clip_config: Path | None, allow_hub_clip: bool, height: int | None, width: int | None,
                    precision: str, vocab: str | None, vocab_file: Path | None, opset: int, null: bool) -> None:
    """``--to onnx``: the per-frame network of ``model`` as an ONNX file (``-o``, default clipvis.onnx)."""
    if model is None:
        raise typer.BadParameter("--to onnx needs --model WEIGHTS")
    if inputs:
        raise typer.BadParameter("--to onnx exports the network: give --model, not inputs")
    vocabulary = None if vocab is None and vocab_file is None else parse_vocabulary(vocab, vocab_file)
    if output is not None and not output.strip():  # `-o "$OUT"` with OUT unset: not the default name
        raise typer.BadParameter("-o: an empty name; give the .onnx file to write")
    if output is not None:
        try:
            refuse_leading_equals(output)
        except typer.BadParameter as error:
            raise typer.BadParameter(f"-o: {error}") from None
    target = home_path(output) if output is not None else "clipvis.onnx"
    try:
        export_network(model, target, height, width, precision, vocabulary, opset, config, clip_config,
                       allow_hub_clip, null)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM, SIGHUP (the launcher's): exit 128 + N, in one line
        ignore_stop_signals()  # another one on the way out is the same stop
        signum = getattr(interrupt, "signum", signal.SIGINT)
        typer.echo(f"clipvis: stopped by {signal.Signals(signum).name}; {shown_path(target)} was not written",
                   err=True)
        raise typer.Exit(128 + signum) from None


def _export_results(inputs: list[str] | None, to: str, output: str | None, min_score: float, classes: str | None,
                    media: bool, zip_results: bool, media_url: str, log_format: str, null: bool,
                    gt: Path | None = None) -> None:
    """``--to FORMATS``: each segment output of ``inputs`` converted to the results formats (exit 1 when one
    failed)."""
    formats = parse_formats(to, EXPORT_FORMATS, "--to")
    check_media_url(media_url, formats, "--to")
    if output is not None:  # the results' output root: a folder, as segment's -o (a leading ~ expanded)
        try:
            output = output_folder(output)
        except typer.BadParameter as error:
            raise typer.BadParameter(f"-o: {error}") from None
    if not inputs:
        raise typer.BadParameter("give the segment outputs to export (folders or ytvis.json files)")
    class_names = None
    if classes is not None:
        class_names = tuple(name.strip() for name in classes.split(",") if name.strip())
        if not class_names:
            raise typer.BadParameter("--classes: empty list")
    ground_truth = None
    if gt is not None:
        if "ytvis" not in formats:
            raise typer.BadParameter("--gt is only for --to ytvis (the ids of its results file)")
        from clipvis.cli.evaluation import EvaluationInputError, load_ground_truth

        try:
            ground_truth = load_ground_truth(gt)
        except EvaluationInputError as error:
            raise typer.BadParameter(f"--gt: {error}") from None
    options = ExportOptions(min_score=min_score, classes=class_names, media=media, zip_results=zip_results,
                            media_url=media_url, gt=ground_truth)
    try:
        listed = read_argument_lines(sys.stdin, null) if "-" in inputs else ()
    except ValueError as error:  # a --null list without NUL characters
        raise typer.BadParameter(str(error)) from None
    found = discover_export_inputs(inputs, listed)
    reporter = JsonlReporter() if log_format == "jsonl" else HumanReporter()
    for item in found:  # segment output folders a search found, whose runs were not asked for results
        if item.left_out is not None:
            reporter.say("warning", f"{shown_path(item.path)}: left out: {item.left_out}")
    found = [item for item in found if item.left_out is None]
    if not found and set(inputs) == {"-"}:  # `find -newer ... | clipvis export -` found nothing new, as segment
        reporter.batch_finished({"complete": 0, "failed": 0}, 0, NOTHING_ON_STDIN)
        reporter.close()
        return
    if not found:
        raise typer.BadParameter("no segment outputs given")
    if class_names is not None and (unknown := classes_in_no_input(found, class_names)) is not None:
        reporter.close()  # an error, not a warning per video and every format written empty
        reporter.batch_finished({"complete": 0, "failed": 0}, 0, unknown, error=True)
        raise typer.Exit(1)
    runner = ExportRunner(formats, options, Path(output) if output is not None else None, reporter, inputs=found)
    outcomes: list[ExportOutcome] = []
    listing = StdoutListing(reporter.say, "they are written all the same", null, above_progress=reporter.above_progress)

    def ended(finished: list[ExportOutcome]) -> None:
        """Each export's files listed as it ends (its warnings and notes were said by the runner, with its events),
        as segment lists its outputs: a pipeline reads them while the batch runs, and an interrupted batch has listed
        the ones it finished."""
        outcomes.extend(finished)
        for outcome in finished:
            for path in outcome.outputs:
                listing.list(path)

    reporter.batch_started(len(found))
    if "labelstudio" in formats and not media_url:
        reporter.say("warning", LABEL_STUDIO_WITHOUT_URL)
    try:
        for item in found:
            ended(runner.run(item))
        results_files = runner.finish()  # --to ytvis: one results file for the videos (under -o)
        ended(results_files)
    except KeyboardInterrupt:
        ignore_stop_signals()  # another one, now or on the way out, is the same stop: the summary is said whole, once
        runner.close()  # the results file not written: its temporary file goes
        reporter.close()
        reporter.batch_finished(_counts(outcomes), len(outcomes), "interrupted; incomplete exports were not written",
                                error=True, interrupted=True)
        raise typer.Exit(130) from None
    reporter.close()
    videos = outcomes[: len(outcomes) - len(results_files)]
    failed = sum(outcome.status == "failed" for outcome in videos)
    failed_files = sum(outcome.status == "failed" for outcome in results_files)
    parts = [f"{failed} of {len(videos)} export(s) failed"] if failed else []
    parts += [f"{failed_files} of {len(results_files)} results file(s) not written"] if failed_files else []
    reporter.batch_finished(_counts(videos), len(videos), "; ".join(parts) or None, error=bool(parts))
    if parts:
        raise typer.Exit(1)


LABEL_STUDIO_WITHOUT_URL = (
    "labelstudio without --media-url: tasks.json names each video by its file name alone (e.g. data.video "
    "\"clip.mp4\" for a video clip.mp4), "
    "which Label Studio cannot load; give the URL prefix it serves media/ under (--media-url "
    "\"/data/local-files/?d=clips/\")")


def _counts(videos: list[ExportOutcome]) -> dict[str, int]:
    """The summary's counts of the videos that ended (complete or failed)."""
    return {status: sum(outcome.status == status for outcome in videos) for status in ("complete", "failed")}


def _parity_line(parity: OnnxParity, height: int, width: int) -> str:
    """The stderr line of one parity check: every output's max absolute difference and the bar."""
    diffs = ", ".join(f"{name} {value:.2e}" for name, value in parity.max_abs_diff.items())
    return (f"clipvis: onnxruntime ({parity.precision} file) vs PyTorch fp32 (batch {parity.batch}, {height}x{width}) "
            f"max abs diff: {diffs}; bar: {parity.describe_bar()}")


class ParityError(Exception):
    """The exported file's outputs are past the parity bar (the file is not put in place)."""


def export_network(weights: str, output: str, height: int | None, width: int | None, precision: str,
                   vocabulary: list[str] | None, opset: int, config: Path | None, clip_config: Path | None,
                   allow_hub_clip: bool = False, null: bool = False) -> None:
    """Export the per-frame network to ONNX (the file ``output``; through a symbolic link there to the file it names)
    and check it against the fp32 PyTorch network with onnxruntime (diffs on stderr): an fp32 file past the bar is not
    written (exit 1); an fp16 file past its bar is written with a warning. The file's path is listed on stdout, ended
    by a NUL character with ``null``."""
    if precision not in ("fp32", "fp16"):
        raise typer.BadParameter(f"--precision must be fp32 or fp16, not {precision!r}")
    from clipvis.cli.atomic import (
        OutputNotWritableError,
        atomic_output_path,
        ensure_output_dir,
        output_file_target,
        remove_stale_temp_files_of,
        temp_file_held,
    )
    from clipvis.cli.exporters.onnx import supported_opsets

    opsets = supported_opsets()
    if opset not in opsets:
        raise typer.BadParameter(f"--opset must be {opsets.start} to {opsets.stop - 1} (the opsets this torch "
                                 f"exports), not {opset}")
    given = {flag: value for flag, value in (("--height", height), ("--width", width)) if value is not None}
    if any(value % 32 for value in given.values()):  # checked before the model loads, naming what was given
        if len(given) == 2:
            raise typer.BadParameter(f"--height/--width must be multiples of 32 (got {height}x{width})")
        (flag, value), = given.items()
        raise typer.BadParameter(f"{flag} must be a multiple of 32 (got {value})")
    if output == "-":
        raise typer.BadParameter("-o -: an ONNX file cannot go to stdout; give the .onnx file to write")
    path = Path(output)
    # known before minutes of export and parity checks, not after; "models/" names a folder even where none is yet
    # (usage errors, as -o - and -o "" are)
    if path.is_dir():
        raise typer.BadParameter(f"-o {output}: is a folder; give the .onnx file to write (e.g. -o "
                                 f"{path / 'clipvis.onnx'})")
    if output.endswith(tuple(filter(None, (os.sep, os.altsep)))):
        raise typer.BadParameter(f"-o {output}: names a folder (ends with {output[-1]}); give the .onnx file to "
                                 f"write (e.g. -o {path / 'clipvis.onnx'})")
    try:
        target = output_file_target(path)  # a device or a pipe is refused; a symbolic link is written through
    except OutputNotWritableError as error:
        raise fail(str(error)) from None
    started = time.time()  # a temporary file of this target older than this, and unlocked, is a killed run's
    check_config_file(config, clip_config)
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as error:
        stop = error.__cause__ or error.__context__  # Ctrl-C or SIGTERM while a compiled module initialised
        if isinstance(stop, KeyboardInterrupt):
            raise stop from None
        raise fail("ONNX export needs onnx and onnxruntime: pip install 'clipvis[onnx]'") from None

    from clipvis.cli.exporters.onnx import export_onnx, judge_parity, stdout_captured
    from clipvis.model.onnx_export import FrameNetwork

    try:
        ensure_output_dir(target.parent)  # created (or found not writable) before the model loads
    except OutputNotWritableError as error:
        raise fail(str(error)) from None
    options = SegmentOptions(
        vocabulary=vocabulary or ["object"], weights=weights, device="cpu", precision="fp32",
        config=str(config) if config else None, clip_config=str(clip_config) if clip_config else None,
        allow_hub_clip=allow_hub_clip,
    )
    predictor = load_predictor(options, weights_option="--model", weights_flag="--model")
    try:
        metadata = checkpoint_metadata(options)
    except OSError as error:
        raise fail(subject_message(error, weights)) from None
    model = predictor.model
    height, width = default_frame_size(model.config.min_size_test, height, width, model.config.max_size_test)
    network = FrameNetwork(model, predictor.text if vocabulary else None)
    try:
        with atomic_output_path(target) as temporary, temp_file_held(temporary):
            remove_stale_temp_files_of(target, started)  # of runs killed while writing it (a full-size file each)
            with stdout_captured():  # stdout carries only the file written: not the exporter's graph dumps
                export_onnx(network, temporary, height, width, precision=precision, opset=opset,
                            metadata=metadata)
            verdict = judge_parity(network, temporary, height, width, precision=precision,
                                   on_check=lambda parity: typer.echo(_parity_line(parity, height, width), err=True))
            past = ", ".join(f"{name} {diff:.2e} (bar {verdict.checks[-1].bar(name):.2e})"
                             for name, diff in verdict.exceeded.items())
            if verdict.exceeded and precision == "fp32":  # the temporary file goes: no file that is not the network
                raise ParityError(f"{shown_path(path)} not written: onnxruntime does not reproduce PyTorch on "
                                  f"{verdict.frames_past} of {verdict.frames} random frames: {past}")
    except (OutputNotWritableError, ParityError) as error:
        raise fail(str(error)) from None
    except (RuntimeError, ValueError) as error:
        raise fail(subject_message(f"ONNX export failed: {describe_exception(error)}", weights)) from None
    except OSError as error:  # a full disk, an I/O error while writing the file (its temporary name is removed)
        raise fail(f"{shown_path(path)} not written: {describe_exception(error)}") from None
    if verdict.frames_past and not verdict.exceeded:
        typer.echo(f"clipvis: {verdict.frames_past} of {verdict.frames} random frames past the bar, the others "
                   "within it: a value the network thresholds at 0 (an attention or pooling mask logit) falls on the "
                   f"other side in onnxruntime on such a frame ({'float32' if precision == 'fp32' else 'float16'} "
                   "rounding); a file that is wrong is past the bar on half of the frames or more, or far past it",
                   err=True)
    if verdict.exceeded:
        print_warning(f"{shown_path(path)}: the fp16 file is further from the fp32 network than float16 rounding "
                      f"explains on {verdict.frames_past} of {verdict.frames} random frames: {past}")
    StdoutListing(lambda level, message: print_warning(message), "the file is written all the same", null).list(path)


def _under_torchrun() -> bool:
    """Whether this process is one of several torchrun started (``WORLD_SIZE`` above 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return True  # set, and not a number: not one process either


def default_frame_size(short_edge: int, height: int | None, width: int | None,
                       max_size: int = sys.maxsize) -> tuple[int, int]:
    """The frame size to export, each default rounded up to a multiple of 32 (the padded size holds the frame):
    neither given, the padded size of a 16:9 video as the model resizes it (INPUT.MIN_SIZE_TEST `short_edge`,
    INPUT.MAX_SIZE_TEST `max_size`: 480 -> 480x864; 360 -> 384x640, the width from the 360 short edge, not the padded
    384; a model that does not resize, INPUT.MIN_SIZE_TEST 0: a 1280x720 video's, 736x1280); one given, the
    other is that of a 16:9 frame of it (--height 256 -> 256x480, 256 * 16 / 9 = 455 up to 480; --width 480 ->
    288x480, 480 * 9 / 16 = 270 up to 288)."""
    from clipvis.model.preprocess import resized_shape

    if height is None and width is not None:
        return _padded(width * 9 // 16), width
    if height is None:  # a 1280x720 video's frames as the model resizes them (or keeps them: short edge 0)
        resized = resized_shape(NO_RESIZE_HEIGHT, NO_RESIZE_HEIGHT * 16 // 9, short_edge, max_size)
        return _padded(resized[0]), width or _padded(resized[1])
    return height, width or _padded(height * 16 // 9)


NO_RESIZE_HEIGHT = 720  # the default export height of a model that runs frames at their own size


def _padded(size: int) -> int:
    """`size` rounded up to a multiple of 32 (the network's stride)."""
    return -(-size // 32) * 32


def checkpoint_metadata(options: SegmentOptions) -> dict[str, str]:
    """The ONNX file's metadata naming the weights it holds: `checkpoint` (a released checkpoint's name, or the
    resolved path of the file), `checkpoint_bytes` and `checkpoint_sha256` of that file."""
    from clipvis.cli.run_identity import checkpoint_identity, file_digest

    data = {"checkpoint": options.weights_identity()}
    if options.checkpoint is not None:
        digest = file_digest(options.checkpoint["file"])
        if checkpoint_identity(options.checkpoint["file"]) != options.checkpoint:  # replaced since it loaded
            raise OSError(f"{options.checkpoint['file']}: changed while the export read it; export again")
        data |= {"checkpoint_bytes": str(options.checkpoint["bytes"]), "checkpoint_sha256": digest}
    return data
