"""Tests of ``sarssl simulate``: real geometry, real LUTs, tiny areas.

The products are read back with the project's own reader (:mod:`sarssl.sar.safe`) and
calibrated with :mod:`sarssl.sar.calibration`, exactly as the preprocessing stage will.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from sarssl.cli import main
from sarssl.demo import backscatter as bs
from sarssl.demo import simulate as sim
from sarssl.errors import SarsslError
from sarssl.sar import calibration as C
from sarssl.sar import safe
from sarssl.vocabulary import season_windows

BBOX = "12.49,41.99,12.51,42.005"  # ~1.7 x 1.7 km inside the Rome template and DEM
TEMPLATE_START = dt.datetime(2021, 12, 23, 5, 11, 22, 594441)
TEMPLATE_ORBIT = 30148


def _flat_dem(path: Path, height: float = 50.0) -> Path:
    """A flat DEM (ellipsoidal heights, EPSG:4979) around the Rome test area."""
    tr = Affine(0.001, 0, 12.44, 0, -0.001, 42.06)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=120,
        height=120,
        count=1,
        dtype="float32",
        crs="EPSG:4979",
        transform=tr,
    ) as ds:
        ds.write(np.full((1, 120, 120), height, np.float32))
    return path


def _run(tmp: Path, *extra: str, bbox: str = BBOX, per_season: int = 1) -> tuple[Path, Path]:
    prod, truth = tmp / "products", tmp / "truth"
    rc = main(
        [
            "simulate",
            "--template",
            "S1B_rome",
            "--area",
            "rome",
            "--bbox",
            bbox,
            "--year",
            "2021",
            "--per-season",
            str(per_season),
            "--seed",
            "7",
            "--products-dir",
            str(prod),
            "--truth-dir",
            str(truth),
            *extra,
        ]
    )
    assert rc == 0
    return prod, truth


def _decode(p: safe.Product, pol: str, row0: int, col0: int, h: int, w: int):
    dn = p.read_measurement(pol, window=(col0, row0, w, h))
    rows, cols = np.arange(row0, row0 + h), np.arange(col0, col0 + w)
    a = C.calibration_lut(p.calibration(pol), "sigmaNought", rows, cols).astype(np.float64)
    eta = C.noise_lut(p.noise(pol), rows, cols).astype(np.float64)
    return dn, a, eta


@pytest.fixture(scope="module")
def uniform(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uniform")
    dem = _flat_dem(tmp / "flat.tif")
    prod, truth = _run(tmp, "--uniform-sigma0-db", "-22", "--dem", str(dem))
    import json

    win = json.loads((truth / "run.json").read_text())["radar_window"]
    return prod, truth, win


def test_products_are_redated_consistently(uniform):
    prod, truth, _ = uniform
    zips = sorted(prod.glob("*.zip"))
    assert len(zips) == 4
    rows = list(csv.DictReader(open(truth / "acquisitions.csv")))
    assert [r["season"] for r in rows] == ["winter", "spring", "summer", "fall"]
    windows = season_windows(2021)
    for r in rows:
        d = dt.date.fromisoformat(r["date"])
        a, b = windows[r["season"]]
        assert a <= d <= b
        k = int(r["cycle_offset"])
        assert (d - TEMPLATE_START.date()).days == 12 * k
        p = safe.open_product(prod / r["file"])
        assert p.id == r["product_id"] == Path(r["file"]).stem
        assert p.polarisations == ["VV", "VH"]
        shift = np.timedelta64(12 * k, "D")
        tpl_start = np.datetime64(TEMPLATE_START, "ns")
        assert p.start_time == tpl_start + shift
        assert p.absolute_orbit == TEMPLATE_ORBIT + 175 * k
        assert p.relative_orbit == 22  # same track
        name = safe.parse_product_name(p.id)
        assert name["start"] == (TEMPLATE_START + dt.timedelta(days=12 * k)).strftime(
            "%Y%m%dT%H%M%S"
        )
        assert name["orbit"] == p.absolute_orbit
        for pol in ("VV", "VH"):
            ann = p.annotation(pol)
            root = ann.root
            assert root.findtext("adsHeader/polarisation") == pol
            first = np.datetime64(
                root.findtext("imageAnnotation/imageInformation/productFirstLineUtcTime"), "ns"
            )
            assert first == p.start_time
            assert int(root.findtext("adsHeader/absoluteOrbitNumber")) == p.absolute_orbit
            orbit_times = [
                np.datetime64(o.findtext("time"), "ns")
                for o in root.iterfind("generalAnnotation/orbitList/orbit")
            ]
            gcp_times = [
                np.datetime64(g.findtext("azimuthTime"), "ns")
                for g in root.iterfind(".//geolocationGridPoint")
            ]
            assert min(orbit_times) < first < max(orbit_times)
            assert abs(np.median(np.array(gcp_times) - first)) < np.timedelta64(30, "s")
            # file names carry the new times, orbit and data take
            rel = p.files[("annotation", pol)]
            assert name["start"].lower() in rel and f"{p.absolute_orbit:06d}" in rel
            assert name["datatake"].lower() in rel
            cal_root = safe.parse_xml(p.read_member(p.files[("calibration", pol)]), "cal")
            t_cal = np.datetime64(cal_root.findtext(".//calibrationVector/azimuthTime"), "ns")
            assert abs(t_cal - first) < np.timedelta64(60, "s")
        # every ISO date in the product XML is the new acquisition date (or its processing)
        text = p.read_member(p.files[("annotation", "VV")]).decode()
        dates = set(re.findall(r"\d{4}-\d\d-\d\d(?=T)", text))
        assert dates == {str(p.date)}


def test_manifest_lists_written_files_with_checksums(uniform):
    prod, _, _ = uniform
    z = zipfile.ZipFile(sorted(prod.glob("*.zip"))[0])
    safe_name = Path(z.filename).stem + ".SAFE"
    names = set(z.namelist())
    manifest = safe.parse_xml(z.read(f"{safe_name}/manifest.safe"), "manifest")
    objs = manifest.findall("dataObjectSection/dataObject")
    assert len(objs) == 8  # annotation, calibration, noise, measurement x 2 pols
    for obj in objs:
        href = obj.find("byteStream/fileLocation").get("href").removeprefix("./")
        data = z.read(f"{safe_name}/{href}")
        assert int(obj.find("byteStream").get("size")) == len(data)
        assert obj.findtext("byteStream/checksum") == hashlib.md5(data).hexdigest()
    assert all(n.startswith(safe_name + "/") for n in names)


def test_measurement_full_size_sparse_and_uniform_decodes(uniform):
    prod, _, win = uniform
    p = safe.open_product(sorted(prod.glob("*.zip"))[1])
    for pol in ("VV", "VH"):
        with rasterio.open(p.measurement_path(pol)) as ds:
            assert (ds.height, ds.width) == p.annotation(pol).shape == (16705, 26102)
            assert ds.dtypes[0] == "uint16" and ds.block_shapes[0] == (512, 512)
            assert len(ds.gcps[0]) == 210
        # far from the area: no data
        assert not p.read_measurement(pol, window=(0, 0, 512, 512)).any()
        assert not p.read_measurement(pol, window=(25000, 16000, 512, 512)).any()
        dn, a, eta = _decode(p, pol, win["row0"], win["col0"], win["height"], win["width"])
        inside = dn > 0
        assert 0.05 < inside.mean() < 0.9
        # the written window is larger than the footprint: zeros there too
        assert not inside[0].any() and not inside[-1].any()
        s_db = 10 * np.log10((dn[inside].astype(np.float64) ** 2 - eta[inside]) / a[inside] ** 2)
        # the only errors: DN rounding to integers (a uniform scene rounds the same way
        # everywhere, ~0.08 dB at DN ~ 50) and the <1% ripple of the ground-sample splat
        assert np.all(np.abs(s_db + 22.0) < 0.1)
        dn_true = np.sqrt(a[inside] ** 2 * 10**-2.2 + eta[inside])
        assert np.all(np.abs(dn[inside] - dn_true) < 0.5 + 0.01 * dn_true)
    # the zip stays small although the image is 16705 x 26102
    assert Path(p.path).stat().st_size < 3e6


def test_speckle_has_the_requested_enl(tmp_path):
    dem = _flat_dem(tmp_path / "flat.tif")
    prod, truth = _run(
        tmp_path,
        "--uniform-sigma0-db",
        "-8",
        "--speckle",
        "--enl",
        "4.4",
        "--dem",
        str(dem),
        bbox="12.495,41.995,12.505,42.0",
    )
    import json

    win = json.loads((truth / "run.json").read_text())["radar_window"]
    p = safe.open_product(sorted(prod.glob("*.zip"))[0])
    dn, a, eta = _decode(p, "VV", win["row0"], win["col0"], win["height"], win["width"])
    inside = dn > 0
    ratio = dn[inside].astype(np.float64) ** 2 / (a[inside] ** 2 * 10**-0.8 + eta[inside])
    assert abs(ratio.mean() - 1.0) < 0.02
    enl = ratio.mean() ** 2 / ratio.var()
    assert 4.1 < enl < 4.7, enl
    # different products get different speckle
    q = safe.open_product(sorted(prod.glob("*.zip"))[1])
    dn2 = q.read_measurement("VV", window=(win["col0"], win["row0"], win["width"], win["height"]))
    assert np.corrcoef(dn[inside], dn2[inside])[0, 1] < 0.1


def test_landcover_truth_and_model(tmp_path):
    prod, truth = _run(tmp_path, bbox="12.48,41.98,12.52,42.02")
    with rasterio.open(truth / "landcover.tif") as ds:
        lc = ds.read(1)
        assert ds.crs.to_epsg() == 32633 and ds.res == (10.0, 10.0)
    codes = set(np.unique(lc).tolist())
    assert codes <= {10, 20, 30, 40, 50, 60, 80, 90}
    assert {10, 30, 40, 80} <= codes
    with rasterio.open(truth / "treecover.tif") as ds:
        tc = ds.read(1)
        assert "sinu" in ds.crs.to_proj4() and abs(ds.res[0] - 231.656358) < 1e-3
    vals = set(np.unique(tc).tolist())
    assert vals <= set(range(101)) | {200, 253}
    with rasterio.open(truth / "dem.tif") as ds:
        assert ds.crs.to_epsg() == 9707
        b = ds.bounds
        assert b.left < 12.48 and b.right > 12.52 and b.bottom < 41.98 and b.top > 42.02
        assert 0 < np.median(ds.read(1)) < 200  # real Rome heights
    rows = list(csv.DictReader(open(truth / "sigma0_table.csv")))
    assert len(rows) == len(bs.STATES) * 4 * 2
    water = [
        float(r["sigma0_db"])
        for r in rows
        if r["state"] == "open_water" and r["polarisation"] == "VH"
    ]
    assert max(water) <= -25
    # seasonal crops: the rendered VV changes between seasons far more than speckle would
    import json

    win = json.loads((truth / "run.json").read_text())["radar_window"]
    means = []
    for z in sorted(prod.glob("*.zip")):
        p = safe.open_product(z)
        dn, a, eta = _decode(p, "VV", win["row0"], win["col0"], win["height"], win["width"])
        inside = dn > 0
        means.append(np.mean(np.maximum(dn[inside] ** 2.0 - eta[inside], 0) / a[inside] ** 2))
    assert len(set(np.round(10 * np.log10(means), 2))) == 4


def test_local_incidence_brightens_slopes_facing_the_sensor():
    t = bs.signature_table("mediterranean")
    slope = bs.slope_table()["VV"]
    db = np.array([t["VV"][bs.S_GRASS, 1]] * 2 + [t["VV"][bs.S_WATER, 1]])
    sl = slope[[bs.GRASS, bs.GRASS, bs.WATER]]
    s = bs.sigma0_linear(db, sl, np.array([25.0, 45.0, 35.0]))
    assert s[0] > s[1]
    assert 10 * np.log10(s[0] / s[1]) == pytest.approx(-20 * slope[bs.GRASS], abs=1e-3)
    assert 10 * np.log10(s[2]) == pytest.approx(t["VV"][bs.S_WATER, 1], abs=1e-4)


def test_redater_and_cycles():
    tpl = sim.Ids(
        "S1A",
        dt.datetime(2021, 1, 19, 3, 16, 53),
        dt.datetime(2021, 1, 19, 3, 17, 18),
        36201,
        0x043ED0,
        "8255",
    )
    new = sim.product_ids(tpl, 3, 1, "x")
    red = sim.Redater(tpl, new, 3)
    src = (
        "<a>2021-01-19T03:16:53.799379</a><b>20171017T080000</b><absoluteOrbitNumber>36201"
        "</absoluteOrbitNumber> s1a-iw-grd-vv-20210119t031653-20210119t031718-036201-043ed0-001 "
        f"{tpl.name} <safe:cycleNumber>214</safe:cycleNumber>"
    )
    out = red.text(src)
    assert "2021-02-24T03:16:53.799379" in out  # +36 days, same time of day
    assert "20171017T080000" in out  # auxiliary validity dates untouched
    assert f"<absoluteOrbitNumber>{36201 + 525}</absoluteOrbitNumber>" in out
    assert f"20210224t031653-20210224t031718-{36201 + 525:06d}-{new.datatake:06x}-001" in out
    assert new.name in out and "<safe:cycleNumber>217<" in out
    cycles = sim.choose_cycles(dt.date(2021, 12, 23), 2021, 3, seed=5)
    assert cycles == sim.choose_cycles(dt.date(2021, 12, 23), 2021, 3, seed=5)
    assert len(cycles) == 12 and len({k for _, k in cycles}) == 12
    with pytest.raises(SarsslError):
        sim.choose_cycles(dt.date(2021, 12, 23), 2021, 9, seed=5)


def test_area_outside_template_is_a_clear_error(tmp_path, capsys):
    rc = main(
        [
            "simulate",
            "--template",
            "S1B_rome",
            "--area",
            "x",
            "--bbox",
            "20.0,41.99,20.01,42.0",
            "--year",
            "2021",
            "--per-season",
            "1",
            "--seed",
            "1",
            "--products-dir",
            str(tmp_path / "p"),
            "--truth-dir",
            str(tmp_path / "t"),
        ]
    )
    assert rc == 2
    assert "not inside the template" in capsys.readouterr().err
    assert not list((tmp_path / "p").glob("*.zip")) if (tmp_path / "p").exists() else True
