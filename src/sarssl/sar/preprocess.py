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

Outputs (``docs/architecture.md``, "Preprocessed scene"): a float32 COG with one band per
polarisation (VV, VH), NaN nodata and provenance tags, and ``<stem>.mask.tif`` (uint8: 0 no
data, 1 valid, +2 layover, +4 shadow). Nothing is written when any input check fails.

Before any work the product is validated (:func:`sarssl.sar.safe.validate_product`: an IW GRD
product whose name agrees with its manifest) and each measurement to be read is checked
against the manifest (:func:`sarssl.sar.safe.check_measurements`: its size, and its MD5
streamed through the whole file, which for a zipped product also checks the zip CRC-32).
``--no-verify-checksums`` skips only the MD5 (a full read of each measurement, about
0.9 GB per polarisation for a real IW GRDH product); the other checks always run.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import __version__
from ..errors import InputError, SarsslError
from ..io import parse_bbox
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
    parser.add_argument(
        "--max-dem-void", type=float, default=0.05,
        help="largest share of no-data DEM pixels over the area (default 0.05): holes are "
             "warned about and recorded in the DEM_VOID_FRACTION tag; more is an error",
    )
    parser.add_argument(
        "--polarisations", default=None,
        help="comma-separated polarisations to process, e.g. VV or VV,VH (default: all in the product)",
    )
    parser.add_argument(
        "--no-verify-checksums", dest="verify_checksums", action="store_false",
        help="skip the MD5 check of the measurements against the manifest (saves a full read "
             "of each; the product type, name and file size checks still run)",
    )


def _pols(product, requested: list[str] | None = None, what: str | None = None) -> list[str]:
    """The product's polarisations in output band order (VV, VH, HH, HV), or the
    ``requested`` ones, each checked to be in the product."""
    have = [p.upper() for p in product.polarisations]
    if requested:
        wanted = list(dict.fromkeys(p.strip().upper() for p in requested if p.strip()))
        missing = [p for p in wanted if p not in have]
        if missing or not wanted:
            raise InputError(
                f"product {what or product.id}: polarisation(s) {', '.join(missing) or requested!r} "
                f"requested but the product has {', '.join(have) or 'none'}"
            )
        have = wanted
    return sorted(have, key=lambda p: POL_ORDER.index(p) if p in POL_ORDER else 99)


def parse_polarisations(text: str | None) -> list[str] | None:
    """``"VV,VH"`` -> ``["VV", "VH"]``; None or empty -> None (all)."""
    if not text:
        return None
    pols = [p.strip().upper() for p in text.split(",") if p.strip()]
    bad = [p for p in pols if p not in POL_ORDER]
    if bad or not pols:
        raise SarsslError(f"--polarisations {text!r}: expected a comma-separated subset of {', '.join(POL_ORDER)}")
    return pols


TILE = 2048
"""Output grid tile (px): each tile has its own LUT and radar window, bounding memory."""


def _tiles(height: int, width: int, tile: int) -> list[tuple[int, int, int, int]]:
    """(row_off, col_off, h, w) of the output tiles, row-major."""
    return [(r, c, min(tile, height - r), min(tile, width - c))
            for r in range(0, height, tile) for c in range(0, width, tile)]


def _subgrid(grid, r0: int, c0: int, h: int, w: int):
    from affine import Affine

    from .grid import Grid

    return Grid(crs=grid.crs, transform=grid.transform @ Affine.translation(c0, r0), width=w, height=h)


def _tile_margin(dem, resolution: float) -> int:
    """LUT margin (px) around a tile: enough for slopes, terrain-flattening splats and the
    shadow cast by terrain up-range (relief / tan(min elevation ~ 44 deg), capped)."""
    relief = float(np.nanmax(dem.height) - np.nanmin(dem.height)) if np.isfinite(dem.height).any() else 0.0
    return int(np.clip(np.ceil(relief / 0.9 / resolution), 8, 256))


class LazyBorderLimits:
    """GRD border-noise limits computed on demand for the radar windows actually read.

    :func:`sarssl.sar.calibration.find_border_limits` scans the ``scan``-wide edge strips of the
    *whole* image (every line's near/far range strip, every column's first/last lines). A
    window only depends on the strips it overlaps: a pixel at column ``c >= scan`` can never
    be near-range border noise (the near-range limit is capped at ``scan``), and likewise for
    the far range and the first/last lines. So for each window we scan only the lines whose
    near (far) range strip the window reaches and the columns whose first (last) line strip
    it reaches, remembering what was scanned; unscanned entries keep neutral limits (0 /
    last index) that no window inside the strips' complement can see. The result equals the
    whole-image limits on every window passed to :meth:`for_window`. Thresholds and the
    denoising follow :func:`sarssl.sar.calibration.find_border_limits` (SNAP's
    Remove-GRD-Border-Noise: 500 px, amplitude 0.5 after thermal-noise subtraction).
    """

    def __init__(self, product, pol: str, remove_noise: bool, scan: int = 500, threshold: float = 0.5) -> None:
        from .calibration import BorderLimits

        self.product, self.pol, self.threshold = product, pol, threshold
        self.n_lines, self.n_samples = product.annotation(pol).shape
        self.noise = product.noise(pol) if remove_noise and product.has("noise", pol) else None
        self.left, self.top = min(scan, self.n_samples), min(scan, self.n_lines)
        self.limits = BorderLimits(
            np.zeros(self.n_lines, np.int32), np.full(self.n_lines, self.n_samples - 1, np.int32),
            np.zeros(self.n_samples, np.int32), np.full(self.n_samples, self.n_lines - 1, np.int32),
        )
        # scanned flags: near/far range strips per line, first/last line strips per column
        self._done = {k: np.zeros(n, bool) for k, n in
                      (("near", self.n_lines), ("far", self.n_lines), ("top", self.n_samples), ("bottom", self.n_samples))}
        self.pixels_read = 0

    def _amp(self, r0: int, c0: int, w: int, h: int) -> np.ndarray:
        from .calibration import _denoised_amplitude, noise_lut

        dn = self.product.read_measurement(self.pol, window=(c0, r0, w, h))
        self.pixels_read += dn.size
        eta = None if self.noise is None else noise_lut(self.noise, np.arange(r0, r0 + h), np.arange(c0, c0 + w))
        return _denoised_amplitude(dn, eta)

    def _runs(self, key: str, lo: int, hi: int) -> list[tuple[int, int]]:
        """Unscanned [start, stop) runs of ``key`` within [lo, hi); marks them scanned."""
        done = self._done[key]
        todo = np.flatnonzero(~done[lo:hi]) + lo
        done[lo:hi] = True
        if todo.size == 0:
            return []
        cut = np.flatnonzero(np.diff(todo) > 1) + 1
        return [(int(seg[0]), int(seg[-1]) + 1) for seg in np.split(todo, cut)]

    def for_window(self, win: tuple[int, int, int, int]):
        """The limits, valid on the radar window ``win`` = (row_off, col_off, height, width);
        None when the window reaches no edge strip (no pixel of it can be border noise, so
        the caller can skip the masking altogether)."""
        from .calibration import _first_above

        r0, c0, nl, npx = win
        r1, c1 = r0 + nl, c0 + npx
        L, T, ns, nls, thr = self.left, self.top, self.n_samples, self.n_lines, self.threshold
        if c0 >= L and c1 <= ns - L and r0 >= T and r1 <= nls - T:
            return None
        lim = self.limits
        if c0 < L:  # near-range strip of these lines
            for a, b in self._runs("near", r0, r1):
                lim.first_sample[a:b] = np.minimum(_first_above(self._amp(a, 0, L, b - a), thr, axis=1), L)
        if c1 > ns - L:  # far-range strip
            for a, b in self._runs("far", r0, r1):
                amp = self._amp(a, ns - L, L, b - a)[:, ::-1]
                lim.last_sample[a:b] = np.maximum(ns - 1 - _first_above(amp, thr, axis=1), ns - 1 - L)
        if r0 < T:  # first lines of these columns
            for a, b in self._runs("top", c0, c1):
                lim.first_line[a:b] = np.minimum(_first_above(self._amp(0, a, b - a, T), thr, axis=0), T)
        if r1 > nls - T:  # last lines
            for a, b in self._runs("bottom", c0, c1):
                amp = self._amp(nls - T, a, b - a, T)[::-1]
                lim.last_line[a:b] = np.maximum(nls - 1 - _first_above(amp, thr, axis=0), nls - 1 - T)
        return lim


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
) -> dict:
    """Run the Python chain; returns a small summary (timings, sizes).

    The product is validated and its measurements checked against the manifest first
    (``verify_checksums=False`` skips only their MD5).

    The output grid is processed in ``tile`` x ``tile`` tiles. For each tile the LUT is
    computed on the tile plus a margin (slopes, shadow, flattening see their neighbours),
    the radar window it needs (+ a speckle-window halo) is read, calibrated, filtered and
    sampled; results go block by block to the output COGs (:mod:`sarssl.rasterio_blocks`),
    so memory stays bounded by one tile whatever the scene size. The speckle filter's ENL
    is estimated once per polarisation (on the central tile's window) so tiles match.
    """
    from pyproj import Transformer
    from shapely.geometry import box

    from .calibration import calibrate_window
    from .dem import check_void, read_dem
    from .geocoding import MASK_NODATA, GeocodingLUT
    from .geometry import apply_orbit_dir
    from .grid import area_grid
    from ..rasterio_blocks import BlockWriter, close_all
    from .safe import check_measurements, open_product, validate_product
    from .speckle import estimate_enl
    from .speckle import speckle_filter as run_filter

    t_start = time.perf_counter()
    product = open_product(product_path)
    validate_product(product)
    pols = _pols(product, polarisations, what=str(product_path))
    if not pols:
        raise InputError(f"product {product_path}: no polarisation found")
    for pol in pols:
        if not product.has("measurement", pol):
            raise InputError(f"product {product_path}: polarisation {pol} has no measurement file")
        if not product.has("calibration", pol):
            raise InputError(f"product {product_path}: polarisation {pol} has no calibration annotation")
    check_measurements(product, pols, verify_checksums=verify_checksums)
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
    check_void(dem, max_dem_void, what=f"area {aoi}")
    dem_h_crs = dem.crs.sub_crs_list[0] if dem.crs.is_compound else dem.crs
    to_dem = Transformer.from_crs(grid.crs, dem_h_crs, always_xy=True)
    margin_px = _tile_margin(dem, resolution)
    halo = speckle_window + 2

    target = "beta0" if terrain_flattening else calibration
    if terrain_flattening and calibration != "gamma0":
        log.warning("--terrain-flattening outputs gamma0_T (terrain-flattened gamma0), not %s", calibration)
    # border-noise limits: scanned lazily, only the edge strips the tile windows reach
    borders = {pol: LazyBorderLimits(product, pol, remove_noise=product.has("noise", pol)) for pol in pols}
    times = {k: 0.0 for k in ("border", "enl", "lut", "read_calibrate", "filter", "geocode", "mask", "write", "cog")}
    times["setup"] = time.perf_counter() - t_start

    def tile_lut(r0: int, c0: int, h: int, w: int):
        """LUT of the tile grown by the margin, the margin offsets and the tile's DEM crop."""
        er0, ec0 = r0 - margin_px, c0 - margin_px
        eg = _subgrid(grid, er0, ec0, h + 2 * margin_px, w + 2 * margin_px)
        x0, y0, x1, y1 = eg.bounds
        xs = np.linspace(x0, x1, 9)
        ys = np.linspace(y0, y1, 9)
        gx, gy = np.meshgrid(xs, ys)
        dx, dy = to_dem.transform(gx, gy)
        if terrain_flattening:  # the margin's facets splat into the tile's radar window
            return GeocodingLUT.compute(geom, eg, dem.crop(dx, dy))
        inner = slice(margin_px, margin_px + h), slice(margin_px, margin_px + w)
        return GeocodingLUT.compute(geom, eg, dem.crop(dx, dy), radar_rows=inner[0], radar_cols=inner[1])

    def calibrated(lut, pol: str, win, flat_cache: dict) -> np.ndarray:
        """Calibrated (and flattened) radar window ``win`` = (row, col, h, w), unfiltered."""
        r0, c0, nl, npx = win
        t0 = time.perf_counter()
        border = borders[pol].for_window(win)
        t1 = time.perf_counter()
        times["border"] += t1 - t0
        img = calibrate_window(product, pol, (c0, r0, npx, nl), target=target,
                               remove_noise=product.has("noise", pol), border=border)
        if terrain_flattening:
            if "f" not in flat_cache:
                flat_cache["f"] = lut.flattening_factor(geom, (nl, npx), (r0, c0))
            img *= flat_cache["f"]
        times["read_calibrate"] += time.perf_counter() - t1
        return img

    def filtered(img: np.ndarray, enl) -> np.ndarray:
        t0 = time.perf_counter()
        out = run_filter(img, speckle_filter, speckle_window, enl=enl)
        times["filter"] += time.perf_counter() - t0
        return out

    def window_of(lut) -> tuple[int, int, int, int] | None:
        """Radar window of the tile proper (not its LUT margin) plus the speckle halo: the
        margin only feeds slopes, shadows and flattening splats, so reading, calibrating
        and filtering it would be wasted work (~35 % more radar pixels at 2048 px tiles)."""
        H, W = lut.line.shape
        inner_rows = slice(margin_px, max(H - margin_px, margin_px + 1))
        inner_cols = slice(margin_px, max(W - margin_px, margin_px + 1))
        return lut.radar_bounds(geom, margin=halo, rows=inner_rows, cols=inner_cols)

    tiles = _tiles(grid.height, grid.width, tile)
    # ENL per polarisation from the central tile's radar window (consistent across tiles);
    # that tile's LUT and calibrated windows are kept and reused when its turn comes, so
    # the estimate costs no repeated LUT, read or calibration work.
    enls: dict[str, float | None] = {p: None for p in pols}
    reuse: dict = {}
    if speckle_filter not in ("none", "boxcar"):
        order = sorted(tiles, key=lambda t: (t[0] + t[2] / 2 - grid.height / 2) ** 2 + (t[1] + t[3] / 2 - grid.width / 2) ** 2)
        for t in order:
            t0 = time.perf_counter()
            lut = tile_lut(*t)
            win = window_of(lut)
            times["lut"] += time.perf_counter() - t0
            if win is None:
                continue
            flat_cache: dict = {}
            imgs = {pol: calibrated(lut, pol, win, flat_cache) for pol in pols}
            t0 = time.perf_counter()
            for pol in pols:
                enls[pol] = estimate_enl(imgs[pol])
            times["enl"] += time.perf_counter() - t0
            reuse = {"tile": t, "lut": lut, "win": win, "imgs": imgs}
            break
        log.info("ENL estimates: %s", {p: round(v, 2) for p, v in enls.items() if v is not None})
    if speckle_filter in ("none", "boxcar"):
        enls = {p: 1.0 for p in pols}  # unused by these filters

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
        "GEOID": dem.geoid,
        "DEM_VOID_FRACTION": f"{dem.void_fraction:.6f}",
    }
    out = Path(out)
    mask_path = out.with_name(out.stem + ".mask.tif")
    n_valid = 0
    radar_px = 0
    import rasterio

    # GDAL_NUM_THREADS: the measurement windows span many deflate tiles, which GDAL (>= 3.6)
    # then decodes on all cores (~2x faster reads on 2 cores)
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"), \
         BlockWriter(out, count=len(pols), height=grid.height, width=grid.width, dtype="float32",
                     crs=grid.crs, transform=grid.transform, nodata=float("nan"), band_names=pols,
                     tags=tags) as data_w, \
         BlockWriter(mask_path, count=1, height=grid.height, width=grid.width, dtype="uint8",
                     crs=grid.crs, transform=grid.transform, nodata=None, band_names=["mask"],
                     tags={k: tags[k] for k in ("PRODUCT_ID", "SARSSL_VERSION")}) as mask_w:
        for r0, c0, h, w in tqdm(tiles, desc="preprocess tiles", leave=False):
            cached = reuse.pop("imgs", None) if reuse.get("tile") == (r0, c0, h, w) else None
            t0 = time.perf_counter()
            if cached is not None:
                lut, win = reuse["lut"], reuse["win"]
            else:
                lut = tile_lut(r0, c0, h, w)
                win = window_of(lut)
            times["lut"] += time.perf_counter() - t0
            if win is None:
                continue
            wr0, wc0, nl, npx = win
            radar_px += nl * npx
            flat_cache = {}
            inner = (slice(margin_px, margin_px + h), slice(margin_px, margin_px + w))
            bands = []
            for pol in pols:
                img = cached[pol] if cached is not None else calibrated(lut, pol, win, flat_cache)
                if enls[pol] is not None:
                    img = filtered(img, enls[pol])
                t2 = time.perf_counter()
                bands.append(lut.sample(img, (wr0, wc0), rows=inner[0], cols=inner[1]))
                times["geocode"] += time.perf_counter() - t2
            t2 = time.perf_counter()
            data = np.stack(bands)
            m = lut.mask(data, rows=inner[0], cols=inner[1])
            np.copyto(data, np.float32(np.nan), where=(m == MASK_NODATA)[None])  # (no boolean gather)
            if units == "db":
                data = _to_db(data)
            n_valid += int(np.count_nonzero(m))
            times["mask"] += time.perf_counter() - t2
            t2 = time.perf_counter()
            data_w.write(data, r0, c0)
            mask_w.write(m, r0, c0)
            times["write"] += time.perf_counter() - t2
        if n_valid == 0:
            raise InputError(f"product {product_path}: no valid data over the area {aoi} (all no data)")
        t3 = time.perf_counter()
        close_all([data_w, mask_w])  # both COG translations at once (the exit is then a no-op)
    times["cog"] += time.perf_counter() - t3
    total = time.perf_counter() - t_start
    t_lut, t_geo = times["lut"], times["geocode"] + times["mask"]
    t_radar = times["border"] + times["read_calibrate"] + times["filter"]
    t_write = times["write"] + times["cog"]
    npx_out = grid.width * grid.height
    summary = {
        "grid": grid.shape,
        "tiles": len(tiles),
        "radar_px_processed": radar_px,
        "seconds_total": total,
        "seconds_lut": t_lut,
        "seconds_radar": t_radar,
        "seconds_geocode": t_geo,
        "seconds_write": t_write,
        "geocode_mpx_per_s": npx_out * len(pols) / max(t_geo + t_lut, 1e-9) / 1e6,
        "valid_fraction": n_valid / npx_out,
        "border_pixels_read": sum(b.pixels_read for b in borders.values()),
        "phases": {k: round(v, 2) for k, v in times.items()},
    }
    log.info("preprocess phases (s): %s; total %.1f s, %.1f output Mpx/s per band", summary["phases"], total,
             npx_out / total / 1e6)
    log.info("preprocess %s -> %s: %s", product.id, out, summary)
    return summary


def _to_db(data: np.ndarray) -> np.ndarray:
    """10 log10 of positive values, NaN elsewhere (float32)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(data > 0, 10.0 * np.log10(data), np.nan).astype(np.float32)


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
    if backend == "snap":
        if aoi is not None:  # the same DEM checks (units, holes) as the Python chain
            from .dem import check_void, read_dem

            check_void(read_dem(args.dem, aoi, what=f"area {aoi}"), args.max_dem_void, what=f"area {aoi}")
        snap.preprocess_snap(args.product, args.dem, args.out, **kwargs)
    else:
        preprocess(args.product, args.dem, args.out, max_dem_void=args.max_dem_void, **kwargs)
    return 0
