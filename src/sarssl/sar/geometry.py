"""Sentinel-1 GRD radar geometry: orbit, zero-Doppler forward model and its inverse.

The Range-Doppler model (e.g. Small & Schubert 2008, "Guide to ASAR geocoding"; ESA
S1-RS-MDA-52-7441 "Sentinel-1 Product Definition") maps a ground point X (ECEF metres)
to the radar image in two steps:

1. **Azimuth**: the zero-Doppler time t is when the sensor S(t), moving with velocity
   V(t), sees X broadside: ``f(t) = (X - S(t)) . V(t) = 0``. It is solved by Newton's
   method with ``f'(t) = -|V|^2 + (X - S) . A(t)`` (A = acceleration). The GRD line is
   ``(t - t_first_line) / azimuth_time_interval``.
2. **Range**: the slant range R = |X - S(t)| (one-way, metres; the annotation gives two-way
   times tau with R = c tau / 2) is converted to ground range with the annotation's
   ``srgr`` polynomial ``gr = sum_i c_i (R - sr0)^i`` (interpolated linearly between the
   polynomials given at successive azimuth times) and the GRD pixel is
   ``(gr - gr0) / range_pixel_spacing`` (gr0 = 0 for GRD products).

The orbit S(t) comes from state vectors (annotation, every 10 s, or an external
POEORB/RESORB EOF file) through a least-squares polynomial fitted jointly to positions and
velocities over the scene's time span (plus a margin): the orbit arc covered is a few
percent of a revolution, so a degree-8 polynomial in normalised time reproduces held-out
state vectors to millimetres.

All times are float64 seconds relative to :attr:`RadarGeometry.epoch` (the product's first
line time, a ``numpy.datetime64[ns]``), which keeps microsecond precision over hours.

The vectorised kernels are numba-compiled (``parallel=True``, ``cache=True``), so the
forward model runs on millions of points per second.
"""

from __future__ import annotations

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
        cls, t: np.ndarray, pos: np.ndarray, vel: np.ndarray, degree: int = 8
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
        # velocity residuals (m/s) weighted by 1 s so both kinds of row are in metres
        a = np.vstack([a_pos, a_vel])
        coef = np.empty((3, degree + 1))
        for j in range(3):
            b = np.concatenate([pos[:, j], vel[:, j]])
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
def _srgr(cc_t, cc_sr0, cc_gr0, cc_srgr, sr, t):
    """Ground range (m) at slant range ``sr`` and azimuth time ``t``, blending entries."""
    n = cc_t.size
    ncoef = cc_srgr.shape[1]
    if n == 1 or t <= cc_t[0]:
        return _poly(cc_srgr[0], ncoef, sr - cc_sr0[0]) + cc_gr0[0]
    if t >= cc_t[n - 1]:
        return _poly(cc_srgr[n - 1], ncoef, sr - cc_sr0[n - 1]) + cc_gr0[n - 1]
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cc_t[mid] <= t:
            lo = mid
        else:
            hi = mid
    w = (t - cc_t[lo]) / (cc_t[hi] - cc_t[lo])
    g0 = _poly(cc_srgr[lo], ncoef, sr - cc_sr0[lo]) + cc_gr0[lo]
    g1 = _poly(cc_srgr[hi], ncoef, sr - cc_sr0[hi]) + cc_gr0[hi]
    return (1.0 - w) * g0 + w * g1


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
    tau_ref,
    line,
    pixel,
    t_out,
    r_out,
):
    for i in numba.prange(x.size):
        res = np.empty((3, 3))
        t, r = _zero_doppler_point(coef, tc, ts, x[i], y[i], z[i], t_guess, res)
        gr = _srgr(cc_t, cc_sr0, cc_gr0, cc_srgr, r, t)
        t_line = t
        if tau_ref > 0.0:
            # bistatic delay: the GRD line of a target is offset by half the difference of
            # its two-way range time from the reference (mid-swath) range time
            t_line = t - 0.5 * (2.0 * r / 299792458.0 - tau_ref)
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
    orbit_source: str = "annotation"
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
        sv = StateVectors(
            time=np.array([_dt64(o.findtext("time")) for o in orbits]),
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

    def with_orbit(self, state_vectors: StateVectors, source: str) -> RadarGeometry:
        """A copy using other state vectors (e.g. POEORB), recording ``orbit_source``."""
        return replace(self, state_vectors=state_vectors, orbit_source=source)

    def with_orbit_file(self, path: str | Path) -> RadarGeometry:
        """A copy using the state vectors of an ESA EOF orbit file (POEORB/RESORB)."""
        sv, kind = read_eof(path)
        return self.with_orbit(sv, kind)

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
        return cc.time, cc.sr0, cc.gr0, cc.srgr

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

    def lonlat_to_radar(
        self, lon: np.ndarray, lat: np.ndarray, height: np.ndarray | float
    ) -> tuple[np.ndarray, np.ndarray]:
        """lon/lat (degrees, WGS84) and ellipsoidal height (m) -> (line, pixel)."""
        return self.ground_to_radar(*lonlat_h_to_ecef(lon, lat, height))

    def slant_range_to_ground_range(self, sr: np.ndarray, t: np.ndarray) -> np.ndarray:
        """One-way slant range (m) at azimuth time t (s) -> ground range (m)."""
        sr = np.asarray(sr, dtype=np.float64)
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), sr.shape)
        cc = self.coordinate_conversion
        return _blend_poly(cc.time, cc.srgr, cc.sr0, cc.gr0, sr, t, offset_is_input=True)

    def ground_range_to_slant_range(self, gr: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Ground range (m) at azimuth time t (s) -> one-way slant range (m) (grsr)."""
        gr = np.asarray(gr, dtype=np.float64)
        t = np.broadcast_to(np.asarray(t, dtype=np.float64), gr.shape)
        cc = self.coordinate_conversion
        return _blend_poly(
            cc.time, cc.grsr, cc.gr0, np.zeros_like(cc.gr0), gr, t, offset_is_input=True
        )

    # -- inverse model -----------------------------------------------------------------
    def radar_to_ground(
        self,
        line: np.ndarray,
        pixel: np.ndarray,
        height: np.ndarray | float = 0.0,
        tol_px: float = 1e-4,
    ) -> tuple[np.ndarray, np.ndarray]:
        """GRD (line, pixel) at ellipsoidal ``height`` (m) -> (lon, lat) degrees.

        Starts from the GCP grid (interpolated) and refines with Newton steps on the
        forward model (finite-difference Jacobian in lon/lat) until within ``tol_px``.
        """
        line = np.asarray(line, dtype=np.float64)
        pixel = np.asarray(pixel, dtype=np.float64)
        shape = np.broadcast_shapes(line.shape, pixel.shape, np.shape(height))
        line = np.broadcast_to(line, shape).reshape(-1)
        pixel = np.broadcast_to(pixel, shape).reshape(-1)
        h = np.broadcast_to(np.asarray(height, dtype=np.float64), shape).reshape(-1)
        lon, lat = self._gcp_interp(line, pixel)
        d = 1e-4  # degrees for the finite differences (~10 m)
        for _ in range(10):
            l0, p0 = self.lonlat_to_radar(lon, lat, h)
            l1, p1 = self.lonlat_to_radar(lon + d, lat, h)
            l2, p2 = self.lonlat_to_radar(lon, lat + d, h)
            j11, j12 = (l1 - l0) / d, (l2 - l0) / d
            j21, j22 = (p1 - p0) / d, (p2 - p0) / d
            det = j11 * j22 - j12 * j21
            rl, rp = line - l0, pixel - p0
            dlon = (j22 * rl - j12 * rp) / det
            dlat = (-j21 * rl + j11 * rp) / det
            lon = lon + dlon
            lat = lat + dlat
            if np.all(np.hypot(rl, rp) < tol_px):
                break
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


def _blend_poly(times, coefs, in0, out0, v, t, offset_is_input=True):
    """Evaluate polynomials ``out0 + sum c_i (v - in0)^i`` blended linearly in time."""
    n = len(times)
    if n == 1:
        return out0[0] + np.polynomial.polynomial.polyval(v - in0[0], coefs[0])
    hi = np.clip(np.searchsorted(times, t, side="right"), 1, n - 1)
    lo = hi - 1
    w = np.clip((t - times[lo]) / (times[hi] - times[lo]), 0.0, 1.0)
    res = np.zeros(v.shape)
    for idx, weight in ((lo, 1.0 - w), (hi, w)):
        c = coefs[idx]  # (..., k)
        u = v - in0[idx]
        acc = np.zeros(v.shape)
        for k in range(c.shape[-1] - 1, -1, -1):
            acc = acc * u + c[..., k]
        res += weight * (acc + out0[idx])
    return res


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
    "StateVectors",
    "OrbitPolynomial",
    "lonlat_h_to_ecef",
    "ecef_to_lonlat_h",
    "find_orbit_file",
    "read_eof",
    "apply_orbit_dir",
)
