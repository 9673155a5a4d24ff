"""`read_members`: a JSON object read a member at a time, the named arrays handed over element by element: the values
and the errors (messages and positions) of `json.loads`, whatever the size of the window the file is read through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipvis.cli import json_members
from clipvis.cli.json_members import JsonMembersError, RepeatedMemberError, read_members

DOCUMENTS = [
    "{}", "{ }", '{"a": []}', '{"a": [ ]}', '{"a": [1, 2, 3], "b": {"x": 1}}', '{"a": 5}', '{"b": [1], "a": "x"}',
    "[1, 2]", '"text"', "", "   ", '{"a": [1,2', '{"a": [1,2]', '{"a": [1,2]} x', '{"a": [1,2]}\n\n',
    '\ufeff{"a": []}', '{"a":[12345678901234567890.5, 1e5, -0.25, 7]}', '{\n"a": [1,\n 2,, 3]}', '{"a": NaN}',
    "{1: 2}", '{"a": 1,}', '{"a": [1,]}', '{"a" 1}', '{"a": [1 2]}', '{"a": [{"x": 1} {"y": 2}]}',
    '{"a": [{"x": "\\u00e9\\"]}"}, "é", null, true, false]}', '{\n  "a": [\n    {"k": [1, 2]}\n  ],\n  "c": 3\n}\n',
    '{"a": [{"x": 1}], "a": [{"y": 2}]}', '{"a": [{"counts": "' + "ab\\\\" * 40 + '"}]}', '{"a": [1]',
    '{"a": [[[[1]]]], "b": [[[[2]]]]', "[" * 100_000 + "]" * 100_000, '{"a": [' + "[" * 100_000 + "]" * 100_000 + "]}",
]


def _read(path: Path) -> tuple:
    handed: list = []
    try:
        members = read_members(path, {"a": handed.append})
    except (JsonMembersError, RepeatedMemberError) as error:
        return "error", str(error)
    if isinstance(members, dict) and isinstance(members.get("a"), list):
        assert members["a"] == []
        members["a"] = handed  # the elements handed over, in order: the array json.loads gives
    return "value", members


def _expected(text: str) -> tuple:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return "error", str(error)
    except RecursionError:
        return "error", "nested too deeply to read: line 1 column 1 (char 0)"
    if isinstance(value, dict) and text.count('"a":') > 1:  # json.loads keeps the last: which one is meant?
        second = text.rindex('"a":')
        return "error", f"'a' given twice in one object (line 1 column {second + 1} (char {second}))"
    return "value", value


@pytest.mark.parametrize("window", [1, 3, 64, 1 << 20])
def test_members_and_errors_are_those_of_json_loads(tmp_path: Path, monkeypatch, window: int) -> None:
    """Read through windows of 1 character to 1 M: a value cut by the window's end (a number, a string holding
    '"]}', an element past a 1-character window) is read again with more text, and the errors name the position in
    the whole file as json.loads does."""
    monkeypatch.setattr(json_members, "READ_BYTES", window)
    for number, text in enumerate(DOCUMENTS):
        path = tmp_path / f"{number}.json"
        path.write_text(text, encoding="utf-8")
        got, expected = _read(path), _expected(text)
        if text.startswith('{"a": [' + "[" * 1000):  # raised by the decoder of the element, at the element
            expected = ("error", "nested too deeply to read: line 1 column 8 (char 7)")
        assert repr(got) == repr(expected), text[:60]  # repr: NaN equals itself


def test_a_large_array_is_never_all_in_memory(tmp_path: Path, monkeypatch) -> None:
    """The elements of a streamed array are handed over as they are decoded: reading a file of 20,000 masks holds a
    small part of it (json.loads of the same file peaks at several times its size)."""
    import tracemalloc

    monkeypatch.setattr(json_members, "READ_BYTES", 1 << 16)  # the file is 6 MB: a 64 KiB window
    element = {"size": [480, 854], "counts": "PQ`0<d0O1N2M3" * 20}
    path = tmp_path / "large.json"
    path.write_text(json.dumps({"videos": [{"id": 1}], "annotations": [element] * 20_000, "categories": []}))
    count = 0

    def take(value: dict) -> None:
        nonlocal count
        assert value == element
        count += 1

    tracemalloc.start()
    try:
        members = read_members(path, {"annotations": take})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 20_000 and members == {"videos": [{"id": 1}], "annotations": [], "categories": []}
    assert peak < path.stat().st_size / 10, (peak, path.stat().st_size)


def test_bytes_that_are_not_utf8_raise_as_reading_the_text_does(tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"a": ["caf\xe9"]}')
    with pytest.raises(UnicodeDecodeError):
        read_members(path, {"a": lambda value: None})


NESTED = [
    '{"a": [{"k": [1, 2], "x": 1}, 5, {"x": [3]}, {}, {"k": []}, {"k": {"not": "an array"}}]}',
    '{"a": [{"x": 1, "k": [{"size": [2, 3], "counts": "a"}, null]}], "b": [{"k": [9]}]}',
    '{"a": [{"k": [1, 2}]}', '{"a": [{"k": [1, 2], }]}', '{"a": [{"k" [1]}]}', '{"a": [{"k": [1]} {"k": [2]}]}',
    '{"a": [{"k": [1]]}', '{"a": [{1: [2]}]}', '{\n "a": [\n  {\n   "k": [\n    1,\n    2\n   ]\n  }\n ]\n}',
]


@pytest.mark.parametrize("window", [1, 5, 1 << 20])
def test_objects_of_an_array_are_read_member_by_member(tmp_path: Path, monkeypatch, window: int) -> None:
    """An array's objects (a results file's annotations) read member by member, their own array (a track's masks)
    handed over element by element: the same values and errors as json.loads."""
    monkeypatch.setattr(json_members, "READ_BYTES", window)
    for number, text in enumerate(NESTED):
        path = tmp_path / f"{number}.json"
        path.write_text(text, encoding="utf-8")
        elements: list = []
        current: list = []

        def start(current: list = current) -> None:
            current.clear()

        def end(value, current: list = current, elements: list = elements) -> None:
            if isinstance(value, dict) and value.get("k") == []:
                value["k"] = list(current)
            elements.append(value)

        try:
            members = read_members(path, {"a": json_members.ObjectArray(start, end, {"k": current.append})})
            got = ("value", {**members, "a": elements})
        except (JsonMembersError, RepeatedMemberError) as error:
            got = ("error", str(error))
        assert got == _expected(text), text


@pytest.mark.parametrize("window", [1, 7, 1 << 20])
def test_a_byte_that_is_not_utf8_is_named_at_its_place_in_the_file(tmp_path: Path, monkeypatch, window: int) -> None:
    """Read in chunks, the decoder's position was the chunk's (a bad byte 3 MB in was said to be at 903,426): it is
    the file's, as decoding the whole file says it, also for a character cut by a chunk's end; \\r\\n and \\r line
    ends are read as Python's text files read them."""
    monkeypatch.setattr(json_members, "READ_BYTES", window)
    cases = [b'{"a": ["caf\xe9"]}', b'{"a": ["' + "é".encode() * 50 + b'\xff"]}', b'{"a": ["\xe2\x82"]}',
             b'{"a": [1],\r\n "b": 2}\r\n', b'{"a": [1],\r "b": "\xc3\xa9"}', b'{"a": ["' + b"x" * 20_000 + b'\xff"]}']
    for number, data in enumerate(cases):
        path = tmp_path / f"{number}.json"
        path.write_bytes(data)
        try:
            expected = ("value", json.loads(path.read_text(encoding="utf-8")))
        except UnicodeDecodeError as error:
            expected = ("error", str(error))
        try:
            handed: list = []
            members = read_members(path, {"a": handed.append})
            got = ("value", {**members, "a": handed})
        except UnicodeDecodeError as error:
            got = ("error", str(error))
        assert got == expected, data
