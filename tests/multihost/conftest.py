"""Fixtures of the multihost tests (issue 10): the multihost site and ONE Airflow stack for all of
them (instance ``mh``: CeleryExecutor, two workers, Redis 6410, api-server 8110), started once per
session with the project's production-shaped registry ``config/registry.multihost.yaml`` and the
connections that ``hfc site env --shape multihost`` prints, exactly as docs/connections.md writes
them. Starting a stack costs ~40 s: every multihost test shares it, each on nights of its own.

A test that breaks a part of the stack (kills a worker, the triggerer) must leave it whole again:
``MHStack.restore()`` starts what is missing, as the runbook tells the operator (`hfc airflow up`).
Run alone: ``pytest -m multihost tests/multihost`` (as root).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import paramiko
import pytest
from helpers import Instance, pinned_ssh_client

from hfc_tasks.airflow_api import AirflowAPI
from hfc_tasks.ops.localsite import multihost

REPO = Path(__file__).resolve().parents[2]
DAG = "hfc_nightly"
PORT, REDIS_PORT, INSTANCE = 8110, 6410, "mh"
REGISTRY = REPO / "config" / "registry.multihost.yaml"
DETECTOR, TRACKER, ACTIVE_REGIONS = "demo-sunspots", "demo-sunspot-tracking", "demo-active-regions"
STAGES = ("submit", "wait", "archive", "catalogue")
# Settings of the test stack that differ from Airflow's defaults, each for a drill's time:
STACK_SETTINGS = {
    # A task whose worker died (SIGKILL) is failed (then retried) after this many seconds
    # without a heartbeat; Airflow's default is 300.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "45",
}
TIMINGS: dict[str, float] = {}


def pytest_collection_modifyitems(config, items):
    """The site's own life-cycle tests (test_multihost_site.py: down, up, down again) run before
    any test that uses the session's site and stack, never in the middle of them; then the
    scheduled night (the stack unpauses the DAG: its first run is that night's, undisturbed)."""
    first = {"test_multihost_site.py": 0, "test_multihost_night.py": 1}
    items.sort(key=lambda item: first.get(item.path.name, 2))


@pytest.fixture(scope="session")
def mh() -> Iterator[dict[str, str]]:
    """The multihost site: used as found when it runs, else brought up and taken down at the end."""
    started = not all(multihost.status(print_table=False).values())
    t0 = time.monotonic()
    if started:
        multihost.up(verbose=False)
    TIMINGS["site up"] = time.monotonic() - t0
    try:
        yield multihost.env_vars()
    finally:
        if started:
            multihost.down()
        print(f"\n[multihost] timings (s): {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


def load_registry(path: Path, mh_env: dict[str, str]):
    from unittest import mock

    from hfc_tasks.registry import load_registry as _load

    with mock.patch.dict(os.environ, mh_env):
        return _load(path)


def hfc(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return Instance(env).hfc(*args, timeout=timeout)


def ssh_client(conn_json: str) -> paramiko.SSHClient:
    """An SSH client as the connection says (key file, pinned host key, no trust on first use)."""
    return pinned_ssh_client(json.loads(conn_json))


def ssh_exec(client: paramiko.SSHClient, cmd: str, timeout: float = 60) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(cmd, timeout=timeout)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


@dataclass
class MHStack:
    """The running stack ``mh`` and what the tests do with it (all through its REST API, the
    `hfc` CLI and the connections, as an operator would)."""

    api: AirflowAPI
    env: dict[str, str]
    mh: dict[str, str]
    registry: Path
    reg: object
    run_dir: Path
    started_runs: list[str] = field(default_factory=list)

    # ---- runs
    def trigger(self, night: str, frcs: list[str] | None = None, run_id: str | None = None) -> str:
        body: dict = {"logical_date": None, "conf": {"night": night, **({"frcs": frcs} if frcs else {})}}
        if run_id:
            body["dag_run_id"] = run_id
        run = self.api.post(f"/dags/{DAG}/dagRuns", body)
        self.started_runs.append(run["dag_run_id"])
        return run["dag_run_id"]

    def wait_run(self, run_id: str, timeout: float = 600) -> str:
        return self.api.wait_run(DAG, run_id, timeout=timeout)

    def tis(self, run_id: str) -> list[dict]:
        return self.api.get(f"/dags/{DAG}/dagRuns/{quote_run(run_id)}/taskInstances?limit=1000")["task_instances"]

    def ti(self, run_id: str, task_id: str) -> dict:
        return self.api.get(f"/dags/{DAG}/dagRuns/{quote_run(run_id)}/taskInstances/{task_id}")

    def states(self, run_id: str) -> dict[str, str | None]:
        return {t["task_id"]: t["state"] for t in self.tis(run_id)}

    def try_numbers(self, run_id: str) -> dict[str, int]:
        return {t["task_id"]: t["try_number"] for t in self.tis(run_id)}

    def tries(self, run_id: str, task_id: str) -> list[dict]:
        """Every try of a task (REST), the current one included."""
        out = self.api.get(f"/dags/{DAG}/dagRuns/{quote_run(run_id)}/taskInstances/{task_id}/tries")["task_instances"]
        return sorted(out, key=lambda t: t["try_number"])

    def table(self, run_id: str) -> str:
        return "\n".join(f"  {t['task_id']:<34} {t['state'] or '-':<10} {(t['hostname'] or '-'):<28} "
                         f"try {t['try_number']} {(t.get('duration') or 0):6.1f} s"
                         for t in sorted(self.tis(run_id), key=lambda t: t["task_id"]))

    def wait_task(self, run_id: str, task_id: str, states: tuple[str, ...], timeout: float = 300) -> str:
        return self.api.wait_task(DAG, run_id, task_id, states, timeout=timeout)

    def clear(self, run_id: str, task_ids: list[str], downstream: bool = False) -> None:
        """Clear task instances as the runbook says (REST clearTaskInstances)."""
        self.api.post(f"/dags/{DAG}/clearTaskInstances",
                      {"dag_run_id": run_id, "task_ids": task_ids, "only_failed": False, "dry_run": False,
                       "include_downstream": downstream, "reset_dag_runs": True})

    def task_log(self, run_id: str, task_id: str, try_number: int) -> str:
        """The task's own log (what the operator reads in the UI), as text."""
        out = self.api.call("GET", f"/dags/{DAG}/dagRuns/{quote_run(run_id)}/taskInstances/{task_id}/logs/"
                                   f"{try_number}?full_content=true")
        content = (out or {}).get("content", "")
        if isinstance(content, list):
            return "\n".join(e.get("event", "") + (" " + json.dumps({k: v for k, v in e.items()
                                                                     if k not in ("event", "timestamp")})
                                                   if len(e) > 2 else "") if isinstance(e, dict) else str(e)
                             for e in content)
        return str(content)

    # ---- checks
    def audit(self, night: str, *args: str, since: str | None = None) -> subprocess.CompletedProcess:
        cmd = ["--registry", str(self.registry), "audit", "--night", night, *args]
        if since:
            cmd += ["--since", since]
        return hfc(self.env, *cmd, timeout=300)

    def assert_audit(self, night: str, *args: str, since: str | None = None) -> str:
        proc = self.audit(night, *args, since=since)
        text = f"hfc audit --night {night} {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        print(f"[multihost] {text}")
        assert proc.returncode == 0, text
        return proc.stdout

    def login(self, cmd: str, timeout: float = 60) -> tuple[int, str, str]:
        client = ssh_client(self.mh["AIRFLOW_CONN_HFC_MH_CLUSTER"])
        try:
            return ssh_exec(client, cmd, timeout)
        finally:
            client.close()

    def jobs(self, frc: str, night: str, since: str) -> list[list[str]]:
        """sacct on login: this (FRC, night)'s jobs submitted since `since` (JobID, State, Nodes)."""
        ymd = night.replace("-", "")
        rc, out, err = self.login(f"sacct -X -n -P --name=hfc.{frc}.{ymd} -S {since} -E now "
                                  "-o JobIDRaw,State,NodeList,Partition,AllocCPUS")
        assert rc == 0, f"sacct on login: {err}"
        return [r.split("|") for r in out.splitlines() if r.strip()]  # a state may hold spaces

    # ---- the stack's own processes
    def pid(self, component: str) -> int | None:
        try:
            return int((self.run_dir / f"{component}.pid").read_text().split()[0])
        except (OSError, ValueError):
            return None

    def restore(self) -> None:
        """Start the components that are not running (`hfc airflow up`, as the runbook says)."""
        proc = hfc(self.env, "airflow", "up")
        assert proc.returncode == 0, f"hfc airflow up (mh) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    def end_all_runs(self, timeout: float = 300) -> None:
        """Let every run of the DAG end (a test must not leave work behind for the next one)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.api.get(f"/dags/{DAG}/dagRuns?limit=200&order_by=-start_date")["dag_runs"]
            if all(r["state"] in ("success", "failed") for r in runs):
                return
            time.sleep(3)
        left = [(r["dag_run_id"], r["state"]) for r in runs if r["state"] not in ("success", "failed")]
        raise AssertionError(f"runs still going after {timeout} s: {left}")


def slurm_admin(*args: str, timeout: float = 30) -> str:
    """A SLURM administrator's command (scontrol update/show ...) as root on login: what the
    cluster's admins do, not the pipeline (its `cluster` account may not). Returns its stdout."""
    lay = multihost.MHLayout.current()
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{multihost.netns('login')}", "timeout", str(int(timeout)),
                           *args], env={**os.environ, **lay.slurm_env}, capture_output=True, text=True,
                          timeout=timeout + 10)
    assert proc.returncode == 0, f"{' '.join(args)} on login: exit {proc.returncode}: {proc.stderr.strip()}"
    return proc.stdout


def set_partitions(state: str) -> None:
    """Every partition of the site UP or DOWN (DOWN: new jobs stay PENDING, their waits deferred)."""
    for part in multihost.PARTITIONS:
        slurm_admin("scontrol", "update", f"PartitionName={part}", f"State={state}")


def quote_run(run_id: str) -> str:
    """A run id in a URL path: manual__2026-...T04:21:10.561589+00:00 holds ':' and '+'."""
    return quote(run_id, safe="")


def now_on_login() -> str:
    """sacct -S takes the login host's clock, which is this machine's: ISO seconds, local time."""
    return dt.datetime.now().replace(microsecond=0).isoformat()


def poll(what: str, check: Callable[[], object], timeout: float, every: float = 0.5):
    """check() until it returns something true; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s (last: {value!r})")
        time.sleep(every)


def backfill_runs(stack: MHStack, nights: list[str]) -> dict[str, dict]:
    """The latest run of each of these nights (consecutive, sorted), by night."""
    runs = stack.api.get(f"/dags/{DAG}/dagRuns?limit=100&order_by=-id"
                         f"&logical_date_gte={nights[0]}T00:00:00Z"
                         f"&logical_date_lte={nights[-1]}T00:00:00Z")["dag_runs"]
    out: dict[str, dict] = {}
    for r in runs:
        out.setdefault(r["data_interval_start"][:10], r)
    return out


# The root namespace's end of the archive host's link: its egress is what the workers send to
# the archive (tc shapes it).
ARCHIVE_LINK = multihost.veth("archive")


def tc(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["tc", *args], capture_output=True, text=True, timeout=20)
    assert not check or proc.returncode == 0, f"tc {' '.join(args)}: {proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def mh_stack(site, mh) -> Iterator[MHStack]:
    """Instance ``mh`` with the multihost connections and registry; stopped at the end, pass or fail.
    The DAG is unpaused for the whole session (the scheduler starts the latest scheduled night)."""
    reg = load_registry(REGISTRY, mh)
    env = {**os.environ, **mh, **STACK_SETTINGS,
           "HFC_AIRFLOW_INSTANCE": INSTANCE, "HFC_AIRFLOW_PORT": str(PORT),
           "HFC_AIRFLOW_EXECUTOR": "CeleryExecutor", "HFC_REDIS_PORT": str(REDIS_PORT),
           "HFC_CELERY_WORKERS": "2", "HFC_REGISTRY": str(REGISTRY)}
    t0 = time.monotonic()
    api = None
    try:
        instance = Instance(env)
        api = instance.up()
        senv = instance.stack_env()
        api.wait_for_dag(DAG, timeout=180)
        api.patch(f"/dags/{DAG}", {"is_paused": False})  # also starts the latest scheduled night
        # A run left unfinished by a killed earlier session would hold its night: end it first.
        for old in api.get(f"/dags/{DAG}/dagRuns?limit=200")["dag_runs"]:
            if old["state"] not in ("success", "failed"):
                api.patch(f"/dags/{DAG}/dagRuns/{old['dag_run_id']}", {"state": "failed"})
        TIMINGS["stack up"] = time.monotonic() - t0
        stack = MHStack(api=api, env=env, mh=mh, registry=REGISTRY, reg=reg,
                        run_dir=Path(senv["AIRFLOW_HOME"]) / f"stack-{INSTANCE}")
        yield stack
    finally:
        t1 = time.monotonic()
        if api is not None:
            try:
                # Paused runs stop being scheduled: let them end first, so that no job or task is
                # left behind when the stack stops.
                MHStack(api, env, mh, REGISTRY, reg, Path()).end_all_runs(timeout=300)
            finally:
                api.patch(f"/dags/{DAG}", {"is_paused": True})
        down = hfc(env, "airflow", "down", timeout=300)
        TIMINGS["stack down"] = time.monotonic() - t1
        assert down.returncode == 0, f"hfc airflow down (mh) failed:\n{down.stdout[-3000:]}\n{down.stderr[-3000:]}"
