"""clipvis.model.preprocess: resize rounding and padding, the frame checks push makes, training batches
normalised as single frames, and frame-size errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clipvis.model.preprocess import FramePreprocessor, normalise_padded, padded_shape, resized_shape


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


def test_without_padding_a_thin_frame_is_padded_to_the_backbones_stride_and_runs(tiny_model_factory) -> None:
    """``size_divisibility`` 0 (no padding, detectron2's SIZE_DIVISIBILITY 0) ran a frame resized to 1 x 128 as it
    was, and the backbone failed inside torch ("output size is too small"): a side under 32 pixels is padded to 32."""
    from clipvis.model.predictor import VideoPredictor

    assert padded_shape(1, 128, 0) == (32, 128) and padded_shape(61, 67, 0) == (61, 67)
    assert padded_shape(1, 128, 32) == (32, 128) and padded_shape(33, 70, 32) == (64, 96)
    predictor = VideoPredictor(tiny_model_factory(size_divisibility=0), ["box"], text_cache=False)
    session = predictor.new_video()
    tracked = session.push(np.zeros((2, 1, 200, 3), np.uint8))
    assert session.geometry.padded == (32, 128) and tracked[1].masks.shape == (8, 1, 200)


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


def test_frame_size_errors_say_width_x_height_as_the_cli_does() -> None:
    pre = FramePreprocessor(64, 128, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"frames of 5x0 pixels have nothing to segment"):
        pre.geometry(0, 5)
    with pytest.raises(ValueError, match=r"frames of 1000x1 are too thin"):
        pre.geometry(1, 1000)
