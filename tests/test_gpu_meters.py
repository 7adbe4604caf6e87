"""The meters on a real NVIDIA GPU: the right board found through NVML, joules and seconds of real work in plausible
ranges, the allocator's peak. Skipped without CUDA (reports/scripts/gpu_session.sh runs them on a GPU)."""

import pytest
import torch

from decorbench.meters import EnergyMeter, Stopwatch, peak_memory_bytes, reset_peak_memory

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _busy(device: torch.device, seconds: float) -> int:
    """Matrix products for about `seconds` (timed on the host after a sync); returns how many."""
    a = torch.randn(4096, 4096, device=device)
    stopwatch, n = Stopwatch(device), 0
    stopwatch.start()
    while stopwatch.stop() < seconds:
        stopwatch.start()
        for _ in range(20):
            a = torch.tanh(a @ a)
        n += 20
    return n


def test_the_meter_finds_the_gpu_torch_uses_and_measures_busy_seconds_within_board_power_limits():
    device = torch.device("cuda", torch.cuda.current_device())
    with EnergyMeter(device) as meter:
        assert meter.source in ("nvml-counter", "nvml-power"), meter.unavailable_reason
        assert meter.mapping.startswith("PCI bus id"), meter.mapping  # torch told us the address
        import pynvml
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        by_uuid = pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}")
        assert pynvml.nvmlDeviceGetIndex(by_uuid) == meter.nvml_index
        if meter.source == "nvml-counter":  # published: it moves every 20-100 ms; the edge bound rests on it
            assert 1e-3 <= (meter.counter_interval_s(0.5) or 0) <= 0.25, meter.warnings
        stopwatch = Stopwatch(device)
        stopwatch.start()
        meter.begin_window()
        _busy(device, 2.0)
        seconds = stopwatch.stop()
        joules = meter.end_window()
    assert joules is not None, meter.unavailable_reason
    watts = joules / seconds
    assert 20 < watts < 2000, f"{joules:.1f} J in {seconds:.2f} s"  # a busy datacenter board, not idle, not absurd


def test_training_time_waits_for_the_gpu_and_the_peak_is_the_allocators():
    device = torch.device("cuda", torch.cuda.current_device())
    reset_peak_memory(device)
    stopwatch = Stopwatch(device)
    stopwatch.start()
    x = torch.rand(256 * 2**20, device=device)  # 1 GiB
    for _ in range(50):
        x.mul_(1.0001)
    total = stopwatch.stop()
    events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    events[0].record()
    for _ in range(50):
        x.mul_(1.0001)
    events[1].record()
    torch.cuda.synchronize(device)
    assert total >= 0.5 * events[0].elapsed_time(events[1]) / 1e3  # the queued work was waited for
    assert peak_memory_bytes(device) >= 2**30


def test_sharing_is_flagged_exactly_when_nvml_lists_more_than_one_process_on_the_board():
    device = torch.device("cuda", torch.cuda.current_device())
    torch.ones(1, device=device)  # this process is on the board
    with EnergyMeter(device) as meter:
        meter.begin_window()
        meter.end_window()
        import pynvml
        handle = pynvml.nvmlDeviceGetHandleByIndex(meter.nvml_index)
        pids = {p.pid for query in (pynvml.nvmlDeviceGetComputeRunningProcesses,
                                    pynvml.nvmlDeviceGetGraphicsRunningProcesses) for p in query(handle)}
    assert all(0 < pid <= 2**22 for pid in pids), pids  # real PIDs: nvidia-ml-py and the driver agree on the struct
    flagged = [w for w in meter.warnings if "processes were on" in w]
    assert bool(flagged) == (len(pids) > 1), (pids, meter.warnings)
