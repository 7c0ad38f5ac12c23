"""ESA WorldCover 10 m land cover (2020 v100, 2021 v200) tiles for a bbox, mosaicked.

WorldCover maps are 3 x 3 degree GeoTIFFs in EPSG:4326 at 1/12000 degree (~10 m), openly
available (no credentials) from ``https://esa-worldcover.s3.eu-central-1.amazonaws.com``::

    v200/2021/map/ESA_WorldCover_10m_2021_v200_N39E012_Map.tif

The tile label is the south-west corner of the 3-degree cell, on multiples of 3: latitude
2 digits (``N39``, ``S21``), longitude 3 digits (``E012``, ``W072``). Values are the
WorldCover legend codes (10 tree cover, 20 shrubland, ..., 95 mangroves, 100 moss and
lichen; 0 = no data), which :mod:`sarssl.data.labels` maps to training classes. The mosaic keeps
the codes unchanged (uint8, nodata 0).

Reference: Zanaga et al. (2021, 2022), ESA WorldCover 10 m v100 / v200, doi
10.5281/zenodo.5571936 and 10.5281/zenodo.7254221.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from ..errors import SarsslError
from .dem import degree_cells, download_tiles, lat_label, lon_label, mosaic_to_geotiff
from .http import AcquireError, HttpClient

log = logging.getLogger(__name__)

WORLDCOVER_URL = "https://esa-worldcover.s3.eu-central-1.amazonaws.com"
#: Product version of each map year.
VERSIONS = {2020: "v100", 2021: "v200"}


def worldcover_version(year: int) -> str:
    try:
        return VERSIONS[int(year)]
    except (KeyError, ValueError):
        raise SarsslError(
            f"WorldCover year {year!r}: available years are {sorted(VERSIONS)}"
        ) from None


def worldcover_tile_name(lat: int, lon: int, year: int = 2021) -> str:
    """File name of the 3-degree tile whose south-west corner is (lat, lon)."""
    if lat % 3 or lon % 3:
        raise SarsslError(f"WorldCover tile corner ({lat}, {lon}): must be multiples of 3 degrees")
    return (
        f"ESA_WorldCover_10m_{year}_{worldcover_version(year)}_"
        f"{lat_label(lat)}{lon_label(lon)}_Map.tif"
    )


def worldcover_tiles(bbox: Sequence[float], year: int = 2021) -> list[str]:
    """Names of the WorldCover tiles covering ``bbox`` (W,S,E,N degrees)."""
    return [worldcover_tile_name(la, lo, year) for la, lo in degree_cells(bbox, 3)]


def worldcover_tile_url(name: str, year: int, base_url: str = WORLDCOVER_URL) -> str:
    return f"{base_url.rstrip('/')}/{worldcover_version(year)}/{year}/map/{name}"


def acquire_worldcover(
    bbox: Sequence[float],
    out: str | Path,
    client: HttpClient,
    *,
    year: int = 2021,
    base_url: str = WORLDCOVER_URL,
    tile_dir: str | Path | None = None,
    margin: float = 0.0,
) -> Path:
    """Download the WorldCover tiles of ``year`` covering ``bbox`` and mosaic them.

    Output: uint8 legend codes, EPSG:4326, nodata 0, the bbox (+ ``margin`` degrees)
    snapped outward to the 1/12000-degree pixel grid. Tiles are kept in ``tile_dir``.
    """
    from .dem import expand_bbox

    out = Path(out)
    tile_dir = Path(tile_dir) if tile_dir else out.parent / "tiles"
    grown = expand_bbox(bbox, margin)
    names = worldcover_tiles(grown, year)
    log.info(
        "WorldCover %d: %d tile(s) for %s: %s", year, len(names), tuple(bbox), ", ".join(names)
    )
    urls = {n: worldcover_tile_url(n, year, base_url) for n in names}
    paths = download_tiles(client, urls, tile_dir, missing_ok=True)  # ocean tiles do not exist
    if not paths:
        raise AcquireError(f"WorldCover: none of the tiles {names} exists at {base_url}")
    mosaic_to_geotiff(
        paths,
        out,
        grown,
        nodata=0,
        band_name="worldcover",
        tags={
            "SOURCE": f"ESA WorldCover 10m {year} {worldcover_version(year)}",
            "TILES": ",".join(p.name for p in paths),
            "AOI": ",".join(str(v) for v in bbox),
        },
    )
    log.info("WorldCover: wrote %s", out)
    return out
