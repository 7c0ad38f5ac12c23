"""The catalogue's tables: ``results/catalogue/AREA.csv`` and ``AREA.rejected.csv``.

One row per product kept (:data:`COLUMNS`, from the product's manifest, sorted by start
time), whichever backend selected it; one row per product rejected (:data:`REJECTED_COLUMNS`:
unreadable, invalid or duplicate products; a header only when there are none). Both are
written atomically.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..io import atomic_path
from ..sar.safe import Product

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
#: Columns of the ``--rejected-out`` CSV (the fields of :class:`Rejection`).
REJECTED_COLUMNS = ["path", "product_id", "reason"]


@dataclass(frozen=True)
class Rejection:
    """A product left out because it cannot or must not be used (not because of a filter)."""

    path: str
    product_id: str
    reason: str


def iso_utc(t: np.datetime64) -> str:
    """``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (microseconds, UTC)."""
    return str(t.astype("datetime64[us]")) + "Z"


def product_row(prod: Product, path: str | Path) -> dict:
    """One catalogue row (:data:`COLUMNS`) for an opened product found at ``path``."""
    return {
        "product_id": prod.id,
        "path": str(path),
        "mission": prod.mission,
        "start_time": iso_utc(prod.start_time),
        "stop_time": iso_utc(prod.stop_time),
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
        table = table.sort_values(["start_time", "product_id"], kind="stable").reset_index(
            drop=True
        )
    return table


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
