"""Map grids shared by every stage.

An *area grid* is defined by a CRS, a resolution and an area of interest. Its origin is
snapped to whole multiples of the resolution in CRS units (the grid is anchored at the
CRS origin), so every scene of an area lands on identical pixels and stacks without
resampling, and chips cut on multiples of ``chip_size * resolution`` have stable ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from affine import Affine
from pyproj import CRS, Transformer

if TYPE_CHECKING:  # pragma: no cover
    from .window import PixelWindow


def utm_crs(lon: float, lat: float) -> CRS:
    """The WGS84 / UTM zone CRS containing (lon, lat)."""
    zone = int(math.floor((lon + 180.0) / 6.0)) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def resolve_crs(crs: str | int | CRS | None, bbox: tuple[float, float, float, float]) -> CRS:
    """``None``/'auto'/'utm' -> UTM zone of the bbox centre; else anything pyproj accepts."""
    if crs is None or (isinstance(crs, str) and crs.lower() in ("auto", "utm", "")):
        w, s, e, n = bbox
        return utm_crs((w + e) / 2.0, (s + n) / 2.0)
    return CRS.from_user_input(crs)


@dataclass(frozen=True)
class Grid:
    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def resolution(self) -> float:
        return self.transform.a

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        x0, y1 = self.transform.c, self.transform.f
        return x0, y1 - self.height * self.resolution, x0 + self.width * self.resolution, y1

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def xy(self) -> tuple["np.ndarray", "np.ndarray"]:  # noqa: F821
        """Pixel-centre x (cols,) and y (rows,) coordinates in CRS units."""
        import numpy as np

        r = self.resolution
        xs = self.transform.c + (np.arange(self.width) + 0.5) * r
        ys = self.transform.f - (np.arange(self.height) + 0.5) * r
        return xs, ys

    def subgrid(self, window: PixelWindow) -> Grid:
        """The grid of the pixels of ``window`` (it may reach beyond this grid)."""
        shift = Affine.translation(window.col_off, window.row_off)
        return Grid(
            crs=self.crs, transform=self.transform @ shift, width=window.width, height=window.height
        )


def area_grid(
    bbox: tuple[float, float, float, float],
    resolution: float,
    crs: str | int | CRS | None = None,
    densify: int = 21,
) -> Grid:
    """The aligned grid covering a lon/lat bbox (W,S,E,N) in ``crs`` at ``resolution`` m."""
    import numpy as np

    crs = resolve_crs(crs, bbox)
    w, s, e, n = bbox
    t = np.linspace(0.0, 1.0, densify)
    lons = np.concatenate(
        [w + (e - w) * t, np.full_like(t, e), e - (e - w) * t, np.full_like(t, w)]
    )
    lats = np.concatenate(
        [np.full_like(t, s), s + (n - s) * t, np.full_like(t, n), n - (n - s) * t]
    )
    tr = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    xs, ys = tr.transform(lons, lats)
    r = float(resolution)
    x0 = math.floor(min(xs) / r) * r
    y0 = math.floor(min(ys) / r) * r
    x1 = math.ceil(max(xs) / r) * r
    y1 = math.ceil(max(ys) / r) * r
    width = int(round((x1 - x0) / r))
    height = int(round((y1 - y0) / r))
    return Grid(crs=crs, transform=Affine(r, 0.0, x0, 0.0, -r, y1), width=width, height=height)
