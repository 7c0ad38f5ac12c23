"""``sarssl pretrain``: self-supervised pretraining of a ViT encoder with MAE or DINO.

Trains on the train + val chips of the given chip stores (no labels are used; the test
chips are never seen, so later test scores are not inflated by pretraining on them) and
writes, in ``--out-dir``::

    checkpoint.pt        full training state (model, optimiser, schedule, scaler, RNGs, step)
    metrics.jsonl        one JSON line per logged step: step, epoch, loss, lr, images_per_s
    run.json             resolved configuration, versions, git revision, timings
    encoder.safetensors  the encoder weights (MAE encoder / DINO teacher backbone)
    encoder.json         timm name + kwargs, channel order and normalisation statistics

Reproducibility. All randomness is a function of ``--seed``: the model initialisation,
the data order (epoch ``e`` uses ``default_rng([seed, e])``), the MAE masks (drawn for the
whole global batch from a generator seeded by (seed, step)) and the DINO augmentations
(seeded by (seed, step, rank, micro-step)). A run interrupted at any step and resumed from
its checkpoint therefore ends with *exactly* the parameters of an uninterrupted run on
CPU; under DDP each rank takes its slice of the same global batches and masks, so N
processes perform the same update as one process with the same global batch.

Checkpoints hold only tensors and plain values (no pickled objects): every one is read
with ``torch.load(..., weights_only=True)`` and a file that needs more is refused.

Resume. Checkpoints of an unfinished run are written every ``--checkpoint-every`` steps,
after ``--stop-after-steps``, and when the process receives SIGUSR1 (checkpoint and
continue) or SIGTERM (checkpoint and exit 143, e.g. a cluster preemption), to
``RESUME_DIR/checkpoint.pt``; ``--resume-dir`` defaults to ``--out-dir``. A rerun with the
same arguments resumes from it (``--no-resume`` ignores it) and ends with exactly the
bytes of an uninterrupted run. The checkpoint carries the metric lines of the steps it
covers, so ``metrics.jsonl`` reads as one run even if it was deleted meanwhile. The
final full-state checkpoint always goes to ``OUT_DIR/checkpoint.pt`` (the MAE
reconstruction figure reads it).

A separate resume directory is for workflow managers: Snakemake deletes a job's declared
outputs (``OUT_DIR/checkpoint.pt`` among them) before rerunning it, so a resume
checkpoint must live outside them. With ``--resume-dir`` different from ``--out-dir``:

- only ``RESUME_DIR/checkpoint.pt`` is read: ``OUT_DIR/checkpoint.pt`` is an output, and
  one that survived is the end state of a run the workflow decided to redo (resuming from
  it would skip that training);
- a resume checkpoint of a different configuration (its fingerprint differs) is skipped
  with a warning and training starts from step 0 (under a workflow a changed
  configuration must retrain); the next checkpoint replaces it;
- after a successful finish the resume checkpoint is deleted (the directory is left).

With ``--resume-dir`` equal to ``--out-dir`` (the default) a checkpoint of a different
configuration is an error (delete it or pass ``--no-resume``): a hand-run study does not
silently discard a long run. In both modes a checkpoint that is not plain tensors is an
error, never skipped. The fingerprint covers the method, the resolved hyper-parameters,
the seed, the chip stores (paths, ``store.json`` and ``index.parquet`` contents, number of
images), the normalisation statistics, the world size and the number of steps; not the
output or resume directories, ``--checkpoint-every``, ``--stop-after-steps``, the loader or
the thread counts, so the same run resumes after those change.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import CHANNELS
from ..engine import (
    MetricsLog,
    PreemptionFlags,
    SeededBatchOrder,
    WarmupCosine,
    autocast,
    capture_rng_state,
    count_parameters,
    init_distributed,
    load_checkpoint,
    load_hparams,
    param_groups,
    resolve_device,
    resolve_dtype,
    restore_rng_state,
    save_checkpoint,
    seed_everything,
    step_generator,
)
from ..data.store import load_stats
from ..errors import SarsslError
from ..io import run_record, write_json

log = logging.getLogger(__name__)

METHODS = ("mae", "dino")

COMMON_DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 32,
    "weight_decay": 0.05,
    "warmup_epochs": 2,
    "min_lr_ratio": 0.0,
    "accum_steps": 1,
    "dtype": "auto",
    "compile": False,
    "clip_grad": 0.0,
    "log_every": 1,
    "block_rows": 8,
}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "mae": {
        "lr": 1.5e-4,
        "betas": [0.9, 0.95],
        "mask_ratio": 0.75,
        "decoder_depth": 1,
        "decoder_dim": 512,
        "decoder_heads": 16,
        "norm_pix_loss": False,
    },
    "dino": {
        "lr": 5e-4,
        "betas": [0.9, 0.999],
        "weight_decay": 0.04,
        "clip_grad": 3.0,
        "head_hidden_dim": 256,
        "head_bottleneck_dim": 64,
        "head_out_dim": 1024,
        "teacher_temp": 0.04,
        "warmup_teacher_temp": 0.04,
        "warmup_teacher_temp_epochs": 0,
        "student_temp": 0.1,
        "center_momentum": 0.9,
        "momentum_teacher": 0.996,
        "local_crops": 2,
        "freeze_last_layer": 1,
        "global_scale": [0.4, 1.0],
        "local_scale": [0.05, 0.4],
        "speckle_looks": 16.0,
        "speckle_p": 0.5,
        "channel_drop_p": 0.1,
    },
}


def resolve_hparams(method: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Flatten ``{"backbone": {...}, "mae": {...}}`` or take a flat mapping, fill defaults.

    The result is what the run records and what a resume must match.
    """
    if method not in METHODS:
        raise SarsslError(f"--method {method!r}: expected one of {list(METHODS)}")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "backbone" and isinstance(value, dict):
            flat.update(value)
        elif key in METHODS and isinstance(value, dict):
            if key == method:
                flat.update(value)
        else:
            flat[key] = value
    out = {**COMMON_DEFAULTS, **METHOD_DEFAULTS[method], **flat}
    if "model_name" not in out:
        raise SarsslError("--hparams: missing 'model_name' (the config's pretrain.backbone block)")
    for key in ("epochs", "batch_size", "accum_steps", "log_every"):
        if int(out[key]) < 1:
            raise SarsslError(f"--hparams: {key} must be >= 1, got {out[key]}")
    return out


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------
def _pretrain_rows(store_dirs: list[str], splits: tuple[str, ...]) -> list[tuple[Any, np.ndarray]]:
    """(store, sorted rows of ``splits``) for each chip store that has such chips; stores
    whose channel order differs from :data:`sarssl.CHANNELS` are refused."""
    from ..data.store import ChipStore

    out = []
    for d in store_dirs:
        store = ChipStore(d)
        if list(store.channels) != list(CHANNELS):
            raise SarsslError(f"chip store {d}: channels {store.channels} differ from {list(CHANNELS)}")
        rows = np.sort(np.concatenate([store.rows(s) for s in splits]))
        if rows.size == 0:
            log.warning("chip store %s has no %s chips", d, "/".join(splits))
            continue
        out.append((store, rows))
    return out


class PretrainImages(torch.utils.data.Dataset):
    """Normalised images of the train + val chips of several stores, concatenated.

    ``__getitems__`` returns one ``(B, C, S, S)`` tensor (batched reads per store).
    """

    def __init__(self, store_dirs: list[str], stats: str, splits: tuple[str, ...] = ("train", "val")):
        from ..data.store import ChipDataset

        self.datasets = []
        sizes = set()
        for store, rows in _pretrain_rows(store_dirs, splits):
            self.datasets.append(ChipDataset(store, rows, stats))
            sizes.add(store.chip_size)
        if not self.datasets:
            raise SarsslError(f"no {'/'.join(splits)} chips in {store_dirs}")
        if len(sizes) != 1:
            raise SarsslError(f"chip stores {store_dirs} have different chip sizes {sorted(sizes)}")
        self.chip_size = sizes.pop()
        self.offsets = np.cumsum([0] + [len(d) for d in self.datasets])
        self.std = self.datasets[0].std

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        out: list[torch.Tensor | None] = [None] * len(idx)
        for k in np.unique(which):
            pos = np.flatnonzero(which == k)
            items = self.datasets[k].__getitems__((idx[pos] - self.offsets[k]).tolist())
            for p, item in zip(pos, items):
                out[p] = item["image"]
        return torch.stack(out)  # type: ignore[arg-type]


class PretrainBatches:
    """Raw micro-batches of the train + val chips of several stores, for :class:`~sarssl.data.store.BatchLoader`.

    Duck-types :class:`~sarssl.data.store.ChipBatches` (the interface ``BatchLoader``
    uses: ``epoch``/``set_epoch``, ``batches``, ``buffers``, ``read_into``, ``meta``),
    but its plan is not ChipBatches' own shuffle: it is the slice ``[start, end)`` of
    the optimiser steps of a :class:`~sarssl.engine.SeededBatchOrder` (this rank's
    micro-batches), so the data order stays a pure function of (seed, epoch, rank,
    world size) and a resumed run simply plans from its checkpoint step. Sample ``i``
    is row ``i - offsets[k]`` of the sorted train+val rows of store ``k``; reading is
    ChipBatches' ``pread`` of contiguous row runs into reused buffers, and the images
    stay raw float16 dB (normalise them with :class:`~sarssl.data.store.Normalize`).
    """

    def __init__(self, store_dirs: list[str], splits: tuple[str, ...] = ("train", "val")):
        from ..data.store import ChipBatches

        self.stores: list[Any] = []
        self.rows: list[np.ndarray] = []
        sizes, dtypes = set(), set()
        for store, rows in _pretrain_rows(store_dirs, splits):
            self.stores.append(ChipBatches(store, rows, batch_size=1, shuffle=False, labels=False))
            self.rows.append(rows)
            sizes.add(store.chip_size)
            dtypes.add(np.dtype(store.x.dtype).str)
        if not self.stores:
            raise SarsslError(f"no {'/'.join(splits)} chips in {store_dirs}")
        if len(sizes) != 1 or len(dtypes) != 1:
            raise SarsslError(f"chip stores {store_dirs} differ in chip size {sorted(sizes)} or dtype {sorted(dtypes)}")
        self.chip_size = sizes.pop()
        self.offsets = np.cumsum([0] + [r.size for r in self.rows])
        self.epoch = 0
        self.batch_size = 1
        self._plan: Any = []

    def __len__(self) -> int:
        return len(self._plan)

    @property
    def n(self) -> int:
        return int(self.offsets[-1])

    def plan(self, order: SeededBatchOrder, start: int, end: int) -> None:
        """Plan this rank's micro-batches of optimiser steps ``start .. end - 1``."""
        self._plan = _MicroPlan(order, start, end)
        self.batch_size = order.micro

    def set_epoch(self, epoch: int) -> None:  # the plan already spans the epochs
        self.epoch = int(epoch)

    def batches(self) -> Any:
        return self._plan

    def _arrays(self) -> None:
        for b in self.stores:
            b._arrays()

    def buffers(self, n: int | None = None, *, shared: bool = False, pin: bool = False) -> dict[str, Any]:
        return self.stores[0].buffers(self.batch_size if n is None else n, shared=shared, pin=pin)

    def read_into(self, idx: np.ndarray, out: dict[str, Any], start: int = 0) -> None:
        """Copy samples ``idx`` (global indices) into ``out["x"][start : start + len(idx)]``."""
        idx = np.asarray(idx, dtype=np.int64)
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        cuts = np.flatnonzero(np.diff(which)) + 1
        for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [idx.size]])):
            k = int(which[a])
            self.stores[k].read_into(self.rows[k][idx[a:b] - self.offsets[k]], out, start + int(a))

    def meta(self, idx: np.ndarray) -> dict[str, Any]:
        return {"index": torch.from_numpy(np.asarray(idx, dtype=np.int64).copy())}


class _MicroPlan:
    """Lazy sequence of this rank's micro-batch index arrays for steps ``start .. end - 1``."""

    def __init__(self, order: SeededBatchOrder, start: int, end: int):
        self.order, self.start, self.end = order, int(start), int(end)

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.order.accum

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        step, a = divmod(i, self.order.accum)
        return self.order.global_indices(self.start + step)[self.order.positions(a)]


def _passthrough(batch: torch.Tensor) -> torch.Tensor:
    return batch


class _MicroBatches:
    def __init__(self, order: SeededBatchOrder, start: int, end: int):
        self.order, self.start, self.end = order, start, end

    def __iter__(self):
        return self.order.micro_batches(self.start, self.end)

    def __len__(self) -> int:
        return (self.end - self.start) * self.order.accum


LOADERS = ("auto", "batch", "dataset")


def _resolve_loader(name: str, device: torch.device) -> str:
    """``auto`` -> ``batch``: :class:`PretrainBatches` + ``BatchLoader`` (raw float16 read
    with ``pread`` into reused buffers, normalised on the training device). Measured on
    the 2-core demo VM (1 thread, 12 channels, batch 32): 64 px chips 6,700 chips/s vs
    4,500 for ``dataset`` (ChipDataset's float16 lookup-table decode, same values); at
    448 px on CPU ``dataset`` reads 41 vs 30 chips/s, which is irrelevant next to a
    ViT step there but can be chosen explicitly."""
    if name not in LOADERS:
        raise SarsslError(f"--loader {name!r}: expected one of {list(LOADERS)}")
    return "batch" if name == "auto" else name


def _image_stream(
    data: PretrainBatches | PretrainImages,
    order: SeededBatchOrder,
    start: int,
    end: int,
    device: torch.device,
    mean_db: np.ndarray,
    std_db: np.ndarray,
    cfg: dict[str, Any],
):
    """Iterator over this rank's normalised (B, C, S, S) float32 micro-batches on ``device``
    for optimiser steps ``start .. end - 1`` (NaN / no data -> 0, as in ChipDataset)."""
    cuda = device.type == "cuda"
    if isinstance(data, PretrainBatches):
        from ..data.store import BatchLoader, Normalize

        data.plan(order, start, end)
        norm = Normalize(mean_db, std_db).to(device)
        loader = BatchLoader(
            data,
            threads=max(1, int(cfg.get("loader_threads") or 2)),
            prefetch=max(1, int(cfg.get("prefetch") or 2)),
            pin_memory=cuda,
            device=device if cuda else None,
        )
        for batch in loader:
            # on the host the buffer is reused after ``prefetch`` more batches: Normalize
            # writes a fresh tensor, so nothing downstream aliases it
            yield norm(batch["x"])
        return
    loader = torch.utils.data.DataLoader(
        data,
        batch_sampler=_MicroBatches(order, start, end),
        collate_fn=_passthrough,
        num_workers=int(cfg.get("num_workers", 0)),
        pin_memory=cuda,
        persistent_workers=False,
    )
    for images in loader:
        yield images.to(device, non_blocking=True)


# --------------------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------------------
FINGERPRINT_KEYS = (
    "method",
    "hparams",
    "seed",
    "chips_dirs",
    "data_digest",
    "world_size",
    "n_images",
    "total_steps",
)
"""What identifies a run for resuming (module docstring); deliberately not ``out_dir``,
``resume_dir``, ``checkpoint_every``, ``stop_after_steps``, ``max_steps`` (only through
``total_steps``), ``loader``, ``threads`` or ``device``."""


def _fingerprint(cfg: dict[str, Any]) -> str:
    blob = json.dumps({k: cfg.get(k) for k in FINGERPRINT_KEYS}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _data_digest(store_dirs: list[str], mean_db: np.ndarray, std_db: np.ndarray) -> str:
    """Identity of the training data: the chip stores' ``store.json`` and ``index.parquet``
    bytes (small; the chip arrays are written once with them) and the normalisation
    statistics, so a rebuilt store or new statistics never continue an old run."""
    h = hashlib.sha256()
    for d in store_dirs:
        for name in ("store.json", "index.parquet"):
            path = Path(d) / name
            h.update(f"{name}:{path.stat().st_size}:".encode())
            h.update(path.read_bytes())
    h.update(json.dumps([np.asarray(mean_db).tolist(), np.asarray(std_db).tolist()]).encode())
    return h.hexdigest()[:16]


def build_model(method: str, hp: dict[str, Any], chip_size: int) -> tuple[nn.Module, nn.Module, str, dict[str, Any]]:
    """(full model, trainable module, timm name, timm kwargs) for ``method``."""
    from .dino import DINO
    from .mae import MaskedAutoencoder
    from ..downstream.models import backbone_kwargs, create_backbone

    if method == "dino":
        hp = {**hp, "dynamic_img_size": True}  # local crops are S/2
    name, kwargs = backbone_kwargs(hp, chip_size)
    backbone = create_backbone(name, **kwargs)
    if method == "mae":
        model = MaskedAutoencoder(
            backbone,
            mask_ratio=float(hp["mask_ratio"]),
            decoder_dim=int(hp["decoder_dim"]),
            decoder_depth=int(hp["decoder_depth"]),
            decoder_heads=int(hp["decoder_heads"]),
            norm_pix_loss=bool(hp["norm_pix_loss"]),
        )
        return model, model, name, kwargs
    model = DINO(
        backbone,
        head_hidden_dim=int(hp["head_hidden_dim"]),
        head_bottleneck_dim=int(hp["head_bottleneck_dim"]),
        head_out_dim=int(hp["head_out_dim"]),
        student_temp=float(hp["student_temp"]),
        teacher_temp=float(hp["teacher_temp"]),
        warmup_teacher_temp=float(hp["warmup_teacher_temp"]),
        warmup_teacher_temp_epochs=int(hp["warmup_teacher_temp_epochs"]),
        center_momentum=float(hp["center_momentum"]),
    )
    return model, model.student, name, kwargs


def train(cfg: dict[str, Any]) -> int:
    """Run (or resume) one pretraining run described by ``cfg`` (see :func:`run`)."""
    from .dino import MultiCropAugment, teacher_momentum

    t_start = time.time()
    method, hp, seed = cfg["method"], cfg["hparams"], int(cfg["seed"])
    out_dir = Path(cfg["out_dir"])
    device = resolve_device(cfg.get("device", "auto"))
    rank, world = init_distributed(device)
    is_main = rank == 0
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    seed_everything(seed)
    dtype = resolve_dtype(str(hp["dtype"]), device)

    loader_kind = _resolve_loader(str(cfg.get("loader") or "auto"), device)
    data = PretrainBatches(cfg["chips_dirs"]) if loader_kind == "batch" else PretrainImages(cfg["chips_dirs"], cfg["stats"])
    n, size = data.n if loader_kind == "batch" else len(data), data.chip_size
    mean_db, std_db = load_stats(cfg["stats"])
    accum = int(hp["accum_steps"])
    global_batch = int(hp["batch_size"])
    if n < global_batch:
        unit = world * accum
        global_batch = max(unit, (n // unit) * unit)
        log.warning("only %d images: global batch reduced from %d to %d", n, hp["batch_size"], global_batch)
    # blocks of neighbouring rows (sequential reads), at most a quarter of the global
    # batch so that every batch mixes several places; it must not depend on the world
    # size (N processes visit exactly the samples of one process)
    block = max(1, min(int(hp["block_rows"]), global_batch // 4))
    order = SeededBatchOrder(n, global_batch, seed, rank, world, accum, block_rows=block)
    total = int(hp["epochs"]) * order.steps_per_epoch
    if cfg.get("max_steps"):
        total = min(total, int(cfg["max_steps"]))
    warmup = min(total, int(round(float(hp["warmup_epochs"]) * order.steps_per_epoch)))
    cfg.update(world_size=world, n_images=n, total_steps=total, global_batch=global_batch, device=str(device), dtype=dtype,
               loader=loader_kind, data_digest=_data_digest(cfg["chips_dirs"], mean_db, std_db))
    fingerprint = _fingerprint(cfg)

    model, trainable, model_name, model_kwargs = build_model(method, hp, size)
    model.to(device)
    if is_main:
        log.info(
            "%s pretraining: %d images (%s), %d steps of %d, %.2fM trainable parameters, %s %s, world %d",
            method, n, ", ".join(map(str, cfg["chips_dirs"])), total, global_batch,
            count_parameters(trainable, True) / 1e6, device, dtype, world,
        )
    optimizer = torch.optim.AdamW(
        param_groups(trainable, float(hp["weight_decay"])), lr=float(hp["lr"]), betas=tuple(hp["betas"])
    )
    schedule = WarmupCosine(float(hp["lr"]), warmup, total, float(hp["min_lr_ratio"]))
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == "fp16")
    augment = None
    if method == "dino":
        augment = MultiCropAugment(
            size,
            n_local=int(hp["local_crops"]),
            global_scale=tuple(hp["global_scale"]),
            local_scale=tuple(hp["local_scale"]),
            std_db=std_db.tolist(),
            speckle_looks=float(hp["speckle_looks"]),
            speckle_p=float(hp["speckle_p"]),
            channel_drop_p=float(hp["channel_drop_p"]),
        )

    final_path = out_dir / "checkpoint.pt"
    resume_dir = Path(cfg.get("resume_dir") or out_dir)
    separate = resume_dir.resolve() != out_dir.resolve()
    ckpt_path = resume_dir / "checkpoint.pt"  # checkpoints of the unfinished run
    start = 0
    history: list[str] | None = None
    if cfg.get("resume", True) and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)  # refuses anything but plain tensors
        if state.get("fingerprint") != fingerprint and separate:
            if is_main:
                log.warning(
                    "%s: checkpoint of a different configuration (fingerprint %s, this run %s): "
                    "ignored, training from step 0",
                    ckpt_path, state.get("fingerprint"), fingerprint,
                )
            state = None
        elif state.get("fingerprint") != fingerprint:
            raise SarsslError(
                f"{ckpt_path}: checkpoint of a different run (configuration changed); "
                "delete it or pass --no-resume"
            )
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            scaler.load_state_dict(state["scaler"])
            restore_rng_state(state["rng"])
            start = int(state["step"])
            history = state.get("metrics")
            if is_main:
                log.info("resuming from %s at step %d/%d", ckpt_path, start, total)
        del state
    out_dir.mkdir(parents=True, exist_ok=True)
    hp_plain = json.loads(json.dumps(hp, default=str))  # e.g. a YAML date: plain values only

    def checkpoint(step: int, path: Path) -> None:
        if is_main:
            save_checkpoint(
                path,
                {
                    "step": step,
                    "fingerprint": fingerprint,
                    "method": method,
                    "hparams": hp_plain,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": capture_rng_state(),
                    "metrics": list(metrics.lines) if metrics is not None else [],
                },
            )
        if world > 1:
            torch.distributed.barrier()

    forward: nn.Module = trainable
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward = DDP(trainable, device_ids=[device.index] if device.type == "cuda" else None)
    if hp.get("compile"):
        forward = torch.compile(forward)

    batches = _image_stream(data, order, start, total, device, mean_db, std_db, cfg)
    metrics = None
    if is_main:
        metrics = MetricsLog(out_dir / "metrics.jsonl", resume_step=start or None, history=history)
    stop_after = cfg.get("stop_after_steps")
    status = 0
    last_loss = float("nan")
    n_tokens = (size // int(model_kwargs.get("patch_size", 16))) ** 2
    data_time = 0.0
    wait_since_log = 0.0
    time_since_log = 0.0
    from tqdm import tqdm

    progress = tqdm(total=total, initial=start, desc=f"pretrain {method}", unit="step", disable=not is_main or cfg.get("quiet", False))
    trainable.train()
    t_train = time.time()
    with PreemptionFlags() as flags:
        for step in range(start, total):
            t0 = time.perf_counter()
            epoch = step // order.steps_per_epoch
            lr = schedule.apply(optimizer, step)
            optimizer.zero_grad(set_to_none=True)
            noise = None
            if method == "mae":
                noise = torch.rand(global_batch, model.num_patches, generator=step_generator(seed, step))
            loss_acc = torch.zeros((), device=device)
            for a in range(accum):
                td = time.perf_counter()
                images = next(batches)
                wait = time.perf_counter() - td
                data_time += wait
                wait_since_log += wait
                sync = forward.no_sync() if (world > 1 and a < accum - 1 and hasattr(forward, "no_sync")) else contextlib.nullcontext()
                with sync:
                    with autocast(device, dtype):
                        if method == "mae":
                            loss, _, _ = forward(images, noise=noise[order.positions(a)])
                        else:
                            crops = augment(images, step_generator(seed, step, rank * accum + a))
                            loss = model(crops, epoch, student=forward)
                    scaler.scale(loss / accum).backward()
                loss_acc += loss.detach().float() / accum
            if float(hp["clip_grad"]) > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable.parameters(), float(hp["clip_grad"]))
            if method == "dino" and epoch < int(hp["freeze_last_layer"]):
                model.student.head.last_layer.weight.grad = None
            scaler.step(optimizer)
            scaler.update()
            if method == "dino":
                model.update_teacher(teacher_momentum(step, total, float(hp["momentum_teacher"])))
            flag = torch.tensor([float(flags.save), float(flags.stop)], device=device)
            if world > 1:
                torch.distributed.all_reduce(loss_acc)
                loss_acc /= world
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            last_loss = float(loss_acc)
            if not np.isfinite(last_loss):
                raise SarsslError(f"{method} pretraining diverged at step {step} (loss {last_loss}); lower the lr")
            done = step + 1
            dt = time.perf_counter() - t0
            time_since_log += dt
            if metrics is not None and (done % int(hp["log_every"]) == 0 or done == total):
                metrics.write(
                    {
                        "step": done,
                        "epoch": epoch,
                        "loss": last_loss,
                        "lr": lr,
                        "images_per_s": global_batch / dt,
                        "tokens_per_s": global_batch * n_tokens / dt,
                        # time spent waiting for input batches / step time, since the last line
                        "data_wait_s": wait_since_log,
                        "data_share": wait_since_log / max(time_since_log, 1e-12),
                        **(getattr(model.criterion, "last_diagnostics", {}) if method == "dino" else {}),
                    }
                )
                wait_since_log = time_since_log = 0.0
            progress.update(1)
            progress.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
            every = int(cfg.get("checkpoint_every") or 0)
            want_stop = bool(flag[1]) or (stop_after is not None and done >= int(stop_after) and done < total)
            if done < total and ((every and done % every == 0) or bool(flag[0]) or want_stop):
                checkpoint(done, ckpt_path)
                flags.save = False
            if want_stop:
                status = 143 if bool(flag[1]) else 0
                log.warning("stopping after step %d/%d (checkpoint %s)", done, total, ckpt_path)
                break
    progress.close()
    batches.close()  # stops the reader threads of an interrupted run
    train_time = time.time() - t_train
    if metrics is not None:
        metrics.close()
    interrupted = status != 0 or (stop_after is not None and start < total and int(stop_after) < total)
    if interrupted:
        return status
    checkpoint(total, final_path)

    if is_main:
        from ..downstream.models import export_encoder

        stats = json.loads(Path(cfg["stats"]).read_text())
        encoder = model.encoder
        export_encoder(
            encoder,
            out_dir / "encoder.safetensors",
            model_name=model_name,
            model_kwargs=model_kwargs,
            method=method,
            stats=stats,
            channels=list(CHANNELS),
            extra={"seed": seed, "steps": total, "chips_dirs": [str(d) for d in cfg["chips_dirs"]]},
        )
        wall = time.time() - t_start
        write_json(
            out_dir / "run.json",
            run_record(
                {k: v for k, v in cfg.items() if k != "quiet"},
                fingerprint=fingerprint,
                final_loss=last_loss,
                wall_s=wall,
                data_time_s=data_time,
                data_share=data_time / max(train_time, 1e-12),
                resumed_from_step=start,
                torch_version=torch.__version__,
            ),
        )
        if separate:  # finished: the resume checkpoint is stale from now on
            ckpt_path.unlink(missing_ok=True)
        log.info("%s pretraining done: loss %.4f, %.1f s, encoder %s", method, last_loss, wall, out_dir / "encoder.safetensors")
    if world > 1:
        torch.distributed.barrier()
    return 0


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=METHODS, help="self-supervised method")
    parser.add_argument("--chips-dir", required=True, nargs="+", action="extend", dest="chips_dirs", metavar="DIR",
                        help="chip store(s); their train+val chips are used (never test)")
    parser.add_argument("--stats", required=True, help="stats.json (per-channel mean/std)")
    parser.add_argument("--hparams", required=True,
                        help="JSON object or JSON/YAML file: config pretrain.backbone merged with pretrain.<method>")
    parser.add_argument("--seed", type=int, required=True, help="seed of every random choice")
    parser.add_argument("--out-dir", required=True, help="output directory")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-steps", type=int, default=None, help="cap the number of optimiser steps (tests)")
    parser.add_argument("--loader", default="auto", choices=LOADERS,
                        help="input path: batch = raw float16 pread + on-device normalisation (auto), "
                             "dataset = ChipDataset + DataLoader")
    parser.add_argument("--loader-threads", type=int, default=2, help="reader threads of the batch loader")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (--loader dataset)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="also checkpoint every N steps (to the resume directory; 0 = never)")
    parser.add_argument(
        "--resume-dir",
        default=None,
        metavar="DIR",
        help="where checkpoints of an unfinished run go and a rerun resumes from (default: "
        "--out-dir); keep it outside a workflow's declared outputs. With a separate DIR a "
        "checkpoint of another configuration is ignored with a warning, and the file is "
        "removed after a successful finish",
    )
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="checkpoint and stop after N steps, as if preempted (resume by rerunning)")
    parser.add_argument("--no-resume", dest="resume", action="store_false", help="ignore an existing checkpoint")


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    for d in args.chips_dirs:
        if not Path(d).is_dir():
            raise SarsslError(f"--chips-dir {d}: not a directory")
    if not Path(args.stats).is_file():
        raise SarsslError(f"--stats {args.stats}: file not found")
    return {
        "method": args.method,
        "hparams": resolve_hparams(args.method, load_hparams(args.hparams)),
        "seed": int(args.seed),
        "chips_dirs": [str(Path(d).resolve()) for d in args.chips_dirs],
        "stats": str(Path(args.stats).resolve()),
        "out_dir": str(args.out_dir),
        "resume_dir": str(args.resume_dir) if args.resume_dir else None,
        "device": args.device,
        "max_steps": args.max_steps,
        "num_workers": args.num_workers,
        "loader": args.loader,
        "loader_threads": args.loader_threads,
        "threads": args.threads,
        "checkpoint_every": args.checkpoint_every,
        "stop_after_steps": args.stop_after_steps,
        "resume": args.resume,
    }


def run(args: argparse.Namespace) -> int:
    return train(config_from_args(args))
