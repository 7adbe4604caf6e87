"""The paper's headline claim, checked on these results: one row of display strings per (dataset, model).

Why a section of its own: readers come asking "does DBP's claim hold?", and the summary answers it only to those who
know the claim and the setting it was made in. Here each group gets a plain answer next to the paper's words, and
what differs from the paper's setting, all derived from the results. The only numbers not from the results are the
paper's quoted ones ("> 2×"); speed-ups and medians come from the same `per_run` table and `stats` estimates as the
summary, so both sections always agree.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .runs import by_group, chance, validation
from .stats import SIGNIFICANT, Difference, difference, median, ratio
from .tables import at_chance, fmt, mismatches, not_one_experiment, problem_note, span

PAPER = "arXiv 2405.02385"
CLAIM = ("training ResNet-18 on ImageNet, DBP reaches BP's best test accuracy in less than half the wall-clock time "
         "(a more than two-fold speed-up) and ends at a higher test accuracy; later versions report the same \"for "
         "several deep networks up to a 50-layer ResNet\"")
PAPER_SPEEDUP = 2.0  # "more than two-fold speed-up"
PAPER_DATASET = "imagenet"  # decorbench's name for ILSVRC-2012 (imagenette is a 10-class subset: not it)
PAPER_MODELS = ("resnet18", "resnet34", "resnet50")  # v2's headline model, then v4's "up to a 50-layer ResNet"


def check(runs: pd.DataFrame, goals: pd.Series, target: float | None = None, source: str = "given") -> dict:
    """{paper, claim: what is checked; rows: one per (dataset, model) with BP and DBP runs; unchecked: the groups
    with one of them only; cannot: why nothing could be checked ("" when something was); target: the sentence on
    what "to target" means here}. target, source: a common target and where it came from (None: BP's own)."""
    rows, unchecked, floor = [], [], chance(runs)
    for (dataset, model), group in by_group(runs):
        present = set(group["method"])
        if {"bp", "dbp"} <= present:
            rows.append(_row(dataset, model, group, goals.get((dataset, model), math.nan),
                             floor.get((dataset, model), math.nan), target, source))
        else:
            only = " and ".join(sorted(m.upper() for m in present)) or "no"
            unchecked.append(f"{dataset} · {model} ({only} runs only)")
    cannot = "" if rows else ("The claim cannot be checked here: it compares DBP with BP, and no (dataset, model) in "
                              f"these results has runs of both ({'; '.join(unchecked)}).")
    return {"paper": PAPER, "claim": CLAIM, "rows": rows, "unchecked": unchecked, "cannot": cannot,
            "target": _target_sentence(target, source)}


def _target_sentence(target: float | None, source: str) -> str:
    """Why our "time to target" is the paper's measure or how it differs: the paper times BP's *best* accuracy."""
    if target is None:
        return ("The target is BP's median final accuracy in each group: the closest we compute to the paper's "
                "measure, time to BP's best test accuracy.")
    return (f"The target is {fmt(float(target), 'accuracy')} in every group, {source}, not BP's own "
            "accuracy; the paper's measure is time to BP's best test accuracy, and the closest we compute is BP's "
            "median final accuracy, the target for runs given none.")


def _row(dataset: str, model: str, group: pd.DataFrame, goal: float, chance_accuracy: float, target: float | None,
         source: str) -> dict:
    bp, dbp, converted = (group[group["method"] == m] for m in ("bp", "dbp", "bp-converted"))
    mixed = _mixed(bp, dbp)
    verdicts = ({"speedup": "—", "speedup_spread": "", "speedup_note": "", "speed_verdict": mixed, "converted": "",
                 "accuracy": "—", "accuracy_note": [], "accuracy_verdict": "not judged, for the same reason"}
                if mixed else {**_speedup(bp, dbp, converted, goal, chance_accuracy, target), **_accuracy(bp, dbp)})
    return {"group": f"{dataset} · {model}", **verdicts, "caveats": _caveats(dataset, model, group, target, source)}


def _against_converted(converted: pd.DataFrame, dbp: pd.DataFrame) -> str:
    """DBP's speed-up over BP as the paper's code timed it ("" without such runs): the DBP model with the update
    off, whose steps still form A = W·R and sample inputs. It learns as BP does (R stays the identity), so the two
    speed-ups differ by what a step costs, and the gap says how much of a speed-up measured that way is the
    baseline's handicap."""
    if converted.empty:
        return ""
    reached = f"reached the target: BP-CONVERTED {converted['reached'].sum()}/{len(converted)}, DBP " \
              f"{dbp['reached'].sum()}/{len(dbp)} runs"
    times = [part.loc[part["reached"], "time_to_target"] for part in (converted, dbp)]
    estimate = ratio(*times)
    shown = "no ratio" if not math.isfinite(estimate.value) else fmt(estimate.value, "ratio") + (
        f" ({span(estimate.low, estimate.high, 'ratio')} · {estimate.kind})" if estimate.kind else "")
    return (f"against BP as the paper's code timed it (BP-CONVERTED: the DBP model with R never updated, learning as "
            f"BP but forming W·R and sampling every step), median time to target BP-CONVERTED / DBP: {shown}; "
            f"{reached}")


def _mixed(bp: pd.DataFrame, dbp: pd.DataFrame) -> str:
    """Why the verdicts are not given where a method's runs are not seeds of one experiment, and how to get them."""
    why = not_one_experiment({"bp": bp, "dbp": dbp})
    return (f"not judged: {'; '.join(why)}; the Settings swept section compares a sweep's settings one by one, and "
            "a report of one setting's results files, each seed's once, gets a verdict (their names carry the "
            "settings swept)") if why else ""


def _speedup(bp: pd.DataFrame, dbp: pd.DataFrame, converted: pd.DataFrame, goal: float, chance_accuracy: float,
             target: float | None) -> dict:
    """Median BP / median DBP time to target over the runs that reached it, as in the summary's BP / DBP column.
    DBP runs that never got there are left out of its median, which flatters DBP, so the verdict says so (BP runs
    below the target are the rule, not news: by default it is BP's own median). The speed-up over BP-CONVERTED
    comes with it, only where this one is given."""
    reached = f"reached the target: BP {bp['reached'].sum()}/{len(bp)}, DBP {dbp['reached'].sum()}/{len(dbp)} runs"
    out = {"speedup": "—", "speedup_spread": "", "speedup_note": reached, "converted": ""}
    goal_text = ("BP's accuracy" if target is None else "the target") + f" ({fmt(goal, 'accuracy')})"
    if target is None and not bp["scored"].any():
        return {**out, "speed_verdict": "no BP run finished with an eval accuracy, so there is no BP accuracy to "
                                        "reach"}
    if at_chance(goal, chance_accuracy):
        return {**out, "speed_verdict": f"not judged: {goal_text} is no better than chance "
                                        f"({fmt(chance_accuracy, 'accuracy')}), so reaching it says nothing about "
                                        "learning"}
    for name, part in (("DBP", dbp), ("BP", bp)):
        if not part["reached"].any():
            ended = f" ({problem_note(part)})" if part["problem"].any() else " within its budget"
            return {**out, "speed_verdict": f"{name} reached {goal_text} in 0/{len(part)} runs{ended}"}
    times = [part.loc[part["reached"], "time_to_target"] for part in (bp, dbp)]
    estimate = ratio(*times)
    if not math.isfinite(estimate.value):
        return {**out, "speed_verdict": "the runs recorded no training time"}
    spread = f"{span(estimate.low, estimate.high, 'ratio')} · {estimate.kind}" if estimate.kind else ""
    with np.errstate(divide="ignore"):  # a time of 0 s is -inf: left out, as the ratio leaves nothing out
        test = difference(*(np.log(t.astype(float)) for t in times))
    verdict = _speed_verdict(estimate.value, estimate.low, estimate.high, bool(estimate.kind), test,
                             _eval_interval_bounds(bp[bp["reached"]], dbp[dbp["reached"]]))
    if not dbp["reached"].all():
        verdict += f"; DBP reached the target in only {dbp['reached'].sum()}/{len(dbp)} runs"
    early = [f"{name} {part['reached_at_first_eval'].sum()}" for name, part in (("BP", bp), ("DBP", dbp))
             if part["reached_at_first_eval"].any()]
    if early and "between two eval points" not in verdict:  # else said already
        verdict += (f"; runs there at their first eval point ({', '.join(early)}) may have got there any time before "
                    "it, so the eval interval sets their times: evaluate more often (train.eval_every) to tell")
    return {**out, "speedup": fmt(estimate.value, "ratio"), "speedup_spread": spread, "speed_verdict": verdict,
            "converted": _against_converted(converted, dbp)}


def _eval_interval_bounds(bp: pd.DataFrame, dbp: pd.DataFrame) -> tuple[float, float]:
    """The speed-ups the eval points allow: each run crossed the target somewhere between the eval point before its
    first at the target and that one, so BP as early and DBP as late as that allows, and the other way round."""
    low = median(bp["time_before_target"]).value / median(dbp["time_to_target"]).value
    late = median(dbp["time_before_target"]).value
    return low, median(bp["time_to_target"]).value / late if late > 0 else math.inf


def _speed_verdict(value: float, low: float, high: float, has_spread: bool, test: Difference,
                   allowed: tuple[float, float]) -> str:
    """Whether BP's and DBP's times to target differ beyond seed noise (a permutation test on log times: ratios,
    not differences, are what is compared) and beyond what the eval points allow, and then where the speed-up falls
    against the paper's 2×, judged over its spread. Judged on the value as shown (two decimals), so the verdict never
    contradicts the number next to it: 2.00× is not "more than two-fold"."""
    shown = round(value, 2)  # as fmt prints a ratio
    if not has_spread:  # as the accuracy verdict, which is not judged from one run of a method
        return "not judged: from one BP and one DBP run that reached the target there is no seed spread to weigh it " \
               "against"
    if not test.significant or shown == 1:
        return f"not resolved: the two methods' times differ by what seed noise gives ({_tested(test, 'log time')})"
    low_end, high_end = (fmt(bound, "ratio") for bound in allowed)
    allows = ("any speed-up" if not allowed[0] > 0 and allowed[1] == math.inf else
              f"a speed-up above {low_end}" if allowed[1] == math.inf else f"a speed-up from {low_end} to {high_end}")
    between = (f"each run crossed the target somewhere between two eval points, which allows {allows}; evaluate "
               "more often (train.eval_every) to pin it down")
    if allowed[0] < 1 < allowed[1]:
        return f"not resolved: {between} ({_tested(test, 'log time')})"
    if shown < 1:
        return f"slower than BP (a slowdown), unlike the paper ({_tested(test, 'log time')})"
    if allowed[0] < PAPER_SPEEDUP < allowed[1]:
        return f"faster; whether by the paper's > 2× the eval interval cannot tell: {between} " \
               f"({_tested(test, 'log time')})"
    if low > PAPER_SPEEDUP:
        verdict = "meets the paper's > 2× over its whole spread"
    elif shown > PAPER_SPEEDUP:
        verdict = "faster; its median meets the paper's > 2×, but its spread reaches below 2×"
    else:
        verdict = "faster, but not the paper's > 2×" + (" (its spread crosses 2×)" if high > PAPER_SPEEDUP else "")
    return f"{verdict} ({_tested(test, 'log time')})"


def _tested(test: Difference, of: str) -> str:
    """How a difference was tested, and, where the seeds are too few for any p below SIGNIFICANT, that too."""
    text = (f"p = {test.p:.2g}, two-sided permutation test of the mean {of}, {test.n_b} DBP vs {test.n_a} BP runs")
    if test.floor >= SIGNIFICANT:
        text += f"; with so few runs no p below {test.floor:.2g} is possible: more seeds would tell"
    return text


def _accuracy(bp: pd.DataFrame, dbp: pd.DataFrame) -> dict:
    """DBP's median final accuracy minus BP's, in percentage points; "higher" or "lower" only when a two-sided
    permutation test gives p < 0.05 (with a handful of seeds, one method's runs all above the other's is often
    chance) and the difference shows at the report's precision. Over the runs that ended without a problem (an
    interrupted, failed, diverged or unfinished run's last accuracy is not where it would have ended), the others
    named. Not judged when runs stopped on reaching the target: their final accuracy is where they stopped, not
    where they would have ended."""
    a, b = (part.loc[part["scored"], "final_accuracy"] for part in (bp, dbp))
    early = [f"{name}: {problem_note(part)}" for name, part in (("DBP", dbp), ("BP", bp))
             if (part["problem"] & part["final_accuracy"].notna()).any()]
    left_out = [f"left out, not finished ({'; '.join(early)})"] if early else []
    if a.empty or b.empty:
        missing = " and ".join(n for n, s in (("BP", a), ("DBP", b)) if s.empty)
        return {"accuracy": "—", "accuracy_note": left_out,
                "accuracy_verdict": f"no run of {missing} finished with an eval accuracy yet"}
    ma, mb = median(a).value, median(b).value
    note = [f"{name} {fmt(m, 'accuracy')} ({span(v.min(), v.max(), 'accuracy')}, n = {len(v)})"
            for name, m, v in (("DBP", mb, b), ("BP", ma, a))] + left_out
    shown = _points(mb - ma)
    stopped = (pd.concat([bp, dbp])["status"] == "target").sum()
    verdict = (f"not judged: {stopped} of {len(bp) + len(dbp)} runs stopped on reaching the target "
               "(budget.stop_at_target), so final accuracies are not where the runs would have ended"
               if stopped else _accuracy_verdict(a, b, shown))
    return {"accuracy": shown, "accuracy_note": note, "accuracy_verdict": verdict}


def _accuracy_verdict(bp: pd.Series, dbp: pd.Series, difference_shown: str) -> str:
    if min(len(bp), len(dbp)) < 2:
        return "not judged: with one seed of a method there is no seed spread to compare the difference with"
    if difference_shown == "±0.00 pp":
        return "the same to 0.01 pp: neither higher nor lower"
    test = difference(bp, dbp)
    if not test.significant:
        return f"not resolved: a difference this size is what seed noise gives ({_tested(test, 'final accuracy')})"
    if dbp.mean() > bp.mean():
        return f"higher, as the paper reports ({_tested(test, 'final accuracy')})"
    return f"lower, unlike the paper ({_tested(test, 'final accuracy')})"


def _points(difference: float) -> str:
    """A difference of accuracies in percentage points, signed, to the report's 2 decimals of a percentage."""
    shown = f"{100 * difference:+.2f}"
    return f"{'±0.00' if shown[1:] == '0.00' else shown} pp"


def _caveats(dataset: str, model: str, group: pd.DataFrame, target: float | None, source: str) -> list[str]:
    """What differs from the paper's setting, read from the results: data set, model, device, target; and BP and DBP
    runs that differ in more than the method."""
    differ = mismatches(group)
    out = [f"BP and DBP not run alike, they differ in {'; '.join(differ)}"] if differ else []
    if dataset.lower() != PAPER_DATASET:
        out.append(f"{dataset}: not the paper's data set (ImageNet)")
    if model.lower() not in PAPER_MODELS:
        out.append(f"{model}: not a model the paper reports (ResNet-18; later ResNet-34/50)")
    held = validation(group)
    if (held > 0).any():
        out.append(f"accuracy on a validation set held out of the training set"
                   f"{'' if (held > 0).all() else f' in {(held > 0).sum()} of {len(group)} runs'}, not on the test set")
    out += _device_caveats(group)
    if target is not None:
        out.append(f"target {fmt(float(target), 'accuracy')}, {source}, not BP's own accuracy")
    return out


def _device_caveats(group: pd.DataFrame) -> list[str]:
    """Runs not timed on a GPU: their wall-clock says nothing about the paper's GPU timing."""
    device = group["device"] if "device" in group else pd.Series(None, index=group.index, dtype=object)
    kinds = device.dropna().astype(str).str.split(":").str[0].replace({"cpu": "a CPU"})
    counts = kinds[kinds != "cuda"].value_counts()
    unknown = device.isna().sum()
    out = [f"wall-clock on {kind}{'' if n == len(group) else f' in {n} of {len(group)} runs'}, not comparable to "
           "the paper's GPU timing" for kind, n in counts.items()]
    if unknown:
        out.append(f"device not recorded in {unknown} of {len(group)} runs")
    return out
