"""Energy and carbon meters: honest nulls where nothing can measure, exact joules from a fake NVML, windows that
exclude what lies between them, failures that degrade to None without raising, and codecarbon kept offline."""

import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

import pytest
import torch

from decorbench.meters import CarbonMeter, EnergyMeter, peak_memory_bytes, reset_peak_memory
from decorbench.meters import energy as energy_module
from decorbench.meters.contention import CpuContentionMeter
from decorbench.meters.energy import describe_nvml_error, pci_bus_id, resolve_nvml_handle, visible_device_entry


pytestmark = pytest.mark.usefixtures("fake_nvml_gpus")  # conftest.py: the fake's GPUs, not this machine's


# -- a fake NVML module ------------------------------------------------------------------------------------------
class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 (pynvml's naming)
    pass


class NVMLError_GpuIsLost(NVMLError):  # noqa: N801
    pass


class NVMLError_DriverNotLoaded(NVMLError):  # noqa: N801
    pass


class FakeNVML:
    """Four GPUs, NVML index i at PCI bus 0x10+i. `counter` / `power` / `instant` (the instantaneous power field):
    callables giving mJ / mW / mW (or raising); None means not supported."""

    NVMLError = NVMLError
    NVML_SUCCESS, NVML_ERROR_NOT_SUPPORTED, NVML_FI_DEV_POWER_INSTANT = 0, 3, 186

    def __init__(self, counter=None, power=None, init_error=None, processes=None, mig=None, instant=None):
        self.counter, self.power, self.init_error, self.instant = counter, power, init_error, instant
        self.processes, self.mig = processes, mig  # callable giving the board's compute PIDs; MIG mode (0/1)
        self.inits = self.shutdowns = 0
        self.calls = []

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error
        self.inits += 1

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, i):
        if not 0 <= i < 4:
            raise NVMLError("Invalid Argument")
        self.calls.append(("index", i))
        return i

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        self.calls.append(("pci", bus_id))
        return {pci_bus_id(0, 0x10 + i, 0): i for i in range(4)}[bus_id]

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self.calls.append(("uuid", uuid))
        return {f"GPU-{i}{i}{i}": i for i in range(4)}[uuid]

    def nvmlDeviceGetName(self, handle):
        return b"Fake GPU"

    def nvmlDeviceGetIndex(self, handle):
        return handle

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if self.counter is None:
            raise NVMLError_NotSupported("Not Supported")
        return self.counter()

    def nvmlDeviceGetPowerUsage(self, handle):
        if self.power is None:
            raise NVMLError_NotSupported("Not Supported")
        return self.power()

    def nvmlDeviceGetFieldValues(self, handle, field_ids):
        """As NVML does: the call succeeds, each field says whether it was read (unsigned int milliwatts)."""
        assert field_ids == [self.NVML_FI_DEV_POWER_INSTANT]
        if self.instant is None:
            return [SimpleNamespace(nvmlReturn=self.NVML_ERROR_NOT_SUPPORTED, valueType=1,
                                    value=SimpleNamespace(uiVal=0))]
        return [SimpleNamespace(nvmlReturn=self.NVML_SUCCESS, valueType=1,
                                value=SimpleNamespace(uiVal=self.instant()))]

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if self.processes is None:
            raise NVMLError_NotSupported("Not Supported")
        return [SimpleNamespace(pid=pid, usedGpuMemory=None) for pid in self.processes()]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        if self.processes is None:
            raise NVMLError_NotSupported("Not Supported")
        return []

    def nvmlDeviceGetMigMode(self, handle):
        if self.mig is None:
            raise NVMLError_NotSupported("Not Supported")
        return [self.mig, self.mig]


def readings(*values):
    """A callable returning `values` one by one (an exception instance is raised)."""
    it = iter(values)

    def read():
        value = next(it)
        if isinstance(value, Exception):
            raise value
        return value
    return read


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


# -- NVML absent / device not a GPU --------------------------------------------------------------------------------
def _nvml_works_here() -> bool:
    try:
        import pynvml
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


def test_without_nvidia_driver_energy_is_null_with_the_reason():
    if _nvml_works_here():
        pytest.skip("this machine has a working NVML")
    meter = EnergyMeter("cuda:0")
    assert meter.source is None and meter.total_j is None
    assert meter.unavailable_reason == "NVML: no NVIDIA driver (NVMLError_LibraryNotFound)"
    meter.begin_window()
    assert meter.end_window() is None
    meter.close()


def test_cpu_device_has_no_gpu_energy_meter():
    meter = EnergyMeter(torch.device("cpu"), nvml=FakeNVML(counter=lambda: 0))
    assert meter.source is None and meter.unavailable_reason == "device is cpu: no GPU energy meter"
    meter.begin_window()
    assert meter.end_window() is None


@pytest.mark.parametrize("fake, reason", [
    (FakeNVML(init_error=NVMLError_DriverNotLoaded("Driver Not Loaded")),
     "NVML: no NVIDIA driver (NVMLError_DriverNotLoaded)"),
    (FakeNVML(), "NVML: Fake GPU reports neither its energy counter (NVMLError_NotSupported: Not Supported) "
                 "nor its power (NVMLError_NotSupported: Not Supported)"),
])
def test_nvml_that_cannot_measure_gives_null_and_says_why(fake, reason):
    meter = EnergyMeter("cuda:0", nvml=fake)
    assert meter.source is None and meter.unavailable_reason == reason
    assert meter.end_window() is None
    meter.close()
    assert fake.shutdowns == fake.inits  # NVML released when it was taken


# -- counter path ------------------------------------------------------------------------------------------------
def test_counter_path_sums_millijoule_deltas_of_windows_only():
    fake = FakeNVML(counter=readings(0, 1_000, 3_500, 10_000, 14_000))  # probe, then two windows' edges
    with EnergyMeter("cuda:0", nvml=fake) as meter:
        assert meter.source == "nvml-counter" and meter.unavailable_reason is None
        assert meter.gpu_name == "Fake GPU" and meter.nvml_index == 0
        assert meter.end_window() == 0.0  # no window open: just the total
        meter.begin_window()
        assert meter.end_window() == pytest.approx(2.5)
        meter.begin_window()  # 3_500 → 10_000 happened between the windows (eval): not counted
        assert meter.end_window() == pytest.approx(6.5)
        assert meter.power_samples == [] and meter.warnings == []
    assert fake.shutdowns == 1


def test_a_counter_that_goes_back_ends_the_measurement_rather_than_count_its_whole_value():
    """After a reset the counter holds all the energy since the driver loaded (days of it): not this window's."""
    fake = FakeNVML(counter=readings(0, 0, 5_000, 10_000, 9_999))  # the first: the probe at the start
    meter = EnergyMeter("cuda:0", nvml=fake)
    meter.begin_window()
    assert meter.end_window() == pytest.approx(5.0)
    meter.begin_window()
    assert meter.end_window() is None and meter.total_j is None and meter.source is None
    assert "went back from 10000 to 9999 mJ" in meter.unavailable_reason


class SteppedCounter:
    """NVML's counter as it moves: in 5 mJ steps every 10 ms while `counter_interval_s` polls it (1 ms a read), then
    what a test sets in `mj` as its windows go."""

    def __init__(self, clock: "Clock", period_s: float = 0.010):
        self.clock, self.period_s, self.polling, self.mj = clock, period_s, True, 0

    def __call__(self) -> int:
        if self.polling:
            self.clock.t += 0.001
            return 5 * (round(self.clock.t * 1000) // round(self.period_s * 1000))
        return self.mj

    def window(self, meter: EnergyMeter, seconds: float, joules: float) -> float | None:
        meter.begin_window()
        self.clock.t += seconds
        self.mj += round(joules * 1000)
        return meter.end_window()


def test_windows_short_against_the_counter_step_say_how_far_off_and_none_below_one_step():
    clock = Clock()
    counter = SteppedCounter(clock)
    meter = EnergyMeter("cuda:0", nvml=FakeNVML(counter=counter), clock=clock)
    period = meter.counter_interval_s(0.2)
    assert period == pytest.approx(0.010) and meter.counter_period_s == period
    counter.polling = False
    assert counter.window(meter, 0.15, 30.0) == pytest.approx(30.0)  # 15 steps: ±6.7 % at worst
    assert meter.edge_error == pytest.approx(0.010 / 0.15)
    assert meter.warnings == ["its training windows were under 20 steps of NVML's energy counter, which moves every "
                              "10 ms: each edge can be off by up to one step, so this energy is within ±10 % at worst "
                              "(evaluate less often for longer windows)"]
    assert counter.window(meter, 2.0, 400.0) == pytest.approx(430.0)  # 2 windows of 2.15 s in all: ±0.9 %
    assert meter.warnings == []

    short = EnergyMeter("cuda:0", nvml=FakeNVML(counter=counter), clock=clock)
    counter.polling = True
    short.counter_interval_s(0.2)
    counter.polling = False
    assert counter.window(short, 0.008, 1.0) is None and short.source is None  # 8 ms: mostly the counter's steps
    assert "NVML: training windows averaged 8 ms, no longer than one step of NVML's energy counter, which moves " \
           "every 10 ms" in short.unavailable_reason


def test_a_counter_period_that_cannot_be_measured_is_said_to_leave_the_edge_error_unknown():
    clock = Clock()
    meter = EnergyMeter("cuda:0", nvml=FakeNVML(counter=SteppedCounter(clock, period_s=1.0)), clock=clock)
    assert meter.counter_interval_s(0.5) is None and meter.counter_period_s is None
    assert meter.warnings == ["how often NVML's energy counter moves could not be measured (it moved fewer than 3 "
                              "times in 0.5 s), so how far each window's edges can be off is unknown"]


def test_counter_wrapping_past_2_to_the_64_is_a_small_step():
    fake = FakeNVML(counter=readings(0, 2**64 - 500, 700))
    meter = EnergyMeter("cuda:0", nvml=fake)
    meter.begin_window()
    assert meter.end_window() == pytest.approx(1.2) and meter.warnings == []


def test_a_board_shared_with_other_processes_or_split_by_mig_is_flagged():
    fake = FakeNVML(counter=lambda: 0, processes=readings([7], [7, 8], [7, 8, 9], [7, 8]), mig=0)
    meter = EnergyMeter("cuda:0", nvml=fake)
    meter.begin_window()
    meter.end_window()
    assert meter.warnings == []  # this process alone
    for _ in range(3):
        meter.begin_window()
        meter.end_window()
    assert meter.warnings == ["3 processes were on Fake GPU at once: its energy counts them all, not this run alone"]
    assert meter.total_j == 0.0  # still measured: the flag says whose joules they are

    class NoGraphicsQuery(FakeNVML):  # an older driver without one of the two queries
        def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
            raise NVMLError_NotSupported("Not Supported")

    meter = EnergyMeter("cuda:0", nvml=NoGraphicsQuery(counter=lambda: 0, processes=lambda: [7, 8], mig=0))
    meter.begin_window()
    meter.end_window()
    assert meter.warnings == ["2 processes were on Fake GPU at once: its energy counts them all, not this run alone"]

    junk = FakeNVML(counter=lambda: 0, processes=lambda: [7, 0, 0xFFFFFFFF], mig=0)  # a mismatched nvidia-ml-py
    meter = EnergyMeter("cuda:0", nvml=junk)
    meter.begin_window()
    meter.end_window()
    assert meter.warnings == []

    meter = EnergyMeter("cuda:0", nvml=FakeNVML(counter=lambda: 0, mig=1))
    meter.begin_window()
    assert meter.end_window() == 0.0
    assert meter.warnings == ["MIG is on: the energy is that of the whole Fake GPU, all its instances together, "
                              "not this run's instance alone"]


def test_nvml_failing_mid_run_degrades_to_null_with_reason_and_never_raises():
    fake = FakeNVML(counter=readings(0, 1_000, 2_000, 3_000, NVMLError_GpuIsLost("GPU is lost")))
    meter = EnergyMeter("cuda:0", nvml=fake)
    meter.begin_window()
    assert meter.end_window() == pytest.approx(1.0)
    meter.begin_window()
    assert meter.end_window() is None
    assert meter.source is None and meter.total_j is None
    assert meter.unavailable_reason.startswith("NVML: nvmlDeviceGetTotalEnergyConsumption failed at a window end "
                                               "(NVMLError_GpuIsLost: GPU is lost)")
    meter.begin_window()  # a failed meter stays failed, quietly
    assert meter.end_window() is None
    meter.reset(0.0)
    assert meter.total_j is None


def test_reset_starts_a_new_total_and_an_unknown_start_stays_unknown():
    fake = FakeNVML(counter=readings(0, 0, 2_000, 2_000, 3_000, 3_000, 4_000))
    meter = EnergyMeter("cuda:0", nvml=fake)
    meter.reset(10.0)  # a resumed run that had measured 10 J
    meter.begin_window()
    assert meter.end_window() == pytest.approx(12.0)
    meter.reset(None)  # a resumed run whose earlier part was not measured
    meter.begin_window()
    assert meter.end_window() is None and meter.source == "nvml-counter"
    meter.reset()
    meter.begin_window()
    assert meter.end_window() == pytest.approx(1.0)


def test_counter_interval_is_the_median_time_between_changes_of_the_counter():
    clock, reads, every = Clock(), [0], [10]

    def counter():  # NVML's counter moves in steps: 5 mJ every 10th read, one read per ms
        reads[0] += 1
        clock.t += 0.001
        return 1000 + 5 * (reads[0] // every[0])

    meter = EnergyMeter("cuda:0", nvml=FakeNVML(counter=counter), clock=clock)
    assert meter.counter_interval_s(0.2) == pytest.approx(0.010)
    assert EnergyMeter("cuda:0", nvml=FakeNVML(power=lambda: 1000), sample_interval_s=0).counter_interval_s() is None
    every[0] = 10**9  # a counter that does not move in the time polled
    assert EnergyMeter("cuda:0", nvml=FakeNVML(counter=counter), clock=clock).counter_interval_s(0.05) is None


# -- power-sampling path -----------------------------------------------------------------------------------------
def test_power_path_integrates_samples_with_the_trapezoid_rule():
    clock = Clock()
    watts = {100.0: 100, 101.0: 200, 102.0: 200, 103.0: 50, 104.0: 50, 105.0: 50}
    fake = FakeNVML(power=lambda: watts[clock.t] * 1000)
    meter = EnergyMeter("cuda:0", nvml=fake, clock=clock, sample_interval_s=0)
    assert meter.source == "nvml-power"
    meter.begin_window()          # t=100, 100 W
    clock.t = 101.0
    meter.poll()                  # 200 W: (100+200)/2·1 = 150 J
    clock.t = 102.0
    assert meter.end_window() == pytest.approx(350.0)  # + (200+200)/2·1
    clock.t = 103.0
    meter.poll()                  # between windows: sampled, not counted
    clock.t = 104.0
    meter.begin_window()
    clock.t = 105.0
    assert meter.end_window() == pytest.approx(400.0)  # + 50 W · 1 s
    assert meter.power_samples == [(0.0, 100.0), (1.0, 200.0), (2.0, 200.0), (3.0, 50.0), (4.0, 50.0), (5.0, 50.0)]


def test_power_path_reads_the_instantaneous_field_where_the_driver_has_it():
    """nvmlDeviceGetPowerUsage is a 1 s average on Ampere and newer: integrating it shifts each window."""
    clock = Clock()
    fake = FakeNVML(power=lambda: 999_000, instant=lambda: {100.0: 100_000, 101.0: 300_000}[clock.t])
    meter = EnergyMeter("cuda:0", nvml=fake, clock=clock, sample_interval_s=0)
    assert (meter.source, meter.power_reading) == ("nvml-power", "NVML_FI_DEV_POWER_INSTANT")
    meter.begin_window()
    clock.t = 101.0
    assert meter.end_window() == pytest.approx(200.0)  # (100 + 300) / 2 W · 1 s; the 999 W average never read

    without = EnergyMeter("cuda:0", nvml=FakeNVML(power=lambda: 50_000), clock=clock, sample_interval_s=0)
    assert (without.source, without.power_reading) == ("nvml-power", "nvmlDeviceGetPowerUsage")


def test_instantaneous_power_failing_mid_run_names_the_field():
    fake = FakeNVML(instant=readings(100_000, 100_000, NVMLError_GpuIsLost("GPU is lost")))
    meter = EnergyMeter("cuda:0", nvml=fake, clock=Clock(), sample_interval_s=0)
    meter.begin_window()
    assert meter.end_window() is None
    assert "NVML_FI_DEV_POWER_INSTANT failed at a window end (NVMLError_GpuIsLost" in meter.unavailable_reason


def test_power_sampler_thread_gives_power_times_duration_for_constant_power():
    fake = FakeNVML(power=lambda: 250_000)  # 250 W
    with EnergyMeter("cuda:0", nvml=fake, sample_interval_s=0.01) as meter:
        meter.begin_window()
        started = time.perf_counter()
        time.sleep(0.15)
        joules = meter.end_window()
        took = time.perf_counter() - started
        assert len(meter.power_samples) >= 5  # the thread sampled on its own
    assert joules == pytest.approx(250 * took, rel=0.05)


def test_power_samples_stay_bounded_and_span_the_whole_run():
    clock = Clock()
    meter = EnergyMeter("cuda:0", nvml=FakeNVML(power=lambda: 1000), clock=clock, sample_interval_s=0,
                        max_samples=8)
    for i in range(100):
        clock.t = 100.0 + i
        meter.poll()
    samples = meter.power_samples
    assert len(samples) < 8 and samples[0][0] == 0.0 and samples[-1][0] >= 64


def test_power_sampler_failing_ends_the_measurement_quietly():
    fake = FakeNVML(power=readings(*([100_000] * 4), NVMLError_GpuIsLost("GPU is lost")))
    meter = EnergyMeter("cuda:0", nvml=fake, sample_interval_s=0.005)
    meter.begin_window()
    deadline = time.perf_counter() + 1.0
    while meter.source is not None and time.perf_counter() < deadline:
        time.sleep(0.005)
    assert meter.end_window() is None
    assert "nvmlDeviceGetPowerUsage failed in the power sampler (NVMLError_GpuIsLost" in meter.unavailable_reason
    meter.close()
    assert not any(t.name == "decorbench-power-sampler" and t.is_alive() for t in threading.enumerate())


# -- which GPU ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("index, visible, entry", [
    (1, None, 1),
    (0, "2,3", 2),
    (1, " 2, 3 ", 3),
    (0, "GPU-abc,1", "GPU-abc"),
    (1, "GPU-abc,1", 1),
])
def test_cuda_visible_devices_maps_torch_index_to_the_machine_gpu(index, visible, entry):
    assert visible_device_entry(index, visible) == entry


@pytest.mark.parametrize("index, visible", [(1, "0,-1,1"), (0, ""), (2, "0,1"), (1, "0,,1")])
def test_cuda_visible_devices_that_hide_the_index_are_an_error(index, visible):
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        visible_device_entry(index, visible)


def test_pci_bus_id_in_nvml_form():
    assert pci_bus_id(0, 0x3B, 0) == "00000000:3B:00.0"
    assert pci_bus_id(1, 0xAF, 0x1F, 3) == "00000001:AF:1F.3"


def test_nvml_handle_by_pci_address_first_then_by_visible_index_or_uuid():
    fake = FakeNVML()
    assert resolve_nvml_handle(fake, 0, pci=pci_bus_id(0, 0x12, 0), cuda_visible_devices="3")[0] == 2
    assert resolve_nvml_handle(fake, 1, pci=None, cuda_visible_devices="3,1")[0] == 1
    handle, how = resolve_nvml_handle(fake, 0, pci="not-an-address", cuda_visible_devices="3")
    assert handle == 3 and how.startswith("NVML index 3 (entry 0 of CUDA_VISIBLE_DEVICES=3)")
    assert resolve_nvml_handle(fake, 0, pci=None, cuda_visible_devices="GPU-222")[0] == 2


def test_meter_finds_its_gpu_by_torch_pci_address(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    monkeypatch.setattr(energy_module, "torch_pci_bus_id", lambda index: pci_bus_id(0, 0x10 + 2 + index, 0))
    meter = EnergyMeter("cuda:1", nvml=FakeNVML(counter=lambda: 0))
    assert meter.nvml_index == 3 and meter.mapping == "PCI bus id 00000000:13:00.0"


def test_meter_falls_back_to_cuda_visible_devices_without_torch_cuda(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    meter = EnergyMeter("cuda:1", nvml=FakeNVML(counter=lambda: 0))
    assert meter.nvml_index == 2 and meter.mapping.startswith("NVML index 2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    meter = EnergyMeter("cuda:1", nvml=(fake := FakeNVML(counter=lambda: 0)))
    assert meter.source is None and "cannot find the GPU of cuda:1" in meter.unavailable_reason
    assert fake.shutdowns == 1


def test_nvml_errors_described_in_words():
    class NVMLError_LibraryNotFound(Exception):  # noqa: N801
        pass
    assert describe_nvml_error(NVMLError_LibraryNotFound("NVML Shared Library Not Found")) == \
        "no NVIDIA driver (NVMLError_LibraryNotFound)"
    assert describe_nvml_error(NVMLError_GpuIsLost("GPU is lost")) == "NVMLError_GpuIsLost: GPU is lost"


# -- carbon ------------------------------------------------------------------------------------------------------
def test_carbon_meter_is_an_offline_labelled_estimate_that_writes_nothing(tmp_path, monkeypatch, capfd):
    connects = []

    def no_network(*args, **kwargs):
        connects.append(args)
        raise OSError("network disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # codecarbon's output_dir, in case
    monkeypatch.setenv("CODECARBON_PUE", "100")  # a user's codecarbon settings do not change what `method` says
    monkeypatch.setenv("CODECARBON_FORCE_CARBON_INTENSITY_G_CO2E_KWH", "5000")
    meter = CarbonMeter("nld")
    assert meter.start(), meter.unavailable_reason
    assert meter.unavailable_reason is None and meter.country_iso_code == "NLD"
    assert meter.method.startswith("estimate by codecarbon") and "Netherlands (NLD)" in meter.method
    assert meter.carbon_intensity_g_per_kwh > 0
    meter.begin_window()
    time.sleep(0.1)  # between windows: not counted
    meter.end_window()
    meter.reset()
    for _ in range(3):  # windows shorter than codecarbon's 50 ms re-measuring threshold still count
        meter.begin_window()
        started = time.perf_counter()
        time.sleep(0.01)
        took = time.perf_counter() - started
        meter.end_window()
        time.sleep(0.05)  # "eval"
    kg, joules = meter.total_kg, meter.estimated_energy_j
    assert joules > 0 and kg == pytest.approx(joules / 3.6e6 * meter.carbon_intensity_g_per_kwh / 1000, rel=1e-6)
    assert joules < 3 * 1.2 * took * 1000  # three ~10 ms windows, well below 1 kW: the 50 ms evals are left out
    assert meter.stop() == kg
    assert meter.end_window() == kg  # stopped: the total stays
    assert [p.name for p in tmp_path.rglob("*")] == ["tmp"] and connects == []
    assert "codecarbon" not in capfd.readouterr().err  # its log lines are silenced


def test_carbon_meter_with_an_unknown_country_says_so():
    meter = CarbonMeter("XXX")
    assert not meter.start()
    assert meter.total_kg is None and "no carbon intensity for country_iso_code 'XXX'" in meter.unavailable_reason
    meter.begin_window()
    assert meter.end_window() is None


def test_carbon_meter_without_codecarbon(monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)
    meter = CarbonMeter("NLD")
    assert not meter.start() and meter.unavailable_reason.startswith("codecarbon: cannot import it")


class Window:
    def __init__(self, kg, kwh):
        self.emissions, self.energy_consumed = kg, kwh


class FakeTracker:
    """flush() answers 0.0 (started); each stop_task() the next of `windows`: (kg, kWh), None or an exception."""

    def __init__(self, windows=((1.0, 2.0),), flush=0.0, **kwargs):
        self.kwargs, self.windows, self.flushed, self.stopped = kwargs, iter(windows), flush, False
        self.open = False

    def start(self):
        pass

    def flush(self):
        return self.flushed

    def start_task(self, name=None):
        assert not self.open
        self.open = True

    def stop_task(self):
        assert self.open
        self.open = False
        value = next(self.windows)
        if isinstance(value, Exception):
            raise value
        return None if value is None else Window(*value)

    def stop(self):
        self.stopped = True
        return 42.0


def test_carbon_meter_keeps_codecarbon_offline_and_file_less():
    made = []
    meter = CarbonMeter("NLD", gpu_ids=[2], tracker_factory=lambda **kw: made.append(kw) or FakeTracker(**kw))
    assert meter.start()
    (kwargs,) = made
    assert kwargs["output_methods"] == [] and kwargs["emissions_endpoint"] is None
    assert kwargs["electricitymaps_api_token"] == "" and kwargs["gpu_ids"] == [2]
    assert kwargs["country_iso_code"] == "NLD" and "save_to_file" not in kwargs  # deprecated in codecarbon 3


def test_carbon_windows_add_up_and_reset_starts_a_new_run():
    meter = CarbonMeter("NLD", tracker_factory=lambda **kw: FakeTracker([(1.0, 1e-3), (2.0, 2e-3), (4.0, 0.0)]))
    assert meter.start() and meter.end_window() == 0.0
    meter.begin_window()
    assert meter.end_window() == 1.0
    meter.begin_window()
    meter.begin_window()  # already open: no-op
    assert meter.end_window() == 3.0 and meter.estimated_energy_j == pytest.approx(3e-3 * 3.6e6)
    meter.reset(10.0, None)  # a resumed run: its CO2e so far was 10 kg, its energy estimate unknown
    meter.begin_window()
    assert meter.end_window() == 14.0 and meter.estimated_energy_j is None
    assert meter.stop() == 14.0


@pytest.mark.parametrize("window, reason", [
    (RuntimeError("disk on fire"), "stop_task() raised at a window end (RuntimeError: disk on fire)"),
    (None, "stop_task() gave no reading at a window end"),
    ((-1.0, 0.0), "stop_task() read a negative window (-1.0 kg, 0.0 kWh)"),
])
def test_carbon_reading_that_fails_mid_run_gives_null_and_reason(window, reason):
    trackers = []

    def factory(**kw):
        trackers.append(FakeTracker([(1.0, 1.0), window], **kw))
        return trackers[-1]
    meter = CarbonMeter("NLD", tracker_factory=factory)
    assert meter.start()
    meter.begin_window()
    assert meter.end_window() == 1.0
    meter.begin_window()
    assert meter.end_window() is None and meter.total_kg is None and meter.estimated_energy_j is None
    assert reason in meter.unavailable_reason and trackers[0].stopped
    meter.begin_window()
    assert meter.end_window() is None and meter.stop() is None


def test_carbon_tracker_that_does_not_start_gives_null_and_reason():
    def broken(**kw):
        raise ValueError("no hardware")
    meter = CarbonMeter("NLD", tracker_factory=broken)
    assert not meter.start()
    assert meter.unavailable_reason == "codecarbon: the tracker failed to start (ValueError: no hardware)"
    silent = CarbonMeter("NLD", tracker_factory=lambda **kw: FakeTracker(flush=None, **kw))
    assert not silent.start() and silent.unavailable_reason.startswith("codecarbon: the tracker did not start")


# -- memory ------------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the resettable peak is Linux's VmHWM")
def test_cpu_peak_memory_resets_between_runs_of_one_process():
    size = 400 * 2**20
    reset_peak_memory("cpu")
    x = torch.ones(size // 4)  # touched, so resident
    with_x = peak_memory_bytes("cpu")
    del x
    reset_peak_memory("cpu")  # the next run: its peak starts from what is resident now
    assert with_x - peak_memory_bytes("cpu") >= 0.9 * size


def test_a_cpu_peak_that_cannot_be_reset_is_unknown_not_the_whole_process_peak(tmp_path, monkeypatch):
    from decorbench.env import describe_environment
    from decorbench.meters import memory

    monkeypatch.setattr(memory, "_CLEAR_REFS", tmp_path / "no-proc" / "clear_refs")  # a kernel without it
    assert "cannot reset the peak resident set" in reset_peak_memory("cpu")
    assert peak_memory_bytes("cpu") is None
    assert "GPU only: on a CPU runs record none, since it cannot reset" in describe_environment()
    monkeypatch.undo()
    if sys.platform.startswith("linux"):  # resetting works again: so does the peak
        assert reset_peak_memory("cpu") is None and peak_memory_bytes("cpu") > 0


def _busy_for(seconds: float, detached: bool, while_exists: str = "/") -> subprocess.Popen:
    """A process spinning one core (for `seconds`, or until `while_exists` is gone): the run's own child, or
    (detached) a stranger's, reparented away from us."""
    spin = [sys.executable, "-c", "import os, time\nend = time.monotonic() + " + str(seconds) +
            f"\nwhile time.monotonic() < end and os.path.exists({while_exists!r}): pass"]
    if detached:
        return subprocess.Popen(["sh", "-c", f"{shlex.join(spin)} >/dev/null 2>&1 &"])
    return subprocess.Popen(spin)


@pytest.mark.parametrize("detached", [True, False])
def test_cpu_contention_counts_other_processes_work_and_not_the_runs_own(detached):
    busy = _busy_for(2.5, detached)
    time.sleep(0.3)  # spinning by now
    meter = CpuContentionMeter()
    meter.start()
    time.sleep(1.5)
    other_s, span_s = meter.other_cpu_s()
    busy.wait()
    if detached:  # one core of the machine's spun for someone else
        assert other_s / span_s > 0.6 and f"other processes kept {other_s / span_s:.2g} of the " in meter.warning(
            other_s, span_s)
    else:  # the run's child (a data loader worker, say) is the run's own work
        assert other_s / span_s < 0.4


def test_cpu_contention_is_flagged_beyond_the_counters_resolution_only():
    meter = CpuContentionMeter()
    meter.start()
    cores = len(meter.cores)
    assert meter.warning(0.3 * cores * 60, 60.0)  # 30 % of its cores for a minute
    assert meter.warning(0.05 * cores * 60, 60.0) is None  # background noise
    assert meter.warning(0.01 * cores, 0.02) is None  # half a core in 20 ms: within a clock tick per counter
    assert meter.carried_s == 0 and meter.other_cpu_s()[1] >= 0
    meter.start(carried_s=12.0, carried_span_s=100.0)  # a resumed run goes on from what it had
    other_s, span_s = meter.other_cpu_s()
    assert other_s >= 12.0 and span_s >= 100.0
