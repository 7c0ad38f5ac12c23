"""Evaluation metrics for the two downstream tasks.

Land cover (segmentation, 11 ESA WorldCover classes, 255 = ignore):

- per-class IoU = TP / (TP + FP + FN), from a confusion matrix accumulated over the whole
  split (not averaged per chip);
- mIoU = mean IoU over the classes that occur in the target *or* the prediction (a class
  absent from both has an undefined IoU and is left out, so a small test split is not
  penalised for classes it does not contain);
- overall accuracy = correctly classified labelled pixels / labelled pixels.

Tree cover (chip-level regression, percent): RMSE, MAE and the coefficient of
determination R2 = 1 - SS_res / SS_tot (torchmetrics). Chips with an unknown (NaN) target
are skipped.

The confusion matrix is one ``torch.bincount`` on the CPU rather than torchmetrics'
``MulticlassConfusionMatrix``: under deterministic algorithms (every seeded run here)
torchmetrics replaces ``bincount`` by a pixels x classes^2 comparison matrix, about 4 GB
for ten 448-px chips, while the CPU ``bincount`` is deterministic already and needs
8 bytes a pixel.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..vocabulary import IGNORE_INDEX, N_LANDCOVER_CLASSES, WORLDCOVER_NAMES


class SegmentationMeter:
    """Accumulates a confusion matrix over batches; :meth:`compute` returns the scores."""

    def __init__(self, num_classes: int = N_LANDCOVER_CLASSES, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.counts = torch.zeros(num_classes * num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``: class map (B, H, W) or logits (B, C, H, W); ``target`` (B, H, W)."""
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        c = self.num_classes
        pred = pred.detach().to("cpu").flatten().long()
        target = target.detach().to("cpu").flatten().long()
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        if ((target < 0) | (target >= c) | (pred < 0) | (pred >= c)).any():
            raise ValueError(f"class indices must lie in [0, {c}) (or be {self.ignore_index})")
        self.counts += torch.bincount(target * c + pred, minlength=c * c)

    @property
    def confusion(self) -> torch.Tensor:
        """(C, C) counts, rows = target class, columns = predicted class."""
        return self.counts.reshape(self.num_classes, self.num_classes).clone()

    def compute(self) -> dict[str, Any]:
        return scores_from_confusion(self.confusion)


def scores_from_confusion(cm: torch.Tensor) -> dict[str, Any]:
    """``{"miou", "overall_accuracy", "iou": [per class, NaN where undefined]}``."""
    cm = cm.to(torch.float64)
    tp = cm.diag()
    support = cm.sum(1) + cm.sum(0) - tp  # TP + FN + FP
    iou = torch.where(support > 0, tp / support.clamp(min=1), torch.full_like(tp, float("nan")))
    present = support > 0
    total = cm.sum()
    return {
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "overall_accuracy": float(tp.sum() / total) if total > 0 else float("nan"),
        "iou": [float(v) for v in iou],
    }


def regression_scores(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """RMSE, MAE (target units, here percent) and R2 over the chips with a known target."""
    from torchmetrics.functional import mean_absolute_error, mean_squared_error, r2_score

    pred = torch.as_tensor(pred, dtype=torch.float64).flatten()
    target = torch.as_tensor(target, dtype=torch.float64).flatten()
    ok = torch.isfinite(target)
    pred, target = pred[ok], target[ok]
    if target.numel() == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan")}
    rmse = math.sqrt(float(mean_squared_error(pred, target)))
    mae = float(mean_absolute_error(pred, target))
    r2 = (
        float(r2_score(pred, target))
        if target.numel() > 1 and float(target.var()) > 0
        else float("nan")
    )
    return {"rmse": rmse, "mae": mae, "r2": r2}


def metric_rows(task: str, scores: dict[str, Any]) -> list[tuple[str, float]]:
    """``(metric, value)`` pairs for the tidy metrics table (undefined per-class IoUs are
    left out rather than written as NaN)."""
    if task == "landcover":
        rows = [("miou", scores["miou"]), ("overall_accuracy", scores["overall_accuracy"])]
        rows += [
            (f"iou_{name}", v)
            for name, v in zip(WORLDCOVER_NAMES, scores["iou"])
            if not math.isnan(v)
        ]
        return rows
    return [("rmse", scores["rmse"]), ("mae", scores["mae"]), ("r2", scores["r2"])]
