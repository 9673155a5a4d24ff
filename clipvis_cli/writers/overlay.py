"""Overlay video writer (`overlay.mp4`): the processed frames with translucent masks, contours and labels.

Encoding: H.264 (libx264), yuv420p, MP4 with `movflags=+faststart` (the index is at the front, so browsers
start playing before the download ends). The frame rate is the processed rate (`fps / stride`, exact
fraction); the frame count is the number of processed frames. H.264 4:2:0 needs even dimensions: an odd
width or height is padded by one pixel (a copy of the last column/row) on the right/bottom, so the
overlay is the video's size rounded up to even and masks stay pixel-aligned.

Drawing: each track gets a fixed colour from `PALETTE[track_id % len(PALETTE)]` (stable across frames and
runs), its mask blended at `alpha`, its outline drawn with OpenCV contours, and the label
"class #track score" on a dark box at the mask's top-left.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from clipvis.cli import rle
from clipvis.cli.atomic import OutputNotWritableError, atomic_output_path
from clipvis.cli.results import TrackResult, VideoInfo, check_tracks
from clipvis.cli.video_io import BackgroundDecoder
from clipvis.cli.writers.base import SegmentedVideo
from clipvis.cli.writers.layout import OVERLAY_NAME

# A variable-frame-rate source's overlay keeps each frame's own time, in milliseconds.
VARIABLE_RATE_CLOCK = 1000


def _timestamps(video: VideoInfo, time_base: Fraction) -> list[int] | None:
    """Each processed frame's pts in ``time_base`` (from the video's first processed frame), strictly increasing,
    for a source with ``frame_times``; None for a constant rate (pts = position)."""
    if video.frame_times is None:
        return None
    first = video.frame_times[0]
    stamps: list[int] = []
    for seconds in video.frame_times:
        stamp = round((seconds - first) / time_base)
        stamps.append(max(stamp, stamps[-1] + 1) if stamps else stamp)
    return stamps


# 20 well-separated RGB colours.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
)


def track_colour(track_id: int) -> tuple[int, int, int]:
    """The RGB colour of a track (same id, same colour, in every frame and every run)."""
    return PALETTE[track_id % len(PALETTE)]


def track_label(track: TrackResult, categories: Sequence[str]) -> str:
    """`"<class> #<track id> <score>"`, e.g. `"dog #3 0.87"`."""
    return f"{categories[track.category_id - 1]} #{track.track_id} {track.score:.2f}"


@dataclass(frozen=True)
class OverlayStyle:
    """Drawing and encoding settings of the overlay video."""

    alpha: float = 0.45
    draw_contours: bool = True
    draw_labels: bool = True
    crf: int = 23
    preset: str = "veryfast"


class OverlayRenderer:
    """Draw the tracks of one processed frame onto an RGB image (no encoding).

    The frame's masks are painted into one label image (``clipvis.cli.rle.label_map``: straight from the run
    lengths, no mask decoded on its own), where the better-ranked track (earlier in ``tracks``) is on top where
    masks overlap. Tinting and outlines are then a few whole-image operations, whatever the number of tracks:
    the tint is the track's colour blended at ``alpha``, the outline the mask's inner border (``thickness``
    pixels wide) in the track's colour.
    """

    def __init__(self, style: OverlayStyle | None = None) -> None:
        self.style = style or OverlayStyle()

    def render(
        self, frame: np.ndarray, position: int, tracks: Sequence[TrackResult], categories: Sequence[str]
    ) -> np.ndarray:
        """A copy of `frame` (H×W×3 uint8 RGB) with processed frame `position` of every track drawn on it."""
        canvas = frame.copy()
        height, width = canvas.shape[:2]
        painted = rle.label_map([track.segmentations[position] for track in tracks], height, width)
        drawn = np.flatnonzero(painted.boxes[:, 2] > 0)
        if drawn.size == 0:
            return canvas
        scale = max(0.15, min(1.0, min(height, width) / 900))
        thickness = max(1, round(2 * scale))
        # label -> RGB (label 0: unused); 256 rows for uint8 labels, the table of OpenCV's per-channel lookup
        colours = np.zeros((256 if painted.labels.dtype == np.uint8 else len(tracks) + 1, 3), dtype=np.uint8)
        colours[1 : len(tracks) + 1] = [track_colour(track.track_id) for track in tracks]
        border = 2 * thickness + 1 if self.style.draw_contours else 0
        rows = max(1, STRIP_PIXELS // width)  # strips: temporaries stay small at 4K
        for top in range(0, height, rows):
            self._tint_strip(canvas, frame, painted.labels, colours, top, min(height, top + rows), border)
        if self.style.draw_labels:
            for k in drawn[::-1]:  # the best-ranked track's label last, on top
                x, y = (int(v) for v in painted.boxes[k, :2])
                self._draw_label(canvas, track_label(tracks[k], categories), (x, y), track_colour(tracks[k].track_id),
                                 scale)
        return canvas

    def _tint_strip(
        self, canvas: np.ndarray, frame: np.ndarray, labels: np.ndarray, colours: np.ndarray,
        top: int, bottom: int, border: int,
    ) -> None:
        """Rows ``top:bottom`` of the canvas: tint under every mask, then (``border`` > 0: the outline kernel's
        size) each mask's inner border in its colour."""
        strip = labels[top:bottom]
        covered = cv2.compare(strip, 0, cv2.CMP_GT)
        if not covered.any():
            return
        colour = _colour_image(strip, colours)  # [h, W, 3]
        tinted = cv2.addWeighted(frame[top:bottom], 1 - self.style.alpha, colour, self.style.alpha, 0)
        cv2.copyTo(tinted, covered, canvas[top:bottom])
        if border:
            # A pixel is on a border when its neighbourhood holds another label; rows beyond the strip count too.
            margin = border // 2
            above, below = max(0, top - margin), min(labels.shape[0], bottom + margin)
            kernel = np.ones((border, border), np.uint8)
            window = labels[above:below]
            edges = cv2.compare(cv2.dilate(window, kernel), cv2.erode(window, kernel), cv2.CMP_NE)
            edges = cv2.bitwise_and(edges[top - above : top - above + bottom - top], covered)
            cv2.copyTo(colour, edges, canvas[top:bottom])

    @staticmethod
    def _draw_label(
        canvas: np.ndarray, text: str, anchor: tuple[int, int], colour: tuple[int, int, int], scale: float
    ) -> None:
        font = cv2.FONT_HERSHEY_SIMPLEX
        font_scale = 0.25 + 0.55 * scale
        text_thickness = 2 if scale >= 0.9 else 1
        (text_width, text_height), baseline = cv2.getTextSize(text, font, font_scale, text_thickness)
        height, width = canvas.shape[:2]
        pad = 2
        box_height = text_height + baseline + 2 * pad
        x = min(max(anchor[0], 0), max(width - text_width - 2 * pad, 0))
        y = anchor[1] - box_height if anchor[1] - box_height >= 0 else anchor[1]
        y = min(max(y, 0), max(height - box_height, 0))
        x2, y2 = min(x + text_width + 2 * pad, width), min(y + box_height, height)
        canvas[y:y2, x:x2] = (canvas[y:y2, x:x2].astype(np.float32) * 0.35).astype(np.uint8)
        cv2.rectangle(canvas, (x, y), (x2 - 1, y2 - 1), colour, 1)
        origin = (x + pad, y + pad + text_height)
        cv2.putText(canvas, text, origin, font, font_scale, (255, 255, 255), text_thickness, cv2.LINE_AA)


def _colour_image(labels: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """``colours[labels]`` as an ``[h, w, 3]`` image: one OpenCV table lookup per channel for uint8 labels (~10x
    faster than numpy's gather; ``colours`` then has 256 rows), numpy's ``take`` otherwise."""
    if labels.dtype != np.uint8:
        return np.take(colours, labels, axis=0)
    return cv2.merge([cv2.LUT(labels, np.ascontiguousarray(colours[:, channel])) for channel in range(3)])


STRIP_PIXELS = 1 << 20  # the tint and outlines are drawn in strips of about this many pixels
# Above 1920x1080 the encoder looks 2 frames ahead instead of its preset's 10: ~170 MB less at 3840x2160, where
# encoder memory would otherwise make peak memory grow with resolution (bench/bench_segment.py part d).
SHORT_LOOKAHEAD_PIXELS = 1920 * 1088
SHORT_LOOKAHEAD = "rc-lookahead=2:sync-lookahead=0"
# With x264's macroblock-tree rate control the same frames gave other bytes from run to run: its result depends on
# memory nobody wrote (MALLOC_PERTURB_ changes it; rc-lookahead=0, which also turns the tree off, or mbtree=0 alone
# make it stable). Without it the overlay is the same file whatever ran before, in any process or thread; on the
# bench video (854x480, 50 tracks drawn) 0.3 % smaller, 0.1 dB lower PSNR, ~8 % less encoder CPU time.
DETERMINISTIC = "mbtree=0"
# Frames drawn at once: the CPUs this process may use, shared with the other ranks on the machine, within these
# bounds, and fewer when frames are so large that their drawing buffers would pass OVERLAY_RENDER_BYTES.
MIN_RENDER_THREADS, MAX_RENDER_THREADS = 2, 8
OVERLAY_RENDER_BYTES = 256 * 2**20
OVERLAY_READ_AHEAD_BYTES = 32 * 2**20  # frames decoded ahead of the overlay: up to 4, fewer when they are large


def decoded_ahead(frames: Iterable[tuple[int, np.ndarray]], depth: int = 4) -> Iterator[tuple[int, np.ndarray]]:
    """The same ``(frame_index, frame)`` pairs, decoded in a background thread up to ``depth`` frames ahead, so
    decoding overlaps drawing and encoding. Decoding errors are re-raised here (VideoReadError keeps its line)."""
    with BackgroundDecoder(frames, batch_size=1, max_queued_batches=depth) as batches:
        for batch in batches:
            yield batch.frame_indices[0], batch.frames[0]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, as set by taskset, cgroups' cpusets or SLURM), divided
    among the processes torchrun started on this machine (``LOCAL_WORLD_SIZE``)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    try:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_ranks = 1
    return max(1, cpus // local_ranks)


def render_threads_for(height: int, width: int, cpus: int | None = None) -> int:
    """How many frames of ``height`` x ``width`` are drawn at once: ``cpus`` (default: ``usable_cpus()``) between
    ``MIN_RENDER_THREADS`` and ``MAX_RENDER_THREADS``, and no more than ``OVERLAY_RENDER_BYTES`` allows. A frame
    being drawn holds its canvas (3 bytes a pixel), label image (1-2), yuv420p planes (1.5) and one strip's
    temporaries (``STRIP_PIXELS`` x ~10 bytes)."""
    cpus = usable_cpus() if cpus is None else cpus
    per_frame = 6 * height * width + 10 * STRIP_PIXELS
    by_memory = OVERLAY_RENDER_BYTES // per_frame
    return max(MIN_RENDER_THREADS, min(MAX_RENDER_THREADS, cpus, by_memory))


def even_size(height: int, width: int) -> tuple[int, int]:
    """(height, width) rounded up to even numbers (H.264 4:2:0 requirement)."""
    return height + height % 2, width + width % 2


def pad_to_even(image: np.ndarray) -> np.ndarray:
    """Pad an odd-sized H×W×3 image by one replicated row/column at the bottom/right."""
    height, width = image.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return image
    return np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


class OverlayVideoWriter:
    """Encode the overlay video of one processed video to MP4 (H.264, yuv420p, faststart), atomically.

    `frames` must yield the processed frames in order — either H×W×3 uint8 RGB arrays or the
    `(frame_index, frame)` pairs a reader yields (then each index is checked against
    `video.frame_indices`). Exactly `video.num_frames` frames of size (video.height, video.width) are
    required; otherwise ValueError is raised and no file is left behind.

    As an `OutputWriter` (`write_video`) it draws the tracks scoring at least `min_score`. Frames are drawn by
    `render_threads` threads (default: `render_threads_for` the video's size) and encoded by x264 with `threads`
    threads (0: x264's own choice).
    """

    format = "overlay"
    file_name = OVERLAY_NAME
    draws_frames = True  # decodes and draws every frame: SegmentRunner runs the other writers alongside it

    def __init__(
        self, style: OverlayStyle | None = None, threads: int = 0, min_score: float = 0.0,
        render_threads: int | None = None,
    ) -> None:
        if render_threads is not None and render_threads < 1:
            raise ValueError(f"render_threads must be >= 1, not {render_threads}")
        self.style = style or OverlayStyle()
        self.renderer = OverlayRenderer(self.style)
        self.threads = threads
        self.min_score = min_score
        self.render_threads = render_threads

    def write_video(self, path: Path, video: SegmentedVideo) -> Path:
        """The `OutputWriter` interface: decode the processed frames again and draw the shown tracks on them."""
        shown = [track for track in video.tracks if track.score >= self.min_score]
        depth = max(1, min(4, OVERLAY_READ_AHEAD_BYTES // (3 * video.info.height * video.info.width)))
        return self.write(path, decoded_ahead(video.frames(), depth), video.info, shown, video.categories)

    def write(
        self,
        path: Path | str,
        frames: Iterable[np.ndarray | tuple[int, np.ndarray]],
        video: VideoInfo,
        tracks: Sequence[TrackResult],
        categories: Sequence[str],
    ) -> Path:
        check_tracks(video, list(tracks), len(categories))
        if video.num_frames == 0:
            raise ValueError(f"overlay for {video.stem!r}: no processed frames")
        final = Path(path)
        with atomic_output_path(final) as tmp:
            try:
                self._encode(tmp, frames, video, tracks, categories)
            except OSError as error:  # file-system failures while muxing (disk full, permissions)
                raise OutputNotWritableError(final, error) from error
        return final

    def _encode(
        self,
        path: Path,
        frames: Iterable[np.ndarray | tuple[int, np.ndarray]],
        video: VideoInfo,
        tracks: Sequence[TrackResult],
        categories: Sequence[str],
    ) -> None:
        rate = video.processed_fps
        time_base = Fraction(1, VARIABLE_RATE_CLOCK) if video.frame_times is not None else 1 / rate
        stamps = _timestamps(video, time_base)

        def encode(planes: np.ndarray, position: int) -> None:
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = stamps[position] if stamps is not None else position
            frame.time_base = time_base
            container.mux(stream.encode(frame))

        # Frames are drawn (and converted to YUV) by the drawing threads, encoded in order here.
        drawing = self.render_threads or render_threads_for(video.height, video.width)
        with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container, \
                ThreadPoolExecutor(drawing, thread_name_prefix="clipvis-overlay") as renderers:
            stream = self._add_stream(container, video, rate, time_base)
            pending: deque[tuple[Future, int]] = deque()
            written = 0
            for item in frames:
                if written >= video.num_frames:
                    raise ValueError(
                        f"overlay for {video.stem!r}: more frames than the {video.num_frames} processed"
                    )
                image = self._checked_frame(item, written, video)
                pending.append((renderers.submit(self._render_yuv, image, written, tracks, categories), written))
                written += 1
                if len(pending) > drawing:
                    future, position = pending.popleft()
                    encode(future.result(), position)
            while pending:
                future, position = pending.popleft()
                encode(future.result(), position)
            if written != video.num_frames:
                raise ValueError(f"overlay for {video.stem!r}: got {written} frames, expected {video.num_frames}")
            container.mux(stream.encode(None))

    def _render_yuv(
        self, image: np.ndarray, position: int, tracks: Sequence[TrackResult], categories: Sequence[str]
    ) -> np.ndarray:
        """The drawn frame as the encoder's yuv420p planes (``[3H/2, W]``, BT.601 limited range, as FFmpeg's own
        conversion within rounding), converted here in the drawing threads rather than by the encoding thread."""
        drawn = self.renderer.render(image, position, tracks, categories)
        return cv2.cvtColor(pad_to_even(drawn), cv2.COLOR_RGB2YUV_I420)

    def _add_stream(self, container: av.container.OutputContainer, video: VideoInfo, rate: Fraction,
                    time_base: Fraction):
        params = [DETERMINISTIC]
        if video.height * video.width > SHORT_LOOKAHEAD_PIXELS:
            params.append(SHORT_LOOKAHEAD)  # x264's look-ahead frames dominate memory above 1080p
        options = {"crf": str(self.style.crf), "preset": self.style.preset, "x264-params": ":".join(params)}
        stream = container.add_stream("libx264", rate=rate, options=options)
        stream.height, stream.width = even_size(video.height, video.width)
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = time_base
        if video.pixel_aspect is not None:  # an anamorphic source: players stretch the overlay as they do it
            stream.codec_context.sample_aspect_ratio = video.pixel_aspect
        stream.codec_context.thread_count = self.threads
        return stream

    @staticmethod
    def _checked_frame(item: np.ndarray | tuple[int, np.ndarray], position: int, video: VideoInfo) -> np.ndarray:
        if isinstance(item, tuple):
            index, image = item
            if index != video.frame_indices[position]:
                raise ValueError(
                    f"overlay for {video.stem!r}: frame {position} has source index {index}, "
                    f"expected {video.frame_indices[position]}"
                )
        else:
            image = item
        if image.shape != (video.height, video.width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"overlay for {video.stem!r}: frame {position} is {image.shape} {image.dtype}, "
                f"expected ({video.height}, {video.width}, 3) uint8"
            )
        return image
