"""Airflow layer: connections to the cluster, the archive and the catalogue.

Thin on purpose: connections come from Airflow (``AIRFLOW_CONN_*`` or a secrets backend)
through the providers' hooks, the command lines and their parsing come from the pure
modules (:mod:`hfc_tasks.slurm`, :mod:`hfc_tasks.transfer`). Host keys are always
verified: the connection's ``host_key`` extra is the only key accepted.
"""

from __future__ import annotations

import shlex
import socket
from contextlib import contextmanager

from airflow.providers.postgres.hooks.postgres import PostgresHook
from airflow.providers.ssh.hooks.ssh import SSHHook
from airflow.sdk import BaseHook

from hfc_tasks import slurm
from hfc_tasks.registry import SlurmResources


class SlurmHook(BaseHook):
    """Run SLURM commands on the cluster's login node over one reused SSH connection."""

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "hfc_cluster"
    hook_name = "HFC SLURM cluster (SSH)"

    def __init__(self, ssh_conn_id: str = default_conn_name, *, command_timeout: float = 120) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.command_timeout = command_timeout
        self._ssh_hook: SSHHook | None = None
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._ssh_hook = SSHHook(ssh_conn_id=self.ssh_conn_id, conn_timeout=30)
            self._client = self._ssh_hook.get_conn()
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def run(self, command: str, *, stdin: str | None = None, timeout: float | None = None) -> tuple[int, str, str]:
        """Run one command line; returns (exit status, stdout, stderr)."""
        chan_in, chan_out, chan_err = self.client.exec_command(command, timeout=timeout or self.command_timeout)
        if stdin is not None:
            chan_in.write(stdin)
            chan_in.channel.shutdown_write()
        out = chan_out.read().decode("utf-8", "replace")
        err = chan_err.read().decode("utf-8", "replace")
        return chan_out.channel.recv_exit_status(), out, err

    def check(self, command: str, *, stdin: str | None = None, what: str = "", timeout: float | None = None) -> str:
        rc, out, err = self.run(command, stdin=stdin, timeout=timeout)
        if rc != 0:
            raise slurm.SlurmError(
                f"{what or command.split()[0]} failed on the cluster (exit {rc}): {err.strip() or out.strip()}"
            )
        return out

    def submit(
        self,
        *,
        job_name: str,
        run_dir: str,
        command: str,
        resources: SlurmResources,
        default_partition: str | None = None,
        lock_file: str,
        stagger_seconds: int = 0,
        attempt: str = "",
        lock_wait: int = slurm.SUBMIT_LOCK_WAIT,
    ) -> tuple[str, str]:
        """Adopt the live job with this name (or the one this ``attempt`` already submitted),
        or submit one, or say how long to wait.

        Returns ``("ADOPT", id)``, ``("SUBMIT", id)`` or ``("WAIT", seconds)``: see
        :func:`hfc_tasks.slurm.submit_script` (serialised by flock on the cluster). A failing
        ``squeue``/``sbatch`` raises :class:`SlurmError` (the try fails, nothing submitted). Our
        side waits :func:`hfc_tasks.slurm.submit_timeout`, longer than the script's own bounds,
        whatever ``command_timeout`` says: it never gives up while the cluster may still submit.
        """
        script = slurm.submit_script(
            job_name=job_name,
            sbatch=slurm.sbatch_command(
                job_name=job_name, run_dir=run_dir, resources=resources, default_partition=default_partition
            ),
            lock_file=lock_file,
            stagger_seconds=stagger_seconds,
            attempt=attempt,
            lock_wait=lock_wait,
        )
        out = self.check(script, stdin=slurm.batch_script(command, job_name=job_name),
                         what=f"submission of {job_name}", timeout=slurm.submit_timeout(lock_wait))
        return slurm.parse_submit(out)

    def job_summary(self, job_id: str) -> str:
        """MaxRSS over the job's steps ('' when accounting has none)."""
        rc, out, _ = self.run(slurm.steps_command(job_id))
        return slurm.max_rss(out) if rc == 0 else ""

    def status(self, job_ids: list[str]) -> dict[str, slurm.JobStatus]:
        """sacct first; squeue --states=all for jobs accounting does not know (yet)."""
        found = slurm.parse_sacct(self.check(slurm.sacct_command(job_ids), what="sacct"))
        missing = [j for j in job_ids if j not in found]
        if missing:
            for job_id, status in slurm.parse_squeue(self.run(slurm.squeue_command(missing))[1]).items():
                if status.is_final:  # accounting lags: the exit code comes from the controller
                    status = slurm.with_scontrol_exit(status, self.run(slurm.scontrol_command(job_id))[1])
                found[job_id] = status
        return found

    def cancel(self, job_id: str) -> None:
        # Cancelling a job that already ended is harmless: scancel says so and we ignore it.
        self.run(slurm.scancel_command(job_id))

    def tail(self, path: str, lines: int = 50) -> str:
        rc, out, err = self.run(f"tail -n {int(lines)} -- {shlex.quote(path)}")
        return out if rc == 0 else f"(cannot read {path}: {err.strip()})"


def _nodelay(sftp_client) -> None:
    # Small files are round-trip bound: without TCP_NODELAY Nagle + delayed ACK cap
    # paramiko near 160 files/s on loopback (LOCAL_SITE_NOTES.md).
    sock = sftp_client.get_channel().get_transport().sock
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextmanager
def sftp_session(conn_id: str):
    """One SFTP session on one SSH connection, reused for every file of a task."""
    hook = SSHHook(ssh_conn_id=conn_id, conn_timeout=30)
    client = hook.get_conn()
    try:
        sftp = client.open_sftp()
        _nodelay(sftp)
        try:
            yield sftp
        finally:
            sftp.close()
    finally:
        client.close()


def catalogue_connect(conn_id: str):
    """A psycopg 3 connection to the catalogue, from the Airflow postgres connection."""
    import psycopg

    conn = PostgresHook.get_connection(conn_id)
    return psycopg.connect(
        host=conn.host,
        port=conn.port or 5432,
        user=conn.login,
        password=conn.password,
        dbname=conn.schema or "hfc",
        application_name="hfc-pipeline",
    )


def ssh_endpoint(conn_id: str):
    """Plain SSH parameters of an Airflow connection, for the asyncssh archive engine.

    The same extras as the provider's SSHHook: ``key_file`` (or ``private_key``) and
    ``host_key`` (``ssh-ed25519 AAAA...``; a bare base64 key is taken as ssh-rsa, as SSHHook
    does). Without ``host_key`` the user's ``~/.ssh/known_hosts`` is used; the check is never
    skipped, so ``no_host_key_check`` is refused.
    """
    import os

    from hfc_tasks.transfer import Endpoint

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson or {}
    if str(extra.get("no_host_key_check", "false")).lower() == "true":
        raise ValueError(f"connection {conn_id}: no_host_key_check is set; the archive stage always verifies "
                         "host keys: give the host's key in the host_key extra")
    host_key = extra.get("host_key")
    if host_key and len(host_key.split()) == 1:
        host_key = f"ssh-rsa {host_key}"
    return Endpoint(
        host=conn.host,
        port=int(conn.port or 22),
        username=conn.login or "",
        key_file=extra.get("key_file"),
        private_key=extra.get("private_key"),
        host_key=host_key,
        known_hosts=None if host_key else os.path.expanduser("~/.ssh/known_hosts"),
        connect_timeout=float(extra.get("conn_timeout") or 30),
        name=conn_id,
    )
