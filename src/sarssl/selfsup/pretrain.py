"""``sarssl pretrain``: self-supervised pretraining of a ViT encoder with a registered
method (:data:`sarssl.selfsup.registry.METHODS`: MAE, DINO).

Trains on the train + val chips of the given chip stores (no labels are used; the test
chips are never seen, so later test scores are not inflated by pretraining on them) and
writes, in ``--out-dir``::

    checkpoint.pt        full training state (model, optimiser, schedule, scaler, RNGs, step)
    metrics.jsonl        one JSON line per logged step: step, epoch, loss, lr, images_per_s
    run.json             resolved configuration, versions, git revision, timings
    encoder.safetensors  the encoder weights (MAE encoder / DINO teacher backbone)
    encoder.json         timm name + kwargs, channel order and normalisation statistics

Hyper-parameters. ``--hparams`` (the workflow passes its config's ``pretrain.backbone``
merged with ``pretrain.METHOD``) overrides the defaults of
:class:`~sarssl.selfsup.method.BackboneConfig` and of the method's config class, which
equal the workflow schema's defaults: without ``--hparams`` a run trains what the
workflow trains for an unset configuration.

Reproducibility. All randomness is a function of ``--seed``: the model initialisation,
the data order (epoch ``e`` uses ``default_rng([seed, e])``) and the method's draws,
which come from the step's generators (:class:`~sarssl.selfsup.method.Step`): the MAE
masks are drawn for the whole global batch from a generator seeded by (seed, step), the
DINO augmentations from one seeded by (seed, step, rank, micro-step). A run interrupted at
any step and resumed from its checkpoint therefore ends with *exactly* the parameters of an
uninterrupted run on CPU; under DDP each rank takes its slice of the same global batches
and masks, so N
processes perform the same update as one process with the same global batch.

Device. What depends on CPU vs CUDA is resolved once, by :func:`resolve_runtime`, and
recorded as ``runtime`` in ``run.json``: on the CPU deterministic fp32 kernels without
compilation (bit-reproducible, as the tests need); on CUDA bf16 autocast, ``torch.compile``,
fused AdamW, cuDNN autotuning and TF32 (``--deterministic true`` keeps deterministic
kernels) and more loader threads. The recipe (batch size, lr, steps, data order, masks)
never depends on the device: ``batch_size`` is the global batch of an optimiser step
(:func:`plan_steps`). The input batches are staged one micro-step ahead (copied, decoded
and normalised on a side CUDA stream, :func:`~sarssl.selfsup.batches.image_stream`), and
the host synchronises with the device only every ``log_every`` steps (:func:`train_loop`).

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
output or resume directories, ``--checkpoint-every``, ``--stop-after-steps`` or the thread
counts, so the same run resumes after those change.

Code. :func:`train` prepares a :class:`Run` (method, data order, optimiser), resumes it
(:class:`Checkpoints`), runs the steps (:func:`train_loop`, one optimiser step in
:func:`optimizer_step`, the metric lines and progress in :class:`StepLog`) and finishes
(final checkpoint, encoder export, ``run.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.store import load_stats
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
)
from ..errors import SarsslError
from ..io import run_record, write_json
from ..vocabulary import CHANNELS
from .batches import PretrainBatches, image_stream
from .method import BackboneConfig, Method, OptimConfig, Step
from .registry import METHODS, method_class

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
def resolve_hparams(method: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten ``{"backbone": {...}, "mae": {...}}`` or take a flat mapping, fill the
    defaults of :class:`~sarssl.selfsup.method.BackboneConfig` and of the method's config.

    The result is what the run records and what a resume must match; ``{}`` gives the
    workflow schema's defaults. Values are checked against the fields' types.
    """
    config = method_class(method).Config
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "backbone" and isinstance(value, dict):
            flat.update(value)
        elif key in METHODS and isinstance(value, dict):
            if key == method:
                flat.update(value)
        else:
            flat[key] = value
    out = {**BackboneConfig.defaults(), **config.defaults(), **flat}
    BackboneConfig.from_hparams(out)
    config.from_hparams(out)
    return out


def build_model(
    method: str, hp: Mapping[str, Any], chip_size: int
) -> tuple[nn.Module, nn.Module, str, dict[str, Any]]:
    """(full model, trainable module, timm name, timm kwargs) of ``method`` for the flat
    hyper-parameters ``hp`` (e.g. a checkpoint's ``hparams``)."""
    built = method_class(method)(hp, chip_size)
    return built.model, built.trainable, built.timm_name, built.timm_kwargs


FINGERPRINT_KEYS = (
    "method",
    "hparams",
    "seed",
    "chips_dirs",
    "test_buffer",
    "data_digest",
    "world_size",
    "n_images",
    "total_steps",
)
"""What identifies a run for resuming (module docstring); deliberately not ``out_dir``,
``resume_dir``, ``checkpoint_every``, ``stop_after_steps``, ``max_steps`` (only through
``total_steps``), ``threads`` or ``device``."""


FINGERPRINT_DEFAULTS: dict[str, Any] = {"test_buffer": 1.0}
"""Values a configuration without the key runs with (the CLI's defaults), so a run
started from the command line and one from :func:`train` resume each other."""


def fingerprint(cfg: dict[str, Any]) -> str:
    values = {k: cfg.get(k, FINGERPRINT_DEFAULTS.get(k)) for k in FINGERPRINT_KEYS}
    if values.get("test_buffer") is not None:
        values["test_buffer"] = float(values["test_buffer"])
    blob = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_digest(store_dirs: list[str], mean_db: np.ndarray, std_db: np.ndarray) -> str:
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


# --------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------
@dataclass
class Run:
    """One pretraining run: the method, the data order, the optimiser and where it runs."""

    cfg: dict[str, Any]
    method: Method
    order: SeededBatchOrder
    total: int
    device: torch.device
    dtype: str
    rank: int
    world: int
    fingerprint: str
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosine
    scaler: torch.amp.GradScaler
    runtime: Runtime | None = None
    """the device-dependent settings (:func:`resolve_runtime`)"""
    forward: nn.Module | None = None
    """the trainable module as the loss calls it (DDP-wrapped, compiled)"""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        cfg, params = self.cfg, count_parameters(self.method.trainable, True) / 1e6
        return (
            f"{self.method.name} pretraining: {cfg['n_images']} images "
            f"({', '.join(map(str, cfg['chips_dirs']))}), {self.total} steps of "
            f"{self.order.global_batch}, {params:.2f}M trainable parameters, {self.device} "
            f"{self.dtype}, world {self.world}"
        )

    def state(self, step: int, metrics: list[str]) -> dict[str, Any]:
        """The full training state after ``step`` steps: plain tensors and values only
        (``default=str``: a YAML date in the hyper-parameters becomes a string)."""
        return {
            "step": step,
            "fingerprint": self.fingerprint,
            "method": self.method.name,
            "hparams": json.loads(json.dumps(self.cfg["hparams"], default=str)),
            "model": self.method.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "metrics": metrics,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state` (RNGs included)."""
        self.method.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])


def plan_steps(
    config: OptimConfig, n: int, seed: int, rank: int, world: int, max_steps: int | None
) -> tuple[SeededBatchOrder, int, int]:
    """(data order, optimiser steps, warm-up steps) for ``n`` images.

    ``config.batch_size`` is the **global** batch: the images of one optimiser step over
    all ``world`` processes and ``accum_steps`` micro-steps together. Each process reads
    ``batch_size / (world * accum_steps)`` images per micro-step (``order.micro``), so N
    processes perform exactly the update of one process with the same ``batch_size`` (and
    the same lr: adding GPUs needs no lr change; raising ``batch_size`` does, e.g. the
    linear rule lr x new/old)."""
    accum = config.accum_steps
    global_batch = config.batch_size
    if n < global_batch:
        unit = world * accum
        global_batch = max(unit, (n // unit) * unit)
        log.warning(
            "only %d images: global batch reduced from %d to %d", n, config.batch_size, global_batch
        )
    # blocks of neighbouring rows (sequential reads), at most a quarter of the global
    # batch so that every batch mixes several places; it must not depend on the world
    # size (N processes visit exactly the samples of one process)
    block = max(1, min(config.block_rows, global_batch // 4))
    order = SeededBatchOrder(n, global_batch, seed, rank, world, accum, block_rows=block)
    total = config.epochs * order.steps_per_epoch
    if max_steps:
        total = min(total, int(max_steps))
    warmup = min(total, int(round(float(config.warmup_epochs) * order.steps_per_epoch)))
    return order, total, warmup


@dataclass(frozen=True)
class Runtime:
    """How a run uses its device: everything that depends on CPU vs CUDA, resolved in one
    place (:func:`resolve_runtime`) and recorded in ``run.json`` (``runtime``). None of it
    changes the recipe (batch size, lr, steps, data order, masks): on the CPU the defaults
    are the bit-reproducible ones of before; on CUDA the fast ones. The batch size stays
    the config's on every device (it sets the lr and the steps): a GPU run sets a
    GPU-sized ``batch_size`` (and lr) in its config, e.g. 128 for MAE ViT-B/16 at 448 px
    in bf16 on an 80 GB GPU (what ``benchmarks/pretrain.py --device cuda`` uses)."""

    device: str
    dtype: str
    """autocast precision: ``auto`` = bf16 on CUDA, fp32 on CPU"""
    deterministic: bool
    """deterministic kernels (``auto``: yes on CPU; on CUDA no: cuDNN autotuning and TF32
    matmuls, the fast non-deterministic kernels)"""
    compile: bool
    """``torch.compile`` the trained module (``auto``: the method's ``compile`` on CPU,
    yes on CUDA)"""
    fused_adamw: bool
    """AdamW's fused CUDA kernel (CUDA only)"""
    loader_threads: int
    """reader threads (``0`` = auto: 2 on CPU, ``min(8, cores)`` on CUDA)"""
    sync_every: int
    """optimiser steps between host synchronisations (loss read back, preemption flags
    gathered): the method's ``log_every``"""
    overlap: bool
    """input batches copied and normalised one step ahead (on a side CUDA stream)"""


def _tristate(value: Any, where: str) -> bool | None:
    """``auto``/None -> None, else a bool (``true``/``false``/``on``/``off``/``1``/``0``)."""
    if value is None or value == "auto":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "on", "1", "yes"):
        return True
    if text in ("false", "off", "0", "no"):
        return False
    raise SarsslError(f"{where}={value!r}: expected auto, true or false")


def resolve_runtime(config: OptimConfig, device: torch.device, cfg: Mapping[str, Any]) -> Runtime:
    """The :class:`Runtime` of a run of ``config`` on ``device``, with ``cfg``'s
    ``deterministic``, ``compile`` (each ``auto``/true/false) and ``loader_threads``
    (0 = auto) overrides. The one place where CPU and CUDA defaults differ."""
    import os

    cuda = device.type == "cuda"
    deterministic = _tristate(cfg.get("deterministic"), "deterministic")
    compile_ = _tristate(cfg.get("compile"), "compile")
    threads = int(cfg.get("loader_threads") or 0)
    if threads <= 0:
        threads = max(2, min(8, os.cpu_count() or 2)) if cuda else 2
    return Runtime(
        device=str(device),
        dtype=resolve_dtype(config.dtype, device),
        deterministic=(not cuda) if deterministic is None else deterministic,
        compile=(cuda or config.compile) if compile_ is None else compile_,
        fused_adamw=cuda,
        loader_threads=threads,
        sync_every=int(config.log_every),
        overlap=bool(cfg.get("overlap", True)),
    )


def apply_runtime(runtime: Runtime) -> None:
    """Set torch's global kernel choices for ``runtime`` (deterministic or fast)."""
    torch.use_deterministic_algorithms(runtime.deterministic, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not runtime.deterministic
    if runtime.device.startswith("cuda"):
        fast = not runtime.deterministic
        torch.backends.cuda.matmul.allow_tf32 = fast
        torch.backends.cudnn.allow_tf32 = fast


def environment(cfg: dict[str, Any]) -> tuple[torch.device, int, int]:
    """(device, rank, world size) of this process, with its torch threads and every seed set."""
    device = resolve_device(cfg.get("device", "auto"))
    rank, world = init_distributed(device)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    seed_everything(int(cfg["seed"]))
    return device, rank, world


def optimisation(
    method: Method, warmup: int, total: int, dtype: str, fused: bool = False
) -> tuple[torch.optim.Optimizer, WarmupCosine, torch.amp.GradScaler]:
    """AdamW over the method's trainable parameters (``fused``: the fused CUDA kernel),
    its lr schedule and loss scaler."""
    c = method.config
    groups = param_groups(method.trainable, c.weight_decay)
    optimizer = torch.optim.AdamW(
        groups, lr=c.lr, betas=c.betas, **({"fused": True} if fused else {})
    )
    schedule = WarmupCosine(c.lr, warmup, total, c.min_lr_ratio)
    return optimizer, schedule, torch.amp.GradScaler("cuda", enabled=dtype == "fp16")


def prepare(cfg: dict[str, Any]) -> tuple[Run, PretrainBatches, np.ndarray, np.ndarray]:
    """Seed, plan and build the run of ``cfg`` (completing ``cfg`` with what it found:
    world size, images, steps, device, dtype, data digest); also the data and its
    normalisation statistics."""
    cls = method_class(cfg["method"])
    config = cls.Config.from_hparams(cfg["hparams"])
    device, rank, world = environment(cfg)
    runtime = resolve_runtime(config, device, cfg)
    apply_runtime(runtime)
    dtype = runtime.dtype
    data = PretrainBatches(cfg["chips_dirs"], test_buffer=float(cfg.get("test_buffer", 1.0)))
    mean_db, std_db = load_stats(cfg["stats"])
    order, total, warmup = plan_steps(
        config, data.n, int(cfg["seed"]), rank, world, cfg.get("max_steps")
    )
    digest = data_digest(cfg["chips_dirs"], mean_db, std_db)
    sizes = dict(
        world_size=world, n_images=data.n, total_steps=total, global_batch=order.global_batch
    )
    cfg.update(sizes, device=str(device), dtype=dtype, data_digest=digest, runtime=asdict(runtime))
    method = cls(cfg["hparams"], data.chip_size, std_db.tolist())
    method.model.to(device)
    training = optimisation(method, warmup, total, dtype, fused=runtime.fused_adamw)
    run = Run(cfg, method, order, total, device, dtype, rank, world, fingerprint(cfg), *training)
    run.runtime = runtime
    if run.is_main:
        log.info("%s", run)
    return run, data, mean_db, std_db


def distribute(run: Run) -> nn.Module:
    """The trainable module wrapped for the loss: DDP over several ranks, compiled if asked."""
    forward: nn.Module = run.method.trainable
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward = DDP(forward, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    if run.runtime.compile if run.runtime is not None else run.method.config.compile:
        forward = torch.compile(forward)
    return forward


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------
class Checkpoints:
    """Where a run's checkpoints go and which one it resumes from (module docstring):
    those of an unfinished run in ``RESUME_DIR/checkpoint.pt``, the final full state in
    ``OUT_DIR/checkpoint.pt``."""

    def __init__(self, run: Run):
        self.run = run
        out_dir = Path(run.cfg["out_dir"])
        resume_dir = Path(run.cfg.get("resume_dir") or out_dir)
        self.separate = resume_dir.resolve() != out_dir.resolve()
        self.resume_path = resume_dir / "checkpoint.pt"
        self.final_path = out_dir / "checkpoint.pt"

    def resume(self) -> tuple[int, list[str] | None]:
        """Load the resume checkpoint into the run, if there is one of this configuration:
        (step to start from, the metric lines it carries)."""
        run = self.run
        if not run.cfg.get("resume", True) or not self.resume_path.exists():
            return 0, None
        state = load_checkpoint(self.resume_path)  # refuses anything but plain tensors
        if state.get("fingerprint") != run.fingerprint:
            if not self.separate:
                raise SarsslError(
                    f"{self.resume_path}: checkpoint of a different run (configuration changed); "
                    "delete it or pass --no-resume"
                )
            if run.is_main:
                log.warning(
                    "%s: checkpoint of a different configuration (fingerprint %s, this run %s): "
                    "ignored, training from step 0",
                    self.resume_path,
                    state.get("fingerprint"),
                    run.fingerprint,
                )
            return 0, None
        run.load_state(state)
        start = int(state["step"])
        if run.is_main:
            log.info("resuming from %s at step %d/%d", self.resume_path, start, run.total)
        return start, state.get("metrics")

    def save(self, path: Path, step: int, metrics: list[str]) -> None:
        """The state after ``step`` steps to ``path`` (by rank 0; every rank waits)."""
        if self.run.is_main:
            save_checkpoint(path, self.run.state(step, metrics))
        if self.run.world > 1:
            torch.distributed.barrier()

    def finished(self) -> None:
        """A finished run's resume checkpoint is stale: remove it (only a separate one)."""
        if self.separate:
            self.resume_path.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------
# logging
# --------------------------------------------------------------------------------------
class StepLog:
    """The loop's record besides the weights: a ``metrics.jsonl`` (+ TensorBoard) line every
    ``log_every`` steps and at the end (rank 0), the progress bar, and the time spent
    waiting for input batches."""

    def __init__(self, run: Run, start: int, history: list[str] | None):
        from tqdm import tqdm

        self.run = run
        path = Path(run.cfg["out_dir"]) / "metrics.jsonl"
        self.metrics = (
            MetricsLog(path, resume_step=start or None, history=history) if run.is_main else None
        )
        quiet = not run.is_main or run.cfg.get("quiet", False)
        self.progress = tqdm(
            total=run.total,
            initial=start,
            desc=f"pretrain {run.method.name}",
            unit="step",
            disable=quiet,
        )
        self.tokens = (
            run.method.chip_size // int(run.method.timm_kwargs.get("patch_size", 16))
        ) ** 2
        self.data_time = 0.0  # whole run
        self.wait = self.elapsed = 0.0  # since the last line
        self.images = 0  # since the last line
        self.last_loss = float("nan")

    @property
    def lines(self) -> list[str]:
        return list(self.metrics.lines) if self.metrics is not None else []

    def waited(self, seconds: float) -> None:
        self.data_time += seconds
        self.wait += seconds

    def step(self, step: Step, loss: float, lr: float, seconds: float, steps: int = 1) -> None:
        """Record optimiser step ``step`` (its mean loss and lr), read back at a host
        synchronisation that closes ``steps`` steps taking ``seconds`` together."""
        done, batch = step.index + 1, step.global_batch
        self.last_loss = loss
        self.elapsed += seconds
        self.images += batch * steps
        if self.metrics is not None and (
            done % self.run.method.config.log_every == 0 or done == step.total
        ):
            rate = self.images / max(self.elapsed, 1e-12)
            self.metrics.write(
                {
                    "step": done,
                    "epoch": step.epoch,
                    "loss": loss,
                    "lr": lr,
                    # since the last line (timed between host synchronisations)
                    "images_per_s": rate,
                    "tokens_per_s": rate * self.tokens,
                    # time spent waiting for input batches / step time, since the last line
                    "data_wait_s": self.wait,
                    "data_share": self.wait / max(self.elapsed, 1e-12),
                    **self.run.method.diagnostics(),
                }
            )
            self.wait = self.elapsed = 0.0
            self.images = 0
        self.progress.update(steps)
        self.progress.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")

    def close(self) -> None:
        self.progress.close()
        if self.metrics is not None:
            self.metrics.close()


# --------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------
def optimizer_step(
    run: Run, step: Step, batches: Iterator[torch.Tensor], steplog: StepLog
) -> torch.Tensor:
    """One optimiser step over this rank's micro-batches; returns their mean loss."""
    method, accum = run.method, run.order.accum
    run.optimizer.zero_grad(set_to_none=True)
    method.begin_step(step)
    loss_sum = torch.zeros((), device=run.device)
    for micro in range(accum):
        t = time.perf_counter()
        images = next(batches)
        steplog.waited(time.perf_counter() - t)
        last = micro == accum - 1
        sync = (
            contextlib.nullcontext()
            if run.world == 1 or last or not hasattr(run.forward, "no_sync")
            else run.forward.no_sync()
        )
        with sync:
            with autocast(run.device, run.dtype):
                loss = method.loss(images, step, micro, run.forward)
            run.scaler.scale(loss / accum).backward()
        loss_sum += loss.detach().float() / accum
    if method.config.clip_grad > 0:
        run.scaler.unscale_(run.optimizer)
        method.clip_gradients(method.config.clip_grad)  # global norm, or the method's rule
    method.before_optimizer_step(step)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    method.after_optimizer_step(step)
    return loss_sum


def gather(run: Run, loss: torch.Tensor, flags: PreemptionFlags) -> tuple[float, bool, bool]:
    """(mean loss over the ranks, any rank asked to checkpoint, any rank asked to stop)."""
    flag = torch.tensor([float(flags.save), float(flags.stop)], device=run.device)
    if run.world > 1:
        torch.distributed.all_reduce(loss)
        loss /= run.world
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return float(loss), bool(flag[0]), bool(flag[1])


def train_loop(
    run: Run,
    start: int,
    batches: Iterator[torch.Tensor],
    steplog: StepLog,
    checkpoints: Checkpoints,
) -> int:
    """Optimiser steps ``start .. total - 1``, checkpointing every ``checkpoint_every`` steps,
    on SIGUSR1/SIGTERM and at ``stop_after_steps``; 143 after SIGTERM, else 0.

    No host synchronisation in the steady state: the loss stays on the device and is read
    back (with the preemption flags of every rank) only every ``sync_every`` steps
    (the method's ``log_every``), at the last step and at checkpoint steps; a divergence
    is therefore caught at the next such step. In a single process a signal is acted on
    after the current step (its flag is a host value, reading it costs nothing); under DDP
    at the next synchronisation, where every rank learns it at the same step."""
    every = int(run.cfg.get("checkpoint_every") or 0)
    snap_every = int(run.cfg.get("snapshot_every") or 0)
    if snap_every and start == 0:
        snapshot(run, 0)
    stop_after = run.cfg.get("stop_after_steps")
    sync_every = run.runtime.sync_every if run.runtime is not None else 1
    with PreemptionFlags() as flags:
        t_sync, since = time.perf_counter(), 0
        for index in range(start, run.total):
            step = Step(index, run.total, run.order, run.optimizer)
            lr = run.schedule.apply(run.optimizer, index)
            loss_t = optimizer_step(run, step, batches, steplog)
            done, since = index + 1, since + 1
            if snap_every and (done % snap_every == 0 or done == run.total):
                snapshot(run, done)
            checkpoint_due = bool(every) and done % every == 0
            stop_due = stop_after is not None and int(stop_after) <= done < run.total
            signalled = run.world == 1 and (flags.save or flags.stop)
            if not (
                done % sync_every == 0
                or done == run.total
                or checkpoint_due
                or stop_due
                or signalled
            ):
                continue
            loss, save, stop = gather(run, loss_t, flags)
            if not np.isfinite(loss):
                raise SarsslError(
                    f"{run.method.name} pretraining diverged by step {index} (loss {loss}); "
                    "lower the lr"
                )
            now = time.perf_counter()
            steplog.step(step, loss, lr, now - t_sync, since)
            t_sync, since = now, 0
            stop_now = stop or stop_due
            if done < run.total and (checkpoint_due or save or stop_now):
                checkpoints.save(checkpoints.resume_path, done, steplog.lines)
                flags.save = False
            if stop_now:
                log.warning(
                    "stopping after step %d/%d (checkpoint %s)",
                    done,
                    run.total,
                    checkpoints.resume_path,
                )
                return 143 if stop else 0
    return 0


SNAPSHOT_DIR = "snapshots"
"""Folder (in ``--out-dir``) of the encoder snapshots taken every ``--snapshot-every`` steps."""


def snapshot(run: Run, step: int) -> None:
    """The encoder after ``step`` optimiser steps as
    ``OUT/snapshots/step{step:06d}/encoder.safetensors`` (+ its ``encoder.json``, loadable
    like the final encoder), by rank 0: what a probe over
    pretraining steps evaluates (the pretraining figure's k-NN curve). Reading the weights
    changes nothing in the run (no random draw, no state), so a run with snapshots trains
    exactly like one without."""
    from ..encoders import export_encoder

    if not run.is_main:
        return
    cfg = run.cfg
    stats = json.loads(Path(cfg["stats"]).read_text())
    export_encoder(
        run.method.encoder,
        Path(cfg["out_dir"]) / SNAPSHOT_DIR / f"step{step:06d}" / "encoder.safetensors",
        model_name=run.method.timm_name,
        model_kwargs=run.method.timm_kwargs,
        method=run.method.name,
        stats=stats,
        channels=list(CHANNELS),
        extra={"seed": int(cfg["seed"]), "steps": step},
    )


def export(run: Run, steplog: StepLog, start: int, wall: float, train_time: float) -> None:
    """``encoder.safetensors`` + ``encoder.json`` and ``run.json`` of a finished run."""
    from ..encoders import TIMM_DIR, export_encoder, export_timm_dir

    cfg, out_dir = run.cfg, Path(run.cfg["out_dir"])
    stats = json.loads(Path(cfg["stats"]).read_text())
    extra = {"seed": int(cfg["seed"]), "steps": run.total}
    export_encoder(
        run.method.encoder,
        out_dir / "encoder.safetensors",
        model_name=run.method.timm_name,
        model_kwargs=run.method.timm_kwargs,
        method=run.method.name,
        stats=stats,
        channels=list(CHANNELS),
        extra={**extra, "chips_dirs": [str(d) for d in cfg["chips_dirs"]]},
    )
    # the same encoder in timm's local layout: timm.create_model("local-dir:<out>/timm")
    export_timm_dir(
        run.method.encoder,
        out_dir / TIMM_DIR,
        model_kwargs=run.method.timm_kwargs,
        stats=stats,
        channels=list(CHANNELS),
        extra={**extra, "method": run.method.name},
    )
    write_json(
        out_dir / "run.json",
        run_record(
            {k: v for k, v in cfg.items() if k != "quiet"},
            fingerprint=run.fingerprint,
            final_loss=steplog.last_loss,
            wall_s=wall,
            data_time_s=steplog.data_time,
            data_share=steplog.data_time / max(train_time, 1e-12),
            resumed_from_step=start,
            torch_version=torch.__version__,
        ),
    )


def train(cfg: dict[str, Any]) -> int:
    """Run (or resume) one pretraining run described by ``cfg`` (see :func:`config_from_args`):
    0 when it finished or stopped at ``stop_after_steps``, 143 when stopped by SIGTERM."""
    t_start = time.time()
    run, data, mean_db, std_db = prepare(cfg)
    checkpoints = Checkpoints(run)
    start, history = checkpoints.resume()
    Path(cfg["out_dir"]).mkdir(parents=True, exist_ok=True)
    run.forward = distribute(run)
    stream_cfg = {**cfg, "loader_threads": run.runtime.loader_threads}
    stream_cfg["overlap"] = run.runtime.overlap
    batches = image_stream(
        data, run.order, start, run.total, run.device, mean_db, std_db, stream_cfg
    )
    steplog = StepLog(run, start, history)
    run.method.trainable.train()
    t_train = time.time()
    status = train_loop(run, start, batches, steplog, checkpoints)
    steplog.close()
    batches.close()  # stops the reader threads of an interrupted run
    train_time = time.time() - t_train
    stop_after = cfg.get("stop_after_steps")
    if status != 0 or (
        stop_after is not None and start < run.total and int(stop_after) < run.total
    ):
        return status
    checkpoints.save(checkpoints.final_path, run.total, steplog.lines)
    if run.is_main:
        export(run, steplog, start, time.time() - t_start, train_time)
        checkpoints.finished()
        log.info(
            "%s pretraining done: loss %.4f, %.1f s, encoder %s",
            run.method.name,
            steplog.last_loss,
            time.time() - t_start,
            Path(cfg["out_dir"]) / "encoder.safetensors",
        )
    if run.world > 1:
        torch.distributed.barrier()
    return 0


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method", required=True, choices=list(METHODS), help="self-supervised method"
    )
    parser.add_argument(
        "--chips-dir",
        required=True,
        nargs="+",
        action="extend",
        dest="chips_dirs",
        metavar="DIR",
        help="chip store(s); their train+val chips are used (never test)",
    )
    parser.add_argument("--stats", required=True, help="stats.json (per-channel mean/std)")
    parser.add_argument(
        "--hparams",
        default=None,
        help="JSON object or JSON/YAML file: config pretrain.backbone merged with "
        "pretrain.<method>; unset keys (all without --hparams) take the workflow schema's "
        "defaults",
    )
    parser.add_argument("--seed", type=int, required=True, help="seed of every random choice")
    parser.add_argument("--out-dir", required=True, help="output directory")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--max-steps", type=int, default=None, help="cap the number of optimiser steps (tests)"
    )
    parser.add_argument(
        "--loader-threads",
        type=int,
        default=0,
        help="reader threads of the batch loader (0 = auto: 2 on CPU, min(8, cores) on CUDA)",
    )
    parser.add_argument(
        "--deterministic",
        choices=["auto", "true", "false"],
        default="auto",
        help="deterministic kernels (auto: yes on CPU, no on CUDA: cuDNN autotuning, TF32)",
    )
    parser.add_argument(
        "--compile",
        choices=["auto", "true", "false"],
        default="auto",
        help="torch.compile the trained module (auto: the hyper-parameter compile on CPU, "
        "yes on CUDA)",
    )
    parser.add_argument(
        "--no-overlap",
        dest="overlap",
        action="store_false",
        help="stage each input batch when it is needed instead of one step ahead (debugging)",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0 = torch default)"
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="also checkpoint every N steps (to the resume directory; 0 = never)",
    )
    parser.add_argument(
        "--test-buffer",
        type=float,
        default=1.0,
        metavar="CHIPS",
        help="leave out of pretraining the chips within CHIPS chip sides of a test chip of "
        "their store, so an area both pretrained and fine-tuned on never shows pretraining "
        "its test chips' surroundings (default 1; 0 = every train/val chip)",
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=0,
        help="also export the encoder every N steps (and at steps 0 and the last) to "
        "OUT_DIR/snapshots/stepNNNNNN/encoder.safetensors, for probes over pretraining "
        "(0 = never)",
    )
    parser.add_argument(
        "--resume-dir",
        default=None,
        metavar="DIR",
        help="where checkpoints of an unfinished run go and a rerun resumes from (default: "
        "--out-dir); keep it outside a workflow's declared outputs. With a separate DIR a "
        "checkpoint of another configuration is ignored with a warning, and the file is "
        "removed after a successful finish",
    )
    parser.add_argument(
        "--stop-after-steps",
        type=int,
        default=None,
        help="checkpoint and stop after N steps, as if preempted (resume by rerunning)",
    )
    parser.add_argument(
        "--no-resume", dest="resume", action="store_false", help="ignore an existing checkpoint"
    )


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    for d in args.chips_dirs:
        if not Path(d).is_dir():
            raise SarsslError(f"--chips-dir {d}: not a directory")
    if not Path(args.stats).is_file():
        raise SarsslError(f"--stats {args.stats}: file not found")
    return {
        "method": args.method,
        "hparams": resolve_hparams(
            args.method, load_hparams(args.hparams) if args.hparams is not None else {}
        ),
        "seed": int(args.seed),
        "chips_dirs": [str(Path(d).resolve()) for d in args.chips_dirs],
        "stats": str(Path(args.stats).resolve()),
        "out_dir": str(args.out_dir),
        "resume_dir": str(args.resume_dir) if args.resume_dir else None,
        "device": args.device,
        "max_steps": args.max_steps,
        "loader_threads": args.loader_threads,
        "deterministic": args.deterministic,
        "compile": args.compile,
        "overlap": args.overlap,
        "threads": args.threads,
        "checkpoint_every": args.checkpoint_every,
        "snapshot_every": args.snapshot_every,
        "test_buffer": args.test_buffer,
        "stop_after_steps": args.stop_after_steps,
        "resume": args.resume,
    }


def run(args: argparse.Namespace) -> int:
    return train(config_from_args(args))
