"""Encoder snapshots during pretraining and the k-NN probe over pretraining steps."""

from __future__ import annotations

import numpy as np

from conftest import cfg, make_store
from sarssl.data.store import ChipStore, write_fractions
from sarssl.figures.pretraining import knn_over_steps, pretraining_curves, read_run
from sarssl.selfsup.pretrain import train


def test_snapshots_change_nothing_and_feed_a_knn_curve(tmp_path):
    store, stats = make_store(tmp_path, n=40)
    write_fractions(store, ChipStore(store).index, [1.0], seed=0, run_seeds=[0])
    plain, snap = tmp_path / "plain", tmp_path / "snap"
    assert train(cfg(store, stats, plain, max_steps=5)) == 0
    assert train(cfg(store, stats, snap, max_steps=5, snapshot_every=2)) == 0
    # the snapshots are taken at step 0, every 2 steps and at the last step
    steps = sorted(int(p.name[4:]) for p in (snap / "snapshots").iterdir())
    assert steps == [0, 2, 4, 5]
    for s in steps:
        assert (snap / "snapshots" / f"step{s:06d}" / "encoder.json").is_file()
    # taking them changes nothing in the run: the final encoder is byte-identical
    assert (snap / "encoder.safetensors").read_bytes() == (
        plain / "encoder.safetensors"
    ).read_bytes()
    last = snap / "snapshots" / "step000005" / "encoder.safetensors"
    assert last.read_bytes() == (snap / "encoder.safetensors").read_bytes()
    # the k-NN probe scores every snapshot on the store's val chips
    curve = knn_over_steps(snap, store, stats)
    assert [s for s, _ in curve] == steps
    assert all(0.0 <= m <= 1.0 for _, m in curve)
    # make_store's chips are one class each with a class signature: even the random
    # initialisation separates them by k-NN, pretrained or not
    assert np.mean([m for _, m in curve]) > 0.5
    fig = pretraining_curves({"mae": read_run(snap)}, {"mae": curve}, "a")
    assert len(fig.axes) == 2 and "k-NN" in fig.axes[-1].get_title()
    assert knn_over_steps(plain, store, stats) == []  # no snapshots: no curve
