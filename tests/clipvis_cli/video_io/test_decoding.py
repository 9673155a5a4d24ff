"""The PyAV helpers (clipvis.cli.video_io.decoding): frame rates, rotation and mirrors, the stream read, a damaged
start, on synthetic files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from clipvis.cli.video_io import VideoReader, VideoReadError

from .conftest import read_all


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
