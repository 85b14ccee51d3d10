"""The SLURM stage on the real scheduler and triggerer: deferred waits hold no worker slot
and share one SSH connection; marking or clearing a deferred wait cancels its job."""

from __future__ import annotations

import datetime as dt
import random
import re
import subprocess
import time

import pytest
import yaml

from hfc_tasks import products
from hfc_tasks.ops.localsite import slurm_conf_path
from hfc_tasks.registry import DEFAULT_REGISTRY

pytestmark = [pytest.mark.site, pytest.mark.slow]
DAG = "hfc_nightly"
N = 5


def slurm(*args: str) -> str:
    return subprocess.run(
        list(args), capture_output=True, text=True, check=True,
        env={"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"},
    ).stdout


def cancel_held_jobs() -> None:
    """Cancel the jobs of the held FRCs that any run of this module left on the cluster."""
    for line in slurm("squeue", "-h", "-o", "%i|%j").split():
        jid, name = line.split("|")
        if name.startswith("hfc.t-held-"):
            slurm("scancel", jid)


def sacct_state(job_id: str) -> str:
    out = slurm("sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State").strip().splitlines()
    return out[-1] if out else ""


def triggerer_ssh_connections(port: int = 22022) -> int:
    """Established connections to the site's sshd opened by the triggerer's processes."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", f"dst 127.0.0.1:{port}"],
                         capture_output=True, text=True, check=True).stdout
    pids = set(re.findall(r"pid=(\d+)", out))
    count = 0
    for pid in pids:
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "triggerer" in cmd:
            count += out.count(f"pid={pid},")
    return count


@pytest.fixture(scope="module")
def held_api(site, tmp_path_factory, stack_starter):
    """The stack running a registry of N FRCs whose jobs stay PENDING (--begin in an hour)."""
    raw = yaml.safe_load(DEFAULT_REGISTRY.read_text())
    raw["frcs"] = [
        {"name": f"t-held-{i}", "version": "1", "feature": "TEST", "observatory": "SDO", "instrument": "HMI",
         "command": "sleep 30", "slurm": {"extra": ["--begin=now+3600"]}}
        for i in range(1, N + 1)
    ]
    path = tmp_path_factory.mktemp("registry") / "registry.yaml"
    path.write_text(yaml.safe_dump(raw))
    api = stack_starter(str(path))
    yield api
    # Leave the stack on the project's registry for the next test module.
    stack_starter(None)


def test_deferred_waits_hold_no_slot_share_one_connection_and_cancel_on_mark_or_clear(held_api):
    api = held_api
    api.wait_for_dag(DAG)
    api.patch(f"/dags/{DAG}", {"is_paused": False})
    night = (dt.date(2040, 1, 1) + dt.timedelta(days=random.randrange(5000))).isoformat()
    run = api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"night": night}})
    run_id = run["dag_run_id"]
    waits = [f"t-held-{i}.wait" for i in range(1, N + 1)]
    try:
        for task in waits:
            api.wait_task(DAG, run_id, task, {"deferred"}, timeout=180)
        states = api.task_states(DAG, run_id)
        # Every wait is deferred: no task of the run occupies an executor slot.
        assert [t for t, s in states.items() if s == "running"] == []
        names = {products.job_name(f"t-held-{i}", products.parse_night(night)) for i in range(1, N + 1)}
        queue = slurm("squeue", "-h", "-o", "%i|%j|%T").split()
        jobs = {name: jid for jid, name, state in (line.split("|") for line in queue) if name in names}
        assert len(jobs) == N and all(
            line.endswith("|PENDING") for line in queue if line.split("|")[1] in names
        )
        # One shared poller: one SSH connection from the triggerer for N waits.
        time.sleep(3)
        assert triggerer_ssh_connections() == 1

        by_task = {f"t-held-{i}.wait": jobs[products.job_name(f"t-held-{i}", products.parse_night(night))]
                   for i in range(1, N + 1)}
        # Mark failed, mark success, clear: each cancels its job on the cluster.
        api.patch(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/t-held-1.wait", {"new_state": "failed"})
        api.patch(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/t-held-2.wait", {"new_state": "success"})
        api.post(f"/dags/{DAG}/clearTaskInstances",
                 {"dag_run_id": run_id, "task_ids": ["t-held-3.wait"], "dry_run": False, "only_failed": False})
        deadline = time.monotonic() + 90
        wanted = ("t-held-1.wait", "t-held-2.wait", "t-held-3.wait")
        while time.monotonic() < deadline and not all(
            sacct_state(by_task[t]).startswith("CANCELLED") for t in wanted
        ):
            time.sleep(2)
        assert {t: sacct_state(by_task[t]).split()[0] for t in wanted} == dict.fromkeys(wanted, "CANCELLED")
        # The others still wait, untouched.
        assert sacct_state(by_task["t-held-4.wait"]) == "PENDING"
    finally:
        api.patch(f"/dags/{DAG}/dagRuns/{run_id}", {"state": "failed"})
        api.patch(f"/dags/{DAG}", {"is_paused": True})
        cancel_held_jobs()


def test_a_wait_marked_while_no_triggerer_runs_its_trigger_still_cancels_its_job(held_api):
    """The race CI found on the multihost site, made certain: the triggerer is down, so no trigger
    ever runs (its ``on_kill`` cannot cancel anything). Marking the deferred wait failed (or
    success) must still cancel its job; the other FRC's job is untouched."""
    from hfc_tasks.ops import airflow_stack

    api = held_api
    api.wait_for_dag(DAG)
    api.patch(f"/dags/{DAG}", {"is_paused": False})
    night = (dt.date(2040, 1, 1) + dt.timedelta(days=random.randrange(5000))).isoformat()
    frcs = ["t-held-1", "t-held-2", "t-held-3"]
    airflow_stack.down(("triggerer",))
    run_id = None
    try:
        run = api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"night": night, "frcs": frcs}})
        run_id = run["dag_run_id"]
        for frc in frcs:
            api.wait_task(DAG, run_id, f"{frc}.wait", {"deferred"}, timeout=180)
        names = {products.job_name(frc, products.parse_night(night)): frc for frc in frcs}
        jobs = {names[name]: jid for jid, name, state in
                (line.split("|") for line in slurm("squeue", "-h", "-o", "%i|%j|%T").split()) if name in names}
        assert sorted(jobs) == frcs, jobs
        api.patch(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/t-held-1.wait", {"new_state": "failed"})
        api.patch(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/t-held-2.wait", {"new_state": "success"})
        deadline = time.monotonic() + 90
        marked = ("t-held-1", "t-held-2")
        while time.monotonic() < deadline and not all(sacct_state(jobs[f]).startswith("CANCELLED") for f in marked):
            time.sleep(2)
        assert {f: sacct_state(jobs[f]).split()[0] for f in marked} == dict.fromkeys(marked, "CANCELLED"), \
            "a wait marked before the triggerer ran its trigger left its job on the cluster"
        assert sacct_state(jobs["t-held-3"]) == "PENDING"
        assert api.task_states(DAG, run_id)["t-held-3.wait"] == "deferred"
    finally:
        airflow_stack.up(verbose=False)
        if run_id:
            api.patch(f"/dags/{DAG}/dagRuns/{run_id}", {"state": "failed"})
        api.patch(f"/dags/{DAG}", {"is_paused": True})
        cancel_held_jobs()
