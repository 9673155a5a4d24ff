"""Every output format `segment` can write (`--formats`), in the order it writes them, and the writers for a
selection: the JSON files first (ytvis, coco), the overlay, then `clipvis export`'s formats, each as a zip beside
them. The registry that builds writers from both clipvis.cli.writers and clipvis.cli.exporters (docs/outputs.md);
clipvis.cli.writers imports nothing from clipvis.cli.exporters."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from clipvis.cli.exporters import EXPORTERS
from clipvis.cli.exporters.adapter import ExportFormatWriter
from clipvis.cli.exporters.base import ExportOptions
from clipvis.cli.writers.base import OutputWriter
from clipvis.cli.writers.coco import CocoWriter
from clipvis.cli.writers.overlay import OverlayVideoWriter
from clipvis.cli.writers.ytvis import YtvisWriter


def writer_formats() -> tuple[str, ...]:
    """The `--formats` names, in the order `segment` writes them (the JSON files first, the overlay, then the
    `clipvis export` formats)."""
    return tuple(_factories())


def create_writers(formats: Iterable[str], overlay_min_score: float = 0.2, media_url: str = "") -> list[OutputWriter]:
    """The writers for `formats` (any order, duplicates ignored), in `writer_formats()` order; ``media_url``: the
    labelstudio writer's URL prefix (`clipvis export --media-url`).

    Raises ValueError naming an unknown format.
    """
    wanted = set(formats)
    factories = _factories(overlay_min_score, tuple(name for name in writer_formats() if name in wanted), media_url)
    unknown = sorted(wanted - set(factories))
    if unknown:
        raise ValueError(f"unknown output format(s) {', '.join(unknown)} (known: {', '.join(factories)})")
    return [factory() for name, factory in factories.items() if name in wanted]


def _factories(overlay_min_score: float = 0.2, run_formats: tuple[str, ...] = (),
               media_url: str = "") -> dict[str, Callable[[], OutputWriter]]:
    """Each format's writer factory, in `writer_formats()` order: segment's own writers (clipvis.cli.writers), then
    clipvis export's formats (clipvis.cli.exporters) through `ExportFormatWriter` (told the run's ``run_formats``).
    Assembled here, so that clipvis.cli.writers need not import clipvis.cli.exporters for it."""
    factories: dict[str, Callable[[], OutputWriter]] = {
        "ytvis": YtvisWriter,
        "coco": CocoWriter,
        "overlay": lambda: OverlayVideoWriter(min_score=overlay_min_score),
    }
    for name in EXPORTERS:  # clipvis export's per-video formats, one zip each (its "coco" folder is export-only)
        factories.setdefault(name, lambda name=name: ExportFormatWriter(name, ExportOptions(media_url=media_url),
                                                                        run_formats=run_formats))
    return factories
