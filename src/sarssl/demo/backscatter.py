"""Synthetic ground truth for the demo: land-cover map, tree cover and a backscatter model.

Everything here is *synthetic but plausible* and fully determined by a seed, so the demo
products rendered by :mod:`sarssl.demo.simulate` have a known truth that the downstream stages
(preprocessing, composites, chips, learning) can be checked against.

Land cover
    :func:`synth_landcover` draws a 10 m map in ESA WorldCover 2020 codes (10 tree cover,
    20 shrubland, 30 grassland, 40 cropland, 50 built-up, 60 bare/sparse, 80 permanent
    water, 90 herbaceous wetland) from seeded smooth random fields: a town of rectangular
    built-up blocks with parks, rectangular crop parcels (each parcel an *early* or a *late*
    crop, or fallow grass), natural vegetation thresholded from a multi-scale field
    (tree > shrub > grass > bare), a meandering river with an optional lake, and wetland
    fringes along the water. Two profiles set the proportions and the seasonal behaviour:
    ``mediterranean`` (central Italy) and ``savanna`` (central Mozambique, wet season
    Nov-Apr, so the "winter" season of the study is the local growing season).

Backscatter
    sigma0 (linear, m^2/m^2, per unit *true surface* area) of each class, season and
    polarisation at the reference incidence angle :data:`REF_INCIDENCE_DEG` comes from
    :func:`sigma0_table` (dB values in the range reported for C-band, e.g. forest VV ~ -7,
    VH ~ -13 dB; crops -8..-15 dB VV varying with phenology; calm water VV ~ -21..-23 and
    VH ~ -27..-28 dB, i.e. at or below the Sentinel-1 noise floor; built-up VV ~ -3 dB;
    cf. Veloso et al. 2017 RSE 199; Abdikan et al. 2016 ISPRS XLI-B7; ESA S1 User Guide).
    The incidence-angle dependence is linear in dB (a per-class slope in dB/degree, steep
    for water and bare soil, weak for volume-scattering forest), evaluated at the *local*
    incidence angle between the terrain normal and the direction to the sensor, so slopes
    facing the sensor are brighter. Speckle is multiplicative, Gamma distributed with
    shape = ENL and mean 1 (fully developed speckle of an ENL-look intensity image).
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
"""Incidence angle (degrees) at which the sigma0 table values hold."""


@dataclass(frozen=True)
class SurfaceClass:
    """One scattering class: a WorldCover code plus a variant (crop calendar)."""

    code: int
    name: str


#: The scattering classes, indexed by the class index maps of :func:`synth_landcover`.
CLASSES: tuple[SurfaceClass, ...] = (
    SurfaceClass(10, "tree_cover"),
    SurfaceClass(20, "shrubland"),
    SurfaceClass(30, "grassland"),
    SurfaceClass(40, "cropland_early"),
    SurfaceClass(40, "cropland_late"),
    SurfaceClass(50, "built_up"),
    SurfaceClass(60, "bare_sparse"),
    SurfaceClass(80, "permanent_water"),
    SurfaceClass(90, "herbaceous_wetland"),
)
TREE, SHRUB, GRASS, CROP_EARLY, CROP_LATE, BUILT, BARE, WATER, WETLAND = range(len(CLASSES))
CLASS_CODES = np.array([c.code for c in CLASSES], dtype=np.uint8)

PROFILES = ("mediterranean", "savanna")

# sigma0 in dB at REF_INCIDENCE_DEG, seasons (winter, spring, summer, fall) of the study.
# mediterranean: winter cereals (early) peak in spring and are harvested in June; summer
# crops (late: maize, sunflower) are bare soil in winter/spring and peak in summer.
_TABLE_DB = {
    "mediterranean": {
        "VV": [
            [-7.2, -6.9, -6.6, -6.9],  # tree cover (mixed, partly deciduous)
            [-9.0, -8.7, -9.2, -9.0],  # shrubland (macchia)
            [-10.5, -9.5, -12.0, -10.8],  # grassland (dry in summer)
            [-12.5, -9.5, -13.5, -11.5],  # cropland early (winter cereals)
            [-11.0, -12.5, -8.5, -10.0],  # cropland late (maize)
            [-2.5, -2.5, -2.5, -2.5],  # built-up (double bounce)
            [-13.5, -14.0, -15.0, -13.5],  # bare / sparse (dry soil in summer)
            [-21.0, -22.0, -22.5, -21.5],  # water (wind-roughened in winter)
            [-11.0, -9.5, -10.0, -10.5],  # herbaceous wetland
        ],
        "VH": [
            [-13.2, -12.8, -12.4, -12.8],
            [-15.5, -15.0, -15.8, -15.5],
            [-17.5, -16.5, -19.5, -18.0],
            [-19.5, -15.5, -20.5, -18.5],
            [-18.5, -19.5, -14.0, -16.5],
            [-9.5, -9.5, -9.5, -9.5],
            [-22.0, -22.5, -23.5, -22.0],
            [-27.0, -27.5, -28.0, -27.5],
            [-18.0, -16.5, -17.0, -17.5],
        ],
    },
    # savanna (southern hemisphere): rains Nov-Apr, so Dec-Feb ("winter" of the study) is
    # the growing season; early crops (rain-fed maize) peak Dec-Feb, late crops Mar-May.
    "savanna": {
        "VV": [
            [-6.8, -7.0, -7.8, -8.0],  # tree cover (miombo woodland, leaf-off late dry)
            [-8.5, -9.0, -10.5, -10.8],
            [-9.5, -10.0, -12.5, -13.0],
            [-8.5, -10.5, -13.5, -12.5],
            [-11.0, -8.5, -12.5, -13.0],
            [-4.0, -4.0, -4.0, -4.0],  # built-up (low-rise, small)
            [-11.5, -12.5, -14.5, -15.0],  # bare soil (wet in the rains)
            [-21.5, -21.5, -22.5, -22.0],
            [-9.0, -9.5, -12.0, -12.5],
        ],
        "VH": [
            [-12.5, -12.8, -13.8, -14.0],
            [-14.5, -15.0, -16.8, -17.0],
            [-16.0, -16.8, -20.0, -20.5],
            [-14.0, -17.0, -21.0, -20.0],
            [-18.0, -14.5, -20.0, -20.5],
            [-11.0, -11.0, -11.0, -11.0],
            [-19.5, -20.5, -23.0, -23.5],
            [-27.5, -27.5, -28.5, -28.0],
            [-15.5, -16.0, -19.0, -19.5],
        ],
    },
}
# incidence-angle slope, dB per degree of local incidence (VV, VH)
_SLOPE_DB_PER_DEG = {
    "VV": [-0.06, -0.10, -0.15, -0.16, -0.16, -0.10, -0.25, -0.45, -0.15],
    "VH": [-0.04, -0.07, -0.10, -0.11, -0.11, -0.08, -0.18, -0.30, -0.10],
}

# target class fractions (of the area) per profile
_FRACTIONS = {
    "mediterranean": dict(
        built=0.22, crop=0.32, water=0.03, natural=dict(tree=0.45, shrub=0.2, grass=0.3, bare=0.05)
    ),
    "savanna": dict(
        built=0.04,
        crop=0.38,
        water=0.015,
        natural=dict(tree=0.42, shrub=0.3, grass=0.22, bare=0.06),
    ),
}
# share of crop parcels that are (early, late, fallow-grass)
_CROP_MIX = {"mediterranean": (0.5, 0.35, 0.15), "savanna": (0.6, 0.2, 0.2)}
# tree-cover percent (mean, std) of each class at 10 m, for the MOD44B-like truth
_TREECOVER = {
    "mediterranean": [
        (68, 12),
        (14, 6),
        (4, 3),
        (1, 1),
        (1, 1),
        (7, 5),
        (0.5, 0.5),
        (0, 0),
        (8, 5),
    ],
    "savanna": [(55, 12), (18, 7), (5, 3), (2, 2), (2, 2), (8, 5), (1, 1), (0, 0), (10, 6)],
}


def profile_for(lat: float) -> str:
    """The land-cover/backscatter profile of a latitude: savanna in the tropics."""
    return "savanna" if abs(lat) < 25.0 else "mediterranean"


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown land-cover profile {profile!r} (choose {', '.join(PROFILES)})")


# --------------------------------------------------------------------------------------
# sigma0 table
# --------------------------------------------------------------------------------------
def sigma0_table(profile: str) -> dict[str, np.ndarray]:
    """dB tables: ``{"VV": (n_classes, 4), "VH": ..., "slope_VV": (n,), "slope_VH": (n,)}``."""
    _check_profile(profile)
    out = {pol: np.array(_TABLE_DB[profile][pol], dtype=np.float64) for pol in ("VV", "VH")}
    for pol in ("VV", "VH"):
        out[f"slope_{pol}"] = np.array(_SLOPE_DB_PER_DEG[pol], dtype=np.float64)
    return out


def uniform_table(value_db: float) -> dict[str, np.ndarray]:
    """A table giving ``value_db`` for every class, season and polarisation, no slope."""
    n = len(CLASSES)
    return {
        "VV": np.full((n, 4), value_db),
        "VH": np.full((n, 4), value_db),
        "slope_VV": np.zeros(n),
        "slope_VH": np.zeros(n),
    }


def write_sigma0_table(path: str | os.PathLike, table: dict[str, np.ndarray], profile: str) -> None:
    """Write the table as tidy CSV: one row per class, season and polarisation."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "code",
                "class",
                "profile",
                "season",
                "polarisation",
                "sigma0_db",
                "ref_incidence_deg",
                "slope_db_per_deg",
            ]
        )
        for i, c in enumerate(CLASSES):
            for s, season in enumerate(SEASONS):
                for pol in ("VV", "VH"):
                    w.writerow(
                        [
                            c.code,
                            c.name,
                            profile,
                            season,
                            pol,
                            f"{table[pol][i, s]:.2f}",
                            f"{REF_INCIDENCE_DEG:.1f}",
                            f"{table['slope_' + pol][i]:.3f}",
                        ]
                    )


def sigma0_linear(
    classes: np.ndarray,
    season: str,
    pol: str,
    local_incidence_deg: np.ndarray,
    table: dict[str, np.ndarray],
) -> np.ndarray:
    """sigma0 (linear, float32) of each class index at its local incidence angle.

    ``sigma0_dB = table[class, season] + slope[class] * (theta_loc - 35 deg)``, with the
    local incidence clamped to [5, 89] degrees (the linear-in-dB law is not meant for
    near-specular or grazing geometry).
    """
    s = SEASONS.index(season)
    pol = pol.upper()
    ref = table[pol][:, s][classes]
    slope = table[f"slope_{pol}"][classes]
    theta = np.clip(local_incidence_deg, 5.0, 89.0)
    db = ref + slope * (theta - REF_INCIDENCE_DEG)
    return np.power(10.0, 0.1 * db).astype(np.float32)


def speckle(rng: np.random.Generator, shape: tuple[int, ...], enl: float) -> np.ndarray:
    """Multiplicative speckle: Gamma(shape=ENL, scale=1/ENL), mean 1, variance 1/ENL."""
    if enl <= 0:
        raise ValueError(f"ENL must be positive, got {enl}")
    return rng.gamma(enl, 1.0 / enl, size=shape).astype(np.float32)


# --------------------------------------------------------------------------------------
# land cover
# --------------------------------------------------------------------------------------
def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale_px: float) -> np.ndarray:
    """Gaussian-filtered white noise with correlation length ``scale_px``, zero mean, unit std.

    Long correlation lengths are drawn on a coarser grid (4 cells per correlation length)
    and interpolated up (cubic), which is statistically equivalent and much faster.
    """
    scale_px = max(float(scale_px), 0.5)
    factor = max(1, int(scale_px // 4))
    coarse = tuple(int(np.ceil(n / factor)) + 4 for n in shape)
    f = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma=scale_px / factor, mode="wrap")
    if factor > 1:
        rows = (np.arange(shape[0]) + 0.5) / factor + 1.5
        cols = (np.arange(shape[1]) + 0.5) / factor + 1.5
        rr, cc = np.meshgrid(rows, cols, indexing="ij")
        f = ndimage.map_coordinates(f, [rr, cc], order=3, mode="nearest")
    else:
        f = f[: shape[0], : shape[1]]
    f = f - f.mean()
    sd = f.std()
    return f / sd if sd > 0 else f


def fractal_field(
    rng: np.random.Generator, shape: tuple[int, int], resolution: float, scales_m=(2000, 600, 200)
) -> np.ndarray:
    """Sum of smooth fields at several scales (weights halving per octave), unit std."""
    f = np.zeros(shape)
    for k, s in enumerate(scales_m):
        f += 0.6**k * smooth_field(rng, shape, s / resolution)
    return f / f.std()


def _parcels(
    rng: np.random.Generator,
    shape: tuple[int, int],
    resolution: float,
    size_m=(90.0, 350.0),
    angle_deg: float | None = None,
) -> np.ndarray:
    """Parcel ids of a field pattern: strips of random width, each cut into random lengths,
    on a grid rotated by ``angle_deg`` (random in [-25, 25] if None)."""
    h, w = shape
    a = np.radians(rng.uniform(-25, 25) if angle_deg is None else angle_deg)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) * resolution
    u = xx * np.cos(a) + yy * np.sin(a)
    v = -xx * np.sin(a) + yy * np.cos(a)
    u -= u.min()
    v -= v.min()

    def cuts(length: float) -> np.ndarray:
        edges = [0.0]
        while edges[-1] < length:
            edges.append(edges[-1] + rng.uniform(*size_m))
        return np.array(edges)

    strip_edges = cuts(v.max() + 1)
    strip = np.searchsorted(strip_edges, v, side="right") - 1
    pid = np.zeros(shape, dtype=np.int64)
    next_id = 0
    for s in range(len(strip_edges)):
        m = strip == s
        if not m.any():
            continue
        e = cuts(u.max() + 1) - rng.uniform(0, size_m[0])  # stagger the cuts of each strip
        seg = np.searchsorted(e, u[m], side="right")
        pid[m] = next_id + seg
        next_id += len(e) + 1
    return pid


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
    off = (
        0.08
        * other
        * resolution
        * np.sin(2 * np.pi * t / (length * rng.uniform(0.3, 0.6)) + rng.uniform(0, 6.3))
        + 0.02
        * other
        * resolution
        * np.sin(2 * np.pi * t / (length * rng.uniform(0.12, 0.2)) + rng.uniform(0, 6.3))
        + 0.06 * other * resolution * wander
    )
    pos = np.clip((centre + off) / resolution, 0, other - 1)
    # dense centre line (sub-pixel steps) rasterised, then Euclidean distance transform
    ts = np.linspace(0, n - 1, 4 * n)
    ps = np.interp(ts, np.arange(n), pos)
    line = np.zeros(shape, dtype=bool)
    a = np.round(ts).astype(int)
    b = np.round(ps).astype(int)
    if horizontal:
        line[b, a] = True
    else:
        line[a, b] = True
    return ndimage.distance_transform_edt(~line) * resolution


def synth_landcover(
    shape: tuple[int, int], resolution: float, seed: int, profile: str
) -> np.ndarray:
    """A synthetic land-cover map: uint8 class indices into :data:`CLASSES`.

    ``shape`` (rows, cols) at ``resolution`` metres. WorldCover codes are
    ``CLASS_CODES[classes]``. Deterministic for a given seed.
    """
    _check_profile(profile)
    rng = np.random.default_rng(seed)
    fr = _FRACTIONS[profile]
    h, w = shape
    res = float(resolution)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64) * res

    # natural vegetation: multi-scale field split by quantiles into tree > shrub > grass > bare
    veg = fractal_field(rng, shape, res, (900, 300, 90, 30))
    nat = fr["natural"]
    q_bare = np.quantile(veg, nat["bare"])
    q_grass = np.quantile(veg, nat["bare"] + nat["grass"])
    q_shrub = np.quantile(veg, nat["bare"] + nat["grass"] + nat["shrub"])
    out = np.full(shape, TREE, dtype=np.uint8)
    out[veg < q_shrub] = SHRUB
    out[veg < q_grass] = GRASS
    out[veg < q_bare] = BARE

    # cropland: parcels whose centre falls in the agricultural zone of a smooth field
    parcels = _parcels(rng, shape, res)
    zone = fractal_field(rng, shape, res, (2500, 800))
    n_par = int(parcels.max()) + 1
    counts = np.bincount(parcels.ravel(), minlength=n_par)
    zone_par = np.bincount(parcels.ravel(), weights=zone.ravel(), minlength=n_par) / np.maximum(
        counts, 1
    )
    thr = np.quantile(zone_par[parcels], 1.0 - fr["crop"])
    is_crop = zone_par >= thr
    mix = _CROP_MIX[profile]
    kind = rng.choice(3, size=n_par, p=mix)
    lut = np.where(kind == 0, CROP_EARLY, np.where(kind == 1, CROP_LATE, GRASS)).astype(np.uint8)
    crop_mask = is_crop[parcels]
    out[crop_mask] = lut[parcels][crop_mask]

    # built-up: a town around a random centre, cut into rectangular blocks with parks
    cy, cx = rng.uniform(0.2, 0.8) * h * res, rng.uniform(0.2, 0.8) * w * res
    dist = np.hypot(yy - cy, xx - cx) / (np.sqrt(h * w) * res)
    urban_pot = -dist * 3.0 + 0.5 * fractal_field(rng, shape, res, (600, 200))
    urban = urban_pot >= np.quantile(urban_pot, 1.0 - fr["built"])
    blocks = _parcels(rng, shape, res, size_m=(60.0, 160.0))
    n_blk = int(blocks.max()) + 1
    park = rng.random(n_blk) < 0.12
    park_kind = np.where(rng.random(n_blk) < 0.5, GRASS, TREE).astype(np.uint8)
    built = np.where(park[blocks], park_kind[blocks], BUILT).astype(np.uint8)
    out[urban] = built[urban]

    # water: a meandering river (30-50 m half width) and maybe a lake; wetland along it
    dist_river = _river_distance(rng, shape, res)
    half_width = rng.uniform(20.0, 45.0)
    water = dist_river <= half_width
    if rng.random() < 0.6:
        ly, lx = rng.uniform(0.15, 0.85) * h * res, rng.uniform(0.15, 0.85) * w * res
        radius = rng.uniform(120.0, 300.0)
        wobble = 0.25 * radius * smooth_field(rng, shape, 15)
        water |= np.hypot(yy - ly, xx - lx) <= radius + wobble
    dist_water = ndimage.distance_transform_edt(~water) * res
    wet_field = smooth_field(rng, shape, 8)
    wetland = (dist_water > 0) & (dist_water <= rng.uniform(40, 90)) & (wet_field > -0.2) & ~urban
    out[wetland] = WETLAND
    out[water] = WATER
    return out


def treecover_percent(
    classes: np.ndarray, seed: int, profile: str, resolution: float
) -> np.ndarray:
    """Per-pixel tree cover (%) of a class map: class mean + spatially correlated noise.

    Returned as float32 in [0, 100]; NaN never occurs. Water pixels get 0 (the 250 m
    product flags mostly-water cells with 200 separately).
    """
    _check_profile(profile)
    rng = np.random.default_rng(seed)
    stats = np.array(_TREECOVER[profile], dtype=np.float64)
    noise = smooth_field(rng, classes.shape, 60.0 / resolution)
    tc = stats[classes, 0] + stats[classes, 1] * noise
    return np.clip(tc, 0.0, 100.0).astype(np.float32)
