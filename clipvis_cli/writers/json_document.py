"""Base of the JSON writers: a document made of fields, streamed to disk (or indented, built in memory)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from clipvis.cli.atomic import atomic_write_json, atomic_write_json_stream
from clipvis.cli.json_io import materialised_json
from clipvis.cli.results import TrackResult, VideoInfo
from clipvis.cli.writers.base import SegmentedVideo, WriterDefaults

VideoResults = Sequence[tuple[VideoInfo, Sequence[TrackResult]]]


class JsonDocumentWriter(WriterDefaults):
    """Subclasses give `fields(results, categories)`: (key, value) pairs, where an iterator value (also inside a
    dict item of one: a track's masks) is a list streamed item by item. Written compact and streamed (a few hundred
    masks in memory at a time, whatever the video's length), or indented."""

    def __init__(self, indent: int | None = None) -> None:
        self.indent = indent

    def fields(self, results: VideoResults, categories: Sequence[str]) -> list[tuple[str, object]]:
        raise NotImplementedError

    def build(self, results: VideoResults, categories: Sequence[str]) -> dict:
        """The JSON document as a dict (validates track lengths, mask sizes and category ids)."""
        return {key: materialised_json(value) for key, value in self.fields(results, categories)}

    def write(
        self, path: Path | str, video: VideoInfo, tracks: Sequence[TrackResult], categories: Sequence[str]
    ) -> Path:
        """Write one video's results."""
        return self.write_many(path, [(video, tracks)], categories)

    def write_video(self, path: Path, video: SegmentedVideo) -> Path:
        """The `OutputWriter` interface: write one segmented video's document."""
        return self.write(path, video.info, video.tracks, video.categories)

    def write_many(self, path: Path | str, results: VideoResults, categories: Sequence[str]) -> Path:
        """Write several videos' results into one file, atomically."""
        if self.indent is not None:
            return atomic_write_json(path, self.build(results, categories), indent=self.indent)
        return atomic_write_json_stream(path, self.fields(results, categories))
