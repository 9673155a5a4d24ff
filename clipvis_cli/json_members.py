"""Read a large JSON object a member at a time: the elements of the arrays a caller names are decoded one by one and
handed over as they come (an array's objects member by member, their own arrays element by element too), so a
results file of several GB (a 2-hour video's masks) is never all in memory.

Each value is decoded by Python's own `json` decoder (`JSONDecoder.raw_decode`: the same values, numbers and
errors as `json.loads`) from a window of the file's text that grows only as far as the value needs. A file that is
not a JSON object at its top level is decoded whole (it holds no arrays to stream), as `clipvis.cli.json_io.parse_json`
decodes it.
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from clipvis.cli.json_io import parse_json

READ_BYTES = 1 << 20  # the file is read this many bytes at a time (more where one value needs it)
_SPACE = " \t\n\r"  # JSON's whitespace
_NUMBER = frozenset("0123456789+-.eE")  # what a JSON number is written with


class JsonMembersError(ValueError):
    """The file is not valid JSON; `str()` is the decoder's message with the position in the whole file (``Expecting
    ',' delimiter: line 3 column 5 (char 40)``), as `json.loads` words it; ``msg``, ``lineno`` and ``colno`` are its
    parts, as a `json.JSONDecodeError`'s."""

    def __init__(self, msg: str, lineno: int, colno: int, pos: int) -> None:
        super().__init__(f"{msg}: line {lineno} column {colno} (char {pos})")
        self.msg, self.lineno, self.colno, self.pos = msg, lineno, colno, pos


@dataclass(frozen=True)
class ObjectArray:
    """How to stream an array of objects, each read member by member: ``start()`` before an element, each of its
    arrays named in ``streamed`` handed over element by element (that member then ``[]``), and ``end(members)``
    after it with the element's other members. An element that is not an object is given to ``end`` as it is (with
    no ``start``)."""

    start: Callable[[], None]
    end: Callable[[Any], None]
    streamed: Mapping[str, Streamed] = field(default_factory=dict)


Streamed = Callable[[Any], None] | ObjectArray  # what is done with each element of an array


class RepeatedMemberError(ValueError):
    """A streamed array's key is given twice in one object (``"annotations": [...], "annotations": [...]``): which one
    the file means is not known (`json.loads` keeps the last, after both were read); `str()` names the key and where
    the second one is."""


def read_members(
    path: Path | str | IO[bytes],
    streamed: Mapping[str, Streamed],
    array: Streamed | None = None,
    arriving: Callable[[str, Mapping[str, Any]], None] | None = None,
) -> Any:
    """The members of the JSON object in file ``path`` (UTF-8) as a dict, except that the array of each key in
    ``streamed`` is not kept: each of its elements is given to that key's function as soon as it is decoded, or read
    member by member (`ObjectArray`), and the key maps to ``[]``. A key whose value is not an array maps to its
    value, as do other keys named twice (the last one, as `json.loads` keeps it); a key of ``streamed`` named twice
    in one object raises RepeatedMemberError. A file whose top level is not an object is returned as `json.loads`
    decodes it, except that with ``array`` a file whose top level is an array has its elements handed to ``array``
    as ``streamed``'s are (and ``[]`` is returned). ``arriving(key, members)``, where given, is called as a streamed
    array of the top-level object begins, with the members read before it. ``path`` may be a binary file open for
    reading (a member of a zip archive, a gzip file), read from where it stands.

    Raises JsonMembersError for text that is not JSON, UnicodeDecodeError for bytes that are not UTF-8 (its position
    counted in the whole file, as decoding the whole file gives it), and OSError for a file that cannot be read;
    what a function raises goes through as it is."""
    if not isinstance(path, str | Path):
        return _read_members(path, streamed, array, arriving)
    with open(path, "rb") as handle:
        return _read_members(handle, streamed, array, arriving)


def _read_members(
    handle: IO[bytes],
    streamed: Mapping[str, Streamed],
    array: Streamed | None,
    arriving: Callable[[str, Mapping[str, Any]], None] | None,
) -> Any:
    text = _Window(handle)
    if text.peek() == "[" and array is not None:
        text.elements(array)
        members: Any = []
    elif text.peek() != "{":  # nothing to stream: decoded whole, positions and all, as json.loads decodes it
        try:
            return parse_json(text.rest())
        except json.JSONDecodeError as error:
            raise JsonMembersError(error.msg, error.lineno, error.colno, error.pos) from None
    else:
        members = text.members(streamed, arriving)
    if text.peek() != "":
        raise text.error("Extra data")
    return members


class _FileDecodeError(UnicodeDecodeError):
    """A UnicodeDecodeError of one chunk of a file, its position moved to the whole file's (``offset`` bytes before
    the chunk's ``object``)."""

    def __init__(self, error: UnicodeDecodeError, offset: int) -> None:
        super().__init__(error.encoding, error.object, error.start, error.end, error.reason)
        self.offset = offset

    def __str__(self) -> str:
        start, end = self.start + self.offset, self.end + self.offset
        if self.end - self.start == 1:
            return (f"'{self.encoding}' codec can't decode byte 0x{self.object[self.start]:02x} in position {start}: "
                    f"{self.reason}")
        return f"'{self.encoding}' codec can't decode bytes in position {start}-{end - 1}: {self.reason}"


class _Window:
    """The file's text from the reading position: ``buffer[position:]`` is read and not yet decoded; ``start``,
    ``lines`` and ``line_start`` are the file's characters and line ends before ``buffer`` and where its first line
    begins (for positions in messages). The file's bytes are decoded as UTF-8 and its line ends read as Python's
    text files read them (``\r\n`` and ``\r`` as ``\n``), so the text is what `Path.read_text` gives."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        # surrogatepass: UTF-8 bytes of a lone surrogate (a file name that was not UTF-8) are read as json.loads of
        # the file's bytes reads them
        self.utf8 = codecs.getincrementaldecoder("utf-8")("surrogatepass")
        self.text = io.IncrementalNewlineDecoder(self.utf8, translate=True)
        self.bytes_read = 0
        self.buffer = ""
        self.position = 0
        self.start = 0
        self.lines = 0
        self.line_start = 0  # where the line of ``buffer``'s start begins in the file
        self.ended = False
        self.decoder = json.JSONDecoder()

    def _decoded(self, characters: int) -> str:
        """At least one more character of the file, about ``characters`` bytes' worth ('' at its end)."""
        while True:
            chunk = self.handle.read(max(characters, READ_BYTES))
            held = len(self.utf8.getstate()[0])  # bytes of a character the last chunk cut, decoded with this one
            try:
                text = self.text.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                raise _FileDecodeError(error, self.bytes_read - held) from None
            self.bytes_read += len(chunk)
            if text or not chunk:
                return text

    def _read(self, characters: int) -> bool:
        """Read at least ``characters`` more (False at the file's end, the buffer then as it was), dropping what
        was decoded."""
        if self.ended:
            return False
        chunk = self._decoded(characters)
        if not chunk:
            self.ended = True
            return False
        done = self.buffer[: self.position]
        if "\n" in done:
            self.line_start = self.start + done.rfind("\n") + 1
        self.start += len(done)
        self.lines += done.count("\n")
        self.buffer = self.buffer[self.position :] + chunk
        self.position = 0
        return True

    def rest(self) -> str:
        """The whole text of the file (none of it read yet but whitespace), as `Path.read_text` gives it: the
        whitespace already dropped is put back as blanks and line ends where they were (the places in messages)."""
        pieces = [" " * (self.line_start - self.lines) + "\n" * self.lines + " " * (self.start - self.line_start),
                  self.buffer]
        while not self.ended and (chunk := self._decoded(READ_BYTES)):
            pieces.append(chunk)
        self.ended = True
        return "".join(pieces)

    def peek(self) -> str:
        """The next character that is not whitespace ('' at the file's end), left unread."""
        while True:
            while self.position < len(self.buffer) and self.buffer[self.position] in _SPACE:
                self.position += 1
            if self.position < len(self.buffer) or not self._read(0):
                return self.buffer[self.position : self.position + 1]

    def take(self, character: str, message: str | None = None) -> None:
        if self.peek() != character:
            raise self.error(message or f"Expecting {character!r} delimiter")
        self.position += 1

    def value(self) -> Any:
        """Decode the JSON value at the reading position (after whitespace), reading as much more of the file as it
        needs: a value that fails to decode, or ends where the text read so far ends or goes on as a number would,
        is decoded again with twice the text, until the file's end."""
        self.peek()
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.position)
            except json.JSONDecodeError as error:
                if self._read(len(self.buffer) - self.position):
                    continue
                raise self.error(error.msg, error.pos) from None
            except RecursionError:
                raise self.error("nested too deeply to read") from None
            # a number cut by the window's end ("12" of "125", "1" of "1e5") decodes: read on where one might go on
            cut = end == len(self.buffer) or self.buffer[end] in _NUMBER
            if cut and self._read(len(self.buffer) - self.position):
                continue
            self.position = end
            return value

    def members(
        self, streamed: Mapping[str, Streamed], arriving: Callable[[str, Mapping[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Decode the object at the reading position, streaming the arrays named in ``streamed`` (``arriving``: see
        `read_members`)."""
        self.take("{")
        members: dict[str, Any] = {}
        if self.peek() == "}":
            self.position += 1
            return members
        while True:
            if self.peek() != '"':
                raise self.error("Expecting property name enclosed in double quotes")
            at = self.start + self.position  # in the file (reading the key may move the buffer on, past it not)
            key = self.value()
            how = streamed.get(key)
            if how is not None and key in members:
                raise RepeatedMemberError(f"{key!r} given twice in one object ({self._where(at - self.start)})")
            self.take(":")
            if how is not None and self.peek() == "[":
                if arriving is not None:
                    arriving(key, members)
                self.elements(how)
                members[key] = []
            else:
                members[key] = self.value()
            if self.peek() == "}":
                self.position += 1
                return members
            self.take(",", "Expecting ',' delimiter")

    def elements(self, how: Streamed) -> None:
        """Decode the array at the reading position, handing each element over as it comes."""
        self.take("[")
        if self.peek() == "]":
            self.position += 1
            return
        while True:
            if not isinstance(how, ObjectArray):
                how(self.value())
            elif self.peek() == "{":
                how.start()
                how.end(self.members(how.streamed))
            else:
                how.end(self.value())
            if self.peek() == "]":
                self.position += 1
                return
            self.take(",", "Expecting ',' delimiter")

    def error(self, message: str, position: int | None = None) -> JsonMembersError:
        """``message`` at ``position`` in the buffer (default: the reading position), located in the whole file."""
        return JsonMembersError(message, *self._place(self.position if position is None else position))

    def _place(self, position: int) -> tuple[int, int, int]:
        """``position`` in the buffer as json.loads places it in the whole file: (line, column, character)."""
        before = self.buffer[:position]
        line = self.lines + before.count("\n") + 1
        line_start = self.start + before.rfind("\n") + 1 if "\n" in before else self.line_start
        at = self.start + position
        return line, at - line_start + 1, at

    def _where(self, position: int) -> str:
        """``position`` in the buffer as json.loads names a place in the whole file: ``line 3 column 5 (char 40)``."""
        line, column, at = self._place(position)
        return f"line {line} column {column} (char {at})"
