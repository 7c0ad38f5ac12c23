"""Hand-computed checks of the segmentation and regression metrics."""

import math

import pytest
import torch

from sarssl.downstream.evaluation import metric_rows, regression_scores, segmentation_scores


def test_segmentation_scores_by_hand():
    # target / prediction on 6 pixels, 255 ignored; classes 0, 1, 2 of 11
    target = torch.tensor([[0, 0, 1, 1, 2, 255]])
    pred = torch.tensor([[0, 1, 1, 1, 0, 2]])
    s = segmentation_scores(pred, target)
    # class 0: TP 1, FP 1 (pixel 4), FN 1 (pixel 1) -> 1/3
    # class 1: TP 2, FP 1, FN 0 -> 2/3 ; class 2: TP 0, FN 1 -> 0 (ignored pixel does not count as FP)
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


def test_patch_labels_and_probes():
    import torch

    from sarssl.downstream.evaluation import patch_labels, probe_scores

    lc = torch.tensor([[[0, 0, 1, 1], [0, 2, 1, 255], [255, 255, 3, 3], [255, 255, 3, 2]]], dtype=torch.uint8)
    assert patch_labels(lc, 2).tolist() == [[0, 1, 255, 3]]
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (400,), generator=g)
    centres = torch.randn(4, 16, generator=g) * 3
    x = centres[y] + torch.randn(400, 16, generator=g) * 0.5  # separable clusters
    s = probe_scores(x[:300], y[:300], x[300:], y[300:])
    assert s["knn_accuracy"] > 0.95 and s["linear_accuracy"] > 0.95 and s["majority_accuracy"] < 0.5
    noise = torch.randn(400, 16, generator=g)  # features unrelated to the labels
    r = probe_scores(noise[:300], y[:300], noise[300:], y[300:])
    assert r["knn_accuracy"] < 0.5 and r["linear_accuracy"] < 0.5
    y_ign = y.clone()
    y_ign[300:350] = 255  # ignored test rows are dropped, not scored
    assert probe_scores(x[:300], y[:300], x[300:], y_ign[300:])["knn_accuracy"] > 0.95
