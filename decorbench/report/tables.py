"""The report's tables as plain rows of display strings: provenance, summary per (dataset, model), notes, runs.

Why strings here: the template only lays them out, and the tests read back exactly what a reader sees. Every value
from the results stays a plain string; the template escapes it.
"""

from __future__ import annotations

import json
import math
import operator
import os

import pandas as pd

from ..gpus import peak_bf16_flops, why_no_peak
from ..results import uncommitted
from ..settings import NOT_THE_EXPERIMENT, setting_defaults
from .runs import GROUP, PROBLEMS, busy, by_group, chance, natural, numbers, validation
from .stats import Estimate, median, ratio

METHOD_ORDER = {"bp": 0, "bp-converted": 1, "dbp": 2}
BASELINES = ("bp", "bp-converted")  # what DBP's costs are divided by: BP, and BP as the DBP authors' code timed it
LOADER_BOUND = 0.1  # a run that waited for its batches longer than this share of its training time is flagged
SOURCES = {"nvml-counter": "its energy counter", "nvml-power": "power readings sampled every 0.1 s, integrated"}
BATCH = "hyperparameters.train.batch_size"  # a step of one batch size is not a step of another
UNFINISHED = "no end record"  # the status shown for a run whose file has no end record
# (runs column, label, unit kind, whether BP/DBP is shown)
METRICS = [("final_accuracy", "final accuracy", "accuracy", False),
           ("steps_to_target", "steps to target", "steps", True),
           ("samples_to_target", "images to target", "steps", True),  # steps × batch size, recorded per eval
           ("time_to_target", "time to target", "seconds", True),
           ("energy_to_target", "energy to target", "joules", True),
           ("co2_to_target", "CO2e to target", "co2", True),
           ("flops_to_target", "FLOPs to target", "flops", True)]
PROVENANCE = [("suite", "suite"), ("git commit", "commit"), ("decorbench", "decorbench_version"),
              ("device", "device"), ("GPU", "gpu_name"), ("GPU driver", "gpu_driver"), ("CPU", "cpu"),
              ("host", "host"), ("platform", "platform"), ("Python", "python"), ("PyTorch", "torch"),
              ("torchvision", "torchvision"), ("CUDA (torch's build)", "cuda"), ("cuDNN", "cudnn"),
              ("carbon region (country)", "country_iso_code")]
_PREFIXES = [(1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""),
             (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")]


def methods(runs: pd.DataFrame) -> list[str]:
    """Methods present, BP first, then BP-CONVERTED and DBP, then any other in name order."""
    return sorted(runs["method"].unique(), key=lambda m: (METHOD_ORDER.get(m, len(METHOD_ORDER)), m))


def _si(value: float, unit: str) -> tuple[str, str]:
    rounded = float(f"{value:.3g}")
    for scale, prefix in _PREFIXES:
        if abs(rounded) >= scale:
            return f"{rounded / scale:.3g}", f" {prefix}{unit}"
    return f"{rounded:.3g}", f" {unit}"


def _parts(value: float, kind: str) -> tuple[str, str]:
    """(number, unit) as printed: accuracy in %, seconds/minutes/hours, SI prefixes, ratios as ×."""
    if kind == "accuracy":
        return f"{100 * value:.2f}", " %"
    if kind == "seconds":
        return _si(value, "s") if value < 60 else (f"{value / 60:.3g}", " min") if value < 7200 else (
            f"{value / 3600:.3g}", " h")
    if kind == "steps":  # a median over an even number of runs may end in .5
        return f"{value:,.1f}".removesuffix(".0"), ""
    if kind == "ratio":  # two significant figures below 0.01: a 2,500-fold slowdown is not "0.00×"
        return f"{value:.2f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2g}", "×"
    if kind == "fraction":
        return f"{100 * value:.3g}", " %"
    if kind == "co2":  # kg in the records; tonnes, not Mg, from a tonne as printed on (999.97 kg is 1 t)
        return (f"{value / 1000:.3g}", " t") if float(f"{value:.3g}") >= 1000 else _si(value * 1000, "g")
    return _si(value, {"joules": "J", "flops": "FLOP"}[kind])


def fmt(value: float, kind: str) -> str:
    """One number as the report prints it ("—" for a missing one)."""
    return "".join(_parts(value, kind)) if value is not None and math.isfinite(value) else "—"


def span(low: float, high: float, kind: str) -> str:
    """"1.2–3.4 s": the unit once when both ends share it; "all 1.2 s" when they print the same."""
    (a, unit_a), (b, unit_b) = _parts(low, kind), _parts(high, kind)
    if (a, unit_a) == (b, unit_b):
        return f"all {a}{unit_a}"
    return f"{a}–{b}{unit_b}" if unit_a == unit_b else f"{a}{unit_a} – {b}{unit_b}"


def _text(text: str, note: str = "") -> dict:
    return {"text": text, "spread": "", "kind": "", "note": note}


def _cell(estimate: Estimate, kind: str, note: str = "") -> dict:
    spread = span(estimate.low, estimate.high, kind) if estimate.kind else ""
    return {"text": fmt(estimate.value, kind), "spread": spread, "kind": estimate.kind, "note": note}


def _metric_cell(part: pd.DataFrame, column: str, kind: str) -> dict:
    if column == "final_accuracy":  # of the runs that ended where they should, as the default target is
        ended = part.loc[part["scored"], column]
        if ended.empty:
            last = part[column].notna().sum()
            return _cell(median(part[column]), kind, f"n = {last}, none finished: their last accuracies")
        early = part[part["problem"] & part[column].notna()]
        return _cell(median(ended), kind, f"n = {len(ended)}" + (f" ({problem_note(early)} left out)" if len(early)
                                                                  else ""))
    reached = part[part["reached"]]
    note = f"reached {len(reached)}/{len(part)}"
    if reached.empty:
        return _text("not reached", note)
    measured = reached[column].notna().sum()
    if not measured:
        return _text("not measured", note)
    if measured < len(reached):  # a median of the measured runs only: say it is not of all that got there
        note += f", measured in {measured} of them"
    early = int(reached["reached_at_first_eval"].sum())
    if early:
        note += f", {early} at the first eval point (at most that)"
    return _cell(median(reached[column]), kind, note)


def _ratio_cell(by_method: dict, column: str, base: str) -> dict:
    """base / DBP (base: BP or BP-CONVERTED) over the runs that reached the target, saying so when not all did (runs
    that diverged or never got there are not in it, which flatters their method); none when some of those lack the
    measure (a meter that failed for some seeds), since a ratio of medians over different seeds of each method could
    mislead."""
    hit = {m: by_method[m].loc[by_method[m]["reached"], column] for m in (base, "dbp")}
    unmeasured = sum(int(h.isna().sum()) for h in hit.values())
    if unmeasured and any(h.notna().any() for h in hit.values()):
        return _text("—", f"{unmeasured} of the runs that reached the target not measured")
    notes = [_by_seed(by_method, column, base)]
    if any(len(hit[m]) < len(by_method[m]) for m in hit):
        notes.append("over the runs that reached it: " + ", ".join(f"{m.upper()} {len(hit[m])}/{len(by_method[m])}"
                                                                  for m in hit))
    return _cell(ratio(hit[base], hit["dbp"]), "ratio", "; ".join(n for n in notes if n))


def _by_seed(by_method: dict, column: str, base: str) -> str:
    """A base (BP) and a DBP run of one seed start from the same weights and see the same batches: compared seed by
    seed, a method's consistent edge shows even where the spread over all pairs of runs hides it. "" without 2 such
    pairs, or where a method repeats a seed (results of different settings pooled)."""
    cost = {}
    for m in (base, "dbp"):
        part = by_method[m][by_method[m]["reached"] & by_method[m][column].notna()]
        if part["seed"].duplicated().any():
            return ""
        cost[m] = part.set_index("seed")[column]
    both = cost[base].index.intersection(cost["dbp"].index)
    if len(both) < 2:
        return ""
    less, same = (int(op(cost["dbp"][both], cost[base][both]).sum()) for op in (operator.lt, operator.eq))
    return f"DBP less in {less}{f', the same in {same}' if same else ''} of {len(both)} seeds, seed by seed"


def _batch_sizes(group: pd.DataFrame, by_method: dict, base: str) -> str:
    """"BP 32, DBP 128" where base's and DBP's runs differ in batch size (a step of one is not a step of the other);
    else ""."""
    if BATCH not in group:
        return ""
    shown = shown_settings(group, [BATCH])[BATCH]
    sizes = {m: "/".join(sorted(shown[by_method[m].index].unique(), key=natural)) for m in (base, "dbp")}
    return "" if sizes[base] == sizes["dbp"] else f"{base.upper()} {sizes[base]}, DBP {sizes['dbp']}"


def summary(runs: pd.DataFrame, goals: pd.Series, target_source: str | None) -> list[dict]:
    """Per (dataset, model): target, method columns and one row per metric (median over seeds, spread, and a ratio
    to DBP of each baseline present: BP / DBP, BP-CONVERTED / DBP). target_source: where a common target came from;
    None: each group's is BP's median final accuracy."""
    groups, floor = [], chance(runs)
    for (dataset, model), group in by_group(runs):
        present = methods(group)
        by_method = {m: group[group["method"] == m] for m in present}
        bases = [m for m in BASELINES if m in by_method] if "dbp" in by_method else []
        rows = [{"label": "runs", "cells": [_text(str(len(p)), problem_note(p)) for p in by_method.values()],
                 "ratios": [None for _ in bases]}]
        mixed = bool(bases) and bool(not_one_experiment(by_method))  # said in the notes and the claim check
        batches = {base: _batch_sizes(group, by_method, base) for base in bases}
        for column, label, kind, with_ratio in METRICS:
            rows.append({"label": label, "cells": [_metric_cell(p, column, kind) for p in by_method.values()],
                         "ratios": [_ratio_or_why(by_method, column, base, mixed, batches[base]) if with_ratio
                                    else None for base in bases]})
        nothing = "" if group["evals"].any() else ("No run here reached its first eval point, so nothing was "
                                                     "measured: the runs list says why.")
        if nothing:
            rows = rows[:1]  # "not reached" in every metric would read as evaluated and short of the target
        target = goals.get((dataset, model), math.nan)
        bp_scored = "bp" in by_method and by_method["bp"]["scored"].any()
        source = target_source or ("BP's median final accuracy" if bp_scored else "the median final accuracy of "
                                   "its runs that finished (no BP run finished with an eval accuracy)")
        groups.append({"dataset": dataset, "model": model, "methods": present, "rows": rows, "nothing": nothing,
                       "settings": settings(group),
                       "target": fmt(target, "accuracy"), "target_source": source,
                       "at_chance": at_chance(target, floor.get((dataset, model), math.nan)),
                       "ratios": [f"{base.upper()} / DBP" for base in bases]})
    return groups


def _ratio_or_why(by_method: dict, column: str, base: str, mixed: bool, batches: str) -> dict:
    if mixed:
        return _text("—", "not given: settings or seeds pooled (notes)")
    if batches and column == "steps_to_target":
        return _text("—", f"not given: steps of different sizes ({batches}); compare images")
    return _ratio_cell(by_method, column, base)


def at_chance(target: float, chance_accuracy: float) -> str:
    """Why "to target" says nothing about learning when the target is no higher than guessing; else ""."""
    if not target <= chance_accuracy:  # NaN either side: nothing to say
        return ""
    return (f"The target is no better than chance ({fmt(chance_accuracy, 'accuracy')}, always guessing the eval set's "
            "most frequent class): reaching it says nothing about learning.")


def problem_note(part: pd.DataFrame) -> str:
    """"2 interrupted, 1 no end record": the runs that did not end where their budget would have ended them."""
    counts = part.loc[part["problem"], "status"].fillna(UNFINISHED).value_counts()
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def _field(runs: pd.DataFrame, column: str, missing: str = "not recorded") -> pd.Series:
    """A run column as strings; `missing` where a run has no value (or its results predate the column)."""
    values = runs[column].astype(object) if column in runs else pd.Series(None, index=runs.index, dtype=object)
    return values.where(values.notna(), missing).astype(str)


def _distinct(values: pd.Series) -> str:
    counts = values.value_counts()
    if len(counts) == 1:
        return counts.index[0]
    return "; ".join(f"{value} ({n} runs)" for value, n in counts.items())


def provenance(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(label, value) pairs; a field with several values across runs lists each with its run count."""
    state = _field(runs, "git_dirty").map(lambda dirty: uncommitted({"True": True, "False": False}.get(dirty)))
    commit = _field(runs, "git_commit").str[:12]
    runs = runs.assign(commit=commit.where(commit == "not recorded", commit + state))
    on_cpu = _field(runs, "device").str.startswith("cpu")
    for column in ("gpu_name", "gpu_driver", "cudnn"):  # a CPU run has none: "not recorded" read as a gap
        runs[column] = _field(runs, column).mask(on_cpu, "none (CPU runs)")
    rows = [(label, _distinct(_field(runs, column))) for label, column in PROVENANCE]
    rows.append(("results files", f"{runs['source'].nunique()} in {results_dir(runs) or 'several places'}"))
    started = pd.to_datetime(_field(runs, "started_at"), errors="coerce", utc=True).dropna()
    if len(started):
        rows.append(("runs started (UTC)", f"{started.min():%Y-%m-%d %H:%M} – {started.max():%Y-%m-%d %H:%M}"))
    return rows


def notes(runs: pd.DataFrame) -> list[str]:
    """Why a metric is missing or to be read with care: unavailable meters, estimates, mixed hardware."""
    out = []
    for label, value, reason in (("Energy", "energy_j", "energy_unavailable_reason"),
                                 ("CO2e", "co2_kg", "carbon_unavailable_reason")):
        missing = runs[runs[value].isna()]  # the total at the run's end: unknown if a meter failed on the way
        if len(missing):
            at_start = _field(missing, reason, "")  # a meter that never worked; else why it stopped, at the end
            why = _distinct(at_start.where(at_start != "", _field(missing, f"totals.{reason}", "no reason recorded")))
            out.append(f"{label} is unknown for {len(missing)} of {len(runs)} runs: {why}.")
    out += _energy_meaning(runs)
    if "totals.energy_warnings" in runs:  # measured, but maybe not the run's alone, or missing a part
        flagged = runs.set_index("run_id")["totals.energy_warnings"].dropna().explode().dropna()
        for warning, which in flagged.groupby(flagged, sort=False):
            out.append(f"Energy of {len(which)} of {len(runs)} runs ({_named(which.index)}), read with care: "
                       f"{warning}.")
    held = validation(runs)
    if (held > 0).any():
        shares = " / ".join(f"{share:.0%}" for share in sorted(held[held > 0].unique()))
        out.append(f"{(held > 0).sum()} of {len(runs)} runs score a validation set, not the test set: {shares} of "
                   "their training set held out and never trained on (data.options.validation). Their accuracies are "
                   "for choosing settings such as train.lr; compare the methods at the chosen settings on the test "
                   "set (validation 0).")
    out += _running_averages(runs)
    slowed, cores = busy(runs)
    if len(slowed):
        out.append(f"Times of {len(slowed)} of {len(runs)} runs ({_named(slowed['run_id'])}) were measured on a busy "
                   f"machine: other processes kept up to {cores:.2g} CPU cores busy on average while they ran "
                   "(totals.other_cpu_s), so they are slower than their own work makes them; compare them with care, "
                   "or run them again on a quiet machine.")
    if "totals.data_wait_s" in runs:
        waited, trained = (pd.to_numeric(runs[f"totals.{c}"], errors="coerce") for c in ("data_wait_s", "train_time_s"))
        share = waited / trained.where(trained > 0)
        bound = share[share > LOADER_BOUND]
        if len(bound):
            out.append(f"{len(bound)} of {len(runs)} runs ({_named(runs.loc[bound.index, 'run_id'])}) waited for "
                       f"their input batches for more than {LOADER_BOUND:.0%} of their training time (up to "
                       f"{bound.max():.0%}): their times and energy measure the data loader as much as the training "
                       "step, and hide the cost of a costlier step such as DBP's.")
    on_gpus = runs[runs["gpu_name"].notna()] if "gpu_name" in runs else runs.iloc[:0]
    for gpu, group in on_gpus.groupby("gpu_name", sort=False):
        peak, measured = peak_bf16_flops(gpu), int(group["mfu"].notna().sum())  # none if resumed on another GPU
        if peak and measured:
            out.append(f"MFU of the {measured} run{'s' * (measured > 1)} on {gpu} is against its datasheet peak, "
                       f"{peak / 1e12:g} TFLOP/s dense bf16.")
        elif not peak:
            out.append(f"No MFU for the {len(group)} run{'s' * (len(group) > 1)} on {gpu}: {why_no_peak(gpu)}.")
    fp32 = on_gpus.get("hyperparameters.train.amp", pd.Series(dtype=object)).eq(False)
    if fp32.any():
        out.append(f"{fp32.sum()} of {len(runs)} runs on GPUs trained without bf16 autocast (train.amp = false): "
                   "their MFU is against the bf16 peak, which fp32 matrix products do not reach.")
    moved = runs.set_index("run_id")["resumed_elsewhere"].dropna() if "resumed_elsewhere" in runs else ()
    if len(moved):
        out.append(f"{len(moved)} of {len(runs)} runs ({_named(moved.index)}) were resumed on other code or "
                   f"hardware than they began on ({_distinct(moved)}): their times, energy and accuracy join parts "
                   "measured differently; a run resumed on another GPU has no MFU.")
    if "carbon_method" in runs:  # CO2e is never a measurement: say how each run's was estimated
        methods = runs.loc[runs["co2_kg"].notna(), "carbon_method"].dropna()
        for method, n in methods.value_counts(sort=False).items():
            out.append(f"CO2e of {n} of {len(runs)} runs is an {method}.")
    machine = _field(runs, "device") + " / " + _field(runs, "gpu_name") + " / " + _field(runs, "cpu")
    for (dataset, model), n in machine.groupby([runs[c] for c in GROUP]).nunique().items():
        if n > 1:
            out.append(f"{dataset} · {model} mixes runs from {n} different machines/devices: compare its times "
                       "with care.")
    return out + _unmatched(runs) + _pooled(runs)


def _energy_meaning(runs: pd.DataFrame) -> list[str]:
    """What "energy" is here (the GPU board's, not the machine's that CO2e estimates), by which NVML reading, and
    the groups whose BP and DBP runs were read differently."""
    measured = runs[runs["energy_j"].notna()]
    if measured.empty:
        return []
    how = _field(measured, "energy_source").map(lambda s: SOURCES.get(s, s))
    out = [f"Energy is the GPU board's alone, by NVML ({_distinct(how)}): not the CPU, memory or the rest of the "
           "machine, which CO2e, codecarbon's estimate for the whole machine, includes."]
    for (dataset, model), group in by_group(measured.assign(how=how)):
        if group.groupby("method")["how"].agg(frozenset).nunique() > 1:
            out.append(f"{dataset} · {model}: its methods' energy was read differently "
                       f"({'; '.join(f'{m.upper()}: {_distinct(g)}' for m, g in group.groupby('method')['how'])}), so "
                       "its energy ratio compares two meters as well as two methods.")
    return out


def _absent(value) -> bool:
    return not isinstance(value, (list, tuple, dict)) and pd.isna(value)


def _setting(value) -> str:
    if _absent(value):
        return "null"
    if isinstance(value, float) and value.is_integer():  # an integer setting in a column pandas made float
        value = int(value)
    return json.dumps(value, default=str)


def setting_columns(runs: pd.DataFrame, methods_own: bool = True) -> list[str]:
    """The columns that make a run's experiment; methods_own=False leaves out DBP's own (hyperparameters.dbp…),
    which a BP run has none of."""
    return [c for c in runs if c == "world_size" or c.startswith(("hyperparameters.", "budget."))
            and c not in NOT_THE_EXPERIMENT and (methods_own or not c.startswith("hyperparameters.dbp"))]


def shown_settings(part: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One data set's runs' settings as display strings; a setting a record of an older decorbench lacks (it did not
    exist yet) at its default, the behaviour it was added with, as --resume reads such a record."""
    defaults = setting_defaults(str(part["dataset"].iloc[0]))

    def shown(column: str) -> pd.Series:
        return part[column].map(lambda v: _setting(defaults[column] if _absent(v) and column in defaults else v))

    return pd.DataFrame({c: shown(c) for c in columns}, index=part.index)


def _listed(values: list[str], most: int = 3, sep: str = "; ") -> str:
    return sep.join(values[:most]) + (f"{sep}…" if len(values) > most else "")


def _named(run_ids) -> str:
    """"a, b, c, d, …": the runs a note is about, the first four by name."""
    return _listed(sorted(map(str, run_ids)), most=4, sep=", ")


def settings(group: pd.DataFrame) -> list[tuple[str, str]]:
    """(setting, value) of one (dataset, model)'s runs, the ones set: what the comparison ran with, so that a reader
    need not open the results files (DBP's own over its DBP runs; values that differ between runs joined by " / ",
    and named in the notes). Then the seeds."""
    out = []
    for column in setting_columns(group):
        own = column.startswith("hyperparameters.dbp.")
        part = group[group["method"] == "dbp"] if own else group
        if part.empty or column == "hyperparameters.dbp" or column == "hyperparameters.data.root":
            continue  # the dbp table itself (null for BP) and where the data lay are not settings
        values = sorted(shown_settings(part, [column])[column].unique(), key=natural)
        if values != ["null"]:
            out.append((column.removeprefix("hyperparameters."), " / ".join(values)))
    seeds = sorted(group["seed"].dropna().unique())
    return out + [("seeds", ", ".join(f"{seed:g}" for seed in seeds))]


def mismatches(group: pd.DataFrame) -> list[str]:
    """How one (dataset, model)'s methods were not run alike: settings other than a method's own whose values differ
    between methods, and seeds one method ran and another did not (a BP and a DBP run of a seed share initial
    weights, data order and eval schedule). Each ratio between the methods then compares different experiments."""
    present = methods(group)
    by_method = {m: group[group["method"] == m] for m in present}
    out, columns = [], setting_columns(group, methods_own=False)
    shown = shown_settings(group, columns)
    for column in columns:
        values = {m: sorted(shown.loc[part.index, column].unique()) for m, part in by_method.items()}
        if len({tuple(v) for v in values.values()}) > 1:
            out.append(f"{column} ({', '.join(f'{m.upper()} ' + ' / '.join(v) for m, v in values.items())})")
    seeds = {m: sorted(part["seed"].dropna().unique()) for m, part in by_method.items()}
    if len({tuple(v) for v in seeds.values()}) > 1:
        out.append(f"seeds ({', '.join(f'{m.upper()} ' + ' / '.join(f'{s:g}' for s in v) for m, v in seeds.items())})")
    return out


def _running_averages(runs: pd.DataFrame) -> list[str]:
    """Runs whose evals normalised with BatchNorm's running averages, which trail fast-moving weights
    (reports/cpu/bn_eval_lag.md). Runs recorded before totals.batchnorm_layers existed are not judged."""
    lagging = runs[(numbers(runs, "totals.batchnorm_layers") > 0)
                   & (numbers(runs, "hyperparameters.train.precise_bn", 0) == 0)]
    if lagging.empty:
        return []
    return [f"{len(lagging)} of {len(runs)} runs scored models with BatchNorm through its running averages "
            "(train.precise_bn = 0, PyTorch's eval mode). Early in training or at a high train.lr those lag the "
            "weights, so the eval accuracy, and a time to target, can trail what the weights already do, and not "
            "alike for BP and DBP; train.precise_bn = k scores with statistics recomputed over k training batches "
            "and changes nothing of the training."]


def _unmatched(runs: pd.DataFrame) -> list[str]:
    out = []
    for (dataset, model), group in by_group(runs):
        differ = mismatches(group)
        if differ:
            out.append(f"{dataset} · {model}: its methods were not run alike, they differ in {_listed(differ)}; the "
                       "ratios between them and the paper-claim check compare different experiments (as meant when each "
                       "method runs at the setting tuned for it: [per_method]).")
    return out


def pooled_settings(part: pd.DataFrame) -> str:
    """The settings in which one method's runs of a group differ, with their values ("" if none): results of
    different experiments reported together, which each median and spread over them mixes."""
    columns = setting_columns(part)
    shown = shown_settings(part, columns)
    return _listed([f"{c}: {', '.join(sorted(shown[c].unique()))}" for c in columns if shown[c].nunique() > 1])


def repeated_seeds(part: pd.DataFrame) -> str:
    """"seeds 0, 1": the seeds more than one of one method's runs of a group ran ("" if none)."""
    seeds = part["seed"].value_counts()
    repeated = sorted(seeds[seeds > 1].index)
    return f"seed{'s' * (len(repeated) > 1)} {', '.join(map(str, repeated))}" if repeated else ""


def not_one_experiment(by_method: dict[str, pd.DataFrame]) -> list[str]:
    """Why some method's runs of a group are not seeds of one experiment, as a ratio or a test between the methods
    takes them to be ([] when each method's are): the settings of a sweep would count as seeds, and so would a seed
    run twice."""
    differ = {m: pooled_settings(part) for m, part in by_method.items()}
    shared = len(differ) > 1 and len(set(differ.values())) == 1 and next(iter(differ.values()))
    why = ([f"each method's runs are of different settings ({shared})"] if shared else  # a sweep of a shared setting
           [f"{m.upper()}'s runs are of different settings ({d})" for m, d in differ.items() if d])
    return why + [f"{m.upper()} ran {repeated} more than once" for m, part in by_method.items()
                  if not differ[m] and (repeated := repeated_seeds(part))]  # a sweep runs each seed once a setting


def _pooled(runs: pd.DataFrame) -> list[str]:
    """A note per method whose medians and spreads mix experiments (results of different settings reported
    together, or the same seed twice)."""
    out = []
    for (dataset, model, method), part in by_group(runs, [*GROUP, "method"]):
        name = f"{dataset} · {model} · {method.upper()}"
        if differ := pooled_settings(part):
            out.append(f"{name} pools runs of different settings ({differ}): its medians and spreads mix them.")
        elif repeated := repeated_seeds(part):  # else a sweep, which runs each seed once a setting
            out.append(f"{name} has {repeated} in more than one run: its spread over seeds counts the repeats as "
                       "seeds.")
    return out


def results_dir(runs: pd.DataFrame) -> str:
    """The directory all results files share ("" if they share none, e.g. relative and absolute paths mixed)."""
    sources = list(runs["source"].unique())
    try:
        common = os.path.commonpath(sources)
    except ValueError:
        return ""
    return os.path.dirname(common) if len(sources) == 1 else common


def _file(run: dict, base: str) -> str:
    """The run's results file relative to the shared directory, or "" when it is just `<run_id>.jsonl` there."""
    shown = os.path.relpath(run["source"], base) if base else run["source"]
    return "" if shown == f"{run['run_id']}.jsonl" else shown


def run_rows(runs: pd.DataFrame) -> list[dict]:
    """Every run, unfinished ones first (flagged), then by dataset, model, method, seed."""
    order = runs.assign(_m=runs["method"].map(METHOD_ORDER).fillna(len(METHOD_ORDER)))
    order = order.sort_values(["problem", *GROUP, "_m", "method", "seed", "run_id"], kind="stable",
                              ascending=[False, True, True, True, True, True, True],
                              key=lambda column: column.map(natural) if column.name in GROUP else column)
    base, rows = results_dir(runs), []
    for run in order.to_dict("records"):
        ended = isinstance(run["status"], str)
        reason = run["reason"] if isinstance(run["reason"], str) else (
            "" if ended else "still running, or killed before it could write one")
        seed = run["seed"]  # a float when some run lacks one
        rows.append({"run_id": str(run["run_id"]), "dataset": run["dataset"], "model": run["model"],
                     "method": run["method"], "seed": "—" if pd.isna(seed) else f"{seed:g}" if isinstance(
                         seed, float) else str(seed), "status": run["status"] if ended else UNFINISHED,
                     "reason": reason, "problem": bool(run["problem"]), "evals": int(run["evals"]),
                     "final_accuracy": fmt(run["final_accuracy"], "accuracy"),
                     "train_time": fmt(run["train_time_s"], "seconds"), "mfu": fmt(run["mfu"], "fraction"),
                     "file": _file(run, base)})
    return rows


def status_counts(runs: pd.DataFrame) -> list[tuple[str, int, bool]]:
    """(status, runs, is a problem) for the line above the runs table."""
    counts = runs["status"].fillna(UNFINISHED).value_counts()
    return [(status, int(n), status in (*PROBLEMS, UNFINISHED)) for status, n in counts.items()]
