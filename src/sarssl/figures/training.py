"""Fine-tuning training curves: does each run converge, and which learning rate won?

For every task (row) and fine-tuning area (column), the validation score after each
epoch against optimiser steps, one colour per initialisation (:data:`INIT_COLORS`), for
the runs that searched the learning rate (the reference runs of ``lr_search:
reference_run``: most labels, first seed). Every candidate learning rate of ``lr_grid`` is
drawn; the one selected on the validation split is the thick line (its best epoch
marked), the others thin; line style is the protocol's (solid full fine-tuning, dashed
the linear probe and the per-pixel control). A curve still rising at its last step says
the run needs more steps; a flat or falling one that the budget was enough.

Input: the ``run.json`` files of those runs (their ``lr_search`` histories, written by
:func:`sarssl.downstream.finetune.write_outputs`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..errors import InputError
from .registry import PROTOCOL_LINESTYLES, init_color, register_figure, styled

METRIC = {"landcover": ("miou", "val mIoU"), "treecover": ("rmse", "val RMSE (%)")}


def read_runs(paths: list[str]) -> list[dict[str, Any]]:
    """The run.json files (a clear error naming an unreadable one)."""
    runs = []
    for path in paths:
        try:
            rec = json.loads(Path(path).read_text())
            cfg = rec["config"]
            runs.append(
                {
                    "path": str(path),
                    "task": cfg["task"],
                    "init": cfg["init_label"],
                    "protocol": cfg["protocol"],
                    "area": cfg.get("finetune_area") or "area",
                    "fraction": float(cfg["fraction"]),
                    "lr": rec.get("lr"),
                    "search": rec.get("lr_search") or [],
                }
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path}: not a fine-tuning run.json ({exc})") from exc
    return runs


@styled
def training_curves(runs: list[dict[str, Any]]) -> Figure:
    """The figure described in the module docstring."""
    tasks = [t for t in METRIC if any(r["task"] == t for r in runs)]
    areas = sorted({r["area"] for r in runs})
    if not tasks:
        raise InputError("training curves: no run with an lr search")
    fig = Figure(figsize=(3.2 * len(areas) + 0.4, 2.4 * len(tasks) + 0.6), layout="constrained")
    axes = fig.subplots(len(tasks), len(areas), squeeze=False)
    handles: dict[str, Any] = {}
    for i, task in enumerate(tasks):
        key, label = METRIC[task]
        for j, area in enumerate(areas):
            ax = axes[i][j]
            for run in (r for r in runs if r["task"] == task and r["area"] == area):
                color = init_color(run["init"])
                style = PROTOCOL_LINESTYLES.get(run["protocol"], ":")
                for cand in run["search"]:
                    hist = [h for h in cand.get("history", []) if h["val"].get(key) is not None]
                    if not hist:
                        continue
                    chosen = cand["lr"] == run["lr"]
                    steps = [h["step"] for h in hist]
                    vals = [h["val"][key] for h in hist]
                    (line,) = ax.plot(
                        steps,
                        vals,
                        linestyle=style,
                        color=color,
                        lw=1.6 if chosen else 0.6,
                        alpha=1.0 if chosen else 0.45,
                    )
                    if chosen:
                        name = f"{run['init']} ({run['protocol']})"
                        handles.setdefault(name, line)
                        best = int(cand["best_epoch"])
                        if 0 <= best < len(hist):
                            ax.plot(steps[best], vals[best], "o", color=color, ms=3)
            ax.set_title(f"{task} — {area}")
            ax.set_xlabel("optimiser step")
            ax.set_ylabel(label)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncol=min(5, max(1, len(handles))),
    )
    fig.suptitle("Fine-tuning on the validation split: every lr of the grid (thick = selected)")
    return fig


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, help="run.json of the lr-search runs")


@register_figure(
    "training-curves",
    "validation score vs optimiser step of every lr candidate (convergence, lr selection)",
    _args,
)
def _build(args: argparse.Namespace) -> Figure:
    return training_curves(read_runs(args.runs))
