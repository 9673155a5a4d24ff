"""Test-time frame preprocessing: shortest-edge resize, CLIP normalisation, padding (docs/fidelity.md, "Frames")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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
    if divisibility <= 1:
        return height, width
    return -(-height // divisibility) * divisibility, -(-width // divisibility) * divisibility


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


@dataclass(frozen=True)
class FrameGeometry:
    """Sizes of one video's frames through the pipeline (all frames of a video share them)."""

    original: tuple[int, int]  # H, W of the decoded frames
    resized: tuple[int, int]  # h, w after the test resize
    padded: tuple[int, int]  # Hp, Wp (multiple of the size divisibility)

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
        """frames ``[B, H, W, 3]`` uint8 RGB -> (``[B, 3, Hp, Wp]`` float32 on device, geometry)."""
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
