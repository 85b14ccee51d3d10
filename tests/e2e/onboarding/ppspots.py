#!/usr/bin/python3
"""ppspots: a made-up sunspot code with a pre-processing step, onboarded by configuration only
(tests/e2e/test_onboarding.py; its formats: formats.d/ppspots.yaml).

Runs on the cluster as the FRC's SLURM job with /usr/bin/python3 and the standard library.
It detects nothing: for the night of START it writes a fixed file set into the run folder, with
the names and columns of HFC_PRODUCTS.md / HFC_SCHEMA.md (separator ';', LF, a header line):

    ppspots_12_hmi_observatory.csv  ppspots_12_hmi_frc_info.csv  ppspots_12_hmi_pp_info.csv
    ppspots_12_<YYYYMMDD>T000000_hmi_{init,feat,ppout}.csv       and the init file's quicklook

The same START gives the same bytes (no wall clock), so the test can run it again locally and
compare with what the pipeline archived and loaded.

    ppspots.py -s START -o RUN_DIR      (START: YYYY-MM-DDTHH:MM:SS)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os

CODE, VERSION, TAG = "ppspots", "1.2", "hmi"
FILE_VERSION = VERSION.replace(".", "")
RUN_DATE = "2024-07-01T12:00:00"  # fixed: reruns write the same bytes
INSTITUT, PERSON, CONTACT = "OBSPM-LESIA", "A. Onboarder", "onboarding@example.org"


def write(run_dir: str, name: str, header: list[str], rows: list[list]) -> None:
    """One product file, written under a temporary name and renamed: never seen half-written."""
    text = ";".join(header) + "\n" + "".join(";".join("NULL" if v is None else str(v) for v in r) + "\n"
                                              for r in rows)
    tmp = os.path.join(run_dir, name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    os.replace(tmp, os.path.join(run_dir, name))


def box(x: int, y: int, half: int, scale: float) -> dict:
    """Bounding-box corners (pixels, arcsec, heliographic, Carrington) of a square around (x, y)."""
    out = {}
    for i, (dx, dy) in enumerate(((-1, -1), (-1, 1), (1, -1), (1, 1))):
        px, py = x + dx * half, y + dy * half
        out[f"BR_X{i}_PIX"], out[f"BR_Y{i}_PIX"] = px, py
        out[f"BR_X{i}_ARCSEC"], out[f"BR_Y{i}_ARCSEC"] = round((px - 512) * scale, 2), round((py - 512) * scale, 2)
        out[f"BR_HG_LONG{i}_DEG"], out[f"BR_HG_LAT{i}_DEG"] = round((px - 512) * 0.12, 3), round((py - 512) * 0.12, 3)
        out[f"BR_CARR_LONG{i}_DEG"], out[f"BR_CARR_LAT{i}_DEG"] = round(200 + (px - 512) * 0.12, 3), \
            round((py - 512) * 0.12, 3)
    return out


def spot(n: int, x: int, y: int, stem: str) -> dict:
    scale = 2.0
    row = {
        "ID_SUNSPOT": n, "FRC_INFO_ID": 1, "OBSERVATIONS_ID_IC": 1, "OBSERVATIONS_ID_M": None,
        "FEAT_X_ARCSEC": round((x - 512) * scale, 2), "FEAT_Y_ARCSEC": round((y - 512) * scale, 2),
        "FEAT_X_PIX": x, "FEAT_Y_PIX": y,
        "FEAT_HG_LONG_DEG": round((x - 512) * 0.12, 3), "FEAT_HG_LAT_DEG": round((y - 512) * 0.12, 3),
        "FEAT_CARR_LONG_DEG": round(200 + (x - 512) * 0.12, 3), "FEAT_CARR_LAT_DEG": round((y - 512) * 0.12, 3),
        **box(x, y, 6, scale),
        "FEAT_AREA_PIX": 120 + n, "FEAT_AREA_DEG2": 0.5 + n / 10, "FEAT_AREA_MM2": 180.25 + n,
        "FEAT_DIAM_DEG": 0.8, "FEAT_DIAM_MM": 9.75, "FEAT_MEAN2QSUN": 0.62,
        "FEAT_MAX_INT": 41000.0, "FEAT_MIN_INT": 18000.5, "FEAT_MEAN_INT": 30500.25,
        "FEAT_TOT_BZ": None, "FEAT_ABS_BZ": 1250.5, "FEAT_MAX_BZ": 900.0, "FEAT_MIN_BZ": -350.0, "FEAT_MEAN_BZ": 275.5,
        "UMBRA_NUMBER": 1, "UMBRA_AREA_PIX": 20 + n, "UMBRA_AREA_MM2": 30.5, "UMBRA_AREA_DEG2": 0.09,
        "UMBRA_DIAM_DEG": 0.3, "UMBRA_DIAM_MM": 3.5, "UMBRA_MAX_INT": 21000.0, "UMBRA_MIN_INT": 9000.0,
        "UMBRA_MEAN_INT": 15000.0, "UMBRA_TOT_BZ": 800.0, "UMBRA_ABS_BZ": 810.0, "UMBRA_MAX_BZ": 1900.0,
        "UMBRA_MIN_BZ": 1200.0, "UMBRA_MEAN_BZ": 1500.0,
        "CC_X_PIX": x - 6, "CC_Y_PIX": y - 6, "CC_X_ARCSEC": round((x - 518) * scale, 2),
        "CC_Y_ARCSEC": round((y - 518) * scale, 2), "CC": "0000222244446666", "CC_LENGTH": 16,
        "RS": "0123", "RS_LENGTH": 4, "SNAPSHOT_FN": None, "SNAPSHOT_PATH": None, "HELIO_SS_NUMBER": 7000 + n,
        "FEAT_FILENAME": f"{stem}_feat.csv", "RUN_DATE": RUN_DATE,
    }
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-s", "--start", required=True)
    p.add_argument("-o", "--output", required=True)
    a = p.parse_args(argv)
    day = dt.datetime.strptime(a.start, "%Y-%m-%dT%H:%M:%S").date()
    obs_time = dt.datetime.combine(day, dt.time())
    out = a.output
    meta = f"{CODE}_{FILE_VERSION}_{TAG}"
    stem = f"{CODE}_{FILE_VERSION}_{obs_time:%Y%m%dT%H%M%S}_{TAG}"
    jd = 2451545.0 + (obs_time - dt.datetime(2000, 1, 1, 12)).total_seconds() / 86400
    image = f"hmi.ic_45s.{obs_time:%Y%m%d_%H%M%S}_TAI.2.continuum.fits"
    quicklook = f"{stem}.jpg"

    write(out, f"{meta}_observatory.csv",
          ["ID_OBSERVATORY", "OBSERVAT", "INSTRUME", "TELESCOP", "UNITS", "WAVEMIN", "WAVEMAX", "WAVENAME",
           "WAVEUNIT", "SPECTRAL_DOMAIN", "OBS_TYPE", "COMMENT"],
          [[1, "SDO", "HMI", "HMI_SIDE1", "Angstrom", 6173.0, 6173.0, "6173", "Angstrom", "Visible",
            "Remote-sensing", "cleaned by ppclean first"]])
    write(out, f"{meta}_frc_info.csv",
          ["ID_FRC_INFO", "INSTITUT", "CODE", "VERSION", "FEATURE_NAME", "ENC_MET", "PERSON", "CONTACT", "REFERENCE"],
          [[1, INSTITUT, CODE, VERSION, "SUNSPOTS", "CHAIN CODE", PERSON, CONTACT, None]])
    # The pre-processing code: one row per code, matched by content in PP_INFO.
    write(out, f"{meta}_pp_info.csv",
          ["ID_PP_INFO", "INSTITUT", "CODE", "VERSION", "PERSON", "CONTACT", "REFERENCE"],
          [[1, INSTITUT, "ppclean", "0.4", PERSON, CONTACT, "doi:10.0000/ppclean.2024"]])
    write(out, f"{stem}_init.csv",
          ["ID_OBSERVATIONS", "OBSERVATORY_ID", "DATE_OBS", "DATE_END", "JDINT", "JDFRAC", "EXP_TIME", "C_ROTATION",
           "BSCALE", "BZERO", "BITPIX", "NAXIS1", "NAXIS2", "R_SUN", "CENTER_X", "CENTER_Y", "CDELT1", "CDELT2",
           "QUALITY", "FILENAME", "FILE_FORMAT", "COMMENT", "LOC_FILENAME", "URL", "QCLK_URL", "QCLK_FNAME"],
          [[1, 1, f"{obs_time:%Y-%m-%dT%H:%M:%S}", f"{obs_time + dt.timedelta(seconds=45):%Y-%m-%dT%H:%M:%S}",
            int(jd), round(jd - int(jd), 6), 45.0, 2285, 1.0, 0.0, 32, 1024, 1024, 472.5, 511.5, 512.25, 2.0, 2.0,
            "GOOD", image, "FITS", None, f"/data/hmi/{image}", f"http://jsoc.stanford.edu/data/{image}", None,
            quicklook]])
    spots = [spot(1, 430, 580, stem), spot(2, 610, 455, stem)]
    write(out, f"{stem}_feat.csv", list(spots[0]), [list(s.values()) for s in spots])
    # The pre-processing output of the observation: the cleaned image the spots were found on,
    # resampled to 2048x2048 (its geometry differs from the observation's).
    write(out, f"{stem}_ppout.csv",
          ["ID_PP_OUTPUT", "PP_INFO_ID", "OBSERVATIONS_ID", "RUN_DATE", "PR_LOCFNAME", "ORG_FNAME", "LOC_FILE",
           "EL_CEN_X", "EL_CEN_Y", "EL_AXIS1", "EL_AXIS2", "EL_ANGLE", "STDEV", "STDEVGEO", "ALGERR", "CDELT1",
           "CDELT2", "BITPIX", "QSUN_INT", "EFIT", "STANDARD", "LIMBDARK", "BACKGROUND", "LINECLEAN",
           "LINEC_MAIND", "PERCENT", "NAXIS1", "NAXIS2", "CENTER_X", "CENTER_Y", "R_SUN", "DIVISION", "INORM", "URL"],
          [[1, 1, 1, RUN_DATE, f"{stem}_cleaned.fits", image, f"/scratch/ppclean/{stem}_cleaned.fits",
            1023.5, 1024.0, 945.5, 944.5, 3.5, 0.25, 0.5, 0.125, 1.0, 1.0, -32, 49750.5, 1, 1, 1, 0, 1,
            None, 0.5, 2048, 2048, 1023.0, 1024.5, 945.0, 1, 1.05, None]])
    with open(os.path.join(out, quicklook), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00ppspots quicklook\xff\xd9")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
