"""Base of the JSON writers: a document made of fields, streamed to disk (or indented, built in memory)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from clipvis.cli.atomic import atomic_write_json, atomic_write_json_stream
from clipvis.cli.json_io import materialised_json
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.writers.base import MaskCounter, SegmentedVideo, WriterDefaults

VideoResults = Sequence[tuple[VideoInfo, Sequence[TrackResult]]]
MASKS_COUNTED_EVERY = 512  # a writer's masks are counted (`MaskCounter`) this many at a time, and at a track's end
Mask = TypeVar("Mask")


def counted_masks(masks: Iterable[Mask], masks_written: MaskCounter | None) -> Iterator[Mask]:
    """``masks`` as they are taken (streamed into the file), told to ``masks_written`` every
    ``MASKS_COUNTED_EVERY`` and once the last is taken; the masks alone without one."""
    if masks_written is None:
        yield from masks
        return
    taken = 0
    for mask in masks:
        yield mask
        taken += 1
        if taken == MASKS_COUNTED_EVERY:
            masks_written(taken)
            taken = 0
    if taken:
        masks_written(taken)


class JsonDocumentWriter(WriterDefaults):
    """Subclasses give `fields(results, categories)`: (key, value) pairs, where an iterator value (also inside a
    dict item of one: a track's masks) is a list streamed item by item. Written compact and streamed (a few hundred
    masks in memory at a time, whatever the video's length), or indented. ``masks_written``, where given, is told the
    tracks' masks as they are written (`counted_masks`)."""

    def __init__(self, indent: int | None = None) -> None:
        self.indent = indent

    def fields(self, results: VideoResults, categories: Sequence[str],
               masks_written: MaskCounter | None = None) -> list[tuple[str, object]]:
        raise NotImplementedError

    def build(self, results: VideoResults, categories: Sequence[str], masks_written: MaskCounter | None = None) -> dict:
        """The JSON document as a dict (validates track lengths, mask sizes and category ids)."""
        return {key: materialised_json(value) for key, value in self.fields(results, categories, masks_written)}

    def write(
        self, path: Path | str, video: VideoInfo, tracks: Sequence[TrackResult], categories: Sequence[str]
    ) -> Path:
        """Write one video's results."""
        return self.write_many(path, [(video, tracks)], categories)

    def write_video(self, path: Path, video: SegmentedVideo) -> Path:
        """The `OutputWriter` interface: write one segmented video's document (its masks counted to
        ``video.masks_written`` as they are written)."""
        return self.write_many(path, [(video.info, video.tracks)], video.categories, video.masks_written)

    def write_many(self, path: Path | str, results: VideoResults, categories: Sequence[str],
                   masks_written: MaskCounter | None = None) -> Path:
        """Write several videos' results into one file, atomically (the masks told to ``masks_written`` as they are
        written)."""
        if self.indent is not None:
            return atomic_write_json(path, self.build(results, categories, masks_written), indent=self.indent)
        return atomic_write_json_stream(path, self.fields(results, categories, masks_written))
