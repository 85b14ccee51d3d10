#!/usr/bin/python3
"""demo-sunspot-tracking: the sunspot tracker FRC of the local site, downstream of demo-sunspots.

It runs on the cluster as a SLURM job with Debian's /usr/bin/python3 and ONLY the standard
library. It reads what the detector PUBLISHED in the HFC archive (never the detector's run folder,
which the pipeline empties after archiving) and writes one SDOSS-format track file for the night:

1. for each night from (night - HISTORY_NIGHTS) to the night, read the detector's manifest
   ``<URL>/<detector folder>/manifests/<detector>/<YYYYMMDD>.json`` (one manifest per FRC and
   night, in the detector's archive folder; the folder is the detector's name unless
   ``--detector-folder`` says otherwise); the current night's is required (exit 3 when
   missing: the detector has not published yet), earlier nights are optional;
2. download the ``feat`` files listed there (and their ``init`` files, for DATE_OBS), check each
   against the manifest's sha256 (exit 4 on a mismatch) and read the spots by header name;
3. link the spots from one observation to the next in Carrington coordinates and write
   ``demosunspottracking_100_<YYYYMMDD>T000000_sdo_track.csv`` with one row per spot of the
   CURRENT night, plus the per-code ``demosunspottracking_100_frc_info.csv``.

Tracking (deterministic: same published data and arguments -> byte-identical files):

* Observations are ordered by (DATE_OBS, feat file name). A spot may continue a track whose last
  member is in an EARLIER observation at most MAX_GAP_HOURS before it (a spot missed once does not
  break its track). The track's last position is carried forward with the photospheric
  differential rotation relative to the Carrington frame, then the great-circle distance to the
  spot is measured (longitudes wrap at 360 by construction). Candidate links within
  LINK_RADIUS_DEG are taken greedily, shortest first, one spot per track and one track per spot.
* TRACK_ID comes from the track's first member seen in the window (see ``track_id_base``):
  ``hours since 1970-01-01T00 UTC of its DATE_OBS * 1000 + ID_SUNSPOT`` (+ the spot counts of any
  earlier observation in the same hour, normally none). E.g. spot 3 first seen 2024-01-07T04:00
  -> 473500 * 1000 + 3 = 473500003. The catalogue's TRACK_ID is a 32-bit integer
  (hfc.sunspots_tracking.track_id), so a YYYYMMDDHH-based id (2e12) would not fit; this one does
  until the year 2214. Re-running a night, or running the next night with history, gives the same
  TRACK_ID to the same spots -- as long as the track's first member lies in the window: a track
  that began before (night - HISTORY_NIGHTS) gets its id from its first member inside the window.
* PHENOM: 0 = the spot continues a track; 1 = a new track, no earlier spot within the radius
  (a birth, or the first sighting: east limb, start of the window); 2 = a new track although an
  earlier spot was within the radius, because a closer spot took it (a fragment / split).
* REF_FEAT = 1 for the first member of a track in the window, else 0.
* LVL_TRUST = min(10, number of links of the whole track in the window) = min(10, members - 1):
  0 for a lone detection, 10 for a track of 11 observations or more.
* RUN_DATE = START (not the wall clock), so re-runs are byte-identical.

Exit codes: 0 done, 1 unexpected failure, 2 bad arguments, 3 the detector has not published the
night (no manifest), 4 a published file does not match its manifest (sha256 or size, or missing).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import math
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

CODE_NAME = "demosunspottracking"
CODE_VERSION = "1.0.0"
FILE_VERSION = CODE_VERSION.replace(".", "")  # HFC file names carry the version without dots
OBS_TAG = "sdo"
TIME_FMT = "%Y-%m-%dT%H:%M:%S"

LINK_RADIUS_DEG = 4.0  # great-circle distance (heliographic degrees) for a link
MAX_GAP_HOURS = 24.0  # a track waits at most this long for its next member
CARRINGTON_RATE_DEG_PER_DAY = 360.0 / 25.38  # sidereal rotation of the Carrington frame
MAX_SPOTS_PER_HOUR = 999  # TRACK_ID keeps 3 digits for the spots first seen in one hour
INT32_MAX = 2**31 - 1
URL_TIMEOUT_S = 120
NULLS = ("", "NULL", "\\N")

# exit codes
EXIT_FAILED = 1
EXIT_NOT_PUBLISHED = 3
EXIT_MISMATCH = 4

TRACK_HEADER = (
    "ID_SUNSPOT;TRACK_ID;DATE_OBS;FEAT_X_PIX;FEAT_Y_PIX;PHENOM;REF_FEAT;LVL_TRUST;TRACK_FILENAME;FEAT_FILENAME;RUN_DATE"
).split(";")
FRC_INFO_HEADER = (
    "ID_FRC_INFO;INSTITUT;CODE;VERSION;FEATURE_NAME;TARGET_NAME;TARGET_CLASS;ENC_MET;PERSON;CONTACT;REFERENCE;URL"
).split(";")
FRC_INFO_ROW = [
    "1",
    "OBSPM",
    "DEMO-SUNSPOT-TRACKING",
    CODE_VERSION,
    "SUNSPOTS",
    "SUN",
    "STAR",
    "NONE",
    "HFC pipeline team",
    "hfc@example.org",
    "",
    "",
]
FEAT_COLUMNS = ("ID_SUNSPOT", "FEAT_CARR_LONG_DEG", "FEAT_CARR_LAT_DEG", "FEAT_X_PIX", "FEAT_Y_PIX")

# <code>_<ver>_<YYYYMMDDTHHMMSS>_<obs>_<kind>.csv (the HFC naming convention)
_DATED_NAME = re.compile(
    r"^(?P<stem>[A-Za-z0-9]+_[A-Za-z0-9]+_(?P<stamp>\d{8}T\d{6})_[A-Za-z0-9]+)_(?P<kind>[a-z]+)\.csv$"
)
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class TrackerError(Exception):
    """A failure with its exit code and a message for stderr."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# =============================================================================================
# Reading the archive
# =============================================================================================


def _is_missing(exc: urllib.error.URLError) -> bool:
    """True when a URL error means "there is no such file" (not a network or server failure)."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (404, 410)
    reason = exc.reason
    if isinstance(reason, FileNotFoundError):  # file://
        return True
    return str(reason).startswith("ftp error") and "550" in str(reason)  # ftp://: 550 no such file


def fetch(url: str) -> bytes | None:
    """The bytes at a URL, or None when there is no such file; other failures raise OSError."""
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            return response.read()
    except urllib.error.URLError as exc:
        if _is_missing(exc):
            return None
        raise OSError(f"cannot read {url}: {exc}") from exc
    except FileNotFoundError:  # some Pythons raise it directly for file:// URLs
        return None
    except IsADirectoryError as exc:
        raise OSError(f"cannot read {url}: is a directory") from exc


def url_join(base: str, relpath: str) -> str:
    return base.rstrip("/") + "/" + relpath.lstrip("/")


def manifest_url(archive_url: str, detector: str, night: dt.date, folder: str | None = None) -> str:
    """The detector's own manifest of the night: ``<folder>/manifests/<detector>/<YYYYMMDD>.json``."""
    return url_join(archive_url, f"{folder or detector}/manifests/{detector}/{night:%Y%m%d}.json")


def read_manifest(archive_url: str, detector: str, night: dt.date, folder: str | None = None) -> dict | None:
    url = manifest_url(archive_url, detector, night, folder)
    raw = fetch(url)
    if raw is None:
        return None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise TrackerError(EXIT_FAILED, f"manifest {url} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise TrackerError(EXIT_FAILED, f"manifest {url} has no 'files' list")
    return manifest


def download_verified(archive_url: str, entry: dict, manifest_where: str) -> bytes:
    """A file listed in a manifest, checked against the manifest's sha256 (and size)."""
    name = entry.get("name")
    if not isinstance(name, str) or not _PLAIN_NAME.match(name) or ".." in name:
        raise TrackerError(EXIT_FAILED, f"manifest {manifest_where} lists a bad file name {name!r}")
    # url_base is the public folder of the file as recorded at publication; a manifest without
    # it (older format) is resolved against --archive-url with the file's archive_path.
    if entry.get("url_base"):
        url = url_join(entry["url_base"], name)
    elif entry.get("archive_path"):
        url = url_join(archive_url, entry["archive_path"])
    else:
        raise TrackerError(EXIT_FAILED, f"manifest {manifest_where}: {name} has neither url_base nor archive_path")
    data = fetch(url)
    if data is None:
        raise TrackerError(EXIT_MISMATCH, f"{name}: listed in {manifest_where} but missing at {url}")
    expected = str(entry.get("sha256", "")).lower()
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise TrackerError(
            EXIT_MISMATCH, f"{name}: sha256 {actual} at {url} does not match {expected or '(none)'} in {manifest_where}"
        )
    if "size" in entry and entry["size"] != len(data):
        raise TrackerError(EXIT_MISMATCH, f"{name}: {len(data)} bytes at {url}, {manifest_where} says {entry['size']}")
    return data


def read_table(name: str, data: bytes) -> list[dict]:
    """Rows of an HFC CSV by header name (";" separator, CRLF or LF, an optional trailing ";")."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", quotechar='"')
    try:
        header = [h.strip().upper() for h in next(reader)]
    except StopIteration:
        raise TrackerError(EXIT_FAILED, f"{name} is empty (no header line)") from None
    rows = []
    for lineno, values in enumerate(reader, start=2):
        if not values or values == [""]:
            continue
        if len(values) == len(header) + 1 and values[-1] == "":
            values = values[:-1]  # a trailing ";" on data lines only
        if len(values) != len(header):
            raise TrackerError(EXIT_FAILED, f"{name} line {lineno}: {len(values)} fields, header has {len(header)}")
        rows.append(dict(zip(header, values, strict=True)))
    return rows


def is_null(value: str | None) -> bool:
    return value is None or value.strip() in NULLS


def parse_date_obs(text: str, where: str) -> dt.datetime:
    """YYYY-MM-DDTHH:MM:SS[.fff][Z] -> naive UTC datetime, to the second (fraction dropped)."""
    try:
        return dt.datetime.strptime(text.strip()[:19].replace(" ", "T"), TIME_FMT)
    except ValueError:
        raise TrackerError(EXIT_FAILED, f"{where}: DATE_OBS {text!r} is not YYYY-MM-DDTHH:MM:SS") from None


# =============================================================================================
# Spots and observations
# =============================================================================================


@dataclass
class Spot:
    local_id: int
    lon: float | None  # Carrington longitude, degrees (None: not given, the spot cannot be linked)
    lat: float | None
    x_pix: str
    y_pix: str
    obs: Observation | None = None
    track: Track | None = None
    phenom: int = 1


@dataclass
class Observation:
    date_obs: dt.datetime
    feat_name: str
    night: dt.date
    spots: list[Spot] = field(default_factory=list)


@dataclass
class Track:
    track_id: int
    members: list[Spot] = field(default_factory=list)


def observations_of_night(archive_url: str, manifest: dict, manifest_where: str, night: dt.date) -> list[Observation]:
    """The observations (feat files) a manifest lists, with their spots."""
    entries = {e.get("name"): e for e in manifest["files"] if isinstance(e, dict)}
    observations: list[Observation] = []
    for name in sorted(n for n, e in entries.items() if e.get("kind") == "feat" and isinstance(n, str)):
        m = _DATED_NAME.match(name)
        if not m:
            raise TrackerError(
                EXIT_FAILED, f"{manifest_where}: feat file {name!r} is not <code>_<ver>_<stamp>_<obs>_feat.csv"
            )
        rows = read_table(name, download_verified(archive_url, entries[name], manifest_where))
        if rows:
            missing = [c for c in FEAT_COLUMNS if c not in rows[0]]
            if missing:
                raise TrackerError(EXIT_FAILED, f"{name}: no column(s) {', '.join(missing)}")
        # DATE_OBS: from the matching init file (same stem), row ID_OBSERVATIONS =
        # OBSERVATIONS_ID_IC, when the manifest lists one: that is the observation's real time.
        # Without an init file, the time stamp of the feat file's name, which the HFC convention
        # sets to the (first) observation's DATE_OBS.
        init_name = f"{m.group('stem')}_init.csv"
        init_dates: dict[str, dt.datetime] = {}
        if init_name in entries:
            for row in read_table(init_name, download_verified(archive_url, entries[init_name], manifest_where)):
                if not is_null(row.get("ID_OBSERVATIONS")) and not is_null(row.get("DATE_OBS")):
                    init_dates[row["ID_OBSERVATIONS"].strip()] = parse_date_obs(row["DATE_OBS"], init_name)
        name_date = dt.datetime.strptime(m.group("stamp"), "%Y%m%dT%H%M%S")
        by_date: dict[dt.datetime, Observation] = {}
        for lineno, row in enumerate(rows, start=2):
            where = f"{name} line {lineno}"
            try:
                local_id = int(row["ID_SUNSPOT"])
            except ValueError:
                raise TrackerError(
                    EXIT_FAILED, f"{where}: ID_SUNSPOT {row['ID_SUNSPOT']!r} is not an integer"
                ) from None
            ic = (row.get("OBSERVATIONS_ID_IC") or "").strip()
            date_obs = init_dates.get(ic, name_date) if init_dates else name_date
            lon = lat = None
            if not (is_null(row["FEAT_CARR_LONG_DEG"]) or is_null(row["FEAT_CARR_LAT_DEG"])):
                try:
                    lon, lat = float(row["FEAT_CARR_LONG_DEG"]), float(row["FEAT_CARR_LAT_DEG"])
                except ValueError:
                    raise TrackerError(EXIT_FAILED, f"{where}: Carrington coordinates are not numbers") from None
            obs = by_date.setdefault(date_obs, Observation(date_obs, name, night))
            x = "" if is_null(row["FEAT_X_PIX"]) else row["FEAT_X_PIX"].strip()
            y = "" if is_null(row["FEAT_Y_PIX"]) else row["FEAT_Y_PIX"].strip()
            spot = Spot(local_id, lon, lat, x, y, obs=obs)
            obs.spots.append(spot)
        for obs in by_date.values():
            ids = [s.local_id for s in obs.spots]
            if len(set(ids)) != len(ids):
                raise TrackerError(EXIT_FAILED, f"{name}: ID_SUNSPOT values repeat")
            obs.spots.sort(key=lambda s: s.local_id)
            observations.append(obs)
    return observations


# =============================================================================================
# Tracking
# =============================================================================================


def carrington_drift_deg_per_day(lat_deg: float) -> float:
    """Longitude drift of a spot in the Carrington frame: the photospheric sidereal rate of
    Snodgrass & Ulrich (1990) -- the one demo-sunspots gives its spots -- minus the frame's."""
    s2 = math.sin(math.radians(lat_deg)) ** 2
    return 14.713 - 2.396 * s2 - 1.787 * s2 * s2 - CARRINGTON_RATE_DEG_PER_DAY


def angular_distance(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in degrees (haversine; any longitudes, the wrap at 360 is implicit)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return math.degrees(2.0 * math.asin(min(1.0, math.sqrt(h))))


def track_id_base(observations: list[Observation]) -> dict[int, int]:
    """TRACK_ID of a track first seen as spot k of observation o: base[id(o)] + k.

    base = whole hours since 1970-01-01T00 UTC of DATE_OBS * 1000, plus the spot counts of the
    earlier observations of the same hour (0 at the usual cadences of 1 h or more). An hour lies
    within one night, whose manifest lists all its observations, so every run that reads that
    night computes the same base.
    """
    epoch = dt.datetime(1970, 1, 1)
    base: dict[int, int] = {}
    used: dict[int, int] = {}  # hour -> largest local id offset taken so far
    for obs in observations:
        seconds = (obs.date_obs - epoch).total_seconds()
        if seconds < 0:
            raise TrackerError(EXIT_FAILED, f"{obs.feat_name}: DATE_OBS before 1970 gives no valid TRACK_ID")
        hour = int(seconds // 3600)
        offset = used.get(hour, 0)
        top = max((s.local_id for s in obs.spots), default=0)
        if min((s.local_id for s in obs.spots), default=1) < 1 or offset + top > MAX_SPOTS_PER_HOUR:
            raise TrackerError(
                EXIT_FAILED,
                f"{obs.feat_name}: ID_SUNSPOT must be 1..{MAX_SPOTS_PER_HOUR - offset} for a TRACK_ID "
                f"(spots first seen within one hour share {MAX_SPOTS_PER_HOUR} ids)",
            )
        used[hour] = offset + top
        base[id(obs)] = hour * 1000 + offset
        if hour * 1000 + offset + top > INT32_MAX:
            raise TrackerError(EXIT_FAILED, f"{obs.feat_name}: DATE_OBS too late for a 32-bit TRACK_ID")
    return base


def link(observations: list[Observation]) -> list[Track]:
    """Assign every spot to a track (see the module docstring); observations in time order."""
    base = track_id_base(observations)
    tracks: list[Track] = []
    for obs in observations:
        candidates = []
        for track in tracks:
            last = track.members[-1]
            gap_days = (obs.date_obs - last.obs.date_obs).total_seconds() / 86400.0
            if last.lon is None or gap_days <= 0 or gap_days > MAX_GAP_HOURS / 24.0:
                continue
            lon = last.lon + carrington_drift_deg_per_day(last.lat) * gap_days
            for spot in obs.spots:
                if spot.lon is None:
                    continue
                d = angular_distance(last.lat, lon, spot.lat, spot.lon)
                if d <= LINK_RADIUS_DEG:
                    candidates.append((round(d, 9), track.track_id, spot.local_id, track, spot))
        candidates.sort(key=lambda c: c[:3])
        taken_tracks: set[int] = set()
        near: set[int] = set()
        for _d, tid, _k, track, spot in candidates:
            near.add(spot.local_id)
            if tid in taken_tracks or spot.track is not None:
                continue
            taken_tracks.add(tid)
            spot.track, spot.phenom = track, 0
            track.members.append(spot)
        for spot in obs.spots:
            if spot.track is None:
                track = Track(base[id(obs)] + spot.local_id, [spot])
                tracks.append(track)
                spot.track, spot.phenom = track, 2 if spot.local_id in near else 1
    ids = [t.track_id for t in tracks]
    assert len(set(ids)) == len(ids), "TRACK_ID collision"
    return tracks


# =============================================================================================
# Output
# =============================================================================================


def track_file_name(night: dt.date) -> str:
    return f"{CODE_NAME}_{FILE_VERSION}_{night:%Y%m%d}T000000_{OBS_TAG}_track.csv"


def frc_info_file_name() -> str:
    return f"{CODE_NAME}_{FILE_VERSION}_frc_info.csv"


def csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";", lineterminator="\n", quoting=csv.QUOTE_MINIMAL, quotechar='"')
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def track_rows(observations: list[Observation], night: dt.date, run_date: dt.datetime) -> list[list[str]]:
    name = track_file_name(night)
    rows = []
    for obs in observations:
        if obs.night != night:
            continue
        for spot in obs.spots:
            track = spot.track
            rows.append(
                [
                    str(spot.local_id),
                    str(track.track_id),
                    obs.date_obs.strftime(TIME_FMT),
                    spot.x_pix,
                    spot.y_pix,
                    str(spot.phenom),
                    "1" if track.members[0] is spot else "0",
                    str(min(10, len(track.members) - 1)),
                    name,
                    obs.feat_name,
                    run_date.strftime(TIME_FMT),
                ]
            )
    return rows


def write_atomic(path: str, data: bytes) -> None:
    """Write then rename, so a killed job never leaves a half file under the real name."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# =============================================================================================
# Command line
# =============================================================================================


def parse_time(text: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(text, TIME_FMT)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid time {text!r}: expected YYYY-MM-DDTHH:MM:SS (UTC)") from None


def parse_history(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of nights {text!r}: expected a whole number") from None
    if not 0 <= value <= 31:
        raise argparse.ArgumentTypeError(f"history must be 0 to 31 nights, got {value}")
    return value


def parse_archive_url(text: str) -> str:
    scheme = urllib.parse.urlsplit(text).scheme.lower()
    if scheme not in ("file", "http", "https", "ftp"):
        raise argparse.ArgumentTypeError(f"invalid archive URL {text!r}: expected file://, http(s):// or ftp://")
    return text.rstrip("/")


def parse_frc_name(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", text) or ".." in text:
        raise argparse.ArgumentTypeError(f"invalid FRC name {text!r}: lower-case letters, digits, . _ - only")
    return text


def parse_night(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a night (YYYY-MM-DD)") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demo_sunspot_tracking.py",
        description="Demo sunspot tracker: links the spots demo-sunspots published in the HFC archive, "
        "writes an SDOSS-format track file for the night of START.",
    )
    parser.add_argument(
        "-s", "--start", required=True, type=parse_time, help="start of the night (UTC); its date is the night"
    )
    parser.add_argument(
        "-e",
        "--end",
        required=True,
        type=parse_time,
        help="end of the window (UTC), after START; only checked: the night is START's date",
    )
    parser.add_argument("-o", "--outdir", required=True, help="output directory (created if needed)")
    parser.add_argument(
        "--archive-url",
        required=True,
        type=parse_archive_url,
        help="public base URL of the archive tree (file://, https://, ftp://)",
    )
    parser.add_argument(
        "--detector", default="demo-sunspots", type=parse_frc_name, help="name of the detector FRC"
    )
    parser.add_argument(
        "--detector-folder", default=None, type=parse_frc_name,
        help="the detector's folder in the archive (its archive_name; default: --detector)",
    )
    parser.add_argument(
        "--night", default=None, type=parse_night,
        help="the pipeline's night (YYYY-MM-DD), the key of the detector's manifests; default START's date. "
        "Give it when the FRCs run with a lag (lag_nights > 0): the window then starts before the night",
    )
    parser.add_argument(
        "--history-nights", default=1, type=parse_history, help="earlier nights read to continue tracks (default 1)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    night = args.night or args.start.date()
    nights = [night - dt.timedelta(days=k) for k in range(args.history_nights, -1, -1)]
    observations: list[Observation] = []
    notes = []
    for each in nights:
        manifest = read_manifest(args.archive_url, args.detector, each, args.detector_folder)
        where = manifest_url(args.archive_url, args.detector, each, args.detector_folder)
        if manifest is None:
            if each == night:
                raise TrackerError(
                    EXIT_NOT_PUBLISHED,
                    f"detector {args.detector} has not published night {each.isoformat()} (no manifest at {where})",
                )
            notes.append(f"{each.isoformat()}: no manifest (history skipped)")
            continue
        got = observations_of_night(args.archive_url, manifest, where, each)
        notes.append(f"{each.isoformat()}: {len(got)} observation(s) with spots")
        observations.extend(got)
    observations.sort(key=lambda o: (o.date_obs, o.feat_name))
    tracks = link(observations)

    rows = track_rows(observations, night, args.start)
    files = [frc_info_file_name(), track_file_name(night)]
    write_atomic(os.path.join(args.outdir, files[0]), csv_bytes(FRC_INFO_HEADER, [FRC_INFO_ROW]))
    write_atomic(os.path.join(args.outdir, files[1]), csv_bytes(TRACK_HEADER, rows))

    current = [o for o in observations if o.night == night]
    night_tracks = {s.track.track_id for o in current for s in o.spots}
    print(f"demo-sunspot-tracking {CODE_VERSION}: night {night.isoformat()} from {args.detector} at {args.archive_url}")
    for note in notes:
        print(f"  {note}")
    print(
        f"done: {len(current)} observation(s) with spots, {len(rows)} spot(s), {len(night_tracks)} track(s) this night "
        f"({len(observations)} observation(s), {len(tracks)} track(s) with history); "
        f"files written: {', '.join(files)}",
        flush=True,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 with a message naming the argument
    if args.end <= args.start:
        parser.error(f"argument -e/--end: {args.end:{TIME_FMT}} is not after -s/--start {args.start:{TIME_FMT}}")
    try:
        os.makedirs(args.outdir, exist_ok=True)
        if not os.access(args.outdir, os.W_OK | os.X_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        parser.error(f"argument -o/--outdir: cannot create or write {args.outdir!r}: {exc}")
    try:
        return run(args)
    except TrackerError as exc:
        print(f"demo_sunspot_tracking.py: error: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except Exception as exc:  # noqa: BLE001 - any failure must give a non-zero exit and a message
        print(f"demo_sunspot_tracking.py: error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
