"""Chip cutting: aligned grid, QA drops, labels per chip, spatial split, fractions, stats."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.shutil  # noqa: F401  (works around sarssl.io not importing it)
from affine import Affine

from sarssl import CHANNELS
from sarssl.cli import main
from sarssl.data.chips import DEFAULT_PATTERN, chip_grid, chip_id, make_chips, split_bands
from sarssl.data.labels import worldcover_to_class
from sarssl.data.loaders import load_chips
from sarssl.data.store import ChipStore
from sarssl.errors import InputError, SarsslError
from sarssl.io import write_geotiff
from sarssl.sar.grid import Grid, area_grid

SIZE = 16
GRID = area_grid((12.46, 41.96, 12.48, 41.975), 10.0)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chips_in")
    rng = np.random.default_rng(0)
    h, w = GRID.shape
    comp = rng.normal(-12, 3, size=(12, h, w)).astype(np.float32)
    chips = chip_grid(GRID, SIZE)
    special = {}
    c = chips[5]  # all no data
    comp[:, c.row_off : c.row_off + SIZE, c.col_off : c.col_off + SIZE] = np.nan
    special["nodata"] = c
    c = chips[12]  # a constant channel
    comp[3, c.row_off : c.row_off + SIZE, c.col_off : c.col_off + SIZE] = -12.0
    special["constant"] = c
    c = chips[20]  # two no-data pixels (in one channel): kept
    comp[7, c.row_off, c.col_off : c.col_off + 2] = np.nan
    special["few_nan"] = c
    cpath = tmp / "comp.tif"
    write_geotiff(
        cpath,
        comp,
        crs=GRID.crs,
        transform=GRID.transform,
        nodata=float("nan"),
        band_names=list(CHANNELS),
        tags={"COMPOSITE_METHOD": "mean", "YEAR": 2021},
    )
    codes = np.array([10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100, 0], np.uint8)
    lc = codes[rng.integers(0, 12, size=(h, w))]
    lpath = tmp / "lc.tif"
    write_geotiff(lpath, lc, crs=GRID.crs, transform=GRID.transform, nodata=0)
    tc = rng.integers(0, 101, size=(h, w)).astype(np.uint8)
    tc[:, :5] = 200  # water
    tpath = tmp / "tc.tif"
    write_geotiff(tpath, tc, crs=GRID.crs, transform=GRID.transform)
    return dict(
        comp=comp, lc=lc, tc=tc, cpath=cpath, lpath=lpath, tpath=tpath, chips=chips, special=special
    )


@pytest.fixture(scope="module")
def store(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("chips_out") / "rome"
    meta = make_chips(
        inputs["cpath"],
        inputs["lpath"],
        inputs["tpath"],
        "rome",
        out,
        size=SIZE,
        max_nodata=0.05,
        split_angle=30,
        split_band_width=320,
        progress=False,
    )
    assert (
        main(["fractions", "--chips-dir", str(out), "--fractions", "0.1,0.5,1", "--seed", "7"]) == 0
    )
    return out, meta


def test_chip_grid_alignment():
    chips = chip_grid(GRID, SIZE)
    step = SIZE * 10.0
    gx0, gy0, gx1, gy1 = GRID.bounds
    assert chips[0].x_left == math.ceil(gx0 / step) * step
    assert chips[0].y_top == math.floor(gy1 / step) * step
    for c in chips:
        assert c.x_left % step == 0 and c.y_top % step == 0
        assert (
            gx0 <= c.x_left and c.x_left + step <= gx1 and gy0 <= c.y_top - step and c.y_top <= gy1
        )
        assert c.col_off == round((c.x_left - gx0) / 10) and c.row_off == round(
            (gy1 - c.y_top) / 10
        )
    nx = int((math.floor(gx1 / step) - math.ceil(gx0 / step)))
    ny = int((math.floor(gy1 / step) - math.ceil(gy0 / step)))
    assert len(chips) == nx * ny
    over = chip_grid(GRID, SIZE, overlap=8)
    assert all(c.x_left % 80 == 0 for c in over) and len(over) > 3 * len(chips)
    with pytest.raises(SarsslError):
        chip_grid(GRID, SIZE, overlap=SIZE)
    assert chip_id(32633, 290080.0, 4650080.0) == "32633_290080_4650080"


def test_split_bands_by_hand():
    # angle 0: horizontal bands of 100 m stacked in y
    band, split = split_bands(
        np.array([5.0, 1e6, 0, 0]),
        np.array([50.0, 50.0, 150.0, -50.0]),
        0.0,
        100.0,
        ["train", "train", "train", "test", "val"],
    )
    assert band.tolist() == [0, 0, 1, -1] and split == ["train", "train", "train", "val"]
    # angle 90: vertical bands across x (d = -x)
    band, _ = split_bands(np.array([50.0, -150.0]), np.array([7.0, 1e5]), 90.0, 100.0, ["train"])
    assert band.tolist() == [-1, 1]
    with pytest.raises(SarsslError):
        split_bands(np.zeros(1), np.zeros(1), 0, 100, ["train", "holdout"])


def split_pixel_masks(index: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per split, the composite pixels (of GRID) that its chips cover."""
    res, (gx0, _, _, gy1) = GRID.resolution, GRID.bounds
    masks = {s: np.zeros(GRID.shape, bool) for s in ("train", "val", "test")}
    for r in index.itertuples():
        row, col = round((gy1 - r.y1) / res), round((r.x0 - gx0) / res)
        masks[r.split][row : row + SIZE, col : col + SIZE] = True
    return masks


def test_overlapping_chips_share_no_pixel_across_splits(inputs, tmp_path):
    """With --overlap > 0 neighbouring chips share pixels; chips whose footprint reaches into
    a band of another split are dropped (qa reason ``split_boundary``), so no pixel of a
    train chip lies in a val or test chip (nor of a val chip in a test chip)."""
    overlap, width, angle = 8, 480.0, 30.0
    # the leak this guards against: by their centres alone, overlapping candidates of
    # different splits exist in this set-up
    cands = chip_grid(GRID, SIZE, overlap)
    side = SIZE * GRID.resolution
    x0 = np.array([c.x_left for c in cands])
    y1 = np.array([c.y_top for c in cands])
    _, by_centre = split_bands(x0 + side / 2, y1 - side / 2, angle, width, DEFAULT_PATTERN)
    naive = split_pixel_masks(pd.DataFrame({"x0": x0, "y1": y1, "split": by_centre}))
    assert (naive["train"] & (naive["test"] | naive["val"])).any()

    out = tmp_path / "overlap"
    meta = make_chips(
        inputs["cpath"],
        inputs["lpath"],
        inputs["tpath"],
        "rome",
        out,
        size=SIZE,
        overlap=overlap,
        split_angle=angle,
        split_band_width=width,
        progress=False,
    )
    index = ChipStore(out).index
    masks = split_pixel_masks(index)
    assert all(m.any() for m in masks.values())
    assert not (masks["train"] & masks["test"]).any()
    assert not (masks["train"] & masks["val"]).any()
    assert not (masks["val"] & masks["test"]).any()
    # chips of one split still overlap each other (the overlap is kept inside a split)
    assert (index.x0.diff().abs() == (SIZE - overlap) * GRID.resolution).any()
    qa = pd.read_csv(out / "qa.csv").set_index("reason")["count"].to_dict()
    assert qa["split_boundary"] > 0 and meta["qa"] == qa
    assert sum(qa.values()) == len(cands) and qa["kept"] == len(index)
    # every kept chip lies inside bands of its own split (its four corners; one exactly on
    # a band edge belongs to both bands)
    a = math.radians(angle)
    for dx, dy in ((0, 0), (side, 0), (0, -side), (side, -side)):
        t = (-(index.x0 + dx) * math.sin(a) + (index.y1 + dy) * math.cos(a)) / width
        on_edge = np.isclose(t, np.round(t))
        split_at = [DEFAULT_PATTERN[int(b) % 5] for b in np.floor(t)]
        assert all(e or s == k for e, s, k in zip(on_edge, split_at, index.split)), (dx, dy)


def test_qa_and_store(inputs, store):
    out, meta = store
    chips, sp = inputs["chips"], inputs["special"]
    qa = pd.read_csv(out / "qa.csv").set_index("reason")["count"].to_dict()
    assert qa == {"kept": len(chips) - 2, "nodata": 1, "constant_channel": 1, "split_boundary": 0}
    st = ChipStore(out)
    assert st.n == len(chips) - 2 and meta["shape"] == [st.n, 12, SIZE, SIZE]
    ids = set(st.index["id"])
    epsg = GRID.crs.to_epsg()
    assert chip_id(epsg, sp["nodata"].x_left, sp["nodata"].y_top) not in ids
    assert chip_id(epsg, sp["constant"].x_left, sp["constant"].y_top) not in ids
    c = sp["few_nan"]
    r = st.row_of(chip_id(epsg, c.x_left, c.y_top))
    rec = st.index.iloc[r]
    assert rec.valid_fraction == pytest.approx(1 - 2 / SIZE**2)
    assert (rec.x0, rec.y1, rec.x1, rec.y0) == (c.x_left, c.y_top, c.x_left + 160, c.y_top - 160)
    win = (slice(c.row_off, c.row_off + SIZE), slice(c.col_off, c.col_off + SIZE))
    np.testing.assert_array_equal(st.x[r], inputs["comp"][(slice(None), *win)].astype(np.float16))
    assert np.isnan(st.x[r][7, 0, :2]).all()
    lc = worldcover_to_class(inputs["lc"][win])
    np.testing.assert_array_equal(st.landcover[r], lc)
    tc = inputs["tc"][win].astype(np.float64)
    tc[tc == 200] = 0
    assert rec.treecover_mean == pytest.approx(tc.mean())
    counts = np.bincount(lc[lc < 11], minlength=11)
    assert rec.landcover_majority == int(np.argmax(counts))
    assert rec.area == "rome" and rec.crs == f"EPSG:{epsg}"


def test_splits_and_fractions(store):
    out, meta = store
    df = ChipStore(out).index
    cx, cy = (df.x0 + df.x1) / 2, (df.y0 + df.y1) / 2
    a = math.radians(30)
    band = np.floor((-cx * math.sin(a) + cy * math.cos(a)) / 320).astype(int)
    assert (df.band.to_numpy() == band.to_numpy()).all()
    pattern = ["train", "train", "train", "test", "val"]
    assert df.split.tolist() == [pattern[b % 5] for b in band]
    assert set(df.split) == {"train", "val", "test"}
    assert (df.groupby("band").split.nunique() == 1).all()
    frac = json.loads((out / "fractions.json").read_text())
    assert frac["seed"] == 7
    train = set(df.id[df.split == "train"])
    f = frac["fractions"]
    assert list(f) == ["0.1", "0.5", "1.0"]  # sarssl.vocabulary.fraction_key
    assert set(f["1.0"]) == train
    assert len(f["0.1"]) == math.ceil(0.1 * len(train)) and set(f["0.1"]) <= set(f["0.5"]) <= train


def test_chips_write_no_fractions_and_store_json_describes_none(inputs, tmp_path, capsys):
    """`sarssl chips` writes no fractions.json (`sarssl fractions` is its only writer) and
    store.json says nothing about label fractions; reading fractions of such a store says
    which command writes them."""
    out = tmp_path / "store"
    rc = main(
        [
            "chips",
            "--composite",
            str(inputs["cpath"]),
            "--landcover",
            str(inputs["lpath"]),
            "--treecover",
            str(inputs["tpath"]),
            "--area",
            "rome",
            "--size",
            str(SIZE),
            "--split-band-width",
            "320",
            "--out-dir",
            str(out),
        ]
    )
    assert rc == 0 and not (out / "fractions.json").exists()
    meta = json.loads((out / "store.json").read_text())
    assert "fractions" not in meta["params"] and "seed" not in meta["params"]
    assert "fraction" not in json.dumps(meta)
    with pytest.raises(InputError, match="sarssl fractions"):
        ChipStore(out).rows("train", fraction=1.0)
    assert main(["fractions", "--chips-dir", str(out), "--fractions", "0.5,1", "--seed", "7"]) == 0
    fr = ChipStore(out).fractions
    assert fr["seed"] == 7 and list(fr["fractions"]) == ["0.5", "1.0"]
    assert json.loads((out / "store.json").read_text()) == meta  # untouched by sarssl fractions


def test_deterministic(inputs, store, tmp_path):
    out, _ = store
    again = tmp_path / "again"
    make_chips(
        inputs["cpath"],
        inputs["lpath"],
        inputs["tpath"],
        "rome",
        again,
        size=SIZE,
        split_band_width=320,
        progress=False,
    )
    a, b = pd.read_parquet(out / "index.parquet"), pd.read_parquet(again / "index.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert (
        main(["fractions", "--chips-dir", str(again), "--fractions", "0.1,0.5,1.0", "--seed", "7"])
        == 0
    )
    assert (out / "fractions.json").read_text() == (again / "fractions.json").read_text()
    assert (out / "x.npy").read_bytes() == (again / "x.npy").read_bytes()


def test_stats_cli_train_only(store, tmp_path):
    out, _ = store
    stats_path = tmp_path / "stats.json"
    assert main(["stats", "--chips-dir", str(out), "--out", str(stats_path)]) == 0
    stats = json.loads(stats_path.read_text())
    st = ChipStore(out)
    rows = st.rows("train")
    x = np.asarray(st.x[rows], dtype=np.float64)
    assert stats["n_chips"] == len(rows) and stats["areas"] == ["rome"]
    assert stats["channels"] == list(CHANNELS)
    np.testing.assert_allclose(stats["mean"], np.nanmean(x, axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(stats["std"], np.nanstd(x, axis=(0, 2, 3)), rtol=1e-9)
    # including val/test would differ
    allx = np.asarray(st.x[:], dtype=np.float64)
    assert not np.allclose(stats["mean"], np.nanmean(allx, axis=(0, 2, 3)), rtol=1e-6)
    # the loader normalises with it to ~zero mean / unit std on train
    img = load_chips(out, rows, arrays=("x",), stats=stats_path)["image"].numpy()
    assert abs(img.mean()) < 1e-3 and abs(img.std() - 1) < 1e-2


def test_cli_export_and_errors(inputs, tmp_path, capsys):
    out, exp = tmp_path / "store", tmp_path / "exp"
    rc = main(
        [
            "chips",
            "--composite",
            str(inputs["cpath"]),
            "--landcover",
            str(inputs["lpath"]),
            "--treecover",
            str(inputs["tpath"]),
            "--area",
            "rome",
            "--size",
            str(SIZE),
            "--overlap",
            "4",
            "--split-band-width",
            "500",
            "--split-pattern",
            "train,val,test",
            "--out-dir",
            str(out),
            "--export-split",
            "test",
            "--export-dir",
            str(exp),
        ]
    )
    assert rc == 0
    st = ChipStore(out)
    assert st.meta["params"]["overlap"] == 4 and st.meta["splits"]["test"] > 0
    test_ids = st.index.id[st.index.split == "test"].tolist()
    assert len(list(exp.glob("*_labels.tif"))) == len(test_ids)
    cid = test_ids[0]
    with rasterio.open(exp / f"{cid}.tif") as src:
        arr = src.read()
        assert list(src.descriptions) == list(CHANNELS)
        rec = st.index.iloc[st.row_of(cid)]
        assert (src.transform.c, src.transform.f) == (rec.x0, rec.y1)
    np.testing.assert_array_equal(arr, st.x[st.row_of(cid)].astype(np.float32))
    # a composite with the wrong number of bands is refused, naming the file
    bad = tmp_path / "bad.tif"
    write_geotiff(bad, np.zeros((11, 40, 40), np.float32), crs=GRID.crs, transform=GRID.transform)
    rc = main(
        [
            "chips",
            "--composite",
            str(bad),
            "--landcover",
            str(inputs["lpath"]),
            "--treecover",
            str(inputs["tpath"]),
            "--area",
            "x",
            "--out-dir",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "bad.tif" in err and "12 bands" in err
    assert not (tmp_path / "o").exists()


def test_all_dropped_is_an_error(tmp_path):
    g = Grid(GRID.crs, Affine(10, 0, 0, 0, -10, 320), 32, 32)
    comp = np.full((12, 32, 32), np.nan, np.float32)
    write_geotiff(tmp_path / "c.tif", comp, crs=g.crs, transform=g.transform, nodata=float("nan"))
    write_geotiff(
        tmp_path / "l.tif", np.full((32, 32), 10, np.uint8), crs=g.crs, transform=g.transform
    )
    with pytest.raises(InputError, match="all 4 chips were dropped"):
        make_chips(
            tmp_path / "c.tif",
            tmp_path / "l.tif",
            tmp_path / "l.tif",
            "x",
            tmp_path / "o",
            size=16,
            progress=False,
        )
