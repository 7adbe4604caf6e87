"""The report's figures as inline SVG: accuracy against cost, time per step and DBP's overhead, decorrelation loss
(in all and by layer).

Why this shape: SVG stays sharp at any zoom and lives inside the one HTML file. Figures are built on matplotlib's
Agg canvas without pyplot (no GUI backend, no global figure state) under a seaborn style applied only here. Text is
written as escaped <text> elements (svg.fonttype "none") and never parsed as mathtext, so a model called `$x$` or
`<script>` shows as typed. Curves are aggregated with pandas first (median and min–max over seeds at each eval
step) and drawn once per method and facet, so 1,000 runs cost about as much to draw as 10. One facet per
(dataset, model): runs of different datasets or models never share a curve.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from functools import wraps

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, MaxNLocator, NullLocator, PercentFormatter

from .runs import GROUP, by_group, group_key, natural
from .stats import ratio
from .tables import methods

STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("paper"), "svg.fonttype": "none",
         "text.parse_math": False, "text.usetex": False, "axes.titlesize": 9, "axes.titleweight": "bold",
         "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"]}
PALETTE = sns.color_palette("colorblind")
COLUMNS, PANEL = 3, (3.4, 2.2)  # panels per row; one panel's width and height (inches)
MARGINS = (0.75, 0.25, 0.75, 0.55, 0.8, 0.8)  # left, right, top (legend + title), bottom, between columns, rows


def _styled(draw):
    """Run a figure builder under the report's style; it returns a Figure (→ SVG string) or None (→ None)."""
    @wraps(draw)
    def svg(*args, **kwargs) -> str | None:
        salt = "-".join([draw.__name__, *(a for a in args if isinstance(a, str))])  # stable ids, unique per figure
        with mpl.rc_context({**STYLE, "svg.hashsalt": salt}):
            fig = draw(*args, **kwargs)
            if fig is None:
                return None
            buffer = io.StringIO()
            fig.savefig(buffer, format="svg", metadata=dict.fromkeys(("Date", "Creator", "Format", "Type")))
        text = buffer.getvalue()
        text = text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: the SVG sits inside HTML
        # matplotlib names its groups line2d_1, xtick_1, ... in every figure, and an image by a hash of its pixels
        # (two panels can show the same): ids must be unique in one page
        prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", salt)
        images = itertools.count(1)
        text = re.sub(r'(<image\b[^>]*?) id="[^"]*"', lambda m: f'{m[1]} id="{prefix}-image_{next(images)}"', text)
        return text.replace('<g id="', f'<g id="{prefix}-')
    return svg


def _colors(present: list[str]) -> dict[str, tuple]:
    """BP blue and DBP orange in every figure; any other method takes the next colours."""
    others = [m for m in present if m not in ("bp", "dbp")]
    return {"bp": PALETTE[0], "dbp": PALETTE[1], **{m: PALETTE[(2 + i) % len(PALETTE)] for i, m in enumerate(others)}}


def _facets(keys: list[tuple], margins: tuple = MARGINS) -> tuple[Figure, list]:
    """A grid of equal panels, one per (dataset, model), titled. Margins are fixed in inches rather than found by
    constrained layout, which costs ~0.05 s per panel (seconds for a report with many models)."""
    cols = min(len(keys), COLUMNS)
    rows = math.ceil(len(keys) / cols)
    (w, h), (left, right, top, bottom, gap_x, gap_y) = PANEL, margins
    width, height = left + cols * w + (cols - 1) * gap_x + right, top + rows * h + (rows - 1) * gap_y + bottom
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height,
                        wspace=gap_x / w, hspace=gap_y / h)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax, (dataset, model) in zip(axes, keys):
        ax.set_title(f"{dataset} · {model}")
    return fig, list(axes[:len(keys)])


def _plain_log_ticks(axis) -> None:
    """Log-scale ticks at 1, 2, 5 × 10^k written as plain numbers (matplotlib's 10^k labels need mathtext, which
    is off here)."""
    axis.set_major_locator(LogLocator(subs=(1, 2, 5)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_locator(NullLocator())


def _bands(evals: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Per (dataset, model, method, step): median x, median y and min–max y over seeds."""
    data = evals.dropna(subset=[x, y])
    return data.groupby([*GROUP, "method", "step"], sort=True).agg(
        x=(x, "median"), y=(y, "median"), low=(y, "min"), high=(y, "max"))


def _draw_bands(bands: pd.DataFrame, keys: list[tuple], colors: dict, fig: Figure, axes: list,
                scales: dict | None = None) -> None:
    """scales: per facet, what its x values are divided by (seconds shown in minutes or hours)."""
    for ax, key in zip(axes, keys):
        for method, curve in bands.loc[key].groupby(level="method", sort=False):
            x = curve["x"] / (scales or {}).get(key, 1)
            if len(curve) == 1:  # one eval point (a run cut short): a line and a band of it would draw nothing
                ax.errorbar(x, curve["y"], yerr=[curve["y"] - curve["low"], curve["high"] - curve["y"]], fmt="o",
                            ms=4, capsize=3, color=colors[method], label=method.upper())
                continue
            ax.plot(x, curve["y"], color=colors[method], lw=1.6, label=method.upper())
            ax.fill_between(x, curve["low"], curve["high"], color=colors[method], alpha=0.2, lw=0)
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), loc="upper center", ncols=len(handles), frameon=False,
               bbox_to_anchor=(0.5, 1), borderaxespad=0.2)


@_styled
def accuracy_curves(evals: pd.DataFrame, x: str, xlabel: str, unit: str, targets: pd.Series) -> Figure | None:
    """Eval accuracy against cumulative `x`, one facet per (dataset, model), the target as a dashed line. A facet's
    times of a minute or more in minutes, of two hours or more in hours, as the tables print them (not "7.2 ks")."""
    bands = _bands(evals, x, "eval_accuracy")
    if bands.empty:
        return None
    keys = sorted(bands.index.droplevel(["method", "step"]).unique(), key=group_key)
    longest = bands.groupby(level=GROUP)["x"].max()
    units = {key: (1, unit) if unit != "s" or longest[key] < 60 else (60, "min") if longest[key] < 7200 else
             (3600, "h") for key in keys}
    fig, axes = _facets(keys)
    _draw_bands(bands, keys, _colors(methods(evals)), fig, axes, {key: scale for key, (scale, _) in units.items()})
    for ax, key in zip(axes, keys):
        ax.axhline(targets.get(key, math.nan), color="0.35", ls="--", lw=0.9)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("eval accuracy")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=None))  # as the tables print it
        shown = units[key][1]
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _, shown=shown: f"{value:g} {shown}")
                                     if shown in ("min", "h") else EngFormatter(unit=shown, places=None, sep=" "))
        ax.xaxis.set_major_locator(MaxNLocator(4))
    return fig


@_styled
def decor_loss(evals: pd.DataFrame) -> Figure | None:
    """DBP's decorrelation loss over training steps (log scale), one facet per (dataset, model)."""
    bands = _bands(evals.assign(x=evals["step"]), "x", "decor_loss")
    bands = bands[bands["y"] > 0]
    if bands.empty:
        return None
    keys = sorted(bands.index.droplevel(["method", "step"]).unique(), key=group_key)
    fig, axes = _facets(keys)
    _draw_bands(bands, keys, _colors(methods(evals)), fig, axes)
    for ax in axes:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.set_xlabel("training step")
        ax.set_ylabel("decorrelation loss")
    return fig


def _layer_losses(evals: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """Per (dataset, model) with per-layer losses: a (step × layer) table of the median over runs, the layers in
    module order (in the order first met, should runs decorrelate different layers)."""
    data = evals[evals["decor_loss_by_layer"].map(lambda v: isinstance(v, dict) and len(v) > 0)]
    out = []
    for key, group in by_group(data):
        dicts = group["decor_loss_by_layer"].tolist()
        layers = list(dict.fromkeys(name for d in dicts for name in d))
        wide = pd.DataFrame(dicts, index=group.index, columns=layers).apply(pd.to_numeric, errors="coerce")
        out.append((key, wide.groupby(group["step"]).median()))
    return out


@_styled
def decor_loss_by_layer(evals: pd.DataFrame) -> Figure | None:
    """Each decorrelated layer's loss (rows, input side on top) at each eval point, as colour on one log scale for
    every facet; a cell spans the window whose updates it averages. Grey: no finite value."""
    tables = _layer_losses(evals)
    values = np.concatenate([t.to_numpy().ravel() for _, t in tables]) if tables else np.array([])
    values = values[np.isfinite(values) & (values > 0)]
    if not len(values):
        return None
    norm = mpl.colors.LogNorm(values.min(), max(values.max(), values.min() * 1.01))
    cmap = mpl.colormaps["viridis"].with_extremes(bad="0.8")
    longest = max(len(str(name)) for _, t in tables for name in t.columns)
    label_in = min(0.3 + 0.045 * longest, 1.6)  # room for the layer names at 5 pt
    fig, axes = _facets([key for key, _ in tables], (label_in + 0.2, 1.3, 0.45, 0.55, label_in + 0.35, 0.8))
    for ax, (_, table) in zip(axes, tables):
        edges = np.concatenate([[0], table.index.to_numpy(float)])
        masked = np.ma.masked_invalid(np.where(table.to_numpy() > 0, table.to_numpy(), np.nan).T)
        mesh = ax.pcolormesh(edges, np.arange(len(table.columns) + 1), masked, norm=norm, cmap=cmap,
                             rasterized=True)  # one image: no hairline seams between the cells in SVG viewers
        every = max(1, math.ceil(len(table.columns) / 24))
        ax.set_yticks(np.arange(0, len(table.columns), every) + 0.5, [str(c) for c in table.columns[::every]],
                      fontsize=5)
        ax.set_ylim(len(table.columns), 0)
        ax.grid(False)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(4, integer=True))
    bar = fig.colorbar(mesh, cax=fig.add_axes([1 - 1.05 / fig.get_figwidth(), 0.55 / fig.get_figheight(),
                                               0.1 / fig.get_figwidth(), 1 - 1.0 / fig.get_figheight()]))
    _plain_log_ticks(bar.ax.yaxis)
    bar.set_label("decorrelation loss")
    return fig


def _overhead(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, model) with BP and DBP runs: DBP/BP ratio of the median time per step, and its interval."""
    rows = []
    for (dataset, model), group in by_group(runs.dropna(subset=["step_time_s"])):
        times = {m: group.loc[group["method"] == m, "step_time_s"] for m in ("bp", "dbp")}
        if len(times["bp"]) and len(times["dbp"]):
            r = ratio(times["dbp"], times["bp"])
            rows.append({"label": f"{dataset} · {model}", "ratio": r.value, "low": r.low, "high": r.high})
    return pd.DataFrame(rows, columns=["label", "ratio", "low", "high"])


@_styled
def step_time(runs: pd.DataFrame) -> Figure | None:
    """Left: training ms per step by model and method (diamond: median, whisker: min–max, dots: runs).
    Right: DBP's overhead, DBP/BP per-step time, labelled with its value (on a log axis when the intervals span
    more than ×10)."""
    data = runs.dropna(subset=["step_time_s"]).assign(
        ms=lambda d: 1000 * d["step_time_s"], label=lambda d: d["dataset"] + " · " + d["model"],
        shown=lambda d: d["method"].str.upper())
    if data.empty:
        return None
    present, ratios = methods(data), _overhead(runs)
    labels = sorted(data["label"].unique(), key=natural)
    height = 0.9 + 0.32 * len(labels) * max(len(present), 2)
    fig = Figure(figsize=(11, height), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=[3, 2], sharey=True) if len(ratios) else (fig.subplots(), None)
    colors = _colors(present)
    kwargs = dict(data=data, x="ms", y="label", hue="shown", hue_order=[m.upper() for m in present], order=labels,
                  palette={m.upper(): c for m, c in colors.items()})
    state = np.random.get_state()  # seaborn jitters with numpy's global generator: the same report every render
    np.random.seed(0)
    try:
        sns.stripplot(**kwargs, dodge=True, ax=left, size=3, alpha=0.45, jitter=0.08, legend=False)
    finally:
        np.random.set_state(state)
    dodge = 0.4 if len(present) > 1 else False  # seaborn divides by (methods − 1) when dodging
    sns.pointplot(**kwargs, estimator="median", errorbar=("pi", 100), dodge=dodge, linestyle="none", markers="D",
                  markersize=6, err_kws={"linewidth": 1.5}, capsize=0.12, ax=left)
    log = data["ms"].max() > 10 * data["ms"].min()  # models of very different cost: a log axis shows both
    if log:
        left.set_xscale("log")
        _plain_log_ticks(left.xaxis)
    left.set(xlabel=f"training time per step (ms{', log scale' if log else ''})", ylabel="")
    left.legend(title=None, frameon=False, loc="lower left", bbox_to_anchor=(0, 1), ncols=len(present),
                borderaxespad=0.2)
    if right is not None:
        ratios = ratios.set_index("label").reindex(labels)
        err = [(ratios["ratio"] - ratios["low"]).fillna(0), (ratios["high"] - ratios["ratio"]).fillna(0)]
        rows = range(len(labels))  # the categorical positions seaborn gave the shared y axis
        ends = ratios[["ratio", "high"]].max(axis=1)
        wide = ratios["high"].max() > 10 * ratios["low"].min()  # noisy runs: linear squeezes ×0.9 and ×1.1 together
        base = 1 if wide else 0  # a log axis has no 0: bars grow from 1, leftwards where DBP is faster
        right.barh(rows, ratios["ratio"] - base, left=base, xerr=err, color=colors["dbp"], alpha=0.8, height=0.5,
                   error_kw={"lw": 1})
        if wide:
            right.set_xscale("log")
            _plain_log_ticks(right.xaxis)
            right.set_xlim(min(ratios["low"].min(), 1) / 1.5, 2 * max(ends.max(), 1))
        else:
            right.set_xlim(0, 1.25 * max(ends.max(), 1))
        right.axvline(1, color="0.35", ls="--", lw=0.9)
        for y, value, end in zip(rows, ratios["ratio"], ends):
            if math.isfinite(value):
                right.annotate(f"×{value:.2f}", (end, y), xytext=(4, 0), textcoords="offset points", va="center",
                               fontsize=8, fontweight="bold")
        right.set(xlabel=f"DBP / BP time per step (1 = no overhead{', log scale' if wide else ''})", ylabel="")
        left.set_ylim(len(labels) - 0.5, -0.5)  # a NaN bar (a group without both methods) rescaled the shared axis
    return fig
