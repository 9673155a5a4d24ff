"""The `segment` application: inputs -> decode -> model -> tracks -> writers, one video at a time, streaming.

The streaming loop (clipvis.cli.streaming.VideoStream) decodes in a background thread, runs the model in a
thread of its own and encodes masks in a worker thread, so all overlap. Memory is bounded: per-frame masks leave
the process as compressed RLE in a temp file (TrackMaskStore), the model keeps only running sums
(model.predictor).

`SegmentRunner` orchestrates each input's run and owns the error handling: each input gets its own output folder
(locked while it runs; another source with the same stem gets `stem-2/`), is skipped when its run.json shows a
complete run by the same producer (checkpoint file, resolved config, vocabulary, options, clipvis version:
clipvis.cli.run_identity) on the same unchanged source (clipvis.cli.segment_resume; why it runs again:
clipvis.cli.rerun), and otherwise runs; any failure becomes one line and a "failed" run.json, never an exception that
stops the batch. The files themselves are written by a list of `OutputWriter`s (clipvis.cli.writers), each under a
temporary name; once all are written they are renamed into place together (clipvis.cli.atomic.OutputStaging,
clipvis.cli.segment_outputs), so a failed or interrupted input leaves none of its files. The "complete" run.json comes
last and records each output's size.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clipvis.cli import __version__
from clipvis.cli.atomic import OutputNotWritableError, OutputStaging, remove_stale_temp_files
from clipvis.cli.distributed import OtherRankFailed, deliver, signals_held
from clipvis.cli.exporters.base import FormatLimitError
from clipvis.cli.inputs import VideoSource
from clipvis.cli.locks import FolderBusyError
from clipvis.cli.mask_store import StoredSegmentations, TrackMaskStore
from clipvis.cli.messages import (
    STREAM_PARAMETER_FLAGS,
    model_error_message,
    one_line,
    shell_word,
    shown_path,
    subject_message,
)
from clipvis.cli.output_formats import create_writers, writer_formats
from clipvis.cli.progress import Reporter, SerializedReporter
from clipvis.cli.rerun import rerun_reason
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.run_identity import config_identity
from clipvis.cli.segment_outputs import (
    WritingProgress,
    commit_staged,
    format_limit_reason,
    formats_not_written_message,
    settle_stale_outputs,
    write_outputs,
)
from clipvis.cli.segment_resume import (
    RefusedReplacement,
    complete_but_corrected,
    complete_for_any,
    corrected_files,
    replacement_refusal,
)
from clipvis.cli.streaming import VideoStream
from clipvis.cli.temp_space import OutputProjection, TemporarySpaceWatch
from clipvis.cli.video_io import (
    DEFAULT_FPS,
    FrameReader,
    VideoReadError,
    interlaced_warning,
    open_reader,
    variable_frame_times,
    video_start_time,
)
from clipvis.cli.writers import (
    DEFAULT_FORMATS,
    OutputWriter,
    RunManifest,
    SegmentedVideo,
    VideoOutputPaths,
)
from clipvis.cli.writers.layout import YTVIS_NAME, ClaimedFolder, OutputRootListing, claim_output_folder
from clipvis.cli.writers.manifest import STATUS_INTERRUPTED, config_hash, source_owner
from clipvis.cli.writers.overlay import oversized_overlay_warning, unencodable_overlay_reason

if TYPE_CHECKING:  # the model package: imported when the weights load, not when the CLI starts
    from clipvis.model import VideoPredictor

FORMATS = writer_formats()  # every --formats name (DEFAULT_FORMATS: what segment writes unless told)
# Formats whose files changed since clipvis 0.1.0 first wrote them, by revision: an output holding an older one is
# not complete for `--skip-existing` (mots-png 2: CVAT's flat instances/NNNNNN.png, not instances/<video>/).
FORMAT_REVISIONS = {"mots-png": 2}


DEFAULT_IMAGE_FPS = float(DEFAULT_FPS)


@dataclass
class SegmentOptions:
    """Everything that decides what `segment` computes and writes.

    `checkpoint` is the identity of the checkpoint file `weights` resolved to (`checkpoint_identity`), set by the
    command once the weights are found; it keys `--skip-existing` together with the other result options.
    """

    vocabulary: list[str]
    weights: str
    output: Path = Path("clipvis_out")
    formats: tuple[str, ...] = DEFAULT_FORMATS
    device: str = "cpu"
    precision: str = "fp32"
    batch_frames: int = 4
    stride: int = 1
    max_frames: int | None = None
    score_threshold: float = 0.0
    # None: the model config's detections_per_video (TEST.DETECTIONS_PER_IMAGE), set once the model is loaded
    max_tracks: int | None = None
    exact: bool = False
    skip_existing: bool = True
    overlay_min_score: float = 0.2  # tracks drawn on overlay.mp4 (the official visualiser's threshold)
    image_fps: float = DEFAULT_IMAGE_FPS  # the rate image-folder inputs are given
    media_url: str = ""  # labelstudio.zip: the URL prefix of its tasks' video (clipvis export's --media-url)
    config: str | None = None
    clip_config: str | None = None
    checkpoint: dict[str, Any] | None = None
    allow_hub_clip: bool = False  # let a config/checkpoint name a CLIP outside the released ones and download it
    # evaluate's benchmark vocabulary: class names may repeat, as the official code takes them (results by class index)
    allow_duplicate_names: bool = False

    def result_options(self, paths_as_given: bool = False, release_path: bool = False) -> dict[str, Any]:
        """What changes results, besides weights and vocabulary: the run.json identity. The config files count by
        their resolved contents (a `_BASE_` file edited counts too) and resolved path, the checkpoint by its file's
        identity: a released checkpoint given by name by its size and modification time alone (its cache copied
        elsewhere, ``CLIPVIS_CACHE`` set to it, holds the same weights), a file given by path with its path.
        ``paths_as_given``: the config paths as typed, as clipvis 0.1.0's first outputs recorded them;
        ``release_path``: a release's cached file with its path, as clipvis recorded it before 0.1.0's later
        outputs."""
        data = asdict(self)
        if data["checkpoint"] is not None and not release_path and self._named_release():
            data["checkpoint"] = {k: v for k, v in data["checkpoint"].items() if k != "file"}
        for key in ("vocabulary", "weights", "output", "device", "batch_frames", "skip_existing", "allow_hub_clip",
                    "allow_duplicate_names"):
            data.pop(key)
        data["formats"] = sorted(set(self.formats))  # a format named twice is one (it re-ran a run naming it once)
        revised = {name: FORMAT_REVISIONS[name] for name in data["formats"] if name in FORMAT_REVISIONS}
        if revised:  # recorded for these formats alone: outputs of the others stay valid
            data["format_revisions"] = revised
        if data["image_fps"] == DEFAULT_IMAGE_FPS:  # recorded when set: outputs made before the option stay valid
            data.pop("image_fps")
        if not data["media_url"] or "labelstudio" not in self.formats:  # recorded when it changes a file (as
            data.pop("media_url")  # image_fps): outputs made before the option, or of other formats, stay valid
        data["config"] = config_identity(self.config, resolve=not paths_as_given)
        data["clip_config"] = config_identity(self.clip_config, clip=True, resolve=not paths_as_given)
        data["clipvis"] = __version__
        return data

    def weights_identity(self) -> str:
        """The weights as outputs are known by (run.json, evaluate's cache): a released checkpoint by its registry
        name however it was typed (``CLIPVIS_LVIS_R50``, ``clipvis_lvis_r50_7.pth``); a local file or training
        folder by the resolved path of the checkpoint file it gave (``checkpoint``), so that ``w.pth``, ``./w.pth``
        and ``/data/w.pth`` from another folder are the same run."""
        from clipvis.weights import released_name_of

        released = released_name_of(self.weights)  # None for a file or training folder of a release's name
        if self.checkpoint is not None and released is None and Path(self.weights).expanduser().exists():
            return str(self.checkpoint["file"])  # a file is known by its path, even one in the weights cache: a file
            # saved there by hand is checked against the release only when it is named as the release
        return released or self.weights

    def identities(self) -> list[tuple[str, dict[str, Any]]]:
        """``(weights, result options)`` pairs this run's outputs may be recorded under: first the one it records
        (``weights_identity``, resolved config paths), then the paths as typed, which earlier outputs recorded and
        which are still reused when the same paths are typed again."""
        current = (self.weights_identity(), self.result_options())
        pairs = [current, (self.weights, self.result_options(paths_as_given=True))]
        if self.checkpoint is not None and self._named_release():  # run.json of a release by its cached file's path
            pairs += [(self.weights_identity(), self.result_options(release_path=True)),
                      (self.weights, self.result_options(paths_as_given=True, release_path=True))]
        unique: list[tuple[str, dict[str, Any]]] = []
        for pair in pairs:
            if pair not in unique:
                unique.append(pair)
        return unique

    def _named_release(self) -> bool:
        """Whether the weights are a released checkpoint given by name (not a file or folder of that name)."""
        from clipvis.weights import released_name_of

        return released_name_of(self.weights) is not None


class FormatsNotWritten(ValueError):
    """Every format asked for is one whose ids cannot hold the video's tracks (`--formats png-masks` alone and more
    than 255 tracks): the input fails; the message names the formats and segment's options that fit them."""


@dataclass
class TrackedVideo:
    """One input after tracking: its reader (for a second pass), info, ranked tracks and timings."""

    reader: FrameReader
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
    already_complete: bool = False  # skipped: an earlier run completed it with these settings (--skip-existing)


class SegmentRunner:
    """Runs a VideoPredictor over inputs and writes each video's files with `writers` (default: those of
    `options.formats`)."""

    def __init__(
        self,
        predictor: VideoPredictor,
        options: SegmentOptions,
        reporter: Reporter,
        categories: list[str] | None = None,
        writers: Sequence[OutputWriter] | None = None,
        background_writers: bool | None = None,
    ) -> None:
        """``background_writers``: in `run_batch`, write each video's files on a thread of their own while the next
        video goes through the model (default: when the model runs on an accelerator, whose time the writers, CPU
        work, would otherwise leave idle; on the CPU both compete for the same cores)."""
        self.predictor = predictor
        self.options = options
        self.categories = categories or list(options.vocabulary)
        self.reporter = SerializedReporter(reporter)  # the background writers report too
        self.writers = list(writers) if writers is not None else create_writers(
            options.formats, options.overlay_min_score, options.media_url
        )
        if background_writers is None:
            device = getattr(predictor, "device", None)
            background_writers = device is not None and getattr(device, "type", "cpu") != "cpu"
        self.background_writers = background_writers
        self._taken: set[str] = set()  # folder names given to inputs of this batch (lower case)
        self._reserved: frozenset[str] = frozenset()  # natural stems of this batch's inputs (lower case)
        self._listing: OutputRootListing | None = None  # the output root's folders, for this batch
        self._held_signals: list[int] = []  # stop signals that came while an input's files were committed

    @cached_property
    def _identities(self) -> list[tuple[str, dict[str, Any]]]:
        """``options.identities()``, once per runner: the config files are read once, as the model was built."""
        return self.options.identities()

    def _identities_of(
        self, source: VideoSource, previous: RunManifest | None = None, formats: tuple[str, ...] | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        """The identities of ``source``'s outputs: ``--image-fps`` is a result option of image folders alone (a
        video keeps its own rate: changing it re-ran every video of a batch), ``--overlay-min-score`` one of runs
        that write the overlay alone (changing it re-ran every input of a batch writing none); such a run matches
        ``previous`` (the folder's run.json) also where an earlier clipvis recorded its threshold, whatever it was.
        ``formats``: of a run writing these formats instead of this one's (those it wrote, where some could not be)."""
        options_now = self.options if formats is None else replace(self.options, formats=formats)
        known = self._identities if formats is None else options_now.identities()
        unused = set() if source.kind == "images" else {"image_fps"}
        if "overlay" not in options_now.formats:
            unused.add("overlay_min_score")
        if not unused:
            return known
        identities = [(weights, {k: v for k, v in options.items() if k not in unused}) for weights, options in
                      known]
        recorded = previous.options if previous is not None and isinstance(previous.options, dict) else {}
        if "overlay_min_score" in unused and "overlay_min_score" in recorded:
            identities += [(weights, {**options, "overlay_min_score": recorded["overlay_min_score"]})
                           for weights, options in identities]
        return identities

    def run_batch(
        self, sources: Sequence[VideoSource], positions: Iterable[int] | None = None
    ) -> Iterator[VideoOutcome]:
        """Process `sources` in order (video ids 1..N), yielding each outcome in input order as soon as it is known.
        `positions`: only these inputs, in this order (a shard, or an iterator over the inputs a torchrun rank takes
        as it goes: clipvis.cli.distributed), which keep the video ids and folder names they have in the whole list.

        With `background_writers`, a video's files are written while the next video goes through the model: its
        outcome comes once that next video's model pass is over (its `video_finished` report as soon as it is
        written), and one video's files at most are being written at a time. On Ctrl-C the files being written are
        finished, and that video's outcome yielded, before KeyboardInterrupt leaves this method."""
        readable = [position for position, source in enumerate(sources) if source.ok]
        # Every shard plans the whole list's folder names the same way, so which of two same-stem inputs gets
        # `stem/` and which `stem-2/` does not depend on which shard runs first; names that none of the batch's
        # inputs may have (a folder of someone else's files, another source's outputs) are skipped in the plan, and
        # an input keeps the folder an earlier run made for its source (so the new inputs leave no gap below it).
        self._listing = OutputRootListing(self.options.output)
        stems = [sources[p].stem for p in readable]
        owners = [source_owner(sources[p]) for p in readable]
        planned = dict(zip(readable, self._listing.plan(stems, owners), strict=True))
        self._reserved = frozenset(name.lower() for p in readable for name in (sources[p].stem, planned[p]))
        positions = range(len(sources)) if positions is None else positions
        self.reporter.batch_started(len(positions) if isinstance(positions, Sized) else None)
        if not self.background_writers:
            for position in positions:
                yield self._start(sources[position], position + 1, None, planned.get(position), None).result()
                self._deliver_held_signals()  # a signal that came while its files were committed: now counted
            return
        with ThreadPoolExecutor(1, thread_name_prefix="clipvis-finish") as finisher:
            writing: Future[VideoOutcome] | None = None  # the previous video's files
            for position in positions:
                try:
                    started = self._start(sources[position], position + 1, None, planned.get(position), finisher)
                except KeyboardInterrupt:
                    if writing is not None:  # written meanwhile: listed and counted as every finished video
                        yield writing.result()
                    raise
                if writing is not None:
                    yield writing.result()
                writing = started
            if writing is not None:
                yield writing.result()

    def run(
        self, source: VideoSource, video_id: int, stem: str | None = None, folder: str | None = None
    ) -> VideoOutcome:
        """Process one input into `OUTPUT/<stem or its natural stem>[-N]/`, or `OUTPUT/<folder>/` first when given
        (the name `run_batch` planned for it). Failures are returned (never raised), except KeyboardInterrupt."""
        outcome = self._start(source, video_id, stem, folder, None).result()
        self._deliver_held_signals()
        return outcome

    def _deliver_held_signals(self) -> None:
        """Act on the stop signals held while an input's files were committed (a KeyboardInterrupt, now)."""
        held, self._held_signals = self._held_signals, []
        deliver(held)

    def _start(
        self, source: VideoSource, video_id: int, stem: str | None, folder: str | None,
        finisher: ThreadPoolExecutor | None,
    ) -> Future[VideoOutcome]:
        """Claim the output folder and run the model over the input (in this thread); its files are then written
        by `finisher` (or here, when None). The folder stays locked, and the tracks' mask store open, until they
        are written."""
        opts = self.options
        stem = stem or source.stem
        if not source.ok:
            return _settled(self._failed(source, stem, source.describe_error()))
        refusals = [reason for writer in self.writers if (reason := _refusal(writer, source))]
        if refusals:  # before the model's pass, which could not end in these files
            return _settled(self._failed(source, stem, f"{shown_path(source.path)}: {refusals[0]}"))
        weights, options = self._identities_of(source)[0]
        manifest = RunManifest.start(source, stem, weights, opts.vocabulary, options)
        try:
            claim = claim_output_folder(
                opts.output, manifest, source, self._taken, self._reserved, preferred=folder, listing=self._listing
            )
        except FolderBusyError as error:
            self.reporter.video_skipped(source, stem, reason=f"{error}; skipped")
            return _settled(VideoOutcome(source, stem, "skipped", error=str(error)))
        except (OutputNotWritableError, ValueError) as error:
            return _settled(self._failed(source, stem, one_line(str(error))))
        held = ExitStack()  # the folder's lock, then (once tracked) the mask store: released in reverse order
        held.callback(claim.lock.release)
        try:
            written = self._track_claimed(source, video_id, claim, manifest, held)
        except BaseException:
            held.close()
            raise
        if isinstance(written, VideoOutcome):
            held.close()
            return _settled(written)

        def write() -> VideoOutcome:
            with held:
                return written()

        return _settled(write()) if finisher is None else finisher.submit(write)

    def _track_claimed(
        self, source: VideoSource, video_id: int, claim: ClaimedFolder, manifest: RunManifest, held: ExitStack
    ) -> VideoOutcome | Callable[[], VideoOutcome]:
        """The model's pass over a claimed input; returns its outcome when it ends here (skipped, failed), or the
        function that writes its files and returns the outcome."""
        opts, paths, previous, stem = self.options, claim.paths, claim.previous, claim.paths.stem
        from clipvis.cli.exporters.export_record import (
            read_export_record,  # the exporters: only where a folder is cleaned
        )

        # we hold the folder's lock: no live process is writing them (nor an export beside the results)
        remove_stale_temp_files(paths.directory, exported=read_export_record(paths.directory))
        if opts.skip_existing and complete_for_any(previous, self._identities_of(source, previous), opts.vocabulary,
                                                   source, paths.directory):
            self.reporter.video_skipped(source, stem)
            return VideoOutcome(source, stem, "skipped", [paths.directory / n for n in previous.output_names],
                                already_complete=True)
        corrected = corrected_files(paths.directory, previous)
        if opts.skip_existing and (first := complete_but_corrected(previous, self._identities_of(source, previous),
                                                                   opts.vocabulary, source, paths.directory,
                                                                   corrected)):
            # complete with these settings, its outputs there, some of them corrected by hand
            self.reporter.video_skipped(source, stem, reason=f"complete with the same settings, and "
                                        f"{shown_path(paths.directory / first)} corrected since (--overwrite "
                                        "refuses to replace it)")
            return VideoOutcome(source, stem, "skipped", [paths.directory / n for n in previous.output_names],
                                already_complete=True)
        refusal = replacement_refusal(paths.directory, previous, corrected, self._file_names)
        if refusal is not None:  # run.json untouched: it still says which files a person changed since
            return self._failed(source, stem, refusal)
        if opts.skip_existing and (rerun := rerun_reason(previous, self._identities_of(source, previous),
                                                         opts.vocabulary, source, paths.directory)) is not None:
            # an earlier run completed it, with other settings (or its source or an output changed since): said, so
            # that a rerun of a batch with another option does not read as a fresh run
            self.reporter.video_rerun(source, stem, rerun.message, rerun.changed)
        started = time.perf_counter()
        if previous is not None:
            manifest.earlier_outputs = previous.clipvis_files  # still clipvis' if this run fails or is killed
            # and as they are (clipvis' own: a corrected one refused the run above, or is kept as recorded)
            manifest.earlier_stats = previous.current_stats(paths.directory, keep=corrected)
        try:
            manifest.write(paths.manifest)
            tracked = held.enter_context(self.track(source, video_id, stem, output_directory=paths.directory))
        except KeyboardInterrupt as interrupt:
            self._interrupted(source, manifest, paths, interrupt)
            raise
        except Exception as error:  # noqa: BLE001 - see _failure
            return self._failure(error, source, manifest, paths)

        def write() -> VideoOutcome:
            try:
                return self._write_tracked(source, tracked, paths, manifest, previous, started)
            except KeyboardInterrupt as interrupt:
                self._interrupted(source, manifest, paths, interrupt)
                raise
            except OtherRankFailed:  # under torchrun, the job's store lost as the finished input is counted
                # (RankLost): the input's files and its "complete" run.json stand; this rank stops
                raise
            except Exception as error:  # noqa: BLE001 - see _failure
                return self._failure(error, source, manifest, paths)

        return write

    def _failure(
        self, error: Exception, source: VideoSource, manifest: RunManifest, paths: VideoOutputPaths
    ) -> VideoOutcome:
        """A failed input: one line, recorded in its run.json. Model, memory and library errors fail the input,
        not the batch."""
        if isinstance(error, (VideoReadError, RefusedReplacement)):  # names the input, or its folder's file
            return self._record_failure(source, paths.stem, one_line(str(error)), manifest, paths)
        if isinstance(error, OutputNotWritableError):  # "<input>: <output file>: output not writable (...)"
            return self._record_failure(source, paths.stem, subject_message(str(error), source.path), manifest,
                                        paths)
        cause = model_error_message(error, STREAM_PARAMETER_FLAGS)  # --batch-frames 1, not batch_frames=1
        if not isinstance(error, (ValueError, OSError, RuntimeError)):
            cause = f"{type(error).__name__}: {cause}"
        return self._record_failure(source, paths.stem, subject_message(cause, source.path), manifest, paths)

    def _interrupted(self, source: VideoSource, manifest: RunManifest, paths: VideoOutputPaths,
                     interrupt: KeyboardInterrupt) -> None:
        """The input in progress when Ctrl-C or a stop signal came: an "interrupted" run.json, and its report. A
        second stop signal meanwhile (Ctrl-C twice, a scheduler's SIGTERM twice) waits until both are done: it cut
        the record short, and run.json said "running" for good."""
        with signals_held() as held:
            cause = _mark_interrupted(manifest, paths, interrupt)
            self.reporter.video_interrupted(source, paths.stem, subject_message(cause, source.path))
        deliver(held)

    def _failed(self, source: VideoSource, stem: str, message: str) -> VideoOutcome:
        self.reporter.video_failed(source, stem, message)
        return VideoOutcome(source, stem, "failed", error=message)

    def _record_failure(self, source: VideoSource, stem: str, message: str, manifest: RunManifest,
                        paths: VideoOutputPaths) -> VideoOutcome:
        manifest.mark_failed(message)
        _write_quietly(manifest, paths.manifest)
        return self._failed(source, stem, message)

    @contextmanager
    def track(self, source: VideoSource, video_id: int, stem: str, stride: int | None = None,
              max_frames: int | None = None, frames: Sequence[int] | None = None,
              output_directory: Path | None = None) -> Iterator[TrackedVideo]:
        """Decode and track one input. The tracks' masks are read from a temporary store, which lives as long as
        the context: use them inside it. ``stride`` / ``max_frames``: this input's, instead of the options';
        ``frames``: a video file's frames to track, increasing (no regular stride), in place of both.
        ``output_directory``: where the writers will stage this input's files (projected with the temporary ones).

        Raises VideoReadError (and ValueError/RuntimeError from the model) with one-line messages.
        """
        opts = self.options
        stride = stride or opts.stride
        max_frames = max_frames if max_frames is not None else opts.max_frames
        reader = open_reader(source, stride=stride, max_frames=max_frames, image_fps=opts.image_fps, frames=frames)
        probe = reader.probe()
        if "overlay" in opts.formats and (reason := unencodable_overlay_reason(probe.height, probe.width)):
            # before the model's pass: the encoder failed only when its first frame came, the other files lost too
            others = ",".join(name for name in opts.formats if name != "overlay") or "ytvis,coco"
            raise ValueError(f"{reason} (run it with --formats without overlay, e.g. --formats {others})")
        total = probe.processed_frame_count(reader.stride, reader.max_frames)
        self.reporter.video_started(source, stem, total)
        if source.kind == "images" and source.path.is_dir():  # as export says it, for the formats numbering frames
            from clipvis.cli.exporters.frame_order import frame_order_warning

            names = [file.name for file in source.frame_files]
            if (warning := frame_order_warning(source.path, names, opts.formats)) is not None:
                self.reporter.video_warning(source, stem, warning)
        if "overlay" in opts.formats and (warning := oversized_overlay_warning(probe.height, probe.width)) is not None:
            self.reporter.video_warning(source, stem, warning)
        if (warning := interlaced_warning(probe)) is not None:
            self.reporter.video_warning(source, stem, warning)
        with TrackMaskStore(probe.height, probe.width) as store:
            yield self._run_model(store, reader, source, video_id, stem, output_directory)

    def _run_model(self, store: TrackMaskStore, reader: FrameReader, source: VideoSource, video_id: int,
                   stem: str, output_directory: Path | None = None) -> TrackedVideo:
        """Stream the frames through the model (clipvis.cli.streaming); every frame's track masks go to `store`.
        Where the temporary files, or the output files in ``output_directory``, will not fit by the last frame, one
        warning says so early."""
        opts = self.options
        probe = reader.probe()
        # the video's length as its container tells it (a --max-frames cap alone is no length: nothing projected)
        known = probe.frame_count is not None
        outputs = None if output_directory is None else OutputProjection(
            str(output_directory), self._formats, opts.max_tracks or 0, probe.height, probe.width)
        space = TemporarySpaceWatch(store.directory,
                                    probe.processed_frame_count(reader.stride, reader.max_frames) if known else None,
                                    outputs=outputs)
        with VideoStream(self.predictor, reader, batch_frames=opts.batch_frames) as stream:
            for frame in stream:
                store.add_compressed(frame.compressed, frame.empty)
                self.reporter.frames_done(1)
                warning = space.update(len(store), store.file_bytes, *frame.tracked.class_probs.shape,
                                       string_bytes=store.string_bytes, masks=store.masks)
                if warning is not None:
                    self.reporter.video_warning(source, stem, warning)
            if reader.size_change is not None:
                index, (height, width) = reader.size_change
                self.reporter.video_warning(source, stem, f"{reader.frame_label(index)} is {width}x{height}, not "
                                            f"{probe.width}x{probe.height}{reader.size_change_cause}")
            if opts.exact:  # the official evaluator's selection has no such settings
                video = stream.finish()
            else:
                video = stream.finish(max_tracks=opts.max_tracks, score_threshold=opts.score_threshold)
        frame_indices, timings = stream.frame_indices, dict(stream.timings)
        times = reader.frame_times
        frame_times = variable_frame_times(times, frame_indices, probe.fps)
        tracks = [
            TrackResult(
                track_id=rank + 1,
                category_id=instance.label + 1,
                score=instance.score,
                segmentations=StoredSegmentations(store, instance.track_id, instance.suppressed_frames),
            )
            for rank, instance in enumerate(video.instances)
        ]
        info = VideoInfo(
            video_id=video_id,
            # absolute: `clipvis export` reads the frames again from here, from whatever folder it is run in
            source=os.path.abspath(source.path),  # the exact path (ytvis.json: writers.ytvis, source_fields)
            stem=stem,
            height=probe.height,
            width=probe.width,
            fps=probe.fps,
            frame_stride=reader.stride,
            frame_indices=frame_indices,
            file_names=reader.frame_file_names(stem, frame_indices),
            kind=source.kind,
            frame_times=frame_times,
            start_time=0.0 if frame_times is not None else video_start_time(times, frame_indices, probe.fps),
            end_time=reader.end_time if frame_times is not None else None,
            pixel_aspect=probe.pixel_aspect,
        )
        timings.update({f"model_{k}": v for k, v in video.timings.items()})
        return TrackedVideo(reader, info, tracks, timings)

    def _write_tracked(
        self,
        source: VideoSource,
        tracked: TrackedVideo,
        paths: VideoOutputPaths,
        manifest: RunManifest,
        previous: RunManifest | None,
        started: float,
    ) -> VideoOutcome:
        """Every writer's file of a tracked input, then the "complete" run.json (``started``: when the input's run
        began, for its total time)."""
        info, timings = tracked.info, tracked.timings
        draws = any(writer.draws_frames for writer in self.writers)
        writing = WritingProgress(self.reporter, source, paths.stem, info.num_frames if draws else None,
                                  masks=sum(len(track.segmentations) for track in tracked.tracks))
        file_warnings: list[str] = []  # said once the files are in place (a writer may run on a helper thread)
        video = SegmentedVideo(info, tracked.tracks, self.categories,
                               lambda: writing.counted(tracked.reader.frames_as_players_show()),
                               warn=file_warnings.append)
        start = time.perf_counter()
        # Every file under its temporary name until all are written, then all renamed into place: a failure or
        # Ctrl-C midway leaves none of this run's files (and an earlier run's, listed in run.json, as they were).
        staging = OutputStaging()
        # a format whose ids cannot hold these tracks (png-masks, MOTS), known only now: the others are written
        not_written: dict[str, FormatLimitError] = {}
        try:
            with staging.active(), writing:
                outputs = self._write_outputs(paths, video, timings, writing, not_written)
            if not_written and not outputs:  # no other format: the input fails, as any input that writes nothing
                raise FormatsNotWritten(formats_not_written_message(not_written, False, self.options.exact))
        except BaseException:
            staging.discard()
            raise
        # From the first rename to the "complete" run.json, Ctrl-C, SIGTERM and SIGHUP wait (in the main thread; a
        # writer thread gets none): a signal between two renames left the new ytvis.json beside the earlier
        # overlay.mp4, counted as not written. The input is then complete, counted so, and the signal acted on next.
        with signals_held() as held:
            try:
                staged, corrected = commit_staged(staging, manifest, paths, previous, self._file_names)
                timings["writers"] = time.perf_counter() - start  # wall time: the writers overlap (write_* each)
                from clipvis.cli.exporters.export_record import exports_from, forget_exported

                forget_exported(paths.directory, staged)  # written over an export's: segment's now
                had_results = os.path.lexists(paths.directory / YTVIS_NAME)
                manifest.stale = settle_stale_outputs(paths, outputs, previous, corrected)
                removed_results = had_results and not os.path.lexists(paths.directory / YTVIS_NAME)
                for warning in file_warnings:  # what may be wrong with a file written (labelstudio, fiftyone)
                    self.reporter.video_warning(source, paths.stem, warning)
                for name in sorted(set(manifest.stale) & corrected):
                    self.reporter.video_warning(source, paths.stem, f"{shown_path(paths.directory / name)}: changed "
                                                "since clipvis segment wrote it, so kept (listed as stale in run.json)")
                # exports made from the ytvis.json this run replaced (or removed) show the earlier results: kept,
                # all named in one warning, and listed as stale (an export's cvat-video.zip is listed already)
                results = paths.directory / YTVIS_NAME
                written = YTVIS_NAME in {path.name for path in outputs}
                exported = exports_from(paths.directory, results) if written or not os.path.lexists(results) else []
                if exported:
                    manifest.stale = [*manifest.stale, *(name for name in exported if name not in manifest.stale)]
                # one line per file: one said above to be corrected is left out; with ytvis.json absent, only the
                # run that removed it says so, and an export an earlier run listed as stale is not said again
                said = set(manifest.stale) & corrected
                if not written and not removed_results:
                    said |= set(previous.stale if previous is not None else ())
                unsaid = [name for name in exported if name not in said]
                if unsaid:
                    self.reporter.video_warning(source, paths.stem, stale_exports_warning(
                        paths.directory, unsaid, "replaced" if written else "removed" if removed_results else "gone"))
                timings["total"] = time.perf_counter() - started
                # the outputs are fsync'ed and in place
                manifest.mark_complete(info.num_frames, outputs, timings, info.pixel_aspect)
                if not_written:  # complete for the formats written, as recorded: a rerun of these --formats redoes it
                    self._record_formats_written(manifest, source, not_written)
                manifest.write(paths.manifest)
                if not_written:  # one line for the input (counted failed: a file asked for is missing)
                    message = formats_not_written_message(not_written, others_written=True,
                                                          exact=self.options.exact)
                    self.reporter.video_failed(source, paths.stem, subject_message(message, source.path))
                    return VideoOutcome(source, paths.stem, "failed", outputs, error=message, frames=info.num_frames)
                fps = info.num_frames / max(timings["total"], 1e-9)
                self.reporter.video_finished(source, paths.stem, info.num_frames, fps, outputs)
                return VideoOutcome(source, paths.stem, "complete", outputs, frames=info.num_frames)
            finally:
                self._held_signals.extend(held)  # raised once this outcome is returned (``_deliver_held_signals``)

    def _write_outputs(self, paths: VideoOutputPaths, video: SegmentedVideo, timings: dict[str, float],
                       progress: WritingProgress | None = None,
                       not_written: dict[str, FormatLimitError] | None = None) -> list[Path]:
        """Every writer's file, in writer order (clipvis.cli.segment_outputs.write_outputs); ``not_written``: the
        formats whose ids cannot hold the tracks, the others written."""
        return write_outputs(self.writers, paths, video, timings, progress, not_written)

    def _record_formats_written(self, manifest: RunManifest, source: VideoSource,
                                not_written: dict[str, FormatLimitError]) -> None:
        """Record in ``manifest`` the identity of a run of the formats it wrote (``--formats`` without those
        ``not_written``), and why each of these is missing: a rerun of the same --formats is not complete (the
        model runs again; clipvis.cli.rerun says why), one without them is."""
        written = tuple(name for name in self.options.formats if name not in not_written)
        weights, options = self._identities_of(source, formats=written)[0]
        manifest.options = options
        manifest.config_hash = config_hash(weights, manifest.vocabulary, options)
        manifest.formats_not_written = {
            name: format_limit_reason(error, self.options.exact) for name, error in not_written.items()}

    @property
    def _formats(self) -> list[str]:
        """The formats this run's writers write."""
        return [writer.format for writer in self.writers]

    @property
    def _file_names(self) -> list[str]:
        """The names of the files this run's writers write."""
        return [writer.file_name for writer in self.writers]


def stale_exports_warning(folder: Path, exported: Sequence[str], results: str) -> str:
    """The one warning naming the entries of ``folder`` that `clipvis export` made from its ytvis.json, which this run
    ``results`` "replaced", "removed" (ytvis not in --formats: exporting again then needs a run that writes it), or
    found "gone" (removed by hand, or by an earlier run that did not list these entries as stale)."""
    names = ", ".join(exported)
    kept = "kept as they were (listed as stale in run.json)"
    again = f"clipvis export {shell_word(folder)} --to ..."
    if results == "replaced":
        return (f"{shown_path(folder)}: {names} exported from the earlier {YTVIS_NAME} this run replaced, so they "
                f"show its results: {kept}; export again ({again}) to update them")
    if results == "removed":
        gone = f"the earlier {YTVIS_NAME}, removed as ytvis is not in this run's --formats"
    else:
        gone = f"a {YTVIS_NAME} no longer in the folder"
    return (f"{shown_path(folder)}: {names} exported from {gone}, so they show an earlier run's results: {kept}; to "
            f"update them, segment again with ytvis in --formats, then export ({again})")


def _refusal(writer: OutputWriter, source: VideoSource) -> str | None:
    """Why ``writer`` cannot write files for ``source`` (a format that needs a video file, given an image folder;
    fiftyone, given a GIF), or None."""
    return writer.refuses(source.kind, source.path)


def _settled(outcome: VideoOutcome) -> Future[VideoOutcome]:
    """An outcome already known, as a finished Future."""
    future: Future[VideoOutcome] = Future()
    future.set_result(outcome)
    return future


def _mark_interrupted(manifest: RunManifest, paths: VideoOutputPaths, interrupt: KeyboardInterrupt) -> str:
    """Record the interruption in run.json; returns its cause (``interrupted by SIGTERM``)."""
    signum = getattr(interrupt, "signum", None)  # the launcher's Terminated: SIGTERM or SIGHUP (a scheduler's)
    cause = f"interrupted by {signal.Signals(signum).name}" if signum else "interrupted by the user (Ctrl-C)"
    manifest.mark_failed(cause, status=STATUS_INTERRUPTED)
    _write_quietly(manifest, paths.manifest)
    return cause


def _write_quietly(manifest: RunManifest, path: Path) -> None:
    try:
        manifest.write(path)
    except (OSError, ValueError):  # the failure being recorded is already reported on stderr
        pass
