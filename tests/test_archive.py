"""Scene catalogue through pyroSAR's Archive (sarssl.catalogue.archive,
`catalogue --backend pyrosar`).

The products are the bundled real product templates (SAFE folders, one zipped, one
re-dated to an ascending pass), so the test needs nothing outside the repository. The
pyroSAR environment (`.venv-pyrosar`, built by tools/pyrosar-env.sh; `make test` builds
it) must exist, else the database tests are skipped with the reason, or fail when
SARSSL_REQUIRE_PYROSAR=1.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from shapely.geometry import box

from sarssl.catalogue import archive
from sarssl.catalogue.archive import (
    Database,
    build_catalogue_pyrosar,
    build_catalogues_pyrosar,
    ingest,
    parse_db,
    select,
)
from sarssl.catalogue.builtin import build_catalogue
from sarssl.catalogue.screening import make_filters
from sarssl.catalogue.table import COLUMNS
from sarssl.cli import main
from sarssl.errors import SarsslError
from sarssl.sar.safe import open_product, template_path

ROME = "S1B_IW_GRDH_1SDV_20211223T051122_20211223T051147_030148_039993_5371"
CHIMOIO = "S1A_IW_GRDH_1SDV_20210119T031653_20210119T031718_036201_043ED0_8255"
NORTH = "S1B_IW_GRDH_1SDV_20210401T052623_20210401T052648_026269_032297_ECC8"
ASC = "S1B_IW_GRDH_1SDV_20211229T170000_20211229T170025_030243_039999_AAAA"
ROME_AOI = "12.46,41.96,12.54,42.04"
WORLD = "-180,-90,180,90"
ENV_SCRIPT = archive.REPO_ROOT / "tools" / "pyrosar-env.sh"


def _pyrosar_ready() -> tuple[bool, str]:
    if os.environ.get("SARSSL_PYROSAR_PYTHON"):
        return True, ""
    if not ENV_SCRIPT.is_file():
        return False, f"{ENV_SCRIPT} missing"
    rc = subprocess.run(["bash", str(ENV_SCRIPT), "--check"], capture_output=True).returncode
    if rc != 0:
        return False, f"pyroSAR environment not built: run {ENV_SCRIPT} (or `make test`)"
    return True, ""


@pytest.fixture(scope="module")
def pyrosar():
    ok, why = _pyrosar_ready()
    if not ok:
        if os.environ.get("SARSSL_REQUIRE_PYROSAR") == "1":
            pytest.fail(why)
        pytest.skip(why)


def _zip(safe: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(safe.rglob("*")):
            zf.write(f, Path(safe.name) / f.relative_to(safe))
    return out


@pytest.fixture(scope="module")
def products(tmp_path_factory) -> Path:
    """Four real products (Rome descending, Rome re-dated ascending, the S1B 2021-04-01
    product, Chimoio zipped) and a broken zip."""
    d = tmp_path_factory.mktemp("products")
    shutil.copytree(template_path("S1B_rome"), d / f"{ROME}.SAFE")
    shutil.copytree(template_path("S1B_noisefree"), d / "sub" / f"{NORTH}.SAFE")
    _zip(template_path("S1A_chimoio"), d / f"{CHIMOIO}.zip")
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


# Filter sets covering every query dimension; both ends of the date range are inclusive.
CASES = {
    "rome aoi": dict(aoi=ROME_AOI),
    "world": dict(),
    "one day": dict(start="2021-12-23", end="2021-12-23"),
    "day after": dict(start="2021-12-24", end="2021-12-31"),
    "first half": dict(start="2021-01-01", end="2021-06-30"),
    "ascending": dict(orbit_direction="ascending"),
    "descending rome": dict(aoi=ROME_AOI, orbit_direction="descending"),
    "orbits 79,168": dict(relative_orbits="79,168"),
    "orbit 22": dict(relative_orbits="22"),
    "vv+vh": dict(polarisations="VV,VH"),
    "hh": dict(polarisations="HH"),
    "2020": dict(start="2020-01-01", end="2020-12-31"),
}


# --------------------------------------------------------------------------------------
# no pyroSAR needed
# --------------------------------------------------------------------------------------


def test_parse_db(tmp_path, monkeypatch):
    db = parse_db(tmp_path / "new" / "scenes.db")
    assert db.kind == "sqlite" and db.path == (tmp_path / "new" / "scenes.db").resolve()
    assert db.path.parent.is_dir()  # folder created for the new database
    monkeypatch.setenv("PGPASSWORD", "s3cret")
    pg = parse_db("postgresql://alice@db.example:5433/scenes")
    assert (pg.kind, pg.user, pg.host, pg.port, pg.name) == (
        "postgresql",
        "alice",
        "db.example",
        5433,
        "scenes",
    )
    assert pg.password == "s3cret" and "s3cret" not in pg.describe() + repr(pg)
    assert parse_db("postgresql://bob:pw@host/db").password == "pw"


def test_bad_db_paths_are_clear(tmp_path):
    with pytest.raises(SarsslError, match="is a directory"):
        parse_db(tmp_path)
    with pytest.raises(SarsslError, match="needs an extension"):
        parse_db(tmp_path / "scenes")
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    with pytest.raises(SarsslError, match=r"junk\.db: exists but is not a SQLite database"):
        parse_db(junk)
    with pytest.raises(SarsslError, match="unsupported database URL scheme 'mysql'"):
        parse_db("mysql://u@h/db")
    with pytest.raises(SarsslError, match="no database name"):
        parse_db("postgresql://u@h:5432/")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SarsslError, match="cannot create folder"):
        parse_db(blocker / "sub" / "scenes.db")


def test_missing_environment_is_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("SARSSL_PYROSAR_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(SarsslError, match="SARSSL_PYROSAR_PYTHON=.*no executable Python"):
        archive.pyrosar_python()
    monkeypatch.delenv("SARSSL_PYROSAR_PYTHON")
    monkeypatch.setattr(archive, "REPO_ROOT", tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SarsslError, match="pyroSAR environment not found.*pyrosar-env.sh"):
        archive.pyrosar_python()


def test_cli_option_checks(products, tmp_path, capsys):
    base = [
        "catalogue",
        "--aoi",
        ROME_AOI,
        "--start",
        "2021-01-01",
        "--end",
        "2021-12-31",
        "--out",
        str(tmp_path / "x.csv"),
    ]
    assert main(base + [str(products), "--backend", "pyrosar"]) == 2
    assert "--backend pyrosar needs --db" in capsys.readouterr().err
    assert main(base + [str(products), "--db", str(tmp_path / "s.db")]) == 2
    assert "--db is only used with --backend pyrosar" in capsys.readouterr().err
    assert main(base) == 2
    assert "no PRODUCT_OR_DIR given" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


# --------------------------------------------------------------------------------------
# SpatiaLite
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sqlite_db(pyrosar, tmp_path_factory) -> Database:
    return parse_db(tmp_path_factory.mktemp("db") / "scenes.db")


def test_ingest_is_idempotent_and_keeps_duplicates_apart(pyrosar, products, tmp_path):
    db = tmp_path / "scenes.sqlite"
    paths = [
        products / f"{ROME}.SAFE",
        products / "sub" / f"{NORTH}.SAFE",
        products / f"{CHIMOIO}.zip",
        products / f"{ASC}.SAFE",
        products / "broken.zip",
    ]
    rep = ingest(paths, db)
    assert sorted(Path(p).name for p in rep.inserted) == sorted(p.name for p in paths[:4])
    assert [Path(p).name for p, _ in rep.failed] == ["broken.zip"]
    assert rep.size == (4, 0) and not rep.duplicates and not rep.registered_before
    # SpatiaLite file with pyroSAR's tables, footprint envelopes in EPSG:4326
    con = sqlite3.connect(db)
    rows = dict(con.execute("SELECT scene, orbitNumber_rel FROM data").fetchall())
    assert rows[str((products / f"{ASC}.SAFE").resolve())] == 117
    assert con.execute(
        "SELECT srid FROM geometry_columns WHERE f_table_name='data'"
    ).fetchone() == (4326,)
    con.close()
    # again, plus the same acquisition unzipped elsewhere: a duplicate, not a new scene
    safe = tmp_path / "copy" / f"{CHIMOIO}.SAFE"
    shutil.copytree(template_path("S1A_chimoio"), safe)
    again = ingest(paths[:4] + [safe], db)
    assert not again.inserted and len(again.registered_before) == 4
    assert again.duplicates == [str(safe)] and again.size == (4, 1)
    # a registered product that disappeared is dropped on the next ingest
    gone = tmp_path / "gone" / f"{NORTH}.SAFE"
    shutil.copytree(template_path("S1B_noisefree"), gone)
    db2 = tmp_path / "two.db"
    assert ingest([gone, products / f"{ROME}.SAFE"], db2).size == (2, 0)
    shutil.rmtree(gone)
    rep2 = ingest([products / "sub" / f"{NORTH}.SAFE"], db2)
    assert rep2.dropped_missing == [str(gone)] and rep2.inserted and rep2.size == (2, 0)


def test_backends_select_the_same_products(pyrosar, products, sqlite_db):
    filters = [_filters(**kw) for kw in CASES.values()]
    t0 = time.perf_counter()
    results = build_catalogues_pyrosar([products], filters, sqlite_db)
    wall = time.perf_counter() - t0
    assert wall < 30, f"{len(filters)} queries took {wall:.1f} s"
    for name, f, (table, excluded) in zip(CASES, filters, results):
        expected, _ = build_catalogue([products], f)
        assert list(table.columns) == COLUMNS
        # identical tables: same products, same paths, same metadata
        pd.testing.assert_frame_equal(table, expected, obj=name)
        reasons = dict(excluded)
        assert reasons[str(products / "broken.zip")].startswith("unreadable"), name
        assert len(table) + len(excluded) == 5, name
    by_name = {n: set(t.product_id) for n, (t, _) in zip(CASES, results)}
    # the cases really exercise each filter
    assert by_name["rome aoi"] == {ROME, ASC}
    assert by_name["world"] == {ROME, ASC, NORTH, CHIMOIO}
    assert by_name["one day"] == {ROME}
    assert by_name["day after"] == {ASC}
    assert by_name["first half"] == {CHIMOIO, NORTH}
    assert by_name["ascending"] == {ASC}
    assert by_name["descending rome"] == {ROME}
    assert by_name["orbits 79,168"] == {CHIMOIO, NORTH}
    assert by_name["orbit 22"] == {ROME}
    assert by_name["hh"] == set() and by_name["2020"] == set()


def test_footprint_refines_the_envelope_query(pyrosar, products, sqlite_db):
    """pyroSAR indexes footprint envelopes: an AOI in the envelope's corner but off the
    footprint comes back from the database and is removed by the footprint test."""
    rome = open_product(products / f"{ROME}.SAFE").footprint
    others = [
        open_product(p).footprint
        for p in (products / "sub" / f"{NORTH}.SAFE", products / f"{CHIMOIO}.zip")
    ]
    corner = box(*rome.bounds).difference(rome.buffer(0.05))
    for other in others:
        corner = corner.difference(other.buffer(0.05))
    pt = corner.representative_point()
    aoi = (pt.x - 0.01, pt.y - 0.01, pt.x + 0.01, pt.y + 0.01)
    f = _filters(aoi=",".join(map(str, aoi)), orbit_direction="descending")
    table, excluded = build_catalogue_pyrosar([products / f"{ROME}.SAFE"], f, sqlite_db)
    assert table.empty
    assert excluded == [(str(products / f"{ROME}.SAFE"), "footprint does not intersect the AOI")]
    raw = select(sqlite_db, f)  # the database's own answer, before the footprint test
    assert str((products / f"{ROME}.SAFE").resolve()) in raw
    assert build_catalogue([products / f"{ROME}.SAFE"], f)[0].empty


def test_cli_pyrosar_backend(pyrosar, products, tmp_path, capsys):
    db = tmp_path / "cat" / "scenes.db"
    args = [
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
    ]
    out_b, out_p = tmp_path / "builtin.csv", tmp_path / "cat" / "rome.csv"
    assert main(["catalogue", str(products), *args, "--out", str(out_b)]) == 0
    assert (
        main(
            [
                "catalogue",
                str(products),
                *args,
                "--out",
                str(out_p),
                "--backend",
                "pyrosar",
                "--db",
                str(db),
            ]
        )
        == 0
    )
    pd.testing.assert_frame_equal(pd.read_csv(out_p), pd.read_csv(out_b))
    assert list(pd.read_csv(out_p).product_id) == [ROME]
    assert sorted(p.name for p in out_p.parent.iterdir()) == ["rome.csv", "scenes.db"]
    # no products: the whole database is queried (paths as registered)
    out_all = tmp_path / "all.csv"
    assert (
        main(
            [
                "catalogue",
                f"--aoi={WORLD}",
                "--start",
                "2021-01-01",
                "--end",
                "2021-12-31",
                "--out",
                str(out_all),
                "--backend",
                "pyrosar",
                "--db",
                str(db),
            ]
        )
        == 0
    )
    table = pd.read_csv(out_all)
    assert set(table.product_id) == {ROME, ASC, NORTH, CHIMOIO}
    assert set(table.path) == {
        str(p.resolve())
        for p in (
            products / f"{ROME}.SAFE",
            products / f"{ASC}.SAFE",
            products / "sub" / f"{NORTH}.SAFE",
            products / f"{CHIMOIO}.zip",
        )
    }
    capsys.readouterr()
    # nothing kept: clear error, no CSV
    none = tmp_path / "none.csv"
    assert (
        main(
            [
                "catalogue",
                "--aoi",
                ROME_AOI,
                "--start",
                "2020-01-01",
                "--end",
                "2020-12-31",
                "--out",
                str(none),
                "--backend",
                "pyrosar",
                "--db",
                str(db),
            ]
        )
        == 2
    )
    assert not none.exists() and "no product kept" in capsys.readouterr().err


def test_bad_databases_give_clear_errors(pyrosar, products, tmp_path, capsys):
    # a SQLite file that is not a pyroSAR archive: pyroSAR refuses it, we name the file
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE data (x INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(SarsslError, match=r"cannot open SpatiaLite database .*other\.db: "):
        ingest([products / f"{ROME}.SAFE"], other)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"\x00garbage" * 10)
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
            "--out",
            str(tmp_path / "x.csv"),
            "--backend",
            "pyrosar",
            "--db",
            str(junk),
        ]
    )
    assert rc == 2 and "junk.db: exists but is not a SQLite database" in capsys.readouterr().err
    # no PostgreSQL server there
    free = _free_port()
    with pytest.raises(
        SarsslError,
        match=rf"cannot open PostGIS database postgresql://"
        rf"postgres@127.0.0.1:{free}/x: no PostgreSQL server "
        rf"reachable at 127.0.0.1:{free}",
    ):
        select(f"postgresql://postgres@127.0.0.1:{free}/x", _filters())


# --------------------------------------------------------------------------------------
# PostGIS (a throw-away server on 127.0.0.1 when PostgreSQL + PostGIS are installed)
# --------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        share = Path("/usr/share/postgresql") / d.parent.name / "extension" / "postgis.control"
        if (d / "initdb").is_file() and share.is_file():
            return d
    return None


@pytest.fixture(scope="module")
def postgis(pyrosar, tmp_path_factory):
    """A PostgreSQL server with PostGIS on a free local port; yields its URL prefix."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip(
            "PostgreSQL with PostGIS not installed (tools/pyrosar-env.sh --postgis installs it)"
        )
    root = tmp_path_factory.mktemp("pg")
    data = root / "data"
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL")
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        root.chmod(0o755)
        for parent in root.parents:  # the postgres user must reach the data folder
            if parent == Path(parent.anchor):
                break
            parent.chmod(parent.stat().st_mode | 0o011)
    port = _free_port()
    subprocess.run(
        [
            *run_as,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(root / "log"),
            "-o",
            f"-p {port} -k {root} -h 127.0.0.1 -F",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )


def test_postgis_backend_matches_builtin(postgis, products):
    db = f"{postgis}/sarssl_scenes"
    names = ["rome aoi", "one day", "ascending", "orbits 79,168", "first half", "hh"]
    filters = [_filters(**CASES[n]) for n in names]
    results = build_catalogues_pyrosar([products], filters, db)
    for name, f, (table, _) in zip(names, filters, results):
        pd.testing.assert_frame_equal(table, build_catalogue([products], f)[0], obj=name)
    assert set(results[0][0].product_id) == {ROME, ASC}
    again = ingest([products / f"{ROME}.SAFE"], db)  # registered: nothing inserted
    assert again.registered_before and not again.inserted and again.size == (4, 0)
