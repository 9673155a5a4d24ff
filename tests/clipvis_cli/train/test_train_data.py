"""Training data: COCO / YouTube-VIS readers, augmentation, samplers, and the training config."""

from __future__ import annotations

import gc
import json
import math
import os
import re
import warnings
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from clipvis.cli import rle
from clipvis.cli.train.config import (
    SHIPPED_CONFIGS,
    ConfigError,
    autoscale,
    load_train_config,
    shipped_config_path,
)
from clipvis.cli.train.data import (
    AugmentationConfig,
    ForkSharingLoader,
    SampleError,
    StreamBatchSampler,
    TrainDataset,
    augment_instances,
    repeat_factors,
)
from clipvis.cli.train.records import TrainDataError, read_annotation_file, read_ytvis
from clipvis.cli.train.sources import remove_lvis_rare

from .conftest import SIZE, render_shapes, write_coco

if TYPE_CHECKING:
    from clipvis.cli.results import TrackResult, VideoInfo


def test_coco_reader_reads_polygons_and_rle_and_drops_crowd(tmp_path):
    ann, images = write_coco(tmp_path, num_images=2)
    records, warnings = read_annotation_file(ann, images)
    assert warnings == []
    assert len(records) == 2 and all(len(r.frames[0].instances) == 2 for r in records)  # the crowd one is gone
    dataset = TrainDataset(records, AugmentationConfig(kind="shortest_edge", min_sizes=(SIZE,), flip=False))
    sample = dataset[(0, 0)]
    _, masks = render_shapes(0)
    assert sample.image.shape == (3, SIZE, SIZE)
    # The polygon (rectangle outline) and the RLE (disc) give back the rendered masks.
    assert np.array_equal(sample.masks[1].numpy(), masks[1].astype(bool))
    got, want = sample.masks[0].numpy(), masks[0].astype(bool)
    iou = (got & want).sum() / (got | want).sum()
    assert iou > 0.85  # the contour runs through the boundary pixels


def test_crowd_masks_of_custom_data_are_counted_and_can_be_trained_on(tmp_path):
    """CVAT's and Datumaro's COCO exports mark every mask shape as crowd RLE: a team's corrected masks were all
    dropped without a word. Custom data now says how many were left out, and CLIPVIS.CROWD_AS_INSTANCES keeps them."""
    ann, images = write_coco(tmp_path, num_images=2)  # one crowd annotation on image 1
    records, warnings = read_annotation_file(ann, images, crowd_as_instances=False)
    assert len(warnings) == 1 and "1 crowd annotation(s) (iscrowd: 1) not trained on" in warnings[0]
    assert "CLIPVIS.CROWD_AS_INSTANCES=true" in warnings[0]
    records, warnings = read_annotation_file(ann, images, crowd_as_instances=True)
    assert warnings == [] and [len(r.frames[0].instances) for r in records] == [3, 2]
    data = json.loads(ann.read_text())
    for annotation in data["annotations"]:
        annotation["iscrowd"] = 1  # as CVAT writes masks
    ann.write_text(json.dumps(data))
    with pytest.raises(TrainDataError, match="no image with a usable .* CLIPVIS.CROWD_AS_INSTANCES=true"):
        read_annotation_file(ann, images, crowd_as_instances=False)


def test_bad_annotations_are_skipped_with_a_warning_naming_them(tmp_path):
    ann, images = write_coco(tmp_path, num_images=2)
    data = json.loads(ann.read_text())
    data["annotations"][0]["segmentation"] = [[1.0, 2.0]]  # a polygon of one point
    data["annotations"][1]["segmentation"] = {"size": [5, 5], "counts": "abc"}  # wrong size
    data["annotations"].append({"id": 99, "image_id": 12345, "segmentation": [], "category_id": 1})
    ann.write_text(json.dumps(data))
    records, warnings = read_annotation_file(ann, images)
    assert len(warnings) == 3
    assert any("annotation 1" in w and "polygon" in w for w in warnings)
    assert any("annotation 99" in w and "image_id" in w for w in warnings)
    assert all(str(ann) in w for w in warnings)
    assert len(records) == 1  # image 1 lost both instances and is filtered (FILTER_EMPTY_ANNOTATIONS)


@pytest.mark.parametrize("polygon", [
    [float("nan"), 1.0, 5.0, 5.0, 10.0, 1.0],  # pycocotools allocated without bound (20 GB) or crashed on these
    [1e9, 1.0, 5.0, 5.0, 10.0, 1.0],
    [float("inf"), 1.0, 5.0, 5.0, 10.0, 1.0],
    [1.0, -5.0 * SIZE, 5.0, 5.0, 10.0, 1.0],  # more than 4 image sizes above the image
])
def test_polygons_with_non_finite_or_far_away_coordinates_are_skipped_with_a_warning(tmp_path, polygon):
    ann, images = write_coco(tmp_path, num_images=2)
    data = json.loads(ann.read_text())
    data["annotations"][0]["segmentation"] = [polygon]
    data["annotations"][2]["segmentation"] = [[-3.0 * SIZE, 1.0, 5.0 * SIZE, 5.0, 10.0, 4.0 * SIZE]]  # clipped: kept
    ann.write_text(json.dumps(data, allow_nan=True))
    records, warnings = read_annotation_file(ann, images)
    assert len(warnings) == 1 and "annotation 1: skipped bad annotation (polygon" in warnings[0], warnings
    assert [len(r.frames[0].instances) for r in records] == [1, 2]
    dataset = TrainDataset(records, AugmentationConfig(kind="shortest_edge", min_sizes=(SIZE,), flip=False))
    assert dataset[(1, 0)].masks.shape[0] == 2  # the one far outside but within bounds is drawn (clipped)


@pytest.mark.parametrize("counts", ["", "0", "garbage~", "PPYo1", "big", [5, 7], [-1, SIZE * SIZE + 1]])
def test_rle_whose_runs_do_not_make_the_image_size_is_skipped_with_a_warning(tmp_path, counts):
    """pycocotools decodes any counts string: "" or "0" gave a mask of uninitialised memory, accepted silently."""
    ann, images = write_coco(tmp_path, num_images=2)
    data = json.loads(ann.read_text())
    assert isinstance(data["annotations"][1]["segmentation"]["counts"], str)  # the disc of image 1
    if counts == "big":  # a valid encoding of one run longer than the image
        counts = rle.encode(np.ones((SIZE + 1, SIZE), bool))["counts"]
    data["annotations"][1]["segmentation"]["counts"] = counts
    ann.write_text(json.dumps(data))
    records, warnings = read_annotation_file(ann, images)
    assert len(warnings) == 1 and warnings[0].startswith(f"{ann}: annotation 2: skipped bad annotation (")
    assert "RLE" in warnings[0]
    assert [len(r.frames[0].instances) for r in records] == [1, 2]


def test_non_numeric_category_id_is_skipped_with_a_warning(tmp_path):
    ann, images = write_coco(tmp_path, num_images=2)
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = "box"
    data["annotations"][2]["category_id"] = "1"  # a number written as a string is still that number
    ann.write_text(json.dumps(data))
    records, warnings = read_annotation_file(ann, images)
    assert warnings == [f"{ann}: annotation 1: skipped bad annotation (category_id 'box' is not an integer)"]
    assert [sorted(r.category_ids) for r in records] == [[2], [1, 2]]


def test_cvat_rectangles_are_boxes_and_short_polygon_parts_are_dropped_not_the_instance(tmp_path):
    """CVAT's COCO export writes a rectangle's segmentation as []: a box alone, not a malformed polygon. A polygon
    with one part of fewer than 3 points keeps its other parts (detectron2's load_coco_json); one left with none is
    skipped."""
    ann, images = write_coco(tmp_path, num_images=2)
    data = json.loads(ann.read_text())
    first = data["annotations"][0]  # image 1's rectangle, as a polygon
    first["segmentation"] = [*first["segmentation"], [1.0, 1.0, 3.0, 3.0]]
    data["annotations"][1]["segmentation"] = []  # image 1's disc drawn as a CVAT rectangle
    data["annotations"][2]["segmentation"] = [[1.0, 1.0, 3.0, 3.0]]  # image 2's rectangle: no part left
    ann.write_text(json.dumps(data))
    records, warnings = read_annotation_file(ann, images)
    assert warnings == [f"{ann}: annotation 3: skipped bad annotation (every polygon part has fewer than 3 points)",
                        f"{ann}: 1 annotation skipped, without a segmentation (a box alone: no mask to train on) "
                        "(annotation 2)"]
    assert [sorted(r.category_ids) for r in records] == [[1], [2]]
    [kept] = records[0].frames[0].instances
    data["annotations"][2]["segmentation"] = [[1.0, 1.0, 3.0, 3.0, 5.0, 1.0, 4.0]]  # 3.5 points: not "fewer than 3"
    ann.write_text(json.dumps(data))
    assert read_annotation_file(ann, images)[1][0] == (
        f"{ann}: annotation 3: skipped bad annotation (every polygon part has an odd number of coordinates)")
    assert kept.segmentation == first["segmentation"][:-1]


def test_a_track_with_a_non_numeric_category_is_one_warning_not_one_per_frame(tmp_path):
    masks = [rle.encode(np.ones((SIZE, SIZE), bool))] * 2
    path = _ytvis_file(tmp_path, [{"id": 1, "video_id": 1, "category_id": "person", "segmentations": masks},
                                  {"id": 2, "video_id": 1, "category_id": 1, "segmentations": masks}])
    _, warnings = read_annotation_file(path, tmp_path / "frames")
    assert warnings == [f"{path}: annotation 1: skipped bad annotation (category_id 'person' is not an integer)"]


def _ytvis_file(tmp_path, annotations):
    frames = tmp_path / "frames" / "clip"
    frames.mkdir(parents=True, exist_ok=True)
    for t in range(2):
        cv2.imwrite(str(frames / f"{t}.png"), render_shapes(t)[0])
    doc = {"videos": [{"id": 1, "width": SIZE, "height": SIZE, "file_names": ["clip/0.png", "clip/1.png"]}],
           "categories": [{"id": 1, "name": "box"}], "annotations": annotations}
    path = tmp_path / "ytvis.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("annotations", "why"), [
    ([], "the file has no annotations"),
    ([{"id": 1, "video_id": 1, "category_id": 1, "bboxes": [[1, 1, 5, 5]] * 2}], "1 without a mask (boxes only)"),
    ([{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [None, None], "bboxes": [None, None]}],
     "1 without a mask (boxes only)"),
    ([{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 1,
       "segmentations": [rle.encode(np.ones((SIZE, SIZE), bool))] * 2}], "1 crowd (iscrowd: 1"),
    ([{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [rle.encode(np.zeros((SIZE, SIZE), bool)), None]},
      {"id": 2, "video_id": 1, "category_id": 1, "segmentations": [None, [[5.0, 5.0, 9.0, 9.0, 20.0, 20.0]]]}],
     "2 with an empty mask (an RLE without a pixel, or a polygon of no area)"),  # trained on the object loss alone
])
def test_video_data_without_a_single_mask_is_refused_naming_the_file(tmp_path, annotations, why):
    """Such data trained to the end learning only "no object"."""
    path = _ytvis_file(tmp_path, annotations)
    with pytest.raises(TrainDataError, match="no video with a usable") as error:
        read_annotation_file(path, tmp_path / "frames", crowd_as_instances=False)
    assert str(error.value).startswith(f"{path}: ") and why in str(error.value)


def test_a_box_only_track_is_skipped_saying_it_has_no_masks(tmp_path):
    mask = rle.encode(render_shapes(0)[1][0].astype(bool))
    path = _ytvis_file(tmp_path, [{"id": 1, "video_id": 1, "category_id": 1, "bboxes": [[1, 1, 5, 5]] * 2},
                                  {"id": 2, "video_id": 1, "category_id": 1, "segmentations": [mask, None]}])
    records, warnings = read_annotation_file(path, tmp_path / "frames")
    assert [len(f.instances) for f in records[0].frames] == [1, 0]
    assert warnings == [f"{path}: 1 annotation skipped, a track of boxes alone (no segmentations, or only null ones: "
                        "no mask to train on) (annotation 1)"]


def test_box_only_and_orphan_annotations_are_one_line_each_per_file_and_an_empty_video_is_named(tmp_path):
    """A file of 300 boxes gave 307 warning lines, one per annotation; empty masks and crowd annotations were already
    one line per file. A video with no frames (file_names: []) was blamed on its tracks ("skipped track with only
    null segmentations")."""
    ann, images = write_coco(tmp_path / "coco", num_images=2)
    data = json.loads(ann.read_text())
    box = {k: v for k, v in data["annotations"][0].items() if k != "segmentation"}
    data["annotations"] += [dict(box, id=100 + n) for n in range(5)] + [dict(box, id=200 + n, image_id=99)
                                                                        for n in range(2)]
    ann.write_text(json.dumps(data))
    _, warnings = read_annotation_file(ann, images)
    assert warnings == [
        f"{ann}: 2 annotations skipped, no known image_id (no usable image of the file has it) (annotations 200, 201)",
        f"{ann}: 5 annotations skipped, without a segmentation (a box alone: no mask to train on) (annotations 100, "
        "101, 102, ...)"]
    mask = rle.encode(render_shapes(0)[1][0].astype(bool))
    path = _ytvis_file(tmp_path / "ytvis", [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [mask, mask]},
                                            {"id": 2, "video_id": 2, "category_id": 1, "segmentations": []},
                                            {"id": 3, "video_id": 1, "category_id": 1, "segmentations": [None, None]},
                                            {"id": 4, "video_id": 1, "category_id": 1}])
    doc = json.loads(path.read_text())
    doc["videos"].append(dict(doc["videos"][0], id=2, file_names=[]))
    path.write_text(json.dumps(doc))
    records, warnings = read_annotation_file(path, tmp_path / "ytvis" / "frames")
    assert len(records) == 1 and warnings == [
        f"{path}: skipped video 2: it has no frames (file_names is empty)",
        f"{path}: 2 annotations skipped, a track of boxes alone (no segmentations, or only null ones: no mask to train "
        "on) (annotations 3, 4)"]


def test_image_data_whose_every_mask_is_crowd_is_refused_also_when_empty_images_are_kept(tmp_path):
    ann, images = write_coco(tmp_path, num_images=2)
    data = json.loads(ann.read_text())
    for annotation in data["annotations"]:
        annotation["iscrowd"] = 1
    ann.write_text(json.dumps(data))
    with pytest.raises(TrainDataError, match=f"^{re.escape(str(ann))}: no image with a usable .* 5 crowd"):
        read_annotation_file(ann, images, filter_empty=False, crowd_as_instances=False)


def test_images_that_share_an_id_are_skipped_with_their_annotations_in_one_warning(tmp_path):
    """Two COCO exports, each numbering its images from 1, put together: every annotation of both images was trained
    on the second image's pixels, without a word."""
    ann, images = write_coco(tmp_path, num_images=4)
    data = json.loads(ann.read_text())
    data["images"][1]["id"] = 1  # img_1.png now has image 1's id too; its own annotations (image_id 2) name no image
    for annotation in data["annotations"]:
        annotation["image_id"] = {2: 1}.get(annotation["image_id"], annotation["image_id"])
    ann.write_text(json.dumps(data))
    records, warnings = read_annotation_file(ann, images, crowd_as_instances=False)
    assert [r.frames[0].path.name for r in records] == ["img_2.png", "img_3.png"]
    assert warnings == [f"{ann}: skipped 2 image entries sharing id 1, with their 5 annotations: an id given to more "
                        "than one image leaves which image an annotation is on unknown (annotation files each "
                        "numbering from 1, put together?)"]  # image 1 crowd annotation among the 5: no crowd note
    data = json.loads(ann.read_text())
    first = data["images"][0]
    data["images"] = [dict(image, id=k % 6 + 1) for k, image in enumerate(data["images"] * 3)] + [dict(first, id=99)]
    data["annotations"].append(dict(data["annotations"][0], id=100, image_id=99))
    ann.write_text(json.dumps(data))
    records, warnings = read_annotation_file(ann, images)
    assert len(records) == 1 and warnings == [
        f"{ann}: skipped 12 image entries sharing 6 ids (1, 2, 3, 4, 5 and 1 more), with their 9 annotations: an id "
        "given to more than one image leaves which image an annotation is on unknown (annotation files each numbering "
        "from 1, put together?)"]
    data["images"].pop()
    ann.write_text(json.dumps(data))
    with pytest.raises(TrainDataError, match=r"no image with a usable .*\(of its 10 annotation\(s\): 9 on images "
                                             r"that share an id; 1 on no usable image of the file \(image_id\)\)"):
        read_annotation_file(ann, images)


def test_videos_that_share_an_id_are_skipped_with_their_tracks_in_one_warning(tmp_path):
    """Two ytvis.json files of `clipvis segment` merged: each has video id 1."""
    mask = rle.encode(render_shapes(0)[1][0].astype(bool))
    path = _ytvis_file(tmp_path, [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [mask, mask]},
                                  {"id": 2, "video_id": 2, "category_id": 1, "segmentations": [mask, None]}])
    doc = json.loads(path.read_text())
    doc["videos"] += [dict(doc["videos"][0]), dict(doc["videos"][0], id=2)]
    path.write_text(json.dumps(doc))
    records, warnings = read_annotation_file(path, tmp_path / "frames")
    assert [len(r.frames) for r in records] == [2] and [len(f.instances) for f in records[0].frames] == [1, 0]
    assert warnings == [f"{path}: skipped 2 video entries sharing id 1, with their 1 annotation: an id given to more "
                        "than one video leaves which video an annotation is on unknown (annotation files each "
                        "numbering from 1, put together?)"]
    doc["videos"] = [dict(video, id=1) for video in doc["videos"]]
    path.write_text(json.dumps(doc))
    with pytest.raises(TrainDataError, match="no video with frames .*skipped 3 video entries sharing id 1"):
        read_annotation_file(path, tmp_path / "frames")


def test_entries_without_a_usable_id_file_name_or_size_are_skipped_with_a_warning_not_a_traceback(tmp_path):
    """A YouTube-VIS video without "id" was a KeyError traceback; ids, image_ids and video_ids that are lists were
    TypeErrors (unhashable), a file name that is a number too."""
    mask = rle.encode(render_shapes(0)[1][0].astype(bool))
    path = _ytvis_file(tmp_path, [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [mask, mask]},
                                  {"id": 2, "video_id": [1], "category_id": 1, "segmentations": [mask, mask]},
                                  {"id": 3, "category_id": 1, "segmentations": [mask, mask]}])
    doc = json.loads(path.read_text())
    video = doc["videos"][0]
    bad = [{k: v for k, v in video.items() if k != "id"}, dict(video, id=[2]), dict(video, id=None),
           dict(video, id=3, file_names="clip/0.png"), dict(video, id=4, file_names=["clip/0.png", 5]),
           dict(video, id=5, height=0), dict(video, id=6, width=float("inf")), "a video"]
    doc["videos"] += bad
    path.write_text(json.dumps(doc))
    records, warnings = read_annotation_file(path, tmp_path / "frames")
    assert len(records) == 1 and [len(f.instances) for f in records[0].frames] == [1, 1]
    skipped = [w for w in warnings if w.startswith(f"{path}: skipped video entry without id/file_names/height/width: ")]
    assert len(skipped) == len(bad) == len(warnings) - 1, warnings
    assert warnings[-1] == f"{path}: 2 annotations skipped, no known video_id (no usable video of the file has it) " \
        "(annotations 2, 3)"

    ann, images = write_coco(tmp_path / "coco", num_images=2)
    data = json.loads(ann.read_text())
    image = data["images"][0]
    bad = [{k: v for k, v in image.items() if k != "id"}, dict(image, id=[7]), dict(image, id=8, file_name=5),
           {k: v for k, v in dict(image, id=9).items() if k != "file_name"}, dict(image, id=10, width=-64), 11]
    data["images"] += bad
    data["annotations"] += [dict(data["annotations"][0], id=90, image_id=[1]), dict(data["annotations"][0], id=91,
                                                                                    image_id={"id": 1})]
    data["video_sources"] = [{"video_id": [1], "source": str(tmp_path / "gone.mp4")}]
    ann.write_text(json.dumps(data))
    records, warnings = read_annotation_file(ann, images)
    assert [len(r.frames[0].instances) for r in records] == [2, 2]
    skipped = [w for w in warnings if w.startswith(f"{ann}: skipped image entry without id/file_name/height/width: ")]
    assert len(skipped) == len(bad) == len(warnings) - 1, warnings
    assert warnings[-1] == f"{ann}: 2 annotations skipped, no known image_id (no usable image of the file has it) " \
        "(annotations 90, 91)"


def test_empty_masks_are_counted_in_one_warning_and_a_file_of_them_alone_is_refused(tmp_path):
    """All-zero RLE masks and polygons of no area give no mask to train on: a file of nothing else trained silently
    on the object loss alone, and some of them among others went unsaid."""
    ann, images = write_coco(tmp_path, num_images=3)
    data = json.loads(ann.read_text())
    data["annotations"][1]["segmentation"] = rle.encode(np.zeros((SIZE, SIZE), bool))  # image 1's disc
    data["annotations"][2]["segmentation"] = [[10.0, 10.0, 10.0, 10.0, 10.0, 10.0], [3.0, 3.0, 7.0, 3.0, 12.0, 3.0]]
    data["annotations"][3]["segmentation"] = {"size": [SIZE, SIZE], "counts": [SIZE * SIZE]}  # uncompressed, empty
    ann.write_text(json.dumps(data))
    records, warnings = read_annotation_file(ann, images)
    assert warnings == [f"{ann}: 3 annotations whose mask is empty (an RLE without a pixel, or a polygon of no area; "
                        "the first: annotation 2): no mask to train on there"]
    assert [len(r.frames[0].instances) for r in records] == [2, 2, 2]  # kept: a sample drops them, as officially
    for annotation in data["annotations"]:
        if not annotation["iscrowd"]:
            annotation["segmentation"] = rle.encode(np.zeros((SIZE, SIZE), bool))
    ann.write_text(json.dumps(data))
    with pytest.raises(TrainDataError, match=re.escape(
            f"{ann}: no image with a usable (non-crowd) instance mask to train on (of its 7 annotation(s): 1 crowd "
            "(iscrowd: 1); 6 with an empty mask (an RLE without a pixel, or a polygon of no area))")):
        read_annotation_file(ann, images)

    mask, empty = rle.encode(render_shapes(0)[1][0].astype(bool)), rle.encode(np.zeros((SIZE, SIZE), bool))
    path = _ytvis_file(tmp_path, [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [empty, None]},
                                  {"id": 2, "video_id": 1, "category_id": 1, "segmentations": [empty, mask]},
                                  {"id": 3, "video_id": 1, "category_id": 1, "segmentations": [empty, empty]}])
    records, warnings = read_annotation_file(path, tmp_path / "frames")
    assert warnings == [f"{path}: 2 tracks whose every mask is empty (an RLE without a pixel, or a polygon of no area;"
                        " the first: annotation 1): no mask to train on there"]  # track 2 has a mask on frame 1
    assert [len(f.instances) for f in records[0].frames] == [3, 2]


def test_segment_ytvis_output_is_a_training_input(tmp_path):
    """What `clipvis segment` writes for an image-folder input: file_names <stem>/<image>, None where absent."""
    frames = tmp_path / "frames" / "clip"
    frames.mkdir(parents=True)
    import cv2

    segs = []
    for t in range(3):
        image, masks = render_shapes(t)
        cv2.imwrite(str(frames / f"{t:03d}.png"), image[:, :, ::-1])
        segs.append(rle.encode(masks[0].astype(bool)) if t != 1 else None)
    doc = {
        "videos": [{"id": 1, "name": "clip", "width": SIZE, "height": SIZE, "length": 3,
                    "file_names": [f"clip/{t:03d}.png" for t in range(3)], "fps": 25.0, "frame_stride": 1,
                    "frame_indices": [0, 1, 2], "source": str(frames)}],
        "categories": [{"id": 1, "name": "box", "supercategory": "object"}],
        "annotations": [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": segs}],
    }
    path = tmp_path / "ytvis.json"
    path.write_text(json.dumps(doc))
    records, warnings = read_ytvis(path, tmp_path / "frames")
    assert warnings == [] and len(records) == 1 and len(records[0].frames) == 3
    assert [len(f.instances) for f in records[0].frames] == [1, 0, 1]
    dataset = TrainDataset(records, AugmentationConfig(kind="shortest_edge", min_sizes=(SIZE,), flip=False), seed=3)
    counts = {dataset[(0, p)].masks.shape[0] for p in range(12)}  # one random frame per sample
    assert counts == {0, 1}


def test_lsj_gives_fixed_size_crops_with_masks_following_the_image():
    image, masks = render_shapes(0)
    config = AugmentationConfig(kind="lsj", image_size=48, min_scale=0.5, max_scale=2.0)
    for seed in range(6):
        out_image, out_masks, _ = augment_instances(image, np.stack(masks), config, np.random.default_rng(seed))
        assert out_image.shape == (48, 48, 3) and out_masks.shape == (2, 48, 48)
        red = out_image[..., 0].astype(int) > out_image[..., 1].astype(int) + 40  # the rectangle's colour
        if out_masks[0].sum() > 20:
            assert (red & out_masks[0].astype(bool)).sum() / out_masks[0].sum() > 0.8


def test_lsj_places_the_crop_with_one_random_fraction_for_both_axes():
    """detectron2's FixedSizeCrop: offset = room left x one uniform draw. On a square image scaled 2x (as much room
    each way), the crop's top-left corner is on the diagonal."""
    yy, xx = np.mgrid[:100, :100]
    image = np.stack([yy, xx, np.zeros_like(yy)], axis=-1).astype(np.uint8)  # each pixel says where it is
    config = AugmentationConfig(kind="lsj", image_size=100, min_scale=2.0, max_scale=2.0, flip=False)
    corners = set()
    for seed in range(8):
        out, _, _ = augment_instances(image, np.zeros((0, 100, 100), np.uint8), config, np.random.default_rng(seed))
        top, left = int(out[0, 0, 0]), int(out[0, 0, 1])
        assert abs(top - left) <= 1, (top, left)  # one pixel of rounding at most
        corners.add(top)
    assert len(corners) > 3  # and the place does vary


def test_sampler_splits_the_global_batch_and_resumes_exactly():
    one = iter(StreamBatchSampler(7, 4, seed=1))
    batches = [next(one) for _ in range(6)]
    ranks = [iter(StreamBatchSampler(7, 4, seed=1, rank=r, world=2)) for r in range(2)]
    for batch in batches:
        assert next(ranks[0]) + next(ranks[1]) == batch
    resumed = iter(StreamBatchSampler(7, 4, seed=1, start_iteration=3))
    assert [next(resumed) for _ in range(3)] == batches[3:]
    positions = [p for b in batches for _, p in b]
    assert positions == list(range(24))
    with pytest.raises(ValueError):
        StreamBatchSampler(7, 3, world=2)


@pytest.mark.parametrize("grouped", [True, False])
def test_a_resumed_stream_is_the_uninterrupted_one_from_any_iteration(grouped):
    """A resume skipped the iterations already run by making their batches one record at a time in Python: ~5 s at
    iteration 368,750 of the official schedule (batch 16) with LVIS-like data. It computes where the stream stands
    instead; the batches that follow are those of the run that was not interrupted, wherever it stopped: with a
    group too rare to fill a batch in an epoch (its bucket carried over epochs) and repeat factors (epochs of
    varying length, records left out of some)."""
    from itertools import islice

    groups = np.array([0, 1, 0, 0, 1, 0, 0, 2, 0, 0, 0]) if grouped else None  # group 2: one record in 11
    factors = np.array([1.0, 0.5, 2.3, 1.0, 1.7, 0.2, 1.0, 1.5, 3.0, 1.0, 0.6])
    for rank in range(2):
        kwargs = dict(seed=3, rank=rank, world=2, factors=factors, groups=groups)
        uninterrupted = list(islice(StreamBatchSampler(11, 4, **kwargs), 120))
        for start in range(117):
            resumed = list(islice(StreamBatchSampler(11, 4, start_iteration=start, **kwargs), 3))
            assert resumed == uninterrupted[start:start + 3], (rank, start)


@pytest.mark.parametrize("grouped", [True, False])
def test_a_resume_does_not_replay_the_stream_it_skips(monkeypatch, grouped):
    """The records taken from the stream for a run's first batch after a resume at iteration 20,000 are those of that
    batch (and of what waits with them in the groups' buckets), not the 320,000 of the iterations before it."""
    taken = []
    plain_stream = StreamBatchSampler._stream

    def counted(self, *args):
        for index in plain_stream(self, *args):
            taken.append(index)
            yield index

    monkeypatch.setattr(StreamBatchSampler, "_stream", counted)
    groups = np.random.default_rng(0).integers(0, 2, 1000) if grouped else None
    resumed = StreamBatchSampler(1000, 16, rank=1, world=4, start_iteration=20_000, groups=groups)
    assert [p for _, p in next(iter(resumed))] == list(range(20_000 * 16 + 4, 20_000 * 16 + 8))
    assert len(taken) < 100


def test_aspect_ratio_grouping_gives_batches_of_one_orientation_on_any_number_of_processes(tmp_path):
    """detectron2's DATALOADER.ASPECT_RATIO_GROUPING (on in the official runs): a video-stage batch no longer mixes a
    1280x720 and a 720x1280 frame (padded to 1344x1344); the batches stay the same on any number of processes and
    on resume, and the image stage (every LSJ sample a square) keeps its batches."""
    from clipvis.cli.train.data import aspect_ratio_groups
    from clipvis.cli.train.records import FrameRecord, TrainRecord

    sizes = [(720, 1280), (1280, 720), (720, 1280), (480, 640), (640, 480), (1280, 720), (360, 640)]
    records = [TrainRecord(f"r{i}", [FrameRecord(tmp_path / f"{i}.jpg", h, w)]) for i, (h, w) in enumerate(sizes)]
    video = aspect_ratio_groups(records, AugmentationConfig(kind="shortest_edge"))
    assert video.tolist() == [0, 1, 0, 0, 1, 1, 0]
    one = iter(StreamBatchSampler(7, 4, seed=1, groups=video))
    batches = [next(one) for _ in range(8)]
    assert all(len({video[i] for i, _ in batch}) == 1 for batch in batches)
    assert [p for b in batches for _, p in b] == list(range(32))
    ranks = [iter(StreamBatchSampler(7, 4, seed=1, rank=r, world=2, groups=video)) for r in range(2)]
    assert all(next(ranks[0]) + next(ranks[1]) == batch for batch in batches)
    resumed = iter(StreamBatchSampler(7, 4, seed=1, start_iteration=5, groups=video))
    assert [next(resumed) for _ in range(3)] == batches[5:]
    plain = iter(StreamBatchSampler(7, 4, seed=1))
    assert [next(plain) for _ in range(8)] != batches  # the grouping changed something here
    lsj = aspect_ratio_groups(records, AugmentationConfig(kind="lsj"))
    grouped, plain = iter(StreamBatchSampler(7, 4, seed=1, groups=lsj)), iter(StreamBatchSampler(7, 4, seed=1))
    assert [next(grouped) for _ in range(8)] == [next(plain) for _ in range(8)]
    assert load_train_config("ytvis19_r50.yaml").get("DATALOADER.ASPECT_RATIO_GROUPING") is True  # as detectron2
    # A run started before clipvis grouped (its config.yaml has no such key) resumes with the batches it had.
    from clipvis.cli.train.config import load_run_config

    tree = load_train_config("ytvis19_r50.yaml").tree
    del tree["DATALOADER"]["ASPECT_RATIO_GROUPING"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(tree))
    assert load_run_config(tmp_path / "config.yaml").get("DATALOADER.ASPECT_RATIO_GROUPING") is False
    assert load_run_config(tmp_path / "config.yaml", ["DATALOADER.ASPECT_RATIO_GROUPING=true"]).get(
        "DATALOADER.ASPECT_RATIO_GROUPING") is True


def test_repeat_factors_oversample_rare_categories(tmp_path):
    ann, images = write_coco(tmp_path, num_images=4)
    records, _ = read_annotation_file(ann, images)
    records[0].frames[0].instances[0].category_id = 7  # category 7 appears in 1 of 4 images
    factors = repeat_factors(records, threshold=0.5)
    assert factors[0] == pytest.approx(np.sqrt(0.5 / 0.25))
    assert all(f == pytest.approx(np.sqrt(0.5 / 1.0)) or f == 1.0 for f in factors[1:])
    sampler = iter(StreamBatchSampler(4, 1, seed=0, factors=factors))
    drawn = [next(sampler)[0][0] for _ in range(400)]
    assert drawn.count(0) > drawn.count(1) * 1.2


def test_lvis_norare_file_is_built_without_rare_annotations(tmp_path):
    source = tmp_path / "lvis_v1_train.json"
    source.write_text(json.dumps({
        "images": [], "categories": [{"id": 1, "frequency": "r"}, {"id": 2, "frequency": "f"}],
        "annotations": [{"id": 1, "category_id": 1}, {"id": 2, "category_id": 2}],
    }))
    messages = []
    target = remove_lvis_rare(source, tmp_path / "lvis_v1_train_norare.json", messages.append)
    assert [a["id"] for a in json.loads(target.read_text())["annotations"]] == [2]
    assert messages and not list(tmp_path.glob("*.tmp*"))


def test_shipped_configs_resolve_by_bare_name_with_official_values():
    for name in ("lvis_r50.yaml", "lvis_convnext_b", "coco_r50.yaml", "coco_convnext_b.yaml", "ytvis19_r50.yaml",
                 "ytvis19_convnext_b.yaml"):
        assert shipped_config_path(name).is_file(), name
    lvis = load_train_config("lvis_r50.yaml")
    assert lvis.model_config().decoder_layers == 6 and lvis.get("SOLVER.MAX_ITER") == 368750
    assert load_train_config("coco_convnext_b").model_config().clip_model_name == "convnext_base_w_320"
    ytvis = load_train_config("ytvis19_r50.yaml", ["SOLVER.BASE_LR=2e-5", "INPUT.MIN_SIZE_TRAIN=[640, 800]"])
    assert ytvis.model_config().decoder_layers == 9
    assert ytvis.get("SOLVER.BASE_LR") == 2e-5 and ytvis.get("INPUT.MIN_SIZE_TRAIN") == [640, 800]
    with pytest.raises(ConfigError, match="not KEY=VALUE"):
        load_train_config("lvis_r50.yaml", ["SOLVER.BASE_LR"])
    with pytest.raises(ConfigError, match="not a shipped config"):
        load_train_config("nope.yaml")


def test_official_syntax_and_bad_values_in_configs_and_overrides(tmp_path):
    """Tuples as the official files write them are lists, a single dataset name is a list of one, numbers given as
    text are numbers; a misspelt key, a value of the wrong kind or out of range is one ConfigError line."""
    (tmp_path / "official.yaml").write_text(
        'SOLVER:\n  STEPS: (327778, 355092)\n  MAX_ITER: 368750\nDATASETS:\n  TRAIN: ("coco_2017_train",)\n'
        "  TEST: ()\nINPUT:\n  MIN_SIZE_TRAIN: (640, 672, 704)\n"
    )
    config = load_train_config(tmp_path / "official.yaml", ["DATASETS.TEST=ytvis_2019_val"])
    assert config.get("SOLVER.STEPS") == [327778, 355092] and config.get("INPUT.MIN_SIZE_TRAIN") == [640, 672, 704]
    assert config.get("DATASETS.TRAIN") == ["coco_2017_train"] and config.get("DATASETS.TEST") == ["ytvis_2019_val"]
    assert load_train_config("lvis_r50.yaml", ['DATASETS.TRAIN=("coco_2017_train",)']).get("DATASETS.TRAIN") == [
        "coco_2017_train"]
    for override, message in (
        ("SOLVR.BASE_LR=5", "no config key SOLVR.BASE_LR"),
        ("SOLVER.BASE_LRR=0.1", "no config key SOLVER.BASE_LRR"),
        ("SOLVER.BASE_LR=abc", "expected a number, not 'abc'"),
        ("SOLVER=3", "a group of keys, not a value"),
        ("SOLVER.CHECKPOINT_PERIOD=0", "SOLVER.CHECKPOINT_PERIOD must be a whole number of at least 1"),
        ("DATALOADER.NUM_WORKERS=-1", "DATALOADER.NUM_WORKERS must be a whole number of at least 0"),
        ("CLIPVIS.AMP_DTYPE=fp8", "CLIPVIS.AMP_DTYPE must be auto, bf16 or fp16"),
        ("SOLVER.BASE_LR=0", "SOLVER.BASE_LR must be a positive number"),
        ("SOLVER.OPTIMIZER=SGD", "SOLVER.OPTIMIZER 'SGD' is not supported; clipvis trains with ADAMW"),
        ("INPUT.RANDOM_FLIP=vertical", "INPUT.RANDOM_FLIP 'vertical' is not supported"),
        ("INPUT.FORMAT=BGR", "INPUT.FORMAT 'BGR' is not supported; clipvis trains with RGB"),  # was ignored
        ("CLIPVIS.MODEL.memory_length=0", "memory_length (TEST.NUM_FRAME) must be a positive integer, not 0"),
        ("CLIPVIS.MODEL.num_queries=-3", "num_queries (MODEL.MASK_FORMER.NUM_OBJECT_QUERIES) must be a positive"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)) as raised:
            load_train_config("lvis_r50.yaml", [override])
        assert str(raised.value).startswith(f"override {override!r}: "), raised.value  # not the shipped file's fault
    assert load_train_config("lvis_r50.yaml", ["CLIPVIS.MODEL.num_queries=8"]).get("CLIPVIS.MODEL") == {
        "num_queries": 8}
    # The test-time keys the checkpoints carry, on every shipped config (the image ones said "no config key": hunter 84)
    tested = ["INPUT.MIN_SIZE_TEST=640", "TEST.NUM_FRAME=7", "TEST.NUM_TOPK=3", "TEST.DETECTIONS_PER_IMAGE=20"]
    for name in ("lvis_r50.yaml", "coco_r50.yaml", "ytvis19_r50.yaml"):
        model = load_train_config(name, tested).model_config()
        assert (model.min_size_test, model.memory_length, model.top_k, model.detections_per_video) == (640, 7, 3, 20)
    plain = load_train_config("lvis_r50.yaml").model_config()  # their defaults: the model's, as before
    assert (plain.min_size_test, plain.memory_length, plain.top_k, plain.detections_per_video) == (480, 9, 5, 50)


@pytest.mark.parametrize(("overrides", "message"), [
    # augmentation and point sampling: a traceback once the data had loaded (TRAIN_NUM_POINTS=0 a "nan loss" hint)
    (["INPUT.MIN_SIZE_TRAIN=[64,x]"], "INPUT.MIN_SIZE_TRAIN must be a list of shorter-side lengths in pixels"),
    (["INPUT.MIN_SIZE_TRAIN=[]"], "INPUT.MIN_SIZE_TRAIN must be a list of shorter-side lengths in pixels"),
    (["INPUT.MAX_SIZE_TRAIN=-5"], "INPUT.MAX_SIZE_TRAIN must be a whole number of at least 1, not -5"),
    (["INPUT.IMAGE_SIZE=0"], "INPUT.IMAGE_SIZE must be a whole number of at least 1, not 0"),
    (["INPUT.MIN_SCALE=-1"], "INPUT.MIN_SCALE must be a positive number, not -1"),
    (["INPUT.MIN_SCALE=2", "INPUT.MAX_SCALE=0.5"], "INPUT.MAX_SCALE must be a number of at least INPUT.MIN_SCALE"),
    (["MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO=2"],
     "MODEL.MASK_FORMER.IMPORTANCE_SAMPLE_RATIO must be a number from 0 to 1, not 2"),
    (["MODEL.MASK_FORMER.OVERSAMPLE_RATIO=0"],
     "MODEL.MASK_FORMER.OVERSAMPLE_RATIO must be a number of at least 1, not 0"),
    (["MODEL.MASK_FORMER.TRAIN_NUM_POINTS=0"],
     "MODEL.MASK_FORMER.TRAIN_NUM_POINTS must be a whole number of at least 1, not 0"),
    (["SOLVER.BASE_LR=.inf"], "SOLVER.BASE_LR must be a positive number, not inf"),
    # the schedule: [3, 1] gave x0.01 from iteration 1 on; 1.5 and 2.5 were taken silently
    (["SOLVER.STEPS=[3,1]"], "SOLVER.STEPS must be increasing iteration numbers, not [3, 1]"),
    (["SOLVER.STEPS=[1.5]"], "SOLVER.STEPS must be a list of iteration numbers (whole numbers), not [1.5]"),
    (["SOLVER.MAX_ITER=2.5"], "SOLVER.MAX_ITER must be a whole number of at least 1, not 2.5"),
    # the rate's factors: GAMMA 0 stopped learning at the first step, -1 turned it around, .nan gave a NaN loss; a
    # negative warmup factor started with a negative rate; all were taken silently
    (["SOLVER.GAMMA=0"], "SOLVER.GAMMA must be a positive number, not 0"),
    (["SOLVER.GAMMA=-0.1"], "SOLVER.GAMMA must be a positive number, not -0.1"),
    (["SOLVER.GAMMA=.nan"], "SOLVER.GAMMA must be a positive number, not nan"),
    (["SOLVER.GAMMA=ten"], "expected a number, not 'ten'"),
    (["SOLVER.WARMUP_FACTOR=-0.001"], "SOLVER.WARMUP_FACTOR must be a number from 0 to 1, not -0.001"),
    (["SOLVER.WARMUP_FACTOR=.inf"], "SOLVER.WARMUP_FACTOR must be a number from 0 to 1, not inf"),
    (["SOLVER.WARMUP_FACTOR=10"], "SOLVER.WARMUP_FACTOR must be a number from 0 to 1, not 10"),
    (["SOLVER.WARMUP_ITERS=-1"], "SOLVER.WARMUP_ITERS must be a whole number of at least 0, not -1"),
    (["SOLVER.WARMUP_METHOD=constant"], "SOLVER.WARMUP_METHOD 'constant' is not supported; clipvis trains with linear"),
    (["SOLVER.WEIGHT_DECAY=-0.05"], "SOLVER.WEIGHT_DECAY must be a number of at least 0, not -0.05"),
    (["SOLVER.BACKBONE_MULTIPLIER=.nan"], "SOLVER.BACKBONE_MULTIPLIER must be a number of at least 0, not nan"),
    (["SOLVER.REFERENCE_WORLD_SIZE=-4"], "SOLVER.REFERENCE_WORLD_SIZE must be a whole number of at least 0, not -4"),
])
def test_augmentation_sampling_and_schedule_values_are_checked_before_anything_loads(overrides, message):
    with pytest.raises(ConfigError) as raised:
        load_train_config("lvis_r50.yaml", overrides)
    assert str(raised.value).startswith(f"override {overrides[-1]!r}: {message}"), raised.value


def test_a_bad_schedule_value_in_a_config_file_names_the_file_and_the_key(tmp_path):
    """SOLVER.GAMMA and SOLVER.WARMUP_FACTOR in a file were not checked; a good pair (0 is a warmup from a rate of 0,
    a GAMMA above 1 raises the rate) still loads."""
    config = tmp_path / "schedule.yaml"
    config.write_text("SOLVER:\n  GAMMA: 2.0\n  WARMUP_FACTOR: 0\n")
    assert load_train_config(config).get("SOLVER.GAMMA") == 2.0
    for text, message in (("GAMMA: -1", "SOLVER.GAMMA must be a positive number, not -1"),
                          ("WARMUP_FACTOR: -0.5", "SOLVER.WARMUP_FACTOR must be a number from 0 to 1, not -0.5")):
        config.write_text(f"SOLVER:\n  {text}\n")
        with pytest.raises(ConfigError) as raised:
            load_train_config(config)
        assert str(raised.value) == f"{config}: {message}"


def test_steps_that_autoscaling_would_merge_are_one_line():
    """STEPS [3, 4] divided by 4 (16 processes under a 4-process config) are [1, 1]: the schedule refused them with a
    traceback when the trainer was built."""
    from clipvis.cli.train.config import autoscale

    config = load_train_config("lvis_r50.yaml", ["SOLVER.STEPS=[3,4]"])
    config.overridden = frozenset()  # as a config file's own steps
    with pytest.raises(ConfigError, match=re.escape("SOLVER.STEPS [3, 4] divided by 4 for a global batch of 32 are "
                                                    "[1, 1], no longer increasing")):
        autoscale(config, 16)


def test_a_bad_model_setting_names_only_the_override_that_set_it():
    """`CLIPVIS.MODEL.nope=3` beside `SOLVER.MAX_ITER=1` blamed both overrides."""
    with pytest.raises(ConfigError) as raised:
        load_train_config("lvis_r50.yaml", ["SOLVER.MAX_ITER=1", "CLIPVIS.MODEL.nope=3", "SOLVER.BASE_LR=0.01"])
    assert str(raised.value) == "override 'CLIPVIS.MODEL.nope=3': unknown model config keys: nope"


def test_a_misspelt_key_in_a_config_file_is_refused_as_on_the_command_line(tmp_path):
    """`MAX_ITERS: 4` in a config file was ignored and the default 368,750 iterations trained (17 h); DEC_LAYER and
    CLIPVIS.AMP_DTYP too, where the same typo as KEY=VALUE is refused. The official files' keys still load."""
    base = tmp_path / "base.yaml"
    base.write_text("MODEL:\n  BACKBONE:\n    FREEZE_AT: 0\n  RESNETS:\n    ANY_KEY: 1\nSOLVER:\n  MAX_ITER: 9\n"
                    "VERSION: 2\n")
    for text, message in (
        ("SOLVER:\n  MAX_ITERS: 4\n", "unknown config key SOLVER.MAX_ITERS (did you mean SOLVER.MAX_ITER?)"),
        ("MODEL:\n  MASK_FORMER:\n    DEC_LAYER: 5\n",
         "unknown config key MODEL.MASK_FORMER.DEC_LAYER (did you mean MODEL.MASK_FORMER.DEC_LAYERS?)"),
        ("CLIPVIS:\n  AMP_DTYP: bf16\n", "unknown config key CLIPVIS.AMP_DTYP (did you mean CLIPVIS.AMP_DTYPE?)"),
        ("SOLVR:\n  BASE_LR: 0.1\n", "unknown config key SOLVR (did you mean SOLVER?)"),
    ):
        typo = tmp_path / "typo.yaml"
        typo.write_text(f"_BASE_: base.yaml\n{text}")
        with pytest.raises(ConfigError, match=re.escape(f"{typo}: {message}")):
            load_train_config(typo)
    child = tmp_path / "child.yaml"
    child.write_text("_BASE_: base.yaml\nSOLVER:\n  MOMENTUM: 0.9\nMODEL:\n  MASK_FORMER:\n    TEST:\n"
                     "      SEMANTIC_ON: false\n")
    assert load_train_config(child).get("SOLVER.MAX_ITER") == 9
    for name in SHIPPED_CONFIGS:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_train_config(name)



def test_a_bad_value_or_key_in_a_base_file_is_blamed_on_that_file(tmp_path):
    """`SOLVER.GAMMA: 0.0` in `common/solver.yaml`, reached through `lvis/top.yaml`'s `_BASE_: ../Base.yaml`, was
    said as `lvis/top.yaml: SOLVER.GAMMA must be a positive number`, and so was an unknown key or a value of the
    wrong type there: the user looked in a file without the key. The file that sets it is named (as a normalised
    path); what the top file sets is still blamed on it."""
    (tmp_path / "common").mkdir()
    (tmp_path / "lvis").mkdir()
    (tmp_path / "Base.yaml").write_text("_BASE_: common/solver.yaml\n")
    top = tmp_path / "lvis" / "top.yaml"
    top.write_text("_BASE_: ../Base.yaml\nSOLVER:\n  MAX_ITER: 5\n")
    solver = tmp_path / "common" / "solver.yaml"
    for text, message in (("SOLVER:\n  GAMMA: 0.0\n", "SOLVER.GAMMA must be a positive number, not 0.0"),
                          ("SOLVER:\n  GAMMAS: 0.1\n", "unknown config key SOLVER.GAMMAS"),
                          ("SOLVER:\n  GAMMA: fast\n", "SOLVER.GAMMA: expected a number, not 'fast'"),
                          ("SOLVER:\n  CLIP_GRADIENTS:\n    ENABLED: true\n    CLIP_TYPE: norm\n"
                           "    CLIP_VALUE: 0\n", "SOLVER.CLIP_GRADIENTS.CLIP_VALUE must be positive")):
        solver.write_text(text)
        with pytest.raises(ConfigError) as raised:
            load_train_config(top)
        assert str(raised.value).startswith(f"{solver}: {message}"), raised.value
    solver.write_text("SOLVER:\n  GAMMA: 0.1\n")
    top.write_text("_BASE_: ../Base.yaml\nSOLVER:\n  MAX_ITER: 0\n")
    with pytest.raises(ConfigError, match=re.escape(f"{top}: SOLVER.MAX_ITER must be a whole number")):
        load_train_config(top)


def test_a_bad_model_setting_in_a_base_file_is_blamed_on_that_file(tmp_path):
    """`DEC_LAYERS: 1` or `CLIPVIS.MODEL.num_queries: 0` in `common/model.yaml`, reached through `lvis/top.yaml`'s
    `_BASE_`, was said as `lvis/top.yaml: ...`, with or without a KEY=VALUE override: the model settings are blamed on
    the file that sets them, as the other keys are; what the top file sets, and a default beside, on the top file."""
    (tmp_path / "common").mkdir()
    (tmp_path / "lvis").mkdir()
    top = tmp_path / "lvis" / "top.yaml"
    top.write_text("_BASE_: ../common/model.yaml\nSOLVER:\n  MAX_ITER: 5\n")
    model = tmp_path / "common" / "model.yaml"
    for text, message in (
            ("MODEL:\n  MASK_FORMER:\n    DEC_LAYERS: 1\n", "MODEL.MASK_FORMER.DEC_LAYERS must be an integer of at "
             "least 2, not 1"),
            ("CLIPVIS:\n  MODEL:\n    num_queries: 0\n", "num_queries (MODEL.MASK_FORMER.NUM_OBJECT_QUERIES) must be "
             "a positive integer, not 0"),
            ("MODEL:\n  MASK_FORMER:\n    HIDDEN_DIM: 250\n", "hidden_dim (MODEL.MASK_FORMER.HIDDEN_DIM) must be "
             "divisible by num_heads")):
        model.write_text(text)
        for overrides in ([], ["SOLVER.MAX_ITER=3"]):
            with pytest.raises(ConfigError) as raised:
                load_train_config(top, overrides)
            assert str(raised.value).startswith(f"{os.path.normpath(model)}: {message}"), raised.value
    model.write_text("MODEL:\n  MASK_FORMER:\n    NUM_OBJECT_QUERIES: 50\n")
    top.write_text("_BASE_: ../common/model.yaml\nMODEL:\n  MASK_FORMER:\n    NHEADS: 3\n")
    with pytest.raises(ConfigError, match=re.escape(f"{top}: hidden_dim (MODEL.MASK_FORMER.HIDDEN_DIM) must be")):
        load_train_config(top)
    with pytest.raises(ConfigError, match=re.escape("override 'CLIPVIS.MODEL.num_queries=0': num_queries")):
        load_train_config(tmp_path / "common" / "model.yaml", ["CLIPVIS.MODEL.num_queries=0"])

def test_an_official_config_file_with_every_official_key_loads_with_no_warning(golden_case_name, golden_case):
    """The golden cases' official_config.yaml is the official code's complete config (detectron2's RPN, ROI heads,
    Swin, ... keys): every key is one the official code has, so it loads as before, with no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load_train_config(golden_case(golden_case_name) / "official_config.yaml")
    assert config.get("MODEL.RETINANET.NUM_CLASSES") == 80


def test_recipe_values_the_trainer_does_not_implement_are_refused_not_ignored(tmp_path):
    """INPUT.SAMPLING_FRAME_NUM=2 trained on one frame per sample, a sampler detectron2 has and clipvis has not
    sampled uniformly: each was accepted and ignored, where WARMUP_METHOD or OPTIMIZER are refused."""
    for override, message in (
        ("INPUT.SAMPLING_FRAME_NUM=2", "INPUT.SAMPLING_FRAME_NUM 2 is not supported; clipvis trains with 1 (one frame "
                                       "of a video per sample, as the official video configs set it; an image run does "
                                       "not read it: set INPUT.SAMPLING_FRAME_NUM=1)"),
        ("DATALOADER.SAMPLER_TRAIN=RandomSubsetTrainingSampler", "DATALOADER.SAMPLER_TRAIN "
         "'RandomSubsetTrainingSampler' is not supported; clipvis trains with RepeatFactorTrainingSampler or "
         "TrainingSampler"),
    ):
        with pytest.raises(ConfigError) as raised:
            load_train_config("ytvis19_r50.yaml", [override])
        assert str(raised.value) == f"override {override!r}: {message}"
    assert load_train_config("ytvis19_r50.yaml", ["INPUT.SAMPLING_FRAME_NUM=1.0"]).get("INPUT.SAMPLING_FRAME_NUM") == 1
    # detectron2's keys a config file may set, which clipvis has no default for
    for lines, message in (
        ("INPUT:\n  MIN_SIZE_TRAIN_SAMPLING: range\n", "INPUT.MIN_SIZE_TRAIN_SAMPLING 'range' is not supported"),
        ("INPUT:\n  CROP:\n    ENABLED: True\n    TYPE: absolute\n", "INPUT.CROP.ENABLED true is not supported"),
        ("DATALOADER:\n  REPEAT_SQRT: False\n", "DATALOADER.REPEAT_SQRT false is not supported"),
        # network settings clipvis hard-codes: each trained another model than the config says, without a word
        ("MODEL:\n  MASK_FORMER:\n    DROPOUT: 0.1\n", "MODEL.MASK_FORMER.DROPOUT 0.1 is not supported; clipvis "
         "trains with 0.0 or 0 (no dropout"),
        ("MODEL:\n  MASK_FORMER:\n    ENFORCE_INPUT_PROJ: True\n", "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ true is not "
         "supported"),
        ("MODEL:\n  SEM_SEG_HEAD:\n    NORM: BN\n", "MODEL.SEM_SEG_HEAD.NORM 'BN' is not supported; clipvis trains "
         "with GN (GroupNorm"),
        ("MODEL:\n  SEM_SEG_HEAD:\n    IN_FEATURES: [res3, res4, res5]\n", "MODEL.SEM_SEG_HEAD.IN_FEATURES ['res3', "
         "'res4', 'res5'] is not supported; clipvis trains with res2,res3,res4,res5"),
    ):
        (tmp_path / "d2.yaml").write_text("_BASE_: ytvis.yaml\n" + lines)
        (tmp_path / "ytvis.yaml").write_text("INPUT:\n  SAMPLING_FRAME_NUM: 1\n  MIN_SIZE_TRAIN_SAMPLING: choice\n")
        with pytest.raises(ConfigError, match=f"^{re.escape(str(tmp_path / 'd2.yaml') + ': ' + message)}"):
            load_train_config(tmp_path / "d2.yaml")
    (tmp_path / "d2.yaml").write_text("_BASE_: ytvis.yaml\nINPUT:\n  CROP:\n    ENABLED: False\nMODEL:\n"
                                      "  MASK_FORMER:\n    DROPOUT: 0.0\n    ENFORCE_INPUT_PROJ: False\n"
                                      "  SEM_SEG_HEAD:\n"
                                      "    DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES: [res3, res4, res5]\n"
                                      "    DEFORMABLE_TRANSFORMER_ENCODER_N_POINTS: 8\n")  # not read officially
    assert load_train_config(tmp_path / "d2.yaml").get("INPUT.MIN_SIZE_TRAIN_SAMPLING") == "choice"
    # on the command line as in a file: the value the network has is taken (it was "no config key ... a typo?")
    dropout = "MODEL.MASK_FORMER.DROPOUT"
    assert load_train_config("ytvis19_r50.yaml", [f"{dropout}=0.0"]).get(dropout) == 0
    with pytest.raises(ConfigError, match=rf"^override '{dropout}=0.1': {dropout} 0.1 is not supported"):
        load_train_config("ytvis19_r50.yaml", ["MODEL.MASK_FORMER.DROPOUT=0.1"])


def test_official_config_files_with_base_includes_are_accepted(tmp_path):
    (tmp_path / "Base-COCO-InstanceSegmentation.yaml").write_text(
        "SOLVER:\n  IMS_PER_BATCH: 16\n  BASE_LR: 0.0001\nINPUT:\n  IMAGE_SIZE: 1024\n"
    )
    (tmp_path / "clipvis_R50.yaml").write_text(
        "_BASE_: Base-COCO-InstanceSegmentation.yaml\nMODEL:\n  META_ARCHITECTURE: CLIPVIS\n"
        "  MASK_FORMER:\n    DEC_LAYERS: 10\n"
    )
    config = load_train_config(tmp_path / "clipvis_R50.yaml")
    assert config.get("SOLVER.IMS_PER_BATCH") == 16 and config.model_config().decoder_layers == 9


def test_autoscale_keeps_epochs_when_processes_or_batch_change():
    config = load_train_config("lvis_r50.yaml")  # batch 8 on 4 processes
    schedule = autoscale(config, world_size=8)
    assert schedule.global_batch == 16 and schedule.base_lr == pytest.approx(2e-4)
    assert schedule.max_iter == 184375 and schedule.steps == (163889, 177546)
    config = load_train_config("lvis_r50.yaml", ["SOLVER.IMS_PER_BATCH=4"])
    schedule = autoscale(config, world_size=1)
    assert schedule.global_batch == 4 and schedule.base_lr == pytest.approx(5e-5) and schedule.max_iter == 737500
    config = load_train_config("lvis_r50.yaml")
    schedule = autoscale(config, world_size=1, enabled=False)
    assert (schedule.global_batch, schedule.base_lr, schedule.max_iter) == (8, 1e-4, 368750)
    # Values typed on the command line are meant for this run: taken as written, the config file's are scaled.
    config = load_train_config("lvis_r50.yaml", ["SOLVER.MAX_ITER=5000", "SOLVER.BASE_LR=2e-5"])
    schedule = autoscale(config, world_size=1)
    assert (schedule.global_batch, schedule.base_lr, schedule.max_iter) == (2, 2e-5, 5000)
    assert schedule.steps == (4 * 327778, 4 * 355092)  # the file's, scaled to the batch of 2


def test_an_official_config_file_is_not_autoscaled_and_says_what_its_image_test_set_needs(tmp_path):
    """The official files do not set SOLVER.REFERENCE_WORLD_SIZE (detectron2's default 0: no scaling): the official
    command (SOLVER.IMS_PER_BATCH 8 on 4 GPUs) trains with LR 1e-4 for 368,750 iterations, not half / twice that.
    Their image test set lvis_v1_val is one line saying what to add."""
    from clipvis.cli.train.config import check_evaluation_data

    (tmp_path / "Base-COCO-InstanceSegmentation.yaml").write_text(
        "SOLVER:\n  IMS_PER_BATCH: 16\n  BASE_LR: 0.0001\n  MAX_ITER: 368750\n  STEPS: (327778, 355092)\n"
        'DATASETS:\n  TRAIN: ("lvis_v1_train_norare",)\n  TEST: ("lvis_v1_val",)\nTEST:\n  EVAL_PERIOD: 10000\n'
    )
    (tmp_path / "clipvis_R50.yaml").write_text("_BASE_: Base-COCO-InstanceSegmentation.yaml\n")
    for overrides, world, batch in ((["SOLVER.IMS_PER_BATCH=8"], 4, 8), ([], 4, 16), ([], 1, 16)):
        config = load_train_config(tmp_path / "clipvis_R50.yaml", overrides)
        schedule = autoscale(config, world)
        assert (schedule.global_batch, schedule.base_lr, schedule.max_iter, schedule.steps) == (
            batch, 1e-4, 368750, (327778, 355092)), (overrides, world)
    with pytest.raises(ConfigError, match=re.escape("'lvis_v1_val' is an image test set, which clipvis does not "
                                                    "evaluate during training")) as raised:
        check_evaluation_data(config, schedule.eval_period)
    assert "add TEST.EVAL_PERIOD=0" in str(raised.value)
    config = load_train_config(tmp_path / "clipvis_R50.yaml", ["TEST.EVAL_PERIOD=0"])
    check_evaluation_data(config, autoscale(config, 4).eval_period)
    for name in SHIPPED_CONFIGS:  # the shipped ones keep the official 4-process reference
        assert autoscale(load_train_config(name), 8).global_batch == 16, name


def test_a_test_set_error_names_the_override_that_works_also_when_test_data_is_given(tmp_path):
    """CLIPVIS.TEST_DATA is evaluated besides DATASETS.TEST's names, not instead of them: an official config's test
    set clipvis cannot evaluate stays an error with TEST_DATA given, and its advice is the command line that runs
    (DATASETS.TEST=[] with TEST_DATA), not TEST_DATA alone, which repeated the error."""
    from clipvis.cli.train.config import check_evaluation_data

    from ..commands.test_train import write_ytvis

    gt, frames = write_ytvis(tmp_path / "ytvis", num_videos=1, length=1)
    test_data = f"CLIPVIS.TEST_DATA=[{{json: {gt}, frames: {frames}}}]"
    for test_set in ("fidelity_case1", "lvis_v1_val"):
        (tmp_path / "official.yaml").write_text(f"DATASETS:\n  TEST: [{test_set}]\nTEST:\n  EVAL_PERIOD: 1\n")
        for given in ([], [test_data]):
            config = load_train_config(tmp_path / "official.yaml", given)
            with pytest.raises(ConfigError) as raised:
                check_evaluation_data(config, 1)
            message = str(raised.value)
            if given:
                assert "add DATASETS.TEST=[] to evaluate on CLIPVIS.TEST_DATA alone (it is evaluated besides" in message
            else:
                assert "DATASETS.TEST=[] CLIPVIS.TEST_DATA=[{json: GT.json, frames: folder}]" in message, message
            assert "TEST.EVAL_PERIOD=0" in message and "\n" not in message
        check_evaluation_data(load_train_config(tmp_path / "official.yaml", [test_data, "DATASETS.TEST=[]"]), 1)


def test_worker_processes_give_the_same_batches_as_the_main_process(tmp_path):
    from clipvis.cli.train.data import build_loader

    ann, images = write_coco(tmp_path, num_images=3)
    records, _ = read_annotation_file(ann, images)
    dataset = TrainDataset(records, AugmentationConfig(kind="lsj", image_size=48, min_scale=0.5, max_scale=1.5), 5)
    batches = []
    for workers in (0, 2):
        loader = iter(build_loader(dataset, StreamBatchSampler(len(records), 2, seed=5), workers, divisibility=16))
        batches.append([next(loader) for _ in range(3)])
    for a, b in zip(*batches, strict=True):
        assert a.positions == b.positions and a.image_sizes == [(48, 48), (48, 48)]
        assert a.images.equal(b.images) and all(x.equal(y) for x, y in zip(a.masks, b.masks, strict=True))


def test_registered_datasets_are_found_under_the_data_root(tmp_path):
    """COCO 2017, LVIS v1 (coco_url file names; the no-rare file is built on first use) and YouTube-VIS 2019 train
    in the official layout under one data root."""
    import cv2

    from clipvis.cli.train.sources import load_sources

    root = tmp_path / "datasets"
    (root / "coco" / "train2017").mkdir(parents=True)
    (root / "coco" / "annotations").mkdir()
    (root / "lvis").mkdir()
    image, masks = render_shapes(0)
    cv2.imwrite(str(root / "coco" / "train2017" / "000000000001.jpg"), image)
    segmentation = rle.encode(masks[0].astype(bool))
    coco = {"images": [{"id": 1, "file_name": "000000000001.jpg", "height": SIZE, "width": SIZE}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": segmentation}]}
    (root / "coco" / "annotations" / "instances_train2017.json").write_text(json.dumps(coco))
    lvis = {"images": [{"id": 1, "coco_url": "http://images.cocodataset.org/train2017/000000000001.jpg",
                        "height": SIZE, "width": SIZE}],
            "categories": [{"id": 1, "frequency": "f"}, {"id": 2, "frequency": "r"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": segmentation},
                            {"id": 2, "image_id": 1, "category_id": 2, "segmentation": segmentation}]}
    (root / "lvis" / "lvis_v1_train.json").write_text(json.dumps(lvis))
    frames = root / "ytvis2019" / "train" / "JPEGImages" / "v1"
    frames.mkdir(parents=True)
    cv2.imwrite(str(frames / "00000.jpg"), image)
    ytvis = {"videos": [{"id": 1, "width": SIZE, "height": SIZE, "length": 1, "file_names": ["v1/00000.jpg"]}],
             "annotations": [{"id": 1, "video_id": 1, "category_id": 3, "iscrowd": 0, "segmentations": [segmentation]}],
             "categories": [{"id": 3, "name": "x"}]}
    (root / "ytvis2019" / "train.json").write_text(json.dumps(ytvis))

    messages = []
    sources = load_sources(["coco_2017_train", "lvis_v1_train_norare", "ytvis_2019_train"], [], root, True,
                           messages.append)
    assert [s.is_video for s in sources] == [False, False, True]
    assert all(len(s.records) == 1 for s in sources)
    assert sources[1].records[0].frames[0].path == root / "coco" / "train2017" / "000000000001.jpg"
    assert [i.category_id for i in sources[1].records[0].frames[0].instances] == [1]  # the rare one is removed
    assert (root / "lvis" / "lvis_v1_train_norare.json").is_file() and messages
    with pytest.raises(Exception, match="unknown training dataset"):
        load_sources(["imagenet"], [], root, True)


def test_the_data_root_of_a_run_is_the_first_that_holds_its_registered_datasets(tmp_path):
    """README "Train": without --data-root, the first of $CLIPVIS_DATASETS, $DETECTRON2_DATASETS and ./datasets that
    holds every registered dataset DATASETS.TRAIN / DATASETS.TEST name (a set but empty $CLIPVIS_DATASETS took it)."""
    from clipvis.cli.train.sources import train_data_root

    mine, d2 = tmp_path / "mine", tmp_path / "d2"
    (mine / "coco" / "train2017").mkdir(parents=True)  # COCO here, but not YouTube-VIS
    (mine / "coco" / "annotations").mkdir()
    (mine / "coco" / "annotations" / "instances_train2017.json").write_text("{}")
    for root in (d2,):
        (root / "coco" / "train2017").mkdir(parents=True)
        (root / "coco" / "annotations").mkdir()
        (root / "coco" / "annotations" / "instances_train2017.json").write_text("{}")
        (root / "ytvis2019" / "train" / "JPEGImages").mkdir(parents=True)
        (root / "ytvis2019" / "train.json").write_text("{}")
    environ = {"CLIPVIS_DATASETS": str(mine), "DETECTRON2_DATASETS": str(d2)}
    assert train_data_root(None, ["coco_2017_train"], environ) == mine
    assert train_data_root(None, ["coco_2017_train", "ytvis_2019_train"], environ) == d2
    assert train_data_root(None, ["coco_2017_train", "lvvis_val"], environ) == mine  # in none: the first set
    assert train_data_root(None, [], {**environ, "CLIPVIS_DATASETS": str(tmp_path / "nonexistent")}) == d2
    assert train_data_root(tmp_path / "given", ["ytvis_2019_train"], environ) == tmp_path / "given"


def test_segment_coco_json_of_a_video_trains_without_extracted_frames(tmp_path):
    """segment's coco.json for a video input names frames that were never extracted; it records the source video,
    and training decodes each annotated frame from it."""
    import av

    from clipvis.cli.results import TrackResult, VideoInfo
    from clipvis.cli.train.data import read_frame
    from clipvis.cli.writers import CocoWriter

    video_path = tmp_path / "clip.mp4"
    shown = []
    with av.open(str(video_path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv444p"
        for t in range(3):
            image, masks = render_shapes(t)
            shown.append((image, masks))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    video = VideoInfo(video_id=1, source=str(video_path), stem="clip", height=SIZE, width=SIZE, fps=10.0,
                      frame_stride=1, frame_indices=[0, 1, 2], file_names=[f"clip/{t:05d}.jpg" for t in range(3)])
    tracks = [TrackResult(1, 1, 0.9, [rle.encode(masks[0].astype(bool)) for _, masks in shown])]
    path = CocoWriter().write(tmp_path / "coco.json", video, tracks, ["box"])
    assert json.loads(path.read_text())["video_sources"] == [{"video_id": 1, "name": "clip", "source": str(video_path)}]

    records, warnings = read_annotation_file(path, tmp_path / "no-images")
    assert warnings == [] and len(records) == 3
    for t, record in enumerate(records):
        (frame,) = record.frames
        assert frame.source_video == video_path and frame.frame_index == t and not frame.path.exists()
        decoded = read_frame(frame).astype(int)
        assert np.abs(decoded - shown[t][0]).mean() < 3  # the frame itself, decoded from the video
        np.testing.assert_array_equal(rle.decode(frame.instances[0].segmentation), shown[t][1][0].astype(bool))


def _segmented_clip(tmp_path: Path) -> tuple[Path, VideoInfo, list[TrackResult]]:
    """What segment records of a 2-frame video `clip.mp4` (written, not decodable: decoded only when a sample is
    drawn) with one track: (the video's path, its VideoInfo, its TrackResults)."""
    from clipvis.cli.results import TrackResult, VideoInfo

    video_path = tmp_path / "clip.mp4"
    video_path.write_bytes(b"a video")
    video = VideoInfo(video_id=1, source=str(video_path), stem="clip", height=SIZE, width=SIZE, fps=10.0,
                      frame_stride=1, frame_indices=[0, 1], file_names=["clip/00000.jpg", "clip/00001.jpg"])
    tracks = [TrackResult(1, 1, 0.9, [rle.encode(render_shapes(t)[1][0].astype(bool)) for t in range(2)])]
    return video_path, video, tracks


def test_images_folder_need_not_exist_where_every_frame_comes_from_the_recorded_video(tmp_path):
    """README's `--data corrected/ytvis.json --images frames/` failed as written ("frames: image/frame folder not
    found") though every frame is decoded from the video segment recorded; a COCO file of images still needs it."""
    from clipvis.cli.train.sources import load_sources
    from clipvis.cli.writers import CocoWriter, YtvisWriter

    video_path, video, tracks = _segmented_clip(tmp_path)
    for writer, name in ((YtvisWriter(), "ytvis.json"), (CocoWriter(), "coco.json")):
        path = writer.write(tmp_path / name, video, tracks, ["box"])
        (source,) = load_sources([], [{"json": str(path), "images": str(tmp_path / "frames")}], tmp_path, True)
        assert {frame.source_video for record in source.records for frame in record.frames} == {video_path}
    video_path.unlink()  # frames from nowhere: the video gone is named, and where frames were looked for (the
    # folder alone was blamed)
    for name, field in (("ytvis.json", "videos[].source"), ("coco.json", "video_sources[].source")):
        with pytest.raises(TrainDataError) as error:
            load_sources([], [{"json": str(tmp_path / name), "images": str(tmp_path / "frames")}], tmp_path, True)
        assert str(error.value) == (
            f"{video_path}: no such video (or image folder): {tmp_path / name} records its frames as segmented from it "
            f"(moved or deleted since?), and {tmp_path / 'frames'}, where its frames were looked for as images, does "
            f"not exist: write where it is now in the file's {field} (relative to {tmp_path}, or absolute)")
    doc = json.loads((tmp_path / "ytvis.json").read_text())
    doc["videos"].append(dict(doc["videos"][0], id=2, source=str(tmp_path / "other.mp4")))
    (tmp_path / "ytvis.json").write_text(json.dumps(doc))
    with pytest.raises(TrainDataError, match=r"from it \(and 1 other input it records\) \(moved"):
        load_sources([], [{"json": str(tmp_path / "ytvis.json"), "images": str(tmp_path / "frames")}], tmp_path, True)
    ann, _ = write_coco(tmp_path / "plain", num_images=1)
    with pytest.raises(TrainDataError, match="image/frame folder not found"):
        load_sources([], [{"json": str(ann), "images": str(tmp_path / "nowhere")}], tmp_path, True)


def test_an_entry_without_images_reads_every_frame_from_the_recorded_input_or_names_its_file(tmp_path):
    """`--images` is optional where the data records the inputs segment read: an entry without `images` reads its
    frames from them (never from a folder it did not name), and a file whose frames record none is named, with
    what to give for it."""
    from clipvis.cli.train.sources import load_sources
    from clipvis.cli.writers import YtvisWriter

    video_path, video, tracks = _segmented_clip(tmp_path)
    path = YtvisWriter().write(tmp_path / "ytvis.json", video, tracks, ["box"])
    (tmp_path / "clip").mkdir()  # frame images beside the file are not read: no folder was given
    (tmp_path / "clip" / "00000.jpg").write_bytes(b"")
    (source,) = load_sources([], [{"json": str(path)}], tmp_path, True)
    frames = [frame for record in source.records for frame in record.frames]
    assert {frame.source_video for frame in frames} == {video_path} and not any(f.path.is_file() for f in frames)
    video_path.unlink()
    with pytest.raises(TrainDataError) as error:  # videos moved with their labels: how to say where they are now
        load_sources([], [{"json": str(path)}], tmp_path, True)
    assert str(error.value) == (f"{video_path}: no such video (or image folder): {path} records its frames as "
                                "segmented from it (moved or deleted since?): write where it is now in the file's "
                                f"videos[].source (relative to {tmp_path}, or absolute), or give --images FOLDER with "
                                "its frames as images")
    moved = tmp_path / "videos" / "clip.mp4"
    moved.parent.mkdir()
    moved.write_bytes(b"a video")
    document = json.loads(path.read_text())
    document["videos"][0]["source"] = "videos/clip.mp4"  # as the message says: relative to the file's folder
    path.write_text(json.dumps(document))
    (source,) = load_sources([], [{"json": str(path)}], tmp_path, True)
    assert {frame.source_video for record in source.records for frame in record.frames} == {moved}
    ann, _ = write_coco(tmp_path / "plain", num_images=1)
    with pytest.raises(TrainDataError) as error:
        load_sources([], [{"json": str(path), "images": str(tmp_path)}, {"json": str(ann)}], tmp_path, True)
    assert str(error.value) == (f"{ann}: its images record no video or image folder they were read from (only "
                                "segment's ytvis.json and coco.json do): give --images FOLDER for it (one --images "
                                "for each --data, in order: --images '' for a --data file whose inputs it records)")
    with pytest.raises(TrainDataError) as error:  # one --data file: nothing to pair
        load_sources([], [{"json": str(ann)}], tmp_path, True)
    assert str(error.value).endswith("give --images FOLDER for it")


def test_a_video_without_a_recorded_source_among_recorded_ones_is_named(tmp_path):
    """A video added by hand (no `source`) to segment's ytvis.json got an error blaming the whole file ("its frames
    record no video or image folder they were read from (only segment's ytvis.json and coco.json do)"): the videos
    (or coco.json images) lacking one are named now, with what to add."""
    from clipvis.cli.train.sources import load_sources
    from clipvis.cli.writers import CocoWriter, YtvisWriter

    video_path, video, tracks = _segmented_clip(tmp_path)
    path = YtvisWriter().write(tmp_path / "ytvis.json", video, tracks, ["box"])
    document = json.loads(path.read_text())
    hand_added = {key: value for key, value in document["videos"][0].items() if key != "source"}
    document["videos"].append(dict(hand_added, id=2, name="walk"))
    document["annotations"].append(dict(document["annotations"][0], id=2, video_id=2))
    path.write_text(json.dumps(document))
    with pytest.raises(TrainDataError) as error:
        load_sources([], [{"json": str(path)}], tmp_path, True)
    assert str(error.value) == (f"{path}: video 'walk' records no video or image folder it was read from, unlike its "
                                f"other videos: add `source` (the video's path, relative to {tmp_path} or absolute), "
                                "or give --images FOLDER with its frames as images")
    coco = CocoWriter().write(tmp_path / "coco.json", video, tracks, ["box"])
    document = json.loads(coco.read_text())
    document["images"] += [dict(image, id=image["id"] + 10, video_id=2, file_name=f"walk/{image['file_name']}")
                           for image in document["images"]]
    document["annotations"] += [dict(a, id=a["id"] + 10, image_id=a["image_id"] + 10) for a in document["annotations"]]
    coco.write_text(json.dumps(document))
    with pytest.raises(TrainDataError) as error:
        load_sources([], [{"json": str(coco)}], tmp_path, True)
    assert str(error.value) == (f"{coco}: images 'walk/clip/frame_000000.jpg', 'walk/clip/frame_000001.jpg' record no "
                                "video or image folder they were read from, unlike its other images: give them a "
                                "video_id that video_sources records (with the video's path, relative to "
                                f"{tmp_path} or absolute), or give --images FOLDER with their frames as images")


def test_a_custom_file_is_a_video_source_by_its_top_level_keys(tmp_path):
    """The video recipe went to files with "videos" in their first 4096 characters: a COCO file with a class named
    "videos" trained as videos, a YouTube-VIS file with a long "info" first as images. A YouTube-VIS file (top-level
    `videos`) is a video source, a COCO file (`images`) an image one, segment's coco.json of a video too."""
    from clipvis.cli.train.sources import load_sources
    from clipvis.cli.writers import CocoWriter, YtvisWriter

    video_path, video, tracks = _segmented_clip(tmp_path)
    ytvis = YtvisWriter().write(tmp_path / "ytvis.json", video, tracks, ["box"])
    coco = CocoWriter().write(tmp_path / "coco.json", video, tracks, ["videos"])  # a class named "videos"
    long_info = tmp_path / "long_info.json"
    long_info.write_text(json.dumps({"info": {"description": "x" * 5000}, **json.loads(ytvis.read_text())}))
    kinds = {}
    for path in (ytvis, coco, long_info):
        (source,) = load_sources([], [{"json": str(path), "images": str(tmp_path / "frames")}], tmp_path, True)
        kinds[path.name] = source.is_video
    assert kinds == {"ytvis.json": True, "coco.json": False, "long_info.json": True}


def test_a_frame_whose_recorded_source_video_is_missing_names_that_video(tmp_path):
    from clipvis.cli.results import TrackResult, VideoInfo
    from clipvis.cli.train.data import read_frame
    from clipvis.cli.writers import CocoWriter

    video_path = tmp_path / "moved.mp4"  # segment read it; it has been moved or deleted since
    video = VideoInfo(video_id=1, source=str(video_path), stem="clip", height=SIZE, width=SIZE, fps=10.0,
                      frame_stride=1, frame_indices=[0], file_names=["clip/00000.jpg"])
    tracks = [TrackResult(1, 1, 0.9, [rle.encode(render_shapes(0)[1][0].astype(bool))])]
    path = CocoWriter().write(tmp_path / "coco.json", video, tracks, ["box"])
    (record,), _ = read_annotation_file(path, tmp_path / "no-images")
    with pytest.raises(SampleError, match=f"segmented from, {re.escape(str(video_path))}, .* is missing"):
        read_frame(record.frames[0])


def test_images_given_a_file_says_it_is_a_file(tmp_path):
    from clipvis.cli.train.sources import load_sources

    ann, images = write_coco(tmp_path, num_images=1)
    with pytest.raises(TrainDataError, match=f"^{re.escape(str(ann))}: a file, not a folder: --images"):
        load_sources([], [{"json": str(ann), "images": str(ann)}], tmp_path, True)
    # and --data given a folder (an export's folder) said "annotation file not found" of a path that is there
    with pytest.raises(TrainDataError, match=f"^{re.escape(str(images))}: a folder, not a file: --data takes"):
        load_sources([], [{"json": str(images), "images": str(images)}], tmp_path, True)


def test_a_symbolic_link_loop_as_data_or_config_is_said_to_be_one(tmp_path):
    """A symbolic-link loop given to --data was "annotation file not found" (and the command's own path check ended
    in a traceback), to --config "config file not found" (train) and "file not found" (segment, export)."""
    from clipvis.cli.train.sources import load_sources
    from clipvis.model.config import load_config_file

    loop = tmp_path / "loop"
    loop.symlink_to(loop.name)
    with pytest.raises(TrainDataError, match=f"^{re.escape(str(loop))}: symbolic-link loop$"):
        load_sources([], [{"json": str(loop), "images": str(tmp_path)}], tmp_path, True)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(loop))}: a symbolic-link loop, no config file"):
        load_train_config(loop)
    with pytest.raises(ValueError, match=f"^{re.escape(str(loop))}: symbolic-link loop$"):
        load_config_file(loop)


def test_a_folder_as_config_is_said_to_be_one(tmp_path):
    """A folder given to `train --config` was "config file not found and not a shipped config" (and to the model's
    `load_config_file` "config file not found"); a training run's folder says how to continue that run."""
    from clipvis.model.config import load_config_file

    with pytest.raises(ValueError, match=f"^{re.escape(str(tmp_path))}: a folder, not a config file$"):
        load_config_file(tmp_path)
    with pytest.raises(ConfigError, match=f"^{re.escape(str(tmp_path))}: a folder, not a config file$"):
        load_train_config(tmp_path)
    (tmp_path / "config.yaml").write_text("MODEL: {}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: a folder, not a config file (to continue the run in "
                                                    f"it: --output-dir {tmp_path} --resume)")):
        load_train_config(tmp_path)


@pytest.mark.parametrize("container", ["mpegts", "mp4"])
def test_training_decodes_a_video_s_frames_as_segment_numbers_them(tmp_path, container):
    """OpenCV's frame seek numbered an MPEG-TS file's frames otherwise than segment (PyAV): 21 of 150 frames of a
    recording with B-frames were other frames, silently. Training now reads frame n as segment's reader does."""
    import av

    from clipvis.cli.train.data import read_frame
    from clipvis.cli.train.records import FrameRecord
    from clipvis.cli.video_io import VideoFrameSeeker, VideoReader

    path = tmp_path / f"long.{'ts' if container == 'mpegts' else 'mp4'}"
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream("libx264", rate=25, options={"g": "60", "bf": "3"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for t in range(90):
            image = np.zeros((48, 64, 3), np.uint8)
            image[..., 0], image[..., 1] = (t * 7) % 256, (t * 13) % 256
            image[20:30, (t * 3) % 44 : (t * 3) % 44 + 20] = 255
            output.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        output.mux(stream.encode())
    expected = [image for _, image in VideoReader(path)]
    seeker = VideoFrameSeeker()
    for index in [*range(0, 90, 7), 89, 3, 88]:
        frame = FrameRecord(tmp_path / "not_extracted.jpg", 48, 64, source_video=path, frame_index=index)
        np.testing.assert_array_equal(read_frame(frame, seeker), expected[index], err_msg=f"frame {index}")
    with pytest.raises(SampleError, match="no frame 90"):
        read_frame(FrameRecord(tmp_path / "x.jpg", 48, 64, source_video=path, frame_index=90), seeker)


def test_a_video_frame_whose_picture_cannot_be_told_is_a_skipped_sample_not_a_traceback(tmp_path, synth, monkeypatch):
    """Training a palette (pal8) video ended in a traceback out of the data loader (the seeker's picture digest took
    the (image, palette) pair PyAV gives such a frame for an array): it reads its frames now, and any failure of the
    digest is the frame's skipped sample."""

    from clipvis.cli import video_io
    from clipvis.cli.train.data import read_frame
    from clipvis.cli.train.records import FrameRecord

    path = synth.write_palette_video(tmp_path / "palette.avi", 4)
    expected = [image for _, image in video_io.VideoReader(path)]
    frame = FrameRecord(tmp_path / "not_extracted.jpg", 48, 64, source_video=path, frame_index=2)
    np.testing.assert_array_equal(read_frame(frame), expected[2])

    def unreadable(pixel_format, width):
        raise ValueError(f"no rows for {pixel_format.name}")

    monkeypatch.setattr(video_io.seeking, "_first_plane_row_bytes", unreadable)
    with pytest.raises(SampleError, match=r"palette\.avi: skipped frame 2 .*cannot read the pictures of its pal8"):
        read_frame(frame)


def test_segment_coco_json_of_an_image_folder_reads_its_frames_from_that_folder(tmp_path):
    """The coco.json of an image-folder input names its frames <folder name>/<image>: with --images the folder
    itself (or any other), training looked for <folder>/<folder name>/<image>. It reads them from the recorded
    source folder when they are not found under --images."""
    from clipvis.cli.results import TrackResult, VideoInfo
    from clipvis.cli.train.data import read_frame
    from clipvis.cli.writers import CocoWriter

    folder = tmp_path / "imgs"
    folder.mkdir()
    shown = [render_shapes(t) for t in range(2)]
    for t, (image, _) in enumerate(shown):
        cv2.imwrite(str(folder / f"img_{t}.png"), image[:, :, ::-1])
    video = VideoInfo(video_id=1, source=str(folder), stem="imgs", height=SIZE, width=SIZE, fps=30.0,
                      frame_stride=1, frame_indices=[0, 1], file_names=["imgs/img_0.png", "imgs/img_1.png"],
                      kind="images")
    tracks = [TrackResult(1, 1, 0.9, [rle.encode(masks[0].astype(bool)) for _, masks in shown])]
    path = CocoWriter().write(tmp_path / "coco.json", video, tracks, ["box"])
    records, warnings = read_annotation_file(path, folder)  # the folder itself as --images
    assert warnings == [] and len(records) == 2
    for t, record in enumerate(records):
        np.testing.assert_array_equal(read_frame(record.frames[0]), shown[t][0])


def test_training_reads_frames_as_segment_read_them_animated_webp_and_image_folders_of_mixed_sizes(tmp_path, synth):
    """Training read every source file with FFmpeg: an animated WebP (named .webp, or .gif as GIF sites serve them),
    which segment reads through Pillow, had no frame to train on (nor has a GIF whose frames FFmpeg joins, beyond its
    first). An image folder's image of another size, which
    segment resized to the size most of the folder's images have, was skipped ("skipped image of size 40x30, the
    annotations say 40x24", naming a path under --images that does not exist); so was a video's frame after a change
    of size."""
    from PIL import Image

    from clipvis.cli.inputs import discover_inputs
    from clipvis.cli.train.data import read_frame
    from clipvis.cli.train.records import FrameRecord
    from clipvis.cli.video_io import VideoFrameSeeker, open_reader

    def segment_frames(path):
        return [image for _, image in open_reader(discover_inputs([str(path)])[0])]

    images = [Image.fromarray(synth.bar_frame(i, 24, 40)) for i in range(4)]
    seeker = VideoFrameSeeker()
    for name in ("reaction.gif", "reaction.webp"):
        path = tmp_path / name
        images[0].save(path, format="WEBP", save_all=True, append_images=images[1:], duration=100, lossless=True)
        for index, expected in enumerate(segment_frames(path)):
            frame = FrameRecord(tmp_path / "images" / "x.jpg", 24, 40, source_video=path, frame_index=index)
            np.testing.assert_array_equal(read_frame(frame, seeker), expected)
    plain = tmp_path / "plain.gif"  # no extension block: FFmpeg read its 4 frames as one, so segment does not
    noise = np.random.default_rng(0)
    pictures = [Image.fromarray(noise.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(4)]
    pictures[0].save(plain, save_all=True, append_images=pictures[1:])
    expected = segment_frames(plain)
    assert len(expected) == 4
    for index in (3, 0, 2):
        frame = FrameRecord(tmp_path / "images" / "x.jpg", 16, 16, source_video=plain, frame_index=index)
        np.testing.assert_array_equal(read_frame(frame, seeker), expected[index])

    folder = tmp_path / "seq"
    synth.write_images(folder, ["1.png", "2.png"], height=24, width=40)
    synth.write_images(folder, ["3.png"], height=30, width=40)
    for index, expected in enumerate(segment_frames(folder)):
        name = tmp_path / "images" / "seq" / f"{index + 1}.png"  # --images without them: read from the folder
        frame = FrameRecord(name, 24, 40, source_video=folder, frame_index=index)
        np.testing.assert_array_equal(read_frame(frame, seeker), expected)
    odd_first = tmp_path / "odd"  # the odd image first: the size most images have is the annotations' (segment's)
    synth.write_images(odd_first, ["1.png"], height=30, width=40)
    synth.write_images(odd_first, ["2.png", "3.png"], height=24, width=40)
    expected = segment_frames(odd_first)
    assert {image.shape for image in expected} == {(24, 40, 3)}
    for index, name in enumerate(("1.png", "2.png", "3.png")):
        frame = FrameRecord(tmp_path / "images" / "odd" / name, 24, 40, source_video=odd_first, frame_index=index)
        np.testing.assert_array_equal(read_frame(frame, seeker), expected[index])

    first = synth.write_bar_video(tmp_path / "a.ts", 5, pts=range(5), time_base=Fraction(1, 25))
    second = synth.write_bar_video(tmp_path / "b.ts", 5, width=32, height=24, pts=range(5, 10),
                                   time_base=Fraction(1, 25))
    joined = tmp_path / "resized.ts"  # two recordings joined: the second's frames smaller
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    expected = segment_frames(joined)
    assert len(expected) == 10 and {image.shape for image in expected} == {(48, 64, 3)}
    frame = FrameRecord(tmp_path / "images" / "resized" / "00007.jpg", 48, 64, source_video=joined, frame_index=7)
    np.testing.assert_array_equal(read_frame(frame, seeker), expected[7])
    other = FrameRecord(tmp_path / "images" / "x.jpg", 24, 40, source_video=joined, frame_index=7)
    with pytest.raises(SampleError, match=rf"^{re.escape(str(joined))}: skipped frame 7 of size 64x48, the annotations "
                                          "say 40x24$"):  # the file read, not a path under --images
        read_frame(other, seeker)


def mask_iou(mask: np.ndarray, other: np.ndarray) -> float:
    a, b = mask.astype(bool), other.astype(bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("kind", ["lsj", "shortest_edge"])
def test_polygon_annotations_are_transformed_then_rasterized(kind):
    """As detectron2's mappers: a polygon's coordinates follow the flip, resize and crop and are drawn at the output
    size, so an upscaled polygon keeps its straight edges where a nearest-neighbour bitmask turns to steps."""
    from pycocotools import mask as coco_mask

    triangle = np.array([[3.0, 4.0], [37.0, 9.0], [12.0, 35.0]])
    polygon = [triangle.reshape(-1).tolist()]
    mask = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygon, 40, 40)))
    fine = np.full((320, 320, 3), 30, np.uint8)  # the triangle drawn at 8x and averaged down: true sub-pixel edges
    cv2.fillPoly(fine, [np.round(triangle * 8 * 16).astype(np.int32)], (230, 30, 30), shift=4)
    image = cv2.resize(fine, (40, 40), interpolation=cv2.INTER_AREA)
    if kind == "lsj":
        config = AugmentationConfig(kind="lsj", image_size=160, min_scale=1.2, max_scale=2.0)
    else:
        config = AugmentationConfig(kind="shortest_edge", min_sizes=(200,), max_size=400)
    no_bitmasks = np.zeros((0, *mask.shape), np.uint8)  # the one instance is a polygon
    flipped, polygon_ious, bitmap_ious = 0, [], []
    for seed in range(8):
        out_image, out_polygon, _ = augment_instances(image, no_bitmasks, config, np.random.default_rng(seed),
                                                      [[triangle]])
        _, out_bitmap, _ = augment_instances(image, mask[None], config, np.random.default_rng(seed))
        assert out_polygon.shape == out_bitmap.shape
        red = out_image[..., 0] > 130  # the triangle's true outline, upscaled bilinearly
        if red.sum() > 200:
            polygon_ious.append(mask_iou(out_polygon[0], red))
            bitmap_ious.append(mask_iou(out_bitmap[0], red))
            flipped += bool(red[:, : red.shape[1] // 2].sum() < red[:, red.shape[1] // 2 :].sum())
    assert len(polygon_ious) >= 4 and min(polygon_ious) > 0.93, polygon_ious
    assert np.mean(polygon_ious) > np.mean(bitmap_ious), (polygon_ious, bitmap_ious)
    assert flipped >= 1  # some draws flipped the image, and the polygon followed
    # Instances without polygons (RLE annotations) keep the bitmask path.
    _, mixed, _ = augment_instances(image, mask[None], config, np.random.default_rng(1), [None, [triangle]])
    _, bitmap, _ = augment_instances(image, mask[None], config, np.random.default_rng(1))
    np.testing.assert_array_equal(mixed[0], bitmap[0])
    assert mixed.shape[0] == 2 and mixed[1].any()
    with pytest.raises(ValueError, match="2 bitmasks for 1 instances without polygons"):
        augment_instances(image, np.stack([mask, mask]), config, np.random.default_rng(1), [None, [triangle]])


@pytest.mark.parametrize(("size", "new"), [((72, 128), (80, 142)), ((72, 128), (30, 53)), ((31, 47), (64, 95))])
def test_masks_are_resized_on_the_pixels_pil_nearest_picks(size, new) -> None:
    """detectron2 resizes bitmask GT with PIL NEAREST; cv2's INTER_NEAREST samples other source pixels, shifting masks
    by up to a pixel against the (PIL bilinear) image."""
    from PIL import Image

    from clipvis.cli.train.data import _resize

    rng = np.random.default_rng(0)
    masks = (rng.random((600, *size)) > 0.5).astype(np.uint8)  # more than one cv2 call's 512 channels
    _, resized = _resize(np.zeros((*size, 3), np.uint8), masks, *new)
    for mask, got in zip(masks[::97], resized[::97], strict=True):
        expected = np.asarray(Image.fromarray(mask).resize((new[1], new[0]), Image.NEAREST))
        assert np.array_equal(got, expected)


class _Fraction:
    """An RNG whose every uniform draw is the same fraction of its range (an LSJ crop placed at will)."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def uniform(self, low: float = 0.0, high: float = 1.0) -> float:
        return low + (high - low) * self.fraction


def test_a_polygon_too_small_for_a_pixel_stays_an_instance_as_in_the_official_lsj_mapper(tmp_path):
    """COCOInstanceNewBaselineDatasetMapper keeps a polygon instance whose box inside the crop is non-empty (detectron2
    filter_empty_instances) before drawing it: a 2x2 px object at LSJ scale 0.1 is a target with an empty mask (it was
    dropped: LVIS has many). One outside the crop is dropped; a bitmask (RLE), and any instance of the video stage,
    is kept when it has a pixel, as the official bitmask mappers do."""
    from clipvis.cli.train.data import TrainDataset, augment_instances
    from clipvis.cli.train.records import FrameRecord, InstanceAnnotation, TrainRecord

    image = np.zeros((480, 640, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    small = [300.0, 200.0, 302.0, 200.0, 302.0, 202.0, 300.0, 202.0]
    small_mask = np.zeros((480, 640), bool)
    small_mask[200:202, 300:302] = True
    frame = FrameRecord(tmp_path / "a.png", 480, 640, [InstanceAnnotation([small], 1, "polygon"),
                                                        InstanceAnnotation(rle.encode(small_mask), 1, "rle")])
    lsj = AugmentationConfig(kind="lsj", image_size=1024, min_scale=0.1, max_scale=0.1, flip=False)
    sample = TrainDataset([TrainRecord("a", [frame])], lsj)[0, 0]
    assert tuple(sample.masks.shape) == (1, 1024, 1024) and not sample.masks.any()  # the polygon, its mask empty
    # At scale 2 (1536 x 2048) the 1024 crop at the top left leaves out an object at the bottom right, and the
    # crop at the bottom right the other; what is kept has pixels then.
    big = AugmentationConfig(kind="lsj", image_size=1024, min_scale=2.0, max_scale=2.0, flip=False)
    corner = [np.array([[630.0, 470.0], [639.0, 470.0], [639.0, 479.0]])]
    polygons = [[np.reshape(small, (-1, 2))], corner]
    for fraction, kept in ((0.0, [True, False]), (1.0, [False, True])):
        _, masks, keep = augment_instances(image, np.zeros((0, 480, 640), np.uint8), big, _Fraction(fraction),
                                           polygons)
        assert keep.tolist() == kept and masks.reshape(2, -1).any(1).tolist() == kept
    video = AugmentationConfig(kind="shortest_edge", min_sizes=(48,), max_size=1333, flip=False)
    sample = TrainDataset([TrainRecord("a", [frame])], video)[0, 0]
    assert sample.masks.shape[0] == 0  # drawn as bitmasks first (the video mapper): no pixel left


@pytest.mark.parametrize("divisibility", [0, -32])
def test_a_size_divisibility_of_zero_or_less_pads_to_the_batch_size_only_and_trains(tmp_path, tiny_train_config,
                                                                                   divisibility):
    """detectron2's SIZE_DIVISIBILITY 0 (ImageList.from_tensors pads to the batch's largest image only; the model
    copes with any size, as its own padding at inference): it was a ZeroDivisionError in the collation."""
    import torch

    from clipvis.cli.train.data import Collate, Sample

    samples = [Sample(torch.ones(3, h, w, dtype=torch.uint8), torch.ones(1, h, w, dtype=torch.bool), i, f"s{i}")
               for i, (h, w) in enumerate([(50, 67), (61, 43)])]
    batch = Collate(divisibility)(samples)
    assert batch.images.shape == (2, 3, 61, 67) and [m.shape[1:] for m in batch.masks] == [(61, 67)] * 2
    assert Collate(32)(samples).images.shape == (2, 3, 64, 96)

    from ..commands.test_train import train

    data = write_coco(tmp_path / "data", num_images=2)
    config = tiny_train_config(tmp_path, MAX_ITER=2)
    train(config, tmp_path / "run", data, "INPUT.DATASET_MAPPER_NAME=mask_former_instance", "INPUT.MIN_SIZE_TRAIN=[50]",
          "INPUT.MAX_SIZE_TRAIN=80", f"MODEL.MASK_FORMER.SIZE_DIVISIBILITY={divisibility}")
    assert (tmp_path / "run" / "model_0000001.safetensors").is_file()


class _CollectionCost(torch.utils.data.Dataset):
    """One item: the private memory (bytes) a loader worker gains from one full garbage collection."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> int:
        before = _private_dirty_bytes()
        gc.collect()
        return _private_dirty_bytes() - before


def _private_dirty_bytes() -> int:
    with open("/proc/self/smaps_rollup") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("Private_Dirty:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup") or "fork" not in mp.get_all_start_methods(),
                    reason="needs fork and /proc/self/smaps_rollup (Linux 4.14+) to measure a worker's private memory")
def test_loader_workers_collecting_garbage_do_not_copy_the_training_process_objects() -> None:
    """A worker's full collection writes to every object it tracks: with a plain DataLoader each worker copies the
    pages of the process' Python objects (here 400,000 small lists, ~45 MB); the training loader's workers inherit
    them frozen, out of the collector's way."""
    objects = [[i] for i in range(400_000)]
    frozen = gc.get_freeze_count()  # the objects pytest and the imports made (nothing, unless a test froze them)
    plain = next(iter(torch.utils.data.DataLoader(_CollectionCost(), batch_size=None, num_workers=1)))
    shared = next(iter(ForkSharingLoader(_CollectionCost(), batch_size=None, num_workers=1)))
    assert len(objects) == 400_000
    assert plain > 30 << 20, f"a plain loader's worker gained only {plain >> 20} MiB: the premise does not hold here"
    assert shared < 8 << 20, f"the worker gained {shared >> 20} MiB collecting garbage"
    if not frozen:
        assert not gc.get_freeze_count()  # this process' objects are collected as before


def test_objects_the_process_froze_stay_frozen() -> None:
    """The `clipvis` command freezes its imports' objects (clipvis.cli.gc_pause): starting the workers must not
    release them (gc.unfreeze releases every frozen object)."""
    kept = [[i] for i in range(10_000)]
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        next(iter(ForkSharingLoader(_CollectionCost(), batch_size=None, num_workers=1)))
        assert gc.get_freeze_count() >= frozen and len(kept) == 10_000
    finally:
        gc.unfreeze()


def test_an_image_name_no_file_system_takes_is_a_skipped_sample_not_a_traceback(tmp_path):
    """A 5,000-character file_name stopped training mid-run with "File name too long" (README: an unreadable image
    is skipped with one warning line)."""
    from clipvis.cli.train.data import read_frame
    from clipvis.cli.train.records import FrameRecord

    frame = FrameRecord(tmp_path / ("x" * 5000 + ".jpg"), 8, 8, source_video=tmp_path / ("y" * 5000 + ".mp4"))
    with pytest.raises(SampleError, match=r"^.{60}\.\.\..{40}: skipped unreadable image \(File name too long\)$"):
        read_frame(frame)


def _video_gt(tmp_path, names: list[str], frame_indices: list[int] | None, source: str = "clip.mp4") -> tuple:
    """A corrected ytvis.json of a video segment read (its source recorded, no frame extracted), one track."""
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:7] = True
    video = {"id": 1, "height": 8, "width": 10, "length": len(names), "file_names": names, "source": source}
    if frame_indices is not None:
        video["frame_indices"] = frame_indices
    track = {"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0,
             "segmentations": [rle.encode(mask)] * len(names)}
    ann = tmp_path / "ytvis.json"
    ann.write_text(json.dumps({"videos": [video], "categories": [{"id": 1, "name": "box"}], "annotations": [track]}))
    return read_annotation_file(ann, tmp_path / "no_frames")


def test_frames_decoded_from_the_recorded_video_are_the_ones_their_names_number(tmp_path) -> None:
    """Frames were decoded by list position: a name deleted by hand (frame_indices kept) or frame_indices dropped by a
    tool (a --stride 3 run's 00000, 00003, ...) trained every later frame on the next frame's masks, silently."""
    records, _ = _video_gt(tmp_path, ["clip/00000.jpg", "clip/00001.jpg", "clip/00002.jpg", "clip/00004.jpg"],
                           [0, 1, 2, 3, 4])  # 00003 deleted by hand, frame_indices left as segment wrote it
    assert [frame.frame_index for frame in records[0].frames] == [0, 1, 2, 4]
    records, _ = _video_gt(tmp_path, ["clip/00000.jpg", "clip/00003.jpg", "clip/00006.jpg"], None)
    assert [frame.frame_index for frame in records[0].frames] == [0, 3, 6]
    # names that give no number and a frame_indices of another length, or none: which frame is which cannot be told
    for indices in ([0, 1, 2], None):
        with pytest.raises(TrainDataError, match="no video with frames"):
            _video_gt(tmp_path, ["clip/a.jpg", "clip/b.jpg"], indices)


def test_a_relative_recorded_source_is_read_from_the_data_files_folder_first(tmp_path, monkeypatch) -> None:
    """A relative `source` was looked up in the current folder before the annotation file's: a `clip.mp4` there (another
    video) was trained on, silently. The file's folder's is read now (said where the current folder holds another);
    the current folder's only where the file's folder has none (clipvis wrote sources as typed once), with a warning
    giving the path to write."""
    (tmp_path / "ann").mkdir()
    (tmp_path / "cwd").mkdir()
    (tmp_path / "ann" / "clip.mp4").write_bytes(b"the video segment read")
    (tmp_path / "cwd" / "clip.mp4").write_bytes(b"another video")
    monkeypatch.chdir(tmp_path / "cwd")
    names = ["clip/00000.jpg", "clip/00001.jpg"]
    records, warnings = _video_gt(tmp_path / "ann", names, [0, 1])
    assert {frame.source_video for frame in records[0].frames} == {tmp_path / "ann" / "clip.mp4"}
    assert warnings == [f"{tmp_path / 'ann' / 'ytvis.json'}: video 1: source 'clip.mp4' is read from the file's "
                        f"folder, {tmp_path / 'ann' / 'clip.mp4'}, not the current folder's "
                        f"{tmp_path / 'cwd' / 'clip.mp4'} (a relative source is relative to the file's folder)"]
    monkeypatch.chdir(tmp_path / "ann")  # the same file both ways: nothing to say
    assert _video_gt(tmp_path / "ann", names, [0, 1])[1] == []
    monkeypatch.chdir(tmp_path / "cwd")
    (tmp_path / "ann" / "clip.mp4").unlink()  # only the current folder has it: read, and said how to write it
    records, warnings = _video_gt(tmp_path / "ann", names, [0, 1])
    assert {frame.source_video for frame in records[0].frames} == {tmp_path / "cwd" / "clip.mp4"}
    assert warnings == [f"{tmp_path / 'ann' / 'ytvis.json'}: video 1: source 'clip.mp4' is not in the file's folder "
                        f"({tmp_path / 'ann'}); reading the current folder's {tmp_path / 'cwd' / 'clip.mp4'} (a "
                        "relative source is read from the file's folder: write it as '../cwd/clip.mp4', or as an "
                        "absolute path)"]
    # segment's coco.json (video_sources) alike
    (tmp_path / "ann" / "clip.mp4").write_bytes(b"the video segment read")
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:7] = True
    coco = tmp_path / "ann" / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "clip/frame_000000.jpg", "height": 8, "width": 10, "video_id": 1}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": rle.encode(mask),
                         "area": 12, "bbox": [3, 2, 4, 3]}],
        "categories": [{"id": 1, "name": "box"}], "video_sources": [{"video_id": 1, "source": "clip.mp4"}]}))
    records, warnings = read_annotation_file(coco, tmp_path / "no_frames")
    assert records[0].frames[0].source_video == tmp_path / "ann" / "clip.mp4"
    assert len(warnings) == 1 and "video_sources entry of video_id 1: source 'clip.mp4' is read from" in warnings[0]


def test_sources_read_from_the_current_folder_are_one_warning_per_data_file(tmp_path, monkeypatch) -> None:
    """A ytvis.json of an earlier segment (sources as typed, relative to where it ran) trained from that folder gave
    one warning per video, 500 lines for 500 videos, again at every --resume: one line per data file now, the first
    video in full and how many more."""
    (tmp_path / "out").mkdir()
    (tmp_path / "videos").mkdir()
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:7] = True
    videos, tracks = [], []
    for number in (1, 2, 3):
        (tmp_path / "videos" / f"v{number}.mp4").write_bytes(b"a video")
        videos.append({"id": number, "height": 8, "width": 10, "length": 1, "file_names": [f"v{number}/00000.jpg"],
                       "frame_indices": [0], "source": f"videos/v{number}.mp4"})
        tracks.append({"id": number, "video_id": number, "category_id": 1, "iscrowd": 0,
                       "segmentations": [rle.encode(mask)]})
    ann = tmp_path / "out" / "ytvis.json"
    ann.write_text(json.dumps({"videos": videos, "categories": [{"id": 1, "name": "box"}], "annotations": tracks}))
    monkeypatch.chdir(tmp_path)
    records, warnings = read_annotation_file(ann, tmp_path / "no_frames")
    read = [record.frames[0].source_video for record in records]
    assert read == [tmp_path / "videos" / f"v{number}.mp4" for number in (1, 2, 3)]
    assert warnings == [f"{ann}: video 1: source 'videos/v1.mp4' is not in the file's folder ({tmp_path / 'out'}); "
                        f"reading the current folder's {tmp_path / 'videos' / 'v1.mp4'} (and 2 more entries alike) "
                        "(a relative source is read from the file's folder: write it as '../videos/v1.mp4', or as "
                        "an absolute path)"]


def test_a_coco_image_of_a_video_without_frame_index_is_the_frame_its_name_numbers(tmp_path) -> None:
    """An image added to segment's coco.json by hand (`clip/frame_000005.jpg`, no frame_index) was decoded as frame
    0."""
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:7] = True
    document = {
        "images": [{"id": 1, "file_name": "clip/frame_000000.jpg", "height": 8, "width": 10, "video_id": 1,
                    "frame_index": 0},
                   {"id": 2, "file_name": "clip/frame_000005.jpg", "height": 8, "width": 10, "video_id": 1}],
        "annotations": [{"id": k, "image_id": k, "category_id": 1, "iscrowd": 0, "segmentation": rle.encode(mask),
                         "area": 12, "bbox": [3, 2, 4, 3]} for k in (1, 2)],
        "categories": [{"id": 1, "name": "box"}],
        "video_sources": [{"video_id": 1, "source": "clip.mp4"}],
    }
    ann = tmp_path / "coco.json"
    ann.write_text(json.dumps(document))
    records, _ = read_annotation_file(ann, tmp_path / "no_frames")
    assert sorted(record.frames[0].frame_index for record in records) == [0, 5]
    # the name wins over a frame_index that disagrees; a name without a number and no frame_index: skipped, said
    document["images"][0]["frame_index"] = 3
    document["images"][1]["file_name"] = "clip/second.jpg"
    ann.write_text(json.dumps(document))
    records, warnings = read_annotation_file(ann, tmp_path / "no_frames")
    assert [record.frames[0].frame_index for record in records] == [0]
    assert any("skipped image clip/second.jpg: which frame of" in w for w in warnings)


def test_several_data_files_count_classes_by_name_for_repeat_factor_sampling(tmp_path) -> None:
    """File A's id 1 is "person" (9 images), file B's id 1 "unicorn" (1 image) and id 2 "person" (9): pooled by id,
    the unicorn image was counted as a person (factor 1.0 where it is rare) and B's persons as a rarer class."""
    mask = np.zeros((8, 10), bool)
    mask[2:5, 3:7] = True

    def coco(name: str, categories: list[dict], image_categories: list[int]) -> object:
        document = {
            "images": [{"id": k + 1, "file_name": f"{k}.png", "height": 8, "width": 10}
                       for k in range(len(image_categories))],
            "annotations": [{"id": k + 1, "image_id": k + 1, "category_id": c, "iscrowd": 0,
                             "segmentation": rle.encode(mask)} for k, c in enumerate(image_categories)],
            "categories": categories,
        }
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document))
        return path

    shared: dict[str, int] = {}
    a, _ = read_annotation_file(coco("A", [{"id": 1, "name": "person"}], [1] * 9), tmp_path,
                                shared_categories=shared)
    b, _ = read_annotation_file(coco("B", [{"id": 1, "name": "unicorn"}, {"id": 2, "name": "Person"}], [1] + [2] * 9),
                                tmp_path, shared_categories=shared)
    factors = repeat_factors([*a, *b], threshold=0.5)
    assert factors[9] == pytest.approx(math.sqrt(0.5 * 19))  # the unicorn: 1 of 19 images
    assert (factors[:9] == 1.0).all() and (factors[10:] == 1.0).all()  # person: 18 of 19, by name whatever its id


def test_frames_read_from_files_keep_the_recorded_numbers_whatever_their_names(tmp_path) -> None:
    """The name rule is for frames decoded from a video alone (review7): a still image segmented alone (`0042.png`)
    was read as frame 42 of itself and every sample failed; an image folder's ytvis.json with one name deleted by
    hand (frame_indices stale) was dropped whole; an image folder moved away became "a video" and its numbers
    changed (a --resume with the moved data was refused)."""
    from PIL import Image

    Image.new("RGB", (10, 8)).save(tmp_path / "0042.png")
    records, _ = _video_gt(tmp_path, ["0042/0042.png"], [0], source=str(tmp_path / "0042.png"))
    assert [frame.frame_index for frame in records[0].frames] == [0]
    (tmp_path / "frames").mkdir()
    records, _ = _video_gt(tmp_path, ["frames/00001.png", "frames/00003.png"], [0, 1, 2],
                           source=str(tmp_path / "frames"))
    assert [frame.frame_index for frame in records[0].frames] == [0, 1]  # kept, read by name
    records, _ = _video_gt(tmp_path, ["frames/00001.png", "frames/00002.png"], [0, 1],
                           source=str(tmp_path / "moved_away"))
    assert [frame.frame_index for frame in records[0].frames] == [0, 1]


def test_an_animated_image_s_frames_are_the_ones_their_names_number(tmp_path) -> None:
    """Review: an animated WebP or PNG, which segment decodes as a video and names `<stem>/00003.jpg`, had its
    frames numbered by position (a frame deleted by hand moved every later mask); a still keeps its own name."""
    from PIL import Image

    from clipvis.cli.frame_numbers import decoded_from_video

    pictures = [Image.new("RGB", (16, 12), (40 * i, 0, 0)) for i in range(4)]
    animated, still = tmp_path / "anim.webp", tmp_path / "0042.webp"
    pictures[0].save(animated, save_all=True, append_images=pictures[1:], duration=100, lossless=True)
    pictures[0].save(still, lossless=True)
    assert decoded_from_video(animated) and not decoded_from_video(still)
    # a phone's photo with a gain map (a multi-picture JPEG) is one still, as segment reads it (review12)
    photo = tmp_path / "0042.jpg"
    pictures[0].save(photo, format="MPO", save_all=True, append_images=pictures[1:2])
    from PIL import Image as Images

    with Images.open(photo) as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
    assert not decoded_from_video(photo)


def test_a_pre_norm_or_too_few_decoder_layers_is_one_config_error(tmp_path):
    """PRE_NORM true and DEC_LAYERS 1 in a config file ended `clipvis train` with a ValueError traceback."""
    for lines, message in (
        ("MODEL:\n  MASK_FORMER:\n    PRE_NORM: True\n", "PRE_NORM True (a pre-norm transformer decoder) is not "
                                                      "supported"),
        ("MODEL:\n  MASK_FORMER:\n    DEC_LAYERS: 1\n", "MODEL.MASK_FORMER.DEC_LAYERS must be an integer of at least"),
    ):
        (tmp_path / "c.yaml").write_text("_BASE_: " + str(shipped_config_path("ytvis19_r50.yaml")) + "\n" + lines)
        with pytest.raises(ConfigError, match=f"^{re.escape(str(tmp_path / 'c.yaml') + ': ' + message)}"):
            load_train_config(tmp_path / "c.yaml")


def test_large_training_images_give_no_raw_pillow_warning_and_too_large_ones_do_not_blame_the_image_folder(
    tmp_path, monkeypatch
):
    """Aerial or pathology images of 89-179 Mpx printed Pillow's raw DecompressionBombWarning (once per read), and
    above that the refusal blamed --images. Here Pillow's limit is lowered to 200 px: a 256 px image is read
    silently, a 1024 px one is refused as too large, and a run of only such images is not said to be --images'."""
    from PIL import Image

    from clipvis.cli.train.data import read_frame
    from clipvis.cli.train.records import FrameRecord, TrainRecord

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    cv2.imwrite(str(tmp_path / "large.png"), np.zeros((16, 16, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "huge.png"), np.zeros((32, 32, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_frame(FrameRecord(tmp_path / "large.png", 16, 16)).shape == (16, 16, 3)
        with pytest.raises(SampleError, match=re.escape(f"{tmp_path / 'huge.png'}: skipped image too large to decode "
                                                        "safely (1,024 px; the limit is 400 px): downscale it")):
            read_frame(FrameRecord(tmp_path / "huge.png", 32, 32))
    dataset = TrainDataset([TrainRecord("r0", [FrameRecord(tmp_path / "huge.png", 32, 32)])],
                           AugmentationConfig(kind="shortest_edge", min_sizes=(SIZE,), flip=False))
    with pytest.raises(TrainDataError, match="their images too large") as raised:
        dataset[0, 0]
    assert "--images" not in str(raised.value)


def test_a_file_whose_image_entries_all_lack_a_size_blames_the_entries_not_the_annotations(tmp_path):
    """Every image without width/height: the error said "N skipped as malformed; the first: annotation 1: skipped bad
    annotation (no known image_id)", as if the annotations were at fault."""
    ann, images = write_coco(tmp_path, num_images=2)
    data = json.loads(ann.read_text())
    for image in data["images"]:
        del image["width"], image["height"]
    ann.write_text(json.dumps(data))
    count = len(data["annotations"])
    with pytest.raises(TrainDataError) as raised:
        read_annotation_file(ann, images)
    assert str(raised.value) == (
        f"{ann}: no image with a usable (non-crowd) instance mask to train on (of its {count} annotation(s): {count} "
        "on no usable image of the file (image_id): 2 image entries skipped for lacking a usable "
        "id/file_name/height/width (the first: {'id': 1, 'file_name': 'img_0.png'}))")
