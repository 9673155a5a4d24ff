"""clipvis.model.mask_decoder: output shapes, masked attention, and the official order of mask resizing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipvis.model.mask_decoder import MaskedTransformerDecoder


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
