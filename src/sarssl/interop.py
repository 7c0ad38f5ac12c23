"""Interoperability with the wider PyTorch ecosystem: TorchGeo datasets and TensorBoard.

Owns two adapters that let other tools use what the workflow writes, without sarssl's
own training loops:

- :class:`ChipDataset`: a ``torch.utils.data.Dataset`` over one chip store
  (``results/chips/AREA/``) following TorchGeo's ``NonGeoDataset`` sample convention: each
  item is a dict ``{"image": float32 (C, S, S), "mask": ...}`` (``mask`` int64 WorldCover
  classes 0..10 with :data:`sarssl.vocabulary.IGNORE_INDEX` = no label for
  ``task="landcover"``, float32 tree-cover percent with NaN = unknown for
  ``task="treecover"``), optionally passed through ``transforms(sample)``, so TorchGeo's
  trainers, samplers-free data modules and augmentations take it as is. TorchGeo itself is
  not a dependency.
- :func:`write_finetune_tensorboard`: a fine-tuning run's per-epoch curves (train loss and
  validation scores of every learning rate tried, the selected one's test scores) as
  TensorBoard event files, like pretraining's ``tensorboard/`` folder
  (:class:`sarssl.engine.MetricsLog`).

The encoders' timm folder layout is :func:`sarssl.encoders.export_timm_dir`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .data.normalize import normalize_batch
from .data.store import ChipStore, load_stats
from .errors import SarsslError
from .vocabulary import IGNORE_INDEX, TASKS

log = logging.getLogger(__name__)


class ChipDataset(Dataset):
    """TorchGeo-style dataset over one chip store (see the module docstring).

    ``split`` (``train``/``val``/``test`` or None for all), ``fraction`` and ``seed`` select
    rows exactly as fine-tuning does (:meth:`sarssl.data.store.ChipStore.rows`). With
    ``stats`` (a ``stats.json`` path or dict) the image is normalised like every sarssl model
    input (``(x - mean) / (std + eps)``, no data -> 0); without, it is dB with NaN = no data.
    """

    ignore_index = IGNORE_INDEX

    def __init__(
        self,
        chips_dir: str | os.PathLike,
        split: str | None = None,
        task: str = "landcover",
        fraction: float | str | None = None,
        seed: int | None = None,
        stats: str | os.PathLike | dict[str, Any] | None = None,
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        if task not in TASKS:
            raise SarsslError(f"unknown task {task!r}; expected one of {list(TASKS)}")
        self.store = ChipStore(chips_dir)
        self.task = task
        self.rows = self.store.rows(split, fraction, seed)
        self.ids = self.store.index.set_index("row").loc[self.rows, "id"].astype(str).tolist()
        self.norm = load_stats(stats, self.store.channels) if stats is not None else None
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = int(self.rows[index])
        x = np.asarray(self.store.x[row], dtype=np.float32)
        if self.norm is not None:
            x = normalize_batch(x[None], *self.norm)[0]
        if self.task == "landcover":
            mask = torch.from_numpy(np.asarray(self.store.landcover[row], dtype=np.int64))
        else:
            mask = torch.from_numpy(np.asarray(self.store.treecover[row], dtype=np.float32))
        sample = {"image": torch.from_numpy(np.ascontiguousarray(x)), "mask": mask}
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample


def write_finetune_tensorboard(log_dir: str | os.PathLike, summary: dict[str, Any]) -> Path | None:
    """TensorBoard events of one fine-tuning run from its summary (``run.json``'s
    ``lr_search`` histories and ``test_scores``), in ``log_dir/lr_<lr>/`` per learning rate
    (x axis: optimiser steps), the selected one also holding ``test/<metric>``. Replaces
    an earlier folder (a rerun does not append). None, with a log line, when tensorboard
    is not installed (it is optional, as for pretraining)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard is not installed: no fine-tuning events written")
        return None
    log_dir = Path(log_dir)
    if log_dir.exists():
        shutil.rmtree(log_dir)
    # no lr search (the knn protocol): one run holding the test scores
    runs = summary.get("lr_search") or [
        {"lr": summary.get("lr"), "history": summary.get("history") or []}
    ]
    for run in runs:
        if run.get("lr") is not None:
            name = f"lr_{float(run['lr']):g}"
        else:
            name = f"knn_k{summary['knn_k']}" if summary.get("knn_k") else "run"
        writer = SummaryWriter(str(log_dir / name))
        last_step = 0
        try:
            for epoch in run.get("history") or []:
                step = int(epoch.get("step", epoch["epoch"]))
                last_step = max(last_step, step)
                if epoch.get("train_loss") is not None:
                    writer.add_scalar("train/loss", float(epoch["train_loss"]), step)
                for key, value in (epoch.get("val") or {}).items():
                    if isinstance(value, (int, float)):
                        writer.add_scalar(f"val/{key}", float(value), step)
            if run.get("lr") == summary.get("lr"):
                for key, value in (summary.get("test_scores") or {}).items():
                    if isinstance(value, (int, float)):
                        writer.add_scalar(f"test/{key}", float(value), last_step)
        finally:
            writer.close()
    return log_dir
