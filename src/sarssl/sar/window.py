"""The one window type of the SAR chain: a rectangle of pixels of a raster.

A :class:`PixelWindow` is given in numpy order: ``row_off``, ``col_off`` (the first row and
column, in full-raster indices) and ``height`` x ``width`` pixels. It stands for radar
windows (lines x samples of a GRD measurement, as
:meth:`sarssl.sar.geocoding.GeocodingLUT.radar_bounds` returns them) as well as output
tiles (rows x columns of an area grid). rasterio orders the same four
numbers differently, ``Window(col_off, row_off, width, height)``; the two orders meet only
here: :meth:`PixelWindow.of` reads rasterio's form (a ``Window`` or such a tuple, as
:meth:`sarssl.sar.safe.Product.read_measurement` has always accepted) and
:meth:`PixelWindow.to_rasterio` writes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PixelWindow:
    """Rows ``row_off .. row_off + height - 1`` x columns ``col_off .. col_off + width - 1``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @classmethod
    def of(cls, window: Any) -> PixelWindow:
        """``window`` itself when it is a :class:`PixelWindow`; else a
        :class:`rasterio.windows.Window` or a tuple in rasterio's order
        ``(col_off, row_off, width, height)``, with offsets and sizes made integers."""
        if isinstance(window, cls):
            return window
        from rasterio.windows import Window

        if not isinstance(window, Window):
            window = Window(*window)
        return cls(int(window.row_off), int(window.col_off), int(window.height), int(window.width))

    def to_rasterio(self):
        """The same window as a :class:`rasterio.windows.Window`."""
        from rasterio.windows import Window

        return Window(self.col_off, self.row_off, self.width, self.height)

    @property
    def row_end(self) -> int:
        """One past the last row."""
        return self.row_off + self.height

    @property
    def col_end(self) -> int:
        """One past the last column."""
        return self.col_off + self.width

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width), the shape of the window's array."""
        return self.height, self.width

    @property
    def offset(self) -> tuple[int, int]:
        """(row_off, col_off), where the window's array starts in the full raster."""
        return self.row_off, self.col_off

    @property
    def row_slice(self) -> slice:
        return slice(self.row_off, self.row_end)

    @property
    def col_slice(self) -> slice:
        return slice(self.col_off, self.col_end)

    def rows(self) -> np.ndarray:
        """Full-raster indices of the window's rows (lines)."""
        return np.arange(self.row_off, self.row_end)

    def cols(self) -> np.ndarray:
        """Full-raster indices of the window's columns (samples)."""
        return np.arange(self.col_off, self.col_end)

    def grow(self, margin: int) -> PixelWindow:
        """The window grown by ``margin`` pixels on every side (not clipped)."""
        return PixelWindow(
            self.row_off - margin,
            self.col_off - margin,
            self.height + 2 * margin,
            self.width + 2 * margin,
        )
