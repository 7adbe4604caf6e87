"""`render_report`: one self-contained HTML file comparing BP and DBP in a set of results files.

Why one file: a report gets mailed, attached to issues and opened years later offline, so it carries its CSS and
its figures (inline SVG) and loads nothing from anywhere. Every string from the results is escaped by jinja2
(autoescape) or, inside figures, by matplotlib's SVG writer. Files that cannot be read are skipped and listed at the
top of the report; the rest renders.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from .. import __version__
from ..results import load
from . import claim, figures, sweep, tables
from .runs import per_run, recorded_target, tidy

__all__ = ["render_report"]

# (x column, title, x label, unit, what it is) for the accuracy-against-cost figures
CURVES = [("train_time_s", "Accuracy vs training time", "training time (eval excluded)", "s", "training time"),
          ("energy_j", "Accuracy vs energy", "energy", "J", "energy"),
          ("flops", "Accuracy vs FLOPs", "training FLOPs (DBP's decorrelation included)", "FLOP",
           "floating-point operations")]


def _load(paths) -> tuple:
    """The results and the messages of what was skipped (also passed on to the caller as warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            evals, error = load(paths), None
        except ValueError as e:
            evals, error = None, e
    if error is None:  # else the one-line error below says what went wrong
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    skipped = [str(w.message) for w in caught if w.category is UserWarning]
    if error is not None:
        last = f" ({len(skipped)} problem(s) while reading; the last: {skipped[-1]})" if skipped else ""
        raise ValueError(f"{error}{last}".replace("\n", " ")) from None
    return evals, skipped


def _figures(evals, runs, goals) -> list[dict]:
    """Each figure as {title, how, svg (or None), missing (why it is not drawn)}."""
    out = []
    for x, title, label, unit, what in CURVES:
        out.append({"title": title, "svg": figures.accuracy_curves(evals, x, label, unit, goals),
                    "how": f"Further left at the same height is better: that accuracy for less {what}. Line: median "
                           "over seeds at each eval point; band: min–max accuracy over seeds; dashed: the target.",
                    "missing": f"Not drawn: no run recorded its {what} (see the notes above)."})
    out.append({"title": "Time per step and DBP's overhead", "svg": figures.step_time(runs),
                "how": "Training time per step (eval excluded) of each run at its last eval point: diamond = median, "
                       "whisker = min–max, dots = runs. Right: DBP/BP ratio of the medians; whisker = min–max over "
                       "BP×DBP run pairs while either method has under 6 runs, else a 95% bootstrap CI.",
                "missing": "Not drawn: no run has a timed eval point."})
    out.append({"title": "Decorrelation loss (DBP)", "svg": figures.decor_loss(evals),
                "how": "DBP's decorrelation loss of the sampled layer inputs (log scale): falling means the "
                       "layers' inputs are getting decorrelated. Line: median over seeds; band: min–max.",
                "missing": "Not drawn: no run recorded a decorrelation loss (no DBP runs)."})
    out.append({"title": "Decorrelation loss by layer (DBP)", "svg": figures.decor_loss_by_layer(evals),
                "how": "Each decorrelated layer's loss (rows, the input's layer on top) over training, as colour on "
                       "a log scale: the mean over the updates since the previous eval point, median over runs. "
                       "A row that brightens while the rest darken is a layer whose decorrelation is failing; "
                       "grey: no finite value.",
                "missing": "Not drawn: no run recorded its layers' decorrelation losses (no DBP runs, or results "
                           "written before decorbench recorded them)."})
    for figure in out:
        figure["svg"] = Markup(figure["svg"]) if figure["svg"] else None  # matplotlib escaped every text in it
    return out


def render_report(paths, output: Path | str, target: float | None = None) -> Path:
    """Write the HTML report for the results at `paths` (files or directories) to `output`; return its path.

    target: the accuracy that "to target" numbers refer to, for every (dataset, model); default: the
    budget.target_accuracy all the runs were given (as `decorbench run` measures), else BP's median final accuracy
    in each group. Raises ValueError (one line) for a path that does not exist, no results at all, a target outside
    [0, 1], or an output that is not an .html file or cannot be written.
    """
    if target is not None and not 0 < float(target) <= 1:  # as budget.target_accuracy: 0 is reached by any eval
        raise ValueError(f"target must be an accuracy between 0 and 1, above 0, not {target!r}")
    output = Path(output)
    if output.suffix.lower() not in (".html", ".htm") or output.is_dir():
        raise ValueError(f"the report goes to an .html file, not {output} (results and configs are never overwritten)")
    missing = [str(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths) if not Path(p).exists()]
    if missing:
        raise ValueError(f"no such results file or directory: {', '.join(missing)}")
    evals, skipped = _load(paths)
    evals = tidy(evals)
    source = "given with --target"
    if target is None:
        target, source = recorded_target(evals), "the runs' budget.target_accuracy"
    runs, goals = per_run(evals, target)
    env = Environment(loader=PackageLoader("decorbench.report"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html.j2").render(
        version=__version__, generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs_total=len(runs), files_skipped=skipped, provenance=tables.provenance(runs),
        target_given=None if target is None else tables.fmt(float(target), "accuracy"), target_source=source,
        notes=tables.notes(runs), summary=tables.summary(runs, goals, None if target is None else source),
        sweeps=sweep.sweeps(runs, goals), claim=claim.check(runs, goals, target, source),
        no_accuracy=runs["final_accuracy"].isna().all(), figures=_figures(evals, runs, goals),
        statuses=tables.status_counts(runs), runs=tables.run_rows(runs),
        converted=bool((runs["method"] == "bp-converted").any()))
    partial = output.with_name(f".{output.name}.partial")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(html, encoding="utf-8")
        os.replace(partial, output)  # readers never see half a report
    except OSError as e:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        why = (f"{e.filename} is not a folder" if isinstance(e, (FileExistsError, NotADirectoryError)) and e.filename
               else e.strerror or e)
        raise ValueError(f"cannot write the report to {output} ({why})") from None
    return output
