"""Cluster faults on the multihost site (issue 10, faults 1 and 2), on the session's real stack
(tests/multihost/conftest.py: CeleryExecutor, two workers, the triggerer) and the real two-node SLURM.

1. ``slurmd`` on the node running a job is killed (SIGKILL, by its pid file): the controller
   marks the node DOWN after SlurmdTimeout (20 s here) and the job ends NODE_FAIL (the pipeline
   submits with ``--no-requeue`` unless the FRC's ``slurm.extra`` asks for ``--requeue``). The
   operator sees the ``wait`` failed at its first try (a job's end is final: retrying the wait
   would read the same end), its log naming the job, NODE_FAIL, the node and what to do. The
   operator restarts slurmd, the node returns (ReturnToService=2, else ``scontrol update ...
   state=resume``), a clear of ``submit`` with its downstream runs the night again: two jobs
   (NODE_FAIL, COMPLETED), `hfc audit --expect-jobs 2` exits 0.
   The job is kept RUNNING (the demo codes take ~2 s) by a FIFO under the name of the FRC's first
   ``.tmp`` file: its ``open()`` blocks as an FRC stuck on I/O would, no product code is changed.
2. ``slurmctld`` is restarted (SIGTERM, then started again inside login's namespace as the site
   does) while 20 ``wait`` tasks are deferred (a backfill of 10 nights x 2 FRCs while the
   partitions are DOWN, so the jobs stay PENDING): no wait fails or retries, every run succeeds,
   one job per (FRC, night), `hfc audit` exits 0 for each night.

Nights: 2024-05-01 .. 2024-05-31 only. Run alone: ``pytest -m multihost tests/multihost/test_faults_cluster.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hfc_tasks import products
from hfc_tasks.ops.localsite import multihost
from hfc_tasks.ops.localsite._util import pidfile_alive, read_pid, stop_pid

from .conftest import (
    ACTIVE_REGIONS,
    DAG,
    DETECTOR,
    TIMINGS,
    MHStack,
    backfill_runs,
    now_on_login,
    poll,
    set_partitions,
    slurm_admin,
)

pytestmark = pytest.mark.multihost

NODE = "node2"  # the only node where a cpus: 2 job fits
FAULT1_NIGHT = "2024-05-20"
FAULT2_NIGHTS = [f"2024-05-{d:02d}" for d in range(1, 11)]
FAULT2_FRCS = [DETECTOR, ACTIVE_REGIONS]


def _log(msg: str) -> None:
    print(f"[faults-cluster] {msg}", flush=True)


# --------------------------------------------------------------------- the operator's hands on login
def node_info(node: str) -> dict[str, str]:
    """State and Reason of a node, as `scontrol show node` gives them."""
    out = slurm_admin("scontrol", "-o", "show", "node", node).strip()
    return dict(re.findall(r"\b(State|Reason)=(.*?)(?= \w+=|$)", out))


def node_ready(node: str) -> bool:
    state = node_info(node).get("State", "").lower()
    return bool(state) and not any(s in state for s in ("down", "drain", "fail", "not_responding", "unknown"))


def restart_daemons_on(host: str) -> None:
    """Start what is not running on a host, inside its namespace, as `hfc site up --shape multihost` does."""
    multihost._run_inside(host, _log)


def partition_states() -> dict[str, str]:
    out = slurm_admin("scontrol", "-o", "show", "partition")
    states = {}
    for line in out.splitlines():
        fields = dict(t.partition("=")[::2] for t in line.split())
        states[fields.get("PartitionName", "?")] = fields.get("State", "?")
    return states


def sacct_job(stack: MHStack, job_id: str) -> str:
    rc, out, err = stack.login(f"sacct -X -n -P -j {job_id} -o JobIDRaw,State,NodeList,Reason; "
                               f"squeue -h --states=all -j {job_id} -o '%i|%T|%N|%r' 2>/dev/null; true")
    return out.strip() or err.strip()


# ------------------------------------------------------------------------------ fault 1
def _job_procs(node: str, marker: str) -> list[int]:
    """Processes of one job left on a node (by the run folder in their command line)."""
    pids = []
    for pid in multihost.ns_pids(node):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            pids.append(pid)
    return pids


def test_slurmd_killed_on_the_node_running_a_job(mh_stack: MHStack, mh):
    stack, frc, night = mh_stack, ACTIVE_REGIONS, FAULT1_NIGHT
    ymd = night.replace("-", "")
    lay = multihost.MHLayout.current()
    slurmd_pid_file = lay.node_file("pid", NODE)
    run_dir = Path(products.run_dir(mh["HFC_MH_PRODUCTS_ROOT"], frc, dt.date.fromisoformat(night)))
    # The FRC's first file (demo_active_regions.metadata_files) is written under <name>.tmp.
    hold = run_dir / "demoar_100_frc_info.csv.tmp"
    cluster = pwd.getpwnam("cluster")
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chown(run_dir, cluster.pw_uid, cluster.pw_gid)
    hold.unlink(missing_ok=True)
    os.mkfifo(hold, 0o666)
    os.chmod(hold, 0o666)
    since = now_on_login()
    t0 = time.monotonic()
    run_id = None
    try:
        run_id = stack.trigger(night, [frc])
        _log(f"fault 1: run {run_id} night {night} FRC {frc}")

        def running():
            rc, out, _ = stack.login(f"squeue -h --name=hfc.{frc}.{ymd} -o '%i|%T|%N'")
            rows = [r.split("|") for r in out.split()]
            return next((r for r in rows if r[1] == "RUNNING"), None)

        job_id, _, node = poll(f"job hfc.{frc}.{ymd} RUNNING", running, 180)
        assert node == NODE, f"the {frc} job runs on {node}, expected {NODE}"
        pid = read_pid(slurmd_pid_file)
        assert pid and pidfile_alive(slurmd_pid_file, "slurmd"), f"slurmd on {NODE} not running ({slurmd_pid_file})"
        os.kill(pid, signal.SIGKILL)
        t_kill = time.monotonic()
        _log(f"fault 1: job {job_id} RUNNING on {node}; slurmd (pid {pid}) killed with SIGKILL")

        # The controller notices (SlurmdTimeout 20 s): the node is DOWN and the job ends NODE_FAIL.
        def job_end():
            state = sacct_job(stack, job_id)
            return state if "NODE_FAIL" in state else None

        try:
            poll(f"job {job_id} NODE_FAIL", job_end, 120, 2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; sacct/squeue: {sacct_job(stack, job_id)!r}; {NODE}: {node_info(NODE)}; "
                                 f"wait: {stack.ti(run_id, f'{frc}.wait')['state']}") from None
        TIMINGS["fault1 kill -> NODE_FAIL"] = time.monotonic() - t_kill
        info = node_info(NODE)
        _log(f"fault 1: sacct {sacct_job(stack, job_id)!r}; {NODE} State={info.get('State')} "
             f"Reason={info.get('Reason')!r}")
        assert "DOWN" in info.get("State", ""), info

        # What the operator sees: `wait` failed at its first try, its log says job, state, node, what to do.
        state = stack.wait_task(run_id, f"{frc}.wait", ("failed", "success", "up_for_retry"), timeout=120)
        TIMINGS["fault1 kill -> wait failed"] = time.monotonic() - t_kill
        wait_ti = stack.ti(run_id, f"{frc}.wait")
        text = stack.task_log(run_id, f"{frc}.wait", wait_ti["try_number"])
        shown = "\n".join(line for line in text.splitlines() if job_id in line or "NODE_FAIL" in line)
        _log(f"fault 1: wait {state} at try {wait_ti['try_number']}; its log says:\n{shown}")
        assert state == "failed" and wait_ti["try_number"] == 1, f"wait {state} at try {wait_ti['try_number']}"
        for needle in (f"job {job_id}", "NODE_FAIL", NODE, f"FRC {frc} night {night}", "clear", "submit"):
            assert needle in shown, f"{needle!r} not in the wait's failure:\n{shown}"
        assert stack.wait_run(run_id, timeout=120) == "failed", stack.table(run_id)

        # The operator's repair (docs/runbook.md): start slurmd again on the node; it comes back by
        # itself (ReturnToService=2), else resume it by hand.
        restart_daemons_on(NODE)
        try:
            poll(f"{NODE} back in service", lambda: node_ready(NODE), 20)
        except AssertionError:
            slurm_admin("scontrol", "update", f"nodename={NODE}", "state=resume")
            poll(f"{NODE} resumed", lambda: node_ready(NODE), 30)
        # The controller has the new slurmd end what was left of the failed job on the node.
        left = _job_procs(NODE, str(run_dir))
        try:
            poll(f"job {job_id}'s processes gone from {NODE}", lambda: not _job_procs(NODE, str(run_dir)), 30)
        except AssertionError:
            _log(f"fault 1: processes of job {job_id} still on {NODE} after slurmd's restart: "
                 f"{_job_procs(NODE, str(run_dir))}: killed")
            for p in _job_procs(NODE, str(run_dir)):
                os.kill(p, signal.SIGKILL)
        _log(f"fault 1: {NODE} {node_info(NODE).get('State')}; processes of the failed job left at restart: {left}")
        hold.unlink()

        t_clear = time.monotonic()
        stack.clear(run_id, [f"{frc}.submit"], downstream=True)
        state = stack.wait_run(run_id, timeout=300)
        TIMINGS["fault1 clear -> run success"] = time.monotonic() - t_clear
        assert state == "success", stack.table(run_id)
        jobs = stack.jobs(frc, night, since)
        _log(f"fault 1: jobs since {since}: {jobs}")
        assert [(j[0], j[1], j[2]) for j in jobs][:1] == [(job_id, "NODE_FAIL", NODE)], jobs
        assert len(jobs) == 2 and jobs[1][1] == "COMPLETED", jobs
        stack.assert_audit(night, "--frc", frc, "--expect-jobs", "2", since=since)
    finally:
        if not pidfile_alive(slurmd_pid_file, "slurmd"):
            restart_daemons_on(NODE)
        for p in _job_procs(NODE, str(run_dir)):
            os.kill(p, signal.SIGKILL)
        hold.unlink(missing_ok=True)
        if not node_ready(NODE):
            slurm_admin("scontrol", "update", f"nodename={NODE}", "state=resume")
        if run_id and stack.api.get(f"/dags/{DAG}/dagRuns/{run_id}")["state"] not in ("success", "failed"):
            # The test failed half-way: end the run (its wait's trigger cancels the job).
            stack.api.patch(f"/dags/{DAG}/dagRuns/{run_id}", {"state": "failed"})
        TIMINGS["fault1"] = time.monotonic() - t0


# ------------------------------------------------------------------------------ fault 2
def _waits(stack: MHStack, runs: dict[str, dict]) -> dict[tuple[str, str], dict]:
    tis = {}
    for night, run in runs.items():
        for ti in stack.tis(run["dag_run_id"]):
            frc = ti["task_id"].removesuffix(".wait")
            if ti["task_id"].endswith(".wait") and frc in FAULT2_FRCS:  # the tracker's are skipped
                tis[(frc, night)] = ti
    return tis


def test_slurmctld_restarted_while_20_waits_are_deferred(mh_stack: MHStack):
    stack = mh_stack
    lay = multihost.MHLayout.current()
    since = now_on_login()
    t0 = time.monotonic()
    # Airflow runs one backfill of a DAG at a time: let an earlier test's backfill end first.
    poll("no backfill of the DAG in progress", lambda: not [
        b for b in stack.api.get(f"/backfills?dag_id={DAG}&limit=100")["backfills"] if not b.get("completed_at")],
        300, 3)
    set_partitions("DOWN")  # the jobs stay PENDING: every wait is deferred at once
    try:
        backfill = stack.api.post("/backfills", {
            "dag_id": DAG, "from_date": f"{FAULT2_NIGHTS[0]}T00:00:00Z", "to_date": f"{FAULT2_NIGHTS[-1]}T00:00:00Z",
            "reprocess_behavior": "completed", "max_active_runs": len(FAULT2_NIGHTS), "run_backwards": False,
            "dag_run_conf": {"frcs": FAULT2_FRCS}})
        _log(f"fault 2: backfill {backfill['id']} of {FAULT2_NIGHTS[0]}..{FAULT2_NIGHTS[-1]} {FAULT2_FRCS}")
        want = len(FAULT2_NIGHTS) * len(FAULT2_FRCS)

        def all_deferred():
            runs = backfill_runs(stack, FAULT2_NIGHTS)
            waits = _waits(stack, runs) if len(runs) == len(FAULT2_NIGHTS) else {}
            return (runs, waits) if sum(ti["state"] == "deferred" for ti in waits.values()) >= want else None

        runs, waits = poll(f"{want} waits deferred", all_deferred, 400, 3)
        TIMINGS["fault2 backfill -> 20 waits deferred"] = time.monotonic() - t0
        tries = {k: ti["try_number"] for k, ti in waits.items()}
        rc, pending, _ = stack.login("squeue -h -t PENDING -o '%i|%j|%r' | grep '|hfc\\.' ; true")
        _log(f"fault 2: {want} waits deferred; jobs pending:\n{pending.strip()}")
        assert len(pending.split()) >= want, pending

        # The fault: a clean restart of the controller (SIGTERM, started again inside login).
        t1 = time.monotonic()
        old = read_pid(lay.slurm_pid("slurmctld"))
        assert stop_pid(lay.slurm_pid("slurmctld"), "slurmctld"), "slurmctld was not running"
        restart_daemons_on("login")
        new = read_pid(lay.slurm_pid("slurmctld"))
        assert new and new != old and pidfile_alive(lay.slurm_pid("slurmctld"), "slurmctld"), (old, new)
        after_restart = partition_states()
        _log(f"fault 2: slurmctld restarted (pid {old} -> {new}) in {time.monotonic() - t1:.1f} s; "
             f"partitions after the restart: {after_restart}; waits now: "
             f"{sorted({str(ti['state']) for ti in _waits(stack, runs).values()})}")
        set_partitions("UP")

        deadline = time.monotonic() + 480
        for run in runs.values():
            stack.wait_run(run["dag_run_id"], timeout=max(10.0, deadline - time.monotonic()))
        TIMINGS["fault2 restart -> all runs ended"] = time.monotonic() - t1
        runs = backfill_runs(stack, FAULT2_NIGHTS)
        waits = _waits(stack, runs)
        bad = {k: (ti["state"], ti["try_number"]) for k, ti in waits.items()
               if ti["state"] != "success" or ti["try_number"] != tries[k]}
        assert not bad, f"waits that failed or retried after the restart (state, try): {bad}"
        failed = {n: r["state"] for n, r in runs.items() if r["state"] != "success"}
        assert not failed, {n: stack.table(r["dag_run_id"]) for n, r in runs.items() if n in failed}
        for frc in FAULT2_FRCS:
            for night in FAULT2_NIGHTS:
                jobs = stack.jobs(frc, night, since)
                assert len(jobs) == 1 and jobs[0][1] == "COMPLETED", (frc, night, jobs)
        t2 = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            procs = list(pool.map(lambda n: (n, stack.audit(n, *[a for f in FAULT2_FRCS for a in ("--frc", f)],
                                                            since=since)), FAULT2_NIGHTS))
        TIMINGS["fault2 audits"] = time.monotonic() - t2
        bad_audits = {n: f"exit {p.returncode}\n{p.stdout[-1500:]}\n{p.stderr[-800:]}" for n, p in procs
                      if p.returncode != 0}
        assert not bad_audits, bad_audits
        _log(f"fault 2: {len(procs)} audits exit 0")
    finally:
        if not pidfile_alive(lay.slurm_pid("slurmctld"), "slurmctld"):
            restart_daemons_on("login")
        set_partitions("UP")
        TIMINGS["fault2"] = time.monotonic() - t0
