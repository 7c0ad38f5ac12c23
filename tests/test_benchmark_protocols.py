"""The label-efficiency benchmark's fine-tuning side: controls, probes that measure the
representation, per-seed label subsets, learning-rate selection on val, streaming."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import BACKBONE, make_store
from sarssl.cli import main as cli_main
from sarssl.data.store import ChipStore, nested_fractions, write_fractions
from sarssl.downstream import knn
from sarssl.downstream.finetune import finetune, make_optimizer, resolve_hparams, run_all
from sarssl.downstream.models import PixelLinear, build_task_model
from sarssl.encoders import create_backbone, patch_tokens
from sarssl.errors import SarsslError
from sarssl.vocabulary import N_LANDCOVER_CLASSES, init_protocols

HP = {
    "epochs": 3,
    "probe_epochs": 3,
    "batch_size": 8,
    "lr": 3e-3,
    "lr_grid": [3e-3],
    "probe_lr_grid": [1e-2],
    "knn_k": [3],
    "patience": 0,
    "backbone": BACKBONE,
    "unet_width": 4,
    "unet_depth": 2,
    "seg_width": 16,
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    path, stats = make_store(root, n=50)
    index = ChipStore(path).index
    write_fractions(path, index, [0.25, 0.5, 1.0], seed=11, run_seeds=[0, 1, 2])
    return path, stats


def job(store, out, **kw):
    path, stats = store
    c = {
        "task": "landcover",
        "init": "scratch",
        "init_label": "scratch",
        "encoder": None,
        "protocol": "finetune",
        "fraction": 0.25,
        "seed": 0,
        "chips_dir": str(path),
        "stats": str(stats),
        "hparams": resolve_hparams(HP),
        "pretrain_area": "none",
        "finetune_area": "a",
        "out_dir": str(out),
        "device": "cpu",
        "quiet": True,
        "threads": 1,
    }
    c.update(kw)
    c["init_label"] = c["init"]
    return c


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_linear_probe_and_pixel_control_have_exactly_the_linear_parameters():
    bb = create_backbone(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2
    )
    seg = build_task_model("landcover", bb, head="linear")
    for p in seg.backbone.parameters():
        p.requires_grad_(False)
    c, d = N_LANDCOVER_CLASSES, 32
    assert _trainable(seg) == c * d + c
    bb2 = create_backbone(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=1, num_heads=2
    )
    reg = build_task_model("treecover", bb2, head="linear")
    for p in reg.backbone.parameters():
        p.requires_grad_(False)
    assert _trainable(reg) == d + 1
    assert _trainable(PixelLinear("landcover")) == c * 12 + c
    assert _trainable(PixelLinear("treecover")) == 12 + 1
    # logits come back at pixel resolution
    out = seg(torch.randn(2, 12, 16, 16))
    assert out.shape == (2, c, 16, 16)
    # and the conv decoder the `decoder` protocol trains is much larger than a probe
    dec = build_task_model("landcover", bb, head="decoder", seg_width=16)
    assert sum(p.numel() for p in dec.head.parameters()) > 3 * (c * d + c)


def test_per_seed_subsets_are_nested_and_differ_across_seeds(store):
    st = ChipStore(store[0])
    doc = json.loads((store[0] / "fractions.json").read_text())
    assert doc["run_seeds"] == [0, 1, 2]
    for s in (0, 1, 2):
        small, mid, full = (set(st.fraction_ids(f, s)) for f in (0.25, 0.5, 1.0))
        assert small < mid < full  # nested within a seed
        assert full == set(st.index.loc[st.index["split"] == "train", "id"])
    subsets = [tuple(sorted(st.fraction_ids(0.25, s))) for s in (0, 1, 2)]
    assert len(set(subsets)) == 3  # different across seeds
    # the per-seed draw is [seed, run seed]: reproducible and independent of id order
    ids = sorted(st.index.loc[st.index["split"] == "train", "id"])
    assert nested_fractions(ids[::-1], [0.25], [11, 1])["0.25"] == st.fraction_ids(0.25, 1)
    with pytest.raises(SarsslError, match="no label subsets for seed 7"):
        st.fraction_ids(0.25, 7)
    with pytest.raises(SarsslError, match="give the run seed"):
        st.fraction_ids(0.25)


def test_controls_and_inits_use_the_same_subsets_and_test_chips(store, tmp_path):
    runs = {
        name: finetune(job(store, tmp_path / name, init=init, protocol=proto, seed=1))
        for name, init, proto in [
            ("scratch", "scratch", "finetune"),
            ("unet", "unet", "finetune"),
            ("pixel", "pixel", "linear"),
            ("random_linear", "scratch", "linear"),
            ("random_knn", "scratch", "knn"),
        ]
    }
    train = {k: tuple(v["ids"]["train"]) for k, v in runs.items()}
    test = {k: tuple(v["ids"]["test"]) for k, v in runs.items()}
    assert len(set(train.values())) == 1 and len(set(test.values())) == 1
    assert set(train["scratch"]) == set(ChipStore(store[0]).fraction_ids(0.25, 1))
    other = finetune(job(store, tmp_path / "s2", seed=2))
    assert set(other["ids"]["train"]) != set(train["scratch"])
    for name, r in runs.items():
        assert 0.0 <= r["test_scores"]["miou"] <= 1.0, name
    rows = json.loads((tmp_path / "random_knn" / "metrics.json").read_text())
    assert rows[0]["knn_k"] == 3 and rows[0]["lr"] is None


def test_protocols_refuse_the_inits_they_cannot_run(store, tmp_path):
    with pytest.raises(SarsslError, match="--protocol finetune cannot run --init pixel"):
        finetune(job(store, tmp_path / "a", init="pixel"))
    with pytest.raises(SarsslError, match="--protocol linear cannot run --init unet"):
        finetune(job(store, tmp_path / "b", init="unet", protocol="linear"))
    assert init_protocols("unet", ["finetune", "linear", "knn"]) == ["finetune"]
    assert init_protocols("pixel", ["finetune", "linear", "knn"]) == ["linear"]
    assert init_protocols("mae", ["finetune", "knn"]) == ["finetune", "knn"]


def test_pixel_control_learns_a_per_pixel_rule(tmp_path):
    """Classes that differ in their pixel values are what a per-pixel linear model can
    separate: on make_store's chips (a constant class signature plus noise) it must
    reach near-perfect accuracy once trained to convergence."""
    path, stats = make_store(tmp_path, n=40)
    write_fractions(path, ChipStore(path).index, [1.0], seed=0, run_seeds=[0])
    hp = resolve_hparams({**HP, "probe_epochs": 40, "probe_lr_grid": [1e-2, 1e-1]})
    r = finetune(
        job(
            (path, stats),
            tmp_path / "px",
            init="pixel",
            protocol="linear",
            fraction=1.0,
            hparams=hp,
        )
    )
    assert r["test_scores"]["overall_accuracy"] > 0.95
    assert r["lr"] in (1e-2, 1e-1) and len(r["lr_search"]) == 2
    best = max(r["lr_search"], key=lambda s: s["best_val_score"])
    assert r["lr"] == best["lr"]  # the lr with the best VAL score is the one kept


def test_knn_token_labels_follow_the_token_order_and_transfer_exactly():
    """Label blocks are in the encoder's token order, and a query identical to a bank
    token gets that token's labels back pixel for pixel (k = 1)."""
    lc = torch.arange(2 * 8 * 8).reshape(2, 8, 8) % 11
    blocks = knn.token_labels(lc, 4)
    assert blocks.shape == (2 * 4, 16)
    assert torch.equal(blocks[1], lc[0, 0:4, 4:8].reshape(-1))  # token 1 = top-right patch
    assert torch.equal(blocks[6], lc[1, 4:8, 0:4].reshape(-1))
    feats = torch.eye(8)
    bank = knn.KnnBank(feats, blocks)
    pred = knn.segment(bank, feats, k=1, fallback=0)
    assert torch.equal(pred.long(), blocks.long())
    bb = create_backbone(
        "vit_tiny_patch16_224", img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2
    )
    assert patch_tokens(bb, torch.randn(2, 12, 8, 8)).shape[1] == 4  # 2 x 2 tokens a chip


def test_streaming_matches_in_memory_fine_tuning(store, tmp_path):
    results = {}
    for loader in ("memory", "stream"):
        hp = resolve_hparams({**HP, "loader": loader})
        for init, proto in (("scratch", "finetune"), ("scratch", "linear"), ("scratch", "knn")):
            out = tmp_path / f"{loader}_{proto}"
            results[(loader, proto)] = finetune(
                job(store, out, init=init, protocol=proto, hparams=hp)
            )
            results[(loader, proto, "pred")] = np.load(out / "predictions.npz")["pred"]
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731
    for proto in ("finetune", "linear", "knn"):
        mem, stream = results[("memory", proto)], results[("stream", proto)]
        assert same(mem["test_scores"], stream["test_scores"]), proto
        assert same(mem["history"], stream["history"]), proto
        assert np.array_equal(
            results[("memory", proto, "pred")], results[("stream", proto, "pred")]
        )


def test_layer_decay_applies_to_pretrained_encoders_only(store):
    bb = create_backbone(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2
    )
    model = build_task_model("treecover", bb)
    hp = resolve_hparams({**HP, "layer_decay": 0.5})
    scales = {}
    for init in ("scratch", "mae"):
        opt, _ = make_optimizer(model, {"init": init, "hparams": hp}, 1e-3, 4, 2)
        scales[init] = sorted({g["lr_scale"] for g in opt.param_groups})
    assert scales["scratch"] == [1.0]
    assert scales["mae"] == pytest.approx([0.125, 0.25, 0.5, 1.0])


def test_one_job_runs_every_fraction_and_seed_and_shares_the_reference_lr(store, tmp_path):
    path, stats = store
    hp = tmp_path / "hp.json"
    hp.write_text(json.dumps({**HP, "lr_grid": [1e-3, 3e-3], "lr_search": "reference_run"}))
    rc = cli_main(
        ["finetune", "--task", "landcover", "--init", "scratch", "--fraction", "0.25,1.0",
         "--seed", "0,1", "--chips-dir", str(path), "--stats", str(stats), "--hparams", str(hp),
         "--runs-dir", str(tmp_path / "runs"), "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0
    runs = {d.name: json.loads((d / "run.json").read_text()) for d in (tmp_path / "runs").iterdir()}
    assert sorted(runs) == ["f0.25_s0", "f0.25_s1", "f1.0_s0", "f1.0_s1"]
    ref = runs["f1.0_s0"]
    assert len(ref["lr_search"]) == 2 and "lr_from" not in ref["config"]
    for name, r in runs.items():
        assert r["lr"] == ref["lr"]
        if name != "f1.0_s0":
            assert r["config"]["lr_from"] == "f1.0_s0" and len(r["lr_search"]) == 1
    rc = cli_main(
        ["finetune", "--task", "landcover", "--init", "scratch", "--fraction", "0.25,1.0",
         "--seed", "0", "--chips-dir", str(path), "--stats", str(stats), "--hparams", str(hp),
         "--out-dir", str(tmp_path / "one"), "--device", "cpu"]
    )  # fmt: skip
    assert rc == 2  # several runs need --runs-dir


def test_run_all_each_run_searches_every_run(store, tmp_path):
    hp = resolve_hparams({**HP, "lr_grid": [1e-3, 3e-3], "lr_search": "each_run"})
    out = run_all(
        [job(store, tmp_path / f"s{s}", seed=s, hparams=hp, fraction=1.0) for s in (0, 1)]
    )
    assert all(len(r["lr_search"]) == 2 for r in out)
