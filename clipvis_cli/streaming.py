"""The streaming loop of `clipvis segment`, as a library: frames in, per-frame track masks as COCO RLE out, in
memory that does not grow with video length, and does not grow with resolution beyond a few frames.

    from clipvis import VideoPredictor, load_model
    from clipvis.cli.streaming import VideoStream

    predictor = VideoPredictor(load_model("clipvis-lvis-r50"), ["cat", "dog"], device="cuda")
    with VideoStream(predictor, "video.mp4", batch_frames=8) as stream:
        for frame in stream:                  # StreamedFrame, in frame order
            frame.rle(track)                  # {"size": [H, W], "counts": "..."} or None (empty), track < Q
        video = stream.finish(max_tracks=50)  # VideoInstances: the tracks kept, their classes and scores

Four stages overlap: a decode thread fills a bounded queue of frame batches (``BackgroundDecoder``); a model
thread runs ``VideoSession.push`` (network, classification, temporal matching, and the full-resolution masks'
run lengths computed on the model's device); an RLE worker turns run lengths into COCO's compressed strings;
the caller's loop consumes the frames. At most a fixed number of batches is alive in each stage, so a caller that
stores each frame's RLE elsewhere (``clipvis.cli.mask_store.TrackMaskStore``, as `segment` does) runs in
bounded memory. The caller's OpenMP workers are released when the stream starts, so that the model thread's are the
only ones (``clipvis.cli.openmp``). A process that streams long videos should put its threads in one malloc arena
before it starts any (``clipvis.cli.memory.share_one_malloc_arena``; the `clipvis` command does).
"""

from __future__ import annotations

import numbers
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from clipvis.cli import rle
from clipvis.cli.distributed import deliver, signals_held
from clipvis.cli.inputs import discover_inputs
from clipvis.cli.memory import LARGE_BATCH_BYTES, check_frame_memory
from clipvis.cli.openmp import release_openmp_workers
from clipvis.cli.rle import CompressedRuns, RleDict
from clipvis.cli.video_io import (
    BackgroundDecoder,
    FrameBatch,
    FrameReader,
    ImageFolderReader,
    VideoReadError,
    open_reader,
)

if TYPE_CHECKING:  # torch: imported when a stream runs, not when the CLI starts
    from clipvis.model.predictor import TrackedFrame, VideoInstances, VideoPredictor


@dataclass
class StreamedFrame:
    """One processed frame: its position among the processed frames, its index in the source, and every track's
    mask as COCO compressed RLE (track order fixed for the video, as ``TrackedFrame``)."""

    position: int
    frame_index: int
    tracked: TrackedFrame  # per-frame probabilities and the match
    compressed: CompressedRuns  # every track's counts string, back to back
    empty: np.ndarray  # [Q] bool: tracks without a pixel on this frame

    def rle(self, track: int) -> RleDict | None:
        """The compressed RLE of a track's mask on this frame, or None when it is empty."""
        if self.empty[track]:
            return None
        return {"size": list(self.compressed.size), "counts": self.compressed.counts(track)}


_END = object()
T = TypeVar("T")


def _frame_pairs(frames: Iterable, stride: int = 1, max_frames: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(index, frame) pairs from readers' pairs or from bare ``[H, W, 3]`` frames (numbered from 0): those whose
    index is a multiple of ``stride``, at most ``max_frames`` of them (nothing more is read from ``frames``)."""
    # torch: only once a stream runs, not at CLI start-up
    from clipvis.model.preprocess import check_uint8_frames, layout_hint

    kept = 0
    items = iter(frames)
    position = 0
    try:
        while max_frames is None or kept < max_frames:
            item = next(items, _END)
            if item is _END:
                return
            if isinstance(item, tuple):
                index, frame = item
                if type(index) is not int:  # a reader's are ints: the check below costs them nothing
                    index = _frame_number(index, position)
            else:
                index, frame = position, item
            position += 1
            if index % stride:
                continue
            kept += 1
            array = _as_array(frame)
            # Every frame, not only a batch's first: the decoder copies the others into the first one's dtype (a
            # float frame became black, a 16-bit one wrapped).
            check_uint8_frames(array, "[H, W, 3]", where=f"frame {index}: ")
            if array.ndim != 3 or array.shape[-1] != 3:
                raise ValueError(f"frame {index}: expected an RGB frame [H, W, 3], got shape {array.shape}"
                                 f"{layout_hint(array, 'frame')}")
            yield index, array
    finally:
        # A reader's iteration (made here) lets its file go as soon as these pairs are closed; an iterator the
        # caller gave is theirs, and may go on after max_frames.
        close = getattr(items, "close", None)
        if items is not frames and close is not None:
            close()


def _frame_number(index: object, position: int) -> int:
    """The index of an ``(index, frame)`` pair as an int; TypeError for one that is no whole number (a timestamp
    ``t / fps`` kept only frame 0 at stride 1, a string failed in ``%``), saying what to pass instead."""
    if isinstance(index, numbers.Integral) and not isinstance(index, bool):
        return int(index)
    if isinstance(index, str | numbers.Number):
        value = repr(index) if len(repr(index)) <= 40 else f"{repr(index)[:37]}..."
        what = f"{value} ({type(index).__name__})"
    else:
        what = f"of type {type(index).__name__}"
    raise TypeError(f"(index, frame) pair {position}: its index {what} is no frame number: pairs are (index, frame), "
                    "the index the frame's number in the video, a whole number (stride keeps its multiples); pass "
                    "the bare frames (numbered from 0), or enumerate(frames)")


def _prepended(first: tuple[int, np.ndarray], rest: Iterator[tuple[int, np.ndarray]]
               ) -> Iterator[tuple[int, np.ndarray]]:
    """``first`` then ``rest``; closing it closes ``rest`` (itertools.chain cannot be closed)."""
    yield first
    yield from rest


def _as_array(frame: object) -> np.ndarray:
    """A frame as a numpy array (a torch tensor is copied to the host); TypeError naming what to do otherwise."""
    if isinstance(frame, np.ndarray):
        return frame
    if hasattr(frame, "detach") and hasattr(frame, "cpu"):  # a torch tensor
        return frame.detach().cpu().numpy()
    if isinstance(frame, str | Path):
        hint = ("a path: give the video file or image folder itself, or a list of image paths (read as an image "
                "folder's images), or read the images first")
    elif hasattr(frame, "convert"):
        hint = "np.asarray(image.convert('RGB'))"
    else:
        hint = "np.asarray(frame)"
    raise TypeError(f"expected uint8 RGB frames [H, W, 3] as numpy arrays or torch tensors, got "
                    f"{type(frame).__name__} ({hint})")


def open_frames(video: str | Path, stride: int = 1, max_frames: int | None = None) -> FrameReader:
    """A reader for one video file or image folder (as `segment` takes them). Raises VideoReadError."""
    sources = discover_inputs([str(video)])
    if len(sources) != 1:
        raise VideoReadError(video, f"holds {len(sources)} videos; stream one at a time")
    return open_reader(sources[0], stride=stride, max_frames=max_frames)


class VideoStream:
    """Stream one video through a ``VideoPredictor``: decode thread -> model thread -> RLE worker -> caller.

    ``frames``: a video file or image folder path, a list of image file paths (the frames in that order, read as an
    image folder's images: ``ImageFolderReader``), a reader (``clipvis.cli.video_io.open_reader``), or any iterable
    of ``(frame_index, frame)`` pairs (the index a whole number, the frame's number in the video: a timestamp or a
    name is refused) or of bare frames (uint8 RGB ``[H, W, 3]`` numpy arrays or torch tensors, one size, numbered
    from 0). ``stride`` keeps the frames whose index is a multiple of it, ``max_frames`` stops after
    that many, whatever ``frames`` is. Iterate once to get ``StreamedFrame``\\ s in order, then call
    :meth:`finish` (after the last frame: to stop early, give ``max_frames``). When the source raises, the frames
    read before the error are yielded first, then its error is raised from the loop; when the model raises on a
    batch (a frame of another size), the frames of the batches before it are (``finish`` then refuses). Use
    as a context manager (or iterate to the end) so the threads stop on an early exit. ``timings`` says where the
    caller's thread waited (decode, model, RLE).
    """

    def __init__(
        self,
        predictor: VideoPredictor,
        frames: str | Path | Sequence[str | Path] | Iterable[np.ndarray] | Iterable[tuple[int, np.ndarray]],
        batch_frames: int = 4,
        max_queued_batches: int = 2,
        stride: int = 1,
        max_frames: int | None = None,
    ) -> None:
        for name, value in (("batch_frames", batch_frames), ("stride", stride), ("max_frames", max_frames)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
                raise TypeError(f"{name} must be a whole number, not {value!r}")
        if batch_frames < 1:
            raise ValueError(f"batch_frames must be >= 1, not {batch_frames}")
        if stride < 1 or (max_frames is not None and max_frames < 1):
            raise ValueError(f"stride and max_frames must be at least 1, not {stride} and {max_frames}")
        if isinstance(frames, str | Path):
            frames = open_frames(frames, stride=stride, max_frames=max_frames)
        elif isinstance(frames, list | tuple) and frames and all(isinstance(item, str | Path) for item in frames):
            # image files, in this order: read as an image folder's are (EXIF orientation, one size)
            frames = ImageFolderReader(frames, stride=stride, max_frames=max_frames)
        elif getattr(frames, "ndim", None) == 3:  # a numpy array or a tensor: iterating it gives its rows
            shape = tuple(frames.shape)
            if shape[-1] == 3:
                raise ValueError(f"frames is one [H, W, 3] frame of shape {shape}: a video is several (a "
                                 "[T, H, W, 3] array, or a list: [frame])")
            raise ValueError(f"frames of shape {shape} look like a grayscale video [T, H, W]: frames are RGB "
                             "[H, W, 3] (np.repeat(frames[..., None], 3, -1))")
        self.predictor = predictor
        self.frames = frames
        self.stride = stride
        self.max_frames = max_frames
        self._yielded = 0
        self.batch_frames = batch_frames
        self.max_queued_batches = max_queued_batches
        self.session = predictor.new_video()
        self.frame_indices: list[int] = []
        self.timings = {"decode_wait": 0.0, "model": 0.0, "rle_wait": 0.0}
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="clipvis-model")
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="clipvis-rle")
        self._decoder: BackgroundDecoder | None = None
        self._started = False
        self._closed = False
        self._failure: str | None = None  # why the iteration stopped with an error, for finish()
        self._source_failed = False

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop decoding and drop the work not started yet (the batch in the model finishes first); unless
        :meth:`finish` returned the video's instances, also give the video up (``VideoSession.close``: its
        temporary scores file goes now, not when the garbage collector gets to it)."""
        self._closed = True
        self._stop_threads()
        self.session.close()

    def _stop_threads(self) -> None:
        # A second Ctrl-C or SIGTERM while the model's batch finishes (the first stopped the stream) waits until the
        # threads stopped: cut short, the process ended with the model's thread still running, and the C++ runtime
        # aborted it (SIGABRT, "terminate called without an active exception").
        with signals_held() as held:
            if self._decoder is not None:
                self._decoder.close()
            self._model_thread.shutdown(wait=True, cancel_futures=True)
            self._encoder.shutdown(wait=True, cancel_futures=True)
        deliver(held)

    def __iter__(self) -> Iterator[StreamedFrame]:
        if self._started:
            raise RuntimeError("a VideoStream can be iterated once")
        if self._closed:
            raise RuntimeError("this VideoStream was closed (its with-block ended, or close() was called): start a "
                               "new one")
        self._started = True
        try:
            yield from self._stream()
        except GeneratorExit:  # the caller left the loop
            raise
        except BaseException as error:
            self._failure = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            self._stop_threads()  # the batch in the model still adds its scores: then they can go
            self.session.close()  # finish() refuses from here on
            raise
        finally:
            self._stop_threads()  # the caller may still finish() after the last frame (or after leaving early)

    def _stream(self) -> Iterator[StreamedFrame]:
        pairs = _frame_pairs(self.frames, self.stride, self.max_frames)
        try:
            first = next(pairs, None)  # the frame size decides how many batches may be in flight
        except Exception:
            self._source_failed = True  # at its first frame
            raise
        if first is None:
            return
        height, width = first[1].shape[:2]
        large = first[1].nbytes * self.batch_frames > LARGE_BATCH_BYTES
        queued = 1 if large else self.max_queued_batches
        model_depth = 1 if large else 2  # the batch in the model, and (small frames) one queued behind it
        source = getattr(self.frames, "path", "frames")
        check_frame_memory(height, width, self.batch_frames, queued, source, model_batches=model_depth)
        self._decoder = BackgroundDecoder(
            _prepended(first, pairs), batch_size=self.batch_frames, max_queued_batches=queued
        )
        # The model thread's OpenMP team must be the only one: with the caller's too, PyTorch's workers sleep
        # between parallel regions and the network runs 8-10 % slower (clipvis.cli.openmp).
        release_openmp_workers()
        in_model: deque[tuple[Future[list[TrackedFrame]], FrameBatch]] = deque()
        encoding: Future[list[StreamedFrame]] | None = None
        source_error: Exception | None = None
        wait_start = time.perf_counter()
        with self._decoder as batches:
            batch_iterator = iter(batches)
            while True:
                try:
                    batch = next(batch_iterator)
                except StopIteration:
                    break
                except Exception as error:  # the source's (re-raised by the decoder): after the frames read before it
                    source_error = error
                    break
                self.timings["decode_wait"] += time.perf_counter() - wait_start
                # Queued behind the batch the model is on, so the model never waits for this thread.
                in_model.append((self._submit(self._model_thread, self.session.push, batch.frames), batch))
                if len(in_model) >= model_depth:
                    encoding = yield from self._advance(in_model.popleft(), encoding)
                wait_start = time.perf_counter()
        while in_model:
            encoding = yield from self._advance(in_model.popleft(), encoding)
        if encoding is not None:
            yield from self._collect(encoding)
        if source_error is not None:
            self._source_failed = True
            try:
                raise source_error
            finally:  # the error's traceback holds this frame: no cycle through it (it kept the batches alive)
                source_error = None

    def _advance(
        self, job: tuple[Future[list[TrackedFrame]], FrameBatch], encoding: Future[list[StreamedFrame]] | None
    ) -> Generator[StreamedFrame, None, Future[list[StreamedFrame]]]:
        """Wait for a batch's model results, hand them to the RLE worker, then yield the previous batch's frames
        (encoded meanwhile). Returns the new encoding job. Where the model failed on the batch, the previous batch's
        frames are yielded before its error is raised (they were lost with it)."""
        self._check_open()
        future, batch = job
        del job
        start = time.perf_counter()
        model_error: Exception | None = None
        try:
            tracked = future.result()
        except Exception as error:  # noqa: BLE001 - raised below, after the frames finished before it
            model_error = error
        finally:  # a failed future holds its error, whose traceback holds this frame: no cycle through it
            del future
        if model_error is not None:
            try:
                if encoding is not None:
                    yield from self._collect(encoding)
                raise model_error
            finally:
                model_error = None
        self.timings["model"] += time.perf_counter() - start
        first = len(self.frame_indices)
        self.frame_indices.extend(batch.frame_indices)
        next_encoding = self._submit(self._encoder, _encode_batch, tracked, batch.frame_indices, first)
        if encoding is not None:
            yield from self._collect(encoding)
        return next_encoding

    def _submit(self, executor: ThreadPoolExecutor, function: Callable[..., T], *args: object) -> Future[T]:
        try:
            return executor.submit(function, *args)
        except RuntimeError:  # shut down meanwhile by close() from another thread
            self._check_open()
            raise

    def _check_open(self) -> None:
        if self._closed:  # iterated on after close(): its threads are gone
            raise RuntimeError("this VideoStream was closed (its with-block ended, or close() was called) while its "
                               "frames were being read: start a new one")

    def _collect(self, encoding: Future[list[StreamedFrame]]) -> Iterator[StreamedFrame]:
        self._check_open()  # after close() the decoder ends early: the frames would stop short, silently
        start = time.perf_counter()
        frames = encoding.result()
        self.timings["rle_wait"] += time.perf_counter() - start
        for frame in frames:
            self._yielded += 1  # counted before the caller gets it: a caller may leave the loop on any frame
            yield frame

    def finish(self, max_tracks: int | None = None, score_threshold: float = 0.0) -> VideoInstances:
        """The video's instances (``VideoSession.finish``), once every frame was consumed. Raises RuntimeError
        before the stream was iterated, after it stopped with an error (the source's, or the model's), and after the
        caller left the loop early; VideoReadError for a source without frames."""
        if not self._started:
            raise RuntimeError("finish() before any frame was read: iterate over the stream first "
                               "(for frame in stream: ...), then call finish()")
        if self._failure is not None:
            what = "the frames' source failed" if self._source_failed else "the stream stopped with an error"
            raise RuntimeError(f"finish() after {what} ({self._failure}): the video was not processed to its end; "
                               "start a new VideoStream")
        if not self.frame_indices:
            path = getattr(self.frames, "path", "frames")
            raise VideoReadError(path, "no decodable frames")
        if self._yielded < len(self.frame_indices):  # the model ran ahead of the caller, who left the loop
            raise RuntimeError(
                f"finish() after leaving the stream early: the model saw {len(self.frame_indices)} frames, "
                f"{self._yielded} were yielded, and the scores would count them all; to stop early, give max_frames"
            )
        if self.session.closed:
            raise RuntimeError("finish() after the stream was closed (its with-block ended, or close() was called): "
                               "call finish() inside the with-block, after the loop")
        return self.session.finish(max_tracks=max_tracks, score_threshold=score_threshold)


def _encode_batch(tracked: list[TrackedFrame], frame_indices: list[int], first: int) -> list[StreamedFrame]:
    """RLE worker: every frame's run lengths (waiting for their device-to-host copy) -> compressed strings."""
    out = []
    for offset, (frame, frame_index) in enumerate(zip(tracked, frame_indices, strict=True)):
        runs = frame.mask_runs.wait()
        lengths = runs.lengths.numpy()
        compressed = rle.compress_runs(runs.counts.numpy(), lengths, runs.size)
        out.append(StreamedFrame(first + offset, frame_index, frame, compressed, lengths <= 1))
    return out
