"""The per-frame CLIP-VIS network as one traceable module, and its ONNX export with an onnxruntime parity check.

`FrameNetwork` maps normalised, padded frames to everything the video stage (temporal matcher + scorer) needs:

* ``object_logits`` ``[B, Q, 2]``, ``mask_logits`` ``[B, Q, H/4, W/4]``, ``ious`` ``[B, Q]``,
  ``query_embeds`` ``[B, Q, D]`` (for the temporal matcher);
* ``clip_dense`` ``[B, C_d, H/32, W/32]``, the frozen CLIP's dense map (any vocabulary can be pooled from it later);
* ``clip_embeds`` ``[B, Q, E]``: each query's mask-pooled CLIP embedding (unnormalised, zeros for empty masks),
  exactly what the text classifier compares with the class embeddings;
* with a vocabulary baked in, also ``class_logits`` ``[B, Q, C]`` (scale * cosine, max over synonyms; 0 for empty
  masks), as `VideoPredictor` computes them.

The batch axis is dynamic; the frame size is fixed at export. The deformable attention runs its "index" gather
(same math as the default embedding_bag, see `multi_scale_deformable_attention`) while exporting.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
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
        pooler = self.model.mask_pooler
        masks = pooler.binary_masks(out.mask_logits, (dense.shape[-2], dense.shape[-1]))
        embeds, empty = pooler(dense, masks)
        outputs = (out.object_logits, out.mask_logits, out.ious, out.query_embeds, dense, embeds)
        if self.text is None:
            return outputs
        logits = self._class_logits(embeds)
        if pooler.zero_logits_of_empty_masks:  # the same rule as ClipVis.classify
            logits = logits.masked_fill(empty[..., None], 0.0)
        return (*outputs, logits)

    def _class_logits(self, embeds: torch.Tensor) -> torch.Tensor:
        """`TextEmbeddings.logits` with the max over synonyms as one slice-max per class (scatter_reduce, which
        it uses, has no ONNX translation in the TorchScript exporter)."""
        text = self.text
        per_synonym = text.logit_scale * F.normalize(embeds.float(), dim=-1) @ text.embeddings.to(embeds.device).T
        if all(count == 1 for count in text.synonym_counts):
            return per_synonym
        bounds = [0]
        for count in text.synonym_counts:
            bounds.append(bounds[-1] + count)
        return torch.stack([per_synonym[..., a:b].amax(-1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                           -1)


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


@dataclass
class OnnxParity:
    """Max absolute difference per output between onnxruntime and PyTorch on the same frames."""

    max_abs_diff: dict[str, float]
    batch: int

    def worst(self, names: tuple[str, ...] = ("object_logits", "class_logits")) -> float:
        return max((v for k, v in self.max_abs_diff.items() if k in names), default=0.0)


def export_onnx(network: FrameNetwork, path: Path | str, height: int, width: int, precision: str = "fp32",
                opset: int = 17) -> Path:
    """Write `network` as ONNX with a dynamic batch axis (frames of `height` x `width`, multiples of 32).

    fp16 stores the CLIP backbone's convolution weights in half precision (the bulk of the model); the pixel decoder
    runs in float32 as in the official code, and the mask decoder and the CLIP pooling head stay float32 too. Input
    and outputs stay float32. The half-precision network is a copy (`at_precision`): `network` keeps its float32
    weights and can go on predicting; pass the same `precision` to `check_parity`.
    """
    if height % 32 or width % 32:
        raise ValueError(f"height and width must be multiples of 32 (got {height}x{width})")
    network = at_precision(network, precision)
    device = next(network.parameters()).device
    example = torch.zeros(2, 3, height, width, device=device)
    names = network.output_names
    with export_mode(network), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes read as Python numbers (fixed frame size)
        torch.onnx.export(
            network, (example,), str(path), input_names=["images"], output_names=list(names),
            dynamic_axes={"images": {0: "batch"}, **{name: {0: "batch"} for name in names}},
            opset_version=opset, dynamo=False, do_constant_folding=True,
        )
    return Path(path)


def check_parity(network: FrameNetwork, path: Path | str, images: torch.Tensor, precision: str = "fp32") -> OnnxParity:
    """Run the ONNX file with onnxruntime (CPU) and PyTorch on `images` ``[B, 3, H, W]``; compare every output.

    `precision`: the one the file was exported at; PyTorch runs `network` at it too (an fp16 copy for "fp16", see
    `at_precision`), so the differences are the runtimes', not float16 rounding's.
    """
    import numpy as np
    import onnxruntime

    network = at_precision(network, precision)

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_type = session.get_inputs()[0].type
    feed = images.cpu().numpy().astype(np.float16 if "float16" in input_type else np.float32)
    results = session.run(None, {"images": feed})
    parameter = next(network.parameters())
    with torch.no_grad():
        expected = network(torch.from_numpy(feed).to(parameter.device, parameter.dtype))
    diffs = {
        name: float(np.abs(got.astype(np.float64) - want.float().cpu().numpy().astype(np.float64)).max())
        if got.size else 0.0
        for name, got, want in zip(network.output_names, results, expected, strict=True)
    }
    return OnnxParity(diffs, int(images.shape[0]))
