"""Label rasters onto the chip grid: WorldCover mapping, reprojection, average resampling."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio.shutil  # noqa: F401  (works around sarssl.io not importing it)
from affine import Affine
from pyproj import Transformer

from sarssl.data.labels import (
    mod44b_to_percent,
    read_landcover,
    read_treecover,
    worldcover_to_class,
)
from sarssl.errors import InputError
from sarssl.io import write_geotiff
from sarssl.sar.grid import Grid, area_grid
from sarssl.vocabulary import WORLDCOVER_CODES


def test_worldcover_mapping_table():
    codes = np.array(list(WORLDCOVER_CODES) + [0, 5, 11, 96, 101, 255])
    assert worldcover_to_class(codes).tolist() == list(range(11)) + [255] * 6
    assert worldcover_to_class(codes).dtype == np.uint8


def test_mod44b_mapping():
    v = np.array([0, 37, 100, 200, 253, 254, 255, 150], dtype=np.uint8)
    out = mod44b_to_percent(v)
    assert out[:4].tolist() == [0.0, 37.0, 100.0, 0.0]
    assert np.isnan(out[4:]).all()


def test_checkerboard_reprojected_from_lonlat(tmp_path):
    # Source: lon/lat checkerboard of 0.002 deg cells (~170 x 220 m) of two WorldCover codes
    # with a nodata column; target: the 10 m UTM grid of a small area inside it.
    res = 0.002
    w, n = 12.44, 42.00
    ncell = 40
    ii, jj = np.meshgrid(np.arange(ncell), np.arange(ncell), indexing="ij")
    src = np.where((ii + jj) % 2 == 0, 10, 40).astype(np.uint8)
    src[:, 7] = 0  # nodata column
    src[:, 9] = 17  # invalid code
    tr = Affine(res, 0, w, 0, -res, n)
    path = tmp_path / "lc.tif"
    write_geotiff(path, src, crs="EPSG:4326", transform=tr, nodata=0)
    grid = area_grid((12.45, 41.95, 12.50, 41.99), 10.0)
    out = read_landcover(path, grid)
    assert out.shape == grid.shape and out.dtype == np.uint8
    # expected by hand: the source cell containing each target pixel centre
    xs, ys = grid.xy()
    X, Y = np.meshgrid(xs, ys)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(X, Y)
    col = np.floor((lon - w) / res).astype(int)
    row = np.floor((n - lat) / res).astype(int)
    expect = worldcover_to_class(src[row, col])
    agree = (out == expect).mean()
    assert agree > 0.99, (
        agree
    )  # only pixels whose centre is within a fraction of a pixel of a cell edge may differ
    assert set(np.unique(out)) == {0, 3, 255}
    assert (out[expect == 255] == 255).mean() > 0.95


def test_treecover_average_resampling_by_hand(tmp_path):
    grid = area_grid((12.46, 41.96, 12.47, 41.965), 20.0)
    # source at 10 m in the same CRS, exactly 2x finer: each target pixel = mean of 2x2
    fine_tr = Affine(10.0, 0, grid.transform.c, 0, -10.0, grid.transform.f)
    h, w = grid.height * 2, grid.width * 2
    rng = np.random.default_rng(1)
    src = rng.integers(0, 101, size=(h, w)).astype(np.uint8)
    src[0, 0] = 200  # water -> 0
    src[0, 1] = 253  # fill -> ignored
    src[2:4, 2:4] = 255  # a whole target pixel of fill -> NaN
    path = tmp_path / "tc.tif"
    write_geotiff(path, src, crs=grid.crs, transform=fine_tr)
    out = read_treecover(path, grid)
    assert out.shape == grid.shape and out.dtype == np.float32
    pct = mod44b_to_percent(src)
    blocks = pct.reshape(grid.height, 2, grid.width, 2)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning, match="empty slice"):
        expect = np.nanmean(blocks, axis=(1, 3))
    assert out[0, 0] == pytest.approx(np.mean([0.0, pct[1, 0], pct[1, 1]]), abs=1e-4)
    assert np.isnan(out[1, 1])
    np.testing.assert_allclose(out, expect, atol=1e-4)


def test_treecover_upsampled_from_coarse(tmp_path):
    # 250 m source cells onto a 10 m grid: each target pixel inside a cell gets its value
    grid = area_grid((12.46, 41.96, 12.47, 41.965), 10.0)
    x0 = grid.transform.c - 500.0
    y1 = grid.transform.f + 500.0
    tr = Affine(250.0, 0, x0, 0, -250.0, y1)
    src = np.random.default_rng(2).integers(0, 101, size=(8, 8)).astype(np.uint8)
    path = tmp_path / "tc.tif"
    write_geotiff(path, src, crs=grid.crs, transform=tr)
    out = read_treecover(path, grid)
    xs, ys = grid.xy()
    X, Y = np.meshgrid(xs, ys)
    col = np.floor((X - x0) / 250.0).astype(int)
    row = np.floor((y1 - Y) / 250.0).astype(int)
    np.testing.assert_allclose(out, src[row, col].astype(np.float32), atol=1e-4)


def test_errors(tmp_path):
    grid = area_grid((12.46, 41.96, 12.47, 41.965), 10.0)
    with pytest.raises(InputError, match="nope.tif"):
        read_landcover(tmp_path / "nope.tif", grid)
    far = Grid(grid.crs, Affine(10, 0, 0, 0, -10, 1000), 10, 10)
    write_geotiff(
        tmp_path / "lc.tif", np.full((5, 5), 10, np.uint8), crs=grid.crs, transform=grid.transform
    )
    with pytest.raises(InputError, match="does not overlap"):
        read_landcover(tmp_path / "lc.tif", far)
