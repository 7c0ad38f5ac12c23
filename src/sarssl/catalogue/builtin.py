"""The builtin catalogue backend: scan the products' manifests on every run.

:func:`build_catalogue` finds the products (:func:`sarssl.catalogue.screening.find_products`),
screens them (validation, one per acquisition: :func:`sarssl.catalogue.screening.screen_products`)
and keeps those the filters let through (:func:`sarssl.catalogue.screening.exclusion_reason`),
logging every excluded product with its reason. The pyroSAR backend
(:mod:`sarssl.catalogue.archive`) makes the same selection through a scene database.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pandas as pd
from shapely.geometry import box

from .screening import Filters, exclusion_reason, find_products, screen_products
from .table import Rejection, product_row, table_from_rows

log = logging.getLogger(__name__)


def build_catalogue(
    inputs: Sequence[str | Path],
    filters: Filters,
    rejected: list[Rejection] | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """The catalogue table (columns :data:`sarssl.catalogue.table.COLUMNS`, sorted by start
    time) and the excluded products as (path, reason) pairs; unreadable, invalid and
    duplicate products are also appended to ``rejected`` (when given)."""
    aoi_poly = box(*filters.aoi)
    rows: list[dict] = []
    excluded: list[tuple[str, str]] = []
    for path, prod in screen_products(find_products(inputs), excluded, rejected):
        reason = exclusion_reason(prod, filters, aoi_poly)
        if reason is not None:
            log.info("excluded %s: %s", prod.id, reason)
            excluded.append((str(path), reason))
            continue
        rows.append(product_row(prod, path))
    return table_from_rows(rows), excluded
