"""clipvis.cli.json_io: JSON documents streamed a piece at a time, the same text json.dumps writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipvis.cli.atomic import atomic_write_json, atomic_write_json_stream, atomic_write_streamed_json
from clipvis.cli.json_io import JsonObjectItems, materialised_json


@pytest.mark.parametrize("items", [0, 1, 255, 256, 257, 600])
def test_streamed_json_equals_the_whole_document(tmp_path: Path, items: int) -> None:
    """Iterators are streamed as lists a chunk of items at a time, also inside dicts and inside other iterators
    (a track's masks inside the annotations): the file is the document json.dumps writes, whatever the count."""

    def document():
        masks = ({"size": [4, 5], "counts": f"{k}ü"} if k % 7 else None for k in range(items))
        tracks = iter([{"score": 0.5, "segmentations": masks, "id": 1}, {"plain": [1, 2]}, iter(range(items % 5)),
                       *({"k": k} for k in range(items))])
        keys = {3: iter([1]), None: 0, False: iter(()), 2.5: "x", "é": iter("ab")}  # json.dumps' keys: strings
        frames = JsonObjectItems((str(k), {"frame": k, "objects": iter([k] * (k % 3))}) for k in range(items % 9))
        return [("info", {"a": "é"}), ("annotations", tracks), ("empty", iter(())), ("n", items), ("keys", keys),
                ("frames", frames), ("nested", {"frames": JsonObjectItems(iter(()))}),
                ("deep", iter([{"id": 1, "value": {"n": 2, "sequence": iter(range(items % 4))}}]))]

    path = atomic_write_json_stream(tmp_path / "doc.json", document())
    expected = json.dumps({key: materialised_json(value) for key, value in document()}, ensure_ascii=False,
                          separators=(",", ":"))
    assert path.read_text(encoding="utf-8") == expected + "\n"
    assert json.loads(path.read_text(encoding="utf-8"))["keys"] == {"3": [1], "null": 0, "false": [], "2.5": "x",
                                                                   "é": ["a", "b"]}


def test_the_streamed_json_writers_keep_non_ascii_keys_as_atomic_write_json_does(tmp_path: Path) -> None:
    """atomic_write_json_stream wrote a field's key ASCII-escaped (``"\\u72d7"``) where every other clipvis JSON
    writer, and its own values, keep the character: the same document came out as two texts."""
    def fields():
        return iter([("狗", {"é": iter(["ü"])}), ("n", 1)])

    whole = atomic_write_json(tmp_path / "whole.json", {"狗": {"é": ["ü"]}, "n": 1}).read_bytes()
    assert atomic_write_json_stream(tmp_path / "fields.json", fields()).read_bytes() == whole
    assert atomic_write_streamed_json(tmp_path / "value.json", JsonObjectItems(fields())).read_bytes() == whole
    assert "狗".encode() in whole
