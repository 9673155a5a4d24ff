"""Why `segment --skip-existing` runs an input again (clipvis.cli.rerun): the earlier run's run.json against this
run's settings, source and outputs, said by the options' names."""

from __future__ import annotations

import os
from pathlib import Path

from clipvis.cli.inputs import VideoSource
from clipvis.cli.rerun import rerun_reason
from clipvis.cli.writers.manifest import RunManifest

OPTIONS = {"formats": ["ytvis"], "stride": 1, "exact": False, "config": None, "clipvis": "0.1.0",
           "checkpoint": {"file": "/w.pth", "bytes": 10, "mtime_ns": 5}}


def earlier_run(tmp_path: Path, options: dict = OPTIONS) -> tuple[VideoSource, RunManifest]:
    tmp_path.mkdir(exist_ok=True)
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"video")
    source = VideoSource(path=video)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ytvis.json").write_text("{}")
    manifest = RunManifest.start(source, "clip", "/w.pth", ["cat"], options)
    manifest.mark_complete(3, [tmp_path / "out" / "ytvis.json"], {})
    return source, manifest


def test_each_setting_that_differs_is_named_with_both_values(tmp_path) -> None:
    source, earlier = earlier_run(tmp_path)
    out = tmp_path / "out"

    def reason(weights: str = "/w.pth", vocabulary: tuple[str, ...] = ("cat",), **changes):
        return rerun_reason(earlier, [(weights, {**OPTIONS, **changes})], list(vocabulary), source, out)

    assert reason(exact=True).message == "--exact differs from the earlier run (on vs off)"
    assert reason(exact=True).changed == ["--exact"]
    assert reason(formats=["coco", "ytvis"], stride=2).message == "--formats and --stride differ from the earlier " \
        "run (--formats: coco,ytvis vs ytvis; --stride: 2 vs 1)"
    assert reason(vocabulary=("dog",)).message == "the vocabulary differs from the earlier run (class 1 is 'dog' " \
        "now, 'cat' before)"
    # another file: said as --weights alone; the same file changed since: as the weights file
    other = {"file": "/v.pth", "bytes": 10, "mtime_ns": 5}
    assert reason("/v.pth", checkpoint=other).message == "--weights differs from the earlier run (/v.pth vs /w.pth)"
    assert reason(checkpoint={**OPTIONS["checkpoint"], "mtime_ns": 6}).message == "the weights file differs from " \
        "the earlier run (/w.pth: another size or modification time)"
    assert reason(config={"path": "/c.yaml", "sha256": "1"}).changed == ["--config"]
    assert reason(image_fps=6.0).message == "--image-fps differs from the earlier run (6.0 vs the default)"
    # of the identities a run may be recorded under, the closest is compared
    assert rerun_reason(earlier, [("/v.pth", {**OPTIONS, "stride": 2}), ("/w.pth", {**OPTIONS, "stride": 2})],
                        ["cat"], source, out).changed == ["--stride"]


def test_a_changed_input_or_output_is_said_and_an_incomplete_earlier_run_needs_no_word(tmp_path) -> None:
    source, earlier = earlier_run(tmp_path)
    out = tmp_path / "out"
    (out / "ytvis.json").write_text("{ }")
    assert rerun_reason(earlier, [("/w.pth", OPTIONS)], ["cat"], source, out).message == \
        f"{out / 'ytvis.json'} is not the size the earlier run wrote (3 bytes, not 2): cut short or replaced"
    (out / "ytvis.json").unlink()
    assert rerun_reason(earlier, [("/w.pth", OPTIONS)], ["cat"], source, out).message == \
        f"{out / 'ytvis.json'}, written by the earlier run, is missing"
    os.utime(source.path, ns=(1, 1))
    assert rerun_reason(earlier, [("/w.pth", OPTIONS)], ["cat"], source, out).message == \
        "the input changed since the earlier run (its modification time)"
    earlier.mark_failed("boom")
    assert rerun_reason(earlier, [("/w.pth", {**OPTIONS, "stride": 2})], ["cat"], source, out) is None
    assert rerun_reason(None, [("/w.pth", OPTIONS)], ["cat"], source, out) is None


def test_a_release_whose_cache_moved_is_the_same_weights(tmp_path, monkeypatch) -> None:
    """The weights cache copied to node-local scratch (CLIPVIS_CACHE changed: the same bytes, size and modification
    time at another path) re-ran every finished input, saying "the weights file differs ... (another size or
    modification time)". A release given by name is known by its size and modification time, not its path; outputs
    recorded with the path (earlier clipvis) are still complete where the path is the same."""
    from clipvis.cli.segment import SegmentOptions
    from clipvis.cli.segment_resume import complete_for_any

    monkeypatch.chdir(tmp_path)  # no file named like the release here
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"video")
    source = VideoSource(path=video)
    out = tmp_path / "out"
    out.mkdir()

    def options(cache: str, weights: str = "clipvis-lvis-r50") -> SegmentOptions:
        return SegmentOptions(["cat"], weights, output=out, checkpoint={
            "file": f"{cache}/weights/clipvis_lvis_r50_7.pth", "bytes": 10, "mtime_ns": 5})

    def earlier(weights: str, recorded: dict) -> RunManifest:
        manifest = RunManifest.start(source, "clip", weights, ["cat"], recorded)
        manifest.mark_complete(3, [], {})
        return manifest

    home, scratch = options("/home/u/.cache/clipvis"), options("/scratch/job1")
    first = earlier(*home.identities()[0])
    assert complete_for_any(first, scratch.identities(), ["cat"], source)
    # run.json of an earlier clipvis (the cached file's path recorded): still complete at that path
    legacy = earlier("clipvis-lvis-r50", {**home.result_options(), "checkpoint": home.checkpoint})
    assert complete_for_any(legacy, home.identities(), ["cat"], source)
    assert rerun_reason(legacy, scratch.identities(), ["cat"], source, out).message == (
        "the weights file differs from the earlier run (clipvis-lvis-r50: the same size and modification time at "
        "another path, /home/u/.cache/clipvis/weights/clipvis_lvis_r50_7.pth before)")
    # another file in the cache: re-run, said so
    replaced = SegmentOptions(["cat"], "clipvis-lvis-r50", output=out, checkpoint={
        "file": "/scratch/job1/weights/clipvis_lvis_r50_7.pth", "bytes": 10, "mtime_ns": 6})
    assert not complete_for_any(first, replaced.identities(), ["cat"], source)
    assert rerun_reason(first, replaced.identities(), ["cat"], source, out).message == (
        "the weights file differs from the earlier run (clipvis-lvis-r50: another size or modification time)")
    # a file given by its path is known by that path: moved, it is other weights (said as --weights)
    by_path = options("/home/u/x", weights="/home/u/x/weights/clipvis_lvis_r50_7.pth")
    moved = options("/scratch/x", weights="/scratch/x/weights/clipvis_lvis_r50_7.pth")
    recorded = earlier(*by_path.identities()[0])
    assert not complete_for_any(recorded, moved.identities(), ["cat"], source)


def test_formats_are_said_once_and_a_format_the_earlier_run_did_not_write_is_no_older_layout(tmp_path) -> None:
    """Adding or dropping mots-png (a format with a layout revision) said "--formats and --formats differ ...
    (--formats: mots-png,ytvis vs ytvis; --formats: mots-png written in an older layout)" (or ":  written in an
    older layout", naming nothing), and `changed` held --formats twice: the earlier run wrote no mots-png at all."""
    source, earlier = earlier_run(tmp_path)
    out = tmp_path / "out"
    revised = {"mots-png": 2}
    added = rerun_reason(earlier, [("/w.pth", {**OPTIONS, "formats": ["mots-png", "ytvis"],
                                               "format_revisions": revised})], ["cat"], source, out)
    assert added.message == "--formats differs from the earlier run (mots-png,ytvis vs ytvis)"
    assert added.changed == ["--formats"]
    _, with_mots = earlier_run(tmp_path / "b", {**OPTIONS, "formats": ["mots-png", "ytvis"],
                                                "format_revisions": revised})
    dropped = rerun_reason(with_mots, [("/w.pth", OPTIONS)], ["cat"], source, out)
    assert dropped.message == "--formats differs from the earlier run (ytvis vs mots-png,ytvis)"
    assert dropped.changed == ["--formats"]
    # the same format in an older layout: said so, once, beside another change of --formats
    _, old_layout = earlier_run(tmp_path / "c", {**OPTIONS, "formats": ["mots-png", "ytvis"]})
    same = rerun_reason(old_layout, [("/w.pth", {**OPTIONS, "formats": ["mots-png", "ytvis"],
                                                 "format_revisions": revised})], ["cat"], source, out)
    assert same.message == "--formats differs from the earlier run (mots-png written in an older layout)"
    both = rerun_reason(old_layout, [("/w.pth", {**OPTIONS, "formats": ["coco", "mots-png", "ytvis"],
                                                 "format_revisions": revised})], ["cat"], source, out)
    assert both.message == "--formats differs from the earlier run (coco,mots-png,ytvis vs mots-png,ytvis; " \
        "mots-png written in an older layout)" and both.changed == ["--formats"]


def test_an_option_of_a_format_the_earlier_run_did_not_write_is_not_named(tmp_path) -> None:
    """A run without overlay records no --overlay-min-score (nor one without labelstudio a --media-url); adding
    overlay said "--overlay-min-score: 0.2 vs the default" though the default is 0.2 and nothing but --formats
    changed."""
    source, earlier = earlier_run(tmp_path)
    out = tmp_path / "out"
    overlay = rerun_reason(earlier, [("/w.pth", {**OPTIONS, "formats": ["overlay", "ytvis"],
                                                 "overlay_min_score": 0.2})], ["cat"], source, out)
    assert overlay.message == "--formats differs from the earlier run (overlay,ytvis vs ytvis)"
    assert overlay.changed == ["--formats"]
    labelstudio = rerun_reason(earlier, [("/w.pth", {**OPTIONS, "formats": ["labelstudio", "ytvis"],
                                                     "media_url": "/m/"})], ["cat"], source, out)
    assert labelstudio.changed == ["--formats"]
    _, drawn = earlier_run(tmp_path / "b", {**OPTIONS, "formats": ["overlay", "ytvis"], "overlay_min_score": 0.2})
    threshold = rerun_reason(drawn, [("/w.pth", {**OPTIONS, "formats": ["overlay", "ytvis"],
                                                 "overlay_min_score": 0.5})], ["cat"], source, out)
    assert threshold.message == "--overlay-min-score differs from the earlier run (0.5 vs 0.2)"  # both draw it
