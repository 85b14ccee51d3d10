"""Two runs of the same (FRC, night) at once on the real scheduler (issue 16, item 2): the
second fails at once, before it submits, archives or loads anything, naming the run that holds
the night; the first completes with the only SLURM job of that night and its catalogue batch.

Instance ``h3claim`` of its own (metadata database ``airflow_h3claim``, port 8102,
LocalExecutor, catalogue database ``hfc_h3claim``) with a registry whose one FRC, run folders
and archive tree are its own: nothing here touches the other instances or the shared catalogue.
Stopped at the end, pass or fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import secrets
import subprocess
import time
import urllib.parse
from pathlib import Path

import psycopg
import pytest
from helpers import Instance, local_registry

from hfc_tasks import products
from hfc_tasks.airflow_api import AirflowAPI
from hfc_tasks.ops.localsite import slurm_conf_path, state_dir

pytestmark = [pytest.mark.site, pytest.mark.slow]
DAG = "hfc_nightly"
FRC = "h3-claim"
PORT = 8102
REGISTRY = local_registry("h3claim", "tests/e2e/test_night_claim.py", """\
  - name: h3-claim
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    # A job of ~30 s: long enough for a second run of its night to start while it runs.
    command: sleep 30; /usr/bin/python3 {frc_root}/demo_sunspots.py -s {start} -e {end} -c {cadence} -o {run_dir}
    cadence_seconds: 21600
    slurm: {time: "00:10:00", mem: 256M, cpus: 1}
  - name: h3-held
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    # Its job stays PENDING for an hour: its wait is deferred as long as the test needs.
    command: sleep 1
    slurm: {time: "00:10:00", mem: 64M, cpus: 1, extra: ["--begin=now+3600"]}
""")
HELD = "h3-held"


def env() -> dict[str, str]:
    registry = state_dir() / "h3claim" / "registry.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text(REGISTRY)
    return {
        **os.environ,
        "HFC_AIRFLOW_INSTANCE": "h3claim",
        "HFC_AIRFLOW_PORT": str(PORT),
        "HFC_AIRFLOW_EXECUTOR": "LocalExecutor",
        "HFC_AIRFLOW_CATALOGUE_DB": "hfc_h3claim",
        "HFC_REGISTRY": str(registry),
    }


@pytest.fixture(scope="module")
def instance(site):
    """The h3claim instance up, its DAG unpaused: (API client, catalogue DSN). Always stopped after."""
    h3claim = Instance(env())
    try:
        api = h3claim.up()
        api.wait_for_dag(DAG, timeout=180)
        api.patch(f"/dags/{DAG}", {"is_paused": False})
        yield api, h3claim.stack_env()["HFC_CATALOGUE_DSN"]
        api.patch(f"/dags/{DAG}", {"is_paused": True})
    finally:
        down = h3claim.hfc("airflow", "down", timeout=200)
        for line in slurm("squeue", "-h", "-o", "%i|%j").split():  # held jobs of any run of this instance
            job_id, name = line.split("|")
            if name.startswith(f"hfc.{HELD}."):
                slurm("scancel", job_id)
        assert down.returncode == 0, down.stderr[-2000:]


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True,
                          env={"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"}).stdout


def jobs_named(name: str) -> set[str]:
    slurm_env = {"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"}
    sacct = subprocess.run(["sacct", "-X", "-n", "-P", f"--name={name}", "--starttime=2020-01-01", "-o", "JobIDRaw"],
                           capture_output=True, text=True, check=True, env=slurm_env).stdout.split()
    squeue = subprocess.run(["squeue", "-h", "--states=all", f"--name={name}", "-o", "%i"],
                            capture_output=True, text=True, check=True, env=slurm_env).stdout.split()
    return set(sacct) | set(squeue)


def task_log(api: AirflowAPI, run_id: str, task_id: str, try_number: int) -> str:
    path = (f"/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}/logs/"
            f"{try_number}?full_content=true")
    return json.dumps(api.get(path))


def ti(api: AirflowAPI, run_id: str, task_id: str) -> dict:
    return api.get(f"/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}")


def test_second_run_of_a_night_fails_at_once_and_the_first_completes(instance):
    api, dsn = instance
    night = (dt.date(2061, 1, 1) + dt.timedelta(days=random.randrange(3000))).isoformat()
    name = products.job_name(FRC, products.parse_night(night))
    trigger = {"logical_date": None, "conf": {"night": night, "frcs": [FRC]}}
    first = api.post(f"/dags/{DAG}/dagRuns", trigger)["dag_run_id"]
    api.wait_task(DAG, first, f"{FRC}.submit", ("success", "failed"), timeout=300)
    assert api.task_states(DAG, first)[f"{FRC}.submit"] == "success"
    job = ti(api, first, f"{FRC}.submit")
    assert len(jobs_named(name)) == 1

    # A manual run of the same night while the first one waits for its job.
    second = api.post(f"/dags/{DAG}/dagRuns", trigger)["dag_run_id"]
    assert api.wait_run(DAG, second, timeout=300) == "failed"
    states = api.task_states(DAG, second)
    assert states[f"{FRC}.submit"] == "failed", states
    assert {states[f"{FRC}.{t}"] for t in ("wait", "archive", "catalogue")} == {"upstream_failed"}, states
    refused = ti(api, second, f"{FRC}.submit")
    assert refused["try_number"] == 1  # failed at once: no retry
    log = task_log(api, second, f"{FRC}.submit", 1)
    assert f"night {night} of FRC {FRC} is being processed by run {first}" in log, log[-3000:]
    assert api.task_states(DAG, first)[f"{FRC}.wait"] in ("deferred", "running", "scheduled", "queued"), \
        "the second run's refusal must come while the first still waits for its job"

    assert api.wait_run(DAG, first, timeout=600) == "success", api.task_states(DAG, first)
    assert len(jobs_named(name)) == 1, jobs_named(name)  # exactly one job for the night
    with psycopg.connect(dsn) as conn:
        batch = conn.execute(
            "select dag_run_id, slurm_job_id from hfc.batch where frc = %s and night = %s", (FRC, night)
        ).fetchall()
        claims = conn.execute("select run_id from hfc.night_claim where frc = %s and night = %s",
                              (FRC, night)).fetchall()
    assert [b[0] for b in batch] == [first]
    assert str(batch[0][1]) == jobs_named(name).pop() and job["try_number"] == 1
    assert claims == []  # released by the first run's catalogue stage


def test_a_wait_never_cancels_a_job_when_its_run_does_not_hold_the_night(instance):
    """The cancel-on-clear/mark of a deferred wait (the trigger's on_kill) cancels the job only
    while the wait's run holds the claim. Run Q's night has been taken over by another run (as
    after Q was marked failed and a new run of the night adopted the live job): marking Q's wait
    leaves the job alone. Run P still holds its night: marking P's wait (after Q's) cancels P's
    job, which shows the triggerer did run the cancellations."""
    api, dsn = instance
    base = dt.date(2061, 1, 1) + dt.timedelta(days=secrets.randbelow(3000))
    runs = {}
    for key, night in (("P", base + dt.timedelta(days=3001)), ("Q", base)):
        run_id = api.post(f"/dags/{DAG}/dagRuns",
                          {"logical_date": None, "conf": {"night": night.isoformat(), "frcs": [HELD]}})["dag_run_id"]
        runs[key] = (run_id, urllib.parse.quote(run_id, safe=""), night)
    try:
        jobs = {}
        for key, (run_id, _, night) in runs.items():
            api.wait_task(DAG, run_id, f"{HELD}.wait", {"deferred"}, timeout=300)
            (jobs[key],) = jobs_named(products.job_name(HELD, night))
        q_run, q_quoted, q_night = runs["Q"]
        with psycopg.connect(dsn) as conn:
            taken = conn.execute(
                "update hfc.night_claim set run_id = 'manual__another-run' where frc = %s and night = %s "
                "and run_id = %s", (HELD, q_night, q_run)).rowcount
        assert taken == 1
        api.patch(f"/dags/{DAG}/dagRuns/{q_quoted}/taskInstances/{HELD}.wait", {"new_state": "failed"})
        api.wait_task(DAG, q_run, f"{HELD}.wait", {"failed"}, timeout=60)
        api.patch(f"/dags/{DAG}/dagRuns/{runs['P'][1]}/taskInstances/{HELD}.wait", {"new_state": "failed"})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not sacct_state(jobs["P"]).startswith("CANCELLED"):
            time.sleep(1)
        assert sacct_state(jobs["P"]).startswith("CANCELLED")  # P held its night: its job is cancelled
        assert slurm("squeue", "-h", "-j", jobs["Q"], "-o", "%T").strip() == "PENDING"  # Q's is not
    finally:
        for _, quoted, _ in runs.values():
            api.patch(f"/dags/{DAG}/dagRuns/{quoted}", {"state": "failed"})


def sacct_state(job_id: str) -> str:
    out = slurm("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State").split("\n")
    return out[0].strip() if out else ""


def submission_record(night: dt.date) -> str:
    """The cluster's record of the night's last submission: '<job id> <submit chain key>'."""
    path = Path(os.environ["HFC_SITE_DIR"]) / "home" / "cluster" / "products" \
        / "_h3claim" / ".hfc-submit.lock.jobs" / products.job_name(FRC, night)
    return path.read_text().strip()


def test_clearing_submit_recomputes_while_a_retry_would_adopt(instance):
    """The submission record keys a submit task's chain of tries (issue 16 item 3): the first
    run records chain 1; clearing 'submit' starts a new chain, so the night is computed again by
    a new job (a retry of the same chain would adopt the recorded job instead)."""
    api, dsn = instance
    night = dt.date(2061, 1, 1) + dt.timedelta(days=6001 + secrets.randbelow(3000))
    name = products.job_name(FRC, night)
    run_id = api.post(f"/dags/{DAG}/dagRuns",
                      {"logical_date": None, "conf": {"night": night.isoformat(), "frcs": [FRC]}})["dag_run_id"]
    assert api.wait_run(DAG, run_id, timeout=600) == "success"
    (first_job,) = jobs_named(name)
    assert submission_record(night) == f"{first_job} {DAG}/{run_id}/{FRC}.submit/1"
    api.post(f"/dags/{DAG}/clearTaskInstances", {
        "dag_run_id": run_id, "task_ids": [f"{FRC}.submit"], "dry_run": False, "only_failed": False,
        "include_downstream": True,
    })
    assert api.wait_run(DAG, run_id, timeout=600) == "success"
    jobs = jobs_named(name)
    assert len(jobs) == 2 and first_job in jobs
    (second_job,) = jobs - {first_job}
    record = submission_record(night)
    assert record.startswith(f"{second_job} {DAG}/{run_id}/{FRC}.submit/") and not record.endswith("/1")
    with psycopg.connect(dsn) as conn:
        batch = conn.execute("select slurm_job_id from hfc.batch where frc = %s and night = %s",
                             (FRC, night)).fetchall()
        claims = conn.execute("select 1 from hfc.night_claim where frc = %s and night = %s", (FRC, night)).fetchall()
    assert [str(b[0]) for b in batch] == [second_job] and claims == []
