"""Golden-case locations for the model tests (the tiny models are in tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def fidelity_root() -> Path:
    env = os.environ.get("CLIPVIS_FIDELITY_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "fidelity"


@pytest.fixture(scope="session")
def golden_case():
    """Factory: the folder of a golden case, or skip when ../shared/fidelity is absent."""

    def locate(name: str) -> Path:
        path = fidelity_root() / name
        if not (path / "model.pth").is_file():
            pytest.skip(f"golden case {name} not found at {path} (../shared/fidelity sits beside the checkout in CI)")
        return path

    return locate
