"""The run claims' SQL on the real PostgreSQL of the local site (issue 16 item 2): one
(FRC, night) is held by one run; a second run is refused while the holder is active, takes
over when it is not; two runs claiming at the same moment are serialised by the row lock."""

from __future__ import annotations

import datetime as dt
import re
import threading

import psycopg
import pytest

from hfc_tasks import claims
from hfc_tasks.claims import ClaimRefused, RunRef

pytestmark = pytest.mark.site
FRC, NIGHT = "demo-sunspots", dt.date(2024, 3, 1)
A = RunRef("hfc_nightly", "scheduled__2024-03-01T00:00:00+00:00")
B = RunRef("hfc_nightly", "manual__2026-12-02T01:00:00+00:00")


def active(run: RunRef) -> bool:
    return True


def inactive(run: RunRef) -> bool:
    return False


def waiting_on_lock(dsn: str, pid: int) -> bool:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("select wait_event_type from pg_stat_activity where pid = %s", (pid,)).fetchone()
    return bool(row) and row[0] == "Lock"


def claim_in_thread(conn, me: RunRef, is_active) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def go():
        try:
            outcome["previous"] = claims.claim(conn, FRC, NIGHT, me, is_active)
        except Exception as exc:  # noqa: BLE001 - the test looks at what it was
            outcome["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    return thread, outcome


def wait_until(predicate, what: str, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def test_claim_refuse_take_over_release(fresh_db):
    with psycopg.connect(fresh_db) as a, psycopg.connect(fresh_db) as b:
        assert claims.claim(a, FRC, NIGHT, A, never_asked) is None
        assert claims.claim(a, FRC, NIGHT, A, never_asked) is None  # every stage of A: still A's
        refused = f"night 2024-03-01 of FRC {FRC} is being processed by run {A.run_id}"
        with pytest.raises(ClaimRefused, match=re.escape(refused)):
            claims.claim(b, FRC, NIGHT, B, active)
        assert claims.holder(b, FRC, NIGHT) == A
        # another night, another FRC: free
        assert claims.claim(b, FRC, NIGHT + dt.timedelta(days=1), B, never_asked) is None
        assert claims.claim(b, "other-frc", NIGHT, B, never_asked) is None
        # A is no longer active (failed, marked): B takes the night over
        assert claims.claim(b, FRC, NIGHT, B, inactive) == A
        assert claims.holder(a, FRC, NIGHT) == B
        with pytest.raises(ClaimRefused, match=re.escape(f"being processed by run {B.run_id}")):
            claims.claim(a, FRC, NIGHT, A, active)  # A cleared later: refused, B's job is safe
        assert not claims.release(a, FRC, NIGHT, A)
        assert claims.release(b, FRC, NIGHT, B)
        assert claims.holder(a, FRC, NIGHT) is None


def never_asked(run: RunRef) -> bool:
    raise AssertionError(f"is_active({run}) asked for a claim that is free or ours")


def test_two_runs_claiming_at_once_are_serialised(fresh_db):
    """A holds the row lock (its claim transaction is open): B waits on the lock, then sees A."""
    with psycopg.connect(fresh_db) as a, psycopg.connect(fresh_db) as b:
        claims.claim(a, FRC, NIGHT, A, never_asked)  # creates the table (migrations) and A's row
        assert claims.release(a, FRC, NIGHT, A)
        # A's claim transaction, stopped right after its insert (not committed yet)
        a.execute("insert into hfc.night_claim (frc, night, dag_id, run_id) values (%s, %s, %s, %s)",
                  (FRC, NIGHT, A.dag_id, A.run_id))
        thread, outcome = claim_in_thread(b, B, active)
        wait_until(lambda: waiting_on_lock(fresh_db, b.info.backend_pid), "B waits for A's row")
        assert outcome == {}
        a.commit()
        thread.join(30)
        assert isinstance(outcome.get("error"), ClaimRefused), outcome
        # and the same with the row present, locked FOR UPDATE by a stage of A
        with a.transaction():
            a.execute("select 1 from hfc.night_claim where frc = %s and night = %s for update", (FRC, NIGHT))
            thread, outcome = claim_in_thread(b, B, active)
            wait_until(lambda: waiting_on_lock(fresh_db, b.info.backend_pid), "B waits for A's lock")
            assert outcome == {}
        thread.join(30)
        assert isinstance(outcome.get("error"), ClaimRefused), outcome
        assert claims.holder(a, FRC, NIGHT) == A
