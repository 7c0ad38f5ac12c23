"""``sarssl simulate``: demo Sentinel-1 IW GRDH products with a known ground truth.

From a bundled *real* product template (:func:`sarssl.sar.safe.template_path`) this stage
synthesises a year of dual-polarisation (VV+VH) GRDH products over an area of interest,
plus the truth they were rendered from. The products are meant to be indistinguishable,
for every later stage, from real downloads:

Acquisitions
    The template's acquisition is re-dated by whole multiples ``k`` of the 12-day repeat
    cycle. The orbit is the same (state vectors are earth-fixed, so only their times move)
    and, because 12 days is a whole number of days, every time of day stays the same:
    only dates change. ``per_season`` dates are drawn in each season of the year (winter =
    Dec Y-1 .. Feb Y, ...), spread over the season: the valid repeat dates of the season
    are cut into ``per_season`` consecutive groups and one date is drawn from each (seeded).

Re-dated SAFE
    Every ISO time of the manifest and of the annotation/calibration/noise XML (product,
    line, GCP, orbit state vector, coordinate conversion, LUT vector, ANX, processing
    times...) and every compact ``YYYYMMDDTHHMMSS`` time of the product's own file names is
    moved by the same offset; the absolute orbit advances by 175 per cycle (the relative
    orbit is unchanged), the manifest's cycle number by 1, the mission data-take id by a
    plausible 1374 per cycle (S1 data-takes advance ~114 per day) and the product unique
    id is a seeded hash. File names follow the real pattern with the new times. The
    manifest lists the files actually written with their real sizes and MD5 checksums
    (entries of files not shipped — RFI, previews — are dropped). The ``S1B_rome``
    template only holds VV metadata: its VH annotation, calibration and noise files are
    the VV files with the polarisation fields (``<polarisation>``, ``<imageNumber>``) and
    file names changed (ESA's VV and VH LUTs differ by a few percent; this keeps the
    real geometry and a realistic noise floor).

Measurement
    uint16 DN TIFFs of the annotation's full size (e.g. 16705 x 26102), tiled (512) and
    deflate-compressed, with the annotation's GCPs. Only the tiles around the area's radar
    footprint are written (GDAL ``SPARSE_OK``); the others stay unallocated and read as 0
    (= no data, as in real products), so a product is a few MB.

Rendering
    The world (:func:`sarssl.demo.backscatter.synth_world`: labels, surface states and
    sigma0 in dB per 10 m cell and season) is sampled on a 5 m grid over the area (plus a
    margin) in the area's UTM CRS;
    heights come from the truth DEM converted to ellipsoidal heights (EGM96 geoid grid),
    points go to ECEF and through :meth:`sarssl.sar.geometry.RadarGeometry.ground_to_radar` to
    fractional (line, pixel). Each sample carries sigma0(cell, season, pol, local
    incidence) x its true surface area (from the ECEF tangent vectors of the sample grid,
    so slopes count with their real area), splatted bilinearly onto the 4 nearest radar
    pixels and divided by the reference pixel area (range x azimuth pixel spacing): flat
    terrain gives back sigma0, slopes facing the sensor are brighter (foreshortening and
    smaller local incidence), self-shadowed facets contribute nothing. Finally::

        DN = sqrt((A_sigma^2 * sigma0 + eta) * speckle)

    with the template's real calibration (A_sigma) and thermal noise (eta) LUTs at each
    pixel and speckle ~ Gamma(ENL, 1/ENL) (signal and thermal noise are both circular
    Gaussian and add before detection, so the noise is speckled too), rounded, at least 1
    inside the footprint and 0 outside.

Truth (``--truth-dir``)
    ``landcover.tif`` (ESA WorldCover codes, 10 m area grid), ``treecover.tif`` (MOD44B-
    like percent tree cover on the MODIS sinusoidal 231.66 m grid, 200 = water, 253 = fill),
    ``dem.tif`` (EGM96 heights, EPSG:9707 = WGS 84 + EGM96 height: a crop of the bundled
    real DEM where it covers the area, else that real relief relocated to the area and
    offset to the regional height of the template's geolocation grid), ``sigma0_table.csv``,
    ``acquisitions.csv``, ``run.json``. With ``--no-labels`` (an area used only for
    self-supervised pretraining) ``landcover.tif`` and ``treecover.tif`` are not written.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import logging
import math
import os
import re
import tempfile
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio.shutil  # noqa: F401  (sarssl.io.write_geotiff uses rasterio.shutil.copy)
from lxml import etree
from tqdm import tqdm

from ..errors import InputError, SarsslError
from ..io import (
    atomic_path,
    parse_bbox,
    raise_gdal_write_errors,
    run_record,
    write_geotiff,
    write_json,
)
from ..sar.grid import Grid, area_grid
from ..vocabulary import SEASONS, season_windows
from . import backscatter as bs

log = logging.getLogger(__name__)

REPEAT_DAYS = 12
ORBITS_PER_CYCLE = 175
DATATAKES_PER_CYCLE = 1374
SAMPLE_SPACING_M = 5.0
OUTER_MARGIN_M = 600.0
"""Ground sampled beyond the area so footprint pixels near its edge are fully covered."""
INNER_MARGIN_M = 150.0
"""Radar footprint = the area grid plus this margin."""
TILE = 512
DEM_MARGIN_DEG = 0.01
GEOID_GRID_NAMES = ("egm96_15.gtx",)
MODIS_SINUSOIDAL = "+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m +no_defs"
MODIS_PIXEL_M = 231.656358263958
MODIS_ORIGIN = (-20015109.354, 10007554.677)
TREECOVER_WATER = 200
TREECOVER_FILL = 253


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--template", required=True, help="bundled product template (S1B_rome, S1A_chimoio)"
    )
    p.add_argument("--area", required=True, help="area name (recorded; seeds the truth)")
    p.add_argument("--bbox", required=True, help="area of interest W,S,E,N (lon/lat degrees)")
    p.add_argument(
        "--year", type=int, required=True, help="composite year Y (winter = Dec Y-1 .. Feb Y)"
    )
    p.add_argument("--per-season", type=int, default=2, help="acquisitions per season (default 2)")
    p.add_argument("--seed", type=int, required=True, help="seed of every random choice")
    p.add_argument("--products-dir", required=True, type=Path, help="where the product zips go")
    p.add_argument(
        "--truth-dir", required=True, type=Path, help="where the truth rasters/tables go"
    )
    p.add_argument(
        "--dem",
        type=Path,
        default=None,
        help="DEM GeoTIFF for the truth (geographic CRS; EPSG:9707/EGM heights or "
        "EPSG:4979 ellipsoidal); default: bundled Copernicus DEM or its relief relocated",
    )
    p.add_argument(
        "--enl", type=float, default=4.4, help="speckle equivalent number of looks (4.4)"
    )
    p.add_argument(
        "--uniform-sigma0-db",
        type=float,
        default=None,
        help="replace the land-cover model by this uniform sigma0 (dB); disables speckle",
    )
    p.add_argument(
        "--speckle",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="multiplicative Gamma speckle (default: on, but off with --uniform-sigma0-db "
        "unless --speckle is given)",
    )
    p.add_argument(
        "--no-labels",
        action="store_true",
        help="write no label rasters (landcover.tif, treecover.tif): an unlabelled area, "
        "used only for self-supervised pretraining",
    )
    p.add_argument(
        "--profile",
        choices=bs.PROFILES,
        default=None,
        help="land-cover/backscatter profile (default from latitude)",
    )


def run(args: argparse.Namespace) -> int:
    bbox = parse_bbox(args.bbox)
    if args.per_season < 1:
        raise SarsslError(f"--per-season must be >= 1, got {args.per_season}")
    if args.enl <= 0:
        raise SarsslError(f"--enl must be positive, got {args.enl}")
    speckle_on = args.uniform_sigma0_db is None if args.speckle is None else bool(args.speckle)
    simulate(
        template=args.template,
        area=args.area,
        bbox=bbox,
        year=args.year,
        per_season=args.per_season,
        seed=args.seed,
        products_dir=Path(args.products_dir),
        truth_dir=Path(args.truth_dir),
        dem=args.dem,
        enl=args.enl,
        uniform_sigma0_db=args.uniform_sigma0_db,
        speckle=speckle_on,
        profile=args.profile,
        labels=not args.no_labels,
    )
    return 0


# --------------------------------------------------------------------------------------
# acquisition dates
# --------------------------------------------------------------------------------------
def choose_cycles(
    template_date: dt.date, year: int, per_season: int, seed: int
) -> list[tuple[str, int]]:
    """(season, k) pairs: acquisitions on ``template_date + 12 k days``, ``per_season`` per
    season spread over it (valid dates split into consecutive groups, one drawn in each)."""
    rng = np.random.default_rng([seed, year, 12])
    out = []
    for season, (a, b) in season_windows(year).items():
        k0 = math.ceil((a - template_date).days / REPEAT_DAYS)
        k1 = math.floor((b - template_date).days / REPEAT_DAYS)
        ks = list(range(k0, k1 + 1))
        if per_season > len(ks):
            raise SarsslError(
                f"--per-season {per_season}: only {len(ks)} repeat-cycle dates in {season} {year}"
            )
        for group in np.array_split(np.array(ks), per_season):
            out.append((season, int(rng.choice(group))))
    return out


# --------------------------------------------------------------------------------------
# re-dating the SAFE metadata
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ids:
    """Identity of one product: mission, times and orbit/data-take numbers."""

    mission: str
    start: dt.datetime
    stop: dt.datetime
    orbit: int
    datatake: int
    unique: str

    @property
    def name(self) -> str:
        return (
            f"{self.mission}_IW_GRDH_1SDV_{self.start:%Y%m%dT%H%M%S}_{self.stop:%Y%m%dT%H%M%S}_"
            f"{self.orbit:06d}_{self.datatake:06X}_{self.unique}"
        )


_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})(?=T\d{2}:\d{2}:\d{2})")
_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})(?=[Tt]\d{6})")
_ORBIT_TAGS = re.compile(
    r"(<(?:\w+:)?(?P<tag>absoluteOrbitNumber|orbitNumber|missionDataTakeI[dD]|cycleNumber)\b[^>]*>)"
    r"\s*(?P<val>\d+)\s*(?P<close></)"
)


class Redater:
    """Rewrites template text (XML, file names) for a product ``k`` repeat cycles away."""

    def __init__(self, tpl: Ids, new: Ids, k: int) -> None:
        self.tpl, self.new, self.k = tpl, new, k
        self.days = dt.timedelta(days=REPEAT_DAYS * k)
        self.t0 = tpl.start.date()

    def _shift(self, m: re.Match, window_days: int) -> str:
        d = dt.date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if abs((d - self.t0).days) > window_days:
            return m.group(0)  # auxiliary-file validity dates etc. are not acquisition times
        d2 = d + self.days
        sep = "-" if "-" in m.group(0) else ""
        return f"{d2:%Y}{sep}{d2:%m}{sep}{d2:%d}"

    def text(self, s: str) -> str:
        placeholder = "\x00PRODUCT\x00"
        tpl_name = self.tpl.name
        s = s.replace(tpl_name, placeholder)
        s = _ISO.sub(lambda m: self._shift(m, 30), s)
        s = _COMPACT.sub(lambda m: self._shift(m, 2), s)
        o_old, o_new = f"{self.tpl.orbit:06d}", f"{self.new.orbit:06d}"
        d_old, d_new = f"{self.tpl.datatake:06x}", f"{self.new.datatake:06x}"
        # orbit + data-take in file names (-030148-039993-, _030148_039993_) and data-object
        # ids (...t051147030148039993001): case follows the original
        pat = re.compile(rf"{o_old}([_-]?){d_old}", re.IGNORECASE)

        def repl(m: re.Match) -> str:
            # product names use '_' and upper-case hex; file names and data-object ids lower
            return o_new + m.group(1) + (d_new.upper() if m.group(1) == "_" else d_new)

        s = pat.sub(repl, s)

        def tag(m: re.Match) -> str:
            name, val = m.group("tag"), int(m.group("val"))
            if name in ("absoluteOrbitNumber", "orbitNumber") and val == self.tpl.orbit:
                val = self.new.orbit
            elif name.startswith("missionDataTake") and val == self.tpl.datatake:
                val = self.new.datatake
            elif name == "cycleNumber":
                val = val + self.k
            return f"{m.group(1)}{val}{m.group('close')}"

        s = _ORBIT_TAGS.sub(tag, s)
        return s.replace(placeholder, self.new.name)


def vv_to_vh(text: str) -> str:
    """VH annotation/calibration/noise XML from the VV one (polarisation fields only)."""
    text = text.replace("<polarisation>VV</polarisation>", "<polarisation>VH</polarisation>")
    return text.replace("<imageNumber>001</imageNumber>", "<imageNumber>002</imageNumber>")


def vv_to_vh_name(rel: str) -> str:
    return rel.replace("-vv-", "-vh-").replace("-001.", "-002.")


@dataclass
class Template:
    """The bundled template's files (text) and identity."""

    safe_dir: Path
    ids: Ids
    manifest: str
    files: dict[tuple[str, str], tuple[str, str]]  # (kind, pol) -> (rel path, text)
    synthesised_vh: bool


def load_template(name: str) -> Template:
    from ..sar.safe import open_product, parse_product_name, template_path

    safe_dir = template_path(name)
    prod = open_product(safe_dir)
    f = parse_product_name(safe_dir.name)
    if f is None:  # pragma: no cover - template names are fixed
        raise InputError(f"template {safe_dir}: not a product name")
    start = dt.datetime.strptime(f["start"], "%Y%m%dT%H%M%S")
    stop = dt.datetime.strptime(f["stop"], "%Y%m%dT%H%M%S")
    ids = Ids(prod.mission, start, stop, int(f["orbit"]), int(f["datatake"], 16), f["unique"])
    files: dict[tuple[str, str], tuple[str, str]] = {}
    synthesised = False
    for kind in ("annotation", "calibration", "noise"):
        if not prod.has(kind, "VV"):
            raise InputError(f"template {safe_dir}: no VV {kind} file")
        rel = prod.files[(kind, "VV")]
        files[(kind, "VV")] = (rel, prod.read_member(rel).decode("utf-8"))
        if prod.has(kind, "VH"):
            rel_h = prod.files[(kind, "VH")]
            files[(kind, "VH")] = (rel_h, prod.read_member(rel_h).decode("utf-8"))
        else:
            synthesised = True
            files[(kind, "VH")] = (vv_to_vh_name(rel), vv_to_vh(files[(kind, "VV")][1]))
    manifest = prod.read_member("manifest.safe").decode("utf-8")
    return Template(safe_dir, ids, manifest, files, synthesised)


def product_ids(tpl: Ids, k: int, seed: int, area: str) -> Ids:
    days = dt.timedelta(days=REPEAT_DAYS * k)
    orbit = tpl.orbit + ORBITS_PER_CYCLE * k
    datatake = (tpl.datatake + DATATAKES_PER_CYCLE * k) % 0x1000000
    key = f"{seed}:{area}:{tpl.mission}:{orbit}:{datatake}".encode()
    unique = f"{zlib.crc32(key) & 0xFFFF:04X}"
    return Ids(tpl.mission, tpl.start + days, tpl.stop + days, orbit, datatake, unique)


# --------------------------------------------------------------------------------------
# DEM and heights
# --------------------------------------------------------------------------------------
def _geoid_grid_path() -> Path:
    import pyproj

    dirs = [
        os.environ.get("PROJ_DATA"),
        os.environ.get("PROJ_LIB"),
        pyproj.datadir.get_data_dir(),
        "/usr/share/proj",
        "/usr/local/share/proj",
    ]
    for d in dirs:
        for n in GEOID_GRID_NAMES:
            if d and (Path(d) / n).is_file():
                return Path(d) / n
    raise SarsslError(
        "geoid grid egm96_15.gtx not found (set PROJ_DATA to a folder holding it, e.g. from "
        "Debian's proj-data): needed to turn EGM DEM heights into ellipsoidal heights"
    )


def geoid_undulation(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Geoid height N (m) above the WGS84 ellipsoid (EGM96 15' grid, bilinear):
    ellipsoidal height = orthometric (EGM) height + N. EGM2008 differs by < ~1 m here."""
    import rasterio
    from scipy import ndimage

    with rasterio.open(_geoid_grid_path()) as ds:
        grid = ds.read(1).astype(np.float64)
        tr = ds.transform
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lon_w = (lon - tr.c) % 360.0 + tr.c  # grid may span 0..360 or -180..180
    col = (lon_w - tr.c) / tr.a - 0.5
    row = (lat - tr.f) / tr.e - 0.5
    return ndimage.map_coordinates(grid, [row, col], order=1, mode="nearest")


def _vertical_kind(crs: Any) -> str:
    """'egm' for compound geographic+EGM CRSs (EPSG:9707, 3855...), 'ellipsoidal' for 3-D
    geographic (EPSG:4979), 'assumed_egm' for 2-D geographic (Copernicus convention)."""
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    if c.is_compound:
        v = c.sub_crs_list[1].name.lower()
        if "egm" in v or "geoid" in v:
            return "egm"
        raise InputError(
            f"DEM vertical CRS {c.sub_crs_list[1].name!r} not supported (EGM or ellipsoidal)"
        )
    if len(c.axis_info) == 3 and c.is_geographic:
        return "ellipsoidal"
    if c.is_geographic:
        return "assumed_egm"
    raise InputError(f"DEM CRS {c.name!r}: expected a geographic (lon/lat) CRS")


@dataclass
class Dem:
    """A DEM on a geographic grid: heights (m), affine transform, CRS and provenance."""

    heights: np.ndarray
    transform: Any
    crs: Any
    source: str

    def sample_ellipsoidal(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        """Bilinear heights at lon/lat, as ellipsoidal heights (m)."""
        from scipy import ndimage

        tr = self.transform
        col = (lon - tr.c) / tr.a - 0.5
        row = (lat - tr.f) / tr.e - 0.5
        h = ndimage.map_coordinates(
            self.heights.astype(np.float64), [row, col], order=1, mode="nearest"
        )
        kind = _vertical_kind(self.crs)
        if kind in ("egm", "assumed_egm"):
            h = h + geoid_undulation(lon, lat)
        return h


def _read_dem_window(
    path: Path, bbox: tuple[float, float, float, float], margin: float, min_margin: float
) -> Dem | None:
    """Crop a geographic DEM to ``bbox`` plus ``margin`` degrees (clipped to the DEM); None
    when it does not cover ``bbox`` plus ``min_margin``."""
    import rasterio
    from rasterio.windows import Window

    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"DEM {path}: cannot open: {exc}") from exc
    with ds:
        if ds.crs is None:
            raise InputError(f"DEM {path}: no CRS")
        _vertical_kind(ds.crs)
        b = ds.bounds
        w, s, e, n = bbox
        if not (
            b.left <= w - min_margin
            and b.right >= e + min_margin
            and b.bottom <= s - min_margin
            and b.top >= n + min_margin
        ):
            return None
        inv = ~ds.transform
        c0, r0 = inv @ (w - margin, n + margin)
        c1, r1 = inv @ (e + margin, s - margin)
        c0, r0 = max(0, math.floor(c0)), max(0, math.floor(r0))
        c1, r1 = min(ds.width, math.ceil(c1)), min(ds.height, math.ceil(r1))
        win = Window(c0, r0, c1 - c0, r1 - r0)
        h = ds.read(1, window=win, masked=True).astype(np.float32)
        if np.ma.is_masked(h) and h.mask.any():
            raise InputError(f"DEM {path}: no-data heights inside {bbox} plus {margin} deg")
        return Dem(np.asarray(h.filled(0)), ds.window_transform(win), ds.crs, str(path))


def make_dem(bbox, dem_path: Path | None, geom, seed: int) -> Dem:
    """The truth DEM: ``dem_path`` (must cover the area), else the bundled real DEM when it
    covers the area, else the bundled real relief relocated to the area centre (reflected
    where the area is larger) and offset to the template GCP height there."""
    import rasterio
    from affine import Affine

    from ..sar.safe import bundled_dem_path

    w, s, e, n = bbox
    m = DEM_MARGIN_DEG
    if dem_path is not None:
        dem = _read_dem_window(Path(dem_path), bbox, m, m / 2)
        if dem is None:
            raise InputError(
                f"DEM {dem_path}: does not cover the area {bbox} plus {m / 2} deg margin"
            )
        return dem
    bundled = bundled_dem_path()
    dem = _read_dem_window(bundled, bbox, m, m / 2)
    if dem is not None:
        dem.source = f"bundled real 30 m DEM crop ({bundled.name}, EGM96 heights)"
        return dem
    with rasterio.open(bundled) as ds:
        h = ds.read(1).astype(np.float32)
        tr, crs = ds.transform, ds.crs
    rows_needed = int(math.ceil((n - s + 2 * m) / abs(tr.e))) + 4
    cols_needed = int(math.ceil((e - w + 2 * m) / tr.a)) + 4
    pad_r = max(0, (rows_needed - h.shape[0] + 1) // 2)
    pad_c = max(0, (cols_needed - h.shape[1] + 1) // 2)
    if pad_r or pad_c:
        h = np.pad(h, ((pad_r, pad_r), (pad_c, pad_c)), mode="symmetric")
    cx, cy = 0.5 * (w + e), 0.5 * (s + n)
    # regional height: the template's geolocation grid (ellipsoidal) at the area centre
    from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

    g = geom.gcps
    pts = np.column_stack([g.lon, g.lat])
    h_ell = LinearNDInterpolator(pts, g.height)(cx, cy)
    if not np.isfinite(h_ell):
        h_ell = NearestNDInterpolator(pts, g.height)(cx, cy)
    h_egm = float(np.ravel(h_ell)[0] - geoid_undulation(np.array([cx]), np.array([cy]))[0])
    h = h - float(np.median(h)) + h_egm
    transform = Affine(
        tr.a, 0.0, cx - 0.5 * h.shape[1] * tr.a, 0.0, tr.e, cy + 0.5 * h.shape[0] * abs(tr.e)
    )
    src = (
        f"real Copernicus DEM relief around Rome ({bundled.name}) relocated to "
        f"({cx:.4f}, {cy:.4f}) and offset to {h_egm:.0f} m (template GCP height)"
    )
    return Dem(h.astype(np.float32), transform, crs, src)


# --------------------------------------------------------------------------------------
# truth rasters
# --------------------------------------------------------------------------------------
def _expand(grid: Grid, margin: float, resolution: float) -> Grid:
    from affine import Affine

    x0, y0, x1, y1 = grid.bounds
    x0 = math.floor((x0 - margin) / resolution) * resolution
    y0 = math.floor((y0 - margin) / resolution) * resolution
    x1 = math.ceil((x1 + margin) / resolution) * resolution
    y1 = math.ceil((y1 + margin) / resolution) * resolution
    return Grid(
        grid.crs,
        Affine(resolution, 0, x0, 0, -resolution, y1),
        int(round((x1 - x0) / resolution)),
        int(round((y1 - y0) / resolution)),
    )


def write_treecover(
    path: Path, tc10: np.ndarray, water10: np.ndarray, grid10: Grid, seed: int
) -> None:
    """MOD44B-like 250 m tree cover (uint8 %, 200 water, 253 fill) on the MODIS sinusoidal grid,
    from the 10 m tree cover percent ``tc10`` and water mask ``water10`` on ``grid10``."""
    from affine import Affine
    from rasterio.warp import Resampling, reproject, transform_bounds

    tc10 = np.asarray(tc10, dtype=np.float32)
    water10 = np.asarray(water10, dtype=np.float32)
    x0, y0, x1, y1 = transform_bounds(grid10.crs, MODIS_SINUSOIDAL, *grid10.bounds, densify_pts=21)
    px = MODIS_PIXEL_M
    ox, oy = MODIS_ORIGIN
    c0 = math.floor((x0 - ox) / px)
    c1 = math.ceil((x1 - ox) / px)
    r0 = math.floor((oy - y1) / px)
    r1 = math.ceil((oy - y0) / px)
    tr = Affine(px, 0, ox + c0 * px, 0, -px, oy - r0 * px)
    shape = (r1 - r0, c1 - c0)
    out = {}
    for key, arr in (("tc", tc10), ("water", water10)):
        dst = np.full(shape, np.nan, dtype=np.float32)
        reproject(
            arr,
            dst,
            src_transform=grid10.transform,
            src_crs=grid10.crs,
            dst_transform=tr,
            dst_crs=MODIS_SINUSOIDAL,
            resampling=Resampling.average,
            src_nodata=None,
            dst_nodata=np.nan,
        )
        out[key] = dst
    rng = np.random.default_rng([seed, 44])
    tc = out["tc"] + rng.normal(0.0, 3.0, shape)  # MOD44B-like retrieval noise
    val = np.clip(np.round(tc), 0, 100)
    val = np.where(out["water"] > 0.5, TREECOVER_WATER, val)
    val = np.where(np.isfinite(out["tc"]), val, TREECOVER_FILL).astype(np.uint8)
    write_geotiff(
        path,
        val,
        crs=MODIS_SINUSOIDAL,
        transform=tr,
        nodata=TREECOVER_FILL,
        band_names=["Percent_Tree_Cover"],
        tags={"SOURCE": "sarssl simulate (synthetic, MOD44B-like)", "WATER_VALUE": TREECOVER_WATER},
        cog=False,
    )


# --------------------------------------------------------------------------------------
# the scene: ground samples mapped into radar geometry (shared by every product of an area)
# --------------------------------------------------------------------------------------
@dataclass
class Scene:
    """Precomputed ground-to-radar splatting of an area (identical for every re-dated product).

    ``idx[k]`` are flat indices into the radar window, ``wgt[k]`` the bilinear weights
    times (true surface area / reference pixel area), for the 4 corners k; ``cell`` the flat
    index of each sample's 10 m world cell and ``theta`` its local incidence (degrees).
    """

    row0: int
    col0: int
    height: int
    width: int
    idx: list[np.ndarray]
    wgt: list[np.ndarray]
    cell: np.ndarray
    theta: np.ndarray
    footprint: np.ndarray  # bool (height, width)
    a2: dict[str, np.ndarray]
    eta: dict[str, np.ndarray]
    flat_area: np.ndarray  # flat-terrain ground area per pixel / nominal area

    def power(self, sigma: np.ndarray) -> np.ndarray:
        """Radar-geometry sigma0 (flat-terrain normalised) of per-sample sigma0 values."""
        n = self.height * self.width
        acc = np.zeros(n, dtype=np.float64)
        sigma = sigma.astype(np.float64)
        for i, w in zip(self.idx, self.wgt):
            acc += np.bincount(i, weights=w * sigma, minlength=n)
        return acc.reshape(self.height, self.width) / self.flat_area


def flat_area_ratio(
    geom, sg: Grid, h_ref: float, lines: np.ndarray, pixels: np.ndarray, n: int = 16
) -> np.ndarray:
    """Ground area of each radar pixel on a flat surface at ellipsoidal height ``h_ref``,
    divided by the nominal area (range x azimuth pixel spacing), on the (lines x pixels) grid.

    The nominal azimuth spacing of the annotation is rounded (e.g. 10 m for a true ground
    spacing of 10.1-10.2 m: ground speed x azimuth time interval), so dividing by it would
    bias flat-terrain sigma0 by ~0.05-0.1 dB. The calibration LUTs are defined so that a
    flat (ellipsoid) distributed target reads its own sigma0; normalising by the true flat
    area per pixel keeps that property. The ratio is smooth: it is computed from the
    Jacobian of the forward model on an ``n x n`` grid and fitted by a quadratic.
    """
    from pyproj import Transformer

    from ..sar.geometry import lonlat_h_to_ecef

    x0, y0, x1, y1 = sg.bounds
    xs = np.linspace(x0, x1, n)
    ys = np.linspace(y0, y1, n)
    xx, yy = np.meshgrid(xs, ys)
    d = 5.0
    to_ll = Transformer.from_crs(sg.crs, "EPSG:4326", always_xy=True)
    pts = []
    for dx, dy in ((0, 0), (d, 0), (0, d)):
        lon, lat = to_ll.transform(xx + dx, yy + dy)
        X = np.stack(lonlat_h_to_ecef(lon, lat, np.full(lon.shape, h_ref)), axis=-1)
        line, pixel = geom.ground_to_radar(X[..., 0], X[..., 1], X[..., 2])
        pts.append((X, line, pixel))
    (X0, l0, p0), (X1, l1, p1), (X2, l2, p2) = pts
    det = ((l1 - l0) * (p2 - p0) - (l2 - l0) * (p1 - p0)) / (d * d)  # radar px per map m^2
    area_map = np.linalg.norm(np.cross(X1 - X0, X2 - X0), axis=-1) / (d * d)  # true m^2 per map m^2
    ratio = area_map / np.abs(det) / (geom.range_pixel_spacing * geom.azimuth_pixel_spacing)
    lc, pc = l0.mean(), p0.mean()
    u, v = (l0 - lc) / 1000.0, (p0 - pc) / 1000.0
    A = np.column_stack(
        [np.ones(u.size), u.ravel(), v.ravel(), (u * u).ravel(), (u * v).ravel(), (v * v).ravel()]
    )
    coef = np.linalg.lstsq(A, ratio.ravel(), rcond=None)[0]
    U, V = np.meshgrid((lines - lc) / 1000.0, (pixels - pc) / 1000.0, indexing="ij")
    return coef[0] + coef[1] * U + coef[2] * V + coef[3] * U * U + coef[4] * U * V + coef[5] * V * V


def build_scene(geom, dem: Dem, grid10: Grid, ext10: Grid, cal, noise) -> Scene:
    """Sample the ground at 5 m, map it to radar (line, pixel) and precompute the splat."""
    from pyproj import Transformer
    from scipy import ndimage

    from ..sar.calibration import calibration_lut, noise_lut
    from ..sar.geometry import lonlat_h_to_ecef

    t_start = time.perf_counter()
    sg = _expand(grid10, OUTER_MARGIN_M, SAMPLE_SPACING_M)
    xs, ys = sg.xy()
    to_ll = Transformer.from_crs(sg.crs, "EPSG:4326", always_xy=True)
    xx, yy = np.meshgrid(xs, ys)
    lon, lat = to_ll.transform(xx, yy)
    h = dem.sample_ellipsoidal(lon, lat)
    h_ref = float(np.median(h))
    X = np.stack(lonlat_h_to_ecef(lon, lat, h), axis=-1)  # (ny, nx, 3)
    del lon, lat, h
    line, pixel, t, slant = geom.ground_to_radar(
        X[..., 0], X[..., 1], X[..., 2], return_time_range=True
    )
    sat, _, _ = geom.orbit.evaluate(t)
    del t
    # true surface area and normal of each sample from the ECEF tangent vectors
    dxc = np.gradient(X, axis=1)
    dxr = np.gradient(X, axis=0)
    nrm = np.cross(dxr, dxc)  # rows run south, columns east: r x c points up
    del dxc, dxr
    area = np.linalg.norm(nrm, axis=-1)
    nrm /= area[..., None]
    look = sat - X
    look /= np.linalg.norm(look, axis=-1, keepdims=True)
    cos_loc = np.einsum("ijk,ijk->ij", nrm, look)
    del nrm, look, sat, X
    theta = np.degrees(np.arccos(np.clip(cos_loc, -1.0, 1.0))).astype(np.float32)
    lit = cos_loc > 0.0  # self-shadowed facets contribute nothing

    # world cell of each sample: nearest 10 m cell of the extended world grid
    col10 = np.floor((xx - ext10.transform.c) / ext10.resolution).astype(np.int64)
    row10 = np.floor((ext10.transform.f - yy) / ext10.resolution).astype(np.int64)
    col10 = np.clip(col10, 0, ext10.width - 1)
    row10 = np.clip(row10, 0, ext10.height - 1)
    cell = (row10 * ext10.width + col10).astype(np.int32)
    # footprint: radar pixels hit by samples inside the area grid + inner margin
    gx0, gy0, gx1, gy1 = grid10.bounds
    mi = INNER_MARGIN_M
    inner = (xx >= gx0 - mi) & (xx <= gx1 + mi) & (yy >= gy0 - mi) & (yy <= gy1 + mi)
    del xx, yy, col10, row10
    li = np.rint(line[inner]).astype(np.int64)
    pi = np.rint(pixel[inner]).astype(np.int64)
    nl, ns = geom.shape
    if li.min() < 0 or pi.min() < 0 or li.max() >= nl or pi.max() >= ns:
        raise InputError(
            f"area {grid10.bounds} (CRS {grid10.crs.to_string()}) is not inside the template's "
            f"image (lines {li.min()}..{li.max()} / {nl}, pixels {pi.min()}..{pi.max()} / {ns})"
        )
    row0 = max(0, (li.min() - 2) // TILE * TILE)
    col0 = max(0, (pi.min() - 2) // TILE * TILE)
    row1 = min(nl, -(-(li.max() + 3) // TILE) * TILE)
    col1 = min(ns, -(-(pi.max() + 3) // TILE) * TILE)
    hh, ww = row1 - row0, col1 - col0
    fp = np.zeros((hh, ww), dtype=bool)
    fp[li - row0, pi - col0] = True
    fp = ndimage.binary_fill_holes(ndimage.binary_closing(fp, iterations=2))
    fp = ndimage.binary_dilation(fp, iterations=1)

    # bilinear splat of every lit sample inside the window. The two image lines a sample
    # is shared between can lie in different coordinate-conversion blocks (1 s of azimuth
    # each, whose slant-to-ground polynomials differ): the sample's column on each line is
    # its slant range converted with that line's block, as the image itself would place it
    a_ref = geom.range_pixel_spacing * geom.azimuth_pixel_spacing
    lf = line.ravel() - row0
    pf = pixel.ravel() - col0
    keep = lit.ravel() & (lf >= 0) & (pf >= 0) & (lf < hh - 1) & (pf < ww - 1)
    lf, rs = lf[keep], slant.ravel()[keep]
    del pf, slant
    a = (area.ravel()[keep] / a_ref).astype(np.float64)
    i0 = np.floor(lf).astype(np.int64)
    fl = lf - i0
    idx, wgt = [], []
    for di, wl in ((0, 1 - fl), (1, fl)):
        pcol = geom.slant_range_to_pixel((i0 + di + row0).astype(np.float64), rs) - col0
        ok = (pcol >= 0) & (pcol < ww - 1)  # NaN compares False
        pcol = np.where(ok, pcol, 0.0)
        j0 = np.floor(pcol).astype(np.int64)
        fc = pcol - j0
        base = ((i0 + di) * ww + j0).astype(np.int32)
        wl = np.where(ok, wl, 0.0)
        idx += [base, base + 1]
        wgt += [(a * wl * (1 - fc)).astype(np.float32), (a * wl * fc).astype(np.float32)]
    del lf, rs, fl, fc, i0, j0, a
    cover = np.zeros(hh * ww)
    for i, w in zip(idx, wgt):
        cover += np.bincount(i, weights=w, minlength=hh * ww)
    if not np.all(cover.reshape(hh, ww)[fp] > 0):
        log.warning(
            "%d footprint pixels receive no ground samples (radar shadow)",
            int((cover.reshape(hh, ww)[fp] <= 0).sum()),
        )
    lines_w = np.arange(row0, row1, dtype=np.float64)
    pixels_w = np.arange(col0, col1, dtype=np.float64)
    norm = flat_area_ratio(geom, sg, h_ref, lines_w, pixels_w)
    log.info("flat-terrain area per pixel / nominal area: %.4f..%.4f", norm.min(), norm.max())
    a2, eta = {}, {}
    for pol in ("VV", "VH"):
        aa = calibration_lut(cal[pol], "sigmaNought", lines_w, pixels_w).astype(np.float64)
        a2[pol] = aa * aa
        eta[pol] = noise_lut(noise[pol], lines_w, pixels_w).astype(np.float64)
    log.info(
        "scene: %d ground samples -> radar window %dx%d at (%d, %d), %d footprint px (%.1f s)",
        keep.sum(),
        hh,
        ww,
        row0,
        col0,
        fp.sum(),
        time.perf_counter() - t_start,
    )
    return Scene(
        row0, col0, hh, ww, idx, wgt, cell.ravel()[keep], theta.ravel()[keep], fp, a2, eta, norm
    )


def render_dn(
    scene: Scene, sigma0: np.ndarray, pol: str, rng: np.random.Generator | None, enl: float
) -> np.ndarray:
    """uint16 DN window: sqrt((A^2 sigma0 + eta) * speckle), >= 1 in the footprint, 0 outside."""
    p = scene.power(sigma0)
    power = scene.a2[pol] * p + scene.eta[pol]
    if rng is not None:
        power *= bs.speckle(rng, power.shape, enl)
    dn = np.clip(np.rint(np.sqrt(power)), 1, 65535).astype(np.uint16)
    dn[~scene.footprint] = 0
    return dn


# --------------------------------------------------------------------------------------
# writing a product
# --------------------------------------------------------------------------------------
def write_measurement(
    path: Path, shape: tuple[int, int], scene: Scene, dn: np.ndarray, gcps
) -> None:
    """Full-size tiled uint16 TIFF; only the window's tiles are written (SPARSE_OK)."""
    import rasterio
    from rasterio.control import GroundControlPoint
    from rasterio.windows import Window

    nl, ns = shape
    profile = dict(
        driver="GTiff",
        width=ns,
        height=nl,
        count=1,
        dtype="uint16",
        tiled=True,
        blockxsize=TILE,
        blockysize=TILE,
        compress="deflate",
        predictor=2,
        SPARSE_OK="TRUE",
        BIGTIFF="NO",
    )
    pts = [
        GroundControlPoint(row=float(r), col=float(c), x=float(x), y=float(y), z=float(z))
        for r, c, x, y, z in zip(gcps.line, gcps.pixel, gcps.lon, gcps.lat, gcps.height)
    ]
    # GDAL write errors (a full disk while the dataset is closed) raise, naming the file
    with raise_gdal_write_errors(path):
        with warnings.catch_warnings():
            # GCPs are set right after creation; GDAL warns about the moment in between
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            ds = rasterio.open(path, "w", **profile)
        with ds:
            ds.gcps = (pts, rasterio.crs.CRS.from_epsg(4326))
            ds.write(dn, 1, window=Window(scene.col0, scene.row0, scene.width, scene.height))


def _update_manifest(text: str, written: dict[str, bytes | Path], new: Ids) -> bytes:
    """Drop dataObjects of files not shipped, fix sizes/MD5s, add missing measurement objects."""
    root = etree.fromstring(text.encode("utf-8"))
    section = root.find("dataObjectSection")
    present = {}
    dropped = set()
    for obj in list(section.findall("dataObject")):
        loc = obj.find("byteStream/fileLocation")
        rel = (loc.get("href", "") if loc is not None else "").removeprefix("./")
        if rel not in written:
            dropped.add(obj.get("ID"))
            section.remove(obj)
        else:
            present[rel] = obj
    for rel, content in written.items():
        if rel == "manifest.safe" or rel in present:
            continue
        if not rel.startswith("measurement/"):
            continue
        stem = Path(rel).stem
        oid = stem.replace("-", "")
        obj = etree.SubElement(section, "dataObject", ID=oid, repID="s1Level1MeasurementSchema")
        bsx = etree.SubElement(obj, "byteStream", mimeType="application/octet-stream", size="0")
        etree.SubElement(bsx, "fileLocation", locatorType="URL", href=f"./{rel}")
        etree.SubElement(bsx, "checksum", checksumName="MD5").text = ""
        present[rel] = obj
        ipm = root.find("informationPackageMap/{urn:ccsds:schema:xfdu:1}contentUnit")
        if ipm is not None:
            cu = etree.SubElement(
                ipm,
                "{urn:ccsds:schema:xfdu:1}contentUnit",
                unitType="Measurement Data Unit",
                repID="s1Level1MeasurementSchema",
            )
            etree.SubElement(cu, "dataObjectPointer", dataObjectID=oid)
    for rel, obj in present.items():
        content = written[rel]
        data = content.read_bytes() if isinstance(content, Path) else content
        bsx = obj.find("byteStream")
        bsx.set("size", str(len(data)))
        ck = bsx.find("checksum")
        if ck is not None:
            ck.text = hashlib.md5(data).hexdigest()
    # pointers to dropped objects
    for ptr in list(root.iter("dataObjectPointer")):
        if ptr.get("dataObjectID") in dropped:
            parent = ptr.getparent()
            grand = parent.getparent()
            if grand is not None:
                grand.remove(parent)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _zip_product(zip_path: Path, safe_name: str, members: dict[str, bytes | Path]) -> None:
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w") as z:
        z.writestr(zipfile.ZipInfo(f"{safe_name}/"), b"")
        for rel in sorted(members):
            content = members[rel]
            arc = f"{safe_name}/{rel}"
            if isinstance(content, Path):  # measurement TIFFs: stored (already deflated inside)
                z.write(content, arc, compress_type=zipfile.ZIP_STORED)
            else:
                z.writestr(arc, content, compress_type=zipfile.ZIP_DEFLATED)


# --------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------
def simulate(
    *,
    template: str,
    area: str,
    bbox: tuple[float, float, float, float],
    year: int,
    per_season: int,
    seed: int,
    products_dir: Path,
    truth_dir: Path,
    dem: Path | None = None,
    enl: float = 4.4,
    uniform_sigma0_db: float | None = None,
    speckle: bool = True,
    profile: str | None = None,
    labels: bool = True,
) -> list[dict[str, Any]]:
    """Synthesise the products and the truth of one area; returns the acquisition rows.

    ``labels=False`` writes no label rasters (an area used only for pretraining).
    """
    from ..sar.calibration import CalibrationLUT, NoiseLUT
    from ..sar.geometry import RadarGeometry

    t_all = time.perf_counter()
    tpl = load_template(template)
    geom = RadarGeometry.from_annotation(
        etree.fromstring(tpl.files[("annotation", "VV")][1].encode())
    )
    ipf = re.search(r'software name="Sentinel-1 IPF" version="([\d.]+)"', tpl.manifest)
    cal = {
        p: CalibrationLUT.from_xml(
            etree.fromstring(tpl.files[("calibration", p)][1].encode()),
            f"template {template} calibration {p}",
        )
        for p in ("VV", "VH")
    }
    noise = {
        p: NoiseLUT.from_xml(
            etree.fromstring(tpl.files[("noise", p)][1].encode()),
            f"template {template} noise {p}",
            ipf_version=ipf.group(1) if ipf else None,
        )
        for p in ("VV", "VH")
    }
    profile = profile or bs.profile_for(0.5 * (bbox[1] + bbox[3]))
    area_seed = zlib.crc32(area.encode()) & 0x7FFFFFFF
    truth_seed = int(np.random.SeedSequence([seed, area_seed]).generate_state(1)[0])

    # truth: the world on the 10 m area grid (synthesised over the sampled margin too)
    grid10 = area_grid(bbox, 10)
    ext10 = _expand(grid10, OUTER_MARGIN_M + 50, 10.0)
    t_world = time.perf_counter()
    world = (
        bs.uniform_world(ext10.shape, uniform_sigma0_db)
        if uniform_sigma0_db is not None
        else bs.synth_world(ext10.shape, 10.0, truth_seed, profile)
    )
    log.info("world %dx%d synthesised in %.1f s", *ext10.shape, time.perf_counter() - t_world)
    r_off = int(round((ext10.transform.f - grid10.transform.f) / 10.0))
    c_off = int(round((grid10.transform.c - ext10.transform.c) / 10.0))
    inner = (slice(r_off, r_off + grid10.height), slice(c_off, c_off + grid10.width))
    truth_dir.mkdir(parents=True, exist_ok=True)
    if not labels:  # an unlabelled area: no label rasters, not even stale ones
        for stale in ("landcover.tif", "treecover.tif"):
            (truth_dir / stale).unlink(missing_ok=True)
    else:
        write_geotiff(
            truth_dir / "landcover.tif",
            bs.CLASS_CODES[world.classes[inner]],
            crs=grid10.crs,
            transform=grid10.transform,
            nodata=0,
            band_names=["landcover"],
            tags={
                "SOURCE": "sarssl simulate (synthetic, ESA WorldCover codes)",
                "PROFILE": profile,
                "SEED": truth_seed,
            },
        )
        write_treecover(
            truth_dir / "treecover.tif",
            world.treecover[inner],
            world.classes[inner] == bs.WATER,
            grid10,
            truth_seed,
        )
    dem_obj = make_dem(bbox, dem, geom, truth_seed)
    vkind = _vertical_kind(dem_obj.crs)
    write_geotiff(
        truth_dir / "dem.tif",
        dem_obj.heights.astype(np.float32),
        crs=dem_obj.crs,
        transform=dem_obj.transform,
        band_names=["height"],
        tags={
            "SOURCE": dem_obj.source,
            "VERTICAL_DATUM": {
                "egm": "EGM2008 (geoid)",
                "assumed_egm": "EGM (assumed)",
                "ellipsoidal": "WGS84 ellipsoid",
            }[vkind],
        },
        cog=False,
    )
    bs.write_sigma0_table(truth_dir / "sigma0_table.csv", profile, uniform_sigma0_db)

    scene = build_scene(geom, dem_obj, grid10, ext10, cal, noise)
    slope = {pol: world.slope[pol].ravel()[scene.cell] for pol in ("VV", "VH")}

    cycles = choose_cycles(tpl.ids.start.date(), year, per_season, seed)
    products_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    shape = geom.shape
    for n_prod, (season, k) in enumerate(tqdm(cycles, desc=f"simulate {area}", unit="product")):
        t0 = time.perf_counter()
        new = product_ids(tpl.ids, k, seed, area)
        red = Redater(tpl.ids, new, k)
        rng = np.random.default_rng([seed, area_seed, n_prod]) if speckle else None
        members: dict[str, bytes | Path] = {}
        with tempfile.TemporaryDirectory(dir=products_dir, prefix=".sim.") as tmpd:
            for pol in ("VV", "VH"):
                for kind in ("annotation", "calibration", "noise"):
                    rel, text = tpl.files[(kind, pol)]
                    members[red.text(rel)] = red.text(text).encode("utf-8")
                ann_rel = red.text(tpl.files[("annotation", pol)][0])
                meas_rel = "measurement/" + Path(ann_rel).stem + ".tiff"
                db_ref = world.db[pol][SEASONS.index(season)].ravel()[scene.cell]
                sigma = bs.sigma0_linear(db_ref, slope[pol], scene.theta)
                dn = render_dn(scene, sigma, pol, rng, enl)
                tif = Path(tmpd) / Path(meas_rel).name
                write_measurement(tif, shape, scene, dn, geom.gcps)
                members[meas_rel] = tif
            members["manifest.safe"] = _update_manifest(red.text(tpl.manifest), members, new)
            zip_path = products_dir / f"{new.name}.zip"
            _zip_product(zip_path, f"{new.name}.SAFE", members)
        rows.append(
            {
                "product_id": new.name,
                "date": new.start.date().isoformat(),
                "season": season,
                "file": zip_path.name,
                "start_time": new.start.isoformat(),
                "absolute_orbit": new.orbit,
                "cycle_offset": k,
                "size_bytes": zip_path.stat().st_size,
            }
        )
        log.info(
            "%s (%s): %.1f MB in %.1f s",
            new.name,
            season,
            zip_path.stat().st_size / 1e6,
            time.perf_counter() - t0,
        )
    with atomic_path(truth_dir / "acquisitions.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    write_json(
        truth_dir / "run.json",
        run_record(
            dict(
                template=template,
                area=area,
                bbox=list(bbox),
                year=year,
                per_season=per_season,
                seed=seed,
                dem=str(dem) if dem else None,
                enl=enl,
                uniform_sigma0_db=uniform_sigma0_db,
                speckle=speckle,
                profile=profile,
                labels=labels,
            ),
            template_product=tpl.ids.name,
            vh_synthesised_from_vv=tpl.synthesised_vh,
            dem_source=dem_obj.source,
            truth_seed=truth_seed,
            radar_window=dict(
                row0=scene.row0, col0=scene.col0, height=scene.height, width=scene.width
            ),
            wall_s=round(time.perf_counter() - t_all, 2),
        ),
    )
    return rows
