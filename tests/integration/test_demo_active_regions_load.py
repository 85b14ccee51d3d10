"""The demo active-region FRC's files load into a real catalogue (fixture ``fresh_db``) through the
real loader, as the spoca-ar format the registry names, with no file rejected."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import psycopg
from catalogue_files import Archive

from hfc_tasks.products import parse_product_name

SCRIPT = Path(__file__).resolve().parents[2] / "site" / "frcs" / "demo_active_regions.py"
NIGHT = dt.date(2024, 3, 1)


def test_demo_active_regions_night_loads_with_no_rejection(fresh_db, tmp_path):
    out = tmp_path / "run"
    subprocess.run(
        [
            "/usr/bin/python3",
            "-I",
            "-S",
            str(SCRIPT),
            "-s",
            "2024-03-01T00:00:00",
            "-e",
            "2024-03-02T00:00:00",
            "-c",
            "7200",
            "-o",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    night = Archive("demo-active-regions", NIGHT, "spoca-ar", instrument_path="SDO/AIA")
    feat_rows = init_rows = 0
    for path in sorted(out.iterdir()):
        kind = parse_product_name(path.name).kind
        night.add(path.name, kind, path.read_bytes())
        lines = len(path.read_bytes().splitlines()) - 1
        feat_rows += lines if kind == "feat" else 0
        init_rows += lines if kind == "init" else 0
    assert init_rows == 24 and feat_rows > 0
    with psycopg.connect(fresh_db) as conn:
        report = night.load(conn)
        assert report.rejected == [], report
        assert report.status == "loaded"
        counts = {
            t: conn.execute(f"select count(*) from hfc.{t}").fetchone()[0]
            for t in ("observations", "activeregions", "observatory", "frc_info", "batch")
        }
        assert counts == {
            "observations": init_rows,
            "activeregions": feat_rows,
            "observatory": 2,
            "frc_info": 1,
            "batch": 1,
        }
        # the feature rows reach the users' view with their quicklook and observation
        n = conn.execute(
            "select count(*) from hfc.activeregions a join hfc.observations o on o.id_observations = a.observations_id "
            "where o.qclk_fname like 'aia.lev1.171A_%%.png' and a.feat_filename like 'demoar_100_%%_feat.csv'"
        ).fetchone()[0]
        assert n == feat_rows
