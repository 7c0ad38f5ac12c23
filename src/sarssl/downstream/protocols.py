"""Downstream protocols: how an encoder is trained on a task.

A protocol decides which parameters learn and what runs once instead of every step; the
fine-tuning loop (:mod:`sarssl.downstream.finetune`) asks it and knows no protocol by
name. Two are registered:

- ``finetune``: every parameter learns (encoder and head), with training augmentation;
- ``linear``: the encoder is frozen in eval mode (no dropout or drop-path in its features)
  and only the head learns; the encoder's patch tokens are computed once per chip
  (:func:`cache_features`) instead of once per epoch, and there is no augmentation (the
  cached features are of the unaugmented chips).

Adding a protocol is one :class:`Protocol` subclass registered in :data:`PROTOCOLS` and
its name added to :data:`sarssl.vocabulary.PROTOCOLS` and the schema's
``finetune.protocols`` enum (a test checks the three agree).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import autocast
from ..errors import SarsslError


class Protocol:
    """What a protocol decides; the defaults are full fine-tuning's."""

    name = ""
    augment = True
    """whether training batches are augmented (dihedral flips/rotations)"""

    def prepare(self, model: nn.Module, init: str) -> None:
        """Before the model moves to the device: freeze what must not learn."""

    def prepare_splits(
        self, model: nn.Module, splits: Iterable[Any], device: torch.device, dtype: str
    ) -> None:
        """After the model is on the device: precompute per-chip inputs of each split."""

    def train_mode(self, model: nn.Module) -> None:
        """Set train/eval modes at the start of every training epoch."""
        model.train()


class FullFinetune(Protocol):
    """Encoder and head learn together."""

    name = "finetune"


class LinearProbe(Protocol):
    """Frozen encoder (eval mode), cached patch tokens, only the head learns."""

    name = "linear"
    augment = False

    def prepare(self, model: nn.Module, init: str) -> None:
        if not hasattr(model, "backbone"):
            raise SarsslError(
                f"--protocol linear needs a ViT encoder; --init {init} is trained end to end"
            )
        for p in model.backbone.parameters():
            p.requires_grad_(False)

    def prepare_splits(
        self, model: nn.Module, splits: Iterable[Any], device: torch.device, dtype: str
    ) -> None:
        for split in splits:
            cache_features(model, split, 64, device, dtype)

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        model.backbone.eval()  # frozen: no dropout/drop-path in the features


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (FullFinetune(), LinearProbe())}


def protocol(name: str) -> Protocol:
    """The registered protocol ``name`` (a clear error for an unknown one)."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise SarsslError(f"--protocol {name!r}: expected one of {', '.join(PROTOCOLS)}") from None


@torch.no_grad()
def cache_features(
    model: nn.Module, split: Any, batch_size: int, device: torch.device, dtype: str
) -> None:
    """Patch tokens of the frozen encoder for every chip of ``split`` (linear protocol):
    the encoder never changes, so it runs once per chip instead of once per epoch."""
    from ..encoders import patch_tokens

    model.backbone.eval()
    feats = []
    for start in range(0, len(split), batch_size):
        idx = np.arange(start, min(start + batch_size, len(split)))
        with autocast(device, dtype):
            feats.append(patch_tokens(model.backbone, split.batch(idx)["image"]).float())
    split["features"] = torch.cat(feats)
