"""``sarssl finetune``: train a task model at label fractions and score it on the test split.

Protocol (the study's, made leak-proof and comparable):

- **train** on exactly the run seed's ``fractions.json`` subset for the fraction (TRAIN
  split only; ``sarssl fractions --seeds`` draws nested subsets per seed, so the spread
  over seeds includes which chips a small label budget happens to get). Every init and
  control of one (task, area, fraction, seed) trains on the same subset and is scored on
  the same test chips, so their differences can be paired chip by chip;
- **select** on the VAL split only: the learning rate from ``lr_grid`` (``probe_lr_grid``
  for the linear protocol; each from the same seeded initialisation), the epoch (land
  cover: mIoU, tree cover: RMSE; ``patience`` epochs of early stopping), the k-NN probe's
  ``k``. With ``lr_search: reference_run`` one job's run with the most labels searches
  and its other runs reuse that lr;
- **score** once, with the selected model, on the TEST split only.

Initialisations: ``scratch`` (random ViT, same architecture as ``--encoder`` when given,
else the ``backbone`` hyper-parameters; under a frozen protocol it is the frozen random
encoder, the negative control), ``mae`` / ``dino`` / any ``PATH`` (an exported
``encoder.safetensors``; its channel order and normalisation statistics must equal the
store's and ``--stats``), ``unet`` (the supervised U-Net, the spatial baseline) and
``pixel`` (the per-pixel control: a linear model on each pixel's channels). Protocols
(:mod:`sarssl.downstream.protocols`): ``finetune`` (everything learns; a pretrained
encoder with layer-wise lr decay ``layer_decay`` and ``encoder_lr_scale``, the MAE
fine-tuning recipe, so pretraining is not overwritten), ``linear`` (a true linear probe),
``knn`` (k-NN label transfer) and ``decoder`` (the study's decoder on frozen tokens).

One command runs every ``--fraction`` x ``--seed`` (comma lists) into
``--runs-dir/f{fraction}_s{seed}/`` (or one run into ``--out-dir``): the workflow runs
one job per task x init x protocol x area, so the runs share one start-up.

Outputs per run: ``metrics.json`` (tidy rows, columns of ``docs/architecture.md``, with
the selected ``lr`` / ``knn_k``), ``predictions.npz`` (test rows, ids, predictions,
targets), ``run.json`` (configuration, chip ids used per split, the lr search with every
candidate's training curve, best epoch, timings) and ``checkpoint.pt`` (the selected
model; tensors and plain values only, it loads with ``torch.load(..., weights_only=True)``).

Encoders are read from safetensors only, and weights whose patch embedding takes another
number of input channels than the chip store has are refused before timm could adapt
them (:func:`check_encoder_compatible`).

The chip size comes from the chip store only: every ViT is built for the store's chips
(a pretrained encoder's position embedding is resampled when it was pretrained on other
chips), and an ``img_size`` in ``--hparams`` that differs from the store's chip size is an
error naming both (:func:`sarssl.encoders.backbone_kwargs`). The chips are held by
:mod:`sarssl.downstream.splits`: in memory for small splits, streamed from the store
(memory bounded by the batch) for large ones (``loader``), with identical batches.

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
    "layer_decay": 0.75,
    "patience": 5,
    "warmup_epochs": 1,
    "unet_width": 16,
    "unet_depth": 3,
    "seg_width": 64,
    "dtype": "auto",
    "steps_per_epoch": None,
    "augment": True,
    "encoder_lr_scale": 1.0,
    "lr_grid": None,
    "knn_k": [10, 20],
    "knn_bank": 200_000,
    "loader": "auto",
    "lr_search": "each_run",
    "probe_epochs": 100,
    "probe_lr_grid": [1e-3, 1e-2, 1e-1],
    "in_memory_max_mb": 2048,
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
    grid = out["lr_grid"] if out["lr_grid"] else [out["lr"]]
    if not all(isinstance(v, (int, float)) and v > 0 for v in grid):
        raise SarsslError(f"--hparams: lr_grid must list positive learning rates, got {grid}")
    out["lr_grid"] = [float(v) for v in grid]
    probe = out["probe_lr_grid"]
    if not probe or not all(isinstance(v, (int, float)) and v > 0 for v in probe):
        raise SarsslError(f"--hparams: probe_lr_grid must list positive rates, got {probe}")
    out["probe_lr_grid"] = [float(v) for v in probe]
    if int(out["probe_epochs"]) < 1:
        raise SarsslError(f"--hparams: probe_epochs must be >= 1, got {out['probe_epochs']}")
    ks = out["knn_k"] if isinstance(out["knn_k"], list) else [out["knn_k"]]
    if not ks or not all(isinstance(v, int) and v >= 1 for v in ks):
        raise SarsslError(f"--hparams: knn_k must list integers >= 1, got {out['knn_k']}")
    out["knn_k"] = [int(v) for v in ks]
    if out["lr_search"] not in ("each_run", "reference_run"):
        raise SarsslError(
            f"--hparams: lr_search must be each_run or reference_run, got {out['lr_search']!r}"
        )
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
    head: str = "decoder",
) -> tuple[nn.Module, dict[str, Any]]:
    """(task model, description of the initialisation for run.json); every ViT is built
    for ``chip_size``, the chip store's. ``head`` is the protocol's
    (:attr:`sarssl.downstream.protocols.Protocol.head`)."""
    from ..encoders import backbone_kwargs, create_backbone, load_encoder, read_encoder_meta
    from .models import PixelLinear, build_task_model

    if init == "pixel":
        return PixelLinear(task, in_chans=len(store_channels)), {"init": "pixel"}
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
    model = build_task_model(task, backbone, seg_width=int(hp["seg_width"]), head=head)
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


def _chunks(n: int, batch_size: int) -> list[np.ndarray]:
    """Positions 0..n-1 in order, cut into batches of ``batch_size``."""
    order = np.arange(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def dihedral(batch: dict[str, torch.Tensor], k: int, flip: bool) -> dict[str, torch.Tensor]:
    """Rotate the batch by ``k`` x 90 degrees (after an optional left-right flip), images and
    land-cover maps alike; the chip-mean tree cover is invariant. A 10 m SAR chip has no
    preferred map orientation, so the 8 symmetries of the square are label-preserving
    augmentations (they do change the apparent look direction, which the encoder should
    not rely on for land cover)."""
    out = dict(batch)
    for key in ("image", "landcover"):
        if key not in batch:
            continue
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
    """Model output; with cached frozen-encoder ``features`` only the head runs (chips are
    square, so the token grid is the square root of the token count)."""
    if "features" in batch:
        side = math.isqrt(int(batch["features"].shape[1]))
        return model.head(batch["features"], (side, side))
    return model(batch["image"])


@torch.no_grad()
def predict(
    model: nn.Module, split: Any, task: str, batch_size: int, device: torch.device, dtype: str
) -> dict[str, Any]:
    """Predictions and scores of ``model`` on every chip of ``split`` (in order)."""
    model.eval()
    preds, targets = [], []
    for idx in _chunks(len(split), batch_size):
        batch = split.batch(idx)
        with autocast(device, dtype):
            out = _forward(model, batch)
        if task == "landcover":
            preds.append(out.float().argmax(1).to(torch.uint8).cpu())
            targets.append(batch["landcover"].to(torch.uint8).cpu())
        else:
            preds.append(out.float().cpu())
            targets.append(batch["treecover"].float().cpu())
    return score(task, torch.cat(preds), torch.cat(targets))


def score(task: str, pred: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:
    """``{"pred", "target", "scores"}`` of a whole split's predictions."""
    if task == "landcover":
        meter = SegmentationMeter()
        meter.update(pred, target)
        scores = meter.compute()
    else:
        scores = regression_scores(pred, target)
    return {"pred": pred.numpy(), "target": target.numpy(), "scores": scores}


def selection_score(task: str, scores: dict[str, Any]) -> float:
    """Higher is better: mIoU for land cover, -RMSE for tree cover (NaN -> -inf)."""
    v = scores["miou"] if task == "landcover" else -scores["rmse"]
    return -math.inf if v is None or math.isnan(v) else float(v)


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
def eval_batch(hp: dict[str, Any]) -> int:
    """Chips per forward pass when predicting or caching tokens: the training batch size,
    which is known to fit (a 64-chip pass of the decoder at 448 px would take ~3 GB)."""
    return int(hp["batch_size"])


def is_pretrained(init: str) -> bool:
    """Whether ``init`` starts from pretrained weights (MAE, DINO, an encoder file)."""
    return init not in ("scratch", "unet", "pixel")


def prepare_model(
    model: nn.Module, cfg: dict[str, Any], data: dict[str, Any], device: torch.device, dtype: str
) -> None:
    """Freeze the encoder (frozen protocols; its tokens are then cached once, unless the
    splits already hold them from an earlier learning rate of the grid: the frozen
    encoder is the same), start a tree-cover head from the training mean, and move the
    model to ``device``."""
    proto = protocol(cfg["protocol"])
    proto.prepare(model, cfg["init"])
    if cfg["task"] == "treecover":
        head = next((m for m in model.modules() if hasattr(m, "init_output")), None)
        if head is not None:
            head.init_output(float(data["train"]["treecover"].float().mean()))
    model.to(device)
    todo = [s for s in data.values() if "features" not in s]
    proto.prepare_splits(model, todo, device, dtype, eval_batch(cfg["hparams"]))


def make_optimizer(
    model: nn.Module, cfg: dict[str, Any], lr: float, steps_per_epoch: int, epochs: int
) -> tuple[Any, WarmupCosine]:
    """AdamW over parameter groups and its warm-up + cosine schedule. A pretrained
    encoder is fine-tuned with layer-wise lr decay and ``encoder_lr_scale`` (the MAE
    fine-tuning recipe: deeper blocks, closer to the task, move more than the patch
    embedding, so pretraining is not overwritten); scratch ViTs with one lr."""
    hp = cfg["hparams"]
    pretrained = is_pretrained(cfg["init"])
    depth = len(model.backbone.blocks) if hasattr(model, "backbone") else None
    groups = param_groups(
        model,
        float(hp["weight_decay"]),
        float(hp["layer_decay"]) if pretrained else 1.0,
        depth,
        backbone_lr_scale=float(hp["encoder_lr_scale"]) if pretrained else 1.0,
    )
    optimizer = torch.optim.AdamW(groups, lr=lr)
    total_steps = steps_per_epoch * epochs
    schedule = WarmupCosine(
        lr, min(int(hp["warmup_epochs"]) * steps_per_epoch, total_steps // 2), total_steps
    )
    return optimizer, schedule


def fit(
    model: nn.Module,
    cfg: dict[str, Any],
    lr: float,
    data: dict[str, Any],
    device: torch.device,
    dtype: str,
) -> dict[str, Any]:
    """Train ``model`` at ``lr`` on ``data["train"]``, score every epoch on
    ``data["val"]``, stop early after ``patience`` epochs without improvement. Returns
    ``best_state``, ``best_epoch``, ``best_val_score``, ``epochs_run``, ``history`` (the
    training curve: mean train loss and val scores per epoch)."""
    from tqdm import tqdm

    task, hp, seed = cfg["task"], cfg["hparams"], int(cfg["seed"])
    proto = protocol(cfg["protocol"])
    epochs = int(cfg.get("max_epochs") or hp["probe_epochs" if proto.convex else "epochs"])
    n_train = len(data["train"])
    bs = min(int(hp["batch_size"]), n_train)
    steps_per_epoch = int(hp["steps_per_epoch"] or math.ceil(n_train / bs))
    optimizer, schedule = make_optimizer(model, cfg, lr, steps_per_epoch, epochs)
    # the seeded sample stream: consecutive permutations of the training subset, cut into
    # batches of ``bs`` (an epoch is ``steps_per_epoch`` batches of this stream)
    stream_rng = np.random.default_rng([seed, 1])
    aug_rng = np.random.default_rng([seed, 2])
    pending = np.empty(0, dtype=np.int64)
    augment = bool(hp["augment"]) and proto.augment

    best: dict[str, Any] = {"best_val_score": -math.inf, "best_state": None, "best_epoch": -1}
    bad_epochs, step, history = 0, 0, []
    for epoch in tqdm(
        range(epochs),
        desc=f"finetune {task} {cfg['init']} {cfg['protocol']} f={cfg['fraction']} lr={lr:g}",
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
        val = predict(model, data["val"], task, eval_batch(hp), device, dtype)["scores"]
        val_score = selection_score(task, val)
        history.append(
            {
                "epoch": epoch,
                "step": step,
                "train_loss": float(np.mean(losses)) if losses else None,
                "val": {k: v for k, v in val.items() if k != "iou"},
            }
        )
        if val_score > best["best_val_score"]:
            best = {"best_val_score": val_score, "best_epoch": epoch}
            best["best_state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            bad_epochs = 0
        else:
            bad_epochs += 1
            if 0 < int(hp["patience"]) <= bad_epochs:  # 0 = no early stopping
                log.info("early stop after epoch %d (best %d)", epoch, best["best_epoch"])
                break
    return {**best, "epochs_run": len(history), "history": history}


def train_and_select(
    build: Any, cfg: dict[str, Any], data: dict[str, Any], device: torch.device, dtype: str
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one model per learning rate of ``lr_grid`` (each from the same seeded
    initialisation, ``build()``), keep the one with the best validation score (its best
    epoch), and return it with the fit summary: ``lr`` (the selected one), ``lr_search``
    (every lr's best val score and epoch), and the selected run's ``history``. Model
    selection sees the VAL split only; the test split is not loaded yet."""
    chosen: tuple[nn.Module, dict[str, Any], float] | None = None
    search = []
    hp = cfg["hparams"]
    for lr in hp["probe_lr_grid" if protocol(cfg["protocol"]).convex else "lr_grid"]:
        seed_everything(int(cfg["seed"]))
        model = build()
        prepare_model(model, cfg, data, device, dtype)
        result = fit(model, cfg, lr, data, device, dtype)
        search.append(
            {
                "lr": lr,
                "best_val_score": result["best_val_score"],
                "best_epoch": result["best_epoch"],
                "history": result["history"],
            }
        )
        log.info(
            "lr %g: best val %.4f at epoch %d", lr, result["best_val_score"], result["best_epoch"]
        )
        if chosen is None or result["best_val_score"] > chosen[1]["best_val_score"]:
            chosen = (model, result, lr)
    model, result, lr = chosen
    if result["best_state"] is not None:
        model.load_state_dict(result["best_state"])
    summary = {k: v for k, v in result.items() if k != "best_state"}
    return model, {**summary, "lr": lr, "lr_search": search}


def fit_knn(
    model: nn.Module, cfg: dict[str, Any], data: dict[str, Any], device: torch.device, dtype: str
) -> tuple[Any, dict[str, Any]]:
    """The ``knn`` protocol: cache the frozen encoder's tokens, build the training bank
    and choose ``k`` from ``knn_k`` on the validation split. Returns a predictor
    ``split -> predictions`` and the fit summary (``k``, ``k_search``)."""
    from . import knn

    task, hp = cfg["task"], cfg["hparams"]
    seed_everything(int(cfg["seed"]))
    prepare_model(model, cfg, data, device, dtype)
    patch = int(model.backbone.patch_embed.patch_size[0])
    bank = knn.build_bank(task, data["train"], patch, int(hp["knn_bank"]), int(cfg["seed"]))
    fallback = knn.majority_class(knn.split_landcover(data["train"])) if task == "landcover" else 0

    def predictor(split: Any, k: int) -> dict[str, Any]:
        feats = split["features"]
        if task == "landcover":
            n, t, d = feats.shape
            cls = knn.segment(bank, feats.reshape(n * t, d), k, fallback)
            side = math.isqrt(t)
            pred = cls.reshape(n, side, side, patch, patch).permute(0, 1, 3, 2, 4)
            pred = pred.reshape(n, side * patch, side * patch)
            return score(task, pred, knn.split_landcover(split).cpu())
        return score(task, knn.regress(bank, feats.mean(dim=1), k), split["treecover"].cpu())

    search = []
    for k in hp["knn_k"]:
        val = predictor(data["val"], k)["scores"]
        search.append({"k": k, "best_val_score": selection_score(task, val)})
    best = max(search, key=lambda r: r["best_val_score"])
    summary = {
        "best_epoch": -1,
        "best_val_score": best["best_val_score"],
        "epochs_run": 0,
        "history": [],
        "k": best["k"],
        "k_search": search,
        "lr": None,
    }
    return (lambda split: predictor(split, best["k"])), summary


# --------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------
def write_outputs(
    cfg: dict[str, Any],
    model: nn.Module,
    init_desc: dict[str, Any],
    data: dict[str, Any],
    test: dict[str, Any],
    fitted: dict[str, Any],
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
            "epochs": fitted["epochs_run"],
            "lr": fitted.get("lr"),
            "knn_k": fitted.get("k"),
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
            "best_epoch": fitted["best_epoch"],
            "hparams": json.loads(json.dumps(cfg["hparams"], default=str)),
        },
    )
    summary = {
        "best_epoch": fitted["best_epoch"],
        "best_val_score": fitted["best_val_score"],
        "epochs_run": fitted["epochs_run"],
        "lr": fitted.get("lr"),
        "lr_search": fitted.get("lr_search", []),
        "knn_k": fitted.get("k"),
        "k_search": fitted.get("k_search", []),
        "test_scores": test["scores"],
        "history": fitted["history"],
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
    from ..data.store import load_stats
    from .splits import open_split, split_rows

    t0 = time.time()
    task, hp = cfg["task"], cfg["hparams"]
    proto = protocol(cfg["protocol"])
    proto.check(cfg["init"])
    device = resolve_device(cfg.get("device", "auto"))
    dtype = resolve_dtype(str(hp["dtype"]), device)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    reuse_freed_memory()
    seed_everything(int(cfg["seed"]))

    store = open_store(cfg["chips_dir"], hp)
    rows = split_rows(store, float(cfg["fraction"]), task, int(cfg["seed"]))
    try:
        stats = json.loads(Path(cfg["stats"]).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{cfg['stats']}: unreadable statistics ({exc})") from exc
    load_stats(stats, store.channels)  # checked once: the channels, in the store's order

    def split(name: str) -> Any:
        return open_split(
            store, rows[name], stats, device, str(hp["loader"]), float(hp["in_memory_max_mb"])
        )

    # train and val now; the test chips are read only after training and model selection
    data = {k: split(k) for k in ("train", "val")}

    descs: list[dict[str, Any]] = []

    def build() -> nn.Module:
        model, desc = build_model(
            task,
            cfg["init"],
            cfg.get("encoder"),
            hp,
            store.chip_size,
            store.channels,
            Path(cfg["stats"]),
            head=proto.head,
        )
        descs.append(desc)
        return model

    if proto.trains:
        model, fitted = train_and_select(build, cfg, data, device, dtype)
        data["test"] = split("test")
        proto.prepare_splits(model, [data["test"]], device, dtype, eval_batch(hp))
        test = predict(model, data["test"], task, eval_batch(hp), device, dtype)
    else:
        seed_everything(int(cfg["seed"]))
        model = build()
        predictor, fitted = fit_knn(model, cfg, data, device, dtype)
        data["test"] = split("test")
        proto.prepare_splits(model, [data["test"]], device, dtype, eval_batch(hp))
        test = predictor(data["test"])
    wall = time.time() - t0
    summary = write_outputs(cfg, model, descs[0], data, test, fitted, wall)
    from ..interop import write_finetune_tensorboard  # TensorBoard, as pretraining logs

    write_finetune_tensorboard(Path(cfg["out_dir"]) / "tensorboard", summary)
    log.info(
        "%s %s %s f=%s seed %s: test %s in %.1f s (lr %s, %d epochs)",
        task,
        cfg["init_label"],
        cfg["protocol"],
        cfg["fraction"],
        cfg["seed"],
        {k: round(v, 4) for k, v in test["scores"].items() if k != "iou"},
        wall,
        fitted.get("lr"),
        fitted["epochs_run"],
    )
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument(
        "--init",
        required=True,
        help="scratch | mae | dino | unet | pixel | PATH to encoder.safetensors",
    )
    parser.add_argument(
        "--encoder",
        default=None,
        help="encoder.safetensors (for --init mae/dino; gives scratch its architecture)",
    )
    parser.add_argument("--protocol", default="finetune", choices=list(PROTOCOL_REGISTRY))
    parser.add_argument(
        "--fraction",
        type=_csv(float),
        required=True,
        help="label fraction(s) F1,F2,... (keys of fractions.json)",
    )
    parser.add_argument(
        "--seed",
        type=_csv(int),
        required=True,
        help="run seed(s) S1,S2,...: each fraction x seed is one run, in this process",
    )
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
    out = parser.add_mutually_exclusive_group(required=True)
    out.add_argument("--out-dir", help="folder of the run (one --fraction and one --seed)")
    out.add_argument(
        "--runs-dir",
        help="parent folder of several runs: each is written to RUNS_DIR/f{fraction}_s{seed}/",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-epochs", type=int, default=None, help="override hparams epochs")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: fine-tuning jobs run side by side; 0 = torch default)",
    )


def _csv(kind: Any) -> Any:
    def parse(text: str) -> list[Any]:
        try:
            return [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected {kind.__name__}s, comma-separated"
            )

    return parse


def configs_from_args(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One job configuration per fraction x seed of the command line."""
    if not Path(args.chips_dir).is_dir():
        raise SarsslError(f"--chips-dir {args.chips_dir}: not a directory")
    if not Path(args.stats).is_file():
        raise SarsslError(f"--stats {args.stats}: file not found")
    init = args.init
    if init not in BUILTIN_INITS and not Path(init).is_file():
        raise SarsslError(
            f"--init {init}: not one of {', '.join(BUILTIN_INITS)} nor an existing encoder file"
        )
    if args.encoder and not Path(args.encoder).is_file():
        raise SarsslError(f"--encoder {args.encoder}: file not found")
    if not args.fraction or not args.seed:
        raise SarsslError("--fraction and --seed need at least one value each")
    for f in args.fraction:
        if not 0 < f <= 1:
            raise SarsslError(f"--fraction {f}: must be in (0, 1]")
    runs = [(f, s) for f in args.fraction for s in args.seed]
    if args.out_dir is not None and len(runs) > 1:
        raise SarsslError(
            f"--out-dir is the folder of one run; {len(runs)} fraction x seed runs need --runs-dir"
        )
    hparams = resolve_hparams(load_hparams(args.hparams))
    base = {
        "task": args.task,
        "init": init,
        "init_label": init if init in BUILTIN_INITS else Path(init).parent.name or Path(init).stem,
        "encoder": args.encoder,
        "protocol": args.protocol,
        "chips_dir": str(Path(args.chips_dir).resolve()),
        "stats": str(Path(args.stats).resolve()),
        "hparams": hparams,
        "pretrain_area": args.pretrain_area,
        "finetune_area": args.finetune_area,
        "device": args.device,
        "max_epochs": args.max_epochs,
        "threads": args.threads,
    }
    return [
        {
            **base,
            "fraction": f,
            "seed": s,
            "out_dir": args.out_dir or str(Path(args.runs_dir) / f"f{fraction_key(f)}_s{s}"),
        }
        for f, s in runs
    ]


def run_all(cfgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run every configuration. With ``lr_search: reference_run`` the run with the most
    labels (first seed) searches ``lr_grid`` on the validation split and the others reuse
    its learning rate (recorded as ``lr_from`` in their run.json); with ``each_run`` every
    run searches."""
    cfgs = sorted(cfgs, key=lambda c: (-float(c["fraction"]), cfgs.index(c)))
    shared = cfgs[0]["hparams"]["lr_search"] == "reference_run" and len(cfgs) > 1
    summaries, chosen, ref = [], None, ""
    for k, cfg in enumerate(cfgs, 1):
        if len(cfgs) > 1:
            log.info("run %d/%d: fraction %s seed %s", k, len(cfgs), cfg["fraction"], cfg["seed"])
        if shared and chosen is not None:
            hp = {**cfg["hparams"], "lr_grid": [chosen], "probe_lr_grid": [chosen]}
            cfg = {**cfg, "hparams": hp, "lr_from": ref}
        summary = finetune(cfg)
        if shared and chosen is None and summary.get("lr") is not None:
            chosen = summary["lr"]
            ref = f"f{fraction_key(cfg['fraction'])}_s{cfg['seed']}"
        summaries.append(summary)
    return summaries


def run(args: argparse.Namespace) -> int:
    run_all(configs_from_args(args))
    return 0
