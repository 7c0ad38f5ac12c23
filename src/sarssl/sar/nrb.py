"""The CEOS-ARD Normalised Radar Backscatter (NRB) product mode of ``sarssl preprocess``
(``--product nrb``; issue #16, item 3): its sidecar layers, mask bits and metadata.

In NRB mode the scene ``OUT.tif`` holds terrain-flattened gamma0 (Small 2011, beta0 x
A_beta / A_gamma with the geocoding DEM) in linear power, one band per polarisation, and
each sidecar layer ``OUT.<layer>.tif`` (:data:`LAYERS`) is a COG on the same grid:

``mask``
    uint8 bit flags (:data:`MASK_BITS`): 1 valid, 2 layover, 4 shadow (local and cast),
    8 DEM gap (no DEM height: no geocoding), 16 no radar data (outside the swath, border
    or thermal noise removed, or a radar no-data pixel). Every pixel has at least one bit;
    a valid pixel may carry 2 and 4 too, an invalid one carries 8 or 16.
``local_incidence_angle``
    degrees between the terrain normal (DEM slopes on the output grid) and the look vector.
``ellipsoid_incidence_angle``
    degrees between the ellipsoid normal (local up) and the look vector at the pixel.
``gamma_to_sigma_ratio``
    A_gamma / A_sigma of the radar pixel each output pixel samples (illuminated area over
    true ground area, both splatted from the DEM facets as in the flattening): multiply
    gamma0 by it to get terrain-flattened sigma0 (cos of the incidence on flat terrain).
``nesz``
    noise-equivalent sigma0 (linear power) from the product's thermal-noise LUT, eta /
    A_sigma^2, one band per polarisation (NaN without a noise annotation).
``dem``
    the DEM heights the geocoding and the flattening used, in metres above the WGS84
    ellipsoid (the geoid of the ``GEOID`` tag added), on the output grid.

The dataset tags (:func:`nrb_tags`) cover every CEOS-ARD NRB threshold item that is
machine-readable (``docs/ceos-ard.md`` maps each requirement), and the same facts go into
the scene's STAC Item (:mod:`sarssl.sar.stac`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .calibration import calibration_lut, noise_lut
from .geocoding import MASK_NODATA, GeocodingLUT

PRODUCTS = ("sigma0", "nrb")

MASK_VALID = 1
MASK_LAYOVER = 2
MASK_SHADOW = 4
MASK_DEM_GAP = 8
MASK_NO_RADAR_DATA = 16
MASK_BITS = {
    MASK_VALID: "valid",
    MASK_LAYOVER: "layover",
    MASK_SHADOW: "shadow",
    MASK_DEM_GAP: "DEM gap (no height: not geocoded)",
    MASK_NO_RADAR_DATA: "no radar data (outside the swath, border or thermal noise)",
}
"""Bit -> meaning of the NRB mask; the sigma0 mode's mask uses bits 1, 2 and 4 only (0 =
no data)."""

SIGMA0_MASK_MEANING = "0 no data, 1 valid, +2 layover, +4 shadow"
NRB_MASK_MEANING = ", ".join(f"{b} {m}" for b, m in MASK_BITS.items())


@dataclass(frozen=True)
class Layer:
    """One sidecar layer: dtype, unit, description, nodata and overview resampling."""

    name: str
    dtype: str
    unit: str
    description: str
    overviews: str = "average"
    per_polarisation: bool = False

    @property
    def nodata(self) -> float | None:
        return None if self.dtype == "uint8" else float("nan")


LAYERS: dict[str, Layer] = {
    layer.name: layer
    for layer in (
        Layer("mask", "uint8", "bit flags", f"data mask: {NRB_MASK_MEANING}", "nearest"),
        Layer(
            "local_incidence_angle",
            "float32",
            "degree",
            "local incidence angle (terrain normal vs look vector)",
        ),
        Layer(
            "ellipsoid_incidence_angle",
            "float32",
            "degree",
            "ellipsoidal incidence angle (ellipsoid normal vs look vector)",
        ),
        Layer(
            "gamma_to_sigma_ratio",
            "float32",
            "1",
            "A_gamma / A_sigma: gamma0 x ratio = terrain-flattened sigma0",
        ),
        Layer(
            "nesz",
            "float32",
            "linear power",
            "noise-equivalent sigma0 from the thermal noise LUT",
            per_polarisation=True,
        ),
        Layer("dem", "float32", "metre", "DEM height above the WGS84 ellipsoid used"),
    )
}


def layer_path(out, name: str):
    """``OUT.<layer>.tif`` beside ``OUT.tif``."""
    from pathlib import Path

    out = Path(out)
    return out.with_name(f"{out.stem}.{name}.tif")


def nrb_mask(mask: np.ndarray, height: np.ndarray) -> np.ndarray:
    """The NRB mask from the geocoding mask (0 no data, 1 valid, +2, +4) and the heights:
    an invalid pixel gets 8 when it has no DEM height, else 16."""
    out = mask.copy()
    nodata = mask == MASK_NODATA
    gap = ~np.isfinite(height)
    out[nodata & gap] = MASK_DEM_GAP
    out[nodata & ~gap] = MASK_NO_RADAR_DATA
    return out


def areas(lut: GeocodingLUT, shape: tuple[int, int], offset: tuple[int, int]) -> tuple:
    """(A_gamma, A_sigma) per radar pixel of a window: the projected and the true areas of
    the DEM facets (output pixels) splatted bilinearly onto the radar pixels they map to."""
    hx, hy = lut.slopes()
    area = lut.grid.resolution**2 * np.sqrt(1.0 + hx * hx + hy * hy)
    proj = np.clip(area * lut.cos_local_incidence(), 0.0, None)
    return lut.splat(proj, shape, offset), lut.splat(area, shape, offset)


def tile_layers(tl, product, pols: list[str], mask: np.ndarray) -> dict[str, np.ndarray]:
    """The sidecar layers of one geocoded tile (a
    :class:`sarssl.sar.preprocess.TileLUT`) whose geocoding ``mask`` is given."""
    lut: GeocodingLUT = tl.lut
    rows, cols = tl.inner.row_slice, tl.inner.col_slice
    height = lut.height[rows, cols]
    valid_geo = np.isfinite(lut.line[rows, cols])
    cos_li = lut.cos_local_incidence()[rows, cols]
    lia = np.degrees(np.arccos(np.clip(cos_li, -1.0, 1.0))).astype(np.float32)
    eia = np.degrees(np.arccos(np.clip(lut.look[2][rows, cols], -1.0, 1.0))).astype(np.float32)
    for a in (lia, eia):
        a[~valid_geo] = np.nan
    a_gamma, a_sigma = areas(lut, tl.radar.shape, tl.radar.offset)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(a_sigma > 0, a_gamma / a_sigma, np.nan).astype(np.float32)
    ratio_grid = lut.sample(ratio, tl.radar.offset, rows=rows, cols=cols)
    r_rows, r_cols = tl.radar.rows(), tl.radar.cols()
    nesz = []
    for pol in pols:
        if not product.has("noise", pol):
            nesz.append(np.full(height.shape, np.nan, dtype=np.float32))
            continue
        a = np.asarray(
            calibration_lut(product.calibration(pol), "sigmaNought", r_rows, r_cols), np.float64
        )
        eta = np.asarray(noise_lut(product.noise(pol), r_rows, r_cols), np.float64)
        nesz.append(lut.sample((eta / (a * a)).astype(np.float32), tl.radar.offset, rows, cols))
    m = nrb_mask(mask, height)
    nodata = (m & MASK_VALID) == 0
    for a in (ratio_grid, *nesz):
        a[nodata] = np.nan
    return {
        "mask": m,
        "local_incidence_angle": lia,
        "ellipsoid_incidence_angle": eia,
        "gamma_to_sigma_ratio": ratio_grid,
        "nesz": np.stack(nesz),
        "dem": height.astype(np.float32),
    }


def nrb_tags(
    product, geom, pols: list[str], enls: dict, speckle_filter: str, resolution: float
) -> dict[str, str]:
    """The CEOS-ARD NRB metadata of the scene (added to :func:`scene_tags`' provenance,
    which holds the DEM, geoid, orbit and geolocation self-check items)."""
    enl = {p: v for p, v in enls.items() if v is not None}
    return {
        "PRODUCT_MODE": "nrb",
        "CEOS_ARD_PRODUCT": "Normalised Radar Backscatter (CEOS-ARD NRB)",
        "BACKSCATTER_CONVENTION": "gamma0 terrain-flattened (Small 2011), linear power",
        "BACKSCATTER_EXPRESSION": "gamma0_T = beta0 * A_beta / A_gamma",
        "NOISE_REMOVAL": "thermal (annotation noise LUT) and GRD border noise",
        "SPECKLE_FILTERED": str(speckle_filter != "none").lower(),
        "EQUIVALENT_NUMBER_OF_LOOKS": ",".join(f"{p}:{v:.2f}" for p, v in enl.items())
        or "not estimated (no ENL-based filter)",
        "RESAMPLING": "bilinear (backward geocoding from radar geometry)",
        "PIXEL_SPACING_M": f"{resolution:g}",
        "SENSOR": f"Sentinel-1 C-SAR, {product.mode}, {product.mission}",
        "RADAR_FREQUENCY_GHZ": f"{geom.radar_frequency / 1e9:.6f}",
        "POLARISATIONS": ",".join(pols),
        "ACQUISITION_STOP": str(np.datetime_as_string(product.stop_time, unit="us")) + "Z",
        "ABSOLUTE_ORBIT": str(product.absolute_orbit),
        "SOURCE_IPF_VERSION": product.ipf_version,
        "MASK_BITS": NRB_MASK_MEANING,
        "LAYERS": ",".join(LAYERS),
    }
