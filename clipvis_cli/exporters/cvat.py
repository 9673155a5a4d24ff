"""CVAT for video 1.1 and CVAT for images 1.1 XML, zipped as CVAT's "Upload annotations" takes them
(`annotations.xml` at the root of the zip, optional `images/`).

* `cvat-video`: one `<track>` per object, holding one `<polygon>` per processed frame where the object is present
  (outline of every part and hole in one polygon, see `clipvis.cli.exporters.masks`), each `keyframe="1"` so CVAT
  does not interpolate between them, and an `outside="1"` polygon on the next processed frame after the object
  leaves. CVAT keeps only the first mask of a mask track and Datumaro cannot read masks inside tracks, hence
  polygons. Each `<track id>` is the clipvis track id (the id the other formats and the overlay show, kept under
  `--classes` / `--min-score`; Datumaro reads it as `track_id`), and each shape carries it as the `track_id`
  attribute (declared, immutable, in `<meta>`), which is what a reviewer sees in CVAT (CVAT numbers the objects it
  imports itself). Frame numbers are the source video's frame numbers (what CVAT decodes; with `--stride N` the task's
  `frame_filter` is `step=N`).
* `cvat-images`: one `<image id=<frame number> name="frame_<number:06d>.jpg">` per processed frame (an image-folder
  source: `name` is the image's own file name, which CVAT matches first) with one exact
  `<mask>` per object (`rle`: run lengths over the mask's tight box `left,top,width,height`, row by row, starting
  with a background run) and a `track_id` attribute (declared as a number attribute of every label). With media
  the zip carries `images/<name>`, as CVAT's own exports do.
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from clipvis.cli import __version__, rle
from clipvis.cli.exporters.base import Exporter, ExportOptions, class_key, frame_crops
from clipvis.cli.exporters.coco import image_file_name as coco_image_name
from clipvis.cli.exporters.frames import processed_frames, save_image
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.exporters.masks import crop_polygon, cvat_crop_rle, polygon_iou
from clipvis.cli.messages import path_text, unwritable_character
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.track_colours import hex_colour
from clipvis.cli.zip_files import add_file, add_stream

CVAT_FORMATS = ("cvat-video", "cvat-images")
CVAT_LABEL_CHARACTERS = 64  # a CVAT label's name (its Label model's max_length)


def labels_cvat_refuses(categories: Sequence[str], formats: Iterable[str],
                        classes: Sequence[str] | None = None) -> str | None:
    """What is wrong when one of ``categories`` (those among ``classes``, `--classes`, where given) is longer than a
    CVAT label's name may be (64 characters: a task cannot have that label, so its shapes do not import) and
    ``formats`` hold a CVAT format; None otherwise. `clipvis export` and `segment --formats` say it per video."""
    if not set(CVAT_FORMATS) & set(formats):
        return None
    wanted = {class_key(name) for name in classes or ()}
    names = [name for name in categories if not wanted or class_key(name) in wanted]
    long = [name for name in names if len(name) > CVAT_LABEL_CHARACTERS]
    if not long:
        return None
    shown = ", ".join(f"{name[:40]!r}... ({len(name)})" for name in long[:3]) + (", ..." if len(long) > 3 else "")
    return (f"CVAT takes label names of up to {CVAT_LABEL_CHARACTERS} characters, so a task cannot have the labels "
            f"{shown}, and their shapes will not import: shorten the class names in the segment vocabulary")


ANNOTATIONS_NAME = "annotations.xml"
MAX_TRACK_ID = 1_000_000


def frame_name(frame_index: int) -> str:
    """CVAT's name of a video task's frame."""
    return f"frame_{frame_index:06d}"


def image_name(info: VideoInfo, position: int) -> str:
    """The ``name`` of processed frame ``position``'s ``<image>`` (and its file under ``images/``): CVAT's name of a
    video task's frame plus ``.jpg``, or for an image-folder source the image's own file name, which CVAT's "CVAT
    1.1" importer matches against the task's image names before it falls back to the ``id`` (a task sorts a folder's
    images its own way: ``1.jpg, 10.jpg, 2.jpg`` by default, where clipvis numbers ``1.jpg, 2.jpg, 10.jpg``)."""
    if info.kind == "images":
        return _xml_text(coco_image_name(info, position))
    return f"{frame_name(info.frame_indices[position])}.jpg"


def _xml_text(text: str) -> str:
    """``text`` with what XML cannot hold (a control character of a file name, an escaped byte) as ``_``: a video
    named ``esc\x1bname.mp4`` made an annotations.xml no tool could parse."""
    return "".join("_" if unwritable_character(char) else char for char in text)


def _meta(video: ExportVideo, mode: str, with_track_attribute: bool) -> ET.Element:
    info = video.info
    meta = ET.Element("meta")
    task = ET.SubElement(meta, "task")
    fields = {
        "id": "0", "name": _xml_text(info.stem), "size": str(info.num_frames), "mode": mode, "overlap": "0",
        "bugtracker": "", "flipped": "False",
        "start_frame": str(info.frame_indices[0] if info.frame_indices else 0),
        "stop_frame": str(info.frame_indices[-1] if info.frame_indices else 0),
        "frame_filter": f"step={info.frame_stride}" if info.frame_stride > 1 else "",
        "source": _xml_text(path_text(Path(info.source).name)),
    }
    for key, value in fields.items():
        ET.SubElement(task, key).text = value
    labels = ET.SubElement(task, "labels")
    for category_id in video.category_ids:
        label = ET.SubElement(labels, "label")
        ET.SubElement(label, "name").text = video.categories[category_id - 1]
        ET.SubElement(label, "color").text = hex_colour(category_id)
        ET.SubElement(label, "type").text = "any"
        attributes = ET.SubElement(label, "attributes")
        if with_track_attribute:
            attribute = ET.SubElement(attributes, "attribute")
            for key, value in (("name", "track_id"), ("mutable", "False"), ("input_type", "number"),
                               ("default_value", "0"), ("values", f"0\n{MAX_TRACK_ID}\n1")):
                ET.SubElement(attribute, key).text = value
    if mode == "interpolation":
        size = ET.SubElement(task, "original_size")
        ET.SubElement(size, "width").text = str(info.width)
        ET.SubElement(size, "height").text = str(info.height)
    ET.SubElement(meta, "dumped").text = f"clipvis {__version__}"
    return meta


def _write_zip(
    path: Path, root: ET.Element, images: dict[str, Path] | None = None, children: Iterable[XmlChild] = (),
) -> Path:
    """The zip of the annotations XML (``root`` indented, and after its own children the elements ``children``
    yields, each written as it comes: a long video's frames or tracks are never all in memory, and the bytes are
    those of ``root`` holding them all) and the ``images``."""
    with tempfile.TemporaryFile(dir=path.parent) as xml:
        xml.write(b'<?xml version="1.0" encoding="utf-8"?>\n')
        _write_xml(xml, root, children)
        size = xml.tell()
        xml.seek(0)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            add_stream(archive, ANNOTATIONS_NAME, xml, size)
            for name, file in (images or {}).items():
                add_file(archive, file, name, zipfile.ZIP_STORED)
    return path


@dataclass
class StreamedElement:
    """An element whose children are serialised one at a time as ``children`` yields them (a long video's track
    holds a polygon for each of its frames: never all in memory); left out of the XML when it yields none."""

    element: ET.Element
    children: Iterable[XmlChild]


XmlChild = ET.Element | StreamedElement
_INDENT = "  "
_STREAMED = "clipvis-streamed-children"  # where the streamed children go, in the serialised parent


def _write_xml(target: IO[bytes], root: ET.Element, children: Iterable[XmlChild]) -> None:
    """``root`` with ``children`` appended, as ``ET.indent(root, space="  ")`` and ``ET.tostring`` give it."""
    written = False
    for chunk in _serialised(StreamedElement(root, children), level=0):
        target.write(chunk)
        written = True
    if not written:  # as the root alone indents: its last own child ends the line before the closing tag
        ET.indent(root, space=_INDENT)
        target.write(ET.tostring(root, encoding="utf-8"))


def _serialised(item: XmlChild, level: int) -> Iterator[bytes]:
    """The bytes of ``item`` indented as the child at depth ``level`` of an ``ET.indent``-ed tree (no tail); of a
    ``StreamedElement``, its element's own children then the streamed ones, and nothing where it streams none."""
    if isinstance(item, ET.Element):
        ET.indent(item, space=_INDENT, level=level)
        item.tail = None
        yield ET.tostring(item, encoding="utf-8")
        return
    parent = item.element
    marker = ET.SubElement(parent, _STREAMED)
    ET.indent(parent, space=_INDENT, level=level)
    before, after = ET.tostring(parent, encoding="utf-8").split(f"<{_STREAMED} />".encode(), 1)
    parent.remove(marker)
    between = ("\n" + _INDENT * (level + 1)).encode()
    opened = False
    for child in item.children:
        for number, chunk in enumerate(_serialised(child, level + 1)):
            if number == 0:
                yield between if opened else before
                opened = True
            yield chunk
    if opened:
        yield after


def _points(polygon: np.ndarray) -> str:
    flat = polygon.ravel().tolist()  # Python floats: ~3x faster to format; one format call per point
    return ";".join(map("{:.2f},{:.2f}".format, flat[0::2], flat[1::2]))


class _RunningMean:
    """The mean of numbers added one at a time (None before any), without keeping them."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


CROP_BLOCK_PIXELS = 1 << 22  # a track's masks are cut to their boxes this many frame pixels' worth at a time


def _track_crops(track: TrackResult, height: int, width: int
                 ) -> Iterator[tuple[int, rle.RleDict | None, rle.MaskCrop | None]]:
    """``(position, segmentation, crop)`` for each processed frame of ``track`` (crop None where the mask is absent
    or empty), the masks cut to their boxes a block of frames at a time (`clipvis.cli.rle.mask_crops`: one
    vectorised pass, no mask decoded whole; per mask, decoding the whole frame cost more than tracing it)."""
    frames = len(track.segmentations)
    block = max(1, min(256, CROP_BLOCK_PIXELS // max(height * width, 1)))
    for start in range(0, frames, block):
        segmentations = [track.segmentations[position] for position in range(start, min(start + block, frames))]
        crops = rle.mask_crops(segmentations, height, width)
        for offset, (segmentation, crop) in enumerate(zip(segmentations, crops, strict=True)):
            yield start + offset, segmentation, crop


class CvatVideoExporter(Exporter):
    name = "cvat-video"
    description = "CVAT for video 1.1 (polygon tracks), zip for CVAT's Upload annotations"

    def __init__(self) -> None:
        self.last_polygon_iou: float | None = None  # mean mask IoU of the polygons, every shown mask (pycocotools fill)

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        root = ET.Element("annotations")
        ET.SubElement(root, "version").text = "1.1"
        root.append(_meta(video, "interpolation", with_track_attribute=True))
        ious = _RunningMean()  # of every shown mask's polygon IoU (a 2-hour video has ~600,000: not kept)

        tracks = (self._track(video, track, options, ious) for track in video.tracks)  # one polygon at a time
        path = _write_zip(directory / f"{self.name}.zip", root, children=tracks)
        self.last_polygon_iou = ious.mean
        return [path]

    def _track(
        self, video: ExportVideo, track: TrackResult, options: ExportOptions, ious: _RunningMean
    ) -> StreamedElement:
        """A track's ``<track>`` element, its polygons made as they are written: one on each frame where its mask
        shows, closed (``outside``) on the frame it leaves (with its mask's polygon IoUs added to ``ious`` when
        measured); left out where the mask never shows."""
        element = ET.Element("track", {
            "id": str(track.track_id), "label": video.categories[track.category_id - 1], "source": "auto",
        })
        return StreamedElement(element, self._polygons(video, track, options, ious))

    def _polygons(
        self, video: ExportVideo, track: TrackResult, options: ExportOptions, ious: _RunningMean
    ) -> Iterator[ET.Element]:
        info = video.info
        last_polygon: str | None = None
        for position, segmentation, crop in _track_crops(track, info.height, info.width):
            if video.progress is not None:
                video.progress(1)
            polygon = crop_polygon(crop, info.height, info.width) if crop is not None else None
            frame = str(info.frame_indices[position])
            if crop is not None and options.measure_polygons:  # a mask no polygon outlines counts as IoU 0
                ious.add(0.0 if polygon is None else polygon_iou(polygon, segmentation, info.height, info.width))
            if polygon is not None:
                last_polygon = _points(polygon)
                yield self._shape(frame, last_polygon, track.track_id, outside=False)
            elif last_polygon is not None:  # the object left: close the track on this frame
                yield self._shape(frame, last_polygon, track.track_id, outside=True)
                last_polygon = None

    @staticmethod
    def _shape(frame: str, points: str, track_id: int, outside: bool) -> ET.Element:
        shape = ET.Element("polygon", {
            "frame": frame, "outside": "1" if outside else "0", "occluded": "0", "keyframe": "1",
            "points": points, "z_order": "0",
        })
        ET.SubElement(shape, "attribute", {"name": "track_id"}).text = str(track_id)
        return shape


class CvatImagesExporter(Exporter):
    name = "cvat-images"
    description = "CVAT for images 1.1 (exact masks per frame, track_id attribute), zip"
    uses_media = True

    def export(self, video: ExportVideo, directory: Path, options: ExportOptions) -> list[Path]:
        info = video.info
        root = ET.Element("annotations")
        ET.SubElement(root, "version").text = "1.1"
        root.append(_meta(video, "annotation", with_track_attribute=True))

        def frames() -> Iterator[ET.Element]:  # one frame's masks in memory at a time
            for position, frame_index in enumerate(info.frame_indices):
                image = ET.Element("image", {
                    "id": str(frame_index), "name": image_name(info, position),
                    "width": str(info.width), "height": str(info.height),
                })
                for track, crop in frame_crops(video.tracks, position, info.height, info.width, video.progress):
                    runs, left, top, width, height = cvat_crop_rle(crop)
                    shape = ET.SubElement(image, "mask", {
                        "label": video.categories[track.category_id - 1], "source": "auto", "occluded": "0",
                        "rle": ", ".join(map(str, runs)), "left": str(left), "top": str(top),
                        "width": str(width), "height": str(height), "z_order": "0",
                    })
                    ET.SubElement(shape, "attribute", {"name": "track_id"}).text = str(track.track_id)
                yield image

        images: dict[str, Path] = {}
        if self.wants_frames(options):
            frames_dir = directory / ".frames"
            frames_dir.mkdir()
            for position, frame in processed_frames(info, video.results_file):
                file = frames_dir / image_name(info, position)
                save_image(file, frame)
                images[f"images/{file.name}"] = file
        path = _write_zip(directory / f"{self.name}.zip", root, images, children=frames())
        if images:
            for file in images.values():
                file.unlink()
            (directory / ".frames").rmdir()
        return [path]
