"""Reprocessing campaigns end to end (issue 15, part 1) on the real scheduler and the site's SLURM.

- 30 nights of a demo detector as one ``hfc_campaign`` run, one night made to fail (its command
  exits 3 while a flag file exists): the run ends red, ``report`` naming that night with SLURM's
  reason; the 29 other nights are archived (every manifest file on the archive with its sha256, the
  manifest carrying the campaign id and the night's array task id) and loaded (one catalogue batch
  per (FRC, night), dag_run_id = the campaign's run). Then the flag is removed and a retry run of
  that night alone (``retry_nights``, ``retry_attempt`` 1, same campaign id) succeeds: only that
  night is submitted (chunk ``r1-0`` of one task) and loaded again; the others keep the first run's
  batches.
- A cancel: a campaign of slow nights with the site's array throttle (4 at once), its chunk's
  pending tasks cancelled with :func:`hfc_tasks.campaign.cancel_command` once some nights are
  done: the run ends red listing the cancelled nights as CANCELLED, the nights done stay archived
  and loaded.

Instance ``hacamp`` (metadata database ``airflow_hacamp``, port 8122, LocalExecutor, catalogue
database ``hfc_hacamp``), its own registry, run folders and archive tree; stopped at the end, pass
or fail, its FRCs' SLURM jobs cancelled.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import re
import secrets
import shlex
import subprocess
import time
import urllib.parse
from pathlib import Path

import psycopg
import pytest
from helpers import Instance, local_registry

from hfc_tasks import campaign, products
from hfc_tasks.airflow_api import AirflowAPI
from hfc_tasks.ops.localsite import slurm_conf_path

pytestmark = [pytest.mark.site, pytest.mark.slow]
DAG = "hfc_campaign"
FRC = "ca-spots"
SLOW = "ca-slow"
PORT = 8122
INSTANCE = "hacamp"
THROTTLE = 4
DEMO = "/usr/bin/python3 {frc_root}/demo_sunspots.py -s {start} -e {end} -c {cadence} -o {run_dir}"
# The night's command fails (exit 3) while the flag file <cluster home>/hacamp-fail/<night> exists.
FAIL_IF_FLAGGED = ('if [ -e {frc_root}/../hacamp-fail/{night} ]; then echo "[test] night flagged to fail" >&2; '
                   "exit 3; fi; ")


def registry() -> str:
    text = local_registry(INSTANCE, "tests/e2e/test_campaign_dag.py", f"""\
  - name: {FRC}
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    command: {FAIL_IF_FLAGGED}{DEMO}
    cadence_seconds: 21600
    slurm: {{time: "00:10:00", mem: 256M, cpus: 1}}
  - name: {SLOW}
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    # ~15 s a night: with the throttle, most of a campaign's tasks stay pending for a while.
    command: sleep 15; {DEMO}
    cadence_seconds: 43200
    slurm: {{time: "00:10:00", mem: 256M, cpus: 1}}
""")
    site = "    stagger_seconds: 0\n"
    assert site in text
    return text.replace(site, site + f"    campaign_array_throttle: {THROTTLE}\n")


def slurm(*args: str, check: bool = True) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=check,
                          env={"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"}).stdout


def cancel_our_jobs() -> None:
    for line in slurm("squeue", "-h", "-o", "%F|%j").split():
        job_id, name = line.split("|")
        if name.startswith((f"hfc.{FRC}.", f"hfc.{SLOW}.")):
            slurm("scancel", job_id, check=False)


@pytest.fixture(scope="module")
def instance(site):
    """The instance up, its DAG unpaused: (API client, catalogue DSN, registry path). Always stopped after."""
    inst = Instance.local(INSTANCE, PORT, registry())
    try:
        api = inst.up()
        api.wait_for_dag(DAG, timeout=180)
        api.patch(f"/dags/{DAG}", {"is_paused": False})
        yield api, inst.stack_env()["HFC_CATALOGUE_DSN"], Path(inst.env["HFC_REGISTRY"])
        api.patch(f"/dags/{DAG}", {"is_paused": True})
        for state in ("queued", "running"):  # nothing of this instance left running
            for run in api.get(f"/dags/{DAG}/dagRuns?state={state}&limit=100")["dag_runs"]:
                api.patch(f"/dags/{DAG}/dagRuns/{q(run['dag_run_id'])}", {"state": "failed"})
    finally:
        cancel_our_jobs()
        down = inst.hfc("airflow", "down", timeout=200)
        assert down.returncode == 0, down.stderr[-2000:]


def q(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def trigger(api: AirflowAPI, conf: dict) -> str:
    return api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]


def tis(api: AirflowAPI, run_id: str) -> dict[str, str]:
    """task id (with [map index] for mapped tasks) -> state."""
    rows = api.get(f"/dags/{DAG}/dagRuns/{q(run_id)}/taskInstances?limit=1000")["task_instances"]
    return {ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"] for ti in rows}


def xcom(api: AirflowAPI, run_id: str, task_id: str, key: str = "return_value"):
    value = api.get(f"/dags/{DAG}/dagRuns/{q(run_id)}/taskInstances/{task_id}/xcomEntries/{key}"
                    "?deserialize=true")["value"]
    return json.loads(value) if isinstance(value, str) else value


def report_log(api: AirflowAPI, run_id: str) -> str:
    """The report task's log records (the failure's exception included) as text."""
    got = api.call("GET", f"/dags/{DAG}/dagRuns/{q(run_id)}/taskInstances/report/logs/1",
                   query={"full_content": "true"})
    return json.dumps(got).replace("\\n", "\n")


def run_seconds(api: AirflowAPI, run_id: str) -> float:
    run = api.get(f"/dags/{DAG}/dagRuns/{q(run_id)}")
    start, end = (dt.datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("start_date", "end_date"))
    return (end - start).total_seconds()


def batches(dsn: str, frc: str, first: dt.date, last: dt.date) -> dict[dt.date, tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("select night, dag_run_id, slurm_job_id, manifest_sha256, status, row_counts "
                            "from hfc.batch where frc = %s and night between %s and %s", (frc, first, last)).fetchall()
    return {r[0]: r[1:] for r in rows}


def check_archived(registry_path: Path, frc_name: str, night: dt.date, campaign_id: str, job_id: str,
                   manifest_sha: str) -> None:
    """The night's manifest on the archive: the campaign's, the array task's, every file there with its sha256."""
    from hfc_tasks.registry import load_registry

    reg = load_registry(registry_path)
    site_cfg, frc = reg.site("local"), reg.frc(frc_name)
    path = Path(site_cfg.archive_root) / products.manifest_relpath(frc.archive_dir, frc.name, night)
    raw = path.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == manifest_sha, (night, path)
    manifest = json.loads(raw)
    assert manifest["campaign_id"] == campaign_id, manifest
    assert manifest["slurm_job_id"] == job_id, manifest
    assert manifest["files"] or manifest.get("no_data"), manifest
    for entry in manifest["files"]:
        data = (Path(site_cfg.archive_root) / entry["archive_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry
    run_dir = Path(products.run_dir(site_cfg.products_root, frc.name, night))
    assert not any((run_dir / e["name"]).exists() for e in manifest["files"]), night  # deleted after verify


def a_range(days: int) -> tuple[dt.date, dt.date]:
    first = dt.date(2070, 1, 1) + dt.timedelta(days=random.randrange(20 * 365))
    return first, first + dt.timedelta(days=days - 1)


def test_thirty_nights_one_failed_then_retried_alone(instance):
    api, dsn, registry_path = instance
    first, last = a_range(30)
    bad = first + dt.timedelta(days=7)
    cid = f"t30-{secrets.token_hex(3)}"
    flag = Path(os.environ["HFC_SITE_DIR"]) / "home" / "cluster" / "hacamp-fail" / bad.isoformat()
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    try:
        run_id = trigger(api, {"frc": FRC, "first": first.isoformat(), "last": last.isoformat(),
                               "campaign_id": cid, "version": "1.0.0-reprocessed"})
        assert api.wait_run(DAG, run_id, timeout=900) == "failed", tis(api, run_id)
        seconds = run_seconds(api, run_id)
        print(f"\n30-night campaign {cid}: {seconds:.1f} s wall time ({seconds / 30:.2f} s per night)")
    finally:
        flag.unlink()
    states = tis(api, run_id)
    assert {k: v for k, v in states.items() if not k.startswith(("archive", "catalogue"))} == {
        "plan": "success", "submit": "success", "wait": "success", "report": "failed"}, states
    mapped = [k for k in states if k.startswith(("archive[", "catalogue["))]
    assert len(mapped) == 2 * 3 and all(states[k] == "success" for k in mapped), states  # 3 batches of 10

    # The red report names the night and SLURM's reason; only that one.
    log = report_log(api, run_id)
    assert f"{bad}: FAILED: SLURM job" in log and "exit code 3" in log, log[-3000:]
    assert "29 night(s) done, 1 failed, 0 cancelled of 30" in log, log[-3000:]

    # SLURM: one array chunk of 30 tasks, the flagged night's task failed with exit 3.
    waited = xcom(api, run_id, "wait")
    assert sorted(waited) == [(first + dt.timedelta(days=i)).isoformat() for i in range(30)]
    assert waited[bad.isoformat()]["state"] == "FAILED" and waited[bad.isoformat()]["exit_code"] == 3, waited
    arrays = xcom(api, run_id, "submit")
    assert list(arrays) == ["0"], arrays
    assert {w["job_id"] for w in waited.values()} == {f"{arrays['0']}_{i}" for i in range(30)}

    # Catalogue: one batch per done night, this run's, from its manifest (campaign id, version, job id).
    loaded = batches(dsn, FRC, first, last)
    assert sorted(loaded) == sorted(first + dt.timedelta(days=i) for i in range(30) if i != 7), sorted(loaded)
    for night, (dag_run_id, job_id, sha, status, _rows) in loaded.items():
        assert dag_run_id == run_id and job_id == waited[night.isoformat()]["job_id"], (night, dag_run_id, job_id)
        assert status in ("loaded", "no_data"), (night, status)
        check_archived(registry_path, FRC, night, cid, job_id, sha)
    with psycopg.connect(dsn) as conn:
        versions = {r[0] for r in conn.execute("select distinct frc_version from hfc.batch where frc = %s and "
                                                "night between %s and %s", (FRC, first, last))}
    assert versions == {"1.0.0-reprocessed"}

    # Retry the failed night alone, its flag removed: the run succeeds, only that night is processed.
    retry_id = trigger(api, {"frc": FRC, "first": first.isoformat(), "last": last.isoformat(), "campaign_id": cid,
                             "retry_nights": [bad.isoformat()], "retry_attempt": 1})
    assert api.wait_run(DAG, retry_id, timeout=600) == "success", (tis(api, retry_id), report_log(api, retry_id))
    plan = xcom(api, retry_id, "plan", key="plan")
    assert [c["nights"] for c in plan["chunks"]] == [[bad.isoformat()]]
    assert plan["chunks"][0]["job_name"] == f"hfc.{FRC}.campaign.{cid}.r1-0"
    retry_arrays = xcom(api, retry_id, "submit")
    assert list(retry_arrays) == ["r1-0"] and retry_arrays["r1-0"] != arrays["0"]
    after = batches(dsn, FRC, first, last)
    assert after[bad][0] == retry_id and after[bad][1] == f"{retry_arrays['r1-0']}_0", after[bad]
    check_archived(registry_path, FRC, bad, cid, after[bad][1], after[bad][2])
    assert {n: b for n, b in after.items() if n != bad} == loaded  # the other nights untouched


def test_cancel_keeps_the_done_nights(instance):
    api, dsn, registry_path = instance
    first, last = a_range(12)
    cid = f"tc-{secrets.token_hex(3)}"
    run_id = trigger(api, {"frc": SLOW, "first": first.isoformat(), "last": last.isoformat(), "campaign_id": cid})
    name = campaign.chunk_job_name(SLOW, cid, "0")
    deadline = time.monotonic() + 300
    array_id, done = None, 0
    while time.monotonic() < deadline:
        rows = [line.split("|") for line in slurm("squeue", "-h", "--states=all", f"--name={name}",
                                                  "-o", "%F|%i|%T").split()]
        if rows:
            array_id = rows[0][0]
            done = sum(1 for r in rows if r[2] == "COMPLETED")
            if done >= THROTTLE:
                break
        time.sleep(1)
    assert array_id and done >= THROTTLE, (array_id, done, tis(api, run_id))
    slurm(*shlex.split(campaign.cancel_command(array_id)))

    assert api.wait_run(DAG, run_id, timeout=600) == "failed", tis(api, run_id)
    waited = xcom(api, run_id, "wait")
    states = {n: w["state"] for n, w in waited.items()}
    completed = sorted(n for n, s in states.items() if s == "COMPLETED")
    cancelled = sorted(n for n, s in states.items() if s == "CANCELLED")
    assert len(completed) >= THROTTLE and cancelled and len(completed) + len(cancelled) == 12, states
    log = report_log(api, run_id)
    for night in cancelled:
        assert f"{night}: CANCELLED: SLURM job" in log, log[-3000:]
    assert f"{len(completed)} night(s) done, 0 failed, {len(cancelled)} cancelled of 12" in log, log[-3000:]
    loaded = batches(dsn, SLOW, first, last)
    assert sorted(n.isoformat() for n in loaded) == completed
    for night, (dag_run_id, job_id, sha, _status, _rows) in loaded.items():
        assert dag_run_id == run_id and re.fullmatch(rf"{array_id}_\d+", job_id), (night, dag_run_id, job_id)
        check_archived(registry_path, SLOW, night, cid, job_id, sha)
