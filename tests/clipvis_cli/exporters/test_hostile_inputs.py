"""Results files, run.json and sources as a collaborator may send them: nothing clipvis writes lands outside the
output root, nothing it did not create is replaced, and every refusal is one line (hunter 72)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clipvis.cli.app import app
from clipvis.cli.json_io import parse_json

from .conftest import make_segment_output


def run_export(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def edit_results(results: Path, change) -> None:
    document = json.loads(results.read_text())
    change(document)
    results.write_text(json.dumps(document))


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


@pytest.mark.parametrize("name", ["../../escaped", "/tmp/clipvis-escaped-by-name", "a/../../b", "x" * 5000])
def test_a_video_name_cannot_take_the_export_outside_its_root(tmp_path, name) -> None:
    """`videos[].name` was used as a path: "../../x" or "/x" wrote (and overwrote) files there, reporting success;
    a 5,000-character one was a traceback."""
    output = make_segment_output(tmp_path / "out")
    edit_results(output.folder / "ytvis.json", lambda d: d["videos"][0].update(name=name))
    before = files_under(tmp_path)
    dest = tmp_path / "exp" / "deeper"
    result = run_export(str(output.folder / "ytvis.json"), "--to", "png-masks,fiftyone,mots-png", "-o", str(dest))
    assert result.exit_code == 0, result.output
    written = files_under(tmp_path) - before
    assert written and all(dest in path.parents for path in written)
    assert not Path("/tmp/clipvis-escaped-by-name").exists()
    assert all(len(part.encode()) <= 255 for path in written for part in path.parts)


def test_deeply_nested_json_is_one_line(tmp_path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        parse_json(deep)
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "ytvis.json").write_text(deep)
    result = run_export(str(folder), "--to", "png-masks", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 1 and "nested too deeply" in result.stderr and "Traceback" not in result.output


def test_a_category_name_with_a_control_character_is_refused_in_one_line(tmp_path) -> None:
    """It went raw into CVAT's and Label Studio's XML (which then did not parse) and into labels.txt (a newline
    shifted every later class)."""
    output = make_segment_output(tmp_path / "out")
    edit_results(output.folder / "ytvis.json", lambda d: d["categories"][0].update(name="ro\x01ad"))
    result = run_export(str(output.folder), "--to", "cvat-video", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 1
    assert "category name 'ro\\x01ad' holds a control character (U+0001)" in result.stderr
    for vocab, problem in (("car,per\nson", "a control character (U+000A)"),
                           ("car,ro\ufffead", "a character XML cannot hold (U+FFFE)"),
                           ("car,ca\udcfft", "a byte that is not UTF-8 text")):  # $'ca\xfft' on a command line
        segment = CliRunner().invoke(app, ["segment", str(output.video), "--vocab", vocab, "-o", str(tmp_path / "s")])
        assert segment.exit_code == 2 and f"holds {problem}" in segment.output, segment.output


def test_a_video_name_with_a_control_character_still_makes_parsable_xml(tmp_path) -> None:
    """A video named `esc\x1bname.mp4` made a CVAT annotations.xml no tool could parse."""
    import xml.etree.ElementTree as ET
    import zipfile

    output = make_segment_output(tmp_path / "out")
    edit_results(output.folder / "ytvis.json", lambda d: d["videos"][0].update(name="esc\x1bname"))
    result = run_export(str(output.folder), "--to", "cvat-video", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(next((tmp_path / "exp").rglob("cvat-video.zip"))) as archive:
        meta = ET.fromstring(archive.read("annotations.xml")).find("meta/task")
    assert meta.findtext("name") == "esc_name"


def test_a_run_json_listing_a_users_folder_does_not_make_it_replaceable(tmp_path) -> None:
    """A run.json from elsewhere listed "png-masks": the export beside it replaced the user's png-masks/ folder."""
    output = make_segment_output(tmp_path / "out")
    (output.folder / "png-masks").mkdir()
    (output.folder / "png-masks" / "notes.txt").write_text("mine")
    manifest = {"input": str(output.video), "stem": "clip", "weights": "w", "vocabulary": ["a"], "options": {},
                "config_hash": "x", "status": "complete", "outputs": [{"file": "ytvis.json"}, {"file": "png-masks"}]}
    (output.folder / "run.json").write_text(json.dumps(manifest))
    result = run_export(str(output.folder), "--to", "png-masks")
    assert result.exit_code == 1 and "exists and is not" in result.stderr
    assert (output.folder / "png-masks" / "notes.txt").read_text() == "mine"


def test_a_source_that_is_a_named_pipe_is_refused_not_waited_on(tmp_path) -> None:
    output = make_segment_output(tmp_path / "out")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    edit_results(output.folder / "ytvis.json", lambda d: d["videos"][0].update(source=str(pipe)))
    result = run_export(str(output.folder), "--to", "coco", "-o", str(tmp_path / "exp"))  # it waited for a writer
    assert result.exit_code == 1 and f"source {pipe} (videos[].source) is a named pipe (FIFO)" in result.stderr


def test_label_studio_media_names_hold_no_backslash(tmp_path) -> None:
    """A Linux file name holding `\\` became a zip member a Windows tool unzips outside the folder."""
    output = make_segment_output(tmp_path / "out", stem="clip")
    odd = output.video.with_name("..\\..\\evil.mp4")
    output.video.rename(odd)
    edit_results(output.folder / "ytvis.json", lambda d: d["videos"][0].update(source=str(odd)))
    result = run_export(str(output.folder), "--to", "labelstudio", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    media = [path.name for path in (tmp_path / "exp").rglob("media/*")]
    assert media == [".._.._evil.mp4"]  # segment --formats labelstudio zips this folder as it is


def test_a_video_name_reaches_the_terminal_escaped(tmp_path) -> None:
    """A hand-edited name's ESC sequence went raw to stderr in export's notes and warnings (a terminal acts on it)."""
    output = make_segment_output(tmp_path / "out")
    edit_results(output.folder / "ytvis.json", lambda d: d["videos"][0].update(name="a\x1b]0;TITLE\x07b"))
    result = run_export(str(output.folder), "--to", "cvat-video", "--classes", "cat,cow", "-o", str(tmp_path / "exp"))
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stderr and "a\\x1b]0;TITLE\\x07b: --classes cow: no such class here" in result.stderr
    result = run_export(str(output.folder), "--to", "cvat-video", "-o", str(tmp_path / "exp2"))
    assert "\x1b" not in result.stderr and "a\\x1b]0;TITLE\\x07b: cvat-video polygons cover the masks" in result.stderr
