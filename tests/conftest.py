"""Fixtures shared by the test modules."""

import pytest

from decorbench.meters import energy as energy_module


@pytest.fixture
def fake_nvml_gpus(monkeypatch):
    """Tests with a fake NVML find its GPUs as on a machine without CUDA, whatever GPUs and CUDA_VISIBLE_DEVICES
    this one has (a test that needs either sets it)."""
    monkeypatch.setattr(energy_module, "torch_pci_bus_id", lambda index: None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
