"""Result figures of the study: metric vs label fraction curves (``learning-curves``) and
the share of labels each pretrained encoder needs to match scratch at 100 %
(``label-efficiency``). Builders are plain functions of tidy tables
(:func:`learning_curves`, :func:`label_efficiency_chart`), registered as ``sarssl plot``
subcommands by their ``_build_*`` adapters.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from ..downstream import tables
from ..errors import InputError
from .registry import (
    PROTOCOL_HATCHES,
    PROTOCOL_LEGEND,
    PROTOCOL_LINESTYLES,
    init_color,
    register_figure,
    styled,
)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers
def _as_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Accept tidy rows or a summary; return the summary (mean/std/n_seeds per group)."""
    if "mean" in df.columns and "std" in df.columns:
        return df
    missing = [c for c in tables.COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"metrics table: missing column(s) {', '.join(missing)}")
    return tables.summarise(df)


def _set_fraction_axis(ax, fractions: np.ndarray) -> None:
    """Log x axis with ticks exactly at the label fractions, labelled in percent."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(list(fractions)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([tables.format_fraction(f) for f in fractions])
    lo, hi = float(np.min(fractions)), float(np.max(fractions))
    ax.set_xlim(lo / 1.35, hi * 1.35)


def _curve_order(rows: pd.DataFrame) -> list[tuple[str, str]]:
    pairs = {(i, p) for i, p in zip(rows["init"], rows["protocol"], strict=True)}
    return sorted(
        pairs,
        key=lambda ip: (
            tables.init_sort_key(ip[0]),
            tables.PROTOCOLS.index(ip[1]) if ip[1] in tables.PROTOCOLS else 9,
        ),
    )


def _init_protocol_legend(fig: Figure, inits: list[str], protocols: list[str]) -> None:
    """One figure legend: a colour per initialisation, a line style per protocol."""
    handles = [Line2D([], [], color=init_color(i), lw=2, label=tables.init_label(i)) for i in inits]
    handles += [
        Line2D(
            [],
            [],
            color="black",
            lw=1.4,
            ls=PROTOCOL_LINESTYLES.get(p, "-"),
            label=PROTOCOL_LEGEND.get(p, p),
        )
        for p in protocols
    ]
    _figure_legend(fig, handles, handlelength=2.6)


def _figure_legend(fig: Figure, handles: list, **kwargs) -> None:
    """A legend below the panels, wrapped so that it never gets wider than the figure."""
    width_in = fig.get_size_inches()[0]
    per_row = max(1, int(width_in / 1.25))  # ~1.25 in per entry at 7 pt
    nrows = -(-len(handles) // per_row)
    ncols = -(-len(handles) // nrows)  # balance the rows
    fig.legend(
        handles=handles, loc="outside lower center", ncols=ncols, columnspacing=1.4, **kwargs
    )


# --------------------------------------------------------------------------- learning curves
@styled
def learning_curves(
    df: pd.DataFrame,
    metrics: dict[str, str] | None = None,
    panel_size: tuple[float, float] = (3.2, 2.4),
) -> Figure:
    """Metric versus label fraction, one row per task and one column per region pair.

    ``df``: tidy metric rows (:data:`sarssl.downstream.tables.COLUMNS`) or their summary.
    Each task is shown on its primary metric (mIoU for land cover, RMSE in tree-cover percentage
    points for tree cover) unless ``metrics`` maps task -> metric. Columns: in-region panels
    (fine-tuned where the encoder was pretrained) first, then out-of-region panels. Each
    curve is the mean over seeds with a ±1 sample-std band (no band for a single seed),
    coloured by initialisation; solid = full fine-tuning, dashed = linear probing.

    Artists carry ``gid`` tags for inspection: ``"line|TASK|PA|FA|INIT|PROTOCOL"`` and
    ``"band|..."`` for the matching ±std band.
    """
    summary = _as_summary(df)
    metrics = dict(tables.PRIMARY_METRIC if metrics is None else metrics)
    tasks = [t for t in tables.TASKS if t in set(summary["task"])]
    if not tasks:
        raise InputError("learning curves: no land cover or tree cover rows to plot")
    per_task = {}
    for t in tasks:
        sub = summary[(summary["task"] == t) & (summary["metric"] == metrics[t])]
        if sub.empty:
            raise InputError(f"learning curves: no {metrics[t]!r} rows for task {t}")
        per_task[t] = sub
    pairs = sorted(
        {pf for sub in per_task.values() for pf in tables.region_pairs(sub)},
        key=lambda pf: (pf[0] != pf[1], pf[0], pf[1]),
    )
    fractions = np.array(sorted(set(summary["fraction"])))
    nrow, ncol = len(tasks), len(pairs)
    fig = Figure(figsize=(panel_size[0] * ncol, panel_size[1] * nrow + 0.5), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey="row")
    seen_inits: list[str] = []
    seen_protocols: list[str] = []
    for r, task in enumerate(tasks):
        metric = metrics[task]
        for c, (pa, fa) in enumerate(pairs):
            ax = axes[r, c]
            rows = tables.rows_for_pair(per_task[task], pa, fa)
            kind = "in-region" if pa == fa else "out-of-region"
            ax.set_title(
                f"{tables.TASK_LABELS.get(task, task)}, {kind}\npretrain {pa} → fine-tune {fa}"
            )
            _set_fraction_axis(ax, fractions)
            if c == 0:
                ax.set_ylabel(tables.metric_label(metric))
            if r == nrow - 1:
                ax.set_xlabel("Label fraction (% of training chips)")
            if rows.empty:
                ax.text(
                    0.5,
                    0.5,
                    "no runs",
                    transform=ax.transAxes,
                    ha="center",
                    va="center",
                    color="0.5",
                )
                continue
            for init, protocol in _curve_order(rows):
                cur = rows[(rows["init"] == init) & (rows["protocol"] == protocol)]
                cur = cur.groupby("fraction", as_index=False).agg(
                    mean=("mean", "mean"), std=("std", "mean")
                )
                cur = cur.sort_values("fraction")
                x = cur["fraction"].to_numpy(float)
                y = cur["mean"].to_numpy(float)
                s = cur["std"].to_numpy(float)
                color = init_color(init)
                tag = f"{task}|{pa}|{fa}|{init}|{protocol}"
                ax.plot(
                    x,
                    y,
                    color=color,
                    ls=PROTOCOL_LINESTYLES.get(protocol, "-"),
                    marker="o",
                    label=f"{tables.init_label(init)} ({PROTOCOL_LEGEND.get(protocol, protocol)})",
                    gid=f"line|{tag}",
                )
                if np.isfinite(s).any():
                    s0 = np.where(np.isfinite(s), s, 0.0)
                    ax.fill_between(
                        x, y - s0, y + s0, color=color, alpha=0.15, lw=0, gid=f"band|{tag}"
                    )
                if init not in seen_inits:
                    seen_inits.append(init)
                if protocol not in seen_protocols:
                    seen_protocols.append(protocol)
    seen_inits.sort(key=tables.init_sort_key)
    seen_protocols.sort(key=lambda p: tables.PROTOCOLS.index(p) if p in tables.PROTOCOLS else 9)
    _init_protocol_legend(fig, seen_inits, seen_protocols)
    return fig


def _learning_curve_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics",
        required=True,
        help="tidy metrics table (finetune_metrics.csv) or a metrics.json",
    )


@register_figure(
    "learning-curves", "metric vs label fraction per task, region and init", _learning_curve_args
)
def _build_learning_curves(args: argparse.Namespace) -> Figure:
    return learning_curves(tables.read_metrics_table(args.metrics))


# --------------------------------------------------------------------------- label efficiency
@styled
def label_efficiency_chart(
    df: pd.DataFrame, panel_size: tuple[float, float] = (3.4, 2.6)
) -> Figure:
    """Bar chart of the label fraction each pretrained init needs to match scratch@100 %.

    ``df``: a label-efficiency table (:func:`sarssl.downstream.tables.label_efficiency`) or tidy
    metric rows / a summary from which it is computed. One panel per task; bars grouped by region
    pair, coloured by initialisation, hatched for linear probing; log y axis in percent of
    the training chips (lower = more label-efficient). A run that never matches the
    reference is drawn as an outlined bar up to the largest fraction tested, labelled
    ">100%"; one already matched at the smallest fraction is labelled "≤1%" (an upper
    bound). Bars carry ``gid`` ``"bar|TASK|PA|FA|INIT|PROTOCOL"``.
    """
    eff = df if "fraction_needed" in df.columns else tables.label_efficiency(_as_summary(df))
    if eff.empty:
        raise InputError(
            "label efficiency: nothing to plot (need scratch/finetune at 100% "
            "and at least one pretrained initialisation)"
        )
    tasks = [t for t in tables.TASKS if t in set(eff["task"])]
    fig = Figure(figsize=(panel_size[0] * len(tasks), panel_size[1] + 0.5), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    seen_inits: list[str] = []
    seen_protocols: list[str] = []
    for ax, task in zip(axes, tasks, strict=True):
        sub = eff[eff["task"] == task]
        metric = str(sub["metric"].iloc[0])
        pairs = sorted(
            {(p, f) for p, f in zip(sub["pretrain_area"], sub["finetune_area"], strict=True)},
            key=lambda pf: (pf[0] != pf[1], pf[0], pf[1]),
        )
        bars = _curve_order(sub)
        width = 0.8 / max(len(bars), 1)
        finite = sub["fraction_needed"].to_numpy(float)
        finite = finite[np.isfinite(finite)]
        cap = 100.0  # percent: a never-reached bar is drawn up to all labels
        ymin = min([1.0] + [100.0 * v for v in finite]) / 3.0
        for g, (pa, fa) in enumerate(pairs):
            for b, (init, protocol) in enumerate(bars):
                row = sub[
                    (sub["pretrain_area"] == pa)
                    & (sub["finetune_area"] == fa)
                    & (sub["init"] == init)
                    & (sub["protocol"] == protocol)
                ]
                if row.empty:
                    continue
                row = row.iloc[0]
                x = g + (b - (len(bars) - 1) / 2) * width
                never = row["bound"] == "never"
                height = cap if never else 100.0 * float(row["fraction_needed"])
                color = init_color(init)
                ax.bar(
                    x,
                    height,
                    width=width * 0.92,
                    bottom=0,
                    color="none" if never else color,
                    edgecolor=color,
                    hatch=PROTOCOL_HATCHES.get(protocol, ""),
                    lw=0.8,
                    alpha=1.0 if protocol == "finetune" else 0.75,
                    gid=f"bar|{task}|{pa}|{fa}|{init}|{protocol}",
                )
                ax.text(
                    x,
                    height * 1.08,
                    str(row["label"]),
                    ha="center",
                    va="bottom",
                    fontsize=5.5,
                    rotation=90,
                )
                if init not in seen_inits:
                    seen_inits.append(init)
                if protocol not in seen_protocols:
                    seen_protocols.append(protocol)
        ax.set_yscale("log")
        ax.set_ylim(ymin, cap * 5)
        ax.axhline(100.0, color=init_color("scratch"), lw=0.8, ls=":")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}%"))
        ax.set_xticks(range(len(pairs)))
        ax.set_xticklabels(
            [f"{'in' if pa == fa else 'out-of'}-region\n{pa} → {fa}" for pa, fa in pairs]
        )
        ax.set_xlim(-0.6, len(pairs) - 0.4)
        ax.grid(axis="x", visible=False)
        ax.set_title(f"{tables.TASK_LABELS.get(task, task)}: {tables.metric_label(metric)}")
        if ax is axes[0]:
            ax.set_ylabel("Labels needed to match scratch\n(% of training chips, log)")
    seen_inits.sort(key=tables.init_sort_key)
    handles = [
        Patch(facecolor=init_color(i), edgecolor=init_color(i), label=tables.init_label(i))
        for i in seen_inits
    ]
    handles += [
        Patch(
            facecolor="white",
            edgecolor="black",
            hatch=PROTOCOL_HATCHES.get(p, ""),
            label=PROTOCOL_LEGEND.get(p, p),
        )
        for p in seen_protocols
    ]
    handles.append(
        Line2D([], [], color=init_color("scratch"), lw=0.8, ls=":", label="scratch, 100% labels")
    )
    _figure_legend(fig, handles)
    return fig


def _label_efficiency_args(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--metrics", help="tidy metrics table (finetune_metrics.csv)")
    src.add_argument(
        "--efficiency", help="label-efficiency table from `sarssl tables --label-efficiency`"
    )


def read_efficiency_table(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    try:
        eff = pd.read_csv(
            path,
            dtype={
                c: str
                for c in (
                    "task",
                    "metric",
                    "init",
                    "protocol",
                    "pretrain_area",
                    "finetune_area",
                    "bound",
                    "label",
                )
            },
        )
    except FileNotFoundError as exc:
        raise InputError(f"{path}: label-efficiency table not found") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({exc})") from exc
    missing = [c for c in tables.EFFICIENCY_COLUMNS if c not in eff.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")
    return eff


@register_figure(
    "label-efficiency",
    "labels each pretrained init needs to match scratch at 100% (bar chart)",
    _label_efficiency_args,
)
def _build_label_efficiency(args: argparse.Namespace) -> Figure:
    if args.efficiency:
        return label_efficiency_chart(read_efficiency_table(args.efficiency))
    return label_efficiency_chart(tables.read_metrics_table(args.metrics))
