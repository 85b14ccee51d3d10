"""The site's notifications on the real scheduler (issue 14). The catalogue deadline: a run whose FRC cannot reach the
catalogue in time (its SLURM job sleeps) makes the scheduler find the DAG's DeadlineAlert missed,
and the triggerer runs its callback, which sends the chat notice through the site's apprise
connection to a real HTTP listener of this test: it names the DAG run, the night and the FRC
that is not in the catalogue. A task that fails (an FRC exiting 3) sends the failure notice
through the same connection: FRC, night, stage and the link to the task's log.

Instance ``h4deadline`` of its own (metadata database ``airflow_h4deadline``, port 8104,
LocalExecutor, catalogue database ``hfc_h4deadline``) with a registry whose one FRC, run folders
and archive tree are its own. The deadline is the registry's (``catalogue_deadline: "06:00"``,
one day and six hours after the run's logical date): the run is triggered with a logical date
that puts it ~45 s ahead. Stopped at the end, pass or fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import time
import urllib.parse

import pytest
from helpers import ChatListener, Instance, local_registry

from hfc_tasks.ops.localsite import slurm_conf_path, state_dir

pytestmark = [pytest.mark.site, pytest.mark.slow]
DAG = "hfc_nightly"
FRC = "h4-late"
FAILING = "h4-fail"
PORT = 8104
INSTANCE = "h4deadline"
CHAT_CONN = "hfc_h4_chat"
AHEAD = dt.timedelta(seconds=45)  # the deadline, after the trigger


def registry() -> str:
    text = local_registry(INSTANCE, "tests/e2e/test_deadline_alert.py", f"""\
  - name: {FRC}
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    # Never done in time: the deadline passes while its job sleeps.
    command: sleep 900
    slurm: {{time: "00:20:00", mem: 64M, cpus: 1}}
  - name: {FAILING}
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    command: exit 3
    slurm: {{time: "00:05:00", mem: 64M, cpus: 1}}
""")
    site = "    stagger_seconds: 0\n"
    assert site in text
    # retry_delay_seconds 1: the failing FRC's last try (the one that notifies) comes in seconds.
    return text.replace(site, site + f'    notify: {{apprise_conn_id: {CHAT_CONN}}}\n    catalogue_deadline: "06:00"\n'
                                     '    retry_delay_seconds: 1\n')


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True,
                          env={"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"}).stdout


@pytest.fixture(scope="module")
def chat():
    listener = ChatListener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def instance(site, chat):
    """The h4deadline instance up, its DAG unpaused, its apprise connection posting to ``chat``.
    Always stopped after, its FRC's jobs cancelled."""
    path = state_dir() / INSTANCE / "registry.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(registry())
    conn = {"conn_type": "apprise", "extra": {"config": {"path": f"json://127.0.0.1:{chat.port}/hooks/hfc"}}}
    h4 = Instance({
        **os.environ,
        "HFC_AIRFLOW_INSTANCE": INSTANCE,
        "HFC_AIRFLOW_PORT": str(PORT),
        "HFC_AIRFLOW_EXECUTOR": "LocalExecutor",
        "HFC_AIRFLOW_CATALOGUE_DB": f"hfc_{INSTANCE}",
        "HFC_REGISTRY": str(path),
        f"AIRFLOW_CONN_{CHAT_CONN.upper()}": json.dumps(conn),
    })
    try:
        api = h4.up()
        api.wait_for_dag(DAG, timeout=180)
        api.patch(f"/dags/{DAG}", {"is_paused": False})
        yield api
        api.patch(f"/dags/{DAG}", {"is_paused": True})
        for state in ("queued", "running"):  # nothing of this instance left running
            for run in api.get(f"/dags/{DAG}/dagRuns?state={state}&limit=100")["dag_runs"]:
                api.patch(f"/dags/{DAG}/dagRuns/{urllib.parse.quote(run['dag_run_id'], safe='')}",
                          {"state": "failed"})
    finally:
        down = h4.hfc("airflow", "down", timeout=200)
        for line in slurm("squeue", "-h", "-o", "%i|%j").split():
            job_id, name = line.split("|")
            if name.startswith((f"hfc.{FRC}.", f"hfc.{FAILING}.")):
                slurm("scancel", job_id)
        assert down.returncode == 0, down.stderr[-2000:]


def test_missed_catalogue_deadline_is_announced(instance, chat):
    api = instance
    night = (dt.date(2061, 1, 1) + dt.timedelta(days=random.randrange(3000))).isoformat()
    due = dt.datetime.now(dt.UTC).replace(microsecond=0) + AHEAD
    # catalogue_deadline "06:00": due = logical date + 1 day + 6 h.
    logical = due - dt.timedelta(days=1, hours=6)
    run = api.post(f"/dags/{DAG}/dagRuns", {"logical_date": logical.isoformat(),
                                            "conf": {"night": night, "frcs": [FRC]}})
    run_id = run["dag_run_id"]

    def ours() -> list[dict]:
        # Unpausing also started the scheduled run of yesterday's night, whose 06:00 deadline may
        # be past already: its notice is real too, but this test follows its own run.
        return [n for n in chat.received if f"(DAG run {run_id})" in n["body"].get("title", "")]

    limit = time.monotonic() + AHEAD.total_seconds() + 180
    while not ours() and time.monotonic() < limit:
        time.sleep(1)
    states = api.task_states(DAG, run_id)
    assert ours(), f"no deadline notice within {AHEAD.total_seconds() + 180:.0f} s; tasks {states}; got {chat.received}"
    assert dt.datetime.now(dt.UTC) >= due  # not before its time
    assert states[f"{FRC}.catalogue"] != "success", states
    (notice,) = ours()
    assert notice["path"] == "/hooks/hfc"
    body = notice["body"]
    assert body["type"] == "warning"
    assert body["title"] == f"HFC nightly: night {night} is not in the catalogue by 06:00 UTC (DAG run {run_id})"
    message = body["message"]
    assert f"DAG run: {DAG} / {run_id}" in message, message
    assert f"Night: {night}" in message, message
    # The triggerer read the run's task states: the FRC still out is named.
    assert f"FRCs not in the catalogue yet: {FRC}" in message, message
    deadline = dt.datetime.fromisoformat(message.split("Deadline: ", 1)[1].splitlines()[0])
    assert deadline == due, message
    time.sleep(5)
    assert len(ours()) == 1, chat.received  # one notice per missed deadline


def test_failed_task_notice_names_frc_night_stage_and_log(instance, chat):
    api = instance
    night = (dt.date(2061, 1, 1) + dt.timedelta(days=random.randrange(3000))).isoformat()
    run_id = api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None,
                                               "conf": {"night": night, "frcs": [FAILING]}})["dag_run_id"]
    assert api.wait_run(DAG, run_id, timeout=300) == "failed"
    states = api.task_states(DAG, run_id)
    assert states[f"{FAILING}.wait"] == "failed", states

    def ours() -> list[dict]:
        return [n for n in chat.received if f"DAG run: {run_id}," in n["body"].get("message", "")]

    limit = time.monotonic() + 60  # the callback runs after the task's state is recorded
    while not ours() and time.monotonic() < limit:
        time.sleep(1)
    (notice,) = ours()
    body = notice["body"]
    assert body["type"] == "failure"
    assert body["title"] == f"HFC nightly: FRC {FAILING}, stage wait, night {night}: task {FAILING}.wait FAILED"
    message = body["message"]
    # try 1: a job's end is final, the wait is not retried.
    for line in (f"FRC: {FAILING}", f"Night: {night}", "Stage: wait", f"DAG run: {run_id}, try 1"):
        assert line in message, message
    log = message.split("Log: ", 1)[1].splitlines()[0]
    assert log.startswith(f"http://127.0.0.1:{PORT}/dags/{DAG}/runs/") and f"{FAILING}.wait" in log, log
    assert "exit code 3" in message, message
