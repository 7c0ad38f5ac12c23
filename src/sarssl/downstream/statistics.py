"""Uncertainty of the fine-tuning results: paired bootstrap confidence intervals.

This module owns the statistics behind every number the results tables and figures show
with an interval: the mean of a run group over seeds, each initialisation's paired
difference from the from-scratch model, the label-efficiency estimate and the regional
claim. It reads nothing itself: :mod:`sarssl.downstream.tables` hands it one row per
fine-tuning run (the run's keys) and the run's test predictions (``predictions.npz``).

Per-chip score components
-------------------------
A test metric is a function of sums over test chips, so each run is reduced once to one
vector of additive *components* per test chip (:func:`chip_components`):

* land cover: the chip's confusion matrix (11 x 11 counts, rows = target, columns =
  prediction, pixels labelled ``IGNORE_INDEX`` left out). The mIoU of any multiset of
  chips is the mIoU of their summed confusion, with the same rule as
  :mod:`sarssl.downstream.evaluation` (a class absent from both target and prediction has
  no IoU and is left out of the mean);
* tree cover: per chip ``(valid, squared error, absolute error, target, target²)`` of the
  chip-mean tree cover, so RMSE, MAE and R² of any multiset of chips follow from sums.

The full-sample metric (every test chip once) is exactly the run's ``metrics.json`` value.

What is resampled
-----------------
Every run of one (task, fine-tuning area, fraction, seed) is trained on the same label
subset and scored on the same test chips, so runs are compared *paired*. One bootstrap
replicate draws

1. the test chips of each fine-tuning area with replacement (multinomial chip weights,
   one draw per area shared by every run scored there), and
2. when more than one seed was run, the seeds with replacement (one draw per task, shared
   by every area, fraction and initialisation).

A run group's replicate value is the mean over the drawn seeds of the metric of the
weighted chips; a paired difference is computed seed by seed on the same weighted chips
and then averaged over the drawn seeds, so the chip-to-chip and subset-to-subset
variation shared by two initialisations cancels. The draws depend only on the seeds and
the number of test chips of each area (and on ``seed``), not on which inits are present:
adding a run does not change the other intervals.

Why (bias-corrected) percentile intervals
-----------------------------------------
The 95 % interval is read off the percentiles of the replicate values. mIoU is a ratio of
sums over the classes present and RMSE a square root; at the demo's 30-odd test chips their
sampling distributions are skewed and the estimates biased, and a percentile interval
follows the skew without a normal approximation (and is invariant to monotone transforms
such as RMSE vs MSE). The plain percentile interval does not correct the bias, and for
mIoU on chips dominated by one class each the bias is large: on synthetic data of that kind
(``tests/test_statistics.py``) its 95 % interval covered the true mIoU in 76 % of 200
experiments. The intervals here are therefore *bias-corrected* percentile intervals (BC,
Efron 1981): the percentiles are taken at ``Phi(2 z0 -+ 1.96)`` instead of 2.5 / 97.5, where
``z0 = Phi^-1(share of replicates below the estimate)`` measures the bootstrap's own bias;
the same experiments then cover at 93.5 %, within the binomial tolerance of 95 %. The
label-efficiency fraction uses the plain percentiles (its replicates pile up at the
smallest fraction and at "never reached").

The intervals treat test chips and seeds as exchangeable samples; they do not account for
chips being spatially correlated within a test band, and resampling only a few seeds (a
bootstrap of S values keeps (S - 1) / S of their variance) understates the seed-to-seed
spread, so intervals are, if anything, too narrow. With one seed only the chips are
resampled: the interval then says nothing about which label subset was drawn.

Label efficiency and "not detected"
-----------------------------------
The estimate (:meth:`PairedBootstrap.label_efficiency`) is the label fraction at which
an initialisation's curve reaches the score of scratch fine-tuned on 100 % of the labels.
The curve is first made monotone in the label fraction (isotonic regression of the mean
score against log fraction, :func:`isotonic_increasing`, so noise such as scratch at 25 %
scoring above scratch at 100 % cannot manufacture a crossing), then interpolated linearly
in log fraction; the same is done in every bootstrap replicate, which gives the interval.
The decision comes first, from the *paired gain* of the initialisation over scratch
fine-tuning (metric difference in the better direction, averaged over the label fractions
run):

* ``not detected``: the gain's interval includes zero (or lies below it): the data do not
  show that this initialisation needs fewer labels, whatever the crossing says;
* ``not reached``: the gain is detected but the monotone curve never reaches the reference
  within the fractions run (the saving, if any, is not measurable here);
* ``detected``: otherwise; the fraction and its interval are reported (an interval end
  below the smallest fraction run is shown as "≤" that fraction, one that never reaches it
  as ">" the largest).

The regional claim (:meth:`PairedBootstrap.regional`) is the paired gain fine-tuning
outside the encoder's pretraining areas minus the gain inside them (``pretrain_area`` holds
the pretraining areas joined by ``+``), with its interval, per label fraction and averaged
over fractions; ``detected`` when the interval excludes zero.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from ..errors import InputError
from ..vocabulary import IGNORE_INDEX, N_LANDCOVER_CLASSES, WORLDCOVER_NAMES

log = logging.getLogger(__name__)

#: Metrics that are better when lower (errors in tree-cover percentage points).
LOWER_IS_BETTER: frozenset[str] = frozenset({"rmse", "mae"})
#: Columns that identify one run.
RUN_KEYS: tuple[str, ...] = (
    "task",
    "init",
    "protocol",
    "fraction",
    "seed",
    "pretrain_area",
    "finetune_area",
)
#: Columns of a run group (every run key but the seed).
GROUP_KEYS: tuple[str, ...] = tuple(k for k in RUN_KEYS if k != "seed")
#: The from-scratch reference and its full fine-tuning protocol.
SCRATCH = "scratch"
FINETUNE = "finetune"
#: Controls trained end to end or without an encoder: compared with scratch fine-tuning.
FINETUNE_REFERENCE_INITS: frozenset[str] = frozenset({"unet", "pixel"})
#: Initialisations that are not a pretrained encoder (no label-efficiency or regional row).
NOT_PRETRAINED: frozenset[str] = frozenset({"scratch", "unet", "pixel"})
#: ``pretrain_area`` values that name no pretraining area.
NO_AREA: frozenset[str] = frozenset({"none", "external", ""})

DEFAULT_BOOTSTRAP = 1000
DEFAULT_CONFIDENCE = 0.95
_TREE_COMPONENTS = ("valid", "se", "ae", "t", "t2")


def higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (False for the errors RMSE and MAE)."""
    return metric not in LOWER_IS_BETTER


# --------------------------------------------------------------------------- components
def chip_components(task: str, pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Additive per-chip score components, ``(N, K)`` float64 (see the module docstring).

    Land cover: ``pred``/``target`` class maps ``(N, H, W)`` (target ``IGNORE_INDEX`` =
    unlabelled); K = 11 x 11 confusion counts, row-major (target, prediction). Tree cover:
    ``pred``/``target`` chip means ``(N,)``; K = 5 (valid, squared error, absolute error,
    target, target²), zero for a chip whose target is NaN.
    """
    if task == "landcover":
        c = N_LANDCOVER_CLASSES
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.shape != target.shape or pred.ndim != 3:
            raise ValueError(
                f"land-cover predictions and targets must be (N, H, W) of one shape, "
                f"got {pred.shape} and {target.shape}"
            )
        n = pred.shape[0]
        t = target.reshape(n, -1).astype(np.int64)
        p = pred.reshape(n, -1).astype(np.int64)
        ok = t != IGNORE_INDEX
        if np.any((t[ok] < 0) | (t[ok] >= c)) or np.any(((p < 0) | (p >= c)) & ok):
            raise ValueError(f"land-cover classes must lie in 0..{c - 1} (or {IGNORE_INDEX})")
        chip = np.broadcast_to(np.arange(n)[:, None], t.shape)
        flat = (chip * c + t) * c + p
        counts = np.bincount(flat[ok], minlength=n * c * c)
        return counts.reshape(n, c * c).astype(np.float64)
    if task == "treecover":
        p = np.asarray(pred, dtype=np.float64).reshape(-1)
        t = np.asarray(target, dtype=np.float64).reshape(-1)
        if p.shape != t.shape:
            raise ValueError(
                f"tree-cover predictions and targets differ in length: {p.size} vs {t.size}"
            )
        ok = np.isfinite(t) & np.isfinite(p)
        e = np.where(ok, p - t, 0.0)
        t0 = np.where(ok, t, 0.0)
        return np.stack([ok.astype(np.float64), e * e, np.abs(e), t0, t0 * t0], axis=1)
    raise ValueError(f"unknown task {task!r}")


def task_metrics(task: str) -> tuple[str, ...]:
    """Metrics computable from the components of ``task``."""
    if task == "landcover":
        return ("miou", "overall_accuracy") + tuple(f"iou_{n}" for n in WORLDCOVER_NAMES)
    return ("rmse", "mae", "r2")


def metric_from_components(task: str, metric: str, sums: np.ndarray) -> np.ndarray:
    """The metric of summed components ``sums`` (``(..., K)``) -> ``(...)``; NaN if undefined."""
    sums = np.asarray(sums, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if task == "landcover":
            c = N_LANDCOVER_CLASSES
            cm = sums.reshape(sums.shape[:-1] + (c, c))
            tp = np.diagonal(cm, axis1=-2, axis2=-1)
            support = cm.sum(-1) + cm.sum(-2) - tp
            iou = np.where(support > 0, tp / np.where(support > 0, support, 1.0), np.nan)
            if metric == "miou":
                present = support > 0
                n = present.sum(-1)
                return np.where(
                    n > 0, np.where(present, iou, 0.0).sum(-1) / np.maximum(n, 1), np.nan
                )
            if metric == "overall_accuracy":
                total = cm.sum((-2, -1))
                return np.where(total > 0, tp.sum(-1) / np.where(total > 0, total, 1.0), np.nan)
            if metric.startswith("iou_") and metric[4:] in WORLDCOVER_NAMES:
                return iou[..., WORLDCOVER_NAMES.index(metric[4:])]
        elif task == "treecover":
            n, se, ae, t, t2 = (sums[..., i] for i in range(len(_TREE_COMPONENTS)))
            ok = n > 0
            nn = np.where(ok, n, 1.0)
            if metric == "rmse":
                return np.where(ok, np.sqrt(se / nn), np.nan)
            if metric == "mae":
                return np.where(ok, ae / nn, np.nan)
            if metric == "r2":
                sst = t2 - t * t / nn
                good = (n > 1) & (sst > 1e-12 * np.maximum(t2, 1.0))
                return np.where(good, 1.0 - se / np.where(good, sst, 1.0), np.nan)
    raise ValueError(f"metric {metric!r} cannot be computed for task {task!r}")


def read_predictions(path: str | Path, task: str) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, components)`` of one run's ``predictions.npz`` (see :func:`chip_components`).

    Raises :class:`InputError` naming the file when it is missing, unreadable or malformed.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("ids", "pred", "target") if k not in z.files]
            if missing:
                raise InputError(f"{path}: missing array(s) {', '.join(missing)}")
            ids = np.asarray(z["ids"]).astype(str)
            pred, target = z["pred"], z["target"]
    except FileNotFoundError as exc:
        raise InputError(
            f"{path}: predictions file not found (every metrics.json needs its "
            "predictions.npz beside it for the confidence intervals)"
        ) from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable predictions.npz ({exc})") from exc
    if len(ids) != len(pred) or len(ids) == 0:
        raise InputError(f"{path}: {len(ids)} ids for {len(pred)} predictions")
    if len(set(ids.tolist())) != len(ids):
        raise InputError(f"{path}: duplicate test chip ids")
    try:
        comps = chip_components(task, pred, target)
    except ValueError as exc:
        raise InputError(f"{path}: {exc}") from exc
    return ids, comps


# --------------------------------------------------------------------------- helpers
def isotonic_increasing(y: np.ndarray) -> np.ndarray:
    """Least-squares non-decreasing fit of each row of ``y`` (``(..., k)``, equal weights).

    Uses the min-max characterisation of isotonic regression,
    ``fit_i = max_{j<=i} min_{l>=i} mean(y_j..y_l)``: exact, and vectorised over the
    leading axes (k, the number of label fractions, is small).
    """
    y = np.asarray(y, dtype=np.float64)
    k = y.shape[-1]
    csum = np.concatenate([np.zeros(y.shape[:-1] + (1,)), np.cumsum(y, axis=-1)], axis=-1)
    j = np.arange(k)[:, None]
    ell = np.arange(k)[None, :]
    length = np.where(ell >= j, ell - j + 1, 1)
    means = (csum[..., None, 1:] - csum[..., :-1, None]) / length  # [..., j, l]
    means = np.where(ell >= j, means, np.nan)
    out = np.empty_like(y)
    for i in range(k):
        inner = np.nanmin(means[..., : i + 1, i:], axis=-1)  # min over l >= i, per j <= i
        out[..., i] = inner.max(axis=-1)
    return out


def crossing_fraction(
    fractions: np.ndarray, fitted: np.ndarray, target: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Where non-decreasing curves first reach ``target`` (linear in log fraction).

    ``fitted`` ``(B, k)`` at sorted ``fractions`` ``(k,)``, ``target`` ``(B,)``. Returns the
    fraction (``inf`` where never reached) and a code: 0 = interpolated, 1 = reached at the
    smallest fraction already (the value is then an upper bound), 2 = never reached.
    """
    f = np.asarray(fractions, dtype=np.float64)
    fitted = np.atleast_2d(fitted)
    target = np.asarray(target, dtype=np.float64).reshape(-1)
    reached = fitted >= target[:, None] - 1e-12
    anyr = reached.any(axis=1)
    i = np.argmax(reached, axis=1)
    out = np.full(len(target), np.inf)
    code = np.full(len(target), 2, dtype=np.int64)
    first = anyr & (i == 0)
    out[first], code[first] = f[0], 1
    mid = anyr & (i > 0)
    if mid.any():
        im = i[mid]
        rows = np.nonzero(mid)[0]
        y0, y1 = fitted[rows, im - 1], fitted[rows, im]
        t = np.clip((target[mid] - y0) / np.where(y1 > y0, y1 - y0, 1.0), 0.0, 1.0)
        lf = np.log(f[im - 1]) + t * (np.log(f[im]) - np.log(f[im - 1]))
        out[mid], code[mid] = np.exp(lf), 0
    return out, code


def format_fraction(fraction: float) -> str:
    """A label fraction as a percentage: 0.01 -> "1%", 0.025 -> "2.5%", 1.0 -> "100%"."""
    return f"{100.0 * float(fraction):.3g}%"


def reference_protocol(init: str, protocol: str) -> str:
    """The scratch protocol an init is compared with: the same one, except that the U-Net
    and the per-pixel control (no frozen-encoder variant) are compared with fine-tuning."""
    return FINETUNE if init in FINETUNE_REFERENCE_INITS else protocol


def pretrain_areas(pretrain_area: str) -> list[str]:
    """The pretraining areas of a ``pretrain_area`` value (``"a+b"`` -> [a, b]; none -> [])."""
    if pretrain_area in NO_AREA:
        return []
    return [a for a in str(pretrain_area).split("+") if a]


# --------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class Interval:
    """A point estimate with its percentile interval and the replicate values."""

    estimate: float
    low: float
    high: float
    replicates: np.ndarray


class PairedBootstrap:
    """Paired bootstrap over test chips and seeds of a set of fine-tuning runs.

    ``runs``: one row per run with the :data:`RUN_KEYS` columns (and optionally
    ``source``, the metrics file, used in error messages); ``ids`` and ``components``: per
    run, the test chip ids and the :func:`chip_components` of its predictions, in the same
    order as ``runs``. Every run of one (task, fine-tuning area) must be scored on the same
    test chips (any order). ``n_boot`` replicates, drawn from ``numpy.random.default_rng
    (seed)``; intervals cover ``confidence``.
    """

    def __init__(
        self,
        runs: pd.DataFrame,
        ids: Sequence[np.ndarray],
        components: Sequence[np.ndarray],
        n_boot: int = DEFAULT_BOOTSTRAP,
        seed: int = 0,
        confidence: float = DEFAULT_CONFIDENCE,
    ) -> None:
        if not len(runs) == len(ids) == len(components):
            raise ValueError("runs, ids and components must have one entry per run")
        if n_boot < 1:
            raise ValueError(f"n_boot must be >= 1, got {n_boot}")
        if not 0.0 < confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
        self.runs = runs.reset_index(drop=True).copy()
        if "source" not in self.runs.columns:
            self.runs["source"] = [f"run {i}" for i in range(len(self.runs))]
        self.n_boot = int(n_boot)
        self.confidence = float(confidence)
        self.seed = int(seed)
        self._comps: list[np.ndarray] = []
        self._weights: dict[tuple[str, str], np.ndarray] = {}
        self._seed_counts: dict[str, np.ndarray] = {}
        self._seeds: dict[str, list[int]] = {}
        self._cache: dict[tuple[int, str], tuple[float, np.ndarray]] = {}
        self._align(ids, components)
        self._draw()
        self._index = {
            tuple(r[k] for k in RUN_KEYS): i
            for i, r in enumerate(self.runs[list(RUN_KEYS)].to_dict("records"))
        }
        if len(self._index) != len(self.runs):
            raise InputError("the same run is given twice")
        self._scratch: dict[tuple, list[dict[str, object]]] = {}
        for g in self.groups():
            if g["init"] == SCRATCH:
                key = (g["task"], g["protocol"], g["finetune_area"], round(float(g["fraction"]), 9))
                self._scratch.setdefault(key, []).append(g)

    # ------------------------------------------------------------------ set-up
    def _align(self, ids: Sequence[np.ndarray], components: Sequence[np.ndarray]) -> None:
        """Put every run's chips in one canonical order per (task, fine-tuning area)."""
        order: dict[tuple[str, str], tuple[np.ndarray, str]] = {}
        for i, r in self.runs.iterrows():
            key = (r["task"], r["finetune_area"])
            rid = np.asarray(ids[i]).astype(str)
            comp = np.asarray(components[i], dtype=np.float64)
            if comp.shape[0] != len(rid):
                raise InputError(f"{r['source']}: {len(rid)} chip ids for {comp.shape[0]} chips")
            if key not in order:
                order[key] = (np.sort(rid), str(r["source"]))
            canon, first = order[key]
            pos = np.argsort(rid)
            if len(rid) != len(canon) or not np.array_equal(rid[pos], canon):
                raise InputError(
                    f"{r['source']}: its test chips differ from those of {first} "
                    f"({key[0]} in {key[1]}); every run of an area must be scored on the "
                    "same test chips"
                )
            self._comps.append(comp[pos])
        self._n_chips = {k: len(v[0]) for k, v in order.items()}

    def _draw(self) -> None:
        """Seed and chip draws (see the module docstring), in a fixed order."""
        rng = np.random.default_rng(self.seed)
        b = self.n_boot
        for task in sorted(set(self.runs["task"])):
            seeds = sorted({int(s) for s in self.runs.loc[self.runs["task"] == task, "seed"]})
            self._seeds[task] = seeds
            s = len(seeds)
            if s > 1:
                idx = rng.integers(0, s, size=(b, s))
                counts = np.zeros((b, s))
                np.add.at(counts, (np.arange(b)[:, None], idx), 1.0)
            else:
                counts = np.ones((b, 1))
            self._seed_counts[task] = counts
            for area in sorted(set(self.runs.loc[self.runs["task"] == task, "finetune_area"])):
                n = self._n_chips[(task, area)]
                self._weights[(task, area)] = rng.multinomial(
                    n, np.full(n, 1.0 / n), size=b
                ).astype(np.float64)

    @property
    def quantiles(self) -> tuple[float, float]:
        a = (1.0 - self.confidence) / 2.0
        return a, 1.0 - a

    def _ci(self, reps: np.ndarray, estimate: float | None = None) -> tuple[float, float]:
        """Percentile interval of ``reps``; bias-corrected (BC) around ``estimate`` when
        given: the percentiles are taken at ``Phi(2 z0 +- z)`` with ``z0 =
        Phi^-1(share of replicates below the estimate)``."""
        reps = reps[np.isfinite(reps)]
        if reps.size == 0:
            return float("nan"), float("nan")
        q = np.asarray(self.quantiles)
        if estimate is not None and np.isfinite(estimate):
            share = (np.sum(reps < estimate) + 0.5 * np.sum(reps == estimate)) / reps.size
            share = min(max(share, 0.5 / reps.size), 1.0 - 0.5 / reps.size)
            nd = NormalDist()
            z0 = nd.inv_cdf(share)
            q = np.array([nd.cdf(2.0 * z0 + nd.inv_cdf(a)) for a in q])
        lo, hi = np.quantile(reps, q)
        return float(lo), float(hi)

    # ------------------------------------------------------------------ per run
    def run_index(self, run: dict[str, object]) -> int | None:
        """Position of the run with these :data:`RUN_KEYS` values (None if absent)."""
        return self._index.get(tuple(run[k] for k in RUN_KEYS))

    def run_values(self, i: int, metric: str) -> tuple[float, np.ndarray]:
        """Full-sample value and ``(B,)`` replicate values of run ``i``'s ``metric``."""
        key = (i, metric)
        if key not in self._cache:
            r = self.runs.iloc[i]
            comp = self._comps[i]
            w = self._weights[(r["task"], r["finetune_area"])]
            point = float(metric_from_components(r["task"], metric, comp.sum(0)))
            reps = metric_from_components(r["task"], metric, np.einsum("bn,nk->bk", w, comp))
            self._cache[key] = (point, reps)
        return self._cache[key]

    def _seed_matrix(
        self, task: str, group: dict[str, object], metric: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per task seed: full-sample value ``(S,)`` and replicates ``(S, B)`` (NaN = no run)."""
        seeds = self._seeds[task]
        point = np.full(len(seeds), np.nan)
        reps = np.full((len(seeds), self.n_boot), np.nan)
        for j, s in enumerate(seeds):
            i = self._index.get(tuple(group[k] if k != "seed" else s for k in RUN_KEYS))
            if i is not None:
                point[j], reps[j] = self.run_values(i, metric)
        return point, reps

    def _seed_mean(self, task: str, point: np.ndarray, reps: np.ndarray) -> Interval:
        """Mean over seeds: of the full-sample values, and of the drawn seeds per replicate."""
        counts = self._seed_counts[task]  # (B, S)
        fin = np.isfinite(reps).T  # (B, S)
        num = (counts * np.where(fin, reps.T, 0.0)).sum(1)
        den = (counts * fin).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rep = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        est = float(np.nanmean(point)) if np.isfinite(point).any() else float("nan")
        lo, hi = self._ci(rep, est)
        return Interval(est, lo, hi, rep)

    # ------------------------------------------------------------------ groups
    def groups(self) -> list[dict[str, object]]:
        """The run groups (:data:`GROUP_KEYS` values), in input order."""
        g = self.runs[list(GROUP_KEYS)].drop_duplicates()
        return g.to_dict("records")

    def group_interval(self, group: dict[str, object], metric: str) -> Interval:
        """Mean over seeds of a run group's metric, with its interval."""
        point, reps = self._seed_matrix(str(group["task"]), group, metric)
        return self._seed_mean(str(group["task"]), point, reps)

    def group_table(self, metrics: dict[str, Iterable[str]] | None = None) -> pd.DataFrame:
        """One row per run group and metric: GROUP_KEYS, metric, mean, ci_low, ci_high,
        n_seeds, n_chips. ``metrics`` maps task -> metrics (default: every computable one)."""
        rows = []
        for g in self.groups():
            task = str(g["task"])
            wanted = task_metrics(task) if metrics is None else tuple(metrics.get(task, ()))
            for m in wanted:
                point, reps = self._seed_matrix(task, g, m)
                iv = self._seed_mean(task, point, reps)
                n_seeds = int(np.isfinite(point).sum())
                rows.append(
                    dict(
                        g,
                        metric=m,
                        mean=iv.estimate,
                        ci_low=iv.low,
                        ci_high=iv.high,
                        n_seeds=n_seeds,
                        n_chips=self._n_chips[(task, str(g["finetune_area"]))],
                    )
                )
        cols = list(GROUP_KEYS) + ["metric", "mean", "ci_low", "ci_high", "n_seeds", "n_chips"]
        return pd.DataFrame(rows, columns=cols)

    # ------------------------------------------------------------------ paired differences
    def reference_group(
        self, group: dict[str, object], protocol: str | None = None
    ) -> dict[str, object] | None:
        """The scratch group a group is compared with (same task, area, fraction; the
        protocol of :func:`reference_protocol` unless ``protocol`` is given), or None when
        it was not run."""
        prot = protocol or reference_protocol(str(group["init"]), str(group["protocol"]))
        key = (group["task"], prot, group["finetune_area"], round(float(group["fraction"]), 9))
        cands = self._scratch.get(key)
        if not cands:
            return None
        same = [c for c in cands if c["pretrain_area"] == group["pretrain_area"]]
        return dict((same or cands)[0])

    def paired(
        self, group: dict[str, object], ref: dict[str, object], metric: str, gain: bool = False
    ) -> tuple[Interval, int]:
        """``group`` minus ``ref`` paired seed by seed on the same chips (``gain=True``: in
        the better direction of ``metric``); returns the interval and the paired seeds."""
        task = str(group["task"])
        pa, ra = self._seed_matrix(task, group, metric)
        pb, rb = self._seed_matrix(task, ref, metric)
        sign = 1.0 if (not gain or higher_is_better(metric)) else -1.0
        n = int((np.isfinite(pa) & np.isfinite(pb)).sum())
        return self._seed_mean(task, sign * (pa - pb), sign * (ra - rb)), n

    def differences(self, metrics: dict[str, str]) -> pd.DataFrame:
        """Each init's paired difference minus scratch (``metrics``: task -> metric)."""
        rows = []
        for g in self.groups():
            task, init = str(g["task"]), str(g["init"])
            if init == SCRATCH or task not in metrics:
                continue
            ref = self.reference_group(g)
            if ref is None:
                log.warning("no scratch/%s run to compare %s with", g["protocol"], g)
                continue
            metric = metrics[task]
            iv, n = self.paired(g, ref, metric)
            rows.append(
                dict(
                    g,
                    metric=metric,
                    reference=f"{SCRATCH}/{ref['protocol']}",
                    difference=iv.estimate,
                    ci_low=iv.low,
                    ci_high=iv.high,
                    n_seeds=n,
                    verdict=self._verdict(iv, higher_is_better(metric)),
                )
            )
        return pd.DataFrame(rows, columns=list(DIFFERENCE_COLUMNS))

    @staticmethod
    def _verdict(iv: Interval, higher_better: bool) -> str:
        """Better or worse when the interval of a difference excludes zero, else not detected."""
        if not (np.isfinite(iv.low) and np.isfinite(iv.high)):
            return "not detected"
        if iv.low > 0:
            return "better" if higher_better else "worse"
        if iv.high < 0:
            return "worse" if higher_better else "better"
        return "not detected"

    # ------------------------------------------------------------------ label efficiency
    def label_efficiency(
        self, metrics: dict[str, str], reference_fraction: float = 1.0
    ) -> pd.DataFrame:
        """Labels each pretrained init needs to match scratch fine-tuned on 100 % (see the
        module docstring): one row per (task, region pair, init, protocol)."""
        rows = []
        groups = pd.DataFrame(self.groups())
        for keys, sub in groups.groupby(
            ["task", "init", "protocol", "pretrain_area", "finetune_area"], sort=False
        ):
            task, init, protocol, pa, fa = (str(k) for k in keys)
            if init in NOT_PRETRAINED or task not in metrics:
                continue
            metric = metrics[task]
            hib = higher_is_better(metric)
            sign = 1.0 if hib else -1.0
            ref_g = self.reference_group(
                dict(sub.iloc[0], fraction=reference_fraction), protocol=FINETUNE
            )
            if ref_g is None:
                log.warning(
                    "label efficiency: no scratch/finetune run at %s for %s in %s; skipped",
                    format_fraction(reference_fraction),
                    task,
                    fa,
                )
                continue
            ref = self.group_interval(ref_g, metric)
            fr = np.sort(sub["fraction"].astype(float).unique())
            curve = [self.group_interval(dict(sub.iloc[0], fraction=f), metric) for f in fr]
            est = np.array([c.estimate for c in curve])
            keep = np.isfinite(est)
            fr, curve = fr[keep], [c for c, k in zip(curve, keep, strict=True) if k]
            if fr.size == 0:
                continue
            y_pt = sign * np.array([c.estimate for c in curve])[None, :]
            y_bt = sign * np.stack([c.replicates for c in curve], axis=1)
            f_pt, code = crossing_fraction(fr, isotonic_increasing(y_pt), [sign * ref.estimate])
            ok = np.isfinite(y_bt).all(axis=1) & np.isfinite(ref.replicates)
            f_bt, _ = crossing_fraction(
                fr, isotonic_increasing(y_bt[ok]), sign * ref.replicates[ok]
            )
            # detection: the paired gain over scratch fine-tuning, averaged over the fractions
            gains = []
            for f in fr:
                g = dict(sub.iloc[0], fraction=f)
                rg = self.reference_group(g, protocol=FINETUNE)
                if rg is not None:
                    gains.append(self.paired(g, rg, metric, gain=True)[0])
            if gains:
                gain_pt = float(np.mean([g.estimate for g in gains]))
                gain_rep = np.mean(np.stack([g.replicates for g in gains]), axis=0)
                g_lo, g_hi = self._ci(gain_rep, gain_pt)
            else:
                gain_pt, g_lo, g_hi = float("nan"), float("nan"), float("nan")
            frac = float(f_pt[0])
            bound = ("exact", "at_or_below", "never")[int(code[0])]
            if f_bt.size:
                # a replicate that never reaches the reference counts as "beyond the largest
                # fraction" (finite stand-in, mapped back to inf) so quantiles stay defined
                beyond = 10.0 * float(fr.max())
                qs = np.quantile(np.where(np.isfinite(f_bt), f_bt, beyond), self.quantiles)
                lo, hi = (float(q) if q <= fr.max() * (1 + 1e-9) else np.inf for q in qs)
            else:
                lo, hi = float("nan"), float("nan")
            if not (np.isfinite(g_lo) and g_lo > 0):
                status = "not detected"
            elif bound == "never":
                status = "not reached"
            else:
                status = "detected"
            rows.append(
                dict(
                    task=task,
                    metric=metric,
                    init=init,
                    protocol=protocol,
                    pretrain_area=pa,
                    finetune_area=fa,
                    reference_value=ref.estimate,
                    fraction_needed=frac if np.isfinite(frac) else float("nan"),
                    ci_low=lo,
                    ci_high=hi,
                    bound=bound,
                    gain=gain_pt,
                    gain_low=g_lo,
                    gain_high=g_hi,
                    status=status,
                    label=self._efficiency_label(status, frac, bound, lo, hi, fr),
                    label_reduction=(
                        1.0 / frac if status == "detected" and np.isfinite(frac) else float("nan")
                    ),
                )
            )
        return pd.DataFrame(rows, columns=list(EFFICIENCY_COLUMNS))

    @staticmethod
    def _efficiency_label(
        status: str, frac: float, bound: str, lo: float, hi: float, fr: np.ndarray
    ) -> str:
        if status == "not reached":
            return f"not reached (>{format_fraction(fr.max())})"
        if status == "not detected":
            return "not detected"

        def end(v: float) -> str:
            if not np.isfinite(v):
                return f">{format_fraction(fr.max())}"
            if v <= fr.min() * (1 + 1e-9):
                return f"≤{format_fraction(fr.min())}"
            return format_fraction(v)

        est = f"≤{format_fraction(frac)}" if bound == "at_or_below" else format_fraction(frac)
        return f"{est} [{end(lo)}, {end(hi)}]"

    # ------------------------------------------------------------------ regional claim
    def regional(self, metrics: dict[str, str]) -> pd.DataFrame:
        """Out-of-region minus in-region paired gain over scratch, per (task, init,
        protocol, pretraining areas) and label fraction, plus the mean over fractions
        (``fraction`` NaN)."""
        rows = []
        groups = pd.DataFrame(self.groups())
        if groups.empty:
            return pd.DataFrame(columns=list(REGIONAL_COLUMNS))
        for keys, sub in groups.groupby(["task", "init", "protocol", "pretrain_area"], sort=False):
            task, init, protocol, pa = (str(k) for k in keys)
            areas = pretrain_areas(pa)
            if init in NOT_PRETRAINED or task not in metrics or not areas:
                continue
            metric = metrics[task]
            fin = sorted({str(a) for a in sub["finetune_area"] if a in areas})
            fout = sorted({str(a) for a in sub["finetune_area"] if a not in areas})
            if not fin or not fout:
                continue
            per_fraction = []
            for f in np.sort(sub["fraction"].astype(float).unique()):

                def region_gain(region: list[str], f: float = f) -> Interval | None:
                    ivs = []
                    for a in region:
                        g = dict(
                            task=task,
                            init=init,
                            protocol=protocol,
                            fraction=f,
                            pretrain_area=pa,
                            finetune_area=a,
                        )
                        rg = self.reference_group(g)
                        if (
                            rg is None
                            or not (
                                (sub["finetune_area"] == a) & np.isclose(sub["fraction"], f)
                            ).any()
                        ):
                            return None
                        ivs.append(self.paired(g, rg, metric, gain=True)[0])
                    est = float(np.mean([iv.estimate for iv in ivs]))
                    rep = np.mean(np.stack([iv.replicates for iv in ivs]), axis=0)
                    return Interval(est, *self._ci(rep, est), rep)

                gi, go = region_gain(fin), region_gain(fout)
                if gi is None or go is None:
                    continue
                per_fraction.append((f, gi, go))
            if not per_fraction:
                continue
            summary = [
                (
                    float("nan"),
                    Interval(
                        float(np.mean([p[1].estimate for p in per_fraction])),
                        float("nan"),
                        float("nan"),
                        np.mean(np.stack([p[1].replicates for p in per_fraction]), axis=0),
                    ),
                    Interval(
                        float(np.mean([p[2].estimate for p in per_fraction])),
                        float("nan"),
                        float("nan"),
                        np.mean(np.stack([p[2].replicates for p in per_fraction]), axis=0),
                    ),
                )
            ]
            for f, gi, go in per_fraction + summary:
                diff = go.replicates - gi.replicates
                lo, hi = self._ci(diff, go.estimate - gi.estimate)
                detected = np.isfinite(lo) and (lo > 0 or hi < 0)
                rows.append(
                    dict(
                        task=task,
                        metric=metric,
                        init=init,
                        protocol=protocol,
                        pretrain_area=pa,
                        fraction=f,
                        in_region=" ".join(fin),
                        out_of_region=" ".join(fout),
                        in_gain=gi.estimate,
                        out_gain=go.estimate,
                        difference=go.estimate - gi.estimate,
                        ci_low=lo,
                        ci_high=hi,
                        status="detected" if detected else "not detected",
                    )
                )
        return pd.DataFrame(rows, columns=list(REGIONAL_COLUMNS))


DIFFERENCE_COLUMNS: tuple[str, ...] = GROUP_KEYS + (
    "metric",
    "reference",
    "difference",
    "ci_low",
    "ci_high",
    "n_seeds",
    "verdict",
)
EFFICIENCY_COLUMNS: tuple[str, ...] = (
    "task",
    "metric",
    "init",
    "protocol",
    "pretrain_area",
    "finetune_area",
    "reference_value",
    "fraction_needed",
    "ci_low",
    "ci_high",
    "bound",
    "gain",
    "gain_low",
    "gain_high",
    "status",
    "label",
    "label_reduction",
)
REGIONAL_COLUMNS: tuple[str, ...] = (
    "task",
    "metric",
    "init",
    "protocol",
    "pretrain_area",
    "fraction",
    "in_region",
    "out_of_region",
    "in_gain",
    "out_gain",
    "difference",
    "ci_low",
    "ci_high",
    "status",
)


def check_consistency(
    boot: PairedBootstrap, metrics: pd.DataFrame, rtol: float = 1e-4
) -> list[str]:
    """Runs whose ``metrics.json`` value differs from the value recomputed from their
    predictions (a sign that predictions.npz does not belong to the metrics); returns
    messages (empty when all agree)."""
    bad = []
    for r in metrics.itertuples(index=False):
        i = boot.run_index({k: getattr(r, k) for k in RUN_KEYS})
        if i is None or r.metric not in task_metrics(r.task):
            continue
        point, _ = boot.run_values(i, r.metric)
        v = float(r.value)
        if math.isfinite(v) and math.isfinite(point):
            if abs(point - v) > rtol * max(1.0, abs(v)):
                bad.append(
                    f"{boot.runs.iloc[i]['source']}: {r.metric} = {v:.6g} in metrics.json but "
                    f"{point:.6g} from predictions.npz"
                )
    return bad
