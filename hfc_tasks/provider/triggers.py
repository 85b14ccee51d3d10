"""Triggers run in the triggerer, which imports them from this installed package (the
triggerer does not load DAG bundles).

:class:`SlurmJobTrigger` waits for a SLURM job's end state without holding a worker slot.
All the triggers of one triggerer that watch jobs on the same cluster connection share one
:class:`SacctPoller`: **one** SSH connection and **one** ``sacct -j id1,id2,...`` per poll
interval, whatever the number of waiting tasks. The providers' pattern (``SSHHookAsync.run_command``
in each trigger) opens a connection and runs a command per trigger: measured with 500 waiting jobs
(docs/benchmarks.md, "SLURM waits"), the shared poller holds 1 SSH connection and runs 1.00 ``sacct``
per interval at 0.25 % of a core; one per trigger holds 500 connections and runs 490.8 ``sacct`` per
interval at 14.5 % of a core (plus 500 sshd sessions and ~100 ``sacct`` a second on the cluster). So
the poller stays; its connection is the provider's (``SSHHookAsync``, fed by the one host-key policy:
:func:`open_cluster_connection`). The trigger cancels its job (``scancel``) when the task is
cleared or marked failed/success while it waits (``on_kill``, Airflow 3.3); a mark also reaches
the API server's listener (:mod:`hfc_tasks.provider.listeners`), which cancels even when no trigger runs.

Array tasks (reprocessing campaigns, :mod:`hfc_tasks.campaign`) go through the same poller: a
subscriber names a plain job (``12345``), one array task (``12345_7``, what
:class:`SlurmJobTrigger` accepts too) or every task of an array (``12345_*``,
:class:`SlurmArrayTrigger`); the tasks of one array are asked as that array, so the poll is still
**one** ``sacct`` per interval whatever the number of array tasks watched.

The wait never hangs in silence: a configuration error (no or invalid host key, unknown
connection, changed host key, login refused: :class:`hfc_tasks.sshpolicy.SshConfigError`) is
not retried, the poller hands it to every subscriber and each trigger fires an ``error`` event
at once, so the task fails with the reason in its own log. Transient errors (connection
refused/reset, timeouts, a failing ``sacct``) are retried with back-off; a trigger whose cluster
stays unreachable for ``unreachable_timeout`` seconds fires an ``error`` event with the last error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, ClassVar

import asyncssh
from airflow.triggers.base import BaseTrigger, TriggerEvent

from hfc_tasks import slurm
from hfc_tasks.sshpolicy import SshConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollFailure:
    """What subscribers get instead of a status when a poll failed."""

    message: str
    config: bool  # True: retrying cannot help (the poller has stopped)


async def open_cluster_connection(conn_id: str):
    """asyncssh connection from an Airflow SSH connection: the ssh provider's ``SSHHookAsync`` fed by
    the one host-key policy (:class:`hfc_tasks.provider.hooks.PolicySSHHookAsync`, the same policy as
    every stage: private_key with its passphrase, known_hosts, several trusted keys). Configuration
    errors raise :class:`~hfc_tasks.sshpolicy.SshConfigError`; network errors propagate as they are."""
    from hfc_tasks.provider.hooks import async_ssh_connection

    return await async_ssh_connection(conn_id)


class SacctPoller:
    """One SSH connection and one batched ``sacct`` per interval for every watched job.

    One instance per (event loop, connection id): the triggerer runs all its triggers in one
    event loop, so every :class:`SlurmJobTrigger` on the same cluster shares it. Each poll
    delivers the job's status (``None`` when SLURM does not know the job) to every subscriber.
    A subscriber to a whole array (``12345_*``: :func:`hfc_tasks.slurm.array_ref`) gets what SLURM
    knows of it, ``{"12345_7": JobStatus, ...}`` (:func:`hfc_tasks.slurm.array_rows`; ``None``
    while it knows nothing), to be read
    with :func:`hfc_tasks.slurm.tasks_of` (which also fills in the tasks never started).
    The interval starts at the smallest asked for, grows ×1.5 while nothing changes (up to
    ``max_interval``) and resets when any job changes state. Since one poll serves every
    waiting task, the cap stays short (15 s by default): a longer one only delays noticing
    that a job ended (measured: a 60 s cap added ~40 s per 2-minute job to a night). A dropped connection is
    reopened with exponential back-off.
    """

    _instances: ClassVar[dict[tuple[int, str], SacctPoller]] = {}
    BATCH = slurm.SACCT_BATCH

    def __init__(self, conn_id: str, interval: float, max_interval: float) -> None:
        self.conn_id = conn_id
        self.interval = interval
        self.max_interval = max_interval
        self.subscribers: dict[str, set[asyncio.Queue]] = {}
        self.last: dict[str, Any] = {}
        self.conn = None
        self.task: asyncio.Task | None = None
        self.wake = asyncio.Event()
        self.stats = {"connections": 0, "sacct_calls": 0, "squeue_calls": 0, "polls": 0, "errors": 0}

    @classmethod
    def get(cls, conn_id: str, interval: float, max_interval: float) -> SacctPoller:
        key = (id(asyncio.get_running_loop()), conn_id)
        poller = cls._instances.get(key)
        if poller is None:
            poller = cls._instances[key] = cls(conn_id, interval, max_interval)
        poller.interval = min(poller.interval, interval)
        poller.max_interval = max(poller.max_interval, max_interval)
        return poller

    def subscribe(self, job_id: str) -> asyncio.Queue:
        """A queue of ``job_id``'s statuses, one per poll: a job, an array task or a whole array."""
        job_id = slurm.check_job_ref(job_id)
        queue: asyncio.Queue = asyncio.Queue()
        self.subscribers.setdefault(job_id, set()).add(queue)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name=f"sacct-poller-{self.conn_id}")
        self.wake.set()  # a new job is polled at once, not at the end of a long back-off
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue) -> None:
        queues = self.subscribers.get(job_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.subscribers[job_id]
                self.last.pop(job_id, None)

    async def _command(self, command: str) -> str:
        if self.conn is None:
            self.conn = await open_cluster_connection(self.conn_id)
            self.stats["connections"] += 1
        result = await self.conn.run(command, check=False, timeout=120)
        if result.exit_status != 0:
            raise slurm.SlurmError(f"{command.split()[0]} failed (exit {result.exit_status}): "
                                   f"{(result.stderr or '').strip()}")
        return result.stdout or ""

    async def _counted(self, command: str) -> str:
        stdout = await self._command(command)
        calls = f"{command.split()[0]}_calls"
        if calls in self.stats:  # sacct_calls, squeue_calls
            self.stats[calls] += 1
        return stdout

    async def poll_once(self) -> bool:
        """Query every watched job once (:func:`hfc_tasks.slurm.job_states`) and deliver; True when
        some job changed state."""
        ids = sorted(self.subscribers, key=slurm.ref_sort_key)
        found = await slurm.arun_plan(slurm.job_states(ids, batch=self.BATCH), self._counted)
        self.stats["polls"] += 1
        changed = False
        for job_id in ids:
            if job_id.endswith("_*"):
                status: Any = slurm.array_rows(found, job_id[:-2]) or None
            else:
                status = found.get(job_id)
            if _states(status) != _states(self.last.get(job_id)):
                changed = True
            self.last[job_id] = status
            for queue in list(self.subscribers.get(job_id, ())):
                queue.put_nowait(status)
        return changed

    async def _run(self) -> None:
        interval = self.interval
        backoff = self.interval
        try:
            while self.subscribers:
                try:
                    changed = await self.poll_once()
                    backoff = self.interval
                    interval = self.interval if changed else min(interval * 1.5, self.max_interval)
                except SshConfigError as exc:
                    # Retrying cannot help: every waiting task fails now, with the reason.
                    self._drop(exc)
                    self._deliver(PollFailure(str(exc), config=True))
                    self.subscribers.clear()
                    self.last.clear()
                    return
                except (OSError, asyncssh.Error, slurm.SlurmError, TimeoutError) as exc:
                    self._drop(exc)
                    self._deliver(PollFailure(f"{type(exc).__name__}: {exc}".rstrip(": "), config=False))
                    interval = backoff
                    backoff = min(backoff * 2, self.max_interval)
                self.wake.clear()
                try:
                    await asyncio.wait_for(self.wake.wait(), timeout=interval)
                except TimeoutError:
                    pass
        finally:
            if self.conn is not None:
                self.conn.close()
                self.conn = None

    def _deliver(self, item: PollFailure) -> None:
        for queues in list(self.subscribers.values()):
            for queue in list(queues):
                queue.put_nowait(item)

    def _drop(self, exc: BaseException) -> None:
        self.stats["errors"] += 1
        log.warning("polling SLURM on %s failed (%s): reconnecting", self.conn_id, exc)
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _states(status: Any) -> Any:
    """What a poll compares to tell a change: the raw state (per task for a whole array)."""
    if isinstance(status, dict):
        return {k: v.raw_state for k, v in status.items()}
    return status and status.raw_state


class SlurmJobTrigger(BaseTrigger):
    """Fire once the SLURM job has ended (any final state); the sensor decides success.

    ``job_id`` is a plain job or one array task (``12345_7``: a night of a campaign)."""

    def __init__(
        self,
        *,
        ssh_conn_id: str,
        job_id: str,
        poll_interval: float = 5.0,
        max_poll_interval: float = 15.0,
        missing_timeout: float = 300.0,
        claim: dict[str, str] | None = None,
        unreachable_timeout: float = 3600.0,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.job_id = slurm.check_job_ref(job_id, whole_array=False)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.missing_timeout = missing_timeout
        # Seconds the cluster may stay unreachable before the wait fails (site setting
        # cluster_unreachable_seconds).
        self.unreachable_timeout = unreachable_timeout
        # The run's claim on its (FRC, night) (hfc_tasks.claims): conn_id, frc, night, dag_id, run_id.
        self.claim = claim

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ssh_conn_id": self.ssh_conn_id,
                "job_id": self.job_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "missing_timeout": self.missing_timeout,
                "claim": self.claim,
                "unreachable_timeout": self.unreachable_timeout,
            },
        )

    # No event sooner than this after the trigger started. Airflow 3.3's scheduler race: when a
    # trigger fires within a second or two of the deferral, the task can be re-queued before the
    # executor's "success" of the deferring process is processed, and the scheduler then marks
    # the resumed try "state changed externally" (up_for_retry, the event's message lost). Seen
    # with a configuration error, which the poller finds at once; same with a job already ended.
    # (apache/airflow#66374, race between the executor's event and the trigger's; re-check on upgrades.)
    MIN_EVENT_DELAY: ClassVar[float] = 10.0

    async def _settle(self, started: float) -> None:
        await asyncio.sleep(max(0.0, self.MIN_EVENT_DELAY - (time.monotonic() - started)))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        poller = SacctPoller.get(self.ssh_conn_id, self.poll_interval, self.max_poll_interval)
        queue = poller.subscribe(self.job_id)
        first_missing: float | None = None
        first_failure: float | None = None
        last_failure = ""
        last_state = None
        try:
            while True:
                status: slurm.JobStatus | PollFailure | None = await queue.get()
                if isinstance(status, PollFailure):
                    if status.config:
                        self.log.error("cannot watch SLURM job %s: %s", self.job_id, status.message)
                        await self._settle(started)
                        yield TriggerEvent({"status": "error", "config": True, "job_id": self.job_id,
                                            "message": status.message})
                        return
                    now = time.monotonic()
                    first_failure = first_failure or now
                    if status.message != last_failure:
                        self.log.warning("cannot reach the cluster over connection %r (%s): retrying; the wait "
                                         "fails if this lasts %.0f s", self.ssh_conn_id, status.message,
                                         self.unreachable_timeout)
                        last_failure = status.message
                    if now - first_failure >= self.unreachable_timeout:
                        await self._settle(started)
                        yield TriggerEvent({
                            "status": "error", "config": False, "job_id": self.job_id,
                            "message": f"the cluster was unreachable over connection {self.ssh_conn_id!r} for "
                            f"{now - first_failure:.0f} s (site setting cluster_unreachable_seconds: "
                            f"{self.unreachable_timeout:.0f} s); last error: {status.message}. SLURM job "
                            f"{self.job_id} was left as it is on the cluster: clear this task once the cluster "
                            "answers again to wait for it again",
                        })
                        return
                    continue
                if first_failure is not None:
                    self.log.info("the cluster answers again over connection %r", self.ssh_conn_id)
                    first_failure, last_failure = None, ""
                if status is None:
                    # Accounting can lag the controller: a missing job counts as pending for a while.
                    first_missing = first_missing or time.monotonic()
                    if time.monotonic() - first_missing > self.missing_timeout:
                        await self._settle(started)
                        yield TriggerEvent(
                            {
                                "status": "missing",
                                "job_id": self.job_id,
                                "message": f"SLURM job {self.job_id} is unknown to sacct and squeue after "
                                f"{self.missing_timeout:.0f} s: it vanished from accounting (or never existed)",
                            }
                        )
                        return
                    continue
                first_missing = None
                if status.is_final:
                    await self._settle(started)
                    yield TriggerEvent({"status": "final", "job_id": self.job_id, "job": status.to_dict()})
                    return
                if status.state != last_state:
                    self.log.info("SLURM job %s is %s (%s)", self.job_id, status.raw_state, status.reason)
                    last_state = status.state
        finally:
            poller.unsubscribe(self.job_id, queue)

    async def on_kill(self) -> None:
        """The task was cleared or marked while deferred: cancel the job on the cluster, but only
        while this run holds the claim on its night (never a job another run adopted)."""
        if self.claim is not None and not await self._holds_claim():
            return
        conn = await open_cluster_connection(self.ssh_conn_id)
        try:
            await conn.run(slurm.scancel_command(self.job_id), check=False, timeout=60)
            self.log.info("cancelled SLURM job %s (task cleared or marked while waiting)", self.job_id)
        finally:
            conn.close()

    async def _holds_claim(self) -> bool:
        import datetime as dt

        import psycopg
        from airflow.sdk import BaseHook

        from hfc_tasks.claims import RunRef, aholder
        from hfc_tasks.provider.catalogue_db import catalogue_params

        claim = self.claim or {}
        me = RunRef(claim["dag_id"], claim["run_id"])
        try:
            conn = await BaseHook.aget_connection(claim["conn_id"])
            # The same parameters as the workers' catalogue connections (TLS extras included).
            params = {"connect_timeout": "30", **catalogue_params(conn, application_name="hfc-triggerer")}
            async with await psycopg.AsyncConnection.connect(**params) as db:
                owner = await aholder(db, claim["frc"], dt.date.fromisoformat(claim["night"]))
        except Exception as exc:  # noqa: BLE001 - whatever the database says, never cancel blind
            self.log.error("cannot read the claim on night %s of FRC %s (%s): SLURM job %s NOT cancelled; "
                           "cancel it by hand if it must stop (scancel %s)", claim["night"], claim["frc"], exc,
                           self.job_id, self.job_id)
            return False
        if owner != me:
            self.log.warning("night %s of FRC %s is held by run %s, not this run: SLURM job %s NOT cancelled",
                             claim["night"], claim["frc"], owner or "(nobody)", self.job_id)
            return False
        return True


class SlurmArrayTrigger(BaseTrigger):
    """Fire when the tasks of a SLURM job array (a campaign's chunk) have ended.

    Subscribes the shared poller to the whole array (``<array job id>_*``): one ``sacct`` per
    interval for every watched array and job together. The array has ``count`` tasks, indexed
    ``0..count-1``. Fires ``{"status": "final", "array_job_id", "tasks": {index: status dict}}``
    once every task has ended (any final state: the caller reads which nights succeeded); with
    ``batch`` > 0, fires ``"status": "progress"`` (same payload) as soon as ``batch`` tasks not in
    ``known_final`` have ended, so a caller can process nights as they end and defer again with
    the indexes it has handled in ``known_final``. ``"missing"`` when SLURM knows no task of the
    array for ``missing_timeout`` seconds; ``"error"`` as :class:`SlurmJobTrigger` (configuration
    error at once, cluster unreachable for ``unreachable_timeout`` seconds).

    Clearing or marking the waiting task cancels nothing: a campaign is cancelled explicitly
    (:func:`hfc_tasks.slurm.cancel_pending_command`), never as a side effect of one task's state.
    """

    MIN_EVENT_DELAY: ClassVar[float] = SlurmJobTrigger.MIN_EVENT_DELAY

    def __init__(
        self,
        *,
        ssh_conn_id: str,
        array_job_id: str,
        count: int,
        known_final: list[int] | None = None,
        batch: int = 0,
        poll_interval: float = 5.0,
        max_poll_interval: float = 15.0,
        missing_timeout: float = 300.0,
        unreachable_timeout: float = 3600.0,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.array_job_id = slurm.check_job_id(array_job_id)
        if int(count) < 1:
            raise slurm.SlurmError(f"array {array_job_id}: count {count} must be at least 1")
        self.count = int(count)
        self.known_final = sorted({int(i) for i in known_final or ()})
        self.batch = int(batch)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.missing_timeout = missing_timeout
        self.unreachable_timeout = unreachable_timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ssh_conn_id": self.ssh_conn_id,
                "array_job_id": self.array_job_id,
                "count": self.count,
                "known_final": self.known_final,
                "batch": self.batch,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "missing_timeout": self.missing_timeout,
                "unreachable_timeout": self.unreachable_timeout,
            },
        )

    def _event(self, status: str, tasks: dict[int, slurm.JobStatus]) -> TriggerEvent:
        return TriggerEvent({"status": status, "array_job_id": self.array_job_id, "count": self.count,
                             "tasks": {str(i): t.to_dict() for i, t in sorted(tasks.items())}})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        ref = slurm.array_ref(self.array_job_id)
        poller = SacctPoller.get(self.ssh_conn_id, self.poll_interval, self.max_poll_interval)
        queue = poller.subscribe(ref)
        known = set(self.known_final)
        first_missing: float | None = None
        first_failure: float | None = None
        last_failure = ""
        last_summary = ""
        try:
            while True:
                item: dict[str, slurm.JobStatus] | PollFailure | None = await queue.get()
                if isinstance(item, PollFailure):
                    now = time.monotonic()
                    first_failure = first_failure or now
                    if item.message != last_failure:
                        self.log.warning("cannot reach the cluster over connection %r (%s): retrying",
                                         self.ssh_conn_id, item.message)
                        last_failure = item.message
                    if item.config or now - first_failure >= self.unreachable_timeout:
                        await asyncio.sleep(max(0.0, self.MIN_EVENT_DELAY - (time.monotonic() - started)))
                        message = item.message if item.config else (
                            f"the cluster was unreachable over connection {self.ssh_conn_id!r} for "
                            f"{now - first_failure:.0f} s; last error: {item.message}. SLURM array "
                            f"{self.array_job_id} was left as it is on the cluster")
                        yield TriggerEvent({"status": "error", "config": item.config,
                                            "array_job_id": self.array_job_id, "message": message})
                        return
                    continue
                first_failure, last_failure = None, ""
                if not item:
                    first_missing = first_missing or time.monotonic()
                    if time.monotonic() - first_missing > self.missing_timeout:
                        await asyncio.sleep(max(0.0, self.MIN_EVENT_DELAY - (time.monotonic() - started)))
                        yield TriggerEvent({
                            "status": "missing", "array_job_id": self.array_job_id,
                            "message": f"SLURM array {self.array_job_id}: no task known to sacct or squeue after "
                            f"{self.missing_timeout:.0f} s: it vanished from accounting (or never existed)"})
                        return
                    continue
                first_missing = None
                tasks = {i: t for i, t in slurm.tasks_of(item, self.array_job_id, self.count).items()
                         if i < self.count}
                ended = {i for i, t in tasks.items() if t.is_final}
                summary = f"{len(ended)}/{self.count} ended"
                if summary != last_summary:
                    self.log.info("SLURM array %s: %s", self.array_job_id, summary)
                    last_summary = summary
                if len(ended) == self.count:
                    await asyncio.sleep(max(0.0, self.MIN_EVENT_DELAY - (time.monotonic() - started)))
                    yield self._event("final", tasks)
                    return
                if self.batch > 0 and len(ended - known) >= self.batch:
                    await asyncio.sleep(max(0.0, self.MIN_EVENT_DELAY - (time.monotonic() - started)))
                    yield self._event("progress", tasks)
                    return
        finally:
            poller.unsubscribe(ref, queue)
