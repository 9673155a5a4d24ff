"""GT loading (RLE forms, polygons, null frames), results validation errors, protocols and category blocks."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from clipvis.cli.evaluation import (
    EvaluationInputError,
    VideoAPEvaluator,
    default_protocol_name,
    load_ground_truth,
    load_results,
    parse_ground_truth,
    parse_results,
    score_results,
)
from clipvis.cli.evaluation.table import metrics_table


def square(size: int = 8, top: int = 1, left: int = 1, side: int = 4) -> np.ndarray:
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[top : top + side, left : left + side] = 1
    return mask


def simple_gt(vis: ModuleType, frames: int = 2) -> dict[str, Any]:
    masks = [square()] * frames
    return vis.gt_file([(1, 8, 8, frames), (2, 8, 8, frames)], [1, 2], [vis.gt_track(1, 1, 1, masks)])


# ------------------------------------------------------------------------------------------------ GT loading
def test_gt_rle_forms_and_polygons_give_the_same_score(vis: ModuleType) -> None:
    # The same 4x4 square as uncompressed RLE (GT default), compressed RLE, and a polygon; frame 1 is absent.
    mask = square()
    forms = {
        "uncompressed": vis.uncompressed_rle(mask),
        "compressed": vis.compressed_rle(mask),
        # pycocotools rasterises this outline to exactly the pixels x, y in 1..4.
        "polygon": [[1.0, 1.0, 5.0, 1.0, 5.0, 5.0, 1.0, 5.0]],
    }
    results = [vis.result(1, 1, 0.9, [mask, None])]
    scores = {}
    for name, segmentation in forms.items():
        gt = vis.gt_file([(1, 8, 8, 2)], [1], [vis.gt_track(1, 1, 1, [mask, None])])
        gt["annotations"][0]["segmentations"][0] = segmentation
        parsed = parse_ground_truth(gt)
        assert parsed.tracks[0].segmentations[1] is None
        scores[name] = VideoAPEvaluator().evaluate(parsed, parse_results(results, parsed)).stats["AP"]
    assert scores["uncompressed"] == pytest.approx(1.0, abs=1e-12)
    assert scores["compressed"] == scores["uncompressed"] == scores["polygon"]


@pytest.mark.parametrize("field", ["areas", "id"])
def test_gt_without_areas_or_ids_scores_a_perfect_result_perfectly(vis: ModuleType, field: str) -> None:
    """Without `areas` the mask areas count; without annotation ids (segment's ytvis.json, corrected) they are
    numbered: ids are labels."""
    gt = simple_gt(vis)
    del gt["annotations"][0][field]
    parsed = parse_ground_truth(gt)
    out = VideoAPEvaluator().evaluate(parsed, parse_results([vis.result(1, 1, 0.9, [square()] * 2)], parsed))
    assert out.stats["AP"] == pytest.approx(1.0, abs=1e-12) and out.stats["APs"] == pytest.approx(1.0, abs=1e-12)


def test_gt_with_ids_on_some_annotations_only_is_an_error(vis: ModuleType) -> None:
    gt = simple_gt(vis)
    gt["annotations"].append({**gt["annotations"][0], "id": "x"})  # some with ids, some without: still an error
    with pytest.raises(EvaluationInputError, match="needs integer 'id'"):
        parse_ground_truth(gt, source="gt.json")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda gt: gt.pop("videos"), "'videos'"),
        (lambda gt: gt["videos"][0].pop("height"), "videos[0]"),
        (lambda gt: gt["videos"].append(dict(gt["videos"][0])), "video id 1 appears twice"),
        (lambda gt: gt["annotations"].append(dict(gt["annotations"][0])), "annotation id 1 appears twice"),
        (lambda gt: gt["annotations"][0].pop("segmentations"), "annotations[0]"),
        (lambda gt: gt["annotations"][0]["segmentations"].__setitem__(0, 5), "segmentations[0]"),
    ],
)
def test_bad_gt_raises_a_clear_error(vis: ModuleType, mutate: Any, message: str) -> None:
    gt = simple_gt(vis)
    mutate(gt)
    with pytest.raises(EvaluationInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_ground_truth(gt, source="gt.json")


@pytest.mark.parametrize(
    ("mutate", "warning"),
    [
        (lambda gt: gt["annotations"][0].update(category_id=77),
         "1 GT annotation(s) of category ids not in its categories are not scored, as in the reference (category "
         "ids: 77)"),
        (lambda gt: gt["annotations"][0].update(video_id=77),
         "1 GT annotation(s) of video ids not in its videos are not scored, as in the reference (video ids: 77)"),
        (lambda gt: gt["annotations"][0]["segmentations"].append(None),
         "1 GT annotation(s) have more or fewer segmentations than their video has frames; frames past the shorter "
         "of a result and the annotation are ignored, as in the reference (annotation 1: 3 for 2)"),
        (lambda gt: gt["annotations"][0]["segmentations"].pop(),
         "1 GT annotation(s) have more or fewer segmentations than their video has frames; frames past the shorter "
         "of a result and the annotation are ignored, as in the reference (annotation 1: 1 for 2)"),
        (lambda gt: gt["annotations"][0]["segmentations"][1].update(size=[8, 9], counts=[9, 4, 4, 4, 4, 4, 4, 4, 35]),
         "1 GT annotation(s) have masks of another size than their video; such a frame adds nothing to the IoU where "
         "a result is present, as in the reference (annotation 1 frame 1: 8x9 in a 8x8 video)"),
        (lambda gt: gt["annotations"][0].update(id=0),
         "GT annotation id 0 (video 1, category 1) is never counted as matched, as in the reference (it stores a "
         "match as the GT's id, 0 meaning none): a result on it is a false positive; renumber the annotation ids "
         "from 1"),
    ],
)
def test_gt_mistakes_the_reference_scores_around_are_one_warning_each(
    vis: ModuleType, mutate: Any, warning: str
) -> None:
    """They were taken silently, while the same mistakes in results are errors; the numbers stay the reference's."""
    gt = simple_gt(vis)
    mutate(gt)
    parsed = parse_ground_truth(gt, source="gt.json")
    assert parsed.warnings == [f"gt.json: {warning}"]
    assert score_results([good(vis)], parsed).warnings == [f"gt.json: {warning}"]
    assert parse_ground_truth(simple_gt(vis)).warnings == []


def test_gt_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(EvaluationInputError, match="GT file not found"):
        load_ground_truth(tmp_path / "missing.json")
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop.name)  # was "GT file not found" too
    with pytest.raises(EvaluationInputError, match=r"^GT file .*loop\.json: symbolic-link loop$"):
        load_ground_truth(loop)
    broken = tmp_path / "broken.json"
    broken.write_text('{"videos": [')
    with pytest.raises(EvaluationInputError, match=r"broken\.json is not valid JSON \(line 1"):
        load_ground_truth(broken)
    listing = tmp_path / "list.json"
    listing.write_text("[]")
    with pytest.raises(EvaluationInputError, match="is this a results file"):
        load_ground_truth(listing)


# ------------------------------------------------------------------------------------------ results validation
def results_error(vis: ModuleType, results: Any) -> str:
    gt = parse_ground_truth(simple_gt(vis), source="gt.json")
    with pytest.raises(EvaluationInputError) as error:
        parse_results(results, gt, source="res.json")
    message = str(error.value)
    assert "\n" not in message
    return message


def good(vis: ModuleType, **changes: Any) -> dict[str, Any]:
    entry = vis.result(1, 1, 0.5, [square(), None])
    entry.update(changes)
    return entry


def test_results_must_be_a_non_empty_list(vis: ModuleType) -> None:
    assert "expected a JSON list" in results_error(vis, {"annotations": []})
    assert "looks like a GT file" in results_error(vis, {"annotations": []})
    assert "looks like a GT file" in results_error(vis, {"annotations": [{"video_id": 1}]})  # no scores
    assert "empty" in results_error(vis, [])
    # segment's ytvis.json: its annotations (with scores) are the results list, as the README says
    gt = parse_ground_truth(simple_gt(vis), source="gt.json")
    from_segment = parse_results({"videos": [], "annotations": [good(vis)]}, gt, source="ytvis.json")
    assert from_segment.num_results == 1 and len(from_segment.detections) == 1


def test_corrupt_rle_counts_are_refused(vis: ModuleType) -> None:
    """Garbage counts decoded to 4e9 pixels on a 64x64 frame and were scored (APs moved from 38 to 55)."""
    bad = good(vis)
    bad["segmentations"][0] = {"size": bad["segmentations"][0]["size"], "counts": "!!!garbage"}
    assert "segmentations[0] has corrupt RLE 'counts'" in results_error(vis, [bad])
    bad["segmentations"][0]["counts"] = ""
    assert "segmentations[0] has empty RLE 'counts'" in results_error(vis, [bad])


def runs_labelled(mask: np.ndarray, height: int, width: int, compressed: bool = True) -> dict[str, Any]:
    """``mask``'s COCO RLE under another size: runs that fall short of (or run past) ``height x width``."""
    from pycocotools import mask as coco_mask

    if not compressed:
        flat = mask.flatten(order="F")
        changes = np.flatnonzero(np.diff(np.concatenate(([0], flat, [1 - flat[-1]]))))
        return {"size": [height, width], "counts": np.diff(np.concatenate(([0], changes))).tolist()}
    counts = coco_mask.encode(np.asfortranarray(mask))["counts"].decode("ascii")
    return {"size": [height, width], "counts": counts}


@pytest.mark.parametrize("rows", [6, 10])
@pytest.mark.parametrize("compressed", [True, False])
def test_runs_that_do_not_add_up_to_the_mask_are_refused_not_scored_forever(vis: ModuleType, rows: int,
                                                                          compressed: bool) -> None:
    """A 6x8 (or 10x8) mask labelled 8x8: its runs fall short of (or run past) 64 pixels, and pycocotools' IoU of it
    looped forever in C, deaf to Ctrl-C and SIGTERM (in a results file or in the GT); some too long were scored."""
    mask = np.zeros((rows, 8), np.uint8)
    mask[1:5, 1:5] = 1
    bad = good(vis)
    bad["segmentations"][0] = runs_labelled(mask, 8, 8, compressed)
    message = results_error(vis, [bad])
    assert message.startswith("res.json: entry 0 (video_id 1): segmentations[0] has corrupt RLE counts (its runs add "
                              f"up to {rows * 8} pixels, not height x width = 64) on its 8x8 mask")
    gt = simple_gt(vis)
    gt["annotations"][0]["segmentations"][1] = runs_labelled(mask, 8, 8, compressed)
    with pytest.raises(EvaluationInputError, match=r"segmentations\[1\] has corrupt RLE counts \(its runs add up to "):
        parse_ground_truth(gt, source="gt.json")


def test_checking_the_runs_of_detailed_masks_holds_a_bounded_batch_of_characters(
    vis: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run check took up to 65,536 masks at once, ~30 bytes of arrays per character of their counts: a 200 MB
    results file of detailed 720p masks (3.6 KB of counts each) peaked at 4 GB there. A batch now also ends at
    RUN_CHECK_CHARACTERS characters: here 200 masks of ~10,000 characters each (2 MB of counts, ~60 MB of arrays in
    one batch) are checked 64 KB at a time, and a corrupt mask in a later batch is still named; also when they are
    one track (a long video's): the limit was checked only at a track's end."""
    import tracemalloc

    from clipvis.cli.evaluation import ground_truth

    monkeypatch.setattr(ground_truth, "RUN_CHECK_CHARACTERS", 1 << 16, raising=False)
    rng = np.random.default_rng(0)
    noisy = [runs_labelled((rng.random((100, 200)) < 0.5).astype(np.uint8), 100, 200, True) for _ in range(4)]
    assert all(len(rle["counts"]) > 8_000 for rle in noisy)
    for count, length in ((20, 10), (1, 200)):
        tracks = [(f"entry {i}", [noisy[(i + k) % 4] for k in range(length)]) for i in range(count)]
        tracemalloc.start()
        try:
            ground_truth.check_runs(tracks)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 12 << 20, (count, peak)
        short = np.zeros((90, 200), np.uint8)
        tracks[-1][1][-1] = runs_labelled(short, 100, 200, True)
        with pytest.raises(EvaluationInputError,
                           match=rf"^entry {count - 1}: segmentations\[{length - 1}\] has corrupt RLE counts"):
            ground_truth.check_runs(tracks)


@pytest.mark.parametrize("key", ["video_id", "category_id", "score"])
def test_a_missing_key_is_said_missing(vis: ModuleType, key: str) -> None:
    """It read "'score' must be a finite number, got None" for an entry without a score."""
    entry = good(vis)
    del entry[key]
    assert results_error(vis, [good(vis), entry]) == (f"res.json: entry 1 has no '{key}' (a results entry holds "
                                                      "video_id, category_id, score and segmentations)")


def test_results_errors_name_the_entry_and_video(vis: ModuleType) -> None:
    ok = good(vis)
    message = results_error(vis, [ok, good(vis, video_id=77)])
    assert "entry 1 (video_id 77)" in message and "not in the GT file gt.json" in message
    message = results_error(vis, [ok, ok, good(vis, segmentations=[square(9)] * 2)])
    assert "entry 2 (video_id 1)" in message
    message = results_error(vis, [ok, good(vis, segmentations=[vis.compressed_rle(square(9)), None])])
    assert "entry 1 (video_id 1)" in message and "[9, 9]" in message and "8x8" in message
    message = results_error(vis, [good(vis, segmentations=[vis.compressed_rle(square())] * 3)])
    assert "entry 0 (video_id 1): 3 segmentations but the video has 2 frames" in message
    assert message.endswith("2 frames")  # more masks than frames: no stride to suggest
    # fewer, as a --stride run gives: the likely cause is said (the message ended at the count)
    message = results_error(vis, [good(vis, segmentations=[vis.compressed_rle(square())])])
    assert message.endswith("1 segmentations but the video has 2 frames (results of one frame in 2, as `segment "
                            "--stride 2` writes? the GT needs a mask or null for every frame it lists: segment without "
                            "--stride)")
    entry = good(vis)
    del entry["segmentations"]
    assert "has no 'segmentations'" in results_error(vis, [entry])
    assert "'score' must be a finite number" in results_error(vis, [good(vis, score=float("nan"))])
    assert "'score' must be a finite number" in results_error(vis, [good(vis, score=None)])
    assert "'video_id' must be an integer, got '1'" in results_error(vis, [good(vis, video_id="1")])
    assert "'category_id' must be an integer, got None" in results_error(vis, [good(vis, category_id=None)])
    assert "'category_id' must be an integer, got 1.5" in results_error(vis, [good(vis, category_id=1.5)])
    assert "must be an RLE object" in results_error(vis, [good(vis, segmentations=[[1, 2], None])])


def test_a_video_without_a_frame_count_has_as_many_as_its_annotations_and_results_say(vis: ModuleType) -> None:
    """A GT video without `length` and `file_names` was counted by its longest GT track alone: a track that stops at
    the object's last frame (2 of 4) refused a results file with a mask or null for each of the 4 frames."""
    gt = vis.gt_file([(1, 8, 8, 4)], [1], [vis.gt_track(1, 1, 1, [square()] * 2)])
    for video in gt["videos"]:
        del video["length"], video["file_names"]
    parsed = parse_ground_truth(gt, source="gt.json")
    whole = vis.result(1, 1, 0.9, [square(), square(), None, None])
    detections = parse_results([whole, vis.result(1, 1, 0.5, [None, square(), None, None])], parsed)
    assert [len(d.segmentations) for d in detections.detections] == [4, 4]
    assert detections.warnings == ["gt.json: 1 GT annotation(s) of videos without length or file_names have fewer "
                                   "segmentations than the longest annotation or result of their video; frames past "
                                   "the shorter of a result and the annotation are ignored, as in the reference "
                                   "(annotation 1: 2 for 4)"]
    assert VideoAPEvaluator().evaluate(parsed, detections).stats["AP"] == pytest.approx(1.0, abs=1e-12)
    # a result with fewer masks than another result (or a GT track) of its video is still refused, saying so
    with pytest.raises(EvaluationInputError) as error:
        parse_results([whole, vis.result(1, 1, 0.5, [square(), None])], parsed, source="res.json")
    assert str(error.value) == ("res.json: entry 1 (video_id 1): 2 segmentations but the video has 4 frames (the most "
                                "segmentations of its GT annotations and results: the GT gives it no length or "
                                "file_names; results of one frame in 2, as `segment --stride 2` writes? the GT needs "
                                "a mask or null for every frame it lists: segment without --stride)")
    with pytest.raises(EvaluationInputError, match="entry 0 .*: 1 segmentations but the video has 2 frames"):
        parse_results([vis.result(1, 1, 0.5, [square()])], parsed, source="res.json")


def test_ids_written_as_whole_floats_score_as_the_integers(vis: ModuleType) -> None:
    """Some writers print ids as ``1.0``; the reference looks them up in dicts, where 1.0 finds 1, and scores them."""
    as_ints = score_results([good(vis)], parse_ground_truth(simple_gt(vis))).stats
    gt = simple_gt(vis)
    gt["videos"][0]["id"] = 1.0
    gt["categories"][0]["id"] = 1.0
    gt["annotations"][0].update(id=1.0, video_id=1.0, category_id=1.0)
    parsed = parse_ground_truth(gt)
    assert score_results([good(vis, video_id=1.0, category_id=1.0)], parsed).stats == as_ints
    assert as_ints["AP"] > 0


def test_unknown_categories_are_dropped_with_a_warning(vis: ModuleType) -> None:
    gt = parse_ground_truth(simple_gt(vis))
    detections = parse_results([good(vis), good(vis, category_id=99), good(vis, category_id=99)], gt)
    assert [d.category_id for d in detections.detections] == [1]
    assert detections.num_results == 3 and detections.dropped_categories == {99: 2}
    assert detections.warnings == ["2 result(s) with category ids not in the GT were dropped (category ids: 99)"]
    assert detections.detections[0].id == 1  # 1-based position in the file, as the reference numbers them


def test_segment_ytvis_json_is_matched_to_the_gt_by_category_names_and_video_file_names(vis: ModuleType) -> None:
    """A ytvis.json from segment numbers its categories in its vocabulary's order and its videos 1..N: they were
    taken as the GT's ids (wrong classes and videos, no warning)."""
    a, b = square(top=1), square(top=3, left=3)
    categories = [{"id": 1, "name": "car, automobile"}, {"id": 2, "name": "Café"}]
    gt = vis.gt_file([(1, 8, 8, 2), (2, 8, 8, 2)], categories,
                     [vis.gt_track(1, 1, 1, [a, a]), vis.gt_track(2, 2, 2, [b, b])])
    parsed = parse_ground_truth(gt)
    segment = {  # its vocabulary "cafe\u0301, dog, car" (decomposed accent, another case); GT video 2 is its first
        "videos": [{"id": 1, "name": "v2", "file_names": ["v2/00000.jpg", "v2/00001.jpg"]},
                   {"id": 2, "name": "v1"}],
        "categories": [{"id": 1, "name": "cafe\u0301"}, {"id": 2, "name": "dog"}, {"id": 3, "name": "CAR"}],
        "annotations": [vis.result(1, 1, 0.9, [b, b]), vis.result(2, 3, 0.8, [a, a]), vis.result(2, 2, 0.7, [a, a])],
    }
    detections = parse_results(segment, parsed)
    assert [(d.video_id, d.category_id) for d in detections.detections] == [(2, 2), (1, 1)]
    assert detections.warnings == ["1 result(s) of categories whose names are not in the GT were dropped "
                                   "(categories: dog)"]
    assert score_results(segment, parsed).stats["AP"] == pytest.approx(1.0)
    segment["videos"][1]["name"] = "v7"  # a video the GT does not have
    with pytest.raises(EvaluationInputError, match=r"videos\[1\] \(id 2, 'v7'\) is not in the GT file"):
        parse_results(segment, parsed)
    assert len(parse_results(segment["annotations"], parsed).detections) == 2  # a bare list: by id, as before


def test_a_ytvis_json_against_a_gt_naming_no_videos_is_matched_by_id_with_a_warning(vis: ModuleType) -> None:
    """A GT whose videos have neither name nor file_names cannot match a ytvis.json's named videos: they are taken by
    id, and one warning line says so instead of scoring silently against whatever video has the id."""
    a = square(top=1)
    gt = vis.gt_file([(1, 8, 8, 2), (2, 8, 8, 2)], [1], [vis.gt_track(1, 1, 1, [a, a])])
    for video in gt["videos"]:
        del video["file_names"]
    parsed = parse_ground_truth(gt)
    segment = {"videos": [{"id": 1, "name": "vidB", "file_names": ["vidB/00000.jpg", "vidB/00001.jpg"]}],
               "categories": [{"id": 1, "name": "class_1"}], "annotations": [vis.result(1, 1, 0.9, [a, a])]}
    detections = parse_results(segment, parsed, source="ytvis.json")
    assert [d.video_id for d in detections.detections] == [1]
    assert detections.warnings == ["ytvis.json: the GT names no videos (no name or file_names in <ground truth>): "
                                   "matched by video id"]
    assert score_results(segment, parsed).warnings[-1].endswith("matched by video id")
    assert parse_results(segment["annotations"], parsed).warnings == []  # a bare list: by id, nothing to say
    segment["videos"] = [{"id": 1}]  # a ytvis.json naming no videos either
    assert parse_results(segment, parsed).warnings == []


def test_results_with_uncompressed_rle_are_accepted(vis: ModuleType) -> None:
    gt = parse_ground_truth(simple_gt(vis))
    compressed = score_results([good(vis, segmentations=[vis.compressed_rle(square())] * 2)], gt)
    uncompressed = score_results([good(vis, segmentations=[vis.uncompressed_rle(square())] * 2)], gt)
    assert compressed.stats == uncompressed.stats


def test_load_results_file_errors(tmp_path: Path, vis: ModuleType) -> None:
    gt = parse_ground_truth(simple_gt(vis))
    with pytest.raises(EvaluationInputError, match="results file not found"):
        load_results(tmp_path / "nope.json", gt)
    path = tmp_path / "res.json"
    path.write_text(json.dumps([good(vis)]))
    assert len(load_results(path, gt).detections) == 1
    # the submission zip clipvis writes (export --zip, evaluate's server zip), and gzip
    import gzip
    import zipfile

    with zipfile.ZipFile(tmp_path / "results.zip", "w") as archive:
        archive.writestr("results.json", path.read_bytes())
    assert len(load_results(tmp_path / "results.zip", gt).detections) == 1
    (tmp_path / "res.json.gz").write_bytes(gzip.compress(path.read_bytes()))
    assert len(load_results(tmp_path / "res.json.gz", gt).detections) == 1
    with zipfile.ZipFile(tmp_path / "two.zip", "w") as archive:
        archive.writestr("a.json", "[]")
        archive.writestr("b.json", "[]")
    with pytest.raises(EvaluationInputError, match="a zip holding 2 JSON files; expected one"):
        load_results(tmp_path / "two.zip", gt)


def test_a_json_file_is_parsed_without_holding_its_bytes_as_well(tmp_path: Path) -> None:
    """`json.loads` of a file's bytes held the bytes, their text and the parsed document at once (a 200 MB results
    file: 200 MB more at the peak); the bytes are decoded first and freed. Decoded as json.loads decodes them: UTF-8
    with or without a BOM, UTF-16."""
    import tracemalloc

    from clipvis.cli.evaluation.files import read_json_file

    document = ["x" * 1000 + str(i) for i in range(4000)]  # 4 MB, mostly the strings themselves
    path = tmp_path / "big.json"
    path.write_text(json.dumps(document), encoding="ascii")
    size = path.stat().st_size
    tracemalloc.start()
    try:
        assert read_json_file(path, "results file") == document
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * size, (peak, size)  # text and document; the bytes too made it 3x
    for encoding in ("utf-8-sig", "utf-16"):
        (tmp_path / encoding).write_text(json.dumps({"name": "vidé"}), encoding=encoding)
        assert read_json_file(tmp_path / encoding, "GT file") == {"name": "vidé"}
    (tmp_path / "latin1.json").write_bytes('{"name": "vidé"}'.encode("latin-1"))
    with pytest.raises(EvaluationInputError, match="is not UTF-8 JSON text"):
        read_json_file(tmp_path / "latin1.json", "GT file")
    # a damaged UTF-16 file (an odd byte at its end) was said to be "not UTF-8 JSON text"
    for name, encoding in (("cut16.json", "utf-16-le"), ("cut16bom.json", "utf-16")):  # without a BOM, and with one
        (tmp_path / name).write_bytes('[{"a": 1}]'.encode(encoding) + b"\x00")
        with pytest.raises(EvaluationInputError,
                           match=rf"{name}".replace(".", r"\.") + r" is not UTF-16 \(little-endian\) JSON text \(tr"):
            read_json_file(tmp_path / name, "GT file")


# --------------------------------------------------------------------------------------- protocols and blocks
def lvvis_case(vis: ModuleType, ids: list[int], partitions: list[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One GT per category; categories 1-3 (by position) detected perfectly, the last one missed."""
    categories = [{"id": i, "name": f"c_{i}", "partition": p} for i, p in zip(ids, partitions, strict=True)]
    masks = [square(8, 0, 0, 2), square(8, 0, 4, 2), square(8, 4, 0, 2), square(8, 4, 4, 2)]
    tracks = [vis.gt_track(n + 1, 1, i, [masks[n]]) for n, i in enumerate(ids)]
    results = [vis.result(1, i, 0.9, [masks[n]]) for n, i in enumerate(ids[:3])]
    return vis.gt_file([(1, 8, 8, 1)], categories, tracks), results


def block_stats(out: Any) -> dict[str, float | None]:
    return {name: value for block in out.blocks for name, value in block.named_stats().items()}


def test_lvvis_base_and_novel(vis: ModuleType) -> None:
    # Per-category AP [1, 1, 1, 0] with partitions [0, 1, 2, 3]: AP .75, APb mean(1, 1) = 1, APn mean(1, 0) = .5.
    gt_dict, results = lvvis_case(vis, [1, 2, 3, 4], [0, 1, 2, 3])
    gt = parse_ground_truth(gt_dict)
    assert default_protocol_name(gt) == "lvvis"
    out = score_results(results, gt)
    assert out.protocol == "lvvis" and not out.warnings
    named = block_stats(out)
    assert out.stats["AP"] == pytest.approx(0.75, abs=1e-12)
    assert named["APb"] == pytest.approx(1.0, abs=1e-12)
    assert named["APn"] == pytest.approx(0.5, abs=1e-12)
    assert named["AR100n"] == pytest.approx(0.5, abs=1e-12)


def test_blocks_with_non_contiguous_ids_warn_and_select_by_id(vis: ModuleType) -> None:
    gt_dict, results = lvvis_case(vis, [10, 20, 30, 40], [0, 1, 2, 3])
    out = score_results(results, parse_ground_truth(gt_dict))
    assert any("not exactly 1..4" in warning for warning in out.warnings)
    named = block_stats(out)
    assert named["APb"] == pytest.approx(1.0, abs=1e-12) and named["APn"] == pytest.approx(0.5, abs=1e-12)


def test_empty_block_is_left_out_with_a_warning(vis: ModuleType) -> None:
    gt_dict, results = lvvis_case(vis, [1, 2, 3, 4], [0, 1, 1, 0])
    out = score_results(results, parse_ground_truth(gt_dict))
    assert [block.name for block in out.blocks] == ["base"]
    assert any("no GT category has partition 2/3" in warning for warning in out.warnings)
    assert out.stats["AP"] == pytest.approx(0.75, abs=1e-12)


def test_burst_blocks_use_frequency_and_split(vis: ModuleType) -> None:
    gt_dict, results = lvvis_case(vis, [1, 2, 3, 4], [0, 0, 0, 0])
    for category, frequency, split in zip(gt_dict["categories"], "frcf", ["common", "uncommon"] * 2, strict=True):
        del category["partition"]
        category.update(frequency=frequency, split=split)
    gt = parse_ground_truth(gt_dict)
    assert default_protocol_name(gt) == "ytvis"  # burst is never guessed: it must be asked for
    out = score_results(results, gt, protocol="burst")
    named = block_stats(out)
    # APs per category [1, 1, 1, 0]: base (f, c, f -> ids 1, 3, 4) = 2/3, novel (r -> id 2) = 1,
    # common (ids 1, 3) = 1, uncommon (ids 2, 4) = .5.
    assert named["APb"] == pytest.approx(2 / 3, abs=1e-12)
    assert named["APn"] == pytest.approx(1.0, abs=1e-12)
    assert named["APc"] == pytest.approx(1.0, abs=1e-12)
    assert named["APu"] == pytest.approx(0.5, abs=1e-12)


def test_burst_categories_scored_without_a_protocol_warn_to_pass_burst(vis: ModuleType) -> None:
    """A BURST GT (b2y) scored by --gt/--results was silently the ytvis protocol; the default stays (an LV-VIS file
    or an LVIS-derived one may carry `frequency` too), and a warning says to pass --protocol burst."""
    gt_dict, results = lvvis_case(vis, [1, 2, 3, 4], [0, 1, 2, 3])
    for category, frequency, split in zip(gt_dict["categories"], "frcf", ["common", "uncommon"] * 2, strict=True):
        category.update(frequency=frequency, split=split)
    assert not score_results(results, parse_ground_truth(gt_dict, source="gt.json")).warnings  # LV-VIS: partition
    for category in gt_dict["categories"]:
        del category["partition"]
    gt = parse_ground_truth(gt_dict, source="gt.json")
    out = score_results(results, gt)
    assert out.protocol == "ytvis"
    assert out.warnings == ["gt.json: its categories carry BURST's frequency/split fields (4 of 4) and are scored "
                            "with the ytvis protocol: pass --protocol burst to reproduce the paper's BURST numbers"]
    assert not score_results(results, gt, protocol="ytvis").warnings  # asked for: nothing to say
    for category in gt_dict["categories"]:
        del category["split"]  # LVIS frequency alone (a custom LVIS-derived file): not BURST's
    assert not score_results(results, parse_ground_truth(gt_dict)).warnings


def test_the_reports_text_lines_are_not_cut_at_80_columns_in_a_pipe(vis: ModuleType, tmp_path: Path) -> None:
    """rich wraps at 80 columns when stdout is no terminal: BURST's protocol line came out as two lines in a log."""
    import io

    from clipvis.cli.commands.evaluate import report_result

    gt_dict, results = lvvis_case(vis, [1, 2, 3, 4], [0, 0, 0, 0])
    for category, frequency, split in zip(gt_dict["categories"], "frcf", ["common", "uncommon"] * 2, strict=True):
        del category["partition"]
        category.update(frequency=frequency, split=split)
    out = score_results(results, parse_ground_truth(gt_dict), protocol="burst")
    stream = io.StringIO()
    report_result(out, None, {}, console=Console(file=stream, width=80))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("protocol burst: ") and len(lines[0]) > 80
    assert lines[1].endswith("values in %")


def test_unknown_protocol_is_an_error() -> None:
    with pytest.raises(ValueError, match="choose one of: ytvis, lvvis, burst"):
        VideoAPEvaluator("coco")


def test_metrics_table_shows_percentages_and_paper_columns(vis: ModuleType) -> None:
    gt_dict, results = lvvis_case(vis, [1, 2, 3, 4], [0, 1, 2, 3])
    out = score_results(results, parse_ground_truth(gt_dict))
    console = Console(width=200, record=True)
    console.print(metrics_table(out, published={"AP": 70.1, "APn": 40.2}))
    text = console.export_text()
    header = text.splitlines()[1]
    assert [word for word in header.replace("┃", " ").split()] == [
        "metric",
        "all",
        "paper",
        "base",
        "novel",
        "paper",
        "(novel)",
    ]
    ap_row = next(line for line in text.splitlines() if line.startswith("│ AP "))
    assert "75.00" in ap_row and "70.1" in ap_row and "40.2" in ap_row and "50.00" in ap_row
    plain = Console(width=200, record=True)
    plain.print(metrics_table(out))
    assert "paper" not in plain.export_text()
