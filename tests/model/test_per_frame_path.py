"""The per-frame path on the device: run lengths as a tensor op (clipvis.model.mask_runs) against a plain reading
of COCO's RLE rule, and frame-by-frame preprocessing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from clipvis.model.mask_runs import MaskRuns, mask_runs, threshold_runs


def reference_runs(mask: np.ndarray) -> list[int]:
    """COCO run lengths by walking the column-major pixels: 0s first, alternating."""
    flat = mask.T.reshape(-1)
    changes = np.flatnonzero(np.diff(np.concatenate([[False], flat])))
    bounds = np.concatenate([[0], changes, [flat.size]])
    return np.diff(bounds).tolist()


def split(counts: torch.Tensor, lengths: torch.Tensor) -> list[list[int]]:
    out, start = [], 0
    for length in lengths.tolist():
        out.append(counts[start : start + length].tolist())
        start += length
    return out


@pytest.mark.parametrize("size", [(1, 1), (1, 9), (9, 1), (7, 3), (13, 17), (48, 85)])
def test_mask_runs_follow_coco_rule_on_random_empty_and_full_masks(size) -> None:
    rng = np.random.default_rng(sum(size))
    masks = rng.random((6, *size)) < np.array([0.5, 0.05, 0.95, 0.5, 0.0, 1.0])[:, None, None]
    masks[4] = False  # empty: [H*W]
    masks[5] = True  # full: [0, H*W]
    counts, lengths = mask_runs(torch.from_numpy(masks))
    assert counts.dtype == torch.int32 and lengths.tolist() == [len(reference_runs(m)) for m in masks]
    assert split(counts, lengths) == [reference_runs(m) for m in masks]
    assert split(counts, lengths)[4] == [size[0] * size[1]] and split(counts, lengths)[5] == [0, size[0] * size[1]]


def test_threshold_runs_equal_runs_of_thresholded_logits() -> None:
    logits = torch.randn(5, 31, 45)
    logits[0] = -1.0
    logits[1, :, :3] = 0.0  # exactly at the threshold: background
    expected = mask_runs(logits > 0)
    got = threshold_runs(logits)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


def test_mask_runs_decode_and_areas() -> None:
    masks = torch.from_numpy(np.random.default_rng(3).random((4, 11, 6)) > 0.6)
    masks[0] = False
    runs = MaskRuns(*mask_runs(masks), size=(11, 6))
    assert torch.equal(runs.to_masks(), masks)
    assert runs.areas().tolist() == masks.flatten(1).sum(1).tolist()
    assert runs.empty.tolist() == [True, False, False, False]


def test_decoding_masks_takes_about_the_memory_of_the_masks() -> None:
    """``frame.masks`` of 100 masks at 1080x1920 (198 MiB) took 1.8 GB more while decoded (an int64 index of every
    pixel): a notebook reading each frame's masks of a 4K video ran out of memory. Measured in a fresh process."""
    script = (
        "import resource, torch\n"
        "from clipvis.model.mask_runs import MaskRuns\n"
        "q, h, w = 100, 1080, 1920\n"
        "counts = torch.tensor([h * w // 3, 40_000, h * w - h * w // 3 - 40_000] * q, dtype=torch.int32)\n"
        "runs = MaskRuns(counts, torch.full((q,), 3, dtype=torch.int64), (h, w))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "masks = runs.to_masks()\n"
        "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
        "assert masks.shape == (q, h, w) and int(masks[7].sum()) == 40_000, masks.shape\n"
        "print(grown // 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    grown_mib = int(result.stdout)
    assert grown_mib < 3 * 198, f"decoding 198 MiB of masks took {grown_mib} MiB more"


def test_every_reading_of_the_run_lengths_waits_for_their_copy_to_the_host() -> None:
    """On CUDA the run lengths come back by a non-blocking copy: each accessor waits for it before reading
    (``lengths`` read too early would be whatever the pinned buffer held)."""

    class CopyInFlight:
        def __init__(self) -> None:
            self.waited = 0

        def synchronize(self) -> None:
            self.waited += 1

    masks = torch.from_numpy(np.random.default_rng(4).random((3, 5, 7)) > 0.5)
    for read in (lambda r: r.empty, lambda r: r.offsets, lambda r: r.areas(), lambda r: r.to_masks()):
        copy = CopyInFlight()
        runs = MaskRuns(*mask_runs(masks), size=(5, 7), ready=copy)
        read(runs)
        assert copy.waited == 1 and runs.ready is None


def test_no_masks_and_bad_input() -> None:
    counts, lengths = mask_runs(torch.zeros(0, 4, 5, dtype=torch.bool))
    assert counts.numel() == 0 and lengths.numel() == 0
    with pytest.raises(ValueError, match="bool"):
        mask_runs(torch.zeros(2, 4, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda_equal_cpu() -> None:
    logits = torch.randn(7, 123, 77)
    cpu = threshold_runs(logits)
    gpu = threshold_runs(logits.cuda())
    assert all(torch.equal(a, b.cpu()) for a, b in zip(cpu, gpu, strict=True))


def test_frame_by_frame_resize_equals_the_batch_resize() -> None:
    """The preprocessor resizes one frame at a time (bounded memory at 4K): same values as one batched resize."""
    import torch.nn.functional as F

    from clipvis.model.preprocess import FramePreprocessor

    frames = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 90, 161, 3), dtype=np.uint8))
    pre = FramePreprocessor(64, 128, 32, (120.0, 110.0, 100.0), (60.0, 50.0, 40.0))
    images, geo = pre(frames, torch.device("cpu"))
    batch = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=geo.resized, mode="bilinear",
                          align_corners=False, antialias=True).round_().clamp_(0, 255)
    batch = (batch - pre.pixel_mean) / pre.pixel_std
    assert torch.equal(images[..., : geo.resized[0], : geo.resized[1]], batch)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_a_push_waits_for_the_device_once_per_batch_plus_once_per_frame_for_the_run_lengths(tiny_model_factory,
                                                                                          tmp_path) -> None:
    """What the host needs (the matcher's embeddings, the scores, TrackedFrame's values) crosses once per batch; only
    the run lengths' ``nonzero`` waits for the device once per frame (one chunk of queries at this size). A wait per
    frame more would leave the GPU idle between frames (docs/streaming.md)."""
    import warnings

    from clipvis.model import VideoPredictor

    predictor = VideoPredictor(tiny_model_factory(), ["box", "sky", "road"], device="cuda", cache_dir=tmp_path)
    frames = np.random.default_rng(0).integers(0, 255, (8, 48, 80, 3), dtype=np.uint8)

    def waits(batch: int) -> int:
        session = predictor.new_video()
        session.push(frames[:batch])  # the first batch sets the video's geometry and the matcher's memory
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                tracked = session.push(frames[batch : 2 * batch])
            finally:
                torch.cuda.set_sync_debug_mode("default")
        for frame in tracked:
            frame.mask_runs.wait()
        return sum("synchroniz" in str(warning.message) for warning in caught)

    one, four = waits(1), waits(4)
    assert four - one <= 3, f"{one} waits for 1 frame, {four} for 4"
