"""EGM2008 / EGM96 geoid grids from the PROJ CDN, for offline use by :mod:`sarssl.sar.dem`.

Terrain correction needs heights above the WGS84 ellipsoid, DEMs give heights above a
geoid: ``h = H + N(lon, lat)`` (see :mod:`sarssl.sar.dem`). Copernicus DEM heights refer to
EGM2008, but Debian's ``proj-data`` ships only the EGM96 grid, so without this download an
EGM2008 DEM is converted with EGM96 (< ~1 m off in most places, a few metres in rugged
terrain). ``sarssl acquire geoid --model egm2008`` fetches, once, the grid PROJ itself uses:

- EGM2008: ``us_nga_egm08_25.tif`` -- 2.5 arc-minute global grid (~80 MB), NGA's
  EGM2008 geoid heights (Pavlis et al. 2012, JGR 117, B04406, doi 10.1029/2011JB008916)
  converted to a GeoTIFF by the PROJ project;
- EGM96: ``us_nga_egm96_15.tif`` -- 15 arc-minute global grid (~2.6 MB), NGA/NASA EGM96
  (Lemoine et al. 1998, NASA/TP-1998-206861).

Both are float32 geoid undulations N in metres on EPSG:4326 (geographic, pixel centres on
the grid nodes), served openly (no account) from ``https://cdn.proj.org``. The file goes
through the shared resumable, size-verified :class:`~sarssl.acquire.http.HttpClient` and is
then opened with rasterio and checked to be a geographic GeoTIFF that spans the whole globe
(360 degrees of longitude, -90..+90 latitude, within one pixel) with plausible values
(|N| < 150 m; the real range is -107..+86 m); a file that fails is deleted, so the next run
downloads it again.

The default destination is :func:`sarssl.sar.dem.user_geoid_dir` (``$SARSSL_GEOID_DIR`` if set,
else ``$XDG_DATA_HOME/sarssl/geoid``, else ``~/.local/share/sarssl/geoid``), which
:mod:`sarssl.sar.dem` searches without any variable set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SarsslError
from ..sar import dem as dem_mod
from .http import HttpClient

log = logging.getLogger(__name__)

#: PROJ content delivery network (the grids of the PROJ-data package, one file each).
PROJ_CDN_URL = "https://cdn.proj.org"
#: File name of each model's grid on the PROJ CDN (also the first name sarssl.sar.dem looks for).
GEOID_FILES = {"egm2008": "us_nga_egm08_25.tif", "egm96": "us_nga_egm96_15.tif"}
#: Geoid undulations outside this range (m) mean a wrong or corrupt file (real: -107..+86 m).
MAX_ABS_UNDULATION = 150.0


@dataclass(frozen=True)
class GridInfo:
    """What the verification found out about a downloaded grid."""

    path: Path
    shape: tuple[int, int]  # rows, columns
    resolution: float  # degrees per pixel (longitude)
    bounds: tuple[float, float, float, float]  # W, S, E, N of the pixel edges, degrees
    n_min: float  # smallest undulation in the (decimated) check, m
    n_max: float  # largest undulation in the (decimated) check, m


def geoid_file(model: str) -> str:
    """PROJ-CDN file name of ``model`` ('egm2008' or 'egm96', case-insensitive)."""
    try:
        return GEOID_FILES[model.lower()]
    except KeyError:
        raise SarsslError(f"geoid model {model!r}: choose one of {sorted(GEOID_FILES)}") from None


def verify_global_grid(path: str | Path) -> GridInfo:
    """Check that ``path`` is a geographic GeoTIFF geoid grid covering the whole globe.

    Coverage: the pixel edges must span >= 360 degrees of longitude minus one pixel (grids
    either repeat the -180/+180 column or wrap) and reach -90 and +90 latitude within one
    pixel (PROJ grids put pixel centres on the poles). Values are checked on a decimated
    read (<= ~1e6 px, not the 37 M px of EGM2008) for being finite and |N| < 150 m.
    Raises :class:`SarsslError` naming the file and the problem.
    """
    import rasterio
    from rasterio.enums import Resampling

    path = Path(path)
    try:
        ds = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise SarsslError(f"geoid grid {path}: not a readable raster ({exc})") from exc
    with ds:
        if ds.driver != "GTiff":
            raise SarsslError(f"geoid grid {path}: expected a GeoTIFF, got a {ds.driver} file")
        if ds.crs is None or not ds.crs.is_geographic:
            raise SarsslError(
                f"geoid grid {path}: CRS {ds.crs} is not geographic (lon/lat degrees)"
            )
        t = ds.transform
        if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
            raise SarsslError(
                f"geoid grid {path}: not a north-up lon/lat grid (transform {tuple(t)[:6]})"
            )
        res_x, res_y = t.a, -t.e
        w, s, e, n = ds.bounds
        if e - w < 360.0 - res_x - 1e-6 or s > -90.0 + res_y + 1e-6 or n < 90.0 - res_y - 1e-6:
            raise SarsslError(
                f"geoid grid {path}: covers lon {w:.3f}..{e:.3f}, lat {s:.3f}..{n:.3f}, "
                "not the whole globe"
            )
        step = max(1, int(np.ceil(np.sqrt(ds.width * ds.height / 1e6))))
        shape = (max(1, ds.height // step), max(1, ds.width // step))
        data = ds.read(1, out_shape=shape, resampling=Resampling.nearest, masked=True)
        info_shape = (ds.height, ds.width)
    values = np.ma.filled(data.astype(np.float64), np.nan)
    if not np.isfinite(values).all():
        raise SarsslError(f"geoid grid {path}: holds no-data or non-finite undulations")
    lo, hi = float(values.min()), float(values.max())
    if max(abs(lo), abs(hi)) >= MAX_ABS_UNDULATION:
        raise SarsslError(
            f"geoid grid {path}: undulations {lo:.1f}..{hi:.1f} m are implausible "
            f"(|N| < {MAX_ABS_UNDULATION:g} m)"
        )
    return GridInfo(path, info_shape, res_x, (w, s, e, n), lo, hi)


def acquire_geoid(
    model: str,
    client: HttpClient,
    out_dir: str | Path | None = None,
    base_url: str = PROJ_CDN_URL,
) -> GridInfo:
    """Download ``model``'s PROJ grid into ``out_dir``
    (default :func:`sarssl.sar.dem.user_geoid_dir`) and verify it (:func:`verify_global_grid`);
    an existing valid file is kept.

    A file failing verification is deleted before the error is raised, so a rerun fetches it
    again. Clears :mod:`sarssl.sar.dem`'s geoid cache so this process sees the new grid.
    """
    name = geoid_file(model)
    out = Path(out_dir).expanduser() if out_dir is not None else dem_mod.user_geoid_dir()
    url = f"{base_url.rstrip('/')}/{name}"
    dest = client.download(url, out / name, what=f"{model.upper()} geoid grid {name}")
    try:
        info = verify_global_grid(dest)
    except SarsslError as exc:
        dest.unlink(missing_ok=True)
        raise SarsslError(f"{exc} (downloaded from {url}; the file was deleted)") from None
    dem_mod._load_geoid.cache_clear()
    log.info(
        "%s geoid grid %s: %dx%d px at %.4f deg, N %.1f..%.1f m",
        model.upper(),
        dest,
        info.shape[0],
        info.shape[1],
        info.resolution,
        info.n_min,
        info.n_max,
    )
    return info
