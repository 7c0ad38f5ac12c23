"""``sarssl preprocess``: raw Sentinel-1 GRD product -> calibrated, terrain-corrected GeoTIFF.

The chain (SNAP operator names in brackets), all in radar geometry until the last steps:

1. read the GRD window that covers the area of interest (plus a speckle-window margin);
2. GRD border noise removal [Remove-GRD-Border-Noise];
3. thermal noise removal and radiometric calibration to sigma0/beta0/gamma0
   [ThermalNoiseRemoval, Calibration] (``sarssl.calibration``);
4. optional terrain flattening: beta0 x A_beta / A_gamma (Small 2011) -> gamma0_T
   [Terrain-Flattening];
5. speckle filter on linear intensity [Speckle-Filter];
6. Range-Doppler terrain correction onto ``area_grid(aoi, resolution, crs)``
   [Terrain-Correction] plus the layover/shadow mask;
7. dB [LinearToFromdB].

Outputs (``docs/architecture.md``, "Preprocessed scene"): a float32 COG with one band per
polarisation (VV, VH), NaN nodata and provenance tags, and ``<stem>.mask.tif`` (uint8: 0 no
data, 1 valid, +2 layover, +4 shadow). Nothing is written when any input check fails.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import __version__
from .errors import InputError, SarsslError
from .io import parse_bbox, write_geotiff
from .speckle import FILTERS

log = logging.getLogger(__name__)

POL_ORDER = ("VV", "VH", "HH", "HV")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("product", help="Sentinel-1 GRD product (.zip or .SAFE folder)")
    parser.add_argument("--dem", required=True, help="DEM GeoTIFF covering the area (geoid or ellipsoid heights)")
    parser.add_argument("--out", required=True, help="output GeoTIFF (the mask goes to <stem>.mask.tif)")
    parser.add_argument("--aoi", default=None, help="W,S,E,N lon/lat: process only this area (default: the footprint)")
    parser.add_argument("--crs", default=None, help="output CRS (default: UTM zone of the area)")
    parser.add_argument("--resolution", type=float, default=10.0, help="output pixel size in metres (default 10)")
    parser.add_argument("--calibration", choices=("sigma0", "gamma0", "beta0"), default="sigma0")
    parser.add_argument(
        "--terrain-flattening", action="store_true",
        help="radiometric terrain flattening to gamma0_T (Small 2011); implies beta0 input",
    )
    parser.add_argument("--speckle-filter", choices=FILTERS, default="refined_lee")
    parser.add_argument("--speckle-window", type=int, default=7, help="odd window size in px (default 7)")
    parser.add_argument("--orbit-dir", default=None, help="folder with POEORB/RESORB .EOF files (optional)")
    parser.add_argument("--units", choices=("db", "linear"), default="db")
    parser.add_argument("--backend", choices=("auto", "python", "snap"), default="auto")


def _pols(product) -> list[str]:
    pols = [p.upper() for p in product.polarisations]
    return sorted(pols, key=lambda p: POL_ORDER.index(p) if p in POL_ORDER else 99)


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
) -> dict:
    """Run the Python chain; returns a small summary (timings, sizes)."""
    from pyproj import Transformer
    from shapely.geometry import box

    from .calibration import calibrate_window, find_border_limits
    from .dem import read_dem
    from .geocoding import GeocodingLUT, check_overlap
    from .geometry import apply_orbit_dir
    from .grid import area_grid
    from .safe import open_product
    from .speckle import speckle_filter as run_filter

    t_start = time.perf_counter()
    product = open_product(product_path)
    pols = _pols(product)
    if not pols:
        raise InputError(f"product {product_path}: no polarisation found")
    for pol in pols:
        if not product.has("measurement", pol):
            raise InputError(f"product {product_path}: polarisation {pol} has no measurement file")
        if not product.has("calibration", pol):
            raise InputError(f"product {product_path}: polarisation {pol} has no calibration annotation")
    geom = product.annotation(pols[0]).geometry
    geom = apply_orbit_dir(geom, orbit_dir)

    footprint = product.footprint
    if aoi is None:
        aoi = tuple(float(v) for v in footprint.bounds)
    elif not footprint.intersects(box(*aoi)):
        raise InputError(
            f"product {product_path}: the area {aoi} misses the scene footprint "
            f"{tuple(round(v, 4) for v in footprint.bounds)}"
        )
    grid = area_grid(aoi, resolution, crs)
    gx0, gy0, gx1, gy1 = grid.bounds
    tr = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
    bx, by = tr.transform([gx0, gx1, gx0, gx1], [gy0, gy0, gy1, gy1])
    dem = read_dem(dem_path, (min(bx), min(by), max(bx), max(by)), what=f"area {aoi}")

    t0 = time.perf_counter()
    lut = GeocodingLUT.compute(geom, grid, dem)
    t_lut = time.perf_counter() - t0
    margin = speckle_window + 2
    win = check_overlap(lut, geom, str(product_path), aoi)
    r0, c0, nl, npx = win
    # grow the window by the speckle margin (clipped to the image)
    r0m, c0m = max(r0 - margin, 0), max(c0 - margin, 0)
    r1m = min(r0 + nl + margin, geom.number_of_lines)
    c1m = min(c0 + npx + margin, geom.number_of_samples)
    window = (c0m, r0m, c1m - c0m, r1m - r0m)
    offset = (r0m, c0m)
    shape = (r1m - r0m, c1m - c0m)
    log.info("radar window lines %d..%d samples %d..%d", r0m, r1m, c0m, c1m)

    target = "beta0" if terrain_flattening else calibration
    if terrain_flattening and calibration != "gamma0":
        log.warning("--terrain-flattening outputs gamma0_T (terrain-flattened gamma0), not %s", calibration)
    flat = lut.flattening_factor(geom, shape, offset) if terrain_flattening else None

    bands = []
    t_speckle = 0.0
    for pol in tqdm(pols, desc="polarisations", leave=False):
        has_noise = product.has("noise", pol)
        border = find_border_limits(product, pol, remove_noise=has_noise)
        img = calibrate_window(product, pol, window, target=target, remove_noise=has_noise, border=border)
        if flat is not None:
            img = img * flat
        t1 = time.perf_counter()
        img = run_filter(img, speckle_filter, speckle_window)
        t_speckle += time.perf_counter() - t1
        bands.append(img)
    t2 = time.perf_counter()
    data = lut.sample(np.stack(bands), offset)
    mask = lut.mask(data)
    data[:, mask == 0] = np.nan
    t_geocode = time.perf_counter() - t2 + t_lut
    if not (mask > 0).any():
        raise InputError(f"product {product_path}: no valid data over the area {aoi} (all no data)")
    if units == "db":
        with np.errstate(divide="ignore", invalid="ignore"):
            data = np.where(data > 0, 10.0 * np.log10(data), np.nan).astype(np.float32)

    tags = {
        "PRODUCT_ID": product.id,
        "ACQUISITION_START": str(np.datetime_as_string(product.start_time, unit="us")) + "Z",
        "PASS": product.pass_direction,
        "RELATIVE_ORBIT": product.relative_orbit,
        "ORBIT_SOURCE": geom.orbit_source,
        "CALIBRATION": "gamma0" if terrain_flattening else calibration,
        "TERRAIN_FLATTENING": str(bool(terrain_flattening)).lower(),
        "SPECKLE_FILTER": f"{speckle_filter}" + ("" if speckle_filter == "none" else f" {speckle_window}x{speckle_window}"),
        "UNITS": units,
        "BACKEND": "python",
        "SARSSL_VERSION": __version__,
        "DEM": Path(dem_path).name,
        "DEM_VERTICAL_DATUM": dem.vertical_datum,
    }
    import rasterio.shutil  # noqa: F401  (sarssl.io.write_geotiff uses rasterio.shutil.copy)

    out = Path(out)
    mask_path = out.with_name(out.stem + ".mask.tif")
    write_geotiff(mask_path, mask, crs=grid.crs, transform=grid.transform, nodata=None, band_names=["mask"],
                  tags={k: tags[k] for k in ("PRODUCT_ID", "SARSSL_VERSION")})
    write_geotiff(out, data, crs=grid.crs, transform=grid.transform, nodata=float("nan"), band_names=pols, tags=tags)
    total = time.perf_counter() - t_start
    npx_out = grid.width * grid.height
    summary = {
        "grid": grid.shape,
        "radar_window": shape,
        "seconds_total": total,
        "seconds_speckle": t_speckle,
        "seconds_geocode": t_geocode,
        "geocode_mpx_per_s": npx_out * len(pols) / max(t_geocode, 1e-9) / 1e6,
        "valid_fraction": float((mask > 0).mean()),
    }
    log.info("preprocess %s -> %s: %s", product.id, out, summary)
    return summary


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
    )
    if backend == "snap":
        snap.preprocess_snap(args.product, args.dem, args.out, **kwargs)
    else:
        preprocess(args.product, args.dem, args.out, **kwargs)
    return 0
