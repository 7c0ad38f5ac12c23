"""The Sentinel-1 product reader on the bundled real product metadata (sarssl.sar.safe)."""

from __future__ import annotations

import re
import shutil
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window
from shapely.geometry import Point

from sarssl.errors import InputError
from sarssl.sar.safe import (
    TEMPLATE_NAMES,
    bundled_dem_path,
    open_product,
    parse_product_name,
    relative_orbit_from_absolute,
    template_path,
)
from sarssl.sar.window import PixelWindow

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

CHIMOIO_ID = "S1A_IW_GRDH_1SDV_20210119T031653_20210119T031718_036201_043ED0_8255"
ROME_ID = "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371"
LINES, SAMPLES = 37, 53  # size of the small test measurement


def _zip_safe(safe: Path, out: Path) -> Path:
    """Zip a SAFE folder the way ESA distributes it (the .SAFE folder at the zip root)."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(safe.rglob("*")):
            zf.write(f, Path(safe.name) / f.relative_to(safe))
    return out


def _dn(pol: str) -> np.ndarray:
    rows, cols = np.mgrid[0:LINES, 0:SAMPLES]
    return (rows * 100 + cols + (1 if pol == "VV" else 7)).astype(np.uint16)


@pytest.fixture(scope="module")
def small_safe(tmp_path_factory) -> Path:
    """The real S1A_chimoio metadata with the image size shrunk to LINES x SAMPLES and
    measurement TIFFs written under the names the manifest lists."""
    root = tmp_path_factory.mktemp("small")
    safe = root / f"{CHIMOIO_ID}.SAFE"
    shutil.copytree(template_path("S1A_chimoio"), safe)
    for ann in (safe / "annotation").glob("s1a-*.xml"):
        text = ann.read_text()
        text = text.replace(
            "<numberOfSamples>25931</numberOfSamples>",
            f"<numberOfSamples>{SAMPLES}</numberOfSamples>",
        )
        text = text.replace(
            "<numberOfLines>16854</numberOfLines>", f"<numberOfLines>{LINES}</numberOfLines>"
        )
        ann.write_text(text)
    (safe / "measurement").mkdir()
    for pol, num in (("vv", "001"), ("vh", "002")):
        name = f"s1a-iw-grd-{pol}-20210119t031653-20210119t031718-036201-043ed0-{num}.tiff"
        with rasterio.open(
            safe / "measurement" / name,
            "w",
            driver="GTiff",
            width=SAMPLES,
            height=LINES,
            count=1,
            dtype="uint16",
        ) as ds:
            ds.write(_dn(pol.upper()), 1)
    return safe


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_templates_open(name):
    p = open_product(template_path(name))
    assert p.mission in ("S1A", "S1B")
    assert p.mode == "IW" and p.product_type == "GRD" and p.resolution_class == "H"
    assert p.polarisations == ["VV", "VH"]
    assert p.pass_direction == "DESCENDING"
    assert p.start_time.dtype == np.dtype("datetime64[ns]")
    assert np.timedelta64(20, "s") < p.stop_time - p.start_time < np.timedelta64(30, "s")
    assert p.relative_orbit == relative_orbit_from_absolute(p.mission, p.absolute_orbit)
    assert p.ipf_version.startswith("003.")
    ann = p.annotation("VV")
    assert ann.polarisation == "VV" and ann.range_pixel_spacing == 10.0
    # GRD sub-swaths IW1..IW3 tile the range axis without gap or overlap
    merge = sorted(ann.swath_merge, key=lambda b: b.first_sample)
    assert [b.swath for b in merge] == ["IW1", "IW2", "IW3"]
    assert merge[0].first_sample == 0
    assert merge[-1].last_sample == ann.number_of_samples - 1
    for a, b in zip(merge, merge[1:]):
        assert b.first_sample == a.last_sample + 1
    assert ann.line_times(0) == ann.first_line_time
    last = ann.line_times(ann.number_of_lines - 1)
    assert abs((last - ann.last_line_time) / np.timedelta64(1, "ms")) < 1.0


def test_rome_and_chimoio_metadata():
    rome = open_product(template_path("S1B_rome"))
    assert rome.id == ROME_ID and rome.absolute_orbit == 30148 and rome.relative_orbit == 22
    assert rome.ipf_version == "003.40"
    assert rome.date == "2021-12-23"
    # gml:coordinates are lat,lon pairs: Rome (lon 12.5, lat 42.0) must be inside
    assert rome.footprint.contains(Point(12.5, 42.0))
    assert not rome.footprint.contains(Point(42.0, 12.5))
    assert rome.annotation("VV").shape == (16705, 26102)
    chim = open_product(template_path("S1A_chimoio"))
    assert chim.id == CHIMOIO_ID and chim.relative_orbit == 79 and chim.ipf_version == "003.31"
    assert chim.footprint.contains(Point(33.6, -18.17))
    assert chim.start_time == np.datetime64("2021-01-19T03:16:53.799379", "ns")
    assert bundled_dem_path().is_file()


def test_relative_orbit_formula():
    assert relative_orbit_from_absolute("S1B", 30148) == 22
    assert relative_orbit_from_absolute("S1A", 36201) == 79
    assert relative_orbit_from_absolute("S1A", 73) == 1
    assert relative_orbit_from_absolute("S1A", 73 + 175) == 1
    assert relative_orbit_from_absolute("S1A", 72) == 175


def test_parse_product_name():
    f = parse_product_name(CHIMOIO_ID + ".zip")
    assert f["mission"] == "S1A" and f["mode"] == "IW" and f["res"] == "H"
    assert f["polarisations"] == ["VV", "VH"] and f["orbit"] == 36201
    assert parse_product_name(
        "S1C_EW_GRDM_1SDH_20250101T000000_20250101T000100_001234_00ABCD_1A2B"
    )["polarisations"] == ["HH", "HV"]
    assert parse_product_name(
        "S1A_IW_GRDH_1SSV_20210101T000000_20210101T000100_001234_00ABCD_1A2B"
    )["polarisations"] == ["VV"]
    assert parse_product_name("not_a_product.zip") is None


def test_zip_read_in_place_matches_folder(tmp_path, small_safe):
    z = _zip_safe(small_safe, tmp_path / f"{CHIMOIO_ID}.zip")
    pz, pf = open_product(z), open_product(small_safe)
    for attr in (
        "id",
        "mission",
        "polarisations",
        "start_time",
        "stop_time",
        "relative_orbit",
        "absolute_orbit",
        "ipf_version",
        "pass_direction",
    ):
        assert getattr(pz, attr) == getattr(pf, attr), attr
    assert pz.footprint.equals(pf.footprint)
    assert pz.measurement_path("VH").startswith("/vsizip/")
    assert pz.measurement_path("VH").endswith(".tiff")
    for pol in ("VV", "VH"):
        assert np.array_equal(pz.read_measurement(pol), _dn(pol))
        assert pz.annotation(pol).number_of_samples == SAMPLES
    # the shared real zip opens in place too
    shared = Path(__file__).resolve().parents[1] / "../shared/data/sentinel1" / f"{CHIMOIO_ID}.zip"
    if shared.exists():
        assert open_product(shared).calibration("VH").luts["sigmaNought"].lines[0] == 0


def test_read_measurement_window(small_safe):
    p = open_product(small_safe)
    full = p.read_measurement("VV")
    assert full.dtype == np.uint16 and full.shape == (LINES, SAMPLES)
    win = p.read_measurement("VV", window=Window(5, 3, 10, 4))  # col_off, row_off, w, h
    assert np.array_equal(win, full[3:7, 5:15])
    assert np.array_equal(p.read_measurement("VH", (0, 30, SAMPLES, 7)), _dn("VH")[30:37])
    with pytest.raises(InputError, match="outside"):
        p.read_measurement("VV", window=(50, 0, 10, 10))
    # the SAR chain's own window type, in numpy order: the same pixels as rasterio's
    pw = PixelWindow(row_off=3, col_off=5, height=4, width=10)
    assert PixelWindow.of(Window(5, 3, 10, 4)) == PixelWindow.of((5, 3, 10, 4)) == pw
    assert pw.to_rasterio() == Window(5, 3, 10, 4) and pw.shape == (4, 10) and pw.offset == (3, 5)
    assert np.array_equal(p.read_measurement("VV", window=pw), full[pw.row_slice, pw.col_slice])


def test_select_polarisations_orders_and_checks(small_safe):
    """Output band order VV, VH whatever the request's order; a polarisation the product
    lacks is an error naming the product and what it has."""
    p = open_product(small_safe)
    assert p.select_polarisations() == ["VV", "VH"]
    assert p.select_polarisations(["vh", " VV", "VH"]) == ["VV", "VH"]
    assert p.select_polarisations(["VH"]) == ["VH"]
    with pytest.raises(InputError, match="'HH' requested but the product has VV, VH"):
        p.select_polarisations(["VV", "HH"], what="the product")


def test_noise_free_product_opens_but_has_no_calibration():
    p = open_product(template_path("S1B_noisefree"))
    assert p.annotation("VH").polarisation == "VH"
    with pytest.raises(InputError, match="ECC8.*calibration"):
        p.calibration("VV")
    with pytest.raises(InputError, match="noise"):
        p.noise("VH")


def test_missing_polarisation_and_measurement():
    rome = open_product(template_path("S1B_rome"))
    with pytest.raises(InputError, match="HH not in product"):
        rome.annotation("HH")
    with pytest.raises(InputError, match="5371.*annotation file for polarisation VH"):
        rome.annotation("VH")  # listed in the manifest, absent from the folder
    with pytest.raises(InputError, match="no measurement file"):
        rome.read_measurement("VV")


def test_dimension_mismatch(tmp_path, small_safe):
    safe = tmp_path / small_safe.name
    shutil.copytree(small_safe, safe)
    ann = next((safe / "annotation").glob("s1a-iw-grd-vv-*.xml"))
    ann.write_text(
        ann.read_text().replace(
            f"<numberOfLines>{LINES}</numberOfLines>", "<numberOfLines>99</numberOfLines>"
        )
    )
    p = open_product(safe)
    with pytest.raises(InputError, match=r"measurement VV is 37x53.*annotation says 99x53"):
        p.read_measurement("VV")
    assert p.read_measurement("VH").shape == (LINES, SAMPLES)


def test_bad_inputs(tmp_path, small_safe):
    with pytest.raises(InputError, match="no such file"):
        open_product(tmp_path / "nothing.zip")
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(InputError, match="notes.txt.*neither a .SAFE folder nor a zip"):
        open_product(txt)
    # truncated zip
    z = _zip_safe(small_safe, tmp_path / f"{CHIMOIO_ID}.zip")
    cut = tmp_path / f"cut_{CHIMOIO_ID}.zip"
    cut.write_bytes(z.read_bytes()[: z.stat().st_size // 2])
    with pytest.raises(InputError, match="cut_"):
        open_product(cut)
    # corrupt zip member (bytes flipped inside the compressed manifest)
    data = bytearray(z.read_bytes())
    with zipfile.ZipFile(z) as zf:
        info = zf.getinfo(f"{CHIMOIO_ID}.SAFE/manifest.safe")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 50, start + 60):
        data[i] ^= 0xFF
    bad = tmp_path / "corrupt.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt.zip"):
        open_product(bad)
    # folder without manifest
    safe = tmp_path / "nomanifest" / small_safe.name
    shutil.copytree(small_safe, safe)
    (safe / "manifest.safe").unlink()
    with pytest.raises(InputError, match="no manifest.safe"):
        open_product(safe)
    # zip without manifest
    nm = _zip_safe(safe, tmp_path / "nomanifest.zip")
    with pytest.raises(InputError, match="nomanifest.zip.*no manifest.safe"):
        open_product(nm)
    # measurement removed
    safe2 = tmp_path / "nomeas" / small_safe.name
    shutil.copytree(small_safe, safe2)
    for f in (safe2 / "measurement").glob("*vh*"):
        f.unlink()
    p = open_product(safe2)
    assert p.has("measurement", "VV") and not p.has("measurement", "VH")
    with pytest.raises(InputError, match="no measurement file for polarisation VH"):
        p.read_measurement("VH")
    with pytest.raises(InputError, match="unknown product template"):
        template_path("S1Z_nowhere")


def test_manifest_file_locations_fallback(tmp_path, small_safe):
    """Without dataObject entries the files are still found by their standard names."""
    safe = tmp_path / small_safe.name
    shutil.copytree(small_safe, safe)
    man = safe / "manifest.safe"
    text = re.sub(r"<dataObject .*?</dataObject>", "", man.read_text(), flags=re.S)
    assert "fileLocation" not in text
    man.write_text(text)
    p = open_product(safe)
    for kind in ("annotation", "calibration", "noise", "measurement"):
        assert p.has(kind, "VV") and p.has(kind, "VH")
    assert np.array_equal(p.read_measurement("VV"), _dn("VV"))


def test_geometry_is_lazy_and_cached(monkeypatch):
    calls = []

    class FakeGeometry:
        @staticmethod
        def from_annotation(root):
            calls.append(root)
            return "geometry"

    fake = types.ModuleType("sarssl.sar.geometry")
    fake.RadarGeometry = FakeGeometry
    monkeypatch.setitem(sys.modules, "sarssl.sar.geometry", fake)
    ann = open_product(template_path("S1B_rome")).annotation("VV")
    assert calls == []
    assert ann.geometry == "geometry" and ann.geometry == "geometry"
    assert len(calls) == 1 and calls[0] is ann.root and ann.root.tag == "product"


def test_gcps():
    g = open_product(template_path("S1B_rome")).annotation("VV").gcps()
    assert len(g["line"]) == len(g["latitude"]) > 100
    assert 40 < g["latitude"].min() < g["latitude"].max() < 43
    assert 29 < g["incidence_angle"].min() < g["incidence_angle"].max() < 47
