"""Beyond one machine: a whole night with the CeleryExecutor, a real Redis broker and two workers.

The ``ops`` instance (tests/e2e/ops_instance.py): api-server, scheduler, dag-processor,
triggerer, ``redis-server`` on 127.0.0.1:6393 and two Celery workers (``worker1@``,
``worker2@``), with two FRCs. The night must succeed, its tasks must have been spread over
both workers (the task instances' hostname is the worker's node name), the ``wait`` tasks
must have deferred to the triggerer, and the catalogue of the instance must hold the rows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.parse

import ops_instance  # tests/e2e is on sys.path (pytest prepend import mode)
import psycopg
import pytest

pytestmark = [pytest.mark.site, pytest.mark.slow]
DAG = "hfc_nightly"
NIGHT = "2024-02-10"


@pytest.fixture(scope="module")
def ops(site):
    ops_instance.ensure_packages()
    api, seconds = ops_instance.up()
    print(f"\n[celery] ops instance up in {seconds:.1f} s (redis + 2 Celery workers + Airflow components)")
    api.wait_for_dag(DAG)
    return api


def test_night_on_two_celery_workers(ops):
    api = ops
    # The broker wants its password (from the instance's 0600 file, given to redis-cli by env).
    ping = ["redis-cli", "-h", "127.0.0.1", "-p", "6393", "ping"]
    password = (ops_instance.run_dir() / "redis.password").read_text().strip()
    redis = subprocess.run(ping, capture_output=True, text=True, env={**os.environ, "REDISCLI_AUTH": password})
    assert redis.stdout.strip() == "PONG", redis
    anonymous = subprocess.run(ping, capture_output=True, text=True)
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr, anonymous
    api.patch(f"/dags/{DAG}", {"is_paused": False})
    t0 = time.monotonic()
    try:
        run = api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"night": NIGHT}})
        state = api.wait_run(DAG, run["dag_run_id"], timeout=600)
    finally:
        api.patch(f"/dags/{DAG}", {"is_paused": True})
    elapsed = time.monotonic() - t0
    tis = api.get(f"/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances?limit=100")["task_instances"]
    table = "\n".join(f"  {ti['task_id']:<24} {ti['state']:<8} {ti['hostname']:<28} {ti.get('queue')} "
                      f"{(ti.get('duration') or 0):6.1f} s" for ti in sorted(tis, key=lambda t: t["task_id"]))
    print(f"[celery] run {run['dag_run_id']} for night {NIGHT}: {state} in {elapsed:.1f} s\n{table}")
    assert state == "success", table
    assert len(tis) == 4 * len(ops_instance.FRCS)
    assert all(ti["state"] == "success" for ti in tis), table
    workers = {ti["hostname"].split("@", 1)[0] for ti in tis}
    assert workers <= {"worker1", "worker2"}, f"tasks ran outside the Celery workers: {workers}"
    assert workers == {"worker1", "worker2"}, f"all {len(tis)} tasks ran on {workers}: not spread over two workers"
    assert all(ti.get("executor") in (None, "CeleryExecutor") for ti in tis)
    # The waits were deferred to the triggerer (no worker slot held while SLURM ran the jobs):
    # each wait's own log shows its trigger started in the triggerer and fired its event.
    for frc in ops_instance.FRCS:
        wait = next(ti for ti in tis if ti["task_id"] == f"{frc}.wait")
        log = json.dumps(api.get(f"/dags/{DAG}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}"
                                 f"/taskInstances/{frc}.wait/logs/{wait['try_number']}?full_content=true"))
        trigger = f"{DAG}/{run['dag_run_id']}/{frc}.wait/-1/{wait['try_number']} (ID "
        assert re.search(re.escape(f"trigger {trigger}") + r"\d+\) starting", log), \
            f"{frc}.wait: no trigger started in the triggerer\n{log[-3000:]}"
        assert "Trigger fired event" in log, f"{frc}.wait: its trigger fired no event\n{log[-3000:]}"
    # Each worker log shows the Redis broker it consumed from.
    for name in ("worker1", "worker2"):
        log = (ops_instance.run_dir() / f"{name}.log").read_text(errors="replace")
        assert "127.0.0.1:6393/0" in log, f"{name} did not connect to the instance's Redis"

    # The catalogue of the instance holds both FRCs' batches of the night, loaded by this run.
    dsn = ops_instance.stack_env()["HFC_CATALOGUE_DSN"]
    with psycopg.connect(dsn) as conn:
        batches = conn.execute(
            "select frc, status, row_counts, dag_run_id from hfc.batch where night = %s order by frc", (NIGHT,)
        ).fetchall()
    assert {b[0] for b in batches} == set(ops_instance.FRCS), batches
    assert all(b[1] == "loaded" and b[3] == run["dag_run_id"] for b in batches), batches
    assert all(b[2].get("sunspots", 0) > 0 and b[2].get("observations", 0) > 0 for b in batches), batches

    # Extra links: computed on the workers when the tasks ended, read back through the API.
    links = api.get(f"/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances/ops-sunspots.wait/links")
    urls = links["extra_links"]
    assert set(urls) == {"SLURM output", "Archive folder", "Quicklooks", "Catalogue batch"}, urls
    assert "/hfc-status/job-output/ops-sunspots/20240210?job_id=" in urls["SLURM output"], urls
    assert urls["Catalogue batch"].endswith("/hfc-status/batch/ops-sunspots/20240210"), urls
