"""`source: download` areas inside the DAG and `sarssl plan`, against local servers only.

A fake "world" on 127.0.0.1 answers as the real services do (ASF Search API GeoJSON with a
429 + Retry-After first, the Earthdata Login redirect + cookie dance, the ESA STEP orbit
listing, Copernicus GLO-30 / WorldCover / MOD44B GeoTIFF tiles). Its Sentinel-1 products are
``sarssl simulate`` products, its orbit files hold their annotations' state vectors and its
tiles carry the simulation's truth, so the downloaded area runs through catalogue,
preprocessing and compositing to chips with no file placed by hand.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import (
    ROOT,
    TEST_CONFIG,
    run_snakemake,
    send_bytes,
    send_file,
    send_json,
    write_eof,
)

BBOX = (33.58, -18.19, 33.61, -18.16)
AREA = "chimoio"
USER, PASSWORD = "alice", "s3cret"


# ---------------------------------------------------------------------------------------
# the fake world
# ---------------------------------------------------------------------------------------
def _annotation(zip_path: Path):
    from lxml import etree

    with zipfile.ZipFile(zip_path) as zf:
        name = next(n for n in zf.namelist() if re.search(r"/annotation/s1[ab]-.*-vv-.*\.xml$", n))
        return etree.fromstring(zf.read(name))


def _write_tif(path: Path, data, transform, crs, nodata=None) -> bytes:
    import rasterio

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
        compress="deflate",
    ) as ds:
        ds.write(data, 1)
    return path.read_bytes()


def _warp(src_path: Path, shape, transform, crs, fill, resampling):
    import rasterio
    from rasterio.warp import reproject

    out = np.full(shape, np.nan, np.float32)
    with rasterio.open(src_path) as src:
        reproject(
            src.read(1).astype(np.float32),
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            src_nodata=src.nodata,
            dst_transform=transform,
            dst_crs=crs,
            dst_nodata=np.nan,
            resampling=resampling,
        )
    return np.where(np.isnan(out), fill, out)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Simulated products, their orbit files and label/DEM tiles made from the truth."""
    from affine import Affine
    from rasterio.warp import Resampling

    from sarssl.acquire import dem as dem_mod
    from sarssl.acquire import modis as modis_mod
    from sarssl.acquire import worldcover as wc_mod
    from sarssl.acquire.sentinel1 import relative_orbit_from_absolute
    from sarssl.sar.geometry import RadarGeometry

    root = tmp_path_factory.mktemp("world")
    sarssl = Path(sys.executable).with_name("sarssl")
    subprocess.run(
        [str(sarssl), "simulate", "--template", "S1A_chimoio", "--area", AREA, "--bbox",
         ",".join(map(str, BBOX)), "--year", "2021", "--per-season", "1", "--seed", "7",
         "--products-dir", str(root / "products"), "--truth-dir", str(root / "truth")],
        check=True, capture_output=True,
    )  # fmt: skip
    files, features, orbits = {}, [], {}
    for zp in sorted((root / "products").glob("*.zip")):
        pid, data = zp.stem, zp.read_bytes()
        files[pid] = data
        ann = _annotation(zp)
        direction = ann.findtext("generalAnnotation/productInformation/pass").upper()
        start = ann.findtext("adsHeader/startTime") + "Z"
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[33, -19], [35, -19], [35, -17], [33, -17], [33, -19]]],
                },
                "properties": {
                    "sceneName": pid,
                    "fileName": f"{pid}.zip",
                    "url": None,  # filled in per server
                    "bytes": len(data),
                    "md5sum": hashlib.md5(data).hexdigest(),
                    "flightDirection": direction,
                    "pathNumber": relative_orbit_from_absolute(
                        "S1A", int(ann.findtext("adsHeader/absoluteOrbitNumber"))
                    ),
                    "startTime": start,
                    "stopTime": ann.findtext("adsHeader/stopTime") + "Z",
                    "processingLevel": "GRD_HD",
                },
            }
        )
        sv = RadarGeometry.from_annotation(ann).state_vectors
        day = start[:10].replace("-", "")
        name = f"S1A_OPER_AUX_POEORB_OPOD_{day}T120000_V{day}T000000_{day}T235959.EOF"
        write_eof(root / name, sv, "POEORB")
        orbits[name] = (start[:4], start[5:7], (root / name).read_bytes())

    tiles = {}
    res = 1 / 1200  # coarse GLO stand-in, same half-pixel registration as GLO-30
    for lat, lon in dem_mod.degree_cells(dem_mod.expand_bbox(BBOX, 0.01), 1):
        name = dem_mod.dem_tile_name(lat, lon)
        tr = Affine(res, 0, lon - res / 2, 0, -res, lat + 1 + res / 2)
        h = _warp(
            root / "truth" / "dem.tif", (1200, 1200), tr, "EPSG:4326", 0.0, Resampling.bilinear
        )
        h = np.where(h == 0.0, float(np.mean(h[h != 0.0])), h).astype(np.float32)
        tiles[f"/dem/{name}/{name}.tif"] = _write_tif(root / f"{name}.tif", h, tr, "EPSG:4326")
    for lat, lon in dem_mod.degree_cells(BBOX, 3):
        name = wc_mod.worldcover_tile_name(lat, lon, 2021)
        tr = Affine(res, 0, lon, 0, -res, lat + 3)
        lc = _warp(
            root / "truth" / "landcover.tif", (3600, 3600), tr, "EPSG:4326", 0, Resampling.nearest
        )
        tiles[f"/wc/v200/2021/map/{name}"] = _write_tif(
            root / name, lc.astype(np.uint8), tr, "EPSG:4326", nodata=0
        )
    for h_, v_ in modis_mod.modis_tiles(BBOX):
        t = modis_mod.TILE_SIZE
        tr = Affine(t / 4800, 0, (h_ - 18) * t, 0, -t / 4800, (9 - v_) * t)
        tc = _warp(
            root / "truth" / "treecover.tif", (4800, 4800), tr, modis_mod.SINUSOIDAL_PROJ, 30,
            Resampling.nearest,
        )  # fmt: skip
        name = f"MOD44B.A2021065.h{h_:02d}v{v_:02d}.061.tif"
        tiles[f"/vcf/2021/{name}"] = _write_tif(
            root / name, tc.astype(np.uint8), tr, modis_mod.SINUSOIDAL_PROJ, nodata=253
        )
    return {"files": files, "features": features, "orbits": orbits, "tiles": tiles}


def serve_world(server, world, *, drop=None, hold=None):
    """Routes of every service on ``server``; ``drop`` (a set of product ids) cuts those
    downloads off a quarter of the way through each response; ``hold`` (product id ->
    threading.Event) sends three quarters of a fresh download and then stalls until the
    event is set (a transfer in flight when the run is killed)."""
    drop = drop if drop is not None else set()
    hold = hold if hold is not None else {}
    state = {"searches": 0}

    @server.route("GET", "/services/search/param")
    def _(h, q, b):
        state["searches"] += 1
        if state["searches"] == 1:  # rate limited once
            send_bytes(h, b"slow down", status=429, headers={"Retry-After": "1"})
            return
        feats = json.loads(json.dumps(world["features"]))
        for f in feats:
            f["properties"]["url"] = server.url(f"/GRD_HD/SA/{f['properties']['fileName']}")
        send_json(h, {"type": "FeatureCollection", "features": feats})

    good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    login = server.url("", host="localhost")
    for pid, data in world["files"].items():

        def serve(h, q, b, data=data, pid=pid):
            if "datapool=ok" not in (h.headers.get("Cookie") or ""):
                loc = f"{login}/oauth/authorize?state=/GRD_HD/SA/{pid}.zip"
                send_bytes(h, b"", status=302, headers={"Location": loc})
            elif pid in drop:
                send_file(h, data, drop_after=len(data) // 4)
            elif pid in hold and not hold[pid].is_set() and not h.headers.get("Range"):
                h.send_response(200)
                h.send_header("Content-Length", str(len(data)))
                h.end_headers()
                h.wfile.write(data[: 3 * len(data) // 4])
                h.wfile.flush()
                hold[pid].wait(120)
                h.close_connection = True
            else:
                send_file(h, data)

        server.routes[("GET", f"/GRD_HD/SA/{pid}.zip")] = serve

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
        headers = {"Location": q["state"][0], "Set-Cookie": "datapool=ok; Path=/"}
        send_bytes(h, b"", status=302, headers=headers)

    months: dict[str, list[str]] = {}
    for name, (year, month, data) in world["orbits"].items():
        months.setdefault(f"/orb/POEORB/S1A/{year}/{month}/", []).append(name)
        server.routes[("GET", f"/orb/POEORB/S1A/{year}/{month}/{name}")] = (
            lambda h, q, b, data=data: send_file(h, data)
        )
    for path, names in months.items():
        page = "".join(f'<a href="{n}">{n}</a><br>' for n in names).encode()
        server.routes[("GET", path)] = lambda h, q, b, page=page: send_bytes(h, page)
    for path, blob in world["tiles"].items():
        server.routes[("GET", path)] = lambda h, q, b, blob=blob: send_file(h, blob)
    return state


def download_config(server, tmp_path: Path) -> Path:
    cfg = yaml.safe_load(TEST_CONFIG.read_text())
    cfg["areas"] = {AREA: {"bbox": list(BBOX), "crs": "auto", "source": "download"}}
    cfg["pretrain"]["areas"] = [AREA]
    cfg["finetune"]["areas"] = [AREA]
    cfg["acquire"] = {
        "provider": "asf",
        "orbit_provider": "step",
        "retries": 1,
        "urls": {
            "asf_search": server.url("/services/search/param"),
            "earthdata_login": server.url("", host="localhost"),
            "orbits": server.url("/orb"),
            "dem": server.url("/dem"),
            "worldcover": server.url("/wc"),
            "modis_template": server.url(
                "/vcf/{year}/MOD44B.A{year}{doy}.h{h:02d}v{v:02d}.{version}.tif"
            ),
        },
    }
    path = tmp_path / "download.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def credentials(monkeypatch, tmp_path):
    for var in ("EARTHDATA_TOKEN", "CDSE_USERNAME", "CDSE_PASSWORD", "CDSE_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))
    monkeypatch.setenv("EARTHDATA_USERNAME", USER)
    monkeypatch.setenv("EARTHDATA_PASSWORD", PASSWORD)


def _product_requests(server, pid):
    return [r for r in server.requests(f"/GRD_HD/SA/{pid}.zip") if "Cookie" in r["headers"]]


# ---------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------
def test_download_area_from_bbox_to_chips_and_resume(server, world, tmp_path, credentials):
    """bbox -> search -> products -> orbits -> catalogue -> preprocessing -> composite ->
    labels -> chips, every input fetched by the DAG; a run cut off mid-download leaves the
    finished products alone and resumes the cut one from its bytes on disk."""
    pids = sorted(world["files"])
    cut = pids[1]
    drop = {cut}
    state = serve_world(server, world, drop=drop)
    cfg = download_config(server, tmp_path)
    target = f"results/chips/{AREA}/x.npy"
    first = run_snakemake(tmp_path, cfg, "--cores", "2", "--keep-going", target, timeout=900)
    assert first.returncode != 0, "the cut-off download must fail the first run"
    assert f"{AREA}: {len(pids)} product(s)" in first.stderr  # the search's summary
    assert state["searches"] == 2  # 429 + Retry-After, then the answer
    products = tmp_path / "resources" / "download" / AREA / "products"
    part = products / f"{cut}.zip.part"
    assert not (products / f"{cut}.zip").exists() and part.exists()
    have = part.stat().st_size
    assert 0 < have < len(world["files"][cut])
    for pid in pids:
        if pid != cut:
            assert (products / f"{pid}.zip").read_bytes() == world["files"][pid]
    before = {pid: len(_product_requests(server, pid)) for pid in pids}

    drop.clear()  # the connection is back
    second = run_snakemake(tmp_path, cfg, "--cores", "2", target, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    after = {pid: len(_product_requests(server, pid)) for pid in pids}
    assert {pid for pid in pids if after[pid] != before[pid]} == {cut}  # only what was missing
    resumed = _product_requests(server, cut)[before[cut] :]
    assert resumed[0]["headers"].get("Range") == f"bytes={have}-"
    assert (products / f"{cut}.zip").read_bytes() == world["files"][cut]
    assert state["searches"] == 2  # the search result is reused, not repeated

    # the orbit files were fetched and preprocessing used them; DEM and labels were mosaicked
    import rasterio

    assert sorted(p.name for p in (tmp_path / f"resources/download/{AREA}/orbits").iterdir()) == (
        sorted(world["orbits"])
    )
    scenes = sorted((tmp_path / f"results/preprocessed/{AREA}").glob("S1*[0-9A-F].tif"))
    assert [s.stem for s in scenes] == pids
    with rasterio.open(scenes[0]) as ds:
        assert ds.tags()["ORBIT_SOURCE"] == "POEORB"
    with rasterio.open(tmp_path / f"resources/download/{AREA}/dem.tif") as ds:
        assert ds.tags()["VERTICAL_DATUM"] == "EGM2008"
    x = np.load(tmp_path / target, mmap_mode="r")
    assert x.shape[0] > 0 and x.shape[1] == 12
    for name in ("search", "dem", "worldcover", "treecover", "orbits"):
        assert (tmp_path / f"logs/acquire/{AREA}/{name}.log").exists()


def test_study_dry_run_stops_at_the_search_offline(tmp_path):
    """`snakemake -n` of config/study.yaml needs no network: it plans one search checkpoint
    per area and nothing that depends on the search results."""
    res = run_snakemake(
        tmp_path, ROOT / "config" / "study.yaml", "--cores", "1", "--dry-run", "--quiet", "rules"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert re.search(r"^acquire_search\s+5$", out, re.M)
    assert "acquire_product" not in out and "preprocess " not in out


def test_study_plan_against_local_servers(server, tmp_path, credentials):
    """`sarssl plan --search` runs only the searches (no download) and prints products,
    gigabytes, jobs and the profile's declared GPU-hours."""
    size = 1_700_000_000
    searched = []

    @server.route("GET", "/services/search/param")
    def _(h, q, b):
        wkt = q["intersectsWith"][0]
        searched.append(wkt)
        nums = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", wkt)]
        w, s, e, n = min(nums[0::2]), min(nums[1::2]), max(nums[0::2]), max(nums[1::2])
        ring = [[w - 1, s - 1], [e + 1, s - 1], [e + 1, n + 1], [w - 1, n + 1], [w - 1, s - 1]]
        feats = []
        for i, day in enumerate(("20210115", "20210420", "20210710", "20211002")):
            orbit, uniq = 36000 + 12 * i, f"{len(searched):02d}{i:02d}"
            pid = f"S1A_IW_GRDH_1SDV_{day}T170000_{day}T170025_{orbit:06d}_04{i}A2B_{uniq}"
            feats.append(
                {
                    "type": "Feature",
                    "geometry": {"type": "Polygon", "coordinates": [ring]},
                    "properties": {
                        "fileName": f"{pid}.zip",
                        "url": server.url(f"/GRD_HD/SA/{pid}.zip"),
                        "bytes": size,
                        "md5sum": "0" * 32,
                        "flightDirection": "ASCENDING",
                        "pathNumber": 44,
                        "startTime": f"{day[:4]}-{day[4:6]}-{day[6:]}T17:00:00.000Z",
                        "stopTime": f"{day[:4]}-{day[4:6]}-{day[6:]}T17:00:25.000Z",
                    },
                }
            )
        send_json(h, {"type": "FeatureCollection", "features": feats})

    study = yaml.safe_load((ROOT / "config" / "study.yaml").read_text())
    study["acquire"]["urls"] = {"asf_search": server.url("/services/search/param")}
    cfg = tmp_path / "study.yaml"
    cfg.write_text(yaml.safe_dump(study, sort_keys=False))
    sarssl = Path(sys.executable).with_name("sarssl")
    env_path = f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}"
    res = subprocess.run(
        [str(sarssl), "plan", "--configfile", str(cfg), "--search", "--json", "plan.json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PATH": env_path},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(searched) == 5  # one search per area, nothing downloaded
    assert not server.requests("/GRD_HD/")
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["products"] == 20 and plan["gigabytes"] == pytest.approx(20 * 1.7)
    assert plan["jobs"]["acquire_product"] == 20 and "acquire_search" not in plan["jobs"]
    assert plan["after_catalogue"] == {"preprocess": 20, "acquire_orbits": 5, "acquire_dem": 5}
    assert plan["jobs"]["finetune"] == 2 * 2 * (3 * 4 + 1 + 1)  # tasks x areas x init/protocols
    profile = yaml.safe_load((ROOT / "workflow/profiles/default/config.yaml").read_text())
    expect = sum(
        plan["jobs"].get(rule, 0) * res_["gpu"] * res_["runtime"] / 60
        for rule, res_ in profile["set-resources"].items()
        if res_.get("gpu")
    )
    assert plan["gpu_hours_total"] == pytest.approx(expect) and expect > 0
    assert "products: 20, 34.0 GB to download" in res.stdout
    assert "declared GPU-hours" in res.stdout


def _acquire(argv: list[str]) -> int:
    import argparse

    from sarssl.acquire.cli import add_arguments, run

    p = argparse.ArgumentParser()
    add_arguments(p)
    return run(p.parse_args(argv))


def test_search_manifest_then_product_download_and_bad_credentials(
    server, world, tmp_path, credentials, monkeypatch, capsys
):
    """The pair the DAG uses: `sentinel1 --dry-run --manifest` records the search (after a
    429) without downloading; `product` fetches one product of it; wrong credentials stop
    with the variables to set; an id not in the search is named."""
    from sarssl.acquire.http import AuthenticationError
    from sarssl.errors import SarsslError

    state = serve_world(server, world)
    search = tmp_path / "search.json"
    common = ["--backoff", "0", "--no-progress"]
    assert (
        _acquire(
            [
                "sentinel1",
                f"--aoi={','.join(map(str, BBOX))}",
                "--start",
                "2020-12-01",
                "--end",
                "2021-11-30",
                "--out-dir",
                str(tmp_path / "p"),
                "--dry-run",
                "--manifest",
                str(search),
                "--search-url",
                server.url("/services/search/param"),
                *common,
            ]
        )  # fmt: skip
        == 0
    )
    assert state["searches"] == 2 and not (tmp_path / "p").exists()
    doc = json.loads(search.read_text())
    pids = sorted(world["files"])
    assert [p["id"] for p in doc["products"]] == pids and doc["count"] == len(pids)
    assert doc["total_bytes"] == sum(len(v) for v in world["files"].values())
    assert f"# {len(pids)} product(s)" in capsys.readouterr().err

    login = ["--login-url", server.url("", host="localhost")]
    out = tmp_path / "one.zip"
    argv = ["product", "--search", str(search), "--id", pids[0], "--out", str(out), *login]
    assert _acquire(argv + common) == 0
    assert out.read_bytes() == world["files"][pids[0]]

    monkeypatch.setenv("EARTHDATA_PASSWORD", "expired")
    argv[6] = str(tmp_path / "two.zip")
    with pytest.raises(AuthenticationError, match="EARTHDATA_USERNAME"):
        _acquire(argv + common)
    assert not (tmp_path / "two.zip").exists()
    argv[4] = "S1A_IW_GRDH_1SDV_NOT_SEARCHED"
    with pytest.raises(SarsslError, match="no product 'S1A_IW_GRDH_1SDV_NOT_SEARCHED'"):
        _acquire(argv + common)


def test_killed_run_resumes_only_the_missing_bytes(server, world, tmp_path, credentials):
    """Snakemake and its jobs killed while a product is in flight: the rerun keeps the
    finished products and continues the cut one from the bytes on disk."""
    import os
    import signal
    import time

    from conftest import SNAKEFILE, snakemake_executable

    pids = sorted(world["files"])
    slow = pids[-1]
    gate = threading.Event()
    serve_world(server, world, hold={slow: gate})
    cfg = download_config(server, tmp_path)
    products = tmp_path / "resources" / "download" / AREA / "products"
    targets = [str(products.relative_to(tmp_path) / f"{pid}.zip") for pid in pids]
    cmd = [snakemake_executable(), "--snakefile", str(SNAKEFILE), "--directory",
           str(tmp_path), "--cores", "2", "--configfile", str(cfg),
           "--replace-workflow-config", *targets]  # fmt: skip
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    part = products / f"{slow}.zip.part"
    try:
        deadline = time.monotonic() + 300
        while not (part.exists() and part.stat().st_size > 0):  # the first 1 MiB chunk is in
            assert proc.poll() is None and time.monotonic() < deadline, "no transfer in flight"
            time.sleep(0.2)
        os.killpg(
            proc.pid, signal.SIGTERM
        )  # the whole run (as a scheduler does): snakemake and its jobs
        proc.wait(30)
    finally:
        gate.set()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    assert not (products / f"{slow}.zip").exists()
    have = part.stat().st_size
    done = {pid for pid in pids if (products / f"{pid}.zip").exists()}
    before = {pid: len(_product_requests(server, pid)) for pid in pids}

    again = run_snakemake(tmp_path, cfg, "--cores", "2", *targets, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for pid in pids:
        assert (products / f"{pid}.zip").read_bytes() == world["files"][pid]
    fetched = {pid for pid in pids if len(_product_requests(server, pid)) > before[pid]}
    assert slow in fetched and not (fetched & done)  # nothing finished is fetched again
    assert _product_requests(server, slow)[before[slow]]["headers"].get("Range") == (
        f"bytes={have}-"
    )


def test_cdse_search_pages_then_product_with_expired_token(
    server, world, tmp_path, monkeypatch, capsys
):
    """acquire.provider: cdse. The search follows OData's @odata.nextLink pages into the
    search result; `product` gets a bearer token, and when the data host rejects it as
    expired, fetches a new one and retries once."""
    from urllib.parse import parse_qs

    for var in ("CDSE_TOKEN", "EARTHDATA_USERNAME", "EARTHDATA_PASSWORD", "EARTHDATA_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))
    monkeypatch.setenv("CDSE_USERNAME", "carol")
    monkeypatch.setenv("CDSE_PASSWORD", "pw")
    pids = sorted(world["files"])
    uuid = {pid: f"{i:08d}-aaaa-bbbb" for i, pid in enumerate(pids)}
    tokens, seen = [], []

    @server.route("POST", "/token")
    def _(h, q, b):
        form = parse_qs(b.decode())
        if form.get("username") == ["carol"] and form.get("password") == ["pw"]:
            tokens.append(f"tok{len(tokens) + 1}")
            send_json(h, {"access_token": tokens[-1], "expires_in": 600})
        else:
            send_json(h, {"error": "invalid_grant"}, status=401)

    def item(pid):
        props = next(
            f["properties"] for f in world["features"] if f["properties"]["sceneName"] == pid
        )
        return {
            "Id": uuid[pid],
            "Name": f"{pid}.SAFE",
            "ContentLength": props["bytes"],
            "Checksum": [{"Value": props["md5sum"], "Algorithm": "MD5"}],
            "ContentDate": {"Start": props["startTime"], "End": props["stopTime"]},
            "Footprint": "geography'SRID=4326;POLYGON ((33 -19, 35 -19, 35 -17, 33 -17, 33 -19))'",
            "Attributes": [
                {"Name": "orbitDirection", "Value": props["flightDirection"]},
                {"Name": "relativeOrbitNumber", "Value": props["pathNumber"]},
            ],
        }

    @server.route("GET", "/odata/v1/Products")
    def _(h, q, b):
        page = int(q.get("page", ["1"])[0])
        doc = {"value": [item(pid) for pid in pids[2 * (page - 1) : 2 * page]]}
        if 2 * page < len(pids):
            doc["@odata.nextLink"] = server.url(f"/odata/v1/Products?page={page + 1}")
        send_json(h, doc)

    for pid in pids:

        def serve(h, q, b, data=world["files"][pid]):
            seen.append(h.headers.get("Authorization"))
            if len(seen) == 1:
                send_json(h, {"detail": "Expired signature!"}, status=401)
            elif h.headers.get("Authorization") in {f"Bearer {t}" for t in tokens}:
                send_file(h, data)
            else:
                send_json(h, {"detail": "Not authenticated"}, status=401)

        server.routes[("GET", f"/dl/Products({uuid[pid]})/$value")] = serve

    urls = ["--download-url", server.url("/dl"), "--token-url", server.url("/token")]
    common = ["--backoff", "0", "--no-progress"]
    search = tmp_path / "search.json"
    assert (
        _acquire(
            [
                "sentinel1",
                f"--aoi={','.join(map(str, BBOX))}",
                "--start",
                "2020-12-01",
                "--end",
                "2021-11-30",
                "--out-dir",
                str(tmp_path / "p"),
                "--provider",
                "cdse",
                "--catalogue-url",
                server.url("/odata/v1"),
                "--dry-run",
                "--manifest",
                str(search),
                *urls,
                *common,
            ]
        )  # fmt: skip
        == 0
    )
    assert len(server.requests("/odata/v1/Products")) == (len(pids) + 1) // 2  # every page
    assert [p["id"] for p in json.loads(search.read_text())["products"]] == pids
    assert not tokens  # searching needs no login
    out = tmp_path / "one.zip"
    argv = ["product", "--search", str(search), "--id", pids[-1], "--out", str(out)]
    assert _acquire(argv + urls + common) == 0
    assert out.read_bytes() == world["files"][pids[-1]]
    assert tokens == ["tok1", "tok2"] and seen == ["Bearer tok1", "Bearer tok2"]


def test_plan_without_searches_names_them_and_stops_there(tmp_path, capsys):
    """Offline, before any search: the plan names the areas still to search, counts the
    jobs up to the search checkpoints and downloads nothing."""
    import argparse

    from sarssl.acquire import plan as plan_mod

    p = argparse.ArgumentParser()
    plan_mod.add_arguments(p)
    args = p.parse_args(
        ["--configfile", str(ROOT / "config" / "study.yaml"), "--directory", str(tmp_path)]
    )
    summary = plan_mod.plan(args)
    assert summary["searches_missing"] == ["po_valley", "castilla", "bavaria", "lazio", "manica"]
    assert summary["products"] == 0 and summary["after_catalogue"] == {}
    assert summary["jobs"]["acquire_search"] == 5 and "acquire_product" not in summary["jobs"]
    assert "no search result yet for: po_valley" in plan_mod.format_plan(summary)
    assert not (tmp_path / "resources").exists()
