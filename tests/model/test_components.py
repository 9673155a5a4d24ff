"""Unit tests of each model component: shapes, behaviours and formulas checked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipvis.model.deformable_attention import MSDeformAttn, multi_scale_deformable_attention, softmax_short_rows
from clipvis.model.mask_decoder import MaskedTransformerDecoder
from clipvis.model.position_encoding import SinePositionEncoding
from clipvis.model.preprocess import FramePreprocessor, normalise_padded, padded_shape, resized_shape
from clipvis.model.scoring import (
    FrameSpill,
    InstanceSelection,
    StreamingVideoScorer,
    _suppression,
    positive_mask_statistics,
)
from clipvis.model.temporal_matcher import TemporalMatcher
from clipvis.model.text_classifier import PROMPT_TEMPLATES, TextEmbeddings, build_prompts
from clipvis.model.vocabulary import split_synonyms


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


def test_deformable_encoder_makes_its_reference_points_once_per_frame_size(monkeypatch) -> None:
    """The encoder's reference points are made at the first forward of a size and reused after (they were rebuilt,
    on the device, at every forward), at most MAX_CACHED_SHAPES sizes; the output is the same."""
    from clipvis.model.deformable_attention import MAX_CACHED_SHAPES
    from clipvis.model.pixel_decoder import DeformableEncoder

    encoder = DeformableEncoder(1, d_model=16, d_ffn=32, n_levels=3, n_heads=4, n_points=2).eval()
    made = []
    build = DeformableEncoder.reference_points
    monkeypatch.setattr(DeformableEncoder, "reference_points", staticmethod(lambda *a: made.append(a) or build(*a)))

    def forward(scale: int) -> torch.Tensor:
        shapes = [(2 * scale, 3), (4, 6), (8, 12)]
        src = torch.randn(1, sum(h * w for h, w in shapes), 16, generator=torch.Generator().manual_seed(scale))
        with torch.no_grad():
            return encoder(src, src, shapes)

    first = forward(1)
    assert torch.equal(forward(1), first) and len(made) == 1
    shapes = [(2, 3), (4, 6), (8, 12)]
    src = torch.randn(1, 6 + 24 + 96, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # the kept points are the points
        assert torch.equal(encoder.layers[0](src, src, build(shapes, torch.device("cpu")), shapes), first)
    for scale in range(2, MAX_CACHED_SHAPES + 2):  # more sizes than are kept: the first one goes
        forward(scale)
    assert len(made) == MAX_CACHED_SHAPES + 1
    assert torch.equal(forward(1), first) and len(made) == MAX_CACHED_SHAPES + 2


def test_sine_position_encoding_formula() -> None:
    pe = SinePositionEncoding(4)(2, 3)
    assert pe.shape == (1, 8, 2, 3)
    # channel 0 of pos_y = sin(y / (h + eps) * 2pi / 10000^0); channel 1 = cos(... / 10000^(0/4)) at (i=1,j=2)
    y_hat = 2 / (2 + 1e-6) * 2 * math.pi
    assert pe[0, 0, 1, 2].item() == pytest.approx(math.sin(y_hat), abs=1e-5)
    assert pe[0, 1, 1, 2].item() == pytest.approx(math.cos(y_hat), abs=1e-5)
    x_hat = 1 / (3 + 1e-6) * 2 * math.pi
    assert pe[0, 6, 0, 0].item() == pytest.approx(math.sin(x_hat / 100), abs=1e-5)  # k=2: 10000^(2/4)


def test_decoder_shapes_and_masked_attention_behaviour() -> None:
    torch.manual_seed(0)
    decoder = MaskedTransformerDecoder(hidden_dim=16, num_queries=5, num_layers=3, num_heads=2, dim_feedforward=32,
                                       mask_dim=16).eval()
    memory = [torch.randn(2, 16, 2, 3), torch.randn(2, 16, 4, 6), torch.randn(2, 16, 8, 12)]
    mask_features = torch.randn(2, 16, 16, 24)
    out = decoder(memory, mask_features)
    assert out.object_logits.shape == (2, 5, 2)
    assert out.mask_logits.shape == (2, 5, 16, 24)
    assert out.ious.shape == (2, 5) and bool(((out.ious > 0) & (out.ious < 1)).all())
    assert out.query_embeds.shape == (2, 5, 16)
    # Frames are independent: frame 1 alone gives the same outputs.
    single = decoder([m[1:] for m in memory], mask_features[1:])
    torch.testing.assert_close(single.mask_logits[0], out.mask_logits[1], atol=1e-5, rtol=1e-5)
    # Masked attention: memory positions outside every query's predicted mask do not change the layer's output.
    with torch.no_grad():
        output = decoder.query_feat.weight[:, None].expand(-1, 2, -1)
        level0 = F.interpolate(mask_features, size=(2, 3), mode="bilinear", align_corners=False).flatten(2)
        _, logits = decoder._heads(output, level0)
        attn = decoder.attention_mask(logits)
        assert attn.shape == (2 * 2, 5, 6) and attn.dtype == torch.bool
        hidden = attn.view(2, 2, 5, 6)[:, 0].all(1)  # [B, hw]: masked for every query
        assert hidden.any() and not hidden.all()
        src = (memory[0].flatten(2) + decoder.level_embed.weight[0][None, :, None]).permute(2, 0, 1)
        pos = decoder.pe_layer(2, 3).flatten(2).permute(2, 0, 1)
        query_pos = decoder.query_embed.weight[:, None].expand(-1, 2, -1)
        layer = decoder.transformer_cross_attention_layers[0]
        changed = src.clone()
        changed[hidden.t()] = 100.0
        expected = layer(output, src, attn, pos, query_pos)
        torch.testing.assert_close(layer(output, changed, attn, pos, query_pos), expected)


def official_order_decoder(decoder: MaskedTransformerDecoder, memory, mask_features):
    """Mask2Former's order: full-resolution mask logits after every layer, then resized to the next level."""
    srcs, pos, sizes = [], [], []
    for level, x in enumerate(memory):
        sizes.append(tuple(x.shape[-2:]))
        pos.append(decoder.pe_layer(*x.shape[-2:]).flatten(2).permute(2, 0, 1))
        srcs.append((x.flatten(2) + decoder.level_embed.weight[level][None, :, None]).permute(2, 0, 1))
    query_pos = decoder.query_embed.weight[:, None].expand(-1, mask_features.shape[0], -1)
    output = decoder.query_feat.weight[:, None].expand(-1, mask_features.shape[0], -1)

    def heads(output, size):
        decoded = decoder.decoder_norm(output).transpose(0, 1)
        masks = torch.einsum("bqc,bchw->bqhw", decoder.mask_embed(decoded), mask_features)
        attn = F.interpolate(masks, size=size, mode="bilinear", align_corners=False).sigmoid().flatten(2) < 0.5
        attn = attn.unsqueeze(1).repeat(1, decoder.num_heads, 1, 1).flatten(0, 1)
        return decoded, masks, attn

    decoded, masks, attn = heads(output, sizes[0])
    for i in range(decoder.num_layers):
        level = i % 3
        attn[attn.sum(-1) == attn.shape[-1]] = False
        output = decoder.transformer_cross_attention_layers[i](output, srcs[level], attn, pos[level], query_pos)
        output = decoder.transformer_self_attention_layers[i](output, query_pos)
        output = decoder.transformer_ffn_layers[i](output)
        decoded, masks, attn = heads(output, sizes[(i + 1) % 3])
    return decoded, masks


def test_decoder_equals_official_order_of_mask_resizing() -> None:
    """Attention masks from mask features resized per level equal the official full-resolution-then-resize ones."""
    torch.manual_seed(3)
    decoder = MaskedTransformerDecoder(hidden_dim=32, num_queries=12, num_layers=5, num_heads=4, dim_feedforward=64,
                                       mask_dim=32).eval()
    memory = [torch.randn(2, 32, 3, 5), torch.randn(2, 32, 6, 10), torch.randn(2, 32, 12, 20)]
    mask_features = torch.randn(2, 32, 24, 40)
    with torch.no_grad():
        out = decoder(memory, mask_features)
        decoded, masks = official_order_decoder(decoder, memory, mask_features)
    torch.testing.assert_close(out.query_embeds, decoded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.mask_logits, masks, atol=1e-4, rtol=1e-5)


def test_resize_rounding_and_padding() -> None:
    assert resized_shape(272, 640, 128, 1333) == (128, 301)
    assert resized_shape(272, 200, 160, 200) == (200, 147)  # max-size clamp, portrait
    assert resized_shape(720, 1280, 480, 1333) == (480, 853)
    assert padded_shape(480, 853, 32) == (480, 864)
    pre = FramePreprocessor(480, 1333, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), exact=False)
    frames = np.full((2, 720, 1280, 3), 200, dtype=np.uint8)
    x, geo = pre(frames, torch.device("cpu"))
    assert x.shape == (2, 3, 480, 864) and geo.mask_size == (120, 216)
    assert float(x[0, 0, 0, 0]) == 200.0 and float(x[0, 0, 0, 860]) == 0.0  # zero padding on the right


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
def test_the_preprocessor_checks_frames_as_push_does(exact) -> None:
    """README's ONNX snippet feeds frames to the preprocessor: float frames in [0, 1] ran silently as near black, and
    one [H, W, 3] frame failed with torch's permute error; they get push's messages, and one frame is a batch of 1."""
    pre = FramePreprocessor(32, 64, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), exact=exact)
    frames = np.random.default_rng(0).integers(0, 256, (1, 40, 48, 3), dtype=np.uint8)
    batch, _ = pre(frames, torch.device("cpu"))
    single, geo = pre(frames[0], torch.device("cpu"))
    assert torch.equal(single, batch) and geo.original == (40, 48)
    with pytest.raises(TypeError, match=r"got float64 \(scale floats in \[0, 1\] by 255 and convert"):
        pre(frames / 255.0, torch.device("cpu"))
    with pytest.raises(ValueError, match=r"got shape \(1, 3, 40, 48\) \(channels first\? move them last"):
        pre(torch.from_numpy(frames).permute(0, 3, 1, 2), torch.device("cpu"))
    with pytest.raises(ValueError, match="an empty batch"):
        pre(frames[:0], torch.device("cpu"))


def test_a_test_short_edge_of_0_runs_frames_at_their_own_size() -> None:
    """INPUT.MIN_SIZE_TEST 0 was refused, where detectron2 (the official resize) reads it as no test resize, the
    maximum size aside: frames keep their size and are only padded."""
    assert resized_shape(720, 1280, 0, 1333) == (720, 1280) and resized_shape(2160, 3840, 0, 1333) == (2160, 3840)
    pre = FramePreprocessor(0, 1333, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), exact=False)
    frames = np.random.default_rng(0).integers(0, 256, (1, 100, 150, 3), dtype=np.uint8)
    x, geo = pre(frames, torch.device("cpu"))
    assert (geo.resized, geo.padded, x.shape) == ((100, 150), (128, 160), (1, 3, 128, 160))
    assert torch.equal(x[0, :, :100, :150], torch.from_numpy(frames[0]).permute(2, 0, 1).float())



def test_a_training_batch_is_normalised_as_the_preprocessor_normalises_one_frame() -> None:
    """normalise_padded (the trainer's batches, padded before normalising) gives each image the values
    FramePreprocessor gives it alone (padded after normalising): zero padding, the same normalisation."""
    mean, std = (122.7709383, 116.7460125, 104.09373615), (68.5005327, 66.6321579, 70.32316305)
    pre = FramePreprocessor(64, 1333, 32, mean, std)
    frames = [np.random.default_rng(i).integers(0, 256, size, dtype=np.uint8) for i, size in
              enumerate([(64, 96, 3), (64, 70, 3)])]
    batch = torch.zeros(2, 3, 64, 96, dtype=torch.uint8)
    for i, frame in enumerate(frames):
        batch[i, :, : frame.shape[0], : frame.shape[1]] = torch.from_numpy(frame).permute(2, 0, 1)
    got = normalise_padded(batch, [f.shape[:2] for f in frames], torch.tensor(mean).view(1, 3, 1, 1),
                           torch.tensor(std).view(1, 3, 1, 1))
    assert got.dtype == torch.float32 and got.shape == (2, 3, 64, 96)
    for i, frame in enumerate(frames):
        alone, _ = pre(frame[None], torch.device("cpu"))
        assert torch.equal(got[i], alone[0])


def test_prompts_and_synonym_max() -> None:
    assert split_synonyms("car, automobile,auto") == ["car", "automobile", "auto"]
    prompts, counts = build_prompts(["aerosol_can", "car, automobile"])
    assert counts == [1, 2] and len(prompts) == 3 * len(PROMPT_TEMPLATES)
    assert prompts[0] == "a photo of a aerosol_can." and prompts[15] == "This is a photo of a car"
    emb = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]), dim=-1)
    text = TextEmbeddings(["a", "b"], emb, [1, 2], logit_scale=100.0)
    logits = text.logits(torch.tensor([[2.0, 0.0], [0.0, 3.0]]))
    np.testing.assert_allclose(logits.numpy(), [[100.0, 60.0], [0.0, 100.0]], atol=1e-4)


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


# The official offline evaluator's form of the scoring (whole-video tensors), the reference of the streaming scorer.


def official_video_scores(
    per_frame_object_logits: torch.Tensor, class_probs: torch.Tensor, ious: torch.Tensor
) -> torch.Tensor:
    """s_{q,c} = sqrt(o_q * mean_t sqrt(p_{q,t,c} * u_{q,t})).

    Args: per_frame_object_logits ``[Q, T, 2]`` (aligned), class_probs ``[Q, T, C]``, ious ``[Q, T]``.
    ``o_q`` = softmax of the frame-averaged object logits (summed frame by frame, as the official code does).
    """
    total = per_frame_object_logits[:, 0]
    for t in range(1, per_frame_object_logits.shape[1]):
        total = total + per_frame_object_logits[:, t]
    video_logits = total / per_frame_object_logits.shape[1]
    object_prob = video_logits.softmax(-1)[:, 0]
    mean_sqrt = (class_probs * ious[..., None]).sqrt().mean(1)
    return (object_prob[:, None] * mean_sqrt).sqrt()


def official_select_instances(
    scores: torch.Tensor,
    class_probs: torch.Tensor,
    per_frame_object_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    top_n: int = 50,
) -> InstanceSelection:
    """Top-N (query, class) pairs (``torch.topk(sorted=False)`` order), suppression, mask score.

    Args: scores ``[Q, C]``; class_probs ``[Q, T, C]``; per_frame_object_logits ``[Q, T, 2]``;
    mask_logits ``[Q, T, h, w]`` aligned, at stride 4.
    """
    num_classes = scores.shape[1]
    k = min(top_n, scores.numel())
    top_scores, flat = scores.flatten().topk(k, sorted=False)
    queries, labels = flat // num_classes, flat % num_classes
    probs_sel = class_probs[queries, :, labels]  # [N, T]
    object_prob_sel = per_frame_object_logits.softmax(-1)[queries, :, 0]
    suppressed = _suppression(top_scores, probs_sel, object_prob_sel)
    masks = mask_logits[queries].clone()
    masks[suppressed] = -1.0
    positive = (masks > 0).float()
    mask_scores = (masks.sigmoid() * positive).flatten(1).sum(1) / (positive.flatten(1).sum(1) + 1e-6)
    return InstanceSelection(queries, labels, top_scores, suppressed, mask_scores, top_scores * mask_scores)


def hand_scores(obj_logits, probs, ious):
    q, t, c = probs.shape
    out = np.zeros((q, c))
    for i in range(q):
        mean_logit = obj_logits[i].mean(0)
        o = math.exp(mean_logit[0]) / (math.exp(mean_logit[0]) + math.exp(mean_logit[1]))
        for k in range(c):
            out[i, k] = math.sqrt(o * np.mean([math.sqrt(probs[i, s, k] * ious[i, s]) for s in range(t)]))
    return out


def random_video(q=4, t=5, c=3, h=6, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    obj = torch.randn(q, t, 2, generator=g) * 3
    probs = torch.randn(q, t, c, generator=g).softmax(-1)
    ious = torch.rand(q, t, generator=g)
    masks = torch.randn(q, t, h, w, generator=g) * 4
    return obj, probs, ious, masks


def test_fused_scores_against_hand_computation() -> None:
    """The streaming scorer's s_{q,c} (and the offline reference the other tests compare it with) against the formula
    computed by hand, frame by frame."""
    obj, probs, ious, masks = random_video()
    expected = hand_scores(obj.numpy(), probs.numpy(), ious.numpy())
    scorer = StreamingVideoScorer()
    for t in range(obj.shape[1]):
        scorer.add_frame(obj[:, t], probs[:, t], ious[:, t], masks[:, t])
    np.testing.assert_allclose(scorer.fused_scores().numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(official_video_scores(obj, probs, ious).numpy(), expected, atol=1e-6)
    scorer.close()


@pytest.mark.parametrize("scorer", ["streaming", "offline reference"])
def test_suppression_quirk_and_mask_score_by_hand(scorer: str) -> None:
    """The library's selection (and the offline reference): a suppressed frame's mask is left out of the mask score."""
    obj, probs, ious, masks = random_video(q=2, t=3, c=2)
    obj[1, 2] = torch.tensor([-20.0, 20.0])  # query 1 has no object at frame 2 -> suppressed there
    scores = official_video_scores(obj, probs, ious)
    if scorer == "streaming":
        streaming = StreamingVideoScorer()
        for t in range(3):
            streaming.add_frame(obj[:, t], probs[:, t], ious[:, t], masks[:, t])
        sel = streaming.select(top_n=4, official_order=True)
        streaming.close()
    else:
        sel = official_select_instances(scores, probs, obj, masks, top_n=4)
    for n in range(4):
        q, c = int(sel.queries[n]), int(sel.labels[n])
        s = float(scores[q, c])
        expected_supp = []
        for t in range(3):
            o_t = float(obj[q, t].softmax(-1)[0])
            r = math.sqrt(1 / (1 + math.exp(-float(probs[q, t, c]))) * o_t)  # sigmoid of a probability
            expected_supp.append(r < 0.1 * s)
        assert sel.suppressed[n].tolist() == expected_supp
        kept = [masks[q, t] for t in range(3) if not expected_supp[t]]
        values = torch.cat([m[m > 0].sigmoid() for m in kept]) if kept else torch.zeros(0)
        mask_score = float(values.sum()) / (len(values) + 1e-6)
        assert float(sel.mask_scores[n]) == pytest.approx(mask_score, rel=1e-5)
        assert float(sel.scores[n]) == pytest.approx(s * mask_score, rel=1e-5)
    assert any(sel.suppressed[n, 2] for n in range(4) if sel.queries[n] == 1)


def test_streaming_scorer_equals_official_offline() -> None:
    obj, probs, ious, masks = random_video(q=6, t=9, c=4, seed=3)
    obj[2] = torch.tensor([6.0, -6.0])  # query 2: a confident object of class 1 on every frame but frame 4
    obj[2, 4] = torch.tensor([-30.0, 30.0])  # -> selected, and suppressed at frame 4 (its mask there has pixels)
    probs[2] = torch.tensor([0.05, 0.85, 0.05, 0.05])
    ious[2] = 0.9
    scorer = StreamingVideoScorer(spill_budget_bytes=64)  # forces the spill to disk
    for t in range(9):
        scorer.add_frame(obj[:, t], probs[:, t], ious[:, t], masks[:, t])
    scores = official_video_scores(obj, probs, ious)
    np.testing.assert_allclose(scorer.fused_scores().numpy(), scores.numpy(), atol=1e-6)
    offline = official_select_instances(scores, probs, obj, masks, top_n=10)
    streaming = scorer.select(top_n=10, official_order=True)
    assert streaming.queries.tolist() == offline.queries.tolist()
    assert streaming.labels.tolist() == offline.labels.tolist()
    assert offline.suppressed.any() and torch.equal(streaming.suppressed, offline.suppressed)
    np.testing.assert_allclose(streaming.mask_scores.numpy(), offline.mask_scores.numpy(), rtol=1e-5)
    np.testing.assert_allclose(streaming.scores.numpy(), offline.scores.numpy(), rtol=1e-5)
    ranked = scorer.select(top_n=10, score_threshold=float(offline.scores.median()))
    assert ranked.scores.tolist() == sorted(ranked.scores.tolist(), reverse=True)
    assert bool((ranked.scores >= offline.scores.median()).all())
    scorer.close()


def test_frames_added_in_batches_give_the_scores_of_frames_added_one_by_one() -> None:
    """VideoSession.push hands the scorer a whole batch (one host copy per batch): the same running sums, spilled
    statistics and selection, bit for bit, as frame by frame."""
    obj, probs, ious, masks = random_video(q=6, t=9, c=4, seed=5)
    one_by_one, batched = StreamingVideoScorer(), StreamingVideoScorer()
    for t in range(9):
        one_by_one.add_frame(obj[:, t], probs[:, t], ious[:, t], masks[:, t])
    for first, last in ((0, 4), (4, 8), (8, 9)):
        statistics = torch.stack([positive_mask_statistics(masks[:, t]) for t in range(first, last)])
        batched.add_frames(obj[:, first:last].transpose(0, 1), probs[:, first:last].transpose(0, 1),
                           ious[:, first:last].T, statistics)
    assert batched.num_frames == one_by_one.num_frames == 9
    assert torch.equal(batched.fused_scores(), one_by_one.fused_scores())
    expected, got = one_by_one.select(top_n=10), batched.select(top_n=10)
    assert torch.equal(got.queries, expected.queries) and torch.equal(got.labels, expected.labels)
    assert torch.equal(got.scores, expected.scores) and torch.equal(got.mask_scores, expected.mask_scores)


def test_a_refused_frame_leaves_the_scorer_and_the_matcher_as_they_were() -> None:
    """A frame of another class count had already added its object logits (later scores differed); negative ious
    (raw IoU-head logits) made every score NaN and select() returned nothing; a [B, Q, D] batch was taken as a first
    frame, then failed with an einsum error. Each is now a ValueError before any state changes."""
    obj, probs, ious, masks = random_video(t=2)
    wrong_classes = torch.rand(4, 4).softmax(-1)
    checked, plain = StreamingVideoScorer(), StreamingVideoScorer()
    checked.add_frame(obj[:, 0], probs[:, 0], ious[:, 0], masks[:, 0])
    with pytest.raises(ValueError, match="a frame of 4 queries and 4 classes after frames of 4 queries and 3"):
        checked.add_frame(obj[:, 1], wrong_classes, ious[:, 1], masks[:, 1])
    with pytest.raises(ValueError, match=r"ious must be \[Q\] per frame with Q = 4"):
        checked.add_frame(obj[:, 1], probs[:, 1], ious[:3, 1], masks[:, 1])
    with pytest.raises(ValueError, match=r"ious must be the predicted mask IoUs \(>= 0.*apply torch.sigmoid first"):
        checked.add_frame(obj[:, 1], probs[:, 1], ious[:, 1] - 2.0, masks[:, 1])
    nan_ious = ious[:, 1].clone()
    nan_ious[2] = float("nan")  # named as NaN, not as a raw logit (review29: it said -inf, apply sigmoid)
    with pytest.raises(ValueError, match=r"ious hold NaN: the network's output is not finite"):
        checked.add_frame(obj[:, 1], probs[:, 1], nan_ious, masks[:, 1])
    checked.add_frame(obj[:, 1], probs[:, 1], ious[:, 1], masks[:, 1])
    for t in range(2):
        plain.add_frame(obj[:, t], probs[:, t], ious[:, t], masks[:, t])
    assert checked.num_frames == 2 and torch.equal(checked.fused_scores(), plain.fused_scores())
    assert torch.equal(checked.select(top_n=5).scores, plain.select(top_n=5).scores)
    matcher = TemporalMatcher()
    with pytest.raises(ValueError, match=r"\[Q, D\], got shape \(2, 8, 16\): match a batch's frames one by one"):
        matcher.match(torch.randn(2, 8, 16))
    assert not matcher.memory
    matcher.match(torch.randn(8, 16))
    with pytest.raises(ValueError, match=r"embeds of shape \(8, 32\) after frames of \(8, 16\)"):
        matcher.match(torch.randn(8, 32))
    assert len(matcher.memory) == 1


def test_frame_spill_round_trip() -> None:
    spill = FrameSpill(memory_budget_bytes=100)
    frames = [np.full((3, 4), i, dtype=np.float32) for i in range(10)]
    for f in frames:
        spill.append(f)
    np.testing.assert_array_equal(np.asarray(spill.read()), np.stack(frames))
    with pytest.raises(ValueError):
        spill.append(np.zeros((2, 2), dtype=np.float32))
    spill.close()


def _reference_positive_mask_statistics(mask_logits: torch.Tensor) -> torch.Tensor:
    """`positive_mask_statistics` as it was before it multiplied in place and counted in float32."""
    positive = mask_logits > 0
    mask_sum = (mask_logits.float().sigmoid() * positive).flatten(1).sum(1)
    mask_count = positive.flatten(1).sum(1).float()
    return torch.stack([mask_sum, mask_count], 1)


@pytest.mark.parametrize("shape", [(0, 4, 5), (1, 1, 1), (3, 7, 5), (100, 120, 216), (5, 184, 320), (2, 1100, 1000)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_positive_mask_statistics_are_bit_identical_to_the_plain_form(shape, dtype) -> None:
    generator = torch.Generator().manual_seed(sum(shape))
    logits = (torch.randn(shape, generator=generator) * 4).to(dtype)
    if shape[0] >= 3:  # all negative, all positive, zeros and -0 (not positive), huge magnitudes
        logits[0] = -logits[0].abs() - 1
        logits[1] = logits[1].abs() + 1
        logits[2].view(-1)[::2] = 0.0
        logits[2].view(-1)[1::2] = -0.0
    if shape[0] >= 4:
        logits[3].view(-1)[::3] = float("inf")
        logits[3].view(-1)[1::3] = float("-inf")
    got = positive_mask_statistics(logits)
    want = _reference_positive_mask_statistics(logits)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want)


def test_frame_size_errors_say_width_x_height_as_the_cli_does() -> None:
    pre = FramePreprocessor(64, 128, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"frames of 5x0 pixels have nothing to segment"):
        pre.geometry(0, 5)
    with pytest.raises(ValueError, match=r"frames of 1000x1 are too thin"):
        pre.geometry(1, 1000)


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
