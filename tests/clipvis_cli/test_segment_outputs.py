"""Outputs you can trust across runs, through the real `clipvis segment`: --skip-existing keyed by what produced the
output, one folder per source, a lock per folder, stale files of other --formats, sizes in the complete run.json."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from clipvis.cli.app import app
from clipvis.cli.writers import RunManifest
from clipvis.cli.writers.overlay import OverlayVideoWriter


@pytest.fixture(autouse=True)
def _no_downloads(isolated_cache):
    """Every test here runs with a private cache and no network."""


def write_video(path: Path, num_frames: int = 3, seed: int = 0, flat: bool = False) -> Path:
    """Random noise frames; ``flat``: one grey level per frame (a long video encodes ~10x faster)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(num_frames):
            if flat:
                frame = np.full((48, 64, 3), 40 + index % 160, np.uint8)
            else:
                frame = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def segment(weights: Path, out: Path, *inputs: str, extra: tuple[str, ...] = ()):
    args = ["segment", *inputs, "--vocab", "box,sky", "--weights", str(weights), "-o", str(out), "--device", "cpu",
            *extra]
    return CliRunner().invoke(app, args)


def was_run(result) -> bool:
    assert result.exit_code == 0, result.output
    return result.stdout != ""  # the files written are listed on stdout; a skipped input lists nothing


def test_outputs_of_relative_paths_can_be_exported_from_another_folder(tmp_path, tiny_weights, monkeypatch) -> None:
    """`clipvis segment videos/ -o results/` with relative paths, then `clipvis export` run elsewhere: the results
    name their source by absolute path, so formats that decode the frames again find them."""
    write_video(tmp_path / "videos" / "clip.mp4")
    monkeypatch.chdir(tmp_path)
    assert was_run(segment(tiny_weights, Path("results"), "videos/", extra=("--formats", "ytvis")))
    ytvis = json.loads((tmp_path / "results" / "clip" / "ytvis.json").read_text())
    assert ytvis["videos"][0]["source"] == str(tmp_path / "videos" / "clip.mp4")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result = CliRunner().invoke(app, ["export", "../results", "--to", "coco", "-o", "exported"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "exported" / "clip").is_dir()
    # A file that kept the path as typed (older clipvis): found from the folder segment ran in.
    ytvis["videos"][0]["source"] = "videos/clip.mp4"
    (tmp_path / "results" / "clip" / "ytvis.json").write_text(json.dumps(ytvis))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["export", "results", "--to", "coco", "-o", "exported-again"])
    assert result.exit_code == 0, result.output


def test_skip_existing_is_keyed_by_checkpoint_config_and_options(tmp_path, tiny_weights) -> None:
    video = write_video(tmp_path / "clip.mp4")
    weights = tmp_path / "model.safetensors"
    shutil.copy(tiny_weights, weights)
    base = tmp_path / "base.yaml"
    base.write_text("TEST:\n  NUM_TOPK: 5\n")
    config = tmp_path / "config.yaml"
    config.write_text("_BASE_: base.yaml\nTEST:\n  DETECTIONS_PER_IMAGE: 50\n")
    out = tmp_path / "out"
    args = (str(video),)
    extra = ("--formats", "ytvis", "--config", str(config))
    assert was_run(segment(weights, out, *args, extra=extra))
    assert not was_run(segment(weights, out, *args, extra=extra))  # same producer: skipped

    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # model_final.pth replaced
    assert was_run(segment(weights, out, *args, extra=extra))
    assert not was_run(segment(weights, out, *args, extra=extra))
    config.write_text("_BASE_: base.yaml\nTEST:\n  DETECTIONS_PER_IMAGE: 40\n")  # the YAML edited
    assert was_run(segment(weights, out, *args, extra=extra))
    base.write_text("TEST:\n  NUM_TOPK: 4\n")  # a _BASE_ file edited
    assert was_run(segment(weights, out, *args, extra=extra))
    assert was_run(segment(weights, out, *args, extra=(*extra, "--max-tracks", "7")))  # an option
    manifest = json.loads((out / "clip" / "run.json").read_text())
    assert manifest["options"]["checkpoint"]["file"] == str(weights.resolve())
    assert manifest["options"]["config"]["sha256"] and manifest["options"]["clipvis"]


def test_the_default_number_of_tracks_is_recorded_as_the_number_it_stands_for(tmp_path, tiny_weights) -> None:
    """--max-tracks' default (the config's TEST.DETECTIONS_PER_IMAGE) was recorded as null: outputs written before,
    which recorded 50, and evaluate's cache were all run again, and an explicit --max-tracks 50 re-ran a default run
    (review8)."""
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    assert json.loads((out / "clip" / "run.json").read_text())["options"]["max_tracks"] == 50
    assert not was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis", "--max-tracks", "50")))
    config = tmp_path / "config.yaml"
    config.write_text("TEST:\n  DETECTIONS_PER_IMAGE: 3\n")
    with_config = ("--formats", "ytvis", "--config", str(config))
    assert was_run(segment(tiny_weights, out, str(video), extra=with_config))
    assert json.loads((out / "clip" / "run.json").read_text())["options"]["max_tracks"] == 3
    assert not was_run(segment(tiny_weights, out, str(video), extra=(*with_config, "--max-tracks", "3")))


def test_a_format_whose_files_changed_since_is_written_again(tmp_path, tiny_weights) -> None:
    """mots-png.zip written in the old layout (instances/<video>/) was kept by a rerun, the run.json identity being
    unchanged (review8); the outputs of runs without that format stay valid."""
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    for formats, revisions in (("ytvis", None), ("ytvis,mots-png", {"mots-png": 2})):
        assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", formats)))
        manifest = json.loads((out / "clip" / "run.json").read_text())
        assert manifest["options"].get("format_revisions") == revisions
        assert not was_run(segment(tiny_weights, out, str(video), extra=("--formats", formats)))
    with zipfile.ZipFile(out / "clip" / "mots-png.zip") as archive:
        assert "mots-png/instances/000000.png" in archive.namelist()


def test_exports_made_from_a_results_file_a_rerun_replaced_are_said_and_listed_stale(tmp_path, tiny_weights) -> None:
    """`clipvis export` beside ytvis.json (mots-txt/, png-masks/), then segment again with another vocabulary: the
    exports kept the earlier classes and masks without a word, and run.json said `stale: []`. Now one warning names
    them and run.json lists them as stale; they are kept as they were."""
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = out / "clip"
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "mots-txt,png-masks"])
    assert exported.exit_code == 0, exported.output
    listing = sorted(path.name for path in (folder / "png-masks").iterdir())
    rerun = CliRunner().invoke(app, ["segment", str(video), "--vocab", "sky,box,tree", "--weights", str(tiny_weights),
                                     "-o", str(out), "--device", "cpu", "--formats", "ytvis"])
    assert was_run(rerun)
    warnings = [line for line in rerun.stderr.splitlines() if "mots-txt, png-masks exported from" in line]
    assert len(warnings) == 1 and warnings[0].startswith("clipvis: warning:"), rerun.stderr
    assert RunManifest.read(folder / "run.json").stale == ["mots-txt", "png-masks"]
    assert sorted(path.name for path in (folder / "png-masks").iterdir()) == listing  # not deleted
    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "mots-txt,png-masks"])  # brought up to date
    assert exported.exit_code == 0, exported.output
    again = CliRunner().invoke(app, ["segment", str(video), "--vocab", "sky,box,tree", "--weights", str(tiny_weights),
                                     "-o", str(out), "--device", "cpu", "--formats", "ytvis,overlay"])
    assert was_run(again) and "exported from" in again.stderr  # ytvis.json written again: stale again


def test_a_rerun_names_every_export_of_the_results_it_replaced_results_file_and_cvat_zip_too(
        tmp_path, tiny_weights) -> None:
    """`clipvis export --to cvat-video,ytvis` beside ytvis.json, then segment again: results.json (what a user uploads
    to a server) was not listed stale nor named (its record named no input), and cvat-video.zip, listed stale, was
    left out of the warning. Now the one warning names both and run.json lists each once."""
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = out / "clip"
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "cvat-video,ytvis"])
    assert exported.exit_code == 0, exported.output
    rerun = segment(tiny_weights, out, str(video), extra=("--formats", "ytvis", "--overwrite"))
    assert was_run(rerun)
    warnings = [line for line in rerun.stderr.splitlines() if "exported from the earlier" in line]
    assert len(warnings) == 1 and "cvat-video.zip, results.json exported from" in warnings[0], rerun.stderr
    assert "this run replaced" in warnings[0]
    assert RunManifest.read(folder / "run.json").stale == ["cvat-video.zip", "results.json"]


def test_a_rerun_that_removed_ytvis_json_says_so_and_how_to_export_again(tmp_path, tiny_weights) -> None:
    """A ytvis run exported to mots-txt, then segment --formats coco: ytvis.json is removed, and the warning said
    "this run replaced" with `clipvis export ... --to ...`, which fails without a ytvis.json. It now says it was
    removed and that ytvis must be in --formats to export again, with a folder the shell takes as one word. Later runs
    (which removed nothing) said "removed" again each time; now they do not repeat it."""
    video = write_video(tmp_path / "my clip.mp4")
    out = tmp_path / "out"
    folder = out / "my clip"
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "mots-txt"])
    assert exported.exit_code == 0, exported.output
    rerun = segment(tiny_weights, out, str(video), extra=("--formats", "coco"))
    assert was_run(rerun) and not (folder / "ytvis.json").exists()
    warnings = [line for line in rerun.stderr.splitlines() if "mots-txt exported from" in line]
    assert len(warnings) == 1, rerun.stderr
    assert "removed as ytvis is not in this run's --formats" in warnings[0]
    assert "segment again with ytvis in --formats" in warnings[0] and "replaced" not in warnings[0]
    assert f"(clipvis export {shlex.quote(str(folder))} --to ...)" in warnings[0]
    assert RunManifest.read(folder / "run.json").stale == ["mots-txt"]
    later = segment(tiny_weights, out, str(video), extra=("--formats", "coco", "--overwrite"))
    assert was_run(later) and "exported from" not in later.stderr, later.stderr  # removed nothing: nothing new
    assert RunManifest.read(folder / "run.json").stale == ["mots-txt"]


def test_exports_of_a_ytvis_json_removed_by_hand_are_said_once(tmp_path, tiny_weights) -> None:
    """ytvis.json deleted by hand beside an export: each later run said it was "removed as ytvis is not in this run's
    --formats", which it was not. Now the first run says the export's results file is no longer there, once."""
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = out / "clip"
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    assert CliRunner().invoke(app, ["export", str(folder), "--to", "mots-txt"]).exit_code == 0
    (folder / "ytvis.json").unlink()
    first = segment(tiny_weights, out, str(video), extra=("--formats", "coco"))
    warnings = [line for line in first.stderr.splitlines() if "mots-txt exported from" in line]
    assert was_run(first) and len(warnings) == 1, first.stderr
    assert "a ytvis.json no longer in the folder" in warnings[0] and "removed" not in warnings[0]
    second = segment(tiny_weights, out, str(video), extra=("--formats", "coco", "--overwrite"))
    assert was_run(second) and "exported from" not in second.stderr, second.stderr
    assert RunManifest.read(folder / "run.json").stale == ["mots-txt"]


def test_an_export_corrected_by_hand_is_warned_of_once_on_a_rerun(tmp_path, tiny_weights) -> None:
    """segment wrote cvat-video.zip, export wrote it again, a person re-saved it, then segment --overwrite: two
    warnings named it, the second advising an export that is refused (the file changed since it was exported). Now
    only the line saying it changed and is kept names it."""
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = out / "clip"
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis,cvat-video")))
    assert CliRunner().invoke(app, ["export", str(folder), "--to", "cvat-video"]).exit_code == 0
    zipped = folder / "cvat-video.zip"
    with zipfile.ZipFile(zipped, "a") as archive:
        archive.writestr("notes.txt", "checked")
    rerun = segment(tiny_weights, out, str(video), extra=("--formats", "ytvis", "--overwrite"))
    assert was_run(rerun)
    named = [line for line in rerun.stderr.splitlines() if "cvat-video.zip" in line and "warning" in line]
    assert len(named) == 1 and "changed since clipvis segment wrote it" in named[0], rerun.stderr
    assert RunManifest.read(folder / "run.json").stale == ["cvat-video.zip"]


def test_same_stem_from_two_sources_never_overwrites(tmp_path, tiny_weights) -> None:
    a = write_video(tmp_path / "a" / "clip.mp4", seed=1)
    b = write_video(tmp_path / "b" / "clip.mp4", num_frames=4, seed=2)
    out = tmp_path / "out"
    assert was_run(segment(tiny_weights, out, str(a), extra=("--formats", "ytvis")))  # today
    result = segment(tiny_weights, out, str(b), extra=("--formats", "ytvis"))  # tomorrow
    assert was_run(result) and result.stdout.strip() == str(out / "clip-2" / "ytvis.json")
    for stem, source, length in (("clip", a, 3), ("clip-2", b, 4)):
        manifest = json.loads((out / stem / "run.json").read_text())
        assert manifest["input"] == str(source) and manifest["source"]["path"] == str(source.resolve())
        assert json.loads((out / stem / "ytvis.json").read_text())["videos"][0]["length"] == length
    assert not was_run(segment(tiny_weights, out, str(b), str(a), extra=("--formats", "ytvis")))  # both skipped


def test_second_process_on_the_same_folder_skips_with_a_line(tmp_path, tiny_weights) -> None:
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    before = (out / "clip" / "ytvis.json").read_bytes()
    holder = subprocess.Popen(  # another process holds out/clip (as a running `clipvis segment` does)
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from clipvis.cli.locks import FolderLock
            lock = FolderLock({str(out / "clip")!r}).acquire()
            print("locked", flush=True)
            sys.stdin.read()
        """)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = segment(tiny_weights, out, str(video), extra=("--formats", "ytvis", "--overwrite"))
    finally:
        holder.communicate("")
    assert result.exit_code == 0 and result.stdout == ""
    line = f"skipped {video}: {out / 'clip'}: another clipvis process is writing here (pid {holder.pid} on "
    assert line in result.stderr
    assert (out / "clip" / "ytvis.json").read_bytes() == before  # nothing interleaved
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis", "--overwrite")))


def test_other_formats_sizes_and_leftover_temp_files(tmp_path, tiny_weights) -> None:
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = out / "clip"
    assert was_run(segment(tiny_weights, out, str(video)))
    manifest = json.loads((folder / "run.json").read_text())
    assert {entry["file"]: entry["bytes"] for entry in manifest["outputs"]} == {
        name: (folder / name).stat().st_size for name in ("ytvis.json", "coco.json", "overlay.mp4")
    }
    (folder / ".ytvis.k2j3m4n5.tmp.json").write_text('{"videos": [')  # left by a run killed mid-write
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    assert sorted(p.name for p in folder.iterdir()) == [".clipvis.lock", "run.json", "ytvis.json"]  # stale: gone
    manifest = RunManifest.read(folder / "run.json")
    assert manifest.output_names == ["ytvis.json"] and manifest.stale == []

    (folder / "coco.json").write_text("{}")  # a coco.json no run of clipvis wrote here
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis", "--overwrite")))
    assert RunManifest.read(folder / "run.json").stale == ["coco.json"] and (folder / "coco.json").read_text() == "{}"

    # nor is it replaced by a run that writes coco.json (it was, silently): the input fails in one line
    refused = segment(tiny_weights, out, str(video), extra=("--overwrite",))
    assert refused.exit_code == 1 and f"{folder / 'coco.json'}: exists and is not a file clipvis wrote; nothing was " \
        "replaced" in refused.stderr
    assert (folder / "coco.json").read_text() == "{}"
    (folder / "coco.json").unlink()

    # A run that fails (or is interrupted, or killed) between two runs keeps clipvis' files known as clipvis', and
    # as they were: none of the failed run's files is put in place, though the overlay was written before ytvis failed.
    assert was_run(segment(tiny_weights, out, str(video), extra=("--overwrite",)))  # ytvis, coco, overlay
    names = ["coco.json", "overlay.mp4", "ytvis.json"]
    earlier = {name: os.stat(folder / name).st_ino for name in names}
    with pytest.MonkeyPatch.context() as patch:
        def fail(*args, **kwargs):
            raise OSError("disk on fire")

        patch.setattr("clipvis.cli.writers.ytvis.YtvisWriter.write_video", fail)
        failed = segment(tiny_weights, out, str(video), extra=("--overwrite",))
    assert failed.exit_code == 1 and "disk on fire" in failed.stderr
    assert RunManifest.read(folder / "run.json").earlier_outputs == names
    assert {name: os.stat(folder / name).st_ino for name in names} == earlier  # the earlier run's files
    assert sorted(p.name for p in folder.iterdir()) == sorted([".clipvis.lock", *names, "run.json"])  # no temp file
    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "mots-txt", "-o", str(tmp_path / "exported")])
    assert exported.exit_code == 0, exported.output  # the earlier run's results, said so
    assert [line for line in exported.stderr.splitlines() if "warning" in line] == [
        f"clipvis: warning: {folder}: run.json says its last segment run is 'failed', not 'complete': its ytvis.json "
        "is from an earlier run"]
    # In a folder that had none, a failing run leaves none: run.json lists no file as an earlier run's.
    shutil.rmtree(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("clipvis.cli.writers.ytvis.YtvisWriter.write_video", fail)
        failed = segment(tiny_weights, out, str(video), extra=("--overwrite",))
    assert failed.exit_code == 1
    manifest = RunManifest.read(folder / "run.json")
    assert manifest.status == "failed" and manifest.earlier_outputs == []
    assert sorted(p.name for p in folder.iterdir()) == [".clipvis.lock", "run.json"]
    # Interrupted once every file is written but before they are in place: none is (the message says so).
    original = OverlayVideoWriter.write_video

    def interrupted(self, path, video):
        original(self, path, video)
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OverlayVideoWriter, "write_video", interrupted)
        stopped = segment(tiny_weights, out, str(video), extra=("--overwrite",))
    assert stopped.exit_code == 130 and "incomplete outputs were not written" in stopped.stderr
    manifest = RunManifest.read(folder / "run.json")
    assert manifest.status == "interrupted" and manifest.earlier_outputs == []
    assert sorted(p.name for p in folder.iterdir()) == [".clipvis.lock", "run.json"]
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis", "--overwrite")))
    assert sorted(p.name for p in folder.iterdir()) == [".clipvis.lock", "run.json", "ytvis.json"]
    assert was_run(segment(tiny_weights, out, str(video), extra=("--overwrite",)))  # ytvis, coco, overlay again
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    assert sorted(p.name for p in folder.iterdir()) == [".clipvis.lock", "run.json", "ytvis.json"]
    manifest = RunManifest.read(folder / "run.json")
    assert manifest.stale == [] and manifest.earlier_outputs == []

    with open(folder / "ytvis.json", "r+b") as handle:  # an output cut short after the run completed
        handle.truncate(10)
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis")))
    assert json.loads((folder / "ytvis.json").read_text())["videos"][0]["length"] == 3
    assert RunManifest.read(folder / "run.json").status == "complete"


def _into_the_model_pass(process: subprocess.Popen, manifest: Path) -> float:
    """Wait until the segment `process` records its input running in `manifest`, and 0.3 s more (well into the model's
    pass); the deadline (time.monotonic) for the rest of the test's waits."""
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if manifest.is_file() and json.loads(manifest.read_text() or "{}").get("status") == "running":
            break
        time.sleep(0.05)
    time.sleep(0.3)
    return deadline


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_scheduler_s_termination_signal_ends_a_run_as_ctrl_c_does(tmp_path, tiny_weights, name) -> None:
    """SLURM and Kubernetes send SIGTERM on timeout or preemption (SIGKILL follows a grace period later); a closed
    terminal sends SIGHUP. The run used to die at once, run.json "running" for good: now the video in progress is
    marked interrupted, nothing half-written is left, and the exit status is 128 + the signal's number."""
    import signal

    video = write_video(tmp_path / "long.mp4", num_frames=2000, flat=True)
    out = tmp_path / "out"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "clipvis", "segment", str(video), "--vocab", "box", "--weights", str(tiny_weights),
         "-o", str(out), "--device", "cpu", "--batch-frames", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
    )
    manifest = out / "long" / "run.json"
    _into_the_model_pass(process, manifest)
    process.send_signal(getattr(signal, name))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + getattr(signal, name), stderr
    assert "Traceback" not in stderr and "interrupted" in stderr, stderr
    assert RunManifest.read(manifest).status == "interrupted"
    assert RunManifest.read(manifest).error == f"interrupted by {name}"  # not "by the user": a scheduler's
    assert sorted(p.name for p in (out / "long").iterdir()) == [".clipvis.lock", "run.json"]


# `clipvis segment` whose way out, once the command is done, takes a while (a marker file says it began): the
# launcher's last step before the interpreter shuts down (freeze_before_exit) made slow, as torch's atexit finalizer
# or a thread being joined can be.
SLOW_WAY_OUT = """
import sys, time
import clipvis.cli.launcher as launcher
_freeze, _marker = launcher.freeze_before_exit, sys.argv[1]
def _slow():
    open(_marker, "a").write("exiting\\n")
    time.sleep(0.5)
    _freeze()
launcher.freeze_before_exit = _slow
sys.argv = ["clipvis", *sys.argv[2:]]
launcher.main()
"""


def test_ctrl_c_pressed_again_on_the_way_out_changes_nothing(tmp_path, tiny_weights) -> None:
    """An impatient user's Ctrl-C pressed several times: once the interrupted summary was said, the next one hit the
    way out with Python's handler back in place; the process died by SIGINT instead of exiting 130, and tracebacks
    (or a second "clipvis: interrupted" line) followed the summary event. Later stop signals are ignored now."""
    import signal

    video = write_video(tmp_path / "long.mp4", num_frames=2000, flat=True)
    out = tmp_path / "out"
    marker = tmp_path / "exiting.txt"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_WAY_OUT, str(marker), "segment", str(video), "--vocab", "box", "--weights",
         str(tiny_weights), "-o", str(out), "--device", "cpu", "--batch-frames", "1", "--log-format", "jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = _into_the_model_pass(process, out / "long" / "run.json")
    process.send_signal(signal.SIGINT)
    while time.monotonic() < deadline and process.poll() is None and not marker.is_file():
        time.sleep(0.01)
    for _ in range(3):  # on the way out
        process.send_signal(signal.SIGINT)
        time.sleep(0.03)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    events = [json.loads(line) for line in stderr.splitlines()]  # nothing but events: no traceback
    assert events[-1]["event"] == "summary" and [e["event"] for e in events].count("summary") == 1, stderr
    assert RunManifest.read(out / "long" / "run.json").status == "interrupted"


def test_a_hangup_the_parent_left_ignored_stays_ignored(tmp_path, tiny_weights) -> None:
    """`nohup clipvis segment ...` (SIGHUP ignored by the parent): clipvis put its own handler in place, so logging out
    of the ssh session stopped the batch (exit 129). The hangup is ignored now; a SIGTERM still stops it."""
    import signal

    video = write_video(tmp_path / "long.mp4", num_frames=2000, flat=True)
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "clipvis", "segment", str(video), "--vocab", "box", "--weights", str(tiny_weights),
         "-o", str(out), "--device", "cpu", "--batch-frames", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    manifest = out / "long" / "run.json"
    _into_the_model_pass(process, manifest)
    process.send_signal(signal.SIGHUP)
    time.sleep(1.0)
    assert process.poll() is None and RunManifest.read(manifest).status == "running"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert RunManifest.read(manifest).error == "interrupted by SIGTERM"


# `clipvis segment` whose record of an interrupted input starts with a pause (a marker file says it began), so that a
# second signal lands while it is written.
SLOW_INTERRUPTED_RECORD = """
import sys, time
import clipvis.cli.segment as segment
_write, _marker = segment._write_quietly, sys.argv[1]
def _slow(manifest, path):
    if manifest.status == "interrupted":
        open(_marker, "a").write("recording\\n")
        time.sleep(1.5)
    _write(manifest, path)
segment._write_quietly = _slow
from clipvis.cli.launcher import main
sys.argv = ["clipvis", *sys.argv[2:]]
main()
"""


def test_a_second_signal_while_the_interruption_is_recorded_waits_for_the_record(tmp_path, tiny_weights) -> None:
    """Two SIGINTs (or SIGTERMs) 30 ms apart: the second cut the interrupted input's record short, run.json said
    "running" for good and no video_interrupted event came."""
    import signal
    import time

    video = write_video(tmp_path / "long.mp4", num_frames=2000, flat=True)
    out = tmp_path / "out"
    marker = tmp_path / "recording.txt"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_INTERRUPTED_RECORD, str(marker), "segment", str(video), "--vocab", "box",
         "--weights", str(tiny_weights), "-o", str(out), "--device", "cpu", "--batch-frames", "1", "--log-format",
         "jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    manifest = out / "long" / "run.json"
    deadline = _into_the_model_pass(process, manifest)
    process.send_signal(signal.SIGTERM)
    while time.monotonic() < deadline and process.poll() is None and not marker.is_file():
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)  # while the interruption is recorded
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    events = [json.loads(line) for line in stderr.splitlines()]
    assert [event["event"] for event in events if event["event"] in ("video_interrupted", "summary")] == [
        "video_interrupted", "summary"]
    assert RunManifest.read(manifest).status == "interrupted"
    assert sorted(p.name for p in (out / "long").iterdir()) == [".clipvis.lock", "run.json"]


# `clipvis segment` with each output's rename into place followed by a pause (a marker file says one happened), so
# that a signal lands between the renames of one input's files.
SLOW_RENAMES = """
import os, sys, time
import clipvis.cli.atomic as atomic
_replace, _marker = os.replace, sys.argv[1]
class _SlowOs:
    def __getattr__(self, name):
        return getattr(os, name)
    def replace(self, source, target):
        _replace(source, target)
        if str(target).endswith(".json") and not str(target).endswith("run.json"):
            open(_marker, "a").write(str(target) + "\\n")
            time.sleep(1.5)
atomic.os = _SlowOs()
from clipvis.cli.launcher import main
sys.argv = ["clipvis", *sys.argv[2:]]
main()
"""


def test_a_signal_between_the_renames_of_an_input_s_files_waits_until_they_are_all_in_place(
    tmp_path, tiny_weights
) -> None:
    """A SIGTERM after ytvis.json was renamed into place left it beside the earlier run's coco.json, run.json
    "interrupted" and the summary saying the outputs were not written. The renames now finish first: every file is
    the new run's, run.json "complete", the input counted complete, then the run stops by the signal."""
    import signal
    import time

    video = write_video(tmp_path / "clip.mp4", num_frames=4)
    out = tmp_path / "out"
    common = [str(video), "--vocab", "box", "--weights", str(tiny_weights), "-o", str(out), "--device", "cpu",
              "--formats", "ytvis,coco"]
    assert CliRunner().invoke(app, ["segment", *common, "--max-frames", "2"]).exit_code == 0  # an earlier run
    renamed = tmp_path / "renamed.txt"
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_RENAMES, str(renamed), "segment", *common, "--log-format", "jsonl"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and not renamed.is_file():
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)  # after the first rename, before the second
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert len(renamed.read_text().splitlines()) == 2  # both renames happened
    folder = out / "clip"
    assert RunManifest.read(folder / "run.json").status == "complete"
    assert len(json.loads((folder / "ytvis.json").read_text())["videos"][0]["file_names"]) == 4
    assert len(json.loads((folder / "coco.json").read_text())["images"]) == 4  # not the earlier run's 2
    summary = json.loads(stderr.splitlines()[-1])
    assert summary["event"] == "summary" and summary["complete"] == 1 and summary["status"] == "interrupted"
    assert stdout.splitlines() == [str(folder / "ytvis.json"), str(folder / "coco.json")]


def test_a_run_killed_between_its_renames_leaves_a_run_json_naming_every_file_it_was_putting_in_place(
        tmp_path, tiny_weights) -> None:
    """A SIGKILL right after cvat-video.zip was renamed into place left run.json ("running") without it: the next run
    with fewer --formats kept it as someone else's file (`stale`) instead of deleting it."""
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = out / "clip"
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis,coco")))
    seen: list[dict] = []
    rename = os.replace

    def replace(source, target, *args, **kwargs):  # what run.json says on disk at each rename (a kill may come)
        if Path(target).parent == folder and Path(target).name != "run.json" and not Path(target).name.startswith("."):
            seen.append(json.loads((folder / "run.json").read_text()))  # a final name (not a temporary one)
        return rename(source, target, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", replace)
        assert was_run(segment(tiny_weights, out, str(video),
                               extra=("--formats", "ytvis,coco,cvat-video", "--overwrite")))
    assert seen and all(manifest["status"] == "running" for manifest in seen)
    assert all(set(manifest["earlier_outputs"]) >= {"ytvis.json", "coco.json", "cvat-video.zip"} for manifest in seen)
    # after such a kill, the next run asked for ytvis alone deletes the others as clipvis' own
    killed = RunManifest.read(folder / "run.json")
    killed.status, killed.outputs, killed.earlier_outputs = "running", [], seen[-1]["earlier_outputs"]
    killed.write(folder / "run.json")
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis", "--overwrite")))
    assert sorted(p.name for p in folder.iterdir()) == [".clipvis.lock", "run.json", "ytvis.json"]
    assert RunManifest.read(folder / "run.json").stale == []


def test_a_variable_frame_rate_video_keeps_its_frames_times(tmp_path, tiny_weights, synth) -> None:
    """A screen recording writes frames when the screen changes (10 frames over 10 s here): the overlay played them
    in 1 s at the nominal rate and Label Studio's boxes came at the wrong moments. The frames' times now go into
    ytvis.json (frame_times), the overlay's timestamps and the Label Studio keyframes; constant-rate videos have
    no frame_times."""
    from fractions import Fraction

    times_ms = [0, 40, 80, 2000, 2040, 5000, 5033, 5066, 8000, 9960]
    path = synth.write_bar_video(tmp_path / "screen.mkv", len(times_ms), pts=times_ms, time_base=Fraction(1, 1000),
                                 rate=10)
    write_video(tmp_path / "steady.mp4")
    out = tmp_path / "out"
    assert was_run(segment(tiny_weights, out, str(path), str(tmp_path / "steady.mp4"),
                           extra=("--formats", "ytvis,overlay,labelstudio", "--score-threshold", "0")))
    video = json.loads((out / "screen" / "ytvis.json").read_text())["videos"][0]
    assert video["frame_times"] == pytest.approx([t / 1000 for t in times_ms], abs=1e-3)
    with av.open(str(out / "screen" / "overlay.mp4")) as overlay:
        played = [frame.time for frame in overlay.decode(video=0)]
    assert played == pytest.approx([t / 1000 for t in times_ms], abs=2e-3)
    import zipfile

    with av.open(str(path)) as source:
        declared = source.duration / av.time_base
    with zipfile.ZipFile(out / "screen" / "labelstudio.zip") as archive:
        tasks = json.loads(archive.read("labelstudio/tasks.json"))
        assert re.search(r'frameRate="([^"]+)"', archive.read("labelstudio/config.xml").decode())[1] == "$fps"
        rate = float(tasks[0]["data"]["fps"])  # the task's own rate, which the config's $fps takes
    for region in tasks[0]["predictions"][0]["result"]:
        keyframes = region["value"]["sequence"]
        assert all(min(abs(k["time"] * 1000 - t) for t in times_ms) <= 1 for k in keyframes)
        numbers = [k["frame"] for k in keyframes]
        assert numbers == sorted(set(numbers)) and numbers[-1] <= region["value"]["framesCount"]
        # each box on a frame Label Studio shows its own picture on (frame n: the picture at (n - 1) / frameRate)
        for keyframe in keyframes:
            shown_at = (keyframe["frame"] - 1) / rate
            assert keyframe["time"] - 0.1 / rate <= shown_at < region["value"]["duration"]
            later = [t / 1000 for t in times_ms if t / 1000 > keyframe["time"] + 1e-3]
            assert not later or shown_at < later[0] - 0.1 / rate
        assert region["value"]["duration"] == pytest.approx(declared)  # the video's own, not past it
        assert region["value"]["framesCount"] == math.ceil(region["value"]["duration"] * rate - 0.1)
    assert "frame_times" not in json.loads((out / "steady" / "ytvis.json").read_text())["videos"][0]


def test_frame_times_that_go_backwards_give_the_constant_rate_s(tmp_path, tiny_weights) -> None:
    """An AVI with B-frames (FFmpeg gives its times in decoding order: 0.033, 0.133, 0.1, ...) and an MPEG-TS file
    joined with itself by `cat` (times start again) had those times in ytvis.json's frame_times, and their overlays
    squeezed every frame that went back to 1 ms after the one before. Such videos are numbered at their rate; a
    variable rate's times never show -0.0 (a start time's rounding)."""
    from fractions import Fraction

    from clipvis.cli.video_io import variable_frame_times, video_start_time

    avi = tmp_path / "camera.avi"
    with av.open(str(avi), "w") as container:
        stream = container.add_stream("libx264", rate=30, options={"bf": "3"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(8):  # a bar moving right: x264 makes B-frames of them
            image = np.full((48, 64, 3), 16, np.uint8)
            image[:, 4 * k : 4 * k + 4] = 255
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    once = tmp_path / "once.ts"
    with av.open(str(once), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for k in range(4):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 60 * k, np.uint8),
                                                                   format="rgb24")))
        container.mux(stream.encode())
    (tmp_path / "twice.ts").write_bytes(once.read_bytes() * 2)
    out = tmp_path / "out"
    twice = str(tmp_path / "twice.ts")
    assert was_run(segment(tiny_weights, out, str(avi), twice, extra=("--formats", "ytvis,overlay")))
    for stem, count in (("camera", 8), ("twice", 8)):
        video = json.loads((out / stem / "ytvis.json").read_text())["videos"][0]
        assert "frame_times" not in video and "start_time" not in video, video
        with av.open(str(out / stem / "overlay.mp4")) as overlay:
            played = [frame.time for frame in overlay.decode(video=0)]
        assert played == pytest.approx([k / 30 for k in range(count)], abs=2e-3), (stem, played)
    assert video_start_time([0.033, 0.133, 0.1], [0, 1, 2], Fraction(30)) == 0.0
    times = variable_frame_times([-3.3e-7, 0.5, 0.6], [0, 1, 2], Fraction(30))
    assert json.dumps(times) == "[0.0, 0.5, 0.6]"


def test_an_anamorphic_video_s_overlay_keeps_its_pixel_shape(tmp_path, tiny_weights) -> None:
    """A 2:1 pixel aspect ratio (DV, HDV, some broadcast files) was dropped: players showed the overlay at half the
    width of its source."""
    from fractions import Fraction

    path = tmp_path / "anamorphic.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.sample_aspect_ratio = Fraction(2, 1)
        for _ in range(2):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    out = tmp_path / "out"
    assert was_run(segment(tiny_weights, out, str(path), extra=("--formats", "overlay")))
    with av.open(str(out / "anamorphic" / "overlay.mp4")) as overlay:
        assert overlay.streams.video[0].sample_aspect_ratio == Fraction(2, 1)


def test_an_anamorphic_source_s_pixel_shape_is_in_run_json_and_an_interlaced_one_is_said(tmp_path,
                                                                                         tiny_weights) -> None:
    """A 4:3-pixel source's masks and JSON sizes are its stored pixels' (64x48, shown 85x48) and nothing said so; an
    interlaced MPEG-2 went to the model combed without a word. run.json now records [4, 3] (null for square pixels),
    and the interlaced video gets one warning line naming the fix."""
    from fractions import Fraction

    def write(path: Path, codec: str, aspect: Fraction | None, options: dict[str, str]) -> Path:
        with av.open(str(path), "w") as container:
            stream = container.add_stream(codec, rate=25, options=options)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            if aspect is not None:
                stream.codec_context.sample_aspect_ratio = aspect
            for i in range(2):
                frame = np.zeros((48, 64, 3), np.uint8)
                frame[::2] = 40 * i  # fields that differ
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
        return path

    wide = write(tmp_path / "wide.mp4", "libx264", Fraction(4, 3), {})
    woven = write(tmp_path / "woven.mpg", "mpeg2video", None, {"flags": "+ildct+ilme", "top": "1"})
    out = tmp_path / "out"
    result = segment(tiny_weights, out, str(wide), str(woven), extra=("--formats", "ytvis"))
    assert result.exit_code == 0, result.output
    assert RunManifest.read(out / "wide" / "run.json").pixel_aspect == [4, 3]
    assert RunManifest.read(out / "woven" / "run.json").pixel_aspect is None
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [f"clipvis: warning: {woven}: interlaced video: its frames are read as stored, so moving edges "
                        "show combing to the model and in the overlay; deinterlace it first for better masks, e.g. "
                        "ffmpeg -i IN -vf bwdif=mode=send_frame -c:v libx264 -crf 18 OUT.mp4"], result.stderr


def test_jsonl_log_is_json_to_the_end(tmp_path, tiny_weights, monkeypatch) -> None:
    """With --log-format jsonl every stderr line is a JSON event: the writing of a video's files is reported as it
    goes, an interrupted video and the batch's end (the summary) too, where plain lines used to come."""
    video = write_video(tmp_path / "clip.mp4", num_frames=6)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    monkeypatch.setattr("clipvis.cli.segment_outputs.WRITING_REPORT_INTERVAL_S", 0.001)
    result = segment(tiny_weights, tmp_path / "out", str(video), str(broken), extra=("--log-format", "jsonl"))
    assert result.exit_code == 1
    events = [json.loads(line) for line in result.stderr.splitlines()]  # nothing but JSON
    writing = [event for event in events if event["event"] == "writing"]
    assert writing[0]["frames"] == 0 and writing[0]["frames_expected"] == 6 and writing[0]["input"] == str(video)
    assert [event["event"] for event in events].index("writing") < [e["event"] for e in events].index("video_done")
    # the formats being written: the overlay's frames until it has drawn them all, none after it
    drawing = [k for k, event in enumerate(writing) if "overlay" in event["formats"]]
    assert drawing, writing
    assert all(event["frames"] is not None for event in writing[: drawing[-1] + 1]), writing
    assert all(event["frames"] is None for event in writing[drawing[-1] + 1 :]), writing
    assert all("formats_eta_s" in event for event in writing), writing  # null: written in less than a second
    assert events[-1] == {"event": "summary", "inputs": 2, "complete": 1, "skipped": 0, "failed": 1,
                          "already_complete": 0, "scope": "job", "status": "failed",
                          "message": "1 of 2 input(s) failed"}

    original = OverlayVideoWriter.write_video

    def interrupted(self, path, video):
        original(self, path, video)
        raise KeyboardInterrupt

    monkeypatch.setattr(OverlayVideoWriter, "write_video", interrupted)
    result = segment(tiny_weights, tmp_path / "out", str(video), extra=("--log-format", "jsonl", "--overwrite"))
    assert result.exit_code == 130
    events = [json.loads(line) for line in result.stderr.splitlines()]
    assert events[-2:] == [
        {"event": "video_interrupted", "input": str(video), "stem": "clip", "status": "interrupted",
         "error": f"{video}: interrupted by the user (Ctrl-C)"},
        {"event": "summary", "inputs": 1, "complete": 0, "skipped": 0, "failed": 0, "already_complete": 0,
         "scope": "job", "status": "interrupted",
         "message": "interrupted; incomplete outputs were not written"},
    ]


def test_a_file_corrected_by_hand_is_never_replaced_nor_deleted(tmp_path, tiny_weights) -> None:
    """An annotator corrected segment's ytvis.json in place (tracks dropped, a class relabelled): the next run (its
    size no longer matched run.json, so --skip-existing ran the input again) wrote over it; an edited zip of a format
    no longer asked for was deleted as the earlier run's; an export's zip edited in the folder was replaced. The
    input now fails in one line naming the file, which stays as it is; a corrected file of a format no longer written
    is kept and said in a warning; a file cut short (damage, not a correction) is written again."""
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = out / "clip"
    assert was_run(segment(tiny_weights, out, str(video)))
    ytvis = folder / "ytvis.json"
    corrected = json.loads(ytvis.read_text())
    corrected["annotations"] = corrected["annotations"][:1]
    ytvis.write_text(json.dumps(corrected))
    manifest_before = (folder / "run.json").read_text()
    advice = "nothing was replaced (move it away to segment this input again, or segment into another -o)"
    skipped = segment(tiny_weights, out, str(video))  # complete as it was: corrected, not to be run again
    assert skipped.exit_code == 0 and skipped.stdout == "", skipped.output
    assert f"skipped {video}: complete with the same settings, and {ytvis} corrected since (--overwrite refuses to " \
        "replace it)" in skipped.stderr
    for extra in (("--overwrite",), ("--formats", "ytvis,coco")):  # a run that would write it
        refused = segment(tiny_weights, out, str(video), extra=extra)
        assert refused.exit_code == 1, refused.output
        assert f"clipvis: error: {ytvis}: changed since clipvis segment wrote it; {advice}" in refused.stderr
        assert json.loads(ytvis.read_text()) == corrected and (folder / "run.json").read_text() == manifest_before
    shutil.move(str(ytvis), str(tmp_path / "corrected.json"))  # moved away: the input runs again
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis,coco,overlay,cvat-video")))
    # an edit that keeps the size (a class relabelled) is told by the file's time
    text = ytvis.read_bytes()
    found = re.search(rb'"category_id": ?(\d)', text)
    same_size = text[: found.start(1)] + (b"2" if found.group(1) == b"1" else b"1") + text[found.end(1):]
    ytvis.write_bytes(same_size)
    every = ("--formats", "ytvis,coco,overlay,cvat-video")
    refused = segment(tiny_weights, out, str(video), extra=("--overwrite", *every))
    assert refused.exit_code == 1 and f"{ytvis}: changed since clipvis segment wrote it" in refused.stderr
    assert ytvis.read_bytes() == same_size

    # a corrected zip of a format this run does not write: kept, listed as stale, said in a warning
    shutil.move(str(ytvis), str(tmp_path / "corrected2.json"))
    zipped = folder / "cvat-video.zip"
    with zipfile.ZipFile(zipped, "a") as archive:
        archive.writestr("notes.txt", "checked frames 0-2")
    edited_zip = zipped.read_bytes()
    kept = segment(tiny_weights, out, str(video), extra=("--overwrite",))
    assert kept.exit_code == 0, kept.output
    assert zipped.read_bytes() == edited_zip and RunManifest.read(folder / "run.json").stale == ["cvat-video.zip"]
    assert f"clipvis: warning: {video}: {zipped}: changed since clipvis segment wrote it, so kept (listed as stale " \
        "in run.json)" in kept.stderr
    refused = segment(tiny_weights, out, str(video), extra=("--overwrite", "--formats", "ytvis,cvat-video"))
    assert refused.exit_code == 1 and f"{zipped}: exists and is not a file clipvis wrote; {advice}" in refused.stderr
    assert zipped.read_bytes() == edited_zip


def test_an_exported_file_corrected_in_the_folder_is_not_replaced_by_segment(tmp_path, tiny_weights) -> None:
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = out / "clip"
    assert was_run(segment(tiny_weights, out, str(video)))
    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "cvat-video"])
    assert exported.exit_code == 0, exported.output
    zipped = folder / "cvat-video.zip"
    assert was_run(segment(tiny_weights, out, str(video), extra=("--formats", "ytvis,coco,overlay,cvat-video",
                                                                 "--overwrite")))  # as exported: replaced
    assert was_run(segment(tiny_weights, out, str(video)))  # and now segment's: deleted when not asked for
    assert not zipped.exists()
    assert CliRunner().invoke(app, ["export", str(folder), "--to", "cvat-video"]).exit_code == 0
    with zipfile.ZipFile(zipped, "a") as archive:
        archive.writestr("notes.txt", "checked")
    edited = zipped.read_bytes()
    refused = segment(tiny_weights, out, str(video), extra=("--formats", "ytvis,coco,overlay,cvat-video"))
    assert refused.exit_code == 1
    assert f"{zipped}: changed since clipvis exported it (cvat-video.zip); nothing was replaced" in refused.stderr
    assert zipped.read_bytes() == edited


def test_a_file_corrected_while_the_model_runs_is_not_replaced(tmp_path, tiny_weights) -> None:
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = out / "clip"
    assert was_run(segment(tiny_weights, out, str(video)))
    original = OverlayVideoWriter.write_video

    def edit_then_write(self, path, tracked_video):
        (folder / "coco.json").write_text('{"corrected": true}')
        return original(self, path, tracked_video)

    with pytest.MonkeyPatch.context() as patch:  # (monkeypatch.undo() would also undo the isolated cache)
        patch.setattr(OverlayVideoWriter, "write_video", edit_then_write)
        refused = segment(tiny_weights, out, str(video), extra=("--overwrite",))
    assert refused.exit_code == 1
    assert f"{folder / 'coco.json'}: changed since clipvis segment wrote it" in refused.stderr
    assert json.loads((folder / "coco.json").read_text()) == {"corrected": True}
    assert sorted(p.name for p in folder.iterdir() if ".tmp" in p.name) == []  # no file of the run left
    again = segment(tiny_weights, out, str(video), extra=("--overwrite",))  # the failed run.json still knows it
    assert again.exit_code == 1 and f"{folder / 'coco.json'}: changed since clipvis segment wrote it" in again.stderr


def test_a_video_that_changes_size_mid_stream_says_so(tmp_path, tiny_weights) -> None:
    """Two MPEG-TS parts, 64x48 then 96x64, one after the other: the later frames were resized to the first size
    (stretched from 3:2 to 4:3) without a word."""
    from fractions import Fraction

    def part(path: Path, width: int, height: int, first: int) -> bytes:
        with av.open(str(path), "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for index in range(4):
                frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), 60 * index, np.uint8), format="rgb24")
                frame.pts, frame.time_base = first + index, Fraction(1, 25)
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        return path.read_bytes()

    video = tmp_path / "joined.ts"
    video.write_bytes(part(tmp_path / "a.ts", 64, 48, 0) + part(tmp_path / "b.ts", 96, 64, 4))
    result = segment(tiny_weights, tmp_path / "out", str(video), extra=("--formats", "ytvis"))
    assert result.exit_code == 0, result.output
    assert f"clipvis: warning: {video}: frame 4 is 96x64, not 64x48 as the frames before it: the video changes size " \
        "mid-stream" in result.stderr
    assert json.loads((tmp_path / "out" / "joined" / "ytvis.json").read_text())["videos"][0]["length"] == 8


def test_an_image_folder_with_an_image_of_another_size_runs_and_says_so(tmp_path, tiny_weights) -> None:
    """README: a video that changes size runs on at its first frame's size; an image folder with one image of another
    size (a phone photo turned upright by its EXIF orientation) failed instead. It runs at the size most of its
    images have: with the odd image first, every other image was resized to the odd one's size."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for index, size in enumerate([(80, 48), (40, 24), (40, 24)]):
        Image.new("RGB", size, (30 * index, 60, 90)).save(folder / f"{index:03d}.jpg")
    result = segment(tiny_weights, tmp_path / "out", str(folder), extra=("--formats", "ytvis"))
    assert result.exit_code == 0, result.output
    assert f"clipvis: warning: {folder}: frame 000.jpg is 80x48, not 40x24, the size most of the images have (the " \
        "first one's where sizes tie): the images differ in size, and each image of another size was resized to " \
        "it (its aspect ratio too)" in result.stderr
    video = json.loads((tmp_path / "out" / "imgs" / "ytvis.json").read_text())["videos"][0]
    assert (video["length"], video["width"], video["height"]) == (3, 40, 24)


def test_export_and_segment_take_each_other_s_files_for_what_they_are(tmp_path, tiny_weights) -> None:
    """Review: an export beside segment's files replaced a zip a person corrected since segment wrote it (run.json
    listed it, so it was replaceable); and segment took a zip an export had written over (as exported, untouched)
    for a person's correction, refusing --overwrite and warning about it."""
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    folder = out / "clip"
    formats = ("--formats", "ytvis,coco,overlay,cvat-video")
    assert was_run(segment(tiny_weights, out, str(video), extra=formats))
    zipped = folder / "cvat-video.zip"
    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "cvat-video"])  # written over, as exported
    assert exported.exit_code == 0, exported.output
    again = segment(tiny_weights, out, str(video), extra=(*formats, "--overwrite"))
    assert again.exit_code == 0 and "changed since" not in again.stderr, again.output
    with zipfile.ZipFile(zipped, "a") as archive:  # now corrected by a person
        archive.writestr("notes.txt", "checked")
    edited = zipped.read_bytes()
    refused = CliRunner().invoke(app, ["export", str(folder), "--to", "cvat-video"])
    assert refused.exit_code == 1
    assert f"{zipped}: changed since clipvis segment wrote it; nothing was replaced" in refused.stderr
    assert zipped.read_bytes() == edited


def test_frames_listed_after_a_size_change_keep_the_video_s_first_size(tmp_path) -> None:
    """Review: frames read from a list (a corrected GT's) that starts after the size changed were resized to the
    first frame read, not to the video's (masks of 48x96 in a store of 48x64); with --stride the warning named the
    first frame read of the new size, not the first frame of it."""
    from fractions import Fraction

    from clipvis.cli.video_io import VideoReader

    def part(path: Path, width: int, first: int) -> bytes:
        with av.open(str(path), "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = width, 48, "yuv420p"
            for index in range(8):
                frame = av.VideoFrame.from_ndarray(np.full((48, width, 3), 20 * index, np.uint8), format="rgb24")
                frame.pts, frame.time_base = first + index, Fraction(1, 25)
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        return path.read_bytes()

    video = tmp_path / "joined.ts"
    video.write_bytes(part(tmp_path / "a.ts", 64, 0) + part(tmp_path / "b.ts", 96, 8))
    reader = VideoReader(video, frames=[9, 10, 12])
    assert [(index, frame.shape) for index, frame in reader] == [(i, (48, 64, 3)) for i in (9, 10, 12)]
    assert reader.size_change == (8, (48, 96))
    strided = VideoReader(video, stride=3)
    assert len(list(strided)) == 6 and strided.size_change == (8, (48, 96))  # frame 8, though 9 is the first read


def test_a_format_whose_ids_cannot_hold_the_tracks_fails_alone_and_a_rerun_redoes_it(tmp_path, tiny_weights,
                                                                                      monkeypatch) -> None:
    """More tracks than png-masks' ids hold (1..255), known once the model had run, failed the whole input: every
    other format lost, and the remedy named export's --min-score, which segment has not. The other files are now
    written; one error line names the format and segment's --max-tracks; run.json records the formats written, so
    the same --formats run again (saying why) and --formats without it is complete. A --max-tracks above what a
    format holds is a usage error before the model runs. (The limit is 2 here: the tiny model keeps a few tracks.)"""
    from clipvis.cli.exporters.id_maps import PngMasksExporter

    monkeypatch.setattr(PngMasksExporter, "MAX_ID", 2)
    video = write_video(tmp_path / "clip.mp4")
    out = tmp_path / "out"
    args = (str(video),)
    result = segment(tiny_weights, out, *args, extra=("--formats", "ytvis,png-masks"))
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error:")]
    assert len(errors) == 1, result.stderr
    assert f"{video}: png-masks.zip not written: png-masks holds track ids 1..2, and this video's reach " in errors[0]
    assert "keep at most 2 tracks (--max-tracks 2, or a higher --score-threshold); the other files are written" \
        in errors[0] and "--min-score" not in errors[0]
    folder = out / "clip"
    assert result.stdout.splitlines() == [str(folder / "ytvis.json")]
    assert not (folder / "png-masks.zip").exists()
    manifest = json.loads((folder / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["options"]["formats"] == ["ytvis"]
    assert list(manifest["formats_not_written"]) == ["png-masks"]

    again = segment(tiny_weights, out, *args, extra=("--formats", "ytvis,png-masks"))
    assert again.exit_code == 1
    assert "re-running: png-masks.zip not written by the earlier run (png-masks holds track ids 1..2" in again.stderr
    assert not was_run(segment(tiny_weights, out, *args, extra=("--formats", "ytvis")))  # complete without it

    alone = segment(tiny_weights, out, *args, extra=("--formats", "png-masks", "--overwrite"))
    assert alone.exit_code == 1 and "png-masks.zip not written" in alone.stderr
    assert "the other files" not in alone.stderr
    assert json.loads((folder / "run.json").read_text())["status"] == "failed"

    refused = segment(tiny_weights, tmp_path / "out2", *args, extra=("--formats", "ytvis,mots-txt",
                                                                      "--max-tracks", "1000"))
    assert refused.exit_code == 2 and not (tmp_path / "out2").exists()
    assert "--max-tracks 1000 with --formats mots-txt: mots-txt holds track ids 1..999 (give --max-tracks 999 or " \
        "less" in " ".join(refused.output.split())


def test_a_config_keeping_more_tracks_than_a_format_holds_is_a_usage_error_before_any_input_runs(
        tmp_path, tiny_weights, monkeypatch) -> None:
    """Review: a config's TEST.DETECTIONS_PER_IMAGE (the default --max-tracks) above what png-masks holds was known
    only once the weights loaded, after the up-front check: the model ran over every input and png-masks failed each
    time, and on every rerun. It is now a usage error once the weights are loaded, before any input runs, naming the
    config's key; under --exact (which refuses --max-tracks) the remedy is that key, as at write time."""
    from clipvis.cli.exporters.id_maps import PngMasksExporter

    video = write_video(tmp_path / "clip.mp4")
    config = tmp_path / "det300.yaml"
    config.write_text("TEST:\n  DETECTIONS_PER_IMAGE: 300\n")
    out = tmp_path / "out"
    formats = ("--formats", "ytvis,png-masks", "--config", str(config))
    # review 275: a video keeps at most queries x classes tracks (6 x 2 here), whatever the config lets it, and a
    # --score-threshold keeps fewer: such runs wrote every file before the check and still do
    assert was_run(segment(tiny_weights, tmp_path / "few", str(video), extra=formats))
    many = ",".join(f"thing{i}" for i in range(60))  # 6 queries x 60 classes: up to 300 tracks

    def segment_many(weights: Path, out: Path, video: str, extra: tuple[str, ...]):
        return CliRunner().invoke(app, ["segment", video, "--vocab", many, "--weights", str(weights), "-o", str(out),
                                        "--device", "cpu", *extra])

    assert was_run(segment_many(tiny_weights, tmp_path / "threshold", str(video), extra=(*formats, "--score-threshold",
                                                                                    "0.5")))
    refused = segment_many(tiny_weights, out, str(video), extra=formats)
    said = " ".join(refused.output.split())
    assert refused.exit_code == 2 and not out.exists(), refused.output
    assert f"--formats png-masks: png-masks holds track ids 1..255, but --config {config}'s " \
        "TEST.DETECTIONS_PER_IMAGE keeps up to 300 tracks per video (give --max-tracks 255 or less, or leave " \
        "png-masks out of --formats)" in said
    exact = segment_many(tiny_weights, out, str(video), extra=(*formats, "--exact"))
    said = " ".join(exact.output.split())
    assert exact.exit_code == 2 and not out.exists(), exact.output
    assert f"(--exact keeps that many: set TEST.DETECTIONS_PER_IMAGE to 255 or less in {config}, or leave " \
        "png-masks out of --formats)" in said and "--max-tracks" not in said
    assert was_run(segment_many(tiny_weights, out, str(video), extra=(*formats, "--max-tracks", "255")))

    # at write time (more tracks than ids, the limit made 2 here), --exact's remedy names the config key too
    monkeypatch.setattr(PngMasksExporter, "MAX_ID", 2)
    written = segment(tiny_weights, tmp_path / "exact", str(video), extra=("--formats", "ytvis,png-masks", "--exact"))
    assert written.exit_code == 1, written.output
    reason = json.loads((tmp_path / "exact" / "clip" / "run.json").read_text())["formats_not_written"]["png-masks"]
    assert reason.endswith("keep at most 2 tracks (--exact keeps the config's TEST.DETECTIONS_PER_IMAGE: set it to 2 "
                           "or less)"), reason
    assert reason in written.stderr and "--max-tracks" not in written.stderr
    assert "--score-threshold" not in written.stderr
