"""Open-vocabulary text classifier: CLIP text embeddings of a vocabulary, cached (docs/fidelity.md,
"Classification")."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from clipvis.model.clip_backbone import ClipBackbone
from clipvis.model.text_embedding_cache import TextEmbeddingCache
from clipvis.model.transfer import to_device
from clipvis.model.vocabulary import split_synonyms

# The 14 ViLD templates, in the official order; filled with str.format, class string verbatim.
PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)
TEXT_BATCH = 128
# Vocabularies whose embeddings a TextClassifier keeps in memory (the last used); the disk cache keeps every one.
MEMORY_VOCABULARIES = 16


def build_prompts(vocabulary: list[str]) -> tuple[list[str], list[int]]:
    """All prompt strings (class, synonym, template order) and the number of synonyms per class."""
    prompts: list[str] = []
    counts: list[int] = []
    for name in vocabulary:
        synonyms = split_synonyms(name)
        counts.append(len(synonyms))
        for synonym in synonyms:
            prompts.extend(template.format(synonym) for template in PROMPT_TEMPLATES)
    return prompts, counts


@dataclass(frozen=True)
class ClipReading:
    """What CLIP's text tower reads of each class: ``keys[c]`` (equal keys, equal embeddings: open_clip's tokenizer
    lower-cases, unescapes HTML, collapses whitespace and cuts prompts at the context length) and the synonyms cut
    short in some prompt (``(synonym, tokens kept in the longest template)``)."""

    keys: list[frozenset[tuple[int, ...]]]
    cut: list[tuple[str, int]]

    def alike(self, names: list[str]) -> list[list[str]]:
        """The groups of ``names`` (one per class, as ``keys``) that CLIP reads alike: classes holding a synonym it
        reads the same (``big road`` and ``car, big  road``; classes alike in every synonym included), one group
        per such synonym, each group once."""
        if len(names) != len(self.keys):
            raise ValueError(f"{len(names)} names for {len(self.keys)} classes")
        classes_of: dict[tuple[int, ...], list[int]] = {}
        for index, key in enumerate(self.keys):
            for synonym in sorted(key):
                classes_of.setdefault(synonym, []).append(index)
        groups = dict.fromkeys(tuple(classes) for classes in classes_of.values() if len(classes) > 1)
        return [[names[i] for i in group] for group in groups]


def synonym_gather_index(synonym_counts: list[int], device: str | torch.device = "cpu") -> torch.Tensor | None:
    """``[C, S_max]``: the rows (synonyms) of each class, padded with the class's first row (a repeat leaves a max
    as it is); None when every class has one synonym (nothing to reduce)."""
    if all(count == 1 for count in synonym_counts):
        return None
    widest = max(synonym_counts)
    rows, start = [], 0
    for count in synonym_counts:
        rows.append([start + i if i < count else start for i in range(widest)])
        start += count
    return to_device(torch.tensor(rows, dtype=torch.int64), device)


@dataclass
class TextEmbeddings:
    """Classifier rows for a vocabulary: one unit vector per (class, synonym), in class order."""

    vocabulary: list[str]
    embeddings: torch.Tensor  # [S, E] with S = total number of synonyms
    synonym_counts: list[int]  # per class
    logit_scale: float
    # [C, S_max] rows of each class (`synonym_gather_index`), made once on the embeddings' device (here and by
    # `to`): classifying copies nothing from the host at each call.
    synonym_index: torch.Tensor | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.synonym_index = synonym_gather_index(self.synonym_counts, self.embeddings.device)

    def to(self, device: str | torch.device) -> TextEmbeddings:
        """The same vocabulary with its embeddings on ``device`` (itself when they are there already)."""
        embeddings = self.embeddings.to(device)
        return self if embeddings is self.embeddings else replace(self, embeddings=embeddings)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """features ``[..., E]`` (unnormalised) -> class logits ``[..., C]``: scale * max over synonyms of cosine."""
        x = F.normalize(features.float(), dim=-1)
        emb = self.embeddings.to(device=x.device, dtype=x.dtype)
        return self.max_over_synonyms(self.logit_scale * x @ emb.T)

    def max_over_synonyms(self, per_synonym: torch.Tensor) -> torch.Tensor:
        """Per-synonym scores ``[..., S]`` -> per-class ``[..., C]``, the best synonym of each class: one gather and
        one max (also in ONNX, where the TorchScript exporter has no translation of scatter_reduce)."""
        index = self.synonym_index
        if index is None:
            return per_synonym
        index = index.to(per_synonym.device)  # no copy when it is there (the predictor's embeddings on its device)
        return per_synonym.index_select(-1, index.flatten()).unflatten(-1, tuple(index.shape)).amax(-1)


# Module attributes that are no settings of the computation (`TextClassifier.architecture`).
_NOT_SETTINGS = frozenset({"training", "grad_checkpointing"})
_SKIP = object()


def _plain(value: object) -> object:
    """A JSON-able copy of a plain setting (number, string, None, dtype, tuples of them), else ``_SKIP``."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, tuple | list):
        items = [_plain(item) for item in value]
        return _SKIP if any(item is _SKIP for item in items) else items
    return _SKIP


class TextClassifier:
    """Encodes vocabularies with the CLIP text tower; caches results in memory and on disk.

    The cache key (`cache_key`) covers the text tower's settings (`architecture`: activation, heads, ...) and
    weights, the autocast in force and the exact prompt strings, so a second run with the same text tower and
    vocabulary never re-encodes (an LV-VIS vocabulary is ~16,700 prompts), and a tower built with other settings
    (a wrong ``clip_config``) never reuses another's embeddings.
    """

    def __init__(self, backbone: ClipBackbone, cache_dir: Path | None = None, use_disk_cache: bool | None = None,
                 on_encoding: Callable[[int, int], None] | None = None,
                 disk_cache: TextEmbeddingCache | None = None) -> None:
        """``cache_dir`` (None: the clipvis cache) and ``use_disk_cache`` (default True) make the disk cache;
        ``disk_cache``, an existing one, is given instead of them (ValueError with either: which one holds would be
        a guess)."""
        import open_clip

        if disk_cache is not None and (cache_dir is not None or use_disk_cache is not None):
            given = " and ".join(name for name, value in (("cache_dir", cache_dir), ("use_disk_cache", use_disk_cache))
                                 if value is not None)
            raise ValueError(f"TextClassifier: give disk_cache, or {given}, not both (disk_cache has its own folder "
                             "and on/off setting: TextEmbeddingCache(cache_root, enabled))")
        self.backbone = backbone
        self.on_encoding = on_encoding  # (classes, prompts), before a vocabulary found in no cache is encoded
        context = int(backbone.clip_model.positional_embedding.shape[0])
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=context)
        # the entries on disk: ``disk_cache`` when given, else one under ``cache_dir`` (None: the clipvis cache)
        self.disk_cache = disk_cache if disk_cache is not None else TextEmbeddingCache(
            cache_dir, True if use_disk_cache is None else use_disk_cache)
        # embeddings [S, E] by key, the MEMORY_VOCABULARIES used last (a server taking a vocabulary per request kept
        # every one it was ever given; the disk cache keeps them all)
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._weights_fingerprint: str | None = None
        self._weights_stamp: tuple = ()  # what the fingerprint was computed from (see weights_fingerprint)

    @property
    def cache_dir(self) -> Path:
        """The folder of the disk cache (`TextEmbeddingCache.cache_dir`)."""
        return self.disk_cache.cache_dir

    @property
    def use_disk_cache(self) -> bool:
        """Whether entries are read from and written to disk (False once a save failed); set it to turn the disk
        cache (`disk_cache.enabled`) off or on again."""
        return self.disk_cache.enabled

    @use_disk_cache.setter
    def use_disk_cache(self, enabled: bool) -> None:
        self.disk_cache.enabled = enabled

    def _text_tensors(self) -> list[tuple[str, torch.Tensor]]:
        """The text tower's parameters and buffers (the attention mask too, which the state dict leaves out), by
        name: everything of the CLIP but the image tower and the logit scale."""
        model = self.backbone.clip_model
        named = [*model.named_parameters(), *model.named_buffers()]
        return sorted((name, tensor) for name, tensor in named
                      if not name.startswith("visual.") and name not in ("logit_scale", "logit_bias"))

    def weights_fingerprint(self) -> str:
        """SHA-256 of the text tower's tensors (names, dtypes, shapes, values). Computed again whenever a tensor was
        replaced or changed in place since the last time (``load_state_dict``, ``.to()``, an optimizer step), not
        once for the classifier's lifetime.

        Inference tensors (a model loaded, or moved to its device, under ``torch.inference_mode()``) keep no version
        counter that would tell an in-place change: while the tower has any, the fingerprint is computed at every
        call (one read of the text tower's weights per vocabulary, a fraction of a second for a ViT-B/L one)."""
        tensors = self._text_tensors()
        stamp = tuple((name, t.data_ptr(), None if t.is_inference() else t._version, str(t.device), t.dtype,
                       tuple(t.shape)) for name, t in tensors)
        untracked = any(t.is_inference() for _, t in tensors)
        if self._weights_fingerprint is None or self._weights_stamp != stamp or untracked:
            digest = hashlib.sha256()
            for name, tensor in tensors:
                digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
                digest.update(memoryview(tensor.detach().cpu().contiguous().view(torch.uint8).numpy()))
            self._weights_fingerprint = digest.hexdigest()
            self._weights_stamp = stamp
        return self._weights_fingerprint

    def architecture(self) -> str:
        """The text tower's settings as canonical JSON: every module's class and plain settings (activation
        QuickGELU or GELU, attention heads, LayerNorm eps, the text pooling, the context length, ...), with the
        open_clip version. Two towers with equal weights but other settings encode differently."""
        import open_clip

        modules = []
        for name, module in self.backbone.clip_model.named_modules():
            if name == "visual" or name.startswith("visual."):
                continue
            settings = {key: _plain(value) for key, value in vars(module).items()
                        if not key.startswith("_") and key not in _NOT_SETTINGS and _plain(value) is not _SKIP}
            modules.append([name, f"{type(module).__module__}.{type(module).__qualname__}", settings])
        return json.dumps({"open_clip": open_clip.__version__, "modules": modules}, sort_keys=True)

    def cache_key(self, prompts: list[str]) -> str:
        """The key of the embeddings of ``prompts``: the text tower's settings and weights, the autocast in force
        (it changes the encoder's arithmetic) and the prompt strings: everything the embeddings depend on."""
        device_type = self.backbone.clip_model.positional_embedding.device.type
        autocast = (str(torch.get_autocast_dtype(device_type)) if torch.is_autocast_enabled(device_type) else None)
        text = json.dumps({"architecture": self.architecture(), "weights": self.weights_fingerprint(),
                           "autocast": autocast, "prompts": prompts})
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """N prompt strings -> open_clip token ids ``[N, context_length]`` int64 (77 for the released CLIPs)."""
        return self.tokenizer(prompts)

    def reading(self, vocabulary: list[str]) -> ClipReading:
        """What the text tower reads of each class of ``vocabulary`` (``ClipReading``): each synonym's tokens as far
        as every prompt keeps them. A template keeps ``context - 2 - prefix`` tokens of a long name (the start and
        end tokens, the template's words before the name), the text after the name being cut first."""
        tokenizer = self.tokenizer
        room = tokenizer.context_length - 2
        prefixes = [len(tokenizer.encode(template.split("{}")[0])) for template in PROMPT_TEMPLATES]
        most, least = room - min(prefixes), room - max(prefixes)  # name tokens kept: at most / in every template
        keys: list[frozenset[tuple[int, ...]]] = []
        cut: list[tuple[str, int]] = []
        for name in vocabulary:
            synonyms = set()
            for synonym in split_synonyms(name):
                tokens = tuple(tokenizer.encode(synonym))
                synonyms.add(tokens[:most])
                if len(tokens) > least:
                    cut.append((synonym.strip(), least))
            keys.append(frozenset(synonyms))
        return ClipReading(keys, cut)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        """Unnormalised text embeddings ``[N, E]`` of prompt strings, in batches of 128."""
        chunks = []
        for start in range(0, len(prompts), TEXT_BATCH):
            tokens = self.tokenize(prompts[start : start + TEXT_BATCH]).to(device)
            chunks.append(self.backbone.encode_text(tokens).float())
        return torch.cat(chunks, 0)

    def _encode_synonyms(self, prompts: list[str]) -> torch.Tensor:
        """One unit vector ``[S, E]`` (on the CPU) per synonym of ``prompts`` (`build_prompts`: the synonym's
        ``len(PROMPT_TEMPLATES)`` prompts in a row): the mean of its prompts' unit embeddings, normalised. Encoded in
        batches of TEXT_BATCH prompts and reduced as each synonym's prompts are all encoded, so that memory holds the
        synonyms' vectors, not every prompt's (20,000 names: 280,000 prompt embeddings, 1.1 GB at E = 1024)."""
        device = self.backbone.clip_model.positional_embedding.device
        templates = len(PROMPT_TEMPLATES)
        per_synonym: list[torch.Tensor] = []
        waiting: torch.Tensor | None = None  # unit prompt embeddings of synonyms not yet complete
        for start in range(0, len(prompts), TEXT_BATCH):
            batch = F.normalize(self.encode_prompts(prompts[start : start + TEXT_BATCH], device), dim=-1)
            pending = batch if waiting is None else torch.cat((waiting, batch), 0)
            complete = pending.shape[0] - pending.shape[0] % templates
            if complete:
                means = pending[:complete].view(-1, templates, pending.shape[-1]).mean(1)
                per_synonym.append(F.normalize(means, dim=-1).cpu())
            waiting = pending[complete:]
        return torch.cat(per_synonym, 0)

    def __call__(self, vocabulary: list[str]) -> TextEmbeddings:
        """``vocabulary`` (C class strings, each of comma-separated synonyms) -> ``TextEmbeddings``: ``embeddings``
        ``[S, E]`` (S = the synonyms of all classes, in class order; E = the CLIP embedding size), one unit vector
        per synonym (its 14 prompts' embeddings averaged), with ``synonym_counts`` ``[C]``. Taken from the memory
        cache (the last ``MEMORY_VOCABULARIES``), else the disk cache, else encoded by the text tower and stored in
        both. Raises ValueError for an empty vocabulary."""
        if not vocabulary:
            raise ValueError("the vocabulary is empty")
        prompts, counts = build_prompts(vocabulary)
        # The key is the prompts' (the synonyms in order), which is all the embeddings depend on; the grouping of the
        # synonyms into classes (`counts`) is this vocabulary's: "cat, kitten / dog" and "cat / kitten, dog" share
        # the embeddings, never the grouping.
        key = self.cache_key(prompts)
        embeddings = self._memory.get(key)
        if embeddings is None:
            embeddings = self.disk_cache.load(key, sum(counts))
        if embeddings is None:
            if self.on_encoding is not None:
                self.on_encoding(len(vocabulary), len(prompts))
            embeddings = self._encode_synonyms(prompts)
            self.disk_cache.save(key, embeddings, vocabulary)
        self._memory[key] = embeddings
        self._memory.move_to_end(key)
        while len(self._memory) > MEMORY_VOCABULARIES:
            self._memory.popitem(last=False)
        return TextEmbeddings(list(vocabulary), embeddings, counts, self.backbone.logit_scale())
