"""clipvis.model.deformable_attention: multi-scale deformable attention against a literal loop and the official
grid_sample fallback, the short-row softmax, MSDeformAttn's shapes and its per-frame-size caches."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from clipvis.model.deformable_attention import MSDeformAttn, multi_scale_deformable_attention, softmax_short_rows


def naive_deformable_attention(value, shapes, locations, weights):
    """Literal loop: bilinear sampling (zero padding, align_corners=False) at every point, weighted sum."""
    n, _, heads, channels = value.shape
    _, num_queries, _, levels, points, _ = locations.shape
    starts = np.cumsum([0] + [h * w for h, w in shapes])
    out = torch.zeros(n, num_queries, heads, channels, dtype=torch.float64)
    for b in range(n):
        for q in range(num_queries):
            for m in range(heads):
                for lvl, (h, w) in enumerate(shapes):
                    grid = value[b, starts[lvl] : starts[lvl + 1], m].reshape(h, w, channels).double()
                    for p in range(points):
                        x = locations[b, q, m, lvl, p, 0].item() * w - 0.5
                        y = locations[b, q, m, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(channels, dtype=torch.float64)
                        fy, fx = y - y0, x - x0
                        corners = (
                            (y0, x0, (1 - fy) * (1 - fx)),
                            (y0, x0 + 1, (1 - fy) * fx),
                            (y0 + 1, x0, fy * (1 - fx)),
                            (y0 + 1, x0 + 1, fy * fx),
                        )
                        for yy, xx, wt in corners:
                            if 0 <= yy < h and 0 <= xx < w:
                                sample += wt * grid[yy, xx]
                        out[b, q, m] += weights[b, q, m, lvl, p].item() * sample
    return out.reshape(n, num_queries, heads * channels)


def test_deformable_attention_matches_naive_loop() -> None:
    torch.manual_seed(0)
    shapes = [(3, 4), (5, 2), (2, 3)]
    total = sum(h * w for h, w in shapes)
    value = torch.randn(2, total, 2, 3)
    locations = torch.rand(2, 5, 2, 3, 4, 2) * 1.4 - 0.2  # some points fall outside the map
    weights = torch.rand(2, 5, 2, 3, 4)
    ours = multi_scale_deformable_attention(value, shapes, locations, weights)
    naive = naive_deformable_attention(value, shapes, locations, weights)
    np.testing.assert_allclose(ours.double().numpy(), naive.numpy(), atol=1e-5)


def grid_sample_deformable_attention(value, shapes, locations, weights):
    """The official CPU fallback's formulation: one ``F.grid_sample`` per level, then the weighted sum."""
    n, _, heads, channels = value.shape
    out = 0
    for lvl, (value_l, (h, w)) in enumerate(zip(value.split([h * w for h, w in shapes], dim=1), shapes, strict=True)):
        value_l = value_l.flatten(2).transpose(1, 2).reshape(n * heads, channels, h, w)
        grid = (2 * locations[:, :, :, lvl] - 1).transpose(1, 2).flatten(0, 1)  # [N*M, Lq, P, 2]
        sampled = F.grid_sample(value_l, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out + (sampled * weights[:, :, :, lvl].transpose(1, 2).flatten(0, 1)[:, None]).sum(-1)
    return out.view(n, heads * channels, -1).transpose(1, 2)


def test_deformable_attention_equals_grid_sample_and_its_gradients() -> None:
    """Same values as the official grid_sample fallback at realistic sizes, and the same gradients (training)."""
    torch.manual_seed(1)
    shapes = [(4, 9), (8, 18), (16, 36)]
    total = sum(h * w for h, w in shapes)
    value = torch.randn(2, total, 4, 8, dtype=torch.float64, requires_grad=True)
    # Mostly inside, some outside by less than a pixel, some far outside, some exactly on pixel centres.
    locations = torch.rand(2, 30, 4, 3, 4, 2, dtype=torch.float64) * 1.6 - 0.3
    locations[:, :3, :, 0, :, 0] = (torch.arange(3, dtype=torch.float64)[None, :, None, None] + 0.5) / 9
    locations.requires_grad_(True)
    weights = torch.rand(2, 30, 4, 3, 4, dtype=torch.float64, requires_grad=True)
    ours = multi_scale_deformable_attention(value, shapes, locations, weights)
    reference = grid_sample_deformable_attention(value, shapes, locations, weights)
    torch.testing.assert_close(ours, reference, atol=1e-12, rtol=1e-12)
    upstream = torch.randn_like(ours)
    grads = torch.autograd.grad((ours * upstream).sum(), (value, locations, weights))
    expected = torch.autograd.grad((reference * upstream).sum(), (value, locations, weights))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    # float32 on a 1-frame batch: within rounding of the fallback.
    args = (value[:1].float().detach(), shapes, locations[:1].float().detach(), weights[:1].float().detach())
    torch.testing.assert_close(
        multi_scale_deformable_attention(*args), grid_sample_deformable_attention(*args), atol=1e-5, rtol=1e-5
    )


def test_softmax_short_rows_equals_softmax_with_gradients_and_large_logits() -> None:
    torch.manual_seed(0)
    x = (torch.randn(50, 8, 12, dtype=torch.float64) * torch.tensor([1.0, 1e3]).repeat(25)[:, None, None])
    x.requires_grad_(True)
    ours, reference = softmax_short_rows(x), x.softmax(-1)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, reference, atol=1e-15, rtol=0)
    upstream = torch.randn_like(ours)
    torch.testing.assert_close(
        torch.autograd.grad((ours * upstream).sum(), x)[0], torch.autograd.grad((reference * upstream).sum(), x)[0]
    )


def test_msdeformattn_module_shapes_and_softmax() -> None:
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)
    shapes = [(2, 3), (4, 6), (8, 12)]
    total = sum(h * w for h, w in shapes)
    query = torch.randn(1, total, 16)
    ref = torch.rand(1, total, 3, 2)
    assert attn(query, ref, query, shapes).shape == (1, total, 16)
    assert attn.sampling_offsets.out_features == 4 * 3 * 2 * 2


def test_msdeformattn_copies_its_level_constants_from_the_host_once_per_frame_size(monkeypatch) -> None:
    """The per-level numbers are made on the first forward for a size and reused after: on a GPU a copy from the host
    waits for the device, and a CUDA graph cannot capture one. At most MAX_CACHED_SHAPES sizes are kept."""
    import clipvis.model.deformable_attention as module

    made = []
    small_tensor = module.small_tensor
    monkeypatch.setattr(module, "small_tensor", lambda *args: made.append(args) or small_tensor(*args))
    attn = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)

    def forward(scale: int) -> torch.Tensor:
        shapes = [(2 * scale, 3), (4, 6), (8, 12)]
        total = sum(h * w for h, w in shapes)
        query = torch.randn(1, total, 16, generator=torch.Generator().manual_seed(scale))
        ref = torch.rand(1, total, 3, 2, generator=torch.Generator().manual_seed(scale))
        return attn(query, ref, query, shapes)

    first = forward(1)
    per_size = len(made)
    assert per_size > 0
    assert torch.equal(forward(1), first) and len(made) == per_size  # nothing made again
    for scale in range(2, module.MAX_CACHED_SHAPES + 2):  # more sizes than are kept: the first one goes
        forward(scale)
    assert len(made) == per_size * (module.MAX_CACHED_SHAPES + 1)
    assert torch.equal(forward(1), first) and len(made) == per_size * (module.MAX_CACHED_SHAPES + 2)


def test_the_per_frame_size_caches_survive_threads_sharing_a_model(tiny_model) -> None:
    """Two predictors of one model in two threads, over videos of many sizes: a cache lookup after another thread
    dropped the entry raised KeyError (3-4 times in 12,000 lookups from 4 threads)."""
    import random
    import sys
    import threading

    from clipvis.model.pixel_decoder import DeformableEncoder

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    encoder = next(module for module in tiny_model.modules() if isinstance(module, DeformableEncoder))
    attention = next(module for module in tiny_model.modules() if isinstance(module, MSDeformAttn))
    shapes = [[(i, i + 1), (i + 2, i + 3), (i + 4, i + 5)] for i in range(1, 40)]
    errors: list[str] = []

    def look_up(seed: int) -> None:
        draw = random.Random(seed)
        for _ in range(3000):
            shape = draw.choice(shapes)
            try:
                encoder.cached_reference_points(shape, torch.device("cpu"))
                attention._level_constants(shape, torch.device("cpu"), torch.float32)
            except Exception as error:  # noqa: BLE001 - counted, then asserted on
                errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=look_up, args=(seed,)) for seed in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    assert errors == []
    # bounded: a thread may add its entry while another adds one (at most one each beyond the limit)
    assert len(encoder._reference_points) <= 8 + len(threads) and len(attention._constants) <= 8 + len(threads)
