"""``sarssl acquire geoid`` against a local HTTP server on 127.0.0.1 (never the real CDN).

A tiny fake global geoid grid (10 degree nodes, N linear in lon/lat so that bilinear
interpolation is exact) is served like the PROJ CDN; the tests download it, check the
verification, and that :mod:`sarssl.sar.dem` then finds it in the per-user folder and converts
an EGM2008 DEM with it (not with the EGM96 fallback).
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import CRS

from conftest import client, send_file
from sarssl.acquire import geoid as geoid_mod
from sarssl.acquire.cli import add_arguments, run
from sarssl.errors import SarsslError
from sarssl.sar import dem as dem_mod

STEP = 10.0  # degrees between grid nodes


def fake_n(lon, lat):
    """The fake undulation (m): linear, so bilinear interpolation reproduces it exactly."""
    return 0.25 * np.asarray(lon, dtype=np.float64) + 0.5 * np.asarray(lat, dtype=np.float64) + 3.0


def fake_grid_tif(*, lat_max: float = 90.0, scale: float = 1.0) -> bytes:
    """A PROJ-style global grid: nodes (pixel centres) on -180..180 x -90..lat_max."""
    lon = np.arange(-180.0, 180.0 + STEP / 2, STEP)
    lat = np.arange(lat_max, -90.0 - STEP / 2, -STEP)
    data = (fake_n(lon[None, :], lat[:, None]) * scale).astype(np.float32)
    transform = Affine(STEP, 0, -180.0 - STEP / 2, 0, -STEP, lat_max + STEP / 2)
    buf = io.BytesIO()
    with rasterio.MemoryFile() as mem:
        with mem.open(
            driver="GTiff",
            width=data.shape[1],
            height=data.shape[0],
            count=1,
            dtype="float32",
            crs="EPSG:4326",
            transform=transform,
        ) as ds:
            ds.write(data, 1)
        buf.write(mem.read())
    return buf.getvalue()


@pytest.fixture
def isolated_geoid_dirs(monkeypatch, tmp_path):
    """No grid anywhere except what a test downloads: HOME/XDG point into tmp_path, the PROJ
    variables are cleared, pyproj's and the system data dirs are replaced by an empty folder."""
    home = tmp_path / "home"
    home.mkdir()
    for var in ("SARSSL_GEOID_DIR", "PROJ_DATA", "PROJ_LIB", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(home))
    empty = tmp_path / "empty"
    empty.mkdir()
    orig = dem_mod._grid_dirs

    def dirs():
        # keep the env/user entries, drop the machine-wide ones (pyproj, /usr/share/proj)
        return [d for d in orig() if str(d).startswith(str(tmp_path))] + [empty]

    monkeypatch.setattr(dem_mod, "_grid_dirs", dirs)
    dem_mod._load_geoid.cache_clear()
    yield home
    dem_mod._load_geoid.cache_clear()


def serve(server, name: str, data: bytes) -> None:
    @server.route("GET", f"/proj/{name}")
    def _(h, q, body):
        send_file(h, data)


def cli(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p)
    return run(p.parse_args(argv))


def write_dem(path, height: float, crs) -> None:
    """A 20x20 px constant-height DEM around Rome (12.4..12.6 E, 41.8..42.0 N)."""
    data = np.full((20, 20), height, dtype=np.float32)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=20,
        height=20,
        count=1,
        dtype="float32",
        crs=crs,
        transform=Affine(0.01, 0, 12.4, 0, -0.01, 42.0),
    ) as ds:
        ds.write(data, 1)


def test_default_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.delenv("SARSSL_GEOID_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dem_mod.user_geoid_dir() == tmp_path / ".local" / "share" / "sarssl" / "geoid"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert dem_mod.user_geoid_dir() == tmp_path / "xdg" / "sarssl" / "geoid"
    monkeypatch.setenv("SARSSL_GEOID_DIR", str(tmp_path / "g"))
    assert dem_mod.user_geoid_dir() == tmp_path / "g"
    assert tmp_path / "g" in dem_mod._grid_dirs()


def test_cli_downloads_egm2008_and_dem_uses_it(
    server, tmp_path, isolated_geoid_dirs, capsys, caplog
):
    """Default dir download; then an EGM2008 DEM is converted with the fake grid, no fallback."""
    # an EGM96 grid is present too, with different values: the EGM2008 DEM must not use it
    egm96_dir = tmp_path / "home" / ".local" / "share" / "sarssl" / "geoid"
    egm96_dir.mkdir(parents=True)
    (egm96_dir / "us_nga_egm96_15.tif").write_bytes(fake_grid_tif(scale=-1.0))
    data = fake_grid_tif()
    serve(server, "us_nga_egm08_25.tif", data)
    assert (
        cli(
            [
                "geoid",
                "--model",
                "EGM2008",
                "--base-url",
                server.url("/proj"),
                "--no-progress",
                "--retries",
                "0",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    dest = egm96_dir / "us_nga_egm08_25.tif"
    assert out[0] == str(dest)
    assert out[1] == f"export SARSSL_GEOID_DIR={egm96_dir.resolve()}"
    assert dest.read_bytes() == data
    assert not list(egm96_dir.glob("*.part"))
    assert dem_mod.find_geoid_grid("EGM2008") == dest

    caplog.set_level(logging.WARNING, logger="sarssl.sar.dem")
    # node value exactly, and a point between nodes (bilinear of a linear field = the field)
    np.testing.assert_allclose(
        dem_mod.geoid_undulation(np.array([10.0]), np.array([40.0]), "EGM2008"),
        fake_n(10.0, 40.0),
        atol=1e-5,
    )
    lon, lat = np.array([12.5, -71.3]), np.array([41.9, -33.4])
    np.testing.assert_allclose(
        dem_mod.geoid_undulation(lon, lat, "EGM2008"), fake_n(lon, lat), atol=1e-4
    )
    # EGM96 grid is a different file with the opposite sign
    np.testing.assert_allclose(
        dem_mod.geoid_undulation(lon, lat, "EGM96"), -fake_n(lon, lat), atol=1e-4
    )

    dem_path = tmp_path / "dem.tif"
    write_dem(dem_path, 100.0, CRS.from_epsg(9518))  # WGS 84 + EGM2008 height (Copernicus DEM)
    dem = dem_mod.read_dem(dem_path, (12.45, 41.85, 12.55, 41.95))
    assert dem.vertical_datum == "EGM2008" and dem.geoid == "EGM2008 (us_nga_egm08_25.tif)"
    t = dem.transform
    lons = t.c + t.a * (np.arange(dem.shape[1]) + 0.5)
    lats = t.f + t.e * (np.arange(dem.shape[0]) + 0.5)
    np.testing.assert_allclose(dem.height, 100.0 + fake_n(lons[None, :], lats[:, None]), atol=1e-4)
    assert not [r for r in caplog.records if "no EGM2008 geoid grid" in r.getMessage()]


def test_without_egm2008_the_fallback_warns(tmp_path, isolated_geoid_dirs, caplog):
    """Control for the test above: with only EGM96 present, EGM2008 falls back with a warning."""
    d = dem_mod.user_geoid_dir()
    d.mkdir(parents=True)
    (d / "us_nga_egm96_15.tif").write_bytes(fake_grid_tif(scale=-1.0))
    caplog.set_level(logging.WARNING, logger="sarssl.sar.dem")
    n = dem_mod.geoid_undulation(np.array([12.5]), np.array([41.9]), "EGM2008")
    np.testing.assert_allclose(n, -fake_n(12.5, 41.9), atol=1e-4)
    assert [r for r in caplog.records if "no EGM2008 geoid grid" in r.getMessage()]
    assert dem_mod.geoid_in_use("EGM2008") == "EGM96 (us_nga_egm96_15.tif) for EGM2008"
    dem_path = tmp_path / "dem.tif"
    write_dem(dem_path, 100.0, CRS.from_epsg(4326))  # no vertical datum stated: EGM2008
    dem = dem_mod.read_dem(dem_path, (12.45, 41.85, 12.55, 41.95))
    assert (
        dem.vertical_datum == "EGM2008" and dem.geoid == "EGM96 (us_nga_egm96_15.tif) for EGM2008"
    )
    write_dem(dem_path, 100.0, CRS.from_epsg(4979))  # ellipsoidal already: no geoid at all
    dem = dem_mod.read_dem(dem_path, (12.45, 41.85, 12.55, 41.95))
    assert dem.vertical_datum == "ellipsoid" and dem.geoid.startswith("none")
    np.testing.assert_array_equal(dem.height, 100.0)


def test_out_dir_egm96_and_existing_file_kept(server, tmp_path, isolated_geoid_dirs):
    data = fake_grid_tif()
    serve(server, "us_nga_egm96_15.tif", data)
    out = tmp_path / "grids"
    info = geoid_mod.acquire_geoid("egm96", client(), out_dir=out, base_url=server.url("/proj"))
    assert info.path == out / "us_nga_egm96_15.tif" and info.path.read_bytes() == data
    assert info.shape == (19, 37) and info.resolution == STEP
    assert info.bounds == (-185.0, -95.0, 185.0, 95.0)
    assert info.n_min == pytest.approx(fake_n(-180, -90)) and info.n_max == pytest.approx(
        fake_n(180, 90)
    )
    n_requests = len(server.requests("/proj/"))
    geoid_mod.acquire_geoid("egm96", client(), out_dir=out, base_url=server.url("/proj"))
    assert len(server.requests("/proj/")) == n_requests  # kept, not fetched again


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"<html>Service unavailable</html>", "not a readable raster"),
        (fake_grid_tif(lat_max=0.0), "not the whole globe"),
        (fake_grid_tif(scale=100.0), "implausible"),
    ],
)
def test_bad_grid_is_deleted_with_clear_error(
    server, tmp_path, isolated_geoid_dirs, payload, message
):
    serve(server, "us_nga_egm08_25.tif", payload)
    out = tmp_path / "grids"
    with pytest.raises(SarsslError, match=message) as err:
        geoid_mod.acquire_geoid("egm2008", client(), out_dir=out, base_url=server.url("/proj"))
    assert "us_nga_egm08_25.tif" in str(err.value) and "deleted" in str(err.value)
    assert not (out / "us_nga_egm08_25.tif").exists()


def test_unknown_model_and_missing_file(server, tmp_path, isolated_geoid_dirs):
    with pytest.raises(SarsslError, match="geoid model 'egm84'"):
        geoid_mod.geoid_file("egm84")
    with pytest.raises(SarsslError, match="404"):
        geoid_mod.acquire_geoid(
            "egm2008", client(), out_dir=tmp_path / "g", base_url=server.url("/proj")
        )
