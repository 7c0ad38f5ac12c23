"""``sarssl catalogue``: list Sentinel-1 products and keep those that fit an area and period.

``sarssl catalogue PRODUCT_OR_DIR... --aoi W,S,E,N --start DATE --end DATE
[--orbit-direction ascending|descending|any] [--relative-orbits 15,88]
[--polarisations VV,VH] --out results/catalogue/A.csv [--rejected-out PATH]``

Products are found, screened (validated, one per acquisition) and filtered as described in
:mod:`sarssl.catalogue.screening`; the CSV has the columns of :mod:`sarssl.catalogue.table`.
With ``--rejected-out PATH`` the unreadable, invalid and duplicate products are written to a
CSV too (``path, product_id, reason``; header only when nothing was rejected; written even
when no product is kept). No product kept is an error.

``--backend builtin`` (default, :mod:`sarssl.catalogue.builtin`) scans the manifests.
``--backend pyrosar --db scenes.db`` (or ``--db postgresql://USER@HOST:PORT/DB``) makes the
same selection through pyroSAR's scene archive in a SpatiaLite/PostGIS database instead
(:mod:`sarssl.catalogue.archive`): the products given are ingested into the database, the
database is queried, and the CSV has the same columns. With that backend the products may
be omitted to query everything the database holds.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter

from ..errors import InputError, SarsslError
from .archive import build_catalogue_pyrosar
from .builtin import build_catalogue
from .screening import make_filters
from .table import Rejection, write_catalogue, write_rejected

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "products",
        nargs="*",
        metavar="PRODUCT_OR_DIR",
        help=".zip / .SAFE products, or directories searched for them (at least "
        "one; with --backend pyrosar, none = query the whole database)",
    )
    parser.add_argument("--aoi", required=True, help="area of interest W,S,E,N (lon/lat degrees)")
    parser.add_argument(
        "--start", required=True, help="first acquisition date YYYY-MM-DD (inclusive)"
    )
    parser.add_argument("--end", required=True, help="last acquisition date YYYY-MM-DD (inclusive)")
    parser.add_argument(
        "--orbit-direction", default="any", help="ascending, descending or any (default)"
    )
    parser.add_argument(
        "--relative-orbits",
        default="",
        help="comma-separated relative orbits to keep (default: any)",
    )
    parser.add_argument(
        "--polarisations",
        default="",
        help="polarisations every product must hold, e.g. VV,VH (default: any)",
    )
    parser.add_argument("--out", required=True, help="catalogue CSV to write")
    parser.add_argument(
        "--rejected-out",
        default=None,
        metavar="PATH",
        help="also write the rejected products (unreadable, not an IW GRD "
        "product, name disagreeing with the manifest, duplicate of "
        "another product of the same acquisition) to this CSV: path, "
        "product_id, reason (default: only logged)",
    )
    parser.add_argument(
        "--backend",
        choices=("builtin", "pyrosar"),
        default="builtin",
        help="builtin: scan the manifests (default); pyrosar: ingest into and "
        "select from pyroSAR's scene archive (needs --db and the "
        "environment built by tools/pyrosar-env.sh)",
    )
    parser.add_argument(
        "--db",
        default=None,
        metavar="PATH_OR_URL",
        help="scene database for --backend pyrosar: a SQLite/SpatiaLite file "
        "(e.g. results/catalogue/scenes.db) or postgresql://USER@HOST:PORT/DB "
        "(PostGIS; password from $PGPASSWORD)",
    )


def run(args: argparse.Namespace) -> int:
    filters = make_filters(
        args.aoi,
        args.start,
        args.end,
        args.orbit_direction,
        args.relative_orbits,
        args.polarisations,
    )
    backend = getattr(args, "backend", "builtin")
    db = getattr(args, "db", None)
    rejected_out = getattr(args, "rejected_out", None)
    rejected: list[Rejection] = []
    if backend == "pyrosar":
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
    counts = Counter(
        r.split(":")[0] if r.startswith(("unreadable", "invalid")) else r.split(" ")[0]
        for _, r in excluded
    )
    log.info(
        "catalogue: %d kept, %d excluded (%s); %d rejected",
        len(table),
        len(excluded),
        ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none",
        len(rejected),
    )
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
