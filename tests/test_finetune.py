"""Fine-tuning: exact label subsets, no test leakage, reproducibility, encoder checks."""

import json

import numpy as np
import pytest
import torch

import sarssl.downstream.finetune as ft
import sarssl.downstream.splits as splits
from conftest import BACKBONE, MAE_HP, make_store
from sarssl.cli import main as cli_main
from sarssl.data.loaders import ChipTensors
from sarssl.data.store import ChipStore
from sarssl.downstream.finetune import finetune, resolve_hparams
from sarssl.errors import InputError, SarsslError
from sarssl.selfsup.pretrain import resolve_hparams as pre_hparams
from sarssl.selfsup.pretrain import train

FT_HP = {
    "epochs": 6,
    "batch_size": 8,
    "lr": 3e-3,
    "weight_decay": 0.05,
    "layer_decay": 0.8,
    "patience": 3,
    "backbone": BACKBONE,
    "unet_width": 4,
    "unet_depth": 2,
    "seg_width": 16,
}
COLUMNS = [
    "task",
    "init",
    "protocol",
    "fraction",
    "seed",
    "pretrain_area",
    "finetune_area",
    "n_train_chips",
    "metric",
    "value",
    "epochs",
    "lr",
    "knn_k",
    "wall_s",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    store, stats = make_store(root, n=50)
    enc_dir = root / "mae"
    c = {
        "method": "mae",
        "hparams": pre_hparams("mae", MAE_HP),
        "seed": 1,
        "chips_dirs": [str(store)],
        "stats": str(stats),
        "out_dir": str(enc_dir),
        "device": "cpu",
        "quiet": True,
        "max_steps": 4,
        "threads": 1,
    }
    assert train(c) == 0
    return store, stats, enc_dir / "encoder.safetensors"


def job(setup, out, **kw):
    store, stats, enc = setup
    c = {
        "task": "landcover",
        "init": "mae",
        "init_label": "mae",
        "encoder": str(enc),
        "protocol": "finetune",
        "fraction": 0.25,
        "seed": 0,
        "chips_dir": str(store),
        "stats": str(stats),
        "hparams": resolve_hparams(FT_HP),
        "pretrain_area": "a",
        "finetune_area": "a",
        "out_dir": str(out),
        "device": "cpu",
        "quiet": True,
        "threads": 1,
    }
    c.update(kw)
    if c["init"] in ("scratch", "unet"):
        c["init_label"] = c["init"]
    return c


def test_exact_subset_and_no_test_leak(setup, tmp_path, monkeypatch):
    store_dir = setup[0]
    store = ChipStore(store_dir)
    split = dict(zip(store.index["id"], store.index["split"]))
    seen: list[tuple[str, list[str]]] = []  # ("load", ids) or ("batch", ids) in call order
    real_open, real_batch = splits.open_split, splits.MemorySplit.batch

    def spy_open(store_, rows, *args):
        split_data = real_open(store_, rows, *args)
        seen.append(("load", [str(i) for i in split_data.ids]))
        return split_data

    def spy_batch(self, idx):
        seen.append(("batch", [str(self.ids[i]) for i in np.asarray(idx)]))
        return real_batch(self, idx)

    monkeypatch.setattr(splits, "open_split", spy_open)
    monkeypatch.setattr(splits.MemorySplit, "batch", spy_batch)
    summary = finetune(job(setup, tmp_path / "a"))
    frac_ids = store.fraction_ids(0.25, 0)
    assert sorted(summary["ids"]["train"]) == sorted(frac_ids)
    assert all(split[i] == "val" for i in summary["ids"]["val"])
    assert all(split[i] == "test" for i in summary["ids"]["test"])
    test_ids = set(summary["ids"]["test"])
    # the test chips are read only in the final pass, after training and model selection
    first_test = next(k for k, (_, ids) in enumerate(seen) if set(ids) & test_ids)
    assert seen[first_test][0] == "load" and set(seen[first_test][1]) == test_ids
    assert all(not (set(ids) & test_ids) for _, ids in seen[:first_test])
    assert all(set(ids) <= test_ids for _, ids in seen[first_test:])
    trained = {
        i for kind, ids in seen[:first_test] if kind == "batch" for i in ids if split[i] == "train"
    }
    assert trained == set(frac_ids)
    rows = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert all(list(r) == COLUMNS for r in rows)
    assert {r["metric"] for r in rows} >= {"miou", "overall_accuracy"}
    assert rows[0]["n_train_chips"] == len(frac_ids)
    pred = np.load(tmp_path / "a" / "predictions.npz")
    assert pred["pred"].dtype == np.uint8 and pred["pred"].shape == (len(test_ids), 16, 16)
    assert set(pred["ids"]) == test_ids


def test_reproducible_from_seed(setup, tmp_path):
    a = finetune(job(setup, tmp_path / "a", task="treecover", init="scratch", fraction=1.0, seed=3))
    b = finetune(job(setup, tmp_path / "b", task="treecover", init="scratch", fraction=1.0, seed=3))
    c = finetune(job(setup, tmp_path / "c", task="treecover", init="scratch", fraction=1.0, seed=4))
    assert a["test_scores"] == b["test_scores"]
    assert np.array_equal(
        np.load(tmp_path / "a/predictions.npz")["pred"],
        np.load(tmp_path / "b/predictions.npz")["pred"],
    )
    assert a["test_scores"] != c["test_scores"]
    names = [r["metric"] for r in json.loads((tmp_path / "a/metrics.json").read_text())]
    assert names == ["rmse", "mae", "r2"]


def test_learns_landcover_and_linear_freezes(setup, tmp_path):
    s = finetune(job(setup, tmp_path / "s", init="scratch", fraction=1.0, max_epochs=6))
    assert s["test_scores"]["overall_accuracy"] > 0.8  # 4 balanced classes: chance ~0.25
    u = finetune(job(setup, tmp_path / "u", init="unet", fraction=1.0, max_epochs=2))
    assert u["epochs_run"] == 2 and 0 <= u["test_scores"]["miou"] <= 1
    lin = finetune(job(setup, tmp_path / "lin", protocol="linear", max_epochs=2))
    from safetensors.torch import load_file

    enc = load_file(setup[2])
    state = torch.load(tmp_path / "lin" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(state[f"backbone.{k}"], v) for k, v in enc.items())
    assert lin["epochs_run"] == 2


def test_encoder_stats_mismatch_is_clear(setup, tmp_path):
    store, stats, enc = setup
    other = json.loads(stats.read_text())
    other["mean"] = [m + 1.0 for m in other["mean"]]
    bad = tmp_path / "stats_other.json"
    bad.write_text(json.dumps(other))
    with pytest.raises(InputError, match="normalisation statistics"):
        finetune(job(setup, tmp_path / "x", stats=str(bad)))
    hp = tmp_path / "hp.json"
    hp.write_text(json.dumps(FT_HP))
    rc = cli_main(
        [
            "finetune",
            "--task",
            "landcover",
            "--init",
            "dino",
            "--encoder",
            str(enc),
            "--fraction",
            "0.25",
            "--seed",
            "0",
            "--chips-dir",
            str(store),
            "--stats",
            str(stats),
            "--hparams",
            str(hp),
            "--out-dir",
            str(tmp_path / "y"),
            "--device",
            "cpu",
        ]
    )
    assert rc == 2  # an MAE encoder passed as --init dino
    rc = cli_main(
        [
            "finetune",
            "--task",
            "landcover",
            "--init",
            "mae",
            "--encoder",
            str(enc),
            "--fraction",
            "0.25",
            "--seed",
            "0",
            "--chips-dir",
            str(store),
            "--stats",
            str(stats),
            "--hparams",
            str(hp),
            "--out-dir",
            str(tmp_path / "z"),
            "--device",
            "cpu",
            "--max-epochs",
            "1",
        ]
    )
    assert rc == 0 and (tmp_path / "z" / "checkpoint.pt").is_file()


def test_steps_per_epoch_and_dihedral_augmentation(setup, tmp_path, monkeypatch):
    """A fixed number of steps per epoch (same compute at every label fraction), and the
    flips/rotations move images and land-cover maps together."""
    calls = []
    real_batch = ChipTensors.batch

    def spy_batch(self, idx):
        calls.append(len(np.asarray(idx)))
        return real_batch(self, idx)

    monkeypatch.setattr(ChipTensors, "batch", spy_batch)
    hp = resolve_hparams({**FT_HP, "steps_per_epoch": 3, "patience": 10})
    s = finetune(job(setup, tmp_path / "a", hparams=hp, init="scratch", max_epochs=2))
    n_train = len(s["ids"]["train"])
    # 2 epochs x 3 training batches of min(batch_size, n_train) chips, then val/test passes
    assert calls[:3] == [min(8, n_train)] * 3 and s["epochs_run"] == 2
    img = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(1, 12, 1, 1)
    lc = torch.arange(16).reshape(1, 4, 4)
    for k in range(4):
        for flip in (False, True):
            out = ft.dihedral({"image": img, "landcover": lc, "treecover": torch.ones(1)}, k, flip)
            assert torch.equal(out["image"][0, 5].long(), out["landcover"][0])  # still aligned
            assert torch.equal(out["treecover"], torch.ones(1))
    assert not torch.equal(ft.dihedral({"image": img, "landcover": lc}, 1, False)["landcover"], lc)


def test_linear_probe_learns_on_cached_features_and_bf16_cpu(setup, tmp_path, monkeypatch):
    """--protocol linear computes the frozen encoder's tokens once per chip and still learns;
    dtype bf16 runs the autocast path on CPU (the GPU code path) and learns too."""
    import sarssl.encoders as encoders

    n_calls = []
    real = encoders.patch_tokens

    def count(backbone, images):
        n_calls.append(images.shape[0])
        return real(backbone, images)

    monkeypatch.setattr(encoders, "patch_tokens", count)
    hp = resolve_hparams({**FT_HP, "lr": 1e-2, "patience": 20})
    lin = finetune(
        job(setup, tmp_path / "lin", protocol="linear", fraction=1.0, hparams=hp, max_epochs=8)
    )
    n_chips = sum(len(v) for v in lin["ids"].values())
    assert sum(n_calls) == n_chips  # once per chip, not once per epoch
    assert lin["test_scores"]["overall_accuracy"] > 0.5  # 4 classes: chance ~0.25
    monkeypatch.setattr(encoders, "patch_tokens", real)
    hp16 = resolve_hparams({**FT_HP, "dtype": "bf16"})
    b = finetune(
        job(setup, tmp_path / "bf16", init="scratch", fraction=1.0, hparams=hp16, max_epochs=6)
    )
    assert b["test_scores"]["overall_accuracy"] > 0.6


def test_encoder_lr_scale_and_layer_decay_groups():
    from sarssl.downstream.models import build_task_model
    from sarssl.encoders import create_backbone
    from sarssl.engine import param_groups, reuse_freed_memory

    bb = create_backbone(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2
    )
    model = build_task_model("treecover", bb)
    groups = param_groups(model, 0.05, layer_decay=0.5, num_layers=2, backbone_lr_scale=0.1)
    scale_of = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale_of[id(named["head.mlp.0.weight"])] == 1.0  # the head keeps the full lr
    assert scale_of[id(named["backbone.blocks.1.mlp.fc1.weight"])] == pytest.approx(0.1 * 0.5)
    assert scale_of[id(named["backbone.blocks.0.mlp.fc1.weight"])] == pytest.approx(0.1 * 0.25)
    assert scale_of[id(named["backbone.patch_embed.proj.weight"])] == pytest.approx(0.1 * 0.125)
    assert reuse_freed_memory() in (True, False)


@pytest.mark.parametrize("patience, expected_epochs", [(2, 3), (0, 5)])
def test_early_stopping_patience_and_zero_is_off(setup, tmp_path, patience, expected_epochs):
    """A learning rate too small to move the validation score: every epoch after the first is
    'not better', so patience 2 stops after epoch 3 and patience 0 (off) runs all 5; the
    selected checkpoint is the first (best) epoch either way."""
    hp = resolve_hparams(FT_HP | {"lr": 1e-30, "patience": patience, "warmup_epochs": 0})
    r = finetune(
        job(
            setup, tmp_path / f"p{patience}", init="scratch", fraction=1.0, max_epochs=5, hparams=hp
        )
    )
    assert r["epochs_run"] == expected_epochs
    assert r["best_epoch"] == 0


def test_encoder_with_another_channel_count_or_format_is_refused(setup, tmp_path, capsys):
    """3-channel encoder weights with a 12-channel encoder.json (timm would silently repeat
    the RGB filters over the 12 SAR channels and train) and an encoder file that is not
    safetensors are refused with an error naming the file, also on the command line."""
    import shutil

    from sarssl import CHANNELS
    from sarssl.encoders import create_backbone, export_encoder

    store, stats, enc = setup
    arch = {k: v for k, v in BACKBONE.items() if k != "model_name"}
    kwargs = {"in_chans": 12, "img_size": 16, **arch}
    three = tmp_path / "three" / "encoder.safetensors"
    bb = create_backbone(BACKBONE["model_name"], **{**kwargs, "in_chans": 3})
    export_encoder(
        bb,
        three,
        model_name=BACKBONE["model_name"],
        model_kwargs=kwargs,
        method="mae",
        stats=json.loads(stats.read_text()),
        channels=list(CHANNELS),
    )
    with pytest.raises(InputError, match=r"3 input channels.*12") as err:
        finetune(job(setup, tmp_path / "x", init=str(three), init_label="three"))
    assert str(three) in str(err.value)
    assert not (tmp_path / "x").exists()
    hp = tmp_path / "hp.json"
    hp.write_text(json.dumps(FT_HP))
    junk = tmp_path / "junk" / "encoder.safetensors"
    junk.parent.mkdir()
    junk.write_bytes(b"\x00" * 64 + b"not a tensor file")
    shutil.copy(enc.with_name("encoder.json"), junk.with_name("encoder.json"))
    for path in (three, junk):
        rc = cli_main(
            [
                "finetune",
                "--task",
                "landcover",
                "--init",
                "mae",
                "--encoder",
                str(path),
                "--fraction",
                "0.25",
                "--seed",
                "0",
                "--chips-dir",
                str(store),
                "--stats",
                str(stats),
                "--hparams",
                str(hp),
                "--out-dir",
                str(tmp_path / "y"),
                "--device",
                "cpu",
                "--max-epochs",
                "1",
            ]
        )
        assert rc == 2 and str(path) in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_chip_size_comes_from_the_store(setup, tmp_path, capsys):
    """--hparams img_size equal to the store's chip size is accepted (the workflow passes
    it); another one is an error naming both, before any training, on the command line too."""
    hp16 = resolve_hparams({**FT_HP, "backbone": {**BACKBONE, "img_size": 16}})
    r = finetune(
        job(setup, tmp_path / "ok", init="scratch", fraction=1.0, max_epochs=1, hparams=hp16)
    )
    assert r["init_detail"]["model_kwargs"]["img_size"] == 16
    for hp in ({**FT_HP, "backbone": {**BACKBONE, "img_size": 32}}, {**FT_HP, "img_size": 32}):
        for init in ("scratch", "mae", "unet"):
            with pytest.raises(SarsslError, match=r"img_size 32 differs from the chip size 16"):
                finetune(job(setup, tmp_path / "bad", init=init, hparams=resolve_hparams(hp)))
    assert not (tmp_path / "bad").exists()
    store, stats, enc = setup
    hp_file = tmp_path / "hp.json"
    hp_file.write_text(json.dumps({**FT_HP, "backbone": {**BACKBONE, "img_size": 32}}))
    rc = cli_main(
        [
            "finetune",
            "--task",
            "landcover",
            "--init",
            "scratch",
            "--encoder",
            str(enc),
            "--fraction",
            "1.0",
            "--seed",
            "0",
            "--chips-dir",
            str(store),
            "--stats",
            str(stats),
            "--hparams",
            str(hp_file),
            "--out-dir",
            str(tmp_path / "cli"),
            "--device",
            "cpu",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "img_size 32" in err and "chip size 16" in err and str(store) in err


def test_store_without_fractions_says_to_run_sarssl_fractions(setup, tmp_path):
    import shutil

    store = tmp_path / "store"
    shutil.copytree(setup[0], store)
    (store / "fractions.json").unlink()
    with pytest.raises(InputError, match=r"fractions.json not found.*sarssl fractions"):
        finetune(job(setup, tmp_path / "x", chips_dir=str(store), init="unet"))
