"""COCO 1.0 as CVAT and Datumaro import it: `coco/annotations/instances_default.json` plus `coco/images/`.

The JSON is `segment`'s COCO document (compressed RLE per object per frame, `score`, `track_id` at the top level
and in `attributes`, as CVAT's COCO exporter writes tracks) with each image's `file_name` being the frame's name in
a CVAT video task, `frame_<source frame number:06d>.jpg` (for an image-folder source, the image's own name), and
`images/` holding those frames (without media only the JSON is written: CVAT's "Upload annotations" takes it).
"""

from __future__ import annotations

from pathlib import Path

from clipvis.cli.exporters.base import Exporter, ExportOptions
from clipvis.cli.exporters.frames import processed_frames, save_image
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.results import VideoInfo
from clipvis.cli.writers.coco import CocoWriter, coco_file_name


def image_file_name(info: VideoInfo, position: int) -> str:
    """The frame's file name inside `images/`: segment's COCO name without its video folder (`<stem>/`), which is
    `frame_<source frame number:06d>.jpg` as CVAT names a video task's frames, or an image folder's own image name."""
    return Path(coco_file_name(info, position)).name


class _CvatNamedCocoWriter(CocoWriter):
    """segment's COCO writer with image file names as CVAT names the frames."""

    def image_file_name(self, video: VideoInfo, position: int) -> str:
        return image_file_name(video, position)


class CocoExporter(Exporter):
    name = "coco"
    description = "COCO 1.0 (annotations/instances_default.json + images/), track_id attribute"
    uses_media = True

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        root = directory / self.name
        (root / "annotations").mkdir(parents=True)
        _CvatNamedCocoWriter().write(root / "annotations" / "instances_default.json", video.info, video.tracks,
                                     video.categories)
        if self.wants_frames(options):
            images = root / "images"
            images.mkdir()
            for position, frame in processed_frames(video.info, video.results_file):
                save_image(images / image_file_name(video.info, position), frame)
        return [root]
