"""Result figures of the study: metric vs label fraction curves with confidence bands
(``learning-curves``) and the share of labels each pretrained encoder needs to match
scratch at 100 %, with its interval (``label-efficiency``). Builders are plain functions
of tidy tables (:func:`learning_curves`, :func:`label_efficiency_chart`), registered as
``sarssl plot`` subcommands by their ``_build_*`` adapters.

The controls are drawn in every panel: the per-pixel control (black) and the frozen random
encoder ("Random (frozen)", grey) as thin reference curves without markers or bands, the
U-Net as a curve like the models. Colour = initialisation, line style = protocol (solid
fine-tuning, dashed linear probe, dotted k-NN probe, dash-dot frozen conv decoder).
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

#: Line style, hatch and legend text per protocol (the registry's, plus the probes it lacks).
LINESTYLES: dict[str, object] = {"knn": ":", "decoder": "-.", **PROTOCOL_LINESTYLES}
HATCHES: dict[str, str] = {"knn": "...", "decoder": "xxx", **PROTOCOL_HATCHES}
LEGEND: dict[str, str] = {
    "knn": "k-NN probe",
    "decoder": "frozen conv decoder",
    **PROTOCOL_LEGEND,
}
#: Colour of the per-pixel control.
PIXEL_COLOR = "#000000"


def curve_color(init: str) -> str:
    return PIXEL_COLOR if init == "pixel" else init_color(init)


def is_reference_curve(init: str, protocol: str) -> bool:
    """The controls drawn as thin reference curves: per-pixel control and random frozen."""
    return init == "pixel" or tables.is_random_frozen(init, protocol)


# --------------------------------------------------------------------------- helpers
def _as_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Accept tidy rows or a summary; return the summary (mean/CI/n_seeds per group).

    Tidy rows carry no predictions, so their summary has no interval (no bands)."""
    if "mean" in df.columns:
        missing = [c for c in ("ci_low", "ci_high") if c not in df.columns]
        if missing:
            raise InputError(f"summary table: missing column(s) {', '.join(missing)}")
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
    return sorted(pairs, key=tables.row_sort_key)


def _legend_name(init: str, protocol: str) -> str:
    return tables.row_label(init, protocol)


def _init_protocol_legend(fig: Figure, names: list[tuple[str, str]], protocols: list[str]) -> None:
    """One figure legend: a colour per initialisation (controls thin), a style per protocol."""
    handles = []
    for name, init in names:
        ref = name in (tables.RANDOM_FROZEN_LABEL, tables.init_label("pixel"))
        handles.append(Line2D([], [], color=curve_color(init), lw=0.9 if ref else 2, label=name))
    handles += [
        Line2D([], [], color="black", lw=1.4, ls=LINESTYLES.get(p, "-"), label=LEGEND.get(p, p))
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

    ``df``: a summary with confidence intervals (``finetune_summary.csv``,
    :func:`sarssl.downstream.tables.summarise`) or tidy metric rows (then without bands).
    Each task is shown on its primary metric (mIoU for land cover, RMSE in tree-cover
    percentage points for tree cover) unless ``metrics`` maps task -> metric. Columns:
    in-region panels (fine-tuned where the encoder was pretrained) first, then
    out-of-region panels. Each curve is the mean over seeds with its confidence band
    (``ci_low``..``ci_high``: paired bootstrap over test chips and seeds; no band without
    an interval), coloured by initialisation, styled by protocol; the controls (per-pixel
    control, random frozen encoder) are thin reference curves without band.

    Artists carry ``gid`` tags for inspection: ``"line|TASK|PA|FA|INIT|PROTOCOL"`` and
    ``"band|..."`` for the matching confidence band.
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
        key=lambda pf: (not tables.in_region(*pf), pf[0], pf[1]),
    )
    fractions = np.array(sorted(set(summary["fraction"])))
    nrow, ncol = len(tasks), len(pairs)
    fig = Figure(figsize=(panel_size[0] * ncol, panel_size[1] * nrow + 0.7), layout="constrained")
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey="row")
    seen_names: list[tuple[str, str]] = []
    seen_protocols: list[str] = []
    for r, task in enumerate(tasks):
        metric = metrics[task]
        for c, (pa, fa) in enumerate(pairs):
            ax = axes[r, c]
            rows = tables.rows_for_pair(per_task[task], pa, fa)
            kind = "in-region" if tables.in_region(pa, fa) else "out-of-region"
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
                    mean=("mean", "mean"), low=("ci_low", "mean"), high=("ci_high", "mean")
                )
                cur = cur.sort_values("fraction")
                x = cur["fraction"].to_numpy(float)
                y = cur["mean"].to_numpy(float)
                lo, hi = cur["low"].to_numpy(float), cur["high"].to_numpy(float)
                color = curve_color(init)
                ref = is_reference_curve(init, protocol)
                name = _legend_name(init, protocol)
                tag = f"{task}|{pa}|{fa}|{init}|{protocol}"
                ax.plot(
                    x,
                    y,
                    color=color,
                    ls=LINESTYLES.get(protocol, "-"),
                    lw=0.9 if ref else 1.4,
                    marker=None if ref else "o",
                    label=f"{name} ({LEGEND.get(protocol, protocol)})",
                    gid=f"line|{tag}",
                    zorder=1.5 if ref else 2,
                )
                ok = np.isfinite(lo) & np.isfinite(hi)
                if ok.any() and not ref:
                    ax.fill_between(
                        x[ok], lo[ok], hi[ok], color=color, alpha=0.15, lw=0, gid=f"band|{tag}"
                    )
                if (name, init) not in seen_names:
                    seen_names.append((name, init))
                if protocol not in seen_protocols:
                    seen_protocols.append(protocol)
    order = {
        name: tables.row_sort_key(
            (init, "linear" if name == tables.RANDOM_FROZEN_LABEL else "finetune")
        )
        for name, init in seen_names
    }
    seen_names.sort(key=lambda ni: order[ni[0]])
    seen_protocols.sort(key=tables.protocol_sort_key)
    _init_protocol_legend(fig, seen_names, seen_protocols)
    return fig


def _learning_curve_args(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--summary",
        help="finetune_summary.csv from `sarssl tables` (means with confidence intervals)",
    )
    src.add_argument(
        "--metrics",
        help="tidy metrics table (finetune_metrics.csv) or a metrics.json (no intervals)",
    )


@register_figure(
    "learning-curves",
    "metric vs label fraction per task, region and init, with confidence bands",
    _learning_curve_args,
)
def _build_learning_curves(args: argparse.Namespace) -> Figure:
    if args.summary:
        return learning_curves(tables.read_summary_table(args.summary))
    return learning_curves(tables.read_metrics_table(args.metrics))


# --------------------------------------------------------------------------- label efficiency
@styled
def label_efficiency_chart(
    eff: pd.DataFrame, panel_size: tuple[float, float] = (3.6, 2.8)
) -> Figure:
    """The label fraction each pretrained init needs to match scratch@100 %, with its CI.

    ``eff``: a label-efficiency table (``sarssl tables --label-efficiency``,
    :meth:`sarssl.downstream.statistics.PairedBootstrap.label_efficiency`). One panel per
    task; bars grouped by region pair, coloured by initialisation, hatched by frozen
    protocol; log y axis in percent of the training chips (lower = more label-efficient).
    A detected estimate is a filled bar with its interval as an error bar (an interval
    that reaches beyond the largest fraction ends in an arrow); *not detected* (the paired
    gain's interval includes zero) is a dotted grey outline up to 100 % labelled "not
    detected"; *not reached* is an outline in the init's colour labelled "not reached".
    Bars carry ``gid`` ``"bar|TASK|PA|FA|INIT|PROTOCOL"``, error bars ``"ci|..."``.
    """
    missing = [c for c in tables.EFFICIENCY_COLUMNS if c not in eff.columns]
    if missing:
        raise InputError(f"label efficiency: missing column(s) {', '.join(missing)}")
    if eff.empty:
        raise InputError(
            "label efficiency: nothing to plot (need scratch/finetune at 100% "
            "and at least one pretrained initialisation)"
        )
    tasks = [t for t in tables.TASKS if t in set(eff["task"])]
    fig = Figure(figsize=(panel_size[0] * len(tasks), panel_size[1] + 0.6), layout="constrained")
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    seen_inits: list[str] = []
    seen_protocols: list[str] = []
    cap = 100.0  # percent: an estimate is never above all labels
    for ax, task in zip(axes, tasks, strict=True):
        sub = eff[eff["task"] == task]
        metric = str(sub["metric"].iloc[0])
        pairs = sorted(
            {(p, f) for p, f in zip(sub["pretrain_area"], sub["finetune_area"], strict=True)},
            key=lambda pf: (not tables.in_region(*pf), pf[0], pf[1]),
        )
        bars = _curve_order(sub)
        width = 0.8 / max(len(bars), 1)
        finite = pd.concat([sub["fraction_needed"], sub["ci_low"]]).to_numpy(float)
        finite = finite[np.isfinite(finite) & (finite > 0)]
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
                status = str(row["status"])
                color = curve_color(init)
                tag = f"{task}|{pa}|{fa}|{init}|{protocol}"
                if status == "detected":
                    height = 100.0 * float(row["fraction_needed"])
                    face, edge, ls = color, color, "-"
                else:
                    height = cap
                    face, ls = "none", ":" if status == "not detected" else "-"
                    edge = "0.6" if status == "not detected" else color
                ax.bar(
                    x,
                    height,
                    width=width * 0.92,
                    bottom=0,
                    color=face,
                    edgecolor=edge,
                    linestyle=ls,
                    hatch=HATCHES.get(protocol, ""),
                    lw=0.8,
                    alpha=1.0 if protocol == "finetune" else 0.8,
                    gid=f"bar|{tag}",
                )
                if status == "detected":
                    lo = 100.0 * float(row["ci_low"]) if np.isfinite(row["ci_low"]) else height
                    hi_raw = float(row["ci_high"])
                    hi = 100.0 * hi_raw if np.isfinite(hi_raw) else cap * 2.5
                    ax.errorbar(
                        [x],
                        [height],
                        yerr=[[max(height - lo, 0.0)], [max(hi - height, 0.0)]],
                        fmt="none",
                        ecolor="black",
                        elinewidth=0.8,
                        capsize=1.5,
                        gid=f"ci|{tag}",
                    )
                    if not np.isfinite(hi_raw):
                        ax.plot([x], [hi], marker="^", color="black", ms=3)
                    text = str(row["label"])
                    ytext = hi * 1.1
                else:
                    text = status
                    ytext = cap * 1.1
                ax.text(
                    x,
                    ytext,
                    text,
                    ha="center",
                    va="bottom",
                    fontsize=5,
                    rotation=90,
                    gid=f"label|{tag}",
                )
                if init not in seen_inits:
                    seen_inits.append(init)
                if protocol not in seen_protocols:
                    seen_protocols.append(protocol)
        ax.set_yscale("log")
        ax.set_ylim(ymin, cap * 40)
        ticks = [t for t in (0.1, 1.0, 10.0, 100.0) if t >= ymin]
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.axhline(100.0, color=init_color("scratch"), lw=0.8, ls=":")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}%"))
        ax.set_xticks(range(len(pairs)))
        ax.set_xticklabels(
            [
                f"{'in' if tables.in_region(pa, fa) else 'out-of'}-region\n{pa} → {fa}"
                for pa, fa in pairs
            ]
        )
        ax.set_xlim(-0.6, len(pairs) - 0.4)
        ax.grid(axis="x", visible=False)
        ax.set_title(f"{tables.TASK_LABELS.get(task, task)}: {tables.metric_label(metric)}")
        if ax is axes[0]:
            ax.set_ylabel("Labels needed to match scratch\n(% of training chips, log)")
    seen_inits.sort(key=tables.init_sort_key)
    handles = [
        Patch(facecolor=curve_color(i), edgecolor=curve_color(i), label=tables.init_label(i))
        for i in seen_inits
    ]
    handles += [
        Patch(
            facecolor="white",
            edgecolor="black",
            hatch=HATCHES.get(p, ""),
            label=LEGEND.get(p, p),
        )
        for p in sorted(seen_protocols, key=tables.protocol_sort_key)
    ]
    handles.append(
        Line2D([], [], color=init_color("scratch"), lw=0.8, ls=":", label="scratch, 100% labels")
    )
    handles.append(
        Patch(facecolor="none", edgecolor="0.6", linestyle=":", label="gain not detected")
    )
    _figure_legend(fig, handles)
    return fig


def _label_efficiency_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--efficiency",
        required=True,
        help="label-efficiency table from `sarssl tables --label-efficiency`",
    )


def read_efficiency_table(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    text = ("task", "metric", "init", "protocol", "pretrain_area", "finetune_area", "bound")
    try:
        eff = pd.read_csv(path, dtype={c: str for c in text + ("status", "label")})
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
    "labels each pretrained init needs to match scratch at 100%, with CIs (bar chart)",
    _label_efficiency_args,
)
def _build_label_efficiency(args: argparse.Namespace) -> Figure:
    return label_efficiency_chart(read_efficiency_table(args.efficiency))
