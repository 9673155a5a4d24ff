"""What a video input is before it is read (`VideoProbe`), the one error of reading it (`VideoReadError`), and the
limits on plausible frame rates."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from clipvis.cli.messages import PathError

DEFAULT_FPS = Fraction(30)


# A guessed or base rate of 1000 or more is a container's time base (Matroska's 1/1000: "1k"), not the video's; an
# average rate, which FFmpeg measures from the frames, may be a high-speed camera's 1000 frames/s (it was taken as
# unknown: 30 frames/s in ytvis.json, and Label Studio kept one frame in ten)
_MAX_PLAUSIBLE_FPS = 1000


_MAX_AVERAGE_FPS = 10_000


_AVI_LEADING_FRAMES = 4  # an AVI's first decoded frame comes at most this many chunks in (B-frame delay)


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
    follows it (a display matrix with a flip: a vertical flip is a half turn and a mirror). `codec` is the
    codec's own name as FFmpeg's codec descriptor gives it (`h264`, `av1`, `vp9`), not the decoder's (`libdav1d`).
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
    interlaced: bool = False  # the first frame is coded as two fields (interlaced TV material: combs where it moves)

    def processed_frame_count(self, stride: int = 1, max_frames: int | None = None) -> int | None:
        """Estimated number of frames a reader with this stride / max_frames yields (None if unknown)."""
        if self.frame_count is None:
            return max_frames
        count = -(-self.frame_count // stride)
        return count if max_frames is None else min(count, max_frames)


def interlaced_warning(probe: VideoProbe) -> str | None:
    """The warning for an interlaced video (its first frame says so: `VideoProbe.interlaced`), which clipvis reads as
    it is stored, two fields woven into each frame, so moving edges comb in the model's frames and the overlay; None
    for a progressive one."""
    if not probe.interlaced:
        return None
    return ("interlaced video: its frames are read as stored, so moving edges show combing to the model and in the "
            "overlay; deinterlace it first for better masks, e.g. ffmpeg -i IN -vf bwdif=mode=send_frame -c:v libx264 "
            "-crf 18 OUT.mp4")
