"""The one place that formats what the commands print about a problem: `clipvis: error: <input>: <cause>`.

Every command prints failures through `error_line` / `print_error` (and warnings through `warning_line`), so
users and scripts see one shape everywhere: one line, the program name, the input it concerns, the cause.

Paths are turned into text two ways. `path_text`, for JSON files and events, keeps the name as it is, except that a
file name that is not valid UTF-8 (possible on Linux, where a name is any bytes) shows its undecodable bytes as
`\\xNN` escapes instead of crashing the JSON writer that records it. `shown_path`, for every message and log line,
also keeps it on one line and tells it from every other name: a newline, a tab or another character that does not
print is escaped (`\\n`, `\\t`, `\\x1b`), and so is a backslash (`\\\\`), as `ls -b` and Python's repr write them;
a name with a space at either end is quoted (`' a.mp4 '`).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

PROGRAM = "clipvis"


def path_text(path: Path | str | bytes) -> str:
    """`path` as text that can always be encoded as UTF-8: undecodable bytes of the name become `\\xNN`.

    For a valid UTF-8 name this is `str(path)` unchanged.
    """
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate that no file name can hold
        return os.fspath(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A name starting or ending with one of these is shown quoted (a space at an edge is invisible in `name: cause`)
_QUOTED_EDGES = (" ", "'")


def shown_path(path: Path | str | bytes) -> str:
    """`path` for a message or a human log line: one line, and never the same text as another name's.

    An undecodable byte shows as `\\xNN` (as in `path_text`), a newline, carriage return or tab as `\\n`, `\\r`,
    `\\t`, any other character that does not print (control characters, line and paragraph separators, a
    right-to-left override) as `\\xNN` / `\\uNNNN`, and a backslash as `\\\\`, so that `bad name.mp4` and a
    `bad<newline>name.mp4` or a name holding a literal `\\n` are told apart. A name that starts or ends with a space
    (`' a.mp4 '`, as a list read from stdin can give), that is empty (`''`) or that starts or ends with a quote is
    shown between single quotes, an inner quote as `\\'`, so that `clipvis: error:  a.mp4 : ...` no longer hides
    where the name begins and ends. A name made of printable characters without a backslash and without such an edge
    (almost every name) is `path_text(path)` unchanged.
    """
    try:
        text = os.fsencode(path).decode("utf-8", "surrogateescape")  # an undecodable byte: U+DC80..U+DCFF
    except UnicodeEncodeError:  # a lone surrogate that no file name can hold: escaped below
        text = os.fspath(path)
    quoted = text == "" or text[0] in _QUOTED_EDGES or text[-1] in _QUOTED_EDGES
    if text.isprintable() and "\\" not in text and not quoted:
        return text
    shown = []
    for char in text:
        code = ord(char)
        if char in _NAMED_ESCAPES:
            shown.append(_NAMED_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:  # the byte surrogateescape stood in for
            shown.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            shown.append(char)
        elif code < 0x100:
            shown.append(f"\\x{code:02x}")
        elif code < 0x10000:
            shown.append(f"\\u{code:04x}")
        else:
            shown.append(f"\\U{code:08x}")
    if quoted:  # an inner quote escaped, so that no shown name is another's: `'\\' a.mp4 \\''` for `' a.mp4 '`
        return "'" + "".join(shown).replace("'", "\\'") + "'"
    return "".join(shown)


_LINE_BREAKS = re.compile(r"\s*[^\S ]\s*")  # a run of whitespace holding more than spaces: a newline, a tab
_EDGE_LINE_BREAKS = re.compile(r"^\s*[^\S ]\s*|\s*[^\S ]\s*$")  # such a run at either end


def shell_word(path: Path | str | bytes) -> str:
    """``path`` as one shell word to paste into a command line a message suggests, which the shell reads back as the
    file's real name: `shlex.quote` of the name itself (`'out/my clip'`, `' clip.avi'`, `''`; not of `shown_path`,
    whose own quotes and doubled backslashes the shell would keep), and `./-name` for a relative `-name` (no program
    takes it for an option).

    A name holding a newline, a tab, another character that does not print or a byte that is not UTF-8 cannot be
    written on one line between single quotes; it is written in ANSI-C quoting (`$'a\\nb.mp4'`), which bash, zsh,
    ksh and POSIX.1-2024's sh read back as those exact bytes.
    """
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a lone surrogate that no file name can hold
        raw = os.fspath(path).encode("utf-8", "replace")
    if raw.startswith(b"-"):
        raw = b"./" + raw
    text = raw.decode("utf-8", "surrogateescape")  # an undecodable byte: U+DC80..U+DCFF
    if text.isprintable():
        return shlex.quote(text)
    return "$'" + "".join(_ansi_c_char(char) for char in text) + "'"


_ANSI_C_ESCAPES = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _ansi_c_char(char: str) -> str:
    """``char`` inside `$'...'`: a printable character as it is, a backslash, a quote, a newline, a carriage return
    and a tab as `\\\\`, `\\'`, `\\n`, `\\r`, `\\t`, and any other character as the `\\xNN` escapes of its UTF-8
    bytes (of the byte itself for one that surrogateescape stood in for)."""
    if char in _ANSI_C_ESCAPES:
        return _ANSI_C_ESCAPES[char]
    if char.isprintable():
        return char
    return "".join(f"\\x{byte:02x}" for byte in char.encode("utf-8", "surrogateescape"))


def one_line(text: object) -> str:
    """`text` as one line: each run of whitespace that holds a newline or a tab (a multi-line exception message)
    becomes one space, or nothing at either end, printable. Spaces alone are kept as they are, at the ends too: a
    path in the text (`shown_path`) holds no newline or tab, `a  b.mp4` stays told apart from `a b.mp4`, and a name
    read from stdin as `  clip.mp4` is not shown as `clip.mp4` (a file that may be there). Blank text gives ``""``."""
    line = _LINE_BREAKS.sub(" ", _EDGE_LINE_BREAKS.sub("", path_text(str(text))))
    return line if line.strip() else ""


def counted(number: int, noun: str, plural: str | None = None) -> str:
    """``1 item``, ``2 items`` (``plural``: the noun's plural where it is not the noun and ``s``)."""
    return f"{number} {noun if number == 1 else plural or f'{noun}s'}"


def error_reason(error: BaseException) -> str:
    """The cause an exception carries as a few words on one line, without the file it concerns (the message names
    that): an OSError's or an FFmpeg error's `strerror` ("No space left on device"), else its message, else its
    type name."""
    return one_line(getattr(error, "strerror", None) or error) or type(error).__name__


def describe_exception(error: BaseException) -> str:
    """The cause carried by an exception, on one line.

    An OSError gives its `strerror` (plus the file name when it has one), other errors their message; an error
    without a message gives its type name.
    """
    if isinstance(error, OSError) and error.strerror:
        where = f" ({shown_path(error.filename)})" if error.filename is not None else ""
        return one_line(f"{error.strerror}{where}")
    message = one_line(str(error))
    return message or type(error).__name__


#: The flags that set what the model library's errors name as Python parameters (clipvis.model.errors), and
#: ("weights") how a command takes a checkpoint file's path, which clipvis.weights' WeightsNotAvailableError words as
#: ``load_model(PATH)`` for a Python caller (export's is ``--model PATH``: `load_predictor`'s ``weights_flag``)
MODEL_PARAMETER_FLAGS = {"allow_hub_clip": "--allow-hub-clip", "config": "--config", "clip_config": "--clip-config",
                         "weights": "--weights PATH"}


#: ``MODEL_PARAMETER_FLAGS`` and, for the commands that stream videos (segment, evaluate), the setting the streaming
#: loop's errors name as a Python parameter (``clipvis.cli.memory.ResolutionLimitError``'s ``batch_frames=1``)
STREAM_PARAMETER_FLAGS = {**MODEL_PARAMETER_FLAGS, "batch_frames": "--batch-frames 1"}


def model_error_message(error: BaseException, flags: dict[str, str] = MODEL_PARAMETER_FLAGS) -> str:
    """``describe_exception``, with the parameters a model library error says to give worded as the command line's
    ``flags`` (``--allow-hub-clip``, not ``allow_hub_clip=True``; ``--weights PATH``, not ``load_model(PATH)``)."""
    from clipvis.model.errors import ParameterHint
    from clipvis.weights import WeightsNotAvailableError

    if isinstance(error, ParameterHint):
        return one_line(error.worded(flags)) or type(error).__name__
    if isinstance(error, WeightsNotAvailableError) and "weights" in flags:
        return one_line(error.worded(flags["weights"])) or type(error).__name__
    return describe_exception(error)


class PathError(Exception):
    """A problem with one file or folder: `str()` is `<path>: <reason>` on one line, the path as `shown_path` writes
    it. `path` and `reason` keep the two parts."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{shown_path(path)}: {one_line(reason)}")
        self.path = Path(path)
        self.reason = reason


def subject_message(cause: str | BaseException, subject: Path | str | None = None) -> str:
    """`<subject>: <cause>` on one line: what run.json and the JSON-lines events record. The subject (the input
    or file concerned) is left out when None or when the cause already starts with it."""
    text = describe_exception(cause) if isinstance(cause, BaseException) else one_line(cause)
    if subject is not None:
        name = shown_path(subject) if isinstance(subject, Path) else one_line(subject)
        if not text.startswith(name):
            text = f"{name}: {text}"
    return text


def error_line(cause: str | BaseException, subject: Path | str | None = None) -> str:
    """`clipvis: error: <subject>: <cause>` on one line (see `subject_message`)."""
    return f"{PROGRAM}: error: {subject_message(cause, subject)}"


def warning_line(message: str) -> str:
    """`clipvis: warning: <message>` on one line."""
    return f"{PROGRAM}: warning: {one_line(message)}"


def print_error(cause: str | BaseException, subject: Path | str | None = None) -> None:
    """Print `error_line(cause, subject)` on stderr."""
    _print_stderr(error_line(cause, subject))


def print_warning(message: str) -> None:
    """Print `warning_line(message)` on stderr."""
    _print_stderr(warning_line(message))


def _print_stderr(line: str) -> None:
    import typer  # typer.echo also reaches the streams of typer's CliRunner

    typer.echo(line, err=True)


def print_path(path: Path, null: bool = False) -> None:
    """Print an output path on stdout, byte for byte (so `xargs`/`while read` get the real file name even when
    it is not UTF-8), ended by a newline, or with ``null`` by a NUL character (``--null``: `xargs -0` then gets a
    name that holds a newline whole)."""
    import typer

    typer.echo(os.fsencode(path) + (b"\0" if null else b"\n"), nl=False)


def unwritable_character(name: str) -> str | None:
    """What in a class or category name the output files cannot hold, said for a message ("a control character
    (U+000A)"), or None. XML 1.0 (CVAT, Label Studio) holds no control character but tab, newline and carriage
    return, no U+FFFE/U+FFFF and no lone surrogate (a byte of a command line that is not UTF-8); a newline or carriage
    return would also split a one-name-per-line file (MOTS labels.txt)."""
    for char in name:
        code = ord(char)
        if char in "\n\r" or (code < 0x20 and char != "\t") or 0x7F <= code <= 0x9F:
            return f"a control character (U+{code:04X})"
        if code in (0x2028, 0x2029):  # line and paragraph separators: str.splitlines() splits on them
            return f"a line separator (U+{code:04X})"
        if 0xD800 <= code <= 0xDFFF:
            return "a byte that is not UTF-8 text"
        if code in (0xFFFE, 0xFFFF):
            return f"a character XML cannot hold (U+{code:04X})"
    return None


__all__ = [
    "PROGRAM",
    "PathError",
    "describe_exception",
    "error_line",
    "error_reason",
    "one_line",
    "path_text",
    "print_error",
    "print_path",
    "print_warning",
    "shown_path",
    "subject_message",
    "unwritable_character",
    "warning_line",
]
