"""Which products may enter a catalogue: finding, screening and filtering them.

Both catalogue backends (:mod:`sarssl.catalogue.builtin`, :mod:`sarssl.catalogue.archive`)
use this module, so they select the same products.

Finding (:func:`find_products`): product paths from files and folders (``*.zip`` and
``*.SAFE``). Only each product's ``manifest.safe`` is read (through
:func:`sarssl.sar.safe.open_product`), so scanning hundreds of zipped products takes seconds.

Screening (:func:`screen_products`): every product is validated
(:func:`sarssl.sar.safe.validate_product`: an S1A-S1D IW GRDH/GRDM product whose name agrees
with its manifest) and only one product per acquisition is kept (:func:`one_per_acquisition`):
products of the same mission and absolute orbit whose manifest start times lie within
:data:`ACQUISITION_TOLERANCE` are one acquisition (the same product as ``.zip`` and ``.SAFE``,
copies under other names, or a reprocessing). The newest processing wins: the latest
manifest processing time (the product's own ``safe:processing`` stop time), then the highest
IPF version, then the path given first (so identical copies keep the first path). Unreadable,
invalid and duplicate products are *rejected* (:class:`sarssl.catalogue.table.Rejection`),
logged as warnings; duplicates have the reason ``duplicate of <kept path>``.

Filtering (:class:`Filters`, :func:`exclusion_reason`): a product is kept when its footprint
(the manifest's ``gml:coordinates``, lon/lat) intersects the AOI box, its start time falls on
a date in ``[start, end]`` (inclusive, UTC), its pass direction and relative orbit match the
filters and it holds every required polarisation. Footprints are treated as plain lon/lat
polygons (no antimeridian handling).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from ..errors import InputError, SarsslError
from ..io import parse_bbox
from ..sar.safe import (
    POL_ORDER,
    InvalidProductError,
    Product,
    ipf_version_key,
    open_product,
    parse_product_name,
    validate_product,
)
from .table import Rejection, iso_utc

log = logging.getLogger(__name__)

#: Products of one mission and absolute orbit starting within this of each other are one
#: acquisition (reprocessings may move a slice start by milliseconds; consecutive slices
#: start ~25 s apart).
ACQUISITION_TOLERANCE = np.timedelta64(1, "s")


# --------------------------------------------------------------------------------------
# finding and screening
# --------------------------------------------------------------------------------------


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
        return (
            f"processed later: {kept.processing_time} vs {other.processing_time}"
            if kept.processing_time is not None and other.processing_time is not None
            else "the other has no processing time"
        )
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
    order = sorted(
        range(len(products)),
        key=lambda i: (
            products[i][1].mission,
            products[i][1].absolute_orbit,
            products[i][1].start_time,
            i,
        ),
    )
    groups: list[list[int]] = []
    for i in order:
        p = products[i][1]
        if groups:
            q = products[groups[-1][0]][1]
            if (p.mission, p.absolute_orbit) == (
                q.mission,
                q.absolute_orbit,
            ) and p.start_time - q.start_time <= ACQUISITION_TOLERANCE:
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
        for i, w in sorted(winner.items())
        if w != i
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
        log.warning(
            "duplicate product %s: %s ignored, keeping %s (same acquisition: %s orbit "
            "%d starting %s; %s)",
            prod.id,
            path,
            winner,
            prod.mission,
            prod.absolute_orbit,
            iso_utc(prod.start_time),
            why,
        )
        reject(path, prod.id, f"duplicate of {winner}")
    return kept


# --------------------------------------------------------------------------------------
# filters
# --------------------------------------------------------------------------------------


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


def exclusion_reason(product: Product, f: Filters, aoi_poly) -> str | None:
    """Why ``product`` is excluded by the filters ``f`` (``aoi_poly``: the AOI box as a
    shapely polygon), or None when it is kept."""
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


def parse_date(text: str, what: str) -> np.datetime64:
    """``YYYY-MM-DD`` (anything after the first 10 characters ignored) as a day."""
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
    bad = [p for p in pols if p not in POL_ORDER]
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
