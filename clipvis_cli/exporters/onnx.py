"""`clipvis export --to onnx`: the per-frame network (`clipvis.model.onnx_export.FrameNetwork`) written as an
ONNX file with a dynamic batch axis, and its onnxruntime parity check against PyTorch."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from clipvis.model.onnx_export import FrameNetwork, at_precision, export_mode, float32_outputs

# The logits that rank and label the tracks: held to an absolute bar in fp32.
LOGIT_OUTPUTS = ("object_logits", "class_logits")
# fp32: the largest absolute difference allowed on LOGIT_OUTPUTS (runtimes' float32 rounding: ~1e-7 on the tiny test
# models, ~4e-4 on the case1 checkpoint at 128x256), and on each other output that much per unit of its largest
# magnitude, at least 1 (masks, ious, the matcher's query embeddings, the CLIP embeddings a free vocabulary's classes
# are scored from: a broken file without class_logits is refused too). case1 at 128x256: mask_logits 2.7e-4 of
# magnitude 11.7, query_embeds 4e-5, ious 1.7e-5, clip_embeds and clip_dense ~3e-7.
FP32_BAR = 1e-3
# fp16: the largest difference allowed on every output as a fraction of the output's largest magnitude. A float16
# trunk is not float32: measured against the float32 network, ~0.03% on the tiny test models and up to ~10% on the
# case1 checkpoint at 128x256 (clip_embeds 0.07 of 0.68; object_logits 0.16 of 5.9, class_logits 0.65 of 18.9,
# mask_logits 0.57 of 11.7).
FP16_RELATIVE_BAR = 0.2


@dataclass
class OnnxParity:
    """Max absolute difference per output between onnxruntime running the file and the float32 PyTorch network.

    `scale`: each output's largest magnitude in PyTorch (what a difference is measured against, but on the fp32
    logits). `precision`: the file's ("fp32" or "fp16"), which decides the bar (`exceeded`). `frame_diffs`: each
    output's max absolute difference on each frame of the batch (`frames_past`).
    """

    max_abs_diff: dict[str, float]
    batch: int
    scale: dict[str, float] = field(default_factory=dict)
    precision: str = "fp32"
    frame_diffs: dict[str, list[float]] = field(default_factory=dict)

    def worst(self, names: tuple[str, ...] = LOGIT_OUTPUTS) -> float:
        return max((v for k, v in self.max_abs_diff.items() if k in names), default=0.0)

    def bar(self, name: str) -> float:
        """The largest difference allowed on output `name` at the file's precision."""
        magnitude = self.scale.get(name, 0.0)
        if self.precision == "fp16":
            return FP16_RELATIVE_BAR * magnitude
        return FP32_BAR if name in LOGIT_OUTPUTS else FP32_BAR * max(1.0, magnitude)

    def exceeded(self) -> dict[str, float]:
        """The outputs whose difference is past the bar, with their differences."""
        return {name: diff for name, diff in self.max_abs_diff.items()
                if not diff <= self.bar(name)}  # a NaN difference is past any bar

    def frames_past(self) -> list[int]:
        """The frames of the batch (from 0) on which some output is past its bar."""
        return [frame for frame in range(self.batch)
                if any(not diffs[frame] <= self.bar(name) for name, diffs in self.frame_diffs.items())]

    def describe_bar(self) -> str:
        if self.precision == "fp16":
            return f"{FP16_RELATIVE_BAR:.0%} of each output's largest magnitude"
        logits = ", ".join(name for name in LOGIT_OUTPUTS if name in self.max_abs_diff)
        return f"{FP32_BAR:.0e} on {logits}, {FP32_BAR:.0e} x the largest magnitude (at least 1) on the others"


# The oldest opset the network exports to (its ops need 16: grid_sample and the others).
MIN_OPSET = 16
DEFAULT_OPSET = 17


def supported_opsets() -> range:
    """The opsets `export_onnx` accepts: MIN_OPSET up to the newest the installed torch's TorchScript exporter
    supports (it writes a newer number with a warning, but ops of its newest one)."""
    from torch.onnx import _constants

    newest = getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", None) or _constants.ONNX_MAX_OPSET
    return range(MIN_OPSET, int(newest) + 1)


@contextmanager
def stdout_captured() -> Iterator[None]:
    """Keep everything written to standard output, by Python or by C++ (file descriptor 1), out of it while the
    block runs: the TorchScript exporter logs the whole graph there when it fails ("Torch IR graph at exception"),
    and a command's stdout carries only the files it wrote. What was written is dropped."""
    if sys.stdout is not None:  # None where the process started with stdout closed (`>&-`)
        with suppress(OSError):  # a full or gone stdout: what was printed before is not this block's to say
            sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no file descriptor 1 (a closed stdout): only Python's to keep clean
        with redirect_stdout(io.StringIO()):
            yield
        return
    try:
        with tempfile.TemporaryFile() as sink, redirect_stdout(io.StringIO()):
            os.dup2(sink.fileno(), 1)
            try:
                yield
            finally:
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def network_metadata(network: FrameNetwork, height: int, width: int, precision: str) -> dict[str, str]:
    """The file's `metadata_props` that the network gives (README "ONNX" lists them): strings, JSON where a value
    is a list. `classes`: the baked vocabulary in `class_logits` column order, each class as [name, synonyms...]
    (`[]`: free vocabulary, no class_logits)."""
    from clipvis import __version__

    config = network.model.config
    text = network.text
    classes = [] if text is None else [[part.strip() for part in entry.split(",")] for entry in text.vocabulary]
    return {
        "clipvis_version": __version__,
        "classes": json.dumps(classes, ensure_ascii=False),
        "precision": precision,
        "input_size": json.dumps([height, width]),
        "pixel_mean": json.dumps([float(v) for v in config.pixel_mean]),
        "pixel_std": json.dumps([float(v) for v in config.pixel_std]),
        "min_size_test": str(config.min_size_test),
        "max_size_test": str(config.max_size_test),
        "size_divisibility": str(config.size_divisibility),
        "zero_logits_of_empty_masks": json.dumps(bool(network.model.mask_pooler.zero_logits_of_empty_masks)),
    }


def export_onnx(network: FrameNetwork, path: Path | str, height: int, width: int, precision: str = "fp32",
                opset: int = DEFAULT_OPSET, metadata: dict[str, str] | None = None) -> Path:
    """Write `network` as ONNX with a dynamic batch axis (frames of `height` x `width`, multiples of 32).

    fp16 stores the CLIP backbone's convolution weights in half precision (the bulk of the model); the pixel decoder
    runs in float32 as in the official code, and the mask decoder and the CLIP pooling head stay float32 too. Input
    and outputs stay float32. The half-precision network is a copy (`at_precision`): `network` keeps its float32
    weights and can go on predicting; pass the same `precision` to `check_parity`. `opset`: one of
    `supported_opsets()`. What torch's exporter prints goes to standard output as it does (a failed export dumps
    its whole graph there): `clipvis export` runs this under `stdout_captured`, a program of its own may too (it
    swallows every thread's standard output while it is entered). The file's
    `metadata_props` are `network_metadata` and then `metadata` (the caller's, e.g. the checkpoint's identity).
    """
    if height % 32 or width % 32:
        raise ValueError(f"height and width must be multiples of 32 (got {height}x{width})")
    opsets = supported_opsets()
    if opset not in opsets:
        raise ValueError(f"opset must be {opsets.start} to {opsets.stop - 1}, not {opset}")
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
    props = {**network_metadata(network, height, width, precision), **(metadata or {})}
    _finish_file(onnx, Path(path), dict(zip(names, traced, strict=True)), props)
    return Path(path)


def _finish_file(onnx: ModuleType, path: Path, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]) -> None:
    """Declare every output's shape in the file: ``batch`` first, then the sizes the fixed frame size gives (queries,
    mask size, embedding width, classes). The exporter's shape inference loses some of them behind an Einsum or an
    Add and names them after it (``clip_embeds [batch, Einsummask_logits_dim_3, E]``), so the same query axis read
    as a fixed size in one output and as an unknown in another. Then set the file's `metadata_props`."""
    model = onnx.load(str(path), load_external_data=False)  # the weights, if stored beside it, stay where they are
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        del dims[:]
        for axis, size in enumerate(shapes[output.name]):
            if axis == 0:
                dims.add().dim_param = "batch"
            else:
                dims.add().dim_value = size
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def check_parity(network: FrameNetwork, path: Path | str, images: torch.Tensor, precision: str = "fp32") -> OnnxParity:
    """Run the ONNX file with onnxruntime (CPU) and the float32 PyTorch `network` on `images` ``[B, 3, H, W]``;
    compare every output.

    The reference is always the float32 network (the truth), whatever precision the file was exported at:
    `precision` (the file's) only sets the bar the result is judged by (`OnnxParity.exceeded`): for "fp32" the
    runtimes' rounding (FP32_BAR), for "fp16" the float16 trunk's own error (FP16_RELATIVE_BAR), which is far larger.
    """
    import numpy as np
    import onnxruntime

    if precision not in ("fp32", "fp16"):
        raise ValueError(f"precision must be fp32 or fp16, not {precision!r}")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_type = session.get_inputs()[0].type
    feed = images.cpu().numpy().astype(np.float16 if "float16" in input_type else np.float32)
    results = session.run(None, {"images": feed})
    expected = float32_outputs(network, images)
    diffs: dict[str, float] = {}
    scale: dict[str, float] = {}
    frame_diffs: dict[str, list[float]] = {}
    for name, got, want in zip(network.output_names, results, expected, strict=True):
        reference = want.cpu().numpy().astype(np.float64)
        difference = np.abs(got.astype(np.float64) - reference).reshape(len(reference), -1)
        frame_diffs[name] = [float(row.max()) if row.size else 0.0 for row in difference]
        diffs[name] = max(frame_diffs[name], default=0.0)
        scale[name] = float(np.abs(reference).max()) if reference.size else 0.0
    return OnnxParity(diffs, int(images.shape[0]), scale, precision, frame_diffs)


# Random batches checked after a first batch with a frame past the bar. A value the network thresholds (an attention
# or pooling mask logit, `sigmoid(x) < 0.5`) that lies within float32 rounding of 0 on a frame can fall on either side
# in another runtime, and with a sharp cross-attention one flip changes that frame's queries from there on
# (docs/fidelity.md, "Attention-mask threshold"): the golden case1 checkpoint at 256x448 is past the 1e-3 bar on 2 of
# 12 random frames (a pooling pixel 9.3e-6 from 0: clip_embeds 1.02e-3 on one frame, object logits 1.7e-3 on another,
# where the others are 2-5e-4) and the file is right; such a frame is past the bar by less than 2x. A file that is
# wrong (an operator exported with other arithmetic, a batch axis mishandled) is past it on every frame, or on every
# frame at some batch position, or far past it. So a file is refused when half of the frames checked or more are past
# the bar, or when any frame is more than FLIP_EXCUSED times past it.
RECHECK_BATCHES = 3
FLIP_EXCUSED = 10.0


@dataclass
class ParityVerdict:
    """The parity checks of one export: `checks[0]` on the first random batch, then up to RECHECK_BATCHES more when
    a frame of it was past the bar. `frames_past`/`frames`: the frames past the bar of the frames checked;
    `exceeded`: the largest differences past the bar over the checks, when the file is refused (half of the frames
    or more past the bar, or one more than FLIP_EXCUSED times past it; empty: it reproduces PyTorch)."""

    checks: list[OnnxParity]
    frames_past: int
    frames: int
    exceeded: dict[str, float]


def judge_parity(network: FrameNetwork, path: Path | str, height: int, width: int, precision: str = "fp32",
                 on_check: Callable[[OnnxParity], None] | None = None, batch: int = 2) -> ParityVerdict:
    """Check the ONNX file at `path` against the float32 `network` on `batch` random frames ``[batch, 3, height,
    width]`` (seed 0; `check_parity`); when a frame is past the bar, on up to RECHECK_BATCHES more random batches
    (seeds 1, 2, ...), until half of all the frames are past the bar, or one is far past it (the file is refused), or
    that can no longer happen (it is not). ``on_check`` is called with each check as it ends."""
    checks: list[OnnxParity] = []
    total = batch * (1 + RECHECK_BATCHES)
    past = 0
    far = False
    for seed in range(1 + RECHECK_BATCHES):
        images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))
        checks.append(check_parity(network, path, images, precision=precision))
        if on_check is not None:
            on_check(checks[-1])
        past += len(checks[-1].frames_past())
        far = far or any(diff > FLIP_EXCUSED * checks[-1].bar(name) for name, diff in checks[-1].exceeded().items())
        remaining = total - batch * len(checks)
        if past == 0 or far or 2 * past >= total or 2 * (past + remaining) < total:
            break
    refused = far or 2 * past >= total
    worst: dict[str, float] = {}
    for parity in checks if refused else []:
        for name, diff in parity.exceeded().items():
            worst[name] = max(worst.get(name, diff), diff)
    return ParityVerdict(checks, past, batch * len(checks), worst)
