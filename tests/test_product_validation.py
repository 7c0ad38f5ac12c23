"""Wrong or corrupt products must not enter the composites.

Product validation (:func:`sarssl.sar.safe.validate_product`: mission, IW mode, GRD type, the
name telling the truth about the manifest), measurement checksums (the manifest's MD5 and
the zip CRC-32, checked by ``sarssl preprocess`` unless ``--no-verify-checksums``) and one
product per acquisition in the catalogue (``--rejected-out`` lists what was left out).

Products are copies of the real reference products in ``../shared/data/sentinel1`` (manifest
and annotations, no measurement: enough for the catalogue) and of ``sarssl simulate``
outputs (complete zips with measurements and manifest MD5s: needed by ``preprocess``).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import shutil
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from sarssl.catalogue.builtin import build_catalogue
from sarssl.catalogue.screening import make_filters
from sarssl.cli import main
from sarssl.errors import InputError, SarsslError
from sarssl.sar import snap
from sarssl.sar.safe import TEMPLATE_NAMES, open_product, template_path

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sentinel1"
ROME = "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371"
CHIMOIO = "S1A_IW_GRDH_1SDV_20210119T031653_20210119T031718_036201_043ED0_8255"
WORLD = "-180,-90,180,90"
BBOX = "12.495,41.995,12.5,42.0"  # a small box of the Rome template (fast simulate/preprocess)
AOI = tuple(float(v) for v in BBOX.split(","))


def _filters(**kw):
    base = dict(aoi=WORLD, start="2015-01-01", end="2022-12-31")
    base.update(kw)
    return make_filters(**base)


# --------------------------------------------------------------------------------------
# building products
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> dict:
    """Four complete simulated products (zips with measurements and MD5s) and their DEM."""
    root = tmp_path_factory.mktemp("sim")
    assert (
        main(
            [
                "simulate",
                "--template",
                "S1B_rome",
                "--area",
                "valid",
                "--bbox",
                BBOX,
                "--year",
                "2021",
                "--per-season",
                "1",
                "--seed",
                "11",
                "--products-dir",
                str(root / "products"),
                "--truth-dir",
                str(root / "truth"),
            ]
        )
        == 0
    )
    zips = sorted((root / "products").glob("*.zip"))
    assert len(zips) == 4
    return {"zips": zips, "dem": root / "truth" / "dem.tif"}


def _rebuild_zip(
    src: Path, dst: Path, safe_name: str | None = None, edit=None, corrupt: str | None = None
) -> Path:
    """Copy the zipped product ``src`` to ``dst``, optionally renaming its SAFE folder,
    editing its manifest text (``edit(text) -> text``) or flipping 64 bytes in the middle of
    the member whose name contains ``corrupt`` before zipping it (so the zip CRC-32 is
    computed over the corrupt data and only the manifest MD5 can tell)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        old = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            data = zin.read(info)
            name = (safe_name or old) + info.filename[len(old) :]
            if edit is not None and info.filename.endswith("/manifest.safe"):
                data = edit(data.decode("utf-8")).encode("utf-8")
            if corrupt is not None and corrupt in info.filename and name.endswith(".tiff"):
                data = _flipped(data)
            zout.writestr(name, data, compress_type=info.compress_type)
    return dst


def _flipped(data: bytes, n: int = 64) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + n]) + data[mid + n :]


def _flip_bytes_in_zip(path: Path, member_part: str, n: int = 64) -> str:
    """Flip ``n`` bytes in the middle of a stored zip member, in place (the zip's CRC-32
    and the manifest's MD5 no longer match). Returns the member name."""
    with zipfile.ZipFile(path) as z:
        info = next(
            i for i in z.infolist() if member_part in i.filename and i.filename.endswith(".tiff")
        )
    assert info.compress_type == zipfile.ZIP_STORED
    with open(path, "r+b") as fh:
        fh.seek(info.header_offset)
        n_name, n_extra = struct.unpack("<HH", fh.read(30)[26:30])
        pos = info.header_offset + 30 + n_name + n_extra + info.file_size // 2
        fh.seek(pos)
        chunk = fh.read(n)
        fh.seek(pos)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    return info.filename


def _copy_safe(src: Path, dst: Path, edit=None) -> Path:
    shutil.copytree(src, dst)
    if edit is not None:
        m = dst / "manifest.safe"
        m.write_text(edit(m.read_text()))
    return dst


def _unzip(src: Path, dest_dir: Path) -> Path:
    with zipfile.ZipFile(src) as z:
        z.extractall(dest_dir)
        return dest_dir / z.namelist()[0].split("/")[0]


def _slc_manifest(t: str) -> str:
    return t.replace("<s1sarl1:productType>GRD<", "<s1sarl1:productType>SLC<")


def _ew_manifest(t: str) -> str:
    return t.replace("<s1sarl1:mode>IW<", "<s1sarl1:mode>EW<").replace(
        "<s1sarl1:swath>IW<", "<s1sarl1:swath>EW<"
    )


# (name change, manifest change, words the error must contain)
WRONG_TYPES = {
    "SLC name+manifest": (("_GRDH_", "_SLC__"), _slc_manifest, ["product type SLC", "GRD"]),
    "SLC manifest only": (None, _slc_manifest, ["product type SLC", "GRD"]),
    "EW name+manifest": (("_IW_GRDH_", "_EW_GRDM_"), _ew_manifest, ["mode EW", "IW"]),
    "EW name only": (("_IW_GRDH_", "_EW_GRDM_"), None, ["mode EW", "IW"]),
}


def _wrong_type_zip(sim_zip: Path, case: str, out_dir: Path) -> Path:
    rename, edit, _ = WRONG_TYPES[case]
    name = sim_zip.stem if rename is None else sim_zip.stem.replace(*rename)
    return _rebuild_zip(sim_zip, out_dir / f"{name}.zip", safe_name=f"{name}.SAFE", edit=edit)


def _rejected_csv(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _preprocess(product: Path, dem: Path, out: Path, *extra: str) -> int:
    """`sarssl preprocess` of ``product`` over :data:`BBOX` (Python chain, no filter)."""
    args = ["--dem", str(dem), "--aoi", BBOX, "--speckle-filter", "none", "--backend", "python"]
    return main(["preprocess", str(product), *args, "--out", str(out), *extra])


# --------------------------------------------------------------------------------------
# wrong product types
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_slc_and_ew_rejected_by_the_catalogue(case, sim, tmp_path, caplog):
    """SLC and EW products, whether the name or the manifest says so, never enter the
    catalogue; the reason is logged and written to --rejected-out."""
    bad = _wrong_type_zip(sim["zips"][0], case, tmp_path / "in")
    good = shutil.copy(sim["zips"][1], tmp_path / "in")
    with caplog.at_level(logging.WARNING, logger="sarssl.catalogue.screening"):
        table, excluded = build_catalogue([tmp_path / "in"], _filters())
    assert list(table.path) == [str(good)], f"{case} product kept"
    reason = dict(excluded)[str(bad)]
    for word in WRONG_TYPES[case][2]:
        assert word in reason and word in caplog.text
    out, rej = tmp_path / "cat.csv", tmp_path / "rejected.csv"
    assert (
        main(
            [
                "catalogue",
                str(tmp_path / "in"),
                f"--aoi={WORLD}",
                "--start",
                "2015-01-01",
                "--end",
                "2022-12-31",
                "--out",
                str(out),
                "--rejected-out",
                str(rej),
            ]
        )
        == 0
    )
    rows = _rejected_csv(rej)
    assert [(r["path"], r["product_id"]) for r in rows] == [(str(bad), bad.stem)]
    assert all(word in rows[0]["reason"] for word in WRONG_TYPES[case][2])


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_slc_and_ew_rejected_by_preprocess(case, sim, tmp_path, capsys):
    """`sarssl preprocess` refuses them before any work (it used to process them as IW GRD
    with exit status 0), also with --no-verify-checksums (only the MD5 is skipped)."""
    bad = _wrong_type_zip(sim["zips"][0], case, tmp_path)
    for extra in ([], ["--no-verify-checksums"]):
        out = tmp_path / "scene.tif"
        rc = _preprocess(bad, sim["dem"], out, *extra)
        err = capsys.readouterr().err
        assert rc == 2, (case, extra)
        assert str(bad) in err and all(word in err for word in WRONG_TYPES[case][2]), err
        assert not out.exists() and not out.with_name("scene.mask.tif").exists()


def test_snap_backend_validates_the_product_before_snap(sim, tmp_path, monkeypatch):
    """The SNAP backend runs the same validation and checksums before handing the product
    to SNAP (pyroSAR is faked here: its geocode must never be reached)."""
    calls = []
    fake = types.ModuleType("pyroSAR")
    fake_snap = types.ModuleType("pyroSAR.snap")
    fake_util = types.ModuleType("pyroSAR.snap.util")
    fake_util.geocode = lambda **kw: calls.append(kw)
    fake.snap, fake_snap.util = fake_snap, fake_util
    monkeypatch.setitem(sys.modules, "pyroSAR", fake)
    monkeypatch.setitem(sys.modules, "pyroSAR.snap", fake_snap)
    monkeypatch.setitem(sys.modules, "pyroSAR.snap.util", fake_util)
    slc = _wrong_type_zip(sim["zips"][0], "SLC manifest only", tmp_path / "slc")
    with pytest.raises(InputError, match="product type SLC"):
        snap.preprocess_snap(slc, sim["dem"], tmp_path / "a.tif", aoi=AOI)
    corrupt = _rebuild_zip(sim["zips"][0], tmp_path / "bad" / sim["zips"][0].name, corrupt="-vv-")
    with pytest.raises(InputError, match="checksum"):
        snap.preprocess_snap(corrupt, sim["dem"], tmp_path / "b.tif", aoi=AOI)
    assert calls == []


# --------------------------------------------------------------------------------------
# corrupt measurements
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["zip member", "zip rebuilt", "SAFE folder"])
def test_flipped_bytes_in_a_measurement_are_caught(where, sim, tmp_path, capsys):
    """64 flipped bytes in the VV measurement: in a zip member (the zip CRC-32 and the MD5
    disagree), in a zip rebuilt from the corrupt file (valid CRC: only the manifest MD5
    tells) and in an unpacked SAFE folder (MD5). The error names the file and 'checksum'."""
    src = sim["zips"][2]
    if where == "zip member":
        product = Path(shutil.copy(src, tmp_path / src.name))
        member = _flip_bytes_in_zip(product, "-vv-")
    elif where == "zip rebuilt":
        product = _rebuild_zip(src, tmp_path / src.name, corrupt="-vv-")
        member = next(
            n for n in zipfile.ZipFile(product).namelist() if "-vv-" in n and n.endswith(".tiff")
        )
    else:
        product = _unzip(src, tmp_path / "unzipped")
        tif = next((product / "measurement").glob("*-vv-*.tiff"))
        tif.write_bytes(_flipped(tif.read_bytes()))
        member = tif.name
    out = tmp_path / "scene.tif"
    rc = _preprocess(product, sim["dem"], out)
    err = capsys.readouterr().err
    assert rc == 2, f"corrupt measurement ({where}) was processed"
    assert "checksum" in err and Path(member).name in err and str(product) in err, err
    assert not out.exists()


def test_no_verify_checksums_skips_only_the_md5(sim, tmp_path, monkeypatch):
    """--no-verify-checksums skips the MD5 (and the full read of each measurement it needs),
    nothing else: the type check stays (see test_slc_and_ew_rejected_by_preprocess) and so
    does the size check against the manifest. On a valid product both runs give the same
    output."""
    from sarssl.sar import safe

    hashed: list[int] = []
    real_md5 = hashlib.md5

    def spy(*a, **kw):
        hashed.append(1)
        return real_md5(*a, **kw)

    monkeypatch.setattr(safe.hashlib, "md5", spy)
    product = sim["zips"][3]
    a, b = tmp_path / "verified.tif", tmp_path / "fast.tif"
    assert _preprocess(product, sim["dem"], a) == 0
    assert len(hashed) == 2  # VV and VH measurements
    hashed.clear()
    assert _preprocess(product, sim["dem"], b, "--no-verify-checksums") == 0
    assert hashed == []
    with rasterio.open(a) as da, rasterio.open(b) as db:
        np.testing.assert_array_equal(da.read(), db.read())
    # the corrupt (CRC-consistent) product passes the fast check and fails the full one
    corrupt = _rebuild_zip(product, tmp_path / "bad" / product.name, corrupt="-vv-")
    prod = open_product(corrupt)
    safe.check_measurements(prod, ["VV", "VH"], verify_checksums=False)
    with pytest.raises(InputError, match="MD5 checksum"):
        safe.check_measurements(prod, ["VV", "VH"], verify_checksums=True)
    # a measurement of another size than the manifest says fails even without the MD5
    manifest = prod.read_member("manifest.safe").decode()
    rel = prod.files[("measurement", "VV")]
    size = len(prod.read_member(rel))
    truncated = _rebuild_zip(
        product,
        tmp_path / "short" / product.name,
        edit=lambda t: t.replace(f'size="{size}"', f'size="{size + 1}"'),
    )
    assert f'size="{size}"' in manifest
    with pytest.raises(InputError, match="bytes, the manifest says"):
        safe.check_measurements(open_product(truncated), ["VV"], verify_checksums=False)


# --------------------------------------------------------------------------------------
# names that disagree with the manifest
# --------------------------------------------------------------------------------------


def test_renamed_products_are_rejected(sim, tmp_path, capsys):
    """A zip renamed to another product's name (its SAFE folder inside unchanged) and a
    SAFE folder renamed to another acquisition are rejected by the catalogue and by
    preprocess, naming the file and the mismatch."""
    a, b = sim["zips"][0], sim["zips"][1]
    (tmp_path / "in").mkdir()
    renamed_zip = Path(shutil.copy(a, tmp_path / "in" / b.name))
    other = ROME.replace(
        "20211223T051122_20211223T051147_030148", "20211229T051122_20211229T051147_030235"
    )
    renamed_safe = _copy_safe(SHARED / f"{ROME}.SAFE", tmp_path / "in" / f"{other}.SAFE")
    table, excluded = build_catalogue([tmp_path / "in"], _filters())
    assert table.empty, list(table.product_id)
    reasons = dict(excluded)
    assert "disagrees" in reasons[str(renamed_zip)] and a.stem in reasons[str(renamed_zip)]
    assert "start time" in reasons[str(renamed_safe)] and "orbit" in reasons[str(renamed_safe)]
    rej = tmp_path / "rejected.csv"
    rc = main(
        [
            "catalogue",
            str(tmp_path / "in"),
            f"--aoi={WORLD}",
            "--start",
            "2015-01-01",
            "--end",
            "2022-12-31",
            "--out",
            str(tmp_path / "cat.csv"),
            "--rejected-out",
            str(rej),
        ]
    )
    assert rc == 2 and "no product kept" in capsys.readouterr().err
    assert sorted(r["path"] for r in _rejected_csv(rej)) == sorted(
        [str(renamed_zip), str(renamed_safe)]
    )
    out = tmp_path / "scene.tif"
    rc = _preprocess(renamed_zip, sim["dem"], out)
    err = capsys.readouterr().err
    assert rc == 2 and str(renamed_zip) in err and "disagrees" in err, err
    assert not out.exists()


# --------------------------------------------------------------------------------------
# one product per acquisition
# --------------------------------------------------------------------------------------


def _reprocessed(t: str) -> str:
    """The Chimoio manifest as if the acquisition had been reprocessed in 2023 by a newer
    IPF (the slice start moves by a few milliseconds, as between processor versions)."""
    t = t.replace(
        'start="2021-01-22T17:21:57.444404" stop="2021-01-22T17:31:27.000000"',
        'start="2023-06-10T08:00:00.000000" stop="2023-06-10T08:09:30.000000"',
    )
    assert "2023-06-10T08:09:30" in t
    t = t.replace('version="003.31"', 'version="003.61"')
    return t.replace("2021-01-19T03:16:53.799379", "2021-01-19T03:16:53.812345")


@pytest.fixture
def four_copies(tmp_path) -> dict[str, Path]:
    """One acquisition (the real Chimoio product) four times: the zip, the unpacked SAFE,
    a 2023 reprocessing (other unique id, newer processing time and IPF) and a copy whose
    zip and SAFE folder carry another unique id."""
    src_zip = SHARED / f"{CHIMOIO}.zip"
    d = tmp_path / "copies"
    (d / "a").mkdir(parents=True)
    zipped = shutil.copy(src_zip, d / "a" / src_zip.name)
    unpacked = _unzip(src_zip, d / "b")
    repro_name = CHIMOIO[:-4] + "9F3A"
    repro = _copy_safe(unpacked, d / "c" / f"{repro_name}.SAFE", edit=_reprocessed)
    other_name = CHIMOIO[:-4] + "0BAD"
    other = _rebuild_zip(src_zip, d / "d" / f"{other_name}.zip", safe_name=f"{other_name}.SAFE")
    return {"zip": Path(zipped), "safe": unpacked, "reprocessed": repro, "renamed": other}


def test_four_copies_of_one_acquisition_keep_one(four_copies, tmp_path, caplog):
    """The newest processing wins whatever the order the products are given in; the other
    three are rejected as 'duplicate of <kept>' in the log and in --rejected-out. Between
    identical copies the first path given wins."""
    c = four_copies
    given = [c["zip"], c["safe"], c["reprocessed"], c["renamed"]]
    for order in (given, given[::-1]):
        with caplog.at_level(logging.WARNING, logger="sarssl.catalogue.screening"):
            table, excluded = build_catalogue(order, _filters())
        assert list(table.path) == [str(c["reprocessed"])]
        assert sorted(excluded) == sorted(
            (str(p), f"duplicate of {c['reprocessed']}") for p in given if p != c["reprocessed"]
        )
        assert caplog.text.count("duplicate product") >= 3
    rej = tmp_path / "out" / "rejected.csv"
    out = tmp_path / "out" / "cat.csv"
    assert (
        main(
            [
                "catalogue",
                *map(str, given),
                f"--aoi={WORLD}",
                "--start",
                "2021-01-01",
                "--end",
                "2021-12-31",
                "--out",
                str(out),
                "--rejected-out",
                str(rej),
            ]
        )
        == 0
    )
    rows = _rejected_csv(rej)
    assert list(rows[0]) == ["path", "product_id", "reason"]
    assert {r["path"]: r["reason"] for r in rows} == {
        str(p): f"duplicate of {c['reprocessed']}" for p in given if p != c["reprocessed"]
    }
    assert {r["product_id"] for r in rows} == {CHIMOIO, CHIMOIO[:-4] + "0BAD"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["cat.csv", "rejected.csv"]
    # identical copies (same manifest: same processing time and IPF): the first given wins,
    # as before this rule
    for first, second in ((c["zip"], c["safe"]), (c["safe"], c["zip"])):
        table, excluded = build_catalogue([first, second], _filters())
        assert list(table.path) == [str(first)]
        assert excluded == [(str(second), f"duplicate of {first}")]


def test_rejected_out_is_written_even_when_empty(tmp_path):
    out, rej = tmp_path / "cat.csv", tmp_path / "rej" / "rejected.csv"
    assert (
        main(
            [
                "catalogue",
                str(SHARED / f"{ROME}.SAFE"),
                f"--aoi={WORLD}",
                "--start",
                "2021-01-01",
                "--end",
                "2021-12-31",
                "--out",
                str(out),
                "--rejected-out",
                str(rej),
            ]
        )
        == 0
    )
    assert rej.read_text().splitlines() == ["path,product_id,reason"]
    assert [p.name for p in rej.parent.iterdir()] == ["rejected.csv"]  # no temporary left


def test_pyrosar_backend_ingests_only_valid_unique_products(
    four_copies, sim, tmp_path, monkeypatch
):
    """--backend pyrosar applies the same validation and the same one-per-acquisition rule
    before anything reaches the scene database (the pyroSAR worker is faked here)."""
    from sarssl.catalogue import archive

    seen = {}

    def fake_run(db, products, queries):
        seen["products"] = list(products)
        report = archive.IngestReport(
            inserted=list(products),
            duplicates=[],
            registered_before=[],
            failed=[],
            dropped_missing=[],
            size=(len(products), 0),
        )
        return report, [list(products) for _ in queries]

    monkeypatch.setattr(archive, "_run", fake_run)
    c = four_copies
    slc = _wrong_type_zip(sim["zips"][0], "SLC manifest only", tmp_path / "slc")
    given = [c["zip"], c["safe"], c["reprocessed"], c["renamed"], slc]
    rejected: list = []
    table, excluded = archive.build_catalogue_pyrosar(
        given, _filters(), tmp_path / "s.db", rejected=rejected
    )
    assert seen["products"] == [str(c["reprocessed"].resolve())]
    assert list(table.path) == [str(c["reprocessed"])]
    reasons = dict(excluded)
    assert "product type SLC" in reasons[str(slc)]
    assert {p for p, r in excluded if r == f"duplicate of {c['reprocessed']}"} == {
        str(c["zip"]),
        str(c["safe"]),
        str(c["renamed"]),
    }
    assert sorted(r.path for r in rejected) == sorted(
        str(p) for p in given if p != c["reprocessed"]
    )
    # the database answers with an older processing it holds from an earlier ingest: it
    # stands for the product kept for that acquisition
    monkeypatch.setattr(
        archive,
        "_run",
        lambda db, products, queries: (
            fake_run(db, products, queries)[0],
            [[str(c["zip"].resolve())] for _ in queries],
        ),
    )
    table, _ = archive.build_catalogue_pyrosar(given, _filters(), tmp_path / "s.db")
    assert list(table.path) == [str(c["reprocessed"])]
    # no products given (the whole database): what it selects is screened the same way
    held = [str(Path(p).resolve()) for p in given]
    monkeypatch.setattr(
        archive, "_run", lambda db, products, queries: (None, [list(held) for _ in queries])
    )
    rejected = []
    table, excluded = archive.build_catalogue_pyrosar(
        [], _filters(), tmp_path / "s.db", rejected=rejected
    )
    assert list(table.path) == [str(c["reprocessed"].resolve())]
    # (the zip and the SAFE folder of one name are one scene to the database)
    assert len(rejected) == 3 and "product type SLC" in dict(excluded)[str(slc.resolve())]


# --------------------------------------------------------------------------------------
# valid products stay valid
# --------------------------------------------------------------------------------------


def test_real_and_simulated_products_pass(sim):
    """The four real reference products, the bundled templates and simulated products are
    valid; simulated measurements match their manifest MD5s."""
    from sarssl.sar.safe import check_measurements, validate_product

    paths = sorted(SHARED.iterdir()) + [template_path(n) for n in TEMPLATE_NAMES] + sim["zips"]
    for p in paths:
        validate_product(open_product(p))
    for z in sim["zips"]:
        prod = open_product(z)
        check_measurements(prod, ["VV", "VH"], verify_checksums=True)


def test_validation_errors_name_every_mismatch(tmp_path):
    """A folder named for another acquisition of another mission: every disagreeing field
    is listed, with the file."""
    from sarssl.sar.safe import InvalidProductError, validate_product

    other = "S1A_IW_GRDH_1SDV_20211223T061122_20211223T061147_030149_039993_5371"
    p = _copy_safe(SHARED / f"{ROME}.SAFE", tmp_path / f"{other}.SAFE")
    with pytest.raises(SarsslError, match="platform S1B disagrees"):
        validate_product(open_product(p))  # open_product itself refuses another mission
    other = other.replace("S1A_", "S1B_")
    p = _copy_safe(SHARED / f"{ROME}.SAFE", tmp_path / f"{other}.SAFE")
    with pytest.raises(InvalidProductError) as err:
        validate_product(open_product(p))
    msg = str(err.value)
    assert str(p) in msg and "start time" in msg and "stop time" in msg and "absolute orbit" in msg
    assert "30149" in msg and "30148" in msg and len(err.value.problems) == 3
