"""The `clipvis` Typer application: one shared entry point for every subcommand."""

from __future__ import annotations

import typer

from clipvis.cli import __version__
from clipvis.cli.commands.evaluate import evaluate
from clipvis.cli.commands.export import export
from clipvis.cli.commands.segment import segment
from clipvis.cli.commands.train import train

app = typer.Typer(
    name="clipvis",
    help="Open-vocabulary video instance segmentation (CLIP-VIS): segment and track any named object in videos.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (the launcher answers them without torch)
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"clipvis {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """clipvis: segment, track and label every object whose name you type."""


# The command list shows these one-liners (a docstring's first paragraph keeps its line breaks there).
app.command("segment")(segment)
app.command("evaluate", short_help="Video mask AP: score a results file, or run a checkpoint on a benchmark or on "
            "custom data and score it.")(evaluate)
app.command("export", short_help="Convert segment outputs to CVAT, COCO, MOTS, PNG masks, Label Studio, FiftyOne or "
            "YouTube-VIS files; or the network to ONNX.")(export)
app.command("train")(train)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
