"""What a command says of a --weights (export: --model) value that names no checkpoint."""

from __future__ import annotations

from typer.testing import CliRunner

from clipvis.cli.app import app

from .test_untrusted_clip import _frames

runner = CliRunner()


def test_an_empty_weights_value_is_said_to_be_empty(tmp_path, monkeypatch) -> None:
    """It said "no such file or folder: " with an empty path."""
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["segment", str(_frames(tmp_path / "frames")), "--vocab", "cat", "--weights", "",
                                 "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code != 0, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("clipvis: error: --weights is empty: give a checkpoint file, a training folder or a "
                           "released checkpoint's name (clipvis-lvis-r50, "), line
    result = runner.invoke(app, ["export", "--to", "onnx", "--model", "", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code != 0, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("clipvis: error: --model is empty: give "), result.stderr


def test_a_release_name_with_a_checkpoint_ending_says_which_release_was_meant(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["segment", str(_frames(tmp_path / "frames")), "--vocab", "cat", "--weights",
                                 "clipvis-lvis-r50.pth", "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code != 0, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        "clipvis: error: no such file: clipvis-lvis-r50.pth; did you mean clipvis-lvis-r50 (a released checkpoint)?")
