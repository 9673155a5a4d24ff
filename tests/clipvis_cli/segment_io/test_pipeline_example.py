"""The I/O building blocks wired together the way `clipvis segment` uses them, with a fake model.

The fake "model" segments the bright bar of the synthetic videos as one track. This checks that the pieces
fit: discovery -> unique stems -> skip check -> background decoding -> RLE -> writers -> run.json, and that a
bad input produces one line while the others still complete.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import av
import numpy as np
from pycocotools.coco import COCO

from clipvis.cli import rle
from clipvis.cli.atomic import OutputNotWritableError
from clipvis.cli.inputs import discover_inputs, unique_stems
from clipvis.cli.results import TrackResult
from clipvis.cli.video_io import BackgroundDecoder, VideoReadError, make_video_info, open_reader
from clipvis.cli.writers import CocoWriter, OverlayVideoWriter, RunManifest, VideoOutputPaths, YtvisWriter

VOCAB = ["bar"]
WEIGHTS = "fake-weights"


def fake_segment(arguments: list[str], output: Path, stdin: io.StringIO | None = None, overwrite: bool = False,
                 stride: int = 1) -> tuple[list[str], list[str], list[str]]:
    """Returns (completed stems, skipped stems, error lines)."""
    options = {"stride": stride}
    sources = discover_inputs(arguments, stdin=stdin)
    completed, skipped, errors = [], [], []
    for video_id, (source, stem) in enumerate(zip(sources, unique_stems(sources), strict=True), start=1):
        if not source.ok:
            errors.append(source.describe_error())
            continue
        paths = VideoOutputPaths.for_stem(output, stem)
        previous = RunManifest.read(paths.manifest)
        if not overwrite and previous and previous.is_complete_for(
            WEIGHTS, VOCAB, options, source, paths.directory
        ):
            skipped.append(stem)
            continue
        manifest = RunManifest.start(source, stem, WEIGHTS, VOCAB, options)
        try:
            paths.prepare()
            manifest.write(paths.manifest)
            started = time.perf_counter()
            reader = open_reader(source, stride=stride)
            indices, segmentations = [], []
            with BackgroundDecoder(reader, batch_size=4) as batches:
                for batch in batches:
                    masks = batch.frames.mean(axis=3) > 128  # the "model"
                    indices.extend(batch.frame_indices)
                    segmentations.extend(rle.encode_many(masks))
            video = make_video_info(reader, video_id, stem, indices)
            tracks = [TrackResult(1, 1, 0.9, segmentations)]
            YtvisWriter().write(paths.ytvis, video, tracks, VOCAB)
            CocoWriter().write(paths.coco, video, tracks, VOCAB)
            OverlayVideoWriter().write(paths.overlay, reader, video, tracks, VOCAB)
            manifest.mark_complete(video.num_frames, ["ytvis.json", "coco.json", "overlay.mp4"],
                                   {"total": time.perf_counter() - started})
            manifest.write(paths.manifest)
            completed.append(stem)
        except (VideoReadError, OutputNotWritableError) as error:
            errors.append(str(error))
            if paths.directory.is_dir():
                manifest.mark_failed(str(error))
                manifest.write(paths.manifest)
    return completed, skipped, errors


def test_segment_pipeline_with_fake_model(media: dict[str, Path], tmp_path: Path, synth) -> None:
    (tmp_path / "in" / "a").mkdir(parents=True)
    (tmp_path / "in" / "b").mkdir(parents=True)
    clip_a = tmp_path / "in" / "a" / "clip.mp4"
    clip_b = tmp_path / "in" / "b" / "clip.mp4"
    clip_a.write_bytes(media["h264"].read_bytes())
    clip_b.write_bytes(media["odd_mpeg4"].read_bytes())
    synth.write_images(tmp_path / "in" / "frames", ["1.png", "2.png", "10.png"])
    stdin = io.StringIO(f"{media['audio']}\n{tmp_path / 'in' / 'frames'}\n")
    out = tmp_path / "out"
    arguments = [str(clip_a), str(clip_b), str(media["truncated_faststart"]), "-", str(tmp_path / "nope.mp4")]

    completed, skipped, errors = fake_segment(arguments, out, stdin=stdin, stride=2)
    assert completed == ["clip", "clip-2", "frames"] and skipped == []
    assert len(errors) == 3 and all("\n" not in e for e in errors)
    assert "truncated or corrupt" in errors[0] and "no video stream (audio only)" in errors[1]
    assert "nope.mp4: no such file" in errors[2]
    failed = RunManifest.read(out / "truncated_faststart" / "run.json")
    assert failed.status == "failed" and not (out / "truncated_faststart" / "ytvis.json").exists()

    ytvis = json.loads((out / "clip-2" / "ytvis.json").read_text())
    assert ytvis["videos"][0]["id"] == 2 and ytvis["videos"][0]["width"] == 97
    assert ytvis["videos"][0]["frame_indices"] == [0, 2, 4]
    coco = COCO(str(out / "frames" / "coco.json"))
    assert [img["file_name"] for img in coco.loadImgs(coco.getImgIds())] == ["frames/1.png", "frames/10.png"]
    with av.open(str(out / "clip" / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6
    bar = coco.annToMask(coco.loadAnns(coco.getAnnIds())[1])
    assert bar.sum() > 0 and np.all(bar.any(axis=0).nonzero()[0] >= 8)  # frame "10.png" encodes index 2

    stdin = io.StringIO(f"{tmp_path / 'in' / 'frames'}\n")
    completed, skipped, _ = fake_segment([str(clip_a), str(clip_b), "-"], out, stdin=stdin, stride=2)
    assert completed == [] and skipped == ["clip", "clip-2", "frames"]
    completed, skipped, _ = fake_segment([str(clip_a)], out, stride=1)  # other options: redo
    assert completed == ["clip"]
    completed, _, _ = fake_segment([str(clip_a)], out, stride=1, overwrite=True)
    assert completed == ["clip"]
