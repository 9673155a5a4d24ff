"""Output layout of `clipvis segment`: `OUTPUT/<stem>/{overlay.mp4, ytvis.json, coco.json, run.json}`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipvis.cli.atomic import ensure_output_dir

OVERLAY_NAME = "overlay.mp4"
YTVIS_NAME = "ytvis.json"
COCO_NAME = "coco.json"
MANIFEST_NAME = "run.json"


@dataclass(frozen=True)
class VideoOutputPaths:
    """Where one input's outputs go."""

    directory: Path

    @classmethod
    def for_stem(cls, output_root: Path | str, stem: str) -> VideoOutputPaths:
        return cls(Path(output_root) / stem)

    @property
    def overlay(self) -> Path:
        return self.directory / OVERLAY_NAME

    @property
    def ytvis(self) -> Path:
        return self.directory / YTVIS_NAME

    @property
    def coco(self) -> Path:
        return self.directory / COCO_NAME

    @property
    def manifest(self) -> Path:
        return self.directory / MANIFEST_NAME

    def prepare(self) -> VideoOutputPaths:
        """Create the directory; raises OutputNotWritableError (one line) if it cannot be written."""
        ensure_output_dir(self.directory)
        return self
