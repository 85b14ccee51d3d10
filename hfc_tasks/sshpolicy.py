"""One host-key policy for every SSH connection of the pipeline (no Airflow import).

The one function that turns a connection into verified endpoint settings, for sync and async
use: ``submit`` and the status page (the ssh provider's ``SSHHook``), the catalogue's SFTP reads
(the sftp provider's ``SFTPHook``), ``archive`` (the asyncssh engine) and ``wait`` (the ssh
provider's ``SSHHookAsync``, in the triggerer) all turn their Airflow connection into a
:class:`SshTarget` with :func:`resolve` (:mod:`hfc_tasks.provider.hooks` hands it to the hooks),
which decides which host keys are trusted:

1. the connection's ``host_key`` extra: one or more lines, each ``<type> <base64> [comment]``
   (``ssh-ed25519 AAAA...``, as ``ssh-keyscan`` prints it without the host) or a known_hosts
   line ``<host-patterns> <type> <base64> [comment]`` (``[host]:port ssh-ed25519 AAAA...``),
   which must then name this host and port; else
2. a known_hosts file: the ``known_hosts`` extra (a path) or, without it, the process user's
   ``~/.ssh/known_hosts``; the lines naming this host and port (OpenSSH rules: ``host`` is for
   port 22, ``[host]:port`` for any other; patterns ``*``/``?``/``!``; hashed ``|1|`` names)
   give the keys.

Anything else is a :class:`SshConfigError` (a configuration error: retrying cannot help) whose
message names the connection and says how to fix it: ``no_host_key_check``/``allow_host_key_change``
set to true, a bare base64 key, a line that is not a public key, a line for another host, no
key at all, a missing key file, a client key that cannot be read (encrypted without its
``private_key_passphrase``, or with a wrong one). The server's key must then be one of the
trusted keys: a changed key is refused by every stage, nothing is sent.

The client's side comes from the extras the ssh provider documents: ``key_file`` or
``private_key`` (key text), ``private_key_passphrase`` (``passphrase`` is read too, as the
provider's async hook does), ``conn_timeout``, ``compress``, ``ciphers``, ``disabled_algorithms``.
:class:`SshTarget` carries them to the providers' hooks (:mod:`hfc_tasks.provider.hooks`,
sync and async) and to the archive engine, so no stage reads an extra by itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import struct
from dataclasses import dataclass, field

# Host key types both engines (paramiko, asyncssh) verify.
KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
_TRUE = ("true", "1", "yes", "on")
FIX_KEY = ("give the host's public key in the connection's host_key extra, e.g. \"host_key\": "
           "\"ssh-ed25519 AAAA...\" (ssh-keyscan -p {port} -t ed25519 {host}, compared with the "
           "fingerprint the host's admin gives you: ssh-keygen -lf), or add the line "
           "'{entry} ssh-ed25519 AAAA...' to {known_hosts}")


class SshConfigError(ValueError):
    """The connection is configured so that it can never work: fail at once, do not retry."""


@dataclass(frozen=True)
class SshTarget:
    """Plain SSH parameters of one Airflow connection, with the host keys it trusts."""

    conn_id: str
    host: str
    port: int
    username: str
    host_keys: tuple[str, ...]  # "ssh-ed25519 AAAA..." each
    host_key_source: str  # "the host_key extra" or "known_hosts file /path"
    key_file: str | None = None
    private_key: str | None = None
    password: str | None = field(default=None, repr=False)
    connect_timeout: float = 30.0
    passphrase: str | None = field(default=None, repr=False)  # of key_file or private_key
    compress: bool = False
    ciphers: tuple[str, ...] | None = None
    disabled_algorithms: dict | None = None

    @property
    def entry(self) -> str:
        return known_hosts_name(self.host, self.port)

    def describe(self) -> str:
        return f"connection {self.conn_id!r} ({self.username}@{self.host}:{self.port})"

    def host_key_changed(self, reason: str = "") -> SshConfigError:
        return SshConfigError(
            f"{self.describe()}: the host's key is not the one configured ({self.host_key_source}"
            f"{': ' + reason if reason else ''}): connection refused, nothing was sent. If the host's key "
            "really changed, check the new key's fingerprint out of band (ssh-keygen -lf) and update "
            f"{self.host_key_source}; otherwise something else answers at {self.host}:{self.port}."
        )

    def login_refused(self, reason: str = "") -> SshConfigError:
        key = (f"key file {self.key_file}" if self.key_file else "the private_key extra" if self.private_key
               else "the password" if self.password else "no client key (set the key_file extra)")
        return SshConfigError(
            f"{self.describe()}: the host refused the login{' (' + reason + ')' if reason else ''}: check the "
            f"login and {key} (its public key must be in ~{self.username}/.ssh/authorized_keys on the host)."
        )


def known_hosts_name(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host`` on port 22, ``[host]:port`` otherwise."""
    return host if int(port) == 22 else f"[{host}]:{int(port)}"


def _truthy(value) -> bool:
    return str(value).strip().lower() in _TRUE


def unknown_connection(conn_id: str) -> SshConfigError:
    return SshConfigError(
        f"connection {conn_id!r} is not defined (no AIRFLOW_CONN_{conn_id.upper()} variable, and neither the "
        "secrets backend nor the metadata database has it): define it, or fix the connection id in the "
        "registry's site (cluster_conn_id / archive_conn_id)"
    )


def blob_type(data: str) -> str | None:
    """The key type written inside a base64 public key blob (None if it is not one)."""
    try:
        raw = base64.b64decode(data, validate=True)
        (n,) = struct.unpack(">I", raw[:4])
        name = raw[4 : 4 + n].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError, ValueError):
        return None
    return name if 0 < n <= 64 and len(raw) > 4 + n else None


def parse_key(key_type: str, data: str, *, where: str) -> str:
    """``"<type> <base64>"`` checked (type known, blob of that type, a valid key), else SshConfigError."""
    if key_type not in KEY_TYPES:
        raise SshConfigError(f"{where}: key type {key_type!r} is not one of {', '.join(KEY_TYPES)}")
    inner = blob_type(data)
    if inner is None:
        raise SshConfigError(f"{where}: {data[:24]!r}... is not a base64 public key")
    if inner != key_type:
        raise SshConfigError(f"{where}: the key says {key_type!r} but its data is an {inner!r} key: "
                             f"write '{inner} {data[:12]}...'")
    import asyncssh  # key body check (asyncssh is no Airflow import)

    try:
        asyncssh.import_public_key(f"{key_type} {data}")
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise SshConfigError(f"{where}: {key_type} {data[:24]}... is not a valid public key ({exc})") from None
    return f"{key_type} {data}"


def key_parts(line: str) -> tuple[str, bytes]:
    """The type and raw blob of one trusted key of :attr:`SshTarget.host_keys`: what paramiko
    loads (``PKey.from_type_string``). The line is ``"<type> <base64>"``, as :func:`parse_key`
    wrote it: :func:`resolve` has checked it, and refused a bare base64 key with the fix."""
    key_type, data = line.split()
    return key_type, base64.b64decode(data)


def asyncssh_known_hosts(host_keys: tuple[str, ...] | list[str]) -> tuple[list, list, list]:
    """asyncssh's ``known_hosts`` argument (trusted keys, CA keys, revoked keys) that accepts only
    ``host_keys`` (lines of :attr:`SshTarget.host_keys`), whatever the host name and port."""
    import asyncssh

    return [asyncssh.import_public_key(line) for line in host_keys], [], []


def _glob(pattern: str) -> re.Pattern:
    """An OpenSSH host pattern: only ``*`` and ``?`` are special (``[host]:port`` is literal)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern.lower()))


def _host_matches(patterns: str, names: tuple[str, ...]) -> bool:
    """OpenSSH host matching of one known_hosts line's first field (patterns, negation, hashes)."""
    if patterns.startswith("|1|"):
        try:
            _, _, salt, digest = patterns.split("|")
            salt_raw, digest_raw = base64.b64decode(salt), base64.b64decode(digest)
        except (ValueError, binascii.Error):
            return False
        return any(hmac.compare_digest(hmac.new(salt_raw, n.encode(), hashlib.sha1).digest(), digest_raw)
                   for n in names)
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        pattern = pattern[1:] if negated else pattern
        if any(_glob(pattern).fullmatch(n.lower()) for n in names):
            if negated:
                return False
            matched = True
    return matched


def keys_for_host(lines: list[str], host: str, port: int, *, where: str,
                  bare_ok: bool = False) -> list[str]:
    """Trusted keys for (host, port) among known_hosts-style lines.

    A line naming this host whose key is not valid is an error (never skipped silently); lines
    for other hosts are not checked. ``bare_ok``: lines without a host field (``<type> <base64>``,
    the host_key extra's form) apply to this host. ``@revoked`` keys are removed;
    ``@cert-authority`` lines are refused (host certificates are not supported).
    """
    names = (known_hosts_name(host, port),)
    keys: list[str] = []
    revoked: set[str] = set()
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        at = f"{where}, line {number}" if len(lines) > 1 else where
        fields = text.split()
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if bare_ok and fields[0] in KEY_TYPES:
            patterns = None
        elif len(fields) == 1 and bare_ok:
            inner = blob_type(fields[0])
            raise SshConfigError(
                f"{at}: {fields[0][:16]!r}... is a bare base64 key: write it with its type, as ssh-keyscan "
                f"prints it: '{inner or 'ssh-ed25519'} {fields[0][:16]}...'"
                + (f" (this key is an {inner} key)" if inner else " (this is not a key of any known type)")
            )
        elif len(fields) >= 3:
            patterns = fields.pop(0)
        else:
            if bare_ok:
                raise SshConfigError(f"{at}: {text[:40]!r} is not a public key: write 'ssh-ed25519 AAAA...' "
                                     "or a known_hosts line '[host]:port ssh-ed25519 AAAA...'")
            continue  # a malformed line of a shared file that names no host: not ours
        if patterns is not None and not _host_matches(patterns, names):
            if bare_ok:
                raise SshConfigError(f"{at}: the line is for {patterns!r}, not for {names[0]} (the "
                                     "connection's host and port): give this host's key")
            continue
        if len(fields) < 2:
            raise SshConfigError(f"{at}: {text[:60]!r} has no key after the host name")
        if marker == "@cert-authority":
            raise SshConfigError(f"{at}: @cert-authority lines are not supported: give the host's own key")
        if marker not in (None, "@revoked"):
            raise SshConfigError(f"{at}: unknown marker {marker!r}")
        key = parse_key(fields[0], fields[1], where=at)
        (revoked.add if marker == "@revoked" else keys.append)(key)
    return [k for k in dict.fromkeys(keys) if k not in revoked]


def resolve(conn_id: str, *, host: str | None, port: int | None, login: str | None, extra: dict | None,
            password: str | None = None, home: str | None = None) -> SshTarget:
    """The connection's SSH parameters and trusted host keys, by the one policy (module doc)."""
    extra = extra or {}
    port = int(port or 22)
    who = f"connection {conn_id!r} ({login or ''}@{host}:{port})"
    if not host:
        raise SshConfigError(f"connection {conn_id!r} has no host")
    for flag in ("no_host_key_check", "allow_host_key_change"):
        if _truthy(extra.get(flag, "false")):
            raise SshConfigError(
                f"{who} sets {flag}: true; every stage verifies host keys, so it is refused. Remove {flag} "
                "and " + FIX_KEY.format(host=host, port=port, entry=known_hosts_name(host, port),
                                        known_hosts="the known_hosts file")
            )
    key_file = extra.get("key_file") or None
    if key_file and not os.access(key_file, os.R_OK):
        raise SshConfigError(f"{who}: key_file {key_file} does not exist or cannot be read by this process "
                             f"(uid {os.getuid()}): mount it or fix the key_file extra")
    private_key = extra.get("private_key") or None
    if key_file and private_key:
        raise SshConfigError(f"{who} sets both key_file and private_key: keep one of them")
    passphrase = extra.get("private_key_passphrase") or extra.get("passphrase") or None
    check_client_key(who, key_file=key_file, private_key=private_key, passphrase=passphrase)
    ciphers = extra.get("ciphers") or None
    if isinstance(ciphers, str):
        ciphers = [c.strip() for c in ciphers.split(",") if c.strip()]
    if extra.get("host_key"):
        raw = extra["host_key"]
        if not isinstance(raw, str):
            raise SshConfigError(f"{who}: the host_key extra must be a string such as 'ssh-ed25519 AAAA...'")
        keys = keys_for_host(raw.strip().splitlines(), host, port, where=f"{who}: host_key extra", bare_ok=True)
        source = f"the host_key extra of connection {conn_id!r}"
    else:
        path = extra.get("known_hosts") or os.path.join(home or os.path.expanduser("~"), ".ssh", "known_hosts")
        fix = FIX_KEY.format(host=host, port=port, entry=known_hosts_name(host, port), known_hosts=path)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            raise SshConfigError(f"{who} has no host_key extra and its known_hosts file cannot be read "
                                 f"({exc.strerror}: {path}): {fix}") from None
        keys = keys_for_host(lines, host, port, where=f"{who}: known_hosts file {path}")
        if not keys:
            raise SshConfigError(f"{who} has no host_key extra and known_hosts file {path} has no key for "
                                 f"{known_hosts_name(host, port)}: the host cannot be verified, so it is not "
                                 f"contacted. Fix: {fix}")
        source = f"known_hosts file {path}"
    if not keys:
        raise SshConfigError(f"{who}: the host_key extra holds no key (all revoked?)")
    return SshTarget(
        conn_id=conn_id, host=host, port=port, username=login or "", host_keys=tuple(keys),
        host_key_source=source, key_file=key_file, private_key=private_key,
        password=password or None, connect_timeout=float(extra.get("conn_timeout") or 30),
        passphrase=passphrase, compress=_truthy(extra.get("compress", "false")),
        ciphers=tuple(ciphers) if ciphers else None, disabled_algorithms=extra.get("disabled_algorithms") or None,
    )


def check_client_key(who: str, *, key_file: str | None, private_key: str | None, passphrase: str | None) -> None:
    """The client key can be read (and decrypted, with the passphrase given), else SshConfigError:
    found here, before any host is contacted, and the same for paramiko and asyncssh."""
    if not (key_file or private_key):
        return
    import asyncssh

    what = f"key file {key_file}" if key_file else "the private_key extra"
    try:
        if private_key:
            asyncssh.import_private_key(private_key, passphrase)
        else:
            asyncssh.read_private_key(key_file, passphrase)
    except (asyncssh.KeyImportError, ValueError) as exc:
        hint = ("it is encrypted: give its passphrase in the private_key_passphrase extra"
                if "assphrase must be specified" in str(exc) else
                "check the private_key_passphrase extra (wrong passphrase?) and the key's format "
                "(OpenSSH or PEM, ed25519/ecdsa/rsa)")
        raise SshConfigError(f"{who}: {what} cannot be read ({exc}): {hint}") from None
    except OSError as exc:
        raise SshConfigError(f"{who}: {what} cannot be read ({exc.strerror})") from None
