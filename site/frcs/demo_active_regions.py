#!/usr/bin/python3
"""demo-active-regions: a demo active-region Feature Recognition Code writing the SPoCA-AR file set.

It runs on the cluster as a SLURM job with Debian's /usr/bin/python3 and the standard library
only (no numpy, no Pillow): it must not import anything else.

For every observation time T in [START, END) on a CADENCE grid it writes, like SPoCA-AR does
(product_format ``spoca-ar`` in hfc_tasks/catalogue/formats.yaml):

* ``demoar_100_<YYYYMMDDTHHMMSS>_sdo_init.csv``: the two observations (AIA 171 and 193 A);
* ``demoar_100_<YYYYMMDDTHHMMSS>_sdo_feat.csv``: one row per active region on the disk (absent
  when none is), ``OBSERVATIONS_ID`` -> the 171 row, ``OBSERVATIONS_ID_T`` -> the 193 row;
* the quicklook ``aia.lev1.171A_<YYYY-MM-DDTHHMMSS>Z.image_lev1.png`` (256x256 greyscale PNG of
  the 1024x1024 observation, north up, region contours in white), named by the 171 row's
  ``QCLK_FNAME``;

and once per run the per-code metadata ``demoar_100_frc_info.csv`` and
``demoar_100_sdo_observatory.csv``.

Regions come from a generator seeded with the UTC date of T (YYYYMMDD) and ``--seed``: every
output depends only on (T, seed), never on START or the wall clock, so re-running a night gives
byte-identical files. Each file is written under ``<name>.tmp`` and renamed when complete.

Geometry: pixel (x, y) = (column, row), row 0 the SOUTH edge (FITS-like, north up, west right);
helioprojective X/Y (arcsec) = (pixel - centre) * CDELT; heliographic longitudes positive west of
the central meridian; orthographic projection, P angle 0.
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
import struct
import sys
import zlib

CODE_NAME = "demoar"
CODE_VERSION = "1.0.0"
FILE_VERSION = CODE_VERSION.replace(".", "")
OBS_TAG = "sdo"
TIME_FMT = "%Y-%m-%dT%H:%M:%S"
NAME_TIME_FMT = "%Y%m%dT%H%M%S"

NAXIS = 1024  # AIA's 4096^2 frames rebinned to 1024^2
CDELT = 2.4  # arcsec / pixel
CENTER = (NAXIS - 1) / 2.0
R_SUN_ARCSEC = 959.63  # apparent radius at 1 AU
R_SUN_PIX = R_SUN_ARCSEC / CDELT
R_SUN_MM = 695.7
D_SUN_M = 1.496e11
QL_SIZE = 256  # quicklook pixels per side (1 quicklook pixel = 4 observation pixels)
CAR_ROT_PERIOD = 27.2752316
CAR_ROT_EPOCH_JD = 2398140.2270
WAVELENGTHS = ((1, 171, "Fe IX"), (2, 193, "Fe XII"))

INIT_HEADER = (
    "ID_OBSERVATIONS;OBSERVATORY_ID;DATE_OBS;DATE_END;JDINT;JDFRAC;EXP_TIME;C_ROTATION;BSCALE;BZERO;"
    "BITPIX;NAXIS1;NAXIS2;R_SUN;CENTER_X;CENTER_Y;CDELT1;CDELT2;QUALITY;FILENAME;FILE_FORMAT;DATA_TYPE;"
    "PROCESSING_LVL;COMMENT;LOC_FILENAME;URL;QCLK_URL;QCLK_FNAME;TIME_ORIGIN;TIME_SCALE;SPATIAL_FRAME_DESC;"
    "SPATIAL_FRAME_TYPE;SPATIAL_ORIGIN;SOLAR_B0;D_SUN;FEAT_FILENAME"
).split(";")
_BR = [f"BR_{a}{i}_{u}" for u in ("PIX", "ARCSEC") for i in range(4) for a in ("X", "Y")]
_BR_SPH = [f"BR_{k}_{a}{i}_DEG" for k in ("HG", "CARR") for i in range(4) for a in ("LONG", "LAT")]
FEAT_HEADER = (
    (
        "ID_AR;OBSERVATIONS_ID;OBSERVATIONS_ID_T;FEAT_DATE;FEAT_DATE_PREV;HELIO_ID;FEAT_LENGTH_NL;FEAT_LENGTH_SG;"
        "FEAT_MAX_GRAD;FEAT_MEAN_GRAD;FEAT_MEDIAN_GRAD;FEAT_RVAL;FEAT_WLSG;FRC_INFO_ID;"
        "FEAT_X_ARCSEC;FEAT_Y_ARCSEC;FEAT_X_PIX;FEAT_Y_PIX;FEAT_HG_LONG_DEG;FEAT_HG_LAT_DEG;FEAT_CARR_LONG_DEG;"
        "FEAT_CARR_LAT_DEG"
    ).split(";")
    + _BR
    + _BR_SPH
    + (
        "FEAT_AREA_PIX;FEAT_AREA_DEG2;FEAT_AREA_MM2;FEAT_MIN_INT;FEAT_MAX_INT;FEAT_MEAN_INT;FEAT_MEAN2QSUN;"
        "FEAT_MIN_BZ;FEAT_MAX_BZ;FEAT_MEAN_BZ;CC;CC_LENGTH;CC_X_PIX;CC_Y_PIX;CC_X_ARCSEC;CC_Y_ARCSEC;"
        "SNAPSHOT_FN;SNAPSHOT_PATH;FEAT_FILENAME;RUN_DATE"
    ).split(";")
)
FRC_INFO_HEADER = (
    "ID_FRC_INFO;INSTITUT;CODE;VERSION;FEATURE_NAME;TARGET_NAME;TARGET_CLASS;ENC_MET;PERSON;CONTACT;REFERENCE;URL"
).split(";")
OBSERVATORY_HEADER = (
    "ID_OBSERVATORY;OBSERVAT;INSTRUME;TELESCOP;OBSINST_KEY;UNITS;WAVEMIN;WAVEMAX;WAVENAME;WAVEUNIT;"
    "FREQMIN;FREQMAX;FREQUNIT;SPECTRAL_DOMAIN;OBS_TYPE;OBS_CAT;COMMENT"
).split(";")
# 8-connected chain-code directions (x right, y up): 0 = east, counter-clockwise.
CC_STEPS = {(1, 0): 0, (1, 1): 1, (0, 1): 2, (-1, 1): 3, (-1, 0): 4, (-1, -1): 5, (0, -1): 6, (1, -1): 7}


# ---------------------------------------------------------------- ephemeris and geometry


def julian_day(t: dt.datetime) -> float:
    return (t - dt.datetime(2000, 1, 1, 12)).total_seconds() / 86400.0 + 2451545.0


def julian_day_parts(t: dt.datetime) -> tuple[int, float]:
    jd = julian_day(t)
    return int(math.floor(jd)), jd - math.floor(jd)


def b0_deg(t: dt.datetime) -> float:
    """Heliographic latitude of the disk centre (low-precision: mean solar longitude)."""
    lam = math.radians((280.46 + 0.9856474 * (julian_day(t) - 2451545.0)) % 360.0)
    return math.degrees(math.asin(math.sin(lam - math.radians(75.76)) * math.sin(math.radians(7.25))))


def carrington(t: dt.datetime) -> tuple[int, float]:
    """(Carrington rotation number, Carrington longitude of the central meridian)."""
    rot = (julian_day(t) - CAR_ROT_EPOCH_JD) / CAR_ROT_PERIOD
    return int(math.floor(rot)), (360.0 * (1.0 - (rot - math.floor(rot)))) % 360.0


def hg_to_pix(lon: float, lat: float, b0: float) -> tuple[float, float, float]:
    """Heliographic (deg) -> pixel x, y and mu (cosine from disk centre; < 0 behind the limb)."""
    lo, la, b = math.radians(lon), math.radians(lat), math.radians(b0)
    x = math.cos(la) * math.sin(lo)
    y = math.sin(la) * math.cos(b) - math.cos(la) * math.cos(lo) * math.sin(b)
    z = math.sin(la) * math.sin(b) + math.cos(la) * math.cos(lo) * math.cos(b)
    return CENTER + x * R_SUN_PIX, CENTER + y * R_SUN_PIX, z


def pix_to_hg(xp: float, yp: float, b0: float) -> tuple[float, float]:
    """Pixel -> heliographic (deg); points off the disk are taken onto the limb."""
    x, y = (xp - CENTER) / R_SUN_PIX, (yp - CENTER) / R_SUN_PIX
    rho = math.hypot(x, y)
    if rho > 0.999:
        x, y = x * 0.999 / rho, y * 0.999 / rho
    z = math.sqrt(max(0.0, 1.0 - x * x - y * y))
    b = math.radians(b0)
    lat = math.asin(y * math.cos(b) + z * math.sin(b))
    lon = math.atan2(x, z * math.cos(b) - y * math.sin(b))
    return math.degrees(lon), math.degrees(lat)


def pix_to_arcsec(xp: float, yp: float) -> tuple[float, float]:
    return (xp - CENTER) * CDELT, (yp - CENTER) * CDELT


def wrap360(a: float) -> float:
    return a % 360.0


# ---------------------------------------------------------------- the seeded regions


def _seed_int(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()[:8], "big")


def seeded_regions(day: dt.date, seed: int) -> list[dict]:
    """The day's active regions at 00:00 UTC: longitude, latitude, radius (deg), brightness."""
    rng = random.Random(_seed_int("demo-active-regions", day.strftime("%Y%m%d"), seed))
    regions = []
    for k in range(rng.randint(2, 5)):
        regions.append(
            {
                "number": k + 1,
                "lon0": rng.uniform(-60.0, 45.0),
                "lat": rng.choice((-1, 1)) * rng.uniform(6.0, 28.0),
                "radius": rng.uniform(3.0, 7.0),
                "brightness": rng.uniform(3.0, 9.0),
                "noaa": 13000 + (day.toordinal() % 700) + k,
            }
        )
    return regions


def region_lon(region: dict, t: dt.datetime) -> float:
    """Longitude at T: synodic differential rotation from 00:00 of the day."""
    days = (t - dt.datetime.combine(t.date(), dt.time())).total_seconds() / 86400.0
    s2 = math.sin(math.radians(region["lat"])) ** 2
    rate = 14.713 - 2.396 * s2 - 1.787 * s2 * s2 - 0.9856
    return region["lon0"] + rate * days


def boundary(region: dict, t: dt.datetime, b0: float) -> list[tuple[int, int]]:
    """The region's outline on the disk: a closed 8-connected pixel path, counter-clockwise."""
    lon_c, lat_c, r = region_lon(region, t), region["lat"], region["radius"]
    n = 720
    points: list[tuple[int, int]] = []
    for i in range(n):
        a = 2 * math.pi * i / n
        # a small circle of angular radius r around the centre (flat approximation, lon scaled)
        lat = lat_c + r * math.sin(a)
        lon = lon_c + r * math.cos(a) / max(0.2, math.cos(math.radians(lat_c)))
        x, y, _ = hg_to_pix(lon, lat, b0)
        p = (int(round(x)), int(round(y)))
        if points and p == points[-1]:
            continue
        if points:  # fill any gap so the path stays 8-connected
            px, py = points[-1]
            while max(abs(p[0] - px), abs(p[1] - py)) > 1:
                px += (p[0] > px) - (p[0] < px)
                py += (p[1] > py) - (p[1] < py)
                points.append((px, py))
        points.append(p)
    while len(points) > 1 and points[-1] == points[0]:
        points.pop()
    px, py = points[-1]  # close the path back to its start
    x0, y0 = points[0]
    while max(abs(x0 - px), abs(y0 - py)) > 1:
        px += (x0 > px) - (x0 < px)
        py += (y0 > py) - (y0 < py)
        points.append((px, py))
    return points


def chain_code(points: list[tuple[int, int]]) -> str:
    steps = []
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True):
        steps.append(str(CC_STEPS[(x1 - x0, y1 - y0)]))
    return "".join(steps)


def polygon_area(points: list[tuple[int, int]]) -> float:
    s = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1], strict=True):
        s += x0 * y1 - x1 * y0
    return abs(s) / 2.0


def visible(region: dict, t: dt.datetime, b0: float) -> bool:
    """On the disk with its whole outline well inside the limb."""
    _, _, mu = hg_to_pix(region_lon(region, t), region["lat"], b0)
    return mu > 0.35


# ---------------------------------------------------------------- files


def format_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{round(value, 4) + 0.0:.4f}"
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
        writer.writerow([format_value(row[c]) for c in header])
    return buf.getvalue().encode("utf-8")


def write_atomic(path: str, data: bytes) -> None:
    """Write then rename, so a killed job never leaves a half file under the real name."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def aia_name(t: dt.datetime, wavelength: int, suffix: str) -> str:
    return f"aia.lev1.{wavelength}A_{t:%Y-%m-%dT%H%M%S}Z.image_lev1{suffix}"


def png_grey(pixels: list[bytearray]) -> bytes:
    """An 8-bit greyscale PNG of the rows (top row first)."""
    height, width = len(pixels), len(pixels[0])
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def quicklook_png(t: dt.datetime, regions: list[dict], outlines: list[list[tuple[int, int]]], b0: float) -> bytes:
    """256x256 AIA-171-like picture: limb-brightened disk, bright regions, outlines in white."""
    scale = NAXIS / QL_SIZE
    centres = []
    for region in regions:
        x, y, _ = hg_to_pix(region_lon(region, t), region["lat"], b0)
        centres.append((x / scale, y / scale, region["radius"] / 90.0 * R_SUN_PIX / scale, region["brightness"]))
    rows = []
    c, r_sun = CENTER / scale, R_SUN_PIX / scale
    for qy in range(QL_SIZE - 1, -1, -1):  # top row of the picture = north
        row = bytearray(QL_SIZE)
        for qx in range(QL_SIZE):
            rho = math.hypot(qx - c, qy - c) / r_sun
            value = 60.0 + 40.0 * rho if rho <= 1.0 else 8.0
            for cx, cy, rad, bright in centres:
                d2 = ((qx - cx) ** 2 + (qy - cy) ** 2) / (rad * rad)
                if d2 < 4.0:
                    value += 20.0 * bright * math.exp(-d2)
            row[qx] = min(255, int(value))
        rows.append(row)
    for outline in outlines:
        for x, y in outline:
            qx, qy = int(x / scale), int(y / scale)
            if 0 <= qx < QL_SIZE and 0 <= qy < QL_SIZE:
                rows[QL_SIZE - 1 - qy][qx] = 255
    return png_grey(rows)


def init_rows(t: dt.datetime, quicklook: str, feat_name: str | None) -> list[dict]:
    jdint, jdfrac = julian_day_parts(t)
    rotation, _ = carrington(t)
    rows = []
    for ident, wavelength, _line in WAVELENGTHS:
        fname = aia_name(t, wavelength, ".fits")
        rows.append(
            {
                "ID_OBSERVATIONS": ident,
                "OBSERVATORY_ID": ident,
                "DATE_OBS": t,
                "DATE_END": t + dt.timedelta(seconds=2),
                "JDINT": jdint,
                "JDFRAC": jdfrac,
                "EXP_TIME": 2.0,
                "C_ROTATION": rotation,
                "BSCALE": 1.0,
                "BZERO": 0.0,
                "BITPIX": 16,
                "NAXIS1": NAXIS,
                "NAXIS2": NAXIS,
                "R_SUN": R_SUN_PIX,
                "CENTER_X": CENTER,
                "CENTER_Y": CENTER,
                "CDELT1": CDELT,
                "CDELT2": CDELT,
                "QUALITY": "0",
                "FILENAME": fname,
                "FILE_FORMAT": "FITS",
                "DATA_TYPE": "image",
                "PROCESSING_LVL": "1.5",
                "COMMENT": f"synthetic AIA-like {wavelength} A image (demo-active-regions)",
                "LOC_FILENAME": f"/data/sdo/aia/{t:%Y/%m/%d}/{fname}",
                "URL": f"http://jsoc.stanford.edu/data/aia/images/{t:%Y/%m/%d}/{wavelength}/{fname}",
                "QCLK_URL": None,
                "QCLK_FNAME": quicklook if ident == 1 else None,
                "TIME_ORIGIN": "UTC",
                "TIME_SCALE": "UTC",
                "SPATIAL_FRAME_DESC": "Helioprojective",
                "SPATIAL_FRAME_TYPE": "Cartesian",
                "SPATIAL_ORIGIN": "Sun centre",
                "SOLAR_B0": b0_deg(t),
                "D_SUN": D_SUN_M,
                "FEAT_FILENAME": feat_name,
            }
        )
    return rows


def feat_row(ident: int, region: dict, outline, t: dt.datetime, cadence: int, b0: float, names: dict) -> dict:
    _, l0 = carrington(t)
    lon, lat = region_lon(region, t), region["lat"]
    xc, yc, _ = hg_to_pix(lon, lat, b0)
    xs, ys = [p[0] for p in outline], [p[1] for p in outline]
    corners = ((min(xs), min(ys)), (min(xs), max(ys)), (max(xs), max(ys)), (max(xs), min(ys)))
    rng = random.Random(_seed_int("measure", region["number"], region["lon0"], t.strftime(TIME_FMT)))
    area_deg2 = math.pi * region["radius"] ** 2
    mean_int = 400.0 * region["brightness"] * rng.uniform(0.9, 1.1)
    row = {
        "ID_AR": ident,
        "OBSERVATIONS_ID": 1,
        "OBSERVATIONS_ID_T": 2,
        "FEAT_DATE": t,
        "FEAT_DATE_PREV": t - dt.timedelta(seconds=cadence),
        "HELIO_ID": region["noaa"],
        "FEAT_LENGTH_NL": rng.uniform(20.0, 200.0),
        "FEAT_LENGTH_SG": rng.uniform(5.0, 80.0),
        "FEAT_MAX_GRAD": rng.uniform(200.0, 900.0),
        "FEAT_MEAN_GRAD": rng.uniform(50.0, 200.0),
        "FEAT_MEDIAN_GRAD": rng.uniform(40.0, 180.0),
        "FEAT_RVAL": rng.uniform(1.0e3, 1.0e5),
        "FEAT_WLSG": rng.uniform(1.0e2, 1.0e4),
        "FRC_INFO_ID": 1,
        "FEAT_X_PIX": int(round(xc)),
        "FEAT_Y_PIX": int(round(yc)),
        "FEAT_HG_LONG_DEG": lon,
        "FEAT_HG_LAT_DEG": lat,
        "FEAT_CARR_LONG_DEG": wrap360(l0 + lon),
        "FEAT_CARR_LAT_DEG": lat,
        "FEAT_AREA_PIX": int(round(polygon_area(outline))),
        "FEAT_AREA_DEG2": area_deg2,
        "FEAT_AREA_MM2": area_deg2 * (R_SUN_MM * math.pi / 180.0) ** 2,
        "FEAT_MIN_INT": mean_int * 0.4,
        "FEAT_MAX_INT": mean_int * 3.5,
        "FEAT_MEAN_INT": mean_int,
        "FEAT_MEAN2QSUN": mean_int / 400.0,
        "FEAT_MIN_BZ": -rng.uniform(200.0, 1500.0),
        "FEAT_MAX_BZ": rng.uniform(200.0, 1500.0),
        "FEAT_MEAN_BZ": rng.uniform(-50.0, 50.0),
        "CC": chain_code(outline),
        "CC_LENGTH": len(outline),
        "CC_X_PIX": outline[0][0],
        "CC_Y_PIX": outline[0][1],
        "SNAPSHOT_FN": names["quicklook"],
        "SNAPSHOT_PATH": f"images/full/SDO/AIA/{t:%Y}",
        "FEAT_FILENAME": names["feat"],
        "RUN_DATE": t,  # the observation time, not the wall clock: re-runs are byte-identical
    }
    row["FEAT_X_ARCSEC"], row["FEAT_Y_ARCSEC"] = pix_to_arcsec(xc, yc)
    row["CC_X_ARCSEC"], row["CC_Y_ARCSEC"] = pix_to_arcsec(*outline[0])
    for i, (x, y) in enumerate(corners):
        row[f"BR_X{i}_PIX"], row[f"BR_Y{i}_PIX"] = x, y
        row[f"BR_X{i}_ARCSEC"], row[f"BR_Y{i}_ARCSEC"] = pix_to_arcsec(x, y)
        hlon, hlat = pix_to_hg(x, y, b0)
        row[f"BR_HG_LONG{i}_DEG"], row[f"BR_HG_LAT{i}_DEG"] = hlon, hlat
        row[f"BR_CARR_LONG{i}_DEG"], row[f"BR_CARR_LAT{i}_DEG"] = wrap360(l0 + hlon), hlat
    return row


def frc_info_rows() -> list[dict]:
    return [
        {
            "ID_FRC_INFO": 1,
            "INSTITUT": "OBSPM",
            "CODE": "DEMO-ACTIVE-REGIONS",
            "VERSION": CODE_VERSION,
            "FEATURE_NAME": "ACTIVE REGIONS",
            "TARGET_NAME": "SUN",
            "TARGET_CLASS": "STAR",
            "ENC_MET": "CHAINCODE",
            "PERSON": "HFC pipeline team",
            "CONTACT": "hfc@example.org",
            "REFERENCE": "Demo FRC on synthetic AIA images, writing the SPoCA-AR file set "
            "(Barra et al. 2009, DOI: 10.1051/0004-6361/200811416)",
            "URL": None,
        }
    ]


def observatory_rows() -> list[dict]:
    return [
        {
            "ID_OBSERVATORY": ident,
            "OBSERVAT": "SDO",
            "INSTRUME": "AIA",
            "TELESCOP": "AIA",
            "OBSINST_KEY": "SDO__AIA_EUV",
            "UNITS": "Counts",
            "WAVEMIN": wavelength / 10.0,
            "WAVEMAX": wavelength / 10.0,
            "WAVENAME": line,
            "WAVEUNIT": "nm",
            "FREQMIN": None,
            "FREQMAX": None,
            "FREQUNIT": None,
            "SPECTRAL_DOMAIN": "Extreme ultraviolet",
            "OBS_TYPE": "REMOTE-SENSING",
            "OBS_CAT": "SPACEBORNE",
            "COMMENT": None,
        }
        for ident, wavelength, line in WAVELENGTHS
    ]


def metadata_files() -> list[tuple[str, bytes]]:
    return [
        (f"{CODE_NAME}_{FILE_VERSION}_frc_info.csv", csv_bytes(FRC_INFO_HEADER, frc_info_rows())),
        (f"{CODE_NAME}_{FILE_VERSION}_{OBS_TAG}_observatory.csv", csv_bytes(OBSERVATORY_HEADER, observatory_rows())),
    ]


def observation_files(t: dt.datetime, cadence: int, seed: int) -> list[tuple[str, bytes]]:
    """The files of one observation, in writing order (quicklook, feat if any, init last)."""
    b0 = b0_deg(t)
    base = f"{CODE_NAME}_{FILE_VERSION}_{t:{NAME_TIME_FMT}}_{OBS_TAG}"
    names = {"quicklook": aia_name(t, 171, ".png"), "feat": f"{base}_feat.csv"}
    regions = [r for r in seeded_regions(t.date(), seed) if visible(r, t, b0)]
    outlines = [boundary(r, t, b0) for r in regions]
    files = [(names["quicklook"], quicklook_png(t, regions, outlines, b0))]
    if regions:
        rows = [
            feat_row(i, r, o, t, cadence, b0, names)
            for i, (r, o) in enumerate(zip(regions, outlines, strict=True), start=1)
        ]
        files.append((names["feat"], csv_bytes(FEAT_HEADER, rows)))
    init = init_rows(t, names["quicklook"], names["feat"] if regions else None)
    files.append((f"{base}_init.csv", csv_bytes(INIT_HEADER, init)))
    return files


# ---------------------------------------------------------------- command line


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
        prog="demo_active_regions.py",
        description="Demo active-region FRC: synthetic SDO/AIA observations, SPoCA-AR-format files.",
    )
    parser.add_argument("-s", "--start", required=True, type=parse_time, help="first observation (UTC)")
    parser.add_argument("-e", "--end", required=True, type=parse_time, help="end of window, exclusive (UTC)")
    parser.add_argument(
        "-c", "--cadence", type=parse_cadence, default=7200, help="seconds between observations (default 7200 = 2 h)"
    )
    parser.add_argument("-o", "--outdir", required=True, help="output directory (created if needed)")
    parser.add_argument("--seed", type=int, default=0, help="seed mixed with the date into the regions (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.end <= args.start:
        parser.error(
            f"argument -e/--end: {args.end:{TIME_FMT}} is not after -s/--start "
            f"{args.start:{TIME_FMT}}: the window holds no observation"
        )
    try:
        os.makedirs(args.outdir, exist_ok=True)
        if not os.access(args.outdir, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        parser.error(f"argument -o/--outdir: cannot create or write {args.outdir!r}: {exc}")
    times = []
    t = args.start
    while t < args.end:
        times.append(t)
        t += dt.timedelta(seconds=args.cadence)
    try:
        print(
            f"demo-active-regions {CODE_VERSION}: {len(times)} observation(s) from {args.start:{TIME_FMT}} "
            f"to {args.end:{TIME_FMT}} every {args.cadence} s, seed {args.seed}, into {args.outdir}",
            flush=True,
        )
        written = 0
        for name, data in metadata_files():
            write_atomic(os.path.join(args.outdir, name), data)
            written += 1
        for t in times:
            files = observation_files(t, args.cadence, args.seed)
            feat = os.path.join(args.outdir, f"{CODE_NAME}_{FILE_VERSION}_{t:{NAME_TIME_FMT}}_{OBS_TAG}_feat.csv")
            if not any(name.endswith("_feat.csv") for name, _ in files) and os.path.exists(feat):
                os.remove(feat)  # a stale feat file from an earlier run would claim detections
            for name, data in files:
                write_atomic(os.path.join(args.outdir, name), data)
            written += len(files)
            nfeat = next((d.count(b"\n") - 1 for n, d in files if n.endswith("_feat.csv")), 0)
            print(f"{t:{TIME_FMT}}: {nfeat} region(s), {len(files)} file(s)", flush=True)
        print(f"done: {len(times)} observation(s), {written} file(s) written", flush=True)
        return 0
    except Exception as exc:  # noqa: BLE001 - any failure must give a non-zero exit and a message
        print(f"demo_active_regions.py: error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
