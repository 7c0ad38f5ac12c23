"""``sarssl slurm-check`` (or ``python -m sarssl.slurm_check``): which job requests of a
SLURM profile no partition can satisfy.

Owns the check run before submitting through ``workflow/profiles/slurm`` (or a user's
copy): a request that no node of its partition can hold (more CPUs, memory, time or GPUs
than any node offers, a GPU model or GRES the partition lacks, a partition that does not
exist) is either rejected by ``sbatch`` ("Invalid generic resource") or stays pending
forever while Snakemake waits silently; this prints each such request before anything is
submitted.

Requests come from the profile itself (``default-resources`` for every rule, updated by
``set-resources`` and ``set-threads`` per rule; CPUs = threads, as the SLURM executor
plugin asks ``--cpus-per-task`` = threads unless ``cpus_per_task`` is set), or, more
exactly, from the ``resources:`` lines of a saved ``snakemake --dry-run`` of the real
workflow (``--dry-run-log``). Partitions come from ``sinfo`` (run here, or a recorded
output via ``--sinfo``) in the format :data:`SINFO_FORMAT`. Standard library + PyYAML.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

SINFO_FORMAT = "%P|%c|%m|%l|%G"
"""``sinfo --noheader --format`` fields: partition (``*`` = default), CPUs per node,
memory per node (MB), time limit, GRES. One line per group of identical nodes."""

SINFO_COMMAND = ["sinfo", "--noheader", f"--format={SINFO_FORMAT}"]


@dataclass
class NodeGroup:
    """One ``sinfo`` line: identical nodes of one partition."""

    partition: str
    cpus: int
    mem_mb: int
    time_min: float  # inf = no limit
    gres: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, type) -> count
    default: bool = False


@dataclass
class Request:
    """What one rule's jobs ask SLURM for."""

    rule: str
    partition: str | None
    cpus: int
    mem_mb: int
    runtime_min: float
    gpus: int = 0
    gpu_model: str | None = None
    gres: str | None = None


def parse_time_min(text: str, where: str = "time") -> float:
    """A SLURM time (``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in
    minutes; ``inf`` for no limit."""
    text = text.strip()
    if text in ("infinite", "UNLIMITED", "NOT_SET", "n/a"):
        return float("inf")
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if not m:
        raise InputError(f"{where}: unreadable SLURM time {text!r}")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, mins, secs = int(a), int(b or 0), int(c or 0)
    elif c is not None:  # HH:MM:SS
        hours, mins, secs = int(a), int(b), int(c)
    elif b is not None:  # MM:SS
        hours, mins, secs = 0, int(a), int(b)
    else:  # MM
        hours, mins, secs = 0, int(a), 0
    return int(days or 0) * 1440 + hours * 60 + mins + secs / 60


def parse_gres(text: str) -> dict[tuple[str, str], int]:
    """``gpu:a100:4(S:0-1),gpu:2,shard:8`` -> {(name, type or ""): count}."""
    out: dict[tuple[str, str], int] = {}
    text = re.sub(r"\([^)]*\)", "", text.strip())
    if text in ("", "(null)", "null"):
        return out
    for item in text.split(","):
        parts = [p for p in item.strip().split(":") if p]
        if not parts:
            continue
        count = 1
        if len(parts) > 1 and re.fullmatch(r"\d+", parts[-1]):
            count = int(parts.pop())
        kind = parts[1] if len(parts) > 1 else ""
        key = (parts[0], kind)
        out[key] = out.get(key, 0) + count
    return out


def _int(text: str, where: str) -> int:
    m = re.match(r"\d+", text.strip())
    if not m:
        raise InputError(f"{where}: expected a number, got {text!r}")
    return int(m.group())


def parse_sinfo(text: str, where: str = "sinfo") -> list[NodeGroup]:
    """Node groups of ``sinfo --noheader --format='%P|%c|%m|%l|%G'`` output."""
    groups = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("|")
        if len(cols) != 5:
            raise InputError(
                f"{where}:{n}: expected 5 '|'-separated fields ({SINFO_FORMAT}), got {line!r}"
            )
        part, cpus, mem, limit, gres = (c.strip() for c in cols)
        groups.append(
            NodeGroup(
                partition=part.rstrip("*"),
                cpus=_int(cpus, f"{where}:{n}"),
                mem_mb=_int(mem, f"{where}:{n}"),
                time_min=parse_time_min(limit, f"{where}:{n}"),
                gres=parse_gres(gres),
                default=part.endswith("*"),
            )
        )
    if not groups:
        raise InputError(f"{where}: no partitions listed")
    return groups


def _request(rule: str, res: dict[str, Any], threads: int) -> Request:
    cpus = res.get("cpus_per_task")
    return Request(
        rule=rule,
        partition=res.get("slurm_partition") or None,
        cpus=int(cpus) if cpus not in (None, "") and int(cpus) > 0 else int(threads),
        mem_mb=int(float(res.get("mem_mb", 0) or 0)),
        runtime_min=float(res.get("runtime", 0) or 0),
        gpus=int(res.get("gpu", 0) or 0),
        gpu_model=res.get("gpu_model") or None,
        gres=res.get("gres") or None,
    )


def profile_requests(profile: str | Path) -> list[Request]:
    """One request per rule named in the profile's ``set-resources``/``set-threads`` plus
    ``(other rules)`` for ``default-resources`` alone (one thread)."""
    import yaml

    path = Path(profile)
    if path.is_dir():
        path = path / "config.yaml"
    if not path.is_file():
        raise InputError(f"{path}: SLURM profile not found")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML ({exc})") from None
    defaults = dict(doc.get("default-resources") or {})
    per_rule = doc.get("set-resources") or {}
    threads = doc.get("set-threads") or {}
    out = [_request("(other rules)", defaults, 1)]
    for rule in sorted(set(per_rule) | set(threads)):
        res = defaults | dict(per_rule.get(rule) or {})
        out.append(_request(rule, res, int(threads.get(rule, 1))))
    return out


def dry_run_requests(text: str) -> list[Request]:
    """Distinct requests of the jobs of a ``snakemake --dry-run`` output (its per-job
    ``resources:`` and ``threads:`` lines), one per rule and distinct request."""
    seen: dict[tuple, Request] = {}
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:)", text):
        head = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        if not head or not res:
            continue
        values = dict(item.split("=", 1) for item in res.group(1).split(", ") if "=" in item)
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        req = _request(head.group(1), values, int(threads.group(1)) if threads else 1)
        key = tuple(vars(req).values())
        seen.setdefault(key, req)
    return list(seen.values())


def _gpus_offered(group: NodeGroup, model: str | None) -> int:
    return sum(
        n for (name, kind), n in group.gres.items() if name == "gpu" and model in (None, kind)
    )


def problems(req: Request, groups: list[NodeGroup]) -> list[str]:
    """Why no node can run ``req`` (empty when one can)."""
    if req.partition is None:
        default = [g for g in groups if g.default]
        if not default:
            return ["no slurm_partition and the cluster has no default partition"]
        name = default[0].partition
    else:
        name = req.partition
    candidates = [g for g in groups if g.partition == name]
    if not candidates:
        known = sorted({g.partition for g in groups})
        return [f"partition {name!r} does not exist (sinfo lists {', '.join(known)})"]
    gres_need: tuple[str, str, int] | None = None
    if req.gres:
        (gname, gkind), count = next(iter(parse_gres(req.gres).items()))
        gres_need = (gname, gkind, count)
    checks = [
        ("CPUs", req.cpus, lambda g: g.cpus),
        ("MB memory", req.mem_mb, lambda g: g.mem_mb),
        ("min runtime", req.runtime_min, lambda g: g.time_min),
    ]
    if req.gpus:
        label = f"GPUs of model {req.gpu_model!r}" if req.gpu_model else "GPUs"
        checks.append((label, req.gpus, lambda g: _gpus_offered(g, req.gpu_model)))
    if gres_need:
        gname, gkind, count = gres_need
        checks.append(
            (
                f"GRES {req.gres!r}",
                count,
                lambda g: sum(n for (a, b), n in g.gres.items() if a == gname and gkind in ("", b)),
            )
        )
    if any(all(need <= have(g) for _, need, have in checks) for g in candidates):
        return []
    out = []
    for label, need, have in checks:
        best = max(have(g) for g in candidates)
        if need > best:
            out.append(f"asks {need:g} {label}, partition {name!r} offers at most {best:g}")
    return out or [f"no single node of partition {name!r} offers all of it at once"]


def check(requests: list[Request], groups: list[NodeGroup]) -> list[str]:
    """One line per request that no partition can satisfy."""
    lines = []
    for req in requests:
        for why in problems(req, groups):
            lines.append(f"{req.rule}: {why}")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--profile", help="profile folder (or its config.yaml) to check")
    src.add_argument(
        "--dry-run-log",
        help="saved output of `snakemake --dry-run` with the profile ('-' = stdin): checks "
        "every job's actual request",
    )
    parser.add_argument(
        "--sinfo",
        help=f"recorded output of `{shlex.join(SINFO_COMMAND)}` (default: run sinfo)".replace(
            "%", "%%"
        ),
    )


def run(args: argparse.Namespace) -> int:
    if args.sinfo:
        path = Path(args.sinfo)
        if not path.is_file():
            raise InputError(f"{path}: sinfo output not found")
        groups = parse_sinfo(path.read_text(), str(path))
    else:
        try:
            out = subprocess.run(SINFO_COMMAND, capture_output=True, text=True, check=True)
        except FileNotFoundError:
            raise InputError("sinfo not found: run on the cluster's login node") from None
        except subprocess.CalledProcessError as exc:
            raise InputError(f"sinfo failed: {exc.stderr.strip()}") from None
        groups = parse_sinfo(out.stdout)
    if args.profile:
        requests = profile_requests(args.profile)
    else:
        if args.dry_run_log == "-":
            text = sys.stdin.read()
        elif Path(args.dry_run_log).is_file():
            text = Path(args.dry_run_log).read_text()
        else:
            raise InputError(f"{args.dry_run_log}: dry-run output not found")
        requests = dry_run_requests(text)
        if not requests:
            raise InputError(f"{args.dry_run_log}: no job resources found (a --dry-run output?)")
    bad = check(requests, groups)
    for line in bad:
        print(line)
    if bad:
        print(f"{len(bad)} request(s) no partition can satisfy: edit the profile first")
        return 1
    print(f"all {len(requests)} request(s) fit a partition")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sarssl slurm-check", description=__doc__.split("\n")[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
