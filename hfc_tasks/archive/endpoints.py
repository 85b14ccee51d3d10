"""SSH endpoints of the archive stage (asyncssh): plain connection parameters, connecting with
the host key always verified, and telling a lost connection (worth a reconnect) from an answer.

* :class:`Endpoint`: what the engine connects to (no Airflow; the hook builds it from a
  connection, :func:`hfc_tasks.provider.hooks.ssh_endpoint`);
* :func:`connect`: one connection, the host key checked against ``host_key`` or a
  ``known_hosts`` file, AES-GCM preferred, the packets of one event-loop turn sent in one write;
* :func:`transient` and :func:`first_error`: which failure ends an attempt to be retried
  after a reconnect, and which one of a task group's failures to raise;
* :func:`run_command`: a command's stdout, or None where the account may not run commands.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncssh

from hfc_tasks import sshpolicy
from hfc_tasks.archive.errors import HostKeyError, TransferError


@dataclass(frozen=True)
class Endpoint:
    """Plain parameters of one SSH endpoint: what the engine connects to (no Airflow)."""

    host: str
    port: int = 22
    username: str = ""
    key_file: str | None = None
    private_key: str | None = None  # key text, when there is no key file
    host_key: str | None = None  # "ssh-ed25519 AAAA...": the only key accepted
    known_hosts: str | None = None  # or an OpenSSH known_hosts file (when no host_key)
    connect_timeout: float = 30.0
    name: str = ""  # "cluster", "archive": for messages

    def describe(self) -> str:
        return f"{self.name + ' ' if self.name else ''}{self.username}@{self.host}:{self.port}"


async def connect(ep: Endpoint) -> asyncssh.SSHClientConnection:
    """Open one SSH connection, the host key always verified (there is no way to skip it)."""
    if ep.host_key:
        try:
            # one key per line (hfc_tasks.sshpolicy gives every key the policy trusts)
            known_hosts: object = sshpolicy.asyncssh_known_hosts(
                [k for k in ep.host_key.strip().splitlines() if k.strip()])
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise HostKeyError(f"{ep.describe()}: host_key {ep.host_key[:40]!r}... is not a public key: {exc}") from exc
    elif ep.known_hosts:
        known_hosts = ep.known_hosts
    else:
        raise HostKeyError(
            f"{ep.describe()}: no host_key and no known_hosts file given; the archive stage never "
            "connects to a host it cannot verify"
        )
    try:
        conn = await asyncssh.connect(
            ep.host, ep.port, username=ep.username or None,
            client_keys=_client_keys(ep),
            known_hosts=known_hosts, agent_path=None, config=None, preferred_auth="publickey",
            connect_timeout=ep.connect_timeout, login_timeout=ep.connect_timeout,
            keepalive_interval=30, keepalive_count_max=4,
            # AES-GCM first: asyncssh's chacha20-poly1305 builds two cipher contexts per packet in
            # Python (a third of the CPU on small files); AES-GCM is one OpenSSL call per packet.
            encryption_algs=_CIPHERS,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise HostKeyError(
            f"host key of {ep.describe()} is not the one configured ({exc.reason}): connection refused. "
            "If the host's key really changed, check its fingerprint out of band and update the "
            "connection's host_key extra."
        ) from exc
    except asyncssh.PermissionDenied as exc:
        raise TransferError(f"{ep.describe()}: login refused ({exc.reason}); check the key file") from exc
    except TimeoutError as exc:  # transient: the caller reconnects; say where and how long
        raise TimeoutError(f"{ep.describe()}: no SSH answer within {ep.connect_timeout:g} s "
                           "(network down or host unreachable)") from exc
    _coalesce_writes(conn)
    return conn


def _coalesce_writes(conn) -> None:
    """Send the SSH packets made in one event-loop turn with one write instead of one each.

    With many SFTP requests in flight asyncssh writes every packet to the socket at once: on
    small files a third of the CPU went to ~20 send() calls per file. Packets keep their order
    (everything goes through ``_send``); a buffer is flushed at the end of the loop turn. This
    uses asyncssh's private ``_send``/``_transport``: if they are missing, nothing is changed.
    """
    send, transport = getattr(conn, "_send", None), getattr(conn, "_transport", None)
    if send is None or transport is None or not hasattr(transport, "write"):
        return
    loop = asyncio.get_running_loop()
    buf: list[bytes] = []

    def flush() -> None:
        data = b"".join(buf)
        buf.clear()
        send(data)

    def batched(data: bytes) -> None:
        if not buf:
            loop.call_soon(flush)
        buf.append(data)

    conn._send = batched


_CIPHERS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
            "aes128-ctr", "aes256-ctr"]


def _client_keys(ep: Endpoint):
    if ep.private_key:
        return [asyncssh.import_private_key(ep.private_key)]
    return [ep.key_file] if ep.key_file else ()


def transient(exc: BaseException) -> bool:
    """A lost or refused connection (worth a reconnect), as opposed to an answer from the server."""
    if isinstance(exc, HostKeyError | TransferError | FileNotFoundError | PermissionError):
        return False
    if isinstance(exc, asyncssh.SFTPConnectionLost | asyncssh.SFTPNoConnection):
        return True
    if isinstance(exc, asyncssh.SFTPError):
        return False
    if isinstance(exc, asyncssh.HostKeyNotVerifiable | asyncssh.PermissionDenied):
        return False
    return isinstance(exc, asyncssh.DisconnectError | asyncssh.ChannelOpenError | ConnectionError
                      | TimeoutError | EOFError | OSError)


async def run_command(conn, command: str) -> str | None:
    """stdout of a command on the host, or None when it cannot run there (exit 126/127, no shell)."""
    result = await conn.run(command, check=False, input="")
    if result.exit_status is None and result.exit_signal is None:
        raise asyncssh.ConnectionLost(f"command cut before its answer: {command[:80]}")
    if result.exit_status in (126, 127) or result.exit_status is None:
        return None
    return str(result.stdout or "")


def first_error(group: BaseExceptionGroup) -> BaseException:
    """The exception that matters in a task group: a non-transient one first."""
    leaves: list[BaseException] = []

    def walk(g):
        for e in g.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)

    walk(group)
    for e in leaves:
        if not transient(e):
            return e
    return leaves[0]
