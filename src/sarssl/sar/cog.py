"""COG hygiene of the preprocessed rasters: band units and descriptions, documented nodata,
and overviews resampled the way each quantity averages (issue #16, item 4).

:class:`LayerWriter` is a :class:`sarssl.rasterio_blocks.BlockWriter` (block-wise writing,
an uncompressed tiled temporary, atomic publication as a ZSTD COG) that also

- sets a unit (GDAL band metadata ``UNIT``, what ``gdalinfo`` and rasterio's ``units``
  show) and a description on every band, and a ``NODATA_MEANING`` dataset tag;
- builds its internal overviews with one of :data:`OVERVIEW_RESAMPLING`:

  ``power_db``: backscatter in dB averaged in *linear power* (``10 log10 mean 10^(x/10)``
  over each block of base pixels, NaN ignored): the mean of dB values would be the
  geometric mean of the powers, biased low by ~2.5 dB on 4-look speckle;
  ``average``: a plain mean (NaN ignored): linear power, angles, heights, ratios;
  ``nearest``: the upper-left base pixel of each block (GDAL's nearest): bit-flag masks,
  whose average would invent flags.

The overviews are computed from the base image, each level from the previous level's sums
and counts (so every level is the exact mean of its base pixels, as GDAL's average), in
strips (memory: one strip of ``max factor`` x ``blocksize`` rows), and written into the
temporary's overview levels before the COG translation copies them.

Memory: the overview pass and the COG translation read the whole base image once, in
order, from an uncompressed file the page cache holds, yet GDAL's block cache (default 5 %
of RAM: 1.26 GB on a 23 GB machine) fills up with base and overview blocks, and the
translation's swath buffer (a quarter of the cache) comes on top: the peak of a run.
:meth:`LayerWriter.close` therefore caps the cache at :data:`CLOSE_CACHE_BYTES`
(:func:`capped_gdal_cache`: shared by concurrent closes, restored after the last), enough
for the block rows each step works on. Measured on a quarter of the benchmark scene
(``benchmarks/preprocess.py``'s product, the central half of its extent each way: 10805 x
14524 px, sigma0 dB, Refined Lee), uncapped -> capped: ``sarssl preprocess`` peak RSS
3.23 -> 1.47 GiB, its ``cog`` phase 16.4 -> 15.8 s (2 shared cores; identical pixels and
overviews); the close of one 2 x 10807 x 14562 float32 layer alone: 2.65 -> 0.85 GiB.

:func:`scene_cogs` lists the COGs of a preprocessed scene (path, dtype, units, nodata and
its meaning, descriptions, overview resampling, STAC title and roles) for both product
modes, for the writers and the STAC Item alike.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from pathlib import Path
from typing import Any, Sequence

import numba
import numpy as np

from ..rasterio_blocks import BlockWriter
from . import nrb

log = logging.getLogger(__name__)

OVERVIEW_RESAMPLING = ("power_db", "average", "nearest")

CLOSE_CACHE_BYTES = 256 * 1024**2
"""GDAL block cache while COGs are closed (overviews, COG translation): see the docstring."""

_cache_lock = threading.Lock()
_cache_users = 0
_cache_saved: Any = None


@contextlib.contextmanager
def capped_gdal_cache(nbytes: int = CLOSE_CACHE_BYTES):
    """GDAL's block cache capped at ``nbytes`` (never raised) inside the block. The cache
    is process-wide: concurrent users (:func:`sarssl.rasterio_blocks.close_all` closes
    the layers in threads) share one cap, set by the first and restored by the last."""
    from rasterio._env import get_gdal_config, set_gdal_config

    global _cache_users, _cache_saved
    with _cache_lock:
        if _cache_users == 0:
            _cache_saved = get_gdal_config("GDAL_CACHEMAX")
            # GDAL reads values below 100000 as MB
            saved = None if _cache_saved is None else int(_cache_saved)
            if saved is None or (saved if saved >= 100000 else saved * 1024**2) > nbytes:
                set_gdal_config("GDAL_CACHEMAX", int(nbytes))
        _cache_users += 1
    try:
        yield
    finally:
        with _cache_lock:
            _cache_users -= 1
            if _cache_users == 0 and _cache_saved is not None:
                set_gdal_config("GDAL_CACHEMAX", _cache_saved)


class LayerWriter(BlockWriter):
    """A :class:`~sarssl.rasterio_blocks.BlockWriter` with band units, descriptions, a
    documented nodata and overviews resampled by ``overviews`` (:data:`OVERVIEW_RESAMPLING`)."""

    def __init__(
        self,
        path,
        *,
        units: Sequence[str],
        overviews: str = "average",
        nodata_meaning: str | None = None,
        **kwargs: Any,
    ) -> None:
        if overviews not in OVERVIEW_RESAMPLING:
            raise ValueError(f"overviews {overviews!r}: expected one of {OVERVIEW_RESAMPLING}")
        tags = dict(kwargs.pop("tags", None) or {})
        if nodata_meaning:
            tags["NODATA_MEANING"] = nodata_meaning
        super().__init__(path, tags=tags, **kwargs)
        if len(units) != self._ds.count:
            self.abort()
            raise ValueError(f"{path}: {len(units)} units for {self._ds.count} bands")
        for i, unit in enumerate(units):
            self._ds.set_band_unit(i + 1, unit)
        self.overviews = overviews

    def build_temp_overviews(self, factors: list[int], keep: contextlib.ExitStack) -> None:
        """The overviews by :func:`build_overviews` (dB averaged in linear power), with GDAL's
        block cache capped from here until the COG is written (:func:`capped_gdal_cache`;
        lowering the cap flushes dirty blocks, any dataset's, e.g. a layer not closed yet:
        here, where a failed write raises)."""
        keep.enter_context(capped_gdal_cache())
        if factors:
            build_overviews(self._tmp, factors, self.overviews, self.blocksize)


def build_overviews(path, factors: list[int], resampling: str, blocksize: int = 512) -> None:
    """Internal overviews of the GTiff ``path`` at ``factors`` (2, 4, ...), resampled by
    ``resampling`` (:data:`OVERVIEW_RESAMPLING`; see the module docstring)."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    with rasterio.open(path, "r+") as ds:
        # GDAL creates the levels (nearest: the cheapest; kept as is for "nearest")
        ds.build_overviews(factors, Resampling.nearest)
        if resampling == "nearest":
            return
        H, W = ds.height, ds.width
        nodata = ds.nodata
    db = resampling == "power_db"
    fmax = factors[-1]
    strip = fmax * max(1, blocksize // fmax)  # rows per strip: a multiple of every factor
    nd = np.nan if nodata is None else float(nodata)
    fill = np.nan if nodata is None or np.isnan(nodata) else float(nodata)
    with rasterio.open(path) as base:
        for r0 in range(0, H, strip):
            x = base.read(window=Window(0, r0, W, min(strip, H - r0)))
            s, n = _first_level(np.ascontiguousarray(x, dtype=np.float32), nd, db)
            del x
            for k, f in enumerate(factors):  # level k has the factor f = 2 ** (k + 1)
                if k:  # sums and counts of 2x2 blocks of the level above
                    s, n = _halve(s), _halve(n)
                # opened per strip: closing writes the strip's blocks out, so GDAL's block
                # cache does not fill up with dirty overview blocks (peak memory)
                with rasterio.open(path, "r+", overview_level=k) as ov:
                    oh = min(s.shape[1], ov.height - r0 // f)
                    ow = min(s.shape[2], ov.width)
                    mean = np.empty((s.shape[0], oh, ow), dtype=np.float32)
                    _mean_kernel(s, n, db, fill, mean)
                    win = Window(0, r0 // f, ow, oh)
                    ov.write(mean.astype(ov.dtypes[0], copy=False), window=win)


def _close_quietly(ds) -> None:
    """Close a dataset being discarded: its errors only go to the debug log."""
    import rasterio

    try:
        with rasterio.Env():
            ds.close()
    except Exception as exc:  # noqa: BLE001 - the file is deleted next
        log.debug("closing %s: %s", ds.name, exc)


def _first_level(x: np.ndarray, nodata: float, db: bool) -> tuple[np.ndarray, np.ndarray]:
    """Sums (linear power when ``db``) and counts of the valid pixels of each 2 x 2 block
    of a (bands, h, w) float32 strip: one fused numba pass (the base image is the bulk of
    the overview work)."""
    c, h, w = x.shape
    s = np.zeros((c, (h + 1) // 2, (w + 1) // 2), dtype=np.float64)
    n = np.zeros_like(s)
    _first_level_kernel(x, float(nodata), bool(db), s, n)
    return s, n


@numba.njit(cache=True, parallel=True)
def _first_level_kernel(x, nodata, db, s, n):
    c, h, w = x.shape
    nan_nodata = nodata != nodata
    for i in numba.prange(s.shape[1]):
        for b in range(c):
            for r in range(2 * i, min(2 * i + 2, h)):
                for col in range(w):
                    v = x[b, r, col]
                    if v != v or (not nan_nodata and v == nodata) or math.isinf(v):
                        continue
                    if db:
                        v = math.exp(v * 0.23025850929940458)  # 10 ** (v / 10)
                    s[b, i, col // 2] += v
                    n[b, i, col // 2] += 1.0


def _halve(a: np.ndarray) -> np.ndarray:
    """Sums of 2 x 2 blocks of a (bands, h, w) array (the odd last row and column sum
    what there is, as GDAL's overview of size ceil(n / 2) covers them)."""
    c, h, w = a.shape
    out = np.zeros((c, (h + 1) // 2, (w + 1) // 2), dtype=a.dtype)
    _halve_kernel(a, out)
    return out


@numba.njit(cache=True)  # small arrays: threads would cost more
def _halve_kernel(a, out):
    c, h, w = a.shape
    for i in range(out.shape[1]):
        for b in range(c):
            for r in range(2 * i, min(2 * i + 2, h)):
                for col in range(w):
                    out[b, i, col // 2] += a[b, r, col]


@numba.njit(cache=True)  # small arrays: threads would cost more
def _mean_kernel(s, n, db, fill, out):
    """``out`` = the mean (``db``: in dB) of each sum/count, ``fill`` where the count is 0
    (``out`` may be smaller than ``s``: the overview's edge)."""
    c, h, w = out.shape
    for i in range(h):
        for b in range(c):
            for j in range(w):
                if n[b, i, j] == 0:
                    out[b, i, j] = fill
                elif db:
                    out[b, i, j] = 10.0 * math.log10(s[b, i, j] / n[b, i, j])
                else:
                    out[b, i, j] = s[b, i, j] / n[b, i, j]


BAND_UNITS = {"db": "dB", "linear": "linear power"}
"""The unit of the backscatter bands per ``--units``."""


def scene_cogs(out: Path, pols: list[str], tags: dict, product_mode: str) -> list[dict]:
    """The COGs of a scene, first the backscatter: path, dtype, units per band, nodata and
    its meaning, band descriptions, overview resampling, STAC title and roles."""
    units = tags["UNITS"]
    flat = " terrain-flattened" if tags["TERRAIN_FLATTENING"] == "true" else ""
    quantity = tags["CALIBRATION"] + flat
    specs = [
        dict(
            key="backscatter",
            path=out,
            dtype="float32",
            units=[BAND_UNITS[units]] * len(pols),
            nodata=float("nan"),
            nodata_meaning="NaN: no data (see the mask)",
            descriptions=pols,
            overviews="power_db" if units == "db" else "average",
            title=f"{quantity} ({BAND_UNITS[units]})",
            roles=["data", "backscatter"],
        )
    ]
    if product_mode == "nrb":
        for layer in nrb.LAYERS.values():
            bands = [f"{layer.name} {p}" for p in pols] if layer.per_polarisation else [layer.name]
            specs.append(
                dict(
                    key=layer.name,
                    path=nrb.layer_path(out, layer.name),
                    dtype=layer.dtype,
                    units=[layer.unit] * len(bands),
                    nodata=layer.nodata,
                    nodata_meaning=(
                        "none: every pixel has a flag" if layer.nodata is None else "NaN: no data"
                    ),
                    descriptions=bands,
                    overviews=layer.overviews,
                    title=layer.description,
                    roles=["metadata", "data-mask"] if layer.name == "mask" else ["metadata"],
                )
            )
    else:
        specs.append(
            dict(
                key="mask",
                path=nrb.layer_path(out, "mask"),
                dtype="uint8",
                units=["bit flags"],
                nodata=None,
                nodata_meaning=f"none ({nrb.SIGMA0_MASK_MEANING})",
                descriptions=["mask"],
                overviews="nearest",
                title=f"data mask: {nrb.SIGMA0_MASK_MEANING}",
                roles=["metadata", "data-mask"],
            )
        )
    return specs
