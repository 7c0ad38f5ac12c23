"""Sentinel-1 GRD radar geometry: orbit, zero-Doppler forward model and its inverse.

The Range-Doppler model (e.g. Small & Schubert 2008, "Guide to ASAR geocoding"; ESA
S1-RS-MDA-52-7441 "Sentinel-1 Product Definition") maps a ground point X (ECEF metres)
to the radar image in two steps:

1. **Azimuth**: the zero-Doppler time t is when the sensor S(t), moving with velocity
   V(t), sees X broadside: ``f(t) = (X - S(t)) . V(t) = 0``. It is solved by Newton's
   method with ``f'(t) = -|V|^2 + (X - S) . A(t)`` (A = acceleration). The GRD line is
   ``(t - t_first_line) / azimuth_time_interval``.
2. **Range**: the slant range R = |X - S(t)| (one-way, metres; the annotation gives two-way
   times tau with R = c tau / 2) is converted to ground range gr by inverting the
   annotation's ``grsr`` polynomial ``R = sum_i c_i (gr - gr0)^i`` (Newton, from the
   ``srgr`` polynomial's estimate) of the coordinate-conversion entry nearest in time to the
   target's image line, and the GRD pixel is ``gr / range_pixel_spacing``. The line is
   ``(t - t_first_line) / azimuth_time_interval`` less the bistatic delay
   ``(tau - tau_ref) / 2`` that IPF applies.

**Geolocation on every processor version (issue #16).** On IPF 002.36 (the 2015 shared
product) targets written at the GCPs' (line, pixel) landed 3.5-4.1 px east of the GCPs'
lon/lat at near range and 0.3-1.6 px west at far range. Three causes, each checked against
the geolocation grid, which carries (line, pixel, lon, lat, height, azimuth time, slant
range time) for 210 points per product (``tests/test_geometry.py``):

- *srgr is not the inverse of grsr in IPF 2.36.* ``grsr(GCP pixel)`` equals every GCP's
  slant range to < 1 cm on all four shared products (2015 included), and ``srgr`` does on
  the 2021 ones, but the 2015 ``srgr(GCP slant range)`` misses the GCP pixel in a wave that
  is the same on every grid row: 0, -3.1, -3.9, -3.3, -2.1, -0.8, +0.3, ... +2.1 px from
  near to far range (a poor degree-4 fit in that version). The model therefore inverts
  grsr; srgr only starts the Newton iteration. SNAP also inverts grsr, by bisection.
- *Each entry holds for its own 1 s azimuth block; entries are not to be blended.* The
  GCPs' pixels match the grsr of the entry nearest in time exactly (0.000 px, all four
  products, GCP rows 0.09-0.32 s from it), while the linear blend of the two bracketing
  entries (as xarray-sentinel and the previous model did) misses them by up to 0.3, 0.5
  and 1.5 px on the three later products: the entries follow the terrain height of their
  block and jump by up to 18 px at far range from one second to the next. (The shared
  products carry no measurements, so this rests on the GCPs, ESA's own statement of the
  image geometry.) The GRD pixel is thus piecewise in azimuth; geocoding interpolates the
  smooth slant range between its LUT nodes and converts it per pixel
  (:mod:`sarssl.sar.geocoding`). IPF 2.36 lists entries only up to
  0.68 s before the last line; the scene's last block, which holds the last GCP row, gets an
  entry fitted to that row (:func:`cover_with_gcp_rows`; fitted to any covered row such a
  fit reproduces the annotated entry to < 0.05 px).
- *IPF 2.36 rounds its state-vector times to the millisecond.* Its 1 s state vectors sit
  at ``.055000`` while the first line is at ``.054739``; taken literally, every GCP's
  zero-Doppler time is 0.261 ms (0.17 lines) after its annotated azimuth time. Re-tagged
  onto the line-time grid (:func:`retag_rounded_state_vector_times`) the median offset is
  0.02 us. Its annotated velocities also carry along-track speed errors of +-5.5 cm/s in
  blocks of eight vectors (finite differences of its own positions say so), hence the
  orbit fit's small velocity weight (:data:`VELOCITY_WEIGHT_S`).

Residuals of this model against the GCPs (:meth:`RadarGeometry.gcp_residuals`, reported by
every preprocessing run): worst GCP 0.003 px on the 2015 product (was 4.3 px), 0.001, 0.026
and 0.001 px on the three later ones (were up to 0.3, 1.5 and 0.5 px).

The orbit S(t) comes from state vectors (annotation: every 10 s, every 1 s in IPF 2.36; or
an external POEORB/RESORB EOF file) through a least-squares polynomial fitted to positions
and (lightly weighted) velocities over the scene's time span (plus a margin): the orbit arc
covered is a few percent of a revolution, so a degree-8 polynomial in normalised time
reproduces held-out state vectors to millimetres.

All times are float64 seconds relative to :attr:`RadarGeometry.epoch` (the product's first
line time, a ``numpy.datetime64[ns]``), which keeps microsecond precision over hours.

The vectorised kernels are numba-compiled (``parallel=True``, ``cache=True``), so the
forward model runs on millions of points per second.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numba
import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

SPEED_OF_LIGHT = 299_792_458.0
"""m/s, used to turn two-way slant range times into one-way slant ranges."""

# WGS84 ellipsoid
WGS84_A = 6_378_137.0
WGS84_F = 1.0 / 298.257223563
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)

ORBIT_MARGIN_S = 60.0
"""Seconds of state vectors kept either side of the scene when fitting the orbit."""

VELOCITY_WEIGHT_S = 0.1
"""Weight (s) of the velocity rows in the orbit fit: a 1 cm/s velocity residual counts as a
1 mm position residual, so the positions lead. Annotated velocities can be off where the
positions are not: IPF 2.36's 1 s state vectors carry along-track speed errors of
+-5.5 cm/s in blocks of eight (module docstring); at weight 1 s they pulled held-out
positions 3 cm off, at 0.1 s 6 mm (EOF files and later annotations fit alike either way)."""


# ---------------------------------------------------------------------------------------
# Ellipsoid helpers
# ---------------------------------------------------------------------------------------
def lonlat_h_to_ecef(
    lon: np.ndarray | float, lat: np.ndarray | float, height: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geodetic WGS84 (degrees, ellipsoidal height in metres) -> ECEF x, y, z (metres)."""
    lon_r = np.radians(np.asarray(lon, dtype=np.float64))
    lat_r = np.radians(np.asarray(lat, dtype=np.float64))
    h = np.asarray(height, dtype=np.float64)
    sin_lat = np.sin(lat_r)
    cos_lat = np.cos(lat_r)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    x = (n + h) * cos_lat * np.cos(lon_r)
    y = (n + h) * cos_lat * np.sin(lon_r)
    z = (n * (1.0 - WGS84_E2) + h) * sin_lat
    return x, y, z


def ecef_to_lonlat_h(
    x: np.ndarray | float, y: np.ndarray | float, z: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ECEF (metres) -> geodetic WGS84 lon, lat (degrees), ellipsoidal height (metres).

    Fixed-point iteration on the latitude (converges to < 1e-12 rad in a few steps for
    points near the Earth's surface).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    lon = np.arctan2(y, x)
    p = np.hypot(x, y)
    lat = np.arctan2(z, p * (1.0 - WGS84_E2))
    for _ in range(6):
        sin_lat = np.sin(lat)
        n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
        h = p / np.cos(lat) - n
        lat = np.arctan2(z, p * (1.0 - WGS84_E2 * n / (n + h)))
    sin_lat = np.sin(lat)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_lat * sin_lat)
    h = p / np.cos(lat) - n
    return np.degrees(lon), np.degrees(lat), h


# ---------------------------------------------------------------------------------------
# Orbit
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StateVectors:
    """Orbit state vectors: times (datetime64[ns], UTC), ECEF position (m), velocity (m/s)."""

    time: np.ndarray  # (n,) datetime64[ns]
    position: np.ndarray  # (n, 3)
    velocity: np.ndarray  # (n, 3)

    def __len__(self) -> int:
        return len(self.time)


@dataclass(frozen=True)
class OrbitPolynomial:
    """S(t) = sum_k c_k ((t - tc) / ts)^k, fitted to positions and velocities.

    ``coef`` has shape (3, degree + 1) (x, y, z rows, increasing powers); times are float
    seconds relative to the geometry epoch.
    """

    coef: np.ndarray
    tc: float
    ts: float
    t_min: float
    t_max: float

    @classmethod
    def fit(
        cls,
        t: np.ndarray,
        pos: np.ndarray,
        vel: np.ndarray,
        degree: int = 8,
        velocity_weight: float = VELOCITY_WEIGHT_S,
    ) -> OrbitPolynomial:
        t = np.asarray(t, dtype=np.float64)
        n = len(t)
        if n < 4:
            raise InputError(f"need at least 4 orbit state vectors to fit an orbit, got {n}")
        degree = int(min(degree, 2 * n - 1))
        tc = 0.5 * (t.min() + t.max())
        ts = max(0.5 * (t.max() - t.min()), 1.0)
        u = (t - tc) / ts
        k = np.arange(degree + 1)
        a_pos = u[:, None] ** k[None, :]
        a_vel = np.zeros_like(a_pos)
        a_vel[:, 1:] = k[None, 1:] * u[:, None] ** (k[None, 1:] - 1) / ts
        # velocity residuals (m/s) weighted by ``velocity_weight`` seconds (VELOCITY_WEIGHT_S)
        a = np.vstack([a_pos, velocity_weight * a_vel])
        coef = np.empty((3, degree + 1))
        for j in range(3):
            b = np.concatenate([pos[:, j], velocity_weight * vel[:, j]])
            coef[j] = np.linalg.lstsq(a, b, rcond=None)[0]
        return cls(
            coef=coef, tc=float(tc), ts=float(ts), t_min=float(t.min()), t_max=float(t.max())
        )

    def evaluate(self, t: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position (.., 3), velocity (.., 3), acceleration (.., 3) at times ``t`` (s)."""
        t = np.asarray(t, dtype=np.float64)
        flat = t.reshape(-1)
        out = np.empty((3, flat.size, 3))
        _orbit_eval_many(self.coef, self.tc, self.ts, flat, out)
        shape = t.shape + (3,)
        return out[0].reshape(shape), out[1].reshape(shape), out[2].reshape(shape)


@numba.njit(cache=True, inline="always")
def _orbit_eval(coef, tc, ts, t, res):
    """Horner evaluation of position, velocity, acceleration into res (3 rows x 3)."""
    u = (t - tc) / ts
    deg = coef.shape[1] - 1
    for j in range(3):
        p = coef[j, deg]
        v = 0.0
        a = 0.0
        for k in range(deg - 1, -1, -1):
            a = a * u + 2.0 * v
            v = v * u + p
            p = p * u + coef[j, k]
        res[0, j] = p
        res[1, j] = v / ts
        res[2, j] = a / (ts * ts)


@numba.njit(cache=True, parallel=True)
def _orbit_eval_many(coef, tc, ts, t, out):
    for i in numba.prange(t.size):
        res = np.empty((3, 3))
        _orbit_eval(coef, tc, ts, t[i], res)
        for r in range(3):
            for j in range(3):
                out[r, i, j] = res[r, j]


# ---------------------------------------------------------------------------------------
# Forward model kernel
# ---------------------------------------------------------------------------------------
@numba.njit(cache=True, inline="always")
def _zero_doppler_point(coef, tc, ts, x, y, z, t0, res):
    """Zero-Doppler time and slant range of one ECEF point; Newton from ``t0``."""
    t = t0
    for _ in range(12):
        _orbit_eval(coef, tc, ts, t, res)
        dx = x - res[0, 0]
        dy = y - res[0, 1]
        dz = z - res[0, 2]
        f = dx * res[1, 0] + dy * res[1, 1] + dz * res[1, 2]
        fp = -(res[1, 0] ** 2 + res[1, 1] ** 2 + res[1, 2] ** 2) + (
            dx * res[2, 0] + dy * res[2, 1] + dz * res[2, 2]
        )
        step = f / fp
        t -= step
        if abs(step) < 1e-9:
            break
    _orbit_eval(coef, tc, ts, t, res)
    dx = x - res[0, 0]
    dy = y - res[0, 1]
    dz = z - res[0, 2]
    return t, np.sqrt(dx * dx + dy * dy + dz * dz)


@numba.njit(cache=True, inline="always")
def _poly(coef, n, u):
    s = 0.0
    for k in range(n - 1, -1, -1):
        s = s * u + coef[k]
    return s


@numba.njit(cache=True, inline="always")
def _ground_range_one(srgr, grsr, sr0, gr0, sr):
    """Ground range (m) of slant range ``sr`` under one coordinate-conversion entry: the
    root of ``grsr(gr - gr0) = sr`` by Newton's method, started from ``srgr(sr - sr0)``.

    grsr, not srgr, defines the mapping: it reproduces the geolocation grid's slant-range
    times to millimetres on every processor version, while the srgr polynomials of IPF 2.36
    miss it by up to 4 px (module docstring). Newton converges quadratically from srgr's
    start (grsr is nearly linear: c2 ~ 5e-7 /m against c1 ~ 0.5): one step where srgr is
    consistent (later IPFs), three from IPF 2.36's 40 m misses."""
    g = _poly(srgr, srgr.size, sr - sr0) + gr0
    n = grsr.size
    for _ in range(6):
        u = g - gr0
        f = grsr[n - 1]
        d = 0.0
        for k in range(n - 2, -1, -1):
            d = d * u + f
            f = f * u + grsr[k]
        step = (f - sr) / d
        g -= step
        if abs(step) < 1e-3:  # what remains is ~1e-6 /m * step^2: < 1e-12 m
            break
    return g


@numba.njit(cache=True, inline="always")
def _nearest_entry(cc_t, t):
    """Index of the coordinate-conversion entry nearest in time to ``t`` (s): a guess
    from the mean entry spacing (entries come every second), then walked to the nearest."""
    n = cc_t.size
    if n == 1 or t <= cc_t[0]:
        return 0
    if t >= cc_t[n - 1]:
        return n - 1
    e = int((t - cc_t[0]) / (cc_t[n - 1] - cc_t[0]) * (n - 1) + 0.5)
    e = min(max(e, 0), n - 1)
    while e + 1 < n and cc_t[e + 1] - t < t - cc_t[e]:
        e += 1
    while e > 0 and t - cc_t[e - 1] <= cc_t[e] - t:
        e -= 1
    return e


@numba.njit(cache=True, inline="always")
def _srgr(cc_t, cc_sr0, cc_gr0, cc_srgr, cc_grsr, sr, t):
    """Ground range (m) at slant range ``sr`` and image-line time ``t``: the entry nearest
    in time (each entry holds for its azimuth block; module docstring)."""
    i = _nearest_entry(cc_t, t)
    return _ground_range_one(cc_srgr[i], cc_grsr[i], cc_sr0[i], cc_gr0[i], sr)


@numba.njit(cache=True, parallel=True)
def _range_to_pixel_kernel(
    cc_t, cc_sr0, cc_gr0, cc_srgr, cc_grsr, t_first, dt, spacing, s0, step, table, line, rng
):
    """In place: one-way slant range ``rng`` (m) at fractional GRD ``line`` -> GRD pixel
    (NaN stays NaN): linear in the entry's ground-range ``table`` (sampled every ``step``
    m of slant range from ``s0``), the exact inversion outside it."""
    n = table.shape[1]
    for i in numba.prange(rng.size):
        ln = line[i]
        r = rng[i]
        if ln != ln or r != r:
            continue
        e = _nearest_entry(cc_t, t_first + ln * dt)
        x = (r - s0) / step
        k = int(np.floor(x))
        if 0 <= k < n - 1:
            f = x - k
            rng[i] = (table[e, k] + f * (table[e, k + 1] - table[e, k])) / spacing
        else:
            rng[i] = _ground_range_one(cc_srgr[e], cc_grsr[e], cc_sr0[e], cc_gr0[e], r) / spacing


@numba.njit(cache=True, parallel=True)
def _ground_range_many(cc_t, cc_sr0, cc_gr0, cc_srgr, cc_grsr, sr, t, out):
    for i in numba.prange(sr.size):
        out[i] = _srgr(cc_t, cc_sr0, cc_gr0, cc_srgr, cc_grsr, sr[i], t[i])


@numba.njit(cache=True, parallel=True)
def _ground_to_radar_kernel(
    x,
    y,
    z,
    coef,
    tc,
    ts,
    t_guess,
    t_first,
    dt,
    spacing,
    cc_t,
    cc_sr0,
    cc_gr0,
    cc_srgr,
    cc_grsr,
    tau_ref,
    line,
    pixel,
    t_out,
    r_out,
):
    for i in numba.prange(x.size):
        res = np.empty((3, 3))
        t, r = _zero_doppler_point(coef, tc, ts, x[i], y[i], z[i], t_guess, res)
        t_line = t
        if tau_ref > 0.0:
            # bistatic delay: the GRD line of a target is offset by half the difference of
            # its two-way range time from the reference (mid-swath) range time
            t_line = t - 0.5 * (2.0 * r / 299792458.0 - tau_ref)
        gr = _srgr(cc_t, cc_sr0, cc_gr0, cc_srgr, cc_grsr, r, t_line)
        line[i] = (t_line - t_first) / dt
        pixel[i] = gr / spacing
        t_out[i] = t
        r_out[i] = r


# ---------------------------------------------------------------------------------------
# Annotation parsing helpers
# ---------------------------------------------------------------------------------------
def _text(root: Any, path: str, what: str = "annotation") -> str:
    el = root.find(path)
    if el is None or el.text is None:
        raise InputError(f"{what}: element {path!r} missing from the product annotation")
    return el.text.strip()


def _dt64(text: str) -> np.datetime64:
    return np.datetime64(text.strip().rstrip("Z"), "ns")


def _floats(text: str) -> np.ndarray:
    return np.array([float(v) for v in text.split()], dtype=np.float64)


@dataclass(frozen=True)
class CoordinateConversion:
    """srgr/grsr polynomials at azimuth times (s rel. epoch); sr0/gr0 in metres."""

    time: np.ndarray  # (n,)
    sr0: np.ndarray  # (n,)
    gr0: np.ndarray  # (n,)
    srgr: np.ndarray  # (n, k) ground range = sum c_i (sr - sr0)^i
    grsr: np.ndarray  # (n, k) slant range = sum c_i (gr - gr0)^i


@dataclass(frozen=True)
class GcpGrid:
    """The annotation geolocation grid (flat arrays, one entry per grid point)."""

    line: np.ndarray
    pixel: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    height: np.ndarray
    azimuth_time: np.ndarray  # s rel. epoch
    slant_range_time: np.ndarray  # two-way, s
    incidence_angle: np.ndarray  # degrees


def cover_with_gcp_rows(
    cc: CoordinateConversion,
    gcps: GcpGrid,
    azimuth_time_interval: float,
    range_pixel_spacing: float,
) -> CoordinateConversion:
    """``cc`` plus an entry for every azimuth block the annotation leaves out that holds a
    geolocation-grid row, fitted to that row's (pixel, slant range time) pairs.

    Each entry holds for the block of lines within half an entry spacing of its time. IPF
    2.36 annotates entries from 0.68 s before the first line to 0.68 s before the last
    (2015-02-22: the last 117 lines lie in a block without an entry, where the last entry
    misses the last GCP row by up to 2.3 px). The GCP row's points span the swath, so a fit
    of the annotation's own degree reproduces an annotated entry to < 0.05 px. Without
    such a row, ``cc`` as is."""
    if len(cc.time) < 2 or len(gcps.line) == 0:
        return cc
    step = float(np.median(np.diff(cc.time)))
    t_row = gcps.line * azimuth_time_interval  # line times (first line at 0)
    k = np.round((t_row - cc.time[0]) / step)
    block = cc.time[0] + k * step
    outside = (k < 0) | (k > len(cc.time) - 1)
    if not outside.any():
        return cc
    entries = [cc.time, cc.sr0, cc.gr0, cc.srgr, cc.grsr]
    extra: list[list] = [[], [], [], [], []]
    deg = cc.grsr.shape[1] - 1
    for b in np.unique(block[outside]):
        sel = outside & (block == b)
        gr = gcps.pixel[sel] * range_pixel_spacing
        if len(np.unique(gr)) <= deg:
            continue
        sr = gcps.slant_range_time[sel] * SPEED_OF_LIGHT / 2
        grsr = np.polynomial.Polynomial.fit(gr, sr, deg).convert().coef
        sr0 = float(np.polynomial.polynomial.polyval(0.0, grsr))
        srgr = np.polynomial.Polynomial.fit(sr - sr0, gr, deg).convert().coef
        for lst, v in zip(extra, (b, sr0, 0.0, srgr, grsr)):
            lst.append(v)
        log.info(
            "coordinate conversion: block at %+.3f s has no annotated entry; fitted to its "
            "%d geolocation grid points",
            b,
            int(sel.sum()),
        )
    if not extra[0]:
        return cc
    merged = [np.concatenate([e, np.asarray(x)]) for e, x in zip(entries, extra)]
    order = np.argsort(merged[0])
    return CoordinateConversion(*(m[order] for m in merged))


def retag_rounded_state_vector_times(
    times: np.ndarray, epoch: np.datetime64
) -> tuple[np.ndarray, float]:
    """Annotated state-vector times put back on the product's line-time grid where the
    annotation rounded them to the millisecond (IPF 2.36); returns (times, seconds taken off).

    IPF 2.36 annotates state vectors every second at ``first line time + k s`` but writes
    their times rounded to whole milliseconds (2015-02-22: vectors at ``.055000``, first
    line at ``.054739``): taken literally, the orbit runs 0.261 ms (1.98 m, 0.17 lines)
    ahead of the image and of the geolocation grid. The times are re-tagged when all of
    them are whole milliseconds, sit at whole seconds from the first line time to within the
    rounding (0.5 ms) by one common offset, and that offset is not zero. Later processors
    write microsecond times on their own grid (10 s apart): never re-tagged."""
    times = np.asarray(times, dtype="datetime64[ns]")
    ns = times.astype(np.int64)
    if len(times) < 2 or np.any(ns % 1_000_000):
        return times, 0.0
    off = (times - epoch) / np.timedelta64(1, "ns") * 1e-9
    frac = off - np.round(off)
    d = float(np.median(frac))
    if np.ptp(frac) > 2e-6 or not 1e-6 < abs(d) <= 5e-4:
        return times, 0.0
    shift = np.timedelta64(int(round(d * 1e9)), "ns")
    log.info(
        "annotation orbit: state-vector times rounded to the millisecond (IPF 2.36); "
        "re-tagged by %.3f ms onto the line-time grid",
        -d * 1e3,
    )
    return times - shift, d


@dataclass(frozen=True)
class GcpResiduals:
    """The geometry model against the annotation's geolocation grid: model minus GCP
    (line, pixel) of every GCP's lon/lat/height, as bias (mean) and standard deviation in
    azimuth and range, in pixels and metres (pixel spacings of the product)."""

    n: int
    azimuth_bias_px: float
    azimuth_std_px: float
    range_bias_px: float
    range_std_px: float
    azimuth_spacing_m: float
    range_spacing_m: float
    max_px: float  # the largest |(d_line, d_pixel)| of any GCP

    @property
    def azimuth_bias_m(self) -> float:
        return self.azimuth_bias_px * self.azimuth_spacing_m

    @property
    def azimuth_std_m(self) -> float:
        return self.azimuth_std_px * self.azimuth_spacing_m

    @property
    def range_bias_m(self) -> float:
        return self.range_bias_px * self.range_spacing_m

    @property
    def range_std_m(self) -> float:
        return self.range_std_px * self.range_spacing_m

    @property
    def rms_px(self) -> float:
        """Root mean square of the residual length (bias and spread of both axes), px."""
        return float(
            np.sqrt(
                self.azimuth_bias_px**2
                + self.azimuth_std_px**2
                + self.range_bias_px**2
                + self.range_std_px**2
            )
        )

    def tags(self) -> dict[str, str]:
        """GeoTIFF metadata tags (``GCP_RESIDUAL_*``)."""
        vals = {
            "AZIMUTH_BIAS_PX": self.azimuth_bias_px,
            "AZIMUTH_STD_PX": self.azimuth_std_px,
            "RANGE_BIAS_PX": self.range_bias_px,
            "RANGE_STD_PX": self.range_std_px,
            "AZIMUTH_BIAS_M": self.azimuth_bias_m,
            "AZIMUTH_STD_M": self.azimuth_std_m,
            "RANGE_BIAS_M": self.range_bias_m,
            "RANGE_STD_M": self.range_std_m,
            "RMS_PX": self.rms_px,
            "MAX_PX": self.max_px,
        }
        out = {f"GCP_RESIDUAL_{k}": f"{v:.4f}" for k, v in vals.items()}
        out["GCP_RESIDUAL_N"] = str(self.n)
        return out

    def summary(self) -> str:
        return (
            f"azimuth {self.azimuth_bias_px:+.3f} +- {self.azimuth_std_px:.3f} px "
            f"({self.azimuth_bias_m:+.2f} +- {self.azimuth_std_m:.2f} m), range "
            f"{self.range_bias_px:+.3f} +- {self.range_std_px:.3f} px ({self.range_bias_m:+.2f} "
            f"+- {self.range_std_m:.2f} m), rms {self.rms_px:.3f} px, worst {self.max_px:.3f} px "
            f"over {self.n} GCPs"
        )


# ---------------------------------------------------------------------------------------
# The geometry
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RadarGeometry:
    """Everything needed to map between ground (ECEF / lon-lat-h) and GRD (line, pixel).

    Build it with :meth:`from_annotation`; swap the orbit with :meth:`with_orbit` or
    :meth:`with_orbit_file`. Times are float seconds relative to :attr:`epoch`.
    """

    epoch: np.datetime64
    first_line_time: float
    last_line_time: float
    azimuth_time_interval: float
    number_of_lines: int
    number_of_samples: int
    range_pixel_spacing: float
    azimuth_pixel_spacing: float
    near_slant_range_time: float  # two-way, s
    radar_frequency: float  # Hz
    pass_direction: str  # ASCENDING / DESCENDING
    mission: str
    state_vectors: StateVectors
    coordinate_conversion: CoordinateConversion
    gcps: GcpGrid
    bistatic_reference_time: float = 0.0  # two-way s; 0 = no bistatic line offset
    orbit_time_correction: float = 0.0  # s taken off annotated state-vector times (IPF 2.36)
    orbit_source: str = "annotation"
    orbit_file: str = ""  # the EOF file's name when the orbit comes from one
    orbit: OrbitPolynomial = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "orbit", self._fit_orbit(self.state_vectors))

    # -- construction ------------------------------------------------------------------
    @classmethod
    def from_annotation(cls, root: Any) -> RadarGeometry:
        """Parse an S1 product annotation (lxml root of ``annotation/s1?-*.xml``)."""
        if hasattr(root, "getroot"):
            root = root.getroot()
        info = "imageAnnotation/imageInformation"
        epoch = _dt64(_text(root, f"{info}/productFirstLineUtcTime"))

        def rel(el_text: str) -> float:
            return float((_dt64(el_text) - epoch) / np.timedelta64(1, "ns")) * 1e-9

        last = rel(_text(root, f"{info}/productLastLineUtcTime"))
        mission = root.findtext("adsHeader/missionId") or ""
        pass_dir = _text(root, "generalAnnotation/productInformation/pass").upper()
        freq = float(_text(root, "generalAnnotation/productInformation/radarFrequency"))

        orbits = root.findall("generalAnnotation/orbitList/orbit")
        if not orbits:
            raise InputError("annotation: generalAnnotation/orbitList holds no orbit state vectors")
        sv_time, retag = retag_rounded_state_vector_times(
            np.array([_dt64(o.findtext("time")) for o in orbits]), epoch
        )
        sv = StateVectors(
            time=sv_time,
            position=np.array(
                [[float(o.findtext(f"position/{c}")) for c in "xyz"] for o in orbits]
            ),
            velocity=np.array(
                [[float(o.findtext(f"velocity/{c}")) for c in "xyz"] for o in orbits]
            ),
        )

        ccs = root.findall("coordinateConversion/coordinateConversionList/coordinateConversion")
        if not ccs:
            raise InputError("annotation: coordinateConversionList is empty (not a GRD product?)")
        cc = CoordinateConversion(
            time=np.array([rel(c.findtext("azimuthTime")) for c in ccs]),
            sr0=np.array([float(c.findtext("sr0")) for c in ccs]),
            gr0=np.array([float(c.findtext("gr0")) for c in ccs]),
            srgr=np.array([_floats(c.findtext("srgrCoefficients")) for c in ccs]),
            grsr=np.array([_floats(c.findtext("grsrCoefficients")) for c in ccs]),
        )
        order = np.argsort(cc.time)
        cc = CoordinateConversion(
            *(getattr(cc, f)[order] for f in ("time", "sr0", "gr0", "srgr", "grsr"))
        )

        pts = root.findall("geolocationGrid/geolocationGridPointList/geolocationGridPoint")
        gcps = GcpGrid(
            line=np.array([float(p.findtext("line")) for p in pts]),
            pixel=np.array([float(p.findtext("pixel")) for p in pts]),
            lat=np.array([float(p.findtext("latitude")) for p in pts]),
            lon=np.array([float(p.findtext("longitude")) for p in pts]),
            height=np.array([float(p.findtext("height")) for p in pts]),
            azimuth_time=np.array([rel(p.findtext("azimuthTime")) for p in pts]),
            slant_range_time=np.array([float(p.findtext("slantRangeTime")) for p in pts]),
            incidence_angle=np.array([float(p.findtext("incidenceAngle")) for p in pts]),
        )
        cc = cover_with_gcp_rows(
            cc,
            gcps,
            float(_text(root, f"{info}/azimuthTimeInterval")),
            float(_text(root, f"{info}/rangePixelSpacing")),
        )
        # IPF applies a bistatic delay correction to GRD lines: the line of a target is its
        # zero-Doppler time minus (tau - tau_ref) / 2 (tau = two-way slant range time), so
        # the GCPs' azimuth times drift by +-0.15 lines across the swath. tau_ref (about the
        # mid-swath range time) is recovered from the GCPs, which carry both times.
        tau_ref = 0.0
        flag = root.findtext(".//bistaticDelayCorrectionApplied")
        if flag is not None and flag.strip().lower() == "true" and len(pts):
            t_line = gcps.line * float(_text(root, f"{info}/azimuthTimeInterval"))
            tau_ref = float(np.median(gcps.slant_range_time - 2.0 * (gcps.azimuth_time - t_line)))
        return cls(
            bistatic_reference_time=tau_ref,
            orbit_time_correction=retag,
            epoch=epoch,
            first_line_time=0.0,
            last_line_time=last,
            azimuth_time_interval=float(_text(root, f"{info}/azimuthTimeInterval")),
            number_of_lines=int(_text(root, f"{info}/numberOfLines")),
            number_of_samples=int(_text(root, f"{info}/numberOfSamples")),
            range_pixel_spacing=float(_text(root, f"{info}/rangePixelSpacing")),
            azimuth_pixel_spacing=float(_text(root, f"{info}/azimuthPixelSpacing")),
            near_slant_range_time=float(_text(root, f"{info}/slantRangeTime")),
            radar_frequency=freq,
            pass_direction=pass_dir,
            mission=mission,
            state_vectors=sv,
            coordinate_conversion=cc,
            gcps=gcps,
        )

    def _fit_orbit(self, sv: StateVectors) -> OrbitPolynomial:
        t = (sv.time - self.epoch) / np.timedelta64(1, "ns") * 1e-9
        t = np.asarray(t, dtype=np.float64)
        keep = (t >= self.first_line_time - ORBIT_MARGIN_S) & (
            t <= self.last_line_time + ORBIT_MARGIN_S
        )
        if keep.sum() < 6:
            # too few inside the margin: take the 8 nearest to the scene centre
            mid = 0.5 * (self.first_line_time + self.last_line_time)
            keep = np.zeros_like(keep)
            keep[np.argsort(np.abs(t - mid))[:8]] = True
        if t[keep].min() > self.first_line_time or t[keep].max() < self.last_line_time:
            raise InputError(
                f"orbit ({self.orbit_source}): state vectors "
                f"{sv.time[keep].min()}..{sv.time[keep].max()} "
                "do not span the scene acquisition"
            )
        return OrbitPolynomial.fit(t[keep], sv.position[keep], sv.velocity[keep])

    def with_orbit(
        self, state_vectors: StateVectors, source: str, orbit_file: str = ""
    ) -> RadarGeometry:
        """A copy using other state vectors (e.g. POEORB), recording ``orbit_source`` and
        the ``orbit_file`` name (the annotation's time re-tagging no longer applies)."""
        return replace(
            self,
            state_vectors=state_vectors,
            orbit_source=source,
            orbit_file=orbit_file,
            orbit_time_correction=0.0,
        )

    def with_orbit_file(self, path: str | Path) -> RadarGeometry:
        """A copy using the state vectors of an ESA EOF orbit file (POEORB/RESORB)."""
        sv, kind = read_eof(path)
        return self.with_orbit(sv, kind, Path(path).name)

    # -- derived quantities ------------------------------------------------------------
    @property
    def wavelength(self) -> float:
        return SPEED_OF_LIGHT / self.radar_frequency

    @property
    def shape(self) -> tuple[int, int]:
        return self.number_of_lines, self.number_of_samples

    def seconds(self, t: np.datetime64 | np.ndarray) -> np.ndarray:
        """datetime64 -> float seconds relative to :attr:`epoch`."""
        return (
            np.asarray(
                (np.asarray(t, dtype="datetime64[ns]") - self.epoch) / np.timedelta64(1, "ns")
            )
            * 1e-9
        )

    def line_time(self, line: np.ndarray | float) -> np.ndarray:
        """Azimuth time (s rel. epoch) of a (fractional) GRD line."""
        return (
            self.first_line_time + np.asarray(line, dtype=np.float64) * self.azimuth_time_interval
        )

    def _cc_arrays(self):
        cc = self.coordinate_conversion
        return cc.time, cc.sr0, cc.gr0, cc.srgr, cc.grsr

    # -- forward model -----------------------------------------------------------------
    def ground_to_radar(
        self,
        x: np.ndarray,
        y: np.ndarray,
        z: np.ndarray,
        return_time_range: bool = False,
    ) -> tuple[np.ndarray, ...]:
        """ECEF points (m) -> fractional GRD (line, pixel) (pixel centres at integers).

        With ``return_time_range`` also the zero-Doppler time (s rel. epoch) and the one-way
        slant range (m). Vectorised and parallel; any array shape.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        z = np.asarray(z, dtype=np.float64)
        shape = np.broadcast_shapes(x.shape, y.shape, z.shape)
        xf, yf, zf = (
            np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1) for a in (x, y, z)
        )
        n = xf.size
        line = np.empty(n)
        pixel = np.empty(n)
        t = np.empty(n)
        r = np.empty(n)
        o = self.orbit
        mid = 0.5 * (self.first_line_time + self.last_line_time)
        _ground_to_radar_kernel(
            xf,
            yf,
            zf,
            o.coef,
            o.tc,
            o.ts,
            mid,
            self.first_line_time,
            self.azimuth_time_interval,
            self.range_pixel_spacing,
            *self._cc_arrays(),
            self.bistatic_reference_time,
            line,
            pixel,
            t,
            r,
        )
        out = (line.reshape(shape), pixel.reshape(shape))
        if return_time_range:
            out = out + (t.reshape(shape), r.reshape(shape))
        return out

    def gcp_residuals(self) -> GcpResiduals:
        """This model against the annotation's geolocation grid: every GCP's lon/lat/height
        through :meth:`ground_to_radar`, minus its annotated (line, pixel). The GCPs are
        ESA's statement of where each ground point lies in the image, so this measures the
        model (orbit, timing, range conversion), not the terrain."""
        g = self.gcps
        if len(g.line) == 0:
            raise InputError("annotation: the geolocation grid holds no GCPs to check against")
        line, pixel = self.ground_to_radar(*lonlat_h_to_ecef(g.lon, g.lat, g.height))
        dl, dp = line - g.line, pixel - g.pixel
        return GcpResiduals(
            n=int(len(dl)),
            azimuth_bias_px=float(np.mean(dl)),
            azimuth_std_px=float(np.std(dl)),
            range_bias_px=float(np.mean(dp)),
            range_std_px=float(np.std(dp)),
            azimuth_spacing_m=float(self.azimuth_pixel_spacing),
            range_spacing_m=float(self.range_pixel_spacing),
            max_px=float(np.max(np.hypot(dl, dp))),
        )

    def lonlat_to_radar(
        self, lon: np.ndarray, lat: np.ndarray, height: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """lon/lat (degrees, WGS84) and ellipsoidal height (m) -> (line, pixel)."""
        return self.ground_to_radar(*lonlat_h_to_ecef(lon, lat, height))

    def slant_range_to_ground_range(self, sr: np.ndarray, t: np.ndarray) -> np.ndarray:
        """One-way slant range (m) at azimuth time t (s) -> ground range (m): the inverse
        of the grsr polynomials (the forward model's conversion, see the module docstring)."""
        sr = np.asarray(sr, dtype=np.float64)
        shape = np.broadcast_shapes(sr.shape, np.shape(t))
        srf = np.ascontiguousarray(np.broadcast_to(sr, shape)).reshape(-1)
        tf = np.ascontiguousarray(np.broadcast_to(np.asarray(t, dtype=np.float64), shape)).reshape(
            -1
        )
        out = np.empty(srf.size)
        _ground_range_many(*self._cc_arrays(), srf, tf, out)
        return out.reshape(shape)

    def ground_range_to_slant_range(self, gr: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Ground range (m) at image-line time t (s) -> one-way slant range (m): the grsr
        polynomial of the entry nearest in time."""
        gr = np.asarray(gr, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        shape = np.broadcast_shapes(gr.shape, t.shape)
        cc = self.coordinate_conversion
        i = _nearest_index(cc.time, np.broadcast_to(t, shape))
        c = cc.grsr[i]  # (..., k)
        u = np.broadcast_to(gr, shape) - cc.gr0[i]
        acc = np.zeros(shape)
        for k in range(c.shape[-1] - 1, -1, -1):
            acc = acc * u + c[..., k]
        return acc

    def slant_range_to_pixel(
        self, line: np.ndarray, slant_range: np.ndarray, in_place: bool = False
    ) -> np.ndarray:
        """GRD pixel of one-way ``slant_range`` (m) on fractional GRD ``line`` (the
        coordinate-conversion entry of the line's azimuth block); NaN stays NaN. Smooth
        quantities (line, slant range) interpolate; the pixel can jump between blocks.
        ``in_place``: overwrite ``slant_range`` (a C-contiguous float64 array of the shape
        of ``line``) with the pixels and return it."""
        line = np.asarray(line, dtype=np.float64)
        shape = np.broadcast_shapes(line.shape, np.shape(slant_range))
        ln = np.ascontiguousarray(np.broadcast_to(line, shape)).reshape(-1)
        if in_place:
            out = slant_range.reshape(-1)  # a view for a C-contiguous array
            if not np.shares_memory(out, slant_range) or out.dtype != np.float64:
                raise ValueError("in_place needs a C-contiguous float64 slant_range array")
        else:
            out = np.array(np.broadcast_to(slant_range, shape), dtype=np.float64).reshape(-1)
        s0, step, table = self._ground_range_table
        _range_to_pixel_kernel(
            *self._cc_arrays(),
            self.first_line_time,
            self.azimuth_time_interval,
            self.range_pixel_spacing,
            s0,
            step,
            table,
            ln,
            out,
        )
        return slant_range if in_place else out.reshape(shape)

    @functools.cached_property
    def _ground_range_table(self) -> tuple[float, float, np.ndarray]:
        """(s0, step, table): the ground range of each coordinate-conversion entry at slant
        ranges ``s0 + k step`` over the swath (plus 10 km), for :meth:`slant_range_to_pixel`.
        Linear interpolation at 25 m steps is exact to 1 mm (0.0001 px): the curvature of
        ground range in slant range is < 1e-5 /m."""
        cc = self.coordinate_conversion
        step = 25.0
        far = self.number_of_samples * self.range_pixel_spacing + 10_000.0
        s_hi = float(np.max(self.ground_range_to_slant_range(np.full(len(cc.time), far), cc.time)))
        s0 = float(np.min(cc.sr0)) - 10_000.0
        sr = s0 + step * np.arange(int(np.ceil((s_hi - s0) / step)) + 1)
        table = np.empty((len(cc.time), sr.size))
        for e, t in enumerate(cc.time):
            _ground_range_many(*self._cc_arrays(), sr, np.full(sr.size, t), table[e])
        return s0, step, table

    # -- inverse model -----------------------------------------------------------------
    def radar_to_ground(
        self,
        line: np.ndarray,
        pixel: np.ndarray,
        height: np.ndarray | float = 0.0,
        tol_px: float = 1e-4,
    ) -> tuple[np.ndarray, np.ndarray]:
        """GRD (line, pixel) at ellipsoidal ``height`` (m) -> (lon, lat) degrees.

        The line gives the image time and so the coordinate-conversion entry, the pixel the
        slant range through that entry's grsr polynomial, both give the zero-Doppler time
        (bistatic offset); the ground point is where that range sphere meets the zero-Doppler
        plane at ``height``: Newton steps in lon/lat (finite-difference Jacobian) from the
        GCP grid, on residuals that are smooth across azimuth blocks, until both are within
        ``tol_px`` pixels.
        """
        line = np.asarray(line, dtype=np.float64)
        pixel = np.asarray(pixel, dtype=np.float64)
        shape = np.broadcast_shapes(line.shape, pixel.shape, np.shape(height))
        line = np.broadcast_to(line, shape).reshape(-1)
        pixel = np.broadcast_to(pixel, shape).reshape(-1)
        h = np.broadcast_to(np.asarray(height, dtype=np.float64), shape).reshape(-1)
        t_line = self.line_time(line)
        sr = self.ground_range_to_slant_range(pixel * self.range_pixel_spacing, t_line)
        t = t_line
        if self.bistatic_reference_time > 0.0:
            t = t_line + 0.5 * (2.0 * sr / SPEED_OF_LIGHT - self.bistatic_reference_time)
        s_pos, s_vel, _ = self.orbit.evaluate(t)
        v_hat = s_vel / np.linalg.norm(s_vel, axis=-1, keepdims=True)

        def residual(lo: np.ndarray, la: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            d = np.stack(lonlat_h_to_ecef(lo, la, h), axis=-1) - s_pos
            return (d * v_hat).sum(-1), np.linalg.norm(d, axis=-1) - sr  # metres

        lon, lat = self._gcp_interp(line, pixel)
        tol_m = tol_px * min(self.range_pixel_spacing, self.azimuth_pixel_spacing) * 0.5
        d = 1e-4  # degrees for the finite differences (~10 m)
        for _ in range(10):
            f1, f2 = residual(lon, lat)
            if np.all(np.hypot(f1, f2) < tol_m):
                break
            a1, a2 = residual(lon + d, lat)
            b1, b2 = residual(lon, lat + d)
            j11, j12 = (a1 - f1) / d, (b1 - f1) / d
            j21, j22 = (a2 - f2) / d, (b2 - f2) / d
            det = j11 * j22 - j12 * j21
            lon = lon - (j22 * f1 - j12 * f2) / det
            lat = lat - (-j21 * f1 + j11 * f2) / det
        return lon.reshape(shape), lat.reshape(shape)

    def _gcp_interp(self, line: np.ndarray, pixel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

        g = self.gcps
        pts = np.column_stack([g.line, g.pixel])
        vals = np.column_stack([g.lon, g.lat])
        q = np.column_stack([line, pixel])
        out = LinearNDInterpolator(pts, vals)(q)
        bad = ~np.isfinite(out[:, 0])
        if bad.any():
            out[bad] = NearestNDInterpolator(pts, vals)(q[bad])
        return out[:, 0], out[:, 1]

    def footprint(self, height: float = 0.0, n: int = 8):
        """The image outline on the ground at ``height`` as a shapely lon/lat Polygon."""
        from shapely.geometry import Polygon

        nl, ns = self.number_of_lines - 1, self.number_of_samples - 1
        s = np.linspace(0.0, 1.0, n)
        lines = np.concatenate([np.zeros(n), s * nl, np.full(n, nl), (1 - s) * nl])
        pixels = np.concatenate([s * ns, np.full(n, ns), (1 - s) * ns, np.zeros(n)])
        lon, lat = self.radar_to_ground(lines, pixels, height)
        return Polygon(np.column_stack([lon, lat]))

    def incidence_angle(self, line: np.ndarray, pixel: np.ndarray) -> np.ndarray:
        """Ellipsoid incidence angle (degrees) interpolated from the GCP grid."""
        from scipy.interpolate import LinearNDInterpolator, NearestNDInterpolator

        g = self.gcps
        pts = np.column_stack([g.line, g.pixel])
        q = np.column_stack([np.ravel(line), np.ravel(pixel)])
        out = LinearNDInterpolator(pts, g.incidence_angle)(q)
        bad = ~np.isfinite(out)
        if bad.any():
            out[bad] = NearestNDInterpolator(pts, g.incidence_angle)(q[bad])
        return out.reshape(np.shape(line))


def _nearest_index(times: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Index of the entry of sorted ``times`` nearest to each ``t`` (NumPy twin of
    :func:`_nearest_entry`)."""
    n = len(times)
    hi = np.clip(np.searchsorted(times, t, side="right"), 1, max(n - 1, 1))
    lo = hi - 1
    if n == 1:
        return np.zeros(np.shape(t), dtype=np.intp)
    return np.where(t - times[lo] <= times[hi] - t, lo, hi)


# ---------------------------------------------------------------------------------------
# External orbit files
# ---------------------------------------------------------------------------------------
_EOF_NAME = re.compile(
    r"(?P<mission>S1[ABCD])_OPER_AUX_(?P<kind>POEORB|RESORB)_OPOD_\d{8}T\d{6}_"
    r"V(?P<start>\d{8}T\d{6})_(?P<stop>\d{8}T\d{6})\.EOF(\.zip)?$"
)


def _compact_to_dt64(s: str) -> np.datetime64:
    return np.datetime64(f"{s[0:4]}-{s[4:6]}-{s[6:8]}T{s[9:11]}:{s[11:13]}:{s[13:15]}", "ns")


def find_orbit_file(
    orbit_dir: str | Path, mission: str, start: np.datetime64, stop: np.datetime64
) -> Path | None:
    """The best EOF file in ``orbit_dir`` (searched recursively) covering start..stop.

    POEORB (precise, final) is preferred over RESORB (restituted); among equals the most
    recently produced file wins. Returns None when none covers the acquisition.
    """
    orbit_dir = Path(orbit_dir)
    if not orbit_dir.is_dir():
        raise InputError(f"orbit directory {orbit_dir}: not a directory")
    best: tuple[int, str, Path] | None = None
    margin = np.timedelta64(int(ORBIT_MARGIN_S), "s")
    for p in orbit_dir.rglob("*.EOF*"):
        m = _EOF_NAME.search(p.name)
        if not m or m["mission"] != mission:
            continue
        v0, v1 = _compact_to_dt64(m["start"]), _compact_to_dt64(m["stop"])
        if v0 <= start - margin and v1 >= stop + margin:
            rank = (1 if m["kind"] == "POEORB" else 0, p.name, p)
            if best is None or rank[:2] > best[:2]:
                best = rank
    return None if best is None else best[2]


def read_eof(path: str | Path) -> tuple[StateVectors, str]:
    """Read an ESA EOF orbit file: (state vectors in ECEF, 'POEORB'|'RESORB')."""
    from lxml import etree

    path = Path(path)
    try:
        if path.suffix == ".zip":
            import zipfile

            with zipfile.ZipFile(path) as zf:
                name = next(n for n in zf.namelist() if n.endswith(".EOF"))
                root = etree.fromstring(zf.read(name))
        else:
            root = etree.parse(str(path)).getroot()
    except (OSError, etree.XMLSyntaxError, StopIteration) as exc:
        raise InputError(f"orbit file {path}: cannot be read as an EOF XML file ({exc})") from exc
    kind = root.findtext(".//File_Type") or ""
    kind = (
        "POEORB"
        if "POEORB" in (kind or path.name)
        else "RESORB"
        if "RESORB" in (kind or path.name)
        else kind
    )
    osvs = root.findall(".//List_of_OSVs/OSV")
    if not osvs:
        raise InputError(f"orbit file {path}: no List_of_OSVs/OSV state vectors")
    times, pos, vel = [], [], []
    for o in osvs:
        utc = (o.findtext("UTC") or "").split("=", 1)[-1]
        times.append(_dt64(utc))
        pos.append([float(o.findtext(c)) for c in ("X", "Y", "Z")])
        vel.append([float(o.findtext(c)) for c in ("VX", "VY", "VZ")])
    return StateVectors(np.array(times), np.array(pos), np.array(vel)), kind or "EOF"


def apply_orbit_dir(geom: RadarGeometry, orbit_dir: str | Path | None) -> RadarGeometry:
    """Use the best external orbit of ``orbit_dir`` when one covers the scene."""
    if orbit_dir is None:
        return geom
    start = geom.epoch + np.timedelta64(int(geom.first_line_time * 1e9), "ns")
    stop = geom.epoch + np.timedelta64(int(geom.last_line_time * 1e9), "ns")
    path = find_orbit_file(orbit_dir, geom.mission, start, stop)
    if path is None:
        log.warning(
            "no POEORB/RESORB file for %s %s in %s: using annotation orbit",
            geom.mission,
            start,
            orbit_dir,
        )
        return geom
    log.info("using orbit file %s", path)
    return geom.with_orbit_file(path)


__all__: Sequence[str] = (
    "RadarGeometry",
    "GcpResiduals",
    "StateVectors",
    "OrbitPolynomial",
    "lonlat_h_to_ecef",
    "ecef_to_lonlat_h",
    "find_orbit_file",
    "read_eof",
    "apply_orbit_dir",
    "cover_with_gcp_rows",
    "retag_rounded_state_vector_times",
)
