"""The pretraining pool never touches a test chip: chips within one chip of a test chip of
their store are left out (an area can be both pretrained and fine-tuned on)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sarssl.data.store import ChipStore, write_store
from sarssl.selfsup.batches import PretrainBatches, away_from_test, pretrain_rows


def grid_store(tmp_path, n=8, side=320.0):
    """An n x n grid of chips (side metres) with one vertical band of test chips (column
    3) and val chips in column 6; the rest train."""
    cols, rows = np.meshgrid(np.arange(n), np.arange(n))
    cols, rows = cols.ravel(), rows.ravel()
    split = np.where(cols == 3, "test", np.where(cols == 6, "val", "train"))
    index = pd.DataFrame(
        {
            "id": [f"c{r}_{c}" for r, c in zip(rows, cols)],
            "split": split,
            "x0": cols * side,
            "x1": (cols + 1) * side,
            "y0": -(rows + 1) * side,
            "y1": -rows * side,
        }
    )
    s = 8
    x = np.random.default_rng(0).normal(-12, 2, size=(n * n, 12, s, s)).astype(np.float32)
    lc = np.zeros((n * n, s, s), np.uint8)
    path = write_store(tmp_path / "store", x, lc, np.zeros_like(lc, np.float32), index)
    return ChipStore(path), index


def test_chips_within_one_chip_of_a_test_chip_are_left_out(tmp_path):
    store, index = grid_store(tmp_path)
    rows = np.sort(np.concatenate([store.rows("train"), store.rows("val")]))
    kept = away_from_test(store, rows)
    cols = {int(i.split("_")[1]) for i in store.index.set_index("row").loc[kept, "id"]}
    # test column 3: its neighbours (columns 2 and 4, one chip away) are left out too
    # (they touch the test chips); columns 1 and 5 are one chip of ground away: kept
    assert cols == {0, 1, 5, 6, 7}
    assert 3 not in cols and 2 not in cols and 4 not in cols
    # and the pretraining batches read exactly those rows
    pool = pretrain_rows([str(store.path)], ("train", "val"))
    assert len(pool) == 1 and np.array_equal(pool[0][1], kept)
    assert PretrainBatches([str(store.path)]).n == kept.size


def test_a_store_without_test_chips_keeps_every_chip(tmp_path):
    store, index = grid_store(tmp_path)
    rows = store.rows("train")
    assert np.array_equal(away_from_test(store, store.rows("val")), store.rows("val"))
    assert away_from_test(store, rows[:0]).size == 0
