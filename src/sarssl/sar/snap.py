"""The ESA SNAP backend of ``sarssl preprocess`` (through pyroSAR, optional).

``--backend auto`` uses SNAP when its ``gpt`` executable is on PATH and pyroSAR can be
imported, else the Python chain; ``--backend snap`` insists and fails clearly otherwise.
pyroSAR is an optional dependency imported lazily (see docs/conventions: its pip install
needs GDAL >= 3.7 bindings; conda-forge users get it directly).

:func:`geocode_kwargs` maps our options onto ``pyroSAR.snap.util.geocode`` (a pure function
testable without SNAP). pyroSAR writes gpt failures to ``<outdir>/<name>_error.log``
instead of raising; :func:`check_error_logs` turns those into a :class:`SarsslError`.
The SNAP result is then resampled onto the exact area grid and written with our tags.
The product is validated and its measurements checked against the manifest exactly as for
the Python chain (:func:`sarssl.sar.safe.validate_product`,
:func:`sarssl.sar.safe.check_measurements`) before SNAP sees it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SarsslError

log = logging.getLogger(__name__)

SNAP_SPECKLE = {
    "refined_lee": "Refined Lee",
    "lee": "Lee",
    "lee_sigma": "Lee Sigma",
    "gamma_map": "Gamma Map",
    "boxcar": "Boxcar",
    "none": None,
}


def gpt_path() -> str | None:
    """The SNAP graph processing tool on PATH, or None."""
    return shutil.which("gpt")


def pyrosar_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pyroSAR") is not None


def select_backend(requested: str) -> str:
    """'python' or 'snap' for ``--backend auto|python|snap``."""
    if requested == "python":
        return "python"
    gpt = gpt_path()
    pyro = pyrosar_available()
    if requested == "snap":
        if gpt is None:
            raise SarsslError(
                "--backend snap: SNAP's gpt executable was not found on PATH (install ESA SNAP)"
            )
        if not pyro:
            raise SarsslError(
                "--backend snap: pyroSAR is not installed (pip/conda install pyroSAR)"
            )
        return "snap"
    if requested != "auto":
        raise SarsslError(f"--backend {requested!r}: expected auto, python or snap")
    if gpt is not None and pyro:
        log.info("backend auto: SNAP gpt at %s", gpt)
        return "snap"
    log.info(
        "backend auto: %s, using the python chain",
        "no gpt on PATH" if gpt is None else "pyroSAR missing",
    )
    return "python"


def geocode_kwargs(
    product: str | Path,
    outdir: str | Path,
    dem: str | Path,
    *,
    grid_bounds: tuple[float, float, float, float],
    epsg: int,
    resolution: float = 10.0,
    calibration: str = "sigma0",
    terrain_flattening: bool = False,
    speckle_filter: str = "refined_lee",
    dem_is_geoid: bool = True,
    polarisations: list[str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``pyroSAR.snap.util.geocode`` equivalent to our options.

    ``grid_bounds`` (xmin, ymin, xmax, ymax in ``epsg``) is the area grid: SNAP is asked to
    align its output to the same origin (``alignToStandardGrid``), subset to it, and output
    linear values (we convert to dB ourselves, after resampling).
    """
    if speckle_filter not in SNAP_SPECKLE:
        raise SarsslError(f"speckle filter {speckle_filter!r} has no SNAP equivalent")
    xmin, ymin, xmax, ymax = grid_bounds
    refarea = "gamma0" if terrain_flattening else calibration
    kw: dict[str, Any] = dict(
        infile=str(product),
        outdir=str(outdir),
        t_srs=int(epsg),
        spacing=float(resolution),
        polarizations=polarisations or "all",
        shapefile={"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax, "crs": f"EPSG:{epsg}"},
        scaling="linear",
        geocoding_type="Range-Doppler",
        removeS1BorderNoise=True,
        removeS1BorderNoiseMethod="ESA",
        removeS1ThermalNoise=True,
        terrainFlattening=bool(terrain_flattening),
        refarea=refarea,
        externalDEMFile=str(dem),
        externalDEMNoDataValue=-32768.0,
        externalDEMApplyEGM=bool(dem_is_geoid),
        alignToStandardGrid=True,
        standardGridOriginX=float(xmin),
        standardGridOriginY=float(ymax),
        demResamplingMethod="BILINEAR_INTERPOLATION",
        imgResamplingMethod="BILINEAR_INTERPOLATION",
        export_extra=["layoverShadowMask"],
        allow_RES_OSV=True,
        cleanup=True,
    )
    if SNAP_SPECKLE[speckle_filter] is not None:
        kw["speckleFilter"] = SNAP_SPECKLE[speckle_filter]
    return kw


def check_error_logs(workdir: str | Path, since: float | None = None) -> None:
    """Raise SarsslError with the content of any pyroSAR ``*_error.log`` in ``workdir``."""
    workdir = Path(workdir)
    for p in sorted(workdir.rglob("*_error.log")):
        if since is not None and p.stat().st_mtime < since - 1:
            continue
        text = p.read_text(errors="replace").strip()
        raise SarsslError(f"SNAP gpt failed ({p}): {text[-2000:] or 'empty error log'}")


def preprocess_snap(product: str | Path, dem: str | Path, out: str | Path, **opts: Any) -> None:
    """Run pyroSAR/SNAP geocode and write its result onto the area grid per the contract."""
    import rasterio
    import rasterio.shutil  # noqa: F401  (used by sarssl.io.write_geotiff)
    from pyroSAR.snap.util import geocode  # lazy, optional
    from rasterio.warp import Resampling, reproject
    from shapely.geometry import box

    from .. import __version__
    from ..errors import InputError
    from ..io import write_geotiff
    from .dem import vertical_datum
    from .geocoding import MASK_LAYOVER, MASK_SHADOW
    from .grid import area_grid
    from .safe import check_measurements, open_product, validate_product

    prod = open_product(product)
    validate_product(prod)  # the same checks as the Python chain, before SNAP sees it
    aoi = opts.get("aoi") or tuple(prod.footprint.bounds)
    if not prod.footprint.intersects(box(*aoi)):
        raise InputError(f"product {product}: the area {aoi} misses the scene footprint")
    grid = area_grid(aoi, opts.get("resolution", 10.0), opts.get("crs"))
    with rasterio.open(dem) as ds:
        from pyproj import CRS

        geoid = vertical_datum(CRS.from_user_input(ds.crs.to_wkt())) != "ellipsoid"
    pols = prod.select_polarisations(opts.get("polarisations"), what=str(product))
    check_measurements(prod, pols, verify_checksums=opts.get("verify_checksums", True))
    if opts.get("orbit_dir"):
        log.warning(
            "SNAP backend: --orbit-dir is not passed to SNAP; SNAP's own orbit handling applies"
        )
    with tempfile.TemporaryDirectory(prefix="sarssl-snap-") as tmp:
        kw = geocode_kwargs(
            product,
            tmp,
            dem,
            grid_bounds=grid.bounds,
            epsg=grid.crs.to_epsg(),
            resolution=grid.resolution,
            calibration=opts.get("calibration", "sigma0"),
            terrain_flattening=opts.get("terrain_flattening", False),
            speckle_filter=opts.get("speckle_filter", "refined_lee"),
            dem_is_geoid=geoid,
            polarisations=pols,
        )
        t0 = time.time()
        geocode(**kw)
        check_error_logs(tmp, since=t0)
        data = np.full((len(pols),) + grid.shape, np.nan, dtype=np.float32)
        for i, pol in enumerate(pols):
            files = [
                f
                for f in Path(tmp).rglob("*.tif")
                if f"_{pol}_" in f.name or f"_{pol.lower()}_" in f.name
            ]
            if not files:
                raise SarsslError(f"SNAP produced no {pol} output in {tmp}")
            with rasterio.open(files[0]) as src:
                reproject(
                    rasterio.band(src, 1),
                    data[i],
                    dst_transform=grid.transform,
                    dst_crs=grid.crs,
                    dst_nodata=np.nan,
                    resampling=Resampling.bilinear,
                )
        valid = np.isfinite(data).all(axis=0) & (data > 0).all(axis=0)
        mask = valid.astype(np.uint8)
        ls = [f for f in Path(tmp).rglob("*layoverShadowMask*.tif")]
        if ls:
            lsm = np.zeros(grid.shape, np.float32)
            with rasterio.open(ls[0]) as src:
                reproject(
                    rasterio.band(src, 1),
                    lsm,
                    dst_transform=grid.transform,
                    dst_crs=grid.crs,
                    resampling=Resampling.nearest,
                )
            # SNAP: 1 layover, 2 shadow, 3 both
            mask[valid & ((lsm == 1) | (lsm == 3))] |= MASK_LAYOVER
            mask[valid & ((lsm == 2) | (lsm == 3))] |= MASK_SHADOW
    data[:, ~valid] = np.nan
    units = opts.get("units", "db")
    if units == "db":
        with np.errstate(divide="ignore", invalid="ignore"):
            data = (10.0 * np.log10(data)).astype(np.float32)
    tags = {
        "PRODUCT_ID": prod.id,
        "ACQUISITION_START": str(np.datetime_as_string(prod.start_time, unit="us")) + "Z",
        "PASS": prod.pass_direction,
        "RELATIVE_ORBIT": prod.relative_orbit,
        "ORBIT_SOURCE": "snap",
        "CALIBRATION": "gamma0"
        if opts.get("terrain_flattening")
        else opts.get("calibration", "sigma0"),
        "TERRAIN_FLATTENING": str(bool(opts.get("terrain_flattening"))).lower(),
        "SPECKLE_FILTER": opts.get("speckle_filter", "refined_lee"),
        "UNITS": units,
        "BACKEND": "snap",
        "SARSSL_VERSION": __version__,
        "DEM": Path(dem).name,
        # SNAP's externalDEMApplyEGM adds its own EGM96 undulations to geoid heights
        "GEOID": "EGM96 (SNAP externalDEMApplyEGM)" if geoid else "none (ellipsoidal heights)",
    }
    out = Path(out)
    write_geotiff(
        out.with_name(out.stem + ".mask.tif"),
        mask,
        crs=grid.crs,
        transform=grid.transform,
        band_names=["mask"],
        tags={"PRODUCT_ID": prod.id},
    )
    write_geotiff(
        out,
        data,
        crs=grid.crs,
        transform=grid.transform,
        nodata=float("nan"),
        band_names=pols,
        tags=tags,
    )
    # the scene's STAC Item, as the Python chain writes it (the workflow declares it)
    from . import stac as stac_meta
    from .cog import scene_cogs

    tags["PRODUCT_MODE"] = "sigma0"
    item = stac_meta.scene_item(out, grid, tags, pols, prod, scene_cogs(out, pols, tags, "sigma0"))
    stac_meta.write_item(item, stac_meta.item_path(out))
