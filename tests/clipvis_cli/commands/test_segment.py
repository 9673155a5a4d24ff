"""End-to-end `clipvis segment` runs with a tiny random checkpoint, and the golden case through the CLI."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from typer.testing import CliRunner

from clipvis.cli.app import app


@pytest.fixture(autouse=True)
def _no_downloads(isolated_cache):
    """Every test here runs with a private cache and no network."""


def frames_of(num_frames: int, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 60, (num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t, height // 4 : height // 2, t : t + width // 3] = (230, 40, 40)
    return frames


def write_video(path: Path, num_frames: int = 7, height: int = 48, width: int = 64, fps: int = 10) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames_of(num_frames, height, width):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def run_cli(args: list[str], stdin: str | None = None):
    return CliRunner().invoke(app, args, input=stdin, catch_exceptions=False)


def segment_args(weights: Path, out: Path, *inputs: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["segment", *inputs, "--vocab", "box,sky", "--weights", str(weights), "-o", str(out),
            "--device", "cpu", "--batch-frames", "3", *extra]


def test_a_symbolic_link_loop_given_to_an_option_is_said_to_be_one(tmp_path, tiny_weights) -> None:
    """`-o loop` said "a symbolic link to loop, which does not exist", `--weights loop` "neither an existing checkpoint
    file nor a released checkpoint name", `--config loop` "file not found": each now says it is a symbolic-link
    loop, as an input that is one is said to be."""
    video = write_video(tmp_path / "clip.mp4", num_frames=1)
    loop = tmp_path / "loop"
    loop.symlink_to(loop.name)
    for option, args in (("-o", segment_args(tiny_weights, loop, str(video))),
                         ("--weights", segment_args(loop, tmp_path / "out", str(video))),
                         ("--config", segment_args(tiny_weights, tmp_path / "out", str(video),
                                                   extra=("--config", str(loop))))):
        result = run_cli(args)
        assert result.exit_code != 0 and "symbolic-link loop" in result.output, (option, result.output)
        assert "))" not in result.output, (option, result.output)  # -o: "(symbolic-link loop (Too many levels ...))"


def test_a_folder_given_as_config_is_said_to_be_one(tmp_path, tiny_weights) -> None:
    """`--config FOLDER` said "not a file"; a training run's folder (which holds its config.yaml) is now named as
    one, with the file to give."""
    video = write_video(tmp_path / "clip.mp4", num_frames=1)
    run = tmp_path / "run"
    run.mkdir()
    result = run_cli(segment_args(tiny_weights, tmp_path / "out", str(video), extra=("--config", str(run))))
    assert result.exit_code == 1 and f"{run}: a folder, not a config file" in result.output, result.output
    (run / "config.yaml").write_text("MODEL: {}\n")
    result = run_cli(segment_args(tiny_weights, tmp_path / "out", str(video), extra=("--config", str(run))))
    assert result.exit_code == 1, result.output
    assert f"{run}: a folder, not a config file (a training run's folder: give {run / 'config.yaml'})" in result.output


def test_segment_warns_as_export_does_when_an_image_folders_names_sort_otherwise_as_text(tmp_path, tiny_weights,
                                                                                          synth) -> None:
    """`segment --formats cvat-video` on a folder of 1.png, 2.png, 10.png numbered its frames in natural order
    without the word `export --to cvat-video` says for the same folder (CVAT's default order is 1, 10, 2)."""
    frames = tmp_path / "frames"
    synth.write_images(frames, ["1.png", "2.png", "10.png"], height=48, width=64)
    result = run_cli(segment_args(tiny_weights, tmp_path / "out", str(frames), extra=("--formats", "cvat-video,coco")))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("clipvis: warning:")]
    assert warnings == [
        f"clipvis: warning: {frames}: cvat-video number the images of {frames} in natural order (1.png, 2.png, "
        '10.png), which is not their order as text (1.png, 10.png, 2.png): create the CVAT task with "Sorting method: '
        'Natural" (other tools: sort the names naturally), or the masks land on other images'], result.stderr
    named = run_cli(segment_args(tiny_weights, tmp_path / "out2", str(frames), extra=("--formats", "coco")))
    assert named.exit_code == 0 and "warning" not in named.stderr, named.stderr


def test_a_video_too_large_for_h264_s_levels_is_warned_of_once_for_its_overlay(tmp_path, tiny_weights,
                                                                               monkeypatch) -> None:
    """An overlay of frames above H.264 level 6.2's size (9000x6000) was written without a word, and many players
    refuse it: one warning names the file and the size (the limit lowered here so that a tiny video passes it)."""
    from clipvis.cli.writers import overlay

    monkeypatch.setattr(overlay, "H264_MAX_FRAME_MACROBLOCKS", 4)
    video = write_video(tmp_path / "clip.mp4", num_frames=1)
    result = run_cli(segment_args(tiny_weights, tmp_path / "out", str(video)))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("clipvis: warning:")]
    assert warnings == [f"clipvis: warning: {video}: the overlay will be 64x48, above H.264's largest level (6.2: "
                        "about 35 megapixels, 16880 pixels a side): many players will refuse to play overlay.mp4 "
                        "(--formats without overlay leaves it out)"], result.stderr
    quiet = run_cli(segment_args(tiny_weights, tmp_path / "out2", str(video), extra=("--formats", "ytvis")))
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_a_video_too_large_to_encode_its_overlay_fails_before_the_model_runs(tmp_path, tiny_weights,
                                                                            monkeypatch) -> None:
    """A frame above 16,384 pixels a side failed only after the whole model pass, libx264 refusing to open
    ("ExternalError ... avcodec_open2(libx264)"), ytvis and coco lost with it, after a warning that said the overlay
    would be written. Now one line before the model runs names the file, the size and the fix, and the other inputs
    go on (the limit lowered here so that a tiny video passes it)."""
    from clipvis.cli import segment
    from clipvis.cli.writers import overlay

    monkeypatch.setattr(overlay, "X264_MAX_SIDE", 48)
    passes: list[str] = []
    run_model = segment.SegmentRunner._run_model
    monkeypatch.setattr(segment.SegmentRunner, "_run_model",
                        lambda self, store, reader, source, *rest: passes.append(source.path.name) or
                        run_model(self, store, reader, source, *rest))
    wide = write_video(tmp_path / "wide.mp4", num_frames=1, height=32, width=66)
    small = write_video(tmp_path / "small.mp4", num_frames=1, height=48, width=48)
    result = run_cli(segment_args(tiny_weights, tmp_path / "out", str(wide), str(small)))
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error:")]
    assert errors[0] == (f"clipvis: error: {wide}: its frames are 66x32: overlay.mp4 cannot be written, the H.264 "
                         "encoder (libx264) takes at most 48 pixels a side (run it with --formats without overlay, "
                         "e.g. --formats ytvis,coco)"), result.stderr
    assert passes == ["small.mp4"] and (tmp_path / "out" / "small" / "overlay.mp4").is_file()
    assert json.loads((tmp_path / "out" / "wide" / "run.json").read_text())["status"] == "failed"
    rerun = run_cli(segment_args(tiny_weights, tmp_path / "out", str(wide), extra=("--formats", "ytvis,coco")))
    assert rerun.exit_code == 0 and (tmp_path / "out" / "wide" / "ytvis.json").is_file(), rerun.output


def test_a_pattern_that_matched_only_other_extensions_is_named_in_the_error(tmp_path, tiny_weights) -> None:
    """`segment 'gl/*'` over files of an extension not in the lists said "no input videos found", naming nothing: the
    error names the pattern and one of its matches now, before any weights load."""
    raw = tmp_path / "gl" / "raw.dat"
    raw.parent.mkdir()
    raw.write_bytes(b"x")
    pattern = str(tmp_path / "gl" / "*")
    result = run_cli(segment_args(tiny_weights, tmp_path / "out", pattern))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        f"clipvis: error: no input videos found ({pattern}: 1 match skipped as not a video by its extension: {raw}; "
        "name the file, or end the pattern in .dat, to have it decoded)"), result.stderr
    assert not (tmp_path / "out").exists()


def test_segment_video_writes_all_outputs(tmp_path, tiny_weights) -> None:
    video = write_video(tmp_path / "clip.mp4", num_frames=7, height=48, width=64)
    out = tmp_path / "out"
    result = run_cli(segment_args(tiny_weights, out, str(video)))
    assert result.exit_code == 0, result.output
    folder = out / "clip"
    listed = [line for line in result.stdout.splitlines() if line]
    assert sorted(Path(p).name for p in listed) == ["coco.json", "overlay.mp4", "ytvis.json"]
    ytvis = json.loads((folder / "ytvis.json").read_text())
    assert [c["name"] for c in ytvis["categories"]] == ["box", "sky"]
    assert ytvis["videos"][0]["id"] == 1 and ytvis["videos"][0]["length"] == 7
    assert 0 < len(ytvis["annotations"]) <= 50
    for ann in ytvis["annotations"]:
        assert ann["video_id"] == 1 and ann["category_id"] in (1, 2)
        assert len(ann["segmentations"]) == 7
        for rle in ann["segmentations"]:
            if rle is not None:
                assert mask_utils.decode(rle).shape == (48, 64)
    scores = [a["score"] for a in ytvis["annotations"]]
    assert scores == sorted(scores, reverse=True)
    coco = json.loads((folder / "coco.json").read_text())
    assert len(coco["images"]) == 7
    assert all(mask_utils.decode(a["segmentation"]).shape == (48, 64) for a in coco["annotations"])
    with av.open(str(folder / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = list(container.decode(stream))
    assert len(decoded) == 7 and (decoded[0].height, decoded[0].width) == (48, 64)
    manifest = json.loads((folder / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["frames"] == 7
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == [".clipvis.lock"]  # no temp files left


def test_stride_max_frames_stdin_and_skip_existing(tmp_path, tiny_weights) -> None:
    video = write_video(tmp_path / "long.mp4", num_frames=12)
    out = tmp_path / "out"
    args = segment_args(tiny_weights, out, "-", extra=("--stride", "2", "--max-frames", "4", "--formats", "ytvis"))
    result = run_cli(args, stdin=f"{video}\n")
    assert result.exit_code == 0, result.output
    ytvis = json.loads((out / "long" / "ytvis.json").read_text())
    assert ytvis["videos"][0]["length"] == 4
    assert ytvis["videos"][0]["frame_indices"] == [0, 2, 4, 6]
    assert all(len(a["segmentations"]) == 4 for a in ytvis["annotations"])
    assert not (out / "long" / "overlay.mp4").exists()
    before = (out / "long" / "ytvis.json").stat().st_mtime_ns
    again = run_cli(args, stdin=f"{video}\n")  # same settings: skipped, nothing rewritten
    assert again.exit_code == 0 and again.stdout.strip() == ""
    assert (out / "long" / "ytvis.json").stat().st_mtime_ns == before
    redo = run_cli([*args, "--overwrite"], stdin=f"{video}\n")
    assert redo.exit_code == 0 and "ytvis.json" in redo.stdout


def test_a_video_given_again_through_a_symbolic_link_is_skipped_as_complete(tmp_path, tiny_weights) -> None:
    """`segment clip.mp4 -o out`, then `segment clip_link.mp4 -o out` (a link to it): the second run made
    `out/clip_link/` and ran the video again. It comes back to `out/clip/` and skips it as complete."""
    video = write_video(tmp_path / "clip.mp4", num_frames=2)
    (tmp_path / "clip_link.mp4").symlink_to(video.name)
    out = tmp_path / "out"
    first = run_cli(segment_args(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    assert first.exit_code == 0 and first.stdout == f"{out / 'clip' / 'ytvis.json'}\n", first.output
    again = run_cli(segment_args(tiny_weights, out, str(tmp_path / "clip_link.mp4"), extra=("--formats", "ytvis")))
    assert again.exit_code == 0 and again.stdout == "", again.output
    assert again.stderr.splitlines() == ["clipvis: 1 skipped (already complete)"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["clip"]


def test_null_separated_paths_carry_names_with_newlines(tmp_path, tiny_weights) -> None:
    """`find -print0 | clipvis segment --null - ... | xargs -0`: a file name holding a newline arrives whole on stdin
    and its outputs are listed whole on stdout, each path ended by NUL."""
    odd = write_video(tmp_path / "line\nbreak.mp4", num_frames=3)
    plain = write_video(tmp_path / "plain.mp4", num_frames=3)
    out = tmp_path / "out"
    args = segment_args(tiny_weights, out, "-", extra=("--null", "--formats", "ytvis,coco"))
    result = run_cli(args, stdin=f"{odd}\0{plain}\0")
    assert result.exit_code == 0, result.output
    listed = result.stdout_bytes.split(b"\0")
    assert listed[-1] == b"" and b"\n" not in result.stdout_bytes.replace(b"line\nbreak", b"")
    paths = [Path(os.fsdecode(raw)) for raw in listed[:-1]]
    assert sorted((p.parent.name, p.name) for p in paths) == [
        ("line\nbreak", "coco.json"), ("line\nbreak", "ytvis.json"), ("plain", "coco.json"), ("plain", "ytvis.json")
    ]
    assert all(p.is_file() for p in paths)
    newline_list = run_cli(args, stdin=f"{plain}\n")  # made without -print0: said, not "no such file"
    assert newline_list.exit_code == 2 and "holds newlines but no NUL character" in newline_list.output
    without = run_cli([*segment_args(tiny_weights, tmp_path / "lines", "-", extra=("--formats", "ytvis"))],
                      stdin=f"{plain}\n")  # newline-separated stays the default
    assert without.exit_code == 0 and without.stdout_bytes.endswith(b"ytvis.json\n"), without.output


def test_inputs_sharing_a_stem_beside_a_foreign_folder_get_their_folders_in_input_order_in_every_shard(
    tmp_path, tiny_weights
) -> None:
    """`same/a/clip.mp4` (id 1) got `clip-3/` and `same/b/clip.mp4` (id 2) `clip-2/` when `OUT/clip/` held files of
    someone else's. In input order, as one process and as two shards run in either order."""
    for folder in "ab":
        (tmp_path / "same" / folder).mkdir(parents=True)
        write_video(tmp_path / "same" / folder / "clip.mp4", num_frames=2)

    def folders(out: Path) -> dict[str, str]:
        found = {}
        for manifest in out.glob("*/run.json"):
            found[Path(json.loads(manifest.read_text())["input"]).parent.name] = manifest.parent.name
        return found

    for runs in ([None], ["0/2", "1/2"], ["1/2", "0/2"]):
        out = tmp_path / f"out{len(runs)}{runs[0]}".replace("/", "_")
        (out / "clip").mkdir(parents=True)
        (out / "clip" / "notes.txt").write_text("mine")
        for shard in runs:
            extra = ("--formats", "ytvis", *(("--shard", shard) if shard else ()))
            result = run_cli(segment_args(tiny_weights, out, str(tmp_path / "same"), extra=extra))
            assert result.exit_code == 0, result.output
        assert folders(out) == {"a": "clip-2", "b": "clip-3"}, runs
        assert [p.name for p in (out / "clip").iterdir()] == ["notes.txt"]  # never written into


def test_the_same_weights_by_another_path_are_the_same_run(tmp_path, tiny_weights, monkeypatch) -> None:
    """`--skip-existing` knows a weights file by its resolved path: `w.safetensors` typed in its folder, `./w...` or
    the absolute path from elsewhere is the same run. Outputs an earlier clipvis recorded under the path as typed are
    reused when the same path is typed again."""
    from clipvis.cli.writers import RunManifest, config_hash

    video = write_video(tmp_path / "clip.mp4")
    (tmp_path / "w").mkdir()
    weights = tmp_path / "w" / "tiny.safetensors"
    weights.write_bytes(tiny_weights.read_bytes())
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path / "w")
    first = run_cli(segment_args(Path("tiny.safetensors"), out, str(video), extra=("--formats", "ytvis")))
    assert first.exit_code == 0 and "ytvis.json" in first.stdout, first.output
    manifest = RunManifest.read(out / "clip" / "run.json")
    assert manifest.weights == str(weights.resolve())
    monkeypatch.chdir(tmp_path)
    for spelling in (weights, Path("w") / "." / "tiny.safetensors"):
        again = run_cli(segment_args(spelling, out, str(video), extra=("--formats", "ytvis")))
        assert again.exit_code == 0 and again.stdout == "", (spelling, again.output)
    # as an earlier version recorded it: the weights as typed
    legacy = json.loads((out / "clip" / "run.json").read_text())
    legacy["weights"] = "w/tiny.safetensors"
    legacy["config_hash"] = config_hash("w/tiny.safetensors", legacy["vocabulary"], legacy["options"])
    (out / "clip" / "run.json").write_text(json.dumps(legacy))
    same = run_cli(segment_args(Path("w/tiny.safetensors"), out, str(video), extra=("--formats", "ytvis")))
    assert same.exit_code == 0 and same.stdout == "", same.output
    other = run_cli(segment_args(weights, out, str(video), extra=("--formats", "ytvis")))
    assert other.exit_code == 0 and "ytvis.json" in other.stdout  # not provably the same run: redone


def test_image_folder_is_one_video(tmp_path, tiny_weights) -> None:
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, frame in enumerate(frames_of(5, 40, 56)):
        Image.fromarray(frame).save(folder / f"{i + 1}.png")  # 1.png .. 5.png, natural order
    out = tmp_path / "out"
    result = run_cli(segment_args(tiny_weights, out, str(folder), extra=("--formats", "ytvis,coco")))
    assert result.exit_code == 0, result.output
    ytvis = json.loads((out / "seq" / "ytvis.json").read_text())
    assert ytvis["videos"][0]["length"] == 5 and ytvis["videos"][0]["height"] == 40
    assert ytvis["videos"][0]["fps"] == 30.0
    # YouTube-VIS frames are every 5th of a 30 fps video: --image-fps 6 (a new setting: the input runs again)
    result = run_cli(segment_args(tiny_weights, out, str(folder), extra=("--formats", "ytvis", "--image-fps", "6")))
    assert result.exit_code == 0 and result.stdout, result.output
    assert json.loads((out / "seq" / "ytvis.json").read_text())["videos"][0]["fps"] == 6.0
    result = run_cli(segment_args(tiny_weights, out, str(folder), extra=("--formats", "ytvis", "--image-fps", "6")))
    assert result.exit_code == 0 and not result.stdout  # complete with these settings: skipped
    fast = run_cli(segment_args(tiny_weights, out, str(folder), extra=("--image-fps", "10000")))
    assert fast.exit_code == 2  # past 1000 frames/s the overlay's timestamps collided: 0 decodable frames
    # a video keeps its own rate: --image-fps changes none of its results, and re-ran every video of a batch
    video = write_video(tmp_path / "clip.mp4", num_frames=2)
    first = run_cli(segment_args(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    assert first.exit_code == 0 and first.stdout, first.output
    again = run_cli(segment_args(tiny_weights, out, str(video), extra=("--formats", "ytvis", "--image-fps", "6")))
    assert again.exit_code == 0 and not again.stdout, again.output


def test_overlay_min_score_reruns_nothing_when_no_overlay_is_written(tmp_path, tiny_weights) -> None:
    """`--overlay-min-score` changes overlay.mp4 alone: with `--formats` writing no overlay, changing it re-ran the
    model over every input (`re-running: --overlay-min-score differs ...`). Now such inputs are complete, also those
    an earlier clipvis recorded with the threshold; with the overlay written it still runs them again."""
    from clipvis.cli.writers.manifest import config_hash

    video = write_video(tmp_path / "clip.mp4", num_frames=2)
    out = tmp_path / "out"
    first = run_cli(segment_args(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    assert first.exit_code == 0 and first.stdout, first.output
    again = run_cli(segment_args(tiny_weights, out, str(video), extra=("--formats", "ytvis", "--overlay-min-score",
                                                                       "0.5")))
    assert again.exit_code == 0 and not again.stdout and "re-running" not in again.stderr, again.output
    # as an earlier clipvis recorded it: with the threshold, here 0.3
    legacy = json.loads((out / "clip" / "run.json").read_text())
    assert "overlay_min_score" not in legacy["options"]
    legacy["options"]["overlay_min_score"] = 0.3
    legacy["config_hash"] = config_hash(legacy["weights"], legacy["vocabulary"], legacy["options"])
    (out / "clip" / "run.json").write_text(json.dumps(legacy))
    same = run_cli(segment_args(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    assert same.exit_code == 0 and not same.stdout and "re-running" not in same.stderr, same.output
    # with the overlay written the threshold is a result option
    drawn = run_cli(segment_args(tiny_weights, out, str(video), extra=("--formats", "ytvis,overlay")))
    assert drawn.exit_code == 0 and "overlay.mp4" in drawn.stdout, drawn.output
    redrawn = run_cli(segment_args(tiny_weights, out, str(video), extra=("--formats", "ytvis,overlay",
                                                                         "--overlay-min-score", "0.5")))
    assert "re-running: --overlay-min-score differs from the earlier run (0.5 vs 0.2)" in redrawn.stderr, \
        redrawn.output


def test_images_beside_a_video_are_said_not_processed(tmp_path, tiny_weights) -> None:
    folder = tmp_path / "JPEGImages" / "vidA"
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames_of(4, 40, 56)):
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg")
    write_video(folder / "preview.mp4", num_frames=2)
    result = run_cli(segment_args(tiny_weights, tmp_path / "out", str(tmp_path / "JPEGImages"),
                                  extra=("--formats", "ytvis", "--log-format", "jsonl")))
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [event["message"] for event in events if event["event"] == "warning"] == [
        f"{folder}: its 4 images are not processed: it holds a video too (a folder of images is one video only when "
        "it holds no video and no sub-folder)"
    ]


def test_an_empty_list_on_stdin_is_nothing_to_do(tmp_path, tiny_weights) -> None:
    """`find -newer stamp | clipvis segment -` when nothing is new exited 2, as a usage error. An empty folder or a
    glob matching nothing is still an error."""
    out = tmp_path / "out"
    result = run_cli(segment_args(tiny_weights, out, "-"), stdin="")
    assert result.exit_code == 0 and result.stderr == "clipvis: no inputs on stdin: nothing to do\n", result.output
    assert result.stdout == "" and not out.exists()  # no weights loaded, no output root made
    result = run_cli(segment_args(tiny_weights, out, "-", extra=("--log-format", "jsonl")), stdin="\n")
    assert result.exit_code == 0, result.output
    [summary] = [json.loads(line) for line in result.stderr.splitlines()]
    assert summary["event"] == "summary" and summary["inputs"] == 0 and summary["status"] == "ok"
    assert summary["message"] == "no inputs on stdin: nothing to do"
    (tmp_path / "empty").mkdir()
    assert run_cli(segment_args(tiny_weights, out, "-", str(tmp_path / "empty")), stdin="").exit_code == 1
    assert run_cli(segment_args(tiny_weights, out, str(tmp_path / "*.txt")), stdin="").exit_code != 0


def test_broken_inputs_fail_alone(tmp_path, tiny_weights) -> None:
    good = write_video(tmp_path / "good.mp4", num_frames=4)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 3])
    out = tmp_path / "out"
    inputs = [str(empty), str(good), str(text), str(tmp_path / "missing.mp4"), str(truncated)]
    result = CliRunner().invoke(app, segment_args(tiny_weights, out, *inputs, extra=("--formats", "ytvis")))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error:")]
    assert len(errors) >= 4
    assert any("empty.mp4" in e for e in errors) and any("notes.mp4" in e for e in errors)
    assert any("missing.mp4" in e for e in errors)
    assert json.loads((out / "good" / "run.json").read_text())["status"] == "complete"
    assert json.loads((out / "good" / "ytvis.json").read_text())["videos"][0]["length"] == 4
    for stem in ("empty", "notes"):
        assert not (out / stem / "ytvis.json").exists()
        assert json.loads((out / stem / "run.json").read_text())["status"] == "failed"


def test_usage_and_weights_errors(tmp_path, tiny_weights) -> None:
    video = write_video(tmp_path / "v.mp4", num_frames=2)
    dup = run_cli(["segment", str(video), "--vocab", "cat,dog,cat", "--weights", str(tiny_weights)])
    assert dup.exit_code == 2 and "duplicate" in dup.output
    empty = run_cli(["segment", str(video), "--vocab", "cat,,dog", "--weights", str(tiny_weights)])
    assert empty.exit_code == 2
    classes = tmp_path / "classes.txt"
    classes.write_text("dog\ncat,\n")  # a trailing comma: an empty synonym (it was taken)
    empty = run_cli(["segment", str(video), "--vocab-file", str(classes), "--weights", str(tiny_weights)])
    assert empty.exit_code == 2 and "classes.txt, line 2: empty synonym in 'cat, '" in empty.output
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    two = write_video(tmp_path / "w.mp4", num_frames=2)
    unwritable = CliRunner().invoke(app, ["segment", str(video), str(two), "--vocab", "cat", "--weights",
                                          str(tiny_weights), "-o", str(a_file / "out")])
    assert unwritable.exit_code == 1  # one line for the batch, not one per input
    assert unwritable.stderr == (f"clipvis: error: -o {a_file / 'out'}: output not writable ({a_file} is a file, not "
                                 "a folder)\n")
    for extra in (["--max-tracks", "5"], ["--score-threshold", "0.3"]):  # --exact would keep its 50 regardless
        conflict = run_cli(["segment", str(video), "--vocab", "cat", "--weights", str(tiny_weights), "--exact", *extra])
        assert conflict.exit_code == 2 and "--exact writes the official evaluator's results" in conflict.output
    for option, value in (("--score-threshold", "nan"), ("--overlay-min-score", "inf")):
        not_finite = run_cli(["segment", str(video), "--vocab", "cat", "--weights", str(tiny_weights), option, value])
        assert not_finite.exit_code == 2 and "is not a finite number" in not_finite.output, not_finite.output
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    result = CliRunner().invoke(app, ["segment", str(video), "--vocab", "cat", "--weights", str(bad), "-o",
                                      str(tmp_path / "never_made")])
    assert result.exit_code == 1 and "bad.pth" in result.stderr and "\n" not in result.stderr.strip()
    assert not (tmp_path / "never_made").exists()  # the batch stopped before any input: no empty output root
    if not torch.cuda.is_available():
        cuda = CliRunner().invoke(app, ["segment", str(video), "--vocab", "cat", "--device", "cuda",
                                        "--weights", str(tiny_weights)])
        assert cuda.exit_code != 0 and "CUDA is not available" in cuda.stderr


def test_a_cuda_device_past_the_last_says_how_many_there_are(monkeypatch, capsys) -> None:
    """On a machine with two GPUs `--device cuda:2` is one line naming the devices there are (exit 1); `cuda:1` and
    `cuda` are kept, and a usage error (BadParameter) still guards callers that pass a device string of their own."""
    import typer

    from clipvis.cli.devices import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cuda") == "cuda"
    assert resolve_device("auto") == "cuda" and resolve_device("cpu") == "cpu"
    with pytest.raises(typer.Exit) as stopped:
        resolve_device("cuda:2")
    assert stopped.value.exit_code == 1
    said = capsys.readouterr().err
    assert said == "clipvis: error: --device cuda:2: this machine has 2 CUDA devices (cuda:0 to cuda:1)\n"
    assert resolve_device("cuda:01") == "cuda:1"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(typer.Exit):
        resolve_device("cuda")
    assert capsys.readouterr().err == "clipvis: error: --device cuda: CUDA is not available on this machine (use " \
                                      "--device cpu)\n"
    for device in ("cuda:x", "cudaX", "cuda:-1"):
        with pytest.raises(typer.BadParameter, match="--device must be auto, cpu, cuda or cuda:N"):
            resolve_device(device)


def test_an_output_root_named_like_the_default_weights_does_not_hide_them(tmp_path, monkeypatch) -> None:
    """`-o clipvis-lvis-r50` (the default --weights' name) failed every time: segment made the output root, then the
    resolver took that empty folder for the weights ("is a directory without a checkpoint"). The release is meant
    (here: not in the offline cache, which the error says) and no empty root is left."""
    monkeypatch.chdir(tmp_path)
    video = write_video(tmp_path / "v.mp4", num_frames=2)
    result = CliRunner().invoke(app, ["segment", str(video), "--vocab", "cat", "-o", "clipvis-lvis-r50"])
    assert result.exit_code == 1
    assert result.stderr.startswith("clipvis: error: checkpoint 'clipvis-lvis-r50' is not available: it is not in "
                                    "the cache and CLIPVIS_OFFLINE is set"), result.stderr
    assert "\n" not in result.stderr.strip() and not (tmp_path / "clipvis-lvis-r50").exists()


@pytest.mark.parametrize(("command", "option"), [
    (["segment", "{video}", "--vocab", "cat", "-o", "{out}", "--weights", "clipvis-lvis-r50"], "--weights"),
    (["export", "--to", "onnx", "--model", "clipvis-lvis-r50", "-o", "{out}/m.onnx"], "--model"),
], ids=["segment", "export"])
def test_a_release_that_cannot_be_had_names_the_option_that_takes_a_file(tmp_path, command, option) -> None:
    """A released checkpoint not in the offline cache ended "... instead of the name (load_model(PATH) in Python)." on
    the command line too: the CLI names its own option (docs/architecture.md), the library keeps the Python wording."""
    video = write_video(tmp_path / "v.mp4", num_frames=2)
    args = [arg.format(video=video, out=tmp_path / "out") for arg in command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("clipvis: error: checkpoint 'clipvis-lvis-r50' is not available: "), result.stderr
    assert result.stderr.endswith(
        f", or give the path of a checkpoint file you already have instead of the name ({option} PATH).\n"
    ), result.stderr


def test_jsonl_events(tmp_path, tiny_weights) -> None:
    video = write_video(tmp_path / "v.mp4", num_frames=3)
    result = CliRunner().invoke(app, segment_args(tiny_weights, tmp_path / "out", str(video),
                                                  extra=("--log-format", "jsonl", "--formats", "ytvis")))
    assert result.exit_code == 0
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert [e["event"] for e in events][0] == "batch_start"
    assert events[-2]["event"] == "video_done" and events[-2]["frames"] == 3
    assert events[-1] == {"event": "summary", "inputs": 1, "complete": 1, "skipped": 0, "failed": 0,
                          "already_complete": 0, "scope": "job", "status": "ok",
                          "message": None}


def test_jsonl_warnings_while_the_model_loads_are_events(tmp_path, tiny_weights) -> None:
    """A warning said while the model loads (here an unusable text-embedding cache) is a `warning` event like the
    others: with --log-format jsonl every stderr line is JSON."""
    video = write_video(tmp_path / "v.mp4", num_frames=2)
    result = CliRunner().invoke(app, segment_args(tiny_weights, tmp_path / "out", str(video),
                                                  extra=("--log-format", "jsonl", "--formats", "ytvis")),
                                env={"CLIPVIS_CACHE": "~nosuchuser/x"})
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stderr.splitlines()]  # fails on a plain `clipvis: warning:` line
    warnings = [e for e in events if e["event"] == "warning"]
    assert len(warnings) == 1 and "nosuchuser" in warnings[0]["message"]
    assert events[0]["event"] == "warning" and events[1]["event"] == "batch_start"


class _TinyRelease:
    """Stands in for a registry entry whose released file is the tiny model (its config whole, as a release's is)."""

    def __init__(self, config: dict) -> None:
        self.config = config

    def model_config(self) -> dict:
        return dict(self.config)


@pytest.mark.parametrize("log_format", ["jsonl", "human"])
def test_a_releases_download_is_said_in_the_log_format_and_gdown_says_nothing(
    tmp_path, monkeypatch, tiny_model, tiny_config, isolated_cache, log_format
) -> None:
    """gdown printed "Downloading...", "From:", "To: <staging folder>" and its progress bar on stderr: with
    --log-format jsonl, lines that were no JSON before the inputs ran. The download's start is a `note` event (a
    `clipvis:` line for people) naming the release, its Drive page and the file in the cache; nothing of gdown's
    reaches stderr."""
    import sys

    import gdown

    from clipvis.model import build as build_module
    from clipvis.model import to_official_state_dict
    from clipvis.weights import get_pretrained

    official = tmp_path / "tiny.pth"
    torch.save({"model": to_official_state_dict(tiny_model)}, official)
    release = {k: v for k, v in tiny_config().to_dict().items() if k not in ("clip_model_name", "clip_pretrained")}
    monkeypatch.setattr(build_module, "find_pretrained", lambda name: _TinyRelease(release))

    def like_gdown(*, id, output, quiet=False, progress=None, **kwargs):  # gdown 6.x, writing the tiny model
        data = official.read_bytes()
        if not quiet:
            print(f"Downloading...\nFrom: https://drive.google.com/uc?id={id}\nTo: {output}", file=sys.stderr)
            print(f"\r100%|##########| {len(data)}/{len(data)} [00:00<00:00, 9.99MB/s]", file=sys.stderr)
        if progress is not None:
            progress(len(data), len(data))
        Path(output).write_bytes(data)
        return output

    monkeypatch.setattr(gdown, "download", like_gdown)
    monkeypatch.delenv("CLIPVIS_OFFLINE")
    video = write_video(tmp_path / "v.mp4", num_frames=2)
    result = CliRunner().invoke(app, ["segment", str(video), "--vocab", "box", "-o", str(tmp_path / "out"),
                                      "--device", "cpu", "--formats", "ytvis", "--log-format", log_format])
    assert result.exit_code == 0, result.output
    target = isolated_cache / "weights" / "clipvis_lvis_r50_7.pth"
    said = f"downloading clipvis-lvis-r50 from {get_pretrained('clipvis-lvis-r50').url} to {target}"
    assert target.read_bytes() == official.read_bytes()
    if log_format == "jsonl":
        events = [json.loads(line) for line in result.stderr.splitlines()]  # gdown's lines are no JSON
        assert events[0] == {"event": "note", "message": said} and events[1]["event"] == "batch_start"
        assert events[-1]["event"] == "summary" and events[-1]["status"] == "ok"
    else:
        lines = result.stderr.splitlines()
        assert lines[0] == f"clipvis: {said}" and all(line.startswith("clipvis: ") for line in lines), lines


def test_golden_case_through_the_cli(tmp_path, golden_case_name, golden_case) -> None:
    case = golden_case(golden_case_name)
    out = tmp_path / "out"
    args = ["segment", str(case / "frames"), "--vocab-file", str(case / "vocab.txt"), "--weights",
            str(case / "model.pth"), "--config", str(case / "official_config.yaml"), "--clip-config",
            str(case / "open_clip_config.json"), "--exact", "--formats", "ytvis", "-o", str(out), "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    ours = json.loads((out / "frames" / "ytvis.json").read_text())["annotations"]
    expected = json.loads((case / "expected" / "results.json").read_text())
    assert len(ours) == len(expected)
    unused = list(range(len(ours)))
    for entry in expected:
        match = next(i for i in unused if ours[i]["category_id"] == entry["category_id"]
                     and abs(ours[i]["score"] - entry["score"]) <= 1e-4)
        unused.remove(match)
        for rle_expected, rle_ours in zip(entry["segmentations"], ours[match]["segmentations"], strict=True):
            a = mask_utils.decode(rle_expected).astype(bool)
            b = mask_utils.decode(rle_ours).astype(bool) if rle_ours else np.zeros_like(a)
            union = (a | b).sum()
            assert union == 0 or (a & b).sum() / union >= 0.99


def test_version_and_help() -> None:
    assert run_cli(["--version"]).stdout.startswith("clipvis ")
    text = run_cli(["--help"]).stdout
    assert "segment" in text and "evaluate" in text


def test_a_vocabulary_file_saved_with_a_byte_order_mark_gives_clean_class_names(tmp_path) -> None:
    """Windows Notepad starts UTF-8 files with U+FEFF: it ended up in the first class name ('\\ufeffcar')."""
    from clipvis.cli.vocabulary_options import parse_vocabulary

    vocab = tmp_path / "classes.txt"
    vocab.write_bytes("car, automobile\r\ncafé\r\n".encode("utf-8-sig"))
    assert parse_vocabulary(None, vocab) == ["car, automobile", "café"]


def test_a_vocabulary_file_line_is_one_class_whatever_it_holds(tmp_path) -> None:
    """str.splitlines() also split a line at a vertical tab, a form feed or U+2028: one line became two classes
    silently, where --vocab refused the same name."""
    import typer

    from clipvis.cli.vocabulary_options import parse_vocabulary

    vocab = tmp_path / "classes.txt"
    vocab.write_text("car\r\nper\tson\rdog")  # Windows and old Mac line ends; a tab inside a name is kept
    assert parse_vocabulary(None, vocab) == ["car", "per\tson", "dog"]
    for inside, problem in (("\v", "a control character (U+000B)"), ("\u2028", "a line separator (U+2028)")):
        vocab.write_text(f"car\nper{inside}son\n")
        with pytest.raises(typer.BadParameter, match=rf"the class name 'per.*son' holds {re.escape(problem)}$"):
            parse_vocabulary(None, vocab)


def test_a_vocabulary_file_as_people_write_them(tmp_path) -> None:
    """Comment lines became classes ('# my classes' got tracks), a byte order mark inside a file (`cat a.txt b.txt`)
    made a second 'car', and the errors named no line (hunter 82)."""
    import typer

    from clipvis.cli.vocabulary_options import parse_vocabulary

    vocab = tmp_path / "classes.txt"
    vocab.write_bytes("# my classes\n  # indented comment\ncar\n\ufeffperson\u200b\n\nroad, street\n".encode())
    assert parse_vocabulary(None, vocab) == ["car", "person", "road, street"]
    assert parse_vocabulary("car\u200b, \ufeffdog", None) == ["car", "dog"]
    with pytest.raises(typer.BadParameter, match=r"--vocab is missing its class names \(it took the option "):
        parse_vocabulary("--overwrite", None)  # `--vocab --overwrite` made a class '--overwrite'
    for data, message in (
        (b"car\n\xef\xbb\xbfcar\n", "classes.txt: duplicate class names (case aside): 'car' (lines 1, 2)"),
        (b"car\nBIG TREE\ndog\nbig tree\n", "duplicate class names (case aside): 'big tree' (lines 2, 4)"),
        # a synonym another class lists (or names) too: every object of it was found twice
        (b"cat, dog\ndog\n", "classes.txt: class names or synonyms in more than one class (case aside): 'dog' (lines "
         "1, 2)"),
        (b"car, vehicle\nperson\ntruck, Vehicle\n", "in more than one class (case aside): 'vehicle' (lines 1, 3)"),
        (b"dog\ncar,\n", "classes.txt, line 2: empty synonym in 'car, ' (synonyms are separated by "
         "commas)"),
        (b"\n  \n# only a comment\n", "classes.txt: no class names (one a line; lines starting with # are comments)"),
        ("car\n".encode("utf-16"), "classes.txt: the file is UTF-16 or UTF-32 text: save it as UTF-8"),
        ("car\n".encode("utf-16-le"), "classes.txt: the file is UTF-16 or UTF-32 text: save it as UTF-8"),
        (b"car\ncaf\xe9\n", "classes.txt, line 2: not UTF-8 text (byte 0xe9): save the file as UTF-8"),
        (b"\xef\xbb\xbfcar\nperson\nd\n\xe9t\xe9\n", "classes.txt, line 4: not UTF-8 text (byte 0xe9)"),  # after a BOM
        (b"car\rdog\rca\xe9t\r", "classes.txt, line 3: not UTF-8 text (byte 0xe9)"),  # old Mac line ends
    ):
        vocab.write_bytes(data)
        with pytest.raises(typer.BadParameter) as caught:
            parse_vocabulary(None, vocab)
        assert message in str(caught.value), (data, str(caught.value))


@pytest.mark.parametrize("command", [["segment", "{frames}", "--vocab", "cat", "--weights", "clipvis-lvis-r50", "-o",
                                      "{out}"],
                                     ["export", "--to", "onnx", "--model", "clipvis-lvis-r50", "-o", "{out}/x.onnx"]])
def test_a_warning_of_the_weights_download_is_said_before_the_error_that_ends_the_run(tmp_path, monkeypatch, command):
    """segment and export said a warning of the weights' download (its lock cannot be opened) only when the model
    then loaded: one that failed dropped it (train said it)."""
    import warnings

    import clipvis.model
    from clipvis.weights import WeightsNotAvailableError

    def warns_then_fails(weights, **kwargs):
        warnings.warn("lock: cannot open this download lock", RuntimeWarning, stacklevel=2)
        raise WeightsNotAvailableError("not available", checkpoint=weights, url="u", target="t")

    monkeypatch.setattr(clipvis.model, "load_model", warns_then_fails)
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(frames_of(1, 32, 48)[0]).save(frames / "000.png")
    args = [arg.format(frames=frames, out=tmp_path / "out") for arg in command]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output + repr(result.exception)
    lines = result.stderr.splitlines()
    assert lines[0] == "clipvis: warning: lock: cannot open this download lock", result.stderr
    assert lines[1].startswith("clipvis: error: ") and "not available" in lines[1], result.stderr
    assert len(lines) == 2, result.stderr


def test_a_vocabulary_the_predictor_refuses_is_named_not_the_weights(tmp_path, tiny_weights, capsys) -> None:
    """evaluate's GT categories ('a,,b') were reported as "weights <path>: empty synonym ...", blaming the weights."""
    import typer

    from clipvis.cli.predictor_loading import load_predictor
    from clipvis.cli.segment import SegmentOptions

    options = SegmentOptions(vocabulary=["car", "a,,b"], weights=str(tiny_weights), output=tmp_path, device="cpu",
                             allow_duplicate_names=True)
    with pytest.raises(typer.Exit):
        load_predictor(options, vocabulary_source="the GT categories of gt.json")
    assert capsys.readouterr().err.strip().splitlines() == [
        "clipvis: error: the GT categories of gt.json: empty synonym in the class 'a,,b' (synonyms are separated by "
        "commas)"]
    # segment names its --vocab-file (it said "the vocabulary: ..." for names CLIP reads alike: review8)
    video = write_video(tmp_path / "v.mp4", num_frames=2)
    classes = tmp_path / "classes.txt"
    classes.write_text("big road\nbig  road\n")
    result = CliRunner().invoke(app, ["segment", str(video), "--vocab-file", str(classes), "--weights",
                                      str(tiny_weights), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.stderr.startswith(f"clipvis: error: {classes}: class names that CLIP "
                                                              "reads alike")


def test_the_configs_detections_per_image_is_the_default_number_of_tracks(tmp_path, tiny_weights) -> None:
    """`--config` with TEST.DETECTIONS_PER_IMAGE: 3 gave 50 tracks without --exact (the option's own default won),
    and 3 with --exact or the library."""
    video = write_video(tmp_path / "clip.mp4", num_frames=3)
    config = tmp_path / "config.yaml"
    config.write_text("TEST:\n  DETECTIONS_PER_IMAGE: 3\n")

    def tracks(out: str, *extra: str) -> int:
        result = run_cli(segment_args(tiny_weights, tmp_path / out, str(video),
                                      extra=("--formats", "ytvis", "--config", str(config), *extra)))
        assert result.exit_code == 0, result.output
        return len(json.loads((tmp_path / out / "clip" / "ytvis.json").read_text())["annotations"])

    assert tracks("default") == 3
    assert tracks("exact", "--exact") == 3
    assert tracks("more", "--max-tracks", "5") == 5  # 6 queries x 2 classes: 12 candidates


def test_a_large_vocabulary_is_said_before_its_text_is_encoded_once(tmp_path, tiny_weights, monkeypatch) -> None:
    """20,000 class names took minutes of text encoding without a word, nor a JSON event (hunter 82); once in the
    cache they are not encoded again, and nothing is said."""
    monkeypatch.setattr("clipvis.cli.predictor_loading.LONG_TEXT_ENCODING_PROMPTS", 28)  # 2 classes x 14 prompts
    video = write_video(tmp_path / "v.mp4", num_frames=2)
    ytvis_only = ("--formats", "ytvis")
    first = CliRunner().invoke(app, segment_args(tiny_weights, tmp_path / "a", str(video), extra=ytvis_only))
    assert first.exit_code == 0, first.output
    assert "clipvis: warning: encoding the 2 class names' 28 prompts with CLIP's text tower first" in first.stderr
    again = CliRunner().invoke(app, segment_args(tiny_weights, tmp_path / "b", str(video), extra=ytvis_only))
    assert again.exit_code == 0 and "encoding the" not in again.stderr


def test_a_config_without_test_resize_runs_frames_at_their_own_size(tmp_path, tiny_weights) -> None:
    """INPUT.MIN_SIZE_TEST 0 (detectron2: no test resize) was refused as not a positive integer: it now runs each
    frame at its own size, as a short edge equal to the frame's (a resize to the same size) does."""
    video = write_video(tmp_path / "clip.mp4", num_frames=5, height=48, width=64)
    results = []
    for short_edge in (0, 48, 96):
        config = tmp_path / f"edge{short_edge}.yaml"
        config.write_text(f"INPUT:\n  MIN_SIZE_TEST: {short_edge}\n")
        out = tmp_path / f"out{short_edge}"
        result = run_cli(segment_args(tiny_weights, out, str(video), extra=("--config", str(config), "--formats",
                                                                            "ytvis")))
        assert result.exit_code == 0, result.output
        results.append(json.loads((out / "clip" / "ytvis.json").read_text())["annotations"])
    unresized, same_size, doubled = results
    assert unresized == same_size and unresized != doubled


def test_a_rerun_says_why_an_input_complete_before_runs_again_and_counts_those_skipped(tmp_path, tiny_weights) -> None:
    """`--skip-existing`: a rerun with other settings ran every input again, its log that of a fresh run, and a
    rerun that skipped every input printed nothing. Now each input run again says what differs from the earlier run
    (a line; a `video_rerun` event), and the last line counts the inputs skipped as complete."""
    first, second = write_video(tmp_path / "a.mp4", num_frames=2), write_video(tmp_path / "b.mp4", num_frames=2)
    out = tmp_path / "out"

    def run(*extra: str, inputs: tuple[Path, ...] = (first, second), vocab: str = "box,sky", score: str = "0.3"):
        return run_cli(["segment", *map(str, inputs), "--vocab", vocab, "--weights", str(tiny_weights), "-o",
                        str(out), "--device", "cpu", "--formats", "ytvis", "--score-threshold", score, *extra])

    assert run().exit_code == 0
    again = run()
    assert again.exit_code == 0 and again.stdout == ""
    assert again.stderr.splitlines() == ["clipvis: 2 skipped (already complete)"]

    other = run(inputs=(first,), score="0.5")
    assert other.exit_code == 0 and other.stdout.strip() == str(out / "a" / "ytvis.json")
    assert f"clipvis: {first}: re-running: --score-threshold differs from the earlier run (0.5 vs 0.3)" \
        in other.stderr.splitlines(), other.stderr

    events = run("--log-format", "jsonl", vocab="box", score="0.5")
    assert events.exit_code == 0, events.output
    lines = [json.loads(line) for line in events.stderr.splitlines()]
    reruns = [event for event in lines if event["event"] == "video_rerun"]
    assert reruns == [
        {"event": "video_rerun", "input": str(first), "stem": "a", "reason": "the vocabulary differs from the earlier "
         "run (1 class(es) now, 2 before)", "changed": ["the vocabulary"]},
        {"event": "video_rerun", "input": str(second), "stem": "b", "reason": "the vocabulary and "
         "--score-threshold differ from the earlier run (the vocabulary: 1 class(es) now, 2 before; "
         "--score-threshold: 0.5 vs 0.3)", "changed": ["the vocabulary", "--score-threshold"]},
    ]
    assert lines.index(reruns[0]) + 1 == [e["event"] for e in lines].index("video_start")  # said before it runs
    assert lines[-1]["message"] is None  # nothing skipped

    os.utime(first, ns=(1, 1))
    mixed = run(vocab="box", score="0.5")
    assert mixed.stderr.splitlines()[0] == f"clipvis: {first}: re-running: the input changed since the earlier run " \
        "(its modification time)", mixed.stderr
    assert mixed.stderr.splitlines()[-1] == "clipvis: 1 skipped (already complete)", mixed.stderr
    assert lines[-1]["already_complete"] == 0  # a number a program reads, not only the message's words
    skipped = json.loads(run("--log-format", "jsonl", vocab="box", score="0.5").stderr.splitlines()[-1])
    assert (skipped["skipped"], skipped["already_complete"], skipped["message"]) == \
        (2, 2, "2 skipped (already complete)"), skipped
    redo = run("--overwrite", vocab="box", score="0.5")  # asked for: nothing to explain
    assert redo.exit_code == 0 and "re-running" not in redo.stderr and "skipped" not in redo.stderr


def test_the_closing_line_counts_inputs_skipped_because_another_process_writes_them(tmp_path, tiny_weights) -> None:
    """A run whose input was skipped because another process held its folder ended with no closing line (or
    `1 skipped (already complete)` when 2 were skipped), exit 0, though that input may never be done (the other
    process can die). Now the line counts both kinds of skip."""
    from clipvis.cli.locks import FolderLock

    first, second = write_video(tmp_path / "a.mp4", num_frames=2), write_video(tmp_path / "b.mp4", num_frames=2)
    out = tmp_path / "out"
    with FolderLock(out / "b"):  # as a running `clipvis segment` holds it (flock: another open file, so busy)
        alone = run_cli(segment_args(tiny_weights, out, str(second), extra=("--formats", "ytvis")))
        assert alone.exit_code == 0, alone.output
        assert alone.stderr.splitlines()[-1] == "clipvis: 1 skipped (being written by another process)", alone.stderr
        assert run_cli(segment_args(tiny_weights, out, str(first), extra=("--formats", "ytvis"))).exit_code == 0
        both = run_cli(segment_args(tiny_weights, out, str(first), str(second),
                                    extra=("--formats", "ytvis", "--log-format", "jsonl")))
    summary = json.loads(both.stderr.splitlines()[-1])
    assert (summary["skipped"], summary["already_complete"]) == (2, 1), summary
    assert summary["message"] == "2 skipped (1 already complete, 1 being written by another process)", summary


def test_shards_given_the_same_inputs_in_other_orders_number_them_as_one_process_does(tmp_path, tiny_weights) -> None:
    """Under --shard a video's id came from the order that shard was given its inputs, not the sorted list the
    shards are cut from: shards given `v0 v1` and `v1 v0` wrote id 1 for both videos. Now every shard numbers the
    inputs in the order one process gives the folder holding them (v2 before v10, as a folder walk goes)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    names = ["v2", "v10", "v1"]
    for name in names:
        write_video(videos / f"{name}.mp4", num_frames=2)

    def ids(out: Path) -> dict[str, int]:
        return {name: json.loads((out / name / "ytvis.json").read_text())["videos"][0]["id"] for name in names}

    single = tmp_path / "single"
    assert run_cli(segment_args(tiny_weights, single, str(videos), extra=("--formats", "ytvis"))).exit_code == 0
    sharded = tmp_path / "sharded"
    for shard, order in (("0/2", ["v10", "v2", "v1"]), ("1/2", ["v2", "v1", "v10"])):
        inputs = [str(videos / f"{name}.mp4") for name in order]
        result = run_cli(segment_args(tiny_weights, sharded, *inputs, extra=("--formats", "ytvis", "--shard", shard)))
        assert result.exit_code == 0, result.output
    assert ids(single) == {"v1": 1, "v2": 2, "v10": 3}
    assert ids(sharded) == ids(single)


def test_a_listed_name_with_spaces_at_its_ends_is_quoted_in_its_error(tmp_path, tiny_weights) -> None:
    """`printf ' a.mp4 \\n' | clipvis segment -` said `clipvis: error:  a.mp4 : no such file ...`, where the spaces
    that make the name wrong cannot be seen; such a name is now quoted. An ordinary name stays unquoted."""
    video = write_video(tmp_path / "clip.mp4", num_frames=1)
    result = run_cli(segment_args(tiny_weights, tmp_path / "out", "-", extra=("--formats", "ytvis")),
                     stdin=f" {video} \n{tmp_path / 'gone.mp4'}\n")
    assert result.exit_code == 1, result.output
    assert f"clipvis: error: ' {video} ': no such file" in result.output, result.output
    assert f"clipvis: error: {tmp_path / 'gone.mp4'}: no such file" in result.output, result.output


def test_a_format_named_twice_in_formats_is_one_format(tmp_path, tiny_weights) -> None:
    """`--formats ytvis,ytvis,coco` was recorded as ['coco', 'ytvis', 'ytvis'], so a later `--formats coco,ytvis`
    ran the model again over every input of the same settings; a repeat is dropped, as `export --to` drops one."""
    from clipvis.cli.segment import SegmentOptions

    video = write_video(tmp_path / "clip.mp4", num_frames=1)
    out = tmp_path / "out"
    first = run_cli(segment_args(tiny_weights, out, str(video), extra=("--formats", "ytvis,ytvis,coco")))
    assert first.exit_code == 0, first.output
    assert json.loads((out / "clip" / "run.json").read_text())["options"]["formats"] == ["coco", "ytvis"]
    again = run_cli(segment_args(tiny_weights, out, str(video), extra=("--formats", "coco,ytvis")))
    assert again.exit_code == 0 and again.stdout == "" and "re-running" not in again.stderr, again.stderr
    assert SegmentOptions(["a"], "w", formats=("ytvis", "ytvis")).result_options()["formats"] == ["ytvis"]


def test_a_tilde_after_the_equals_sign_of_output_is_the_home_folder(tmp_path, tiny_weights, monkeypatch) -> None:
    """`--output=~/results` (bash leaves a `~` after `=` as it is) wrote into a folder named `~` in the working
    folder; `--weights` and train's -o expanded it. It is the home folder now."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    video = write_video(tmp_path / "clip.mp4", num_frames=1)
    result = run_cli(["segment", str(video), "--vocab", "box", "--weights", str(tiny_weights), "--output=~/results",
                      "--device", "cpu", "--formats", "ytvis"])
    assert result.exit_code == 0, result.output
    assert (home / "results" / "clip" / "ytvis.json").is_file() and not (work / "~").exists()
    assert result.stdout.strip() == str(home / "results" / "clip" / "ytvis.json")


@pytest.mark.parametrize("command", ["segment", "evaluate"])
def test_a_short_output_option_with_an_equals_sign_is_a_usage_error(tmp_path, command, monkeypatch) -> None:
    """Review: `-o=results` (click gives -o the value `=results`) wrote into a folder named `=results`, and
    `-o=~/results` into `./=~/results`. A name starting with `=` is now a usage error saying how to write it."""
    monkeypatch.chdir(tmp_path)
    video = write_video(tmp_path / "clip.mp4", num_frames=1)
    args = {"segment": ["segment", str(video), "--vocab", "box", "--weights", str(tmp_path / "none.safetensors")],
            "evaluate": ["evaluate", "--results", "r.json", "--gt", "g.json"]}[command]
    for option in ("-o=results", "-o=~/results", "--output==results"):
        result = run_cli([*args, option])
        said = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        assert "starts with '=' (-o=PATH gives -o the value =PATH): write -o PATH or --output=PATH, or ./=" in said
        assert not [path.name for path in tmp_path.iterdir() if path.name.startswith("=")]


def test_a_tilde_after_the_equals_sign_of_an_input_path_option_is_the_home_folder(tmp_path, tiny_weights,
                                                                                  monkeypatch) -> None:
    """Review: `--vocab-file=~/v.txt` and `--config=~/c.yaml` (bash leaves a `~` after `=` as it is) were looked for
    in a folder named `~` ("~/v.txt: cannot read"), while --weights and -o expanded it. A leading `~` of every path
    option is now the home folder; `./~/v.txt` still names a file in a folder called `~`."""
    home, work = tmp_path / "home", tmp_path / "work"
    (work / "~").mkdir(parents=True)
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    (home / "v.txt").write_text("box\nsky\n")
    (home / "c.yaml").write_text("TEST:\n  DETECTIONS_PER_IMAGE: 3\n")
    (work / "~" / "v.txt").write_text("kite\n")
    video = write_video(tmp_path / "clip.mp4", num_frames=1)
    base = ["segment", str(video), "--weights", str(tiny_weights), "--device", "cpu", "--formats", "ytvis"]
    result = run_cli([*base, "--vocab-file=~/v.txt", "--config=~/c.yaml", "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "a" / "clip" / "run.json").read_text())
    assert manifest["vocabulary"] == ["box", "sky"] and manifest["options"]["max_tracks"] == 3
    result = run_cli([*base, "--vocab-file=./~/v.txt", "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "clip" / "run.json").read_text())["vocabulary"] == ["kite"]
