"""Weighted open-vocabulary classification and instance selection (docs/fidelity.md, "Scoring and selection"), quirks
included.

:class:`StreamingVideoScorer` keeps running sums frame by frame (per-frame class probabilities are spilled to a
temporary file) and selects at the end, for videos of any length. The official offline evaluator's form of the same
computation, on whole-video tensors, is the tests' reference (``tests/model/test_scoring.py``).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import IO

import numpy as np
import torch

from clipvis.model.call_checks import check_tensors


@dataclass
class InstanceSelection:
    """The selected (track, class) pairs of a video, N of them."""

    queries: torch.Tensor  # [N] long, track index
    labels: torch.Tensor  # [N] long, 0-based class index
    fused_scores: torch.Tensor  # [N] s_{q,c}
    suppressed: torch.Tensor  # [N, T] bool: frame mask emptied by the per-frame suppression quirk
    mask_scores: torch.Tensor  # [N]
    scores: torch.Tensor  # [N] final instance score = s * mask score


def _suppression(
    fused: torch.Tensor, probs_sel: torch.Tensor, object_prob_sel: torch.Tensor
) -> torch.Tensor:
    """QUIRK: r = sqrt(sigmoid(p) * o_t) with the sigmoid applied to a probability; suppressed if r < 0.1 s.

    fused ``[N]``, probs_sel ``[N, T]``, object_prob_sel ``[N, T]`` -> bool ``[N, T]``.
    """
    r = (probs_sel.sigmoid() * object_prob_sel).sqrt()
    return r < 0.1 * fused[:, None]


class SpillError(OSError):
    """The per-frame scores' temporary file cannot be created or written (a full temporary folder); ``str()`` is
    one line naming that folder and $TMPDIR, which sets it, as the cause rather than the output folder."""

    def __init__(self, directory: str, cause: OSError) -> None:
        reason = cause.strerror or str(cause)
        super().__init__(cause.errno, f"scores' temporary file in {directory} (TMPDIR): {reason}")

    def __str__(self) -> str:
        return str(self.strerror)


class FrameSpill:
    """Append-only store of equally shaped float32 arrays, one per frame; spills to a temp file past a budget
    (``directory``, default the temporary folder). A failure to create or write that file raises SpillError."""

    def __init__(self, memory_budget_bytes: int = 64 << 20, directory: str | None = None) -> None:
        self.budget = memory_budget_bytes
        self.directory = directory
        self._chunks: list[np.ndarray] = []
        self._bytes = 0
        self._file: IO[bytes] | None = None
        self._shape: tuple[int, ...] | None = None
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=np.float32)
        if self._shape is None:
            self._shape = array.shape
        elif array.shape != self._shape:
            raise ValueError(f"frame array shape {array.shape} != {self._shape}")
        self._chunks.append(array)
        self._bytes += array.nbytes
        self._count += 1
        if self._bytes > self.budget:
            self._flush()

    def _flush(self) -> None:
        directory = self.directory or tempfile.gettempdir()
        try:
            if self._file is None:  # unlinked from the start: a killed process leaves no file in the temp folder
                # unbuffered: a failed write leaves nothing behind to fail again when the file is closed
                self._file = tempfile.TemporaryFile(prefix="clipvis-spill-", suffix=".f32", dir=directory,
                                                    buffering=0)
            for chunk in self._chunks:
                _write_all(self._file, memoryview(chunk).cast("B"))
        except OSError as error:  # a full or failing temp disk, named as such
            raise SpillError(directory, error) from None
        self._chunks, self._bytes = [], 0

    def read(self) -> np.ndarray:
        """All frames as ``[T, *shape]`` (a read-only memory map once spilled)."""
        if self._shape is None:
            return np.zeros((0,), dtype=np.float32)
        if self._file is None:
            return np.stack(self._chunks)
        self._flush()
        return np.memmap(self._file, dtype=np.float32, mode="r", shape=(self._count, *self._shape))

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # the file is thrown away: nothing to lose
                pass
            self._file = None
        self._chunks = []

    def __del__(self) -> None:
        self.close()


def _write_all(file: IO[bytes], data: memoryview) -> None:
    """All of ``data`` to an unbuffered file, whose writes may be partial."""
    while data:
        written = file.write(data)
        if not written:
            raise OSError(0, "short write")
        data = data[written:]


def positive_mask_statistics(mask_logits: torch.Tensor) -> torch.Tensor:
    """``[Q, h, w]`` mask logits -> ``[Q, 2]`` float32 on their device: per mask, the sum of the sigmoid over its
    positive pixels (logit > 0) and the number of those pixels; the mask score's numerator and denominator."""
    positive = mask_logits > 0
    values = mask_logits.float().sigmoid()
    values.mul_(positive)  # in place: the same products as `sigmoid * positive`, without a second [Q, h, w] buffer
    mask_sum = values.flatten(1).sum(1)
    pixels = positive[0].numel() if positive.shape[0] else 0
    # Counted in float32 where every partial sum is an integer float32 holds exactly (the same values as an int64
    # count converted), which skips the int64 accumulation: 720p stride-4 masks, 100 queries, 29-34 -> 17-18 ms
    mask_count = positive.flatten(1).sum(1, dtype=torch.float32) if pixels <= 1 << 24 else \
        positive.flatten(1).sum(1).float()
    return torch.stack([mask_sum, mask_count], 1)


class StreamingVideoScorer:
    """Running-sum form of the video scoring.

    Per frame it keeps, for each track, the class probabilities, the object probability and the positive-mask
    statistics (``[Q, C + 3]`` floats) in a FrameSpill, which moves to a temporary file past its memory budget:
    memory stays bounded whatever the video length.
    """

    def __init__(self, spill_budget_bytes: int = 64 << 20) -> None:
        self.num_frames = 0
        self._object_logit_sum: torch.Tensor | None = None  # [Q, 2]
        self._sqrt_sum: torch.Tensor | None = None  # [Q, C]
        self._frames = FrameSpill(spill_budget_bytes)  # per frame [Q, C + 3]: probs, object prob, mask sum, count

    def add_frame(
        self,
        object_logits: torch.Tensor,
        class_probs: torch.Tensor,
        ious: torch.Tensor,
        mask_logits: torch.Tensor,
    ) -> None:
        """One aligned frame: object_logits ``[Q, 2]``, class_probs ``[Q, C]``, ious ``[Q]``,
        mask_logits ``[Q, h, w]`` (stride 4; only their positive-pixel statistics are kept). Public API, for a caller
        that runs the network and the matcher itself and scores a video frame by frame (`StreamingVideoScorer` is
        exported by `clipvis.model`); the predictor feeds its batches to `add_frames`. TypeError for an argument that
        is not a tensor (a numpy array: ``torch.from_numpy``)."""
        check_tensors(object_logits=(object_logits, "[Q, 2]"), class_probs=(class_probs, "[Q, C]"),
                      ious=(ious, "[Q]"), mask_logits=(mask_logits, "[Q, h, w]"))
        self.add_frames(
            object_logits[None].cpu(), class_probs[None].cpu(), ious[None].cpu(),
            positive_mask_statistics(mask_logits)[None].cpu(),
        )

    def add_frames(
        self,
        object_logits: torch.Tensor,
        class_probs: torch.Tensor,
        ious: torch.Tensor,
        mask_statistics: torch.Tensor,
    ) -> None:
        """T aligned frames, in order, on the host: object_logits ``[T, Q, 2]``, class_probs ``[T, Q, C]``, ious
        ``[T, Q]`` and ``positive_mask_statistics`` of each frame's mask logits, ``[T, Q, 2]``. The running sums
        take them one frame at a time, so a video gives the same sums however its frames were batched.

        ValueError, before any sum changes (a refused call leaves the scorer as it was), for shapes that do not fit
        one another or the frames added before, or ious below 0 (which would make the scores NaN); TypeError for an
        argument that is not a tensor."""
        check_tensors(object_logits=(object_logits, "[T, Q, 2]"), class_probs=(class_probs, "[T, Q, C]"),
                      ious=(ious, "[T, Q]"), mask_statistics=(mask_statistics, "[T, Q, 2]"))
        self._check_frames(object_logits, class_probs, ious, mask_statistics)
        for frame_object_logits, frame_probs, frame_ious, frame_mask_statistics in zip(
            object_logits.float(), class_probs.float(), ious.float(), mask_statistics, strict=True
        ):
            root = (frame_probs * frame_ious[:, None]).sqrt()
            if self._object_logit_sum is None:
                self._object_logit_sum = frame_object_logits.clone()
                self._sqrt_sum = root
            else:
                self._object_logit_sum += frame_object_logits
                self._sqrt_sum += root
            object_prob = frame_object_logits.softmax(-1)[:, 0]
            self._frames.append(torch.cat([frame_probs, object_prob[:, None], frame_mask_statistics], 1).numpy())
            self.num_frames += 1

    def _check_frames(
        self,
        object_logits: torch.Tensor,
        class_probs: torch.Tensor,
        ious: torch.Tensor,
        mask_statistics: torch.Tensor,
    ) -> None:
        """:meth:`add_frames`' checks: shapes only, and one reduction over the ious (host tensors: no device sync)."""
        if object_logits.dim() != 3 or object_logits.shape[-1] != 2:
            raise ValueError(f"object_logits must be [Q, 2] per frame (object, no object), got shape "
                             f"{tuple(object_logits.shape[1:])}")
        frames, queries = object_logits.shape[:2]
        if class_probs.dim() != 3 or tuple(class_probs.shape[:2]) != (frames, queries):
            raise ValueError(f"class_probs must be [Q, C] per frame with Q = {queries} (object_logits'), got shape "
                             f"{tuple(class_probs.shape[1:])}")
        if tuple(ious.shape) != (frames, queries):
            raise ValueError(f"ious must be [Q] per frame with Q = {queries} (object_logits'), got shape "
                             f"{tuple(ious.shape[1:])}")
        if tuple(mask_statistics.shape) != (frames, queries, 2):
            raise ValueError(f"the mask logits must be [Q, h, w] per frame with Q = {queries} (object_logits'), got "
                             f"statistics of shape {tuple(mask_statistics.shape[1:])}")
        if self._sqrt_sum is not None and tuple(class_probs.shape[1:]) != tuple(self._sqrt_sum.shape):
            had_queries, had_classes = self._sqrt_sum.shape
            raise ValueError(f"a frame of {queries} queries and {class_probs.shape[2]} classes after frames of "
                             f"{had_queries} queries and {had_classes} classes: one video's frames keep the model's "
                             "queries and one vocabulary")
        if ious.numel() and not bool((ious >= 0).all()):  # NaN fails too
            if bool(ious.isnan().any()):
                raise ValueError("ious hold NaN: the network's output is not finite (a half-precision overflow? try "
                                 "precision='bf16' or 'fp32')")
            low = ious.float().min().item()
            raise ValueError(f"ious must be the predicted mask IoUs (>= 0: the IoU head's sigmoid), got {low:g}: raw "
                             "IoU-head logits? apply torch.sigmoid first")

    def fused_scores(self) -> torch.Tensor:
        """s_{q,c} ``[Q, C]`` from the running sums."""
        if self._object_logit_sum is None:
            raise ValueError("no frame was added")
        object_prob = (self._object_logit_sum / self.num_frames).softmax(-1)[:, 0]
        return (object_prob[:, None] * (self._sqrt_sum / self.num_frames)).sqrt()

    def select(
        self,
        top_n: int = 50,
        score_threshold: float = 0.0,
        official_order: bool = False,
        max_instances: int | None = None,
    ) -> InstanceSelection:
        """Top-N selection with the official suppression and mask score.

        ``official_order=True``: ``torch.topk(sorted=False)`` over the flattened scores, as the official evaluator
        (then ``score_threshold`` and ``max_instances`` are ignored). Otherwise the ``top_n`` candidates
        are ordered by final score, descending, those below ``score_threshold`` dropped and at most
        ``max_instances`` kept.
        """
        scores = self.fused_scores()
        num_classes = scores.shape[1]
        k = min(top_n, scores.numel())
        top_scores, flat = scores.flatten().topk(k, sorted=False)
        queries, labels = flat // num_classes, flat % num_classes
        frames = self._frames.read()  # [T, Q, C + 3]
        q_sel = queries.numpy()
        probs_sel = torch.from_numpy(np.ascontiguousarray(frames[:, q_sel, labels.numpy()])).T  # [N, T]
        stats = torch.from_numpy(np.ascontiguousarray(frames[:, q_sel, num_classes:])).transpose(0, 1)  # [N, T, 3]
        object_probs, mask_sums, mask_counts = stats.unbind(-1)
        suppressed = _suppression(top_scores, probs_sel, object_probs)
        keep = (~suppressed).float()
        mask_scores = (mask_sums * keep).sum(1) / ((mask_counts * keep).sum(1) + 1e-6)
        selection = InstanceSelection(queries, labels, top_scores, suppressed, mask_scores, top_scores * mask_scores)
        if official_order:
            return selection
        order = torch.argsort(selection.scores, descending=True, stable=True)
        order = order[selection.scores[order] >= score_threshold][:max_instances]
        return InstanceSelection(*(getattr(selection, f)[order] for f in (
            "queries", "labels", "fused_scores", "suppressed", "mask_scores", "scores")))

    def close(self) -> None:
        self._frames.close()
