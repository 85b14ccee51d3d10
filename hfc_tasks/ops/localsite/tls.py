"""The site CA and a PostgreSQL server certificate signed by it (openssl), for both shapes of the
local site: the single-host site's catalogue on 127.0.0.1, the multihost site's on its own address.
Clients verify the server with ``sslmode=verify-full`` and the CA as ``sslrootcert``."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from ._util import ensure_dir, run


def ensure_server_cert(*, tls_dir: Path, ca_cert: Path, key: Path, crt: Path, ca_name: str, cn: str,
                       san: str) -> None:
    """The CA (``ca_cert``, its key beside it in ``tls_dir``, made once) and the server's ``key`` and
    ``crt`` for ``san`` (e.g. ``IP:127.0.0.1``), made again when the CA is newer; the server's files
    owned by postgres (PostgreSQL refuses a key others can read)."""
    ensure_dir(tls_dir, "root", 0o755)
    ca_key = tls_dir / "ca.key"
    if not ca_cert.exists():
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert), "-days", "3650",
             "-subj", f"/CN={ca_name}"], what="openssl: site CA")
    ensure_dir(crt.parent, "root", 0o755)
    if not crt.exists() or crt.stat().st_mtime < ca_cert.stat().st_mtime:
        csr = tls_dir / "server.csr"
        run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}"], what="openssl: server key")
        ext = tls_dir / "server.ext"
        ext.write_text(f"subjectAltName={san}\n")
        run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(crt), "-days", "3650", "-extfile", str(ext)],
            what="openssl: server certificate")
    uid, gid = pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid
    for f in (key, crt):
        os.chown(f, uid, gid)
    os.chmod(key, 0o600)
    os.chmod(ca_key, 0o600)
