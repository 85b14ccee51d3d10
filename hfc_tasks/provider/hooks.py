"""Airflow layer: connections to the cluster, the archive and the catalogue.

Thin on purpose: connections come from Airflow (``AIRFLOW_CONN_*`` or a secrets backend)
through the providers' hooks, the command lines and their parsing come from the pure
modules (:mod:`hfc_tasks.slurm`, :mod:`hfc_tasks.archive`). Every SSH connection of every
stage and process (worker, triggerer, api-server) goes through one host-key policy,
:func:`hfc_tasks.sshpolicy.resolve`: :func:`ssh_client` (paramiko: submit, the catalogue's and
the status page's SFTP reads), :func:`ssh_endpoint` (the asyncssh archive engine) and
:func:`async_ssh_target` (the wait's trigger). A connection that can never work (no or invalid host
key, unknown connection id, changed host key, login refused) raises
:class:`ConnectionConfigError`, an ``AirflowFailException``: the task fails at once, without
retries, with the fix in the message.
"""

from __future__ import annotations

import shlex
import socket
from contextlib import contextmanager

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from hfc_tasks import slurm, sshpolicy
from hfc_tasks.registry import SlurmResources


class ConnectionConfigError(AirflowFailException, sshpolicy.SshConfigError):
    """A connection that can never work as configured: the task fails at once, no retry."""


def ssh_target(conn_id: str) -> sshpolicy.SshTarget:
    """The Airflow connection's SSH parameters and trusted host keys (the one policy)."""
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise ConnectionConfigError(str(sshpolicy.unknown_connection(conn_id))) from None
    return target_of(conn)


async def async_ssh_target(conn_id: str) -> sshpolicy.SshTarget:
    """:func:`ssh_target` for the triggerer, which reads connections asynchronously."""
    try:
        conn = await BaseHook.aget_connection(conn_id)
    except AirflowNotFoundException:
        raise ConnectionConfigError(str(sshpolicy.unknown_connection(conn_id))) from None
    return target_of(conn)


def target_of(conn) -> sshpolicy.SshTarget:
    """The SSH target of a connection already read (the one policy: :func:`hfc_tasks.sshpolicy.resolve`)."""
    try:
        return sshpolicy.resolve(conn.conn_id, host=conn.host, port=conn.port, login=conn.login,
                                 extra=conn.extra_dejson, password=conn.password)
    except sshpolicy.SshConfigError as exc:
        raise ConnectionConfigError(str(exc)) from None


def ssh_client(conn_id: str, *, timeout: float | None = None):
    """A connected paramiko ``SSHClient``; the server's key must be one the policy trusts."""
    import io

    import paramiko

    target = ssh_target(conn_id)

    class _Refuse(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            raise _Unknown(f"the host offered a {key.get_name()} key that is not trusted")

    class _Unknown(paramiko.SSHException):
        pass

    client = paramiko.SSHClient()
    known = client.get_host_keys()
    for line in target.host_keys:
        key_type, blob = sshpolicy.key_parts(line)
        known.add(target.entry, key_type, paramiko.PKey.from_type_string(key_type, blob))
    client.set_missing_host_key_policy(_Refuse())
    pkey = None
    if target.private_key and not target.key_file:
        for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                pkey = cls.from_private_key(io.StringIO(target.private_key))
                break
            except paramiko.SSHException:
                continue
        else:
            raise ConnectionConfigError(f"{target.describe()}: the private_key extra is not a private key "
                                        "paramiko can read (ed25519, ecdsa, rsa; unencrypted)")
    wait = timeout or target.connect_timeout
    try:
        client.connect(target.host, target.port, username=target.username or None, password=target.password,
                       key_filename=target.key_file, pkey=pkey, look_for_keys=False, allow_agent=False,
                       timeout=wait, banner_timeout=wait, auth_timeout=wait)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise ConnectionConfigError(str(target.host_key_changed(
            f"it offered {exc.key.get_name()} {exc.key.get_base64()[:16]}..."))) from None
    except _Unknown as exc:
        client.close()
        raise ConnectionConfigError(str(target.host_key_changed(str(exc)))) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise ConnectionConfigError(str(target.login_refused(str(exc)))) from None
    except TimeoutError as exc:  # still a TimeoutError (transient: retried), saying where
        client.close()
        raise TimeoutError(f"{target.describe()}: no SSH answer within {wait:g} s "
                           "(network down or host unreachable)") from exc
    except BaseException:
        client.close()
        raise
    return client


class SlurmHook(BaseHook):
    """Run SLURM commands on the cluster's login node over one reused SSH connection."""

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "hfc_cluster"
    hook_name = "HFC SLURM cluster (SSH)"

    def __init__(self, ssh_conn_id: str = default_conn_name, *, command_timeout: float = 120) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.command_timeout = command_timeout
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = ssh_client(self.ssh_conn_id)
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
    ) -> tuple[slurm.Decision, str]:
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
        """The jobs' states by :func:`hfc_tasks.slurm.job_states` (sacct, then squeue and scontrol)."""
        return slurm.run_plan(slurm.job_states(job_ids), lambda command: self.check(command, what=command.split()[0]))

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
    client = ssh_client(conn_id)
    try:
        sftp = client.open_sftp()
        _nodelay(sftp)
        try:
            yield sftp
        finally:
            sftp.close()
    finally:
        client.close()


def ssh_endpoint(conn_id: str):
    """Plain SSH parameters of an Airflow connection, for the asyncssh archive engine.

    The same extras and the same host-key policy as every stage (:func:`ssh_target`): the
    trusted keys are handed over as ``host_key`` lines, so the engine never reads another file.
    """
    from hfc_tasks.archive import Endpoint

    target = ssh_target(conn_id)
    return Endpoint(
        host=target.host,
        port=target.port,
        username=target.username,
        key_file=target.key_file,
        private_key=target.private_key,
        host_key="\n".join(target.host_keys),
        known_hosts=None,
        connect_timeout=target.connect_timeout,
        name=conn_id,
    )
