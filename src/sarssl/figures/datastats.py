"""``data-statistics``: what the study's data consist of, per area.

Three panels: (a) Sentinel-1 scenes per season in the catalogue (a scene belongs to the
season whose window of composite year Y contains its UTC acquisition day: winter =
(Y-1)-12-01..Y-02-end, spring 03-01..05-31, summer 06-01..08-31, fall 09-01..11-30, or
the configured windows; scenes outside every window are counted as "outside"), (b) chips
per split (train/val/test spatial bands), (c) the share of labelled pixels of each
land-cover class per split (stacked, WorldCover colours; 255 = ignore excluded), which
shows whether the spatial split kept the class balance.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..errors import InputError
from ..vocabulary import IGNORE_INDEX, N_LANDCOVER_CLASSES, SEASONS, SPLITS, WORLDCOVER_COLORS
from .common import landcover_legend_handles, require_file
from .registry import register_figure, styled

log = logging.getLogger(__name__)

SPLIT_COLORS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}
SEASON_COLORS = {
    "winter": "#5b8db8",
    "spring": "#7fbf7b",
    "summer": "#e8b04a",
    "fall": "#c0504d",
    "outside": "#bbbbbb",
}


def scenes_per_season(
    catalogue: pd.DataFrame,
    year: int,
    seasons: Mapping[str, Sequence[str]] | None = None,
    where: str = "catalogue",
) -> pd.Series:
    """Number of catalogue rows per season of ``year`` (index: SEASONS + 'outside')."""
    from ..vocabulary import assign_season, season_windows

    col = (
        "start_time"
        if "start_time" in catalogue.columns
        else "date"
        if "date" in catalogue.columns
        else None
    )
    if col is None:
        raise InputError(f"{where}: needs a 'start_time' or 'date' column")
    windows = season_windows(int(year), seasons)
    counts = dict.fromkeys([*SEASONS, "outside"], 0)
    for text in catalogue[col].astype(str):
        try:
            t = pd.Timestamp(text)
        except ValueError as exc:
            raise InputError(f"{where}: {col} {text!r} is not a date/time") from exc
        if t.tzinfo is not None:
            t = t.tz_convert("UTC").tz_localize(None)
        season = assign_season(dt.date(t.year, t.month, t.day), windows)
        counts[season or "outside"] += 1
    return pd.Series(counts, name="scenes")


def split_counts(index: pd.DataFrame) -> pd.Series:
    """Chips per split of a chip-store index (train/val/test, zeros kept)."""
    vc = index["split"].astype(str).value_counts()
    return pd.Series({s: int(vc.get(s, 0)) for s in SPLITS}, name="chips")


def class_pixel_counts(store, chunk: int = 256) -> pd.DataFrame:
    """Labelled pixels per (split, class) of a chip store's land cover (255 ignored).

    Returns a DataFrame indexed by split with columns 0..10; the land-cover maps are read
    ``chunk`` chips at a time (:class:`sarssl.data.loaders.ChipBatches`, nothing else),
    so a store is never loaded whole.
    """
    from ..data.loaders import ChipBatches

    n = N_LANDCOVER_CLASSES
    out = pd.DataFrame(0, index=list(SPLITS), columns=range(n), dtype=np.int64)
    for s in SPLITS:
        batches = ChipBatches(store, store.rows(s), chunk, shuffle=False, arrays=("landcover",))
        for i in range(len(batches)):
            block = batches[i]["landcover"].numpy().ravel()
            block = block[block != IGNORE_INDEX]
            out.loc[s] += np.bincount(block.astype(np.int64), minlength=n)[:n]
    return out


@styled
def data_statistics(
    scenes: Mapping[str, pd.Series],
    chips: Mapping[str, pd.Series],
    class_pixels: Mapping[str, pd.DataFrame],
) -> Figure:
    """Build the three-panel statistics figure.

    ``scenes``: area -> :func:`scenes_per_season`; ``chips``: area -> :func:`split_counts`;
    ``class_pixels``: area -> :func:`class_pixel_counts`. Any mapping may be empty (its
    panel then says so). Bars carry ``gid`` ``"scenes|AREA|SEASON"``, ``"chips|AREA|SPLIT"``
    and ``"share|AREA|SPLIT|CLASS"`` (height = share in percent).
    """
    fig = Figure(figsize=(10.5, 3.2), layout="constrained")
    ax_s, ax_c, ax_p = fig.subplots(1, 3, width_ratios=[1.1, 1.0, 1.5])

    def empty(ax, text):
        ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5")

    # (a) scenes per season
    areas = list(scenes)
    cats = [
        s
        for s in (*SEASONS, "outside")
        if any(scenes[a].get(s, 0) for a in areas) or s != "outside"
    ]
    width = 0.8 / max(len(cats), 1)
    for i, a in enumerate(areas):
        for j, s in enumerate(cats):
            v = int(scenes[a].get(s, 0))
            x = i + (j - (len(cats) - 1) / 2) * width
            ax_s.bar(
                x,
                v,
                width * 0.95,
                color=SEASON_COLORS[s],
                label=s if i == 0 else None,
                gid=f"scenes|{a}|{s}",
            )
            ax_s.text(x, v, str(v), ha="center", va="bottom", fontsize=6)
    ax_s.set_xticks(range(len(areas)))
    ax_s.set_xticklabels(areas)
    ax_s.set_ylabel("Sentinel-1 scenes")
    ax_s.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: whole ticks only
    ax_s.set_title("(a) scenes per season")
    ax_s.grid(axis="x", visible=False)
    if areas:
        ax_s.legend(loc="upper right", fontsize=6)
        ax_s.set_ylim(0, max(1, max(int(scenes[a].max()) for a in areas)) * 1.3)
    else:
        empty(ax_s, "no catalogue given")

    # (b) chips per split
    areas_c = list(chips)
    width = 0.8 / len(SPLITS)
    for i, a in enumerate(areas_c):
        for j, s in enumerate(SPLITS):
            v = int(chips[a].get(s, 0))
            x = i + (j - (len(SPLITS) - 1) / 2) * width
            ax_c.bar(
                x,
                v,
                width * 0.95,
                color=SPLIT_COLORS[s],
                label=s if i == 0 else None,
                gid=f"chips|{a}|{s}",
            )
            ax_c.text(x, v, str(v), ha="center", va="bottom", fontsize=6)
    ax_c.set_xticks(range(len(areas_c)))
    ax_c.set_xticklabels(areas_c)
    ax_c.set_ylabel("chips")
    ax_c.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_c.set_title("(b) chips per split")
    ax_c.grid(axis="x", visible=False)
    if areas_c:
        ax_c.legend(loc="upper right", fontsize=6)
        ax_c.set_ylim(0, max(1, max(int(chips[a].max()) for a in areas_c)) * 1.25)
    else:
        empty(ax_c, "no chip store given")

    # (c) class shares per split
    labels, seen = [], set()
    pos = 0
    for a, table in class_pixels.items():
        for s in SPLITS:
            counts = table.loc[s].to_numpy(dtype=np.float64)
            total = counts.sum()
            bottom = 0.0
            if total > 0:
                for k in range(N_LANDCOVER_CLASSES):
                    share = 100.0 * counts[k] / total
                    if share <= 0:
                        continue
                    ax_p.bar(
                        pos,
                        share,
                        0.8,
                        bottom=bottom,
                        color=WORLDCOVER_COLORS[k],
                        edgecolor="0.3",
                        linewidth=0.3,
                        gid=f"share|{a}|{s}|{k}",
                    )
                    bottom += share
                    seen.add(k)
            else:
                ax_p.text(
                    pos, 2, "none", rotation=90, ha="center", va="bottom", fontsize=6, color="0.5"
                )
            labels.append(f"{a}\n{s}")
            pos += 1
        pos += 0.5  # gap between areas
    ticks = []
    p = 0.0
    for _a in class_pixels:
        ticks += [p, p + 1, p + 2]
        p += 3.5
    ax_p.set_xticks(ticks)
    ax_p.set_xticklabels(labels, fontsize=6)
    ax_p.set_ylim(0, 100)
    ax_p.set_ylabel("labelled pixels (%)")
    ax_p.set_title("(c) land-cover class shares per split")
    ax_p.grid(axis="x", visible=False)
    if seen:
        ax_p.legend(
            handles=landcover_legend_handles(seen),
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=6,
        )
    else:
        empty(ax_p, "no chip store given")
    return fig


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--catalogue", nargs="*", default=[], help="scene catalogue CSVs (area = file stem)"
    )
    p.add_argument("--chips-dir", nargs="*", default=[], help="chip store directories")
    p.add_argument(
        "--year", type=int, default=None, help="composite year Y (needed with --catalogue)"
    )
    p.add_argument(
        "--seasons",
        default=None,
        help="season windows as JSON (inline or file); default study windows",
    )


def _store_area(store) -> str:
    idx = store.index
    if "area" in idx.columns and idx["area"].notna().any():
        return str(idx["area"].dropna().iloc[0])
    return store.path.name


@register_figure(
    "data-statistics", "scenes per season, chips per split, class shares per split", _args
)
def _build(args: argparse.Namespace) -> Figure:
    from ..data.composite import parse_seasons
    from ..data.store import ChipStore

    if not args.catalogue and not args.chips_dir:
        raise InputError("data-statistics: give --catalogue and/or --chips-dir")
    seasons = parse_seasons(args.seasons)
    scenes = {}
    for path in args.catalogue:
        if args.year is None:
            raise InputError(
                "data-statistics: --year is needed to assign catalogue scenes to seasons"
            )
        p = require_file(path, "scene catalogue")
        try:
            table = pd.read_csv(p)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise InputError(f"{p}: not a readable CSV ({exc})") from exc
        scenes[Path(path).stem] = scenes_per_season(table, args.year, seasons, where=str(p))
    chips, pixels = {}, {}
    for d in args.chips_dir:
        store = ChipStore(require_file(d, "chip store"))
        area = _store_area(store)
        chips[area] = split_counts(store.index)
        pixels[area] = class_pixel_counts(store)
    return data_statistics(scenes, chips, pixels)
