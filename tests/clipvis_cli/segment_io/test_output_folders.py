"""Which output folder an input gets: its own (run.json records the source), never another source's."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipvis.cli.inputs import VideoSource
from clipvis.cli.locks import FolderBusyError, FolderLock
from clipvis.cli.writers import RunManifest
from clipvis.cli.writers.layout import claim_output_folder, plan_folder_names


def claim(root: Path, source: VideoSource, taken: set[str] | None = None, reserved=frozenset()) -> str:
    manifest = RunManifest.start(source, source.stem, "w", ["a"], {})
    claimed = claim_output_folder(root, manifest, source, taken, reserved)
    claimed.lock.release()
    assert RunManifest.read(claimed.paths.manifest).source_path == manifest.source_path
    return claimed.paths.stem


def test_one_batch_suffixes_collisions_deterministically(tmp_path: Path) -> None:
    sources = [
        VideoSource(tmp_path / "a" / "clip.mp4"),
        VideoSource(tmp_path / "b" / "clip.mov"),
        VideoSource(tmp_path / "clip-2.mp4"),
        VideoSource(tmp_path / "c" / "CLIP.mp4"),
        VideoSource(tmp_path / "other.mp4"),
    ]
    reserved = frozenset(s.stem.lower() for s in sources)
    taken: set[str] = set()
    names = [claim(tmp_path / "out", s, taken, reserved - {s.stem.lower()}) for s in sources]
    assert names == ["clip", "clip-3", "clip-2", "CLIP-4", "other"]
    assert plan_folder_names([s.stem for s in sources]) == names  # what every shard plans, without the disk


def test_same_stem_from_another_source_on_another_day(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a, b = VideoSource(tmp_path / "a" / "clip.mp4"), VideoSource(tmp_path / "b" / "clip.mp4")
    assert claim(out, a) == "clip"
    assert claim(out, b) == "clip-2"  # tomorrow, alone: clip/ is a's
    assert claim(out, a) == "clip" and claim(out, b) == "clip-2"  # each comes back to its own folder
    (out / "mine").mkdir()
    (out / "mine" / "notes.txt").write_text("not clipvis'")
    assert claim(out, VideoSource(tmp_path / "mine.mp4")) == "mine-2"  # files but no run.json: not ours
    assert (out / "mine" / "notes.txt").read_text() == "not clipvis'"


def test_busy_folder_of_the_same_source_raises_other_sources_go_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a, b = VideoSource(tmp_path / "a" / "clip.mp4"), VideoSource(tmp_path / "b" / "clip.mp4")
    assert claim(out, a) == "clip"
    with FolderLock(out / "clip"):  # a is being processed by another process
        with pytest.raises(FolderBusyError, match="another clipvis process is writing here"):
            claim(out, a)
        assert claim(out, b) == "clip-2"
