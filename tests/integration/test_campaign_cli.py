"""``hfc campaign status`` and ``hfc campaign cancel`` on the real SLURM of the local site (issue 15).

A small campaign's chunk is submitted as the DAG submits it (``campaign.chunk_submission`` over the
cluster connection; no Airflow here: the commands are given the campaign with ``--frc/--first/
--last``), one night made to fail; ``hfc campaign status`` must say what ``sacct`` itself says of
each array task (done, failed with the job's exit code as reason, pending, ETA). A retry chunk of
the failed night then overrides it. ``hfc campaign cancel`` on a chunk throttled to one task at a
time must leave the tasks that had not started CANCELLED in ``sacct`` and the done ones COMPLETED.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import random_nights, scratch_products, wait_until

from hfc_tasks import campaign, products, slurm, status
from hfc_tasks.campaign import Campaign
from hfc_tasks.ops.localsite import slurm_conf_path

pytestmark = pytest.mark.site
SLURM_ENV = {"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"}
FRC = "demo-sunspots"
BLOCKER = "demosunspots_100_frc_info.csv"  # a folder of that name in the run folder: the night fails
HFC = str(Path(sys.executable).with_name("hfc"))


@pytest.fixture
def cluster(site):
    with scratch_products("test_campaign_cli", FRC) as got:
        yield got


nights = random_nights


def submit(hook, chunk, frc, site) -> str:
    sub = campaign.chunk_submission(chunk, frc, site, since=dt.date.today() - dt.timedelta(days=1))
    verb, array_id = slurm.parse_submit(hook.check(sub.script, stdin=sub.stdin, timeout=sub.timeout))
    assert verb == slurm.Decision.SUBMIT, (verb, array_id)
    return array_id


def hfc_campaign(action: str, c: Campaign, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([HFC, "campaign", action, c.campaign_id, "--frc", c.frc, "--first", str(c.first),
                           "--last", str(c.last), *extra], capture_output=True, text=True, timeout=180)


def sacct_tasks(array_id: str, count: int) -> dict[str, str]:
    """Task id -> state of each of the array's ``count`` tasks, from ``sacct`` run here (its rows of
    one task, of a range of tasks, or the array's own row for the tasks never started)."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", array_id, "-o", ",".join(slurm.SACCT_FIELDS)],
                         capture_output=True, text=True, check=True, env=SLURM_ENV).stdout
    tasks = slurm.tasks_of(slurm.parse_sacct(out), array_id, count)
    return {slurm.task_id(array_id, i): s.state for i, s in sorted(tasks.items())}


def all_final(array_id: str, count: int):
    """Every task final in accounting, and the same answer 3 s later (a task that completed while
    its pending siblings were cancelled may get its own row after the cancelled range's)."""
    def check():
        tasks = sacct_tasks(array_id, count)
        if len(tasks) != count or not all(v in slurm.FINAL_STATES for v in tasks.values()):
            return None
        time.sleep(3)
        return tasks if sacct_tasks(array_id, count) == tasks else None
    return check


def test_status_says_what_sacct_says_then_a_retry_overrides_the_failed_night(cluster):
    site, frc, hook = cluster
    first, last = nights(6)
    c = Campaign(FRC, first, last, f"t{secrets.token_hex(4)}")
    (chunk,) = campaign.plan_chunks(c, site)
    bad = first + dt.timedelta(days=2)
    bad_dir = products.run_dir(site.products_root, FRC, bad)
    hook.check(f"mkdir -p {shlex.quote(bad_dir)}/{BLOCKER}")
    array_id = retry_id = None
    try:
        # Nothing submitted yet: every night pending, "not submitted yet".
        proc = hfc_campaign("status", c, "--json")
        assert proc.returncode == 0, proc.stderr
        before = json.loads(proc.stdout)
        assert before["counts"] == {"done": 0, "failed": 0, "cancelled": 0, "running": 0, "pending": 6}
        assert before["arrays"] == {} and before["eta_seconds"] is None

        array_id = submit(hook, chunk, frc, site)
        tasks = wait_until(all_final(array_id, 6), f"every task of array {array_id} ended in sacct")
        assert tasks[f"{array_id}_2"] == "FAILED" and sum(v == "COMPLETED" for v in tasks.values()) == 5, tasks

        proc = hfc_campaign("status", c, "--json")
        assert proc.returncode == 0, proc.stderr
        st = json.loads(proc.stdout)
        assert st["arrays"] == {"0": array_id} and st["finished"] and st["eta_seconds"] == 0
        assert st["counts"] == {"done": 5, "failed": 1, "cancelled": 0, "running": 0, "pending": 0}
        by_night = {n["night"]: n for n in st["night_states"]}
        for index, night in enumerate(chunk.nights):  # each night is its array task, as sacct has it
            n = by_night[night.isoformat()]
            assert n["job_id"] == f"{array_id}_{index}"
            assert n["state"] == {"COMPLETED": "done", "FAILED": "failed"}[tasks[n["job_id"]]]
        assert list(st["failed"]) == [bad.isoformat()]
        assert st["failed"][bad.isoformat()].startswith(f"job {array_id}_2, state FAILED, exit code 1")

        text = hfc_campaign("status", c)
        assert text.returncode == 0, text.stderr
        assert "5/6 done, 1 failed, 0 cancelled, 0 running, 0 pending; ETA 0:00:00" in text.stdout
        assert f"  {bad}  job {array_id}_2, state FAILED, exit code 1" in text.stdout
        assert f"arrays: 0={array_id}" in text.stdout

        # The failed night retried alone (its cause removed): the retry's chunk overrides the first.
        hook.check(f"rm -rf {shlex.quote(bad_dir)}/{BLOCKER}")
        (retry,) = campaign.plan_retry(c, [bad], 1, site)
        retry_id = submit(hook, retry, frc, site)
        wait_until(all_final(retry_id, 1), f"retry array {retry_id} ended")
        runs = campaign.CampaignRuns(campaign=c, retries={1: (bad,)}, runs=())
        again = status.campaign_progress(runs, site, hook.check)
        assert again.counts["done"] == 6 and again.failed_nights == {}, again.summary()
        assert again.arrays == {"0": array_id, "r1-0": retry_id}
        assert (again.nights[bad].job_id, again.nights[bad].chunk) == (f"{retry_id}_0", "r1-0")
        # Without the retry's run, the command shows the retry's chunk as not counted, by name.
        proc = hfc_campaign("status", c)
        assert f"problem: chunk r1-0 (array {retry_id}) is not one of the campaign's runs" in proc.stdout
    finally:
        for job in (array_id, retry_id):
            if job:
                hook.run(slurm.scancel_command(job))


def test_cancel_stops_the_pending_tasks_and_keeps_the_done_ones(cluster):
    site, frc, hook = cluster
    site = site.model_copy(update={"campaign_array_throttle": 1})
    first, last = nights(8)
    c = Campaign(FRC, first, last, f"t{secrets.token_hex(4)}")
    (chunk,) = campaign.plan_chunks(c, site)
    array_id = submit(hook, chunk, frc, site)
    try:
        def one_done():
            return any(v == "COMPLETED" for v in sacct_tasks(array_id, 8).values())

        wait_until(one_done, f"a first night of array {array_id} done", every=0.2)
        proc = hfc_campaign("cancel", c, "--json")
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.strip().splitlines()
        assert lines[0].startswith(f"campaign {c.campaign_id}: cancelled "), proc.stdout
        told = json.loads(lines[-1])
        assert told["arrays"] == [array_id] and told["cancelled"] and told["completed_kept"] >= 1

        tasks = wait_until(all_final(array_id, 8), f"array {array_id} settled after the cancel")
        states = [tasks[f"{array_id}_{i}"] for i in range(8)]
        done = states.count("COMPLETED")
        # what ran is kept COMPLETED, what had not started is CANCELLED in accounting, in order (throttle 1)
        assert done >= 1 and states == ["COMPLETED"] * done + ["CANCELLED"] * (8 - done), states
        assert set(told["cancelled"]) <= {f"{array_id}_{i}" for i in range(done, 8)}
        # what was running at the cancel finished (at most one: the throttle); the rest was pending
        assert len(told["cancelled"]) >= 8 - done - 1 - told["running"], (told, states)
        assert f"{len(told['cancelled'])} pending array task(s)" in lines[0]
        for night in chunk.nights[done:]:  # a cancelled night never ran: no output in its run folder
            rc, out, _ = hook.run(f"ls {shlex.quote(products.run_dir(site.products_root, FRC, night))}")
            assert rc != 0 or not out.strip(), (night, out)

        proc = hfc_campaign("status", c, "--json")
        st = json.loads(proc.stdout)
        assert st["counts"] == {"done": done, "failed": 0, "cancelled": 8 - done, "running": 0, "pending": 0}
        # A second cancel finds nothing queued and says so
        proc = hfc_campaign("cancel", c)
        assert proc.returncode == 0 and "cancelled 0 pending array task(s) of 0 array(s)" in proc.stdout, proc
    finally:
        hook.run(slurm.scancel_command(array_id))
