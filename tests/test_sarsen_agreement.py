"""Geolocation agreement with sarsen (an independent Range-Doppler terrain corrector).

A textured radar image (smooth random field, no speckle) is written as the VV measurement
of the real ``S1B_rome`` template (sparse full-size TIFF, only the window over the DEM is
written) and geocoded onto the pixel centres of the real Rome Copernicus DEM crop (heights
converted to ellipsoidal, EPSG:4979, so neither tool applies a geoid) by sarssl's LUT and by
sarsen's ``terrain_correction``. The sub-pixel shift between the two outputs, measured by
normalised cross-correlation in blocks (parabolic peak fit), must have a median below
0.1 DEM pixel in each axis. Needs the ``bench`` extra (``pip install -e .[bench]``).
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

sarsen = pytest.importorskip("sarsen", reason="sarsen not installed (pip install -e .[bench])")

import rasterio  # noqa: E402
from affine import Affine  # noqa: E402
from pyproj import CRS  # noqa: E402
from rasterio.windows import Window  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

from sarssl.sar.calibration import calibrate_window  # noqa: E402
from sarssl.sar.dem import read_dem  # noqa: E402
from sarssl.sar.geocoding import GeocodingLUT  # noqa: E402
from sarssl.sar.grid import Grid  # noqa: E402
from sarssl.sar.safe import bundled_dem_path, open_product, template_path  # noqa: E402

CROP = 160  # DEM pixels (~1 arc-second): the comparison window


def _shift(a: np.ndarray, b: np.ndarray, r: int = 3) -> tuple[float, float]:
    """Sub-pixel (row, col) shift of ``b`` relative to ``a`` (NCC peak + parabola fit)."""
    H, W = a.shape
    core = (slice(r, H - r), slice(r, W - r))
    ac = a[core]
    scores = np.full((2 * r + 1, 2 * r + 1), -np.inf)
    for i in range(-r, r + 1):
        for j in range(-r, r + 1):
            bc = b[r + i : H - r + i, r + j : W - r + j]
            ok = np.isfinite(ac) & np.isfinite(bc)
            if ok.sum() < 100:
                continue
            x, y = ac[ok] - ac[ok].mean(), bc[ok] - bc[ok].mean()
            scores[i + r, j + r] = (x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum())
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    i, j = int(np.clip(i, 1, 2 * r - 1)), int(np.clip(j, 1, 2 * r - 1))

    def peak(m1: float, m0: float, p1: float) -> float:
        d = m1 - 2 * m0 + p1
        return 0.0 if d == 0 else 0.5 * (m1 - p1) / d

    return (
        i - r + peak(scores[i - 1, j], scores[i, j], scores[i + 1, j]),
        j - r + peak(scores[i, j - 1], scores[i, j], scores[i, j + 1]),
    )


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sarsen")
    safe = tmp / template_path("S1B_rome").name
    shutil.copytree(template_path("S1B_rome"), safe)
    # DEM crop as ellipsoidal heights in EPSG:4979
    with rasterio.open(bundled_dem_path()) as ds:
        t = ds.transform
        c0 = r0 = (ds.width - CROP) // 2
        ct = t @ Affine.translation(c0, r0)
        bbox = (ct.c, ct.f + ct.e * CROP, ct.c + ct.a * CROP, ct.f)
    dem = read_dem(bundled_dem_path(), bbox)
    inv = ~dem.transform
    dc, dr = int(round(inv.a * ct.c + inv.c)), int(round(inv.e * ct.f + inv.f))
    hgt = dem.height[dr : dr + CROP, dc : dc + CROP].astype(np.float32)
    dem_path = tmp / "dem_ellipsoid.tif"
    with rasterio.open(
        dem_path,
        "w",
        driver="GTiff",
        width=CROP,
        height=CROP,
        count=1,
        dtype="float32",
        crs=CRS.from_epsg(4979).to_wkt(),
        transform=ct,
    ) as dst:
        dst.write(hgt, 1)
    # the grid of the DEM's pixel centres (sarsen's output grid)
    grid = Grid(crs=CRS.from_epsg(4326), transform=ct, width=CROP, height=CROP)
    prod = open_product(safe)
    geom = prod.annotation("VV").geometry
    lut = GeocodingLUT.compute(geom, grid, read_dem(dem_path, bbox))
    w = lut.radar_bounds(geom, margin=30)
    l0, p0, nl, npx = w.row_off, w.col_off, w.height, w.width
    # textured DN image over that window (sparse full-size TIFF, like sarssl simulate)
    rng = np.random.default_rng(7)
    tex = np.exp(gaussian_filter(rng.standard_normal((nl, npx)), 2.0) * 6.0)
    dn = np.clip(400.0 * np.sqrt(tex / tex.mean()), 1, 60000).astype(np.uint16)
    nlines, nsamples = geom.number_of_lines, geom.number_of_samples
    ann = next(safe.glob("annotation/s1*-vv-*.xml"))
    (safe / "measurement").mkdir()
    meas = safe / "measurement" / ann.name.replace(".xml", ".tiff")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(
            meas,
            "w",
            driver="GTiff",
            width=nsamples,
            height=nlines,
            count=1,
            dtype="uint16",
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
            SPARSE_OK="TRUE",
        ) as dst:
            dst.write(dn, 1, window=Window(p0, l0, npx, nl))
    prod = open_product(safe)  # re-open: the file list is read at opening
    ours = lut.sample(
        calibrate_window(
            prod, "VV", (p0, l0, npx, nl), target="beta0", remove_noise=False, floor_db=None
        ),
        (l0, p0),
    )
    out = tmp / "sarsen.tif"
    product = sarsen.Sentinel1SarProduct(str(safe), measurement_group="IW/VV")
    sarsen.terrain_correction(
        product, dem_urlpath=str(dem_path), output_urlpath=str(out), interp_method="linear"
    )
    with rasterio.open(out) as ds:
        theirs = ds.read(1).astype(np.float64)
        st = ds.transform
        if st.e > 0:  # sarsen writes the DEM grid south-up: flip to north-up
            theirs = theirs[::-1]
            st = Affine(st.a, st.b, st.c, st.d, -st.e, st.f + st.e * ds.height)
        assert st.almost_equals(ct, precision=1e-9) and theirs.shape == (CROP, CROP)
    return ours.astype(np.float64), theirs


def test_geolocation_agrees_with_sarsen(scene):
    ours, theirs = scene
    assert np.isfinite(ours).mean() > 0.95 and np.isfinite(theirs).mean() > 0.95
    la, lb = np.log(ours), np.log(theirs)
    shifts = []
    b = 40
    for r in range(0, CROP - b + 1, b):
        for c in range(0, CROP - b + 1, b):
            shifts.append(_shift(la[r : r + b, c : c + b], lb[r : r + b, c : c + b]))
    shifts = np.array(shifts)
    med = np.median(shifts, axis=0)
    print("sarsen - sarssl shift (rows, cols) median", med, "max", np.abs(shifts).max(axis=0))
    assert np.all(np.abs(med) < 0.1), f"median shift {med} px"
    # and the images really are the same scene (a wrong geolocation would decorrelate)
    ok = np.isfinite(la) & np.isfinite(lb)
    assert np.corrcoef(la[ok], lb[ok])[0, 1] > 0.9


def test_shift_estimator_detects_a_known_shift():
    """The estimator itself: a 0.5 px shift of a textured image is measured to < 0.1 px."""
    rng = np.random.default_rng(1)
    big = gaussian_filter(rng.standard_normal((200, 200)), 2.0)
    from scipy.ndimage import shift as nd_shift

    moved = nd_shift(big, (0.5, -0.3), order=3)
    dr, dc = _shift(big[50:150, 50:150], moved[50:150, 50:150])
    assert abs(dr - 0.5) < 0.1 and abs(dc + 0.3) < 0.1
