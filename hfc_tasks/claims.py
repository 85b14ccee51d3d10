"""Run claims: one (FRC, night) is processed by one DAG run at a time (issue 16, item 2).

Two runs of the same night (a manual trigger while the scheduled run or a backfill of that
night is active, two overlapping backfills) would otherwise submit into the same run folder,
write the same archive files, delete files the other reads, and cancel the job the other
adopted. The claim is a row of ``hfc.night_claim`` (migration 0004) in the catalogue database:

- every stage of a run (submit, wait, archive, catalogue) calls :func:`claim` first: the row is
  free, or held by this run, or held by a run that is no longer queued or running (failed,
  succeeded, marked, deleted) -> this run holds it; held by another run that is still queued
  or running -> :class:`ClaimRefused` ("night N of FRC F is being processed by run R"), and the
  stage stops before it changes anything;
- the catalogue stage :func:`release`-s it when it succeeds;
- the wait's cancel-on-clear cancels a job only while the run :func:`holds` the claim.

Pure logic and SQL (psycopg 3), no Airflow: the caller says whether a run is active (the
operators ask Airflow through the Task SDK).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

# DAG run states in which a run may still run tasks: its claim is honoured.
ACTIVE_RUN_STATES = ("queued", "running")


@dataclass(frozen=True)
class RunRef:
    """A DAG run."""

    dag_id: str
    run_id: str

    def __str__(self) -> str:
        return f"{self.run_id} (DAG {self.dag_id})"


class ClaimRefused(RuntimeError):
    """Another run that is still queued or running processes this (FRC, night)."""

    def __init__(self, frc: str, night: dt.date, holder: RunRef, since: dt.datetime | None) -> None:
        self.frc, self.night, self.holder, self.since = frc, night, holder, since
        when = f" since {since:%Y-%m-%d %H:%M:%S %Z}".rstrip() if since else ""
        super().__init__(
            f"night {night} of FRC {frc} is being processed by run {holder}{when}: this run stops before "
            "it submits, archives or loads anything. Let that run finish (or mark it failed), then clear "
            "this task to process the night again"
        )


def decide(me: RunRef, holder: RunRef | None, holder_active: Callable[[], bool]) -> str:
    """``"take"`` (free, or the holder is no longer active), ``"keep"`` (ours) or ``"refuse"``."""
    if holder is None:
        return "take"
    if holder == me:
        return "keep"
    return "refuse" if holder_active() else "take"


def claim(conn, frc: str, night: dt.date, me: RunRef, is_active: Callable[[RunRef], bool]) -> RunRef | None:
    """Take or confirm ``me``'s claim on (frc, night); commits. Returns the inactive run whose
    claim was taken over (None when the claim was free or already ours).

    Raises :class:`ClaimRefused` when another run that ``is_active`` holds it. The row is read
    under ``FOR UPDATE``: two runs claiming at once are serialised, the second sees the first.
    """
    from hfc_tasks.catalogue import schema

    _outside_transaction(conn, "claim")
    schema.require_current(conn)  # the table comes with migration 0004, applied at deploy
    for _ in range(3):
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(
                "insert into hfc.night_claim (frc, night, dag_id, run_id) values (%s, %s, %s, %s) "
                "on conflict (frc, night) do nothing",
                (frc, night, me.dag_id, me.run_id),
            )
            if cur.rowcount == 1:
                return None
            cur.execute(
                "select dag_id, run_id, claimed_at from hfc.night_claim where frc = %s and night = %s for update",
                (frc, night),
            )
            row = cur.fetchone()
            if row is None:  # released between the two statements: try again
                continue
            holder = RunRef(row[0], row[1])
            verdict = decide(me, holder, lambda holder=holder: is_active(holder))
            if verdict == "keep":
                return None
            if verdict == "refuse":
                raise ClaimRefused(frc, night, holder, row[2])
            cur.execute(
                "update hfc.night_claim set dag_id = %s, run_id = %s, claimed_at = clock_timestamp() "
                "where frc = %s and night = %s",
                (me.dag_id, me.run_id, frc, night),
            )
            return holder
    raise RuntimeError(f"cannot claim night {night} of FRC {frc}: the claim changed hands three times")


HOLDER_SQL = "select dag_id, run_id from hfc.night_claim where frc = %s and night = %s"


def holder(conn, frc: str, night: dt.date) -> RunRef | None:
    """The run that holds (frc, night), or None (free, or the table does not exist yet)."""
    _outside_transaction(conn, "holder")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("select to_regclass('hfc.night_claim') is not null")
        if not cur.fetchone()[0]:
            return None
        cur.execute(HOLDER_SQL, (frc, night))
        row = cur.fetchone()
    return RunRef(row[0], row[1]) if row else None


def _outside_transaction(conn, what: str) -> None:
    # The claim's transaction must be its own: inside the caller's, it would be a savepoint,
    # committed (and seen by other runs) only when the caller commits.
    import psycopg

    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError(f"claims.{what} needs a connection outside any transaction (it commits its own)")


async def aholder(aconn, frc: str, night: dt.date) -> RunRef | None:
    """:func:`holder` on a psycopg ``AsyncConnection`` (the triggerer's event loop)."""
    async with aconn.cursor() as cur:
        await cur.execute("select to_regclass('hfc.night_claim') is not null")
        if not (await cur.fetchone())[0]:
            return None
        await cur.execute(HOLDER_SQL, (frc, night))
        row = await cur.fetchone()
    return RunRef(row[0], row[1]) if row else None


def release(conn, frc: str, night: dt.date, me: RunRef) -> bool:
    """Drop ``me``'s claim on (frc, night) (the night is done); commits. False if not held by ``me``."""
    _outside_transaction(conn, "release")
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "delete from hfc.night_claim where frc = %s and night = %s and dag_id = %s and run_id = %s",
            (frc, night, me.dag_id, me.run_id),
        )
        return cur.rowcount == 1
