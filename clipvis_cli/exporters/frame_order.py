"""The warning for an image folder whose frames' natural order is not their order as text, for the formats that
number its frames (said by `clipvis export` and `clipvis segment` alike)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from clipvis.cli.messages import shown_path

# The formats that name an image folder's frames by their position in clipvis' natural order (frame numbers,
# NNNNNN.png), not by the images' names: a tool that orders the folder otherwise puts their masks on other images
FRAME_NUMBERED_FORMATS = ("cvat-video", "mots-png", "mots-txt", "png-masks")


def frame_order_warning(folder: Path, names: Sequence[str], formats: Iterable[str]) -> str | None:
    """A warning for an image folder whose images' natural order (``names``: 1.jpg, 2.jpg, 10.jpg, clipvis' frame
    numbers) is not their order as text (1.jpg, 10.jpg, 2.jpg: CVAT's default "Sorting method"), for those of
    ``formats`` that number its frames: a task made with the default order puts their masks on other images. None
    where no format numbers frames or the two orders agree. Said by `clipvis export` (after the video's name) and
    `clipvis segment` (after its input's) alike."""
    numbered = [name for name in formats if name in FRAME_NUMBERED_FORMATS]
    as_text = sorted(names)
    if not numbered or as_text == list(names):
        return None

    def shown(order: Sequence[str]) -> str:
        return ", ".join(order[:3]) + (", ..." if len(order) > 3 else "")

    return (f"{', '.join(numbered)} number the images of {shown_path(folder)} in natural order "
            f"({shown(names)}), which is not their order as text ({shown(as_text)}): create the CVAT task with "
            '"Sorting method: Natural" (other tools: sort the names naturally), or the masks land on other images')
