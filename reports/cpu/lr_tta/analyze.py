"""Tables for reports/cpu/lr_tta.md, from the raw JSONL results files with json + pandas (no decorbench code).

python reports/cpu/lr_tta/analyze.py   (from the repository root; writes per_run.csv beside itself)
"""
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
LRS = ["3e-4", "1e-3", "3e-3", "1e-2"]
TARGET = 0.95

rows = []
for lr in LRS:
    for f in sorted((ROOT / f"lr{lr}" / "runs").glob("*.jsonl")):
        recs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        run = next(r for r in recs if r["type"] == "run")
        evals = [r for r in recs if r["type"] == "eval"]
        ends = [r for r in recs if r["type"] == "end"]
        end = ends[-1] if ends else {"status": "no end record", "totals": {}}
        hp = run["hyperparameters"]
        assert abs(hp["train"]["lr"] - float(lr)) < 1e-12, f
        assert run["budget"]["target_accuracy"] == TARGET and hp["train"]["eval_every"] == 3, f
        assert run["budget"]["max_epochs"] == 10 and hp["train"]["optimizer"] == "adam", f
        hit = next((e for e in evals if e["eval_accuracy"] >= TARGET), None)
        rows.append(dict(
            lr=lr, model=run["model"], method=run["method"], seed=run["seed"], run_id=run["run_id"],
            dbp_lr=(hp["dbp"] or {}).get("lr"), status=end["status"], steps=end["totals"].get("steps"),
            final_acc=end["totals"].get("final_accuracy"),
            first_eval_step=evals[0]["step"] if evals else np.nan,
            steps_to=hit["step"] if hit else np.nan, time_to=hit["train_time_s"] if hit else np.nan,
            flops_to=hit["flops"] if hit else np.nan, upper_bound=bool(hit is not None and hit is evals[0]),
            total_train_s=end["totals"].get("train_time_s"),
            commit=run["git_commit"][:7], dirty=run["git_dirty"], torch=run["torch"], cpu=run["cpu"],
            device=run["device"], resumed=any(r["type"] == "resume" for r in recs), started=run["started_at"]))
runs = pd.DataFrame(rows)
runs.to_csv(ROOT / "per_run.csv", index=False)
print(f"{len(runs)} runs; statuses {runs.status.value_counts().to_dict()}; commits "
      f"{runs.groupby(['commit', 'dirty']).size().to_dict()}; torch {list(runs.torch.unique())}; cpu "
      f"{list(runs.cpu.unique())}; device {list(runs.device.unique())}; dbp.lr {list(runs.dbp_lr.dropna().unique())}; "
      f"resumed {int(runs.resumed.sum())}; hit at first eval {int(runs.upper_bound.sum())}; "
      f"started {runs.started.min()} .. {runs.started.max()}")


def summary(g):
    r = g.steps_to.notna()
    return pd.Series(dict(n=len(g), completed=int((g.status == "completed").sum()), reached=int(r.sum()),
                          steps_med=g.steps_to[r].median(), steps_min=g.steps_to.min(), steps_max=g.steps_to.max(),
                          time_med=g.time_to[r].median(), flops_med=g.flops_to[r].median(),
                          final_med=g.final_acc.median(), final_min=g.final_acc.min(), final_max=g.final_acc.max()))


S = runs.groupby(["model", "method", "lr"], sort=False).apply(summary, include_groups=False).reset_index()
S = S.assign(lr_f=S.lr.astype(float)).sort_values(["model", "lr_f", "method"]).drop(columns="lr_f")
S.to_csv(ROOT / "summary.csv", index=False)
pd.set_option("display.width", 250)
print(S.to_string(index=False))


def rng(b, d):
    r = [x / y for x, y in itertools.product(b.dropna(), d.dropna())]
    return f"{min(r):.2f}-{max(r):.2f}" if r else "-"


def compare(model, lr_bp, lr_dbp):
    b = runs[(runs.model == model) & (runs.method == "bp") & (runs.lr == lr_bp)].set_index("seed").sort_index()
    d = runs[(runs.model == model) & (runs.method == "dbp") & (runs.lr == lr_dbp)].set_index("seed").sort_index()
    sb, sd = b.steps_to.fillna(np.inf), d.steps_to.fillna(np.inf)  # not reached = more steps than any
    return dict(model=model, lr_bp=lr_bp, lr_dbp=lr_dbp,
                reached=f"{b.steps_to.notna().sum()}/{d.steps_to.notna().sum()}",
                steps=f"{b.steps_to.median():.0f}/{d.steps_to.median():.0f}",
                steps_ratio=round(b.steps_to.median() / d.steps_to.median(), 2), steps_rng=rng(b.steps_to, d.steps_to),
                seeds_dbp_fewer_eq_more=(int((sd < sb).sum()), int((sd == sb).sum()), int((sd > sb).sum())),
                time_ratio=round(b.time_to.median() / d.time_to.median(), 2), time_rng=rng(b.time_to, d.time_to),
                flops_ratio=round(b.flops_to.median() / d.flops_to.median(), 2),
                per_seed_steps=list(zip(b.steps_to.tolist(), d.steps_to.tolist())))


print("\n(a) shared lr (medians over the seeds that reached; > 1: DBP needed less; ranges over 5x5 seed pairs)")
for model in ["mlp", "small-cnn"]:
    for lr in LRS:
        print(compare(model, lr, lr))

for key, tie in [("steps_med", "time_med"), ("time_med", "steps_med")]:
    print(f"\n(b) each method at its own best lr by {key} among lrs where all 5 seeds reached (ties: {tie})")
    for model in ["mlp", "small-cnn"]:
        best = {}
        for method in ["bp", "dbp"]:
            c = S[(S.model == model) & (S.method == method) & (S.reached == S.n)].sort_values([key, tie])
            best[method] = c.lr.iloc[0]
            print(f"  {model} {method}: " + ", ".join(f"{r.lr}: {r.steps_med:.0f} steps {r.time_med * 1e3:.0f} ms"
                                                      for r in c.itertuples()) + f" -> {best[method]}")
        print("  ", compare(model, best["bp"], best["dbp"]))
