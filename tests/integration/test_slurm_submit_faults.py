"""Faults of the submit stage on the real local SLURM (issue 16, item 3): a failing ``squeue``
must fail the try instead of reading as "no live job", and a submission that happened must be
adopted by the retry even when the first try never heard the answer.

The faults come from wrapper scripts put first on the remote PATH of *this test's* commands only
(a :class:`SlurmHook` subclass prefixes ``PATH=<wrapper dir>:$PATH``): the cluster account and
the other tests keep the real ``squeue``/``sbatch``.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shlex
import subprocess
import threading
import time

import pytest

from hfc_tasks import products
from hfc_tasks.ops.localsite import slurm_conf_path
from hfc_tasks.provider.hooks import SlurmHook
from hfc_tasks.registry import SlurmResources, load_registry

pytestmark = pytest.mark.site
SLURM_ENV = {"SLURM_CONF": str(slurm_conf_path()), "PATH": "/usr/bin:/bin"}


class WrappedHook(SlurmHook):
    """A SlurmHook whose remote commands find the test's wrappers first on PATH."""

    def __init__(self, conn_id: str, bin_dir: str, **kwargs) -> None:
        super().__init__(conn_id, **kwargs)
        self.bin_dir = bin_dir

    def run(self, command: str, **kwargs):
        return super().run(f"PATH={shlex.quote(self.bin_dir)}:$PATH; export PATH\n{command}", **kwargs)


def jobs_named(name: str) -> set[str]:
    """Every job with this name that SLURM knows: accounting and the controller."""
    sacct = subprocess.run(
        ["sacct", "-X", "-n", "-P", f"--name={name}", "--starttime=2020-01-01", "-o", "JobIDRaw"],
        capture_output=True, text=True, check=True, env=SLURM_ENV,
    ).stdout.split()
    squeue = subprocess.run(
        ["squeue", "-h", "--states=all", f"--name={name}", "-o", "%i"],
        capture_output=True, text=True, check=True, env=SLURM_ENV,
    ).stdout.split()
    return set(sacct) | set(squeue)


def sacct_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "State"],
                         capture_output=True, text=True, check=True, env=SLURM_ENV).stdout.split()
    return out[-1] if out else ""


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


@pytest.fixture
def cluster(site):
    """The site's settings, a plain hook, and a fresh folder of this test on the cluster."""
    reg = load_registry()
    site_cfg = reg.site()
    hook = SlurmHook(site_cfg.cluster_conn_id)
    folder = f"{site_cfg.products_root}/_test_submit_faults/{secrets.token_hex(6)}"
    hook.check(f"mkdir -p {shlex.quote(folder)}/bin")
    try:
        yield site_cfg, hook, folder
    finally:
        hook.run(f"rm -rf {shlex.quote(folder)}")
        hook.close()


def wrapper(hook: SlurmHook, folder: str, name: str, body: str) -> None:
    """``<folder>/bin/<name>``: ``body`` (sh), then the real command."""
    path = f"{folder}/bin/{name}"
    script = f"#!/bin/sh\nstate={shlex.quote(folder)}\n{body}\nexec /usr/bin/{name} \"$@\"\n"
    hook.check(f"cat > {shlex.quote(path)} && chmod +x {shlex.quote(path)}", stdin=script)


def job_name() -> str:
    night = dt.date(2031, 1, 1) + dt.timedelta(days=secrets.randbelow(20000))
    return products.job_name(f"t-h3-{secrets.token_hex(3)}", night)


def submit_kwargs(site_cfg, folder: str, name: str, command: str) -> dict:
    return dict(
        job_name=name, run_dir=f"{folder}/run", command=command,
        resources=SlurmResources(time="00:05:00", mem="64M", cpus=1),
        default_partition=site_cfg.default_partition, lock_file=f"{folder}/.hfc-submit.lock",
    )


def test_failing_squeue_fails_the_try_and_the_retry_submits_once(cluster):
    site_cfg, hook, folder = cluster
    # squeue fails the first time it is called (as when slurmctld does not answer), then works.
    wrapper(hook, folder, "squeue", 'if [ ! -e "$state/squeue-failed" ]; then touch "$state/squeue-failed"; '
            'echo "squeue: error: slurm_load_jobs error: Socket timed out on send/recv operation" >&2; exit 1; fi')
    name = job_name()
    kwargs = submit_kwargs(site_cfg, folder, name, "sleep 60")
    wrapped = WrappedHook(site_cfg.cluster_conn_id, f"{folder}/bin")
    submitted: set[str] = set()
    try:
        with pytest.raises(Exception, match="squeue") as failed:
            wrapped.submit(**kwargs)
        assert "Socket timed out" in str(failed.value)
        assert jobs_named(name) == set()  # the failed try submitted nothing
        verb, job_id = wrapped.submit(**kwargs)  # the retry
        submitted.add(job_id)
        assert verb == "SUBMIT"
        assert wrapped.submit(**kwargs) == ("ADOPT", job_id)  # and any later try adopts it
        assert jobs_named(name) == {job_id}
    finally:
        for job_id in submitted | jobs_named(name):
            hook.cancel(job_id)
        wrapped.close()


def test_answer_lost_after_sbatch_the_retry_adopts_the_job_even_when_it_ended(cluster):
    """The first try's connection is cut while ``sbatch`` runs: the job is submitted but the
    try never reads its id. The job ends before the retry; the retry adopts it all the same
    (the submission is recorded on the cluster under the lock) instead of submitting again."""
    site_cfg, hook, folder = cluster
    wrapper(hook, folder, "sbatch", 'touch "$state/sbatch-started"; sleep 3')
    name = job_name()
    # The same chain of tries of one submit task (its retries share the attempt key).
    kwargs = {**submit_kwargs(site_cfg, folder, name, "true"), "attempt": "hfc_nightly/manual__x/t-h3.submit/1"}
    first = WrappedHook(site_cfg.cluster_conn_id, f"{folder}/bin")
    outcome: dict = {}

    def first_try():
        try:
            outcome["answer"] = first.submit(**kwargs)
        except Exception as exc:  # noqa: BLE001 - the cut connection, whatever paramiko raises
            outcome["error"] = exc

    thread = threading.Thread(target=first_try)
    thread.start()
    wait_for(lambda: hook.run(f"test -e {shlex.quote(folder)}/sbatch-started")[0] == 0, "sbatch started")
    first.client.get_transport().close()  # the connection drops while sbatch runs
    thread.join(30)
    assert "answer" not in outcome, outcome
    job_id = wait_for(lambda: next(iter(jobs_named(name)), None), f"the job {name} that sbatch submitted")
    wait_for(lambda: sacct_state(job_id) == "COMPLETED", f"job {job_id} COMPLETED")
    retry = SlurmHook(site_cfg.cluster_conn_id)
    try:
        assert retry.submit(**kwargs) == ("ADOPT", job_id)
        assert jobs_named(name) == {job_id}
        # A cleared submit (a new chain of tries) recomputes the night: a new job.
        verb, again = retry.submit(**{**kwargs, "attempt": "hfc_nightly/manual__x/t-h3.submit/4"})
        assert verb == "SUBMIT" and jobs_named(name) == {job_id, again}
    finally:
        retry.close()


def test_a_held_lock_never_times_out_our_side_before_the_cluster_answers(cluster):
    """Our side waits longer than the cluster's own bounds (lock wait, squeue, sbatch): a slow
    lock ends in the cluster's answer, never in a timeout after which sbatch still runs."""
    site_cfg, hook, folder = cluster
    name = job_name()
    kwargs = submit_kwargs(site_cfg, folder, name, "sleep 60")
    lock = kwargs["lock_file"]
    held = f"{folder}/held"
    # Another submission holds the lock for 6 s (longer than this hook's plain command timeout).
    hook.check(f"setsid flock {shlex.quote(lock)} sh -c 'touch {shlex.quote(held)}; sleep 6' "
               "</dev/null >/dev/null 2>&1 &")
    wait_for(lambda: hook.run(f"test -e {shlex.quote(held)}")[0] == 0, "lock held")
    impatient = SlurmHook(site_cfg.cluster_conn_id, command_timeout=3)
    try:
        verb, job_id = impatient.submit(**kwargs)
        assert verb == "SUBMIT" and jobs_named(name) == {job_id}
    finally:
        for job_id in jobs_named(name):
            hook.cancel(job_id)
        impatient.close()
