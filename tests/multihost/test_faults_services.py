"""Faults 4, 6 and 7 of issue 10 on the multihost site, each while real work is in flight, each
followed by `hfc audit` (the session's stack ``mh``: CeleryExecutor, two workers, retries 2,
retry_delay 15 s; tests/multihost/conftest.py). Nights 2024-07-01 .. 2024-07-31 only.

- Fault 4: the catalogue's PostgreSQL is restarted in the middle of a load. "The middle" is made
  deterministic: the test holds a lock on ``hfc.batch_file`` (the load writes it last, after the
  batch row and the feature rows), waits until the pipeline's load waits on it
  (pg_stat_activity), then restarts PostgreSQL on the catalogue host (pg_ctl restart -m fast).
- Fault 6: a Celery worker is SIGKILLed (its whole process tree) while its `archive` task copies
  (a half-written ``.part`` on the archive; the link to the archive is rate-limited with tc so the
  kill lands mid-copy); the triggerer is SIGKILLed while waits are deferred (partitions DOWN, so
  the jobs stay pending). The operator restarts what is missing (`hfc airflow up`).
- Fault 7: the archive host's key is replaced (a rebuilt server); every stage that talks to it
  refuses, names the connection, and the night resumes after the operator's key rotation
  (docs/runbook.md "Rotate a host key": new key checked out of band, connection's host_key
  updated, `hfc airflow restart worker1 worker2 triggerer api-server`, failed tasks cleared).
  The new key is kept: the key file, `hfc site env --shape multihost`, the site's known_hosts and
  the stack's connections agree again at the end, pass or fail.
Run alone: ``pytest -m multihost tests/multihost/test_faults_services.py`` (as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

from hfc_tasks.ops.localsite import multihost
from hfc_tasks.ops.localsite import ssh as site_ssh
from hfc_tasks.ops.localsite._util import pidfile_alive, stop_pid
from hfc_tasks.ops.localsite.layout import PG_BIN

from .conftest import (
    ACTIVE_REGIONS,
    ARCHIVE_LINK,
    DETECTOR,
    TIMINGS,
    TRACKER,
    MHStack,
    hfc,
    now_on_login,
    poll,
    set_partitions,
    tc,
)

pytestmark = pytest.mark.multihost

ARCHIVE_VAR = f"AIRFLOW_CONN_{multihost.CONN_IDS['archive'].upper()}"
# Components that hold connections (runbook "Rotate a host key", step 3).
CONNECTION_HOLDERS = ("worker1", "worker2", "triggerer", "api-server")


# ------------------------------------------------------------------------------------ helpers
def on_host(host: str, *cmd: str, env: dict | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    """Run a command on a host of the site (its network namespace)."""
    return subprocess.run(["nsenter", f"--net=/run/netns/{multihost.netns(host)}", *cmd], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def process_tree(root: int) -> list[int]:
    """root and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def sigkill_component(stack: MHStack, component: str) -> list[int]:
    """SIGKILL a component of the stack and every process under it (no clean-up of any kind)."""
    pid = stack.pid(component)
    assert pid and alive(pid), f"{component} of the stack is not running (pid {pid})"
    tree = process_tree(pid)
    for p in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    poll(f"{component} {tree} gone after SIGKILL", lambda: not any(alive(p) for p in tree), 15, 0.1)
    return tree


def queued(stack: MHStack, frc: str, night: str) -> list[list[str]]:
    """squeue on login: this (FRC, night)'s jobs the controller holds (JobID, State)."""
    rc, out, err = stack.login(f"squeue -h -n hfc.{frc}.{night.replace('-', '')} -o '%i|%T'")
    assert rc == 0, f"squeue on login: {err}"
    return [r.split("|") for r in out.split()]


def completed(stack: MHStack, frc: str, night: str, since: str) -> list[list[str]] | None:
    jobs = stack.jobs(frc, night, since)
    return jobs if jobs and all(r[1] == "COMPLETED" for r in jobs) else None


def catalogue(stack: MHStack, **kw) -> psycopg.Connection:
    return psycopg.connect(stack.mh["HFC_MH_CATALOGUE_DSN"], connect_timeout=10, **kw)


def batches(stack: MHStack, frc: str, night: str) -> list[tuple]:
    with catalogue(stack) as c:
        return c.execute("SELECT id, status, row_counts FROM hfc.batch WHERE frc = %s AND night = %s",
                         (frc, night)).fetchall()


def parts_on_archive(stack: MHStack, folder: str) -> list[str]:
    root = Path(stack.mh["HFC_MH_ARCHIVE_ROOT"]) / folder
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.part"))


# ------------------------------------------------------------------------ fault 4: PostgreSQL
def pg_restart() -> subprocess.CompletedProcess:
    """`pg_ctl restart -m fast` as postgres on the catalogue host (its own network namespace)."""
    lay = multihost.MHLayout.current()
    return on_host("catalogue", "runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(lay.pg_data),
                   "-l", str(lay.pg_log), "-m", "fast", "-w", "-t", "60", "restart")


def ensure_pg(stack: MHStack) -> None:
    lay = multihost.MHLayout.current()
    if not multihost.postgres.running(lay):
        multihost._run_inside("catalogue", print)
    with catalogue(stack) as c:
        c.execute("select 1")


def test_catalogue_postgres_restarted_in_the_middle_of_a_load(mh_stack: MHStack):
    stack, frc, night = mh_stack, DETECTOR, "2024-07-02"
    since, t0 = now_on_login(), time.monotonic()
    # The test owns this night: a batch left by an earlier session would make the load's first
    # statement (the batch's delete, cascading) wait instead of its late COPY into hfc.batch_file.
    with catalogue(stack) as c:
        c.execute("DELETE FROM hfc.batch WHERE frc = %s AND night = %s", (frc, night))
    lock = catalogue(stack)
    run_id = None
    try:
        lock.execute("LOCK TABLE hfc.batch_file IN SHARE ROW EXCLUSIVE MODE")  # transaction stays open
        run_id = stack.trigger(night, [frc])
        task = f"{frc}.catalogue"

        def load_waits():
            with catalogue(stack, autocommit=True) as c:
                return c.execute(
                    "SELECT pid, left(query, 80) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND application_name = 'hfc-pipeline' AND query ILIKE '%%hfc.batch_file%%'").fetchall()

        waiting = poll(f"{task} {night} waiting on hfc.batch_file", load_waits, 240, 1)
        print(f"\n[fault 4] the load waits on the lock: {waiting}; batch rows so far (other sessions): "
              f"{batches(stack, frc, night)}")
        restart = pg_restart()
        assert restart.returncode == 0, f"pg_ctl restart on the catalogue host: {restart.stdout}{restart.stderr}"
    finally:
        with contextlib.suppress(Exception):
            lock.close()
        ensure_pg(stack)
    # Nothing half-loaded: the interrupted load committed nothing (the retry is 15 s away).
    assert batches(stack, frc, night) == [], "a half load is visible after the restart"
    state = stack.wait_run(run_id, timeout=300)
    table = stack.table(run_id)
    print(f"[fault 4] run {run_id}: {state}\n{table}")
    assert state == "success", table
    attempts = stack.tries(run_id, task)
    assert [a["state"] for a in attempts] == ["failed", "success"], attempts
    log1 = stack.task_log(run_id, task, 1)
    print(f"[fault 4] {task} try 1 log (tail):\n{log1[-1500:]}")
    conn = json.loads(stack.mh["AIRFLOW_CONN_HFC_MH_CATALOGUE"])
    for word in ("hfc_mh_catalogue", conn["host"], frc, night):
        assert word in log1, f"{task} try 1: the log does not name {word!r}:\n{log1[-3000:]}"
    assert any(c in log1 for c in ("terminating connection due to administrator command",
                                   "server closed the connection unexpectedly")), log1[-3000:]
    (batch,) = batches(stack, frc, night)
    assert batch[1] == "loaded" and sum(batch[2].values()) > 0, batch
    assert len(stack.jobs(frc, night, since)) == 1
    stack.assert_audit(night, "--frc", frc, "--expect-jobs", "1", since=since)
    TIMINGS["fault 4 (postgres restart)"] = time.monotonic() - t0


# ----------------------------------------------------------------- fault 6: worker, triggerer
def test_worker_killed_during_archive(mh_stack: MHStack):
    stack, frc, night = mh_stack, DETECTOR, "2024-07-03"
    since, t0 = now_on_login(), time.monotonic()
    task = f"{frc}.archive"
    killed = None
    # Slow the link to the archive host (2 KB/s) so that the kill lands while a file is copied.
    tc("qdisc", "replace", "dev", ARCHIVE_LINK, "root", "tbf", "rate", "16kbit", "burst", "4kb", "latency", "10s")
    try:
        before = set(parts_on_archive(stack, frc))
        run_id = stack.trigger(night, [frc])

        def copying():
            ti = stack.ti(run_id, task)
            new = set(parts_on_archive(stack, frc)) - before
            return ti if ti["state"] == "running" and ti["hostname"] and new else None

        ti = poll(f"{task} {night} copying (running, a .part on the archive)", copying, 240, 0.3)
        killed = ti["hostname"].split("@", 1)[0]
        assert killed in ("worker1", "worker2"), ti["hostname"]
        tree = sigkill_component(stack, killed)
        print(f"\n[fault 6] SIGKILL {killed} (pids {tree}) while {task} copied: "
              f"{sorted(set(parts_on_archive(stack, frc)) - before)}")
    finally:
        tc("qdisc", "del", "dev", ARCHIVE_LINK, "root", check=False)
        stack.restore()  # the runbook: `hfc airflow up` starts what is missing
    assert stack.pid(killed) and alive(stack.pid(killed)), f"{killed} was not started again"
    state = stack.wait_run(run_id, timeout=420)
    table = stack.table(run_id)
    print(f"[fault 6] run {run_id}: {state}\n{table}")
    assert state == "success", table
    attempts = stack.tries(run_id, task)
    print(f"[fault 6] {task} tries: {[(a['try_number'], a['state'], a['hostname']) for a in attempts]}")
    assert attempts[0]["state"] == "failed" and attempts[0]["hostname"].startswith(killed + "@"), attempts
    assert attempts[-1]["state"] == "success" and len(attempts) >= 2, attempts
    assert len(stack.jobs(frc, night, since)) == 1
    # The retry's successful run removed the killed try's half copies.
    assert not [p for p in parts_on_archive(stack, frc) if p not in before], parts_on_archive(stack, frc)
    assert len(batches(stack, frc, night)) == 1
    stack.assert_audit(night, "--frc", frc, "--expect-jobs", "1", since=since)
    TIMINGS["fault 6 (worker SIGKILL)"] = time.monotonic() - t0


def test_triggerer_killed_during_waits(mh_stack: MHStack):
    stack, night = mh_stack, "2024-07-04"
    frcs = [DETECTOR, ACTIVE_REGIONS]
    since, t0 = now_on_login(), time.monotonic()
    set_partitions("DOWN")  # the jobs stay pending: their waits stay deferred
    try:
        run_id = stack.trigger(night, frcs)
        poll("both waits deferred", lambda: all(stack.states(run_id).get(f"{f}.wait") == "deferred"
                                                 for f in frcs), 240, 1)
        pending = {f: queued(stack, f, night) for f in frcs}
        assert all(len(j) == 1 and j[0][1] == "PENDING" for j in pending.values()), pending
        old = stack.pid("triggerer")
        tree = sigkill_component(stack, "triggerer")
        print(f"\n[fault 6] SIGKILL triggerer (pids {tree}) with waits deferred on pending jobs {pending}")
        stack.restore()
        assert stack.pid("triggerer") not in (None, old)
        assert all(stack.states(run_id).get(f"{f}.wait") == "deferred" for f in frcs), stack.table(run_id)
    finally:
        set_partitions("UP")
        stack.restore()
    state = stack.wait_run(run_id, timeout=420)
    table = stack.table(run_id)
    print(f"[fault 6] run {run_id}: {state}\n{table}")
    assert state == "success", table
    for f in frcs:
        # sacct (slurmdbd) may lag the controller by a moment after the job's end.
        jobs = poll(f"{f} {night}: the job COMPLETED in sacct", lambda f=f: completed(stack, f, night, since), 30, 1)
        assert [row[0] for row in jobs] == [pending[f][0][0]], (f, jobs, pending[f])
        assert [a["state"] for a in stack.tries(run_id, f"{f}.wait")] == ["success"], f
        stack.assert_audit(night, "--frc", f, "--expect-jobs", "1", since=since)
    TIMINGS["fault 6 (triggerer SIGKILL)"] = time.monotonic() - t0


# --------------------------------------------------------------- fault 7: archive host's key
def status_archive_page(stack: MHStack, frc: str, night: str) -> tuple[int, str]:
    """The status page's archive folder of (FRC, night): the api-server reads it over SFTP."""
    req = urllib.request.Request(f"{stack.api.base}/hfc-status/archive/{frc}/{night}",
                                 headers={"Authorization": f"Bearer {stack.api.token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def archive_sshd_restart() -> None:
    lay = multihost.MHLayout.current()
    stop_pid(lay.host_dir("archive") / "sshd.pid", "sshd")
    multihost._run_inside("archive", print)


def sync_archive_key(stack: MHStack, restart: bool) -> None:
    """The key file is the truth (env_vars() reads it): make the stack's and the session's
    connection, the site's known_hosts and, if asked, the stack's running components agree."""
    lay = multihost.MHLayout.current()
    if not pidfile_alive(lay.host_dir("archive") / "sshd.pid", "sshd"):
        multihost._run_inside("archive", print)
    fresh = multihost.env_vars()[ARCHIVE_VAR]
    changed = stack.env.get(ARCHIVE_VAR) != fresh
    for env in (stack.env, stack.mh, *([os.environ] if ARCHIVE_VAR in os.environ else [])):
        env[ARCHIVE_VAR] = fresh
    known = "".join(f"{multihost.addr(h)} {site_ssh.public_key(lay.host_key_of(h))}\n" for h in multihost.HOSTS)
    if lay.known_hosts.read_text() != known:
        lay.known_hosts.write_text(known)
    if changed and restart:
        proc = hfc(stack.env, "airflow", "restart", *CONNECTION_HOLDERS)
        assert proc.returncode == 0, f"hfc airflow restart: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"


def test_archive_host_key_replaced(mh_stack: MHStack, mh):
    stack, night = mh_stack, "2024-07-05"
    frcs = [f.name for f in stack.reg.enabled_frcs]
    since, t0 = now_on_login(), time.monotonic()
    lay = multihost.MHLayout.current()
    key = lay.host_key_of("archive")
    old_pub = site_ssh.public_key(key)
    rotated = False
    try:
        # The rebuilt server: a new ed25519 host key, sshd restarted with it.
        with tempfile.TemporaryDirectory() as tmp:
            new = Path(tmp) / "k"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hfc-multihost-archive",
                            "-f", str(new)], check=True)
            key.write_bytes(new.read_bytes())
            key.with_suffix(".pub").write_bytes(new.with_suffix(".pub").read_bytes())
        os.chmod(key, 0o600)
        archive_sshd_restart()
        new_pub = site_ssh.public_key(key)
        assert new_pub != old_pub

        run_id = stack.trigger(night)
        state = stack.wait_run(run_id, timeout=420)
        table = stack.table(run_id)
        print(f"\n[fault 7] run {run_id} with the old key in the connection: {state}\n{table}")
        assert state == "failed", table
        states = stack.states(run_id)
        for f in (DETECTOR, ACTIVE_REGIONS):
            task = f"{f}.archive"
            attempts = stack.tries(run_id, task)
            assert [a["state"] for a in attempts] == ["failed"], (task, attempts)  # try 1, no retry
            log = stack.task_log(run_id, task, 1)
            for word in ("hfc_mh_archive", "host key", "not the one configured", multihost.addr("archive"), f, night):
                assert word in log, f"{task} try 1: the log does not name {word!r}:\n{log[-3000:]}"
            assert states[f"{f}.catalogue"] == "upstream_failed", table
            assert states[f"{f}.submit"] == states[f"{f}.wait"] == "success", table
        print("[fault 7] archive try 1 log:\n"
              + "\n".join(ln for ln in stack.task_log(run_id, f"{DETECTOR}.archive", 1).splitlines()
                          if "host key" in ln)[-1200:])
        # The tracker reads the detector's results by path (file://, on the cluster), never
        # through the archive host; it runs after the detector's catalogue: it never ran.
        assert all(states[f"{TRACKER}.{s}"] == "upstream_failed" for s in ("submit", "wait", "archive",
                                                                           "catalogue")), table
        # The catalogue stage's reader (SFTP through the same connection) refuses the same way.
        from hfc_tasks.provider import hooks
        from hfc_tasks.sshpolicy import SshConfigError

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(ARCHIVE_VAR, stack.env[ARCHIVE_VAR])
            with pytest.raises(SshConfigError) as refused:
                with hooks.sftp_session("hfc_mh_archive"):
                    pass
        print(f"[fault 7] catalogue reader: {type(refused.value).__name__}: {refused.value}")
        # The status page (api-server) reads the archive through the same connection: refused too.
        code, text = status_archive_page(stack, DETECTOR, "2024-07-03")
        print(f"[fault 7] status page /hfc-status/archive: {code} {text[:400]}")
        assert code == 502 and "hfc_mh_archive" in text and "not the one configured" in text, (code, text[:2000])
        assert "hfc_mh_archive" in str(refused.value) and "not the one configured" in str(refused.value)

        # The operator, as docs/runbook.md "Rotate a host key" says:
        # 1. the new key, checked out of band: what the host answers == the admin's fingerprint.
        scan = subprocess.run(["ssh-keyscan", "-t", "ed25519", multihost.addr("archive")], capture_output=True,
                              text=True, timeout=30)
        scanned = next(ln.split(None, 1)[1] for ln in scan.stdout.splitlines() if "ssh-ed25519" in ln)

        def fingerprint(pub: str) -> str:
            return subprocess.run(["ssh-keygen", "-lf", "-"], input=pub, capture_output=True, text=True,
                                  check=True).stdout.split()[1]

        assert fingerprint(scanned) == fingerprint(new_pub) != fingerprint(old_pub)
        # 2. the connection's host_key (AIRFLOW_CONN_HFC_MH_ARCHIVE given to `hfc airflow up`),
        # 3. restart what holds connections: `hfc airflow restart worker1 worker2 triggerer api-server`.
        assert json.loads(multihost.env_vars()[ARCHIVE_VAR])["extra"]["host_key"] == scanned.strip()
        sync_archive_key(stack, restart=True)
        rotated = True
        assert json.loads(stack.env[ARCHIVE_VAR])["extra"]["host_key"] == new_pub
        code, text = status_archive_page(stack, DETECTOR, "2024-07-03")
        assert code == 200 and "20240703" in text, (code, text[:2000])
        # 4. clear the failed tasks (the archive tasks with what follows them).
        stack.clear(run_id, [f"{DETECTOR}.archive", f"{ACTIVE_REGIONS}.archive"], downstream=True)
        state = stack.wait_run(run_id, timeout=420)
        table = stack.table(run_id)
        print(f"[fault 7] run {run_id} after the rotation: {state}\n{table}")
        assert state == "success", table
        for f in frcs:
            assert len(stack.jobs(f, night, since)) == 1, f
            stack.assert_audit(night, "--frc", f, "--expect-jobs", "1", since=since)
    finally:
        # Pass or fail, the new key stays (the rebuilt server's) and everything agrees with it.
        sync_archive_key(stack, restart=not rotated)
        assert mh[ARCHIVE_VAR] == multihost.env_vars()[ARCHIVE_VAR]
        with contextlib.suppress(Exception):
            stack.end_all_runs(timeout=300)
    TIMINGS["fault 7 (archive host key)"] = time.monotonic() - t0
