"""Scale check of the workflow's DAG: time and peak memory of ``snakemake --dry-run`` on a
synthetic continental configuration.

Usage::

    python benchmarks/dag.py [--areas 50] [--scenes 5000] [--finetune-areas 10]
                             [--chips 200000] [--keep DIR] [--max-seconds 60]
                             [--max-gb 4]

In a temporary directory it writes a config with ``--areas`` real-product
(``source: directory``) areas tiled over Europe, each with an (empty) stand-in product
directory holding its share of the ``--scenes`` product files and empty stand-in DEM /
land-cover / tree-cover rasters, and pre-writes every area's catalogue checkpoint CSV
(``results/catalogue/{area}.csv``: one row per product, the columns of ``sarssl
catalogue``; ``{area}.rejected.csv``: none rejected), newer than its inputs, so Snakemake
treats the checkpoints as done and the dry-run plans the complete DAG: every preprocessing
job, composites, chips, statistics, MAE + DINO pretraining, the full fine-tuning matrix
(2 tasks x 3 inits x 2 protocols x 6 label fractions x 3 seeds = 216 runs per fine-tuning
area), tables and every figure.

``--chips`` (the study's chip count, split evenly over the areas) does not change the DAG
(a chip store is one job per area, whatever its size); it is recorded in the config
comment only, so that the numbers printed say which study size they stand for.

It then runs ``snakemake --dry-run`` in a subprocess (the venv's executable, as a user
would) and prints the wall time, the number of planned jobs and the peak resident memory
of the child (``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``). Exit status 1 when the
dry-run fails or exceeds ``--max-seconds`` / ``--max-gb``.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
TEST_CONFIG = ROOT / "config" / "test.yaml"

#: The study's fine-tuning matrix per fine-tuning area.
TASKS = ["landcover", "treecover"]
INITS = ["scratch", "mae", "dino"]
PROTOCOLS = ["finetune", "linear"]
FRACTIONS = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
SEEDS = [0, 1, 2]

CATALOGUE_COLUMNS = (
    "id,path,mission,mode,product_type,polarisations,start_time,stop_time,"
    "pass_direction,relative_orbit,absolute_orbit,footprint_wkt"
)


def area_bboxes(n: int) -> list[list[float]]:
    """``n`` disjoint 0.1-degree boxes tiled over Europe (W,S,E,N, lon/lat degrees)."""
    cols = max(1, int(n**0.5))
    boxes = []
    for i in range(n):
        west = -8.0 + 0.5 * (i % cols)
        south = 38.0 + 0.5 * (i // cols)
        boxes.append([round(west, 3), round(south, 3), round(west + 0.1, 3), round(south + 0.1, 3)])
    return boxes


def product_name(area_index: int, k: int) -> str:
    """A syntactically valid, unique Sentinel-1 GRD product name for scene ``k``."""
    day = 1 + k % 28
    month = 1 + (k // 28) % 11
    orbit = 30000 + 1000 * area_index + k
    return (
        f"S1A_IW_GRDH_1SDV_2021{month:02d}{day:02d}T051122_2021{month:02d}{day:02d}T051147_"
        f"{orbit:06d}_{(area_index * 4096 + k) % 0xFFFFFF:06X}_{k % 0xFFFF:04X}"
    )


def build(workdir: Path, n_areas: int, n_scenes: int, n_finetune: int, n_chips: int) -> Path:
    """Write the synthetic inputs, catalogue CSVs and config into ``workdir``; return the
    config path."""
    base = yaml.safe_load(TEST_CONFIG.read_text())
    names = [f"a{i:03d}" for i in range(n_areas)]
    areas = {}
    per_area = [n_scenes // n_areas + (1 if i < n_scenes % n_areas else 0) for i in range(n_areas)]
    for i, (name, bbox) in enumerate(zip(names, area_bboxes(n_areas))):
        inputs = workdir / "inputs" / name
        products = inputs / "products"
        products.mkdir(parents=True)
        for f in ("dem.tif", "landcover.tif", "treecover.tif"):
            (inputs / f).touch()
        rows = []
        for k in range(per_area[i]):
            pid = product_name(i, k)
            path = products / f"{pid}.zip"
            path.touch()
            rows.append(f"{pid},{path.relative_to(workdir)},S1A,IW,GRD,VV VH,,,DESCENDING,,,")
        areas[name] = {
            "bbox": bbox,
            "crs": "auto",
            "source": "directory",
            "products": str(products.relative_to(workdir)),
            "dem": str((inputs / "dem.tif").relative_to(workdir)),
            "landcover": str((inputs / "landcover.tif").relative_to(workdir)),
            "treecover": str((inputs / "treecover.tif").relative_to(workdir)),
        }
        areas[name]["_rows"] = rows
    # checkpoint outputs last, so they are newer than their inputs (the product dirs)
    time.sleep(0.01)
    catalogue = workdir / "results" / "catalogue"
    catalogue.mkdir(parents=True)
    for name in names:
        rows = areas[name].pop("_rows")
        (catalogue / f"{name}.csv").write_text("\n".join([CATALOGUE_COLUMNS, *rows]) + "\n")
        (catalogue / f"{name}.rejected.csv").write_text("path,product_id,reason\n")
    cfg = dict(base)
    cfg["areas"] = areas
    cfg["pretrain"] = dict(base["pretrain"], areas=names)
    cfg["finetune"] = dict(
        base["finetune"],
        areas=names[:n_finetune],
        tasks=TASKS,
        inits=INITS,
        protocols=PROTOCOLS,
        fractions=FRACTIONS,
        seeds=SEEDS,
    )
    path = workdir / "continental.yaml"
    header = (
        f"# synthetic continental config: {n_areas} areas, {n_scenes} scenes, "
        f"~{n_chips} chips ({n_chips // n_areas} per area), {n_finetune} fine-tuning areas\n"
    )
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return path


def dry_run(workdir: Path, config: Path) -> tuple[float, float, int, subprocess.CompletedProcess]:
    """Run ``snakemake --dry-run``; return (wall s, peak RSS GB, planned jobs, result)."""
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(exe) if exe.exists() else "snakemake",
        "--snakefile", str(SNAKEFILE),
        "--directory", str(workdir),
        "--configfile", str(config),
        "--replace-workflow-config",
        "--cores", "1",
        "--dry-run",
        "--quiet", "rules",
    ]  # fmt: skip
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB -> GiB
    match = re.search(r"^total\s+(\d+)", res.stdout + res.stderr, re.M)
    return wall, peak_gb, int(match.group(1)) if match else -1, res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--areas", type=int, default=50)
    p.add_argument("--scenes", type=int, default=5000)
    p.add_argument("--finetune-areas", type=int, default=10)
    p.add_argument("--chips", type=int, default=200_000)
    p.add_argument("--keep", type=Path, help="build in this (new) directory and keep it")
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--max-gb", type=float, default=4.0)
    args = p.parse_args(argv)
    if args.finetune_areas > args.areas:
        p.error("--finetune-areas must not exceed --areas")
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="sarssl-dag-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        config = build(workdir, args.areas, args.scenes, args.finetune_areas, args.chips)
        setup = time.perf_counter() - t0
        wall, peak_gb, jobs, res = dry_run(workdir, config)
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
    n_ft = (
        args.finetune_areas * len(TASKS) * len(INITS) * len(PROTOCOLS) * len(FRACTIONS) * len(SEEDS)
    )
    print(
        f"continental DAG: {args.areas} areas, {args.scenes} scenes, {args.chips} chips, "
        f"{n_ft} fine-tuning runs ({args.finetune_areas} areas x 216)"
    )
    print(
        f"setup {setup:.1f} s; dry-run: {wall:.1f} s wall, peak RSS {peak_gb:.2f} GB, {jobs} jobs"
    )
    if res.returncode != 0:
        print((res.stdout + res.stderr)[-4000:], file=sys.stderr)
        print("FAIL: the dry-run failed", file=sys.stderr)
        return 1
    if wall > args.max_seconds or peak_gb > args.max_gb:
        print(
            f"FAIL: over budget ({args.max_seconds:.0f} s, {args.max_gb:.1f} GB)", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
