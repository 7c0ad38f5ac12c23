"""Range-Doppler terrain correction onto an area grid, layover/shadow, terrain flattening.

For every output pixel of a :class:`sarssl.sar.grid.Grid` the ground point is the pixel centre
at its DEM height (bilinear in the DEM, ellipsoidal metres); the forward model
(:meth:`sarssl.sar.geometry.RadarGeometry.ground_to_radar`) maps it to a fractional GRD
(line, pixel), where the radar image is sampled bilinearly (backward geocoding, as SNAP's
Range-Doppler Terrain Correction).

Speed: the forward model is evaluated exactly only on a coarse lattice of *nodes* (every
``node_step`` output pixels) at a stack of height levels (<= ``level_step`` m apart)
spanning the DEM's range; each output pixel interpolates (line, slant range) bilinearly
between nodes and linearly between the two levels bracketing its height. Both are smooth at
these scales (curvature terms ~1e-3 px), so the interpolation error stays below 0.01 px
while the per-pixel work is a few dozen flops in a numba ``prange`` loop. The slant range
then becomes a GRD pixel, per pixel, through the coordinate conversion of its line's
azimuth block: the GRD pixel of a given slant range jumps by up to ~18 px at far range from
one 1 s block to the next (:mod:`sarssl.sar.geometry`), which node interpolation would smear.

Layover and shadow use the local-incidence test on the DEM sampled on the output grid:
with l the unit vector from the ground to the sensor (local east/north/up, interpolated
from the nodes) and n the terrain normal, a facet is in *shadow* when ``n . l <= 0``
(it faces away from the sensor) and in *layover* when the slant range decreases moving
away from the sensor along the ground (``s > tan(theta)``, s the terrain slope along the
ground-range direction, theta the ellipsoid incidence angle), i.e. the fore-slope is
steeper than the incidence angle. (Shadow cast by distant terrain onto facets that face
the sensor is not detected by this local test.)

Terrain flattening follows Small (2011, "Flattening gamma: radiometric terrain correction
for SAR imagery", IEEE TGRS 49(8)): every DEM facet (output pixel) of true area A
contributes its area projected onto the plane perpendicular to the look direction,
``A cos(theta_local)``, to the radar pixels it maps to (bilinear splatting); the sum
A_gamma over a radar pixel is its illuminated area, and
``gamma0_T = beta0 * A_beta / A_gamma`` with the beta0 reference area
``A_beta = azimuth_spacing * slant_range_spacing``. On flat terrain this reduces to the
ellipsoid ``gamma0 = beta0 tan(theta)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numba
import numpy as np
from pyproj import CRS, Transformer

from .dem import Dem
from .geometry import RadarGeometry, lonlat_h_to_ecef
from .grid import Grid
from .window import PixelWindow

log = logging.getLogger(__name__)

MASK_NODATA = 0
MASK_VALID = 1
MASK_LAYOVER = 2
MASK_SHADOW = 4


@dataclass
class GeocodingLUT:
    """Per output pixel: radar (line, pixel), ellipsoidal height, look vector (ENU)."""

    grid: Grid
    line: np.ndarray  # (H, W) float64, NaN where no DEM
    pixel: np.ndarray
    height: np.ndarray
    look: np.ndarray  # (3, H, W) unit vector ground -> sensor, local east/north/up

    # -- construction ------------------------------------------------------------------
    @classmethod
    def compute(
        cls,
        geom: RadarGeometry,
        grid: Grid,
        dem: Dem,
        node_step: int = 16,
        level_step: float = 200.0,
        radar_rows: slice = slice(None),
        radar_cols: slice = slice(None),
    ) -> GeocodingLUT:
        """Build the lookup table for ``grid`` with heights from ``dem``.

        Radar (line, pixel) is computed only on the ``radar_rows`` x ``radar_cols``
        sub-window (default: everywhere) and is NaN outside it, while heights and look
        vectors cover the whole grid: a tile's LUT margin feeds slopes and shadows only
        (unless terrain flattening splats it), so its radar coordinates would be wasted work.
        """
        H, W = grid.shape
        rr0, rr1, _ = radar_rows.indices(H)
        rc0, rc1, _ = radar_cols.indices(W)
        node_r = _nodes(H, node_step)
        node_c = _nodes(W, node_step)
        xs, ys = grid.xy()
        nx, ny = np.meshgrid(xs[node_c], ys[node_r])
        to_ll = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True)
        lon, lat = to_ll.transform(nx, ny)
        # fractional DEM (col, row) of the nodes (pixel centres at integers)
        dem_h_crs = dem.crs.sub_crs_list[0] if dem.crs.is_compound else dem.crs
        if CRS.from_user_input(dem_h_crs).is_geographic:
            dx, dy = lon, lat
        else:
            dx, dy = Transformer.from_crs(grid.crs, dem_h_crs, always_xy=True).transform(nx, ny)
        inv = ~dem.transform
        dcol = inv.a * dx + inv.b * dy + inv.c - 0.5
        drow = inv.d * dx + inv.e * dy + inv.f - 0.5
        # height levels spanning the DEM
        hmin = float(np.nanmin(dem.height)) - 10.0
        hmax = float(np.nanmax(dem.height)) + 10.0
        nlev = max(2, int(np.ceil((hmax - hmin) / level_step)) + 1)
        levels = np.linspace(hmin, hmax, nlev)
        node_line = np.empty((nlev,) + nx.shape)
        node_range = np.empty((nlev,) + nx.shape)  # one-way slant range (m): smooth
        for k, h in enumerate(levels):
            node_line[k], _, _, node_range[k] = geom.ground_to_radar(
                *lonlat_h_to_ecef(lon, lat, h), return_time_range=True
            )
        # look vector at the nodes (mid level)
        X = np.stack(lonlat_h_to_ecef(lon, lat, 0.5 * (hmin + hmax)))
        _, _, t, _ = geom.ground_to_radar(*X, return_time_range=True)
        S, _, _ = geom.orbit.evaluate(t)
        L = np.moveaxis(S, -1, 0) - X
        L /= np.linalg.norm(L, axis=0)
        look_enu = _ecef_to_enu(L, np.radians(lon), np.radians(lat))

        line = np.empty((H, W))
        pixel = np.empty((H, W))
        height = np.empty((H, W))
        look = np.empty((3, H, W), dtype=np.float32)
        _lut_kernel(
            node_r.astype(np.int64),
            node_c.astype(np.int64),
            dcol,
            drow,
            np.ascontiguousarray(dem.height, dtype=np.float64),
            levels,
            node_line,
            node_range,
            np.ascontiguousarray(look_enu),
            line,
            pixel,
            height,
            look,
            rr0,
            rr1,
            rc0,
            rc1,
        )
        # the kernel interpolated slant range into ``pixel``: to GRD pixels through the
        # coordinate conversion of each pixel's azimuth block (it can jump between blocks)
        geom.slant_range_to_pixel(line, pixel, in_place=True)
        return cls(grid=grid, line=line, pixel=pixel, height=height, look=look)

    def exact(self, geom: RadarGeometry) -> tuple[np.ndarray, np.ndarray]:
        """(line, pixel) from the forward model at every pixel (slow; for checks)."""
        xs, ys = self.grid.xy()
        gx, gy = np.meshgrid(xs, ys)
        lon, lat = Transformer.from_crs(self.grid.crs, "EPSG:4326", always_xy=True).transform(
            gx, gy
        )
        return geom.lonlat_to_radar(lon, lat, self.height)

    # -- radar window ------------------------------------------------------------------
    def radar_bounds(
        self,
        geom: RadarGeometry,
        margin: int = 8,
        rows: slice = slice(None),
        cols: slice = slice(None),
    ) -> PixelWindow | None:
        """The GRD window the grid (or its ``rows`` x ``cols`` sub-window) needs, grown by
        ``margin`` px and clipped to the image; None when it lies outside the image."""
        line, pixel = self.line[rows, cols], self.pixel[rows, cols]
        ok = np.isfinite(line)
        if not ok.any():
            return None
        l0 = int(np.floor(np.nanmin(line))) - margin
        l1 = int(np.ceil(np.nanmax(line))) + margin + 1
        p0 = int(np.floor(np.nanmin(pixel))) - margin
        p1 = int(np.ceil(np.nanmax(pixel))) + margin + 1
        l0, p0 = max(l0, 0), max(p0, 0)
        l1, p1 = min(l1, geom.number_of_lines), min(p1, geom.number_of_samples)
        if l1 <= l0 or p1 <= p0:
            return None
        return PixelWindow(l0, p0, l1 - l0, p1 - p0)

    # -- products ------------------------------------------------------------------------
    def sample(
        self,
        image: np.ndarray,
        offset: tuple[int, int] = (0, 0),
        rows: slice = slice(None),
        cols: slice = slice(None),
    ) -> np.ndarray:
        """Bilinearly sample a radar-geometry image (2-D, or bands first) on the grid.

        ``offset`` = (row_off, col_off) of ``image`` in the full GRD image (the
        :attr:`~sarssl.sar.window.PixelWindow.offset` of its radar window); ``rows``/``cols``
        select a sub-window of the grid (default all). NaN where the point falls outside
        ``image`` or where nodata neighbours hold > half the weight.
        """
        img = np.asarray(image, dtype=np.float32)
        squeeze = img.ndim == 2
        if squeeze:
            img = img[None]
        # views, not copies: the kernel subtracts the offset itself (no window-sized temporaries)
        line = self.line[rows, cols]
        pixel = self.pixel[rows, cols]
        out = np.empty((img.shape[0],) + line.shape, dtype=np.float32)
        for b in range(img.shape[0]):
            _sample_kernel(
                np.ascontiguousarray(img[b]),
                line,
                pixel,
                float(offset[0]),
                float(offset[1]),
                out[b],
            )
        return out[0] if squeeze else out

    def slopes(self) -> tuple[np.ndarray, np.ndarray]:
        """Terrain slope components dh/dx (east), dh/dy (north) on the grid (unitless)."""
        r = self.grid.resolution
        gy, gx = np.gradient(self.height, r)
        return gx, -gy  # rows run southwards

    def cos_local_incidence(self) -> np.ndarray:
        """cos of the local incidence angle: terrain normal . unit look vector."""
        hx, hy = self.slopes()
        norm = np.sqrt(1.0 + hx * hx + hy * hy)
        le, ln, lu = self.look
        return (-hx * le - hy * ln + lu) / norm

    def mask(
        self, sampled: np.ndarray, rows: slice = slice(None), cols: slice = slice(None)
    ) -> np.ndarray:
        """uint8 mask: 0 no data, 1 valid (+2 layover, +4 shadow) for valid pixels.

        ``sampled`` is the image sampled on the ``rows``/``cols`` sub-window of the grid
        (default the whole grid); slopes and shadows use the whole grid around it.

        The local tests (see the module docstring) run in one fused numba pass over the
        sub-window only: slopes by central differences (one-sided at the grid's edges,
        as :func:`numpy.gradient`), layover ``s tan(e) > 1`` written ``s * l_up > l_h``, and
        shadow ``n . l <= 0``, plus the cast shadow of :meth:`cast_shadow` (whole grid).
        """
        valid = np.isfinite(sampled)
        if valid.ndim == 3:
            valid = valid.all(axis=0)
        H, W = self.height.shape
        r0, r1, _ = rows.indices(H)
        c0, c1, _ = cols.indices(W)
        if valid.shape != (r1 - r0, c1 - c0):
            raise ValueError(
                f"mask: sampled shape {valid.shape} does not match the window {(r1 - r0, c1 - c0)}"
            )
        cast = self.cast_shadow()
        m = np.empty(valid.shape, dtype=np.uint8)
        _mask_kernel(
            np.ascontiguousarray(self.height, dtype=np.float64),
            self.look,
            float(self.grid.resolution),
            r0,
            c0,
            np.ascontiguousarray(valid),
            cast,
            m,
        )
        return m

    def cast_shadow(self) -> np.ndarray:
        """Shadow cast by terrain nearer to the sensor (ray casting along the look direction).

        A ground point P is shadowed when some point Q nearer to the sensor along the same
        range line rises above the ray from the sensor to P: with x the horizontal distance
        away from the sensor and tan(e) = up / horizontal of the unit look vector (e the
        elevation angle of the sensor seen from the ground, 90 deg - incidence), P is in
        shadow when ``h_Q - h_P > (x_P - x_Q) tan(e)``, i.e. when the running maximum of
        ``h_Q + x_Q tan(e)`` over nearer points exceeds ``h_P + x_P tan(e)``; equivalently the
        look angle to P is smaller than the largest look angle to the nearer-range points.
        Range lines are traced on the grid as straight rays along the mean horizontal look
        direction (sensor rays are parallel to within ~0.1 deg over a tile), one pass per ray,
        so the cost is O(1) per pixel. Terrain beyond the grid is not seen: callers grow the
        grid by a margin (``relief / tan(e)``) on every side.
        """
        le, ln, lu = (np.nanmean(v) for v in self.look)
        if not np.isfinite(le) or (le == 0 and ln == 0):
            return np.zeros(self.height.shape, dtype=bool)
        lh = float(np.hypot(le, ln))
        tan_e = float(lu) / lh  # the mean over the grid: rays from one sensor, one angle
        # direction away from the sensor in (col, row) px: east = +col, north = -row
        dcol, drow = -le / lh, ln / lh
        h = np.ascontiguousarray(self.height, dtype=np.float64)
        out = np.zeros(h.shape, dtype=np.bool_)
        res = self.grid.resolution
        if abs(dcol) >= abs(drow):
            slope = drow / abs(dcol)
            _cast_shadow_kernel(h, tan_e, slope, dcol > 0, res * np.hypot(1.0, slope), out)
        else:  # steps along rows (a look direction closer to north-south)
            slope = dcol / abs(drow)
            out_t = np.zeros(h.T.shape, dtype=np.bool_)
            _cast_shadow_kernel(
                np.ascontiguousarray(h.T), tan_e, slope, drow > 0, res * np.hypot(1.0, slope), out_t
            )
            out = out_t.T.copy()
        return out

    def illuminated_area(
        self, geom: RadarGeometry, shape: tuple[int, int], offset: tuple[int, int] = (0, 0)
    ) -> np.ndarray:
        """A_gamma (m^2) per radar pixel of a window (Small 2011): projected facet areas."""
        hx, hy = self.slopes()
        area = self.grid.resolution**2 * np.sqrt(1.0 + hx * hx + hy * hy)
        proj = np.clip(area * self.cos_local_incidence(), 0.0, None)
        acc = np.zeros(shape, dtype=np.float64)
        _splat_kernel(self.line - offset[0], self.pixel - offset[1], np.nan_to_num(proj), acc)
        return acc

    def splat(
        self, values: np.ndarray, shape: tuple[int, int], offset: tuple[int, int] = (0, 0)
    ) -> np.ndarray:
        """Per-output-pixel ``values`` summed onto the radar pixels of a window (bilinear
        splatting at each pixel's radar position; NaN values count as 0): how the facet
        areas of Small (2011) accumulate."""
        acc = np.zeros(shape, dtype=np.float64)
        _splat_kernel(self.line - offset[0], self.pixel - offset[1], np.nan_to_num(values), acc)
        return acc

    def beta_area(
        self, geom: RadarGeometry, shape: tuple[int, int], offset: tuple[int, int] = (0, 0)
    ) -> np.ndarray:
        """A_beta (m^2) per radar pixel: azimuth spacing x slant-range spacing of the pixel."""
        rows = offset[0] + np.arange(shape[0])
        cols = offset[1] + np.arange(shape[1])
        t = geom.line_time(rows)[:, None]
        gr = cols[None, :] * geom.range_pixel_spacing
        d = geom.range_pixel_spacing
        sr1 = geom.ground_range_to_slant_range(gr + 0.5 * d + 0 * t, t + 0 * gr)
        sr0 = geom.ground_range_to_slant_range(gr - 0.5 * d + 0 * t, t + 0 * gr)
        return geom.azimuth_pixel_spacing * (sr1 - sr0)

    def flattening_factor(
        self,
        geom: RadarGeometry,
        shape: tuple[int, int],
        offset: tuple[int, int] = (0, 0),
        min_ratio: float = 0.05,
    ) -> np.ndarray:
        """A_beta / A_gamma per radar pixel (multiply beta0 by it to get gamma0_T).

        NaN where the illuminated area is below ``min_ratio`` A_beta (shadow / unsampled).
        """
        a_gamma = self.illuminated_area(geom, shape, offset)
        a_beta = self.beta_area(geom, shape, offset)
        with np.errstate(divide="ignore", invalid="ignore"):
            f = a_beta / a_gamma
        f[a_gamma < min_ratio * a_beta] = np.nan
        return f.astype(np.float32)


# ---------------------------------------------------------------------------------------
def _nodes(n: int, step: int) -> np.ndarray:
    nodes = np.arange(0, n, step)
    if nodes[-1] != n - 1:
        nodes = np.append(nodes, n - 1)
    if nodes.size == 1:
        nodes = np.array([0, max(n - 1, 1)])
    return nodes


def _ecef_to_enu(v: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    sl, cl = np.sin(lon), np.cos(lon)
    sp, cp = np.sin(lat), np.cos(lat)
    e = -sl * v[0] + cl * v[1]
    n = -sp * cl * v[0] - sp * sl * v[1] + cp * v[2]
    u = cp * cl * v[0] + cp * sl * v[1] + sp * v[2]
    return np.stack([e, n, u])


@numba.njit(cache=True, inline="always")
def _bracket(nodes, x):
    n = nodes.size
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if nodes[mid] <= x:
            lo = mid
        else:
            hi = mid
    return lo, (x - nodes[lo]) / (nodes[lo + 1] - nodes[lo])


@numba.njit(cache=True, inline="always")
def _bil(a, i, j, fi, fj):
    return (
        a[i, j] * (1 - fi) * (1 - fj)
        + a[i, j + 1] * (1 - fi) * fj
        + a[i + 1, j] * fi * (1 - fj)
        + a[i + 1, j + 1] * fi * fj
    )


@numba.njit(cache=True, parallel=True)
def _lut_kernel(
    node_r,
    node_c,
    dcol,
    drow,
    dem,
    levels,
    node_line,
    node_pix,
    look_enu,
    line,
    pixel,
    height,
    look,
    rr0,
    rr1,
    rc0,
    rc1,
):
    H, W = line.shape
    dr_, dc_ = dem.shape
    nlev = levels.size
    h0 = levels[0]
    dh = levels[1] - levels[0]
    # node bracket of every column, once (not per row)
    cj = np.empty(W, dtype=np.int64)
    cf = np.empty(W, dtype=np.float64)
    for c in range(W):
        cj[c], cf[c] = _bracket(node_c, c)
    nc = node_c.size
    for r in numba.prange(H):
        i, fi = _bracket(node_r, r)
        # bilinear = linear in column of the node rows interpolated linearly in row: the
        # row step is done once per output row on the (few hundred) node columns, leaving
        # two loads and one lerp per pixel and quantity
        q = np.empty((5 + 2 * nlev, nc))
        for j in range(nc):
            q[0, j] = dcol[i, j] + fi * (dcol[i + 1, j] - dcol[i, j])
            q[1, j] = drow[i, j] + fi * (drow[i + 1, j] - drow[i, j])
            for k in range(3):
                q[2 + k, j] = look_enu[k, i, j] + fi * (look_enu[k, i + 1, j] - look_enu[k, i, j])
            for k in range(nlev):
                q[5 + k, j] = node_line[k, i, j] + fi * (
                    node_line[k, i + 1, j] - node_line[k, i, j]
                )
                q[5 + nlev + k, j] = node_pix[k, i, j] + fi * (
                    node_pix[k, i + 1, j] - node_pix[k, i, j]
                )
        for c in range(W):
            j = cj[c]
            fj = cf[c]
            x = q[0, j] + fj * (q[0, j + 1] - q[0, j])
            y = q[1, j] + fj * (q[1, j + 1] - q[1, j])
            for k in range(3):
                look[k, r, c] = q[2 + k, j] + fj * (q[2 + k, j + 1] - q[2 + k, j])
            x0 = int(np.floor(x))
            y0 = int(np.floor(y))
            if x0 < 0 or y0 < 0 or x0 + 1 >= dc_ or y0 + 1 >= dr_:
                line[r, c] = np.nan
                pixel[r, c] = np.nan
                height[r, c] = np.nan
                continue
            fx = x - x0
            fy = y - y0
            h = _bil(dem, y0, x0, fy, fx)
            height[r, c] = h
            if h != h or r < rr0 or r >= rr1 or c < rc0 or c >= rc1:
                line[r, c] = np.nan
                pixel[r, c] = np.nan
                continue
            k = int(np.floor((h - h0) / dh))
            if k < 0:
                k = 0
            if k > nlev - 2:
                k = nlev - 2
            w = (h - levels[k]) / dh
            a = 5 + k
            l0 = q[a, j] + fj * (q[a, j + 1] - q[a, j])
            l1 = q[a + 1, j] + fj * (q[a + 1, j + 1] - q[a + 1, j])
            a = 5 + nlev + k
            p0 = q[a, j] + fj * (q[a, j + 1] - q[a, j])
            p1 = q[a + 1, j] + fj * (q[a + 1, j + 1] - q[a + 1, j])
            line[r, c] = l0 + w * (l1 - l0)
            pixel[r, c] = p0 + w * (p1 - p0)


@numba.njit(cache=True, parallel=True)
def _mask_kernel(h, look, res, r0, c0, valid, cast, out):
    """Fused layover/shadow mask on the window of ``out`` at (r0, c0) of the grid.

    Slopes as :func:`numpy.gradient` (central differences, first-order one-sided at the
    grid's edges); hx = dh/dx east, hy = dh/dy north (rows run south). NaN heights give
    False tests, as in numpy.
    """
    H, W = h.shape
    R, C = out.shape
    for i in numba.prange(R):
        r = r0 + i
        for j in range(C):
            c = c0 + j
            if not valid[i, j]:
                out[i, j] = 0
                continue
            if W < 2:
                hx = 0.0
            elif c == 0:
                hx = (h[r, 1] - h[r, 0]) / res
            elif c == W - 1:
                hx = (h[r, W - 1] - h[r, W - 2]) / res
            else:
                hx = (h[r, c + 1] - h[r, c - 1]) / (2.0 * res)
            if H < 2:
                gy = 0.0
            elif r == 0:
                gy = (h[1, c] - h[0, c]) / res
            elif r == H - 1:
                gy = (h[H - 1, c] - h[H - 2, c]) / res
            else:
                gy = (h[r + 1, c] - h[r - 1, c]) / (2.0 * res)
            hy = -gy
            le = np.float64(look[0, r, c])
            ln = np.float64(look[1, r, c])
            lu = np.float64(look[2, r, c])
            lh = math.sqrt(le * le + ln * ln)
            s = -(hx * le + hy * ln) / max(lh, 1e-12)
            v = 1
            if s * lu > lh:
                v |= 2
            cosi = (-hx * le - hy * ln + lu) / math.sqrt(1.0 + hx * hx + hy * hy)
            if cosi <= 0.0 or cast[r, c]:
                v |= 4
            out[i, j] = v


@numba.njit(cache=True, parallel=True)
def _sample_kernel(img, line, pixel, off_line, off_pixel, out):
    """Bilinear sampling of ``img`` at (line - off_line, pixel - off_pixel), NaN-aware."""
    H, W = line.shape
    rows, cols = img.shape
    for r in numba.prange(H):
        for c in range(W):
            y = line[r, c] - off_line
            x = pixel[r, c] - off_pixel
            if not (y >= 0.0 and x >= 0.0 and y <= rows - 1 and x <= cols - 1):
                out[r, c] = np.nan
                continue
            y0 = min(int(y), rows - 2) if rows > 1 else 0
            x0 = min(int(x), cols - 2) if cols > 1 else 0
            fy = y - y0
            fx = x - x0
            s = 0.0
            ws = 0.0
            for a in range(2):
                for b in range(2):
                    yy = min(y0 + a, rows - 1)
                    xx = min(x0 + b, cols - 1)
                    w = (fy if a else 1.0 - fy) * (fx if b else 1.0 - fx)
                    v = img[yy, xx]
                    if v == v and w > 0.0:
                        s += w * v
                        ws += w
            out[r, c] = s / ws if ws >= 0.5 else np.nan


@numba.njit(cache=True, parallel=True)
def _cast_shadow_kernel(h, tan_e, slope, forward, step, out):
    """Running-maximum shadow sweep along rays of ``slope`` rows per column step.

    Ray j holds the pixels (j + off(k), c(k)), off(k) = floor(slope * k + 0.5), k the step
    count from the near-range edge (``forward``: near range is column 0, else the last
    column), so every pixel lies on exactly one ray; ``step`` is the horizontal distance
    per step (m) and ``tan_e`` the tangent of the sensor elevation angle.
    """
    H, W = h.shape
    max_off = int(np.floor(abs(slope) * (W - 1) + 0.5)) + 1
    for j in numba.prange(-max_off, H + max_off):
        best = -np.inf
        for k in range(W):
            c = k if forward else W - 1 - k
            r = j + int(np.floor(slope * k + 0.5))
            if r < 0 or r >= H:
                continue
            z = h[r, c]
            if z != z:
                continue
            g = z + k * step * tan_e
            if g < best - 1e-3:
                out[r, c] = True
            elif g > best:
                best = g
    return out


@numba.njit(cache=True)
def _splat_kernel(line, pixel, value, acc):
    H, W = line.shape
    rows, cols = acc.shape
    for r in range(H):
        for c in range(W):
            y = line[r, c]
            x = pixel[r, c]
            if not (y == y and x == x):
                continue
            y0 = int(np.floor(y))
            x0 = int(np.floor(x))
            fy = y - y0
            fx = x - x0
            v = value[r, c]
            for a in range(2):
                for b in range(2):
                    yy = y0 + a
                    xx = x0 + b
                    if 0 <= yy < rows and 0 <= xx < cols:
                        acc[yy, xx] += v * (fy if a else 1.0 - fy) * (fx if b else 1.0 - fx)
