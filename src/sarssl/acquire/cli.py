"""``sarssl acquire``: opt-in downloads of real inputs (the demo never calls this).

Sub-commands::

    sarssl acquire sentinel1 --aoi W,S,E,N --start DATE --end DATE [--orbit-direction any]
        [--relative-orbits 15,88] [--polarisations VV,VH] --out-dir resources/products/AREA
        [--provider asf|cdse] [--dry-run] [--manifest FILE.json]
    sarssl acquire orbits PRODUCT_OR_DIR... --out-dir resources/orbits [--provider step|asf|cdse]
    sarssl acquire dem --aoi W,S,E,N --out resources/dem/AREA.tif [--margin 0.01]
    sarssl acquire worldcover --aoi W,S,E,N --year 2021 --out resources/labels/AREA_worldcover.tif
    sarssl acquire modis --aoi W,S,E,N --year 2021 --out resources/labels/AREA_treecover.tif
        [--version 061] [--url-template URL]
    sarssl acquire geoid --model egm2008|egm96 [--out-dir DIR] [--base-url URL]
    sarssl acquire product --search SEARCH.json --id PRODUCT_ID --out FILE.zip

``sentinel1 --dry-run --manifest FILE`` writes the search result (every product with its URL,
size and checksum) without downloading; ``product`` then fetches one product of such a file.
The workflow uses this pair (workflow/rules/acquire.smk): one search checkpoint per area, one
resumable download job per product, so an interrupted run refetches only what is missing.

Every sub-command accepts ``--retries``, ``--backoff``, ``--timeout``, ``--jitter-seed`` and
``--no-progress``, and base-URL options so mirrors (or a test server) can stand in for the
real services. Credentials come only from the environment or netrc (see docs/acquisition.md).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import SarsslError
from ..io import parse_bbox, run_record, write_json
from . import dem as dem_mod
from . import geoid as geoid_mod
from . import modis as modis_mod
from . import orbits as orbits_mod
from . import sentinel1 as s1
from . import worldcover as wc_mod
from .http import Auth, HttpClient

log = logging.getLogger(__name__)


def _common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument(
        "--retries", type=int, default=5, help="retries per request/transfer (default 5)"
    )
    g.add_argument(
        "--backoff",
        type=float,
        default=2.0,
        help="first back-off wait, s; doubles per retry (default 2)",
    )
    g.add_argument(
        "--max-backoff", type=float, default=120.0, help="cap on one back-off wait, s (default 120)"
    )
    g.add_argument("--timeout", type=float, default=60.0, help="socket timeout, s (default 60)")
    g.add_argument(
        "--jitter-seed",
        type=int,
        default=None,
        help="seed of the back-off jitter (default: no jitter, waits are exact)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)

    p = sub.add_parser("sentinel1", help="search and download Sentinel-1 IW GRDH products")
    p.add_argument("--aoi", required=True, help="area of interest W,S,E,N (degrees)")
    p.add_argument("--start", required=True, help="first sensing date (YYYY-MM-DD, inclusive)")
    p.add_argument(
        "--end",
        required=True,
        help="last sensing date (YYYY-MM-DD, inclusive as in sarssl catalogue; "
        "or an exclusive ISO time)",
    )
    p.add_argument(
        "--orbit-direction", default="any", help="ascending, descending or any (default)"
    )
    p.add_argument(
        "--relative-orbits", default="", help="comma-separated relative orbits (default any)"
    )
    p.add_argument(
        "--polarisations", default="VV,VH", help="required polarisations (default VV,VH)"
    )
    p.add_argument("--out-dir", required=True, help="folder for the product zips")
    p.add_argument(
        "--provider",
        choices=("asf", "cdse"),
        default="asf",
        help="catalogue and archive (default asf)",
    )
    p.add_argument("--dry-run", action="store_true", help="search and list only; download nothing")
    p.add_argument(
        "--max-products", type=int, default=None, help="download at most this many (first by date)"
    )
    p.add_argument(
        "--manifest", default=None, help="write the search result and files as JSON here"
    )
    p.add_argument("--search-url", default=s1.ASF_SEARCH_URL, help="ASF search API endpoint")
    p.add_argument(
        "--login-url",
        default=f"https://{s1.EARTHDATA_LOGIN_HOST}",
        help="Earthdata Login server (gets the basic-auth credentials)",
    )
    p.add_argument(
        "--catalogue-url", default=s1.CDSE_CATALOGUE_URL, help="CDSE OData catalogue root"
    )
    p.add_argument("--download-url", default=s1.CDSE_DOWNLOAD_URL, help="CDSE OData download root")
    p.add_argument("--token-url", default=s1.CDSE_TOKEN_URL, help="CDSE OAuth2 token endpoint")
    _common(p)

    p = sub.add_parser("orbits", help="POEORB (else RESORB) orbit files for products")
    p.add_argument(
        "products", nargs="+", help="product zips/.SAFE folders/names, or folders of products"
    )
    p.add_argument("--out-dir", required=True, help="folder for the orbit files")
    p.add_argument(
        "--provider",
        choices=("step", "asf", "cdse"),
        default="step",
        help="step (ESA mirror, no login; default), asf (Earthdata) or cdse",
    )
    p.add_argument(
        "--kind",
        choices=("auto", "POEORB", "RESORB"),
        default="auto",
        help="auto = POEORB, falling back to RESORB (default)",
    )
    p.add_argument("--base-url", default=None, help="listing root for step/asf")
    p.add_argument(
        "--login-url", default=f"https://{s1.EARTHDATA_LOGIN_HOST}", help="Earthdata Login server"
    )
    p.add_argument(
        "--catalogue-url", default=s1.CDSE_CATALOGUE_URL, help="CDSE OData catalogue root"
    )
    p.add_argument("--download-url", default=s1.CDSE_DOWNLOAD_URL, help="CDSE OData download root")
    p.add_argument("--token-url", default=s1.CDSE_TOKEN_URL, help="CDSE OAuth2 token endpoint")
    _common(p)

    p = sub.add_parser("dem", help="Copernicus GLO-30 DEM tiles mosaicked over an AOI")
    p.add_argument("--aoi", required=True, help="W,S,E,N (degrees)")
    p.add_argument("--out", required=True, help="output GeoTIFF (EGM2008 heights, EPSG:9518)")
    p.add_argument(
        "--margin", type=float, default=0.01, help="degrees added around the AOI (default 0.01)"
    )
    p.add_argument(
        "--glo", type=int, choices=(30, 90), default=30, help="GLO-30 (default) or GLO-90"
    )
    p.add_argument(
        "--tile-dir", default=None, help="where tiles are kept (default OUT's folder/tiles)"
    )
    p.add_argument("--base-url", default=None, help="tile bucket root")
    _common(p)

    p = sub.add_parser("worldcover", help="ESA WorldCover tiles mosaicked over an AOI")
    p.add_argument("--aoi", required=True, help="W,S,E,N (degrees)")
    p.add_argument(
        "--year", type=int, default=2021, choices=sorted(wc_mod.VERSIONS), help="map year"
    )
    p.add_argument("--out", required=True, help="output GeoTIFF (uint8 legend codes)")
    p.add_argument("--margin", type=float, default=0.0, help="degrees added around the AOI")
    p.add_argument(
        "--tile-dir", default=None, help="where tiles are kept (default OUT's folder/tiles)"
    )
    p.add_argument("--base-url", default=wc_mod.WORLDCOVER_URL, help="bucket root")
    _common(p)

    p = sub.add_parser("modis", help="MOD44B Percent_Tree_Cover tiles mosaicked over an AOI")
    p.add_argument("--aoi", required=True, help="W,S,E,N (degrees)")
    p.add_argument("--year", type=int, default=2021, help="product year (default 2021)")
    p.add_argument(
        "--version", default="061", choices=modis_mod.VERSIONS, help="collection (default 061)"
    )
    p.add_argument("--out", required=True, help="output GeoTIFF (uint8, sinusoidal)")
    p.add_argument(
        "--url-template",
        default=None,
        help="GeoTIFF tile URL with {year} {doy} {h:02d} {v:02d} {version} "
        "(instead of LP DAAC HDF)",
    )
    p.add_argument("--base-url", default=modis_mod.LPDAAC_URL, help="LP DAAC data pool root")
    p.add_argument(
        "--login-url", default=f"https://{s1.EARTHDATA_LOGIN_HOST}", help="Earthdata Login server"
    )
    p.add_argument(
        "--tile-dir", default=None, help="where tiles are kept (default OUT's folder/tiles)"
    )
    _common(p)

    p = sub.add_parser(
        "product", help="download one product of a search result (sentinel1 --manifest)"
    )
    p.add_argument(
        "--search", required=True, help="search result JSON (sentinel1 --dry-run --manifest)"
    )
    p.add_argument("--id", required=True, help="product id (name without .zip)")
    p.add_argument("--out", required=True, help="product zip to write")
    p.add_argument(
        "--login-url", default=f"https://{s1.EARTHDATA_LOGIN_HOST}", help="Earthdata Login server"
    )
    p.add_argument("--download-url", default=s1.CDSE_DOWNLOAD_URL, help="CDSE OData download root")
    p.add_argument("--token-url", default=s1.CDSE_TOKEN_URL, help="CDSE OAuth2 token endpoint")
    _common(p)

    p = sub.add_parser(
        "geoid", help="EGM2008/EGM96 geoid grid from the PROJ CDN (for offline DEM heights)"
    )
    p.add_argument(
        "--model",
        required=True,
        type=str.lower,
        choices=sorted(geoid_mod.GEOID_FILES),
        help="egm2008 (us_nga_egm08_25.tif, ~80 MB) or egm96 (us_nga_egm96_15.tif, ~2.6 MB)",
    )
    p.add_argument(
        "--out-dir",
        default=None,
        help="destination folder (default $SARSSL_GEOID_DIR, else ~/.local/share/sarssl/geoid)",
    )
    p.add_argument(
        "--base-url", default=geoid_mod.PROJ_CDN_URL, help="grid server root (default the PROJ CDN)"
    )
    _common(p)


def make_client(args: argparse.Namespace, service: str, auth: Auth | None = None) -> HttpClient:
    return HttpClient(
        service=service,
        auth=auth,
        retries=args.retries,
        backoff=args.backoff,
        max_backoff=args.max_backoff,
        timeout=args.timeout,
        jitter_seed=args.jitter_seed,
        progress=not args.no_progress,
    )


def _host(url: str) -> str:
    return urlsplit(url).netloc


def _int_list(text: str, what: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise SarsslError(f"{what} {text!r}: expected comma-separated integers") from exc


def run(args: argparse.Namespace) -> int:
    target = args.target
    if target == "sentinel1":
        return _run_sentinel1(args)
    if target == "orbits":
        kinds = orbits_mod.KINDS if args.kind == "auto" else (args.kind,)
        if args.provider == "cdse":
            client = make_client(args, s1.CDSE.name)
            client.auth = s1.cdse_auth(client, args.download_url, args.token_url)
        elif args.provider == "asf":
            base = args.base_url or orbits_mod.ASF_ORBIT_URL
            client = make_client(
                args, "ASF orbits", s1.asf_auth(_host(args.login_url), [_host(base)])
            )
        else:
            client = make_client(args, "ESA STEP orbits")
        got = orbits_mod.acquire_orbits(
            client,
            args.products,
            args.out_dir,
            provider=args.provider,
            kinds=kinds,
            base_url=args.base_url,
            catalogue_url=args.catalogue_url,
            download_url=args.download_url,
        )
        for pid, path in got.items():
            print(f"{pid}\t{path}")
        return 0
    if target == "product":
        return _run_product(args)
    if target == "geoid":
        info = geoid_mod.acquire_geoid(
            args.model, make_client(args, "PROJ CDN"), out_dir=args.out_dir, base_url=args.base_url
        )
        print(info.path)
        print(f"export SARSSL_GEOID_DIR={shlex.quote(str(info.path.parent.resolve()))}")
        return 0
    bbox = parse_bbox(args.aoi)
    if target == "dem":
        arcsec = 1 if args.glo == 30 else 3
        base = args.base_url or (dem_mod.GLO30_URL if arcsec == 1 else dem_mod.GLO90_URL)
        dem_mod.acquire_dem(
            bbox,
            args.out,
            make_client(args, "Copernicus DEM"),
            base_url=base,
            tile_dir=args.tile_dir,
            margin=args.margin,
            arcsec=arcsec,
        )
    elif target == "worldcover":
        wc_mod.acquire_worldcover(
            bbox,
            args.out,
            make_client(args, "ESA WorldCover"),
            year=args.year,
            base_url=args.base_url,
            tile_dir=args.tile_dir,
            margin=args.margin,
        )
    elif target == "modis":
        auth = (
            None
            if args.url_template
            else s1.asf_auth(_host(args.login_url), [_host(args.base_url)])
        )
        modis_mod.acquire_modis(
            bbox,
            args.out,
            make_client(args, "LP DAAC MOD44B", auth),
            year=args.year,
            version=args.version,
            base_url=args.base_url,
            url_template=args.url_template,
            tile_dir=args.tile_dir,
        )
    else:  # pragma: no cover - argparse restricts the choices
        raise SarsslError(f"unknown acquire target {target!r}")
    print(args.out)
    return 0


def _run_sentinel1(args: argparse.Namespace) -> int:
    direction = args.orbit_direction.strip().upper()
    query = s1.Query(
        bbox=parse_bbox(args.aoi),
        start=s1.parse_date(args.start, "--start"),
        end=s1.parse_end_date(args.end),
        direction=None if direction in ("", "ANY") else direction,
        relative_orbits=_int_list(args.relative_orbits, "--relative-orbits"),
        polarisations=tuple(p.strip().upper() for p in args.polarisations.split(",") if p.strip()),
    )
    if args.provider == "asf":
        client = make_client(args, "ASF")
        hits = s1.search(client, query, "asf", search_url=args.search_url)
        client.auth = s1.asf_auth(_host(args.login_url), sorted({_host(h.url) for h in hits}))
    else:
        client = make_client(args, s1.CDSE.name)
        hits = s1.search(
            client, query, "cdse", catalogue_url=args.catalogue_url, download_url=args.download_url
        )
        client.auth = s1.cdse_auth(client, args.download_url, args.token_url)
    if args.max_products is not None:
        hits = hits[: args.max_products]
    total = sum(h.size or 0 for h in hits)
    for h in hits:
        print(f"{h.id}\t{h.start}\t{h.pass_direction or '?'}\t{h.relative_orbit}\t{h.size or '?'}")
    print(f"# {len(hits)} product(s), {total / 1e9:.2f} GB", file=sys.stderr)
    if args.dry_run:
        if args.manifest:
            write_json(
                args.manifest,
                run_record(
                    {k: v for k, v in vars(args).items() if not k.startswith("_")},
                    provider=args.provider,
                    count=len(hits),
                    total_bytes=total,
                    products=[h.to_dict() for h in hits],
                ),
            )
        return 0
    paths = s1.download_products(client, hits, args.out_dir)
    if args.manifest:
        write_json(
            args.manifest,
            run_record(
                {k: v for k, v in vars(args).items() if not k.startswith("_")},
                products=[{**h.to_dict(), "path": str(p)} for h, p in zip(hits, paths)],
            ),
        )
    log.info("downloaded %d product(s) to %s", len(paths), Path(args.out_dir))
    return 0


def read_search(path: str | Path) -> list[dict]:
    """The products of a search result written by ``sentinel1 --dry-run --manifest``."""
    import json

    try:
        doc = json.loads(Path(path).read_text())
        products = doc["products"]
        if not isinstance(products, list):
            raise TypeError("'products' is not a list")
        for p in products:
            for key in ("id", "provider", "url", "filename"):
                if key not in p:
                    raise KeyError(key)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SarsslError(
            f"{path}: not a search result of `sarssl acquire sentinel1 --manifest` ({exc})"
        ) from exc
    return products


def _run_product(args: argparse.Namespace) -> int:
    hits = {p["id"]: p for p in read_search(args.search)}
    try:
        hit = hits[args.id]
    except KeyError:
        raise SarsslError(f"{args.search}: no product {args.id!r} in this search result") from None
    checksum = tuple(hit["checksum"]) if hit.get("checksum") else None
    if hit["provider"] == "asf":
        client = make_client(args, "ASF", s1.asf_auth(_host(args.login_url), [_host(hit["url"])]))
    elif hit["provider"] == "cdse":
        client = make_client(args, s1.CDSE.name)
        client.auth = s1.cdse_auth(client, args.download_url, args.token_url)
    else:
        raise SarsslError(f"{args.search}: product {args.id}: unknown provider {hit['provider']!r}")
    path = client.download(
        hit["url"], args.out, size=hit.get("size"), checksum=checksum, what=f"product {args.id}"
    )
    print(path)
    return 0
