"""ML interoperability: the encoder in timm's local layout, a TorchGeo-style dataset over
the chip store, fine-tuning TensorBoard events, and one CUDA build for pip and conda.

TorchGeo itself is not installed (it pulls lightning, kornia and more): the dataset is
checked against TorchGeo's ``NonGeoDataset`` sample convention (a dict with a float32
``(C, H, W)`` ``image`` and an int64 ``(H, W)`` ``mask`` for segmentation) and against
``torch.utils.data.DataLoader``'s default collation, which TorchGeo's data modules use.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import timm
import torch
import yaml
from torch.utils.data import DataLoader

from conftest import MAE_HP, ROOT, make_store
from sarssl.data.normalize import normalize_batch
from sarssl.data.store import ChipStore, load_stats
from sarssl.encoders import TIMM_DIR, load_encoder
from sarssl.errors import SarsslError
from sarssl.interop import ChipDataset, write_finetune_tensorboard
from sarssl.selfsup.pretrain import resolve_hparams, train
from sarssl.vocabulary import CHANNELS, IGNORE_INDEX


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("interop")
    store, stats = make_store(root, n=40)
    out = root / "mae"
    cfg = {
        "method": "mae",
        "hparams": resolve_hparams("mae", MAE_HP),
        "seed": 3,
        "chips_dirs": [str(store)],
        "stats": str(stats),
        "out_dir": str(out),
        "device": "cpu",
        "quiet": True,
        "max_steps": 3,
        "threads": 1,
    }
    assert train(cfg) == 0
    return store, stats, out


def test_encoder_loads_with_timm_local_dir(pretrained):
    store, stats, out = pretrained
    folder = out / TIMM_DIR
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    # plain timm, nothing of sarssl: the documented one-liner
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    ref, meta = load_encoder(out / "encoder.safetensors")
    ref.eval()
    assert model.num_classes == 0 and model.patch_embed.proj.in_channels == len(CHANNELS)
    x = torch.randn(2, len(CHANNELS), 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), ref(x))  # the same trained weights, not a fresh init
        fresh = timm.create_model(f"local-dir:{folder}", pretrained=False).eval()
        assert not torch.equal(fresh(x), ref(x))
    cfg = json.loads((folder / "config.json").read_text())
    mean, std = load_stats(stats)
    assert np.allclose(cfg["pretrained_cfg"]["mean"], mean)
    assert np.allclose(cfg["pretrained_cfg"]["std"], std)
    assert cfg["pretrained_cfg"]["tag"] == "sarssl_mae"
    assert cfg["sarssl"]["channels"] == list(CHANNELS) and cfg["sarssl"]["method"] == "mae"
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (12, 16, 16)


def test_chip_dataset_follows_the_torchgeo_sample_convention(pretrained):
    store_dir, stats, _ = pretrained
    store = ChipStore(store_dir)
    ds = ChipDataset(store_dir, split="train", task="landcover", stats=stats)
    assert len(ds) == len(store.rows("train")) > 0
    sample = ds[1]
    assert set(sample) == {"image", "mask"}
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (12, 16, 16)
    assert sample["mask"].dtype == torch.int64 and sample["mask"].shape == (16, 16)
    row = store.rows("train")[1]
    want = normalize_batch(np.asarray(store.x[row : row + 1], np.float32), *load_stats(stats))[0]
    assert np.array_equal(sample["image"].numpy(), want)
    assert np.array_equal(sample["mask"].numpy(), store.landcover[row].astype(np.int64))
    assert ds.ignore_index == IGNORE_INDEX
    # raw dB without stats; tree cover as float; fractions select the fine-tuning subset
    raw = ChipDataset(store_dir, split="train", task="treecover")[1]
    assert np.array_equal(raw["image"].numpy(), store.x[row].astype(np.float32))
    assert raw["mask"].dtype == torch.float32
    sub = ChipDataset(store_dir, split="train", fraction=0.25, seed=None)
    assert set(sub.ids) == set(store.fraction_ids(0.25)) and len(sub) < len(ds)
    # TorchGeo-style transforms get the whole sample; a DataLoader collates it
    flip = ChipDataset(
        store_dir, "val", stats=stats, transforms=lambda s: {k: v.flip(-1) for k, v in s.items()}
    )
    plain = ChipDataset(store_dir, "val", stats=stats)
    assert torch.equal(flip[0]["image"], plain[0]["image"].flip(-1))
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 12, 16, 16) and batch["mask"].shape == (4, 16, 16)
    with pytest.raises(SarsslError, match="unknown task"):
        ChipDataset(store_dir, task="flood")


def _events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_finetune_writes_tensorboard_events(pretrained, tmp_path):
    from sarssl.downstream.finetune import finetune
    from sarssl.downstream.finetune import resolve_hparams as ft_hparams

    store, stats, out = pretrained
    hp = ft_hparams({"epochs": 2, "batch_size": 8, "backbone": MAE_HP["backbone"]})
    hp["lr_grid"] = [1e-3, 3e-3]
    cfg = {
        "task": "landcover",
        "init": "mae",
        "init_label": "mae",
        "encoder": str(out / "encoder.safetensors"),
        "protocol": "finetune",
        "fraction": 1.0,
        "seed": 0,
        "chips_dir": str(store),
        "stats": str(stats),
        "hparams": hp,
        "out_dir": str(tmp_path / "run"),
        "device": "cpu",
        "quiet": True,
        "threads": 1,
    }
    summary = finetune(cfg)
    tb = tmp_path / "run" / "tensorboard"
    assert sorted(p.name for p in tb.iterdir()) == ["lr_0.001", "lr_0.003"]
    for run in summary["lr_search"]:
        events = _events(tb / f"lr_{run['lr']:g}")
        want = [(h["step"], h["train_loss"]) for h in run["history"]]
        assert [(s, pytest.approx(v)) for s, v in events["train/loss"]] == want
        assert [v for _, v in events["val/miou"]] == pytest.approx(
            [h["val"]["miou"] for h in run["history"]]
        )
    chosen = _events(tb / f"lr_{summary['lr']:g}")
    assert chosen["test/miou"][0][1] == pytest.approx(summary["test_scores"]["miou"])
    other = [r["lr"] for r in summary["lr_search"] if r["lr"] != summary["lr"]][0]
    assert "test/miou" not in _events(tb / f"lr_{other:g}")
    # a rerun replaces the events instead of appending to them
    write_finetune_tensorboard(tb, summary)
    assert len(_events(tb / f"lr_{summary['lr']:g}")["train/loss"]) == len(summary["history"])


def test_torch_cuda_build_matches_between_pip_lock_and_conda_env():
    """requirements.txt's torch wheel (+cuXYZ via nvidia-*-cuNN) and the torch env's
    cuda-version pin name the same CUDA major.minor; the env records the driver."""
    lock = (ROOT / "requirements.txt").read_text()
    runtime = re.search(r"^nvidia-cuda-runtime==(\d+)\.(\d+)", lock, re.M)
    assert runtime, "requirements.txt pins no nvidia-cuda-runtime"
    env_text = (ROOT / "workflow" / "envs" / "torch.yaml").read_text()
    deps = yaml.safe_load(env_text)["dependencies"]
    pins = dict(str(d).split("=", 1) for d in deps if isinstance(d, str) and "=" in str(d))
    assert pins["cuda-version"] == f"{runtime.group(1)}.{runtime.group(2)}"
    torch_pin = re.search(r"^torch==([\d.]+)", lock, re.M).group(1)
    assert pins["pytorch"] == torch_pin
    assert f"CONDA_OVERRIDE_CUDA={pins['cuda-version']}" in env_text
    assert re.search(r"driver >= \d{3}", env_text)
