"""Pretraining throughput of the workflow's own training loop: images/s, model FLOPs
utilisation (MFU) against the device's bf16 peak, the input loader's share of the step
time and peak memory, with the store's pages cold and warm.

What runs is what ``sarssl pretrain`` runs: :func:`sarssl.selfsup.pretrain.prepare`
(device defaults of :func:`~sarssl.selfsup.pretrain.resolve_runtime`: on CUDA bf16,
``torch.compile``, fused AdamW, fast kernels), :func:`~sarssl.selfsup.pretrain.distribute`,
:func:`~sarssl.selfsup.batches.image_stream` (threads ``pread`` the raw chips into reused
pinned buffers; the next batch is copied, decoded and normalised on a side CUDA stream) and
:func:`~sarssl.selfsup.pretrain.train_loop` (host synchronisation every ``--log-every``
steps), on a chip store written by :class:`sarssl.data.store.StoreWriter` in the format
``sarssl chips`` writes (``--store-dtype float16 | uint16 | uint8``; synthetic dB values).

Phases: ``--warmup`` untimed steps (compilation, autotuning), then ``--steps`` timed steps
with the store's pages dropped from the page cache first (``cold``:
``posix_fadvise(DONTNEED)`` after an ``fsync``; these steps read chips no earlier step
read), then ``--steps`` timed steps after reading the whole store once (``warm``).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one eager training
step (forward + backward of the method's loss, matmuls/convolutions/attention), so MFU =
counted FLOPs per second / the bf16 dense peak of the GPU (:data:`PEAK_BF16_TFLOPS`, by
device name; ``--peak-tflops`` overrides). On the CPU MFU is reported as ``n/a`` unless
``--peak-tflops`` is given.

Examples::

    python benchmarks/pretrain.py --device cuda            # study sizes, MAE then DINO
    python benchmarks/pretrain.py --device cuda --method mae --store-dtype uint8
    python benchmarks/pretrain.py --device cpu --tiny --steps 3   # smoke test (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

STUDY = {
    # the study's sizes: ViT-B/16 (768 wide, 12 layers, 12 heads) and ViT-S/16 (384, 12, 6)
    "mae": {
        "model_name": "vit_base_patch16_224",
        "patch_size": 16,
        "embed_dim": 768,
        "depth": 12,
        "num_heads": 12,
        "decoder_dim": 512,
        "decoder_depth": 1,
        "decoder_heads": 16,
    },
    "dino": {
        "model_name": "vit_small_patch16_224",
        "patch_size": 16,
        "embed_dim": 384,
        "depth": 12,
        "num_heads": 6,
        "head_out_dim": 1024,
    },
}
STUDY_SIZE = 448
GPU_BATCH = {"mae": 128, "dino": 64}
"""Default global batch on CUDA (fits an 80 GB H100 in bf16 at 448 px)."""
TINY = {
    "model_name": "vit_tiny_patch16_224",
    "patch_size": 8,
    "embed_dim": 96,
    "depth": 4,
    "num_heads": 3,
    "decoder_dim": 64,
    "decoder_depth": 1,
    "decoder_heads": 4,
    "head_out_dim": 256,
}
TINY_SIZE = 64

PEAK_BF16_TFLOPS = {
    # dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets
    "H200": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A10G": 70.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L4": 121.0,
    "RTX 4090": 165.0,
    "V100": 125.0,  # fp16 (no bf16 on Volta)
}


def peak_tflops(device_name: str) -> float | None:
    """Peak dense bf16 TFLOP/s of a GPU from its name (longest matching key), else None."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in device_name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


# --------------------------------------------------------------------------------------
# the store and the page cache
# --------------------------------------------------------------------------------------
def synthetic_store(root: Path, n: int, size: int, dtype: str) -> tuple[Path, Path]:
    """A chip store of ``n`` train chips (synthetic dB, a little no data) written by
    ``StoreWriter`` as ``sarssl chips`` writes it, and its ``stats.json``."""
    import pandas as pd

    from sarssl.data.store import StoreWriter
    from sarssl.io import atomic_dir
    from sarssl.vocabulary import CHANNELS

    rng = np.random.default_rng(0)
    base = rng.normal(-12.0, 3.0, size=(16, len(CHANNELS), size, size)).astype(np.float32)
    base[:, :, :2, :2] = np.nan
    out = root / f"store_{dtype}"
    with atomic_dir(out) as tmp:
        w = StoreWriter(tmp, n, size, CHANNELS, dtype=dtype)
        for s in range(0, n, 16):
            k = min(16, n - s)
            w.x[s : s + k] = base[:k] + np.float32(0.01 * s)
        w.landcover[:] = 0
        w.treecover[:] = 10.0
        index = pd.DataFrame({"id": [f"c{i}" for i in range(n)], "split": ["train"] * n})
        w.finish(index, resolution=10.0, area="bench")
        del w
    stats = root / "stats.json"
    stats.write_text(
        json.dumps({"channels": list(CHANNELS), "mean": [-12.0] * 12, "std": [3.0] * 12})
    )
    return out, stats


def drop_page_cache(store: Path) -> None:
    """Evict the store's files from the page cache (flushed first: dirty pages stay)."""
    for name in ("x.npy", "landcover.npy", "treecover.npy"):
        fd = os.open(store / name, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm_page_cache(store: Path) -> None:
    """Read the store's chip array once (into the page cache)."""
    with open(store / "x.npy", "rb", buffering=0) as fh:
        while fh.read(1 << 24):
            pass


# --------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------
class NoCheckpoints:
    """Stands in for :class:`sarssl.selfsup.pretrain.Checkpoints`: the timed phases end
    at ``stop_after_steps`` without writing a checkpoint into the timing."""

    resume_path = Path(os.devnull)

    def save(self, path: Path, step: int, metrics: list[str]) -> None:
        pass


def count_flops(run, data, mean, std) -> int:
    """FLOPs of one eager training step (forward + backward, this rank's micro-batches)."""
    from torch.utils.flop_counter import FlopCounterMode

    from sarssl.engine import autocast
    from sarssl.selfsup.batches import image_stream
    from sarssl.selfsup.method import Step

    it = image_stream(data, run.order, 0, 1, run.device, mean, std, {"loader_threads": 1})
    images = [next(it) for _ in range(run.order.accum)]
    it.close()
    step = Step(0, run.total, run.order, run.optimizer)
    run.method.begin_step(step)
    with FlopCounterMode(display=False) as counter:
        for micro, x in enumerate(images):
            with autocast(run.device, run.dtype):
                loss = run.method.loss(x, step, micro, run.method.trainable)
            loss.backward()
    run.optimizer.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def bench(method: str, args: argparse.Namespace, root: Path) -> list[dict]:
    from sarssl.selfsup import pretrain as P
    from sarssl.selfsup.batches import image_stream

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"
    arch = dict(TINY if args.tiny else STUDY[method])
    size = args.img_size or (TINY_SIZE if args.tiny else STUDY_SIZE)
    batch = args.batch_size or (GPU_BATCH[method] if cuda and not args.tiny else 8)
    n = batch * (args.warmup + args.steps)  # the cold phase reads chips never read before
    store, stats = synthetic_store(root / method, n, size, args.store_dtype)
    hp = {**arch, "batch_size": batch, "epochs": 1000, "log_every": args.log_every}
    if args.dtype != "auto":
        hp["dtype"] = args.dtype
    total = args.warmup + 2 * args.steps
    cfg = {
        "method": method,
        "hparams": P.resolve_hparams(method, hp),
        "seed": 0,
        "chips_dirs": [str(store)],
        "stats": str(stats),
        "out_dir": str(root / method / "out"),
        "device": device,
        "max_steps": total,
        "loader_threads": args.loader_threads,
        "deterministic": args.deterministic,
        "compile": args.compile,
        "overlap": not args.no_overlap,
        "threads": args.threads,
        "stop_after_steps": args.warmup,
        "quiet": True,
    }
    run, data, mean, std = P.prepare(cfg)
    Path(cfg["out_dir"]).mkdir(parents=True, exist_ok=True)
    flops_per_step = count_flops(run, data, mean, std)
    checkpoints = NoCheckpoints()  # the phases stop like a preempted run, without writing
    run.forward = P.distribute(run)
    stream_cfg = {**cfg, "loader_threads": run.runtime.loader_threads}
    stream_cfg["overlap"] = run.runtime.overlap
    batches = image_stream(data, run.order, 0, run.total, run.device, mean, std, stream_cfg)
    steplog = P.StepLog(run, 0, None)
    run.method.trainable.train()
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    # warm-up: compilation, autotuning (stops at --warmup with a checkpoint, untimed)
    P.train_loop(run, 0, batches, steplog, checkpoints)
    name = torch.cuda.get_device_name(run.device) if cuda else "cpu"
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    rows = []
    start = args.warmup
    for phase in ("cold", "warm"):
        (drop_page_cache if phase == "cold" else warm_page_cache)(store)
        run.cfg["stop_after_steps"] = start + args.steps if phase == "cold" else None
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(run.device)
        data_before = steplog.data_time
        t0 = time.perf_counter()
        P.train_loop(run, start, batches, steplog, checkpoints)
        sync()
        wall = time.perf_counter() - t0
        start += args.steps
        ips = batch * args.steps / wall
        achieved = flops_per_step * args.steps / wall
        rows.append(
            {
                "method": method,
                "phase": phase,
                "model": arch["model_name"],
                "img_size": size,
                "device": name,
                "store_dtype": args.store_dtype,
                "bytes_per_chip": data.stores[0].store.meta["bytes_per_chip_x"],
                "batch_size": batch,
                "runtime": {k: v for k, v in run.cfg["runtime"].items() if k != "device"},
                "images_per_s": round(ips, 2),
                "step_s": round(wall / args.steps, 4),
                "gflops_per_image": round(flops_per_step / batch / 1e9, 2),
                "tflops_per_s": round(achieved / 1e12, 4),
                "peak_tflops_bf16": peak,
                "mfu": round(achieved / (peak * 1e12), 4) if peak else "n/a",
                "loader_share": round((steplog.data_time - data_before) / wall, 4),
                "input_gb_per_s": round(
                    ips * data.stores[0].store.meta["bytes_per_chip_x"] / 1e9, 3
                ),
                # CUDA: peak allocated tensor memory of the phase; CPU: peak RSS of the process
                "peak_memory_gib": round(torch.cuda.max_memory_allocated(run.device) / 2**30, 2)
                if cuda
                else round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            }
        )
    steplog.close()
    batches.close()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", choices=["mae", "dino", "both"], default="both")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="global batch (default: 128 MAE / 64 DINO on CUDA, 8 on CPU)",
    )
    p.add_argument("--steps", type=int, default=8, help="timed steps per phase (cold, warm)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation)")
    p.add_argument("--log-every", type=int, default=10, help="steps between host syncs")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    p.add_argument("--store-dtype", choices=["float16", "uint16", "uint8"], default="float16")
    p.add_argument("--img-size", type=int, default=0, help="chip size (default 448; 64 --tiny)")
    p.add_argument("--tiny", action="store_true", help="the demo's tiny ViT at 64 px (CPU)")
    p.add_argument("--loader-threads", type=int, default=0, help="0 = the run's default")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--deterministic", choices=["auto", "true", "false"], default="auto")
    p.add_argument("--compile", choices=["auto", "true", "false"], default="auto")
    p.add_argument("--no-overlap", action="store_true", help="stage batches synchronously")
    p.add_argument(
        "--peak-tflops", type=float, default=None, help="device peak TFLOP/s for the MFU"
    )
    p.add_argument("--tmp-dir", default=None, help="where the synthetic store is written")
    args = p.parse_args()
    args.warmup = max(1, args.warmup)
    if args.threads:
        torch.set_num_threads(args.threads)
    for method in ["mae", "dino"] if args.method == "both" else [args.method]:
        with tempfile.TemporaryDirectory(prefix="sarssl-bench-", dir=args.tmp_dir) as tmp:
            for row in bench(method, args, Path(tmp)):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
