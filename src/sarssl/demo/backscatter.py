"""Synthetic ground truth for the demo: a landscape, its tree cover and its backscatter.

Everything here is *synthetic but plausible* and fully determined by a seed, so the demo
products rendered by :mod:`sarssl.demo.simulate` have a known truth that the downstream stages
(preprocessing, composites, chips, learning) can be checked against. The world is built so
that land-cover classes are **confusable pixel by pixel and separable in context** (what a
model with spatial context, and self-supervision, has to learn); docs/demo.md documents the
design, the literature it rests on and the statistics the tests hold it to.

World (:func:`synth_world`, 10 m cells)
    * land-cover *labels* in ESA WorldCover 2020 codes (10 tree cover, 20 shrubland,
      30 grassland, 40 cropland, 50 built-up, 60 bare/sparse, 80 permanent water,
      90 herbaceous wetland), with per-profile class proportions;
    * *surface states* that scatter (forest, canopy gap, shrub, grass, bare soil, open water,
      unflooded/flooded wetland, roofs, double-bounce facades, streets/asphalt, field margins,
      and the crop phenological stages bare seedbed, emergent, cereal canopy, broadleaf
      canopy, stubble), so one label covers several looks and one look several labels;
    * field parcels (strips cut into fields) with per-parcel crop calendars: each parcel grows
      a crop type whose stage sequence over the four seasons is shifted by its own sowing date
      (so a crop pixel looks like bare soil or grass in some season), fallow parcels look like
      grass, parcel edges are grassy margins;
    * forest vs shrub that differ more in texture (crowns and canopy gaps, 20-30 m) and
      seasonal stability than in mean; wetlands between water and grass with seasonal
      flooding (open water or bright flooded vegetation); settlements as blocks of bright
      double-bounce facades over roofs, dark streets and gardens; roads and rivers as thin
      lines;
    * within-class spatially correlated texture at 20-100 m, static and per season.

    The result is ``db[pol]``: sigma0 in dB at :data:`REF_INCIDENCE_DEG` for every cell and
    season, plus an incidence slope per cell (linear in dB: steep for water and bare soil,
    weak for volume-scattering forest), evaluated at the *local* incidence angle.

Speckle is multiplicative, Gamma distributed with shape = ENL and mean 1 (fully developed
speckle of an ENL-look intensity image), applied by the renderer.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..io import atomic_path
from ..vocabulary import SEASONS

log = logging.getLogger(__name__)

REF_INCIDENCE_DEG = 35.0
"""Incidence angle (degrees) at which the signature values hold."""


@dataclass(frozen=True)
class SurfaceClass:
    """One land-cover class of the labels: its WorldCover code and name."""

    code: int
    name: str


#: The land-cover classes, indexed by the class index maps of :func:`synth_world`.
CLASSES: tuple[SurfaceClass, ...] = (
    SurfaceClass(10, "tree_cover"),
    SurfaceClass(20, "shrubland"),
    SurfaceClass(30, "grassland"),
    SurfaceClass(40, "cropland"),
    SurfaceClass(50, "built_up"),
    SurfaceClass(60, "bare_sparse"),
    SurfaceClass(80, "permanent_water"),
    SurfaceClass(90, "herbaceous_wetland"),
)
TREE, SHRUB, GRASS, CROP, BUILT, BARE, WATER, WETLAND = range(len(CLASSES))
CLASS_CODES = np.array([c.code for c in CLASSES], dtype=np.uint8)

PROFILES = ("mediterranean", "savanna")

#: Surface states (what scatters), each with a signature per profile, season and pol.
STATES: tuple[str, ...] = (
    "forest",
    "canopy_gap",
    "shrub",
    "grass",
    "bare_soil",
    "open_water",
    "wetland",
    "flooded_vegetation",
    "roof",
    "facade",
    "street",
    "field_margin",
    "crop_bare",
    "crop_emergent",
    "crop_cereal",
    "crop_broadleaf",
    "crop_stubble",
)
(
    S_FOREST,
    S_GAP,
    S_SHRUB,
    S_GRASS,
    S_BARE,
    S_WATER,
    S_WET,
    S_FLOODVEG,
    S_ROOF,
    S_FACADE,
    S_STREET,
    S_MARGIN,
    S_C_BARE,
    S_C_EMERGENT,
    S_C_CEREAL,
    S_C_BROADLEAF,
    S_C_STUBBLE,
) = range(len(STATES))
CROP_STAGES = (S_C_BARE, S_C_EMERGENT, S_C_CEREAL, S_C_BROADLEAF, S_C_STUBBLE)

# Signatures: sigma0 (dB) at REF_INCIDENCE_DEG, seasons (winter, spring, summer, fall) of the
# study; (VV, VH). Literature in docs/demo.md. Natural states vary with the season of the
# profile (mediterranean: wet winter/spring, dry summer; savanna (southern hemisphere): rains
# Nov-Apr, so the study's "winter" Dec-Feb is the growing season and Sep-Nov the late dry
# season with leaf-off miombo). Crop stages and urban states are season-independent: the
# season enters crops through each parcel's calendar.
_SIG = {
    "mediterranean": {
        S_FOREST: ([-7.4, -7.3, -7.1, -7.3], [-12.9, -12.7, -12.5, -12.7]),
        S_GAP: ([-9.8, -9.4, -10.8, -10.2], [-16.4, -15.8, -17.6, -16.8]),
        S_SHRUB: ([-8.6, -8.1, -9.6, -9.0], [-14.4, -13.8, -15.6, -15.0]),
        S_GRASS: ([-10.2, -9.6, -12.2, -11.0], [-17.0, -16.4, -19.6, -18.2]),
        S_BARE: ([-12.5, -13.0, -15.0, -13.2], [-20.5, -21.0, -23.0, -21.2]),
        S_WATER: ([-19.5, -21.0, -22.0, -20.5], [-26.5, -27.0, -27.5, -27.0]),
        S_WET: ([-9.8, -9.2, -11.2, -10.4], [-16.5, -15.8, -18.6, -17.4]),
        S_FLOODVEG: ([-6.0, -6.5, -7.0, -6.5], [-15.5, -15.0, -16.0, -15.5]),
    },
    "savanna": {
        S_FOREST: ([-7.0, -7.2, -7.9, -8.3], [-12.5, -12.8, -13.8, -14.3]),
        S_GAP: ([-9.5, -10.0, -12.4, -12.9], [-16.0, -16.7, -20.0, -20.6]),
        S_SHRUB: ([-8.1, -8.7, -10.2, -10.8], [-13.9, -14.7, -16.6, -17.3]),
        S_GRASS: ([-9.4, -10.0, -12.8, -13.4], [-15.9, -16.8, -20.3, -21.0]),
        S_BARE: ([-11.5, -12.5, -14.6, -15.2], [-19.5, -20.5, -23.0, -23.6]),
        S_WATER: ([-20.0, -21.0, -22.5, -21.5], [-27.0, -27.5, -28.5, -28.0]),
        S_WET: ([-9.0, -9.6, -12.0, -12.6], [-15.4, -16.0, -19.0, -19.6]),
        S_FLOODVEG: ([-5.5, -6.5, -7.5, -7.5], [-14.5, -15.0, -16.0, -16.0]),
    },
}
_SEASONLESS = {
    S_ROOF: (-8.5, -15.0),
    S_FACADE: (0.5, -8.0),  # double bounce wall-ground (+ per-block orientation gain)
    S_STREET: (-15.5, -23.5),  # asphalt: specular, dark
    S_C_BARE: (-13.0, -21.0),  # seedbed / ploughed (+ per-parcel roughness-moisture offset)
    S_C_EMERGENT: (-11.5, -18.5),
    S_C_CEREAL: (-12.0, -16.0),  # wheat/barley after heading: VV attenuated by the stems
    S_C_BROADLEAF: (-8.5, -13.5),  # maize/sunflower at full canopy: strong volume scattering
    S_C_STUBBLE: (-11.0, -18.5),
}
for _prof in _SIG.values():
    for _s, (_vv, _vh) in _SEASONLESS.items():
        _prof[_s] = ([_vv] * 4, [_vh] * 4)
    _prof[S_MARGIN] = _prof[S_GRASS]

# incidence-angle slope, dB per degree of local incidence (VV, VH), per land-cover class
_SLOPE_DB_PER_DEG = {
    "VV": [-0.06, -0.10, -0.15, -0.16, -0.10, -0.25, -0.45, -0.15],
    "VH": [-0.04, -0.07, -0.10, -0.11, -0.08, -0.18, -0.30, -0.10],
}

# texture (dB): (static std, seasonal std, correlation length in m) per state; VH varies
# 1.2 times as much as VV (volume scattering is the more variable mechanism)
_TEXTURE = {
    S_FOREST: (1.9, 0.25, 20.0),  # crowns and crown shadows: rough, stable over the year
    S_GAP: (0.6, 0.4, 20.0),
    S_SHRUB: (0.5, 1.0, 60.0),  # smooth, but changes with the seasons
    S_GRASS: (0.6, 0.8, 90.0),
    S_BARE: (1.0, 0.6, 50.0),
    S_WATER: (0.0, 1.2, 100.0),  # wind patterns
    S_WET: (0.8, 0.9, 40.0),
    S_FLOODVEG: (1.0, 0.8, 40.0),
    S_ROOF: (1.8, 0.3, 20.0),
    S_FACADE: (1.5, 0.3, 20.0),
    S_STREET: (0.8, 0.3, 20.0),
    S_MARGIN: (0.6, 0.6, 20.0),
    S_C_BARE: (0.5, 0.4, 40.0),
    S_C_EMERGENT: (0.4, 0.4, 40.0),
    S_C_CEREAL: (0.4, 0.4, 40.0),
    S_C_BROADLEAF: (0.4, 0.4, 40.0),
    S_C_STUBBLE: (0.5, 0.4, 40.0),
}
_TEXTURE_SCALES_M = (20.0, 40.0, 50.0, 60.0, 90.0, 100.0)

# crop calendars: stage per season (winter, spring, summer, fall) of each crop type
_CALENDARS = {
    "mediterranean": {
        "winter_cereal": (S_C_EMERGENT, S_C_CEREAL, S_C_STUBBLE, S_C_BARE),
        "summer_crop": (S_C_BARE, S_C_EMERGENT, S_C_BROADLEAF, S_C_STUBBLE),
        "fallow": (S_GRASS, S_GRASS, S_GRASS, S_GRASS),
    },
    "savanna": {
        "rainfed_maize": (S_C_BROADLEAF, S_C_STUBBLE, S_C_BARE, S_C_BARE),
        "late_crop": (S_C_EMERGENT, S_C_BROADLEAF, S_C_STUBBLE, S_C_BARE),
        "fallow": (S_GRASS, S_GRASS, S_GRASS, S_GRASS),
    },
}
_CROP_MIX = {"mediterranean": (0.5, 0.35, 0.15), "savanna": (0.6, 0.25, 0.15)}
#: sowing shift of a parcel's calendar in seasons (-1, 0, +1) and its probabilities
SOWING_SHIFT_P = (0.2, 0.6, 0.2)

# land-cover proportions per profile (WorldCover-like shares of the demo areas: the urban
# fringe of northern Rome; rural Manica province around Chimoio), and the layout scales
_LAYOUT = {
    "mediterranean": dict(
        built=0.22,
        crop=0.27,
        wetland=0.012,
        natural=dict(tree=0.40, shrub=0.13, grass=0.43, bare=0.04),
        parcel_m=(70.0, 260.0),
        block_m=(40.0, 110.0),
        roof_px=(1, 2),  # building depth behind the facade row, cells (inclusive range)
        towns=(1, 3),
        roads=4,
        flooded_seasons=(0.55, 0.45, 0.05, 0.25),
    ),
    "savanna": dict(
        built=0.03,
        crop=0.28,
        wetland=0.015,
        natural=dict(tree=0.50, shrub=0.25, grass=0.22, bare=0.03),
        parcel_m=(40.0, 160.0),
        block_m=(40.0, 100.0),
        roof_px=(1, 1),  # low-rise: one row of buildings, yards and trees behind
        towns=(0, 3),
        roads=3,
        flooded_seasons=(0.7, 0.45, 0.05, 0.05),
    ),
}
# tree-cover percent (mean, std) of each class at 10 m, for the MOD44B-like truth
_TREECOVER = {
    "mediterranean": [(68, 12), (14, 6), (4, 3), (1, 1), (7, 5), (0.5, 0.5), (0, 0), (8, 5)],
    "savanna": [(55, 12), (18, 7), (5, 3), (2, 2), (8, 5), (1, 1), (0, 0), (10, 6)],
}
CANOPY_GAP_TREECOVER = 15.0
"""Tree cover (%) of a canopy gap (a tree-cover-labelled cell with a gap signature)."""


def profile_for(lat: float) -> str:
    """The land-cover/backscatter profile of a latitude: savanna in the tropics."""
    return "savanna" if abs(lat) < 25.0 else "mediterranean"


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown land-cover profile {profile!r} (choose {', '.join(PROFILES)})")


# --------------------------------------------------------------------------------------
# signatures
# --------------------------------------------------------------------------------------
def signature_table(profile: str) -> dict[str, np.ndarray]:
    """dB signatures of the surface states: ``{"VV": (n_states, 4), "VH": (n_states, 4)}``."""
    _check_profile(profile)
    sig = _SIG[profile]
    return {
        pol: np.array([sig[s][p] for s in range(len(STATES))], dtype=np.float64)
        for p, pol in enumerate(("VV", "VH"))
    }


def slope_table() -> dict[str, np.ndarray]:
    """Incidence slopes (dB/degree) per land-cover class: ``{"VV": (n_classes,), "VH": ...}``."""
    return {pol: np.array(_SLOPE_DB_PER_DEG[pol], dtype=np.float64) for pol in ("VV", "VH")}


def crop_calendars(profile: str) -> dict[str, tuple[int, ...]]:
    """Crop type -> stage (index into :data:`STATES`) per season, before sowing shifts."""
    _check_profile(profile)
    return dict(_CALENDARS[profile])


def write_sigma0_table(path: str | os.PathLike, profile: str, uniform_db: float | None) -> None:
    """Write the signatures as tidy CSV: one row per surface state, season and polarisation
    (the world adds parcel offsets, texture and incidence effects to them; docs/demo.md)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["state", "profile", "season", "polarisation", "sigma0_db", "ref_incidence_deg"])
        if uniform_db is not None:
            for season in SEASONS:
                for pol in ("VV", "VH"):
                    w.writerow(
                        ["uniform", "uniform", season, pol, f"{uniform_db:.2f}", REF_INCIDENCE_DEG]
                    )
            return
        table = signature_table(profile)
        for i, name in enumerate(STATES):
            for s, season in enumerate(SEASONS):
                for pol in ("VV", "VH"):
                    w.writerow(
                        [name, profile, season, pol, f"{table[pol][i, s]:.2f}", REF_INCIDENCE_DEG]
                    )


def sigma0_linear(
    db_ref: np.ndarray, slope: np.ndarray, local_incidence_deg: np.ndarray
) -> np.ndarray:
    """sigma0 (linear, float32) from the reference dB and the incidence slope of each sample.

    ``sigma0_dB = db_ref + slope * (theta_loc - 35 deg)``, with the local incidence clamped
    to [5, 89] degrees (the linear-in-dB law is not meant for near-specular or grazing
    geometry).
    """
    theta = np.clip(local_incidence_deg, 5.0, 89.0)
    db = db_ref + slope * (theta - REF_INCIDENCE_DEG)
    return np.power(np.float32(10.0), np.float32(0.1) * db.astype(np.float32)).astype(np.float32)


def speckle(rng: np.random.Generator, shape: tuple[int, ...], enl: float) -> np.ndarray:
    """Multiplicative speckle: Gamma(shape=ENL, scale=1/ENL), mean 1, variance 1/ENL."""
    if enl <= 0:
        raise ValueError(f"ENL must be positive, got {enl}")
    return rng.gamma(enl, 1.0 / enl, size=shape).astype(np.float32)


# --------------------------------------------------------------------------------------
# random fields and shapes
# --------------------------------------------------------------------------------------
def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Gaussian-filtered white noise with correlation length ``scale_px``, zero mean, unit std.

    Long correlation lengths are drawn on a coarser grid (4 cells per correlation length)
    and interpolated up (bilinear), which is statistically close and much faster.
    """
    scale_px = max(float(scale_px), 0.5)
    factor = max(1, int(scale_px // 4))
    coarse = tuple(int(np.ceil(n / factor)) + 4 for n in shape)
    f = ndimage.gaussian_filter(
        rng.standard_normal(coarse, dtype=np.float32), sigma=scale_px / factor, mode="wrap"
    )
    if factor > 1:
        # bilinear up-sampling; output cell i sits at coarse coordinate (i + 0.5) / factor + 1.5
        f = ndimage.zoom(f, factor, order=1, mode="nearest", grid_mode=True)
        f = f[2 * factor : 2 * factor + shape[0], 2 * factor : 2 * factor + shape[1]]
    else:
        f = f[: shape[0], : shape[1]]
    f = f - f.mean()
    sd = f.std()
    return (f / sd if sd > 0 else f).astype(np.float32)


def fractal_field(
    rng: np.random.Generator, shape: tuple[int, int], resolution: float, scales_m=(2000, 600, 200)
) -> np.ndarray:
    """Sum of smooth fields at several scales (weights 0.6 per octave), unit std."""
    f = np.zeros(shape, dtype=np.float32)
    for k, s in enumerate(scales_m):
        f += np.float32(0.6**k) * smooth_field(rng, shape, s / resolution)
    return f / f.std()


def parcels(
    rng: np.random.Generator,
    shape: tuple[int, int],
    resolution: float,
    size_m=(90.0, 350.0),
    angle_deg: float | None = None,
) -> np.ndarray:
    """Parcel ids (int32) of a field pattern: strips of random width, each cut into random
    lengths (staggered per strip), on a grid rotated by ``angle_deg`` (random in [-25, 25])."""
    h, w = shape
    a = np.radians(rng.uniform(-25, 25) if angle_deg is None else angle_deg)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) * np.float32(resolution)
    u = xx * np.float32(np.cos(a)) + yy * np.float32(np.sin(a))
    v = -xx * np.float32(np.sin(a)) + yy * np.float32(np.cos(a))
    del xx, yy
    u -= u.min()
    v -= v.min()

    def cuts(length: float) -> np.ndarray:
        n = int(length / size_m[0]) + 2
        edges = np.concatenate([[0.0], np.cumsum(rng.uniform(*size_m, size=n))])
        return edges[: np.searchsorted(edges, length) + 1]

    strip_edges = cuts(float(v.max()) + 1)
    strip = np.searchsorted(strip_edges, v, side="right") - 1
    u_len = float(u.max()) + 1
    # per strip, staggered cut positions: id = strip * stride + segment
    stride = int(u_len / size_m[0]) + 4
    seg = np.zeros(shape, dtype=np.int32)
    offsets = rng.uniform(0, size_m[0], size=len(strip_edges))
    cut_table = [cuts(u_len + size_m[0]) - offsets[s] for s in range(len(strip_edges))]
    # vectorised: the segment of u within the strip's own cuts
    width = max(len(c) for c in cut_table)
    table = np.full((len(strip_edges), width), np.inf, dtype=np.float32)
    for s, c in enumerate(cut_table):
        table[s, : len(c)] = c
    order = np.argsort(strip.ravel(), kind="stable")
    flat_u = u.ravel()[order]
    flat_s = strip.ravel()[order]
    bounds = np.searchsorted(flat_s, np.arange(len(strip_edges) + 1))
    out = np.empty(flat_u.shape, dtype=np.int32)
    for s in range(len(strip_edges)):
        a0, a1 = bounds[s], bounds[s + 1]
        if a1 > a0:
            out[a0:a1] = np.searchsorted(table[s], flat_u[a0:a1], side="right")
    seg.ravel()[order] = out
    return (strip.astype(np.int32) * stride + seg).astype(np.int32)


def boundaries(ids: np.ndarray) -> np.ndarray:
    """Cells whose right or lower neighbour belongs to another id (1-cell-wide edges)."""
    edge = np.zeros(ids.shape, dtype=bool)
    edge[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    edge[:-1, :] |= ids[:-1, :] != ids[1:, :]
    return edge


def _river_distance(
    rng: np.random.Generator, shape: tuple[int, int], resolution: float
) -> np.ndarray:
    """Distance (m) to a meandering river centre line crossing the area."""
    h, w = shape
    horizontal = rng.random() < 0.5
    n = w if horizontal else h
    other = h if horizontal else w
    t = np.arange(n) * resolution
    length = n * resolution
    centre = other * resolution * rng.uniform(0.3, 0.7)
    wander = smooth_field(rng, (n, 1), max(n / 6, 2))[:, 0]
    span = other * resolution
    off = (
        0.08 * span * np.sin(2 * np.pi * t / (length * rng.uniform(0.3, 0.6)) + rng.uniform(0, 6.3))
        + 0.02
        * span
        * np.sin(2 * np.pi * t / (length * rng.uniform(0.12, 0.2)) + rng.uniform(0, 6.3))
        + 0.06 * span * wander
    )
    pos = np.clip((centre + off) / resolution, 0, other - 1)
    ts = np.linspace(0, n - 1, 4 * n)
    ps = np.interp(ts, np.arange(n), pos)
    line = np.zeros(shape, dtype=bool)
    a = np.round(ts).astype(int)
    b = np.round(ps).astype(int)
    if horizontal:
        line[b, a] = True
    else:
        line[a, b] = True
    return (ndimage.distance_transform_edt(~line) * resolution).astype(np.float32)


def _line_distance(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, wander_m: float
) -> np.ndarray:
    """Distance (m) to a gently bending straight line through a random point of the area."""
    y0 = rng.uniform(0.1, 0.9) * float(yy.max())
    x0 = rng.uniform(0.1, 0.9) * float(xx.max())
    a = rng.uniform(0, np.pi)
    along = (xx - x0) * np.float32(np.cos(a)) + (yy - y0) * np.float32(np.sin(a))
    across = -(xx - x0) * np.float32(np.sin(a)) + (yy - y0) * np.float32(np.cos(a))
    k = rng.uniform(1.0, 3.0) * 2 * np.pi / max(float(xx.max()), float(yy.max()), 1.0)
    return np.abs(across - np.float32(wander_m) * np.sin(np.float32(k) * along))


# --------------------------------------------------------------------------------------
# the world
# --------------------------------------------------------------------------------------
@dataclass
class World:
    """A synthetic landscape on a grid of cells (10 m in the demo).

    ``classes``: uint8 land-cover class indices into :data:`CLASSES` (the labels);
    ``state``: uint8 ``(4, H, W)`` surface state (index into :data:`STATES`) per season;
    ``db``: ``{"VV", "VH"}`` -> float32 ``(4, H, W)`` sigma0 (dB) at
    :data:`REF_INCIDENCE_DEG` per season; ``parcel``: int32 crop-parcel id per cell (-1
    outside cropland); ``parcel_type``/``parcel_shift``/``parcel_stages``: per parcel, its
    crop type (index into :func:`crop_calendars`), sowing shift (seasons) and stage per
    season; ``treecover``: float32 percent tree cover per cell; ``slope``: ``{"VV", "VH"}``
    -> float32 incidence slope (dB/degree) per cell.
    """

    profile: str
    classes: np.ndarray
    state: np.ndarray
    db: dict[str, np.ndarray]
    parcel: np.ndarray
    parcel_type: np.ndarray
    parcel_shift: np.ndarray
    parcel_stages: np.ndarray
    treecover: np.ndarray
    slope: dict[str, np.ndarray]


def uniform_world(shape: tuple[int, int], value_db: float) -> World:
    """A world giving ``value_db`` everywhere, every season and polarisation, no slope
    (grassland labels: the calibration checks of the simulator use it)."""
    h, w = shape
    db = np.full((4, h, w), value_db, dtype=np.float32)
    classes = np.full(shape, GRASS, dtype=np.uint8)
    none = np.zeros(0, dtype=np.int32)
    return World(
        "uniform",
        classes,
        np.full((4, h, w), S_GRASS, dtype=np.uint8),
        {"VV": db, "VH": db},
        np.full(shape, -1, dtype=np.int32),
        none,
        none,
        np.zeros((0, 4), dtype=np.uint8),
        np.zeros(shape, dtype=np.float32),
        {"VV": np.zeros(shape, dtype=np.float32), "VH": np.zeros(shape, dtype=np.float32)},
    )


def _compact(ids: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, inv = np.unique(ids, return_inverse=True)
    return inv.reshape(ids.shape).astype(np.int32), len(uniq)


def _pick_top(score: np.ndarray, candidates: np.ndarray, count: int) -> np.ndarray:
    """Mask of the ``count`` candidate cells with the highest score."""
    out = np.zeros(score.shape, dtype=bool)
    idx = np.flatnonzero(candidates)
    if count <= 0 or idx.size == 0:
        return out
    count = min(count, idx.size)
    top = idx[np.argpartition(-score.ravel()[idx], count - 1)[:count]]
    out.ravel()[top] = True
    return out


def synth_world(shape: tuple[int, int], resolution: float, seed: int, profile: str) -> World:
    """The synthetic landscape of an area (see the module docstring and docs/demo.md).

    ``shape`` (rows, cols) at ``resolution`` metres. Deterministic for a given seed;
    vectorised numpy (a 20 x 20 km area at 10 m takes a few seconds).
    """
    _check_profile(profile)
    rng = np.random.default_rng(seed)
    lay = _LAYOUT[profile]
    h, w = shape
    res = float(resolution)
    n_cells = h * w
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) * np.float32(res)

    # natural vegetation field (split into classes below, on the cells left by the towns
    # and fields) and canopy gaps (~10 % of tree cover)
    veg = fractal_field(rng, shape, res, (900, 300, 90, 30))
    gap_field = smooth_field(rng, shape, 1.5)
    classes = np.full(shape, TREE, dtype=np.uint8)
    base = np.full(shape, S_FOREST, dtype=np.uint8)

    # settlements: a town (and villages) cut into blocks with streets, facades, roofs, gardens
    urban = np.zeros(shape, dtype=bool)
    blocks = np.zeros(shape, dtype=np.int32)
    if lay["built"] > 0:
        n_towns = int(rng.integers(lay["towns"][0], lay["towns"][1] + 1)) + 1
        diag = np.float32(np.sqrt(h * w) * res)
        pot = np.full(shape, -np.inf, dtype=np.float32)
        for t in range(n_towns):
            cy, cx = rng.uniform(0.15, 0.85) * h * res, rng.uniform(0.15, 0.85) * w * res
            radius = 1.0 if t == 0 else rng.uniform(0.25, 0.45)
            pot = np.maximum(pot, -np.hypot(yy - cy, xx - cx) / diag / np.float32(radius))
        pot += np.float32(0.12) * fractal_field(rng, shape, res, (600, 200))
        urban = pot >= np.quantile(pot[::3, ::3], 1.0 - 1.1 * lay["built"])
        blocks, n_blk = _compact(parcels(rng, shape, res, size_m=lay["block_m"]))
        street = boundaries(blocks)
        din = ndimage.distance_transform_edt(~street).astype(np.float32)
        lo, hi = lay["roof_px"]
        depth = rng.integers(lo, hi + 1, size=n_blk).astype(np.float32)[blocks]
        park = (rng.random(n_blk) < 0.1)[blocks]
        garden_tree = (rng.random(n_blk) < 0.5)[blocks]
        # double bounce only from walls facing the sensor: those along a street that runs
        # across the range direction (the street cell is the left or right neighbour)
        across = np.zeros(shape, dtype=bool)
        across[:, 1:] |= street[:, :-1]
        across[:, :-1] |= street[:, 1:]
        town = np.where(
            street,
            S_STREET,
            np.where(
                (din <= 1.0) & across,
                S_FACADE,
                np.where(din <= 1.0 + depth, S_ROOF, np.where(garden_tree, S_FOREST, S_GRASS)),
            ),
        ).astype(np.uint8)
        del across
        built = urban & ~park
        base[built] = town[built]
        classes[built] = BUILT
        parks = urban & park
        classes[parks] = np.where(garden_tree[parks], TREE, GRASS)
        base[parks] = np.where(garden_tree[parks], S_FOREST, S_GRASS)
        del din, depth, town, pot

    # cropland: parcels of the agricultural zone outside the towns, up to the target share
    pid, n_par = _compact(parcels(rng, shape, res, size_m=lay["parcel_m"]))
    zone = fractal_field(rng, shape, res, (2500, 800))
    counts = np.bincount(pid.ravel(), minlength=n_par)
    free = np.bincount(pid.ravel(), weights=(~urban).ravel(), minlength=n_par)
    zone_par = np.bincount(pid.ravel(), weights=zone.ravel(), minlength=n_par) / np.maximum(
        counts, 1
    )
    order = np.argsort(-zone_par)
    take = int(np.searchsorted(np.cumsum(free[order]), lay["crop"] * n_cells)) + 1
    is_crop = np.zeros(n_par, dtype=bool)
    is_crop[order[:take]] = True
    crop = is_crop[pid] & ~urban
    calendars = np.array(list(_CALENDARS[profile].values()), dtype=np.uint8)  # (types, 4)
    ptype = rng.choice(len(calendars), size=n_par, p=_CROP_MIX[profile]).astype(np.uint8)
    shift = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=n_par, p=SOWING_SHIFT_P)
    season_idx = (np.arange(4)[None, :] - shift[:, None].astype(np.int64)) % 4
    stages = calendars[ptype[:, None], season_idx]  # (n_par, 4)
    classes[crop] = CROP

    # natural vegetation: the field split by quantiles over the cells left (tree > shrub >
    # grass > bare), so the class shares follow the profile
    natural = ~urban & ~crop
    nat = lay["natural"]
    v = veg[natural]
    q_bare, q_grass, q_shrub = np.quantile(
        v[::7], np.cumsum([nat["bare"], nat["grass"], nat["shrub"]])
    )
    nat_cls = np.select([v < q_bare, v < q_grass, v < q_shrub], [BARE, GRASS, SHRUB], TREE)
    classes[natural] = nat_cls
    base[natural] = np.array([S_FOREST, S_SHRUB, S_GRASS, 0, 0, S_BARE], dtype=np.uint8)[nat_cls]
    gaps = (classes == TREE) & (base == S_FOREST) & (gap_field > 1.25)
    base[gaps] = S_GAP
    del v, nat_cls, veg, gap_field
    margin = crop & boundaries(pid)
    parcel = np.where(crop, pid, -1).astype(np.int32)
    del zone

    # roads: thin straight-ish lines (10-20 m), built-up in WorldCover
    road = np.zeros(shape, dtype=bool)
    for r in range(int(lay["roads"]) + int(rng.integers(0, 2))):
        half = 5.0 if r else 9.0
        road |= _line_distance(rng, yy, xx, rng.uniform(0, 150)) <= half
    classes[road] = BUILT
    base[road] = S_STREET
    crop &= ~road
    margin &= ~road
    parcel[road] = -1

    # water: a river (15-35 m wide), maybe a stream and a lake; wetland along the water
    water = _river_distance(rng, shape, res) <= rng.uniform(7.0, 17.0)
    if rng.random() < 0.7:
        water |= _river_distance(rng, shape, res) <= 5.0
    if rng.random() < 0.5:
        ly, lx = rng.uniform(0.15, 0.85) * h * res, rng.uniform(0.15, 0.85) * w * res
        radius = rng.uniform(100.0, 250.0)
        wobble = np.float32(0.25 * radius) * smooth_field(rng, shape, 12)
        water |= np.hypot(yy - ly, xx - lx) <= radius + wobble
    dist_water = ndimage.distance_transform_edt(~water).astype(np.float32) * np.float32(res)
    wet_score = smooth_field(rng, shape, 6) - dist_water / np.float32(120.0)
    near = (dist_water > 0) & (dist_water <= 300) & ~urban & ~road
    wetland = _pick_top(wet_score, near, int(lay["wetland"] * n_cells))
    classes[wetland] = WETLAND
    base[wetland] = S_WET
    classes[water] = WATER
    base[water] = S_WATER
    crop &= ~(wetland | water)
    margin &= crop
    parcel[wetland | water] = -1
    del dist_water, wet_score, yy, xx

    # seasonal states: crop calendars, field margins, seasonal flooding of wetlands
    state = np.repeat(base[None], 4, axis=0)
    crop_stage = stages[np.maximum(parcel, 0)]  # (H, W, 4)
    flood_field = smooth_field(rng, shape, 4)
    flood_kind = smooth_field(rng, shape, 3)
    for s in range(4):
        st = state[s]
        st[crop] = crop_stage[..., s][crop]
        st[margin] = S_MARGIN
        if wetland.any():
            thr = np.quantile(flood_field[wetland], 1.0 - lay["flooded_seasons"][s])
            flooded = wetland & (flood_field >= thr)
        else:
            flooded = wetland
        st[flooded] = np.where(flood_kind[flooded] < -0.3, S_WATER, S_FLOODVEG)
    del crop_stage, flood_field, flood_kind

    # backscatter: signature + parcel offsets + facade gains + static and seasonal texture
    sig = signature_table(profile)
    tex = np.array([_TEXTURE[s] for s in range(len(STATES))], dtype=np.float32)
    scales = np.array(_TEXTURE_SCALES_M, dtype=np.float32)
    scale_of = np.argmin(np.abs(tex[:, 2][:, None] - scales[None, :]), axis=1)
    used = sorted(set(scale_of.tolist()))
    static = {k: smooth_field(rng, shape, scales[k] / res) for k in used}
    parcel_off = rng.normal(0.0, 1.0, size=(n_par, 4)).astype(np.float32)
    parcel_rough = rng.normal(0.0, 1.5, size=n_par).astype(np.float32)
    facade_gain = (
        rng.normal(0.0, 2.5, size=int(blocks.max()) + 1).astype(np.float32)[blocks]
        if lay["built"] > 0
        else np.zeros(shape, dtype=np.float32)
    )
    db = {pol: np.empty((4, h, w), dtype=np.float32) for pol in ("VV", "VH")}
    for s in range(4):
        st = state[s]
        k_of = scale_of[st]
        t_static = np.zeros(shape, dtype=np.float32)
        t_season = np.zeros(shape, dtype=np.float32)
        for k in used:
            m = k_of == k
            t_static[m] = static[k][m]
            t_season[m] = smooth_field(rng, shape, scales[k] / res)[m]
        d = tex[st, 0] * t_static + tex[st, 1] * t_season
        d[crop] += parcel_off[parcel[crop], s]
        bare_crop = crop & (st == S_C_BARE)
        d[bare_crop] += parcel_rough[parcel[bare_crop]]
        fac = st == S_FACADE
        d[fac] += facade_gain[fac]
        for pol, gain in (("VV", 1.0), ("VH", 1.2)):
            db[pol][s] = sig[pol][st, s].astype(np.float32) + np.float32(gain) * d
        del t_static, t_season, d

    tc = np.array(_TREECOVER[profile], dtype=np.float32)
    noise = smooth_field(rng, shape, 60.0 / res)
    treecover = tc[classes, 0] + tc[classes, 1] * noise
    treecover[gaps & (classes == TREE)] = CANOPY_GAP_TREECOVER
    treecover = np.clip(treecover, 0.0, 100.0).astype(np.float32)
    slopes = {pol: v.astype(np.float32)[classes] for pol, v in slope_table().items()}
    return World(
        profile, classes, state, db, parcel, ptype, shift.astype(np.int8), stages, treecover, slopes
    )


def synth_landcover(
    shape: tuple[int, int], resolution: float, seed: int, profile: str
) -> np.ndarray:
    """The land-cover labels (uint8 class indices into :data:`CLASSES`) of :func:`synth_world`."""
    return synth_world(shape, resolution, seed, profile).classes
