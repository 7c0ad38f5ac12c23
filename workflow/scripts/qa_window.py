"""Print the measurement window of a Sentinel-1 GRD product that covers an area of interest.

Usage: ``python qa_window.py PRODUCT W,S,E,N [--size PX] [--pol VV]``; prints
``COL_OFF,ROW_OFF,WIDTH,HEIGHT`` (measurement pixels) for ``sarssl plot preprocessing-qa
--window``.

The product's geolocation grid (annotation GCPs: image line/pixel <-> lon/lat, about 10 x 20
points over the scene) is interpolated linearly at the AOI centre, giving the line/pixel of
the centre in radar geometry; the window is a ``size`` x ``size`` square centred there and
shifted to lie inside the image. Only the small annotation XML is read, so this replaces the
figure's default (a decimated scan of the whole ~1 GB measurement, ~17 s and 1.2 GB peak on a
real scene) with a few milliseconds. When the AOI centre lies outside the GCP grid's convex
hull, the nearest GCP is used.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

from sarssl.errors import SarsslError
from sarssl.io import parse_bbox
from sarssl.safe import open_product


def aoi_window(product_path: str, bbox: str, size: int, pol: str | None) -> tuple[int, int, int, int]:
    """(col_off, row_off, width, height) of a ``size``-px window centred on the AOI centre."""
    product = open_product(product_path)
    pol = pol or product.polarisations[0]
    ann = product.annotation(pol)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("product", help="GRD product (.zip or .SAFE)")
    parser.add_argument("aoi", help="area of interest W,S,E,N (lon/lat degrees)")
    parser.add_argument("--size", type=int, default=400, help="window side (px)")
    parser.add_argument("--pol", default=None, help="polarisation whose grid is used")
    args = parser.parse_args(argv)
    try:
        window = aoi_window(args.product, args.aoi, args.size, args.pol)
    except SarsslError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(",".join(str(v) for v in window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
