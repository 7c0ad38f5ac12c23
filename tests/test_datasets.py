"""Chip store writing/reading and the ChipDataset contract (docs/architecture.md)."""

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

from sarssl import CHANNELS
from sarssl.data.store import (
    ChipDataset,
    ChipStore,
    collate_chips,
    landcover_majority,
    nested_fractions,
    write_store,
)
from sarssl.errors import InputError, SarsslError

S = 8


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
        tmp_path / "store", x, lc, tc, index, resolution=10, crs="EPSG:32633", area="rome", seed=3,
        fractions=[0.1, 0.5, 1.0],
    )
    return path, x, lc, tc


def test_store_files_and_metadata(store):
    path, x, lc, tc = store
    for name in ("x.npy", "landcover.npy", "treecover.npy", "index.parquet", "fractions.json", "qa.csv", "store.json"):
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
    assert df.treecover_mean[2] == pytest.approx(np.nanmean(tc[2].astype(np.float16).astype(np.float64)), rel=1e-6)


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
    assert st2._maps == {}
    np.testing.assert_array_equal(st2.landcover[5], lc[5])


def test_dataset_items_normalised(store, tmp_path):
    path, x, lc, tc = store
    mean = list(np.linspace(-15, -5, 12))
    std = list(np.linspace(1, 3, 12))
    stats = tmp_path / "stats.json"
    stats.write_text(json.dumps({"channels": list(CHANNELS), "mean": mean, "std": std}))
    ds = ChipDataset(path, [5, 0, 2], stats)
    assert len(ds) == 3
    item = ds[1]
    assert item["id"] == "32633_0_0" and item["row"] == 0
    img = item["image"]
    assert img.dtype == torch.float32 and img.shape == (12, S, S)
    x16 = x[0].astype(np.float16).astype(np.float32)
    expect = (x16 - np.float32(mean)[:, None, None]) / (np.float32(std)[:, None, None] + 1e-5)
    expect = np.nan_to_num(expect, nan=0.0)
    np.testing.assert_allclose(img.numpy(), expect, rtol=1e-5, atol=1e-5)
    assert img[:, 0, 0].abs().sum() == 0  # NaN -> 0
    assert item["landcover"].dtype == torch.int64 and torch.equal(item["landcover"], torch.from_numpy(lc[0].astype(np.int64)))
    assert item["treecover"].dtype == torch.float32 and item["treecover"].dim() == 0
    assert item["treecover_map"].shape == (S, S)
    # batched access keeps the requested order
    batch = collate_chips(ds.__getitems__([2, 0, 1]))
    assert batch["row"].tolist() == [2, 5, 0]
    assert batch["id"] == ["32633_160_0", "32633_400_0", "32633_0_0"]
    np.testing.assert_allclose(batch["image"][2].numpy(), expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(batch["treecover"][0], np.nanmean(tc[2].astype(np.float16).astype(np.float64)), rtol=1e-3)


def test_bad_stats_rejected(store, tmp_path):
    path, *_ = store
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"channels": list(CHANNELS)[::-1], "mean": [0] * 12, "std": [1] * 12}))
    with pytest.raises(InputError, match="bad.json"):
        ChipDataset(path, None, bad)
    with pytest.raises(InputError, match="store.json not found"):
        ChipStore(tmp_path)


def test_dataloader_with_workers(store):
    path, x, lc, tc = store
    ds = ChipDataset(path, np.arange(10))
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False, collate_fn=collate_chips)
    rows = []
    for batch in loader:
        assert batch["image"].shape[1:] == (12, S, S)
        rows += batch["row"].tolist()
        r = batch["row"][0].item()
        x16 = np.nan_to_num(x[r].astype(np.float16).astype(np.float32), nan=0.0)
        np.testing.assert_allclose(batch["image"][0].numpy(), x16, atol=1e-4)
    assert rows == list(range(10))
    # the default collate works too
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 12, S, S) and batch["landcover"].dtype == torch.int64


def test_chip_loader_matches_dataset(store):
    from sarssl.data.store import ChipLoader

    path, x, lc, tc = store
    ds = ChipDataset(path, np.arange(10))
    loader = ChipLoader(ds, batch_size=4, shuffle=True, seed=5, threads=2, prefetch=1, copy=True)
    assert len(loader) == 3
    seen = []
    for batch in loader:
        assert batch["image"].shape[1:] == (12, S, S) and batch["landcover"].dtype == torch.int64
        ref = collate_chips(ds.__getitems__(batch["row"].tolist()))
        assert torch.equal(batch["image"], ref["image"])
        assert torch.equal(batch["landcover"], ref["landcover"])
        assert torch.equal(batch["treecover_map"].nan_to_num(-1), ref["treecover_map"].nan_to_num(-1))
        assert batch["id"] == ref["id"]
        seen += batch["row"].tolist()
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    # deterministic per (seed, epoch); a new epoch reshuffles
    again = [b["row"].tolist() for b in ChipLoader(ds, batch_size=4, shuffle=True, seed=5)]
    assert sum(again, []) == seen
    assert sum((b["row"].tolist() for b in loader), []) != seen
    assert len(list(ChipLoader(ds, batch_size=4, drop_last=True))) == 2


# --------------------------------------------------------------------------------------
# raw batches (GPU feeding path)
# --------------------------------------------------------------------------------------
def test_block_batches_cover_rows_in_contiguous_blocks():
    from sarssl.data.store import block_batches, contiguous_runs

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
    assert all(len(contiguous_runs(b)) <= 3 + 1 for b in b0)  # 3 blocks per batch at most (+1 partial)
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
    from sarssl.data.store import ChipBatches, Normalize, normalize_batch

    path, x, lc, tc = store
    stats = {"channels": list(CHANNELS), "mean": list(np.linspace(-15, -5, 12)), "std": list(np.linspace(1, 3, 12))}
    rows = ChipStore(path).rows("train")  # 0..5
    ds = ChipBatches(path, np.concatenate([rows, [8, 9]]), batch_size=3, block_rows=2, seed=7)
    assert len(ds) == 3
    seen = []
    ref_ds = ChipDataset(path, np.arange(10), stats)
    norm = Normalize(ref_ds.mean, ref_ds.std)
    for i in range(len(ds)):
        b = ds[i]
        r = b["row"].numpy()
        seen += r.tolist()
        assert b["x"].dtype == torch.float16 and b["landcover"].dtype == torch.uint8
        np.testing.assert_array_equal(b["x"].numpy(), x[r].astype(np.float16))
        np.testing.assert_array_equal(b["landcover"].numpy(), lc[r])
        np.testing.assert_array_equal(b["treecover_map"].numpy(), tc[r].astype(np.float16))
        ref = collate_chips(ref_ds.__getitems__(r.tolist()))
        torch.testing.assert_close(norm(b["x"]), ref["image"], rtol=0, atol=2e-6)
        torch.testing.assert_close(normalize_batch(b["x"], ref_ds.mean, ref_ds.std), ref["image"], rtol=0, atol=2e-6)
        torch.testing.assert_close(b["treecover"], ref["treecover"], equal_nan=True)
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
    from sarssl.data.store import BatchLoader, ChipBatches

    path, x, lc, tc = store
    ds = ChipBatches(path, batch_size=4, block_rows=2, seed=3)
    direct = [ds[i]["row"].tolist() for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    via_workers = []
    for b in loader:
        via_workers.append(b["row"].tolist())
        np.testing.assert_array_equal(b["x"].numpy(), x[b["row"].numpy()].astype(np.float16))
    assert via_workers == direct
    bl = BatchLoader(ChipBatches(path, batch_size=4, block_rows=2, seed=3), threads=2, prefetch=1, pin_memory=False)
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
    from sarssl.data.store import ChipBatches

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
