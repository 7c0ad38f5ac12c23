"""Input-loader throughput of float16 vs compact (uint16, uint8) chip stores.

For each store dtype a synthetic store of ``--chips`` chips of 12 x S x S is written by
:class:`sarssl.data.store.StoreWriter` (the format ``sarssl chips --dtype`` writes) and
read in shuffled batches by :class:`sarssl.data.loaders.BatchLoader` with ``--threads``
reader threads, page cache cold (``posix_fadvise(DONTNEED)``) and warm:

- ``raw``: the host batches as the training loop's reader threads deliver them (what
  crosses PCIe to a GPU): chips/s and GB/s of stored bytes;
- ``decoded``: the same plus decode (compact stores) and normalisation to float32 on the
  CPU, the work a GPU does on its side stream (so on a CPU-only machine the end-to-end
  input rate).

Prints one JSON line per (dtype, cache, path). Example::

    python benchmarks/loader.py --chips 96 --size 448 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def write(root: Path, dtype: str, n: int, size: int) -> Path:
    import pandas as pd

    from sarssl.data.store import StoreWriter
    from sarssl.io import atomic_dir
    from sarssl.vocabulary import CHANNELS

    rng = np.random.default_rng(0)
    base = rng.normal(-12.0, 3.0, size=(8, len(CHANNELS), size, size)).astype(np.float32)
    out = root / dtype
    with atomic_dir(out) as tmp:
        w = StoreWriter(tmp, n, size, CHANNELS, dtype=dtype)
        for s in range(0, n, 8):
            k = min(8, n - s)
            w.x[s : s + k] = base[:k] + np.float32(0.01 * s)
        index = pd.DataFrame({"id": [f"c{i}" for i in range(n)], "split": ["train"] * n})
        w.finish(index, resolution=10.0, area="bench")
        del w
    return out


def drop(store: Path) -> None:
    fd = os.open(store / "x.npy", os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(store: Path) -> None:
    with open(store / "x.npy", "rb", buffering=0) as fh:
        while fh.read(1 << 24):
            pass


def measure(store: Path, args: argparse.Namespace, decoded: bool) -> tuple[float, float]:
    """(chips/s, stored GB/s) of one epoch through BatchLoader."""
    from sarssl.data.loaders import BatchLoader, ChipBatches, decode_batch
    from sarssl.data.normalize import Normalize

    ds = ChipBatches(store, batch_size=args.batch, seed=1, labels=False, block_rows=4)
    norm = Normalize(np.full(12, -12.0, np.float32), np.full(12, 3.0, np.float32))

    def prepare(batch):
        return norm(decode_batch(batch["x"], ds.codec))

    loader = BatchLoader(
        ds,
        threads=args.threads,
        prefetch=2,
        pin_memory=False,
        transform=prepare if decoded else None,
    )
    n = 0
    t = time.perf_counter()
    for b in loader:
        n += (b if decoded else b["x"]).shape[0]
    dt = time.perf_counter() - t
    return n / dt, n * ds.store.meta["bytes_per_chip_x"] / dt / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--chips", type=int, default=96)
    p.add_argument("--size", type=int, default=448)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="best of N (warm)")
    p.add_argument("--dtypes", default="float16,uint16,uint8")
    p.add_argument("--tmp-dir", default=None)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sarssl-loader-", dir=args.tmp_dir) as tmp:
        for dtype in args.dtypes.split(","):
            store = write(Path(tmp), dtype, args.chips, args.size)
            for path in ("raw", "decoded"):
                for cache in ("cold", "warm"):
                    best = (0.0, 0.0)
                    for _ in range(1 if cache == "cold" else args.repeats):
                        (drop if cache == "cold" else warm)(store)
                        best = max(best, measure(store, args, path == "decoded"))
                    print(
                        json.dumps(
                            {
                                "dtype": dtype,
                                "path": path,
                                "cache": cache,
                                "threads": args.threads,
                                "chip_size": args.size,
                                "chips": args.chips,
                                "chips_per_s": round(best[0], 1),
                                "stored_gb_per_s": round(best[1], 3),
                            }
                        ),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
