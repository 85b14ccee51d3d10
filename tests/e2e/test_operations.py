"""The operators' daily life on the real scheduler, through Airflow's REST API: a scheduled-
style night, a backfill, clearing one stage, clearing submit, and a restart mid-night."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from helpers import a_spotted_night

from hfc_tasks import products
from hfc_tasks.ops import airflow_stack
from hfc_tasks.ops.localsite import slurm_conf_path
from hfc_tasks.registry import load_registry

pytestmark = [pytest.mark.site, pytest.mark.slow]
DAG = "hfc_nightly"
DETECTOR, TRACKER = "demo-sunspots", "demo-sunspot-tracking"


def a_night(base: int) -> str:
    # Nights far from every other test's, so batches and job names never collide; nights with
    # spots, since these tests count the rows loaded.
    return a_spotted_night(dt.date(base, 1, 1), 300)


def catalogue(dsn: str, frc: str, night: str) -> dict:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "select id, row_counts, slurm_job_id, dag_run_id from hfc.batch where frc = %s and night = %s",
            (frc, night),
        ).fetchone()
        if row is None:
            return {}
        dates = conn.execute(
            "select min(date_obs), max(date_obs) from hfc.observations where batch_id = %s", (row[0],)
        ).fetchone()
    return {"batch": row[0], "rows": row[1], "job": row[2], "run": row[3], "dates": dates}


def manifest_feat_rows(frc: str, night: str) -> int:
    reg = load_registry()
    site = reg.site()
    path = Path(site.archive_root) / products.manifest_relpath(reg.frc(frc).archive_dir, frc,
                                                              products.parse_night(night))
    manifest = json.loads(path.read_text())
    total = 0
    for entry in manifest["files"]:
        if entry["kind"] == "feat":
            total += len((Path(site.archive_root) / entry["archive_path"]).read_text().splitlines()) - 1
    return total


def trigger(api, night: str) -> str:
    return api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"night": night}})["dag_run_id"]


def tis(api, run_id: str) -> dict[str, dict]:
    items = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances?limit=1000")["task_instances"]
    return {ti["task_id"]: ti for ti in items}


@pytest.fixture(scope="module")
def api(stack_api):
    stack_api.wait_for_dag(DAG)
    stack_api.patch(f"/dags/{DAG}", {"is_paused": False})
    yield stack_api
    stack_api.patch(f"/dags/{DAG}", {"is_paused": True})


@pytest.fixture(scope="module")
def one_night(api, site):
    """One night triggered and finished: (night, run id)."""
    night = a_night(2050)
    run_id = trigger(api, night)
    assert api.wait_run(DAG, run_id, timeout=600) == "success", api.explain_run(DAG, run_id)
    return night, run_id


def test_trigger_one_night_tracker_after_detector(api, one_night, site):
    night, run_id = one_night
    states = api.task_states(DAG, run_id)
    assert set(states.values()) == {"success"} and len(states) == 8
    t = tis(api, run_id)
    # The tracker's submit started after the detector's catalogue stage ended.
    assert t[f"{TRACKER}.submit"]["start_date"] >= t[f"{DETECTOR}.catalogue"]["end_date"]
    det = catalogue(site["HFC_CATALOGUE_DSN"], DETECTOR, night)
    trk = catalogue(site["HFC_CATALOGUE_DSN"], TRACKER, night)
    assert det["rows"]["sunspots"] == manifest_feat_rows(DETECTOR, night) > 0
    assert det["run"] == run_id and trk["run"] == run_id
    assert sum(trk["rows"].values()) > 0  # the tracks are in the catalogue too


def test_clear_archive_only_reruns_only_archive(api, one_night, site):
    night, run_id = one_night
    before = tis(api, run_id)
    cat_before = catalogue(site["HFC_CATALOGUE_DSN"], DETECTOR, night)
    api.post(f"/dags/{DAG}/clearTaskInstances", {
        "dag_run_id": run_id, "task_ids": [f"{DETECTOR}.archive"], "dry_run": False, "only_failed": False,
        "include_downstream": False,
    })
    assert api.wait_run(DAG, run_id) == "success", api.explain_run(DAG, run_id)
    after = tis(api, run_id)
    changed = {tid for tid in after if after[tid]["try_number"] != before[tid]["try_number"]}
    assert changed == {f"{DETECTOR}.archive"}
    # The archive stage found everything already archived: the catalogue is untouched.
    assert catalogue(site["HFC_CATALOGUE_DSN"], DETECTOR, night) == cat_before


def test_clear_submit_recomputes_the_night(api, one_night, site):
    night, run_id = one_night
    dsn = site["HFC_CATALOGUE_DSN"]
    before = catalogue(dsn, DETECTOR, night)
    api.post(f"/dags/{DAG}/clearTaskInstances", {
        "dag_run_id": run_id, "task_ids": [f"{DETECTOR}.submit"], "dry_run": False, "only_failed": False,
        "include_downstream": True,
    })
    assert api.wait_run(DAG, run_id, timeout=600) == "success", api.explain_run(DAG, run_id)
    after = catalogue(dsn, DETECTOR, night)
    assert after["job"] != before["job"]  # a new SLURM job computed the night
    assert after["batch"] != before["batch"] and after["rows"] == before["rows"]


def test_backfill_three_nights(api, site):
    # Backfills only take past dates: a year of its own in the past.
    start = dt.date(2019, 1, 1) + dt.timedelta(days=random.randrange(300))
    nights = [(start + dt.timedelta(days=i)).isoformat() for i in range(3)]
    backfill = api.post("/backfills", {
        "dag_id": DAG, "from_date": f"{nights[0]}T00:00:00Z", "to_date": f"{nights[-1]}T00:00:00Z",
        "max_active_runs": 3, "reprocess_behavior": "none",
    })
    deadline = time.monotonic() + 900
    runs: list[dict] = []
    while time.monotonic() < deadline:
        runs = [r for r in api.get(f"/dags/{DAG}/dagRuns?limit=100&run_type=backfill")["dag_runs"]
                if r["data_interval_start"][:10] in nights]
        if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs):
            break
        time.sleep(3)
    assert backfill["id"] and sorted(r["data_interval_start"][:10] for r in runs) == nights
    assert {r["state"] for r in runs} == {"success"}
    for r, night in zip(sorted(runs, key=lambda r: r["data_interval_start"]), nights, strict=True):
        det = catalogue(site["HFC_CATALOGUE_DSN"], DETECTOR, night)
        # each run loaded its own night: its observations lie in that night, nothing else
        assert det["run"] == r["dag_run_id"]
        assert det["dates"][0].date().isoformat() == night and det["dates"][1].date().isoformat() == night
        assert det["rows"]["sunspots"] == manifest_feat_rows(DETECTOR, night)


def test_scheduler_and_triggerer_restart_while_jobs_wait(api, site):
    env = {"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"}
    # Fill the node so the night's job stays PENDING while the components restart.
    blocker = subprocess.run(["sbatch", "--parsable", "-c", "8", "--mem=100M", "--output=/dev/null",
                              "--wrap", "sleep 45"],
                             capture_output=True, text=True, check=True, env=env).stdout.strip()
    try:
        night = a_night(2071)
        run_id = trigger(api, night)
        api.wait_task(DAG, run_id, f"{DETECTOR}.wait", {"deferred"}, timeout=120)
        airflow_stack.down(("scheduler", "triggerer"))
        time.sleep(3)
        airflow_stack.up(verbose=False)
        assert api.wait_run(DAG, run_id, timeout=600) == "success", api.explain_run(DAG, run_id)
        assert catalogue(site["HFC_CATALOGUE_DSN"], DETECTOR, night)["rows"]["sunspots"] > 0
    finally:
        subprocess.run(["scancel", blocker], env=env)
