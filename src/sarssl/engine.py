"""Training-loop utilities shared by pretraining and fine-tuning.

- seeding and per-step random generators that are a pure function of (seed, step, rank):
  a resumed run draws exactly the numbers an uninterrupted run would;
- AdamW parameter groups (no weight decay on norms, biases, position embeddings and the
  class token; optional layer-wise learning-rate decay for ViTs);
- linear warm-up + cosine learning-rate schedule;
- a seeded data order: epoch ``e`` visits the samples in
  ``numpy.random.default_rng([seed, e]).permutation(n)``; global batches are consecutive
  slices of it and each DDP rank takes its contiguous share of every global batch (the
  DistributedSampler idea, but aligned with the single-process batches), so resuming at
  step ``k`` just recomputes the order and skips the consumed batches;
- atomic checkpoints with every RNG state, holding only tensors and plain values and
  read back with ``torch.load(..., weights_only=True)`` (a file that would need anything
  else to unpickle is refused, never executed); metrics as JSON lines (+ TensorBoard if
  installed), signal handling for preemption, distributed set-up.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import random
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError, SarsslError
from .io import atomic_path

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# seeding
# --------------------------------------------------------------------------------------
def reuse_freed_memory(threshold: int = 1 << 30) -> bool:
    """Ask glibc to keep freed memory for reuse instead of returning it to the OS.

    PyTorch's CPU allocator hands large tensors straight to ``malloc``, which serves
    blocks above ``M_MMAP_THRESHOLD`` (128 KiB..32 MiB, adaptive) with fresh ``mmap``
    pages and unmaps them on free: every training step then pays a page fault per 4 KiB
    of every activation. On the shared demo VM this first-touch cost made a 16 MB tensor
    copy 3x slower than into reused memory. Raising ``M_MMAP_THRESHOLD`` and
    ``M_TRIM_THRESHOLD`` to ``threshold`` bytes keeps those blocks on the heap, where the
    next step reuses them. Returns False (and changes nothing) where glibc is absent.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, int(threshold))) and bool(
            libc.mallopt(m_trim_threshold, 2 * int(threshold))
        )
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch (all devices); optionally ask for deterministic kernels
    (CPU runs are then bit-reproducible; on GPU some kernels only warn)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if torch.backends.cudnn.is_available():
            torch.backends.cudnn.benchmark = False


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a pure function of the integer ``keys`` (NumPy SeedSequence)."""
    return int(
        np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0]
        >> np.uint64(1)
    )


def step_generator(*keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator seeded from ``keys`` (e.g. seed, step, rank)."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(*keys))
    return g


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG state as tensors and plain values (a checkpoint must load with
    ``torch.load(..., weights_only=True)``): Python's ``random`` as
    ``{"version", "state" (list of int), "gauss_next"}``, NumPy's legacy global generator
    as ``{"bit_generator", "key" (int64 tensor of the uint32 words), "pos", "has_gauss",
    "cached_gaussian"}``, torch's CPU generator (a uint8 tensor) and, when CUDA is
    initialised, the list of every device's state."""
    version, words, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {
            "version": int(version),
            "state": [int(w) for w in words],
            "gauss_next": gauss_next,
        },
        "numpy": {
            "bit_generator": str(name),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(w) for w in py["state"]), py["gauss_next"]))
    npy = state["numpy"]
    key = npy["key"].numpy() if isinstance(npy["key"], torch.Tensor) else npy["key"]
    np.random.set_state(
        (
            str(npy["bit_generator"]),
            np.asarray(key, dtype=np.uint32),
            int(npy["pos"]),
            int(npy["has_gauss"]),
            float(npy["cached_gaussian"]),
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))


# --------------------------------------------------------------------------------------
# optimiser and schedule
# --------------------------------------------------------------------------------------
NO_DECAY_KEYS = ("pos_embed", "cls_token", "reg_token", "mask_token", "dist_token")


def vit_layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay: embeddings 0, ``blocks.i`` -> i + 1,
    everything after the blocks (final norm, heads, decoders) ``num_layers + 1``."""
    name = name.removeprefix("module.").removeprefix("backbone.").removeprefix("encoder.")
    if name.startswith(("patch_embed", "cls_token", "pos_embed", "reg_token")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_layers + 1


def param_groups(
    model: nn.Module,
    weight_decay: float,
    layer_decay: float = 1.0,
    num_layers: int | None = None,
    backbone_prefix: str = "backbone.",
    backbone_lr_scale: float = 1.0,
) -> list[dict[str, Any]]:
    """AdamW parameter groups; each carries ``lr_scale`` for the scheduler.

    No weight decay on 1-D parameters (norm weights, biases) and on position
    embeddings/tokens. With ``layer_decay < 1`` (fine-tuning a ViT), parameters under
    ``backbone_prefix`` get ``lr_scale = layer_decay ** (num_layers + 1 - layer_id)``
    (BEiT/MAE fine-tuning recipe); all other parameters (the head) keep scale 1.
    ``backbone_lr_scale`` further multiplies every backbone parameter's scale (a
    pretrained encoder is usually fine-tuned with a smaller lr than its new head).
    """
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim <= 1 or any(k in name for k in NO_DECAY_KEYS)
        scale = backbone_lr_scale if name.startswith(backbone_prefix) else 1.0
        if layer_decay < 1.0 and num_layers is not None and name.startswith(backbone_prefix):
            scale *= layer_decay ** (
                num_layers + 1 - vit_layer_id(name[len(backbone_prefix) :], num_layers)
            )
        key = (no_decay, scale)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": scale,
            }
        groups[key]["params"].append(p)
    return list(groups.values())


class WarmupCosine:
    """Learning rate at optimiser step ``t``: ``base * t / warmup`` during the warm-up,
    then a half cosine from ``base`` to ``base * min_ratio`` at ``total`` steps; each
    parameter group is further multiplied by its ``lr_scale``."""

    def __init__(self, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.0):
        self.base_lr = float(base_lr)
        self.warmup_steps = int(warmup_steps)
        self.total_steps = max(1, int(total_steps))
        self.min_ratio = float(min_ratio)
        self.step_count = 0

    def lr_at(self, step: int) -> float:
        if self.warmup_steps > 0 and step < self.warmup_steps:
            return self.base_lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.base_lr * (
            self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        )

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.step_count = step
        return lr

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


# --------------------------------------------------------------------------------------
# data order
# --------------------------------------------------------------------------------------
class SeededBatchOrder:
    """Deterministic, resumable, shardable order of micro-batches.

    ``global_batch`` samples per optimiser step, split over ``world`` ranks and
    ``accum`` accumulation micro-steps (so each micro-batch holds
    ``global_batch / (world * accum)`` samples). Epoch ``e`` uses the permutation drawn
    from ``default_rng([seed, e])``; incomplete final batches are dropped.

    With ``block_rows > 1`` the permutation moves blocks of ``block_rows`` consecutive
    sample indices instead of single samples (the block shuffle of
    :func:`sarssl.data.loaders.block_batches`): a block of neighbouring rows of a chip store
    is then one sequential read. ``block_rows = 1`` is the plain per-sample shuffle.
    """

    def __init__(
        self,
        n: int,
        global_batch: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        accum: int = 1,
        block_rows: int = 1,
    ):
        if global_batch % (world * accum):
            raise SarsslError(
                f"batch size {global_batch} must be divisible by world size {world} "
                f"x accumulation steps {accum}"
            )
        self.n, self.global_batch, self.seed = int(n), int(global_batch), int(seed)
        self.rank, self.world, self.accum = int(rank), int(world), int(accum)
        self.micro = global_batch // (world * accum)
        self.steps_per_epoch = self.n // self.global_batch
        if self.steps_per_epoch == 0:
            raise SarsslError(f"{n} samples are fewer than one batch of {global_batch}")
        if int(block_rows) < 1:
            raise SarsslError(f"block_rows must be >= 1, got {block_rows}")
        self.block_rows = int(block_rows)
        self._cache: tuple[int, np.ndarray] | None = None

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The visiting order of epoch ``epoch`` (cached for the last epoch asked for)."""
        if self._cache is not None and self._cache[0] == int(epoch):
            return self._cache[1]
        rng = np.random.default_rng([self.seed, int(epoch)])
        if self.block_rows == 1:
            order = rng.permutation(self.n)
        else:
            starts = np.arange(0, self.n, self.block_rows)
            order = np.concatenate(
                [
                    np.arange(s, min(s + self.block_rows, self.n))
                    for s in starts[rng.permutation(starts.size)]
                ]
            )
        self._cache = (int(epoch), order)
        return order

    def global_indices(self, step: int) -> np.ndarray:
        """Sample indices of the whole global batch of optimiser step ``step``."""
        epoch, i = divmod(int(step), self.steps_per_epoch)
        return self.epoch_order(epoch)[i * self.global_batch : (i + 1) * self.global_batch]

    def positions(self, micro_step: int) -> slice:
        """Positions inside the global batch owned by this rank at accumulation ``micro_step``."""
        share = self.global_batch // self.world
        start = self.rank * share + micro_step * self.micro
        return slice(start, start + self.micro)

    def micro_batches(self, start_step: int, end_step: int) -> Iterator[list[int]]:
        """Index lists of this rank's micro-batches from ``start_step`` (inclusive)."""
        for step in range(start_step, end_step):
            g = self.global_indices(step)
            for a in range(self.accum):
                yield g[self.positions(a)].tolist()


# --------------------------------------------------------------------------------------
# distributed
# --------------------------------------------------------------------------------------
def init_distributed(device: torch.device) -> tuple[int, int]:
    """``(rank, world_size)``; initialises the process group when launched by torchrun
    (``WORLD_SIZE > 1``): gloo on CPU, nccl on GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda (the local rank's GPU under torchrun) if available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SarsslError("--device cuda: no CUDA device is available")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    if name != "cpu":
        raise SarsslError(f"--device {name!r}: expected auto, cpu or cuda")
    return torch.device("cpu")


def autocast(device: torch.device, dtype: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context: bf16/fp16 autocast on CUDA, bf16 autocast on CPU when asked
    for explicitly (``dtype="bf16"``; it exercises the GPU code path in CPU-only tests), plain
    fp32 otherwise (the CPU default, bit-reproducible)."""
    if device.type == "cuda" and dtype in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)
    if device.type == "cpu" and dtype == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 on CPU. An explicit ``bf16`` is kept on CPU (CPU
    autocast supports it); ``fp16`` needs CUDA (loss scaling) and falls back to fp32."""
    if dtype == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if dtype not in ("bf16", "fp16", "fp32"):
        raise SarsslError(f"dtype {dtype!r}: expected auto, bf16, fp16 or fp32")
    if device.type == "cuda" or dtype == "bf16":
        return dtype
    return "fp32"


# --------------------------------------------------------------------------------------
# checkpoints, metrics, signals
# --------------------------------------------------------------------------------------
#: Leaf types a checkpoint may hold besides tensors (what ``weights_only=True`` rebuilds
#: without running code; containers are dict, list and tuple).
PLAIN_TYPES = (str, int, float, bool, type(None))


def check_plain(obj: Any, where: str = "state") -> None:
    """Raise TypeError naming the first entry of ``obj`` that is not a tensor, a plain
    value or a dict/list/tuple of them (with str or int keys)."""
    if isinstance(obj, torch.Tensor) or type(obj) in PLAIN_TYPES:
        return
    if type(obj) in (dict, collections.OrderedDict):
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} ({type(k).__name__}) is not a str or int")
            check_plain(v, f"{where}[{k!r}]")
        return
    if type(obj) in (list, tuple, torch.Size):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where}: a {type(obj).__module__}.{type(obj).__qualname__} cannot go into a checkpoint "
        "(only tensors, str, int, float, bool, None, and dicts/lists/tuples of them)"
    )


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and an atomic rename.

    ``state`` must hold only tensors and plain metadata (:func:`check_plain`, checked
    before anything is written), so that :func:`load_checkpoint` can read it back with
    ``weights_only=True``.
    """
    check_plain(state)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`, read with ``weights_only=True``.

    A file that needs anything beyond tensors and plain values to unpickle (a planted
    pickle whose ``__reduce__`` would run code, a checkpoint of an older sarssl that kept
    NumPy arrays) is refused with an InputError naming it; nothing in it is executed.
    """
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about the protocol of foreign pickles
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"WeightsUnpickler error:\s*([^\n]+?)(?:\.(?:\s|$)|\n|$)", str(exc))
        reason = found.group(1).strip() if found else str(exc).splitlines()[0]
        raise InputError(
            f"{path}: not a plain-tensor checkpoint: refusing to unpickle it ({reason}); sarssl "
            "checkpoints hold only tensors and plain values, so this file was written by something "
            "else (or by an older sarssl): delete it to start over"
        ) from None
    except Exception as exc:  # corrupt/truncated file
        raise InputError(f"{path}: cannot read checkpoint ({exc})") from exc
    if not isinstance(state, dict):
        raise InputError(f"{path}: not a sarssl checkpoint ({type(state).__name__}, not a dict)")
    return state


class MetricsLog:
    """Append-only ``metrics.jsonl`` (one JSON object per logged step) + TensorBoard.

    On resume (``resume_step`` = optimiser steps completed at the checkpoint) the file is
    rewritten so that it reads as one uninterrupted run: from ``history`` (the lines the
    checkpoint carries, see :attr:`lines`) when given, which also restores a file that was
    deleted meanwhile (Snakemake removes the declared outputs of a job before rerunning
    it), else from the existing file's lines of steps up to ``resume_step``.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        resume_step: int | None = None,
        tensorboard: bool = True,
        history: list[str] | None = None,
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = self.kept_lines(resume_step, history)
        with atomic_path(self.path) as tmp:
            tmp.write_text("".join(k + "\n" for k in self.lines))
        self.fh = open(self.path, "a")
        self.tb = self.tensorboard(resume_step) if tensorboard else None

    def kept_lines(self, resume_step: int | None, history: list[str] | None) -> list[str]:
        """The lines of steps up to ``resume_step`` (from ``history``, else the existing file)."""
        if resume_step is None:
            return []
        if history is None:
            history = self.path.read_text().splitlines() if self.path.exists() else []
        return [
            line
            for line in history
            if line.strip() and json.loads(line).get("step", -1) <= resume_step
        ]

    def tensorboard(self, resume_step: int | None) -> Any:
        """A SummaryWriter beside the file, or None when tensorboard is not installed."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: optional
            log.info("tensorboard is not installed: metrics go to %s only", self.path)
            return None
        # on resume, purge_step makes TensorBoard drop the events of the steps after the
        # checkpoint that an interrupted run had already written
        purge = resume_step + 1 if resume_step is not None else None
        return SummaryWriter(str(self.path.parent / "tensorboard"), purge_step=purge)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record)
        self.lines.append(line)
        self.fh.write(line + "\n")
        self.fh.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        self.fh.close()
        if self.tb is not None:
            self.tb.close()


class PreemptionFlags:
    """Context manager: SIGTERM requests checkpoint-and-exit, SIGUSR1 checkpoint-and-continue.

    The handlers only set flags; the training loop acts on them between steps, so a
    checkpoint is never taken in the middle of an update.
    """

    def __init__(self) -> None:
        self.stop = False
        self.save = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, _frame: Any) -> None:
        log.warning("received signal %d: checkpointing at the end of this step", signum)
        self.save = True
        if signum == signal.SIGTERM:
            self.stop = True

    def __enter__(self) -> PreemptionFlags:
        for sig in (signal.SIGTERM, getattr(signal, "SIGUSR1", None)):
            if sig is None:
                continue
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def load_hparams(text: str) -> dict[str, Any]:
    """``--hparams``: a JSON object string, or the path of a JSON or YAML file."""
    text = text.strip()
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SarsslError(f"--hparams: invalid JSON ({exc})") from exc
    else:
        path = Path(text)
        if not path.is_file():
            raise SarsslError(f"--hparams {text}: neither a JSON object nor an existing file")
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                obj = yaml.safe_load(path.read_text())
            else:
                obj = json.loads(path.read_text())
        except Exception as exc:
            raise SarsslError(f"{path}: cannot parse hyper-parameters ({exc})") from exc
    if not isinstance(obj, dict):
        raise SarsslError(f"--hparams: expected a mapping, got {type(obj).__name__}")
    return obj


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
