"""``pretraining-curves``: did self-supervised pretraining converge, and did DINO collapse?

One panel per pretraining run (``results/pretrain/METHOD/``: ``metrics.jsonl``, one line
per logged optimiser step, and ``run.json``): the loss per step (thin) and its running
mean, with the relative change of the running mean over the last fifth of the steps in
the title (a flattened curve changes by a few percent). For DINO a further panel shows the
collapse watch of Caron et al. (2021, sec. 5.3) logged by the loop: the mean entropy of the
per-image teacher distributions and the entropy of their batch mean, against ``ln K`` (K =
``head_out_dim`` prototypes). Uniform collapse: both approach ``ln K``; one-prototype
collapse: both approach 0; healthy: low per-image, high marginal entropy.

A k-NN probe over pretraining steps would need encoder snapshots during training; the loop
keeps only its latest resume checkpoint, so the figure shows the logged curves only.
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


@styled
def pretraining_curves(runs: dict[str, tuple[pd.DataFrame, dict]]) -> Figure:
    """The figure of ``{method: (metrics table, run config)}`` (see the module docstring)."""
    if not runs:
        raise InputError("pretraining-curves: no run given")
    dino = {m: r for m, r in runs.items() if "teacher_entropy" in r[0].columns}
    n = len(runs) + len(dino)
    fig = Figure(figsize=(3.2 * n, 2.6), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (method, (table, _)) in zip(axes, runs.items()):
        step = table["step"].to_numpy()
        loss = table["loss"].to_numpy(dtype=np.float64)
        colour = init_color(method)
        ax.plot(step, loss, color=colour, alpha=0.3, linewidth=0.6)
        ax.plot(step, running_mean(loss, max(5, len(loss) // 10)), color=colour, label=method)
        change = late_change(loss)
        ax.set_title(f"{method}: loss, last 20 % of steps {100 * change:+.1f} %")
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
    return fig


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--run",
        nargs="+",
        required=True,
        help="METHOD=DIR: a pretraining output folder (metrics.jsonl, run.json)",
    )


@register_figure(
    "pretraining-curves", "pretraining loss per step and DINO's collapse diagnostics", _args
)
def _build(args: argparse.Namespace) -> Figure:
    runs = {name: read_run(path) for name, path in parse_named_paths(args.run, "--run").items()}
    return pretraining_curves(runs)
