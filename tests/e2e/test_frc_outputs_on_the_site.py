"""Issue 16 items 5 and 6 through the real DAG on the local site (``airflow dags test``, real
SLURM, sshd and PostgreSQL): an FRC whose job exits 0 and writes nothing, and one that leaves a
file that is no product name, with ``unknown_files: warn``.

Must: the quiet night is a success "no data" (manifest with no files and ``no_data``, batch
status ``no_data``, 0 rows); the odd file stays on the cluster, is named in the manifest's
``unmatched`` and the batch's ``issues`` (the night is "not clean"), the real product is archived.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest
import yaml
from helpers import dags_test

from hfc_tasks import products
from hfc_tasks.registry import DEFAULT_REGISTRY, load_registry

pytestmark = [pytest.mark.site, pytest.mark.slow]
NIGHT = "2024-06-12"
QUIET, ODD = "h1-quiet-frc", "h1-odd-frc"


@pytest.fixture
def registry(tmp_path) -> Path:
    raw = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    base = {"version": "1.0", "feature": "SUNSPOTS", "observatory": "SDO", "instrument": "HMI",
            "product_format": "sdoss", "sites": ["local"], "slurm": {"time": "00:02:00", "mem": "64M"}}
    raw["frcs"] = [
        {**base, "name": QUIET, "command": "/bin/true"},  # exit 0, no file: a night without data
        {**base, "name": ODD, "unknown_files": "warn",
         "command": "printf 'JPEG' > {run_dir}/h1odd.jpg && "
                    "printf x > {run_dir}/h1odd_10_20240612T000000_sdo_feat.csv.gz"},
    ]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    yield path
    reg = load_registry(path)
    site = reg.site()
    for name in (QUIET, ODD):
        shutil.rmtree(Path(site.archive_root) / name, ignore_errors=True)
        shutil.rmtree(Path(site.products_root) / name, ignore_errors=True)


def test_a_quiet_night_is_no_data_and_an_odd_file_makes_the_night_not_clean(site, airflow_db, fresh_db, registry):
    reg = load_registry(registry)
    site_cfg = reg.site()
    night = products.parse_night(NIGHT)
    proc = dags_test(NIGHT, registry, fresh_db)
    log = proc.stdout + proc.stderr

    root = Path(site_cfg.archive_root)
    quiet = json.loads((root / products.manifest_relpath(QUIET, QUIET, night)).read_text())
    assert quiet["files"] == [] and quiet["no_data"] is True and quiet["slurm_job_id"]
    odd = json.loads((root / products.manifest_relpath(ODD, ODD, night)).read_text())
    assert [f["name"] for f in odd["files"]] == ["h1odd.jpg"]
    assert odd["unmatched"] == ["h1odd_10_20240612T000000_sdo_feat.csv.gz"]
    run_dir = Path(products.run_dir(site_cfg.products_root, ODD, night))
    assert (run_dir / "h1odd_10_20240612T000000_sdo_feat.csv.gz").read_bytes() == b"x", "left on the cluster"
    assert not (run_dir / "h1odd.jpg").exists()
    assert "'h1odd_10_20240612T000000_sdo_feat.csv.gz' in the run folder" in log and "is not an HFC product name" in log

    with psycopg.connect(fresh_db) as conn:
        batches = {frc: (status, issues, any(rows.values()) if rows else False) for frc, status, issues, rows in
                   conn.execute("select frc, status, issues, row_counts from hfc.batch where night = %s", (NIGHT,))}
    assert batches[QUIET] == ("no_data", [], False)
    assert batches[ODD] == ("loaded", [{"issue": "unmatched", "name": "h1odd_10_20240612T000000_sdo_feat.csv.gz"}],
                            False)
