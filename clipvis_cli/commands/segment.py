"""`clipvis segment`: segment, track and label every object of the given classes in videos."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import nullcontext, suppress
from functools import partial
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clipvis.cli.atomic import OutputNotWritableError, ensure_output_dir
from clipvis.cli.commands.common import (
    NOTHING_ON_STDIN,
    check_media_url,
    device_option,
    finite_number,
    input_path_option,
    media_url_option,
    output_folder_option,
    score_option,
)
from clipvis.cli.devices import resolve_device
from clipvis.cli.distributed import (
    DistributedRun,
    InputsDifferError,
    OtherRankFailed,
    RankLost,
    Shard,
    ignore_stop_signals,
    visible_cuda_devices,
)
from clipvis.cli.exits import fail
from clipvis.cli.inputs import (
    SKIPPED_OUTPUT,
    SkippedMatches,
    VideoSource,
    discover_inputs,
    in_path_order,
    read_argument_lines,
)
from clipvis.cli.job_outcome import check_same_producer, outcome_of_the_job
from clipvis.cli.listing import StdoutListing
from clipvis.cli.memory import HeapTrimmer, prefer_huge_pages
from clipvis.cli.predictor_loading import check_config_file, check_precision, load_predictor
from clipvis.cli.progress import ALREADY_COMPLETE, Reporter, download_lines, make_reporter, warning_sayer
from clipvis.cli.segment import (
    DEFAULT_FORMATS,
    DEFAULT_IMAGE_FPS,
    FORMATS,
    SegmentOptions,
    SegmentRunner,
)
from clipvis.cli.vocabulary_options import parse_vocabulary
from clipvis.model.vocabulary import class_name
from clipvis.paths import NO_SUCH_FILE, missing_reason
from clipvis.weights import DEFAULT_PRETRAINED, DownloadReporter

if TYPE_CHECKING:  # the model package: imported when the weights load, not when the CLI starts
    from clipvis.model import VideoPredictor

KEPT = "the finished outputs are kept and a rerun skips them"  # what a job that stops early leaves


class TakenInputs:
    """Under torchrun: the inputs this rank takes from the job's queue (``positions``), counted as they are taken, for
    a summary of this rank's own inputs when the other ranks' counts are unknown."""

    def __init__(self, positions: Iterable[int]) -> None:
        self.positions = positions
        self.count = 0

    def __iter__(self) -> Iterator[int]:
        for position in self.positions:
            self.count += 1
            yield position


# What `clipvis segment --help` says the command does (Typer's help=, clipvis.cli.app: a docstring is gone under
# python -OO, and the help with it)
SEGMENT_HELP = (
    "Segment and track every object of the given classes; write overlay.mp4, ytvis.json, coco.json, run.json."
)


def segment(
    inputs: list[str] = typer.Argument(
        ..., metavar="INPUTS",
        help="Video files, folders (recursive; a folder of images is one video), globs, or - for paths on stdin.",
    ),
    vocab: str | None = typer.Option(None, "--vocab", help='Comma-separated class names, e.g. "cat,dog,kite".'),
    vocab_file: Path | None = input_path_option(
        "--vocab-file", help="One class per line; a line may list synonyms separated by commas."
    ),
    weights: str = typer.Option(
        DEFAULT_PRETRAINED, "--weights", help="A released checkpoint name, a checkpoint file (.pth, .safetensors) or "
        "a training output folder (its newest checkpoint).",
    ),
    config: Path | None = input_path_option(
        "--config", help="Model settings: an official CLIP-VIS YAML (detectron2 keys) or a clipvis JSON."
    ),
    clip_config: Path | None = input_path_option(
        "--clip-config", help="open_clip model config JSON for a CLIP open_clip does not know by name."
    ),
    allow_hub_clip: bool = typer.Option(
        False, "--allow-hub-clip",
        help="Let a config or checkpoint without CLIP weights name a CLIP other than the released models' "
        "(e.g. hf-hub:...) and download it.",
    ),
    output_name: str = typer.Option(
        "clipvis_out", "-o", "--output", help="Output root; one folder per input.", callback=output_folder_option,
        metavar="<path>",
    ),
    formats: str = typer.Option(
        ",".join(DEFAULT_FORMATS), "--formats",
        help=f"Comma-separated, any of: {', '.join(FORMATS)} (all but overlay, ytvis and coco as in clipvis export).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.", callback=device_option),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or bf16."),
    batch_frames: int = typer.Option(4, "--batch-frames", min=1, help="Frames per model batch."),
    stride: int = typer.Option(1, "--stride", min=1, help="Process every Nth frame."),
    max_frames: int | None = typer.Option(None, "--max-frames", min=1, help="Stop after N processed frames."),
    score_threshold: float = typer.Option(
        0.0, "--score-threshold", help="Drop tracks scoring below this (0..1).", callback=score_option
    ),
    max_tracks: int | None = typer.Option(
        None, "--max-tracks", min=1, show_default=False,
        help="At most N tracks per video (default: the config's TEST.DETECTIONS_PER_IMAGE, 50 as the official "
        "evaluator).",
    ),
    exact: bool = typer.Option(
        False, "--exact",
        help="The official evaluator's selection and masks (PIL resize, unsorted top TEST.DETECTIONS_PER_IMAGE, 50).",
    ),
    overlay_min_score: float = typer.Option(
        0.2, "--overlay-min-score", help="Draw tracks scoring at least this (0..1) on overlay.mp4 (JSON files keep "
        "all).", callback=score_option,
    ),
    media_url: str = media_url_option(),
    image_fps: float = typer.Option(
        DEFAULT_IMAGE_FPS, "--image-fps", min=0.001, max=1000, callback=finite_number,
        help="Frame rate of image-folder inputs (overlay.mp4, ytvis.json), e.g. 6 for YouTube-VIS "
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
    if exact and (max_tracks is not None or score_threshold != 0.0):
        raise typer.BadParameter(
            "--exact writes the official evaluator's results (its TEST.DETECTIONS_PER_IMAGE per video, 50, unsorted, "
            "no threshold): leave out --max-tracks and --score-threshold, or --exact"
        )
    output = Path(output_name)  # a str option: an empty -o is told from "." (output_folder_option)
    prefer_huge_pages()  # before any tensor exists (clipvis.cli.memory)
    try:
        job = DistributedRun.from_env()
    except ValueError as error:
        raise fail(str(error)) from None
    # Under torchrun every rank joins first: whatever fails on one rank alone from here on (a file, CUDA, the weights
    # on one machine) ends the others too, at their next gather (clipvis.cli.distributed).
    with outcome_of_the_job(job, KEPT):
        with job.joined() if job is not None else nullcontext():
            stdin_arguments = _stdin_of_the_job(job, null) if "-" in inputs else []
            vocabulary, chosen, sources, part, warnings, notes = _checked_arguments(
                inputs, stdin_arguments, vocab, vocab_file, formats, precision, log_format, config, clip_config, shard
            )
            check_media_url(media_url, chosen, "--formats")
            _check_track_limits(max_tracks, chosen)
            if not sources:  # `find -newer ... | clipvis segment -` found nothing new: no input, no weights loaded
                reporter = make_reporter(log_format, job)
                if job is None or job.is_main:
                    nothing = {"complete": 0, "skipped": 0, "failed": 0, ALREADY_COMPLETE: 0}
                    reporter.batch_finished(nothing, 0, NOTHING_ON_STDIN)
                reporter.close()
                return
            if shard is not None:  # video ids and folder names from one order, whatever order each shard was given
                sources = in_path_order(sources)  # its inputs in: the order one process gives a folder of them
            positions: Iterable[int] = part.select(sources, key=lambda source: str(source.path))
            total = len(positions)  # this shard's inputs (all of them without --shard)
            if job is not None:
                positions = TakenInputs(_taken_by_this_rank(job, sources, positions))
                device = job.device(device, visible_cuda_devices())

            def make_options() -> SegmentOptions:
                return SegmentOptions(
                    vocabulary=vocabulary, weights=weights, output=output, formats=chosen,
                    device=resolve_device(device), precision=precision, batch_frames=batch_frames, stride=stride,
                    max_frames=max_frames, score_threshold=score_threshold, max_tracks=max_tracks, exact=exact,
                    skip_existing=skip_existing, overlay_min_score=overlay_min_score, image_fps=image_fps,
                    media_url=media_url,
                    config=str(config) if config else None, clip_config=str(clip_config) if clip_config else None,
                    allow_hub_clip=allow_hub_clip,
                )

            named = "--vocab" if vocab is not None else str(vocab_file)  # what a refused vocabulary is said of
            downloads = download_lines(log_format, job.rank if job is not None else None)
            options, predictor = (make_options(), None) if job is None else \
                _start_rank(job, make_options, warning_sayer(log_format, job), named, downloads)
            if predictor is not None:  # under torchrun, loaded by every rank before it takes an input
                _check_config_track_limit(options, predictor)
            reporter = make_reporter(log_format, job)
            if job is None or job.is_main:  # every rank found the same inputs: said once
                for warning in warnings:
                    reporter.say("warning", warning)
                for note in notes:
                    reporter.say("note", note)
            if total == 0 and shard is not None and (job is None or job.is_main):  # exit 0, but not in silence
                reporter.say("note", f"shard {shard.strip()} holds none of the {len(sources)} input(s): nothing to do")
            try:
                counts = _run_inputs(options, sources, positions, reporter, vocabulary, job, null, predictor, total,
                                     vocabulary_source=named, downloads=downloads)
                code = _finish(counts, total, job, reporter, positions if isinstance(positions, TakenInputs) else None)
            finally:
                reporter.close()
    if code:
        raise typer.Exit(code)


def _check_track_limits(max_tracks: int | None, formats: Iterable[str]) -> None:
    """A usage error for a ``--max-tracks`` above what one of ``formats`` holds (png-masks' track ids 1..255, MOTS'
    1..999): track ids are ranks 1..N, so the video's file of that format would fail once the model had run."""
    from clipvis.cli.exporters.id_maps import TRACK_LIMITS

    if max_tracks is None:
        return
    for name in formats:
        limit = TRACK_LIMITS.get(name)
        if limit is not None and max_tracks > limit:
            raise typer.BadParameter(f"--max-tracks {max_tracks} with --formats {name}: {name} holds track ids "
                                     f"1..{limit} (give --max-tracks {limit} or less, or leave {name} out of "
                                     "--formats)")


def _check_config_track_limit(options: SegmentOptions, predictor: VideoPredictor) -> None:
    """Once the model is loaded and before any input runs: a usage error where every video would keep more tracks
    than one of the formats holds, as the config's TEST.DETECTIONS_PER_IMAGE (the default ``--max-tracks``, now in
    ``options.max_tracks``) lets it, naming the config key it came from. Unknown before the weights load, it let the
    model run over every input for that format's file to fail each time, and again on every rerun
    (`_check_track_limits` sees a --max-tracks given). A video keeps at most that many of its queries x classes
    scored pairs (track ids are ranks among them): a vocabulary of few classes, or a --score-threshold (which keeps
    fewer, by how many cannot be told here), is left to the check of each video's file."""
    from clipvis.cli.exporters.id_maps import TRACK_LIMITS
    from clipvis.model.config import config_file_key

    tracks = options.max_tracks
    if tracks is None or options.score_threshold > 0:
        return
    most = min(tracks, predictor.model.config.num_queries * len(options.vocabulary))
    over = [(name, TRACK_LIMITS[name]) for name in options.formats if name in TRACK_LIMITS]
    over = [(name, limit) for name, limit in over if most > limit]
    if not over:
        return
    name, limit = min(over, key=lambda pair: pair[1])
    key = config_file_key(options.config, "detections_per_video") if options.config else None
    if key is not None:
        source, where = f"--config {options.config}'s {key}", f"in {options.config}"
    else:  # the checkpoint's own config (the file given with --config does not set it)
        key = "TEST.DETECTIONS_PER_IMAGE"
        source, where = f"the checkpoint's config ({key}, detections_per_video)", "with a --config"
    if options.exact:  # --exact refuses --max-tracks: the config decides how many tracks it keeps
        remedy = f"--exact keeps that many: set {key} to {limit} or less {where}"
    else:
        remedy = f"give --max-tracks {limit} or less"
    raise typer.BadParameter(f"--formats {name}: {name} holds track ids 1..{limit}, but {source} keeps up to {tracks} "
                             f"tracks per video ({remedy}, or leave {name} out of --formats)")


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


def _start_rank(
    job: DistributedRun, make_options: Callable[[], SegmentOptions], say: Callable[[str], None],
    vocabulary_source: str = "the vocabulary", downloads: DownloadReporter | None = None,
) -> tuple[SegmentOptions, VideoPredictor]:
    """Under torchrun: this rank's options and predictor (loaded before it takes an input from the job's queue), once
    every rank has them and they run the same model, vocabulary and settings (``check_same_producer``).

    A rank that cannot start (its device, its weights) says why and stops at the gather after the one here, leaving
    every input to the others (rank 0 then says it stopped); the ranks that started are compared among themselves."""
    try:
        options = make_options()
        predictor = load_predictor(options, say=say, vocabulary_source=vocabulary_source, downloads=downloads)
    except typer.Exit as error:
        check_same_producer(job, None)
        raise error from None
    check_same_producer(job, options)
    return options, predictor


def _taken_by_this_rank(job: DistributedRun, sources: list[VideoSource], positions: list[int]) -> Iterator[int]:
    """Under torchrun: the inputs (of ``positions``) this rank runs, taken one at a time as it is free, largest
    first (clipvis.cli.distributed). Every rank must find the same inputs; one line and exit 1 otherwise."""
    try:
        return job.largest_first([str(s.path) for s in sources], positions, lambda p: sources[p].size_estimate())
    except InputsDifferError as error:
        raise fail(str(error)) from None


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
) -> tuple[list[str], tuple[str, ...], list[VideoSource], Shard, list[str], list[str]]:
    """The vocabulary, output formats, input videos (``stdin_arguments``: what ``-`` stands for), shard, warnings
    about the inputs (images that are no input) and notes (folders clipvis made, skipped) of a `segment` command
    line; typer.BadParameter (or a one-line error for a bad config file) otherwise."""
    vocabulary = parse_vocabulary(vocab, vocab_file)
    chosen = tuple(dict.fromkeys(f.strip() for f in formats.split(",") if f.strip()))  # a repeat once, as export
    unknown = sorted(set(chosen) - set(FORMATS))
    if not chosen:
        raise typer.BadParameter(f"--formats: no format given (choose from {','.join(FORMATS)})")
    if unknown:
        raise typer.BadParameter(f"--formats: unknown {', '.join(unknown)} (use {','.join(FORMATS)})")
    check_precision(precision)
    if log_format not in ("human", "jsonl"):
        raise typer.BadParameter(f"--log-format must be human or jsonl, not {log_format!r}")
    for path, flag in ((config, "--config"), (clip_config, "--clip-config")):
        if path is not None and not path.is_file() and not path.is_dir():  # a folder: check_config_file says so
            reason = missing_reason(path) if not path.exists() else "not a file"
            raise typer.BadParameter(f"{flag} {path}: {'file not found' if reason == NO_SUCH_FILE else reason}")
    check_config_file(config, clip_config)
    warnings: list[str] = []
    filtered: list[SkippedMatches] = []
    folders_skipped: list[str] = []
    sources = discover_inputs(inputs, stdin_arguments, warnings, filtered, folders_skipped)
    # An empty list on stdin (`-` alone) is nothing to do, the caller says so; anything else that finds no input is
    # a usage error.
    if not sources and (stdin_arguments or any(argument != "-" for argument in inputs)):
        skipped = [warning for warning in warnings if f": {SKIPPED_OUTPUT} " in warning]
        why = [f"{len(skipped)} file(s) clipvis wrote skipped: {skipped[0]}"] if skipped else []
        why += folders_skipped
        why += [pattern.warning() for pattern in filtered]  # each pattern that matched only files of other extensions
        raise typer.BadParameter("no input videos found" + (f" ({'; '.join(why)})" if why else ""))
    try:
        part = Shard.parse(shard) if shard is not None else Shard()
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--shard") from None
    return vocabulary, chosen, sources, part, warnings, folders_skipped


def _run_inputs(
    options: SegmentOptions,
    sources: list[VideoSource],
    positions: Iterable[int],
    reporter: Reporter,
    vocabulary: list[str],
    job: DistributedRun | None,
    null: bool,
    predictor: VideoPredictor | None = None,
    total: int = 0,
    vocabulary_source: str = "the vocabulary",
    downloads: DownloadReporter | None = None,
) -> dict[str, int]:
    """Run this process' inputs (``positions`` into ``sources``); how many ended complete, skipped, failed.
    ``predictor``: already loaded (under torchrun, ``_start_rank``). ``total``: the inputs of the batch (of the job
    under torchrun, where an interrupted rank's summary counts the inputs it took, ``TakenInputs``). ``downloads``:
    what a released checkpoint's download says (``--log-format``'s lines or events)."""
    counts = {"complete": 0, "skipped": 0, "failed": 0, ALREADY_COMPLETE: 0}
    taken = positions if isinstance(positions, TakenInputs) else None

    def interrupted(message: str) -> typer.Exit:
        # a second Ctrl-C or SIGTERM, now or on the way out, is the same stop: the summary is said whole, once, and
        # the exit status is the first signal's
        ignore_stop_signals()
        reporter.close()
        reporter.batch_finished(counts, total if taken is None else taken.count, message, error=True,
                                interrupted=True, own=taken is not None)
        return typer.Exit(130)
    made_root = not options.output.exists()
    try:  # once for the batch, not once per input, and before the weights load
        ensure_output_dir(options.output)
    except OutputNotWritableError as error:
        raise fail(f"-o {error}") from None
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
        if predictor is None:
            predictor = load_predictor(options, say=lambda message: reporter.say("warning", message),
                                       vocabulary_source=vocabulary_source, downloads=downloads)
            _check_config_track_limit(options, predictor)
    except (typer.Exit, typer.BadParameter, KeyboardInterrupt) as stop:  # the batch stopped before any input ran
        # (weights, CUDA, a format the config keeps too many tracks for, Ctrl-C or SIGTERM while the weights download
        # or load): no empty output root left behind
        if made_root:
            from clipvis.cli.locks import remove_unused_folder
            from clipvis.cli.writers.layout import FOLDER_JOURNAL

            remove_unused_folder(options.output, (FOLDER_JOURNAL,))
        if isinstance(stop, KeyboardInterrupt):
            raise interrupted("interrupted while loading the weights; no input was run") from None
        raise
    runner = SegmentRunner(predictor, options, reporter, categories=[class_name(v) for v in vocabulary])
    listing = StdoutListing(reporter.say, "each folder's run.json lists its files", null,
                            speaks=None if job is None else partial(job.first_on_this_machine, "stdout-closed"),
                            above_progress=reporter.above_progress)
    try:
        with HeapTrimmer():
            for outcome in runner.run_batch(sources, positions):
                counts[outcome.status] = counts.get(outcome.status, 0) + 1
                counts[ALREADY_COMPLETE] += outcome.already_complete
                if outcome.status != "skipped":  # complete, or failed with the files of some formats written
                    for path in outcome.outputs:
                        listing.list(path)
    except KeyboardInterrupt:
        raise interrupted("interrupted; incomplete outputs were not written") from None
    return counts


def _skipped_summary(skipped: int, already: int) -> str | None:
    """``"3 skipped (already complete)"``, ``"2 skipped (1 already complete, 1 being written by another process)"``:
    the closing line's count of the inputs skipped, by why (``already``: of ``skipped``, those `--skip-existing`
    found complete; the others' folders another process held), or None when none was. A rerun that skips them all
    said nothing otherwise, and an input left to another process (which may yet die) is no input done."""
    if not skipped:
        return None
    busy = skipped - already
    if not busy:
        return f"{skipped} skipped (already complete)"
    if not already:
        return f"{skipped} skipped (being written by another process)"
    return f"{skipped} skipped ({already} already complete, {busy} being written by another process)"


def _unless_empty(positions: Iterable[int]) -> Iterable[int] | None:
    """``positions`` (a list, or an iterator over inputs taken as they come), or None when there are none."""
    if isinstance(positions, Sized):
        return positions if len(positions) else None
    iterator = iter(positions)
    first = next(iterator, None)
    return None if first is None else chain([first], iterator)


def _finish(counts: dict[str, int], total: int, job: DistributedRun | None, reporter: Reporter,
            taken: TakenInputs | None = None) -> int:
    """Report failures (under torchrun: rank 0, once every rank is done, for all ranks) and give the exit code.

    Under torchrun every rank exits 1 when an input failed on any rank. Not only rank 0: torchrun's agent on a
    machine whose processes all exited 0 waits at its exit barrier for the agents of the other machines, and an
    agent whose process failed never comes there, so the machines without a failure would wait out the barrier's
    timeout (300 s) before exiting; the failed run also gets a non-zero exit code on every machine. Rank 0's progress
    runs until every rank is done; the reporter is closed before the summary line.

    When another rank stopped (an error, an interruption) or is gone without a word, the others' counts are lost:
    the rank that speaks says so through the reporter (a JSON ``error`` event with ``--log-format jsonl``), and rank 0
    then sums up its own inputs (``taken``: those it took), the summary last."""
    if job is None:
        reporter.close()
        parts = [f"{counts['failed']} of {total} input(s) failed"] if counts["failed"] else []
        skipped = _skipped_summary(counts["skipped"], counts.get(ALREADY_COMPLETE, 0))
        parts += [skipped] if skipped else []
        reporter.batch_finished(counts, total, ", ".join(parts) or None)
        return 1 if counts["failed"] else 0
    try:
        every_rank = job.last_gather(counts)
    except OtherRankFailed as error:  # RankLost included
        reporter.close()
        if error.speaks if isinstance(error, RankLost) else job.is_main:
            reporter.say("error", f"{error}; {KEPT}")
            error.said = True
        if job.is_main:
            mine = taken.count if taken is not None else sum(counts[s] for s in ("complete", "skipped", "failed"))
            reporter.batch_finished(
                counts, mine, f"{total} input(s) over {job.world_size} processes; this one took {mine} and ended "
                f"{counts['complete']} complete, {counts['skipped']} skipped, {counts['failed']} failed",
                interrupted=error.interrupted, own=True,  # the error was said just above
            )
        raise
    except KeyboardInterrupt:  # held during the gather (signals_held), raised once it was complete
        ignore_stop_signals()  # another is the same stop (``interrupted`` in _run_inputs)
        reporter.close()
        mine = taken.count if taken is not None else sum(counts[s] for s in ("complete", "skipped", "failed"))
        reporter.batch_finished(counts, mine, f"interrupted while waiting for the other processes; {KEPT}",
                                error=True, interrupted=True, own=True)
        raise typer.Exit(130) from None
    reporter.close()
    failed = sum(c["failed"] for c in every_rank)
    if job.is_main:
        complete, skipped = sum(c["complete"] for c in every_rank), sum(c["skipped"] for c in every_rank)
        already = sum(c.get(ALREADY_COMPLETE, 0) for c in every_rank)
        reporter.batch_finished(
            {"complete": complete, "skipped": skipped, "failed": failed, ALREADY_COMPLETE: already}, total,
            f"{total} input(s) over {job.world_size} processes: {complete} complete, "
            f"{_skipped_summary(skipped, already) or '0 skipped'}, {failed} failed",
        )
    return 1 if failed else 0
