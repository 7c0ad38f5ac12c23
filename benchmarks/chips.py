"""Benchmarks of the composite / chip-store stages.

    python benchmarks/chips.py [--scenes 4] [--size 2048] [--chips 2000] [--chip-size 448]
                               [--workdir /tmp] [--skip-loader]

1. Compositing throughput (output megapixels per second, mean and median) on synthetic
   preprocessed scenes (2 bands float32 dB on one area grid, two per season).
2. Peak memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of a fresh subprocess) of
   compositing N and 2N scenes: streaming keeps it flat.
3. Loader throughput: ``ChipDataset`` through a ``DataLoader`` with 2 workers, batch
   32, over a synthetic store of ``--chips`` chips of 12 x S x S float16 (2,000 x 448^2
   = 9.6 GB: check free disk first), in chips/s and MB/s of the float16 store.

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

    from sarssl.grid import area_grid
    from sarssl.io import write_geotiff

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
    """Run one compositing job and print its wall time and peak RSS as JSON."""
    import resource

    from sarssl.composite import composite

    scenes = sorted(Path(args.child_dir).glob("scene*.tif"))[: args.child_n]
    out = Path(args.child_dir) / f"out_{args.child_n}_{args.child_method}"
    t0 = time.perf_counter()
    composite(scenes, 2021, out.with_suffix(".tif"), Path(f"{out}_count.tif"), method=args.child_method, progress=False)
    wall = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall_s": wall, "peak_rss_mb": rss_kb / 1024}))


def run_child(directory: Path, n: int, method: str) -> dict:
    cmd = [sys.executable, __file__, "--child-dir", str(directory), "--child-n", str(n), "--child-method", method]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def make_store(directory: Path, n: int, size: int) -> Path:
    """A synthetic chip store of ``n`` chips written through StoreWriter."""
    import pandas as pd

    from sarssl import CHANNELS
    from sarssl.datasets import StoreWriter

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
    w.finish(index, resolution=10.0, crs="EPSG:32633", area="bench", fractions=[1.0])
    return directory


def loader_throughput(store: Path, workers: int, batch: int, epochs: int = 1) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from sarssl.datasets import ChipDataset, collate_chips

    ds = ChipDataset(store)
    loader = DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=False,
        collate_fn=collate_chips,
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(0),
    )
    n = 0
    t0 = time.perf_counter()
    for _ in range(epochs):
        for b in loader:
            n += b["image"].shape[0]
    wall = time.perf_counter() - t0
    per_chip = ds.store.meta["bytes_per_chip_x"]
    return {"chips": n, "wall_s": wall, "chips_per_s": n / wall, "mb_per_s": n * per_chip / wall / 1e6}


def chiploader_throughput(store: Path, threads: int, batch: int) -> dict:
    from sarssl.datasets import ChipDataset, ChipLoader

    ds = ChipDataset(store)
    loader = ChipLoader(ds, batch_size=batch, shuffle=True, seed=0, threads=threads, prefetch=2)
    n = 0
    t0 = time.perf_counter()
    for b in loader:
        n += b["image"].shape[0]
    wall = time.perf_counter() - t0
    per_chip = ds.store.meta["bytes_per_chip_x"]
    return {"chips": n, "wall_s": wall, "chips_per_s": n / wall, "mb_per_s": n * per_chip / wall / 1e6}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenes", type=int, default=4, help="N (memory is compared for N and 2N)")
    p.add_argument("--size", type=int, default=2048, help="scene size in pixels")
    p.add_argument("--chips", type=int, default=2000)
    p.add_argument("--chip-size", type=int, default=448)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workdir", default=tempfile.gettempdir())
    p.add_argument("--skip-loader", action="store_true")
    p.add_argument("--skip-composite", action="store_true")
    p.add_argument("--child-dir", help=argparse.SUPPRESS)
    p.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-method", default="mean", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child_dir:
        composite_child(args)
        return

    import os

    load0 = os.getloadavg()
    rows: list[tuple[str, str]] = []
    work = Path(tempfile.mkdtemp(prefix="sarssl_bench_", dir=args.workdir))
    try:
        if not args.skip_composite:
            n = args.scenes
            make_scenes(work, 2 * n, args.size)
            mpx = args.size * args.size / 1e6
            for method in ("mean", "median"):
                r1 = run_child(work, n, method)
                r2 = run_child(work, 2 * n, method)
                rows.append((f"composite {method}, {n} scenes {args.size}^2", f"{mpx / r1['wall_s']:.2f} Mpx/s ({r1['wall_s']:.1f} s)"))
                rows.append((f"composite {method}, {2 * n} scenes", f"{mpx / r2['wall_s']:.2f} Mpx/s ({r2['wall_s']:.1f} s)"))
                rows.append((f"peak RSS {method}: N={n} vs 2N={2 * n}", f"{r1['peak_rss_mb']:.0f} MB vs {r2['peak_rss_mb']:.0f} MB"))
        if not args.skip_loader:
            need = args.chips * 12 * args.chip_size**2 * 2 * 1.02
            free = shutil.disk_usage(work).free
            if free < need + 2e9:
                raise SystemExit(f"not enough disk in {work}: need {need / 1e9:.1f} GB, free {free / 1e9:.1f} GB")
            t0 = time.perf_counter()
            store = make_store(work / "store", args.chips, args.chip_size)
            rows.append((f"write store {args.chips} x 12x{args.chip_size}^2 f16", f"{time.perf_counter() - t0:.1f} s, {need / 1.02 / 1e9:.1f} GB"))
            r = loader_throughput(store, args.workers, args.batch)
            rows.append((f"DataLoader {args.workers} workers, batch {args.batch}", f"{r['chips_per_s']:.0f} chips/s, {r['mb_per_s']:.0f} MB/s"))
            r0 = loader_throughput(store, 0, args.batch)
            rows.append((f"DataLoader 0 workers, batch {args.batch}", f"{r0['chips_per_s']:.0f} chips/s, {r0['mb_per_s']:.0f} MB/s"))
            rc = chiploader_throughput(store, args.workers, args.batch)
            rows.append((f"ChipLoader {args.workers} threads, batch {args.batch}", f"{rc['chips_per_s']:.0f} chips/s, {rc['mb_per_s']:.0f} MB/s"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(a) for a, _ in rows) if rows else 10
    import os

    print(f"load average before/after: {load0} / {os.getloadavg()} on {os.cpu_count()} cores")
    print(f"{'benchmark':<{width}}  result")
    print(f"{'-' * width}  {'-' * 30}")
    for a, b in rows:
        print(f"{a:<{width}}  {b}")


if __name__ == "__main__":
    main()
