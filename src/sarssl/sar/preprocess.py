"""``sarssl preprocess``: raw Sentinel-1 GRD product -> calibrated, terrain-corrected GeoTIFF.

The chain (SNAP operator names in brackets), all in radar geometry until the last steps:

1. read the GRD window that covers the area of interest (plus a speckle-window margin);
2. GRD border noise removal [Remove-GRD-Border-Noise];
3. thermal noise removal and radiometric calibration to sigma0/beta0/gamma0
   [ThermalNoiseRemoval, Calibration] (``sarssl.sar.calibration``);
4. optional terrain flattening: beta0 x A_beta / A_gamma (Small 2011) -> gamma0_T
   [Terrain-Flattening];
5. speckle filter on linear intensity [Speckle-Filter];
6. Range-Doppler terrain correction onto ``area_grid(aoi, resolution, crs)``
   [Terrain-Correction] plus the layover/shadow mask;
7. dB [LinearToFromdB].

Every run first checks its geometry model against the annotation's GCPs
(:func:`check_geolocation`): the residuals (azimuth and range, bias and standard
deviation, pixels and metres) go to the log and to the output's ``GCP_RESIDUAL_*`` tags; a
residual above 0.5 px RMS is warned about, above ``--max-gcp-residual-px`` (default 2) it
is an error naming the product, before any image is read or written.

Outputs (``docs/architecture.md``, "Preprocessed scene"): a float32 COG with one band per
polarisation (VV, VH), NaN nodata and provenance tags, ``<stem>.mask.tif`` (uint8: 0 no
data, 1 valid, +2 layover, +4 shadow) and the scene's STAC Item ``<stem>.json``
(:mod:`sarssl.sar.stac`). ``--product nrb`` (CEOS-ARD NRB, :mod:`sarssl.sar.nrb`) makes
terrain-flattened gamma0 in linear power, extends the mask's bits (8 DEM gap, 16 no radar
data) and adds the sidecar layers ``<stem>.<layer>.tif``. Every COG has band units and
descriptions, and overviews averaged in linear power (:mod:`sarssl.sar.cog`). Nothing is
written when any input check fails.

Before any work the product is validated (:func:`sarssl.sar.safe.validate_product`: an IW GRD
product whose name agrees with its manifest) and each measurement to be read is checked
against the manifest (:func:`sarssl.sar.safe.check_measurements`: its size, and its MD5
streamed through the whole file, which for a zipped product also checks the zip CRC-32).
``--no-verify-checksums`` skips only the MD5 (a full read of each measurement, about
0.9 GB per polarisation for a real IW GRDH product); the other checks always run.

The module follows the chain's concerns: the inputs (:func:`open_checked_product`, the area
and its DEM), the tiling (:class:`TilePlan`: output tiles, LUT margins, radar windows, all
:class:`~sarssl.sar.window.PixelWindow`), the geometry (:class:`TerrainCorrection`: a LUT
per tile), the radiometry (:class:`Radiometry`: border/thermal noise, calibration,
flattening, speckle) and the output (:func:`scene_tags`, :func:`geocode_tile`,
:func:`write_scene`); :func:`preprocess` wires them together.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import rasterio
from pyproj import Transformer
from shapely.geometry import box
from tqdm import tqdm

from .. import __version__
from ..errors import InputError, SarsslError
from ..io import parse_bbox
from ..rasterio_blocks import close_all
from . import nrb, speckle
from . import stac as stac_meta
from .calibration import LazyBorderLimits, calibrate_window
from .cog import LayerWriter, scene_cogs
from .dem import Dem, check_void, read_dem
from .geocoding import MASK_NODATA, GeocodingLUT
from .geometry import GcpResiduals, RadarGeometry, apply_orbit_dir
from .grid import Grid, area_grid
from .safe import POL_ORDER, Product, check_measurements, open_product, validate_product
from .window import PixelWindow

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("product", help="Sentinel-1 GRD product (.zip or .SAFE folder)")
    parser.add_argument(
        "--dem", required=True, help="DEM GeoTIFF covering the area (geoid or ellipsoid heights)"
    )
    parser.add_argument(
        "--out", required=True, help="output GeoTIFF (the mask goes to <stem>.mask.tif)"
    )
    parser.add_argument(
        "--aoi",
        default=None,
        help="W,S,E,N lon/lat: process only this area (default: the footprint)",
    )
    parser.add_argument("--crs", default=None, help="output CRS (default: UTM zone of the area)")
    parser.add_argument(
        "--resolution", type=float, default=10.0, help="output pixel size in metres (default 10)"
    )
    parser.add_argument(
        "--product",
        dest="product_mode",
        choices=nrb.PRODUCTS,
        default="sigma0",
        help="sigma0: the backscatter as --calibration/--units say (default); nrb: CEOS-ARD "
        "Normalised Radar Backscatter: terrain-flattened gamma0 in linear power plus the "
        "sidecar layers OUT.<layer>.tif (mask, local and ellipsoid incidence angle, "
        "gamma-to-sigma ratio, NESZ, DEM), overriding --calibration, --terrain-flattening "
        "and --units",
    )
    parser.add_argument("--calibration", choices=("sigma0", "gamma0", "beta0"), default="sigma0")
    parser.add_argument(
        "--terrain-flattening",
        action="store_true",
        help="radiometric terrain flattening to gamma0_T (Small 2011); implies beta0 input",
    )
    parser.add_argument("--speckle-filter", choices=speckle.FILTERS, default="refined_lee")
    parser.add_argument(
        "--speckle-window", type=int, default=7, help="odd window size in px (default 7)"
    )
    parser.add_argument(
        "--orbit-dir", default=None, help="folder with POEORB/RESORB .EOF files (optional)"
    )
    parser.add_argument("--units", choices=("db", "linear"), default="db")
    parser.add_argument("--backend", choices=("auto", "python", "snap"), default="auto")
    parser.add_argument(
        "--max-dem-void",
        type=float,
        default=0.05,
        help="largest share of no-data DEM pixels over the area (default 0.05): holes are "
        "warned about and recorded in the DEM_VOID_FRACTION tag; more is an error",
    )
    parser.add_argument(
        "--max-gcp-residual-px",
        type=float,
        default=MAX_GCP_RESIDUAL_PX,
        help="geolocation self-check: the largest RMS residual (px) of the geometry model "
        f"against the annotation's GCPs (default {MAX_GCP_RESIDUAL_PX}); above "
        f"{GCP_RESIDUAL_WARN_PX} px is warned about, above this limit is an error",
    )
    parser.add_argument(
        "--polarisations",
        default=None,
        help="comma-separated polarisations to process, e.g. VV or VV,VH "
        "(default: all in the product)",
    )
    parser.add_argument(
        "--no-verify-checksums",
        dest="verify_checksums",
        action="store_false",
        help="skip the MD5 check of the measurements against the manifest (saves a full read "
        "of each; the product type, name and file size checks still run)",
    )


GCP_RESIDUAL_WARN_PX = 0.5
"""GCP residual (RMS, px) above which a run warns: the model should meet the GCPs to ~0.01 px."""

MAX_GCP_RESIDUAL_PX = 2.0
"""Default limit of the GCP residual (RMS, px) above which preprocessing stops."""


def parse_polarisations(text: str | None) -> list[str] | None:
    """``"VV,VH"`` -> ``["VV", "VH"]``; None or empty -> None (all)."""
    if not text:
        return None
    pols = [p.strip().upper() for p in text.split(",") if p.strip()]
    bad = [p for p in pols if p not in POL_ORDER]
    if bad or not pols:
        raise SarsslError(
            f"--polarisations {text!r}: expected a comma-separated subset of {', '.join(POL_ORDER)}"
        )
    return pols


class Phases(dict):
    """Seconds spent in each phase of the chain (the summary's ``phases``)."""

    KEYS = (
        "border",
        "enl",
        "lut",
        "read_calibrate",
        "filter",
        "geocode",
        "mask",
        "layers",
        "write",
        "cog",
        "stac",
    )

    def __init__(self) -> None:
        super().__init__((k, 0.0) for k in self.KEYS)

    @contextlib.contextmanager
    def timing(self, key: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to ``key``."""
        t0 = time.perf_counter()
        yield
        self[key] += time.perf_counter() - t0


# --------------------------------------------------------------------------------------
# inputs: product, area, DEM
# --------------------------------------------------------------------------------------


def open_checked_product(
    product_path: str | Path, polarisations: list[str] | None, verify_checksums: bool
) -> tuple[Product, list[str]]:
    """The validated product and the polarisations to process, each with its measurement
    and calibration annotation, the measurements checked against the manifest."""
    product = open_product(product_path)
    validate_product(product)
    pols = product.select_polarisations(polarisations, what=str(product_path))
    if not pols:
        raise InputError(f"product {product_path}: no polarisation found")
    for pol in pols:
        if not product.has("measurement", pol):
            raise InputError(f"product {product_path}: polarisation {pol} has no measurement file")
        if not product.has("calibration", pol):
            raise InputError(
                f"product {product_path}: polarisation {pol} has no calibration annotation"
            )
    check_measurements(product, pols, verify_checksums=verify_checksums)
    return product, pols


def check_geolocation(
    geom: RadarGeometry, product_path: str | Path, max_residual_px: float
) -> GcpResiduals:
    """The geolocation self-check of every run: the geometry model (orbit, timing, range
    conversion) against the annotation's GCPs (:meth:`RadarGeometry.gcp_residuals`),
    logged; a warning above :data:`GCP_RESIDUAL_WARN_PX` and an
    :class:`~sarssl.errors.InputError` naming the product above ``max_residual_px`` (RMS
    of the residual length over the GCPs, pixels)."""
    res = geom.gcp_residuals()
    log.info("geolocation self-check of %s against its GCPs: %s", product_path, res.summary())
    if not res.rms_px <= max_residual_px:  # NaN fails too
        raise InputError(
            f"product {product_path}: the geometry model misses the annotation's geolocation "
            f"grid by {res.rms_px:.2f} px RMS, above the limit of {max_residual_px:g} px "
            f"(--max-gcp-residual-px / preprocess.max_gcp_residual_px): {res.summary()}; "
            "the annotation's orbit, timing or slant/ground range conversion is inconsistent "
            "with its own GCPs (or the orbit file does not belong to this product)"
        )
    if res.rms_px > GCP_RESIDUAL_WARN_PX:
        log.warning(
            "product %s: geolocation self-check %.2f px RMS against the GCPs (above %.1f px): %s",
            product_path,
            res.rms_px,
            GCP_RESIDUAL_WARN_PX,
            res.summary(),
        )
    return res


def area_to_process(
    product: Product, product_path: str | Path, aoi: tuple[float, float, float, float] | None
) -> tuple:
    """The area to process: ``aoi``, checked to meet the scene footprint, or the
    footprint's bounds."""
    footprint = product.footprint
    if aoi is None:
        return tuple(float(v) for v in footprint.bounds)
    if not footprint.intersects(box(*aoi)):
        raise InputError(
            f"product {product_path}: the area {aoi} misses the scene footprint "
            f"{tuple(round(v, 4) for v in footprint.bounds)}"
        )
    return aoi


def read_area_dem(dem_path: str | Path, grid: Grid, aoi: tuple, max_dem_void: float) -> Dem:
    """The DEM over the lon/lat bounds of the area grid, its holes checked."""
    gx0, gy0, gx1, gy1 = grid.bounds
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    bx, by = tr.transform([gx0, gx1, gx0, gx1], [gy0, gy0, gy1, gy1])
    dem = read_dem(dem_path, (min(bx), min(by), max(bx), max(by)), what=f"area {aoi}")
    check_void(dem, max_dem_void, what=f"area {aoi}")
    return dem


# --------------------------------------------------------------------------------------
# tiling: the output tile plan, LUT margins, radar windows
# --------------------------------------------------------------------------------------

TILE = 2048
"""Output grid tile (px): each tile has its own LUT and radar window, bounding memory."""


def tile_margin(dem: Dem, resolution: float) -> int:
    """LUT margin (px) around a tile: enough for slopes, terrain-flattening splats and the
    shadow cast by terrain up-range (relief / tan(min elevation ~ 44 deg), capped)."""
    relief = (
        float(np.nanmax(dem.height) - np.nanmin(dem.height))
        if np.isfinite(dem.height).any()
        else 0.0
    )
    return int(np.clip(np.ceil(relief / 0.9 / resolution), 8, 256))


@dataclass(frozen=True)
class TilePlan:
    """The output grid cut into tiles; each tile's LUT covers it plus ``margin`` px, and
    its radar window covers the tile proper plus a ``halo`` of px for the speckle filter."""

    grid: Grid
    tiles: tuple[PixelWindow, ...]
    margin: int
    halo: int

    @classmethod
    def of(cls, grid: Grid, tile: int, margin: int, halo: int) -> TilePlan:
        """``tile`` x ``tile`` tiles of ``grid`` (smaller at its right and bottom), row-major."""
        H, W = grid.shape
        tiles = tuple(
            PixelWindow(r, c, min(tile, H - r), min(tile, W - c))
            for r in range(0, H, tile)
            for c in range(0, W, tile)
        )
        return cls(grid, tiles, margin, halo)

    def central_first(self) -> list[PixelWindow]:
        """The tiles by distance of their centre from the grid's centre."""
        H, W = self.grid.shape
        return sorted(
            self.tiles,
            key=lambda t: (
                (t.row_off + t.height / 2 - H / 2) ** 2 + (t.col_off + t.width / 2 - W / 2) ** 2
            ),
        )

    def lut_grid(self, tile: PixelWindow) -> Grid:
        """The grid of the tile grown by the margin (where its LUT is computed)."""
        return self.grid.subgrid(tile.grow(self.margin))

    def inner(self, tile: PixelWindow) -> PixelWindow:
        """The tile within its LUT grid."""
        return PixelWindow(self.margin, self.margin, tile.height, tile.width)

    def radar_window(
        self, lut: GeocodingLUT, geom: RadarGeometry, tile: PixelWindow
    ) -> PixelWindow | None:
        """Radar window of the tile proper (not its LUT margin) plus the speckle halo: the
        margin only feeds slopes, shadows and flattening splats, so reading, calibrating
        and filtering it would be wasted work (~35 % more radar pixels at 2048 px tiles)."""
        inner = self.inner(tile)
        return lut.radar_bounds(geom, margin=self.halo, rows=inner.row_slice, cols=inner.col_slice)


# --------------------------------------------------------------------------------------
# geometry: terrain-correction LUTs
# --------------------------------------------------------------------------------------


@dataclass
class TileLUT:
    """One output tile with its terrain-correction LUT and the radar window it reads."""

    tile: PixelWindow  # in the area grid
    inner: PixelWindow  # the tile within the LUT's grid (the LUT has a margin)
    lut: GeocodingLUT
    radar: PixelWindow | None  # None: the tile sees no radar pixel
    geom: RadarGeometry

    @functools.cached_property
    def flattening_factor(self) -> np.ndarray:
        """A_beta / A_gamma on the radar window (computed once, for every polarisation)."""
        return self.lut.flattening_factor(self.geom, self.radar.shape, self.radar.offset)


@dataclass
class TerrainCorrection:
    """Range-Doppler terrain correction of the tiles of a plan (:mod:`sarssl.sar.geocoding`)."""

    geom: RadarGeometry
    dem: Dem
    plan: TilePlan
    flattening: bool

    def __post_init__(self) -> None:
        crs = self.dem.crs.sub_crs_list[0] if self.dem.crs.is_compound else self.dem.crs
        self.to_dem = Transformer.from_crs(self.plan.grid.crs, crs, always_xy=True)

    def tile_lut(self, tile: PixelWindow) -> TileLUT:
        """The tile's LUT, computed on the tile grown by the margin (radar coordinates only
        on the tile itself unless terrain flattening splats the margin too)."""
        grid, inner = self.plan.lut_grid(tile), self.plan.inner(tile)
        if self.flattening:  # the margin's facets splat into the tile's radar window
            lut = GeocodingLUT.compute(self.geom, grid, self._dem_crop(grid))
        else:
            lut = GeocodingLUT.compute(
                self.geom,
                grid,
                self._dem_crop(grid),
                radar_rows=inner.row_slice,
                radar_cols=inner.col_slice,
            )
        return TileLUT(tile, inner, lut, self.plan.radar_window(lut, self.geom, tile), self.geom)

    def _dem_crop(self, grid: Grid) -> Dem:
        """The DEM around ``grid`` (its bounds sampled 9 x 9 into the DEM's CRS)."""
        x0, y0, x1, y1 = grid.bounds
        gx, gy = np.meshgrid(np.linspace(x0, x1, 9), np.linspace(y0, y1, 9))
        dx, dy = self.to_dem.transform(gx, gy)
        return self.dem.crop(dx, dy)


# --------------------------------------------------------------------------------------
# radiometry: border and thermal noise, calibration, flattening, speckle
# --------------------------------------------------------------------------------------


class Radiometry:
    """Calibrated, flattened and speckle-filtered radar windows of each polarisation.

    Border noise is masked with limits scanned lazily, only on the edge strips the windows
    reach (:class:`sarssl.sar.calibration.LazyBorderLimits`); thermal noise is removed where
    the product has a noise annotation. ``target`` is the calibration (beta0 when
    flattening). The speckle filter uses one ENL per polarisation (:meth:`estimate_enl`).
    """

    def __init__(
        self,
        product: Product,
        pols: list[str],
        target: str,
        flattening: bool,
        speckle_filter: str,
        speckle_window: int,
        phases: Phases,
    ) -> None:
        self.product, self.pols, self.target, self.flattening = product, pols, target, flattening
        self.speckle_filter, self.speckle_window = speckle_filter, speckle_window
        self.phases = phases
        self.borders = {
            pol: LazyBorderLimits(product, pol, remove_noise=product.has("noise", pol))
            for pol in pols
        }
        # the boxcar filter and none ignore the ENL; the others wait for estimate_enl
        self.enls: dict[str, float | None] = {p: None if self.needs_enl else 1.0 for p in pols}

    @property
    def needs_enl(self) -> bool:
        """Whether the speckle filter needs the ENL (all but boxcar and none)."""
        return self.speckle_filter not in ("none", "boxcar")

    def calibrated(self, tl: TileLUT, pol: str) -> np.ndarray:
        """The tile's radar window of ``pol``: calibrated (and flattened), unfiltered."""
        with self.phases.timing("border"):
            border = self.borders[pol].for_window(tl.radar)
        with self.phases.timing("read_calibrate"):
            img = calibrate_window(
                self.product,
                pol,
                tl.radar,
                target=self.target,
                remove_noise=self.product.has("noise", pol),
                border=border,
            )
            if self.flattening:
                img *= tl.flattening_factor
        return img

    def estimate_enl(self, images: dict[str, np.ndarray]) -> None:
        """The ENL of each polarisation from its calibrated window ``images[pol]``."""
        with self.phases.timing("enl"):
            self.enls = {pol: speckle.estimate_enl(images[pol]) for pol in self.pols}

    def filtered(self, img: np.ndarray, pol: str) -> np.ndarray:
        """The speckle-filtered window (as is while the ENL is unknown)."""
        if self.enls[pol] is None:
            return img
        with self.phases.timing("filter"):
            return speckle.speckle_filter(
                img, self.speckle_filter, self.speckle_window, enl=self.enls[pol]
            )

    def windows(self, tl: TileLUT, ready: dict[str, np.ndarray]) -> Iterator[np.ndarray]:
        """The tile's filtered radar window of each polarisation in turn (one in memory at a
        time); ``ready`` holds windows calibrated ahead, given up as they are used."""
        for pol in self.pols:
            img = ready.pop(pol) if pol in ready else self.calibrated(tl, pol)
            yield self.filtered(img, pol)

    @property
    def border_pixels_read(self) -> int:
        """Pixels of the edge strips read to find the border-noise limits."""
        return sum(b.pixels_read for b in self.borders.values())


@dataclass
class CalibratedTile:
    """A tile whose calibrated windows were computed ahead (for the ENL) and are reused."""

    tile_lut: TileLUT
    images: dict[str, np.ndarray]


def estimate_enls(
    plan: TilePlan, terrain: TerrainCorrection, radiometry: Radiometry, phases: Phases
) -> CalibratedTile | None:
    """ENL per polarisation from the central tile's radar window (consistent across tiles);
    that tile's LUT and calibrated windows are returned for reuse when its turn comes, so
    the estimate costs no repeated LUT, read or calibration work. None when the filter
    needs no ENL or no tile sees the radar image."""
    if not radiometry.needs_enl:
        return None
    found = None
    for tile in plan.central_first():
        with phases.timing("lut"):
            tl = terrain.tile_lut(tile)
        if tl.radar is not None:
            images = {pol: radiometry.calibrated(tl, pol) for pol in radiometry.pols}
            found = CalibratedTile(tl, images)
            radiometry.estimate_enl(found.images)
            break
    log.info(
        "ENL estimates: %s", {p: round(v, 2) for p, v in radiometry.enls.items() if v is not None}
    )
    return found


# --------------------------------------------------------------------------------------
# output: tags, geocoded tiles, writers
# --------------------------------------------------------------------------------------


def scene_tags(
    product: Product,
    geom: RadarGeometry,
    dem: Dem,
    dem_path: str | Path,
    calibration: str,
    terrain_flattening: bool,
    speckle_filter: str,
    speckle_window: int,
    units: str,
    residuals: GcpResiduals | None = None,
) -> dict:
    """The provenance tags of the preprocessed scene (``docs/architecture.md``), with the
    geolocation self-check's ``GCP_RESIDUAL_*`` when ``residuals`` are given."""
    window = "" if speckle_filter == "none" else f" {speckle_window}x{speckle_window}"
    tags = {
        "PRODUCT_ID": product.id,
        "ACQUISITION_START": str(np.datetime_as_string(product.start_time, unit="us")) + "Z",
        "PASS": product.pass_direction,
        "RELATIVE_ORBIT": product.relative_orbit,
        "ORBIT_SOURCE": geom.orbit_source,
        "ORBIT_FILE": geom.orbit_file or "none (annotation state vectors)",
        "CALIBRATION": "gamma0" if terrain_flattening else calibration,
        "TERRAIN_FLATTENING": str(bool(terrain_flattening)).lower(),
        "SPECKLE_FILTER": f"{speckle_filter}{window}",
        "UNITS": units,
        "BACKEND": "python",
        "SARSSL_VERSION": __version__,
        "DEM": Path(dem_path).name,
        "DEM_VERTICAL_DATUM": dem.vertical_datum,
        "GEOID": dem.geoid,
        "DEM_VOID_FRACTION": f"{dem.void_fraction:.6f}",
    }
    if residuals is not None:
        tags.update(residuals.tags())
    return tags


def geocoded_tiles(
    plan: TilePlan,
    terrain: TerrainCorrection,
    radiometry: Radiometry,
    ahead: CalibratedTile | None,
    units: str,
    phases: Phases,
) -> Iterator[tuple[TileLUT, np.ndarray, np.ndarray]]:
    """(tile LUT, data, mask) of every tile that sees the radar image, in plan order: the
    bands sampled onto the tile, NaN where the mask says no data, in ``units``. The tile
    calibrated ``ahead`` (if any) is used, and let go, when its turn comes."""
    with tqdm(plan.tiles, desc="preprocess tiles", leave=False) as bar:
        yield from _geocoded(bar, terrain, radiometry, ahead, units, phases)


def _geocoded(
    tiles: Iterable[PixelWindow],
    terrain: TerrainCorrection,
    radiometry: Radiometry,
    ahead: CalibratedTile | None,
    units: str,
    phases: Phases,
) -> Iterator[tuple[TileLUT, np.ndarray, np.ndarray]]:
    for tile in tiles:
        ready: dict[str, np.ndarray] = {}
        with phases.timing("lut"):
            if ahead is not None and ahead.tile_lut.tile == tile:
                tl, ready, ahead = ahead.tile_lut, ahead.images, None
            else:
                tl = terrain.tile_lut(tile)
        if tl.radar is not None:
            yield (tl, *geocode_tile(tl, radiometry.windows(tl, ready), units, phases))


def geocode_tile(
    tl: TileLUT,
    images: Iterable[np.ndarray],
    units: str,
    phases: Phases,
) -> tuple[np.ndarray, np.ndarray]:
    """The radar ``images`` (one per band) sampled onto the tile, and its mask."""
    rows, cols = tl.inner.row_slice, tl.inner.col_slice
    bands = []
    for img in images:
        with phases.timing("geocode"):
            bands.append(tl.lut.sample(img, tl.radar.offset, rows=rows, cols=cols))
    with phases.timing("mask"):
        data = np.stack(bands)
        m = tl.lut.mask(data, rows=rows, cols=cols)
        np.copyto(data, np.float32(np.nan), where=(m == MASK_NODATA)[None])  # (no boolean gather)
        if units == "db":
            data = _to_db(data)
    return data, m


def _to_db(data: np.ndarray) -> np.ndarray:
    """10 log10 of positive values, NaN elsewhere (float32)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(data > 0, 10.0 * np.log10(data), np.nan).astype(np.float32)


@contextlib.contextmanager
def scene_writers(grid: Grid, tags: dict, specs: list[dict]) -> Iterator[dict[str, LayerWriter]]:
    """Block writers of the scene's COGs (:func:`~sarssl.sar.cog.scene_cogs`), keyed as
    the specs: all or none appear (an error inside the ``with`` block removes them)."""
    small_tags = {k: tags[k] for k in ("PRODUCT_ID", "SARSSL_VERSION")}
    # GDAL_NUM_THREADS: the measurement windows span many deflate tiles, which GDAL (>= 3.6)
    # then decodes on all cores (~2x faster reads on 2 cores)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), contextlib.ExitStack() as stack:
        writers = {}
        for i, spec in enumerate(specs):
            writers[spec["key"]] = stack.enter_context(
                LayerWriter(
                    spec["path"],
                    count=len(spec["descriptions"]),
                    height=grid.height,
                    width=grid.width,
                    dtype=spec["dtype"],
                    crs=grid.crs,
                    transform=grid.transform,
                    nodata=spec["nodata"],
                    band_names=spec["descriptions"],
                    tags=tags if i == 0 else {**small_tags, "LAYER": spec["key"]},
                    units=spec["units"],
                    overviews=spec["overviews"],
                    nodata_meaning=spec["nodata_meaning"],
                )
            )
        yield writers


def write_scene(
    out: Path,
    plan: TilePlan,
    tags: dict,
    specs: list[dict],
    tiles: Iterable[tuple[TileLUT, np.ndarray, np.ndarray]],
    phases: Phases,
    empty: str,
    layers=None,
) -> tuple[int, int]:
    """Write the geocoded ``tiles`` block by block and publish the COGs of ``specs``;
    ``layers(tile_lut, mask)`` gives the sidecar layers of a tile (NRB mode; their mask
    replaces the geocoding mask). Returns (valid output pixels, radar pixels processed).
    Without any valid pixel nothing is written and the error is an
    :class:`~sarssl.errors.InputError` saying ``empty``."""
    n_valid = radar_px = 0
    with scene_writers(plan.grid, tags, specs) as writers:
        for tl, data, mask in tiles:
            radar_px += tl.radar.height * tl.radar.width
            n_valid += int(np.count_nonzero(mask))
            blocks = {"backscatter": data, "mask": mask}
            if layers is not None:
                with phases.timing("layers"):
                    blocks.update(layers(tl, mask))
            with phases.timing("write"):
                for key, block in blocks.items():
                    writers[key].write(block, tl.tile.row_off, tl.tile.col_off)
        if n_valid == 0:
            raise InputError(empty)
        with phases.timing("cog"):
            close_all(list(writers.values()))  # all COG translations at once
    return n_valid, radar_px


# --------------------------------------------------------------------------------------
# the chain
# --------------------------------------------------------------------------------------


def preprocess(
    product_path: str | Path,
    dem_path: str | Path,
    out: str | Path,
    aoi: tuple[float, float, float, float] | None = None,
    crs: str | None = None,
    resolution: float = 10.0,
    calibration: str = "sigma0",
    terrain_flattening: bool = False,
    speckle_filter: str = "refined_lee",
    speckle_window: int = 7,
    orbit_dir: str | Path | None = None,
    units: str = "db",
    tile: int = TILE,
    polarisations: list[str] | None = None,
    verify_checksums: bool = True,
    max_dem_void: float = 0.05,
    max_gcp_residual_px: float = MAX_GCP_RESIDUAL_PX,
    product_mode: str = "sigma0",
) -> dict:
    """Run the Python chain; returns a small summary (timings, sizes, GCP residuals).

    The product is validated and its measurements checked against the manifest first
    (``verify_checksums=False`` skips only their MD5), and the geometry model against the
    annotation's GCPs (:func:`check_geolocation`, limit ``max_gcp_residual_px``).

    The output grid is processed in ``tile`` x ``tile`` tiles (:class:`TilePlan`). For each
    tile the LUT is computed on the tile plus a margin (slopes, shadow, flattening see their
    neighbours; :class:`TerrainCorrection`), the radar window it needs (+ a speckle-window
    halo) is read, calibrated, filtered (:class:`Radiometry`) and sampled
    (:func:`geocode_tile`); results go block by block to the output COGs
    (:func:`write_scene`), so memory stays bounded by one tile whatever the scene size. The
    speckle filter's ENL is estimated once per polarisation (on the central tile's window)
    so tiles match (:func:`estimate_enls`).

    ``product_mode="nrb"`` (:mod:`sarssl.sar.nrb`) makes terrain-flattened gamma0 in
    linear power and the sidecar layers; every run writes the scene's STAC Item
    ``OUT.json`` (:mod:`sarssl.sar.stac`) after its COGs.
    """
    if product_mode not in nrb.PRODUCTS:
        raise SarsslError(f"--product {product_mode!r}: expected one of {', '.join(nrb.PRODUCTS)}")
    if product_mode == "nrb":
        if (calibration, terrain_flattening, units) != ("gamma0", True, "linear"):
            log.info(
                "--product nrb: terrain-flattened gamma0 in linear power (not %s%s, %s)",
                calibration,
                " flattened" if terrain_flattening else "",
                units,
            )
        calibration, terrain_flattening, units = "gamma0", True, "linear"
    t_start = time.perf_counter()
    phases = Phases()
    product, pols = open_checked_product(product_path, polarisations, verify_checksums)
    geom = apply_orbit_dir(product.annotation(pols[0]).geometry, orbit_dir)
    residuals = check_geolocation(geom, product_path, max_gcp_residual_px)
    aoi = area_to_process(product, product_path, aoi)
    grid = area_grid(aoi, resolution, crs)
    dem = read_area_dem(dem_path, grid, aoi, max_dem_void)
    plan = TilePlan.of(grid, tile, margin=tile_margin(dem, resolution), halo=speckle_window + 2)
    terrain = TerrainCorrection(geom, dem, plan, flattening=terrain_flattening)
    if terrain_flattening and calibration != "gamma0":
        log.warning(
            "--terrain-flattening outputs gamma0_T (terrain-flattened gamma0), not %s", calibration
        )
    target = "beta0" if terrain_flattening else calibration
    radiometry = Radiometry(
        product, pols, target, terrain_flattening, speckle_filter, speckle_window, phases
    )
    phases["setup"] = time.perf_counter() - t_start
    # the tile calibrated for the ENL goes to the tile loop (not held here), which reuses it
    tiles = geocoded_tiles(
        plan, terrain, radiometry, estimate_enls(plan, terrain, radiometry, phases), units, phases
    )
    tags = scene_tags(
        product,
        geom,
        dem,
        dem_path,
        calibration,
        terrain_flattening,
        speckle_filter,
        speckle_window,
        units,
        residuals,
    )
    layers = None
    if product_mode == "nrb":
        tags.update(nrb.nrb_tags(product, geom, pols, radiometry.enls, speckle_filter, resolution))

        def layers(tl: TileLUT, mask: np.ndarray) -> dict[str, np.ndarray]:
            return nrb.tile_layers(tl, product, pols, mask)
    else:
        tags["PRODUCT_MODE"] = "sigma0"
    specs = scene_cogs(Path(out), pols, tags, product_mode)
    # closing the tile generator on any error closes its progress bar before the error
    # is printed (the bar would otherwise share the error's line)
    with contextlib.closing(tiles):
        n_valid, radar_px = write_scene(
            Path(out),
            plan,
            tags,
            specs,
            tiles,
            phases,
            empty=f"product {product_path}: no valid data over the area {aoi} (all no data)",
            layers=layers,
        )
    with phases.timing("stac"):
        try:
            item = stac_meta.scene_item(out, grid, tags, pols, product, specs)
            stac_meta.write_item(item, stac_meta.item_path(out))
        except BaseException:
            for spec in specs:  # the scene is published with its Item or not at all
                Path(spec["path"]).unlink(missing_ok=True)
            raise
    summary = run_summary(
        plan,
        pols,
        phases,
        n_valid,
        radar_px,
        radiometry.border_pixels_read,
        time.perf_counter() - t_start,
    )
    summary["gcp_residuals"] = residuals.tags()
    summary["product"] = product_mode
    summary["outputs"] = [str(spec["path"]) for spec in specs] + [str(stac_meta.item_path(out))]
    total = summary["seconds_total"]
    log.info(
        "preprocess phases (s): %s; total %.1f s, %.1f output Mpx/s per band",
        summary["phases"],
        total,
        grid.width * grid.height / total / 1e6,
    )
    log.info("preprocess %s -> %s: %s", product.id, out, summary)
    return summary


def run_summary(
    plan: TilePlan,
    pols: list[str],
    phases: Phases,
    n_valid: int,
    radar_px: int,
    border_pixels_read: int,
    total: float,
) -> dict:
    """The summary :func:`preprocess` returns: sizes, seconds per stage, throughput."""
    t_lut, t_geo = phases["lut"], phases["geocode"] + phases["mask"]
    npx_out = plan.grid.width * plan.grid.height
    return {
        "grid": plan.grid.shape,
        "tiles": len(plan.tiles),
        "radar_px_processed": radar_px,
        "seconds_total": total,
        "seconds_lut": t_lut,
        "seconds_radar": phases["border"] + phases["read_calibrate"] + phases["filter"],
        "seconds_geocode": t_geo,
        "seconds_write": phases["write"] + phases["cog"],
        "geocode_mpx_per_s": npx_out * len(pols) / max(t_geo + t_lut, 1e-9) / 1e6,
        "valid_fraction": n_valid / npx_out,
        "border_pixels_read": border_pixels_read,
        "phases": {k: round(v, 2) for k, v in phases.items()},
    }


def run(args: argparse.Namespace) -> int:
    from . import snap

    aoi = parse_bbox(args.aoi) if args.aoi else None
    backend = snap.select_backend(args.backend)
    if args.speckle_window < 3 or args.speckle_window % 2 == 0:
        raise SarsslError(f"--speckle-window {args.speckle_window}: must be an odd number >= 3")
    kwargs = dict(
        aoi=aoi,
        crs=args.crs,
        resolution=args.resolution,
        calibration=args.calibration,
        terrain_flattening=args.terrain_flattening,
        speckle_filter=args.speckle_filter,
        speckle_window=args.speckle_window,
        orbit_dir=args.orbit_dir,
        units=args.units,
        polarisations=parse_polarisations(args.polarisations),
        verify_checksums=getattr(args, "verify_checksums", True),
    )
    product_mode = getattr(args, "product_mode", "sigma0")
    if backend == "snap" and product_mode == "nrb":
        raise SarsslError(
            "--product nrb: the CEOS-ARD NRB layers are made by the Python chain only "
            "(use --backend python or auto without SNAP)"
        )
    if backend == "snap":
        if aoi is not None:  # the same DEM checks (units, holes) as the Python chain
            from .dem import check_void, read_dem

            check_void(
                read_dem(args.dem, aoi, what=f"area {aoi}"), args.max_dem_void, what=f"area {aoi}"
            )
        snap.preprocess_snap(args.product, args.dem, args.out, **kwargs)
    else:
        preprocess(
            args.product,
            args.dem,
            args.out,
            max_dem_void=args.max_dem_void,
            max_gcp_residual_px=getattr(args, "max_gcp_residual_px", MAX_GCP_RESIDUAL_PX),
            product_mode=product_mode,
            **kwargs,
        )
    return 0
