"""Does computing the R update's matrix products in TF32 change what DBP learns? Measured on a CPU by emulation.

With `train.tf32` a GPU runs the update's float32 matmuls on TF32 tensor cores: both factors of each product
rounded to 10 mantissa bits, the products summed in fp32, R accumulated in fp32. A CPU has no TF32, so here each
factor of every matrix product inside `update()` is rounded to 10 mantissa bits (to nearest, ties to even) before
the exact product (a TorchFunctionMode); the rest is decorbench's own code. Two measures, on digits at 32×32:

1. `increments`: a DBP ResNet (CIFAR stem) trains with exact updates; at chosen steps, every layer's increment ΔR
   is computed three times from the same weights and batch: exactly, with TF32-rounded factors (same sample),
   and exactly from a second random sample of the batch. Per layer: ‖ΔR_tf32 − ΔR‖ / ‖ΔR‖ (what TF32 changes)
   beside ‖ΔR_other − ΔR‖ / ‖ΔR‖ (how much the update already varies with the images it samples).
2. `training`: the same seed trained with exact and with TF32-rounded updates (same initial weights, batches and
   sample indices): decorrelation loss and test accuracy at the end.

    python reports/scripts/tf32_update.py --json reports/cpu/tf32_update.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import sys

import torch

from decorbench.data import load_data
from decorbench.dbp import decor_layers, decorrelate, update
from decorbench.env import provenance
from decorbench.models import create_model
from decorbench.settings import TrainConfig
from decorbench.step import make_step
from decorbench.train import evaluate

# the factors' positions; `a @ b` arrives as Tensor.matmul
MATMULS = {torch.matmul: (0, 1), torch.Tensor.matmul: (0, 1), torch.Tensor.__matmul__: (0, 1), torch.mm: (0, 1),
           torch.addmm: (1, 2)}


def tf32_round(t: torch.Tensor) -> torch.Tensor:
    """float32 values rounded to TF32's 10 mantissa bits (to nearest, ties to even), kept as float32."""
    bits = t.contiguous().view(torch.int32)
    return ((bits + 0x0FFF + ((bits >> 13) & 1)) & ~0x1FFF).view(torch.float32)


class TF32Factors(torch.overrides.TorchFunctionMode):
    """Inside, both factors of every float32 matrix product are rounded to TF32 first; addmm's added term is not."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in MATMULS:
            args = list(args)
            for i in MATMULS[func]:
                if args[i].dtype == torch.float32:
                    args[i] = tf32_round(args[i])
        return func(*args, **(kwargs or {}))


def _setup(model: str, seed: int, batch: int):
    torch.manual_seed(seed)
    data = load_data("digits", batch_size=batch, seed=seed, options={"image_size": 32})
    net = decorrelate(create_model(model, data.num_classes, input_shape=data.input_shape), kappa=0.01)
    # decorbench's step without its update (the layers still sample): the update is made here, exact or rounded
    return data, net, make_step(net, torch.optim.Adam(net.parameters(), lr=1e-3))


def _increments(net, dbp_lr: float, tf32: bool) -> dict[str, torch.Tensor]:
    """Each layer's ΔR from its current sample, R and the samples left as they were."""
    layers = decor_layers(net)
    before = {n: (m.R.clone(), m.sample) for n, m in layers.items()}
    with TF32Factors() if tf32 else contextlib.nullcontext():
        update(net, dbp_lr)
    out = {}
    for n, m in layers.items():
        out[n] = m.R - before[n][0]
        m.R.copy_(before[n][0])
        m.sample = before[n][1]
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _batches(data, steps: int):
    """The first `steps` training batches, epoch after epoch."""
    return itertools.islice((batch for epoch in itertools.count() for batch in data.train_batches(epoch)), steps)


def increments(model: str, at: list[int], dbp_lr: float, seed: int, batch: int) -> list[dict]:
    data, net, train_step = _setup(model, seed, batch)
    rows = []
    for step, (x, y) in enumerate(_batches(data, max(at) + 1)):
        if step in at:
            with torch.no_grad():
                net(x)  # a second random sample of the same batch, by the same weights
            other = {n: m.sample for n, m in decor_layers(net).items()}
        train_step(x, y)
        if step in at:
            exact = _increments(net, dbp_lr, tf32=False)
            rounded = _increments(net, dbp_lr, tf32=True)
            mine = {n: m.sample for n, m in decor_layers(net).items()}
            for n, m in decor_layers(net).items():
                m.sample = other[n]
            resampled = _increments(net, dbp_lr, tf32=False)
            for n, m in decor_layers(net).items():
                m.sample = mine[n]
                rows.append({"step": step, "layer": n, "d": m.decor_dim, "tf32_vs_exact": _rel(rounded[n], exact[n]),
                             "other_sample_vs_exact": _rel(resampled[n], exact[n])})
                print(f"step {step:3d} {n:22s} d {m.decor_dim:5d}  tf32 {rows[-1]['tf32_vs_exact']:.2e}  "
                      f"other sample {rows[-1]['other_sample_vs_exact']:.2e}", flush=True)
        update(net, dbp_lr)
    return rows


def training(model: str, steps: int, dbp_lr: float, seed: int, batch: int, tf32: bool) -> dict:
    data, net, train_step = _setup(model, seed, batch)
    losses = []
    for x, y in _batches(data, steps):
        train_step(x, y)
        with TF32Factors() if tf32 else contextlib.nullcontext():
            losses.append(update(net, dbp_lr))
    _, accuracy = evaluate(net, data, TrainConfig(), torch.device("cpu"))
    return {"model": model, "seed": seed, "tf32": tf32, "steps": steps, "decor_loss_first": losses[0],
            "decor_loss_last10": statistics.mean(losses[-10:]), "test_accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", required=True)
    parser.add_argument("--increments-model", default="resnet18")
    parser.add_argument("--at", nargs="+", type=int, default=[0, 10, 30])
    parser.add_argument("--training-model", default="resnet10")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--dbp-lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    out = {"provenance": {**provenance("cpu"), "command": " ".join(sys.argv)}, "settings": vars(args)}
    out["increments"] = increments(args.increments_model, args.at, args.dbp_lr, args.seeds[0], args.batch)
    out["training"] = []
    for seed in args.seeds:
        for tf32 in (False, True):
            out["training"].append(training(args.training_model, args.steps, args.dbp_lr, seed, args.batch, tf32))
            print(out["training"][-1], flush=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
