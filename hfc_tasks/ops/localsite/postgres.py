"""PostgreSQL 15 for the catalogue, private to the state folder, on 127.0.0.1 only; with TLS (a
certificate for 127.0.0.1 signed by the site CA, :func:`site_ca`), so the catalogue connection
verifies the server (``sslmode=verify-full``) as a production one does."""

from __future__ import annotations

import secrets
from pathlib import Path

from ._util import (
    SiteError,
    clear_stale_pid,
    ensure_dir,
    pidfile_alive,
    run,
    wait_for,
    write_file,
    write_secret,
)
from .layout import PG_BIN, Layout
from .system import ensure_system_user
from .tls import ensure_server_cert

ROLE = "hfc"
DATABASE = "hfc"
HQI_ROLE = "hfc_hqi"  # the HQI query service's read-only role (readers_role.LOGIN)


def _as_postgres(args: list[str], **kw):
    # PostgreSQL refuses to run as root; runuser needs no PAM session or password.
    return run(["runuser", "-u", "postgres", "--", *args], **kw)


def _secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SiteError(f"postgres: no password file {path}: run `up` first") from exc


def password(lay: Layout) -> str:
    return _secret(lay.pg_password_file)


def dsn(lay: Layout, database: str = DATABASE) -> str:
    return f"postgresql://{ROLE}:{password(lay)}@127.0.0.1:{lay.pg_port}/{database}"


def hqi_password(lay: Layout) -> str:
    return _secret(lay.hqi_password_file)


def hqi_dsn(lay: Layout, database: str = DATABASE) -> str:
    """The HQI service's connection: the read-only role hfc_hqi (hfc_tasks/catalogue/readers_role.py)."""
    return f"postgresql://{HQI_ROLE}:{hqi_password(lay)}@127.0.0.1:{lay.pg_port}/{database}"


def site_ca(lay: Layout) -> Path:
    """The CA that signs the single-host site's PostgreSQL certificate: the catalogue connection's
    ``sslrootcert``."""
    return lay.pg_dir / "tls" / "ca.crt"


def _server_cert(lay: Layout) -> tuple[Path, Path]:
    return lay.pg_dir / "tls" / "server.key", lay.pg_dir / "tls" / "server.crt"


def _ensure_tls(lay: Layout) -> str:
    """The site CA and the server certificate for 127.0.0.1; the settings that serve it."""
    key, crt = _server_cert(lay)
    ensure_server_cert(tls_dir=site_ca(lay).parent, ca_cert=site_ca(lay), key=key, crt=crt,
                       ca_name="HFC local site CA", cn="127.0.0.1", san=f"IP:{lay.pg_listen_addresses}")
    return ("ssl = on\n"
            f"ssl_cert_file = '{crt}'\n"
            f"ssl_key_file = '{key}'\n"
            "ssl_min_protocol_version = 'TLSv1.2'\n")


def running(lay: Layout) -> bool:
    return pidfile_alive(lay.pg_data / "postmaster.pid", "postgres")


def _settings(lay: Layout, tls: str = "") -> str:
    return (
        "# Written by hfc_tasks.ops.localsite on every `up`; included from postgresql.conf.\n"
        f"listen_addresses = '{lay.pg_listen_addresses}'\n"
        f"port = {lay.pg_port}\n"
        f"unix_socket_directories = '{lay.pg_run}'\n"
        "password_encryption = 'scram-sha-256'\n"
        # A throw-away local site: durability is not worth the time in tests.
        "fsync = off\n"
        "synchronous_commit = off\n"
        "full_page_writes = off\n"
        "max_connections = 100\n"
        "shared_buffers = 64MB\n"
        "log_min_messages = warning\n"
        + tls
        + lay.pg_extra_settings
    )


def _psql(lay: Layout, sql: str, database: str = "postgres", secrets: tuple[str, ...] = ()) -> str:
    # The SQL goes through stdin, never argv: a password in it would be readable by every user
    # of the machine in /proc/<pid>/cmdline while psql runs.
    proc = _as_postgres(
        [str(PG_BIN / "psql"), "-h", str(lay.pg_run), "-p", str(lay.pg_port), "-d", database,
         "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f", "-"],
        input=sql, what="postgres: psql", log=lay.pg_log, secrets=secrets,
    )
    return proc.stdout.strip()


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def ensure_password(lay: Layout) -> None:
    """The role's password file, generated once, created 0600 (root only).

    The role's password is reset to it on every start so that they cannot drift.
    """
    _ensure_secret(lay.pg_password_file)


def ensure_hqi_password(lay: Layout) -> None:
    """The HQI role's password file, generated once, created 0600 (root only)."""
    _ensure_secret(lay.hqi_password_file)


def _ensure_secret(path) -> None:
    if not path.exists():
        write_secret(path, secrets.token_urlsafe(24) + "\n", "root")
    else:
        write_file(path, path.read_text(), "root", 0o600)


def up(lay: Layout, log=print, *, tls: bool = False) -> None:
    """Initialise, configure and start the server (idempotent: a restart only when its settings
    changed, e.g. once when TLS is turned on). ``tls``: serve the site CA's certificate (the
    single-host site; the multihost shape brings its own in ``lay.pg_extra_settings``)."""
    ensure_system_user("postgres", "/var/lib/postgresql")
    ensure_dir(lay.pg_dir, "root", 0o755)
    ensure_dir(lay.pg_run, "postgres", 0o700)
    ensure_password(lay)

    if not (lay.pg_data / "PG_VERSION").exists():
        log("postgres: initdb")
        ensure_dir(lay.pg_data, "postgres", 0o700)
        _as_postgres(
            [str(PG_BIN / "initdb"), "-D", str(lay.pg_data), "-U", "postgres", "-E", "UTF8",
             "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256", "--no-sync"],
            what="postgres: initdb",
        )
        conf = lay.pg_data / "postgresql.conf"
        conf.write_text(conf.read_text() + "\ninclude = 'hfc_site.conf'\n")
        write_file(lay.pg_data / "pg_hba.conf", lay.pg_hba, "postgres", 0o600)
    changed = write_file(lay.pg_data / "hfc_site.conf", _settings(lay, _ensure_tls(lay) if tls else ""),
                         "postgres", 0o600)

    if running(lay) and changed:
        log("postgres: settings changed, restarting")
        stop(lay)
    if not running(lay):
        log("postgres: starting")
        clear_stale_pid(lay.pg_data / "postmaster.pid", "postgres")
        # The socket's lock file names the postmaster too and trips on a zombie the same way.
        sock = lay.pg_run / f".s.PGSQL.{lay.pg_port}"
        clear_stale_pid(sock.with_name(sock.name + ".lock"), "postgres")
        if not sock.with_name(sock.name + ".lock").exists():
            sock.unlink(missing_ok=True)
        _as_postgres(
            [str(PG_BIN / "pg_ctl"), "-D", str(lay.pg_data), "-l", str(lay.pg_log), "-w",
             "-t", "60", "start"],
            what="postgres: pg_ctl start", log=lay.pg_log, timeout=90,
        )
        _ensure_role(lay)
    elif not wait_for(lambda: (lay.pg_run / f".s.PGSQL.{lay.pg_port}").exists(), 5):
        raise SiteError(f"postgres: running but no socket in {lay.pg_run}; read the log: {lay.pg_log}")


def _ensure_role(lay: Layout) -> None:
    _psql(
        lay,
        "DO $$BEGIN "
        f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
        f"CREATE ROLE {ROLE} LOGIN CREATEDB; END IF; END$$;",
    )
    set_role_password(lay, ROLE, password(lay))
    if _psql(lay, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
        _psql(lay, f"CREATE DATABASE {DATABASE} OWNER {ROLE}")


def set_role_password(lay: Layout, role: str, pw: str, _suffix: str = "") -> None:
    """ALTER ROLE ... PASSWORD through psql's stdin; an error message shows *** for the password.

    ``_suffix`` only lets a test make the statement fail the way a bad one would.
    """
    # log_min_error_statement: a failing statement would otherwise be copied, password and all,
    # into the server's log.
    _psql(lay, "SET log_min_error_statement = panic;\n"
          f'ALTER ROLE "{role}" LOGIN CREATEDB PASSWORD {_quote_literal(pw)}{_suffix};',
          secrets=(pw, _quote_literal(pw)))


def ensure_schema(lay: Layout, log=print) -> None:
    """The site's catalogue database migrated: ``hfc site up`` is this site's deploy step (as
    ``hfc db upgrade`` is a production one's); loads only check the schema."""
    import psycopg

    from hfc_tasks.catalogue import schema

    with psycopg.connect(dsn(lay), connect_timeout=10) as conn:
        done = schema.upgrade(conn)
    if done:
        log(f"postgres: catalogue schema migrated ({', '.join(done)})")


def ensure_hqi_role(lay: Layout) -> bool:
    """The HQI service's roles on the site's server (hfc_hqi_reader, and hfc_hqi with the site's
    password), and their grants in the catalogue database: readers_role's SQL, run by the
    server's superuser (the pipeline's role hfc may not create roles). The password is set only
    when it does not log in already, as a SCRAM verifier computed here (never the password).
    Returns True when the password was (re)set."""
    import psycopg

    from hfc_tasks.catalogue import readers_role

    ensure_hqi_password(lay)
    pw = hqi_password(lay)
    verifier = None
    try:
        with psycopg.connect(hqi_dsn(lay), connect_timeout=10):
            pass
    except psycopg.OperationalError:  # no such role yet, or another password: set it
        with psycopg.connect(dsn(lay), connect_timeout=10) as conn:
            verifier = readers_role.verifier_of(conn, HQI_ROLE, pw)
    # log_min_error_statement: a failing statement is not copied, verifier and all, into the server's log.
    _psql(lay, "SET log_min_error_statement = panic;\n" + readers_role.ensure_sql(HQI_ROLE, verifier),
          database=DATABASE, secrets=tuple(v for v in (verifier,) if v))
    return verifier is not None


def stop(lay: Layout) -> bool:
    if not running(lay):
        return False
    _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(lay.pg_data), "-m", "fast", "-w", "stop"],
                 what="postgres: pg_ctl stop", log=lay.pg_log, timeout=60)
    return True
