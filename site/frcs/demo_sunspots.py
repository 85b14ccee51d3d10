#!/usr/bin/python3
"""demo-sunspots: a small but honest sunspot Feature Recognition Code for the HFC pipeline.

It runs on the cluster as a SLURM job with Debian's /usr/bin/python3 and only the standard
library, numpy and Pillow (python3-numpy, python3-pil), so it must not import anything else.

For every observation time T in [START, END) on a CADENCE grid it:

1. synthesises a deterministic SDO/HMI-like full-disk continuum image and line-of-sight
   magnetogram with a few sunspots (penumbra + umbra, signed field);
2. detects the spots for real: Sun centre/radius measured on the image, quiet-Sun limb-darkening
   fit, threshold, 8-connected components (own union-find labelling), umbrae;
3. measures the SDOSS feature columns and writes the SDOSS file set (init, feat, quicklook)
   plus the per-code frc_info and observatory files.

Geometry conventions (used everywhere below):

* Pixel (x, y) = (column, row) of the numpy array, 0-based; row 0 is the SOUTH edge, i.e. the
  array is stored like a FITS image with solar north up (+y) and solar west to the right (+x).
  The quicklook JPEG is flipped so that north is at the top of the picture.
* Helioprojective X/Y (arcsec) = (pixel - Sun centre) * CDELT; +X west, +Y north.
* Heliographic longitudes are positive to the west of the central meridian. The image axes are
  aligned with the solar rotation axis (as for SDO level-1.5 data), so the P angle is 0.
* Orthographic projection: the finite Sun-Earth distance is neglected (error below 0.3 deg in
  heliographic coordinates even at the limb, negligible near disk centre).

Spots come from a generator seeded with the UTC date (YYYYMMDD, plus --seed-salt): all the
observations of one day show the same spots, rotating with the Sun. Every output depends only on T
(and the salt), never on START or the wall clock, so re-running a night gives byte-identical CSVs.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import math
import os
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image

CODE_NAME = "demosunspots"
CODE_VERSION = "1.0.0"
# File names carry the version without dots (HFC convention: sdoss 1.06 -> "106").
FILE_VERSION = CODE_VERSION.replace(".", "")
OBS_TAG = "sdo"
TIME_FMT = "%Y-%m-%dT%H:%M:%S"
NAME_TIME_FMT = "%Y%m%dT%H%M%S"

# --- image model -------------------------------------------------------------------------------
NAXIS = 1024
CDELT = 2.0  # arcsec / pixel: HMI's 0.504"/px 4096^2 frames rebinned to 1024^2
I0_COUNTS = 52000.0  # quiet-Sun continuum at disk centre, HMI-like DN/s
LIMB_U = 0.6  # linear limb-darkening coefficient: I(mu) = 1 - u (1 - mu)
PENUMBRA_LEVEL = 0.75
UMBRA_LEVEL = 0.35
INTENSITY_NOISE = 0.008  # relative, 1 sigma; the 0.85 threshold is ~12 sigma from both sides
FIELD_NOISE_G = 8.0
R_SUN_MM = 695.7  # nominal solar radius (IAU 2015), Mm
R_SUN_ARCSEC_1AU = 959.63  # solar semi-diameter at 1 AU

# --- detection ---------------------------------------------------------------------------------
SPOT_THRESHOLD = 0.85  # spot = intensity below 0.85 of the local quiet Sun
UMBRA_THRESHOLD = 0.5  # umbra = below 0.5 of the local quiet Sun, inside a spot
DETECT_RHO_MAX = 0.97  # no detection in the outer 3% of the radius (mu < 0.24): limb is unreliable
MIN_SPOT_PIX = 8  # smaller components are noise or slivers, dropped
MIN_UMBRA_PIX = 2
MU_MIN_AREA = 0.05  # cap of the 1/mu foreshortening correction near the limb

# Degrees of the heliographic sphere per day, synodic (seen from the Earth): Snodgrass & Ulrich
# (1990) sidereal photospheric rate minus the Earth's mean orbital motion.
EARTH_ORBIT_DEG_PER_DAY = 0.9856

CAR_ROT_PERIOD = 27.2752316  # synodic Carrington period, days (Meeus, ch. 29)
CAR_ROT_EPOCH_JD = 2398140.2270  # Meeus: rotation C starts at JD 2398140.2270 + 27.2752316 C

J2000 = dt.datetime(2000, 1, 1, 12, 0, 0)  # JD 2451545.0 (UTC used for TT: 69 s, ~0.01 deg of L0)

INIT_HEADER = (
    "ID_OBSERVATIONS;OBSERVATORY_ID;DATE_OBS;DATE_END;JDINT;JDFRAC;EXP_TIME;C_ROTATION;BSCALE;BZERO;"
    "BITPIX;NAXIS1;NAXIS2;R_SUN;CENTER_X;CENTER_Y;CDELT1;CDELT2;QUALITY;FILENAME;FILE_FORMAT;FILE_SIZE;"
    "DATA_TYPE;PROCESSING_LVL;COMMENT;LOC_FILENAME;URL;QCLK_URL;QCLK_FNAME"
).split(";")

FEAT_HEADER = (
    "ID_SUNSPOT;FRC_INFO_ID;OBSERVATIONS_ID_IC;OBSERVATIONS_ID_M;FEAT_X_ARCSEC;FEAT_Y_ARCSEC;FEAT_X_PIX;"
    "FEAT_Y_PIX;FEAT_HG_LONG_DEG;FEAT_HG_LAT_DEG;FEAT_CARR_LONG_DEG;FEAT_CARR_LAT_DEG;BR_X0_PIX;BR_Y0_PIX;"
    "BR_X1_PIX;BR_Y1_PIX;BR_X2_PIX;BR_Y2_PIX;BR_X3_PIX;BR_Y3_PIX;BR_X0_ARCSEC;BR_Y0_ARCSEC;BR_X1_ARCSEC;"
    "BR_Y1_ARCSEC;BR_X2_ARCSEC;BR_Y2_ARCSEC;BR_X3_ARCSEC;BR_Y3_ARCSEC;BR_HG_LONG0_DEG;BR_HG_LAT0_DEG;"
    "BR_HG_LONG1_DEG;BR_HG_LAT1_DEG;BR_HG_LONG2_DEG;BR_HG_LAT2_DEG;BR_HG_LONG3_DEG;BR_HG_LAT3_DEG;"
    "BR_CARR_LONG0_DEG;BR_CARR_LAT0_DEG;BR_CARR_LONG1_DEG;BR_CARR_LAT1_DEG;BR_CARR_LONG2_DEG;"
    "BR_CARR_LAT2_DEG;BR_CARR_LONG3_DEG;BR_CARR_LAT3_DEG;FEAT_AREA_PIX;FEAT_AREA_DEG2;FEAT_AREA_MM2;"
    "FEAT_DIAM_DEG;FEAT_DIAM_MM;FEAT_MEAN2QSUN;FEAT_MAX_INT;FEAT_MIN_INT;FEAT_MEAN_INT;FEAT_TOT_BZ;"
    "FEAT_ABS_BZ;FEAT_MAX_BZ;FEAT_MIN_BZ;FEAT_MEAN_BZ;UMBRA_NUMBER;UMBRA_AREA_PIX;UMBRA_AREA_MM2;"
    "UMBRA_AREA_DEG2;UMBRA_DIAM_DEG;UMBRA_DIAM_MM;UMBRA_MAX_INT;UMBRA_MIN_INT;UMBRA_MEAN_INT;UMBRA_TOT_BZ;"
    "UMBRA_ABS_BZ;UMBRA_MAX_BZ;UMBRA_MIN_BZ;UMBRA_MEAN_BZ;CC_X_PIX;CC_Y_PIX;CC_X_ARCSEC;CC_Y_ARCSEC;CC;"
    "CC_LENGTH;RS;RS_LENGTH;SNAPSHOT_FN;SNAPSHOT_PATH;HELIO_SS_NUMBER;FEAT_FILENAME;RUN_DATE"
).split(";")

FRC_INFO_HEADER = (
    "ID_FRC_INFO;INSTITUT;CODE;VERSION;FEATURE_NAME;TARGET_NAME;TARGET_CLASS;ENC_MET;PERSON;CONTACT;REFERENCE;URL"
).split(";")

OBSERVATORY_HEADER = (
    "ID_OBSERVATORY;OBSERVAT;TELESCOP;INSTRUME;UNITS;WAVEMIN;WAVEMAX;WAVENAME;WAVEUNIT;SPECTRAL_DOMAIN;"
    "OBS_TYPE;OBS_CAT;COMMENT"
).split(";")

# Freeman chain-code directions in the solar frame (+x west, +y north), counter-clockwise from
# east: 0=E 1=NE 2=N 3=NW 4=W 5=SW 6=S 7=SE (with "E" meaning +x on the image).
CC_DX = (1, 1, 0, -1, -1, -1, 0, 1)
CC_DY = (0, 1, 1, 1, 0, -1, -1, -1)


# =============================================================================================
# Time and solar ephemeris
# =============================================================================================


def julian_day_parts(t: dt.datetime) -> tuple[int, float]:
    """Exact (JDINT, JDFRAC) of a naive UTC datetime, from integer seconds since J2000."""
    seconds = (t - J2000) // dt.timedelta(microseconds=1)
    days, rest = divmod(seconds, 86400 * 1_000_000)
    return 2451545 + days, rest / (86400 * 1_000_000)


def julian_day(t: dt.datetime) -> float:
    jdint, jdfrac = julian_day_parts(t)
    return jdint + jdfrac


@dataclass(frozen=True)
class Ephemeris:
    b0_deg: float  # heliographic latitude of the disk centre
    l0_deg: float  # Carrington longitude of the disk centre
    carrington_rotation: int
    distance_au: float
    semidiameter_arcsec: float


def sun_ephemeris(t: dt.datetime) -> Ephemeris:
    """B0, L0 and the Carrington rotation number of a date.

    Solar longitude and distance: the Astronomical Almanac's low-precision formulae (good to
    0.01 deg over 1950-2050), corrected for aberration and nutation (Meeus 25.8). B0 and L0:
    Meeus, "Astronomical Algorithms", ch. 29 (I = 7.25 deg, K, theta with the 25.38-d sidereal
    Carrington period). With UTC used for TT, B0 is good to ~0.01 deg and L0 to ~0.03 deg.
    The rotation number counts the rotations started since 1853 Nov 9 (rotation 1), Meeus 29:
    rotation C starts near JD 2398140.2270 + 27.2752316 C; it is rounded consistently with L0,
    so that it increments exactly when L0 wraps from 0 to 360.
    """
    jd = julian_day(t)
    n = jd - 2451545.0
    tc = n / 36525.0
    mean_long = (280.460 + 0.9856474 * n) % 360.0
    g = math.radians((357.528 + 0.9856003 * n) % 360.0)
    lam = mean_long + 1.915 * math.sin(g) + 0.020 * math.sin(2 * g)
    distance = 1.00014 - 0.01671 * math.cos(g) - 0.00014 * math.cos(2 * g)
    omega = math.radians(125.04 - 1934.136 * tc)
    lam_app = lam - 0.00569 - 0.00478 * math.sin(omega)

    incl = math.radians(7.25)
    k_node = math.radians(73.6667 + 1.3958333 * (jd - 2396758.0) / 36525.0)
    theta = ((jd - 2398220.0) * 360.0 / 25.38) % 360.0
    lk = math.radians(lam_app) - k_node
    b0 = math.degrees(math.asin(math.sin(lk) * math.sin(incl)))
    # Meeus: tan(eta) = tan(lambda - K) cos(I); the quadrant is that of (-sin, -cos), which
    # reproduces his example 29.a (1992 Oct 13.0: B0 = 5.99, L0 = 238.63 deg).
    eta = math.degrees(math.atan2(-math.sin(lk) * math.cos(incl), -math.cos(lk)))
    l0 = (eta - theta) % 360.0

    rotations = (jd - CAR_ROT_EPOCH_JD) / CAR_ROT_PERIOD
    elapsed_fraction = (360.0 - l0) / 360.0
    crot = int(round(rotations - elapsed_fraction))
    return Ephemeris(b0, l0, crot, distance, R_SUN_ARCSEC_1AU / distance)


# =============================================================================================
# Heliographic geometry (orthographic; see module docstring)
# =============================================================================================


def hg_to_disk(lon_deg: float, lat_deg: float, b0_deg: float) -> tuple[float, float, float]:
    """Unit vector (x west, y north, z towards the observer), in solar radii."""
    lon, lat, b0 = (math.radians(v) for v in (lon_deg, lat_deg, b0_deg))
    x = math.cos(lat) * math.sin(lon)
    y = math.sin(lat) * math.cos(b0) - math.cos(lat) * math.cos(lon) * math.sin(b0)
    z = math.sin(lat) * math.sin(b0) + math.cos(lat) * math.cos(lon) * math.cos(b0)
    return x, y, z


def disk_to_hg(xr: float, yr: float, b0_deg: float) -> tuple[float, float]:
    """Heliographic (lon, lat) in degrees of a point given in solar radii from disk centre.

    Points off the disk (bounding-box corners of limb spots) are pulled onto the limb, since the
    catalogue columns are NOT NULL; they then get |lon| close to 90 deg.
    """
    rho = math.hypot(xr, yr)
    if rho > 0.99999:
        xr, yr = xr * 0.99999 / rho, yr * 0.99999 / rho
    z = math.sqrt(max(0.0, 1.0 - xr * xr - yr * yr))
    b0 = math.radians(b0_deg)
    lat = math.asin(max(-1.0, min(1.0, yr * math.cos(b0) + z * math.sin(b0))))
    lon = math.atan2(xr, z * math.cos(b0) - yr * math.sin(b0))
    return math.degrees(lon), math.degrees(lat)


def wrap360(angle: float) -> float:
    return angle % 360.0


def synodic_rate_deg_per_day(lat_deg: float) -> float:
    """Differential rotation (Snodgrass & Ulrich 1990, sidereal) minus the Earth's orbital motion."""
    s2 = math.sin(math.radians(lat_deg)) ** 2
    return 14.713 - 2.396 * s2 - 1.787 * s2 * s2 - EARTH_ORBIT_DEG_PER_DAY


# =============================================================================================
# The seeded truth
# =============================================================================================


@dataclass(frozen=True)
class SeededSpot:
    number: int
    lat_deg: float
    lon0_deg: float  # heliographic longitude at 00:00 UTC of the day
    radius_deg: float  # penumbra radius (heliographic great-circle degrees)
    umbra_fraction: float  # umbra radius / penumbra radius
    b_peak_gauss: float  # signed radial field at the spot centre

    def lon_at(self, t: dt.datetime) -> float:
        midnight = dt.datetime(t.year, t.month, t.day)
        days = (t - midnight).total_seconds() / 86400.0
        return self.lon0_deg + synodic_rate_deg_per_day(self.lat_deg) * days


def _seed_int(*parts: str) -> int:
    digest = hashlib.sha256("|".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def seeded_spots(day: dt.date, salt: str = "") -> list[SeededSpot]:
    """The spots of one UTC day: 2-8 non-overlapping spots in the activity belts.

    Longitudes at 00:00 span -100..+90 deg, so some spots are behind the east limb or only partly
    visible: the detection is expected to find those whose visible part is large enough
    (see expected_detections()).
    """
    rng = random.Random(_seed_int("demo-sunspots", day.strftime("%Y%m%d"), salt))
    count = rng.randint(2, 8)
    spots: list[SeededSpot] = []
    attempts = 0
    while len(spots) < count and attempts < 1000:
        attempts += 1
        lat = rng.choice((-1.0, 1.0)) * rng.uniform(5.0, 35.0)
        lon = rng.uniform(-100.0, 90.0)
        radius = rng.uniform(0.8, 4.0)
        umbra_fraction = rng.uniform(0.35, 0.55)
        b_peak = rng.choice((-1.0, 1.0)) * rng.uniform(1200.0, 2800.0)
        # Spots must not touch: a gap of 2 deg keeps their masks apart (>= 1 px) even when
        # foreshortened at the limb, so each seeded spot is one connected component.
        ok = all(_angular_distance(lat, lon, s.lat_deg, s.lon0_deg) > radius + s.radius_deg + 2.0 for s in spots)
        if ok:
            spots.append(SeededSpot(len(spots) + 1, lat, lon, radius, umbra_fraction, b_peak))
    return spots


def _angular_distance(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
    c = math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


@dataclass(frozen=True)
class Geometry:
    """True geometry of one synthetic observation (what the detection must rediscover)."""

    center_x: float
    center_y: float
    radius_pix: float
    cdelt: float
    eph: Ephemeris


def observation_geometry(t: dt.datetime, salt: str = "") -> Geometry:
    eph = sun_ephemeris(t)
    # The pointing wanders by up to 1.5 px, so the centre must really be measured on the image.
    rng = random.Random(_seed_int("pointing", t.strftime(TIME_FMT), salt))
    cx = (NAXIS - 1) / 2.0 + rng.uniform(-1.5, 1.5)
    cy = (NAXIS - 1) / 2.0 + rng.uniform(-1.5, 1.5)
    return Geometry(cx, cy, eph.semidiameter_arcsec / CDELT, CDELT, eph)


def _spot_window(spot_vec, radius_deg: float, geom: Geometry):
    """Pixel window (slices) that surely contains a spot's projected cap, or None if off-image."""
    # Every point of a cap of angular radius r is within the chord 2 sin(r/2) of its centre, and
    # the projection onto the image plane does not lengthen distances.
    reach = 2.0 * math.sin(math.radians(radius_deg) / 2.0) * geom.radius_pix + 2.0
    px = geom.center_x + spot_vec[0] * geom.radius_pix
    py = geom.center_y + spot_vec[1] * geom.radius_pix
    x0, x1 = max(0, int(math.floor(px - reach))), min(NAXIS, int(math.ceil(px + reach)) + 1)
    y0, y1 = max(0, int(math.floor(py - reach))), min(NAXIS, int(math.ceil(py + reach)) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(y0, y1), slice(x0, x1)


def _disk_coords(geom: Geometry, window):
    """Disk-frame coordinates (solar radii) of the pixel centres in a window."""
    ys, xs = window
    yy = (np.arange(ys.start, ys.stop, dtype=np.float64) - geom.center_y) / geom.radius_pix
    xx = (np.arange(xs.start, xs.stop, dtype=np.float64) - geom.center_x) / geom.radius_pix
    xr = np.broadcast_to(xx[None, :], (yy.size, xx.size))
    yr = np.broadcast_to(yy[:, None], (yy.size, xx.size))
    rho2 = xr * xr + yr * yr
    zr = np.sqrt(np.clip(1.0 - rho2, 0.0, None))
    return xr, yr, zr, rho2 < 1.0


def vec_z(spot: SeededSpot, t: dt.datetime, geom: Geometry) -> float:
    """mu (cosine of the angle from disk centre) of a seeded spot's centre at T."""
    return hg_to_disk(spot.lon_at(t), spot.lat_deg, geom.eph.b0_deg)[2]


def _spot_masks(spot: SeededSpot, t: dt.datetime, geom: Geometry):
    """(window, penumbra-or-umbra mask, umbra mask, cos angle, mu) of one seeded spot."""
    vec = hg_to_disk(spot.lon_at(t), spot.lat_deg, geom.eph.b0_deg)
    window = _spot_window(vec, spot.radius_deg, geom)
    if window is None:
        return None
    xr, yr, zr, on_disk = _disk_coords(geom, window)
    cosang = xr * vec[0] + yr * vec[1] + zr * vec[2]
    spot_mask = on_disk & (cosang > math.cos(math.radians(spot.radius_deg)))
    umbra_mask = on_disk & (cosang > math.cos(math.radians(spot.radius_deg * spot.umbra_fraction)))
    return window, spot_mask, umbra_mask, cosang, zr


def expected_detections(t: dt.datetime, salt: str = "") -> list[dict]:
    """The seeded spots that a correct detection must report at time T.

    A spot counts when the part of it inside the detection zone (rho < DETECT_RHO_MAX, true
    geometry) has at least MIN_SPOT_PIX pixels. Returned per spot: its seed number, the centroid
    (x_pix, y_pix) and area_pix of that visible part, and hg lon/lat of its centre.
    """
    geom = observation_geometry(t, salt)
    out = []
    for spot in seeded_spots(t.date(), salt):
        masks = _spot_masks(spot, t, geom)
        if masks is None:
            continue
        window, spot_mask, _umbra, _cos, _mu = masks
        xr, yr, _zr, _on = _disk_coords(geom, window)
        visible = spot_mask & (xr * xr + yr * yr < DETECT_RHO_MAX**2)
        area = int(visible.sum())
        if area < MIN_SPOT_PIX:
            continue
        iy, ix = np.nonzero(visible)
        # "complete": the whole cap lies inside the detection zone, so the measured area must
        # equal the cap's true area, 2 pi R^2 (1 - cos r).
        centre_angle = math.degrees(math.acos(max(-1.0, min(1.0, vec_z(spot, t, geom)))))
        complete = centre_angle + spot.radius_deg < math.degrees(math.asin(DETECT_RHO_MAX))
        cap = 2.0 * math.pi * R_SUN_MM**2 * (1.0 - math.cos(math.radians(spot.radius_deg)))
        out.append(
            {
                "number": spot.number,
                "x_pix": float(ix.mean() + window[1].start),
                "y_pix": float(iy.mean() + window[0].start),
                "area_pix": area,
                "hg_lon_deg": spot.lon_at(t),
                "hg_lat_deg": spot.lat_deg,
                "b_peak_gauss": spot.b_peak_gauss,
                "umbra_fraction": spot.umbra_fraction,
                "complete": complete,
                "true_area_mm2": cap,
            }
        )
    return out


# =============================================================================================
# Synthesis
# =============================================================================================


def synthesize(t: dt.datetime, salt: str = "") -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Continuum (counts) and LOS magnetogram (G) images of time T, float64, (y, x) arrays."""
    geom = observation_geometry(t, salt)
    xr, yr, zr, on_disk = _disk_coords(geom, (slice(0, NAXIS), slice(0, NAXIS)))
    factor = np.ones((NAXIS, NAXIS))
    field = np.zeros((NAXIS, NAXIS))
    for spot in seeded_spots(t.date(), salt):
        masks = _spot_masks(spot, t, geom)
        if masks is None:
            continue
        window, spot_mask, umbra_mask, cosang, mu = masks
        sub = factor[window]
        sub[spot_mask] = PENUMBRA_LEVEL
        sub[umbra_mask] = UMBRA_LEVEL
        # Radial field falling from the peak at the centre to 15% of it at the penumbra edge,
        # seen along the line of sight (B_los = B_r mu).
        s = np.arccos(np.clip(cosang, -1.0, 1.0)) / math.radians(spot.radius_deg)
        b_r = spot.b_peak_gauss * (1.0 - 0.85 * s * s)
        field[window][spot_mask] += (b_r * mu)[spot_mask]
    noise = np.random.Generator(np.random.PCG64(_seed_int("noise", t.strftime(TIME_FMT), salt)))
    n_int = noise.standard_normal((NAXIS, NAXIS))
    n_mag = noise.standard_normal((NAXIS, NAXIS))
    limb = 1.0 - LIMB_U * (1.0 - zr)
    continuum = np.where(on_disk, I0_COUNTS * limb * factor * (1.0 + INTENSITY_NOISE * n_int), 0.0)
    magnetogram = np.where(on_disk, field + FIELD_NOISE_G * n_mag, 0.0)
    return continuum, magnetogram, geom


# =============================================================================================
# Detection
# =============================================================================================


def label8(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected component labelling of a boolean image.

    Union-find over the foreground pixels only, vectorised with numpy: "hook" the larger root of
    every neighbouring pair onto the smaller one, then compress paths by pointer jumping, until
    every pair shares a root. Roots are the smallest raster index of each component, so labels
    1..n follow the raster order (row by row, from row 0) of each component's first pixel.
    """
    h, w = mask.shape
    flat = np.flatnonzero(mask)
    n = flat.size
    labels = np.zeros((h, w), dtype=np.int32)
    if n == 0:
        return labels, 0
    index = np.full(h * w, -1, dtype=np.int64)
    index[flat] = np.arange(n)
    index = index.reshape(h, w)
    pairs_a, pairs_b = [], []
    # Right, up, up-left and up-right neighbours: each 8-adjacency is visited once.
    for dy, dx in ((0, 1), (1, 0), (1, -1), (1, 1)):
        a = index[0 : h - dy, max(0, -dx) : w - max(0, dx)]
        b = index[dy:h, max(0, dx) : w - max(0, -dx)]
        both = (a >= 0) & (b >= 0)
        pairs_a.append(a[both])
        pairs_b.append(b[both])
    ea = np.concatenate(pairs_a)
    eb = np.concatenate(pairs_b)
    parent = np.arange(n)
    while True:
        ra, rb = parent[ea], parent[eb]
        differ = ra != rb
        if not differ.any():
            break
        lo = np.minimum(ra[differ], rb[differ])
        hi = np.maximum(ra[differ], rb[differ])
        np.minimum.at(parent, hi, lo)  # parent[i] <= i always, so no cycle can form
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    roots, compact = np.unique(parent, return_inverse=True)
    labels.reshape(-1)[flat] = compact.reshape(-1) + 1
    return labels, int(roots.size)


def trace_chain_code(mask: np.ndarray) -> tuple[int, int, str]:
    """Freeman 8-direction chain code of the outer boundary of a single 8-connected blob.

    Inner-boundary tracing (Sonka, Hlavac & Boyle, Algorithm 6.6) in the solar frame: start at
    the northernmost row's easternmost pixel (+y up, smallest x), walk the boundary
    counter-clockwise, stop when the first move is about to repeat. Returns (x0, y0, codes) in
    the coordinates of `mask`; a one-pixel blob has an empty code.
    """
    h, w = mask.shape
    padded = np.zeros((h + 2, w + 2), dtype=bool)
    padded[1:-1, 1:-1] = mask
    rows = np.flatnonzero(padded.any(axis=1))
    y0 = int(rows[-1])
    x0 = int(np.flatnonzero(padded[y0])[0])
    codes: list[int] = []
    x, y, direction = x0, y0, 7
    second = None
    for _ in range(4 * mask.size + 8):
        start = (direction + 7) % 8 if direction % 2 == 0 else (direction + 6) % 8
        for k in range(8):
            d = (start + k) % 8
            if padded[y + CC_DY[d], x + CC_DX[d]]:
                break
        else:
            return x0 - 1, y0 - 1, ""  # isolated pixel
        prev = (x, y)
        x, y, direction = x + CC_DX[d], y + CC_DY[d], d
        if second is None:
            second = (x, y)
        elif (x, y) == second and prev == (x0, y0):
            break
        codes.append(d)
    return x0 - 1, y0 - 1, "".join(str(c) for c in codes)


def raster_scan(mask: np.ndarray) -> list[int]:
    """Run-length encoding of a bounding-box mask, as stored in RS.

    The box is read row by row from its south row (BR_Y0_PIX) northwards, each row from east to
    west (increasing x, from BR_X0_PIX), as one sequence; RS lists the lengths of its alternating
    runs, starting with a run of outside pixels (possibly 0): e.g. "0,3,2,3" is 3 spot pixels,
    2 outside, 3 spot. The box width is BR_X2_PIX - BR_X0_PIX + 1. RS_LENGTH = number of runs.
    """
    seq = mask.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(seq)) + 1
    bounds = np.concatenate(([0], change, [seq.size]))
    runs = np.diff(bounds).tolist()
    if seq[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs]


def fit_disk(img: np.ndarray) -> tuple[float, float, float]:
    """Sun centre and radius measured on the image: centroid and area of the bright disk."""
    disk = img > 0.1 * float(img.max())
    area = int(disk.sum())
    cy = float(np.dot(disk.sum(axis=1), np.arange(img.shape[0]))) / area
    cx = float(np.dot(disk.sum(axis=0), np.arange(img.shape[1]))) / area
    return cx, cy, math.sqrt(area / math.pi)


def fit_limb_darkening(img: np.ndarray, mu: np.ndarray, zone: np.ndarray) -> np.ndarray:
    """Quiet-Sun intensity vs mu: quadratic least-squares fit, spots rejected by one refit."""
    step = (slice(None, None, 3), slice(None, None, 3))  # a 1/9 sample is plenty for 3 numbers
    m = mu[step][zone[step]]
    v = img[step][zone[step]]
    keep = np.ones(m.size, dtype=bool)
    coeffs = np.zeros(3)
    for _ in range(2):
        design = np.stack([np.ones(keep.sum()), m[keep], m[keep] ** 2], axis=1)
        coeffs = np.linalg.lstsq(design, v[keep], rcond=None)[0]
        model = coeffs[0] + coeffs[1] * m + coeffs[2] * m * m
        keep = v > 0.92 * model
    return coeffs


@dataclass
class DetectedSpot:
    row: dict
    boundary: list[tuple[int, int]]


@dataclass
class Detection:
    center_x: float
    center_y: float
    radius_pix: float
    qsun_center: float
    spots: list[DetectedSpot]


def detect(continuum: np.ndarray, magnetogram: np.ndarray, t: dt.datetime, cdelt: float) -> Detection:
    """Find the sunspots of one image pair and measure the SDOSS feature columns."""
    eph = sun_ephemeris(t)
    cx, cy, radius = fit_disk(continuum)
    h, w = continuum.shape
    xr = (np.arange(w) - cx) / radius
    yr = (np.arange(h) - cy) / radius
    rho2 = yr[:, None] ** 2 + xr[None, :] ** 2
    mu = np.sqrt(np.clip(1.0 - rho2, 0.0, None))
    zone = rho2 < DETECT_RHO_MAX**2
    coeffs = fit_limb_darkening(continuum, mu, zone)
    qsun = coeffs[0] + coeffs[1] * mu + coeffs[2] * mu * mu
    norm = np.zeros_like(continuum)
    np.divide(continuum, qsun, out=norm, where=zone)
    candidates = zone & (norm < SPOT_THRESHOLD)
    labels, count = label8(candidates)

    deg_per_rad = 180.0 / math.pi
    spots: list[DetectedSpot] = []
    if count:
        flat = np.flatnonzero(labels)
        lab = labels.reshape(-1)[flat]
        order = np.argsort(lab, kind="stable")
        flat, lab = flat[order], lab[order]
        splits = np.flatnonzero(np.diff(lab)) + 1
        for pix in np.split(flat, splits):
            if pix.size < MIN_SPOT_PIX:
                continue
            iy, ix = np.divmod(pix, w)
            spots.append(
                _measure_spot(iy, ix, continuum, magnetogram, norm, mu, cx, cy, radius, cdelt, eph, deg_per_rad)
            )
    return Detection(cx, cy, radius, float(coeffs.sum()), spots)


def _hg_carr(x_pix: float, y_pix: float, cx: float, cy: float, radius: float, eph: Ephemeris):
    lon, lat = disk_to_hg((x_pix - cx) / radius, (y_pix - cy) / radius, eph.b0_deg)
    return lon, lat, wrap360(lon + eph.l0_deg), lat


def _stats(values: np.ndarray) -> tuple[float, float, float, float, float]:
    """total, absolute total, min, max, mean."""
    return (
        float(values.sum()),
        float(np.abs(values).sum()),
        float(values.min()),
        float(values.max()),
        float(values.mean()),
    )


def _measure_spot(iy, ix, img, mag, norm, mu, cx, cy, radius, cdelt, eph, deg_per_rad):
    x_c, y_c = float(ix.mean()), float(iy.mean())
    xmin, xmax, ymin, ymax = int(ix.min()), int(ix.max()), int(iy.min()), int(iy.max())
    local = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=bool)
    local[iy - ymin, ix - xmin] = True

    def arcsec(xp: float, yp: float) -> tuple[float, float]:
        return (xp - cx) * cdelt, (yp - cy) * cdelt

    row: dict = {}
    row["FEAT_X_ARCSEC"], row["FEAT_Y_ARCSEC"] = arcsec(x_c, y_c)
    row["FEAT_X_PIX"], row["FEAT_Y_PIX"] = int(round(x_c)), int(round(y_c))
    (row["FEAT_HG_LONG_DEG"], row["FEAT_HG_LAT_DEG"], row["FEAT_CARR_LONG_DEG"], row["FEAT_CARR_LAT_DEG"]) = _hg_carr(
        x_c, y_c, cx, cy, radius, eph
    )
    # Corners 0..3 = SE, NE, SW, NW; east is -x and south is -y in this frame.
    corners = ((xmin, ymin), (xmin, ymax), (xmax, ymin), (xmax, ymax))
    for k, (xp, yp) in enumerate(corners):
        row[f"BR_X{k}_PIX"], row[f"BR_Y{k}_PIX"] = xp, yp
        row[f"BR_X{k}_ARCSEC"], row[f"BR_Y{k}_ARCSEC"] = arcsec(xp, yp)
        lon, lat, clon, clat = _hg_carr(xp, yp, cx, cy, radius, eph)
        row[f"BR_HG_LONG{k}_DEG"], row[f"BR_HG_LAT{k}_DEG"] = lon, lat
        row[f"BR_CARR_LONG{k}_DEG"], row[f"BR_CARR_LAT{k}_DEG"] = clon, clat

    # Each pixel covers 1/mu times its projected area on the sphere (foreshortening).
    inv_mu = 1.0 / np.maximum(mu[iy, ix], MU_MIN_AREA)
    sr_per_pix = 1.0 / (radius * radius)  # steradian of the solar sphere per (R_pix)^-2

    def areas(weights: np.ndarray) -> tuple[float, float, float, float]:
        sphere = float(weights.sum()) * sr_per_pix  # in units of R_sun^2
        area_deg2 = sphere * deg_per_rad**2
        area_mm2 = sphere * R_SUN_MM**2
        return area_deg2, area_mm2, 2.0 * math.sqrt(area_deg2 / math.pi), 2.0 * math.sqrt(area_mm2 / math.pi)

    row["FEAT_AREA_PIX"] = int(iy.size)
    row["FEAT_AREA_DEG2"], row["FEAT_AREA_MM2"], row["FEAT_DIAM_DEG"], row["FEAT_DIAM_MM"] = areas(inv_mu)
    vals = img[iy, ix]
    row["FEAT_MEAN2QSUN"] = float(norm[iy, ix].mean())
    row["FEAT_MAX_INT"], row["FEAT_MIN_INT"], row["FEAT_MEAN_INT"] = (
        float(vals.max()),
        float(vals.min()),
        float(vals.mean()),
    )
    b = mag[iy, ix]
    (row["FEAT_TOT_BZ"], row["FEAT_ABS_BZ"], row["FEAT_MIN_BZ"], row["FEAT_MAX_BZ"], row["FEAT_MEAN_BZ"]) = _stats(b)

    umbra_sel = norm[iy, ix] < UMBRA_THRESHOLD
    umbra_local = np.zeros_like(local)
    umbra_local[iy[umbra_sel] - ymin, ix[umbra_sel] - xmin] = True
    ulabels, ucount = label8(umbra_local)
    usizes = np.bincount(ulabels.reshape(-1), minlength=ucount + 1)[1:]
    row["UMBRA_NUMBER"] = int((usizes >= MIN_UMBRA_PIX).sum())
    if umbra_sel.any():
        uy, ux = iy[umbra_sel], ix[umbra_sel]
        row["UMBRA_AREA_PIX"] = int(uy.size)
        udeg2, umm2, ud_deg, ud_mm = areas(inv_mu[umbra_sel])
        row["UMBRA_AREA_MM2"], row["UMBRA_AREA_DEG2"] = umm2, udeg2
        row["UMBRA_DIAM_DEG"], row["UMBRA_DIAM_MM"] = ud_deg, ud_mm
        uvals = img[uy, ux]
        row["UMBRA_MAX_INT"], row["UMBRA_MIN_INT"], row["UMBRA_MEAN_INT"] = (
            float(uvals.max()),
            float(uvals.min()),
            float(uvals.mean()),
        )
        (row["UMBRA_TOT_BZ"], row["UMBRA_ABS_BZ"], row["UMBRA_MIN_BZ"], row["UMBRA_MAX_BZ"], row["UMBRA_MEAN_BZ"]) = (
            _stats(mag[uy, ux])
        )
    else:
        # Columns NOT NULL in the catalogue get 0; the nullable field statistics stay empty.
        for key in (
            "UMBRA_AREA_PIX",
            "UMBRA_AREA_MM2",
            "UMBRA_AREA_DEG2",
            "UMBRA_DIAM_DEG",
            "UMBRA_DIAM_MM",
            "UMBRA_MAX_INT",
            "UMBRA_MIN_INT",
            "UMBRA_MEAN_INT",
            "UMBRA_TOT_BZ",
        ):
            row[key] = 0
        for key in ("UMBRA_ABS_BZ", "UMBRA_MAX_BZ", "UMBRA_MIN_BZ", "UMBRA_MEAN_BZ"):
            row[key] = None

    lx, ly, codes = trace_chain_code(local)
    row["CC_X_PIX"], row["CC_Y_PIX"] = lx + xmin, ly + ymin
    row["CC_X_ARCSEC"], row["CC_Y_ARCSEC"] = arcsec(lx + xmin, ly + ymin)
    row["CC"], row["CC_LENGTH"] = codes, len(codes)
    runs = raster_scan(local)
    row["RS"], row["RS_LENGTH"] = ",".join(str(r) for r in runs), len(runs)
    row["SNAPSHOT_FN"], row["SNAPSHOT_PATH"] = None, None

    boundary = [(lx + xmin, ly + ymin)]
    for c in codes:
        px, py = boundary[-1]
        boundary.append((px + CC_DX[int(c)], py + CC_DY[int(c)]))
    return DetectedSpot(row, boundary)


# =============================================================================================
# Output
# =============================================================================================

DECIMALS = {
    "ARCSEC": 3,
    "DEG": 4,
    "DEG2": 5,
    "MM2": 3,
    "MM": 4,
    "MEAN2QSUN": 5,
    "INT": 3,
    "BZ": 3,
    "JDFRAC": 8,
    "R_SUN": 4,
    "CENTER_X": 4,
    "CENTER_Y": 4,
    "CDELT1": 4,
    "CDELT2": 4,
    "EXP_TIME": 3,
    "BSCALE": 1,
    "BZERO": 1,
    "WAVEMIN": 3,
    "WAVEMAX": 3,
}


def format_value(column: str, value) -> str:
    """Deterministic text of one field: fixed decimals chosen by the column's unit suffix."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        decimals = DECIMALS.get(column)
        if decimals is None:
            decimals = DECIMALS.get(column.rsplit("_", 1)[-1], 6)
        # "+ 0.0" turns a rounded -0.0 into 0.0, so no "-0.000" appears.
        return f"{round(float(value), decimals) + 0.0:.{decimals}f}"
    if isinstance(value, dt.datetime):
        return value.strftime(TIME_FMT)
    return str(value)


def csv_bytes(header: list[str], rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";", lineterminator="\n", quoting=csv.QUOTE_MINIMAL, quotechar='"')
    writer.writerow(header)
    for row in rows:
        missing = set(header) - set(row)
        if missing:
            raise ValueError(f"row lacks columns {sorted(missing)}")
        writer.writerow([format_value(c, row[c]) for c in header])
    return buf.getvalue().encode("utf-8")


def write_atomic(path: str, data: bytes) -> None:
    """Write then rename, so a killed job never leaves a half file under the real name."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def hmi_file_names(t: dt.datetime) -> tuple[str, str]:
    # JSOC export names of the hmi.Ic_45s / hmi.M_45s series (the time label is kept on our
    # cadence grid rather than converted to TAI: these images are synthetic).
    stamp = t.strftime("%Y.%m.%d_%H_%M_%S")
    return (f"hmi.ic_45s.{stamp}_TAI.continuum.fits", f"hmi.m_45s.{stamp}_TAI.magnetogram.fits")


def fits_file_size(naxis1: int, naxis2: int, bytes_per_pixel: int) -> int:
    """Size of the FITS file the image would be: 2 header blocks + data padded to 2880 bytes."""
    data = naxis1 * naxis2 * bytes_per_pixel
    return 2 * 2880 + (data + 2879) // 2880 * 2880


def init_rows(t: dt.datetime, det: Detection, quicklook_name: str) -> list[dict]:
    eph = sun_ephemeris(t)
    jdint, jdfrac = julian_day_parts(t)
    names = hmi_file_names(t)
    rows = []
    for ident, (fname, kind, level_comment) in enumerate(
        (
            (names[0], "continuum", "synthetic HMI-like continuum intensity (demo-sunspots)"),
            (names[1], "magnetogram", "synthetic HMI-like line-of-sight magnetogram (demo-sunspots)"),
        ),
        start=1,
    ):
        rows.append(
            {
                "ID_OBSERVATIONS": ident,
                "OBSERVATORY_ID": ident,
                "DATE_OBS": t,
                "DATE_END": t + dt.timedelta(seconds=45),
                "JDINT": jdint,
                "JDFRAC": jdfrac,
                "EXP_TIME": 45.0,  # the 45-s observables average filtergrams over 45 s
                "C_ROTATION": eph.carrington_rotation,
                "BSCALE": 1.0,
                "BZERO": 0.0,
                "BITPIX": -32,
                "NAXIS1": NAXIS,
                "NAXIS2": NAXIS,
                "R_SUN": det.radius_pix,
                "CENTER_X": det.center_x,
                "CENTER_Y": det.center_y,
                "CDELT1": CDELT,
                "CDELT2": CDELT,
                "QUALITY": "0",
                "FILENAME": fname,
                "FILE_FORMAT": "FITS",
                "FILE_SIZE": fits_file_size(NAXIS, NAXIS, 4),
                "DATA_TYPE": kind,
                "PROCESSING_LVL": "1.5",
                "COMMENT": level_comment,
                "LOC_FILENAME": f"/data/sdo/hmi/{t:%Y/%m/%d}/{fname}",
                "URL": f"http://jsoc.stanford.edu/data/hmi/fits/{t:%Y/%m/%d}/{fname}",
                "QCLK_URL": None,
                "QCLK_FNAME": quicklook_name if ident == 1 else None,
            }
        )
    return rows


def feat_rows(t: dt.datetime, det: Detection, feat_name: str) -> list[dict]:
    rows = []
    for ident, spot in enumerate(det.spots, start=1):
        row = dict(spot.row)
        row.update(
            {
                "ID_SUNSPOT": ident,
                "FRC_INFO_ID": 1,
                "OBSERVATIONS_ID_IC": 1,
                "OBSERVATIONS_ID_M": 2,
                "HELIO_SS_NUMBER": ident,
                "FEAT_FILENAME": feat_name,
                "RUN_DATE": t,  # the observation time, not the wall clock: re-runs are byte-identical
            }
        )
        rows.append(row)
    return rows


def quicklook_jpeg(continuum: np.ndarray, det: Detection) -> bytes:
    """512x512 8-bit greyscale JPEG, north up, detected boundaries drawn in white."""
    h, w = continuum.shape
    small = continuum.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    scaled = np.clip(small / (det.qsun_center * 1.05), 0.0, 1.0) * 255.0
    pixels = np.round(scaled).astype(np.uint8)
    for spot in det.spots:
        for x, y in spot.boundary:
            pixels[y // 2, x // 2] = 255
    image = Image.fromarray(np.ascontiguousarray(pixels[::-1]), mode="L")
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=85, optimize=False, progressive=False)
    return buf.getvalue()


def frc_info_rows() -> list[dict]:
    return [
        {
            "ID_FRC_INFO": 1,
            "INSTITUT": "OBSPM",
            "CODE": "DEMO-SUNSPOTS",
            "VERSION": CODE_VERSION,
            "FEATURE_NAME": "SUNSPOTS",
            "TARGET_NAME": "SUN",
            "TARGET_CLASS": "STAR",
            "ENC_MET": "RASTERSCAN/CHAINCODE",
            "PERSON": "HFC pipeline team",
            "CONTACT": "hfc@example.org",
            "REFERENCE": "Demo FRC on synthetic HMI images, modelled on SDOSS (Zharkov et al. 2005, "
            "DOI: 10.1007/s11207-005-5623-0)",
            "URL": None,
        }
    ]


def observatory_rows() -> list[dict]:
    common = {
        "OBSERVAT": "SDO",
        "INSTRUME": "HMI",
        "WAVEMIN": 617.133,
        "WAVEMAX": 617.133,
        "WAVENAME": "Fe I",
        "WAVEUNIT": "nm",
        "OBS_TYPE": "REMOTE-SENSING",
        "OBS_CAT": "SPACEBORNE",
        "COMMENT": None,
    }
    return [
        {"ID_OBSERVATORY": 1, "TELESCOP": "Continuum", "UNITS": "Counts", "SPECTRAL_DOMAIN": "Visible", **common},
        {
            "ID_OBSERVATORY": 2,
            "TELESCOP": "Magnetogram",
            "UNITS": "Gauss",
            "SPECTRAL_DOMAIN": "Line_of_sight magnetic field",
            **common,
        },
    ]


def process_observation(t: dt.datetime, outdir: str, salt: str = "") -> tuple[int, list[str]]:
    """Synthesise, detect and write the file set of one observation; returns (spots, files)."""
    continuum, magnetogram, geom = synthesize(t, salt)
    det = detect(continuum, magnetogram, t, geom.cdelt)
    stamp = t.strftime(NAME_TIME_FMT)
    base = f"{CODE_NAME}_{FILE_VERSION}_{stamp}_{OBS_TAG}"
    quicklook = os.path.splitext(hmi_file_names(t)[0])[0] + ".jpg"
    written = []
    # The quicklook and feat files go first and the init file last, so an init file on disk
    # means its observation is complete.
    write_atomic(os.path.join(outdir, quicklook), quicklook_jpeg(continuum, det))
    written.append(quicklook)
    feat_name = f"{base}_feat.csv"
    feat_path = os.path.join(outdir, feat_name)
    if det.spots:
        write_atomic(feat_path, csv_bytes(FEAT_HEADER, feat_rows(t, det, feat_name)))
        written.append(feat_name)
    elif os.path.exists(feat_path):
        os.remove(feat_path)  # a stale feat file from an earlier run would claim detections
    init_name = f"{base}_init.csv"
    write_atomic(os.path.join(outdir, init_name), csv_bytes(INIT_HEADER, init_rows(t, det, quicklook)))
    written.append(init_name)
    return len(det.spots), written


# =============================================================================================
# Command line
# =============================================================================================


def parse_time(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, TIME_FMT)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: expected YYYY-MM-DDTHH:MM:SS (UTC)") from None


def parse_cadence(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid cadence {text!r}: expected whole seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"cadence must be > 0 seconds, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demo_sunspots.py",
        description="Demo sunspot FRC: synthetic SDO/HMI images, detection, SDOSS-format CSV files.",
    )
    parser.add_argument("-s", "--start", required=True, type=parse_time, help="first observation (UTC)")
    parser.add_argument("-e", "--end", required=True, type=parse_time, help="end of window, exclusive (UTC)")
    parser.add_argument(
        "-c", "--cadence", type=parse_cadence, default=14400, help="seconds between observations (default 14400 = 4 h)"
    )
    parser.add_argument("-o", "--outdir", required=True, help="output directory (created if needed)")
    parser.add_argument("--seed-salt", default="", help="extra text mixed into the random seeds")
    return parser


def observation_times(start: dt.datetime, end: dt.datetime, cadence: int) -> list[dt.datetime]:
    times = []
    t = start
    while t < end:
        times.append(t)
        t += dt.timedelta(seconds=cadence)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a message naming the argument
    if args.end <= args.start:
        parser.error(
            f"argument -e/--end: {args.end:{TIME_FMT}} is not after -s/--start "
            f"{args.start:{TIME_FMT}}: the window holds no observation"
        )
    times = observation_times(args.start, args.end, args.cadence)
    try:
        os.makedirs(args.outdir, exist_ok=True)
        if not os.access(args.outdir, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        parser.error(f"argument -o/--outdir: cannot create or write {args.outdir!r}: {exc}")

    try:
        started = time.monotonic()
        print(
            f"demo-sunspots {CODE_VERSION}: {len(times)} observation(s) from {args.start:{TIME_FMT}} "
            f"to {args.end:{TIME_FMT}} every {args.cadence} s into {args.outdir}",
            flush=True,
        )
        files = []
        for name, rows, header in (
            (f"{CODE_NAME}_{FILE_VERSION}_frc_info.csv", frc_info_rows(), FRC_INFO_HEADER),
            (f"{CODE_NAME}_{FILE_VERSION}_{OBS_TAG}_observatory.csv", observatory_rows(), OBSERVATORY_HEADER),
        ):
            write_atomic(os.path.join(args.outdir, name), csv_bytes(header, rows))
            files.append(name)
        counts = []
        for t in times:
            t0 = time.monotonic()
            nspots, written = process_observation(t, args.outdir, args.seed_salt)
            counts.append(nspots)
            files.extend(written)
            print(
                f"{t:{TIME_FMT}}: {nspots} spot(s), {len(written)} file(s), {time.monotonic() - t0:.2f} s", flush=True
            )
        print(
            f"done: {len(times)} observation(s), spots per observation {counts}, "
            f"{len(files)} file(s) written in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure must give a non-zero exit and a message
        print(f"demo_sunspots.py: error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
