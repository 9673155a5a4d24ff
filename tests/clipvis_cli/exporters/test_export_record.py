"""Which entries of a folder `clipvis export` made from a results file (`exports_from`), read from the folder's
.clipvis-export.json as this and earlier versions wrote it."""

from __future__ import annotations

import json
from pathlib import Path

from clipvis.cli.exporters.export_record import EXPORT_RECORD, exports_from


def _record(folder: Path, entries: dict[str, dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / EXPORT_RECORD).write_text(json.dumps({"entries": entries}), encoding="utf-8")
    for name in entries:
        (folder / name).write_text("x", encoding="utf-8")


def test_a_results_file_is_made_from_its_recorded_inputs(tmp_path) -> None:
    """results.json records the results files it was made from: it is an export of each, of no other."""
    folder, other = tmp_path / "clip", tmp_path / "other"
    source = {"results": "clipvis export --to ytvis"}
    inputs = [str(other / "ytvis.json"), str(folder / "ytvis.json")]
    _record(folder, {"results.json": {"from": source, "inputs": inputs},
                     "coco": {"from": {"results": str(other / "ytvis.json"), "video_id": 1}}})
    assert exports_from(folder, folder / "ytvis.json") == ["results.json"]
    assert exports_from(folder, other / "ytvis.json") == ["coco", "results.json"]
    _record(folder, {"results.json": {"from": source, "inputs": [str(other / "ytvis.json")]}})
    assert exports_from(folder, folder / "ytvis.json") == []


def test_a_results_file_recorded_without_inputs_counts_as_made_from_the_ytvis_json_beside_it(tmp_path) -> None:
    """A record written before inputs were recorded: the export's default destination is the input's own folder."""
    folder = tmp_path / "clip"
    _record(folder, {"results.zip": {"from": {"results": "clipvis export --to ytvis"}}})
    assert exports_from(folder, folder / "ytvis.json") == ["results.zip"]
    assert exports_from(folder, tmp_path / "elsewhere" / "ytvis.json") == []
