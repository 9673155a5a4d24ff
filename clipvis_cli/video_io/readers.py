"""The frame readers: `VideoReader` (a video file, through PyAV), `ImageFolderReader` (image files, an animated
image), the `FrameReader` protocol they share, and `open_reader` / `file_reader` that pick one for an input."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import av
import av.error
import av.video.reformatter
import numpy as np
from PIL import Image

from clipvis.cli.frame_numbers import increasing_from_zero
from clipvis.cli.inputs import IMAGE_EXTENSIONS, VideoSource
from clipvis.cli.messages import error_reason, path_text, shown_path
from clipvis.cli.results import synthetic_file_names
from clipvis.cli.video_io.decoding import (
    _as_fraction,
    _demuxed_frames,
    _display_orientation,
    _last_packet_end,
    _open_input,
    _RgbConverter,
    _stream_fps,
    _stream_frame_count,
    _undecodable_lead,
    video_stream,
)
from clipvis.cli.video_io.images import (
    _frame_durations_ms,
    _is_gif,
    _is_webp,
    _pillow_reads,
    animation_frame_rgb,
    most_common_size,
    picture_count,
    quiet_metadata_warnings,
    resized_to,
    rgb_array,
    shown_size,
)
from clipvis.cli.video_io.probe import _AVI_LEADING_FRAMES, DEFAULT_FPS, VideoProbe, VideoReadError
from clipvis.cli.video_io.stream_health import (
    _declared_seconds,
    _ends_early,
    _StreamHealth,
    _TransportStreamStarts,
    iso_media_cut,
)


class FrameReader(Protocol):
    """What `open_reader` returns: a re-iterable source of (frame_index, RGB frame)."""

    path: Path
    stride: int
    max_frames: int | None
    # Set by each iteration: per frame yielded, its time (s) in the video where known, else empty.
    frame_times: Sequence[float]
    # Set by each iteration: when (s, from the video's start) the last frame yielded stops showing, from the frames'
    # own durations (a GIF's last frame may show for seconds); None where not known.
    end_time: float | None
    # Set by each iteration: the first frame of another size than the first (resized to the first frame's size), as
    # (its index, (height, width)); None when every frame had one size.
    size_change: tuple[int, tuple[int, int]] | None
    # How a size change came about, for the warning: its words right after "frame X is WxH, not W'xH'" (the probe's
    # size), from their leading space or comma on.
    size_change_cause: str

    def probe(self) -> VideoProbe: ...

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]: ...

    def frames_as_players_show(self) -> Iterator[tuple[int, np.ndarray]]:
        """The frames of ``__iter__`` in the colours players show them in (the overlay's), where the model's differ:
        an untagged HD video's, which players read as BT.709 and FFmpeg converts as BT.601."""
        ...

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

    size_change_cause = (" as the frames before it: the video changes size mid-stream, and its frames from there on "
                         "were resized to the first frame's size (their aspect ratio too)")

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
        self.end_time: float | None = None  # when the last iteration's last frame stops showing (`FrameReader`)
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
        return self._decoded(as_players_show=False)

    def frames_as_players_show(self) -> Iterator[tuple[int, np.ndarray]]:
        """The frames of ``__iter__`` (the model's), but an untagged frame of HD size (``plays_as_bt709``) converted
        to RGB with BT.709's matrix, as players show it, rather than FFmpeg's default (BT.601's): for the overlay,
        which would otherwise shift such a video's colours (a red of 255, 24, 0 showed as 253, 0, 1)."""
        return self._decoded(as_players_show=True)

    def _decoded(self, as_players_show: bool) -> Iterator[tuple[int, np.ndarray]]:
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
        to_rgb = _RgbConverter(as_players_show)
        times = array("d")  # seconds from the start, per yielded frame: the last iteration's in `frame_times`
        self.frame_times = times
        self.end_time = None
        shown_until: float | None = None  # the end of the last frame decoded (its time and own duration)
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
                shown_until = _shown_until(frame)
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
                self.end_time = None if shown_until is None else shown_until - start
                yield index, image
            if ended and yielded and shown_until is not None:  # the last frame yielded shows until the stream ends
                self.end_time = shown_until - start
            header_frames = int(stream.frames or 0)
            is_avi = "avi" in container.format.name.split(",")
        finally:
            container.close()
        if decoded == 0:
            raise self._no_frames_error("no decodable frames")
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

    def _no_frames_error(self, reason: str) -> VideoReadError:
        """``reason`` (no video stream, no frames), or where the file is an MP4 or MOV cut short (`iso_media_cut`),
        what truly happened: a ``+faststart`` file cut inside its index at the front has no stream FFmpeg finds, one
        cut after it no frames."""
        cut = iso_media_cut(self.path)
        return VideoReadError(self.path, f"truncated: {cut}" if cut is not None else reason)

    def _decode_error(self, decoded: int, error: BaseException) -> VideoReadError:
        reason = error_reason(error)
        if decoded == 0 and (cut := iso_media_cut(self.path)) is not None:
            return VideoReadError(self.path, f"truncated: {cut}: no frame decodes ({reason})")
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
        except av.error.InvalidDataError:  # an MP4 cut before its index at the end: no "moov atom" FFmpeg finds
            raise self._no_frames_error("not a video or corrupt (FFmpeg cannot read it)") from None
        except av.error.EOFError:
            raise self._no_frames_error("no decodable frames (the file ends before any video data)") from None
        except av.error.FFmpegError as error:
            raise VideoReadError(path, f"cannot open ({error_reason(error)})") from None
        except OSError as error:
            raise VideoReadError(path, f"cannot open ({error_reason(error)})") from None
        stream = video_stream(container)
        if stream is None:  # none, or only a cover picture (an MP3's album art)
            has_audio = bool(container.streams.audio)
            container.close()
            raise self._no_frames_error("no video stream (audio only)" if has_audio else "no video stream")
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
            # The codec's own name (FFmpeg's codec descriptor: av1, vp9), not the decoder's that the context's
            # name is (libdav1d, libvpx-vp9): what the format's tools and browsers go by
            codec = stream.codec_context.codec.canonical_name or stream.codec_context.name
            try:
                first = next(container.decode(stream))
            except StopIteration:
                raise self._no_frames_error("no decodable frames") from None
            except av.error.FFmpegError as error:
                raise self._decode_error(0, error) from error
            orientation = _display_orientation(first)
            rotation, mirrored = orientation.rotation_and_mirror()
            width, height = first.width, first.height
            interlaced = bool(getattr(first, "interlaced_frame", False))  # the first frame's flag only: no cost after
            aspect = _as_fraction(stream.sample_aspect_ratio)
            if orientation.transpose:
                width, height = height, width
                aspect = 1 / aspect if aspect else aspect
        finally:
            container.close()
        aspect = aspect if aspect and aspect != 1 else None
        return VideoProbe(self.path, width, height, fps, fps_known, frame_count, rotation, codec, aspect, mirrored,
                          estimated, duration, interlaced)


def _shown_until(frame: av.VideoFrame) -> float | None:
    """When ``frame`` stops showing, in seconds: its time and its own duration (None where either is not known)."""
    duration = getattr(frame, "duration", None)
    if frame.time is None or not duration or frame.time_base is None:
        return None
    return frame.time + float(duration * frame.time_base)


class ImageFolderReader:
    """Read a list of image files (an image-folder video) as RGB frames of one size, the size most of the images it
    reads have (the first one's where sizes tie; each image's header alone is read for it, with its EXIF orientation):
    an image of another size (a photo turned by its EXIF orientation among others that are not) is resized to it, as
    a video that changes size mid-stream is (`size_change`), also when it is the first.

    EXIF orientation is applied. `fps` is the rate the frames are assumed to have (default 30).
    """

    size_change_cause = (", the size most of the images have (the first one's where sizes tie): the images differ in "
                         "size, and each image of another size was resized to it (its aspect ratio too)")

    def __init__(
        self,
        frame_files: Sequence[Path | str],
        stride: int = 1,
        max_frames: int | None = None,
        fps: float | Fraction = DEFAULT_FPS,
        path: Path | str | None = None,
        frames: Sequence[int] | None = None,
    ) -> None:
        """``path``: the input's name in messages (default: the images' folder; give the file for one animated
        image). ``frames``: only these frame indices, increasing (as `VideoReader`'s); it stands for ``stride`` and
        ``max_frames``."""
        _check_sampling(stride, max_frames)
        if frames is not None:
            frames = [int(i) for i in frames]
            if not increasing_from_zero(frames):
                raise ValueError("frames must be increasing frame indices from 0, at least one")
            stride, max_frames = 1, len(frames)
        self.frames = frozenset(frames) if frames is not None else None
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
        self.end_time: float | None = None  # an animation's last frame yielded's end (its own delay); images: none
        # The last iteration's first frame of another size than the probe's (resized to it): (its index in
        # `frame_files`, (height, width)); None when every frame read had one size (`VideoReader`'s too).
        self.size_change: tuple[int, tuple[int, int]] | None = None

    def probe(self) -> VideoProbe:
        if self._probe is None:
            quiet_metadata_warnings()
            if not self.frame_files:
                raise VideoReadError(self.path, "no image frames")
            count, fps = len(self.frame_files), self.fps
            animation = self._animation()
            if animation is not None:
                count, fps, _ = animation
                height, width = self._load(self.frame_files[0]).shape[:2]
            else:
                sizes = [self._shown_size(self.frame_files[index]) for index in self._selected()]
                height, width = most_common_size(sizes)
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
        """(frames, mean rate, each frame's start in seconds and then the last one's end) when the input is one
        animated image (WebP, APNG: FFmpeg reads only their first frame; a GIF FFmpeg joins the pictures of), else
        None. Frames without a duration take the reader's ``fps``; a GIF's are timed as FFmpeg times them
        (`_gif_frame_durations_ms`: 100 ms where none is given)."""
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
        starts = np.concatenate([[0.0], np.cumsum(durations)]) / 1000
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
        common_size = (self.probe().height, self.probe().width)
        self.size_change = None
        for index in self._selected():
            image = self._load(self.frame_files[index])
            size = (image.shape[0], image.shape[1])
            if size != common_size:  # one size for the video, as VideoReader keeps it
                if self.size_change is None:
                    self.size_change = (index, size)
                image = resized_to(image, common_size)
            yield index, image

    def frames_as_players_show(self) -> Iterator[tuple[int, np.ndarray]]:
        """The frames of ``__iter__``: images are RGB already, shown as read."""
        return iter(self)

    def _selected(self) -> Sequence[int]:
        """The indices in `frame_files` of the images an iteration reads (``stride``, ``max_frames``, ``frames``)."""
        return self._sampled(len(self.frame_files))

    def _sampled(self, count: int) -> Sequence[int]:
        """The indices of ``count`` frames an iteration reads (``stride``, ``max_frames``, ``frames``)."""
        selected: Sequence[int] = range(0, count, self.stride)
        if self.frames is not None:
            selected = [index for index in selected if index in self.frames]
        return selected[: self.max_frames] if self.max_frames is not None else selected

    def picture(self, index: int) -> np.ndarray:
        """Frame ``index`` alone, as iterating gives it (an animation's frame, or a frame file at the probe's size).
        VideoReadError when there is no such frame or it cannot be read."""
        count = self.probe().frame_count or 0
        if not 0 <= index < count:
            raise VideoReadError(self.path, f"no frame {index} (it has {count})")
        if self._animation() is None:
            return resized_to(self._load(self.frame_files[index]), (self.probe().height, self.probe().width))
        try:
            with Image.open(self.frame_files[0]) as opened:
                opened.seek(index)
                return animation_frame_rgb(opened)
        except (OSError, ValueError, EOFError) as error:
            raise VideoReadError(self.path, f"animation frame {index}: not decodable ({error})") from None

    def _animation_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        file = self.frame_files[0]
        starts = self._animation()[2]
        times = array("d")  # each yielded frame's time, as VideoReader records them (variable frame durations)
        self.frame_times = times
        self.end_time = None
        yielded = index = 0
        try:
            with Image.open(file) as opened:
                count = int(opened.n_frames)
                for index in self._sampled(count):
                    opened.seek(index)
                    yielded += 1
                    times.append(starts[index])
                    # the frame's own delay; the last one yielded shows until the animation ends, unless --max-frames
                    # stopped the reading (as VideoReader's `end_time`)
                    ends_it = index + self.stride >= count and (self.max_frames is None or yielded < self.max_frames)
                    self.end_time = starts[count] if ends_it else starts[index + 1]
                    yield index, animation_frame_rgb(opened)
        except (OSError, ValueError, EOFError) as error:
            raise VideoReadError(self.path, f"animation frame {index}: not decodable ({error})") from None

    def _load(self, file: Path) -> np.ndarray:
        """``[H, W, 3]`` uint8 RGB: the image ``file``, turned upright. VideoReadError naming it when it cannot be."""
        with self._opened(file) as opened:
            return rgb_array(opened)

    def _shown_size(self, file: Path) -> tuple[int, int]:
        """(height, width) of the image ``file`` as `_load` gives it, from its header (5,000 small JPEGs: under 1 s).
        VideoReadError naming it when it cannot be opened, as `_load` says it."""
        with self._opened(file) as opened:
            return shown_size(opened)

    @contextmanager
    def _opened(self, file: Path) -> Iterator[Image.Image]:
        """The image ``file`` opened by Pillow; any failure to open or read it, a VideoReadError naming it."""
        try:
            with Image.open(file) as opened:
                frames = picture_count(opened)
                if frames > 1 and len(self.frame_files) > 1:  # a folder of frames: its first frame alone is no frame
                    raise VideoReadError(self.path, f"frame {shown_path(file.name)} is an animation ({frames} frames): "
                                                    "give animated images one at a time, not as a folder of frames")
                yield opened
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
    if _is_webp(source.path) or _ffmpeg_joins_gif_frames(source.path):  # an animated WebP named .gif (as GIF sites
        # serve them: FFmpeg decodes no animated WebP), or a GIF FFmpeg reads as fewer frames than it holds
        return ImageFolderReader((source.path,), stride, max_frames, fps=image_fps, path=source.path, frames=frames)
    return VideoReader(source.path, stride, max_frames, frames=frames)


def _ffmpeg_joins_gif_frames(path: Path) -> bool:
    """Whether ``path`` is a GIF of which FFmpeg reads fewer frames than it holds. FFmpeg's GIF demuxer splits the
    file into frames only once it has met an extension block (a Graphic Control Extension: a frame's delay,
    transparency, disposal; a loop count), so the pictures of a GIF without any (Pillow's ``save_all`` without a
    duration or a loop count, a GIF87a file) came as one packet, and `VideoReader` gave one frame, the first, without a
    word. Such a GIF is read through Pillow (`ImageFolderReader`: its frames drawn, timed and made RGB as FFmpeg does
    a GIF's); every other GIF stays with FFmpeg, read as before. Pillow counts the pictures and FFmpeg's packets are
    its frames, from the blocks' headers and the packets, nothing decoded (50 ms for a 5 MB GIF of 300 frames); a
    file either cannot read stays with `VideoReader`, which says why."""
    if not _is_gif(path):
        return False
    try:
        with Image.open(path) as opened:
            pictures = picture_count(opened)
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError):  # VideoReader says why
        return False
    if pictures <= 1:
        return False
    packets = 0
    try:
        with _open_input(path) as container:
            stream = video_stream(container)
            if stream is None:
                return False
            for packet in container.demux(stream):
                packets += packet.size > 0
                if packets >= pictures:
                    return False
    except av.error.FFmpegError:
        return False
    return True


def file_reader(path: Path) -> FrameReader:
    """The reader segment reads a file named as its input with (``open_reader``'s rule: by its name an image, whose
    frames Pillow reads where it can, or a video; a WebP whatever its name)."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return open_reader(VideoSource(path, kind="images", frame_files=(path,)))
    return open_reader(VideoSource(path))
