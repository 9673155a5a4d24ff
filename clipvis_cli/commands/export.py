"""`clipvis export`: convert segment outputs to annotation-tool formats (no model run)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from clipvis.cli.exporters import EXPORT_FORMATS, ExportOptions, discover_export_inputs
from clipvis.cli.exporters.runner import ExportRunner
from clipvis.cli.progress import HumanReporter, JsonlReporter


def parse_formats(value: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    chosen = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in allowed]
    if unknown or not chosen:
        raise typer.BadParameter(f"{flag}: unknown format {', '.join(unknown) or '(empty)'} "
                                 f"(choose from {', '.join(allowed)})")
    return list(dict.fromkeys(chosen))


def export(
    inputs: list[str] = typer.Argument(
        None, help="segment output folders, ytvis.json files, folders of them (recursive), globs, or - for stdin."
    ),
    to: str = typer.Option(..., "--to", help=f"Format(s), comma-separated: {', '.join(EXPORT_FORMATS)}, onnx."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Output root (one folder per video); default: beside each ytvis.json."
    ),
    min_score: float = typer.Option(0.0, "--min-score", help="Export only tracks scoring at least this."),
    classes: str | None = typer.Option(None, "--classes", help='Export only these classes, e.g. "cat,dog".'),
    media: bool = typer.Option(
        True, "--media/--no-media", help="Write frame images for formats that can carry them (coco, cvat-images, "
        "mots-png); fiftyone and labelstudio always need the source video."
    ),
    zip_results: bool = typer.Option(False, "--zip", help="ytvis: write results.zip (holding results.json)."),
    log_format: str = typer.Option("human", "--log-format", help="human or jsonl."),
) -> None:
    """Convert segment outputs to CVAT, COCO, MOTS, DAVIS-style PNG, Label Studio, FiftyOne or YouTube-VIS files."""
    if log_format not in ("human", "jsonl"):
        raise typer.BadParameter(f"--log-format must be human or jsonl, not {log_format!r}")
    formats = parse_formats(to, EXPORT_FORMATS, "--to")
    if not inputs:
        raise typer.BadParameter("give the segment outputs to export (folders or ytvis.json files)")
    class_names = None
    if classes is not None:
        class_names = tuple(name.strip() for name in classes.split(",") if name.strip())
        if not class_names:
            raise typer.BadParameter("--classes: empty list")
    options = ExportOptions(min_score=min_score, classes=class_names, media=media, zip_results=zip_results)
    found = discover_export_inputs(inputs, sys.stdin if "-" in inputs else None)
    reporter = JsonlReporter() if log_format == "jsonl" else HumanReporter()
    runner = ExportRunner(formats, options, output, reporter)
    outcomes = []
    reporter.batch_started(len(found))
    try:
        for item in found:
            outcomes.extend(runner.run(item))
        outcomes.extend(runner.finish())
    except KeyboardInterrupt:
        reporter.close()
        typer.echo("clipvis: interrupted; incomplete exports were not written", err=True)
        raise typer.Exit(130) from None
    reporter.close()
    for outcome in outcomes:
        for note in outcome.notes:
            typer.echo(f"clipvis: {note}", err=True)
        for path in outcome.outputs:
            typer.echo(str(path))
    failed = sum(outcome.status == "failed" for outcome in outcomes)
    if failed:
        typer.echo(f"clipvis: {failed} of {len(outcomes)} export(s) failed", err=True)
        raise typer.Exit(1)
