"""YouTube-VIS JSON writer (`ytvis.json`).

The file is `{"videos": [...], "categories": [...], "annotations": [...]}` where `annotations` is exactly the
results list that YouTube-VIS evaluators load (`ytvos.loadRes`): one entry per track with `video_id`,
`category_id`, `score` and `segmentations` (one compressed RLE per processed frame, null where absent), in the
order the tracks were given. `videos[]` carry the standard `id/width/height/length/file_names` plus the
non-standard `name`, `fps` (source rate), `frame_stride`, `frame_indices` and `source`, and for a source with a
variable frame rate `frame_times` (each processed frame's time in seconds).
"""

from __future__ import annotations

from collections.abc import Sequence

from clipvis.cli.results import VideoInfo, check_tracks, source_fields
from clipvis.cli.writers.base import MaskCounter
from clipvis.cli.writers.json_document import JsonDocumentWriter, VideoResults, counted_masks
from clipvis.cli.writers.layout import YTVIS_NAME


def categories_json(categories: Sequence[str]) -> list[dict]:
    """`[{"id": 1, "name": ..., "supercategory": "object"}, ...]` in vocabulary order."""
    return [{"id": i, "name": name, "supercategory": "object"} for i, name in enumerate(categories, start=1)]


class YtvisWriter(JsonDocumentWriter):
    """Write YouTube-VIS results for one or several videos to a JSON file, atomically."""

    format = "ytvis"
    file_name = YTVIS_NAME

    def fields(self, results: VideoResults, categories: Sequence[str],
               masks_written: MaskCounter | None = None) -> list[tuple[str, object]]:
        ids = [video.video_id for video, _ in results]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate video ids in YouTube-VIS output: {ids}")
        for video, tracks in results:
            check_tracks(video, list(tracks), len(categories))
        annotations = (
            {
                "video_id": video.video_id,
                "category_id": int(track.category_id),
                "score": float(track.score),
                # streamed: a 2-hour track has 216,000 masks (counted here: check_tracks has read them already)
                "segmentations": counted_masks(track.segmentations, masks_written),
            }
            for video, tracks in results
            for track in tracks
        )
        videos = (self._video_json(video) for video, _ in results)
        return [("videos", videos), ("categories", categories_json(categories)), ("annotations", annotations)]


    @staticmethod
    def _video_json(video: VideoInfo) -> dict:
        """The ``videos[]`` entry of ``video``, its per-frame lists as iterators (``streamed_json``)."""
        entry = {
            "id": video.video_id,
            "name": video.stem,
            "width": video.width,
            "height": video.height,
            "length": video.num_frames,
            "file_names": iter(video.file_names),  # lists streamed: one entry per frame
            "fps": float(video.fps),
            "frame_stride": video.frame_stride,
            "frame_indices": iter(video.frame_indices),
            **source_fields(video.source),
        }
        if video.frame_times is not None:  # a variable frame rate: each processed frame's time in seconds
            entry["frame_times"] = iter(video.frame_times)
        if video.start_time:  # a constant rate, the video starting after the file (its audio): frame 0's time
            entry["start_time"] = video.start_time
        return entry
