"""The chip store: on-disk layout, writer, index, label fractions and statistics.

A chip store (``results/chips/AREA/``, see ``docs/architecture.md``) holds every chip of
one area as fixed-size rows of memory-mappable ``.npy`` arrays, so any chip is one
contiguous slice on disk and training reads exactly the bytes it needs:

- ``x.npy``: float16 ``(N, 12, S, S)``, backscatter in dB in :data:`sarssl.CHANNELS`
  order, NaN where there is no data. float16 keeps 11 significant bits: the rounding
  error is at most ``2**(floor(log2|x|) - 11)``, i.e. <= 0.0039 dB for ``|x| < 16 dB``
  and <= 0.0078 dB for ``16 <= |x| < 32 dB`` (typical sigma0 values of -5..-30 dB), far
  below the radiometric accuracy of Sentinel-1 (~1 dB absolute, ~0.1 dB after the
  speckle filter and seasonal averaging); it halves the store and the I/O of float32.
  A *compact* store (``sarssl chips --dtype uint16|uint8``) holds instead unsigned codes
  of dB quantised per channel (:class:`XCodec`: offset and scale in ``store.json``
  ``quantisation``; the largest code = no data, exactly): uint8 halves the bytes of
  float16 (a quarter of float32) at an error of at most half a step (0.118 dB with the
  default 60 dB ranges); uint16 keeps float16's 2 bytes with a uniform error of at most
  0.00046 dB. Readers decode on the consumer's device.
- ``landcover.npy``: uint8 ``(N, S, S)``, WorldCover classes 0..10, 255 = ignore.
- ``treecover.npy``: float16 ``(N, S, S)``, tree cover percent (NaN = unknown).
- ``index.parquet``: GeoParquet, one row per chip (``id``, ``row``, ``split``, ...,
  ``geometry`` = chip polygon in the chip CRS, WKB).
- ``qa.csv``, ``store.json`` (written with the arrays by :class:`StoreWriter`).
- ``fractions.json``: the nested label-fraction subsets of the training ids, written
  only by ``sarssl fractions`` (:func:`write_fractions`), never with the arrays: the
  workflow changes the fractions without re-cutting chips, so ``store.json`` says
  nothing about them.

:class:`ChipStore` gives random access by chip id, split and label fraction;
:func:`load_stats` reads the normalisation statistics (``stats.json``). Reading chips for
a model goes through :mod:`sarssl.data.loaders`; the normalisation itself is
:mod:`sarssl.data.normalize`.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__
from ..errors import InputError, SarsslError
from ..io import atomic_dir, atomic_path, write_json
from ..vocabulary import CHANNELS, IGNORE_INDEX, N_LANDCOVER_CLASSES, SPLITS, fraction_key

log = logging.getLogger(__name__)

STORE_FORMAT = "sarssl-chip-store"
STORE_VERSION = 1
X_DTYPE = np.float16
LANDCOVER_DTYPE = np.uint8
TREECOVER_DTYPE = np.float16
DEFAULT_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)

INDEX_COLUMNS = (
    "id",
    "row",
    "area",
    "crs",
    "x0",
    "y0",
    "x1",
    "y1",
    "split",
    "band",
    "valid_fraction",
    "landcover_majority",
    "treecover_mean",
)


# --------------------------------------------------------------------------------------
# per-chip label summaries
# --------------------------------------------------------------------------------------
def landcover_majority(landcover: np.ndarray) -> int:
    """Most frequent class 0..10 of a chip's land-cover map, 255 if no pixel is labelled.

    Ties go to the lower class number (deterministic).
    """
    lc = np.asarray(landcover).ravel()
    counts = np.bincount(
        lc[lc < N_LANDCOVER_CLASSES].astype(np.int64), minlength=N_LANDCOVER_CLASSES
    )
    return int(np.argmax(counts)) if counts.sum() > 0 else IGNORE_INDEX


def treecover_mean(treecover: np.ndarray) -> float:
    """Mean tree cover percent of a chip (NaN pixels ignored; NaN if none is known)."""
    tc = np.asarray(treecover, dtype=np.float64)
    finite = np.isfinite(tc)
    return float(tc[finite].mean()) if finite.any() else float("nan")


def valid_fraction(x: np.ndarray) -> float:
    """Fraction of pixels of a ``(C, S, S)`` chip where every channel has data."""
    return float(np.isfinite(np.asarray(x)).all(axis=0).mean())


def nested_fractions(
    train_ids: Sequence[str], fractions: Iterable[float], seed: int | Sequence[int]
) -> dict[str, list[str]]:
    """Nested label-fraction subsets of the training chip ids.

    The ids are sorted (so the result does not depend on their input order), shuffled
    once with ``numpy.random.default_rng(seed)`` (``seed`` an int or a sequence of ints,
    e.g. ``[config seed, run seed]``), and fraction ``f`` takes the first
    ``max(1, ceil(f * n))`` of them: every smaller subset lies inside every larger one
    (the study's 1% subset is inside its 5% subset, and so on). Keys are
    :func:`sarssl.vocabulary.fraction_key` (``"0.01"``, ..., ``"1.0"``).
    """
    ids = sorted(str(i) for i in train_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    out: dict[str, list[str]] = {}
    for f in sorted(float(v) for v in fractions):
        if not 0.0 < f <= 1.0:
            raise SarsslError(f"label fraction {f}: must be in (0, 1]")
        k = min(len(ids), max(1, math.ceil(f * len(ids) - 1e-9))) if ids else 0
        out[fraction_key(f)] = shuffled[:k]
    return out


def write_fractions(
    directory: str | os.PathLike,
    index: pd.DataFrame,
    fractions: Mapping[str, Sequence[str]] | Iterable[float],
    seed: int,
    run_seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Write a store's ``fractions.json`` (the one writer of that file, run by ``sarssl
    fractions``). Keys are spelled by :func:`sarssl.vocabulary.fraction_key`.

    With ``run_seeds`` (what the workflow writes) every fine-tuning seed ``s`` gets its
    own nested subsets, drawn with ``[seed, s]``: nested across fractions within a seed,
    different across seeds, so the spread over seeds includes the luck of which chips
    (and classes) a small label budget happens to contain. The file is
    ``{"seed": seed, "run_seeds": [...], "per_seed": {"s": {fraction: [ids]}}}`` and the
    return value its ``per_seed`` mapping.

    Without ``run_seeds``: one table ``{"seed": seed, "fractions": {fraction: [ids]}}``
    shared by every run seed (``fractions`` may then also be a ready mapping); returns
    that table."""
    train_ids = index.loc[index["split"] == "train", "id"].tolist()
    if run_seeds is not None:
        if isinstance(fractions, Mapping):
            raise SarsslError("write_fractions: per-seed subsets are drawn, not given")
        fractions = [float(f) for f in fractions]
        per_seed = {
            str(int(s)): nested_fractions(train_ids, fractions, [int(seed), int(s)])
            for s in run_seeds
        }
        doc = {"seed": int(seed), "run_seeds": [int(s) for s in run_seeds], "per_seed": per_seed}
        write_json(Path(directory) / "fractions.json", doc)
        return per_seed
    if not isinstance(fractions, Mapping):
        fractions = nested_fractions(train_ids, fractions, seed)
    fractions = {fraction_key(k): list(v) for k, v in fractions.items()}
    write_json(Path(directory) / "fractions.json", {"seed": int(seed), "fractions": fractions})
    return fractions


# --------------------------------------------------------------------------------------
# compact chip stores: quantised dB
# --------------------------------------------------------------------------------------
X_STORE_DTYPES = ("float16", "uint16", "uint8")
"""``chips.dtype`` / ``sarssl chips --dtype``: how ``x.npy`` holds the dB values."""

DB_RANGES: dict[str, tuple[float, float]] = {
    "vvvh": (-15.0, 45.0),
    "vv": (-45.0, 15.0),
    "vh": (-45.0, 15.0),
}
"""Default quantisation range (dB) of a compact store per polarisation (the channel name's
prefix): 60 dB each, around the backscatter of land after the -35 dB noise floor of
:func:`sarssl.sar.calibration` (VV-VH is a difference, usually 0..20 dB). Values outside
are clipped to the range ends and counted (``store.json`` ``quantisation.clipped``)."""


class XCodec:
    """Linear quantisation of dB values to unsigned integer codes, per channel.

    ``code = clip(rint((x - offset_c) / scale_c), 0, nodata - 1)`` and
    ``x' = offset_c + code * scale_c`` (float32), with ``nodata = 2**bits - 1`` (255 for
    uint8, 65535 for uint16) reserved for NaN/inf: no data stays exactly no data. With
    ``scale_c = (hi_c - lo_c) / (nodata - 1)`` the codes ``0 .. nodata - 1`` span
    ``[lo_c, hi_c]``. **Error bound**: for every finite ``x`` in ``[lo_c, hi_c]``,
    ``|x' - x| <= scale_c / 2`` (half a quantisation step) plus the float32 rounding of
    the decode (``<= 2**-24 * max(|lo_c|, |hi_c|) * 2``, about 5e-6 dB for 45 dB);
    values outside the range are clipped to its ends. With the default 60 dB ranges:
    uint8 step 0.236 dB (bound 0.118 dB), uint16 step 0.000916 dB (bound 0.00046 dB,
    finer than float16's ``2**(floor(log2|x|) - 11)`` for ``|x| >= 1`` dB). The decode is
    the same float32 arithmetic in NumPy (:meth:`decode`) and torch (:meth:`decode_torch`,
    on any device), so both give bit-identical values.
    """

    def __init__(self, dtype: str, offset: Sequence[float], scale: Sequence[float]) -> None:
        if dtype not in ("uint8", "uint16"):
            raise SarsslError(f"quantised chip store dtype {dtype!r}: expected uint8 or uint16")
        self.dtype = str(dtype)
        self.offset = np.asarray(offset, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)
        if self.offset.shape != self.scale.shape or self.offset.ndim != 1:
            raise SarsslError("quantisation: offset and scale must be per-channel vectors")
        if not (np.isfinite(self.scale).all() and (self.scale > 0).all()):
            raise SarsslError(f"quantisation: scales must be positive, got {self.scale}")
        self.nodata = int(np.iinfo(self.dtype).max)

    @classmethod
    def for_channels(
        cls,
        dtype: str,
        channels: Sequence[str],
        ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> XCodec:
        """The codec of ``channels`` with ``ranges`` (by channel name or its prefix before
        ``_``; default :data:`DB_RANGES`)."""
        ranges = {**DB_RANGES, **(ranges or {})}
        lo, hi = [], []
        for ch in channels:
            r = ranges.get(ch, ranges.get(ch.split("_")[0]))
            if r is None or not float(r[0]) < float(r[1]):
                raise SarsslError(f"quantisation: no valid dB range for channel {ch!r} ({r})")
            lo.append(float(r[0]))
            hi.append(float(r[1]))
        steps = int(np.iinfo(dtype).max) - 1
        scale = (np.asarray(hi, np.float64) - np.asarray(lo, np.float64)) / steps
        return cls(dtype, lo, scale)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], where: str = "store.json") -> XCodec | None:
        """The codec of a ``store.json`` (None for a float16 store)."""
        dtype = meta.get("dtype", "float16")
        if dtype == "float16":
            return None
        q = meta.get("quantisation")
        if dtype not in X_STORE_DTYPES or not isinstance(q, Mapping):
            raise InputError(f"{where}: dtype {dtype!r} without a valid 'quantisation' entry")
        try:
            return cls(dtype, q["offset"], q["scale"])
        except (KeyError, SarsslError) as exc:
            raise InputError(f"{where}: invalid quantisation ({exc})") from None

    def describe(self, channels: Sequence[str]) -> dict[str, Any]:
        """The ``store.json`` ``quantisation`` entry (``clipped`` is added by the writer)."""
        return {
            "formula": "x_db = offset[c] + code * scale[c] (float32); code nodata = NaN",
            "offset": [float(v) for v in self.offset],
            "scale": [float(v) for v in self.scale],
            "nodata": self.nodata,
            "channels": list(channels),
            "max_abs_error_db": [float(v) / 2 for v in self.scale],
            "error_bound": "|x' - x| <= scale[c] / 2 (+ float32 rounding of the decode) for x "
            "in [offset[c], offset[c] + scale[c] * (nodata - 1)]; values outside are clipped",
        }

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Codes of ``x`` (..., C, H, W) dB (channels on axis -3) and the number of
        finite values clipped per channel."""
        x = np.asarray(x, dtype=np.float64)
        shape = (-1, 1, 1)
        q = (x - self.offset.astype(np.float64).reshape(shape)) / self.scale.astype(
            np.float64
        ).reshape(shape)
        finite = np.isfinite(q)
        top = self.nodata - 1
        axes = tuple(i for i in range(x.ndim) if i != x.ndim - 3)
        clipped = (finite & ((q < -0.5) | (q > top + 0.5))).sum(axis=axes)
        with np.errstate(invalid="ignore"):
            codes = np.clip(np.rint(np.where(finite, q, 0.0)), 0, top).astype(self.dtype)
        codes[~finite] = self.nodata
        return codes, np.asarray(clipped, dtype=np.int64)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """float32 dB of ``codes`` (channels on axis -3), NaN where no data."""
        codes = np.asarray(codes)
        shape = (-1, 1, 1)
        y = codes.astype(np.float32) * self.scale.reshape(shape) + self.offset.reshape(shape)
        y[codes == self.nodata] = np.nan
        return y

    def decode_torch(self, codes: Any) -> Any:
        """:meth:`decode` of a torch tensor (B, C, H, W) on its device: float32 dB, NaN
        where no data (bit-identical to the NumPy decode)."""
        import torch

        dev = codes.device
        scale = torch.from_numpy(self.scale.reshape(-1, 1, 1)).to(dev)
        offset = torch.from_numpy(self.offset.reshape(-1, 1, 1)).to(dev)
        if dev.type != "cpu":  # uint16 kernels are sparse off the CPU: compare as int32
            codes = codes.to(torch.int32)
        y = codes.to(torch.float32)
        y.mul_(scale).add_(offset)  # in place: a third of the time of y * scale + offset
        return y.masked_fill_(codes == self.nodata, float("nan"))

    def same_as(self, other: XCodec | None) -> bool:
        return (
            other is not None
            and self.dtype == other.dtype
            and np.array_equal(self.offset, other.offset)
            and np.array_equal(self.scale, other.scale)
        )


class QuantisedArray:
    """Array-like dB view of a quantised ``x.npy`` (codes): indexing decodes to float32
    (NaN = no data), assigning encodes (counting clipped values). What :attr:`ChipStore.x`
    and :attr:`StoreWriter.x` are for a compact store, so readers of dB chips (statistics,
    GeoTIFF export, the index summaries) work unchanged."""

    def __init__(self, codes: np.ndarray, codec: XCodec) -> None:
        self.codes = codes
        self.codec = codec
        self.clipped = np.zeros(codes.shape[1] if codes.ndim > 1 else 0, dtype=np.int64)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    @property
    def ndim(self) -> int:
        return self.codes.ndim

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, idx: Any) -> np.ndarray:
        return self.codec.decode(self.codes[idx])

    def __setitem__(self, idx: Any, value: Any) -> None:
        codes, clipped = self.codec.encode(value)
        self.codes[idx] = codes
        self.clipped += clipped

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.codec.decode(self.codes[...])
        return out if dtype is None else out.astype(dtype)

    def flush(self) -> None:
        if isinstance(self.codes, np.memmap):
            self.codes.flush()


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def _precision_note(codec: XCodec | None = None) -> dict[str, Any]:
    if codec is not None:
        return {
            "x": f"{codec.dtype} codes of dB: max error half a quantisation step "
            "(quantisation.max_abs_error_db per channel) inside the quantisation range",
            "max_abs_error_db": float(codec.scale.max()) / 2,
            "treecover": "float16 percent: <= 0.03 percentage points for values <= 100",
        }
    return {
        "x": "float16: 11 significant bits; max rounding error 2**(floor(log2|x|)-11) dB, "
        "i.e. <= 0.0039 dB for |x| < 16 dB and <= 0.0078 dB for |x| < 32 dB",
        "max_abs_error_db_below_32db": 2.0**4 * 2.0**-11,
        "treecover": "float16 percent: <= 0.03 percentage points for values <= 100",
    }


def _crs_strings(crs: Any) -> tuple[str, int | None, dict | None]:
    """(user string, EPSG code or None, PROJJSON) of a CRS-like value."""
    if crs is None:
        return "", None, None
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    epsg = c.to_epsg()
    return (f"EPSG:{epsg}" if epsg else c.to_wkt()), epsg, c.to_json_dict()


class StoreWriter:
    """Fill the arrays of a chip store row by row inside ``directory``.

    The caller owns atomicity (build ``directory`` inside :func:`sarssl.io.atomic_dir`).
    The arrays are ``.npy`` memory maps of the final size, so writing N chips never
    holds more than one chip in memory. ``dtype`` is how ``x.npy`` holds the dB values:
    ``float16`` (default) or the compact ``uint16`` / ``uint8`` codes of an
    :class:`XCodec` (ranges ``x_ranges``, default :data:`DB_RANGES`); for those
    :attr:`x` is a :class:`QuantisedArray` that encodes what is assigned to it. Each
    array gets its disk blocks before it is filled through the map
    (:func:`sarssl.io.preallocate`): on a full disk, a store into a page without a block
    would kill the process with SIGBUS (no exception, no clean-up), whereas the
    preallocation fails up front with ENOSPC. The files are byte-identical.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        n: int,
        chip_size: int,
        channels: Sequence[str] = CHANNELS,
        *,
        dtype: str = "float16",
        x_ranges: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.n = int(n)
        self.chip_size = int(chip_size)
        self.channels = tuple(channels)
        if dtype not in X_STORE_DTYPES:
            raise SarsslError(f"chip store dtype {dtype!r}: expected one of {X_STORE_DTYPES}")
        self.dtype = str(dtype)
        self.codec = (
            None if dtype == "float16" else XCodec.for_channels(dtype, self.channels, x_ranges)
        )
        c, s = len(self.channels), self.chip_size
        if self.codec is None:
            self.x: Any = self._open("x.npy", X_DTYPE, (self.n, c, s, s), np.nan)
        else:
            codes = self._open("x.npy", self.dtype, (self.n, c, s, s), self.codec.nodata)
            self.x = QuantisedArray(codes, self.codec)
        self.landcover = self._open("landcover.npy", LANDCOVER_DTYPE, (self.n, s, s), IGNORE_INDEX)
        self.treecover = self._open("treecover.npy", TREECOVER_DTYPE, (self.n, s, s), np.nan)

    def _open(self, name: str, dtype: Any, shape: tuple[int, ...], fill: float) -> np.ndarray:
        path = self.directory / name
        if self.n == 0:  # a zero-length file cannot be memory-mapped
            arr = np.empty(shape, dtype=dtype)
            np.save(path, arr)
            return arr
        from ..io import preallocate

        arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)  # sparse
        preallocate(path)
        arr[...] = fill
        return arr

    def write(self, row: int, x: np.ndarray, landcover: np.ndarray, treecover: np.ndarray) -> None:
        """Store one chip: ``x`` (C, S, S) dB, ``landcover`` (S, S), ``treecover`` (S, S)."""
        self.x[row] = x
        self.landcover[row] = landcover
        self.treecover[row] = treecover

    def finish(
        self,
        index: pd.DataFrame,
        *,
        resolution: float,
        crs: Any = None,
        area: str | None = None,
        qa: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Flush the arrays and write ``index.parquet``, ``qa.csv`` and ``store.json``;
        returns the ``store.json`` content (``fractions.json`` is not the writer's: see
        :func:`write_fractions`).

        ``index`` needs ``id`` and ``split``; missing columns are filled: ``row`` (0..N-1),
        ``area``, ``crs``, chip bounds (laid out in a row from the origin),
        ``band`` (-1), and the per-chip summaries computed from the arrays.
        """
        for arr in (self.x, self.landcover, self.treecover):
            if isinstance(arr, (np.memmap, QuantisedArray)):
                arr.flush()
        crs_str, epsg, projjson = _crs_strings(crs)
        index = complete_index(
            index,
            self.x,
            self.landcover,
            self.treecover,
            chip_size=self.chip_size,
            resolution=resolution,
            crs=crs_str,
            area=area or "unknown",
        )
        if len(index) != self.n:
            raise SarsslError(
                f"chip store {self.directory}: index has {len(index)} rows, arrays {self.n}"
            )
        write_geoparquet(self.directory / "index.parquet", index, projjson)
        write_qa(self.directory / "qa.csv", dict(qa) if qa is not None else {"kept": self.n})
        meta = self.describe(
            index, resolution=resolution, crs=crs_str, epsg=epsg, area=area or "unknown"
        )
        if extra:
            meta.update(extra)
        write_json(self.directory / "store.json", meta)
        return meta

    def describe(
        self, index: pd.DataFrame, *, resolution: float, crs: str, epsg: int | None, area: str
    ) -> dict[str, Any]:
        """The ``store.json`` content of the arrays and their completed ``index``."""
        c, s = len(self.channels), self.chip_size
        x_bytes = c * s * s * np.dtype(self.dtype).itemsize
        lc_bytes = s * s * np.dtype(LANDCOVER_DTYPE).itemsize
        tc_bytes = s * s * np.dtype(TREECOVER_DTYPE).itemsize
        return {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "sarssl_version": __version__,
            "n_chips": self.n,
            "shape": [self.n, c, s, s],
            "dtype": self.dtype,
            "landcover_dtype": np.dtype(LANDCOVER_DTYPE).name,
            "treecover_dtype": np.dtype(TREECOVER_DTYPE).name,
            "channels": list(self.channels),
            "units": "dB",
            "nodata": "NaN",
            "chip_size": s,
            "resolution": float(resolution),
            "crs": crs,
            "epsg": epsg,
            "area": area,
            "bytes_per_chip": x_bytes + lc_bytes + tc_bytes,
            "bytes_per_chip_x": x_bytes,
            "precision": _precision_note(self.codec),
            "landcover_ignore_index": IGNORE_INDEX,
            "splits": {k: int((index["split"] == k).sum()) for k in SPLITS},
            **(
                {}
                if self.codec is None
                else {
                    "quantisation": {
                        **self.codec.describe(self.channels),
                        "clipped": [int(v) for v in self.x.clipped],
                    }
                }
            ),
        }


def write_qa(path: Path, qa: Mapping[str, int]) -> None:
    """``qa.csv``: one ``reason,count`` row per quality-control outcome."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["reason", "count"])
            for reason, count in qa.items():
                w.writerow([reason, int(count)])


def check_index(df: pd.DataFrame) -> None:
    """SarsslError unless the index has ``id`` and ``split``, known splits and unique ids."""
    for col in ("id", "split"):
        if col not in df:
            raise SarsslError(f"chip index: column {col!r} is required")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise SarsslError(f"chip index: unknown split(s) {bad}; expected {list(SPLITS)}")
    if df["id"].duplicated().any():
        raise SarsslError(
            f"chip index: duplicate ids {df.loc[df['id'].duplicated(), 'id'].tolist()[:5]}"
        )


def complete_index(
    index: pd.DataFrame,
    x: np.ndarray,
    landcover: np.ndarray,
    treecover: np.ndarray,
    *,
    chip_size: int,
    resolution: float,
    crs: str,
    area: str,
) -> pd.DataFrame:
    """Fill the index columns a caller did not give (see :meth:`StoreWriter.finish`)."""
    df = index.copy().reset_index(drop=True)
    check_index(df)
    n = len(df)
    df["id"] = df["id"].astype(str)
    if "row" not in df:
        df["row"] = np.arange(n, dtype=np.int64)
    if "area" not in df:
        df["area"] = area
    if "crs" not in df:
        df["crs"] = crs
    side = chip_size * float(resolution)
    if not {"x0", "y0", "x1", "y1"} <= set(df.columns):
        # no geometry given (stores made up for tests and benchmarks): a row of chips one
        # chip apart, so none is taken for another's neighbour (e.g. by the pretraining
        # pool's buffer around test chips, sarssl.selfsup.batches.away_from_test)
        df["x0"] = np.arange(n) * 2 * side
        df["y1"] = side
        df["x1"] = df["x0"] + side
        df["y0"] = 0.0
    if "band" not in df:
        df["band"] = -1
    if "valid_fraction" not in df:
        df["valid_fraction"] = [valid_fraction(x[r]) for r in df["row"]]
    if "landcover_majority" not in df:
        df["landcover_majority"] = [landcover_majority(landcover[r]) for r in df["row"]]
    if "treecover_mean" not in df:
        df["treecover_mean"] = [treecover_mean(treecover[r]) for r in df["row"]]
    df = df.astype(
        {
            "row": np.int64,
            "x0": np.float64,
            "y0": np.float64,
            "x1": np.float64,
            "y1": np.float64,
            "band": np.int64,
            "valid_fraction": np.float64,
            "landcover_majority": np.int64,
            "treecover_mean": np.float64,
        }
    )
    cols = list(INDEX_COLUMNS) + [
        c for c in df.columns if c not in INDEX_COLUMNS and c != "geometry"
    ]
    return df[cols]


def write_geoparquet(path: str | os.PathLike, index: pd.DataFrame, projjson: dict | None) -> None:
    """Write the chip index as GeoParquet 1.1 (geometry = chip box, WKB, chip CRS).

    Written with pyarrow directly (the ``geo`` schema metadata of the GeoParquet spec), so
    geopandas is not needed to write; ``geopandas.read_parquet`` reads it back.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    boxes = shapely.box(index["x0"], index["y0"], index["x1"], index["y1"])
    df = index.copy()
    df["geometry"] = shapely.to_wkb(boxes)
    table = pa.Table.from_pandas(df, preserve_index=False)
    bbox = (
        [
            float(index["x0"].min()),
            float(index["y0"].min()),
            float(index["x1"].max()),
            float(index["y1"].max()),
        ]
        if len(index)
        else []
    )
    col_meta: dict[str, Any] = {"encoding": "WKB", "geometry_types": ["Polygon"]}
    if bbox:
        col_meta["bbox"] = bbox
    col_meta["crs"] = projjson  # None = unknown CRS is allowed by the spec ("crs": null)
    geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": col_meta}}
    meta = dict(table.schema.metadata or {})
    meta[b"geo"] = json.dumps(geo).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def write_store(
    out_dir: str | os.PathLike,
    x: np.ndarray,
    landcover: np.ndarray,
    treecover_map: np.ndarray,
    index_df: pd.DataFrame | None = None,
    *,
    resolution: float = 10.0,
    crs: Any = None,
    area: str | None = None,
    fractions: Mapping[str, Sequence[str]] | Iterable[float] | None = None,
    seed: int = 0,
    qa: Mapping[str, int] | None = None,
    channels: Sequence[str] = CHANNELS,
    dtype: str = "float16",
) -> Path:
    """Write a chip store from in-memory arrays (atomically); returns its path.

    For tests and benchmarks that need tiny stores: ``x`` (N, 12, S, S) dB,
    ``landcover`` (N, S, S) 0..10/255, ``treecover_map`` (N, S, S) percent. ``index_df``
    needs ``id`` and ``split`` columns; when ``None``, ids ``chip{i}`` and splits cycling
    train,train,train,test,val are made up. ``fractions`` (a list, or a ready
    ``{fraction: [ids]}`` mapping) also writes ``fractions.json`` through
    :func:`write_fractions`, as ``sarssl fractions`` would after ``sarssl chips``;
    ``None`` writes none. ``dtype``: ``float16`` or a compact ``uint16`` / ``uint8``
    store (:class:`StoreWriter`).
    """
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1] != len(channels) or x.shape[2] != x.shape[3]:
        raise SarsslError(f"write_store: x must be (N, {len(channels)}, S, S), got {x.shape}")
    n, _, s, _ = x.shape
    if np.shape(landcover) != (n, s, s) or np.shape(treecover_map) != (n, s, s):
        raise SarsslError(
            f"write_store: landcover {np.shape(landcover)} and treecover {np.shape(treecover_map)} "
            f"must be ({n}, {s}, {s})"
        )
    if index_df is None:
        pattern = ("train", "train", "train", "test", "val")
        index_df = pd.DataFrame(
            {"id": [f"chip{i}" for i in range(n)], "split": [pattern[i % 5] for i in range(n)]}
        )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        w = StoreWriter(tmp, n, s, channels, dtype=dtype)
        if n:
            w.x[:] = x
            w.landcover[:] = landcover
            w.treecover[:] = treecover_map
        w.finish(index_df, resolution=resolution, crs=crs, area=area, qa=qa)
        del w
        if fractions is not None:
            write_fractions(tmp, pd.read_parquet(tmp / "index.parquet"), fractions, seed)
    return out_dir


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
class ChipStore:
    """Random access to one chip store: metadata, index, fractions and lazy memory maps.

    Picklable: the memory maps are dropped on pickling and reopened on first use, so a
    store can be handed to DataLoader worker processes.
    """

    def __init__(self, store_dir: str | os.PathLike) -> None:
        self.path = Path(store_dir)
        meta_path = self.path / "store.json"
        if not meta_path.is_file():
            raise InputError(f"chip store {self.path}: store.json not found (not a chip store?)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{meta_path}: invalid JSON ({exc})") from exc
        if self.meta.get("format") != STORE_FORMAT:
            raise InputError(
                f"{meta_path}: not a {STORE_FORMAT} (format={self.meta.get('format')!r})"
            )
        index_path = self.path / "index.parquet"
        if not index_path.is_file():
            raise InputError(f"chip store {self.path}: index.parquet not found")
        self.index: pd.DataFrame = pd.read_parquet(index_path)
        if len(self.index) != self.meta["n_chips"]:
            raise InputError(
                f"{index_path}: {len(self.index)} rows but store.json says "
                f"{self.meta['n_chips']} chips"
            )
        self._row_of = dict(zip(self.index["id"], self.index["row"].astype(int)))
        self._maps: dict[str, np.ndarray] = {}
        self.codec: XCodec | None = XCodec.from_meta(self.meta, str(meta_path))
        """how ``x.npy`` encodes dB: None for float16, else the compact store's codes"""

    # metadata --------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.meta["n_chips"])

    def __len__(self) -> int:
        return self.n

    @property
    def chip_size(self) -> int:
        return int(self.meta["chip_size"])

    @property
    def channels(self) -> list[str]:
        return list(self.meta["channels"])

    @property
    def fractions(self) -> dict[str, Any]:
        """Content of ``fractions.json``: ``{"seed": s, "fractions": {fraction_key(f): [ids]}}``.

        InputError when the store has none: ``sarssl chips`` writes no label fractions,
        ``sarssl fractions`` does.
        """
        path = self.path / "fractions.json"
        if not path.is_file():
            raise InputError(
                f"chip store {self.path}: fractions.json not found; the label fractions are "
                f"written by `sarssl fractions --chips-dir {self.path} --fractions F1,F2,... "
                "--seed S` (not by sarssl chips)"
            )
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: invalid JSON ({exc})") from exc

    def fraction_ids(self, fraction: float | str, seed: int | None = None) -> list[str]:
        """Chip ids of the label-fraction subset ``fraction`` of run seed ``seed``
        (SarsslError if there is none).

        A file with per-seed subsets needs ``seed``; a file with one shared table (written
        without run seeds) serves every seed the same subset, with a warning when a seed is
        asked for (its spread over seeds then misses the subset draw)."""
        doc = self.fractions
        path = self.path / "fractions.json"
        if "per_seed" in doc:
            if seed is None:
                raise SarsslError(f"{path}: per-seed label subsets; give the run seed")
            table = doc["per_seed"].get(str(int(seed)))
            if table is None:
                raise SarsslError(
                    f"{path}: no label subsets for seed {seed}; available seeds "
                    f"{sorted(doc['per_seed'], key=int)} (rerun `sarssl fractions --seeds`)"
                )
        else:
            table = doc["fractions"]
            if seed is not None:
                log.warning(
                    "%s: one label subset per fraction shared by every seed "
                    "(written without --seeds)",
                    path,
                )
        key = fraction_key(fraction)
        if key not in table:
            raise SarsslError(
                f"{path}: no label fraction {key}; available {sorted(table, key=float)}"
            )
        return list(table[key])

    def row_of(self, chip_id: str) -> int:
        """Array row of a chip id; InputError for an unknown id."""
        try:
            return self._row_of[chip_id]
        except KeyError:
            raise InputError(f"chip store {self.path}: no chip with id {chip_id!r}") from None

    def rows(
        self,
        split: str | None = None,
        fraction: float | str | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """Sorted rows of a split, optionally restricted to a label-fraction subset.

        ``fraction`` (with the run ``seed`` for per-seed subsets) selects the nested
        training subset of ``fractions.json`` (it only makes sense with ``split='train'``
        or ``None``).
        """
        df = self.index
        mask = np.ones(len(df), dtype=bool)
        if split is not None:
            if split not in SPLITS:
                raise SarsslError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
            mask &= (df["split"] == split).to_numpy()
        if fraction is not None:
            mask &= df["id"].isin(set(self.fraction_ids(fraction, seed))).to_numpy()
        return np.sort(df.loc[mask, "row"].to_numpy(dtype=np.int64))

    # arrays ----------------------------------------------------------------------------
    def stored(self, name: str) -> np.ndarray:
        """The array ``name`` (``x``, ``landcover``, ``treecover``) as stored on disk: a
        memory map in the file's dtype (``x`` of a compact store holds codes, see
        :attr:`codec`). Readers of raw batches use this; :attr:`x` decodes."""
        return self._map(name)

    def _map(self, name: str) -> np.ndarray:
        arr = self._maps.get(name)
        if arr is None:
            path = self.path / f"{name}.npy"
            if not path.is_file():
                raise InputError(f"chip store {self.path}: {name}.npy not found")
            try:
                arr = np.load(path, mmap_mode="r") if self.n else np.load(path)
            except ValueError as exc:  # header/size mismatch: truncated or not an .npy
                raise InputError(
                    f"{path}: unreadable array ({exc}; truncated chip store?)"
                ) from exc
            self._maps[name] = arr
        return arr

    @property
    def x(self) -> Any:
        """(N, C, S, S) dB, NaN = no data: the float16 memory map, or for a compact store a
        :class:`QuantisedArray` whose indexing decodes to float32 dB."""
        arr = self._map("x")
        return arr if self.codec is None else QuantisedArray(arr, self.codec)

    @property
    def landcover(self) -> np.ndarray:
        return self._map("landcover")

    @property
    def treecover(self) -> np.ndarray:
        return self._map("treecover")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state


def load_stats(
    stats: str | os.PathLike | Mapping[str, Any], channels: Sequence[str] = CHANNELS
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32 arrays from a ``stats.json`` path or its loaded dict.

    Checks that the statistics were computed for ``channels`` in the same order.
    """
    where = str(stats) if not isinstance(stats, Mapping) else "stats"
    if not isinstance(stats, Mapping):
        try:
            stats = json.loads(Path(stats).read_text())
        except FileNotFoundError:
            raise InputError(f"{where}: statistics file not found") from None
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: invalid JSON ({exc})") from exc
    for key in ("mean", "std"):
        if key not in stats:
            raise InputError(f"{where}: missing key {key!r}")
    if "channels" in stats and list(stats["channels"]) != list(channels):
        raise InputError(
            f"{where}: channels {stats['channels']} differ from the store's {list(channels)}"
        )
    mean = np.asarray(stats["mean"], dtype=np.float32)
    std = np.asarray(stats["std"], dtype=np.float32)
    if mean.shape != (len(channels),) or std.shape != (len(channels),):
        raise InputError(f"{where}: mean/std must have {len(channels)} values")
    return mean, std
