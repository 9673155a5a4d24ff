"""How a ``device`` argument is read (``clipvis.model.devices.resolve_device``, used by ``load_model`` and
``VideoPredictor``): one ValueError line, before any file is read, for a device this machine has not got."""

from __future__ import annotations

import pytest
import torch

from clipvis import VideoPredictor, load_model
from clipvis.model.devices import resolve_device


@pytest.fixture
def no_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without MPS or XPU, whatever this one has."""
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.xpu, "is_available", lambda: False)


@pytest.mark.parametrize("device, reason", [
    ("mps", r"no MPS device is available here \(torch\.backends\.mps\.is_available\(\) is False\)"),
    ("xpu", r"no XPU device is available here \(torch\.xpu\.is_available\(\) is False\)"),
    ("xpu:1", r"no XPU device is available here \(torch\.xpu\.is_available\(\) is False\)"),
    ("vulkan", r"no VULKAN device is available here \(PyTorch has no torch\.vulkan\.is_available\(\) to find one\)"),
    ("meta", r"holds shapes, not data: nothing runs on it"),
])
def test_a_device_this_machine_has_not_got_is_one_value_error(no_accelerators, device, reason) -> None:
    """device='mps', 'xpu' or 'meta' got as far as torch (an AssertionError or RuntimeError when the model moved);
    every device type is checked as 'cuda' is."""
    with pytest.raises(ValueError, match=rf"^device '{device}'(: | ){reason}; use device='cpu'$"):
        resolve_device(device)
    with pytest.raises(ValueError, match=reason):
        resolve_device(torch.device(device))


def test_load_model_refuses_such_a_device_before_reading_the_file(no_accelerators, tmp_path, tiny_model) -> None:
    """load_model(path, device='mps') failed only after the whole checkpoint was read."""
    with pytest.raises(ValueError, match=r"^device 'mps': no MPS device is available here"):
        load_model(tmp_path / "not-read.safetensors", device="mps")
    with pytest.raises(ValueError, match=r"^device 'meta' holds shapes"):
        VideoPredictor(tiny_model, ["box"], device="meta", text_cache=False)


def test_an_available_device_is_taken_and_its_index_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    monkeypatch.setattr(torch.xpu, "device_count", lambda: 2)
    assert resolve_device("xpu:1") == torch.device("xpu:1")
    with pytest.raises(ValueError, match=r"^device 'xpu:2': this machine has 2 XPU device\(s\), xpu:0 to xpu:1$"):
        resolve_device("xpu:2")
    assert resolve_device("cpu") == torch.device("cpu")
