"""Builders of HFC product files in the shapes the codes write them, and manifests of them.

Used by the catalogue integration tests: files are bytes in a dict standing for the archive.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from helpers import csv_bytes, iso, stamp, values_for  # noqa: F401 - the integration tests import them here

from hfc_tasks.catalogue import formats, load_night, readers

SAMPLES = Path(__file__).parents[1] / "data" / "hfc_samples"
ARCHIVE_URL = "file:///archive"


def header_of(spec: readers.KindSpec, *, drop: tuple[str, ...] = ()) -> list[str]:
    return [c.name for c in spec.columns if c.name not in drop]


class Archive:
    """A night of one FRC: ``files`` (archive path -> bytes) and its ``manifest``."""

    def __init__(self, frc: str, night: dt.date, product_format: str, *, folder: str | None = None,
                 instrument_path: str = "OBS/INST"):
        self.frc, self.night, self.product_format = frc, night, product_format
        self.folder = folder or frc
        self.instrument_path = instrument_path
        self.files: dict[str, bytes] = {}
        self.entries: list[dict] = []
        self.extra: dict = {}

    def add(self, name: str, kind: str, data: bytes, *, sha: str | None = None) -> str:
        year = f"{self.night:%Y}"
        sub = f"images/full/{self.instrument_path}/{year}" if kind == "quicklook" else f"results/{year}"
        path = f"{self.folder}/{sub}/{name}"
        self.entries = [e for e in self.entries if e["name"] != name]
        self.files[path] = data
        self.entries.append(
            {
                "name": name,
                "kind": kind,
                "size": len(data),
                "sha256": sha or hashlib.sha256(data).hexdigest(),
                "archive_path": path,
                "url_base": f"{ARCHIVE_URL}/{self.folder}/{sub}",
            }
        )
        return path

    def sample(self, name: str, kind: str, as_name: str | None = None) -> None:
        self.add(as_name or name, kind, (SAMPLES / name).read_bytes())

    def path_of(self, name: str) -> str:
        return next(e["archive_path"] for e in self.entries if e["name"] == name)

    def data_of(self, name: str) -> bytes:
        return self.files[self.path_of(name)]

    def replace(self, name: str, data: bytes, *, keep_sha: bool = False) -> None:
        entry = next(e for e in self.entries if e["name"] == name)
        self.add(name, entry["kind"], data, sha=entry["sha256"] if keep_sha else None)

    def remove(self, name: str) -> None:
        self.entries = [e for e in self.entries if e["name"] != name]

    @property
    def manifest(self) -> dict:
        return {
            "format": "hfc-manifest/1",
            "frc": self.frc,
            "night": self.night.isoformat(),
            "product_format": self.product_format,
            "frc_version": "1.0",
            "slurm_job_id": "77",
            "files": list(self.entries),
            **self.extra,
        }

    def read(self, path: str) -> bytes:
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path]

    def load(self, conn, **kw):
        report = load_night(conn, self.manifest, self.read, **kw)
        conn.commit()
        return report


# ------------------------------------------------------------------ an SDOSS night
# (also the benchmark's: bench/catalogue_load.py)
INIT_COLUMNS = (
    "ID_OBSERVATIONS;OBSERVATORY_ID;DATE_OBS;DATE_END;JDINT;JDFRAC;EXP_TIME;C_ROTATION;BSCALE;BZERO;BITPIX;"
    "NAXIS1;NAXIS2;R_SUN;CENTER_X;CENTER_Y;CDELT1;CDELT2;QUALITY;FILENAME;FILE_FORMAT;FILE_SIZE;DATA_TYPE;"
    "PROCESSING_LVL;COMMENT;LOC_FILENAME;URL;QCLK_URL;QCLK_FNAME"
).split(";")
SDOSS_FEAT = formats.KNOWN.kinds["sdoss_feat"]
FEAT_COLUMNS = [c.name for c in SDOSS_FEAT.columns]


def quicklook_name(t: dt.datetime) -> str:
    return f"hmi.ic_45s.{t:%Y.%m.%d_%H_%M_%S}_TAI.continuum.jpg"


def init_csv(t: dt.datetime) -> bytes:
    """SDOSS init: continuum (local id 1, observatory 1) then magnetogram (2, observatory 2)."""
    start, end = iso(t), iso(t + dt.timedelta(seconds=45))
    rows = []
    for local, kind in ((1, "continuum"), (2, "magnetogram")):
        fits = f"hmi.{kind}.{t:%Y%m%d_%H%M%S}.fits"
        values = {
            "ID_OBSERVATIONS": local,
            "OBSERVATORY_ID": local,
            "DATE_OBS": start,
            "DATE_END": end,
            "JDINT": 2460371,
            "JDFRAC": 0.5,
            "EXP_TIME": 0.045,
            "C_ROTATION": 2281,
            "BSCALE": 1.0,
            "BZERO": 0.0,
            "BITPIX": 32,
            "NAXIS1": 4096,
            "NAXIS2": 4096,
            "R_SUN": 1890.5,
            "CENTER_X": 2048.25,
            "CENTER_Y": 2047.75,
            "CDELT1": 0.504,
            "CDELT2": 0.504,
            "QUALITY": "0",
            "FILENAME": fits,
            "FILE_FORMAT": "FITS",
            "FILE_SIZE": 16777216,
            "DATA_TYPE": "int",
            "PROCESSING_LVL": "1.5",
            "COMMENT": "NULL",
            "LOC_FILENAME": f"/data/sdo/{fits}",
            "URL": f"http://jsoc.stanford.edu/{fits}",
            "QCLK_URL": "",
            "QCLK_FNAME": quicklook_name(t) if local == 1 else "\\N",
        }
        rows.append(";".join(str(values[c]) for c in INIT_COLUMNS))
    # CRLF and no final newline, like the real files.
    return ("\r\n".join([";".join(INIT_COLUMNS), *rows])).encode()
