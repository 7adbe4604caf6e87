"""asv: rendering the HTML report for 1,000 runs (the issue's budget: ≤ 5 s).

Also a script: `python -m benchmarks.report_speed` writes 1,000 synthetic runs (2 datasets × 5 models × BP/DBP ×
50 seeds, 5 eval points each) to a temporary directory and prints the load + render time.
"""

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import TINY
from decorbench.report import render_report
from decorbench.results import RunWriter, run_path

DATASETS, MODELS, SEEDS, EVALS = ("cifar10", "imagenette"), ("resnet10", "resnet18", "resnet34", "mlp", "vit"), 1 if TINY else 50, 5


def layers(epoch: int) -> dict[str, float]:
    """A ResNet-18's 21 decorrelated layers' losses."""
    names = ["conv1", *(f"layer{i}.{j}.conv{k}" for i in range(1, 5) for j in range(2) for k in (1, 2)), "fc"]
    return {name: 0.1 / epoch / (1 + i) for i, name in enumerate(names)}


def write_runs(out: Path) -> int:
    """Synthetic but well-formed results (the §4.3 format, written by RunWriter); returns the number of runs."""
    rng = np.random.default_rng(0)
    runs = 0
    for dataset in DATASETS:
        for model in MODELS:
            for method in ("bp", "dbp"):
                for seed in range(SEEDS):
                    run_id = f"bench-{dataset}-{model}-{method}-s{seed}"
                    run = {"run_id": run_id, "suite": "bench", "method": method, "model": model, "dataset": dataset,
                           "seed": seed, "budget": {"max_epochs": EVALS}, "hyperparameters": {"lr": 1e-3},
                           "decorbench_version": "bench", "git_commit": "0" * 40, "python": "3.11", "torch": "2.14",
                           "cuda": None, "device": "cpu", "gpu_name": None, "gpu_driver": None, "cpu": "bench",
                           "host": "bench", "country_iso_code": "NLD", "started_at": "2026-01-01T00:00:00Z"}
                    step_s = (1.6 if method == "dbp" else 1.0) * rng.uniform(0.9, 1.1)
                    with RunWriter(run_path(out, run_id), run) as writer:
                        for epoch in range(1, EVALS + 1):
                            writer.eval({"step": 100 * epoch, "epoch": epoch, "samples": 6400 * epoch,
                                         "train_time_s": step_s * epoch, "wall_time_s": 1.1 * step_s * epoch,
                                         "train_loss": 1 / epoch, "eval_loss": 1 / epoch,
                                         "eval_accuracy": 1 - 0.5 / epoch - rng.uniform(0, 0.05),
                                         "flops": 10**12 * epoch, "energy_j": 300.0 * step_s * epoch,
                                         "energy_source": "nvml-counter", "co2_kg": 1e-4 * epoch,
                                         "peak_memory_bytes": 2**30,
                                         "decor_loss": 0.1 / epoch if method == "dbp" else None,
                                         "decor_loss_by_layer": layers(epoch) if method == "dbp" else None})
                        writer.end("completed", "max_epochs done", {"steps": 100 * EVALS})
                    runs += 1
    return runs


class Report:
    """One render of 1,000 runs, results files read included."""

    timeout = 120

    def setup(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.results = Path(self.tmp.name) / "results"
        write_runs(self.results)

    def teardown(self):
        self.tmp.cleanup()

    def time_render_1000_runs(self):
        render_report([self.results], Path(self.tmp.name) / "report.html")


if __name__ == "__main__":
    bench = Report()
    bench.setup()
    try:
        for attempt in range(3):
            start = time.perf_counter()
            bench.time_render_1000_runs()
            print(f"render {attempt + 1}: {time.perf_counter() - start:.2f} s for 1,000 runs "
                  f"({(Path(bench.tmp.name) / 'report.html').stat().st_size / 1e6:.2f} MB)")
    finally:
        bench.teardown()
