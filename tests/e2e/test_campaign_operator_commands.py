"""``hfc campaign`` against a real Airflow instance, the site's SLURM and the catalogue (issue 15).

A campaign of 4 nights of a demo detector started with ``hfc campaign start`` (REST trigger of
DAG ``hfc_campaign``), one night made to fail (its command exits 3 while a flag file exists).
Once the run has ended, ``hfc campaign status`` gives 3 nights done (in the catalogue from the
campaign's run) and the failed one with SLURM's reason, as does the status page's
``api/campaigns`` and ``campaigns`` page. The flag removed, ``hfc campaign retry`` of that night
starts a run with ``retry_nights`` and ``retry_attempt`` 1; once it has succeeded, status gives
4 nights done, the retried one from the retry's chunk ``r1-0``.

Instance ``hbcamp`` (metadata database ``airflow_hbcamp``, port 8124, LocalExecutor, catalogue
database ``hfc_hbcamp``), its own registry, run folders and archive tree; stopped at the end,
pass or fail, its FRC's SLURM jobs cancelled.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import secrets
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from helpers import Instance, local_registry

from hfc_tasks.ops.localsite import slurm_conf_path

pytestmark = [pytest.mark.site, pytest.mark.slow]
DAG = "hfc_campaign"
FRC = "hb-spots"
PORT = 8124
INSTANCE = "hbcamp"
DEMO = "/usr/bin/python3 {frc_root}/demo_sunspots.py -s {start} -e {end} -c {cadence} -o {run_dir}"
FAIL_IF_FLAGGED = ('if [ -e {frc_root}/../hbcamp-fail/{night} ]; then echo "[test] night flagged to fail" >&2; '
                   "exit 3; fi; ")


def registry() -> str:
    return local_registry(INSTANCE, "tests/e2e/test_campaign_operator_commands.py", f"""\
  - name: {FRC}
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    command: {FAIL_IF_FLAGGED}{DEMO}
    cadence_seconds: 21600
    slurm: {{time: "00:10:00", mem: 256M, cpus: 1}}
""")


def cancel_our_jobs() -> None:
    slurm_env = {"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(["squeue", "-h", "-o", "%A|%j"], capture_output=True, text=True, env=slurm_env).stdout
    for line in out.split():
        job_id, _, name = line.partition("|")
        if name.startswith(f"hfc.{FRC}."):
            subprocess.run(["scancel", job_id], env=slurm_env, check=False)


@pytest.fixture(scope="module")
def instance(site):
    """(Instance whose hfc commands use the instance's catalogue, API client); stopped after."""
    inst = Instance.local(INSTANCE, PORT, registry())
    try:
        api = inst.up()
        api.wait_for_dag(DAG, timeout=180)
        api.patch(f"/dags/{DAG}", {"is_paused": False})
        inst.env["AIRFLOW_CONN_HFC_CATALOGUE"] = inst.stack_env()["AIRFLOW_CONN_HFC_CATALOGUE"]
        yield inst, api
        api.patch(f"/dags/{DAG}", {"is_paused": True})
    finally:
        cancel_our_jobs()
        down = inst.hfc("airflow", "down", timeout=200)
        assert down.returncode == 0, down.stderr[-2000:]


def wait_run(api, run_id: str, timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api.get(f"/dags/{DAG}/dagRuns/{urllib.parse.quote(run_id, safe='')}")["state"]
        if state in ("success", "failed"):
            return state
        time.sleep(3)
    raise AssertionError(f"run {run_id} not ended within {timeout} s")


def status(inst: Instance, cid: str) -> dict:
    proc = inst.hfc("campaign", "status", cid, "--json", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def page(api, path: str) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{PORT}/hfc-status/{path}",
                                 headers={"Authorization": f"Bearer {api.token}"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.status, resp.read().decode()


def test_start_status_page_and_retry_of_a_failed_night(instance):
    inst, api = instance
    first = dt.date(2060, 1, 1) + dt.timedelta(days=random.randrange(20 * 365))
    last = first + dt.timedelta(days=3)
    bad = first + dt.timedelta(days=1)
    cid = f"hb-{secrets.token_hex(3)}"
    flag = Path(os.environ["HFC_SITE_DIR"]) / "home" / "cluster" / "hbcamp-fail" / bad.isoformat()
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.write_text("fail\n")
    try:
        proc = inst.hfc("campaign", "start", "--frc", FRC, "--first", str(first), "--last", str(last),
                        "--version", "1.0.0", "--campaign-id", cid)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"campaign {cid}: FRC {FRC}, nights {first}..{last} (4, version 1.0.0)" in proc.stdout
        run_id = re.search(r"^run (\S+) of DAG hfc_campaign", proc.stdout, re.M).group(1)
        assert wait_run(api, run_id) == "failed"  # report: a night is not done

        st = status(inst, cid)
        assert st["counts"] == {"done": 3, "failed": 1, "cancelled": 0, "running": 0, "pending": 0}, st
        assert st["catalogue_read"] and st["finished"] and st["runs"] == [{"run_id": run_id, "state": "failed"}]
        array = st["arrays"]["0"]
        assert list(st["failed"]) == [bad.isoformat()]
        assert st["failed"][bad.isoformat()].startswith(f"job {array}_1, state FAILED, exit code 3"), st

        # the status page says the same
        code, body = page(api, "api/campaigns")
        mine = [c for c in json.loads(body)["campaigns"] if c["campaign_id"] == cid]
        assert code == 200 and len(mine) == 1 and mine[0]["counts"] == st["counts"], body[:2000]
        code, html = page(api, "campaigns")
        assert code == 200 and f'data-campaign="{cid}"' in html
        assert f'<li data-night="{bad}"><b>{bad}</b> job {array}_1, state FAILED, exit code 3' in html

        # retried alone once its cause is gone
        flag.unlink()
        proc = inst.hfc("campaign", "retry", cid, "--night", str(bad))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f"campaign {cid}: retry 1 of 1 night(s) {bad}: run " in proc.stdout
        retry_run = re.search(r": run (\S+) of DAG hfc_campaign", proc.stdout).group(1)
        conf = api.get(f"/dags/{DAG}/dagRuns/{urllib.parse.quote(retry_run, safe='')}")["conf"]
        assert conf["retry_nights"] == [str(bad)] and conf["retry_attempt"] == 1 and conf["campaign_id"] == cid
        assert wait_run(api, retry_run) == "success"
        st = status(inst, cid)
        assert st["counts"] == {"done": 4, "failed": 0, "cancelled": 0, "running": 0, "pending": 0}, st
        night = {n["night"]: n for n in st["night_states"]}[bad.isoformat()]
        assert night["chunk"] == "r1-0" and night["job_id"] == f"{st['arrays']['r1-0']}_0", night
    finally:
        flag.unlink(missing_ok=True)
