"""The chip store: on-disk layout, writer, random access and the PyTorch dataset.

A chip store (``results/chips/AREA/``, see ``docs/architecture.md``) holds every chip of
one area as fixed-size rows of memory-mappable ``.npy`` arrays, so any chip is one
contiguous slice on disk and training reads exactly the bytes it needs:

- ``x.npy``: float16 ``(N, 12, S, S)``, backscatter in dB in :data:`sarssl.CHANNELS`
  order, NaN where there is no data. float16 keeps 11 significant bits: the rounding
  error is at most ``2**(floor(log2|x|) - 11)``, i.e. <= 0.0039 dB for ``|x| < 16 dB``
  and <= 0.0078 dB for ``16 <= |x| < 32 dB`` (typical sigma0 values of -5..-30 dB), far
  below the radiometric accuracy of Sentinel-1 (~1 dB absolute, ~0.1 dB after the
  speckle filter and seasonal averaging); it halves the store and the I/O of float32.
- ``landcover.npy``: uint8 ``(N, S, S)``, WorldCover classes 0..10, 255 = ignore.
- ``treecover.npy``: float16 ``(N, S, S)``, tree cover percent (NaN = unknown).
- ``index.parquet``: GeoParquet, one row per chip (``id``, ``row``, ``split``, ...,
  ``geometry`` = chip polygon in the chip CRS, WKB).
- ``fractions.json``, ``qa.csv``, ``store.json``.

:class:`ChipStore` gives random access by chip id; :class:`ChipDataset` is the
worker-safe map-style dataset for ``torch.utils.data.DataLoader`` (memory maps are opened
lazily in each worker process, never pickled) with a batched ``__getitems__`` that reads
rows in ascending order and decodes + normalises each chip in one pass through a lookup
table; :func:`collate_chips` turns such a batch into tensors without an extra copy.
:class:`ChipLoader` is the fast CPU path: threads fill a ring of reused batch buffers,
avoiding the per-batch page faults of fresh (shared) memory that dominate DataLoader
workers for 448 px chips.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import CHANNELS, __version__
from ..errors import InputError, SarsslError
from ..io import atomic_dir, atomic_path, write_json

log = logging.getLogger(__name__)

STORE_FORMAT = "sarssl-chip-store"
STORE_VERSION = 1
X_DTYPE = np.float16
LANDCOVER_DTYPE = np.uint8
TREECOVER_DTYPE = np.float16
IGNORE_INDEX = 255
"""Land-cover value meaning 'no label' (use as ``ignore_index`` of the loss)."""
N_LANDCOVER_CLASSES = 11
DEFAULT_FRACTIONS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
NORM_EPS = 1e-5
"""Normalisation is ``(x - mean) / (std + NORM_EPS)``; NaN (no data) then becomes 0."""

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
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------------------
# per-chip label summaries
# --------------------------------------------------------------------------------------
def landcover_majority(landcover: np.ndarray) -> int:
    """Most frequent class 0..10 of a chip's land-cover map, 255 if no pixel is labelled.

    Ties go to the lower class number (deterministic).
    """
    lc = np.asarray(landcover).ravel()
    counts = np.bincount(lc[lc < N_LANDCOVER_CLASSES].astype(np.int64), minlength=N_LANDCOVER_CLASSES)
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
    train_ids: Sequence[str], fractions: Iterable[float], seed: int
) -> dict[str, list[str]]:
    """Nested label-fraction subsets of the training chip ids.

    The ids are sorted (so the result does not depend on their input order), shuffled
    once with ``numpy.random.default_rng(seed)``, and fraction ``f`` takes the first
    ``max(1, ceil(f * n))`` of them: every smaller subset lies inside every larger one
    (the study's 1% subset is inside its 5% subset, and so on). Keys are ``str(f)``
    (``"0.01"``, ..., ``"1.0"``).
    """
    ids = sorted(str(i) for i in train_ids)
    order = np.random.default_rng(seed).permutation(len(ids))
    shuffled = [ids[i] for i in order]
    out: dict[str, list[str]] = {}
    for f in sorted(float(v) for v in fractions):
        if not 0.0 < f <= 1.0:
            raise SarsslError(f"label fraction {f}: must be in (0, 1]")
        k = min(len(ids), max(1, math.ceil(f * len(ids) - 1e-9))) if ids else 0
        out[str(f)] = shuffled[:k]
    return out


def write_fractions(
    directory: str | os.PathLike,
    index: pd.DataFrame,
    fractions: Mapping[str, Sequence[str]] | Iterable[float],
    seed: int,
) -> dict[str, list[str]]:
    """Write a store's ``fractions.json``: ``fractions`` as a ready ``{str(f): [ids]}``
    mapping, or a list of fractions whose nested subsets of the ``train`` ids of ``index``
    are drawn with ``seed`` (:func:`nested_fractions`). Returns the mapping written."""
    if not isinstance(fractions, Mapping):
        train_ids = index.loc[index["split"] == "train", "id"].tolist()
        fractions = nested_fractions(train_ids, fractions, seed)
    fractions = {str(k): list(v) for k, v in fractions.items()}
    write_json(Path(directory) / "fractions.json", {"seed": int(seed), "fractions": fractions})
    return fractions


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def _precision_note() -> dict[str, Any]:
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
    holds more than one chip in memory. Each array gets its disk blocks before it is
    filled through the map (:func:`sarssl.io.preallocate`): on a full disk, a store into a
    page without a block would kill the process with SIGBUS (no exception, no clean-up),
    whereas the preallocation fails up front with ENOSPC. The files are byte-identical.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        n: int,
        chip_size: int,
        channels: Sequence[str] = CHANNELS,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.n = int(n)
        self.chip_size = int(chip_size)
        self.channels = tuple(channels)
        c, s = len(self.channels), self.chip_size
        self.x = self._open("x.npy", X_DTYPE, (self.n, c, s, s), np.nan)
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
        fractions: Mapping[str, Sequence[str]] | Iterable[float] | None = None,
        seed: int = 0,
        qa: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Flush the arrays and write ``index.parquet``, ``fractions.json``, ``qa.csv`` and
        ``store.json``; returns the ``store.json`` content.

        ``index`` needs ``id`` and ``split``; missing columns are filled: ``row`` (0..N-1),
        ``area``, ``crs``, chip bounds (laid out in a row from the origin),
        ``band`` (-1), and the per-chip summaries computed from the arrays.
        ``fractions`` is either the ready ``{str(f): [ids]}`` mapping or a list of
        fractions (nested subsets of the train ids are drawn with ``seed``).
        """
        for arr in (self.x, self.landcover, self.treecover):
            if isinstance(arr, np.memmap):
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
            raise SarsslError(f"chip store {self.directory}: index has {len(index)} rows, arrays {self.n}")
        write_geoparquet(self.directory / "index.parquet", index, projjson)

        write_fractions(self.directory, index, DEFAULT_FRACTIONS if fractions is None else fractions, seed)

        qa = dict(qa) if qa is not None else {"kept": self.n}
        with atomic_path(self.directory / "qa.csv") as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(["reason", "count"])
                for reason, count in qa.items():
                    w.writerow([reason, int(count)])

        c, s = len(self.channels), self.chip_size
        x_bytes = c * s * s * np.dtype(X_DTYPE).itemsize
        lc_bytes = s * s * np.dtype(LANDCOVER_DTYPE).itemsize
        tc_bytes = s * s * np.dtype(TREECOVER_DTYPE).itemsize
        meta = {
            "format": STORE_FORMAT,
            "version": STORE_VERSION,
            "sarssl_version": __version__,
            "n_chips": self.n,
            "shape": [self.n, c, s, s],
            "dtype": np.dtype(X_DTYPE).name,
            "landcover_dtype": np.dtype(LANDCOVER_DTYPE).name,
            "treecover_dtype": np.dtype(TREECOVER_DTYPE).name,
            "channels": list(self.channels),
            "units": "dB",
            "nodata": "NaN",
            "chip_size": s,
            "resolution": float(resolution),
            "crs": crs_str,
            "epsg": epsg,
            "area": area or "unknown",
            "bytes_per_chip": x_bytes + lc_bytes + tc_bytes,
            "bytes_per_chip_x": x_bytes,
            "precision": _precision_note(),
            "landcover_ignore_index": IGNORE_INDEX,
            "splits": {k: int((index["split"] == k).sum()) for k in SPLITS},
        }
        if extra:
            meta.update(extra)
        write_json(self.directory / "store.json", meta)
        return meta


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
    n = len(df)
    for col in ("id", "split"):
        if col not in df:
            raise SarsslError(f"chip index: column {col!r} is required")
    bad = sorted(set(df["split"]) - set(SPLITS))
    if bad:
        raise SarsslError(f"chip index: unknown split(s) {bad}; expected {list(SPLITS)}")
    if df["id"].duplicated().any():
        raise SarsslError(f"chip index: duplicate ids {df.loc[df['id'].duplicated(), 'id'].tolist()[:5]}")
    df["id"] = df["id"].astype(str)
    if "row" not in df:
        df["row"] = np.arange(n, dtype=np.int64)
    if "area" not in df:
        df["area"] = area
    if "crs" not in df:
        df["crs"] = crs
    side = chip_size * float(resolution)
    if not {"x0", "y0", "x1", "y1"} <= set(df.columns):
        df["x0"] = np.arange(n) * side
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
    cols = list(INDEX_COLUMNS) + [c for c in df.columns if c not in INDEX_COLUMNS and c != "geometry"]
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
        [float(index["x0"].min()), float(index["y0"].min()), float(index["x1"].max()), float(index["y1"].max())]
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
) -> Path:
    """Write a complete chip store from in-memory arrays (atomically); returns its path.

    Used by ``sarssl chips`` for small stores and by tests to build tiny stores:
    ``x`` (N, 12, S, S) dB, ``landcover`` (N, S, S) 0..10/255, ``treecover_map``
    (N, S, S) percent. ``index_df`` needs ``id`` and ``split`` columns; when ``None``,
    ids ``chip{i}`` and splits cycling train,train,train,test,val are made up.
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
        w = StoreWriter(tmp, n, s, channels)
        if n:
            w.x[:] = x
            w.landcover[:] = landcover
            w.treecover[:] = treecover_map
        w.finish(index_df, resolution=resolution, crs=crs, area=area, fractions=fractions, seed=seed, qa=qa)
        del w
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
            raise InputError(f"{meta_path}: not a {STORE_FORMAT} (format={self.meta.get('format')!r})")
        index_path = self.path / "index.parquet"
        if not index_path.is_file():
            raise InputError(f"chip store {self.path}: index.parquet not found")
        self.index: pd.DataFrame = pd.read_parquet(index_path)
        if len(self.index) != self.meta["n_chips"]:
            raise InputError(
                f"{index_path}: {len(self.index)} rows but store.json says {self.meta['n_chips']} chips"
            )
        self._row_of = dict(zip(self.index["id"], self.index["row"].astype(int)))
        self._maps: dict[str, np.ndarray] = {}

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
        """Content of ``fractions.json``: ``{"seed": s, "fractions": {str(f): [ids]}}``."""
        return json.loads((self.path / "fractions.json").read_text())

    def row_of(self, chip_id: str) -> int:
        """Array row of a chip id; InputError for an unknown id."""
        try:
            return self._row_of[chip_id]
        except KeyError:
            raise InputError(f"chip store {self.path}: no chip with id {chip_id!r}") from None

    def rows(self, split: str | None = None, fraction: float | str | None = None) -> np.ndarray:
        """Sorted rows of a split, optionally restricted to a label-fraction subset.

        ``fraction`` selects the nested training subset of ``fractions.json`` (it only
        makes sense with ``split='train'`` or ``None``).
        """
        df = self.index
        mask = np.ones(len(df), dtype=bool)
        if split is not None:
            if split not in SPLITS:
                raise SarsslError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
            mask &= (df["split"] == split).to_numpy()
        if fraction is not None:
            table = self.fractions["fractions"]
            key = self._fraction_key(table, fraction)
            mask &= df["id"].isin(set(table[key])).to_numpy()
        return np.sort(df.loc[mask, "row"].to_numpy(dtype=np.int64))

    def _fraction_key(self, table: Mapping[str, Any], fraction: float | str) -> str:
        for key in table:
            if math.isclose(float(key), float(fraction), rel_tol=1e-9, abs_tol=1e-12):
                return key
        raise SarsslError(
            f"{self.path / 'fractions.json'}: no label fraction {fraction}; available {sorted(table, key=float)}"
        )

    # arrays ----------------------------------------------------------------------------
    def _map(self, name: str) -> np.ndarray:
        arr = self._maps.get(name)
        if arr is None:
            path = self.path / f"{name}.npy"
            if not path.is_file():
                raise InputError(f"chip store {self.path}: {name}.npy not found")
            try:
                arr = np.load(path, mmap_mode="r") if self.n else np.load(path)
            except ValueError as exc:  # header/size mismatch: truncated or not an .npy
                raise InputError(f"{path}: unreadable array ({exc}; truncated chip store?)") from exc
            self._maps[name] = arr
        return arr

    @property
    def x(self) -> np.ndarray:
        """float16 memory map (N, C, S, S), dB, NaN = no data."""
        return self._map("x")

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


def load_stats(stats: str | os.PathLike | Mapping[str, Any], channels: Sequence[str] = CHANNELS) -> tuple[np.ndarray, np.ndarray]:
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
        raise InputError(f"{where}: channels {stats['channels']} differ from the store's {list(channels)}")
    mean = np.asarray(stats["mean"], dtype=np.float32)
    std = np.asarray(stats["std"], dtype=np.float32)
    if mean.shape != (len(channels),) or std.shape != (len(channels),):
        raise InputError(f"{where}: mean/std must have {len(channels)} values")
    return mean, std


class ChipDataset:
    """``torch.utils.data.Dataset`` over chosen rows of a chip store.

    Item ``i`` is chip ``rows[i]`` as a dict: ``image`` float32 (C, S, S) normalised
    ``(x - mean) / (std + 1e-5)`` with NaN (no data) -> 0; ``landcover`` int64 (S, S)
    (255 = ignore); ``treecover`` float32 scalar (chip mean %, NaN if unknown);
    ``treecover_map`` float32 (S, S); ``row`` int; ``id`` str.

    Worker-safe: only the path, the rows and the statistics are pickled; every worker
    opens its own memory maps. ``__getitems__`` (used by ``DataLoader`` with a batch
    size) reads a batch in ascending row order and normalises it in one vectorised pass;
    pass ``collate_fn=collate_chips`` to get the batch tensors without copying them again.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike | ChipStore,
        rows: Sequence[int] | np.ndarray | None = None,
        stats: str | os.PathLike | Mapping[str, Any] | None = None,
    ) -> None:
        self.store = store_dir if isinstance(store_dir, ChipStore) else ChipStore(store_dir)
        n = self.store.n
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= n):
            raise SarsslError(f"chip store {self.store.path}: rows must lie in [0, {n})")
        if stats is None:
            c = len(self.store.channels)
            self.mean, self.std = np.zeros(c, np.float32), np.ones(c, np.float32) - np.float32(NORM_EPS)
        else:
            self.mean, self.std = load_stats(stats, self.store.channels)
        ids = self.store.index.set_index("row").loc[self.rows]
        self.ids = ids["id"].astype(str).to_numpy()
        self.tree_means = ids["treecover_mean"].to_numpy(dtype=np.float32)

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.__getitems__([i])[0]

    def _lut(self) -> np.ndarray:
        """(C, 65536) float32 table: float16 bit pattern -> normalised value (NaN/inf -> 0).

        Normalising through a table fuses float16 decoding, ``(x - mean) / (std + eps)``
        and the NaN -> 0 rule into one memory pass (the values are bit-identical to
        computing them in float32).
        """
        lut = getattr(self, "_lut_cache", None)
        if lut is None:
            values = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
            scale = (np.float32(1.0) / (self.std + np.float32(NORM_EPS))).astype(np.float32)
            with np.errstate(invalid="ignore", over="ignore"):
                lut = (values[None, :] - self.mean[:, None]) * scale[:, None]
            lut[~np.isfinite(lut)] = 0.0
            lut = np.ascontiguousarray(lut, dtype=np.float32)
            self._lut_cache = lut
        return lut

    def fill(self, indices: Sequence[int], image: Any, landcover: Any, tmap: Any) -> None:
        """Write items ``indices`` into preallocated batch tensors (row k = indices[k]).

        ``image`` float32 (B, C, S, S), ``landcover`` int64 (B, S, S), ``tmap`` float32
        (B, S, S), B >= len(indices). Releases the GIL (numba/numpy kernels), so several
        threads can fill parts of a batch in parallel.
        """
        idx = np.asarray(indices, dtype=np.int64)
        rows = self.rows[idx]
        lut = self._lut()
        x_map, lc_map, tc_map = self.store.x, self.store.landcover, self.store.treecover
        img_np, lc_np, tc_np = image.numpy(), landcover.numpy(), tmap.numpy()
        c = lut.shape[0]
        for k in np.argsort(rows, kind="stable"):  # ascending rows: sequential reads
            r = int(rows[k])
            _lut_normalise(x_map[r].view(np.uint16).reshape(c, -1), lut, img_np[k].reshape(c, -1))
            np.copyto(lc_np[k], lc_map[r], casting="unsafe")
            np.copyto(tc_np[k], tc_map[r], casting="unsafe")

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """A batch as a list of per-chip dicts whose tensors are views of batch tensors.

        Speed matters here (a 448 px chip is 4.8 MB of float16 and 12 MB of output):
        chips are read in ascending row order straight from the memory map and decoded
        into their slot of a preallocated batch tensor (no intermediate copies); in a
        DataLoader worker the batch tensors are allocated in shared memory, so handing
        them to the main process copies nothing. See :class:`ChipLoader` for a faster
        path that also avoids allocating fresh memory for every batch.
        """
        import torch

        idx = np.asarray(indices, dtype=np.int64)
        n = idx.size
        s = self.store.chip_size
        c = len(self.mean)
        shared = _in_worker()
        image = _empty((n, c, s, s), torch.float32, shared)
        landcover = _empty((n, s, s), torch.int64, shared)
        tmap = _empty((n, s, s), torch.float32, shared)
        self.fill(idx, image, landcover, tmap)
        rows = self.rows[idx]
        tmean = torch.from_numpy(self.tree_means[idx])
        return [
            {
                "image": image[k],
                "landcover": landcover[k],
                "treecover": tmean[k],
                "treecover_map": tmap[k],
                "row": int(rows[k]),
                "id": str(self.ids[i]),
            }
            for k, i in enumerate(idx)
        ]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lut_cache", None)  # 3 MB, rebuilt on demand in each worker
        return state


class ChipLoader:
    """Fast batch iterator over a :class:`ChipDataset` (CPU training without workers).

    ``DataLoader`` with worker processes allocates fresh (shared) memory for every batch,
    and first-touch page faults on 12 MB per 448 px chip cost more than decoding it.
    ``ChipLoader`` instead fills a small ring of preallocated batch tensors from
    ``threads`` background threads (the decode kernel releases the GIL) while the
    consumer works on the current batch, ``prefetch`` batches ahead.

    Batches are dicts like the default-collated DataLoader output: ``image`` (B, C, S, S)
    float32, ``landcover`` (B, S, S) int64, ``treecover`` (B,) float32,
    ``treecover_map`` (B, S, S) float32, ``row`` (B,) int64, ``id`` list of str.

    **The tensors of a batch are reused**: they stay valid until the batch after the
    next one is requested. Use ``copy=True`` (or ``.clone()``) to keep them longer.
    Shuffling is deterministic: epoch ``e`` uses ``numpy.random.default_rng([seed, e])``.
    """

    def __init__(
        self,
        dataset: ChipDataset,
        batch_size: int = 32,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        threads: int = 2,
        prefetch: int = 2,
        copy: bool = False,
    ) -> None:
        if batch_size < 1 or threads < 1 or prefetch < 1:
            raise SarsslError("ChipLoader: batch_size, threads and prefetch must be >= 1")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.drop_last = drop_last
        self.threads = int(threads)
        self.prefetch = int(prefetch)
        self.copy = copy
        self.epoch = 0
        self._ring: list[tuple[Any, Any, Any]] | None = None

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _buffers(self) -> list[tuple[Any, Any, Any]]:
        import torch

        if self._ring is None:
            b, s, c = self.batch_size, self.dataset.store.chip_size, len(self.dataset.mean)
            self._ring = [
                (
                    torch.empty((b, c, s, s), dtype=torch.float32),
                    torch.empty((b, s, s), dtype=torch.int64),
                    torch.empty((b, s, s), dtype=torch.float32),
                )
                for _ in range(self.prefetch + 2)
            ]
        return self._ring

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch
        from concurrent.futures import ThreadPoolExecutor

        n = len(self.dataset)
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)
        )
        self.epoch += 1
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        ring = self._buffers()
        ds = self.dataset

        def submit(pool: ThreadPoolExecutor, i: int) -> list[Any]:
            img, lc, tc = ring[i % len(ring)]
            idx = batches[i]
            # split the batch between the threads: each fills its own slice of the buffers
            parts = np.array_split(np.arange(len(idx)), min(self.threads, len(idx)))
            return [
                pool.submit(ds.fill, idx[p], img[p[0] : p[-1] + 1], lc[p[0] : p[-1] + 1], tc[p[0] : p[-1] + 1])
                for p in parts
                if len(p)
            ]

        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="chiploader") as pool:
            pending = {i: submit(pool, i) for i in range(min(self.prefetch, len(batches)))}
            for i, idx in enumerate(batches):
                nxt = i + self.prefetch
                if nxt < len(batches):
                    pending[nxt] = submit(pool, nxt)
                for f in pending.pop(i):
                    f.result()
                img, lc, tc = ring[i % len(ring)]
                k = len(idx)
                batch = {
                    "image": img[:k],
                    "landcover": lc[:k],
                    "treecover": torch.from_numpy(ds.tree_means[idx].copy()),
                    "treecover_map": tc[:k],
                    "row": torch.from_numpy(ds.rows[idx].copy()),
                    "id": [str(v) for v in ds.ids[idx]],
                }
                if self.copy:
                    batch = {key: v.clone() if isinstance(v, torch.Tensor) else v for key, v in batch.items()}
                yield batch


def _lut_normalise_py(bits: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:
    """out[c, i] = lut[c, bits[c, i]] (pure NumPy fallback of the numba kernel)."""
    for ch in range(bits.shape[0]):
        np.take(lut[ch], bits[ch], out=out[ch])


def _lut_loop(bits: np.ndarray, lut: np.ndarray, out: np.ndarray) -> None:
    """out[c, i] = lut[c, bits[c, i]]: one fused decode + normalise pass (numba kernel)."""
    for ch in range(bits.shape[0]):
        table = lut[ch]
        src = bits[ch]
        dst = out[ch]
        for i in range(src.shape[0]):
            dst[i] = table[src[i]]


try:
    import numba

    _lut_normalise = numba.njit(nogil=True, cache=True, boundscheck=False)(_lut_loop)
except ImportError:  # pragma: no cover - numba is a dependency
    _lut_normalise = _lut_normalise_py


def _in_worker() -> bool:
    import torch.utils.data

    return torch.utils.data.get_worker_info() is not None


def _empty(shape: tuple[int, ...], dtype: Any, shared: bool) -> Any:
    """An uninitialised tensor, allocated directly in shared memory when ``shared``."""
    import torch

    if not shared:
        return torch.empty(shape, dtype=dtype)
    numel = int(np.prod(shape))
    storage = torch.UntypedStorage._new_shared(numel * torch.empty((), dtype=dtype).element_size())
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _batch_base(tensors: Sequence[Any]) -> Any | None:
    """The batch tensor the per-chip views were cut from, if they cover it exactly in order."""
    import torch

    first = tensors[0]
    n = len(tensors)
    storage = first.untyped_storage()
    numel = first.numel()
    if not first.is_contiguous() or first.storage_offset() != 0:
        return None
    if storage.nbytes() != n * numel * first.element_size():
        return None
    for k, t in enumerate(tensors):
        if (
            t.untyped_storage().data_ptr() != storage.data_ptr()
            or t.storage_offset() != k * numel
            or t.shape != first.shape
            or not t.is_contiguous()
        ):
            return None
    return torch.empty(0, dtype=first.dtype).set_(storage, 0, (n, *first.shape))


def collate_chips(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate ChipDataset items: tensors cut from one batch tensor are returned as that
    tensor (no copy); anything else goes through ``torch.utils.data.default_collate``."""
    import torch
    from torch.utils.data import default_collate

    if not batch:
        return default_collate(batch)
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if isinstance(values[0], torch.Tensor) and values[0].dim() > 0:
            base = _batch_base(values)
            out[key] = base if base is not None else torch.stack(values)
        else:
            out[key] = default_collate(values)
    return out


# --------------------------------------------------------------------------------------
# raw batches: the GPU-feeding path (normalise on the consumer side)
# --------------------------------------------------------------------------------------
def block_batches(
    rows: Sequence[int] | np.ndarray,
    batch_size: int,
    *,
    block_rows: int = 8,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
) -> list[np.ndarray]:
    """Split ``rows`` into batches made of shuffled fixed-size blocks of neighbouring rows.

    The rows are sorted and cut into blocks of ``block_rows`` consecutive entries; with
    ``shuffle`` the order of the blocks is permuted with
    ``numpy.random.default_rng([seed, epoch])`` and the concatenated blocks are cut into
    batches of ``batch_size``. A block of a store's rows is (usually) one contiguous row
    range of the arrays, i.e. one sequential read of ``block_rows`` chips instead of
    ``block_rows`` random ones, while every epoch still mixes blocks from all over the
    area into each batch. Neighbouring chips are spatially adjacent, so a block is a
    small spatial cluster: keep ``block_rows`` well below ``batch_size`` (the default 8
    of a batch of 32 or more mixes at least 4 places per batch); ``block_rows=1`` is a
    plain per-chip shuffle.
    """
    if batch_size < 1 or block_rows < 1:
        raise SarsslError("block_batches: batch_size and block_rows must be >= 1")
    r = np.sort(np.asarray(rows, dtype=np.int64))
    blocks = [r[i : i + block_rows] for i in range(0, r.size, block_rows)]
    if shuffle and blocks:
        perm = np.random.default_rng([int(seed), int(epoch)]).permutation(len(blocks))
        blocks = [blocks[i] for i in perm]
    order = np.concatenate(blocks) if blocks else r
    batches = [order[i : i + batch_size] for i in range(0, order.size, batch_size)]
    if drop_last and batches and batches[-1].size < batch_size:
        batches.pop()
    return batches


def contiguous_runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """``(position, first row, length)`` of the maximal runs ``r, r+1, ...`` in ``rows``."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [rows.size]])
    return [(int(a), int(rows[a]), int(b - a)) for a, b in zip(starts, ends)]


class ChipBatches:
    """Map-style dataset whose item ``i`` is **batch** ``i`` of the current epoch, raw.

    The fast path for training on an accelerator: batches are read as contiguous row
    ranges (see :func:`block_batches`) with one memory-map slice copy per run of rows and
    no per-chip Python work, and are returned *undecoded*: ``x`` keeps the store dtype
    (float16 dB, NaN = no data) so the host moves half the bytes of float32 and the
    normalisation runs on the device (:class:`Normalize`).

    Item: ``{"x": (B, C, S, S) store dtype, "landcover": uint8 (B, S, S),
    "treecover_map": float16 (B, S, S), "treecover": float32 (B,), "row": int64 (B,)}``
    (``labels=False`` leaves out the two label maps). Use it with
    ``DataLoader(batches, batch_size=None, num_workers=2, pin_memory=True)`` (call
    :meth:`set_epoch` before each epoch; non-persistent workers pick it up), or with
    :class:`BatchLoader` (threads, reused pinned buffers: faster). Deterministic: the
    batches of epoch ``e`` depend only on ``(seed, e)``.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike | ChipStore,
        rows: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 32,
        *,
        block_rows: int = 8,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        labels: bool = True,
    ) -> None:
        self.store = store_dir if isinstance(store_dir, ChipStore) else ChipStore(store_dir)
        n = self.store.n
        self.rows = np.arange(n, dtype=np.int64) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= n):
            raise SarsslError(f"chip store {self.store.path}: rows must lie in [0, {n})")
        self.batch_size = int(batch_size)
        self.block_rows = int(block_rows)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.labels = bool(labels)
        self.epoch = 0
        tm = self.store.index.set_index("row")["treecover_mean"]
        self.tree_means = tm.reindex(np.arange(n)).to_numpy(dtype=np.float32)
        self._plan: tuple[int, list[np.ndarray]] | None = None

    # plan --------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of epoch ``epoch`` (call before creating the iterator)."""
        self.epoch = int(epoch)

    def batches(self) -> list[np.ndarray]:
        """Rows of every batch of the current epoch (cached per epoch)."""
        if self._plan is None or self._plan[0] != self.epoch:
            plan = block_batches(
                self.rows, self.batch_size, block_rows=self.block_rows, shuffle=self.shuffle,
                seed=self.seed, epoch=self.epoch, drop_last=self.drop_last,
            )
            self._plan = (self.epoch, plan)
        return self._plan[1]

    def __len__(self) -> int:
        n = self.rows.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # reading -----------------------------------------------------------------------------
    def buffers(self, n: int | None = None, *, shared: bool = False, pin: bool = False) -> dict[str, Any]:
        """Empty batch tensors for ``n`` chips (default ``batch_size``) in the store dtypes."""
        import torch

        n = self.batch_size if n is None else int(n)
        s = self.store.chip_size
        c = len(self.store.channels)
        x_dtype = torch.from_numpy(np.empty(0, self.store.x.dtype)).dtype
        shapes = {"x": ((n, c, s, s), x_dtype)}
        if self.labels:
            shapes["landcover"] = ((n, s, s), torch.uint8)
            shapes["treecover_map"] = ((n, s, s), torch.float16)
        out = {}
        for key, (shape, dtype) in shapes.items():
            t = _empty(shape, dtype, shared)
            out[key] = t.pin_memory() if pin else t
        return out

    def _arrays(self) -> dict[str, tuple[int, int, int]]:
        """Per array: (file descriptor, byte offset of row 0, bytes per row), opened lazily
        in each process (descriptors are never pickled)."""
        files = getattr(self, "_files", None)
        if files is None or files[0] != os.getpid():
            names = {"x": self.store.x}
            if self.labels:
                names["landcover"] = self.store.landcover
                names["treecover_map"] = self.store.treecover
            table = {}
            for key, arr in names.items():
                if not isinstance(arr, np.memmap):  # empty store: nothing to read
                    continue
                fd = os.open(arr.filename, os.O_RDONLY)
                table[key] = (fd, int(arr.offset), int(arr[0].nbytes))
            files = (os.getpid(), table)
            self._files = files
        return files[1]

    def read_into(self, rows: np.ndarray, out: Mapping[str, Any], start: int = 0) -> None:
        """Copy chips ``rows`` into ``out[key][start : start + len(rows)]``.

        One ``pread`` per contiguous run of rows (a block) and array, straight into the
        batch buffer: the kernel copies from the page cache once, without the page-table
        faults of touching a memory map page by page. Releases the GIL, so threads can
        fill disjoint parts of a batch at the same time.
        """
        files = self._arrays()
        for pos, r0, k in contiguous_runs(rows):
            for key, (fd, offset, row_bytes) in files.items():
                dst = out[key].numpy()[start + pos : start + pos + k]
                view = memoryview(dst.reshape(-1).view(np.uint8))
                _pread_full(fd, view, offset + r0 * row_bytes, f"{self.store.path}/{key}")

    def meta(self, rows: np.ndarray) -> dict[str, Any]:
        """The small per-chip fields of a batch (new tensors, not reused)."""
        import torch

        return {"treecover": torch.from_numpy(self.tree_means[rows]), "row": torch.from_numpy(rows.copy())}

    def __getitem__(self, i: int) -> dict[str, Any]:
        plan = self.batches()
        if not 0 <= i < len(plan):
            raise IndexError(i)
        rows = plan[i]
        out = self.buffers(rows.size, shared=_in_worker())
        self.read_into(rows, out)
        return {**out, **self.meta(rows)}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_plan"] = None
        state.pop("_files", None)
        return state

    def __del__(self) -> None:
        files = getattr(self, "_files", None)
        if files is not None and files[0] == os.getpid():
            for fd, _, _ in files[1].values():
                try:
                    os.close(fd)
                except OSError:
                    pass


def _pread_full(fd: int, view: memoryview, offset: int, where: str) -> None:
    """Read exactly ``len(view)`` bytes at ``offset`` (``pread`` may return fewer)."""
    done = 0
    total = len(view)
    while done < total:
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise InputError(f"{where}: file ends before byte {offset + total} (truncated chip store?)")
        done += got


class BatchLoader:
    """Iterate over :class:`ChipBatches` with threads filling a ring of reused buffers.

    ``threads`` background threads copy the blocks of the next ``prefetch`` batches
    straight from the memory maps into preallocated (pinned, when CUDA is available)
    batch tensors, so there are no per-batch allocations, page faults or inter-process
    transfers. With ``device`` the batch is moved there (non-blocking) and a CUDA event
    guards the host buffer against being refilled before the copy has finished.

    **Host tensors are reused**: a batch stays valid until ``prefetch + 1`` further
    batches have been requested (device tensors are fresh). The ``k``-th ``iter()``
    runs epoch ``self.epoch`` (starting at the dataset's epoch, +1 per iteration; set
    ``loader.epoch`` to resume), i.e. the shuffle of ``(seed, epoch)``.
    """

    def __init__(
        self,
        batches: ChipBatches,
        *,
        threads: int = 2,
        prefetch: int = 2,
        pin_memory: bool | None = None,
        device: Any = None,
    ) -> None:
        import torch

        if threads < 1 or prefetch < 1:
            raise SarsslError("BatchLoader: threads and prefetch must be >= 1")
        self.batches = batches
        self.threads = int(threads)
        self.prefetch = int(prefetch)
        self.device = torch.device(device) if device is not None else None
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self._ring: list[dict[str, Any]] | None = None
        self.epoch = batches.epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import torch
        from concurrent.futures import ThreadPoolExecutor

        ds = self.batches
        ds.set_epoch(self.epoch)
        self.epoch += 1
        plan = ds.batches()
        ds._arrays()  # open the files once, before the threads share them
        if self._ring is None:
            self._ring = [ds.buffers(pin=self.pin_memory) for _ in range(self.prefetch + 2)]
        ring = self._ring
        events: list[Any] = [None] * len(ring)
        cuda = self.device is not None and self.device.type == "cuda"

        def submit(pool: ThreadPoolExecutor, i: int) -> list[Any]:
            slot = i % len(ring)
            if events[slot] is not None:
                events[slot].synchronize()  # the previous H2D copy from this buffer is done
                events[slot] = None
            rows = plan[i]
            parts = [p for p in np.array_split(np.arange(rows.size), min(self.threads, rows.size)) if p.size]
            return [pool.submit(ds.read_into, rows[p[0] : p[-1] + 1], ring[slot], int(p[0])) for p in parts]

        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="batchloader") as pool:
            pending = {i: submit(pool, i) for i in range(min(self.prefetch, len(plan)))}
            for i, rows in enumerate(plan):
                nxt = i + self.prefetch
                if nxt < len(plan):
                    pending[nxt] = submit(pool, nxt)
                for f in pending.pop(i):
                    f.result()
                slot = i % len(ring)
                k = rows.size
                batch = {key: t[:k] for key, t in ring[slot].items()}
                batch.update(ds.meta(rows))
                if self.device is not None:
                    batch = {key: t.to(self.device, non_blocking=True) for key, t in batch.items()}
                    if cuda:
                        ev = torch.cuda.Event()
                        ev.record()
                        events[slot] = ev
                yield batch


def normalize_batch(x: Any, mean: Any, std: Any, eps: float = NORM_EPS, dtype: Any = None) -> Any:
    """``(x - mean) / (std + eps)`` per channel (dim 1) with NaN/inf (no data) -> 0.

    ``x`` is a raw (B, C, H, W) tensor from :class:`ChipBatches` (float16 dB) on any
    device; the result is ``dtype`` (default float32). Equals :class:`ChipDataset`'s
    ``image`` up to float32 rounding (at most 1 ulp).
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    scale = 1.0 / (torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) + eps)
    y = (x.to(torch.float32) - mean) * scale
    return torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0).to(dtype)


def _normalize_module_class() -> type:
    import torch

    class Normalize(torch.nn.Module):
        """On-device normalisation of raw chip batches (see :func:`normalize_batch`).

        ``Normalize.from_stats("stats.json")`` or ``Normalize(mean, std)``; the
        statistics are buffers, so ``.to(device)`` moves them with the model.
        """

        def __init__(self, mean: Any, std: Any, eps: float = NORM_EPS, dtype: Any = None) -> None:
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(np.asarray(mean, np.float32)).view(1, -1, 1, 1))
            self.register_buffer(
                "scale", 1.0 / (torch.as_tensor(np.asarray(std, np.float32)).view(1, -1, 1, 1) + eps)
            )
            self.dtype = torch.float32 if dtype is None else dtype

        @classmethod
        def from_stats(cls, stats: str | os.PathLike | Mapping[str, Any], channels: Sequence[str] = CHANNELS, **kw: Any) -> "Normalize":
            mean, std = load_stats(stats, channels)
            return cls(mean, std, **kw)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = (x.to(torch.float32) - self.mean) * self.scale
            return torch.nan_to_num(y, nan=0.0, posinf=0.0, neginf=0.0).to(self.dtype)

    Normalize.__module__ = __name__
    Normalize.__qualname__ = "Normalize"
    return Normalize


def __getattr__(name: str) -> Any:
    # ``Normalize`` subclasses torch.nn.Module: build it on first use so that importing
    # this module (e.g. by ``sarssl chips``) does not import torch.
    if name == "Normalize":
        cls = _normalize_module_class()
        globals()["Normalize"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
