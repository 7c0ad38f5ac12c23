"""Hand-computed checks of the segmentation and regression metrics."""

import math

import pytest
import torch

from sarssl.downstream.evaluation import SegmentationMeter, metric_rows, regression_scores
from sarssl.vocabulary import WORLDCOVER_NAMES


def segmentation_scores(pred, target):
    meter = SegmentationMeter()
    meter.update(pred, target)
    return meter.compute()


def test_segmentation_scores_by_hand():
    # target / prediction on 6 pixels, 255 ignored; classes 0, 1, 2 of 11
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    s = segmentation_scores(pred, target)
    # class 0: TP 1, FP 1 (pixel 4), FN 1 (pixel 1) -> 1/3
    # class 1: TP 2, FP 1, FN 0 -> 2/3 ; class 2: TP 0, FN 1 -> 0
    # (ignored pixel does not count as FP)
    assert s["iou"][0] == pytest.approx(1 / 3)
    assert s["iou"][1] == pytest.approx(2 / 3)
    assert s["iou"][2] == pytest.approx(0.0)
    assert all(math.isnan(v) for v in s["iou"][3:])  # absent from target and prediction
    assert s["miou"] == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    assert s["overall_accuracy"] == pytest.approx(3 / 5)


def test_segmentation_accepts_logits_and_rows():
    target = torch.tensor([[[3, 3], [4, 255]]])
    logits = torch.zeros(1, 11, 2, 2)
    logits[0, 3] = 1.0  # predicts class 3 everywhere
    s = segmentation_scores(logits, target)
    assert s["iou"][3] == pytest.approx(2 / 3)
    assert s["iou"][4] == pytest.approx(0.0)
    names = dict(metric_rows("landcover", s))
    assert names["miou"] == pytest.approx(1 / 3)
    assert "iou_cropland" in names and "iou_built_up" in names and "iou_tree_cover" not in names


def test_regression_scores_by_hand():
    pred = torch.tensor([10.0, 20.0, 30.0, 99.0])
    target = torch.tensor([12.0, 18.0, 33.0, float("nan")])  # NaN target skipped
    s = regression_scores(pred, target)
    err = torch.tensor([-2.0, 2.0, -3.0])
    assert s["rmse"] == pytest.approx(math.sqrt(float((err**2).mean())))
    assert s["mae"] == pytest.approx(7 / 3)
    t = torch.tensor([12.0, 18.0, 33.0])
    r2 = 1 - float((err**2).sum()) / float(((t - t.mean()) ** 2).sum())
    assert s["r2"] == pytest.approx(r2)
    assert [m for m, _ in metric_rows("treecover", s)] == ["rmse", "mae", "r2"]


def test_metric_names_are_the_vocabulary_class_names():
    """The per-class metrics are ``iou_<name>`` of sarssl.vocabulary.WORLDCOVER_NAMES, in
    class order (the names of every metrics.json and table so far)."""
    iou = [0.5] * len(WORLDCOVER_NAMES)
    names = [
        m for m, _ in metric_rows("landcover", {"miou": 0.5, "overall_accuracy": 0.5, "iou": iou})
    ]
    assert names[2:] == [f"iou_{n}" for n in WORLDCOVER_NAMES]
    assert names[2:] == [
        "iou_tree_cover",
        "iou_shrubland",
        "iou_grassland",
        "iou_cropland",
        "iou_built_up",
        "iou_bare_sparse",
        "iou_snow_ice",
        "iou_water",
        "iou_herbaceous_wetland",
        "iou_mangroves",
        "iou_moss_lichen",
    ]


def test_confusion_matches_torchmetrics_and_stays_small_in_deterministic_mode():
    """The bincount confusion equals torchmetrics' (an independent implementation), with
    ignored pixels left out, and deterministic mode does not change it."""
    import torch
    from torchmetrics.classification import MulticlassConfusionMatrix

    from sarssl.downstream.evaluation import SegmentationMeter

    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 11, (3, 32, 32), generator=g)
    target = torch.randint(0, 11, (3, 32, 32), generator=g)
    target[:, :4] = 255
    ref = MulticlassConfusionMatrix(num_classes=11, ignore_index=255)(
        pred.flatten(), target.flatten()
    )
    meter = SegmentationMeter()
    meter.update(pred[:2], target[:2])
    meter.update(pred[2:].to(torch.uint8), target[2:].to(torch.uint8))
    assert torch.equal(meter.confusion, ref.long())
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        again = SegmentationMeter()
        again.update(pred, target)
        assert torch.equal(again.confusion, ref.long())
    finally:
        torch.use_deterministic_algorithms(was)
