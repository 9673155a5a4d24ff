"""`read_all`, shared by the video_io tests (the synthetic media they read, the `media`, `rotated` and `synth`
fixtures, are tests/clipvis_cli/conftest.py's)."""

from __future__ import annotations

import numpy as np


def read_all(reader) -> tuple[list[int], list[np.ndarray]]:
    pairs = list(reader)
    return [i for i, _ in pairs], [f for _, f in pairs]
