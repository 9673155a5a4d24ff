"""Output writers of `clipvis segment`; each writes one file atomically (temp name + rename)."""

from clipvis_cli.writers.coco import CocoWriter
from clipvis_cli.writers.layout import VideoOutputPaths
from clipvis_cli.writers.manifest import RunManifest, config_hash, source_fingerprint
from clipvis_cli.writers.overlay import OverlayRenderer, OverlayStyle, OverlayVideoWriter
from clipvis_cli.writers.ytvis import YtvisWriter

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
