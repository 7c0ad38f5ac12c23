"""Sentinel-1 GRD product reader: ``.SAFE`` folders and zipped SAFE products, read in place.

A Sentinel-1 Level-1 product (ESA "Sentinel-1 Product Specification", S1-RS-MDA-52-7441)
is a SAFE folder::

    S1A_IW_GRDH_1SDV_20210119T031653_20210119T031718_036201_043ED0_8255.SAFE/
        manifest.safe                      XFDU manifest: product-level metadata + file list
        annotation/s1a-iw-grd-vv-....xml   product annotation (timing, geometry, GCPs, orbit)
        annotation/calibration/calibration-s1a-iw-grd-vv-....xml   calibration LUTs
        annotation/calibration/noise-s1a-iw-grd-vv-....xml         thermal-noise LUTs
        measurement/s1a-iw-grd-vv-....tiff                         uint16 DN image

distributed as a zip holding that folder. :func:`open_product` reads either form without
unpacking: XML through :mod:`zipfile`, the measurement TIFFs through GDAL's ``/vsizip/``.
Only the manifest is parsed when a product is opened (cheap: the catalogue scans many
products); annotations, LUTs and measurements are read on demand and cached.

The product name encodes ``MMM_BB_TTTR_LFPP_START_STOP_ORBIT_DATATAKE_UNIQUE`` (mission
S1A/S1B/S1C, beam mode IW/EW/SM, product type GRD + resolution class H/M/F, level 1,
class S, polarisation SV/DV/SH/DH, start/stop UTC, absolute orbit, mission data-take id,
product unique id).

Relative orbit (track) numbers follow ESA's repeat cycle of 175 orbits in 12 days:
``relative = (absolute - 73) % 175 + 1`` for S1A and ``(absolute - 27) % 175 + 1`` for
S1B; for S1C (launched Dec 2024, flying S1B's former slot) ``(absolute - 172) % 175 + 1``,
the offset MintPy uses (not verified against an S1C product here). The manifest's
``safe:relativeOrbitNumber`` is used when present and cross-checked against the formula
(a disagreement is logged); the formula only fills in when the manifest lacks it.

What sarssl processes is checked in one place, :func:`validate_product` (the catalogue and
both ``preprocess`` backends call it): a Sentinel-1 (S1A-S1D) **IW GRD** product (GRDH or
GRDM; SLC, RAW, OCN and the EW/SM/WV modes are refused) whose name (the file name and the
SAFE folder inside a zip) agrees with its manifest on mission, mode, product type, product
class, polarisations, start/stop time and absolute orbit. EW is refused because nothing in
this code or its tests has been checked on EW products (5 sub-swaths, HH+HV, GRDM at 40 m;
the composites and models expect VV+VH). :func:`check_measurements` compares each
measurement with the manifest's ``byteStream`` entry: the size always, the MD5 (streamed,
and for zipped products read through :mod:`zipfile`, which also checks the member's
CRC-32) unless skipped.

The product unique id (last name field) is ESA's CRC-16/CCITT of ``manifest.safe``
(``binascii.crc_hqx(manifest, 0xFFFF)``; true for all four reference products). It is
compared and a difference logged at debug level only: edited manifests (test fixtures) and
``sarssl simulate`` products (a seeded id) do not keep that relation.
"""

from __future__ import annotations

import binascii
import functools
import hashlib
import logging
import os
import re
import time
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from lxml import etree
from shapely.geometry import Polygon

from ..errors import InputError
from .window import PixelWindow

if TYPE_CHECKING:  # pragma: no cover
    from .calibration import CalibrationLUT, NoiseLUT

log = logging.getLogger(__name__)

#: Bundled real product metadata (see ``demo/templates/ATTRIBUTION.md``).
TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "demo" / "templates"
TEMPLATE_NAMES = ("S1B_rome", "S1A_chimoio", "S1B_noisefree")

PRODUCT_NAME_RE = re.compile(
    r"^(?P<mission>S1[A-D])_(?P<mode>IW|EW|SM|S[1-6]|WV)_(?P<type>GRD|SLC|RAW|OCN)"
    r"(?P<res>[HMF_])_(?P<level>[0-2])(?P<klass>[SA])(?P<pol>SV|DV|SH|DH|VV|HH|VH|HV)_"
    r"(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})_(?P<orbit>\d{6})_"
    r"(?P<datatake>[0-9A-F]{6})_(?P<unique>[0-9A-F]{4})$"
)
POLARISATION_CODES = {
    "SV": ["VV"],
    "DV": ["VV", "VH"],
    "SH": ["HH"],
    "DH": ["HH", "HV"],
    "VV": ["VV"],
    "HH": ["HH"],
    "VH": ["VH"],
    "HV": ["HV"],
}
#: Output band order of the polarisations (:meth:`Product.select_polarisations`).
POL_ORDER = ("VV", "VH", "HH", "HV")
#: Offsets of the relative-orbit formula (absolute - offset) % 175 + 1.
RELATIVE_ORBIT_OFFSET = {"S1A": 73, "S1B": 27, "S1C": 172}

#: What sarssl processes (:func:`validate_product`).
SUPPORTED_MISSIONS = ("S1A", "S1B", "S1C", "S1D")
SUPPORTED_MODES = ("IW",)
SUPPORTED_PRODUCT_TYPES = ("GRD",)
SUPPORTED_RESOLUTIONS = ("H", "M")
#: Product names carry start/stop times truncated to whole seconds.
NAME_TIME_TOLERANCE = np.timedelta64(1500, "ms")
#: Bytes per read when a measurement is hashed.
CHECKSUM_CHUNK = 8 << 20


def md5_of(fh) -> tuple[str, int]:
    """MD5 hex digest and length of a binary stream, read in :data:`CHECKSUM_CHUNK` pieces."""
    h = hashlib.md5()
    n = 0
    while chunk := fh.read(CHECKSUM_CHUNK):
        h.update(chunk)
        n += len(chunk)
    return h.hexdigest(), n


NS = {
    "xfdu": "urn:ccsds:schema:xfdu:1",
    "safe": "http://www.esa.int/safe/sentinel-1.0",
    "s1": "http://www.esa.int/safe/sentinel-1.0/sentinel-1",
    "s1sarl1": "http://www.esa.int/safe/sentinel-1.0/sentinel-1/sar/level-1",
    "gml": "http://www.opengis.net/gml",
}

# manifest repID -> our file kind
_REP_KIND = {
    "s1Level1ProductSchema": "annotation",
    "s1Level1CalibrationSchema": "calibration",
    "s1Level1NoiseSchema": "noise",
    "s1Level1MeasurementSchema": "measurement",
}
# fallback glob-like patterns (regex on the member path relative to the SAFE root)
_KIND_PATTERNS = {
    "annotation": r"^annotation/s1[a-d]-[a-z0-9]+-[a-z]+-(?P<pol>[hv]{2})-.*\.xml$",
    "calibration": (
        r"^annotation/calibration/calibration-s1[a-d]-[a-z0-9]+-[a-z]+-(?P<pol>[hv]{2})-.*\.xml$"
    ),
    "noise": r"^annotation/calibration/noise-s1[a-d]-[a-z0-9]+-[a-z]+-(?P<pol>[hv]{2})-.*\.xml$",
    "measurement": r"^measurement/s1[a-d]-[a-z0-9]+-[a-z]+-(?P<pol>[hv]{2})-.*\.tiff?$",
}
_POL_IN_NAME = re.compile(r"s1[a-d]-[a-z0-9]+-[a-z]+-(?P<pol>[hv]{2})-", re.IGNORECASE)


def template_path(name: str) -> Path:
    """The bundled SAFE folder of template ``name`` (S1B_rome, S1A_chimoio, S1B_noisefree).

    The templates are real Copernicus Sentinel-1 product metadata (no measurement TIFFs)
    shipped inside the package so nothing outside it is needed to run the demo.
    """
    if name not in TEMPLATE_NAMES:
        raise InputError(
            f"unknown product template {name!r}: choose one of {', '.join(TEMPLATE_NAMES)}"
        )
    folder = TEMPLATES_DIR / name
    safes = sorted(folder.glob("*.SAFE"))
    if len(safes) != 1:
        raise InputError(f"product template {name!r}: expected one .SAFE folder in {folder}")
    return safes[0]


def bundled_dem_path() -> Path:
    """The bundled 30 m DEM crop around Rome (EPSG:9707 = WGS 84 + EGM96 height; the shared
    data README calls it EGM2008, but its CRS and sarssl.sar.dem say EGM96)."""
    path = TEMPLATES_DIR / "dem" / "Rome-30m-DEM.tif"
    if not path.is_file():
        raise InputError(f"bundled DEM missing: {path}")
    return path


class InvalidProductError(InputError):
    """A readable product sarssl must not use (wrong type, or a name that disagrees with
    the manifest); ``problems`` lists each reason, the message names the product."""

    def __init__(self, path: str | os.PathLike, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        super().__init__(f"product {path}: " + "; ".join(self.problems))


def parse_product_name(name: str) -> dict[str, Any] | None:
    """Fields of a Sentinel-1 product name (with or without .SAFE/.zip), or None."""
    stem = name
    for suffix in (".zip", ".SAFE", ".safe"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    m = PRODUCT_NAME_RE.match(stem)
    if m is None:
        return None
    d = m.groupdict()
    d["id"] = stem
    d["polarisations"] = list(POLARISATION_CODES[d["pol"]])
    d["orbit"] = int(d["orbit"])
    return d


def relative_orbit_from_absolute(mission: str, absolute_orbit: int) -> int | None:
    """Relative orbit (track, 1..175) from the absolute orbit (S1A, S1B, S1C); else None."""
    offset = RELATIVE_ORBIT_OFFSET.get(mission)
    if offset is None:
        return None
    return (int(absolute_orbit) - offset) % 175 + 1


def parse_time(text: str) -> np.datetime64:
    """ISO-8601 UTC time of the annotation/manifest (no zone suffix) -> datetime64[ns]."""
    text = text.strip().rstrip("Z")
    return np.datetime64(text, "ns")


# --------------------------------------------------------------------------------------
# storage: a SAFE folder or a zip holding one
# --------------------------------------------------------------------------------------


class _Store:
    """Read members of a SAFE product, given as paths relative to the SAFE root."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, rel: str) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def exists(self, rel: str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def members(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def gdal_path(self, rel: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def open(self, rel: str) -> Any:  # pragma: no cover - abstract
        """A binary file object reading member ``rel`` from its start."""
        raise NotImplementedError

    def size(self, rel: str) -> int:  # pragma: no cover - abstract
        """Size of member ``rel`` in bytes (uncompressed)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open file handles (reopened when needed)."""


class _FolderStore(_Store):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.root = path
        self.safe_name = path.name

    def read(self, rel: str) -> bytes:
        try:
            return (self.root / rel).read_bytes()
        except OSError as exc:
            raise InputError(f"product {self.path}: cannot read {rel}: {exc}") from exc

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def members(self) -> list[str]:
        out = []
        for dirpath, _dirs, files in os.walk(self.root):
            for f in files:
                out.append(Path(dirpath, f).relative_to(self.root).as_posix())
        return sorted(out)

    def gdal_path(self, rel: str) -> str:
        return str(self.root / rel)

    def open(self, rel: str) -> Any:
        try:
            return open(self.root / rel, "rb")
        except OSError as exc:
            raise InputError(f"product {self.path}: cannot read {rel}: {exc}") from exc

    def size(self, rel: str) -> int:
        try:
            return (self.root / rel).stat().st_size
        except OSError as exc:
            raise InputError(f"product {self.path}: cannot read {rel}: {exc}") from exc


class _ZipStore(_Store):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        try:
            self._zf: zipfile.ZipFile | None = zipfile.ZipFile(path)
            names = self._zf.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise InputError(
                f"product {path}: not a readable zip (truncated or corrupt?): {exc}"
            ) from exc
        manifests = [n for n in names if PurePosixPath(n).name == "manifest.safe"]
        if not manifests:
            raise InputError(f"product {path}: zip holds no manifest.safe (not a SAFE product)")
        # the SAFE root inside the zip: the folder holding the (shallowest) manifest
        manifest = min(manifests, key=lambda n: n.count("/"))
        self.prefix = manifest[: -len("manifest.safe")]
        self.safe_name = PurePosixPath(self.prefix).name if self.prefix else path.stem
        self._names = {n[len(self.prefix) :] for n in names if n.startswith(self.prefix)}

    @property
    def zf(self) -> zipfile.ZipFile:
        """The open zip (reopened after :meth:`close`)."""
        if self._zf is None:
            try:
                self._zf = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
                raise InputError(
                    f"product {self.path}: not a readable zip (truncated or corrupt?): {exc}"
                ) from exc
        return self._zf

    def close(self) -> None:
        if self._zf is not None:
            self._zf.close()
            self._zf = None

    def read(self, rel: str) -> bytes:
        try:
            return self.zf.read(self.prefix + rel)
        except KeyError as exc:
            raise InputError(f"product {self.path}: zip has no member {self.prefix + rel}") from exc
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise InputError(
                f"product {self.path}: cannot read {rel} from zip (truncated or corrupt?): {exc}"
            ) from exc

    def exists(self, rel: str) -> bool:
        return rel in self._names

    def members(self) -> list[str]:
        return sorted(n for n in self._names if n and not n.endswith("/"))

    def gdal_path(self, rel: str) -> str:
        return f"/vsizip/{self.path.resolve()}/{self.prefix}{rel}"

    def open(self, rel: str) -> Any:
        """The member as :class:`zipfile.ZipExtFile`: reading it to the end checks its
        CRC-32 (``zipfile.BadZipFile`` on a mismatch)."""
        try:
            return self.zf.open(self.prefix + rel)
        except KeyError as exc:
            raise InputError(f"product {self.path}: zip has no member {self.prefix + rel}") from exc
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise InputError(
                f"product {self.path}: cannot read {rel} from zip (truncated or corrupt?): {exc}"
            ) from exc

    def size(self, rel: str) -> int:
        try:
            return self.zf.getinfo(self.prefix + rel).file_size
        except KeyError as exc:
            raise InputError(f"product {self.path}: zip has no member {self.prefix + rel}") from exc


def _open_store(path: Path) -> _Store:
    if not path.exists():
        raise InputError(f"product {path}: no such file or directory")
    if path.is_dir():
        if path.name == "manifest.safe":  # pragma: no cover - a dir named like that
            raise InputError(f"product {path}: not a SAFE folder")
        if not (path / "manifest.safe").is_file():
            raise InputError(f"product {path}: folder has no manifest.safe (not a SAFE product)")
        return _FolderStore(path)
    if path.name == "manifest.safe":
        return _FolderStore(path.parent)
    if not zipfile.is_zipfile(path):
        raise InputError(
            f"product {path}: neither a .SAFE folder nor a zip archive (truncated or corrupt "
            f"zip, or another file type)"
        )
    return _ZipStore(path)


# --------------------------------------------------------------------------------------
# annotation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwathBounds:
    """One rectangle of a sub-swath in the merged GRD image (inclusive line/sample bounds).

    GRD products are assembled from the IW1..IW3 (EW1..EW5) sub-swaths; the annotation's
    ``swathMerging/swathMergeList`` gives, per sub-swath, a list of such rectangles (one per
    block of lines where the seam position is constant). The thermal-noise azimuth vectors
    of IPF >= 2.9 are given on the same rectangles.
    """

    swath: str
    first_line: int
    first_sample: int
    last_line: int
    last_sample: int
    azimuth_time: np.datetime64 | None = None


def _text(root: etree._Element, path: str, what: str, source: str) -> str:
    node = root.find(path)
    if node is None or node.text is None:
        raise InputError(f"{source}: missing {what} ({path})")
    return node.text.strip()


def parse_xml(data: bytes, source: str) -> etree._Element:
    """Parse XML bytes; malformed XML raises InputError naming ``source``."""
    try:
        return etree.fromstring(
            data, parser=etree.XMLParser(huge_tree=True, remove_blank_text=True)
        )
    except etree.XMLSyntaxError as exc:
        raise InputError(f"{source}: malformed XML: {exc}") from exc


class Annotation:
    """The product annotation of one polarisation (``annotation/s1?-*-grd-POL-*.xml``).

    Exposes what the reader itself needs (image size, timing, pixel spacing, swath merge);
    the radar geometry (orbit, GCP grid, slant/ground range polynomials, forward model) is
    :class:`sarssl.sar.geometry.RadarGeometry`, built lazily from :attr:`root` by
    :attr:`geometry`.
    """

    def __init__(self, root: etree._Element, source: str) -> None:
        self.root = root
        self.source = source
        if root.tag != "product":
            raise InputError(f"{source}: not a Sentinel-1 product annotation (root <{root.tag}>)")
        t = functools.partial(_text, root, source=source)
        try:
            self.mission: str = t("adsHeader/missionId", "mission id")
            self.polarisation: str = t("adsHeader/polarisation", "polarisation").upper()
            self.mode: str = t("adsHeader/mode", "mode")
            self.swath: str = t("adsHeader/swath", "swath")
            self.product_type: str = t("adsHeader/productType", "product type")
            info = "imageAnnotation/imageInformation/"
            self.number_of_lines: int = int(t(info + "numberOfLines", "number of lines"))
            self.number_of_samples: int = int(t(info + "numberOfSamples", "number of samples"))
            self.first_line_time: np.datetime64 = parse_time(
                t(info + "productFirstLineUtcTime", "first line time")
            )
            self.last_line_time: np.datetime64 = parse_time(
                t(info + "productLastLineUtcTime", "last line time")
            )
            #: seconds between consecutive output lines
            self.azimuth_time_interval: float = float(
                t(info + "azimuthTimeInterval", "azimuth time interval")
            )
            #: ground-range pixel spacing, metres (GRD: 10 m for IW GRDH)
            self.range_pixel_spacing: float = float(
                t(info + "rangePixelSpacing", "range pixel spacing")
            )
            #: azimuth pixel spacing, metres
            self.azimuth_pixel_spacing: float = float(
                t(info + "azimuthPixelSpacing", "azimuth pixel spacing")
            )
            #: two-way slant range time of the first sample, seconds
            self.slant_range_time: float = float(t(info + "slantRangeTime", "slant range time"))
            self.incidence_angle_mid_swath: float = float(
                t(info + "incidenceAngleMidSwath", "mid-swath incidence angle")
            )
            pi = "generalAnnotation/productInformation/"
            self.radar_frequency: float = float(t(pi + "radarFrequency", "radar frequency"))
            self.pass_direction: str = t(pi + "pass", "pass").upper()
        except ValueError as exc:
            raise InputError(f"{source}: bad number in annotation: {exc}") from exc
        self.swath_merge: list[SwathBounds] = self._parse_swath_merge()

    @property
    def shape(self) -> tuple[int, int]:
        """(lines, samples) of the measurement image."""
        return self.number_of_lines, self.number_of_samples

    def _parse_swath_merge(self) -> list[SwathBounds]:
        out: list[SwathBounds] = []
        for sm in self.root.iterfind("swathMerging/swathMergeList/swathMerge"):
            swath = (sm.findtext("swath") or "").strip()
            for b in sm.iterfind("swathBoundsList/swathBounds"):
                az = b.findtext("azimuthTime")
                out.append(
                    SwathBounds(
                        swath=swath,
                        first_line=int(b.findtext("firstAzimuthLine")),
                        first_sample=int(b.findtext("firstRangeSample")),
                        last_line=int(b.findtext("lastAzimuthLine")),
                        last_sample=int(b.findtext("lastRangeSample")),
                        azimuth_time=parse_time(az) if az else None,
                    )
                )
        return out

    def line_times(self, lines: np.ndarray | float) -> np.ndarray:
        """Zero-Doppler azimuth time (datetime64[ns]) of (fractional) image lines."""
        ns = np.rint(np.asarray(lines, dtype=np.float64) * self.azimuth_time_interval * 1e9)
        return self.first_line_time + ns.astype("timedelta64[ns]")

    def gcps(self) -> dict[str, np.ndarray]:
        """The geolocation grid as flat arrays: line, pixel, latitude, longitude, height,
        incidence_angle (deg), slant_range_time (s), azimuth_time (datetime64[ns])."""
        pts = self.root.findall("geolocationGrid/geolocationGridPointList/geolocationGridPoint")
        if not pts:
            raise InputError(f"{self.source}: no geolocation grid points")
        out: dict[str, np.ndarray] = {}
        for key, tag in (
            ("line", "line"),
            ("pixel", "pixel"),
            ("latitude", "latitude"),
            ("longitude", "longitude"),
            ("height", "height"),
            ("incidence_angle", "incidenceAngle"),
            ("slant_range_time", "slantRangeTime"),
        ):
            out[key] = np.array([float(p.findtext(tag)) for p in pts])
        out["azimuth_time"] = np.array([parse_time(p.findtext("azimuthTime")) for p in pts])
        return out

    @functools.cached_property
    def geometry(self) -> Any:
        """:class:`sarssl.sar.geometry.RadarGeometry` of this annotation (built once)."""
        from .geometry import RadarGeometry

        return RadarGeometry.from_annotation(self.root)

    def __repr__(self) -> str:
        return (
            f"Annotation({self.mission} {self.mode} {self.polarisation}, "
            f"{self.number_of_lines}x{self.number_of_samples}, {self.source})"
        )


# --------------------------------------------------------------------------------------
# product
# --------------------------------------------------------------------------------------


@dataclass
class Product:
    """An opened Sentinel-1 product (metadata from the manifest; the rest on demand)."""

    path: Path
    id: str
    mission: str
    mode: str
    product_type: str
    resolution_class: str
    polarisations: list[str]
    start_time: np.datetime64
    stop_time: np.datetime64
    pass_direction: str
    absolute_orbit: int
    relative_orbit: int
    ipf_version: str
    footprint: Polygon
    files: dict[tuple[str, str], str] = field(repr=False)
    _store: _Store = field(repr=False)
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    #: when the product was made (the manifest's own ``safe:processing`` stop, else start
    #: time); None when the manifest does not say
    processing_time: np.datetime64 | None = None
    #: what the manifest says the product is (:func:`validate_product` compares the names)
    _identity: dict[str, Any] = field(default_factory=dict, repr=False)
    #: member path -> (size, MD5) from the manifest's dataObjects
    _entries: dict[str, tuple[int | None, str | None]] = field(default_factory=dict, repr=False)

    # -- files ---------------------------------------------------------------------------
    def _file(self, kind: str, pol: str) -> str:
        pol = pol.upper()
        if pol not in self.polarisations:
            raise InputError(
                f"product {self.path}: polarisation {pol} not in product "
                f"(has {'+'.join(self.polarisations)})"
            )
        rel = self.files.get((kind, pol))
        if rel is None:
            raise InputError(f"product {self.path}: no {kind} file for polarisation {pol}")
        return rel

    def has(self, kind: str, pol: str) -> bool:
        """Whether the product holds a ``kind`` file (annotation, calibration, noise,
        measurement) for ``pol``."""
        return (kind, pol.upper()) in self.files

    def select_polarisations(
        self, requested: Sequence[str] | None = None, what: str | None = None
    ) -> list[str]:
        """The product's polarisations in output band order (:data:`POL_ORDER`: VV, VH, HH,
        HV), or the ``requested`` ones, each checked to be in the product (an
        :class:`~sarssl.errors.InputError` naming ``what``, default the product id, if not).
        Both ``preprocess`` backends select their bands with it."""
        have = [p.upper() for p in self.polarisations]
        if requested:
            wanted = list(dict.fromkeys(p.strip().upper() for p in requested if p.strip()))
            missing = [p for p in wanted if p not in have]
            if missing or not wanted:
                asked = ", ".join(missing) or requested
                raise InputError(
                    f"product {what or self.id}: polarisation(s) {asked!r} "
                    f"requested but the product has {', '.join(have) or 'none'}"
                )
            have = wanted
        return sorted(have, key=lambda p: POL_ORDER.index(p) if p in POL_ORDER else 99)

    def _xml(self, kind: str, pol: str) -> etree._Element:
        key = ("xml", kind, pol.upper())
        if key not in self._cache:
            rel = self._file(kind, pol)
            self._cache[key] = parse_xml(self._store.read(rel), f"product {self.path}: {rel}")
        return self._cache[key]

    def annotation(self, pol: str) -> Annotation:
        """The product annotation of ``pol`` (parsed once)."""
        key = ("annotation", pol.upper())
        if key not in self._cache:
            rel = self._file("annotation", pol)
            self._cache[key] = Annotation(
                self._xml("annotation", pol), f"product {self.path}: {rel}"
            )
        return self._cache[key]

    def calibration(self, pol: str) -> "CalibrationLUT":
        """The calibration LUTs of ``pol`` (:class:`sarssl.sar.calibration.CalibrationLUT`)."""
        from .calibration import CalibrationLUT

        key = ("calibration", pol.upper())
        if key not in self._cache:
            rel = self._file("calibration", pol)
            self._cache[key] = CalibrationLUT.from_xml(
                self._xml("calibration", pol), f"product {self.path}: {rel}"
            )
        return self._cache[key]

    def noise(self, pol: str) -> "NoiseLUT":
        """The thermal-noise LUTs of ``pol`` (:class:`sarssl.sar.calibration.NoiseLUT`)."""
        from .calibration import NoiseLUT

        key = ("noise", pol.upper())
        if key not in self._cache:
            rel = self._file("noise", pol)
            self._cache[key] = NoiseLUT.from_xml(
                self._xml("noise", pol), f"product {self.path}: {rel}", ipf_version=self.ipf_version
            )
        return self._cache[key]

    def measurement_path(self, pol: str) -> str:
        """GDAL path of the measurement TIFF of ``pol`` (``/vsizip/...`` inside a zip)."""
        return self._store.gdal_path(self._file("measurement", pol))

    def read_measurement(self, pol: str, window: Any = None) -> np.ndarray:
        """Read the DN image of ``pol`` (uint16), whole or a window.

        ``window`` is a :class:`~sarssl.sar.window.PixelWindow`, a
        :class:`rasterio.windows.Window` or a tuple ``(col_off, row_off, width, height)``
        (rasterio's order; see :meth:`~sarssl.sar.window.PixelWindow.of`) and must lie
        inside the image. The measurement size is checked against the annotation.
        """
        import rasterio

        path = self.measurement_path(pol)
        ann = self.annotation(pol)
        try:
            with warnings.catch_warnings():
                # measurements are georeferenced by GCPs in the annotation, not the TIFF
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                ds = rasterio.open(path)
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"product {self.path}: cannot open measurement {path}: {exc}") from exc
        with ds:
            if (ds.height, ds.width) != ann.shape:
                raise InputError(
                    f"product {self.path}: measurement {pol} is {ds.height}x{ds.width} "
                    f"(lines x samples) but its annotation says {ann.shape[0]}x{ann.shape[1]}"
                )
            if window is not None:
                win = PixelWindow.of(window)
                if (
                    win.col_off < 0
                    or win.row_off < 0
                    or win.width <= 0
                    or win.height <= 0
                    or win.col_end > ds.width
                    or win.row_end > ds.height
                ):
                    raise InputError(
                        f"product {self.path}: window (col_off={win.col_off}, "
                        f"row_off={win.row_off}, width={win.width}, height={win.height}) "
                        f"outside the {ds.height}x{ds.width} measurement {pol}"
                    )
                window = win.to_rasterio()
            try:
                data = ds.read(1, window=window)
            except rasterio.errors.RasterioIOError as exc:
                raise InputError(
                    f"product {self.path}: cannot read measurement {path}: {exc}"
                ) from exc
        if data.dtype != np.uint16:
            raise InputError(
                f"product {self.path}: measurement {pol} has dtype {data.dtype}, expected uint16"
            )
        return data

    def manifest_entries(self) -> dict[str, tuple[int | None, str | None]]:
        """member path -> (size in bytes, lower-case MD5) from the manifest's dataObjects
        (None where the manifest gives no size or no ``checksumName="MD5"``)."""
        return self._entries

    def close(self) -> None:
        """Release the product's open file (a zip is reopened when a member is read again);
        for callers that keep many opened products, such as the catalogue."""
        self._store.close()

    def verify_measurement(self, pol: str, md5: bool = True) -> int:
        """Check the measurement file of ``pol`` against the manifest; returns the bytes read.

        The size is always compared (free). With ``md5`` the file is streamed in
        :data:`CHECKSUM_CHUNK` pieces through MD5 and compared with the manifest's; a zipped
        member is read through :mod:`zipfile`, which also checks its CRC-32 at the end, so
        corruption inside a zip is caught even where the manifest has no MD5. Raises
        :class:`~sarssl.errors.InputError` naming the product, the file and the mismatch.
        """
        rel = self._file("measurement", pol)
        size, digest = self.manifest_entries().get(rel, (None, None))
        actual = self._store.size(rel)
        if size is not None and actual != size:
            raise InputError(
                f"product {self.path}: measurement {rel} is {actual} bytes, the manifest says "
                f"{size} (truncated, replaced or corrupt file)"
            )
        if not md5:
            return 0
        if digest is None and isinstance(self._store, _FolderStore):
            log.warning(
                "product %s: the manifest has no MD5 for %s: checksum not verified", self.path, rel
            )
            return 0
        try:
            with self._store.open(rel) as fh:
                md5_hex, n = md5_of(fh)
        except zipfile.BadZipFile as exc:
            raise InputError(
                f"product {self.path}: measurement {rel}: checksum error, the zip's CRC-32 does "
                f"not match the data (corrupt zip member): {exc}"
            ) from exc
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"product {self.path}: cannot read measurement {rel}: {exc}") from exc
        if digest is None:
            log.warning(
                "product %s: the manifest has no MD5 for %s: only the zip CRC-32 checked",
                self.path,
                rel,
            )
        elif md5_hex != digest:
            raise InputError(
                f"product {self.path}: measurement {rel}: MD5 checksum mismatch (manifest "
                f"{digest}, file {md5_hex}): the file is corrupt"
            )
        return n

    def read_member(self, rel: str) -> bytes:
        """Raw bytes of one file of the product (path relative to the SAFE root)."""
        return self._store.read(rel)

    def __repr__(self) -> str:
        return (
            f"Product({self.id}, {self.pass_direction.lower()} rel. orbit {self.relative_orbit}, "
            f"{'+'.join(self.polarisations)}, IPF {self.ipf_version}, {self.path})"
        )

    @property
    def safe_name(self) -> str:
        """Name of the SAFE folder (``{id}.SAFE``)."""
        return self._store.safe_name

    @property
    def date(self) -> str:
        """Acquisition date (UTC) of the start time, ``YYYY-MM-DD``."""
        return str(self.start_time.astype("datetime64[D]"))


def open_product(path: str | os.PathLike) -> Product:
    """Open a Sentinel-1 GRD product (``.SAFE`` folder, its ``manifest.safe``, or a ``.zip``).

    Only the manifest is read here. Bad input (not a SAFE, corrupt zip, missing manifest,
    unparseable metadata) raises :class:`~sarssl.errors.InputError` naming the product.
    """
    path = Path(path)
    store = _open_store(path)
    if not store.exists("manifest.safe"):
        raise InputError(f"product {path}: missing manifest.safe")
    manifest = parse_xml(store.read("manifest.safe"), f"product {path}: manifest.safe")
    return _product_from_manifest(path, store, manifest)


def _product_from_manifest(path: Path, store: _Store, m: etree._Element) -> Product:
    src = f"product {path}: manifest.safe"

    def find(xpath: str) -> str | None:
        node = m.find(xpath, NS)
        return None if node is None or node.text is None else node.text.strip()

    name_fields = parse_product_name(store.safe_name) or parse_product_name(path.name)
    if name_fields is None:
        raise InputError(
            f"product {path}: name {store.safe_name!r} is not a Sentinel-1 product name "
            f"(MMM_BB_TTTR_LFPP_YYYYMMDDTHHMMSS_YYYYMMDDTHHMMSS_OOOOOO_DDDDDD_CCCC)"
        )
    pid = name_fields["id"]

    family_number = find(".//safe:platform/safe:number")
    mission = ("S1" + family_number) if family_number else name_fields["mission"]
    if mission != name_fields["mission"]:
        raise InputError(f"{src}: platform {mission} disagrees with the product name {pid}")
    mode = find(".//s1sarl1:instrumentMode/s1sarl1:mode") or name_fields["mode"]
    product_type = find(".//s1sarl1:productType") or name_fields["type"]
    pols = [
        n.text.strip().upper()
        for n in m.iterfind(".//s1sarl1:transmitterReceiverPolarisation", NS)
        if n.text
    ] or name_fields["polarisations"]

    start_text = find(".//safe:acquisitionPeriod/safe:startTime")
    stop_text = find(".//safe:acquisitionPeriod/safe:stopTime")
    try:
        start = (
            parse_time(start_text)
            if start_text
            else np.datetime64(_name_time(name_fields["start"]), "ns")
        )
        stop = (
            parse_time(stop_text)
            if stop_text
            else np.datetime64(_name_time(name_fields["stop"]), "ns")
        )
    except ValueError as exc:
        raise InputError(f"{src}: bad acquisition time: {exc}") from exc

    pass_dir = (find(".//s1:orbitProperties/s1:pass") or "").upper()
    if pass_dir not in ("ASCENDING", "DESCENDING"):
        raise InputError(f"{src}: missing or bad orbit pass {pass_dir!r}")

    abs_text = find(".//safe:orbitReference/safe:orbitNumber[@type='start']")
    absolute = int(abs_text) if abs_text else name_fields["orbit"]
    rel_text = find(".//safe:orbitReference/safe:relativeOrbitNumber[@type='start']")
    rel_formula = relative_orbit_from_absolute(mission, absolute)
    if rel_text:
        relative = int(rel_text)
        if rel_formula is not None and rel_formula != relative:
            log.warning(
                "%s: relative orbit %d in the manifest, %d from absolute orbit %d",
                src,
                relative,
                rel_formula,
                absolute,
            )
    elif rel_formula is not None:
        relative = rel_formula
    else:
        raise InputError(f"{src}: no relative orbit number and none derivable for {mission}")

    sw = m.find(".//safe:processing/safe:facility/safe:software", NS)
    ipf = sw.get("version", "").strip() if sw is not None else ""
    if not ipf:
        raise InputError(f"{src}: no IPF version (safe:software)")
    processing = m.find(".//safe:processing", NS)  # the outermost: this product's own step
    processing_time = None
    if processing is not None:
        when = processing.get("stop") or processing.get("start")
        try:
            processing_time = parse_time(when) if when else None
        except ValueError:
            log.warning("%s: bad processing time %r", src, when)

    coords = find(".//safe:footPrint/gml:coordinates")
    if not coords:
        raise InputError(f"{src}: no footprint (gml:coordinates)")
    try:
        latlon = [tuple(float(v) for v in pair.split(",")) for pair in coords.split()]
        footprint = Polygon([(lon, lat) for lat, lon in latlon])
    except (ValueError, TypeError) as exc:
        raise InputError(f"{src}: bad footprint coordinates {coords!r}: {exc}") from exc
    if not footprint.is_valid or footprint.area == 0:
        footprint = footprint.buffer(0)  # tolerate vertex order oddities

    files = _locate_files(store, m)
    return Product(
        path=path,
        id=pid,
        mission=mission,
        mode=mode,
        product_type=product_type,
        resolution_class=name_fields["res"],
        polarisations=pols,
        start_time=start,
        stop_time=stop,
        pass_direction=pass_dir,
        absolute_orbit=absolute,
        relative_orbit=relative,
        ipf_version=ipf,
        footprint=footprint,
        files=files,
        _store=store,
        processing_time=processing_time,
        _identity=_manifest_identity(m),
        _entries=_manifest_entries(m),
    )


def _manifest_entries(m: etree._Element) -> dict[str, tuple[int | None, str | None]]:
    """member path -> (size, lower-case MD5) of the manifest's dataObject byteStreams."""
    out: dict[str, tuple[int | None, str | None]] = {}
    for bsx in m.iterfind(".//dataObjectSection/dataObject/byteStream"):
        loc = bsx.find("fileLocation")
        if loc is None:
            continue
        href = loc.get("href", "")
        rel = href[2:] if href.startswith("./") else href
        size = (bsx.get("size") or "").strip()
        md5 = None
        for ck in bsx.iterfind("checksum"):
            if (ck.get("checksumName") or "").upper() == "MD5" and (ck.text or "").strip():
                md5 = ck.text.strip().lower()
        out[rel] = (int(size) if size.isdigit() else None, md5)
    return out


def _name_time(text: str) -> str:
    return f"{text[0:4]}-{text[4:6]}-{text[6:8]}T{text[9:11]}:{text[11:13]}:{text[13:15]}"


def _locate_files(store: _Store, m: etree._Element) -> dict[tuple[str, str], str]:
    """(kind, POL) -> member path, from the manifest's dataObjects, else by name pattern.

    Only files actually present are listed (products trimmed for distribution, like the
    bundled templates, keep manifest entries for files they no longer hold).
    """
    files: dict[tuple[str, str], str] = {}
    for obj in m.iterfind(".//dataObjectSection/dataObject"):
        kind = _REP_KIND.get(obj.get("repID", ""))
        loc = obj.find("byteStream/fileLocation")
        if kind is None or loc is None:
            continue
        href = loc.get("href", "")
        rel = href[2:] if href.startswith("./") else href
        pm = _POL_IN_NAME.search(PurePosixPath(rel).name)
        if pm is None or not store.exists(rel):
            continue
        files[(kind, pm.group("pol").upper())] = rel
    # fallback: name patterns for anything the manifest did not list
    for rel in store.members():
        for kind, pat in _KIND_PATTERNS.items():
            mm = re.match(pat, rel, re.IGNORECASE)
            if mm:
                files.setdefault((kind, mm.group("pol").upper()), rel)
    return files


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


def ipf_version_key(version: str) -> tuple[int, ...]:
    """``"003.40"`` -> ``(3, 40)`` (sortable); unparseable parts count as 0."""
    return tuple(int(p) if p.isdigit() else 0 for p in version.strip().split("."))


def _manifest_identity(m: etree._Element) -> dict[str, Any]:
    """What the manifest says the product is (None where it says nothing)."""

    def find(xpath: str) -> str | None:
        node = m.find(xpath, NS)
        return None if node is None or node.text is None else node.text.strip()

    number = find(".//safe:platform/safe:number")
    orbit = find(".//safe:orbitReference/safe:orbitNumber[@type='start']")
    datatake = find(".//s1sarl1:missionDataTakeID")
    start, stop = (find(f".//safe:acquisitionPeriod/safe:{t}") for t in ("startTime", "stopTime"))
    return {
        "family": find(".//safe:platform/safe:familyName"),
        "mission": f"S1{number}" if number else None,
        "mode": find(".//s1sarl1:instrumentMode/s1sarl1:mode"),
        "type": find(".//s1sarl1:productType"),
        "klass": find(".//s1sarl1:productClass"),
        "polarisations": sorted(
            n.text.strip().upper()
            for n in m.iterfind(".//s1sarl1:transmitterReceiverPolarisation", NS)
            if n.text
        ),
        "start": parse_time(start) if start else None,
        "stop": parse_time(stop) if stop else None,
        "orbit": int(orbit) if orbit and orbit.isdigit() else None,
        "datatake": int(datatake) if datatake and datatake.isdigit() else None,
    }


def _name_problems(name: str, f: dict[str, Any], info: dict[str, Any]) -> list[str]:
    """How the product name ``name`` (parsed into ``f``) disagrees with the manifest."""
    out = []

    def differ(what: str, in_name: Any, in_manifest: Any) -> None:
        out.append(
            f"name {name} disagrees with its manifest: {what} {in_name} in the name, "
            f"{in_manifest} in the manifest"
        )

    for key, what in (
        ("mission", "mission"),
        ("mode", "mode"),
        ("type", "product type"),
        ("klass", "product class"),
    ):
        if info[key] is not None and f[key] != info[key]:
            differ(what, f[key], info[key])
    if info["polarisations"] and sorted(f["polarisations"]) != info["polarisations"]:
        differ("polarisation", "+".join(f["polarisations"]), "+".join(info["polarisations"]))
    for key, what in (("start", "start time"), ("stop", "stop time")):
        t = np.datetime64(_name_time(f[key]), "ns")
        if info[key] is not None and abs(info[key] - t) > NAME_TIME_TOLERANCE:
            differ(what, str(t.astype("datetime64[s]")), str(info[key].astype("datetime64[us]")))
    if info["orbit"] is not None and f["orbit"] != info["orbit"]:
        differ("absolute orbit", f["orbit"], info["orbit"])
    return out


def validate_product(product: Product) -> None:
    """Raise :class:`InvalidProductError` unless ``product`` is one sarssl can process.

    Checked on the manifest (only the manifest is read; cheap enough for the catalogue):

    * a Sentinel-1 product (``safe:familyName`` SENTINEL-1) of mission S1A, S1B, S1C or S1D;
    * mode IW (EW, SM and WV are refused: see the module docstring);
    * product type GRD with resolution class H or M (GRDH, GRDM), standard class S, level 1
      (SLC, RAW and OCN products are refused);
    * every product name it carries (the ``.zip`` or ``.SAFE`` name given, and the SAFE
      folder inside a zip) agrees with the manifest on mission, mode, product type, product
      class, polarisations, start and stop time (to the second: names truncate them) and
      absolute orbit, and the file name and the SAFE folder inside are the same product.
      A ``.zip`` whose name is not a product name (``download.zip``) is named by its SAFE
      folder.

    The message names the product file and lists every problem found. Checksums are not
    read here (:func:`check_measurements`).
    """
    info = product._identity
    if not info:  # pragma: no cover - every Product comes from open_product
        raise InvalidProductError(product.path, ["no manifest metadata"])
    problems: list[str] = []
    missing = [
        what
        for key, what in (
            ("mission", "safe:platform/safe:number"),
            ("mode", "s1sarl1:mode"),
            ("type", "s1sarl1:productType"),
            ("start", "acquisitionPeriod startTime"),
            ("stop", "acquisitionPeriod stopTime"),
            ("orbit", "orbitNumber"),
        )
        if info[key] is None
    ]
    if missing:
        problems.append(
            f"manifest.safe lacks {', '.join(missing)}: cannot tell what the product is"
        )
    # the names this product carries: the path given (a zip or SAFE folder) and, for a zip,
    # the SAFE folder inside
    given = product.path.parent.name if product.path.name == "manifest.safe" else product.path.name
    names = {n: parse_product_name(n) for n in dict.fromkeys([given, product.safe_name])}
    parsed = {n: f for n, f in names.items() if f is not None}
    for name, f in {f["id"]: (n, f) for n, f in reversed(parsed.items())}.values():
        problems += _name_problems(name, f, info)  # once per distinct name
    ids = {f["id"] for f in parsed.values()}
    if len(ids) > 1:
        problems.append(
            f"file name {given} disagrees with the SAFE folder {product.safe_name} "
            f"inside it (renamed?)"
        )
    if not parsed:  # pragma: no cover - open_product refuses such products
        raise InvalidProductError(product.path, [f"{given} is not a Sentinel-1 product name"])
    name_fields = parsed.get(product.safe_name) or next(iter(parsed.values()))
    # what sarssl processes: the manifest's word first, the name's where it says nothing
    if info["family"] is not None and info["family"].upper() != "SENTINEL-1":
        problems.append(f"platform {info['family']} is not Sentinel-1")
    mission = info["mission"] or name_fields["mission"]
    if mission not in SUPPORTED_MISSIONS:
        problems.append(f"mission {mission}: sarssl processes {', '.join(SUPPORTED_MISSIONS)}")
    for mode in dict.fromkeys([info["mode"] or name_fields["mode"], name_fields["mode"]]):
        if mode not in SUPPORTED_MODES:
            problems.append(
                f"mode {mode} is not supported: sarssl processes IW products only (its "
                f"processing chain, composites and models are built and tested for IW GRD "
                f"VV+VH)"
            )
    ptypes = list(dict.fromkeys([info["type"] or name_fields["type"], name_fields["type"]]))
    for ptype in ptypes:
        if ptype not in SUPPORTED_PRODUCT_TYPES:
            problems.append(
                f"product type {ptype} is not supported: sarssl processes Level-1 GRD products "
                f"(GRDH, GRDM) only"
            )
    if ptypes == ["GRD"] and name_fields["res"] not in SUPPORTED_RESOLUTIONS:
        problems.append(
            f"resolution class GRD{name_fields['res']} is not supported: GRDH or GRDM only"
        )
    if (info["klass"] or name_fields["klass"]) != "S" or name_fields["level"] != "1":
        problems.append(
            f"product level/class {name_fields['level']}{info['klass'] or name_fields['klass']}"
            f" is not a standard Level-1 product (1S)"
        )
    if problems:
        raise InvalidProductError(product.path, problems)
    # soft checks: logged, never refused (see the module docstring)
    f = name_fields
    if info["datatake"] is not None and int(f["datatake"], 16) != info["datatake"]:
        log.debug(
            "product %s: data-take %s in the name, %06X in the manifest",
            product.path,
            f["datatake"],
            info["datatake"],
        )
    if not log.isEnabledFor(logging.DEBUG):
        return
    try:
        crc = f"{binascii.crc_hqx(product.read_member('manifest.safe'), 0xFFFF):04X}"
    except InputError:  # pragma: no cover - the manifest was read when opening
        crc = None
    if crc is not None and crc != f["unique"]:
        log.debug(
            "product %s: unique id %s in the name, CRC-16 of manifest.safe is %s "
            "(edited or synthesised manifest)",
            product.path,
            f["unique"],
            crc,
        )


def check_measurements(product: Product, pols: list[str], verify_checksums: bool = True) -> None:
    """:meth:`Product.verify_measurement` for each polarisation, with the time it took logged.

    ``verify_checksums=False`` (``sarssl preprocess --no-verify-checksums``) skips only the
    MD5 (and the full read it needs); the sizes are still compared with the manifest.
    """
    t0 = time.perf_counter()
    n = sum(product.verify_measurement(pol, md5=verify_checksums) for pol in pols)
    if verify_checksums:
        dt = time.perf_counter() - t0
        log.info(
            "product %s: %d measurement checksum(s) verified, %.0f MB in %.1f s",
            product.id,
            len(pols),
            n / 1e6,
            dt,
        )


def record_measurement_checksums(safe_dir: str | os.PathLike) -> list[str]:
    """Rewrite the size and MD5 of each measurement listed in a SAFE folder's manifest
    from the files on disk; returns the files updated.

    Only for building test and benchmark products from real metadata with synthetic
    measurements (the real ones were removed by the metadata's publishers): run on a
    download, it would hide exactly the corruption :meth:`Product.verify_measurement`
    exists to catch. The manifest is replaced atomically.
    """
    from ..io import atomic_path

    root = Path(safe_dir)
    manifest = etree.parse(str(root / "manifest.safe"))
    updated = []
    for bs in manifest.iterfind(".//dataObject/byteStream"):
        href = bs.find("fileLocation").get("href")
        path = root / href
        if path.parent.name != "measurement" or not path.is_file():
            continue
        with open(path, "rb") as fh:
            bs.find("checksum").text = md5_of(fh)[0]
        bs.set("size", str(path.stat().st_size))
        updated.append(href)
    with atomic_path(root / "manifest.safe") as tmp:
        manifest.write(str(tmp), xml_declaration=True, encoding="UTF-8")
    return updated
