"""clipvis.model.position_encoding: the sine position encoding's formula checked by hand."""

from __future__ import annotations

import math

import pytest

from clipvis.model.position_encoding import SinePositionEncoding


def test_sine_position_encoding_formula() -> None:
    pe = SinePositionEncoding(4)(2, 3)
    assert pe.shape == (1, 8, 2, 3)
    # channel 0 of pos_y = sin(y / (h + eps) * 2pi / 10000^0); channel 1 = cos(... / 10000^(0/4)) at (i=1,j=2)
    y_hat = 2 / (2 + 1e-6) * 2 * math.pi
    assert pe[0, 0, 1, 2].item() == pytest.approx(math.sin(y_hat), abs=1e-5)
    assert pe[0, 1, 1, 2].item() == pytest.approx(math.cos(y_hat), abs=1e-5)
    x_hat = 1 / (3 + 1e-6) * 2 * math.pi
    assert pe[0, 6, 0, 0].item() == pytest.approx(math.sin(x_hat / 100), abs=1e-5)  # k=2: 10000^(2/4)
