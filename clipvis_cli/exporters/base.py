"""What every export format shares: the options, track selection, per-frame mask access and the `Exporter` base.
The staging folder that makes each format's output appear complete or not at all is `staging.py`, the folder's
record of what was exported `export_record.py`, the image folders' frame-order warning `frame_order.py`."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from clipvis.cli import rle
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.results import TrackResult

if TYPE_CHECKING:
    from clipvis.cli.evaluation.ground_truth import VideoGroundTruth


@dataclass(frozen=True)
class ExportOptions:
    """Choices shared by the formats. `classes` None keeps every class; `media` False skips frame images where
    the format can do without them; `zip_results` zips the ytvis results file under `results_name`;
    `media_url` prefixes the video's file name in Label Studio tasks."""

    min_score: float = 0.0
    classes: tuple[str, ...] | None = None
    media: bool = True
    zip_results: bool = False
    results_name: str = "results.json"
    media_url: str = ""  # labelstudio: URL prefix under which Label Studio serves the video
    measure_polygons: bool = True  # cvat-video: the polygons' mean IoU with the masks (export reports it)
    # ytvis: the GT whose video and category ids the results file takes (`--gt`), matched by frames' names and class
    # names; None keeps the inputs' ids
    gt: VideoGroundTruth | None = None


class FormatLimitError(ValueError):
    """A format whose ids cannot hold this video's results: too many tracks (png-masks' 8-bit ids, MOTS' instance
    ids) or classes (MOTS' 16-bit ids). Its message is `clipvis export`'s: ``problem`` and ``remedy`` (export's
    options). ``tracks``: the most tracks the format holds (segment keeps that many with --max-tracks, track ids
    being ranks 1..N there), None where ``classes`` is the most classes it holds."""

    def __init__(self, format_name: str, problem: str, remedy: str, tracks: int | None = None,
                 classes: int | None = None) -> None:
        super().__init__(f"{problem}; {remedy}")
        self.format_name, self.problem, self.remedy = format_name, problem, remedy
        self.tracks, self.classes = tracks, classes


def class_key(name: str) -> str:
    """How --classes matches a class name: case aside, and composed or decomposed accents alike (NFC), so a name
    typed on macOS (decomposed) finds the class segment wrote."""
    return unicodedata.normalize("NFC", name).casefold()


def select_tracks(video: ExportVideo, options: ExportOptions) -> ExportVideo:
    """The video with only the tracks scoring >= min_score whose class is in `classes` (track ids kept); the
    declared labels (`category_ids`) are every class, or the chosen ones, in vocabulary order."""
    if options.classes is None:
        wanted = set(range(1, len(video.categories) + 1))
    else:
        names = {class_key(name) for name in options.classes}
        wanted = {i for i, name in enumerate(video.categories, start=1) if class_key(name) in names}
    tracks = [t for t in video.tracks if t.score >= options.min_score and t.category_id in wanted]
    return replace(video, tracks=tracks, category_ids=sorted(wanted))


def frame_crops(tracks: list[TrackResult], position: int, height: int, width: int,
                progress: Callable[[int], None] | None = None) -> list[tuple[TrackResult, rle.MaskCrop]]:
    """The (track, mask cut to its box) pairs of the tracks with a non-empty mask on processed frame `position` of
    an H×W video, without decoding any mask whole (`clipvis.cli.rle.mask_crops`); ``progress`` is told how many
    tracks' masks were handled."""
    crops = rle.mask_crops([track.segmentations[position] for track in tracks], height, width)
    if progress is not None:
        progress(len(tracks))
    return [(track, crop) for track, crop in zip(tracks, crops, strict=True) if crop is not None]


class Exporter:
    """One output format. `export` writes one video's files into `directory` (a staging folder) and returns the
    paths of the top-level entries it made. `needs_media`: the format cannot be written without the source video's
    frames; `uses_media`: it writes frames when `options.media` (missing frames are then an error too);
    `needs_video_file`: it carries the source video file itself, so an image-folder source cannot have it."""

    name: str = ""
    description: str = ""
    needs_media: bool = False
    uses_media: bool = False
    needs_video_file: bool = False  # carries the source video itself: an image-folder source cannot be exported

    # what may be wrong with the last export's files (media the tool may not play), set by `export`; none by default
    warnings: Sequence[str] = ()

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        raise NotImplementedError

    def wants_frames(self, options: ExportOptions) -> bool:
        return self.needs_media or (self.uses_media and options.media)


