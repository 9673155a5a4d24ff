"""`clipvis segment --formats ...` writes export formats in the same pass (tiny random model)."""

from __future__ import annotations

import json
import shlex
import zipfile

import pytest
from typer.testing import CliRunner

from clipvis.cli.app import app

from .conftest import write_video


def test_segment_writes_export_formats(tiny_weights, tmp_path, isolated_cache) -> None:
    video = write_video(tmp_path / "clip.mp4", frames=4)
    out = tmp_path / "out"
    args = ["segment", str(video), "--vocab", "cat,dog", "--weights", str(tiny_weights), "-o", str(out),
            "--device", "cpu", "--formats", "ytvis,cvat-video,mots-png,png-masks"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = out / "clip"
    manifest = json.loads((folder / "run.json").read_text())
    assert manifest["status"] == "complete"
    names = sorted(entry["file"] for entry in manifest["outputs"])
    assert names == ["cvat-video.zip", "mots-png.zip", "png-masks.zip", "ytvis.json"]
    with zipfile.ZipFile(folder / "cvat-video.zip") as archive:
        assert "<mode>interpolation</mode>" in archive.read("annotations.xml").decode()
    with zipfile.ZipFile(folder / "mots-png.zip") as archive:
        files = archive.namelist()
    assert len([n for n in files if n.startswith("mots-png/instances/") and n.endswith(".png")]) == 4
    assert len([n for n in files if n.startswith("mots-png/images/") and n.endswith(".jpg")]) == 4
    assert "mots-png/instances/labels.txt" in files
    assert not list(folder.glob(".export-*"))
    mtime = (folder / "mots-png.zip").stat().st_mtime_ns
    again = CliRunner().invoke(app, args, catch_exceptions=False)  # same settings: complete, skipped
    assert again.exit_code == 0 and (folder / "mots-png.zip").stat().st_mtime_ns == mtime
    default = CliRunner().invoke(app, [*args[:-2]], catch_exceptions=False)  # default formats: no export zips
    assert default.exit_code == 0
    assert not (folder / "mots-png.zip").exists()  # clipvis' own earlier output of another --formats: removed
    bad = CliRunner().invoke(app, [*args[:-1], "ytvis,pascal"])
    assert bad.exit_code == 2 and "pascal" in bad.output


def test_segment_says_the_export_formats_warnings_once_per_video(tiny_weights, tmp_path, isolated_cache) -> None:
    """`segment --formats labelstudio,fiftyone` on an .mkv wrote files Label Studio may not play, and tasks.json
    without a media URL, in silence (`clipvis export` warns of both). Each is now one warning line per video, the
    URL one naming the real file and how to give --media-url (to an export, or to segment)."""
    video = write_video(tmp_path / "my clip.mkv", frames=2)
    out = tmp_path / "out"
    args = ["segment", str(video), "--vocab", "cat", "--weights", str(tiny_weights), "-o", str(out), "--device",
            "cpu", "--formats", "ytvis,labelstudio,fiftyone"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("clipvis: warning:")]
    browser = [line for line in warnings if "is not a video every browser plays" in line]
    assert len(browser) == 1 and "ffmpeg -i" in browser[0], result.stderr
    url = [line for line in warnings if "tasks.json names the video by its file name alone" in line]
    assert len(url) == 1 and 'data.video "my%20clip.mkv"' in url[0], result.stderr
    assert f"clipvis export {shlex.quote(str(out / 'my clip'))} --to labelstudio --media-url" in url[0]  # pastable
    assert "keep ytvis in --formats" in url[0]
    assert "or segment again with --media-url" in url[0] and "segment has no --media-url" not in url[0]
    with zipfile.ZipFile(out / "my clip" / "labelstudio.zip") as archive:
        tasks = json.loads(archive.read("labelstudio/tasks.json"))
    assert tasks[0]["data"]["video"] == "my%20clip.mkv"  # what the warning quotes
    assert len(warnings) == 2, result.stderr  # FiftyOne loads an .mkv as a video: nothing to say



def test_segment_labelstudio_without_ytvis_says_to_segment_again_with_a_media_url(
    tiny_weights, tmp_path, isolated_cache
) -> None:
    """`segment --formats labelstudio` alone said "keep ytvis in --formats" and the `clipvis export` to run, which
    then failed (the run wrote no ytvis.json). It now says to segment again with --media-url (no export to run)."""
    video = write_video(tmp_path / "clip.mp4", frames=2)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(video), "--vocab", "cat", "--weights", str(tiny_weights), "-o",
                                      str(out), "--device", "cpu", "--formats", "labelstudio"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    url = [line for line in result.stderr.splitlines() if "tasks.json names the video" in line]
    assert len(url) == 1, result.stderr
    assert 'segment again with the URL prefix Label Studio serves media/ under (--media-url "' in url[0], url[0]
    assert "keep ytvis" not in url[0] and "clipvis export" not in url[0]
    assert not (out / "clip" / "ytvis.json").exists()


def test_segment_media_url_writes_the_urls_export_writes_and_a_changed_one_rewrites_the_zip(
    tiny_weights, tmp_path, isolated_cache
) -> None:
    """`segment --formats labelstudio` had no --media-url: every labelstudio.zip named its video by the bare file
    name, and a warning said to export again. `--media-url` now gives tasks.json the URLs `clipvis export --to
    labelstudio --media-url` writes for the same folder, with no warning; the same URL again skips the input, another
    one writes the zip again with it (the model runs again: README says so)."""
    video = write_video(tmp_path / "my clip #1.mp4", frames=2)
    out = tmp_path / "out"
    prefix = "/data/local-files/?d=clips/"
    args = ["segment", str(video), "--vocab", "cat", "--weights", str(tiny_weights), "-o", str(out), "--device",
            "cpu", "--formats", "ytvis,labelstudio", "--media-url", prefix]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "tasks.json names the video" not in result.stderr, result.stderr
    folder = out / "my clip #1"

    def tasks_of_the_zip() -> list[dict]:
        with zipfile.ZipFile(folder / "labelstudio.zip") as archive:
            return json.loads(archive.read("labelstudio/tasks.json"))

    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "labelstudio", "--media-url", prefix, "-o",
                                        str(tmp_path / "exp")], catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    export_tasks = json.loads((tmp_path / "exp" / "my clip #1" / "labelstudio" / "tasks.json").read_text())
    assert [task["data"] for task in tasks_of_the_zip()] == [task["data"] for task in export_tasks]
    assert tasks_of_the_zip()[0]["data"]["video"] == prefix + "my%20clip%20%231.mp4"
    assert json.loads((folder / "run.json").read_text())["options"]["media_url"] == prefix
    written = (folder / "labelstudio.zip").stat().st_mtime_ns

    again = CliRunner().invoke(app, args, catch_exceptions=False)  # the same URL: complete, skipped
    assert again.exit_code == 0 and "skipped" in again.stderr and "re-running" not in again.stderr, again.stderr
    assert (folder / "labelstudio.zip").stat().st_mtime_ns == written

    moved = CliRunner().invoke(app, [*args[:-1], "http://host/media/"], catch_exceptions=False)
    assert moved.exit_code == 0, moved.output
    assert 're-running: --media-url differs from the earlier run (http://host/media/ vs ' in moved.stderr
    assert tasks_of_the_zip()[0]["data"]["video"] == "http://host/media/my%20clip%20%231.mp4"
    folder_url = CliRunner().invoke(app, [*args[:-1], "http://host/media"], catch_exceptions=False)  # no `/`: the
    # same folder (it wrote http://host/mediamy%20clip...), so the same setting: skipped
    assert folder_url.exit_code == 0 and "skipped" in folder_url.stderr, folder_url.stderr
    assert "re-running" not in folder_url.stderr
    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "labelstudio", "--media-url", "http://h/v",
                                        "-o", str(tmp_path / "exp2")], catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    export_tasks = json.loads((tmp_path / "exp2" / "my clip #1" / "labelstudio" / "tasks.json").read_text())
    assert export_tasks[0]["data"]["video"] == "http://h/v/my%20clip%20%231.mp4"


def test_media_url_without_labelstudio_is_a_usage_error(tiny_weights, tmp_path, isolated_cache) -> None:
    """`--media-url` changes labelstudio's tasks.json alone: given to a segment or export writing none, it was
    ignored in silence. Both say so as a usage error, before anything runs or is written."""
    video = write_video(tmp_path / "clip.mp4", frames=2)
    out = tmp_path / "out"
    refused = CliRunner().invoke(app, ["segment", str(video), "--vocab", "cat", "--weights", str(tiny_weights), "-o",
                                       str(out), "--device", "cpu", "--formats", "ytvis", "--media-url", "/m/"])
    assert refused.exit_code == 2 and "--media-url is only for labelstudio (add it to --formats" in refused.output
    assert not out.exists()
    export = CliRunner().invoke(app, ["export", str(tmp_path), "--to", "coco", "--media-url", "/m/"])
    assert export.exit_code == 2 and "--media-url is only for labelstudio (add it to --to" in export.output
    helps = [CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
             for command in ("segment", "export")]
    assert all("URL prefix under which Label Studio serves the video files" in text for text in helps)


def test_segment_cvat_formats_warn_once_of_class_names_cvat_refuses_as_labels(
    tiny_weights, tmp_path, isolated_cache
) -> None:
    """A class name over 64 characters: `clipvis export --to cvat-video` warned that its shapes will not import, and
    `segment --formats cvat-video,cvat-images` wrote the same zips in silence. It now says it once per video."""
    video = write_video(tmp_path / "clip.mp4", frames=2)
    long_name = "a very long class name " * 3
    for formats, subject in [("cvat-video,cvat-images", f"{tmp_path / 'out' / 'clip'} (cvat-video.zip, "
                                                         "cvat-images.zip)"),
                             ("cvat-images", str(tmp_path / "out" / "clip" / "cvat-images.zip"))]:
        result = CliRunner().invoke(app, ["segment", str(video), "--vocab", f"cat,{long_name.strip()}", "--weights",
                                          str(tiny_weights), "-o", str(tmp_path / "out"), "--device", "cpu",
                                          "--formats", formats, "--overwrite"], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        labels = [line for line in result.stderr.splitlines() if "CVAT takes label names of up to 64" in line]
        assert len(labels) == 1, result.stderr
        assert f"{subject}: CVAT takes" in labels[0] and "(68)" in labels[0]
    quiet = CliRunner().invoke(app, ["segment", str(video), "--vocab", "cat,dog", "--weights", str(tiny_weights), "-o",
                                     str(tmp_path / "out"), "--device", "cpu", "--formats", "cvat-video"])
    assert quiet.exit_code == 0 and "CVAT takes" not in quiet.stderr

def test_formats_that_carry_a_video_file_refuse_an_image_folder_before_the_model(
    tiny_weights, tmp_path, isolated_cache
) -> None:
    import numpy as np
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(2):
        Image.fromarray(np.full((48, 64, 3), 40 * index, np.uint8)).save(frames / f"{index:03d}.jpg")
    video = write_video(tmp_path / "clip.mp4", frames=2)

    def no_model(*args, **kwargs):
        raise AssertionError("the model ran for an input whose files cannot be written")

    args = ["segment", str(frames), "--vocab", "cat", "--weights", str(tiny_weights), "-o", str(tmp_path / "out"),
            "--device", "cpu", "--formats", "ytvis,fiftyone"]
    with pytest.MonkeyPatch.context() as patch:  # (monkeypatch.undo() would also undo the isolated cache)
        patch.setattr("clipvis.cli.segment.SegmentRunner.track", no_model)
        result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 1
    assert f"clipvis: error: {frames}: --formats fiftyone needs a video file, and this input is an image folder" \
        in result.stderr
    assert not (tmp_path / "out" / "frames").exists()  # no folder claimed, no run.json saying "failed" later
    gif = tmp_path / "anim.gif"  # FiftyOne loads a GIF as an image: its per-frame labels would attach to nothing
    images = [Image.fromarray(np.full((48, 64, 3), 40 * index, np.uint8)) for index in range(2)]
    images[0].save(gif, save_all=True, append_images=images[1:], duration=100, loop=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("clipvis.cli.segment.SegmentRunner.track", no_model)
        result = CliRunner().invoke(app, [*args[:1], str(gif), *args[2:]], catch_exceptions=False)
    assert result.exit_code == 1
    assert f"clipvis: error: {gif}: --formats fiftyone needs a file FiftyOne loads as a video" in result.stderr
    assert not (tmp_path / "out" / "anim").exists()
    video_run = CliRunner().invoke(app, [*args[:1], str(video), *args[2:]], catch_exceptions=False)
    assert video_run.exit_code == 0, video_run.output  # a video file is fine


def test_segment_cvat_video_skips_the_polygon_iou_that_only_export_reports(segment_output, tmp_path,
                                                                        monkeypatch) -> None:
    """segment's cvat-video.zip is the file `clipvis export` writes, without measuring the polygons' IoU (rasterising
    every polygon again), which only export's summary shows."""
    from pathlib import Path

    from clipvis.cli.exporters import ExportOptions, ExportVideo
    from clipvis.cli.exporters import cvat as cvat_module
    from clipvis.cli.exporters.adapter import ExportFormatWriter
    from clipvis.cli.writers.base import SegmentedVideo

    info, tracks = segment_output.info, segment_output.tracks
    categories = ["cat", "dog", "hot air balloon"]
    exported = tmp_path / "exported"
    exported.mkdir()
    exporter = cvat_module.CvatVideoExporter()
    (made,) = exporter.export(ExportVideo(info, tracks, categories, segment_output.folder, category_ids=[1, 2, 3]),
                              exported, ExportOptions())
    assert exporter.last_polygon_iou is not None and exporter.last_polygon_iou > 0.9

    def no_rasterising(*args, **kwargs):
        raise AssertionError("segment rasterised a polygon to measure it")

    monkeypatch.setattr(cvat_module, "polygon_iou", no_rasterising)
    video = SegmentedVideo(info, tracks, categories, frames=lambda: iter(()))
    written = ExportFormatWriter("cvat-video").write_video(Path(segment_output.folder) / "cvat-video.zip", video)
    with zipfile.ZipFile(written) as got, zipfile.ZipFile(made) as want:
        assert got.read("annotations.xml") == want.read("annotations.xml")


def test_segment_labelstudio_takes_a_file_name_that_is_not_utf8(tiny_weights, tmp_path, isolated_cache) -> None:
    """`segment --formats labelstudio` on `caf\\xe9.mp4` (a Latin-1 name) failed the whole input ("'utf-8' codec
    can't encode character '\\udce9' ... surrogates not allowed": a zip member's name is UTF-8), every other format
    lost with it. The video's copy is named as its output folder is (`caf_xe9.mp4`), in segment's zip and in an
    export's folder alike."""
    import os

    video = write_video(tmp_path / os.fsdecode(b"caf\xe9.mp4"), frames=2)
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["segment", str(video), "--vocab", "cat", "--weights", str(tiny_weights), "-o",
                                      str(out), "--device", "cpu", "--formats", "ytvis,labelstudio,fiftyone",
                                      "--media-url", "/m/"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    folder = out / "caf_xe9"
    with zipfile.ZipFile(folder / "labelstudio.zip") as archive:
        assert "labelstudio/media/caf_xe9.mp4" in archive.namelist()
        tasks = json.loads(archive.read("labelstudio/tasks.json"))
    assert tasks[0]["data"]["video"] == "/m/caf_xe9.mp4"
    with zipfile.ZipFile(folder / "fiftyone.zip") as archive:
        assert "fiftyone/data/caf_xe9.mp4" in archive.namelist()
    exported = CliRunner().invoke(app, ["export", str(folder), "--to", "labelstudio", "--media-url", "/m/", "-o",
                                        str(tmp_path / "exp")], catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    media = tmp_path / "exp" / "caf_xe9" / "labelstudio"
    assert [path.name for path in (media / "media").iterdir()] == ["caf_xe9.mp4"]
    assert json.loads((media / "tasks.json").read_text())[0]["data"] == tasks[0]["data"]
