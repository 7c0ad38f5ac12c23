"""DEM access for terrain correction: windowed reading and ellipsoidal heights.

The Range-Doppler model needs heights above the WGS84 *ellipsoid*; DEMs give heights
above a geoid (orthometric): ``h_ellipsoid = H_orthometric + N(lon, lat)``, with N the
geoid undulation (-107..+86 m worldwide; ~+47 m around Rome). Ignoring N shifts targets in
range by ``N / tan(incidence)`` (~80 m = 8 px at 30 deg), so it matters.

Vertical datum, from the DEM's CRS:
- a compound CRS whose vertical part names EGM2008 -> EGM2008; EGM96 -> EGM96;
- a 3-D geographic CRS (EPSG:4979) or an ellipsoidal vertical part -> already ellipsoidal;
- a 2-D CRS that states no vertical datum -> EGM2008 (as Copernicus DEM GLO-30/90 tiles).

Geoid undulations are read OFFLINE from PROJ geoid grids (``egm08_25.gtx`` /
``us_nga_egm08_25.tif`` for EGM2008, ``egm96_15.gtx`` / ``us_nga_egm96_15.tif`` for
EGM96), searched in ``$SARSSL_GEOID_DIR``, ``$PROJ_DATA``/``$PROJ_LIB``, the per-user
sarssl dir (:func:`user_geoid_dir`, where ``sarssl acquire geoid`` downloads them), pyproj's
data dir and ``/usr/share/proj``, and interpolated bilinearly here (not through a PROJ pipeline,
which silently returns unchanged heights when a grid is missing). Debian's ``proj-data``
package ships ``egm96_15.gtx`` (``apt-get install proj-data``). When an EGM2008 DEM meets
only the EGM96 grid, EGM96 is used with a warning: the two models differ by < 1 m over most
of the globe (a few metres in rugged terrain), i.e. well under a 10 m pixel of geolocation.
No grid at all raises :class:`~sarssl.errors.SarsslError` rather than guess.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from affine import Affine
from pyproj import CRS

from ..errors import InputError, SarsslError

log = logging.getLogger(__name__)

GEOID_GRIDS = {
    "EGM2008": ("us_nga_egm08_25.tif", "egm08_25.gtx", "egm2008-2_5.gtx", "egm2008-1.gtx"),
    "EGM96": ("us_nga_egm96_15.tif", "egm96_15.gtx"),
}
INSTALL_HINT = (
    "run `sarssl acquire geoid --model egm2008` (or egm96), install Debian's proj-data "
    "(apt-get install proj-data) or set SARSSL_GEOID_DIR"
)


@dataclass
class Dem:
    """A DEM window with ellipsoidal heights (float64 metres, NaN = no data)."""

    height: np.ndarray
    transform: Affine
    crs: CRS
    path: str
    vertical_datum: str  # the datum converted from (EGM2008/EGM96/ellipsoid)
    geoid: str = (
        "none (ellipsoidal heights)"  # the geoid grid applied, e.g. "EGM2008 (us_nga_egm08_25.tif)"
    )
    void_fraction: float = 0.0  # share of no-data DEM pixels over the requested bbox (no margin)

    @property
    def shape(self) -> tuple[int, int]:
        return self.height.shape

    def crop(self, xs: np.ndarray, ys: np.ndarray, margin: int = 3) -> "Dem":
        """The sub-window covering points (``xs``, ``ys``, in the DEM's horizontal CRS)
        plus ``margin`` DEM pixels: a view, no copy (per-tile terrain correction)."""
        inv = ~self.transform
        cols = inv.a * np.asarray(xs) + inv.b * np.asarray(ys) + inv.c
        rows = inv.d * np.asarray(xs) + inv.e * np.asarray(ys) + inv.f
        rows_n, cols_n = self.height.shape
        c0 = max(int(np.floor(np.nanmin(cols))) - margin, 0)
        c1 = min(int(np.ceil(np.nanmax(cols))) + margin + 1, cols_n)
        r0 = max(int(np.floor(np.nanmin(rows))) - margin, 0)
        r1 = min(int(np.ceil(np.nanmax(rows))) + margin + 1, rows_n)
        if c1 - c0 < 2 or r1 - r0 < 2:
            c0, c1, r0, r1 = 0, cols_n, 0, rows_n
        return Dem(
            self.height[r0:r1, c0:c1],
            self.transform @ Affine.translation(c0, r0),
            self.crs,
            self.path,
            self.vertical_datum,
        )


def vertical_datum(crs: CRS) -> str:
    """'EGM2008', 'EGM96' or 'ellipsoid' for a DEM CRS (see the module docstring)."""
    if crs.is_compound:
        for sub in crs.sub_crs_list:
            if sub.is_vertical:
                name = (sub.name + " " + (sub.datum.name if sub.datum else "")).upper()
                if "2008" in name:
                    return "EGM2008"
                if "EGM96" in name or "EGM 96" in name:
                    return "EGM96"
                if "ELLIPSOID" in name:
                    return "ellipsoid"
                raise SarsslError(
                    f"vertical datum {sub.name!r} is not supported (EGM2008, EGM96, ellipsoid)"
                )
    if crs.is_geographic and len(crs.axis_info) == 3:
        return "ellipsoid"
    return "EGM2008"


def user_geoid_dir() -> Path:
    """Per-user geoid grid folder: the first entry of ``$SARSSL_GEOID_DIR`` if set, else
    ``$XDG_DATA_HOME/sarssl/geoid`` (default ``~/.local/share/sarssl/geoid``); the default
    destination of ``sarssl acquire geoid``."""
    env = [d for d in os.environ.get("SARSSL_GEOID_DIR", "").split(os.pathsep) if d]
    if env:
        return Path(env[0]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "sarssl" / "geoid"


def _grid_dirs() -> list[Path]:
    dirs = []
    for var in ("SARSSL_GEOID_DIR", "PROJ_DATA", "PROJ_LIB"):
        for d in os.environ.get(var, "").split(os.pathsep):
            if d:
                dirs.append(Path(d))
    dirs.append(user_geoid_dir())
    try:
        import pyproj

        dirs.append(Path(pyproj.datadir.get_data_dir()))
        dirs.append(Path(pyproj.datadir.get_user_data_dir()))
    except Exception:  # pragma: no cover - pyproj always has a data dir
        pass
    dirs += [Path("/usr/share/proj"), Path("/usr/local/share/proj")]
    return dirs


def find_geoid_grid(model: str) -> Path | None:
    """Path of a local geoid grid for 'EGM2008' or 'EGM96', or None."""
    for d in _grid_dirs():
        for name in GEOID_GRIDS[model]:
            if (d / name).is_file():
                return d / name
    return None


@functools.lru_cache(maxsize=4)
def _load_geoid(model: str, search: tuple[str, ...]) -> tuple[np.ndarray, Affine, Path, str]:
    """(undulation grid, transform, path, model used) of a local geoid grid, read once per
    model and search path (``search`` only keys the cache)."""
    import rasterio

    path = find_geoid_grid(model)
    used = model
    if path is None and model == "EGM2008":
        path = find_geoid_grid("EGM96")
        used = "EGM96"
        if path is not None:
            log.warning(
                "no EGM2008 geoid grid found: using EGM96 (%s) for EGM2008 heights "
                "(< ~1 m difference in most places)",
                path,
            )
    if path is None:
        raise SarsslError(
            f"no {model} geoid grid ({', '.join(GEOID_GRIDS[model])}) found in "
            f"{', '.join(str(d) for d in _grid_dirs())}: {INSTALL_HINT}"
        )
    with rasterio.open(path) as ds:
        return ds.read(1).astype(np.float64), ds.transform, path, used


def _geoid_weights(model: str, lon, lat):
    """The geoid grid and the bilinear cell indices/weights of lon/lat (degrees) in it:
    ``(grid, r0, fr, c0, c1, fc, path, used)``; columns wrap around the date line."""
    grid, t, path, used = _load_geoid(model, tuple(str(d) for d in _grid_dirs()))
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    x0 = t.c + 0.5 * t.a  # first pixel centre longitude
    col = np.mod(lon - x0, 360.0) / t.a
    row = (lat - (t.f + 0.5 * t.e)) / t.e
    rows, cols = grid.shape
    if not (np.all(row >= -1e-9) and np.all(row <= rows - 1 + 1e-9)):
        raise SarsslError(f"geoid grid {path}: latitudes outside the grid")
    c0 = np.floor(col).astype(np.int64)
    r0 = np.clip(np.floor(row).astype(np.int64), 0, rows - 2)
    fc = col - c0
    fr = row - r0
    c0 %= cols
    c1 = (c0 + 1) % cols  # wraps around the date line (global grids)
    return grid, r0, fr, c0, c1, fc, path, used


def geoid_in_use(model: str) -> str:
    """The geoid grid that converts ``model`` heights here, e.g. ``"EGM2008
    (us_nga_egm08_25.tif)"`` or ``"EGM96 (egm96_15.gtx) for EGM2008"`` when the EGM2008
    grid is missing (recorded in every output's tags)."""
    _, _, path, used = _load_geoid(model, tuple(str(d) for d in _grid_dirs()))
    return f"{used} ({Path(path).name})" + ("" if used == model else f" for {model}")


def geoid_undulation(lon: np.ndarray, lat: np.ndarray, model: str = "EGM2008") -> np.ndarray:
    """Geoid height N (m) above WGS84 at lon/lat (degrees), bilinear in the PROJ grid."""
    grid, r0, fr, c0, c1, fc, path, used = _geoid_weights(model, lon, lat)
    n = (
        grid[r0, c0] * (1 - fr) * (1 - fc)
        + grid[r0, c1] * (1 - fr) * fc
        + grid[r0 + 1, c0] * fr * (1 - fc)
        + grid[r0 + 1, c1] * fr * fc
    )
    log.debug("geoid %s from %s", used, path)
    return n


def geoid_undulation_grid(lon: np.ndarray, lat: np.ndarray, model: str = "EGM2008") -> np.ndarray:
    """Geoid height N (m) on the lon x lat lattice (``(lat.size, lon.size)``): the same
    bilinear interpolation as :func:`geoid_undulation`, but the row/column weights are
    computed once per latitude/longitude (a north-up geographic DEM's rows share a
    latitude, its columns a longitude) and the products in one numba pass, without the
    per-pixel float64 temporaries (a full-scene 30 m DEM has ~2.5e7 px)."""
    grid, r0, fr, c0, c1, fc, path, used = _geoid_weights(model, lon, lat)
    out = np.empty((lat.size, lon.size), dtype=np.float64)
    _separable_bilinear(np.ascontiguousarray(grid, dtype=np.float64), r0, fr, c0, c1, fc, out)
    log.debug("geoid %s from %s", used, path)
    return out


@numba.njit(cache=True, parallel=True)
def _separable_bilinear(grid, r0, fr, c0, c1, fc, out):
    for i in numba.prange(r0.size):
        a = grid[r0[i]]
        b = grid[r0[i] + 1]
        w = fr[i]
        for j in range(c0.size):
            f = fc[j]
            out[i, j] = (
                a[c0[j]] * (1 - w) * (1 - f)
                + a[c1[j]] * (1 - w) * f
                + b[c0[j]] * w * (1 - f)
                + b[c1[j]] * w * f
            )


METRE_UNITS = frozenset({"", "m", "metre", "meter", "metres", "meters"})
"""Spellings of the metre in a band's unit or a vertical axis (lower case; '' = unset)."""


def vertical_unit(ds, crs: CRS) -> str:
    """The DEM's height unit as written in the file ('' when it states none): the band's
    unit type, else the unit of the compound CRS's vertical axis."""
    band_unit = (ds.units[0] or "").strip() if ds.units else ""
    if band_unit:
        return band_unit
    if crs.is_compound and len(crs.sub_crs_list) > 1:
        for axis in crs.sub_crs_list[1].axis_info:
            if axis.unit_name:
                return axis.unit_name
    return ""


def check_void(dem: "Dem", max_void: float, what: str = "area") -> None:
    """Warn about DEM holes over the area; raise when they exceed ``max_void`` (a fraction).

    Terrain correction leaves a pixel whose DEM height is missing as no data (or, at a
    hole's edge, interpolates over it), so a DEM with voids silently punches holes into
    every scene of the area; ``max_void`` (``preprocess.max_dem_void``) turns that into an
    error.
    """
    if dem.void_fraction <= 0:
        return
    msg = (
        f"DEM {dem.path}: {dem.void_fraction:.1%} of its pixels over the {what} are no data (holes)"
    )
    if dem.void_fraction > max_void:
        raise InputError(
            f"{msg}: more than --max-dem-void {max_void:g}; fill the voids or raise the limit"
        )
    log.warning("%s (limit --max-dem-void %g)", msg, max_void)


def read_dem(
    path: str | os.PathLike,
    bbox: tuple[float, float, float, float],
    margin_deg: float = 0.01,
    what: str = "area",
) -> Dem:
    """Read the DEM window covering lon/lat ``bbox`` (+ margin) as ellipsoidal heights.

    Raises :class:`InputError` naming the DEM and the area when the DEM does not cover
    the bbox, when the covered window holds only no data, or when its heights are not in
    metres (a band unit or vertical axis in feet would be read as metres: a 3.3x terrain
    error; convert the DEM first, e.g. ``gdal_calc.py --calc "A*0.3048"`` and set the unit).
    The share of no-data pixels over ``bbox`` itself is returned as ``void_fraction``.
    """
    import rasterio
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    path = str(path)
    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"DEM {path}: cannot be opened ({exc})") from exc
    with ds:
        if ds.crs is None:
            raise InputError(f"DEM {path}: has no CRS")
        crs = CRS.from_user_input(ds.crs.to_wkt())
        unit = vertical_unit(ds, crs)
        if unit.lower() not in METRE_UNITS:
            raise InputError(
                f"DEM {path}: heights are in {unit!r}, not metres; convert the DEM to metres "
                "first (sarssl does not rescale heights implicitly)"
            )
        datum = vertical_datum(crs)
        w, s, e, n = bbox
        need = transform_bounds("EPSG:4326", ds.crs, w, s, e, n, densify_pts=21)
        have = ds.bounds
        tol = 1e-9 * max(1.0, abs(have.left))
        if (
            need[0] < have.left - tol
            or need[2] > have.right + tol
            or need[1] < have.bottom - tol
            or need[3] > have.top + tol
        ):
            raise InputError(
                f"DEM {path} (bounds {tuple(round(v, 5) for v in have)}) does not cover the {what} "
                f"{tuple(round(v, 5) for v in bbox)}"
            )
        wm, sm, em, nm = transform_bounds(
            "EPSG:4326",
            ds.crs,
            w - margin_deg,
            s - margin_deg,
            e + margin_deg,
            n + margin_deg,
            densify_pts=21,
        )
        win = from_bounds(wm, sm, em, nm, ds.transform)
        c0 = max(int(np.floor(win.col_off)) - 1, 0)
        r0 = max(int(np.floor(win.row_off)) - 1, 0)
        c1 = min(int(np.ceil(win.col_off + win.width)) + 2, ds.width)
        r1 = min(int(np.ceil(win.row_off + win.height)) + 2, ds.height)
        win = Window(c0, r0, c1 - c0, r1 - r0)
        data = ds.read(1, window=win, masked=True).astype(np.float64).filled(np.nan)
        transform = ds.window_transform(win)
        inner = from_bounds(*need, transform)  # the bbox itself, in this window's pixels
        ir0 = min(max(int(np.floor(inner.row_off)), 0), data.shape[0] - 1)
        ic0 = min(max(int(np.floor(inner.col_off)), 0), data.shape[1] - 1)
        ir1 = max(min(int(np.ceil(inner.row_off + inner.height)), data.shape[0]), ir0 + 1)
        ic1 = max(min(int(np.ceil(inner.col_off + inner.width)), data.shape[1]), ic0 + 1)
        void_fraction = float(np.isnan(data[ir0:ir1, ic0:ic1]).mean())
    if not np.isfinite(data).any():
        raise InputError(f"DEM {path}: only no data over the {what} {bbox}")
    if datum != "ellipsoid":
        # in row chunks: a full-scene 30 m DEM has ~1e8 px and the undulation needs a few
        # float64 temporaries per pixel
        t = transform
        tr = None
        if not crs.is_geographic:
            from pyproj import Transformer

            tr = Transformer.from_crs(
                crs.sub_crs_list[0] if crs.is_compound else crs, "EPSG:4326", always_xy=True
            )
        if tr is None and t.b == 0 and t.d == 0:  # north-up lon/lat grid: separable
            lon = t.c + t.a * (np.arange(data.shape[1]) + 0.5)
            lat = t.f + t.e * (np.arange(data.shape[0]) + 0.5)
            data += geoid_undulation_grid(lon, lat, datum)
        else:
            chunk = max(1, 2_000_000 // max(data.shape[1], 1))
            for a in range(0, data.shape[0], chunk):
                rows, cols = np.mgrid[a : min(a + chunk, data.shape[0]), 0 : data.shape[1]]
                xs = t.c + t.a * (cols + 0.5) + t.b * (rows + 0.5)
                ys = t.f + t.d * (cols + 0.5) + t.e * (rows + 0.5)
                if tr is not None:
                    xs, ys = tr.transform(xs, ys)
                data[a : a + chunk] += geoid_undulation(xs, ys, datum)
    geoid = geoid_in_use(datum) if datum != "ellipsoid" else "none (ellipsoidal heights)"
    log.info(
        "DEM %s: %dx%d window, %s heights -> ellipsoidal with geoid %s",
        path,
        data.shape[0],
        data.shape[1],
        datum,
        geoid,
    )
    return Dem(
        height=data,
        transform=transform,
        crs=crs,
        path=path,
        vertical_datum=datum,
        geoid=geoid,
        void_fraction=void_fraction,
    )


def constant_dem(
    bbox: tuple[float, float, float, float], height: float, step: float = 0.001
) -> Dem:
    """A flat ellipsoidal-height DEM on a lon/lat grid covering ``bbox`` (tests, oceans)."""
    w, s, e, n = bbox
    cols = int(np.ceil((e - w) / step)) + 5
    rows = int(np.ceil((n - s) / step)) + 5
    transform = Affine(step, 0, w - 2 * step, 0, -step, n + 2 * step)
    return Dem(
        np.full((rows, cols), float(height)),
        transform,
        CRS.from_epsg(4979),
        "<constant>",
        "ellipsoid",
    )
