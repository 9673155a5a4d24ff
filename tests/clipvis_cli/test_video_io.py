"""Video readers, probing, error messages and the background decoder, on synthetic files."""

from __future__ import annotations

import itertools
import re
import shutil
import threading
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from clipvis.cli.inputs import discover_inputs
from clipvis.cli.video_io import (
    BackgroundDecoder,
    ImageFolderReader,
    VideoReader,
    VideoReadError,
    open_reader,
)


def read_all(reader) -> tuple[list[int], list[np.ndarray]]:
    pairs = list(reader)
    return [i for i, _ in pairs], [f for _, f in pairs]


def test_h264_frames_in_order_rgb_uint8(media: dict[str, Path], synth) -> None:
    indices, frames = read_all(VideoReader(media["h264"]))
    assert indices == list(range(12))
    assert all(f.shape == (48, 64, 3) and f.dtype == np.uint8 and f.flags.c_contiguous for f in frames)
    assert [synth.bar_index(f) for f in frames] == list(range(12))


def test_stride_and_max_frames_pick_the_right_frames(media: dict[str, Path], synth) -> None:
    indices, frames = read_all(VideoReader(media["h264"], stride=3))
    assert indices == [0, 3, 6, 9]
    assert [synth.bar_index(f) for f in frames] == [0, 3, 6, 9]
    indices, _ = read_all(VideoReader(media["h264"], stride=2, max_frames=4))
    assert indices == [0, 2, 4, 6]
    indices, _ = read_all(VideoReader(media["h264"], max_frames=100))
    assert len(indices) == 12


def test_listed_frames_are_read_alone(media: dict[str, Path], synth) -> None:
    """The frames a corrected GT lists (one deleted by hand: no regular stride), for evaluate."""
    indices, frames = read_all(VideoReader(media["h264"], frames=[0, 1, 3, 7]))
    assert indices == [0, 1, 3, 7] and [synth.bar_index(f) for f in frames] == [0, 1, 3, 7]
    assert read_all(VideoReader(media["h264"], frames=[10, 11, 40]))[0] == [10, 11]  # the video ends first
    for bad in ([], [3, 1], [2, 2], [-1, 0]):
        with pytest.raises(ValueError, match="frames must be increasing frame indices"):
            VideoReader(media["h264"], frames=bad)


def test_reader_can_be_iterated_twice(media: dict[str, Path]) -> None:
    reader = VideoReader(media["h264"], stride=5)
    assert read_all(reader)[0] == read_all(reader)[0] == [0, 5, 10]


@pytest.mark.parametrize("key, count", [("odd_mpeg4", 5), ("odd_vp9", 3)])
def test_odd_sizes_and_other_codecs(media: dict[str, Path], key: str, count: int) -> None:
    reader = VideoReader(media[key])
    probe = reader.probe()
    assert (probe.width, probe.height) == (97, 61)
    indices, frames = read_all(reader)
    assert indices == list(range(count))
    assert {f.shape for f in frames} == {(61, 97, 3)}


def test_one_frame_and_tiny_videos(media: dict[str, Path]) -> None:
    assert read_all(VideoReader(media["one"]))[0] == [0]
    assert VideoReader(media["one"]).probe().frame_count == 1
    indices, frames = read_all(VideoReader(media["tiny"]))
    assert indices == [0, 1, 2] and frames[0].shape == (2, 2, 3)


def test_probe_reports_size_rate_and_count(media: dict[str, Path]) -> None:
    probe = VideoReader(media["h264"]).probe()
    assert (probe.width, probe.height, probe.fps, probe.fps_known, probe.frame_count) == (64, 48, 25, True, 12)
    assert probe.codec == "h264" and probe.rotation == 0
    assert probe.processed_frame_count(stride=5) == 3
    assert probe.processed_frame_count(stride=1, max_frames=4) == 4


@pytest.mark.parametrize("name, rate", [("fast.mp4", 1000), ("fast.mkv", 1000), ("faster.mp4", 1200)])
def test_a_high_speed_camera_s_rate_is_its_rate(tmp_path, name: str, rate: int) -> None:
    """1000 frames/s was taken for a container's time base (unknown: 30 frames/s in ytvis.json, and Label Studio
    kept one frame in ten)."""
    import av

    with av.open(str(tmp_path / name), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(10):
            image = np.full((48, 64, 3), index * 20, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    probe = VideoReader(tmp_path / name).probe()
    assert (probe.fps, probe.fps_known, probe.frame_count) == (rate, True, 10)


@pytest.mark.parametrize("key, rotation", [("rot90", 90), ("rot270", 270)])
def test_quarter_turn_rotation_metadata_is_applied(rotated: dict[str, Path], key: str, rotation: int) -> None:
    reader = VideoReader(rotated[key])
    probe = reader.probe()
    assert probe.rotation == rotation
    assert (probe.width, probe.height) == (48, 64)  # stored 64x48, shown upright
    _, frames = read_all(reader)
    assert frames[0].shape == (64, 48, 3)
    bright = frames[0].mean(axis=2) > 128
    ys, xs = np.nonzero(bright)
    # The stored block sits at the top-left (rows < 24, cols < 16). Turned 90° counter-clockwise it lands at
    # the bottom-left; 90° clockwise (270 ccw) at the top-right. Same result as OpenCV's auto-rotation.
    if rotation == 90:
        assert ys.min() >= 64 - 16 - 1 and xs.max() < 24 + 1
    else:
        assert ys.max() < 16 + 1 and xs.min() >= 48 - 24 - 1


def test_half_turn_rotation_keeps_size(rotated: dict[str, Path]) -> None:
    _, frames = read_all(VideoReader(rotated["rot180"]))
    ys, xs = np.nonzero(frames[0].mean(axis=2) > 128)
    assert frames[0].shape == (48, 64, 3) and ys.min() >= 23 and xs.min() >= 47


@pytest.mark.parametrize(("flip", "matrix", "corner"), [
    ("hflip", (-65536, 0, 0, 0, 65536, 0, 0, 0, 1 << 30), "top-right"),  # av_display_matrix_flip(m, 1, 0)
    ("vflip", (65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30), "bottom-left"),  # av_display_matrix_flip(m, 0, 1)
    ("transpose", (0, 65536, 0, 65536, 0, 0, 0, 0, 1 << 30), "top-left"),  # a quarter turn and a mirror
])
def test_a_mirror_in_the_display_matrix_is_applied_as_players_apply_it(tmp_path: Path, synth, flip, matrix,
                                                                       corner) -> None:
    """PyAV reads a left-right mirror in the display matrix as a half turn (rotation -180) and a top-bottom one as
    none: a mirrored video was processed upside down. The matrix itself is read, as ffmpeg (>= 6.1) and players do."""
    import av

    path = tmp_path / f"{flip}.mp4"
    with av.open(str(path), "w") as output:
        stream = output.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        try:
            stream.set_display_matrix(list(matrix))
        except AttributeError:
            pytest.skip("this PyAV cannot write a display matrix")
        for _ in range(2):
            output.mux(stream.encode(av.VideoFrame.from_ndarray(synth.corner_frame(48, 64), format="rgb24")))
        output.mux(stream.encode())
    reader = VideoReader(path)
    probe = reader.probe()
    shown = (48, 64) if flip == "transpose" else (64, 48)
    assert (probe.width, probe.height) == shown and probe.mirrored
    _, frames = read_all(reader)
    ys, xs = np.nonzero(frames[0].mean(axis=2) > 128)  # the stored block: rows < 24, columns < 16 of 48x64
    height, width = frames[0].shape[:2]
    assert (height, width) == shown[::-1]
    top, left = ys.max() < height // 2, xs.max() < width // 2
    assert {(True, False): "top-right", (False, True): "bottom-left", (True, True): "top-left"}.get(
        (top, left)) == corner, (ys.min(), ys.max(), xs.min(), xs.max())


def test_variable_frame_rate_reads_every_frame(media: dict[str, Path], synth) -> None:
    reader = VideoReader(media["vfr"])
    indices, frames = read_all(reader)
    assert indices == list(range(6)) and [synth.bar_index(f) for f in frames] == list(range(6))
    probe = reader.probe()
    assert probe.fps_known and 1 < probe.fps < 1000


@pytest.mark.parametrize(
    "key, expected",
    [
        ("zero", "zero bytes"),
        ("text", "not a video or corrupt"),
        ("audio", "no video stream (audio only)"),
        ("truncated_plain", "truncated: the file ends at byte "),  # its index at the end: FFmpeg finds none
        ("zeroed_data", "no decodable frames"),
    ],
)
def test_unreadable_files_fail_with_one_line_naming_the_file(
    media: dict[str, Path], key: str, expected: str
) -> None:
    for action in (lambda r: r.probe(), lambda r: list(r)):
        with pytest.raises(VideoReadError) as caught:
            action(VideoReader(media[key]))
        message = str(caught.value)
        assert message.startswith(str(media[key])) and expected in message and "\n" not in message


def test_an_mp4_with_its_index_at_the_front_cut_short_is_said_to_be_truncated(media: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    """A +faststart MP4 cut inside its moov was "no video stream", one cut after it "no decodable frames", though
    other cuts said truncated; an audio file still has no video stream."""
    data = media["long_faststart"].read_bytes()
    moov = data.index(b"moov") - 4
    moov_end = moov + int.from_bytes(data[moov:moov + 4], "big")
    mdat = data.index(b"mdat") - 4
    for name, end, box, box_end in (("in_moov.mp4", moov + 100, "moov", moov_end),
                                    ("after_moov.mp4", mdat + 16, "mdat", len(data))):
        cut = tmp_path / name
        cut.write_bytes(data[:end])
        for action in (lambda r: r.probe(), lambda r: list(r)):
            with pytest.raises(VideoReadError) as caught:
                action(VideoReader(cut))
            assert str(caught.value).startswith(f"{cut}: truncated: the file ends at byte {end}, inside its {box} box "
                                                f"(which runs to byte {box_end})"), str(caught.value)
    with pytest.raises(VideoReadError, match=r": no video stream \(audio only\)$"):
        VideoReader(media["audio"]).probe()


def test_missing_file_and_directory(media: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(VideoReadError, match="no such file"):
        VideoReader(tmp_path / "missing.mp4").probe()
    with pytest.raises(VideoReadError, match="is a directory"):
        list(VideoReader(tmp_path))


def test_truncated_file_fails_after_the_decodable_frames(media: dict[str, Path]) -> None:
    reader = VideoReader(media["truncated_faststart"])
    assert reader.probe().frame_count == 120  # the header still promises every frame
    received = []
    with pytest.raises(VideoReadError) as caught:
        for index, _ in reader:
            received.append(index)
    message = str(caught.value)
    assert "truncated or corrupt" in message and f"after {len(received)} frames" in message
    assert 0 < len(received) < 120


def write_with_audio(path: Path, frames: list[np.ndarray], audio_seconds: float) -> Path:
    """A Matroska file: ``frames`` (48x64 RGB) at 10 fps and a silent AAC track of ``audio_seconds``."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        for image in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        for first in range(0, int(audio_seconds * 16000), 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, first
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return path


def read_cut_copy(video: Path, cut: Path) -> tuple[Path, list[int], VideoReadError]:
    """``video``'s first 60 % of bytes written to ``cut``, read until the reader fails: (``cut``, the frame indices
    read before, the error)."""
    data = video.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    received = []
    with pytest.raises(VideoReadError) as caught:
        for index, _ in VideoReader(cut):
            received.append(index)
    return cut, received, caught.value


def test_a_file_cut_at_a_packet_boundary_fails_and_a_longer_audio_track_does_not(tmp_path: Path, synth) -> None:
    """A Matroska file cut short decodes without an error up to the cut: the header's duration tells it apart (the
    packets of every stream end well before it), while a video whose audio runs on past it is whole."""
    whole = synth.write_bar_video(tmp_path / "whole.mkv", 40)
    assert len(read_all(VideoReader(whole))[0]) == 40
    cut, received, caught = read_cut_copy(whole, tmp_path / "cut.mkv")
    assert 0 < len(received) < 40
    pattern = rf"{re.escape(str(cut))}: truncated: the file ends after {len(received)} frames, at [0-9.]+ s of the "
    assert re.fullmatch(pattern + r"1\.6 s its header declares", str(caught)), str(caught)  # 40 at 25/s
    assert len(read_all(VideoReader(cut, max_frames=5))[0]) == 5  # what was asked for is there
    frames = [synth.bar_frame(index, 48, 64) for index in range(20)]
    longer_audio = write_with_audio(tmp_path / "audio_runs_on.mkv", frames, audio_seconds=6.0)
    assert len(read_all(VideoReader(longer_audio))[0]) == 20


@pytest.mark.parametrize(("suffix", "codec", "cut_is_told"), [
    ("mkv", "libx264", True), ("webm", "libvpx-vp9", True), ("flv", "flv", True), ("asf", "wmv2", False),
    ("mp4", "libx264", False), ("ts", "libx264", False),
])
def test_a_whole_file_whose_timestamps_start_late_is_not_truncated_and_a_cut_one_is(tmp_path: Path, synth, suffix,
                                                                                    codec, cut_is_told) -> None:
    """A recording or an ``ffmpeg -copyts`` cut starts late (first frame at 1.4 s). Matroska, WebM and ASF headers
    declare the end time measured from 0 (3.4 s), MP4, MPEG-TS and FLV the length from the first frame (2.0 s): whole
    Matroska and WebM files were refused as "truncated ... at 2.0 s of the 3.4 s its header declares". One cut short
    is still told, in the formats whose header keeps the whole duration (a cut ASF declares none, a cut MP4 or
    MPEG-TS fails or ends otherwise)."""
    late = synth.write_bar_video(tmp_path / f"late.{suffix}", 40, codec=codec, rate=10, pts=[14 + i for i in range(40)],
                                 time_base=Fraction(1, 10))
    reader = VideoReader(late)
    assert len(read_all(reader)[0]) == 40
    assert reader.probe().frame_count in (39, 40, 41)
    if not cut_is_told:
        return
    _, received, caught = read_cut_copy(late, tmp_path / f"cut.{suffix}")
    assert 0 < len(received) < 40
    pattern = rf".*: truncated: the file ends after {len(received)} frames, at [0-9.]+ s of the 4\.0 s its header "
    assert re.fullmatch(pattern + "declares", str(caught)), str(caught)


def test_frames_lost_to_damage_and_an_avi_cut_short_fail_instead_of_being_renumbered(tmp_path: Path, synth,
                                                                                     monkeypatch) -> None:
    """A Matroska file damaged mid-way (the demuxer skips the rest of a cluster) decoded 25 of 60 frames without an
    error, numbered 0..24: the masks of "frame 15" were frame 50's. An AVI cut in half decoded its first half as
    complete. Damage without lost frames, and variable frame rates without damage, still read."""
    from types import SimpleNamespace

    from clipvis.cli.video_io.stream_health import _StreamHealth

    def blocks(i: int) -> np.ndarray:  # enough picture for several Matroska clusters
        image = np.full((96, 160, 3), 40, np.uint8)
        image[:32, :53], image[64:, 80:] = (230, 20, 20), (20, 200, 20)
        image[44:52, 76:84] = ((i * 20) % 256, (i * 20) % 256, 255)
        return image

    whole = synth.write_video(tmp_path / "whole.mkv", [blocks(i) for i in range(60)], rate=10)
    data = bytearray(whole.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 300] = bytes(range(256)) + bytes(44)
    damaged = tmp_path / "damaged.mkv"
    damaged.write_bytes(bytes(data))
    import av

    with av.open(str(damaged)) as container:
        decodable = sum(1 for _ in container.decode(video=0))
    yielded: list[int] = []
    with pytest.raises(VideoReadError, match=r"damaged: no frames between|truncated or corrupt"):
        for index, _ in VideoReader(damaged):  # (with this FFmpeg: "damaged: no frames between 1.5 s and 5.0 s ...")
            yielded.append(index)
    assert len(yielded) < decodable  # said once found, not after the model had run through every frame left
    health = _StreamHealth(Fraction(10))  # what decides: frames lost where FFmpeg flagged corrupt data
    for seconds, corrupt in ((0.0, False), (0.1, False), (0.2, True), (3.0, False), (3.1, False)):
        health.saw(SimpleNamespace(time=seconds, is_corrupt=corrupt))
    assert health.corrupt and health.gap == (0.2, 3.0)

    avi = synth.write_bar_video(tmp_path / "dashcam.avi", 60, codec="mjpeg", pix_fmt="yuvj420p", rate=10)
    with av.open(str(avi)) as container:  # cut where frame 30's chunk begins: the first 30 decode without an error
        offset = [packet.pos for packet in container.demux(video=0)][30]
    cut = tmp_path / "dashcam_cut.avi"
    cut.write_bytes(avi.read_bytes()[:offset])
    assert len(read_all(VideoReader(avi))[0]) == 60
    with pytest.raises(VideoReadError, match=r"truncated: the file ends at frame 30 of the 60 its header declares"):
        read_all(VideoReader(cut))
    # A whole AVI of a variable-rate capture: FFmpeg writes an empty chunk for each repeated frame, which the header
    # counts and no reader returns (it was refused as truncated).
    gaps = tmp_path / "gaps.avi"
    with av.open(str(gaps), "w") as output:
        stream = output.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        for i, pts in enumerate([0, 1, 2, 3, 6, 7, 8, 12, 13, 14]):
            frame = av.VideoFrame.from_ndarray(synth.bar_frame(i, 48, 64), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 10)
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    assert len(read_all(VideoReader(gaps))[0]) == 10
    # An AVI whose first frames are gone (a damaged index lost the keyframe, and the decoder drops what depends
    # on it): frame 25 came out as frame 0. The demuxer's side of that is played here by dropping them.
    from clipvis.cli.video_io import readers

    original = readers._demuxed_frames

    def without_the_first_25(container, stream, health):
        return (frame for frame in original(container, stream, health) if frame.pts >= 25)

    with monkeypatch.context() as patch, pytest.raises(VideoReadError, match=r"damaged: its first 25 frames cannot"):
        patch.setattr(readers, "_demuxed_frames", without_the_first_25)
        read_all(VideoReader(avi))

    irregular = synth.write_bar_video(tmp_path / "screen.mkv", 6, pts=[0, 40, 2000, 2040, 5000, 9960],
                                      time_base=Fraction(1, 1000), rate=10)
    assert len(read_all(VideoReader(irregular))[0]) == 6


def test_a_pause_far_from_corrupt_data_and_recordings_joined_with_cat_are_read_whole(tmp_path: Path, synth) -> None:
    """A screen recording with a 3 s pause and a damaged frame 2 s after it, and two MPEG-TS recordings joined with
    `cat` (the second starts 100 s later; the continuity counters break at the join, which FFmpeg flags as corrupt)
    failed whole as "damaged": any corrupt data anywhere and any gap in the times. Only a gap next to corrupt data
    is lost frames."""
    import av

    rng = np.random.default_rng(0)  # pictures that leave a damaged frame something to decode (a bar's do not)
    pts = [i * 3000 for i in range(10)] + [450_000 + i * 3000 for i in range(20)]  # 90 kHz: a pause from 0.3 s to 5 s
    screen = synth.write_video(tmp_path / "screen.mp4", rng.integers(0, 255, (30, 48, 64, 3), dtype=np.uint8),
                               pts=pts, time_base=Fraction(1, 90_000), rate=30, codec_options={"g": "15", "bf": "0"})
    with av.open(str(screen)) as container:
        packet = [packet for packet in container.demux(video=0) if packet.size][25]  # the frame at 5.5 s
    data = bytearray(screen.read_bytes())
    middle = packet.pos + packet.size // 2
    data[middle : middle + 40] = bytes(b ^ 0xFF for b in data[middle : middle + 40])
    screen.write_bytes(bytes(data))
    with av.open(str(screen)) as container:
        assert any(frame.is_corrupt for frame in container.decode(video=0))  # the decoder saw the damage
    assert read_all(VideoReader(screen))[0] == list(range(30))

    first = synth.write_bar_video(tmp_path / "a.ts", 10, pts=range(10), time_base=Fraction(1, 30), rate=30)
    second = synth.write_bar_video(tmp_path / "b.ts", 10, pts=range(3000, 3010), time_base=Fraction(1, 30), rate=30)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    with av.open(str(joined)) as container:
        assert any(packet.is_corrupt for packet in container.demux(video=0))  # the join, as FFmpeg flags it
    indices, frames = read_all(VideoReader(joined))
    assert indices == list(range(20)) and [synth.bar_index(f) for f in frames] == [*range(10), *range(10)]


def test_an_mpeg_ts_recording_that_lost_packets_mid_way_is_damaged_and_a_joined_one_is_not(tmp_path: Path) -> None:
    """A recording that lost a run of TS packets (a lossy capture, a bad disk) looks like two joined with `cat` to
    FFmpeg: the packet before the loss is flagged corrupt and decoding starts again at a keyframe after it. Such
    copies were read whole, the frames after the loss numbered as the lost ones. What a join has and a loss has not:
    the second recording's TS packets start counting again as the first's did (M2TS's 192-byte packets too)."""
    import av

    def record(path: Path, first_pts: int, muxer_options: dict[str, str] | None = None) -> bytes:
        with av.open(str(path), "w", format="mpegts", options=muxer_options or {}) as output:
            stream = output.add_stream("libx264", rate=25, options={"g": "25", "bf": "0"})
            stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
            stream.codec_context.time_base = Fraction(1, 25)
            for i in range(150):  # bars that move (many scene cuts: keyframes where a loss often ends)
                image = np.zeros((96, 128, 3), np.uint8)
                image[:, (i * 3) % 128 : (i * 3) % 128 + 8], image[(i * 2) % 96 : (i * 2) % 96 + 6, :, 1] = 255, 200
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = first_pts + i, Fraction(1, 25)
                output.mux(stream.encode(frame))
            output.mux(stream.encode())
        return path.read_bytes()

    data = record(tmp_path / "rec.ts", 0)
    packets = len(data) // 188
    lossy = tmp_path / "lossy.ts"
    for start in (0.18, 0.21, 0.24, 0.39, 0.45, 0.72):  # where such cuts were read whole (25 packets: 0.5 s)
        cut = int(packets * start)
        lossy.write_bytes(data[: cut * 188] + data[(cut + 25) * 188 :])
        with pytest.raises(VideoReadError, match=r"damaged: no frames between"):
            read_all(VideoReader(lossy))
    for name, options in (("joined.ts", None), ("joined.m2ts", {"mpegts_m2ts_mode": "1"})):
        joined = tmp_path / name
        joined.write_bytes(record(tmp_path / "1st", 0, options) + record(tmp_path / "2nd", 2500, options))
        assert read_all(VideoReader(joined))[0] == list(range(300))


def test_mpeg_ts_recordings_with_audio_muxed_ahead_of_the_video_joined_with_cat_are_read_whole(tmp_path: Path) -> None:
    """Audio that starts before the video (cameras, capture cards, OBS) is muxed ahead of the first video packet: the
    second recording of a join begins with many audio packets counting up, and tables repeated on the way (FFmpeg:
    SDT, PAT, PMT), where only each PID's very first count was taken for a new start: such joins were damaged."""
    import av

    def record(path: Path, first_video_pts: int) -> bytes:
        with av.open(str(path), "w", format="mpegts") as output:
            video = output.add_stream("libx264", rate=25, options={"g": "25", "bf": "0"})
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            video.codec_context.time_base = Fraction(1, 25)
            audio = output.add_stream("mp2", rate=48000)
            audio.layout = "stereo"

            def audio_frame(sample: int) -> av.AudioFrame:
                frame = av.AudioFrame.from_ndarray(np.zeros((2, 1152), np.int16), format="s16p", layout="stereo")
                frame.sample_rate, frame.pts, frame.time_base = 48000, sample, Fraction(1, 48000)
                return frame

            sample = first_video_pts * 1920 - 40 * 1152  # 40 audio frames (0.96 s) before the first video frame
            for i in range(40):
                image = np.zeros((48, 64, 3), np.uint8)
                image[:, (i * 3) % 64 : (i * 3) % 64 + 8] = 255
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = first_video_pts + i, Fraction(1, 25)
                while sample < (first_video_pts + i) * 1920:
                    output.mux(audio.encode(audio_frame(sample)))
                    sample += 1152
                output.mux(video.encode(frame))
            output.mux(video.encode())
            output.mux(audio.encode())
        return path.read_bytes()

    joined = tmp_path / "joined.ts"
    joined.write_bytes(record(tmp_path / "1st", 0) + record(tmp_path / "2nd", 2500))
    assert read_all(VideoReader(joined))[0] == list(range(80))


def test_a_damaged_first_keyframe_is_told_as_damage_and_no_frame_decoding_as_none(tmp_path: Path, synth) -> None:
    """A video whose first keyframe is garbage (the 4 frames after it depend on it; the next keyframe's 15 frames
    decode) said "no decodable frames": it is damage at the start, told as the AVI path tells it. A file none of
    whose frames decode still says "no decodable frames"."""
    import av

    whole = tmp_path / "gop5.mp4"
    with av.open(str(whole), "w") as output:
        stream = output.add_stream("libx264", rate=10, options={"g": "5", "bf": "0", "keyint_min": "5"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(20):
            output.mux(stream.encode(av.VideoFrame.from_ndarray(synth.bar_frame(i, 48, 64), format="rgb24")))
        output.mux(stream.encode())

    def damaged(name: str, bad) -> Path:
        path = tmp_path / name
        with av.open(str(whole)) as source, av.open(str(path), "w") as output:
            stream = output.add_stream_from_template(source.streams.video[0])
            for number, packet in enumerate(source.demux(video=0)):
                if packet.dts is None:
                    continue
                if bad(number):
                    garbage = av.Packet(bytes(np.random.default_rng(number).integers(0, 256, packet.size, np.uint8)))
                    garbage.pts, garbage.dts, garbage.time_base = packet.pts, packet.dts, packet.time_base
                    garbage.is_keyframe, garbage.duration = packet.is_keyframe, packet.duration
                    packet = garbage
                packet.stream = stream
                output.mux(packet)
        return path

    first = damaged("bad_start.mp4", lambda number: number == 0)
    message = rf"{re.escape(str(first))}: damaged: its first 5 frames cannot be decoded \(.+\), so the frames after " \
              "would be numbered wrongly"
    with pytest.raises(VideoReadError, match=message):
        VideoReader(first).probe()
    with pytest.raises(VideoReadError, match=message):
        read_all(VideoReader(first))
    every = damaged("all_bad.mp4", lambda number: True)
    with pytest.raises(VideoReadError, match=rf"{re.escape(str(every))}: no decodable frames"):
        read_all(VideoReader(every))


def test_the_frame_seeker_gives_segment_s_frames_of_an_mpeg_program_stream(tmp_path: Path, synth) -> None:
    """After a seek in an MPEG program stream (.mpg, .vob: DVDs, camcorders) FFmpeg gives each frame the timestamp
    the frame before it had in a reading from the start: training's frame seeker returned frame n - 1 for frame n
    (9 of 40 frames here), so a frame's masks were paired with the picture before it, silently."""
    import av

    from clipvis.cli.video_io import VideoFrameSeeker

    path = tmp_path / "home.mpg"
    with av.open(str(path), "w", format="mpeg") as output:
        stream = output.add_stream("mpeg2video", rate=25, options={"bf": "2", "g": "15"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(40):
            image = synth.bar_frame(i % 14, 48, 64)
            image[:8, :i] = 200  # every frame its own picture
            output.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        output.mux(stream.encode())
    expected = [image for _, image in VideoReader(path)]
    assert len(expected) == 40
    seeker = VideoFrameSeeker()
    wrong = [index for index in range(40) if not np.array_equal(seeker.frame(path, index), expected[index])]
    assert wrong == []


def test_the_frame_seeker_reads_palette_videos_and_keeps_what_it_learned_of_many_files(tmp_path: Path, synth,
                                                                                      monkeypatch) -> None:
    """A palette (pal8) video's frames crashed training with a traceback: the picture digest took the (image,
    palette) pair PyAV gives such a frame for an array. And the seeker kept what it learned of 8 files: training over
    more videos decoded a whole video again each time it came back to it."""

    from clipvis.cli.video_io import VideoFrameSeeker, seeking

    animation = synth.write_palette_video(tmp_path / "palette.avi", 6)
    expected = [image for _, image in VideoReader(animation)]
    seeker = VideoFrameSeeker()
    assert all(np.array_equal(seeker.frame(animation, index), expected[index]) for index in (5, 0, 3))

    videos = [synth.write_bar_video(tmp_path / f"v{k}.mkv", 3) for k in range(12)]
    for video in videos:
        seeker.frame(video, 0)
    with monkeypatch.context() as patch:
        patch.setattr(seeking, "_learn_frames", lambda path: pytest.fail(f"{path} learned again"))
        assert [synth.bar_index(seeker.frame(video, 2)) for video in videos] == [2] * 12
    learn, learned = seeking._learn_frames, []
    monkeypatch.setattr(seeking, "_learn_frames", lambda path: learned.append(path.name) or learn(path))
    small = VideoFrameSeeker(frames=9)  # a budget of frames (3, 3 and 6 here): the files used longest ago go
    for video in (videos[0], videos[1], videos[0], animation, videos[0], videos[1]):
        small.frame(video, 0)
    assert learned == ["v0.mkv", "v1.mkv", "palette.avi", "v1.mkv"]


def test_cover_art_and_a_thumbnail_stream_are_not_the_video(tmp_path: Path, synth) -> None:
    """An MP3 with its album art (an attached picture) ran to complete as a 1-frame video of the cover; an MKV whose
    first stream is a 1-frame thumbnail had the thumbnail read, not its video. The stream read is FFmpeg's pick among
    those that are no cover picture, in segment, export (the same reader) and training (VideoFrameSeeker)."""
    import av

    from clipvis.cli.video_io import VideoFrameSeeker

    song = tmp_path / "song.mp3"
    with av.open(str(song), "w") as output:
        audio = output.add_stream("mp3", rate=16000)
        cover = output.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        for packet in cover.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 200, np.uint8), "rgb24")):
            packet.pts = packet.dts = 0
            output.mux(packet)
        for first in range(0, 16000, 1152):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, first
            output.mux(audio.encode(frame))
        output.mux(audio.encode(None))
    with pytest.raises(VideoReadError, match=rf"^{re.escape(str(song))}: no video stream \(audio only\)$"):
        VideoReader(song).probe()

    movie = tmp_path / "thumb_first.mkv"
    with av.open(str(movie), "w") as output:
        thumb = output.add_stream("mjpeg", rate=24)
        thumb.width, thumb.height, thumb.pix_fmt = 32, 32, "yuvj420p"
        video = output.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        output.mux(thumb.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 90, np.uint8), "rgb24")))
        output.mux(thumb.encode())
        for i in range(8):
            output.mux(video.encode(av.VideoFrame.from_ndarray(synth.bar_frame(i, 48, 64), format="rgb24")))
        output.mux(video.encode())
    reader = VideoReader(movie)
    probe = reader.probe()
    assert (probe.width, probe.height, probe.codec) == (64, 48, "h264")
    indices, frames = read_all(reader)
    assert indices == list(range(8)) and [synth.bar_index(frame) for frame in frames] == list(range(8))
    assert synth.bar_index(VideoFrameSeeker().frame(movie, 5)) == 5


@pytest.mark.parametrize(("container", "codec"), [("flv", "flv"), ("asf", "wmv2")])
def test_a_whole_slideshow_whose_packets_carry_no_duration_is_not_truncated(tmp_path: Path, synth, container,
                                                                            codec) -> None:
    """FLV and ASF packets carry no duration: a 1 fps slideshow's last frame starts a second before the end the
    header declares, and whole files were refused as truncated (a still too)."""
    import av

    for count in (4, 1):
        path = tmp_path / f"slides{count}.{container}"
        with av.open(str(path), "w", format=container) as output:
            stream = output.add_stream(codec, rate=1)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            for i in range(count):
                output.mux(stream.encode(av.VideoFrame.from_ndarray(synth.bar_frame(i, 48, 64), format="rgb24")))
            output.mux(stream.encode())
        assert len(read_all(VideoReader(path))[0]) == count


def test_truncated_file_within_max_frames_is_fine(media: dict[str, Path]) -> None:
    indices, _ = read_all(VideoReader(media["truncated_faststart"], max_frames=5))
    assert indices == [0, 1, 2, 3, 4]


def test_image_folder_reader_natural_order(tmp_path: Path, synth) -> None:
    # frames encode 0, 1, 2 in natural order
    synth.write_images(tmp_path / "seq", ["1.png", "2.png", "10.png"])
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    assert isinstance(reader, ImageFolderReader)
    indices, frames = read_all(reader)
    assert indices == [0, 1, 2] and [synth.bar_index(f) for f in frames] == [0, 1, 2]
    probe = reader.probe()
    assert (probe.width, probe.height, probe.fps, probe.frame_count) == (40, 24, 30, 3)
    assert reader.frame_file_names("seq", indices) == ["seq/1.png", "seq/2.png", "seq/10.png"]
    indices, frames = read_all(open_reader(source, stride=2))
    assert indices == [0, 2] and synth.bar_index(frames[1]) == 2
    assert open_reader(source, image_fps=12.5).probe().fps == Fraction(25, 2)


def test_sixteen_bit_gray_frames_keep_their_picture_in_segment_and_in_training(tmp_path: Path) -> None:
    """16-bit gray PNGs (depth, thermal, medical frames) were clipped to white by Pillow's RGB conversion; training
    reads frames as segment does, EXIF orientation included."""
    from PIL import Image

    from clipvis.cli.train.data import read_frame
    from clipvis.cli.train.records import FrameRecord

    ramp = (np.arange(24 * 40, dtype=np.uint16).reshape(24, 40) * 61).astype(np.uint16)  # 0 .. 58499
    folder = tmp_path / "depth"
    folder.mkdir()
    Image.fromarray(ramp).save(folder / "0.png")
    assert Image.open(folder / "0.png").mode.startswith("I")
    [source] = discover_inputs([str(folder)])
    _, [frame] = read_all(open_reader(source))
    assert frame.shape == (24, 40, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame[:, :, 0], (ramp >> 8).astype(np.uint8))
    assert np.array_equal(frame[:, :, 0], frame[:, :, 2])

    rgb = np.zeros((24, 40, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the left of the stored picture
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter clockwise: 24 wide, 40 high
    Image.fromarray(rgb).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    record = FrameRecord(path=tmp_path / "turned.jpg", height=40, width=24)
    image = read_frame(record)
    assert image.shape == (40, 24, 3) and image[:8].mean() > 200 and image[-8:].mean() < 50
    assert np.array_equal(image, read_all(open_reader(discover_inputs([str(tmp_path / "turned.jpg")])[0]))[1][0])


def test_a_damaged_exif_tag_neither_fails_the_frame_nor_loses_its_orientation_nor_warns(tmp_path: Path) -> None:
    """A phone photo (orientation 6) with one damaged EXIF tag (a string where a number belongs, a tag pointing past
    the block) failed the whole image folder with "required argument is not an integer": Pillow's exif_transpose
    writes the whole EXIF again. The orientation tag is read alone; EXIF that cannot be read leaves the frame as
    stored; Pillow's "Corrupt EXIF data" warnings (one per distinct damage, per frame) are not printed."""
    import struct
    import warnings

    from PIL import Image

    from clipvis.cli.train.data import read_frame
    from clipvis.cli.train.records import FrameRecord

    def entry(tag: int, kind: int, count: int, value: bytes) -> bytes:
        return struct.pack("<HHI", tag, kind, count) + value

    tags = [entry(0x010E, 2, 200, struct.pack("<I", 0x7000)),  # a description said to lie past the block
            entry(0x0112, 3, 1, struct.pack("<HH", 6, 0)),  # orientation 6: shown turned a quarter clockwise
            entry(0x0125, 2, 4, b"Cam\0")]  # text in a tag that holds a number
    damaged = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, len(tags)) + b"".join(tags) + struct.pack("<I", 0)
    good = Image.Exif()
    good[0x0112] = 6
    rgb = np.zeros((24, 40, 3), np.uint8)
    rgb[:, :10] = 255  # a white band on the left of the stored picture: on top once turned
    folder = tmp_path / "frames"
    folder.mkdir()
    for name, exif in (("0.jpg", good), ("1.jpg", damaged), ("2.jpg", good)):
        Image.fromarray(rgb).save(folder / name, exif=exif, quality=95)
    Image.fromarray(rgb).save(tmp_path / "unreadable.jpg", exif=b"Exif\x00\x00II*\x00\xff\xff\x00\x00")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [source] = discover_inputs([str(folder)])
        _, frames = read_all(open_reader(source))
        assert len(frames) == 3
        for frame in frames:
            assert frame.shape == (40, 24, 3) and frame[:8].mean() > 200 and frame[-8:].mean() < 50
        assert np.array_equal(read_frame(FrameRecord(path=folder / "1.jpg", height=40, width=24)), frames[1])
        [source] = discover_inputs([str(tmp_path / "unreadable.jpg")])
        _, [frame] = read_all(open_reader(source))
        assert frame.shape == (24, 40, 3) and frame[:, :8].mean() > 200  # as stored
    assert not [str(warning.message) for warning in caught if "EXIF" in str(warning.message) or "Tag" in
                str(warning.message)]


@pytest.mark.parametrize("suffix", [".webp", ".png"])
def test_an_animated_image_is_a_video_of_its_frames(tmp_path: Path, synth, suffix: str) -> None:
    """Animated WebP and APNG (FFmpeg reads only their first frame) were one-frame videos, silently."""
    from PIL import Image

    frames = [Image.fromarray(synth.bar_frame(i, 24, 40)) for i in range(5)]
    path = tmp_path / f"sticker{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    [source] = discover_inputs([str(path)])
    reader = open_reader(source, stride=2)
    indices, decoded = read_all(reader)
    assert indices == [0, 2, 4] and [synth.bar_index(f) for f in decoded] == [0, 2, 4]
    assert reader.probe().frame_count == 5 and reader.frame_file_names("s", [0, 2]) == ["s/00000.jpg", "s/00002.jpg"]
    assert reader.probe().fps == 10 and list(reader.frame_times) == pytest.approx([0.0, 0.2, 0.4])
    # frames shown for different times (Pillow gives WebP's no duration: read from its ANMF chunks)
    varied = tmp_path / f"varied{suffix}"
    frames[0].save(varied, save_all=True, append_images=frames[1:], duration=[100, 100, 500, 100, 200],
                   loop=0, lossless=True)
    [source] = discover_inputs([str(varied)])
    reader = open_reader(source)
    read_all(reader)
    assert list(reader.frame_times) == pytest.approx([0.0, 0.1, 0.2, 0.7, 0.8])
    assert reader.probe().fps == Fraction(50, 10)  # 5 frames in 1.0 s
    # animations in a folder of frames: their first frames alone made a video, silently
    folder = tmp_path / "stickers"
    folder.mkdir()
    path.rename(folder / path.name)
    varied.rename(folder / varied.name)
    [source] = discover_inputs([str(folder)])
    with pytest.raises(VideoReadError, match=r"is an animation \(5 frames\): give animated images one at a time"):
        read_all(open_reader(source))


def test_a_slideshow_with_a_longer_last_slide_keeps_its_frames_times(tmp_path: Path) -> None:
    """A GIF of 2-second slides whose last one lasts 3 s averages 9 frames in 19 s (0.474 frames/s): its frames
    were all within half of such a frame of n / 0.474 s, so it was taken for a constant rate and its overlay's
    frames drifted (0, 2.11, 4.22, ... 16.88 s), the last one showing 2.11 s. The frames' own intervals decide:
    their times are kept (and the end, 19 s, gives the last one its 3 s); equal slides stay a constant rate."""
    from PIL import Image

    from clipvis.cli.video_io import variable_frame_times

    pictures = [Image.new("RGB", (8, 8), (25 * k, 0, 0)) for k in range(9)]
    for name, delays, expected in (("longer_last.gif", [2000] * 8 + [3000], [2.0 * k for k in range(9)]),
                                   ("even.gif", [2000] * 9, None)):
        pictures[0].save(tmp_path / name, save_all=True, append_images=pictures[1:], duration=delays, loop=0)
        reader = VideoReader(tmp_path / name)
        indices, _ = read_all(reader)
        assert variable_frame_times(reader.frame_times, indices, reader.probe().fps) == expected, name
        assert reader.end_time == pytest.approx(sum(delays) / 1000)
    assert variable_frame_times([0.0, 0.033, 0.067, 0.1], [0, 1, 2, 3], Fraction(30)) is None  # milliseconds


@pytest.mark.parametrize("suffix", [".webp", ".png"])
def test_an_animated_image_ends_when_its_last_frame_does(tmp_path: Path, suffix: str) -> None:
    """Animated WebP and APNG had no end time (a GIF's is its last frame's own delay), so their overlay's last frame
    lasted an average frame (1.6 s of delays 1, 2, 0.5, 3 s: 5.1 s of 6.5). The end is the last frame's; with
    --max-frames, the last frame read's; with a stride, the animation's (the frames skipped show it)."""
    from PIL import Image

    pictures = [Image.new("RGB", (8, 8), (60 * k, 0, 0)) for k in range(4)]
    path = tmp_path / f"slides{suffix}"
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=[1000, 2000, 500, 3000], loop=0,
                     lossless=True)
    [source] = discover_inputs([str(path)])
    for options, times, end in (({}, [0, 1, 3, 3.5], 6.5), ({"max_frames": 2}, [0, 1], 3.0),
                                ({"stride": 3}, [0, 3.5], 6.5), ({"stride": 2}, [0, 3], 6.5)):
        reader = open_reader(source, **options)
        read_all(reader)
        assert (list(reader.frame_times), reader.end_time) == (pytest.approx(times), pytest.approx(end)), options


def test_an_animated_webp_named_gif_is_a_video_of_its_frames(tmp_path: Path, synth) -> None:
    """GIF sites serve animated WebP under a .gif name: FFmpeg, which reads .gif files, decodes no animated WebP
    ("no decodable frames"), where the same bytes named .webp were read through Pillow. The content decides."""
    from PIL import Image

    frames = [Image.fromarray(synth.bar_frame(i, 24, 40)) for i in range(4)]
    path = tmp_path / "reaction.gif"
    frames[0].save(path, format="WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    [source] = discover_inputs([str(path)])
    reader = open_reader(source)
    indices, decoded = read_all(reader)
    assert indices == [0, 1, 2, 3] and [synth.bar_index(f) for f in decoded] == [0, 1, 2, 3]
    assert reader.probe().fps == 10


def test_an_image_of_another_size_in_a_folder_is_resized_as_a_video_s_frames_are(tmp_path: Path, synth) -> None:
    """An image folder with one picture of another size (a phone photo its EXIF orientation turns upright among
    landscape frames) failed ("frame 2.png is 40x30 but the first frame is 40x24") where a video that changes size
    runs on at its first frame's size: the image is resized to it, and `size_change` names the first such frame."""
    from PIL import Image

    synth.write_images(tmp_path / "seq", ["1.png", "2.png"], height=24, width=40)
    synth.write_images(tmp_path / "seq", ["3.png"], height=30, width=40)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x24, shown 24x40
    Image.fromarray(synth.bar_frame(3, 24, 40)).save(tmp_path / "seq" / "4.jpg", exif=exif)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    frames = [frame for _, frame in reader]
    assert [frame.shape for frame in frames] == [(24, 40, 3)] * 4
    assert reader.size_change == (2, (30, 40))
    strided = open_reader(source, stride=3)
    assert len(list(strided)) == 2 and strided.size_change == (3, (40, 24))  # the turned photo: 24 wide, 40 high


def test_an_odd_first_image_is_resized_to_the_folder_s_common_size_not_the_others_to_it(tmp_path: Path, synth) -> None:
    """A phone photo its EXIF orientation turns upright (shown 24 wide, 40 high), first in a folder of 40x24 frames:
    every other frame was resized to the photo's size, all of them distorted. The size most images have wins: only
    the photo is resized, the others come as decoded, and `size_change` names the photo."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x24, shown 24x40
    (tmp_path / "seq").mkdir()
    Image.fromarray(synth.bar_frame(0, 24, 40)).save(tmp_path / "seq" / "0.jpg", exif=exif)
    files = synth.write_images(tmp_path / "seq", ["1.png", "2.png", "3.png"], height=24, width=40)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    probe = reader.probe()
    assert (probe.width, probe.height) == (40, 24)
    frames = [frame for _, frame in reader]
    assert [frame.shape for frame in frames] == [(24, 40, 3)] * 4
    for frame, file in zip(frames[1:], files, strict=True):
        assert np.array_equal(frame, np.asarray(Image.open(file).convert("RGB")))  # untouched
    assert reader.size_change == (0, (40, 24))
    assert reader.picture(1).shape == (24, 40, 3) and reader.picture(0).shape == (24, 40, 3)


def test_image_sizes_that_tie_go_to_the_first_image_s(tmp_path: Path, synth) -> None:
    """Two images of each size: the first image's size is kept, as before, and the images read decide (a stride's)."""
    synth.write_images(tmp_path / "seq", ["1.png", "3.png"], height=30, width=40)
    synth.write_images(tmp_path / "seq", ["2.png", "4.png"], height=24, width=40)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    assert [frame.shape for _, frame in reader] == [(30, 40, 3)] * 4 and reader.size_change == (1, (24, 40))
    synth.write_images(tmp_path / "seq", ["5.png"], height=24, width=40)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    assert [frame.shape for _, frame in reader] == [(24, 40, 3)] * 5 and reader.size_change == (0, (30, 40))
    strided = open_reader(source, stride=2)  # 1.png, 3.png (30 high) and 5.png: the images it reads decide
    assert [frame.shape for _, frame in strided] == [(30, 40, 3)] * 3 and strided.size_change == (4, (24, 40))


def test_sizing_a_png_folder_decodes_no_picture(tmp_path: Path, synth, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder's common size is read from headers: Pillow's getexif of a PNG without an eXIf chunk before its
    pixels decoded each whole picture (review29: 25 ms per 1080p frame, every image of an ffmpeg PNG folder before the
    first frame ran). A PNG whose eXIf chunk comes first is still turned upright."""
    from PIL import Image, PngImagePlugin

    synth.write_images(tmp_path / "seq", ["1.png", "2.png", "3.png"], height=24, width=40)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x24, shown 24x40
    Image.fromarray(synth.bar_frame(0, 24, 40)).save(tmp_path / "seq" / "4.png", exif=exif)  # eXIf before IDAT
    decoded: list[str] = []
    load = PngImagePlugin.PngImageFile.load

    def counted_load(image: PngImagePlugin.PngImageFile) -> object:
        decoded.append(image.filename)
        return load(image)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", counted_load)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    probe = reader.probe()
    assert (probe.width, probe.height) == (40, 24) and decoded == []
    assert [frame.shape for _, frame in reader] == [(24, 40, 3)] * 4
    assert reader.size_change == (3, (40, 24))  # 4.png, shown 24x40, is the odd one


def png_with_chunk_after_pixels(path: Path, kind: bytes, data: bytes) -> Path:
    """Insert the chunk ``kind`` holding ``data`` just before ``path``'s IEND chunk (behind its pixel data)."""
    import struct
    import zlib

    whole = path.read_bytes()
    assert whole[-12:-8] == struct.pack(">I", 0) and whole[-8:-4] == b"IEND"
    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(whole[:-12] + chunk + whole[-12:])
    return path


def png_decodes_counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the PNG files decoded from now on (Pillow's PNG `load`), in order."""
    from PIL import PngImagePlugin

    decoded: list[str] = []
    load = PngImagePlugin.PngImageFile.load

    def counted_load(image: PngImagePlugin.PngImageFile) -> object:
        decoded.append(Path(image.filename).name)
        return load(image)

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", counted_load)
    return decoded


def test_pngs_whose_exif_follows_their_pixels_are_sized_as_they_are_decoded(
    tmp_path: Path, synth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PNG whose eXIf chunk comes after its pixel data (IDAT) was sized from its header as stored, while decoding
    turns it upright (Pillow reads the chunks behind the pixels as it decodes): a folder of such photos took the
    stored size for the folder's, and every frame, turned upright, was squeezed back into it. The chunks behind the
    pixels are walked for its size; a PNG with none of the orientation's chunks there (a text comment) is still sized
    without decoding it."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x24, shown 24x40
    (tmp_path / "seq").mkdir()
    for name in ("1.png", "2.png", "4.png"):
        Image.fromarray(synth.bar_frame(0, 24, 40)).save(tmp_path / "seq" / name)
        png_with_chunk_after_pixels(tmp_path / "seq" / name, b"eXIf", exif.tobytes())
    synth.write_images(tmp_path / "seq", ["3.png"], height=24, width=40)
    png_with_chunk_after_pixels(tmp_path / "seq" / "3.png", b"tEXt", b"Comment\x00made by hand")
    with Image.open(tmp_path / "seq" / "1.png") as late:
        assert "exif" not in late.info and late.size == (40, 24)  # as the header says
    decoded = png_decodes_counted(monkeypatch)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    probe = reader.probe()
    assert (probe.width, probe.height) == (24, 40)
    assert sorted(decoded) == ["1.png", "2.png", "4.png"]  # 3.png sized from its header
    assert [frame.shape for _, frame in reader] == [(40, 24, 3)] * 4
    assert reader.size_change == (2, (24, 40))  # 3.png, with no orientation, is the odd one


def test_pngs_whose_orientation_is_in_a_text_chunk_before_their_pixels_are_sized_as_decoded(
    tmp_path: Path, synth, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PNG whose orientation is in an XMP text chunk (tiff:Orientation) or ImageMagick's "Raw profile type exif"
    before its pixels was sized as stored (only an eXIf chunk there was looked at), while decoding turns it upright:
    a folder of them took the stored size and squeezed every frame back into it. Its size is now the decoded one,
    read without decoding it; XMP does not override an EXIF orientation, as in Pillow."""
    from PIL import Image, ImageOps, PngImagePlugin

    from clipvis.cli.video_io.images import shown_size

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x24, shown 24x40
    raw = f"\nexif\n{len(exif.tobytes()):8d}\n{exif.tobytes().hex()}\n"
    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description tiff:Orientation="{}"/></rdf:RDF></x:xmpmeta>'
    upright_exif = Image.Exif()
    upright_exif[0x0112] = 1
    upright_raw = f"\nexif\n{len(upright_exif.tobytes()):8d}\n{upright_exif.tobytes().hex()}\n"
    (tmp_path / "seq").mkdir()
    chunks = {"1.png": [("zTXt", "Raw profile type exif", raw)],
              "2.png": [("iTXt", "XML:com.adobe.xmp", xmp.format(6))],
              "3.png": [("tEXt", "XML:com.adobe.xmp", xmp.format(8))],
              "4.png": [("tEXt", "Raw profile type exif", upright_raw), ("iTXt", "XML:com.adobe.xmp", xmp.format(6))]}
    for name, texts in chunks.items():
        info = PngImagePlugin.PngInfo()
        for kind, key, text in texts:
            if kind == "iTXt":
                info.add_itxt(key, text)
            else:
                info.add_text(key, text, zip=kind == "zTXt")
        Image.fromarray(synth.bar_frame(0, 24, 40)).save(tmp_path / "seq" / name, pnginfo=info)
    decoded = png_decodes_counted(monkeypatch)
    [source] = discover_inputs([str(tmp_path / "seq")])
    reader = open_reader(source)
    probe = reader.probe()
    assert (probe.width, probe.height) == (24, 40) and decoded == []
    assert [frame.shape for _, frame in reader] == [(40, 24, 3)] * 4
    assert reader.size_change == (3, (24, 40))  # 4.png: its EXIF says upright, its XMP aside
    for name in chunks:  # as Pillow's own turning decodes them
        with Image.open(tmp_path / "seq" / name) as image:
            assert shown_size(image) == np.asarray(ImageOps.exif_transpose(image)).shape[:2], name


def test_image_folder_with_corrupt_image_fails_clearly(tmp_path: Path, synth) -> None:
    synth.write_images(tmp_path / "seq", ["1.jpg"])
    (tmp_path / "seq" / "2.jpg").write_text("not an image")
    [source] = discover_inputs([str(tmp_path / "seq")])
    with pytest.raises(VideoReadError, match=r"frame 2.jpg: not an image or corrupt"):
        list(open_reader(source))


def test_open_reader_refuses_failed_sources(tmp_path: Path) -> None:
    [source] = discover_inputs([str(tmp_path / "missing.mp4")])
    with pytest.raises(VideoReadError, match="no such file"):
        open_reader(source)


def test_background_decoder_batches(media: dict[str, Path], synth) -> None:
    with BackgroundDecoder(VideoReader(media["h264"], stride=2), batch_size=4) as decoder:
        batches = list(decoder)
    assert [b.frame_indices for b in batches] == [[0, 2, 4, 6], [8, 10]]
    assert batches[0].frames.shape == (4, 48, 64, 3) and batches[0].frames.dtype == np.uint8
    assert [synth.bar_index(f) for f in batches[1].frames] == [8, 10]


def test_background_decoder_propagates_read_errors(media: dict[str, Path]) -> None:
    received = 0
    with pytest.raises(VideoReadError, match="truncated or corrupt"):
        with BackgroundDecoder(VideoReader(media["truncated_faststart"]), batch_size=8) as decoder:
            for batch in decoder:
                received += len(batch)
    assert received > 0


def test_background_decoder_propagates_other_exceptions() -> None:
    def frames():
        yield 0, np.zeros((2, 2, 3), np.uint8)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with BackgroundDecoder(frames(), batch_size=1) as decoder:
            list(decoder)


def test_background_decoder_bounds_memory_and_stops_on_early_exit() -> None:
    produced = itertools.count()
    closed = threading.Event()
    filled = threading.Event()  # the producer read every frame the bound lets it: it now waits for room
    overran = threading.Event()  # it read past the bound

    def endless():
        try:
            for index in produced:
                if index == 3 * 4 - 1:  # consumed batch + 2 queued + the one being filled, then a put that blocks
                    filled.set()
                elif index > 3 * 4:  # past that, and the one frame read ahead
                    overran.set()
                yield index, np.zeros((4, 4, 3), np.uint8)
        finally:
            closed.set()

    decoder = BackgroundDecoder(endless(), batch_size=3, max_queued_batches=2)
    with decoder:
        batches = iter(decoder)  # keep the generator alive: dropping it would stop the thread
        first = next(batches)
        assert filled.wait(10)  # the producer ran ahead as far as it may
        assert not overran.wait(0.3)  # and, given every chance, no further
        assert decoder.is_alive
        made = next(produced)
        assert first.frame_indices == [0, 1, 2]
        # consumed batch + 2 queued + 1 being filled/blocked, plus one frame read ahead
        assert made <= 3 * 4 + 1
    assert closed.wait(2.0) and not decoder.is_alive


def test_a_decoder_thread_that_cannot_start_is_the_error_said(monkeypatch) -> None:
    """A container's pids limit (or `ulimit -u`): the thread's start failed, then closing joined the thread that never
    started, and the input's error was "cannot join thread before it is started", the cause lost."""
    def refuse(thread: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    decoder = BackgroundDecoder(iter([(0, np.zeros((4, 4, 3), np.uint8))]), batch_size=1)
    with pytest.raises(RuntimeError, match="^can't start new thread$"):
        with decoder:
            pass
    decoder.close()  # nothing to join: no error


def test_background_decoder_close_without_iterating_does_not_hang(media: dict[str, Path]) -> None:
    decoder = BackgroundDecoder(VideoReader(media["long_faststart"]), batch_size=2, max_queued_batches=1)
    with decoder:
        time.sleep(0.05)
    assert not decoder.is_alive


def test_copy_of_video_with_other_extension_is_still_read(media: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "clip.bin"
    shutil.copy(media["h264"], copy)
    assert len(list(VideoReader(copy))) == 12
    named_like_an_image = tmp_path / "clip.jpg"  # named explicitly, "the decoder decides" (it was "not an image")
    shutil.copy(media["h264"], named_like_an_image)
    [source] = discover_inputs([str(named_like_an_image)])
    assert len(read_all(open_reader(source))[0]) == 12


def test_abandoned_iteration_stops_the_thread(media: dict[str, Path]) -> None:
    decoder = BackgroundDecoder(VideoReader(media["long_faststart"]), batch_size=2, max_queued_batches=1)
    for _ in decoder:
        break  # no context manager: leaving the loop closes the generator, which stops the thread
    decoder._thread.join(2.0)
    assert not decoder.is_alive


def test_quieting_pillows_metadata_warnings_leaves_a_warning_shown_once_shown_once() -> None:
    """Adding a warning filter resets which warnings Python has shown once: called per frame (training's reader),
    it made any such warning repeat at every frame."""
    import warnings

    from clipvis.cli.video_io import quiet_metadata_warnings

    def warn() -> None:
        warnings.warn("shown once", UserWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        quiet_metadata_warnings()  # a reader starts
        for _ in range(3):
            warn()
            quiet_metadata_warnings()
    assert len([w for w in shown if "shown once" in str(w.message)]) == 1


def test_a_multi_picture_jpeg_is_one_still_its_first_picture(tmp_path: Path) -> None:
    """Phones' photos with a gain map (MPO: Pillow counts their pictures as frames) failed a folder of frames ("is an
    animation (2 frames)"), and one alone read the small second picture as frame 1 ("frame 1 is (16, 20, 3)")."""
    from PIL import Image

    folder = tmp_path / "seq"
    folder.mkdir()
    primary = Image.new("RGB", (40, 32), (200, 10, 10))
    primary.save(folder / "2.jpg", format="MPO", save_all=True, append_images=[Image.new("RGB", (20, 16), (0, 0, 0))])
    Image.new("RGB", (40, 32), (10, 200, 10)).save(folder / "1.jpg")
    with Image.open(folder / "2.jpg") as opened:
        assert opened.format == "MPO" and opened.n_frames == 2  # what the reader meets
    [source] = discover_inputs([str(folder)])
    indices, frames = read_all(open_reader(source))
    assert indices == [0, 1] and [f.shape for f in frames] == [(32, 40, 3)] * 2 and frames[1][0, 0, 0] > 150
    [alone] = discover_inputs([str(folder / "2.jpg")])
    indices, frames = read_all(open_reader(alone))
    assert indices == [0] and frames[0].shape == (32, 40, 3)


def test_a_broken_link_frame_fails_its_video_naming_the_link(tmp_path: Path, synth) -> None:
    synth.write_images(tmp_path / "seq", ["1.jpg", "2.jpg"])
    (tmp_path / "seq" / "3.jpg").symlink_to(tmp_path / "gone.jpg")
    [source] = discover_inputs([str(tmp_path / "seq")])
    with pytest.raises(VideoReadError, match=r"frame 3.jpg: a symbolic link to .*gone.jpg, which does not exist"):
        list(open_reader(source))
