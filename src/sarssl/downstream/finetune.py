"""``sarssl finetune``: train a task model at one label fraction and score it on the test split.

Protocol (the study's, made leak-proof):

- **train** on exactly the ``fractions.json`` subset for ``--fraction`` (TRAIN split
  only; the subsets are nested and seeded by ``sarssl fractions``);
- **select** the checkpoint and stop early on the VAL split only (land cover: mIoU,
  higher is better; tree cover: RMSE, lower is better; ``patience`` epochs);
- **score** once, with the selected checkpoint, on the TEST split only.

Initialisations: ``scratch`` (random ViT, same architecture as ``--encoder`` when given,
else the ``backbone`` hyper-parameters), ``mae`` / ``dino`` / any ``PATH`` (an exported
``encoder.safetensors``; its channel order and normalisation statistics must equal the
store's and ``--stats``), ``unet`` (the from-scratch U-Net baseline). ``--protocol
linear`` freezes the encoder so only the head trains (a linear/decoder probe);
``finetune`` trains everything, optionally with layer-wise lr decay (``layer_decay < 1``).

Outputs in ``--out-dir``: ``metrics.json`` (tidy rows, columns of
``docs/architecture.md``), ``predictions.npz`` (test rows, ids, predictions, targets),
``run.json`` (configuration, chip ids used per split, best epoch, timings) and
``checkpoint.pt`` (the selected model; tensors and plain values only, it loads with
``torch.load(..., weights_only=True)``).

Encoders are read from safetensors only, and weights whose patch embedding takes another
number of input channels than the chip store has are refused before timm could adapt
them (:func:`check_encoder_compatible`).

The chip size comes from the chip store only: every ViT is built for the store's chips
(a pretrained encoder's position embedding is resampled when it was pretrained on other
chips), and an ``img_size`` in ``--hparams`` that differs from the store's chip size is an
error naming both (:func:`sarssl.encoders.backbone_kwargs`). The chips are read
with :func:`sarssl.data.loaders.load_chips` and normalised by
:mod:`sarssl.data.normalize`, like every other consumer of a chip store.

No resume, by design. A fine-tuning job that is killed (SIGTERM, preemption) exits 143
and is rerun from the start; it has no ``--resume-dir``. The jobs are short (about 9 s
in the demo; minutes, at most about an hour, at study scale, against many hours of
pretraining), and they are fully seeded, so a rerun reproduces exactly the result an
uninterrupted job would have given: the only cost of a preemption is the lost part of
one short job. Resuming would instead need a checkpoint per epoch holding the model,
the optimiser state *and* the best-so-far model copy (about three model sizes), written
by each of the many jobs that run side by side, plus the sample-stream and augmentation
generators and the early-stopping state; that I/O and the extra code path are not worth
at most an hour of recomputation. Pretraining, which does resume, is the stage where
that trade-off is reversed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..engine import (
    WarmupCosine,
    autocast,
    load_hparams,
    param_groups,
    resolve_device,
    resolve_dtype,
    reuse_freed_memory,
    save_checkpoint,
    seed_everything,
)
from ..errors import InputError, SarsslError
from ..io import atomic_path, run_record, write_json
from ..vocabulary import BUILTIN_INITS, CHANNELS, IGNORE_INDEX, TASKS, fraction_key
from .evaluation import SegmentationMeter, metric_rows, regression_scores
from .protocols import PROTOCOLS as PROTOCOL_REGISTRY
from .protocols import protocol

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "epochs": 15,
    "batch_size": 16,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "layer_decay": 1.0,
    "patience": 5,
    "warmup_epochs": 1,
    "unet_width": 16,
    "unet_depth": 3,
    "seg_width": 64,
    "dtype": "auto",
    "steps_per_epoch": None,
    "augment": True,
    "encoder_lr_scale": 1.0,
}
STATS_RTOL = 1e-4


def resolve_hparams(raw: dict[str, Any]) -> dict[str, Any]:
    """Config ``finetune`` block (+ optional nested ``backbone``) with defaults filled."""
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "backbone" and isinstance(value, dict):
            flat["backbone"] = dict(value)
        elif key in ("pretrain", "mae", "dino") and isinstance(value, dict):
            continue
        else:
            flat[key] = value
    out = {**DEFAULTS, **flat}
    for key in ("epochs", "batch_size"):
        if int(out[key]) < 1:
            raise SarsslError(f"--hparams: {key} must be >= 1, got {out[key]}")
    if not 0 < float(out["layer_decay"]) <= 1:
        raise SarsslError(f"--hparams: layer_decay must be in (0, 1], got {out['layer_decay']}")
    return out


# --------------------------------------------------------------------------------------
# model construction
# --------------------------------------------------------------------------------------
def check_encoder_compatible(
    meta: dict[str, Any], encoder_path: Path, store_channels: list[str], stats_path: Path
) -> None:
    """The encoder must have been trained on the same channels in the same order and
    normalised with the same statistics as the data it is now fed, and its weights must
    take that many input channels: the patch embedding's weight tensor is read from the
    safetensors header (InputError for a file that is not safetensors) and compared with
    the chip store's channel count, so timm never gets to adapt, say, 3-channel weights
    to 12 channels."""
    from ..data.store import load_stats
    from ..encoders import encoder_in_chans

    if list(meta["channels"]) != list(store_channels):
        raise InputError(
            f"{encoder_path}: encoder channels {meta['channels']} differ from the chip store's "
            f"{store_channels}"
        )
    weight_chans = encoder_in_chans(encoder_path)
    if weight_chans != len(store_channels):
        raise InputError(
            f"{encoder_path}: the weights' patch embedding takes {weight_chans} input channels "
            f"but the chip store has {len(store_channels)} channels "
            f"({encoder_path.with_name('encoder.json')} lists {len(meta['channels'])}); "
            "refusing to adapt them"
        )
    mean, std = load_stats(stats_path, store_channels)
    try:
        emean, estd = load_stats(meta["stats"], list(meta["channels"]))
    except SarsslError as exc:
        raise InputError(f"{encoder_path}: encoder.json stats unusable ({exc})") from exc
    if not (
        np.allclose(mean, emean, rtol=STATS_RTOL, atol=1e-6)
        and np.allclose(std, estd, rtol=STATS_RTOL, atol=1e-6)
    ):
        raise InputError(
            f"{encoder_path}: the encoder was pretrained with normalisation statistics "
            "that differ from "
            f"{stats_path} (mean {np.round(emean, 3).tolist()} vs {np.round(mean, 3).tolist()}); "
            "fine-tune with the stats.json used for pretraining"
        )


def build_model(
    task: str,
    init: str,
    encoder: str | None,
    hp: dict[str, Any],
    chip_size: int,
    store_channels: list[str],
    stats: Path,
) -> tuple[nn.Module, dict[str, Any]]:
    """(task model, description of the initialisation for run.json); every ViT is built
    for ``chip_size``, the chip store's."""
    from ..encoders import backbone_kwargs, create_backbone, load_encoder, read_encoder_meta
    from .models import build_task_model

    if init == "unet":
        model = build_task_model(
            task, None, unet_width=int(hp["unet_width"]), unet_depth=int(hp["unet_depth"])
        )
        return model, {"init": "unet"}
    if init == "scratch":
        if encoder:
            meta = read_encoder_meta(encoder)
            kwargs = {**meta["model_kwargs"], "img_size": chip_size}
            name = meta["model_name"]
        elif "backbone" in hp or "model_name" in hp:
            name, kwargs = backbone_kwargs(hp.get("backbone", hp), chip_size, len(store_channels))
        else:
            raise SarsslError(
                "--init scratch needs --encoder (for its architecture) "
                "or a 'backbone' block in --hparams"
            )
        backbone = create_backbone(name, **kwargs)
        desc = {"init": "scratch", "model_name": name, "model_kwargs": kwargs}
    else:
        path = Path(encoder if init in ("mae", "dino") else init)
        if init in ("mae", "dino") and not encoder:
            raise SarsslError(f"--init {init} needs --encoder encoder.safetensors")
        meta = read_encoder_meta(path)
        if init in ("mae", "dino") and meta.get("method") not in (None, init):
            raise InputError(
                f"{path}: encoder was pretrained with {meta.get('method')}, not {init}"
            )
        check_encoder_compatible(meta, path, store_channels, stats)
        backbone, meta = load_encoder(path, img_size=chip_size)
        desc = {
            "init": init,
            "encoder": str(path),
            "model_name": meta["model_name"],
            "method": meta.get("method"),
        }
    model = build_task_model(task, backbone, seg_width=int(hp["seg_width"]))
    return model, desc


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def open_store(chips_dir: str, hp: dict[str, Any]) -> Any:
    """The chip store, checked against the study's channels and the hyper-parameters'
    ``img_size`` (which, when given, must be the store's chip size)."""
    from ..data.store import ChipStore
    from ..encoders import check_img_size

    store = ChipStore(chips_dir)
    if list(store.channels) != list(CHANNELS):
        raise InputError(
            f"chip store {store.path}: channels {store.channels} differ from {list(CHANNELS)}"
        )
    for block in (hp, hp.get("backbone") or {}):
        check_img_size(block, store.chip_size, f"chip store {store.path}")
    return store


def split_rows(store: Any, fraction: float, task: str) -> dict[str, np.ndarray]:
    """Rows of the training subset for ``fraction`` and of the val and test splits.

    Raises if the fraction's ids are not all TRAIN chips (a corrupt or foreign
    fractions.json would otherwise leak val/test chips into training). For tree cover,
    chips without a known tree cover are dropped from every split.
    """
    ids = set(store.fraction_ids(fraction))
    train_ids = set(store.index.loc[store.index["split"] == "train", "id"])
    if not ids <= train_ids:
        bad = sorted(ids - train_ids)[:5]
        raise InputError(
            f"{store.path / 'fractions.json'}: fraction {fraction_key(fraction)} "
            f"lists non-training chips {bad}"
        )
    rows = {
        "train": store.rows("train", fraction),
        "val": store.rows("val"),
        "test": store.rows("test"),
    }
    if task == "treecover":
        known = store.index.set_index("row")["treecover_mean"].notna()
        rows = {k: v[known.loc[v].to_numpy()] if v.size else v for k, v in rows.items()}
    if rows["train"].size == 0:
        raise InputError(
            f"chip store {store.path}: no training chips for fraction {fraction} ({task})"
        )
    for split in ("val", "test"):
        if rows[split].size == 0:
            raise InputError(f"chip store {store.path}: the {split} split is empty")
    return rows


def _chunks(n: int, batch_size: int) -> list[np.ndarray]:
    """Positions 0..n-1 in order, cut into batches of ``batch_size``."""
    order = np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def load_split(store: Any, rows: np.ndarray, stats: str, device: torch.device) -> Any:
    """The chips ``rows`` of ``store`` in memory on ``device``
    (:func:`sarssl.data.loaders.load_chips`): ``image`` normalised float32, ``landcover``
    int64 (the loss's targets), ``treecover`` chip means. A fine-tuning job visits each
    chip of its small splits many times, so it reads and normalises them once."""
    from ..data.loaders import load_chips

    split = load_chips(store, rows, arrays=("x", "landcover"), stats=stats, device=device)
    split["landcover"] = split["landcover"].long()
    return split


def dihedral(batch: dict[str, torch.Tensor], k: int, flip: bool) -> dict[str, torch.Tensor]:
    """Rotate the batch by ``k`` x 90 degrees (after an optional left-right flip), images and
    land-cover maps alike; the chip-mean tree cover is invariant. A 10 m SAR chip has no
    preferred map orientation, so the 8 symmetries of the square are label-preserving
    augmentations (they do change the apparent look direction, which the encoder should
    not rely on for land cover)."""
    out = dict(batch)
    for key in ("image", "landcover"):
        x = batch[key]
        if flip:
            x = x.flip(-1)
        out[key] = torch.rot90(x, k, dims=(-2, -1)) if k else x
    return out


def _loss(task: str, out: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor | None:
    from .models import TREECOVER_SCALE

    if task == "landcover":
        target = batch["landcover"]
        if not (target != IGNORE_INDEX).any():
            return None
        return F.cross_entropy(out.float(), target, ignore_index=IGNORE_INDEX)
    target = batch["treecover"].float()
    ok = torch.isfinite(target)
    if not ok.any():
        return None
    return F.mse_loss(out.float()[ok] / TREECOVER_SCALE, target[ok] / TREECOVER_SCALE)


def _forward(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Model output; with cached frozen-encoder ``features`` only the head runs."""
    from ..encoders import patch_grid

    if "features" in batch:
        return model.head(
            batch["features"], patch_grid(model.backbone, tuple(batch["image"].shape[-2:]))
        )
    return model(batch["image"])


@torch.no_grad()
def predict(
    model: nn.Module, split: Any, task: str, batch_size: int, device: torch.device, dtype: str
) -> dict[str, Any]:
    """Predictions and scores of ``model`` on every chip of ``split`` (in order)."""
    model.eval()
    meter = SegmentationMeter() if task == "landcover" else None
    preds = []
    for idx in _chunks(len(split), batch_size):
        batch = split.batch(idx)
        with autocast(device, dtype):
            out = _forward(model, batch)
        if task == "landcover":
            cls = out.float().argmax(1)
            meter.update(cls, batch["landcover"])
            preds.append(cls.to(torch.uint8).cpu())
        else:
            preds.append(out.float().cpu())
    pred = torch.cat(preds)
    if task == "landcover":
        target = split["landcover"].to(torch.uint8).cpu()
        scores = meter.compute()
    else:
        target = split["treecover"].cpu()
        scores = regression_scores(pred, target)
    return {"pred": pred.numpy(), "target": target.numpy(), "scores": scores}


def selection_score(task: str, scores: dict[str, Any]) -> float:
    """Higher is better: mIoU for land cover, -RMSE for tree cover (NaN -> -inf)."""
    v = scores["miou"] if task == "landcover" else -scores["rmse"]
    return -math.inf if v is None or math.isnan(v) else float(v)


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def prepare_model(
    model: nn.Module, cfg: dict[str, Any], data: dict[str, Any], device: torch.device, dtype: str
) -> None:
    """Freeze the encoder (linear protocol; its features are then cached once), start the
    tree-cover head from the training mean, and move the model to ``device``."""
    from .models import RegressionHead

    proto = protocol(cfg["protocol"])
    proto.prepare(model, cfg["init"])
    if cfg["task"] == "treecover":
        head = next((m for m in model.modules() if isinstance(m, RegressionHead)), None)
        if head is not None:
            head.init_output(float(data["train"]["treecover"].float().mean()))
    model.to(device)
    proto.prepare_splits(model, data.values(), device, dtype)


def make_optimizer(
    model: nn.Module, cfg: dict[str, Any], steps_per_epoch: int, epochs: int
) -> tuple[Any, WarmupCosine]:
    """AdamW over layer-decayed parameter groups and its warm-up + cosine schedule."""
    hp = cfg["hparams"]
    pretrained = cfg["init"] not in ("scratch", "unet")
    depth = len(model.backbone.blocks) if hasattr(model, "backbone") else None
    groups = param_groups(
        model,
        float(hp["weight_decay"]),
        float(hp["layer_decay"]),
        depth,
        backbone_lr_scale=float(hp["encoder_lr_scale"]) if pretrained else 1.0,
    )
    optimizer = torch.optim.AdamW(groups, lr=float(hp["lr"]))
    total_steps = steps_per_epoch * epochs
    schedule = WarmupCosine(
        float(hp["lr"]),
        min(int(hp["warmup_epochs"]) * steps_per_epoch, total_steps // 2),
        total_steps,
    )
    return optimizer, schedule


def train_and_select(
    model: nn.Module, cfg: dict[str, Any], data: dict[str, Any], device: torch.device, dtype: str
) -> dict[str, Any]:
    """Train on ``data["train"]``, score every epoch on ``data["val"]``, stop early after
    ``patience`` epochs without improvement and load the best epoch's weights into
    ``model``. Returns ``best_epoch``, ``best_val_score``, ``epochs_run``, ``history``."""
    from tqdm import tqdm

    task, hp, seed = cfg["task"], cfg["hparams"], int(cfg["seed"])
    proto = protocol(cfg["protocol"])
    epochs = int(cfg.get("max_epochs") or hp["epochs"])
    n_train = len(data["train"])
    bs = min(int(hp["batch_size"]), n_train)
    steps_per_epoch = int(hp["steps_per_epoch"] or math.ceil(n_train / bs))
    optimizer, schedule = make_optimizer(model, cfg, steps_per_epoch, epochs)
    # the seeded sample stream: consecutive permutations of the training subset, cut into
    # batches of ``bs`` (an epoch is ``steps_per_epoch`` batches of this stream)
    stream_rng = np.random.default_rng([seed, 1])
    aug_rng = np.random.default_rng([seed, 2])
    pending = np.empty(0, dtype=np.int64)
    augment = bool(hp["augment"]) and proto.augment

    best_score, best_state, best_epoch, bad_epochs = -math.inf, None, -1, 0
    history = []
    step = 0
    epochs_run = 0
    for epoch in tqdm(
        range(epochs),
        desc=f"finetune {task} {cfg['init']} {cfg['protocol']} f={cfg['fraction']}",
        unit="epoch",
        disable=cfg.get("quiet", False),
    ):
        proto.train_mode(model)
        losses = []
        for _ in range(steps_per_epoch):
            while pending.size < bs:
                pending = np.concatenate([pending, stream_rng.permutation(n_train)])
            idx, pending = pending[:bs], pending[bs:]
            batch = data["train"].batch(idx)
            if augment:
                k, flip = int(aug_rng.integers(4)), bool(aug_rng.integers(2))
                batch = dihedral(batch, k, flip)
            schedule.apply(optimizer, step)
            step += 1
            with autocast(device, dtype):
                out = _forward(model, batch)
            loss = _loss(task, out, batch)
            if loss is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
        val = predict(model, data["val"], task, 64, device, dtype)["scores"]
        score = selection_score(task, val)
        epochs_run = epoch + 1
        history.append(
            {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)) if losses else None,
                "val": {k: v for k, v in val.items() if k != "iou"},
            }
        )
        if score > best_score:
            best_score, best_epoch, bad_epochs = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if int(hp["patience"]) > 0 and bad_epochs >= int(
                hp["patience"]
            ):  # 0 = no early stopping
                log.info("early stop after epoch %d (best %d)", epoch, best_epoch)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return {
        "best_epoch": best_epoch,
        "best_val_score": best_score,
        "epochs_run": epochs_run,
        "history": history,
    }


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------
def write_outputs(
    cfg: dict[str, Any],
    model: nn.Module,
    init_desc: dict[str, Any],
    data: dict[str, Any],
    test: dict[str, Any],
    fit: dict[str, Any],
    wall: float,
) -> dict[str, Any]:
    """``metrics.json``, ``predictions.npz``, ``checkpoint.pt`` and ``run.json`` in
    ``--out-dir``; returns the run summary (the content of run.json besides the config)."""
    out_dir = Path(cfg["out_dir"])
    task, protocol = cfg["task"], cfg["protocol"]
    metric_list = [
        {
            "task": task,
            "init": cfg["init_label"],
            "protocol": protocol,
            "fraction": float(cfg["fraction"]),
            "seed": int(cfg["seed"]),
            "pretrain_area": cfg.get("pretrain_area"),
            "finetune_area": cfg.get("finetune_area"),
            "n_train_chips": len(data["train"]),
            "metric": name,
            "value": float(value),
            "epochs": fit["epochs_run"],
            "wall_s": round(wall, 3),
        }
        for name, value in metric_rows(task, test["scores"])
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metric_list)
    with atomic_path(out_dir / "predictions.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                rows=data["test"].rows,
                ids=np.asarray(data["test"].ids, dtype=str),
                pred=test["pred"],
                target=test["target"],
            )
    save_checkpoint(
        out_dir / "checkpoint.pt",
        {
            "model": model.state_dict(),
            "task": task,
            "init": json.loads(json.dumps(init_desc, default=str)),  # plain values only
            "protocol": protocol,
            "best_epoch": fit["best_epoch"],
            "hparams": json.loads(json.dumps(cfg["hparams"], default=str)),
        },
    )
    summary = {
        "best_epoch": fit["best_epoch"],
        "best_val_score": fit["best_val_score"],
        "epochs_run": fit["epochs_run"],
        "test_scores": test["scores"],
        "history": fit["history"],
        "ids": {k: [str(i) for i in data[k].ids] for k in ("train", "val", "test")},
        "init_detail": init_desc,
        "wall_s": wall,
    }
    write_json(
        out_dir / "run.json", run_record({k: v for k, v in cfg.items() if k != "quiet"}, **summary)
    )
    return summary


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------
def finetune(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one fine-tuning job; returns the run summary (also written to run.json)."""
    t0 = time.time()
    task, hp = cfg["task"], cfg["hparams"]
    device = resolve_device(cfg.get("device", "auto"))
    dtype = resolve_dtype(str(hp["dtype"]), device)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    reuse_freed_memory()
    seed_everything(int(cfg["seed"]))

    store = open_store(cfg["chips_dir"], hp)
    rows = split_rows(store, float(cfg["fraction"]), task)
    # train and val now; the test chips are read only after training and model selection
    data = {k: load_split(store, rows[k], cfg["stats"], device) for k in ("train", "val")}
    model, init_desc = build_model(
        task,
        cfg["init"],
        cfg.get("encoder"),
        hp,
        store.chip_size,
        store.channels,
        Path(cfg["stats"]),
    )
    prepare_model(model, cfg, data, device, dtype)
    fit = train_and_select(model, cfg, data, device, dtype)

    data["test"] = load_split(store, rows["test"], cfg["stats"], device)
    protocol(cfg["protocol"]).prepare_splits(model, [data["test"]], device, dtype)
    test = predict(model, data["test"], task, 64, device, dtype)
    wall = time.time() - t0
    summary = write_outputs(cfg, model, init_desc, data, test, fit, wall)
    log.info(
        "%s %s %s f=%s: test %s in %.1f s (%d epochs)",
        task,
        cfg["init_label"],
        cfg["protocol"],
        cfg["fraction"],
        {k: round(v, 4) for k, v in test["scores"].items() if k != "iou"},
        wall,
        fit["epochs_run"],
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--init", required=True, help="scratch | mae | dino | unet | PATH to encoder.safetensors"
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="encoder.safetensors (for --init mae/dino; gives scratch its architecture)",
    )
    parser.add_argument("--protocol", default="finetune", choices=list(PROTOCOL_REGISTRY))
    parser.add_argument(
        "--fraction", type=float, required=True, help="label fraction (a key of fractions.json)"
    )
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--chips-dir", required=True, help="chip store of the fine-tuning area")
    parser.add_argument(
        "--stats", required=True, help="stats.json used for normalisation (and pretraining)"
    )
    parser.add_argument(
        "--hparams",
        required=True,
        help="JSON object or JSON/YAML file: the config's finetune block",
    )
    parser.add_argument(
        "--pretrain-area", default=None, help="label recorded in metrics (area the encoder saw)"
    )
    parser.add_argument("--finetune-area", default=None, help="label recorded in metrics")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-epochs", type=int, default=None, help="override hparams epochs")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fine-tuning jobs run side by side; 0 = torch default)",
    )


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    if not Path(args.chips_dir).is_dir():
        raise SarsslError(f"--chips-dir {args.chips_dir}: not a directory")
    if not Path(args.stats).is_file():
        raise SarsslError(f"--stats {args.stats}: file not found")
    init = args.init
    if init not in BUILTIN_INITS and not Path(init).is_file():
        raise SarsslError(f"--init {init}: not scratch/mae/dino/unet nor an existing encoder file")
    if args.encoder and not Path(args.encoder).is_file():
        raise SarsslError(f"--encoder {args.encoder}: file not found")
    if not 0 < args.fraction <= 1:
        raise SarsslError(f"--fraction {args.fraction}: must be in (0, 1]")
    return {
        "task": args.task,
        "init": init,
        "init_label": init if init in BUILTIN_INITS else Path(init).parent.name or Path(init).stem,
        "encoder": args.encoder,
        "protocol": args.protocol,
        "fraction": args.fraction,
        "seed": args.seed,
        "chips_dir": str(Path(args.chips_dir).resolve()),
        "stats": str(Path(args.stats).resolve()),
        "hparams": resolve_hparams(load_hparams(args.hparams)),
        "pretrain_area": args.pretrain_area,
        "finetune_area": args.finetune_area,
        "out_dir": args.out_dir,
        "device": args.device,
        "max_epochs": args.max_epochs,
        "threads": args.threads,
    }


def run(args: argparse.Namespace) -> int:
    finetune(config_from_args(args))
    return 0
