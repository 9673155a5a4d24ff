"""FiftyOne's own `FiftyOneVideoLabelsDatasetImporter` reads the `fiftyone` export: per-frame `Detections` with the
exact masks (cropped to their boxes), the track id as `index` and the score as `confidence`, on 1-based frames.

FiftyOne is not a test dependency (it is large, and making a `fo.Dataset` needs its MongoDB service): this runs where
it is installed and skips elsewhere; the importer itself needs no database.
"""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from clipvis.cli.app import app

from .conftest import CATEGORIES, HEIGHT, WIDTH, make_segment_output

fiftyone_data = pytest.importorskip("fiftyone.utils.data")


def test_fiftyone_importer_reads_the_export(tmp_path) -> None:
    output = make_segment_output(tmp_path / "out")
    result = CliRunner().invoke(app, ["export", str(output.folder), "--to", "fiftyone", "-o", str(tmp_path / "exp")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    importer = fiftyone_data.FiftyOneVideoLabelsDatasetImporter(str(tmp_path / "exp" / "clip" / "fiftyone"))
    with importer:
        (video_path, _, _, frames), = list(importer)
    assert video_path.endswith("clip.mp4")
    assert sorted(frames) == [index + 1 for index in output.info.frame_indices]
    seen = 0
    for number, fields in frames.items():
        position = output.info.frame_indices.index(number - 1)
        for detection in fields["detections"].detections:
            track = next(t for t in output.tracks if t.track_id == detection.index)
            assert detection.label == CATEGORIES[track.category_id - 1]
            assert detection.confidence == pytest.approx(track.score)
            x, y, w, h = detection.bounding_box
            left, top = round(x * WIDTH), round(y * HEIGHT)
            full = np.zeros((HEIGHT, WIDTH), bool)
            full[top : top + round(h * HEIGHT), left : left + round(w * WIDTH)] = detection.mask
            assert np.array_equal(full, output.masks[track.track_id][position])
            seen += 1
    assert seen == sum(m is not None for masks in output.masks.values() for m in masks)
