"""Seasonal 12-channel composites from preprocessed Sentinel-1 scenes.

``sarssl composite SCENE.tif... --year Y [--method mean|median] [--seasons JSON]
--out C.tif --count-out C_count.tif``

Every input is a preprocessed scene on the area grid (two bands VV/VH, dB unless its
``UNITS`` tag says ``linear``, NaN = no data, ``ACQUISITION_START`` tag = acquisition
time in UTC). Each scene is assigned to a season of year ``Y`` by its acquisition date
(the default windows are winter = (Y-1)-12-01 .. Y-02-28/29, spring = 03-01..05-31,
summer = 06-01..08-31, fall = 09-01..11-30; ``"MM-end"`` means the last day of month MM,
so ``"02-end"`` is Feb 29 in leap years). Scenes outside every season of Y are skipped.

Per season and polarisation the composite is taken in **linear power**
(sigma0 = 10**(dB/10)): the NaN-aware mean (default; the 2023 study) or median (the later
M3LEO release) over the scenes where the pixel has data in both polarisations, then
converted back to dB. The cross-polarisation ratio channel is ``vvvh = dB(VV composite) -
dB(VH composite)`` (a ratio in linear terms). Bands follow :data:`sarssl.CHANNELS`. A
second raster counts the observations per pixel and season.

The work streams over blocks of rows: for the mean only running sums and counts of one
block are held, so peak memory does not depend on the number of scenes; for the median
the block height shrinks with the number of scenes of a season so the stack of one block
stays within a fixed memory budget.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..errors import InputError, SarsslError
from ..rasterio_blocks import BlockWriter
from ..vocabulary import CHANNELS, DEFAULT_SEASONS, SEASONS, assign_season, season_windows

log = logging.getLogger(__name__)

METHODS = ("mean", "median")
DEFAULT_BLOCK_ROWS = 1024
DEFAULT_BLOCK_BUDGET = 192 * 2**20  # bytes of working arrays for one block of rows
DEFAULT_MEDIAN_BUDGET = 256 * 2**20  # bytes for one block's stack of scenes (median)
GDAL_CACHE_BYTES = 64 * 2**20
"""GDAL block cache while reading scenes. NB: rasterio passes ``GDAL_CACHEMAX`` to
``GDALSetCacheMax64`` in **bytes** (a bare 64 would be a 64-byte cache that thrashes)."""


# --------------------------------------------------------------------------------------
# seasons
# --------------------------------------------------------------------------------------
def parse_seasons(text: str | None) -> dict[str, tuple[str, str]] | None:
    """``--seasons``: a JSON object (inline or a path to a JSON file) or None."""
    if text is None:
        return None
    path = Path(text)
    try:
        raw = path.read_text() if not text.lstrip().startswith("{") and path.is_file() else text
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SarsslError(f"--seasons {text!r}: not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise SarsslError(f"--seasons {text!r}: expected a JSON object season -> [start, end]")
    return {k: tuple(v) for k, v in obj.items()}


def parse_acquisition_time(text: str, where: str) -> dt.datetime:
    """ISO 8601 time (UTC when no offset is given) from an ``ACQUISITION_START`` tag."""
    try:
        t = dt.datetime.fromisoformat(str(text).strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"{where}: ACQUISITION_START {text!r} is not an ISO 8601 time") from exc
    if t.tzinfo is not None:
        t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return t


# --------------------------------------------------------------------------------------
# scenes
# --------------------------------------------------------------------------------------
@dataclass
class Scene:
    """Header of one preprocessed scene."""

    path: Path
    time: dt.datetime
    product_id: str
    vv_band: int  # 1-based
    vh_band: int
    linear: bool
    product: str = "sigma0: sigma0"  # what preprocessing made (scene_product)


def read_scene_header(path: str | os.PathLike) -> tuple[Scene, Any]:
    """Open a preprocessed scene and check it; returns (Scene, rasterio profile-ish grid)."""
    import rasterio

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: scene not found")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({exc})") from exc
    with src:
        tags = src.tags()
        if "ACQUISITION_START" not in tags:
            raise InputError(f"{path}: missing ACQUISITION_START tag (not a preprocessed scene?)")
        time = parse_acquisition_time(tags["ACQUISITION_START"], str(path))
        desc = [(d or "").upper() for d in src.descriptions]
        if src.count < 2:
            raise InputError(f"{path}: needs two bands (VV, VH), has {src.count}")
        if "VV" in desc and "VH" in desc:
            vv, vh = desc.index("VV") + 1, desc.index("VH") + 1
        elif any(desc):
            raise InputError(f"{path}: band descriptions {src.descriptions} lack VV and VH")
        else:
            vv, vh = 1, 2
        units = tags.get("UNITS", "db").lower()
        if units not in ("db", "linear"):
            raise InputError(f"{path}: UNITS tag {units!r} is neither 'db' nor 'linear'")
        grid = (src.crs, src.transform, src.width, src.height)
    pid = tags.get("PRODUCT_ID", path.stem)
    scene = Scene(path, time, pid, vv, vh, units == "linear", scene_product(tags))
    return scene, grid


def scene_product(tags: Mapping[str, str]) -> str:
    """Which product a preprocessed scene is, from its tags: ``"<mode>: <backscatter>"``,
    e.g. ``"sigma0: sigma0"`` (the study's default) or ``"nrb: gamma0 terrain-flattened"``
    (CEOS-ARD NRB, ``sarssl preprocess --product nrb``); scenes from before the product
    modes count as sigma0 mode."""
    flat = " terrain-flattened" if tags.get("TERRAIN_FLATTENING", "false") == "true" else ""
    return f"{tags.get('PRODUCT_MODE', 'sigma0')}: {tags.get('CALIBRATION', 'sigma0')}{flat}"


def _check_products(headers: Sequence[tuple[Scene, Any]]) -> str:
    """The one product of all scenes (a composite of sigma0 and gamma0 scenes would mix
    quantities): an :class:`~sarssl.errors.InputError` naming a scene of each otherwise."""
    first: dict[str, Path] = {}
    for scene, _ in headers:
        first.setdefault(scene.product, scene.path)
    if len(first) > 1:
        raise InputError(
            "scenes of different products cannot be composited together: "
            + "; ".join(f"{prod} (e.g. {path})" for prod, path in first.items())
        )
    return next(iter(first))


def _same_grid(a: tuple, b: tuple) -> bool:
    crs_a, tr_a, w_a, h_a = a
    crs_b, tr_b, w_b, h_b = b
    if (w_a, h_a) != (w_b, h_b) or crs_a != crs_b:
        return False
    tol = 1e-6 * abs(tr_a.a)
    return all(abs(p - q) <= tol for p, q in zip(tuple(tr_a)[:6], tuple(tr_b)[:6]))


def _to_linear(block: np.ndarray, linear: bool) -> np.ndarray:
    """(2, h, w) dB (or linear) -> float64 linear power, NaN where unusable (<= 0, NaN)."""
    with np.errstate(invalid="ignore", over="ignore"):
        lin = (
            block.astype(np.float64) if linear else np.power(10.0, block.astype(np.float64) / 10.0)
        )
        lin[~(lin > 0) | ~np.isfinite(lin)] = np.nan
    # An observation needs both polarisations (keeps vvvh consistent with vv and vh).
    lin[:, ~np.isfinite(lin).all(axis=0)] = np.nan
    return lin


def _db(lin: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 10.0 * np.log10(lin)
    out[~np.isfinite(out)] = np.nan
    return out


# --------------------------------------------------------------------------------------
# block kernels (numba; one pass over the pixels, no temporaries)
# --------------------------------------------------------------------------------------
_DB_TO_LN = np.log(10.0) / 10.0  # 10**(x/10) = exp(x * ln(10)/10)


def _accumulate_loop(
    vv: np.ndarray, vh: np.ndarray, linear: bool, total: np.ndarray, n: np.ndarray
) -> None:
    """Add one scene block to the running sums of the mean.

    ``vv``/``vh`` (h, w) float32 dB (or linear power when ``linear``); a pixel counts
    only when both polarisations give a finite, positive linear power. ``total``
    (2, h, w) float64 accumulates linear power, ``n`` (h, w) the observations.
    """
    h, w = vv.shape
    for i in numba.prange(h):
        for j in range(w):
            a = np.float64(vv[i, j])
            b = np.float64(vh[i, j])
            if not linear:
                a = np.exp(a * _DB_TO_LN)
                b = np.exp(b * _DB_TO_LN)
            if a > 0.0 and b > 0.0 and a < np.inf and b < np.inf:
                total[0, i, j] += a
                total[1, i, j] += b
                n[i, j] += 1


def _finish_loop(total: np.ndarray, n: np.ndarray, out: np.ndarray) -> None:
    """Mean linear power -> dB: ``out`` (3, h, w) float32 = (vvvh, vv, vh), NaN if n == 0."""
    h, w = n.shape
    for i in numba.prange(h):
        for j in range(w):
            if n[i, j] == 0:
                out[0, i, j] = np.nan
                out[1, i, j] = np.nan
                out[2, i, j] = np.nan
            else:
                vv = 10.0 * np.log10(total[0, i, j] / n[i, j])
                vh = 10.0 * np.log10(total[1, i, j] / n[i, j])
                out[0, i, j] = vv - vh
                out[1, i, j] = vv
                out[2, i, j] = vh


try:
    import numba

    _accumulate = numba.njit(parallel=True, cache=True, nogil=True)(_accumulate_loop)
    _finish = numba.njit(parallel=True, cache=True, nogil=True)(_finish_loop)
except ImportError:  # pragma: no cover - numba is a dependency
    numba = None  # type: ignore[assignment]
    _accumulate = _finish = None


def _accumulate_np(
    vv: np.ndarray, vh: np.ndarray, linear: bool, total: np.ndarray, n: np.ndarray
) -> None:
    """NumPy twin of :func:`_accumulate_loop` (used when numba is missing)."""
    lin = _to_linear(np.stack([vv, vh]), linear)
    ok = np.isfinite(lin[0])
    total += np.where(ok, lin, 0.0)
    n += ok


def _finish_np(total: np.ndarray, n: np.ndarray, out: np.ndarray) -> None:
    with np.errstate(invalid="ignore", divide="ignore"):
        comp = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    vv, vh = _db(comp[0]), _db(comp[1])
    out[0], out[1], out[2] = vv - vh, vv, vh


#: the mean kernels in use: numba's when available, else the NumPy twins
_ACCUMULATE, _FINISH = (
    (_accumulate, _finish) if _accumulate is not None else (_accumulate_np, _finish_np)
)


# --------------------------------------------------------------------------------------
# compositing
# --------------------------------------------------------------------------------------
def _check_grids(headers: Sequence[tuple[Scene, Any]]) -> None:
    """Every scene must lie on the first scene's area grid."""
    ref_grid = headers[0][1]
    for scene, grid in headers[1:]:
        if not _same_grid(ref_grid, grid):
            raise InputError(
                f"{scene.path}: grid {grid[0]}, {tuple(grid[1])[:6]}, {grid[2]}x{grid[3]} "
                f"differs from {headers[0][0].path} ({ref_grid[0]}, {tuple(ref_grid[1])[:6]}, "
                f"{ref_grid[2]}x{ref_grid[3]}); "
                "every scene must be on the same area grid"
            )


def group_by_season(
    headers: Sequence[tuple[Scene, Any]],
    windows: Mapping[str, tuple[dt.date, dt.date]],
    year: int,
) -> tuple[dict[str, list[Scene]], list[str]]:
    """Scenes per season (sorted by time, then path) and the paths of those outside every
    season (ignored, with a log line)."""
    by_season: dict[str, list[Scene]] = {s: [] for s in SEASONS}
    ignored: list[str] = []
    for scene, _ in headers:
        season = assign_season(scene.time, windows)
        if season is None:
            log.info(
                "%s: acquired %s, outside every season of %d: ignored", scene.path, scene.time, year
            )
            ignored.append(str(scene.path))
        else:
            by_season[season].append(scene)
    for lst in by_season.values():
        lst.sort(key=lambda s: (s.time, str(s.path)))
    return by_season, ignored


def _check_seasons(
    by_season: Mapping[str, list[Scene]],
    windows: Mapping[str, tuple[dt.date, dt.date]],
    year: int,
    out: str | os.PathLike,
    n_given: int,
    min_scenes_per_season: int,
) -> list[str]:
    """Raise for seasons with fewer than ``min_scenes_per_season`` scenes (naming them and
    their dates); return the empty seasons (warned about)."""
    if not any(by_season.values()):
        raise InputError(f"composite: none of the {n_given} scenes falls in a season of {year}")
    short = {s: lst for s, lst in by_season.items() if len(lst) < min_scenes_per_season}
    if short:
        detail = "; ".join(
            f"{s} ({windows[s][0]} .. {windows[s][1]}): {len(lst)} scene(s)"
            for s, lst in short.items()
        )
        raise InputError(
            f"composite {out}: fewer than --min-scenes-per-season {min_scenes_per_season} "
            "scene(s) in "
            f"season(s) {detail} of the {n_given} given; add acquisitions, widen the season "
            "windows, or set the minimum to 0 to accept seasons without data (their channels are "
            "then all no data)"
        )
    empty = [s for s, lst in by_season.items() if not lst]
    for season in empty:
        log.warning(
            "season %s of %d (%s .. %s) has no scene: its channels will be all no data",
            season,
            year,
            windows[season][0],
            windows[season][1],
        )
    return empty


def _rows_per_block(
    method: str, width: int, kmax: int, block_rows: int, block_budget: int, median_budget: int
) -> int:
    """Rows of one block: ``block_rows``, fewer when its working arrays exceed the budgets."""
    rows = max(1, int(block_rows))
    # bytes per pixel of a block: sums (2 x f64) + count + scene read (2 x f32) + output
    # (12 x f32) + counts (4 x u16)
    rows = max(1, min(rows, block_budget // max(1, width * (16 + 2 + 8 + 48 + 8))))
    if method == "median":
        rows = max(1, min(rows, median_budget // max(1, kmax * 2 * width * 8)))
    return rows


def _composite_tags(
    method: str,
    year: int,
    seasons: Mapping[str, Sequence[str]] | None,
    windows: Mapping[str, tuple[dt.date, dt.date]],
    by_season: Mapping[str, list[Scene]],
    empty: list[str],
) -> dict[str, Any]:
    """The provenance tags of both outputs."""
    return {
        "COMPOSITE_METHOD": method,
        "COMPOSITE_DOMAIN": "linear power",
        "YEAR": int(year),
        "SEASONS": json.dumps({s: list(v) for s, v in (seasons or DEFAULT_SEASONS).items()}),
        "SEASON_DATES": json.dumps({s: [str(a), str(b)] for s, (a, b) in windows.items()}),
        "CHANNELS": json.dumps(list(CHANNELS)),
        "N_SCENES": sum(len(v) for v in by_season.values()),
        "SCENES": json.dumps({s: [x.product_id for x in lst] for s, lst in by_season.items()}),
        "EMPTY_SEASONS": json.dumps(empty),
        "UNITS": "db",
        "SCENE_PRODUCT": scene_product_of(by_season),
    }


def scene_product_of(by_season: Mapping[str, list[Scene]]) -> str:
    """The product of the composited scenes (:func:`scene_product`; checked to be one)."""
    products = sorted({x.product for lst in by_season.values() for x in lst})
    return products[0] if len(products) == 1 else ", ".join(products)


def _open_writers(
    outer: contextlib.ExitStack,
    out: Path,
    count_out: str | os.PathLike,
    tags: dict[str, Any],
    compress: str,
    grid: dict[str, Any],
) -> tuple[BlockWriter, BlockWriter]:
    """The block writers of the composite and of the counts (uncompressed tiled GTiffs,
    published as COGs when closed: memory holds one block, never the whole composite)."""
    comp_w = outer.enter_context(
        BlockWriter(
            out,
            count=len(CHANNELS),
            dtype=np.float32,
            nodata=float("nan"),
            band_names=list(CHANNELS),
            tags=tags,
            compress=compress,
            **grid,
        )
    )
    count_w = outer.enter_context(
        BlockWriter(
            count_out,
            count=len(SEASONS),
            dtype=np.uint16,
            nodata=None,
            band_names=[f"count_{s}" for s in SEASONS],
            tags={**tags, "UNITS": "observations"},
            compress=compress,
            **grid,
        )
    )
    return comp_w, count_w


def _season_mean(lst, handles, win, h, width, scene_buf, res) -> np.ndarray:
    """Mean of linear power of ``lst`` over window ``win`` into ``res`` (3, h, width):
    VV-VH, VV, VH in dB; returns the observation count per pixel."""
    total = np.zeros((2, h, width), np.float64)
    n = np.zeros((h, width), np.uint16)
    for scene in lst:
        buf = scene_buf[:, :h]
        handles[id(scene)].read([scene.vv_band, scene.vh_band], window=win, out=buf)
        _ACCUMULATE(buf[0], buf[1], scene.linear, total, n)
    _FINISH(total, n, res)
    return n


def _season_median(lst, handles, win, h, width, res) -> np.ndarray:
    """Median of linear power of ``lst`` over window ``win`` into ``res`` (as
    :func:`_season_mean`); returns the observation count per pixel."""
    stack_arr = np.full((max(1, len(lst)), 2, h, width), np.nan, np.float64)
    for k, scene in enumerate(lst):
        stack_arr[k] = _to_linear(
            handles[id(scene)].read([scene.vv_band, scene.vh_band], window=win),
            scene.linear,
        )
    n = np.isfinite(stack_arr[:, 0]).sum(axis=0).astype(np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels
        comp = np.nanmedian(stack_arr, axis=0)
    vv_db, vh_db = _db(comp[0]), _db(comp[1])
    res[0], res[1], res[2] = vv_db - vh_db, vv_db, vh_db
    return n


def _write_blocks(
    by_season: Mapping[str, list[Scene]],
    method: str,
    rows: int,
    width: int,
    height: int,
    comp_w: BlockWriter,
    count_w: BlockWriter,
    name: str,
    progress: bool,
) -> None:
    """Composite block by block of ``rows`` rows, every season, into the two writers."""
    import rasterio
    from rasterio.windows import Window

    ch = {c: i for i, c in enumerate(CHANNELS)}
    # While reading scenes, bound GDAL's block cache (default: 5% of RAM), which
    # otherwise grows with the number of scene blocks read and makes peak memory
    # depend on the number of scenes; decode compressed tiles on all cores.
    with contextlib.ExitStack() as stack:
        stack.enter_context(
            rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, GDAL_NUM_THREADS="ALL_CPUS")
        )
        handles = {
            id(s): stack.enter_context(rasterio.open(s.path))
            for lst in by_season.values()
            for s in lst
        }
        block = np.empty((len(CHANNELS), rows, width), np.float32)
        cblock = np.empty((len(SEASONS), rows, width), np.uint16)
        three = np.empty((3, rows, width), np.float32)
        scene_buf = np.empty((2, rows, width), np.float32)
        for r0 in tqdm(
            range(0, height, rows), desc=f"composite {name}", unit="block", disable=not progress
        ):
            h = min(rows, height - r0)
            win = Window(0, r0, width, h)
            for si, season in enumerate(SEASONS):
                lst = by_season[season]
                res = three[:, :h]
                if method == "mean":
                    n = _season_mean(lst, handles, win, h, width, scene_buf, res)
                else:
                    n = _season_median(lst, handles, win, h, width, res)
                block[ch[f"vvvh_{season}"], :h] = res[0]
                block[ch[f"vv_{season}"], :h] = res[1]
                block[ch[f"vh_{season}"], :h] = res[2]
                cblock[si, :h] = n
            comp_w.write(block[:, :h], r0, 0)
            count_w.write(cblock[:, :h], r0, 0)


def composite(
    scenes: Sequence[str | os.PathLike],
    year: int,
    out: str | os.PathLike,
    count_out: str | os.PathLike,
    *,
    method: str = "mean",
    seasons: Mapping[str, Sequence[str]] | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    block_budget_bytes: int = DEFAULT_BLOCK_BUDGET,
    median_budget_bytes: int = DEFAULT_MEDIAN_BUDGET,
    compress: str = "zstd",
    progress: bool = True,
    min_scenes_per_season: int = 1,
) -> dict[str, Any]:
    """Composite ``scenes`` into the 12-band seasonal composite ``out`` and the 4-band
    count raster ``count_out``; returns a summary (scenes per season, ignored scenes).

    Blocks of ``block_rows`` rows (fewer when one block's working arrays would exceed
    ``block_budget_bytes``) are composited and written straight to disk, so memory does
    not grow with the area or the number of scenes. ``compress`` is the COG compression
    of both outputs (GDAL name: deflate, zstd, lzw, none).

    A season with fewer than ``min_scenes_per_season`` scenes is an error naming the
    season, its dates and the scenes found (its four channels would be all no data and
    every chip would later be dropped); with 0, an empty season is only a warning and is
    listed in the ``EMPTY_SEASONS`` tag of both outputs.
    """
    import rasterio
    import rasterio.shutil  # noqa: F401  (BlockWriter uses rasterio.shutil.copy)

    if method not in METHODS:
        raise SarsslError(f"--method {method!r}: expected one of {list(METHODS)}")
    if not scenes:
        raise SarsslError("composite: no input scenes")
    windows = season_windows(year, seasons)
    headers = [read_scene_header(p) for p in scenes]
    _check_grids(headers)
    _check_products(headers)
    by_season, ignored = group_by_season(headers, windows, year)
    empty = _check_seasons(by_season, windows, year, out, len(scenes), min_scenes_per_season)
    crs, transform, width, height = headers[0][1]
    kmax = max(len(v) for v in by_season.values())
    rows = _rows_per_block(method, width, kmax, block_rows, block_budget_bytes, median_budget_bytes)
    tags = _composite_tags(method, year, seasons, windows, by_season, empty)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(count_out).parent.mkdir(parents=True, exist_ok=True)
    grid = dict(height=height, width=width, crs=crs, transform=transform)
    # The COG translation at the end reads whole rows of 512 px tiles of all bands: give
    # it a cache of a few such rows (GDAL thrashes with less), independent
    # of the number of scenes.
    tile_row_bytes = width * 512 * len(CHANNELS) * 4
    publish_cache = max(256 * 2**20, 2 * tile_row_bytes + 64 * 2**20)
    t_start = time.perf_counter()
    with contextlib.ExitStack() as outer:
        comp_w, count_w = _open_writers(outer, out, count_out, tags, compress, grid)
        _write_blocks(by_season, method, rows, width, height, comp_w, count_w, out.name, progress)
        t_blocks = time.perf_counter()
        # GDAL_CACHEMAX is process-wide (leaving an Env does not restore it): set the
        # publishing cache explicitly.
        with rasterio.Env(GDAL_CACHEMAX=publish_cache, GDAL_NUM_THREADS="ALL_CPUS"):
            count_w.close()
            try:
                comp_w.close()
            except BaseException:  # both published, or neither
                Path(count_out).unlink(missing_ok=True)
                raise
    t_end = time.perf_counter()
    summary = {
        "year": int(year),
        "method": method,
        "n_scenes": tags["N_SCENES"],
        "per_season": {s: len(v) for s, v in by_season.items()},
        "empty_seasons": empty,
        "ignored": ignored,
        "shape": [len(CHANNELS), height, width],
        "seconds": {"composite": t_blocks - t_start, "publish_cog": t_end - t_blocks},
    }
    log.info("composite %s: %s", out, summary["per_season"])
    return summary


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenes", nargs="+", metavar="SCENE.tif", help="preprocessed scenes of one area grid"
    )
    parser.add_argument(
        "--year", type=int, required=True, help="composite year Y (winter starts Y-1-12-01)"
    )
    parser.add_argument(
        "--method", choices=METHODS, default="mean", help="mean or median of linear power"
    )
    parser.add_argument(
        "--seasons",
        default=None,
        help='JSON (inline or file): {"winter": ["12-01", "02-end"], ...}; '
        '"MM-end" = last day of month',
    )
    parser.add_argument(
        "--block-rows", type=int, default=DEFAULT_BLOCK_ROWS, help="rows per streamed block"
    )
    parser.add_argument(
        "--compress",
        default="zstd",
        help="COG compression of the outputs "
        "(zstd: level 1, ~2x faster than deflate; deflate, lzw, none)",
    )
    parser.add_argument("--out", required=True, help="12-band composite GeoTIFF")
    parser.add_argument("--count-out", required=True, help="4-band observation count GeoTIFF")
    parser.add_argument(
        "--min-scenes-per-season",
        type=int,
        default=1,
        help="fewer scenes in any season is an error naming it (default 1); 0 = warn only",
    )


def run(args: argparse.Namespace) -> int:
    composite(
        args.scenes,
        args.year,
        args.out,
        args.count_out,
        method=args.method,
        seasons=parse_seasons(args.seasons),
        block_rows=args.block_rows,
        compress=args.compress,
        min_scenes_per_season=args.min_scenes_per_season,
    )
    return 0
