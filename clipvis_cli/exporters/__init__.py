"""`clipvis export`: what `segment` wrote, converted for CVAT, Datumaro, FiftyOne, Label Studio, MOTS tools,
DAVIS-style tools and evaluation servers, without running the model again.

`EXPORTERS` maps each format name to its exporter class; `create_exporter(name)` makes one.
"""

from __future__ import annotations

from clipvis.cli.exporters.base import Exporter, ExportOptions, select_tracks
from clipvis.cli.exporters.coco import CocoExporter
from clipvis.cli.exporters.cvat import CvatImagesExporter, CvatVideoExporter
from clipvis.cli.exporters.id_maps import MotsPngExporter, MotsTxtExporter, PngMasksExporter
from clipvis.cli.exporters.loading import ExportInputError, ExportVideo, discover_export_inputs, load_videos
from clipvis.cli.exporters.video_tools import FiftyOneExporter, LabelStudioExporter

YTVIS_FORMAT = "ytvis"

EXPORTERS: dict[str, type[Exporter]] = {
    exporter.name: exporter
    for exporter in (
        CvatVideoExporter, CvatImagesExporter, CocoExporter, MotsPngExporter, MotsTxtExporter, PngMasksExporter,
        LabelStudioExporter, FiftyOneExporter,
    )
}
EXPORT_FORMATS: tuple[str, ...] = (*EXPORTERS, YTVIS_FORMAT)


def create_exporter(name: str) -> Exporter:
    """The exporter for a per-video format name (see EXPORTERS); raises KeyError for an unknown one."""
    return EXPORTERS[name]()


__all__ = [
    "EXPORTERS",
    "EXPORT_FORMATS",
    "YTVIS_FORMAT",
    "ExportInputError",
    "ExportOptions",
    "ExportVideo",
    "Exporter",
    "create_exporter",
    "discover_export_inputs",
    "load_videos",
    "select_tracks",
]
