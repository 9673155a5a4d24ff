"""Datumaro (the library CVAT's importers are built on) imports what `clipvis export` writes: the same masks
(IoU 1.0), track ids, labels and frame numbers for cvat-images, coco and mots-png; the same track ids, labels and
frames for cvat-video (polygons, IoU reported).

Datumaro pins older opencv / pillow than this project, so it is not a test dependency: these tests run where it
is installed (e.g. a separate environment: `pip install datumaro` plus this package) and skip elsewhere.
"""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from clipvis.cli.app import app

from .conftest import CATEGORIES, make_segment_output, mask_iou, polygon_mask

datumaro = pytest.importorskip("datumaro")
from datumaro.components.annotation import AnnotationType  # noqa: E402
from datumaro.components.dataset import Dataset  # noqa: E402


@pytest.fixture
def exported(tmp_path):
    output = make_segment_output(tmp_path / "out")
    dest = tmp_path / "exp"
    result = CliRunner().invoke(app, ["export", str(output.folder), "--to",
                                      "cvat-video,cvat-images,coco,mots-png", "-o", str(dest)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for name in ("cvat-video", "cvat-images"):
        with zipfile.ZipFile(dest / "clip" / f"{name}.zip") as archive:
            archive.extractall(tmp_path / name)
    return output, dest / "clip", tmp_path


def _label_names(dataset) -> list[str]:
    return [label.name for label in dataset.categories()[AnnotationType.label]]


def _masks_by_frame(dataset, frame_of) -> dict[int, dict[int, tuple[str, np.ndarray]]]:
    names = _label_names(dataset)
    frames: dict[int, dict[int, tuple[str, np.ndarray]]] = {}
    for item in dataset:
        for annotation in item.annotations:
            if annotation.type != AnnotationType.mask:
                continue
            track_id = int(annotation.attributes["track_id"])
            frames.setdefault(frame_of(item), {})[track_id] = (names[annotation.label],
                                                               annotation.image.astype(bool))
    return frames


def _check_exact(output, frames) -> None:
    indices = output.info.frame_indices
    for track in output.tracks:
        for position, mask in enumerate(output.masks[track.track_id]):
            if mask is None:
                assert track.track_id not in frames.get(indices[position], {})
                continue
            label, read = frames[indices[position]][track.track_id]
            assert label == CATEGORIES[track.category_id - 1]
            assert mask_iou(read, mask) == 1.0


def test_cvat_images(exported) -> None:
    output, _, root = exported
    dataset = Dataset.import_from(str(root / "cvat-images"), "cvat")
    assert _label_names(dataset) == CATEGORIES
    frames = _masks_by_frame(dataset, lambda item: int(item.attributes["frame"]))
    assert sorted(int(item.attributes["frame"]) for item in dataset) == output.info.frame_indices
    assert all(item.id == f"frame_{int(item.attributes['frame']):06d}" for item in dataset)
    _check_exact(output, frames)


def test_coco(exported) -> None:
    output, folder, _ = exported
    dataset = Dataset.import_from(str(folder / "coco"), "coco_instances")
    assert _label_names(dataset) == CATEGORIES
    frames = _masks_by_frame(dataset, lambda item: int(item.id.split("_")[-1]))
    _check_exact(output, frames)


def test_mots_png(exported) -> None:
    output, folder, _ = exported
    dataset = Dataset.import_from(str(folder / "mots-png"), "mots")
    assert _label_names(dataset)[:3] == CATEGORIES
    # CVAT's importer takes an item id that is a number as the frame of a video task ("<video>/000000" matched none),
    # from the folder and from a zip of it (the folder one level down: a subset)
    assert all(item.id == f"{int(item.id):06d}" and item.media is not None for item in dataset)
    zipped = folder.parent / "unzipped"
    shutil.copytree(folder / "mots-png", zipped / "mots-png")
    assert sorted(item.id for item in Dataset.import_from(str(zipped), "mots")) == sorted(item.id for item in dataset)
    frames = _masks_by_frame(dataset, lambda item: int(item.id))
    # MOTS forbids overlap: each mask is the object's mask minus what higher-scoring objects cover.
    indices = output.info.frame_indices
    for position, index in enumerate(indices):
        covered = np.zeros_like(output.masks[1][0])
        for track in sorted(output.tracks, key=lambda t: -t.score):
            mask = output.masks[track.track_id][position]
            if mask is None:
                continue
            label, read = frames[index][track.track_id]
            assert label == CATEGORIES[track.category_id - 1]
            assert mask_iou(read, mask & ~covered) == 1.0
            covered |= mask


def test_cvat_video(exported) -> None:
    output, _, root = exported
    dataset = Dataset.import_from(str(root / "cvat-video"), "cvat")
    names = _label_names(dataset)
    assert names == CATEGORIES
    seen: dict[int, dict[int, tuple[str, list]]] = {}
    for item in dataset:
        frame = int(item.attributes["frame"])
        assert item.id == f"frame_{frame:06d}"
        for annotation in item.annotations:
            assert annotation.type == AnnotationType.polygon
            if annotation.attributes.get("outside"):
                continue
            seen.setdefault(frame, {})[int(annotation.attributes["track_id"])] = (
                names[annotation.label], annotation)
    ious = []
    indices = output.info.frame_indices
    for track in output.tracks:
        for position, mask in enumerate(output.masks[track.track_id]):
            if mask is None:
                assert track.track_id not in seen.get(indices[position], {})
                continue
            label, polygon = seen[indices[position]][track.track_id]
            assert label == CATEGORIES[track.category_id - 1]
            # Datumaro turns polygons into masks with pycocotools (its polygons_to_masks transform), as here.
            points = np.asarray(polygon.points).reshape(-1, 2)
            ious.append(mask_iou(polygon_mask(points, *mask.shape), mask))
    print(f"cvat-video polygons through Datumaro: mean mask IoU {np.mean(ious):.4f} over {len(ious)} masks")
    assert np.mean(ious) > 0.97

