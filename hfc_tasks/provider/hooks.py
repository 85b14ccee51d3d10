"""Airflow layer: SSH and SFTP connections to the cluster and the archive, on the providers' hooks.

**One function turns a connection into verified endpoint settings**, for sync and async use alike:
:func:`hfc_tasks.sshpolicy.resolve` (through :func:`ssh_target`, and :func:`async_ssh_target` in
the triggerer). It decides which host keys are trusted (the ``host_key`` extra, one key or
several, or a known_hosts file) and reads the client's extras (``key_file`` or ``private_key``
with ``private_key_passphrase``, ``conn_timeout``, ``compress``, ``ciphers``,
``disabled_algorithms``). Every SSH connection of every stage and process is built from those
settings, so every host-key check goes through the policy:

* :class:`PolicySSHHook`, the ssh provider's ``SSHHook``: ``submit``, the sensors, cancellation
  and the status page (:class:`SlurmHook`), :func:`ssh_client`;
* :class:`PolicySFTPHook`, the sftp provider's ``SFTPHook``: the catalogue's SFTP reads, the
  status page's files, the CLI and the audit (:func:`sftp_session`);
* :class:`PolicySSHHookAsync`, the ssh provider's ``SSHHookAsync``: the wait's trigger
  (:mod:`hfc_tasks.provider.triggers`, whose shared ``sacct`` poller stays: figure there);
* :func:`ssh_endpoint`: the archive engine (:mod:`hfc_tasks.archive`, asyncssh), which stays
  because it is measurably faster than the providers' hooks for the ``archive`` stage's many small
  files: relaying 1,000 × 20 KB cluster → worker → archive (``bench/ssh_hooks.py``, the same work
  for both), the engine moves 1,050 files/s (median of 3; 64 in flight, AES-GCM, coalesced
  writes), ``SFTPHook`` 415 files/s (paramiko, one file after the other as its file methods go),
  i.e. 2.5× slower. The whole ``archive`` task (verification, rename, manifest, delete) reaches
  727–814 files/s (docs/benchmarks.md, "Archive transfer").

Measured on the same bench, and kept: TCP_NODELAY on every paramiko connection (415 files/s with
it, 159 without: Nagle + delayed ACK on small requests), and ``compress`` off unless the
connection asks for it (the provider's default is on: 317 files/s instead of 415 on a LAN).

A connection that can never work (no or invalid host key, unknown connection id, changed host
key, login refused, an unreadable or wrongly decrypted client key) raises
:class:`ConnectionConfigError`, an ``AirflowFailException``: the task fails at once, without
retries, with the fix in the message.
"""

from __future__ import annotations

import shlex
import socket
from contextlib import contextmanager

import paramiko
from airflow.providers.sftp.hooks.sftp import SFTPHook
from airflow.providers.ssh.hooks.ssh import SSHHook, SSHHookAsync
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

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


class _Untrusted(paramiko.SSHException):
    """The host offered a key of a type the policy has no key for."""


class _RefuseUntrusted(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client, hostname, key):
        raise _Untrusted(f"the host offered a {key.get_name()} key that is not trusted")


class PolicySSHHook(SSHHook):
    """The ssh provider's :class:`SSHHook` on the endpoint settings of the one policy.

    Built from :func:`ssh_target` instead of letting ``SSHHook`` read the connection: the
    provider's own reading takes one ``host_key`` only (the first two words: no known_hosts
    line, no second key for a rotation), has no ``known_hosts`` extra, accepts
    ``no_host_key_check``/``allow_host_key_change``, and reads ``~/.ssh/config`` (ProxyCommand,
    IdentityFile). Everything else is the provider's: the private key text and its passphrase
    (``_pkey_from_private_key``), ``exec_ssh_client_command``, tunnels, ``test_connection``, the
    client reuse, keepalive, ``ciphers``, ``disabled_algorithms``, ``compress``.

    Only :meth:`get_conn` is ours, because the provider's loads the process user's
    ``~/.ssh/known_hosts`` into paramiko's *system* host keys, which paramiko checks before the
    ``host_key`` extra (a stale line there would override the connection), and retries a refused
    host key three times. Ours trusts exactly the policy's keys, refuses any other (nothing is
    sent), never uses an SSH agent, and sets TCP_NODELAY (:func:`_nodelay`).
    """

    hook_name = "HFC SSH (host keys by the HFC policy)"

    def __init__(self, ssh_conn_id: str | None = None, *, target: sshpolicy.SshTarget | None = None,
                 timeout: float | None = None, host_proxy_cmd: str | None = None, **kwargs) -> None:
        target = target or ssh_target(ssh_conn_id)
        wait = timeout or target.connect_timeout
        super().__init__(remote_host=target.host, port=target.port, username=target.username or None,
                         password=target.password, key_file=target.key_file, conn_timeout=wait,
                         banner_timeout=wait, auth_timeout=wait, conn_retry_attempts=1, no_host_key_check=False,
                         disabled_algorithms=target.disabled_algorithms,
                         ciphers=list(target.ciphers) if target.ciphers else None,
                         host_proxy_cmd=host_proxy_cmd, **kwargs)
        # The provider's __init__ may have taken these from ~/.ssh/config: the connection decides.
        self.ssh_conn_id = target.conn_id
        self.key_file = target.key_file
        self.host_proxy_cmd = host_proxy_cmd
        self.look_for_keys = False
        self.compress = target.compress
        self.target = target
        if target.private_key:
            try:  # the provider's loader: ed25519/ecdsa/rsa, with the passphrase
                self.pkey = self._pkey_from_private_key(target.private_key, passphrase=target.passphrase)
            except AirflowException as exc:
                raise ConnectionConfigError(f"{target.describe()}: the private_key extra: {exc}") from None

    def get_conn(self) -> paramiko.SSHClient:
        """A connected paramiko client (reused while its transport is up); the server's key must be
        one the policy trusts, else :class:`ConnectionConfigError` before anything is sent."""
        if self.client is not None and (t := self.client.get_transport()) is not None and t.is_active():
            return self.client
        target = self.target
        client = paramiko.SSHClient()
        known = client.get_host_keys()  # only these: no system host keys
        for line in target.host_keys:
            key_type, blob = sshpolicy.key_parts(line)
            known.add(target.entry, key_type, paramiko.PKey.from_type_string(key_type, blob))
        client.set_missing_host_key_policy(_RefuseUntrusted())
        try:
            client.connect(target.host, target.port, username=self.username, password=target.password,
                           key_filename=self.key_file, pkey=self.pkey, look_for_keys=False, allow_agent=False,
                           timeout=self.conn_timeout, banner_timeout=self.banner_timeout,
                           auth_timeout=self.auth_timeout, compress=self.compress, sock=self.host_proxy,
                           disabled_algorithms=self.disabled_algorithms)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise ConnectionConfigError(str(target.host_key_changed(
                f"it offered {exc.key.get_name()} {exc.key.get_base64()[:16]}..."))) from None
        except _Untrusted as exc:
            client.close()
            raise ConnectionConfigError(str(target.host_key_changed(str(exc)))) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise ConnectionConfigError(str(target.login_refused(str(exc)))) from None
        except TimeoutError as exc:  # still a TimeoutError (transient: retried), saying where
            client.close()
            raise TimeoutError(f"{target.describe()}: no SSH answer within {self.conn_timeout:g} s "
                               "(network down or host unreachable)") from exc
        except BaseException:
            client.close()
            raise
        transport = client.get_transport()
        if transport is not None:
            if self.keepalive_interval:
                transport.set_keepalive(self.keepalive_interval)
            if self.ciphers:
                transport.get_security_options().ciphers = self.ciphers
            _nodelay(transport)
        self.client = client
        return client


class PolicySFTPHook(SFTPHook, PolicySSHHook):
    """The sftp provider's :class:`SFTPHook` (its file methods, ``get_managed_conn``) over
    :class:`PolicySSHHook`'s connection: the same host-key policy, TCP_NODELAY included."""

    hook_name = "HFC SFTP (host keys by the HFC policy)"

    def __init__(self, ssh_conn_id: str | None = None, *, target: sshpolicy.SshTarget | None = None,
                 timeout: float | None = None) -> None:
        super().__init__(ssh_conn_id=ssh_conn_id, target=target, timeout=timeout)

    def _build_worker_hook(self) -> PolicySFTPHook:
        # the provider's concurrent transfers build plain SFTPHooks: ours keep the policy
        return PolicySFTPHook(self.ssh_conn_id, target=self.target, timeout=self.conn_timeout)


class PolicySSHHookAsync(SSHHookAsync):
    """The ssh provider's :class:`SSHHookAsync` on the endpoint settings of the one policy.

    The provider's connection assembly is used as it is (client key from ``key_file`` or the
    ``private_key`` text with its passphrase, keepalive); what it would read from the connection
    is replaced by the policy's settings (:meth:`_parse_extras` does nothing): left to itself it
    trusts the first ``host_key`` only, and only under the bare host name (``host key``, which
    asyncssh does not match for a port other than 22), and turns ``no_host_key_check`` into
    "trust any key". asyncssh gets the policy's trusted keys as its ``known_hosts``. The provider
    passes no connect or login timeout: :meth:`get_conn` bounds the whole handshake by the
    connection's ``conn_timeout`` (30 s by default) twice over, as before (connect, then login).
    """

    def __init__(self, target: sshpolicy.SshTarget) -> None:
        super().__init__(ssh_conn_id=target.conn_id, host=target.host, port=target.port,
                         username=target.username or None, password=target.password,
                         key_file=target.key_file or "", private_key=target.private_key or "",
                         passphrase=target.passphrase or "", keepalive_interval=30)
        self.known_hosts = sshpolicy.asyncssh_known_hosts(target.host_keys)  # type: ignore[assignment]
        self.target = target

    def _parse_extras(self, conn) -> None:
        """Nothing: the policy (:func:`hfc_tasks.sshpolicy.resolve`) has read the extras."""

    async def get_conn(self):
        """An asyncssh connection (the caller closes it). Configuration errors raise
        :class:`ConnectionConfigError`; network errors propagate (TimeoutError when it takes
        longer than the bound)."""
        import asyncio

        import asyncssh

        target = self.target
        bound = 2 * target.connect_timeout
        try:
            return await asyncio.wait_for(self._get_conn(), bound)
        except asyncssh.HostKeyNotVerifiable as exc:
            raise ConnectionConfigError(str(target.host_key_changed(exc.reason))) from None
        except asyncssh.PermissionDenied as exc:
            raise ConnectionConfigError(str(target.login_refused(exc.reason))) from None
        except TimeoutError as exc:
            raise TimeoutError(f"{target.describe()}: no SSH answer within {bound:g} s "
                               "(network down or host unreachable)") from exc


async def async_ssh_connection(conn_id: str):
    """An asyncssh connection for the triggerer: :func:`async_ssh_target` (the policy), then
    :class:`PolicySSHHookAsync`."""
    return await PolicySSHHookAsync(await async_ssh_target(conn_id)).get_conn()


def ssh_client(conn_id: str, *, timeout: float | None = None) -> paramiko.SSHClient:
    """A connected paramiko ``SSHClient`` (:class:`PolicySSHHook`); the caller closes it."""
    return PolicySSHHook(conn_id, timeout=timeout).get_conn()


class SlurmHook(BaseHook):
    """Run SLURM commands on the cluster's login node over one reused SSH connection.

    The connection is the ssh provider's (:attr:`ssh_hook`, a :class:`PolicySSHHook`; a dropped one
    is reopened on the next command). :meth:`run` is ours, not ``SSHHook.exec_ssh_client_command``:
    the submission feeds the batch script on stdin, which the provider's closes at once, and the
    provider logs every output line at INFO (``sacct``/``squeue`` listings in every task log).
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "hfc_cluster"
    hook_name = "HFC SLURM cluster (SSH)"

    def __init__(self, ssh_conn_id: str = default_conn_name, *, command_timeout: float = 120) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.command_timeout = command_timeout
        self._ssh_hook: PolicySSHHook | None = None

    @property
    def ssh_hook(self) -> PolicySSHHook:
        """Built on first use (the policy reads the connection then, not at construction)."""
        if self._ssh_hook is None:
            self._ssh_hook = PolicySSHHook(self.ssh_conn_id)
        return self._ssh_hook

    @property
    def client(self) -> paramiko.SSHClient:
        return self.ssh_hook.get_conn()

    def close(self) -> None:
        if self._ssh_hook is not None and self._ssh_hook.client is not None:
            self._ssh_hook.client.close()
            self._ssh_hook.client = None

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


def _nodelay(transport) -> None:
    # Small files are round-trip bound: without TCP_NODELAY Nagle + delayed ACK cap
    # paramiko's SFTP near 160 files/s on loopback (measured, issue 5): set on every connection.
    sock = transport.sock
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@contextmanager
def sftp_session(conn_id: str):
    """One SFTP session (paramiko ``SFTPClient``) on one SSH connection, reused for every file of a
    task: the sftp provider's ``get_managed_conn`` on :class:`PolicySFTPHook`."""
    with PolicySFTPHook(conn_id).get_managed_conn() as sftp:
        yield sftp


def ssh_endpoint(conn_id: str):
    """Plain SSH parameters of an Airflow connection, for the asyncssh archive engine (kept for its
    speed: module doc).

    The same extras and the same host-key policy as every stage (:func:`ssh_target`): the
    trusted keys are handed over as ``host_key`` lines, so the engine never reads another file.
    """
    from hfc_tasks.archive import Endpoint

    target = ssh_target(conn_id)
    key_file, private_key = target.key_file, target.private_key
    if target.passphrase:  # the engine takes no passphrase: it gets the key decrypted, in memory only
        import asyncssh

        key = (asyncssh.import_private_key(private_key, target.passphrase) if private_key
               else asyncssh.read_private_key(key_file, target.passphrase))
        key_file, private_key = None, key.export_private_key().decode()
    return Endpoint(
        host=target.host,
        port=target.port,
        username=target.username,
        key_file=key_file,
        private_key=private_key,
        host_key="\n".join(target.host_keys),
        known_hosts=None,
        connect_timeout=target.connect_timeout,
        name=conn_id,
    )
