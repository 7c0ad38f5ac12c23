"""Shared pieces of the study's map figures: WorldCover colour maps, the SAR false-colour
stretch, the choice of chips to show, and small plotting helpers.

The classes, codes, names and colours are :mod:`sarssl.vocabulary`'s; chips are read
with :func:`sarssl.data.loaders.load_chips` and normalised for a model with
:func:`sarssl.data.normalize.normalize_batch`, like everywhere else.

False colour (every SAR image of every figure uses the same fixed stretch, so colours are
comparable between figures, seasons and areas): red = VV, green = VH, blue = VV - VH, each
in dB, mapped linearly from the range in :data:`FALSE_COLOUR_STRETCH` to 0..1 and clipped.
With these ranges water is dark (low VV and VH), forest green-yellow (strong volume
scattering in VH, small VV-VH), bare soil and crops purple-blue (high VV-VH ratio), and
built-up white (all three high). No-data pixels (NaN in any input) are drawn white.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.patches import Patch

from ..errors import InputError, SarsslError
from ..vocabulary import (
    CHANNELS,
    IGNORE_INDEX,
    N_LANDCOVER_CLASSES,
    SEASONS,
    WORLDCOVER_CODES,
    WORLDCOVER_COLORS,
    WORLDCOVER_LABELS,
)

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- land cover
#: Colour of ignored / unlabelled pixels (class 255) in land-cover maps.
IGNORE_COLOR = "#ffffff"


def landcover_cmap() -> tuple[ListedColormap, BoundaryNorm]:
    """Colormap + norm that draw class ``k`` (0..10) in its WorldCover colour.

    Show class maps with :func:`landcover_image` (255 -> masked -> drawn as the axes
    background, white) so that ignored pixels are not mistaken for a class.
    """
    cmap = ListedColormap(list(WORLDCOVER_COLORS), name="worldcover").with_extremes(
        bad=IGNORE_COLOR
    )
    norm = BoundaryNorm(np.arange(-0.5, N_LANDCOVER_CLASSES + 0.5, 1.0), N_LANDCOVER_CLASSES)
    return cmap, norm


def landcover_image(classes: np.ndarray) -> np.ma.MaskedArray:
    """Class map (0..10, 255 ignore) as a masked array ready for ``imshow`` with
    :func:`landcover_cmap` (anything outside 0..10 is masked)."""
    c = np.asarray(classes)
    return np.ma.masked_where((c < 0) | (c >= N_LANDCOVER_CLASSES), c.astype(np.int16))


def landcover_rgb(classes: np.ndarray) -> np.ndarray:
    """Class map -> float RGB (H, W, 3) in WorldCover colours (ignored pixels white)."""
    from matplotlib.colors import to_rgb

    table = np.array([to_rgb(c) for c in WORLDCOVER_COLORS] + [to_rgb(IGNORE_COLOR)])
    c = np.asarray(classes).astype(np.int64)
    c = np.where((c >= 0) & (c < N_LANDCOVER_CLASSES), c, N_LANDCOVER_CLASSES)
    return table[c]


def landcover_legend_handles(classes: Sequence[int] | None = None) -> list[Patch]:
    """Legend patches (WorldCover colour, black edge) for ``classes`` (default all 0..10)."""
    classes = range(N_LANDCOVER_CLASSES) if classes is None else sorted({int(c) for c in classes})
    return [
        Patch(
            facecolor=WORLDCOVER_COLORS[c],
            edgecolor="0.3",
            linewidth=0.4,
            label=f"{WORLDCOVER_CODES[c]} {WORLDCOVER_LABELS[c]}",
        )
        for c in classes
        if 0 <= c < N_LANDCOVER_CLASSES
    ]


# --------------------------------------------------------------------------- false colour
#: Fixed linear stretch (dB) of each false-colour channel: (low, high) -> (0, 1).
FALSE_COLOUR_STRETCH: dict[str, tuple[float, float]] = {
    "vv": (-22.0, -2.0),  # red
    "vh": (-28.0, -8.0),  # green
    "vvvh": (0.0, 14.0),  # blue (VV - VH in dB, i.e. the co-/cross-pol ratio)
}


def stretch(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Linear map of ``values`` from [low, high] to [0, 1], clipped; NaN stays NaN."""
    return np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def false_colour(
    vv_db: np.ndarray, vh_db: np.ndarray, vvvh_db: np.ndarray | None = None
) -> np.ndarray:
    """RGB (H, W, 3) float image: R = VV, G = VH, B = VV - VH (dB), fixed stretch.

    ``vvvh_db`` defaults to ``vv_db - vh_db``. Pixels where any input is NaN are white.
    """
    vv = np.asarray(vv_db, dtype=np.float64)
    vh = np.asarray(vh_db, dtype=np.float64)
    ratio = vv - vh if vvvh_db is None else np.asarray(vvvh_db, dtype=np.float64)
    rgb = np.stack(
        [
            stretch(vv, *FALSE_COLOUR_STRETCH["vv"]),
            stretch(vh, *FALSE_COLOUR_STRETCH["vh"]),
            stretch(ratio, *FALSE_COLOUR_STRETCH["vvvh"]),
        ],
        axis=-1,
    )
    bad = ~np.isfinite(rgb).all(axis=-1)
    rgb[bad] = 1.0
    return rgb


def channel_index(band: str, season: str) -> int:
    """Index of ``{band}_{season}`` in :data:`sarssl.CHANNELS` (band: vvvh, vv or vh)."""
    name = f"{band}_{season}"
    if name not in CHANNELS:
        raise SarsslError(f"channel {name!r}: season must be one of {', '.join(SEASONS)}")
    return CHANNELS.index(name)


def season_false_colour(x_db: np.ndarray, season: str) -> np.ndarray:
    """False colour of one season of a 12-channel (C, H, W) dB array in CHANNELS order."""
    x = np.asarray(x_db, dtype=np.float64)
    if x.ndim != 3 or x.shape[0] != len(CHANNELS):
        raise SarsslError(f"false colour: expected ({len(CHANNELS)}, H, W), got {x.shape}")
    return false_colour(
        x[channel_index("vv", season)],
        x[channel_index("vh", season)],
        x[channel_index("vvvh", season)],
    )


def stretch_caption() -> str:
    """One-line description of the false-colour stretch for figure captions."""
    s = FALSE_COLOUR_STRETCH
    return (
        f"R = VV [{s['vv'][0]:g}, {s['vv'][1]:g}] dB, G = VH [{s['vh'][0]:g}, {s['vh'][1]:g}] dB, "
        f"B = VV−VH [{s['vvvh'][0]:g}, {s['vvvh'][1]:g}] dB"
    )


# --------------------------------------------------------------------------- chips
def select_rows(
    store: Any,
    n: int,
    seed: int,
    split: str | None = "test",
    ids: Sequence[str] | None = None,
) -> np.ndarray:
    """Deterministically choose ``n`` chip rows to show.

    Candidates: ``ids`` if given (in the store), else the rows of ``split`` (all rows when
    ``split`` is None). Chips with the most distinct land-cover classes are preferred (more
    to see), ties broken by a ``seed``-ed random order; the result is sorted by row.
    """
    if ids is not None:
        rows = np.array(sorted({store.row_of(str(i)) for i in ids}), dtype=np.int64)
    else:
        rows = store.rows(split)
    if rows.size == 0:
        raise InputError(f"chip store {store.path}: no chips in split {split!r} to show")
    from ..data.loaders import load_chips

    rng = np.random.default_rng(seed)
    tiebreak = rng.random(rows.size)
    lc = load_chips(store, rows, arrays=("landcover",))["landcover"].numpy()
    diversity = np.array([np.unique(m[m != IGNORE_INDEX]).size for m in lc])
    order = np.lexsort((tiebreak, -diversity))
    return np.sort(rows[order[: max(1, int(n))]])


def parse_named_paths(items: Sequence[str] | None, what: str) -> dict[str, Path]:
    """``NAME=PATH`` items (e.g. ``mae=results/.../predictions.npz``) -> ordered dict.

    A bare ``PATH`` is named after its parent folder.
    """
    out: dict[str, Path] = {}
    for item in items or []:
        name, sep, path = str(item).partition("=")
        if not sep:
            name, path = Path(item).parent.name or Path(item).stem, item
        name = name.strip()
        if not name or not path:
            raise SarsslError(f"{what}: expected NAME=PATH, got {item!r}")
        if name in out:
            raise SarsslError(f"{what}: name {name!r} given twice")
        out[name] = Path(path)
    return out


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path; InputError naming it when it does not exist."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: {what} not found")
    return p


def image_axes(ax: Any) -> None:
    """Map panel: no ticks, no grid, thin frame."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(True)
        s.set_linewidth(0.4)
