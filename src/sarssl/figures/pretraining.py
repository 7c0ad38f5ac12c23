"""``pretraining-curves``: did self-supervised pretraining converge, and did DINO collapse?

One panel per pretraining run (``results/pretrain/METHOD/``: ``metrics.jsonl``, one line
per logged optimiser step, and ``run.json``): the loss per step (thin) and its running
mean, with the relative change of the running mean over the last fifth of the steps in
the title (a flattened curve changes by a few percent). For DINO a further panel shows the
collapse watch of Caron et al. (2021, sec. 5.3) logged by the loop: the mean entropy of the
per-image teacher distributions and the entropy of their batch mean, against ``ln K`` (K =
``head_out_dim`` prototypes). Uniform collapse: both approach ``ln K``; one-prototype
collapse: both approach 0; healthy: low per-image, high marginal entropy.

With ``--knn-chips-dir`` (a labelled chip store) a last panel shows a k-NN probe over
pretraining steps: every encoder snapshot the loop exported (``--snapshot-every``:
``snapshots/stepNNNNNN/encoder.safetensors``, step 0 = the random initialisation) labels
the store's VAL chips by k-NN label transfer from its TRAIN chips
(:mod:`sarssl.downstream.knn`, k = 10, land-cover mIoU). Nothing is trained, so the curve
shows what pretraining alone puts into the representation, step by step.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..errors import InputError
from .common import parse_named_paths, require_file
from .registry import init_color, register_figure, styled


def read_run(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """``metrics.jsonl`` of a pretraining run as a table (one row per logged step) and the
    ``config`` of its ``run.json`` (empty when absent)."""
    run_dir = Path(run_dir)
    path = require_file(run_dir / "metrics.jsonl", "pretraining metrics")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {n}: not JSON ({exc})") from exc
    table = pd.DataFrame(rows)
    if table.empty or not {"step", "loss"} <= set(table.columns):
        raise InputError(f"{path}: no logged steps with 'step' and 'loss'")
    table = table.drop_duplicates("step", keep="last").sort_values("step")
    cfg = {}
    if (run_dir / "run.json").is_file():
        cfg = json.loads((run_dir / "run.json").read_text()).get("config", {})
    return table.reset_index(drop=True), cfg


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing running mean (the first values average what is there)."""
    values = np.asarray(values, dtype=np.float64)
    c = np.cumsum(np.insert(values, 0, 0.0))
    n = np.arange(1, len(values) + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def late_change(loss: np.ndarray) -> float:
    """Relative change of the running mean over the last fifth of the steps."""
    if len(loss) < 10:
        return float("nan")
    smooth = running_mean(loss, max(5, len(loss) // 10))
    k = max(1, len(loss) // 5)
    return float((smooth[-1] - smooth[-k - 1]) / abs(smooth[-k - 1]))


KNN_K = 10


def knn_over_steps(
    run_dir: str | Path, chips_dir: str | Path, stats: str | Path
) -> list[tuple[int, float]]:
    """(step, val land-cover mIoU of the k-NN probe) for every snapshot of a run."""
    import torch

    from ..data.loaders import load_chips
    from ..data.store import ChipStore
    from ..downstream import knn
    from ..downstream.evaluation import SegmentationMeter
    from ..encoders import load_encoder, patch_tokens

    snaps = sorted(Path(run_dir).glob("snapshots/step*/encoder.safetensors"))
    if not snaps:
        return []
    store = ChipStore(chips_dir)
    st = json.loads(Path(stats).read_text())
    split = {
        k: load_chips(store, store.rows(k), arrays=("x", "landcover"), stats=st)
        for k in ("train", "val")
    }
    fallback = knn.majority_class(split["train"]["landcover"])
    out = []
    for path in snaps:
        backbone, _ = load_encoder(path, img_size=store.chip_size)
        backbone.eval()
        patch = int(backbone.patch_embed.patch_size[0])
        with torch.no_grad():
            feats = {
                k: torch.cat(
                    [patch_tokens(backbone, v["image"][i : i + 64]) for i in range(0, len(v), 64)]
                )
                for k, v in split.items()
            }
        n, t, d = feats["val"].shape
        bank = knn.KnnBank(
            feats["train"].reshape(-1, d), knn.token_labels(split["train"]["landcover"], patch)
        )
        cls = knn.segment(bank, feats["val"].reshape(n * t, d), KNN_K, fallback)
        side = int(round(t**0.5))
        pred = cls.reshape(n, side, side, patch, patch).permute(0, 1, 3, 2, 4)
        meter = SegmentationMeter()
        meter.update(pred.reshape(n, side * patch, side * patch), split["val"]["landcover"])
        out.append((int(path.parent.name.removeprefix("step")), meter.compute()["miou"]))
    return out


@styled
def pretraining_curves(
    runs: dict[str, tuple[pd.DataFrame, dict]],
    knn_curves: dict[str, list[tuple[int, float]]] | None = None,
    knn_area: str = "",
) -> Figure:
    """The figure of ``{method: (metrics table, run config)}`` (see the module docstring),
    with the k-NN probe curves ``{method: [(step, mIoU)]}`` when given."""
    if not runs:
        raise InputError("pretraining-curves: no run given")
    dino = {m: r for m, r in runs.items() if "teacher_entropy" in r[0].columns}
    knn_curves = {m: c for m, c in (knn_curves or {}).items() if c}
    n = len(runs) + len(dino) + (1 if knn_curves else 0)
    fig = Figure(figsize=(3.2 * n, 2.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (method, (table, _)) in zip(axes, runs.items()):
        step = table["step"].to_numpy()
        loss = table["loss"].to_numpy(dtype=np.float64)
        colour = init_color(method)
        ax.plot(step, loss, color=colour, alpha=0.3, linewidth=0.6)
        ax.plot(step, running_mean(loss, max(5, len(loss) // 10)), color=colour, label=method)
        change = late_change(loss)
        trend = f"last 20 % of steps {100 * change:+.1f} %" if np.isfinite(change) else "too short"
        ax.set_title(f"{method}: loss, {trend}")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("training loss")
    for ax, (method, (table, cfg)) in zip(axes[len(runs) :], dino.items()):
        step = table["step"].to_numpy()
        ax.plot(step, table["teacher_entropy"], color=init_color(method), label="per image")
        ax.plot(
            step,
            table["teacher_marginal_entropy"],
            color=init_color(method),
            linestyle="--",
            label="batch marginal",
        )
        k = (cfg.get("hparams") or {}).get("head_out_dim")
        if k:
            ax.axhline(math.log(k), color="0.4", linewidth=0.8, linestyle=":")
            ax.text(step[0], math.log(k), f" ln K (K = {k})", va="bottom", fontsize=6)
        ax.set_ylim(bottom=0)
        ax.set_title(f"{method}: teacher entropy (collapse watch)")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("entropy (nats)")
        ax.legend(loc="best")
    if knn_curves:
        ax = axes[-1]
        for method, curve in knn_curves.items():
            steps, miou = zip(*curve)
            ax.plot(steps, miou, "o-", color=init_color(method), label=method, markersize=3)
        ax.set_title(f"k-NN probe (k = {KNN_K}) on {knn_area or 'val'} chips")
        ax.set_xlabel("optimiser step (0 = random init)")
        ax.set_ylabel("val land-cover mIoU")
        ax.legend(loc="best")
    return fig


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        nargs="+",
        required=True,
        help="METHOD=DIR: a pretraining output folder (metrics.jsonl, run.json)",
    )
    p.add_argument(
        "--knn-chips-dir",
        default=None,
        help="labelled chip store for the k-NN probe over the runs' encoder snapshots",
    )
    p.add_argument("--stats", default=None, help="stats.json (with --knn-chips-dir)")


@register_figure(
    "pretraining-curves", "pretraining loss per step and DINO's collapse diagnostics", _args
)
def _build(args: argparse.Namespace) -> Figure:
    paths = parse_named_paths(args.run, "--run")
    runs = {name: read_run(path) for name, path in paths.items()}
    curves = None
    if args.knn_chips_dir:
        if not args.stats:
            raise InputError("--knn-chips-dir needs --stats")
        curves = {m: knn_over_steps(p, args.knn_chips_dir, args.stats) for m, p in paths.items()}
    return pretraining_curves(runs, curves, Path(args.knn_chips_dir or "").name)
