"""Benchmarks of the composite / chip-store stages (issue 4 acceptance).

    python benchmarks/chips.py [--scenes 4] [--size 2048] [--chips 2000] [--chip-size 448]
        [--repeats 3] [--cache-dir benchmarks/.cache/chips] [--clean-cache]
        [--skip-composite] [--skip-loader] [--memory-chips 320]

1. Compositing throughput in output megapixels (12 channels) per second, end to end
   (read, composite, write the COG) and for the compositing pass alone (read +
   composite + block-wise write, i.e. without the final COG encoding), mean and median,
   DEFLATE and ZSTD, in a fresh subprocess each.
2. Peak memory (``ru_maxrss`` of that subprocess) of compositing N and 2N scenes:
   streaming keeps it flat.
3. Loader throughput (:mod:`sarssl.data.loaders`) over a synthetic store of ``--chips``
   chips of 12 x S x S float16 (2,000 x 448^2 = 9.6 GB, kept in the git-ignored
   ``--cache-dir`` between runs; ``--clean-cache`` deletes it at the end) in chips/s and
   MB/s of the float16 images: the raw-batch path (``ChipBatches`` through
   ``DataLoader(batch_size=None)`` with 2 workers, and ``BatchLoader`` with 2 and 1
   threads), and ``load_chips`` (the first ``--memory-chips`` chips into memory,
   normalised: fine-tuning and figures). Each is run ``--repeats`` times: best and
   median, with the load average.
4. The rate one GPU needs for MAE ViT-B/16 pretraining at 448 px and whether the
   store's per-core throughput x 16 cores meets it.

Prints a small table; nothing here is used by the workflow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_scenes(directory: Path, n: int, size: int, seed: int = 0) -> list[Path]:
    """``n`` synthetic scenes (``size`` x ``size``) spread over the seasons of 2021."""
    import rasterio.shutil  # noqa: F401

    from sarssl.io import write_geotiff
    from sarssl.sar.grid import area_grid

    g = area_grid((12.46, 41.96, 12.47, 41.97), 10.0)
    from affine import Affine

    transform = Affine(10.0, 0, g.transform.c, 0, -10.0, g.transform.f)
    rng = np.random.default_rng(seed)
    base = rng.normal(-12, 2, size=(2, size, size)).astype(np.float32)
    months = [1, 4, 7, 10]
    paths = []
    for i in range(n):
        data = base + np.float32(rng.normal(0, 1))
        data[:, : size // 50] = np.nan
        p = directory / f"scene{i:03d}.tif"
        write_geotiff(
            p,
            data,
            crs=g.crs,
            transform=transform,
            nodata=float("nan"),
            band_names=["VV", "VH"],
            tags={"ACQUISITION_START": dt.datetime(2021, months[i % 4], 1 + i // 4).isoformat()},
            cog=False,
        )
        paths.append(p)
    return paths


def composite_child(args: argparse.Namespace) -> None:
    """Run one compositing job and print its wall/CPU time and peak RSS as JSON."""
    import os
    import resource

    from sarssl.data.composite import composite

    scenes = sorted(Path(args.child_dir).glob("scene*.tif"))[: args.child_n]
    out = Path(args.child_dir) / f"out_{args.child_n}_{args.child_method}_{args.child_compress}"
    t0, c0 = time.perf_counter(), os.times()
    summary = composite(
        scenes,
        2021,
        out.with_suffix(".tif"),
        Path(f"{out}_count.tif"),
        method=args.child_method,
        compress=args.child_compress,
        progress=False,
    )
    wall = time.perf_counter() - t0
    c1 = os.times()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.with_suffix(".tif").unlink()
    Path(f"{out}_count.tif").unlink()
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": (c1.user + c1.system) - (c0.user + c0.system),
                "composite_s": summary["seconds"]["composite"],
                "peak_rss_mb": rss_kb / 1024,
            }
        )
    )


def run_child(directory: Path, n: int, method: str, compress: str = "deflate") -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child-dir",
        str(directory),
        "--child-n",
        str(n),
        "--child-method",
        method,
        "--child-compress",
        compress,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_store(directory: Path, n: int, size: int) -> Path:
    """A synthetic chip store of ``n`` chips written through StoreWriter."""
    import pandas as pd

    from sarssl.data.store import StoreWriter
    from sarssl.vocabulary import CHANNELS

    rng = np.random.default_rng(0)
    block = rng.normal(-12, 3, size=(16, len(CHANNELS), size, size)).astype(np.float16)
    w = StoreWriter(directory, n, size)
    for s in range(0, n, 16):
        k = min(16, n - s)
        w.x[s : s + k] = block[:k]
        w.landcover[s : s + k] = 3
        w.treecover[s : s + k] = 40.0
    side = size * 10.0
    index = pd.DataFrame(
        {
            "id": [f"32633_{i * side:.0f}_0" for i in range(n)],
            "split": "train",
            "x0": np.arange(n) * side,
            "y0": -side,
            "x1": np.arange(n) * side + side,
            "y1": 0.0,
            "band": 0,
            "valid_fraction": 1.0,
            "landcover_majority": 3,
            "treecover_mean": 40.0,
        }
    )
    w.finish(index, resolution=10.0, crs="EPSG:32633", area="bench")
    return directory


def _timed(loader, key: str, per_chip: int, limit: int | None = None) -> dict:
    n = 0
    t0 = time.perf_counter()
    for b in loader:
        n += b[key].shape[0]
        if limit is not None and n >= limit:
            break
    wall = time.perf_counter() - t0
    return {
        "chips": n,
        "wall_s": wall,
        "chips_per_s": n / wall,
        "mb_per_s": n * per_chip / wall / 1e6,
    }


def chips_in_memory(store: Path, limit: int) -> dict:
    """load_chips of the first ``limit`` chips, normalised (fine-tuning's and the figures' path)."""
    from sarssl.data.loaders import load_chips
    from sarssl.data.store import ChipStore

    st = ChipStore(store)
    stats = {"mean": [-12.0] * len(st.channels), "std": [3.0] * len(st.channels)}
    t0 = time.perf_counter()
    chips = load_chips(st, np.arange(min(limit, st.n)), arrays=("x",), stats=stats)
    wall = time.perf_counter() - t0
    n = len(chips)
    return {
        "chips": n,
        "wall_s": wall,
        "chips_per_s": n / wall,
        "mb_per_s": n * st.meta["bytes_per_chip_x"] / wall / 1e6,
    }


def raw_dataloader(store: Path, workers: int, batch: int, epoch: int) -> dict:
    """Raw float16 batches of contiguous blocks through DataLoader(batch_size=None)."""
    import torch
    from torch.utils.data import DataLoader

    from sarssl.data.loaders import ChipBatches

    ds = ChipBatches(store, batch_size=batch, seed=0, labels=False)
    ds.set_epoch(epoch)
    loader = DataLoader(
        ds,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2 if workers else None,
        pin_memory=torch.cuda.is_available(),
    )
    return _timed(loader, "x", ds.store.meta["bytes_per_chip_x"])


def raw_batchloader(store: Path, threads: int, batch: int, epoch: int) -> dict:
    from sarssl.data.loaders import BatchLoader, ChipBatches

    ds = ChipBatches(store, batch_size=batch, seed=0, labels=False)
    loader = BatchLoader(ds, threads=threads, prefetch=2)
    loader.epoch = epoch
    return _timed(loader, "x", ds.store.meta["bytes_per_chip_x"])


def normalize_cost(store: Path, batch: int) -> dict:
    """CPU time of the consumer-side Normalize on one raw batch (on a GPU it is ~free)."""
    import torch

    from sarssl.data.loaders import ChipBatches
    from sarssl.data.normalize import Normalize

    ds = ChipBatches(store, batch_size=batch, seed=0, labels=False)
    x = ds[0]["x"]
    norm = Normalize(np.full(12, -12.0), np.full(12, 3.0))
    with torch.no_grad():
        norm(x)
        t0 = time.perf_counter()
        norm(x)
        wall = time.perf_counter() - t0
    return {"chips_per_s": x.shape[0] / wall}


def mae_requirement(
    img: int = 448,
    patch: int = 16,
    channels: int = 12,
    mask_ratio: float = 0.75,
    mfu: float = 0.40,
    peak_tflops: float = 990.0,
) -> dict:
    """Images/s one H100 trains MAE ViT-B/16 at, from FLOPs ~ 3 x forward FLOPs.

    Forward ~ 2 x params x tokens per transformer (+ attention 4 x L x N^2 x d): the
    ViT-B encoder (12 blocks, d 768, ~85 M block params + patch embedding) on the 25 %
    visible tokens, the MAE decoder (8 blocks, d 512, ~25 M params + prediction head)
    on all tokens.
    """
    n = (img // patch) ** 2
    vis = int(round(n * (1 - mask_ratio)))
    enc_params = 12 * 12 * 768**2 + channels * patch * patch * 768
    dec_params = 8 * 12 * 512**2 + 512 * channels * patch * patch
    fwd = 2 * enc_params * vis + 4 * 12 * vis**2 * 768 + 2 * dec_params * n + 4 * 8 * n**2 * 512
    rate = mfu * peak_tflops * 1e12 / (3 * fwd)
    return {"tokens": n, "visible": vis, "gflop_fwd": fwd / 1e9, "images_per_s": rate}


def _stats(values: list[float]) -> str:
    return f"best {max(values):.0f}, median {float(np.median(values)):.0f}"


def main() -> None:
    import os

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scenes", type=int, default=4, help="N (memory is compared for N and 2N)")
    p.add_argument("--size", type=int, default=2048, help="scene size in pixels")
    p.add_argument("--chips", type=int, default=2000)
    p.add_argument("--chip-size", type=int, default=448)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--memory-chips", type=int, default=320, help="chips read into memory by load_chips"
    )
    p.add_argument("--workdir", default=tempfile.gettempdir(), help="temporary scenes (deleted)")
    p.add_argument(
        "--cache-dir", default=str(ROOT / "benchmarks" / ".cache" / "chips"), help="kept store"
    )
    p.add_argument("--clean-cache", action="store_true", help="delete the cached store at the end")
    p.add_argument("--skip-loader", action="store_true")
    p.add_argument("--skip-composite", action="store_true")
    p.add_argument("--child-dir", help=argparse.SUPPRESS)
    p.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-method", default="mean", help=argparse.SUPPRESS)
    p.add_argument("--child-compress", default="deflate", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_dir:
        composite_child(args)
        return

    def load() -> str:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())

    rows: list[tuple[str, str]] = []

    def add(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"{name}: {value}", file=sys.stderr, flush=True)

    add("machine", f"{os.cpu_count()} cores, load average (1/5/15 min) at start {load()}")
    if not args.skip_composite:
        work = Path(tempfile.mkdtemp(prefix="sarssl_bench_", dir=args.workdir))
        try:
            n = args.scenes
            make_scenes(work, 2 * n, args.size)
            mpx = args.size * args.size / 1e6
            for method, compress in (("mean", "deflate"), ("mean", "zstd"), ("median", "deflate")):
                runs = {
                    k: [run_child(work, k, method, compress) for _ in range(args.repeats)]
                    for k in (n, 2 * n)
                }
                for k, rs in runs.items():
                    e2e = [mpx / r["wall_s"] for r in rs]
                    comp = [mpx / r["composite_s"] for r in rs]
                    cpu = [mpx / r["cpu_s"] for r in rs]
                    add(
                        f"composite {method}/{compress} {k} scenes {args.size}^2, end to end Mpx/s",
                        f"{_fmt(e2e)} (load {load()})",
                    )
                    add(
                        f"composite {method}/{compress} {k} scenes, compositing pass only Mpx/s",
                        _fmt(comp),
                    )
                    add(f"composite {method}/{compress} {k} scenes, Mpx per CPU-second", _fmt(cpu))
                r1 = max(r["peak_rss_mb"] for r in runs[n])
                r2 = max(r["peak_rss_mb"] for r in runs[2 * n])
                add(
                    f"peak RSS {method}/{compress}: N={n} vs 2N={2 * n}",
                    f"{r1:.0f} MB vs {r2:.0f} MB ({100 * (r2 / r1 - 1):+.0f}%)",
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if not args.skip_loader:
        cache = Path(args.cache_dir) / f"store_{args.chips}x{args.chip_size}"
        need = args.chips * 12 * args.chip_size**2 * 2 * 1.15
        if not (cache / "store.json").is_file():
            shutil.rmtree(cache, ignore_errors=True)
            free = shutil.disk_usage(cache.parent if cache.parent.exists() else ROOT).free
            if free < need + 2e9:
                raise SystemExit(
                    f"not enough disk for {cache}: need {need / 1e9:.1f} GB, "
                    f"free {free / 1e9:.1f} GB"
                )
            t0 = time.perf_counter()
            make_store(cache, args.chips, args.chip_size)
            add(
                f"write store {args.chips} x 12x{args.chip_size}^2 f16",
                f"{time.perf_counter() - t0:.1f} s",
            )
        try:
            mb = 12 * args.chip_size**2 * 2 / 1e6
            add("store", f"{cache}: {args.chips} chips, {mb:.2f} MB of float16 image per chip")
            res: dict[str, list[float]] = {}
            for rep in range(args.repeats):
                for name, fn in (
                    (
                        f"raw DataLoader(batch_size=None) {args.workers} workers",
                        lambda e: raw_dataloader(cache, args.workers, args.batch, e),
                    ),
                    (
                        f"raw BatchLoader {args.workers} threads",
                        lambda e: raw_batchloader(cache, args.workers, args.batch, e),
                    ),
                    (
                        "raw BatchLoader 1 thread",
                        lambda e: raw_batchloader(cache, 1, args.batch, e),
                    ),
                ):
                    r = fn(rep)
                    res.setdefault(name, []).append(r["chips_per_s"])
                    print(
                        f"  {name} rep {rep}: {r['chips_per_s']:.0f} chips/s "
                        f"({r['chips']} chips, load {load()})",
                        file=sys.stderr,
                        flush=True,
                    )
            for name, v in res.items():
                add(
                    f"{name}, batch {args.batch}, chips/s",
                    f"{_stats(v)} = {float(np.median(v)) * mb:.0f} MB/s median (load {load()})",
                )
            lim = args.memory_chips
            v = [chips_in_memory(cache, lim)["chips_per_s"] for _ in range(args.repeats)]
            add(
                f"load_chips (in memory, normalised), {lim} chips, chips/s",
                f"{_stats(v)} (load {load()})",
            )
            add(
                "consumer-side Normalize on this CPU, chips/s",
                f"{normalize_cost(cache, args.batch)['chips_per_s']:.0f}",
            )
            req = mae_requirement()
            per_core = float(np.median(res["raw BatchLoader 1 thread"]))
            add(
                "MAE ViT-B/16 448px 12ch on one H100 (bf16, 40% MFU of 990 TFLOP/s)",
                f"{req['gflop_fwd']:.0f} GFLOP forward/image -> {req['images_per_s']:.0f} images/s "
                f"= {req['images_per_s'] * mb:.0f} MB/s "
                "(the brief's rough figure: 150-250 images/s)",
            )
            add(
                "store per core x 16 cores (loaded 2-core machine: a floor)",
                f"{per_core:.0f} x 16 = {16 * per_core:.0f} chips/s -> "
                f"{'meets' if 16 * per_core >= req['images_per_s'] else 'does NOT meet'} "
                f"{req['images_per_s']:.0f}/s "
                f"({16 * per_core / req['images_per_s']:.1f}x)",
            )
        finally:
            if args.clean_cache:
                shutil.rmtree(cache, ignore_errors=True)
    width = max(len(a) for a, _ in rows)
    print(f"{'benchmark':<{width}}  result")
    print(f"{'-' * width}  {'-' * 30}")
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


def _fmt(values: list[float]) -> str:
    return f"best {max(values):.2f}, median {float(np.median(values)):.2f}"


if __name__ == "__main__":
    main()
