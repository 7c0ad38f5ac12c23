"""The chips a fine-tuning job trains, selects and tests on, in memory or streamed.

:func:`split_rows` picks the rows (the run seed's label subset of TRAIN, all of VAL and
TEST); :func:`open_split` gives each split one interface, whichever way it is held:

- :class:`MemorySplit`: the split read once into memory on the device
  (:func:`sarssl.data.loaders.load_chips`), for the small splits of the demo and of most
  label fractions: a job visits each chip many times;
- :class:`StreamedSplit`: only the chip ids and chip-mean targets are held; every batch
  is read from the store's memory maps, normalised and moved to the device when asked
  for, so device (and host) memory is bounded by the batch, not by the split: the study's
  10,000 chips of 448 px are about 110 GB as float32 images. Cached frozen-encoder tokens
  of a streamed split stay on the host.

Both give the same batches bit for bit (same reads, same normalisation), so a run gives
the same result either way (tests check it). ``loader: auto`` streams a split whose
decoded images would exceed ``in_memory_max_mb``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..data.loaders import ChipTensors, load_chips
from ..errors import InputError

log = logging.getLogger(__name__)

LOADERS = ("auto", "memory", "stream")


def split_rows(store: Any, fraction: float, task: str, seed: int | None) -> dict[str, np.ndarray]:
    """Rows of the run seed's training subset for ``fraction`` and of the val and test
    splits.

    Raises if the fraction's ids are not all TRAIN chips (a corrupt or foreign
    fractions.json would otherwise leak val/test chips into training). For tree cover,
    chips without a known tree cover are dropped from every split.
    """
    from ..vocabulary import fraction_key

    ids = set(store.fraction_ids(fraction, seed))
    train_ids = set(store.index.loc[store.index["split"] == "train", "id"])
    if not ids <= train_ids:
        bad = sorted(ids - train_ids)[:5]
        raise InputError(
            f"{store.path / 'fractions.json'}: fraction {fraction_key(fraction)} "
            f"lists non-training chips {bad}"
        )
    rows = {
        "train": store.rows("train", fraction, seed),
        "val": store.rows("val"),
        "test": store.rows("test"),
    }
    if task == "treecover":
        known = store.index.set_index("row")["treecover_mean"].notna()
        rows = {k: v[known.loc[v].to_numpy()] if v.size else v for k, v in rows.items()}
    if rows["train"].size == 0:
        raise InputError(
            f"chip store {store.path}: no training chips for fraction {fraction} ({task})"
        )
    for split in ("val", "test"):
        if rows[split].size == 0:
            raise InputError(f"chip store {store.path}: the {split} split is empty")
    return rows


class MemorySplit(ChipTensors):
    """A split held in memory on the device (``image`` float32 normalised, ``landcover``
    int64, ``treecover`` chip means, ``features`` once cached): the chips of
    :func:`sarssl.data.loaders.load_chips`, plus :meth:`labels`."""

    def __init__(self, store: Any, rows: np.ndarray, stats: Mapping[str, Any], device: Any):
        chips = load_chips(
            store,
            rows,
            arrays=("x", "landcover"),
            stats=stats,
            device=device,
            chunk=max(1, min(64, len(rows))),  # staging buffer: 64 chips at most
        )
        chips["landcover"] = chips["landcover"].long()
        super().__init__(chips.rows, chips.ids, chips.tensors)
        self.feature_device = torch.device(device)

    def labels(self, idx: Any) -> torch.Tensor:
        lc = self["landcover"]
        return lc[torch.as_tensor(idx, device=lc.device)]


class StreamedSplit:
    """A split read from the store batch by batch (see the module docstring)."""

    def __init__(self, store: Any, rows: np.ndarray, stats: Mapping[str, Any], device: Any):
        self.store, self.stats, self.device = store, stats, torch.device(device)
        self.rows = np.sort(np.asarray(rows, dtype=np.int64))
        index = store.index.set_index("row").loc[self.rows]
        self.ids = index["id"].astype(str).to_numpy()
        tree = torch.from_numpy(index["treecover_mean"].to_numpy(dtype=np.float32))
        self.tensors: dict[str, torch.Tensor] = {"treecover": tree.to(self.device)}
        self.feature_device = torch.device("cpu")

    def __len__(self) -> int:
        return int(self.rows.size)

    def __getitem__(self, key: str) -> Any:
        return self.tensors[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.tensors[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def _read(self, idx: Any, arrays: tuple[str, ...]) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx, dtype=np.int64)
        uniq, inverse = np.unique(self.rows[idx], return_inverse=True)
        chips = load_chips(
            self.store,
            uniq,
            arrays=arrays,
            stats=self.stats if "x" in arrays else None,
            device=self.device,
            chunk=uniq.size,  # one read of exactly this batch: no larger staging buffer
        )
        inv = torch.as_tensor(inverse, device=self.device)
        return {k: chips[k][inv] for k in chips.tensors if k != "treecover"}

    def batch(self, idx: Any) -> dict[str, Any]:
        # with cached tokens the images are not needed again (only their labels)
        arrays = ("landcover",) if "features" in self.tensors else ("x", "landcover")
        out = self._read(idx, arrays)
        out["landcover"] = out["landcover"].long()
        pos = torch.as_tensor(np.asarray(idx, dtype=np.int64))
        for key, t in self.tensors.items():
            out[key] = t[pos.to(t.device)].to(self.device)
        return out

    def labels(self, idx: Any) -> torch.Tensor:
        return self._read(idx, ("landcover",))["landcover"]


def split_megabytes(store: Any, n: int) -> float:
    """Decoded size of ``n`` chips in memory (float32 image + int64 labels), MB."""
    s = int(store.chip_size)
    return n * (len(store.channels) * s * s * 4 + s * s * 8) / 2**20


def open_split(
    store: Any,
    rows: np.ndarray,
    stats: Mapping[str, Any],
    device: Any,
    loader: str = "auto",
    in_memory_max_mb: float = 2048.0,
) -> MemorySplit | StreamedSplit:
    """The split ``rows`` held as ``loader`` says (``auto``: in memory up to
    ``in_memory_max_mb`` of decoded chips, streamed above)."""
    if loader not in LOADERS:
        raise InputError(f"finetune loader {loader!r}: expected one of {', '.join(LOADERS)}")
    mb = split_megabytes(store, len(rows))
    stream = loader == "stream" or (loader == "auto" and mb > float(in_memory_max_mb))
    if stream:
        log.info("%d chips (%.0f MB decoded): streamed from %s", len(rows), mb, store.path)
        return StreamedSplit(store, rows, stats, device)
    return MemorySplit(store, rows, stats, device)
