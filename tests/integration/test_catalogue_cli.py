"""`hfc db upgrade`, `hfc ingest` (manifest or folder, outside Airflow) and `hfc catalogue stats`,
through an Airflow connection id (``--conn-id``; the commands read no DSN). Migrations happen at
deploy only: a load into a database whose schema is behind fails, writing nothing."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from helpers import TEST_CATALOGUE_CONN_ID, catalogue_conn_env
from test_catalogue_formats import sdoss_night

from hfc_tasks.catalogue import schema
from hfc_tasks.ops.cli import main

pytestmark = pytest.mark.site


@pytest.fixture
def db(fresh_db, monkeypatch) -> str:
    """The Airflow connection id of a migrated database of the test's own."""
    monkeypatch.setenv(*catalogue_conn_env(fresh_db).popitem())
    return TEST_CATALOGUE_CONN_ID


@pytest.fixture
def empty(empty_db, monkeypatch) -> tuple[str, str]:
    """(connection id, DSN) of a new database that no deploy has migrated yet."""
    monkeypatch.setenv(*catalogue_conn_env(empty_db).popitem())
    return TEST_CATALOGUE_CONN_ID, empty_db


def test_db_upgrade_then_up_to_date(empty, capsys):
    conn_id, _ = empty
    assert main(["db", "upgrade", "--conn-id", conn_id]) == 0
    assert "applied: " + ", ".join(m.version for m in schema.migrations()) in capsys.readouterr().out
    assert main(["db", "upgrade", "--conn-id", conn_id]) == 0
    assert "up to date" in capsys.readouterr().out


def test_a_load_into_a_schema_behind_fails_and_writes_nothing_until_hfc_db_upgrade(empty, tmp_path, capsys):
    """Migrations are a deploy step: the load only checks, so its role needs no DDL rights."""
    conn_id, dsn = empty
    night = sdoss_night(dt.date(2024, 3, 3), spots=2)
    folder = tmp_path / "run"
    folder.mkdir()
    for path, data in night.files.items():
        (folder / path.rsplit("/", 1)[1]).write_bytes(data)
    with psycopg.connect(dsn) as conn:
        schema.upgrade(conn)  # a deployed catalogue, then one migration of a newer release removed
        last = schema.migrations()[-1].version
        conn.execute("delete from hfc.schema_migrations where version = %s", (last,))
        batches = conn.execute("select count(*) from hfc.batch").fetchone()[0]
    capsys.readouterr()
    assert main(["ingest", str(folder), "--conn-id", conn_id]) == 2
    err = capsys.readouterr().err
    assert f"catalogue schema is behind (pending: {last})" in err and "run `hfc db upgrade`" in err
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select count(*) from hfc.batch").fetchone()[0] == batches == 0
    with psycopg.connect(dsn, autocommit=True) as conn:  # the pending migration, undone to apply it again
        conn.execute("delete from hfc.schema_migrations")
        conn.execute("drop schema hfc cascade")
    assert main(["ingest", str(folder), "--conn-id", conn_id]) == 2
    err = capsys.readouterr().err
    assert "catalogue schema is behind (pending: 0001_core, " in err and "run `hfc db upgrade`" in err
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select to_regclass('hfc.batch')").fetchone()[0] is None  # no DDL either
    assert main(["db", "upgrade", "--conn-id", conn_id]) == 0
    assert main(["ingest", str(folder), "--conn-id", conn_id]) == 0
    assert "observations=2, sunspots=2" in capsys.readouterr().out


def test_an_unknown_connection_id_is_named_with_how_to_define_it(capsys):
    assert main(["catalogue", "stats", "--conn-id", "hfc_no_such_catalogue"]) == 2
    err = capsys.readouterr().err
    assert "no Airflow connection 'hfc_no_such_catalogue'" in err and "AIRFLOW_CONN_HFC_NO_SUCH_CATALOGUE" in err


def test_ingest_a_folder_like_hfc_insert_then_stats(db, tmp_path, capsys):
    night = sdoss_night(dt.date(2024, 3, 1), spots=4)
    folder = tmp_path / "run"
    folder.mkdir()
    for path, data in night.files.items():
        (folder / path.rsplit("/", 1)[1]).write_bytes(data)
    (folder / "job.out").write_text("slurm log")  # not a product: skipped, said on stderr
    assert main(["ingest", str(folder), "--conn-id", db]) == 0
    out = capsys.readouterr()
    assert "observations=2, sunspots=4" in out.out and "skipped job.out" in out.err
    assert main(["catalogue", "stats", "--conn-id", db]) == 0
    out = capsys.readouterr().out
    assert "sunspots" in out and "sdoss: 1 night(s) 2024-03-01..2024-03-01, 0 partial" in out
    assert "observations 2, sunspots 4" in out


def test_ingest_a_manifest_and_report_rejections(db, tmp_path, capsys):
    night = sdoss_night(dt.date(2024, 3, 2))
    root = tmp_path / "hfc"
    for path, data in night.files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    manifest = root / "sdoss" / "manifests" / "20240302.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps(night.manifest))
    assert main(["ingest", str(manifest), "--conn-id", db, "--json", "--run-id", "manual__cli"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == {"observations": 2, "sunspots": 3} and report["rejected"] == []
    # A file changed on disk after the manifest was written: not the file the manifest lists, so
    # nothing is loaded (exit 3) and the batch loaded above stays (issue 16 item 4).
    feat = next(p for p in night.files if p.endswith("_feat.csv"))
    (root / feat).write_bytes(night.files[feat] + b"1;2\n")
    assert main(["ingest", str(manifest), "--conn-id", db]) == 3
    err = capsys.readouterr().err
    assert f"{root / feat}: sha256 " in err and "the previous batch of sdoss 2024-03-02 is kept unchanged" in err
    assert main(["catalogue", "stats", "--conn-id", db]) == 0
    assert "sdoss: 1 night(s) 2024-03-02..2024-03-02, 0 partial; observations 2, sunspots 3" in capsys.readouterr().out
    # A bad row in a file the manifest lists as it is: that file is rejected, exit code 1.
    night.replace(next(e["name"] for e in night.entries if e["kind"] == "feat"), night.files[feat] + b"1;2\n")
    (root / feat).write_bytes(night.files[feat])
    manifest.write_text(json.dumps(night.manifest))
    assert main(["ingest", str(manifest), "--conn-id", db]) == 1
    assert "REJECTED" in capsys.readouterr().out
    assert main(["ingest", str(tmp_path / "nothing.json"), "--conn-id", db]) == 2
