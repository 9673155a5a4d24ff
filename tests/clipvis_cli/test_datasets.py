"""Dataset registry: names and facts, path variants, data-root precedence, vocabulary, frame paths, server zip."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from clipvis.cli.datasets import (
    DATA_ROOT_ENV,
    DATASETS,
    LEGACY_DATA_ROOT_ENV,
    DatasetNotFoundError,
    UnknownDatasetError,
    dataset_inputs,
    dataset_names,
    get_dataset,
    locate_dataset,
    lvvis_frame_path,
    read_dataset_index,
    resolve_data_root,
    write_server_zip,
)

GT = {
    "videos": [
        {"id": 2, "height": 4, "width": 6, "length": 2, "file_names": ["vid_b/00000.jpg", "vid_b/00005.jpg"]},
        {"id": 1, "height": 4, "width": 6, "length": 1, "file_names": ["JPEGImages\\vid_a\\00000.jpg"]},
    ],
    # Listed out of id order; names verbatim, underscores kept.
    "categories": [
        {"id": 2, "name": "traffic_light", "partition": 2},
        {"id": 1, "name": "Person", "partition": 0},
        {"id": 3, "name": "red car", "partition": 1},
    ],
    # a public split's file has annotations (one without any cannot be scored)
    "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "iscrowd": 0, "segmentations": [None]}],
}


def install(root: Path, annotation: str, frames: str | None) -> Path:
    path = root / annotation
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(GT))
    if frames is not None:
        (root / frames).mkdir(parents=True, exist_ok=True)
    return path


def test_registry_names_and_facts() -> None:
    assert dataset_names() == [
        "lvvis_train",
        "lvvis_val",
        "lvvis_test",
        "ytvis_2019_train",
        "ytvis_2019_val",
        "ytvis_2021_train",
        "ytvis_2021_val",
        "ovis_val",
        "burst_val",
    ]
    lvvis_val, lvvis_test = get_dataset("lvvis_val"), get_dataset("LVVIS-test")
    assert (lvvis_val.num_classes, lvvis_val.protocol, lvvis_val.has_public_gt) == (1196, "lvvis", True)
    assert lvvis_val.server is None
    assert lvvis_test.has_public_gt is False and "codabench.org/competitions/1748" in lvvis_test.server.url
    assert "6064" in get_dataset("ytvis_2019_val").server.url
    assert "7680" in get_dataset("ytvis_2021_val").server.url
    assert "4763" in get_dataset("ovis_val").server.url
    assert get_dataset("ytvis_2019_train").has_public_gt and get_dataset("ytvis_2019_train").num_classes == 40
    assert get_dataset("ovis_val").num_classes == 25
    burst = get_dataset("burst_val")
    assert (burst.num_classes, burst.protocol, burst.has_public_gt) == (482, "burst", True)


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'lvis_val'; known datasets: lvvis_train"):
        get_dataset("lvis_val")


@pytest.mark.parametrize(
    ("name", "annotation", "frames"),
    [
        ("lvvis_val", "lvvis/val/val_instances_.json", "lvvis/val/JPEGImages"),
        ("lvvis_val", "lvvis/val/val_instances.json", "lvvis/val/JPEGImages"),
        ("lvvis_train", "lvvis/train/train_instances_.json", "lvvis/train/JPEGImages"),
        ("lvvis_test", "lvvis/test/test_instances.json", "lvvis/test/JPEGImages"),
        ("ytvis_2019_val", "ytvis2019/valid.json", "ytvis2019/valid/JPEGImages"),
        ("ytvis_2019_val", "ytvis19/valid.json", "ytvis19/valid/JPEGImages"),
        ("ytvis_2019_train", "ytvis_2019/train.json", "ytvis_2019/train/JPEGImages"),
        ("ytvis_2021_val", "ytvis2021/valid/instances.json", "ytvis2021/valid/JPEGImages"),
        ("ovis_val", "ovis/annotations_valid.json", "ovis/valid"),
        ("ovis_val", "ovis/annotations/annotations_valid.json", "ovis/valid"),
        ("burst_val", "burst/val/b2y_val.json", "burst/val"),
        ("burst_val", "burst/b2y_val.json", "burst/val"),
    ],
)
def test_locates_every_documented_layout(tmp_path: Path, name: str, annotation: str, frames: str) -> None:
    expected = install(tmp_path, annotation, frames)
    located = locate_dataset(name, tmp_path)
    assert located.annotation_file == expected
    assert located.frames_root == tmp_path / frames


def test_canonical_path_wins_over_a_variant(tmp_path: Path) -> None:
    install(tmp_path, "lvvis/val/val_instances.json", "lvvis/val/JPEGImages")
    canonical = install(tmp_path, "lvvis/val/val_instances_.json", None)
    assert locate_dataset("lvvis_val", tmp_path).annotation_file == canonical


def test_missing_dataset_says_what_was_tried_and_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as error:
        locate_dataset("lvvis_val", tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "lvvis/val/val_instances_.json") in message
    assert str(tmp_path / "lvvis/val/val_instances.json") in message
    assert "haochenheheda/LVVIS" in message
    assert f"{tmp_path / 'lvvis/val/JPEGImages'}/<video>/<frame>.jpg" in message


def test_missing_frames_is_an_error_only_when_frames_are_required(tmp_path: Path) -> None:
    install(tmp_path, "ytvis19/valid.json", None)
    with pytest.raises(DatasetNotFoundError, match="frames folder not found; tried .*ytvis2019/valid/JPEGImages"):
        locate_dataset("ytvis_2019_val", tmp_path)
    assert locate_dataset("ytvis_2019_val", tmp_path, require_frames=False).frames_root is None


def test_data_root_precedence(tmp_path: Path) -> None:
    environ = {DATA_ROOT_ENV: str(tmp_path / "a"), LEGACY_DATA_ROOT_ENV: str(tmp_path / "b")}
    assert resolve_data_root(tmp_path / "x", environ) == tmp_path / "x"
    assert resolve_data_root(None, environ) == tmp_path / "a"
    assert resolve_data_root(None, {LEGACY_DATA_ROOT_ENV: str(tmp_path / "b")}) == tmp_path / "b"
    assert resolve_data_root(None, {}) == Path("datasets")
    (tmp_path / "b").mkdir()  # the first existing folder, or what holds what the caller looks for
    assert resolve_data_root(None, environ) == tmp_path / "b"
    assert resolve_data_root(None, environ, holds=lambda root: root.name == "a") == tmp_path / "a"
    assert resolve_data_root(None, {DATA_ROOT_ENV: "", LEGACY_DATA_ROOT_ENV: ""}) == Path("datasets")


def test_a_missing_dataset_says_what_chose_its_data_root(tmp_path: Path) -> None:
    """$DETECTRON2_DATASETS, set for detectron2 in many shells, took precedence over ./datasets without a word."""
    environ = {LEGACY_DATA_ROOT_ENV: str(tmp_path / "d2")}
    with pytest.raises(DatasetNotFoundError, match=r"looked in, in order: .*d2 \(\$DETECTRON2_DATASETS\), datasets "
                       r"\(the default ./datasets\): set --data-root"):
        locate_dataset("ovis_val", environ=environ)
    with pytest.raises(DatasetNotFoundError, match=r"data root datasets, from the default ./datasets"):
        locate_dataset("ovis_val", environ={})
    with pytest.raises(DatasetNotFoundError, match=r"data root .*given, from --data-root: set --data-root"):
        locate_dataset("ovis_val", tmp_path / "given", environ=environ)


def test_the_first_data_root_that_holds_the_dataset_is_used(tmp_path: Path) -> None:
    """README: --data-root, $CLIPVIS_DATASETS, $DETECTRON2_DATASETS or ./datasets, "first found": a set but empty
    $CLIPVIS_DATASETS (or one holding other datasets) no longer hides the dataset under $DETECTRON2_DATASETS."""
    install(tmp_path / "d2", "ovis/annotations_valid.json", "ovis/valid")
    install(tmp_path / "mine", "ovis/annotations_valid.json", None)  # frames elsewhere: not this root
    environ = {DATA_ROOT_ENV: str(tmp_path / "mine"), LEGACY_DATA_ROOT_ENV: str(tmp_path / "d2")}
    assert locate_dataset("ovis_val", environ=environ).data_root == tmp_path / "d2"
    assert locate_dataset("ovis_val", environ={DATA_ROOT_ENV: "/nonexistent", **environ}).data_root == tmp_path / "d2"
    # without frames required, the first root holding the annotation file
    assert locate_dataset("ovis_val", require_frames=False, environ=environ).data_root == tmp_path / "mine"
    with pytest.raises(DatasetNotFoundError, match=r"data root .*given, from --data-root"):  # given: looked in alone
        locate_dataset("ovis_val", tmp_path / "given", environ=environ)


def test_a_dataset_in_no_data_root_names_every_place_looked(tmp_path: Path) -> None:
    install(tmp_path / "a", "ovis/annotations_valid.json", None)
    environ = {DATA_ROOT_ENV: str(tmp_path / "a"), LEGACY_DATA_ROOT_ENV: str(tmp_path / "b")}
    with pytest.raises(DatasetNotFoundError) as error:
        locate_dataset("ovis_val", environ={**environ, DATA_ROOT_ENV: str(tmp_path / "none")})
    message = str(error.value)
    assert "annotation file not found" in message and "\n" not in message
    for path in (tmp_path / "none/ovis/annotations_valid.json", tmp_path / "b/ovis/annotations_valid.json",
                 Path("datasets/ovis/annotations_valid.json")):
        assert str(path) in message
    places = f"{tmp_path / 'none'} ($CLIPVIS_DATASETS), {tmp_path / 'b'} ($DETECTRON2_DATASETS), datasets (the "
    assert places in message
    with pytest.raises(DatasetNotFoundError) as error:  # only a holds the annotation file
        locate_dataset("ovis_val", environ=environ)
    message = str(error.value)
    assert f"frames folder not found; tried {tmp_path / 'a/ovis/valid'}. " in message
    # every data root looked in (it named a alone: $DETECTRON2_DATASETS and ./datasets were looked in too)
    assert (f"data roots looked in, in order: {tmp_path / 'a'} ($CLIPVIS_DATASETS), {tmp_path / 'b'} "
            "($DETECTRON2_DATASETS), datasets (the ") in message
    assert f"beside the annotation file {tmp_path / 'a/ovis/annotations_valid.json'}" in message
    # in search order, the root holding the annotation file (b) where it is looked in, not first
    with pytest.raises(DatasetNotFoundError) as error:
        locate_dataset("ovis_val", environ={**environ, DATA_ROOT_ENV: str(tmp_path / "b"),
                                            LEGACY_DATA_ROOT_ENV: str(tmp_path / "a")})
    assert (f"in order: {tmp_path / 'b'} ($CLIPVIS_DATASETS), {tmp_path / 'a'} ($DETECTRON2_DATASETS)"
            in str(error.value))


def test_env_variable_is_used_to_locate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(tmp_path, "ovis/annotations_valid.json", "ovis/valid")
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert locate_dataset("ovis_val").data_root == tmp_path


def test_dataset_inputs_vocabulary_and_frame_paths(tmp_path: Path) -> None:
    install(tmp_path, "lvvis/val/val_instances_.json", "lvvis/val/JPEGImages")
    inputs = dataset_inputs("lvvis_val", tmp_path)
    assert inputs.gt_path == tmp_path / "lvvis/val/val_instances_.json"
    assert inputs.vocabulary == ["Person", "traffic_light", "red car"]
    video = next(v for v in inputs.videos if v.id == 1)
    # LV-VIS rule: last two components, backslashes too.
    assert inputs.frame_paths(video) == [tmp_path / "lvvis/val/JPEGImages/vid_a/00000.jpg"]
    assert [v.num_frames for v in read_dataset_index(inputs.gt_path).videos] == [2, 1]


def test_frame_path_rules() -> None:
    root = Path("/data/frames")
    assert lvvis_frame_path(root, "a/b/c/vid/001.jpg") == root / "vid/001.jpg"
    assert lvvis_frame_path(root, "C:\\x\\vid\\001.jpg") == root / "vid/001.jpg"
    with pytest.raises(ValueError, match="no '<video>/<frame>'"):
        lvvis_frame_path(root, "001.jpg")
    # Other datasets join the listed name to the frames root as is.
    assert get_dataset("burst_val").frame_path(root, "YFCC100M/v_1/f.jpg") == root / "YFCC100M/v_1/f.jpg"


def test_server_zip_holds_results_json(tmp_path: Path) -> None:
    results = [{"video_id": 1, "category_id": 2, "score": 0.5, "segmentations": [None]}]
    zip_path = write_server_zip(results, tmp_path / "sub" / "results.zip")
    with zipfile.ZipFile(zip_path) as archive:
        assert archive.namelist() == ["results.json"]
        assert json.loads(archive.read("results.json")) == results
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results))
    again = write_server_zip(source, tmp_path / "from_file.zip")
    with zipfile.ZipFile(again) as archive:
        assert archive.read("results.json") == source.read_bytes()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["results.zip"]  # nothing half-written left


@pytest.mark.parametrize(("name", "said"), [(None, "has no name"), (7, "has the name 7"),
                                           ("   ", "has the name '   '")])
def test_a_category_without_a_name_is_refused_before_the_model_runs(tmp_path: Path, name: object, said: str) -> None:
    """A null name became the class "None" (a missing one "6", a number "7"): the text encoder was fed a name nobody
    wrote, and the run scored as usual."""
    from clipvis.cli.evaluation import EvaluationInputError

    path = install(tmp_path, "lvvis/val/val_instances_.json", "lvvis/val/JPEGImages")
    document = json.loads(path.read_text())
    document["categories"][2]["name"] = name
    path.write_text(json.dumps(document))
    with pytest.raises(EvaluationInputError, match=rf"categories\[2\] \(id 3\) {said}: the model's classes are"):
        dataset_inputs("lvvis_val", tmp_path)


def test_a_malformed_annotation_stops_a_dataset_run_before_any_video_runs(tmp_path: Path) -> None:
    """--dataset read only videos and categories before inference: a malformed annotation was found after every
    video ran (hours on LV-VIS val); --gt/--frames already read the whole file first."""
    from clipvis.cli.evaluation import EvaluationInputError

    path = install(tmp_path, "lvvis/val/val_instances_.json", "lvvis/val/JPEGImages")
    document = json.loads(path.read_text())
    del document["annotations"][0]["category_id"]
    path.write_text(json.dumps(document))
    with pytest.raises(EvaluationInputError, match=r"annotations\[0\] needs integer 'id', 'video_id' and 'categ"):
        dataset_inputs("lvvis_val", tmp_path)


def test_the_category_count_warning_of_a_split_the_server_scores_scores_nothing_here() -> None:
    """For ovis_val and the other splits without public GT it said "scored with this file's 6 as the vocabulary":
    nothing is scored there; the server scores the zip."""
    server = get_dataset("ovis_val").category_count_warning(Path("a.json"), 6)
    assert server is not None and "scored with" not in server and "the server zip's results use this file's 6" in server
    public = get_dataset("lvvis_val").category_count_warning(Path("a.json"), 6)
    assert public is not None and "scored with this file's 6 as the vocabulary" in public


def test_the_dataset_registry_cannot_be_changed_by_a_caller() -> None:
    """docs/architecture.md's "State": `DATASETS` is built at import and never changed; a caller's assignment would
    have changed every later lookup in the process."""
    with pytest.raises(TypeError):
        DATASETS["mine"] = DATASETS["lvvis_val"]  # type: ignore[index]
    assert "mine" not in DATASETS
