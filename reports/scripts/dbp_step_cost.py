"""What does a decorrelated-backprop (DBP) training step cost relative to plain backprop (BP), and why?

Times a full ResNet-18 training step on CPU for BP, DBP and BP as the DBP authors' code timed it ("bp-converted":
the DBP model with the update off, still forming A = W·R and sampling; same seed, weights and batch), then times and
FLOP-counts in isolation the three things DBP adds -- the decorrelation matmul (A = W·R; z = R·x where a
DecorLinear's forward goes unfused), the input sampling in the forward, and the R update -- so that the
DBP/BP overhead can be attributed to them.

    python reports/scripts/dbp_step_cost.py [--cases a b] [--warmup 2] [--steps 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from decorbench.dbp import DecorLinear, decor_layers, decorrelate, update
from decorbench.models import create_model
from decorbench.results import provenance as run_provenance
from decorbench.step import make_step

DECOR_LR = 1e-4
CASES = {
    "a": {"label": "32x32, batch 128, CIFAR stem", "size": 32, "batch": 128, "classes": 10},
    "b": {"label": "224x224, batch 32", "size": 224, "batch": 32, "classes": 1000},
}


def fixed_batch_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, decor: bool) -> Callable[[], object]:
    """decorbench's training step (Adam, then the DBP update) on one fixed batch."""
    step = make_step(model, torch.optim.Adam(model.parameters()), dbp_lr=DECOR_LR if decor else None)
    return lambda: step(x, y)


def clock(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(timers: dict[str, Callable[[], float]], warmup: int, steps: int) -> dict[str, float]:
    """Median of each timer's returned seconds; timers take turns so slow drifts hit them all alike."""
    for _ in range(warmup):
        for timer in timers.values():
            timer()
    samples = {name: [] for name in timers}
    for _ in range(steps):
        for name, timer in timers.items():
            samples[name].append(timer())
    return {name: statistics.median(s) for name, s in samples.items()}


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def capture_inputs(model: nn.Module, layers: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's input in one training-mode forward of the batch."""
    seen = {}
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.__setitem__(m, args[0].detach())) for m in layers]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return [seen[m] for m in layers]


def decor_product(layer: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The matmul DBP adds to the layer's forward, chosen as the forward chooses, and the tensor it backprops to."""
    if isinstance(layer, DecorLinear) and x.numel() // layer.in_features < layer.out_features:
        x = x.detach().requires_grad_()
        return F.linear(x, layer.R), x  # unfused: z = R·x
    return layer._fused_weight(), layer.weight  # A = W·R


def as_rows(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as its forward hands it to the sampler: a DecorLinear flattens it to rows."""
    return x.reshape(-1, layer.in_features) if isinstance(layer, DecorLinear) else x


def flops_by_group(model: nn.Module, layers: list[nn.Module], inputs: list[torch.Tensor],
                   grads: list[torch.Tensor], refill_samples: Callable[[], None]) -> dict[str, dict[str, int]]:
    """The decorrelation FLOPs per top-level block (conv1, layer1..4, fc): update(block) updates just its layers."""
    by_group = {}
    for group, block in model.named_children():
        members = [i for i, m in enumerate(layers) if any(m is b for b in block.modules())]
        if not members:
            continue

        def product() -> None:
            outs, wrt = zip(*(decor_product(layers[i], inputs[i]) for i in members))
            torch.autograd.grad(outs, wrt, [grads[i] for i in members])

        refill_samples()
        by_group[group] = {"product_fwd_bwd": count_flops(product),
                           "update": count_flops(lambda: update(block, DECOR_LR))}
    return by_group


def measure_case(case: dict, warmup: int, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    bp_model = create_model("resnet18", case["classes"], input_shape=(3, case["size"], case["size"]))
    dbp_model, converted_model = (decorrelate(copy.deepcopy(bp_model)) for _ in range(2))
    x = torch.randn(case["batch"], 3, case["size"], case["size"])
    y = torch.randint(case["classes"], (case["batch"],))
    bp_step, dbp_step = fixed_batch_step(bp_model, x, y, False), fixed_batch_step(dbp_model, x, y, True)
    converted_step = fixed_batch_step(converted_model, x, y, False)
    step_s = median_seconds({"bp": lambda: clock(bp_step), "dbp": lambda: clock(dbp_step),
                             "converted": lambda: clock(converted_step)}, warmup, steps)

    layers = list(decor_layers(dbp_model).values())
    inputs = capture_inputs(dbp_model, layers, x)
    with torch.no_grad():
        grads = [torch.randn_like(decor_product(m, xi)[0]) for m, xi in zip(layers, inputs)]

    def product_fwd_bwd() -> None:
        outs, wrt = zip(*(decor_product(m, xi) for m, xi in zip(layers, inputs)))
        torch.autograd.grad(outs, wrt, grads)

    def refill_samples() -> None:
        with torch.no_grad():
            dbp_model(x)

    def timed_update() -> float:
        refill_samples()
        return clock(lambda: update(dbp_model, DECOR_LR))

    piece_s = median_seconds({
        "product_fwd_bwd": lambda: clock(product_fwd_bwd),
        "sampling": lambda: clock(lambda: [m._sample_inputs(as_rows(m, xi)) for m, xi in zip(layers, inputs)]),
        "update": timed_update,
    }, warmup, steps)

    flops = {"bp_step": count_flops(bp_step), "dbp_step": count_flops(dbp_step),
             "converted_step": count_flops(converted_step), "product_fwd_bwd": count_flops(product_fwd_bwd)}
    refill_samples()
    flops["update"] = count_flops(lambda: update(dbp_model, DECOR_LR))
    flops["by_group"] = flops_by_group(dbp_model, layers, inputs, grads, refill_samples)
    extra = {"product_fwd_bwd": flops["product_fwd_bwd"], "update": flops["update"],
             "dbp_minus_bp": flops["dbp_step"] - flops["bp_step"]}
    flops |= {"dbp_over_bp": flops["dbp_step"] / flops["bp_step"],
              "extra_pct_of_bp": {k: 100 * v / flops["bp_step"] for k, v in extra.items()}}
    seconds = {"bp_step": step_s["bp"], "dbp_step": step_s["dbp"], "dbp_over_bp": step_s["dbp"] / step_s["bp"],
               "converted_step": step_s["converted"], "dbp_over_converted": step_s["dbp"] / step_s["converted"],
               **piece_s}
    return {**case, "decor_layers": len(layers), "seconds": seconds, "flops": flops}


def provenance(args: argparse.Namespace) -> dict:
    run = run_provenance("cpu")
    return {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "git_commit": run["git_commit"],
            "git_dirty": run["git_dirty"],
            "torch": torch.__version__,
            "torchvision": torchvision.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "cpu": run["cpu"], "command": " ".join(sys.argv),
            "warmup": args.warmup, "steps": args.steps, "seed": args.seed,
            "decor_lr": DECOR_LR, "optimizer": "Adam (default lr)", "dbp_settings": "decorrelate() defaults"}


def markdown(prov: dict, results: dict) -> str:
    lines = [f"torch {prov['torch']}, {prov['threads']} threads, CPU {prov['cpu']}, {prov['date']}, "
             f"warmup {prov['warmup']}, {prov['steps']} timed steps (medians)", "",
             "| case | BP step s | DBP step s | DBP/BP | DBP−BP s | A=W·R fwd+bwd s | sampling s | update s "
             "| pieces Σ s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results.values():
        s = r["seconds"]
        pieces = s["product_fwd_bwd"] + s["sampling"] + s["update"]
        lines.append(f"| {r['label']} | {s['bp_step']:.3f} | {s['dbp_step']:.3f} | {s['dbp_over_bp']:.2f} | "
                     f"{s['dbp_step'] - s['bp_step']:.3f} | {s['product_fwd_bwd']:.3f} | {s['sampling']:.4f} | "
                     f"{s['update']:.3f} | {pieces:.3f} |")
    lines += ["", "BP-CONVERTED: the DBP model with the update off (R stays the identity), as the DBP authors' code "
              "timed BP; it learns as BP does.", "",
              "| case | BP step s | BP-CONVERTED step s | BP-CONVERTED/BP | DBP step s | DBP/BP-CONVERTED "
              "| BP-CONVERTED step GFLOP |", "|---|---|---|---|---|---|---|"]
    for r in results.values():
        s, f = r["seconds"], r["flops"]
        lines.append(f"| {r['label']} | {s['bp_step']:.3f} | {s['converted_step']:.3f} | "
                     f"{s['converted_step'] / s['bp_step']:.2f} | {s['dbp_step']:.3f} | {s['dbp_over_converted']:.2f} "
                     f"| {f['converted_step'] / 1e9:.1f} |")
    lines += ["", "| case | BP step GFLOP | DBP step GFLOP | DBP/BP | A=W·R fwd+bwd GFLOP (% BP) | update GFLOP (% BP) "
              "| DBP−BP (% BP) |", "|---|---|---|---|---|---|---|"]
    for r in results.values():
        f, pct = r["flops"], r["flops"]["extra_pct_of_bp"]
        lines.append(f"| {r['label']} | {f['bp_step'] / 1e9:.1f} | {f['dbp_step'] / 1e9:.1f} | {f['dbp_over_bp']:.3f} | "
                     f"{f['product_fwd_bwd'] / 1e9:.1f} ({pct['product_fwd_bwd']:.1f}%) | {f['update'] / 1e9:.1f} "
                     f"({pct['update']:.1f}%) | {pct['dbp_minus_bp']:.1f}% |")
    lines += ["", "Decorrelation GFLOP per step by block:", "", "| case | work | "
              + " | ".join(next(iter(results.values()))["flops"]["by_group"]) + " |",
              "|---|---|" + "---|" * len(next(iter(results.values()))["flops"]["by_group"])]
    for r in results.values():
        groups = r["flops"]["by_group"].values()
        for work, label in (("update", "update"), ("product_fwd_bwd", "A=W·R fwd+bwd")):
            lines.append(f"| {r['label']} | {label} | " + " | ".join(f"{g[work] / 1e9:.1f}" for g in groups) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write all numbers and provenance to this JSON file")
    args = parser.parse_args()
    prov = provenance(args)
    results = {key: measure_case(CASES[key], args.warmup, args.steps, args.seed) for key in args.cases}
    print(markdown(prov, results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"provenance": prov, "cases": results}, f, indent=2)


if __name__ == "__main__":
    main()
