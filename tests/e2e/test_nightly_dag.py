"""The whole DAG, one night, against the real local site: SLURM, sshd/SFTP, PostgreSQL.

Runs ``airflow dags test`` exactly as ``make demo`` does, then checks what the night left
behind in the catalogue, on the archive and on the cluster; runs it again and checks that
nothing changed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import urllib.request
from pathlib import Path

import psycopg
import pytest
from helpers import dags_test

from hfc_tasks import products
from hfc_tasks.ops.localsite import slurm_conf_path
from hfc_tasks.registry import load_registry

pytestmark = [pytest.mark.site, pytest.mark.slow]
NIGHT = "2024-03-05"


def catalogue_counts(dsn: str, night: str) -> dict:
    """What the night holds in the catalogue: the users' view rows and each FRC batch's row counts
    (this night only, so other tests' nights never change the figures)."""
    with psycopg.connect(dsn) as conn:
        spots = conn.execute(
            "select count(*) from hfc.view_sp_hqi where date_obs >= %s::date and date_obs < %s::date + 1",
            (night, night),
        ).fetchone()[0]
        batches = dict(conn.execute(
            "select frc, row_counts::text from hfc.batch where night = %s order by frc", (night,)
        ).fetchall())
    return {"view_sp_hqi": spots, "batches": batches}


def test_one_night_end_to_end_and_rerun(site, airflow_db):
    reg = load_registry()
    site_cfg = reg.site()
    frc = reg.frc("demo-sunspots")
    night = products.parse_night(NIGHT)
    dsn = site["HFC_CATALOGUE_DSN"]

    dags_test(NIGHT)

    # Archive: every manifest file exists with the manifest's sha256.
    manifest_path = Path(site_cfg.archive_root) / products.manifest_relpath(frc.archive_dir, frc.name, night)
    manifest = json.loads(manifest_path.read_text())
    kinds = [f["kind"] for f in manifest["files"]]
    assert kinds.count("init") == 6 and kinds.count("quicklook") >= 6
    assert {"frc_info", "observatory"} <= set(kinds)
    expected_spots = 0
    for entry in manifest["files"]:
        data = (Path(site_cfg.archive_root) / entry["archive_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["name"]
        if entry["kind"] == "feat":
            expected_spots += sum(1 for _ in csv.DictReader(io.StringIO(data.decode()), delimiter=";"))
        if entry["kind"] == "quicklook":
            assert "/images/full/SDO/HMI/2024/" in entry["archive_path"]
    assert expected_spots > 0

    # Cluster: the run folder holds no products any more (only the SLURM output file).
    run_dir = Path(products.run_dir(site_cfg.products_root, frc.name, night))
    left = [p.name for p in run_dir.iterdir() if not p.name.endswith(".out")]
    assert left == []
    assert any(p.name.startswith(f"hfc.{frc.name}.{night:%Y%m%d}.") for p in run_dir.iterdir())

    # Catalogue: the night's sunspots are in the users' view; quicklooks open from here.
    first = catalogue_counts(dsn, NIGHT)
    assert first["view_sp_hqi"] == expected_spots
    assert set(first["batches"]) == {"demo-sunspots", "demo-sunspot-tracking"}
    with psycopg.connect(dsn) as conn:
        urls = conn.execute(
            "select distinct qclk_url || '/' || qclk_fname from hfc.view_sp_hqi "
            "where date_obs >= %s::date and date_obs < %s::date + 1",
            (NIGHT, NIGHT),
        ).fetchall()
        batch = conn.execute(
            "select slurm_job_id, manifest_sha256 from hfc.batch where frc = %s and night = %s", (frc.name, night)
        ).fetchone()
    assert urls
    for (url,) in urls:
        with urllib.request.urlopen(url) as resp:
            assert resp.read(3) == b"\xff\xd8\xff"  # a JPEG
    assert batch is not None and batch[0] == manifest["slurm_job_id"]
    assert batch[1] == hashlib.sha256(manifest_path.read_bytes()).hexdigest()

    # SLURM: the job ended COMPLETED.
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", manifest["slurm_job_id"], "-o", "State,ExitCode"],
        capture_output=True, text=True, check=True, env={**os.environ, "SLURM_CONF": str(slurm_conf_path())},
    ).stdout.strip()
    assert out.splitlines()[-1] == "COMPLETED|0:0"

    # Again, same night: a new job recomputes it, the catalogue keeps the same counts.
    dags_test(NIGHT)
    assert catalogue_counts(dsn, NIGHT) == first
