"""`decorbench env`: the hardware, the versions, and which meters work here and, if not, why — found by trying
each meter, not by guessing. Takes ≈ 2 s beyond importing torch, most of it starting codecarbon's tracker once."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import threading
import time

import torch
from torch import nn

from decorbench import __version__
from decorbench.gpus import peak_bf16_flops, why_no_peak
from decorbench.results import cpu_model, provenance, uncommitted


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _memory_gib() -> str:
    try:
        return f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        return "unknown"


def _cores() -> str:
    logical = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = logical
    return f"{usable} usable of {logical} logical"


def _gpus() -> list[str]:
    if not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        extra = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
        return [f"none visible to torch (torch is {built}; torch.cuda.is_available() is False{extra})"]
    lines = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        peak = peak_bf16_flops(p.name)
        mfu = f"MFU against {peak / 1e12:g} TFLOP/s dense bf16 (datasheet)" if peak else \
            f"MFU not reported: {why_no_peak(p.name)}"
        lines.append(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}; "
                     f"{mfu}")
    return lines


def _source() -> str:
    """The commit every run records, as its results will show it."""
    recorded = provenance("cpu")
    commit, dirty = recorded["git_commit"], recorded["git_dirty"]
    if commit is None:
        return ("commit unknown: git cannot tell (not a checkout, git missing, or git refuses the repository's owner) "
                "and $DECORBENCH_GIT_COMMIT is not set")
    return f"commit {commit[:12]}{uncommitted(dirty) or ' (clean)'}"


def _nvml_driver() -> tuple[str, int | None]:
    """(driver text or why there is none, NVML's GPU count)."""
    from decorbench.meters.energy import describe_nvml_error

    try:
        import pynvml
    except ImportError as e:
        return f"unknown (nvidia-ml-py is not installed: {e})", None
    try:
        pynvml.nvmlInit()
    except Exception as e:
        return f"none found (NVML: {describe_nvml_error(e)})", None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        count = pynvml.nvmlDeviceGetCount()
        return (driver.decode() if isinstance(driver, bytes) else str(driver)), int(count)
    except Exception as e:
        return f"unknown (NVML: {describe_nvml_error(e)})", None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _probe_time() -> str:
    from decorbench.meters import Stopwatch

    gpu = torch.cuda.is_available()
    watch = Stopwatch(torch.device("cuda" if gpu else "cpu"))
    try:
        watch.start()
        took = watch.stop()
    except Exception as e:
        return f"FAILS: {type(e).__name__}: {e}"
    sync = "synchronised with the GPU at window edges" if gpu else "no GPU to synchronise"
    return f"works: time.perf_counter windows ({sync}; an empty window took {took * 1e6:.0f} µs)"


def _probe_flops() -> str:
    from decorbench.meters import count_flops

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.zeros(2, 8)
    try:
        forward, step = count_flops(model, x, backward=False), count_flops(model, x)
    except Exception as e:
        return f"FAILS: count_flops raised {type(e).__name__}: {e}"
    expected = 2 * 2 * (8 * 16 + 16 * 4)
    verdict = "works" if forward == expected else f"WRONG (expected {expected})"
    return (f"{verdict}: torch.utils.flop_counter on a meta-device copy; an 8-16-4 MLP at batch 2: forward "
            f"{forward} FLOPs, training step {step}")


def _probe_memory() -> str:
    from decorbench.meters import peak_memory_bytes, reset_peak_memory

    try:
        peak = peak_memory_bytes(torch.device("cpu"))
        cannot_reset = reset_peak_memory(torch.device("cpu"))
        gpu = (f" ({peak_memory_bytes(torch.device('cuda')) / 2**20:.0f} MiB so far)" if torch.cuda.is_available()
               else " (no GPU here)")
    except Exception as e:
        return f"FAILS: {type(e).__name__}: {e}"
    if cannot_reset:
        return (f"GPU only: on a CPU runs record none, since it {cannot_reset} and the process's peak would count "
                f"earlier runs; on a GPU the CUDA allocator's peak{gpu}")
    return (f"works: on a CPU this process's peak resident set ({peak / 2**20:.0f} MiB so far), on a GPU the CUDA "
            f"allocator's peak{gpu}")


def _probe_contention(seconds: float = 0.5) -> str:
    from decorbench.meters.contention import BUSY_SHARE, CpuContentionMeter

    try:
        meter = CpuContentionMeter()
        meter.start()
        time.sleep(seconds)
        other_s, span_s = meter.other_cpu_s()
    except Exception as e:
        return f"FAILS: {type(e).__name__}: {e}"
    return (f"works: other processes kept {other_s / span_s:.2g} of the {len(meter.cores)} usable cores busy over "
            f"{seconds:g} s just now; each run counts this over its run and is flagged over {BUSY_SHARE:.0%} of them")


def _probe_energy() -> tuple[str, str]:
    """(NVML counter line, NVML power-sampling line)."""
    from decorbench.meters.energy import EnergyMeter

    devices = [torch.device("cuda", i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() \
        else [torch.device("cuda", 0)]
    counter, power = [], []
    for device in devices:
        with EnergyMeter(device, sample_interval_s=0) as meter:
            if meter.source is None:
                reason = meter.unavailable_reason
                if not torch.cuda.is_available() and "no NVIDIA driver" not in reason:
                    reason += "; and torch sees no CUDA GPU"
                counter.append(f"unavailable: {reason}")
                power.append(f"unavailable: {reason}")
                continue
            name = f"{device} ({meter.gpu_name}, {meter.mapping})"
            meter.begin_window()
            source, joules = meter.source, meter.end_window()
            if joules is None:  # it worked when made, then a reading failed
                counter.append(f"FAILS on {name}: {meter.unavailable_reason}")
                power.append(f"FAILS on {name}: {meter.unavailable_reason}")
            elif source == "nvml-counter":
                interval = meter.counter_interval_s(0.5)
                steps = "" if interval is None else f"; it moves every {interval * 1e3:.0f} ms (idle)"
                counter.append(f"works on {name}: a window read {joules:.3f} J{steps}")
                power.append(f"not needed on {name} (the counter works); the fallback when it does not")
            else:
                counter.append(f"not supported on {name}")
                power.append(f"works on {name}: {meter.power_reading} sampled every 0.1 s and integrated")
    return "; ".join(counter), "; ".join(power)


def _probe_carbon(country_iso_code: str) -> str:
    from decorbench.meters.carbon import CarbonMeter

    meter = CarbonMeter(country_iso_code)
    try:
        started = meter.start()
    except Exception as e:  # the meter should never raise; if it does, say so rather than hide it
        return f"FAILS: CarbonMeter.start raised {type(e).__name__}: {e}"
    if not started:
        return f"unavailable: {meter.unavailable_reason}"
    meter.begin_window()
    kg = meter.end_window()
    meter.stop()
    if kg is None:
        return f"FAILS after starting: {meter.unavailable_reason}"
    return (f"works — an {meter.method}. Offline, writes no file; starting the tracker took {meter.start_s:.1f} s "
            f"(the first in a process; later ones reuse its hardware probe), stopping it {meter.stop_s * 1e3:.1f} ms")


def describe_environment(*, country_iso_code: str = "NLD", probe_carbon: bool = True) -> str:
    """A plain-text report for `decorbench env`. Every meter line comes from trying that meter here."""
    started = time.perf_counter()
    carbon: list[str] = []
    if probe_carbon:  # codecarbon's start mostly waits on a cpuinfo subprocess: overlap it with the rest
        thread = threading.Thread(target=lambda: carbon.append(_probe_carbon(country_iso_code)), daemon=True)
        thread.start()
    driver, nvml_count = _nvml_driver()
    gpus = _gpus()
    used = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if nvml_count and nvml_count > used:  # a shared node: the reader sees which GPUs the runs do not meter
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = (f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else
               "a CPU-only torch build?" if not used else "a MIG slice, or a GPU this torch build cannot use?")
        gpus.append(f"NVML sees {nvml_count} NVIDIA GPU(s), torch uses {used} ({why})")
    counter, power = _probe_energy()
    time_line, flops_line, memory_line = _probe_time(), _probe_flops(), _probe_memory()
    contention_line = _probe_contention()  # while the carbon probe's thread starts codecarbon: its own work
    if probe_carbon:
        thread.join(timeout=30)
    carbon_line = carbon[0] if carbon else ("not probed" if not probe_carbon else "no answer within 30 s")
    rows = [
        ("hardware", None),
        ("cpu", f"{cpu_model() or 'unknown'} ({_cores()} cores)"),
        ("memory", _memory_gib()),
        *[("gpu", g) for g in gpus],
        ("host", f"{platform.node()} ({platform.platform()})"),
        ("versions", None),
        ("python", platform.python_version()),
        ("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none'})"),
        ("torchvision", _version("torchvision")),
        ("decorbench", f"{__version__}, {_source()}"),
        ("codecarbon", _version("codecarbon")),
        ("nvidia-ml-py", _version("nvidia-ml-py")),
        ("nvidia driver", driver),
        ("meters (each tried here)", None),
        ("time", time_line),
        ("flops", flops_line),
        ("memory", memory_line),
        ("other work on CPUs", contention_line),
        ("energy: NVML counter", counter),
        ("energy: NVML power", power),
        ("carbon: codecarbon", carbon_line),
    ]
    width = max(len(k) for k, v in rows if v is not None)
    lines = [f"decorbench {__version__} environment"]
    for key, value in rows:
        lines.append(f"{key}" if value is None else f"  {key:<{width}}  {value}")
    lines.append(f"(probed in {time.perf_counter() - started:.1f} s)")
    return "\n".join(lines)
