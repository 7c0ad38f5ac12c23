"""``embeddings``: how the pretrained encoders organise the chips.

Each chip is embedded as the mean of its final-norm patch tokens (class token excluded)
of a pretrained encoder (MAE, DINO, ...), computed on the model's normalised input. The
embeddings of each encoder are projected to 2-D with PCA (centred, via the SVD; axes
labelled with the share of variance they explain) and drawn twice: coloured by the chip's
land-cover majority class (WorldCover colours) and by area (the study's figure of
embeddings coloured by region, showing the domain gap between regions).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..errors import InputError
from ..vocabulary import (
    N_LANDCOVER_CLASSES,
    SPLITS,
    WORLDCOVER_CODES,
    WORLDCOVER_COLORS,
    WORLDCOVER_LABELS,
)
from .common import IGNORE_COLOR, parse_named_paths, require_file
from .registry import register_figure, styled

log = logging.getLogger(__name__)

AREA_COLORS = (
    "#1b9e77",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#e6ab02",
    "#a6761d",
    "#666666",
)


def pca_2d(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(projection (N, 2) on the first two principal axes, explained-variance ratios (2,)).

    Centred PCA through the thin SVD ``Z - mean = U S V^T``; scores = ``U S``. Each axis's
    sign is fixed so that its largest-magnitude loading is positive (deterministic).
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] < 2:
        raise InputError(f"PCA needs at least 2 embeddings, got shape {z.shape}")
    zc = z - z.mean(axis=0)
    u, s, vt = np.linalg.svd(zc, full_matrices=False)
    k = min(2, s.size)
    signs = np.sign(vt[np.arange(k), np.abs(vt[:k]).argmax(axis=1)])
    signs[signs == 0] = 1.0
    scores = u[:, :k] * s[:k] * signs
    total = float((s**2).sum())
    ratio = (s[:k] ** 2) / total if total > 0 else np.zeros(k)
    if k < 2:
        scores = np.column_stack([scores, np.zeros(len(z))])
        ratio = np.append(ratio, 0.0)
    return scores, ratio


def embed(backbone, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Mean-pooled final-norm patch tokens ``(N, D)`` of normalised ``images``."""
    import torch
    from tqdm import tqdm

    from ..encoders import patch_tokens

    backbone.eval()
    out = []
    with torch.no_grad():
        for i in tqdm(
            range(0, len(images), batch_size), desc="embeddings", unit="batch", leave=False
        ):
            x = torch.as_tensor(np.asarray(images[i : i + batch_size]), dtype=torch.float32)
            out.append(patch_tokens(backbone, x).mean(dim=1).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


@styled
def embeddings_figure(
    projections: Mapping[str, tuple[np.ndarray, np.ndarray]],
    majority: np.ndarray,
    areas: Sequence[str],
) -> Figure:
    """Rows = encoders; columns = coloured by land-cover majority class, by area.

    ``projections``: encoder name -> (scores (N, 2), explained-variance ratios) from
    :func:`pca_2d`; ``majority`` (N,) classes 0..10 (255 = unlabelled); ``areas`` (N,).
    Scatter collections carry ``gid`` ``"pts|ENCODER|class"`` / ``"pts|ENCODER|area"``.
    """
    from ..downstream import tables

    majority = np.asarray(majority).astype(np.int64)
    areas = np.asarray(areas).astype(str)
    area_names = sorted(set(areas.tolist()))
    area_col = {a: AREA_COLORS[i % len(AREA_COLORS)] for i, a in enumerate(area_names)}
    cls_col = np.array(
        [WORLDCOVER_COLORS[c] if 0 <= c < N_LANDCOVER_CLASSES else IGNORE_COLOR for c in majority]
    )
    n = len(projections)
    fig = Figure(figsize=(6.4, 2.7 * n + 0.9), layout="constrained")
    axes = fig.subplots(n, 2, squeeze=False)
    size = float(np.clip(3000.0 / max(len(majority), 1), 2.0, 18.0))
    for r, (name, (scores, ratio)) in enumerate(projections.items()):
        for c, kind in enumerate(("class", "area")):
            ax = axes[r, c]
            colours = cls_col if kind == "class" else np.array([area_col[a] for a in areas])
            ax.scatter(
                scores[:, 0],
                scores[:, 1],
                c=colours,
                s=size,
                linewidths=0.2,
                edgecolors="0.3",
                gid=f"pts|{name}|{kind}",
            )
            ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f}% of variance)")
            ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f}%)")
            ax.set_title(
                f"{tables.init_label(name)}: by "
                + ("land-cover majority" if kind == "class" else "area")
            )
    present = sorted({int(c) for c in majority})
    cls_handles = [
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            markersize=5,
            markerfacecolor=WORLDCOVER_COLORS[c],
            markeredgecolor="0.3",
            label=f"{WORLDCOVER_CODES[c]} {WORLDCOVER_LABELS[c]}",
        )
        for c in present
        if 0 <= c < N_LANDCOVER_CLASSES
    ]
    if any(not 0 <= c < N_LANDCOVER_CLASSES for c in present):
        cls_handles.append(
            Line2D(
                [],
                [],
                ls="",
                marker="o",
                markerfacecolor=IGNORE_COLOR,
                markeredgecolor="0.3",
                label="unlabelled",
            )
        )
    area_handles = [
        Line2D(
            [],
            [],
            ls="",
            marker="o",
            markersize=5,
            markerfacecolor=area_col[a],
            markeredgecolor="0.3",
            label=a,
        )
        for a in area_names
    ]
    axes[0, 0].legend(
        handles=cls_handles, loc="lower left", bbox_to_anchor=(0.0, 1.12), ncols=2, fontsize=5.5
    )
    axes[0, 1].legend(
        handles=area_handles, loc="lower left", bbox_to_anchor=(0.0, 1.12), fontsize=6
    )
    fig.suptitle("Chip embeddings (mean-pooled patch tokens), PCA")
    return fig


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--encoder",
        nargs="+",
        required=True,
        help="encoders as NAME=PATH to encoder.safetensors "
        "(e.g. mae=results/pretrain/mae/encoder.safetensors)",
    )
    p.add_argument("--chips-dir", nargs="+", required=True, help="chip stores (one per area)")
    p.add_argument(
        "--split",
        default=None,
        choices=SPLITS,
        help="only this split (default all)",
    )
    p.add_argument(
        "--max-chips",
        type=int,
        default=1000,
        help="at most this many chips per store (seeded sample)",
    )
    p.add_argument("--seed", type=int, default=0)


@register_figure("embeddings", "PCA of encoder chip embeddings by land-cover class and area", _args)
def _build(args: argparse.Namespace) -> Figure:
    from ..data.loaders import load_chips
    from ..data.normalize import normalize_batch
    from ..data.store import ChipStore, load_stats
    from ..encoders import load_encoder

    encoders = parse_named_paths(args.encoder, "--encoder")
    rng = np.random.default_rng(args.seed)
    xs, maj, area = [], [], []
    channels = chip_size = None
    for d in args.chips_dir:
        store = ChipStore(require_file(d, "chip store"))
        channels = channels or store.channels
        chip_size = chip_size or store.chip_size
        if store.channels != channels:
            raise InputError(f"{d}: channels differ from the first chip store's")
        if store.chip_size != chip_size:
            raise InputError(
                f"{d}: chips of {store.chip_size} px, the first chip store's of {chip_size} px"
            )
        rows = store.rows(args.split)
        if rows.size > args.max_chips:
            rows = np.sort(rng.choice(rows, args.max_chips, replace=False))
        idx = store.index.set_index("row").loc[rows]
        xs.append(load_chips(store, rows, arrays=("x",))["x"].float().numpy())
        maj.append(idx["landcover_majority"].to_numpy(dtype=np.int64))
        name = (
            str(idx["area"].iloc[0])
            if "area" in idx.columns and len(idx) and pd.notna(idx["area"].iloc[0])
            else store.path.name
        )
        area += [name] * len(rows)
    x = np.concatenate(xs)
    if len(x) < 2:
        raise InputError("embeddings: fewer than 2 chips in the given stores")
    projections = {}
    for name, path in encoders.items():
        backbone, meta = load_encoder(require_file(path, "encoder weights"), img_size=chip_size)
        mean, std = load_stats(meta["stats"], channels)
        projections[name] = pca_2d(embed(backbone, normalize_batch(x, mean, std)))
    return embeddings_figure(projections, np.concatenate(maj), area)
