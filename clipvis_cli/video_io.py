"""Video decoding for `clipvis segment`: readers for video files and image folders, and a background decoder.

Readers yield `(frame_index, frame)` with `frame` an H×W×3 uint8 RGB array, `frame_index` the 0-based index of
the frame in decode order (every frame counts, whatever its timestamp: variable-frame-rate videos are read
frame by frame). `stride` keeps every Nth frame (indices 0, N, 2N, …), `max_frames` caps how many are yielded.

Video files are decoded with PyAV: the video stream FFmpeg picks, cover art and thumbnails aside. Rotation metadata
(the display matrix, e.g. phone videos shot upright) is applied, mirror flips in it too (as ffmpeg >= 6.1 and
players do), so frames and sizes are what a player shows. Every PyAV /
FFmpeg failure becomes a `VideoReadError` whose `str()` is one line naming the file and the cause, and so does a
file that decodes without an error but not whole: cut short (it ends well before the duration its header declares,
counted from its first frame's time, or an AVI holds fewer frames than its header counts), or damaged so that frames
are lost mid-way (the frames' times jump where FFmpeg flagged corrupt data: `_StreamHealth`): every later frame would
get a lost frame's number. Damage is said as soon as it is found, not after the last frame.

`BackgroundDecoder` runs a reader in a daemon thread and hands out `FrameBatch`es through a bounded queue.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import queue
import struct
import threading
import warnings
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import av.error
import av.video.reformatter
import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from clipvis.cli.frame_numbers import increasing_from_zero
from clipvis.cli.inputs import IMAGE_EXTENSIONS, VideoSource
from clipvis.cli.messages import PathError, error_reason, path_text, shown_path
from clipvis.cli.results import synthetic_file_names

DEFAULT_FPS = Fraction(30)
# A guessed or base rate of 1000 or more is a container's time base (Matroska's 1/1000: "1k"), not the video's; an
# average rate, which FFmpeg measures from the frames, may be a high-speed camera's 1000 frames/s (it was taken as
# unknown: 30 frames/s in ytvis.json, and Label Studio kept one frame in ten)
_MAX_PLAUSIBLE_FPS = 1000
_MAX_AVERAGE_FPS = 10_000
_AVI_LEADING_FRAMES = 4  # an AVI's first decoded frame comes at most this many chunks in (B-frame delay)
# Corrupt data within this many frame durations of a gap in the frames' times is what lost its frames (B-frames put
# a damaged packet's frame a few frames from where the loss shows; a parser may flag the packet before the one cut)
_DAMAGE_REACH_FRAMES = 4
_RECENT_EVENTS = 64  # the gaps and corrupt data kept to pair up: a gap and its damage come out close together


class VideoReadError(PathError):
    """An input cannot be decoded. `str(error)` is `<path>: <reason>` on one line."""


@dataclass(frozen=True)
class VideoProbe:
    """What is known about an input before decoding it fully.

    `width`/`height` are the displayed size (after rotation). `fps` is the average frame rate (DEFAULT_FPS
    when the file does not say; then `fps_known` is False). `frame_count` is the container's frame count or
    an estimate from the duration (None when neither is available; `frame_count_estimated` says which: an MPEG-PS
    file starting half a second late is counted that much short). `rotation` is the counter-clockwise
    rotation in degrees (0, 90, 180, 270) applied to every decoded frame, `mirrored` whether a left-right mirror
    follows it (a display matrix with a flip: a vertical flip is a half turn and a mirror).
    """

    path: Path
    width: int
    height: int
    fps: Fraction
    fps_known: bool
    frame_count: int | None
    rotation: int = 0
    codec: str = ""
    pixel_aspect: Fraction | None = None  # width/height of a pixel when not square (anamorphic video), displayed
    mirrored: bool = False  # a left-right mirror applied after the rotation (a flip in the display matrix)
    frame_count_estimated: bool = False  # frame_count from the duration x the rate, not from the container's count
    duration: float | None = None  # seconds from the first frame, as the container's header declares (None: none)

    def processed_frame_count(self, stride: int = 1, max_frames: int | None = None) -> int | None:
        """Estimated number of frames a reader with this stride / max_frames yields (None if unknown)."""
        if self.frame_count is None:
            return max_frames
        count = -(-self.frame_count // stride)
        return count if max_frames is None else min(count, max_frames)


class FrameReader(Protocol):
    """What `open_reader` returns: a re-iterable source of (frame_index, RGB frame)."""

    path: Path
    stride: int
    max_frames: int | None
    # Set by each iteration: per frame yielded, its time (s) in the video where known, else empty.
    frame_times: Sequence[float]
    # Set by each iteration: the first frame of another size than the first (resized to the first frame's size), as
    # (its index, (height, width)); None when every frame had one size.
    size_change: tuple[int, tuple[int, int]] | None
    # How a size change came about, for the warning: "... were resized" (after "frame X is WxH, not ...: ").
    size_change_cause: str

    def probe(self) -> VideoProbe: ...

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]: ...

    def frame_file_names(self, stem: str, frame_indices: Sequence[int]) -> list[str]: ...

    def frame_label(self, index: int) -> str:
        """How messages name frame ``index`` (`size_change`'s): "frame 12", "frame b.jpg"."""
        ...


def _check_sampling(stride: int, max_frames: int | None) -> None:
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")


class VideoReader:
    """Decode a video file with PyAV. Iterating opens the file afresh, so a reader can be iterated twice
    (e.g. once for the model, once for the overlay)."""

    size_change_cause = "the video changes size mid-stream, and its frames from there on were resized"

    def __init__(self, path: Path | str, stride: int = 1, max_frames: int | None = None, threads: int = 0,
                 frames: Sequence[int] | None = None) -> None:
        """``frames``: only these frame indices, increasing (a GT's frames that are no regular stride: a corrected
        file with a frame deleted); it stands for ``stride`` and ``max_frames``."""
        _check_sampling(stride, max_frames)
        if frames is not None:
            frames = [int(i) for i in frames]
            if not increasing_from_zero(frames):
                raise ValueError("frames must be increasing frame indices from 0, at least one")
            stride, max_frames = 1, len(frames)
        self.path = Path(path)
        self.stride = stride
        self.max_frames = max_frames
        self.frames = frozenset(frames) if frames is not None else None
        self.threads = threads
        self._probe: VideoProbe | None = None
        self.frame_times: Sequence[float] = ()  # per frame yielded by the last iteration: its time (s) in the video
        # The last iteration's first frame of another size than the first (a resolution change mid-stream, resized
        # to the first frame's size): (its index, (height, width)); None when every frame had one size.
        self.size_change: tuple[int, tuple[int, int]] | None = None

    def probe(self) -> VideoProbe:
        """Open the file and decode its first frame (for size and rotation). Raises VideoReadError."""
        if self._probe is None:
            self._probe = self._read_probe()
        return self._probe

    def frame_file_names(self, stem: str, frame_indices: Sequence[int]) -> list[str]:
        """Synthetic YouTube-VIS frame names `<stem>/<index:05d>.jpg` (`synthetic_file_names`)."""
        return synthetic_file_names(stem, frame_indices)

    def frame_label(self, index: int) -> str:
        return f"frame {index}"

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        container, stream = self._open()
        decoded = 0
        yielded = 0
        shown = self.probe()
        first_size = (shown.height, shown.width)  # frame 0's, whichever frame comes first here
        first_coded: tuple[int, int] | None = None  # the first decoded frame's stored size
        quarter_turn = shown.rotation in (90, 270)  # sizes as shown: stored ones swapped
        self.size_change = None
        start = container.start_time / av.time_base if container.start_time else 0.0  # MPEG-TS starts later
        declared = _declared_seconds(container, start)  # the header's word, from the start
        last_time: float | None = None
        ended = False
        health = _StreamHealth(_stream_fps(stream)[0], _TransportStreamStarts.of(self.path, container, stream))
        to_rgb = _RgbConverter()
        times = array("d")  # seconds from the start, per yielded frame: the last iteration's in `frame_times`
        self.frame_times = times
        try:
            frames = _demuxed_frames(container, stream, health)
            while self.max_frames is None or yielded < self.max_frames:
                try:
                    frame = next(frames)
                except StopIteration:
                    ended = True
                    break
                except av.error.FFmpegError as error:
                    raise self._decode_error(decoded, error) from error
                index = decoded
                decoded += 1
                last_time = frame.time if frame.time is not None else last_time
                health.saw(frame)
                if health.damage_settled:  # said now, not once the model has run through the rest of the video
                    raise self._damage_error(health, start)
                coded = (frame.height, frame.width)
                if first_coded is None:
                    first_coded = coded
                elif coded != first_coded and self.size_change is None:  # frames skipped (stride) count too
                    self.size_change = (index, coded[::-1] if quarter_turn else coded)
                if index % self.stride or (self.frames is not None and index not in self.frames):
                    continue
                image = resized_to(to_rgb(frame), first_size)  # resolution change mid-stream: keep one size
                yielded += 1
                times.append(frame.time - start if frame.time is not None else math.nan)
                yield index, image
            header_frames = int(stream.frames or 0)
            is_avi = "avi" in container.format.name.split(",")
        finally:
            container.close()
        if decoded == 0:
            raise VideoReadError(self.path, "no decodable frames")
        if health.gap is not None:
            raise self._damage_error(health, start)
        if is_avi and health.first_pts is not None and health.first_pts > _AVI_LEADING_FRAMES:
            # An AVI's first chunk is frame 0 (B-frames delay the first decoded one by a frame or two): a damaged
            # index that lost the first keyframe leaves later frames, which would take the lost ones' numbers.
            raise VideoReadError(
                self.path, f"damaged: its first {health.first_pts} frames cannot be decoded, so the frames after "
                           "would be numbered wrongly"
            )
        if ended and is_avi and health.packets and health.last_end < header_frames:
            # An AVI's header counts its frames, and a packet's pts is its chunk's number (empty chunks, which a
            # variable-rate capture writes for repeated frames, count but are never read): a file cut short ends
            # at a chunk well before the count, and still plays to its cut without an error.
            raise VideoReadError(
                self.path, f"truncated: the file ends at frame {health.last_end} of the {header_frames} its header "
                           "declares"
            )
        # the last frame is shown for a frame's time too (FLV and ASF packets carry no duration: a slideshow's
        # last frame starts a whole second before the end its header declares)
        shown = max(1 / float(health.fps), health.last_step)
        if (ended and decoded > 1 and declared is not None and last_time is not None  # a still shows as long as
                and _ends_early(last_time - start + shown, declared)):  # its header says: no end to tell from
            # The decoder ended cleanly well before the duration the header declares (a file cut at a packet
            # boundary: Matroska, WebM, MPEG-TS). A file whose other streams (audio) run past the video is fine.
            end = _last_packet_end(self.path)
            if end is not None and _ends_early(end - start + shown, declared):
                raise VideoReadError(
                    self.path, f"truncated: the file ends after {decoded} frames, at {end - start:.1f} s of the "
                               f"{declared:.1f} s its header declares"
                )

    def _damage_error(self, health: _StreamHealth, start: float) -> VideoReadError:
        """Damaged data the demuxer skipped over (``health.gap``): the frames after it would get the numbers of the
        lost ones."""
        before, after = health.gap or (start, start)
        return VideoReadError(
            self.path, f"damaged: no frames between {before - start:.1f} s and {after - start:.1f} s (FFmpeg found "
                       "corrupt data there), so the frames after would be numbered wrongly"
        )

    def _decode_error(self, decoded: int, error: BaseException) -> VideoReadError:
        reason = error_reason(error)
        if decoded == 0:
            lost = _undecodable_lead(self.path) if isinstance(error, av.error.InvalidDataError) else None
            if lost is None:
                return VideoReadError(self.path, f"no decodable frames ({reason})")
            # Damaged data where the video begins (its first keyframe): what follows may decode, but as frame 0 on.
            lead = f"its first {lost} frames" if lost > 1 else "its first frame" if lost else "its first frames"
            return VideoReadError(
                self.path, f"damaged: {lead} cannot be decoded ({reason}), so the frames after would be numbered "
                           "wrongly"
            )
        reason = f"truncated or corrupt: decoding failed after {decoded} frames ({reason})"
        return VideoReadError(self.path, reason)

    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
        path = self.path
        if path.is_dir():
            raise VideoReadError(path, "is a directory, not a video file")
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise VideoReadError(path, "no such file or directory") from None
        except OSError as error:
            raise VideoReadError(path, f"cannot read ({error_reason(error)})") from None
        if size == 0 and path.is_file():
            raise VideoReadError(path, "zero bytes (empty file)")
        try:
            container = _open_input(path)
        except av.error.InvalidDataError:
            raise VideoReadError(path, "not a video or corrupt (FFmpeg cannot read it)") from None
        except av.error.EOFError:
            raise VideoReadError(path, "no decodable frames (the file ends before any video data)") from None
        except av.error.FFmpegError as error:
            raise VideoReadError(path, f"cannot open ({error_reason(error)})") from None
        except OSError as error:
            raise VideoReadError(path, f"cannot open ({error_reason(error)})") from None
        stream = video_stream(container)
        if stream is None:  # none, or only a cover picture (an MP3's album art)
            has_audio = bool(container.streams.audio)
            container.close()
            raise VideoReadError(path, "no video stream (audio only)" if has_audio else "no video stream")
        # Slice threading only: with FFmpeg's frame threading a decode error (e.g. a truncated file) is
        # swallowed and the video silently ends early. Single-stream decoding is far faster than the model.
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = self.threads
        return container, stream

    def _read_probe(self) -> VideoProbe:
        container, stream = self._open()
        try:
            fps, fps_known = _stream_fps(stream)
            frame_count = _stream_frame_count(container, stream, fps)
            start = container.start_time / av.time_base if container.start_time else 0.0
            duration = _declared_seconds(container, start)
            estimated = frame_count is not None and not (stream.frames and stream.frames > 0)
            codec = stream.codec_context.name
            try:
                first = next(container.decode(stream))
            except StopIteration:
                raise VideoReadError(self.path, "no decodable frames") from None
            except av.error.FFmpegError as error:
                raise self._decode_error(0, error) from error
            orientation = _display_orientation(first)
            rotation, mirrored = orientation.rotation_and_mirror()
            width, height = first.width, first.height
            aspect = _as_fraction(stream.sample_aspect_ratio)
            if orientation.transpose:
                width, height = height, width
                aspect = 1 / aspect if aspect else aspect
        finally:
            container.close()
        aspect = aspect if aspect and aspect != 1 else None
        return VideoProbe(self.path, width, height, fps, fps_known, frame_count, rotation, codec, aspect, mirrored,
                          estimated, duration)


class ImageFolderReader:
    """Read a list of image files (an image-folder video) as RGB frames of the first frame's size: an image of another
    size (a photo turned by its EXIF orientation among others that are not) is resized to it, as a video that changes
    size mid-stream is (`size_change`).

    EXIF orientation is applied. `fps` is the rate the frames are assumed to have (default 30).
    """

    size_change_cause = "the images differ in size, and each image of another size was resized"

    def __init__(
        self,
        frame_files: Sequence[Path | str],
        stride: int = 1,
        max_frames: int | None = None,
        fps: float | Fraction = DEFAULT_FPS,
        path: Path | str | None = None,
    ) -> None:
        _check_sampling(stride, max_frames)
        self.frame_files = [Path(p) for p in frame_files]
        if path is None:
            path = self.frame_files[0].parent if self.frame_files else Path()
        self.path = Path(path)
        self.stride = stride
        self.max_frames = max_frames
        self.fps = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
        self._probe: VideoProbe | None = None
        self._animated: tuple[int, Fraction, list[float]] | tuple[()] | None = None  # () once known: no animation
        self.frame_times: Sequence[float] = ()  # an animation's, per frame yielded by the last iteration
        # The last iteration's first frame of another size than the first (resized to the first frame's size): (its
        # index in `frame_files`, (height, width)); None when every frame read had one size (`VideoReader`'s too).
        self.size_change: tuple[int, tuple[int, int]] | None = None

    def probe(self) -> VideoProbe:
        if self._probe is None:
            quiet_metadata_warnings()
            if not self.frame_files:
                raise VideoReadError(self.path, "no image frames")
            height, width = self._load(self.frame_files[0]).shape[:2]
            count, fps = len(self.frame_files), self.fps
            animation = self._animation()
            if animation is not None:
                count, fps, _ = animation
            self._probe = VideoProbe(self.path, width, height, fps, True, count, 0, "image")
        return self._probe

    def frame_file_names(self, stem: str, frame_indices: Sequence[int]) -> list[str]:
        """`<stem>/<original image name>` for each processed frame (an animation's: `<stem>/<index:05d>.jpg`)."""
        if self._animation() is not None:
            return synthetic_file_names(stem, frame_indices)
        return [f"{stem}/{path_text(self.frame_files[index].name)}" for index in frame_indices]

    def frame_label(self, index: int) -> str:
        """An image of the list by its file name (a photo EXIF turned upright among others)."""
        return f"frame {path_text(self.frame_files[index].name)}"

    def _animation(self) -> tuple[int, Fraction, list[float]] | None:
        """(frames, mean rate, each frame's start in seconds) when the input is one animated image (WebP, APNG:
        FFmpeg reads only their first frame), else None. Frames without a duration take the reader's ``fps``."""
        if self._animated is not None:
            return self._animated or None
        self._animated = ()
        if len(self.frame_files) != 1:
            return None
        try:
            with Image.open(self.frame_files[0]) as opened:
                count = picture_count(opened)
                if count <= 1:
                    return None
                durations = _frame_durations_ms(opened, self.frame_files[0], count)
        except (OSError, ValueError, EOFError):
            return None
        fallback = 1000 / float(self.fps)
        durations = [d if d > 0 else fallback for d in durations]
        starts = np.concatenate([[0.0], np.cumsum(durations)[:-1]]) / 1000
        fps = Fraction(count * 1000 / sum(durations)).limit_denominator(1001)
        self._animated = (count, fps, [float(t) for t in starts])
        return self._animated

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if not self.frame_files:
            raise VideoReadError(self.path, "no image frames")
        quiet_metadata_warnings()
        if self._animation() is not None:
            yield from self._animation_frames()
            return
        selected = range(0, len(self.frame_files), self.stride)
        if self.max_frames is not None:
            selected = selected[: self.max_frames]
        first_size: tuple[int, int] | None = None  # (height, width)
        self.size_change = None
        for index in selected:
            image = self._load(self.frame_files[index])
            size = (image.shape[0], image.shape[1])
            if first_size is None:
                first_size = size
            elif size != first_size:  # one size for the video, as VideoReader keeps it
                if self.size_change is None:
                    self.size_change = (index, size)
                image = resized_to(image, first_size)
            yield index, image

    def picture(self, index: int) -> np.ndarray:
        """Frame ``index`` alone, as iterating gives it (an animation's frame, or a frame file at the first one's size).
        VideoReadError when there is no such frame or it cannot be read."""
        count = self.probe().frame_count or 0
        if not 0 <= index < count:
            raise VideoReadError(self.path, f"no frame {index} (it has {count})")
        if self._animation() is None:
            return resized_to(self._load(self.frame_files[index]), (self.probe().height, self.probe().width))
        try:
            with Image.open(self.frame_files[0]) as opened:
                opened.seek(index)
                return rgb_array(opened)
        except (OSError, ValueError, EOFError) as error:
            raise VideoReadError(self.path, f"animation frame {index}: not decodable ({error})") from None

    def _animation_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        file = self.frame_files[0]
        starts = self._animation()[2]
        times = array("d")  # each yielded frame's time, as VideoReader records them (variable frame durations)
        self.frame_times = times
        yielded = 0
        try:
            with Image.open(file) as opened:
                for index in range(0, int(opened.n_frames), self.stride):
                    if self.max_frames is not None and yielded >= self.max_frames:
                        return
                    opened.seek(index)
                    yielded += 1
                    times.append(starts[index])
                    yield index, rgb_array(opened)
        except (OSError, ValueError, EOFError) as error:
            raise VideoReadError(self.path, f"animation frame {yielded}: not decodable ({error})") from None

    def _load(self, file: Path) -> np.ndarray:
        try:
            with Image.open(file) as opened:
                frames = picture_count(opened)
                if frames > 1 and len(self.frame_files) > 1:  # a folder of frames: its first frame alone is no frame
                    raise VideoReadError(self.path, f"frame {shown_path(file.name)} is an animation ({frames} frames): "
                                                    "give animated images one at a time, not as a folder of frames")
                return rgb_array(opened)
        except FileNotFoundError:
            if file.is_symlink():
                raise VideoReadError(self.path, f"frame {shown_path(file.name)}: a symbolic link to "
                                                f"{shown_path(file.readlink())}, which does not exist") from None
            raise VideoReadError(self.path, f"frame {shown_path(file.name)}: no such file") from None
        except Image.DecompressionBombError as error:  # PIL refuses images past MAX_IMAGE_PIXELS * 2
            raise VideoReadError(
                self.path, f"frame {shown_path(file.name)}: image too large to decode safely ({error})"
            ) from None
        except VideoReadError:
            raise
        except MemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - Pillow's decoders raise many kinds (struct.error, TypeError, ...)
            reason = f"frame {shown_path(file.name)}: not an image or corrupt ({error_reason(error)})"
            raise VideoReadError(self.path, reason) from None


def resized_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` (``[H, W, 3]``) at ``size`` (height, width): how a video keeps its first frame's size when a frame
    comes in another (a resolution change mid-stream, an image folder's photo turned upright by its EXIF), in segment
    and in training alike (cv2's area interpolation)."""
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def picture_count(image: Image.Image) -> int:
    """The frames of an opened image: an animation's (GIF, APNG, WebP), 1 for a still. A multi-picture JPEG (MPO:
    phones' photos with a gain map or a depth map, 3D cameras) is one still, its first picture, as viewers, FFmpeg
    and OpenCV show it (Pillow counts its pictures as frames)."""
    if image.format == "MPO":
        return 1
    return int(getattr(image, "n_frames", 1))


def _frame_durations_ms(image: Image.Image, path: Path, count: int) -> list[float]:
    """Each frame's display time in ms (0 where the file gives none). Pillow has them for APNG and GIF; for WebP
    they are read from the file's ANMF chunks (24-bit little-endian at offset 12 of each)."""
    if image.format == "WEBP":
        durations = _webp_frame_durations(path)
        return durations if len(durations) == count else [0.0] * count
    durations = []
    for index in range(count):
        image.seek(index)
        durations.append(float(image.info.get("duration") or 0))
    image.seek(0)
    return durations


def _webp_frame_durations(path: Path) -> list[float]:
    data = path.read_bytes()
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return []
    durations, offset = [], 12
    while offset + 8 <= len(data):
        kind, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if kind == b"ANMF" and size >= 16:
            durations.append(float(int.from_bytes(data[offset + 20 : offset + 23], "little")))
        offset += 8 + size + (size & 1)
    return durations


# Pillow's modes of one channel wider than 8 bits (16-bit PNG and TIFF: depth, thermal, medical, microscopy frames)
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


# The transposition that turns an image upright, per EXIF orientation value (2..8; 1 is upright already)
_ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION = 0x0112


def quiet_metadata_warnings() -> None:
    """Silence Pillow's warnings about damaged EXIF or TIFF metadata: it warns, once per distinct message, about every
    damaged tag it skips while opening an image ("Corrupt EXIF data", "Tag data larger than file"), noise per frame
    when only the orientation tag matters here, and that tag's damage leaves the frame as stored. Called by the
    readers as they start (a filter set once at import is lost where the caller restores its warning filters); the
    filter is added only where it is missing, as adding one resets which warnings Python has shown once already."""
    module = r"PIL\.TiffImagePlugin"
    if not any(action == "ignore" and category is UserWarning and getattr(pattern, "pattern", None) == module
               for action, _, category, pattern, _ in warnings.filters):
        warnings.filterwarnings("ignore", category=UserWarning, module=module)


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation tag says. The tag is read alone: ``ImageOps.exif_transpose`` writes
    the whole EXIF block again, and one damaged tag of it (a camera's, or a bad edit) failed the frame although its
    pixels were whole. EXIF that cannot be read leaves the image as stored (as detectron2's ``read_image``)."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # noqa: BLE001 - any damage to the EXIF block: no orientation to apply
        return image
    method = _ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image


def rgb_array(image: Image.Image) -> np.ndarray:
    """An opened image as ``[H, W, 3]`` uint8 RGB, turned upright as its EXIF orientation says (as detectron2's
    ``read_image``). A 16-bit gray image keeps its top 8 bits: Pillow's ``convert("RGB")`` clips every value above
    255, which made such frames white."""
    image = upright(image)
    if image.mode in _WIDE_GRAY_MODES:
        gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def open_reader(
    source: VideoSource,
    stride: int = 1,
    max_frames: int | None = None,
    image_fps: float | Fraction = DEFAULT_FPS,
    frames: Sequence[int] | None = None,
) -> FrameReader:
    """The reader for a discovered input. Raises VideoReadError for a source that carries an error. ``frames``:
    a video file's frames to read (`VideoReader`), in place of ``stride`` and ``max_frames``."""
    if source.error:
        raise VideoReadError(source.path, source.error)
    if source.kind == "images":
        if len(source.frame_files) == 1 and source.path.is_file() and not _pillow_reads(source.path):
            return VideoReader(source.path, stride, max_frames)  # a video named like an image: the decoder decides
        return ImageFolderReader(source.frame_files, stride, max_frames, fps=image_fps, path=source.path)
    if frames is None and _is_webp(source.path):  # an animated WebP named .gif (as GIF sites serve them): FFmpeg
        return ImageFolderReader((source.path,), stride, max_frames, fps=image_fps)  # decodes no animated WebP
    return VideoReader(source.path, stride, max_frames, frames=frames)


def file_reader(path: Path) -> FrameReader:
    """The reader segment reads a file named as its input with (``open_reader``'s rule: by its name an image, whose
    frames Pillow reads where it can, or a video; a WebP whatever its name)."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return open_reader(VideoSource(path, kind="images", frame_files=(path,)))
    return open_reader(VideoSource(path))


def _is_webp(path: Path) -> bool:
    """Whether the file is a WebP image by its first bytes (a RIFF container of form WEBP), whatever its name."""
    try:
        if not path.is_file():  # (a pipe is not opened here: that waits for a writer)
            return False
        with open(path, "rb") as file:
            header = file.read(12)
    except OSError:  # the reader says why it cannot be read
        return False
    return header[:4] == b"RIFF" and header[8:12] == b"WEBP"


def _pillow_reads(path: Path) -> bool:
    """Whether Pillow recognises the file as an image (its header only)."""
    quiet_metadata_warnings()
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


@dataclass
class FrameBatch:
    """Consecutive processed frames: `frames[i]` (H×W×3 uint8 RGB) is source frame `frame_indices[i]`."""

    frame_indices: list[int]
    frames: np.ndarray

    def __len__(self) -> int:
        return len(self.frame_indices)


@dataclass
class _Failure:
    error: BaseException


_END = object()


class BackgroundDecoder:
    """Decode in a daemon thread; iterate to receive `FrameBatch`es of up to `batch_size` frames.

    At most `max_queued_batches` batches wait in the queue (plus one being filled), so memory stays bounded
    however far decoding runs ahead. An exception in the reader is re-raised in the consuming thread, after the
    frames read before it (a VideoReadError keeps its one-line message). Use as a context manager (or call
    `close()`) so that an early exit — break, exception, Ctrl-C — stops the thread without hanging::

        with BackgroundDecoder(reader, batch_size=8) as batches:
            for batch in batches:
                ...
    """

    _POLL_SECONDS = 0.1

    def __init__(
        self,
        frames: Iterable[tuple[int, np.ndarray]],
        batch_size: int,
        max_queued_batches: int = 2,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_queued_batches < 1:
            raise ValueError(f"max_queued_batches must be >= 1, got {max_queued_batches}")
        self._frames = frames
        self._batch_size = batch_size
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued_batches)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clipvis-decoder", daemon=True)
        self._started = False
        self._finished = False

    def __enter__(self) -> BackgroundDecoder:
        self._start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[FrameBatch]:
        self._start()
        try:
            while not self._finished:
                try:
                    item = self._queue.get(timeout=self._POLL_SECONDS)
                except queue.Empty:
                    if not self._thread.is_alive() and self._queue.empty():
                        self._finished = True  # the thread ended without a sentinel (stopped by close())
                    continue
                if item is _END:
                    self._finished = True
                elif isinstance(item, _Failure):
                    self._finished = True
                    raise item.error
                else:
                    yield item
        finally:  # also runs when the consumer abandons the loop (break, exception, garbage collection)
            self.close()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the decoding thread and wait (up to `timeout` seconds) for it to release the file."""
        self._stop.set()
        self._finished = True
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._started:
            self._thread.join(timeout)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _start(self) -> None:
        if not self._started:
            self._thread.start()  # a thread that cannot start (a container's pids limit) is not one to join later:
            self._started = True  # closing joined it ("cannot join thread before it is started", the cause lost)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self._POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        iterator = iter(self._frames)
        try:
            indices: list[int] = []
            batch: np.ndarray | None = None  # filled in place: no second copy of a batch while it is stacked
            for index, frame in iterator:
                if self._stop.is_set():
                    return
                if batch is None:
                    batch = np.empty((self._batch_size, *frame.shape), dtype=frame.dtype)
                elif frame.shape != batch.shape[1:]:
                    raise ValueError(f"frame {index} is {frame.shape}, the batch's frames are {batch.shape[1:]}")
                batch[len(indices)] = frame
                indices.append(index)
                if len(indices) == self._batch_size:
                    if not self._put(FrameBatch(indices, batch)):
                        return
                    indices, batch = [], None
            if indices and batch is not None and not self._put(FrameBatch(indices, batch[: len(indices)])):
                return
            self._put(_END)
        except BaseException as error:  # handed to the consumer, which re-raises it after the frames read before it
            if indices and batch is not None and not self._put(FrameBatch(indices, batch[: len(indices)])):
                return
            self._put(_Failure(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()


# Demuxers whose container duration is the header's end time, measured from 0, not from the first frame: Matroska's
# Segment Duration (FFmpeg's muxer writes the last timestamp; mkvmerge the length, which is no more than it), ASF's
# play duration, NUT's last timestamp. FFmpeg measures the others from the start time (``end - start``: MP4, MPEG-TS,
# FLV), as AVFormatContext.duration is documented.
_DURATION_FROM_ZERO = frozenset({"matroska", "webm", "asf", "nut"})


def _declared_seconds(container: av.container.InputContainer, start: float) -> float | None:
    """The duration the container's header declares, in seconds from the file's start time (its first frame's
    time: a recording or an ``ffmpeg -copyts`` cut starts late), or None when it declares none."""
    if not container.duration:
        return None
    declared = container.duration / av.time_base
    return declared - start if _duration_from_zero(container) else declared


def _duration_from_zero(container: av.container.InputContainer) -> bool:
    return bool(_DURATION_FROM_ZERO.intersection(container.format.name.split(",")))


def _ends_early(end: float, declared: float) -> bool:
    """Whether a stream ending at ``end`` seconds falls well short of the ``declared`` duration: by more than 10 %
    and more than half a second (headers round, edit lists trim a few frames)."""
    return end < 0.9 * declared and declared - end > 0.5


# After a seek, a frame comes with a timestamp at most this many frames from its own (MPEG-PS: the one before's)
_SEEK_SLACK_FRAMES = 4
_NO_PTS = -(2**63)  # a frame without a timestamp, in `_LearnedFrames.stamps`
# The frames whose timestamps and digests a `VideoFrameSeeker` keeps (16 bytes each: 32 MiB; 19 hours at 30 frames/s)
_SEEKER_FRAMES = 1 << 21
# About this many bytes of a picture's first plane go into its digest: one sample in s x s for a 1080p frame's luma
# (s = 6), every sample of a small one. A full frame's (blake2b over every plane, through an array copy) doubled the
# time of the learning pass.
_DIGEST_BYTES = 1 << 16


class VideoFrameSeeker:
    """Frame ``index`` of a video file, numbered as ``VideoReader`` numbers them (decoded frames in order), read by
    seeking: what training needs of a video whose frames were not extracted (``segment``'s outputs of a video).

    The frames' timestamps and a digest of each one's picture are learned once per file, by decoding it through
    (``VideoReader``'s numbering, also where a damaged start makes the decoder drop frames, as in an MPEG-TS recording
    that begins mid-GOP: OpenCV's frame seek numbered those differently); then each frame is read by seeking to the
    keyframe before it and decoding up to the frame near its timestamp whose picture has its digest, the one with its
    timestamp first. The timestamp alone is not the frame: after a seek in an MPEG program stream (.mpg, .vob) FFmpeg
    gives each frame the timestamp the frame before it had in a reading from the start. Where no frame near it matches
    (a seek that lands where the decoder cannot rebuild the picture exactly), the file is decoded from its start,
    counting. What was learned is kept per file (by its identity: a file written again is learned again) for the
    ``frames`` frames of the files used last (16 bytes a frame: a training worker's videos are learned once)."""

    def __init__(self, frames: int = _SEEKER_FRAMES) -> None:
        self.frames = frames
        self._learned_files: OrderedDict[tuple[str, int, int, int, int], _LearnedFrames] = OrderedDict()

    def frame(self, path: Path | str, index: int) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB, rotation applied, at the first frame's size (as segment reads it); VideoReadError
        when the file has no such frame."""
        path = Path(path)
        learned = self._learned(path)
        if learned.pictures is not None:  # an image, or an animation segment reads through Pillow
            return learned.pictures.picture(index)
        if not 0 <= index < len(learned.stamps):
            raise VideoReadError(path, f"no frame {index} (it has {len(learned.stamps)})")
        return resized_to(_decoded_frame(path, index, learned), learned.size)

    def _learned(self, path: Path) -> _LearnedFrames:
        try:
            status = path.stat()
        except OSError as error:
            raise VideoReadError(path, f"cannot read ({error_reason(error)})") from None
        key = (str(path.resolve()), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        learned = self._learned_files.get(key)
        if learned is not None:
            self._learned_files.move_to_end(key)
            return learned
        learned = _learn_frames(path)
        self._learned_files[key] = learned
        kept = sum(len(other) for other in self._learned_files.values())
        while kept > self.frames and len(self._learned_files) > 1:  # the files used longest ago go
            kept -= len(self._learned_files.popitem(last=False)[1])
        return learned


@dataclass(frozen=True)
class _LearnedFrames:
    """What `VideoFrameSeeker` learned of a file: each frame's pts (``_NO_PTS``: none) and picture digest, and the
    first frame's shown size (height, width); or, for a file segment reads through Pillow, its reader."""

    stamps: array
    digests: array
    size: tuple[int, int] = (0, 0)
    pictures: ImageFolderReader | None = None

    def __len__(self) -> int:
        """The file's frames."""
        return (self.pictures.probe().frame_count or 1) if self.pictures is not None else len(self.stamps)


def _decoded_frame(path: Path, index: int, learned: _LearnedFrames) -> np.ndarray:
    """Frame ``index`` of a video file, by seeking (`VideoFrameSeeker`), rotation applied."""
    stamps, digests = learned.stamps, learned.digests
    target = stamps[index]
    near = [stamp for stamp in stamps[max(index - _SEEK_SLACK_FRAMES, 0) : index + _SEEK_SLACK_FRAMES + 1]
            if stamp != _NO_PTS]  # the timestamps the frame may come with after a seek
    try:
        if target != _NO_PTS:
            with _open_input(path) as container:
                stream = _chosen_stream(container, path)
                stream.thread_type = "SLICE"
                seconds_before = (0.0, 2.0, 10.0)  # seeking by time lands late in some containers (MPEG-TS)
                ticks = 1 / float(stream.time_base) if stream.time_base else 0.0
                for margin in seconds_before:
                    container.seek(max(int(target - margin * ticks), 0), stream=stream, backward=True)
                    match: av.VideoFrame | None = None  # the frame near the timestamp that has the picture
                    for frame in container.decode(stream):
                        if frame.pts is not None and frame.pts > max(near):
                            break  # past it
                        if (frame.pts is None or frame.pts >= min(near)) and _picture_digest(frame, path) == \
                                digests[index]:
                            if frame.pts == target:
                                return _to_rgb(frame)
                            if match is None or _distance(frame.pts, target) < _distance(match.pts, target):
                                match = frame  # (a picture like its neighbour's where the digest looks)
                    if match is not None:
                        return _to_rgb(match)
        # From the start, counting, opened afresh: an AVI's palette (pal8) comes with its first packet only
        # when the file is read from its start, not after a seek back to it (every picture black).
        with _open_input(path) as container:
            stream = _chosen_stream(container, path)
            stream.thread_type = "SLICE"
            for position, frame in enumerate(container.decode(stream)):
                if position == index:
                    return _to_rgb(frame)
    except av.error.FFmpegError as error:
        raise VideoReadError(path, f"frame {index}: {error_reason(error)}") from None
    raise VideoReadError(path, f"no frame {index}")


def _distance(stamp: int | None, target: int) -> float:
    return abs(stamp - target) if stamp is not None else math.inf


def _learn_frames(path: Path) -> _LearnedFrames:
    """Decode ``path`` through, noting each frame's pts and picture digest and the first frame's shown size; for a
    file segment reads through Pillow (``file_reader``: an animated WebP named .gif, an APNG), that reader."""
    reader = file_reader(path)
    if isinstance(reader, ImageFolderReader):
        reader.probe()
        return _LearnedFrames(array("q"), array("Q"), pictures=reader)
    stamps, digests = array("q"), array("Q")
    size = (0, 0)
    try:
        with _open_input(path) as container:
            stream = _chosen_stream(container, path)
            stream.thread_type = "SLICE"
            for frame in container.decode(stream):
                if not stamps:
                    size = _to_rgb(frame).shape[:2]
                stamps.append(frame.pts if frame.pts is not None else _NO_PTS)
                digests.append(_picture_digest(frame, path))
    except av.error.FFmpegError as error:
        raise VideoReadError(path, error_reason(error)) from None
    return _LearnedFrames(stamps, digests, size)


def _picture_digest(frame: av.VideoFrame, path: Path) -> int:
    """A 64-bit digest of a decoded frame's picture, the same for the same picture however the decoder came to it
    (from the start, or after a seek): of every s-th byte of every s-th row of its first plane (the luma of a YUV
    format; a packed format's pixels; a palette format's indices, and its palette), not the padding of its rows.
    Neighbouring frames of a video differ in most samples (noise, movement); a static scene's frames that differ in
    none of them are alike to the pixel anyway. VideoReadError for a frame whose planes cannot be read."""
    try:
        plane = frame.planes[0]
        row_bytes = min(_first_plane_row_bytes(frame.format, frame.width), plane.line_size)
        rows = np.frombuffer(plane, np.uint8)[: plane.line_size * frame.height].reshape(frame.height, plane.line_size)
        step = max(1, math.isqrt(frame.height * row_bytes // _DIGEST_BYTES) + 1)
        digest = hashlib.blake2b(f"{frame.format.name} {frame.width}x{frame.height}".encode(), digest_size=8)
        digest.update(np.ascontiguousarray(rows[::step, :row_bytes:step]).data)
        if frame.format.has_palette and len(frame.planes) > 1:
            digest.update(bytes(frame.planes[1]))
    except (ValueError, TypeError, AttributeError, IndexError, BufferError) as error:
        raise VideoReadError(path, f"cannot read the pictures of its {getattr(frame.format, 'name', '')} frames "
                                   f"({error_reason(error)})") from None
    return int.from_bytes(digest.digest(), "little")


def _first_plane_row_bytes(pixel_format: av.VideoFormat, width: int) -> int:
    """The bytes of a row of a picture's first plane, without padding: a packed format's pixels (its padded bits,
    ``bgr0``'s 32), a planar one's components in that plane (a 10-bit luma's 2 bytes)."""
    if not pixel_format.is_planar:
        return -(-width * pixel_format.padded_bits_per_pixel // 8)
    return width * sum(-(-component.bits // 8) for component in pixel_format.components if component.plane == 0)


def variable_frame_times(times: Sequence[float], frame_indices: Sequence[int], fps: Fraction) -> list[float] | None:
    """The frames' times (seconds from the video's start), when they are not what their numbers at ``fps`` say
    (a variable frame rate: screen recorders write frames only when the screen changes; phones vary the rate):
    off by more than half a frame anywhere. None for a constant rate, when the times are not known, and when they do
    not increase from frame to frame: they are then no frames' times (an AVI or ASF file with B-frames, whose times
    FFmpeg gives in decoding order; recordings joined with ``cat``, whose times start again), and the frames are
    numbered at the constant rate (frame n at n / fps), as players of such files do."""
    if not times or len(times) != len(frame_indices) or not fps or not _increasing(times):
        return None
    first = times[0] - frame_indices[0] / float(fps)
    tolerance = 0.5 / float(fps)
    if all(abs(t - first - i / float(fps)) <= tolerance for t, i in zip(times, frame_indices, strict=True)):
        return None
    return [round(float(t), 6) + 0.0 for t in times]  # + 0.0: -3e-7 (a start time's rounding) is 0.0, not -0.0


def video_start_time(times: Sequence[float], frame_indices: Sequence[int], fps: Fraction) -> float:
    """Seconds from the file's start to the video's frame 0, for a constant rate (``variable_frame_times`` None): a
    video that starts after its audio (an edit's cut, a screen recording) shows its first picture that late in a
    player, and a tool that places frames by time (Label Studio) must count from there. 0 when it starts with the
    file (within half a frame) or the times are not known or do not increase (``variable_frame_times``)."""
    if not times or len(times) != len(frame_indices) or not fps or not _increasing(times):
        return 0.0
    first = times[0] - frame_indices[0] / float(fps)
    return round(float(first), 6) if first > 0.5 / float(fps) else 0.0


def _increasing(times: Sequence[float]) -> bool:
    """Whether every time is known and later than the one before it."""
    return not math.isnan(times[0]) and all(later > earlier for earlier, later in itertools.pairwise(times))


class _StreamHealth:
    """What demuxing and decoding one video stream showed: the video packets read, corrupt packets or frames
    (FFmpeg's flags), and ``gap``: frames lost to damage, the longest gap of over 1.5 frame durations between
    consecutive frames' times that has corrupt data next to it (within ``_DAMAGE_REACH_FRAMES`` of the frame
    duration before the gap: a variable-rate video's average rate, lowered by its pauses, would reach farther).

    A gap far from any corrupt data is the video's own (a screen recorder's pause, a camera's dropped frames), and
    so is one whose only corrupt data is a packet the demuxer flagged where the file starts again (``restarted``:
    two MPEG-TS recordings joined with ``cat``, whose continuity counters break at the join, the second recording
    starting later). A frame the decoder flags next to a gap is damage the demuxer skipped over, and so is a flagged
    packet anywhere else: a recording that lost a run of packets looks like a join to FFmpeg (the packet before the
    loss flagged, decoding starting again at a keyframe after it), but does not start again there.

    ``restarted(after, at)``: whether the file starts again between byte ``after`` (the video packet before) and the
    video packet at byte ``at`` (`_TransportStreamStarts`); None for a file that cannot be joined so."""

    def __init__(self, fps: Fraction, restarted: Callable[[int, int], bool] | None = None) -> None:
        self.fps = fps if fps else DEFAULT_FPS
        self._restarted = restarted
        self._packet_at: dict[int, tuple[int, int]] = {}  # recent packets' pts -> (its byte, the packet before's)
        self._packet_pos: int | None = None  # the latest video packet's byte in the file
        self.last_step = 0.0  # the time between the last two frames
        self.first_pts: int | None = None  # the first decoded frame's, in the stream's time base
        self.corrupt = False
        self.packets = 0
        self.last_end = 0  # the latest packet's pts + duration, in the stream's time base
        self.gap: tuple[float, float] | None = None
        self._longest = 1.5 / float(fps) if fps else float("inf")  # a longer step between frames is a gap
        self._previous: float | None = None
        self._latest: float | None = None  # the latest time a packet or frame gave (for corrupt data without one)
        self._frames_after_gap = 0  # frames seen since ``gap`` was found
        self._steps: deque[float] = deque(maxlen=16)  # the latest steps between frames that are no gap
        # Recent gaps (before, after, the file starts again there, how far from them corrupt data counts) and
        # corrupt data (time, flagged by the decoder): a gap and the damage that made it come out close together
        self._gaps: deque[tuple[float, float, bool, float]] = deque(maxlen=_RECENT_EVENTS)
        self._corruption: deque[tuple[float, bool]] = deque(maxlen=_RECENT_EVENTS)

    @property
    def damage_settled(self) -> bool:
        """Whether frames were lost to damage (``gap``) and enough frames have followed that no longer gap beside it
        is still to come."""
        return self.gap is not None and self._frames_after_gap >= _DAMAGE_REACH_FRAMES

    def saw_packet(self, packet: av.Packet) -> None:
        """A video packet the demuxer gave (not the empty one that flushes the decoder)."""
        self.packets += 1
        stamp = packet.pts if packet.pts is not None else packet.dts
        time = float(stamp * packet.time_base) if stamp is not None and packet.time_base else None
        if time is not None:
            self._latest = time
        if packet.pts is not None:
            self.last_end = max(self.last_end, int(packet.pts) + int(packet.duration or 1))
        position = getattr(packet, "pos", None)
        if self._restarted is not None and position is not None and position >= 0:
            if packet.pts is not None and self._packet_pos is not None:
                if len(self._packet_at) >= _RECENT_EVENTS:  # the oldest (in file order) go: frames come out close by
                    del self._packet_at[next(iter(self._packet_at))]
                self._packet_at[int(packet.pts)] = (int(position), self._packet_pos)
            self._packet_pos = int(position)
        if getattr(packet, "is_corrupt", False):
            self._corrupt_at(time, decoded=False)

    def saw(self, frame: av.VideoFrame) -> None:
        """A decoded frame, in presentation order."""
        if self.first_pts is None and getattr(frame, "pts", None) is not None:
            self.first_pts = int(frame.pts)
        time = frame.time
        if self.gap is not None:
            self._frames_after_gap += 1
        if time is not None:
            self._latest = time
        if getattr(frame, "is_corrupt", False):
            self._corrupt_at(time, decoded=True)
        if time is None:
            return
        if self._previous is not None:
            self.last_step = time - self._previous
            if self.last_step > self._longest:
                steps = sorted(self._steps)
                duration = steps[len(steps) // 2] if steps else 1 / float(self.fps)  # the frames' usual step
                gap = (self._previous, time, self._restarts_at(frame), _DAMAGE_REACH_FRAMES * duration)
                self._gaps.append(gap)
                for corrupt in self._corruption:
                    self._check(gap, corrupt)
            elif self.last_step > 0:
                self._steps.append(self.last_step)
        self._previous = time

    def _restarts_at(self, frame: av.VideoFrame) -> bool:
        """Whether the file starts again (``restarted``) right before ``frame``, a keyframe's."""
        if self._restarted is None or not getattr(frame, "key_frame", False) or frame.pts is None:
            return False
        positions = self._packet_at.get(int(frame.pts))
        return positions is not None and self._restarted(positions[1], positions[0])

    def _corrupt_at(self, time: float | None, decoded: bool) -> None:
        self.corrupt = True
        if time is None:
            time = self._latest
        if time is None:
            return
        corrupt = (time, decoded)
        self._corruption.append(corrupt)
        for gap in self._gaps:
            self._check(gap, corrupt)

    def _check(self, gap: tuple[float, float, bool, float], corrupt: tuple[float, bool]) -> None:
        """Make ``gap`` the frames lost to damage when ``corrupt`` is next to it, and it is the longest such."""
        before, after, restarted, reach = gap
        time, decoded = corrupt
        if not before - reach <= time <= after + reach or (restarted and not decoded):
            return
        if self.gap is None or after - before > self.gap[1] - self.gap[0]:
            self.gap = (before, after)
            self._frames_after_gap = 0


# MPEG-TS packet sizes and where the sync byte sits in each: 188 bytes; M2TS (Blu-ray, AVCHD camcorders' .mts) puts
# a 4-byte time code first; 204 bytes carry 16 bytes of error correction last
_TS_LAYOUTS = ((188, 0), (192, 4), (204, 0))
_TS_SYNC = 0x47
_TS_NULL_PID = 0x1FFF
_TS_HEAD_BYTES = 1 << 20  # where each PID's first continuity counter is looked for
_TS_SEARCH_PACKETS = 4096  # how far before a video packet the start of a joined recording is looked for


class _TransportStreamStarts:
    """Where an MPEG-TS file starts again: a second recording joined to the first with ``cat``.

    A muxer numbers each PID's TS packets with a 4-bit continuity counter from the same value in every file it
    writes (FFmpeg's from 0), and begins every file with the same table (FFmpeg: the SDT, then the PAT). So a
    recording joined after another begins with a packet of the PID the file began with, and from there to its first
    video packet each PID's counters count up from the one it began the file with (audio muxed ahead of the video:
    many packets of one PID). A recording that lost a run of packets breaks the counters too (FFmpeg flags the packet
    before the loss corrupt), but goes on with counters that are no new start's (1 chance in 16 per PID by luck)."""

    def __init__(self, path: Path, video_pid: int) -> None:
        self.path = path
        self.video_pid = video_pid
        self._layout: tuple[int, int] | None = None  # (packet size, the sync byte's offset in it)
        self._first_counters: dict[int, int] = {}  # per PID: the continuity counter of its first packet with payload

    @classmethod
    def of(cls, path: Path, container: av.container.InputContainer,
           stream: av.video.stream.VideoStream) -> Callable[[int, int], bool] | None:
        """``restarted_between`` for an MPEG-TS file, None for other files (no join of which is told apart)."""
        if "mpegts" not in container.format.name.split(","):
            return None
        return cls(path, int(stream.id)).restarted_between

    def restarted_between(self, after: int, at: int) -> bool:
        """Whether the file starts again after byte ``after`` (a video packet's start) and by the video packet whose
        first TS packet is at byte ``at``."""
        try:
            if self._layout is None:
                self._read_head()
            size, sync = self._layout or (0, 0)
            if not size or at <= after:
                return False
            start = max(after + size, at - _TS_SEARCH_PACKETS * size)
            with open(self.path, "rb") as file:
                file.seek(start)
                region = file.read(at + size - start)
        except OSError:
            return False
        first_pid = next(iter(self._first_counters), None)  # the file's first packet's (FFmpeg: the SDT's)
        video = True  # the packet at ``at`` first, then back to where the recording may begin
        packets: list[tuple[int, int]] = []  # (PID, continuity counter) of the packets passed, latest first
        for offset in range(at - start, -1, -size):
            header = region[offset + sync : offset + sync + 4]
            if len(header) < 4 or header[0] != _TS_SYNC:
                return False
            pid, starts_unit, counter = ((header[1] & 0x1F) << 8) | header[2], bool(header[1] & 0x40), header[3] & 0xF
            has_payload = bool(header[3] & 0x10)
            if video and (pid != self.video_pid or not starts_unit):
                return False
            video = False
            if pid == _TS_NULL_PID or not has_payload:  # stuffing, or adaptation fields alone: no count kept
                continue
            packets.append((pid, counter))
            if pid == first_pid and starts_unit and self._counts_from_the_start(reversed(packets)):
                return True
        return False

    def _counts_from_the_start(self, packets: Iterable[tuple[int, int]]) -> bool:
        """Whether ``packets`` (PID, continuity counter), in file order, are a file's first: each PID's counters
        count up (modulo 16) from the one it began the file with. A recording's first video packet can come after
        many of other PIDs' (audio muxed ahead of the video), with tables repeated on the way, so each packet of the
        PID the file begins with is tried as the start."""
        expected: dict[int, int] = {}
        for pid, counter in packets:
            if counter != expected.get(pid, self._first_counters.get(pid)):
                return False
            expected[pid] = (counter + 1) & 0xF
        return True

    def _read_head(self) -> None:
        with open(self.path, "rb") as file:
            head = file.read(_TS_HEAD_BYTES)
        self._layout = (0, 0)
        for size, sync in _TS_LAYOUTS:  # the one with the sync byte where each of the first 5 packets starts
            if len(head) > sync and all(head[k] == _TS_SYNC for k in range(sync, len(head), size)[:5]):
                self._layout = (size, sync)
                break
        size, sync = self._layout
        for offset in range(0, len(head) - size + 1, size) if size else ():
            header = head[offset + sync : offset + sync + 4]
            if header[0] != _TS_SYNC:
                break
            pid = ((header[1] & 0x1F) << 8) | header[2]
            if header[3] & 0x10 and pid not in self._first_counters:
                self._first_counters[pid] = header[3] & 0xF


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


def _as_fraction(value: object) -> Fraction | None:
    """A PyAV rational (Fraction up to PyAV 18, AVRational from 19, possibly None or 0/1) as a Fraction."""
    numerator = getattr(value, "numerator", None)
    denominator = getattr(value, "denominator", None)
    if not numerator or not denominator:
        return None
    return Fraction(int(numerator), int(denominator))


class _RgbConverter:
    """Decoded frames of one pass over a stream as upright RGB arrays, without tying anything to the frames.

    ``frame.to_ndarray`` gives every frame a converter of its own (an FFmpeg scaler with its own worker threads),
    and ``frame.side_data`` (the display matrix) makes a reference cycle of the frame: such a frame, its picture and
    its scaler's threads lived until Python's garbage collector came by (threads piled up over a batch of videos).
    Here one scaler serves the whole pass, released with the converter, and the display matrix is read on the first
    frame and again only when PyAV's rotation reading (``frame.rotation``, no cycle) changes (a display matrix that
    changes its mirror alone mid-stream is not followed)."""

    def __init__(self) -> None:
        self._reformatter = av.video.reformatter.VideoReformatter()
        self._rotation: object = None  # the last frame's ``frame.rotation`` (None: read the matrix)
        self._orientation = _UPRIGHT

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
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
