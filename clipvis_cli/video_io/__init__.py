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

The package's modules, by job: `readers` (VideoReader, ImageFolderReader, open_reader), `images` (Pillow stills
and animations), `background` (BackgroundDecoder), `seeking` (VideoFrameSeeker), `stream_health` (truncation,
damage and restart detection, frame times), `decoding` (PyAV and orientation helpers), `probe` (VideoProbe,
VideoReadError). The names below are today's public ones, importable from `clipvis.cli.video_io` as before.
"""
from __future__ import annotations

from clipvis.cli.video_io.background import BackgroundDecoder, FrameBatch
from clipvis.cli.video_io.decoding import video_stream
from clipvis.cli.video_io.images import picture_count, quiet_metadata_warnings, resized_to, rgb_array, upright
from clipvis.cli.video_io.probe import DEFAULT_FPS, VideoProbe, VideoReadError, interlaced_warning
from clipvis.cli.video_io.readers import FrameReader, ImageFolderReader, VideoReader, file_reader, open_reader
from clipvis.cli.video_io.seeking import VideoFrameSeeker
from clipvis.cli.video_io.stream_health import variable_frame_times, video_start_time

__all__ = [
    "interlaced_warning",
    "BackgroundDecoder",
    "DEFAULT_FPS",
    "FrameBatch",
    "FrameReader",
    "ImageFolderReader",
    "VideoFrameSeeker",
    "VideoProbe",
    "VideoReadError",
    "VideoReader",
    "file_reader",
    "open_reader",
    "picture_count",
    "quiet_metadata_warnings",
    "resized_to",
    "rgb_array",
    "upright",
    "variable_frame_times",
    "video_start_time",
    "video_stream",
]
