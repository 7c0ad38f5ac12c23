"""Pretraining throughput benchmark: images/s, tokens/s, model FLOPs utilisation (MFU),
peak memory and the data loader's share of the step time.

Runs the real training step of :mod:`sarssl.selfsup.pretrain` (forward, backward, AdamW step; for
DINO also the multi-crop augmentation and the EMA teacher update) on a synthetic
12-channel float16 chip store (written to a temporary directory with
:func:`sarssl.data.store.write_store`) fed through pretraining's own input path:
``PretrainBatches`` + ``BatchLoader`` (raw float16 ``pread`` into reused, pinned-on-CUDA
buffers, copied to the GPU) + ``Normalize`` on the device. ``data_loader_share`` is the
time spent waiting for the next normalised batch / wall time.

On CPU the MFU needs ``--peak-tflops``: the peak of the cores the run uses, e.g.
``cores x GHz x FLOP/cycle`` (AVX-512 FMA: 2 units x 16 fp32 x 2 = 64 FLOP/cycle/core;
AVX2: 32), or a measured large-matmul rate (``--measure-cpu-peak`` does that: a
4096^2 fp32 ``torch.mm`` with the run's threads; an optimistic-but-honest practical peak).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on one training step
(matmuls/convolutions/attention, forward + backward), so MFU = counted FLOPs per second /
the device's peak (``--peak-tflops``; default 989 for an H100 in bf16 dense, unknown on
CPU unless given).

Examples::

    python benchmarks/pretrain.py --device cuda --dtype bf16 --batch-size 64 --steps 20
    python benchmarks/pretrain.py --device cpu --tiny --batch-size 8 --steps 3   # smoke test
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from sarssl.data.store import load_stats
from sarssl.engine import SeededBatchOrder, autocast, param_groups, step_generator
from sarssl.selfsup.batches import PretrainBatches, image_stream
from sarssl.selfsup.dino import MultiCropAugment, teacher_momentum
from sarssl.selfsup.pretrain import build_model, resolve_hparams

STUDY = {
    # the study's sizes: ViT-B/16 (768 wide, 12 layers, 12 heads) and ViT-S/16 (384, 12, 6)
    "mae": {
        "model_name": "vit_base_patch16_224",
        "patch_size": 16,
        "img_size": 448,
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
        "img_size": 448,
        "embed_dim": 384,
        "depth": 12,
        "num_heads": 6,
    },
}
TINY = {
    "model_name": "vit_tiny_patch16_224",
    "patch_size": 8,
    "embed_dim": 96,
    "depth": 4,
    "num_heads": 3,
    "img_size": 64,
    "decoder_dim": 64,
    "decoder_depth": 1,
    "decoder_heads": 4,
}


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


def synthetic_store(root: Path, n: int, size: int) -> tuple[Path, Path]:
    """A chip store of ``n`` random chips (train/val only) and its stats.json."""
    import numpy as np

    from sarssl import CHANNELS
    from sarssl.data.store import write_store

    rng = np.random.default_rng(0)
    x = rng.normal(-12.0, 3.0, size=(n, len(CHANNELS), size, size)).astype(np.float32)
    lc = np.zeros((n, size, size), np.uint8)
    import pandas as pd

    index = pd.DataFrame({"id": [f"chip{i}" for i in range(n)], "split": ["train"] * n})
    store = write_store(
        root / "store",
        x,
        lc,
        np.zeros((n, size, size), np.float32),
        index,
        area="bench",
        fractions=[1.0],
        seed=0,
    )
    stats = root / "stats.json"
    stats.write_text(
        json.dumps(
            {
                "channels": list(CHANNELS),
                "mean": [-12.0] * len(CHANNELS),
                "std": [3.0] * len(CHANNELS),
            }
        )
    )
    return store, stats


def measure_cpu_peak_tflops(threads: int, n: int = 4096, reps: int = 3) -> float:
    """Best fp32 GEMM rate of ``torch.mm`` (n x n) on ``threads`` threads, in TFLOP/s."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def bench(method: str, args: argparse.Namespace) -> dict:
    device = torch.device(
        args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    )
    arch = dict(TINY if args.tiny else STUDY[method])
    if args.img_size:
        arch["img_size"] = args.img_size
    size = int(arch["img_size"])
    hp = resolve_hparams(method, {**arch, "head_out_dim": 1024})
    torch.manual_seed(0)
    model, trainable, _, kwargs = build_model(method, hp, size)
    model.to(device)
    opt = torch.optim.AdamW(param_groups(trainable, 0.05), lr=1e-4, fused=device.type == "cuda")
    dtype = (
        args.dtype if device.type == "cuda" or args.dtype == "bf16" and args.cpu_bf16 else "fp32"
    )
    aug = MultiCropAugment(size, n_local=int(hp["local_crops"])) if method == "dino" else None
    n_steps = args.steps + args.warmup
    tmp = tempfile.TemporaryDirectory(prefix="sarssl-bench-")
    store, stats = synthetic_store(Path(tmp.name), args.batch_size * n_steps, size)
    data = PretrainBatches([str(store)], splits=("train",))
    order = SeededBatchOrder(
        data.n, args.batch_size, seed=0, block_rows=max(1, min(8, args.batch_size // 4))
    )
    mean, std = load_stats(str(stats))
    it = image_stream(
        data, order, 0, n_steps, device, mean, std, {"loader_threads": args.loader_threads}
    )

    fast: dict[str, torch.nn.Module] = {"m": model if method == "mae" else model.student}

    def step(images: torch.Tensor, i: int) -> torch.Tensor:
        with autocast(device, dtype):
            if method == "mae":
                noise = torch.rand(
                    images.shape[0], model.num_patches, generator=step_generator(0, i)
                ).to(device)
                loss, _, _ = fast["m"](images, noise=noise)
            else:
                loss = model(aug(images, step_generator(0, i)), 0, student=fast["m"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if method == "dino":
            model.update_teacher(teacher_momentum(i, 100))
        return loss

    from torch.utils.flop_counter import FlopCounterMode

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with FlopCounterMode(display=False) as counter:
        step(next(it), 0)
    flops_per_step = counter.get_total_flops()  # counted eagerly (compiled graphs hide ops)
    if args.compile:
        fast["m"] = torch.compile(fast["m"])
    for i in range(1, args.warmup):
        step(next(it), i)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    data_s = 0.0
    t0 = time.perf_counter()
    for i in range(args.steps):
        td = time.perf_counter()
        images = next(it)
        data_s += time.perf_counter() - td
        step(images, args.warmup + i)
    sync()
    wall = time.perf_counter() - t0
    it.close()
    tmp.cleanup()
    ips = args.batch_size * args.steps / wall
    tokens = (size // int(kwargs["patch_size"])) ** 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = (
        args.peak_tflops
        if args.peak_tflops
        else (peak_tflops(name) if device.type == "cuda" else None)
    )
    if peak is None and device.type == "cpu" and args.measure_cpu_peak:
        peak = measure_cpu_peak_tflops(torch.get_num_threads())
    achieved = flops_per_step * args.steps / wall
    return {
        "method": method,
        "model": arch["model_name"],
        "img_size": size,
        "device": name,
        "peak_tflops": peak,
        "dtype": dtype,
        "compile": bool(args.compile),
        "batch_size": args.batch_size,
        "images_per_s": round(ips, 2),
        "tokens_per_s": round(ips * tokens, 1),
        "tflops_per_s": round(achieved / 1e12, 4),
        "gflops_per_image": round(flops_per_step / args.batch_size / 1e9, 2),
        "mfu": round(achieved / (peak * 1e12), 4) if peak else None,
        # CUDA: peak allocated tensor memory; CPU: peak resident set size of the process
        "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if device.type == "cuda"
        else round(
            __import__("resource").getrusage(__import__("resource").RUSAGE_SELF).ru_maxrss / 2**20,
            2,
        ),
        "data_loader_share": round(data_s / wall, 4),
        "step_s": round(wall / args.steps, 4),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--method", choices=["mae", "dino", "both"], default="both")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument(
        "--warmup", type=int, default=2, help="untimed steps (the first one counts FLOPs)"
    )
    p.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument(
        "--img-size", type=int, default=None, help="override the chip size (448 in the study)"
    )
    p.add_argument(
        "--tiny", action="store_true", help="the demo's tiny ViT at 64 px (CPU smoke test)"
    )
    p.add_argument(
        "--loader-threads", type=int, default=2, help="reader threads of the batch loader"
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument(
        "--measure-cpu-peak", action="store_true", help="CPU MFU against a measured fp32 GEMM rate"
    )
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak TFLOP/s for MFU (default: bf16 table by GPU name; none on CPU)",
    )
    p.add_argument(
        "--cpu-bf16", action="store_true", help="use bf16 autocast on CPU too (code-path check)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the trained module")
    args = p.parse_args()
    args.warmup = max(1, args.warmup)
    if args.threads:
        torch.set_num_threads(args.threads)
    for method in ["mae", "dino"] if args.method == "both" else [args.method]:
        print(json.dumps(bench(method, args)), flush=True)


if __name__ == "__main__":
    main()
