"""Output writers of `clipvis segment`; each writes one file atomically (temp name + rename)."""

from clipvis.cli.writers.coco import CocoWriter
from clipvis.cli.writers.layout import VideoOutputPaths
from clipvis.cli.writers.manifest import RunManifest, config_hash, source_fingerprint
from clipvis.cli.writers.overlay import OverlayRenderer, OverlayStyle, OverlayVideoWriter
from clipvis.cli.writers.ytvis import YtvisWriter

__all__ = [
    "CocoWriter",
    "OverlayRenderer",
    "OverlayStyle",
    "OverlayVideoWriter",
    "RunManifest",
    "VideoOutputPaths",
    "YtvisWriter",
    "config_hash",
    "source_fingerprint",
]
