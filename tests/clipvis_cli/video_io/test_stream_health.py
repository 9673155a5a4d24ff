"""Truncation and damage detection, frame times (clipvis.cli.video_io.stream_health), through the readers, on synthetic
files."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from clipvis.cli.video_io import VideoReader, VideoReadError

from .conftest import read_all


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
