"""What the asv suites share: the measured cases, the training step, and a tiny mode for the tests.

`DECORBENCH_BENCH_TINY=1` shrinks every batch and image and keeps only the shallowest depth, so that each
benchmark body runs in about a second: tests/test_benchmarks.py uses it to run every benchmark once; its numbers
mean nothing.
"""

import os
import statistics
import time

import torch

from decorbench.dbp import decorrelate
from decorbench.models import create_model
from decorbench.step import make_step, prepare_model

TINY = os.environ.get("DECORBENCH_BENCH_TINY") == "1"
METHODS = ["bp", "dbp"]
DEVICES = ["cpu", "cuda"]
DEPTHS = ["resnet10"] if TINY else ["resnet10", "resnet18", "resnet34", "resnet50"]
DBP_LR = 1e-4  # the authors' CIFAR recipe (artcogsys/decorbp); the update's cost does not depend on it

# name → (model, image side, batch): the three training-step cases
STEP_CASES = {
    "small-cnn-32px-b128": ("small-cnn", 32, 128),
    "resnet18-32px-b128": ("resnet18", 32, 128),
    "resnet18-224px-b16": ("resnet18", 224, 16),
}
# image side, batch for the per-depth measurements: CIFAR stem at the authors' batch, and an ImageNet shape
DEPTH_CASES = {"32px-b128": (32, 128), "224px-b32": (224, 32)}


def size(side: int, batch: int) -> tuple[int, int]:
    """(side, batch) as measured, or the tiny stand-in the tests run."""
    return (min(side, 32), 2) if TINY else (side, batch)


def device_or_skip(name: str) -> torch.device:
    """The device, or NotImplementedError, which asv reports as a skipped benchmark (no GPU here)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise NotImplementedError("no CUDA GPU")
    return torch.device(name)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def as_trained(device: torch.device) -> torch.autocast:
    """The autocast the GPU suites train under (bf16 on a GPU; off on a CPU, as there)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


class Step:
    """One training step of `model` (decorrelated for DBP) on a fixed random batch: decorbench's own step (Adam, then
    the DBP update). On a GPU with its fast path, bf16 autocast, TF32 and channels_last, as the GPU suites run it."""

    def __init__(self, method: str, model: str, side: int, batch: int, device: torch.device, num_classes: int = 10):
        torch.manual_seed(0)
        self.model = create_model(model, num_classes, input_shape=(3, side, side))
        self.dbp = method == "dbp"
        if self.dbp:
            decorrelate(self.model)
        fast = device.type == "cuda"
        prepare_model(self.model.to(device).train(), channels_last=fast)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.step = make_step(self.model, self.opt, amp=fast, channels_last=fast, tf32=fast,
                              dbp_lr=DBP_LR if self.dbp else None)
        self.x = torch.randn(batch, 3, side, side, device=device)
        self.y = torch.randint(num_classes, (batch,), device=device)
        self.device = device

    def __call__(self) -> None:
        self.step(self.x, self.y)
        synchronize(self.device)

    def seconds(self, repeats: int) -> list[float]:
        """Wall time of `repeats` steps, each synchronised with the device."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self()
            times.append(time.perf_counter() - start)
        return times


def step_time_ratio(model: str, side: int, batch: int, device: torch.device, repeats: int) -> float:
    """Median DBP step time over median BP step time, steps interleaved so drifts hit both alike."""
    steps = [Step(method, model, side, batch, device) for method in METHODS]
    for step in steps:
        step()  # warm-up: allocator, kernels, first-touch
    times = {method: [] for method in METHODS}
    for _ in range(repeats):
        for method, step in zip(METHODS, steps):
            times[method] += step.seconds(1)
    return statistics.median(times["dbp"]) / statistics.median(times["bp"])
