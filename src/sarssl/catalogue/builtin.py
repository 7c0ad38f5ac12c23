"""Scene catalogue: list Sentinel-1 products and keep those that fit an area and period.

``sarssl catalogue PRODUCT_OR_DIR... --aoi W,S,E,N --start DATE --end DATE
[--orbit-direction ascending|descending|any] [--relative-orbits 15,88]
[--polarisations VV,VH] --out results/catalogue/A.csv``

Only each product's ``manifest.safe`` is read (through :func:`sarssl.sar.safe.open_product`), so
scanning hundreds of zipped products takes seconds. A product is kept when its footprint
(the manifest's ``gml:coordinates``, lon/lat) intersects the AOI box, its start time falls
on a date in ``[start, end]`` (inclusive, UTC), its pass direction and relative orbit match
the filters and it holds every required polarisation. Every excluded product is logged
with its reason.

Before the filters, every product is validated (:func:`sarssl.sar.safe.validate_product`: an
S1A-S1D IW GRDH/GRDM product whose name agrees with its manifest) and only one product per
acquisition is kept (:func:`one_per_acquisition`): products of the same mission and
absolute orbit whose manifest start times lie within :data:`ACQUISITION_TOLERANCE` are one
acquisition (the same product as ``.zip`` and ``.SAFE``, copies under other names, or a
reprocessing). The newest processing wins: the latest manifest processing time (the
product's own ``safe:processing`` stop time), then the highest IPF version, then the path
given first (so identical copies keep the first path, as before). Unreadable, invalid and
duplicate products are *rejected*: logged as warnings and, with ``--rejected-out PATH``,
written to a CSV (``path, product_id, reason``; header only when nothing was rejected;
written even when no product is kept). Duplicates have the reason ``duplicate of <kept
path>``.

Footprints are treated as plain lon/lat polygons (no antimeridian handling).

``--backend pyrosar --db scenes.db`` (or ``--db postgresql://USER@HOST:PORT/DB``) makes the
same selection through pyroSAR's scene archive in a SpatiaLite/PostGIS database instead
(:mod:`sarssl.catalogue.archive`): the products given are ingested into the database, the database is
queried, and the CSV has the same columns. With that backend the products may be omitted to
query everything the database holds.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from shapely.geometry import box
from tqdm import tqdm

from ..errors import InputError, SarsslError
from ..io import atomic_path, parse_bbox
from ..sar.safe import (
    InvalidProductError,
    Product,
    ipf_version_key,
    open_product,
    parse_product_name,
    validate_product,
)

log = logging.getLogger(__name__)

COLUMNS = [
    "product_id",
    "path",
    "mission",
    "start_time",
    "stop_time",
    "date",
    "pass_direction",
    "relative_orbit",
    "absolute_orbit",
    "polarisations",
    "ipf_version",
    "footprint_wkt",
]
#: Columns of the ``--rejected-out`` CSV.
REJECTED_COLUMNS = ["path", "product_id", "reason"]
#: Products of one mission and absolute orbit starting within this of each other are one
#: acquisition (reprocessings may move a slice start by milliseconds; consecutive slices
#: start ~25 s apart).
ACQUISITION_TOLERANCE = np.timedelta64(1, "s")


@dataclass(frozen=True)
class Rejection:
    """A product left out because it cannot or must not be used (not because of a filter)."""

    path: str
    product_id: str
    reason: str


@dataclass(frozen=True)
class Filters:
    """What a product must satisfy to enter the catalogue."""

    aoi: tuple[float, float, float, float]
    start: np.datetime64  # first date, inclusive
    end: np.datetime64  # last date, inclusive
    orbit_direction: str | None = None  # ASCENDING / DESCENDING / None = any
    relative_orbits: tuple[int, ...] = ()
    polarisations: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [
            f"AOI {','.join(f'{v:g}' for v in self.aoi)}",
            f"dates {self.start}..{self.end}",
            f"orbit direction {self.orbit_direction.lower() if self.orbit_direction else 'any'}",
            f"relative orbits {','.join(map(str, self.relative_orbits)) or 'any'}",
            f"polarisations {'+'.join(self.polarisations) or 'any'}",
        ]
        return ", ".join(parts)


def find_products(inputs: Iterable[str | Path]) -> list[Path]:
    """Product paths from files and directories (searched recursively for ``*.zip`` and
    ``*.SAFE``; a SAFE folder is not searched inside). Order: as given, sorted per folder."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise InputError(f"catalogue input {p}: no such file or directory")
        if p.is_file() or p.suffix.upper() == ".SAFE" or (p / "manifest.safe").is_file():
            out.append(p)
            continue
        found = sorted(
            q
            for q in p.rglob("*")
            if (q.is_file() and q.suffix.lower() == ".zip")
            or (q.is_dir() and q.suffix.upper() == ".SAFE")
        )
        # skip anything inside a SAFE folder
        found = [q for q in found if not any(a.suffix.upper() == ".SAFE" for a in q.parents)]
        if not found:
            log.warning("catalogue input %s: no .zip or .SAFE products inside", p)
        out.extend(found)
    return out


def _reason(product: Product, f: Filters, aoi_poly) -> str | None:
    """Why ``product`` is excluded, or None when it is kept."""
    if not product.footprint.intersects(aoi_poly):
        return "footprint does not intersect the AOI"
    day = product.start_time.astype("datetime64[D]")
    if day < f.start or day > f.end:
        return f"date {day} outside {f.start}..{f.end}"
    if f.orbit_direction and product.pass_direction != f.orbit_direction:
        return f"pass {product.pass_direction.lower()}, wanted {f.orbit_direction.lower()}"
    if f.relative_orbits and product.relative_orbit not in f.relative_orbits:
        return f"relative orbit {product.relative_orbit} not in {list(f.relative_orbits)}"
    missing = [p for p in f.polarisations if p not in product.polarisations]
    if missing:
        return f"lacks polarisation {'+'.join(missing)} (has {'+'.join(product.polarisations)})"
    return None


def _iso(t: np.datetime64) -> str:
    return str(t.astype("datetime64[us]")) + "Z"


def product_row(prod: Product, path: str | Path) -> dict:
    """One catalogue row (:data:`COLUMNS`) for an opened product found at ``path``."""
    return {
        "product_id": prod.id,
        "path": str(path),
        "mission": prod.mission,
        "start_time": _iso(prod.start_time),
        "stop_time": _iso(prod.stop_time),
        "date": prod.date,
        "pass_direction": prod.pass_direction,
        "relative_orbit": prod.relative_orbit,
        "absolute_orbit": prod.absolute_orbit,
        "polarisations": "+".join(prod.polarisations),
        "ipf_version": prod.ipf_version,
        "footprint_wkt": prod.footprint.wkt,
    }


def table_from_rows(rows: list[dict]) -> pd.DataFrame:
    """The catalogue table from :func:`product_row` rows, sorted by start time."""
    table = pd.DataFrame(rows, columns=COLUMNS)
    if len(table):
        table = table.sort_values(["start_time", "product_id"], kind="stable").reset_index(drop=True)
    return table


def _rank(prod: Product, order: int) -> tuple:
    """Sort key of the products of one acquisition: the largest is kept."""
    t = prod.processing_time
    return (
        -(2**63) if t is None else int(t.astype("datetime64[ns]").astype(np.int64)),
        ipf_version_key(prod.ipf_version),
        -order,
    )


def _why(kept: Product, other: Product) -> str:
    if kept.processing_time != other.processing_time:
        return (f"processed later: {kept.processing_time} vs {other.processing_time}"
                if kept.processing_time is not None and other.processing_time is not None
                else "the other has no processing time")
    if ipf_version_key(kept.ipf_version) != ipf_version_key(other.ipf_version):
        return f"newer IPF: {kept.ipf_version} vs {other.ipf_version}"
    return "same processing: the path given first is kept"


def one_per_acquisition(
    products: Sequence[tuple[str | Path, Product]],
) -> tuple[list[tuple[str | Path, Product]], list[tuple[str | Path, Product, str | Path, str]]]:
    """Keep one product per acquisition (see the module docstring for the rule).

    ``products`` are (path, product) in the order given. Returns the kept ones (in that
    order) and the others as (path, product, kept path, why the kept one won).
    """
    order = sorted(range(len(products)), key=lambda i: (
        products[i][1].mission, products[i][1].absolute_orbit, products[i][1].start_time, i))
    groups: list[list[int]] = []
    for i in order:
        p = products[i][1]
        if groups:
            q = products[groups[-1][0]][1]
            if ((p.mission, p.absolute_orbit) == (q.mission, q.absolute_orbit)
                    and p.start_time - q.start_time <= ACQUISITION_TOLERANCE):
                groups[-1].append(i)
                continue
        groups.append([i])
    winner: dict[int, int] = {}  # index -> index of the product kept for its acquisition
    for g in groups:
        best = max(g, key=lambda i: _rank(products[i][1], i))
        winner.update({i: best for i in g})
    kept = [products[i] for i in sorted(winner) if winner[i] == i]
    dropped = [
        (products[i][0], products[i][1], products[w][0], _why(products[w][1], products[i][1]))
        for i, w in sorted(winner.items()) if w != i
    ]
    return kept, dropped


def screen_products(
    paths: Iterable[str | Path],
    excluded: list[tuple[str, str]],
    rejected: list[Rejection] | None = None,
) -> list[tuple[str | Path, Product]]:
    """Open and validate each product and keep one per acquisition.

    Returns the (path, product) pairs kept, in the order given; every other path is
    appended to ``excluded`` as (path, reason) and to ``rejected`` (when given), and logged.
    """
    valid: list[tuple[str | Path, Product]] = []

    def reject(path: str | Path, pid: str, reason: str) -> None:
        excluded.append((str(path), reason))
        if rejected is not None:
            rejected.append(Rejection(str(path), pid, reason))

    for path in tqdm(list(paths), desc="catalogue", unit="product", leave=False):
        prod: Product | None = None
        try:
            prod = open_product(path)
            validate_product(prod)
        except SarsslError as exc:
            if prod is not None:
                prod.close()
            fields = parse_product_name(Path(path).name)
            pid = prod.id if prod is not None else fields["id"] if fields else ""
            if isinstance(exc, InvalidProductError):
                log.warning("rejected %s: %s", path, "; ".join(exc.problems))
                reject(path, pid, f"invalid: {'; '.join(exc.problems)}")
            else:
                log.warning("excluded %s: unreadable: %s", path, exc)
                reject(path, pid, f"unreadable: {exc}")
            continue
        prod.close()  # many products may be held here: no open zip file each
        valid.append((path, prod))
    kept, dropped = one_per_acquisition(valid)
    for path, prod, winner, why in dropped:
        log.warning("duplicate product %s: %s ignored, keeping %s (same acquisition: %s orbit "
                    "%d starting %s; %s)", prod.id, path, winner, prod.mission,
                    prod.absolute_orbit, _iso(prod.start_time), why)
        reject(path, prod.id, f"duplicate of {winner}")
    return kept


def build_catalogue(
    inputs: Sequence[str | Path], filters: Filters, rejected: list[Rejection] | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The catalogue table (columns :data:`COLUMNS`, sorted by start time) and the excluded
    products as (path, reason) pairs; unreadable, invalid and duplicate products are also
    appended to ``rejected`` (when given)."""
    aoi_poly = box(*filters.aoi)
    rows: list[dict] = []
    excluded: list[tuple[str, str]] = []
    for path, prod in screen_products(find_products(inputs), excluded, rejected):
        reason = _reason(prod, filters, aoi_poly)
        if reason is not None:
            log.info("excluded %s: %s", prod.id, reason)
            excluded.append((str(path), reason))
            continue
        rows.append(product_row(prod, path))
    return table_from_rows(rows), excluded


def parse_date(text: str, what: str) -> np.datetime64:
    try:
        return np.datetime64(str(text).strip()[:10], "D")
    except ValueError as exc:
        raise SarsslError(f"{what} {text!r}: expected a date YYYY-MM-DD") from exc


def make_filters(
    aoi: str | Sequence[float],
    start: str,
    end: str,
    orbit_direction: str | None = None,
    relative_orbits: str | Sequence[int] | None = None,
    polarisations: str | Sequence[str] | None = None,
) -> Filters:
    """Validated :class:`Filters` from CLI-style values."""
    bbox = parse_bbox(aoi)
    t0, t1 = parse_date(start, "--start"), parse_date(end, "--end")
    if t1 < t0:
        raise SarsslError(f"--end {end} is before --start {start}")
    direction = (orbit_direction or "any").strip().upper()
    if direction not in ("ASCENDING", "DESCENDING", "ANY", ""):
        raise SarsslError(f"--orbit-direction {orbit_direction!r}: ascending, descending or any")
    if isinstance(relative_orbits, str):
        relative_orbits = [v for v in relative_orbits.split(",") if v.strip()]
    try:
        rel = tuple(sorted({int(v) for v in (relative_orbits or [])}))
    except ValueError as exc:
        raise SarsslError(f"--relative-orbits {relative_orbits!r}: expected integers") from exc
    if any(not 1 <= r <= 175 for r in rel):
        raise SarsslError(f"--relative-orbits {list(rel)}: relative orbits are 1..175")
    if isinstance(polarisations, str):
        polarisations = polarisations.replace("+", ",").split(",")
    pols = tuple(p.strip().upper() for p in (polarisations or []) if p.strip())
    bad = [p for p in pols if p not in ("VV", "VH", "HH", "HV")]
    if bad:
        raise SarsslError(f"--polarisations {bad}: use VV, VH, HH, HV")
    return Filters(
        aoi=bbox,
        start=t0,
        end=t1,
        orbit_direction=None if direction in ("ANY", "") else direction,
        relative_orbits=rel,
        polarisations=pols,
    )


def write_catalogue(table: pd.DataFrame, out: str | Path) -> None:
    """Write the catalogue CSV atomically."""
    with atomic_path(out, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)


def write_rejected(rejected: Sequence[Rejection], out: str | Path) -> None:
    """Write the rejected products (:data:`REJECTED_COLUMNS`) atomically; a header only
    when there are none."""
    table = pd.DataFrame([asdict(r) for r in rejected], columns=REJECTED_COLUMNS)
    with atomic_path(out, suffix=".csv") as tmp:
        table.to_csv(tmp, index=False)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("products", nargs="*", metavar="PRODUCT_OR_DIR",
                        help=".zip / .SAFE products, or directories searched for them (at least "
                             "one; with --backend pyrosar, none = query the whole database)")
    parser.add_argument("--aoi", required=True, help="area of interest W,S,E,N (lon/lat degrees)")
    parser.add_argument("--start", required=True, help="first acquisition date YYYY-MM-DD (inclusive)")
    parser.add_argument("--end", required=True, help="last acquisition date YYYY-MM-DD (inclusive)")
    parser.add_argument("--orbit-direction", default="any",
                        help="ascending, descending or any (default)")
    parser.add_argument("--relative-orbits", default="",
                        help="comma-separated relative orbits to keep (default: any)")
    parser.add_argument("--polarisations", default="",
                        help="polarisations every product must hold, e.g. VV,VH (default: any)")
    parser.add_argument("--out", required=True, help="catalogue CSV to write")
    parser.add_argument("--rejected-out", default=None, metavar="PATH",
                        help="also write the rejected products (unreadable, not an IW GRD "
                             "product, name disagreeing with the manifest, duplicate of "
                             "another product of the same acquisition) to this CSV: path, "
                             "product_id, reason (default: only logged)")
    parser.add_argument("--backend", choices=("builtin", "pyrosar"), default="builtin",
                        help="builtin: scan the manifests (default); pyrosar: ingest into and "
                             "select from pyroSAR's scene archive (needs --db and the "
                             "environment built by tools/pyrosar-env.sh)")
    parser.add_argument("--db", default=None, metavar="PATH_OR_URL",
                        help="scene database for --backend pyrosar: a SQLite/SpatiaLite file "
                             "(e.g. results/catalogue/scenes.db) or postgresql://USER@HOST:PORT/DB "
                             "(PostGIS; password from $PGPASSWORD)")


def run(args: argparse.Namespace) -> int:
    filters = make_filters(
        args.aoi, args.start, args.end, args.orbit_direction, args.relative_orbits,
        args.polarisations,
    )
    backend = getattr(args, "backend", "builtin")
    db = getattr(args, "db", None)
    rejected_out = getattr(args, "rejected_out", None)
    rejected: list[Rejection] = []
    if backend == "pyrosar":
        from .archive import build_catalogue_pyrosar

        if not db:
            raise SarsslError("--backend pyrosar needs --db PATH_OR_URL (the scene database)")
        table, excluded = build_catalogue_pyrosar(args.products, filters, db, rejected=rejected)
    else:
        if db:
            raise SarsslError("--db is only used with --backend pyrosar")
        if not args.products:
            raise SarsslError("no PRODUCT_OR_DIR given (only --backend pyrosar may omit them)")
        table, excluded = build_catalogue(args.products, filters, rejected=rejected)
    for path, reason in excluded:
        log.debug("reason %s: %s", path, reason)
    counts = Counter(r.split(":")[0] if r.startswith(("unreadable", "invalid")) else r.split(" ")[0]
                     for _, r in excluded)
    log.info("catalogue: %d kept, %d excluded (%s); %d rejected", len(table), len(excluded),
             ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none", len(rejected))
    if rejected_out:
        write_rejected(rejected, rejected_out)
        log.info("wrote %s (%d rejected products)", rejected_out, len(rejected))
    if table.empty:
        raise InputError(
            f"no product kept for {filters.describe()} among {len(excluded)} found in "
            f"{', '.join(map(str, args.products)) or db}"
        )
    write_catalogue(table, args.out)
    log.info("wrote %s (%d products)", args.out, len(table))
    return 0
