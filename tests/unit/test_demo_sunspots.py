"""Tests of the demo sunspot FRC (site/frcs/demo_sunspots.py).

The program is a standalone script for the cluster (Debian python3 + numpy + Pillow), so it is
imported by path here, and also run as a subprocess exactly as SLURM runs it.
"""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import numpy as np
import pytest
from helpers import BAD_WINDOWS, a_spotted_night, catalogue_columns, load_frc_program, read_csv
from PIL import Image

ds = load_frc_program("demo_sunspots")
SCRIPT = Path(ds.__file__)

# Nights chosen to cover: spots behind the limb (2024-01-07: 8 seeded, 5-6 visible), small
# limb spots of ~50 px (2024-02-12), both hemispheres and B0 of either sign.
TRUTH_TIMES = (
    [dt.datetime(2024, 1, 7, h) for h in range(0, 24, 4)]
    + [dt.datetime(2024, 2, 12, h) for h in range(0, 24, 4)]
    + [dt.datetime(2020, 9, 7, 0), dt.datetime(2020, 9, 7, 12), dt.datetime(2024, 3, 1, 8)]
)


def run(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    """One 24-h night written by the CLI, as the SLURM job writes it."""
    out = tmp_path_factory.mktemp("night") / "run"
    proc = run("-s", "2024-01-07T00:00:00", "-e", "2024-01-08T00:00:00", "-c", "14400", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("spot(s)") >= 6
    return out


# ------------------------------------------------------------------ ephemeris and time


def test_ephemeris_reproduces_meeus_example():
    # Meeus, Astronomical Algorithms, example 29.a: 1992 Oct 13.0 -> B0 = 5.99, L0 = 238.63 deg.
    eph = ds.sun_ephemeris(dt.datetime(1992, 10, 13))
    assert eph.b0_deg == pytest.approx(5.99, abs=0.01)
    assert eph.l0_deg == pytest.approx(238.63, abs=0.02)


def test_carrington_rotation_number_changes_when_l0_wraps():
    # CR 2282 began on 2024 Mar 12 (L0 passes 360 -> 0 then).
    assert ds.sun_ephemeris(dt.datetime(2024, 3, 1)).carrington_rotation == 2281
    assert ds.sun_ephemeris(dt.datetime(2024, 3, 14)).carrington_rotation == 2282
    t = dt.datetime(2024, 3, 10)
    previous = ds.sun_ephemeris(t)
    for _ in range(6 * 24):
        t += dt.timedelta(minutes=30)
        eph = ds.sun_ephemeris(t)
        if eph.l0_deg > previous.l0_deg:  # wrapped
            assert eph.carrington_rotation == previous.carrington_rotation + 1
        else:
            assert eph.carrington_rotation == previous.carrington_rotation
        previous = eph
    assert previous.carrington_rotation == 2282


def test_julian_day_parts_are_exact():
    assert ds.julian_day_parts(dt.datetime(2000, 1, 1, 12)) == (2451545, 0.0)
    assert ds.julian_day_parts(dt.datetime(2024, 3, 1)) == (2460370, 0.5)
    assert ds.julian_day_parts(dt.datetime(2024, 3, 1, 18)) == (2460371, 0.25)


def test_heliographic_round_trip():
    for lon, lat, b0 in ((0.0, 0.0, 0.0), (-40.0, 20.0, 7.0), (60.0, -30.0, -7.2), (85.0, 10.0, 3.0)):
        x, y, z = ds.hg_to_disk(lon, lat, b0)
        assert z > 0
        back = ds.disk_to_hg(x, y, b0)
        assert back == pytest.approx((lon, lat), abs=1e-6)


# ------------------------------------------------------------------ image algorithms


def _bfs_partition(mask: np.ndarray) -> set[frozenset]:
    seen = np.zeros_like(mask)
    parts = set()
    h, w = mask.shape
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if seen[y0, x0]:
            continue
        comp, queue = [], deque([(y0, x0)])
        seen[y0, x0] = True
        while queue:
            y, x = queue.popleft()
            comp.append((int(y), int(x)))
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    ny, nx = y + dy, x + dx
                    if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
        parts.add(frozenset(comp))
    return parts


@pytest.mark.parametrize("density", [0.3, 0.45, 0.6])
def test_label8_matches_breadth_first_search(density):
    rng = np.random.default_rng(7)
    mask = rng.random((80, 90)) < density
    labels, count = ds.label8(mask)
    expected = _bfs_partition(mask)
    assert count == len(expected)
    got = {frozenset(zip(*[a.tolist() for a in np.nonzero(labels == k)], strict=True)) for k in range(1, count + 1)}
    assert got == expected
    assert (labels > 0).sum() == mask.sum()
    # labels follow the raster order of each component's first pixel
    first = [np.flatnonzero((labels == k).reshape(-1))[0] for k in range(1, count + 1)]
    assert first == sorted(first)


def test_label8_joins_diagonals_and_handles_empty():
    mask = np.zeros((5, 5), dtype=bool)
    assert ds.label8(mask)[1] == 0
    mask[0, 0] = mask[1, 1] = mask[2, 2] = mask[0, 4] = mask[1, 3] = True
    labels, count = ds.label8(mask)
    assert count == 1  # (0,0)-(1,1)-(2,2) and (2,2)-(1,3)-(0,4) all touch diagonally


def test_chain_code_of_a_square_and_a_diagonal():
    square = np.ones((3, 3), dtype=bool)
    x0, y0, codes = ds.trace_chain_code(square)
    # start: northernmost row (y=2), smallest x; counter-clockwise: S, S, E, E, N, N, W, W
    assert (x0, y0) == (0, 2)
    assert codes == "66002244"
    diagonal = np.eye(3, dtype=bool)
    x0, y0, codes = ds.trace_chain_code(diagonal)
    assert (x0, y0) == (2, 2)
    assert codes == "5511"
    assert ds.trace_chain_code(np.ones((1, 1), dtype=bool)) == (0, 0, "")


def test_raster_scan_encoding():
    mask = np.array([[1, 1, 0], [0, 1, 1]], dtype=bool)
    assert ds.raster_scan(mask) == [0, 2, 2, 2]
    assert ds.raster_scan(np.array([[0, 1]], dtype=bool)) == [1, 1]


# ------------------------------------------------------------------ detection against the truth


def _detect(t: dt.datetime):
    continuum, magnetogram, geom = ds.synthesize(t)
    return ds.detect(continuum, magnetogram, t, geom.cdelt), geom


@pytest.mark.parametrize("t", TRUTH_TIMES, ids=lambda t: t.strftime("%Y%m%dT%H"))
def test_detection_finds_the_seeded_spots(t):
    det, geom = _detect(t)
    truth = ds.expected_detections(t)
    assert len(det.spots) == len(truth)
    # the measured Sun centre and radius agree with the true geometry
    assert det.center_x == pytest.approx(geom.center_x, abs=0.05)
    assert det.center_y == pytest.approx(geom.center_y, abs=0.05)
    assert det.radius_pix == pytest.approx(geom.radius_pix, abs=0.1)
    unmatched = list(det.spots)
    for expected in truth:

        def distance(spot, expected=expected):
            x = spot.row["FEAT_X_ARCSEC"] / ds.CDELT + det.center_x
            y = spot.row["FEAT_Y_ARCSEC"] / ds.CDELT + det.center_y
            return math.hypot(x - expected["x_pix"], y - expected["y_pix"])

        best = min(unmatched, key=distance)
        unmatched.remove(best)
        row = best.row
        assert distance(best) < 2.0
        assert abs(row["FEAT_X_PIX"] - expected["x_pix"]) <= 2.5
        assert abs(row["FEAT_AREA_PIX"] - expected["area_pix"]) <= max(0.15 * expected["area_pix"], 6)
        # the field of a spot has the sign of its seeded polarity
        assert math.copysign(1.0, row["FEAT_MEAN_BZ"]) == math.copysign(1.0, expected["b_peak_gauss"])
        if expected["complete"]:
            # foreshortening-corrected area = the seeded cap's true area (pixelisation of the
            # edge makes small spots less exact)
            tolerance = 0.04 if row["FEAT_AREA_PIX"] >= 200 else 0.08
            assert row["FEAT_AREA_MM2"] == pytest.approx(expected["true_area_mm2"], rel=tolerance)
        # mostly-visible spots: heliographic position of the centroid close to the seeded centre
        if expected["area_pix"] > 100 and abs(expected["hg_lon_deg"]) < 60:
            assert row["FEAT_HG_LONG_DEG"] == pytest.approx(expected["hg_lon_deg"], abs=1.0)
            assert row["FEAT_HG_LAT_DEG"] == pytest.approx(expected["hg_lat_deg"], abs=1.0)
            assert row["UMBRA_NUMBER"] == 1
            # umbra/spot area ratio = (umbra radius / penumbra radius)^2 of the seeded spot
            ratio = row["UMBRA_AREA_PIX"] / row["FEAT_AREA_PIX"]
            assert ratio == pytest.approx(expected["umbra_fraction"] ** 2, abs=0.05)
            assert 0.4 < row["FEAT_MEAN2QSUN"] < 0.75
        carr = (row["FEAT_HG_LONG_DEG"] + ds.sun_ephemeris(t).l0_deg) % 360.0
        assert row["FEAT_CARR_LONG_DEG"] == pytest.approx(carr, abs=1e-9)
    assert unmatched == []


def test_some_seeded_spots_are_not_visible():
    # The truth is not trivially "everything seeded": spots behind the limb are not expected.
    t = dt.datetime(2024, 1, 7, 12)
    assert len(ds.seeded_spots(t.date())) > len(ds.expected_detections(t)) > 0


def _nearest(det, expected):
    def distance(spot):
        x = spot.row["FEAT_X_ARCSEC"] / ds.CDELT + det.center_x
        y = spot.row["FEAT_Y_ARCSEC"] / ds.CDELT + det.center_y
        return math.hypot(x - expected["x_pix"], y - expected["y_pix"])

    return min(det.spots, key=distance).row


def test_spot_area_corrected_for_foreshortening():
    # The same seeded spot, measured twice on one day, keeps its area in Mm^2 while its pixel
    # area changes as it rotates; its longitude grows by the synodic rate.
    t1, t2 = dt.datetime(2024, 1, 7, 0), dt.datetime(2024, 1, 7, 20)
    (d1, _), (d2, _) = _detect(t1), _detect(t2)
    e1 = {e["number"]: e for e in ds.expected_detections(t1)}
    e2 = {e["number"]: e for e in ds.expected_detections(t2)}
    checked = 0
    for number in sorted(set(e1) & set(e2)):
        if not (e1[number]["complete"] and e2[number]["complete"]):
            continue
        a, b = _nearest(d1, e1[number]), _nearest(d2, e2[number])
        assert a["FEAT_AREA_PIX"] != b["FEAT_AREA_PIX"]
        assert b["FEAT_AREA_MM2"] == pytest.approx(a["FEAT_AREA_MM2"], rel=0.05)
        assert b["FEAT_AREA_DEG2"] == pytest.approx(a["FEAT_AREA_DEG2"], rel=0.05)
        lat = e1[number]["hg_lat_deg"]
        drift = ds.synodic_rate_deg_per_day(lat) * 20 / 24
        assert b["FEAT_HG_LONG_DEG"] - a["FEAT_HG_LONG_DEG"] == pytest.approx(drift, abs=0.5)
        checked += 1
    assert checked >= 2


def test_one_image_is_processed_well_under_a_second():
    t = dt.datetime(2024, 2, 12, 8)
    _detect(t)  # warm-up (imports, caches)
    start = time.perf_counter()
    continuum, magnetogram, geom = ds.synthesize(t)
    det = ds.detect(continuum, magnetogram, t, geom.cdelt)
    ds.quicklook_jpeg(continuum, det)
    assert time.perf_counter() - start < 1.0


# ------------------------------------------------------------------ the files of one night


def test_night_file_set(night):
    names = sorted(p.name for p in night.iterdir())
    stamps = [f"20240107T{h:02d}0000" for h in range(0, 24, 4)]
    expected = {"demosunspots_100_frc_info.csv", "demosunspots_100_sdo_observatory.csv"}
    for stamp in stamps:
        expected.add(f"demosunspots_100_{stamp}_sdo_init.csv")
        expected.add(f"demosunspots_100_{stamp}_sdo_feat.csv")  # every observation of this night has spots
    for h in range(0, 24, 4):
        expected.add(f"hmi.ic_45s.2024.01.07_{h:02d}_00_00_TAI.continuum.jpg")
    assert set(names) == expected
    assert not [n for n in names if n.endswith(".tmp")]


def test_night_metadata_files(night):
    header, rows = read_csv(night / "demosunspots_100_frc_info.csv")
    assert header == ds.FRC_INFO_HEADER and set(header) <= catalogue_columns("frc_info")
    assert len(rows) == 1
    assert rows[0]["ID_FRC_INFO"] == "1"
    assert (rows[0]["CODE"], rows[0]["VERSION"], rows[0]["FEATURE_NAME"]) == ("DEMO-SUNSPOTS", "1.0.0", "SUNSPOTS")
    assert rows[0]["ENC_MET"] == "RASTERSCAN/CHAINCODE"
    header, rows = read_csv(night / "demosunspots_100_sdo_observatory.csv")
    assert header == ds.OBSERVATORY_HEADER and set(header) <= catalogue_columns("observatory")
    assert [(r["ID_OBSERVATORY"], r["OBSERVAT"], r["INSTRUME"], r["TELESCOP"]) for r in rows] == [
        ("1", "SDO", "HMI", "Continuum"),
        ("2", "SDO", "HMI", "Magnetogram"),
    ]


def test_night_init_files(night):
    for h in range(0, 24, 4):
        t = dt.datetime(2024, 1, 7, h)
        header, rows = read_csv(night / f"demosunspots_100_{t:%Y%m%dT%H%M%S}_sdo_init.csv")
        assert header == ds.INIT_HEADER and set(header) <= catalogue_columns("init")
        assert len(rows) == 2
        ic, m = rows
        assert (ic["ID_OBSERVATIONS"], ic["OBSERVATORY_ID"], m["ID_OBSERVATIONS"], m["OBSERVATORY_ID"]) == (
            "1",
            "1",
            "2",
            "2",
        )
        for row in rows:
            assert row["DATE_OBS"] == t.strftime("%Y-%m-%dT%H:%M:%S")
            jd = int(row["JDINT"]) + float(row["JDFRAC"])
            assert jd == pytest.approx(2460316.5 + h / 24.0, abs=1e-7)
            assert row["C_ROTATION"] == "2279"
            assert row["QCLK_URL"] == ""
            assert float(row["R_SUN"]) == pytest.approx(ds.observation_geometry(t).radius_pix, abs=0.1)
        assert ic["FILENAME"] == f"hmi.ic_45s.2024.01.07_{h:02d}_00_00_TAI.continuum.fits"
        assert m["FILENAME"] == f"hmi.m_45s.2024.01.07_{h:02d}_00_00_TAI.magnetogram.fits"
        assert ic["QCLK_FNAME"] == f"hmi.ic_45s.2024.01.07_{h:02d}_00_00_TAI.continuum.jpg"
        assert (night / ic["QCLK_FNAME"]).is_file()
        assert m["QCLK_FNAME"] == ""
        assert ic["LOC_FILENAME"].endswith(ic["FILENAME"]) and ic["URL"].endswith(ic["FILENAME"])


def _decode_rs(rs: str, width: int, height: int) -> np.ndarray:
    runs = [int(v) for v in rs.split(",")]
    flat = np.concatenate([np.full(n, k % 2 == 1) for k, n in enumerate(runs)])
    assert flat.size == width * height
    return flat.reshape(height, width)


def test_night_feat_files(night):
    for h in range(0, 24, 4):
        t = dt.datetime(2024, 1, 7, h)
        name = f"demosunspots_100_{t:%Y%m%dT%H%M%S}_sdo_feat.csv"
        header, rows = read_csv(night / name)
        assert header == ds.FEAT_HEADER and set(header) == catalogue_columns("sdoss_feat")
        assert [r["ID_SUNSPOT"] for r in rows] == [str(i) for i in range(1, len(rows) + 1)]
        assert len(rows) == len(ds.expected_detections(t))
        for row in rows:
            assert (row["FRC_INFO_ID"], row["OBSERVATIONS_ID_IC"], row["OBSERVATIONS_ID_M"]) == ("1", "1", "2")
            assert row["FEAT_FILENAME"] == name
            assert row["RUN_DATE"] == t.strftime("%Y-%m-%dT%H:%M:%S")
            assert row["HELIO_SS_NUMBER"] == row["ID_SUNSPOT"]
            assert row["SNAPSHOT_FN"] == row["SNAPSHOT_PATH"] == ""
            # bounding box corners: 0=SE (xmin,ymin), 1=NE (xmin,ymax), 2=SW (xmax,ymin), 3=NW (xmax,ymax)
            x0, y0 = int(row["BR_X0_PIX"]), int(row["BR_Y0_PIX"])
            x3, y3 = int(row["BR_X3_PIX"]), int(row["BR_Y3_PIX"])
            assert (row["BR_X1_PIX"], row["BR_Y1_PIX"]) == (str(x0), str(y3))
            assert (row["BR_X2_PIX"], row["BR_Y2_PIX"]) == (str(x3), str(y0))
            assert x0 <= int(row["FEAT_X_PIX"]) <= x3 and y0 <= int(row["FEAT_Y_PIX"]) <= y3
            assert float(row["BR_HG_LONG0_DEG"]) < float(row["BR_HG_LONG2_DEG"])  # east < west
            assert float(row["BR_HG_LAT0_DEG"]) < float(row["BR_HG_LAT1_DEG"])  # south < north
            # the raster scan decodes to a mask of the spot's area that fills its bounding box
            mask = _decode_rs(row["RS"], x3 - x0 + 1, y3 - y0 + 1)
            assert int(row["RS_LENGTH"]) == len(row["RS"].split(","))
            assert mask.sum() == int(row["FEAT_AREA_PIX"])
            assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
            # the chain code walks the mask's boundary and closes on its start point
            assert int(row["CC_LENGTH"]) == len(row["CC"]) > 0
            x, y = int(row["CC_X_PIX"]) - x0, int(row["CC_Y_PIX"]) - y0
            assert y == mask.shape[0] - 1 and mask[y, x]
            padded = np.pad(mask, 1)
            visited = set()
            for code in row["CC"]:
                x += ds.CC_DX[int(code)]
                y += ds.CC_DY[int(code)]
                assert mask[y, x]
                assert not padded[y : y + 3, x : x + 3].all()  # a boundary pixel
                visited.add((x, y))
            assert (x, y) == (int(row["CC_X_PIX"]) - x0, int(row["CC_Y_PIX"]) - y0)
            assert {p[0] for p in visited} >= {0, mask.shape[1] - 1}
            assert {p[1] for p in visited} >= {0, mask.shape[0] - 1}
            # statistics are consistent with each other
            assert float(row["FEAT_MIN_INT"]) <= float(row["FEAT_MEAN_INT"]) <= float(row["FEAT_MAX_INT"])
            assert float(row["FEAT_MIN_BZ"]) <= float(row["FEAT_MEAN_BZ"]) <= float(row["FEAT_MAX_BZ"])
            assert float(row["FEAT_ABS_BZ"]) >= abs(float(row["FEAT_TOT_BZ"]))
            assert 0 <= int(row["UMBRA_AREA_PIX"]) < int(row["FEAT_AREA_PIX"])
            assert float(row["FEAT_AREA_MM2"]) == pytest.approx(
                float(row["FEAT_AREA_DEG2"]) * (ds.R_SUN_MM * math.pi / 180) ** 2, rel=1e-3
            )


def test_night_quicklooks_open_with_pillow(night):
    for path in night.glob("*.jpg"):
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.mode == "L"
            assert image.size == (512, 512)
            pixels = np.asarray(image)
        assert pixels[256, 256] > 150  # disk centre bright
        assert pixels[5, 5] < 20  # sky dark


def test_rerun_is_byte_identical(night, tmp_path):
    proc = run("-s", "2024-01-07T00:00:00", "-e", "2024-01-08T00:00:00", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    first = {p.name: p.read_bytes() for p in night.iterdir()}
    second = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert first == second


def test_observations_depend_on_time_not_window(night, tmp_path):
    # A window starting mid-night produces the same files for the same observation times.
    proc = run("-s", "2024-01-07T08:00:00", "-e", "2024-01-07T16:00:00", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in tmp_path.glob("*_init.csv"))
    assert names == ["demosunspots_100_20240107T080000_sdo_init.csv", "demosunspots_100_20240107T120000_sdo_init.csv"]
    for path in tmp_path.glob("*.csv"):
        assert path.read_bytes() == (night / path.name).read_bytes()


def test_night_without_visible_spots_has_no_feat_files(tmp_path):
    # 2024-01-05: two spots are seeded, both on the far side all day.
    assert ds.seeded_spots(dt.date(2024, 1, 5))
    proc = run("-s", "2024-01-05T00:00:00", "-e", "2024-01-06T00:00:00", "-o", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert len(list(tmp_path.glob("*_init.csv"))) == 6
    assert len(list(tmp_path.glob("*.jpg"))) == 6
    assert list(tmp_path.glob("*_feat.csv")) == []
    assert "[0, 0, 0, 0, 0, 0]" in proc.stdout


def test_stale_feat_file_is_removed(tmp_path, monkeypatch):
    t = dt.datetime(2024, 1, 7, 12)
    stale = tmp_path / "demosunspots_100_20240107T120000_sdo_feat.csv"
    stale.write_text("old\n")
    monkeypatch.setattr(ds, "seeded_spots", lambda day, salt="": [])
    count, written = ds.process_observation(t, str(tmp_path))
    assert count == 0
    assert not stale.exists()
    assert sorted(written) == [
        "demosunspots_100_20240107T120000_sdo_init.csv",
        "hmi.ic_45s.2024.01.07_12_00_00_TAI.continuum.jpg",
    ]


def test_seed_salt_changes_the_spots(tmp_path):
    day = dt.date(2024, 1, 7)
    assert ds.seeded_spots(day, "x") != ds.seeded_spots(day)
    proc = run("-s", "2024-01-07T00:00:00", "-e", "2024-01-07T00:00:01", "-o", str(tmp_path), "--seed-salt", "x")
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ command-line errors


@pytest.mark.parametrize(
    ("args", "named"),
    [
        *BAD_WINDOWS,
        (["-s", "2024-01-01T00:00:00", "-e", "2024-01-01T00:00:00"], "no observation"),
        (["-s", "2024-01-01T00:00:00", "-e", "2024-01-02T00:00:00", "-c", "0"], "-c/--cadence"),
        (["-s", "2024-01-01T00:00:00", "-e", "2024-01-02T00:00:00", "-c", "-60"], "-c/--cadence"),
        (["-s", "2024-01-01T00:00:00", "-e", "2024-01-02T00:00:00", "-c", "4h"], "-c/--cadence"),
        (["-e", "2024-01-02T00:00:00"], "-s/--start"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(args, named, tmp_path):
    proc = run(*args, "-o", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert named in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_uncreatable_outdir_exits_2(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    proc = run("-s", "2024-01-01T00:00:00", "-e", "2024-01-01T04:00:00", "-o", str(blocker / "sub"))
    assert proc.returncode == 2
    assert "-o/--outdir" in proc.stderr


# ------------------------------------------------------------------ nights without spots


def test_some_nights_have_no_visible_spot_and_tests_that_count_rows_never_draw_them():
    # Found by CI: test_scheduler_and_triggerer_restart_while_jobs_wait drew 2071-04-15, whose
    # seeded spots are all behind the limb at every observation; the night was right to load
    # no sunspot rows, the test was wrong to expect some.
    quiet = dt.date(2071, 4, 15)
    midnight = dt.datetime(quiet.year, quiet.month, quiet.day)
    assert ds.seeded_spots(quiet)
    assert not any(ds.expected_detections(midnight + dt.timedelta(hours=h)) for h in range(0, 24, 4))
    drawn = {a_spotted_night(quiet - dt.timedelta(days=1), 3) for _ in range(60)}
    assert drawn == {"2071-04-14", "2071-04-16"}
