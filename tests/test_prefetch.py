"""The pretraining loop's GPU path exercised on the CPU: batches staged one step ahead
(bit-identical to the synchronous path), host synchronisation only every ``log_every``
steps (same losses and weights), the device-dependent defaults resolved in one place, and
``batch_size`` as the global batch under DDP."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import MAE_HP, cfg, losses, make_store
from sarssl.data.loaders import BatchLoader, ChipBatches
from sarssl.selfsup.pretrain import plan_steps, resolve_runtime, train


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("chips"))


def test_staged_batches_are_one_ahead_and_bit_identical(tiny_store):
    """With a transform, batch i + 1 is staged before batch i is handed out (overlap), and
    every batch equals the synchronous path's and the plain host path's, over 2 epochs."""
    store, _ = tiny_store
    ds = ChipBatches(store, batch_size=6, seed=3, labels=False)
    events = []

    def transform(batch):
        events.append(("stage", int(batch["row"][0])))
        return {"x": batch["x"].to(torch.float32) * 2.0, "row": batch["row"].clone()}

    plain = BatchLoader(ds, threads=2, prefetch=2, pin_memory=False)
    sync = BatchLoader(
        ds, threads=2, prefetch=2, pin_memory=False, transform=transform, overlap=False
    )
    ahead = BatchLoader(ds, threads=2, prefetch=2, pin_memory=False, transform=transform)
    for epoch in range(2):
        ref = [
            {"x": b["x"].to(torch.float32) * 2.0, "row": b["row"].clone()} for b in plain
        ]  # host buffers are reused: transform them as they come
        events.clear()
        a = list(sync)
        assert events == [("stage", int(r["row"][0])) for r in ref]
        events.clear()
        got = []
        for b in ahead:
            got.append(b)
            events.append(("yield", int(b["row"][0])))
        n = len(ref)
        assert n == len(a) == len(got) == len(ds) > 2
        # one ahead: stage 0, stage 1, yield 0, stage 2, yield 1, ..., yield n-1
        rows = [int(r["row"][0]) for r in ref]
        expect = [("stage", rows[0])]
        for i in range(n):
            if i + 1 < n:
                expect.append(("stage", rows[i + 1]))
            expect.append(("yield", rows[i]))
        assert events == expect
        for r, x, y in zip(ref, a, got):
            assert torch.equal(r["row"], x["row"]) and torch.equal(r["row"], y["row"])
            assert torch.equal(r["x"], x["x"]) and torch.equal(r["x"], y["x"])
        assert plain.epoch == sync.epoch == ahead.epoch == epoch + 1


def test_overlap_and_sync_every_keep_losses_and_weights(tiny_store, tmp_path):
    """The staged input path (default) and the synchronous one (--no-overlap) train the
    same bits; logging (= host synchronisation) every 3 steps changes nothing but which
    lines are written, and a run stopped and resumed between synchronisations is exact."""
    store, stats = tiny_store
    runs = {
        "overlap": {},
        "sync": {"overlap": False},
        "every3": {},
    }
    for name, extra in runs.items():
        hp = json.loads(json.dumps(MAE_HP))
        if name == "every3":
            hp["mae"]["log_every"] = 3
        assert train(cfg(store, stats, tmp_path / name, hp=hp, max_steps=8, **extra)) == 0
    enc = {k: load_file(tmp_path / k / "encoder.safetensors") for k in runs}
    for k in ("sync", "every3"):
        assert all(torch.equal(enc["overlap"][p], enc[k][p]) for p in enc["overlap"]), k
    assert losses(tmp_path / "overlap") == losses(tmp_path / "sync")
    lines = [
        json.loads(line)
        for line in (tmp_path / "every3" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in lines] == [3, 6, 8]
    full = losses(tmp_path / "overlap")
    assert [r["loss"] for r in lines] == [full[2], full[5], full[7]]
    assert all(r["images_per_s"] > 0 for r in lines)
    run = json.loads((tmp_path / "every3" / "run.json").read_text())
    assert run["config"]["runtime"]["sync_every"] == 3
    # stop at step 4 (between synchronisations at 3 and 6) and resume: the same weights
    hp = json.loads(json.dumps(MAE_HP))
    hp["mae"]["log_every"] = 3
    part = tmp_path / "part"
    assert train(cfg(store, stats, part, hp=hp, max_steps=8, stop_after_steps=4)) == 0
    assert torch.load(part / "checkpoint.pt", weights_only=True)["step"] == 4
    assert train(cfg(store, stats, part, hp=hp, max_steps=8)) == 0
    b = load_file(part / "encoder.safetensors")
    assert all(torch.equal(enc["every3"][p], b[p]) for p in b)


def test_runtime_defaults_differ_only_by_device_and_are_recorded(tiny_store, tmp_path):
    from sarssl.selfsup.mae import MAEConfig

    c = MAEConfig()
    cpu = resolve_runtime(c, torch.device("cpu"), {})
    assert (cpu.dtype, cpu.deterministic, cpu.compile, cpu.fused_adamw) == (
        "fp32",
        True,
        False,
        False,
    )
    assert cpu.loader_threads == 2 and cpu.sync_every == c.log_every and cpu.overlap
    gpu = resolve_runtime(c, torch.device("cuda", 0), {})  # a device object needs no GPU
    assert (gpu.dtype, gpu.deterministic, gpu.compile, gpu.fused_adamw) == (
        "bf16",
        False,
        True,
        True,
    )
    assert 2 <= gpu.loader_threads <= 8
    forced = resolve_runtime(
        c,
        torch.device("cuda", 0),
        {"deterministic": "true", "compile": False, "loader_threads": 3},
    )
    assert forced.deterministic and not forced.compile and forced.loader_threads == 3
    assert resolve_runtime(MAEConfig(compile=True), torch.device("cpu"), {}).compile
    with pytest.raises(Exception, match="deterministic"):
        resolve_runtime(c, torch.device("cpu"), {"deterministic": "maybe"})
    # what a CPU run records, and the CPU defaults keep the deterministic kernels on
    store, stats = tiny_store
    assert train(cfg(store, stats, tmp_path / "r", max_steps=2)) == 0
    rec = json.loads((tmp_path / "r" / "run.json").read_text())["config"]["runtime"]
    assert rec == {
        "device": "cpu",
        "dtype": "fp32",
        "deterministic": True,
        "compile": False,
        "fused_adamw": False,
        "loader_threads": 2,
        "sync_every": 1,
        "overlap": True,
    }
    assert torch.are_deterministic_algorithms_enabled()


def test_batch_size_is_the_global_batch_under_ddp():
    """Each of N processes reads batch_size / (N x accum) images per micro-step; the
    global batch, the steps and the warm-up do not depend on N (so neither does the lr)."""
    from sarssl.selfsup.mae import MAEConfig

    c = MAEConfig(batch_size=16, accum_steps=2, epochs=3, warmup_epochs=1)
    one, total1, warm1 = plan_steps(c, 100, seed=0, rank=0, world=1, max_steps=None)
    assert one.global_batch == 16 and one.micro == 8 and total1 == 3 * (100 // 16)
    for world in (2, 4):
        parts = [plan_steps(c, 100, 0, r, world, None) for r in range(world)]
        assert all(p[0].global_batch == 16 and p[0].micro == 16 // (world * 2) for p in parts)
        assert all((p[1], p[2]) == (total1, warm1) for p in parts)
        # the ranks' micro-batches of a step tile exactly the one-process global batch
        for step in range(3):
            got = np.concatenate(
                [p[0].global_indices(step)[p[0].positions(a)] for p in parts for a in range(2)]
            )
            assert sorted(got.tolist()) == sorted(one.global_indices(step).tolist())
    with pytest.raises(Exception, match="divisible"):
        plan_steps(MAEConfig(batch_size=6), 100, 0, 0, 4, None)


def test_pretrain_benchmark_runs_the_workflow_loop_on_cpu(tmp_path, capsys, monkeypatch):
    """benchmarks/pretrain.py (the one command for a GPU) runs on the CPU: cold and warm
    phases of the real loop on a compact store, MFU n/a without a peak."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "pretrain.py"
    spec = importlib.util.spec_from_file_location("bench_pretrain_cpu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["pretrain.py", "--device", "cpu", "--tiny", "--method", "mae", "--steps", "2"]
    argv += ["--warmup", "1", "--store-dtype", "uint8", "--tmp-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    mod.main()
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["phase"] for r in rows] == ["cold", "warm"]
    for r in rows:
        assert r["device"] == "cpu" and r["mfu"] == "n/a" and r["images_per_s"] > 0
        assert 0 <= r["loader_share"] <= 1 and r["gflops_per_image"] > 0
        assert r["store_dtype"] == "uint8" and r["bytes_per_chip"] == 12 * 64 * 64
        assert r["runtime"]["deterministic"] and r["runtime"]["sync_every"] == 10
    assert mod.peak_tflops("NVIDIA H200") == 989.0 and mod.peak_tflops("NVIDIA A100") == 312.0
