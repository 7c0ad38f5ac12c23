"""Collect fine-tuning metrics into tidy tables, summaries and label-efficiency results.

Every fine-tuning run (``sarssl finetune``) writes a ``metrics.json``: a JSON list of tidy
rows, one per metric, with the columns in :data:`COLUMNS` (see ``docs/architecture.md``).
This stage

1. validates and concatenates those rows into ``finetune_metrics.csv`` (one row per run and
   metric, sorted),
2. summarises them over seeds into ``finetune_summary.csv`` (mean, sample standard deviation
   and number of seeds per task, initialisation, protocol, label fraction, regions and
   metric),
3. renders the results as Markdown and LaTeX (booktabs) tables with the best value of each
   column in bold, and
4. computes *label efficiency*: the smallest label fraction at which a pretrained
   initialisation matches the from-scratch model trained on 100 % of the labels (the
   study's "pretraining cuts label needs by more than an order of magnitude").

Conventions
-----------
* Standard deviation over seeds uses ``ddof=1`` (the unbiased sample estimate). With a
  single seed it is undefined and written as NaN (an empty CSV cell); tables then show the
  mean alone and figures draw no uncertainty band. NaN metric values (e.g. the IoU of a
  class absent from the test split) are skipped: ``n_seeds`` counts the finite values.
* Metric direction (:func:`higher_is_better`): mIoU, overall accuracy, per-class IoU and
  R\\ :sup:`2` are better when higher; RMSE and MAE (tree cover, in percentage points) are
  better when lower.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, SarsslError
from ..io import atomic_path
from ..vocabulary import PROTOCOLS, TASKS

log = logging.getLogger(__name__)

#: Columns of a tidy metrics row, in file order.
COLUMNS: tuple[str, ...] = (
    "task",
    "init",
    "protocol",
    "fraction",
    "seed",
    "pretrain_area",
    "finetune_area",
    "n_train_chips",
    "metric",
    "value",
    "epochs",
    "wall_s",
)
#: Columns that identify one run (plus ``metric``, one row).
RUN_KEYS: tuple[str, ...] = (
    "task",
    "init",
    "protocol",
    "fraction",
    "seed",
    "pretrain_area",
    "finetune_area",
)
#: Columns a summary groups by (everything that identifies a run except the seed).
GROUP_KEYS: tuple[str, ...] = (
    "task",
    "init",
    "protocol",
    "fraction",
    "pretrain_area",
    "finetune_area",
    "metric",
)
SUMMARY_COLUMNS: tuple[str, ...] = GROUP_KEYS + (
    "mean",
    "std",
    "n_seeds",
    "n_train_chips",
    "wall_s",
)

#: Initialisations without self-supervised pretraining (references, not "pretrained").
BASELINE_INITS: tuple[str, ...] = ("scratch", "unet")
#: Display order of the known initialisations; others (checkpoint names) follow by name.
INIT_ORDER: tuple[str, ...] = ("scratch", "unet", "mae", "dino")
#: Metrics of each task (``iou_<class>`` is also accepted for land cover).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "landcover": ("miou", "overall_accuracy"),
    "treecover": ("rmse", "mae", "r2"),
}
#: The headline metric of each task (learning curves, label efficiency, default tables).
PRIMARY_METRIC: dict[str, str] = {"landcover": "miou", "treecover": "rmse"}
LOWER_IS_BETTER: frozenset[str] = frozenset({"rmse", "mae"})

INIT_LABELS: dict[str, str] = {"scratch": "Scratch", "unet": "U-Net", "mae": "MAE", "dino": "DINO"}
PROTOCOL_LABELS: dict[str, str] = {"finetune": "fine-tune", "linear": "linear probe"}
TASK_LABELS: dict[str, str] = {"landcover": "Land cover", "treecover": "Tree cover"}
METRIC_LABELS: dict[str, str] = {
    "miou": "mIoU",
    "overall_accuracy": "overall accuracy",
    "rmse": "RMSE (% tree cover)",
    "mae": "MAE (% tree cover)",
    "r2": "R²",
}


# --------------------------------------------------------------------------- helpers
def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (False for the errors RMSE and MAE)."""
    return metric not in LOWER_IS_BETTER


def metric_label(metric: str) -> str:
    """Axis/table label with units, e.g. ``"RMSE (% tree cover)"`` or ``"IoU water"``."""
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    if metric.startswith("iou_"):
        return f"IoU {metric[4:]}"
    return metric


def init_label(init: str) -> str:
    return INIT_LABELS.get(init, init)


def init_sort_key(init: str) -> tuple[int, str]:
    """Baselines first, then MAE and DINO, then any other checkpoint name alphabetically."""
    return (INIT_ORDER.index(init), "") if init in INIT_ORDER else (len(INIT_ORDER), init)


def is_pretrained(init: str) -> bool:
    return init not in BASELINE_INITS


def format_fraction(fraction: float) -> str:
    """A label fraction as a percentage: 0.01 -> "1%", 0.025 -> "2.5%", 1.0 -> "100%"."""
    pct = 100.0 * float(fraction)
    return f"{pct:.3g}%"


def _valid_metric(task: str, metric: str) -> bool:
    if metric in TASK_METRICS.get(task, ()):
        return True
    return task == "landcover" and metric.startswith("iou_") and len(metric) > 4


# --------------------------------------------------------------------------- validation
def validate_rows(df: pd.DataFrame, source: str | os.PathLike) -> pd.DataFrame:
    """Check a table of tidy metric rows and return it with canonical dtypes.

    Raises :class:`InputError` naming ``source`` and the offending row/column for missing
    columns, unknown tasks/protocols/metrics, fractions outside (0, 1], negative or
    non-integer seeds/chip counts/epochs, non-numeric values, and duplicate rows.
    """
    source = str(source)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            f"{source}: missing column(s) {', '.join(missing)} (need {', '.join(COLUMNS)})"
        )
    if df.empty:
        raise InputError(f"{source}: no metric rows")
    df = df.loc[:, list(COLUMNS)].copy()

    def bad(i: int, msg: str) -> InputError:
        return InputError(f"{source}: row {i}: {msg}")

    for col in ("task", "init", "protocol", "pretrain_area", "finetune_area", "metric"):
        for i, v in enumerate(df[col]):
            if not isinstance(v, str) or not v.strip():
                raise bad(i, f"column {col!r} must be a non-empty string, got {v!r}")
    for col, allowed in (("task", TASKS), ("protocol", PROTOCOLS)):
        for i, v in enumerate(df[col]):
            if v not in allowed:
                raise bad(i, f"{col} {v!r} is not one of {', '.join(allowed)}")
    for i, (task, metric) in enumerate(zip(df["task"], df["metric"], strict=True)):
        if not _valid_metric(task, metric):
            allowed = ", ".join(TASK_METRICS[task]) + (
                ", iou_<class>" if task == "landcover" else ""
            )
            raise bad(i, f"metric {metric!r} is not a {task} metric ({allowed})")

    def numeric(
        col: str,
        *,
        integer: bool,
        lo: float | None,
        hi: float | None = None,
        allow_nan: bool = False,
        lo_open: bool = False,
    ) -> pd.Series:
        out = np.empty(len(df), dtype=float)
        for i, v in enumerate(df[col]):
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                # CSV input arrives as numbers already; strings here are real errors.
                raise bad(i, f"column {col!r} must be a number, got {v!r}")
            x = float(v)
            if math.isnan(x):
                if allow_nan:
                    out[i] = x
                    continue
                raise bad(i, f"column {col!r} is NaN")
            if math.isinf(x):
                raise bad(i, f"column {col!r} is infinite")
            if integer and x != int(x):
                raise bad(i, f"column {col!r} must be an integer, got {v!r}")
            if lo is not None and (x <= lo if lo_open else x < lo):
                raise bad(i, f"column {col!r} = {v!r} must be {'>' if lo_open else '>='} {lo:g}")
            if hi is not None and x > hi:
                raise bad(i, f"column {col!r} = {v!r} must be <= {hi:g}")
            out[i] = x
        return pd.Series(out, index=df.index)

    df["fraction"] = numeric("fraction", integer=False, lo=0.0, hi=1.0, lo_open=True)
    df["seed"] = numeric("seed", integer=True, lo=0).astype("int64")
    df["n_train_chips"] = numeric("n_train_chips", integer=True, lo=0).astype("int64")
    df["epochs"] = numeric("epochs", integer=True, lo=0).astype("int64")
    df["wall_s"] = numeric("wall_s", integer=False, lo=0.0)
    # NaN is a legitimate metric value (IoU of a class absent from the test split).
    df["value"] = numeric("value", integer=False, lo=None, allow_nan=True)
    for col in ("task", "init", "protocol", "pretrain_area", "finetune_area", "metric"):
        df[col] = df[col].astype(str)

    dup = df.duplicated(subset=list(RUN_KEYS) + ["metric"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        what = ", ".join(f"{k}={first[k]}" for k in RUN_KEYS + ("metric",))
        raise InputError(f"{source}: duplicate metric row ({what})")
    return df.reset_index(drop=True)


def load_metrics_json(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate one run's ``metrics.json`` (a JSON list of tidy row objects)."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise InputError(f"{path}: metrics file not found") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if isinstance(rows, dict) and isinstance(rows.get("rows"), list):
        rows = rows["rows"]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{path}: expected a JSON list of row objects")
    # object dtype keeps the raw JSON types so validation can reject e.g. "0.5" strings.
    df = pd.DataFrame.from_records(rows).astype(object) if rows else pd.DataFrame(columns=COLUMNS)
    df = df.where(pd.notna(df), np.nan) if not df.empty else df
    return validate_rows(df, path)


def read_metrics_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a tidy metrics table: ``finetune_metrics.csv`` or a single ``metrics.json``."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        return load_metrics_json(path)
    try:
        text_cols = ("task", "init", "protocol", "pretrain_area", "finetune_area", "metric")
        df = pd.read_csv(path, dtype={c: str for c in text_cols})
    except FileNotFoundError as exc:
        raise InputError(f"{path}: metrics table not found") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({exc})") from exc
    df = df.astype(object)
    return validate_rows(df, path)


def collect(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Validate and concatenate the metrics of many runs into one sorted tidy table."""
    if not paths:
        raise SarsslError("tables: no metrics files given")
    frames = []
    for p in paths:
        frames.append(read_metrics_table(p))
        log.debug("read %d rows from %s", len(frames[-1]), p)
    df = pd.concat(frames, ignore_index=True)
    dup = df.duplicated(subset=list(RUN_KEYS) + ["metric"], keep=False)
    if dup.any():
        first = df[dup].iloc[0]
        what = ", ".join(f"{k}={first[k]}" for k in RUN_KEYS + ("metric",))
        raise InputError(
            f"the same run appears in more than one metrics file ({what}); "
            f"files: {', '.join(map(str, paths))}"
        )
    return sort_metrics(df)


def sort_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Sort rows by task, regions, initialisation (baselines first), protocol, fraction, seed."""
    keys = [
        c
        for c in (
            "task",
            "pretrain_area",
            "finetune_area",
            "init",
            "protocol",
            "fraction",
            "seed",
            "metric",
        )
        if c in df.columns
    ]

    def key(col: pd.Series) -> pd.Series:
        if col.name == "init":
            return col.map(lambda s: f"{init_sort_key(s)[0]:02d}{init_sort_key(s)[1]}")
        if col.name == "task":
            return col.map(lambda s: f"{TASKS.index(s) if s in TASKS else 9}{s}")
        return col

    return df.sort_values(keys, key=key, kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------- summary
def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and number of seeds of each metric over seeds.

    Groups by :data:`GROUP_KEYS`. NaN values are skipped; ``std`` is NaN when fewer than two
    finite values exist (one seed). ``n_train_chips`` and ``wall_s`` are averaged over seeds
    (the chip count is the same for every seed of a nested fraction subset).
    """
    g = df.groupby(list(GROUP_KEYS), sort=False, dropna=False)
    out = g.agg(
        mean=("value", "mean"),
        std=(
            "value",
            lambda v: float(np.std(v.dropna(), ddof=1)) if v.notna().sum() > 1 else np.nan,
        ),
        n_seeds=("value", "count"),
        n_train_chips=("n_train_chips", "mean"),
        wall_s=("wall_s", "mean"),
    ).reset_index()
    out["n_seeds"] = out["n_seeds"].astype("int64")
    return sort_metrics(out.loc[:, list(SUMMARY_COLUMNS)])


# --------------------------------------------------------------------------- region pairs
def region_pairs(df: pd.DataFrame) -> list[tuple[str, str]]:
    """The (pretrain_area, finetune_area) pairs to present, in-region pairs first.

    Pairs come from the pretrained initialisations (baseline rows carry a pretrain area
    only nominally); if there are none, from all rows.
    """
    pre = df[df["init"].map(is_pretrained)]
    src = pre if not pre.empty else df
    pairs = sorted(
        {(p, f) for p, f in zip(src["pretrain_area"], src["finetune_area"], strict=True)},
        key=lambda pf: (pf[0] != pf[1], pf[0], pf[1]),
    )
    return pairs


def rows_for_pair(df: pd.DataFrame, pretrain_area: str, finetune_area: str) -> pd.DataFrame:
    """Rows belonging to the panel/table of one region pair.

    Pretrained initialisations must match both areas. Baselines (scratch, unet) never saw a
    pretraining area, so they match on the fine-tuning area; where baseline rows recorded
    the same pretrain area they are preferred, otherwise all baseline rows fine-tuned on
    ``finetune_area`` are used.
    """
    fin = df["finetune_area"] == finetune_area
    pre = df["init"].map(is_pretrained)
    parts = [df[pre & fin & (df["pretrain_area"] == pretrain_area)]]
    base = df[~pre & fin]
    for init, rows in base.groupby("init", sort=False):
        same = rows[rows["pretrain_area"] == pretrain_area]
        parts.append(same if not same.empty else rows)
    return pd.concat(parts).sort_index() if parts else df.iloc[:0]


def pair_title(pretrain_area: str, finetune_area: str) -> str:
    kind = "in-region" if pretrain_area == finetune_area else "out-of-region"
    return f"{kind}: pretrain {pretrain_area} → fine-tune {finetune_area}"


# --------------------------------------------------------------------------- label efficiency
def interpolate_crossing(
    fractions: Sequence[float], values: Sequence[float], target: float, higher_better: bool
) -> tuple[float, str]:
    """Smallest fraction at which a metric curve reaches ``target``.

    ``fractions`` ascending, ``values`` the mean metric at each. Returns ``(fraction,
    bound)`` where ``bound`` is ``"exact"`` when the crossing is interpolated linearly in
    log(fraction) between the bracketing fractions f_lo (not reached) and f_hi (reached),

        log f* = log f_lo + t (log f_hi - log f_lo),  t = (target - y_lo) / (y_hi - y_lo),

    ``"at_or_below"`` when the smallest fraction tested already reaches the target (f* is
    then an upper bound: we do not extrapolate), and ``"never"`` (NaN) when no fraction
    reaches it. NaN values are skipped.
    """
    f = np.asarray(fractions, dtype=float)
    y = np.asarray(values, dtype=float)
    ok = np.isfinite(y) & np.isfinite(f) & (f > 0)
    f, y = f[ok], y[ok]
    order = np.argsort(f)
    f, y = f[order], y[order]
    reached = y >= target if higher_better else y <= target
    if not reached.any():
        return float("nan"), "never"
    i = int(np.argmax(reached))
    if i == 0:
        return float(f[0]), "at_or_below"
    y_lo, y_hi = y[i - 1], y[i]
    t = (target - y_lo) / (y_hi - y_lo)  # y_hi reaches, y_lo does not: denominator != 0
    t = float(np.clip(t, 0.0, 1.0))
    logf = math.log(f[i - 1]) + t * (math.log(f[i]) - math.log(f[i - 1]))
    return float(math.exp(logf)), "exact"


EFFICIENCY_COLUMNS: tuple[str, ...] = (
    "task",
    "metric",
    "init",
    "protocol",
    "pretrain_area",
    "finetune_area",
    "reference_value",
    "fraction_needed",
    "bound",
    "label",
    "label_reduction",
)


def label_efficiency(
    summary: pd.DataFrame,
    metrics: dict[str, str] | None = None,
    reference_init: str = "scratch",
    reference_protocol: str = "finetune",
    reference_fraction: float = 1.0,
) -> pd.DataFrame:
    """Label fraction each pretrained initialisation needs to match scratch at 100 %.

    ``summary`` is :func:`summarise` output (or the tidy rows, which are summarised first).
    For each task (on its primary metric unless ``metrics`` maps task -> metric), region
    pair, pretrained initialisation and protocol, the mean-over-seeds curve is compared
    with the reference: ``reference_init`` trained with ``reference_protocol`` on
    ``reference_fraction`` of the labels and fine-tuned in the same area (see
    :func:`rows_for_pair` for how the baseline is matched). See
    :func:`interpolate_crossing` for the interpolation. ``label`` is the needed fraction
    as a percentage ("12.3%", "≤1%" when already matched at the smallest fraction, ">100%"
    when never matched); ``label_reduction`` = 1 / fraction_needed (how many times fewer
    labels), NaN when never matched.
    """
    if "mean" not in summary.columns:
        summary = summarise(summary)
    metrics = dict(PRIMARY_METRIC if metrics is None else metrics)
    out = []
    for task in [t for t in TASKS if t in set(summary["task"])]:
        metric = metrics.get(task)
        sub = summary[(summary["task"] == task) & (summary["metric"] == metric)]
        if sub.empty:
            continue
        hib = higher_is_better(metric)
        for pa, fa in region_pairs(sub):
            rows = rows_for_pair(sub, pa, fa)
            ref = rows[
                (rows["init"] == reference_init)
                & (rows["protocol"] == reference_protocol)
                & np.isclose(rows["fraction"], reference_fraction)
            ]
            if ref.empty:
                log.warning(
                    "label efficiency: no %s/%s run at fraction %g for %s in %s; skipped",
                    reference_init,
                    reference_protocol,
                    reference_fraction,
                    task,
                    fa,
                )
                continue
            ref_value = float(ref["mean"].mean())
            cand = rows[rows["init"].map(is_pretrained)]
            for (init, protocol), curve in cand.groupby(["init", "protocol"], sort=False):
                frac, bound = interpolate_crossing(curve["fraction"], curve["mean"], ref_value, hib)
                if bound == "never":
                    label = f">{format_fraction(curve['fraction'].max())}"
                elif bound == "at_or_below":
                    label = f"≤{format_fraction(frac)}"
                else:
                    label = format_fraction(frac)
                out.append(
                    dict(
                        task=task,
                        metric=metric,
                        init=init,
                        protocol=protocol,
                        pretrain_area=pa,
                        finetune_area=fa,
                        reference_value=ref_value,
                        fraction_needed=frac,
                        bound=bound,
                        label=label,
                        label_reduction=1.0 / frac if frac == frac else float("nan"),
                    )
                )
    df = pd.DataFrame(out, columns=list(EFFICIENCY_COLUMNS))
    return sort_metrics(df) if not df.empty else df


# --------------------------------------------------------------------------- rendering
def _decimals(metric: str) -> int:
    return 2 if metric in LOWER_IS_BETTER else 3


def _cell_text(mean: float, std: float, metric: str, pm: str) -> str:
    if not np.isfinite(mean):
        return "–"
    d = _decimals(metric)
    return f"{mean:.{d}f}" if not np.isfinite(std) else f"{mean:.{d}f}{pm}{std:.{d}f}"


def results_blocks(
    summary: pd.DataFrame, metrics: Iterable[str] | None = None
) -> list[tuple[dict[str, str], pd.DataFrame, pd.DataFrame]]:
    """Pivot the summary into one block per (task, metric, region pair).

    Each block is ``(info, mean, std)`` where ``mean``/``std`` are DataFrames indexed by
    (init, protocol) with one column per label fraction, and ``info`` holds ``task``,
    ``metric``, ``pretrain_area``, ``finetune_area``. ``metrics=None`` uses each task's
    primary metric; ``"all"`` in ``metrics`` uses every metric except per-class IoU.
    """
    metrics = list(metrics) if metrics is not None else None
    blocks = []
    for task in [t for t in TASKS if t in set(summary["task"])]:
        tsum = summary[summary["task"] == task]
        if metrics is None:
            wanted = [PRIMARY_METRIC[task]]
        elif "all" in metrics:
            wanted = [m for m in TASK_METRICS[task]]
        else:
            wanted = [m for m in metrics if _valid_metric(task, m)]
        for metric in wanted:
            sub = tsum[tsum["metric"] == metric]
            if sub.empty:
                continue
            for pa, fa in region_pairs(sub):
                rows = rows_for_pair(sub, pa, fa)
                mean = rows.pivot_table(
                    index=["init", "protocol"],
                    columns="fraction",
                    values="mean",
                    aggfunc="mean",
                    dropna=False,
                )
                std = rows.pivot_table(
                    index=["init", "protocol"],
                    columns="fraction",
                    values="std",
                    aggfunc="mean",
                    dropna=False,
                )
                # the full init x protocol product minus combinations never run (the U-Net
                # baseline has no linear probe)
                mean = mean[mean.notna().any(axis=1)]
                std = std.reindex(index=mean.index, columns=mean.columns)
                order = sorted(
                    mean.index, key=lambda ip: (init_sort_key(ip[0]), PROTOCOLS.index(ip[1]))
                )
                mean, std = mean.loc[order], std.loc[order]
                blocks.append(
                    (dict(task=task, metric=metric, pretrain_area=pa, finetune_area=fa), mean, std)
                )
    return blocks


def best_mask(mean: pd.DataFrame, metric: str) -> pd.DataFrame:
    """True where a cell holds the best mean of its column (ties all bold).

    A column needs at least two finite values to have a "best".
    """
    mask = pd.DataFrame(False, index=mean.index, columns=mean.columns)
    for col in mean.columns:
        v = mean[col].to_numpy(dtype=float)
        fin = np.isfinite(v)
        if fin.sum() < 2:
            continue
        best = np.nanmax(v) if higher_is_better(metric) else np.nanmin(v)
        mask[col] = fin & np.isclose(v, best, rtol=0, atol=1e-12)
    return mask


def render_markdown(summary: pd.DataFrame, metrics: Iterable[str] | None = None) -> str:
    """Results as GitHub-flavoured Markdown tables, best value per column in **bold**."""
    lines = [
        "# Fine-tuning results",
        "",
        "Mean ± sample std (ddof=1) over seeds; mean only for a single seed. "
        "Columns are label fractions; **bold** = best in the column.",
        "",
    ]
    for info, mean, std in results_blocks(summary, metrics):
        metric = info["metric"]
        arrow = "↑" if higher_is_better(metric) else "↓"
        lines.append(
            f"## {TASK_LABELS.get(info['task'], info['task'])} — "
            f"{metric_label(metric)} ({arrow}) — "
            f"{pair_title(info['pretrain_area'], info['finetune_area'])}"
        )
        lines.append("")
        heads = ["Init", "Protocol"] + [format_fraction(f) for f in mean.columns]
        lines.append("| " + " | ".join(heads) + " |")
        lines.append("| " + " | ".join([":--", ":--"] + ["--:"] * len(mean.columns)) + " |")
        bold = best_mask(mean, metric)
        for init, protocol in mean.index:
            cells = [init_label(init), PROTOCOL_LABELS.get(protocol, protocol)]
            for f in mean.columns:
                text = _cell_text(
                    mean.at[(init, protocol), f], std.at[(init, protocol), f], metric, " ± "
                )
                cells.append(f"**{text}**" if bold.at[(init, protocol), f] else text)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in a plain-text label."""
    repl = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "→": r"$\rightarrow$",
        "²": r"$^2$",
        "≤": r"$\leq$",
    }
    return "".join(repl.get(ch, ch) for ch in text)


def render_latex(summary: pd.DataFrame, metrics: Iterable[str] | None = None) -> str:
    """Results as LaTeX ``booktabs`` tables (``\\usepackage{booktabs}``), best in bold."""
    out = [
        "% Generated by `sarssl tables`. Requires \\usepackage{booktabs}.",
        "% Mean $\\pm$ sample std (ddof=1) over seeds; bold = best in the column.",
        "",
    ]
    for info, mean, std in results_blocks(summary, metrics):
        metric = info["metric"]
        arrow = r"$\uparrow$" if higher_is_better(metric) else r"$\downarrow$"
        ncol = len(mean.columns)
        out.append(r"\begin{table}[t]")
        out.append(r"\centering")
        caption = (
            f"{TASK_LABELS.get(info['task'], info['task'])}, "
            f"{metric_label(metric)}, "
            f"{pair_title(info['pretrain_area'], info['finetune_area'])}"
        )
        out.append(rf"\caption{{{latex_escape(caption)} ({arrow}).}}")
        out.append(rf"\begin{{tabular}}{{ll{'r' * ncol}}}")
        out.append(r"\toprule")
        out.append(rf"& & \multicolumn{{{ncol}}}{{c}}{{Label fraction}} \\")
        out.append(rf"\cmidrule(lr){{3-{2 + ncol}}}")
        out.append(
            "Init & Protocol & "
            + " & ".join(latex_escape(format_fraction(f)) for f in mean.columns)
            + r" \\"
        )
        out.append(r"\midrule")
        bold = best_mask(mean, metric)
        prev_init = None
        for init, protocol in mean.index:
            if prev_init is not None and is_pretrained(init) and not is_pretrained(prev_init):
                out.append(r"\midrule")  # separate baselines from pretrained inits
            prev_init = init
            cells = [
                latex_escape(init_label(init)),
                latex_escape(PROTOCOL_LABELS.get(protocol, protocol)),
            ]
            for f in mean.columns:
                text = _cell_text(
                    mean.at[(init, protocol), f], std.at[(init, protocol), f], metric, r" $\pm$ "
                )
                text = text.replace("–", "--")
                cells.append(rf"\textbf{{{text}}}" if bold.at[(init, protocol), f] else text)
            out.append(" & ".join(cells) + r" \\")
        out.append(r"\bottomrule")
        out.append(r"\end{tabular}")
        out.append(r"\end{table}")
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- writing
def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write a table atomically (full float precision, NaN as an empty cell)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.10g")


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "metrics",
        nargs="+",
        metavar="METRICS.json",
        help="per-run metrics.json files (or tidy metrics CSVs)",
    )
    parser.add_argument("--out", required=True, help="tidy table of every row (CSV)")
    parser.add_argument("--summary", required=True, help="mean/std/n_seeds over seeds (CSV)")
    parser.add_argument("--markdown", help="results tables as Markdown (best in bold)")
    parser.add_argument("--latex", help="results tables as LaTeX booktabs (best in bold)")
    parser.add_argument(
        "--label-efficiency",
        dest="label_efficiency",
        help="label-efficiency table (CSV): fraction of labels each "
        "pretrained init needs to match scratch at 100%%",
    )
    parser.add_argument(
        "--table-metrics",
        dest="table_metrics",
        default="primary",
        help="metrics in the Markdown/LaTeX tables: 'primary' (mIoU, RMSE), "
        "'all', or a comma list such as miou,overall_accuracy,rmse,r2",
    )


def run(args: argparse.Namespace) -> int:
    df = collect(args.metrics)
    summary = summarise(df)
    write_csv(df, args.out)
    write_csv(summary, args.summary)
    log.info(
        "%d rows from %d files -> %s; %d summary rows -> %s",
        len(df),
        len(args.metrics),
        args.out,
        len(summary),
        args.summary,
    )
    tm = (
        None
        if args.table_metrics == "primary"
        else [m.strip() for m in args.table_metrics.split(",") if m.strip()]
    )
    if args.markdown:
        write_text(render_markdown(summary, tm), args.markdown)
    if args.latex:
        write_text(render_latex(summary, tm), args.latex)
    if args.label_efficiency:
        eff = label_efficiency(summary)
        write_csv(eff, args.label_efficiency)
        log.info("label efficiency: %d rows -> %s", len(eff), args.label_efficiency)
    return 0
