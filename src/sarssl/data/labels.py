"""Label rasters (land cover, tree cover) read onto a target map grid.

Labels come in their own CRS and resolution (ESA WorldCover: EPSG:4326, 1/12000 deg
~ 10 m; MODIS MOD44B: sinusoidal, 250 m; the demo truth: the area grid). They are read
once per area onto the composite's :class:`sarssl.sar.grid.Grid` with
``rasterio.warp.reproject``:

- **land cover**: nearest-neighbour (a class is a category, never averaged), then the
  WorldCover codes 10, 20, ..., 90, 95, 100 become training classes 0..10; any other
  value and the source nodata become 255 (``ignore_index`` of the loss).
- **tree cover** (MOD44B ``Percent_Tree_Cover``, 0..100 %): 200 (water) becomes 0 %,
  253/254/255 (fill/unclassified) and the source nodata become NaN, and the percentages
  are resampled with GDAL's area-weighted *average* (NaN ignored). Onto a finer grid this
  returns the covering source pixel (and mixes neighbours only where a target pixel
  straddles a source-pixel edge); onto a coarser grid it is the mean of the covered
  source pixels, so the chip mean is the area-weighted MODIS mean.

Only the source window that covers the target grid is read, so continental label tiles
are fine. A label raster that is missing, not a raster, corrupt (a tile that cannot be
read or decoded) or without a CRS is an :class:`~sarssl.errors.InputError` naming the file
and GDAL's message.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..sar.grid import Grid
from ..vocabulary import IGNORE_INDEX, WORLDCOVER_CODES

log = logging.getLogger(__name__)

MOD44B_WATER = 200
MOD44B_FILL = (253, 254, 255)


def worldcover_to_class(codes: np.ndarray) -> np.ndarray:
    """Map WorldCover codes to classes 0..10 (uint8); anything else -> 255.

    >>> worldcover_to_class(np.array([10, 95, 100, 0, 11, 255])).tolist()
    [0, 9, 10, 255, 255, 255]
    """
    codes = np.asarray(codes)
    out = np.full(codes.shape, IGNORE_INDEX, dtype=np.uint8)
    for cls, code in enumerate(WORLDCOVER_CODES):
        out[codes == code] = cls
    return out


def mod44b_to_percent(values: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """MOD44B Percent_Tree_Cover -> float32 percent: 200 (water) -> 0, 253/254/255 and
    the raster's nodata -> NaN, 0..100 kept; anything else (invalid) -> NaN."""
    v = np.asarray(values).astype(np.float32)
    out = np.full(v.shape, np.nan, dtype=np.float32)
    ok = np.isfinite(v) & (v >= 0) & (v <= 100)
    if nodata is not None and np.isfinite(nodata):
        ok &= v != nodata
    out[ok] = v[ok]
    out[v == MOD44B_WATER] = 0.0
    return out


def _read_source(path: Path, grid: Grid, margin: int = 2):
    """(array band 1, its transform, crs, nodata) of the source window covering ``grid``."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    from ..io import gdal_message

    if not path.is_file():
        raise InputError(f"{path}: label raster not found")
    try:
        src = rasterio.open(path)
    except (rasterio.errors.RasterioIOError, CPLE_BaseError) as exc:
        raise InputError(
            f"{path}: not a readable label raster (corrupt or not a raster: {gdal_message(exc)})"
        ) from exc
    with src:
        if src.crs is None:
            raise InputError(f"{path}: label raster has no CRS")
        bounds = transform_bounds(grid.crs, src.crs, *grid.bounds, densify_pts=21)
        win = from_bounds(*bounds, transform=src.transform)
        col0 = max(0, int(np.floor(win.col_off)) - margin)
        row0 = max(0, int(np.floor(win.row_off)) - margin)
        col1 = min(src.width, int(np.ceil(win.col_off + win.width)) + margin)
        row1 = min(src.height, int(np.ceil(win.row_off + win.height)) + margin)
        if col1 <= col0 or row1 <= row0:
            raise InputError(
                f"{path}: does not overlap the target grid (bounds {grid.bounds} in {grid.crs})"
            )
        window = Window(col0, row0, col1 - col0, row1 - row0)
        try:
            data = src.read(1, window=window)
        except (rasterio.errors.RasterioError, CPLE_BaseError) as exc:
            raise InputError(
                f"{path}: corrupt label raster, band 1 cannot be read over the area "
                f"({gdal_message(exc)})"
            ) from exc
        return data, src.window_transform(window), src.crs, src.nodata


def read_landcover(path: str | os.PathLike, grid: Grid) -> np.ndarray:
    """WorldCover-coded raster (any CRS) -> uint8 classes 0..10 / 255 on ``grid``."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    path = Path(path)
    data, transform, crs, nodata = _read_source(path, grid)
    if not np.issubdtype(data.dtype, np.integer):
        finite = np.isfinite(data)
        data = np.where(finite, data, -1).astype(np.int32)
    src = data.astype(np.int32)
    if nodata is not None and np.isfinite(nodata):
        src[data == nodata] = -1
    dst = np.full(grid.shape, -1, dtype=np.int32)
    reproject(
        src,
        dst,
        src_transform=transform,
        src_crs=crs,
        src_nodata=-1,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=-1,
        resampling=Resampling.nearest,
    )
    out = worldcover_to_class(dst)
    log.info(
        "%s: land cover on %dx%d grid, %.1f%% labelled",
        path,
        grid.width,
        grid.height,
        100 * (out != IGNORE_INDEX).mean(),
    )
    return out


def read_treecover(path: str | os.PathLike, grid: Grid) -> np.ndarray:
    """MOD44B-style tree cover raster (any CRS) -> float32 percent (NaN = none) on ``grid``."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    path = Path(path)
    data, transform, crs, nodata = _read_source(path, grid)
    src = mod44b_to_percent(data, nodata)
    dst = np.full(grid.shape, np.nan, dtype=np.float32)
    reproject(
        src,
        dst,
        src_transform=transform,
        src_crs=crs,
        src_nodata=np.nan,
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=Resampling.average,
    )
    log.info(
        "%s: tree cover on %dx%d grid, %.1f%% known",
        path,
        grid.width,
        grid.height,
        100 * np.isfinite(dst).mean(),
    )
    return dst
