"""Tests of the demo sunspot tracker FRC (site/frcs/demo_sunspot_tracking.py).

The tracker is a standalone stdlib-only script for the cluster; it is run here as a subprocess,
exactly as SLURM runs it, against a fake archive built from the REAL detector's output
(site/frcs/demo_sunspots.py) laid out and described by manifests like the publishing step does.
Both scripts are also imported by path: the detector for its seeded truth, the tracker for its
functions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from helpers import BAD_WINDOWS, FRCS, load_frc_program, read_csv

from hfc_tasks import products

TRACKER = FRCS / "demo_sunspot_tracking.py"
DETECTOR = FRCS / "demo_sunspots.py"
trk = load_frc_program("demo_sunspot_tracking")
ds = load_frc_program("demo_sunspots")

TRACK_HEADER = (
    "ID_SUNSPOT;TRACK_ID;DATE_OBS;FEAT_X_PIX;FEAT_Y_PIX;PHENOM;REF_FEAT;LVL_TRUST;TRACK_FILENAME;FEAT_FILENAME;RUN_DATE"
)
FRC_INFO = (
    "ID_FRC_INFO;INSTITUT;CODE;VERSION;FEATURE_NAME;TARGET_NAME;TARGET_CLASS;ENC_MET;PERSON;CONTACT;REFERENCE;URL\n"
    "1;OBSPM;DEMO-SUNSPOT-TRACKING;1.0.0;SUNSPOTS;SUN;STAR;NONE;HFC pipeline team;hfc@example.org;;\n"
)
FRC_INFO_NAME = "demosunspottracking_100_frc_info.csv"
DETECTOR_NAME = "demo-sunspots"
# 2024-01-05: spots seeded only on the far side (no feat file); 2024-01-07 and 2024-01-08: 5-8
# visible spots in each of the 6 observations. 2024-01-06 is never published.
NIGHTS = (dt.date(2024, 1, 5), dt.date(2024, 1, 7), dt.date(2024, 1, 8))


def track_name(night: dt.date) -> str:
    return f"demosunspottracking_100_{night:%Y%m%d}T000000_sdo_track.csv"


def run(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(TRACKER), *args], capture_output=True, text=True, timeout=300)


def track(archive: Path, out: Path, night: dt.date, *extra: str, python: str = sys.executable):
    start = dt.datetime.combine(night, dt.time())
    return run(
        "-s",
        f"{start:%Y-%m-%dT%H:%M:%S}",
        "-e",
        f"{start + dt.timedelta(days=1):%Y-%m-%dT%H:%M:%S}",
        "-o",
        str(out),
        "--archive-url",
        archive.as_uri(),
        *extra,
        python=python,
    )


def publish(root: Path, frc: str, night: dt.date, files: dict[str, bytes]) -> None:
    """Lay files out as the archive does and write the night's manifest (as transfer.py does)."""
    entries = []
    for name, data in sorted(files.items()):
        product = products.parse_product_name(name)
        rel = products.archive_relpath(frc, product, night, observatory="SDO", instrument="HMI")
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        entries.append(
            {
                "name": name,
                "kind": product.kind,
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "archive_path": rel,
                "url_base": products.url_join(root.as_uri(), str(Path(rel).parent)),
            }
        )
    manifest = {
        "format": "hfc-manifest/1",
        "frc": frc,
        "night": night.isoformat(),
        "product_format": "sdoss",
        "frc_version": "1.0.0",
        "archive_root": str(root),
        "public_url_base": root.as_uri(),
        "created": "2024-01-09T06:00:00Z",
        "files": sorted(entries, key=lambda e: (e["kind"] == "quicklook", e["name"])),
    }
    path = root / products.manifest_relpath(frc, frc, night)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """The archive after the detector's nights were run on the 'cluster' and published."""
    base = tmp_path_factory.mktemp("archive")
    root = base / "hfc"
    for night in NIGHTS:
        run_dir = base / "run" / night.strftime("%Y%m%d")
        start = dt.datetime.combine(night, dt.time())
        proc = subprocess.run(
            [
                sys.executable,
                str(DETECTOR),
                "-s",
                f"{start:%Y-%m-%dT%H:%M:%S}",
                "-e",
                f"{start + dt.timedelta(days=1):%Y-%m-%dT%H:%M:%S}",
                "-o",
                str(run_dir),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        publish(root, DETECTOR_NAME, night, {p.name: p.read_bytes() for p in run_dir.iterdir()})
    assert (root / "demo-sunspots" / "results" / "2024").is_dir()
    return root


@pytest.fixture(scope="module")
def night7(archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("night7")
    proc = track(archive, out, dt.date(2024, 1, 7))
    assert proc.returncode == 0, proc.stderr
    assert "2024-01-06: no manifest" in proc.stdout  # history is optional
    assert "6 observation(s)" in proc.stdout
    return out


@pytest.fixture(scope="module")
def night8(archive, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("night8")
    proc = track(archive, out, dt.date(2024, 1, 8))  # default: 1 night of history, 2024-01-07
    assert proc.returncode == 0, proc.stderr
    return out


def feat_rows(archive: Path, name: str) -> list[dict]:
    return read_csv(archive / DETECTOR_NAME / "results" / name.split("_")[2][:4] / name)[1]


def hours_since_1970(t: dt.datetime) -> int:
    return int((t - dt.datetime(1970, 1, 1)).total_seconds() // 3600)


def seeded_number(t: dt.datetime, row: dict) -> int:
    """The detector's seeded spot a feat row is (nearest expected centroid, as its own tests do)."""
    truth = ds.expected_detections(t)
    x, y = float(row["FEAT_X_PIX"]), float(row["FEAT_Y_PIX"])
    best = min(truth, key=lambda e: (e["x_pix"] - x) ** 2 + (e["y_pix"] - y) ** 2)
    assert (best["x_pix"] - x) ** 2 + (best["y_pix"] - y) ** 2 < 3.0**2
    return best["number"]


# ------------------------------------------------------------------ the files of one night


def test_track_file_of_a_night(archive, night7):
    night = dt.date(2024, 1, 7)
    assert sorted(p.name for p in night7.iterdir()) == sorted([FRC_INFO_NAME, track_name(night)])
    assert (night7 / FRC_INFO_NAME).read_text() == FRC_INFO
    header, rows = read_csv(night7 / track_name(night))
    assert ";".join(header) == TRACK_HEADER
    # one row per spot of the night's observations, each naming a real spot of a feat file
    feats = sorted((archive / DETECTOR_NAME / "results" / "2024").glob("demosunspots_100_20240107T*_feat.csv"))
    assert len(feats) == 6
    expected = {}
    for path in feats:
        for row in read_csv(path)[1]:
            expected[(path.name, row["ID_SUNSPOT"])] = row
    assert len(rows) == len(expected)
    assert {(r["FEAT_FILENAME"], r["ID_SUNSPOT"]) for r in rows} == set(expected)
    for row in rows:
        feat = expected[(row["FEAT_FILENAME"], row["ID_SUNSPOT"])]
        assert (row["FEAT_X_PIX"], row["FEAT_Y_PIX"]) == (feat["FEAT_X_PIX"], feat["FEAT_Y_PIX"])
        stamp = row["FEAT_FILENAME"].split("_")[2]
        assert row["DATE_OBS"] == dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S").strftime("%Y-%m-%dT%H:%M:%S")
        assert row["TRACK_FILENAME"] == track_name(night)
        assert row["RUN_DATE"] == "2024-01-07T00:00:00"
        assert row["PHENOM"] in ("0", "1", "2")
        assert row["REF_FEAT"] in ("0", "1")
        assert 0 <= int(row["LVL_TRUST"]) <= 10
        assert 0 < int(row["TRACK_ID"]) < 2**31  # the catalogue's track_id is a 32-bit integer
    # rows in observation order
    assert [r["DATE_OBS"] for r in rows] == sorted(r["DATE_OBS"] for r in rows)


def test_each_seeded_spot_is_one_track(archive, night7, night8):
    # The detector's spots of one day rotate slowly: each seeded spot must form exactly one track
    # over the night's 6 observations, and different spots different tracks.
    for night, out in ((dt.date(2024, 1, 7), night7), (dt.date(2024, 1, 8), night8)):
        rows = read_csv(out / track_name(night))[1]
        by_seed = defaultdict(set)
        by_track = defaultdict(set)
        for row in rows:
            t = dt.datetime.strptime(row["DATE_OBS"], "%Y-%m-%dT%H:%M:%S")
            seed = seeded_number(t, feat_rows(archive, row["FEAT_FILENAME"])[int(row["ID_SUNSPOT"]) - 1])
            by_seed[seed].add(row["TRACK_ID"])
            by_track[row["TRACK_ID"]].add(seed)
        assert all(len(ids) == 1 for ids in by_seed.values()), by_seed
        assert all(len(seeds) == 1 for seeds in by_track.values()), by_track
        assert len(by_seed) >= 5


def test_track_id_phenom_ref_feat_and_trust(night7):
    # Night 2024-01-07 has no published history: every track starts this night, at its first
    # member, whose TRACK_ID is (hours since 1970) * 1000 + ID_SUNSPOT.
    rows = read_csv(night7 / track_name(dt.date(2024, 1, 7)))[1]
    tracks = defaultdict(list)
    for row in rows:
        tracks[row["TRACK_ID"]].append(row)
    for track_id, members in tracks.items():
        first = members[0]
        t = dt.datetime.strptime(first["DATE_OBS"], "%Y-%m-%dT%H:%M:%S")
        assert int(track_id) == hours_since_1970(t) * 1000 + int(first["ID_SUNSPOT"])
        assert [m["REF_FEAT"] for m in members] == ["1"] + ["0"] * (len(members) - 1)
        assert first["PHENOM"] in ("1", "2")
        assert all(m["PHENOM"] == "0" for m in members[1:])
        assert {m["LVL_TRUST"] for m in members} == {str(min(10, len(members) - 1))}
        assert len({m["FEAT_FILENAME"] for m in members}) == len(members)  # one spot per observation
    # 2024-01-07T00:00 is hour 473496 since 1970: the spots of the first observation start tracks
    assert hours_since_1970(dt.datetime(2024, 1, 7)) == 473496
    assert {r["TRACK_ID"] for r in rows if r["DATE_OBS"] == "2024-01-07T00:00:00"} == {
        str(473496000 + int(r["ID_SUNSPOT"])) for r in rows if r["DATE_OBS"] == "2024-01-07T00:00:00"
    }
    assert max(len(m) for m in tracks.values()) == 6


def test_rerun_is_byte_identical(archive, night7, tmp_path):
    proc = track(archive, tmp_path, dt.date(2024, 1, 7))
    assert proc.returncode == 0, proc.stderr
    for name in (FRC_INFO_NAME, track_name(dt.date(2024, 1, 7))):
        assert (tmp_path / name).read_bytes() == (night7 / name).read_bytes()
    # RUN_DATE is START, not the wall clock: another START on the same night changes only it
    proc = run(
        "-s",
        "2024-01-07T06:00:00",
        "-e",
        "2024-01-08T00:00:00",
        "-o",
        str(tmp_path / "b"),
        "--archive-url",
        archive.as_uri(),
    )
    assert proc.returncode == 0, proc.stderr
    first = read_csv(night7 / track_name(dt.date(2024, 1, 7)))[1]
    second = read_csv(tmp_path / "b" / track_name(dt.date(2024, 1, 7)))[1]
    assert {r["RUN_DATE"] for r in second} == {"2024-01-07T06:00:00"}
    assert [{**r, "RUN_DATE": ""} for r in first] == [{**r, "RUN_DATE": ""} for r in second]


def test_next_night_with_history_gives_the_same_track_ids(archive, night7, night8):
    # The 2024-01-08 run reads 2024-01-07 as history: the spots of 2024-01-07 get the very track
    # ids the 2024-01-07 file gave them (checked through the module, as the file holds only the
    # current night's rows) ...
    url = archive.as_uri()
    observations = []
    for night in (dt.date(2024, 1, 7), dt.date(2024, 1, 8)):
        manifest = trk.read_manifest(url, DETECTOR_NAME, night)
        observations += trk.observations_of_night(url, manifest, "test", night)
    observations.sort(key=lambda o: (o.date_obs, o.feat_name))
    trk.link(observations)
    with_history = {
        (o.feat_name, str(s.local_id)): str(s.track.track_id)
        for o in observations
        if o.night == dt.date(2024, 1, 7)
        for s in o.spots
    }
    rows7 = read_csv(night7 / track_name(dt.date(2024, 1, 7)))[1]
    assert with_history == {(r["FEAT_FILENAME"], r["ID_SUNSPOT"]): r["TRACK_ID"] for r in rows7}
    # ... and the module reproduces the 2024-01-08 file written by the CLI.
    rows8 = read_csv(night8 / track_name(dt.date(2024, 1, 8)))[1]
    assert {
        (o.feat_name, str(s.local_id)): str(s.track.track_id)
        for o in observations
        if o.night == dt.date(2024, 1, 8)
        for s in o.spots
    } == {(r["FEAT_FILENAME"], r["ID_SUNSPOT"]): r["TRACK_ID"] for r in rows8}


def test_history_nights_zero(archive, night8, tmp_path):
    # The detector seeds new spots every day; by chance a 2024-01-08 spot lies within the link
    # radius of where a 2024-01-07 spot was, so with history it continues that track. Without
    # history, the same spots form the same tracks, but every track starts this night.
    proc = track(archive, tmp_path, dt.date(2024, 1, 8), "--history-nights", "0")
    assert proc.returncode == 0, proc.stderr
    name = track_name(dt.date(2024, 1, 8))
    alone = read_csv(tmp_path / name)[1]
    with_history = read_csv(night8 / name)[1]
    key = [(r["FEAT_FILENAME"], r["ID_SUNSPOT"]) for r in alone]
    assert key == [(r["FEAT_FILENAME"], r["ID_SUNSPOT"]) for r in with_history]

    def partition(rows):
        groups = defaultdict(set)
        for r in rows:
            groups[r["TRACK_ID"]].add((r["FEAT_FILENAME"], r["ID_SUNSPOT"]))
        return {frozenset(g) for g in groups.values()}

    assert partition(alone) == partition(with_history)
    night_base = hours_since_1970(dt.datetime(2024, 1, 8)) * 1000
    continued = {r["TRACK_ID"] for r in with_history if int(r["TRACK_ID"]) < night_base}
    assert continued  # the history is used
    assert all(int(r["TRACK_ID"]) > night_base for r in alone)
    for a, h in zip(alone, with_history, strict=True):
        if h["TRACK_ID"] in continued:
            assert a["TRACK_ID"] != h["TRACK_ID"]
            assert h["REF_FEAT"] == "0" and h["PHENOM"] == "0"
        else:
            assert a == h


def test_night_without_spots_gives_only_the_header(archive, tmp_path):
    proc = track(archive, tmp_path, dt.date(2024, 1, 5), "--history-nights", "0")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / track_name(dt.date(2024, 1, 5))).read_text() == TRACK_HEADER + "\n"
    assert (tmp_path / FRC_INFO_NAME).read_text() == FRC_INFO
    assert "0 observation(s) with spots, 0 spot(s), 0 track(s)" in proc.stdout


# ------------------------------------------------------------------ tracking on hand-made files

MINI_FEAT_HEADER = (
    "ID_SUNSPOT;OBSERVATIONS_ID_IC;FEAT_X_PIX;FEAT_Y_PIX;FEAT_CARR_LONG_DEG;FEAT_CARR_LAT_DEG;FEAT_AREA_DEG2"
)


def mini_feat(*spots: tuple[float, float]) -> bytes:
    # columns in another order than the detector's, CRLF line ends: read by header name
    lines = [MINI_FEAT_HEADER]
    for k, (lon, lat) in enumerate(spots, start=1):
        lines.append(f"{k};1;{100 + k};{200 + k};{lon};{lat};5.0")
    return ("\r\n".join(lines) + "\r\n").encode()


def mini_init(date_obs: str) -> bytes:
    return f"ID_OBSERVATIONS;DATE_OBS\r\n1;{date_obs}\r\n2;{date_obs}\r\n".encode()


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    """Two nights of hand-made feat files: a spot crossing midnight, the 360/0 longitude wrap, a
    split; the 20:00 observation has an init file whose DATE_OBS (20:00:45) is not its name's."""
    root = tmp_path_factory.mktemp("mini") / "hfc"
    publish(
        root,
        DETECTOR_NAME,
        dt.date(2024, 3, 1),
        {
            "demosunspots_100_20240301T160000_sdo_feat.csv": mini_feat((120.0, 10.0), (359.8, -15.0)),
            "demosunspots_100_20240301T200000_sdo_feat.csv": mini_feat((359.9, -15.0), (120.1, 10.0)),
            "demosunspots_100_20240301T200000_sdo_init.csv": mini_init("2024-03-01T20:00:45.2"),
            "demosunspots_100_frc_info.csv": b"ID_FRC_INFO\n1\n",
        },
    )
    publish(
        root,
        DETECTOR_NAME,
        dt.date(2024, 3, 2),
        {
            # spot 1 continues (120, 10); spot 2 crosses 360 -> 0.1; spot 3 is new; spot 4 is
            # 1.5 deg from spot 1's track but spot 1 is closer: a fragment
            "demosunspots_100_20240302T000000_sdo_feat.csv": mini_feat(
                (120.2, 10.0), (0.1, -15.0), (200.0, 20.0), (121.5, 10.5)
            ),
            "demosunspots_100_20240302T040000_sdo_feat.csv": mini_feat((120.3, 10.0)),
        },
    )
    return root


def test_tracks_continue_across_midnight_and_the_360_wrap(mini, tmp_path):
    proc = track(mini, tmp_path, dt.date(2024, 3, 2))
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / track_name(dt.date(2024, 3, 2)))[1]
    got = [(r["DATE_OBS"], r["ID_SUNSPOT"], r["TRACK_ID"], r["PHENOM"], r["REF_FEAT"], r["LVL_TRUST"]) for r in rows]
    h16 = hours_since_1970(dt.datetime(2024, 3, 1, 16))
    assert got == [
        ("2024-03-02T00:00:00", "1", str(h16 * 1000 + 1), "0", "0", "3"),  # began 2024-03-01T16, spot 1
        ("2024-03-02T00:00:00", "2", str(h16 * 1000 + 2), "0", "0", "2"),  # across the 360/0 wrap
        ("2024-03-02T00:00:00", "3", str((h16 + 8) * 1000 + 3), "1", "1", "0"),  # new spot
        ("2024-03-02T00:00:00", "4", str((h16 + 8) * 1000 + 4), "2", "1", "0"),  # fragment
        ("2024-03-02T04:00:00", "1", str(h16 * 1000 + 1), "0", "0", "3"),
    ]
    assert {r["FEAT_X_PIX"] for r in rows if r["ID_SUNSPOT"] == "1"} == {"101"}

    # without history the same spots start their own tracks this night
    proc = track(mini, tmp_path / "h0", dt.date(2024, 3, 2), "--history-nights", "0")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / "h0" / track_name(dt.date(2024, 3, 2)))[1]
    assert [(r["ID_SUNSPOT"], r["TRACK_ID"], r["PHENOM"], r["REF_FEAT"]) for r in rows][:2] == [
        ("1", str((h16 + 8) * 1000 + 1), "1", "1"),
        ("2", str((h16 + 8) * 1000 + 2), "1", "1"),
    ]


def test_date_obs_from_the_init_file_else_the_file_name(mini, tmp_path):
    proc = track(mini, tmp_path, dt.date(2024, 3, 1), "--history-nights", "0")
    assert proc.returncode == 0, proc.stderr
    rows = read_csv(tmp_path / track_name(dt.date(2024, 3, 1)))[1]
    assert [r["DATE_OBS"] for r in rows] == ["2024-03-01T16:00:00"] * 2 + ["2024-03-01T20:00:45"] * 2
    # 20:00 links to 16:00 (longitude 359.8 -> 359.9, 120.0 -> 120.1) although the ids swapped
    assert rows[2]["TRACK_ID"] == rows[1]["TRACK_ID"] and rows[3]["TRACK_ID"] == rows[0]["TRACK_ID"]


def test_angular_distance_and_drift():
    assert trk.angular_distance(0.0, 359.5, 0.0, 0.5) == pytest.approx(1.0)
    assert trk.angular_distance(60.0, 0.0, 60.0, 180.0) == pytest.approx(60.0)
    assert trk.angular_distance(10.0, 20.0, 10.0, 20.0) == 0.0
    # spots drift slowly in the Carrington frame: faster than it at the equator, slower at 35 deg
    assert 0.4 < trk.carrington_drift_deg_per_day(0.0) < 0.6
    assert -0.6 < trk.carrington_drift_deg_per_day(35.0) < -0.3


# ------------------------------------------------------------------ failures


def test_missing_manifest_of_the_night_exits_3(archive, tmp_path):
    out = tmp_path / "out"
    proc = track(archive, out, dt.date(2024, 1, 6))
    assert proc.returncode == 3
    url = f"{archive.as_uri()}/demo-sunspots/manifests/demo-sunspots/20240106.json"
    assert f"detector demo-sunspots has not published night 2024-01-06 (no manifest at {url})" in proc.stderr
    assert not list(out.glob("*.csv"))


def test_other_detector_name_is_used_in_the_paths(archive, tmp_path):
    proc = track(archive, tmp_path, dt.date(2024, 1, 7), "--detector", "demo-sunspots-v2")
    assert proc.returncode == 3
    assert "detector demo-sunspots-v2 has not published night 2024-01-07" in proc.stderr
    assert "/demo-sunspots-v2/manifests/demo-sunspots-v2/20240107.json" in proc.stderr


def test_sha256_mismatch_exits_4_naming_the_file(archive, tmp_path):
    copy = tmp_path / "hfc"
    shutil.copytree(archive, copy)
    manifest = json.loads((copy / "demo-sunspots" / "manifests" / "demo-sunspots" / "20240107.json").read_text())
    for entry in manifest["files"]:
        entry["url_base"] = entry["url_base"].replace(archive.as_uri(), copy.as_uri())
    (copy / "demo-sunspots" / "manifests" / "demo-sunspots" / "20240107.json").write_text(json.dumps(manifest))
    victim = "demosunspots_100_20240107T080000_sdo_feat.csv"
    path = copy / "demo-sunspots" / "results" / "2024" / victim
    path.write_bytes(path.read_bytes().replace(b";1;1;2;", b";1;1;3;", 1))  # same size, other bytes
    proc = track(copy, tmp_path / "out", dt.date(2024, 1, 7))
    assert proc.returncode == 4, proc.stderr
    assert victim in proc.stderr and "sha256" in proc.stderr
    assert not list((tmp_path / "out").glob("*.csv"))
    # a listed file that is gone is the same kind of failure
    path.unlink()
    proc = track(copy, tmp_path / "out", dt.date(2024, 1, 7))
    assert proc.returncode == 4
    assert victim in proc.stderr and "missing" in proc.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        *BAD_WINDOWS,
        (["-e", "2024-01-02T00:00:00"], "-s/--start"),
        (["-s", "2024-01-01T00:00:00", "-e", "2024-01-02T00:00:00", "--history-nights", "-1"], "--history-nights"),
        (["-s", "2024-01-01T00:00:00", "-e", "2024-01-02T00:00:00", "--history-nights", "x"], "--history-nights"),
        (["-s", "2024-01-01T00:00:00", "-e", "2024-01-02T00:00:00", "--detector", "../etc"], "--detector"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(args, named, archive, tmp_path):
    proc = run(*args, "-o", str(tmp_path / "out"), "--archive-url", archive.as_uri())
    assert proc.returncode == 2
    assert named in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("url", ["/srv/hfc", "sftp://host/hfc", "archive"])
def test_archive_url_needs_a_scheme(url, tmp_path):
    proc = run("-s", "2024-01-07T00:00:00", "-e", "2024-01-08T00:00:00", "-o", str(tmp_path), "--archive-url", url)
    assert proc.returncode == 2
    assert "--archive-url" in proc.stderr


def test_missing_required_arguments_exit_2(tmp_path):
    proc = run("-s", "2024-01-07T00:00:00", "-e", "2024-01-08T00:00:00", "-o", str(tmp_path))
    assert proc.returncode == 2
    assert "--archive-url" in proc.stderr


# ------------------------------------------------------------------ the cluster's interpreter


def test_runs_with_debian_python_like_on_the_cluster(archive, night8, tmp_path):
    # No skip: the cluster runs /usr/bin/python3 (Debian, stdlib only); if it is missing the
    # site is broken and this must fail.
    proc = track(archive, tmp_path, dt.date(2024, 1, 8), python="/usr/bin/python3")
    assert proc.returncode == 0, proc.stderr
    for name in (FRC_INFO_NAME, track_name(dt.date(2024, 1, 8))):
        assert (tmp_path / name).read_bytes() == (night8 / name).read_bytes()


def test_detector_folder_names_the_detectors_archive_folder(archive, tmp_path):
    """The detector's manifest is its own, in its archive folder: <folder>/manifests/<detector>/."""
    proc = track(archive, tmp_path, dt.date(2024, 1, 7), "--detector", "x-det", "--detector-folder", "shared")
    assert proc.returncode == 3
    assert "/shared/manifests/x-det/20240107.json" in proc.stderr


def test_a_lagged_window_reads_the_pipelines_night(archive, night7, tmp_path):
    # With lag_nights: 1 the pipeline's night 2024-01-07 runs over the window of 2024-01-06, and
    # the detector's manifests are keyed by the pipeline's night: --night says which one. Without
    # it the tracker takes the window's date and finds no manifest (exit 3, the multihost finding).
    out = tmp_path / "lagged"
    without = track(archive, out, dt.date(2024, 1, 6))
    assert without.returncode == 3
    proc = track(archive, out, dt.date(2024, 1, 6), "--night", "2024-01-07")
    assert proc.returncode == 0, proc.stderr
    assert "night 2024-01-07" in proc.stdout
    header, rows = read_csv(out / track_name(dt.date(2024, 1, 7)))
    _, same_night = read_csv(night7 / track_name(dt.date(2024, 1, 7)))
    # Same tracks and spots as the un-lagged run of that night; only RUN_DATE (the window's start) differs.
    strip = [{k: v for k, v in r.items() if k != "RUN_DATE"} for r in rows]
    assert strip == [{k: v for k, v in r.items() if k != "RUN_DATE"} for r in same_night]
    assert {r["RUN_DATE"] for r in rows} == {"2024-01-06T00:00:00"}


def test_night_must_be_a_date(archive, tmp_path):
    proc = track(archive, tmp_path, dt.date(2024, 1, 7), "--night", "2024-13-01")
    assert proc.returncode == 2
    assert "--night" in proc.stderr and "'2024-13-01' is not a night" in proc.stderr
