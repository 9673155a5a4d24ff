"""What the commands share: their options' checks (device, scores, output folders, --media-url). The device a run
uses is `clipvis.cli.devices.resolve_device`. The
work the commands share with other modules lives beside them: `clipvis.cli.exits` (failing with one line),
`clipvis.cli.vocabulary_options`, `clipvis.cli.predictor_loading`, `clipvis.cli.job_outcome` (a torchrun job's
endings) and `clipvis.cli.progress` (the reporters)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import typer

from clipvis.cli.devices import DEVICE_CHOICES, DEVICE_SYNTAX
from clipvis.cli.messages import path_text

NOTHING_ON_STDIN = "no inputs on stdin: nothing to do"  # `-` alone with an empty list on stdin (segment, export)


def device_option(value: str) -> str:
    """Typer callback of ``--device``: anything but auto, cpu, cuda or cuda:N is a usage error when the command line
    is read (``cuda:x``, ``cudaX`` or ``cuda:-1`` got as far as PyTorch, whose error blamed the weights)."""
    if not DEVICE_SYNTAX.fullmatch(value):
        raise typer.BadParameter(f"must be {DEVICE_CHOICES}, not {value!r}")
    return value


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


OUTPUT_FLAGS = ("-o", "--output")  # segment's, export's and evaluate's output option


def output_folder_option(value: str | None, param: typer.CallbackParam) -> str | None:
    """Typer callback of an option naming an output folder (``param``: its flags): `output_folder`."""
    return output_folder(value, param.opts)


def output_folder(value: str | None, flags: Sequence[str] = OUTPUT_FLAGS) -> str | None:
    """An output folder option's value (``flags``: the option's), checked: an empty name (``-o "$OUT"`` with OUT
    unset) wrote into the working folder, ``-`` made a folder called ``-`` (the outputs are files in a folder, never
    stdout), and ``-o=DIR`` a folder called ``=DIR`` (`refuse_leading_equals`). A leading ``~`` is the home folder
    (`home_path`)."""
    if value is None:
        return None
    if not value.strip():
        raise typer.BadParameter("an empty name (an unset shell variable?); give the output folder")
    if value == "-":
        raise typer.BadParameter("the outputs are files in a folder and cannot go to stdout; give a folder "
                                 "(./- for a folder named -)")
    refuse_leading_equals(value, flags)
    return home_path(value)


def refuse_leading_equals(value: str, flags: Sequence[str] = OUTPUT_FLAGS) -> None:
    """A usage error for an output path that starts with ``=``: click takes ``-o=DIR`` as ``-o`` with the value
    ``=DIR`` (a short option's value is whatever follows it), which wrote into a folder named ``=DIR`` (and left a
    ``~`` after it unexpanded). ``flags``: the option's, for the remedy; ``./=DIR`` names such a folder."""
    if not value.startswith("="):
        return
    short = next((flag for flag in flags if not flag.startswith("--")), None)
    long = next((flag for flag in flags if flag.startswith("--")), flags[0])
    how = f" ({short}=PATH gives {short} the value =PATH)" if short else ""
    raise typer.BadParameter(f"{value!r} starts with '='{how}: write {short or long} PATH or {long}=PATH, or ./{value} "
                             "for a name that starts with '='")


def home_path(value: str) -> str:
    """An output path option with a leading ``~`` or ``~user`` expanded as the shell expands it: bash leaves one after
    ``=`` as it is (``--output=~/results``), which wrote into a folder named ``~`` in the working folder, while
    ``--weights`` and train's -o expanded it. ``./~`` names a folder called ``~``; a ``~user`` of no user stays as
    typed."""
    return os.path.expanduser(value)  # (Path.expanduser raises for `~user` of no user: os's keeps it)


def input_path_option(*flags: str, help: str, dir_okay: bool = True, file_okay: bool = True) -> Any:
    """An option naming a file or folder a command reads, default None, its value a Path with a leading ``~``
    expanded (`home_path_option`); ``dir_okay=False``: a folder is a usage error, ``file_okay=False``: a file is."""
    def checked(value: str | None) -> Path | None:
        path = home_path_option(value)
        # checked here, on the path the ~ was expanded in (click's own check saw the text as typed: --gt=~/d, a
        # folder, was no usage error, while --gt home/d was); its wording. One not there: the command says so
        if path is not None and not dir_okay and path.is_dir():
            raise typer.BadParameter(f"{'File' if file_okay else 'Path'} '{path_text(value)}' is a directory.")
        if path is not None and not file_okay and path.exists() and not path.is_dir():
            raise typer.BadParameter(f"{'Directory' if dir_okay else 'Path'} '{path_text(value)}' is a file.")
        return path

    # path_type=str: the callback gets the text as typed (a Path has made ./~/x into ~/x)
    return typer.Option(None, *flags, help=help, path_type=str, callback=checked)


def home_path_option(value: str | None) -> Path | None:
    """Typer callback of an input path option (`input_path_option`): the path, a leading ``~`` or ``~user`` expanded
    as `home_path` does (``--config=~/c.yaml``, ``--gt=~/gt.json``: bash leaves a ``~`` after ``=`` as it is, and it
    was read as a folder named ``~``, while ``--weights`` expanded it). ``./~/x`` names a file in a folder called
    ``~``: made absolute, so that no later reader takes it for the home folder."""
    if value is None:
        return None
    if value.startswith("~"):
        return Path(home_path(value))
    path = Path(value)
    return Path(os.path.abspath(value)) if path.parts[:1] == ("~",) else path


# The labelstudio format's one option, the same for `clipvis export --to labelstudio` and `segment --formats
# labelstudio` (`data.video` in tasks.json: clipvis.cli.exporters.video_tools.media_url).
MEDIA_URL_HELP = ("labelstudio: URL prefix under which Label Studio serves the video files (the file name after it "
                  "is percent-encoded; a prefix ending in neither / nor =, ? or & gets a /).")


def media_url_option() -> Any:
    """The ``--media-url`` option (export, segment): the URL prefix of each Label Studio task's video."""
    return typer.Option("", "--media-url", help=MEDIA_URL_HELP, callback=media_url_value)


def media_url_value(value: str) -> str:
    """Typer callback of ``--media-url``: the prefix as the file name follows it (a folder URL without its last
    `/` gets one: `http://host/clips` wrote `http://host/clipsNAME`; clipvis.cli.exporters.video_tools.
    media_url_prefix), so that run.json records, and a rerun compares, the URL the tasks get."""
    if not value:
        return value
    from clipvis.cli.exporters.video_tools import media_url_prefix

    return media_url_prefix(value)


def check_media_url(media_url: str, formats: Iterable[str], flag: str) -> None:
    """A usage error for ``--media-url`` given to a command line whose ``formats`` (given as ``flag``: ``--to``,
    ``--formats``) write no labelstudio: silently ignored, it changed nothing the user expected it to."""
    if media_url and "labelstudio" not in formats:
        raise typer.BadParameter(f"--media-url is only for labelstudio (add it to {flag}, or leave out --media-url)")
