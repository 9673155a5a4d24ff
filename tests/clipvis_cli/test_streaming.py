"""The per-frame path of `segment`: run lengths -> COCO strings (byte-identical to pycocotools), the streaming loop
as a library (clipvis.cli.streaming.VideoStream), and the resolution limit."""

from __future__ import annotations

import gc
import tempfile

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask

from clipvis.cli import rle
from clipvis.cli.mask_store import TrackMaskStore
from clipvis.cli.memory import ResolutionLimitError, check_frame_memory, frame_memory_bytes
from clipvis.cli.streaming import VideoStream
from clipvis.model import predictor as predictor_module
from clipvis.model import scoring
from clipvis.model.mask_runs import mask_runs, threshold_runs
from clipvis.model.mask_upsampling import ComposedMaskResize
from clipvis.model.predictor import VideoPredictor

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="no CUDA device on this machine"))]


def pycocotools_strings(masks: np.ndarray) -> list[str]:
    encoded = coco_mask.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [entry["counts"].decode("ascii") for entry in encoded]


def drawn_masks(height: int, width: int) -> np.ndarray:
    """Object-like masks (filled ellipses, polygons, text, a frame border) plus an empty and a full mask."""
    masks = np.zeros((6, height, width), np.uint8)
    cv2.ellipse(masks[0], (width // 3, height // 2), (width // 5, height // 3), 20, 0, 360, 1, -1)
    points = np.array([[5, 5], [width - 9, height // 4], [width // 2, height - 3], [width // 7, height // 2]])
    cv2.fillPoly(masks[1], [points.astype(np.int32)], 1)
    cv2.putText(masks[2], "clipvis", (3, height - 5), cv2.FONT_HERSHEY_SIMPLEX, height / 60, 1, 2)
    cv2.rectangle(masks[3], (0, 0), (width - 1, height - 1), 1, 3)
    masks[5] = 1
    return masks.astype(bool)


@pytest.mark.parametrize("size", [(1, 1), (1, 7), (5, 1), (37, 61), (97, 211), (1080, 1920)])
def test_compressed_runs_are_byte_identical_to_pycocotools(size) -> None:
    rng = np.random.default_rng(size[0] * 7 + size[1])
    random = rng.random((4, *size)) < np.array([0.5, 0.01, 0.99, 0.3])[:, None, None]
    for masks in (random, drawn_masks(*size)):
        counts, lengths = mask_runs(torch.from_numpy(masks))
        compressed = rle.compress_runs(counts.numpy(), lengths.numpy(), size)
        assert [compressed.counts(q) for q in range(len(masks))] == pycocotools_strings(masks)
        assert compressed.rles() == [rle.encode(m) for m in masks]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [(50, 70), (97, 61)])
def test_the_per_frame_path_on_the_device_gives_pycocotools_bytes(tiny_model_factory, tmp_path, device, size) -> None:
    """The whole per-frame path where the model runs (the official two bilinear resizes in chunks of queries, on the
    CPU composed into one (clipvis.model.mask_upsampling), run lengths, on CUDA the non-blocking copy into pinned
    memory), then the host's compression: the same strings as pycocotools gives for the same logits resized (all
    queries at once) and thresholded on that device and copied as booleans."""
    predictor = VideoPredictor(tiny_model_factory(), ["box"], device=device, cache_dir=tmp_path,
                               mask_chunk_elements=3 * 128 * 128)  # several chunks of queries
    session = predictor.new_video()
    session.push(np.random.default_rng(1).integers(0, 255, (1, *size, 3), dtype=np.uint8))
    geo = session.geometry
    logits = torch.randn(9, geo.padded[0] // 4, geo.padded[1] // 4, generator=torch.Generator().manual_seed(2))
    logits[3] = -1.0  # an empty mask
    logits = logits.to(device)
    if device == "cpu":
        masks = ComposedMaskResize(geo.mask_size, geo).positive_column_major(logits).transpose(1, 2).numpy()
    else:
        x = F.interpolate(logits[:, None], size=geo.padded, mode="bilinear", align_corners=False)
        x = F.interpolate(x[..., : geo.resized[0], : geo.resized[1]], size=geo.original, mode="bilinear",
                          align_corners=False)
        masks = (x[:, 0] > 0).cpu().numpy()
    runs = session._full_resolution_runs(logits).wait()
    assert runs.counts.device.type == "cpu" and runs.size == size
    compressed = rle.compress_runs(runs.counts.numpy(), runs.lengths.numpy(), runs.size)
    assert [compressed.counts(q) for q in range(9)] == pycocotools_strings(masks)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint32, np.uint64])
def test_compression_of_long_and_negative_deltas(dtype) -> None:
    """Runs over 2**25 pixels (7 characters) and a run shorter than the one two before (negative delta), in any
    integer type (compressed in 32-bit integers where they fit)."""
    runs = np.array([0, 40_000_000, 3, 1, 2, 40_000_001], dtype=dtype)
    compressed = rle.compress_runs(runs, np.array([6]), (8, 10_000_001))
    reference = coco_mask.frPyObjects({"counts": runs.tolist(), "size": [8, 10_000_001]}, 8, 10_000_001)
    assert compressed.counts(0) == reference["counts"].decode("ascii")
    decoded, lengths = rle.decompress_many([compressed.counts(0), reference["counts"], compressed.counts(0)])
    np.testing.assert_array_equal(decoded, np.concatenate([runs, runs, runs]))
    assert lengths.tolist() == [6, 6, 6]
    # past 32 bits (a run of 2**31 pixels and more): the 64-bit path, as pycocotools writes it
    huge = np.array([2**31 + 5, 7, 2**31 + 1, 3], dtype=dtype) if np.dtype(dtype).itemsize == 8 or dtype == np.uint32 \
        else None
    if huge is not None:
        size = (1, int(huge.sum()))
        reference = coco_mask.frPyObjects({"counts": huge.tolist(), "size": list(size)}, *size)
        assert rle.compress_runs(huge, np.array([4]), size).counts(0) == reference["counts"].decode("ascii")
    # masks of 1, 2 and 3 runs (no differences) between longer ones, back to back
    short = np.array([5, 0, 5, 1, 4, 2, 2, 1, 5, 1, 1, 1, 1, 1], dtype=dtype)
    lengths = np.array([1, 2, 3, 0, 8])
    strings = [coco_mask.frPyObjects({"counts": part.tolist(), "size": [1, 5]}, 1, 5)["counts"].decode("ascii")
               for part in np.split(short, np.cumsum(lengths)[:-1]) if part.size]
    compressed = rle.compress_runs(short, lengths, (1, 5))
    assert [compressed.counts(q) for q in range(5) if lengths[q]] == strings


def test_compression_of_every_small_delta_and_the_longest_runs() -> None:
    """Each value's characters come from a table for differences in [-2**14, 2**14) and are worked out for the rest:
    every difference from -16,400 to 16,400 and differences and first runs of 4 to 7 characters (up to a 32-bit run,
    which overflows the table's index in 32-bit integers) give pycocotools' strings, masks back to back."""
    deltas = np.concatenate([np.arange(-16_400, 16_401), [2**19 - 1, 2**19, -(2**19), -(2**19) - 1, 2**24, -(2**24),
                                                          2**29, -(2**29), 2**30 - 1, -(2**30)]])
    first = np.full(deltas.size, 2**30)
    first[:5] = [0, 16383, 16384, 2**31 - 2**14, 2**31 - 2**14 - 1]
    runs = np.stack([first, np.ones_like(first), first + deltas], axis=1)
    runs[:5, 2] = [0, 16383, 16384, 2**31 - 1, 2**31 - 2**14 - 2]  # deltas 0, 0, 0, 2**14 - 1, -1
    runs = np.concatenate([runs.ravel(), [2**31 - 1, 3]])  # a last mask of 2 runs, the first past the table
    lengths = np.concatenate([np.full(deltas.size, 3), [2]])
    masks = np.split(runs, np.cumsum(lengths)[:-1])
    reference = coco_mask.frPyObjects([{"counts": m.tolist(), "size": [1, 1]} for m in masks], 1, 1)
    expected = [r["counts"].decode("ascii") for r in reference]
    for dtype in (np.int32, np.int64):
        compressed = rle.compress_runs(runs.astype(dtype), lengths, (1, 1))
        assert [compressed.counts(q) for q in range(len(masks))] == expected, dtype


def test_decompression_of_many_strings_equals_the_masks_runs() -> None:
    """Strings of every parity and length back to back (an empty one too) decode to each mask's own runs."""
    rng = np.random.default_rng(5)
    for trial in range(60):
        count, height, width = int(rng.integers(1, 7)), int(rng.integers(1, 40)), int(rng.integers(1, 40))
        masks = rng.random((count, height, width)) < rng.random((count, 1, 1)) ** 2
        strings = pycocotools_strings(masks)
        expected, lengths = mask_runs(torch.from_numpy(masks))
        if trial % 4 == 0:  # an empty string among them: no runs of its own
            strings.insert(1, "")
            lengths = torch.cat([lengths[:1], torch.zeros(1, dtype=lengths.dtype), lengths[1:]])
        runs, runs_per_string = rle.decompress_many(strings)
        np.testing.assert_array_equal(runs, expected.numpy())
        np.testing.assert_array_equal(runs_per_string, lengths.numpy())


def test_store_keeps_compressed_frames_and_empty_tracks() -> None:
    masks = drawn_masks(40, 70)
    counts, lengths = threshold_runs(torch.from_numpy(masks).float() - 0.5)
    with TrackMaskStore(40, 70) as store:
        compressed = rle.compress_runs(counts.numpy(), lengths.numpy(), (40, 70))
        store.add_compressed(compressed, lengths.numpy() <= 1)
        store.add_compressed(compressed, lengths.numpy() <= 1)
        assert store.get(1, 4) is None
        assert [store.get(1, q) for q in (0, 1, 2, 3, 5)] == [rle.encode(masks[q]) for q in (0, 1, 2, 3, 5)]


def test_store_index_stays_within_its_memory_budget_on_a_long_video() -> None:
    """The index of a 2-hour video (216,000 frames x 100 queries) took 370 MB as 16-byte (offset, length) pairs in
    memory. Now 4 bytes per (frame, track), its blocks past the budget written to the masks' file: traced memory
    grows by the 8 bytes per frame of the frames' offsets only, and every mask reads back as written, empty ones as
    None, from blocks in memory and in the file alike, in any order."""
    import tracemalloc

    from clipvis.cli.mask_store import INDEX_BLOCK_FRAMES

    rng = np.random.default_rng(0)
    height, width, tracks = 6, 5, 12
    samples = rng.random((8, tracks, height, width)) < rng.random((8, tracks, 1, 1)) * 1.4
    samples[:, 3] = False  # a track empty throughout
    compressed = []
    for masks in samples:
        counts, lengths = mask_runs(torch.from_numpy(masks))
        compressed.append((rle.compress_runs(counts.numpy(), lengths.numpy(), (height, width)), lengths.numpy() <= 1))
    frames = 4 * INDEX_BLOCK_FRAMES + 5
    with TrackMaskStore(height, width, index_memory_bytes=INDEX_BLOCK_FRAMES * 4 * tracks) as store:
        tracemalloc.start()
        try:
            for frame in range(frames):
                if frame == INDEX_BLOCK_FRAMES + 1:
                    before = tracemalloc.get_traced_memory()[0]
                store.add_compressed(*compressed[frame % len(samples)])
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        added = frames - INDEX_BLOCK_FRAMES - 1
        assert grown < added * 16, grown  # 16-byte pairs alone were added * tracks * 16 (and an array per frame)
        assert len(store) == frames
        for frame in [*rng.permutation(frames)[:300].tolist(), 0, frames - 1, INDEX_BLOCK_FRAMES]:
            masks = samples[frame % len(samples)]
            for track in range(tracks):
                expected = rle.encode(masks[track]) if masks[track].any() else None
                assert store.get(frame, track) == expected, (frame, track)
        with pytest.raises(IndexError):
            store.get(frames, 0)
        with pytest.raises(IndexError):
            store.get(0, tracks)
        assert store.get(-1, -1) == store.get(frames - 1, tracks - 1)
        with pytest.raises(IndexError, match=f"frame {-frames - 1} of a store of {frames}"):
            store.get(-frames - 1, 0)


def test_tracks_from_a_mask_store_are_checked_without_reading_their_masks() -> None:
    """Every writer checks its tracks against the video (frame count, category, mask size); the masks of a mask store
    all have its size, so a check reads none of them (each writer read every mask of the video once more), and a
    store of another size is still refused; tracks given as lists are checked mask by mask as before."""
    from clipvis.cli.mask_store import StoredSegmentations
    from clipvis.cli.results import TrackResult, VideoInfo, check_tracks

    counts, lengths = mask_runs(torch.ones(2, 4, 5, dtype=torch.bool))
    video = VideoInfo(1, "v.mp4", "v", 4, 5, 30.0, 1, [0, 1, 2])
    with TrackMaskStore(4, 5) as store, TrackMaskStore(5, 4) as other:
        for target in (store, other):
            for _ in range(3):
                target.add_compressed(rle.compress_runs(counts.numpy(), lengths.numpy(), target.size),
                                      np.zeros(2, bool))

        def unread(frame: int, track: int) -> None:
            raise AssertionError("a mask was read")

        store.get = other.get = unread
        track = TrackResult(1, 1, 0.5, StoredSegmentations(store, 1, np.zeros(3, bool)))
        check_tracks(video, [track], 1)
        wrong = TrackResult(2, 1, 0.5, StoredSegmentations(other, 1, np.zeros(3, bool)))
        with pytest.raises(ValueError, match=r"mask of size \[5, 4\], video is \[4, 5\]"):
            check_tracks(video, [wrong], 1)
    listed = TrackResult(3, 1, 0.5, [None, rle.encode(np.ones((4, 5), bool)), rle.encode(np.ones((5, 4), bool))])
    with pytest.raises(ValueError, match=r"track 3 .* mask of size \[5, 4\]"):
        check_tracks(video, [listed], 1)


def test_a_full_temporary_disk_is_named_as_such(tmp_path) -> None:
    """A full $TMPDIR failed an input with "No space left on device", and the operator looked at the output disk:
    the masks' temporary file (unlinked, invisible to ls and du) is named with its folder."""
    import errno

    from clipvis.cli.mask_store import MaskStoreError, TrackMaskStore

    class FullDisk:
        closed = False

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None: ...

    with TrackMaskStore(4, 4, directory=str(tmp_path)) as store:
        store._file = FullDisk()
        with pytest.raises(MaskStoreError) as caught:
            counts, lengths = mask_runs(torch.ones(2, 4, 4, dtype=torch.bool))
            store.add_compressed(rle.compress_runs(counts.numpy(), lengths.numpy(), (4, 4)), np.zeros(2, bool))
    assert str(caught.value) == f"masks' temporary file in {tmp_path} (TMPDIR): No space left on device"
    assert caught.value.errno == errno.ENOSPC


@pytest.fixture(scope="module")
def predictor(tiny_model_factory, tmp_path_factory):
    model = tiny_model_factory("rn", num_queries=6)
    return VideoPredictor(model, ["box", "sky"], cache_dir=tmp_path_factory.mktemp("text"))


def synthetic_frames(count: int, height: int = 45, width: int = 77) -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = np.empty((count, height, width, 3), np.uint8)
    for t in range(count):
        frames[t] = rng.integers(0, 60, (1, 1, 3))
        cv2.circle(frames[t], (10 + 5 * t, 20), 9, (250, 30, 30), -1)
    return frames


def test_video_stream_equals_pushing_by_hand(predictor) -> None:
    """The real loop (threads, queues) gives the same per-frame RLE and the same instances as push()."""
    frames = synthetic_frames(7)
    session = predictor.new_video()
    expected = [f for first in range(0, 7, 3) for f in session.push(frames[first : first + 3])]
    expected_video = session.finish(max_tracks=4)
    with VideoStream(predictor, list(frames), batch_frames=3) as stream:
        streamed = list(stream)
        video = stream.finish(max_tracks=4)
    assert [f.position for f in streamed] == list(range(7)) and stream.frame_indices == list(range(7))
    for ours, theirs in zip(streamed, expected, strict=True):
        masks = theirs.masks.numpy()
        assert [ours.rle(q) for q in range(6)] == [rle.encode(m) if m.any() else None for m in masks]
    assert [(i.track_id, i.label, i.score) for i in video.instances] == [
        (i.track_id, i.label, i.score) for i in expected_video.instances
    ]


def test_video_stream_reads_a_file_and_stops_early(predictor, tmp_path) -> None:
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in synthetic_frames(9, 48, 64):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    with VideoStream(predictor, path, batch_frames=2, stride=2) as video_stream:
        assert [f.frame_index for f in video_stream] == [0, 2, 4, 6, 8]
    with VideoStream(predictor, path, batch_frames=2) as video_stream:
        for frame in video_stream:
            if frame.position == 2:
                break  # threads stop, nothing hangs
    assert not any(t.name.startswith("clipvis-decoder") and t.is_alive() for t in __import__("threading").enumerate())
    with pytest.raises(RuntimeError, match=r"finish\(\) after leaving the stream early: the model saw \d+ frames, 3 "):
        video_stream.finish()  # the model ran ahead: its scores would count frames the caller never got


def test_stride_and_max_frames_apply_to_frames_given_as_arrays_tensors_or_pairs(predictor) -> None:
    """They reached only a path's reader: a list or a camera generator went through whole, numbered 0.. (a stride
    of 5 cost 5x the model)."""
    import torch

    frames = synthetic_frames(9)
    with VideoStream(predictor, list(frames), batch_frames=2, stride=3, max_frames=2) as stream:
        assert [f.frame_index for f in stream] == [0, 3]
    with VideoStream(predictor, (torch.from_numpy(f) for f in frames), batch_frames=3, stride=4) as stream:
        assert [f.frame_index for f in stream] == [0, 4, 8]
        by_tensor = stream.finish(max_tracks=3)
    with VideoStream(predictor, [(10 + i, f) for i, f in enumerate(frames)], stride=4) as stream:
        assert [f.frame_index for f in stream] == [12, 16]
    session = predictor.new_video()
    session.push(frames[[0, 4, 8]])
    assert [(i.track_id, i.score) for i in session.finish(max_tracks=3).instances] == [
        (i.track_id, i.score) for i in by_tensor.instances]
    from PIL import Image

    with pytest.raises(TypeError, match=r"got Image \(np.asarray\(image.convert\('RGB'\)\)\)"):
        list(VideoStream(predictor, [Image.fromarray(frames[0])]))
    with pytest.raises(TypeError, match=r"got list \(np.stack\(frames\)\)"):
        predictor.new_video().push(list(frames))
    with pytest.raises(TypeError, match=r"uint16 \(convert to 8 bits per channel"):
        predictor.new_video().push(frames.astype(np.uint16))


def test_pairs_whose_index_is_no_whole_number_are_refused_saying_what_to_pass(predictor) -> None:
    """(timestamp, frame) pairs kept frame 0 alone at stride 1 (0.033 % 1 is not 0), silently; string indices
    failed in "not all arguments converted during string formatting". A numpy integer is a frame number."""
    frames = synthetic_frames(3)
    for index, shown in ((1 / 30, r"0\.03333333333333333 \(float\)"), ("00001", r"'00001' \(str\)"),
                         (True, r"True \(bool\)"), (frames[1], r"of type ndarray")):
        pairs = [(0, frames[0]), (index, frames[1]), (2, frames[2])]
        with VideoStream(predictor, pairs) as stream, pytest.raises(
                TypeError, match=rf"^\(index, frame\) pair 1: its index {shown} is no frame number: pairs are "
                                 r"\(index, frame\), .*; pass the bare frames \(numbered from 0\), or "
                                 r"enumerate\(frames\)$"):
            list(stream)
    with VideoStream(predictor, [(np.int64(i), f) for i, f in enumerate(frames)], stride=2) as stream:
        assert [type(f.frame_index) for f in stream] == [int, int]


def test_a_list_of_image_paths_is_read_as_an_image_folder_s_images(predictor, tmp_path, synth) -> None:
    """A list of frame files (glob's) failed per frame with 'got str (np.asarray(frame))'. Read as the folder's
    images are (in the order given); a path among frames of another kind says what to pass."""
    from PIL import Image

    paths = synth.write_images(tmp_path / "seq", ["a.png", "b.png", "c.png", "d.png"], height=48, width=64)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: the folder's reader turns it upright
    Image.fromarray(np.ascontiguousarray(synth.bar_frame(2, 48, 64).transpose(1, 0, 2)[::-1])).save(paths[2],
                                                                                                     exif=exif)

    def streamed(frames, **options):
        with VideoStream(predictor, frames, batch_frames=2, **options) as stream:
            return [(f.frame_index, [f.rle(q) for q in range(len(f.empty))]) for f in stream]

    by_folder = streamed(tmp_path / "seq")
    assert streamed([str(path) for path in paths]) == by_folder == streamed(tuple(paths))
    assert streamed(paths, stride=2, max_frames=1) == by_folder[:1]
    with pytest.raises(TypeError, match=r"got PosixPath \(a path: give the video file or image folder itself, or a "
                                        r"list of image paths \(read as an image folder's images\), or read the "):
        list(VideoStream(predictor, (path for path in paths)))


def test_resolution_limit_is_one_clear_error() -> None:
    """The fix is worded as the caller gives the setting: batch_frames=1 from Python (it said "try --batch-frames 1"
    under VideoStream too), --batch-frames 1 on the command line."""
    from clipvis.cli.messages import STREAM_PARAMETER_FLAGS

    assert frame_memory_bytes(2160, 3840, 4, 2) > 4 * frame_memory_bytes(480, 854, 4, 2)
    check_frame_memory(2160, 3840, 4, 2, "a.mp4", available=2**40)
    expected = r"^big\.mp4: 3840x2160 frames need ~893.8 MiB .* only 256.0 MiB .* \(try batch_frames=1\)$"
    with pytest.raises(ResolutionLimitError, match=expected) as caught:
        check_frame_memory(2160, 3840, 4, 2, "big.mp4", available=2**28)
    assert caught.value.worded(STREAM_PARAMETER_FLAGS).endswith("available (try --batch-frames 1)")
    with pytest.raises(ResolutionLimitError, match=r"available$"):  # one frame a batch already
        check_frame_memory(2160, 3840, 1, 2, "big.mp4", available=2**20)
    with pytest.raises(ResolutionLimitError, match="COCO RLE's limit"):
        check_frame_memory(50_000, 50_000, 1, 1, "huge.mp4", available=2**60)


@pytest.mark.parametrize("packed_sort", [True, False])
@pytest.mark.parametrize("size", [(1, 1), (5, 1), (37, 61), (540, 960)])
def test_label_map_equals_painting_decoded_masks(size, packed_sort, monkeypatch) -> None:
    """The overlay paints every track of a frame from the run lengths at once: the same labels as decoding each
    mask with pycocotools and painting them (the earliest in the list on top), the same boxes as toBbox; with the
    boundaries sorted as packed keys and, where a frame is too large for them, by a stable argsort."""
    if not packed_sort:
        monkeypatch.setattr(rle, "_SORT_KEY_BITS", 0)
    rng = np.random.default_rng(size[0] + size[1])
    masks = np.concatenate([drawn_masks(*size), rng.random((3, *size)) > np.array([0.5, 0.9, 0.99])[:, None, None]])
    rles: list = [rle.encode(mask) for mask in masks]
    rles[1] = None  # a track absent on this frame
    rles[3] = {"size": list(size), "counts": rle.decompress_counts(rles[3]["counts"]).tolist()}  # list counts
    painted = rle.label_map(rles, *size)
    expected = np.zeros(size, np.uint8)
    for number in range(len(rles), 0, -1):
        if rles[number - 1] is not None:
            expected[rle.decode(rles[number - 1])] = number
    np.testing.assert_array_equal(painted.labels, expected)
    np.testing.assert_array_equal(painted.visible, np.bincount(expected.ravel(), minlength=len(rles) + 1)[1:])
    for number, encoded in enumerate(rles):
        box = [0, 0, 0, 0] if encoded is None else rle.bbox(encoded)
        assert painted.boxes[number].tolist() == box
    for encoded in rles:
        if encoded is not None and isinstance(encoded["counts"], str):
            runs = rle.decompress_counts(encoded["counts"])
            assert rle.compress_runs(runs, np.array([runs.size]), size).counts(0) == encoded["counts"]


def test_label_map_of_many_masks_and_bad_counts() -> None:
    """More than 254 masks switch to 16-bit labels; counts that do not cover the frame are an error, not a
    wrong picture."""
    size = (23, 29)
    masks = np.random.default_rng(3).random((300, *size)) > 0.97
    painted = rle.label_map([rle.encode(m) for m in masks], *size)
    assert painted.labels.dtype == np.uint16
    expected = np.where(masks.any(0), masks.argmax(0) + 1, 0)
    np.testing.assert_array_equal(painted.labels, expected)
    numpy_size = rle.label_map([rle.encode(m) for m in masks], np.int64(size[0]), np.int32(size[1]))  # numpy ints
    np.testing.assert_array_equal(numpy_size.labels, expected)
    np.testing.assert_array_equal(painted.visible, np.bincount(expected.ravel(), minlength=301)[1:])
    runs, lengths = rle.decompress_many([rle.encode(m)["counts"] for m in masks[:5]])
    assert lengths.sum() == runs.size and (np.add.reduceat(runs, np.cumsum(lengths) - lengths) == 23 * 29).all()
    with pytest.raises(ValueError, match="do not cover"):
        rle.label_map([{"size": list(size), "counts": [5, 3]}], *size)
    with pytest.raises(ValueError, match="RLE of size"):
        rle.label_map([rle.encode(masks[0])], 29, 23)
    with pytest.raises(ValueError, match="malformed"):
        rle.decompress_many(["0P"])  # 'P' (32 + 48) says a character follows, but the string ends


def test_segment_stops_one_input_above_the_resolution_limit(tmp_path, tiny_weights, isolated_cache, monkeypatch):
    """Not enough memory for the frames: one line naming the input, run.json 'failed', exit 1 (no OOM kill)."""
    import json

    import av
    from typer.testing import CliRunner

    from clipvis.cli import memory
    from clipvis.cli.app import app

    video = tmp_path / "big.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for frame in synthetic_frames(2, 48, 64):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1000)
    result = CliRunner().invoke(app, ["segment", str(video), "--vocab", "box", "--weights", str(tiny_weights),
                                      "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "big.mp4: 64x48 frames need ~" in errors[0]
    assert errors[0].endswith("0.0 MiB of memory is available (try --batch-frames 1)")
    assert json.loads((tmp_path / "out" / "big" / "run.json").read_text())["status"] == "failed"


def test_overlay_frames_are_decoded_ahead_in_order_and_errors_reach_the_writer() -> None:
    from clipvis.cli.video_io import VideoReadError
    from clipvis.cli.writers.overlay import decoded_ahead

    frames = [(i, np.full((4, 6, 3), i, np.uint8)) for i in range(9)]
    got = list(decoded_ahead(iter(frames), depth=2))
    assert [i for i, _ in got] == list(range(9)) and all((f == i).all() for i, f in got)

    def broken():
        yield frames[0]
        raise VideoReadError("v.mp4", "truncated or corrupt")

    with pytest.raises(VideoReadError, match="v.mp4: truncated"):
        list(decoded_ahead(broken()))


def test_video_stream_of_bare_frames_names_them_in_the_limit_error(predictor, monkeypatch) -> None:
    from clipvis.cli import memory

    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 1000)
    with VideoStream(predictor, list(synthetic_frames(2)), batch_frames=2) as stream:
        with pytest.raises(ResolutionLimitError, match=r"^frames: 77x45 frames need .*\(try batch_frames=1\)$"):
            list(stream)


@pytest.mark.parametrize("position", [0, 1])
@pytest.mark.parametrize("dtype, problem", [(np.float32, r"float32 \(scale floats"),
                                            (np.uint16, r"uint16 \(convert to 8 bits")])
def test_video_stream_checks_every_frames_dtype(predictor, position, dtype, problem) -> None:
    """Only a batch's first frame was checked (by push): the decoder copied the others into its uint8 batch, so a
    float frame in [0, 1] became black and a 16-bit one wrapped, silently."""
    frames = list(synthetic_frames(4))
    wide = frames[position].astype(dtype)
    frames[position] = wide / np.float32(255) if dtype == np.float32 else wide * np.uint16(257)
    expected = rf"^frame {position}: expected uint8 RGB frames \[H, W, 3\], got {problem}"
    with VideoStream(predictor, frames, batch_frames=4) as stream, pytest.raises(TypeError, match=expected):
        list(stream)


@pytest.mark.parametrize("batch_frames", [1, 2, 3])
def test_a_failing_source_delivers_the_frames_read_before_its_error_then_raises_it(predictor, batch_frames) -> None:
    """A camera generator that failed after 4 frames: the caller got 2 of them (batch_frames=1) or none (2), then
    finish() said the caller had left the loop early."""
    frames = synthetic_frames(5)

    def camera():
        for index, frame in enumerate(frames):
            if index == 4:
                raise OSError("camera unplugged")
            yield frame

    received = []
    with VideoStream(predictor, camera(), batch_frames=batch_frames) as stream:
        with pytest.raises(OSError, match="^camera unplugged$"):
            for frame in stream:
                received.append(frame.frame_index)
        assert received == [0, 1, 2, 3]
        with pytest.raises(RuntimeError, match=r"^finish\(\) after the frames' source failed \(OSError: camera "):
            stream.finish()


@pytest.mark.parametrize("batch_frames", [1, 2, 4])
def test_a_batch_failing_in_the_model_delivers_the_frames_finished_before_it_then_raises(predictor,
                                                                                        batch_frames) -> None:
    """Frame 4 of another size, opening a batch, failed it in the model: the frames of the batches before it, which
    the model had finished (a source's error delivers them), were lost with it (batch_frames=2: 0-1 came, 2-3 not)."""
    frames = list(synthetic_frames(4, 48, 64)) + list(synthetic_frames(1, 40, 64)) + list(synthetic_frames(2, 48, 64))
    received = []
    with VideoStream(predictor, frames, batch_frames=batch_frames) as stream:
        with pytest.raises(ValueError, match=r"^frame 4 \(0-based, as pushed\): size \(40, 64\) differs"):
            for frame in stream:
                received.append(frame.frame_index)
        assert received == [0, 1, 2, 3]
        with pytest.raises(RuntimeError, match=r"^finish\(\) after the stream stopped with an error \(ValueError"):
            stream.finish()


def write_clip(path, frames: np.ndarray) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))


def test_a_stream_left_early_or_failed_lets_its_files_go_at_once(predictor, tmp_path, monkeypatch,
                                                                 open_files_under) -> None:
    """The video file (the reader's iteration was never closed) and the scores' temporary file (closed only by the
    garbage collector, which reference cycles through the error's traceback delayed) stayed open after the stream
    ended: a video that failed on a full TMPDIR took the next inputs of the batch down with it."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    monkeypatch.setattr(scoring.StreamingVideoScorer.__init__, "__defaults__", (0,))  # every frame's scores spill
    path = tmp_path / "clip.mp4"
    write_clip(path, synthetic_frames(60, 48, 64))  # long enough to be still read when the loop is left
    with VideoStream(predictor, path, batch_frames=2) as stream:
        for frame in stream:
            assert open_files_under(temporary) and str(path) in open_files_under(tmp_path)
            if frame.position == 2:
                break
    assert open_files_under(tmp_path) == []  # `stream` still referenced

    def camera():
        for index, frame in enumerate(synthetic_frames(6)):
            if index == 4:
                raise OSError("camera unplugged")
            yield frame

    gc.disable()  # only what the stream lets go itself
    try:
        with pytest.raises(OSError, match="camera unplugged"):
            with VideoStream(predictor, camera(), batch_frames=1) as failed:
                for _ in failed:
                    pass
        assert open_files_under(temporary) == []
        with VideoStream(predictor, camera(), batch_frames=1) as unclosed:  # the stream's own loop, no `with` needed
            with pytest.raises(OSError, match="camera unplugged"):
                list(unclosed)
            assert open_files_under(temporary) == []
    finally:
        gc.enable()
    with VideoStream(predictor, list(synthetic_frames(3)), batch_frames=2) as complete:
        list(complete)
    with pytest.raises(RuntimeError, match=r"^finish\(\) after the stream was closed \(its with-block ended, or "):
        complete.finish()  # the block let the session go: finish() belongs inside it


def test_a_loop_failing_in_the_model_lets_the_scores_file_go_after_the_batch_in_flight(predictor, tmp_path,
                                                                                      monkeypatch, open_files_under):
    """The session was closed before the model thread's next batch was done: that batch's scores opened a new
    temporary file in the closed session, which nothing closed (no with-block: the loop's own failure)."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(scoring.StreamingVideoScorer.__init__, "__defaults__", (300,))
    frames = list(synthetic_frames(8, 48, 64))
    other_size = list(synthetic_frames(2, 40, 64))
    for _ in range(5):
        stream = VideoStream(predictor, frames[:2] + other_size + frames[2:], batch_frames=2)
        with pytest.raises(ValueError, match="differs from the video's"):
            for _ in stream:
                pass
        assert stream.session.closed and open_files_under(tmp_path) == []


def test_a_stream_refuses_what_it_cannot_do_in_a_sentence(predictor) -> None:
    """One [H, W, 3] frame given as the video ran each of its rows as a frame (or failed in zip()); iterating on
    after close() failed in concurrent.futures ("cannot schedule new futures after shutdown")."""
    frame = synthetic_frames(1)[0]
    with pytest.raises(ValueError, match=r"^frames is one \[H, W, 3\] frame of shape \(45, 77, 3\): a video is "):
        VideoStream(predictor, frame)
    with pytest.raises(ValueError, match=r"^frame 1: expected an RGB frame \[H, W, 3\], got shape \(45, 77\) "
                                         r"\(grayscale\? repeat it into 3 channels: "
                                         r"np\.repeat\(frame\[\.\.\., None\], 3, axis=-1\)\)$"):
        list(VideoStream(predictor, [frame, frame[..., 0]]))
    with pytest.raises(TypeError, match="^batch_frames must be a whole number, not 2.5$"):
        VideoStream(predictor, [frame], batch_frames=2.5)
    with VideoStream(predictor, list(synthetic_frames(12)), batch_frames=2) as stream:
        frames = iter(stream)
        next(frames)
    with pytest.raises(RuntimeError, match=r"^this VideoStream was closed \(its with-block ended, or close\(\) was "):
        list(frames)
    closed = VideoStream(predictor, [frame])
    closed.close()
    with pytest.raises(RuntimeError, match=r"^this VideoStream was closed"):
        list(closed)


@pytest.mark.parametrize("layout, hint", [
    (lambda frame: np.concatenate([frame, frame[..., :1]], -1),
     r"\(RGBA\? drop the alpha channel: frame\[\.\.\., :3\]\)"),
    (lambda frame: frame.transpose(2, 0, 1),
     r"\(channels first\? move them last: np\.transpose\(frame, \(1, 2, 0\)\)\)"),
], ids=["rgba", "channels first"])
def test_a_frame_of_a_common_other_layout_is_refused_saying_how_to_convert_it(predictor, layout, hint) -> None:
    """A pushed batch of another layout said how to convert it; a streamed frame gave the shape alone."""
    frame = synthetic_frames(1)[0]
    with pytest.raises(ValueError, match=rf"^frame 1: expected an RGB frame \[H, W, 3\], got shape .* {hint}$"):
        list(VideoStream(predictor, [frame, layout(frame)]))


def test_a_frame_of_another_size_opening_a_batch_is_named(predictor) -> None:
    """Within a batch, a frame of another size was named ('frame 3 is ...'); one that opened a new batch was not."""
    frames = list(synthetic_frames(3, 48, 64)) + list(synthetic_frames(1, 40, 64))
    with pytest.raises(ValueError, match=r"^frame 2 \(0-based, as pushed\): size \(40, 64\) differs from the "
                                         r"video's \(48, 64\)$"):
        list(VideoStream(predictor, frames[:2] + frames[3:], batch_frames=2))


def test_a_source_failing_at_its_first_frame_is_the_sources_failure(predictor) -> None:
    def camera():
        raise OSError("no camera")
        yield

    with VideoStream(predictor, camera()) as stream:
        with pytest.raises(OSError, match="^no camera$"):
            list(stream)
        with pytest.raises(RuntimeError, match=r"^finish\(\) after the frames' source failed \(OSError: no camera"):
            stream.finish()


def test_finish_before_iterating_says_so(predictor) -> None:
    with VideoStream(predictor, list(synthetic_frames(2))) as stream:  # it said "frames: no decodable frames"
        with pytest.raises(RuntimeError, match=r"^finish\(\) before any frame was read: iterate over the stream"):
            stream.finish()


def test_the_streaming_api_is_annotated_with_the_predictors_types() -> None:
    """StreamedFrame.tracked was typed ``object`` and finish() returned an unannotated value (py.typed users saw no
    attributes)."""
    import typing

    from clipvis.cli import mask_store, streaming

    names = {**vars(streaming), **vars(predictor_module)}
    assert typing.get_type_hints(streaming.StreamedFrame, names)["tracked"] is predictor_module.TrackedFrame
    assert typing.get_type_hints(VideoStream.finish, names)["return"] is predictor_module.VideoInstances
    assert typing.get_type_hints(VideoStream.__init__, names)["predictor"] is VideoPredictor
    assert typing.get_type_hints(streaming.open_frames, names)["return"] is streaming.FrameReader
    hints = typing.get_type_hints(mask_store.StoredSegmentations.__getitem__, vars(mask_store))
    assert hints["frame"] == int | slice
