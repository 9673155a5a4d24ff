"""Every crash path a new user hit, through the real CLI: one line naming the input and the cause, the other inputs
still finish, a non-zero exit code, and nothing half-written or left behind."""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from clipvis.cli import rle
from clipvis.cli.app import app
from clipvis.cli.inputs import VideoSource
from clipvis.cli.mask_store import TrackMaskStore
from clipvis.cli.progress import HumanReporter
from clipvis.model.mask_runs import mask_runs
from clipvis.model.scoring import FrameSpill


@pytest.fixture(autouse=True)
def _no_downloads(isolated_cache):
    """Every test here runs with a private cache and no network."""


def write_video(path: Path, num_frames: int = 3, height: int = 48, width: int = 64) -> Path:
    rng = np.random.default_rng(0)
    with av.open(os.fsencode(path).decode("utf-8", "surrogateescape"), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(num_frames):
            frame = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def segment(weights: Path, out: Path, *inputs: str, extra: tuple[str, ...] = ()):
    formats = () if "--formats" in extra else ("--formats", "ytvis")  # an option is given once
    args = ["segment", *inputs, "--vocab", "box,sky", "--weights", str(weights), "-o", str(out), "--device", "cpu",
            *formats, *extra]
    return CliRunner().invoke(app, args)


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("clipvis: error:")]


def test_file_names_that_are_not_utf8(tmp_path, tiny_weights) -> None:
    good = write_video(tmp_path / os.fsdecode(b"caf\xe9.mp4"))  # Latin-1 name: not valid UTF-8
    broken = tmp_path / os.fsdecode(b"bad\xff.mp4")
    broken.write_bytes(b"not a video")
    out = tmp_path / "out"
    result = segment(tiny_weights, out, str(tmp_path))
    assert result.exit_code == 1, result.output
    assert error_lines(result) == [f"clipvis: error: {tmp_path}/bad\\xff.mp4: not a video or corrupt (FFmpeg cannot "
                                   "read it)"]
    assert result.stdout_bytes == os.fsencode(out / "caf_xe9" / "ytvis.json") + b"\n"  # the real bytes, for xargs
    manifest = json.loads((out / "caf_xe9" / "run.json").read_text(encoding="utf-8"))
    assert manifest["status"] == "complete" and manifest["input"] == f"{tmp_path}/caf\\xe9.mp4"
    ytvis = json.loads((out / "caf_xe9" / "ytvis.json").read_text(encoding="utf-8"))
    assert ytvis["videos"][0]["source"] == f"{tmp_path}/caf\\xe9.mp4" and good.is_file()
    assert json.loads((out / "bad_xff" / "run.json").read_text(encoding="utf-8"))["status"] == "failed"
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in (b"1.png", b"2-\xe9t\xe9.png"):
        Image.new("RGB", (56, 40)).save(frames / os.fsdecode(name), format="PNG")
    result = segment(tiny_weights, out, str(frames))
    assert result.exit_code == 0, result.output
    text = (out / "frames" / "ytvis.json").read_bytes().decode("utf-8")  # strict UTF-8
    assert "\\udc" not in text  # and no lone-surrogate escapes that strict JSON parsers refuse
    ytvis = json.loads(text)
    assert ytvis["videos"][0]["file_names"] == ["frames/1.png", "frames/2-\\xe9t\\xe9.png"]


def test_a_source_whose_name_is_not_utf8_is_read_again_by_its_exact_bytes(tmp_path, tiny_weights) -> None:
    """videos[].source showed `cam\\xff.mp4` as text, which segment's frame-reading formats and export read back as a
    literal path: "source video ... not found", or a file literally named so read instead. The exact bytes now go
    beside it, percent-encoded (source_bytes); a valid UTF-8 name's files are as before."""
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / os.fsdecode(b"cam\xff.mp4"))
    write_video(videos / "cam\\xff.mp4", num_frames=5)  # a decoy named as the escaped text reads (not an input)
    out = tmp_path / "out"
    result = segment(tiny_weights, out, os.fsdecode(os.fsencode(videos) + b"/cam\xff.mp4"),
                     extra=("--formats", "ytvis,coco,mots-png"))
    assert result.exit_code == 0, result.output
    folder = out / "cam_xff"
    [video] = json.loads((folder / "ytvis.json").read_text(encoding="utf-8"))["videos"]
    assert video["source"] == f"{videos}/cam\\xff.mp4"  # shown as before
    assert video["source_bytes"].endswith("/cam%FF.mp4") and video["length"] == 3
    [coco_video] = json.loads((folder / "coco.json").read_text(encoding="utf-8"))["video_sources"]
    assert coco_video["source_bytes"] == video["source_bytes"]
    assert (folder / "mots-png.zip").is_file()
    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "mots-png,png-masks"])
    assert exported.exit_code == 0, exported.output
    assert len(list((folder / "mots-png").rglob("*.jpg"))) == 3  # the 3 frames of the real source, not the decoy's 5
    plain = write_video(tmp_path / "plain é.mp4")
    assert segment(tiny_weights, out, str(plain)).exit_code == 0
    [video] = json.loads((out / "plain é" / "ytvis.json").read_text(encoding="utf-8"))["videos"]
    assert video["source"] == str(plain) and "source_bytes" not in video


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_square_brackets_in_names_are_not_markup(tmp_path, tiny_weights, monkeypatch) -> None:
    write_video(tmp_path / "clip[1].mp4")
    (tmp_path / "a[").mkdir()
    (tmp_path / "a[" / "b].mp4").write_text("[/b] not a video")
    terminal = _Terminal()
    original = HumanReporter.__init__
    monkeypatch.setattr(HumanReporter, "__init__", lambda self, stream=None: original(self, terminal))
    out = tmp_path / "out"
    result = segment(tiny_weights, out, str(tmp_path / "clip[1].mp4"), str(tmp_path / "a[" / "b].mp4"))
    assert result.exit_code == 1, result.output
    shown = terminal.getvalue()
    assert shown.count(f"clipvis: error: {tmp_path}/a[/b].mp4: ") == 1  # printed as is
    assert "clip[1]" in shown  # the progress line of the good input
    assert json.loads((out / "clip[1]" / "run.json").read_text())["status"] == "complete"
    again = segment(tiny_weights, out, str(tmp_path / "clip[1].mp4"))
    assert again.exit_code == 0 and f"skipped {tmp_path}/clip[1].mp4: already complete" in terminal.getvalue()


def test_reporter_prints_markup_like_text_verbatim() -> None:
    terminal = _Terminal()
    reporter = HumanReporter(terminal)
    reporter.batch_started(1)
    reporter.video_started(VideoSource(Path("x[/b].mp4")), "[bold]x[/b]", 4)
    reporter.frames_done(2)
    reporter.video_skipped(VideoSource(Path("a[/b].mp4")), "a", reason="[/red] busy")
    reporter.video_failed(VideoSource(Path("a[/b].mp4")), "a", "a[/b].mp4: [/] broken")
    reporter.close()
    text = terminal.getvalue()
    assert "[bold]x[/b]" in text and "skipped a[/b].mp4: [/red] busy" in text
    assert "clipvis: error: a[/b].mp4: [/] broken" in text


def test_over_long_and_unreadable_paths(tmp_path, tiny_weights, monkeypatch) -> None:
    write_video(tmp_path / "good.mp4")
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "inside.mp4").write_bytes(b"x")
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)  # the tests run as root, where chmod 000 does not stop us
    too_long = str(tmp_path / ("x" * 300 + ".mp4"))
    out = tmp_path / "out"
    result = segment(tiny_weights, out, too_long, str(locked), str(tmp_path / "good.mp4"))
    assert result.exit_code == 1, result.output
    assert error_lines(result) == [
        f"clipvis: error: {too_long}: cannot read (File name too long)",
        f"clipvis: error: {locked}: cannot read directory (Permission denied)",
    ]
    assert json.loads((out / "good" / "run.json").read_text())["status"] == "complete"


def test_decompression_bomb_in_a_frame_folder(tmp_path, tiny_weights, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # a "huge" image without writing one
    bomb = tmp_path / "bomb"
    bomb.mkdir()
    Image.new("RGB", (56, 40)).save(bomb / "1.png")
    Image.new("RGB", (120, 120)).save(bomb / "2.png")  # 14400 px > 2 x 5000: PIL refuses it
    write_video(tmp_path / "good.mp4")
    out = tmp_path / "out"
    result = segment(tiny_weights, out, str(bomb), str(tmp_path / "good.mp4"))
    assert result.exit_code == 1, result.output
    [line] = error_lines(result)
    assert line.startswith(f"clipvis: error: {bomb}: frame 2.png: image too large to decode safely (Image size")
    manifest = json.loads((out / "bomb" / "run.json").read_text())
    assert manifest["status"] == "failed" and "image too large" in manifest["error"]
    assert json.loads((out / "good" / "run.json").read_text())["status"] == "complete"


def test_unexpected_error_fails_one_input_and_records_it(tmp_path, tiny_weights, monkeypatch) -> None:
    from clipvis.cli import segment as segment_module

    write_video(tmp_path / "a.mp4")
    write_video(tmp_path / "b.mp4")
    original = segment_module.SegmentRunner._run_model
    calls = []

    def flaky(self, store, reader, source, video_id, stem, *rest):
        calls.append(stem)
        if stem == "a":
            raise KeyError("a library bug")
        return original(self, store, reader, source, video_id, stem, *rest)

    monkeypatch.setattr(segment_module.SegmentRunner, "_run_model", flaky)
    out = tmp_path / "out"
    result = segment(tiny_weights, out, str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"))
    assert result.exit_code == 1 and calls == ["a", "b"]
    assert error_lines(result) == [f"clipvis: error: {tmp_path}/a.mp4: KeyError: 'a library bug'"]
    assert json.loads((out / "a" / "run.json").read_text())["status"] == "failed"
    assert json.loads((out / "b" / "run.json").read_text())["status"] == "complete"


def test_ctrl_c_while_the_weights_load_says_so_and_leaves_no_output_root(tmp_path, tiny_weights, monkeypatch) -> None:
    """Ctrl-C or SIGTERM during a long download or load exited without a word and left an empty -o folder."""
    import clipvis.model

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(clipvis.model, "load_model", interrupted)
    result = segment(tiny_weights, tmp_path / "out", str(write_video(tmp_path / "a.mp4")))
    assert result.exit_code == 130
    assert error_lines(result) == ["clipvis: error: interrupted while loading the weights; no input was run"]
    assert not (tmp_path / "out").exists()


def test_an_output_that_cannot_be_written_names_the_input_first(tmp_path, tiny_weights, monkeypatch) -> None:
    """`clipvis: error: <input>: <cause>`, as for every failed input: a full disk named only the output file."""
    import errno

    from clipvis.cli.atomic import OutputNotWritableError
    from clipvis.cli.writers import CocoWriter

    write_video(tmp_path / "a.mp4")
    original = CocoWriter.write_video

    def full_disk(self, path, *args, **kwargs):
        if Path(path).parent.name == "a":
            raise OutputNotWritableError(path, OSError(errno.ENOSPC, "No space left on device"))
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(CocoWriter, "write_video", full_disk)
    out = tmp_path / "out"
    result = segment(tiny_weights, out, str(tmp_path / "a.mp4"), extra=("--formats", "ytvis,coco"))
    assert result.exit_code == 1
    assert error_lines(result) == [f"clipvis: error: {tmp_path}/a.mp4: {out}/a/coco.json: output not writable "
                                   "(No space left on device)"]


def test_base_include_cycle_is_one_line(tmp_path, tiny_weights) -> None:
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\nMODEL: {}\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\nINPUT: {}\n")
    video = write_video(tmp_path / "v.mp4")
    result = segment(tiny_weights, tmp_path / "out", str(video), extra=("--config", str(tmp_path / "a.yaml")))
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    assert line == f"clipvis: error: {a}: _BASE_ includes form a cycle ({a} -> {b} -> {a})"
    assert "RecursionError" not in result.output


@pytest.mark.parametrize(("name", "text", "message"), [
    ("frames.yaml", "TEST:\n  NUM_FRAME: nine\n",
     "memory_length (TEST.NUM_FRAME) must be a positive integer, not 'nine'"),
    ("size.yaml", "INPUT:\n  MIN_SIZE_TEST: -8\n", "min_size_test (INPUT.MIN_SIZE_TEST) must be a positive integer"),
    ("base.yaml", "_BASE_: [other.yaml]\n", "_BASE_ must be one file name, not ['other.yaml']"),
    ("list.json", "[1, 2, 3]", "not a mapping of config keys, but a JSON list"),
    ("mean.json", '{"pixel_mean": [1, 2]}', "pixel_mean (MODEL.PIXEL_MEAN) must be 3 numbers (R, G, B), not [1, 2]"),
    ("clip.json", '{"embed_dim": 8, "vision_cfg": {"layers": 1, "bogus": 2}, "text_cfg": {}}',
     "vision_cfg has settings open_clip does not know: bogus"),
])
def test_a_bad_config_stops_the_batch_with_one_line_before_the_model_loads(tmp_path, tiny_weights, name, text,
                                                                            message) -> None:
    """A value no model runs with failed every input one by one (blamed on the video: "frames ... too thin"), on the
    weights, or with a traceback; now the batch stops at once naming the file (README: what concerns the whole
    batch)."""
    config = tmp_path / name
    config.write_text(text)
    video = write_video(tmp_path / "v.mp4")
    flag = "--clip-config" if name == "clip.json" else "--config"
    result = segment(tiny_weights, tmp_path / "out", str(video), extra=(flag, str(config)))
    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"clipvis: error: {config}: {message}")
    assert not (tmp_path / "out").exists()


def test_text_embedding_cache_not_writable(tmp_path, tiny_weights, monkeypatch) -> None:
    import safetensors.torch

    video = write_video(tmp_path / "v.mp4")
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("")
    monkeypatch.setenv("CLIPVIS_CACHE", str(blocked))  # mkdir fails: OSError
    result = segment(tiny_weights, tmp_path / "out1", str(video))
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if "text-embedding cache" in line]
    assert len(warnings) == 1 and warnings[0].startswith("clipvis: warning: text-embedding cache")

    def full_disk(*args, **kwargs):
        raise safetensors.SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)  # safetensors' own error type
    result = segment(tiny_weights, tmp_path / "out2", str(video))
    assert result.exit_code == 0, result.output
    assert sum("No space left on device" in line for line in result.stderr.splitlines()) == 1
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # no temporary file left behind


def test_a_cache_that_cannot_be_located_only_warns_for_the_text_embeddings(tmp_path, tiny_weights,
                                                                          monkeypatch) -> None:
    """CLIPVIS_CACHE='~nosuchuser/x' ended a run of a local checkpoint file with "weights ...: Could not determine home
    directory"; the text-embedding cache is the only one this run uses, and it only warns (README)."""
    monkeypatch.setenv("CLIPVIS_CACHE", "~nosuchuser-clipvis-test/x")
    result = segment(tiny_weights, tmp_path / "out", str(write_video(tmp_path / "v.mp4")))
    assert result.exit_code == 0, result.output
    [warning] = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warning.startswith("clipvis: warning: text-embedding cache: cache folder "
                              "CLIPVIS_CACHE='~nosuchuser-clipvis-test/x': ~nosuchuser-clipvis-test cannot be expanded")
    assert warning.count("CLIPVIS_CACHE to") == 1 and warning.endswith("; going on without it")  # one remedy


def test_temporary_spills_never_outlive_the_process(tmp_path) -> None:
    store = TrackMaskStore(4, 5, directory=str(tmp_path))
    counts, lengths = mask_runs(torch.ones(2, 4, 5, dtype=torch.bool))
    store.add_compressed(rle.compress_runs(counts.numpy(), lengths.numpy(), (4, 5)), np.zeros(2, dtype=bool))
    assert os.listdir(tmp_path) == [] and store.get(0, 1)["size"] == [4, 5]  # unlinked from the start
    store.close()
    monkeypatch_dir = tempfile.gettempdir()
    before = {name for name in os.listdir(monkeypatch_dir) if name.startswith("clipvis-spill-")}
    spill = FrameSpill(memory_budget_bytes=8)
    for value in range(3):
        spill.append(np.full((2, 3), value, dtype=np.float32))
    assert np.array_equal(spill.read()[:, 0, 0], [0, 1, 2])
    after = {name for name in os.listdir(monkeypatch_dir) if name.startswith("clipvis-spill-")}
    assert after == before
    spill.close()


def test_stale_text_cache_temp_files_of_killed_runs_are_swept(tmp_path, tiny_weights, monkeypatch) -> None:
    cache = tmp_path / "cache" / "text_embeddings"
    cache.mkdir(parents=True)
    old, fresh = cache / ".ab12.x1.tmp.safetensors", cache / ".cd34.x2.tmp.safetensors"
    old.write_bytes(b"half")
    fresh.write_bytes(b"being written by a live process")
    two_hours_ago = os.stat(old).st_mtime - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    result = segment(tiny_weights, tmp_path / "out", str(write_video(tmp_path / "v.mp4")))
    assert result.exit_code == 0, result.output
    assert not old.exists() and fresh.exists()
    assert len([p for p in cache.glob("*.safetensors") if not p.name.startswith(".")]) == 1  # the new entry


class _FillingDisk(io.RawIOBase):
    """A file on a disk with ``room`` bytes left: writes past it fail with ENOSPC, as on a full $TMPDIR."""

    def __init__(self, room: int) -> None:
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        written = min(len(data), self.room)
        self.room -= written
        return written


def _temporary_files_on_a_full_disk(monkeypatch, prefix: str) -> None:
    """The temporary files whose name starts with ``prefix`` go to a full disk, through Python's buffering as
    TemporaryFile's do (what a failed write leaves in the buffer is written again by close)."""
    real = tempfile.TemporaryFile

    def temporary_file(*args, **kwargs):
        if not kwargs.get("prefix", "").startswith(prefix):
            return real(*args, **kwargs)
        if kwargs.get("buffering", -1) == 0:
            return _FillingDisk(1000)
        return io.BufferedWriter(_FillingDisk(1000), buffer_size=io.DEFAULT_BUFFER_SIZE)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)


def test_a_full_temporary_folder_is_named_for_masks_and_scores(tmp_path, tiny_weights, monkeypatch) -> None:
    """A full $TMPDIR said only 'No space left on device': closing the masks' file flushed the write that had
    failed again and its bare OSError replaced the error naming the folder; the scores' spill named nothing."""
    video = write_video(tmp_path / "v.mp4", num_frames=40, height=96, width=128)  # > 8 KiB of masks: a real write
    temporary = tempfile.gettempdir()
    with pytest.MonkeyPatch.context() as patch:  # (monkeypatch.undo() would also undo the isolated cache)
        _temporary_files_on_a_full_disk(patch, "clipvis-masks-")
        result = segment(tiny_weights, tmp_path / "out", str(video))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert error_lines(result) == [f"clipvis: error: {video}: masks' temporary file in {temporary} (TMPDIR): "
                                   "No space left on device"]
    from clipvis.model import scoring

    _temporary_files_on_a_full_disk(monkeypatch, "clipvis-spill-")
    monkeypatch.setattr(scoring.StreamingVideoScorer.__init__, "__defaults__", (8,))  # spills from the first frame
    result = segment(tiny_weights, tmp_path / "out2", str(video))
    assert result.exit_code == 1, result.output
    assert error_lines(result) == [f"clipvis: error: {video}: scores' temporary file in {temporary} (TMPDIR): "
                                   "No space left on device"]
    run = json.loads((tmp_path / "out2" / "v" / "run.json").read_text())
    assert run["status"] == "failed" and "scores' temporary file" in run["error"]


def test_a_long_file_name_that_is_not_utf8_gets_a_folder_name_within_the_limit(tmp_path, tiny_weights) -> None:
    """Review: a 254-byte name with 20 bytes that are not UTF-8 failed with "output not writable (File name too
    long)": each such byte is `_xNN` in the folder's name (4 bytes), which passed 255 bytes, and only the `-N` names
    were cut. The folder's name (and Label Studio's media/ copy) is now cut short by whole characters, a rerun finds
    the folder, and another input cut to the same name gets `-2`."""
    import zipfile

    first = write_video(tmp_path / os.fsdecode(b"v" * 230 + b"\xe9" * 20 + b".mp4"))
    second = write_video(tmp_path / os.fsdecode(b"v" * 230 + b"\xe9" * 21 + b".mp4"))
    out = tmp_path / "out"
    result = segment(tiny_weights, out, str(first), extra=("--formats", "ytvis,labelstudio"))
    assert result.exit_code == 0, result.output
    [folder] = [path for path in out.iterdir() if path.is_dir()]
    assert len(os.fsencode(folder.name)) <= 255 and folder.name.startswith("v" * 230 + "_xe9_xe9")
    with zipfile.ZipFile(folder / "labelstudio.zip") as archive:
        [media] = [name for name in archive.namelist() if name.startswith("labelstudio/media/")]
    media_name = media.removeprefix("labelstudio/media/")
    assert len(media_name.encode()) <= 255 and media_name.endswith(".mp4") and media_name.startswith("v" * 230)
    both = segment(tiny_weights, out, str(first), str(second), extra=("--formats", "ytvis,labelstudio"))
    assert both.exit_code == 0, both.output
    assert "1 skipped (already complete)" in both.stderr  # the first input's folder, found again
    assert {path.name for path in out.iterdir() if path.is_dir()} == {folder.name, f"{folder.name[:-2]}-2"}
