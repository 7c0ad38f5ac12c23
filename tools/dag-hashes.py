#!/usr/bin/env python3
"""Fingerprint what a finished workflow run produced, to prove a refactoring changed nothing.

``python tools/dag-hashes.py WORKDIR`` prints one ``sha256  path`` line per composite
(pixels and tags), chip-store file, encoder and fine-tuning metrics file (every field but
the wall-clock time), sorted by path. Run it on the tiny DAG before and after a change and
``diff`` the two listings: an empty diff means identical science.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _raster(path: Path) -> str:
    import rasterio

    with rasterio.open(path) as ds:
        tags = {k: v for k, v in ds.tags().items() if k != "SARSSL_VERSION"}
        body = ds.read().tobytes() + json.dumps(tags, sort_keys=True).encode()
    return _sha(body)


def _metrics(path: Path) -> str:
    rows = json.loads(path.read_text())
    for row in rows:
        row.pop("wall_s", None)
    return _sha(json.dumps(rows, sort_keys=True).encode())


def fingerprints(work: Path) -> dict[str, str]:
    out = {}
    res = work / "results"
    for p in sorted(res.glob("composites/*.tif")):
        out[str(p.relative_to(work))] = _raster(p)
    for p in sorted(res.glob("chips/*/*")):
        if p.name in ("x.npy", "landcover.npy", "treecover.npy", "index.parquet", "fractions.json"):
            out[str(p.relative_to(work))] = _sha(p.read_bytes())
    out["results/chips/stats.json"] = _sha((res / "chips/stats.json").read_bytes())
    for p in sorted(res.glob("pretrain/*/encoder.safetensors")):
        out[str(p.relative_to(work))] = _sha(p.read_bytes())
    for p in sorted(res.glob("finetune/**/metrics.json")):
        out[str(p.relative_to(work))] = _metrics(p)
    return out


if __name__ == "__main__":
    for path, digest in sorted(fingerprints(Path(sys.argv[1])).items()):
        print(f"{digest}  {path}")
