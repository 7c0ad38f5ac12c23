"""Cut a seasonal composite into labelled chips with spatial splits; normalisation stats.

``sarssl chips --composite C.tif --landcover LC.tif --treecover TC.tif --area A --size 64
[--overlap 0] [--max-nodata 0.05] [--min-label-coverage 0.5] [--split-angle 30]
[--split-band-width M] [--split-pattern train,train,train,test,val]
--out-dir results/chips/A [--export-split SPLIT --export-dir DIR]``

``sarssl chips --composite C.tif --no-labels ...`` cuts an *unlabelled* area (used only for
self-supervised pretraining): its store holds all-ignore land cover (255), NaN tree cover
and only ``train`` chips (nothing of it is ever tested).

``sarssl fractions --chips-dir D --fractions 0.01,...,1.0 --seed S``

``sarssl stats --chips-dir D [--chips-dir ...] --out stats.json``

**Chip grid.** Chips are ``size x size`` pixels on the composite's grid, placed at a
stride of ``size - overlap`` pixels anchored at the CRS origin: the upper-left corner of
every chip is a whole multiple of ``stride * resolution`` metres in x and y, so the same
place always gets the same chip and the same id ``{epsg}_{x_left}_{y_top}`` (upper-left
corner in CRS metres), whatever the extent of the area. Only chips fully inside the
composite are cut. In ``index.parquet`` ``x0, y0, x1, y1`` are the chip bounds
(min x, min y, max x, max y); the id uses ``x0`` and ``y1``.

**Quality control.** A chip is dropped when its no-data fraction (pixels where any
channel is NaN) exceeds ``--max-nodata`` (reason ``nodata``), or when a channel is
constant over its valid pixels (std == 0 of the stored float16 values; reason
``constant_channel``, as in the study, which skips such chips). Every drop is counted in
``qa.csv`` together with ``kept``. NaN pixels are kept in ``x.npy``; the dataset maps them
to 0 after normalisation.

**Label coverage.** For each label raster, the fraction of the valid composite pixels
(every channel finite; over the rows the chip grid covers) that have a label (a land-cover
class, a finite tree cover) is recorded in ``store.json`` (``label_coverage``); below 1 it
is logged as a warning naming the raster, below ``--min-label-coverage`` (default 0.5) it is
an error: labels that miss much of the area (a tile too few, the wrong tile) would
otherwise silently leave most chips without targets.

**Failures.** A corrupt composite or label raster is an error naming the file. The store's
arrays are preallocated before they are memory-mapped, so a full disk is an error naming
the file ("no space left on device") rather than a SIGBUS, and the temporary store
directory is removed on any error.

**Spatial split.** The plane is cut into parallel bands ``--split-band-width`` metres
wide whose long axis points ``--split-angle`` degrees anticlockwise from east; band
``b = floor((-x sin a + y cos a) / width)`` of the chip *centre* (absolute CRS
coordinates, so deterministic and extent-independent), and split =
``pattern[b mod len(pattern)]`` (default train,train,train,test,val = 60/20/20).
Neighbouring chips of different splits therefore only touch along band edges, never
interleave, which limits spatial autocorrelation leaking from train into test. With
``--overlap > 0`` neighbouring chips share pixels, so a chip whose footprint reaches into
a band of another split than its centre's is dropped (``qa.csv`` reason
``split_boundary``): no pixel lies in chips of two splits. Bands should then be several
chips wide, or most chips near band edges are lost.

**Label fractions.** ``sarssl fractions`` (and only it) writes ``fractions.json``: nested
subsets of the training ids, sorted ids shuffled once with ``--seed``, fraction ``f``
takes the first ``max(1, ceil(f n))``. ``sarssl chips`` writes none, so changing the
fractions never re-cuts chips, and ``store.json`` does not describe them.

**Statistics.** ``sarssl stats`` computes per-channel mean and (population) standard
deviation of the dB values over the *training* chips of the given stores only, ignoring
NaN, streaming over chips with float64 accumulators merged with Chan et al.'s parallel
variance formula (numerically stable, unlike sum of squares).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..errors import InputError, SarsslError
from ..io import (
    atomic_dir,
    gdal_message,
    is_no_space,
    output_error,
    published_name,
    run_record,
    write_json,
)
from ..sar.grid import Grid
from ..vocabulary import CHANNELS, IGNORE_INDEX, SPLITS
from .store import (
    DEFAULT_FRACTIONS,
    X_STORE_DTYPES,
    ChipStore,
    StoreWriter,
    landcover_majority,
    treecover_mean,
    write_fractions,
)

log = logging.getLogger(__name__)

DEFAULT_PATTERN = ("train", "train", "train", "test", "val")


# --------------------------------------------------------------------------------------
# chip grid and splits
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChipSpec:
    """One candidate chip: pixel offset in the composite and its CRS corners."""

    row_off: int
    col_off: int
    x_left: float
    y_top: float


def _fmt(v: float) -> str:
    return str(int(round(v))) if abs(v - round(v)) < 1e-6 else f"{v:.3f}".rstrip("0").rstrip(".")


def chip_id(epsg: int | None, x_left: float, y_top: float) -> str:
    """Stable chip id ``{epsg}_{x_left}_{y_top}`` (upper-left corner, CRS metres)."""
    return f"{epsg if epsg else 'custom'}_{_fmt(x_left)}_{_fmt(y_top)}"


def chip_grid(grid: Grid, size: int, overlap: int = 0) -> list[ChipSpec]:
    """Candidate chips fully inside ``grid`` in raster order (top row first).

    Corners are whole multiples of ``(size - overlap) * resolution`` CRS units.
    """
    if size < 1:
        raise SarsslError(f"--size {size}: must be >= 1")
    if not 0 <= overlap < size:
        raise SarsslError(f"--overlap {overlap}: must be in [0, size)")
    res = grid.resolution
    if abs(grid.transform.e + res) > 1e-9 * res or grid.transform.b or grid.transform.d:
        raise InputError("composite grid must be north-up with square pixels")
    step = (size - overlap) * res
    side = size * res
    gx0, gy0, gx1, gy1 = grid.bounds
    eps = 1e-6 * res
    chips: list[ChipSpec] = []
    k_top = math.floor((gy1 + eps) / step)
    k_left = math.ceil((gx0 - eps) / step)
    ky = k_top
    while ky * step - side >= gy0 - eps:
        y_top = ky * step
        row_off = int(round((gy1 - y_top) / res))
        kx = k_left
        while kx * step + side <= gx1 + eps:
            x_left = kx * step
            col_off = int(round((x_left - gx0) / res))
            chips.append(ChipSpec(row_off, col_off, x_left, y_top))
            kx += 1
        ky -= 1
    return chips


def split_bands(
    cx: np.ndarray, cy: np.ndarray, angle_deg: float, width: float, pattern: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Band number and split of points (chip centres) for bands at ``angle_deg``.

    The band's long axis points ``angle_deg`` anticlockwise from the x axis (east); the
    coordinate across the bands is ``d = -x sin(a) + y cos(a)`` and the band number is
    ``floor(d / width)``; the split cycles through ``pattern`` with the band number.
    """
    if width <= 0:
        raise SarsslError(f"--split-band-width {width}: must be > 0")
    if not pattern:
        raise SarsslError("--split-pattern: empty")
    bad = sorted(set(pattern) - set(SPLITS))
    if bad:
        raise SarsslError(f"--split-pattern: unknown split(s) {bad}; use {list(SPLITS)}")
    a = math.radians(angle_deg)
    d = -np.asarray(cx, np.float64) * math.sin(a) + np.asarray(cy, np.float64) * math.cos(a)
    band = np.floor(d / width).astype(np.int64)
    splits = [pattern[int(b) % len(pattern)] for b in band]
    return band, splits


def reaches_other_split(
    chips: Sequence[ChipSpec], side: float, angle_deg: float, width: float, pattern: Sequence[str]
) -> np.ndarray:
    """Whether each chip's footprint (``side`` CRS units square) reaches into a band whose
    split differs from the split of its centre (:func:`split_bands`). With overlapping
    chips such a chip would share pixels with chips of that other split; touching a band
    edge is not reaching into the band."""
    a = math.radians(angle_deg)
    x = np.array([c.x_left for c in chips], np.float64)
    y = np.array([c.y_top for c in chips], np.float64)
    d = np.stack(
        [
            -(x + dx) * math.sin(a) + (y + dy) * math.cos(a)
            for dx, dy in ((0, 0), (side, 0), (0, -side), (side, -side))
        ]
    )
    eps = 1e-9 * max(width, side)
    first = np.floor((d.min(0) + eps) / width).astype(np.int64)
    last = np.ceil((d.max(0) - eps) / width).astype(np.int64) - 1
    _, own = split_bands(x + side / 2, y - side / 2, angle_deg, width, pattern)
    return np.array(
        [
            any(pattern[b % len(pattern)] != s for b in range(lo, hi + 1))
            for lo, hi, s in zip(first, last, own)
        ],
        dtype=bool,
    )


# --------------------------------------------------------------------------------------
# reading the composite strip by strip
# --------------------------------------------------------------------------------------
def _strips(chips: Sequence[ChipSpec]) -> Iterator[tuple[int, list[tuple[int, ChipSpec]]]]:
    """Group (candidate number, chip) by chip row (same ``row_off``)."""
    group: list[tuple[int, ChipSpec]] = []
    for i, c in enumerate(chips):
        if group and group[0][1].row_off != c.row_off:
            yield group[0][1].row_off, group
            group = []
        group.append((i, c))
    if group:
        yield group[0][1].row_off, group


def _chip_qa(x16: np.ndarray) -> tuple[float, bool]:
    """(no-data fraction, has a constant channel) of one float16 (C, S, S) chip."""
    valid = np.isfinite(x16).all(axis=0)
    nodata = 1.0 - float(valid.mean())
    if not valid.any():
        return nodata, True
    v = x16[:, valid].astype(np.float32)
    constant = bool((v.max(axis=1) == v.min(axis=1)).any())
    return nodata, constant


def _open_composite(path: Path):
    import rasterio

    if not path.is_file():
        raise InputError(f"{path}: composite not found")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"{path}: not a readable raster ({exc})") from exc
    if src.count != len(CHANNELS):
        src.close()
        raise InputError(
            f"{path}: expected {len(CHANNELS)} bands ({', '.join(CHANNELS)}), found {src.count}"
        )
    desc = list(src.descriptions)
    if any(desc) and desc != list(CHANNELS):
        src.close()
        raise InputError(f"{path}: band order {desc} differs from sarssl.CHANNELS {list(CHANNELS)}")
    return src


def _read_strip(src, path: Path, row_off: int, size: int) -> np.ndarray:
    """Rows ``row_off .. row_off + size`` of the composite as float16 (C, size, W)."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.windows import Window

    try:
        strip = src.read(window=Window(0, row_off, src.width, size))
    except (rasterio.errors.RasterioError, CPLE_BaseError) as exc:
        raise InputError(
            f"{path}: corrupt composite, rows {row_off}..{row_off + size - 1} cannot be read "
            f"({gdal_message(exc)})"
        ) from exc
    return strip.astype(np.float16)


def _check_label_coverage(
    rasters: dict[str, tuple[Path, int]], n_valid: int, area: str, minimum: float
) -> dict[str, float] | None:
    """``{name: labelled / valid pixels}``; warn below 1, raise below ``minimum``."""
    if n_valid == 0:  # no valid composite pixel: every chip is dropped (an error later)
        return None
    coverage = {}
    for name, (path, n_labelled) in rasters.items():
        cov = n_labelled / n_valid
        coverage[name] = cov
        if cov < minimum:
            raise InputError(
                f"{path}: {name} labels cover only {_pct(cov)} of the {n_valid} valid composite "
                f"pixels of area {area}, less than --min-label-coverage {minimum:g}; use a {name} "
                "raster that covers the area (or lower --min-label-coverage)"
            )
        if cov < 1:
            log.warning(
                "%s: %s labels cover %s of the %d valid composite pixels of area %s",
                path,
                name,
                _pct(cov),
                n_valid,
                area,
            )
    return coverage


@contextlib.contextmanager
def _store_write_errors(out_dir: Path) -> Iterator[None]:
    """A full disk while the store is written: an :class:`~sarssl.errors.OutputError` naming
    the file ("no space left on device") instead of a bare ``OSError`` traceback."""
    try:
        yield
    except OSError as exc:
        if isinstance(exc, SarsslError) or not is_no_space(exc):
            raise
        name = published_name(exc.filename) if exc.filename else out_dir
        raise output_error(name, f"chip store {out_dir} not written", no_space=True) from exc


def _pct(fraction: float) -> str:
    """A fraction as a percentage that never rounds a value below 1 up to 100 %."""
    digits = 1
    while digits < 6 and fraction < 1 and round(100 * fraction, digits) >= 100:
        digits += 1
    return f"{100 * fraction:.{digits}f}%"


def _quality_pass(src, composite, chips, size, lc_full, tc_full, max_nodata, area, progress):
    """Pass 1 over the composite: quality control of every candidate chip (no data, constant
    channels) and the label coverage of the valid pixels (each composite row counted once,
    also where overlapping chip rows share it). Returns (keep mask, no-data fraction per
    chip, drop reasons, (valid, land-cover-labelled, tree-cover-labelled pixel counts))."""
    nodata_frac = np.zeros(len(chips))
    keep = np.zeros(len(chips), dtype=bool)
    reasons: Counter[str] = Counter()
    n_valid = n_landcover = n_treecover = 0
    counted_to = 0
    for row_off, group in tqdm(
        list(_strips(chips)), desc=f"chips QA {area}", unit="row", disable=not progress
    ):
        strip = _read_strip(src, composite, row_off, size)
        first = max(row_off, counted_to)
        if first < row_off + size:
            valid = np.isfinite(strip[:, first - row_off :]).all(axis=0)
            rows = slice(first, row_off + size)
            n_valid += int(np.count_nonzero(valid))
            n_landcover += int(np.count_nonzero(valid & (lc_full[rows] != IGNORE_INDEX)))
            n_treecover += int(np.count_nonzero(valid & np.isfinite(tc_full[rows])))
            counted_to = row_off + size
        for i, c in group:
            x16 = strip[:, :, c.col_off : c.col_off + size]
            nd, constant = _chip_qa(x16)
            nodata_frac[i] = nd
            if nd > max_nodata:
                reasons["nodata"] += 1
            elif constant:
                reasons["constant_channel"] += 1
            else:
                keep[i] = True
    return keep, nodata_frac, reasons, (n_valid, n_landcover, n_treecover)


def _chip_index(kept, epsg, grid, size, nodata_frac, area, split_angle, band_width, pattern):
    """The index of the kept chips: ids, bounds, spatial bands and splits."""
    n = len(kept)
    side = size * grid.resolution
    x_left = np.array([c.x_left for c in kept])
    y_top = np.array([c.y_top for c in kept])
    band, split = split_bands(x_left + side / 2, y_top - side / 2, split_angle, band_width, pattern)
    index = pd.DataFrame(
        {
            "id": [chip_id(epsg, c.x_left, c.y_top) for c in kept],
            "row": np.arange(n, dtype=np.int64),
            "area": area,
            "crs": f"EPSG:{epsg}" if epsg else grid.crs.to_wkt(),
            "x0": x_left,
            "y0": y_top - side,
            "x1": x_left + side,
            "y1": y_top,
            "split": split,
            "band": band,
            "valid_fraction": 1.0 - nodata_frac,
        }
    )
    for s in SPLITS:
        if not (index["split"] == s).any():
            log.warning("%s: no %s chips (area too small for the split bands?)", area, s)
    return index


def _write_pass(src, composite, kept, size, lc_full, tc_full, writer, area, progress):
    """Pass 2: write the kept chips into the store; returns the per-chip land-cover majority
    and mean tree cover."""
    n = len(kept)
    lc_major = np.zeros(n, np.int64)
    tc_mean = np.zeros(n, np.float64)
    by_row = {id(c): r for r, c in enumerate(kept)}
    for row_off, group in tqdm(
        list(_strips(kept)), desc=f"chips write {area}", unit="row", disable=not progress
    ):
        strip = _read_strip(src, composite, row_off, size)
        for _, c in group:
            r = by_row[id(c)]
            sl = (slice(c.row_off, c.row_off + size), slice(c.col_off, c.col_off + size))
            lc, tc = lc_full[sl], tc_full[sl]
            writer.write(r, strip[:, :, c.col_off : c.col_off + size], lc, tc)
            lc_major[r] = landcover_majority(lc)
            tc_mean[r] = treecover_mean(tc)
    return lc_major, tc_mean


def make_chips(
    composite: str | os.PathLike,
    landcover: str | os.PathLike | None,
    treecover: str | os.PathLike | None,
    area: str,
    out_dir: str | os.PathLike,
    *,
    size: int = 64,
    overlap: int = 0,
    max_nodata: float = 0.05,
    min_label_coverage: float = 0.5,
    split_angle: float = 30.0,
    split_band_width: float | None = None,
    split_pattern: Sequence[str] = DEFAULT_PATTERN,
    export_split: str | None = None,
    export_dir: str | os.PathLike | None = None,
    progress: bool = True,
    dtype: str = "float16",
) -> dict[str, Any]:
    """Build the chip store of one area; returns its ``store.json`` content. ``dtype``:
    how ``x.npy`` holds the dB values (float16, or compact uint16/uint8 codes:
    :class:`~sarssl.data.store.XCodec`).

    Label rasters covering less than ``min_label_coverage`` of the valid composite pixels
    are an :class:`InputError`; a full disk is an :class:`~sarssl.errors.OutputError`
    (nothing is left behind either way). No label fractions (nothing here is random): they
    are :func:`run_fractions`'s, the one writer of ``fractions.json``.

    ``landcover = treecover = None``: an unlabelled area (pretraining only): all-ignore
    labels, no label-coverage check, every chip in ``train``."""
    from .labels import read_landcover, read_treecover

    composite = Path(composite)
    labelled = landcover is not None
    if labelled != (treecover is not None):
        raise SarsslError("--landcover and --treecover go together (or neither: --no-labels)")
    if not 0.0 <= max_nodata <= 1.0:
        raise SarsslError(f"--max-nodata {max_nodata}: must be in [0, 1]")
    if not 0.0 <= min_label_coverage <= 1.0:
        raise SarsslError(f"--min-label-coverage {min_label_coverage:g}: must be in [0, 1]")
    if export_split is not None and export_split not in SPLITS:
        raise SarsslError(f"--export-split {export_split!r}: expected one of {list(SPLITS)}")
    if (export_split is None) != (export_dir is None):
        raise SarsslError("--export-split and --export-dir go together")
    with _open_composite(composite) as src:
        grid = Grid(src.crs, src.transform, src.width, src.height)
        comp_tags = src.tags()
        if grid.crs is None:
            raise InputError(f"{composite}: no CRS")
        epsg = grid.crs.to_epsg()
        res = grid.resolution
        chips = chip_grid(grid, size, overlap)
        if not chips:
            raise InputError(
                f"{composite}: {grid.width}x{grid.height} px is smaller than one {size}x{size} chip"
            )
        log.info(
            "%s: %d candidate chips of %d px (overlap %d)", composite, len(chips), size, overlap
        )

        if labelled:
            lc_full = read_landcover(landcover, grid)
            tc_full = read_treecover(treecover, grid)
        else:  # unlabelled (pretraining-only) area: all-ignore labels
            lc_full = np.full((grid.height, grid.width), IGNORE_INDEX, dtype=np.uint8)
            tc_full = np.full((grid.height, grid.width), np.nan, dtype=np.float32)

        keep, nodata_frac, reasons, coverage = _quality_pass(
            src, composite, chips, size, lc_full, tc_full, max_nodata, area, progress
        )
        n_valid, n_landcover, n_treecover = coverage
        label_coverage = (
            _check_label_coverage(
                {
                    "landcover": (Path(landcover), n_landcover),
                    "treecover": (Path(treecover), n_treecover),
                },
                n_valid,
                area,
                min_label_coverage,
            )
            if labelled
            else None
        )
        band_width = float(split_band_width) if split_band_width else size * res
        # overlapping chips share pixels: one reaching into a band of another split is
        # dropped, so that no pixel is in chips of two splits
        boundary = np.zeros(len(chips), bool)
        if overlap > 0 and labelled:
            boundary = keep & reaches_other_split(
                chips, size * res, split_angle, band_width, split_pattern
            )
            keep = keep & ~boundary
        kept = [c for c, k in zip(chips, keep) if k]
        n = len(kept)
        qa = {
            "kept": n,
            "nodata": reasons["nodata"],
            "constant_channel": reasons["constant_channel"],
            "split_boundary": int(boundary.sum()),
        }
        log.info("%s: %s", area, qa)
        if n == 0:
            raise InputError(
                f"{composite}: all {len(chips)} chips were dropped ({qa}); check the composite"
            )

        index = _chip_index(
            kept, epsg, grid, size, nodata_frac[keep], area, split_angle, band_width, split_pattern
        )
        if not labelled:
            index["split"] = "train"  # nothing of an unlabelled area is ever tested

        out_dir = Path(out_dir)
        with _store_write_errors(out_dir), atomic_dir(out_dir) as tmp:
            writer = StoreWriter(tmp, n, size, CHANNELS, dtype=dtype)
            lc_major, tc_mean = _write_pass(
                src, composite, kept, size, lc_full, tc_full, writer, area, progress
            )
            index["landcover_majority"] = lc_major
            index["treecover_mean"] = tc_mean
            params = {
                "size": size,
                "overlap": overlap,
                "max_nodata": max_nodata,
                "min_label_coverage": min_label_coverage,
                "split_angle": split_angle,
                "split_band_width": band_width,
                "split_pattern": list(split_pattern),
            }
            meta = writer.finish(
                index,
                resolution=res,
                crs=grid.crs,
                area=area,
                qa=qa,
                extra={
                    "composite": str(composite),
                    "composite_method": comp_tags.get("COMPOSITE_METHOD"),
                    "year": comp_tags.get("YEAR"),
                    "labels": labelled,
                    "landcover": str(landcover) if labelled else None,
                    "treecover": str(treecover) if labelled else None,
                    "label_coverage": label_coverage,
                    "candidates": len(chips),
                    "qa": qa,
                    "params": params,
                    "run": run_record(params),
                },
            )
            del writer
        if export_split is not None:
            export_chips(out_dir, export_split, export_dir)
    log.info("%s: %d chips -> %s (%s)", area, n, out_dir, meta["splits"])
    return meta


def export_chips(store_dir: str | os.PathLike, split: str, export_dir: str | os.PathLike) -> int:
    """Write the chips of one split as GeoTIFFs for inspection (``{id}.tif``: 12 bands dB;
    ``{id}_labels.tif``: land-cover class and tree cover %). Returns the number written."""
    import rasterio.shutil  # noqa: F401  (sarssl.io.write_geotiff uses rasterio.shutil.copy)
    from affine import Affine

    from ..io import write_geotiff

    st = ChipStore(store_dir)
    rows = st.rows(split)
    res = float(st.meta["resolution"])
    with atomic_dir(export_dir) as tmp:
        for r in tqdm(rows, desc=f"export {split}", unit="chip"):
            rec = st.index.iloc[int(r)]
            tr = Affine(res, 0.0, float(rec.x0), 0.0, -res, float(rec.y1))
            write_geotiff(
                tmp / f"{rec.id}.tif",
                np.asarray(st.x[r], dtype=np.float32),
                crs=st.meta["crs"],
                transform=tr,
                nodata=float("nan"),
                band_names=st.channels,
                tags={"CHIP_ID": rec.id, "SPLIT": split, "AREA": rec.area},
                cog=False,
            )
            labels = np.stack(
                [st.landcover[r].astype(np.float32), st.treecover[r].astype(np.float32)]
            )
            write_geotiff(
                tmp / f"{rec.id}_labels.tif",
                labels,
                crs=st.meta["crs"],
                transform=tr,
                band_names=["landcover", "treecover"],
                tags={"CHIP_ID": rec.id, "LANDCOVER_IGNORE": IGNORE_INDEX},
                cog=False,
            )
    log.info("exported %d %s chips to %s", len(rows), split, export_dir)
    return len(rows)


# --------------------------------------------------------------------------------------
# normalisation statistics
# --------------------------------------------------------------------------------------
def channel_stats(
    store_dirs: Sequence[str | os.PathLike],
    split: str = "train",
    chunk: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-channel mean/std (ddof 0) of the dB values of ``split`` chips, NaN ignored."""
    if not store_dirs:
        raise SarsslError("stats: give at least one --chips-dir")
    stores = [ChipStore(d) for d in store_dirs]
    channels = stores[0].channels
    for st in stores[1:]:
        if st.channels != channels:
            raise InputError(
                f"{st.path}: channels {st.channels} differ from {stores[0].path}'s {channels}"
            )
    c = len(channels)
    n_tot = np.zeros(c, np.float64)
    mean = np.zeros(c, np.float64)
    m2 = np.zeros(c, np.float64)
    n_chips = 0
    areas: list[str] = []
    for st in stores:
        rows = st.rows(split)
        n_chips += len(rows)
        areas.append(str(st.meta.get("area", st.path.name)))
        starts = range(0, len(rows), chunk)
        for s in tqdm(starts, desc=f"stats {st.path.name}", unit="batch", disable=not progress):
            block = np.asarray(st.x[rows[s : s + chunk]], dtype=np.float64)  # (b, C, S, S)
            block = np.moveaxis(block, 1, 0).reshape(c, -1)
            finite = np.isfinite(block)
            nb = finite.sum(axis=1).astype(np.float64)
            with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                mb = np.where(nb > 0, np.nansum(block, axis=1) / np.maximum(nb, 1), 0.0)
                m2b = np.nansum((block - mb[:, None]) ** 2, axis=1)
            # Chan, Golub & LeVeque (1979) pairwise update of count, mean and M2.
            n_new = n_tot + nb
            delta = mb - mean
            with np.errstate(invalid="ignore", divide="ignore"):
                w = np.where(n_new > 0, nb / np.maximum(n_new, 1), 0.0)
            mean = mean + delta * w
            m2 = m2 + m2b + delta**2 * n_tot * w
            n_tot = n_new
    if n_chips == 0 or (n_tot == 0).any():
        raise InputError(
            f"stats: no valid {split} pixels for channel(s) "
            f"{[ch for ch, k in zip(channels, n_tot) if k == 0] or channels} "
            f"in {[str(s.path) for s in stores]}"
        )
    std = np.sqrt(m2 / n_tot)
    return {
        "channels": channels,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "areas": areas,
        "n_chips": int(n_chips),
        "n_pixels": n_tot.astype(np.int64).tolist(),
        "split": split,
        "units": "dB",
        "normalisation": "(x - mean) / (std + 1e-5), NaN -> 0",
        "stores": [str(s.path) for s in stores],
    }


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def _csv_floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _csv_words(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--composite", required=True, help="12-band seasonal composite (sarssl composite)"
    )
    parser.add_argument(
        "--landcover", default=None, help="WorldCover-coded land cover raster (any CRS)"
    )
    parser.add_argument(
        "--treecover", default=None, help="MOD44B-style tree cover percent raster (any CRS)"
    )
    parser.add_argument(
        "--no-labels",
        action="store_true",
        help="an unlabelled area (pretraining only): no label rasters; all-ignore labels "
        "and every chip in train",
    )
    parser.add_argument("--area", required=True, help="area name recorded in the index")
    parser.add_argument("--size", type=int, default=64, help="chip size in pixels (the study: 448)")
    parser.add_argument(
        "--overlap", type=int, default=0, help="overlap of neighbouring chips in pixels"
    )
    parser.add_argument(
        "--max-nodata", type=float, default=0.05, help="drop chips with more no data than this"
    )
    parser.add_argument(
        "--min-label-coverage",
        type=float,
        default=0.5,
        help="fraction of the valid composite pixels each label raster must label, else an error "
        "(default 0.5; below 1 is a warning)",
    )
    parser.add_argument(
        "--split-angle",
        type=float,
        default=30.0,
        help="direction of the split bands (deg from east)",
    )
    parser.add_argument(
        "--split-band-width",
        type=float,
        default=None,
        help="band width in CRS metres (default: one chip side)",
    )
    parser.add_argument(
        "--split-pattern",
        type=_csv_words,
        default=list(DEFAULT_PATTERN),
        help="splits assigned cyclically to bands",
    )
    parser.add_argument("--out-dir", required=True, help="chip store directory")
    parser.add_argument(
        "--export-split", choices=SPLITS, default=None, help="also export this split as GeoTIFFs"
    )
    parser.add_argument(
        "--export-dir", default=None, help="where --export-split writes its GeoTIFFs"
    )
    parser.add_argument(
        "--dtype",
        choices=X_STORE_DTYPES,
        default="float16",
        help="x.npy: float16 dB, or dB quantised per channel to uint8 (half the bytes of "
        "float16, error <= 0.118 dB) or uint16 (same bytes, uniform error <= 0.00046 dB); "
        "scale/offset in store.json",
    )


def run(args: argparse.Namespace) -> int:
    given = (args.landcover is not None, args.treecover is not None)
    if args.no_labels and any(given):
        raise SarsslError("--no-labels and --landcover/--treecover exclude each other")
    if not args.no_labels and not all(given):
        raise SarsslError("--landcover and --treecover are required (or --no-labels)")
    make_chips(
        args.composite,
        args.landcover,
        args.treecover,
        args.area,
        args.out_dir,
        size=args.size,
        overlap=args.overlap,
        max_nodata=args.max_nodata,
        min_label_coverage=args.min_label_coverage,
        split_angle=args.split_angle,
        split_band_width=args.split_band_width,
        split_pattern=args.split_pattern,
        export_split=args.export_split,
        export_dir=args.export_dir,
        dtype=args.dtype,
    )
    return 0


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--chips-dir", action="append", required=True, help="chip store (repeat for several areas)"
    )
    parser.add_argument(
        "--split", choices=SPLITS, default="train", help="split to compute statistics on"
    )
    parser.add_argument("--out", required=True, help="stats.json")


def add_fractions_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--chips-dir", required=True, help="chip store whose training ids are subset"
    )
    parser.add_argument(
        "--fractions",
        type=_csv_floats,
        default=list(DEFAULT_FRACTIONS),
        help="nested label fractions of train",
    )
    parser.add_argument(
        "--seed", type=int, required=True, help="seed of the label-fraction subsets"
    )
    parser.add_argument(
        "--seeds",
        type=lambda t: [int(v) for v in _csv_floats(t)],
        default=None,
        help="fine-tuning run seeds S1,S2,...: each gets its own nested subsets, drawn with "
        "[--seed, S] (without it one subset per fraction is shared by every seed)",
    )


def run_fractions(args: argparse.Namespace) -> int:
    """(Re)write ``fractions.json`` of a chip store, its only writer: the nested
    label-fraction subsets of its training ids. The subsets depend only on the ids and the
    seed (fraction ``f`` is a prefix of one seeded shuffle), so adding fractions never
    changes the existing ones, and the workflow can change ``finetune.fractions`` without
    re-cutting chips or pretraining. With ``--seeds`` each run seed has its own subsets."""
    fr = write_fractions(
        args.chips_dir, ChipStore(args.chips_dir).index, args.fractions, args.seed, args.seeds
    )
    sizes = (
        {s: {f: len(v) for f, v in t.items()} for s, t in fr.items()}
        if args.seeds
        else {f: len(v) for f, v in fr.items()}
    )
    log.info("%s/fractions.json: %s", args.chips_dir, sizes)
    return 0


def run_stats(args: argparse.Namespace) -> int:
    stats = channel_stats(args.chips_dir, split=args.split)
    write_json(args.out, stats)
    log.info(
        "stats over %d %s chips of %s -> %s", stats["n_chips"], args.split, stats["areas"], args.out
    )
    return 0
