"""run.json: written atomically, read back, and the --skip-existing decision."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from clipvis.cli.inputs import discover_inputs
from clipvis.cli.writers import RunManifest, VideoOutputPaths, config_hash
from clipvis.cli.writers.layout import COCO_NAME, OVERLAY_NAME, YTVIS_NAME

WEIGHTS = "clipvis_lvis_r50:sha256=abc123"
VOCAB = ["cat", "dog"]
OPTIONS = {"stride": 2, "max_frames": None, "score_threshold": 0.1}


@pytest.fixture
def finished_run(tmp_path: Path) -> tuple[Path, VideoOutputPaths, RunManifest]:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"0" * 100)
    paths = VideoOutputPaths(tmp_path / "out" / "clip").prepare()
    manifest = RunManifest.start(video, "clip", WEIGHTS, VOCAB, OPTIONS)
    manifest.write(paths.manifest)
    outputs = [paths.directory / name for name in (YTVIS_NAME, COCO_NAME, OVERLAY_NAME)]
    for output in outputs:
        output.write_text("{}")
    manifest.mark_complete(12, outputs, {"decode": 1.23456, "model": 5})
    manifest.write(paths.manifest)
    return video, paths, manifest


def test_layout_names(tmp_path: Path) -> None:
    paths = VideoOutputPaths(tmp_path / "clip")
    assert [OVERLAY_NAME, YTVIS_NAME, COCO_NAME, paths.manifest.name] == [
        "overlay.mp4", "ytvis.json", "coco.json", "run.json",
    ]
    assert paths.directory == tmp_path / "clip" and not paths.directory.exists()


def test_manifest_round_trip(finished_run) -> None:
    video, paths, manifest = finished_run
    data = json.loads(paths.manifest.read_text())
    assert data["status"] == "complete" and data["frames"] == 12
    assert data["outputs"] == [{"file": name, "bytes": 2, "mtime_ns": (paths.directory / name).stat().st_mtime_ns}
                               for name in ("ytvis.json", "coco.json", "overlay.mp4")]
    assert data["weights"] == WEIGHTS and data["vocabulary"] == VOCAB and data["options"] == OPTIONS
    assert data["timings"] == {"decode": 1.2346, "model": 5.0}
    assert data["versions"]["python"] and "numpy" in data["versions"]
    assert data["started_at"] and data["finished_at"]
    assert RunManifest.read(paths.manifest) == manifest


def test_a_run_json_with_a_field_a_later_version_added_is_read(finished_run) -> None:
    """A field this version does not know (a later clipvis' run.json) made the whole manifest unreadable, so every
    complete input was redone; it is left aside. A file that is not an object stays unreadable."""
    video, paths, manifest = finished_run
    data = json.loads(paths.manifest.read_text())
    paths.manifest.write_text(json.dumps({**data, "a_later_field": [4, 3]}))
    assert RunManifest.read(paths.manifest) == manifest
    assert RunManifest.read(paths.manifest).is_complete_for(WEIGHTS, VOCAB, OPTIONS, video, paths.directory)
    paths.manifest.write_text(json.dumps([data]))
    assert RunManifest.read(paths.manifest) is None


def test_complete_run_with_same_config_is_skipped(finished_run) -> None:
    video, paths, _ = finished_run
    manifest = RunManifest.read(paths.manifest)
    assert manifest.is_complete_for(WEIGHTS, VOCAB, dict(reversed(OPTIONS.items())), video, paths.directory)


@pytest.mark.parametrize(
    "weights, vocab, options",
    [
        ("other-weights", VOCAB, OPTIONS),
        (WEIGHTS, ["dog", "cat"], OPTIONS),  # order fixes category ids
        (WEIGHTS, VOCAB + ["kite"], OPTIONS),
        (WEIGHTS, VOCAB, {**OPTIONS, "stride": 1}),
    ],
)
def test_changed_config_is_redone(finished_run, weights, vocab, options) -> None:
    video, paths, _ = finished_run
    assert not RunManifest.read(paths.manifest).is_complete_for(weights, vocab, options, video, paths.directory)


def test_changed_source_or_missing_output_is_redone(finished_run, tmp_path: Path) -> None:
    video, paths, _ = finished_run
    manifest = RunManifest.read(paths.manifest)
    other = tmp_path / "elsewhere" / "clip.mp4"  # same stem, different file
    other.parent.mkdir()
    other.write_bytes(b"0" * 100)
    assert not manifest.is_complete_for(WEIGHTS, VOCAB, OPTIONS, other, paths.directory)
    (paths.directory / COCO_NAME).write_text("{ }")  # changed size: not the file the run wrote
    assert not manifest.is_complete_for(WEIGHTS, VOCAB, OPTIONS, video, paths.directory)
    (paths.directory / COCO_NAME).write_text("{}")
    assert manifest.is_complete_for(WEIGHTS, VOCAB, OPTIONS, video, paths.directory)
    (paths.directory / OVERLAY_NAME).unlink()
    assert not manifest.is_complete_for(WEIGHTS, VOCAB, OPTIONS, video, paths.directory)
    assert manifest.is_complete_for(WEIGHTS, VOCAB, OPTIONS)  # without checks: config only
    video.write_bytes(b"1" * 101)
    assert not manifest.is_complete_for(WEIGHTS, VOCAB, OPTIONS, video)


def test_running_failed_and_corrupt_manifests_are_not_complete(finished_run) -> None:
    video, paths, _ = finished_run
    running = RunManifest.start(video, "clip", WEIGHTS, VOCAB, OPTIONS)
    assert not running.is_complete_for(WEIGHTS, VOCAB, OPTIONS)
    running.mark_failed(f"{video}: truncated or corrupt: decoding failed after 3 frames")
    running.write(paths.manifest)
    again = RunManifest.read(paths.manifest)
    assert again.status == "failed" and "after 3 frames" in again.error
    assert not again.is_complete_for(WEIGHTS, VOCAB, OPTIONS)
    paths.manifest.write_text('{"status": "complete", "trunc')
    assert RunManifest.read(paths.manifest) is None
    assert RunManifest.read(paths.directory / "nope.json") is None


def test_image_folder_fingerprint_tracks_frames(tmp_path: Path, synth) -> None:
    synth.write_images(tmp_path / "seq", ["1.png", "2.png"])
    [source] = discover_inputs([str(tmp_path / "seq")])
    manifest = RunManifest.start(source, "seq", WEIGHTS, VOCAB, OPTIONS)
    manifest.mark_complete(2, [], {})
    assert manifest.source["files"] == 2
    assert manifest.is_complete_for(WEIGHTS, VOCAB, OPTIONS, source)
    synth.write_images(tmp_path / "seq", ["3.png"])
    [grown] = discover_inputs([str(tmp_path / "seq")])
    assert not manifest.is_complete_for(WEIGHTS, VOCAB, OPTIONS, grown)


def test_image_folder_frames_renamed_into_another_order_are_another_input(tmp_path: Path, synth) -> None:
    """Renaming keeps every file's size and modification time: the frames' names and sizes in order tell it."""
    folder = tmp_path / "seq"
    synth.write_images(folder, ["1.png", "2.png", "3.png"])
    (folder / "3.png").write_bytes((folder / "3.png").read_bytes() + b"\0" * 100)  # another size than 1.png
    [source] = discover_inputs([str(folder)])
    manifest = RunManifest.start(source, "seq", WEIGHTS, VOCAB, OPTIONS)
    manifest.mark_complete(3, [], {})
    (folder / "1.png").rename(folder / "x.png")
    (folder / "3.png").rename(folder / "1.png")
    (folder / "x.png").rename(folder / "3.png")
    [swapped] = discover_inputs([str(folder)])
    assert not manifest.is_complete_for(WEIGHTS, VOCAB, OPTIONS, swapped)
    # A run.json written before the frames' order was recorded is still taken as it was.
    manifest.source.pop("frames")
    assert manifest.is_complete_for(WEIGHTS, VOCAB, OPTIONS, swapped)


def test_config_hash_is_stable_and_sensitive() -> None:
    assert config_hash("w", ["a"], {"x": 1, "y": 2}) == config_hash("w", ["a"], {"y": 2, "x": 1})
    assert config_hash("w", ["a"], {"x": 1}) != config_hash("w", ["a"], {"x": 2})
    assert len(config_hash("w", [], {})) == 64


def test_manifest_write_is_atomic(finished_run, monkeypatch: pytest.MonkeyPatch) -> None:
    _, paths, manifest = finished_run
    before = paths.manifest.read_text()

    def failing_replace(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    manifest.mark_failed("x")
    with pytest.raises(OSError):
        manifest.write(paths.manifest)
    monkeypatch.undo()
    assert paths.manifest.read_text() == before
    assert sorted(p.name for p in paths.directory.iterdir()) == ["coco.json", "overlay.mp4", "run.json", "ytvis.json"]


def test_outputs_know_local_files_by_their_resolved_paths(tmp_path, monkeypatch) -> None:
    """A weights file and a config file count by their resolved paths; the paths as typed come second (what earlier
    outputs recorded). A released checkpoint's name is kept as it is."""
    from clipvis.cli.run_identity import checkpoint_identity
    from clipvis.cli.segment import SegmentOptions

    weights = tmp_path / "w.pth"
    weights.write_bytes(b"weights")
    config = tmp_path / "c.yaml"
    config.write_text("MODEL:\n  MASK_FORMER:\n    NUM_OBJECT_QUERIES: 10\n")
    monkeypatch.chdir(tmp_path)
    identity = checkpoint_identity("w.pth")
    options = SegmentOptions(vocabulary=VOCAB, weights="w.pth", config="c.yaml", checkpoint=identity)
    (current_weights, current), (typed_weights, typed) = options.identities()
    assert (current_weights, typed_weights) == (str(weights.resolve()), "w.pth")
    assert current["config"]["path"] == str(config.resolve()) and typed["config"]["path"] == "c.yaml"
    assert current["config"]["sha256"] == typed["config"]["sha256"]
    released = SegmentOptions(vocabulary=VOCAB, weights="clipvis_lvis_r50", checkpoint=identity)
    names = [w for w, _ in released.identities()]  # then the same two as recorded with the cached file's path
    assert names[:2] == ["clipvis-lvis-r50", "clipvis_lvis_r50"] and set(names[2:]) <= set(names[:2])


def test_a_released_checkpoint_is_one_producer_however_it_is_named(tmp_path, monkeypatch) -> None:
    """Every accepted spelling of a released name is the same weights for --skip-existing and evaluate's cache (they
    re-ran everything, and evaluate dropped its per-video results)."""
    from clipvis.cli.run_identity import checkpoint_identity
    from clipvis.cli.segment import SegmentOptions
    from clipvis.weights import cache_path

    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    cached = cache_path("clipvis-lvis-r50")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    identity = checkpoint_identity(cached)
    spellings = ["clipvis-lvis-r50", "CLIPVIS-LVIS-R50", "clipvis_lvis_r50", cached.name]
    current = {SegmentOptions(vocabulary=VOCAB, weights=name, checkpoint=identity).identities()[0][0]
               for name in spellings}
    assert current == {"clipvis-lvis-r50"}
    # Its file typed as a path is a file (not checked against the release, so not recorded as it)
    by_path = SegmentOptions(vocabulary=VOCAB, weights=str(cached), checkpoint=identity)
    assert by_path.identities()[0][0] == str(cached.resolve())
    other = tmp_path / cached.name  # the same file name elsewhere is a local file, known by its path
    other.write_bytes(b"weights")
    local = SegmentOptions(vocabulary=VOCAB, weights=str(other), checkpoint=checkpoint_identity(other))
    assert local.identities()[0][0] == str(other.resolve())


def test_what_a_run_json_says_of_its_files_as_written(tmp_path) -> None:
    """Review of the corrections' protection: a run killed between its renames leaves either the earlier file or
    its own under a name (both are clipvis'); a run.json of an earlier version records sizes alone (a same-size edit
    made after it finished is one all the same); odd entries are ignored rather than crash the batch; a file cut
    short (an MP4 ending inside a box, a JSON file without its end) is damage, not a correction."""
    from clipvis.cli.writers.manifest import looks_whole

    folder = tmp_path / "clip"
    folder.mkdir()
    (folder / "a.json").write_text('{"a": 1}')
    (folder / "b.json").write_text('{"b": 2}')
    a, b = ((folder / n).stat() for n in ("a.json", "b.json"))
    manifest = RunManifest(input="x", stem="clip", weights="w", vocabulary=["box"], options={}, config_hash="h",
                           status="running",
                           earlier_stats={"a.json": [[1, 2], [a.st_size, a.st_mtime_ns]], "b.json": [b.st_size, 5],
                                          "odd": 7, "odder": [["x", None]]})
    assert manifest.changed_files(folder) == ["b.json"]  # a: the new one of two; b: another time than recorded
    manifest.outputs = [{"file": "a.json", "bytes": a.st_size, "mtime_ns": None}]  # no crash
    assert manifest.written_stats()["a.json"] == [[a.st_size, -1]]
    # sizes alone (an earlier version): a file modified after the run finished is changed, at the same size too
    old = RunManifest(input="x", stem="clip", weights="w", vocabulary=["box"], options={}, config_hash="h",
                      status="complete", outputs=[{"file": "a.json", "bytes": a.st_size}],
                      finished_at="2020-01-01T00:00:00+00:00")
    assert old.changed_files(folder) == ["a.json"]
    old.finished_at = "2999-01-01T00:00:00+00:00"
    assert old.changed_files(folder) == []
    assert old.current_stats(folder, keep=set()) == {"a.json": [[a.st_size, a.st_mtime_ns]]}  # its time, from now
    # a correction kept: carried so that no file matches it, also into a run that never completes (review12)
    assert old.current_stats(folder, keep={"a.json"}) == {"a.json": [[-1, -1]]}
    carried = RunManifest(input="x", stem="clip", weights="w", vocabulary=["box"], options={}, config_hash="h",
                          earlier_stats=old.current_stats(folder, keep={"a.json"}))
    assert carried.changed_files(folder) == ["a.json"]
    # the run.json's own time, to the nanosecond, rather than the second it names: an edit a moment later counts
    written = RunManifest.read(_write(folder / "run.json", old, finished_at="2999-01-01T00:00:00+00:00"))
    os.utime(folder / "a.json", ns=(written.written_ns + 1000, written.written_ns + 1000))
    assert written.changed_files(folder) == ["a.json"]
    # outputs entries without a file name (a hand-edited run.json) are no names: no crash of the batch
    odd = RunManifest(input="x", stem="clip", weights="w", vocabulary=["box"], options={}, config_hash="h",
                      outputs=[{"bytes": 5}, {"file": None, "bytes": 1}, {"file": "a.json", "bytes": 2}])
    assert odd.output_names == odd.clipvis_files == ["a.json"] and list(odd.written_stats()) == ["a.json"]
    # damage and corrections
    mp4 = tmp_path / "o.mp4"
    mp4.write_bytes((16).to_bytes(4, "big") + b"ftypisom" + b"\0" * 4 + (100).to_bytes(4, "big") + b"mdat" + b"\0" * 92)
    assert looks_whole(mp4)
    mp4.write_bytes(mp4.read_bytes()[:60])
    assert not looks_whole(mp4)
    spaced = tmp_path / "s.json"
    spaced.write_text('{"a": 1}' + " " * 200 + "\n")
    assert looks_whole(spaced)
    spaced.write_text('{"a": [1, 2')
    assert not looks_whole(spaced)


def _write(path, manifest: RunManifest, **changes) -> Path:
    data = dataclasses.asdict(manifest)
    data.update(changes)
    path.write_text(json.dumps(data))
    return path
