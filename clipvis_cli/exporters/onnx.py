"""`clipvis export --to onnx`: the per-frame network (`clipvis.model.onnx_export.FrameNetwork`) written as an
ONNX file with a dynamic batch axis, and its onnxruntime parity check against PyTorch."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from clipvis.model.onnx_export import FrameNetwork, export_mode, half_backbone


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
    import onnx  # before minutes of tracing

    network = at_precision(network, precision)
    device = next(network.parameters()).device
    example = torch.zeros(2, 3, height, width, device=device)
    names = network.output_names
    traced: list[tuple[int, ...]] = []

    def record_shapes(module: torch.nn.Module, inputs: object, outputs: tuple[torch.Tensor, ...]) -> None:
        traced[:] = [tuple(output.shape) for output in outputs]

    hook = network.register_forward_hook(record_shapes)
    try:
        with export_mode(network), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about shapes read as Python numbers (fixed frame size)
            torch.onnx.export(
                network, (example,), str(path), input_names=["images"], output_names=list(names),
                dynamic_axes={"images": {0: "batch"}, **{name: {0: "batch"} for name in names}},
                opset_version=opset, dynamo=False, do_constant_folding=True,
            )
    finally:
        hook.remove()
    _fix_output_shapes(onnx, Path(path), dict(zip(names, traced, strict=True)))
    return Path(path)


def _fix_output_shapes(onnx: ModuleType, path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Declare every output's shape in the file: ``batch`` first, then the sizes the fixed frame size gives (queries,
    mask size, embedding width, classes). The exporter's shape inference loses some of them behind an Einsum or an
    Add and names them after it (``clip_embeds [batch, Einsummask_logits_dim_3, E]``), so the same query axis read
    as a fixed size in one output and as an unknown in another."""
    model = onnx.load(str(path), load_external_data=False)  # the weights, if stored beside it, stay where they are
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for axis, size in enumerate(shapes[output.name]):
            if axis == 0:
                dims.add().dim_param = "batch"
            else:
                dims.add().dim_value = size
    onnx.save(model, str(path))


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
