"""MODIS MOD44B (Vegetation Continuous Fields) Percent_Tree_Cover tiles for a bbox.

MODIS land products are tiled on the **sinusoidal grid**: a sphere of radius
R = 6 371 007.181 m projected with x = R * lon * cos(lat), y = R * lat (radians), cut into
36 x 18 tiles of T = 1 111 950.5197 m (10 degrees of latitude) per side; ``h`` counts
0..35 from the west (x = -18 T), ``v`` 0..17 from the north (y = +9 T). Since y depends on
latitude only, a bbox's ``v`` rows follow from S and N directly; in each row the bbox's
x extent is largest where |lat| is smallest (cos largest), which gives the exact ``h``
range without sampling (:func:`modis_tiles`).

MOD44B is annual (dated day 065 of the year), 250 m, ``Percent_Tree_Cover`` 0..100 %,
200 = water, 253 = fill. Two sources:

- **LP DAAC data pool** (default): ``https://e4ftl01.cr.usgs.gov/MOLT/MOD44B.061/2021.03.06/``
  lists HDF-EOS files ``MOD44B.A2021065.h19v04.061.<production time>.hdf``; the production
  time is unknown in advance, so the folder listing is read. Needs NASA Earthdata
  credentials and a GDAL with the HDF4 driver (rasterio's wheels have none: the command
  checks before downloading).
- **a GeoTIFF mirror** given as ``--url-template`` with ``{year}``, ``{doy}``, ``{h:02d}``,
  ``{v:02d}``, ``{version}`` fields (e.g. tiles exported from AppEEARS or converted with
  ``gdal_translate``).

The mosaic keeps raw values (uint8, sinusoidal CRS, nodata 253); :mod:`sarssl.data.labels`
turns 200 into 0 % and fill into NaN when it resamples onto the chip grid.

Reference: DiMiceli et al. (2015, 2022), MOD44B MODIS/Terra Vegetation Continuous Fields
Yearly L3 Global 250m SIN Grid V006 / V061, doi 10.5067/MODIS/MOD44B.006 and .061.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import SarsslError
from .http import AcquireError, HttpClient

log = logging.getLogger(__name__)

EARTH_RADIUS = 6371007.181  # m, the MODIS sphere
TILE_SIZE = 20015109.354 / 18  # m: half the meridian (pi R) over 18 rows = 1 111 950.52
SINUSOIDAL_PROJ = "+proj=sinu +lon_0=0 +x_0=0 +y_0=0 +R=6371007.181 +units=m +no_defs"
LPDAAC_URL = "https://e4ftl01.cr.usgs.gov/MOLT"
VERSIONS = ("006", "061")
DAY_OF_YEAR = 65  # MOD44B annual composites are dated day 065
SUBDATASET = 'HDF4_EOS:EOS_GRID:"{path}":MOD44B_250m_GRID:Percent_Tree_Cover'
FILL = 253


def sinusoidal_xy(lon: float, lat: float) -> tuple[float, float]:
    """MODIS sinusoidal x, y (m) of a lon/lat point (degrees)."""
    lam, phi = math.radians(lon), math.radians(lat)
    return EARTH_RADIUS * lam * math.cos(phi), EARTH_RADIUS * phi


def tile_of(lon: float, lat: float) -> tuple[int, int]:
    """(h, v) of the tile containing a point (a point on a boundary goes east/south)."""
    x, y = sinusoidal_xy(lon, lat)
    h = math.floor((x + 18 * TILE_SIZE) / TILE_SIZE)
    v = math.floor((9 * TILE_SIZE - y) / TILE_SIZE)
    return min(max(h, 0), 35), min(max(v, 0), 17)


def modis_tiles(bbox: Sequence[float]) -> list[tuple[int, int]]:
    """(h, v) of every sinusoidal tile the lon/lat bbox W,S,E,N overlaps, sorted by v, h.

    Exact: per 10-degree row v, the bbox part in that row spans latitudes [s_v, n_v]; its x
    range is R*W*c .. R*E*c with c the cosine at the row's extreme latitudes, using the
    largest cosine (the latitude nearest the equator) for the side that grows with c.
    """
    w, s, e, n = (float(x) for x in bbox)
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise SarsslError(f"bounding box {tuple(bbox)}: need -180<=W<E<=180 and -90<=S<N<=90")
    eps = 1e-9
    v_top = min(17, math.floor((90.0 - n) / 10.0 + eps))
    v_bot = min(17, math.floor((90.0 - s) / 10.0 - eps))
    tiles = []
    for v in range(v_top, v_bot + 1):
        row_n, row_s = 90.0 - 10.0 * v, 80.0 - 10.0 * v
        lat_hi, lat_lo = min(n, row_n), max(s, row_s)
        coss = [math.cos(math.radians(lat_lo)), math.cos(math.radians(lat_hi))]
        cmax = 1.0 if lat_lo <= 0.0 <= lat_hi else max(coss)
        cmin = min(coss)
        xw = EARTH_RADIUS * math.radians(w) * (cmax if w < 0 else cmin)
        xe = EARTH_RADIUS * math.radians(e) * (cmax if e > 0 else cmin)
        h0 = math.floor((xw + 18 * TILE_SIZE) / TILE_SIZE + eps)
        h1 = math.floor((xe + 18 * TILE_SIZE) / TILE_SIZE - eps)
        tiles.extend((h, v) for h in range(max(h0, 0), min(h1, 35) + 1))
    return tiles


def product_date(year: int, doy: int = DAY_OF_YEAR) -> dt.date:
    return dt.date(int(year), 1, 1) + dt.timedelta(days=doy - 1)


def hdf_name_pattern(year: int, h: int, v: int, version: str) -> re.Pattern[str]:
    """Regex of an LP DAAC MOD44B file name (production time unknown)."""
    return re.compile(
        rf"MOD44B\.A{int(year)}{DAY_OF_YEAR:03d}\.h{h:02d}v{v:02d}\.{version}\.\d{{13}}\.hdf"
    )


def find_in_listing(html: str, pattern: re.Pattern[str]) -> str | None:
    """The latest file name matching ``pattern`` linked from a directory listing page."""
    names = sorted(set(m.group(0) for m in pattern.finditer(html)))
    return names[-1] if names else None


def has_hdf4() -> bool:
    import rasterio

    with rasterio.Env() as env:
        return "HDF4" in env.drivers()


def acquire_modis(
    bbox: Sequence[float],
    out: str | Path,
    client: HttpClient,
    *,
    year: int = 2021,
    version: str = "061",
    base_url: str = LPDAAC_URL,
    url_template: str | None = None,
    tile_dir: str | Path | None = None,
) -> Path:
    """Download the MOD44B tiles covering ``bbox`` and mosaic Percent_Tree_Cover over it.

    Output: uint8 raw MOD44B values in the sinusoidal CRS at 250 m (231.66 m exactly),
    cropped to the bbox's sinusoidal bounds (pixel grid kept), nodata 253.
    """
    from pyproj import Transformer

    from .dem import download_tiles, mosaic_to_geotiff

    if version not in VERSIONS:
        raise SarsslError(f"MOD44B version {version!r}: one of {VERSIONS}")
    out = Path(out)
    tile_dir = Path(tile_dir) if tile_dir else out.parent / "tiles"
    tiles = modis_tiles(bbox)
    log.info(
        "MOD44B %s %d: tiles %s", version, year, ", ".join(f"h{h:02d}v{v:02d}" for h, v in tiles)
    )
    urls: dict[str, str] = {}
    if url_template:
        for h, v in tiles:
            url = url_template.format(
                year=year, doy=f"{DAY_OF_YEAR:03d}", h=h, v=v, version=version
            )
            urls[url.rsplit("/", 1)[-1].split("?")[0]] = url
    else:
        if not has_hdf4():
            raise SarsslError(
                "MOD44B from the LP DAAC comes as HDF4-EOS, but this GDAL has no HDF4 driver: use "
                "--url-template with GeoTIFF tiles, or a GDAL built with HDF4"
            )
        folder = f"{base_url.rstrip('/')}/MOD44B.{version}/{product_date(year):%Y.%m.%d}/"
        listing = client.get_bytes(folder, what=f"MOD44B {version} {year} listing").decode(
            "utf-8", "replace"
        )
        for h, v in tiles:
            name = find_in_listing(listing, hdf_name_pattern(year, h, v, version))
            if name is None:
                log.warning(
                    "MOD44B: no file for h%02dv%02d in %s (ocean tile?): skipped", h, v, folder
                )
                continue
            urls[name] = folder + name
    paths = download_tiles(client, urls, tile_dir, missing_ok=True)
    if not paths:
        raise AcquireError(f"MOD44B: no tile found for {tuple(bbox)} (tiles {tiles})")
    sources = [Path(SUBDATASET.format(path=p)) if p.suffix == ".hdf" else p for p in paths]
    tr = Transformer.from_crs("EPSG:4326", SINUSOIDAL_PROJ, always_xy=True)
    w, s, e, n = bbox
    import numpy as np

    t = np.linspace(0, 1, 41)
    lons = np.concatenate(
        [w + (e - w) * t, np.full_like(t, e), e - (e - w) * t, np.full_like(t, w)]
    )
    lats = np.concatenate(
        [np.full_like(t, s), s + (n - s) * t, np.full_like(t, n), n - (n - s) * t]
    )
    xs, ys = tr.transform(lons, lats)
    mosaic_to_geotiff(
        sources,
        out,
        (float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())),
        nodata=FILL,
        band_name="Percent_Tree_Cover",
        tags={
            "SOURCE": f"MOD44B.{version} {year}",
            "UNITS": "percent (200 water, 253 fill)",
            "TILES": ",".join(p.name for p in paths),
            "AOI": ",".join(str(x) for x in bbox),
        },
    )
    log.info("MOD44B: wrote %s", out)
    return out
