#!/usr/bin/python3
"""nrhsrc: a made-up radio-source code (Nancay Radioheliograph images), onboarded by
configuration only (tests/e2e/test_onboarding.py; its formats: formats.d/nrhsrc.yaml). It fills
RADIOSOURCES, a catalogue table that no packaged preset loads.

Runs on the cluster as the FRC's SLURM job with /usr/bin/python3 and the standard library.
It detects nothing: for the night of START it writes a fixed file set into the run folder, with
the names and columns of HFC_PRODUCTS.md / HFC_SCHEMA.md (separator ';', LF, a header line):

    nrhsrc_09_nrh_observatory.csv  nrhsrc_09_nrh_frc_info.csv
    nrhsrc_09_<YYYYMMDD>T120000_nrh_{init,feat}.csv

The same START gives the same bytes (no wall clock).

    nrhsrc.py -s START -o RUN_DIR      (START: YYYY-MM-DDTHH:MM:SS)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os

CODE, VERSION, TAG = "nrhsrc", "0.9", "nrh"
FILE_VERSION = VERSION.replace(".", "")
RUN_DATE = "2024-07-02T08:30:00"  # fixed: reruns write the same bytes


def write(run_dir: str, name: str, header: list[str], rows: list[list]) -> None:
    """One product file, written under a temporary name and renamed: never seen half-written."""
    text = ";".join(header) + "\n" + "".join(";".join("" if v is None else str(v) for v in r) + "\n" for r in rows)
    tmp = os.path.join(run_dir, name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, os.path.join(run_dir, name))


def source(n: int, x: int, y: int, stem: str) -> dict:
    scale = 15.0  # arcsec / pixel of a 128x128 NRH image
    row = {"ID_RS": n, "FRC_INFO_ID": 1, "OBSERVATIONS_ID": 1, "FEAT_X_PIX": x, "FEAT_Y_PIX": y,
           "FEAT_X_ARCSEC": (x - 64) * scale, "FEAT_Y_ARCSEC": (y - 64) * scale,
           "FEAT_HG_LONG_DEG": round((x - 64) * 0.9, 2), "FEAT_HG_LAT_DEG": round((y - 64) * 0.9, 2),
           "FEAT_CARR_LONG_DEG": round(118 + (x - 64) * 0.9, 2), "FEAT_CARR_LAT_DEG": round((y - 64) * 0.9, 2)}
    for i, (dx, dy) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
        row[f"BR_X{i}_PIX"], row[f"BR_Y{i}_PIX"] = x + 3 * dx, y + 3 * dy
    for i, (dx, dy) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
        row[f"BR_X{i}_ARCSEC"], row[f"BR_Y{i}_ARCSEC"] = (x + 3 * dx - 64) * scale, (y + 3 * dy - 64) * scale
    for i, (dx, dy) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
        row[f"BR_HG_LONG{i}_DEG"], row[f"BR_HG_LAT{i}_DEG"] = round((x + 3 * dx - 64) * 0.9, 2), \
            round((y + 3 * dy - 64) * 0.9, 2)
    for i, (dx, dy) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
        row[f"BR_CARR_LONG{i}_DEG"], row[f"BR_CARR_LAT{i}_DEG"] = round(118 + (x + 3 * dx - 64) * 0.9, 2), \
            round((y + 3 * dy - 64) * 0.9, 2)
    row.update({"FEAT_MAX_INT": 2.5e8 * n, "FEAT_MEAN_INT": 1.25e8 * n, "FEAT_AREA_PIX": 29 + n,
                "FEAT_AREA_DEG2": 23.5 + n, "FEAT_AREA_MM2": 8750.5 + n, "EL_AXIS1": 3.75, "EL_AXIS2": 2.5,
                "EL_ANGLE": 35.0 + 10 * n, "CC_X_PIX": x - 3, "CC_Y_PIX": y - 3,
                "CC_X_ARCSEC": (x - 67) * scale, "CC_Y_ARCSEC": (y - 67) * scale, "CC": "001122334455667",
                "CC_LENGTH": 15, "SNAPSHOT_FN": f"{stem}_src{n}.png", "SNAPSHOT_PATH": None,
                "FEAT_FILENAME": "", "HELIO_RS_NUMBER": None, "RUN_DATE": RUN_DATE})
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-s", "--start", required=True)
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args(argv)
    day = dt.datetime.strptime(a.start, "%Y-%m-%dT%H:%M:%S").date()
    obs_time = dt.datetime.combine(day, dt.time(12))
    out = a.output
    meta = f"{CODE}_{FILE_VERSION}_{TAG}"
    stem = f"{CODE}_{FILE_VERSION}_{obs_time:%Y%m%dT%H%M%S}_{TAG}"
    jd = 2451545.0 + (obs_time - dt.datetime(2000, 1, 1, 12)).total_seconds() / 86400
    image = f"nrh2_1509_h80_{obs_time:%Y%m%d_%H%M%S}c04_b.fts"

    # Radio observatory rows in the HFC's observatory shape: wavelength of 150.9 MHz in metres.
    write(out, f"{meta}_observatory.csv",
          ["ID_OBSERVATORY", "OBSERVAT", "INSTRUME", "TELESCOP", "UNITS", "WAVEMIN", "WAVEMAX", "WAVENAME",
           "WAVEUNIT", "FREQMIN", "FREQMAX", "FREQUNIT", "SPECTRAL_DOMAIN", "OBS_TYPE", "COMMENT"],
          [[1, "Nancay", "NRH", "NRH2", "K", 1.987, 1.987, "150.9MHz", "m", 150.9, 150.9, "MHz", "Radio",
            "Remote-sensing", ""]])
    write(out, f"{meta}_frc_info.csv",
          ["ID_FRC_INFO", "INSTITUT", "CODE", "VERSION", "FEATURE_NAME", "ENC_MET", "PERSON", "CONTACT", "REFERENCE",
           "URL"],
          [[1, "OBSPM-LESIA", CODE, VERSION, "RADIO SOURCES", "CHAIN CODE", "B. Onboarder", "radio@example.org",
            "doi:10.0000/nrhsrc", "https://example.org/nrhsrc"]])
    write(out, f"{stem}_init.csv",
          ["ID_OBSERVATIONS", "OBSERVATORY_ID", "DATE_OBS", "DATE_END", "JDINT", "JDFRAC", "EXP_TIME", "C_ROTATION",
           "BSCALE", "BZERO", "BITPIX", "NAXIS1", "NAXIS2", "R_SUN", "CENTER_X", "CENTER_Y", "CDELT1", "CDELT2",
           "QUALITY", "FILENAME", "FILE_FORMAT", "COMMENT", "LOC_FILENAME", "URL", "QCLK_URL", "QCLK_FNAME"],
          [[1, 1, f"{obs_time:%Y-%m-%dT%H:%M:%S}", f"{obs_time + dt.timedelta(seconds=10):%Y-%m-%dT%H:%M:%S}",
            int(jd), round(jd - int(jd), 6), 10.0, 2285, 1.0, 0.0, 16, 128, 128, 64.25, 63.5, 64.5, 15.0, 15.0,
            "", image, "FITS", "", f"/data/nrh/{image}", "", "", ""]])
    sources = [source(1, 52, 70, stem), source(2, 81, 58, stem)]
    write(out, f"{stem}_feat.csv", list(sources[0]), [list(s.values()) for s in sources])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
