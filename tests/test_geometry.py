"""Radar geometry on the real Sentinel-1 annotations in ../shared/data/sentinel1."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import real_annotations, write_eof
from sarssl.errors import InputError
from sarssl.sar.geometry import (
    SPEED_OF_LIGHT,
    OrbitPolynomial,
    RadarGeometry,
    cover_with_gcp_rows,
    ecef_to_lonlat_h,
    find_orbit_file,
    lonlat_h_to_ecef,
    read_eof,
    retag_rounded_state_vector_times,
)

ANNOTATIONS = real_annotations()


@pytest.fixture(scope="module", params=sorted(ANNOTATIONS))
def geom(request) -> RadarGeometry:
    return RadarGeometry.from_annotation(ANNOTATIONS[request.param])


def test_four_real_products_found():
    assert len(ANNOTATIONS) == 4
    assert any(k.startswith("s1a-iw-g0150222") for k in ANNOTATIONS)  # IPF 002.36 (2015)


def test_parsed_fields(geom: RadarGeometry):
    assert geom.number_of_lines > 16000 and geom.number_of_samples > 25000
    assert geom.range_pixel_spacing == 10.0
    assert 0.00148 < geom.azimuth_time_interval < 0.0015
    assert abs(geom.wavelength - 0.05546) < 1e-4
    assert geom.pass_direction in ("ASCENDING", "DESCENDING")
    # line timing consistent with the product's last line time
    n = (geom.last_line_time - geom.first_line_time) / geom.azimuth_time_interval
    assert abs(n - (geom.number_of_lines - 1)) < 0.05
    assert len(geom.gcps.line) >= 200


def test_ecef_roundtrip():
    lon = np.array([12.5, -70.0, 33.6, 179.9])
    lat = np.array([42.0, -18.2, 0.0, 89.0])
    h = np.array([0.0, 4000.0, -50.0, 123.4])
    x, y, z = lonlat_h_to_ecef(lon, lat, h)
    assert abs(x[2] - (6378137.0 - 50.0) * np.cos(np.radians(33.6))) < 1e-6
    lo, la, hh = ecef_to_lonlat_h(x, y, z)
    np.testing.assert_allclose(lo, lon, atol=1e-10)
    np.testing.assert_allclose(la, lat, atol=1e-10)
    np.testing.assert_allclose(hh, h, atol=1e-5)


def test_orbit_reproduces_held_out_state_vectors(geom: RadarGeometry):
    sv = geom.state_vectors
    t = geom.seconds(sv.time)
    ipf236 = geom.orbit_time_correction != 0.0
    for k in range(2, len(t) - 2):  # interior vectors: interpolation, not extrapolation
        keep = np.arange(len(t)) != k
        orb = OrbitPolynomial.fit(t[keep], sv.position[keep], sv.velocity[keep])
        p, v, _ = orb.evaluate(t[k])
        assert np.linalg.norm(p - sv.position[k]) < 0.01  # 1 cm (1 s or 10 s spacing)
        dv = v - sv.velocity[k]
        v_hat = v / np.linalg.norm(v)
        along = float(dv @ v_hat)
        # the zero-Doppler plane turns with the velocity's direction: within 2 cm/s
        assert np.linalg.norm(dv - along * v_hat) < 0.02
        # its speed too, except IPF 2.36, whose annotated speeds jump +-5.5 cm/s in blocks
        # of eight vectors while the positions stay smooth to millimetres (the fit follows
        # the positions: geometry.VELOCITY_WEIGHT_S)
        assert abs(along) < (0.07 if ipf236 else 0.02)


def test_ipf236_speed_blocks_are_in_the_annotation_not_the_fit():
    """The 2015 speed errors are the annotation's: finite differences of its own positions
    disagree with its velocities by 5-6 cm/s along track on 16 of 28 vectors."""
    geom = RadarGeometry.from_annotation(ANNOTATIONS["s1a-iw-g0150222t170725-"])
    sv = geom.state_vectors
    t = geom.seconds(sv.time)
    fd = (sv.position[2:] - sv.position[:-2]) / (t[2:] - t[:-2])[:, None]
    off = np.linalg.norm(fd - sv.velocity[1:-1], axis=1)
    assert 14 <= np.count_nonzero(off > 0.04) <= 18 and off.max() < 0.07
    assert np.count_nonzero(off < 0.006) >= 8  # the other vectors agree to mm/s


def test_ipf236_state_vector_times_retagged():
    """IPF 2.36 writes the 1 s state vectors' times rounded to the millisecond (.055000)
    while they belong to the line-time grid (first line .054739): re-tagged by 0.261 ms;
    later processors' microsecond times are left alone."""
    for key, root in ANNOTATIONS.items():
        geom = RadarGeometry.from_annotation(root)
        if key.startswith("s1a-iw-g0150222"):
            assert abs(geom.orbit_time_correction - 0.000261) < 1e-9
            t = geom.seconds(geom.state_vectors.time)
            np.testing.assert_allclose(t, np.round(t), atol=1e-9)  # on the line-time grid
        else:
            assert geom.orbit_time_correction == 0.0
    times = np.array(["2020-01-01T00:00:00.055", "2020-01-01T00:00:01.055"], "datetime64[ns]")
    epoch = np.datetime64("2020-01-01T00:00:03.054739", "ns")
    out, d = retag_rounded_state_vector_times(times, epoch)
    assert d == pytest.approx(0.000261) and str(out[0]).endswith("00:00:00.054739000")
    # not rounded to the millisecond, or a common offset over the rounding: unchanged
    for t_, e_ in (
        (times + np.timedelta64(7, "us"), epoch),
        (times, epoch - np.timedelta64(3, "ms")),
    ):
        out, d = retag_rounded_state_vector_times(t_, e_)
        assert d == 0.0 and np.array_equal(out, t_)


def test_grsr_not_srgr_matches_the_geolocation_grid():
    """The root cause of #16's range error: IPF 2.36's srgr polynomials are not the inverse
    of its grsr polynomials; grsr reproduces the GCPs' slant range times (every product),
    srgr misses them by up to 4 px in a range-dependent wave (2015 only)."""
    for key, root in ANNOTATIONS.items():
        geom = RadarGeometry.from_annotation(root)
        g, cc = geom.gcps, geom.coordinate_conversion
        t = geom.line_time(g.line)
        i = np.argmin(np.abs(cc.time[None, :] - t[:, None]), axis=1)
        gr = g.pixel * geom.range_pixel_spacing
        sr_grsr = np.array([np.polynomial.polynomial.polyval(x, cc.grsr[k]) for x, k in zip(gr, i)])
        sr_gcp = g.slant_range_time * SPEED_OF_LIGHT / 2
        assert np.abs(sr_grsr - sr_gcp).max() < 0.01  # m
        px_srgr = (
            np.array(
                [
                    np.polynomial.polynomial.polyval(r - cc.sr0[k], cc.srgr[k])
                    for r, k in zip(sr_gcp, i)
                ]
            )
            / geom.range_pixel_spacing
        )
        miss = np.abs(px_srgr - g.pixel)
        if key.startswith("s1a-iw-g0150222"):
            assert 3.5 < miss.max() < 4.5
        else:
            assert miss.max() < 0.05
        # the model's conversion is the grsr inverse
        np.testing.assert_allclose(geom.slant_range_to_ground_range(sr_gcp, t), gr, atol=0.01)


def test_uncovered_azimuth_block_fitted_from_its_gcp_row():
    """IPF 2.36 leaves the scene's last azimuth block without a coordinate-conversion
    entry; an entry fitted to that block's GCP row is added. Fitted to a covered row, such
    an entry reproduces the annotated one to < 0.05 px on every product."""
    for key, root in ANNOTATIONS.items():
        geom = RadarGeometry.from_annotation(root)
        n_annotated = len(root.findall(".//coordinateConversionList/coordinateConversion"))
        n_extra = len(geom.coordinate_conversion.time) - n_annotated
        assert n_extra == (1 if key.startswith("s1a-iw-g0150222") else 0)
        g, cc = geom.gcps, geom.coordinate_conversion
        row = g.line == np.unique(g.line)[1]
        again = cover_with_gcp_rows(cc, g, geom.azimuth_time_interval, geom.range_pixel_spacing)
        assert len(again.time) == len(cc.time)  # nothing left uncovered
        gr = g.pixel[row] * geom.range_pixel_spacing
        sr = g.slant_range_time[row] * SPEED_OF_LIGHT / 2
        c = np.polynomial.Polynomial.fit(gr, sr, cc.grsr.shape[1] - 1).convert().coef
        x = np.linspace(0.0, gr.max(), 200)
        t = np.full_like(x, geom.line_time(g.line[row][0]))
        sr_annot = geom.ground_range_to_slant_range(x, t)
        gr_annot = geom.slant_range_to_ground_range(np.polynomial.polynomial.polyval(x, c), t)
        assert np.abs(gr_annot - x).max() / geom.range_pixel_spacing < 0.05
        assert np.abs(sr_annot - np.polynomial.polynomial.polyval(x, c)).max() < 0.25


def test_forward_model_hits_gcps(geom: RadarGeometry):
    g = geom.gcps
    line, pixel, t, r = geom.ground_to_radar(
        *lonlat_h_to_ecef(g.lon, g.lat, g.height), return_time_range=True
    )
    # the zero-Doppler solution reproduces ESA's GCP azimuth times and slant ranges
    assert np.median(np.abs(t - g.azimuth_time)) < 5e-5  # s (< 0.04 lines)
    assert np.median(np.abs(r - g.slant_range_time * SPEED_OF_LIGHT / 2)) < 0.5  # m
    dl, dp = line - g.line, pixel - g.pixel
    assert abs(np.median(dl)) < 0.1 and abs(np.median(dp)) < 0.1
    assert np.median(np.abs(dl)) < 0.1
    assert np.median(np.hypot(dl, dp)) < 0.3
    # every GCP, near and far range: the grsr polynomial of the GCP's azimuth block (a
    # blend of neighbouring blocks' polynomials missed by up to 1.5 px, srgr by 4 px)
    assert np.max(np.abs(dp)) < 0.05
    assert np.max(np.abs(dl)) < 0.05  # with the bistatic line offset


def test_radar_to_ground_inverts_forward(geom: RadarGeometry):
    rng = np.random.default_rng(0)
    line = rng.uniform(0, geom.number_of_lines - 1, 50)
    pixel = rng.uniform(0, geom.number_of_samples - 1, 50)
    h = rng.uniform(-20, 2000, 50)
    lon, lat = geom.radar_to_ground(line, pixel, h)
    l2, p2 = geom.lonlat_to_radar(lon, lat, h)
    np.testing.assert_allclose(l2, line, atol=1e-3)
    np.testing.assert_allclose(p2, pixel, atol=1e-3)
    # higher terrain is seen at nearer range (layover direction): pixel decreases with h
    _, p_low = geom.lonlat_to_radar(lon, lat, 0.0)
    _, p_high = geom.lonlat_to_radar(lon, lat, 1000.0)
    assert np.all(p_high < p_low)


def test_footprint_contains_gcps(geom: RadarGeometry):
    from shapely.geometry import Point

    fp = geom.footprint()
    g = geom.gcps
    inner = (g.line > 0) & (g.line < g.line.max()) & (g.pixel > 0) & (g.pixel < g.pixel.max())
    assert all(
        fp.buffer(1e-3).contains(Point(lo, la)) for lo, la in zip(g.lon[inner], g.lat[inner])
    )


def test_external_orbit_selection_and_use(tmp_path: Path):
    geom = RadarGeometry.from_annotation(ANNOTATIONS["s1a-iw-g0210119t031653-"])
    sv = geom.state_vectors
    day = str(sv.time[0])[:10].replace("-", "")
    v0 = str(np.datetime64(sv.time[0], "s")).replace("-", "").replace(":", "")
    v1 = str(np.datetime64(sv.time[-1], "s")).replace("-", "").replace(":", "")
    m = geom.mission
    res = tmp_path / f"{m}_OPER_AUX_RESORB_OPOD_{day}T000000_V{v0}_{v1}.EOF"
    poe = tmp_path / "sub" / f"{m}_OPER_AUX_POEORB_OPOD_{day}T000000_V{v0}_{v1}.EOF"
    poe.parent.mkdir()
    write_eof(res, sv, "RESORB")
    write_eof(poe, sv, "POEORB", shift_m=100.0)  # a different orbit: must change the result
    start = geom.epoch
    stop = geom.epoch + np.timedelta64(25, "s")
    assert find_orbit_file(tmp_path, m, start, stop) == poe
    assert find_orbit_file(tmp_path, "S1C", start, stop) is None
    _, kind = read_eof(res)
    assert kind == "RESORB"
    g2 = geom.with_orbit_file(poe)
    assert g2.orbit_source == "POEORB"
    g = geom.gcps
    xyz = lonlat_h_to_ecef(g.lon, g.lat, g.height)
    _, p1 = geom.ground_to_radar(*xyz)
    _, p2 = g2.ground_to_radar(*xyz)
    assert np.abs(p2 - p1).max() > 1.0  # the 100 m orbit shift moves the pixels
    with pytest.raises(InputError, match="EOF"):
        bad = tmp_path / "bad.EOF"
        bad.write_text("not xml")
        read_eof(bad)


def test_gcp_residuals_of_the_shared_products(geom: RadarGeometry):
    """The self-check every preprocessing run reports: on every shared product (IPF 2.36
    to 3.x) the model meets the GCPs to hundredths of a pixel, far under its 0.5 px
    warning level."""
    res = geom.gcp_residuals()
    print(res.summary())
    assert res.n == len(geom.gcps.line) >= 200
    for v in (res.azimuth_bias_px, res.azimuth_std_px, res.range_bias_px, res.range_std_px):
        assert abs(v) < 0.05
    assert res.rms_px < 0.05 and res.max_px < 0.05
    assert res.azimuth_bias_m == pytest.approx(res.azimuth_bias_px * geom.azimuth_pixel_spacing)
    tags = res.tags()
    assert tags["GCP_RESIDUAL_N"] == str(res.n) and len(tags) == 11


def test_slant_range_to_pixel_table_matches_the_exact_inversion(geom: RadarGeometry):
    """The LUT's per-pixel conversion (a 25 m table per entry) agrees with the exact grsr
    inversion to 1e-3 px, in and beyond the swath; NaN stays NaN; in place works."""
    rng = np.random.default_rng(1)
    line = rng.uniform(-50, geom.number_of_lines + 50, 2000)
    gr = rng.uniform(-20_000, geom.number_of_samples * geom.range_pixel_spacing + 30_000, 2000)
    sr = geom.ground_range_to_slant_range(gr, geom.line_time(line))
    exact = geom.slant_range_to_ground_range(sr, geom.line_time(line)) / geom.range_pixel_spacing
    np.testing.assert_allclose(exact * geom.range_pixel_spacing, gr, atol=1e-6)
    np.testing.assert_allclose(geom.slant_range_to_pixel(line, sr), exact, atol=1e-3)
    sr[:3] = np.nan
    buf = np.ascontiguousarray(sr)
    out = geom.slant_range_to_pixel(line, buf, in_place=True)
    assert out is buf and np.isnan(out[:3]).all() and np.isfinite(out[3:]).all()
