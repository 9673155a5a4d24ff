"""Test-time frame preprocessing: shortest-edge resize, CLIP normalisation, padding (docs/fidelity.md, "Frames")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from clipvis.model.config import BACKBONE_STRIDE
from clipvis.model.transfer import to_device


def resized_shape(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """detectron2 ResizeShortestEdge output size (``int(x + 0.5)`` rounding); ``short_edge`` 0 leaves the frame as
    it is, ``max_size`` aside (detectron2's NoOpTransform: ``INPUT.MIN_SIZE_TEST: 0`` disables the test resize)."""
    if short_edge == 0:
        return height, width
    scale = short_edge / min(height, width)
    new_h, new_w = (short_edge, scale * width) if height < width else (scale * height, short_edge)
    if max(new_h, new_w) > max_size:
        rescale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * rescale, new_w * rescale
    return int(new_h + 0.5), int(new_w + 0.5)


def padded_shape(height: int, width: int, divisibility: int) -> tuple[int, int]:
    """The size an image of ``height`` x ``width`` is padded to: up to multiples of ``divisibility`` (1 or below: no
    padding, as detectron2's ``ImageList.from_tensors`` takes 0), and to at least ``BACKBONE_STRIDE`` pixels a side,
    the least the backbones run (a thin frame with no padding failed inside torch)."""
    if divisibility > 1:
        height, width = -(-height // divisibility) * divisibility, -(-width // divisibility) * divisibility
    return max(height, BACKBONE_STRIDE), max(width, BACKBONE_STRIDE)


def normalise_padded(images: torch.Tensor, sizes: list[tuple[int, int]], mean: torch.Tensor,
                     std: torch.Tensor) -> torch.Tensor:
    """A padded batch normalised, its padding zero (as the official ImageList pads after normalising).

    ``images`` ``[B, 3, Hp, Wp]`` pixel values (uint8 or float), each image in the top-left ``sizes[b]`` = (h, w) of
    its frame; ``mean``, ``std`` ``[1, 3, 1, 1]`` (or broadcastable) on the images' device -> ``[B, 3, Hp, Wp]``
    float32: ``(images - mean) / std`` inside each image, 0 in the padding.
    """
    images = (images.float() - mean) / std
    valid = torch.zeros(images.shape[0], 1, *images.shape[2:], device=images.device)
    for i, (h, w) in enumerate(sizes):
        valid[i, :, :h, :w] = 1
    return images * valid


def check_uint8_frames(frames: np.ndarray | torch.Tensor, layout: str = "[B, H, W, 3]", where: str = "") -> None:
    """Raise TypeError, saying how to convert, unless ``frames`` (an array or tensor) is uint8: float frames in
    [0, 1] would be classified as near black, and a copy into a uint8 batch would wrap 16-bit ones. ``where``
    prefixes the message (``"frame 3: "``)."""
    if frames.dtype in (np.uint8, torch.uint8):
        return
    tensor = isinstance(frames, torch.Tensor)
    floating = frames.dtype.is_floating_point if tensor else frames.dtype.kind == "f"
    size = frames.numel() if tensor else frames.size
    largest = float(frames.max()) if floating and size else 0.0
    if floating and largest > 1.0:  # already 0..255: scaling by 255 would wrap nearly every pixel
        convert = ("frames.clamp(0, 255).round().to(torch.uint8)" if tensor else
                   "np.clip(frames, 0, 255).round().astype(np.uint8)")
        hint = f"float values up to {largest:g}: round and convert: {convert}"
    elif floating:
        convert = "(frames * 255).round().to(torch.uint8)" if tensor else "(frames * 255).round().astype(np.uint8)"
        hint = f"scale floats in [0, 1] by 255 and convert: {convert}"
    elif frames.dtype in (np.bool_, torch.bool):
        scaled = "frames.to(torch.uint8) * 255" if tensor else "frames.astype(np.uint8) * 255"
        hint = f"masks are no frames; to see a boolean image as one: {scaled}"
    else:
        as_bytes = "frames.to(torch.uint8)" if tensor else "frames.astype(np.uint8)"
        shifted = "(frames >> 8).to(torch.uint8)" if tensor else "(frames >> 8).astype(np.uint8)"
        hint = (f"convert to 8 bits per channel: values in 0..255 with {as_bytes}, 16-bit values (0..65535) with "
                f"{shifted}")
    raise TypeError(f"{where}expected uint8 RGB frames {layout}, got {frames.dtype} ({hint})")


def frame_batch(frames: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``frames`` checked as a batch of uint8 RGB frames ``[B, H, W, 3]`` (a single ``[H, W, 3]`` frame gets its batch
    dimension; a read-only array is copied): TypeError for anything but a uint8 array or tensor, ValueError for another
    layout or an empty batch, each message saying how to convert where it can. What ``VideoSession.push`` and
    :class:`FramePreprocessor` take."""
    if not isinstance(frames, np.ndarray | torch.Tensor):
        hint = ("np.stack(frames)" if isinstance(frames, list | tuple) else
                "np.asarray(image.convert('RGB'))" if hasattr(frames, "convert") else "np.asarray(frames)")
        raise TypeError(f"expected uint8 RGB frames [B, H, W, 3] as a numpy array or torch tensor, got "
                        f"{type(frames).__name__} ({hint})")
    check_uint8_frames(frames)
    if isinstance(frames, np.ndarray) and not frames.flags.writeable:
        frames = frames.copy()  # torch.from_numpy warns about read-only memory (a decoded buffer, np.broadcast_to)
    if frames.ndim == 3 and frames.shape[-1] == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB frames [B, H, W, 3], got shape {tuple(frames.shape)}"
                         f"{layout_hint(frames)}")
    if frames.shape[0] == 0:
        raise ValueError("an empty batch: push at least one frame")
    return frames


def layout_hint(frames: np.ndarray | torch.Tensor, name: str = "frames") -> str:
    """How to make frames of a layout ``push`` does not take ``[B, H, W, 3]`` (or ``[H, W, 3]``), where it looks
    like a common one (RGBA, channels first, grayscale), as code on the variable ``name``: `` (RGBA? drop the alpha
    channel: frames[..., :3])``; "" otherwise. A message helper (no tensor is touched: the shape alone is read)."""
    tensor = isinstance(frames, torch.Tensor)
    shape = tuple(frames.shape)
    if len(shape) in (3, 4) and shape[-1] == 4:
        return f" (RGBA? drop the alpha channel: {name}[..., :3])"
    if len(shape) in (3, 4) and shape[-3] in (3, 4) and shape[-1] not in (1, 3, 4):
        order = (0, 2, 3, 1) if len(shape) == 4 else (1, 2, 0)
        move = f"{name}.permute{order}" if tensor else f"np.transpose({name}, {order})"
        return f" (channels first? move them last: {move})"
    if len(shape) in (2, 3) or (len(shape) == 4 and shape[-1] == 1):
        gray = name if shape[-1] == 1 else f"{name}[..., None]"  # [B, H, W, 1], or [H, W] / [B, H, W]
        copy = f"{gray}.repeat_interleave(3, -1)" if tensor else f"np.repeat({gray}, 3, axis=-1)"
        return f" (grayscale? repeat it into 3 channels: {copy})"
    return ""


@dataclass(frozen=True)
class FrameGeometry:
    """Sizes of one video's frames through the pipeline (all frames of a video share them)."""

    original: tuple[int, int]  # H, W of the decoded frames
    resized: tuple[int, int]  # h, w after the test resize
    padded: tuple[int, int]  # Hp, Wp (multiple of the size divisibility, at least BACKBONE_STRIDE)

    @property
    def mask_size(self) -> tuple[int, int]:
        return self.padded[0] // 4, self.padded[1] // 4


class FramePreprocessor:
    """uint8 RGB frames -> normalised, padded float batches on the model's device.

    ``exact=True`` reproduces the official path bit for bit (PIL bilinear resize of uint8 on the CPU);
    otherwise the resize runs on the device with antialiased bilinear interpolation (PIL-like, much faster
    on GPU), rounded back to uint8 values.
    """

    def __init__(
        self,
        short_edge: int,
        max_size: int,
        divisibility: int,
        pixel_mean: tuple[float, float, float],
        pixel_std: tuple[float, float, float],
        exact: bool = False,
    ) -> None:
        self.short_edge = short_edge
        self.max_size = max_size
        self.divisibility = divisibility
        self.pixel_mean = torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.pixel_std = torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1)
        self.exact = exact
        self._on_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}  # mean and std, copied once

    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel mean and std ``[1, 3, 1, 1]`` on ``device``: copied there on first use only (a copy from the host
        waits for the device)."""
        device = torch.device(device)
        if device not in self._on_device:
            self._on_device[device] = (self.pixel_mean.to(device), self.pixel_std.to(device))
        return self._on_device[device]

    def geometry(self, height: int, width: int) -> FrameGeometry:
        if height < 1 or width < 1:
            raise ValueError(f"frames of {width}x{height} pixels have nothing to segment")
        resized = resized_shape(height, width, self.short_edge, self.max_size)
        if min(resized) < 1:
            raise ValueError(f"frames of {width}x{height} are too thin: the model's resize makes them "
                             f"{resized[1]}x{resized[0]}")
        return FrameGeometry((height, width), resized, padded_shape(*resized, self.divisibility))

    def resize_exact(self, frames: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """PIL bilinear on uint8, frame by frame: ``[B, H, W, 3]`` uint8 -> ``[B, h, w, 3]`` uint8 (CPU)."""
        from PIL import Image

        array = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
        out = [np.asarray(Image.fromarray(f).resize((size[1], size[0]), Image.BILINEAR)) for f in array]
        return torch.from_numpy(np.stack(out))

    @staticmethod
    def _resize(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``[1, H, W, 3]`` uint8 -> ``[1, 3, h, w]`` float of uint8 values: antialiased bilinear, rounded."""
        x = frame.permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x.round_().clamp_(0, 255)

    def __call__(self, frames: np.ndarray | torch.Tensor, device: torch.device) -> tuple[torch.Tensor, FrameGeometry]:
        """frames ``[B, H, W, 3]`` uint8 RGB (or one ``[H, W, 3]`` frame) -> (``[B, 3, Hp, Wp]`` float32 on device,
        geometry). Other frames raise as :func:`frame_batch` says."""
        frames = frame_batch(frames)
        height, width = int(frames.shape[1]), int(frames.shape[2])
        geo = self.geometry(height, width)
        same_size = geo.resized == geo.original
        if self.exact and not same_size:
            frames = self.resize_exact(frames, geo.resized)  # uint8 at the resized size
        if not isinstance(frames, torch.Tensor):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        frames = to_device(frames, device)
        mean, std = self._normalisation(device)
        # Frame by frame into the padded batch: a float copy of one full-resolution frame at a time, not of the batch
        # (a 4K batch of 8 in float32 is 800 MB; three such copies while it was normalised and padded), each frame
        # normalised in place where it lies; the padding stays 0. The values are those of `(x - mean) / std`.
        h, w = geo.resized
        x = torch.zeros((frames.shape[0], 3, *geo.padded), dtype=torch.float32, device=device)
        for index, frame in enumerate(frames):
            if self.exact or same_size:
                pixels = frame.permute(2, 0, 1)[None]
            else:  # each frame's resize is independent of the others': the same values as the batch's
                pixels = self._resize(frame[None], geo.resized)
            x[index : index + 1, :, :h, :w].copy_(pixels).sub_(mean).div_(std)
        return x, geo
