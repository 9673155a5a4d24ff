"""The official implementation's outputs on the golden cases, reproduced through the public API.

Tolerances are those measured for the golden cases (float64 and one-thread re-runs of the official code), listed
in docs/fidelity.md, "How fidelity is checked".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from clipvis.model import load_model
from clipvis.model.mask_upsampling import ComposedMaskResize
from clipvis.model.predictor import VideoPredictor
from clipvis.model.text_classifier import build_prompts


class GoldenRun:
    """Runs a golden case once through the public API and keeps everything the tests compare."""

    def __init__(self, case: Path) -> None:
        torch.set_num_threads(2)
        self.case = case
        self.expected = {name: np.load(case / "expected" / f"{name}.npz") for name in (
            "inputs", "raw_outputs", "matching", "aligned_outputs", "classification", "scores", "debug_frame0")}
        self.results = json.loads((case / "expected" / "results.json").read_text())
        self.model = load_model(
            case / "model.pth", config=case / "official_config.yaml", clip_config=case / "open_clip_config.json"
        )
        self.vocabulary = [line.strip() for line in (case / "vocab.txt").read_text().splitlines() if line.strip()]
        self.frames = np.stack(
            [np.asarray(Image.open(p).convert("RGB")) for p in sorted((case / "frames").glob("*.png"))]
        )
        self.predictor = VideoPredictor(self.model, self.vocabulary, device="cpu", exact=True, text_cache=False)
        session = self.predictor.new_video()
        self.tracked = []
        for start in range(0, len(self.frames), 3):  # a chunk size unlike the official window of 10
            self.tracked += session.push(self.frames[start : start + 3])
        self.fused = session.scorer.fused_scores()
        self.video = session.finish()
        images, _ = self.predictor.preprocessor(self.frames, torch.device("cpu"))
        self.raw = self.model(images)
        self.images = images


@pytest.fixture(scope="module")
def run(golden_case_name: str, golden_case) -> GoldenRun:
    return GoldenRun(golden_case(golden_case_name))


def test_resize_is_bit_exact(run: GoldenRun) -> None:
    inputs = run.expected["inputs"]
    geo = run.predictor.preprocessor.geometry(*run.frames.shape[1:3])
    assert list(geo.resized) == inputs["image_size"].tolist()
    assert list(geo.padded) == inputs["padded_size"].tolist()
    resized = run.predictor.preprocessor.resize_exact(run.frames, geo.resized).numpy()
    np.testing.assert_array_equal(resized, inputs["resized_frames_uint8"])


def test_checkpoint_architecture_inferred(run: GoldenRun) -> None:
    config = json.loads((run.case / "config.json").read_text())
    shapes = config["derived_shapes"]
    assert run.model.config.num_queries == shapes["Q"]
    assert run.model.config.hidden_dim == shapes["D"]
    dec_layers = config["detectron2_cfg"]["MODEL"]["MASK_FORMER"]["DEC_LAYERS"]
    assert run.model.config.decoder_layers == dec_layers - 1


def test_backbone_and_pixel_decoder_intermediates(run: GoldenRun) -> None:
    debug = run.expected["debug_frame0"]
    with torch.no_grad():
        features = run.model.backbone(run.images[:1])
        mask_features, memory = run.model.pixel_decoder(features)
    np.testing.assert_allclose(features["res3"][0].numpy(), debug["res3"], atol=1e-5)
    np.testing.assert_allclose(features["res4"][0].numpy(), debug["res4"], atol=1e-5)
    np.testing.assert_allclose(mask_features[0].numpy(), debug["mask_features"], atol=1e-4)
    for level, name in enumerate(("ms_stride32", "ms_stride16", "ms_stride8")):
        np.testing.assert_allclose(memory[level][0].numpy(), debug[name], atol=1e-4)


def test_raw_per_frame_outputs(run: GoldenRun) -> None:
    raw = run.expected["raw_outputs"]
    np.testing.assert_allclose(run.raw.clip_dense.numpy(), raw["clip_dense"], atol=1e-5)
    np.testing.assert_allclose(run.raw.query_embeds.numpy(), raw["query_embeds"], atol=1e-3)
    np.testing.assert_allclose(run.raw.object_logits.numpy(), raw["object_logits"], atol=5e-3)
    np.testing.assert_allclose(run.raw.mask_logits.numpy(), raw["mask_logits"], atol=5e-3)
    np.testing.assert_allclose(run.raw.ious.numpy(), raw["iou"][..., 0], atol=2e-4)


def test_every_matching_permutation_exact(run: GoldenRun) -> None:
    perms = np.stack([frame.match.permutation.numpy() for frame in run.tracked])
    np.testing.assert_array_equal(perms, run.expected["matching"]["perm"])
    branches = [frame.match.branch for frame in run.tracked[1:]]
    official = json.loads((run.case / "expected" / "matching.json").read_text())["frames"]
    assert branches == [frame["branch"] for frame in official]


def test_text_classifier_and_prompts(run: GoldenRun) -> None:
    cls = run.expected["classification"]
    prompts, _ = build_prompts(run.vocabulary)
    expected_prompts = json.loads((run.case / "expected" / "prompts.json").read_text())["prompts"]
    assert prompts == expected_prompts
    np.testing.assert_array_equal(run.predictor.text_classifier.tokenize(prompts).numpy(), cls["prompt_token_ids"])
    np.testing.assert_allclose(run.predictor.text.embeddings.numpy(), cls["text_classifier"], atol=1e-5)


def test_class_probabilities_and_empty_pooling(run: GoldenRun) -> None:
    cls = run.expected["classification"]
    probs = np.stack([frame.class_probs.numpy() for frame in run.tracked], 1)  # [Q, T, C]
    np.testing.assert_allclose(probs, cls["class_probs"], atol=1e-4)
    aligned = run.expected["aligned_outputs"]
    pooled_masks = run.model.mask_pooler.binary_masks(
        torch.from_numpy(aligned["mask_logits"]).transpose(0, 1), tuple(run.raw.clip_dense.shape[-2:])
    )
    feats, empty = run.model.mask_pooler(run.raw.clip_dense, pooled_masks)
    np.testing.assert_array_equal(empty.numpy(), cls["empty_pooling_mask"])
    expected = cls["pooled_clip_features"]
    valid = ~cls["empty_pooling_mask"]
    np.testing.assert_allclose(feats.numpy()[valid], expected[valid], atol=1e-5)


def test_fused_scores(run: GoldenRun) -> None:
    np.testing.assert_allclose(run.fused.numpy(), run.expected["scores"]["final_scores"], atol=1e-4)


def test_final_results_match_official(run: GoldenRun) -> None:
    scores = run.expected["scores"]
    official_keys = list(zip(scores["topk_query"].tolist(), scores["topk_label"].tolist(), strict=True))
    ours = {(inst.track_id, inst.label): inst for inst in run.video.instances}
    assert set(ours) == set(official_keys)
    frame_masks = [frame.masks for frame in run.tracked]  # (.masks decodes every track's runs on each access)
    for index, (key, entry) in enumerate(zip(official_keys, run.results, strict=True)):
        inst = ours[key]
        assert entry["category_id"] == inst.label + 1
        assert abs(inst.score - entry["score"]) <= 1e-4
        np.testing.assert_array_equal(inst.suppressed_frames, scores["suppressed"][index])
        for t, rle in enumerate(entry["segmentations"]):
            expected_mask = mask_utils.decode(rle).astype(bool)
            our_mask = frame_masks[t][inst.track_id].numpy() & (not inst.suppressed_frames[t])
            union = (expected_mask | our_mask).sum()
            iou = 1.0 if union == 0 else (expected_mask & our_mask).sum() / union
            assert iou >= 0.99, f"{run.case.name}: result {index} frame {t} mask IoU {iou:.4f}"


def test_the_cpu_default_mask_resize_gives_the_official_masks_from_the_official_logits(run: GoldenRun) -> None:
    """The official ``results.json`` masks were made from the aligned mask logits by two bilinear resizes
    (docs/fidelity.md); the default CPU path composes them (clipvis.model.mask_upsampling). From the official logits
    it must give the official masks: pixels differ only where a logit is within float rounding of 0."""
    geo = run.video.geometry
    logits = torch.from_numpy(run.expected["aligned_outputs"]["mask_logits"])  # [Q, T, h4, w4]
    scores = run.expected["scores"]
    resize = ComposedMaskResize(tuple(logits.shape[2:]), geo)
    differing = total = 0
    for index, (query, entry) in enumerate(zip(scores["topk_query"].tolist(), run.results, strict=True)):
        track = logits[query].clone()
        track[torch.from_numpy(scores["suppressed"][index])] = -1.0  # the official per-frame suppression
        ours = resize.positive_column_major(track).transpose(1, 2).numpy()
        official = np.stack([mask_utils.decode(rle).astype(bool) for rle in entry["segmentations"]])
        differing += int((ours != official).sum())
        total += official.size
    assert differing <= total // 10**6, f"{run.case.name}: {differing} of {total} pixels differ"
