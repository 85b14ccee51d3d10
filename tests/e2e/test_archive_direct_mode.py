"""Archive direct mode (issue 15) inside a real Airflow task: one night of ``hfc_nightly`` on an
instance whose registry's site says ``archive_mode: direct``, so its ``archive`` task has the
cluster account push the night with its own OpenSSH sftp (hfc_tasks.archive.direct) instead of
relaying the bytes through the worker.

Checked on the real outcomes: the DAG run succeeds; the archive holds every manifest file with
the manifest's sha256; the cluster's run folder keeps no product (only the SLURM output); the
catalogue has the night's batch, whose manifest sha256 is the archive's manifest's; the archive's
sshd log shows a login of the cluster's push key (hfc_archive_ed25519, not the worker's
archive key) during the run, and the task's result says the copy was the cluster's push.

Instance ``h6direct`` (metadata database ``airflow_h6direct``, port 8121, LocalExecutor,
catalogue database ``hfc_h6direct``), its own registry, run folders and archive tree; stopped at
the end, pass or fail.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import subprocess
import urllib.parse
from pathlib import Path

import psycopg
import pytest
from helpers import Instance, a_spotted_night, local_registry

from hfc_tasks import products
from hfc_tasks.ops.localsite.layout import Layout

pytestmark = [pytest.mark.site, pytest.mark.slow]
DAG = "hfc_nightly"
FRC = "h6-direct"
PORT = 8121
INSTANCE = "h6direct"


def registry(ssh_port: int) -> str:
    text = local_registry(INSTANCE, "tests/e2e/test_archive_direct_mode.py", f"""\
  - name: {FRC}
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    command: /usr/bin/python3 {{frc_root}}/demo_sunspots.py -s {{start}} -e {{end}} -c {{cadence}} -o {{run_dir}}
    cadence_seconds: 21600
    slurm: {{time: "00:10:00", mem: 256M, cpus: 1}}
""")
    site = "    stagger_seconds: 0\n"
    assert site in text
    # What `hfc site up` provisions for the cluster account (Layout.direct_key / direct_known_hosts).
    return text.replace(site, site + f"""\
    archive_mode: direct
    archive_direct:
      host: 127.0.0.1
      port: {ssh_port}
      login: archive
      key_file: ${{HFC_SITE_DIR}}/home/cluster/.ssh/hfc_archive_ed25519
      known_hosts: ${{HFC_SITE_DIR}}/home/cluster/.ssh/hfc_archive_known_hosts
""")


@pytest.fixture(scope="module")
def instance(site):
    """The h6direct instance up, its DAG unpaused: (API client, catalogue DSN, registry path). Always stopped after."""
    archive = json.loads(os.environ["AIRFLOW_CONN_HFC_ARCHIVE"])
    h6 = Instance.local(INSTANCE, PORT, registry(int(archive["port"])))
    path = Path(h6.env["HFC_REGISTRY"])
    try:
        api = h6.up()
        api.wait_for_dag(DAG, timeout=180)
        api.patch(f"/dags/{DAG}", {"is_paused": False})
        yield api, h6.stack_env()["HFC_CATALOGUE_DSN"], path
        api.patch(f"/dags/{DAG}", {"is_paused": True})
        for state in ("queued", "running"):  # nothing of this instance left running
            for run in api.get(f"/dags/{DAG}/dagRuns?state={state}&limit=100")["dag_runs"]:
                api.patch(f"/dags/{DAG}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}",
                          {"state": "failed"})
    finally:
        down = h6.hfc("airflow", "down", timeout=200)
        assert down.returncode == 0, down.stderr[-2000:]


def fingerprint(pub: Path) -> str:
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


def test_one_night_in_direct_mode_on_the_real_scheduler(site, instance):
    api, dsn, registry_path = instance
    from hfc_tasks.registry import load_registry

    reg = load_registry(registry_path)
    site_cfg, frc = reg.site("local"), reg.frc(FRC)
    assert site_cfg.archive_mode == "direct" and site_cfg.archive_direct is not None
    lay = Layout(Path(os.environ["HFC_SITE_DIR"]))
    log_before = lay.sshd_log.stat().st_size

    night_text = a_spotted_night(dt.date(2063, 1, 1), 3000)
    night = dt.date.fromisoformat(night_text)
    run_id = api.post(f"/dags/{DAG}/dagRuns",
                      {"logical_date": None, "conf": {"night": night_text, "frcs": [FRC]}})["dag_run_id"]
    assert api.wait_run(DAG, run_id, timeout=600) == "success", api.task_states(DAG, run_id)

    # The archive task's result: the copy was the cluster's own sftp push. The FRC's per-year
    # metadata files (frc_info, observatory) are shared by the nights of one year: a night drawn in a
    # year archived before finds them there, identical ("skipped"), as the relay mode does.
    quoted = urllib.parse.quote(run_id, safe="")
    result = api.get(f"/dags/{DAG}/dagRuns/{quoted}/taskInstances/{FRC}.archive/xcomEntries/return_value"
                     "?deserialize=true")["value"]
    result = json.loads(result) if isinstance(result, str) else result
    assert "pushed by the cluster: OpenSSH sftp to archive@127.0.0.1" in result["verification"], result
    assert result["copied"] > 0, result
    assert result["copied"] + result["skipped"] == result["files_in_manifest"] == result["deleted"], result
    assert result["skipped"] <= 2, result  # at most the two shared metadata files

    # Archive: every manifest file exists with the manifest's sha256 and size; no .part left.
    manifest_path = Path(site_cfg.archive_root) / products.manifest_relpath(frc.archive_dir, frc.name, night)
    manifest = json.loads(manifest_path.read_text())
    assert len(manifest["files"]) == result["files_in_manifest"]
    for entry in manifest["files"]:
        data = (Path(site_cfg.archive_root) / entry["archive_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry
        assert len(data) == entry["size"], entry
    assert not list(Path(site_cfg.archive_root).rglob("*.part"))

    # Cluster: the run folder holds no product any more, only the SLURM output file.
    run_dir = Path(products.run_dir(site_cfg.products_root, frc.name, night))
    left = [p.name for p in run_dir.iterdir() if not p.name.endswith(".out")]
    assert left == [], left
    assert not any((run_dir / entry["name"]).exists() for entry in manifest["files"])

    # Catalogue: the night's batch, loaded from this manifest, with rows.
    with psycopg.connect(dsn) as conn:
        slurm_job_id, manifest_sha, row_counts = conn.execute(
            "select slurm_job_id, manifest_sha256, row_counts from hfc.batch where frc = %s and night = %s",
            (FRC, night)).fetchone()
    assert manifest_sha == hashlib.sha256(manifest_path.read_bytes()).hexdigest()
    assert slurm_job_id == manifest["slurm_job_id"] and slurm_job_id
    assert sum(row_counts.values()) > 0, row_counts

    # sshd: the cluster's push key logged in to the archive account during this run.
    push_key = fingerprint(lay.direct_key.with_name(lay.direct_key.name + ".pub"))
    worker_key = fingerprint(Path(os.environ["HFC_SITE_DIR"]) / "ssh" / "archive_ed25519.pub")
    assert push_key != worker_key
    with open(lay.sshd_log, "rb") as fh:
        fh.seek(log_before)
        text = fh.read().decode("utf-8", "replace")
    assert re.search(rf"Accepted publickey for archive .* ED25519 {re.escape(push_key)}", text), text[-3000:]
