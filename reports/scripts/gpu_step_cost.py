"""What does a DBP training step cost next to a BP one on a GPU, in time, energy and FLOP utilisation?

For each depth × batch, builds the BP, the BP-CONVERTED (BP as the DBP authors' code timed it: the DBP model with the
update off) and the DBP ResNet (CIFAR stem, 3×32×32, 10 classes; same seed, same random batch) and times decorbench's
own training step (`decorbench.step.make_step`: Adam, then the DBP update; bf16 autocast, TF32 and channels_last, as
gpu-reference trains; path `compiled` adds torch.compile, path `fp32` runs float32 math, under autocast the R update,
at full precision, as PyTorch does matmuls by default) in windows of about `--window-s` seconds, the methods' windows
taking turns so drifts in clocks and temperature hit all alike. Per window: CUDA-synchronised wall time, and the GPU's
energy read two ways at once — NVML's energy counter and NVML power readings (instantaneous where the driver has them)
sampled every 0.1 s and integrated — so the two meters are checked against each other on the same work. Before the
sweep, the idle GPU's power over `--idle-s` seconds. FLOPs per step are counted exactly (torch.utils.flop_counter,
DBP's formation and update included); MFU = FLOPs/s ÷ the GPU's datasheet dense bf16 peak (`decorbench.gpus`).

    python reports/scripts/gpu_step_cost.py --out reports/gpu/step_cost [--depths resnet18 resnet34]
        [--batches 128 256] [--paths eager compiled fp32] [--windows 5] [--window-s 2] [--idle-s 5]

Writes `<out>.json` (every window, provenance) and `<out>.md` (the tables). Runs on a CPU too (no energy there:
null with the reason), which is how the tests exercise it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from decorbench.dbp import decorrelate
from decorbench.gpus import mfu
from decorbench.meters import EnergyMeter, Stopwatch, count_flops, peak_memory_bytes, reset_peak_memory
from decorbench.models import create_model
from decorbench.results import provenance, uncommitted
from decorbench.step import make_step, prepare_model
from decorbench.train import CONVERTED, resolve_device

METHODS = ("bp", "bp-converted", "dbp")  # bp-converted: BP as the DBP authors' code timed it (decorbench.train)
PATHS = ("eager", "compiled", "fp32")
DBP = {"kappa": 0.01, "sample_fraction": 0.1, "lr": 1e-4}  # the authors' CIFAR recipe (artcogsys/decorbp)
WARMUP_STEPS = 3  # cuDNN autotuning, the allocator; torch.compile compiles in the first


class _PowerOnly:
    """pynvml as seen by a GPU without the energy counter: EnergyMeter then falls back to sampling power."""

    def __init__(self, nvml):
        self._nvml = nvml

    def __getattr__(self, name):
        return getattr(self._nvml, name)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        raise self._nvml.NVMLError(self._nvml.NVML_ERROR_NOT_SUPPORTED)


def meters(device: torch.device) -> dict[str, EnergyMeter]:
    """The counter meter and a power-sampling meter on the same GPU (the latter only where pynvml imports)."""
    out = {"counter": EnergyMeter(device)}
    if out["counter"].source == "nvml-counter":
        import pynvml
        out["sampled"] = EnergyMeter(device, nvml=_PowerOnly(pynvml))
    return out


class Case:
    """One method's model, optimizer, step and fixed batch for a (depth, batch, path)."""

    def __init__(self, method: str, depth: str, batch: int, path: str, device: torch.device, seed: int):
        resident = torch.cuda.memory_allocated(device) if device.type == "cuda" else None
        reset_peak_memory(device)
        torch.manual_seed(seed)
        net = create_model(depth, 10, input_shape=(3, 32, 32))
        if method in CONVERTED:
            decorrelate(net, kappa=DBP["kappa"], sample_fraction=DBP["sample_fraction"])
        prepare_model(net.to(device).train(), channels_last=True)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)
        self.step = make_step(net, opt, amp=True, channels_last=True, tf32=path != "fp32",
                              compile=path == "compiled", dbp_lr=DBP["lr"] if method == "dbp" else None)
        self.x = torch.randn(batch, 3, 32, 32, device=device)
        self.y = torch.randint(10, (batch,), device=device)
        self.flops = count_flops(net, self.x, update_r=method == "dbp")
        self.run(WARMUP_STEPS)
        # its own peak: weights, optimizer state, R, activations (not the other method's model beside it)
        self.peak_memory_bytes = None if resident is None else peak_memory_bytes(device) - resident
        self.steps_per_window = 1
        self.windows: list[dict] = []

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step(self.x, self.y)


def _window(work: Callable[[], None], stopwatch: Stopwatch, energy: dict[str, EnergyMeter]) -> dict:
    """Seconds and joules (per meter; None where it cannot measure) of `work`, read at the window's edges only."""
    before = {k: m.total_j for k, m in energy.items()}
    stopwatch.total_s = 0.0
    stopwatch.start()
    for m in energy.values():
        m.begin_window()
    work()
    seconds = stopwatch.stop()
    joules = {}
    for k, m in energy.items():
        total = m.end_window()
        joules[k] = None if total is None or before[k] is None else total - before[k]
    return {"seconds": seconds, "joules": joules}


def idle_power(device: torch.device, energy: dict[str, EnergyMeter], seconds: float) -> dict:
    """Mean board power of the idle GPU, by each meter (None where it cannot measure)."""
    stopwatch = Stopwatch(device)
    stopwatch.start()  # waits for any work still queued
    time.sleep(1.0)  # and lets the power reading settle after it
    window = _window(lambda: time.sleep(seconds), stopwatch, energy)
    return {k: None if j is None else j / window["seconds"] for k, j in window["joules"].items()}


def measure(depth: str, batch: int, path: str, device: torch.device, energy: dict[str, EnergyMeter],
            windows: int, window_s: float, seed: int) -> dict:
    """Each method of one (depth, batch, path): `windows` windows each, taking turns."""
    cases = {m: Case(m, depth, batch, path, device, seed) for m in METHODS}
    stopwatch = Stopwatch(device)
    for case in cases.values():
        probe = _window(lambda: case.run(2), stopwatch, {})
        case.steps_per_window = max(1, math.ceil(window_s / (probe["seconds"] / 2)))
    for _ in range(windows):
        for case in cases.values():
            window = _window(lambda: case.run(case.steps_per_window), stopwatch, energy)
            case.windows.append({"steps": case.steps_per_window, **window})
    return {m: summarise(c, device) for m, c in cases.items()}


def summarise(case: Case, device: torch.device) -> dict:
    per_step = [w["seconds"] / w["steps"] for w in case.windows]
    seconds = sum(w["seconds"] for w in case.windows)
    steps = sum(w["steps"] for w in case.windows)
    out = {"step_s": statistics.median(per_step), "step_s_min": min(per_step), "step_s_max": max(per_step),
           "flops_per_step": case.flops, "peak_memory_bytes": case.peak_memory_bytes, "windows": case.windows}
    for meter in case.windows[0]["joules"]:
        joules = [w["joules"][meter] for w in case.windows]
        known = None if any(j is None for j in joules) else sum(joules)
        out[f"{meter}_j_per_step"] = None if known is None else known / steps
        out[f"{meter}_watts"] = None if known is None else known / seconds
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    out["mfu"] = mfu(case.flops, out["step_s"], gpu)
    return out


def _f(value, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value * scale, spec)


def markdown(prov: dict, idle: dict, results: list[dict], state: dict) -> str:
    lines = [f"GPU {prov['gpu_name'] or '(none: ' + prov['device'] + ')'}, driver {prov['gpu_driver'] or '—'}, "
             f"torch {prov['torch']}, CUDA {prov['cuda'] or '—'}, "
             f"commit {prov['git_commit'] or 'unknown'}{uncommitted(prov['git_dirty'])}, "
             f"{prov['started_at']}", "", f"Command: `{prov['command']}`", "",
             "Step: Adam + (DBP) decorrelation update (R and its sums in fp32), bf16 autocast, TF32 for float32 "
             "math, the update's (path fp32: full precision), channels_last; ResNet CIFAR stem, 3×32×32, "
             f"10 classes; DBP κ {DBP['kappa']}, sample fraction {DBP['sample_fraction']}. Step time: median over "
             "windows (min–max); energy and power: NVML energy counter over all windows; MFU: FLOPs per step "
             "(DBP's extra work included) / median step time / datasheet dense bf16 peak. BP-CONVERTED: BP as the "
             "DBP authors' code timed it, the DBP model with the update off (it learns as BP, but forms A = W·R and "
             "samples every step).", "",
             "| model | batch | path | BP ms/step | DBP ms/step | DBP/BP time | BP J/step | DBP J/step | DBP/BP energy "
             "| BP W | DBP W | BP MFU | DBP MFU | BP GFLOP | DBP GFLOP | BP / DBP peak GiB "
             "| BP-CONVERTED ms/step | BP-CONVERTED/BP time | DBP/BP-CONVERTED time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        bp, dbp, converted = r["bp"], r["dbp"], r["bp-converted"]
        e_bp, e_dbp = bp["counter_j_per_step"], dbp["counter_j_per_step"]
        lines.append(
            f"| {r['depth']} | {r['batch']} | {r['path']} "
            f"| {_f(bp['step_s'], '.2f', 1e3)} ({_f(bp['step_s_min'], '.2f', 1e3)}–{_f(bp['step_s_max'], '.2f', 1e3)}) "
            f"| {_f(dbp['step_s'], '.2f', 1e3)} ({_f(dbp['step_s_min'], '.2f', 1e3)}–"
            f"{_f(dbp['step_s_max'], '.2f', 1e3)}) | {dbp['step_s'] / bp['step_s']:.2f} "
            f"| {_f(e_bp, '.3f')} | {_f(e_dbp, '.3f')} | {_f(e_dbp and e_bp and e_dbp / e_bp, '.2f')} "
            f"| {_f(bp['counter_watts'], '.0f')} | {_f(dbp['counter_watts'], '.0f')} "
            f"| {_f(bp['mfu'], '.1%')} | {_f(dbp['mfu'], '.1%')} "
            f"| {bp['flops_per_step'] / 1e9:.0f} | {dbp['flops_per_step'] / 1e9:.0f} "
            f"| {_f(bp['peak_memory_bytes'], '.2f', 2**-30)} / {_f(dbp['peak_memory_bytes'], '.2f', 2**-30)} "
            f"| {_f(converted['step_s'], '.2f', 1e3)} | {converted['step_s'] / bp['step_s']:.2f} "
            f"| {dbp['step_s'] / converted['step_s']:.2f} |")
    lines += ["", f"Idle GPU power: counter {_f(idle.get('counter'), '.1f')} W, sampled "
                  f"{_f(idle.get('sampled'), '.1f')} W. The energy counter moves every "
                  f"{_f(prov.get('nvml_counter_interval_s'), '.0f', 1e3)} ms (median, idle)."]
    seconds = [w["seconds"] for r in results for m in METHODS for w in r[m]["windows"]]
    if prov.get("nvml_counter_interval_s") and seconds:  # each edge can take in or miss one step of the counter
        bound = prov["nvml_counter_interval_s"] / statistics.mean(seconds)
        lines[-1] += (f" With windows of {statistics.mean(seconds):.1f} s on average, each edge can take in or miss "
                      f"up to one step, so J/step is within ±{bound:.1%} at worst and DBP/BP energy within about "
                      f"±{2 * bound:.1%}; DBP/BP time has no such step.")
    pairs = [(w["joules"]["counter"], w["joules"].get("sampled")) for r in results for m in METHODS
             for w in r[m]["windows"]]
    pairs = [(c, s) for c, s in pairs if c is not None and s is not None]
    if pairs:
        deviation = [s / c - 1 for c, s in pairs]
        total = sum(s for _, s in pairs) / sum(c for c, _ in pairs) - 1
        lines.append(f"Power sampling ({state['power_reading'].get('sampled')}) vs energy counter over the same "
                     f"{len(pairs)} windows: total "
                     f"{total:+.2%}, per window {min(deviation):+.2%} to {max(deviation):+.2%}.")
    for meter, reason in state["unavailable"].items():
        if reason:
            lines.append(f"Energy ({meter}) not measured: {reason}.")
    for meter, warnings in state["warnings"].items():
        lines += [f"Energy ({meter}), read with care: {warning}." for warning in warnings]
    return "\n".join(lines) + "\n"


def meter_state(energy: dict[str, EnergyMeter]) -> dict[str, dict]:
    """Why each meter cannot measure (None where it can) and its warnings (a shared board, MIG, a counter reset);
    a meter may fail or warn mid-sweep, so asked anew each time."""
    return {"unavailable": {k: m.unavailable_reason for k, m in energy.items()},
            "warnings": {k: list(m.warnings) for k, m in energy.items()},
            "power_reading": {k: m.power_reading for k, m in energy.items()}}


def write(out: Path, prov: dict, idle: dict, results: list[dict], state: dict) -> None:
    """Both files, each replaced whole (a job killed while writing leaves the previous version, not half a file)."""
    saved = {"provenance": prov, "dbp": DBP, "idle_watts": idle, "energy_unavailable": state["unavailable"],
             "energy_warnings": state["warnings"], "power_reading": state["power_reading"], "results": results}
    for suffix, text in ((".json", json.dumps(saved, indent=1)), (".md", markdown(prov, idle, results, state))):
        tmp = out.with_suffix(suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(out.with_suffix(suffix))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="path prefix of the .json and .md written")
    # the paper's models first: a time-boxed job that runs out of time loses the last (its results are kept per case)
    parser.add_argument("--depths", nargs="+", default=["resnet18", "resnet34", "resnet50", "resnet10"])
    parser.add_argument("--batches", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=["eager"])
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    prov = {**provenance(device), "command": " ".join(["python", *sys.argv])}
    energy = meters(device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    try:
        idle = idle_power(device, energy, args.idle_s)
        prov["nvml_counter_interval_s"] = energy["counter"].counter_interval_s(1.0)  # how coarse a window's joules
        for depth in args.depths:
            for batch in args.batches:
                for path in args.paths:
                    r = measure(depth, batch, path, device, energy, args.windows, args.window_s, args.seed)
                    results.append({"depth": depth, "batch": batch, "path": path, **r})
                    print(f"{depth} batch {batch} {path}: DBP/BP step time "
                          f"{r['dbp']['step_s'] / r['bp']['step_s']:.2f}", flush=True)
                    write(out, prov, idle, results, meter_state(energy))  # kept at once: a time-boxed job may be killed
    finally:
        for m in energy.values():
            m.close()
    print(markdown(prov, idle, results, meter_state(energy)))


if __name__ == "__main__":
    main()
