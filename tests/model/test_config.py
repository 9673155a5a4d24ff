"""clipvis.model.config: reading official config files."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipvis.model.config import ClipVisConfig, deep_merge, read_official_yaml


def test_deep_merge_overrides_nested_keys_and_shares_nothing_with_its_inputs() -> None:
    base = {"SOLVER": {"BASE_LR": 1e-4, "STEPS": [10, 20]}, "SEED": 0}
    override = {"SOLVER": {"BASE_LR": 5e-5}, "INPUT": {"MIN_SIZE_TRAIN": [480]}}
    merged = deep_merge(base, override)
    assert merged == {"SOLVER": {"BASE_LR": 5e-5, "STEPS": [10, 20]}, "SEED": 0, "INPUT": {"MIN_SIZE_TRAIN": [480]}}
    merged["SOLVER"]["STEPS"].append(30)  # a run changing its config changes no defaults, nor the file's tree
    merged["INPUT"]["MIN_SIZE_TRAIN"].append(512)
    assert base["SOLVER"]["STEPS"] == [10, 20] and override["INPUT"]["MIN_SIZE_TRAIN"] == [480]


def test_an_official_file_takes_its_base_files_values_under_its_own(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("MODEL:\n  MASK_FORMER:\n    DEC_LAYERS: 10\n    HIDDEN_DIM: 256\nSEED: 1\n")
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nMODEL:\n  MASK_FORMER:\n    DEC_LAYERS: 7\n")
    tree = read_official_yaml(tmp_path / "child.yaml")
    assert tree["MODEL"]["MASK_FORMER"] == {"DEC_LAYERS": 7, "HIDDEN_DIM": 256} and tree["SEED"] == 1


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_a_config_nested_too_deeply_is_one_line(tmp_path, suffix) -> None:
    """A file nested 100,000 levels deep was a RecursionError traceback from --config / --clip-config."""
    from clipvis.model.config import load_clip_model_config, load_config_file

    path = tmp_path / f"deep{suffix}"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="cannot read config file: nested too deeply$"):
        load_config_file(path)
    if suffix == ".json":
        with pytest.raises(ValueError, match="cannot read open_clip model config: nested too deeply$"):
            load_clip_model_config(path)


def test_a_training_runs_config_gives_its_clipvis_model_settings_over_the_official_keys(tmp_path: Path) -> None:
    """``segment --weights exported.pth --config runs/X/config.yaml`` ran a run's model without its ``CLIPVIS.MODEL``
    settings: the official keys alone were read, so the run's top-K came back to TEST.NUM_TOPK's."""
    from clipvis.model.config import load_config_file

    path = tmp_path / "config.yaml"
    path.write_text("MODEL:\n  MASK_FORMER:\n    NUM_OBJECT_QUERIES: 20\nTEST:\n  NUM_TOPK: 3\n"
                    "CLIPVIS:\n  LOG_PERIOD: 20\n  MODEL:\n    top_k: 5\n")
    overrides = load_config_file(path)
    assert overrides["top_k"] == 5 and overrides["num_queries"] == 20
    alone = tmp_path / "alone.yaml"
    alone.write_text("CLIPVIS:\n  MODEL:\n    top_k: 4\n")
    assert load_config_file(alone) == {"top_k": 4}
    alone.write_text("CLIPVIS:\n  MODEL: 4\n")
    with pytest.raises(ValueError, match="CLIPVIS.MODEL must be a mapping"):
        load_config_file(alone)


@pytest.mark.parametrize("sizes, message", [
    ({"hidden_dim": 250}, r"^hidden_dim \(MODEL\.MASK_FORMER\.HIDDEN_DIM\) must be divisible by num_heads "
                          r"\(MODEL\.MASK_FORMER\.NHEADS\): 250 is not a multiple of 8$"),
    ({"num_heads": 7}, r"^hidden_dim \(MODEL\.MASK_FORMER\.HIDDEN_DIM\) must be divisible by num_heads "
                       r"\(MODEL\.MASK_FORMER\.NHEADS\): 256 is not a multiple of 7$"),
    ({"conv_dim": 252, "norm_groups": 36}, r"^conv_dim \(MODEL\.SEM_SEG_HEAD\.CONVS_DIM\) must be divisible by "
                                           r"num_heads \(MODEL\.MASK_FORMER\.NHEADS\): 252 is not a multiple of 8$"),
    ({"norm_groups": 30}, r"^conv_dim \(MODEL\.SEM_SEG_HEAD\.CONVS_DIM\) must be divisible by norm_groups \(the "
                          r"pixel decoder's GroupNorm groups, 32 in the official code\): 256 is not a multiple of 30$"),
    ({"hidden_dim": 35, "num_heads": 5, "conv_dim": 40, "norm_groups": 8},
     r"^hidden_dim \(MODEL\.MASK_FORMER\.HIDDEN_DIM\) must be even \(the position encoding gives half of it to each "
     r"axis\), not 35$"),
])
def test_head_sizes_the_layers_cannot_split_are_refused_naming_the_settings(sizes, message) -> None:
    """HIDDEN_DIM 250 with 8 heads failed building the model with a bare AssertionError from nn.MultiheadAttention
    (norm_groups 30 with torch's GroupNorm error, an odd width in the middle of the first frame)."""
    with pytest.raises(ValueError, match=message):
        ClipVisConfig(**sizes)


def test_head_sizes_that_split_are_taken() -> None:
    config = ClipVisConfig(hidden_dim=40, num_heads=5, conv_dim=40, norm_groups=8)
    assert (config.hidden_dim, config.num_heads, config.conv_dim, config.norm_groups) == (40, 5, 40, 8)
def _official_config(path: Path, model_fields: dict, **sections: dict) -> Path:
    """An official-style config file: ``sections`` (``MODEL={...}``, ``INPUT={...}``) and a tiny model's settings
    under ``CLIPVIS.MODEL`` (as a training run's config.yaml holds them)."""
    import yaml

    tree = {**sections, "CLIPVIS": {"MODEL": {k: v for k, v in model_fields.items() if k != "notes"}}}
    path.write_text(yaml.safe_dump(tree))
    return path


def test_an_official_config_for_bgr_frames_is_refused_naming_the_key(tmp_path, tiny_config) -> None:
    """INPUT.FORMAT: BGR was ignored without a word: the official code would feed that checkpoint BGR frames, clipvis
    fed it RGB ones and gave other results."""
    from clipvis.model.config import load_config_file

    fields = tiny_config().to_dict()
    bgr = _official_config(tmp_path / "bgr.yaml", fields, INPUT={"FORMAT": "BGR"})
    with pytest.raises(ValueError, match=r"^.*bgr\.yaml: INPUT\.FORMAT 'BGR' is not supported: clipvis feeds the "
                                         r"model RGB frames.*\(set INPUT\.FORMAT: RGB if it was trained on RGB"):
        load_config_file(bgr)
    rgb = _official_config(tmp_path / "rgb.yaml", fields, INPUT={"FORMAT": "RGB"})
    assert "notes" not in load_config_file(rgb)


def test_an_official_config_of_an_unknown_meta_architecture_is_warned_about_once(tmp_path, tiny_model) -> None:
    """MODEL.META_ARCHITECTURE of neither official model was ignored without a word; it is one warning. The image
    model's config (CLIPVIS: the LVIS releases' own training config, which the official code evaluates on video with
    the video model too) and the video model's say nothing, whatever TEST.TEST_NUM_CLASSES (the vocabulary sets that:
    open vocabulary)."""
    import warnings

    import torch

    from clipvis.model import load_model, to_official_state_dict

    weights = tmp_path / "model.pth"
    torch.save({"model": to_official_state_dict(tiny_model)}, weights)
    fields = tiny_model.config.to_dict()
    other = _official_config(tmp_path / "other.yaml", fields, MODEL={"META_ARCHITECTURE": "GeneralizedRCNN"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(weights, config=other)
    said = [str(warning.message) for warning in caught]
    assert said == ["config says META_ARCHITECTURE GeneralizedRCNN, which clipvis does not know; it runs the video "
                    "model (CLIPVIS_Video: video scores, tracks across frames)"], said
    for name in ("CLIPVIS", "CLIPVIS_Video"):
        known = _official_config(tmp_path / f"{name}.yaml", fields, MODEL={"META_ARCHITECTURE": name},
                                 INPUT={"FORMAT": "RGB"}, TEST={"TEST_NUM_CLASSES": 1196})
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_model(weights, config=known)


def test_a_size_divisibility_the_backbones_cannot_run_is_refused_naming_the_setting() -> None:
    """``size_divisibility`` 7 (or 16) was accepted, then a thin frame padded to 7 pixels failed inside torch ("output
    size is too small"). Multiples of the backbones' stride 32 are taken, and 1 or below for no padding."""
    from clipvis.model.config import ModelSettingError

    for bad in (7, 16, 48):
        with pytest.raises(ModelSettingError, match=rf"^size_divisibility \(MODEL.MASK_FORMER.SIZE_DIVISIBILITY\) "
                                                    rf"must be a multiple of 32 .*, or 0 for no padding, not {bad}$"):
            ClipVisConfig(size_divisibility=bad)
    for good in (32, 64, 1, 0, -1):
        assert ClipVisConfig(size_divisibility=good).size_divisibility == good


def test_config_file_key_names_the_key_that_sets_a_field_as_the_file_spells_it(tmp_path) -> None:
    """segment names the key a too-high default --max-tracks came from: the official key, a training run's
    CLIPVIS.MODEL field (which wins, as load_config_file reads it), a clipvis JSON's field, or none (the checkpoint's
    own config then)."""
    from clipvis.model.config import config_file_key

    files = {
        "official.yaml": "TEST:\n  DETECTIONS_PER_IMAGE: 300\n",
        "run.yaml": "TEST:\n  DETECTIONS_PER_IMAGE: 300\nCLIPVIS:\n  MODEL:\n    detections_per_video: 400\n",
        "fields.json": '{"detections_per_video": 300}',
        "other.yaml": "TEST:\n  NUM_FRAME: 3\n",
    }
    keys = {}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        keys[name] = config_file_key(tmp_path / name, "detections_per_video")
    assert keys == {"official.yaml": "TEST.DETECTIONS_PER_IMAGE", "run.yaml": "CLIPVIS.MODEL.detections_per_video",
                    "fields.json": "detections_per_video", "other.yaml": None}
