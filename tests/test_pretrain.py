"""Pretraining: learning, exact resume, DDP equivalence, export, no test chips."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from conftest import BACKBONE, MAE_HP, cfg, losses, make_store
from sarssl import CHANNELS
from sarssl.cli import main as cli_main
from sarssl.encoders import load_encoder
from sarssl.selfsup.batches import PretrainBatches, image_stream
from sarssl.selfsup.pretrain import train


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("chips"))


def test_no_test_chips_in_pretraining(tiny_store):
    store, stats = tiny_store
    data = PretrainBatches([str(store)])
    assert data.n == 32  # 40 chips, pattern train,train,train,test,val -> 8 test chips excluded
    index = data.stores[0].store.index.set_index("row")
    used = index.loc[data.rows[0], "id"].astype(str)
    assert len(set(used)) == 32 and not any(int(i.removeprefix("chip")) % 5 == 3 for i in used)


def test_mae_loss_falls(tiny_store, tmp_path):
    store, stats = tiny_store
    assert train(cfg(store, stats, tmp_path / "mae", max_steps=60)) == 0
    ls = losses(tmp_path / "mae")
    assert len(ls) == 60
    assert np.mean(ls[-5:]) < 0.5 * np.mean(ls[:5]), ls
    for name in ("checkpoint.pt", "run.json", "encoder.safetensors", "encoder.json"):
        assert (tmp_path / "mae" / name).is_file()
    meta = json.loads((tmp_path / "mae" / "encoder.json").read_text())
    assert meta["channels"] == list(CHANNELS) and meta["method"] == "mae"
    assert meta["stats"]["mean"] == json.loads(stats.read_text())["mean"]


def test_resume_is_exact(tiny_store, tmp_path):
    store, stats = tiny_store
    full, part = tmp_path / "full", tmp_path / "part"
    assert train(cfg(store, stats, full, max_steps=8)) == 0
    assert train(cfg(store, stats, part, max_steps=8, stop_after_steps=4)) == 0
    assert not (part / "encoder.safetensors").exists()  # interrupted: no final outputs
    assert torch.load(part / "checkpoint.pt", weights_only=False)["step"] == 4
    assert train(cfg(store, stats, part, max_steps=8)) == 0  # resumes at step 4
    a, b = load_file(full / "encoder.safetensors"), load_file(part / "encoder.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert losses(full) == losses(part)
    # a changed configuration refuses to resume from the old checkpoint
    from sarssl.errors import SarsslError

    other = {**MAE_HP, "mae": {**MAE_HP["mae"], "lr": 1e-3}}
    with pytest.raises(SarsslError, match="different run"):
        train(cfg(store, stats, part, hp=other, max_steps=8))


def test_dino_resume_exact_and_cli(tiny_store, tmp_path):
    store, stats = tiny_store
    hp = {
        "backbone": BACKBONE,
        "dino": {
            "head_hidden_dim": 16,
            "head_bottleneck_dim": 8,
            "head_out_dim": 32,
            "batch_size": 8,
            "epochs": 2,
            "lr": 1e-3,
            "local_crops": 2,
        },
    }
    full, part = tmp_path / "full", tmp_path / "part"
    assert train(cfg(store, stats, full, method="dino", hp=hp)) == 0
    assert train(cfg(store, stats, part, method="dino", hp=hp, stop_after_steps=3)) == 0
    assert train(cfg(store, stats, part, method="dino", hp=hp)) == 0
    a, b = load_file(full / "encoder.safetensors"), load_file(part / "encoder.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    enc, meta = load_encoder(full / "encoder.safetensors")
    assert meta["method"] == "dino" and enc.patch_embed.proj.in_channels == 12
    # the command line
    hp_file = tmp_path / "hp.json"
    hp_file.write_text(json.dumps(hp))
    rc = cli_main(
        [
            "pretrain",
            "--method",
            "dino",
            "--chips-dir",
            str(store),
            "--stats",
            str(stats),
            "--hparams",
            str(hp_file),
            "--seed",
            "7",
            "--out-dir",
            str(tmp_path / "cli"),
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--threads",
            "1",
        ]
    )
    assert rc == 0 and len(losses(tmp_path / "cli")) == 2
    assert (
        cli_main(
            [
                "pretrain",
                "--method",
                "mae",
                "--chips-dir",
                str(tmp_path / "nope"),
                "--stats",
                str(stats),
                "--hparams",
                str(hp_file),
                "--seed",
                "1",
                "--out-dir",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, c):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    try:
        train(c)
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_two_processes_match_one(tiny_store, tmp_path):
    store, stats = tiny_store
    one, two = tmp_path / "one", tmp_path / "two"
    assert train(cfg(store, stats, one, max_steps=3)) == 0
    mp.spawn(
        _ddp_worker,
        args=(2, _free_port(), cfg(store, stats, two, max_steps=3)),
        nprocs=2,
        join=True,
    )
    a, b = load_file(one / "encoder.safetensors"), load_file(two / "encoder.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=2e-6, rtol=1e-5), k
    assert np.allclose(losses(one), losses(two), rtol=1e-5)
    assert json.loads((two / "run.json").read_text())["config"]["world_size"] == 2


def test_dino_collapse_diagnostics_and_bf16_cpu(tiny_store, tmp_path):
    """The entropies separate healthy, uniform and one-prototype teachers; a DINO run logs
    them, and an MAE run with dtype bf16 takes the autocast path on CPU and still learns."""
    from sarssl.selfsup.dino import collapse_diagnostics

    k = 32
    uniform = collapse_diagnostics(torch.full((8, k), 1.0 / k))
    assert uniform["teacher_entropy"] == pytest.approx(np.log(k)) and uniform[
        "teacher_marginal_entropy"
    ] == pytest.approx(np.log(k))
    one = collapse_diagnostics(
        torch.nn.functional.one_hot(torch.zeros(8, dtype=torch.long), k).float()
    )
    assert one["teacher_entropy"] < 1e-6 and one["teacher_marginal_entropy"] < 1e-6
    healthy = collapse_diagnostics(torch.nn.functional.one_hot(torch.arange(8), k).float())
    assert healthy["teacher_entropy"] < 1e-6 and healthy[
        "teacher_marginal_entropy"
    ] == pytest.approx(np.log(8))
    store, stats = tiny_store
    hp = {
        "backbone": BACKBONE,
        "dino": {
            "head_hidden_dim": 16,
            "head_bottleneck_dim": 8,
            "head_out_dim": 32,
            "batch_size": 8,
            "epochs": 1,
            "lr": 1e-3,
            "local_crops": 1,
        },
    }
    assert train(cfg(store, stats, tmp_path / "d", method="dino", hp=hp, max_steps=2)) == 0
    rec = json.loads((tmp_path / "d" / "metrics.jsonl").read_text().splitlines()[-1])
    assert (
        0 <= rec["teacher_entropy"] <= np.log(32) + 1e-6
        and 0 <= rec["teacher_marginal_entropy"] <= np.log(32) + 1e-6
    )
    bf = {"backbone": BACKBONE, "mae": {**MAE_HP["mae"], "dtype": "bf16", "epochs": 20}}
    assert train(cfg(store, stats, tmp_path / "bf", hp=bf)) == 0
    run = json.loads((tmp_path / "bf" / "run.json").read_text())
    assert "bf16" in json.dumps(run)
    ls = losses(tmp_path / "bf")
    assert np.isfinite(ls).all() and np.mean(ls[-5:]) < 0.7 * np.mean(ls[:5])


def test_benchmark_peak_table():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pretrain.py"
    spec = importlib.util.spec_from_file_location("bench_pretrain", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert mod.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert mod.peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    assert mod.peak_tflops("NVIDIA L4") == 121.0
    assert mod.peak_tflops("Some Unknown GPU") is None


# --------------------------------------------------------------------------------------
# the batch-loader data path
# --------------------------------------------------------------------------------------
def test_batch_loader_path_matches_the_chips(tiny_store, tmp_path):
    """PretrainBatches + BatchLoader + Normalize deliver, micro-batch by micro-batch, the
    normalised chips of the samples of the SeededBatchOrder (two stores, block order, two
    ranks, accumulation), and the block order is a world-size-independent permutation."""
    from sarssl.data.loaders import BatchLoader
    from sarssl.data.normalize import Normalize
    from sarssl.data.store import ChipStore, load_stats
    from sarssl.engine import SeededBatchOrder

    store, stats = tiny_store
    store2, _ = make_store(tmp_path, n=25, seed=3)
    dirs = [str(store), str(store2)]
    raw = PretrainBatches(dirs)
    chips = [ChipStore(d).x for d in dirs]
    assert raw.n == sum(r.size for r in raw.rows) == 32 + 20 and raw.chip_size == 16
    mean, std = load_stats(str(stats))

    def reference(indices):  # sample i: store k, its (i - offsets[k])-th train+val chip
        k = np.searchsorted(raw.offsets, indices, side="right") - 1
        x = np.stack([chips[s][raw.rows[s][i - raw.offsets[s]]] for s, i in zip(k, indices)])
        y = (x.astype(np.float32) - mean[:, None, None]) / (std[:, None, None] + np.float32(1e-5))
        return torch.from_numpy(np.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0))

    for rank in (0, 1):
        order = SeededBatchOrder(raw.n, 8, seed=5, rank=rank, world=2, accum=2, block_rows=3)
        fast = list(
            image_stream(raw, order, 2, 9, torch.device("cpu"), mean, std, {"loader_threads": 2})
        )
        slow = [reference(np.asarray(i)) for i in order.micro_batches(2, 9)]
        assert len(fast) == len(slow) == 7 * 2
        for a, b in zip(fast, slow):
            assert a.shape == (2, 12, 16, 16) and a.dtype == torch.float32
            assert torch.allclose(a, b, atol=2e-6, rtol=1e-6), float((a - b).abs().max())
    # the loader's plan is exactly this rank's slice of the global batches
    order = SeededBatchOrder(raw.n, 8, seed=5, rank=1, world=2, accum=1, block_rows=3)
    raw.plan(order, 0, 3)
    got = [b["index"].numpy() for b in BatchLoader(raw, threads=1, pin_memory=False)]
    assert [g.tolist() for g in got] == [order.global_indices(s)[4:8].tolist() for s in range(3)]
    assert all(
        torch.isfinite(Normalize(mean, std)(b)).all()
        for b in [torch.full((1, 12, 2, 2), float("nan"))]
    )
    e0 = SeededBatchOrder(52, 8, seed=5, block_rows=3).epoch_order(0)
    assert sorted(e0.tolist()) == list(range(52)) and not np.array_equal(e0, np.arange(52))
    assert all(e0[i + 1] == e0[i] + 1 for i in range(0, 51, 3) if e0[i] % 3 == 0 and e0[i] + 1 < 52)
    assert np.array_equal(
        SeededBatchOrder(52, 8, seed=5, world=4, rank=2, block_rows=3).epoch_order(0), e0
    )


def test_metrics_and_tensorboard_events(tiny_store, tmp_path):
    """metrics.jsonl carries the data-loader share; TensorBoard event files hold the loss,
    lr and throughput scalars of every step, and a resumed run's events read as one run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store, stats = tiny_store
    out = tmp_path / "tb"
    assert train(cfg(store, stats, out, max_steps=6, stop_after_steps=4)) == 0
    assert train(cfg(store, stats, out, max_steps=6)) == 0  # resume at 4
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    for r in recs:
        assert 0 <= r["data_share"] <= 1 and r["data_wait_s"] >= 0 and r["images_per_s"] > 0
    run = json.loads((out / "run.json").read_text())
    assert 0 <= run["data_share"] <= 1
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "images_per_s", "tokens_per_s", "data_share"} <= tags
    loss = acc.Scalars("loss")
    assert [e.step for e in loss] == [1, 2, 3, 4, 5, 6]
    assert np.allclose([e.value for e in loss], [r["loss"] for r in recs], rtol=1e-6)
    assert np.allclose([e.value for e in acc.Scalars("lr")], [r["lr"] for r in recs], rtol=1e-6)


# --------------------------------------------------------------------------------------
# issue 5: the losses fall on real demo chips within a fixed budget
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo_chips(tmp_path_factory):
    """Demo chips made by the real pipeline at tiny size: ``sarssl simulate`` (one
    acquisition per season, a 0.02 deg box of the Rome template) -> ``preprocess``
    (no speckle filter) -> ``composite`` -> ``chips --size 32`` -> ``stats``; ~5 s."""
    import glob

    root = tmp_path_factory.mktemp("demo")
    bbox = "12.49,41.99,12.51,42.01"
    assert (
        cli_main(
            [
                "simulate",
                "--template",
                "S1B_rome",
                "--area",
                "rome",
                "--bbox",
                bbox,
                "--year",
                "2021",
                "--per-season",
                "1",
                "--seed",
                "7",
                "--products-dir",
                str(root / "products"),
                "--truth-dir",
                str(root / "truth"),
            ]
        )
        == 0
    )
    scenes = []
    for product in sorted(glob.glob(str(root / "products" / "*.zip"))):
        scenes.append(str(root / "pre" / (os.path.basename(product)[:-4] + ".tif")))
        assert (
            cli_main(
                [
                    "preprocess",
                    product,
                    "--dem",
                    str(root / "truth" / "dem.tif"),
                    "--out",
                    scenes[-1],
                    "--aoi",
                    bbox,
                    "--speckle-filter",
                    "none",
                    "--backend",
                    "python",
                ]
            )
            == 0
        )
    assert len(scenes) == 4
    assert (
        cli_main(
            [
                "composite",
                *scenes,
                "--year",
                "2021",
                "--out",
                str(root / "composite.tif"),
                "--count-out",
                str(root / "count.tif"),
            ]
        )
        == 0
    )
    assert (
        cli_main(
            [
                "chips",
                "--composite",
                str(root / "composite.tif"),
                "--landcover",
                str(root / "truth" / "landcover.tif"),
                "--treecover",
                str(root / "truth" / "treecover.tif"),
                "--area",
                "rome",
                "--size",
                "32",
                "--out-dir",
                str(root / "chips"),
            ]
        )
        == 0
    )
    assert (
        cli_main(["stats", "--chips-dir", str(root / "chips"), "--out", str(root / "stats.json")])
        == 0
    )
    return root / "chips", root / "stats.json"


DEMO_BACKBONE = {
    "model_name": "vit_tiny_patch16_224",
    "patch_size": 8,
    "embed_dim": 48,
    "depth": 2,
    "num_heads": 3,
}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["mae", "dino"])
def test_issue5_loss_falls_on_demo_chips(demo_chips, tmp_path, method):
    """Acceptance test of issue 5: on real (simulated-product) demo chips, the mean of the
    last 9 logged losses is clearly below the mean of the first 9 within a fixed budget
    of optimiser steps, for MAE and for DINO, through the batch loader."""
    store, stats = demo_chips
    # fixed budgets: DINO's loss first rises while the teacher sharpens (the usual DINO
    # curve), then falls; measured last/first ratios 0.86 (MAE, 60) and 0.85 (DINO, 150)
    budget = {"mae": 60, "dino": 150}[method]
    # every one of the 24 train+val chips (test_buffer 0: this test is about the loss, not
    # the pool), batch 8: 3 steps per epoch, so each mean covers 3 whole epochs
    k = 9
    hp = {
        "backbone": DEMO_BACKBONE,
        "mae": {
            "decoder_dim": 32,
            "decoder_depth": 1,
            "decoder_heads": 2,
            "batch_size": 8,
            "epochs": 100,
            "lr": 3e-3,
            "warmup_epochs": 1,
        },
        "dino": {
            "head_hidden_dim": 64,
            "head_bottleneck_dim": 16,
            "head_out_dim": 64,
            "batch_size": 8,
            "epochs": 100,
            "lr": 1e-3,
            "warmup_epochs": 1,
            "local_crops": 2,
        },
    }
    out = tmp_path / method
    c = cfg(store, stats, out, method=method, hp=hp, max_steps=budget, test_buffer=0)
    assert train(c) == 0
    ls = losses(out)
    assert len(ls) == budget and np.isfinite(ls).all()
    first, last = np.mean(ls[:k]), np.mean(ls[-k:])
    assert last < 0.92 * first, (first, last, ls)
