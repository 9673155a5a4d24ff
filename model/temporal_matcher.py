"""Temporal topK-enhanced matching of per-frame queries to tracks (docs/fidelity.md, "Tracking";
``CV:clipvis/clipvis_video.py`` match_from_vote_embds)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from clipvis.model.call_checks import check_tensors
from clipvis.model.errors import NonFiniteOutputError


@dataclass
class MatchResult:
    """How one frame was matched."""

    permutation: torch.Tensor  # [Q] long: track j takes the frame's query permutation[j]
    branch: str  # "first_frame", "single_best_memory" or "topk_weighted_average"
    selected_memory: list[int]  # memory indices used (0 = oldest)
    memory_costs: list[float]  # matched cost s_i of each memory entry


class TemporalMatcher:
    """Streaming matcher: feed one frame's query embeddings, get that frame's permutation.

    Memory = FIFO of the last ``memory_length`` *aligned* embedding matrices, normalised (unit rows) when they
    enter it, so that a frame normalises only its own embeddings. While it holds fewer than ``top_k``
    entries the single memory frame with the lowest matched cosine cost decides; afterwards the recency-weighted
    (i+1) costs of the ``top_k`` lowest-cost memory frames are averaged and solved once more.
    """

    def __init__(self, memory_length: int = 9, top_k: int = 5) -> None:
        if memory_length < 1 or top_k < 1:
            raise ValueError("memory_length and top_k must be >= 1")
        self.memory_length = memory_length
        self.top_k = top_k
        self.memory: deque[torch.Tensor] = deque(maxlen=memory_length)

    @staticmethod
    def _assign(cost_t: np.ndarray) -> np.ndarray:
        """Hungarian on ``cost_t`` [tracks, queries]; returns the query for each track."""
        rows, cols = linear_sum_assignment(cost_t)
        perm = np.empty(cost_t.shape[0], dtype=np.int64)
        perm[rows] = cols
        return perm

    def match(self, embeds: torch.Tensor) -> MatchResult:
        """embeds ``[Q, D]`` of the current frame -> permutation; the aligned embeddings enter the memory. ValueError,
        before the memory changes, for another shape or one other than the frames' before (NonFiniteOutputError for
        NaN or infinite embeddings: the model's weights are broken); TypeError for anything but a tensor (a numpy
        array: ``torch.from_numpy``)."""
        check_tensors(embeds=(embeds, "[Q, D]"))
        if embeds.dim() != 2:
            hint = ": match a batch's frames one by one, matcher.match(embeds[b])" if embeds.dim() == 3 else ""
            raise ValueError(f"embeds must be one frame's query embeddings [Q, D], got shape {tuple(embeds.shape)}"
                             f"{hint}")
        if self.memory and embeds.shape != self.memory[-1].shape:
            raise ValueError(f"embeds of shape {tuple(embeds.shape)} after frames of {tuple(self.memory[-1].shape)}: "
                             "one video's frames keep the model's queries [Q, D]")
        num_queries = embeds.shape[0]
        with torch.autocast(device_type="cpu", enabled=False):  # costs in float32 whatever the caller's autocast
            current = F.normalize(embeds.detach().float().cpu(), dim=-1)
            # on the host already (the assignment is scipy's): one check of Q x D values, no transfer of its own
            if not bool(torch.isfinite(current).all()):
                raise NonFiniteOutputError()
            if not self.memory:
                self.memory.append(current)
                return MatchResult(torch.arange(num_queries), "first_frame", [], [])
            memory = torch.stack(list(self.memory))  # [M, Q, D], 0 = oldest; unit rows already
            costs = 1.0 - torch.einsum("qd,mkd->mqk", current, memory)  # [M, Q_cur, Q_mem]
        costs_np = costs.numpy()
        perms = [self._assign(c.T) for c in costs_np]
        tracks = np.arange(num_queries)
        matched = [float(costs_np[i][perms[i], tracks].sum()) for i in range(len(perms))]
        if len(self.memory) < self.top_k:
            best = int(np.argmin(matched))
            track_queries, branch, selected = perms[best], "single_best_memory", [best]
        else:
            selected = sorted(np.argsort(matched, kind="stable")[: self.top_k].tolist())
            weights = torch.arange(1, len(self.memory) + 1, dtype=costs.dtype)[:, None, None]
            averaged = (costs * weights)[selected].sum(0) / self.top_k
            track_queries, branch = self._assign(averaged.numpy().T), "topk_weighted_average"
        permutation = torch.from_numpy(track_queries)
        self.memory.append(current[permutation])
        return MatchResult(permutation, branch, selected, matched)
