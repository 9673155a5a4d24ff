"""A CLIP whose weights open_clip cannot fetch from Hugging Face (an offline machine, an empty Hugging Face cache):
one `clipvis: error:` line naming the CLIP and the ways round it, from train, segment and export alike, and none of
huggingface_hub's retry lines or open_clip's own error log. No test reaches the network: open_clip's fetch is faked."""

from __future__ import annotations

import logging
from pathlib import Path

import open_clip
import pytest
from typer.testing import CliRunner

from clipvis.cli.app import app
from clipvis.model import create_model
from clipvis.model.checkpoint import write_state_dict

from .test_untrusted_clip import _frames
from .train.conftest import _tiny_train_config, write_coco

runner = CliRunner()

# open_clip 3's error for a tag whose file cannot be fetched (open_clip/factory.py, create_model)
OFFLINE_ERROR = ("Failed to download weights for tag 'openai': Failed to download file (open_clip_pytorch_model.bin) "
                 "for timm/resnet50_clip.openai. Last error: An error happened while trying to locate the file on the "
                 "Hub and we cannot find the requested files in the local cache. Please check your connection and "
                 "try again or make sure your Internet connection is on.")


def _offline_open_clip(monkeypatch) -> list[str]:
    """open_clip.create_model as on a machine without internet: huggingface_hub's retry warnings, open_clip's
    logging.error on the root logger, then its RuntimeError. Returns the CLIPs asked for."""
    asked: list[str] = []

    def create(name: str, *args, **kwargs):
        asked.append(name)
        hub = logging.getLogger("huggingface_hub.utils._http")
        for attempt in range(1, 3):
            hub.warning("'[Errno -2] Name or service not known' thrown while requesting HEAD https://huggingface.co/x")
            hub.warning("Retrying in %ds [Retry %d/5].", attempt, attempt)
        logging.error(OFFLINE_ERROR)
        raise RuntimeError(OFFLINE_ERROR)

    monkeypatch.setattr(open_clip, "create_model", create)
    return asked


def _released_clip_fields(tiny_config) -> dict:
    """A tiny head whose CLIP is RN50 (openai), taken from open_clip."""
    fields = {**tiny_config().to_dict(), "clip_model_config": None, "clip_model_name": "RN50",
              "clip_pretrained": "openai"}
    fields.pop("notes")
    return fields


def _assert_fetch_line(line: str, prefix: str, flag: str = "--weights PATH") -> None:
    assert line.startswith(f"clipvis: error: {prefix}the RN50/openai CLIP weights could not be fetched from "
                           "Hugging Face (timm/resnet50_clip.openai): An error happened while trying to locate the "
                           "file on the Hub and we cannot find the requested files in the local cache; "), line
    assert "HF_HOME" in line and "Hugging Face cache" in line and "CLIPVIS_OFFLINE" in line, line
    assert f"give a checkpoint that holds the CLIP (backbone.clip_model.* keys) with {flag};" in line, line


def test_train_from_scratch_offline_is_one_line_and_leaves_no_lock(tmp_path, tiny_config, monkeypatch) -> None:
    """It was ~40 huggingface_hub retry lines and a 160-line traceback (open_clip's RuntimeError)."""
    asked = _offline_open_clip(monkeypatch)
    data = write_coco(tmp_path / "data", num_images=2)
    config = _tiny_train_config(_released_clip_fields(tiny_config), tmp_path, MAX_ITER=1)
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--config", str(config), "--output-dir", str(run),
                                 "--data", str(data[0]), "--images", str(data[1])])
    assert result.exit_code == 1, result.output + repr(result.exception)
    assert asked == ["RN50"]
    lines = result.stderr.splitlines()
    assert not any("Retry" in line or "huggingface_hub" in line or "ERROR:" in line for line in lines), lines
    assert "Traceback" not in result.output
    _assert_fetch_line(lines[-1], f"{config}: ")
    assert not (run / "config.yaml").exists()  # nothing for a --resume to take up
    # the run's lock (a flock on .clipvis-train.lock) ended with it: the file is empty and the folder free
    from clipvis.cli.locks import FolderLock
    from clipvis.cli.train.trainer import TRAINING_LOCK_NAME

    assert (run / TRAINING_LOCK_NAME).read_bytes() == b""
    FolderLock(run, TRAINING_LOCK_NAME).acquire().release()


def _head_only_weights(path: Path, tiny_config) -> Path:
    """A tiny head for RN50's features, without the CLIP (zeros: the skeleton's shapes, built on the meta device)."""
    import torch

    config = {**_released_clip_fields(tiny_config), "notes": []}
    with torch.device("meta"):
        skeleton = create_model(config).state_dict()
    state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in skeleton.items() if not k.startswith("backbone.")}
    return write_state_dict(state, config, path)


@pytest.mark.parametrize("log_format", ["human", "jsonl"])
def test_segment_with_a_head_only_checkpoint_offline_is_one_line(tmp_path, tiny_config, monkeypatch,
                                                                  log_format) -> None:
    """segment said open_clip's message (the download's wrapping, "Please check your connection") after
    huggingface_hub's WARNING lines, under --log-format jsonl too."""
    asked = _offline_open_clip(monkeypatch)
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    weights = _head_only_weights(tmp_path / "head.safetensors", tiny_config)
    result = runner.invoke(app, ["segment", str(_frames(tmp_path / "frames")), "--vocab", "cat", "--weights",
                                 str(weights), "-o", str(tmp_path / "out"), "--device", "cpu",
                                 "--log-format", log_format])
    assert result.exit_code == 1, result.output
    assert asked == ["RN50"]
    lines = result.stderr.strip().splitlines()
    assert not any("Retry" in line or "ERROR:root" in line for line in lines), lines
    if log_format == "human":
        assert len(lines) == 2, lines
        assert lines[0].startswith("clipvis: warning: Hugging Face: '[Errno -2] Name or service not known' thrown "
                                   "while requesting HEAD"), lines
        _assert_fetch_line(lines[1], f"weights {weights}: ")
    else:
        import json

        assert len(lines) == 2, lines
        event = json.loads(lines[0])
        assert event["event"] == "warning" and event["message"].startswith("Hugging Face: "), event
        _assert_fetch_line(lines[1], f"weights {weights}: ")


def test_export_onnx_with_a_head_only_checkpoint_offline_says_the_same_line(tmp_path, tiny_config,
                                                                             monkeypatch) -> None:
    _offline_open_clip(monkeypatch)
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    weights = _head_only_weights(tmp_path / "head.safetensors", tiny_config)
    result = runner.invoke(app, ["export", "--to", "onnx", "--model", str(weights), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1, result.output
    _assert_fetch_line(result.stderr.strip().splitlines()[-1], f"--model {weights}: ", flag="--model PATH")


def test_a_checkpoint_of_another_model_is_refused_before_the_clip_is_fetched(tmp_path, tiny_config,
                                                                             monkeypatch) -> None:
    """A detectron2 Mask2Former checkpoint (sem_seg_head.* and backbone.res2.* keys) had the CLIP fetched for it first
    (offline: 75 s of retries, then an error about the CLIP, not the file; online ~250 MB)."""
    import torch

    asked = _offline_open_clip(monkeypatch)
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    other = tmp_path / "d2_m2f.pth"
    torch.save({"model": {"backbone.res2.0.conv1.weight": torch.zeros(4, 4, 1, 1),
                          "sem_seg_head.predictor.query_embed.weight": torch.zeros(10, 8),
                          "sem_seg_head.pixel_decoder.adapter_1.weight": torch.zeros(8, 8, 1, 1)}}, other)
    result = runner.invoke(app, ["segment", str(_frames(tmp_path / "frames")), "--vocab", "cat", "--weights",
                                 str(other), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"clipvis: error: {other}: checkpoint does not fit the model: missing keys ("), line
    assert "unexpected keys (1): backbone.res2.0.conv1.weight; " in line, line
    assert "the CLIP is not the one the file holds" not in line, line  # no CLIP in it: the file is another model's
    assert asked == []


def test_a_head_of_another_size_is_refused_before_the_clip_is_fetched(tmp_path, tiny_config, monkeypatch) -> None:
    from clipvis.model import CheckpointError, load_model

    asked = _offline_open_clip(monkeypatch)
    weights = _head_only_weights(tmp_path / "head.safetensors", tiny_config)
    from safetensors.torch import load_file, save_file

    state = load_file(weights)
    key = next(k for k in state if k.startswith("mask_decoder.") and state[k].dim() == 2)
    state[key] = torch_zeros(state[key].shape[0] + 1, state[key].shape[1])
    save_file(state, weights, metadata=_metadata(weights))
    with pytest.raises(CheckpointError, match=f"shape mismatches \\(1\\): {key} "):
        load_model(weights)
    assert asked == []


def torch_zeros(*shape: int):
    import torch

    return torch.zeros(*shape)


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as file:
        return file.metadata()


def test_train_export_pth_of_a_head_only_checkpoint_offline_is_one_warning_and_one_error(tmp_path, tiny_config,
                                                                                         monkeypatch) -> None:
    _offline_open_clip(monkeypatch)
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    weights = _head_only_weights(tmp_path / "head.safetensors", tiny_config)
    result = runner.invoke(app, ["train", "--weights", str(weights), "--export-pth", str(tmp_path / "y.pth")])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("clipvis: warning: Hugging Face: "), lines
    _assert_fetch_line(lines[1], f"--weights {weights}: ")
    assert not (tmp_path / "y.pth").exists()


def _cut_short_cached_clip(hub_cache: Path, file_name: str) -> Path:
    """A Hugging Face cache holding RN50 (openai)'s weights file cut short (an interrupted fetch): a snapshot link to
    a blob of the first bytes of a real file. Returns the blob."""
    import torch
    from safetensors.torch import save_file

    repo = hub_cache / "models--timm--resnet50_clip.openai"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "blobs").mkdir()
    blob = repo / "blobs" / "f00d"
    whole = {"visual.conv1.weight": torch.zeros(64, 3, 3, 3), "logit_scale": torch.zeros(())}
    if file_name.endswith(".safetensors"):
        save_file(whole, blob)
    else:
        torch.save(whole, blob)
    blob.write_bytes(blob.read_bytes()[:300])
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "snapshots" / revision / file_name).symlink_to(blob)
    return blob


@pytest.mark.parametrize("file_name", ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"])
def test_a_cut_short_clip_in_the_hugging_face_cache_is_one_line_naming_it(tmp_path, tiny_config, monkeypatch,
                                                                          file_name) -> None:
    """open_clip's error reading it (SafetensorError 'incomplete metadata', torch's RuntimeError) was a 70-line
    traceback that named neither the file nor what to do."""
    import huggingface_hub.constants
    import torch
    from safetensors.torch import load_file

    blob = _cut_short_cached_clip(tmp_path / "hub", file_name)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def create(name: str, *args, **kwargs):  # open_clip finds the cached file and reads it
        (load_file if file_name.endswith(".safetensors") else torch.load)(blob)

    monkeypatch.setattr(open_clip, "create_model", create)
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    weights = _head_only_weights(tmp_path / "head.safetensors", tiny_config)
    result = runner.invoke(app, ["segment", str(_frames(tmp_path / "frames")), "--vocab", "cat", "--weights",
                                 str(weights), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 1, result.output + repr(result.exception)
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"clipvis: error: weights {weights}: the RN50/openai CLIP weights in the Hugging Face "
                           f"cache cannot be read ({blob}: "), line
    assert line.endswith("delete that file; run again with internet access to fetch it again"), line


def test_the_fetch_line_says_hf_hub_offline_when_it_is_set(tmp_path, tiny_config, monkeypatch) -> None:
    """With HF_HUB_OFFLINE set (clusters set it for all jobs) the line said to fetch the CLIP once online and
    suggested CLIPVIS_OFFLINE, never naming the setting that kept it from being fetched."""
    import huggingface_hub.constants

    _offline_open_clip(monkeypatch)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    weights = _head_only_weights(tmp_path / "head.safetensors", tiny_config)
    result = runner.invoke(app, ["export", "--to", "onnx", "--model", str(weights), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert ("; HF_HUB_OFFLINE is set, which keeps huggingface_hub from fetching: unset it to fetch them (they are "
            "then kept in the Hugging Face cache, ") in line, line
    assert "CLIPVIS_OFFLINE" not in line and "internet access" not in line, line
    assert line.endswith("give a checkpoint that holds the CLIP (backbone.clip_model.* keys) with --model PATH"), line


def test_a_head_for_another_clip_given_without_its_config_says_to_give_it(tmp_path, tiny_config, monkeypatch) -> None:
    """A ConvNeXt head-only file given without its config failed with "shape mismatches (4):
    pixel_decoder.adapter_1.weight (256, 128, 1, 1) vs model (256, 256, 1, 1), ..." and nothing on what to do."""
    import torch
    from safetensors.torch import save_file

    asked = _offline_open_clip(monkeypatch)
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    config = {**_released_clip_fields(tiny_config), "clip_model_name": "convnext_base_w_320",
              "clip_pretrained": "laion_aesthetic_s13b_b82k", "notes": []}
    with torch.device("meta"):
        skeleton = create_model(config).state_dict()
    weights = tmp_path / "convnext_head.safetensors"  # no embedded config: the model is built from the default's
    save_file({k: torch.zeros(v.shape) for k, v in skeleton.items() if not k.startswith("backbone.")}, weights)
    result = runner.invoke(app, ["segment", str(_frames(tmp_path / "frames")), "--vocab", "cat", "--weights",
                                 str(weights), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert result.exit_code == 1, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"clipvis: error: {weights}: checkpoint does not fit the model: shape mismatches ("), line
    assert line.endswith("; the layers that take the CLIP's features have other widths in the file: the model was "
                         "built for CLIP RN50/openai (the default config's); give the config the checkpoint was "
                         "trained with (--config)"), line
    assert asked == []


def test_the_offline_variable_named_is_the_one_set(monkeypatch) -> None:
    """huggingface_hub runs offline with HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE: a cluster's TRANSFORMERS_OFFLINE=1 was
    said as 'HF_HUB_OFFLINE is set ... unset it', a variable the user did not set."""
    import huggingface_hub.constants

    from clipvis.model.build import ClipFetchError, DamagedClipError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    fetch = str(ClipFetchError("RN50", "openai", "timm/resnet50_clip.openai", OSError("offline")))
    assert "TRANSFORMERS_OFFLINE is set, which keeps huggingface_hub from fetching: unset it" in fetch, fetch
    assert "HF_HUB_OFFLINE" not in fetch
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    fetch = str(ClipFetchError("RN50", "openai", None, OSError("offline")))
    assert "HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE are set, which keeps huggingface_hub from fetching: unset them" \
        in fetch, fetch
    damaged = str(DamagedClipError("RN50", "openai", Path("/hub/blobs/f00d"), "incomplete metadata"))
    assert damaged.endswith("delete that file; HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE are set too: unset them to "
                            "fetch it again"), damaged


def test_a_cached_clip_this_user_may_not_read_is_not_called_cut_short(tmp_path, monkeypatch) -> None:
    """A shared Hugging Face cache written by another user: the whole file it cannot open was said to be 'cut short
    (an interrupted download or copy): delete that file', another user's good file."""
    import pickle

    import safetensors

    from clipvis.model import build

    blob = tmp_path / "f00d"
    blob.write_bytes(b"whole")

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(blob))

    monkeypatch.setattr(safetensors, "safe_open", refused)
    reason, damaged = build._unreadable_weights(blob, safetensors=True)
    assert (reason, damaged) == ("Permission denied", False)
    message = str(build.DamagedClipError("RN50", "openai", blob, reason, damaged))
    assert "cut short" not in message and "delete" not in message
    assert message.endswith("give this user read access, or point HF_HOME at a cache of its own"), message
    copy = pickle.loads(pickle.dumps(build.DamagedClipError("RN50", "openai", blob, "incomplete metadata")))
    assert isinstance(copy, build.DamagedClipError) and copy.path == blob and "cut short" in str(copy)
