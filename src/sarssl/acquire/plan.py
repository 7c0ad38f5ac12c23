"""``sarssl plan``: what a configuration costs before anything is downloaded or trained.

Owns the cost summary of a run: products and gigabytes from the ``source: download`` areas'
search results (``resources/download/{area}/search.json``, written by the workflow's
``acquire_search`` checkpoint), the job count per rule from a Snakemake dry run, and the
GPU-hours the profile declares (``set-resources``: ``gpu`` x ``runtime`` minutes per job of
each GPU rule, times its jobs). With ``--search`` it first runs only the search
checkpoints (network, no download); without it, missing search results are named and the
dry run stops at them, as ``snakemake -n`` does.

Jobs behind a checkpoint are not in a dry run's count: the catalogue of each area is a
checkpoint too, so the jobs that follow it are estimated from the search results: one
preprocessing job per product (an upper bound: the catalogue may reject duplicates or
invalid products), one orbit and one DEM job per downloaded area.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from ..errors import SarsslError
from ..io import write_json

SEARCH = "resources/download/{area}/search.json"
GB = 1e9


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--configfile", required=True, help="the whole config (as --replace-workflow-config)"
    )
    p.add_argument(
        "--snakefile",
        default=None,
        help="workflow Snakefile (default workflow/Snakefile of this checkout)",
    )
    p.add_argument(
        "--profile",
        default=None,
        help="profile folder whose set-resources declare the GPU jobs "
        "(default workflow/profiles/default of this checkout)",
    )
    p.add_argument(
        "--search",
        action="store_true",
        help="run the search checkpoints first (network; downloads nothing)",
    )
    p.add_argument(
        "--directory",
        default=".",
        help="the run's working directory, where resources/ and results/ are (default .)",
    )
    p.add_argument("--json", default=None, help="also write the summary as JSON here")
    p.add_argument(
        "--snakemake", default=None, help="snakemake executable (default: beside this Python)"
    )


def _checkout() -> Path:
    return Path(__file__).resolve().parents[3]


def _snakemake(args: argparse.Namespace) -> list[str]:
    if args.snakemake:
        return [args.snakemake]
    beside = Path(sys.executable).with_name("snakemake")
    return [str(beside)] if beside.exists() else ["snakemake"]


def _load_config(path: str) -> dict:
    import yaml

    try:
        with open(path) as fh:
            cfg = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise SarsslError(f"{path}: cannot read the config ({exc})") from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("areas"), dict):
        raise SarsslError(f"{path}: not a sarssl config (no 'areas' mapping)")
    return cfg


def used_download_areas(cfg: dict) -> list[str]:
    """``source: download`` areas that pretraining or fine-tuning uses, in config order."""
    used = set(cfg.get("pretrain", {}).get("areas", [])) | set(
        cfg.get("finetune", {}).get("areas", [])
    )
    return [
        a for a, c in cfg["areas"].items() if a in used and (c or {}).get("source") == "download"
    ]


def parse_job_stats(text: str) -> dict[str, int]:
    """Rule -> job count from a Snakemake dry run's ``Job stats`` table."""
    counts: dict[str, int] = {}
    in_table = False
    for line in text.splitlines():
        if line.startswith("Job stats:"):
            in_table, counts = True, {}
            continue
        if not in_table:
            continue
        m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s+(\d+)\s*", line)
        if m is None:
            continue
        if m.group(1) == "total":
            in_table = False
            continue
        counts[m.group(1)] = int(m.group(2))
    return counts


def declared_gpu(profile: Path) -> dict[str, tuple[float, float]]:
    """Rule -> (GPUs per job, runtime minutes per job) of the profile's GPU rules."""
    import yaml

    path = profile / "config.yaml"
    try:
        prof = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SarsslError(f"{path}: cannot read the profile ({exc})") from exc
    default_runtime = float((prof.get("default-resources") or {}).get("runtime", 0) or 0)
    out = {}
    for rule, res in (prof.get("set-resources") or {}).items():
        gpus = float((res or {}).get("gpu", 0) or 0)
        if gpus > 0:
            out[rule] = (gpus, float(res.get("runtime", default_runtime) or 0))
    return out


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise SarsslError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout + proc.stderr


def plan(args: argparse.Namespace) -> dict:
    cfg = _load_config(args.configfile)
    snakefile = Path(args.snakefile or _checkout() / "workflow" / "Snakefile")
    profile = Path(args.profile or _checkout() / "workflow" / "profiles" / "default")
    cwd = Path(args.directory).resolve()
    if not cwd.is_dir():
        raise SarsslError(f"--directory {args.directory}: not a directory")
    base = _snakemake(args) + [
        "--snakefile",
        str(snakefile.resolve()),
        "--configfile",
        str(Path(args.configfile).resolve()),
        "--replace-workflow-config",
        "--cores",
        "1",
    ]
    areas = used_download_areas(cfg)
    searches = {a: cwd / SEARCH.format(area=a) for a in areas}
    missing = [a for a, p in searches.items() if not p.exists()]
    if missing and args.search:
        targets = [str(searches[a].relative_to(cwd)) for a in missing]
        _run(base[:1] + targets + base[1:] + ["--quiet", "all"], cwd)
        missing = [a for a, p in searches.items() if not p.exists()]
    per_area = {}
    for a, p in searches.items():
        if a in missing:
            continue
        try:
            doc = json.loads(p.read_text())
            products = doc["products"]
        except (OSError, ValueError, KeyError) as exc:
            raise SarsslError(f"{p}: unreadable search result ({exc})") from exc
        per_area[a] = {
            "products": len(products),
            "bytes": int(sum(int(x.get("size") or 0) for x in products)),
            "unknown_sizes": sum(1 for x in products if not x.get("size")),
        }
    jobs = parse_job_stats(_run(base + ["--dry-run", "--quiet", "rules"], cwd))
    gpu = declared_gpu(profile)
    gpu_hours = {r: jobs.get(r, 0) * g * minutes / 60 for r, (g, minutes) in gpu.items()}
    n_products = sum(v["products"] for v in per_area.values())
    return {
        "config": str(args.configfile),
        "areas": per_area,
        "searches_missing": missing,
        "products": n_products,
        "gigabytes": sum(v["bytes"] for v in per_area.values()) / GB,
        "jobs": jobs,
        "jobs_total": sum(jobs.values()),
        "after_catalogue": (
            {
                "preprocess": n_products,
                "acquire_orbits": len(per_area),
                "acquire_dem": len(per_area),
            }
            if per_area and not missing
            else {}
        ),
        "gpu_rules": {r: {"gpu": g, "runtime_min": m} for r, (g, m) in gpu.items()},
        "gpu_hours": gpu_hours,
        "gpu_hours_total": sum(gpu_hours.values()),
        "profile": str(profile),
    }


def format_plan(s: dict) -> str:
    lines = [f"plan of {s['config']}"]
    for a, v in s["areas"].items():
        lines.append(f"  {a}: {v['products']} product(s), {v['bytes'] / GB:.1f} GB")
    if s["areas"]:
        lines.append(f"products: {s['products']}, {s['gigabytes']:.1f} GB to download")
    if s["searches_missing"]:
        lines.append(
            "no search result yet for: " + ", ".join(s["searches_missing"]) + " (run "
            "`sarssl plan --search ...` or `snakemake --until acquire_search ...`); the "
            "counts below stop at the search checkpoints"
        )
    lines.append(f"jobs: {s['jobs_total']} before the checkpoints' expansion")
    for rule, n in sorted(s["jobs"].items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {rule:<32}{n:>6}")
    if s["after_catalogue"]:
        lines.append("after the catalogue checkpoints (preprocess: one per product, at most):")
        for rule, n in s["after_catalogue"].items():
            lines.append(f"  {rule:<32}{n:>6}")
    lines.append(f"declared GPU-hours ({s['profile']}): {s['gpu_hours_total']:.1f}")
    for rule, h in s["gpu_hours"].items():
        g = s["gpu_rules"][rule]
        lines.append(
            f"  {rule}: {s['jobs'].get(rule, 0)} job(s) x {g['gpu']:g} GPU x "
            f"{g['runtime_min']:g} min = {h:.1f} GPU-h"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    summary = plan(args)
    print(format_plan(summary))
    if args.json:
        write_json(args.json, summary)
    return 0
