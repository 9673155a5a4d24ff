"""`segment --formats cvat-video,mots-png,...`: `clipvis export`'s per-video formats as `segment` output writers,
written in the same pass from the tracks still in hand (no ytvis.json round trip).

Each is one file in the video's output folder, as every segment output is: the CVAT formats are zips already;
the folder formats are zipped (`mots-png.zip` is what CVAT's "MOTS PNG 1.0" upload takes; unzip `fiftyone.zip` for
`fo.Dataset.from_dir`). `segment`'s own `coco` stays its `coco.json`; use `clipvis export --to coco` for the
CVAT/Datumaro folder with images.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from clipvis.cli.atomic import TEMP_MARKER, atomic_output_path
from clipvis.cli.exporters.base import ExportOptions
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.exporters.staging import STAGING_PREFIX
from clipvis.cli.writers.base import SegmentedVideo, WriterDefaults
from clipvis.cli.zip_files import add_file


class ExportFormatWriter(WriterDefaults):
    """A segment output writer for one export format: `<format>.zip` in the video's folder."""

    def __init__(self, format_name: str, options: ExportOptions | None = None,
                 run_formats: Sequence[str] = ()) -> None:
        """``run_formats``: every `--formats` entry of the run (this one among them), for what its warnings say:
        whether the run writes the ytvis.json an export reads, which CVAT writer says the CVAT warning."""
        self.format = format_name
        self.file_name = f"{format_name}.zip"
        self.run_formats = tuple(run_formats) or (format_name,)
        # the polygons' IoU is what `clipvis export` reports; no segment file holds it
        self.options = replace(options or ExportOptions(), measure_polygons=False)

    def refuses(self, source_kind: str, source_path: Path | None = None) -> str | None:
        """Why this format cannot be written for a source of ``source_kind`` ("video", "images") at ``source_path``,
        known before the model runs; None when it can."""
        from clipvis.cli.exporters import create_exporter
        from clipvis.cli.exporters.video_tools import fiftyone_media_type

        if source_kind != "video" and create_exporter(self.format).needs_video_file:
            return f"--formats {self.format} needs a video file, and this input is an image folder"
        if self.format == "fiftyone" and source_path is not None and fiftyone_media_type(source_path.name) == "image":
            return (f"--formats fiftyone needs a file FiftyOne loads as a video, and it loads a "
                    f"{source_path.suffix.lower()} file as an image (by its extension's MIME type)")
        return None

    def write_video(self, path: Path, video: SegmentedVideo) -> Path:
        from clipvis.cli.exporters import create_exporter

        exporter = create_exporter(self.format)
        export_video = ExportVideo(video.info, list(video.tracks), list(video.categories), path,
                                   category_ids=list(range(1, len(video.categories) + 1)))
        # A temporary name: a segment run killed meanwhile leaves a folder the next run into this folder removes.
        with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, suffix=TEMP_MARKER, dir=path.parent) as staging:
            made = exporter.export(export_video, Path(staging), self.options)
            if video.warn is not None:  # its file is written, and may not work: as `clipvis export` says them
                for warning in [*exporter.warnings, *self._segment_warnings(path, video)]:
                    video.warn(warning)
            with atomic_output_path(path) as temporary:
                if len(made) == 1 and made[0].is_file() and made[0].suffix == ".zip":
                    os.replace(made[0], temporary)
                else:
                    _zip_entries(made, temporary)
        return path

    def _segment_warnings(self, path: Path, video: SegmentedVideo) -> list[str]:
        """What `clipvis export` says of a video that its exporters do not (`ExportRunner`): class names CVAT refuses
        as labels (said once per video, by the run's first CVAT writer); and labelstudio's `data.video` without a
        --media-url prefix (export says it once per batch; here, with the two ways to give one)."""
        from clipvis.cli.exporters.cvat import CVAT_FORMATS, labels_cvat_refuses
        from clipvis.cli.exporters.loading import YTVIS_NAME
        from clipvis.cli.exporters.video_tools import label_studio_media_name, media_url
        from clipvis.cli.messages import shell_word, shown_path

        warnings: list[str] = []
        cvat_formats = [name for name in CVAT_FORMATS if name in self.run_formats]
        if cvat_formats[:1] == [self.format]:
            problem = labels_cvat_refuses(video.categories, cvat_formats, self.options.classes)
            zips = ", ".join(f"{name}.zip" for name in cvat_formats)
            subject = shown_path(path) if len(cvat_formats) == 1 else f"{shown_path(path.parent)} ({zips})"
            warnings += [f"{subject}: {problem}"] if problem is not None else []
        if self.format != "labelstudio" or self.options.media_url:
            return warnings
        name = media_url("", label_studio_media_name(Path(video.info.source)))
        prefix = "--media-url \"/data/local-files/?d=clips/\""
        if "ytvis" in self.run_formats:  # the export reads the results: no model run
            export = f"clipvis export {shell_word(path.parent)} --to labelstudio {prefix}"
            how = (f"export it with the URL prefix Label Studio serves media/ under ({export}; it reads the folder's "
                   f"{YTVIS_NAME}: keep ytvis in --formats), or segment again with {prefix} (the model runs again)")
        else:  # the export reads ytvis.json, which this run does not write (and removes an earlier run's)
            how = f"segment again with the URL prefix Label Studio serves media/ under ({prefix})"
        return [*warnings, f"{shown_path(path)}: tasks.json names the video by its file name alone (data.video "
                f"\"{name}\"), which Label Studio cannot load: {how}"]


def _zip_entries(entries: list[Path], target: Path) -> None:
    """Zip files and folders (recursively) with paths relative to their parent; media stored, the rest deflated."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in entries:
            files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
            for file in files:
                stored = file.suffix.lower() in {".jpg", ".png", ".mp4", ".mov", ".mkv", ".webm", ".avi"}
                add_file(archive, file, file.relative_to(entry.parent).as_posix(),
                         zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
