"""JSON in and out: `parse_json` (``json.loads`` with one-line errors), and streamed serialisation
(`streamed_json`, `write_streamed_json`, `JsonObjectItems`): a document far larger than memory (every mask of a long
video) is written a piece at a time, never held at once; `materialised_json` gives the same value whole. Writing such
a document atomically is `clipvis.cli.atomic.atomic_write_json_stream`'s; reading a large one a member at a time,
`clipvis.cli.json_members`'.

Text that cannot be encoded as UTF-8 (a file name that is not valid UTF-8 reaches Python as lone surrogates) is
written as JSON escapes (`\udcff`, `JSON_TEXT_ERRORS`) instead of failing: json.loads gives back the exact name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

# Inside a JSON string, a lone surrogate written as `\udcXX` is a valid escape that json.loads reads back.
JSON_TEXT_ERRORS = "backslashreplace"


def parse_json(text: str | bytes | bytearray) -> Any:
    """``json.loads``, with a document nested too deeply for the parser (100,000 levels) raised as the
    JSONDecodeError of a malformed one (it was a RecursionError, a traceback where one line was due)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply to read", "", 0) from None

# Items of a streamed list serialised at once: one json.dumps per item took ~3 us more each (a 2-hour track has
# 216,000 masks), one per list held the whole list and its text.
_STREAM_CHUNK_ITEMS = 256


class JsonObjectItems:
    """A JSON object whose ``(key, value)`` pairs come from an iterator: ``streamed_json`` writes it pair by pair (a
    per-frame object of a long video, whose keys are the frames)."""

    def __init__(self, items: Iterable[tuple[str, Any]]) -> None:
        self.items = iter(items)


def streamed_json(value: Any) -> Iterator[str]:
    """``value`` as compact JSON text, in pieces: an iterator becomes a list written a chunk of items at a time, a
    ``JsonObjectItems`` an object written pair by pair, a dict holding either is written key by key; anything else
    is one ``json.dumps``."""
    pairs = _streamed_pairs(value)
    if pairs is not None:
        yield "{"
        for index, (key, item) in enumerate(pairs):
            yield ("," if index else "") + _compact_json({key: None})[1:-6] + ":"  # the key as json.dumps writes it
            yield from streamed_json(item)
        yield "}"
    elif isinstance(value, Iterator):
        yield "["
        written = False
        chunk: list[Any] = []
        for item in value:
            if _streamed(item):
                if chunk:
                    yield ("," if written else "") + _compact_json(chunk)[1:-1]
                    written, chunk = True, []
                if written:
                    yield ","
                yield from streamed_json(item)
                written = True
                continue
            chunk.append(item)
            if len(chunk) == _STREAM_CHUNK_ITEMS:
                yield ("," if written else "") + _compact_json(chunk)[1:-1]
                written, chunk = True, []
        if chunk:
            yield ("," if written else "") + _compact_json(chunk)[1:-1]
        yield "]"
    else:
        yield _compact_json(value)


def write_streamed_json(path: Path, value: Any) -> None:
    """``value`` (``streamed_json``) and a newline into the file at ``path``, piece by piece."""
    with open(path, "w", encoding="utf-8", errors=JSON_TEXT_ERRORS) as handle:
        for text in streamed_json(value):
            handle.write(text)
        handle.write("\n")


def _streamed_pairs(value: Any) -> Iterator[tuple[Any, Any]] | None:
    """The key-value pairs of an object ``streamed_json`` writes pair by pair (a ``JsonObjectItems``, or a dict
    holding an iterator); None for any other value."""
    if isinstance(value, JsonObjectItems):
        return value.items
    return iter(value.items()) if _holds_iterator(value) else None


def _holds_iterator(value: Any) -> bool:
    """Whether ``value`` is a dict with an iterator or ``JsonObjectItems`` among its values, or in a dict among them."""
    if not isinstance(value, dict):
        return False
    for item in value.values():
        if type(item) not in _JSON_LEAF_TYPES and _streamed(item):
            return True
    return False


# Values ``streamed_json`` writes with one json.dumps whatever they hold (it streams no list's items), known by their
# exact type: asked of every item of a streamed list (a COCO annotation's ten values and two dicts, ~10^5 of them),
# the abstract ``Iterator`` check took ~10 % of the JSON writers (ytvis.json + coco.json of 6,000 masks: 305 ->
# 277 ms).
_JSON_LEAF_TYPES = frozenset({str, int, float, bool, type(None), list, tuple})


def _streamed(value: Any) -> bool:
    """Whether ``streamed_json`` writes ``value`` in pieces: an iterator, a ``JsonObjectItems``, or a dict holding
    one (``_holds_iterator``)."""
    if type(value) in _JSON_LEAF_TYPES:
        return False
    return isinstance(value, Iterator | JsonObjectItems) or _holds_iterator(value)


def materialised_json(value: Any) -> Any:
    """``value`` with every iterator that ``streamed_json`` would stream made a list (for ``json.dumps``)."""
    pairs = _streamed_pairs(value)
    if pairs is not None:
        return {key: materialised_json(item) for key, item in pairs}
    if isinstance(value, Iterator):
        return [materialised_json(item) for item in value]
    return value


def _compact_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
