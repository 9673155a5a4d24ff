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
from dataclasses import replace
from pathlib import Path

from clipvis.cli.atomic import TEMP_MARKER, atomic_output_path
from clipvis.cli.exporters.base import STAGING_PREFIX, ExportOptions
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.writers.base import SegmentedVideo, WriterDefaults
from clipvis.cli.zip_files import add_file


class ExportFormatWriter(WriterDefaults):
    """A segment output writer for one export format: `<format>.zip` in the video's folder."""

    def __init__(self, format_name: str, options: ExportOptions | None = None) -> None:
        self.format = format_name
        self.file_name = f"{format_name}.zip"
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
        """What `clipvis export` says of its options that segment lacks: labelstudio's `data.video` without a
        --media-url prefix (segment has none; the export from ytvis.json gives one)."""
        if self.format != "labelstudio" or self.options.media_url:
            return []
        from clipvis.cli.exporters.video_tools import label_studio_media_name, media_url
        from clipvis.cli.messages import shown_path

        name = media_url("", label_studio_media_name(Path(video.info.source)))
        return [f"{shown_path(path)}: tasks.json names the video by its file name alone (data.video \"{name}\"), "
                "which Label Studio cannot load, and segment has no --media-url: export it with the URL prefix Label "
                f"Studio serves media/ under (clipvis export {shown_path(path.parent)} --to labelstudio --media-url "
                "\"/data/local-files/?d=clips/\"; it reads the folder's ytvis.json: keep ytvis in --formats)"]


def _zip_entries(entries: list[Path], target: Path) -> None:
    """Zip files and folders (recursively) with paths relative to their parent; media stored, the rest deflated."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in entries:
            files = [entry] if entry.is_file() else sorted(p for p in entry.rglob("*") if p.is_file())
            for file in files:
                stored = file.suffix.lower() in {".jpg", ".png", ".mp4", ".mov", ".mkv", ".webm", ".avi"}
                add_file(archive, file, file.relative_to(entry.parent).as_posix(),
                         zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
