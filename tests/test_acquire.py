"""Downloaders against a local HTTP server on 127.0.0.1 (never a real service).

The fake server (a ThreadingHTTPServer in a background thread on a random free port)
imitates the real APIs closely enough to exercise the code paths that matter: HTTP Range
resume after a dropped connection, 503 + Retry-After, 401 with wrong credentials, checksum
mismatch, the Earthdata Login redirect + cookie dance, CDSE OAuth tokens and OData paging,
orbit-file directory listings, and tile buckets with missing (ocean) tiles.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import zipfile
from pathlib import Path
from urllib.parse import parse_qs

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS

from conftest import client, send_bytes, send_file, send_json
from sarssl.acquire import dem as dem_mod
from sarssl.acquire import modis as modis_mod
from sarssl.acquire import orbits as orbits_mod
from sarssl.acquire import worldcover as wc_mod
from sarssl.acquire.cli import add_arguments, run
from sarssl.acquire.http import (
    AcquireError,
    AuthenticationError,
    ChecksumError,
    NotFoundError,
    Service,
    parse_retry_after,
)

PRODUCT = "S1A_IW_GRDH_1SDV_20210119T031653_20210119T031718_036201_043ED0_8255"
PRODUCT2 = "S1A_IW_GRDH_1SDV_20210131T031652_20210131T031717_036376_0444E8_1A2B"
PRODUCT_ASC = "S1A_IW_GRDH_1SDV_20210125T160210_20210125T160235_036297_04422A_77C1"


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for var in (
        "EARTHDATA_USERNAME",
        "EARTHDATA_PASSWORD",
        "EARTHDATA_TOKEN",
        "CDSE_USERNAME",
        "CDSE_PASSWORD",
        "CDSE_TOKEN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))


def fake_zip(name: str, size: int = 200_000, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{name}.SAFE/manifest.safe", f"<manifest product='{name}'/>")
        zf.writestr(
            f"{name}.SAFE/measurement/data.bin",
            rng.integers(0, 255, size, dtype=np.uint8).tobytes(),
        )
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# the shared client
# ---------------------------------------------------------------------------------------
def test_resume_after_interrupted_transfer(server, tmp_path):
    data = fake_zip(PRODUCT, 300_000)
    calls = []

    @server.route("GET", "/file.zip")
    def _(h, q, b):
        calls.append(h.headers.get("Range"))
        send_file(h, data, drop_after=100_000 if len(calls) == 1 else None)

    c = client()
    out = c.download(
        server.url("/file.zip"),
        tmp_path / "file.zip",
        size=len(data),
        checksum=("md5", hashlib.md5(data).hexdigest()),
    )
    assert out.read_bytes() == data
    # first a plain GET, then a Range request starting exactly where the first broke off
    assert calls == [None, "bytes=100000-"]
    assert not (tmp_path / "file.zip.part").exists()
    assert c.sleep == [0.5]  # one back-off wait


def test_concurrent_downloads_of_one_file_fetch_it_once(server, tmp_path):
    """Two jobs asking for the same file at once: one downloads (the lock file serialises
    them), the other waits and then finds it present; the file is whole."""
    import time as _time

    data = fake_zip(PRODUCT, 200_000)
    started = threading.Event()

    @server.route("GET", "/shared.zip")
    def _(h, q, b):
        started.set()
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        for i in range(0, len(data), 20_000):  # slow: ~0.3 s
            h.wfile.write(data[i : i + 20_000])
            h.wfile.flush()
            _time.sleep(0.03)

    dest = tmp_path / "dem" / "shared.zip"
    results, errors = [], []

    def job():
        try:
            results.append(client().download(server.url("/shared.zip"), dest, size=len(data)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    first = threading.Thread(target=job)
    first.start()
    assert started.wait(5)  # the first job is mid-transfer when the second starts
    second = threading.Thread(target=job)
    second.start()
    first.join(10)
    second.join(10)
    assert not errors and results == [dest, dest]
    assert dest.read_bytes() == data
    assert len(server.requests("/shared.zip")) == 1
    assert [p.name for p in dest.parent.iterdir()] == ["shared.zip"]  # no .part, no lock file left


def test_resume_from_part_left_by_a_killed_run(server, tmp_path):
    data = fake_zip(PRODUCT, 50_000, seed=3)
    (tmp_path / "f.zip.part").write_bytes(data[:20_000])  # what a killed job leaves
    ranges = []

    @server.route("GET", "/f.zip")
    def _(h, q, b):
        ranges.append(h.headers.get("Range"))
        send_file(h, data)

    out = client().download(server.url("/f.zip"), tmp_path / "f.zip", size=len(data))
    assert ranges == ["bytes=20000-"] and out.read_bytes() == data


def test_retry_after_on_503_then_success(server, tmp_path):
    data = b"x" * 5000
    n = []

    @server.route("GET", "/busy")
    def _(h, q, b):
        n.append(1)
        if len(n) <= 2:
            send_bytes(h, b"busy", status=503, headers={"Retry-After": "3"})
        else:
            send_file(h, data)

    c = client(jitter_seed=1)
    c.download(server.url("/busy"), tmp_path / "busy.bin")
    assert (tmp_path / "busy.bin").read_bytes() == data
    assert c.sleep == [3.0, 3.0]  # Retry-After honoured exactly (no jitter on it)


def test_retries_are_bounded_and_jitter_is_deterministic(server, tmp_path):
    @server.route("GET", "/down")
    def _(h, q, b):
        send_bytes(h, b"down", status=503)

    waits = []
    for _ in range(2):
        c = client(retries=3, backoff=1.0, jitter_seed=7)
        with pytest.raises(AcquireError, match="HTTP 503.*after 3 retries"):
            c.download(server.url("/down"), tmp_path / "down.bin")
        waits.append(list(c.sleep))
        assert not (tmp_path / "down.bin").exists()
    assert waits[0] == waits[1]  # same seed, same waits
    assert len(waits[0]) == 3
    assert all(
        1.0 * 2**i <= w <= 1.25 * 2**i for i, w in enumerate(waits[0])
    )  # exponential + jitter
    assert len(server.requests("/down")) == 8  # 2 runs x (1 + 3 retries)


def test_parse_retry_after_http_date():
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412460.0) == pytest.approx(
        20.0
    )
    assert parse_retry_after("garbage") is None


def test_checksum_mismatch_deletes_file(server, tmp_path):
    data = fake_zip(PRODUCT, 10_000)

    @server.route("GET", "/p.zip")
    def _(h, q, b):
        send_file(h, data)

    with pytest.raises(ChecksumError, match=r"md5 checksum mismatch for p\.zip.*deleted"):
        client().download(
            server.url("/p.zip"), tmp_path / "p.zip", size=len(data), checksum=("MD5", "0" * 32)
        )
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part is left


def test_size_mismatch_is_an_error(server, tmp_path):
    @server.route("GET", "/s")
    def _(h, q, b):
        send_file(h, b"12345")

    with pytest.raises(ChecksumError, match="server reports 5 bytes, the catalogue 9"):
        client().download(server.url("/s"), tmp_path / "s.bin", size=9)
    assert not (tmp_path / "s.bin").exists()


def test_404_names_the_url(server, tmp_path):
    with pytest.raises(
        NotFoundError, match=r"tile X not found \(HTTP 404 for http://127\.0\.0\.1:\d+/nope\)"
    ):
        client().download(server.url("/nope"), tmp_path / "x", what="tile X")


def test_credentials_from_env_and_netrc(monkeypatch, tmp_path, no_credentials):
    svc = Service(
        "Svc",
        user_env="SVC_USER",
        password_env="SVC_PASS",
        token_env="SVC_TOKEN",
        netrc_host="auth.example",
    )
    assert svc.credentials() is None
    rc = tmp_path / "netrc"
    rc.write_text("machine auth.example login alice password s3cret\n")
    rc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(rc))
    c = svc.credentials()
    assert (c.username, c.password) == ("alice", "s3cret") and str(rc) in c.source
    monkeypatch.setenv("SVC_USER", "bob")
    monkeypatch.setenv("SVC_PASS", "pw")
    assert svc.credentials().username == "bob"  # environment wins over netrc
    monkeypatch.setenv("SVC_TOKEN", "tkn")
    assert svc.credentials().token == "tkn"
    assert "set SVC_USER and SVC_PASS" in svc.hint() and "machine auth.example" in svc.hint()


# ---------------------------------------------------------------------------------------
# Sentinel-1: ASF (Earthdata redirect + cookie) and CDSE (OAuth + OData paging)
# ---------------------------------------------------------------------------------------
def asf_feature(server, name, direction, path_number, data, start):
    return {
        "type": "Feature",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[33, -19], [35, -19], [35, -17], [33, -17], [33, -19]]],
        },
        "properties": {
            "fileID": f"{name}-GRD_HD",
            "sceneName": name,
            "fileName": f"{name}.zip",
            "url": server.url(f"/GRD_HD/SA/{name}.zip"),
            "bytes": len(data),
            "md5sum": hashlib.md5(data).hexdigest(),
            "flightDirection": direction,
            "pathNumber": path_number,
            "startTime": start,
            "stopTime": start,
            "processingLevel": "GRD_HD",
            "polarization": "VV+VH",
        },
    }


def setup_asf(server, user="alice", password="pw"):
    """Search endpoint + a datapool that sends cookie-less requests to a login host."""
    files = {
        PRODUCT: fake_zip(PRODUCT, 30_000, 1),
        PRODUCT2: fake_zip(PRODUCT2, 40_000, 2),
        PRODUCT_ASC: fake_zip(PRODUCT_ASC, 20_000, 3),
    }
    feats = [
        asf_feature(server, PRODUCT, "DESCENDING", 174, files[PRODUCT], "2021-01-19T03:16:53.000Z"),
        asf_feature(
            server, PRODUCT2, "DESCENDING", 174, files[PRODUCT2], "2021-01-31T03:16:52.000Z"
        ),
        asf_feature(
            server, PRODUCT_ASC, "ASCENDING", 6, files[PRODUCT_ASC], "2021-01-25T16:02:10.000Z"
        ),
    ]

    @server.route("GET", "/services/search/param")
    def _(h, q, b):
        send_json(h, {"type": "FeatureCollection", "features": feats})

    good = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    login = server.url("", host="localhost")

    for name, data in files.items():

        def serve(h, q, b, data=data, name=name):
            if "datapool=ok" in (h.headers.get("Cookie") or ""):
                send_file(h, data)
            else:
                send_bytes(
                    h,
                    b"",
                    status=302,
                    headers={"Location": f"{login}/oauth/authorize?state=/GRD_HD/SA/{name}.zip"},
                )

        server.routes[("GET", f"/GRD_HD/SA/{name}.zip")] = serve

    @server.route("GET", "/oauth/authorize")
    def _(h, q, b):
        if h.headers.get("Authorization") != good:
            send_bytes(h, b"bad credentials", status=401)
            return
        send_bytes(
            h, b"", status=302, headers={"Location": server.url(f"/login?state={q['state'][0]}")}
        )

    @server.route("GET", "/login")
    def _(h, q, b):
        send_bytes(
            h,
            b"",
            status=302,
            headers={"Location": q["state"][0], "Set-Cookie": "datapool=ok; Path=/"},
        )

    return files


def cli(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    return run(p.parse_args(argv))


def test_asf_search_filter_and_download(server, tmp_path, monkeypatch, no_credentials, capsys):
    files = setup_asf(server)
    monkeypatch.setenv("EARTHDATA_USERNAME", "alice")
    monkeypatch.setenv("EARTHDATA_PASSWORD", "pw")
    out = tmp_path / "products"
    rc = cli(
        [
            "sentinel1",
            "--aoi",
            "33.56,-18.21,33.63,-18.14",
            "--start",
            "2021-01-01",
            "--end",
            "2021-02-01",
            "--orbit-direction",
            "descending",
            "--out-dir",
            str(out),
            "--provider",
            "asf",
            "--search-url",
            server.url("/services/search/param"),
            "--login-url",
            server.url("", host="localhost"),
            "--backoff",
            "0",
            "--no-progress",
            "--manifest",
            str(tmp_path / "m.json"),
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        f"{PRODUCT}.zip",
        f"{PRODUCT2}.zip",
    ]  # ascending dropped
    assert (out / f"{PRODUCT}.zip").read_bytes() == files[PRODUCT]
    q = parse_qs(server.requests("/services/search/param")[0]["query"])
    assert q["flightDirection"] == ["DESCENDING"] and q["processingLevel"] == ["GRD_HD"]
    assert q["intersectsWith"][0].startswith("POLYGON((33.56 -18.21")
    # credentials went to the login host only, never to the data host
    assert all("Authorization" in r["headers"] for r in server.requests("/oauth/authorize"))
    assert not any("Authorization" in r["headers"] for r in server.requests("/GRD_HD"))
    man = json.loads((tmp_path / "m.json").read_text())
    assert [p["id"] for p in man["products"]] == [PRODUCT, PRODUCT2]
    assert man["products"][0]["checksum"] == ["md5", hashlib.md5(files[PRODUCT]).hexdigest()]


def test_asf_dry_run_downloads_nothing(server, tmp_path, no_credentials, capsys):
    setup_asf(server)
    out = tmp_path / "products"
    cli(
        [
            "sentinel1",
            "--aoi",
            "33.56,-18.21,33.63,-18.14",
            "--start",
            "2021-01-01",
            "--end",
            "2021-01-30",
            "--relative-orbits",
            "6",
            "--out-dir",
            str(out),
            "--search-url",
            server.url("/services/search/param"),
            "--dry-run",
            "--no-progress",
        ]
    )
    printed = capsys.readouterr().out
    assert PRODUCT_ASC in printed and PRODUCT not in printed  # relative orbit 6 only
    assert not out.exists() and not server.requests("/GRD_HD")


def test_asf_wrong_credentials_clear_error(server, tmp_path, monkeypatch, no_credentials):
    setup_asf(server)
    monkeypatch.setenv("EARTHDATA_USERNAME", "alice")
    monkeypatch.setenv("EARTHDATA_PASSWORD", "WRONG")
    out = tmp_path / "products"
    with pytest.raises(AuthenticationError) as err:
        cli(
            [
                "sentinel1",
                "--aoi",
                "33.56,-18.21,33.63,-18.14",
                "--start",
                "2021-01-01",
                "--end",
                "2021-02-01",
                "--out-dir",
                str(out),
                "--search-url",
                server.url("/services/search/param"),
                "--login-url",
                server.url("", host="localhost"),
                "--backoff",
                "0",
                "--no-progress",
            ]
        )
    msg = str(err.value)
    assert "NASA Earthdata Login" in msg and "HTTP 401" in msg
    assert (
        "EARTHDATA_USERNAME" in msg and "EARTHDATA_PASSWORD" in msg and "$EARTHDATA_USERNAME" in msg
    )
    assert not list(out.glob("*.zip"))


def setup_cdse(server, user="carol", password="pw", expire_first=False):
    files = {PRODUCT: fake_zip(PRODUCT, 25_000, 4), PRODUCT2: fake_zip(PRODUCT2, 15_000, 5)}
    ids = {PRODUCT: "11111111-aaaa", PRODUCT2: "22222222-bbbb"}
    tokens = []

    @server.route("POST", "/token")
    def _(h, q, b):
        form = parse_qs(b.decode())
        if (
            form.get("username") == [user]
            and form.get("password") == [password]
            and form["client_id"] == ["cdse-public"]
        ):
            tokens.append(f"tok{len(tokens) + 1}")
            send_json(h, {"access_token": tokens[-1], "expires_in": 600})
        else:
            send_json(
                h,
                {"error": "invalid_grant", "error_description": "Invalid user credentials"},
                status=401,
            )

    def item(name, direction, rel):
        data = files.get(name, b"")
        return {
            "Id": ids.get(name, "33333333-cccc"),
            "Name": f"{name}.SAFE",
            "ContentLength": len(data),
            "Checksum": [
                {"Value": hashlib.md5(data).hexdigest(), "Algorithm": "MD5"},
                {"Value": "ab" * 32, "Algorithm": "BLAKE3"},
            ],
            "ContentDate": {
                "Start": f"{name[17:21]}-{name[21:23]}-{name[23:25]}T03:16:53.000Z",
                "End": f"{name[17:21]}-{name[21:23]}-{name[23:25]}T03:17:18.000Z",
            },
            "Footprint": "geography'SRID=4326;POLYGON ((33 -19, 35 -19, 35 -17, 33 -17, 33 -19))'",
            "Attributes": [
                {"Name": "orbitDirection", "Value": direction},
                {"Name": "relativeOrbitNumber", "Value": rel},
            ],
        }

    @server.route("GET", "/odata/v1/Products")
    def _(h, q, b):
        if q.get("page") == ["2"]:
            send_json(
                h, {"value": [item(PRODUCT2, "DESCENDING", 174), item(PRODUCT_ASC, "ASCENDING", 6)]}
            )
        else:
            send_json(
                h,
                {
                    "value": [item(PRODUCT, "DESCENDING", 174)],
                    "@odata.nextLink": server.url("/odata/v1/Products?page=2"),
                },
            )

    seen_auth = []
    for name, data in files.items():

        def serve(h, q, b, data=data):
            auth = h.headers.get("Authorization")
            seen_auth.append(auth)
            if expire_first and len(seen_auth) == 1:
                send_json(h, {"detail": "Expired signature!"}, status=401)
            elif auth in {f"Bearer {t}" for t in tokens}:
                send_file(h, data)
            else:
                send_json(h, {"detail": "Not authenticated"}, status=401)

        server.routes[("GET", f"/dl/Products({ids[name]})/$value")] = serve
    return files, tokens, seen_auth


def cdse_args(server, out):
    return [
        "sentinel1",
        "--aoi",
        "33.56,-18.21,33.63,-18.14",
        "--start",
        "2021-01-01",
        "--end",
        "2021-02-01",
        "--orbit-direction",
        "descending",
        "--out-dir",
        str(out),
        "--provider",
        "cdse",
        "--catalogue-url",
        server.url("/odata/v1"),
        "--download-url",
        server.url("/dl"),
        "--token-url",
        server.url("/token"),
        "--backoff",
        "0",
        "--no-progress",
    ]


def test_cdse_paging_token_refresh_and_checksum(server, tmp_path, monkeypatch, no_credentials):
    files, tokens, seen = setup_cdse(server, expire_first=True)
    monkeypatch.setenv("CDSE_USERNAME", "carol")
    monkeypatch.setenv("CDSE_PASSWORD", "pw")
    out = tmp_path / "p"
    assert cli(cdse_args(server, out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{PRODUCT}.zip", f"{PRODUCT2}.zip"]
    assert (out / f"{PRODUCT2}.zip").read_bytes() == files[PRODUCT2]
    assert tokens == ["tok1", "tok2"]  # the expired token was replaced once
    assert seen[:2] == ["Bearer tok1", "Bearer tok2"]
    flt = parse_qs(server.requests("/odata/v1/Products")[0]["query"])["$filter"][0]
    assert "Value eq 'IW_GRDH_1S'" in flt and "Value eq 'DESCENDING'" in flt
    assert "OData.CSC.Intersects(area=geography'SRID=4326;POLYGON((33.56 -18.21" in flt
    assert len(server.requests("/odata/v1/Products")) == 2  # followed the nextLink


def test_cdse_wrong_password_names_variables(server, tmp_path, monkeypatch, no_credentials):
    setup_cdse(server)
    monkeypatch.setenv("CDSE_USERNAME", "carol")
    monkeypatch.setenv("CDSE_PASSWORD", "nope")
    with pytest.raises(
        AuthenticationError,
        match=r"Copernicus Data Space.*rejected.*CDSE_USERNAME and CDSE_PASSWORD",
    ):
        cli(cdse_args(server, tmp_path / "p"))
    assert not (tmp_path / "p").exists() or not list((tmp_path / "p").glob("*.zip"))


# ---------------------------------------------------------------------------------------
# orbits
# ---------------------------------------------------------------------------------------
def eof_zip(name: str) -> bytes:
    xml = (
        "<?xml version='1.0'?><Earth_Explorer_File><Earth_Explorer_Header><Fixed_Header>"
        f"<File_Name>{name[:-4]}</File_Name><File_Type>AUX_{name[13:19]}</File_Type></Fixed_Header>"
        "</Earth_Explorer_Header><Data_Block type='xml'><List_of_OSVs count='2'>"
        + "".join(
            f"<OSV><UTC>UTC=2021-01-19T03:{m:02d}:00.000000</UTC><X unit='m'>{7e6 + m}</X>"
            "<Y unit='m'>0</Y><Z unit='m'>0</Z><VX unit='m/s'>0</VX><VY unit='m/s'>7500</VY>"
            "<VZ unit='m/s'>0</VZ></OSV>"
            for m in (10, 20)
        )
        + "</List_of_OSVs></Data_Block></Earth_Explorer_File>"
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, xml)
    return buf.getvalue()


def test_orbits_poeorb_newest_covering_then_restituted_fallback(server, tmp_path):
    poe = [
        "S1A_OPER_AUX_POEORB_OPOD_20210208T122356_V20210118T225942_20210120T005942.EOF",  # covers
        # covers, newer
        "S1A_OPER_AUX_POEORB_OPOD_20210209T101010_V20210118T225942_20210120T005942.EOF",
        "S1A_OPER_AUX_POEORB_OPOD_20210209T122356_V20210119T225942_20210121T005942.EOF",  # too late
        # other mission
        "S1B_OPER_AUX_POEORB_OPOD_20210210T122356_V20210118T225942_20210120T005942.EOF",
    ]
    listing = (
        "<html><body>"
        + "".join(f'<a href="{n}.zip">{n}.zip</a><br>' for n in poe)
        + "</body></html>"
    )

    @server.route("GET", "/orb/POEORB/S1A/2021/01/")
    def _(h, q, b):
        send_bytes(h, listing.encode())

    for n in poe:
        server.routes[("GET", f"/orb/POEORB/S1A/2021/01/{n}.zip")] = lambda h, q, b, n=n: send_file(
            h, eof_zip(n)
        )

    # a February scene: no POEORB yet (404 listing), a RESORB covers it
    late = "S1A_IW_GRDH_1SDV_20210227T031652_20210227T031717_036751_04512C_ABCD"
    res = "S1A_OPER_AUX_RESORB_OPOD_20210227T061000_V20210227T020000_20210227T053000.EOF"

    @server.route("GET", "/orb/RESORB/S1A/2021/02/")
    def _(h, q, b):
        send_bytes(h, f'<a href="{res}.zip">x</a>'.encode())

    server.routes[("GET", f"/orb/RESORB/S1A/2021/02/{res}.zip")] = lambda h, q, b: send_file(
        h, eof_zip(res)
    )

    out = tmp_path / "orbits"
    assert (
        cli(
            [
                "orbits",
                f"/somewhere/{PRODUCT}.zip",
                late,
                "--out-dir",
                str(out),
                "--provider",
                "step",
                "--base-url",
                server.url("/orb"),
                "--backoff",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [poe[1] + ".zip", res + ".zip"]

    # the preprocessing stage finds and reads what was downloaded
    from sarssl.sar.geometry import find_orbit_file, read_eof

    found = find_orbit_file(
        out, "S1A", np.datetime64("2021-01-19T03:16:53"), np.datetime64("2021-01-19T03:17:18")
    )
    assert found is not None and found.name == poe[1] + ".zip"
    sv, kind = read_eof(found)
    assert kind == "POEORB" and len(sv) == 2 and sv.position[1, 0] == 7e6 + 20


def test_orbits_none_covering_is_an_error(server, tmp_path):
    with pytest.raises(
        AcquireError, match=f"no POEORB/RESORB orbit file from step covers: {PRODUCT}"
    ):
        cli(
            [
                "orbits",
                PRODUCT,
                "--out-dir",
                str(tmp_path),
                "--base-url",
                server.url("/empty"),
                "--backoff",
                "0",
                "--no-progress",
            ]
        )


def test_orbit_cover_rule():
    acq = orbits_mod.acquisition_from_product(f"{PRODUCT}.zip")
    tight = orbits_mod.parse_orbit_name(
        "S1A_OPER_AUX_RESORB_OPOD_20210119T060000_V20210119T031653_20210119T040000.EOF"
    )
    assert not tight.covers(acq)  # no margin before the scene
    ok = orbits_mod.parse_orbit_name(
        "S1A_OPER_AUX_RESORB_OPOD_20210119T060000_V20210119T031500_20210119T040000.EOF"
    )
    assert ok.covers(acq)
    with pytest.raises(Exception, match="not a Sentinel-1 product name"):
        orbits_mod.acquisition_from_product("not_a_product.zip")


# ---------------------------------------------------------------------------------------
# tiles: names (hand-checked) and mosaics
# ---------------------------------------------------------------------------------------
def test_dem_tile_names():
    assert dem_mod.dem_tiles((12.46, 41.96, 12.54, 42.04)) == [
        "Copernicus_DSM_COG_10_N42_00_E012_00_DEM",
        "Copernicus_DSM_COG_10_N41_00_E012_00_DEM",
    ]
    # Chimoio: south and east
    assert dem_mod.dem_tiles((33.56, -18.21, 33.63, -18.14)) == [
        "Copernicus_DSM_COG_10_S19_00_E033_00_DEM"
    ]
    # Santiago de Chile: south and west, two by two (names give the south-west corner)
    assert dem_mod.dem_tiles((-71.5, -33.2, -70.1, -32.9)) == [
        "Copernicus_DSM_COG_10_S33_00_W072_00_DEM",
        "Copernicus_DSM_COG_10_S33_00_W071_00_DEM",
        "Copernicus_DSM_COG_10_S34_00_W072_00_DEM",
        "Copernicus_DSM_COG_10_S34_00_W071_00_DEM",
    ]
    # Gulf of Guinea: the zero lines; an edge on a whole degree does not pull in the neighbour
    assert dem_mod.dem_tiles((-0.5, -0.5, 0.5, 0.5)) == [
        "Copernicus_DSM_COG_10_N00_00_W001_00_DEM",
        "Copernicus_DSM_COG_10_N00_00_E000_00_DEM",
        "Copernicus_DSM_COG_10_S01_00_W001_00_DEM",
        "Copernicus_DSM_COG_10_S01_00_E000_00_DEM",
    ]
    assert dem_mod.dem_tiles((10.0, 45.0, 11.0, 46.0)) == [
        "Copernicus_DSM_COG_10_N45_00_E010_00_DEM"
    ]
    assert dem_mod.dem_tiles((-180, 89.5, -179.5, 90), arcsec=3) == [
        "Copernicus_DSM_COG_30_N89_00_W180_00_DEM"
    ]


def test_worldcover_tile_names():
    assert wc_mod.worldcover_tiles((12.46, 41.96, 12.54, 42.04)) == [
        "ESA_WorldCover_10m_2021_v200_N42E012_Map.tif",
        "ESA_WorldCover_10m_2021_v200_N39E012_Map.tif",
    ]
    assert wc_mod.worldcover_tiles((33.56, -18.21, 33.63, -18.14), 2020) == [
        "ESA_WorldCover_10m_2020_v100_S21E033_Map.tif"
    ]
    # lat -33.5..-32.5 straddles -33 (cells -36..-33 and -33..-30); lon -72.5..-70.5 straddles -72
    assert wc_mod.worldcover_tiles((-72.5, -33.5, -70.5, -32.5)) == [
        "ESA_WorldCover_10m_2021_v200_S33W075_Map.tif",
        "ESA_WorldCover_10m_2021_v200_S33W072_Map.tif",
        "ESA_WorldCover_10m_2021_v200_S36W075_Map.tif",
        "ESA_WorldCover_10m_2021_v200_S36W072_Map.tif",
    ]
    assert wc_mod.worldcover_tiles((-3.0, 0.0, 3.0, 3.0)) == [
        "ESA_WorldCover_10m_2021_v200_N00W003_Map.tif",
        "ESA_WorldCover_10m_2021_v200_N00E000_Map.tif",
    ]
    with pytest.raises(Exception, match="available years are"):
        wc_mod.worldcover_tiles((0, 0, 1, 1), 2019)


def test_modis_tiles_hand_checked():
    # Rome: x = R*rad(12.5)*cos(42 deg) ~ 1.03e6 m -> h = 18 + 0.93 -> 18; y ~ 4.67e6 -> v = 4
    assert modis_mod.modis_tiles((12.46, 41.96, 12.54, 42.04)) == [(18, 4)]
    assert modis_mod.modis_tiles((33.56, -18.21, 33.63, -18.14)) == [(21, 10)]
    assert modis_mod.modis_tiles((-1, -1, 1, 1)) == [(17, 8), (18, 8), (17, 9), (18, 9)]
    # a box on a row boundary (lat 40) only touches the row above
    assert modis_mod.modis_tiles((0.5, 35, 1.5, 40)) == [(18, 5)]
    # far north (row v2 = 60..70 N): x(-30, 65) = -1.410e6 m -> h16, but the box's north-east
    # corner x(-29, 70) = -1.103e6 m lies east of -T = -1.112e6 m -> the corner of h17 too
    assert modis_mod.modis_tiles((-30, 65, -29, 70)) == [(16, 2), (17, 2)]
    assert modis_mod.modis_tiles((-30, 65, -29, 69)) == [(16, 2)]
    # the sinusoid widens toward the equator: x(21, 15) = 2.256e6 m > 2T -> h20 at the south
    # edge, while x(21, 20) = 2.194e6 m < 2T keeps row v6 (20..30 N) in h19
    assert modis_mod.modis_tiles((19, 15, 21, 25)) == [(19, 6), (19, 7), (20, 7)]


@pytest.mark.parametrize(
    "bbox",
    [
        (19, 15, 21, 25),
        (-30, 65, -29, 70),
        (-75, -58, -60, -41),
        (100, 38, 140, 52),
        (-10, -5, 10, 5),
        (170, 60, 180, 72),
    ],
)
def test_modis_tiles_match_dense_sampling(bbox):
    w, s, e, n = bbox
    d = 1e-6  # interior points only: a point exactly on an edge belongs to either side
    lons, lats = np.meshgrid(np.linspace(w + d, e - d, 301), np.linspace(s + d, n - d, 301))
    sampled = {modis_mod.tile_of(lo, la) for lo, la in zip(lons.ravel(), lats.ravel())}
    exact = set(modis_mod.modis_tiles(bbox))
    # sampling can only miss slivers, never find a tile the exact method lacks
    assert sampled <= exact and len(exact - sampled) <= 1


def write_tif(path: Path, data: np.ndarray, transform: Affine, crs, nodata=None) -> bytes:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
    ) as ds:
        ds.write(data, 1)
    return path.read_bytes()


def glo_height(lon, lat):
    return (100 * lat + 10 * lon).astype(np.float32)


def test_dem_download_and_mosaic(server, tmp_path):
    res = 1 / 36  # coarse stand-in for 1 arcsec; same half-pixel registration as GLO-30
    made = tmp_path / "made"
    made.mkdir()
    for lat in (41, 42):
        name = dem_mod.dem_tile_name(lat, 12)
        cols = (12 + (np.arange(36) + 0.5) * res - res / 2)[None, :]
        rows = (lat + 1 - (np.arange(36) + 0.5) * res + res / 2)[:, None]
        data = glo_height(cols + 0 * rows, rows + 0 * cols)
        blob = write_tif(
            made / f"{name}.tif",
            data,
            Affine(res, 0, 12 - res / 2, 0, -res, lat + 1 + res / 2),
            "EPSG:4326",
        )
        server.routes[("GET", f"/dem/{name}/{name}.tif")] = lambda h, q, b, blob=blob: send_file(
            h, blob
        )
    bbox = (12.8, 41.9, 13.2, 42.1)  # crosses lon 13: the E013 tiles are "ocean" (404)
    out = tmp_path / "dem" / "rome.tif"
    assert (
        cli(
            [
                "dem",
                "--aoi",
                ",".join(map(str, bbox)),
                "--out",
                str(out),
                "--margin",
                "0",
                "--base-url",
                server.url("/dem"),
                "--backoff",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    with rasterio.open(out) as ds:
        crs = CRS.from_user_input(ds.crs.to_wkt())
        from sarssl.sar.dem import vertical_datum

        assert vertical_datum(crs) == "EGM2008" and ds.tags()["VERTICAL_DATUM"] == "EGM2008"
        left, b, r, t = ds.bounds
        assert left <= bbox[0] and b <= bbox[1] and r >= bbox[2] and t >= bbox[3]
        arr = ds.read(1)
        assert ds.transform.a == pytest.approx(res)
        # every pixel centre west of the tiles' east edge has the source height; east of it NaN
        xs = ds.transform.c + (np.arange(ds.width) + 0.5) * res
        ys = ds.transform.f - (np.arange(ds.height) + 0.5) * res
        xx, yy = np.meshgrid(xs, ys)
        inside = xx < 13 - res / 2
        np.testing.assert_allclose(arr[inside], glo_height(xx, yy)[inside], atol=0.01)
        assert np.isnan(arr[~inside]).all() and inside.any() and (~inside).any()
    assert (
        len(server.requests("/dem/Copernicus_DSM_COG_10_N42_00_E013")) == 1
    )  # tried, 404, skipped
    assert sorted(p.name for p in (tmp_path / "dem" / "tiles").iterdir()) == [
        "Copernicus_DSM_COG_10_N41_00_E012_00_DEM.tif",
        "Copernicus_DSM_COG_10_N42_00_E012_00_DEM.tif",
    ]


def test_worldcover_download_and_mosaic(server, tmp_path):
    res = 0.1
    codes = np.array([10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100], np.uint8)
    made = tmp_path / "made"
    made.mkdir()
    for lat in (39, 42):
        name = wc_mod.worldcover_tile_name(lat, 12, 2021)
        r, c = np.mgrid[0:30, 0:30]
        data = codes[(r + c + lat) % 11]
        data[0, 0] = 0  # a no-data pixel
        blob = write_tif(
            made / name, data, Affine(res, 0, 12, 0, -res, lat + 3), "EPSG:4326", nodata=0
        )
        server.routes[("GET", f"/wc/v200/2021/map/{name}")] = lambda h, q, b, blob=blob: send_file(
            h, blob
        )
    bbox = (12.05, 41.55, 12.45, 42.45)
    out = tmp_path / "wc.tif"
    assert (
        cli(
            [
                "worldcover",
                "--aoi",
                ",".join(map(str, bbox)),
                "--year",
                "2021",
                "--out",
                str(out),
                "--base-url",
                server.url("/wc"),
                "--backoff",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 4326 and ds.nodata == 0 and ds.dtypes[0] == "uint8"
        assert ds.bounds.left == pytest.approx(12.0) and ds.bounds.right == pytest.approx(12.5)
        assert ds.bounds.bottom == pytest.approx(41.5) and ds.bounds.top == pytest.approx(42.5)
        arr = ds.read(1)
        # expected: row/col in the source tile of each output pixel centre
        for i in range(ds.height):
            for j in range(ds.width):
                x, y = ds.xy(i, j)
                lat0 = 42 if y > 42 else 39
                rr, cc = int((lat0 + 3 - y) / res), int((x - 12) / res)
                expect = 0 if (rr, cc) == (0, 0) else codes[(rr + cc + lat0) % 11]  # nodata kept
                assert arr[i, j] == expect


def test_modis_geotiff_template(server, tmp_path):
    t = modis_mod.TILE_SIZE
    n = 24
    res = t / n
    h, v = 18, 4
    x0, y0 = (h - 18) * t, (9 - v) * t
    data = np.arange(n * n, dtype=np.uint8).reshape(n, n) % 101
    data[0, :] = 200  # water
    blob = write_tif(
        tmp_path / "src.tif",
        data,
        Affine(res, 0, x0, 0, -res, y0),
        modis_mod.SINUSOIDAL_PROJ,
        nodata=253,
    )

    @server.route("GET", "/vcf/2021/MOD44B.A2021065.h18v04.061.tif")
    def _(hh, q, b):
        send_file(hh, blob)

    out = tmp_path / "tc.tif"
    assert (
        cli(
            [
                "modis",
                "--aoi",
                "12.46,41.96,12.54,42.04",
                "--out",
                str(out),
                "--url-template",
                server.url("/vcf/{year}/MOD44B.A{year}{doy}.h{h:02d}v{v:02d}.{version}.tif"),
                "--backoff",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    with rasterio.open(out) as ds:
        assert CRS.from_user_input(ds.crs.to_wkt()).equals(
            CRS.from_proj4(modis_mod.SINUSOIDAL_PROJ)
        )
        cx, cy = modis_mod.sinusoidal_xy(12.5, 42.0)
        row, col = ds.index(cx, cy)
        srow, scol = int((y0 - cy) // res), int((cx - x0) // res)
        assert ds.read(1)[row, col] == data[srow, scol]
        assert ds.bounds.left <= modis_mod.sinusoidal_xy(12.46, 41.96)[0]


def test_modis_hdf_without_driver_is_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(modis_mod, "has_hdf4", lambda: False)
    with pytest.raises(Exception, match="no HDF4 driver: use --url-template"):
        modis_mod.acquire_modis((12.4, 41.9, 12.6, 42.1), tmp_path / "x.tif", client())
    pat = modis_mod.hdf_name_pattern(2021, 18, 4, "061")
    listing = (
        '<a href="MOD44B.A2021065.h18v04.061.2022161122409.hdf">x</a>'
        '<a href="MOD44B.A2021065.h18v05.061.2022161122409.hdf">'
    )
    assert modis_mod.find_in_listing(listing, pat) == "MOD44B.A2021065.h18v04.061.2022161122409.hdf"
    assert (
        str(modis_mod.product_date(2020)) == "2020-03-05"
        and str(modis_mod.product_date(2021)) == "2021-03-06"
    )


def test_end_date_is_inclusive_like_catalogue(server, tmp_path, no_credentials, capsys):
    setup_asf(server)
    base = [
        "sentinel1",
        "--aoi",
        "33.56,-18.21,33.63,-18.14",
        "--start",
        "2021-01-19",
        "--out-dir",
        str(tmp_path),
        "--orbit-direction",
        "descending",
        "--search-url",
        server.url("/services/search/param"),
        "--dry-run",
        "--no-progress",
    ]
    cli(base + ["--end", "2021-01-31"])
    assert PRODUCT2 in capsys.readouterr().out  # sensed 2021-01-31T03:16: the end day counts
    cli(base + ["--end", "2021-01-30"])
    printed = capsys.readouterr().out
    assert PRODUCT2 not in printed and PRODUCT in printed  # and the start day counts too
    q = parse_qs(server.requests("/services/search/param")[-1]["query"])
    assert q["end"] == ["2021-01-31T00:00:00.000Z"] and q["start"] == ["2021-01-19T00:00:00.000Z"]


def test_complete_part_gets_416_and_server_without_ranges_restarts(server, tmp_path):
    data = b"abcdefghij" * 1000
    (tmp_path / "done.bin.part").write_bytes(data)  # complete, but the run died before the rename

    @server.route("GET", "/done")
    def _(h, q, b):
        send_file(h, data)  # answers 416 for a Range at the end

    out = client().download(server.url("/done"), tmp_path / "done.bin")
    assert out.read_bytes() == data and not (tmp_path / "done.bin.part").exists()

    (tmp_path / "plain.bin.part").write_bytes(b"garbage!")

    @server.route("GET", "/plain")
    def _(h, q, b):
        send_bytes(h, data)  # ignores Range: 200 with the whole body

    out = client().download(server.url("/plain"), tmp_path / "plain.bin", size=len(data))
    assert out.read_bytes() == data
