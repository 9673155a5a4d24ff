"""Formats built on per-frame id maps (no overlap allowed): MOTS PNG, MOTS text and DAVIS-style PNG masks.

Overlaps are resolved by score: where two objects' masks overlap, the pixel goes to the higher-scoring track
(ties: the track listed first, i.e. the better-ranked one); the other keeps the rest of its mask. An object whose
whole mask is covered on a frame is absent from that frame.

* `mots-png`: `instances/<frame number:06d>.png`, 16-bit single channel, pixel = class_id * 1000 +
  instance_id (0 background), `instances/labels.txt` (line k names class k), `class_map.json`. Instance ids are
  the track ids (unique across classes within a video, 1..999). Class ids are the vocabulary's category ids when
  every exported id is <= 65 (65 * 1000 + 535 = 65535, the 16-bit limit: with class 65 track ids must be
  <= 535); otherwise the classes of the exported tracks are renumbered
  1..K in vocabulary order and `class_map.json` says which is which. With media, `images/<number:06d>.jpg`
  beside it. That is the layout of one subset of CVAT's "MOTS PNG 1.0" (`images/` and `instances/`; the
  folder, or a zip of it or of its contents, is what CVAT and Datumaro's `mots` importer read): an item's id is
  its frame number alone, which CVAT's importer takes as the frame of a video task (it found none for
  `<stem>/000000`, the id of the sequence folders `instances/<stem>/` written before).
* `mots-txt`: `mots.txt`, one line per object per frame: `time id class_id height width rle`, time = the source
  frame number (0-based), id = class_id * 1000 + instance_id, rle = COCO compressed RLE of the object's
  (overlap-free) mask; plus `class_map.json`. Class 10 is the MOTS benchmarks' "ignore region"; with 10 or more
  classes it is an ordinary class here.
* `png-masks`: `png-masks/<frame number:06d>.png`, 8-bit indexed (palette) PNG, pixel = track id (0 background,
  track ids up to 255), the palette giving each track its overlay colour, and `png-masks/objects.json`
  mapping every id to its class, category id and score (DAVIS layout).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike
from PIL import Image

from clipvis.cli.exporters.base import Exporter, ExportOptions, FormatLimitError
from clipvis.cli.exporters.frames import processed_frames, save_image
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.exporters.masks import rle_id_counts, rle_id_map
from clipvis.cli.track_colours import track_colour

MOTS_INSTANCES = 1000
MOTS_MAX_INSTANCE = MOTS_INSTANCES - 1  # the most tracks MOTS' instance ids hold
MOTS_MAX_CLASS = 65
PNG_MASKS_MAX_ID = 255  # png-masks' 8-bit track ids
# The most tracks each of these formats holds (track ids 1..N): `segment --max-tracks` above it is refused at once
TRACK_LIMITS = {"mots-png": MOTS_MAX_INSTANCE, "mots-txt": MOTS_MAX_INSTANCE, "png-masks": PNG_MASKS_MAX_ID}


def mots_class_ids(video: ExportVideo, format_name: str = "mots-png") -> dict[int, int]:
    """category id -> MOTS class id: identity when the declared classes (all, or --classes), else the classes of
    the exported tracks, all have ids <= 65 (16-bit ids); otherwise the declared classes, else those of the exported
    tracks, renumbered 1..K in vocabulary order. An LVIS-size vocabulary with a few classes found exports as it is
    (it failed for the vocabulary's size). FormatLimitError (of ``format_name``) when more than 65 classes are
    found."""
    declared = list(video.category_ids)
    if not declared or max(declared) <= MOTS_MAX_CLASS:
        return {category_id: category_id for category_id in declared}
    used = sorted({track.category_id for track in video.tracks})
    if used and max(used) <= MOTS_MAX_CLASS:
        return {category_id: category_id for category_id in used}
    for ids in (declared, used):  # the chosen classes (the same numbers in every video), else those found
        if len(ids) <= MOTS_MAX_CLASS:
            return {category_id: number for number, category_id in enumerate(ids, start=1)}
    raise FormatLimitError(format_name, f"the exported tracks have {len(used)} classes, more than MOTS' 16-bit ids "
                           f"hold ({MOTS_MAX_CLASS})", "choose fewer with --classes or --min-score",
                           classes=MOTS_MAX_CLASS)


def mots_labels(video: ExportVideo, class_ids: dict[int, int]) -> list[str]:
    """labels.txt lines: line k names class k (classes not exported keep their vocabulary name)."""
    if not class_ids:
        return []
    names = {class_id: video.categories[category_id - 1] for category_id, class_id in class_ids.items()}
    top = max(class_ids.values())
    return [names.get(k, video.categories[k - 1] if k <= len(video.categories) else f"class_{k}")
            for k in range(1, top + 1)]


def _check_instances(video: ExportVideo, class_ids: dict[int, int], format_name: str) -> None:
    """FormatLimitError (of ``format_name``) where a track id is no MOTS instance id (1..999), or one of class 65
    passes the 16-bit ids (65 * 1000 + 535)."""
    too_big = [t.track_id for t in video.tracks if not 1 <= t.track_id < MOTS_INSTANCES]
    if too_big:
        raise FormatLimitError(format_name, f"track ids {too_big[:3]} do not fit MOTS instance ids "
                               f"(1..{MOTS_MAX_INSTANCE})", "keep fewer tracks (--min-score)",
                               tracks=MOTS_MAX_INSTANCE)
    over = [t.track_id for t in video.tracks if class_ids[t.category_id] * MOTS_INSTANCES + t.track_id > 65535]
    if over:
        most = 65535 - MOTS_MAX_CLASS * MOTS_INSTANCES
        raise FormatLimitError(format_name, f"track ids {over[:3]} of class {MOTS_MAX_CLASS} exceed MOTS' 16-bit ids "
                               f"(at most {most} there)", "keep fewer tracks (--min-score)", tracks=most)


def _class_map_json(video: ExportVideo, class_ids: dict[int, int]) -> dict:
    return {
        "renumbered": any(k != v for k, v in class_ids.items()),
        "classes": [
            {"class_id": class_id, "name": video.categories[category_id - 1], "category_id": category_id}
            for category_id, class_id in sorted(class_ids.items(), key=lambda item: item[1])
        ],
        "id": "class_id * 1000 + instance_id (instance_id = track id)",
    }


def frame_id_map(video: ExportVideo, position: int, ids: list[int], dtype: DTypeLike = np.uint16) -> np.ndarray | None:
    """The overlap-free `[H, W]` id map of processed frame `position`, `ids[k]` where track k is (overlaps resolved
    as `rle_id_map` does); None when no track has a mask there. Painted from the tracks' RLEs, none decoded."""
    tracks = video.tracks
    present = [k for k, track in enumerate(tracks) if track.segmentations[position] is not None]
    if video.progress is not None:
        video.progress(len(tracks))
    if not present:
        return None
    return rle_id_map([tracks[k].segmentations[position] for k in present], [ids[k] for k in present],
                      [tracks[k].score for k in present], video.info.height, video.info.width, dtype=dtype)


def mots_frame(video: ExportVideo, position: int, class_ids: dict[int, int]) -> np.ndarray | None:
    """The overlap-free `[H, W]` uint16 MOTS id map of processed frame `position` (None when no track has a mask
    there)."""
    ids = [class_ids[t.category_id] * MOTS_INSTANCES + t.track_id for t in video.tracks]
    return frame_id_map(video, position, ids, dtype=np.uint16)


class MotsPngExporter(Exporter):
    name = "mots-png"
    description = "MOTS PNG (16-bit class*1000+instance id maps, labels.txt), as Datumaro / CVAT MOTS PNG 1.0"
    uses_media = True

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        info = video.info
        class_ids = mots_class_ids(video, self.name)
        _check_instances(video, class_ids, self.name)
        root = directory / self.name
        instances = root / "instances"
        instances.mkdir(parents=True)
        for position, frame_index in enumerate(info.frame_indices):
            frame = mots_frame(video, position, class_ids)
            if frame is None:
                frame = np.zeros((info.height, info.width), np.uint16)
            Image.fromarray(frame).save(instances / f"{frame_index:06d}.png")
        (instances / "labels.txt").write_text("\n".join(mots_labels(video, class_ids)) + "\n",
                                           encoding="utf-8")
        (root / "class_map.json").write_text(json.dumps(_class_map_json(video, class_ids), indent=2) + "\n",
                                             encoding="utf-8")
        if self.wants_frames(options):
            images = root / "images"
            images.mkdir(parents=True)
            for position, frame in processed_frames(info, video.results_file):
                save_image(images / f"{info.frame_indices[position]:06d}.jpg", frame)
        return [root]


class MotsTxtExporter(Exporter):
    name = "mots-txt"
    description = "MOTS text (time id class_id height width rle), as the MOTS tools read it"

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        info = video.info
        class_ids = mots_class_ids(video, self.name)
        _check_instances(video, class_ids, self.name)
        root = directory / self.name
        root.mkdir()
        with open(root / "mots.txt", "w", encoding="ascii") as handle:
            ids = [class_ids[t.category_id] * MOTS_INSTANCES + t.track_id for t in video.tracks]
            for position, frame_index in enumerate(info.frame_indices):
                # each object's part of the frame's MOTS id map, encoded straight from the painted RLEs
                present = [k for k, track in enumerate(video.tracks) if track.segmentations[position] is not None]
                if video.progress is not None:
                    video.progress(len(video.tracks))
                objects = rle_id_counts([video.tracks[k].segmentations[position] for k in present],
                                        [ids[k] for k in present], [video.tracks[k].score for k in present],
                                        info.height, info.width) if present else []
                for object_id, counts in objects:
                    handle.write(f"{frame_index} {object_id} {object_id // MOTS_INSTANCES} "
                                 f"{info.height} {info.width} {counts}\n")
        (root / "labels.txt").write_text("\n".join(mots_labels(video, class_ids)) + "\n", encoding="utf-8")
        (root / "class_map.json").write_text(json.dumps(_class_map_json(video, class_ids), indent=2) + "\n",
                                             encoding="utf-8")
        return [root]


class PngMasksExporter(Exporter):
    name = "png-masks"
    description = "indexed PNG id masks per frame (DAVIS style) + objects.json"
    MAX_ID = PNG_MASKS_MAX_ID

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        info = video.info
        if any(not 1 <= t.track_id <= self.MAX_ID for t in video.tracks):
            highest = max(t.track_id for t in video.tracks)
            reach = f", and this video's reach {highest}" if highest > self.MAX_ID else ""
            raise FormatLimitError(self.name, f"png-masks holds track ids 1..{self.MAX_ID}{reach}",
                                   "keep fewer tracks (--min-score)", tracks=self.MAX_ID)
        root = directory / self.name
        root.mkdir()
        track_ids = [t.track_id for t in video.tracks]
        palette = [0, 0, 0]
        for track_id in range(1, 256):
            palette.extend(track_colour(track_id))
        for position, frame_index in enumerate(info.frame_indices):
            frame = frame_id_map(video, position, track_ids, dtype=np.uint8)
            if frame is None:
                frame = np.zeros((info.height, info.width), np.uint8)
            image = Image.new("P", (info.width, info.height))
            image.frombytes(frame.tobytes())
            image.putpalette(palette)
            image.save(root / f"{frame_index:06d}.png")
        objects = {
            "frames": "<source frame number:06d>.png; pixel value = object id, 0 = background",
            "objects": {
                str(t.track_id): {"class": video.categories[t.category_id - 1], "category_id": t.category_id,
                                  "score": round(t.score, 6)}
                for t in video.tracks
            },
        }
        (root / "objects.json").write_text(json.dumps(objects, indent=2) + "\n", encoding="utf-8")
        return [root]
