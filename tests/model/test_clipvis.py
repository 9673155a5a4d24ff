"""clipvis.model.clipvis: what the network takes (ClipVis.forward / forward_train refuse other input, naming it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.mark.parametrize(("images", "error", "message"), [
    (torch.zeros(1, 3, 64, 96, dtype=torch.uint8), TypeError, r"images are torch.uint8 \(pixel values\?\): pass a "
                                                              r"float tensor \[B, 3, H, W\], normalised and padded, as "
                                                              r"predictor.preprocessor\(frames, device\) makes it"),
    (torch.zeros(1, 64, 96, 3), ValueError, r"images of shape \(1, 64, 96, 3\) \(channels last\? "
                                            r"images.permute\(0, 3, 1, 2\)\): pass a float tensor"),
    (torch.zeros(3, 64, 96), ValueError, r"images of shape \(3, 64, 96\): pass a float tensor \[B, 3, H, W\]"),
    (np.zeros((1, 3, 64, 96), np.float32), TypeError, "images is a numpy array: pass a float tensor"),
    (torch.zeros(0, 3, 64, 96), ValueError, r"images is an empty batch \(0, 3, 64, 96\): give at least one image"),
    (torch.zeros(1, 3, 20, 96), ValueError, "images of 96x20 pixels are smaller than the backbone's stride: pad them "
                                            "to at least 32 pixels a side"),
])
def test_input_the_network_cannot_take_is_refused_naming_images_and_what_to_pass(tiny_model, images, error, message):
    """uint8 pixel values ran without a word (garbage outputs); channels last, numpy, an empty batch and a thin
    image failed deep inside torch (a convolution's channel count, AttributeError, a reshape, a pooling)."""
    with pytest.raises(error, match=f"^ClipVis.forward: {message}"):
        tiny_model(images)
    with pytest.raises(error, match=f"^ClipVis.forward_train: {message}"):
        tiny_model.forward_train(images)

