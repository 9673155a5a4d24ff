"""PyAV helpers the readers share: opening a file, choosing its video stream, its rate and frame count, a file's
undecodable lead and last packet, and frames to upright RGB arrays (the display matrix's rotation and mirror)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.error
import av.video.reformatter
import numpy as np

from clipvis.cli.video_io.probe import _MAX_AVERAGE_FPS, _MAX_PLAUSIBLE_FPS, DEFAULT_FPS, VideoReadError
from clipvis.cli.video_io.stream_health import _declared_seconds, _duration_from_zero, _StreamHealth


def _demuxed_frames(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                    health: _StreamHealth) -> Iterator[av.VideoFrame]:
    """``container.decode(stream)``, with the packets in view: their count and corrupt flags go to ``health``."""
    for packet in container.demux(stream):
        if packet.size or packet.pts is not None:  # not the empty packet that flushes the decoder at the end
            health.saw_packet(packet)
        yield from packet.decode()


def _undecodable_lead(path: Path, lookahead: int = 16) -> int | None:
    """How many frames (in presentation order) come before the first that decodes when the packets the decoder
    rejects are skipped: a file whose first keyframe is damaged loses the frames up to the next one. None when no
    frame decodes (or the file cannot be read again). Reads ``lookahead`` packets past the first decoded frame, for
    frames that come before it in presentation order but after it in the file (B-frames)."""
    times: list[int] = []
    first: int | None = None
    try:
        with _open_input(path) as container:
            stream = video_stream(container)
            if stream is None:
                return None
            stream.thread_type = "SLICE"
            for packet in container.demux(stream):
                if packet.pts is not None:
                    times.append(int(packet.pts))
                if first is not None:
                    lookahead -= 1
                    if lookahead < 0:
                        break
                    continue
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    continue
                if frames:
                    first = frames[0].pts if frames[0].pts is not None else -1
            if first is None:  # frames the decoder holds back to the end (a short file)
                frames = stream.codec_context.decode(None)
                first = (frames[0].pts if frames[0].pts is not None else -1) if frames else None
    except av.error.FFmpegError:
        pass
    if first is None:
        return None
    return sum(1 for time in times if time < first) if first >= 0 else 0


def _last_packet_end(path: Path) -> float | None:
    """The latest end time, in seconds, of any packet of any stream of the file (read without decoding), or None
    when the file gives none."""
    end: float | None = None
    try:
        with _open_input(path) as container:
            for packet in container.demux():
                if packet.pts is None or packet.time_base is None:
                    continue
                time = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                end = time if end is None else max(end, time)
    except av.error.FFmpegError:
        pass  # a cut file may end in a broken packet: what was read before it counts
    return end


# AV_DISPOSITION_ATTACHED_PIC (cover art: an MP3's or M4A's album picture, an MKV's or MP4's poster) and
# AV_DISPOSITION_TIMED_THUMBNAILS: video streams that are no video of the file
_NOT_THE_VIDEO = 0x0400 | 0x0800


def video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream of a file to read, as FFmpeg's own tools pick it (``av_find_best_stream``: the default one,
    else the one with most frames seen, the highest bit rate), among its video streams that are not a cover picture
    or thumbnails. None when there is none (an audio file with its album art)."""
    streams = [stream for stream in container.streams.video
               if not int(getattr(stream, "disposition", 0) or 0) & _NOT_THE_VIDEO]
    if not streams:
        return None
    try:
        best = container.streams.best("video")
    except (AttributeError, ValueError, av.error.FFmpegError):  # a PyAV without it
        best = None
    return next((stream for stream in streams if best is not None and stream.index == best.index), streams[0])


def _chosen_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    stream = video_stream(container)
    if stream is None:
        raise VideoReadError(path, "no video stream")
    return stream


def _open_input(path: Path) -> av.container.InputContainer:
    try:  # PyAV <= 18: do not fail on tags that are not UTF-8
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except TypeError:  # PyAV >= 19 removed the argument (tags are always decoded leniently)
        return av.open(str(path), mode="r")


def video_pixel_format(path: Path) -> str | None:
    """The pixel format FFmpeg gives the video stream of ``path`` (``yuv420p``, ``yuv420p10le``, ``yuv444p``), from
    its header, nothing decoded; None where the file cannot be opened or says none."""
    try:
        with _open_input(path) as container:
            stream = video_stream(container)
            return (stream.codec_context.pix_fmt or None) if stream is not None else None
    except (av.error.FFmpegError, OSError, ValueError, AttributeError):
        return None


def _as_fraction(value: object) -> Fraction | None:
    """A PyAV rational (Fraction up to PyAV 18, AVRational from 19, possibly None or 0/1) as a Fraction."""
    numerator = getattr(value, "numerator", None)
    denominator = getattr(value, "denominator", None)
    if not numerator or not denominator:
        return None
    return Fraction(int(numerator), int(denominator))


_UNSPECIFIED_COLORSPACE = 2  # FFmpeg's AVCOL_SPC_UNSPECIFIED: a stream that does not say its YUV matrix


def plays_as_bt709(height: int, width: int) -> bool:
    """Whether players take an untagged YUV picture of ``height`` x ``width`` (as stored) for BT.709 rather than
    BT.601: more than 576 lines (PAL's SD height) or at least 1280 columns, mpv's and VLC's rule for HD."""
    return height > 576 or width >= 1280


class _RgbConverter:
    """Decoded frames of one pass over a stream as upright RGB arrays, without tying anything to the frames.

    ``frame.to_ndarray`` gives every frame a converter of its own (an FFmpeg scaler with its own worker threads),
    and ``frame.side_data`` (the display matrix) makes a reference cycle of the frame: such a frame, its picture and
    its scaler's threads lived until Python's garbage collector came by (threads piled up over a batch of videos).
    Here one scaler serves the whole pass, released with the converter, and the display matrix is read on the first
    frame and again only when PyAV's rotation reading (``frame.rotation``, no cycle) changes (a display matrix that
    changes its mirror alone mid-stream is not followed)."""

    def __init__(self, as_players_show: bool = False) -> None:
        """``as_players_show``: an untagged frame of HD size (``plays_as_bt709``) is converted with BT.709's matrix,
        as players show it, rather than FFmpeg's default (BT.601's) which the model's frames keep."""
        self._reformatter = av.video.reformatter.VideoReformatter()
        self._rotation: object = None  # the last frame's ``frame.rotation`` (None: read the matrix)
        self._orientation = _UPRIGHT
        self._as_players_show = as_players_show

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if (self._as_players_show and frame.colorspace == _UNSPECIFIED_COLORSPACE
                and plays_as_bt709(frame.height, frame.width)):
            image = self._reformatter.reformat(frame, format="rgb24", src_colorspace="ITU709").to_ndarray()
        else:
            image = self._reformatter.reformat(frame, format="rgb24").to_ndarray()
        orientation = self._orientation_of(frame)
        return orientation.apply(image) if orientation != _UPRIGHT else image

    def _orientation_of(self, frame: av.VideoFrame) -> _Orientation:
        rotation = getattr(frame, "rotation", None)
        if rotation is None or rotation != self._rotation:
            self._orientation = _display_orientation(frame)
            self._rotation = rotation
        return self._orientation


def _to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """One frame as an upright RGB array (a converter of its own, released on return)."""
    return _RgbConverter()(frame)


@dataclass(frozen=True)
class _Orientation:
    """How a decoded picture is turned for display, as a signed permutation of its axes: transposed first (a quarter
    turn, with or without a mirror), then its rows and / or columns reversed."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def apply(self, image: np.ndarray) -> np.ndarray:
        if self.transpose:
            image = image.swapaxes(0, 1)
        if self.flip_rows:
            image = image[::-1]
        if self.flip_cols:
            image = image[:, ::-1]
        return np.ascontiguousarray(image)

    def rotation_and_mirror(self) -> tuple[int, bool]:
        """The same as a counter-clockwise rotation (0, 90, 180, 270 degrees) and then, or not, a left-right mirror."""
        probe = np.arange(6).reshape(2, 3)
        shown = self.apply(probe)
        for quarter_turns in range(4):
            turned = np.rot90(probe, quarter_turns)
            for mirror in (False, True):
                if np.array_equal(turned[:, ::-1] if mirror else turned, shown):
                    return quarter_turns * 90, mirror
        return 0, False  # unreachable: every signed permutation of two axes is one of the eight


_UPRIGHT = _Orientation()


def _display_orientation(frame: av.VideoFrame) -> _Orientation:
    """How a decoded frame is shown, from its display matrix (phones record upright video as rotated pictures; an
    editor's mirror adds a flip), snapped to quarter turns and mirrors as FFmpeg's autorotate does (ffmpeg >= 6.1 and
    players apply the flips too). The matrix maps a picture's pixel (p, q), y down, to (a p + c q, b p + d q)."""
    matrix = _display_matrix(frame)
    if matrix is None:  # PyAV without side data: its rotation alone
        quarter_turns = _rotation_degrees(frame) // 90
        return (_UPRIGHT, _Orientation(True, True, False), _Orientation(False, True, True),
                _Orientation(True, False, True))[quarter_turns]
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]
    if abs(a) + abs(d) >= abs(b) + abs(c):  # x stays x: at most flips
        return _Orientation(False, flip_rows=d < 0, flip_cols=a < 0)
    return _Orientation(True, flip_rows=b < 0, flip_cols=c < 0)  # x becomes y: a quarter turn


def _display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The frame's display matrix (9 int32, 16.16 and 2.30 fixed point, row-major: a b u / c d v / x y w), or None."""
    try:
        for item in getattr(frame, "side_data", None) or ():
            if "DISPLAYMATRIX" in str(getattr(item, "type", "")).upper():
                raw = bytes(item)
                return struct.unpack("=9i", raw[:36]) if len(raw) >= 36 else None
    except (TypeError, ValueError, AttributeError, struct.error):
        return None
    return None


def _rotation_degrees(frame: av.VideoFrame) -> int:
    """Counter-clockwise display rotation of a decoded frame, snapped to 0/90/180/270 (PyAV's reading of the display
    matrix, which takes a mirror for a half turn: only where the matrix itself cannot be read)."""
    rotation = getattr(frame, "rotation", 0)  # the display matrix; PyAV versions without it: no rotation
    if not rotation:
        return 0
    return (round(rotation / 90) * 90) % 360


def _stream_fps(stream: av.video.stream.VideoStream) -> tuple[Fraction, bool]:
    average = _as_fraction(stream.average_rate)
    if average is not None and 0 < average <= _MAX_AVERAGE_FPS:
        return average, True
    for value in (stream.guessed_rate, stream.base_rate):
        rate = _as_fraction(value)
        if rate is not None and 0 < rate < _MAX_PLAUSIBLE_FPS:
            return rate, True
    return DEFAULT_FPS, False


def _stream_frame_count(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, fps: Fraction
) -> int | None:
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    seconds: float | None = None
    time_base = _as_fraction(stream.time_base)
    if stream.duration and time_base:
        seconds = float(stream.duration * time_base)
        if stream.start_time and _duration_from_zero(container):  # an ASF file starting late declares its end
            seconds -= float(stream.start_time * time_base)
    elif container.duration:  # a Matroska file starting late declares its end, not its length
        seconds = _declared_seconds(container, container.start_time / av.time_base if container.start_time else 0.0)
    if seconds is None or seconds <= 0:
        return None
    return max(1, round(seconds * float(fps)))
