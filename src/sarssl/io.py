"""Shared I/O: atomic writes, GeoTIFF/COG output, JSON, run records.

Every file a stage produces goes through :func:`atomic_path`: the data is written to a
temporary sibling and renamed into place only when complete, so a failed or killed job
never leaves a half-written output behind and a resumed run starts cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__


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
    with atomic_path(path, suffix=".tif") as tmp:
        if cog:
            with MemoryFile() as mem:
                with mem.open(**profile, tiled=True, blockxsize=blocksize, blockysize=blocksize) as ds:
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
