"""CEOS-ARD NRB layers (issue #16): local incidence angle against an analytic plane, the
gamma-to-sigma ratio against cos(local incidence) on planes, the ellipsoid incidence angle
against the annotation's geolocation grid, and the mask bits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import real_annotations
from sarssl.sar import nrb
from sarssl.sar.dem import Dem, constant_dem
from sarssl.sar.geocoding import MASK_LAYOVER, MASK_NODATA, MASK_SHADOW, MASK_VALID, GeocodingLUT
from sarssl.sar.geometry import RadarGeometry
from sarssl.sar.grid import area_grid

BBOX = (12.46, 41.96, 12.50, 41.99)
DEM = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dem" / "Rome-30m-DEM.tif"


@pytest.fixture(scope="module")
def geom() -> RadarGeometry:
    ann = real_annotations()
    return RadarGeometry.from_annotation(
        ann[next(k for k in ann if k.startswith("s1b-iw-g0211223"))]
    )


def _plane(geom: RadarGeometry, tilt_deg: float, h0: float = 500.0) -> tuple[GeocodingLUT, float]:
    """The LUT of a plane rising *away from* the sensor at ``tilt_deg`` along the
    horizontal look direction (a fore-slope facing the sensor: local incidence = ellipsoid
    incidence - tilt), in ellipsoidal heights; and the mean ellipsoid incidence (deg)."""
    grid = area_grid(BBOX, 10.0)
    step = 0.0002
    flat = constant_dem(BBOX, 0.0, step=step)
    lut0 = GeocodingLUT.compute(geom, grid, flat)
    le, ln, lu = (float(np.mean(v)) for v in lut0.look)
    rows, cols = flat.height.shape
    lon = flat.transform.c + (np.arange(cols) + 0.5) * step
    lat = flat.transform.f - (np.arange(rows) + 0.5) * step
    LON, LAT = np.meshgrid(lon, lat)
    clon, clat = np.mean(BBOX[::2]), np.mean(BBOX[1::2])
    e = (LON - clon) * 111320 * np.cos(np.radians(clat))
    n = (LAT - clat) * 110540
    d = (e * le + n * ln) / np.hypot(le, ln)  # distance towards the sensor (m)
    hgt = h0 - np.tan(np.radians(tilt_deg)) * d
    dem = Dem(hgt, flat.transform, flat.crs, "plane", "ellipsoid")
    return GeocodingLUT.compute(geom, grid, dem), float(np.degrees(np.arccos(lu)))


@pytest.mark.parametrize("tilt", [0.0, 10.0, -15.0])
def test_local_incidence_and_gamma_to_sigma_on_an_analytic_plane(geom, tilt):
    lut, _ = _plane(geom, tilt)
    core = (slice(20, -20), slice(20, -20))
    eia = np.degrees(np.arccos(lut.look[2]))[core]
    lia = np.degrees(np.arccos(np.clip(lut.cos_local_incidence(), -1, 1)))[core]
    # the analytic plane: the terrain normal leans towards the sensor by ``tilt``
    # (the metre/degree factors above approximate the projection: 0.1 deg tolerance)
    assert np.abs(lia - (eia - tilt)).max() < 0.1
    # gamma-to-sigma ratio = A_gamma / A_sigma of each radar pixel = cos(local incidence)
    win = lut.radar_bounds(geom)
    a_gamma, a_sigma = nrb.areas(lut, win.shape, win.offset)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(a_sigma > 0, a_gamma / a_sigma, np.nan)
    rg = lut.sample(ratio.astype(np.float32), win.offset)[core]
    expect = np.cos(np.radians(eia - tilt))
    assert np.nanmedian(np.abs(rg - expect)) < 0.002
    # the ellipsoid incidence angle (look vector vs local up) matches the annotation's
    # incidence angles of the geolocation grid
    inc = geom.incidence_angle(lut.line[core][::37, ::37], lut.pixel[core][::37, ::37])
    if tilt == 0.0:
        assert np.nanmax(np.abs(eia[::37, ::37] - inc)) < 0.1


def test_nrb_mask_bits():
    mask = np.array(
        [[MASK_VALID, MASK_VALID | MASK_LAYOVER, MASK_VALID | MASK_SHADOW, MASK_NODATA, 0]],
        dtype=np.uint8,
    )
    height = np.array([[10.0, 20.0, 30.0, np.nan, 40.0]])
    out = nrb.nrb_mask(mask, height)
    assert out.tolist() == [[1, 3, 5, nrb.MASK_DEM_GAP, nrb.MASK_NO_RADAR_DATA]]
    assert (out > 0).all()
    assert set(nrb.MASK_BITS) == {1, 2, 4, 8, 16}
    assert "8 DEM gap" in nrb.NRB_MASK_MEANING and "16 no radar data" in nrb.NRB_MASK_MEANING


def test_ellipsoid_incidence_at_flat_ground_matches_the_gcps(geom):
    lut = GeocodingLUT.compute(geom, area_grid(BBOX, 10.0), constant_dem(BBOX, 0.0))
    eia = np.degrees(np.arccos(lut.look[2]))
    inc = geom.incidence_angle(lut.line[::50, ::50], lut.pixel[::50, ::50])
    # ~0.07 deg apart: the annotation's own incidence-angle convention
    assert np.nanmax(np.abs(eia[::50, ::50] - inc)) < 0.1


@pytest.mark.parametrize("tilt", [0.0, 12.0, -12.0])
def test_terrain_flattening_on_an_analytic_slope(geom, tilt):
    """gamma0_T = beta0 x A_beta / A_gamma: on a plane the factor is tan(local incidence)
    (the projected area of the ground a radar pixel sees is A_beta cot(theta_local)), so a
    slope facing the sensor by ``tilt`` gives tan(theta_ell - tilt)."""
    lut, _ = _plane(geom, tilt)
    win = lut.radar_bounds(geom)
    f = lut.sample(lut.flattening_factor(geom, win.shape, win.offset), win.offset)
    core = (slice(20, -20), slice(20, -20))
    eia = np.degrees(np.arccos(lut.look[2]))[core]
    ratio = f[core] / np.tan(np.radians(eia - tilt))
    # median within 2 % (1.2 % low on flat ground, 0.1 % / 0.4 % on the slopes; a wrong
    # sign of the tilt would be off by 2.4x); single pixels scatter by the splatting of the
    # 0.0002 deg plane DEM, bilinear at 10 m (90 % within 12 %)
    assert abs(np.nanmedian(ratio) - 1) < 0.02
    assert np.nanpercentile(np.abs(ratio - 1), 90) < 0.12


def test_terrain_flattening_on_the_shared_dem_follows_the_local_slope(geom):
    """On the real Rome DEM (Copernicus GLO-30) at 10 m, where the terrain is locally
    planar (no layover or shadow, gentle curvature), the flattening factor follows
    tan(local incidence) of each pixel's own slope."""
    from sarssl.sar.dem import read_dem
    from sarssl.sar.grid import area_grid

    bbox = (12.47, 41.97, 12.53, 42.03)
    grid = area_grid(bbox, 10.0)
    dem = read_dem(DEM, bbox)
    lut = GeocodingLUT.compute(geom, grid, dem)
    win = lut.radar_bounds(geom)
    f = lut.sample(lut.flattening_factor(geom, win.shape, win.offset), win.offset)
    m = lut.mask(f)
    cos_li = lut.cos_local_incidence()
    from scipy.ndimage import uniform_filter

    # smooth the local incidence over the ~3 x 3 px footprint the splatting mixes
    expect = np.tan(np.arccos(np.clip(uniform_filter(cos_li, 5), 0.05, 1)))
    core = (slice(30, -30), slice(30, -30))
    ok = (m[core] == MASK_VALID) & np.isfinite(f[core])
    r = np.log(f[core][ok] / expect[core][ok])
    assert ok.mean() > 0.8
    spread = np.std(np.log(expect[core][ok]))
    assert spread > 0.1  # the terrain really varies the factor here
    assert abs(np.median(r)) < 0.03
    assert np.corrcoef(np.log(f[core][ok]), np.log(expect[core][ok]))[0, 1] > 0.9
