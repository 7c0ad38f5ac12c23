"""The study's vocabulary: one owner for every name the stages and the workflow share.

Channels and their order, seasons and their default windows, tasks, protocols, splits,
initialisations, the ESA WorldCover classes (codes, names, legend colours) and the
ignore index. Standard library only, so that ``workflow/rules/common.smk`` imports it
before any job runs (without numpy, torch or GDAL) instead of repeating it.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Mapping, Sequence

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


class SeasonError(ValueError):
    """A season window that is not a calendar day or not one of :data:`SEASONS`."""


def month_day(text: str, year: int) -> dt.date:
    """``MM-DD`` (or ``MM-end``, the month's last day) as a date of ``year``."""
    try:
        month_s, day_s = str(text).split("-")
        month = int(month_s)
        day = calendar.monthrange(year, month)[1] if day_s == "end" else int(day_s)
        return dt.date(year, month, day)
    except (ValueError, calendar.IllegalMonthError) as exc:
        raise SeasonError(f"{text!r} is not a calendar day (MM-DD or MM-end): {exc}") from exc


def season_windows(
    year: int, seasons: Mapping[str, Sequence[str]] | None = None
) -> dict[str, tuple[dt.date, dt.date]]:
    """Season name -> (first day, last day), both inclusive, for composite year ``year``.

    Winter of 2021 with the default windows is 2020-12-01 .. 2021-02-28: a window whose
    start comes after its end in the calendar starts in ``year - 1``.
    """
    seasons = DEFAULT_SEASONS if seasons is None else seasons
    unknown = set(seasons) - set(SEASONS)
    missing = set(SEASONS) - set(seasons)
    if unknown or missing:
        raise SeasonError(
            f"seasons must be exactly {', '.join(SEASONS)} "
            f"(unknown: {sorted(unknown)}, missing: {sorted(missing)})"
        )
    windows = {}
    for name in SEASONS:
        start, end = seasons[name]
        last = month_day(end, year)
        first = month_day(start, year)
        if first > last:
            first = month_day(start, year - 1)
        windows[name] = (first, last)
    return windows


# --------------------------------------------------------------------------------------
# the study design
# --------------------------------------------------------------------------------------
TASKS: tuple[str, ...] = ("landcover", "treecover")
PROTOCOLS: tuple[str, ...] = ("finetune", "linear")
SPLITS: tuple[str, ...] = ("train", "val", "test")
PRETRAIN_METHODS: tuple[str, ...] = ("mae", "dino")
BUILTIN_INITS: tuple[str, ...] = ("scratch", "mae", "dino", "unet")
"""Built-in initialisations; any other init is the path of an encoder file."""

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
