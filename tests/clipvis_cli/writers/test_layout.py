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


def test_a_foreign_folder_of_the_plain_name_keeps_the_batch_in_input_order_whatever_order_shards_claim(
    tmp_path: Path,
) -> None:
    """`same/a/clip.mp4` (id 1) and `same/b/clip.mp4` (id 2) beside a folder `clip/` of someone else's files (or
    another source's outputs): a got `clip-3/` and b `clip-2/` (a's planned `clip` was taken, and the walk past it
    skipped b's planned `clip-2`). They get `clip-2/` and `clip-3/`, in input order, in whichever order the shards
    claim them, and come back to them on a rerun."""
    from clipvis.cli.writers import layout
    from clipvis.cli.writers.manifest import source_owner

    a, b = VideoSource(tmp_path / "same" / "a" / "clip.mp4"), VideoSource(tmp_path / "same" / "b" / "clip.mp4")
    other = VideoSource(tmp_path / "elsewhere" / "clip.mp4")
    for foreign in ("notes", "outputs"):
        out = tmp_path / foreign
        if foreign == "notes":
            (out / "clip").mkdir(parents=True)
            (out / "clip" / "notes.txt").write_text("mine")
        else:
            assert claim(out, other) == "clip"
        for order in ((a, b), (b, a)):
            got = {}
            for source in order:  # each shard plans with a listing of its own
                listing = layout.OutputRootListing(out)
                unavailable = listing.unavailable(["clip", "clip"], {source_owner(a), source_owner(b)})
                planned = dict(zip((a, b), plan_folder_names(["clip", "clip"], unavailable), strict=True))
                manifest = RunManifest.start(source, source.stem, "w", ["a"], {})
                claimed = claim_output_folder(out, manifest, source, set(), frozenset({"clip", *planned.values()}),
                                              planned[source], listing)
                claimed.lock.release()
                got[source] = claimed.paths.stem
            assert (got[a], got[b]) == ("clip-2", "clip-3"), (foreign, order)
        assert plan_folder_names(["clip", "clip"]) == ["clip", "clip-2"]  # without it: the plain name first
        if foreign == "notes":
            assert (out / "clip" / "notes.txt").read_text() == "mine"


def test_a_new_input_beside_an_earlier_runs_folder_gets_the_lowest_free_suffix_in_every_order(tmp_path: Path) -> None:
    """`a/clip.mp4` made `clip/` yesterday; today's batch lists `b/clip.mp4` before it. b got `clip-3/` (planned
    `clip/`, a's; the walk past it skipped a's planned `clip-2`, and a came back to `clip/`), leaving `clip-2/`
    unused. The plan keeps a's own folder for a, so b gets `clip-2/`, in whichever order the shards claim them,
    and both come back to their folders on a rerun."""
    from clipvis.cli.writers import layout
    from clipvis.cli.writers.manifest import source_owner

    a, b = VideoSource(tmp_path / "a" / "clip.mp4"), VideoSource(tmp_path / "b" / "clip.mp4")
    c = VideoSource(tmp_path / "c" / "clip.mp4")

    def shards(out: Path, batch: list[VideoSource], order: list[VideoSource]) -> dict[VideoSource, str]:
        got = {}
        for source in order:  # each shard plans with a listing of its own, as SegmentRunner.run_batch does
            listing = layout.OutputRootListing(out)
            planned = dict(zip(batch, listing.plan([s.stem for s in batch], [source_owner(s) for s in batch]),
                               strict=True))
            reserved = frozenset(n.lower() for s in batch for n in (s.stem, planned[s]))
            manifest = RunManifest.start(source, source.stem, "w", ["a"], {})
            claimed = claim_output_folder(out, manifest, source, set(), reserved, planned[source], listing)
            claimed.lock.release()
            got[source] = claimed.paths.stem
        return got

    for order in ([b, a], [a, b]):
        out = tmp_path / f"out-{order[0].path.parent.name}"
        assert claim(out, a) == "clip"
        for _ in range(2):  # the run, then a rerun
            assert shards(out, [b, a], order) == {a: "clip", b: "clip-2"}, order
    (out / "clip-3").mkdir()
    (out / "clip-3" / "notes.txt").write_text("mine")
    assert shards(out, [c, b, a], [a, c, b]) == {a: "clip", b: "clip-2", c: "clip-4"}  # past someone else's files


def test_the_same_file_through_a_symbolic_link_comes_back_to_its_folder_in_either_order(tmp_path: Path) -> None:
    """`clipvis segment clip.mp4` then `clipvis segment clip_link.mp4` (a symbolic link to it), or the reverse: the
    second run made a second folder named after the other name and ran the video again, where one batch of both
    names runs it once. A folder belongs to the resolved source: the second name comes back to the first one's
    folder, as planned (every shard) and as claimed; another file of the link's name still gets its own."""
    from clipvis.cli.writers import layout
    from clipvis.cli.writers.manifest import source_owner

    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"video")
    (tmp_path / "clip_link.mp4").symlink_to(tmp_path / "videos" / "clip.mp4")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "clip_link.mp4").write_bytes(b"another video")
    real, link = VideoSource(tmp_path / "videos" / "clip.mp4"), VideoSource(tmp_path / "clip_link.mp4")
    another = VideoSource(tmp_path / "other" / "clip_link.mp4")
    for first, second in ((real, link), (link, real)):
        out = tmp_path / f"out-{first.stem}"
        assert claim(out, first) == first.stem
        planned = layout.OutputRootListing(out).plan([second.stem, another.stem],
                                                     [source_owner(second), source_owner(another)])
        assert planned == [first.stem, "clip_link" if first is real else "clip_link-2"]
        assert claim(out, second) == first.stem
        assert claim(out, another) == planned[1]
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted({first.stem, *planned})


def test_a_folder_renamed_by_hand_is_left_alone_by_either_name(tmp_path: Path) -> None:
    """`segment clip.mp4 -o out; mv out/clip out/clip_v1; segment clip.mp4 -o out` wrote over clip_v1 (the folder of
    the same source under another name, as for a symbolic link): a folder not bearing the name clipvis gave it is the
    user's; the rerun makes a fresh `clip/`, and the link to the same file comes back to that one."""
    from clipvis.cli.writers import layout
    from clipvis.cli.writers.manifest import source_owner

    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"video")
    (tmp_path / "clip_link.mp4").symlink_to(tmp_path / "videos" / "clip.mp4")
    real, link = VideoSource(tmp_path / "videos" / "clip.mp4"), VideoSource(tmp_path / "clip_link.mp4")
    for first, second in ((real, link), (link, real)):
        out = tmp_path / f"out-{first.stem}"
        assert claim(out, first) == first.stem
        (out / first.stem).rename(out / "kept_v1")
        kept = (out / "kept_v1" / "run.json").read_bytes()
        for source in (second, first):
            assert layout.OutputRootListing(out).plan([source.stem], [source_owner(source)]) == [source.stem]
        assert claim(out, first) == first.stem
        assert claim(out, second) == first.stem
        assert (out / "kept_v1" / "run.json").read_bytes() == kept
        assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted({"kept_v1", first.stem})


def test_busy_folder_of_the_same_source_raises_other_sources_go_on(tmp_path: Path) -> None:
    out = tmp_path / "out"
    a, b = VideoSource(tmp_path / "a" / "clip.mp4"), VideoSource(tmp_path / "b" / "clip.mp4")
    assert claim(out, a) == "clip"
    with FolderLock(out / "clip"):  # a is being processed by another process
        with pytest.raises(FolderBusyError, match="another clipvis process is writing here"):
            claim(out, a)
        assert claim(out, b) == "clip-2"


def test_a_batch_lists_the_output_root_once_and_reads_what_other_processes_made(tmp_path: Path, monkeypatch) -> None:
    """A rerun over thousands of inputs must not list thousands of folders for each input: the root is listed once,
    and the folders other clipvis processes make later come from the root's journal; an input comes back to its own
    folder, whatever its suffix."""
    from clipvis.cli.writers import layout

    out = tmp_path / "out"
    a, b, c = (VideoSource(tmp_path / d / "clip.mp4") for d in "abc")
    assert claim(out, a) == "clip" and claim(out, b) == "clip-2"
    (out / "Clip-07").mkdir()
    (out / "clip-x").mkdir()
    scans = []
    real_scandir = layout.os.scandir
    monkeypatch.setattr(layout.os, "scandir", lambda path: scans.append(path) or real_scandir(path))
    listing = layout.OutputRootListing(out)
    assert listing.named_after("CLIP") == ["clip", "clip-2", "Clip-07"]
    assert listing.named_after("clip-2") == ["clip-2"] and listing.named_after("other") == [] and len(scans) == 1
    assert claim(out, c) == "clip-3"  # another process, with a listing of its own
    (out / "clip-4").mkdir()  # by hand: not in the journal
    assert listing.named_after("clip") == ["clip", "clip-2", "clip-3", "Clip-07"] and len(scans) == 2  # c's listing
    taken: set[str] = set()
    manifest = RunManifest.start(c, c.stem, "w", ["a"], {})
    claimed = claim_output_folder(out, manifest, c, taken, frozenset({"clip"}), preferred="clip", listing=listing)
    claimed.lock.release()
    assert claimed.paths.stem == "clip-3" and claimed.previous is not None and len(scans) == 2  # c's own folder
    journal = (out / layout.FOLDER_JOURNAL).read_text().splitlines()
    assert journal == ['"clip"', '"clip-2"', '"clip-3"']


def test_thousands_of_inputs_with_one_stem(tmp_path: Path, monkeypatch) -> None:
    """`<id>/video.mp4` by the thousand: planned `video`, `video-2`, … past the old 10,000 bound, and a folder's
    run.json is read once per batch, however many inputs ask for the folders named after their stem."""
    from clipvis.cli.writers import layout

    def one_by_one(stems: list[str]) -> list[str]:  # the plan's definition: the first free name, each time
        natural, taken, names = {s.lower() for s in stems}, set(), []
        for stem in stems:
            free = (f"{stem}-{n}" for n in range(2, 10**6) if f"{stem}-{n}".lower() not in taken | natural)
            names.append(stem if stem.lower() not in taken else next(free))
            taken.add(names[-1].lower())
        return names

    mixed = ["video", "Video", "video-3", "video", "clip", "video-3", "VIDEO", "clip", "video-2", "video"] * 3
    assert plan_folder_names(mixed) == one_by_one(mixed)
    names = plan_folder_names(["video"] * 12_000 + ["video-3"])
    assert names[:3] == ["video", "video-2", "video-4"] and names[11_999] == "video-12001"
    assert names[12_000] == "video-3"  # its natural name was kept for it
    out = tmp_path / "out"
    sources = [VideoSource(tmp_path / str(i) / "video.mp4") for i in range(30)]
    listing = layout.OutputRootListing(out)
    taken: set[str] = set()
    for source, planned in zip(sources, plan_folder_names(["video"] * 30), strict=True):
        manifest = RunManifest.start(source, source.stem, "w", ["a"], {})
        claim_output_folder(out, manifest, source, taken, frozenset({"video"}), planned, listing).lock.release()
    reads = []
    real_read = layout.RunManifest.read
    monkeypatch.setattr(layout.RunManifest, "read", lambda path: reads.append(path) or real_read(path))
    again = layout.OutputRootListing(out)
    owners = [again.owned_by("video", str(s.path.parent.resolve() / "video.mp4")) for s in sources]
    assert owners == [["video"]] + [[f"video-{i}"] for i in range(2, 31)]
    assert len(reads) == 30  # each folder once, not 30 x 30
    # a new input of that stem, whose planned name another source holds: the walk to the first free name reads no
    # run.json it already read
    reads.clear()
    newcomer = VideoSource(tmp_path / "new" / "video.mp4")
    manifest = RunManifest.start(newcomer, newcomer.stem, "w", ["a"], {})
    claimed = claim_output_folder(out, manifest, newcomer, set(), frozenset({"video"}), "video-5", again)
    claimed.lock.release()
    assert claimed.paths.stem == "video-31" and claimed.previous is None
    assert not [path for path in reads if path.parent.name != "video-31"], reads


def test_processes_claiming_at_once_get_distinct_folders_and_find_them_again(tmp_path: Path) -> None:
    """Four batches (as four shards would) claim folders for inputs of one stem in one root at the same time, each
    with its own listing made before any folder existed: every input gets a folder of its own, and each batch, run
    again with the same listing, finds its inputs' folders (those the others made too, through their journal
    lines)."""
    from concurrent.futures import ThreadPoolExecutor

    from clipvis.cli.writers import layout

    out = tmp_path / "out"
    batches = [[VideoSource(tmp_path / f"{b}-{i}" / "clip.mp4") for i in range(25)] for b in range(4)]

    listings = [layout.OutputRootListing(out) for _ in batches]  # listed before any folder exists

    def run(batch: list[VideoSource], listing: layout.OutputRootListing) -> dict[str, str]:
        taken, chosen = set(), {}
        for source in batch:
            manifest = RunManifest.start(source, source.stem, "w", ["a"], {})
            claimed = claim_output_folder(out, manifest, source, taken, frozenset({"clip"}), listing=listing)
            claimed.lock.release()
            chosen[str(source.path)] = claimed.paths.stem
        return chosen

    with ThreadPoolExecutor(4) as pool:
        first = [folder for chosen in pool.map(run, batches, listings) for folder in chosen.items()]
    assert len({folder for _, folder in first}) == 100
    with ThreadPoolExecutor(4) as pool:
        again = [folder for chosen in pool.map(run, batches, listings) for folder in chosen.items()]
    assert sorted(again) == sorted(first)
    assert len((out / layout.FOLDER_JOURNAL).read_text().splitlines()) == 100


def test_a_stem_as_long_as_a_name_can_be_still_gets_a_numbered_folder(tmp_path: Path) -> None:
    """Two image folders named with 255 bytes (the limit of a name): the second's folder is the stem cut short to
    fit "-2" (it was a traceback that ended the batch), found again on the next run; a claim that fails on the disk
    is that input's one-line error."""
    from clipvis.cli.atomic import OutputNotWritableError
    from clipvis.cli.writers.layout import numbered_name

    stem = "é" * 127 + "D"  # 255 bytes in UTF-8: a cut must not split a character
    sources = []
    for parent in ("a", "b"):
        folder = tmp_path / parent / stem
        folder.mkdir(parents=True)
        sources.append(VideoSource(folder, kind="images"))
    out = tmp_path / "out"
    names = [claim(out, s) for s in sources]
    assert names == [stem, "é" * 126 + "-2"] and plan_folder_names([stem, stem]) == names
    assert claim(out, sources[1]) == names[1]
    assert all(len(numbered_name(stem, n).encode()) <= 255 for n in (2, 10, 12345))

    (out / "blocked").write_text("a file where the folder would go")
    with pytest.raises(OutputNotWritableError, match="output not writable"):
        claim(out / "blocked", VideoSource(tmp_path / "x.mp4"))
