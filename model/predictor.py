"""The public inference API: a video predictor that consumes frames and yields tracked, classified outputs.

    model = load_model("clipvis-lvis-r50")
    predictor = VideoPredictor(model, ["cat", "dog"], device="cuda", precision="bf16")
    session = predictor.new_video()
    for batch in batches:                       # uint8 RGB [B, H, W, 3]
        for frame in session.push(batch):       # TrackedFrame, in frame order
            ...                                 # frame.mask_runs: COCO run lengths of the Q track masks (compact)
                                                # frame.masks: bool [Q, H, W] in track order (decoded on access)
    video = session.finish(max_tracks=50)       # VideoInstances
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterable, KeysView
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F

from clipvis.model.call_checks import caller_stacklevel, checked_flag, checked_path
from clipvis.model.clipvis import ClipVis
from clipvis.model.devices import resolve_device
from clipvis.model.errors import VocabularyError
from clipvis.model.mask_runs import MaskRuns, column_major_runs, threshold_runs
from clipvis.model.mask_upsampling import ComposedMaskResize
from clipvis.model.preprocess import FrameGeometry, FramePreprocessor, frame_batch
from clipvis.model.scoring import StreamingVideoScorer, positive_mask_statistics
from clipvis.model.temporal_matcher import MatchResult, TemporalMatcher
from clipvis.model.text_classifier import TextClassifier, TextEmbeddings
from clipvis.model.transfer import to_device
from clipvis.model.vocabulary import (
    class_name,
    name_key,
    repeated_class_names,
    shared_names,
    split_synonyms,
    strip_name,
    stripped_synonyms,
)

# Read-only tables (a change would alter every predictor of the process): VideoPredictor's parameters choose.
PRECISIONS = MappingProxyType({"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16})
# What a model whose weights are not float32 is told (precision chooses the compute type, not the weights)
KEEP_FLOAT32 = "keep them float32 (model.float()) and choose the compute type with precision='fp16' or 'bf16'"
# Elements of float work per chunk of full-resolution masks (interpolated logits of a chunk of queries): bounds the
# per-frame memory whatever the resolution. The CPU wants cache-sized chunks, a GPU few kernel launches. The default
# of VideoPredictor's mask_chunk_elements.
MASK_CHUNK_ELEMENTS = MappingProxyType({"cpu": 2**22, "cuda": 2**27})
DEFAULT_MASK_CHUNK_ELEMENTS = 2**24
# The most frames the network runs at once (VideoPredictor's batch_frames): a push of more runs in batches of this
# many, so its memory does not grow with the frames pushed at once (a whole video in one push: 3.9 GB for 256 frames
# of the tiny test model at 240x320). `clipvis segment` gives its --batch-frames instead.
DEFAULT_BATCH_FRAMES = 8
# What VideoSession.timings (VideoInstances.timings) measure, in seconds summed over the pushes:
#   preprocess: the frames made the network's input (resize, normalise, pad); model: the network; classify: mask-pooled
#   classification; masks: the full-resolution masks' run lengths; match: the temporal matcher (on the host);
#   score: the scorer's running sums; collect: the rest of push, the copies between host and device (the query
#   embeddings to the host, the permutations back, the per-frame values in track order; on CUDA such a copy also
#   waits for the device's queued work), and building the TrackedFrames.
TIMING_STAGES = ("preprocess", "model", "classify", "masks", "match", "score", "collect")


@dataclass
class TrackedFrame:
    """One frame after temporal matching, in track order (track j = a fixed identity over the video)."""

    index: int  # 0-based position among the frames pushed
    mask_runs: MaskRuns  # COCO run lengths of the Q track masks at the original resolution (host)
    object_probs: torch.Tensor  # [Q] per-frame object probability
    class_probs: torch.Tensor  # [Q, C] per-frame class probabilities
    ious: torch.Tensor  # [Q] predicted mask IoU
    match: MatchResult

    @property
    def masks(self) -> torch.Tensor:
        """``[Q, H, W]`` bool at the original resolution (CPU), decoded from ``mask_runs`` on each access."""
        return self.mask_runs.to_masks()


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's parameters (the CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _runs_to_host(counts: torch.Tensor, lengths: torch.Tensor, size: tuple[int, int]) -> MaskRuns:
    """Run lengths computed on a device -> host MaskRuns; on CUDA a non-blocking copy into pinned memory that the
    consumer waits for (``MaskRuns.wait``), so the device goes on with the next frame meanwhile."""
    if counts.device.type != "cuda":
        return MaskRuns(counts.cpu(), lengths.cpu(), size)
    host_counts = torch.empty(counts.shape, dtype=counts.dtype, pin_memory=True)
    host_lengths = torch.empty(lengths.shape, dtype=lengths.dtype, pin_memory=True)
    host_counts.copy_(counts, non_blocking=True)
    host_lengths.copy_(lengths, non_blocking=True)
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(counts.device))  # the copies' stream, whichever device is current
    return MaskRuns(host_counts, host_lengths, size, ready)


@dataclass
class VideoInstance:
    """One output instance: a track with a class and a score (a track may appear with several classes)."""

    track_id: int  # 0-based track (query) index; the output files number their tracks 1.. in result order instead
    label: int  # 0-based class index into the vocabulary
    score: float  # final score (fused score x mask score)
    fused_score: float  # s_{q,c}
    mask_score: float
    suppressed_frames: np.ndarray  # [T] bool: frames whose mask is emptied (official per-frame suppression)

    def __eq__(self, other: object) -> bool:
        """Field by field, ``suppressed_frames`` by value (the generated ``==`` raised "the truth value of an array
        ... is ambiguous")."""
        if not isinstance(other, VideoInstance):
            return NotImplemented
        return (
            (self.track_id, self.label, self.score, self.fused_score, self.mask_score)
            == (other.track_id, other.label, other.score, other.fused_score, other.mask_score)
            and np.array_equal(self.suppressed_frames, other.suppressed_frames)
        )


@dataclass
class VideoInstances:
    """A video's result: ``instances`` ranked (exact mode: the official unsorted order), each over the
    ``num_frames`` frames (``VideoInstance.suppressed_frames`` ``[T]``, T = ``num_frames``); ``geometry``: the
    frames' size and the network's input size (``finish`` refuses a video without frames, so it is always set; the
    type allows None for results built by hand); ``timings`` are seconds per stage (``TIMING_STAGES``). ``==``
    compares the results, not the timings: two runs of one video with the same settings compare equal."""

    vocabulary: list[str]
    num_frames: int
    geometry: FrameGeometry | None
    instances: list[VideoInstance]
    timings: dict[str, float] = field(default_factory=dict, compare=False)  # measurements: not part of ``==``

    @property
    def class_names(self) -> list[str]:
        """Each class's name, as `clipvis segment` names its categories: the first of its synonyms (``"car,
        automobile"`` -> ``"car"``); ``video.class_names[instance.label]``. ``vocabulary`` holds the classes as
        given, synonyms included."""
        return [class_name(name) for name in self.vocabulary]


@dataclass(frozen=True)
class ActiveVocabulary:
    """A vocabulary with its embeddings, replaced as one object (``VideoPredictor.set_vocabulary``) and captured
    once by each session, so the names and the embeddings always belong together."""

    names: tuple[str, ...]
    text: TextEmbeddings  # host
    text_on_device: TextEmbeddings  # on the predictor's device


class VideoPredictor:
    """Holds a model, a vocabulary (text classifier) and the run settings; makes one session per video.

    ``exact=True`` reproduces the official evaluator: PIL resize on the CPU and the unsorted top-N selection of
    ``detections_per_video`` results with no threshold. Class names must differ (first synonym, case aside) unless
    ``allow_duplicate_names=True``: a benchmark's category list as the official code takes it, where repeated names
    are classes of their own (told apart by their index, ``instance.label``, only). ``mask_chunk_elements``: the
    float elements each chunk of full-resolution masks may take (memory per chunk against kernel launches); by
    default the device's ``MASK_CHUNK_ELEMENTS``. It changes the time and memory a frame takes, never its masks.
    ``batch_frames``: the most frames the network runs at once (default ``DEFAULT_BATCH_FRAMES``, 8); a push of more
    runs them in batches of that many, in order, so a push's memory does not grow with its frames (its results are
    those of pushing them that many at a time: on the CPU a batch's size changes the order of float sums, as the
    README says of ``--batch-frames``; exact mode included).
    ``on_text_encoding(classes, prompts)`` is called before a vocabulary's text is encoded (one found in neither the
    memory nor the disk cache): 20,000 names take minutes on a CPU.

    The predictor runs ``model`` itself, not a copy: the model is moved to ``device`` (by default the device it is
    on: ``"auto"`` picks CUDA where there is a GPU) and put in eval mode. Predictors of one model share it, so they
    must use one device; a push after the model was moved elsewhere raises RuntimeError. A predictor may be used by
    several threads at once, each with its own session (a session is one thread's at a time).
    """

    def __init__(
        self,
        model: ClipVis,
        vocabulary: Iterable[str],
        device: str | torch.device | None = None,
        precision: str = "fp32",
        exact: bool = False,
        cache_dir: str | Path | None = None,
        text_cache: bool = True,
        allow_duplicate_names: bool = False,
        mask_chunk_elements: int | None = None,
        on_text_encoding: Callable[[int, int], None] | None = None,
        batch_frames: int | None = None,
    ) -> None:
        if isinstance(model, str | os.PathLike):
            raise TypeError(f"VideoPredictor takes a model, not a path ({os.fspath(model)!r}): load it first with "
                            "model = clipvis.load_model(path_or_name), then VideoPredictor(model, vocabulary)")
        if not isinstance(model, ClipVis):
            raise TypeError(f"VideoPredictor takes a ClipVis model (clipvis.load_model or create_model), not "
                            f"{type(model).__name__}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        # a flag given as a string ("False", "no") is true: taken only as True or False
        exact = checked_flag(exact, "exact")
        text_cache = checked_flag(text_cache, "text_cache")
        allow_duplicate_names = checked_flag(allow_duplicate_names, "allow_duplicate_names")
        for name, count in (("mask_chunk_elements", mask_chunk_elements), ("batch_frames", batch_frames)):
            if count is not None and (isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1):
                raise ValueError(f"{name} must be a whole number of at least 1, not {count!r}")
        # where the model is, or where asked ("auto": CUDA where there is a GPU), checked before anything moves
        device = model_device(model) if device is None else resolve_device(device)
        wide = sorted({str(p.dtype) for p in model.parameters() if p.is_floating_point() and p.dtype != torch.float32})
        if wide:
            raise ValueError(f"the model's weights are {', '.join(wide)}: {KEEP_FLOAT32}")
        if cache_dir is not None:
            # "~/cache" (a literal ./~ folder was made)
            cache_dir = Path(checked_path(cache_dir, "cache_dir", "a folder's path")).expanduser()
        self.device = device
        self.model = model.to(self.device).eval()
        self._model_device = model_device(self.model)  # with its index (device "cuda" is one GPU): see push
        self.precision = precision
        self.exact = exact
        self.mask_chunk_elements = int(mask_chunk_elements or MASK_CHUNK_ELEMENTS.get(self.device.type,
                                                                                    DEFAULT_MASK_CHUNK_ELEMENTS))
        self.batch_frames = int(batch_frames or DEFAULT_BATCH_FRAMES)
        cfg = model.config
        self.preprocessor = FramePreprocessor(
            cfg.min_size_test, cfg.max_size_test, cfg.size_divisibility, cfg.pixel_mean, cfg.pixel_std, exact=exact
        )
        self.text_classifier = TextClassifier(model.backbone, cache_dir=cache_dir, use_disk_cache=text_cache,
                                              on_encoding=on_text_encoding)
        # A benchmark's category list may repeat a name ("car" and "Car"): the official code builds one class per
        # entry all the same (the repeated ones score alike), and results are kept by class index, not by name.
        self.allow_duplicate_names = allow_duplicate_names
        self.set_vocabulary(vocabulary)

    def set_vocabulary(self, vocabulary: Iterable[str]) -> None:
        """Classify with these class names from the next video session on (a session keeps the vocabulary it
        started with). Atomic: the embeddings are computed first and replace the old vocabulary together with the
        names, so an error or Ctrl-C while encoding leaves the previous vocabulary in place, whole."""
        if isinstance(vocabulary, (str, bytes)):
            raise TypeError(f"the vocabulary must be a list of class names, not one string ({vocabulary!r}: "
                            "write ['cat', 'dog'])")
        if not isinstance(vocabulary, Iterable):
            raise TypeError(f"the vocabulary must be a list of class names, not {type(vocabulary).__name__}")
        if isinstance(vocabulary, AbstractSet) and not isinstance(vocabulary, KeysView):
            # a set's order (the class ids) would change from run to run; a dict's keys keep their insertion order
            raise TypeError(f"the vocabulary must be class names in class-id order, not a {type(vocabulary).__name__}"
                            " (its order changes from run to run): sorted(names), or list(names) in the order you want")
        vocabulary = [str(name) if isinstance(name, str) else name for name in vocabulary]  # numpy's str_ -> str
        if not all(isinstance(name, str) for name in vocabulary):
            kinds = sorted({type(name).__name__ for name in vocabulary if not isinstance(name, str)})
            raise TypeError(f"class names must be strings, not {', '.join(kinds)}")
        names = [stripped_synonyms(name) for name in vocabulary]
        if not names:
            raise VocabularyError("the vocabulary must be a non-empty list of non-empty class names")
        if (empty := next((i for i, name in enumerate(names) if not name), None)) is not None:
            given = vocabulary[empty]
            why = ("a file split on newlines ends in '': drop the empty lines" if given == "" else
                   "nothing but spaces or invisible characters: drop it")
            raise VocabularyError(f"the vocabulary must be a non-empty list of non-empty class names: entry "
                                  f"{empty + 1} of {len(names)} is {given!r} ({why})")
        for name in names:
            if any(not strip_name(synonym) for synonym in split_synonyms(name)):  # "a photo of a ." prompts
                raise VocabularyError(f"empty synonym in the class {name!r} (synonyms are separated by commas)")
        # as `segment --vocab` compares them: case aside, composed and decomposed accents alike; a synonym in two
        # classes too (`["cat, dog", "dog"]`)
        classes = [[strip_name(synonym) for synonym in split_synonyms(name)] for name in names]
        shared = shared_names(classes)
        if shared and not self.allow_duplicate_names:
            duplicates = sorted(name_key(name) for name, _ in repeated_class_names(shared, classes))
            if duplicates:  # a class name repeated: the first few named (a list of 3,000 repeated gave 35 KB)
                more = f", ... ({len(duplicates)} in all)" if len(duplicates) > 5 else ""
                raise VocabularyError(f"duplicate class names in the vocabulary (case aside): "
                                      f"{', '.join(duplicates[:5])}{more}")
            shown = "; ".join(f"{name_key(name)} ({' / '.join(repr(names[i]) for i in classes)})"
                              for name, classes in shared[:3])
            raise VocabularyError(f"class names or synonyms in more than one class of the vocabulary (case aside): "
                                  f"{shown}{'; ...' if len(shared) > 3 else ''}")
        reading = self.text_classifier.reading(names)
        if not self.allow_duplicate_names and (alike := reading.alike(names)):
            # the same embeddings: every object would be found once under each name, with the same score
            shown = "; ".join(" / ".join(repr(name) if len(name) <= 60 else f"{name[:60]!r}..." for name in group)
                              for group in alike[:3])
            raise VocabularyError(f"class names that CLIP reads alike (its tokenizer ignores case, repeated spaces and "
                                  f"HTML escapes, and reads the first {self.text_classifier.tokenizer.context_length}"
                                  f" tokens of a prompt): {shown}{'; ...' if len(alike) > 3 else ''}")
        for synonym, kept in reading.cut[:3]:
            warnings.warn(f"the class name {synonym[:60]!r}{'...' if len(synonym) > 60 else ''} is longer than CLIP "
                          f"reads: some prompts keep only its first {kept} tokens (about as many words)",
                          stacklevel=caller_stacklevel())
        if len(reading.cut) > 3:
            warnings.warn(f"{len(reading.cut) - 3} more class names are longer than CLIP reads",
                          stacklevel=caller_stacklevel())
        # The text tower runs in fp32 at every precision, whatever autocast the caller has active (an outer bf16
        # autocast gave an fp32 predictor other embeddings, and scores).
        with torch.no_grad(), self.own_precision():
            text = self.text_classifier(names)
        # What `push` classifies with: on the model's device once, not copied there at every batch. The names and
        # their embeddings are computed first, then swapped in by one assignment: a session started meanwhile (by
        # another thread) or an interrupted encoding (Ctrl-C) never sees new names with old embeddings.
        self._vocabulary = ActiveVocabulary(tuple(names), text, text.to(self.device))

    @property
    def vocabulary(self) -> list[str]:
        """The class names the next session classifies with (a copy: change them with :meth:`set_vocabulary`)."""
        return list(self._vocabulary.names)

    @property
    def text(self) -> TextEmbeddings:
        """The vocabulary's text embeddings (host)."""
        return self._vocabulary.text

    @property
    def text_on_device(self) -> TextEmbeddings:
        """The vocabulary's text embeddings on the model's device (what ``push`` classifies with)."""
        return self._vocabulary.text_on_device

    def new_video(self) -> VideoSession:
        """A session for one video: push its frames in order, then ``finish()`` for its instances. The session keeps
        the vocabulary current when it starts (a later :meth:`set_vocabulary` is for the sessions after it); start a
        new session for every video."""
        # read once here (one attribute read: names and embeddings together), whatever set_vocabulary does later
        return VideoSession(self, self._vocabulary)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The network's compute type (``precision``): autocast to fp16/bf16, or none for fp32 (a caller's autocast
        disabled: see :meth:`own_precision`)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    def own_precision(self) -> contextlib.ExitStack:
        """Disables any autocast the caller has active, on the host and on the predictor's device, for the span of a
        push or finish: everything runs at the predictor's ``precision`` (a caller's ``torch.autocast("cpu",
        dtype=torch.bfloat16)`` ran an fp32 predictor in bf16, with other results); :meth:`autocast` enables the
        predictor's own around the network. :meth:`set_vocabulary` encodes the text under it too."""
        stack = contextlib.ExitStack()
        for device_type in dict.fromkeys(("cpu", self.device.type)):
            if torch.amp.is_autocast_available(device_type):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        return stack


class VideoSession:
    """Streams one video: frames in, tracked frames out; memory stays bounded whatever the video length, and
    whatever the frames pushed at once (the network takes the predictor's ``batch_frames`` at a time).

    Push a video's frames in order, from one thread at a time: a session is not thread-safe (two threads pushing
    to one session would interleave the matcher's memory and the scores). Different videos take different
    sessions (``predictor.new_video()``). A video given up part way: :meth:`close` it (or use the session as a
    context manager), so that its temporary scores file goes at once.
    """

    def __init__(self, predictor: VideoPredictor, vocabulary: ActiveVocabulary) -> None:
        self.predictor = predictor
        # The vocabulary of the whole video (names and embeddings together, as ``new_video`` captured it), whatever
        # the predictor is given meanwhile (set_vocabulary).
        self.vocabulary = list(vocabulary.names)
        self.text = vocabulary.text_on_device
        self.finished = False
        self.closed = False  # given up by close() before finish()
        self.failure: str | None = None  # the error that stopped a push part way (see push), as text
        cfg = predictor.model.config
        self.matcher = TemporalMatcher(cfg.memory_length, cfg.top_k)
        self.scorer = StreamingVideoScorer()
        self.geometry: FrameGeometry | None = None
        self._composed_resize: ComposedMaskResize | None = None  # the CPU's mask resize, built at the first frame
        self.num_frames = 0
        # Seconds spent in push, per stage (see VideoInstances.timings; run.json's model_* timings)
        self.timings = {name: 0.0 for name in TIMING_STAGES}

    def push(self, frames: np.ndarray | torch.Tensor) -> list[TrackedFrame]:
        """frames ``[B, H, W, 3]`` uint8 RGB (a single ``[H, W, 3]`` frame is accepted) -> B tracked frames.

        Gradients are never recorded, and the caller's ``torch.inference_mode()`` does not carry into the session:
        its state and the frames returned are ordinary tensors, so pushes inside and outside inference mode may
        follow one another (a running sum made an inference tensor by one push cannot be added to in place by a
        later one outside it), and the returned tensors may be changed in place.

        More frames than the predictor's ``batch_frames`` run through the network that many at a time, in order
        (memory bounded whatever the frames pushed at once); the frames returned are all of them.

        An error before the session's state changes (bad frames, a frame of another size, the network running out
        of memory on the push's first batch) leaves the session as it was: push again. One after (in the temporal
        matcher, the masks, the scores, or a Ctrl-C there; anything on a later batch of the push, whose earlier
        batches' frames were taken but not returned) would leave the matcher's memory and the scores out of step
        with the frames returned, so the session is marked failed and every later ``push`` or ``finish`` raises
        RuntimeError: start the video again with ``predictor.new_video()``. Frames that are not uint8 raise
        TypeError; a shape other than ``[B, H, W, 3]``, an empty batch or a frame of another size than the video's
        raise ValueError (each message says how to convert, where it can).
        """
        with torch.inference_mode(False), torch.no_grad(), self.predictor.own_precision():
            return self._push(frames)

    def _push(self, frames: np.ndarray | torch.Tensor) -> list[TrackedFrame]:
        if self.finished:
            raise RuntimeError("this video's session is finished: start the next video with predictor.new_video()")
        self._check_not_failed()
        where = model_device(self.predictor.model)
        if where != self.predictor._model_device:
            raise RuntimeError(f"the model is on {where} but this predictor runs on {self.predictor.device}: it was "
                               f"moved since (another VideoPredictor of the same model on {where}?); predictors of "
                               "one model share it and must use one device")
        first = next(self.predictor.model.parameters(), None)  # model.half() converts them all: one is enough
        if first is not None and first.dtype != torch.float32:
            raise RuntimeError(f"the model's weights are {first.dtype} since this predictor was made (model.half()?): "
                               f"{KEEP_FLOAT32}")
        frames = frame_batch(frames)
        step = self.predictor.batch_frames
        tracked: list[TrackedFrame] = []
        for batch_start in range(0, frames.shape[0], step):
            try:
                tracked += self._push_batch(frames[batch_start : batch_start + step])
            except BaseException as error:
                if tracked and self.failure is None:  # the push's earlier batches are in the matcher and the scores
                    self.failure = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                raise
        return tracked

    def _push_batch(self, frames: np.ndarray | torch.Tensor) -> list[TrackedFrame]:
        """At most ``batch_frames`` checked frames ``[B, H, W, 3]`` -> B tracked frames: :meth:`push`'s work."""
        predictor = self.predictor
        model = predictor.model
        start = time.perf_counter()
        images, geometry = predictor.preprocessor(frames, predictor.device)
        if self.geometry is not None and geometry != self.geometry:
            raise ValueError(f"frame {self.num_frames} (0-based, as pushed): size {geometry.original} differs from "
                             f"the video's {self.geometry.original}")
        t1 = time.perf_counter()
        with predictor.autocast():
            outputs = model(images)
        t2 = time.perf_counter()
        # Pooling and classification commute with the track permutation: do them for the whole batch.
        class_probs = model.classify(outputs.clip_dense, outputs.mask_logits, self.text).softmax(-1)
        t3 = time.perf_counter()
        mask_logits_all = outputs.mask_logits.float()  # out of memory here still leaves the session as it was
        embeds_host = outputs.query_embeds.float().cpu()  # the matcher works on the host: one copy per batch
        t4 = time.perf_counter()
        # From here on the session's state changes (the matcher's memory, the scorer's sums, the frame count): an
        # error or Ctrl-C part way would leave them out of step, so the session is marked failed and refuses more.
        try:
            self.geometry = geometry
            matches = [self.matcher.match(embeds) for embeds in embeds_host]
            t5 = time.perf_counter()
            # Per frame, everything stays on the device in track order; what the host needs crosses once per batch
            # (a copy to or from the host waits for the device: once per frame, it would stall it between frames).
            perms = to_device(torch.stack([m.permutation for m in matches]), mask_logits_all.device)  # [B, Q]
            per_frame, mask_runs = [], []
            mask_time = 0.0
            for b, perm in enumerate(perms):
                object_logits = outputs.object_logits[b].float()[perm]
                track_logits = mask_logits_all[b][perm]
                per_frame.append(torch.cat([
                    object_logits,  # [Q, 2]
                    object_logits.softmax(-1)[:, :1],  # [Q, 1] object probability
                    outputs.ious[b].float()[perm][:, None],  # [Q, 1]
                    positive_mask_statistics(track_logits),  # [Q, 2]
                    class_probs[b][perm].float(),  # [Q, C]
                ], 1))
                m0 = time.perf_counter()
                mask_runs.append(self._full_resolution_runs(track_logits))
                mask_time += time.perf_counter() - m0
            host = torch.stack(per_frame).cpu()  # [B, Q, 6 + C]
            object_logits, object_probs, ious, mask_statistics, probs = (
                part.contiguous() for part in host.split([2, 1, 1, 2, host.shape[-1] - 6], -1)
            )
            t6 = time.perf_counter()
            self.scorer.add_frames(object_logits, probs, ious[..., 0], mask_statistics)
            t7 = time.perf_counter()
            tracked = []
            for b, (match, runs) in enumerate(zip(matches, mask_runs, strict=True)):
                tracked.append(
                    TrackedFrame(
                        index=self.num_frames,
                        mask_runs=runs,
                        object_probs=object_probs[b, :, 0],
                        class_probs=probs[b],
                        ious=ious[b, :, 0],
                        match=match,
                    )
                )
                self.num_frames += 1
            t8 = time.perf_counter()
            self.timings["preprocess"] += t1 - start
            self.timings["model"] += t2 - t1
            self.timings["classify"] += t3 - t2
            self.timings["masks"] += mask_time
            self.timings["match"] += t5 - t4
            self.timings["score"] += t7 - t6
            # the copies to and from the host, the per-frame values in track order, the TrackedFrames
            self.timings["collect"] += (t4 - t3) + (t6 - t5 - mask_time) + (t8 - t7)
            return tracked
        except BaseException as error:
            self.failure = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise

    def close(self) -> None:
        """Give the video up: its per-frame scores (a temporary file past 64 MiB, which long videos reach) are let
        go now rather than when the session is garbage collected; ``push`` and ``finish`` refuse afterwards. After
        ``finish`` (which lets them go itself) it does nothing."""
        if not self.finished:
            self.closed = True
        self.scorer.close()

    def __enter__(self) -> VideoSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _check_not_failed(self) -> None:
        if self.closed:
            raise RuntimeError("this video's session was closed before it finished: start the video again with "
                               "predictor.new_video()")
        if self.failure is not None:
            raise RuntimeError(f"this video's session stopped with an error mid-push ({self.failure}): its tracks "
                               "and scores are incomplete; start a new one with predictor.new_video()")

    def _full_resolution_runs(self, mask_logits: torch.Tensor) -> MaskRuns:
        """One frame's ``[Q, Hp/4, Wp/4]`` logits -> the COCO run lengths of its ``[Q, H, W]`` masks, as the
        official evaluator makes them: bilinear to the padded size, crop to the resized size, bilinear to the
        original size, threshold at 0. On the CPU (unless ``exact``) the two resizes run composed into one
        (``ComposedMaskResize``: the same weights, float rounding aside, several times faster).

        Done on the model's device in chunks of queries (the predictor's ``mask_chunk_elements``), so memory does not
        grow with queries x pixels; only the run lengths go to the host (pinned memory and a non-blocking copy on
        CUDA: the returned ``MaskRuns`` carries an event to wait on).
        """
        geo = self.geometry
        assert geo is not None
        queries = mask_logits.shape[0]
        device = mask_logits.device
        budget = self.predictor.mask_chunk_elements
        composed = self._composed_mask_resize(mask_logits) if device.type == "cpu" else None
        if composed is None:  # float logits at the padded and at the original size
            per_query = geo.padded[0] * geo.padded[1] + geo.original[0] * geo.original[1]
        else:  # bool masks at the original size (a quarter of a float each) and the product along the height
            per_query = geo.original[0] * geo.original[1] // 4 + geo.original[0] * mask_logits.shape[2]
        step = max(1, budget // per_query)
        counts, lengths = [], []
        for start in range(0, queries, step):  # chunks of queries: bounded temporary memory
            chunk = mask_logits[start : start + step]
            if composed is not None:
                chunk_counts, chunk_lengths = column_major_runs(composed.positive_column_major(chunk))
            else:
                x = F.interpolate(chunk[:, None], size=geo.padded, mode="bilinear", align_corners=False)
                x = x[..., : geo.resized[0], : geo.resized[1]]
                if tuple(geo.resized) != tuple(geo.original):  # a same-size bilinear resize returns its input
                    x = F.interpolate(x, size=geo.original, mode="bilinear", align_corners=False)
                chunk_counts, chunk_lengths = threshold_runs(x[:, 0])
            counts.append(chunk_counts)
            lengths.append(chunk_lengths)
        all_counts = torch.cat(counts) if len(counts) > 1 else counts[0]
        all_lengths = torch.cat(lengths) if len(lengths) > 1 else lengths[0]
        return _runs_to_host(all_counts, all_lengths, tuple(geo.original))

    def _composed_mask_resize(self, mask_logits: torch.Tensor) -> ComposedMaskResize | None:
        """The CPU's composed resize for this video's frame size (built once), or None where the official two
        resizes run: an ``exact`` predictor."""
        if self.predictor.exact:
            return None
        geo = self.geometry
        assert geo is not None
        resize = self._composed_resize
        if resize is None or resize.geometry != geo or resize.mask_size != tuple(mask_logits.shape[1:]):
            resize = self._composed_resize = ComposedMaskResize(tuple(mask_logits.shape[1:]), geo)
        return resize

    def finish(self, max_tracks: int | None = None, score_threshold: float = 0.0) -> VideoInstances:
        """Select the video's instances. Exact mode: the official unsorted top-``detections_per_video``.
        Otherwise the official candidates ranked by final score: the best ``max_tracks`` (default
        ``detections_per_video``) with a score of at least ``score_threshold``.

        ValueError when no frame was pushed, or for settings that are not a whole number of at least 1 / a finite
        number (or any at all in exact mode); RuntimeError after ``finish`` or ``close``, or once a push failed."""
        with self.predictor.own_precision():  # at the predictor's precision, whatever autocast the caller has
            return self._finish(max_tracks, score_threshold)

    def _finish(self, max_tracks: int | None, score_threshold: float) -> VideoInstances:
        if self.finished:
            raise RuntimeError("this video's session is finished already: its instances were returned then")
        self._check_not_failed()
        if self.num_frames == 0:
            raise ValueError("no frame was pushed")
        if max_tracks is not None and (isinstance(max_tracks, bool) or not isinstance(max_tracks, numbers.Integral)
                                       or max_tracks < 1):
            raise ValueError(f"max_tracks must be a whole number of at least 1, not {max_tracks!r}")
        try:  # a number, or anything that is one (a numpy or torch scalar)
            threshold = None if isinstance(score_threshold, bool | str | bytes) else float(score_threshold)
        except (TypeError, ValueError):
            threshold = None
        if threshold is None or not math.isfinite(threshold):
            raise ValueError(f"score_threshold must be a number, not {score_threshold!r}")
        if self.predictor.exact and (max_tracks is not None or threshold != 0.0):
            raise ValueError("exact=True selects as the official evaluator does (its top "
                             f"{self.predictor.model.config.detections_per_video}, unsorted, no threshold): "
                             "leave out max_tracks and score_threshold, or use a predictor with exact=False")
        cfg = self.predictor.model.config
        if self.predictor.exact:
            selection = self.scorer.select(top_n=cfg.detections_per_video, official_order=True)
        else:
            max_tracks = max_tracks or cfg.detections_per_video
            selection = self.scorer.select(
                top_n=max(max_tracks, cfg.detections_per_video),
                score_threshold=threshold,
                max_instances=max_tracks,
            )
        self.finished = True
        self.scorer.close()
        instances = [
            VideoInstance(
                track_id=int(selection.queries[i]),
                label=int(selection.labels[i]),
                score=float(selection.scores[i]),
                fused_score=float(selection.fused_scores[i]),
                mask_score=float(selection.mask_scores[i]),
                suppressed_frames=selection.suppressed[i].numpy().copy(),
            )
            for i in range(selection.queries.shape[0])
        ]
        return VideoInstances(list(self.vocabulary), self.num_frames, self.geometry, instances,
                              dict(self.timings))
