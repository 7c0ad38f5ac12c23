"""Chip store writing/reading, label fractions, the loaders and the one normalisation."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import shapely
import torch
from torch.utils.data import DataLoader

from sarssl.data.loaders import BatchLoader, ChipBatches, block_batches, contiguous_runs, load_chips
from sarssl.data.normalize import NORM_EPS, Normalize, denormalize_batch, normalize_batch
from sarssl.data.store import (
    ChipStore,
    nested_fractions,
    write_fractions,
    write_store,
)
from sarssl.errors import InputError, SarsslError
from sarssl.vocabulary import CHANNELS, fraction_key

S = 8
STATS = {
    "channels": list(CHANNELS),
    "mean": list(np.linspace(-15, -5, 12)),
    "std": list(np.linspace(1, 3, 12)),
}


def _arrays(n: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(-12.0, 3.0, size=(n, 12, S, S)).astype(np.float32)
    x[0, :, 0, 0] = np.nan  # one no-data pixel in chip 0
    lc = rng.integers(0, 11, size=(n, S, S)).astype(np.uint8)
    lc[1] = 4
    lc[1, :2] = 255
    tc = rng.uniform(0, 100, size=(n, S, S)).astype(np.float32)
    tc[2, 0, :] = np.nan
    return x, lc, tc


@pytest.fixture()
def store(tmp_path):
    x, lc, tc = _arrays()
    index = pd.DataFrame(
        {
            "id": [f"32633_{i * 80}_0" for i in range(10)],
            "split": ["train"] * 6 + ["val"] * 2 + ["test"] * 2,
        }
    )
    path = write_store(
        tmp_path / "store",
        x,
        lc,
        tc,
        index,
        resolution=10,
        crs="EPSG:32633",
        area="rome",
        seed=3,
        fractions=[0.1, 0.5, 1.0],
    )
    return path, x, lc, tc


def test_store_files_and_metadata(store):
    path, x, lc, tc = store
    for name in (
        "x.npy",
        "landcover.npy",
        "treecover.npy",
        "index.parquet",
        "fractions.json",
        "qa.csv",
        "store.json",
    ):
        assert (path / name).is_file(), name
    meta = json.loads((path / "store.json").read_text())
    assert meta["shape"] == [10, 12, S, S]
    assert meta["dtype"] == "float16"
    assert meta["channels"] == list(CHANNELS)
    assert meta["bytes_per_chip"] == 12 * S * S * 2 + S * S + S * S * 2
    assert meta["crs"] == "EPSG:32633" and meta["epsg"] == 32633
    arr = np.load(path / "x.npy", mmap_mode="r")
    assert arr.dtype == np.float16 and arr.shape == (10, 12, S, S)
    # float16 keeps ~0.01 dB at typical values
    finite = np.isfinite(x)
    assert np.max(np.abs(arr[finite].astype(np.float32) - x[finite])) <= 0.0079
    assert np.isnan(arr[0, :, 0, 0]).all()


def test_index_is_geoparquet_and_summaries(store):
    path, x, lc, tc = store
    table = pq.read_table(path / "index.parquet")
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry"
    assert geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["crs"]["id"]["code"] == 32633
    df = table.to_pandas()
    poly = shapely.from_wkb(df["geometry"].iloc[3])
    assert poly.bounds == (df.x0[3], df.y0[3], df.x1[3], df.y1[3])
    assert list(df["row"]) == list(range(10))
    assert df.valid_fraction[0] == pytest.approx(1 - 1 / (S * S))
    assert df.valid_fraction[1] == 1.0
    assert df.landcover_majority[1] == 4
    assert df.treecover_mean[2] == pytest.approx(
        np.nanmean(tc[2].astype(np.float16).astype(np.float64)), rel=1e-6
    )


def test_nested_fractions():
    ids = [f"c{i}" for i in range(200)]
    fr = nested_fractions(ids, [0.01, 0.05, 0.1, 1.0], seed=7)
    assert [len(v) for v in fr.values()] == [2, 10, 20, 200]
    assert set(fr["0.01"]) <= set(fr["0.05"]) <= set(fr["0.1"]) <= set(fr["1.0"]) == set(ids)
    # deterministic, order-independent, seed-dependent
    assert nested_fractions(ids[::-1], [0.01, 0.05, 0.1, 1.0], seed=7) == fr
    assert nested_fractions(ids, [0.05], seed=8)["0.05"] != fr["0.05"]
    assert len(nested_fractions(ids[:3], [0.01], seed=0)["0.01"]) == 1  # at least one chip
    with pytest.raises(SarsslError):
        nested_fractions(ids, [0.0], seed=0)


def test_store_access(store):
    path, x, lc, tc = store
    st = ChipStore(path)
    assert st.row_of("32633_240_0") == 3
    with pytest.raises(InputError, match="no chip"):
        st.row_of("nope")
    assert list(st.rows("train")) == list(range(6))
    assert list(st.rows("test")) == [8, 9]
    fr = st.fractions
    assert fr["seed"] == 3
    assert len(st.rows("train", fraction=0.5)) == 3
    assert set(st.rows("train", fraction=0.1)) <= set(st.rows("train", fraction=0.5))
    with pytest.raises(SarsslError, match="no label fraction"):
        st.rows("train", fraction=0.3)
    np.testing.assert_array_equal(st.landcover[4], lc[4])
    st2 = pickle.loads(pickle.dumps(st))
    np.testing.assert_array_equal(st2.landcover[5], lc[5])


def test_load_chips_normalised_by_the_formula(store):
    path, x, lc, tc = store
    mean, std = np.float32(STATS["mean"]), np.float32(STATS["std"])
    chips = load_chips(path, [5, 0, 2], stats=STATS)
    assert len(chips) == 3 and chips.rows.tolist() == [0, 2, 5]  # ascending rows
    assert chips.ids.tolist() == ["32633_0_0", "32633_160_0", "32633_400_0"]
    img = chips["image"][0]
    assert img.dtype == torch.float32 and img.shape == (12, S, S)
    x16 = x[0].astype(np.float16).astype(np.float32)
    expect = np.nan_to_num((x16 - mean[:, None, None]) / (std[:, None, None] + 1e-5), nan=0.0)
    np.testing.assert_allclose(img.numpy(), expect, rtol=1e-5, atol=1e-5)
    assert img[:, 0, 0].abs().sum() == 0  # NaN -> 0
    assert torch.equal(chips["landcover"][0], torch.from_numpy(lc[0]))
    assert chips["treecover"].dtype == torch.float32 and chips["treecover"].shape == (3,)
    np.testing.assert_allclose(
        chips["treecover"][1], np.nanmean(tc[2].astype(np.float16).astype(np.float64)), rtol=1e-3
    )


def test_bad_stats_rejected(store, tmp_path):
    path, *_ = store
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps({"channels": list(CHANNELS)[::-1], "mean": [0] * 12, "std": [1] * 12})
    )
    with pytest.raises(InputError, match="bad.json"):
        load_chips(path, None, stats=bad)
    with pytest.raises(InputError, match="store.json not found"):
        ChipStore(tmp_path)


# --------------------------------------------------------------------------------------
# raw batches (GPU feeding path)
# --------------------------------------------------------------------------------------
def test_block_batches_cover_rows_in_contiguous_blocks():
    rows = np.arange(100, 150)
    b0 = block_batches(rows, 12, block_rows=4, seed=1, epoch=0)
    flat = np.concatenate(b0)
    assert sorted(flat.tolist()) == rows.tolist() and flat.tolist() != rows.tolist()
    assert [len(b) for b in b0] == [12, 12, 12, 12, 2]
    # every block of 4 is a run of consecutive rows (one read), blocks start on a multiple of 4
    k = 0
    while k < flat.size:
        size = 2 if flat[k] == 148 else 4  # 50 rows = 12 blocks of 4 + one of 2
        blk = flat[k : k + size]
        assert np.all(np.diff(blk) == 1) and (blk[0] - 100) % 4 == 0
        k += size
    assert all(
        len(contiguous_runs(b)) <= 3 + 1 for b in b0
    )  # 3 blocks per batch at most (+1 partial)
    again = block_batches(rows[::-1], 12, block_rows=4, seed=1, epoch=0)
    assert all(np.array_equal(a, b) for a, b in zip(b0, again))
    other = np.concatenate(block_batches(rows, 12, block_rows=4, seed=1, epoch=1))
    assert other.tolist() != flat.tolist()
    assert [len(b) for b in block_batches(rows, 12, block_rows=4, drop_last=True)] == [12] * 4
    assert np.concatenate(block_batches(rows, 7, shuffle=False)).tolist() == rows.tolist()
    assert contiguous_runs(np.array([3, 4, 5, 9, 2, 3])) == [(0, 3, 3), (3, 9, 1), (4, 2, 2)]
    with pytest.raises(SarsslError):
        block_batches(rows, 0)


def test_chip_batches_raw_and_normalize(store, tmp_path):
    path, x, lc, tc = store
    stats = STATS
    st = ChipStore(path)
    rows = st.rows("train")  # 0..5
    ds = ChipBatches(path, np.concatenate([rows, [8, 9]]), batch_size=3, block_rows=2, seed=7)
    assert len(ds) == 3
    seen = []
    mean, std = np.float32(stats["mean"]), np.float32(stats["std"])
    norm = Normalize(mean, std)
    tree_means = st.index.set_index("row")["treecover_mean"].to_numpy(np.float32)
    for i in range(len(ds)):
        b = ds[i]
        r = b["row"].numpy()
        seen += r.tolist()
        assert b["x"].dtype == torch.float16 and b["landcover"].dtype == torch.uint8
        np.testing.assert_array_equal(b["x"].numpy(), x[r].astype(np.float16))
        np.testing.assert_array_equal(b["landcover"].numpy(), lc[r])
        np.testing.assert_array_equal(b["treecover_map"].numpy(), tc[r].astype(np.float16))
        ref = normalize_batch(x[r].astype(np.float16), mean, std)
        assert np.array_equal(norm(b["x"]).numpy(), ref)  # one normalisation: bit-identical
        assert np.array_equal(normalize_batch(b["x"], mean, std).numpy(), ref)
        np.testing.assert_array_equal(b["treecover"].numpy(), tree_means[r])
    assert sorted(seen) == [0, 1, 2, 3, 4, 5, 8, 9]
    with pytest.raises(IndexError):
        ds[3]
    # Normalize from a stats file; NaN (no data) -> 0
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    m = Normalize.from_stats(tmp_path / "stats.json")
    assert float(m(torch.full((1, 12, 2, 2), float("nan"), dtype=torch.float16)).abs().max()) == 0.0
    # labels=False reads only the image
    assert set(ChipBatches(path, batch_size=4, labels=False)[0]) == {"x", "treecover", "row"}


def test_chip_batches_dataloader_and_batch_loader_agree(store):
    path, x, lc, tc = store
    ds = ChipBatches(path, batch_size=4, block_rows=2, seed=3)
    direct = [ds[i]["row"].tolist() for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    via_workers = []
    for b in loader:
        via_workers.append(b["row"].tolist())
        np.testing.assert_array_equal(b["x"].numpy(), x[b["row"].numpy()].astype(np.float16))
    assert via_workers == direct
    bl = BatchLoader(
        ChipBatches(path, batch_size=4, block_rows=2, seed=3),
        threads=2,
        prefetch=1,
        pin_memory=False,
    )
    epoch0 = []
    for b in bl:
        epoch0.append(b["row"].tolist())
        np.testing.assert_array_equal(b["x"].numpy(), x[b["row"].numpy()].astype(np.float16))
        np.testing.assert_array_equal(b["landcover"].numpy(), lc[b["row"].numpy()])
    assert epoch0 == direct
    epoch1 = [b["row"].tolist() for b in bl]  # next iteration = next epoch, reshuffled
    assert sorted(sum(epoch1, [])) == list(range(10)) and epoch1 != epoch0
    ds.set_epoch(1)
    assert [ds[i]["row"].tolist() for i in range(len(ds))] == epoch1


def test_chip_batches_truncated_store(store):
    path, *_ = store
    ds = ChipBatches(path, batch_size=10, shuffle=False)
    assert ds[0]["x"].shape[0] == 10  # files now open
    size = (path / "x.npy").stat().st_size
    with open(path / "x.npy", "r+b") as fh:
        fh.truncate(size - 100)
    with pytest.raises(InputError, match="x.*truncated"):
        ds[0]  # the open descriptor hits the end of the file
    with pytest.raises(InputError, match="x.npy.*truncated"):
        ChipBatches(path, batch_size=10)[0]  # a fresh store refuses the short file


def test_chip_batches_reads_only_the_named_arrays(store):
    path, x, lc, tc = store
    ds = ChipBatches(path, [1, 4, 7], batch_size=3, shuffle=False, arrays=("landcover",))
    b = ds[0]
    assert set(b) == {"landcover", "treecover", "row"}
    np.testing.assert_array_equal(b["landcover"].numpy(), lc[[1, 4, 7]])
    with pytest.raises(SarsslError, match="arrays"):
        ChipBatches(path, arrays=("x", "labels"))


# --------------------------------------------------------------------------------------
# chips in memory: the fine-tuning and figure path
# --------------------------------------------------------------------------------------
def test_load_chips_raw_and_normalised_match_the_batches(store):
    path, x, lc, tc = store
    mean, std = np.float32(STATS["mean"]), np.float32(STATS["std"])
    rows = np.array([9, 2, 0, 5, 3])
    raw = load_chips(path, rows, chunk=2)  # ascending rows, read 2 chips at a time
    ref = ChipBatches(path, rows, batch_size=5, shuffle=False)[0]
    assert raw.rows.tolist() == [0, 2, 3, 5, 9] == ref["row"].tolist() and len(raw) == 5
    assert raw.ids.tolist() == [f"32633_{r * 80}_0" for r in raw.rows]
    assert set(raw.tensors) == {"x", "landcover", "treecover_map", "treecover"}
    for key in ("x", "landcover", "treecover_map"):
        assert raw[key].dtype == ref[key].dtype and torch.equal(
            raw[key].nan_to_num(-1), ref[key].nan_to_num(-1)
        )
    np.testing.assert_array_equal(raw["x"].numpy(), x[raw.rows].astype(np.float16))
    assert torch.equal(raw["treecover"].nan_to_num(-1), ref["treecover"].nan_to_num(-1))
    norm = load_chips(ChipStore(path), rows, arrays=("x", "landcover"), stats=STATS, chunk=3)
    assert set(norm.tensors) == {"image", "landcover", "treecover"}
    assert norm["image"].dtype == torch.float32
    assert torch.equal(norm["image"], normalize_batch(ref["x"], mean, std))
    b = norm.batch([4, 0])
    assert torch.equal(b["image"], norm["image"][[4, 0]]) and torch.equal(
        b["landcover"], ref["landcover"][[4, 0]]
    )
    norm["features"] = torch.arange(5.0)
    assert "features" in norm and norm.batch([1])["features"].tolist() == [1.0]
    assert len(load_chips(path, [], arrays=("x",))) == 0


# --------------------------------------------------------------------------------------
# the one normalisation
# --------------------------------------------------------------------------------------
def test_normalisation_numpy_and_torch_are_one_definition():
    """normalize_batch on NumPy arrays (figures), on torch tensors (fine-tuning) and the
    Normalize module (pretraining) give the same bits."""
    rng = np.random.default_rng(1)
    x = rng.normal(-12, 6, size=(3, 12, 5, 5)).astype(np.float16)
    x[0, 0, 0, 0], x[0, 1, 0, 0], x[1, 2, 3, 3] = np.nan, np.inf, -np.inf
    mean, std = rng.normal(-12, 3, 12), rng.uniform(0.5, 4, 12)
    y_np = normalize_batch(x, mean, std)
    y_t = normalize_batch(torch.from_numpy(x), mean, std)
    assert y_np.dtype == np.float32 and y_t.dtype == torch.float32
    assert np.array_equal(y_np, y_t.numpy())
    assert torch.equal(Normalize(mean, std)(torch.from_numpy(x)), y_t)
    assert y_np[0, 0, 0, 0] == 0 and y_np[0, 1, 0, 0] == 0 and y_np[1, 2, 3, 3] == 0  # no data -> 0
    # the formula, written out in float64 for the finite values
    finite = np.isfinite(x)
    expect = (x.astype(np.float64) - mean[None, :, None, None]) / (
        std[None, :, None, None] + NORM_EPS
    )
    np.testing.assert_allclose(y_np[finite], expect[finite], rtol=1e-6, atol=1e-6)
    # and denormalize_batch inverts it where there is data
    np.testing.assert_allclose(
        denormalize_batch(y_np, mean, std)[finite], x[finite].astype(np.float32), atol=1e-3
    )


# --------------------------------------------------------------------------------------
# label fractions: written by `sarssl fractions` only
# --------------------------------------------------------------------------------------
def test_store_without_fractions_is_a_clear_error(tmp_path):
    x, lc, tc = _arrays()
    path = write_store(tmp_path / "s", x, lc, tc)  # as `sarssl chips` leaves it: no fractions
    assert not (path / "fractions.json").exists()
    meta = json.loads((path / "store.json").read_text())
    assert "fraction" not in json.dumps(meta)  # store.json does not describe fractions
    st = ChipStore(path)
    assert st.rows("train").size == 6  # everything else works
    with pytest.raises(InputError, match=r"fractions.json not found.*sarssl fractions"):
        st.rows("train", fraction=0.5)
    fr = write_fractions(path, st.index, [0.5, 1], seed=0)
    assert list(fr) == ["0.5", "1.0"] == [fraction_key(f) for f in (0.5, 1)]
    assert len(st.rows("train", fraction="0.5")) == len(st.rows("train", fraction=0.5)) == 3
    assert st.fraction_ids(1) == fr["1.0"]
