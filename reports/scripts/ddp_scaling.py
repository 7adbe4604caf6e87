"""How does a training step scale from 1 to 2 processes (torchrun, DDP, gloo on the CPU), and what does keeping DBP's R
in sync cost next to DDP's gradient all-reduce?

The driver starts one torchrun job per (model, process count, threads per process); each job times BP and DBP steps
exactly as `decorbench run` takes them (DistributedDataParallel via decorbench.distributed.wrap, the global batch
split over the ranks, `update(..., distributed=True)`), then times the two kinds of communication on their own:
the all-reduce of all gradients (one flat fp32 tensor: what DDP's buckets add up to, without its overlap with the
backward pass) and DBP's pooled statistics, layer by layer as `dbp.update` sends them (rows all-gathered, or the
d×d second moment all-reduced, whichever is smaller).

    python reports/scripts/ddp_scaling.py [--steps 5] [--repeats 3] [--json reports/cpu/ddp_scaling.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

CASES = {
    "small-cnn": {"label": "small-cnn, digits 1x8x8, batch 64", "shape": (1, 8, 8), "classes": 10, "batch": 64},
    "resnet18": {"label": "ResNet-18 CIFAR stem, 3x32x32, batch 64", "shape": (3, 32, 32), "classes": 10,
                 "batch": 64},
}
SETTINGS = [(1, 2), (1, 1), (2, 1)]  # (processes, threads per process): 2 cores in all, or 1 process on 1 core
DBP = {"kappa": 0.5, "sample_fraction": 0.1, "lr": 1e-4}


def worker(case: str, steps: int, repeats: int, threads: int) -> None:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from decorbench import distributed
    from decorbench.dbp import decor_layers, decorrelate, update
    from decorbench.models import create_model

    torch.set_num_threads(threads)
    distributed.init(torch.device("cpu"))
    world, rank, c = distributed.world_size(), distributed.rank(), CASES[case]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(c["batch"], *c["shape"], generator=g).chunk(world)[rank]
    y = torch.randint(c["classes"], (c["batch"],), generator=g).chunk(world)[rank]
    nets = {}
    for method in ("bp", "dbp"):
        torch.manual_seed(0)
        net = create_model(case, c["classes"], input_shape=c["shape"])
        if method == "dbp":
            decorrelate(net, kappa=DBP["kappa"], sample_fraction=DBP["sample_fraction"])
        model = distributed.wrap(net, torch.device("cpu"))
        nets[method] = (net, model, torch.optim.Adam(net.parameters(), lr=1e-3))

    def step(method: str) -> None:
        net, model, opt = nets[method]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if method == "dbp":
            update(net, DBP["lr"], as_tensor=True, distributed=distributed.active())

    def timed(fn, n: int) -> float:
        """Seconds per call of the slowest rank, over n calls."""
        if distributed.active():
            dist.barrier()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        return distributed.max_over_ranks([(time.perf_counter() - start) / n])[0]

    for method in nets:  # warm-up
        timed(lambda: step(method), 2)
    times = {m: [] for m in nets}
    for _ in range(repeats):  # BP and DBP take turns, so drifts in the machine's load hit both alike
        for method in nets:
            times[method].append(timed(lambda: step(method), steps))
    result = {"case": case, "world_size": world, "threads": threads,
              "step_s": {m: statistics.median(t) for m, t in times.items()}, "step_s_all": times,
              "grad_params": sum(p.numel() for p in nets["bp"][0].parameters())}

    if distributed.active():  # the communication alone
        grads = torch.zeros(result["grad_params"])
        result["grad_allreduce_s"] = statistics.median(timed(lambda: dist.all_reduce(grads), 5) for _ in range(repeats))
        net, model, _ = nets["dbp"]
        model(x)  # a training forward: each layer's sample
        layers, messages = [], []
        for name, layer in decor_layers(net).items():
            n, d = layer.sample.shape
            rows = world * n < 2 * d  # the rule in decorbench.dbp.update._pooled_moments
            layers.append({"layer": name, "rows_per_rank": n, "d": d, "sent": "rows" if rows else "d x d",
                           "payload_values": n * d if rows else d * d,
                           "ring_values_per_rank": (world - 1) * n * d if rows else 2 * (world - 1) * d * d // world})
            if rows:
                out = layer.sample.new_empty(world * n, d)
                messages.append(lambda s=layer.sample, o=out: dist.all_gather_single(o, s))
            else:
                moment = torch.zeros(d, d)
                messages.append(lambda m=moment: dist.all_reduce(m))
        result["dbp_layers"] = layers
        result["dbp_comm_s"] = statistics.median(
            timed(lambda: [send() for send in messages], 5) for _ in range(repeats))
    if rank == 0:
        print("RESULT " + json.dumps(result))
    distributed.shutdown()


def provenance() -> dict:
    import torch

    from decorbench.results import provenance as run_provenance

    run = run_provenance("cpu")
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "git_commit": run["git_commit"], "git_dirty": run["git_dirty"], "torch": torch.__version__,
            "python": platform.python_version(), "cpu": run["cpu"], "cpu_count": os.cpu_count(), "host": platform.node(),
            "load_average_before": os.getloadavg(), "command": " ".join(sys.argv)}


def drive(args) -> None:
    runs = []
    prov = provenance()
    for case in args.cases:
        for world, threads in SETTINGS:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
                   __file__, "--worker", case, "--steps", str(args.steps), "--repeats", str(args.repeats),
                   "--threads", str(threads)]
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
            if done.returncode or line is None:
                sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(line.removeprefix("RESULT ")))
            r = runs[-1]
            print(f"{case:10s} {world} proc x {threads} thr: BP {r['step_s']['bp']:.4f} s  "
                  f"DBP {r['step_s']['dbp']:.4f} s"
                  + (f"  grad all-reduce {r['grad_allreduce_s']:.4f} s  DBP comm {r['dbp_comm_s']:.4f} s"
                     if "grad_allreduce_s" in r else ""), flush=True)
    prov["load_average_after"] = os.getloadavg()
    data = {"provenance": prov, "steps": args.steps, "repeats": args.repeats, "runs": runs}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    print(tables(data))


def tables(data: dict) -> str:
    """The report's two Markdown tables: step times, and the communication of the 2-process runs."""
    lines = ["| case | processes × threads | BP step s | DBP step s | DBP/BP | BP speed-up | DBP speed-up |",
             "|---|---|---|---|---|---|---|"]
    for r in data["runs"]:
        base = next(b for b in data["runs"] if b["case"] == r["case"] and (b["world_size"], b["threads"]) == (1, 1))
        bp, dbp = r["step_s"]["bp"], r["step_s"]["dbp"]
        lines.append(f"| {r['case']} | {r['world_size']} × {r['threads']} | {bp:.4f} | {dbp:.4f} | {dbp / bp:.2f} | "
                     f"{base['step_s']['bp'] / bp:.2f} | {base['step_s']['dbp'] / dbp:.2f} |")
    lines += ["", "| case | gradient all-reduce: values, MB, s "
                  "| DBP pooling: collectives (rows / d×d), values, MB, s |", "|---|---|---|"]
    for r in data["runs"]:
        if "dbp_layers" not in r:
            continue
        layers = r["dbp_layers"]
        sent = sum(x["ring_values_per_rank"] for x in layers)
        rows = sum(x["sent"] == "rows" for x in layers)
        grads = r["grad_params"] * 2 * (r["world_size"] - 1) // r["world_size"]
        lines.append(f"| {r['case']} | {grads:,}, {grads * 4 / 1e6:.1f}, {r['grad_allreduce_s']:.4f} | {len(layers)} "
                     f"({rows} / {len(layers) - rows}), {sent:,}, {sent * 4 / 1e6:.1f}, {r['dbp_comm_s']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--steps", type=int, default=5, help="steps per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings per method (median reported)")
    parser.add_argument("--json", help="write every number and the provenance here")
    parser.add_argument("--worker", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.repeats, args.threads)
    else:
        drive(args)


if __name__ == "__main__":
    main()
