"""Evaluation metrics for the two downstream tasks (torchmetrics-based).

Land cover (segmentation, 11 ESA WorldCover classes, 255 = ignore):

- per-class IoU = TP / (TP + FP + FN), from a confusion matrix accumulated over the whole
  split (not averaged per chip);
- mIoU = mean IoU over the classes that occur in the target *or* the prediction (a class
  absent from both has an undefined IoU and is left out, so a small test split is not
  penalised for classes it does not contain);
- overall accuracy = correctly classified labelled pixels / labelled pixels.

Tree cover (chip-level regression, percent): RMSE, MAE and the coefficient of
determination R2 = 1 - SS_res / SS_tot. Chips with an unknown (NaN) target are skipped.
"""

from __future__ import annotations

import math
from typing import Any

import torch

IGNORE_INDEX = 255
LANDCOVER_CLASSES = (
    "tree_cover",
    "shrubland",
    "grassland",
    "cropland",
    "built_up",
    "bare_sparse",
    "snow_ice",
    "water",
    "herbaceous_wetland",
    "mangroves",
    "moss_lichen",
)
"""WorldCover 2020 codes 10, 20, ..., 90, 95, 100 mapped to classes 0..10, in order."""


class SegmentationMeter:
    """Accumulates a confusion matrix over batches; :meth:`compute` returns the scores."""

    def __init__(self, num_classes: int = len(LANDCOVER_CLASSES), ignore_index: int = IGNORE_INDEX):
        from torchmetrics.classification import MulticlassConfusionMatrix

        self.num_classes = num_classes
        self.metric = MulticlassConfusionMatrix(num_classes=num_classes, ignore_index=ignore_index)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred``: class map (B, H, W) or logits (B, C, H, W); ``target`` (B, H, W)."""
        if pred.dim() == target.dim() + 1:
            pred = pred.argmax(dim=1)
        self.metric.update(pred.detach().to("cpu").long().flatten(), target.detach().to("cpu").long().flatten())

    @property
    def confusion(self) -> torch.Tensor:
        """(C, C) counts, rows = target class, columns = predicted class."""
        return self.metric.compute()

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


def segmentation_scores(pred: torch.Tensor, target: torch.Tensor, num_classes: int = len(LANDCOVER_CLASSES)) -> dict[str, Any]:
    """Scores of one set of predicted class maps (or logits) against targets."""
    meter = SegmentationMeter(num_classes)
    meter.update(pred, target)
    return meter.compute()


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
    r2 = float(r2_score(pred, target)) if target.numel() > 1 and float(target.var()) > 0 else float("nan")
    return {"rmse": rmse, "mae": mae, "r2": r2}


def metric_rows(task: str, scores: dict[str, Any]) -> list[tuple[str, float]]:
    """``(metric, value)`` pairs for the tidy metrics table (undefined per-class IoUs are
    left out rather than written as NaN)."""
    if task == "landcover":
        rows = [("miou", scores["miou"]), ("overall_accuracy", scores["overall_accuracy"])]
        rows += [
            (f"iou_{name}", v) for name, v in zip(LANDCOVER_CLASSES, scores["iou"]) if not math.isnan(v)
        ]
        return rows
    return [("rmse", scores["rmse"]), ("mae", scores["mae"]), ("r2", scores["r2"])]


# --------------------------------------------------------------------------------------
# frozen-feature probes (how useful are self-supervised features, without fine-tuning)
# --------------------------------------------------------------------------------------
def patch_labels(landcover: torch.Tensor, patch: int, ignore_index: int = IGNORE_INDEX,
                 num_classes: int = len(LANDCOVER_CLASSES)) -> torch.Tensor:
    """Majority land-cover class of every ``patch x patch`` block: ``(B, H, W)`` ->
    ``(B, H/P * W/P)`` in the ViT's row-major token order; ``ignore_index`` where the
    block has no labelled pixel."""
    b, h, w = landcover.shape
    lc = landcover.long().reshape(b, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4)
    lc = lc.reshape(b, (h // patch) * (w // patch), patch * patch)
    valid = lc != ignore_index
    counts = torch.zeros(b, lc.shape[1], num_classes + 1, dtype=torch.long)
    counts.scatter_add_(2, torch.where(valid, lc, num_classes), torch.ones_like(lc))
    counts = counts[..., :num_classes]
    out = counts.argmax(-1)
    return torch.where(counts.sum(-1) > 0, out, torch.full_like(out, ignore_index))


def probe_scores(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    k: int = 20,
    ridge: float = 1e-2,
    ignore_index: int = IGNORE_INDEX,
    num_classes: int = len(LANDCOVER_CLASSES),
) -> dict[str, float]:
    """Accuracy of a cosine k-NN and a closed-form ridge linear probe on frozen features.

    ``*_x`` are ``(N, D)`` feature vectors (e.g. ViT patch tokens), ``*_y`` their class
    labels (``ignore_index`` rows are dropped). k-NN: the ``k`` most cosine-similar
    training vectors vote with weight ``exp(sim / 0.07)`` (the DINO paper's weighted k-NN).
    Linear probe: features standardised with the training mean/std, ridge regression
    onto one-hot targets, ``W = (X^T X + ridge N I)^-1 X^T Y`` (deterministic, no
    optimiser), prediction = argmax. Also returns the majority-class baseline.
    Both probes are deterministic functions of the inputs.
    """
    keep_tr, keep_te = train_y != ignore_index, test_y != ignore_index
    xtr, ytr = train_x[keep_tr].double(), train_y[keep_tr].long()
    xte, yte = test_x[keep_te].double(), test_y[keep_te].long()
    if ytr.numel() == 0 or yte.numel() == 0:
        raise ValueError("probe: no labelled training or test vectors")
    onehot = torch.nn.functional.one_hot(ytr, num_classes).double()
    # weighted cosine k-NN
    a = torch.nn.functional.normalize(xtr, dim=1)
    bq = torch.nn.functional.normalize(xte, dim=1)
    sim = bq @ a.T
    kk = min(k, a.shape[0])
    top, idx = sim.topk(kk, dim=1)
    votes = (torch.exp(top / 0.07).unsqueeze(-1) * onehot[idx]).sum(1)
    knn = float((votes.argmax(1) == yte).double().mean())
    # ridge linear probe
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    ztr = torch.cat([(xtr - mu) / sd, torch.ones(len(xtr), 1, dtype=torch.float64)], 1)
    zte = torch.cat([(xte - mu) / sd, torch.ones(len(xte), 1, dtype=torch.float64)], 1)
    gram = ztr.T @ ztr + ridge * len(ztr) * torch.eye(ztr.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(gram, ztr.T @ onehot)
    linear = float(((zte @ w).argmax(1) == yte).double().mean())
    majority = float((yte == torch.bincount(ytr, minlength=num_classes).argmax()).double().mean())
    return {"knn_accuracy": knn, "linear_accuracy": linear, "majority_accuracy": majority}
