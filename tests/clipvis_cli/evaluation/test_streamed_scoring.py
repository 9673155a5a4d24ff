"""`score_results_file` reads the GT an annotation at a time and the results an entry at a time, scoring them a batch
of masks at a time (`ResultsStream`, `StreamedVideoAP`): its numbers and its errors must be those of the whole files
parsed at once (`parse_ground_truth`, `parse_results`, `VideoAPEvaluator.evaluate`), and its memory must not hold
the results file."""

from __future__ import annotations

import copy
import json
import re
import tracemalloc
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from clipvis.cli import json_members
from clipvis.cli.evaluation import (
    AreaRange,
    EvaluationInputError,
    VideoAPEvaluator,
    VideoAPParams,
    detections,
    ground_truth,
    parse_ground_truth,
    parse_results,
    score_results_file,
    video_ap,
)

SMALL_PARAMS = VideoAPParams(
    area_ranges=(AreaRange("all", 0.0, 1e10), AreaRange("small", 0.0, 30.0), AreaRange("medium", 30.0, 60.0),
                 AreaRange("large", 60.0, 1e10)),
    max_dets=(1, 2, 4),
)


def _write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


def _in_memory(tmp_path: Path, gt_dict: Any, results: Any, protocol: str,
               params: VideoAPParams | None) -> dict[str, Any]:
    """What the whole files give, parsed at once (the file names as the sources)."""
    gt = parse_ground_truth(copy.deepcopy(gt_dict), source=str(tmp_path / "gt"))
    out = VideoAPEvaluator(protocol, params).evaluate(
        gt, parse_results(copy.deepcopy(results), gt, source=str(tmp_path / "results")))
    return {"precision": out.precision, "recall": out.recall, "summary": out.to_dict()}


def _from_files(tmp_path: Path, gt_dict: Any, results: Any, protocol: str,
                params: VideoAPParams | None) -> dict[str, Any]:
    out = score_results_file(_write(tmp_path / "results", results), _write(tmp_path / "gt", gt_dict), protocol,
                             params)
    return {"precision": out.precision, "recall": out.recall, "summary": out.to_dict()}


def _message(call: Any) -> str:
    with pytest.raises(EvaluationInputError) as raised:
        call()
    return str(raised.value).replace(str(raised.value).split(":")[0], "<file>", 1)


@pytest.mark.parametrize("protocol", ["ytvis", "lvvis", "burst"])
def test_streamed_scoring_gives_the_whole_files_numbers_bit_for_bit(
    protocol: str, vis: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(detections, "STREAM_BATCH_MASKS", 5)  # batches end inside videos and (video, class) pairs
    for seed in range(12):
        gt_dict, results = vis.random_case(seed, protocol)
        if not gt_dict["annotations"]:  # nothing to score: refused by both
            continue
        for params in (SMALL_PARAMS, None):
            expected = _in_memory(tmp_path, gt_dict, results, protocol, params)
            got = _from_files(tmp_path, gt_dict, results, protocol, params)
            assert np.array_equal(got["precision"], expected["precision"]), seed
            assert np.array_equal(got["recall"], expected["recall"]), seed
            assert got["summary"] == expected["summary"], seed


def test_a_ytvis_json_listing_its_videos_after_its_annotations_scores_the_same(vis: ModuleType,
                                                                              tmp_path: Path) -> None:
    gt_dict, results = vis.random_case(3, "ytvis")
    categories = [{"id": c["id"], "name": c["name"]} for c in gt_dict["categories"]]
    videos = [{"id": v["id"]} for v in gt_dict["videos"]]
    listed = {"videos": videos, "categories": categories, "annotations": results}
    expected = _in_memory(tmp_path, gt_dict, listed, "ytvis", None)
    late = {"annotations": results, "categories": categories, "videos": videos}
    assert _from_files(tmp_path, gt_dict, late, "ytvis", None)["summary"] == expected["summary"]


def _broken_results(rng: np.random.Generator, results: list[dict[str, Any]]) -> list[Any]:
    """``results`` with two or three entries broken in one of several ways each."""
    broken: list[Any] = copy.deepcopy(results)
    for index in rng.choice(len(broken), size=min(len(broken), int(rng.integers(2, 4))), replace=False):
        entry = broken[int(index)]
        present = [frame for frame in entry["segmentations"] if frame]
        kind = int(rng.integers(0, 7))
        if kind == 0:
            entry["score"] = "high"
        elif kind == 1:
            entry["video_id"] = 999
        elif kind == 2:
            entry["segmentations"] = entry["segmentations"][:-1]  # one frame short
        elif kind == 3 and present:
            present[0]["counts"] = present[0]["counts"][:-2]  # runs that do not add up to the mask
        elif kind == 4 and present:
            present[0]["size"] = [1, 1]
        elif kind == 5:
            del entry["segmentations"]
        else:
            broken[int(index)] = [entry]
    return broken


def test_streamed_scoring_raises_the_whole_files_first_problem(vis: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    compared = 0
    for seed in range(30):
        gt_dict, results = vis.random_case(seed, "ytvis")
        if len(results) < 2 or not gt_dict["annotations"]:
            continue
        if seed % 3 == 0:  # videos without length or file_names: their frame counts are known at the end
            for video in gt_dict["videos"]:
                video.pop("length", None)
                video.pop("file_names", None)
        broken = _broken_results(rng, results)
        gt = parse_ground_truth(copy.deepcopy(gt_dict), source=str(tmp_path / "gt"))
        expected = _message(lambda: parse_results(copy.deepcopy(broken), gt, source=str(tmp_path / "results")))  # noqa: B023
        got = _message(lambda: _from_files(tmp_path, gt_dict, broken, "ytvis", None))  # noqa: B023
        assert got == expected, seed
        compared += 1
    assert compared > 20


@pytest.mark.parametrize("document, message", [
    ({"annotations": [{"video_id": 1}], "categories": [], "videos": []}, "got a JSON object (this looks like a GT"),
    ([], "the results list is empty"),
    (3, "expected a JSON list of results, got int"),
])
def test_streamed_results_that_are_not_a_results_list_are_refused_as_before(
    document: Any, message: str, vis: ModuleType, tmp_path: Path
) -> None:
    gt_dict, _ = vis.random_case(0, "ytvis")
    gt = parse_ground_truth(copy.deepcopy(gt_dict), source=str(tmp_path / "gt"))
    expected = _message(lambda: parse_results(copy.deepcopy(document), gt, source=str(tmp_path / "results")))
    assert message in expected
    assert _message(lambda: _from_files(tmp_path, gt_dict, document, "ytvis", None)) == expected


def _broken_gt(rng: np.random.Generator, gt_dict: dict[str, Any]) -> dict[str, Any]:
    broken = copy.deepcopy(gt_dict)
    annotations = broken["annotations"]
    for index in rng.choice(len(annotations), size=min(len(annotations), 2), replace=False):
        entry = annotations[int(index)]
        kind = int(rng.integers(0, 5))
        if kind == 0:
            del entry["id"]
        elif kind == 1:
            entry["id"] = annotations[0]["id"]
        elif kind == 2:
            entry["segmentations"] = None
        elif kind == 3:
            entry["areas"] = ["big"]
        else:
            present = [frame for frame in entry["segmentations"] if frame]
            if present:
                present[0]["counts"] = present[0]["counts"][:-1]
    return broken


def test_a_streamed_gt_raises_the_whole_files_first_problem(vis: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for seed in range(30):
        gt_dict, _ = vis.random_case(seed, "ytvis")
        if len(gt_dict["annotations"]) < 2:
            continue
        broken = _broken_gt(rng, gt_dict) if seed % 4 else {
            **gt_dict, "annotations": [{k: v for k, v in a.items() if k != "id"} for a in gt_dict["annotations"]]}
        path = _write(tmp_path / "gt", broken)
        try:
            expected: Any = parse_ground_truth(copy.deepcopy(broken), source=str(path))
        except EvaluationInputError as error:
            expected = str(error)
        try:
            got: Any = ground_truth.load_ground_truth(path)
        except EvaluationInputError as error:
            got = str(error)
        assert got == expected, seed


def test_streamed_scoring_does_not_hold_the_results_file(vis: ModuleType, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory at the peak is well under what the results file's entries take as Python objects: 800 entries of 6
    frames are 4,800 masks, the batch 64 of them (what stays is ~100 bytes per detection: scores, IoUs)."""
    monkeypatch.setattr(detections, "STREAM_BATCH_MASKS", 64)
    monkeypatch.setattr(json_members, "READ_BYTES", 1 << 14)  # the file's window, else 1 MB read at once
    masks = [vis.box_mask(32, 32, t, t, 8, 8) for t in range(6)]
    gt_dict = vis.gt_file([(1, 32, 32, 6)], [1], [vis.gt_track(1, 1, 1, masks)])
    results = [vis.result(1, 1, 0.5, masks) for _ in range(800)]
    results_path, gt_path = _write(tmp_path / "results.json", results), _write(tmp_path / "gt.json", gt_dict)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        entries = json.loads(results_path.read_text())
        held = tracemalloc.get_traced_memory()[0] - base  # the entries as Python objects
        del entries
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        score_results_file(results_path, gt_path, "ytvis")
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert held > 1_000_000
    assert peak < held / 4


def test_gt_masks_are_prepared_once_and_result_areas_not_again(vis: ModuleType, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Results spread over many batches (sorted by score, not grouped by video) took up to 1.7x the time of the
    whole file: each batch prepared its (video, class) pairs' GT tracks anew, and the results' areas, found by the
    masks' checks, were computed again. Each GT track is now prepared once, and only GT masks are measured here."""
    monkeypatch.setattr(detections, "STREAM_BATCH_MASKS", 3)
    gt_dict, results = vis.random_case(3, "ytvis")
    results = sorted(results * 3, key=lambda entry: -entry["score"])
    prepared: list[int] = []
    measured: list[int] = []
    track_masks, coco_areas = video_ap._track_masks, video_ap.coco_areas

    def counting_track_masks(rles: Any, video: Any = None, areas: Any = None) -> Any:
        if video is not None:
            prepared.append(id(rles))
        return track_masks(rles, video, areas)

    def counting_areas(rles: Any) -> Any:
        measured.append(len(rles))
        return coco_areas(rles)

    monkeypatch.setattr(video_ap, "_track_masks", counting_track_masks)
    monkeypatch.setattr(video_ap, "coco_areas", counting_areas)
    expected = _in_memory(tmp_path, gt_dict, results, "ytvis", None)
    prepared.clear()
    measured.clear()
    assert _from_files(tmp_path, gt_dict, results, "ytvis", None)["summary"] == expected["summary"]
    assert len(prepared) == len(set(prepared)) > 0  # no GT track twice
    gt_masks = sum(1 for entry in gt_dict["annotations"] for mask in entry["segmentations"] if mask)
    assert 0 < sum(measured) <= gt_masks


def _repeated(document: dict[str, Any], key: str, value: Any) -> str:
    """``document`` as JSON text with ``key`` given again, last."""
    return json.dumps(document)[:-1] + f", {json.dumps(key)}: {json.dumps(value)}}}"


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-32-le"])
def test_a_key_given_twice_is_refused_whatever_the_encoding(encoding: str, vis: ModuleType, tmp_path: Path) -> None:
    """A BOM or UTF-16/32 file is decoded whole: the last of two 'annotations' or 'videos' silently won, where the
    same file in UTF-8 was refused."""
    gt_dict, results = vis.random_case(3, "ytvis")
    gt_path = _write(tmp_path / "gt.json", gt_dict)
    results_object = {"categories": [{"id": c["id"], "name": c["name"]} for c in gt_dict["categories"]],
                      "videos": [{"id": v["id"]} for v in gt_dict["videos"]], "annotations": results}
    cases = [
        ("gt", _repeated(gt_dict, "annotations", gt_dict["annotations"][:1]), "'annotations' given twice"),
        ("gt", _repeated(gt_dict, "videos", gt_dict["videos"][:1]), "'videos' given twice"),
        ("results", _repeated(results_object, "annotations", results[:1]), "'annotations' given twice"),
        ("results", _repeated(results_object, "videos", results_object["videos"][:1]), "'videos' given twice"),
    ]
    for which, text, said in cases:
        encoded = tmp_path / f"{which}.{encoding}.json"
        encoded.write_bytes(text.encode(encoding))
        plain = tmp_path / f"{which}.plain.json"
        plain.write_text(text, encoding="utf-8")
        messages = []
        for path in (plain, encoded):
            with pytest.raises(EvaluationInputError) as raised:
                if which == "gt":
                    ground_truth.load_ground_truth(path)
                else:
                    score_results_file(path, gt_path, "ytvis")
            messages.append(str(raised.value).replace(str(path), "<file>"))
        assert said in messages[0], messages
        prefix = "GT file <file>: " if which == "gt" else ("results file <file>: " if "annotations" in said
                                                           else "<file>: ")
        assert messages[0].startswith(prefix), messages
        assert messages[1] == re.sub(r" \(line \d+ column \d+ \(char \d+\)\)", "", messages[0]), messages


def test_utf8_bytes_of_a_lone_surrogate_are_read_as_json_loads_reads_them(vis: ModuleType, tmp_path: Path) -> None:
    """A name holding the UTF-8 bytes of a lone surrogate (a file name that was not UTF-8, written by a tool that
    kept it so) was refused as "not UTF-8 JSON text" once the GT was streamed; json.loads of the bytes takes it."""
    gt_dict, results = vis.random_case(3, "ytvis")
    gt_dict["videos"][0]["name"] = "clip\udcff"
    text = json.dumps(gt_dict, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert b"\xed\xb3\xbf" in text
    gt_path = tmp_path / "gt.json"
    gt_path.write_bytes(text)
    gt = ground_truth.load_ground_truth(gt_path)
    assert gt.videos[gt_dict["videos"][0]["id"]].name == "clip\udcff"
    expected = _in_memory(tmp_path, json.loads(text), results, "ytvis", None)["summary"]
    expected["warnings"] = [line.replace(str(tmp_path / "gt"), str(gt_path)) for line in expected["warnings"]]
    assert score_results_file(_write(tmp_path / "results.json", results), gt_path, "ytvis").to_dict() == expected
