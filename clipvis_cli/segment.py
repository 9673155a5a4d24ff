"""The `segment` application: inputs -> decode -> model -> tracks -> writers, one video at a time, streaming.

Decoding runs in a background thread, mask RLE encoding in a worker thread, so both overlap with the model.
Memory is bounded: per-frame masks leave the process as compressed RLE in a temp file (TrackMaskStore), the
model keeps only running sums (model.predictor). Every output is written atomically; run.json says whether an
input is complete.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipvis.cli.atomic import OutputNotWritableError
from clipvis.cli.inputs import VideoSource
from clipvis.cli.mask_store import StoredSegmentations, TrackMaskStore
from clipvis.cli.messages import describe_exception, one_line, path_text, subject_message
from clipvis.cli.progress import Reporter
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.video_io import BackgroundDecoder, VideoReadError, open_reader
from clipvis.cli.writers import CocoWriter, OverlayVideoWriter, RunManifest, VideoOutputPaths, YtvisWriter
from clipvis.cli.writers.manifest import STATUS_INTERRUPTED

FORMATS = ("overlay", "ytvis", "coco")


@dataclass
class SegmentOptions:
    """Everything that decides what `segment` computes and writes."""

    vocabulary: list[str]
    weights: str
    output: Path = Path("clipvis_out")
    formats: tuple[str, ...] = FORMATS
    device: str = "cpu"
    precision: str = "fp32"
    batch_frames: int = 4
    stride: int = 1
    max_frames: int | None = None
    score_threshold: float = 0.0
    max_tracks: int = 50
    exact: bool = False
    skip_existing: bool = True
    overlay_min_score: float = 0.2  # tracks drawn on overlay.mp4 (the official visualiser's threshold)
    config: str | None = None
    clip_config: str | None = None

    def result_options(self) -> dict[str, Any]:
        """The options that change results (the run.json identity besides weights and vocabulary)."""
        data = asdict(self)
        for key in ("vocabulary", "weights", "output", "device", "batch_frames", "skip_existing"):
            data.pop(key)
        data["formats"] = sorted(self.formats)
        return data


@dataclass
class TrackedVideo:
    """One input after tracking: its reader (for a second pass), info, ranked tracks and timings."""

    reader: Any
    info: VideoInfo
    tracks: list[TrackResult]
    timings: dict[str, float]


@dataclass
class VideoOutcome:
    source: VideoSource
    stem: str
    status: str  # "complete", "skipped", "failed"
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    frames: int = 0


class SegmentRunner:
    """Runs a VideoPredictor over inputs and writes each video's files."""

    def __init__(
        self, predictor, options: SegmentOptions, reporter: Reporter, categories: list[str] | None = None
    ) -> None:
        self.predictor = predictor
        self.options = options
        self.categories = categories or list(options.vocabulary)
        self.reporter = reporter
        self.ytvis_writer = YtvisWriter()
        self.coco_writer = CocoWriter()
        self.overlay_writer = OverlayVideoWriter()

    def run(self, source: VideoSource, video_id: int, stem: str) -> VideoOutcome:
        """Process one input. Failures are returned (never raised), except KeyboardInterrupt."""
        opts = self.options
        if not source.ok:
            return self._failed(source, stem, source.describe_error())
        try:
            paths = VideoOutputPaths.for_stem(opts.output, stem).prepare()
        except OutputNotWritableError as error:
            return self._failed(source, stem, str(error))
        if opts.skip_existing:
            previous = RunManifest.read(paths.manifest)
            if previous is not None and previous.is_complete_for(
                opts.weights, opts.vocabulary, opts.result_options(), source, paths.directory
            ):
                self.reporter.video_skipped(source, stem)
                return VideoOutcome(source, stem, "skipped", [paths.directory / n for n in previous.outputs])
        manifest = RunManifest.start(source, stem, opts.weights, opts.vocabulary, opts.result_options())
        try:
            manifest.write(paths.manifest)
            outcome = self._process(source, video_id, stem, paths, manifest)
        except KeyboardInterrupt:
            manifest.mark_failed("interrupted by the user", status=STATUS_INTERRUPTED)
            _write_quietly(manifest, paths.manifest)
            raise
        except (VideoReadError, OutputNotWritableError) as error:
            return self._record_failure(source, stem, one_line(str(error)), manifest, paths)
        except Exception as error:  # noqa: BLE001 - model, memory and library errors fail this input, not the batch
            cause = describe_exception(error)
            if not isinstance(error, (ValueError, OSError, RuntimeError)):
                cause = f"{type(error).__name__}: {cause}"
            return self._record_failure(source, stem, subject_message(cause, source.path), manifest, paths)
        return outcome

    def _failed(self, source: VideoSource, stem: str, message: str) -> VideoOutcome:
        self.reporter.video_failed(source, stem, message)
        return VideoOutcome(source, stem, "failed", error=message)

    def _record_failure(self, source, stem, message, manifest: RunManifest, paths: VideoOutputPaths) -> VideoOutcome:
        manifest.mark_failed(message)
        _write_quietly(manifest, paths.manifest)
        return self._failed(source, stem, message)

    @contextmanager
    def track(self, source: VideoSource, video_id: int, stem: str) -> Iterator[TrackedVideo]:
        """Decode and track one input. The tracks' masks are read from a temporary store, which lives as long as
        the context: use them inside it.

        Raises VideoReadError (and ValueError/RuntimeError from the model) with one-line messages.
        """
        opts = self.options
        reader = open_reader(source, stride=opts.stride, max_frames=opts.max_frames)
        probe = reader.probe()
        total = probe.processed_frame_count(opts.stride, opts.max_frames)
        self.reporter.video_started(source, stem, total)
        with TrackMaskStore(probe.height, probe.width) as store:
            yield self._run_model(store, reader, source, video_id, stem)

    def _run_model(self, store: TrackMaskStore, reader, source: VideoSource, video_id: int, stem: str) -> TrackedVideo:
        """Stream the frames through the model; every frame's track masks go to `store` as RLE."""
        opts = self.options
        probe = reader.probe()
        session = self.predictor.new_video()
        frame_indices: list[int] = []
        timings = {"decode_wait": 0.0, "model": 0.0, "rle_wait": 0.0}
        # The model runs on a thread of its own, so that its large per-frame buffers live in their own glibc arena,
        # apart from the small long-lived allocations of the rest of the run, which would otherwise pin pages
        # between them and make resident memory grow with video length (see clipvis.cli.memory).
        model_thread = ThreadPoolExecutor(1, thread_name_prefix="clipvis-model")
        with model_thread, ThreadPoolExecutor(1) as encoder:
            pending: deque[Future] = deque()
            with BackgroundDecoder(reader, batch_size=opts.batch_frames) as batches:
                wait_start = time.perf_counter()
                for batch in batches:
                    timings["decode_wait"] += time.perf_counter() - wait_start
                    model_start = time.perf_counter()
                    tracked = model_thread.submit(session.push, batch.frames).result()
                    timings["model"] += time.perf_counter() - model_start
                    masks = [frame.masks.numpy() for frame in tracked]
                    pending.append(encoder.submit(_encode_frames, store, masks))
                    rle_start = time.perf_counter()
                    while len(pending) > 1:  # at most one batch encoding behind the model
                        pending.popleft().result()
                    timings["rle_wait"] += time.perf_counter() - rle_start
                    frame_indices.extend(batch.frame_indices)
                    self.reporter.frames_done(len(batch))
                    wait_start = time.perf_counter()
            while pending:
                pending.popleft().result()
            if not frame_indices:
                raise VideoReadError(source.path, "no decodable frames")
            video = session.finish(max_tracks=opts.max_tracks, score_threshold=opts.score_threshold)
        tracks = [
            TrackResult(
                track_id=rank + 1,
                category_id=instance.label + 1,
                score=instance.score,
                segmentations=StoredSegmentations(store, instance.track_id, instance.suppressed_frames.tolist()),
            )
            for rank, instance in enumerate(video.instances)
        ]
        info = VideoInfo(
            video_id=video_id,
            source=path_text(source.path),
            stem=stem,
            height=probe.height,
            width=probe.width,
            fps=probe.fps,
            frame_stride=opts.stride,
            frame_indices=frame_indices,
            file_names=reader.frame_file_names(stem, frame_indices),
            kind=source.kind,
        )
        timings.update({f"model_{k}": v for k, v in video.timings.items()})
        return TrackedVideo(reader, info, tracks, timings)

    def _process(
        self, source: VideoSource, video_id: int, stem: str, paths: VideoOutputPaths, manifest: RunManifest
    ) -> VideoOutcome:
        started = time.perf_counter()
        with self.track(source, video_id, stem) as tracked:
            info, timings = tracked.info, tracked.timings
            outputs = self._write_outputs(tracked.reader, paths, info, tracked.tracks, timings)
        timings["total"] = time.perf_counter() - started
        manifest.mark_complete(info.num_frames, [p.name for p in outputs], timings)
        manifest.write(paths.manifest)
        fps = info.num_frames / max(timings["total"], 1e-9)
        self.reporter.video_finished(source, stem, info.num_frames, fps, outputs)
        return VideoOutcome(source, stem, "complete", outputs, frames=info.num_frames)

    def _write_outputs(self, reader, paths, info, tracks, timings) -> list[Path]:
        categories = self.categories
        outputs: list[Path] = []
        if "ytvis" in self.options.formats:
            outputs.append(self.ytvis_writer.write(paths.ytvis, info, tracks, categories))
        if "coco" in self.options.formats:
            outputs.append(self.coco_writer.write(paths.coco, info, tracks, categories))
        if "overlay" in self.options.formats:
            start = time.perf_counter()
            shown = [track for track in tracks if track.score >= self.options.overlay_min_score]
            outputs.append(self.overlay_writer.write(paths.overlay, iter(reader), info, shown, categories))
            timings["overlay"] = time.perf_counter() - start
        return outputs


def _encode_frames(store: TrackMaskStore, masks: list) -> None:
    for frame_masks in masks:
        store.add_frame(frame_masks)


def _write_quietly(manifest: RunManifest, path: Path) -> None:
    try:
        manifest.write(path)
    except (OSError, ValueError):  # the failure being recorded is already reported on stderr
        pass
