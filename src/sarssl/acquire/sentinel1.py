"""Search and download Sentinel-1 IW GRDH products for an area and a date range.

Two providers, both plain HTTP + JSON (no SDK):

- **ASF** (Alaska Satellite Facility, NASA DAAC): the Search API
  ``https://api.daac.asf.alaska.edu/services/search/param`` answers GeoJSON; each feature's
  ``properties`` give ``fileName``, ``url`` (datapool), ``bytes``, ``md5sum``,
  ``flightDirection``, ``pathNumber`` (relative orbit), ``startTime``/``stopTime``.
  Downloads redirect to NASA Earthdata Login (``urs.earthdata.nasa.gov``); credentials:
  ``EARTHDATA_USERNAME``/``EARTHDATA_PASSWORD``, or ``EARTHDATA_TOKEN`` (an EDL bearer
  token), or a netrc entry for ``urs.earthdata.nasa.gov``.
- **CDSE** (Copernicus Data Space Ecosystem): the OData catalogue
  ``https://catalogue.dataspace.copernicus.eu/odata/v1/Products`` with a ``$filter`` on
  collection, product type ``IW_GRDH_1S``, footprint intersection and sensing start, paged
  by ``@odata.nextLink``; items give ``Id``, ``Name`` (``....SAFE``), ``ContentLength`` and
  ``Checksum`` (MD5). Downloads (``.../Products(Id)/$value``, a zipped SAFE) need an OAuth2
  bearer token from the CDSE identity server (password grant, client ``cdse-public``);
  credentials: ``CDSE_USERNAME``/``CDSE_PASSWORD``, or ``CDSE_TOKEN`` (an access token), or a
  netrc entry for ``identity.dataspace.copernicus.eu``.

The server-side query is narrowed as far as each API allows; the results are then filtered
again here on the same criteria (sensing start in [start, end), pass direction, relative
orbit, polarisations from the product name, footprint intersecting the AOI) so both
providers return the same list for the same question. Every base URL is a parameter.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import SarsslError
from ..sar.safe import parse_product_name, relative_orbit_from_absolute
from .http import AcquireError, Auth, AuthenticationError, Credentials, HttpClient, Service

log = logging.getLogger(__name__)

ASF_SEARCH_URL = "https://api.daac.asf.alaska.edu/services/search/param"
EARTHDATA_LOGIN_HOST = "urs.earthdata.nasa.gov"
CDSE_CATALOGUE_URL = "https://catalogue.dataspace.copernicus.eu/odata/v1"
CDSE_DOWNLOAD_URL = "https://download.dataspace.copernicus.eu/odata/v1"
CDSE_TOKEN_URL = (
    "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token"
)
CDSE_CLIENT_ID = "cdse-public"
MAX_PAGES = 200

EARTHDATA = Service(
    name="NASA Earthdata Login",
    user_env="EARTHDATA_USERNAME",
    password_env="EARTHDATA_PASSWORD",
    token_env="EARTHDATA_TOKEN",
    netrc_host=EARTHDATA_LOGIN_HOST,
)
CDSE = Service(
    name="Copernicus Data Space Ecosystem",
    user_env="CDSE_USERNAME",
    password_env="CDSE_PASSWORD",
    token_env="CDSE_TOKEN",
    netrc_host="identity.dataspace.copernicus.eu",
)


@dataclass
class ProductHit:
    """One product found in a catalogue, with what is needed to fetch and verify it."""

    id: str  # product name without extension
    provider: str
    url: str
    filename: str  # {id}.zip
    size: int | None
    checksum: tuple[str, str] | None  # (algorithm, hex) from the catalogue
    start: str  # ISO 8601 UTC
    stop: str
    pass_direction: str | None  # ASCENDING / DESCENDING
    relative_orbit: int | None
    polarisations: list[str]
    footprint: str | None  # WKT lon/lat

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_date(text: str, what: str) -> dt.datetime:
    """'2021-01-31' or '2021-01-31T12:00:00[Z]' -> aware UTC datetime."""
    try:
        d = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError as exc:
        raise SarsslError(
            f"{what} {text!r}: expected a date YYYY-MM-DD or an ISO 8601 time"
        ) from exc
    return d.replace(tzinfo=dt.timezone.utc) if d.tzinfo is None else d.astimezone(dt.timezone.utc)


def parse_end_date(text: str) -> dt.datetime:
    """Exclusive end of a search: a bare date means the whole day (inclusive, as in
    ``sarssl catalogue``), i.e. the next midnight; a full ISO time is used as given."""
    end = parse_date(text, "--end")
    return end + dt.timedelta(days=1) if len(str(text).strip()) == 10 else end


def _iso(d: dt.datetime) -> str:
    return d.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def bbox_wkt(bbox: Sequence[float]) -> str:
    w, s, e, n = bbox
    return f"POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))"


@dataclass(frozen=True)
class Query:
    """A product search: AOI, sensing start in [start, end), pass, tracks, polarisations."""

    bbox: tuple[float, float, float, float]
    start: dt.datetime
    end: dt.datetime
    direction: str | None = None  # ASCENDING / DESCENDING / None
    relative_orbits: tuple[int, ...] = ()
    polarisations: tuple[str, ...] = ("VV", "VH")

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise SarsslError(
                f"--end {self.end:%Y-%m-%d} must be after --start {self.start:%Y-%m-%d}"
            )
        if self.direction not in (None, "ASCENDING", "DESCENDING"):
            raise SarsslError(f"--orbit-direction {self.direction!r}: ascending, descending or any")

    def keep(self, hit: ProductHit) -> str | None:
        """None to keep ``hit``, else why it is dropped."""
        from shapely import wkt as shapely_wkt
        from shapely.geometry import box

        start = parse_date(hit.start, f"product {hit.id} start")
        if not (self.start <= start < self.end):
            return f"sensing start {hit.start} outside the dates"
        if self.direction and hit.pass_direction and hit.pass_direction.upper() != self.direction:
            return f"pass {hit.pass_direction}"
        if self.relative_orbits and hit.relative_orbit not in self.relative_orbits:
            return f"relative orbit {hit.relative_orbit}"
        missing = [p for p in self.polarisations if p not in hit.polarisations]
        if missing:
            return f"lacks polarisation {','.join(missing)}"
        if hit.footprint:
            try:
                if not shapely_wkt.loads(hit.footprint).intersects(box(*self.bbox)):
                    return "footprint misses the AOI"
            except Exception:  # noqa: BLE001 - a footprint we cannot parse does not exclude
                log.debug("product %s: unparsable footprint %r", hit.id, hit.footprint[:80])
        return None


def _name_fields(name: str, provider: str) -> dict[str, Any]:
    fields = parse_product_name(name)
    if fields is None:
        raise AcquireError(
            f"{provider}: catalogue returned {name!r}, not a Sentinel-1 product name"
        )
    return fields


# ---------------------------------------------------------------------------------------
# ASF
# ---------------------------------------------------------------------------------------
def asf_auth(login_host: str = EARTHDATA_LOGIN_HOST, data_hosts: Sequence[str] = ()) -> Auth:
    """Earthdata credentials for ASF downloads.

    Username/password go (as HTTP basic auth) only to the Earthdata Login host, which the
    datapool redirects to and which redirects back with a session cookie; an
    ``EARTHDATA_TOKEN`` bearer token is sent to the datapool hosts directly as well.
    """
    creds = EARTHDATA.credentials()
    hosts = {login_host} if creds is None or creds.token is None else {login_host, *data_hosts}
    return Auth(EARTHDATA, hosts, creds, scheme="basic")


def search_asf(
    client: HttpClient, query: Query, *, search_url: str = ASF_SEARCH_URL, max_results: int = 5000
) -> list[ProductHit]:
    """Query the ASF Search API (GeoJSON output) and return the matching GRDH products."""
    params: dict[str, Any] = {
        "platform": "Sentinel-1",
        "processingLevel": "GRD_HD",
        "beamMode": "IW",
        "intersectsWith": bbox_wkt(query.bbox),
        "start": _iso(query.start),
        "end": _iso(query.end),
        "output": "geojson",
        "maxResults": max_results,
    }
    if query.direction:
        params["flightDirection"] = query.direction
    if query.relative_orbits:
        params["relativeOrbit"] = ",".join(str(r) for r in query.relative_orbits)
    doc = client.get_json(search_url, params=params, what="ASF product search")
    feats = doc.get("features") if isinstance(doc, dict) else None
    if feats is None:
        raise AcquireError(f"ASF: search answer from {search_url} has no 'features' (not GeoJSON?)")
    hits = []
    for f in feats:
        p = f.get("properties", {})
        name = p.get("fileName") or (p.get("sceneName", "") + ".zip")
        fields = _name_fields(name, "ASF")
        if fields["type"] != "GRD" or fields["res"] != "H":
            continue
        rel = p.get("pathNumber")
        rel = (
            int(rel)
            if rel not in (None, "")
            else relative_orbit_from_absolute(fields["mission"], fields["orbit"])
        )
        size = p.get("bytes")
        md5 = p.get("md5sum")
        hits.append(
            ProductHit(
                id=fields["id"],
                provider="asf",
                url=p["url"],
                filename=f"{fields['id']}.zip",
                size=int(size) if size not in (None, "") else None,
                checksum=("md5", md5) if md5 else None,
                start=p.get("startTime") or _compact_iso(fields["start"]),
                stop=p.get("stopTime") or _compact_iso(fields["stop"]),
                pass_direction=(p.get("flightDirection") or "").upper() or None,
                relative_orbit=rel,
                polarisations=fields["polarisations"],
                footprint=_geojson_wkt(f.get("geometry")),
            )
        )
    return hits


def _compact_iso(s: str) -> str:
    return f"{s[0:4]}-{s[4:6]}-{s[6:8]}T{s[9:11]}:{s[11:13]}:{s[13:15]}Z"


def _geojson_wkt(geom: dict | None) -> str | None:
    if not geom:
        return None
    from shapely.geometry import shape

    try:
        return shape(geom).wkt
    except Exception:  # noqa: BLE001
        return None


# ---------------------------------------------------------------------------------------
# CDSE
# ---------------------------------------------------------------------------------------
def cdse_token_getter(client: HttpClient, token_url: str = CDSE_TOKEN_URL) -> Any:
    """A function returning a fresh CDSE access token for given credentials."""
    from urllib.parse import urlencode

    def get(creds: Credentials) -> str:
        body = urlencode(
            {
                "grant_type": "password",
                "username": creds.username,
                "password": creds.password,
                "client_id": CDSE_CLIENT_ID,
            }
        ).encode()
        resp = client.open(
            token_url,
            method="POST",
            data=body,
            what="CDSE access token",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            ok_statuses=(400, 401),
        )
        try:
            status, raw = resp.status, resp.read()
        finally:
            resp.close()
        if status in (400, 401):
            raise AuthenticationError(
                f"{CDSE.name}: the identity server at {token_url} rejected the credentials "
                f"from {creds.source} "
                f"(HTTP {status}): {CDSE.hint()}"
            )
        import json

        try:
            return json.loads(raw)["access_token"]
        except (ValueError, KeyError) as exc:
            raise AcquireError(
                f"{CDSE.name}: token answer from {token_url} has no access_token"
            ) from exc

    return get


def cdse_auth(
    client: HttpClient, download_url: str = CDSE_DOWNLOAD_URL, token_url: str = CDSE_TOKEN_URL
) -> Auth:
    """Bearer-token auth for the CDSE download host (token fetched lazily, refreshed on 401)."""
    host = urlsplit(download_url).netloc
    token_client = HttpClient(
        service=CDSE.name,
        retries=client.retries,
        backoff=client.backoff,
        timeout=client.timeout,
        sleep=client.sleep,
        progress=False,
    )
    return Auth(
        CDSE,
        {host},
        CDSE.credentials(),
        scheme="bearer",
        token_getter=cdse_token_getter(token_client, token_url),
    )


def cdse_filter(query: Query, product_type: str = "IW_GRDH_1S") -> str:
    """The OData ``$filter`` expression for a query."""

    def attr(kind: str, name: str, op: str, value: str) -> str:
        return (
            f"Attributes/OData.CSC.{kind}Attribute/any(att:att/Name eq '{name}' and "
            f"att/OData.CSC.{kind}Attribute/Value {op} {value})"
        )

    parts = [
        "Collection/Name eq 'SENTINEL-1'",
        attr("String", "productType", "eq", f"'{product_type}'"),
        f"OData.CSC.Intersects(area=geography'SRID=4326;{bbox_wkt(query.bbox)}')",
        f"ContentDate/Start ge {_iso(query.start)}",
        f"ContentDate/Start lt {_iso(query.end)}",
    ]
    if query.direction:
        parts.append(attr("String", "orbitDirection", "eq", f"'{query.direction}'"))
    if query.relative_orbits:
        ors = " or ".join(
            attr("Integer", "relativeOrbitNumber", "eq", str(r)) for r in query.relative_orbits
        )
        parts.append(f"({ors})")
    return " and ".join(parts)


def _cdse_attrs(item: dict) -> dict[str, Any]:
    return {
        a.get("Name"): a.get("Value") for a in item.get("Attributes") or [] if isinstance(a, dict)
    }


def cdse_checksum(item: dict) -> tuple[str, str] | None:
    """(algorithm, hex digest) of a CDSE OData product or orbit item, or None: the
    first checksum of a known algorithm the catalogue lists (products and orbit files share
    the format)."""
    for c in item.get("Checksum") or []:
        algo = str(c.get("Algorithm", "")).lower()
        if algo in ("md5", "sha256", "sha1", "sha3-256") and c.get("Value"):
            return algo.replace("-", "_") if algo.startswith("sha3") else algo, str(
                c["Value"]
            ).lower()
    return None


def _cdse_footprint(item: dict) -> str | None:
    fp = item.get("Footprint")
    if isinstance(fp, str) and ";" in fp:
        return fp.split(";", 1)[1].rstrip("'")
    return _geojson_wkt(item.get("GeoFootprint"))


def search_cdse(
    client: HttpClient,
    query: Query,
    *,
    catalogue_url: str = CDSE_CATALOGUE_URL,
    download_url: str = CDSE_DOWNLOAD_URL,
    page_size: int = 100,
) -> list[ProductHit]:
    """Query the CDSE OData catalogue, following ``@odata.nextLink`` pages (bounded)."""
    url: str | None = f"{catalogue_url.rstrip('/')}/Products"
    params: dict[str, Any] | None = {
        "$filter": cdse_filter(query),
        "$orderby": "ContentDate/Start asc",
        "$top": page_size,
        "$expand": "Attributes",
    }
    hits: list[ProductHit] = []
    for page in range(MAX_PAGES):
        doc = client.get_json(url, params=params, what=f"CDSE product search (page {page + 1})")
        if not isinstance(doc, dict) or "value" not in doc:
            raise AcquireError(f"CDSE: search answer from {url} has no 'value' list (not OData?)")
        for item in doc["value"]:
            name = item.get("Name", "")
            fields = _name_fields(name, "CDSE")
            if fields["type"] != "GRD" or fields["res"] != "H" or name.endswith("_COG.SAFE"):
                continue
            attrs = _cdse_attrs(item)
            rel = attrs.get("relativeOrbitNumber")
            rel = (
                int(rel)
                if rel is not None
                else relative_orbit_from_absolute(fields["mission"], fields["orbit"])
            )
            size = item.get("ContentLength")
            cd = item.get("ContentDate") or {}
            hits.append(
                ProductHit(
                    id=fields["id"],
                    provider="cdse",
                    url=f"{download_url.rstrip('/')}/Products({item['Id']})/$value",
                    filename=f"{fields['id']}.zip",
                    size=int(size) if size else None,
                    checksum=cdse_checksum(item),
                    start=cd.get("Start") or _compact_iso(fields["start"]),
                    stop=cd.get("End") or _compact_iso(fields["stop"]),
                    pass_direction=(str(attrs.get("orbitDirection") or "").upper() or None),
                    relative_orbit=rel,
                    polarisations=fields["polarisations"],
                    footprint=_cdse_footprint(item),
                )
            )
        url = doc.get("@odata.nextLink")
        params = None  # the next link carries the query
        if not url:
            break
    else:
        log.warning("CDSE: stopped after %d result pages", MAX_PAGES)
    return hits


# ---------------------------------------------------------------------------------------
# search + download
# ---------------------------------------------------------------------------------------
def search(
    client: HttpClient, query: Query, provider: str = "asf", **urls: str
) -> list[ProductHit]:
    """Search ``provider`` ('asf' | 'cdse'), filter, de-duplicate, sort by sensing start."""
    if provider == "asf":
        raw = search_asf(client, query, **{k: v for k, v in urls.items() if k == "search_url"})
    elif provider == "cdse":
        raw = search_cdse(
            client,
            query,
            **{k: v for k, v in urls.items() if k in ("catalogue_url", "download_url")},
        )
    else:
        raise SarsslError(f"--provider {provider!r}: asf or cdse")
    kept: dict[str, ProductHit] = {}
    for hit in raw:
        why = query.keep(hit)
        if why:
            log.info("skip %s: %s", hit.id, why)
        elif hit.id not in kept:
            kept[hit.id] = hit
    hits = sorted(kept.values(), key=lambda h: (h.start, h.id))
    log.info("%s: %d product(s) found, %d kept", provider.upper(), len(raw), len(hits))
    return hits


def download_products(
    client: HttpClient, hits: Sequence[ProductHit], out_dir: str | Path
) -> list[Path]:
    """Download every hit to ``out_dir/{id}.zip`` (resumable, verified, atomic)."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    paths = []
    for hit in tqdm(
        hits, desc="products", unit="product", disable=not client.progress or len(hits) < 2
    ):
        paths.append(
            client.download(
                hit.url,
                out_dir / hit.filename,
                size=hit.size,
                checksum=hit.checksum,
                what=f"product {hit.id}",
            )
        )
    return paths
