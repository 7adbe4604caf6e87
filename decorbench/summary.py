"""The short comparison printed after a suite: per model, BP vs DBP final accuracy and time to a target."""

from __future__ import annotations

import pandas as pd


def time_to_target(evals: pd.DataFrame, target: float) -> pd.Series:
    """Per run_id: train_time_s at the first eval point with eval_accuracy ≥ target (NaN if never reached)."""
    reached = evals[evals["eval_accuracy"] >= target].sort_values("step")
    return reached.groupby("run_id")["train_time_s"].first().reindex(evals["run_id"].unique())


def summarize(evals: pd.DataFrame, target: float | None = None) -> tuple[pd.DataFrame, float]:
    """One row per (model, method): runs, median final accuracy, median time to target, reached, speed-up.

    The target defaults to BP's median final accuracy over all models (stated with the table).
    Speed-up = median BP time-to-target / median DBP time-to-target for the same model.
    """
    evals = evals.dropna(subset=["eval_accuracy"])
    finals = evals.sort_values("step").groupby("run_id").last()
    if target is None:
        bp = finals[finals["method"] == "bp"]["eval_accuracy"]
        target = float((bp if len(bp) else finals["eval_accuracy"]).median())
    finals["tta_s"] = time_to_target(evals, target)
    table = finals.groupby(["model", "method"]).agg(
        runs=("eval_accuracy", "size"), final_accuracy=("eval_accuracy", "median"),
        time_to_target_s=("tta_s", "median"), reached=("tta_s", lambda s: f"{s.notna().sum()}/{len(s)}"))
    tta = table["time_to_target_s"].unstack("method")
    if {"bp", "dbp"} <= set(tta.columns):
        speedup = (tta["bp"] / tta["dbp"]).rename("speedup_bp_over_dbp")
        table = table.join(speedup, on="model")
    return table.reset_index(), target


def format_summary(table: pd.DataFrame, target: float) -> str:
    shown = table.copy()
    for col in ("final_accuracy", "time_to_target_s", "speedup_bp_over_dbp"):
        if col in shown:
            shown[col] = shown[col].map(lambda v: "-" if pd.isna(v) else f"{v:.3f}")
    return f"target accuracy {target:.3f} (time = training seconds, median over seeds)\n" + shown.to_string(index=False)
