"""Never hang, always say why (issue 16, items 8 and 9) on the real scheduler and triggerer.

An Airflow instance of its own (``h2wait``: port 8101, LocalExecutor, metadata database
``airflow_h2wait``, catalogue database ``hfc_h2wait``) runs the DAG of
``fault_dags/hfc_connection_faults.py`` with a registry whose sites each break one connection
(``AIRFLOW_CONN_H2_*`` variables of the instance). One DAG run covers every case:

- ``wait`` (in the triggerer) with no host key, a bare base64 key, a changed key, an unknown
  connection id, a refused login: failed at once, try 1 (no retry), the reason in the task's log;
- ``wait`` on a cluster that never answers: failed after the site's ``cluster_unreachable_seconds``
  with the last error; ``wait`` on a job that stays queued: failed after the FRC's time limit +
  the site's ``wait_margin_seconds`` (the deferral's timeout), the job left in the queue;
- ``wait`` over a ``known_hosts`` file that has the host: succeeds;
- ``submit``, ``archive`` and ``catalogue`` with a connection that cannot work: failed at once,
  try 1, the fix in the message (``submit`` used to be retried 3 times over ~12 minutes).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import socket
import subprocess
from pathlib import Path

import asyncssh
import pytest
from helpers import Instance

from hfc_tasks.airflow_api import AirflowAPI

pytestmark = [pytest.mark.site, pytest.mark.slow]

PORT = 8101
DAG = "hfc_connection_faults"
FAULT_DAGS = Path(__file__).resolve().parent / "fault_dags"

SITE = """\
    products_root: ${HFC_SITE_DIR}/home/cluster/products/_h2
    frc_root: ${HFC_SITE_DIR}/home/cluster/frcs
    archive_root: ${HFC_SITE_DIR}/home/archive/hfc/_h2
    public_url_base: file://${HFC_SITE_DIR}/home/archive/hfc/_h2
    default_partition: debug
    cluster_unreachable_seconds: 15
"""
SITES = {  # site -> (cluster connection, archive connection, extra settings)
    "good": ("hfc_cluster", "hfc_archive", ""),
    "nokey": ("h2_nokey", "hfc_archive", ""),
    "bare": ("h2_bare", "hfc_archive", ""),
    "changed": ("h2_changed", "hfc_archive", ""),
    "unknown": ("h2_undefined", "hfc_archive", ""),
    "authfail": ("h2_authfail", "hfc_archive", ""),
    "unreachable": ("h2_unreachable", "hfc_archive", ""),
    "knownhosts": ("h2_knownhosts", "hfc_archive", ""),
    "timeout": ("hfc_cluster", "hfc_archive", "    wait_margin_seconds: 5\n"),
    "archnokey": ("hfc_cluster", "h2_archive_nokey", ""),
}
FRC = """\
  - name: {name}
    version: "1"
    feature: TEST
    observatory: SDO
    instrument: HMI
    command: {command}
    slurm: {slurm}
"""
WAIT_FAILS_AT_ONCE = {  # site -> what the task's log must say
    "nokey": "has no host_key extra and known_hosts file",
    "bare": "is a bare base64 key: write it with its type",
    "changed": "the host's key is not the one configured",
    "unknown": "connection 'h2_undefined' is not defined",
    "authfail": "the host refused the login",
}


def registry() -> str:
    sites = "".join(
        f"  {name}:\n    cluster_conn_id: {cluster}\n    archive_conn_id: {archive}\n{SITE}{extra}"
        for name, (cluster, archive, extra) in SITES.items())
    frcs = [FRC.format(name=f"h2w-{s}", command="'true'", slurm='{time: "1"}')
            for s in (*WAIT_FAILS_AT_ONCE, "unreachable", "knownhosts")]
    frcs.append(FRC.format(name="h2w-timeout", command="'true'",
                           slurm='{time: "1", extra: ["--begin=now+3600"]}'))
    frcs += [FRC.format(name=f"h2s-{s}", command="'true'", slurm='{time: "1"}') for s in ("nokey", "authfail")]
    frcs.append(FRC.format(name="h2a-archnokey", command="'true'", slurm='{time: "1"}'))
    return f"default_site: good\nsites:\n{sites}frcs:\n{''.join(frcs)}"


def connections(site: dict[str, str], tmp: Path) -> dict[str, str]:
    cluster = json.loads(site["AIRFLOW_CONN_HFC_CLUSTER"])
    archive = json.loads(site["AIRFLOW_CONN_HFC_ARCHIVE"])
    key = cluster["extra"]["host_key"]
    entry = f"[{cluster['host']}]:{cluster['port']}"
    (tmp / "empty_known_hosts").write_text("")
    (tmp / "known_hosts").write_text(f"{entry} {key}\n")
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]

    def conn(base: dict, extra: dict, **over) -> str:
        plain = {k: v for k, v in base.items() if k != "extra"}
        return json.dumps({**plain, **over, "extra": {"key_file": base["extra"]["key_file"], **extra}})

    return {
        # the compose .env shape: no host_key, and no line for the host in the known_hosts file
        "AIRFLOW_CONN_H2_NOKEY": conn(cluster, {"known_hosts": str(tmp / "empty_known_hosts")}),
        "AIRFLOW_CONN_H2_BARE": conn(cluster, {"host_key": key.split()[1]}),
        "AIRFLOW_CONN_H2_CHANGED": conn(cluster, {"host_key": other}),
        "AIRFLOW_CONN_H2_AUTHFAIL": conn(cluster, {"host_key": key}, login="h2-nobody"),
        "AIRFLOW_CONN_H2_UNREACHABLE": conn(cluster, {"host_key": key}, port=closed),
        "AIRFLOW_CONN_H2_KNOWNHOSTS": conn(cluster, {"known_hosts": str(tmp / "known_hosts")}),
        "AIRFLOW_CONN_H2_ARCHIVE_NOKEY": conn(archive, {"known_hosts": str(tmp / "empty_known_hosts")}),
    }


@pytest.fixture(scope="module")
def faults_api(site, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("h2wait")
    (tmp / "registry.yaml").write_text(registry())
    bundle = [{"name": "hfc-connection-faults", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
               "kwargs": {"path": str(FAULT_DAGS), "refresh_interval": 0}}]
    env = {
        **os.environ, **site, **connections(site, tmp),
        "HFC_AIRFLOW_INSTANCE": "h2wait",
        "HFC_AIRFLOW_PORT": str(PORT),
        "HFC_AIRFLOW_EXECUTOR": "LocalExecutor",
        "HFC_AIRFLOW_CATALOGUE_DB": "hfc_h2wait",
        "HFC_REGISTRY": str(tmp / "registry.yaml"),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundle),
    }
    h2wait = Instance(env)
    try:
        yield h2wait.up()
    finally:
        down = h2wait.hfc("airflow", "down")
        assert down.returncode == 0, down.stderr[-2000:]
        # jobs the run left queued (the timeout case leaves its job, by design)
        from hfc_tasks.ops.localsite import slurm_conf_path

        slurm_env = {"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"}
        queue = subprocess.run(["squeue", "-h", "-o", "%i|%j"], env=slurm_env, capture_output=True, text=True)
        for line in queue.stdout.split():
            jid, name = line.split("|")
            if name.startswith("hfc.h2"):
                subprocess.run(["scancel", jid], env=slurm_env, check=False)


def task(api: AirflowAPI, run_id: str, task_id: str) -> dict:
    return api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}")


def task_log(api: AirflowAPI, run_id: str, task_id: str, try_number: int) -> str:
    got = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}?full_content=true")
    return json.dumps(got["content"])


def test_configuration_errors_fail_at_once_and_waits_never_hang(faults_api):
    api = faults_api
    api.wait_for_dag(DAG, timeout=180)
    api.patch(f"/dags/{DAG}", {"is_paused": False})
    night = (dt.date(2045, 1, 1) + dt.timedelta(days=random.randrange(5000))).isoformat()
    run_id = api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"night": night}})["dag_run_id"]
    try:
        state = api.wait_run(DAG, run_id, timeout=420)
        states = api.task_states(DAG, run_id)
    finally:
        api.patch(f"/dags/{DAG}", {"is_paused": True})
    assert state == "failed"
    problems = []

    def expect(task_id: str, wanted_state: str, text: str | None = None) -> None:
        ti = task(api, run_id, task_id)
        log = task_log(api, run_id, task_id, ti["try_number"]) if text else ""
        if ti["state"] != wanted_state or ti["try_number"] != 1 or (text and text not in log):
            problems.append(f"{task_id}: {ti['state']} try {ti['try_number']}, wanted {wanted_state} try 1"
                            + (f" with {text!r} in its log; log ends: {log[-1500:]}" if text else ""))

    for site, text in WAIT_FAILS_AT_ONCE.items():
        expect(f"h2w-{site}.submit", "success")
        expect(f"h2w-{site}.wait", "failed", text)
    expect("h2w-unreachable.wait", "failed", "cluster_unreachable_seconds: 15 s); last error")
    expect("h2w-timeout.wait", "failed", "has not ended within 65 s")
    expect("h2w-knownhosts.wait", "success")
    expect("h2s-nokey.submit", "failed", "has no host_key extra and known_hosts file")
    expect("h2s-authfail.submit", "failed", "the host refused the login")
    expect("h2a-archnokey.archive", "failed", "connection 'h2_archive_nokey'")
    expect("h2a-archnokey.catalogue", "failed", "connection 'h2_archive_nokey'")
    assert problems == [], "\n".join(problems) + f"\nall states: {states}"
