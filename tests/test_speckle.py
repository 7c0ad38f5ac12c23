"""Speckle filters on synthetic gamma-distributed speckle (ENL 4.4)."""

from __future__ import annotations

import numpy as np
import pytest

from sarssl.errors import SarsslError
from sarssl.sar.speckle import FILTERS, edge_masks, estimate_enl, speckle_filter

ENL = 4.4


def _speckle(shape, rng):
    return rng.gamma(ENL, 1.0 / ENL, size=shape).astype(np.float32)


def _enl(a: np.ndarray) -> float:
    a = a[np.isfinite(a)]
    return float(a.mean() ** 2 / a.var())


@pytest.fixture(scope="module")
def flat():
    rng = np.random.default_rng(1)
    return 0.05 * _speckle((200, 200), rng)


def test_estimate_enl(flat):
    assert abs(estimate_enl(flat) - ENL) < 0.8


@pytest.mark.parametrize("method", ["refined_lee", "lee", "boxcar", "gamma_map", "lee_sigma"])
def test_homogeneous_mean_preserved_and_enl_rises(flat, method):
    out = speckle_filter(flat, method, 7)
    assert out.dtype == np.float32 and out.shape == flat.shape
    inner = out[10:-10, 10:-10]
    # MAP estimates (the pdf's mode) are slightly biased: Gamma-MAP gets 5 %
    tol = 0.05 if method in ("gamma_map", "lee_sigma") else 0.02
    assert abs(inner.mean() / flat[10:-10, 10:-10].mean() - 1) < tol
    gain = _enl(inner) / _enl(flat)
    minimum = {"refined_lee": 5, "lee": 5, "boxcar": 10, "gamma_map": 5, "lee_sigma": 2}[method]
    assert gain >= minimum, (method, gain)


def test_none_is_copy(flat):
    out = speckle_filter(flat, "none")
    np.testing.assert_array_equal(out, flat)
    assert out is not flat


def _transition_width(profile: np.ndarray, lo: float, hi: float) -> int:
    """Pixels between the 10 % and 90 % crossings of a rising step profile."""
    a = lo + 0.1 * (hi - lo)
    b = lo + 0.9 * (hi - lo)
    return int(np.argmax(profile >= b) - np.argmax(profile > a))


def test_step_edge_stays_sharp_for_refined_lee():
    rng = np.random.default_rng(2)
    truth = np.full((400, 120), 0.02, np.float32)
    truth[:, 60:] = 0.2  # a 10 dB step along columns
    img = truth * _speckle(truth.shape, rng)
    rl = speckle_filter(img, "refined_lee", 7, enl=ENL)
    box = speckle_filter(img, "boxcar", 7)
    prof_rl = rl[20:-20].mean(axis=0)  # average along the edge: the mean profile
    prof_box = box[20:-20].mean(axis=0)
    w_rl = _transition_width(prof_rl[40:80], 0.02, 0.2)
    w_box = _transition_width(prof_box[40:80], 0.02, 0.2)
    assert w_rl <= 2
    assert w_box >= 5
    # far from the edge refined Lee smooths like Lee
    assert _enl(rl[20:-20, 5:45]) > 5 * ENL


def test_diagonal_edge_uses_diagonal_window():
    rng = np.random.default_rng(3)
    i, j = np.mgrid[0:200, 0:200]
    truth = np.where(i > j, 0.2, 0.02).astype(np.float32)
    img = truth * _speckle(truth.shape, rng)
    rl = speckle_filter(img, "refined_lee", 7, enl=ENL)
    box = speckle_filter(img, "boxcar", 7)
    d = i - j
    near = (np.abs(d) == 2) & (i > 10) & (i < 190) & (j > 10) & (j < 190)
    err_rl = np.mean(np.abs(np.log(rl[near] / truth[near])))
    err_box = np.mean(np.abs(np.log(box[near] / truth[near])))
    assert err_rl < 0.6 * err_box


def test_nan_aware():
    rng = np.random.default_rng(4)
    img = 0.1 * _speckle((60, 60), rng)
    img[:, :10] = np.nan
    img[30, 30] = np.nan
    for method in FILTERS:
        out = speckle_filter(img, method, 7, enl=ENL)
        assert np.isnan(out[:, :10]).all() and np.isnan(out[30, 30])
        valid = np.isfinite(img)
        assert np.isfinite(out[valid]).all(), method
        # pixels next to no data are not dragged towards zero
        assert out[5:55, 10].mean() > 0.07


def test_edge_masks_shape():
    m = edge_masks(7)
    assert m.shape == (8, 7, 7)
    assert all(int(k.sum()) == 28 for k in m)
    assert all(k[3, 3] for k in m)


def test_bad_arguments():
    with pytest.raises(SarsslError, match="speckle filter"):
        speckle_filter(np.ones((5, 5)), "median")
    with pytest.raises(SarsslError, match="odd"):
        speckle_filter(np.ones((5, 5)), "lee", 4)
