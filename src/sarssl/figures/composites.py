"""``composites`` and ``backscatter-distributions``: the seasonal composites of an area.

``composites`` shows the four seasonal composites (mean or median of linear power per
season, see :mod:`sarssl.data.composite`) in the fixed SAR false colour of
:mod:`sarssl.figures.common` (R = VV, G = VH, B = VV - VH, dB), so that seasonal change
(crop phenology, wet/dry soil, wind on water) reads as a change of colour.

``backscatter-distributions`` shows, per season and polarisation, the distribution of
composite backscatter (dB) of the pixels of each land-cover class of the truth raster
(ESA WorldCover codes, reprojected onto the composite grid with nearest neighbour by
:func:`sarssl.data.labels.read_landcover`), as violins in the class colours with the median
marked. Classes separate in VH (volume scattering of vegetation) more than in VV.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..errors import InputError
from ..vocabulary import (
    CHANNELS,
    IGNORE_INDEX,
    N_LANDCOVER_CLASSES,
    SEASONS,
    WORLDCOVER_COLORS,
    WORLDCOVER_LABELS,
)
from .common import (
    channel_index,
    image_axes,
    require_file,
    season_false_colour,
    stretch_caption,
)
from .registry import register_figure, styled

log = logging.getLogger(__name__)


def read_composite(path: str) -> tuple[np.ndarray, object, dict]:
    """(12-band float32 dB array, :class:`sarssl.sar.grid.Grid`, tags) of a composite GeoTIFF,
    checking the band count and, when tagged, the channel order."""
    import rasterio

    from ..sar.grid import Grid

    p = require_file(path, "composite")
    try:
        ds = rasterio.open(p)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{p}: not a readable raster ({exc})") from exc
    with ds:
        if ds.count != len(CHANNELS):
            raise InputError(
                f"{p}: {ds.count} bands, a composite has {len(CHANNELS)} ({', '.join(CHANNELS)})"
            )
        tags = ds.tags()
        if "CHANNELS" in tags:
            try:
                chans = json.loads(tags["CHANNELS"])
            except json.JSONDecodeError:
                chans = None
            if chans is not None and list(chans) != list(CHANNELS):
                raise InputError(f"{p}: channel order {chans} differs from {list(CHANNELS)}")
        data = ds.read().astype(np.float32)
        if ds.nodata is not None and np.isfinite(ds.nodata):
            data[data == ds.nodata] = np.nan
        grid = Grid(ds.crs, ds.transform, ds.width, ds.height)
    return data, grid, tags


# --------------------------------------------------------------------------- composites
@styled
def composites_figure(
    x_db: np.ndarray,
    title: str = "",
    seasons: Sequence[str] = SEASONS,
    resolution: float | None = None,
) -> Figure:
    """Four false-colour panels (one per season) of a 12-channel composite (C, H, W) dB.

    Image artists carry ``gid`` ``"composite|SEASON"``; their data is exactly
    :func:`~sarssl.figures.common.season_false_colour` of that season. With
    ``resolution`` (m/px) a 1 km scale bar is drawn in the first panel.
    """
    x = np.asarray(x_db, dtype=np.float32)
    h, w = x.shape[1:]
    ncol = len(seasons)
    panel_w = 2.0
    fig = Figure(figsize=(panel_w * ncol, panel_w * h / w + 0.8), layout="constrained")
    axes = fig.subplots(1, ncol, squeeze=False)[0]
    for ax, season in zip(axes, seasons, strict=True):
        ax.imshow(
            season_false_colour(x, season), interpolation="nearest", gid=f"composite|{season}"
        )
        ax.set_title(season)
        image_axes(ax)
    if resolution:
        px = 1000.0 / float(resolution)
        if px < 0.8 * w:
            ax = axes[0]
            x0, y0 = 0.05 * w, 0.93 * h
            ax.plot([x0, x0 + px], [y0, y0], color="white", lw=2.5, solid_capstyle="butt")
            ax.plot([x0, x0 + px], [y0, y0], color="black", lw=1.0, solid_capstyle="butt")
            ax.text(
                x0 + px / 2,
                y0 - 0.03 * h,
                "1 km",
                color="white",
                ha="center",
                va="bottom",
                fontsize=6,
                fontweight="bold",
            )
    fig.supxlabel(stretch_caption(), fontsize=7)
    if title:
        fig.suptitle(title)
    return fig


def _composite_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--composite", required=True, help="12-band seasonal composite GeoTIFF")
    p.add_argument("--title", default=None, help="figure title (default: the file name)")


@register_figure(
    "composites", "seasonal composites of an area in SAR false colour", _composite_args
)
def _build_composites(args: argparse.Namespace) -> Figure:
    x, grid, tags = read_composite(args.composite)
    from pathlib import Path

    title = args.title
    if title is None:
        method = tags.get("COMPOSITE_METHOD", "mean")
        title = f"{Path(args.composite).stem}: {method} composites {tags.get('YEAR', '')}".strip()
    return composites_figure(x, title=title, resolution=abs(grid.transform.a))


# --------------------------------------------------------------------------- distributions
def class_samples(
    values: np.ndarray,
    classes: np.ndarray,
    max_per_class: int = 5000,
    seed: int = 0,
    min_pixels: int = 20,
) -> dict[int, np.ndarray]:
    """Finite ``values`` of each class present (>= ``min_pixels`` pixels), at most
    ``max_per_class`` per class drawn without replacement with ``seed`` (quantiles of a
    few thousand pixels are exact to well under 0.1 dB for these distributions)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.asarray(classes).ravel()
    rng = np.random.default_rng(seed)
    out: dict[int, np.ndarray] = {}
    for k in range(N_LANDCOVER_CLASSES):
        sel = v[(c == k) & np.isfinite(v)]
        if sel.size < min_pixels:
            continue
        if sel.size > max_per_class:
            sel = rng.choice(sel, max_per_class, replace=False)
        out[k] = sel
    return out


@styled
def backscatter_distributions(
    x_db: np.ndarray,
    landcover: np.ndarray,
    seasons: Sequence[str] = SEASONS,
    max_per_class: int = 5000,
    seed: int = 0,
    title: str = "",
    min_pixels: int = 20,
) -> Figure:
    """Violins of VV and VH (dB) per land-cover class (rows: VV, VH; columns: seasons).

    ``x_db``: composite (12, H, W) in CHANNELS order; ``landcover``: classes 0..10 (255
    ignore) on the same grid. Violin bodies carry ``gid`` ``"violin|POL|SEASON|CLASS"``
    and the per-class medians are drawn as short black lines.
    """
    x = np.asarray(x_db, dtype=np.float32)
    lc = np.asarray(landcover)
    if lc.shape != x.shape[1:]:
        raise InputError(
            f"backscatter distributions: land cover {lc.shape} and composite {x.shape[1:]} differ"
        )
    present = sorted(
        {int(k) for k in np.unique(lc) if k != IGNORE_INDEX and 0 <= k < N_LANDCOVER_CLASSES}
    )
    if not present:
        raise InputError("backscatter distributions: no labelled pixel in the land-cover raster")
    ncol = len(seasons)
    fig = Figure(figsize=(max(1.9 * ncol, 0.35 * len(present) * ncol), 4.6), layout="constrained")
    axes = fig.subplots(2, ncol, squeeze=False, sharey="row")
    shown: set[int] = set()
    for r, band in enumerate(("vv", "vh")):
        for c, season in enumerate(seasons):
            ax = axes[r, c]
            samples = class_samples(
                x[channel_index(band, season)], lc, max_per_class, seed, min_pixels
            )
            keys = [k for k in present if k in samples]
            if keys:
                pos = np.arange(len(keys))
                parts = ax.violinplot(
                    [samples[k] for k in keys],
                    positions=pos,
                    widths=0.8,
                    showextrema=False,
                    showmedians=True,
                )
                for body, k in zip(parts["bodies"], keys, strict=True):
                    body.set_facecolor(WORLDCOVER_COLORS[k])
                    body.set_edgecolor("0.25")
                    body.set_linewidth(0.5)
                    body.set_alpha(0.9)
                    body.set_gid(f"violin|{band.upper()}|{season}|{k}")
                parts["cmedians"].set_color("black")
                parts["cmedians"].set_linewidth(0.8)
                shown.update(keys)
                ax.set_xticks(pos)
                ax.set_xticklabels(
                    [WORLDCOVER_LABELS[k] for k in keys], rotation=60, ha="right", fontsize=6
                )
            else:
                ax.set_xticks([])
            ax.grid(axis="x", visible=False)
            if r == 0:
                ax.set_title(season)
                ax.tick_params(labelbottom=False)
            if c == 0:
                ax.set_ylabel(f"{band.upper()} backscatter (dB)")
    if title:
        fig.suptitle(title)
    return fig


def _dist_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--composite", required=True, help="12-band seasonal composite GeoTIFF")
    p.add_argument(
        "--landcover", required=True, help="WorldCover-coded land-cover raster (any CRS)"
    )
    p.add_argument("--max-per-class", type=int, default=5000, help="pixels sampled per class")
    p.add_argument("--seed", type=int, default=0, help="seed of the pixel sampling")
    p.add_argument("--title", default=None)


@register_figure(
    "backscatter-distributions", "per-class VV/VH backscatter by season (violins)", _dist_args
)
def _build_distributions(args: argparse.Namespace) -> Figure:
    from pathlib import Path

    from ..data.labels import read_landcover

    x, grid, _ = read_composite(args.composite)
    lc = read_landcover(require_file(args.landcover, "land-cover raster"), grid)
    title = (
        args.title
        if args.title is not None
        else f"{Path(args.composite).stem}: backscatter per land-cover class"
    )
    return backscatter_distributions(
        x, lc, max_per_class=args.max_per_class, seed=args.seed, title=title
    )
