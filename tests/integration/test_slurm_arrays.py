"""Campaign chunks (issue 15) on the real SLURM of the local site, over SSH as the pipeline runs
them: ``sbatch --array`` of the demo detector, adopted (never submitted twice) on a second submit,
by the live check, by the campaign's record and by accounting; per-night statuses from one
``sacct``, also through the triggerer's shared poller; a night made to fail; the cancel of the
tasks not yet started with a throttle of 1, keeping what ran."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import shlex
import subprocess
import time

import pytest
from helpers import random_nights, scratch_products, wait_until

from hfc_tasks import campaign, products, slurm
from hfc_tasks.campaign import Campaign
from hfc_tasks.ops.localsite import slurm_conf_path
from hfc_tasks.provider.hooks import SlurmHook

pytestmark = pytest.mark.site
SLURM_ENV = {"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"}
FRC = "demo-sunspots"
# A file the demo detector writes first (demo_sunspots.py: <code>_<version>_frc_info.csv): a folder
# of that name in the run folder makes its write fail, so that night ends FAILED with the
# detector's own error in the night's output.
BLOCKER = "demosunspots_100_frc_info.csv"


def jobs_named(name: str) -> set[str]:
    """Every array job with this name that SLURM knows (accounting and the controller)."""
    sacct = subprocess.run(
        ["sacct", "-X", "-n", "-P", f"--name={name}", "--starttime=2020-01-01", "-o", "JobID"],
        capture_output=True, text=True, check=True, env=SLURM_ENV,
    ).stdout.split()
    squeue = subprocess.run(["squeue", "-h", "--states=all", f"--name={name}", "-o", "%i"],
                            capture_output=True, text=True, check=True, env=SLURM_ENV).stdout.split()
    return {j.partition("_")[0] for j in sacct + squeue}


@pytest.fixture
def cluster(site):
    """The local site with a products tree of this test's own on the cluster, the demo FRC and a
    hook; all removed afterwards."""
    with scratch_products("test_arrays", FRC) as got:
        yield got


nights = random_nights


def submit(hook: SlurmHook, sub: campaign.Submission) -> tuple[str, str]:
    verb, value = slurm.parse_submit(hook.check(sub.script, stdin=sub.stdin, timeout=sub.timeout))
    return str(verb), value


def chunk_states(hook: SlurmHook, chunk: campaign.Chunk, array_id: str) -> dict[dt.date, slurm.JobStatus | None]:
    return campaign.night_statuses(chunk, array_id, hook.status([slurm.array_ref(array_id)]))


def test_chunk_submitted_once_adopted_and_read_per_night(cluster):
    site, frc, hook = cluster
    first, last = nights(10)
    c = Campaign(FRC, first, last, f"t{secrets.token_hex(4)}")
    (chunk,) = campaign.plan_chunks(c, site)
    bad = first + dt.timedelta(days=3)
    hook.check(f"mkdir -p {shlex.quote(products.run_dir(site.products_root, FRC, bad))}/{BLOCKER}")
    sub = campaign.chunk_submission(chunk, frc, site, since=dt.date.today() - dt.timedelta(days=1))
    array_id = None
    try:
        verb, array_id = submit(hook, sub)
        assert verb == "SUBMIT"
        # A second submit while the chunk is queued or running adopts it: no second sbatch.
        assert submit(hook, sub) == ("ADOPT", array_id)
        assert jobs_named(chunk.job_name) == {array_id}

        def ended():
            states = chunk_states(hook, chunk, array_id)
            return states if all(s is not None and s.is_final for s in states.values()) else None

        states = wait_until(ended, f"every task of array {array_id} ended")
        for night, status in states.items():
            assert status.job_id == chunk.task_id(array_id, night)
            if night == bad:
                assert (status.state, status.exit_code) == ("FAILED", 1), status
            else:
                assert status.succeeded, status
        # Each night as the nightly job leaves it: products and output file in its run folder.
        ok = first
        run_dir = products.run_dir(site.products_root, FRC, ok)
        listing = hook.check(f"ls {shlex.quote(run_dir)}").split()
        out = products.output_name(products.job_name(FRC, ok), chunk.task_id(array_id, ok))
        assert out in listing and any(n.endswith(".csv") for n in listing), listing
        assert f"night {ok.isoformat()}" in hook.check(f"cat {shlex.quote(run_dir)}/{out}")
        bad_out = campaign.night_output_path(site, FRC, bad, chunk.task_id(array_id, bad))
        assert "demo_sunspots.py: error" in hook.check(f"cat {shlex.quote(bad_out)}")

        p = campaign.progress(states, throttle=site.campaign_array_throttle)
        assert (p.done, p.failed, p.running, p.pending) == (9, 1, 0, 0) and p.finished
        assert list(p.failed_nights) == [bad]
        assert p.failed_nights[bad].startswith(f"job {array_id}_3, state FAILED, exit code 1")

        # Ended: adopted from the campaign's record; without the record, from accounting.
        assert submit(hook, sub) == ("ADOPT", array_id)
        hook.check(f"rm -f {shlex.quote(campaign.submit_lock(site))}.jobs/{chunk.job_name}")
        assert submit(hook, sub) == ("ADOPT", array_id)
        assert jobs_named(chunk.job_name) == {array_id}

        # The triggerer's shared poller: every task and the whole array with one sacct per poll.
        from hfc_tasks.provider.triggers import SacctPoller

        async def poll():
            poller = SacctPoller(site.cluster_conn_id, 1.0, 1.0)
            refs = [slurm.array_ref(array_id), *chunk.task_ids(array_id).values()]
            queues = {r: poller.subscribe(r) for r in refs}
            poller.task.cancel()
            try:
                await poller.poll_once()
            finally:
                if poller.conn is not None:
                    poller.conn.close()
            return poller.stats, {r: q.get_nowait() for r, q in queues.items()}

        stats, got = asyncio.run(poll())
        assert stats["sacct_calls"] == 1 and stats["squeue_calls"] == 0, stats
        assert len(got[slurm.array_ref(array_id)]) == 10
        assert got[chunk.task_id(array_id, bad)].exit_code == 1
        assert got[chunk.task_id(array_id, first)].succeeded
    finally:
        if array_id:
            hook.run(slurm.scancel_command(array_id))


def test_cancel_with_throttle_one_stops_what_has_not_started_and_keeps_what_ran(cluster):
    site, frc, hook = cluster
    site = site.model_copy(update={"campaign_array_throttle": 1})
    first, last = nights(8)
    c = Campaign(FRC, first, last, f"t{secrets.token_hex(4)}")
    (chunk,) = campaign.plan_chunks(c, site)
    sub = campaign.chunk_submission(chunk, frc, site)
    assert f"--array={chunk.array_spec(1)}" in sub.script and chunk.array_spec(1) == "0-7%1"
    verb, array_id = submit(hook, sub)
    try:
        assert verb == "SUBMIT"

        def one_done():
            states = chunk_states(hook, chunk, array_id)
            running = [s for s in states.values() if s is not None and s.state == "RUNNING"]
            assert len(running) <= 1, running  # the throttle holds
            return states if any(s is not None and s.succeeded for s in states.values()) else None

        wait_until(one_done, f"a first night of array {array_id} done", every=0.2)
        rc, _, err = hook.run(campaign.cancel_command(array_id))
        assert rc == 0, err
        cancelled_at = time.monotonic()

        def settled():
            states = chunk_states(hook, chunk, array_id)
            return states if all(s is not None and s.is_final for s in states.values()) else None

        states = wait_until(settled, f"array {array_id} settled after the cancel")
        p = campaign.progress(states, throttle=1)
        assert p.done >= 1 and p.cancelled >= 1 and p.failed == 0 and p.done + p.cancelled == 8, p.summary()
        # What ran is kept, done; what was cancelled never started: no run folder output.
        order = [states[n] for n in chunk.nights]
        assert all(s.succeeded for s in order[: p.done]) and all(s.state == "CANCELLED" for s in order[p.done:])
        for night in chunk.nights[p.done:]:
            rc, out, _ = hook.run(f"ls {shlex.quote(products.run_dir(site.products_root, FRC, night))}")
            assert rc != 0 or not out.strip(), (night, out)
        # Nothing of the array is left in the queue, and a second cancel says "nothing to cancel".
        assert time.monotonic() - cancelled_at < 120
        assert hook.run(campaign.cancel_command(array_id))[0] in (0, 1)
        assert submit(hook, sub) == ("ADOPT", array_id)  # a cancelled chunk is not submitted again
    finally:
        hook.run(slurm.scancel_command(array_id))
