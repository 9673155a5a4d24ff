"""Runs the chosen export formats over the inputs: one staging folder per video, so each video's exported files
appear together and complete, or not at all; one failed video never stops the others."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from clipvis.cli.atomic import OutputNotWritableError
from clipvis.cli.exporters import YTVIS_FORMAT, create_exporter
from clipvis.cli.exporters.base import ExportOptions, class_key, select_tracks
from clipvis.cli.exporters.cvat import CvatVideoExporter, labels_cvat_refuses
from clipvis.cli.exporters.export_record import export_identity, folder_takes_export, read_export_record
from clipvis.cli.exporters.frame_order import FRAME_NUMBERED_FORMATS, frame_order_warning
from clipvis.cli.exporters.frames import check_source
from clipvis.cli.exporters.loading import (
    EXPORT_STEM_BYTES,
    YTVIS_NAME,
    ExportInput,
    ExportInputError,
    ExportVideo,
    category_names,
    read_videos,
)
from clipvis.cli.exporters.staging import ExportConflictError, staged_directory
from clipvis.cli.exporters.ytvis import ResultsStream
from clipvis.cli.inputs import VideoSource, list_image_frames, safe_stem
from clipvis.cli.json_io import parse_json
from clipvis.cli.locks import FolderBusyError, FolderLock
from clipvis.cli.messages import describe_exception, error_reason, one_line, shown_path, subject_message
from clipvis.cli.progress import Reporter
from clipvis.cli.video_io import VideoReadError
from clipvis.cli.writers.layout import MANIFEST_NAME, numbered_name
from clipvis.cli.writers.manifest import STATUS_COMPLETE, STATUS_RUNNING, RunManifest


def unfinished_run_warning(results_file: Path) -> str | None:
    """A warning when the segment run.json beside ``results_file`` says its last run did not complete (failed,
    interrupted, or still running or killed): the results file there is an earlier run's (segment puts none of a
    failed run's files in place), or one whose origin run.json does not tell; None otherwise (no run.json: a results
    file made elsewhere)."""
    manifest = RunManifest.read(results_file.parent / MANIFEST_NAME)
    if manifest is None:
        return _damaged_run_warning(results_file)
    if manifest.status == STATUS_COMPLETE:
        return None
    if results_file.name not in manifest.earlier_outputs:
        whose = "not known to be from a complete run"
    elif manifest.status == STATUS_RUNNING and _being_written(results_file.parent):
        whose = "from an earlier run (a segment run is writing that folder now)"
    elif manifest.status == STATUS_RUNNING:  # killed: perhaps while its files were being put in place
        whose = "from an earlier run, or from that one if it was killed while putting its files in place"
    else:
        whose = "from an earlier run"
    return (f"{shown_path(results_file.parent)}: run.json says its last segment run is {manifest.status!r}, "
            f"not 'complete': its {results_file.name} is {whose}")


def _damaged_run_warning(results_file: Path) -> str | None:
    """A warning when the run.json beside ``results_file`` is there but cannot be read or is not JSON (damaged: it
    cannot say whether its run completed); None when there is none, or it is JSON of another tool's."""
    path = results_file.parent / MANIFEST_NAME
    try:
        parse_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError as error:
        why = f"cannot be read ({error_reason(error)})"
    except ValueError:
        why = "is not JSON (damaged)"
    else:
        return None
    return (f"{shown_path(path)} {why}: its segment run is not known to be complete, nor its {results_file.name} to "
            "be from one")


def classes_in_no_input(inputs: Sequence[ExportInput], classes: Sequence[str]) -> str | None:
    """Why nothing would be exported when none of ``classes`` (``--classes``) is a class of any of ``inputs`` (every
    name a typo: each video exported empty, exit 0), naming them and the inputs' classes; None when one is, or no
    input's classes can be read (those inputs fail on their own). Reads the inputs' categories until one holds a
    named class (`category_names`: not their masks, for files written by segment)."""
    wanted = {class_key(name) for name in classes}
    found: dict[str, str] = {}  # the inputs' classes, by key, in order
    for item in inputs:
        names = category_names(item.path) if item.ok else None
        if names is None:
            continue
        if wanted & {class_key(name) for name in names}:
            return None
        found.update((class_key(name), name) for name in names if class_key(name) not in found)
    if not found:
        return None
    listed = list(found.values())
    shown = ", ".join(listed[:20]) + (", ..." if len(listed) > 20 else "")
    return (f"--classes {', '.join(classes)}: no such class in {'the input' if len(inputs) == 1 else 'any input'} "
            f"(their classes: {shown}); nothing exported")


def _exported_before(folder: Path, identity: dict[str, object]) -> bool:
    """Whether ``folder`` holds an earlier export of the video ``identity`` (its record says so): that video comes
    back to it."""
    return any(isinstance(entry, dict) and entry.get("from") == identity
               for entry in read_export_record(folder).values())


def _being_written(folder: Path) -> bool:
    """Whether a live process holds ``folder``'s lock (a segment run writing there)."""
    try:
        FolderLock(folder).acquire().release()
    except FolderBusyError:
        return True
    except OSError:
        return False
    return False


class _ExportProgress:
    """A video's export progress for the reporter, in frames (frames x formats in all): each format's frames from
    the (track, frame) masks it handled (``frame_crops``), topped up as each format ends, so a long video's export
    shows progress (and a line a minute in a log) as segment does."""

    def __init__(self, reporter: Reporter, frames: int, tracks: int) -> None:
        self.reporter = reporter
        self.frames = frames
        self.per_frame = max(tracks, 1)
        self.base = self.units = self.reported = 0

    def __call__(self, units: int) -> None:
        self.units += units
        self._report(self.base + min(self.units // self.per_frame, self.frames))

    def format_done(self) -> None:
        self.base += self.frames
        self.units = 0
        self._report(self.base)

    def _report(self, done: int) -> None:
        if done > self.reported:
            self.reporter.frames_done(done - self.reported)
            self.reported = done


@dataclass
class ExportOutcome:
    """One video (or one input that failed before its videos were known)."""

    name: str
    status: str  # "complete" or "failed"
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)  # what the user may want to know (`clipvis: <note>`)
    warnings: list[str] = field(default_factory=list)  # what may be wrong (`clipvis: warning: <warning>`)


class ExportRunner:
    """Export every video of every input in the chosen formats. `destination` None writes each video's files
    beside its results (`<segment folder>/`, or `<folder>/<video name>/` for a file with several videos).

    A video's warnings and notes are said through the reporter as they are known: an input's unfinished segment run
    before its videos, a video's warnings after its start and its notes before its end (``video_done``); its
    outcome keeps them too (``ExportOutcome.warnings``, ``notes``)."""

    def __init__(self, formats: Sequence[str], options: ExportOptions, destination: Path | None,
                 reporter: Reporter, inputs: Sequence[ExportInput] = ()) -> None:
        """``inputs``: every input the runner will be given, if known: without a destination, each folder's results
        file is then written once its last input is exported, not all at the end (each holds a temporary file open
        until written: 1,100 inputs ran out of file descriptors)."""
        self.formats = list(formats)
        self.options = options
        self.destination = destination
        self.reporter = reporter
        self._used_names: set[str] = set()
        # the folder names the inputs' videos are likely to take (their segment folders' names): a second video of
        # one name is not numbered into one of them (`clip-2/` for segcol/clip sent segcol/clip-2 to `clip-2-2/`)
        self._input_names = {safe_stem(item.path.parent.name, max_bytes=EXPORT_STEM_BYTES).lower()
                             for item in inputs if item.ok and item.path.name == YTVIS_NAME}
        self._results: dict[Path, ResultsStream] = {}  # the ytvis results files, by folder, written as they go
        # without -o: how many of the inputs are still to come for each results folder; and the files written
        self._to_come = Counter(self._results_folder(item) for item in inputs) if destination is None else Counter()
        self._written: list[ExportOutcome] = []
        # results files not to write: an input meant for them could not be read (its results are missing), and a
        # file for servers that lacks it would be scored as if the video had no objects. A video whose other
        # formats failed is not counted: its results are read and go into the file.
        self._incomplete: dict[Path, int] = {}

    def _results_folder(self, item: ExportInput) -> Path:
        """Where the ytvis results file of ``item``'s videos goes."""
        return self.destination or (item.path.parent if item.path.suffix else item.path)

    def run(self, item: ExportInput) -> list[ExportOutcome]:
        outcomes = self._run(item)
        folder = self._results_folder(item)
        if self._to_come[folder] > 0:  # one of the inputs given at the start (not on an interruption: raised)
            self._to_come[folder] -= 1
            if self._to_come[folder] == 0 and folder in self._results:  # its last input: written now
                self._written.append(self._write_results(folder))
        return outcomes

    def _run(self, item: ExportInput) -> list[ExportOutcome]:
        source = VideoSource(item.path)
        results_folder = self._results_folder(item)
        if not item.ok:
            return [self._failed(source, item.path.name, one_line(item.describe_error()), results_folder)]
        with ExitStack() as held:  # the masks' temporary file, closed once every video is exported
            try:
                videos = held.enter_context(read_videos(item.path))
            except ExportInputError as error:
                return [self._failed(source, item.path.name, one_line(str(error)), results_folder)]
            return self._export_videos(item, source, videos, results_folder)

    def _export_videos(self, item: ExportInput, source: VideoSource, videos: list[ExportVideo],
                       results_folder: Path) -> list[ExportOutcome]:
        """The videos read from ``item``, each exported to every format."""
        if not videos:
            return [self._failed(source, item.path.name, f"{item.path}: no videos in this results file",
                                 results_folder)]
        if len(videos) > 1:  # counted as one input: the progress counts its videos
            self.reporter.more_videos(len(videos) - 1)
        unfinished = unfinished_run_warning(item.path)
        if unfinished is not None:  # said before its videos' events, as everything is said when it is known
            self.reporter.say("warning", unfinished)
        outcomes = [self._export_video(source, video, len(videos) > 1) for video in videos]
        if unfinished is not None:
            outcomes[0].warnings.insert(0, unfinished)
        return outcomes

    def finish(self) -> list[ExportOutcome]:
        """Write the collected YouTube-VIS results (one file under -o, else one per input folder): those not
        written yet, and the outcomes of all."""
        if YTVIS_FORMAT not in self.formats:
            return []
        outcomes = self._written
        try:
            for folder in list(self._results):
                outcomes.append(self._write_results(folder))
        finally:
            self.close()
        return outcomes

    def _write_results(self, folder: Path) -> ExportOutcome:
        """Put the results file of ``folder`` in place (its temporary file then goes), or say why not."""
        results = self._results.pop(folder)
        try:
            missing = self._incomplete.get(folder, 0)
            if missing:
                message = (f"{shown_path(folder / self.options.results_name)} not written: {missing} of its "
                           f"{missing + results.videos} input(s) failed (a server would score them as empty)")
                self.reporter.video_failed(VideoSource(folder), folder.name, message)
                return ExportOutcome(folder.name, "failed", error=message)
            try:
                for refusal in results.refusals[:-1]:  # --gt: one line each; the last is the failure's (`write`)
                    self.reporter.say("error", subject_message(refusal, folder))
                written = results.write(self.options)
                if results.dropped:  # --gt: the classes it lacks, as evaluate drops them
                    names = list(results.dropped)
                    self.reporter.say("warning", f"{shown_path(written)}: {sum(results.dropped.values())} result(s) "
                                      "of classes the GT file lacks were left out (" + ", ".join(names[:8])
                                      + (", ..." if len(names) > 8 else "") + ")")
                return ExportOutcome(folder.name, "complete", [written])
            except (ValueError, OSError) as error:
                message = subject_message(error, folder)
                self.reporter.video_failed(VideoSource(folder), folder.name, message)
                return ExportOutcome(folder.name, "failed", error=message)
        finally:
            results.close()

    def close(self) -> None:
        """Drop the results files not written (their temporary files): an export stopped before `finish`."""
        for results in self._results.values():
            results.close()
        self._results.clear()

    def _folder(self, video: ExportVideo, several: bool) -> Path:
        """Beside the results, or under -o: ``<stem>/``, else ``<stem>-2/``, ...: the first that this run gave no
        other video and that holds nothing but earlier exports of this same video (folder_takes_export), so a
        second video of one name, or someone's own folder, is never written into."""
        stem = video.info.stem
        if self.destination is None and not several:
            return video.results_file.parent
        # under -o, or beside a results file of several videos (two of one name each get their own folder)
        root = self.destination if self.destination is not None else video.results_file.parent
        identity = export_identity(video)
        name, suffix = stem, 2
        while (f"{root}/{name.lower()}" in self._used_names
               or (name != stem and name.lower() in self._input_names and not _exported_before(root / name, identity))
               or not folder_takes_export(root / name, identity)):
            name, suffix = numbered_name(stem, suffix), suffix + 1
        self._used_names.add(f"{root}/{name.lower()}")
        return root / name

    def _numbered_note(self, video: ExportVideo, folder: Path) -> list[str]:
        """A note saying where a video's files went when its folder is not named as the video (another video, or
        files of someone's, have that name): which input went where is not otherwise told."""
        if folder.name == video.info.stem or folder == video.results_file.parent:
            return []
        return [f"{shown_path(video.info.stem)}: {shown_path(video.results_file)} exported to {shown_path(folder)} "
                f"({shown_path(folder.parent / video.info.stem)} is taken by another video or by other files)"]

    def _replaceable(self, folder: Path) -> list[str]:
        """The files segment's run.json in `folder` lists as its own and are as it wrote them (an export beside them
        may replace them; one a person corrected since is not: `RunManifest.corrected_files`)."""
        if self.destination is not None:
            return []
        manifest = RunManifest.read(folder / MANIFEST_NAME)
        if manifest is None:
            return []
        corrected = manifest.corrected_files(folder)
        # segment writes files only: a folder of a listed name is not its (a run.json from elsewhere could list a
        # user's png-masks/ folder, which the export then replaced)
        return [name for name in manifest.clipvis_files if not (folder / name).is_dir() and name not in corrected]

    def _export_video(self, source: VideoSource, video: ExportVideo, several: bool) -> ExportOutcome:
        stem = video.info.stem
        per_video = [name for name in self.formats if name != YTVIS_FORMAT]
        # --to ytvis alone writes no folder of the video's (its results go into the one results file): no folder is
        # taken, and no note says the video was exported to one (said before the results file was refused, too)
        folder = self._folder(video, several) if per_video else None
        warnings = self._unknown_classes(video) + self._labels_cvat_refuses(video) + self._frame_order(video)
        notes: list[str] = self._numbered_note(video, folder) if folder is not None else []
        video = select_tracks(video, self.options)
        if YTVIS_FORMAT in self.formats:  # its results are read: they go into the results file whatever the other
            results_folder = self.destination or video.results_file.parent  # formats do
            if results_folder not in self._results:
                self._results[results_folder] = ResultsStream(results_folder, self.options.gt)
            self._results[results_folder].add(video)
        frames = video.info.num_frames
        self.reporter.video_started(source, stem, frames * max(len(per_video), 1))  # each format's frames
        for warning in warnings:
            self.reporter.say("warning", warning)
        progress = _ExportProgress(self.reporter, frames, len(video.tracks))
        video = replace(video, progress=progress)
        try:
            exporters = [create_exporter(name) for name in per_video]
            needing = tuple(name for name, exporter in zip(per_video, exporters, strict=True)
                            if exporter.wants_frames(self.options))
            if needing:
                check_source(video.info, video.results_file, needing)
            outputs: list[Path] = []
            if folder is not None:
                with staged_directory(folder, export_identity(video), self._replaceable(folder)) as staging:
                    for exporter in exporters:
                        made = exporter.export(video, staging, self.options)
                        for warning in exporter.warnings:  # its files are written, and may not work
                            warnings.append(warning)
                            self.reporter.say("warning", warning)
                        outputs.extend(folder / path.name for path in made)
                        progress.format_done()
                        if isinstance(exporter, CvatVideoExporter) and exporter.last_polygon_iou is not None:
                            notes.append(f"{shown_path(stem)}: cvat-video polygons cover the masks with mean IoU "
                                         f"{exporter.last_polygon_iou:.4f}")
        except (ExportInputError, OutputNotWritableError, VideoReadError, FolderBusyError,
                ExportConflictError) as error:
            return self._failed(source, stem, one_line(str(error)))
        except Exception as error:  # noqa: BLE001 - a library error fails this video, not the batch
            cause = describe_exception(error)
            if not isinstance(error, (ValueError, OSError, RuntimeError)):
                cause = f"{type(error).__name__}: {cause}"
            return self._failed(source, stem, subject_message(f"{stem}: {cause}", video.results_file))
        if not exporters:
            progress.format_done()  # the ytvis results file is written for all videos at the end
        for note in notes:  # before the video's end, as its warnings come after its start
            self.reporter.say("note", note)
        self.reporter.video_finished(source, stem, video.info.num_frames, 0.0, outputs)
        return ExportOutcome(stem, "complete", outputs, notes=notes, warnings=warnings)

    def _unknown_classes(self, video: ExportVideo) -> list[str]:
        """A warning naming the ``--classes`` that are none of the video's classes (a typo exports nothing)."""
        known = {class_key(name) for name in video.categories}
        unknown = [name for name in self.options.classes or () if class_key(name) not in known]
        if not unknown:
            return []
        listed = ", ".join(video.categories[:20]) + (", ..." if len(video.categories) > 20 else "")
        return [f"{shown_path(video.info.stem)}: --classes {', '.join(unknown)}: no such class here (its classes: "
                f"{listed})"]

    def _frame_order(self, video: ExportVideo) -> list[str]:
        """The warning `frame_order_warning` gives for an image-folder video: the images of its folder (the whole
        folder, as a task made from it holds it; else the images the results name)."""
        if video.info.kind != "images" or not set(self.formats) & set(FRAME_NUMBERED_FORMATS):
            return []
        folder = Path(video.info.source)
        try:
            names = [file.name for file in list_image_frames(folder)] if folder.is_dir() else []
        except OSError:
            names = []
        names = names or [name.rsplit("/", 1)[-1] for name in video.info.file_names]
        warning = frame_order_warning(folder, names, self.formats)
        return [f"{shown_path(video.info.stem)}: {warning}"] if warning is not None else []

    def _labels_cvat_refuses(self, video: ExportVideo) -> list[str]:
        """The warning `labels_cvat_refuses` gives (class names longer than a CVAT label may be), for the CVAT
        formats."""
        problem = labels_cvat_refuses(video.categories, self.formats, self.options.classes)
        return [f"{shown_path(video.info.stem)}: {problem}"] if problem is not None else []

    def _failed(self, source: VideoSource, name: str, message: str, results_folder: Path | None = None
                ) -> ExportOutcome:
        """A failed video or input; `results_folder`: where the ytvis results file lacks it (an input whose results
        could not be read), None for a video whose results were read (only its other formats failed)."""
        self.reporter.video_failed(source, name, message)
        if results_folder is not None and YTVIS_FORMAT in self.formats:
            self._incomplete[results_folder] = self._incomplete.get(results_folder, 0) + 1
        return ExportOutcome(name, "failed", error=message)
