"""DEM inputs whose meaning would change results are rejected or reported, not adapted:
heights in feet, and holes (no data) over the area."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import rasterio

from sarssl.errors import InputError
from sarssl.sar.dem import check_void, read_dem

DEM = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dem" / "Rome-30m-DEM.tif"
BBOX = (12.48, 41.98, 12.52, 42.02)


def _copy(tmp_path: Path, name: str = "dem.tif") -> Path:
    out = tmp_path / name
    shutil.copyfile(DEM, out)
    out.chmod(0o644)
    return out


def test_dem_in_feet_is_rejected(tmp_path):
    """Before: a DEM whose band unit says feet was read as metres (2.1 dB mean error after
    terrain flattening); now it is an error naming the file and the unit."""
    dem = _copy(tmp_path)
    with rasterio.open(dem, "r+") as ds:
        ds.units = ("ft",)
    with pytest.raises(InputError, match=r"dem.tif: heights are in 'ft', not metres"):
        read_dem(dem, BBOX)
    with rasterio.open(dem, "r+") as ds:
        ds.units = ("metre",)
    assert read_dem(dem, BBOX).void_fraction == 0.0


def test_dem_holes_over_the_area_are_warned_about_and_limited(tmp_path, caplog):
    """Before: no warning at all for a DEM with voids over the area; now the share of holes
    is measured over the bbox, warned about below the limit and an error above it."""
    dem = _copy(tmp_path)
    with rasterio.open(dem, "r+") as ds:
        nodata = ds.nodata if ds.nodata is not None else -32767.0
        ds.nodata = nodata
        data = ds.read(1)
        win = rasterio.windows.from_bounds(*BBOX, ds.transform)
        r0, c0 = int(win.row_off), int(win.col_off)
        h, w = int(win.height), int(win.width)
        data[r0 : r0 + h // 4, c0 : c0 + w] = nodata  # the northern quarter of the bbox
        ds.write(data, 1)
    d = read_dem(dem, BBOX)
    assert 0.2 < d.void_fraction < 0.3, d.void_fraction
    with caplog.at_level(logging.WARNING, logger="sarssl.sar.dem"):
        check_void(d, 0.5, what="area rome")
    assert "are no data (holes)" in caplog.text and "dem.tif" in caplog.text
    with pytest.raises(InputError, match=r"dem.tif: 2\d\.\d% .* area rome .*--max-dem-void 0.05"):
        check_void(d, 0.05, what="area rome")
    assert read_dem(_copy(tmp_path, "full.tif"), BBOX).void_fraction == 0.0
