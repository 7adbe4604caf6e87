"""One row per run: where it ended, when it first reached the target, and what that cost.

Why one table: the summary, the overhead figure and the runs list all read these per-run numbers, so they are
computed once, here, with pandas (no per-run Python loops: 1,000 runs cost milliseconds). A run is keyed by its
results file, not its run_id, because two result directories of the same suite reuse run_ids.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from decorbench.gpus import peak_bf16_flops

GROUP = ["dataset", "model"]
# name → eval column whose value at the first eval point at or above the target is the cost to get there; steps
# separate DBP's per-step convergence from its per-step cost
TO_TARGET = {"steps": "step", "samples": "samples", "time": "train_time_s", "energy": "energy_j", "co2": "co2_kg",
             "flops": "flops"}
PROBLEMS = ("diverged", "failed", "interrupted")
# an accuracy this close below the target counts as reaching it: the default target, a median of an even number of
# runs, is a float midpoint that can land an ulp above the very accuracy it came from (distinct accuracies on any
# real eval set differ by far more)
TOLERANCE = 1e-9


def natural(text) -> tuple:
    """A sort key in which digit runs compare as numbers: resnet18 before resnet101, so depths read in order."""
    return tuple(int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", str(text))))


def group_key(key: tuple) -> tuple:
    """The sort key of a (dataset, model[, ...]) key: each part in natural order."""
    return tuple(map(natural, key))


def by_group(frame: pd.DataFrame, keys: list[str] = GROUP) -> list[tuple[tuple, pd.DataFrame]]:
    """frame.groupby(keys) in the natural order of its keys."""
    return sorted(frame.groupby(keys, sort=False), key=lambda item: group_key(item[0]))


def busy(runs: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """The runs (one row each) timed on a busy machine, their end records' timing warning set, and the most CPU
    cores' worth of other work any of them saw on average (NaN for none)."""
    if "totals.timing_warnings" not in runs:
        return runs.iloc[:0], math.nan
    flagged = runs[runs["totals.timing_warnings"].notna()]
    cores = pd.to_numeric(flagged["totals.other_cpu_s"]) / pd.to_numeric(flagged["totals.other_cpu_span_s"])
    return flagged, float(cores.max()) if len(flagged) else math.nan


def numbers(runs: pd.DataFrame, column: str, missing: float = float("nan")) -> pd.Series:
    """A run column as numbers; `missing` where a run has no number there (or its results predate the column)."""
    values = runs[column] if column in runs else pd.Series(missing, index=runs.index)
    return pd.to_numeric(values, errors="coerce").fillna(missing)


def validation(runs: pd.DataFrame) -> pd.Series:
    """Per run, the share of its training set held out and scored instead of the test set (data.options.validation;
    0 for records of an older decorbench, which had no such option)."""
    return numbers(runs, "hyperparameters.data.options.validation", 0.0)


def tidy(evals: pd.DataFrame) -> pd.DataFrame:
    """The loaded eval rows with a `run` key (`load` keeps only runs whose dataset, model and method are strings)."""
    return evals.assign(run=evals["source"])


def recorded_target(evals: pd.DataFrame) -> float | None:
    """The budget.target_accuracy all the runs were given, if they agree on one; else None."""
    if "budget.target_accuracy" not in evals:
        return None
    given = evals.drop_duplicates("run")["budget.target_accuracy"]
    return float(given.iloc[0]) if given.notna().all() and given.nunique() == 1 else None


def targets(finals: pd.DataFrame, target: float | None) -> pd.Series:
    """Target accuracy per (dataset, model): the given one, else BP's median final accuracy there (all methods'
    if the group has no such BP run), over the runs that ended without a problem: a diverged, failed, interrupted
    or unfinished run's last accuracy is not where it would have ended, and would pull the target down."""
    scored = finals[finals["scored"]]
    groups = finals.groupby(GROUP).size().index
    if target is not None:
        return pd.Series(float(target), index=groups, name="target")
    bp = scored[scored["method"] == "bp"].groupby(GROUP)["final_accuracy"].median()
    return bp.combine_first(scored.groupby(GROUP)["final_accuracy"].median()).reindex(groups).rename("target")


def chance(runs: pd.DataFrame) -> pd.Series:
    """Per (dataset, model): the accuracy of always guessing the eval set's most frequent class, as the runs
    recorded it (NaN where none did: results of an older decorbench, or no run ended). A target at or below it is
    reached without learning anything."""
    return numbers(runs, "totals.chance_accuracy").groupby([runs[c] for c in GROUP]).max()


# What makes the parts of a resumed run measurements of different things when they differ
RESUME_CHANGES = ("git_commit", "git_dirty", "decorbench_version", "torch", "torchvision", "cuda", "cudnn", "device",
                  "gpu_name", "gpu_driver", "host")


def resumed_elsewhere(evals: pd.DataFrame) -> pd.Series:
    """Per run whose resumed parts ran on other code or hardware than its first: the fields that changed (a field
    one part did not record is no change: an older decorbench's part lacks the newer fields)."""
    fields = [c for c in RESUME_CHANGES if c in evals]
    varies = evals.groupby("run")[fields].nunique() > 1
    changed = varies.apply(lambda row: ", ".join(row.index[row]), axis=1) if fields else pd.Series(dtype=object)
    return changed[changed != ""].astype(object)


def per_run(evals: pd.DataFrame, target: float | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """(runs, targets): one row per run with its last eval point's fields, final_accuracy, step_time_s (training
    seconds per step), mfu (over the whole run and all its processes' GPUs; None off the GPUs with a known peak, or
    for a run resumed on another GPU), resumed_elsewhere (what changed between its parts, or NaN),
    problem, scored (ended without a problem, with an accuracy), reached, reached_at_first_eval (its cost to target
    only an upper bound), <name>_to_target for every TO_TARGET column and time_before_target (the training time at
    the eval point before the first at the target: the crossing lies between the two); and the targets used."""
    by_step = evals.sort_values(["run", "step"], kind="stable")
    runs = by_step.drop_duplicates("run", keep="last").set_index("run")
    runs["evals"] = evals.groupby("run")["step"].count()  # eval records, with an accuracy or not (diverged)
    scored = by_step.dropna(subset=["eval_accuracy"])
    final = scored.drop_duplicates("run", keep="last").set_index("run")
    runs["final_accuracy"] = final["eval_accuracy"]
    runs["step_time_s"] = final["train_time_s"] / final["step"].where(final["step"] > 0)
    gpu = runs["gpu_name"] if "gpu_name" in runs else pd.Series(None, index=runs.index, dtype=object)
    peak = gpu.map({name: peak_bf16_flops(name) for name in gpu.dropna().unique()}).astype(float)
    # `flops` is the whole job's (torchrun: all its processes'), so the peak is that of all its GPUs
    gpus = numbers(runs, "world_size", 1)
    runs["mfu"] = runs["flops"] / runs["train_time_s"].where(runs["train_time_s"] > 0) / (peak * gpus)
    changed = resumed_elsewhere(evals)
    runs["resumed_elsewhere"] = changed.reindex(runs.index)
    other_gpu = changed.str.contains("gpu_name|device").reindex(runs.index, fill_value=False)
    runs.loc[other_gpu, "mfu"] = float("nan")
    runs["problem"] = runs["status"].isin(PROBLEMS) | runs["status"].isna()
    runs["scored"] = runs["final_accuracy"].notna() & ~runs["problem"]  # what a default target is taken from
    goal = targets(runs, target)
    at = pd.MultiIndex.from_frame(scored[GROUP])
    hit = scored[scored["eval_accuracy"].to_numpy() >= goal.reindex(at).to_numpy() - TOLERANCE]
    first = hit.drop_duplicates("run")  # scored is step-ordered: the first eval at/above target
    # the crossing lies between that eval point and the one before (the run's start, before its first)
    before = scored.groupby("run")["train_time_s"].shift(1, fill_value=0.0).loc[first.index]
    first = first.set_index("run")
    runs["time_before_target"] = before.set_axis(first.index)
    runs["reached"] = runs.index.isin(first.index)
    # there already at the first eval point: the crossing lies anywhere before it, its cost is only an upper bound
    opening = scored.drop_duplicates("run").set_index("run")["step"]
    at_first = first["step"] == opening.reindex(first.index)
    runs["reached_at_first_eval"] = at_first.reindex(runs.index, fill_value=False)
    for name, column in TO_TARGET.items():
        runs[f"{name}_to_target"] = first[column]
    return runs.reset_index(), goal
