"""Seasonal compositing: season boundaries, linear-power mean/median, channel order, NaN."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import rasterio
import rasterio.shutil  # noqa: F401  (works around sarssl.io not importing it)

from sarssl import CHANNELS, SEASONS
from sarssl.cli import main
from sarssl.data.composite import assign_season, composite, season_windows
from sarssl.errors import InputError, SarsslError
from sarssl.io import write_geotiff
from sarssl.sar.grid import area_grid

GRID = area_grid((12.46, 41.96, 12.47, 41.965), 10.0)  # ~85 x 57 px, UTM 33N


def _scene(path, vv, vh, when: str, grid=GRID, units=None):
    tags = {"ACQUISITION_START": when, "PRODUCT_ID": path.stem}
    if units:
        tags["UNITS"] = units
    data = np.stack([np.broadcast_to(vv, grid.shape), np.broadcast_to(vh, grid.shape)]).astype(
        np.float32
    )
    write_geotiff(
        path,
        data,
        crs=grid.crs,
        transform=grid.transform,
        nodata=float("nan"),
        band_names=["VV", "VH"],
        tags=tags,
    )
    return path


@pytest.mark.parametrize(
    "day,season",
    [
        ("2020-11-30", None),
        ("2020-12-01", "winter"),
        ("2021-01-15", "winter"),
        ("2021-02-28", "winter"),
        ("2021-03-01", "spring"),
        ("2021-05-31", "spring"),
        ("2021-06-01", "summer"),
        ("2021-08-31", "summer"),
        ("2021-09-01", "fall"),
        ("2021-11-30", "fall"),
        ("2021-12-01", None),
        ("2022-01-10", None),
    ],
)
def test_season_boundaries_2021(day, season):
    w = season_windows(2021)
    assert assign_season(dt.date.fromisoformat(day), w) == season


def test_leap_year_winter():
    w = season_windows(2024)
    assert w["winter"] == (dt.date(2023, 12, 1), dt.date(2024, 2, 29))
    assert assign_season(dt.date(2024, 2, 29), w) == "winter"
    assert assign_season(dt.datetime(2024, 2, 29, 23, 59), w) == "winter"
    assert season_windows(2021)["winter"][1] == dt.date(2021, 2, 28)


def test_custom_and_bad_seasons():
    custom = {
        "winter": ["01-01", "03-end"],
        "spring": ["04-01", "06-30"],
        "summer": ["07-01", "09-30"],
        "fall": ["10-01", "12-31"],
    }
    w = season_windows(2021, custom)
    assert w["winter"] == (dt.date(2021, 1, 1), dt.date(2021, 3, 31))
    with pytest.raises(SarsslError, match="overlap"):
        season_windows(2021, {**custom, "spring": ["03-15", "06-30"]})
    with pytest.raises(SarsslError, match="expected exactly"):
        season_windows(2021, {"winter": ["12-01", "02-end"]})
    with pytest.raises(SarsslError, match="bad month-day"):
        season_windows(2021, {**custom, "fall": ["10-01", "13-01"]})


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.tags(), src.descriptions


def test_mean_and_median_in_linear_power(tmp_path):
    # winter: -10 and -20 dB VV -> mean of 0.1 and 0.01 = 0.055 in linear power
    s = [
        _scene(tmp_path / "a.tif", -10.0, -16.0, "2020-12-05T05:00:00Z"),
        _scene(tmp_path / "b.tif", -20.0, -26.0, "2021-02-28T23:00:00.123456"),
        # spring: three scenes, median of linear power = the middle one
        _scene(tmp_path / "c.tif", -5.0, -12.0, "2021-03-01T00:00:00"),
        _scene(tmp_path / "d.tif", -7.0, -14.0, "2021-04-01T00:00:00"),
        _scene(tmp_path / "e.tif", -30.0, -19.0, "2021-05-31T12:00:00"),
        # summer and fall one scene each
        _scene(tmp_path / "f.tif", -8.0, -15.0, "2021-07-01T00:00:00"),
        _scene(tmp_path / "g.tif", -9.0, -17.0, "2021-11-30T10:00:00"),
        # outside 2021 -> ignored
        _scene(tmp_path / "h.tif", 0.0, 0.0, "2021-12-01T00:00:00"),
    ]
    out, cnt = tmp_path / "comp.tif", tmp_path / "comp_count.tif"
    summary = composite(s, 2021, out, cnt, method="mean", block_rows=16, progress=False)
    assert summary["per_season"] == {"winter": 2, "spring": 3, "summer": 1, "fall": 1}
    assert summary["ignored"] == [str(tmp_path / "h.tif")]
    data, tags, desc = _read(out)
    assert data.shape == (12, *GRID.shape) and data.dtype == np.float32
    assert list(desc) == list(CHANNELS)
    assert json.loads(tags["CHANNELS"]) == list(CHANNELS)
    assert tags["COMPOSITE_METHOD"] == "mean" and tags["YEAR"] == "2021" and tags["N_SCENES"] == "7"
    i = {c: k for k, c in enumerate(CHANNELS)}
    vv_w = 10 * np.log10((0.1 + 0.01) / 2)
    vh_w = 10 * np.log10((10**-1.6 + 10**-2.6) / 2)
    np.testing.assert_allclose(data[i["vv_winter"]], vv_w, atol=1e-4)
    np.testing.assert_allclose(data[i["vh_winter"]], vh_w, atol=1e-4)
    np.testing.assert_allclose(data[i["vvvh_winter"]], vv_w - vh_w, atol=1e-4)
    sp = 10 * np.log10((10**-0.5 + 10**-0.7 + 10**-3.0) / 3)
    np.testing.assert_allclose(data[i["vv_spring"]], sp, atol=1e-4)
    np.testing.assert_allclose(data[i["vv_summer"]], -8.0, atol=1e-4)
    np.testing.assert_allclose(data[i["vvvh_fall"]], 8.0, atol=1e-4)
    counts, ctags, _ = _read(cnt)
    assert counts.dtype == np.uint16
    assert [int(counts[k, 0, 0]) for k in range(4)] == [2, 3, 1, 1]

    med = composite(
        s, 2021, tmp_path / "m.tif", tmp_path / "m_count.tif", method="median", progress=False
    )
    assert med["method"] == "median"
    mdata, mtags, _ = _read(tmp_path / "m.tif")
    assert mtags["COMPOSITE_METHOD"] == "median"
    np.testing.assert_allclose(mdata[i["vv_spring"]], -7.0, atol=1e-4)  # middle of three
    np.testing.assert_allclose(mdata[i["vh_spring"]], -14.0, atol=1e-4)
    # even count: median averages the two middle values in linear power
    np.testing.assert_allclose(mdata[i["vv_winter"]], vv_w, atol=1e-4)


def test_nan_handling_and_count(tmp_path):
    vv1 = np.full(GRID.shape, -10.0, np.float32)
    vv1[0, 0] = np.nan  # no VV at (0,0) in scene 1
    vh1 = np.full(GRID.shape, -15.0, np.float32)
    vh1[1, 1] = np.nan  # no VH at (1,1) in scene 1 -> the whole observation is dropped
    vv2 = np.full(GRID.shape, -20.0, np.float32)
    vv2[0, 0] = np.nan  # (0,0): no data in any scene
    s = [
        _scene(tmp_path / "a.tif", vv1, vh1, "2021-06-05T00:00:00"),
        _scene(tmp_path / "b.tif", vv2, -25.0, "2021-07-05T00:00:00"),
        _scene(tmp_path / "c.tif", -10.0, -15.0, "2021-01-05T00:00:00"),  # winter only
    ]
    composite(
        s,
        2021,
        tmp_path / "o.tif",
        tmp_path / "o_count.tif",
        block_rows=7,
        progress=False,
        min_scenes_per_season=0,
    )
    data, tags, _ = _read(tmp_path / "o.tif")
    assert json.loads(tags["EMPTY_SEASONS"]) == ["spring", "fall"]
    counts, _, _ = _read(tmp_path / "o_count.tif")
    i = {c: k for k, c in enumerate(CHANNELS)}
    su = SEASONS.index("summer")
    assert counts[su, 0, 0] == 0 and counts[su, 1, 1] == 1 and counts[su, 5, 5] == 2
    assert np.isnan(data[i["vv_summer"], 0, 0]) and np.isnan(data[i["vvvh_summer"], 0, 0])
    np.testing.assert_allclose(data[i["vv_summer"], 1, 1], -20.0, atol=1e-4)
    np.testing.assert_allclose(data[i["vh_summer"], 1, 1], -25.0, atol=1e-4)
    np.testing.assert_allclose(data[i["vv_summer"], 5, 5], 10 * np.log10(0.055), atol=1e-4)
    # seasons without scenes are all no data, with zero counts
    assert np.isnan(data[i["vv_spring"]]).all() and (counts[SEASONS.index("spring")] == 0).all()


def test_linear_units_input(tmp_path):
    s = [
        _scene(tmp_path / "a.tif", 0.1, 0.01, "2021-06-05T00:00:00", units="linear"),
        _scene(tmp_path / "b.tif", 0.01, 0.001, "2021-06-06T00:00:00", units="linear"),
    ]
    composite(
        s, 2021, tmp_path / "o.tif", tmp_path / "n.tif", progress=False, min_scenes_per_season=0
    )
    data, _, _ = _read(tmp_path / "o.tif")
    np.testing.assert_allclose(data[CHANNELS.index("vv_summer")], 10 * np.log10(0.055), atol=1e-4)


def test_refuses_other_grid_and_missing_tag(tmp_path):
    other = area_grid((12.46, 41.96, 12.4701, 41.965), 10.0)
    assert other.shape != GRID.shape
    a = _scene(tmp_path / "a.tif", -10.0, -15.0, "2021-06-05T00:00:00")
    b = _scene(tmp_path / "b.tif", -10.0, -15.0, "2021-06-06T00:00:00", grid=other)
    with pytest.raises(InputError, match="b.tif.*grid"):
        composite([a, b], 2021, tmp_path / "o.tif", tmp_path / "n.tif", progress=False)
    write_geotiff(
        tmp_path / "x.tif", np.zeros((2, 4, 4), np.float32), crs=GRID.crs, transform=GRID.transform
    )
    with pytest.raises(InputError, match="x.tif.*ACQUISITION_START"):
        composite(
            [a, tmp_path / "x.tif"], 2021, tmp_path / "o.tif", tmp_path / "n.tif", progress=False
        )
    with pytest.raises(InputError, match="none of the"):
        composite([a], 2019, tmp_path / "o.tif", tmp_path / "n.tif", progress=False)
    assert not (tmp_path / "o.tif").exists()


def test_cli(tmp_path, capsys):
    a = _scene(tmp_path / "a.tif", -10.0, -15.0, "2021-06-05T00:00:00")
    rc = main(
        [
            "composite",
            str(a),
            "--year",
            "2021",
            "--method",
            "median",
            "--min-scenes-per-season",
            "0",
            "--seasons",
            json.dumps(
                {
                    "winter": ["12-01", "02-end"],
                    "spring": ["03-01", "05-31"],
                    "summer": ["06-01", "08-31"],
                    "fall": ["09-01", "11-30"],
                }
            ),
            "--out",
            str(tmp_path / "o.tif"),
            "--count-out",
            str(tmp_path / "n.tif"),
        ]
    )
    assert rc == 0 and (tmp_path / "o.tif").exists() and (tmp_path / "n.tif").exists()
    rc = main(
        [
            "composite",
            str(a),
            "--year",
            "2021",
            "--seasons",
            "{bad",
            "--out",
            str(tmp_path / "o.tif"),
            "--count-out",
            str(tmp_path / "n.tif"),
        ]
    )
    assert rc == 2 and "--seasons" in capsys.readouterr().err


def test_numba_kernels_match_numpy_reference():
    from sarssl.data.composite import _accumulate, _accumulate_np, _finish, _finish_np

    rng = np.random.default_rng(4)
    shape = (13, 17)
    tot_a, tot_b = np.zeros((2, *shape)), np.zeros((2, *shape))
    n_a, n_b = np.zeros(shape, np.uint16), np.zeros(shape, np.uint16)
    for k in range(5):
        vv = rng.normal(-12, 5, shape).astype(np.float32)
        vh = rng.normal(-18, 5, shape).astype(np.float32)
        vv[rng.random(shape) < 0.2] = np.nan
        vh[rng.random(shape) < 0.2] = np.nan
        linear = k == 4
        if linear:  # linear input: non-positive power is no data
            vv, vh = 10 ** (vv / 10), 10 ** (vh / 10)
            vv[0, :3] = -1.0
            vh[1, :3] = 0.0
        _accumulate(vv, vh, linear, tot_a, n_a)
        _accumulate_np(vv, vh, linear, tot_b, n_b)
    np.testing.assert_array_equal(n_a, n_b)
    np.testing.assert_allclose(tot_a, tot_b, rtol=1e-12)
    assert n_a.min() < 5 and n_a.max() > 0
    out_a, out_b = np.empty((3, *shape), np.float32), np.empty((3, *shape), np.float32)
    n_a[0, 0] = 0
    _finish(tot_a, n_a, out_a)
    _finish_np(tot_a, n_a, out_b)
    np.testing.assert_allclose(out_a, out_b, atol=1e-4, equal_nan=True)
    assert np.isnan(out_a[:, 0, 0]).all()


def test_block_written_cog_and_compression(tmp_path):
    rng = np.random.default_rng(1)
    vv = rng.normal(-10, 2, GRID.shape).astype(np.float32)
    s = [
        _scene(tmp_path / "a.tif", vv, vv - 6, "2021-06-05T00:00:00"),
        _scene(tmp_path / "b.tif", vv + 1, vv - 5, "2021-06-07T00:00:00"),
    ]
    ref = composite(
        s,
        2021,
        tmp_path / "d.tif",
        tmp_path / "d_n.tif",
        block_rows=5,
        compress="deflate",
        progress=False,
        min_scenes_per_season=0,
    )
    assert set(ref["seconds"]) == {"composite", "publish_cog"}
    z = composite(
        s,
        2021,
        tmp_path / "z.tif",
        tmp_path / "z_n.tif",
        compress="zstd",
        progress=False,
        min_scenes_per_season=0,
    )
    assert z["shape"] == ref["shape"]
    d, _, _ = _read(tmp_path / "d.tif")
    zd, _, _ = _read(tmp_path / "z.tif")
    np.testing.assert_array_equal(np.nan_to_num(d, nan=-999), np.nan_to_num(zd, nan=-999))
    expect = 10 * np.log10((10 ** (vv / 10) + 10 ** ((vv + 1) / 10)) / 2)
    np.testing.assert_allclose(d[CHANNELS.index("vv_summer")], expect, atol=1e-4)
    with rasterio.open(tmp_path / "d.tif") as src:
        assert src.compression.name.lower() == "deflate"
    with rasterio.open(tmp_path / "z.tif") as src:
        assert src.compression is not None and src.compression.name.lower() == "zstd"
        assert src.profile["tiled"]
        assert src.tags()["COMPOSITE_METHOD"] == "mean"
    # no temporaries left beside the outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.tif", "b.tif", "d.tif", "d_n.tif", "z.tif", "z_n.tif"]
    )


def test_season_without_scene_is_named(tmp_path, capsys):
    """A season with no scene stops compositing with an error naming the season and its
    dates (before: a warning, NaN channels, and a failure later in `chips` that named no
    season); --min-scenes-per-season 0 accepts it with a warning and an EMPTY_SEASONS tag."""
    s = [
        _scene(tmp_path / "a.tif", -10.0, -15.0, "2021-01-05T00:00:00"),
        _scene(tmp_path / "b.tif", -10.0, -15.0, "2021-04-05T00:00:00"),
        _scene(tmp_path / "c.tif", -10.0, -15.0, "2021-10-05T00:00:00"),
    ]
    args = [
        "composite",
        *map(str, s),
        "--year",
        "2021",
        "--out",
        str(tmp_path / "o.tif"),
        "--count-out",
        str(tmp_path / "n.tif"),
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "summer (2021-06-01 .. 2021-08-31): 0 scene(s)" in err, err
    assert "--min-scenes-per-season" in err
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "n.tif").exists()
    with pytest.raises(InputError, match=r"spring .*1 scene\(s\)"):
        composite(
            s, 2021, tmp_path / "o.tif", tmp_path / "n.tif", progress=False, min_scenes_per_season=2
        )
    assert main([*args, "--min-scenes-per-season", "0"]) == 0
    with rasterio.open(tmp_path / "o.tif") as src:
        assert json.loads(src.tags()["EMPTY_SEASONS"]) == ["summer"]
