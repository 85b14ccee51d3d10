"""The SLURM stage against the real SLURM of the local site, run through Airflow's own
task machinery (``dag.test()``: real operators, real deferral to SlurmJobTrigger, real
sacct/squeue/scancel over SSH with host-key verification)."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from helpers import ChatListener

from hfc_tasks import products
from hfc_tasks.ops.localsite import slurm_conf_path
from hfc_tasks.registry import DEFAULT_REGISTRY

pytestmark = pytest.mark.site
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def sacct_state(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State,ExitCode"],
        capture_output=True, text=True, check=True, env={"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    return out.splitlines()[-1] if out else ""


def squeue_ids(name: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "-h", f"--name={name}", "-o", "%i"],
        capture_output=True, text=True, check=True, env={"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"},
    ).stdout
    return out.split()


@pytest.fixture
def registry(tmp_path, site):
    """A registry with the project's local site and test FRCs whose commands end in known ways."""
    raw = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    base = {"version": "1", "feature": "TEST", "observatory": "SDO", "instrument": "HMI"}
    raw["frcs"] = [
        {**base, "name": "t-ok", "command": "echo hello from {night}"},
        {**base, "name": "t-exit3", "command": "echo 'about to fail'; exit 3"},
        {**base, "name": "t-sleep", "command": "sleep 300"},
        {**base, "name": "t-timeout", "command": "sleep 600", "slurm": {"time": "1"}},
    ]
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def night() -> str:
    # A night of its own per test: job names never collide with other tests or runs.
    return (dt.date(2031, 1, 1) + dt.timedelta(days=random.randrange(20000))).isoformat()


TEST_DAGS = Path(__file__).resolve().parents[1] / "dags"


@dataclass
class Run:
    log: str
    job_id: str | None
    states: dict[str, str]


def run(frc: str, the_night: str, registry: str, airflow: tuple[dict, Path], **knobs) -> Run:
    """`airflow dags test` of one test DAG; the task states are read back from Airflow's DB."""
    env, db = airflow
    dag_id = f"test_slurm_{frc.replace('-', '_')}"
    env = {
        **env,
        "AIRFLOW__CORE__DAGS_FOLDER": str(TEST_DAGS),
        "HFC_TEST_REGISTRY": registry,
        **{f"HFC_TEST_{k.upper()}": str(v) for k, v in knobs.items()},
    }
    proc = subprocess.run(
        [AIRFLOW, "dags", "test", dag_id, the_night, "--conf", json.dumps({"night": the_night})],
        env=env, capture_output=True, text=True, timeout=600,
    )
    log = proc.stdout + proc.stderr
    m = re.search(r"(?:submitted job|adopted live job) (\d+)", log)
    with sqlite3.connect(db) as conn:
        run_id = conn.execute(
            "select run_id from dag_run where dag_id = ? order by id desc limit 1", (dag_id,)
        ).fetchone()[0]
        states = dict(conn.execute(
            "select task_id, state from task_instance where dag_id = ? and run_id = ?", (dag_id, run_id)
        ).fetchall())
    return Run(log, m.group(1) if m else None, states)


def test_completed(registry, test_airflow_db):
    the_night = night()
    r = run("t-ok", the_night, registry, test_airflow_db)
    assert r.states == {"submit": "success", "wait": "success"}, r.log[-3000:]
    assert sacct_state(r.job_id) == "COMPLETED|0:0"
    assert f"SLURM job {r.job_id}, state COMPLETED, exit code 0" in r.log
    assert "MaxRSS" in r.log
    assert f"hfc.t-ok.{the_night.replace('-', '')}.{r.job_id}.out" in r.log


def test_failed_exit_3_shows_code_and_output(registry, test_airflow_db):
    r = run("t-exit3", night(), registry, test_airflow_db)
    assert r.states == {"submit": "success", "wait": "failed"}
    assert sacct_state(r.job_id) == "FAILED|3:0"
    assert f"SLURM job {r.job_id}, state FAILED, exit code 3" in r.log
    assert "about to fail" in r.log  # the tail of the job's output file is in the task log


def test_cancelled_from_outside(registry, test_airflow_db):
    import threading

    the_night = night()
    name = products.job_name("t-sleep", products.parse_night(the_night))

    def cancel_when_running():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ids = squeue_ids(name)
            if ids:
                time.sleep(1)
                subprocess.run(["scancel", ids[0]], env={"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin"})
                return
            time.sleep(0.3)

    threading.Thread(target=cancel_when_running, daemon=True).start()
    r = run("t-sleep", the_night, registry, test_airflow_db)
    assert r.states == {"submit": "success", "wait": "failed"}
    assert sacct_state(r.job_id).startswith("CANCELLED by 0")
    assert f"SLURM job {r.job_id}, state CANCELLED by 0" in r.log


def test_reschedule_mode_without_triggerer(registry, test_airflow_db):
    r = run("t-exit3", night(), registry, test_airflow_db, reschedule=1)
    assert r.states == {"submit": "success", "wait": "failed"}
    assert "new_state=deferred" not in r.log  # it poked and rescheduled, it never deferred
    assert f"SLURM job {r.job_id}, state FAILED, exit code 3" in r.log


def test_job_missing_from_accounting_fails_in_reschedule_mode_too(registry, test_airflow_db):
    r = run("t-ok", night(), registry, test_airflow_db, job_id="99999998", missing_timeout=3, reschedule=1)
    assert r.states == {"wait": "failed"}
    assert "SLURM job 99999998 is unknown to sacct and squeue after 3 s" in r.log


def test_job_missing_from_accounting_fails_loudly(registry, test_airflow_db):
    r = run("t-ok", night(), registry, test_airflow_db, job_id="99999999", missing_timeout=3)
    assert r.states == {"wait": "failed"}
    assert "SLURM job 99999999 is unknown to sacct and squeue after 3 s" in r.log


def test_resubmit_adopts_live_job(registry):
    """Re-running submit while its job is pending or running never starts a second job."""
    from hfc_tasks.provider.hooks import SlurmHook
    from hfc_tasks.registry import load_registry

    reg = load_registry(registry)
    site_cfg, frc = reg.site(), reg.frc("t-sleep")
    the_night = products.parse_night(night())
    name = products.job_name(frc.name, the_night)
    run_dir = products.run_dir(site_cfg.products_root, frc.name, the_night)
    hook = SlurmHook(site_cfg.cluster_conn_id)
    kwargs = dict(
        job_name=name, run_dir=run_dir, command="sleep 300", resources=frc.slurm,
        default_partition=site_cfg.default_partition, lock_file=f"{site_cfg.products_root}/.hfc-submit.lock",
    )
    try:
        first = hook.submit(**kwargs)
        second = hook.submit(**kwargs)
        third = hook.submit(**kwargs)
        assert first[0] == "SUBMIT" and second == ("ADOPT", first[1]) and third == ("ADOPT", first[1])
        assert squeue_ids(name) == [first[1]]
    finally:
        hook.cancel(first[1])
        hook.cancel(first[1])  # cancelling twice is harmless
        hook.close()


@pytest.mark.slow
def test_timeout(registry, test_airflow_db):
    r = run("t-timeout", night(), registry, test_airflow_db)
    assert r.states == {"submit": "success", "wait": "failed"}
    assert sacct_state(r.job_id).startswith("TIMEOUT")
    assert f"SLURM job {r.job_id}, state TIMEOUT" in r.log


def test_submissions_are_staggered(registry):
    """With stagger S, a second submission within S seconds is told to wait, then goes through."""
    from hfc_tasks.provider.hooks import SlurmHook
    from hfc_tasks.registry import load_registry

    reg = load_registry(registry)
    site_cfg, frc = reg.site(), reg.frc("t-ok")
    lock = f"{site_cfg.products_root}/_test_stagger/{random.randrange(10**9)}.lock"
    hook = SlurmHook(site_cfg.cluster_conn_id)
    submitted = []
    try:
        def submit():
            the_night = products.parse_night(night())
            return hook.submit(
                job_name=products.job_name(frc.name, the_night),
                run_dir=products.run_dir(site_cfg.products_root, frc.name, the_night),
                command="true", resources=frc.slurm, default_partition=site_cfg.default_partition,
                lock_file=lock, stagger_seconds=6,
            )

        first = submit()
        t_first = time.monotonic()
        assert first[0] == "SUBMIT"
        submitted.append(first[1])
        second = submit()
        assert second[0] == "WAIT" and 1 <= int(second[1]) <= 6
        time.sleep(int(second[1]))
        third = submit()
        assert third[0] == "SUBMIT" and time.monotonic() - t_first >= 5
        submitted.append(third[1])
    finally:
        hook.close()


def test_failure_notification_reaches_the_webhook(registry, test_airflow_db):
    """A failed task posts a notice through the apprise provider's notifier (a ``json://`` chat
    endpoint here: the test's HTTP listener), naming the FRC, the night and the stage."""
    chat = ChatListener()
    env, db = test_airflow_db
    conn = {"conn_type": "apprise", "extra": {"config": {"path": f"json://127.0.0.1:{chat.port}/hooks/hfc"}}}
    try:
        the_night = night()
        r = run("t-exit3", the_night, registry, ({**env, "AIRFLOW_CONN_HFC_NOTIFY": json.dumps(conn)}, db),
                notify="hfc_notify")
    finally:
        chat.close()
    assert r.states == {"submit": "success", "wait": "failed"}
    assert len(chat.received) == 1 and chat.received[0]["path"] == "/hooks/hfc"
    body = chat.received[0]["body"]
    assert body["type"] == "failure"
    assert body["title"] == f"HFC nightly: FRC t-exit3, stage wait, night {the_night}: task wait FAILED"
    assert "exit code 3" in body["message"] and "Log: http" in body["message"]
