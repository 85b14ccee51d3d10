"""`hfc db upgrade`, `hfc ingest` (manifest or folder, outside Airflow) and `hfc catalogue stats`."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from test_catalogue_formats import sdoss_night

from hfc_tasks.catalogue import schema
from hfc_tasks.ops.cli import main

pytestmark = pytest.mark.site


def test_db_upgrade_then_up_to_date(fresh_db, capsys):
    assert main(["db", "upgrade", "--dsn", fresh_db]) == 0
    assert "applied: " + ", ".join(m.version for m in schema.migrations()) in capsys.readouterr().out
    assert main(["db", "upgrade", "--dsn", fresh_db]) == 0
    assert "up to date" in capsys.readouterr().out


def test_ingest_a_folder_like_hfc_insert_then_stats(fresh_db, tmp_path, capsys):
    night = sdoss_night(dt.date(2024, 3, 1), spots=4)
    folder = tmp_path / "run"
    folder.mkdir()
    for path, data in night.files.items():
        (folder / path.rsplit("/", 1)[1]).write_bytes(data)
    (folder / "job.out").write_text("slurm log")  # not a product: skipped, said on stderr
    assert main(["ingest", str(folder), "--dsn", fresh_db]) == 0
    out = capsys.readouterr()
    assert "observations=2, sunspots=4" in out.out and "skipped job.out" in out.err
    assert main(["catalogue", "stats", "--dsn", fresh_db]) == 0
    out = capsys.readouterr().out
    assert "sunspots" in out and "sdoss: 1 night(s) 2024-03-01..2024-03-01, 0 partial" in out
    assert "observations 2, sunspots 4" in out


def test_ingest_a_manifest_and_report_rejections(fresh_db, tmp_path, capsys):
    night = sdoss_night(dt.date(2024, 3, 2))
    root = tmp_path / "hfc"
    for path, data in night.files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    manifest = root / "sdoss" / "manifests" / "20240302.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps(night.manifest))
    assert main(["ingest", str(manifest), "--dsn", fresh_db, "--json", "--run-id", "manual__cli"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == {"observations": 2, "sunspots": 3} and report["rejected"] == []
    # A file changed on disk after the manifest was written: not the file the manifest lists, so
    # nothing is loaded (exit 3) and the batch loaded above stays (issue 16 item 4).
    feat = next(p for p in night.files if p.endswith("_feat.csv"))
    (root / feat).write_bytes(night.files[feat] + b"1;2\n")
    assert main(["ingest", str(manifest), "--dsn", fresh_db]) == 3
    err = capsys.readouterr().err
    assert f"{root / feat}: sha256 " in err and "the previous batch of sdoss 2024-03-02 is kept unchanged" in err
    assert main(["catalogue", "stats", "--dsn", fresh_db]) == 0
    assert "sdoss: 1 night(s) 2024-03-02..2024-03-02, 0 partial; observations 2, sunspots 3" in capsys.readouterr().out
    # A bad row in a file the manifest lists as it is: that file is rejected, exit code 1.
    night.replace(next(e["name"] for e in night.entries if e["kind"] == "feat"), night.files[feat] + b"1;2\n")
    (root / feat).write_bytes(night.files[feat])
    manifest.write_text(json.dumps(night.manifest))
    assert main(["ingest", str(manifest), "--dsn", fresh_db]) == 1
    assert "REJECTED" in capsys.readouterr().out
    assert main(["ingest", str(tmp_path / "nothing.json"), "--dsn", fresh_db]) == 2
