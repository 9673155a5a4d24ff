"""The inference half of `clipvis evaluate`: run a checkpoint over a registered benchmark dataset (or custom data),
then score it; also training's periodic evaluation (`clipvis.cli.train.periodic_evaluation`)."""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path

import typer

from clipvis.cli.atomic import OutputNotWritableError
from clipvis.cli.dataset_inference import (
    CACHE_DIR,
    DatasetInference,
    DatasetRunSummary,
    ForeignCacheFolderError,
    ForeignOutputFileError,
    NoVideoFoundError,
    PerVideoFileError,
    check_cache_folder,
    check_output_files,
    check_some_video_found,
    evaluation_output_names,
    server_zip_name,
    subset_ground_truth_name,
)
from clipvis.cli.datasets import (
    DatasetError,
    DatasetInputs,
    DatasetSpec,
    dataset_inputs,
    write_server_zip,
)
from clipvis.cli.devices import resolve_device
from clipvis.cli.distributed import (
    DistributedRun,
    InputsDifferError,
    RankLost,
    ignore_stop_signals,
    visible_cuda_devices,
)
from clipvis.cli.evaluation.errors import EvaluationInputError
from clipvis.cli.evaluation.ground_truth import write_ground_truth_subset
from clipvis.cli.exits import fail
from clipvis.cli.job_outcome import check_same_producer, outcome_of_the_job
from clipvis.cli.locks import FolderBusyError
from clipvis.cli.memory import HeapTrimmer
from clipvis.cli.messages import print_error, print_warning
from clipvis.cli.predictor_loading import check_config_file, check_precision, load_predictor
from clipvis.cli.progress import make_reporter
from clipvis.cli.segment import SegmentOptions


def custom_inputs(gt: Path, frames: Path) -> DatasetInputs:
    """A YouTube-VIS GT file plus its frames folder (frame paths = frames / file_names[i]). The whole GT is read
    here, annotations included: a malformed one stops the run before any video runs, not after all of them."""
    from clipvis.cli.datasets import DatasetIndex
    from clipvis.cli.evaluation.files import read_json_file
    from clipvis.cli.evaluation.ground_truth import check_category_names, parse_ground_truth

    document = read_json_file(gt, "annotation file")
    check_category_names(document, str(gt))
    parsed = parse_ground_truth(document, source=str(gt))
    index = DatasetIndex(videos=list(parsed.videos.values()), categories=list(parsed.categories))
    if not index.categories:
        raise EvaluationInputError(f"{gt}: no categories, cannot build the vocabulary")
    if not parsed.tracks:  # a split without public ground truth: a table of dashes measures nothing
        raise EvaluationInputError(f"{gt}: no annotations, so nothing can be scored (a split without public ground "
                                   "truth? its server scores the results)")
    if not frames.is_dir() and not any(video.source for video in index.videos):  # not one line per video later
        raise EvaluationInputError(f"--frames {frames}: folder not found")
    spec = DatasetSpec(
        name="custom", title=f"custom data {gt.name}", annotation_candidates=(str(gt),),
        frames_candidates=(str(frames),), num_classes=len(index.categories), protocol="ytvis", has_public_gt=True,
        download="", frame_path_rule="join",
    )
    return DatasetInputs(spec=spec, gt_path=gt, frames_root=frames, vocabulary=index.vocabulary, videos=index.videos)


def run_dataset_evaluation(
    dataset: str | None,
    weights: str,
    data_root: Path | None,
    output: Path,
    score: Callable[[Path, Path, Sequence[str]], None],
    device: str = "auto",
    precision: str = "fp32",
    batch_frames: int = 4,
    config: Path | None = None,
    clip_config: Path | None = None,
    allow_hub_clip: bool = False,
    max_videos: int | None = None,
    gt: Path | None = None,
    frames: Path | None = None,
    alone: bool = False,
) -> None:
    """Inference in the official evaluator's mode (`--exact`, 50 results per video), resumable, then
    ``score(results.json, ground truth, warnings)`` when the split has public ground truth (else the server zip is
    written); ``warnings``: the lines about the inputs said before the model ran (another category count than the
    benchmark's, videos sharing frames), for the metrics to record.

    Under torchrun every rank joins the job first (``DistributedRun.joined``); rank 0 reports, writes and scores for
    the whole job while the other ranks wait, so every rank exits with rank 0's outcome, and whatever fails on one
    rank alone (its dataset copy, CUDA, the weights) ends the others too (typer.Exit(1) there). ``alone``: run every
    video in this process even under torchrun (training's periodic evaluation, which rank 0 runs while the other
    ranks wait).
    """
    try:
        job = None if alone else DistributedRun.from_env()
    except ValueError as error:
        raise fail(str(error)) from None
    kept = f"nothing was scored (finished videos are kept in {output / 'per_video'}, a rerun resumes)"
    try:
        with outcome_of_the_job(job, kept), job.joined() if job is not None else nullcontext():
            check_precision(precision)
            try:
                inputs = dataset_inputs(dataset, data_root) if dataset else custom_inputs(Path(gt), Path(frames))
                check_some_video_found(inputs, max_videos)  # a wrong frames folder: one line, not one per video
            except (DatasetError, EvaluationInputError, NoVideoFoundError) as error:
                raise fail(str(error)) from None
            said = [warning for warning in (inputs.category_count_warning(), inputs.shared_frames_warning())
                    if warning is not None]
            if job is None or job.is_main:  # said before the model runs
                for warning in said:
                    print_warning(warning)
            if job is not None:
                device = job.device(device, visible_cuda_devices())
            options = SegmentOptions(
                vocabulary=inputs.vocabulary, weights=weights, output=output, formats=(),
                device=resolve_device(device), precision=precision, batch_frames=batch_frames, exact=True,
                skip_existing=True, config=str(config) if config else None,
                clip_config=str(clip_config) if clip_config else None, allow_hub_clip=allow_hub_clip,
                allow_duplicate_names=True,  # the GT's category list as the official code takes it, repeats and all
            )
            check_config_file(config, clip_config)
            _run_and_conclude(options, inputs, dataset or str(gt), score, max_videos, job, said)
    except KeyboardInterrupt as interrupt:  # Ctrl-C, SIGTERM, SIGHUP (the launcher's Terminated)
        if alone:  # training's periodic evaluation: the trainer stops on it
            raise
        ignore_stop_signals()  # another one on the way out is the same stop
        if job is None or job.is_main:  # (no per_video/ yet: stopped before any video ran)
            print_error(f"interrupted; {kept if (output / CACHE_DIR).is_dir() else 'nothing was scored'}")
        raise typer.Exit(128 + getattr(interrupt, "signum", signal.SIGINT)) from None


def _run_and_conclude(
    options: SegmentOptions,
    inputs: DatasetInputs,
    where: str,
    score: Callable[[Path, Path, Sequence[str]], None],
    max_videos: int | None,
    job: DistributedRun | None,
    said: Sequence[str] = (),
) -> None:
    """Load the model, run the videos, then (rank 0) report, and score or write the server zip."""
    output = options.output
    try:  # a file or per_video/ folder of the user's where evaluate writes: refused now, not after the model loads
        check_cache_folder(output / CACHE_DIR)  # (again under the lock)
        check_output_files(output, evaluation_output_names(inputs.spec.name, len(inputs.videos), max_videos))
    except (ForeignCacheFolderError, ForeignOutputFileError) as error:
        raise fail(error) from None
    predictor = load_predictor(options, vocabulary_source=f"the GT categories of {where}")
    # A config the checkpoint contradicts (said as the model loaded) changes what the numbers mean: the metrics record
    # it too. The other loading warnings (a text-embedding cache that cannot be written) do not, and stay on stderr.
    said = [*said, *predictor.model.config.notes]
    if job is not None:  # every rank runs the same model, vocabulary and settings, or none runs (or touches the cache)
        check_same_producer(job, options)
    concluded: list[str] = []  # what rank 0 completed, for a rank lost after it

    def conclude(summary: DatasetRunSummary) -> None:
        if summary.failed:
            typer.echo(
                f"clipvis: {len(summary.failed)} video(s) of {where} failed, {summary.computed} run, "
                f"{summary.reused} reused; {'not scored' if inputs.spec.has_public_gt else 'no server zip written'} "
                f"(finished videos are kept in {output / 'per_video'}, a rerun resumes)",
                err=True,
            )
            raise typer.Exit(1)
        typer.echo(
            f"{where}: {summary.computed} videos run, {summary.reused} reused from {output / 'per_video'}; "
            f"wrote {summary.results_path}",
            err=True,
        )
        if inputs.spec.has_public_gt:
            ran = [video.id for video in runner.videos_to_run(max_videos)]
            gt_path = inputs.gt_path
            if len(ran) < len(inputs.videos):  # --max-videos: scored on the videos run, not on every video
                gt_path = write_ground_truth_subset(gt_path, ran, output / subset_ground_truth_name(len(ran)))
                typer.echo(f"{where}: scored against the ground truth of the {len(ran)} video(s) run, {gt_path}",
                           err=True)
            score(summary.results_path, gt_path, said)
            concluded.append(f"{summary.results_path} was written and scored")
            return
        zip_path = write_server_zip(summary.results, output / server_zip_name(inputs.spec.name))
        concluded.append(f"{summary.results_path} and {zip_path} were written")
        ran = len(runner.videos_to_run(max_videos))
        if ran < len(inputs.videos):  # a server scores every video: a part is no submission
            print_warning(f"{zip_path} holds {ran} of the {len(inputs.videos)} videos (--max-videos): the server "
                          "counts the others as missed; run without --max-videos for a submission")
            return
        server = inputs.spec.server
        instructions = server.instructions(zip_path) if server else f"upload {zip_path} to the evaluation server"
        typer.echo(f"{where} has no public ground truth; {instructions}", err=True)

    try:
        runner = DatasetInference(predictor, inputs, options, make_reporter("human", job))
    except (DatasetError, EvaluationInputError) as error:
        raise fail(error) from None
    try:
        with HeapTrimmer():
            runner.run(output, max_videos=max_videos, job=job, conclude=conclude)
    except (
        OutputNotWritableError, FolderBusyError, ForeignCacheFolderError, ForeignOutputFileError, PerVideoFileError,
        InputsDifferError,
    ) as error:
        raise fail(error) from None
    except RankLost as error:  # after rank 0 concluded, the results stand
        error.done = concluded[0] if concluded else None
        raise
    finally:
        runner.reporter.close()
