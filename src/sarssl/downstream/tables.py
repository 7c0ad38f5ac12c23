"""Collect fine-tuning metrics into tidy tables, summaries with confidence intervals,
paired differences, label-efficiency and regional results.

Every fine-tuning run (``sarssl finetune``) writes a ``metrics.json`` (a JSON list of tidy
rows, one per metric, with the columns in :data:`COLUMNS`, see ``docs/architecture.md``)
and its test predictions ``predictions.npz`` beside it. This stage

1. validates and concatenates those rows into ``finetune_metrics.csv`` (one row per run and
   metric, sorted; an ``lr`` column, the learning rate chosen on validation, is kept when
   the runs record it),
2. summarises them over seeds into ``finetune_summary.csv``: mean, sample standard
   deviation, number of seeds, and the 95 % confidence interval of the mean (``ci_low``,
   ``ci_high``) from a paired bootstrap over test chips and seeds
   (:mod:`sarssl.downstream.statistics`, which reads the predictions),
3. writes each initialisation's paired difference from scratch (``--differences``), the
   label-efficiency estimate (``--label-efficiency``) and the regional claim
   (``--regional``), each with its interval, and
4. renders all of it as Markdown and LaTeX (booktabs) tables: mean [95 % CI] per cell, the
   best mean of each column in bold, the controls (per-pixel control, frozen random encoder,
   U-Net) in every table.

Conventions
-----------
* Tables show the mean over seeds and its 95 % (bias-corrected) percentile bootstrap
  interval (not the standard deviation, which with one to three seeds says little).
  ``--bootstrap 0`` skips the bootstrap (and the predictions): tables then show the mean
  alone.
* NaN metric values (e.g. the IoU of a class absent from the test split) are skipped:
  ``n_seeds`` counts the finite values; ``std`` (``ddof=1``) is NaN with one seed.
* Metric direction (:func:`higher_is_better`): mIoU, overall accuracy, per-class IoU and
  R\\ :sup:`2` are better when higher; RMSE and MAE (tree cover, in percentage points) are
  better when lower.
* Controls: ``pixel`` (per-pixel linear model), ``scratch`` under a frozen protocol
  (``linear``, ``knn``, ``decoder``: the frozen randomly initialised encoder, shown as
  "Random (frozen)") and ``unet`` (the supervised spatial baseline).
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
from . import statistics
from .statistics import DIFFERENCE_COLUMNS as DIFFERENCE_COLUMNS
from .statistics import EFFICIENCY_COLUMNS as EFFICIENCY_COLUMNS
from .statistics import LOWER_IS_BETTER as LOWER_IS_BETTER
from .statistics import REGIONAL_COLUMNS as REGIONAL_COLUMNS
from .statistics import higher_is_better as higher_is_better

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
#: Optional columns kept when present (``lr``: the learning rate selected on validation).
OPTIONAL_COLUMNS: tuple[str, ...] = ("lr",)
#: Columns that identify one run (plus ``metric``, one row).
RUN_KEYS: tuple[str, ...] = statistics.RUN_KEYS
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
    "ci_low",
    "ci_high",
    "n_seeds",
    "n_train_chips",
    "wall_s",
)

#: Initialisations without self-supervised pretraining (references and controls).
BASELINE_INITS: tuple[str, ...] = ("pixel", "scratch", "unet")
#: Display order of the known initialisations; others (checkpoint names) follow by name.
INIT_ORDER: tuple[str, ...] = ("pixel", "scratch", "unet", "mae", "dino")
#: Display order of the protocols.
PROTOCOL_ORDER: tuple[str, ...] = tuple(PROTOCOLS) + tuple(
    p for p in ("finetune", "linear", "knn", "decoder") if p not in PROTOCOLS
)
#: Metrics of each task (``iou_<class>`` is also accepted for land cover).
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "landcover": ("miou", "overall_accuracy"),
    "treecover": ("rmse", "mae", "r2"),
}
#: The headline metric of each task (learning curves, label efficiency, default tables).
PRIMARY_METRIC: dict[str, str] = {"landcover": "miou", "treecover": "rmse"}

INIT_LABELS: dict[str, str] = {
    "scratch": "Scratch",
    "unet": "U-Net",
    "mae": "MAE",
    "dino": "DINO",
    "pixel": "Per-pixel control",
}
#: Label of scratch under a frozen protocol: the frozen randomly initialised encoder.
RANDOM_FROZEN_LABEL = "Random (frozen)"
PROTOCOL_LABELS: dict[str, str] = {
    "finetune": "fine-tune",
    "linear": "linear probe",
    "knn": "k-NN probe",
    "decoder": "frozen conv decoder",
}
TASK_LABELS: dict[str, str] = {"landcover": "Land cover", "treecover": "Tree cover"}
METRIC_LABELS: dict[str, str] = {
    "miou": "mIoU",
    "overall_accuracy": "overall accuracy",
    "rmse": "RMSE (% tree cover)",
    "mae": "MAE (% tree cover)",
    "r2": "R²",
}


# --------------------------------------------------------------------------- helpers
def metric_label(metric: str) -> str:
    """Axis/table label with units, e.g. ``"RMSE (% tree cover)"`` or ``"IoU water"``."""
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    if metric.startswith("iou_"):
        return f"IoU {metric[4:]}"
    return metric


def init_label(init: str) -> str:
    return INIT_LABELS.get(init, init)


def is_random_frozen(init: str, protocol: str) -> bool:
    """Scratch under a frozen protocol: the frozen randomly initialised encoder (control)."""
    return init == "scratch" and protocol != "finetune"


def row_label(init: str, protocol: str) -> str:
    """Display name of an (init, protocol) row: "Random (frozen)" for the frozen random
    encoder, the init's label otherwise."""
    return RANDOM_FROZEN_LABEL if is_random_frozen(init, protocol) else init_label(init)


def protocol_label(protocol: str) -> str:
    return PROTOCOL_LABELS.get(protocol, protocol)


def protocol_sort_key(protocol: str) -> int:
    return PROTOCOL_ORDER.index(protocol) if protocol in PROTOCOL_ORDER else len(PROTOCOL_ORDER)


def row_sort_key(ip: tuple[str, str]) -> tuple:
    """Table/legend order: controls (per-pixel, random frozen, U-Net), scratch fine-tuning,
    then the pretrained inits, each by protocol."""
    init, protocol = ip
    control = 0 if (init in ("pixel", "unet") or is_random_frozen(init, protocol)) else 1
    return (control, init_sort_key(init), protocol_sort_key(protocol))


def init_sort_key(init: str) -> tuple[int, str]:
    """Baselines first, then MAE and DINO, then any other checkpoint name alphabetically."""
    return (INIT_ORDER.index(init), "") if init in INIT_ORDER else (len(INIT_ORDER), init)


def is_pretrained(init: str) -> bool:
    return init not in BASELINE_INITS


format_fraction = statistics.format_fraction


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
    extra = [c for c in OPTIONAL_COLUMNS if c in df.columns]
    df = df.loc[:, list(COLUMNS) + extra].copy()

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
    if "lr" in df.columns:  # null when no learning rate was selected (e.g. k-NN)
        df["lr"] = numeric("lr", integer=False, lo=0.0, allow_nan=True)
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


def read_summary_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``finetune_summary.csv`` (:data:`SUMMARY_COLUMNS`), e.g. for the figures."""
    path = Path(path)
    text_cols = ("task", "init", "protocol", "pretrain_area", "finetune_area", "metric")
    try:
        df = pd.read_csv(path, dtype={c: str for c in text_cols})
    except FileNotFoundError as exc:
        raise InputError(f"{path}: summary table not found") from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV table ({exc})") from exc
    missing = [c for c in SUMMARY_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} of a summary table")
    if df.empty:
        raise InputError(f"{path}: no summary rows")
    return df


def read_runs(paths: Sequence[str | os.PathLike]) -> list[pd.DataFrame]:
    """Validate every metrics file; one frame per file, in the order given."""
    if not paths:
        raise SarsslError("tables: no metrics files given")
    frames = []
    for p in paths:
        frames.append(read_metrics_table(p))
        log.debug("read %d rows from %s", len(frames[-1]), p)
    return frames


def concat_runs(frames: Sequence[pd.DataFrame], paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """One sorted tidy table of the frames of :func:`read_runs` (a run in two files is an
    error naming the files)."""
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


def collect(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Validate and concatenate the metrics of many runs into one sorted tidy table."""
    return concat_runs(read_runs(paths), paths)


def paired_bootstrap(
    paths: Sequence[str | os.PathLike],
    frames: Sequence[pd.DataFrame] | None = None,
    n_boot: int = statistics.DEFAULT_BOOTSTRAP,
    seed: int = 0,
    confidence: float = statistics.DEFAULT_CONFIDENCE,
) -> statistics.PairedBootstrap:
    """The :class:`~sarssl.downstream.statistics.PairedBootstrap` of the runs whose
    ``metrics.json`` files are ``paths``, reading the ``predictions.npz`` beside each.

    ``frames``: the validated rows of each file (:func:`read_runs`), read when not given.
    A file holding more than one run, a tidy CSV (no predictions beside it) or a missing
    predictions file is an :class:`InputError` naming the file. Runs whose metrics.json
    value disagrees with the value recomputed from the predictions are logged as warnings.
    """
    frames = read_runs(paths) if frames is None else frames
    keys, ids, comps = [], [], []
    for path, frame in zip(paths, frames, strict=True):
        path = Path(path)
        if path.suffix.lower() != ".json":
            raise InputError(
                f"{path}: confidence intervals need each run's metrics.json with its "
                "predictions.npz beside it (use --bootstrap 0 for a tidy CSV)"
            )
        runs = frame.loc[:, list(RUN_KEYS)].drop_duplicates()
        if len(runs) != 1:
            raise InputError(f"{path}: holds {len(runs)} runs; expected one run per file")
        run = runs.iloc[0].to_dict()
        i, c = statistics.read_predictions(path.parent / "predictions.npz", str(run["task"]))
        keys.append(dict(run, source=str(path)))
        ids.append(i)
        comps.append(c)
    boot = statistics.PairedBootstrap(
        pd.DataFrame(keys), ids, comps, n_boot=n_boot, seed=seed, confidence=confidence
    )
    for msg in statistics.check_consistency(boot, pd.concat(frames, ignore_index=True)):
        log.warning("%s", msg)
    return boot


def _task_key(col: pd.Series) -> pd.Series:
    """Sort key of a column: tasks in :data:`TASKS` order, anything else unchanged."""
    if col.name == "task":
        return col.map(lambda s: f"{TASKS.index(s) if s in TASKS else 9}{s}")
    return col


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
        if col.name == "protocol":
            return col.map(lambda s: f"{protocol_sort_key(s):02d}{s}")
        return _task_key(col)

    return df.sort_values(keys, key=key, kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------- summary
def summarise(df: pd.DataFrame, intervals: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean, sample std (ddof=1), confidence interval and number of seeds of each metric.

    Groups by :data:`GROUP_KEYS`. NaN values are skipped; ``std`` is NaN when fewer than two
    finite values exist (one seed). ``n_train_chips`` and ``wall_s`` are averaged over seeds.
    ``intervals`` (:meth:`PairedBootstrap.group_table`) supplies ``ci_low``/``ci_high``; they
    are NaN without it.
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
    if intervals is not None and not intervals.empty:
        ci = intervals.loc[:, list(GROUP_KEYS) + ["ci_low", "ci_high"]]
        out = out.merge(ci, on=list(GROUP_KEYS), how="left")
    else:
        out["ci_low"] = np.nan
        out["ci_high"] = np.nan
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
        key=lambda pf: (not in_region(*pf), pf[0], pf[1]),
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


def in_region(pretrain_area: str, finetune_area: str) -> bool:
    """Whether ``finetune_area`` is one of the encoder's pretraining areas (``a+b``)."""
    return finetune_area in statistics.pretrain_areas(pretrain_area)


def pair_title(pretrain_area: str, finetune_area: str) -> str:
    kind = "in-region" if in_region(pretrain_area, finetune_area) else "out-of-region"
    return f"{kind}: pretrain {pretrain_area} → fine-tune {finetune_area}"


# --------------------------------------------------------------------------- rendering
def _decimals(metric: str) -> int:
    return 2 if metric in LOWER_IS_BETTER else 3


def _cell_text(
    mean: float, low: float, high: float, metric: str, signed: bool = False, dash: str = "–"
) -> str:
    """``mean [low, high]`` (mean alone without an interval); ``signed``: with a + sign."""
    if not np.isfinite(mean):
        return dash
    d = _decimals(metric)
    fmt = f"{{:+.{d}f}}" if signed else f"{{:.{d}f}}"
    text = fmt.format(mean)
    if np.isfinite(low) and np.isfinite(high):
        text += f" [{fmt.format(low)}, {fmt.format(high)}]"
    return text


def _pivot(rows: pd.DataFrame, value: str) -> pd.DataFrame:
    return rows.pivot_table(
        index=["init", "protocol"], columns="fraction", values=value, aggfunc="mean", dropna=False
    )


def results_blocks(
    summary: pd.DataFrame, metrics: Iterable[str] | None = None, value: str = "mean"
) -> list[tuple[dict[str, str], pd.DataFrame, pd.DataFrame, pd.DataFrame]]:
    """Pivot a summary (or a differences table, ``value="difference"``) into one block per
    (task, metric, region pair).

    Each block is ``(info, value, ci_low, ci_high)``: DataFrames indexed by (init, protocol)
    in :func:`row_sort_key` order with one column per label fraction; ``info`` holds
    ``task``, ``metric``, ``pretrain_area``, ``finetune_area``. ``metrics=None`` uses each
    task's primary metric; ``"all"`` in ``metrics`` uses every metric except per-class IoU.
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
                mean = _pivot(rows, value)
                # the full init x protocol product minus combinations never run
                mean = mean[mean.notna().any(axis=1)]
                order = sorted(mean.index, key=row_sort_key)
                mean = mean.loc[order]
                low = _pivot(rows, "ci_low").reindex(index=mean.index, columns=mean.columns)
                high = _pivot(rows, "ci_high").reindex(index=mean.index, columns=mean.columns)
                blocks.append(
                    (
                        dict(task=task, metric=metric, pretrain_area=pa, finetune_area=fa),
                        mean,
                        low,
                        high,
                    )
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


def excludes_zero(low: pd.DataFrame, high: pd.DataFrame) -> pd.DataFrame:
    """True where an interval lies entirely above or below zero."""
    lo, hi = low.to_numpy(float), high.to_numpy(float)
    return pd.DataFrame((lo > 0) | (hi < 0), index=low.index, columns=low.columns)


def _block_title(info: dict[str, str], arrow: str) -> str:
    return (
        f"{TASK_LABELS.get(info['task'], info['task'])} — {metric_label(info['metric'])} "
        f"({arrow}) — {pair_title(info['pretrain_area'], info['finetune_area'])}"
    )


def _markdown_blocks(blocks, *, signed: bool, mark) -> list[str]:
    lines = []
    for info, mean, low, high in blocks:
        metric = info["metric"]
        lines += [f"### {_block_title(info, '↑' if higher_is_better(metric) else '↓')}", ""]
        heads = ["Init", "Protocol"] + [format_fraction(f) for f in mean.columns]
        lines.append("| " + " | ".join(heads) + " |")
        lines.append("| " + " | ".join([":--", ":--"] + ["--:"] * len(mean.columns)) + " |")
        marked = mark(mean, low, high, metric)
        for init, protocol in mean.index:
            cells = [row_label(init, protocol), protocol_label(protocol)]
            for f in mean.columns:
                ix = (init, protocol)
                text = _cell_text(mean.at[ix, f], low.at[ix, f], high.at[ix, f], metric, signed)
                cells.append(f"**{text}**" if marked.at[ix, f] else text)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _confidence_text(confidence: float) -> str:
    return f"{100 * confidence:g}%"


def render_markdown(
    summary: pd.DataFrame,
    metrics: Iterable[str] | None = None,
    differences: pd.DataFrame | None = None,
    efficiency: pd.DataFrame | None = None,
    regional: pd.DataFrame | None = None,
    confidence: float = statistics.DEFAULT_CONFIDENCE,
) -> str:
    """Results as GitHub-flavoured Markdown: mean [CI] per cell, best mean in **bold**; then
    (when given) the paired differences, the label-efficiency and the regional tables."""
    ci = _confidence_text(confidence)
    lines = [
        "# Fine-tuning results",
        "",
        f"Mean over seeds [{ci} confidence interval: paired percentile bootstrap over test "
        "chips and seeds]; the mean alone where no interval was computed. Columns are label "
        "fractions; **bold** = best mean in the column. Controls: per-pixel control (no "
        "spatial context), random (frozen) = the randomly initialised encoder, frozen, "
        "under each probe; U-Net = supervised spatial baseline.",
        "",
        "## Scores",
        "",
    ]
    lines += _markdown_blocks(
        results_blocks(summary, metrics),
        signed=False,
        mark=lambda mean, lo, hi, metric: best_mask(mean, metric),
    )
    if differences is not None and not differences.empty:
        lines += [
            "## Paired differences: init minus scratch",
            "",
            f"Same label subsets, seeds and test chips; [{ci} CI]. Each init is compared "
            "with scratch under the same protocol (the U-Net and the per-pixel control with "
            "scratch fine-tuning). **bold** = the interval excludes zero. For RMSE a "
            "negative difference is an improvement.",
            "",
        ]
        lines += _markdown_blocks(
            results_blocks(differences, metrics, value="difference"),
            signed=True,
            mark=lambda mean, lo, hi, metric: excludes_zero(lo, hi),
        )
    if efficiency is not None and not efficiency.empty:
        lines += [
            "## Label efficiency",
            "",
            "Labels an init needs to match scratch fine-tuned on 100% of the labels, from a "
            f"monotone (isotonic) fit of its curve, with a {ci} interval. *not detected*: the "
            "interval of its paired gain over scratch fine-tuning (averaged over the fractions "
            "run) includes zero; *not reached*: its fitted curve never reaches the reference.",
            "",
            "| Task | Init | Protocol | Region | Reference | Gain [CI] | Labels needed [CI] |",
            "| :-- | :-- | :-- | :-- | --: | --: | :-- |",
        ]
        for r in efficiency.itertuples(index=False):
            lines.append(
                f"| {TASK_LABELS.get(r.task, r.task)}, {metric_label(r.metric)} "
                f"| {init_label(r.init)} | {protocol_label(r.protocol)} "
                f"| {pair_title(r.pretrain_area, r.finetune_area)} "
                f"| {_cell_text(r.reference_value, np.nan, np.nan, r.metric)} "
                f"| {_cell_text(r.gain, r.gain_low, r.gain_high, r.metric, signed=True)} "
                f"| {r.label} |"
            )
        lines.append("")
    if regional is not None and not regional.empty:
        lines += [
            "## Regional claim: out-of-region minus in-region gain",
            "",
            "Paired gain over scratch (in the metric's better direction) fine-tuning outside "
            "the encoder's pretraining areas minus the gain inside them; positive = "
            f"pretraining helps more out of region. [{ci} CI]; *mean* = averaged over the "
            "label fractions.",
            "",
            "| Task | Init | Protocol | Fraction | In-region gain | Out-of-region gain "
            "| Difference [CI] | |",
            "| :-- | :-- | :-- | --: | --: | --: | --: | :-- |",
        ]
        for r in regional.itertuples(index=False):
            frac = "mean" if not np.isfinite(r.fraction) else format_fraction(r.fraction)
            lines.append(
                f"| {TASK_LABELS.get(r.task, r.task)}, {metric_label(r.metric)} "
                f"| {init_label(r.init)} | {protocol_label(r.protocol)} | {frac} "
                f"| {_cell_text(r.in_gain, np.nan, np.nan, r.metric, signed=True)} "
                f"| {_cell_text(r.out_gain, np.nan, np.nan, r.metric, signed=True)} "
                f"| {_cell_text(r.difference, r.ci_low, r.ci_high, r.metric, signed=True)} "
                f"| {r.status} |"
            )
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
        "–": "--",
    }
    return "".join(repl.get(ch, ch) for ch in text)


def _latex_blocks(blocks, *, title: str, signed: bool, mark) -> list[str]:
    out = []
    for info, mean, low, high in blocks:
        metric = info["metric"]
        arrow = r"$\uparrow$" if higher_is_better(metric) else r"$\downarrow$"
        ncol = len(mean.columns)
        caption = (
            f"{title}: {TASK_LABELS.get(info['task'], info['task'])}, {metric_label(metric)}, "
            f"{pair_title(info['pretrain_area'], info['finetune_area'])}"
        )
        out += [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{latex_escape(caption)} ({arrow}).}}",
            rf"\begin{{tabular}}{{ll{'r' * ncol}}}",
            r"\toprule",
            rf"& & \multicolumn{{{ncol}}}{{c}}{{Label fraction}} \\",
            rf"\cmidrule(lr){{3-{2 + ncol}}}",
            "Init & Protocol & "
            + " & ".join(latex_escape(format_fraction(f)) for f in mean.columns)
            + r" \\",
            r"\midrule",
        ]
        marked = mark(mean, low, high, metric)
        prev = None
        for init, protocol in mean.index:
            group = row_sort_key((init, protocol))[0]
            if prev is not None and group != prev:
                out.append(r"\midrule")  # controls, then the models
            prev = group
            cells = [
                latex_escape(row_label(init, protocol)),
                latex_escape(protocol_label(protocol)),
            ]
            for f in mean.columns:
                ix = (init, protocol)
                text = _cell_text(mean.at[ix, f], low.at[ix, f], high.at[ix, f], metric, signed)
                text = latex_escape(text)
                cells.append(rf"\textbf{{{text}}}" if marked.at[ix, f] else text)
            out.append(" & ".join(cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return out


def render_latex(
    summary: pd.DataFrame,
    metrics: Iterable[str] | None = None,
    differences: pd.DataFrame | None = None,
    confidence: float = statistics.DEFAULT_CONFIDENCE,
) -> str:
    """Results (and paired differences) as LaTeX ``booktabs`` tables, mean [CI] per cell."""
    ci = _confidence_text(confidence).replace("%", r"\%")
    out = [
        "% Generated by `sarssl tables`. Requires \\usepackage{booktabs}.",
        f"% Mean over seeds [{ci} paired bootstrap CI over test chips and seeds]; "
        "bold = best mean in the column (differences: bold = CI excludes zero).",
        "",
    ]
    out += _latex_blocks(
        results_blocks(summary, metrics),
        title="Scores",
        signed=False,
        mark=lambda mean, lo, hi, metric: best_mask(mean, metric),
    )
    if differences is not None and not differences.empty:
        out += _latex_blocks(
            results_blocks(differences, metrics, value="difference"),
            title="Init minus scratch",
            signed=True,
            mark=lambda mean, lo, hi, metric: excludes_zero(lo, hi),
        )
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
        help="per-run metrics.json files, each with its predictions.npz beside it "
        "(or tidy metrics CSVs with --bootstrap 0)",
    )
    parser.add_argument("--out", required=True, help="tidy table of every row (CSV)")
    parser.add_argument(
        "--summary", required=True, help="mean/std/CI/n_seeds over seeds per run group (CSV)"
    )
    parser.add_argument("--markdown", help="results tables as Markdown (mean [CI])")
    parser.add_argument("--latex", help="results tables as LaTeX booktabs (mean [CI])")
    parser.add_argument(
        "--label-efficiency",
        dest="label_efficiency",
        help="label-efficiency table (CSV): fraction of labels each pretrained init needs to "
        "match scratch at 100%%, with its CI, or 'not detected' / 'not reached'",
    )
    parser.add_argument(
        "--differences", help="paired differences, each init minus scratch, with CIs (CSV)"
    )
    parser.add_argument(
        "--regional", help="out-of-region minus in-region gain over scratch, with CIs (CSV)"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=statistics.DEFAULT_BOOTSTRAP,
        metavar="N",
        help="bootstrap replicates (resampling test chips and seeds; default %(default)s); "
        "0 = no intervals and no predictions read",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=statistics.DEFAULT_CONFIDENCE,
        help="coverage of the percentile intervals (default %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the bootstrap draws (default %(default)s)"
    )
    parser.add_argument(
        "--table-metrics",
        dest="table_metrics",
        default="primary",
        help="metrics in the Markdown/LaTeX tables: 'primary' (mIoU, RMSE), "
        "'all', or a comma list such as miou,overall_accuracy,rmse,r2",
    )


def run(args: argparse.Namespace) -> int:
    if args.bootstrap < 0:
        raise SarsslError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if not 0.0 < args.confidence < 1.0:
        raise SarsslError(f"--confidence must lie in (0, 1), got {args.confidence}")
    frames = read_runs(args.metrics)
    df = concat_runs(frames, args.metrics)
    tm = (
        None
        if args.table_metrics == "primary"
        else [m.strip() for m in args.table_metrics.split(",") if m.strip()]
    )
    intervals = None
    differences = pd.DataFrame(columns=list(DIFFERENCE_COLUMNS))
    efficiency = pd.DataFrame(columns=list(EFFICIENCY_COLUMNS))
    regional = pd.DataFrame(columns=list(REGIONAL_COLUMNS))
    if not args.bootstrap and (args.label_efficiency or args.differences or args.regional):
        log.warning("--bootstrap 0: no intervals; the paired tables are written empty")
    if args.bootstrap:
        boot = paired_bootstrap(
            args.metrics, frames, n_boot=args.bootstrap, seed=args.seed, confidence=args.confidence
        )
        wanted = {
            t: tuple(m for m in statistics.task_metrics(t) if m in set(df["metric"]))
            for t in set(df["task"])
        }
        intervals = boot.group_table(wanted)
        primary = {t: PRIMARY_METRIC[t] for t in TASKS}
        differences = sort_metrics(boot.differences(primary))
        efficiency = boot.label_efficiency(primary)
        if not efficiency.empty:  # in-region rows first, as in the results tables
            efficiency = sort_metrics(efficiency)
            out_region = [
                not in_region(p, f)
                for p, f in zip(efficiency["pretrain_area"], efficiency["finetune_area"])
            ]
            efficiency = (
                efficiency.assign(_out=out_region)
                .sort_values(["task", "_out"], key=_task_key, kind="mergesort")
                .drop(columns="_out")
                .reset_index(drop=True)
            )
        regional = boot.regional(primary)
        log.info(
            "bootstrap: %d replicates over test chips and seeds of %d runs (seed %d)",
            args.bootstrap,
            len(boot.runs),
            args.seed,
        )
    summary = summarise(df, intervals)
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
    if args.markdown:
        write_text(
            render_markdown(summary, tm, differences, efficiency, regional, args.confidence),
            args.markdown,
        )
    if args.latex:
        write_text(render_latex(summary, tm, differences, args.confidence), args.latex)
    if args.differences:
        write_csv(differences, args.differences)
    if args.label_efficiency:
        write_csv(efficiency, args.label_efficiency)
        log.info("label efficiency: %d rows -> %s", len(efficiency), args.label_efficiency)
    if args.regional:
        write_csv(regional, args.regional)
    return 0
