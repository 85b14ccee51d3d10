"""Triggers run in the triggerer, which imports them from this installed package (the
triggerer does not load DAG bundles).

:class:`SlurmJobTrigger` waits for a SLURM job's end state without holding a worker slot:
it polls ``sacct`` over one asyncssh connection with back-off, and cancels the job
(``scancel``) when the task is cleared or marked failed/success while it waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from hfc_tasks import slurm


async def open_cluster_connection(conn_id: str):
    """asyncssh connection from an Airflow SSH connection, host key strictly verified."""
    import asyncssh
    from airflow.sdk import BaseHook

    conn = await BaseHook.aget_connection(conn_id)
    extra = conn.extra_dejson
    host_key = extra.get("host_key")
    if not host_key:
        raise slurm.SlurmError(
            f"connection {conn_id!r} has no host_key extra: refusing to connect without host-key verification"
        )
    key_type, key_data = host_key.split()[:2]
    trusted = asyncssh.import_public_key(f"{key_type} {key_data}")
    options: dict[str, Any] = {
        "host": conn.host,
        "port": conn.port or 22,
        "username": conn.login,
        # A (trusted keys, CA keys, revoked keys) tuple: only this host key is accepted,
        # whatever the port (asyncssh matches known_hosts lines by [host]:port otherwise).
        "known_hosts": ([trusted], [], []),
        "keepalive_interval": 30,
    }
    if extra.get("key_file"):
        options["client_keys"] = [extra["key_file"]]
    if conn.password:
        options["password"] = conn.password
    return await asyncssh.connect(**options)


class SlurmJobTrigger(BaseTrigger):
    """Fire once the SLURM job has ended (any final state); the sensor decides success."""

    def __init__(
        self,
        *,
        ssh_conn_id: str,
        job_id: str,
        poll_interval: float = 5.0,
        max_poll_interval: float = 60.0,
        missing_timeout: float = 300.0,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.job_id = slurm.check_job_id(job_id)
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.missing_timeout = missing_timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "ssh_conn_id": self.ssh_conn_id,
                "job_id": self.job_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "missing_timeout": self.missing_timeout,
            },
        )

    async def _status(self, conn) -> slurm.JobStatus | None:
        result = await conn.run(slurm.sacct_command([self.job_id]), check=False, timeout=60)
        if result.exit_status != 0:
            raise slurm.SlurmError(f"sacct failed (exit {result.exit_status}): {(result.stderr or '').strip()}")
        return slurm.parse_sacct(result.stdout or "").get(self.job_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        interval = self.poll_interval
        first_missing: float | None = None
        last_state = None
        conn = None
        try:
            while True:
                try:
                    if conn is None:
                        conn = await open_cluster_connection(self.ssh_conn_id)
                    status = await self._status(conn)
                except (OSError, slurm.SlurmError) as exc:
                    # A dropped connection or a busy slurmdbd: reconnect with back-off.
                    self.log.warning("polling job %s failed (%s); retrying in %.0f s", self.job_id, exc, interval)
                    if conn is not None:
                        conn.close()
                        conn = None
                    await asyncio.sleep(interval)
                    interval = min(interval * 2, self.max_poll_interval)
                    continue
                if status is None:
                    # Accounting can lag the controller: a missing job counts as pending for a while.
                    first_missing = first_missing or time.monotonic()
                    if time.monotonic() - first_missing > self.missing_timeout:
                        yield TriggerEvent(
                            {
                                "status": "missing",
                                "job_id": self.job_id,
                                "message": f"job {self.job_id} is not in SLURM accounting after "
                                f"{self.missing_timeout:.0f} s",
                            }
                        )
                        return
                else:
                    first_missing = None
                    if status.is_final:
                        yield TriggerEvent({"status": "final", "job_id": self.job_id, "job": status.to_dict()})
                        return
                    if status.state != last_state:
                        # A state change resets the back-off: things are moving.
                        self.log.info("job %s is %s", self.job_id, status.raw_state)
                        last_state = status.state
                        interval = self.poll_interval
                await asyncio.sleep(interval)
                interval = min(interval * 1.5, self.max_poll_interval)
        finally:
            if conn is not None:
                conn.close()

    async def on_kill(self) -> None:
        """The task was cleared or marked while deferred: cancel the job on the cluster."""
        conn = await open_cluster_connection(self.ssh_conn_id)
        try:
            await conn.run(slurm.scancel_command(self.job_id), check=False, timeout=60)
            self.log.info("cancelled SLURM job %s (task cleared or marked while waiting)", self.job_id)
        finally:
            conn.close()
