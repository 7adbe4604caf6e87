"""GPU energy of a run's training windows, read from NVML at window edges only (never per step).

    energy = EnergyMeter(device)     # never raises: `source` says how it measures, `unavailable_reason` why it can't
    energy.begin_window()
    ...                              # training steps: nothing is read here
    joules = energy.end_window()     # cumulative over the closed windows since the last reset(), or None
    energy.close()

Sources, best first (README, "Measuring"):
- "nvml-counter": `nvmlDeviceGetTotalEnergyConsumption`, the driver's millijoule counter (Volta and newer), read
  once at `begin_window` and once at `end_window`. Nothing runs in between. The counter moves in steps (every
  20-100 ms by published measurements), so a window's start can take in up to one step of what came before and
  its end miss up to one of its own: about `counter_period_s` / the window's length, at worst. Once
  `counter_interval_s` has measured the period, windows under 20 steps long on average get a warning with that
  bound, and windows no longer than one step end the measurement (their joules would be the counter's steps).
- "nvml-power": where the counter is not supported, a daemon thread reads the board's power every
  `sample_interval_s` (and once at each window edge) and integrates it (trapezoid) over the open windows. It reads
  the instantaneous power field (`NVML_FI_DEV_POWER_INSTANT`) where the driver has it, else
  `nvmlDeviceGetPowerUsage`, which on Ampere boards (the A100 excepted) and newer is the average of the last
  second: there each window's joules come from an interval about half a second late (`power_reading` says which
  one is read).
  Its (seconds since the meter was made, watts) samples are kept for power-over-time plots, thinned 2:1 whenever
  `max_samples` is reached, so they always span the whole life of the meter in bounded memory.
- None: the device is not a CUDA GPU, nvidia-ml-py is missing, there is no NVIDIA driver, NVML cannot find the
  device or reads neither counter nor power. `end_window()` returns None and `unavailable_reason` says why, in
  words. There is no estimate on this path: no number is better than an invented one.

What it measures: the whole GPU board as NVML reports it, whoever uses it (other processes on the same GPU count;
under MIG the counter belongs to the whole physical GPU). Not the CPU, memory or the rest of the machine: the
carbon meter (codecarbon) covers those, as an estimate. So that a shared board's joules are not read as the run's
own, `warnings` says so when MIG is on, or when NVML lists more than one process on the board at a window's end
(other jobs, or DDP ranks sharing the GPU, each of which would count the same joules). Where NVML lists no
processes (some containers hide them), sharing goes unseen.

Failures: an NVML call that fails after the start, or a counter that goes back, ends the measurement for good:
`end_window()` returns None from then on and `unavailable_reason` names the call and the error. The joules summed so
far would miss part of the run, so reporting them as cumulative would be wrong. Nothing is ever raised into the
training loop.

Which GPU: the one the torch device is. It is found by its PCI address (from torch's device properties), which
is right whatever CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER say; only when torch cannot tell (no CUDA runtime),
by the CUDA_VISIBLE_DEVICES entry of the torch index (an NVML index, right when CUDA's order is NVML's PCI order:
CUDA_DEVICE_ORDER=PCI_BUS_ID, or all GPUs of one kind; or a UUID).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import torch

SOURCES = ("nvml-counter", "nvml-power")
_INSTANT = "NVML_FI_DEV_POWER_INSTANT"
# nvmlValueType_t -> the member of nvmlValue_t that holds it (nvml.h)
_FIELD_VALUE_MEMBER = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}
_U64 = 1 << 64
EDGE_WARN = 0.05  # a worst-case edge error above this (windows under 20 counter steps) is worth a warning


def visible_device_entry(index: int, cuda_visible_devices: str | None) -> int | str:
    """The entry of CUDA_VISIBLE_DEVICES that torch's device `index` is: an int (an index into all the machine's
    GPUs) or a str (a GPU-/MIG- UUID). Without the variable (None), `index` itself.

    Like CUDA, the list ends at the first empty or negative entry ("0,-1,1" shows only GPU 0).
    Raises ValueError when `index` is not in the list.
    """
    if cuda_visible_devices is None:
        return index
    entries: list[int | str] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        if not entry:
            break
        if entry.lstrip("+-").isdigit():
            if int(entry) < 0:
                break
            entries.append(int(entry))
        else:
            entries.append(entry)
    if not 0 <= index < len(entries):
        raise ValueError(f"torch device index {index} is not among the {len(entries)} GPU(s) that "
                         f"CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} makes visible")
    return entries[index]


def pci_bus_id(domain: int, bus: int, device: int, function: int = 0) -> str:
    """The NVML form of a PCI address, e.g. (0, 0x3b, 0) -> "00000000:3B:00.0"."""
    return f"{domain:08X}:{bus:02X}:{device:02X}.{function:X}"


def torch_pci_bus_id(index: int) -> str | None:
    """PCI address of torch's CUDA device `index` (torch's properties carry domain, bus and device numbers as
    ints), or None where torch cannot tell (no CUDA, an old torch)."""
    try:
        props = torch.cuda.get_device_properties(index)
        return pci_bus_id(props.pci_domain_id, props.pci_bus_id, props.pci_device_id)
    except Exception:
        return None


def resolve_nvml_handle(nvml, index: int, *, pci: str | None, cuda_visible_devices: str | None):
    """(NVML handle, how it was found) for torch's CUDA device `index`: by PCI address when known, else by the
    CUDA_VISIBLE_DEVICES entry (an NVML index, or a UUID). Raises what NVML raises, or ValueError."""
    fallback = ""
    if pci is not None:
        try:
            return nvml.nvmlDeviceGetHandleByPciBusId(pci), f"PCI bus id {pci}"
        except Exception as e:  # an address NVML does not know: fall back to the index, and say so
            fallback = f"; NVML did not find PCI bus id {pci} ({describe_nvml_error(e)})"
    entry = visible_device_entry(index, cuda_visible_devices)
    if isinstance(entry, str):
        return nvml.nvmlDeviceGetHandleByUUID(entry), f"UUID {entry}{fallback}"
    how = f"NVML index {entry}"
    if cuda_visible_devices is not None:
        how += f" (entry {index} of CUDA_VISIBLE_DEVICES={cuda_visible_devices})"
    how += "; assumes CUDA numbers GPUs in NVML's (PCI) order"
    return nvml.nvmlDeviceGetHandleByIndex(entry), how + fallback


def describe_nvml_error(e: BaseException) -> str:
    name = type(e).__name__
    if name in ("NVMLError_LibraryNotFound", "NVMLError_DriverNotLoaded"):
        return f"no NVIDIA driver ({name})"
    text = str(e)
    return f"{name}: {text}" if text and text != name else name


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class EnergyMeter:
    """Joules of the GPU behind `device`, summed over begin_window/end_window pairs. See the module docstring.

    `nvml`: an NVML module (default: `pynvml`, imported here, lazily) — tests pass a fake.
    `clock`: seconds, monotonic (default time.perf_counter) — for the power integral and the samples.
    `sample_interval_s`: the power sampler's period; 0 runs no thread (then call `poll()` yourself).
    """

    def __init__(self, device: torch.device | str, *, nvml=None, clock: Callable[[], float] = time.perf_counter,
                 sample_interval_s: float = 0.1, max_samples: int = 4096) -> None:
        self.device = torch.device(device)
        self.source: str | None = None
        self.unavailable_reason: str | None = None
        self.gpu_name: str | None = None
        self.nvml_index: int | None = None  # NVML's index of the GPU (also codecarbon's gpu_ids)
        self.mapping: str | None = None  # how the torch device was matched to the NVML device
        self.power_reading: str | None = None  # on the "nvml-power" path, the NVML reading sampled
        self.total_j: float | None = None  # cumulative joules of the closed windows since reset()
        self.warnings: list[str] = []  # why the joules may not be this run's alone, or may miss some
        self._most_processes = 0  # the most processes NVML listed on the board at a window end
        self.sample_interval_s = sample_interval_s
        self._clock, self._t0, self._max_samples = clock, clock(), max(2, max_samples)
        self._nvml = self._handle = None
        self._lock = threading.RLock()
        self._open = False  # a window is open
        self._start_mj: int | None = None  # counter at the open window's start
        self.counter_period_s: float | None = None  # how often the counter moves, once counter_interval_s measured it
        self._windows, self._window_s, self._began = 0, 0.0, 0.0  # counter windows closed since reset(), seconds
        self._edge_warning: str | None = None
        self._last: tuple[float, float] | None = None  # (t, W) of the latest sample inside the open window
        self._window_j = 0.0
        self._samples: list[tuple[float, float]] = []
        self._stride, self._seen = 1, 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.device.type != "cuda":
            self.unavailable_reason = f"device is {self.device.type}: no GPU energy meter"
            return
        self._start(nvml)

    # -- setup ---------------------------------------------------------------------------------------------------
    def _start(self, nvml) -> None:
        if nvml is None:
            try:
                import pynvml as nvml
            except ImportError as e:
                self.unavailable_reason = f"NVML: nvidia-ml-py is not installed ({e})"
                return
        try:
            nvml.nvmlInit()
        except Exception as e:
            self.unavailable_reason = f"NVML: {describe_nvml_error(e)}"
            return
        self._nvml = nvml
        index = self.device.index
        if index is None:
            try:
                index = torch.cuda.current_device()
            except Exception:
                index = 0
        try:
            self._handle, self.mapping = resolve_nvml_handle(
                nvml, index, pci=torch_pci_bus_id(index),
                cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
        except Exception as e:
            self._shutdown()
            self.unavailable_reason = f"NVML: cannot find the GPU of {self.device} ({describe_nvml_error(e)})"
            return
        try:
            self.gpu_name = _text(nvml.nvmlDeviceGetName(self._handle))
        except Exception:
            pass
        try:
            self.nvml_index = int(nvml.nvmlDeviceGetIndex(self._handle))
        except Exception:
            pass
        try:
            nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.source = "nvml-counter"
        except Exception as counter_error:
            try:
                self.power_reading = self._choose_power_reading()
                self.source = "nvml-power"
            except Exception as power_error:
                self._shutdown()
                self.unavailable_reason = (
                    f"NVML: {self.gpu_name or self.device} reports neither its energy counter "
                    f"({describe_nvml_error(counter_error)}) nor its power ({describe_nvml_error(power_error)})")
                return
        self.total_j = 0.0
        try:
            if nvml.nvmlDeviceGetMigMode(self._handle)[0]:
                self.warnings.append(f"MIG is on: the energy is that of the whole {self.gpu_name or 'GPU'}, all "
                                     f"its instances together, not this run's instance alone")
        except Exception:  # no MIG on this board or this NVML
            pass
        if self.source == "nvml-power" and self.sample_interval_s and self.sample_interval_s > 0:
            self._thread = threading.Thread(target=self._sampler, name="decorbench-power-sampler", daemon=True)
            self._thread.start()

    # -- window API ----------------------------------------------------------------------------------------------
    def begin_window(self) -> None:
        """Open a window. A no-op when unavailable or already open."""
        with self._lock:
            if self.source is None or self._open:
                return
            try:
                if self.source == "nvml-counter":
                    self._start_mj, self._began = self._read_counter(), self._clock()
                else:
                    t, watts = self._read_power()
                    self._record(t, watts)
                    self._last, self._window_j = (t, watts), 0.0
            except Exception as e:
                self._fail("at a window start", e)
                return
            self._open = True

    def end_window(self) -> float | None:
        """Close the open window; returns the cumulative joules of the closed windows (since reset()), or None
        when there is no measurement. Without an open window it just returns that total."""
        with self._lock:
            if self.source is None or not self._open:
                return self.total_j
            try:
                if self.source == "nvml-counter":
                    joules = self._counter_delta(self._start_mj, self._read_counter()) / 1000.0
                    self._windows, self._window_s = self._windows + 1, self._window_s + self._clock() - self._began
                else:
                    t, watts = self._read_power()
                    self._integrate(t, watts)
                    self._record(t, watts)
                    joules = self._window_j
            except Exception as e:
                self._fail("at a window end", e)
                return None
            self._open = False
            if self.total_j is not None:
                self.total_j += joules
            self._note_sharing()
            self._check_edges()
            return self.total_j

    def reset(self, total_j: float | None = 0.0) -> None:
        """Start a new total (a new run: 0.0; a resumed run: its last recorded total, None if that was unknown,
        which keeps this run's total unknown). An open window is dropped. A failed meter stays failed."""
        with self._lock:
            self._open, self._last, self._window_j = False, None, 0.0
            self._windows, self._window_s = 0, 0.0
            if self.source is not None:
                self.total_j = None if total_j is None else float(total_j)

    def poll(self) -> None:
        """One power sample (the sampler thread calls this): integrated when a window is open, and kept."""
        with self._lock:
            if self.source != "nvml-power":
                return
            try:
                t, watts = self._read_power()
            except Exception as e:
                self._fail("in the power sampler", e)
                return
            if self._open:
                self._integrate(t, watts)
            self._record(t, watts)

    def counter_interval_s(self, seconds: float = 1.0) -> float | None:
        """Median seconds between changes of the energy counter, polled for `seconds` (call it outside training
        windows); None off the counter path or when it changed fewer than 3 times. Kept as `counter_period_s`,
        which bounds each window's edge error from then on; unmeasurable, that bound is unknown, and a warning says
        so."""
        with self._lock:
            if self.source != "nvml-counter":
                return None
            changes, last, end = [], None, self._clock() + seconds
            try:
                while (now := self._clock()) < end:
                    value = self._read_counter()
                    if last is not None and value != last:
                        changes.append(now)
                    last = value
            except Exception:
                changes = []
            gaps = sorted(b - a for a, b in zip(changes, changes[1:]))
            self.counter_period_s = gaps[len(gaps) // 2] if len(gaps) >= 2 else None
            if self.counter_period_s is None:
                self.warnings.append(f"how often NVML's energy counter moves could not be measured (it moved fewer "
                                     f"than 3 times in {seconds:g} s), so how far each window's edges can be off is "
                                     f"unknown")
            return self.counter_period_s

    @property
    def edge_error(self) -> float | None:
        """The counter path's worst-case relative error since reset(): counter period / mean window length (None
        before the period is measured or a window closed)."""
        if self.counter_period_s is None or not self._windows or self._window_s <= 0:
            return None
        return self.counter_period_s * self._windows / self._window_s

    @property
    def power_samples(self) -> list[tuple[float, float]]:
        """(seconds since the meter was made, watts) of the power sampler; empty on the counter path."""
        with self._lock:
            return list(self._samples)

    def close(self) -> None:
        """Stop the sampler and release NVML. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        with self._lock:
            self._shutdown()

    def __enter__(self) -> EnergyMeter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------------------------
    def _read_counter(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def _choose_power_reading(self) -> str:
        """The instantaneous power field where this driver reads it, else nvmlDeviceGetPowerUsage (raises if
        neither reads)."""
        try:
            self._read_instant_milliwatts()
            return _INSTANT
        except Exception:
            self._nvml.nvmlDeviceGetPowerUsage(self._handle)
            return "nvmlDeviceGetPowerUsage"

    def _read_instant_milliwatts(self) -> int:
        nvml = self._nvml
        field = nvml.nvmlDeviceGetFieldValues(self._handle, [nvml.NVML_FI_DEV_POWER_INSTANT])[0]
        if field.nvmlReturn != nvml.NVML_SUCCESS:
            raise nvml.NVMLError(field.nvmlReturn)
        return getattr(field.value, _FIELD_VALUE_MEMBER[field.valueType])

    def _read_power(self) -> tuple[float, float]:
        if self.power_reading == _INSTANT:
            milliwatts = self._read_instant_milliwatts()
        else:
            milliwatts = self._nvml.nvmlDeviceGetPowerUsage(self._handle)
        return self._clock(), milliwatts / 1000.0

    @staticmethod
    def _counter_delta(start: int, end: int) -> int:
        if end >= start:
            return end - start
        if start >= _U64 // 2:  # a 64-bit wrap (centuries away at GPU power, but cheap to get right)
            return end + _U64 - start
        # not a number to count on: after a reset `end` is all the energy since the driver loaded, possibly days'
        raise ValueError(f"the energy counter went back from {start} to {end} mJ (a driver reload or GPU reset?)")

    def _check_edges(self) -> None:
        """Keep one warning with the worst-case edge error, or end the measurement where windows are no longer
        than one counter step."""
        bound = self.edge_error
        if bound is None:
            return
        if self._edge_warning is not None:
            self.warnings.remove(self._edge_warning)
            self._edge_warning = None
        period = f"NVML's energy counter, which moves every {self.counter_period_s * 1e3:.0f} ms"
        if bound >= 1:
            self._stop_measuring(
                f"NVML: training windows averaged {self._window_s / self._windows * 1e3:.0f} ms, no longer than one "
                f"step of {period}: their joules would be the counter's steps, not the energy; evaluate less often "
                f"(train.eval_every) for longer windows")
        elif bound > EDGE_WARN:
            at_worst = next(p for p in (5, 10, 20, 50, 100) if 100 * bound <= p)
            self._edge_warning = (f"its training windows were under 20 steps of {period}: each edge can be off by "
                                  f"up to one step, so this energy is within ±{at_worst} % at worst (evaluate less "
                                  f"often for longer windows)")
            self.warnings.append(self._edge_warning)

    def _note_sharing(self) -> None:
        """One warning, kept up to date, when NVML lists more processes on the board than this one."""
        pids = set()
        nvml = self._nvml
        for query in (nvml.nvmlDeviceGetComputeRunningProcesses, nvml.nvmlDeviceGetGraphicsRunningProcesses):
            try:  # each on its own: one an NVML or driver lacks must not hide what the other sees
                pids |= {p.pid for p in query(self._handle)}
            except Exception:  # sharing cannot be seen this way, and the energy is still right
                pass
        pids -= {0, 0xFFFFFFFF}  # not processes: what an nvidia-ml-py that does not match the driver reads
        if len(pids) <= max(1, self._most_processes):
            return
        if self._most_processes > 1:
            self.warnings.remove(self._sharing_warning())
        self._most_processes = len(pids)
        self.warnings.append(self._sharing_warning())

    def _sharing_warning(self) -> str:
        return (f"{self._most_processes} processes were on {self.gpu_name or 'the GPU'} at once: its energy counts "
                f"them all, not this run alone")

    def _integrate(self, t: float, watts: float) -> None:
        last_t, last_w = self._last
        if t > last_t:
            self._window_j += 0.5 * (watts + last_w) * (t - last_t)
            self._last = (t, watts)

    def _record(self, t: float, watts: float) -> None:
        self._seen += 1
        if (self._seen - 1) % self._stride:
            return
        self._samples.append((t - self._t0, watts))
        if len(self._samples) >= self._max_samples:
            self._samples = self._samples[::2]
            self._stride *= 2

    def _sampler(self) -> None:
        while not self._stop.wait(self.sample_interval_s):
            self.poll()
            if self.source != "nvml-power":
                return

    def _fail(self, where: str, e: BaseException) -> None:
        call = "nvmlDeviceGetTotalEnergyConsumption" if self.source == "nvml-counter" else self.power_reading
        self._stop_measuring(f"NVML: {call} failed {where} ({describe_nvml_error(e)}); energy from then on is "
                             f"unknown, so the run's total is too")

    def _stop_measuring(self, reason: str) -> None:
        self.unavailable_reason = reason
        self.source, self.total_j, self._open = None, None, False
        self._stop.set()

    def _shutdown(self) -> None:
        nvml, self._nvml = self._nvml, None
        if nvml is not None:
            try:
                nvml.nvmlShutdown()
            except Exception:
                pass
