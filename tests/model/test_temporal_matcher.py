"""clipvis.model.temporal_matcher: known permutations recovered in both branches, the single best memory frame,
recency weights."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from clipvis.model.temporal_matcher import TemporalMatcher


def embeds_from_perm(base: torch.Tensor, perm: list[int], noise: float = 0.0) -> torch.Tensor:
    """A frame whose query perm[j] carries track j's embedding."""
    out = torch.empty_like(base)
    out[torch.tensor(perm)] = base
    return out + noise * torch.randn_like(base)


def test_matcher_recovers_known_permutations_in_both_branches() -> None:
    torch.manual_seed(0)
    base = F.normalize(torch.randn(6, 8), dim=-1)
    matcher = TemporalMatcher(memory_length=4, top_k=2)
    assert matcher.match(base).branch == "first_frame"
    perms = [[1, 0, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5], [2, 3, 4, 5, 0, 1], [3, 1, 4, 0, 5, 2]]
    branches = []
    for perm in perms:
        result = matcher.match(embeds_from_perm(base, perm, noise=0.01))
        assert result.permutation.tolist() == perm
        branches.append(result.branch)
    assert branches == ["single_best_memory"] + ["topk_weighted_average"] * 4
    assert len(matcher.memory) == 4  # FIFO bounded
    assert torch.allclose(torch.stack(list(matcher.memory)).norm(dim=-1), torch.ones(4, 6))  # stored normalised


def test_matcher_single_best_memory_picks_lowest_cost_frame() -> None:
    # Memory = [A, B]; the current frame is identical to B's aligned order, far from A -> B decides.
    torch.manual_seed(1)
    a = F.normalize(torch.randn(4, 8), dim=-1)
    matcher = TemporalMatcher(memory_length=9, top_k=5)
    matcher.match(a)
    b_raw = embeds_from_perm(F.normalize(torch.randn(4, 8), dim=-1), [0, 1, 2, 3])
    first = matcher.match(b_raw)
    current = embeds_from_perm(matcher.memory[-1], [2, 0, 3, 1])
    result = matcher.match(current)
    assert result.branch == "single_best_memory"
    assert result.selected_memory == [int(np.argmin(result.memory_costs))]
    assert result.permutation.tolist() == [2, 0, 3, 1] or first.branch != "single_best_memory"


def test_matcher_topk_weights_recent_frames_more() -> None:
    # Memory [X, A, B]: X is unrelated (high matched cost, not among the K=2 best); A and B hold the same tracks
    # in orders that disagree. Both match the current frame perfectly on their own, so only the (i+1) recency
    # weights decide: B (weight 3) beats A (weight 2) and the current frame follows B's order.
    torch.manual_seed(2)
    a = torch.eye(4)
    b = a[[1, 0, 2, 3]]
    x = F.normalize(torch.randn(4, 4), dim=-1)  # the memory holds unit rows
    matcher = TemporalMatcher(memory_length=3, top_k=2)
    matcher.memory.extend([x, a, b])
    result = matcher.match(b.clone())
    assert result.branch == "topk_weighted_average"
    assert result.selected_memory == [1, 2]
    assert result.permutation.tolist() == [0, 1, 2, 3]
    matcher.memory.clear()
    matcher.memory.extend([x, b, a])  # now A is the newest
    assert matcher.match(b.clone()).permutation.tolist() == [1, 0, 2, 3]


def test_numpy_embeddings_are_refused_naming_the_argument_before_the_memory_changes() -> None:
    """``match(np_array)`` was an AttributeError ('numpy.ndarray' object has no attribute 'dim')."""
    import pytest

    matcher = TemporalMatcher()
    with pytest.raises(TypeError, match=r"^embeds must be a torch tensor \[Q, D\], not ndarray: "
                                        r"torch.from_numpy\(embeds\)$"):
        matcher.match(np.zeros((4, 8), np.float32))
    assert not matcher.memory
    assert matcher.match(torch.from_numpy(np.ones((4, 8), np.float32))).branch == "first_frame"


def test_nan_or_infinite_embeddings_are_the_models_broken_weights_not_a_scipy_error() -> None:
    """A diverged training run's weights gave NaN embeddings: segment failed with scipy's 'matrix contains invalid
    numeric entries'. One error saying what it is, on the first frame too, before the memory changes."""
    import pytest

    from clipvis.model import NonFiniteOutputError

    base = F.normalize(torch.randn(4, 8), dim=-1)
    for bad in (float("nan"), float("inf")):
        matcher = TemporalMatcher(memory_length=3, top_k=2)
        with pytest.raises(NonFiniteOutputError, match="the model produced NaN or infinite values"):
            matcher.match(torch.full((4, 8), bad))
        assert not matcher.memory
        matcher.match(base)
        broken = base.clone()
        broken[2, 5] = bad
        with pytest.raises(NonFiniteOutputError):
            matcher.match(broken)
        assert len(matcher.memory) == 1
