"""The text classifier: what its embedding cache's key covers; the best synonym of each class; the prompts of
each class's synonyms."""

from __future__ import annotations

import copy
import os
import stat

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipvis.model import text_classifier
from clipvis.model.clip_backbone import ClipBackbone, build_open_clip_model
from clipvis.model.text_classifier import PROMPT_TEMPLATES, TextClassifier, TextEmbeddings, build_prompts
from clipvis.model.vocabulary import split_synonyms

VOCABULARY = ["car", "person, pedestrian", "bicycle"]


@pytest.fixture
def clip_config(tiny_config) -> dict:
    """The tiny RN model's open_clip config (a copy)."""
    return copy.deepcopy(dict(tiny_config().clip_model_config))


def tiny_backbone(clip_config: dict) -> ClipBackbone:
    torch.manual_seed(0)
    return ClipBackbone(build_open_clip_model("tiny", clip_config, pretrained=""))


def with_text(clip_config: dict, changes: dict) -> dict:
    config = copy.deepcopy(clip_config)
    changes = dict(changes)
    config["text_cfg"].update(changes.pop("text_cfg", {}))
    config.update(changes)
    return config


@pytest.mark.parametrize("changes", [{"quick_gelu": False}, {"text_cfg": {"heads": 4}}],
                         ids=["gelu-instead-of-quickgelu", "4-heads-instead-of-2"])
def test_towers_with_equal_weights_but_other_settings_share_no_cache_entry(tmp_path, clip_config, changes) -> None:
    """A run with a wrong CLIP config filled the disk cache, and every later run with the right config (the same
    weights) reused its embeddings."""
    right = tiny_backbone(clip_config)
    wrong = tiny_backbone(with_text(clip_config, changes))
    wrong.load_state_dict(right.state_dict())
    truth = TextClassifier(right, use_disk_cache=False)(VOCABULARY).embeddings
    assert not torch.allclose(TextClassifier(wrong, use_disk_cache=False)(VOCABULARY).embeddings, truth)

    TextClassifier(wrong, cache_dir=tmp_path)(VOCABULARY)  # fills the cache with the wrong tower's embeddings
    assert torch.equal(TextClassifier(right, cache_dir=tmp_path)(VOCABULARY).embeddings, truth)
    assert len(list((tmp_path / "text_embeddings").glob("*.safetensors"))) == 2


def test_changed_weights_are_encoded_again(tmp_path, clip_config) -> None:
    """The weights' fingerprint follows the weights: new weights loaded into the same tower after a first vocabulary
    give new embeddings, not the old ones from the memory cache."""
    backbone = tiny_backbone(clip_config)
    classifier = TextClassifier(backbone, cache_dir=tmp_path)
    before = classifier(VOCABULARY).embeddings
    other = tiny_backbone(clip_config)
    with torch.no_grad():
        for parameter in other.clip_model.transformer.parameters():
            parameter.add_(0.5)
    backbone.load_state_dict(other.state_dict())
    after = classifier(VOCABULARY).embeddings
    assert not torch.allclose(after, before)
    assert torch.equal(after, TextClassifier(other, use_disk_cache=False)(VOCABULARY).embeddings)


def test_same_tower_reuses_its_cache_entry(tmp_path, clip_config, monkeypatch) -> None:
    first = TextClassifier(tiny_backbone(clip_config), cache_dir=tmp_path)(VOCABULARY).embeddings
    second = TextClassifier(tiny_backbone(clip_config), cache_dir=tmp_path)
    monkeypatch.setattr(second, "encode_prompts", lambda *a, **k: pytest.fail("encoded although cached"))
    assert torch.equal(second(VOCABULARY).embeddings, first)


@pytest.mark.parametrize("umask", [0o002, 0o022, 0o077])
def test_cache_files_get_the_mode_of_the_umask(tmp_path, clip_config, umask) -> None:
    """The embeddings were written 0600 whatever the umask (a temporary file renamed): the other users of a shared
    cache could not read them, and encoded every vocabulary again."""
    previous = os.umask(umask)
    try:
        TextClassifier(tiny_backbone(clip_config), cache_dir=tmp_path)(VOCABULARY)
    finally:
        os.umask(previous)
    [entry] = (tmp_path / "text_embeddings").glob("*.safetensors")
    assert stat.S_IMODE(entry.stat().st_mode) == 0o666 & ~umask


def test_max_over_synonyms_is_the_best_synonym_of_each_class() -> None:
    torch.manual_seed(0)
    counts = [1, 3, 1, 2, 4]
    text = TextEmbeddings([f"c{i}" for i in range(len(counts))], torch.randn(sum(counts), 8), counts, 10.0)
    per_synonym = torch.randn(2, 5, sum(counts))
    bounds = torch.tensor([0, *counts]).cumsum(0).tolist()
    expected = torch.stack([per_synonym[..., a:b].amax(-1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)], -1)
    assert torch.equal(text.max_over_synonyms(per_synonym), expected)
    single = TextEmbeddings(["a", "b"], torch.randn(2, 8), [1, 1], 10.0)
    two = per_synonym[..., :2]
    assert single.max_over_synonyms(two) is two and single.synonym_index is None


def test_classifying_copies_nothing_from_the_host(monkeypatch) -> None:
    """The synonym -> class index is made with the embeddings (and moved with them by ``to``), not rebuilt and copied
    to the device at every call (once per pushed batch)."""
    text = TextEmbeddings(["cat, kitten", "dog"], F.normalize(torch.randn(3, 4), dim=-1), [2, 1], 100.0)
    moved = text.to(torch.device("meta"))
    assert moved.synonym_index.device.type == "meta" and text.synonym_index.device.type == "cpu"

    def no_copy(*args, **kwargs):
        raise AssertionError("a tensor was copied to the device while classifying")

    monkeypatch.setattr(text_classifier, "to_device", no_copy)
    monkeypatch.setattr(torch, "tensor", no_copy)
    assert moved.logits(torch.randn(5, 4, device="meta")).shape == (5, 2)
    assert text.logits(torch.randn(5, 4)).shape == (5, 2)


def test_a_tower_made_under_inference_mode_is_fingerprinted_and_its_changes_followed(tmp_path, clip_config) -> None:
    """A model loaded, or moved to its device, under ``torch.inference_mode()`` has inference tensors, which keep no
    version counter: building a classifier raised "Inference tensors do not track version counter"; an in-place
    change of them (``load_state_dict`` under inference mode) still gives new embeddings."""
    truth = TextClassifier(tiny_backbone(clip_config), use_disk_cache=False)(VOCABULARY).embeddings
    key = TextClassifier(tiny_backbone(clip_config), use_disk_cache=False).weights_fingerprint()
    other = tiny_backbone(clip_config)
    with torch.no_grad():
        for parameter in other.clip_model.transformer.parameters():
            parameter.add_(0.5)
    with torch.inference_mode():
        backbone = tiny_backbone(clip_config).double().float()  # as a move to another device makes them
        assert backbone.clip_model.positional_embedding.is_inference()
        classifier = TextClassifier(backbone, cache_dir=tmp_path)
        assert torch.equal(classifier(VOCABULARY).embeddings, truth)
        assert classifier.weights_fingerprint() == key  # the same tensors: the same cache entry
        backbone.load_state_dict(other.state_dict())  # copies in place: same storage, no version to tell
        after = classifier(VOCABULARY).embeddings
    assert torch.equal(after, TextClassifier(other, use_disk_cache=False)(VOCABULARY).embeddings)
    assert not torch.allclose(after, truth)


@pytest.mark.parametrize("names", [1, 9, 10, 93])
def test_synonyms_are_reduced_batch_by_batch_to_the_same_vectors(tmp_path, clip_config, names: int) -> None:
    """Every prompt's embedding was held until all were encoded (20,000 names: 280,000 of them, 1.1 GB at width
    1024, twice over while normalised): each batch's complete synonyms are now reduced as it comes, to the same
    bits, whichever batch a synonym's 14 prompts straddle (128 prompts a batch)."""
    from clipvis.model.text_classifier import PROMPT_TEMPLATES, build_prompts

    classifier = TextClassifier(tiny_backbone(clip_config), cache_dir=tmp_path, use_disk_cache=False)
    vocabulary = [f"thing {k}" + (", other" if k % 3 == 0 else "") for k in range(names)]
    prompts, counts = build_prompts(vocabulary)
    device = torch.device("cpu")
    with torch.inference_mode():
        whole = F.normalize(classifier.encode_prompts(prompts, device), dim=-1)
        expected = F.normalize(whole.view(-1, len(PROMPT_TEMPLATES), whole.shape[-1]).mean(1), dim=-1)
        embeddings = classifier(vocabulary).embeddings
    assert embeddings.shape[0] == sum(counts) and torch.equal(embeddings, expected)


def test_prompts_and_synonym_max() -> None:
    assert split_synonyms("car, automobile,auto") == ["car", "automobile", "auto"]
    prompts, counts = build_prompts(["aerosol_can", "car, automobile"])
    assert counts == [1, 2] and len(prompts) == 3 * len(PROMPT_TEMPLATES)
    assert prompts[0] == "a photo of a aerosol_can." and prompts[15] == "This is a photo of a car"
    emb = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), dim=-1)
    text = TextEmbeddings(["a", "b"], emb, [1, 2], logit_scale=100.0)
    logits = text.logits(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    np.testing.assert_allclose(logits.numpy(), [[100.0, 60.0], [0.0, 100.0]], atol=1e-4)


def test_the_disk_cache_can_be_turned_off_on_a_classifier_and_given_one_way_only(tmp_path, clip_config) -> None:
    """`classifier.use_disk_cache = False` raised AttributeError (a read-only property once the disk cache became
    its own object), and `disk_cache=` with `cache_dir=` or `use_disk_cache=` kept `disk_cache`'s settings without a
    word. Setting it now turns the disk cache off (nothing written), and giving both ways is a ValueError."""
    from clipvis.model.text_embedding_cache import TextEmbeddingCache

    backbone = tiny_backbone(clip_config)
    classifier = TextClassifier(backbone, cache_dir=tmp_path)
    classifier.use_disk_cache = False
    assert not classifier.use_disk_cache and not classifier.disk_cache.enabled
    classifier(["car"])
    assert not (tmp_path / "text_embeddings").exists() or not list((tmp_path / "text_embeddings").iterdir())
    classifier.use_disk_cache = True
    classifier(["bus"])
    assert len(list((tmp_path / "text_embeddings").glob("*.safetensors"))) == 1
    for settings in ({"cache_dir": tmp_path}, {"use_disk_cache": False}, {"use_disk_cache": True}):
        with pytest.raises(ValueError, match="give disk_cache, or .* not both"):
            TextClassifier(backbone, disk_cache=TextEmbeddingCache(tmp_path), **settings)
    assert TextClassifier(backbone, disk_cache=TextEmbeddingCache(tmp_path, enabled=False)).use_disk_cache is False
