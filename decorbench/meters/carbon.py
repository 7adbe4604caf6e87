"""CO2e of a run's training windows: codecarbon's OfflineEmissionsTracker, started once, read at window edges.

    carbon = CarbonMeter("NLD")
    carbon.start()                  # ≈ 1.7 s for a process's first tracker, ≈ 10 ms later on; never raises
    carbon.begin_window()
    ...                             # training steps: nothing is read here
    kg = carbon.end_window()        # cumulative kg CO2e of the closed windows since the last reset(), or None
    carbon.stop()

What this number is — an estimate, and `method` says of what, for the machine it runs on:
- codecarbon estimates the machine's electricity (tracking_mode "machine": every process on it, not just this one)
  and multiplies it by the country's average grid carbon intensity (codecarbon's yearly energy-mix table, e.g.
  NLD ≈ 268 gCO2e/kWh). Never the live grid: the tracker is offline and never touches the network.
- CPU: RAPL energy counters where Linux exposes them readable (a measurement); otherwise — and on the CPU-only
  machines we develop on there is no RAPL — a model: the CPU's TDP from codecarbon's table scaled by the
  machine's CPU load (or a constant share of TDP). RAM: a constant power modelled from the installed memory
  (20 W for 24 GB here, most of the estimate on a small CPU machine). GPU: NVIDIA GPUs through NVML's energy
  counter (measured): those `gpu_ids` names (NVML indices; `[]`: none, as for a CPU run), else codecarbon's
  default: the non-empty CUDA_VISIBLE_DEVICES, else every GPU NVML lists.
- So on a CPU-only machine co2_kg is an estimate built on assumed powers, not a measurement.
How it is read: each window is a codecarbon *task* (its public `start_task()` / `stop_task()`, ≈ 1.5 ms a pair
here): stop_task measures at the window's end and returns the window's own energy and CO2e, so what lies between
windows (evaluation) is left out, however short the windows. (Differencing `flush()` readings is not exact: flush
re-measures only when codecarbon's last measurement is over 50 ms old, so windows or evals shorter than that get
lumped into their neighbours: on the smoke suite every window after the first read 0.) Each window leaves
≈ 2.4 kB in codecarbon's task list until stop(). `estimated_energy_j` sums codecarbon's energy of the same
windows: the machine's modelled and measured joules, an estimate, never to be mixed up with a GPU's NVML joules.
The tracker writes no file and calls no API (output_methods is empty, no endpoint, no Electricity Maps token), and
takes nothing from ~/.codecarbon.config or CODECARBON_* (a PUE, a forced intensity or power, a region, a cloud).
Logging: codecarbon logs INFO/WARNING lines at init even with log_level="error"; this module drops every
codecarbon log record (for the whole process, once a CarbonMeter was made) and keeps its warnings and errors to
explain a failure in `unavailable_reason`.
Failures (codecarbon missing, a country it has no data for, a tracker that does not start, a reading that fails)
give co2 None and the reason; a failed meter stays failed. Nothing is ever raised into the training loop.
"""

from __future__ import annotations

import collections
import inspect
import logging
import tempfile
import time
from collections.abc import Callable

_LOGGER = "codecarbon"


class _Capture(logging.Filter):
    """Drops every codecarbon log record; keeps the text of the latest warnings and errors."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: collections.deque[str] = collections.deque(maxlen=20)
        self.count = 0  # messages ever kept

    def since(self, mark: int) -> list[str]:
        """The kept messages logged after `count` was `mark`."""
        new = self.count - mark
        return list(self.messages)[-new:] if new > 0 else []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            try:
                text = record.getMessage()
            except Exception:
                text = str(record.msg)
            exc = record.exc_info[1] if record.exc_info else None
            if exc is not None:
                text = f"{text}: {type(exc).__name__}: {exc}"
            self.messages.append(text)
            self.count += 1
        return False


_CAPTURE = _Capture()


def quiet_codecarbon() -> _Capture:
    """Silence codecarbon's logger (call after importing codecarbon: its import resets the level)."""
    log = logging.getLogger(_LOGGER)
    if _CAPTURE not in log.filters:
        log.addFilter(_CAPTURE)
    log.setLevel(logging.WARNING)
    return _CAPTURE


def country_intensity(country_iso_code: str) -> tuple[str, float] | None:
    """(country name, gCO2e/kWh) from codecarbon's offline energy-mix table, or None if it has no such country
    (then codecarbon would log an error and go on with another number). Raises ImportError without codecarbon."""
    from codecarbon.input import DataSource

    row = DataSource().get_global_energy_mix_data().get(country_iso_code.upper())
    if row is None:
        return None
    return row.get("country_name", country_iso_code), float(row["carbon_intensity"])


def _unknown_country(code: str) -> str:
    return f"codecarbon has no carbon intensity for country_iso_code {code!r} (ISO 3166-1 alpha-3, e.g. NLD, DEU, USA)"


def country_error(code: str) -> str | None:
    """Why codecarbon cannot estimate for `code`, in one line; None if it can, or cannot tell (no codecarbon, no
    table: the meter then says so itself). Checked before anything runs: an unknown code is a typo."""
    try:
        known = country_intensity(code)
    except Exception:
        return None
    return _unknown_country(code) if known is None else None


def _tracker_kwargs(country: str, gpu_ids, measure_power_secs: float) -> dict:
    """Arguments that keep the tracker offline, file-less and quiet, for the codecarbon at hand (≥ 2.8)."""
    kwargs = {"country_iso_code": country, "log_level": "warning", "measure_power_secs": measure_power_secs,
              "project_name": "decorbench", "tracking_mode": "machine", "emissions_endpoint": None,
              "electricitymaps_api_token": "", "output_dir": tempfile.gettempdir(), "allow_multiple_runs": True,
              "output_methods": [], "save_to_file": False, "save_to_api": False,
              # codecarbon takes any argument not given from CODECARBON_* or a .codecarbon.config: its defaults,
              # given, so that what `method` states (this country's table, measured or modelled power) is what it did
              "pue": 1.0, "wue": 0.0, "force_carbon_intensity_g_co2e_kwh": None, "force_cpu_power": None,
              "force_ram_power": None, "force_mode_cpu_load": False, "rapl_include_dram": False,
              "rapl_prefer_psys": False, "region": None, "cloud_provider": None, "cloud_region": None,
              "country_2letter_iso_code": None, "gpu_ids": None if gpu_ids is None else list(gpu_ids)}
    try:
        from codecarbon import OfflineEmissionsTracker
        from codecarbon.emissions_tracker import BaseEmissionsTracker
        accepted = {name for cls in (BaseEmissionsTracker, OfflineEmissionsTracker)
                    for name in inspect.signature(cls.__init__).parameters}
    except Exception:
        accepted = set(kwargs)
    if "output_methods" in accepted:  # codecarbon 3: the save_to_* flags are deprecated (and warn)
        kwargs.pop("save_to_file")
        kwargs.pop("save_to_api")
    return {k: v for k, v in kwargs.items() if k in accepted or k == "country_iso_code"}


def _describe_hardware(tracker) -> str:
    """What codecarbon measures or assumes for each part of the machine (best effort, from its tracker)."""
    parts = []
    try:
        for hw in getattr(tracker, "_hardware", []):
            kind = type(hw).__name__
            if kind == "CPU":
                mode, tdp = getattr(hw, "_mode", "?"), getattr(hw, "_tdp", None)
                generic = " generic" if getattr(hw, "_is_generic_tdp", False) else ""
                if mode in ("intel_rapl", "windows_emi", "apple_powermetrics", "intel_power_gadget"):
                    parts.append(f"CPU measured ({mode})")
                elif mode == "cpu_load":
                    parts.append(f"CPU modelled as TDP {tdp}{generic} W scaled by CPU load (no RAPL)")
                elif mode == "constant":
                    parts.append(f"CPU assumed constant at half its TDP {tdp}{generic} W (no RAPL)")
                else:
                    parts.append(f"CPU by {mode}")
            elif kind == "RAM":
                parts.append(f"RAM modelled at a constant {hw.total_power().W:.1f} W")
            elif kind == "GPU":
                ids = getattr(hw, "gpu_ids", "?")
                parts.append(f"GPU ids {ids} measured by NVML" if ids != [] else "no GPU counted")
            else:
                parts.append(f"{kind} by codecarbon")
    except Exception:
        pass
    return "; ".join(parts) or "hardware not described"


class CarbonMeter:
    """kg CO2e of the machine over begin_window/end_window pairs, estimated by codecarbon offline.

    `gpu_ids`: NVML indices of the GPUs to count (e.g. `[energy_meter.nvml_index]`; `[]`: none); None: codecarbon's
    default (those in a non-empty CUDA_VISIBLE_DEVICES, else all NVML lists). `tracker_factory`: replaces
    OfflineEmissionsTracker (tests).
    Attributes: `total_kg`, `estimated_energy_j`, `unavailable_reason`, `method` (what the number is, in words),
    `country_iso_code`, `country_name`, `carbon_intensity_g_per_kwh`, `start_s`, `stop_s` (seconds they took).
    """

    def __init__(self, country_iso_code: str = "NLD", *, gpu_ids: list[int] | None = None,
                 measure_power_secs: float = 15.0, tracker_factory: Callable | None = None) -> None:
        self.country_iso_code = country_iso_code.upper()
        self.gpu_ids = gpu_ids
        self.measure_power_secs = measure_power_secs
        self.country_name: str | None = None
        self.carbon_intensity_g_per_kwh: float | None = None
        self.total_kg: float | None = None
        self.estimated_energy_j: float | None = None
        self.unavailable_reason: str | None = "carbon meter not started"
        self.method: str | None = None
        self.start_s: float | None = None
        self.stop_s: float | None = None
        self._factory = tracker_factory
        self._tracker = None
        self._open = False
        self._mark = 0

    def start(self) -> bool:
        """Make and start the tracker (once per run, or once for many runs with reset()). True if it measures."""
        if self._tracker is not None or self.start_s is not None:
            return self._tracker is not None
        started = time.perf_counter()
        try:
            self._start()
        finally:
            self.start_s = time.perf_counter() - started
        return self._tracker is not None

    def _start(self) -> None:
        factory = self._factory
        try:
            import codecarbon
            if factory is None:
                from codecarbon import OfflineEmissionsTracker as factory
        except Exception as e:
            self.unavailable_reason = f"codecarbon: cannot import it ({type(e).__name__}: {e})"
            return
        capture = quiet_codecarbon()
        self._mark = capture.count
        try:
            known = country_intensity(self.country_iso_code)
        except Exception:
            known = (None, None)  # no table to check against: let codecarbon decide
        if known is None:
            self.unavailable_reason = _unknown_country(self.country_iso_code)
            return
        self.country_name, self.carbon_intensity_g_per_kwh = known
        try:
            tracker = factory(**_tracker_kwargs(self.country_iso_code, self.gpu_ids,
                                                self.measure_power_secs))
            tracker.start()
            first = tracker.flush()  # also loads the emission tables now rather than at the first window
        except Exception as e:
            self.unavailable_reason = f"codecarbon: the tracker failed to start ({type(e).__name__}: {e})"
            return
        if first is None:  # codecarbon swallows its own exceptions and returns None
            self.unavailable_reason = f"codecarbon: the tracker did not start ({self._logged()})"
            try:
                tracker.stop()
            except Exception:
                pass
            return
        self._tracker = tracker
        self.total_kg, self.estimated_energy_j, self.unavailable_reason = 0.0, 0.0, None
        version = getattr(codecarbon, "__version__", "?")
        intensity = (f"{self.carbon_intensity_g_per_kwh:.1f} gCO2e/kWh" if self.carbon_intensity_g_per_kwh
                     else "its grid average")
        self.method = (f"estimate by codecarbon {version} (offline): the whole machine's electricity × "
                       f"{self.country_name or self.country_iso_code} ({self.country_iso_code}) {intensity}; "
                       f"{_describe_hardware(tracker)}")

    def begin_window(self) -> None:
        """Open a window. A no-op when unavailable or already open."""
        if self._tracker is None or self._open:
            return
        try:
            self._tracker.start_task("decorbench-window")
        except Exception as e:
            self._fail(f"start_task() raised at a window start ({type(e).__name__}: {e})")
            return
        self._open = True

    def end_window(self) -> float | None:
        """Close the open window; returns the cumulative kg CO2e of the closed windows since reset(), or None.
        Without an open window it just returns that total."""
        if self._tracker is None or not self._open:
            return self.total_kg
        self._open = False
        try:
            window = self._tracker.stop_task()
            kg, kwh = (None, None) if window is None else (float(window.emissions), float(window.energy_consumed))
        except Exception as e:
            self._fail(f"stop_task() raised at a window end ({type(e).__name__}: {e})")
            return None
        if kg is None:
            self._fail(f"stop_task() gave no reading at a window end ({self._logged()})")
            return None
        if not (kg >= 0 and kwh >= 0):
            self._fail(f"stop_task() read a negative window ({kg} kg, {kwh} kWh)")
            return None
        if self.total_kg is not None:
            self.total_kg += kg
        if self.estimated_energy_j is not None:
            self.estimated_energy_j += kwh * 3.6e6
        return self.total_kg

    def reset(self, total_kg: float | None = 0.0, estimated_energy_j: float | None = 0.0) -> None:
        """Start new totals (a new run: 0; a resumed run: its last recorded totals, None if unknown). An open
        window is closed uncounted. A failed meter stays failed."""
        if self._open:
            self._open = False
            try:
                self._tracker.stop_task()
            except Exception as e:
                self._fail(f"stop_task() raised ({type(e).__name__}: {e})")
        if self._tracker is not None:
            self.total_kg = None if total_kg is None else float(total_kg)
            self.estimated_energy_j = None if estimated_energy_j is None else float(estimated_energy_j)

    def stop(self) -> float | None:
        """Stop the tracker (≈ 0.2 ms); returns `total_kg`. Idempotent."""
        tracker, self._tracker, self._open = self._tracker, None, False
        if tracker is not None:
            started = time.perf_counter()
            try:
                tracker.stop()
            except Exception:
                pass
            self.stop_s = time.perf_counter() - started
        return self.total_kg

    def __enter__(self) -> CarbonMeter:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _fail(self, what: str) -> None:
        self.unavailable_reason = f"codecarbon: {what}; CO2e from then on is unknown, so the run's total is too"
        self.total_kg = self.estimated_energy_j = None
        tracker, self._tracker, self._open = self._tracker, None, False
        try:
            tracker.stop()
        except Exception:
            pass

    def _logged(self) -> str:
        useful = [m for m in _CAPTURE.since(self._mark) if "graceful shutdown" not in m and m != "stopping."]
        return useful[-1] if useful else "codecarbon logged no reason"
