"""The `clipvis` Typer application: one shared entry point for every subcommand."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from clipvis.cli import __version__
from clipvis.cli.commands.evaluate import EVALUATE_HELP, evaluate
from clipvis.cli.commands.export import EXPORT_HELP, export
from clipvis.cli.commands.segment import SEGMENT_HELP, segment
from clipvis.cli.commands.train import TRAIN_HELP, train
from clipvis.cli.distributed import repeats_a_first_process, stop_in_silence
from clipvis.cli.messages import error_line, error_reason, one_line, print_error, shown_path

USAGE_ERROR = 2  # the exit code of click's usage errors
_REQUIRED_IN_BRACES = re.compile(r"^\{(.+)\}(?=(?:\.\.\.)?$)")  # Typer's usage piece of a required argument
_VALIDATOR_PREFIX = re.compile(r"^(Invalid value for '[^']+': )Value error, ")  # typer checks choices with pydantic
_QUOTED_CHOICES = re.compile(r"(is not one of )('[^']*'(?:, '[^']*')*)\.$")  # "'a', 'b'." as clipvis lists them: a, b


@contextmanager
def _usage_errors_said_once() -> Iterator[None]:
    """A usage error is one `clipvis: error:` line (:func:`usage_error_line`), exit 2. Under torchrun, a usage error
    (an option out of range, an unknown dataset) reaching the application is said by each machine's first worker
    alone; the others exit with the same code in silence, instead of every worker printing the same line. A usage
    error one rank finds alone once the job has started is said by that rank (``outcome_of_the_job``) and never
    reaches here."""
    try:
        yield
    except typer.TyperException as error:  # typer's click exceptions; usage errors exit with 2
        if getattr(error, "exit_code", None) != USAGE_ERROR or type(error).__name__ == "NoArgsIsHelpError":
            raise  # `clipvis` alone prints the help
        if repeats_a_first_process():
            stop_in_silence()
        else:
            typer.echo(usage_error_line(error), err=True)
        raise typer.Exit(USAGE_ERROR) from None


def usage_error_line(error: Any) -> str:
    """A usage error as one line, as every other error is (`clipvis: error: ...`), naming where help is: Typer's
    usage box took 4-8 lines, wrapped long messages mid-word and drew a frame into logs and pipes."""
    message = one_line(error.format_message())
    message = message.removeprefix("Invalid value: ")  # click's prefix for a check's own message: it names its option
    message = _VALIDATOR_PREFIX.sub(r"\1", message)  # pydantic's wording for a ValueError in typer's checks
    message = _QUOTED_CHOICES.sub(lambda match: match[1] + ", ".join(re.findall(r"'([^']*)'", match[2])), message)
    context = getattr(error, "ctx", None)
    where = f" (see '{context.command_path} --help')" if context is not None else ""
    return error_line(f"{message}{where}")


def _flags_take_no_value(params: Iterable[Any]) -> None:
    """Show no value placeholder for a flag in the help (Typer's rich help writes ``--exact <bool>``, as if the flag
    took a value): its metavar is set empty. A flag's metavar is used nowhere else (usage errors name its option)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""


def _said_once_per_machine(option: Any) -> None:
    """Make an eager option that prints and exits (``--help``, ``--version``) print nothing under torchrun on the
    workers that their machine's first worker repeats (``repeats_a_first_process``): every worker gets the same
    command line, and the help was printed once per worker, interleaved. They exit as the first does (0)."""
    show = option.callback
    if show is None or getattr(show, "said_once_per_machine", False):
        return

    def once(ctx: Any, param: Any, value: Any) -> Any:
        if value and not ctx.resilient_parsing and repeats_a_first_process():
            ctx.exit()
        return show(ctx, param, value)

    once.said_once_per_machine = True  # type: ignore[attr-defined]
    option.callback = once


def _installs_or_says_why_not(option: Any) -> None:
    """Make Typer's ``--install-completion`` say a file it cannot write (the shell's start-up file, the completion
    script's folder: a read-only HOME, or HOME=/proc) in one line, exit 1, instead of Typer's traceback."""
    install = option.callback
    if install is None or getattr(install, "says_why_not", False):
        return

    def install_or_say(ctx: Any, param: Any, value: Any) -> Any:
        try:
            return install(ctx, param, value)
        except OSError as error:
            where = f"cannot write {shown_path(error.filename)}" if error.filename else "cannot install"
            print_error(f"{where} ({error_reason(error)})", "--install-completion")
            raise typer.Exit(1) from None

    install_or_say.says_why_not = True  # type: ignore[attr-defined]
    option.callback = install_or_say


class _FlagsHelp:
    """For a Typer command or group: its flags (the help option and Typer's completion options, added after the
    command is made, included) show no value placeholder in the help, and the help is printed once per machine
    under torchrun."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # the help and its rows come from here
        _flags_take_no_value(params)
        return params

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            _said_once_per_machine(option)
        return option


class _ErrorsNameTheirCommand:
    """For a Typer command or group: a usage error its option parser raises without the command's context (an option
    given without its value: ``clipvis evaluate --gt``) gets it, so that its line names where help is as every other
    usage error does (:func:`usage_error_line`)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as error:
            if hasattr(error, "ctx") and error.ctx is None:
                error.ctx = ctx
            raise


class _OptionsGivenOnce:
    """For a Typer command: an option that takes one value, given twice (``--vocab cat --vocab dog``), is a usage
    error naming it; click kept the last value alone, and the first was lost without a word (run.json recorded
    ``['dog']``). Options meant to be repeated (``multiple``: train's ``--data``/``--images``), flags and counts are
    left as they are; so is a command line asking for its help."""

    def make_parser(self, ctx: Any) -> Any:
        parser = super().make_parser(ctx)
        parse = parser.parse_args

        def parse_each_once(args: list[str]) -> Any:
            given = list(args)  # (the parser consumes its list)
            opts, rest, order = parse(args=args)
            if not ctx.resilient_parsing:  # (shell completion parses half-typed lines)
                _refuse_repeated_options(order, given)
            return opts, rest, order

        parser.parse_args = parse_each_once
        return parser


# Options taking a comma-separated list: a second one reads as adding to the first, so the error says how to
COMMA_LISTS = frozenset({"--vocab", "--formats", "--to", "--classes"})


def _refuse_repeated_options(order: list[Any], given: list[str]) -> None:
    """A usage error for the first option in ``order`` (the parameters in the order the command line gave them, one
    entry per occurrence) that takes one value and was given more than once, or that is a flag pair given in both
    forms (``--skip-existing --overwrite``: click kept the last one without a word). ``given`` is the command line's
    words, which tell the two forms of a pair apart (``order`` holds the parameter alone)."""
    if any(getattr(param, "is_eager", False) for param in order):  # --help: shown whatever else the line holds
        return
    options = given[:given.index("--")] if "--" in given else given  # after `--`, every word is an argument
    seen: set[int] = set()
    for param in order:
        if getattr(param, "param_type_name", "") != "option" or param.multiple or param.count:
            continue
        if param.is_flag:
            if id(param) in seen and param.secondary_opts and _both_forms_given(param, options):
                on, off = param.opts[-1], param.secondary_opts[-1]
                raise typer.BadParameter(f"{on} and {off} contradict each other: give one")
        elif id(param) in seen:
            how = "give one comma-separated list" if COMMA_LISTS & set(param.opts) else "give it once"
            named = " / ".join(f"'{name}'" for name in param.opts)  # as click's own errors name it: '-o' / '--output'
            raise typer.BadParameter(f"{named} given twice: {how}")
        seen.add(id(param))


def _both_forms_given(flag: Any, words: list[str]) -> bool:
    """Whether ``words`` hold both an ``--on`` and an ``--off`` name of the boolean flag pair ``flag``."""
    return bool(set(flag.opts) & set(words)) and bool(set(flag.secondary_opts) & set(words))


class ClipvisCommand(_OptionsGivenOnce, _ErrorsNameTheirCommand, _FlagsHelp, TyperCommand):
    """A `clipvis` subcommand: Typer's, with flags shown without a value placeholder in the help, and its arguments
    in the usage line as plain metavars (``clipvis segment [OPTIONS] INPUTS...``: Typer writes a required argument
    in braces, ``{inputs}...``, which reads as a choice); an option that takes one value may be given once."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [_REQUIRED_IN_BRACES.sub(r"\1", piece) for piece in super().collect_usage_pieces(ctx)]


class ClipvisGroup(_ErrorsNameTheirCommand, _FlagsHelp, TyperGroup):
    """The `clipvis` command group: Typer's, with usage errors and the help said once per machine under torchrun,
    flags shown without a value placeholder in the help, and a completion that cannot be installed said in one line."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # the options are parsed from here, eager ones first
        for param in params:
            if param.name == "install_completion":
                _installs_or_says_why_not(param)
        return params

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        with _usage_errors_said_once():
            return super().make_context(*args, **kwargs)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing and repeats_a_first_process():
            raise typer.Exit(USAGE_ERROR)  # `clipvis` alone prints the help (as it is made): once per machine
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors_said_once():
            return super().invoke(ctx)


app = typer.Typer(
    cls=ClipvisGroup,
    name="clipvis",
    help="Open-vocabulary video instance segmentation (CLIP-VIS): segment and track any named object in videos.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (the launcher answers them without torch)
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        if repeats_a_first_process():  # under torchrun: once per machine, as the help
            raise typer.Exit()
        typer.echo(f"clipvis {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """clipvis: segment, track and label every object whose name you type."""


# Each command's help is given here (not read from its function's docstring, which python -OO strips); the command
# list shows the short_help one-liners (the help's first paragraph keeps its line breaks there).
app.command("segment", cls=ClipvisCommand, help=SEGMENT_HELP)(segment)
app.command("evaluate", cls=ClipvisCommand, help=EVALUATE_HELP,
            short_help="Video mask AP: score a results file, or run a checkpoint on a benchmark or on "
            "custom data and score it.")(evaluate)
app.command("export", cls=ClipvisCommand, help=EXPORT_HELP,
            short_help="Convert segment outputs to CVAT, COCO, MOTS, PNG masks, Label Studio, FiftyOne or "
            "YouTube-VIS files; or the network to ONNX.")(export)
app.command("train", cls=ClipvisCommand, help=TRAIN_HELP)(train)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
