"""`VideoFrameSeeker`: one frame of a video by its index, fast and exact, for training's random access (each file's
frames learned once: their timestamps and picture digests)."""

from __future__ import annotations

import hashlib
import math
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import av.video.reformatter
import numpy as np

from clipvis.cli.messages import error_reason
from clipvis.cli.video_io.decoding import _chosen_stream, _open_input, _to_rgb
from clipvis.cli.video_io.images import resized_to
from clipvis.cli.video_io.probe import VideoReadError
from clipvis.cli.video_io.readers import ImageFolderReader, file_reader

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
    file segment reads through Pillow (``file_reader``: an animated WebP named .gif, an APNG, a GIF whose frames FFmpeg
    joins), that reader."""
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
