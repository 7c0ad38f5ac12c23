"""Shared I/O: atomic writes, GeoTIFF/COG output, JSON, run records.

Every file a stage produces goes through :func:`atomic_path`: the data is written to a
temporary sibling and renamed into place only when complete, so a failed or killed job
never leaves a half-written output behind and a resumed run starts cleanly.

A write that fails must also *raise*, or the incomplete temporary is renamed into place as
if it were complete. GDAL reports some write errors only to its error handler, which
rasterio sends to Python logging instead of raising them: those raised while blocks cached
in memory are flushed, that is while a dataset is closed (a full disk typically shows up
there), and some not at all (libtiff prints them to stderr; the COG driver then finishes
with the file cut short). Every raster write therefore runs inside
:func:`raise_gdal_write_errors`, which turns such messages, and the exceptions rasterio
does raise, into an :class:`~sarssl.errors.OutputError` naming the file, and every GeoTIFF
written is checked to be complete (:func:`check_tiff_complete`) before it is renamed.
Memory-mapped outputs are :func:`preallocate`-d, so a full disk is an ``ENOSPC`` error up
front rather than a SIGBUS when a page of the map is first written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .errors import OutputError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On any exception the temporary file (or directory) is removed and ``path`` is left as
    it was. The temporary keeps the final suffix so format drivers recognise it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # let the writer create it (some drivers refuse to overwrite)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory: build it under a temporary name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------
# failed writes: GDAL errors that are only logged, full disks
# --------------------------------------------------------------------------------------
NO_SPACE_MARGIN = 64 * 2**20
"""A write error with less free space than this left on the output's file system is
reported as "no space left on device": GDAL's messages ("TIFFAppendToStrip:Write error at
scanline 0") do not say why a write failed, and the errno is lost on the way."""

_GDAL_FAILURE = "GDAL signalled an error: "
_GDAL_LOGGERS = ("rasterio._env", "rasterio._err")
_tap_lock = threading.Lock()
_tap_captures: dict[int, list[list[str]]] = {}  # thread ident -> message lists being filled
_tap_saved: dict[str, tuple[int, int]] = {}  # logger -> (own level, effective level) before


class _GdalErrorTap(logging.Filter):
    """Filter on rasterio's GDAL-error loggers that copies GDAL failures (CE_Failure, logged
    at INFO as "GDAL signalled an error: ...", and anything at ERROR or above) into the
    captures of the thread that logged them, and passes records on only at the level the
    logger had before (so installing the tap changes no one's log output)."""

    def filter(self, record: logging.LogRecord) -> bool:
        failure = isinstance(record.msg, str) and record.msg.startswith(_GDAL_FAILURE)
        if failure or record.levelno >= logging.ERROR:
            captures = _tap_captures.get(record.thread)
            if captures:
                args = record.args
                if failure and isinstance(args, tuple) and len(args) == 2:
                    text = str(args[1])
                else:
                    text = record.getMessage()
                for messages in captures:
                    messages.append(text)
        saved = _tap_saved.get(record.name)
        return saved is None or record.levelno >= saved[1]


_tap = _GdalErrorTap()


def _tap_push(messages: list[str]) -> None:
    """Start filling ``messages`` with the GDAL failures this thread logs."""
    with _tap_lock:
        if not _tap_captures:  # first capture: install the filter, let INFO records through
            for name in _GDAL_LOGGERS:
                logger = logging.getLogger(name)
                _tap_saved[name] = (logger.level, logger.getEffectiveLevel())
                if logger.getEffectiveLevel() > logging.INFO:
                    logger.setLevel(logging.INFO)
                logger.addFilter(_tap)
        _tap_captures.setdefault(threading.get_ident(), []).append(messages)


def _tap_pop(messages: list[str]) -> None:
    """Stop filling ``messages``; the last capture restores the loggers."""
    with _tap_lock:
        ident = threading.get_ident()
        stack = _tap_captures.get(ident, [])
        for i in range(len(stack) - 1, -1, -1):
            if stack[i] is messages:
                del stack[i]
                break
        if not stack:
            _tap_captures.pop(ident, None)
        if not _tap_captures:
            for name, (level, _effective) in _tap_saved.items():
                logger = logging.getLogger(name)
                logger.removeFilter(_tap)
                logger.setLevel(level)
            _tap_saved.clear()


def gdal_message(exc: BaseException) -> str:
    """The message of a rasterio/GDAL exception, with GDAL's own message when rasterio's
    only says "See previous exception for details"."""
    parts: list[str] = []
    e: BaseException | None = exc
    for _ in range(8):  # the exception and the ones it was raised from
        if e is None:
            break
        text = str(e).strip()
        if text and "See previous exception" not in text:
            parts.append(text)
        e = e.__cause__ or e.__context__
    return "; ".join(dict.fromkeys(parts)) or type(exc).__name__


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes an unprivileged process may still write on the file system holding ``path``
    (or its nearest existing parent); None where that cannot be told."""
    p = Path(path)
    while not p.exists() and p.parent != p:
        p = p.parent
    try:
        st = os.statvfs(p)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # pragma: no cover


def is_no_space(exc: BaseException) -> bool:
    """Whether an exception says the file system (or a quota) is full."""
    return getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (
        "no space left on device" in str(exc).lower()
    )


_TMP_NAME = re.compile(r"^\.(?P<stem>.+)\.[a-z0-9_]{8}\.tmp(?P<suffix>(\.[^.]+)?)$")


def published_name(path: str | os.PathLike) -> Path:
    """The path a file written under :func:`atomic_path` / :func:`atomic_dir` temporaries
    gets once they are renamed (``d/.store.k3j5x9_a.tmp/.index.abcd1234.tmp.parquet`` ->
    ``d/store/index.parquet``); other paths unchanged."""
    parts = []
    for part in Path(path).parts:
        m = _TMP_NAME.match(part)
        parts.append(m["stem"] + m["suffix"] if m else part)
    return Path(*parts)


def output_error(path: str | os.PathLike, detail: str, *, no_space: bool = False) -> OutputError:
    """The :class:`OutputError` for a failed write of ``path``: "no space left on device"
    (``ENOSPC``) when ``no_space`` or the file system is (nearly) full, else ``EIO``."""
    free = free_bytes(Path(path).parent)
    if free is not None and free < NO_SPACE_MARGIN:
        no_space = True
    no_space = no_space or "no space left on device" in detail.lower()
    if no_space:
        left = f" ({_size(free)} free)" if free is not None else ""
        return OutputError(
            f"{path}: no space left on device{left}; {detail}", filename=path, errno=errno.ENOSPC
        )
    return OutputError(f"{path}: could not be written ({detail})", filename=path, errno=errno.EIO)


@contextlib.contextmanager
def raise_gdal_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Raise an :class:`~sarssl.errors.OutputError` naming ``path`` when GDAL fails while
    the block writes it: the rasterio/GDAL exceptions raised inside, and the GDAL errors
    rasterio only logs (those of flushing and closing a dataset). Put it *inside* the
    :func:`atomic_path` block so that the temporary is removed, not renamed into place.

    A rasterio environment is entered (when none is active) so that GDAL errors reach
    rasterio's handler, not GDAL's default one, which prints them. Errors are collected
    per thread: concurrent writers in other threads do not see each other's.
    """
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioIOError

    messages: list[str] = []
    env = rasterio.Env() if rasterio.env.hasenv() else rasterio.Env.from_defaults()
    _tap_push(messages)
    try:
        with env:
            try:
                yield
            except (CPLE_BaseError, RasterioIOError, SystemError) as exc:
                # rasterio raises SystemError("Unknown GDAL Error") when a GDAL call fails
                # without an error message (one GDAL wrote to stderr only)
                if isinstance(exc, SystemError) and "GDAL" not in str(exc):
                    raise
                raise output_error(path, _gdal_detail([*messages, gdal_message(exc)])) from exc
    finally:
        _tap_pop(messages)
    if messages:
        raise output_error(path, _gdal_detail(messages))


def _gdal_detail(messages: Sequence[str], keep: int = 3) -> str:
    """GDAL's first few distinct messages (one failed write often cascades into many)."""
    unique = list(dict.fromkeys(m.strip() for m in messages if m.strip()))
    more = f" (+{len(unique) - keep} more)" if len(unique) > keep else ""
    return "GDAL: " + "; ".join(unique[:keep]) + more


_TIFF_OFFSETS = {273: 279, 324: 325}  # Strip/TileOffsets -> Strip/TileByteCounts
_TIFF_TYPES = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8


def tiff_problem(path: str | os.PathLike) -> str | None:
    """Why the (Big)TIFF at ``path`` is incomplete, or None when it is complete: every IFD,
    and every strip or tile of every image (overviews included), lies inside the file.

    GDAL does not report every failed write: libtiff prints some (``_tiffWriteProc: No
    space left on device``) to stderr only, and the COG driver then finishes "successfully"
    with a file cut short. Reading the IFDs and the offset tables is cheap (no pixel data).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(16)
        # a COG's "ghost area" may say that every tile is followed by 4 trailer bytes
        trailer = 4 if b"BLOCK_TRAILER=LAST_4_BYTES_REPEATED" in f.read(1024) else 0
        bo = {b"II": "<", b"MM": ">"}.get(head[:2])
        magic = struct.unpack(bo + "H", head[2:4])[0] if bo and len(head) >= 8 else None
        if magic == 42:
            big, off = False, struct.unpack(bo + "I", head[4:8])[0]
        elif magic == 43 and len(head) == 16:
            big, off = True, struct.unpack(bo + "Q", head[8:16])[0]
        else:
            return f"no TIFF header ({size} bytes)"
        count_fmt, entry_len, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
        inline = 8 if big else 4
        seen: set[int] = set()
        while off:
            image = len(seen) + 1
            if off in seen or len(seen) > 100_000:
                return f"IFD {image}: loop at byte {off}"
            seen.add(off)
            f.seek(off)
            raw = f.read(struct.calcsize(count_fmt))
            if off + len(raw) > size or len(raw) < struct.calcsize(count_fmt):
                return f"IFD {image} at byte {off} lies beyond the end of the file ({size} bytes)"
            n = struct.unpack(bo + count_fmt, raw)[0]
            raw = f.read(n * entry_len + struct.calcsize(next_fmt))
            if len(raw) < n * entry_len + struct.calcsize(next_fmt):
                return f"IFD {image} at byte {off} is cut off by the end of the file ({size} bytes)"
            arrays: dict[int, np.ndarray] = {}
            for i in range(n):
                e = raw[i * entry_len : (i + 1) * entry_len]
                tag, typ = struct.unpack(bo + "HH", e[:4])
                if tag not in (273, 279, 324, 325) or typ not in _TIFF_TYPES:
                    continue
                count = struct.unpack(bo + ("Q" if big else "I"), e[4 : 4 + inline])[0]
                dtype = np.dtype(bo + _TIFF_TYPES[typ])
                nbytes = count * dtype.itemsize
                value = e[4 + inline :]
                if nbytes > inline:
                    where = struct.unpack(bo + ("Q" if big else "I"), value)[0]
                    if where + nbytes > size:
                        return (
                            f"IFD {image}: the values of tag {tag} lie beyond the end of the "
                            f"file ({size} bytes)"
                        )
                    pos = f.tell()
                    f.seek(where)
                    value = f.read(nbytes)
                    f.seek(pos)
                arrays[tag] = np.frombuffer(value[:nbytes], dtype=dtype).astype(np.uint64)
            for off_tag, len_tag in _TIFF_OFFSETS.items():
                if off_tag in arrays and len_tag in arrays:
                    ends = arrays[off_tag] + arrays[len_tag] + np.uint64(trailer)
                    bad = np.flatnonzero((arrays[len_tag] > 0) & (ends > size))
                    if bad.size:
                        what = "tile" if off_tag == 324 else "strip"
                        return (
                            f"image {image}: {bad.size} {what}(s) lie beyond the end of the "
                            f"file (up to byte {int(ends.max())}, the file has {size})"
                        )
            off = struct.unpack(bo + next_fmt, raw[n * entry_len :])[0]
    return None


def check_tiff_complete(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Raise an :class:`~sarssl.errors.OutputError` naming ``path`` when the TIFF written to
    ``tmp`` (its temporary) is incomplete (see :func:`tiff_problem`)."""
    problem = tiff_problem(tmp)
    if problem is not None:
        raise output_error(path, f"the file written is incomplete: {problem}")


def preallocate(path: str | os.PathLike, length: int | None = None) -> None:
    """Allocate the disk blocks of ``path`` (its first ``length`` bytes, default its size).

    For files written through a memory map: on a full disk a store into a page with no
    block behind it kills the process with SIGBUS (no exception, no clean-up); allocated
    first, the failure is an ``OSError`` (``ENOSPC``, naming the file) here instead. File
    systems that cannot preallocate are left as they are.
    """
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None:  # pragma: no cover - not on macOS
        return
    fd = os.open(path, os.O_RDWR)
    try:
        n = os.fstat(fd).st_size if length is None else int(length)
        if n > 0:
            fallocate(fd, 0, n)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            log.debug("%s: cannot preallocate (%s)", path, exc)
            return
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno or 0), str(path)) from exc
    finally:
        os.close(fd)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_geotiff(
    path: str | os.PathLike,
    data: np.ndarray,
    *,
    crs: Any,
    transform: Any,
    nodata: float | int | None = None,
    band_names: Sequence[str] | None = None,
    tags: dict[str, Any] | None = None,
    band_tags: Sequence[dict[str, Any]] | None = None,
    cog: bool = True,
    compress: str = "deflate",
    predictor: int | None = None,
    blocksize: int = 512,
) -> None:
    """Write a (bands, rows, cols) or (rows, cols) array as a (cloud-optimised) GeoTIFF.

    Written atomically. ``cog=True`` uses GDAL's COG driver (tiled, overviews); otherwise a
    tiled GTiff. Band descriptions come from ``band_names``; dataset tags from ``tags``.
    A failed write (a full disk) raises an :class:`~sarssl.errors.OutputError` naming
    ``path``, and nothing is left behind.
    """
    import rasterio
    import rasterio.shutil
    from rasterio.io import MemoryFile

    if data.ndim == 2:
        data = data[None]
    count, height, width = data.shape
    dtype = data.dtype
    if predictor is None:
        predictor = 3 if np.issubdtype(dtype, np.floating) else 2
    profile = dict(
        driver="GTiff",
        dtype=dtype,
        count=count,
        height=height,
        width=width,
        crs=crs,
        transform=transform,
        nodata=nodata,
    )
    tag_strings = {k: str(v) for k, v in (tags or {}).items()}
    tag_strings.setdefault("SARSSL_VERSION", __version__)
    # the checks inside atomic_path: a failed write raises before the rename, and the
    # temporary is removed
    with atomic_path(path, suffix=".tif") as tmp:
        with raise_gdal_write_errors(path):
            if cog:
                with MemoryFile() as mem:
                    tiling = dict(tiled=True, blockxsize=blocksize, blockysize=blocksize)
                    with mem.open(**profile, **tiling) as ds:
                        _fill(ds, data, band_names, tag_strings, band_tags)
                    with mem.open() as src:
                        rasterio.shutil.copy(
                            src,
                            tmp,
                            driver="COG",
                            compress=compress.upper(),
                            predictor=str(predictor),
                            blocksize=blocksize,
                            overview_resampling="average",
                            BIGTIFF="IF_SAFER",
                        )
            else:
                with rasterio.open(
                    tmp,
                    "w",
                    **profile,
                    tiled=True,
                    blockxsize=min(blocksize, _tile(width)),
                    blockysize=min(blocksize, _tile(height)),
                    compress=compress,
                    predictor=predictor,
                    BIGTIFF="IF_SAFER",
                ) as ds:
                    _fill(ds, data, band_names, tag_strings, band_tags)
        check_tiff_complete(tmp, path)


def _tile(n: int) -> int:
    return max(16, min(512, 16 * ((n + 15) // 16)))


def _fill(ds, data, band_names, tags, band_tags) -> None:
    ds.write(data)
    ds.update_tags(**tags)
    for i in range(data.shape[0]):
        if band_names is not None:
            ds.set_band_description(i + 1, band_names[i])
        if band_tags is not None and band_tags[i]:
            ds.update_tags(i + 1, **{k: str(v) for k, v in band_tags[i].items()})


def git_revision(cwd: str | os.PathLike | None = None) -> str | None:
    """The git commit of the working tree (with '-dirty' when modified), or None."""
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def run_record(config: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What every run records beside its outputs: resolved config, versions, git revision."""
    import platform
    import sys

    rec = {
        "sarssl_version": __version__,
        "git_revision": git_revision(Path(__file__).resolve().parent),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "config": config,
    }
    rec.update(extra)
    return rec


def parse_bbox(text: str | Sequence[float]) -> tuple[float, float, float, float]:
    """Parse 'W,S,E,N' (lon/lat degrees) and check it is a sensible box."""
    from .errors import SarsslError

    if isinstance(text, str):
        try:
            vals = [float(v) for v in text.split(",")]
        except ValueError as exc:
            raise SarsslError(f"bounding box {text!r}: expected four numbers W,S,E,N") from exc
    else:
        vals = [float(v) for v in text]
    if len(vals) != 4:
        raise SarsslError(f"bounding box {text!r}: expected four numbers W,S,E,N")
    w, s, e, n = vals
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise SarsslError(f"bounding box {text!r}: need -180<=W<E<=180 and -90<=S<N<=90")
    return w, s, e, n
