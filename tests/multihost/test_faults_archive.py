"""Faults of the archive host while real work is in flight (issue 10, faults 3 and 5), on the
multihost site and the session's Airflow stack ``mh`` (tests/multihost/conftest.py).

* Fault 3, during a backfill of 7 nights (2024-06-01..07, REST ``POST /backfills``,
  ``max_active_runs`` 3, every FRC): the network between the workers and ``archive`` drops for
  30 s, 10 times, each at a random moment while an ``archive`` task runs: an nftables DROP of
  everything in and out of the archive namespace's eth0 (the packets vanish; no process is
  killed, no connection is refused). The link towards the archive is slowed (tbf) for the
  backfill so that a transfer lasts long enough to be cut in the middle. Then: every run
  succeeded, one SLURM job per (FRC, night), ``hfc audit`` exits 0 for each night, no ``.part``
  left on the archive.
* Fault 5, in one night (2024-06-10, every FRC): the archive filesystem (its own 512 MB ext4)
  fills up once the first ``archive`` task has copied its files. The other ``archive`` tasks fail
  at once (no retry), their log naming the archive connection and "No space left on device";
  the products stay on the cluster; the audit says "not archived", never "lost". Then the
  runbook's steps (free space, clear the failed ``archive`` tasks with downstream) finish it.

Replay fault 3's drop moments with ``HFC_FAULT_SEED=<seed>`` (the seed is printed).
Wall time measured (2 cores, stack start excluded): fault 3 ~565 s (the 10 drops alone are
300 s, and a task cut by them waits out its reconnects and a retry delay), fault 5 ~60 s.
Run alone: ``pytest -m multihost tests/multihost/test_faults_archive.py`` (as root).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hfc_tasks import products
from hfc_tasks.ops.localsite import multihost

from .conftest import ARCHIVE_LINK, DAG, DETECTOR, TIMINGS, TRACKER, MHStack, backfill_runs, now_on_login, tc

pytestmark = pytest.mark.multihost

BACKFILL_NIGHTS = [f"2024-06-0{d}" for d in range(1, 8)]
FULL_NIGHT = "2024-06-10"
DROPS, DROP_SECONDS = 10, 30
ARCHIVE_NS = f"/run/netns/{multihost.netns('archive')}"
NFT_TABLE = "hfcmh_fault_drop"
SLOW_RATE = "256kbit"  # ~8 s for a detector's night (~130 KB) alone on the link


def _log(msg: str) -> None:
    print(f"[faults-archive {dt.datetime.now(dt.UTC):%H:%M:%S}] {msg}", flush=True)


# ------------------------------------------------------------------------ network faults
def _nft(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", f"--net={ARCHIVE_NS}", "nft", *args], input=stdin, text=True,
                          capture_output=True, check=check)


def _drop_on() -> None:
    """Every packet in or out of the archive host's eth0 is dropped (not refused)."""
    _nft("-f", "-", stdin=f"""table inet {NFT_TABLE} {{
  chain in {{ type filter hook input priority -100; policy accept; iifname "eth0" drop; }}
  chain out {{ type filter hook output priority -100; policy accept; oifname "eth0" drop; }}
}}
""")


def _drop_off() -> None:
    if _nft("list", "table", "inet", NFT_TABLE, check=False).returncode == 0:
        _nft("delete", "table", "inet", NFT_TABLE)


def _slow_link(on: bool) -> None:
    if on:
        tc("qdisc", "replace", "dev", ARCHIVE_LINK, "root", "tbf", "rate", SLOW_RATE, "burst", "16kb",
           "latency", "400ms")
    else:
        tc("qdisc", "del", "dev", ARCHIVE_LINK, "root", check=False)


def _running_archives(stack: MHStack, run_ids: set[str]) -> list[str]:
    tis = stack.api.get(f"/dags/{DAG}/dagRuns/~/taskInstances?state=running&limit=200")["task_instances"]
    return sorted(f"{t['dag_run_id'][-25:-15]} {t['task_id']} try {t['try_number']}" for t in tis
                  if t["task_id"].endswith(".archive") and t["dag_run_id"] in run_ids)


class DropFaults(threading.Thread):
    """Drops the archive's network DROPS times for DROP_SECONDS, each at a random moment while an
    ``archive`` task of these runs is running (seeded: the moments can be replayed)."""

    def __init__(self, stack: MHStack, run_ids: set[str], seed: int, t0: float) -> None:
        super().__init__(name="archive-drops", daemon=True)
        self.stack, self.run_ids, self.rng, self.t0 = stack, run_ids, random.Random(seed), t0
        self.stop = threading.Event()
        self.drops: list[dict] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while len(self.drops) < DROPS and not self.stop.is_set():
                running = _running_archives(self.stack, self.run_ids)
                if not running:
                    self.stop.wait(0.5)
                    continue
                self.stop.wait(self.rng.uniform(0.0, 2.0))  # a random moment of that transfer
                running = _running_archives(self.stack, self.run_ids)
                if self.stop.is_set() or not running:
                    continue
                t = time.monotonic() - self.t0
                try:
                    _drop_on()
                    drop = {"n": len(self.drops) + 1, "at_s": round(t, 1),
                            "utc": f"{dt.datetime.now(dt.UTC):%H:%M:%S}", "running": running}
                    self.drops.append(drop)
                    _log(f"DROP {drop['n']}/{DROPS} at +{drop['at_s']} s ({drop['utc']} UTC) for {DROP_SECONDS} s; "
                         f"archive tasks running: {drop['running']}")
                    self.stop.wait(DROP_SECONDS)  # the fault's length (not an assertion)
                finally:
                    _drop_off()
                self.stop.wait(self.rng.uniform(2.0, 8.0))  # the link is up between two drops
            _slow_link(False)  # the drops are over: the rest of the backfill at full speed
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            _drop_off()


def _backfill(stack: MHStack) -> tuple[dict, list[str]]:
    """POST /backfills for BACKFILL_NIGHTS (dry run first: exactly those logical dates)."""
    body = {"dag_id": DAG, "from_date": f"{BACKFILL_NIGHTS[0]}T00:00:00Z",
            "to_date": f"{BACKFILL_NIGHTS[-1]}T00:00:00Z", "max_active_runs": 3,
            # A night already run (an earlier session) is run again: the backfill is the test.
            "reprocess_behavior": "completed", "run_backwards": False}
    dry = stack.api.post("/backfills/dry_run", body)["backfills"]
    nights = sorted(b["logical_date"][:10] for b in dry)
    assert nights == BACKFILL_NIGHTS, f"backfill dry run: {dry}"
    backfill = stack.api.post("/backfills", body)
    assert backfill["max_active_runs"] == 3 and not backfill["is_paused"], backfill
    return backfill, nights


def _backfill_runs(stack: MHStack, timeout: float = 60) -> dict[str, dict]:
    """The backfill's runs, by night, once all its nights have one (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        by_night = backfill_runs(stack, BACKFILL_NIGHTS)
        if sorted(by_night) == BACKFILL_NIGHTS or time.monotonic() > deadline:
            return by_night
        time.sleep(1)


def _other_runs_end(stack: MHStack, run_ids: set[str], timeout: float = 240) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        runs = stack.api.get(f"/dags/{DAG}/dagRuns?limit=100&order_by=-start_date")["dag_runs"]
        going = [r["dag_run_id"] for r in runs if r["dag_run_id"] not in run_ids
                 and r["state"] not in ("success", "failed")]
        if not going:
            return [r["dag_run_id"] for r in runs[:3] if r["dag_run_id"] not in run_ids]
        assert time.monotonic() < deadline, f"runs of other nights still going: {going}"
        time.sleep(2)


def _parts(root: Path) -> set[str]:
    """Files under a temporary name on the archive (the transfer's ``<name>.<token>.part``)."""
    return {str(p.relative_to(root)) for p in root.rglob("*.part")}


def _log_lines(text: str, pattern: str, limit: int = 6) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines() if re.search(pattern, ln, re.I)]
    return lines[:limit]


# --------------------------------------------------------------------------------- fault 3
def test_backfill_with_archive_network_drops(mh_stack: MHStack, mh):
    stack = mh_stack
    frcs = [f.name for f in stack.reg.enabled_frcs]
    seed = int(os.environ.get("HFC_FAULT_SEED") or random.SystemRandom().randrange(1 << 30))
    _log(f"seed {seed} (replay: HFC_FAULT_SEED={seed})")
    root = Path(mh["HFC_MH_ARCHIVE_ROOT"])
    parts_before = _parts(root)
    since = now_on_login()
    t0 = time.monotonic()
    drops = None
    _drop_off()
    _slow_link(True)
    try:
        backfill, _ = _backfill(stack)
        runs = _backfill_runs(stack)
        run_ids = {r["dag_run_id"] for r in runs.values()}
        _log(f"backfill {backfill['id']}: runs {sorted(run_ids)}")
        # Tries so far (a night run again by the backfill goes on counting its tries).
        tries0 = {(n, ti["task_id"]): ti["try_number"] or 0
                  for n, r in runs.items() for ti in stack.tis(r["dag_run_id"])}
        # The session's own scheduled night (the stack unpaused the DAG) must not be cut too.
        others = _other_runs_end(stack, run_ids)
        _log(f"other runs ended (+{time.monotonic() - t0:.0f} s): {others}")
        drops = DropFaults(stack, run_ids, seed, t0)
        drops.start()
        states: dict[str, str] = {}
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and len(states) < len(runs):
            for night, r in runs.items():
                if night not in states:
                    st = stack.api.get(f"/dags/{DAG}/dagRuns/{r['dag_run_id']}")["state"]
                    if st in ("success", "failed"):
                        states[night] = st
                        _log(f"run {night}: {st} at +{time.monotonic() - t0:.0f} s ({len(drops.drops)} drops so far)")
            time.sleep(3)
        drops.stop.set()
        drops.join(DROP_SECONDS + 10)
    finally:
        if drops is not None:
            drops.stop.set()
            drops.join(DROP_SECONDS + 10)
        _drop_off()
        _slow_link(False)
    TIMINGS["backfill + drops"] = time.monotonic() - t0
    assert drops.error is None, f"the fault thread failed: {drops.error!r}"

    tables = {n: stack.table(r["dag_run_id"]) for n, r in runs.items()}
    _log("runs:\n" + "\n".join(f" {n}: {states.get(n)}\n{tables[n]}" for n in sorted(runs)))
    assert len(drops.drops) == DROPS, (f"only {len(drops.drops)} drops happened while an archive task ran "
                                       f"(seed {seed}): {drops.drops}")
    assert states == dict.fromkeys(BACKFILL_NIGHTS, "success"), \
        f"seed {seed}: runs {states}\n" + "\n".join(f"{n}:\n{t}" for n, t in tables.items())
    bf = stack.api.get(f"/backfills/{backfill['id']}")
    _log(f"backfill {bf['id']} completed_at {bf['completed_at']}")

    # Retries and what the operator read in the logs of the cut transfers.
    retried, cut_text = [], []
    for night, r in sorted(runs.items()):
        for ti in stack.tis(r["dag_run_id"]):
            first = tries0.get((night, ti["task_id"]), 0) + 1  # this backfill's first try
            if ti["try_number"] > first:
                retried.append(f"{night} {ti['task_id']} tries {first}..{ti['try_number']}")
            if ti["task_id"].endswith((".archive", ".catalogue")):
                for n in range(first, ti["try_number"] + 1):
                    lines = _log_lines(stack.task_log(r["dag_run_id"], ti["task_id"], n),
                                       r"connection lost|reconnect|timed? ?out|error|fail")
                    if lines:
                        cut_text.append(f"{night} {ti['task_id']} try {n}:\n    " + "\n    ".join(lines))
    _log(f"tasks retried ({len(retried)}): {retried}")
    _log("log lines of cut transfers:\n" + ("\n".join(cut_text) or "(none)"))

    # Exactly one SLURM job per (FRC, night); the audit of each night; no temporary name left.
    for night in BACKFILL_NIGHTS:
        for frc in frcs:
            rows = stack.jobs(frc, night, since)
            assert len(rows) == 1 and rows[0][1] == "COMPLETED", f"{frc} {night}: jobs since {since}: {rows}"
    t1 = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        for proc, night in zip(pool.map(lambda n: stack.audit(n, since=since), BACKFILL_NIGHTS), BACKFILL_NIGHTS,
                               strict=True):
            assert proc.returncode == 0, f"audit --night {night}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
            _log(f"hfc audit --night {night}: exit 0: {proc.stdout.strip().splitlines()[-1]}")
    TIMINGS["backfill audits"] = time.monotonic() - t1
    left = _parts(root) - parts_before
    assert not left, f"temporary files left on the archive: {sorted(left)}"
    TIMINGS["fault 3 total"] = time.monotonic() - t0


# --------------------------------------------------------------------------------- fault 5
def test_archive_filesystem_fills_up(mh_stack: MHStack, mh):
    stack = mh_stack
    root = Path(mh["HFC_MH_ARCHIVE_ROOT"])
    assert os.path.ismount(root), f"{root} is not its own filesystem"
    fill_dir, fill = root / ".fill", root / ".fill" / "fill"
    frcs = [f.name for f in stack.reg.enabled_frcs]
    parts_before = _parts(root)
    since = now_on_login()
    t0 = time.monotonic()
    run_id = stack.trigger(FULL_NIGHT)
    try:
        # When the first archive task has copied its night, the filesystem fills up (root's
        # file, outside the product folders; a few KB left, so the next copy stops in the middle).
        first = None
        deadline = time.monotonic() + 300
        while first is None and time.monotonic() < deadline:
            states = stack.api.task_states(DAG, run_id)
            first = next((t for t, s in sorted(states.items()) if t.endswith(".archive") and s == "success"), None)
            time.sleep(0.3)
        assert first, f"no archive task succeeded: {stack.table(run_id)}"
        fill_dir.mkdir(exist_ok=True)
        st = os.statvfs(root)
        subprocess.run(["fallocate", "-l", str(st.f_bavail * st.f_frsize - 12 * 1024), str(fill)], check=True)
        free = os.statvfs(root).f_bavail * st.f_frsize
        _log(f"{first} succeeded; archive filesystem filled: {free} bytes left for the archive account")
        state = stack.wait_run(run_id, timeout=300)
        table = stack.table(run_id)
        _log(f"run {run_id} (night {FULL_NIGHT}, archive full): {state}\n{table}")
        tis = {t["task_id"]: t for t in stack.tis(run_id)}
        failed = sorted(t for t, ti in tis.items() if t.endswith(".archive") and ti["state"] == "failed")
        assert state == "failed" and failed, table
        for task in failed:
            ti = tis[task]
            assert ti["try_number"] == 1, f"{task}: a full archive was retried ({ti['try_number']} tries):\n{table}"
            text = stack.task_log(run_id, task, ti["try_number"])
            lines = _log_lines(text, r"No space left|ENOSPC|archive connection")
            _log(f"{task} log:\n    " + "\n    ".join(lines))
            assert "No space left on device" in text and "hfc_mh_archive" in text, text[-4000:]
            frc = task.rsplit(".", 1)[0]
            assert f"{frc} {FULL_NIGHT}" in text, text[-4000:]
        assert not _parts(root) - parts_before, f"temporary files left: {sorted(_parts(root) - parts_before)}"

        # The audit: the night is incomplete (exit 1), nothing LOST, no partial file.
        audit = stack.audit(FULL_NIGHT, since=since)
        _log(f"hfc audit --night {FULL_NIGHT} (archive full): exit {audit.returncode}\n{audit.stdout}{audit.stderr}")
        assert audit.returncode == 1, audit.stdout + audit.stderr
        assert not re.search(r"\bLOST\b|PARTIAL", audit.stdout), audit.stdout
        for task in failed:
            frc = task.rsplit(".", 1)[0]
            run_dir = products.run_dir(stack.reg.site().products_root, frc, dt.date.fromisoformat(FULL_NIGHT))
            rc, out, err = stack.login(f"ls -- {run_dir}")
            kept = [n for n in out.split() if not n.endswith((".out", ".err"))]
            if frc == TRACKER and tis.get(f"{DETECTOR}.archive", {}).get("state") == "failed":
                continue  # the tracker did not run: it waits for its detector's archive
            assert rc == 0 and kept, f"{frc}: the products are not on the cluster ({run_dir}): {out} {err}"
    finally:
        # The runbook's first step: free space on the archive.
        fill.unlink(missing_ok=True)
        if fill_dir.exists():
            fill_dir.rmdir()
    # The runbook's second step: clear the failed archive tasks with downstream; the night ends.
    stack.clear(run_id, failed, downstream=True)
    state = stack.wait_run(run_id, timeout=300)
    table = stack.table(run_id)
    _log(f"after freeing space and clearing {failed} (with downstream): {state}\n{table}")
    assert state == "success", table
    for frc in frcs:
        rows = stack.jobs(frc, FULL_NIGHT, since)
        assert len(rows) == 1, f"{frc} {FULL_NIGHT}: jobs since {since}: {rows}"
    stack.assert_audit(FULL_NIGHT, since=since)
    assert not _parts(root) - parts_before
    TIMINGS["fault 5 total"] = time.monotonic() - t0
