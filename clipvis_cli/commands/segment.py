"""`clipvis segment`: segment, track and label every object of the given classes in videos."""

from __future__ import annotations

import math
import sys
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager, nullcontext, suppress
from itertools import chain
from pathlib import Path

import typer

from clipvis.cli.atomic import OutputNotWritableError, ensure_output_dir
from clipvis.cli.collector import collector_paused
from clipvis.cli.distributed import (
    DistributedRun,
    InputsDifferError,
    OtherRankFailed,
    RankLost,
    RanksDifferError,
    Shard,
    repeats_a_first_process,
    visible_cuda_devices,
)
from clipvis.cli.inputs import VideoSource, discover_inputs, read_argument_lines
from clipvis.cli.memory import HeapTrimmer, prefer_huge_pages
from clipvis.cli.messages import describe_exception, print_error, print_path, print_warning, subject_message
from clipvis.cli.progress import HumanReporter, JobProgressReporter, JsonlReporter, Reporter
from clipvis.cli.segment import (
    DEFAULT_FORMATS,
    DEFAULT_IMAGE_FPS,
    FORMATS,
    SegmentOptions,
    SegmentRunner,
    checkpoint_identity,
)
from clipvis.weights import DEFAULT_PRETRAINED


def _fail(message: str, code: int = 1) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def parse_vocabulary(vocab: str | None, vocab_file: Path | None) -> list[str]:
    """Class strings for the model: `--vocab "a,b"` or one class per line of a file (a line may list
    comma-separated synonyms, the first being the class name). Raises typer.BadParameter."""
    if (vocab is None) == (vocab_file is None):
        raise typer.BadParameter("give exactly one of --vocab or --vocab-file")
    if vocab is not None:
        names = [name.strip() for name in vocab.split(",")]
        source = "--vocab"
    else:
        try:
            lines = vocab_file.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise typer.BadParameter(f"{vocab_file}: cannot read ({error})") from error
        names = [", ".join(part.strip() for part in line.split(",")) for line in lines if line.strip()]
        source = str(vocab_file)
    if not names or any(not part.strip() for name in names for part in name.split(",")):
        raise typer.BadParameter(f"{source}: empty class name (classes are separated by commas / lines)")
    firsts = [unicodedata.normalize("NFC", class_name(n)).casefold() for n in names]  # "café" typed two ways
    duplicates = sorted({n for n in firsts if firsts.count(n) > 1})
    if duplicates:
        raise typer.BadParameter(f"{source}: duplicate class names: {', '.join(duplicates)}")
    return names


def class_name(entry: str) -> str:
    return entry.split(",")[0].strip()


def check_precision(precision: str) -> None:
    """Raise typer.BadParameter unless `precision` is one the predictor runs (`clipvis.model.PRECISIONS`)."""
    from clipvis.model import PRECISIONS  # imports torch: only when a command runs, not for --help

    if precision not in PRECISIONS:
        raise typer.BadParameter(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise _fail(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise _fail(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device != "cpu":
        raise typer.BadParameter(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")
    return device


DEFAULT_MAX_TRACKS = 50  # --max-tracks: the official evaluator's results per video


def finite_number(value: float | None) -> float | None:
    """Typer callback: a number option must be finite (``nan`` or ``inf`` would drop every track silently and write
    run.json values that are not JSON)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def segment(
    inputs: list[str] = typer.Argument(
        ..., help="Video files, folders (recursive; a folder of images is one video), globs, or - for paths on stdin."
    ),
    vocab: str | None = typer.Option(None, "--vocab", help='Comma-separated class names, e.g. "cat,dog,kite".'),
    vocab_file: Path | None = typer.Option(
        None, "--vocab-file", help="One class per line; a line may list synonyms separated by commas."
    ),
    weights: str = typer.Option(DEFAULT_PRETRAINED, "--weights", help="Released checkpoint name or a checkpoint path."),
    config: Path | None = typer.Option(
        None, "--config", help="Model settings: an official CLIP-VIS YAML (detectron2 keys) or a clipvis JSON."
    ),
    clip_config: Path | None = typer.Option(
        None, "--clip-config", help="open_clip model config JSON for a CLIP open_clip does not know by name."
    ),
    allow_hub_clip: bool = typer.Option(
        False, "--allow-hub-clip",
        help="Let a config or checkpoint without CLIP weights name a CLIP other than the released models' "
        "(e.g. hf-hub:...) and download it.",
    ),
    output: Path = typer.Option(Path("clipvis_out"), "-o", "--output", help="Output root; one folder per input."),
    formats: str = typer.Option(
        ",".join(DEFAULT_FORMATS), "--formats",
        help=f"Comma-separated, any of: {', '.join(FORMATS)} (all but overlay, ytvis and coco as in clipvis export).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or bf16."),
    batch_frames: int = typer.Option(4, "--batch-frames", min=1, help="Frames per model batch."),
    stride: int = typer.Option(1, "--stride", min=1, help="Process every Nth frame."),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1, help="Stop after N processed frames."),
    score_threshold: float = typer.Option(
        0.0, "--score-threshold", help="Drop tracks scoring below this.", callback=finite_number
    ),
    max_tracks: int = typer.Option(DEFAULT_MAX_TRACKS, "--max-tracks", min=1, help="At most N tracks per video."),
    exact: bool = typer.Option(
        False, "--exact", help="The official evaluator's selection and masks (PIL resize, unsorted top 50)."
    ),
    overlay_min_score: float = typer.Option(
        0.2, "--overlay-min-score", help="Draw tracks scoring at least this on overlay.mp4 (JSON files keep all).",
        callback=finite_number,
    ),
    image_fps: float = typer.Option(
        DEFAULT_IMAGE_FPS, "--image-fps", min=0.001, max=1000, callback=finite_number,
        help="Frame rate of image-folder inputs (overlay.mp4, ytvis.json, Label Studio), e.g. 6 for YouTube-VIS "
        "frames.",
    ),
    skip_existing: bool = typer.Option(
        True, "--skip-existing/--overwrite", help="Skip inputs already complete with the same settings."
    ),
    log_format: str = typer.Option("human", "--log-format", help="human (progress on a terminal) or jsonl."),
    shard: str | None = typer.Option(
        None, "--shard", help="K/N: only shard K (counted from 0) of N of the inputs sorted by path, for job arrays. "
        "Under torchrun the processes share the inputs by themselves.",
    ),
    null: bool = typer.Option(
        False, "-0", "--null", help="Paths on stdin (-) are separated by NUL characters and the paths written to "
        "stdout end with one (find -print0, xargs -0): for file names that hold newlines.",
    ),
) -> None:
    """Segment and track every object of the given classes; write overlay.mp4, ytvis.json, coco.json, run.json."""
    if exact and (max_tracks != DEFAULT_MAX_TRACKS or score_threshold != 0.0):
        raise typer.BadParameter(
            "--exact writes the official evaluator's results (its 50 per video, unsorted, no threshold): leave out "
            "--max-tracks and --score-threshold, or --exact"
        )
    prefer_huge_pages()  # before any tensor exists (clipvis.cli.memory)
    try:
        job = DistributedRun.from_env()
    except ValueError as error:
        raise _fail(str(error)) from None
    # Under torchrun every rank joins first: whatever fails on one rank alone from here on (a file, CUDA, the weights
    # on one machine) ends the others too, at their next gather (clipvis.cli.distributed).
    with outcome_of_the_job(job, "the finished outputs are kept and a rerun skips them"):
        with job.joined() if job is not None else nullcontext():
            stdin_arguments = _stdin_of_the_job(job, null) if "-" in inputs else []
            vocabulary, chosen, sources, part = _checked_arguments(
                inputs, stdin_arguments, vocab, vocab_file, formats, precision, log_format, config, clip_config, shard
            )
            positions: Iterable[int] = part.select(sources, key=lambda source: str(source.path))
            total = len(positions)  # this shard's inputs (all of them without --shard)
            if total == 0 and shard is not None and (job is None or job.is_main):  # exit 0, but not in silence
                typer.echo(f"clipvis: shard {shard.strip()} holds none of the {len(sources)} input(s): nothing to do",
                           err=True)
            if job is not None:
                positions = _taken_by_this_rank(job, sources, positions)
                device = job.device(device, visible_cuda_devices())

            def make_options() -> SegmentOptions:
                return SegmentOptions(
                    vocabulary=vocabulary, weights=weights, output=output, formats=chosen,
                    device=resolve_device(device), precision=precision, batch_frames=batch_frames, stride=stride,
                    max_frames=max_frames, score_threshold=score_threshold, max_tracks=max_tracks, exact=exact,
                    skip_existing=skip_existing, overlay_min_score=overlay_min_score, image_fps=image_fps,
                    config=str(config) if config else None, clip_config=str(clip_config) if clip_config else None,
                    allow_hub_clip=allow_hub_clip,
                )

            options, predictor = (make_options(), None) if job is None else _start_rank(job, make_options)
            reporter = make_reporter(log_format, job)
            try:
                counts = _run_inputs(options, sources, positions, reporter, vocabulary, job, null, predictor)
                code = _finish(counts, total, job, reporter)
            finally:
                reporter.close()
    if code:
        raise typer.Exit(code)


@contextmanager
def outcome_of_the_job(job: DistributedRun | None, kept: str) -> Iterator[None]:
    """How a torchrun job's endings reach the user: one line, from rank 0 (or the rank that knows), and the exit code
    every rank gives (``kept``: what is left of the work, e.g. "the finished outputs are kept ..."). Ranks that run
    other models stop at once (1); a rank gone without a word (1); a usage error every rank finds in the same command
    line, printed by rank 0 alone (2); another rank's error, which that rank printed (1, 130 when interrupted)."""
    try:
        yield
    except RanksDifferError as error:  # every rank knows; rank 0 says what differs
        if job.is_main:
            print_error(str(error))
        raise typer.Exit(1) from None
    except RankLost as error:  # gone without a word: one line, from rank 0 (or the other rank of two)
        if error.speaks:
            print_error(f"{error}; {error.done or kept}")
        raise typer.Exit(1) from None
    except typer.BadParameter as error:
        if job is not None and job.main_stopped_too:
            raise typer.Exit(2) from None
        if job is not None and repeats_a_first_process():  # this rank's own: the application says these once
            print_error(f"rank {job.rank}: {error.format_message()}")
            raise typer.Exit(2) from None
        raise
    except OtherRankFailed as error:  # its own line came from that rank
        if job.is_main:
            print_error(f"{error}; {kept}")
        raise typer.Exit(130 if error.interrupted else 1) from None


def _stdin_of_the_job(job: DistributedRun | None, null: bool) -> list[str]:
    """What ``-`` stands for (``null``: NUL-separated). Under torchrun only rank 0 reads this process' stdin and every
    rank gets its entries: the processes of one machine share one stdin, whichever reads first takes all of it (or a
    part, mid-line), and the ranks must agree on the inputs to split them."""
    try:
        if job is None:
            return read_argument_lines(sys.stdin, null)
        return job.from_main(read_argument_lines(sys.stdin, null) if job.is_main else None)
    except ValueError as error:  # a --null list without NUL characters
        raise typer.BadParameter(str(error)) from None


def _start_rank(job: DistributedRun, make_options: Callable[[], SegmentOptions]) -> tuple[SegmentOptions, object]:
    """Under torchrun: this rank's options and predictor (loaded before it takes an input from the job's queue), once
    every rank has them and they run the same model, vocabulary and settings (``check_same_producer``).

    A rank that cannot start (its device, its weights) says why and stops at the gather after the one here, leaving
    every input to the others (rank 0 then says it stopped); the ranks that started are compared among themselves."""
    try:
        options = make_options()
        predictor = load_predictor(options)
    except typer.Exit as error:
        check_same_producer(job, None)
        raise error from None
    check_same_producer(job, options)
    return options, predictor


def check_same_producer(job: DistributedRun, options: SegmentOptions | None) -> None:
    """Under torchrun, with the weights loaded (``options.checkpoint`` set): every rank must run the same weights,
    vocabulary and result options (clipvis.cli.segment.Producer), or the outputs (evaluate's per-video files, which
    rank 0's cache key then vouches for) would mix two models silently. One gather (two when checkpoint files of the
    same size must be compared by content); on a difference every rank raises RanksDifferError with one line naming
    the first rank that differs. ``options`` None: this rank could not start; it is left out of the comparison."""
    from clipvis.cli.segment import Producer, file_digest
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


def _taken_by_this_rank(job: DistributedRun, sources: list[VideoSource], positions: list[int]) -> Iterator[int]:
    """Under torchrun: the inputs (of ``positions``) this rank runs, taken one at a time as it is free, largest
    first (clipvis.cli.distributed). Every rank must find the same inputs; one line and exit 1 otherwise."""
    try:
        return job.largest_first([str(s.path) for s in sources], positions, lambda p: sources[p].size_estimate())
    except InputsDifferError as error:
        raise _fail(str(error)) from None


def _checked_arguments(
    inputs: list[str],
    stdin_arguments: list[str],
    vocab: str | None,
    vocab_file: Path | None,
    formats: str,
    precision: str,
    log_format: str,
    config: Path | None,
    clip_config: Path | None,
    shard: str | None,
) -> tuple[list[str], tuple[str, ...], list[VideoSource], Shard]:
    """The vocabulary, output formats, input videos (``stdin_arguments``: what ``-`` stands for) and shard of a
    `segment` command line; typer.BadParameter (or a one-line error for a bad config file) otherwise."""
    vocabulary = parse_vocabulary(vocab, vocab_file)
    chosen = tuple(f.strip() for f in formats.split(",") if f.strip())
    unknown = sorted(set(chosen) - set(FORMATS))
    if not chosen:
        raise typer.BadParameter(f"--formats: no format given (choose from {','.join(FORMATS)})")
    if unknown:
        raise typer.BadParameter(f"--formats: unknown {', '.join(unknown)} (use {','.join(FORMATS)})")
    check_precision(precision)
    if log_format not in ("human", "jsonl"):
        raise typer.BadParameter(f"--log-format must be human or jsonl, not {log_format!r}")
    for path, flag in ((config, "--config"), (clip_config, "--clip-config")):
        if path is not None and not path.is_file():
            raise typer.BadParameter(f"{flag} {path}: file not found")
    check_config_file(config, clip_config)
    sources = discover_inputs(inputs, stdin_arguments)
    if not sources:
        raise typer.BadParameter("no input videos found")
    try:
        part = Shard.parse(shard) if shard is not None else Shard()
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--shard") from None
    return vocabulary, chosen, sources, part


def human_reporter(job: DistributedRun | None) -> HumanReporter:
    """Progress bars on a terminal, plain progress lines in a log; under torchrun only rank 0's, of the whole job
    (the others print their one-line errors)."""
    return HumanReporter() if job is None or job.is_main else HumanReporter(interactive=False, log_lines=False)


def make_reporter(log_format: str, job: DistributedRun | None) -> Reporter:
    """The ``--log-format`` reporter; under torchrun it also counts the job's progress, which rank 0 shows (its
    overall bar, or ``job_progress`` lines) until every rank is done."""
    if log_format == "jsonl":
        reporter: Reporter = JsonlReporter(rank=job.rank if job is not None else None)
    else:
        reporter = human_reporter(job)
    return reporter if job is None else JobProgressReporter(reporter, job)


def _run_inputs(
    options, sources, positions, reporter: Reporter, vocabulary, job, null: bool, predictor=None
) -> dict[str, int]:
    """Run this process' inputs (``positions`` into ``sources``); how many ended complete, skipped, failed.
    ``predictor``: already loaded (under torchrun, ``_start_rank``)."""
    counts = {"complete": 0, "skipped": 0, "failed": 0}
    made_root = not options.output.exists()
    try:  # once for the batch, not once per input, and before the weights load
        ensure_output_dir(options.output)
    except OutputNotWritableError as error:
        raise _fail(f"-o {error}") from None
    try:
        # Under torchrun the inputs are taken from the job's queue as they come: taking one claims it for this process,
        # so the weights were loaded first (``predictor``); a process that cannot load them leaves every input to the
        # others.
        positions = _unless_empty(positions)
        if positions is None:  # e.g. a shard without inputs, or a rank the others left nothing to
            if job is not None:  # every rank says its (empty) batch started; rank 0 still shows the others' progress
                reporter.batch_started(0)
            if made_root:  # the root this process made, unless another shard or rank wrote into it meanwhile
                with suppress(OSError):
                    options.output.rmdir()
            return counts
        predictor = predictor or load_predictor(options)
    except (typer.Exit, KeyboardInterrupt) as stop:  # the batch stopped before any input ran (weights, CUDA, Ctrl-C
        # or SIGTERM while the weights download or load): no empty output root left behind
        if made_root:
            from clipvis.cli.locks import remove_unused_folder
            from clipvis.cli.writers.layout import FOLDER_JOURNAL

            remove_unused_folder(options.output, (FOLDER_JOURNAL,))
        if isinstance(stop, KeyboardInterrupt):
            reporter.close()
            print_error("interrupted while loading the weights; no input was run")
            raise typer.Exit(130) from None
        raise
    runner = SegmentRunner(predictor, options, reporter, categories=[class_name(v) for v in vocabulary])
    try:
        with HeapTrimmer():
            for outcome in runner.run_batch(sources, positions):
                counts[outcome.status] = counts.get(outcome.status, 0) + 1
                if outcome.status == "complete":
                    for path in outcome.outputs:
                        print_path(path, null)
    except KeyboardInterrupt:
        reporter.close()
        print_error("interrupted; incomplete outputs were not written")
        raise typer.Exit(130) from None
    return counts


def _unless_empty(positions: Iterable[int]) -> Iterable[int] | None:
    """``positions`` (a list, or an iterator over inputs taken as they come), or None when there are none."""
    if isinstance(positions, Sized):
        return positions if len(positions) else None
    iterator = iter(positions)
    first = next(iterator, None)
    return None if first is None else chain([first], iterator)


def _finish(counts: dict[str, int], total: int, job: DistributedRun | None, reporter: Reporter) -> int:
    """Report failures (under torchrun: rank 0, once every rank is done, for all ranks) and give the exit code.

    Under torchrun every rank exits 1 when an input failed on any rank. Not only rank 0: torchrun's agent on a
    machine whose processes all exited 0 waits at its exit barrier for the agents of the other machines, and an
    agent whose process failed never comes there, so the machines without a failure would wait out the barrier's
    timeout (300 s) before exiting; the failed run also gets a non-zero exit code on every machine. Rank 0's progress
    runs until every rank is done; the reporter is closed before the summary line."""
    if job is None:
        reporter.close()
        if counts["failed"]:
            typer.echo(f"clipvis: {counts['failed']} of {total} input(s) failed", err=True)
        return 1 if counts["failed"] else 0
    try:
        every_rank = job.last_gather(counts)
    except RankLost:  # the other processes' counts are lost: rank 0 says what it knows
        reporter.close()
        if job.is_main:
            typer.echo(
                f"clipvis: {total} input(s) over {job.world_size} processes; this one ended {counts['complete']} "
                f"complete, {counts['skipped']} skipped, {counts['failed']} failed",
                err=True,
            )
        raise
    reporter.close()
    failed = sum(c["failed"] for c in every_rank)
    if job.is_main:
        complete, skipped = sum(c["complete"] for c in every_rank), sum(c["skipped"] for c in every_rank)
        typer.echo(
            f"clipvis: {total} input(s) over {job.world_size} processes: {complete} complete, {skipped} skipped, "
            f"{failed} failed",
            err=True,
        )
    return 1 if failed else 0


def check_config_file(config: Path | None, clip_config: Path | None = None) -> None:
    """Read `--config` and `--clip-config` once before anything loads, so a bad file (unreadable, a `_BASE_` cycle,
    a value no model runs with, a setting open_clip does not know) ends the run with one line naming it (exit 1)."""
    from clipvis.model.config import load_clip_model_config, load_config_file

    for path, read in ((config, load_config_file), (clip_config, load_clip_model_config)):
        if path is None:
            continue
        try:
            read(path)
        except (ValueError, OSError) as error:
            raise _fail(subject_message(error, path)) from None


def load_predictor(options: SegmentOptions):
    """The model and predictor for a run; weights problems end the run with one line (exit 1).

    Also records the identity of the checkpoint file the weights resolved to in `options.checkpoint` (replacing
    that file re-runs inputs that `--skip-existing` would otherwise skip).
    """
    from clipvis.model import CheckpointError, VideoPredictor, load_model
    from clipvis.weights import WeightsError, resolve_weights

    try:
        # Importing open_clip and building the model make long-lived objects, not garbage (clipvis.cli.collector).
        with collector_paused(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # load_model downloads and verifies a released checkpoint (or replaces a damaged cached copy) first; the
            # identity is then taken of the file it loaded.
            model = load_model(
                options.weights, config=options.config, clip_config=options.clip_config, device=options.device,
                allow_hub_clip=options.allow_hub_clip,
            )
            options.checkpoint = checkpoint_identity(resolve_weights(options.weights, download=False))
            predictor = VideoPredictor(
                model, options.vocabulary, device=options.device, precision=options.precision, exact=options.exact
            )
        for warning in caught:
            print_warning(str(warning.message))
        return predictor
    except TypeError as error:  # open_clip building a CLIP from a config with a value of the wrong type
        flag, path = ("--clip-config", options.clip_config) if options.clip_config else ("--config", options.config)
        if path is None:
            raise
        raise _fail(f"{flag} {path}: open_clip cannot build the CLIP it describes ({describe_exception(error)})") \
            from None
    except (CheckpointError, WeightsError, ValueError, RuntimeError, OSError) as error:
        message = describe_exception(error)
        raise _fail(message if options.weights in message else f"weights {options.weights}: {message}") from None
