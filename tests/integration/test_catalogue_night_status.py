"""Issue 16, catalogue side: a night without data, and a night that is not clean.

The archive stage writes a manifest with no files and ``"no_data": true`` when the FRC's job
ran and wrote nothing (item 6), lists ``unmatched`` run-folder files (item 5) and an earlier
job's ``stale`` files (item 7). The catalogue records them on the batch: status ``no_data`` and
``hfc.batch.issues``, which the status page shows ("no data", "not clean"). Real PostgreSQL
(fixture ``fresh_db``).
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from catalogue_files import Archive

pytestmark = pytest.mark.site

NIGHT = dt.date(2024, 3, 9)


@pytest.fixture
def conn(fresh_db):
    with psycopg.connect(fresh_db) as c:
        yield c


def batch(conn, frc: str) -> tuple:
    return conn.execute(
        "select status, row_counts, issues, (select count(*) from hfc.batch_file f where f.batch_id = b.id) "
        "from hfc.batch b where frc = %s and night = %s", (frc, NIGHT)).fetchone()


def test_a_night_without_data_is_a_no_data_batch(conn):
    night = Archive("nodata-frc", NIGHT, "sdoss")
    night.extra = {"no_data": True}
    report = night.load(conn)
    assert report.status == "no_data" and not any(report.rows.values()) and report.ok
    status, rows, issues, files = batch(conn, "nodata-frc")
    assert (status, issues, files) == ("no_data", [], 0) and not any(rows.values())
    assert "no data" in report.summary()


def test_unmatched_and_stale_files_make_the_batch_not_clean(conn):
    night = Archive("issues-frc", NIGHT, "sdoss")
    night.sample("sdoss_106_frc_info.csv", "frc_info")
    night.sample("sdoss_106_observatory.csv", "observatory")
    first = night.load(conn)
    assert first.status == "loaded" and batch(conn, "issues-frc")[2] == []
    # A new job that wrote only the observatory file (and a file with a typo in its kind).
    gone = night.path_of("sdoss_106_frc_info.csv")
    night.remove("sdoss_106_frc_info.csv")
    night.extra = {
        "slurm_job_id": "78",
        "unmatched": ["sdoss_106_20240309T000000_SDO_feats.csv"],
        "stale": [{"name": "sdoss_106_frc_info.csv", "kind": "frc_info", "archive_path": gone,
                   "sha256": "0" * 64, "slurm_job_id": "77"}],
    }
    report = night.load(conn)
    status, _, issues, files = batch(conn, "issues-frc")
    assert (status, files) == ("loaded", 1)
    assert issues == [
        {"issue": "unmatched", "name": "sdoss_106_20240309T000000_SDO_feats.csv"},
        {"issue": "stale", "name": "sdoss_106_frc_info.csv", "archive_path": gone, "slurm_job_id": "77"},
    ]
    assert report.issues == issues and "NOT CLEAN" in report.summary()
    # The job's own manifest without data replaces the batch: no rows, still not clean.
    night.remove("sdoss_106_observatory.csv")
    night.extra = {"slurm_job_id": "79", "no_data": True, "stale": night.extra["stale"]}
    assert night.load(conn).status == "no_data"
    assert batch(conn, "issues-frc")[0] == "no_data" and batch(conn, "issues-frc")[3] == 0


def test_hfc_ingest_reads_a_manifest_at_its_per_frc_path(fresh_db, tmp_path, capsys, monkeypatch):
    """<root>/<folder>/manifests/<frc>/<night>.json: the archive paths are relative to <root>."""
    import json

    from helpers import TEST_CATALOGUE_CONN_ID, catalogue_conn_env

    from hfc_tasks.ops.cli import main

    monkeypatch.setenv(*catalogue_conn_env(fresh_db).popitem())

    night = Archive("sdoss-tracking", NIGHT, "sdoss", folder="sdoss")
    night.sample("sdoss_106_frc_info.csv", "frc_info")
    root = tmp_path / "hfc"
    for path, data in night.files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    manifest = root / "sdoss" / "manifests" / "sdoss-tracking" / "20240309.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps(night.manifest))
    assert main(["ingest", str(manifest), "--conn-id", TEST_CATALOGUE_CONN_ID, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["files_loaded"] == 1
