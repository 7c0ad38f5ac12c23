"""Tests for sarssl.downstream.statistics: per-chip components, the paired bootstrap over
test chips and seeds (coverage at the nominal rate), paired differences, the monotone-fit
label-efficiency estimate ("not detected", "not reached") and the regional claim."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest
import torch

from sarssl.downstream import statistics as st
from sarssl.downstream.evaluation import regression_scores, scores_from_confusion
from sarssl.errors import InputError

RUN = dict(
    task="treecover",
    init="scratch",
    protocol="finetune",
    fraction=1.0,
    seed=0,
    pretrain_area="none",
    finetune_area="rome",
)


def boot_of(runs: list[tuple[dict, np.ndarray]], n_boot=1000, seed=0, n_chips=None):
    """A PairedBootstrap of tree-cover runs given as (run keys, chip errors)."""
    keys, ids, comps = [], [], []
    for run, err in runs:
        n = len(err)
        target = np.linspace(10.0, 60.0, n)
        keys.append(dict(RUN, **run))
        ids.append(np.array([f"c{i:03d}" for i in range(n)]))
        comps.append(st.chip_components("treecover", target + err, target))
    return st.PairedBootstrap(pd.DataFrame(keys), ids, comps, n_boot=n_boot, seed=seed)


# ------------------------------------------------------------------ components
def test_landcover_components_reproduce_evaluation_and_resamples():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, size=(12, 8, 8)).astype(np.uint8)
    target[:, 0] = 255
    target[3] = 255  # a chip without labels
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 6, target.shape))
    pred = np.where(target == 255, 7, pred).astype(np.uint8)  # ignored pixels are not counted
    comps = st.chip_components("landcover", pred, target)
    assert comps.shape == (12, 121) and comps[3].sum() == 0
    ok = target != 255
    assert comps.sum() == ok.sum()
    cm = np.zeros((11, 11))
    np.add.at(cm, (target[ok].astype(int), pred[ok].astype(int)), 1)
    ref = scores_from_confusion(torch.as_tensor(cm))
    sums = comps.sum(0)
    assert st.metric_from_components("landcover", "miou", sums) == pytest.approx(ref["miou"])
    assert st.metric_from_components("landcover", "overall_accuracy", sums) == pytest.approx(
        ref["overall_accuracy"]
    )
    assert st.metric_from_components("landcover", "iou_grassland", sums) == pytest.approx(
        ref["iou"][2]
    )
    # the mIoU of a resample (chips repeated) is the mIoU of the repeated chips' pixels
    pick = np.array([0, 0, 5, 7, 7, 7, 11])
    w = np.bincount(pick, minlength=12).astype(float)
    rep_t, rep_p = target[pick], pred[pick]
    ok = rep_t != 255
    cm = np.zeros((11, 11))
    np.add.at(cm, (rep_t[ok].astype(int), rep_p[ok].astype(int)), 1)
    direct = scores_from_confusion(torch.as_tensor(cm))["miou"]
    assert st.metric_from_components("landcover", "miou", w @ comps) == pytest.approx(direct)


def test_treecover_components_reproduce_evaluation():
    rng = np.random.default_rng(1)
    target = rng.uniform(0, 80, 40)
    target[[3, 9]] = np.nan  # unknown targets are skipped
    pred = target + rng.normal(0, 7, 40)
    pred[3] = 5.0
    comps = st.chip_components("treecover", pred, target)
    ref = regression_scores(torch.as_tensor(pred), torch.as_tensor(target))
    for m in ("rmse", "mae", "r2"):
        assert st.metric_from_components("treecover", m, comps.sum(0)) == pytest.approx(ref[m])


def test_read_predictions_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="predictions.npz: predictions file not found"):
        st.read_predictions(tmp_path / "predictions.npz", "treecover")
    p = tmp_path / "bad.npz"
    np.savez(p, ids=np.array(["a", "b"]), pred=np.zeros(2))
    with pytest.raises(InputError, match="bad.npz: missing array"):
        st.read_predictions(p, "treecover")
    np.savez(p, ids=np.array(["a", "a"]), pred=np.zeros(2), target=np.zeros(2))
    with pytest.raises(InputError, match="duplicate test chip ids"):
        st.read_predictions(p, "treecover")


def test_runs_of_one_area_must_share_test_chips():
    keys = [dict(RUN), dict(RUN, init="mae", pretrain_area="rome")]
    comps = [st.chip_components("treecover", np.ones(3), np.zeros(3))] * 2
    ids = [np.array(["a", "b", "c"]), np.array(["c", "b", "a"])]  # same chips, any order: ok
    st.PairedBootstrap(pd.DataFrame(keys), ids, comps, n_boot=10)
    ids[1] = np.array(["a", "b", "d"])
    with pytest.raises(InputError, match="test chips differ"):
        st.PairedBootstrap(pd.DataFrame(keys), ids, comps, n_boot=10)


# ------------------------------------------------------------------ bootstrap
def test_isotonic_matches_pool_adjacent_violators():
    def pava(y):
        blocks = [[v, 1] for v in y]
        i = 0
        while i < len(blocks) - 1:
            if blocks[i][0] > blocks[i + 1][0]:
                a, b = blocks[i], blocks.pop(i + 1)
                a[0] = (a[0] * a[1] + b[0] * b[1]) / (a[1] + b[1])
                a[1] += b[1]
                i = max(i - 1, 0)
            else:
                i += 1
        return np.concatenate([[v] * n for v, n in blocks])

    rng = np.random.default_rng(3)
    y = rng.normal(size=(300, 6)).cumsum(axis=1) * 0.3 + rng.normal(size=(300, 6))
    fit = st.isotonic_increasing(y)
    np.testing.assert_allclose(fit, np.stack([pava(r) for r in y]), atol=1e-12)
    assert (np.diff(fit, axis=1) >= -1e-12).all()
    np.testing.assert_allclose(st.isotonic_increasing([[0.55, 0.49]]), [[0.52, 0.52]])


def test_bootstrap_ci_covers_the_true_mean_at_the_nominal_rate():
    """200 synthetic experiments: the MAE of 30 chips with half-normal errors (true MAE =
    sigma * sqrt(2/pi)); the 95 % interval must cover it 95 % of the time, within the
    binomial tolerance of 200 trials (3 standard errors: 0.904..0.996)."""
    rng = np.random.default_rng(2024)
    sigma, n_exp = 8.0, 200
    truth = sigma * np.sqrt(2 / np.pi)
    hits = 0
    for k in range(n_exp):
        boot = boot_of([({}, rng.normal(0, sigma, 30))], n_boot=1000, seed=k)
        iv = boot.group_interval(dict(RUN), "mae")
        hits += iv.low <= truth <= iv.high
    rate = hits / n_exp
    tol = 3 * np.sqrt(0.95 * 0.05 / n_exp)
    assert abs(rate - 0.95) <= tol, rate


def test_miou_interval_covers_the_population_miou_despite_small_sample_bias():
    """Land cover: a pool of 3000 chips, each dominated by one class, with class-dependent
    errors; the truth is the pool's mIoU. 200 experiments of 30 chips: the mIoU of 30 chips
    is biased low, and the plain percentile interval covered the truth only ~76 % of the
    time; the bias-corrected interval must cover at the nominal rate."""
    rng = np.random.default_rng(0)
    n_pool, h = 3000, 16
    dom = rng.integers(0, 6, n_pool)[:, None, None]
    t = np.where(rng.random((n_pool, h, h)) < 0.7, dom, rng.integers(0, 6, (n_pool, h, h)))
    p = np.where(rng.random(t.shape) < 0.4 + 0.08 * t, t, rng.integers(0, 6, t.shape))
    comps = st.chip_components("landcover", p.astype(np.uint8), t.astype(np.uint8))
    truth = float(st.metric_from_components("landcover", "miou", comps.sum(0)))
    run = dict(RUN, task="landcover")
    ids = np.array([f"c{i}" for i in range(30)])
    hits, n_exp = 0, 200
    for k in range(n_exp):
        pick = rng.choice(n_pool, 30, replace=False)
        boot = st.PairedBootstrap(pd.DataFrame([run]), [ids], [comps[pick]], seed=k)
        iv = boot.group_interval(run, "miou")
        hits += iv.low <= truth <= iv.high
    assert abs(hits / n_exp - 0.95) <= 3 * np.sqrt(0.95 * 0.05 / n_exp), hits / n_exp


def test_paired_difference_cancels_shared_chip_difficulty_and_covers_the_truth():
    """Two inits scored on the same chips: a hard chip is hard for both. The paired
    interval of the difference is narrow and covers the true difference (2.0) at the
    nominal rate; the intervals of the two means are wide."""
    rng = np.random.default_rng(7)
    hits, n_exp = 0, 200
    for k in range(n_exp):
        difficulty = rng.uniform(5.0, 50.0, 30)  # positive errors: MAE = mean error
        a = difficulty + rng.normal(2.0, 1.0, 30)
        b = difficulty + rng.normal(0.0, 1.0, 30)
        boot = boot_of(
            [
                (dict(init="mae", pretrain_area="rome"), a),
                ({}, b),
            ],
            n_boot=500,
            seed=k,
        )
        g = dict(RUN, init="mae", pretrain_area="rome")
        iv, n = boot.paired(g, boot.reference_group(g), "mae")
        assert n == 1
        hits += iv.low <= 2.0 <= iv.high
    assert abs(hits / n_exp - 0.95) <= 3 * np.sqrt(0.95 * 0.05 / n_exp)
    wide = boot.group_interval(g, "mae")
    assert (iv.high - iv.low) < 0.2 * (wide.high - wide.low)
    d = boot.differences({"treecover": "mae"})
    row = d.iloc[0]
    assert row["reference"] == "scratch/finetune" and row["verdict"] == "worse"  # MAE higher
    assert row["difference"] == pytest.approx(np.mean(a - b))


def test_seeds_are_resampled_and_draws_are_seeded():
    rng = np.random.default_rng(0)
    chips = rng.normal(0, 1, 30)
    # three seeds whose label subsets differ a lot (offsets 0, 5, 10), identical chip noise
    runs = [({"seed": s}, np.abs(chips) + 5.0 * s) for s in range(3)]
    one = boot_of(runs[:1]).group_interval(dict(RUN), "mae")
    three = boot_of(runs).group_interval(dict(RUN), "mae")
    assert three.estimate == pytest.approx(np.mean(np.abs(chips)) + 5.0)
    assert (three.high - three.low) > 5 * (one.high - one.low)  # seed variation shows
    again = boot_of(runs).group_interval(dict(RUN), "mae")
    np.testing.assert_array_equal(three.replicates, again.replicates)  # same seed, same CI
    other = boot_of(runs, seed=1).group_interval(dict(RUN), "mae")
    assert not np.array_equal(three.replicates, other.replicates)


def test_group_table_and_differences_pair_controls_with_scratch_finetune():
    err = np.abs(np.random.default_rng(0).normal(0, 5, 20)) + 1.0  # positive: MAE = mean
    runs = [
        ({}, err),
        (dict(protocol="linear"), err + 3),  # random frozen
        (dict(init="pixel", protocol="linear"), err + 1),
        (dict(init="unet"), err - 0.5),
        (dict(init="mae", protocol="linear", pretrain_area="rome"), err + 0.5),
    ]
    boot = boot_of(runs, n_boot=200)
    g = boot.group_table({"treecover": ["mae"]})
    assert len(g) == 5 and (g["n_chips"] == 20).all() and (g["n_seeds"] == 1).all()
    assert (g["ci_low"] <= g["mean"]).all() and (g["mean"] <= g["ci_high"]).all()
    d = boot.differences({"treecover": "mae"}).set_index(["init", "protocol"])
    assert d.loc[("pixel", "linear"), "reference"] == "scratch/finetune"
    assert d.loc[("pixel", "linear"), "difference"] == pytest.approx(1.0)
    assert d.loc[("unet", "finetune"), "difference"] == pytest.approx(-0.5)
    # the frozen MAE encoder is compared with the frozen random one, not with fine-tuning
    assert d.loc[("mae", "linear"), "reference"] == "scratch/linear"
    assert d.loc[("mae", "linear"), "difference"] == pytest.approx(0.5 - 3.0)
    assert ("scratch", "linear") not in d.index  # no row for scratch against itself


# ------------------------------------------------------------------ label efficiency
FR = (0.01, 0.1, 1.0)


def curves_boot(scratch: tuple, mae: tuple, seeds=(0, 1, 2), noise=0.05, area="rome"):
    """Tree-cover MAE curves (lower is better) at FR with small chip noise."""
    rng = np.random.default_rng(11)
    base = rng.normal(0, noise, 30)
    runs = []
    for s in seeds:
        for f, vs, vm in zip(FR, scratch, mae, strict=True):
            runs.append((dict(fraction=f, seed=s, finetune_area=area), vs + base + 1e-3 * s))
            runs.append(
                (
                    dict(init="mae", fraction=f, seed=s, pretrain_area="rome", finetune_area=area),
                    vm + base + rng.normal(0, noise, 30),
                )
            )
    return runs


def test_label_efficiency_known_crossing():
    # scratch reaches MAE 10 with all labels; MAE 25, 15, 5 -> crosses 10 halfway between
    # 10 % and 100 % in log fraction: f* = 10^-0.5
    boot = boot_of(curves_boot((30, 20, 10), (25, 15, 5)))
    eff = boot.label_efficiency({"treecover": "mae"})
    row = eff.iloc[0]
    assert row["status"] == "detected" and row["bound"] == "exact"
    assert row["reference_value"] == pytest.approx(10.0, abs=0.05)
    assert row["fraction_needed"] == pytest.approx(10**-0.5, rel=0.02)
    assert row["ci_low"] <= row["fraction_needed"] <= row["ci_high"]
    assert row["ci_high"] / row["ci_low"] < 1.2  # little noise: a tight interval
    assert row["gain"] == pytest.approx(5.0, abs=0.05) and row["gain_low"] > 0
    assert row["label_reduction"] == pytest.approx(10**0.5, rel=0.02)
    assert re.fullmatch(r"3\d\.\d% \[3\d\.\d%, 3\d\.\d%\]", row["label"]), row["label"]


def test_label_efficiency_not_detected_when_the_true_gain_is_zero():
    """The issue's case: scratch at a small fraction scores above scratch at 100 % (noise).
    An init identical to scratch 'reaches' the reference early on the raw curve, but its
    paired gain's interval includes zero: not detected."""
    boot = boot_of(curves_boot((30, 9.5, 10), (30, 9.5, 10), noise=2.0))
    row = boot.label_efficiency({"treecover": "mae"}).iloc[0]
    assert row["gain_low"] < 0 < row["gain_high"]
    assert row["status"] == "not detected" and row["label"] == "not detected"
    assert np.isnan(row["label_reduction"])


def test_label_efficiency_not_reached_and_monotone_fit():
    # better than scratch at small fractions, worse at 100 %: a gain, but no crossing
    boot = boot_of(curves_boot((30, 20, 10), (20, 15, 12)))
    row = boot.label_efficiency({"treecover": "mae"}).iloc[0]
    assert row["gain_low"] > 0 and row["status"] == "not reached"
    assert row["bound"] == "never" and row["label"] == "not reached (>100%)"
    # a dip of the pretrained curve (10.5 at 10 %, 11 at 100 %) is pooled by the monotone
    # fit to 10.75 > 10: not a crossing at 10 % as the raw curve would have it
    boot = boot_of(curves_boot((30, 20, 10), (25, 10.5, 11)))
    row = boot.label_efficiency({"treecover": "mae"}).iloc[0]
    assert row["bound"] == "never"


def test_regional_claim_out_minus_in_gain():
    runs = curves_boot((30, 20, 10), (28, 18, 8), area="rome")  # in region: gain 2
    runs += curves_boot((30, 20, 10), (25, 15, 5), area="chimoio")  # out of region: gain 5
    boot = boot_of(runs)
    reg = boot.regional({"treecover": "mae"})
    assert len(reg) == 4  # three fractions and their mean
    mean = reg[reg["fraction"].isna()].iloc[0]
    assert mean["in_region"] == "rome" and mean["out_of_region"] == "chimoio"
    assert mean["in_gain"] == pytest.approx(2.0, abs=0.05)
    assert mean["out_gain"] == pytest.approx(5.0, abs=0.05)
    assert mean["difference"] == pytest.approx(3.0, abs=0.05)
    assert mean["ci_low"] < 3.0 < mean["ci_high"] and mean["status"] == "detected"
    # equal gains in and out of region: not detected
    runs = curves_boot((30, 20, 10), (28, 18, 8), area="rome", noise=2.0)
    runs += curves_boot((30, 20, 10), (28, 18, 8), area="chimoio", noise=2.0)
    reg = boot_of(runs).regional({"treecover": "mae"})
    mean = reg[reg["fraction"].isna()].iloc[0]
    assert mean["ci_low"] < 0 < mean["ci_high"] and mean["status"] == "not detected"


def test_demo_scale_runs_in_seconds():
    """~200 land-cover runs of 30 chips of 64 x 64 px, 1000 replicates."""
    rng = np.random.default_rng(5)
    target = rng.integers(0, 11, size=(30, 64, 64)).astype(np.uint8)
    keys, ids, comps = [], [], []
    chip_ids = np.array([f"c{i}" for i in range(30)])
    t0 = time.perf_counter()
    for init in ("scratch", "mae", "dino", "unet", "pixel"):
        for prot in ("finetune", "linear", "knn", "decoder"):
            for f in (0.05, 0.25, 1.0):
                for s in (0, 1, 2):
                    for area in ("rome", "chimoio"):
                        pred = np.where(rng.random(target.shape) < 0.6, target, 3)
                        keys.append(
                            dict(RUN, task="landcover", init=init, protocol=prot, fraction=f)
                            | dict(seed=s, finetune_area=area, pretrain_area="rome")
                        )
                        ids.append(chip_ids)
                        comps.append(st.chip_components("landcover", pred, target))
    t1 = time.perf_counter()
    boot = st.PairedBootstrap(pd.DataFrame(keys), ids, comps, n_boot=1000, seed=0)
    metric = {"landcover": "miou"}
    boot.group_table({"landcover": ["miou"]})
    boot.differences(metric)
    boot.label_efficiency(metric)
    boot.regional(metric)
    t2 = time.perf_counter()
    print(f"{len(keys)} runs: components {t1 - t0:.2f} s, bootstrap {t2 - t1:.2f} s")
    assert len(keys) == 360 and t2 - t1 < 30
