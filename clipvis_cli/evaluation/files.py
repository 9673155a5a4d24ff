"""Reading JSON inputs with one-line errors, and the atomic zip writer used for evaluation-server uploads."""

from __future__ import annotations

import contextlib
import gzip
import json
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from clipvis.cli.atomic import atomic_output_path, ensure_output_dir
from clipvis.cli.evaluation.errors import EvaluationInputError
from clipvis.cli.json_io import parse_json
from clipvis.cli.json_members import JsonMembersError, RepeatedMemberError, read_members
from clipvis.cli.zip_files import add_bytes
from clipvis.paths import NO_SUCH_FILE, missing_reason


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        reason = missing_reason(path)  # a symbolic-link loop is no missing file
        raise EvaluationInputError(f"{what} not found: {path}" if reason == NO_SUCH_FILE
                                   else f"{what} {path}: {reason}")
    if path.is_dir():
        raise EvaluationInputError(f"{what} is a directory, expected a JSON file: {path}")


def stream_json_file(
    path: Path,
    what: str,
    streamed: Mapping[str, Callable[[Any], None]],
    array: Callable[[Any], None] | None = None,
    arriving: Callable[[str, Mapping[str, Any]], None] | None = None,
) -> Any:
    """`read_json_file`'s document read as `clipvis.cli.json_members.read_members` reads it: the elements of the
    top-level object's arrays named in ``streamed`` (and of a top-level array, with ``array``) are handed over one by
    one as they are decoded and never all held, so memory does not grow with the file. The same files (a zip holding
    one JSON file, gzip) and the same one-line errors as `read_json_file`; a file that is not UTF-8 (UTF-16 or 32, or
    UTF-8 with a byte order mark, which the streaming reader does not take) is decoded whole, then handed over
    the same way, its top-level members in file order (a streamed key given twice refused as the streaming reader
    refuses it). What the functions raise goes through as it is."""
    path = Path(path)
    _check_file(path, what)
    try:
        with contextlib.ExitStack() as stack:
            if zipfile.is_zipfile(path):
                handle: Any = stack.enter_context(_open_only_json_member(path, what))
            else:
                handle = stack.enter_context(path.open("rb"))
                if handle.peek(2)[:2] == b"\x1f\x8b":  # gzip (results.json.gz)
                    handle = stack.enter_context(gzip.open(handle))
            if json.detect_encoding(handle.peek(4)[:4]) != "utf-8":
                stack.close()
                document = _read_json(path, what, _parse_keeping_top_level_pairs)
                return _hand_over(document, streamed, array, arriving)
            return read_members(handle, streamed, array, arriving)
    except RepeatedMemberError as error:
        raise EvaluationInputError(f"{what} {path}: {error}; which one is meant is not known") from error
    except (gzip.BadGzipFile, EOFError, zipfile.BadZipFile, JsonMembersError, UnicodeDecodeError, OSError) as error:
        raise _read_error(path, what, error) from error


def _hand_over(
    document: Any,
    streamed: Mapping[str, Callable[[Any], None]],
    array: Callable[[Any], None] | None,
    arriving: Callable[[str, Mapping[str, Any]], None] | None,
) -> Any:
    """A whole decoded ``document`` handed over as `stream_json_file` hands a streamed one over; a top-level object
    comes as its members in file order, repeated keys and all (`_parse_keeping_top_level_pairs`)."""
    if isinstance(document, list) and array is not None:
        for element in document:
            array(element)
        return []
    if not isinstance(document, _ObjectMembers):
        return document
    members: dict[str, Any] = {}
    for key, value in document.pairs:
        how = streamed.get(key)
        if how is not None and key in members:
            raise RepeatedMemberError(f"{key!r} given twice in one object")
        if how is not None and isinstance(value, list):
            if arriving is not None:
                arriving(key, members)
            for element in value:
                how(element)
            value = []
        members[key] = value
    return members


@dataclass
class _ObjectMembers:
    """A top-level JSON object as its (key, value) pairs in file order, a key given twice listed twice."""

    pairs: list[tuple[str, Any]]


def _parse_keeping_top_level_pairs(text: str) -> Any:
    """`parse_json` of ``text``, except that a top-level object comes back as `_ObjectMembers`."""
    innermost_last: list[list[tuple[str, Any]]] = [[]]

    def kept(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        innermost_last[0] = pairs  # the decoder calls this for each object after those inside it: the top one last
        return dict(pairs)

    try:
        document = json.loads(text, object_pairs_hook=kept)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply to read", "", 0) from None
    return _ObjectMembers(innermost_last[0]) if isinstance(document, dict) else document


def read_json_file(path: Path, what: str) -> Any:
    """Parse the JSON file `path`; `what` names the input in error messages (e.g. "results file")."""
    return _read_json(path, what, parse_json)


def _read_json(path: Path, what: str, parse: Callable[[str], Any]) -> Any:
    """`read_json_file`, the text decoded by ``parse``."""
    path = Path(path)
    _check_file(path, what)
    try:
        if zipfile.is_zipfile(path):  # a server submission (results.zip holding results.json), as export --zip writes
            return parse(_json_text(_only_json_member(path, what)))
        with path.open("rb") as handle:
            if handle.read(2) == b"\x1f\x8b":  # gzip (results.json.gz)
                handle.seek(0)
                with gzip.open(handle) as unpacked:
                    return parse(_json_text(unpacked.read()))
            handle.seek(0)
            return parse(_json_text(handle.read()))
    except (gzip.BadGzipFile, EOFError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError, OSError) as error:
        raise _read_error(path, what, error) from error


def _read_error(path: Path, what: str, error: Exception) -> EvaluationInputError:
    """The one line a JSON input that cannot be read gives (whole or streamed): a damaged archive, text that is not
    JSON (where), not in its encoding, or a file the system cannot read."""
    if isinstance(error, (gzip.BadGzipFile, EOFError, zipfile.BadZipFile)):
        return EvaluationInputError(f"{what} {path} is a damaged archive ({error})")
    if isinstance(error, (json.JSONDecodeError, JsonMembersError)):
        return EvaluationInputError(
            f"{what} {path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg})")
    if isinstance(error, UnicodeDecodeError):
        return EvaluationInputError(f"{what} {path} is not {_encoding_name(error.encoding)} JSON text "
                                    f"({error.reason})")
    assert isinstance(error, OSError)
    return EvaluationInputError(f"cannot read {what} {path}: {error.strerror or error}")


def _json_text(data: bytes) -> str:
    """A JSON file's bytes as text, decoded as ``json.loads`` decodes bytes (UTF-8, or UTF-16/32 by its first bytes).
    Decoded here so the bytes are freed before the parse: ``json.loads`` of the bytes held them, their text and the
    parsed document at once (a 200 MB results file: 200 MB more at the peak)."""
    return data.decode(json.detect_encoding(data), "surrogatepass")


def _encoding_name(codec: str) -> str:
    """The encoding a JSON file was decoded in (`_json_text`: UTF-8, or UTF-16/32 by its first bytes), as a person
    names it: ``utf-16-le`` -> "UTF-16 (little-endian)", ``utf-8-sig`` -> "UTF-8"."""
    parts = codec.lower().replace("_", "-").removesuffix("-sig").split("-")  # ["utf", "16", "le"]
    if parts[0] != "utf" or len(parts) < 2:
        return codec
    order = {"le": " (little-endian)", "be": " (big-endian)"}.get(parts[2] if len(parts) > 2 else "", "")
    return f"UTF-{parts[1]}{order}"


def _only_json_member(path: Path, what: str) -> bytes:
    """The one JSON file of a zip archive (EvaluationInputError when there is none, or several)."""
    with _open_only_json_member(path, what) as member:
        return member.read()


@contextlib.contextmanager
def _open_only_json_member(path: Path, what: str) -> Iterator[IO[bytes]]:
    """The one JSON file of a zip archive, open for reading (EvaluationInputError when there is none, or
    several)."""
    with zipfile.ZipFile(path) as archive:
        members = [name for name in archive.namelist() if name.endswith(".json") and not name.endswith("/")]
        if len(members) != 1:
            raise EvaluationInputError(f"{what} {path} is a zip holding {len(members)} JSON files; expected one")
        with archive.open(members[0]) as member:
            yield member


def write_zip_atomic(path: Path, members: dict[str, bytes]) -> Path:
    """Write a deflate-compressed zip holding `members` (archive name -> content) to `path` atomically."""
    path = Path(path)
    ensure_output_dir(path.parent)
    with atomic_output_path(path) as temp_path:
        with zipfile.ZipFile(temp_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, content in members.items():
                add_bytes(archive, name, content)
    return path
