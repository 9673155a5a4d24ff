"""COCO instances JSON writer (`coco.json`) with track ids, for CVAT / Datumaro / FiftyOne / Roboflow.

* one image per processed frame: `id` (1.. across the file), `file_name`, `width`, `height`, plus the
  non-standard `video_id` and `frame_index` (source frame index). For a video file the name is
  `<stem>/frame_<index:06d>.jpg`: CVAT matches such items to video-task frames by the number after `frame_`;
  for an image folder it is `<stem>/<original image name>`.
* a non-standard top-level `video_sources` list (`video_id`, `name`, `source`: the input's path), which COCO
  readers ignore (not `videos`, which tools take for YouTube-VIS): `clipvis train` decodes a video input's frames
  from `source` when the frame images were not extracted.
* one annotation per (track, frame) where the track has a non-empty mask: compressed RLE `segmentation`,
  `area` and `bbox` computed from the RLE, `iscrowd` 0, `category_id`, `score`, top-level `track_id`, and
  `attributes: {"track_id", "keyframe": true, "occluded": false}` — the attribute layout CVAT's COCO 1.0
  exporter uses for tracks (CVAT and Datumaro read the track id from `attributes.track_id`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timezone

from clipvis.cli import __version__, rle
from clipvis.cli.results import TrackResult, VideoInfo, check_tracks, source_fields
from clipvis.cli.writers.base import MaskCounter
from clipvis.cli.writers.json_document import JsonDocumentWriter, VideoResults
from clipvis.cli.writers.layout import COCO_NAME
from clipvis.cli.writers.ytvis import categories_json


def coco_file_name(video: VideoInfo, position: int) -> str:
    """File name of the image for processed frame `position` of `video` (see module docstring)."""
    if video.kind == "images":
        return video.file_names[position]
    return f"{video.stem}/frame_{video.frame_indices[position]:06d}.jpg"


class CocoWriter(JsonDocumentWriter):
    """Write COCO instances JSON (images = processed frames, annotations = per-frame track masks)."""

    format = "coco"
    file_name = COCO_NAME

    def image_file_name(self, video: VideoInfo, position: int) -> str:
        """The `file_name` of processed frame `position`'s image: `coco_file_name`; a subclass names them its way."""
        return coco_file_name(video, position)

    def fields(self, results: VideoResults, categories: Sequence[str],
               masks_written: MaskCounter | None = None) -> list[tuple[str, object]]:
        """The document's fields; images and annotations come as iterators (streamed: one image per frame, and the
        masks are read one track at a time, told to ``masks_written`` a chunk at a time)."""
        first_ids: list[int] = []
        images_before = 0
        for video, tracks in results:
            check_tracks(video, list(tracks), len(categories))
            first_ids.append(images_before + 1)
            images_before += video.num_frames

        def images() -> Iterator[dict]:
            for (video, _), first_id in zip(results, first_ids, strict=True):
                for position in range(video.num_frames):
                    yield {
                        "id": first_id + position,
                        "file_name": self.image_file_name(video, position),
                        "width": video.width,
                        "height": video.height,
                        "video_id": video.video_id,
                        "frame_index": video.frame_indices[position],
                    }

        def annotations() -> Iterator[dict]:
            next_id = 1
            for (_, tracks), first_image_id in zip(results, first_ids, strict=True):
                for track in tracks:
                    for annotation in self._track_annotations(track, first_image_id, next_id, masks_written):
                        next_id += 1
                        yield annotation

        video_sources = [
            {"video_id": video.video_id, "name": video.stem, **source_fields(video.source)} for video, _ in results
        ]
        info = {
            "description": "clipvis segment output",
            "version": __version__,
            "date_created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        return [("info", info), ("licenses", []), ("images", images()), ("video_sources", video_sources),
                ("categories", categories_json(categories)), ("annotations", annotations())]

    @staticmethod
    def _track_annotations(track: TrackResult, first_image_id: int, first_annotation_id: int,
                           masks_written: MaskCounter | None = None) -> Iterator[dict]:
        """The track's annotations, made ``ANNOTATION_CHUNK_FRAMES`` frames at a time (a 2-hour track has 216,000
        masks: its annotations are streamed, not held); each chunk's frames told to ``masks_written`` once its
        annotations are taken."""
        next_id = first_annotation_id
        segmentations = track.segmentations
        for start in range(0, len(segmentations), ANNOTATION_CHUNK_FRAMES):
            chunk = range(start, min(start + ANNOTATION_CHUNK_FRAMES, len(segmentations)))
            present = [(position, seg) for position in chunk if (seg := segmentations[position]) is not None]
            masks = [seg for _, seg in present]
            for (position, segmentation), area, box in zip(present, rle.areas(masks), rle.bboxes(masks), strict=True):
                if area == 0:
                    continue
                yield {
                    "id": next_id,
                    "image_id": first_image_id + position,
                    "category_id": int(track.category_id),
                    "segmentation": {"size": list(segmentation["size"]), "counts": segmentation["counts"]},
                    "area": float(area),
                    "bbox": box,
                    "iscrowd": 0,
                    "score": float(track.score),
                    "track_id": int(track.track_id),
                    "attributes": {"track_id": int(track.track_id), "keyframe": True, "occluded": False},
                }
                next_id += 1
            if masks_written is not None:
                masks_written(len(chunk))


ANNOTATION_CHUNK_FRAMES = 512  # a track's masks read (and their areas and boxes computed) this many frames at a time
