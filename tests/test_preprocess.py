"""`sarssl preprocess` end to end on a real product's metadata with a synthetic measurement,
plus the SNAP backend plumbing (without SNAP)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from lxml import etree
from rasterio.windows import Window

from conftest import write_eof
from sarssl.cli import main
from sarssl.errors import InputError, SarsslError
from sarssl.sar import snap
from sarssl.sar.geometry import RadarGeometry

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SAFE = (
    SHARED
    / "sentinel1"
    / "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371.SAFE"
)
DEM = SHARED / "dem" / "Rome-30m-DEM.tif"
AOI = (12.48, 41.98, 12.52, 42.01)


@pytest.fixture(scope="module")
def product(tmp_path_factory) -> Path:
    """The real Rome SAFE with sparse synthetic measurements around the AOI: VV DN such
    that sigma0 = 0.05 (-13 dB) in the west half, 0.2 (-7 dB) in the east, with speckle;
    VH (annotation copied from VV, as this trimmed product ships VV only) 8 dB lower."""
    from sarssl.sar.calibration import calibration_lut, noise_lut
    from sarssl.sar.safe import open_product, record_measurement_checksums

    root = tmp_path_factory.mktemp("prod") / SAFE.name
    shutil.copytree(SAFE, root)
    for f in list((root / "annotation").rglob("*-vv-*.xml")):
        shutil.copy(f, f.with_name(f.name.replace("-vv-", "-vh-").replace("-001.xml", "-002.xml")))
    ann = next((root / "annotation").glob("s1b-*-vv-*.xml"))
    geom = RadarGeometry.from_annotation(etree.parse(str(ann)).getroot())
    lines, pixels = geom.lonlat_to_radar(
        np.array([AOI[0], AOI[2], AOI[0], AOI[2]]), np.array([AOI[1], AOI[1], AOI[3], AOI[3]]), 60.0
    )
    r0, r1 = int(lines.min()) - 60, int(lines.max()) + 60
    c0, c1 = int(pixels.min()) - 60, int(pixels.max()) + 60
    r0, c0 = r0 - r0 % 256, c0 - c0 % 256
    r1, c1 = r1 + 256 - r1 % 256, c1 + 256 - c1 % 256
    (root / "measurement").mkdir()
    rows, cols = np.arange(r0, r1), np.arange(c0, c1)
    rng = np.random.default_rng(0)
    _, pmid = geom.lonlat_to_radar(np.array([12.5]), np.array([41.995]), 60.0)
    for pol, scale in (("vv", 1.0), ("vh", 10**-0.8)):
        name = ann.name.replace("-vv-", f"-{pol}-").replace(".xml", ".tiff")
        if pol == "vh":
            name = name.replace("-001.tiff", "-002.tiff")
        prod = open_product(root)
        a = calibration_lut(prod.calibration(pol.upper()), "sigmaNought", rows, cols)
        eta = noise_lut(prod.noise(pol.upper()), rows, cols)  # thermal noise the chain removes
        sigma = (
            scale
            * np.where(cols[None, :] < pmid[0], 0.05, 0.2)
            * rng.gamma(4.4, 1 / 4.4, (len(rows), len(cols)))
        )
        dn = np.sqrt(sigma * np.asarray(a, dtype=float) ** 2 + eta)
        with rasterio.open(
            root / "measurement" / name,
            "w",
            driver="GTiff",
            width=geom.number_of_samples,
            height=geom.number_of_lines,
            count=1,
            dtype="uint16",
            tiled=True,
            blockxsize=256,
            blockysize=256,
            SPARSE_OK="TRUE",
        ) as ds:
            ds.write(
                np.clip(np.round(dn), 1, 65535).astype(np.uint16),
                1,
                window=Window(c0, r0, c1 - c0, r1 - r0),
            )
    # the manifest lists ESA's 872 MB measurements: record the synthetic ones instead
    # (preprocess checks each measurement's size and MD5 against the manifest)
    assert record_measurement_checksums(root)
    return root


def _preprocess(product: Path, out: Path, *args: str) -> int:
    """`sarssl preprocess` of ``product`` on the Rome DEM into ``out``."""
    return main(["preprocess", str(product), "--dem", str(DEM), "--out", str(out), *args])


def test_preprocess_cli_outputs_contract(product, tmp_path):
    out = tmp_path / "scene.tif"
    aoi = ",".join(str(v) for v in AOI)
    rc = _preprocess(
        product, out, "--aoi", aoi, "--speckle-filter", "refined_lee", "--backend", "python"
    )
    assert rc == 0
    with rasterio.open(out) as ds:
        assert ds.count == 2 and ds.dtypes[0] == "float32"
        assert ds.descriptions == ("VV", "VH")
        assert np.isnan(ds.nodata)
        assert ds.res == (10.0, 10.0) and ds.crs.to_epsg() == 32633
        tags = ds.tags()
        for k in (
            "PRODUCT_ID",
            "ACQUISITION_START",
            "PASS",
            "RELATIVE_ORBIT",
            "ORBIT_SOURCE",
            "CALIBRATION",
            "TERRAIN_FLATTENING",
            "SPECKLE_FILTER",
            "UNITS",
            "BACKEND",
            "SARSSL_VERSION",
        ):
            assert k in tags, k
        assert (
            tags["ORBIT_SOURCE"] == "annotation"
            and tags["UNITS"] == "db"
            and tags["BACKEND"] == "python"
        )
        # the Rome DEM is EGM96 (EPSG:9707); the geoid applied is named with its grid file
        from sarssl.sar.dem import find_geoid_grid

        assert tags["DEM_VERTICAL_DATUM"] == "EGM96" and tags["DEM"] == DEM.name
        assert tags["GEOID"] == f"EGM96 ({find_geoid_grid('EGM96').name})"
        assert tags["DEM_VOID_FRACTION"] == "0.000000"  # no holes in the real DEM here
        # the geolocation self-check (#16): the model meets the annotation's GCPs
        assert tags["ORBIT_FILE"].startswith("none")
        assert int(tags["GCP_RESIDUAL_N"]) >= 200
        for axis in ("AZIMUTH", "RANGE"):
            for stat in ("BIAS", "STD"):
                assert abs(float(tags[f"GCP_RESIDUAL_{axis}_{stat}_PX"])) < 0.05
                assert abs(float(tags[f"GCP_RESIDUAL_{axis}_{stat}_M"])) < 0.5
        assert float(tags["GCP_RESIDUAL_RMS_PX"]) < 0.05
        data = ds.read(1)
        vh = ds.read(2)
        xs = ds.transform.c + (np.arange(ds.width) + 0.5) * 10.0
    with rasterio.open(out.with_name("scene.mask.tif")) as ds:
        mask = ds.read(1)
    assert mask.dtype == np.uint8 and (mask > 0).mean() > 0.99
    # the two calibrated levels come back in dB (-13 and -7), with speckle reduced
    from pyproj import Transformer

    xm, _ = Transformer.from_crs("EPSG:4326", "EPSG:32633", always_xy=True).transform(12.5, 41.995)
    west = data[:, xs < xm - 200]
    east = data[:, xs > xm + 200]
    # descending pass, right-looking: the radar looks west, so near range (low pixel,
    # sigma0 0.05 = -13 dB) is the east half
    lin_w = np.nanmean(10 ** (west / 10))
    lin_e = np.nanmean(10 ** (east / 10))
    assert abs(10 * np.log10(lin_e) + 13.01) < 0.3
    assert abs(10 * np.log10(lin_w) + 6.99) < 0.3
    assert np.nanstd(east) < 2.0  # raw 4.4-look speckle has ~2.9 dB std
    lin_vh = np.nanmean(10 ** (vh[:, xs > xm + 200] / 10))
    assert abs(10 * np.log10(lin_vh) + 21.01) < 0.5
    # the step between the halves is sharp in map geometry (geocoding puts it in place)
    prof = np.nanmean(10 ** (data / 10), axis=0)
    edge_x = xs[np.argmax(prof < 0.5 * (lin_w + lin_e))]
    assert abs(edge_x - xm) < 30


def test_polarisations_option_selects_bands(product, tmp_path, capsys):
    """--polarisations VH: one band, identical to the VH band of the dual-pol run; a
    polarisation the product lacks is a clear error and nothing is written."""
    aoi = ",".join(str(v) for v in AOI)
    common = ["--dem", str(DEM), "--aoi", aoi, "--speckle-filter", "none", "--backend", "python"]
    both, vh = tmp_path / "both.tif", tmp_path / "vh.tif"
    assert main(["preprocess", str(product), "--out", str(both), *common]) == 0
    assert (
        main(["preprocess", str(product), "--out", str(vh), "--polarisations", "vh", *common]) == 0
    )
    with rasterio.open(both) as a, rasterio.open(vh) as b:
        assert a.count == 2 and b.count == 1 and b.descriptions == ("VH",)
        np.testing.assert_array_equal(a.read(2), b.read(1))
    bad = tmp_path / "hh.tif"
    capsys.readouterr()
    assert (
        main(["preprocess", str(product), "--out", str(bad), "--polarisations", "VV,HH", *common])
        == 2
    )
    err = capsys.readouterr().err
    assert "HH" in err and str(product) in err and "VV, VH" in err
    assert not bad.exists() and not bad.with_name("hh.mask.tif").exists()
    assert (
        main(["preprocess", str(product), "--out", str(bad), "--polarisations", "XX", *common]) == 2
    )
    assert "XX" in capsys.readouterr().err and not bad.exists()


def test_sigterm_mid_write_leaves_nothing(product, tmp_path, monkeypatch, capsys):
    """SIGTERM (Snakemake cancelling, a cluster time limit) while blocks are being written:
    exit 143, no output, no temporary file left beside it."""
    import os
    import signal

    from sarssl import rasterio_blocks

    real_write = rasterio_blocks.BlockWriter.write

    def write_then_sigterm(self, data, row_off, col_off):
        real_write(self, data, row_off, col_off)
        assert any(tmp_path.iterdir())  # the temporaries exist at this point
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(rasterio_blocks.BlockWriter, "write", write_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "scene.tif"
    rc = _preprocess(
        product,
        out,
        "--aoi",
        ",".join(str(v) for v in AOI),
        "--speckle-filter",
        "none",
        "--backend",
        "python",
    )
    assert rc == 128 + signal.SIGTERM
    assert "terminated" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before  # the CLI restores the handler


def test_errors_write_nothing(product, tmp_path):
    out = tmp_path / "x.tif"
    rc = _preprocess(product, out, "--aoi", "0,0,0.1,0.1", "--backend", "python")
    assert rc == 2 and not out.exists()
    # AOI inside the scene but outside the DEM
    rc = _preprocess(product, out, "--aoi", "12.7,41.9,12.75,41.95", "--backend", "python")
    assert rc == 2 and not out.exists() and not list(tmp_path.iterdir())


def test_backend_selection(monkeypatch):
    monkeypatch.setattr(snap, "gpt_path", lambda: None)
    assert snap.select_backend("auto") == "python"
    assert snap.select_backend("python") == "python"
    with pytest.raises(SarsslError, match="gpt"):
        snap.select_backend("snap")
    monkeypatch.setattr(snap, "gpt_path", lambda: "/opt/snap/bin/gpt")
    monkeypatch.setattr(snap, "pyrosar_available", lambda: True)
    assert snap.select_backend("auto") == "snap"
    monkeypatch.setattr(snap, "pyrosar_available", lambda: False)
    assert snap.select_backend("auto") == "python"
    with pytest.raises(SarsslError, match="pyroSAR"):
        snap.select_backend("snap")


def test_geocode_kwargs_mapping():
    kw = snap.geocode_kwargs(
        "p.zip",
        "/tmp/o",
        "dem.tif",
        grid_bounds=(100.0, 200.0, 300.0, 400.0),
        epsg=32633,
        resolution=20,
        calibration="sigma0",
        terrain_flattening=True,
        speckle_filter="lee_sigma",
        dem_is_geoid=False,
    )
    assert kw["t_srs"] == 32633 and kw["spacing"] == 20.0
    assert kw["refarea"] == "gamma0" and kw["terrainFlattening"] is True
    assert kw["speckleFilter"] == "Lee Sigma"
    assert kw["externalDEMApplyEGM"] is False and kw["externalDEMFile"] == "dem.tif"
    assert kw["standardGridOriginX"] == 100.0 and kw["standardGridOriginY"] == 400.0
    assert kw["scaling"] == "linear" and kw["removeS1ThermalNoise"] is True
    assert "speckleFilter" not in snap.geocode_kwargs(
        "p", "o", "d", grid_bounds=(0, 0, 1, 1), epsg=4326, speckle_filter="none"
    )
    with pytest.raises(SarsslError):
        snap.geocode_kwargs(
            "p", "o", "d", grid_bounds=(0, 0, 1, 1), epsg=4326, speckle_filter="median"
        )


def test_error_log_detection(tmp_path):
    snap.check_error_logs(tmp_path)  # nothing to report
    wf = tmp_path / "S1B_IW_GRDH_x"
    wf.mkdir()
    (wf / "S1B__IW___D_20211223T051122_VV_NR_Orb_Cal_TC_error.log").write_text(
        "Error: [NodeId: Terrain-Correction] The DEM 'x.tif' does not cover the scene"
    )
    with pytest.raises(SarsslError, match="does not cover"):
        snap.check_error_logs(tmp_path)


def test_block_writer_publishes_a_zstd_cog_with_average_overviews(tmp_path):
    """Blocks go in out of order; the result is a valid COG (LAYOUT=COG, 512 px tiles,
    internal overviews averaged from the data), ZSTD-compressed, lossless, in a new folder."""
    from affine import Affine

    from sarssl.rasterio_blocks import BlockWriter

    rng = np.random.default_rng(5)
    data = rng.normal(-12.0, 3.0, (2, 1100, 1300)).astype(np.float32)
    data[:, :7, :] = np.nan
    out = tmp_path / "new" / "cog.tif"
    with BlockWriter(
        out,
        count=2,
        height=1100,
        width=1300,
        dtype="float32",
        crs="EPSG:32633",
        transform=Affine(10, 0, 500000, 0, -10, 4600000),
        nodata=float("nan"),
        band_names=["VV", "VH"],
        tags={"UNITS": "db"},
    ) as w:
        for r0, c0 in ((600, 700), (0, 0), (0, 700), (600, 0)):
            w.write(data[:, r0 : r0 + 600, c0 : c0 + 700], r0, c0)
    assert sorted(p.name for p in out.parent.iterdir()) == ["cog.tif"]  # no temp left
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "ZSTD"
        assert ds.is_tiled and ds.block_shapes[0] == (512, 512)
        assert ds.overviews(1) and ds.overviews(1)[0] == 2
        assert ds.descriptions == ("VV", "VH") and ds.tags()["UNITS"] == "db"
        np.testing.assert_array_equal(ds.read(), data)
        ov = ds.read(1, out_shape=(550, 650))  # the 2x overview level
    expect = data[0, 8:10, 20:22].mean()
    assert abs(ov[4, 10] - expect) < 1e-4


def test_overview_levels_and_concurrent_close(tmp_path):
    """Overview factors follow GDAL's COG default (halve until one block holds the larger
    side); close_all publishes several writers, each with those averaged overviews, and a
    small raster gets none."""
    from affine import Affine

    from sarssl.rasterio_blocks import BlockWriter, close_all, overview_factors

    assert overview_factors(7493, 5658, 512) == [2, 4, 8, 16]
    assert overview_factors(1100, 1300, 512) == [2, 4]
    assert overview_factors(512, 300, 512) == [] and overview_factors(513, 1, 512) == [2]
    rng = np.random.default_rng(7)
    big = rng.normal(0.1, 0.02, (1, 1100, 1300)).astype(np.float32)
    small = (rng.random((300, 200)) * 7).astype(np.uint8)
    kw = dict(crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4600000))
    w1 = BlockWriter(
        tmp_path / "big.tif",
        count=1,
        height=1100,
        width=1300,
        dtype="float32",
        nodata=float("nan"),
        **kw,
    )
    w2 = BlockWriter(tmp_path / "small.tif", count=1, height=300, width=200, dtype="uint8", **kw)
    w1.write(big, 0, 0)
    w2.write(small, 0, 0)
    close_all([w1, w2])
    close_all([w1, w2])  # already published: a no-op
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif", "small.tif"]
    with rasterio.open(tmp_path / "big.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.overviews(1) == [2, 4]
        np.testing.assert_array_equal(ds.read(), big)
        ov = ds.read(1, out_shape=(550, 650))
    assert abs(ov[100, 200] - big[0, 200:202, 400:402].mean()) < 1e-6
    with rasterio.open(tmp_path / "small.tif") as ds:
        assert ds.overviews(1) == [] and ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        np.testing.assert_array_equal(ds.read(1), small)


@pytest.mark.parametrize("template", ["S1B_rome", "S1A_chimoio"])
def test_uniform_sigma0_across_a_subswath_seam_end_to_end(template, tmp_path):
    """Issue 3 radiometry: DN built from a uniform sigma0 of -22 dB through each template's
    real calibration and noise LUTs (`sarssl simulate --uniform-sigma0-db`), over an area
    that straddles the IW1/IW2 seam, come out of `sarssl preprocess --speckle-filter none`
    within 0.2 dB everywhere valid, VV and VH, with no step across the seam."""
    from affine import Affine
    from pyproj import Transformer

    from sarssl.sar.safe import open_product, template_path

    tpl = open_product(template_path(template))
    ann = tpl.annotation("VV")
    seam = next(b.first_sample for b in ann.swath_merge if b.swath == "IW2")
    line = ann.number_of_lines // 2
    geom = ann.geometry
    lon, lat = geom.radar_to_ground(
        np.array([line - 60, line + 60, line - 60, line + 60]),
        np.array([seam - 120, seam - 120, seam + 120, seam + 120]),
        0.0,
    )
    bbox = (lon.min(), lat.min(), lon.max(), lat.max())
    dem = tmp_path / "flat.tif"  # ellipsoidal (EPSG:4979) flat DEM at 0 m around the area
    with rasterio.open(
        dem,
        "w",
        driver="GTiff",
        width=200,
        height=200,
        count=1,
        dtype="float32",
        crs="EPSG:4979",
        transform=Affine(0.001, 0, bbox[0] - 0.05, 0, -0.001, bbox[3] + 0.05),
    ) as ds:
        ds.write(np.zeros((1, 200, 200), np.float32))
    bbox_s = ",".join(f"{v:.5f}" for v in bbox)
    prod, truth = tmp_path / "products", tmp_path / "truth"
    assert (
        main(
            [
                "simulate",
                "--template",
                template,
                "--area",
                "seam",
                "--bbox",
                bbox_s,
                "--year",
                "2021",
                "--per-season",
                "1",
                "--seed",
                "3",
                "--products-dir",
                str(prod),
                "--truth-dir",
                str(truth),
                "--uniform-sigma0-db",
                "-22",
                "--dem",
                str(dem),
            ]
        )
        == 0
    )
    zp = sorted(prod.glob("*.zip"))[0]
    out = tmp_path / "scene.tif"
    assert (
        main(
            [
                "preprocess",
                str(zp),
                "--dem",
                str(dem),
                "--aoi",
                bbox_s,
                "--speckle-filter",
                "none",
                "--backend",
                "python",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    with rasterio.open(out) as ds, rasterio.open(out.with_name("scene.mask.tif")) as ms:
        data, valid = ds.read(), ms.read(1) > 0
        to_grid = Transformer.from_crs("EPSG:4326", ds.crs, always_xy=True)
        inv = ~ds.transform
    assert valid.mean() > 0.5
    # every valid pixel, also those next to a coordinate-conversion block boundary (where
    # the slant-to-ground conversion changes: sarssl.sar.geometry), which the simulator
    # places line by line with each line's own block
    for b, pol in enumerate(("VV", "VH")):
        err = np.abs(data[b][valid] + 22.0)
        print(f"{template} {pol}: max |error| {err.max():.3f} dB over {valid.sum()} valid px")
        assert err.max() < 0.2, (pol, err.max())
    # the seam in map geometry: output pixels just left and right of it (same lines)
    lines = np.arange(line - 40, line + 41, 4.0)
    sides = []
    for offs in (np.arange(-30, -4, 2.0), np.arange(5, 31, 2.0)):
        ll, pp = np.meshgrid(lines, seam + offs)
        lo, la = geom.radar_to_ground(ll.ravel(), pp.ravel(), 0.0)
        x, y = to_grid.transform(lo, la)
        c, r = inv @ (np.asarray(x), np.asarray(y))
        r, c = np.floor(r).astype(int), np.floor(c).astype(int)
        ok = valid[r, c]
        assert ok.mean() > 0.9
        sides.append(10 * np.log10(np.mean(10 ** (data[:, r[ok], c[ok]] / 10), axis=1)))
    step = np.abs(sides[0] - sides[1])
    print(f"{template}: step across the IW1/IW2 seam (VV, VH) {np.round(step, 3)} dB")
    assert np.all(step < 0.2), step


def test_dem_holes_over_the_area_stop_preprocessing(product, tmp_path, caplog):
    """A DEM with holes over the area: a warning and the DEM_VOID_FRACTION tag below
    --max-dem-void, an error naming the DEM above it (before: silently used)."""
    dem = tmp_path / "holes.tif"
    shutil.copyfile(DEM, dem)
    with rasterio.open(dem, "r+") as ds:
        ds.nodata = -32767.0
        data = ds.read(1)
        win = rasterio.windows.from_bounds(*AOI, ds.transform)
        r0, c0, h = int(win.row_off), int(win.col_off), int(win.height)
        data[r0 : r0 + h // 5, c0 : c0 + int(win.width)] = -32767.0
        ds.write(data, 1)
    args = [
        "preprocess",
        str(product),
        "--dem",
        str(dem),
        "--aoi",
        ",".join(map(str, AOI)),
        "--speckle-filter",
        "none",
        "--backend",
        "python",
        "--polarisations",
        "VV",
    ]
    assert main([*args, "--out", str(tmp_path / "a.tif")]) == 2
    assert not (tmp_path / "a.tif").exists()
    assert main([*args, "--out", str(tmp_path / "b.tif"), "--max-dem-void", "0.5"]) == 0
    with rasterio.open(tmp_path / "b.tif") as ds:
        assert 0.1 < float(ds.tags()["DEM_VOID_FRACTION"]) < 0.5
    assert "holes.tif" in caplog.text and "are no data (holes)" in caplog.text


def _shift_grsr(product: Path, dest: Path, metres: float) -> Path:
    """A copy of ``product`` whose annotations' ground-to-slant range polynomials are
    shifted by ``metres`` of slant range (a corrupt range conversion)."""
    root = dest / product.name
    shutil.copytree(product, root)
    for ann in (root / "annotation").glob("s1*.xml"):
        tree = etree.parse(str(ann))
        for el in tree.iter("grsrCoefficients"):
            c = el.text.split()
            c[0] = repr(float(c[0]) + metres)
            el.text = " ".join(c)
        tree.write(str(ann), xml_declaration=True, encoding="UTF-8")
    return root


def test_gcp_self_check_warns_and_stops(product, tmp_path, caplog):
    """A range conversion inconsistent with the annotation's own GCPs: 3.5 m of slant range
    (~0.6 px) is warned about and recorded in the tags; 15 m (~2.4 px) is an error naming
    the product (limit 2 px), and --max-gcp-residual-px raises the limit."""
    from sarssl.sar.geometry import RadarGeometry as RG
    from sarssl.sar.preprocess import check_geolocation

    args = ["--aoi", ",".join(map(str, AOI)), "--speckle-filter", "none", "--backend", "python"]
    args += ["--polarisations", "VV"]
    slight = _shift_grsr(product, tmp_path / "slight", 3.5)
    with caplog.at_level("INFO"):
        assert _preprocess(slight, tmp_path / "a.tif", *args) == 0
    with rasterio.open(tmp_path / "a.tif") as ds:
        tags = ds.tags()
    assert 0.5 < float(tags["GCP_RESIDUAL_RMS_PX"]) < 2.0
    assert float(tags["GCP_RESIDUAL_RANGE_BIAS_PX"]) < -0.5  # nearer range: smaller pixels
    assert abs(float(tags["GCP_RESIDUAL_AZIMUTH_BIAS_PX"])) < 0.05
    assert "geolocation self-check" in caplog.text and "above 0.5 px" in caplog.text

    bad = _shift_grsr(product, tmp_path / "bad", 15.0)
    caplog.clear()
    assert _preprocess(bad, tmp_path / "b.tif", *args) == 2
    assert not (tmp_path / "b.tif").exists() and not (tmp_path / "b.mask.tif").exists()
    ann = next((bad / "annotation").glob("s1b-*-vv-*.xml"))
    with pytest.raises(InputError, match=r"product .*5371\.SAFE.*geolocation grid by 2\.[4-9]"):
        check_geolocation(RG.from_annotation(etree.parse(str(ann))), bad, 2.0)
    assert _preprocess(bad, tmp_path / "c.tif", *args, "--max-gcp-residual-px", "10") == 0


def test_orbit_dir_is_used_recorded_and_checked(product, tmp_path):
    """--orbit-dir: the POEORB file covering the scene is used and named in the tags
    (ORBIT_SOURCE, ORBIT_FILE); an orbit file 100 m off the annotation's orbit fails the
    geolocation self-check, naming the product; a folder without a covering file falls
    back to the annotation orbit."""
    ann = next((product / "annotation").glob("s1b-*-vv-*.xml"))
    geom = RadarGeometry.from_annotation(etree.parse(str(ann)).getroot())
    sv = geom.state_vectors
    day = str(sv.time[0])[:10].replace("-", "")
    name = f"S1B_OPER_AUX_POEORB_OPOD_{day}T120000_V{day}T000000_{day}T235959.EOF"
    good, off, empty = tmp_path / "good", tmp_path / "off", tmp_path / "empty"
    for d in (good, off, empty):
        d.mkdir()
    write_eof(good / name, sv, "POEORB")
    write_eof(off / name, sv, "POEORB", shift_m=100.0)
    args = ["--aoi", ",".join(map(str, AOI)), "--speckle-filter", "none", "--backend", "python"]
    args += ["--polarisations", "VV"]
    assert _preprocess(product, tmp_path / "a.tif", *args, "--orbit-dir", str(good)) == 0
    with rasterio.open(tmp_path / "a.tif") as ds:
        tags = ds.tags()
    assert tags["ORBIT_SOURCE"] == "POEORB" and tags["ORBIT_FILE"] == name
    assert float(tags["GCP_RESIDUAL_RMS_PX"]) < 0.05
    assert _preprocess(product, tmp_path / "b.tif", *args, "--orbit-dir", str(off)) == 2
    assert not (tmp_path / "b.tif").exists()
    assert _preprocess(product, tmp_path / "c.tif", *args, "--orbit-dir", str(empty)) == 0
    with rasterio.open(tmp_path / "c.tif") as ds:
        assert ds.tags()["ORBIT_SOURCE"] == "annotation"


def test_workflow_passes_orbit_dir_and_gcp_limit():
    """preprocess.orbit_dir and preprocess.max_gcp_residual_px reach `sarssl preprocess`
    (workflow/rules/common.smk: preprocess_args, run on a validated config); the schema
    fills their defaults (no orbit folder, 2 px)."""
    import copy
    import re
    import shlex

    import yaml
    from snakemake.utils import validate

    root = Path(__file__).resolve().parents[1]
    smk = (root / "workflow" / "rules" / "common.smk").read_text()
    from types import SimpleNamespace

    funcs = {"shlex": shlex, "WorkflowError": RuntimeError}
    names = ("q", "area_cfg", "area_orbit_dir", "acquired_orbits", "preprocess_orbit")
    for name in (*names, "preprocess_args"):
        m = re.search(rf"^def {name}\(.*?(?=^\S)", smk, flags=re.S | re.M)
        exec(m.group(0), funcs)  # the rule helper itself, not a copy
    cfg = yaml.safe_load((root / "config" / "test.yaml").read_text())
    w = SimpleNamespace(area="rome", scene="S1B_x")
    for orbit_dir in (None, "resources/my orbits"):
        c = copy.deepcopy(cfg)
        if orbit_dir:
            c["preprocess"]["orbit_dir"] = orbit_dir
            c["preprocess"]["max_gcp_residual_px"] = 1.5
            c["preprocess"]["product"] = "nrb"
        validate(c, str(root / "workflow" / "schemas" / "config.schema.yaml"))
        funcs.update(config=c, bbox_arg=lambda w: "0,0,1,1", crs_arg=lambda w: "auto")
        argv = shlex.split(funcs["preprocess_args"](w))
        if orbit_dir is None:
            assert "--orbit-dir" not in argv
            assert argv[argv.index("--max-gcp-residual-px") + 1] == "2.0"
            assert argv[argv.index("--product") + 1] == "sigma0"  # the schema's default
            assert funcs["preprocess_orbit"](w) == []  # no orbit input: annotation orbits
        else:
            assert argv[argv.index("--orbit-dir") + 1] == orbit_dir
            assert argv[argv.index("--max-gcp-residual-px") + 1] == "1.5"
            assert argv[argv.index("--product") + 1] == "nrb"
            assert funcs["preprocess_orbit"](w) == orbit_dir  # the rule waits for the folder
    # a downloaded area waits for its acquired orbit list and searches its orbit folder
    c["areas"]["rome"]["source"] = "download"
    funcs.update(config=c)
    assert funcs["preprocess_orbit"](w) == "resources/download/rome/orbits.tsv"
    argv = shlex.split(funcs["preprocess_args"](w))
    assert argv[argv.index("--orbit-dir") + 1] == "resources/download/rome/orbits"


def test_nrb_product_layers_stac_and_cogs(product, tmp_path):
    """`--product nrb` (issue #16): terrain-flattened gamma0 in linear power, the sidecar
    layers with units and documented mask bits, a valid STAC Item beside the scene, and
    every output a valid COG (rio-cogeo's cog_validate)."""
    from rio_cogeo.cogeo import cog_validate

    from sarssl.sar import nrb, stac

    out = tmp_path / "scene.tif"
    aoi = ",".join(str(v) for v in AOI)
    assert _preprocess(product, out, "--aoi", aoi, "--product", "nrb", "--backend", "python") == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    layers = [f"scene.{name}.tif" for name in nrb.LAYERS]
    assert names == sorted(["scene.tif", "scene.json", *layers])
    for name in ["scene.tif", *layers]:
        valid, errors, _ = cog_validate(str(tmp_path / name))
        assert valid and not errors, (name, errors)
    with rasterio.open(out) as ds:
        tags = ds.tags()
        assert tags["PRODUCT_MODE"] == "nrb" and tags["UNITS"] == "linear"
        assert tags["CALIBRATION"] == "gamma0" and tags["TERRAIN_FLATTENING"] == "true"
        assert ds.units == ("linear power", "linear power") and ds.descriptions == ("VV", "VH")
        for k in ("GCP_RESIDUAL_AZIMUTH_BIAS_M", "DEM", "GEOID", "NOISE_REMOVAL", "MASK_BITS"):
            assert k in tags, k
        gamma = ds.read(1)
    with rasterio.open(tmp_path / "scene.mask.tif") as ds:
        mask = ds.read(1)
        assert ds.tags()["NODATA_MEANING"].startswith("none")
    with rasterio.open(tmp_path / "scene.local_incidence_angle.tif") as ds:
        assert ds.units == ("degree",)
        lia = ds.read(1)
    with rasterio.open(tmp_path / "scene.ellipsoid_incidence_angle.tif") as ds:
        eia = ds.read(1)
    with rasterio.open(tmp_path / "scene.gamma_to_sigma_ratio.tif") as ds:
        ratio = ds.read(1)
    with rasterio.open(tmp_path / "scene.nesz.tif") as ds:
        assert ds.count == 2 and ds.units == ("linear power",) * 2
        nesz = ds.read(1)
    with rasterio.open(tmp_path / "scene.dem.tif") as ds:
        assert ds.units == ("metre",)
        dem = ds.read(1)
    # every pixel carries a flag; valid pixels have data, the others none
    assert (mask > 0).all() and set(np.unique(mask)) <= set(range(32))
    valid = (mask & nrb.MASK_VALID) > 0
    assert valid.mean() > 0.99 and np.isfinite(gamma[valid]).all()
    assert np.isnan(gamma[~valid]).all()
    # the ellipsoid incidence angle agrees with the annotation's geolocation grid
    geom = RadarGeometry.from_annotation(
        etree.parse(str(next((product / "annotation").glob("s1b-*-vv-*.xml")))).getroot()
    )
    ln, px = geom.lonlat_to_radar(np.array([12.5]), np.array([41.995]), 60.0)
    expect = float(geom.incidence_angle(ln, px)[0])
    r, c = np.array(eia.shape) // 2
    assert abs(eia[r, c] - expect) < 0.05
    # Rome's terrain is gentle: local incidence spreads around the ellipsoid angle
    assert abs(np.nanmedian(lia) - np.nanmedian(eia)) < 2.0 and np.nanstd(lia) > 0.3
    # gamma-to-sigma ratio ~ cos(local incidence); gamma0 * ratio = sigma0 of the synthetic
    # field (0.05 / 0.2 in the two halves, up to speckle and the flattening)
    cos_eia = np.cos(np.radians(np.nanmedian(eia)))
    assert abs(np.nanmedian(ratio) - cos_eia) < 0.02
    # NESZ of Sentinel-1 IW VV: about -22 dB (between -30 and -18 dB)
    nesz_db = 10 * np.log10(np.nanmedian(nesz))
    assert -30 < nesz_db < -18
    # the DEM layer: ellipsoidal heights of Rome (geoid ~ +48 m above the EGM96 heights)
    assert 40 < np.nanmedian(dem) < 200
    # the STAC Item: core schema valid offline, extensions present, relative assets
    import pystac

    item = pystac.Item.from_file(str(tmp_path / "scene.json"))
    report = stac.validate(item)
    assert any("item.json" in s for s in report["validated"])
    exts = " ".join(item.stac_extensions)
    for ext in ("/sar/", "/sat/", "/projection/", "/processing/", "/raster/"):
        assert ext in exts, ext
    assert item.properties["sar:polarizations"] == ["VV", "VH"]
    assert item.properties["proj:code"] == "EPSG:32633"
    assert sorted(item.assets) == sorted(["backscatter", *nrb.LAYERS])
    assert item.assets["backscatter"].href == "./scene.tif"
    assert item.assets["nesz"].extra_fields["raster:bands"][0]["unit"] == "linear power"


def test_db_overviews_average_linear_power(tmp_path):
    """A dB COG's overviews are the dB of the mean linear power of each block (NaN
    ignored), not the mean of the dB values; masks take the nearest pixel (no invented
    flags); band units are set."""
    from affine import Affine

    from sarssl.sar.cog import LayerWriter

    rng = np.random.default_rng(3)
    lin = rng.gamma(1.0, 0.1, (1, 1100, 1301))
    db = (10 * np.log10(lin)).astype(np.float32)
    db[:, :5, :] = np.nan
    kw = dict(crs="EPSG:32633", transform=Affine(10, 0, 500000, 0, -10, 4600000))
    with LayerWriter(
        tmp_path / "db.tif",
        count=1,
        height=1100,
        width=1301,
        dtype="float32",
        nodata=float("nan"),
        units=["dB"],
        overviews="power_db",
        **kw,
    ) as w:
        w.write(db, 0, 0)
    flags = rng.choice(np.array([1, 3, 5, 16], dtype=np.uint8), (1, 1100, 1301))
    with LayerWriter(
        tmp_path / "mask.tif",
        count=1,
        height=1100,
        width=1301,
        dtype="uint8",
        units=["bit flags"],
        overviews="nearest",
        **kw,
    ) as w:
        w.write(flags, 0, 0)
    with rasterio.open(tmp_path / "db.tif") as ds:
        assert ds.units == ("dB",) and ds.overviews(1) == [2, 4]
        np.testing.assert_array_equal(ds.read(), db)
    with rasterio.open(tmp_path / "db.tif", overview_level=0) as ds:
        ov2 = ds.read(1)
    with rasterio.open(tmp_path / "db.tif", overview_level=1) as ds:
        ov4 = ds.read(1)
    assert ov2.shape == (550, 651) and ov4.shape == (275, 326)
    block = db[0, 4:6, 20:22]  # half NaN: the mean of the two finite powers
    expect = 10 * np.log10(np.nanmean(10 ** (block / 10)))
    assert abs(ov2[2, 10] - expect) < 1e-4
    assert abs(ov2[100, 200] - 10 * np.log10(np.mean(10 ** (db[0, 200:202, 400:402] / 10)))) < 1e-4
    assert abs(ov4[50, 60] - 10 * np.log10(np.mean(10 ** (db[0, 200:204, 240:244] / 10)))) < 1e-4
    assert np.isnan(ov2[1, 5])  # an all-NaN block stays no data
    # the last (odd) column of the x2 level holds the single last base column
    assert abs(ov2[100, -1] - 10 * np.log10(np.mean(10 ** (db[0, 200:202, -1:] / 10)))) < 1e-4
    # the mean of dB values would be ~2.5 dB lower on exponential speckle
    assert np.nanmean(ov4) - np.nanmean(db) > 2.0
    with rasterio.open(tmp_path / "mask.tif", overview_level=0) as ds:
        ov = ds.read(1)
    assert set(np.unique(ov)) <= {1, 3, 5, 16}
