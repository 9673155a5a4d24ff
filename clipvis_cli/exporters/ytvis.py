"""YouTube-VIS results for evaluation servers: the bare results list (`results.json`), optionally zipped
(`results.zip` holding `results.json`, what the YouTube-VIS / OVIS CodaLab and LV-VIS Codabench pages take).

Unlike the per-video formats this writes ONE file for every exported video together, in input order; video ids
and category ids are those of the inputs (for a server they must be the benchmark's, as `clipvis evaluate`
writes them).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

from clipvis.cli.exporters.base import ExportOptions, staged_directory
from clipvis.cli.exporters.loading import ExportVideo
from clipvis.cli.zip_files import add_bytes


def results_list(videos: Sequence[ExportVideo]) -> list[dict]:
    return [
        {"video_id": video.info.video_id, "category_id": track.category_id, "score": track.score,
         "segmentations": list(track.segmentations)}
        for video in videos
        for track in video.tracks
    ]


# What the folder's export record (base.EXPORT_RECORD) says a results file came from: an export's results file may
# replace another's (the same inputs or not), never a file of someone's own nor one edited since it was written.
RESULTS_IDENTITY = {"results": "clipvis export --to ytvis"}


def write_results(videos: Sequence[ExportVideo], destination: Path, options: ExportOptions) -> Path:
    """Write the results of `videos` into `destination` (a folder) atomically; returns the file. An existing file of
    that name that no export wrote (or that was edited since) is not replaced: ExportConflictError."""
    ids = [video.info.video_id for video in videos]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{destination}: several inputs share video ids {sorted({i for i in ids if ids.count(i) > 1})}"
                         " (export them separately, or use the files clipvis evaluate writes)")
    tables = {tuple(video.categories) for video in videos}
    if len(tables) > 1:  # one category id would name different classes in different videos
        first, other = sorted(tables)[:2]
        pairs = enumerate(zip(first, other, strict=False), start=1)
        differ = next((f"id {i}: {a!r} / {b!r}" for i, (a, b) in pairs if a != b),
                      f"{len(first)} / {len(other)} classes")
        raise ValueError(f"{destination}: the inputs have different category lists ({differ}); one results file "
                         "needs one list: export them separately")
    text = json.dumps(results_list(videos), separators=(",", ":")) + "\n"
    name = Path(options.results_name).stem + ".zip" if options.zip_results else options.results_name
    # staged and moved into place as the per-video formats are (`-o submission/` need not exist yet)
    with staged_directory(destination, RESULTS_IDENTITY, what="a results file exported") as staging:
        if not options.zip_results:
            (staging / name).write_text(text, encoding="utf-8")
        else:
            with zipfile.ZipFile(staging / name, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                add_bytes(archive, options.results_name, text)
    return destination / name
