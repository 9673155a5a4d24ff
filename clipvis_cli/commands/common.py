"""What the commands share: failing with one line, the vocabulary and option checks, the device, the progress
reporter, loading the predictor, and how a torchrun job's endings reach the user."""

from __future__ import annotations

import codecs
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from clipvis.cli.devices import DEVICE_CHOICES, DEVICE_SYNTAX, cuda_index, device_problem
from clipvis.cli.distributed import (
    DistributedRun,
    OtherRankFailed,
    RankLost,
    RanksDifferError,
    repeats_a_first_process,
    stop_in_silence,
)
from clipvis.cli.gc_pause import collector_paused
from clipvis.cli.hub_logging import clip_fetch_logging
from clipvis.cli.messages import (
    MODEL_PARAMETER_FLAGS,
    describe_exception,
    model_error_message,
    print_error,
    print_warning,
    shown_path,
    subject_message,
    unwritable_character,
)
from clipvis.cli.progress import HumanReporter, JobProgressReporter, JsonlReporter, Reporter, download_lines
from clipvis.cli.run_identity import checkpoint_identity
from clipvis.cli.segment import SegmentOptions
from clipvis.model.vocabulary import name_key, repeated_class_names, shared_names, strip_name

if TYPE_CHECKING:  # the model package: imported when the weights load, not when the CLI starts
    from clipvis.model import VideoPredictor
    from clipvis.weights import DownloadReporter

NOTHING_ON_STDIN = "no inputs on stdin: nothing to do"  # `-` alone with an empty list on stdin (segment, export)


def fail(message: str | BaseException, code: int = 1) -> typer.Exit:
    """Print `clipvis: error: message` on stderr and return the Exit to raise."""
    print_error(message)
    return typer.Exit(code)


LONG_TEXT_ENCODING_PROMPTS = 7000  # 500 classes of 14 prompts: a minute or more for a CPU's text tower


def _say_long_text_encoding(classes: int, prompts: int, say: Callable[[str], None]) -> None:
    """One line before a large vocabulary's text is encoded: 20,000 names took minutes without a word."""
    if prompts >= LONG_TEXT_ENCODING_PROMPTS:
        say(f"encoding the {classes} class names' {prompts} prompts with CLIP's text tower first (minutes on a CPU "
            "for thousands of names; the cache keeps them for later runs)")


def parse_vocabulary(vocab: str | None, vocab_file: Path | None) -> list[str]:
    """Class strings for the model: `--vocab "a,b"` or one class per line of a UTF-8 file (a line may list
    comma-separated synonyms, the first being the class name; blank lines and lines starting with `#` are skipped).
    Names lose the whitespace and invisible format characters at their ends, as the predictor takes them
    (`clipvis.model.vocabulary`: the rules of class names). Raises typer.BadParameter naming the file and, for a file,
    the line."""
    if (vocab is None) == (vocab_file is None):
        raise typer.BadParameter("give exactly one of --vocab or --vocab-file")
    if vocab is not None:
        source = "--vocab"
        if vocab.startswith("--"):  # `--vocab --overwrite`: the next option taken as the class names
            raise typer.BadParameter(f"{source} is missing its class names (it took the option "
                                     f"{vocab.split(',')[0]!r} as them): --vocab \"cat,dog\"")
        entries: list[tuple[int | None, list[str]]] = [(None, [strip_name(name)]) for name in vocab.split(",")]
        if not all(parts[0] for _, parts in entries):
            raise typer.BadParameter(f"{source}: empty class name (classes are separated by commas)")
    else:
        source = str(vocab_file)
        entries = list(_vocabulary_file_lines(vocab_file))
        if not entries:
            raise typer.BadParameter(f"{source}: no class names (one a line; lines starting with # are comments)")

    def where(line: int | None) -> str:
        return source if line is None else f"{source}, line {line}"

    for line, parts in entries:
        if not all(parts):
            raise typer.BadParameter(f"{where(line)}: empty synonym in {', '.join(parts)!r} (synonyms are separated "
                                     "by commas)")
    names = [", ".join(parts) for _, parts in entries]
    for (line, _), name in zip(entries, names, strict=True):  # ESC or NUL: CVAT's and Label Studio's XML refuse them
        if (problem := unwritable_character(name)) is not None:
            raise typer.BadParameter(f"{where(line)}: the class name {name!r} holds {problem}")
    # "café" typed two ways, "Car" and "car"; a synonym another class lists too (`cat, dog` and `dog`)
    classes = [parts for _, parts in entries]
    shared = shared_names(classes)
    # a class name repeated is said as such; else a synonym in more than one class
    duplicates = repeated_class_names(shared, classes) or shared
    if duplicates:
        shown = "; ".join(repr(name_key(name)) if vocab_file is None else
                          f"{name_key(name)!r} (lines {', '.join(str(entries[i][0]) for i in classes)})"
                          for name, classes in duplicates[:5])
        what = "duplicate class names" if duplicates is not shared else "class names or synonyms in more than one class"
        raise typer.BadParameter(f"{source}: {what} (case aside): {shown}")
    return names


def _vocabulary_file_lines(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, synonyms)`` of each class line of a vocabulary file (blank and `#` lines skipped)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise typer.BadParameter(f"{path}: cannot read ({describe_exception(error)})") from error
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or (len(data) > 1 and b"\x00" in data[:2]):
        raise typer.BadParameter(f"{path}: the file is UTF-16 or UTF-32 text: save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        at = error.start + (len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0)  # the BOM is skipped
        line = data[:at].replace(b"\r\n", b"\n").replace(b"\r", b"\n").count(b"\n") + 1  # as lines are split
        raise typer.BadParameter(f"{path}, line {line}: not UTF-8 text (byte {data[at]:#04x}): save the file "
                                 "as UTF-8") from None
    # one class a line, lines ended by \n, \r\n or \r only: str.splitlines() also split on VT, FF, U+2028...,
    # making two classes of a line that --vocab refuses
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [(number, [strip_name(part) for part in line.split(",")])
            for number, line in enumerate(lines, start=1)
            if (cleaned := strip_name(line)) and not cleaned.startswith("#")]


def check_precision(precision: str) -> None:
    """Raise typer.BadParameter unless `precision` is one the predictor runs (`clipvis.model.PRECISIONS`)."""
    from clipvis.model import PRECISIONS  # imports torch: only when a command runs, not for --help

    if precision not in PRECISIONS:
        raise typer.BadParameter(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")




def device_option(value: str) -> str:
    """Typer callback of ``--device``: anything but auto, cpu, cuda or cuda:N is a usage error when the command line
    is read (``cuda:x``, ``cudaX`` or ``cuda:-1`` got as far as PyTorch, whose error blamed the weights)."""
    if not DEVICE_SYNTAX.fullmatch(value):
        raise typer.BadParameter(f"must be {DEVICE_CHOICES}, not {value!r}")
    return value


def resolve_device(device: str) -> str:
    """The device a run uses: ``auto`` is ``cuda`` when CUDA is there, else ``cpu``. Raises typer.BadParameter for a
    device that is none of auto/cpu/cuda/cuda:N, and typer.Exit(1) after one line when this machine has not got it
    (`clipvis.cli.devices.device_problem`)."""
    if not DEVICE_SYNTAX.fullmatch(device):
        raise typer.BadParameter(f"--device must be {DEVICE_CHOICES}, not {device!r}")
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    problem = device_problem(device, "--device cpu")
    if problem is not None:
        raise fail(f"--device {device}: {problem}")
    index = cuda_index(device)
    return device if index is None else f"cuda:{index}"


def finite_number(value: float | None) -> float | None:
    """Typer callback: a number option must be finite (``nan`` or ``inf`` would drop every track silently and write
    run.json values that are not JSON)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a finite number")
    return value


def score_option(value: float | None, param: typer.CallbackParam) -> float | None:
    """Typer callback of a score option (``--score-threshold``, ``--overlay-min-score``, ``--min-score``): a track's
    score is 0..1, so a value outside (``50``, thinking in percent) would keep every track or none, silently."""
    value = finite_number(value)
    if value is not None and not 0.0 <= value <= 1.0:
        shown = _number_text(value)
        # a percent has at most two decimals (50, 12.5): 1.0000001 is a score a little too high, not 1 %; its score
        # has at most four (1.1 / 100 is 0.011000000000000001 in floating point: said 0.011)
        percent = f" (for {shown}%, write {_number_text(round(value / 100, 4))})" if 1.0 < value <= 100.0 and \
            round(value, 2) == value else ""
        raise typer.BadParameter(f"{shown} is not a score: scores are 0..1{percent}")
    return value


def _number_text(value: float) -> str:
    """``value`` as short as it reads back exactly: ``50``, ``0.5``, ``1.0000001`` (``:g`` made that ``1``)."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def output_folder_option(value: str | None) -> str | None:
    """Typer callback of ``-o`` naming an output folder: an empty name (``-o "$OUT"`` with OUT unset) wrote into the
    working folder, and ``-`` made a folder called ``-``: the outputs are files in a folder, never stdout."""
    if value is None:
        return None
    if not value.strip():
        raise typer.BadParameter("an empty name (an unset shell variable?); give the output folder")
    if value == "-":
        raise typer.BadParameter("the outputs are files in a folder and cannot go to stdout; give a folder "
                                 "(./- for a folder named -)")
    return value


@contextmanager
def outcome_of_the_job(job: DistributedRun | None, kept: str) -> Iterator[None]:
    """How a torchrun job's endings reach the user: one line, from rank 0 (or the rank that knows), and the exit code
    every rank gives (``kept``: what is left of the work, e.g. "the finished outputs are kept ..."). Ranks that run
    other models stop at once (1); a rank gone without a word (1); a usage error every rank finds in the same command
    line, printed by rank 0 alone (2); another rank's error, which that rank printed (1, 130 when interrupted). A
    command that said another rank's end itself (``OtherRankFailed.said``: through its reporter, so that it comes
    before the batch's summary and, with ``--log-format jsonl``, as a JSON event) is not said again."""
    try:
        yield
    except RanksDifferError as error:  # every rank knows; rank 0 says what differs
        if job.is_main:
            print_error(str(error))
        raise typer.Exit(1) from None
    except RankLost as error:  # gone without a word: one line, from rank 0 (or the other rank of two)
        if error.speaks and not error.said:
            print_error(f"{error}; {error.done or kept}")
        raise typer.Exit(1) from None
    except typer.BadParameter as error:
        if job is not None and job.main_stopped_too:
            stop_in_silence()  # rank 0 says it
            raise typer.Exit(2) from None
        if job is not None and repeats_a_first_process():  # this rank's own: the application says these once
            print_error(f"rank {job.rank}: {error.format_message()}")
            raise typer.Exit(2) from None
        raise
    except OtherRankFailed as error:  # its own line came from that rank
        if job.is_main and not error.said:
            print_error(f"{error}; {kept}")
        raise typer.Exit(130 if error.interrupted else 1) from None


def check_same_producer(job: DistributedRun, options: SegmentOptions | None) -> None:
    """Under torchrun, with the weights loaded (``options.checkpoint`` set): every rank must run the same weights,
    vocabulary and result options (clipvis.cli.run_identity.Producer), or the outputs (evaluate's per-video files, which
    rank 0's cache key then vouches for) would mix two models silently. One gather (two when checkpoint files of the
    same size must be compared by content); on a difference every rank raises RanksDifferError with one line naming
    the first rank that differs. ``options`` None: this rank could not start; it is left out of the comparison."""
    from clipvis.cli.run_identity import Producer, file_digest
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


def warning_sayer(log_format: str, job: DistributedRun | None = None) -> Callable[[str], None]:
    """How a warning is said before the run's reporter exists: a `clipvis: warning:` line, or with ``--log-format
    jsonl`` a `warning` event (stderr holds JSON lines only)."""
    if log_format == "jsonl":
        events = JsonlReporter(rank=job.rank if job is not None else None)
        return lambda message: events.say("warning", message)
    return print_warning


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

