"""Copernicus DEM GLO-30 tiles covering a bounding box, mosaicked to one GeoTIFF.

GLO-30 is distributed as 1 x 1 degree Cloud-Optimised GeoTIFFs, openly (no credentials)
from the AWS Open Data bucket ``https://copernicus-dem-30m.s3.amazonaws.com``, one folder
per tile::

    Copernicus_DSM_COG_10_N41_00_E012_00_DEM/Copernicus_DSM_COG_10_N41_00_E012_00_DEM.tif

The name gives the tile's south-west corner: ``N41``/``S19`` (2-digit latitude) and
``E012``/``W071`` (3-digit longitude); ``10`` is the posting in arc-seconds x 10 (1 arcsec
~ 30 m). Pixel *centres* fall on whole seconds, so a tile spans half a pixel beyond its
nominal north/west edges. Tile width shrinks poleward (3600 px below 50 deg latitude, 2400
at 50-60, 1800 at 60-70, 1200 at 70-80, 720 at 80-85, 360 beyond). Tiles over open ocean do
not exist: a 404 for them is logged and skipped.

Heights are orthometric, above the **EGM2008** geoid. The tiles' own CRS is plain EPSG:4326,
so the mosaic is written with the compound CRS **EPSG:9518 (WGS 84 + EGM2008 height)** and
a ``VERTICAL_DATUM=EGM2008`` tag, which :func:`sarssl.sar.dem.vertical_datum` reads to add the
geoid undulation before terrain correction.

Reference: Copernicus DEM Product Handbook (AIRBUS, GEO.2018-1988-2, v5.0, 2022).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import SarsslError
from .http import AcquireError, HttpClient, NotFoundError

log = logging.getLogger(__name__)

GLO30_URL = "https://copernicus-dem-30m.s3.amazonaws.com"
GLO90_URL = "https://copernicus-dem-90m.s3.amazonaws.com"
#: EPSG code of WGS 84 + EGM2008 height (the compound CRS of Copernicus DEM heights).
EGM2008_COMPOUND_EPSG = 9518


def lat_label(lat: int) -> str:
    """Whole-degree latitude label: 41 -> 'N41', -19 -> 'S19', 0 -> 'N00'."""
    return f"{'N' if lat >= 0 else 'S'}{abs(lat):02d}"


def lon_label(lon: int) -> str:
    """Whole-degree longitude label: 12 -> 'E012', -71 -> 'W071', 0 -> 'E000'."""
    return f"{'E' if lon >= 0 else 'W'}{abs(lon):03d}"


def degree_cells(bbox: Sequence[float], step: int = 1) -> list[tuple[int, int]]:
    """South-west corners (lat, lon) of the ``step``-degree cells, aligned on multiples of
    ``step``, that overlap the bbox W,S,E,N with positive area (a bbox edge lying exactly on a
    cell boundary does not pull in the neighbour). Sorted north to south, west to east.
    """
    w, s, e, n = (float(v) for v in bbox)
    if not (w < e and s < n):
        raise SarsslError(f"bounding box {tuple(bbox)}: need W<E and S<N")
    lat0 = math.floor(s / step) * step
    lat1 = math.ceil(n / step) * step
    lon0 = math.floor(w / step) * step
    lon1 = math.ceil(e / step) * step
    lats = range(lat0, lat1, step)
    lons = [lo for lo in range(lon0, lon1, step) if -180 <= lo < 180]
    return [(la, lo) for la in sorted(lats, reverse=True) for lo in lons if -90 <= la < 90]


def dem_tile_name(lat: int, lon: int, arcsec: int = 1) -> str:
    """GLO-30 (``arcsec=1``) / GLO-90 (``arcsec=3``) tile name of the cell at (lat, lon)."""
    return f"Copernicus_DSM_COG_{arcsec * 10}_{lat_label(lat)}_00_{lon_label(lon)}_00_DEM"


def dem_tiles(bbox: Sequence[float], arcsec: int = 1) -> list[str]:
    """Names of the DEM tiles covering ``bbox`` (W,S,E,N degrees)."""
    return [dem_tile_name(la, lo, arcsec) for la, lo in degree_cells(bbox, 1)]


def dem_tile_url(name: str, base_url: str = GLO30_URL) -> str:
    return f"{base_url.rstrip('/')}/{name}/{name}.tif"


def expand_bbox(bbox: Sequence[float], margin: float) -> tuple[float, float, float, float]:
    """bbox grown by ``margin`` degrees on every side (clipped to the globe)."""
    w, s, e, n = bbox
    return (
        max(-180.0, w - margin),
        max(-90.0, s - margin),
        min(180.0, e + margin),
        min(90.0, n + margin),
    )


def download_tiles(
    client: HttpClient, urls: dict[str, str], tile_dir: Path, *, missing_ok: bool
) -> list[Path]:
    """Download ``{file name: url}`` into ``tile_dir``; 404s skipped when ``missing_ok``."""
    from tqdm import tqdm

    paths = []
    for name, url in tqdm(
        sorted(urls.items()), desc="tiles", unit="tile", disable=not client.progress
    ):
        try:
            paths.append(client.download(url, tile_dir / name, what=f"tile {name}"))
        except NotFoundError:
            if not missing_ok:
                raise
            log.warning("tile %s does not exist at %s (open ocean?): skipped", name, url)
    return paths


def mosaic_to_geotiff(
    paths: Sequence[Path],
    out: str | Path,
    bounds: Sequence[float],
    *,
    crs=None,
    nodata: float | int | None = None,
    band_name: str | None = None,
    tags: dict | None = None,
    dtype: str | None = None,
) -> tuple[int, int]:
    """Merge raster tiles (one CRS) over ``bounds`` (in that CRS) into one COG at ``out``.

    The output keeps the first tile's pixel grid and finest resolution: ``bounds`` are
    snapped outward onto that grid so no pixel is resampled (nearest neighbour, first tile
    wins where they overlap). Areas no tile covers are ``nodata``. Returns (rows, cols).
    """
    import rasterio
    import rasterio.shutil  # noqa: F401 - sarssl.io.write_geotiff needs it loaded
    from rasterio.merge import merge

    from ..io import write_geotiff

    if not paths:
        raise AcquireError(f"no tiles to mosaic for {out}")
    srcs = [rasterio.open(p) for p in paths]
    try:
        first = srcs[0]
        for src in srcs[1:]:
            if src.crs != first.crs:
                raise AcquireError(
                    f"tile {src.name}: CRS {src.crs} differs from {first.name} ({first.crs})"
                )
        resx = min(abs(s.transform.a) for s in srcs)
        resy = min(abs(s.transform.e) for s in srcs)
        ox, oy = first.transform.c, first.transform.f
        w, s, e, n = bounds
        w = ox + math.floor((w - ox) / resx + 1e-9) * resx
        e = ox + math.ceil((e - ox) / resx - 1e-9) * resx
        n = oy - math.floor((oy - n) / resy + 1e-9) * resy
        s = oy - math.ceil((oy - s) / resy - 1e-9) * resy
        nd = first.nodata if nodata is None else nodata
        arr, transform = merge(srcs, bounds=(w, s, e, n), res=(resx, resy), nodata=nd, dtype=dtype)
        names = [band_name] * arr.shape[0] if band_name else None
        write_geotiff(
            out,
            arr,
            crs=crs or first.crs,
            transform=transform,
            nodata=nd,
            band_names=names,
            tags=tags,
        )
        return arr.shape[1], arr.shape[2]
    finally:
        for src in srcs:
            src.close()


def acquire_dem(
    bbox: Sequence[float],
    out: str | Path,
    client: HttpClient,
    *,
    base_url: str = GLO30_URL,
    tile_dir: str | Path | None = None,
    margin: float = 0.01,
    arcsec: int = 1,
) -> Path:
    """Download the GLO-30 tiles covering ``bbox`` (+ ``margin`` degrees) and mosaic them.

    Tiles are kept in ``tile_dir`` (default ``OUT_DIR/tiles``) so reruns skip them. The
    output is float32 metres above EGM2008, nodata NaN, CRS EPSG:9518.
    """
    from rasterio.crs import CRS

    out = Path(out)
    tile_dir = Path(tile_dir) if tile_dir else out.parent / "tiles"
    grown = expand_bbox(bbox, margin)
    names = dem_tiles(grown, arcsec)
    log.info("DEM: %d tile(s) for %s: %s", len(names), tuple(bbox), ", ".join(names))
    paths = download_tiles(
        client, {f"{n}.tif": dem_tile_url(n, base_url) for n in names}, tile_dir, missing_ok=True
    )
    if not paths:
        raise AcquireError(
            f"DEM: none of the tiles {names} exists at {base_url} (is {tuple(bbox)} all ocean?)"
        )
    shape = mosaic_to_geotiff(
        paths,
        out,
        grown,
        crs=CRS.from_epsg(EGM2008_COMPOUND_EPSG),
        nodata=np.nan,
        dtype="float32",
        band_name="height",
        tags={
            "VERTICAL_DATUM": "EGM2008",
            "UNITS": "metre",
            "SOURCE": f"Copernicus DEM GLO-{30 * arcsec}",
            "TILES": ",".join(p.name for p in paths),
            "AOI": ",".join(str(v) for v in bbox),
        },
    )
    log.info("DEM: wrote %s (%d x %d px)", out, shape[0], shape[1])
    return out
