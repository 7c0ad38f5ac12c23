"""Reading chips of a chip store for a model: one path, raw batches.

Every consumer reads chips through :class:`ChipBatches`: batches of rows read with one
``pread`` per contiguous run of rows straight into batch buffers, raw (the store's bytes:
float16 dB with NaN = no data, or the uint16/uint8 codes of a compact store), decoded
(:func:`decode_batch`, compact stores only) and normalised afterwards on the consumer's
device with :func:`sarssl.data.normalize.normalize_batch` /
:class:`~sarssl.data.normalize.Normalize`. On top of it:

- :class:`BatchLoader`: the training iterator; threads fill a ring of reused (pinned)
  batch buffers ahead of the consumer; with a ``device`` and/or ``transform`` each batch
  is copied and transformed (decode + normalise) one step ahead, on a side CUDA stream,
  so the copy overlaps the consumer's compute (pretraining).
- :func:`load_chips` -> :class:`ChipTensors`: chosen chips of a store held in memory as
  tensors, raw or normalised, with their labels, rows and ids (fine-tuning, which visits
  its small splits many times, and every figure that shows chips).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError, SarsslError
from .normalize import normalize_batch
from .store import ChipStore, XCodec, load_stats

STORE_ARRAYS: dict[str, str] = {"x": "x", "landcover": "landcover", "treecover_map": "treecover"}
"""Batch key -> :class:`~sarssl.data.store.ChipStore` array, in reading order."""


# --------------------------------------------------------------------------------------
# batch plans
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


# --------------------------------------------------------------------------------------
# raw batches: the one reading path
# --------------------------------------------------------------------------------------
class ChipBatches:
    """Map-style dataset whose item ``i`` is **batch** ``i`` of the current epoch, raw.

    The one way chips are read for a model: batches are read as contiguous row ranges
    (see :func:`block_batches`) with one ``pread`` per run of rows and array and no
    per-chip Python work, and are returned *undecoded*: ``x`` keeps the store dtype
    (float16 dB, NaN = no data) so the host moves half the bytes of float32 and the
    normalisation runs on the consumer's device (:mod:`sarssl.data.normalize`).

    A compact store's ``x`` items are its codes: :meth:`decode` (or :func:`decode_batch`
    with :attr:`codec`) turns them into float32 dB on any device.

    Item: ``{"x": (B, C, S, S) store dtype, "landcover": uint8 (B, S, S),
    "treecover_map": float16 (B, S, S), "treecover": float32 (B,), "row": int64 (B,)}``
    (``labels=False`` leaves out the two label maps; ``arrays`` names exactly which of
    ``x``, ``landcover`` and ``treecover_map`` to read). Use it with
    ``DataLoader(batches, batch_size=None, num_workers=2, pin_memory=True)`` (call
    :meth:`set_epoch` before each epoch; non-persistent workers pick it up), with
    :class:`BatchLoader` (threads, reused pinned buffers: faster), or through
    :func:`load_chips` (chosen chips into memory at once). Deterministic: the batches of
    epoch ``e`` depend only on ``(seed, e)``.
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
        arrays: Sequence[str] | None = None,
    ) -> None:
        self.store = store_dir if isinstance(store_dir, ChipStore) else ChipStore(store_dir)
        n = self.store.n
        self.rows = (
            np.arange(n, dtype=np.int64)
            if rows is None
            else np.sort(np.asarray(rows, dtype=np.int64))
        )
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= n):
            raise SarsslError(f"chip store {self.store.path}: rows must lie in [0, {n})")
        if arrays is None:
            arrays = tuple(STORE_ARRAYS) if labels else ("x",)
        unknown = sorted(set(arrays) - set(STORE_ARRAYS))
        if unknown or not arrays:
            raise SarsslError(
                f"ChipBatches: arrays {list(arrays)}: expected some of {list(STORE_ARRAYS)}"
            )
        self.arrays = tuple(k for k in STORE_ARRAYS if k in arrays)
        self.codec = self.store.codec
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
                self.rows,
                self.batch_size,
                block_rows=self.block_rows,
                shuffle=self.shuffle,
                seed=self.seed,
                epoch=self.epoch,
                drop_last=self.drop_last,
            )
            self._plan = (self.epoch, plan)
        return self._plan[1]

    def __len__(self) -> int:
        n = self.rows.size
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # reading -----------------------------------------------------------------------------
    def buffers(
        self, n: int | None = None, *, shared: bool = False, pin: bool = False
    ) -> dict[str, Any]:
        """Empty batch tensors for ``n`` chips (default ``batch_size``) in the store dtypes."""
        import torch

        n = self.batch_size if n is None else int(n)
        out = {}
        for key in self.arrays:
            arr = self.store.stored(STORE_ARRAYS[key])
            dtype = torch.from_numpy(np.empty(0, arr.dtype)).dtype
            t = _empty((n, *arr.shape[1:]), dtype, shared)
            out[key] = t.pin_memory() if pin else t
        return out

    def open_arrays(self) -> dict[str, tuple[int, int, int]]:
        """Per array: (file descriptor, byte offset of row 0, bytes per row), opened lazily
        in each process (descriptors are never pickled)."""
        files = getattr(self, "_files", None)
        if files is None or files[0] != os.getpid():
            table = {}
            for key in self.arrays:
                arr = self.store.stored(STORE_ARRAYS[key])
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
        files = self.open_arrays()
        for pos, r0, k in contiguous_runs(rows):
            for key, (fd, offset, row_bytes) in files.items():
                dst = out[key].numpy()[start + pos : start + pos + k]
                view = memoryview(dst.reshape(-1).view(np.uint8))
                _pread_full(fd, view, offset + r0 * row_bytes, f"{self.store.path}/{key}")

    def decode(self, x: Any) -> Any:
        """``x`` of a raw batch as dB on its device (:func:`decode_batch`)."""
        return decode_batch(x, self.codec)

    def meta(self, rows: np.ndarray) -> dict[str, Any]:
        """The small per-chip fields of a batch (new tensors, not reused)."""
        import torch

        return {
            "treecover": torch.from_numpy(self.tree_means[rows]),
            "row": torch.from_numpy(rows.copy()),
        }

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
            raise InputError(
                f"{where}: file ends before byte {offset + total} (truncated chip store?)"
            )
        done += got


class BatchLoader:
    """Iterate over :class:`ChipBatches` with threads filling a ring of reused buffers.

    ``threads`` background threads copy the blocks of the next ``prefetch`` batches
    straight from the files into preallocated (pinned, when CUDA is available) batch
    tensors, so there are no per-batch allocations, page faults or inter-process
    transfers.

    With a ``device`` and/or a ``transform`` (a function of the batch dict, e.g. decode +
    normalise of ``x``; its result is what the loader yields) each batch is *staged*: moved
    to the device (non-blocking) and transformed one step ahead of the consumer, i.e.
    batch ``i + 1`` is staged before batch ``i`` is handed out (``overlap=True``, the
    default; ``overlap=False`` stages each batch when it is asked for, the synchronous
    reference). On CUDA the staging runs on a side stream: the copy and the transform
    overlap the consumer's compute on its own stream, which waits for the staged batch
    through an event (no host synchronisation); a second event guards the host buffer
    against being refilled before its copy has finished. On the CPU the same one-ahead
    structure runs in order (:class:`Stager`), so tests exercise it.

    **Host tensors are reused**: an unstaged batch stays valid until ``prefetch + 1``
    further batches have been requested (staged ones are fresh). The ``k``-th ``iter()``
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
        transform: Callable[[dict[str, Any]], Any] | None = None,
        overlap: bool = True,
    ) -> None:
        import torch

        if threads < 1 or prefetch < 1:
            raise SarsslError("BatchLoader: threads and prefetch must be >= 1")
        self.batches = batches
        self.threads = int(threads)
        self.prefetch = int(prefetch)
        self.device = torch.device(device) if device is not None else None
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.transform = transform
        self.overlap = bool(overlap)
        self._ring: list[dict[str, Any]] | None = None
        self.epoch = batches.epoch

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[Any]:
        host = self._host_batches()
        if self.device is None and self.transform is None:
            return host
        return self._staged(host)

    def _staged(self, host: Iterator[tuple[dict[str, Any], int]]) -> Iterator[Any]:
        """Stage every host batch (device copy + transform), one ahead when ``overlap``."""
        stager = Stager(self.device, self.transform)
        try:
            if not self.overlap:
                for batch, slot in host:
                    yield stager.ready(stager.stage(batch, slot, self._events))
                return
            ahead = None
            for batch, slot in host:
                staged = stager.stage(batch, slot, self._events)
                if ahead is not None:
                    yield stager.ready(ahead)
                ahead = staged
            if ahead is not None:
                yield stager.ready(ahead)
        finally:
            host.close()

    def _host_batches(self) -> Iterator[Any]:
        """Host batches of the next epoch, read by the threads ``prefetch`` ahead (with
        their ring slot when staging follows)."""
        from concurrent.futures import ThreadPoolExecutor

        ds = self.batches
        ds.set_epoch(self.epoch)
        self.epoch += 1
        plan = ds.batches()
        ds.open_arrays()  # open the files once, before the threads share them
        if self._ring is None:
            self._ring = [ds.buffers(pin=self.pin_memory) for _ in range(self.prefetch + 2)]
        ring = self._ring
        self._events: list[Any] = [None] * len(ring)
        events = self._events
        with_slot = self.device is not None or self.transform is not None

        def submit(pool: ThreadPoolExecutor, i: int) -> list[Any]:
            slot = i % len(ring)
            if events[slot] is not None:
                # the copy from this buffer was issued a step ago: normally already done
                events[slot].synchronize()
                events[slot] = None
            rows = plan[i]
            parts = [
                p
                for p in np.array_split(np.arange(rows.size), min(self.threads, rows.size))
                if p.size
            ]
            return [
                pool.submit(ds.read_into, rows[p[0] : p[-1] + 1], ring[slot], int(p[0]))
                for p in parts
            ]

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
                yield (batch, slot) if with_slot else batch


class Stager:
    """Moves a host batch to ``device`` and applies ``transform``, on a side CUDA stream
    when the device is a GPU (else in order, on the calling thread).

    :meth:`stage` issues the work and returns a handle; :meth:`ready` makes the current
    stream wait for it (a GPU-side event wait, not a host synchronisation) and marks the
    staged tensors as used by that stream for the caching allocator.
    """

    def __init__(self, device: Any, transform: Callable[[dict[str, Any]], Any] | None) -> None:
        import torch

        self.device = torch.device(device) if device is not None else None
        self.transform = transform
        cuda = self.device is not None and self.device.type == "cuda"
        self.stream = torch.cuda.Stream(self.device) if cuda else None
        if self.stream is not None:  # e.g. statistics the transform uses, moved just before
            self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def _copy(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.device is None:
            return batch
        return {k: t.to(self.device, non_blocking=True) for k, t in batch.items()}

    def _transform(self, batch: dict[str, Any]) -> Any:
        return self.transform(batch) if self.transform is not None else batch

    def stage(self, batch: dict[str, Any], slot: int, host_events: list[Any]) -> tuple[Any, Any]:
        if self.stream is None:
            return self._transform(self._copy(batch)), None
        import torch

        with torch.cuda.stream(self.stream):
            moved = self._copy(batch)
            copied = torch.cuda.Event()
            copied.record(self.stream)
            out = self._transform(moved)
            done = torch.cuda.Event()
            done.record(self.stream)
        host_events[slot] = copied  # the host buffer may be refilled once this has passed
        return out, done

    def ready(self, staged: tuple[Any, Any]) -> Any:
        out, done = staged
        if done is None:
            return out
        import torch

        current = torch.cuda.current_stream(self.device)
        current.wait_event(done)
        for t in _tensors(out):
            if t.device.type == "cuda":
                t.record_stream(current)
        return out


def _tensors(obj: Any) -> Iterator[Any]:
    """The tensors in a (nested) dict/list/tuple."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def decode_batch(x: Any, codec: XCodec | None) -> Any:
    """dB of a raw ``x`` batch on its device: unchanged for a float16 store (``codec``
    None), else the compact store's codes decoded to float32 dB, NaN = no data
    (:meth:`sarssl.data.store.XCodec.decode_torch`)."""
    return x if codec is None else codec.decode_torch(x)


# --------------------------------------------------------------------------------------
# chips in memory (fine-tuning, figures)
# --------------------------------------------------------------------------------------
class ChipTensors:
    """Chips of a store held in memory: ``rows`` (ascending), ``ids`` and one tensor per
    array (``x`` raw or ``image`` normalised, ``landcover``, ``treecover_map``,
    ``treecover`` = chip-mean tree cover), all with the chips along dimension 0.

    ``chips[key]`` is a whole tensor, ``chips.batch(idx)`` the chips ``idx`` (positions,
    not rows) of every tensor; ``chips[key] = tensor`` adds or replaces one (fine-tuning
    adds the frozen encoder's ``features``).
    """

    def __init__(self, rows: np.ndarray, ids: np.ndarray, tensors: dict[str, Any]) -> None:
        self.rows = rows
        self.ids = ids
        self.tensors = tensors

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, key: str) -> Any:
        return self.tensors[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.tensors[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def batch(self, idx: Any) -> dict[str, Any]:
        """``{key: tensor[idx]}`` for every tensor (``idx``: positions 0..len-1)."""
        import torch

        out = {}
        for key, t in self.tensors.items():
            out[key] = t[torch.as_tensor(idx, dtype=torch.long, device=t.device)]
        return out


def load_chips(
    store: str | os.PathLike | ChipStore,
    rows: Sequence[int] | np.ndarray | None = None,
    *,
    arrays: Sequence[str] = tuple(STORE_ARRAYS),
    stats: str | os.PathLike | Mapping[str, Any] | None = None,
    device: Any = None,
    chunk: int = 256,
) -> ChipTensors:
    """Chips ``rows`` (all when None) of ``store`` in memory, read through
    :class:`ChipBatches` in ascending row order, ``chunk`` chips at a time.

    ``arrays``: which of ``x``, ``landcover`` (uint8), ``treecover_map`` (float16) to
    read; ``treecover`` (float32 chip means from the index) always comes along. Without
    ``stats`` ``x`` is dB with NaN = no data: raw float16 for a float16 store, decoded to
    float32 (on ``device``) for a compact store; with ``stats`` (a ``stats.json`` path or
    its dict) it is decoded and normalised chunk by chunk on ``device`` into ``image``
    (float32, :func:`~sarssl.data.normalize.normalize_batch`) and the raw chips are not
    kept. Tensors are on ``device`` (default the CPU).
    """
    import torch

    reader = ChipBatches(store, rows, batch_size=max(1, int(chunk)), shuffle=False, arrays=arrays)
    st = reader.store
    rows = reader.rows
    device = torch.device("cpu") if device is None else torch.device(device)
    norm = load_stats(stats, st.channels) if stats is not None and "x" in reader.arrays else None
    like = reader.buffers(0)  # the shape of one chip and the dtype of every array
    codec = reader.codec if "x" in reader.arrays else None
    if norm is not None:
        like["image"] = like.pop("x").to(torch.float32)
    elif codec is not None:
        like["x"] = like["x"].to(torch.float32)
    out = {
        k: torch.empty((rows.size, *t.shape[1:]), dtype=t.dtype, device=device)
        for k, t in like.items()
    }
    buf = reader.buffers()
    for start in range(0, rows.size, reader.batch_size):
        part = rows[start : start + reader.batch_size]
        reader.read_into(part, buf)
        end = start + part.size
        for key, t in buf.items():
            t = t[: part.size].to(device)
            if key == "x":
                t = decode_batch(t, codec)
            if key == "x" and norm is not None:
                out["image"][start:end] = normalize_batch(t, *norm)
            else:
                out[key][start:end] = t
    out["treecover"] = reader.meta(rows)["treecover"].to(device)
    ids = st.index.set_index("row").loc[rows, "id"].astype(str).to_numpy()
    return ChipTensors(rows, ids, out)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------
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
