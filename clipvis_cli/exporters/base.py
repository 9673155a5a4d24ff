"""What every export format shares: the options, track selection, per-frame mask access and the staging folder
that makes each format's output appear complete or not at all."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clipvis.cli import rle
from clipvis.cli.atomic import TEMP_MARKER, OutputNotWritableError, ensure_output_dir, remove_stale_temp_files
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.locks import FolderLock
from clipvis.cli.results import TrackResult

STAGING_PREFIX = ".export-"  # staging folders are `.export-XXXX.tmp`: temporary names (clipvis.cli.atomic)


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


def select_tracks(video: ExportVideo, options: ExportOptions) -> ExportVideo:
    """The video with only the tracks scoring >= min_score whose class is in `classes` (track ids kept); the
    declared labels (`category_ids`) are every class, or the chosen ones, in vocabulary order."""
    if options.classes is None:
        wanted = set(range(1, len(video.categories) + 1))
    else:
        names = {name.lower() for name in options.classes}
        wanted = {i for i, name in enumerate(video.categories, start=1) if name.lower() in names}
    tracks = [t for t in video.tracks if t.score >= options.min_score and t.category_id in wanted]
    return replace(video, tracks=tracks, category_ids=sorted(wanted))


def frame_masks(tracks: list[TrackResult], position: int) -> list[tuple[TrackResult, np.ndarray]]:
    """The (track, H×W bool mask) pairs of the tracks with a non-empty mask on processed frame `position`."""
    present = []
    for track in tracks:
        segmentation = track.segmentations[position]
        if segmentation is None:
            continue
        mask = rle.decode(segmentation)
        if mask.any():
            present.append((track, mask))
    return present


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

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        raise NotImplementedError

    def wants_frames(self, options: ExportOptions) -> bool:
        return self.needs_media or (self.uses_media and options.media)


@contextmanager
def staged_directory(final_parent: Path) -> Iterator[Path]:
    """A fresh hidden folder inside `final_parent` to write into; on success every entry in it replaces the entry
    of the same name in `final_parent` (each with one rename), on failure the folder is deleted and
    `final_parent` is untouched.

    The folder's lock (`clipvis.cli.locks`, the one `segment` holds while it writes a video's folder) is held
    throughout: another process writing there makes this raise FolderBusyError, and what a killed export or
    segment left there (staging folders, temporary files) is removed first."""
    ensure_output_dir(final_parent)
    with FolderLock(final_parent):
        remove_stale_temp_files(final_parent)
        try:
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix=TEMP_MARKER, dir=final_parent))
        except OSError as error:
            raise OutputNotWritableError(final_parent, error) from error
        try:
            yield staging
            for entry in sorted(staging.iterdir()):
                _replace(entry, final_parent / entry.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _replace(new: Path, final: Path) -> None:
    if new.is_dir():
        os.chmod(new, 0o755)  # mkdtemp made it private; files inside were created with the usual umask
    if final.is_dir() and not final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, final)
