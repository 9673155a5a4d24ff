"""Label Studio video tasks and a FiftyOne video dataset directory: both review the source video itself, so both
carry (a link to) it and number frames from 1 as those tools do (frame n = source frame n - 1).

* `labelstudio/`: `tasks.json` (one task per video: `data.video`, `data.fps` (the rate its keyframes are numbered
  at, which the config's Video tag reads: `frameRate="$fps"`) and a prediction whose results are
  `videorectangle` regions, one per track: `value.sequence` holds a keyframe per processed frame where the object
  is present, the box of its mask in percent of the frame size, `enabled` false on the last box before the object
  leaves, so Label Studio does not stretch the box over frames where it is absent; `value.labels` its class,
  `framesCount` and `duration` of the video), `config.xml` (the labeling config these results fit: `Video`
  `video`, `VideoRectangle` `box`, `Labels` `videoLabels` with every class) and `media/<video>` (a hard link to or
  copy of the source). `data.video` is `--media-url` + the file name, percent-encoded (`media_url`): the URL
  under which Label Studio will serve the file (e.g. `/data/local-files/?d=clips/` for local-files storage); by
  default the bare (encoded) name.
  Masks cannot be carried: Label Studio video has boxes only.
* `fiftyone/`: the `fo.types.FiftyOneVideoLabelsDataset` layout: `manifest.json` (index of data/labels pairs),
  `data/<video>` (link or copy) and `labels/<stem>.json`, ETA VideoLabels: `frames[n].objects.objects[]` are
  `eta.core.objects.DetectedObject`s with `label`, relative `bounding_box` (`top_left`, `bottom_right`), `mask`
  (the mask cropped to that box, serialised as FiftyOne/ETA do: `np.save`, zlib, base64), `confidence` (the track
  score) and `index` (the track id), which FiftyOne's importer turns into `fo.Detection(mask=..., index=...)` per
  frame.
"""

from __future__ import annotations

import base64
import io
import json
import math
import mimetypes
import os
import shutil
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from clipvis.cli import rle
from clipvis.cli.exporters.base import Exporter, ExportOptions, frame_crops
from clipvis.cli.exporters.frames import check_frame_size
from clipvis.cli.exporters.loading import ExportInputError, ExportVideo
from clipvis.cli.inputs import NAME_MAX_BYTES
from clipvis.cli.json_io import JsonObjectItems, write_streamed_json
from clipvis.cli.messages import path_text, shell_word, shown_path
from clipvis.cli.results import TrackResult, fps_fraction
from clipvis.cli.track_colours import hex_colour
from clipvis.cli.video_io import VideoProbe, VideoReader, VideoReadError
from clipvis.cli.video_io.decoding import video_pixel_format
from clipvis.cli.writers.layout import name_within

LABEL_STUDIO_CONTROLS = {"video": "video", "box": "box", "labels": "videoLabels"}


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link to `source` when the file system allows one, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _video_source(video: ExportVideo, tool: str) -> tuple[Path, VideoProbe]:
    """The source video the results were made from, probed; ExportInputError when it is missing, an image folder,
    unreadable, or of another frame size (not the video of these results)."""
    source = Path(video.info.source)
    if video.info.kind != "video":
        raise ExportInputError(video.results_file,
                               f"{tool} reviews videos: the source {shown_path(source)} is an image folder")
    try:
        found = source.is_file()  # a regular file (not a pipe: opening one waits for a writer)
    except OSError:  # a name no file system takes (too long)
        found = False
    if not found:
        raise ExportInputError(video.results_file, f"source video {shown_path(source)} (videos[].source) not found; "
                                                   f"{tool} needs it")
    if tool == "FiftyOne" and fiftyone_media_type(source.name) == "image":
        raise ExportInputError(video.results_file,
                               f"FiftyOne reviews videos: it loads the source {shown_path(source)} as an image (by its "
                               "extension's MIME type), which per-frame labels cannot attach to; "
                               f"{reencode_hint(source)}")
    try:
        probe = VideoReader(source).probe()
    except VideoReadError as error:
        raise ExportInputError(video.results_file, f"source video: {error}") from None
    check_frame_size(video.info, video.results_file, source, probe.height, probe.width)
    needed = video.info.frame_indices[-1] + 1 if video.info.frame_indices else 0
    # The header's count (a little slack), or duration x rate: an estimate that misses a late start (an MPEG-PS file
    # starting 0.5 s late is counted that much short, a 6-frame one as 1 frame): a second of frames more
    slack = max(2, needed // 50) + (math.ceil(probe.fps) if probe.frame_count_estimated else 0)
    if probe.frame_count and probe.frame_count < needed - slack:
        raise ExportInputError(video.results_file, f"source {shown_path(source)} has {probe.frame_count} frames, "
                                                   f"the results reach frame {needed} (not the video these results "
                                                   "were made from)")
    return source, probe


# Containers and codecs browsers play as video, which Label Studio relies on (labelstud.io/tags/video recommends
# H.264 in MP4): MP4 with H.264 or AV1, WebM with VP8, VP9 or AV1.
BROWSER_VIDEO = {".mp4": {"h264", "av1"}, ".m4v": {"h264", "av1"}, ".webm": {"vp8", "vp9", "av1"}}
# H.264 pixel formats browsers decode: 8-bit 4:2:0 (profiles up to High); High 10 (yuv420p10le) and High 4:2:2 /
# 4:4:4 (yuv422p, yuv444p) do not play in common browsers
BROWSER_H264_PIXEL_FORMATS = {"yuv420p", "yuvj420p"}


# Pads a frame to even sides (none for an even size): libx264 in 4:2:0 (yuv420p) refuses an odd width or height
EVEN_SIZE_FILTER = "pad=ceil(iw/2)*2:ceil(ih/2)*2"


def reencode_hint(source: Path) -> str:
    """How to make ``source`` an MP4 that browsers and FiftyOne play as video (then segment that file): an ffmpeg
    line writing `<stem>-h264.mp4` beside it, a name that neither the source nor the same stem's other videos have
    (a bare `<stem>.mp4` in the current folder could be another video of the user's). Its frames are padded to even
    sides (`EVEN_SIZE_FILTER`: the line failed for a 33x25 video), which leaves an even size as it is."""
    target = source.with_name(name_within(source.stem, "-h264.mp4"))  # a long stem cut short: a name takes 255 bytes
    return (f"re-encode it (ffmpeg -i {shell_word(source)} -vf {shell_word(EVEN_SIZE_FILTER)} -c:v libx264 -pix_fmt "
            f"yuv420p -movflags +faststart {shell_word(target)}) and segment that file")


def fiftyone_media_type(name: str) -> str:
    """What FiftyOne takes a file of this name for: "video", "image" or "unknown", by the MIME type its extension
    guesses (`fiftyone.core.media.get_media_type`: `mimetypes.guess_type`, image types first)."""
    mime_type = mimetypes.guess_type(name)[0] or ""
    return "image" if mime_type.startswith("image/") else "video" if mime_type.startswith("video/") else "unknown"


def label_studio_source_warning(source: Path, probe: VideoProbe) -> str | None:
    """A warning when browsers (which play the video for Label Studio) may not play ``source``; None for an MP4 of
    H.264 (8-bit 4:2:0: `BROWSER_H264_PIXEL_FORMATS`) or AV1, a WebM of VP8, VP9 or AV1."""
    codecs = BROWSER_VIDEO.get(source.suffix.lower())
    pixel_format = video_pixel_format(source) if probe.codec == "h264" else None
    if codecs is not None and probe.codec in codecs and \
            (pixel_format is None or pixel_format in BROWSER_H264_PIXEL_FORMATS):
        return None
    # an H.264 of a pixel format browsers do not decode (High 10, 4:4:4) says which: the codec alone is fine
    shown_format = f" {pixel_format}" if pixel_format and pixel_format not in BROWSER_H264_PIXEL_FORMATS else ""
    kind = f"{source.suffix.lower() or 'no extension'}, {probe.codec or 'codec unknown'}{shown_format}"
    depth = "; browsers play H.264 in 8-bit 4:2:0, yuv420p" if shown_format else ""
    return (f"labelstudio: {shown_path(source)} ({kind}) is not a video every browser plays (Label Studio plays it "
            f"in the browser and recommends H.264 in MP4{depth}): {reencode_hint(source)}")


def fiftyone_source_warning(source: Path) -> str | None:
    """A warning when FiftyOne may not load ``source`` as a video (its extension's MIME type is not video/...: it
    is a sample of unknown media type, without frames); None when it does."""
    if fiftyone_media_type(source.name) == "video":
        return None
    kind = f"a {source.suffix.lower()} file" if source.suffix else "a file without extension"
    return (f"fiftyone: {shown_path(source)}: FiftyOne may not load {kind} as a video (it goes by the extension's "
            f"MIME type), and per-frame labels need one: {reencode_hint(source)}")


def _frame_count(video: ExportVideo, probe: VideoProbe) -> int:
    last = video.info.frame_indices[-1] + 1 if video.info.frame_indices else 0
    return max(int(probe.frame_count or 0), last)


def serialize_mask(mask: np.ndarray) -> str:
    """FiftyOne / ETA's serialisation of a numpy array: `np.save`, zlib, base64 (ASCII)."""
    with io.BytesIO() as buffer:
        np.save(buffer, mask, allow_pickle=False)
        return base64.b64encode(zlib.compress(buffer.getvalue())).decode("ascii")


# How a --media-url prefix that the file name follows directly ends: a folder, or a query (`?d=`, `?`, `&`)
URL_PREFIX_ENDS = ("/", "=", "?", "&")


def media_url_prefix(prefix: str) -> str:
    """``prefix`` as the file name follows it: a folder URL given without its last `/` (`http://host/clips`) gets
    one, which `http://host/clipsNAME` lacked; a prefix ending in `/` or in a query (`=`, `?`, `&`:
    `/data/local-files/?d=`) is kept as given, and so is an empty one (the bare name)."""
    return prefix + "/" if prefix and not prefix.endswith(URL_PREFIX_ENDS) else prefix


def media_url(prefix: str, name: str) -> str:
    """`prefix` (`media_url_prefix`) + the file name percent-encoded, so that a server gets the exact name back
    whether the prefix ends in a path (`http://host/clips/`) or in a query value (`/data/local-files/?d=clips/`):
    every character but letters, digits, `_.-~` and `/` is encoded (UTF-8), among them space, `#` (would start a
    fragment), `?`, `&` and `=` (would end the query value), `+` (a space in a query) and `%`."""
    return media_url_prefix(prefix) + quote(os.fsencode(name), safe="/")  # a name not valid UTF-8: its own bytes


# A frame this little after a Label Studio frame's time (a fraction of a frame) counts as at it: timestamps are rounded
# to their container's time base (30 frames/s in milliseconds: 33, 67, 100, ...).
_SAME_TIME = 0.1


def label_studio_media_name(source: Path) -> str:
    """The name of ``source``'s copy in `labelstudio/media/`, which tasks.json's `data.video` ends with: one name in
    the zip however it is unzipped (a backslash in a Linux file name is a folder to Windows tools), and UTF-8 text
    (a zip member's name is; a name that is not valid UTF-8 failed the whole input): its undecodable bytes written
    as `_xNN`, as the output folder's name (`caf\\xe9.mp4` -> `caf_xe9.mp4`); a valid UTF-8 name is kept. A name
    those bytes (4 each) made longer than a file system takes (255 bytes) is cut short (whole characters) before its
    extension, as the output folder's is: it failed the input where the zip is unpacked, and export's folder."""
    name = path_text(source.name).replace("\\", "_")
    stem, extension = os.path.splitext(name)
    if len(os.fsencode(extension)) > NAME_MAX_BYTES // 2:  # no extension to keep (`.` and 200 bytes)
        stem, extension = name, ""
    return name_within(stem, extension)


def label_studio_frame_numbers(times: Sequence[float], fps: float) -> list[int | None]:
    """Per frame of a variable-frame-rate video (``times``: seconds from the start, increasing), the Label Studio
    frame that shows it, or None where none does.

    Label Studio plays a video at one frame rate: its frame n is the picture at (n - 1) / ``fps`` seconds, which is
    the last frame whose time has come. A frame is shown first by the Label Studio frame at or after its time, unless
    the next frame's time has come by then too (frames closer together than a Label Studio frame): that one's picture
    is shown there instead, and the earlier frame's boxes have no frame to go on (Label Studio interpolates between
    the boxes it has). Numbering such frames on (the next numbers) moved every later box onto pictures other than
    its own, and past the video's end."""
    first = [math.ceil(seconds * fps - _SAME_TIME) + 1 for seconds in times]
    return [number if following is None or following > number else None
            for number, following in zip(first, [*first[1:], None], strict=True)]


def label_studio_config(video: ExportVideo) -> str:
    """The labeling config the exported tasks fit: the same for every video of a vocabulary, so one project takes all
    of their tasks. The frame rate is each task's own (`data.fps`, the rate its keyframes are numbered at): Label
    Studio's Video tag takes `frameRate` from task data (`$fps`; labelstud.io/tags/video), where one written rate put
    the keyframes of every video of another rate on the wrong frames."""
    view = ET.Element("View")
    ET.SubElement(view, "Header", {"value": "Review the clipvis tracks"})
    ET.SubElement(view, "Video", {"name": LABEL_STUDIO_CONTROLS["video"], "value": "$video",
                                  "frameRate": "$fps"})
    ET.SubElement(view, "VideoRectangle", {"name": LABEL_STUDIO_CONTROLS["box"],
                                           "toName": LABEL_STUDIO_CONTROLS["video"]})
    labels = ET.SubElement(view, "Labels", {"name": LABEL_STUDIO_CONTROLS["labels"],
                                            "toName": LABEL_STUDIO_CONTROLS["video"]})
    for category_id in video.category_ids:
        ET.SubElement(labels, "Label", {"value": video.categories[category_id - 1],
                                        "background": hex_colour(category_id)})
    ET.indent(view, space="  ")
    return ET.tostring(view, encoding="unicode") + "\n"


class LabelStudioExporter(Exporter):
    name = "labelstudio"
    description = "Label Studio video tasks (VideoRectangle tracks from the masks) + labeling config"
    needs_media = True
    needs_video_file = True

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        info = video.info
        source, probe = _video_source(video, "Label Studio")
        self.warnings = [warning for warning in [label_studio_source_warning(source, probe)] if warning]
        frames_count = _frame_count(video, probe)
        fps = float(fps_fraction(info.fps))
        root = directory / self.name
        (root / "media").mkdir(parents=True)
        media_name = label_studio_media_name(source)
        link_or_copy(source, root / "media" / media_name)
        times = info.frame_times or [info.start_time + index / fps for index in info.frame_indices]
        duration = max(frames_count / fps, times[-1] + 1 / fps if times else 0.0)
        numbers: list[int | None] = [index + 1 for index in info.frame_indices]
        if info.frame_times or info.start_time:  # a variable frame rate, or a video after its audio: Label
            # Studio's frames by time (from the file's start), those before the video's end
            duration = probe.duration or duration
            frames_count = max(1, math.ceil(duration * fps - _SAME_TIME))
            numbers = [number if number is not None and number <= frames_count else None
                       for number in label_studio_frame_numbers(times, fps)]

        def boxes(track: TrackResult) -> Iterator[dict]:
            """The track's boxes, each yielded once the next frame says whether the object is still there (the
            last box before it leaves, and its last box of all, end its lifespan: ``enabled`` false)."""
            previous: dict | None = None
            for position in range(info.num_frames):
                if numbers[position] is None:  # a picture Label Studio shows on none of its frames
                    continue
                segmentation = track.segmentations[position]
                if segmentation is None or rle.area(segmentation) == 0:
                    if previous is not None:
                        yield {**previous, "enabled": False}  # the object left: its lifespan ends at its last box
                        previous = None
                    continue
                if previous is not None:
                    yield previous
                x, y, w, h = rle.bbox(segmentation)
                previous = {
                    "frame": numbers[position], "enabled": True, "rotation": 0,
                    "x": 100.0 * x / info.width, "y": 100.0 * y / info.height,
                    "width": 100.0 * w / info.width, "height": 100.0 * h / info.height,
                    "time": times[position],
                }
            if previous is not None:
                yield {**previous, "enabled": False}

        def shown(track: TrackResult) -> bool:  # a box on some frame Label Studio shows (read until the first one)
            return any(number is not None and seg is not None and rle.area(seg) > 0
                       for number, seg in zip(numbers, track.segmentations, strict=True))

        # Streamed track by track, box by box: a long video's boxes never sit in memory at once (they did, with
        # their JSON text).
        tracks = [track for track in video.tracks if shown(track)]
        results = (
            {
                "id": f"track{track.track_id}", "from_name": LABEL_STUDIO_CONTROLS["box"],
                "to_name": LABEL_STUDIO_CONTROLS["video"], "type": "videorectangle", "origin": "prediction",
                "score": round(track.score, 6),
                "value": {"framesCount": frames_count, "duration": duration, "sequence": boxes(track),
                          "labels": [video.categories[track.category_id - 1]]},
            }
            for track in tracks
        )
        scores = [round(track.score, 6) for track in tracks]
        task = {
            # the rate the keyframes are numbered at, which config.xml's Video tag reads (frameRate="$fps")
            "data": {"video": media_url(options.media_url, media_name), "fps": fps},
            "predictions": iter([{"model_version": "clipvis", "score": float(np.mean(scores)) if scores else 0.0,
                                  "result": results}]),
        }
        write_streamed_json(root / "tasks.json", iter([task]))
        (root / "config.xml").write_text(label_studio_config(video), encoding="utf-8")
        return [root]


class FiftyOneExporter(Exporter):
    name = "fiftyone"
    description = "FiftyOne video dataset directory (FiftyOneVideoLabelsDataset: per-frame detections with masks)"
    needs_media = True
    needs_video_file = True

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        info = video.info
        source, _ = _video_source(video, "FiftyOne")
        self.warnings = [warning for warning in [fiftyone_source_warning(source)] if warning]
        root = directory / self.name
        (root / "data").mkdir(parents=True)
        (root / "labels").mkdir()
        # named after the output folder, cut short (whole characters) where `<folder name>.json` or the video's
        # extension passed the 255 bytes of a name (a `<long name>-2` folder: "File name too long")
        suffix = source.suffix.lower()
        longest = max((suffix, ".json"), key=lambda tail: len(os.fsencode(tail)))
        base = name_within(info.stem, longest).removesuffix(longest)
        media_name, labels_name = f"{base}{suffix}", f"{base}.json"
        link_or_copy(source, root / "data" / media_name)
        def frames() -> Iterator[tuple[str, dict]]:
            for position, frame_index in enumerate(info.frame_indices):
                objects = []
                for track, crop in frame_crops(video.tracks, position, info.height, info.width, video.progress):
                    left, top, width, height = crop.box
                    bottom, right = top + height, left + width
                    objects.append({
                        "type": "eta.core.objects.DetectedObject",
                        "label": video.categories[track.category_id - 1],
                        "bounding_box": {
                            "top_left": {"x": left / info.width, "y": top / info.height},
                            "bottom_right": {"x": right / info.width, "y": bottom / info.height},
                        },
                        "mask": serialize_mask(crop.mask),
                        "confidence": round(track.score, 6),
                        "index": track.track_id,
                    })
                if objects:
                    number = frame_index + 1
                    yield str(number), {"frame_number": number, "objects": {"objects": objects}}

        # Written frame by frame: a long video's masks never sit in memory at once (every frame's were before).
        labels = {"filename": media_name, "frames": JsonObjectItems(frames())}
        write_streamed_json(root / "labels" / labels_name, labels)
        manifest = {
            "type": "eta.core.datasets.LabeledVideoDataset", "description": f"clipvis export of {info.stem}",
            "index": [{"data": f"data/{media_name}", "labels": f"labels/{labels_name}"}],
        }
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return [root]
