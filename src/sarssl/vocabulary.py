"""The study's vocabulary: one owner for every name the stages and the workflow share.

Channels and their order, seasons and their default windows, tasks, protocols, splits,
initialisations, the ESA WorldCover classes (codes, names, legend colours) and the
ignore index. Standard library only (and :mod:`sarssl.errors`), so that
``workflow/rules/common.smk`` imports it before any job runs (without numpy, torch or GDAL)
instead of repeating it.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence

from .errors import SarsslError

# --------------------------------------------------------------------------------------
# channels and seasons
# --------------------------------------------------------------------------------------
SEASONS: tuple[str, ...] = ("winter", "spring", "summer", "fall")
"""The four seasons of a composite year, in channel order."""

CHANNELS: tuple[str, ...] = tuple(
    f"{band}_{season}" for band in ("vvvh", "vv", "vh") for season in SEASONS
)
"""One documented channel order for every composite, chip store and model (the study's
loader order): VV-VH (dB difference) winter..fall, VV winter..fall, VH winter..fall."""

DEFAULT_SEASONS: dict[str, tuple[str, str]] = {
    "winter": ("12-01", "02-end"),
    "spring": ("03-01", "05-31"),
    "summer": ("06-01", "08-31"),
    "fall": ("09-01", "11-30"),
}
"""Season windows as inclusive ``MM-DD`` month-days (``02-end``: the last day of
February); a window whose start comes after its end starts in the previous year."""


class SeasonError(SarsslError, ValueError):
    """A season window that is not a calendar day, misses a season or overlaps another."""


def month_day(text: str, year: int, where: str = "season") -> dt.date:
    """``MM-DD`` or ``MM-end`` (the month's last day) as a date of ``year``."""
    try:
        month_s, day_s = str(text).strip().split("-")
        month = int(month_s)
        day = calendar.monthrange(year, month)[1] if day_s.lower() == "end" else int(day_s)
        return dt.date(year, month, day)
    except (ValueError, calendar.IllegalMonthError) as exc:
        raise SeasonError(
            f"{where}: bad month-day {text!r} (expected 'MM-DD' or 'MM-end')"
        ) from exc


def season_windows(
    year: int, seasons: Mapping[str, Sequence[str]] | None = None
) -> dict[str, tuple[dt.date, dt.date]]:
    """Inclusive (first day, last day) of each season of composite year ``year``.

    A window ends in ``year``; when its start month-day lies after its end (winter:
    12-01 .. 02-end) it starts in ``year - 1``, so winter of 2021 is 2020-12-01 ..
    2021-02-28. Seasons must be exactly :data:`SEASONS` and must not overlap.
    """
    seasons = DEFAULT_SEASONS if seasons is None else seasons
    if set(seasons) != set(SEASONS):
        raise SeasonError(f"seasons: expected exactly {list(SEASONS)}, got {list(seasons)}")
    out: dict[str, tuple[dt.date, dt.date]] = {}
    for name in SEASONS:
        win = seasons[name]
        if len(win) != 2:
            raise SeasonError(f"seasons.{name}: expected [start, end], got {win!r}")
        # decide the start year on a leap year, so that '02-29' style days always parse
        s_md = month_day(win[0], 2000, f"seasons.{name}")
        e_md = month_day(win[1], 2000, f"seasons.{name}")
        start_year = year - 1 if (s_md.month, s_md.day) > (e_md.month, e_md.day) else year
        end = month_day(win[1], year, f"seasons.{name}")
        start = month_day(win[0], start_year, f"seasons.{name}")
        out[name] = (start, end)
    spans = sorted(out.items(), key=lambda kv: kv[1][0])
    for (n1, (_, e1)), (n2, (s2, _)) in zip(spans, spans[1:]):
        if s2 <= e1:
            raise SeasonError(f"seasons: {n1} and {n2} overlap ({e1} >= {s2})")
    return out


def assign_season(
    date: dt.date | dt.datetime, windows: Mapping[str, tuple[dt.date, dt.date]]
) -> str | None:
    """The season whose window contains ``date`` (UTC calendar day), or None."""
    day = date.date() if isinstance(date, dt.datetime) else date
    for name, (start, end) in windows.items():
        if start <= day <= end:
            return name
    return None


# --------------------------------------------------------------------------------------
# the study design
# --------------------------------------------------------------------------------------
TASKS: tuple[str, ...] = ("landcover", "treecover")
PROTOCOLS: tuple[str, ...] = ("finetune", "linear", "knn", "decoder")
"""How an init is trained on a task: ``finetune`` (every parameter learns), ``linear``
(one linear layer on the frozen encoder's patch tokens), ``knn`` (k-nearest-neighbour
label transfer on frozen tokens, no training) and ``decoder`` (the study's conv decoder
on the frozen encoder)."""
SPLITS: tuple[str, ...] = ("train", "val", "test")
PRETRAIN_METHODS: tuple[str, ...] = ("mae", "dino")
BUILTIN_INITS: tuple[str, ...] = ("scratch", "mae", "dino", "unet", "pixel")
"""Built-in initialisations; any other init is the path of an encoder file. ``unet`` is
the supervised spatial baseline, ``pixel`` the per-pixel control (a linear model on each
pixel's channels), and ``scratch`` under a frozen protocol is the frozen randomly
initialised encoder (the negative control)."""
INIT_PROTOCOLS: dict[str, tuple[str, ...]] = {"unet": ("finetune",), "pixel": ("linear",)}
"""Inits that exist under some protocols only (the others take every protocol): the
U-Net has no frozen encoder, the per-pixel control no encoder at all."""


def init_protocols(init: str, protocols: Iterable[str]) -> list[str]:
    """The ``protocols`` (in their order) that ``init`` can be run with."""
    allowed = INIT_PROTOCOLS.get(init)
    return [p for p in protocols if allowed is None or p in allowed]


# --------------------------------------------------------------------------------------
# land cover: ESA WorldCover 2020 (product user manual v1.0)
# --------------------------------------------------------------------------------------
WORLDCOVER_CODES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100)
"""WorldCover codes of training classes 0..10, in class order."""
WORLDCOVER_NAMES: tuple[str, ...] = (
    "tree_cover",
    "shrubland",
    "grassland",
    "cropland",
    "built_up",
    "bare_sparse",
    "snow_ice",
    "water",
    "herbaceous_wetland",
    "mangroves",
    "moss_lichen",
)
"""Machine names of classes 0..10 (metric names: ``iou_<name>``)."""
WORLDCOVER_LABELS: tuple[str, ...] = (
    "Tree cover",
    "Shrubland",
    "Grassland",
    "Cropland",
    "Built-up",
    "Bare / sparse vegetation",
    "Snow and ice",
    "Permanent water bodies",
    "Herbaceous wetland",
    "Mangroves",
    "Moss and lichen",
)
"""Human-readable names of classes 0..10."""
WORLDCOVER_COLORS: tuple[str, ...] = (
    "#006400",
    "#ffbb22",
    "#ffff4c",
    "#f096ff",
    "#fa0000",
    "#b4b4b4",
    "#f0f0f0",
    "#0064c8",
    "#0096a0",
    "#00cf75",
    "#fae6a0",
)
"""Official legend colours of classes 0..10."""
N_LANDCOVER_CLASSES: int = len(WORLDCOVER_CODES)
IGNORE_INDEX: int = 255
"""Land-cover value meaning 'no label' (the loss's ``ignore_index``)."""


def fraction_key(fraction: float | str) -> str:
    """The one spelling of a label fraction, in ``fractions.json``, paths (``f0.05_s0``) and
    tables: Python's shortest round-trip float text (``0.05``, ``1.0``)."""
    return repr(float(fraction))
