"""Versioned migrations of the catalogue schema ``hfc``.

Migrations are the files ``migrations/NNNN_<name>.sql`` shipped with the package, applied in
the order of their number and recorded in ``hfc.schema_migrations`` (version = file stem, with
the file's sha256 so an edited, already-applied migration is detected instead of silently
diverging between sites).

Migrations run at deploy only (``hfc db upgrade``, ``hfc airflow up``, the compose init service),
so the workers' and the api-server's database roles need no DDL rights. A load or a claim calls
``require_current(conn)``: a database whose schema is behind the code fails the task with
:class:`SchemaBehind` ("run `hfc db upgrade`") instead of being migrated by whichever task runs first.

``upgrade(conn)`` runs inside the caller's transaction when there is one, else in its own
transaction that it commits.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

SCHEMA = "hfc"
# Key of the transaction-scoped advisory lock that serialises migrations between loaders.
# Any fixed 64-bit number works; this one is "HFCMIGR" in ASCII so it is recognisable in pg_locks.
MIGRATION_LOCK_KEY = 0x4846434D49475200 >> 8
_NAME = re.compile(r"^(?P<number>\d{4})_[a-z0-9_]+\.sql$")


class MigrationError(RuntimeError):
    """The database's recorded migrations do not agree with the shipped files."""


class SchemaBehind(MigrationError):
    """The catalogue's schema lacks migrations this code ships: deploy them (``hfc db upgrade``).
    Retrying the task cannot help; the message says what is pending and what to run."""


@dataclass(frozen=True)
class Migration:
    number: int
    version: str  # file stem, e.g. "0001_core"
    sql: str
    sha256: str


def migrations() -> list[Migration]:
    """The shipped migrations, in order."""
    found = []
    folder = resources.files("hfc_tasks.catalogue") / "migrations"
    for entry in folder.iterdir():
        m = _NAME.match(entry.name)
        if not m:
            continue
        data = entry.read_bytes()
        found.append(
            Migration(
                number=int(m.group("number")),
                version=entry.name[: -len(".sql")],
                sql=data.decode("utf-8"),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    found.sort(key=lambda mig: mig.number)
    numbers = [mig.number for mig in found]
    if len(set(numbers)) != len(numbers):
        raise MigrationError(f"two migration files share a number: {[m.version for m in found]}")
    return found


def _applied(cur) -> dict[str, str] | None:
    """version -> sha256 of applied migrations, or None when the table does not exist yet."""
    cur.execute("select to_regclass('hfc.schema_migrations') is not null")
    if not cur.fetchone()[0]:
        return None
    cur.execute("select version, sha256 from hfc.schema_migrations")
    return dict(cur.fetchall())


def _check(applied: dict[str, str], shipped: list[Migration]) -> list[Migration]:
    """Return the pending migrations; refuse an edited or unknown applied one."""
    by_version = {m.version: m for m in shipped}
    for version, sha in applied.items():
        mig = by_version.get(version)
        if mig is None:
            raise MigrationError(
                f"the database has migration {version!r}, which this code does not ship "
                "(the database is newer than the code?)"
            )
        if mig.sha256 != sha:
            raise MigrationError(
                f"migration {version!r} was edited after it was applied "
                f"(database sha256 {sha}, file {mig.sha256}): add a new migration instead"
            )
    return [m for m in shipped if m.version not in applied]


def pending(conn) -> list[str]:
    """Versions not applied yet (read-only; takes no lock)."""
    with conn.cursor() as cur:
        applied = _applied(cur)
    shipped = migrations()
    if applied is None:
        return [m.version for m in shipped]
    return [m.version for m in _check(applied, shipped)]


def require_current(conn) -> str:
    """Raise :class:`SchemaBehind` when migrations are pending (read-only, no lock); else return
    the schema's version (the last migration). Inside the caller's transaction when there is one,
    else in its own (ended here, so a caller that must start outside a transaction still can)."""
    with conn.transaction():
        todo = pending(conn)
    if todo:
        where = f"database {conn.info.dbname!r} on {conn.info.host}:{conn.info.port}"
        raise SchemaBehind(f"catalogue schema is behind (pending: {', '.join(todo)}) in the {where}: "
                           "run `hfc db upgrade` (the deploy step that migrates; tasks never do)")
    return migrations()[-1].version


def upgrade(conn) -> list[str]:
    """Apply the pending migrations; return the versions applied now (empty if up to date).

    Fast path without a lock when nothing is pending: the advisory lock is transaction-scoped
    and the loader's transaction lasts the whole load, so taking it every time would serialise
    all loaders. When something is pending, the lock is taken and the state read again, so two
    loaders starting on an empty database migrate once (the second waits, then finds it done).
    """
    shipped = migrations()
    with conn.transaction(), conn.cursor() as cur:
        applied = _applied(cur)
        if applied is not None and not _check(applied, shipped):
            return []
        cur.execute("select pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        cur.execute(f"create schema if not exists {SCHEMA}")
        cur.execute(
            """
            create table if not exists hfc.schema_migrations (
                version    text primary key,
                applied_at timestamptz not null default clock_timestamp(),
                sha256     text not null
            )
            """
        )
        todo = _check(_applied(cur) or {}, shipped)
        done = []
        for mig in todo:
            # No parameters: psycopg sends the file as one simple query, several statements allowed.
            cur.execute(mig.sql)
            cur.execute(
                "insert into hfc.schema_migrations (version, sha256) values (%s, %s)",
                (mig.version, mig.sha256),
            )
            done.append(mig.version)
        return done
