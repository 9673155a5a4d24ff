"""A mixed batch through the real `clipvis segment` (CLI -> SegmentRunner -> writers) with a tiny random model.

discovery (files, stdin, an image folder) -> output folders per source -> background decoding -> model -> RLE ->
writers -> run.json; a bad input gives one line while the others complete; a rerun skips; other options redo.
"""

from __future__ import annotations

import json
from pathlib import Path

import av
from pycocotools.coco import COCO
from typer.testing import CliRunner

from clipvis.cli.app import app


def segment(weights: Path, out: Path, *inputs: str, stdin: str | None = None, extra: tuple[str, ...] = ()):
    args = ["segment", *inputs, "--vocab", "bar,sky", "--weights", str(weights), "-o", str(out), "--device", "cpu",
            "--batch-frames", "4", *extra]
    return CliRunner().invoke(app, args, input=stdin)


def test_mixed_batch_through_the_real_runner(media, tmp_path, synth, tiny_weights, isolated_cache) -> None:
    (tmp_path / "in" / "a").mkdir(parents=True)
    (tmp_path / "in" / "b").mkdir(parents=True)
    clip_a = tmp_path / "in" / "a" / "clip.mp4"
    clip_b = tmp_path / "in" / "b" / "clip.mp4"
    clip_a.write_bytes(media["h264"].read_bytes())
    clip_b.write_bytes(media["odd_mpeg4"].read_bytes())
    synth.write_images(tmp_path / "in" / "frames", ["1.png", "2.png", "10.png"])
    stdin = f"{media['audio']}\n{tmp_path / 'in' / 'frames'}\n"
    out = tmp_path / "out"
    inputs = [str(clip_a), str(clip_b), str(media["truncated_faststart"]), "-", str(tmp_path / "nope.mp4")]

    result = segment(tiny_weights, out, *inputs, stdin=stdin, extra=("--stride", "2"))
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error:")]
    assert len(errors) == 3, result.stderr
    assert "truncated or corrupt" in errors[0] and "no video stream (audio only)" in errors[1]
    assert "nope.mp4: no such file" in errors[2]
    assert "3 of 6 input(s) failed" in result.stderr
    failed = json.loads((out / "truncated_faststart" / "run.json").read_text())
    assert failed["status"] == "failed" and not (out / "truncated_faststart" / "ytvis.json").exists()
    for stem in ("clip", "clip-2", "frames"):
        assert json.loads((out / stem / "run.json").read_text())["status"] == "complete"

    ytvis = json.loads((out / "clip-2" / "ytvis.json").read_text())
    assert ytvis["videos"][0]["id"] == 2 and ytvis["videos"][0]["width"] == 97
    assert ytvis["videos"][0]["frame_indices"] == [0, 2, 4]
    assert ytvis["videos"][0]["source"] == str(clip_b)
    coco = COCO(str(out / "frames" / "coco.json"))
    assert [img["file_name"] for img in coco.loadImgs(coco.getImgIds())] == ["frames/1.png", "frames/10.png"]
    with av.open(str(out / "clip" / "overlay.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6

    again = segment(tiny_weights, out, str(clip_a), str(clip_b), "-", stdin=f"{tmp_path / 'in' / 'frames'}\n",
                    extra=("--stride", "2"))
    assert again.exit_code == 0 and again.stdout == ""  # all three complete with the same settings: skipped
    redo = segment(tiny_weights, out, str(clip_a), extra=("--stride", "1", "--formats", "ytvis"))
    assert redo.exit_code == 0 and redo.stdout.strip() == str(out / "clip" / "ytvis.json")
    assert json.loads((out / "clip" / "ytvis.json").read_text())["videos"][0]["length"] == 12
