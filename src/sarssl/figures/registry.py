"""Publication figures: ``sarssl plot NAME ...`` dispatches to registered figure builders.

Each figure is a builder registered with :func:`register_figure`: it declares its own
command-line options and returns a :class:`matplotlib.figure.Figure`; the command writes it
as a 300 dpi PNG at ``--out`` and as a vector PDF beside it (same stem), both atomically.
Builders are plain functions of data (e.g. :func:`learning_curves` takes a tidy metrics
table), so they can be used and tested without the command line.

Figures are built on :class:`~matplotlib.figure.Figure` directly (no ``pyplot`` state, no
GUI): rendering uses the Agg raster backend for PNG and the PDF backend for PDF. One style
(:func:`publication_style`) and one colour per initialisation (:data:`INIT_COLORS`: scratch
grey, MAE blue, DINO orange, U-Net green) keep every figure consistent. Line style encodes
the protocol: solid = full fine-tuning, dashed = linear probing (frozen encoder).

Adding a figure::

    def _my_args(parser): parser.add_argument("--chips-dir", required=True)

    @register_figure("my-figure", "what it shows", _my_args)
    def _build_my_figure(args) -> Figure: ...
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, NullLocator

from ..downstream import tables
from ..errors import InputError, SarsslError
from ..io import atomic_path

log = logging.getLogger(__name__)
# The PDF backend subsets fonts through fontTools, which logs every table at INFO level.
logging.getLogger("fontTools").setLevel(logging.WARNING)

# --------------------------------------------------------------------------- style
#: One colour per initialisation, the same in every figure (Okabe-Ito-like tab colours).
INIT_COLORS: dict[str, str] = {
    "scratch": "#7f7f7f",  # grey
    "mae": "#1f77b4",  # blue
    "dino": "#ff7f0e",  # orange
    "unet": "#2ca02c",  # green
}
#: Colours for other initialisations (checkpoint names), chosen from the name's CRC32 so a
#: given name always gets the same colour whatever else is plotted.
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728")
PROTOCOL_LINESTYLES: dict[str, str] = {"finetune": "-", "linear": "--"}
PROTOCOL_HATCHES: dict[str, str] = {"finetune": "", "linear": "///"}
PROTOCOL_LEGEND: dict[str, str] = {"finetune": "full fine-tuning", "linear": "linear probing"}
DPI = 300

_STYLE: dict[str, object] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.frameon": False,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "lines.markersize": 3.5,
    "savefig.dpi": DPI,
    "pdf.fonttype": 42,  # embed TrueType: text stays text (editable, searchable) in the PDF
    "ps.fonttype": 42,
    "svg.fonttype": "none",
}


@contextlib.contextmanager
def publication_style() -> Iterator[None]:
    """Temporarily apply the house figure style (small serif-free fonts, light grid)."""
    with matplotlib.rc_context(_STYLE):
        yield


def init_color(init: str) -> str:
    """The colour of an initialisation (fixed for known names, stable hash otherwise)."""
    if init in INIT_COLORS:
        return INIT_COLORS[init]
    return _EXTRA_COLORS[zlib.crc32(init.encode()) % len(_EXTRA_COLORS)]


def save_figure(fig: Figure, out: str | os.PathLike, dpi: int = DPI) -> tuple[Path, Path]:
    """Write ``fig`` as PNG at ``out`` (``dpi``) and as vector PDF beside it, atomically."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise SarsslError(f"{out}: figure output must end in .png (the PDF is written beside it)")
    pdf = out.with_suffix(".pdf")
    with publication_style():
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": "sarssl"})
        with atomic_path(pdf) as tmp:
            fig.savefig(tmp, format="pdf", metadata={"Creator": "sarssl"})
    log.info("wrote %s and %s", out, pdf)
    return out, pdf


def styled(build: Callable[..., Figure]) -> Callable[..., Figure]:
    """Decorator: build the figure under :func:`publication_style` (fonts are fixed when
    artists are created, so the style must be active while building, not only when saving)."""

    @functools.wraps(build)
    def wrapper(*args, **kwargs) -> Figure:
        with publication_style():
            return build(*args, **kwargs)

    return wrapper


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class FigureSpec:
    """A registered figure: its CLI name, help, options and builder."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], Figure]


FIGURES: dict[str, FigureSpec] = {}


def register_figure(
    name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
) -> Callable[[Callable[[argparse.Namespace], Figure]], Callable[[argparse.Namespace], Figure]]:
    """Decorator: register ``build(args) -> Figure`` as ``sarssl plot NAME``."""

    def deco(
        build: Callable[[argparse.Namespace], Figure],
    ) -> Callable[[argparse.Namespace], Figure]:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} registered twice")
        FIGURES[name] = FigureSpec(name, help, add_arguments or (lambda p: None), build)
        return build

    return deco


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

    ``df``: tidy metric rows (:data:`sarssl.downstream.tables.COLUMNS`) or their summary. Each task is
    shown on its primary metric (mIoU for land cover, RMSE in tree-cover percentage points
    for tree cover) unless ``metrics`` maps task -> metric. Columns: in-region panels
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

    ``df``: a label-efficiency table (:func:`sarssl.downstream.tables.label_efficiency`) or tidy metric
    rows / a summary from which it is computed. One panel per task; bars grouped by region
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
        "--efficiency", help="label-efficiency table from `sarssl tables " "--label-efficiency`"
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


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="figure", metavar="FIGURE", required=True)
    for spec in FIGURES.values():
        text = spec.help.replace("%", "%%")  # argparse %-formats help strings
        p = sub.add_parser(spec.name, help=text, description=text)
        p.add_argument(
            "--out",
            required=True,
            help="output PNG (a vector PDF with the same stem is written beside it)",
        )
        p.add_argument("--dpi", type=int, default=DPI, help="PNG resolution (default 300)")
        spec.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    spec = FIGURES[args.figure]
    with publication_style():
        fig = spec.build(args)
    save_figure(fig, args.out, dpi=args.dpi)
    return 0
from .. import figures as _figures  # noqa: F401  (registers the map and model figures)
