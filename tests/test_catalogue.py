"""The scene catalogue (sarssl catalogue) on the bundled real product metadata."""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from shapely import wkt

from sarssl.catalogue.builtin import build_catalogue
from sarssl.catalogue.screening import find_products, make_filters
from sarssl.catalogue.table import COLUMNS
from sarssl.cli import main
from sarssl.errors import InputError, SarsslError
from sarssl.sar.safe import template_path

ROME = "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371"
CHIMOIO = "S1A_IW_GRDH_1SDV_20210119T031653_20210119T031718_036201_043ED0_8255"
NORTH = "S1B_IW_GRDH_1SDV_20210401T052623_20210401T052648_026269_032297_ECC8"
ASC = "S1B_IW_GRDH_1SDV_20211229T170000_20211229T170025_030243_039999_AAAA"
ROME_AOI = "12.46,41.96,12.54,42.04"
WORLD = "-180,-90,180,90"


def _zip(safe: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(safe.rglob("*")):
            zf.write(f, Path(safe.name) / f.relative_to(safe))
    return out


@pytest.fixture(scope="module")
def products(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("products")
    shutil.copytree(template_path("S1B_rome"), d / f"{ROME}.SAFE")
    shutil.copytree(template_path("S1B_noisefree"), d / "sub" / f"{NORTH}.SAFE")
    _zip(template_path("S1A_chimoio"), d / f"{CHIMOIO}.zip")
    # an ascending-pass variant of the Rome product (another date, orbit and id)
    asc = d / f"{ASC}.SAFE"
    shutil.copytree(template_path("S1B_rome"), asc)
    m = (asc / "manifest.safe").read_text()
    m = m.replace("<s1:pass>DESCENDING</s1:pass>", "<s1:pass>ASCENDING</s1:pass>")
    m = m.replace("2021-12-23T05:11:22.594441", "2021-12-29T17:00:00.000000")
    m = m.replace("2021-12-23T05:11:47.593146", "2021-12-29T17:00:25.000000")
    m = m.replace('"start">30148<', '"start">30243<').replace('"stop">30148<', '"stop">30243<')
    m = m.replace('relativeOrbitNumber type="start">22<', 'relativeOrbitNumber type="start">117<')
    (asc / "manifest.safe").write_text(m)
    (d / "broken.zip").write_bytes(b"PK\x03\x04 this is not a whole zip")
    return d


def _filters(**kw):
    base = dict(aoi=WORLD, start="2021-01-01", end="2021-12-31")
    base.update(kw)
    return make_filters(**base)


def test_find_products(products):
    found = find_products([products])
    names = sorted(p.name for p in found)
    assert names == sorted(
        [f"{ROME}.SAFE", f"{NORTH}.SAFE", f"{CHIMOIO}.zip", f"{ASC}.SAFE", "broken.zip"]
    )
    with pytest.raises(InputError, match="nowhere"):
        find_products([products / "nowhere"])


def test_aoi_filter_and_columns(products):
    table, excluded = build_catalogue([products], _filters(aoi=ROME_AOI))
    assert list(table.columns) == COLUMNS
    assert set(table.product_id) == {ROME, ASC}
    row = table.set_index("product_id").loc[ROME]
    assert row.path == str(products / f"{ROME}.SAFE")
    assert row.mission == "S1B" and row.date == "2021-12-23"
    assert row.start_time == "2021-12-23T05:11:22.594441Z"
    assert row.pass_direction == "DESCENDING" and row.relative_orbit == 22
    assert row.absolute_orbit == 30148 and row.polarisations == "VV+VH"
    assert row.ipf_version == "003.40"
    assert wkt.loads(row.footprint_wkt).contains(wkt.loads("POINT (12.5 42)"))
    reasons = dict(excluded)
    assert "does not intersect" in reasons[str(products / f"{CHIMOIO}.zip")]
    assert reasons[str(products / "broken.zip")].startswith("unreadable")
    assert table.start_time.is_monotonic_increasing


def test_date_direction_orbit_polarisation_filters(products):
    t, _ = build_catalogue([products], _filters(start="2021-12-23", end="2021-12-23"))
    assert list(t.product_id) == [ROME]  # both ends inclusive
    t, _ = build_catalogue([products], _filters(start="2021-01-01", end="2021-06-30"))
    assert list(t.product_id) == [CHIMOIO, NORTH]
    t, _ = build_catalogue([products], _filters(orbit_direction="ascending"))
    assert list(t.product_id) == [ASC]
    t, _ = build_catalogue([products], _filters(orbit_direction="descending"))
    assert set(t.product_id) == {ROME, CHIMOIO, NORTH}
    t, ex = build_catalogue([products], _filters(relative_orbits="79,168"))
    assert list(t.product_id) == [CHIMOIO, NORTH]
    assert any("relative orbit 22 not in [79, 168]" in r for _, r in ex)
    t, ex = build_catalogue([products], _filters(polarisations="VV,VH"))
    assert len(t) == 4
    t, ex = build_catalogue([products], _filters(polarisations="HH"))
    assert t.empty and any("lacks polarisation HH" in r for _, r in ex)


def test_duplicates_kept_once(products, tmp_path, caplog):
    safe = tmp_path / f"{CHIMOIO}.SAFE"
    shutil.copytree(template_path("S1A_chimoio"), safe)
    with caplog.at_level(logging.WARNING, logger="sarssl.catalogue.screening"):
        t, ex = build_catalogue([products / f"{CHIMOIO}.zip", safe], _filters())
    assert list(t.product_id) == [CHIMOIO] and t.path[0].endswith(".zip")
    assert ex == [(str(safe), f"duplicate of {products / f'{CHIMOIO}.zip'}")]
    assert "duplicate product" in caplog.text


def test_bad_filters():
    with pytest.raises(SarsslError, match="bounding box"):
        make_filters("1,2,3", "2021-01-01", "2021-02-01")
    with pytest.raises(SarsslError, match="before --start"):
        make_filters(WORLD, "2021-03-01", "2021-02-01")
    with pytest.raises(SarsslError, match="orbit-direction"):
        make_filters(WORLD, "2021-01-01", "2021-02-01", orbit_direction="sideways")
    with pytest.raises(SarsslError, match="1..175"):
        make_filters(WORLD, "2021-01-01", "2021-02-01", relative_orbits="0,200")
    with pytest.raises(SarsslError, match="expected a date"):
        make_filters(WORLD, "January", "2021-02-01")


def test_cli_writes_csv_and_fails_clearly(products, tmp_path, capsys):
    out = tmp_path / "cat" / "rome.csv"
    rc = main(
        [
            "catalogue",
            str(products),
            "--aoi",
            ROME_AOI,
            "--start",
            "2021-01-01",
            "--end",
            "2021-12-31",
            "--orbit-direction",
            "descending",
            "--polarisations",
            "VV,VH",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table.product_id) == [ROME] and list(table.columns) == COLUMNS
    assert [p.name for p in out.parent.iterdir()] == ["rome.csv"]  # no temporary left
    none = tmp_path / "none.csv"
    rc = main(
        [
            "catalogue",
            str(products),
            "--aoi",
            ROME_AOI,
            "--start",
            "2020-01-01",
            "--end",
            "2020-12-31",
            "--out",
            str(none),
        ]
    )
    assert rc == 2 and not none.exists()
    err = capsys.readouterr().err
    assert "no product kept" in err and "AOI 12.46,41.96,12.54,42.04" in err
    assert "dates 2020-01-01..2020-12-31" in err
