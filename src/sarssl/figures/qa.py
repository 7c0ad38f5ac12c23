"""``preprocessing-qa``: one window of a raw Sentinel-1 GRD product through the chain.

Columns: raw digital numbers (DN, amplitude, uint16), calibrated sigma0 in dB (thermal
noise removed: ``sigma0 = (DN^2 - eta) / A_sigma^2``, ESA's Sentinel-1 radiometric
calibration, floored at -35 dB), the same after the speckle filter (Refined Lee by
default, applied to linear power as in SNAP), and the histograms of sigma0 before and
after filtering with the equivalent number of looks (ENL = mean^2 / variance of linear
intensity over homogeneous windows) that the filter raised. One row per polarisation.
The window is in the product's radar geometry (lines = azimuth, samples = ground range):
no geocoding has happened yet.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from ..errors import InputError, SarsslError
from .common import image_axes, require_file
from .registry import register_figure, styled

log = logging.getLogger(__name__)

#: dB colour range of the sigma0 panels (typical land/water backscatter, both pols).
DB_RANGE = (-30.0, 0.0)
#: Symbols of the calibration targets in labels.
QUANTITY_SYMBOLS = {"sigma0": "σ⁰", "beta0": "β⁰", "gamma0": "γ⁰"}


def to_db(power: np.ndarray) -> np.ndarray:
    """Linear power -> dB (10 log10); non-positive or NaN -> NaN."""
    p = np.asarray(power, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(p)
    out[~(p > 0)] = np.nan
    return out


@styled
def preprocessing_qa(
    panels: Mapping[str, Mapping[str, np.ndarray]],
    title: str = "",
    filter_name: str = "refined_lee",
    db_range: tuple[float, float] = DB_RANGE,
    quantity: str = "sigma0",
) -> Figure:
    """Build the QA figure.

    ``panels``: polarisation -> ``{"dn": uint16 (H, W), "sigma0": linear (H, W),
    "filtered": linear (H, W) or absent}``. Without ``filtered`` only the DN and sigma0
    columns (and a sigma0-only histogram) are drawn. Image artists carry ``gid``
    ``"dn|POL"``, ``"sigma0|POL"``, ``"filtered|POL"``; their arrays are exactly the DN and
    the dB values (10 log10 of the linear inputs). ``quantity`` (sigma0, beta0 or gamma0)
    names the calibrated backscatter in titles and colour-bar labels.
    """
    from ..sar.speckle import estimate_enl

    if not panels:
        raise SarsslError("preprocessing-qa: no polarisation to show")
    sym = QUANTITY_SYMBOLS.get(quantity, quantity)
    pols = list(panels)
    has_filtered = all("filtered" in panels[p] for p in pols)
    ncol = 4 if has_filtered else 3
    fig = Figure(figsize=(2.3 * ncol, 2.2 * len(pols) + 0.4), layout="constrained")
    axes = fig.subplots(len(pols), ncol, squeeze=False)
    for r, pol in enumerate(pols):
        d = panels[pol]
        dn = np.asarray(d["dn"])
        s0 = to_db(d["sigma0"])
        ax = axes[r, 0]
        valid = dn[dn > 0]
        hi = float(np.percentile(valid, 99)) if valid.size else 1.0
        im = ax.imshow(dn, cmap="gray", vmin=0, vmax=hi, interpolation="nearest", gid=f"dn|{pol}")
        fig.colorbar(im, ax=ax, shrink=0.8, label="DN (amplitude)")
        ax.set_title(f"{pol}: raw DN")
        ax = axes[r, 1]
        im = ax.imshow(
            s0,
            cmap="gray",
            vmin=db_range[0],
            vmax=db_range[1],
            interpolation="nearest",
            gid=f"sigma0|{pol}",
        )
        fig.colorbar(im, ax=ax, shrink=0.8, label=f"{sym} (dB)")
        ax.set_title(f"{pol}: calibrated {sym}")
        for ax in axes[r, :2]:
            image_axes(ax)
            ax.set_xlabel("range samples →")
            ax.set_ylabel("azimuth lines →")
        hist_ax = axes[r, ncol - 1]
        bins = np.linspace(db_range[0] - 5, db_range[1] + 5, 61)
        lin = np.asarray(d["sigma0"], dtype=np.float32)
        if not np.isfinite(s0).any():
            raise InputError(
                f"preprocessing-qa: {pol} window holds no valid data (DN 0 everywhere)"
            )
        enl_raw = estimate_enl(lin)
        hist_ax.hist(
            s0[np.isfinite(s0)],
            bins=bins,
            histtype="step",
            color="0.4",
            lw=1.0,
            density=True,
            label=f"calibrated (ENL {enl_raw:.1f})",
        )
        if has_filtered:
            sf = to_db(d["filtered"])
            ax = axes[r, 2]
            im = ax.imshow(
                sf,
                cmap="gray",
                vmin=db_range[0],
                vmax=db_range[1],
                interpolation="nearest",
                gid=f"filtered|{pol}",
            )
            fig.colorbar(im, ax=ax, shrink=0.8, label=f"{sym} (dB)")
            ax.set_title(f"{pol}: speckle-filtered ({filter_name})")
            image_axes(ax)
            ax.set_xlabel("range samples →")
            enl_f = estimate_enl(np.asarray(d["filtered"], dtype=np.float32))
            hist_ax.hist(
                sf[np.isfinite(sf)],
                bins=bins,
                histtype="step",
                color="#1f77b4",
                lw=1.2,
                density=True,
                label=f"filtered (ENL {enl_f:.1f})",
            )
        hist_ax.set_xlabel(f"{pol} {sym} (dB)")
        hist_ax.set_ylabel("density")
        hist_ax.set_title(f"{pol}: distribution")
        hist_ax.legend(loc="upper left")
    if title:
        fig.suptitle(title)
    return fig


def default_window(shape: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """A ``size`` x ``size`` window (col_off, row_off, width, height) centred in ``shape``."""
    h, w = shape
    sw, sh = min(size, w), min(size, h)
    return (w - sw) // 2, (h - sh) // 2, sw, sh


def valid_window(product, pol: str, size: int, step: int = 32) -> tuple[int, int, int, int]:
    """A ``size`` x ``size`` window centred on the product's valid data (DN > 0).

    Real GRD scenes are valid almost everywhere, but cropped or simulated products may hold
    data only in part of the image: the measurement is read decimated (every ``step``-th
    pixel, nearest) and the window centred on the median position of the non-zero pixels,
    shifted to lie inside the image. Falls back to the image centre when nothing is valid.
    """
    import warnings

    import rasterio

    h, w = product.annotation(pol).shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(product.measurement_path(pol)) as ds:
            small = ds.read(1, out_shape=(max(1, h // step), max(1, w // step)))
    nz = np.argwhere(small > 0)
    if nz.size == 0:
        return default_window((h, w), size)
    rc, cc = (np.median(nz, axis=0) + 0.5) * np.array([h / small.shape[0], w / small.shape[1]])
    sw, sh = min(size, w), min(size, h)
    c0 = int(np.clip(round(cc - sw / 2), 0, w - sw))
    r0 = int(np.clip(round(rc - sh / 2), 0, h - sh))
    return c0, r0, sw, sh


def read_panels(
    product_path: str,
    pols: Sequence[str] | None,
    window: tuple[int, int, int, int] | None,
    size: int,
    target: str,
    speckle_filter: str,
    speckle_window: int,
) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """Read, calibrate and filter one window of each polarisation; returns (panels, title)."""
    from ..sar.calibration import calibrate
    from ..sar.safe import open_product
    from ..sar.speckle import speckle_filter as apply_filter

    product = open_product(require_file(product_path, "Sentinel-1 product"))
    pols = list(pols) if pols else list(product.polarisations)
    panels: dict[str, dict[str, np.ndarray]] = {}
    for pol in pols:
        if pol not in product.polarisations:
            raise InputError(f"{product_path}: no polarisation {pol} (has {product.polarisations})")
        win = window or valid_window(product, pol, size)
        c0, r0, w, h = win
        dn = product.read_measurement(pol, window=win)
        sigma = calibrate(
            dn,
            product.calibration(pol),
            product.noise(pol),
            np.arange(r0, r0 + h),
            np.arange(c0, c0 + w),
            target=target,
        )
        panels[pol] = {"dn": dn, "sigma0": sigma}
        if speckle_filter != "none":
            panels[pol]["filtered"] = apply_filter(sigma, speckle_filter, speckle_window)
    c0, r0, w, h = win
    title = (
        f"{product.id}\n{product.mission} {product.mode} {product.pass_direction.lower()}, "
        f"{str(product.start_time)[:10]}; window lines {r0}–{r0 + h}, samples {c0}–{c0 + w}"
    )
    return panels, title


def parse_window(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    try:
        vals = tuple(int(v) for v in text.split(","))
    except ValueError:
        vals = ()
    if len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0 or min(vals) < 0:
        raise SarsslError(f"--window {text!r}: expected COL_OFF,ROW_OFF,WIDTH,HEIGHT (pixels)")
    return vals  # type: ignore[return-value]


def aoi_window(
    product_path: str, bbox: str, size: int, pol: str | None = None
) -> tuple[int, int, int, int]:
    """(col_off, row_off, width, height) of a ``size``-px measurement window centred on the
    centre of the lon/lat ``bbox`` (W,S,E,N).

    The annotation's geolocation grid (image line/pixel <-> lon/lat GCPs) is interpolated
    linearly at the AOI centre (nearest GCP outside its convex hull); the window is shifted
    to lie inside the image. Only the annotation XML is read, not the ~1 GB measurement.
    """
    from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

    from ..io import parse_bbox
    from ..sar.safe import open_product

    product = open_product(product_path)
    ann = product.annotation(pol or product.polarisations[0])
    gcps = ann.gcps()
    west, south, east, north = parse_bbox(bbox)
    centre = np.array([[(west + east) / 2.0, (south + north) / 2.0]])
    lonlat = np.column_stack([gcps["longitude"], gcps["latitude"]])
    line_pixel = np.column_stack([gcps["line"], gcps["pixel"]])
    rc = LinearNDInterpolator(lonlat, line_pixel)(centre)[0]
    if not np.all(np.isfinite(rc)):
        rc = NearestNDInterpolator(lonlat, line_pixel)(centre)[0]
    h, w = ann.shape
    sw, sh = min(size, w), min(size, h)
    c0 = int(np.clip(round(rc[1] - sw / 2), 0, w - sw))
    r0 = int(np.clip(round(rc[0] - sh / 2), 0, h - sh))
    return c0, r0, sw, sh


def _args(p: argparse.ArgumentParser) -> None:
    from ..sar.speckle import FILTERS

    p.add_argument("--product", required=True, help="Sentinel-1 GRD product (.zip or .SAFE)")
    p.add_argument("--pols", default=None, help="comma-separated polarisations (default: all)")
    p.add_argument(
        "--window",
        default=None,
        help="COL_OFF,ROW_OFF,WIDTH,HEIGHT in measurement pixels "
        "(default: centred on the valid data)",
    )
    p.add_argument(
        "--aoi",
        default=None,
        help="W,S,E,N (lon/lat): centre the window on this area (read from the annotation's "
        "geolocation grid; cheaper than the default scan for valid data)",
    )
    p.add_argument("--size", type=int, default=400, help="side of the default centred window (px)")
    p.add_argument("--calibration", default="sigma0", choices=("sigma0", "beta0", "gamma0"))
    p.add_argument("--speckle-filter", default="refined_lee", choices=FILTERS)
    p.add_argument("--speckle-window", type=int, default=7)


@register_figure(
    "preprocessing-qa", "raw DN vs calibrated vs speckle-filtered window of a product", _args
)
def _build(args: argparse.Namespace) -> Figure:
    pols = [s.strip().upper() for s in args.pols.split(",")] if args.pols else None
    if args.window is not None and args.aoi is not None:
        raise SarsslError("--window and --aoi are exclusive: give one")
    window = parse_window(args.window)
    if args.aoi is not None:
        window = aoi_window(args.product, args.aoi, args.size, pols[0] if pols else None)
        log.info("window %s centred on the area %s", window, args.aoi)
    panels, title = read_panels(
        args.product,
        pols,
        window,
        args.size,
        args.calibration,
        args.speckle_filter,
        args.speckle_window,
    )
    return preprocessing_qa(
        panels, title=title, filter_name=args.speckle_filter, quantity=args.calibration
    )
