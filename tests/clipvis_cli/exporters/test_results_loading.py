"""`clipvis export` reads a results file a mask at a time into a temporary file: a long video's results are never
all in memory, and the tracks give back exactly the masks the file holds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipvis.cli import rle
from clipvis.cli.exporters.loading import ExportInputError, load_videos
from clipvis.cli.exporters.spilled_tracks import SpilledTracks


def _mask(frame: int, track: int, height: int = 24, width: int = 32) -> dict | None:
    if (frame + track) % 7 == 0:
        return None
    mask = np.zeros((height, width), bool)
    mask[track : track + 3 + frame % 5, frame % (width - 4) :][:, :4] = True
    return rle.encode(mask)


def _results(path: Path, frames: int, tracks: int, **annotation_keys) -> Path:
    document = {
        "videos": [{"id": 1, "name": "long", "length": frames, "height": 24, "width": 32, "fps": 30.0,
                    "frame_indices": list(range(frames))}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "annotations": [{"video_id": 1, "category_id": 1 + k % 2, "score": 0.9 - k / 10,
                         "segmentations": [_mask(f, k) for f in range(frames)], **annotation_keys}
                        for k in range(tracks)],
    }
    path.write_text(json.dumps(document))
    return path


def test_tracks_give_back_the_masks_of_the_file(tmp_path: Path) -> None:
    [video] = load_videos(_results(tmp_path / "ytvis.json", 40, 3))
    assert [(t.track_id, t.category_id, t.score) for t in video.tracks] == [(1, 1, 0.9), (2, 2, 0.8), (3, 1, 0.7)]
    for k, track in enumerate(video.tracks):
        assert len(track.segmentations) == 40
        assert list(track.segmentations) == [_mask(f, k) for f in range(40)]
        assert track.segmentations[-1] == _mask(39, k) and track.segmentations[5:8] == [_mask(f, k) for f in (5, 6, 7)]
        assert track.segmentations.mask_size == [24, 32]


def test_a_long_video_s_results_are_read_without_holding_its_masks(tmp_path: Path) -> None:
    """Export parsed the whole ytvis.json (a real 2-hour video: 1.24 GiB peak against 0.71 at 3,600 frames): the
    masks now go to a temporary file as they are read. What memory holds per frame is the video's own per-frame lists
    and 8 bytes per track: 8 tracks took 2.7 KB more per frame before (43.6 MB to read a 5.3 MB file), ~370 bytes
    now."""
    import tracemalloc

    def peak(frames: int) -> tuple[int, int]:
        path = _results(tmp_path / f"{frames}.json", frames, 8)
        tracemalloc.start()
        try:
            load_videos(path)
            return tracemalloc.get_traced_memory()[1], path.stat().st_size
        finally:
            tracemalloc.stop()

    (short, _), (long, size) = peak(2_000), peak(16_000)
    assert (long - short) / 14_000 < 1_000 and long < 1.5 * size, (short, long, size)


def test_uncompressed_and_sized_masks_are_kept_as_the_file_says(tmp_path: Path) -> None:
    """A ground-truth style file: uncompressed RLE (a list of counts) becomes compressed; a spilled mask whose size
    differs from the others' keeps its own (a results file with one is refused as it is read)."""
    mask = np.zeros((24, 32), bool)
    mask[2:5, 3:9] = True
    compressed = rle.encode(mask)
    uncompressed = {"size": [24, 32], "counts": rle.decompress_counts(compressed["counts"]).tolist()}
    path = _results(tmp_path / "gt.json", 3, 1)
    document = json.loads(path.read_text())
    document["annotations"][0]["segmentations"] = [uncompressed, compressed, None]
    path.write_text(json.dumps(document))
    [video] = load_videos(path)
    masks = video.tracks[0].segmentations
    assert masks[0] == compressed and masks[1] == compressed and masks[2] is None
    assert masks.mask_size == [24, 32]
    other_size = rle.encode(np.ones((10, 10), bool))
    with SpilledTracks(str(tmp_path)) as spill:
        masks = spill.add([compressed, other_size, None])
        spill.finish()
        assert list(masks) == [compressed, other_size, None]
        assert masks.mask_size is None  # the sizes differ: each mask's own is read


@pytest.mark.parametrize(("segmentation", "message"), [
    ([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], "malformed RLE (a list, not an RLE object)"),
    ({"counts": "abc"}, "malformed RLE ('size')"),
    ({"size": [24], "counts": "abc"}, "malformed RLE (size [24] is not [height, width])"),
    ({"size": [-24, -32], "counts": "abc"}, "malformed RLE (size [-24, -32] is not [height, width])"),
    ({"size": [24, 32], "counts": 5}, "malformed RLE (counts is a int)"),
    # Compressed counts were not read: "!!!!" went into coco, labelstudio and ytvis as it was (other formats refused)
    ({"size": [24, 32], "counts": "!!!!"}, "RLE counts string with characters COCO's encoding never writes"),
    ({"size": [24, 32], "counts": "0"}, "corrupt RLE counts (its runs add up to 0 pixels, not height x width = 768)"),
    ({"size": [24, 32], "counts": "0`"}, "RLE counts string cut short (it ends in the middle of a run length)"),
    ({"size": [24, 32], "counts": [700, 60]},
     "corrupt RLE counts (its runs add up to 760 pixels, not height x width = 768)"),
])
def test_a_mask_that_is_not_an_rle_is_named_in_one_line(tmp_path: Path, segmentation, message: str) -> None:
    """The file, the video, the track (and its annotation in the file) and the frame, when the file is read: every
    format refuses it alike."""
    path = _results(tmp_path / "bad.json", 3, 2)
    document = json.loads(path.read_text())
    document["annotations"][1]["segmentations"][1] = segmentation
    path.write_text(json.dumps(document))
    with pytest.raises(ExportInputError) as raised:
        load_videos(path)
    assert str(raised.value) == f"{path}: video 1: track 2 (annotation 2), frame 1: {message}"


def test_a_mask_of_another_size_than_its_video_is_named_in_one_line(tmp_path: Path) -> None:
    """A mask of [32, 24] on a 24x32 video: cvat-video failed with numpy's "operands could not be broadcast",
    labelstudio wrote boxes for the wrong frame size. It is refused when the file is read, for every format."""
    path = _results(tmp_path / "bad.json", 4, 2)
    document = json.loads(path.read_text())
    document["annotations"][1]["segmentations"][2] = rle.encode(np.ones((32, 24), bool))
    path.write_text(json.dumps(document))
    with pytest.raises(ExportInputError) as raised:
        load_videos(path)
    assert str(raised.value) == f"{path}: video 1: track 2, frame 2: a mask of size [32, 24], the video is [24, 32] " \
                                "(height, width)"
    for track in document["annotations"]:  # every mask of that size: found without reading one
        track["segmentations"] = [None, rle.encode(np.ones((32, 24), bool)), None, None]
    path.write_text(json.dumps(document))
    with pytest.raises(ExportInputError) as raised:
        load_videos(path)
    assert str(raised.value).endswith(": video 1: track 1, frame 1: a mask of size [32, 24], the video is [24, 32] "
                                      "(height, width)")


def test_many_masks_are_checked_in_batches_and_the_first_bad_frame_is_named(tmp_path: Path) -> None:
    """Counts are checked many at a time: a bad mask past the first batch, and one before a mask that is no RLE at
    all, are each named by their own frame."""
    from clipvis.cli.exporters.loading import _CountsChecks

    frames = _CountsChecks.BATCH + 10
    path = _results(tmp_path / "bad.json", frames, 1)
    document = json.loads(path.read_text())
    masks = document["annotations"][0]["segmentations"]
    masks[frames - 3] = {"size": [24, 32], "counts": "!!"}
    masks[frames - 1] = [1, 2]
    path.write_text(json.dumps(document))
    with pytest.raises(ExportInputError) as raised:
        load_videos(path)
    assert f"frame {frames - 3}: RLE counts string with characters" in str(raised.value)


def test_spilled_tracks_are_read_from_several_threads(tmp_path: Path) -> None:
    """Formats are written in two threads: reads share no file position."""
    from concurrent.futures import ThreadPoolExecutor

    spill = SpilledTracks(str(tmp_path))
    tracks = [spill.add([_mask(f, k) for f in range(300)]) for k in range(4)]
    spill.finish()
    with ThreadPoolExecutor(4) as pool:
        read = list(pool.map(lambda track: list(track), tracks * 3))
    assert read == [[_mask(f, k) for f in range(300)] for k in range(4)] * 3


def test_a_full_temporary_folder_fails_the_input_in_one_line(tmp_path: Path, monkeypatch) -> None:
    """The masks' temporary file on a full $TMPDIR: the input fails with one line naming the folder (README), the
    other inputs still export."""
    import errno
    import tempfile

    from typer.testing import CliRunner

    from clipvis.cli.app import app

    real = tempfile.TemporaryFile
    calls = []

    def temporary_file(*args, **kwargs):
        if kwargs.get("prefix") != "clipvis-export-":
            return real(*args, **kwargs)
        calls.append(kwargs)
        if len(calls) == 1:  # the first input's masks
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", temporary_file)
    first, second = tmp_path / "a" / "ytvis.json", tmp_path / "b" / "ytvis.json"
    for path in (first, second):
        path.parent.mkdir()
        _results(path, 5, 2)
    result = CliRunner().invoke(app, ["export", str(first), str(second), "--to", "mots-txt", "-o",
                                      str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("clipvis: error:")]
    assert errors == [f"clipvis: error: {first}: masks' temporary file in {tempfile.gettempdir()} (TMPDIR): No space "
                      "left on device", "clipvis: error: 1 of 2 export(s) failed"], result.output
    assert (tmp_path / "out" / "long" / "mots-txt" / "mots.txt").stat().st_size > 0  # the second input's


def test_what_json_loads_read_is_read_alike_and_what_it_cannot_tell_is_refused(tmp_path: Path) -> None:
    """Hunter 87's differential against the whole-file reader: annotations of videos the file does not list are not
    read further (even incomplete ones, as before); an empty annotations object or string means no tracks; a
    repeated "annotations" or "segmentations" key, which json.loads resolved by keeping the last after reading both
    (another tool's file meaning who knows which), is refused in one line; an id past float range is one line, not
    a traceback."""
    def edited(name: str, change) -> Path:
        path = _results(tmp_path / name, 4, 2)
        document = json.loads(path.read_text())
        text = change(document)
        path.write_text(text if isinstance(text, str) else json.dumps(document))
        return path

    def orphans(document: dict) -> None:
        document["annotations"] += [{"video_id": 7}, {"video_id": 8, "category_id": 1, "segmentations": [[1, 2]]}]

    [video] = load_videos(edited("orphans.json", orphans))
    assert len(video.tracks) == 2
    for empty in ({}, ""):
        [video] = load_videos(edited(f"empty{len(str(empty))}.json", lambda d, e=empty: d.update(annotations=e)))
        assert video.tracks == []
    twice = edited("twice.json", lambda d: json.dumps(d)[:-1] + ', "annotations": []}')
    with pytest.raises(ExportInputError, match=r"malformed YouTube-VIS content \('annotations' given twice in one "
                                               r"object \(line 1 column \d+ \(char \d+\)\)\)"):
        load_videos(twice)
    inner = edited("inner.json", lambda d: json.dumps(d).replace('"segmentations": [', '"segmentations": [], '
                                                                  '"segmentations": [', 1))
    with pytest.raises(ExportInputError, match="'segmentations' given twice in one object"):
        load_videos(inner)
    huge = edited("huge.json", lambda d: json.dumps(d).replace('"video_id": 1', '"video_id": 1e400', 1))
    with pytest.raises(ExportInputError, match=r"malformed YouTube-VIS content \(OverflowError: cannot convert"):
        load_videos(huge)


def test_the_masks_temporary_file_is_closed_when_the_export_is_done(tmp_path: Path) -> None:
    """`clipvis export` left the masks' temporary file to the garbage collector (`python -X dev`: "ResourceWarning:
    unclosed file <_io.BufferedRandom name=3>"; with `-W error::ResourceWarning`, "Exception ignored in ..."), and
    so did a results file that failed to read. `export` reads its inputs through `read_videos`, which closes it."""
    import gc
    import warnings

    from typer.testing import CliRunner

    from clipvis.cli.app import app

    from .conftest import make_segment_output

    output = make_segment_output(tmp_path / "out")
    broken = tmp_path / "broken.json"
    broken.write_text('{"videos": [], "annotations": [{"segmentations": [')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        result = CliRunner().invoke(app, ["export", str(output.folder), "--to", "png-masks,ytvis", "-o",
                                          str(tmp_path / "dest")])
        with pytest.raises(ExportInputError, match="not valid JSON"):
            load_videos(broken)
        gc.collect()
    assert result.exit_code == 0, result.output
    assert [str(warning.message) for warning in caught if warning.category is ResourceWarning] == []
    from clipvis.cli.exporters.loading import read_videos

    with read_videos(output.ytvis) as videos:
        spill = videos[0].tracks[0].segmentations.spill
        assert list(videos[0].tracks[0].segmentations) == output.tracks[0].segmentations
    assert spill._file.closed


def test_every_format_refuses_malformed_counts_and_writes_nothing(tmp_path: Path) -> None:
    """coco and ytvis wrote ``"counts": "!!!!"`` out as it was (exit 0) where cvat-images refused it."""
    from typer.testing import CliRunner

    from clipvis.cli.app import app

    (tmp_path / "in").mkdir()
    path = _results(tmp_path / "in" / "ytvis.json", 3, 2)
    document = json.loads(path.read_text())
    document["annotations"][0]["segmentations"][0] = {"size": [24, 32], "counts": "!!!!"}
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(app, ["export", str(path), "--to", "coco,ytvis", "--no-media", "-o",
                                      str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 1
    assert (f"clipvis: error: {path}: video 1: track 1 (annotation 1), frame 0: RLE counts string with characters "
            "COCO's encoding never writes") in result.stderr.splitlines(), result.stderr
    assert not (tmp_path / "out" / "long").exists() and not (tmp_path / "out" / "results.json").exists()


@pytest.mark.parametrize(("score", "shown"), [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"),
                                              ('"nan"', "NaN")])
def test_a_score_that_is_not_a_finite_number_is_named_in_one_line(tmp_path: Path, score: str, shown: str) -> None:
    """A NaN score made the track vanish from every format without a word (it is >= no --min-score); Infinity was
    written as a bare `Infinity`, which no JSON reader takes, into coco, labelstudio, fiftyone, png-masks and
    results.json. Refused as the file is read, naming the video and the track."""
    path = _results(tmp_path / "bad.json", 3, 2)
    text = path.read_text()
    assert text.count('"score": 0.8') == 1
    path.write_text(text.replace('"score": 0.8', f'"score": {score}'))
    with pytest.raises(ExportInputError) as raised:
        load_videos(path)
    assert str(raised.value) == f"{path}: video 1: track 2 has score {shown}, not a finite number"
