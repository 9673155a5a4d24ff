"""Whether a video decodes whole: a file cut short (ends well before its declared duration), frames lost to damage
mid-way (`_StreamHealth`: the frames' times jump where FFmpeg flagged corrupt data), recordings joined with `cat`
(an MPEG-TS whose counters start again: `_TransportStreamStarts`), and the frame times of variable-rate videos."""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import av.error
import av.video.reformatter

from clipvis.cli.iso_boxes import iso_top_level_boxes
from clipvis.cli.video_io.probe import DEFAULT_FPS

# Corrupt data within this many frame durations of a gap in the frames' times is what lost its frames (B-frames put
# a damaged packet's frame a few frames from where the loss shows; a parser may flag the packet before the one cut)
_DAMAGE_REACH_FRAMES = 4


_RECENT_EVENTS = 64  # the gaps and corrupt data kept to pair up: a gap and its damage come out close together


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


# How far the last frame's time may be from its number at the average rate, for a constant rate: 2 ms (timestamps
# rounded to milliseconds at both ends) and 0.1 % of the time between the first and the last frame.
CONSTANT_RATE_SLACK = (0.002, 0.001)


def variable_frame_times(times: Sequence[float], frame_indices: Sequence[int], fps: Fraction) -> list[float] | None:
    """The frames' times (seconds from the video's start), when they are not what their numbers at ``fps`` say
    (a variable frame rate: screen recorders write frames only when the screen changes; phones vary the rate):
    off by more than half a frame anywhere. None for a constant rate, when the times are not known, and when they do
    not increase from frame to frame: they are then no frames' times (an AVI or ASF file with B-frames, whose times
    FFmpeg gives in decoding order; recordings joined with ``cat``, whose times start again), and the frames are
    numbered at the constant rate (frame n at n / fps), as players of such files do.

    ``fps`` is an average over the video's duration, which counts the last frame's own duration: a slideshow GIF of
    2-second slides whose last one lasts 3 s averages 0.474 frames/s, its frames within half a frame (1.05 s) of
    n / 0.474 s and drifting to 0.89 s off. So the frames' own rate, from the time between the first and the last,
    must also be ``fps``'s, within `CONSTANT_RATE_SLACK` (timestamps' rounding); the times are given otherwise."""
    if not times or len(times) != len(frame_indices) or not fps or not _increasing(times):
        return None
    first = times[0] - frame_indices[0] / float(fps)
    tolerance = 0.5 / float(fps)
    if all(abs(t - first - i / float(fps)) <= tolerance for t, i in zip(times, frame_indices, strict=True)):
        numbered = (frame_indices[-1] - frame_indices[0]) / float(fps)  # the last frame's time, numbered at fps
        seconds, fraction = CONSTANT_RATE_SLACK
        if abs(times[-1] - times[0] - numbered) <= seconds + fraction * numbered:
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


# The boxes an ISO media file (MP4, MOV, 3GP) starts with: ftyp, or in an old QuickTime file one of the others.
_ISO_MEDIA_FIRST_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot"})


def iso_media_cut(path: Path) -> str | None:
    """Where an ISO media file (MP4, MOV) cut short ends, as "the file ends at byte N, inside its moov box (which runs
    to byte M)", by its top-level boxes' sizes against the file's; None for a file whose boxes end with it, or that is
    no ISO media file (or cannot be read). A file cut inside its ``moov`` (at its front: ``+faststart``) has no video
    stream FFmpeg can find, one cut after it no frames, though neither is the file FFmpeg was given."""
    try:
        size = path.stat().st_size
        for kind, offset, end in iso_top_level_boxes(path):
            if offset == 0 and kind not in _ISO_MEDIA_FIRST_BOXES:
                return None
            if end is None:
                return f"the file ends at byte {size}, inside a box's header"
            if end - offset < 8 or not kind.isascii():
                return None  # no box: damage, or no ISO media file after all, not a cut
            if end > size:
                name = kind.decode("ascii", "replace")
                return f"the file ends at byte {size}, inside its {name} box (which runs to byte {end})"
    except OSError:
        return None
    return None
