"""Failing I/O is an error, never a success: disk full and GDAL write errors while rasters
or chip stores are written, corrupt label rasters, labels that cover too little of an area.

Two ways to make writes fail:

- **a real full file system**: a small tmpfs mounted for the test (needs root; the test is
  skipped, saying so, where mounting is not permitted), filled by a preallocated file so
  that a chosen number of bytes is left;
- **always**: a file-size limit (``RLIMIT_FSIZE``, SIGXFSZ ignored) makes GDAL's own writes
  fail with EFBIG at a chosen size, a monkeypatched ``os.posix_fallocate`` reports ENOSPC,
  or a GDAL error is injected the way rasterio reports one raised during a close.

Writers are swept over many amounts of space: every attempt must either raise an error that
names the file (and says "no space left on device" when that is the cause) and leave neither
the output nor a temporary file, or succeed with an output byte-identical to an unhindered
write. A truncated output renamed into place, a raw GDAL traceback or a SIGBUS fail.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil  # noqa: F401  (works around sarssl.io not importing it)
from affine import Affine

from sarssl import CHANNELS
from sarssl.cli import main
from sarssl.data.chips import make_chips
from sarssl.data.labels import read_landcover, read_treecover
from sarssl.errors import InputError, SarsslError
from sarssl.io import write_geotiff
from sarssl.sar.grid import Grid, area_grid

try:  # the Rome product of the preprocess tests (shared data), for the end-to-end case
    from test_preprocess import AOI as ROME_AOI
    from test_preprocess import DEM as ROME_DEM
    from test_preprocess import product  # noqa: F401  (a fixture)
except Exception:  # pragma: no cover - e.g. the shared data are missing
    ROME_AOI = ROME_DEM = None

CRS = "EPSG:32633"
TRANSFORM = Affine(10, 0, 500000, 0, -10, 4600000)
NO_SPACE = "no space left on device"


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
def _assert_write_error(exc: BaseException, name: str, *, no_space: bool) -> None:
    """A failed write: an OSError *and* a SarsslError (the CLI prints it as one line) whose
    message names the output file (and the cause when the disk is full)."""
    assert isinstance(exc, OSError) and isinstance(exc, SarsslError), repr(exc)
    msg = str(exc)
    assert name in msg, msg
    if no_space:
        assert NO_SPACE in msg and exc.errno == errno.ENOSPC, msg


def _sweep(
    directory: Path, limits, set_limit, write, reference: dict[str, bytes], *, no_space: bool
) -> list[str]:
    """Try ``write(directory)`` under each limit; check every outcome; return them."""
    outcomes = []
    keep = {p.name for p in directory.iterdir()}
    for limit in limits:
        set_limit(limit)
        try:
            with _limit_context():
                write(directory)
        except Exception as exc:  # noqa: BLE001 - the type is what is checked
            names = [n for n in reference]
            assert any(n in str(exc) for n in names), f"limit {limit}: {exc!r}"
            _assert_write_error(exc, next(n for n in names if n in str(exc)), no_space=no_space)
            left = sorted(p.name for p in directory.iterdir() if p.name not in keep)
            assert left == [], f"limit {limit}: left behind {left} after {exc}"
            outcomes.append("error")
        else:
            for name, data in reference.items():
                got = (directory / name).read_bytes()
                assert got == data, f"limit {limit}: {name}: {len(got)} bytes, complete {len(data)}"
            left = sorted(p.name for p in directory.iterdir() if p.name not in keep)
            assert left == sorted(reference), f"limit {limit}: {left}"
            for name in reference:
                (directory / name).unlink()
            outcomes.append("ok")
    assert "error" in outcomes and "ok" in outcomes, outcomes  # the sweep spans both regimes
    return outcomes


_ACTIVE_FSIZE: list[int] = []


@contextlib.contextmanager
def _limit_context():
    """Apply the file-size limit set through ``fsize_limit`` (if any) around one write."""
    if not _ACTIVE_FSIZE:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (_ACTIVE_FSIZE[-1], hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.fixture
def fsize_limit():
    """Set the per-file size limit the next :func:`_sweep` write runs under (EFBIG beyond)."""

    def _set(limit: int) -> None:
        _ACTIVE_FSIZE[:] = [int(limit)]

    yield _set
    _ACTIVE_FSIZE.clear()


@pytest.fixture
def small_fs(tmp_path):
    """Mount a tmpfs of ``size`` bytes under ``tmp_path`` (unmounted at teardown); the
    returned function ``leave(free)`` fills it with a preallocated file so that ``free``
    bytes remain."""
    mounts: list[Path] = []

    def _mount(size: int):
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root (the RLIMIT_FSIZE / monkeypatch tests run)")
        d = tmp_path / f"fs{len(mounts)}"
        d.mkdir()
        try:
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"mounting a tmpfs is not permitted here ({exc}); simulated tests run")
        if r.returncode != 0:
            pytest.skip(
                f"mounting a tmpfs is not permitted here ({r.stderr.strip()}); "
                "the simulated tests cover this"
            )
        mounts.append(d)
        filler = d / ".filler"
        filler.touch()

        def leave(free: int) -> None:
            st = os.statvfs(d)
            total_free = st.f_bavail * st.f_frsize + filler.stat().st_size
            size_ = max(0, total_free - int(free))
            os.truncate(filler, 0)
            if size_:
                fd = os.open(filler, os.O_RDWR)
                try:
                    os.posix_fallocate(fd, 0, size_)
                finally:
                    os.close(fd)

        return d, leave

    yield _mount
    for d in mounts:
        subprocess.run(["umount", "-l", str(d)], capture_output=True, timeout=30)


def _data(shape=(2, 300, 300), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(-12, 3, shape).astype(np.float32)


def _write_tif(cog: bool):
    data = _data()

    def write(d: Path) -> None:
        write_geotiff(
            d / "out.tif",
            data,
            crs=CRS,
            transform=TRANSFORM,
            nodata=float("nan"),
            band_names=["VV", "VH"],
            cog=cog,
            blocksize=128,
        )

    return write


def _write_blocks(d: Path) -> None:
    """What ``sarssl preprocess`` does: a float32 data and a uint8 mask BlockWriter,
    written tile by tile, published together by ``close_all`` inside a GDAL env."""
    from sarssl.rasterio_blocks import BlockWriter, close_all

    data = _data((2, 300, 300), seed=1)
    kw = dict(height=300, width=300, crs=CRS, transform=TRANSFORM, blocksize=128)
    with (
        rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"),
        BlockWriter(
            d / "scene.tif",
            count=2,
            dtype="float32",
            nodata=float("nan"),
            band_names=["VV", "VH"],
            **kw,
        ) as data_w,
        BlockWriter(
            d / "scene.mask.tif", count=1, dtype="uint8", band_names=["mask"], **kw
        ) as mask_w,
    ):
        for r0 in range(0, 300, 100):
            for c0 in range(0, 300, 100):
                blk = data[:, r0 : r0 + 100, c0 : c0 + 100]
                data_w.write(blk, r0, c0)
                mask_w.write((blk[0] > -12).astype(np.uint8), r0, c0)
        close_all([data_w, mask_w])


def _reference(tmp_path: Path, write) -> dict[str, bytes]:
    ref = tmp_path / "reference"
    ref.mkdir()
    write(ref)
    return {p.name: p.read_bytes() for p in sorted(ref.iterdir())}


# --------------------------------------------------------------------------------------
# GDAL writers: always-run simulation (RLIMIT_FSIZE makes GDAL's writes fail)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cog", [True, False], ids=["cog", "gtiff"])
def test_write_geotiff_write_failure_raises_and_leaves_nothing(cog, tmp_path, fsize_limit):
    """write_geotiff under a sweep of file-size limits: a clear OSError/SarsslError naming
    the file and GDAL's message, no temporary, no output; or the complete file."""
    write = _write_tif(cog)
    reference = _reference(tmp_path, write)
    size = len(reference["out.tif"])
    out = tmp_path / "out"
    out.mkdir()
    limits = np.unique(np.linspace(16384, size + 32768, 48).astype(int))
    _sweep(out, limits, fsize_limit, write, reference, no_space=False)


def test_block_writers_write_failure_raises_and_leaves_nothing(tmp_path, fsize_limit):
    """The preprocess writers (two BlockWriters, close_all) under a sweep of file-size
    limits: an error naming the file, and neither output nor temporary left (not even the
    mask whose own translation succeeded); or both complete files."""
    reference = _reference(tmp_path, _write_blocks)
    size = max(len(v) for v in reference.values())
    out = tmp_path / "out"
    out.mkdir()
    limits = np.unique(np.linspace(16384, 2.6 * size, 48).astype(int))  # the temporary is larger
    _sweep(out, limits, fsize_limit, _write_blocks, reference, no_space=False)


def test_gdal_error_only_logged_at_close_is_raised(tmp_path, monkeypatch):
    """rasterio reports a GDAL failure raised while a file is flushed and closed only to
    its logger (INFO 'GDAL signalled an error'); the writers must raise it anyway."""
    import rasterio.shutil as rshutil

    from sarssl.rasterio_blocks import BlockWriter

    real_copy = rshutil.copy

    def copy_then_fail_at_close(*args, **kwargs):
        out = real_copy(*args, **kwargs)
        logging.getLogger("rasterio._env").info(  # what rasterio logs for a CE_Failure
            "GDAL signalled an error: err_no=%r, msg=%r",
            1,
            "TIFFAppendToStrip:Write error at scanline 0",
        )
        return out

    monkeypatch.setattr(rshutil, "copy", copy_then_fail_at_close)
    with pytest.raises(Exception) as info:
        write_geotiff(tmp_path / "a.tif", _data(), crs=CRS, transform=TRANSFORM)
    _assert_write_error(info.value, "a.tif", no_space=False)
    assert "TIFFAppendToStrip" in str(info.value)
    with pytest.raises(Exception) as info:
        with BlockWriter(
            tmp_path / "b.tif",
            count=2,
            height=300,
            width=300,
            dtype="float32",
            crs=CRS,
            transform=TRANSFORM,
        ) as w:
            w.write(_data(), 0, 0)
    _assert_write_error(info.value, "b.tif", no_space=False)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_named_as_the_cause(tmp_path, monkeypatch):
    """When the output's file system has no space left, the error says so (ENOSPC)."""
    real_statvfs = os.statvfs

    def full(path):
        st = real_statvfs(path)
        return os.statvfs_result(
            (
                st.f_bsize,
                st.f_frsize,
                st.f_blocks,
                0,
                0,
                st.f_files,
                st.f_ffree,
                st.f_favail,
                st.f_flag,
                st.f_namemax,
            )
        )

    write = _write_tif(True)
    size = len(_reference(tmp_path, write)["out.tif"])
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(os, "statvfs", full)
    _ACTIVE_FSIZE[:] = [size // 2]
    try:
        with pytest.raises(Exception) as info, _limit_context():
            write(out)
    finally:
        _ACTIVE_FSIZE.clear()
    _assert_write_error(info.value, "out.tif", no_space=True)
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("bigtiff", [False, True], ids=["tiff", "bigtiff"])
def test_tiff_problem_finds_every_truncation(bigtiff, tmp_path):
    """GDAL's COG driver can finish "successfully" with its file cut short (libtiff only
    prints the write error): the writers check each TIFF's IFDs and tile table instead."""
    from sarssl.io import tiff_problem

    path = tmp_path / "a.tif"
    if bigtiff:
        with rasterio.open(
            path,
            "w",
            driver="GTiff",
            count=2,
            height=300,
            width=300,
            dtype="float32",
            tiled=True,
            blockxsize=128,
            blockysize=128,
            BIGTIFF="YES",
            compress="deflate",
        ) as ds:
            ds.write(_data())
            ds.build_overviews([2], rasterio.enums.Resampling.average)
    else:
        write_geotiff(path, _data(), crs=CRS, transform=TRANSFORM, blocksize=128)
    data = path.read_bytes()
    assert data[2:4] == ((43).to_bytes(2, "little") if bigtiff else (42).to_bytes(2, "little"))
    assert tiff_problem(path) is None
    cut = tmp_path / "cut.tif"
    for n in sorted({0, 7, 15, 200, 1000, len(data) // 3, len(data) // 2, len(data) - 1}):
        cut.write_bytes(data[:n])
        assert tiff_problem(cut) is not None, n


# --------------------------------------------------------------------------------------
# GDAL writers on a real full file system (tmpfs)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cog", [True, False], ids=["cog", "gtiff"])
def test_tmpfs_full_write_geotiff(cog, tmp_path, small_fs):
    write = _write_tif(cog)
    reference = _reference(tmp_path, write)
    size = len(reference["out.tif"])
    d, leave = small_fs(4 * size + (1 << 20))
    frees = np.unique(np.linspace(8192, 1.6 * size, 40).astype(int))
    _sweep(d, frees, leave, write, reference, no_space=True)


def test_tmpfs_full_preprocess_block_writers(tmp_path, small_fs):
    reference = _reference(tmp_path, _write_blocks)
    total = sum(len(v) for v in reference.values())
    d, leave = small_fs(8 * total + (1 << 20))
    frees = np.unique(np.linspace(8192, 4.5 * total, 48).astype(int))
    _sweep(d, frees, leave, _write_blocks, reference, no_space=True)


@pytest.mark.skipif(ROME_DEM is None, reason="the product fixture of test_preprocess.py is missing")
def test_tmpfs_full_sarssl_preprocess(request, tmp_path, small_fs, capsys):
    """The reported case, end to end: ``sarssl preprocess`` onto a full file system exited 0
    with a truncated GeoTIFF in place. Now: exit 2, one line naming the file and the cause,
    neither output nor temporary left; with room enough, both outputs."""
    d, leave = small_fs(64 << 20)  # (skips before the product is built where mounting fails)
    product = request.getfixturevalue("product")
    args = [
        "preprocess",
        str(product),
        "--dem",
        str(ROME_DEM),
        "--aoi",
        ",".join(map(str, ROME_AOI)),
        "--speckle-filter",
        "none",
        "--backend",
        "python",
    ]
    ref = tmp_path / "ref"
    assert main([*args, "--out", str(ref / "scene.tif")]) == 0
    total = sum(p.stat().st_size for p in ref.iterdir())
    assert 6 * total + (2 << 20) < (48 << 20)
    for free in (16384, total // 2, total, 6 * total + (2 << 20)):
        leave(free)
        capsys.readouterr()
        rc = main([*args, "--out", str(d / "scene.tif")])
        err = capsys.readouterr().err.strip()
        left = sorted(p.name for p in d.iterdir() if p.name != ".filler")
        if free > 4 * total:
            assert rc == 0 and left == ["scene.json", "scene.mask.tif", "scene.tif"], (
                rc,
                left,
                err,
            )
            continue
        assert rc == 2, (free, rc, err)
        last = err.splitlines()[-1]
        assert last.startswith("sarssl preprocess: error: ") and NO_SPACE in last, last
        assert "scene.tif" in last or "scene.mask.tif" in last, last
        assert left == [], (free, left)


# --------------------------------------------------------------------------------------
# chip stores
# --------------------------------------------------------------------------------------
CHIP_GRID = area_grid((12.46, 41.96, 12.48, 41.975), 10.0)
SIZE = 16


@pytest.fixture(scope="module")
def chip_inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("io_chips_in")
    rng = np.random.default_rng(0)
    h, w = CHIP_GRID.shape
    comp = rng.normal(-12, 3, size=(12, h, w)).astype(np.float32)
    cpath = tmp / "comp.tif"
    write_geotiff(
        cpath,
        comp,
        crs=CHIP_GRID.crs,
        transform=CHIP_GRID.transform,
        nodata=float("nan"),
        band_names=list(CHANNELS),
    )
    lpath = tmp / "lc.tif"
    codes = np.array([10, 20, 30, 40, 50], np.uint8)
    write_geotiff(
        lpath,
        codes[rng.integers(0, 5, size=(h, w))],
        crs=CHIP_GRID.crs,
        transform=CHIP_GRID.transform,
        nodata=0,
    )
    tpath = tmp / "tc.tif"
    write_geotiff(
        tpath,
        rng.integers(0, 101, size=(h, w)).astype(np.uint8),
        crs=CHIP_GRID.crs,
        transform=CHIP_GRID.transform,
    )
    return dict(cpath=cpath, lpath=lpath, tpath=tpath)


def _chips_args(inp, out_dir, *extra):
    return [
        "chips",
        "--composite",
        str(inp["cpath"]),
        "--landcover",
        str(inp["lpath"]),
        "--treecover",
        str(inp["tpath"]),
        "--area",
        "rome",
        "--size",
        str(SIZE),
        "--out-dir",
        str(out_dir),
        *extra,
    ]


def test_chips_enospc_on_preallocation_is_a_clear_error(chip_inputs, tmp_path, monkeypatch, capsys):
    """The store's arrays are preallocated before they are memory-mapped: ENOSPC there is a
    one-line error naming the file (not a SIGBUS later), and nothing is left."""
    calls = []

    def no_space(fd, offset, length):
        calls.append(length)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    out = tmp_path / "store"
    rc = main(_chips_args(chip_inputs, out))
    err = capsys.readouterr().err.strip()
    assert calls, "the chip store was not preallocated"
    assert rc == 2, err
    last = err.splitlines()[-1]  # (progress bars before it)
    assert last.startswith("sarssl chips: error: ") and NO_SPACE in last, err
    assert str(out / "x.npy") in last and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # no store, no .tmp directory


def test_chips_enospc_in_a_later_write_is_a_clear_error(chip_inputs, tmp_path, monkeypatch):
    """ENOSPC while the index is written: an error naming the file; the temporary store
    directory is removed."""
    import pyarrow.parquet as pq

    def no_space(table, where, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))

    monkeypatch.setattr(pq, "write_table", no_space)
    out = tmp_path / "store"
    with pytest.raises(Exception) as info:
        make_chips(
            chip_inputs["cpath"],
            chip_inputs["lpath"],
            chip_inputs["tpath"],
            "rome",
            out,
            size=SIZE,
            progress=False,
        )
    _assert_write_error(info.value, str(out / "index.parquet"), no_space=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # six runs of the command
def test_tmpfs_full_sarssl_chips_exits_cleanly(chip_inputs, tmp_path, small_fs):
    """``sarssl chips`` onto a full file system: exit 2 with a one-line message (never
    SIGBUS, exit 135), no store and no .tmp directory; with enough space, a complete store."""
    ref = tmp_path / "ref"
    exe = [sys.executable, "-m", "sarssl.cli"]
    r = subprocess.run(
        exe + _chips_args(chip_inputs, ref), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    need = sum(p.stat().st_size for p in ref.iterdir())
    x_size = (ref / "x.npy").stat().st_size
    d, leave = small_fs(4 * need + (1 << 20))
    outcomes = []
    for free in (16384, x_size // 2, x_size + 8192, need - 8192, 2 * need + 65536):
        leave(free)
        r = subprocess.run(
            exe + _chips_args(chip_inputs, d / "store"), capture_output=True, text=True, timeout=300
        )
        left = sorted(p.name for p in d.iterdir() if p.name != ".filler")
        if r.returncode == 0:
            assert left == ["store"]
            for p in ref.iterdir():
                if p.suffix == ".npy":
                    assert (d / "store" / p.name).read_bytes() == p.read_bytes()
            subprocess.run(["rm", "-rf", str(d / "store")], check=True)
            outcomes.append("ok")
            continue
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2, (free, r.returncode, r.stderr[-2000:])
        assert "Traceback" not in r.stderr, r.stderr[-2000:]
        assert NO_SPACE in err[-1] and "sarssl chips: error:" in err[-1], err[-1]
        assert left == [], (free, left)
        outcomes.append("error")
    assert outcomes[0] == "error" and outcomes[-1] == "ok", outcomes


# --------------------------------------------------------------------------------------
# label rasters: corrupt files, partial coverage
# --------------------------------------------------------------------------------------
def _corrupt_copies(tmp_path: Path) -> list[Path]:
    """A truncated COG and a GTiff with garbage in its tile data, both with valid headers."""
    g = CHIP_GRID
    rng = np.random.default_rng(3)
    codes = np.array([10, 20, 30, 40], np.uint8)
    out = []
    for cog in (True, False):
        p = tmp_path / f"labels_{'cog' if cog else 'gtiff'}.tif"
        write_geotiff(
            p,
            codes[rng.integers(0, 4, size=g.shape)],
            crs=g.crs,
            transform=g.transform,
            nodata=0,
            cog=cog,
        )
        n = p.stat().st_size
        if cog:
            os.truncate(p, n // 2)
        else:
            b = bytearray(p.read_bytes())
            b[n // 2 : n // 2 + 2000] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
            p.write_bytes(bytes(b))
        out.append(p)
    return out


@pytest.mark.parametrize("reader", [read_landcover, read_treecover], ids=["landcover", "treecover"])
def test_corrupt_label_raster_is_a_clear_error(reader, tmp_path):
    for p in _corrupt_copies(tmp_path):
        with pytest.raises(InputError) as info:
            reader(p, CHIP_GRID)
        msg = str(info.value)
        assert str(p) in msg and "corrupt" in msg, msg
        assert "See previous exception" not in msg  # GDAL's own message instead


def test_corrupt_label_raster_cli_one_line(chip_inputs, tmp_path, capsys):
    bad = _corrupt_copies(tmp_path)[0]
    inp = dict(chip_inputs, lpath=bad)
    rc = main(_chips_args(inp, tmp_path / "store"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and bad.name in err and "corrupt" in err, err
    assert not (tmp_path / "store").exists()


def _half_labelled(tmp_path: Path):
    """A 64 x 64 px area (chips of 16 px cover it exactly); the composite is valid except
    a NaN block; land cover is known only west of column 24, tree cover everywhere."""
    g = Grid(CHIP_GRID.crs, Affine(10, 0, 0, 0, -10, 640), 64, 64)
    rng = np.random.default_rng(4)
    comp = rng.normal(-12, 3, size=(12, 64, 64)).astype(np.float32)
    comp[:, 40:, 50:] = np.nan
    write_geotiff(
        tmp_path / "c.tif",
        comp,
        crs=g.crs,
        transform=g.transform,
        nodata=float("nan"),
        band_names=list(CHANNELS),
    )
    lc = np.full((64, 64), 10, np.uint8)
    lc[:, 24:] = 0  # nodata
    write_geotiff(tmp_path / "lc.tif", lc, crs=g.crs, transform=g.transform, nodata=0)
    write_geotiff(
        tmp_path / "tc.tif", np.full((64, 64), 40, np.uint8), crs=g.crs, transform=g.transform
    )
    valid = np.isfinite(comp).all(axis=0)
    expect = float((valid[:, :24]).sum() / valid.sum())
    return tmp_path / "c.tif", tmp_path / "lc.tif", tmp_path / "tc.tif", expect


def test_partial_label_coverage_warns_and_is_recorded(tmp_path, caplog):
    c, lc, tc, expect = _half_labelled(tmp_path)
    assert 0.3 < expect < 0.5
    with caplog.at_level(logging.WARNING, logger="sarssl.data.chips"):
        meta = make_chips(
            c, lc, tc, "x", tmp_path / "o", size=16, progress=False, min_label_coverage=0.3
        )
    cov = meta["label_coverage"]
    assert cov["landcover"] == pytest.approx(expect, abs=1e-12) and cov["treecover"] == 1.0
    assert json.loads((tmp_path / "o" / "store.json").read_text())["label_coverage"] == cov
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    warned = [m for m in warnings if "lc.tif" in m]
    assert warned and f"{100 * expect:.1f}%" in warned[0], warnings
    assert not any("tc.tif" in m for m in warnings)  # full tree cover: no warning


def test_label_coverage_below_minimum_is_an_error(tmp_path, capsys):
    c, lc, tc, expect = _half_labelled(tmp_path)
    with pytest.raises(InputError) as info:
        make_chips(c, lc, tc, "x", tmp_path / "o", size=16, progress=False)  # default 0.5
    msg = str(info.value)
    assert "lc.tif" in msg and f"{100 * expect:.1f}%" in msg and "--min-label-coverage" in msg, msg
    assert not (tmp_path / "o").exists()
    base = [
        "chips",
        "--composite",
        str(c),
        "--landcover",
        str(lc),
        "--treecover",
        str(tc),
        "--area",
        "x",
        "--size",
        "16",
        "--out-dir",
        str(tmp_path / "o"),
    ]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "--min-label-coverage" in err and "lc.tif" in err
    assert main([*base, "--min-label-coverage", "1.5"]) == 2
    assert "--min-label-coverage 1.5" in capsys.readouterr().err
    assert main([*base, "--min-label-coverage", "0.3"]) == 0
    meta = json.loads((tmp_path / "o" / "store.json").read_text())
    assert meta["params"]["min_label_coverage"] == 0.3


def test_corrupt_composite_is_a_clear_error(chip_inputs, tmp_path):
    """A composite whose tiles cannot be read (cut short): an error naming it, no store."""
    bad = tmp_path / "comp.tif"
    data = chip_inputs["cpath"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as info:
        make_chips(
            bad,
            chip_inputs["lpath"],
            chip_inputs["tpath"],
            "rome",
            tmp_path / "o",
            size=SIZE,
            progress=False,
        )
    assert str(bad) in str(info.value) and "corrupt composite" in str(info.value)
    assert "See previous exception" not in str(info.value)
    assert not (tmp_path / "o").exists()


def test_cli_names_a_full_disk_from_any_stage(monkeypatch, capsys):
    """ENOSPC from a writer without its own handling (e.g. a JSON file) is one line naming
    the file and the cause, exit 2, not a traceback; other OSErrors still raise."""
    import sarssl.data.chips
    from sarssl.cli import main

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/store/fractions.json")

    monkeypatch.setattr(sarssl.data.chips, "run_fractions", full)
    rc = main(["fractions", "--chips-dir", "x", "--fractions", "1.0", "--seed", "0"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "/data/store/fractions.json: no space left on device" in err, err

    def denied(args):
        raise OSError(errno.EACCES, "Permission denied", "/data/store/fractions.json")

    monkeypatch.setattr(sarssl.data.chips, "run_fractions", denied)
    with pytest.raises(PermissionError):
        main(["fractions", "--chips-dir", "x", "--fractions", "1.0", "--seed", "0"])
