"""Peak memory of a fine-tuning job vs the size of its split: in memory vs streamed.

Issue #14 asks that study-scale fine-tuning hold memory bounded independently of the
split size. This writes synthetic chip stores of 448-px chips (12 channels, float16, the
study's chip size) with N training chips, then runs ``sarssl finetune`` (the workflow's
command, a ViT with 16-px patches, a few optimiser steps) in a fresh process per case
and reports the process's peak resident memory (``ru_maxrss`` of the child) and wall time.

    python benchmarks/finetune_memory.py [--chips 100,1000] [--dir /tmp/sarssl-ftmem]
        [--loaders stream,memory] [--memory-max 100]

``--memory-max`` skips the in-memory loader above that many chips (1,000 chips of 448 px
are ~9.6 GB as float32 images: run it only on a machine with the RAM to spare).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

S = 448
BACKBONE = {
    "model_name": "vit_tiny_patch16_224",
    "patch_size": 16,
    "embed_dim": 96,
    "depth": 2,
    "num_heads": 3,
}


def make_store(path: Path, n_train: int, seed: int = 0) -> Path:
    """A float16 store of n_train train chips + 10 val + 10 test, written row by row."""
    from sarssl.data.store import StoreWriter, write_fractions
    from sarssl.io import atomic_dir
    from sarssl.vocabulary import CHANNELS

    if (path / "store.json").is_file():
        return path
    n = n_train + 20
    split = ["train"] * n_train + ["val"] * 10 + ["test"] * 10
    index = pd.DataFrame({"id": [f"c{i}" for i in range(n)], "split": split})
    rng = np.random.default_rng(seed)
    with atomic_dir(path) as tmp:
        w = StoreWriter(tmp, n, S, list(CHANNELS))
        for i in range(n):
            lc = rng.integers(0, 4, size=(S // 64, S // 64)).repeat(64, 0).repeat(64, 1)
            x = rng.normal(-12, 3, size=(len(CHANNELS), S, S)).astype(np.float32) + lc
            w.write(i, x, lc.astype(np.uint8), np.full((S, S), 30.0, np.float32))
        w.finish(index, resolution=10.0, area="bench")
        del w
        write_fractions(tmp, index, [1.0], seed=0, run_seeds=[0])
    stats = {
        "channels": list(CHANNELS),
        "mean": [-10.5] * len(CHANNELS),
        "std": [3.0] * len(CHANNELS),
        "areas": ["bench"],
        "n_chips": n,
    }
    (path.parent / f"{path.name}.stats.json").write_text(json.dumps(stats))
    return path


def run_case(store: Path, loader: str, out: Path) -> dict:
    hp = {
        "epochs": 1,
        "steps_per_epoch": 4,
        "batch_size": 8,
        "lr_grid": [1e-4],
        "patience": 0,
        "loader": loader,
        "backbone": BACKBONE,
    }
    cmd = [
        sys.executable, "-m", "sarssl.cli", "finetune", "--task", "landcover",
        "--init", "scratch", "--fraction", "1.0", "--seed", "0",
        "--chips-dir", str(store), "--stats", str(store.parent / f"{store.name}.stats.json"),
        "--hparams", json.dumps(hp), "--out-dir", str(out), "--device", "cpu", "--threads", "2",
    ]  # fmt: skip
    t0 = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"finetune failed ({loader}):\n{proc.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "loader": loader,
        "peak_rss_mb": round(max(peak, before) / 1024),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chips", default="100,1000")
    ap.add_argument("--dir", default="/tmp/sarssl-ftmem")
    ap.add_argument("--loaders", default="stream,memory")
    ap.add_argument("--memory-max", type=int, default=100)
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    print(f"{'train chips':>11} {'loader':>7} {'store GB':>8} {'peak RSS MB':>11} {'wall s':>7}")
    for n in (int(v) for v in args.chips.split(",")):
        store = make_store(root / f"store{n}", n)
        gb = sum(f.stat().st_size for f in store.glob("*.npy")) / 1e9
        for loader in args.loaders.split(","):
            if loader == "memory" and n > args.memory_max:
                print(f"{n:>11} {loader:>7} {gb:>8.2f} {'skipped':>11} {'':>7}")
                continue
            # a fresh process per case: ru_maxrss of the children is a high-water mark,
            # so run each case in its own Python to read its own peak
            out = str(root / f"out{n}{loader}")
            r = subprocess.run(
                [sys.executable, __file__, "--one", str(store), loader, out],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                raise SystemExit(r.stderr[-3000:])
            res = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"{n:>11} {loader:>7} {gb:>8.2f} {res['peak_rss_mb']:>11} {res['wall_s']:>7}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        print(json.dumps(run_case(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))))
    else:
        main()
