"""`decorbench env` tells the truth about this machine: what it has, and which meters work here and why not."""

import functools
import re
import sys
import types

import pytest
import torch

from decorbench.env import describe_environment
from decorbench.meters import energy as energy_module
from test_meters import FakeNVML, NVMLError_GpuIsLost, readings


def _nvml_error_here() -> str | None:
    try:
        import pynvml
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return None
    except Exception as e:
        return type(e).__name__


@pytest.fixture(scope="module")
def report() -> str:
    return describe_environment()


def test_lists_hardware_and_versions(report):
    import codecarbon

    assert "decorbench 0.1.0 environment" in report
    for key in ("cpu", "memory", "gpu", "python", "torch", "torchvision", "codecarbon", "nvidia-ml-py"):
        assert f"\n  {key} " in report, key
    assert torch.__version__ in report and codecarbon.__version__ in report
    if not torch.cuda.is_available():
        assert "none visible to torch" in report


def test_says_why_there_is_no_gpu_energy_meter(report):
    error = _nvml_error_here()
    if error is None:
        pytest.skip("NVML works on this machine")
    lines = {line.split("  ")[1].strip(): line for line in report.splitlines() if line.startswith("  ")}
    for meter in ("energy: NVML counter", "energy: NVML power"):
        assert "unavailable: NVML:" in lines[meter] and error in lines[meter]
    if error == "NVMLError_LibraryNotFound":
        assert "no NVIDIA driver (NVMLError_LibraryNotFound)" in lines["nvidia driver"]


def test_meters_that_work_here_say_so_and_carbon_is_labelled_an_estimate(report):
    lines = {line.split("  ")[1].strip(): line for line in report.splitlines() if line.startswith("  ")}
    assert "works" in lines["time"] and "works" in lines["memory"]
    assert "works" in lines["flops"] and "forward 768 FLOPs" in lines["flops"]
    assert re.search(r"works: other processes kept [\d.e-]+ of the \d+ usable cores busy", lines["other work on CPUs"])
    assert "works — an estimate by codecarbon" in lines["carbon: codecarbon"]
    assert "(NLD)" in lines["carbon: codecarbon"] and "Offline, writes no file" in lines["carbon: codecarbon"]


def test_without_codecarbon_the_carbon_line_says_why(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    report = describe_environment()
    assert "carbon: codecarbon    unavailable: codecarbon: cannot import it" in report


def test_skipping_the_carbon_probe_says_so():
    assert "not probed" in describe_environment(probe_carbon=False)


def test_an_nvml_counter_that_fails_when_read_is_reported_as_failing(monkeypatch, fake_nvml_gpus):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # one probed device, cuda:0
    fake = FakeNVML(counter=readings(0, NVMLError_GpuIsLost("GPU is lost")))  # works at the probe, then fails
    monkeypatch.setattr(energy_module, "EnergyMeter", functools.partial(energy_module.EnergyMeter, nvml=fake))
    lines = {line.split("  ")[1].strip(): line for line in describe_environment(probe_carbon=False).splitlines()
             if line.startswith("  ")}
    for meter in ("energy: NVML counter", "energy: NVML power"):
        assert "FAILS on cuda:0 (Fake GPU, NVML index 0" in lines[meter] and "NVMLError_GpuIsLost" in lines[meter]


def test_names_the_commit_runs_will_record_or_why_it_is_unknown(monkeypatch):
    monkeypatch.setenv("PATH", "")  # no git: as in a copy of the checkout on another machine
    monkeypatch.delenv("DECORBENCH_GIT_COMMIT", raising=False)
    assert "0.1.0, commit unknown: git cannot tell" in describe_environment(probe_carbon=False)
    monkeypatch.setenv("DECORBENCH_GIT_COMMIT", "0123456789abcdef")
    assert "0.1.0, commit 0123456789ab (uncommitted changes: unknown)\n" in describe_environment(probe_carbon=False)


@pytest.mark.parametrize("visible, used, why", [("0", 1, "CUDA_VISIBLE_DEVICES='0'"),
                                                (None, 0, "a CPU-only torch build?")])
def test_gpus_nvml_sees_that_torch_does_not_use_are_named(visible, used, why, monkeypatch, fake_nvml_gpus):
    """On a shared 8-GPU node a run meters only its own GPU: `env` says how many the others are, and why."""
    nvml = types.SimpleNamespace(nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 8,
                                 nvmlSystemGetDriverVersion=lambda: "580.65.06")
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: used > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: used)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: types.SimpleNamespace(
        name="NVIDIA H200", total_memory=141 * 2**30, major=9, minor=0))
    monkeypatch.setattr(energy_module, "EnergyMeter", functools.partial(energy_module.EnergyMeter, nvml=FakeNVML()))
    report = describe_environment(probe_carbon=False)
    gpu_lines = [line for line in report.splitlines() if line.startswith("  gpu ")]
    assert f"NVML sees 8 NVIDIA GPU(s), torch uses {used} ({why}" in gpu_lines[-1]
    assert len(gpu_lines) == 2 and "580.65.06" in report
    if used:
        assert "cuda:0 NVIDIA H200, 141.0 GiB" in gpu_lines[0]
