"""`clipvis evaluate`: video mask AP (YouTube-VIS / LV-VIS / BURST protocols) of a results file, or of a checkpoint
run on a registered benchmark or on custom data.

    clipvis evaluate --results results.json --gt val_instances.json [--protocol lvvis] [--json metrics.json]
    clipvis evaluate --dataset lvvis_val --weights clipvis-lvis-r50 -o out/   (or --gt G --frames DIR for custom data)

Prints a table of percentages on stdout; `--json` writes the metrics as fractions (null where undefined) atomically,
`--json -` to stdout instead (the table then goes to stderr). Running a checkpoint also writes `results.json` into
the output folder, and `metrics.json` where the split's GT is public, the server's zip where it is not.
Exit status: 0 scored, 1 bad input file or a video that failed (one `clipvis: error:` line on stderr each), 2 usage
error.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from clipvis.cli.atomic import OutputNotWritableError, atomic_write_json, output_dir_for_now
from clipvis.cli.commands.common import device_option, home_path, input_path_option, output_folder_option
from clipvis.cli.dataset_evaluation import run_dataset_evaluation
from clipvis.cli.dataset_inference import METRICS_NAME, is_subset_ground_truth
from clipvis.cli.datasets import UnknownDatasetError, dataset_names, get_dataset
from clipvis.cli.distributed import is_later_rank
from clipvis.cli.evaluation.errors import EvaluationInputError
from clipvis.cli.evaluation.protocols import get_protocol
from clipvis.cli.evaluation.scoring import score_results_file
from clipvis.cli.evaluation.table import metrics_table
from clipvis.cli.evaluation.video_ap import VideoAPResult
from clipvis.cli.exits import fail
from clipvis.cli.json_io import parse_json
from clipvis.cli.listing import STDOUT_CLOSED, silence_stdout
from clipvis.cli.memory import prefer_huge_pages
from clipvis.cli.messages import error_reason, path_text, print_warning
from clipvis.weights import DEFAULT_PRETRAINED, released_name_of


class ProtocolChoice(str, Enum):
    ytvis = "ytvis"
    lvvis = "lvvis"
    burst = "burst"


def recorded_path(path: str | os.PathLike[str]) -> str:
    """A path as the metrics JSON records it: absolute (the file means the same read from any folder), as typed
    otherwise (``-``); bytes of the name that are not UTF-8 as ``\\xNN`` (`path_text`: a lone surrogate made the
    JSON invalid Unicode, which strict parsers refuse)."""
    text = os.fspath(path)
    return text if text == "-" else path_text(os.path.abspath(text))


def recorded_weights(weights: str) -> str:
    """The weights as the metrics JSON records them: a released checkpoint by its registry name, a file or training
    folder by its absolute path (as per_video/cache.json records them), anything else as typed."""
    released = released_name_of(weights)
    if released is not None:
        return released
    path = Path(weights).expanduser()
    return path_text(os.path.abspath(path) if path.exists() else weights)  # (bytes not UTF-8: `recorded_path`)


def metrics_payload(result: VideoAPResult, **sources: Any) -> dict[str, Any]:
    """The metrics JSON document: the evaluation summary plus where the inputs came from."""
    return {**sources, **result.to_dict()}


class StdoutConsole(Console):
    """rich's Console on stdout, where a broken pipe (the reader went away: `| head -3`) raises BrokenPipeError for
    the caller to handle, instead of rich's own reaction, an exit with status 1 and no word."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more is written to stdout
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))


def report_result(
    result: VideoAPResult,
    json_path: Path | Sequence[Path] | None,
    sources: Mapping[str, Any],
    published: Mapping[str, float] | None = None,
    console: Console | None = None,
    said: Sequence[str] = (),
    json_stdout: bool = False,
) -> None:
    """Print warnings (stderr; those in ``said`` were printed already), the table (stdout) and write the metrics JSON
    (to each of ``json_path``) if asked; ``json_stdout`` (`--json -`): the JSON goes to stdout too, after the files,
    and the table to stderr.

    Raises OutputNotWritableError when the JSON cannot be written.
    """
    for warning in result.warnings:
        if warning not in said:
            print_warning(str(warning))
    with_gt = sum(value is not None for value in result.per_category_ap.values())
    paths = [json_path] if isinstance(json_path, Path) else list(json_path or [])
    out = console or (Console(stderr=True) if json_stdout else StdoutConsole())
    try:
        # soft_wrap: one line each, whatever the width (rich cuts at 80 columns where stdout is no terminal)
        out.print(f"protocol {result.protocol}: {get_protocol(result.protocol).description}", highlight=False,
                  soft_wrap=True)
        out.print(
            f"{result.num_videos} videos, {result.num_detections} results scored, {len(result.category_ids)} "
            f"categories ({with_gt} with GT); values in %",
            highlight=False, soft_wrap=True,
        )
        out.print(metrics_table(result, published=published))
    except OSError as error:  # its reader gone (`| head -3`) or full (`> /dev/full`): the metrics JSON is written
        out.quiet = True  # nothing more is written to stdout
        silence_stdout()
        files = ", ".join(path_text(path) for path in dict.fromkeys(paths))
        kept = f"; {files} will hold every metric" if paths else ""
        why = STDOUT_CLOSED if isinstance(error, BrokenPipeError) else f"stdout not writable ({error_reason(error)})"
        print_warning(f"{why}: the metrics table was cut short{kept}")
    for path in dict.fromkeys(paths):
        with output_dir_for_now(path.parent if str(path.parent) else Path(".")):  # made for nothing: removed again
            atomic_write_json(path, metrics_payload(result, **sources), indent=2)
        typer.echo(f"wrote {path_text(path)}", err=True)
    if json_stdout:
        _write_json_to_stdout(metrics_payload(result, **sources))


def _write_json_to_stdout(payload: Mapping[str, Any]) -> None:
    """`--json -`: the metrics JSON on stdout (ASCII, so that any locale's stdout takes it). A reader gone (`| head`)
    gets a warning, as the table does; a stdout that cannot be written (`> /dev/full`) one error line, exit 1."""
    try:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        sys.stdout.flush()
    except OSError as error:
        silence_stdout()
        if isinstance(error, BrokenPipeError):
            print_warning(f"{STDOUT_CLOSED}: the metrics JSON (--json -) was cut short")
            return
        raise fail(f"--json -: stdout not writable ({error_reason(error)}): the metrics JSON was not written") from None


def published_numbers(weights: str, dataset: str | None) -> dict[str, float] | None:
    """The paper's AP for a released checkpoint on a dataset, for the table's "paper" column, only when the weights
    are that release: given by a released name (the cache's copy, which clipvis downloaded), or a file with the same
    content as the cache's copy of a release (the same file, or the same size and SHA-256: a copy downloaded by hand,
    under whatever name the browser gave it). A file that only carries a release's file name
    (``clipvis_lvis_r50_7.pth``: a model trained and saved under it) gets no paper column, said in one warning
    line."""
    from clipvis.weights import WeightsError, find_pretrained, list_pretrained, release_named, weights_cache_dir

    if not dataset:
        return None
    local = Path(weights).expanduser()
    checkpoint = release_named(weights)  # a release's name: not a file, nor a folder holding a checkpoint
    if checkpoint is None and local.exists():  # a file or a training folder: a release's only with its content
        if not local.is_file():
            return None
        try:
            cache = weights_cache_dir()
        except WeightsError:  # a CLIPVIS_CACHE that cannot be located: no cached copy to compare with
            return None
        checkpoint = next((entry for entry in list_pretrained() if entry.published_ap.get(dataset) is not None
                           and _same_content(local, cache / entry.file_name)), None)
        named = find_pretrained(local.name)
        if checkpoint is None and named is not None and named.file_name == local.name and \
                named.published_ap.get(dataset) is not None:
            print_warning(f"{local} has the file name of the released checkpoint {named.name} but is not the "
                          f"copy in clipvis' cache ({cache / named.file_name}), so the paper's AP is not shown beside "
                          f"it; give --weights {named.name} for the release")
        if checkpoint is None:
            return None
    value = checkpoint.published_ap.get(dataset) if checkpoint is not None else None
    return {"AP": value} if value is not None else None


def _same_content(path: Path, other: Path) -> bool:
    """Whether two files hold the same bytes: the same file, or the same size and SHA-256 (~1 s per 200 MB)."""
    from clipvis.cli.run_identity import file_digest

    try:
        if not other.is_file():
            return False
        if path.samefile(other):
            return True
        return path.stat().st_size == other.stat().st_size and file_digest(path) == file_digest(other)
    except OSError:
        return False


# What `clipvis evaluate --help` says the command does (Typer's help=, clipvis.cli.app: a docstring is gone under
# python -OO, and the help with it)
EVALUATE_HELP = """Video mask AP (AP, AP50, AP75, APs/m/l, AR1/10/100): score a results file (--results --gt), or run a
checkpoint on a benchmark (--dataset NAME --weights W) or on custom data (--gt --frames) and score it.

The LV-VIS protocol also reports base (APb) and novel (APn) categories; BURST reports base/novel and
common/uncommon."""


def evaluate(
    results: Path | None = input_path_option(
        "--results", help="Results JSON: a list of {video_id, category_id, score, segmentations}.", dir_okay=False
    ),
    gt: Path | None = input_path_option(
        "--gt", help="Ground truth in YouTube-VIS format (LV-VIS, YTVIS, OVIS, BURST b2y).", dir_okay=False
    ),
    protocol: ProtocolChoice | None = typer.Option(
        None,
        "--protocol",
        case_sensitive=False,
        help="Which reference evaluator to reproduce. Default: the --dataset's own; otherwise lvvis if the GT "
        "categories carry 'partition', else ytvis (with a warning for BURST's frequency/split categories). burst = "
        "CLIP-VIS tools/mAP.py BURST scoring.",
    ),
    json_option: str | None = typer.Option(
        None, "--json", help="Also write the metrics (fractions, null = undefined) to this JSON file (inference: as "
        "well as OUTPUT/metrics.json); - writes them to stdout, and the table to stderr (./- is a file named -).",
        metavar="FILE",
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="Run a checkpoint on a registered benchmark: " + ", ".join(dataset_names()) + "."
    ),
    frames: Path | None = input_path_option(
        "--frames", help="Custom data: the frames folder of --gt's videos (runs inference, then scores).",
        file_okay=False,
    ),
    weights: str = typer.Option(
        DEFAULT_PRETRAINED, "--weights", help="For inference: a released checkpoint name, a checkpoint file (.pth, "
        ".safetensors) or a training output folder (its newest checkpoint).",
    ),
    data_root: Path | None = input_path_option(
        "--data-root", help="Datasets folder (default: the first of $CLIPVIS_DATASETS, $DETECTRON2_DATASETS "
        "and ./datasets that holds the dataset).",
        file_okay=False
    ),
    output_name: str | None = typer.Option(
        None, "-o", "--output", callback=output_folder_option, metavar="<path>",
        help="Inference output folder (default clipvis_eval/<dataset>, clipvis_eval/custom for --gt/--frames data).",
    ),
    config: Path | None = input_path_option("--config", help="Official CLIP-VIS YAML or clipvis JSON."),
    clip_config: Path | None = input_path_option("--clip-config", help="open_clip model config JSON."),
    allow_hub_clip: bool = typer.Option(
        False, "--allow-hub-clip", help="Let a config or checkpoint name a CLIP other than the released models'."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.", callback=device_option),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or bf16."),
    batch_frames: int = typer.Option(4, "--batch-frames", min=1, help="Frames per model batch."),
    max_videos: int | None = typer.Option(None, "--max-videos", min=1, help="Only the first N videos (by id)."),
) -> None:
    json_stdout = json_option == "-"  # the JSON on stdout, the table on stderr
    json_path = Path(home_path(json_option)) if json_option is not None and not json_stdout else None
    if json_path is not None and json_path.is_dir():  # as a dir_okay=False Path option said it
        raise typer.BadParameter(f"{json_option} is a folder; give the metrics file to write", param_hint="--json")
    output = Path(output_name) if output_name is not None else None  # a str option: an empty -o is told from "."
    if dataset is not None or frames is not None:
        prefer_huge_pages()  # before any tensor exists (clipvis.cli.memory)
        if results is not None:
            raise typer.BadParameter("--results scores an existing file; it cannot be combined with inference")
        if dataset is not None and (gt is not None or frames is not None):
            raise typer.BadParameter("use either --dataset NAME or --gt GT --frames DIR")
        if frames is not None and gt is None:
            raise typer.BadParameter("--frames needs --gt (the ground truth listing the videos' frames)")
        if dataset is not None:  # LVVIS_VAL, lvvis-val: the registered name (output folder, messages, metrics)
            try:
                dataset = get_dataset(dataset).name
            except UnknownDatasetError:
                raise typer.BadParameter(f"unknown dataset {dataset!r}; known: {', '.join(dataset_names())}") from None
        name = dataset or "custom"
        if dataset is not None and not get_dataset(dataset).has_public_gt and (json_option or protocol):
            flag = "--json" if json_option else "--protocol"
            raise typer.BadParameter(f"{dataset} has no public ground truth: nothing is scored here (its server scores "
                                     "the zip evaluate writes), so there are no metrics", param_hint=flag)
        published = published_numbers(weights, dataset)
        if protocol is None and dataset is not None:  # a benchmark is scored as its own evaluator does (BURST)
            protocol = ProtocolChoice(get_dataset(dataset).protocol)
        _remove_earlier_metrics(json_path, output or Path("clipvis_eval") / name)

        def score(results_path: Path, gt_path: Path, said: Sequence[str]) -> None:
            # OUTPUT/metrics.json always (beside the results.json it scores), --json as well; with what produced it
            paths = [results_path.parent / METRICS_NAME, *([json_path] if json_path is not None else [])]
            run = {"weights": recorded_weights(weights), "dataset": name, "max_videos": max_videos}
            # the paper's numbers are for every video: not shown beside a --max-videos subset's
            shown = None if is_subset_ground_truth(gt_path) else published
            # nor beside a GT file with other categories than the benchmark's (a filtered file: warned about)
            categories = get_dataset(dataset).num_classes if dataset is not None else None
            score_and_report(results_path, gt_path, protocol, paths, shown, run, categories, said, json_stdout)

        run_dataset_evaluation(
            dataset=dataset, gt=gt, frames=frames, weights=weights, data_root=data_root,
            output=output or Path("clipvis_eval") / name, score=score, device=device, precision=precision,
            batch_frames=batch_frames, config=config, clip_config=clip_config, max_videos=max_videos,
            allow_hub_clip=allow_hub_clip,
        )
        return
    if results is None and gt is None:
        raise typer.BadParameter("nothing to evaluate: give --results R --gt G (score a results file), --dataset NAME "
                                 "(run a checkpoint on a benchmark) or --gt G --frames F (run it on custom data)")
    if results is None:
        raise typer.BadParameter("--gt needs --results R (score a results file against it) or --frames F (run a "
                                 "checkpoint on its videos' frames)")
    if gt is None:
        raise typer.BadParameter("--results needs --gt G (the ground truth to score it against)")
    if max_videos is not None:  # it chooses the videos inference runs: a results file is scored whole
        raise typer.BadParameter("--max-videos runs the first N videos (with --dataset or --frames); --results is "
                                 "scored whole")
    if is_later_rank():  # under torchrun one process scores a file (each printed the table and wrote --json again)
        return
    _remove_earlier_metrics(json_path)
    with ExitStack() as folder:
        if json_path is not None:  # a folder that cannot be made is said before the scoring, not after its table; one
            try:  # made for it goes again if the scoring fails
                folder.enter_context(output_dir_for_now(json_path.parent if str(json_path.parent) else Path(".")))
            except OutputNotWritableError as error:
                raise fail(f"--json {error}") from None
        score_and_report(results, gt, protocol, json_path, None, json_stdout=json_stdout)


def _remove_earlier_metrics(json_path: Path | None, own_output: Path | None = None) -> None:
    """The --json file an earlier run wrote goes before this one runs, so a run that fails leaves no stale scores.
    Only a metrics file evaluate wrote is removed; any other file there (a GT file, a checkpoint, given by mistake)
    ends the run with a usage error and is left as it was, and so does a file of another evaluate output folder than
    ``own_output`` (this run's): written over, it made that folder refuse its next run ("changed since clipvis
    evaluate wrote it")."""
    if json_path is None:
        return
    from clipvis.cli.dataset_inference import recorded_outputs

    folder = json_path.parent
    if (own_output is None or folder.resolve() != own_output.resolve()) and json_path.name in (
            recorded_outputs(folder) or {}):
        raise typer.BadParameter(f"{json_path} is a file of the evaluate output folder {folder}, which would refuse "
                                 "its next run once it changed: choose another file name", param_hint="--json")
    if not json_path.exists():
        return
    if not json_path.is_file() or not _is_metrics_file(json_path):
        raise typer.BadParameter(f"{json_path} exists and is not a metrics file clipvis evaluate wrote; it is left as "
                                 "it is: choose another file name", param_hint="--json")
    json_path.unlink(missing_ok=True)


def _is_metrics_file(path: Path) -> bool:
    """Whether ``path`` holds a metrics JSON as `metrics_payload` writes it (a protocol and its metrics)."""
    try:
        if path.stat().st_size > 64 * 2**20:  # metrics files are kilobytes; never read a dataset to find out
            return False
        document = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(document, dict) and {"protocol", "metrics", "per_category_ap"} <= set(document)


def score_and_report(
    results: Path,
    gt: Path,
    protocol: ProtocolChoice | None,
    json_path: Path | Sequence[Path] | None,
    published: Mapping[str, float] | None,
    run: Mapping[str, Any] | None = None,
    categories: int | None = None,
    said: Sequence[str] = (),
    json_stdout: bool = False,
) -> None:
    """Score a results file against its ground truth, print the table, write the metrics JSON if asked; a bad input
    or an unwritable JSON raises typer.Exit(1) after its one-line error. ``categories``: how many categories the
    ``published`` numbers were measured on; a GT listing another number is shown without them. ``said``: warnings
    about the inputs printed before the model ran: the result's warnings (the metrics JSON) begin with them, and they
    are not printed again. ``json_stdout``: `--json -` (`report_result`)."""
    try:
        result = score_results_file(results, gt, protocol.value if protocol is not None else None)
    except EvaluationInputError as error:
        raise fail(str(error)) from error
    if categories is not None and len(result.category_ids) != categories:
        published = None
    result.warnings[:0] = said
    try:
        report_result(result, json_path, {"results": recorded_path(results), "gt": recorded_path(gt), **(run or {})},
                      published=published, said=said, json_stdout=json_stdout)
    except OutputNotWritableError as error:
        raise fail(str(error)) from error
