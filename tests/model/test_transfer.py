"""Copies to the model's device that do not make the host wait (clipvis.model.transfer), and the vocabulary's
embeddings kept on the predictor's device."""

from __future__ import annotations

import warnings

import pytest
import torch

from clipvis.model.text_classifier import TextEmbeddings
from clipvis.model.transfer import small_tensor, to_device

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")


def test_small_tensors_are_the_values_with_the_dtype_asked_for() -> None:
    made = small_tensor([[3, 4], [5, 6]], torch.float64, "cpu")
    assert made.dtype == torch.float64 and made.device.type == "cpu"
    assert torch.equal(made, torch.tensor([[3.0, 4.0], [5.0, 6.0]], dtype=torch.float64))
    host = torch.arange(5)
    assert to_device(host, torch.device("cpu")) is host  # nothing copied when it is there already


def test_text_embeddings_move_to_a_device_once() -> None:
    text = TextEmbeddings(["cat", "dog"], torch.randn(3, 4), [2, 1], 100.0)
    assert text.to("cpu") is text
    moved = text.to(torch.device("meta"))
    assert moved.embeddings.device.type == "meta" and text.embeddings.device.type == "cpu"
    assert (moved.vocabulary, moved.synonym_counts, moved.logit_scale) == (["cat", "dog"], [2, 1], 100.0)


@CUDA
def test_copies_to_cuda_are_queued_without_waiting_and_arrive_whole() -> None:
    host = torch.randn(1000, 7)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            copied = to_device(host, "cuda")
            small = small_tensor([0, 9, 30], torch.int32, torch.device("cuda"))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert not [w for w in caught if "synchroniz" in str(w.message)]
    assert torch.equal(copied.cpu(), host) and small.cpu().tolist() == [0, 9, 30]


@CUDA
def test_deformable_attention_can_be_captured_in_a_cuda_graph_once_it_ran_at_that_size() -> None:
    from clipvis.model.deformable_attention import MSDeformAttn

    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2).cuda()
    shapes = [(4, 6), (8, 12), (16, 24)]
    total = sum(h * w for h, w in shapes)
    query = torch.randn(2, total, 16, device="cuda")
    ref = torch.rand(2, total, 3, 2, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():  # the warm-up makes the level constants
        for _ in range(2):
            eager = attn(query, ref, query, shapes)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        captured = attn(query, ref, query, shapes)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(captured, eager)
