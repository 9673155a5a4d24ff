"""Output writers of `clipvis segment`; each writes one file atomically (temp name + rename).

`clipvis.cli.output_formats.create_writers(formats)` assembles the list `SegmentRunner` uses (with `clipvis
export`'s formats); every writer has the `OutputWriter` interface
(`format`, `file_name`, `write_video(path, SegmentedVideo)`).
"""

from clipvis.cli.writers.base import (
    DEFAULT_FORMATS,
    MaskCounter,
    OutputWriter,
    SegmentedVideo,
)
from clipvis.cli.writers.coco import CocoWriter
from clipvis.cli.writers.layout import VideoOutputPaths
from clipvis.cli.writers.manifest import RunManifest, config_hash, source_fingerprint
from clipvis.cli.writers.overlay import OverlayRenderer, OverlayStyle, OverlayVideoWriter
from clipvis.cli.writers.ytvis import YtvisWriter

__all__ = [
    "DEFAULT_FORMATS",
    "CocoWriter",
    "MaskCounter",
    "OverlayRenderer",
    "OverlayStyle",
    "OverlayVideoWriter",
    "OutputWriter",
    "RunManifest",
    "SegmentedVideo",
    "VideoOutputPaths",
    "YtvisWriter",
    "config_hash",
    "source_fingerprint",
]
