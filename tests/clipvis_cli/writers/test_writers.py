"""YouTube-VIS, COCO and overlay writers on a synthetic video with synthetic tracks."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from clipvis.cli import rle
from clipvis.cli.atomic import OutputNotWritableError
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.track_colours import PALETTE, track_colour
from clipvis.cli.video_io import VideoReader
from clipvis.cli.writers import CocoWriter, OverlayRenderer, OverlayStyle, OverlayVideoWriter, YtvisWriter
from clipvis.cli.writers.overlay import (
    LabelFont,
    _fitted_label,
    _full_size_anchor,
    ascii_class_name,
    render_threads_for,
    usable_cpus,
)

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


class _LongTrackMasks:
    """A long track's masks, made on access as a mask store reads them (``Sequence`` of RLE dicts)."""

    def __init__(self, frames: int, height: int, width: int) -> None:
        self.frames, self.height, self.width = frames, height, width

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, frame: int) -> dict | None:
        if not 0 <= frame < self.frames:
            raise IndexError(frame)
        if frame % 11 == 0:
            return None
        top = frame % (self.height - 2)
        return rle.encode(box_mask(self.height, self.width, top, 1, top + 2, 2 + frame % (self.width - 3)))


@pytest.mark.parametrize("writer", [YtvisWriter, CocoWriter])
def test_json_writers_stream_a_long_videos_masks_and_frames(tmp_path: Path, writer) -> None:
    """A 2-hour video has 216,000 frames: the YouTube-VIS writer held each track's masks as one list and its JSON
    text, the COCO writer every frame's image entry. Both now stream them: the writer's peak memory is a small part
    of the file, which loads as before."""
    import tracemalloc

    height, width = 40, 60

    def write(frames: int) -> tuple[int, Path, TrackResult]:
        video = VideoInfo(1, "long.mp4", "long", height, width, 30.0, 1, list(range(frames)))
        track = TrackResult(track_id=1, category_id=2, score=0.7, segmentations=_LongTrackMasks(frames, height, width))
        tracemalloc.start()
        try:
            path = writer().write(tmp_path / f"out{frames}.json", video, [track], CATEGORIES)
            return tracemalloc.get_traced_memory()[1], path, track
        finally:
            tracemalloc.stop()

    short_peak = write(5_000)[0]
    frames = 20_000
    peak, path, track = write(frames)
    assert peak < 1.5 * short_peak, (short_peak, peak)  # held at once, 4x the frames took 3-10x the memory
    assert peak < path.stat().st_size / 4
    document = json.loads(path.read_text())
    if writer is YtvisWriter:
        [annotation] = document["annotations"]
        assert annotation["segmentations"] == [track.segmentations[k] for k in range(frames)]
        assert document["videos"][0]["frame_indices"] == list(range(frames))
    else:
        assert [image["frame_index"] for image in document["images"]] == list(range(frames))
        assert len(document["annotations"]) == frames - len(range(0, frames, 11))


@pytest.mark.parametrize("writer", [YtvisWriter, CocoWriter])
@pytest.mark.parametrize("indent", [None, 2])
def test_json_writers_count_the_masks_they_write_once_each(tmp_path: Path, writer, indent) -> None:
    """A long video's ytvis.json and coco.json took minutes after the overlay with no time left said: the writers
    now tell the masks they write, a chunk at a time, each once (check_tracks reading them first counts nothing)."""
    height, width = 8, 10
    video = VideoInfo(1, "long.mp4", "long", height, width, 30.0, 1, list(range(1100)))
    tracks = [TrackResult(track_id=k, category_id=1, score=0.5, segmentations=_LongTrackMasks(1100, height, width))
              for k in (1, 2)]
    told: list[int] = []
    writer(indent=indent).write_many(tmp_path / "out.json", [(video, tracks)], CATEGORIES, masks_written=told.append)
    assert sum(told) == 2 * 1100 and max(told) <= 512, told
    assert writer().write(tmp_path / "plain.json", video, tracks, CATEGORIES).is_file()  # no counter: as before


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


def test_overlay_says_its_colours_are_bt601_limited_range(media: dict[str, Path], tmp_path: Path) -> None:
    """The overlay's frames are converted with BT.601's matrix in limited range, but the stream said nothing: players
    take untagged HD for BT.709 (a red of 255, 0, 0 showed as 255, 23, 0). The stream now says what it is."""
    video, tracks, _, reader = make_results(media["h264"], stride=2)
    path = OverlayVideoWriter().write(tmp_path / "overlay.mp4", iter(reader), video, tracks, CATEGORIES)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        tags = (stream.codec_context.colorspace, stream.codec_context.color_range,
                stream.codec_context.color_primaries, stream.codec_context.color_trc)
        assert (frame.colorspace, frame.color_range) == (6, 1)  # AVCOL_SPC_SMPTE170M (BT.601), AVCOL_RANGE_MPEG
    assert tags == (6, 1, 1, 1)  # ... with BT.709 primaries and transfer (the source's RGB, not converted)


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


def test_tracks_1_to_64_get_distinct_saturated_colours() -> None:
    """25 tracks on a frame: 25 colours (the 20-colour table gave tracks 1 and 21 the same one), none grey."""
    assert len({track_colour(i) for i in range(1, 26)}) == 25
    assert len({track_colour(i) for i in range(1, 65)}) == 64
    assert all(max(colour) - min(colour) >= 85 for colour in PALETTE)


def labelled_frame(height: int, width: int, masks: list[np.ndarray], names: list[str], scores: list[float]):
    """A flat grey frame and one track per mask (track ids 1.., category k + 1 named names[k])."""
    tracks = [TrackResult(k + 1, k + 1, score, [rle.encode(mask)]) for k, (mask, score) in enumerate(zip(masks, scores,
                                                                                                        strict=True))]
    return np.full((height, width, 3), 100, np.uint8), tracks


def overlapping(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_labels_of_masks_sharing_the_top_left_corner_do_not_pile_up() -> None:
    """Masks that all start at (0, 0) (sky, wall, a building): each label sits inside its own visible part,
    clear of the others and inside the frame; the drawn labels are exactly where the layout put them."""
    height, width = 360, 640
    yy, xx = np.mgrid[0:height, 0:width]
    masks = [yy < 80, xx < 120, (xx < 300) & (yy < 200), (xx < 40) | (yy < 20)]
    frame, tracks = labelled_frame(height, width, masks, ["sky", "wall", "building", "fence"], [0.9, 0.85, 0.8, 0.7])
    renderer = OverlayRenderer(OverlayStyle(draw_contours=False))
    labels = renderer.layout(height, width, 0, tracks, ["sky", "wall", "building", "fence"])
    assert [label.text for label in labels] == ["sky #1 0.90", "wall #2 0.85", "building #3 0.80", "fence #4 0.70"]
    for k, label in enumerate(labels):
        x0, y0, x1, y1 = label.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert not any(overlapping(label.box, other.box) for other in labels[k + 1 :])
    # smaller masks on top (fence 26400 pixels, wall 43200, sky 51200, building 60000): each label is on its own
    # track's visible part (the centre; the fence's 40-pixel arm is narrower than its label)
    sky, wall, building, fence = masks
    visible = [sky & ~fence & ~wall, wall & ~fence, building & ~fence & ~wall & ~sky, fence]
    for label, own in zip(labels, visible, strict=True):
        x0, y0, x1, y1 = label.box
        assert own[(y0 + y1) // 2, (x0 + x1) // 2] or (label.text.startswith("fence") and own[y0:y1, x0:x1].any())
    drawn = renderer.render(frame, 0, tracks, ["sky", "wall", "building", "fence"])
    bare = OverlayRenderer(OverlayStyle(draw_contours=False, draw_labels=False)).render(frame, 0, tracks, ["a"] * 4)
    changed = (drawn != bare).any(-1)
    in_labels = np.zeros_like(changed)
    for label in labels:
        x0, y0, x1, y1 = label.box
        in_labels[y0:y1, x0:x1] = True
        assert changed[y0:y1, x0:x1].mean() > 0.9  # the darkened box
    assert not (changed & ~in_labels).any()


def test_a_label_follows_its_object_steadily_from_frame_to_frame() -> None:
    """A person-like body drifting right a pixel a frame while an arm moves along its side: the label moves about as
    the body does. Centred on the pixel farthest from the border it jumped along the body's length (116 pixels
    from one frame to the next)."""
    height, width = 360, 640
    arm_rows = np.random.default_rng(0).integers(100, 260, size=30)
    masks = []
    for t, arm in enumerate(arm_rows):
        body = np.zeros((height, width), np.uint8)
        x = 200 + t
        cv2.rectangle(body, (x, 80), (x + 50, 280), 1, -1)
        cv2.circle(body, (x + 25, 80), 25, 1, -1)
        cv2.circle(body, (x + 25, 280), 25, 1, -1)
        cv2.rectangle(body, (x + 50, int(arm)), (x + 58, int(arm) + 30), 1, -1)
        masks.append(body.astype(bool))
    tracks = [TrackResult(1, 1, 0.9, [rle.encode(mask) for mask in masks])]
    renderer = OverlayRenderer()
    centres = np.array([[(a + b) / 2 for a, b in zip(label.box[:2], label.box[2:], strict=True)]
                        for position in range(len(masks))
                        for label in renderer.layout(height, width, position, tracks, ["person"])])
    assert len(centres) == len(masks)
    assert np.abs(np.diff(centres, axis=0)).max() <= 3, centres
    for (x, y), mask in zip(centres.astype(int), masks, strict=True):
        assert mask[y, x]


def test_a_small_mask_inside_a_larger_one_stays_visible_with_its_outline() -> None:
    """A hat (lower score) inside a person: painted on top of the person, tinted and outlined in its own colour;
    a track whose mask is all under smaller ones gets neither paint nor a label."""
    height, width = 200, 200
    person = box_mask(height, width, 20, 40, 190, 160)
    hat = np.hypot(*np.mgrid[0:height, 0:width] - np.array([50, 100])[:, None, None]) <= 15
    hidden = person.copy()  # the same mask as the person, lower score: nothing of it is on top
    frame, tracks = labelled_frame(height, width, [person, hat, hidden], ["person", "hat", "ghost"], [0.9, 0.5, 0.3])
    drawn = OverlayRenderer(OverlayStyle(alpha=0.5, draw_labels=False)).render(frame, 0, tracks, ["x"] * 3).astype(int)
    tint = {k: (100 + np.array(track_colour(k))) / 2 for k in (1, 2, 3)}
    hat_centre = np.zeros_like(hat)
    hat_centre[45:56, 95:106] = True  # away from its outline
    assert np.abs(drawn[hat_centre] - tint[2]).max() <= 1
    outline = (drawn == track_colour(2)).all(-1)
    assert outline.sum() > 50 and not (outline & ~hat).any()  # the hat's border, in its full colour
    person_inner = box_mask(height, width, 80, 50, 180, 150)  # away from the person's outline and the hat
    assert np.abs(drawn[person_inner] - tint[1]).max() <= 1
    labels = OverlayRenderer().layout(height, width, 0, tracks, ["person", "hat", "ghost"])
    assert sorted(label.track_id for label in labels) == [1, 2]


def test_overlapping_masks_of_about_the_same_size_keep_one_order_in_every_frame() -> None:
    """Which of two overlapping masks is on top does not follow their areas frame by frame (one pixel more or
    less would make the overlap flicker): the smaller mean area over the video, then the rank."""
    height, width = 60, 80
    first = [box_mask(height, width, 10, 10, 40, 40 + extra) for extra in (0, 2)]  # 900, 960 pixels
    second = [box_mask(height, width, 20, 20, 50, 52 - extra) for extra in (0, 2)]  # 960, 900: the same mean
    tracks = [TrackResult(1, 1, 0.9, [rle.encode(m) for m in first]),
              TrackResult(2, 1, 0.8, [rle.encode(m) for m in second])]
    frame = np.zeros((height, width, 3), np.uint8)
    style = OverlayStyle(alpha=1.0, draw_contours=False, draw_labels=False)
    for position in (0, 1):
        drawn = OverlayRenderer(style).render(frame, position, tracks, ["x"])
        assert tuple(drawn[30, 30]) == track_colour(1)  # equal means: the better-ranked on top in both frames
    tracks[1] = TrackResult(2, 1, 0.8, [rle.encode(box_mask(height, width, 20, 20, 50, 49))] * 2)  # 870 both
    for position in (0, 1):
        assert tuple(OverlayRenderer(style).render(frame, position, tracks, ["x"])[30, 30]) == track_colour(2)


def test_class_names_without_ascii_letters_are_labelled_with_the_category_id() -> None:
    """OpenCV draws every non-ASCII character as '?': accents are dropped, other scripts give 'class <id>'."""
    names = ["café", "狗", "🐶 dog", "Straße", "кошка", "ﬁsh", "3", "½ cup", "Ωmega", "t-shirt"]
    # ASCII names stay as they are ("3" is not "class 7"); a name with a letter left out would read as another class
    expected = ["cafe", "class 2", "dog", "Strasse", "class 5", "fish", "3", "1/2 cup", "class 9", "t-shirt"]
    font = LabelFont.for_frame(480, 854)
    for k, name in enumerate(expected):
        label = _fitted_label(ascii_class_name(names[k], k + 1), TrackResult(12, k + 1, 0.87, []), 1000, font)
        assert label == f"{name} #12 0.87"
    mask = box_mask(120, 320, 20, 20, 100, 300)
    _, tracks = labelled_frame(120, 320, [mask], ["猫"], [0.87])
    assert [label.text for label in OverlayRenderer().layout(120, 320, 0, tracks, ["猫"])] == ["class 1 #1 0.87"]


def test_a_label_too_wide_for_its_room_cuts_the_class_name_first() -> None:
    font = LabelFont.for_frame(480, 854)
    track = TrackResult(7, 1, 0.5, [])
    name = "hot air balloon"
    full = font.size(f"{name} #7 0.50")[0]
    cut = _fitted_label(name, track, full - 1, font)
    assert cut.endswith(". #7 0.50") and name.startswith(cut.removesuffix(". #7 0.50"))
    assert font.size(cut)[0] <= full - 1 < font.size(f"{name} #7 0.50")[0]
    assert _fitted_label(name, track, font.size("#7 0.50")[0], font) == "#7 0.50"  # no letter fits: the tail alone



def test_a_labels_size_is_remembered_without_keeping_its_font_alive() -> None:
    """The sizes of labels were an lru_cache on LabelFont.size, whose entries held every font for good."""
    import gc
    import weakref

    font = LabelFont(0.8, 2)
    size = font.size("cat #1 0.87")
    assert size == font.size("cat #1 0.87") == LabelFont(0.8, 2).size("cat #1 0.87")
    assert size[0] == cv2.getTextSize("cat #1 0.87", cv2.FONT_HERSHEY_SIMPLEX, 0.8, 2)[0][0]
    held = weakref.ref(font)
    del font
    gc.collect()
    assert held() is None

@pytest.mark.parametrize("size", [(48, 64), (90, 160), (120, 96)])
def test_a_label_wider_than_the_frame_keeps_track_and_score(size) -> None:
    height, width = size
    mask = box_mask(height, width, height // 2, width // 4, height, width * 3 // 4)
    tracks = [TrackResult(12, 1, 0.87, [rle.encode(mask)])]
    (label,) = OverlayRenderer().layout(height, width, 0, tracks, ["fire hydrant on the pavement"])
    assert label.text.endswith(". #12 0.87") and "fire hydrant on the pavement".startswith(label.text[:2])
    x0, y0, x1, y1 = label.box
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height


def test_on_a_frame_too_small_for_the_label_the_compact_id_is_drawn_whole() -> None:
    """At 32x24 "#1 0.73" is wider than the frame and was drawn cut off ("#1 0.7"); "#1", which fits, is used."""
    mask = box_mask(24, 32, 4, 4, 20, 28)
    (label,) = OverlayRenderer().layout(24, 32, 0, [TrackResult(1, 1, 0.73, [rle.encode(mask)])], ["dog"])
    x0, y0, x1, y1 = label.box
    assert label.text == "#1" and 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 24


def test_crowded_labels_shrink_or_go_and_never_overlap() -> None:
    """40 tiny objects side by side on a small frame: no two labels overlap, the best-scored are labelled."""
    height, width = 60, 200
    masks = [box_mask(height, width, 28, 5 * k, 32, 5 * k + 4) for k in range(40)]
    _, tracks = labelled_frame(height, width, masks, ["person"] * 40, [0.9 - 0.01 * k for k in range(40)])
    labels = OverlayRenderer().layout(height, width, 0, tracks, ["person"] * 40)
    assert labels[0].text == "person #1 0.90" and len(labels) < 40
    assert any(label.text.startswith("#") and " " not in label.text for label in labels)  # compact "#id"
    boxes = [label.box for label in labels]
    assert not any(overlapping(a, b) for k, a in enumerate(boxes) for b in boxes[k + 1 :])


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
from clipvis.cli.track_colours import PALETTE, track_colour
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


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a process allowed on 2 CPUs or more, to compare with one allowed on 1")
def test_overlay_bytes_do_not_depend_on_how_many_cpus_the_process_may_use(tmp_path: Path) -> None:
    """x264 chose its thread count (and with it the slices of every frame) from the CPUs the process may use: a shard
    on a 1-CPU slot wrote another overlay than one on 2 CPUs (hunter 80, under `taskset -c 0`)."""
    import subprocess
    import sys

    outputs = []
    for cpus in (sorted(os.sched_getaffinity(0))[:1], sorted(os.sched_getaffinity(0))):
        path = tmp_path / f"overlay_{len(cpus)}.mp4"
        script = f"import os; os.sched_setaffinity(0, {set(cpus)!r})\n" + OVERLAY_OF_NOISE
        subprocess.run([sys.executable, "-c", script, str(path)], check=True)
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]


def test_a_mask_touching_the_frame_edge_is_outlined_along_it() -> None:
    """The outline was drawn only where the mask met another label: a mask running off the frame showed an open
    outline."""
    height, width = 60, 80
    frame = np.full((height, width, 3), 100, np.uint8)
    mask = box_mask(height, width, 0, 0, 30, 40)  # the top-left quarter: the frame's top and left edges
    tracks = [TrackResult(1, 1, 0.9, [rle.encode(mask)])]
    drawn = OverlayRenderer(OverlayStyle(draw_labels=False)).render(frame, 0, tracks, ["x"])
    colour = np.array(track_colour(1))
    assert (drawn[0, 5:35] == colour).all() and (drawn[5:25, 0] == colour).all()  # along the frame's edges
    assert not (drawn[15, 20] == colour).all()  # the inside is tinted, not outlined


@pytest.mark.parametrize(("height", "width"), [(1, 1), (4, 1), (1, 4), (5, 1)])
def test_one_pixel_wide_or_high_frames_are_drawn(height: int, width: int) -> None:
    """1x1 frames failed in OpenCV's copyTo ("size() == mask.size()"): its binding took a 1x1 image for a scalar in
    cv2.compare (a 4x1 result), and compared a 4x1 image's rows 2-4 with 0 instead of the track's label."""
    frame = np.full((height, width, 3), 100, np.uint8)
    mask = np.ones((height, width), bool)
    drawn = OverlayRenderer(OverlayStyle(draw_labels=False)).render(
        frame, 0, [TrackResult(1, 1, 0.9, [rle.encode(mask)])], ["dog"])
    assert drawn.shape == frame.shape
    assert (drawn != frame).all(axis=-1).all()  # every pixel tinted (or outlined): the mask covers the frame


def test_a_label_on_a_region_one_pixel_wide_and_four_high_is_centred_in_it() -> None:
    """The anchor of a 4x1 region was its top pixel: the region's other three pixels read as outside it."""
    labels = np.zeros((100, 100), np.uint8)
    labels[10:14, 50] = 1
    x, y = _full_size_anchor(labels, np.array([50, 10, 1, 4]), 1)
    assert x == 50 and y in (11, 12)


def test_frame_names_of_a_long_video_sort_in_frame_order() -> None:
    """`<stem>/99999.jpg` then `<stem>/100000.jpg`: sorted, the frames past 99,999 came first (a 55-minute video at
    30 frames/s has 100,000). Every name of such a video gets the digits its last frame needs; shorter videos keep
    YouTube-VIS's five."""
    from clipvis.cli.results import synthetic_file_names

    assert synthetic_file_names("v", [0, 7, 99_999]) == ["v/00000.jpg", "v/00007.jpg", "v/99999.jpg"]
    names = synthetic_file_names("v", list(range(0, 120_000, 7)))
    assert sorted(names) == names and names[-1] == "v/119994.jpg" and names[0] == "v/000000.jpg"


def _yuv_video(path: Path, height: int, width: int, yuv: tuple[int, int, int], frames: int = 2) -> Path:
    """A lossless H.264 video of one flat YUV colour, with no colour-space tag (as most cameras and screen
    recorders write them)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        planes = np.concatenate([np.full((height, width), yuv[0], np.uint8),
                                 np.full((height // 4, width), yuv[1], np.uint8),
                                 np.full((height // 4, width), yuv[2], np.uint8)])
        for k in range(frames):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def _as_players_show(y: int, u: int, v: int, bt709: bool) -> np.ndarray:
    """The RGB a player shows for limited-range Y, Cb, Cr with BT.709's or BT.601's matrix."""
    red, blue = (0.2126, 0.0722) if bt709 else (0.299, 0.114)
    luma, cb, cr = (y - 16) * 255 / 219, (u - 128) * 255 / 224, (v - 128) * 255 / 224
    r, b = luma + 2 * (1 - red) * cr, luma + 2 * (1 - blue) * cb
    return np.clip(np.round([r, (luma - red * r - blue * b) / (1 - red - blue), b]), 0, 255)


def _overlay_as_players_show(path: Path) -> np.ndarray:
    """The first frame's centre pixel as a player shows it: with the matrix the stream's tag names."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        planes = frame.to_ndarray(format="yuv420p")
        height, width = frame.height, frame.width
        assert frame.colorspace in (1, 6)  # BT.709, BT.601 (SMPTE 170M)
        y = planes[height // 2, width // 2]
        u = planes[height + height // 4 // 2, width // 4]  # the Cb plane's middle row, as flat rows of width/2
        v = planes[height + height // 4 + height // 4 // 2, width // 4]
        return _as_players_show(int(y), int(u), int(v), frame.colorspace == 1)


@pytest.mark.parametrize("height", [48, 720])
def test_the_overlay_of_an_untagged_video_shows_its_colours_as_players_show_the_video(tmp_path: Path,
                                                                                        height: int) -> None:
    """Players read an untagged HD video (more than 576 lines) as BT.709; clipvis decoded it as BT.601 (FFmpeg's
    default), so its overlay, tagged with what it holds, showed other colours than the video in the same player (a
    red of 255, 24, 0 as 253, 0, 1). The overlay's frames are now decoded as players show them; the model's frames
    stay as they were. An untagged SD video was shown right, and still is."""
    yuv = (81, 90, 240)  # a saturated red
    source = _yuv_video(tmp_path / "untagged.mp4", height, 16, yuv)
    reader = VideoReader(source)
    probe = reader.probe()
    video = VideoInfo(1, str(source), "untagged", probe.height, probe.width, probe.fps, 1, [0, 1])
    path = OverlayVideoWriter().write(tmp_path / "overlay.mp4", reader.frames_as_players_show(), video, [],
                                      CATEGORIES)
    shown = _as_players_show(*yuv, bt709=height > 576)
    assert np.abs(_overlay_as_players_show(path) - shown).max() <= 2, (_overlay_as_players_show(path), shown)
    model_frame = next(iter(reader))[1]  # the model's frames: FFmpeg's conversion, as before
    with av.open(str(source)) as container:
        planes = next(container.decode(video=0)).to_ndarray(format="yuv420p")
    bt601 = av.VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray(format="rgb24")  # FFmpeg's default
    np.testing.assert_array_equal(model_frame, bt601)


def test_one_pixel_outlines_keep_their_colour_at_odd_positions(tmp_path: Path) -> None:
    """Each chroma sample of the overlay was one pixel's of its 2x2 block (OpenCV's RGB2YUV_I420), so a one-pixel
    outline on an odd column or row lost its colour (73 % of a blue outline's pixels stayed blue, swscale's 100 %).
    Each is now its block's mean colour's, as FFmpeg's conversion within 1."""
    height, width = 16, 16
    frame = np.full((height, width, 3), 110, np.uint8)
    column = np.zeros((height, width), bool)
    column[:, 5] = True  # an odd column
    video = VideoInfo(1, "grey.mp4", "grey", height, width, 10, 1, [0])
    track = TrackResult(1, 1, 0.9, [rle.encode(column)])
    style = OverlayStyle(alpha=1.0, draw_contours=False, draw_labels=False, crf=0)  # lossless: the planes as sent
    path = OverlayVideoWriter(style).write(tmp_path / "overlay.mp4", [frame], video, [track], CATEGORIES)
    with av.open(str(path)) as container:
        planes = next(container.decode(video=0)).to_ndarray(format="yuv420p").astype(int)
    drawn = frame.copy()
    drawn[column] = track_colour(1)
    ffmpeg = av.VideoFrame.from_ndarray(drawn, format="rgb24").reformat(format="yuv420p", interpolation="AREA")
    assert np.abs(planes - ffmpeg.to_ndarray()).max() <= 1
    assert np.abs(planes[height:] - 128).max() > 10  # the column's colour is in the chroma planes


def test_labels_and_outlines_keep_their_share_of_a_4k_frame() -> None:
    """Label text and outlines stopped growing at 1080p, so a 4K frame's labels were half as tall, relative to the
    frame, as a 1080p frame's. Above 1080 pixels a side they now grow with the frame; 1080p's stay as they were."""
    def share(height: int, width: int) -> float:
        _, above, below = LabelFont.for_frame(height, width).size("person #3 0.87")
        return (above + below) / height

    assert LabelFont.for_frame(1080, 1920) == LabelFont(0.8, 2)
    assert share(2160, 3840) == pytest.approx(share(1080, 1920), rel=0.1)
    assert share(4320, 7680) == pytest.approx(share(1080, 1920), rel=0.1)
    size = 2160
    frame = np.zeros((size, size, 3), np.uint8)
    mask = box_mask(size, size, 500, 500, 1500, 1500)
    style = OverlayStyle(alpha=0.0, draw_labels=False)  # the outline alone is coloured
    drawn = OverlayRenderer(style).render(frame, 0, [TrackResult(1, 1, 0.9, [rle.encode(mask)])], CATEGORIES)
    outline_width = int(drawn[1000, 500:1000].any(axis=-1).sum())
    assert outline_width == 4  # 2 at 1080p


@pytest.mark.parametrize("fps, start_time, frame_times", [
    (30, 0.5, None),  # 15 frames in: the frame rate's clock
    (7, 0.5, None),  # 3.5 frames in: milliseconds
    (30, 0.0, [0.5, 0.6, 1.25]),  # a variable rate's first frame at 0.5 s
])
def test_the_overlay_starts_where_the_source_video_starts(tmp_path: Path, fps: int, start_time: float,
                                                          frame_times: list[float] | None) -> None:
    """A source whose first video frame is at 0.5 s (after its audio; ytvis.json's start_time or frame_times say
    so) got an overlay starting at 0, so times read off the overlay were half a second off. It now starts there."""
    frames = [np.full((16, 16, 3), 40 * k, np.uint8) for k in range(3)]
    video = VideoInfo(1, "late.mp4", "late", 16, 16, fps, 1, [0, 1, 2], start_time=start_time,
                      frame_times=frame_times)
    path = OverlayVideoWriter().write(tmp_path / "overlay.mp4", frames, video, [], CATEGORIES)
    with av.open(str(path)) as container:
        times = [float(frame.time) for frame in container.decode(video=0)]
    expected = frame_times or [start_time + k / fps for k in range(3)]
    np.testing.assert_allclose(times, expected, atol=0.002)


def test_the_overlay_of_a_slideshow_shows_its_last_frame_as_long_as_the_source(tmp_path: Path) -> None:
    """A GIF's frames show 1, 2, 0.5 and 3 s: its overlay gave the last frame one frame at the average rate (5.1 s
    in all of 6.5). The reader now records when the last frame stops showing, and the overlay ends there."""
    from PIL import Image

    from clipvis.cli.video_io import variable_frame_times

    source = tmp_path / "slides.gif"
    pictures = [Image.fromarray(np.full((16, 16, 3), 60 * k, np.uint8)) for k in range(4)]
    pictures[0].save(source, save_all=True, append_images=pictures[1:], duration=[1000, 2000, 500, 3000], loop=0)
    reader = VideoReader(source)
    probe = reader.probe()
    indices = [index for index, _ in reader]
    times = variable_frame_times(reader.frame_times, indices, probe.fps)
    assert times == pytest.approx([0, 1, 3, 3.5]) and reader.end_time == pytest.approx(6.5)
    video = VideoInfo(1, str(source), "slides", 16, 16, probe.fps, 1, indices, frame_times=times,
                      end_time=reader.end_time)
    path = OverlayVideoWriter().write(tmp_path / "overlay.mp4", reader, video, [], CATEGORIES)
    with av.open(str(path)) as container:
        assert [float(frame.time) for frame in container.decode(video=0)] == pytest.approx([0, 1, 3, 3.5])
        assert container.duration / av.time_base == pytest.approx(6.5, abs=0.01)


def test_a_variable_rate_overlay_ends_where_its_source_does_for_ffmpeg_too(tmp_path: Path) -> None:
    """With B-frames the last packet coded is often not the last frame shown, and the MP4 muxer ends the track at
    the last packet's decoding time plus its duration: FFmpeg read a moving video's overlay 0.18 s short of its
    source's end (0.80 s of 0.98), its last frame lasting 33 ms instead of its own 0.5 s. Its frames are now coded
    in the order they show, and both readings end at the source's end."""
    times = [0.0, 0.033, 0.066, 0.166, 0.199, 0.449, 0.482]
    frames = []
    for k in range(len(times)):  # a bar moving right over a changing background: x264 makes B-frames of them
        image = np.full((48, 64, 3), (0, 9 * k, 0), np.uint8)
        image[10:30, 5 * k : 5 * k + 16] = 255
        frames.append(image)
    video = VideoInfo(1, "vfr.mp4", "vfr", 48, 64, Fraction(7000, 982), 1, list(range(7)), frame_times=times,
                      end_time=0.982)
    path = OverlayVideoWriter().write(tmp_path / "overlay.mp4", frames, video, [], CATEGORIES)
    with av.open(str(path)) as container:
        assert container.duration / av.time_base == pytest.approx(0.982, abs=1e-3)
        shown = [(frame.time, float(frame.duration * frame.time_base)) for frame in container.decode(video=0)]
    assert [time for time, _ in shown] == pytest.approx(times, abs=1e-3)
    assert shown[-1][0] + shown[-1][1] == pytest.approx(0.982, abs=1e-3)


def test_the_sizes_libx264_cannot_encode_are_told_before_any_frame_is_drawn(tmp_path) -> None:
    """A side above 16,384 pixels (16,385 padded to even included) made libx264 refuse to open at the first frame
    (ExternalError), with no warning between 16,386 and 16,880; FFmpeg itself refuses frames of 8 x (w + 128) x
    (h + 128) bytes or more (16384x16130). `unencodable_overlay_reason` says so, and the writer raises its line
    before reading a frame."""
    from clipvis.cli.writers.overlay import unencodable_overlay_reason

    def opens(height: int, width: int) -> bool:
        with av.open(str(tmp_path / "probe.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            try:
                stream.codec_context.open()
            except av.error.FFmpegError:
                return False
            return True

    assert opens(16384, 16) and unencodable_overlay_reason(16384, 16) is None
    assert not opens(16386, 16) and unencodable_overlay_reason(16386, 16) == (
        "its frames are 16x16386: overlay.mp4 cannot be written, the H.264 encoder (libx264) takes at most 16384 "
        "pixels a side")
    assert not opens(16, 16386) and unencodable_overlay_reason(16385, 16) is not None  # padded to 16386
    assert unencodable_overlay_reason(16128, 16384) is None
    assert "FFmpeg takes frames of at most" in unencodable_overlay_reason(16130, 16384)

    def no_frames():
        raise AssertionError("a frame was read")
        yield

    video = VideoInfo(1, "huge.png", "huge", 16, 16386, Fraction(10), 1, [0])
    with pytest.raises(ValueError, match="^overlay for 'huge': its frames are 16386x16: .* at most 16384 pixels"):
        OverlayVideoWriter().write(tmp_path / "overlay.mp4", no_frames(), video, [], CATEGORIES)
    assert list(tmp_path.glob("overlay*")) == []


def test_frames_above_h264_s_largest_level_are_said_to_make_an_overlay_players_refuse() -> None:
    """A 9000x6000 video's overlay was written without a word, and many players refuse it (H.264 level 6.2 stops at
    139,264 macroblocks a frame, ~35 megapixels, and 1,055 macroblocks a side)."""
    from clipvis.cli.writers.overlay import oversized_overlay_warning

    assert oversized_overlay_warning(6000, 9000) == (
        "the overlay will be 9000x6000, above H.264's largest level (6.2: about 35 megapixels, 16880 pixels a side): "
        "many players will refuse to play overlay.mp4 (--formats without overlay leaves it out)")
    assert oversized_overlay_warning(16, 17000) is not None  # too wide, though small
    assert oversized_overlay_warning(4320, 8192) is None  # 8K: the level's own example size
    assert oversized_overlay_warning(2160, 3840) is None
