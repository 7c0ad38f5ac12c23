"""Terrain correction: point targets at real GCPs land on the GCP position."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from pyproj import Transformer

from conftest import real_annotations
from sarssl.errors import InputError
from sarssl.sar.dem import Dem, constant_dem, read_dem, vertical_datum
from sarssl.sar.geocoding import MASK_LAYOVER, MASK_SHADOW, GeocodingLUT
from sarssl.sar.geometry import RadarGeometry
from sarssl.sar.grid import area_grid

ANNOTATIONS = real_annotations()

DEM = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dem" / "Rome-30m-DEM.tif"


def _geom(prefix: str) -> RadarGeometry:
    key = next(k for k in ANNOTATIONS if k.startswith(prefix))
    return RadarGeometry.from_annotation(ANNOTATIONS[key])


def _blob(shape, centre, sigma=2.5):
    r, c = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.exp(-((r - centre[0]) ** 2 + (c - centre[1]) ** 2) / (2 * sigma**2)).astype(
        np.float32
    )


@pytest.mark.parametrize(
    "prefix", ["s1b-iw-g0211223", "s1a-iw-g0210119", "s1b-iw-g0210401", "s1a-iw-g0150222"]
)
def test_point_targets_at_gcps(prefix):
    """Bright targets written at GCP (line, pixel) land on the GCP's lon/lat on every shared
    product, IPF 2.36 (2015) to 3.x (#16: the 2015 product was 3.5-4.1 px off at near
    range), near and far range alike."""
    geom = _geom(prefix)
    g = geom.gcps
    inner = np.flatnonzero(
        (g.line > 0)
        & (g.line < geom.number_of_lines - 1)
        & (g.pixel > 0)
        & (g.pixel < geom.number_of_samples - 1)
    )
    errs = []
    for idx in inner[::4]:
        lon, lat, h = g.lon[idx], g.lat[idx], g.height[idx]
        bbox = (lon - 0.004, lat - 0.003, lon + 0.004, lat + 0.003)
        grid = area_grid(bbox, 10.0)
        lut = GeocodingLUT.compute(geom, grid, constant_dem(bbox, h))
        win = lut.radar_bounds(geom)
        img = _blob(win.shape, (g.line[idx] - win.row_off, g.pixel[idx] - win.col_off))
        out = lut.sample(img, win.offset)
        w = np.nan_to_num(out) * (np.nan_to_num(out) > 0.05)
        xs, ys = grid.xy()
        gx, gy = np.meshgrid(xs, ys)
        cx, cy = (w * gx).sum() / w.sum(), (w * gy).sum() / w.sum()
        tx, ty = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(lon, lat)
        errs.append(np.hypot(cx - tx, cy - ty) / grid.resolution)
    errs = np.array(errs)
    assert len(errs) >= 30
    assert np.median(errs) <= 0.5, errs
    assert errs.max() <= 1.0, errs
    near, far = g.pixel[inner[::4]] < 5000, g.pixel[inner[::4]] > 20000
    assert near.any() and far.any()
    assert np.median(errs[near]) <= 0.5 and np.median(errs[far]) <= 0.5, errs


def test_lut_interpolation_matches_exact_model():
    geom = _geom("s1b-iw-g0211223")
    bbox = (12.46, 41.96, 12.54, 42.04)
    grid = area_grid(bbox, 10.0)
    dem = read_dem(DEM, bbox)
    t = time.perf_counter()
    lut = GeocodingLUT.compute(geom, grid, dem)
    elapsed = time.perf_counter() - t
    sub = slice(None, None, 7)
    lut_small = GeocodingLUT(grid, lut.line, lut.pixel, lut.height, lut.look)
    el, ep = lut_small.exact(geom)
    assert np.nanmax(np.abs(el - lut.line)[sub, sub]) < 0.01
    assert np.nanmax(np.abs(ep - lut.pixel)[sub, sub]) < 0.01
    assert np.isfinite(lut.line).all()
    # terrain: Rome heights 0..~150 m orthometric + ~47-48 m geoid
    assert 40 < np.nanmin(lut.height) < 60 and 100 < np.nanmax(lut.height) < 260
    print(f"LUT {grid.shape}: {elapsed:.2f}s")


def test_lut_is_exact_across_an_azimuth_block_boundary():
    """Each coordinate-conversion entry holds for its 1 s azimuth block, so the GRD pixel
    of a ground point jumps where blocks meet (here ~13 px, far range of the 2021-04-01
    product); the LUT interpolates (line, slant range), which are smooth, and converts
    per pixel, so it follows the jump instead of smearing it over a node cell."""
    geom = _geom("s1b-iw-g0210401")
    cc = geom.coordinate_conversion
    far = 22000.0
    jumps = [
        abs(
            geom.slant_range_to_pixel(np.array(b - 0.5), np.array(r))
            - geom.slant_range_to_pixel(np.array(b + 0.5), np.array(r))
        )
        for b, r in (
            (
                0.5 * (cc.time[k] + cc.time[k + 1]) / geom.azimuth_time_interval,
                geom.ground_range_to_slant_range(np.array(far * 10.0), np.array(cc.time[k])),
            )
            for k in range(2, len(cc.time) - 3)
        )
    ]
    k = 2 + int(np.argmax(jumps))
    edge = 0.5 * (cc.time[k] + cc.time[k + 1]) / geom.azimuth_time_interval
    assert max(jumps) > 5.0
    lon, lat = geom.radar_to_ground(np.array([edge]), np.array([far]), 0.0)
    bbox = (lon[0] - 0.01, lat[0] - 0.008, lon[0] + 0.01, lat[0] + 0.008)
    grid = area_grid(bbox, 10.0)
    lut = GeocodingLUT.compute(geom, grid, constant_dem(bbox, 0.0))
    el, ep = lut.exact(geom)
    assert np.nanmin(el) < edge - 20 and np.nanmax(el) > edge + 20  # the boundary crosses
    assert np.nanmax(np.abs(el - lut.line)) < 0.01
    off_edge = np.abs(el - edge) > 0.02  # the LUT's line may put a pixel in the other block
    assert np.nanmax(np.abs(ep - lut.pixel)[off_edge]) < 0.01
    assert np.nanmax(np.abs(np.diff(ep, axis=0))) > 5.0  # the jump (10 m rows: ~1 px else)


def test_dem_vertical_datum_and_coverage():
    import rasterio
    from pyproj import CRS

    with rasterio.open(DEM) as ds:
        crs = CRS.from_user_input(ds.crs.to_wkt())
        raw = ds.read(1).astype(float)
    assert vertical_datum(crs) in ("EGM96", "EGM2008")
    assert vertical_datum(CRS.from_epsg(4326)) == "EGM2008"  # nothing stated: Copernicus
    assert vertical_datum(CRS.from_epsg(4979)) == "ellipsoid"
    assert vertical_datum(CRS.from_epsg(9518)) == "EGM2008"
    dem = read_dem(DEM, (12.48, 41.98, 12.52, 42.02))
    # geoid undulation around Rome is ~ +46..48 m (EGM96/EGM2008)
    diff = np.nanmean(dem.height) - np.nanmean(raw[raw > -1000])
    assert 40 < diff < 55
    with pytest.raises(InputError, match="does not cover"):
        read_dem(DEM, (12.0, 41.0, 12.1, 41.1))


def test_flat_terrain_flattening_is_tan_theta_and_no_masks():
    geom = _geom("s1b-iw-g0211223")
    bbox = (12.46, 41.96, 12.50, 41.99)
    grid = area_grid(bbox, 10.0)
    lut = GeocodingLUT.compute(geom, grid, constant_dem(bbox, 100.0))
    win = lut.radar_bounds(geom)
    f = lut.flattening_factor(geom, win.shape, win.offset)
    fg = lut.sample(f, win.offset)
    inc = geom.incidence_angle(lut.line[5:-5, 5:-5], lut.pixel[5:-5, 5:-5])
    ratio = fg[5:-5, 5:-5] / np.tan(np.radians(inc))
    assert abs(np.nanmedian(ratio) - 1) < 0.03
    assert np.nanpercentile(np.abs(ratio - 1), 90) < 0.1
    m = lut.mask(fg)
    assert ((m[5:-5, 5:-5] & (MASK_LAYOVER | MASK_SHADOW)) == 0).all()


def test_layover_and_shadow_on_a_ridge():
    """A steep ridge: its fore-slope (facing the sensor) lays over, its back-slope shadows."""
    geom = _geom("s1b-iw-g0211223")
    bbox = (12.46, 41.96, 12.50, 41.99)
    grid = area_grid(bbox, 10.0)
    flat = constant_dem(bbox, 0.0)
    lut0 = GeocodingLUT.compute(geom, grid, flat)
    le, ln, _ = lut0.look[:, 0, 0]
    # ridge crest through the centre, perpendicular to the ground-range direction
    step = 0.0002
    flat = constant_dem(bbox, 0.0, step=step)
    rows, cols = flat.height.shape
    lon = flat.transform.c + (np.arange(cols) + 0.5) * step
    lat = flat.transform.f - (np.arange(rows) + 0.5) * step
    LON, LAT = np.meshgrid(lon, lat)
    clon, clat = np.mean(bbox[::2]), np.mean(bbox[1::2])
    e = (LON - clon) * 111320 * np.cos(np.radians(clat))
    n = (LAT - clat) * 110540
    d = (e * le + n * ln) / np.hypot(le, ln)  # distance towards the sensor (m)
    hgt = np.clip(1500 - 3.0 * np.abs(d), 0, None)  # 71.6 deg slopes
    dem = Dem(hgt, flat.transform, flat.crs, "ridge", "ellipsoid")
    lut = GeocodingLUT.compute(geom, grid, dem)
    m = lut.mask(np.zeros(grid.shape, np.float32))
    xs, ys = grid.xy()
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    GLON, GLAT = tr.transform(*np.meshgrid(xs, ys))
    dd = (
        (GLON - clon) * 111320 * np.cos(np.radians(clat)) * le + (GLAT - clat) * 110540 * ln
    ) / np.hypot(le, ln)
    fore = (dd > 50) & (dd < 400)  # slope facing the sensor
    back = (dd < -50) & (dd > -400)
    assert (m[fore] & MASK_LAYOVER).mean() > 0.95
    assert (m[back] & MASK_SHADOW).mean() > 0.95
    # flat ground behind the ridge, facing the sensor locally, lies in the shadow cast by
    # the crest: the ray over the 1500 m crest reaches the ground 1500 / tan(elevation) m
    # behind it (elevation = 90 deg - incidence, ~51 deg here: ~1200 m)
    tan_e = lut.look[2].mean() / np.hypot(lut.look[0], lut.look[1]).mean()
    reach = 1500.0 / tan_e
    cast = (dd < -600) & (dd > -reach + 80)
    assert cast.sum() > 1000
    assert (m[cast] & MASK_SHADOW).mean() > 0.97
    cosi = lut.cos_local_incidence()[cast]
    assert (cosi[np.isfinite(cosi)] > 0.5).all()  # the local test alone would miss it
    far = (dd > 700) | (dd < -reach - 80)
    assert ((m[far] & (MASK_LAYOVER | MASK_SHADOW)) == 0).mean() > 0.97


def test_cast_shadow_tiles_agree_with_whole_grid():
    """Shadow on a sub-window of a grown grid equals the whole grid's (the tiling margin)."""
    geom = _geom("s1b-iw-g0211223")
    bbox = (12.46, 41.96, 12.50, 41.99)
    grid = area_grid(bbox, 10.0)
    step = 0.0002
    flat = constant_dem(bbox, 0.0, step=step)
    rows, cols = flat.height.shape
    rng = np.random.default_rng(3)
    from scipy.ndimage import gaussian_filter

    hgt = np.clip(gaussian_filter(rng.standard_normal((rows, cols)), 6) * 3000.0, 0, None)
    dem = Dem(hgt, flat.transform, flat.crs, "hills", "ellipsoid")
    lut = GeocodingLUT.compute(geom, grid, dem)
    whole = lut.cast_shadow()
    assert 0.01 < whole.mean() < 0.5
    # a window grown by a margin reproduces the shadow of the whole grid inside it
    from affine import Affine

    from sarssl.sar.grid import Grid

    r0, c0, h, w, mg = 100, 120, 80, 90, 60
    sub = Grid(
        grid.crs, grid.transform @ Affine.translation(c0 - mg, r0 - mg), w + 2 * mg, h + 2 * mg
    )
    lut_s = GeocodingLUT.compute(geom, sub, dem)
    part = lut_s.cast_shadow()[mg : mg + h, mg : mg + w]
    # (rays are rasterised from each grid's own edge: a few boundary pixels differ)
    assert (part == whole[r0 : r0 + h, c0 : c0 + w]).mean() > 0.96


def test_fused_mask_equals_numpy_formulation():
    """The numba mask kernel reproduces the array formulation (np.gradient slopes, local
    incidence, layover test, cast shadow) on rough random terrain, on a sub-window."""
    from sarssl.sar.geocoding import MASK_NODATA, MASK_VALID

    rng = np.random.default_rng(7)
    grid = area_grid((12.48, 41.98, 12.50, 41.995), 10.0)
    H, W = grid.shape
    height = 300.0 + np.cumsum(rng.normal(0, 12.0, (H, W)), axis=1)
    height[5, 7] = np.nan
    look = np.empty((3, H, W), dtype=np.float32)
    look[0], look[1], look[2] = -0.62, 0.12, 0.775  # sensor to the west, ~39 deg incidence
    lut = GeocodingLUT(grid, np.zeros((H, W)), np.zeros((H, W)), height, look)
    rows, cols = slice(3, H - 2), slice(0, W - 4)
    sampled = rng.random((2, H - 5, W - 4)).astype(np.float32)
    sampled[0, 10, 10] = np.nan
    m = lut.mask(sampled, rows=rows, cols=cols)
    # reference: the array formulation
    hx, hy = lut.slopes()
    le, ln, lu = (v.astype(np.float64) for v in lut.look)
    lh = np.hypot(le, ln)
    layover = (-(hx * le + hy * ln) / lh * lu > lh)[rows, cols]
    shadow = ((lut.cos_local_incidence() <= 0.0) | lut.cast_shadow())[rows, cols]
    valid = np.isfinite(sampled).all(axis=0)
    ref = np.where(valid, MASK_VALID, MASK_NODATA).astype(np.uint8)
    ref[valid & layover] |= MASK_LAYOVER
    ref[valid & shadow] |= MASK_SHADOW
    np.testing.assert_array_equal(m, ref)
    assert (m & MASK_LAYOVER).any() and (m & MASK_SHADOW).any() and (m == MASK_VALID).any()
    assert m[10, 10] == MASK_NODATA


def test_separable_geoid_equals_per_pixel_geoid():
    """The lattice geoid (north-up lon/lat DEMs) equals the per-pixel interpolation."""
    from sarssl.sar.dem import geoid_undulation, geoid_undulation_grid

    lon = np.linspace(11.9, 15.3, 37)
    lat = np.linspace(42.8, 40.9, 23)
    grid_n = geoid_undulation_grid(lon, lat, "EGM96")
    lo, la = np.meshgrid(lon, lat)
    np.testing.assert_allclose(grid_n, geoid_undulation(lo, la, "EGM96"), atol=1e-9)
    assert 40 < grid_n.mean() < 55  # central Italy: N ~ +45..50 m


def test_lut_radar_subwindow_matches_full_lut():
    """Radar coordinates restricted to a sub-window equal the full LUT's there and are NaN
    elsewhere; heights and look vectors are computed everywhere."""
    geom = _geom("s1b-iw-g0211223")
    bbox = (12.47, 41.97, 12.50, 41.99)
    grid = area_grid(bbox, 10.0)
    dem = read_dem(DEM, bbox)
    full = GeocodingLUT.compute(geom, grid, dem)
    rows, cols = slice(20, 90), slice(15, 120)
    part = GeocodingLUT.compute(geom, grid, dem, radar_rows=rows, radar_cols=cols)
    np.testing.assert_array_equal(part.line[rows, cols], full.line[rows, cols])
    np.testing.assert_array_equal(part.pixel[rows, cols], full.pixel[rows, cols])
    outside = np.ones(grid.shape, bool)
    outside[rows, cols] = False
    assert np.isnan(part.line[outside]).all() and np.isnan(part.pixel[outside]).all()
    np.testing.assert_array_equal(part.height, full.height)
    np.testing.assert_array_equal(part.look, full.look)
    assert part.radar_bounds(geom, rows=rows, cols=cols) == full.radar_bounds(
        geom, rows=rows, cols=cols
    )
