"""`BackgroundDecoder`: runs a reader in a daemon thread and hands out `FrameBatch`es through a bounded queue."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np


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
