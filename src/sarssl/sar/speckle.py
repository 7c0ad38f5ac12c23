"""Speckle filters for SAR intensity images in radar geometry (NaN-aware, numba-compiled).

All filters work on *linear intensity* (sigma0/beta0/gamma0 power, not dB, not amplitude)
with multiplicative speckle ``y = x * v``, ``E[v] = 1``, ``var(v) = 1 / ENL`` (equivalent
number of looks). NaN marks no data: it never enters a window statistic and stays NaN.

Filters (definitions follow ESA SNAP/s1tbx ``gpf/filtering`` and the papers cited):

- ``boxcar``: window mean.
- ``lee``: Lee (1980) local linear MMSE, ``x = m + b (y - m)``,
  ``b = var_x / var_y``, ``var_x = (var_y - m^2 s_v^2) / (1 + s_v^2)``, ``s_v^2 = 1/ENL``.
- ``refined_lee``: Lee (1981) refined filter: in an N x N window (7 x 7 default), the means
  of 3 x 3 sub-windows (a 3 x 3 array of them) give gradients in four directions
  (0, 45, 90, 135 degrees); the strongest one fixes the edge direction and the side whose
  sub-window mean is closer to the centre one picks one of eight edge-aligned half windows
  (the half-plane on that side including the centre line, 28 of 49 pixels for 7 x 7), on
  which the Lee MMSE estimate is computed. Edges stay sharp because pixels across the
  edge are never averaged.
- ``lee_sigma``: Lee et al. (2009) improved sigma filter (simplified: no point-target
  preservation): an a-priori estimate from a 3 x 3 Lee filter sets the sigma range
  ``[x_hat * eta1, x_hat * eta2]`` (the speckle pdf's central 90 % interval for the ENL);
  the Lee MMSE estimate is then computed on the window pixels inside that range.
- ``gamma_map``: Lopes et al. (1990) Gamma maximum a posteriori filter with
  heterogeneity thresholds ``C_u = 1/sqrt(ENL)``, ``C_max = sqrt(2) C_u``.
- ``none``: copy.

When ``enl`` is not given it is estimated from the image (:func:`estimate_enl`).
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np

from ..errors import SarsslError

log = logging.getLogger(__name__)

FILTERS = ("refined_lee", "lee", "lee_sigma", "gamma_map", "boxcar", "none")


# ---------------------------------------------------------------------------------------
# ENL estimate
# ---------------------------------------------------------------------------------------
def estimate_enl(image: np.ndarray, window: int = 7, step: int = 4) -> float:
    """Equivalent number of looks of an intensity image.

    The speckle coefficient of variation squared, ``var/mean^2 = 1/ENL``, is measured in
    ``window`` x ``window`` boxes (every ``step`` px); texture only ever raises it, so a
    low quantile (the 25th percentile, close to the median of homogeneous boxes) is used.
    Falls back to 4.4 (Sentinel-1 IW GRDH nominal) when too few valid boxes exist.
    """
    cv2 = _box_cv2(np.ascontiguousarray(image, dtype=np.float32), window, step)
    cv2 = cv2[np.isfinite(cv2) & (cv2 > 0)]
    if cv2.size < 20:
        return 4.4
    # the sample CV^2 of n speckle values is biased low by (n-1)/n
    n = window * window
    return float(1.0 / (np.quantile(cv2, 0.25) * n / (n - 1)))


@numba.njit(cache=True)
def _box_cv2(img, w, step):
    h = w // 2
    rows, cols = img.shape
    out = []
    for r in range(h, rows - h, step):
        for c in range(h, cols - h, step):
            s = 0.0
            s2 = 0.0
            n = 0
            for i in range(r - h, r + h + 1):
                for j in range(c - h, c + h + 1):
                    v = img[i, j]
                    if v == v:
                        s += v
                        s2 += v * v
                        n += 1
            if n == w * w and s > 0:
                m = s / n
                out.append((s2 / n - m * m) / (m * m))
    return np.array(out)


# ---------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------
@numba.njit(cache=True, parallel=True)
def _boxcar(img, w):
    rows, cols = img.shape
    h = w // 2
    out = np.empty_like(img)
    for r in numba.prange(rows):
        for c in range(cols):
            if img[r, c] != img[r, c]:
                out[r, c] = np.nan
                continue
            s = 0.0
            n = 0
            for i in range(max(r - h, 0), min(r + h + 1, rows)):
                for j in range(max(c - h, 0), min(c + h + 1, cols)):
                    v = img[i, j]
                    if v == v:
                        s += v
                        n += 1
            out[r, c] = s / n
    return out


@numba.njit(cache=True, inline="always")
def _window_stats(img, r, c, h):
    """NaN-aware mean and variance of the (2h+1)^2 window at (r, c), clipped at the edges
    (the centre pixel is valid, so the window holds at least one value)."""
    rows, cols = img.shape
    s = 0.0
    s2 = 0.0
    n = 0
    for i in range(max(r - h, 0), min(r + h + 1, rows)):
        for j in range(max(c - h, 0), min(c + h + 1, cols)):
            v = img[i, j]
            if v == v:
                s += v
                s2 += v * v
                n += 1
    m = s / n
    return m, s2 / n - m * m


@numba.njit(cache=True, inline="always")
def _mmse(y, m, var, sv2):
    """Lee MMSE estimate of one pixel from window mean m and variance var."""
    if var <= 0.0 or m <= 0.0:
        return m
    var_x = (var - m * m * sv2) / (1.0 + sv2)
    if var_x < 0.0:
        var_x = 0.0
    b = var_x / var
    if b > 1.0:
        b = 1.0
    return m + b * (y - m)


@numba.njit(cache=True, parallel=True)
def _lee(img, w, sv2):
    rows, cols = img.shape
    h = w // 2
    out = np.empty_like(img)
    for r in numba.prange(rows):
        for c in range(cols):
            y = img[r, c]
            if y != y:
                out[r, c] = np.nan
                continue
            m, var = _window_stats(img, r, c, h)
            out[r, c] = _mmse(y, m, var, sv2)
    return out


@numba.njit(cache=True, parallel=True, fastmath=True)
def _box_mean(img, sub):
    """NaN-aware ``sub`` x ``sub`` window mean (clipped at the image edges; NaN if empty).

    Separable: a vertical running sum per column, then a horizontal one per row, so the
    cost is O(1) per pixel whatever the window.
    """
    rows, cols = img.shape
    h = sub // 2
    vs = np.empty((rows, cols), dtype=np.float32)
    vn = np.empty((rows, cols), dtype=np.int32)
    for r in numba.prange(rows):
        i0 = max(r - h, 0)
        i1 = min(r + h + 1, rows)
        for c in range(cols):
            s = np.float32(0.0)
            n = 0
            for i in range(i0, i1):
                v = img[i, c]
                if v == v:
                    s += v
                    n += 1
            vs[r, c] = s
            vn[r, c] = n
    out = np.empty((rows, cols), dtype=np.float32)
    for r in numba.prange(rows):
        for c in range(cols):
            j0 = max(c - h, 0)
            j1 = min(c + h + 1, cols)
            s = np.float32(0.0)
            n = 0
            for j in range(j0, j1):
                s += vs[r, j]
                n += vn[r, j]
            out[r, c] = s / n if n > 0 else np.nan
    return out


@numba.njit(cache=True, parallel=True)
def _refined_lee(img, w, sub, stride, offsets, sv2):
    """Refined Lee on a float32 image; ``offsets`` (8, K, 2): (row, col) offsets of the K
    pixels of each edge-aligned half window (:func:`edge_masks`)."""
    rows, cols = img.shape
    h = w // 2
    means = _box_mean(img, sub)
    nk = offsets.shape[1]
    flat_img = img.ravel()
    flat = offsets[:, :, 0] * cols + offsets[:, :, 1]
    out = np.empty_like(img)
    for r in numba.prange(rows):
        interior_r = r - h >= 0 and r + h < rows
        for c in range(cols):
            y = img[r, c]
            if y != y:
                out[r, c] = np.nan
                continue
            # 3 x 3 array of sub-window means (centres at -stride, 0, +stride); a centre
            # outside the image or an all-NaN sub-window means no direction (full window)
            k = -1
            if r - stride >= 0 and r + stride < rows and c - stride >= 0 and c + stride < cols:
                m00 = means[r - stride, c - stride]
                m01 = means[r - stride, c]
                m02 = means[r - stride, c + stride]
                m10 = means[r, c - stride]
                mc = means[r, c]
                m12 = means[r, c + stride]
                m20 = means[r + stride, c - stride]
                m21 = means[r + stride, c]
                m22 = means[r + stride, c + stride]
                if (
                    m00 == m00
                    and m01 == m01
                    and m02 == m02
                    and m10 == m10
                    and mc == mc
                    and m12 == m12
                    and m20 == m20
                    and m21 == m21
                    and m22 == m22
                ):
                    g0 = abs(m12 - m10)  # along columns: vertical edge
                    g1 = abs(m21 - m01)  # along rows: horizontal edge
                    g2 = abs(m22 - m00)  # diagonal
                    g3 = abs(m20 - m02)  # anti-diagonal
                    d = 0
                    gmax = g0
                    plus = m12
                    minus = m10
                    if g1 > gmax:
                        d = 1
                        gmax = g1
                        plus = m21
                        minus = m01
                    if g2 > gmax:
                        d = 2
                        gmax = g2
                        plus = m22
                        minus = m00
                    if g3 > gmax:
                        d = 3
                        gmax = g3
                        plus = m20
                        minus = m02
                    k = 2 * d + (0 if abs(plus - mc) <= abs(minus - mc) else 1)
            if k < 0:  # no edge direction: the full window
                m, var = _window_stats(img, r, c, h)
            else:
                s = 0.0
                s2 = 0.0
                n = 0
                if interior_r and c - h >= 0 and c + h < cols:
                    # fast path: the half window lies inside the image; one flat index per
                    # sample (offsets pre-multiplied by the row length)
                    base = r * cols + c
                    for q in range(nk):
                        v = flat_img[base + flat[k, q]]
                        if v == v:
                            s += v
                            s2 += v * v
                            n += 1
                else:
                    for q in range(nk):
                        ri = r + offsets[k, q, 0]
                        cj = c + offsets[k, q, 1]
                        if ri < 0 or ri >= rows or cj < 0 or cj >= cols:
                            continue
                        v = img[ri, cj]
                        if v == v:
                            s += v
                            s2 += v * v
                            n += 1
                m = s / n
                var = s2 / n - m * m
            out[r, c] = _mmse(y, m, var, sv2)
    return out


@numba.njit(cache=True, parallel=True)
def _gamma_map(img, w, enl):
    rows, cols = img.shape
    h = w // 2
    out = np.empty_like(img)
    cu = 1.0 / math.sqrt(enl)
    cmax = math.sqrt(2.0) * cu
    for r in numba.prange(rows):
        for c in range(cols):
            y = img[r, c]
            if y != y:
                out[r, c] = np.nan
                continue
            m, var = _window_stats(img, r, c, h)
            if m <= 0.0 or var <= 0.0:
                out[r, c] = m
                continue
            ci = math.sqrt(var) / m
            if ci <= cu:
                out[r, c] = m
            elif ci >= cmax:
                out[r, c] = y
            else:
                alpha = (1.0 + cu * cu) / (ci * ci - cu * cu)
                b = alpha - enl - 1.0
                d = m * m * b * b + 4.0 * alpha * enl * m * y
                out[r, c] = (b * m + math.sqrt(d)) / (2.0 * alpha)
    return out


@numba.njit(cache=True, parallel=True)
def _lee_sigma(img, prior, w, sv2, eta1, eta2):
    rows, cols = img.shape
    h = w // 2
    out = np.empty_like(img)
    for r in numba.prange(rows):
        for c in range(cols):
            y = img[r, c]
            if y != y:
                out[r, c] = np.nan
                continue
            lo = prior[r, c] * eta1
            hi = prior[r, c] * eta2
            s = 0.0
            s2 = 0.0
            n = 0
            for i in range(max(r - h, 0), min(r + h + 1, rows)):
                for j in range(max(c - h, 0), min(c + h + 1, cols)):
                    v = img[i, j]
                    if v == v and v >= lo and v <= hi:
                        s += v
                        s2 += v * v
                        n += 1
            if n == 0:
                out[r, c] = prior[r, c]
                continue
            m = s / n
            var = s2 / n - m * m
            out[r, c] = _mmse(y, m, var, sv2)
    return out


# ---------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------
def edge_masks(window: int) -> np.ndarray:
    """The eight edge-aligned half windows (8, N, N) of the refined Lee filter.

    Mask ``2 d + s`` keeps the half-plane (centre line included) on side ``s`` (0 = plus,
    1 = minus) of direction ``d``: normals (0, 1), (1, 0), (1, 1), (1, -1) in (row, col).
    """
    h = window // 2
    i, j = np.mgrid[-h : h + 1, -h : h + 1]
    normals = [(0, 1), (1, 0), (1, 1), (1, -1)]
    masks = []
    for nr, nc in normals:
        dot = i * nr + j * nc
        masks.append(dot >= 0)
        masks.append(dot <= 0)
    return np.array(masks)


def _mask_offsets(masks: np.ndarray) -> np.ndarray:
    """(8, K, 2) int64 (row, col) offsets from the centre of each half window's pixels."""
    h = masks.shape[1] // 2
    offs = [np.argwhere(m) - h for m in masks]
    if len({len(o) for o in offs}) != 1:  # pragma: no cover - the half planes are symmetric
        raise SarsslError("refined Lee: half windows of unequal size")
    return np.ascontiguousarray(np.stack(offs), dtype=np.int64)


def speckle_filter(
    image: np.ndarray,
    method: str = "refined_lee",
    window: int = 7,
    enl: float | None = None,
) -> np.ndarray:
    """Filter a linear-intensity image (2-D, NaN = no data); returns float32.

    ``window`` is the odd window size in pixels (refined Lee: >= 5); ``enl`` the speckle's
    equivalent number of looks (estimated from the image when None).
    """
    if method not in FILTERS:
        raise SarsslError(f"speckle filter {method!r}: expected one of {', '.join(FILTERS)}")
    img = np.ascontiguousarray(image, dtype=np.float32)
    if img.ndim != 2:
        raise SarsslError(f"speckle filter: expected a 2-D image, got shape {img.shape}")
    if method == "none":
        return img.copy()
    if window < 3 or window % 2 == 0:
        raise SarsslError(f"speckle window {window}: must be an odd number >= 3")
    if method == "boxcar":
        return _boxcar(img, window)
    if enl is None:
        enl = estimate_enl(img)
        log.debug("estimated ENL %.2f", enl)
    sv2 = 1.0 / float(enl)
    if method == "lee":
        return _lee(img, window, sv2)
    if method == "refined_lee":
        if window < 5:
            raise SarsslError(f"speckle window {window}: refined Lee needs a window >= 5")
        sub = 2 * ((window - 1) // 4) + 1
        stride = (window - sub) // 2
        return _refined_lee(img, window, sub, stride, _mask_offsets(edge_masks(window)), sv2)
    if method == "gamma_map":
        return _gamma_map(img, window, float(enl))
    # lee_sigma
    from scipy.stats import gamma

    # central 90 % of the unit-mean Gamma(L, 1/L) speckle intensity pdf
    eta1 = float(gamma.ppf(0.05, enl, scale=1.0 / enl))
    eta2 = float(gamma.ppf(0.95, enl, scale=1.0 / enl))
    prior = _lee(img, 3, sv2)
    return _lee_sigma(img, prior, window, sv2, eta1, eta2)
