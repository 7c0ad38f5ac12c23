"""``qualitative``: the same test chips seen by every initialisation.

Per chip (one row each): the SAR input (one season in the fixed false colour of
:mod:`sarssl.figures.common`), the WorldCover ground truth, and the land-cover map each
fine-tuned model predicted (from scratch, MAE, DINO, ...), in WorldCover colours; then
the MODIS tree-cover truth map (percent, on the chip grid) with the chip-mean truth and
each model's predicted chip-mean tree cover written beside it (the vegetation task is a
chip-level regression, so ``predictions.npz`` holds one value per chip).

Inputs are the fine-tuning runs' ``predictions.npz`` (keys ``rows``, ``ids``, ``pred``,
``target``; see :mod:`sarssl.downstream.finetune`) and the chip store they were evaluated on. Chips
are those present in every prediction file, preferring chips with many classes.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from ..errors import InputError
from ..vocabulary import IGNORE_INDEX, SEASONS
from .common import (
    image_axes,
    landcover_cmap,
    landcover_image,
    landcover_legend_handles,
    parse_named_paths,
    require_file,
    season_false_colour,
    select_rows,
    stretch_caption,
)
from .registry import init_color, register_figure, styled

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """One fine-tuning run's test predictions: chip ids -> predicted map or value."""

    ids: np.ndarray  # (N,) str
    pred: np.ndarray  # (N, S, S) classes, or (N,) tree cover %
    target: np.ndarray

    def lookup(self, chip_id: str) -> np.ndarray:
        hit = np.flatnonzero(self.ids == chip_id)
        if hit.size == 0:
            raise InputError(f"predictions: no chip {chip_id!r}")
        return self.pred[hit[0]]


def read_predictions(path: str) -> Predictions:
    """Load a ``predictions.npz`` written by ``sarssl finetune`` (checks keys and shapes)."""
    p = require_file(path, "predictions file")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("ids", "pred", "target") if k not in z.files]
            if missing:
                raise InputError(
                    f"{p}: missing key(s) {', '.join(missing)} (has {', '.join(z.files)})"
                )
            ids, pred, target = z["ids"].astype(str), z["pred"], z["target"]
    except (OSError, ValueError) as exc:
        raise InputError(f"{p}: not a readable .npz file ({exc})") from exc
    if pred.shape[0] != ids.shape[0]:
        raise InputError(f"{p}: {pred.shape[0]} predictions for {ids.shape[0]} ids")
    return Predictions(ids, pred, target)


@styled
def qualitative_figure(
    x_db: np.ndarray,
    landcover: np.ndarray,
    ids: Sequence[str],
    lc_preds: Mapping[str, np.ndarray] | None = None,
    treecover: np.ndarray | None = None,
    tc_preds: Mapping[str, np.ndarray] | None = None,
    season: str = "summer",
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """Rows = chips, columns = SAR input, land-cover truth, one land-cover prediction per
    model, and (with ``treecover``) the tree-cover truth map annotated with the predicted
    chip means.

    ``x_db`` (B, 12, S, S) dB; ``landcover`` (B, S, S) classes; ``lc_preds`` name -> (B, S, S)
    predicted classes; ``treecover`` (B, S, S) percent; ``tc_preds`` name -> (B,) chip-mean
    percent. Land-cover panels carry ``gid`` ``"lc|NAME|ROW"`` (NAME = "truth" or the
    model) with the class array as data; input panels ``"input|ROW"``.
    """
    from ..downstream import tables

    lc_preds = dict(lc_preds or {})
    tc_preds = dict(tc_preds or {})
    labels = dict(labels or {})

    def label(name: str) -> str:
        return labels.get(name) or tables.init_label(name)

    b = len(ids)
    ncol = 2 + len(lc_preds) + (1 if treecover is not None else 0)
    fig = Figure(figsize=(1.45 * ncol + 0.3, 1.45 * b + 1.1), layout="constrained")
    axes = fig.subplots(b, ncol, squeeze=False)
    cmap, norm = landcover_cmap()
    classes_seen: set[int] = set()
    tc_im = None
    for r in range(b):
        ax = axes[r, 0]
        ax.imshow(season_false_colour(x_db[r], season), interpolation="nearest", gid=f"input|{r}")
        ax.set_ylabel(str(ids[r]), fontsize=5.5)
        maps = {"truth": landcover[r], **{k: v[r] for k, v in lc_preds.items()}}
        for c, (name, m) in enumerate(maps.items(), start=1):
            ax = axes[r, c]
            ax.imshow(
                landcover_image(m),
                cmap=cmap,
                norm=norm,
                interpolation="nearest",
                gid=f"lc|{name}|{r}",
            )
            classes_seen.update(int(k) for k in np.unique(m) if k != IGNORE_INDEX)
            if name != "truth":
                valid = landcover[r] != IGNORE_INDEX
                acc = (
                    float((m[valid] == landcover[r][valid]).mean()) if valid.any() else float("nan")
                )
                ax.text(
                    0.03,
                    0.03,
                    f"acc {100 * acc:.0f}%",
                    transform=ax.transAxes,
                    fontsize=5.5,
                    color="black",
                    bbox={"facecolor": "white", "alpha": 0.75, "lw": 0, "pad": 1},
                )
            if r == 0:
                ax.set_title(
                    "Land cover: truth" if name == "truth" else f"{label(name)}",
                    color="black" if name == "truth" else init_color(name),
                )
        if treecover is not None:
            ax = axes[r, -1]
            tc = np.asarray(treecover[r], dtype=np.float32)
            tc_im = ax.imshow(
                tc, cmap="YlGn", vmin=0, vmax=100, interpolation="nearest", gid=f"tc|truth|{r}"
            )
            lines = [f"truth {np.nanmean(tc):.0f}%" if np.isfinite(tc).any() else "truth n/a"]
            lines += [f"{label(k)} {float(v[r]):.0f}%" for k, v in tc_preds.items()]
            ax.text(
                1.03,
                0.5,
                "\n".join(lines),
                transform=ax.transAxes,
                fontsize=5.5,
                va="center",
                ha="left",
            )
            if r == 0:
                ax.set_title("Tree cover: truth map\n(chip means: truth, predicted)")
        for ax in axes[r]:
            image_axes(ax)
    axes[0, 0].set_title(f"SAR input ({season})")
    handles = landcover_legend_handles(sorted(classes_seen))
    fig.legend(
        handles=handles, loc="outside lower center", ncols=min(4, max(1, len(handles))), fontsize=6
    )
    if tc_im is not None:
        fig.colorbar(
            tc_im,
            ax=axes[:, -1].tolist(),
            location="right",
            shrink=0.5,
            pad=0.25,
            label="tree cover (%)",
        )
    fig.suptitle(f"Test chips: input ({stretch_caption()}), truth and predictions", fontsize=7)
    return fig


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chips-dir", required=True, help="chip store the predictions were made on")
    p.add_argument(
        "--landcover",
        nargs="*",
        default=[],
        help="land-cover predictions.npz as NAME=PATH (e.g. scratch=.../predictions.npz)",
    )
    p.add_argument(
        "--treecover", nargs="*", default=[], help="tree-cover predictions.npz as NAME=PATH"
    )
    p.add_argument("--n-chips", type=int, default=4)
    p.add_argument(
        "--season", default="summer", choices=SEASONS, help="season of the SAR input shown"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the chip choice among equals")


@register_figure(
    "qualitative", "input, truth and predicted land-cover / tree-cover maps of test chips", _args
)
def _build(args: argparse.Namespace) -> Figure:
    from ..data.loaders import load_chips
    from ..data.store import ChipStore

    lc_paths = parse_named_paths(args.landcover, "--landcover")
    tc_paths = parse_named_paths(args.treecover, "--treecover")
    if not lc_paths and not tc_paths:
        raise InputError("qualitative: give --landcover and/or --treecover predictions")
    store = ChipStore(require_file(args.chips_dir, "chip store"))
    lc_runs = {k: read_predictions(v) for k, v in lc_paths.items()}
    tc_runs = {k: read_predictions(v) for k, v in tc_paths.items()}
    for name, run in lc_runs.items():
        if run.pred.ndim != 3 or run.pred.shape[1:] != (store.chip_size, store.chip_size):
            raise InputError(
                f"{lc_paths[name]}: land-cover predictions must be (N, {store.chip_size}, "
                f"{store.chip_size}) maps, got {run.pred.shape}"
            )
    for name, run in tc_runs.items():
        if run.pred.ndim != 1:
            raise InputError(
                f"{tc_paths[name]}: tree-cover predictions must be one value per chip, "
                f"got {run.pred.shape}"
            )
    common = None
    for run in [*lc_runs.values(), *tc_runs.values()]:
        ids = set(run.ids.tolist())
        common = ids if common is None else common & ids
    if not common:
        raise InputError("qualitative: the prediction files share no chip id")
    rows = select_rows(store, args.n_chips, args.seed, ids=sorted(common))
    chips = load_chips(store, rows)
    ids = chips.ids.tolist()
    x = chips["x"].float().numpy()
    lc = chips["landcover"].numpy()
    lc_preds = {k: np.stack([run.lookup(i) for i in ids]) for k, run in lc_runs.items()}
    tc_preds = {
        k: np.array([run.lookup(i) for i in ids], dtype=np.float32) for k, run in tc_runs.items()
    }
    treecover = chips["treecover_map"].float().numpy() if tc_runs else None
    return qualitative_figure(x, lc, ids, lc_preds, treecover, tc_preds, season=args.season)
