"""Sentinel-1 precise (POEORB) or restituted (RESORB) orbit files covering acquisitions.

ESA's orbit files (EOF, XML) are named::

    S1A_OPER_AUX_POEORB_OPOD_20210208T122356_V20210118T225942_20210120T005942.EOF

with the production time and the validity interval ``V<start>_<stop>``. POEORB (precise,
~5 cm, available ~20 days after sensing, each file valid ~26 h) is preferred; RESORB
(restituted, ~10 cm, within hours, valid ~3 h) is the fallback for recent scenes. A file is
usable when its validity covers the acquisition with :data:`sarssl.sar.geometry.ORBIT_MARGIN_S`
to spare on both sides (the orbit interpolator needs state vectors around the scene), the
same rule :func:`sarssl.sar.geometry.find_orbit_file` applies when ``preprocess --orbit-dir``
picks one; among usable files the most recently produced wins.

Providers (base URLs configurable):

- ``step`` (default, no credentials): ESA's SNAP mirror
  ``https://step.esa.int/auxdata/orbits/Sentinel-1/{POEORB|RESORB}/{S1A}/{YYYY}/{MM}/``,
  directory listings of ``*.EOF.zip``.
- ``asf``: ``https://s1qc.asf.alaska.edu/aux_poeorb/`` and ``aux_resorb/`` listings of
  ``*.EOF`` (NASA Earthdata credentials, as for ASF products).
- ``cdse``: the CDSE OData catalogue (``Name`` starting ``S1A_OPER_AUX_POEORB``, validity
  covering the scene) and its authenticated download (CDSE credentials).

Files are saved under their own name in ``--out-dir`` (``.EOF`` or ``.EOF.zip``, both read by
:func:`sarssl.sar.geometry.read_eof`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import re
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, SarsslError
from ..sar.safe import parse_product_name
from .http import AcquireError, HttpClient, NotFoundError

log = logging.getLogger(__name__)

STEP_URL = "https://step.esa.int/auxdata/orbits/Sentinel-1"
ASF_ORBIT_URL = "https://s1qc.asf.alaska.edu"
KINDS = ("POEORB", "RESORB")
#: Seconds of orbit needed before and after the scene (as in sarssl.sar.geometry).
ORBIT_MARGIN_S = 60.0

EOF_NAME = re.compile(
    r"(?P<mission>S1[A-D])_OPER_AUX_(?P<kind>POEORB|RESORB)_OPOD_(?P<produced>\d{8}T\d{6})_"
    r"V(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})\.EOF(?:\.zip)?"
)


@dataclass(frozen=True)
class Acquisition:
    """What an orbit search needs to know about a product: mission and sensing interval."""

    id: str
    mission: str
    start: dt.datetime
    stop: dt.datetime


@dataclass(frozen=True)
class OrbitFile:
    name: str
    mission: str
    kind: str
    produced: dt.datetime
    start: dt.datetime
    stop: dt.datetime
    url: str | None = None
    size: int | None = None
    checksum: tuple[str, str] | None = None

    def covers(self, acq: Acquisition, margin_s: float = ORBIT_MARGIN_S) -> bool:
        m = dt.timedelta(seconds=margin_s)
        return (
            self.mission == acq.mission
            and self.start <= acq.start - m
            and self.stop >= acq.stop + m
        )


def _compact(s: str) -> dt.datetime:
    return dt.datetime.strptime(s, "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)


def parse_orbit_name(name: str, url: str | None = None) -> OrbitFile | None:
    m = EOF_NAME.fullmatch(name)
    if not m:
        return None
    return OrbitFile(
        name=name,
        mission=m["mission"],
        kind=m["kind"],
        produced=_compact(m["produced"]),
        start=_compact(m["start"]),
        stop=_compact(m["stop"]),
        url=url,
    )


def acquisition_from_product(product: str | os.PathLike) -> Acquisition:
    """Mission and sensing times from a product name or path (.zip / .SAFE / bare id)."""
    name = Path(product).name.rstrip("/")
    fields = parse_product_name(name)
    if fields is None:
        raise InputError(
            f"product {product}: not a Sentinel-1 product name (S1X_MM_TTTR_LFPP_start_stop_...)"
        )
    return Acquisition(
        id=fields["id"],
        mission=fields["mission"],
        start=_compact(fields["start"]),
        stop=_compact(fields["stop"]),
    )


def expand_products(items: Iterable[str | os.PathLike]) -> list[Acquisition]:
    """Product names/paths; a folder that is not a .SAFE stands for the products inside it."""
    acqs: list[Acquisition] = []
    for item in items:
        p = Path(item)
        if p.is_dir() and p.suffix.upper() != ".SAFE":
            inner = sorted(
                q for q in p.iterdir() if q.suffix.lower() == ".zip" or q.suffix.upper() == ".SAFE"
            )
            if not inner:
                raise InputError(f"product folder {p}: no .zip or .SAFE products inside")
            acqs.extend(acquisition_from_product(q) for q in inner)
        else:
            acqs.append(acquisition_from_product(p))
    return acqs


def best_orbit(candidates: Iterable[OrbitFile], acq: Acquisition, kind: str) -> OrbitFile | None:
    """The most recently produced file of ``kind`` covering ``acq``, or None."""
    usable = [c for c in candidates if c.kind == kind and c.covers(acq)]
    return max(usable, key=lambda c: (c.produced, c.name)) if usable else None


def links_in_listing(html: str, base: str) -> list[OrbitFile]:
    """Orbit files named in a directory-listing page (names found in the text/links)."""
    seen: dict[str, OrbitFile] = {}
    for m in EOF_NAME.finditer(html):
        name = m.group(0)
        if name not in seen:
            seen[name] = parse_orbit_name(name, base.rstrip("/") + "/" + name)
    return list(seen.values())


# ---------------------------------------------------------------------------------------
# providers: each returns candidate OrbitFiles for (acquisition, kind)
# ---------------------------------------------------------------------------------------
def _listing(client: HttpClient, url: str) -> list[OrbitFile]:
    try:
        html = client.get_bytes(url, what=f"orbit listing {url}").decode("utf-8", "replace")
    except NotFoundError:
        log.info("no orbit listing at %s", url)
        return []
    return links_in_listing(html, url)


def candidates_step(
    client: HttpClient, acq: Acquisition, kind: str, base_url: str = STEP_URL
) -> list[OrbitFile]:
    """STEP mirror: month folders by validity start; look in the months of start-1 d and start."""
    months = sorted({(d.year, d.month) for d in (acq.start - dt.timedelta(days=1), acq.start)})
    out: list[OrbitFile] = []
    for y, m in months:
        out += _listing(client, f"{base_url.rstrip('/')}/{kind}/{acq.mission}/{y:04d}/{m:02d}/")
    return out


def candidates_asf(
    client: HttpClient, acq: Acquisition, kind: str, base_url: str = ASF_ORBIT_URL
) -> list[OrbitFile]:
    return _listing(client, f"{base_url.rstrip('/')}/aux_{kind.lower()}/")


def candidates_cdse(
    client: HttpClient, acq: Acquisition, kind: str, catalogue_url: str, download_url: str
) -> list[OrbitFile]:
    """CDSE OData: auxiliary products whose validity (ContentDate) covers the acquisition."""
    m = dt.timedelta(seconds=ORBIT_MARGIN_S)
    iso = "%Y-%m-%dT%H:%M:%S.000Z"
    flt = (
        f"Collection/Name eq 'SENTINEL-1' and startswith(Name,'{acq.mission}_OPER_AUX_{kind}') and "
        f"ContentDate/Start lt {(acq.start - m).strftime(iso)} and "
        f"ContentDate/End gt {(acq.stop + m).strftime(iso)}"
    )
    doc = client.get_json(
        f"{catalogue_url.rstrip('/')}/Products",
        params={"$filter": flt, "$orderby": "ContentDate/Start desc", "$top": 20},
        what=f"CDSE {kind} search for {acq.id}",
    )
    out = []
    for item in doc.get("value", []) if isinstance(doc, dict) else []:
        name = str(item.get("Name", ""))
        parsed = parse_orbit_name(name) or parse_orbit_name(name + ".EOF")
        if parsed is None:
            continue
        from .sentinel1 import cdse_checksum

        out.append(
            dataclasses.replace(
                parsed,
                url=f"{download_url.rstrip('/')}/Products({item['Id']})/$value",
                size=int(item["ContentLength"]) if item.get("ContentLength") else None,
                checksum=cdse_checksum(item),
            )
        )
    return out


# ---------------------------------------------------------------------------------------
def fetch_orbit(client: HttpClient, orbit: OrbitFile, out_dir: Path) -> Path:
    """Download one orbit file; a zip is stored as ``NAME.EOF.zip``, plain XML as ``NAME.EOF``."""
    base = orbit.name[:-4] if orbit.name.endswith(".zip") else orbit.name
    for existing in (out_dir / base, out_dir / (base + ".zip")):
        if existing.exists():
            log.info("orbit %s: already present (%s)", base, existing)
            return existing
    staging = out_dir / (base + ".download")
    client.download(
        orbit.url, staging, size=orbit.size, checksum=orbit.checksum, what=f"orbit {base}"
    )
    final = out_dir / (base + ".zip") if zipfile.is_zipfile(staging) else out_dir / base
    os.replace(staging, final)
    return final


def acquire_orbits(
    client: HttpClient,
    products: Sequence[str | os.PathLike],
    out_dir: str | Path,
    *,
    provider: str = "step",
    kinds: Sequence[str] = KINDS,
    base_url: str | None = None,
    catalogue_url: str | None = None,
    download_url: str | None = None,
) -> dict[str, Path]:
    """For each product, download the best POEORB (else RESORB) file; {product id: path}.

    Raises :class:`AcquireError` naming the products for which no kind of orbit exists.
    """
    from tqdm import tqdm

    from .sentinel1 import CDSE_CATALOGUE_URL, CDSE_DOWNLOAD_URL

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for k in kinds:
        if k not in KINDS:
            raise SarsslError(f"orbit kind {k!r}: POEORB or RESORB")
    acqs = expand_products(products)
    cache: dict[tuple[str, str], list[OrbitFile]] = {}
    result: dict[str, Path] = {}
    missing = []
    for acq in tqdm(
        acqs, desc="orbits", unit="product", disable=not client.progress or len(acqs) < 2
    ):
        chosen = None
        for kind in kinds:
            if provider == "step":
                key = (kind, f"{acq.mission}{acq.start:%Y%m%d}")
                if key not in cache:
                    cache[key] = candidates_step(client, acq, kind, base_url or STEP_URL)
            elif provider == "asf":
                key = (kind, "all")
                if key not in cache:
                    cache[key] = candidates_asf(client, acq, kind, base_url or ASF_ORBIT_URL)
            elif provider == "cdse":
                key = (kind, acq.id)
                cache[key] = candidates_cdse(
                    client,
                    acq,
                    kind,
                    catalogue_url or CDSE_CATALOGUE_URL,
                    download_url or CDSE_DOWNLOAD_URL,
                )
            else:
                raise SarsslError(f"--provider {provider!r}: step, asf or cdse")
            chosen = best_orbit(cache[key], acq, kind)
            if chosen is not None:
                break
            log.info("%s: no %s file covers %s..%s", acq.id, kind, acq.start, acq.stop)
        if chosen is None:
            missing.append(acq.id)
            continue
        log.info("%s: %s", acq.id, chosen.name)
        result[acq.id] = fetch_orbit(client, chosen, out_dir)
    if missing:
        raise AcquireError(
            f"no {'/'.join(kinds)} orbit file from {provider} covers: {', '.join(missing)} "
            "(POEORB appears ~20 days after sensing; "
            "RESORB is kept only ~3 months on some mirrors)"
        )
    return result
