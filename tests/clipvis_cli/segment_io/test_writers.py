"""YouTube-VIS, COCO and overlay writers on a synthetic video with synthetic tracks."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from clipvis.cli import rle
from clipvis.cli.atomic import OutputNotWritableError
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.video_io import VideoReader
from clipvis.cli.writers import CocoWriter, OverlayRenderer, OverlayStyle, OverlayVideoWriter, YtvisWriter
from clipvis.cli.writers.overlay import PALETTE, render_threads_for, track_colour, usable_cpus

CATEGORIES = ["cat", "dog", "hot air balloon"]


def box_mask(height: int, width: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def make_results(video_path: Path, stride: int, video_id: int = 1, stem: str = "clip"):
    """VideoInfo + 3 tracks (one absent in frame 0, one with an empty mask) + the true masks."""
    reader = VideoReader(video_path, stride=stride)
    probe = reader.probe()
    indices = [index for index, _ in reader]
    height, width = probe.height, probe.width
    masks = {
        4: [box_mask(height, width, 2 + p, 3, 20 + p, 30) for p in range(len(indices))],
        11: [None] + [box_mask(height, width, 10, 35, 40, 60) for _ in indices[1:]],
        25: [np.zeros((height, width), bool) for _ in indices],
    }
    tracks = [
        TrackResult(4, 2, 0.91, [rle.encode(m) for m in masks[4]]),
        TrackResult(11, 3, 0.42, [None if m is None else rle.encode(m) for m in masks[11]]),
        TrackResult(25, 1, 0.05, [rle.encode(m) for m in masks[25]]),
    ]
    video = VideoInfo(
        video_id=video_id,
        source=str(video_path),
        stem=stem,
        height=height,
        width=width,
        fps=probe.fps,
        frame_stride=stride,
        frame_indices=indices,
        file_names=reader.frame_file_names(stem, indices),
    )
    return video, tracks, masks, reader


def load_res_like(document: dict) -> list[dict]:
    """What YouTube-VIS `ytvos.loadRes` does with the annotations list: check video ids, add areas/bboxes."""
    video_ids = {v["id"] for v in document["videos"]}
    lengths = {v["id"]: len(v["file_names"]) for v in document["videos"]}
    results = json.loads(json.dumps(document["annotations"]))
    for number, ann in enumerate(results, start=1):
        assert ann["video_id"] in video_ids, "Results do not correspond to current coco set"
        assert len(ann["segmentations"]) == lengths[ann["video_id"]]
        ann["areas"] = [coco_mask.area(s) if s else None for s in ann["segmentations"]]
        ann["bboxes"] = [coco_mask.toBbox(s) if s else None for s in ann["segmentations"]]
        ann["id"] = number
    return results


def test_ytvis_file_is_a_valid_results_container(media: dict[str, Path], tmp_path: Path) -> None:
    video, tracks, masks, _ = make_results(media["h264"], stride=2, video_id=7)
    path = YtvisWriter().write(tmp_path / "ytvis.json", video, tracks, CATEGORIES)
    document = json.loads(path.read_text())
    assert set(document) == {"videos", "categories", "annotations"}
    assert document["categories"] == [
        {"id": 1, "name": "cat", "supercategory": "object"},
        {"id": 2, "name": "dog", "supercategory": "object"},
        {"id": 3, "name": "hot air balloon", "supercategory": "object"},
    ]
    [entry] = document["videos"]
    assert entry["id"] == 7 and (entry["height"], entry["width"], entry["length"]) == (48, 64, 6)
    assert entry["file_names"] == [f"clip/{i:05d}.jpg" for i in (0, 2, 4, 6, 8, 10)]
    assert entry["fps"] == 25.0 and entry["frame_stride"] == 2 and entry["source"] == str(media["h264"])
    assert entry["frame_indices"] == [0, 2, 4, 6, 8, 10]
    annotations = document["annotations"]
    assert [set(a) for a in annotations] == [{"video_id", "category_id", "score", "segmentations"}] * 3
    assert [(a["video_id"], a["category_id"], a["score"]) for a in annotations] == [
        (7, 2, 0.91), (7, 3, 0.42), (7, 1, 0.05),
    ]
    assert annotations[1]["segmentations"][0] is None
    results = load_res_like(document)
    assert results[0]["areas"][0] == masks[4][0].sum()
    for ann, track_id in zip(annotations, (4, 11, 25), strict=True):
        for segmentation, mask in zip(ann["segmentations"], masks[track_id], strict=True):
            if mask is None:
                continue
            decoded = coco_mask.decode(segmentation)
            assert decoded.shape == (48, 64)
            np.testing.assert_array_equal(decoded.astype(bool), mask)


def test_ytvis_write_many_numbers_videos_and_rejects_duplicates(media: dict[str, Path], tmp_path: Path) -> None:
    first = make_results(media["h264"], stride=3, video_id=1, stem="a")
    second = make_results(media["odd_mpeg4"], stride=1, video_id=2, stem="b")
    document = YtvisWriter().build([(first[0], first[1]), (second[0], second[1])], CATEGORIES)
    assert [v["id"] for v in document["videos"]] == [1, 2]
    assert [v["width"] for v in document["videos"]] == [64, 97]
    assert [a["video_id"] for a in document["annotations"]] == [1, 1, 1, 2, 2, 2]
    assert load_res_like(document)[3]["segmentations"][0]["size"] == [61, 97]
    with pytest.raises(ValueError, match="duplicate video ids"):
        YtvisWriter().write_many(tmp_path / "x.json", [(first[0], first[1]), (first[0], first[1])], CATEGORIES)
    assert not (tmp_path / "x.json").exists()


def test_writers_reject_inconsistent_tracks(media: dict[str, Path], tmp_path: Path) -> None:
    video, tracks, _, _ = make_results(media["h264"], stride=2)
    short = TrackResult(1, 1, 0.5, tracks[0].segmentations[:-1])
    bad_category = TrackResult(1, 4, 0.5, tracks[0].segmentations)
    wrong_size = TrackResult(1, 1, 0.5, [rle.encode(np.ones((10, 10), bool))] * video.num_frames)
    for track, message in [(short, "5 segmentations"), (bad_category, "outside 1..3"), (wrong_size, "size")]:
        for writer in (YtvisWriter(), CocoWriter()):
            with pytest.raises(ValueError, match=message):
                writer.write(tmp_path / "out.json", video, [track], CATEGORIES)
    assert list(tmp_path.iterdir()) == []


def test_coco_file_loads_in_pycocotools_with_track_ids(media: dict[str, Path], tmp_path: Path) -> None:
    video, tracks, masks, _ = make_results(media["h264"], stride=2, stem="clip")
    path = CocoWriter().write(tmp_path / "coco.json", video, tracks, CATEGORIES)
    coco = COCO(str(path))
    images = coco.loadImgs(coco.getImgIds())
    assert len(images) == video.num_frames == 6
    assert [img["file_name"] for img in images] == [f"clip/frame_{i:06d}.jpg" for i in (0, 2, 4, 6, 8, 10)]
    assert {(img["width"], img["height"]) for img in images} == {(64, 48)}
    annotations = coco.loadAnns(coco.getAnnIds())
    # track 4: every frame; track 11: absent in frame 0; track 25: empty masks -> no annotations
    assert len(annotations) == 6 + 5
    assert sorted({a["track_id"] for a in annotations}) == [4, 11]
    assert len({a["id"] for a in annotations}) == len(annotations)
    for ann in annotations:
        assert ann["attributes"] == {"track_id": ann["track_id"], "keyframe": True, "occluded": False}
        assert ann["iscrowd"] == 0 and isinstance(ann["segmentation"]["counts"], str)
        position = ann["image_id"] - 1
        expected = masks[ann["track_id"]][position]
        np.testing.assert_array_equal(coco.annToMask(ann).astype(bool), expected)
        ys, xs = np.nonzero(expected)
        assert ann["area"] == expected.sum()
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert ann["category_id"] == {4: 2, 11: 3}[ann["track_id"]]
        assert ann["score"] == {4: 0.91, 11: 0.42}[ann["track_id"]]
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == CATEGORIES
    assert coco.getAnnIds(imgIds=[1]) and len(coco.getAnnIds(imgIds=[1])) == 1


def test_coco_image_folder_names_and_multi_video_ids(tmp_path: Path, synth) -> None:
    synth.write_images(tmp_path / "seq", ["1.png", "2.png", "10.png"], height=24, width=40)
    empty = {"size": [24, 40], "counts": rle.encode(np.ones((24, 40), bool))["counts"]}
    images_video = VideoInfo(1, str(tmp_path / "seq"), "seq", 24, 40, 30.0, 1, [0, 1, 2],
                             ["seq/1.png", "seq/2.png", "seq/10.png"], kind="images")
    other = VideoInfo(2, "x.mp4", "x", 24, 40, 30.0, 1, [0, 1])
    document = CocoWriter().build(
        [(images_video, [TrackResult(1, 1, 0.5, [empty] * 3)]), (other, [TrackResult(1, 1, 0.5, [empty] * 2)])],
        ["thing"],
    )
    assert [i["file_name"] for i in document["images"]] == [
        "seq/1.png", "seq/2.png", "seq/10.png", "x/frame_000000.jpg", "x/frame_000001.jpg",
    ]
    assert [i["id"] for i in document["images"]] == [1, 2, 3, 4, 5]
    assert [a["image_id"] for a in document["annotations"]] == [1, 2, 3, 4, 5]
    assert [a["id"] for a in document["annotations"]] == [1, 2, 3, 4, 5]


def open_overlay(path: Path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        info = (stream.codec_context.name, stream.codec_context.pix_fmt, stream.width, stream.height,
                stream.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    return info, frames


def test_overlay_is_browser_playable_h264(media: dict[str, Path], tmp_path: Path) -> None:
    video, tracks, masks, reader = make_results(media["h264"], stride=2)
    writer = OverlayVideoWriter(OverlayStyle(draw_labels=False))  # labels would cover this tiny frame
    path = writer.write(tmp_path / "overlay.mp4", iter(reader), video, tracks, CATEGORIES)
    (codec, pix_fmt, width, height, rate), frames = open_overlay(path)
    assert (codec, pix_fmt, width, height) == ("h264", "yuv420p", 64, 48)
    assert rate == Fraction(25, 2) and len(frames) == video.num_frames
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart: index before the media data
    # inside track 4's mask the colour moved towards the track's palette colour
    y, x = 8, 20
    original = next(iter(reader))[1][y, x].astype(int)
    colour = np.array(track_colour(4))
    assert np.abs(frames[0][y, x].astype(int) - colour).sum() < np.abs(original - colour).sum()
    assert masks[4][0][y, x]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.mp4"]


def test_overlay_pads_odd_sizes_and_handles_one_frame(media: dict[str, Path], tmp_path: Path) -> None:
    video, tracks, _, reader = make_results(media["odd_mpeg4"], stride=1)
    OverlayVideoWriter().write(tmp_path / "odd.mp4", reader, video, tracks, CATEGORIES)
    (codec, pix_fmt, width, height, _), frames = open_overlay(tmp_path / "odd.mp4")
    assert (codec, pix_fmt, width, height, len(frames)) == ("h264", "yuv420p", 98, 62, 5)
    video, tracks, _, reader = make_results(media["one"], stride=1)
    OverlayVideoWriter().write(tmp_path / "one.mp4", reader, video, tracks, CATEGORIES)
    (_, _, width, height, rate), frames = open_overlay(tmp_path / "one.mp4")
    assert (width, height, len(frames)) == (64, 48, 1)


def test_overlay_wrong_frame_count_leaves_no_file(media: dict[str, Path], tmp_path: Path) -> None:
    video, tracks, _, reader = make_results(media["h264"], stride=2)
    frames = [frame for _, frame in reader]
    writer = OverlayVideoWriter()
    with pytest.raises(ValueError, match="got 5 frames, expected 6"):
        writer.write(tmp_path / "overlay.mp4", frames[:-1], video, tracks, CATEGORIES)
    with pytest.raises(ValueError, match="more frames"):
        writer.write(tmp_path / "overlay.mp4", frames + frames[:1], video, tracks, CATEGORIES)
    with pytest.raises(ValueError, match="source index 1, expected 2"):
        writer.write(tmp_path / "overlay.mp4", list(enumerate(frames)), video, tracks, CATEGORIES)
    with pytest.raises(ValueError, match="expected \\(48, 64, 3\\) uint8"):
        writer.write(tmp_path / "overlay.mp4", [f[:-1] for f in frames], video, tracks, CATEGORIES)
    assert list(tmp_path.iterdir()) == []


def test_renderer_blends_mask_and_leaves_background(media: dict[str, Path]) -> None:
    video, tracks, masks, reader = make_results(media["h264"], stride=2)
    frame = next(iter(reader))[1]
    style = OverlayStyle(alpha=0.5, draw_contours=False, draw_labels=False)
    drawn = OverlayRenderer(style).render(frame, 0, tracks, CATEGORIES)
    inside = masks[4][0]
    expected = frame[inside].astype(np.float32) * 0.5 + np.array(track_colour(4), np.float32) * 0.5
    np.testing.assert_allclose(drawn[inside].astype(np.float32), expected, atol=1)
    np.testing.assert_array_equal(drawn[~inside], frame[~inside])  # track 11 absent, track 25 empty
    labelled = OverlayRenderer(OverlayStyle(draw_contours=False)).render(frame, 0, tracks, CATEGORIES)
    assert not np.array_equal(labelled, OverlayRenderer(OverlayStyle(draw_contours=False, draw_labels=False))
                              .render(frame, 0, tracks, CATEGORIES))


def test_track_colours_are_stable_and_distinct() -> None:
    assert track_colour(3) == track_colour(3) == track_colour(3 + len(PALETTE))
    assert len({track_colour(i) for i in range(len(PALETTE))}) == len(PALETTE)


def test_overlay_into_missing_directory_is_unwritable_output(media: dict[str, Path], tmp_path: Path) -> None:
    video, tracks, _, reader = make_results(media["h264"], stride=2)
    with pytest.raises(OutputNotWritableError, match="output not writable"):
        OverlayVideoWriter().write(tmp_path / "gone" / "overlay.mp4", reader, video, tracks, CATEGORIES)


def test_overlay_is_the_same_file_whatever_the_drawing_threads(media: dict[str, Path], tmp_path: Path) -> None:
    """Frames drawn by 1 or 5 threads are encoded in order: the same bytes (x264 on one thread for both)."""
    video, tracks, _, reader = make_results(media["h264"], stride=1)
    frames = [frame for _, frame in reader]
    paths = [
        OverlayVideoWriter(threads=1, render_threads=n).write(tmp_path / f"{n}.mp4", frames, video, tracks, CATEGORIES)
        for n in (1, 5)
    ]
    assert paths[0].read_bytes() == paths[1].read_bytes()
    with pytest.raises(ValueError, match="render_threads"):
        OverlayVideoWriter(render_threads=0)


def test_drawing_threads_follow_the_cpus_ranks_and_frame_size(monkeypatch) -> None:
    assert [render_threads_for(480, 854, cpus) for cpus in (1, 2, 6, 16, 64)] == [2, 2, 6, 8, 8]
    assert render_threads_for(2160, 3840, 16) == 4  # 4K: the drawing buffers stay within OVERLAY_RENDER_BYTES
    assert render_threads_for(4320, 7680, 16) == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert usable_cpus() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun --nproc-per-node 8: 2 CPUs each
    assert usable_cpus() == 2 and render_threads_for(720, 1280) == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert usable_cpus() == 1


OVERLAY_OF_NOISE = """
import sys
from pathlib import Path
import cv2, numpy as np
from clipvis.cli import rle
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.writers import OverlayVideoWriter
height, width, count = 240, 320, 20
rng = np.random.default_rng(0)
frames = [cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 3) for _ in range(count)]
mask = np.zeros((height, width), bool)
mask[40:200, 60:250] = True
video = VideoInfo(video_id=1, source="noise", stem="noise", height=height, width=width, fps=30.0, frame_stride=1,
                  frame_indices=list(range(count)), file_names=[f"{i}.jpg" for i in range(count)])
tracks = [TrackResult(1, 1, 0.9, [rle.encode(np.roll(mask, i, axis=1)) for i in range(count)])]
OverlayVideoWriter().write(Path(sys.argv[1]), frames, video, tracks, ["thing"])
"""


def test_overlay_bytes_do_not_depend_on_what_memory_held_before(tmp_path: Path) -> None:
    """x264's macroblock tree read memory it never wrote, so the same frames gave other files from run to run;
    glibc's MALLOC_PERTURB_ fills fresh allocations with a pattern and made that visible at once."""
    import os
    import subprocess
    import sys

    outputs = []
    for perturb in ("0", "85", "170"):
        path = tmp_path / f"overlay_{perturb}.mp4"
        env = {**os.environ, "MALLOC_PERTURB_": perturb}
        subprocess.run([sys.executable, "-c", OVERLAY_OF_NOISE, str(path)], env=env, check=True)
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1] == outputs[2]
