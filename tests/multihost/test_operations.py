"""The operators' repertoire on the multihost site (issue 10), with the session's stack ``mh``
(CeleryExecutor, two workers) and the production-shaped registry: clear one FRC's ``archive``;
clear another's ``submit`` with downstream; mark a just-deferred ``wait`` failed, then recompute.
Each is followed by ``hfc audit`` of the night. (The scheduled night is in
test_multihost_night.py, the backfill of 7 nights in test_faults_archive.py.)

Nights 2024-04-*: this module's own (the audit and the catalogue are per FRC and night).
"""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from .conftest import (
    ACTIVE_REGIONS,
    DAG,
    DETECTOR,
    TIMINGS,
    TRACKER,
    MHStack,
    now_on_login,
    quote_run,
    set_partitions,
    ssh_client,
)

pytestmark = pytest.mark.multihost

NIGHT_CLEARS = "2024-04-01"
NIGHT_MARK_FAILED = "2024-04-02"


def _archive_state(stack: MHStack, frcs: list[str], night: str) -> dict[str, dict[str, tuple[str, float]]]:
    """{frc: {archive_path: (sha256 of the manifest, mtime on the archive host)}}."""
    reg = {f.name: f for f in stack.reg.enabled_frcs}
    root = stack.mh["HFC_MH_ARCHIVE_ROOT"]
    client = ssh_client(stack.mh["AIRFLOW_CONN_HFC_MH_ARCHIVE"])
    out: dict[str, dict[str, tuple[str, float]]] = {}
    try:
        sftp = client.open_sftp()
        for frc in frcs:
            path = f"{root}/{reg[frc].archive_dir}/manifests/{frc}/{night.replace('-', '')}.json"
            with sftp.open(path) as fh:
                manifest = json.loads(fh.read())
            out[frc] = {e["archive_path"]: (e["sha256"], sftp.stat(f"{root}/{e['archive_path']}").st_mtime)
                        for e in manifest["files"]}
        sftp.close()
    finally:
        client.close()
    return out


def _batches(stack: MHStack, night: str) -> dict[str, tuple]:
    with psycopg.connect(stack.mh["HFC_MH_CATALOGUE_DSN"], connect_timeout=10) as conn:
        rows = conn.execute("SELECT frc, id, status, row_counts, slurm_job_id FROM hfc.batch WHERE night = %s",
                            (night,)).fetchall()
    return {r[0]: r[1:] for r in rows}


def test_clear_one_archive_then_another_frcs_submit_with_downstream(mh_stack: MHStack):
    stack = mh_stack
    frcs = [DETECTOR, TRACKER, ACTIVE_REGIONS]
    since = now_on_login()
    t0 = time.monotonic()
    run = stack.trigger(NIGHT_CLEARS)
    assert stack.wait_run(run, timeout=600) == "success", stack.table(run)
    stack.assert_audit(NIGHT_CLEARS, since=since)
    before_files = _archive_state(stack, frcs, NIGHT_CLEARS)
    before_batches = _batches(stack, NIGHT_CLEARS)
    tries = stack.try_numbers(run)

    # 1. Clear the active-region code's `archive` alone: only that task runs again; it re-verifies
    # and skips every file (same sha256, same file on the archive: not rewritten); nothing else moves.
    stack.clear(run, [f"{ACTIVE_REGIONS}.archive"])
    assert stack.wait_run(run, timeout=300) == "success", stack.table(run)
    after = stack.try_numbers(run)
    changed = {t for t in after if after[t] != tries[t]}
    assert changed == {f"{ACTIVE_REGIONS}.archive"}, f"tasks that ran again: {changed}\n{stack.table(run)}"
    log = stack.task_log(run, f"{ACTIVE_REGIONS}.archive", after[f"{ACTIVE_REGIONS}.archive"])
    assert _archive_state(stack, frcs, NIGHT_CLEARS) == before_files, "a clear of archive changed the archive"
    assert _batches(stack, NIGHT_CLEARS) == before_batches
    stack.assert_audit(NIGHT_CLEARS, since=since)
    print(f"[operations] archive cleared: its log ({len(log)} characters) says\n{log[-1500:]}")
    # Its products were deleted on the cluster after the first, verified copy: nothing to copy.
    assert "nothing to do" in log and "0 copied" in log, log[-3000:]
    TIMINGS["ops: clear archive"] = time.monotonic() - t0

    # 2. Clear the detector's `submit` with downstream: a new SLURM job recomputes the night, its
    # archive and catalogue run again, and so does its tracker (downstream of its catalogue). The
    # active-region code is not touched. Still one batch per FRC, now from the new jobs.
    t1 = time.monotonic()
    tries = stack.try_numbers(run)
    stack.clear(run, [f"{DETECTOR}.submit"], downstream=True)
    assert stack.wait_run(run, timeout=600) == "success", stack.table(run)
    after = stack.try_numbers(run)
    changed = {t for t in after if after[t] != tries[t]}
    assert changed == {f"{f}.{s}" for f in (DETECTOR, TRACKER) for s in ("submit", "wait", "archive", "catalogue")}, \
        f"tasks that ran again: {sorted(changed)}\n{stack.table(run)}"
    for frc in (DETECTOR, TRACKER):
        jobs = stack.jobs(frc, NIGHT_CLEARS, since)
        assert [j[1] for j in jobs] == ["COMPLETED", "COMPLETED"], (frc, jobs)
        stack.assert_audit(NIGHT_CLEARS, "--frc", frc, "--expect-jobs", "2", since=since)
    stack.assert_audit(NIGHT_CLEARS, "--frc", ACTIVE_REGIONS, since=since)
    batches = _batches(stack, NIGHT_CLEARS)
    assert sorted(batches) == sorted(frcs), batches
    assert batches[ACTIVE_REGIONS] == before_batches[ACTIVE_REGIONS]
    for frc in (DETECTOR, TRACKER):  # replaced whole (a new batch), never added to
        assert batches[frc][0] != before_batches[frc][0] and batches[frc][1] == "loaded", (frc, batches[frc])
    TIMINGS["ops: clear submit downstream"] = time.monotonic() - t1


def test_mark_a_running_wait_failed_then_recompute(mh_stack: MHStack):
    """Mark `wait` failed as soon as it is deferred, its job still queued: the job is cancelled
    (by the API server's listener even when the triggerer had not yet picked the trigger up: the
    race the first CI run found here), nothing of the night is archived or loaded; the operator
    then clears `submit` with downstream."""
    stack = mh_stack
    since = now_on_login()
    t0 = time.monotonic()
    frc = ACTIVE_REGIONS
    # Keep the job queued (a busy cluster): the partition is down while the wait is deferred.
    # The night's batch as it stands (a site kept from an earlier session may have loaded it).
    before = _batches(stack, NIGHT_MARK_FAILED).get(frc)
    set_partitions("DOWN")
    try:
        run = stack.trigger(NIGHT_MARK_FAILED, frcs=[frc])
        stack.wait_task(run, f"{frc}.wait", ("deferred",), timeout=180)
        # squeue: sacct does not list a job still pending in a DOWN partition.
        name = f"hfc.{frc}.{NIGHT_MARK_FAILED.replace('-', '')}"
        # (--states=all also lists this night's jobs of an earlier session that ended minutes ago.)
        rc, out, err = stack.login(f"squeue -h --states=PENDING,RUNNING --name={name} -o '%i|%T'")
        assert rc == 0 and [r.split("|")[1] for r in out.split()] == ["PENDING"], (out, err)
        job_id = out.split("|")[0]
        stack.api.patch(f"/dags/{DAG}/dagRuns/{quote_run(run)}/taskInstances/{frc}.wait", {"new_state": "failed"})
        deadline = time.monotonic() + 90
        state = ""
        while time.monotonic() < deadline and not state.startswith("CANCELLED"):
            time.sleep(2)
            state = stack.login(f"squeue -h --states=all -j {job_id} -o '%T'")[1].strip()
        assert state.startswith("CANCELLED"), f"job {job_id} is {state!r} after its wait was marked failed"
        assert stack.wait_run(run, timeout=120) == "failed", stack.table(run)
        states = stack.api.task_states(DAG, run)
        assert states[f"{frc}.archive"] == "upstream_failed" and states[f"{frc}.catalogue"] == "upstream_failed", \
            states
        assert _batches(stack, NIGHT_MARK_FAILED).get(frc) == before  # nothing loaded
    finally:
        set_partitions("UP")

    # The operator recomputes the night: clear submit with downstream (runbook "Re-run one stage").
    stack.clear(run, [f"{frc}.submit"], downstream=True)
    assert stack.wait_run(run, timeout=600) == "success", stack.table(run)
    jobs = stack.jobs(frc, NIGHT_MARK_FAILED, since)
    assert [j[1].split()[0] for j in jobs] == ["CANCELLED", "COMPLETED"], jobs
    stack.assert_audit(NIGHT_MARK_FAILED, "--frc", frc, "--expect-jobs", "2", since=since)
    after = _batches(stack, NIGHT_MARK_FAILED)[frc]
    assert after[1] == "loaded" and after[3] == jobs[1][0] and after != before, (before, after)
    TIMINGS["ops: mark wait failed + recompute"] = time.monotonic() - t0
