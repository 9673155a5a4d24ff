"""Fixtures shared by the command tests: an isolated cache (the tiny checkpoint is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """CLIPVIS_CACHE in a temp folder and no downloads."""
    monkeypatch.setenv("CLIPVIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CLIPVIS_OFFLINE", "1")
    return tmp_path / "cache"
