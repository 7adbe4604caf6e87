"""Does instrumenting the loop cost time? `train_run` (stopwatch, energy and carbon meters read at every window
edge, records, budget checks) against a bare hand-written loop of the same model, optimizer and batches that
evaluates at the same steps. Both are wall-clock from the first step to the last evaluation, so everything the
meters do at window edges counts; once-per-run setup (building the model, the FLOP count) and the meters' own
start (codecarbon's ≈ 1.6 s, once per suite) do not. Goal: under 1 % more, a ratio below 1.01.

    python -m benchmarks.meter_overhead [--steps 200] [--repeats 3] [--device cpu]

Both loops train from the same seed on the same data; times are medians over repeats, interleaved.
"""

import argparse
import statistics
import time
from itertools import islice

import torch
import torch.nn.functional as F

from benchmarks.common import DEVICES, TINY, device_or_skip
from decorbench.budget import Budget
from decorbench.data import load_data
from decorbench.meters import CarbonMeter, EnergyMeter
from decorbench.models import create_model
from decorbench.train import RunSpec, TrainConfig, evaluate, resolve_device, train_run

DATA = {"num_classes": 10, "image_size": 32, "train_size": 4096, "test_size": 256}


class _Last:
    record: dict = {}

    def eval(self, record: dict) -> None:
        self.record = record


def bare_step_seconds(spec: RunSpec, device: torch.device) -> float:
    torch.manual_seed(spec.seed)
    data = load_data(spec.dataset, batch_size=spec.train.batch_size, seed=spec.seed, device=device,
                     options=spec.data_options)
    model = create_model(spec.model, data.num_classes, input_shape=data.input_shape,
                         batchnorm=spec.train.batchnorm).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=spec.train.lr)
    epochs = range(spec.budget.max_steps // data.steps_per_epoch() + 1)
    batches = islice((b for epoch in epochs for b in data.train_batches(epoch)), spec.budget.max_steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step, (x, y) in enumerate(batches, 1):  # fetched lazily, as train_run does
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % spec.train.eval_every == 0 or step == spec.budget.max_steps:
            evaluate(model, data, spec.train, device)  # synchronises, as train_run's evaluation does
    return (time.perf_counter() - start) / spec.budget.max_steps


def instrumented_step_seconds(spec: RunSpec, device: torch.device) -> float:
    energy, carbon = EnergyMeter(device), CarbonMeter("NLD")
    carbon.start()
    last = _Last()
    try:
        _, _, totals = train_run(spec, last, device=device, energy=energy, carbon=carbon)
    finally:
        energy.close()
        carbon.stop()
    return last.record["wall_time_s"] / totals["steps"]


def measure(steps: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """(bare, instrumented) median seconds per step, the two loops interleaved."""
    spec = RunSpec("overhead", "bp", "small-cnn", "synthetic", 0,
                   TrainConfig(batch_size=128, lr=1e-3, schedule="constant", eval_every=max(steps // 4, 1)),
                   budget=Budget(max_steps=steps), data_options=DATA)
    bare_step_seconds(spec, device)  # untimed: a process's first steps load libraries and kernels (train_run warms up)
    bare, instrumented = [], []
    for _ in range(repeats):
        bare.append(bare_step_seconds(spec, device))
        instrumented.append(instrumented_step_seconds(spec, device))
    return statistics.median(bare), statistics.median(instrumented)


class MeterOverhead:
    """asv: instrumented over bare step time (goal: below 1.01); on a GPU with the NVML energy meter in the loop."""

    unit = "ratio"
    rounds = 1
    timeout = 900
    params = DEVICES
    param_names = ["device"]

    def setup(self, device):
        self.device = device_or_skip(device)

    def track_meter_overhead_ratio(self, device):
        bare, instrumented = measure(8 if TINY else 100, 1 if TINY else 3, self.device)
        return instrumented / bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    b, i = measure(args.steps, args.repeats, device)
    print(f"device {device}, small-cnn, synthetic 3x32x32, batch 128, {args.steps} steps, eval every "
          f"{max(args.steps // 4, 1)}, median of {args.repeats}: bare {b * 1e3:.2f} ms/step, instrumented "
          f"{i * 1e3:.2f} ms/step, ratio {i / b:.3f}")


if __name__ == "__main__":
    main()
