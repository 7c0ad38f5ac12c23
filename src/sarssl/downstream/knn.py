"""k-nearest-neighbour probes on frozen encoder tokens (the ``knn`` protocol).

No parameter is trained, so a k-NN probe measures only how the representation arranges
chips (or patches) of one class near each other; it is the deterministic companion of
the linear probe.

- **Land cover** (per-pixel labels from patch tokens): every training patch token carries
  its ``P x P`` block of pixel labels. A query token's ``k`` nearest training tokens by
  cosine similarity vote for each of its pixels with weight ``exp(sim / T)``, the vote
  being each neighbour's label at the same pixel of its block (unlabelled pixels do not
  vote); the prediction is the class with the most weight (a query pixel without any
  vote gets the training split's most common class). This is label transfer at pixel
  resolution, as in the patch-level k-NN segmentation evaluations of DINO-style work.
- **Tree cover** (one value per chip): the mean-pooled tokens of a chip against those of
  the training chips, prediction = the weighted mean of the ``k`` neighbours' values.

Weights follow DINO's k-NN classifier (Caron et al. 2021, ``eval_knn.py``: cosine
similarity, ``T = 0.07``). Queries are processed in chunks, so memory is bounded by the
bank (``bank`` training tokens at most, a seeded sample when there are more) and the
chunk. ``k`` is chosen on the validation split from a small grid by the caller.
Implemented with plain torch matrix products instead of a library (faiss, sklearn):
the bank is small (the demo: a few thousand tokens), the votes are per pixel (which no
k-NN library does), and it runs on the encoder's device.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..vocabulary import IGNORE_INDEX, N_LANDCOVER_CLASSES

TEMPERATURE = 0.07


def token_labels(landcover: torch.Tensor, patch: int) -> torch.Tensor:
    """``(N, H, W)`` pixel labels -> ``(N * H/P * W/P, P * P)`` label blocks, in the
    order of the encoder's patch tokens (row-major over the patch grid)."""
    n, h, w = landcover.shape
    gh, gw = h // patch, w // patch
    blocks = landcover.reshape(n, gh, patch, gw, patch).permute(0, 1, 3, 2, 4)
    return blocks.reshape(n * gh * gw, patch * patch)


class KnnBank:
    """Normalised training features and their targets (labels blocks or values)."""

    def __init__(
        self,
        features: torch.Tensor,
        targets: torch.Tensor,
        max_bank: int = 200_000,
        seed: int = 0,
    ):
        if features.shape[0] > max_bank:
            keep = np.sort(np.random.default_rng(seed).choice(features.shape[0], max_bank, False))
            sel = torch.as_tensor(keep, device=features.device)
            features, targets = features[sel], targets[sel.to(targets.device)]
        self.features = F.normalize(features.float(), dim=-1)
        self.targets = targets

    def neighbours(self, query: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights ``(Q, k)`` and bank indices ``(Q, k)`` of the ``k`` nearest tokens."""
        q = F.normalize(query.float().to(self.features.device), dim=-1)
        sim, idx = (q @ self.features.T).topk(min(k, self.features.shape[0]), dim=1)
        return torch.exp(sim / TEMPERATURE), idx


def segment(
    bank: KnnBank,
    query: torch.Tensor,
    k: int,
    fallback: int,
    num_classes: int = N_LANDCOVER_CLASSES,
    chunk: int = 4096,
) -> torch.Tensor:
    """Per-pixel classes ``(Q, P*P)`` (uint8) for query tokens ``(Q, D)``."""
    out = []
    for start in range(0, query.shape[0], chunk):
        w, idx = bank.neighbours(query[start : start + chunk], k)
        labels = bank.targets[idx.to(bank.targets.device)].long().to(w.device)  # (q, k, P*P)
        valid = labels != IGNORE_INDEX
        votes = torch.zeros(labels.shape[0], labels.shape[2], num_classes, device=w.device)
        weight = (w[:, :, None] * valid).transpose(1, 2)  # (q, P*P, k)
        votes.scatter_add_(2, labels.clamp(max=num_classes - 1).transpose(1, 2), weight)
        cls = votes.argmax(2)
        cls[votes.sum(2) == 0] = fallback
        out.append(cls.to(torch.uint8).cpu())
    return torch.cat(out)


def regress(bank: KnnBank, query: torch.Tensor, k: int, chunk: int = 4096) -> torch.Tensor:
    """Weighted mean of the neighbours' values for query chips ``(Q, D)``."""
    out = []
    for start in range(0, query.shape[0], chunk):
        w, idx = bank.neighbours(query[start : start + chunk], k)
        vals = bank.targets[idx.to(bank.targets.device)].float().to(w.device)
        out.append(((w * vals).sum(1) / w.sum(1)).cpu())
    return torch.cat(out)


def majority_class(landcover: torch.Tensor, num_classes: int = N_LANDCOVER_CLASSES) -> int:
    """Most common labelled class of ``landcover`` (0 when nothing is labelled)."""
    lab = landcover[landcover != IGNORE_INDEX].long()
    return int(torch.bincount(lab.cpu(), minlength=num_classes).argmax()) if lab.numel() else 0


def build_bank(task: str, split: Any, patch: int, max_bank: int, seed: int) -> KnnBank:
    """The bank of a training split whose ``features`` are cached."""
    feats = split["features"]
    if task == "landcover":
        d = feats.shape[-1]
        return KnnBank(
            feats.reshape(-1, d),
            token_labels(split_landcover(split), patch),
            max_bank=max_bank,
            seed=seed,
        )
    return KnnBank(feats.mean(dim=1), split["treecover"].float(), max_bank=max_bank, seed=seed)


def split_landcover(split: Any) -> torch.Tensor:
    """Every chip's land-cover map of ``split`` (uint8, host), read batch by batch."""
    parts = []
    for start in range(0, len(split), 256):
        idx = np.arange(start, min(start + 256, len(split)))
        parts.append(split.labels(idx).to("cpu", torch.uint8))
    return torch.cat(parts)
