"""Downstream protocols: how an initialisation is trained on a task.

A protocol decides which parameters learn, which head the encoder gets, and what runs
once instead of every step; the fine-tuning loop (:mod:`sarssl.downstream.finetune`)
asks it and knows no protocol by name. Four are registered:

- ``finetune``: every parameter learns (encoder and the study's decoder/MLP head), with
  training augmentation; pretrained encoders get layer-wise lr decay (the loop's);
- ``linear``: a true linear probe. The encoder is frozen in eval mode and only one linear
  layer learns on its patch tokens (land cover: per-token class logits, bilinearly
  upsampled to the pixels; tree cover: a linear regression on the mean-pooled tokens),
  after a standardisation without parameters, so the probe has ``C x D + C`` (``D + 1``)
  trainable parameters and measures the representation, not a decoder. The encoder's
  tokens are computed once per chip (:func:`cache_features`). With ``--init pixel`` the
  "encoder" is the identity on each pixel's channels: the per-pixel control;
- ``knn``: k-nearest-neighbour label transfer on the frozen tokens (cosine similarity,
  temperature-weighted votes as in DINO's k-NN evaluation), no training at all; ``k`` is
  chosen on the validation split from ``knn_k`` (:mod:`sarssl.downstream.knn`);
- ``decoder``: the frozen encoder with the study's conv decoder (land cover) / MLP head
  (tree cover) trained on its cached tokens: what a small trained decoder makes of the
  features (it scores a frozen *random* encoder highly too, so it is not a probe of the
  representation; the ``linear`` and ``knn`` protocols are).

Which inits take which protocols is :data:`sarssl.vocabulary.INIT_PROTOCOLS` (the U-Net
only ``finetune``, the per-pixel control only ``linear``); ``scratch`` under a frozen
protocol is the frozen randomly initialised encoder, the negative control.

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
from ..vocabulary import INIT_PROTOCOLS


class Protocol:
    """What a protocol decides; the defaults are full fine-tuning's."""

    name = ""
    augment = True
    """whether training batches are augmented (dihedral flips/rotations)"""
    head = "decoder"
    """the task head :func:`sarssl.downstream.models.build_task_model` builds"""
    trains = True
    """False: fitted without gradient steps (k-NN)"""
    frozen = False
    """whether the encoder is frozen (its tokens are then cached once per chip)"""
    convex = False
    """a linear model on fixed inputs: trained with the ``probe_epochs`` and
    ``probe_lr_grid`` hyper-parameters (cheap steps, so many of them, to convergence)"""

    def check(self, init: str) -> None:
        """Refuse an init this protocol cannot run (:data:`INIT_PROTOCOLS`)."""
        allowed = INIT_PROTOCOLS.get(init)
        if allowed is not None and self.name not in allowed:
            raise SarsslError(
                f"--protocol {self.name} cannot run --init {init} "
                f"(it runs with --protocol {' / '.join(allowed)} only)"
            )

    def prepare(self, model: nn.Module, init: str) -> None:
        """Before the model moves to the device: freeze what must not learn."""

    def prepare_splits(
        self,
        model: nn.Module,
        splits: Iterable[Any],
        device: torch.device,
        dtype: str,
        batch_size: int = 64,
    ) -> None:
        """After the model is on the device: precompute per-chip inputs of each split."""

    def train_mode(self, model: nn.Module) -> None:
        """Set train/eval modes at the start of every training epoch."""
        model.train()


class FullFinetune(Protocol):
    """Encoder and head learn together."""

    name = "finetune"


class FrozenEncoder(Protocol):
    """Frozen encoder in eval mode, tokens cached once per chip, no augmentation (the
    cached tokens are of the unaugmented chips)."""

    augment = False
    frozen = True

    def prepare(self, model: nn.Module, init: str) -> None:
        if not hasattr(model, "backbone"):
            return  # the per-pixel control: nothing to freeze
        for p in model.backbone.parameters():
            p.requires_grad_(False)

    def prepare_splits(
        self,
        model: nn.Module,
        splits: Iterable[Any],
        device: torch.device,
        dtype: str,
        batch_size: int = 64,
    ) -> None:
        if not hasattr(model, "backbone"):
            return
        for split in splits:
            cache_features(model, split, batch_size, device, dtype)

    def train_mode(self, model: nn.Module) -> None:
        model.train()
        if hasattr(model, "backbone"):
            model.backbone.eval()  # frozen: no dropout/drop-path in the features


class LinearProbe(FrozenEncoder):
    """One linear layer on frozen patch tokens (or, for ``pixel``, on raw pixels)."""

    name = "linear"
    head = "linear"
    convex = True


class KnnProbe(FrozenEncoder):
    """k-NN label transfer on frozen patch tokens; nothing is trained."""

    name = "knn"
    head = "linear"  # built for its encoder only; the head is never used
    trains = False


class DecoderProbe(FrozenEncoder):
    """The study's decoder / MLP head trained on frozen patch tokens."""

    name = "decoder"


PROTOCOLS: dict[str, Protocol] = {
    p.name: p for p in (FullFinetune(), LinearProbe(), KnnProbe(), DecoderProbe())
}


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
    """Patch tokens of the frozen encoder for every chip of ``split``: the encoder never
    changes, so it runs once per chip instead of once per epoch. The tokens are kept
    where the split keeps its chips (``split.feature_device``: the device for chips in
    memory, the host for streamed splits, so device memory stays bounded)."""
    from ..encoders import patch_tokens

    model.backbone.eval()
    keep = getattr(split, "feature_device", device)
    feats = []
    for start in range(0, len(split), batch_size):
        idx = np.arange(start, min(start + batch_size, len(split)))
        with autocast(device, dtype):
            feats.append(patch_tokens(model.backbone, split.batch(idx)["image"]).float().to(keep))
    split["features"] = torch.cat(feats)
