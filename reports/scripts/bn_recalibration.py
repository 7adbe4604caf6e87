"""Is a drop in eval accuracy the trained model's, or BatchNorm's running statistics lagging behind it?

The runs score the eval set in eval mode, where BatchNorm normalises with running averages of past training batches
(momentum 0.1: the last ~10 steps, each under older weights). When the weights, or DBP's R, move fast, those
averages describe a network that no longer exists. This script trains runs of a suite with decorbench's own
`train_run` (so each is the recorded run: same weights, batches, R and schedule), stops at given eval steps and
scores the eval set twice: as the run did, and with the running statistics recomputed for the current weights over
one pass of the training set (`train.precise_bn` set to an epoch's batches: train-mode forwards, no gradient, R
untouched).

    python reports/scripts/bn_recalibration.py SUITE --steps 6 9 12 15 [--set key=value ...] [--json out.json]

Prints one line per (run, step); the "as run" accuracy equals the run's recorded one (checked).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
from pathlib import Path

import torch

from decorbench.checkpoint import load_checkpoint
from decorbench.data import load_data
from decorbench.results import provenance
from decorbench.suite import load_config
from decorbench.train import build_network, evaluate, train_run


class Records:
    def __init__(self):
        self.evals = []

    def eval(self, record: dict) -> None:
        self.evals.append(record)


def scores(spec, steps: list[int], device: torch.device) -> list[dict]:
    """Per step: the recorded eval accuracy and loss, and both again after recalibration."""
    out, records = [], Records()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, saved = Path(tmp) / "run.pt", None
        for stop_at in steps:
            calls = itertools.count(saved["step"] + 1 if saved else 1)  # should_stop is asked once per step
            train_run(spec, records, device=device, checkpoint=ckpt, resume_from=saved,
                      should_stop=lambda: next(calls) >= stop_at)
            saved = load_checkpoint(ckpt, device)
            record = records.evals[-1]
            assert record["step"] == saved["step"] == stop_at, f"--steps must be eval steps, {stop_at} is not"
            data = load_data(spec.dataset, batch_size=spec.train.batch_size, seed=spec.seed, device=device,
                             root=spec.data_root, options=spec.data_options)
            net = build_network(spec, data).to(device)
            net.load_state_dict(saved["model"])
            loss, accuracy = evaluate(net, data, spec.train, device)
            assert accuracy == record["eval_accuracy"], (accuracy, record["eval_accuracy"])
            every_batch = dataclasses.replace(spec.train, precise_bn=data.steps_per_epoch())  # one whole epoch
            loss_re, accuracy_re = evaluate(net, data, every_batch, device)
            out.append({"run_id": spec.run_id, "method": spec.method, "seed": spec.seed, "step": stop_at,
                        "train_loss": record["train_loss"], "eval_loss": loss, "eval_accuracy": accuracy,
                        "recalibrated_eval_loss": loss_re, "recalibrated_eval_accuracy": accuracy_re})
            print(f"{spec.run_id} step {stop_at:>3}: accuracy {100 * accuracy:5.1f} % -> {100 * accuracy_re:5.1f} % "
                  f"recalibrated; eval loss {loss:.2f} -> {loss_re:.2f}; train loss {record['train_loss']:.2f}",
                  flush=True)
    return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite")
    parser.add_argument("--steps", type=int, nargs="+", required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    config, device = load_config(args.suite, args.overrides), torch.device("cpu")
    rows = [row for spec in config.runs() for row in scores(spec, sorted(args.steps), device)]
    if args.json:
        args.json.write_text(json.dumps({"provenance": provenance(device), "suite": args.suite,
                                         "overrides": args.overrides, "rows": rows}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
