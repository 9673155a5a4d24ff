"""The registry of released CLIP-VIS checkpoints matches the official table."""

from __future__ import annotations

import dataclasses

import pytest

from clipvis.weights import (
    DEFAULT_PRETRAINED,
    PUBLISHED_AP_DATASETS,
    PretrainedCheckpoint,
    UnknownCheckpointError,
    WeightsError,
    get_pretrained,
    list_pretrained,
    pretrained_names,
    published_ap,
)

EXPECTED_NAMES = [
    "clipvis-lvis-r50",
    "clipvis-lvis-convnext-b",
    "clipvis-coco-ytvis19-r50",
    "clipvis-coco-ytvis19-convnext-b",
]

# Mask AP (%) from the official README table: LV-VIS val, LV-VIS test, OVIS, YTVIS19, YTVIS21, BURST.
OFFICIAL_TABLE = {
    "clipvis-lvis-r50": (19.5, 14.6, 14.1, 32.2, 30.1, 5.2),
    "clipvis-lvis-convnext-b": (32.2, 25.3, 18.5, 42.1, 37.9, 8.3),
    "clipvis-coco-ytvis19-r50": (9.4, 6.7, 15.8, 39.7, 35.7, 4.2),
    "clipvis-coco-ytvis19-convnext-b": (15.9, 12.0, 18.6, 50.0, 44.2, 5.0),
}
TABLE_COLUMNS = ("lvvis_val", "lvvis_test", "ovis_val", "ytvis_2019_val", "ytvis_2021_val", "burst_val")

GDRIVE_IDS = {
    "clipvis-lvis-r50": "1taVBPVTX-MVQkp5nc0QgreiaJqFhYgtJ",
    "clipvis-lvis-convnext-b": "1R7qGowGbY9Al7ygU2fZ-Y5uG5xfgmDyT",
    "clipvis-coco-ytvis19-r50": "14Oed2SbCVZcAtV1yaZIzuc7adGXuHiyZ",
    "clipvis-coco-ytvis19-convnext-b": "1fxujJmjMLAkXubzYSqiv2cVgDYIIp64f",
}


def test_four_checkpoints_default_first() -> None:
    checkpoints = list_pretrained()
    assert [c.name for c in checkpoints] == EXPECTED_NAMES
    assert pretrained_names() == EXPECTED_NAMES
    assert DEFAULT_PRETRAINED == "clipvis-lvis-r50"
    assert get_pretrained().name == DEFAULT_PRETRAINED
    assert all(isinstance(c, PretrainedCheckpoint) for c in checkpoints)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_published_ap_matches_official_table(name: str) -> None:
    checkpoint = get_pretrained(name)
    assert set(checkpoint.published_ap) == set(TABLE_COLUMNS) == set(PUBLISHED_AP_DATASETS)
    for dataset, value in zip(TABLE_COLUMNS, OFFICIAL_TABLE[name], strict=True):
        assert checkpoint.published_ap[dataset] == pytest.approx(value)
        assert published_ap(name, dataset) == pytest.approx(value)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_download_link_and_file_name(name: str) -> None:
    checkpoint = get_pretrained(name)
    assert checkpoint.gdrive_id == GDRIVE_IDS[name]
    assert checkpoint.url.startswith(f"https://drive.google.com/file/d/{checkpoint.gdrive_id}/")
    assert checkpoint.file_name.endswith(f"_{checkpoint.dec_layers}.pth")


def test_file_names_are_distinct_and_first_matches_official_readme() -> None:
    names = [c.file_name for c in list_pretrained()]
    assert len(set(names)) == 4
    assert get_pretrained("clipvis-lvis-r50").file_name == "clipvis_lvis_r50_7.pth"


@pytest.mark.parametrize(
    ("name", "clip_model", "clip_pretrained", "dec_layers", "training_data"),
    [
        ("clipvis-lvis-r50", "RN50", "openai", 7, "LVIS"),
        ("clipvis-lvis-convnext-b", "convnext_base_w_320", "laion_aesthetic_s13b_b82k", 7, "LVIS"),
        ("clipvis-coco-ytvis19-r50", "RN50", "openai", 10, "COCO, YTVIS19"),
        (
            "clipvis-coco-ytvis19-convnext-b",
            "convnext_base_w_320",
            "laion_aesthetic_s13b_b82k",
            10,
            "COCO, YTVIS19",
        ),  # noqa: E501
    ],
)
def test_backbone_and_decoder_depth(
    name: str, clip_model: str, clip_pretrained: str, dec_layers: int, training_data: str
) -> None:
    checkpoint = get_pretrained(name)
    assert (checkpoint.clip_model, checkpoint.clip_pretrained) == (clip_model, clip_pretrained)
    assert checkpoint.dec_layers == dec_layers
    assert checkpoint.num_decoder_layers == dec_layers - 1  # 6 for LVIS models, 9 for COCO,YTVIS19
    assert checkpoint.training_data == training_data
    assert checkpoint.backbone == ("ResNet-50" if clip_model == "RN50" else "ConvNeXt-B")


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownCheckpointError) as excinfo:
        get_pretrained("clipvis-lvis-r101")
    message = str(excinfo.value)
    assert "clipvis-lvis-r101" in message
    for name in EXPECTED_NAMES:
        assert name in message
    assert "\n" not in message
    assert isinstance(excinfo.value, ValueError) and isinstance(excinfo.value, WeightsError)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [
        ("CLIPVIS-LVIS-R50", "clipvis-lvis-r50"),
        ("clipvis_coco_ytvis19_r50", "clipvis-coco-ytvis19-r50"),
        (" clipvis-lvis-convnext-b ", "clipvis-lvis-convnext-b"),
        ("clipvis_lvis_r50_7.pth", "clipvis-lvis-r50"),
        ("clipvis_coco_ytvis19_convnext_b_10", "clipvis-coco-ytvis19-convnext-b"),
    ],
)
def test_name_aliases(alias: str, expected: str) -> None:
    assert get_pretrained(alias).name == expected


@pytest.mark.parametrize("dataset", ["coco_val", "ovis", "ytvis19", "lvvis"])
def test_published_ap_of_an_unknown_dataset_key_lists_the_keys(dataset) -> None:
    """A misspelt key ('ovis' for 'ovis_val') returned None, read as "not published"."""
    with pytest.raises(ValueError, match=rf"^unknown dataset '{dataset}': published APs are keyed by lvvis_val, "
                                         r"lvvis_test, ovis_val, ytvis_2019_val, ytvis_2021_val, burst_val$"):
        published_ap("clipvis-lvis-r50", dataset)


def test_published_ap_dataset_spellings_and_unknown_name() -> None:
    assert published_ap("clipvis-lvis-convnext-b", "LVVIS-VAL") == pytest.approx(32.2)
    assert published_ap("clipvis-lvis-r50", " ytvis-2019-val ") == pytest.approx(32.2)
    with pytest.raises(UnknownCheckpointError):
        published_ap("no-such-model", "lvvis_val")


def test_registry_entries_cannot_be_altered() -> None:
    checkpoint = get_pretrained("clipvis-lvis-r50")
    with pytest.raises(TypeError):
        checkpoint.published_ap["lvvis_val"] = 99.0  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        checkpoint.dec_layers = 10  # type: ignore[misc]
    assert get_pretrained("clipvis-lvis-r50").published_ap["lvvis_val"] == pytest.approx(19.5)


def test_checkpoint_rejects_unknown_dataset_key() -> None:
    base = get_pretrained("clipvis-lvis-r50")
    with pytest.raises(ValueError, match="lvvis_vall"):
        dataclasses.replace(base, published_ap={"lvvis_vall": 1.0})
