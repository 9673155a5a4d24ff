"""The per-frame CLIP-VIS network as one traceable module (the ONNX file itself is written by
`clipvis.cli.exporters.onnx`, which also checks it against PyTorch with onnxruntime).

`FrameNetwork` maps normalised, padded frames to everything the video stage (temporal matcher + scorer) needs:

* ``object_logits`` ``[B, Q, 2]``, ``mask_logits`` ``[B, Q, H/4, W/4]``, ``ious`` ``[B, Q]``,
  ``query_embeds`` ``[B, Q, D]`` (for the temporal matcher);
* ``clip_dense`` ``[B, C_d, H/32, W/32]``, the frozen CLIP's dense map (any vocabulary can be pooled from it later);
* ``clip_embeds`` ``[B, Q, E]``: each query's mask-pooled CLIP embedding (unnormalised, zeros for empty masks),
  exactly what the text classifier compares with the class embeddings;
* with a vocabulary baked in, also ``class_logits`` ``[B, Q, C]`` (scale * cosine, max over synonyms; 0 for empty
  masks), as `VideoPredictor` computes them.

`at_precision` gives the network as it is exported in fp32 or fp16 (a copy with a half-precision CLIP trunk) and
`float32_outputs` what a file is checked against. The batch axis is dynamic; the frame size is fixed at export.
The deformable attention runs its "index" gather (same math as the default embedding_bag, see
`multi_scale_deformable_attention`) while exporting.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from clipvis.model.clipvis import ClipVis
from clipvis.model.deformable_attention import MSDeformAttn
from clipvis.model.text_classifier import TextEmbeddings

BASE_OUTPUTS = ("object_logits", "mask_logits", "ious", "query_embeds", "clip_dense", "clip_embeds")


class FrameNetwork(nn.Module):
    """ClipVis forward + mask pooling (+ class logits for a fixed vocabulary) as one module returning a tuple.

    ``text``: a vocabulary's `TextEmbeddings` (from `TextClassifier`) to bake in as ``class_logits``, or None to
    keep the vocabulary free (``clip_embeds`` / ``clip_dense`` only).
    """

    def __init__(self, model: ClipVis, text: TextEmbeddings | None = None) -> None:
        super().__init__()
        self.model = model
        self.text = text

    @property
    def output_names(self) -> tuple[str, ...]:
        return BASE_OUTPUTS + (("class_logits",) if self.text is not None else ())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """images ``[B, 3, H, W]`` normalised and padded (see clipvis.model.preprocess) -> the outputs above."""
        images = images.to(self.model.backbone.clip_model.visual.trunk.stem[0].weight.dtype
                           if self.model.backbone.kind == "convnext" else images.dtype)
        out = self.model(images)
        dense = out.clip_dense.float()
        embeds, empty = self.model.pool(dense, out.mask_logits)
        outputs = (out.object_logits, out.mask_logits, out.ious, out.query_embeds, dense, embeds)
        if self.text is None:
            return outputs
        return (*outputs, self.model.class_logits(embeds, empty, self.text))  # as ClipVis.classify


@contextmanager
def export_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Every deformable attention of `model` uses the exportable gather inside the context."""
    layers = [m for m in model.modules() if isinstance(m, MSDeformAttn)]
    previous = [layer.gather for layer in layers]
    for layer in layers:
        layer.gather = "index"
    try:
        yield model
    finally:
        for layer, gather in zip(layers, previous, strict=True):
            layer.gather = gather


def half_backbone(model: ClipVis) -> None:
    """The CLIP image tower's trunk in float16, its pooling head (used on float32 dense features) in float32."""
    visual = model.backbone.clip_model.visual
    visual.half()
    if model.backbone.kind == "resnet":
        visual.attnpool.float()
    else:
        visual.trunk.head.float()
        visual.head.float()


def at_precision(network: FrameNetwork, precision: str) -> FrameNetwork:
    """`network` as it is exported at `precision` ("fp32" or "fp16"), in eval mode.

    fp32: `network` itself. fp16: a copy whose CLIP backbone is half precision (`half_backbone`); the caller's
    network and model are left as they were.
    """
    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, not {precision!r}")
    if precision == "fp32":
        return network.eval()
    half = copy.deepcopy(network).eval()
    half_backbone(half.model)
    return half


def float32_outputs(network: FrameNetwork, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The float32 `network`'s outputs (`FrameNetwork.output_names`; eval mode, no gradients) on `images`
    ``[B, 3, H, W]`` (taken to the network's device): what an exported file is checked against, at either
    precision."""
    network = at_precision(network, "fp32")
    parameter = next(network.parameters())
    with torch.no_grad():
        return network(images.to(parameter.device, torch.float32))
