"""The HQI service's database roles on the site's real PostgreSQL (hfc_tasks/catalogue/readers_role.py,
migration 0006_hqi_reader): connected as hfc_hqi, the served relations (FRC_INFO, every
VIEW_*_HQI/_GUI) read, and nothing else: no write, no DDL, no other table of hfc, nothing of
schema public; turning the read-only default off changes nothing but the error. `hfc db upgrade`
is idempotent, keeps the grants exact (a served view added later is granted, a stray grant
revoked), works on a second catalogue database of the same server (the roles exist already), and
makes the roles with their password when run by a role that may create roles."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from helpers import TEST_CATALOGUE_CONN_ID, catalogue_conn_env
from psycopg import errors

from hfc_tasks.catalogue import readers_role, schema
from hfc_tasks.hqi.tables import SERVED
from hfc_tasks.ops.localsite import postgres
from hfc_tasks.ops.localsite.layout import Layout

pytestmark = pytest.mark.site

HFC = str(Path(sys.executable).with_name("hfc"))


def with_db(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


def with_login(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def db_upgrade(dsn: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != readers_role.PASSWORD_ENV}
    # `hfc db upgrade` reads no DSN: the Airflow connection of that database, by its id.
    return subprocess.run([HFC, "db", "upgrade", "--conn-id", TEST_CATALOGUE_CONN_ID, *extra], capture_output=True,
                          text=True, env={**base, **catalogue_conn_env(dsn), **(env or {})}, timeout=120)


def upgraded(fresh_db: str) -> str:
    proc = db_upgrade(fresh_db)
    assert proc.returncode == 0, proc.stderr
    assert "applied: " + ", ".join(m.version for m in schema.migrations()) in proc.stdout
    return fresh_db


@pytest.fixture
def catalogue(empty_db) -> str:
    """A catalogue database of its own, migrated by `hfc db upgrade` (for the tests that change it)."""
    return upgraded(empty_db)


@pytest.fixture(scope="module")
def shared_catalogue(site) -> Iterator[str]:
    """One catalogue database for the tests that only read, with a table in schema public beside it."""
    admin = site["HFC_CATALOGUE_DSN"]
    name = f"hfc_test_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        dsn = upgraded(with_db(admin, name))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("create table public.elsewhere (x int)")
            conn.execute("insert into public.elsewhere values (1)")
        yield dsn
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


@pytest.fixture
def reader(shared_catalogue, site):
    """A new connection as hfc_hqi (the site's password) to that database."""
    dsn = with_db(site["HFC_HQI_DSN"], urlsplit(shared_catalogue).path.lstrip("/"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def refused(conn, sql: str, error: type[Exception]) -> str:
    with pytest.raises(error) as caught:
        conn.execute(sql)
    return caught.value.diag.message_primary


def relations(conn) -> dict[str, str]:
    return dict(conn.execute(
        "select c.relname, c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'hfc' and c.relkind in ('r', 'v', 'm', 'p', 'f', 'S')").fetchall())


def test_the_login_role_is_read_only_by_default_and_has_no_power(reader):
    assert reader.execute("select current_user").fetchone()[0] == "hfc_hqi"
    settings = reader.execute(
        "select current_setting('default_transaction_read_only'), current_setting('statement_timeout'), "
        "current_setting('search_path'), current_setting('idle_in_transaction_session_timeout')").fetchone()
    assert settings == ("on", "30s", "hfc", "1min")
    role = reader.execute(
        "select rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin "
        "from pg_roles where rolname = 'hfc_hqi'").fetchone()
    assert role == (False, False, False, False, False, True)
    assert reader.execute("select rolcanlogin from pg_roles where rolname = 'hfc_hqi_reader'").fetchone() == (False,)
    groups = [r[0] for r in reader.execute(
        "select g.rolname from pg_auth_members m join pg_roles g on g.oid = m.roleid "
        "join pg_roles u on u.oid = m.member where u.rolname = 'hfc_hqi'")]
    assert groups == ["hfc_hqi_reader"]


def test_it_reads_exactly_the_served_relations(reader):
    rels = relations(reader)
    served = sorted(r for r, kind in rels.items() if SERVED.match(r) and kind != "S")
    assert "frc_info" in served and "view_sp_hqi" in served and "view_t3_gui" in served and len(served) == 19
    for name in served:  # every served relation answers (empty catalogue: 0 rows)
        assert reader.execute(f"select count(*) from hfc.{name}").fetchone() == (0,), name
    readable = sorted(r for r in rels if reader.execute(
        "select has_table_privilege('hfc.' || quote_ident(%s), 'SELECT')", (r,)).fetchone()[0])
    assert readable == served
    writable = [r for r in rels for p in ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
                if reader.execute("select has_table_privilege('hfc.' || quote_ident(%s), %s)", (r, p)).fetchone()[0]]
    assert writable == []
    # what the service lists is what it may read (information_schema shows a role its own tables)
    listed = {r[0] for r in reader.execute(
        "select distinct table_name from information_schema.columns where table_schema = 'hfc'")}
    assert listed == set(served)


@pytest.mark.parametrize("table", ["night_claim", "batch", "schema_migrations", "sunspots", "observations",
                                   "batch_file"])
def test_the_pipeline_and_base_tables_are_refused(reader, table):
    message = refused(reader, f"select * from hfc.{table}", errors.InsufficientPrivilege)
    assert message == f"permission denied for table {table}"


def test_schema_public_is_refused(reader):
    assert refused(reader, "select * from public.elsewhere", errors.InsufficientPrivilege) == \
        "permission denied for table elsewhere"
    reader.execute("set default_transaction_read_only = off")
    assert refused(reader, "create table public.mine (x int)", errors.InsufficientPrivilege) == \
        "permission denied for schema public"


WRITES = {
    "insert": "insert into hfc.frc_info (institut, code, version, feature_name, contact) values ('a','b','c','d','e')",
    "update": "update hfc.frc_info set code = 'x'",
    "delete": "delete from hfc.frc_info",
    "lock rows": "select * from hfc.frc_info for update",
    "insert a claim": "insert into hfc.night_claim (frc, night, dag_id, run_id) values ('x', '2024-01-01', 'd', 'r')",
    "create table": "create table hfc.mine (x int)",
    "drop a view": "drop view hfc.view_sp_hqi",
    "truncate": "truncate hfc.frc_info",
}


@pytest.mark.parametrize("what", sorted(WRITES))
def test_no_write_read_only_nor_after_turning_that_off(reader, what):
    # By default every transaction is read-only: PostgreSQL refuses before it looks at privileges.
    message = refused(reader, WRITES[what], errors.ReadOnlySqlTransaction)
    assert message.startswith("cannot execute ") and message.endswith(" in a read-only transaction")
    # A fragment that turns the default off for its session gains nothing: no privilege to write.
    assert reader.execute("select set_config('default_transaction_read_only', 'off', false)").fetchone() == ("off",)
    assert reader.execute("show transaction_read_only").fetchone() == ("off",)
    message = refused(reader, WRITES[what], errors.InsufficientPrivilege)
    assert message.startswith(("permission denied for", "must be owner of")), message
    assert reader.execute("select count(*) from hfc.frc_info").fetchone() == (0,)


def test_temporary_tables(reader):
    """What really happens with TEMP (PUBLIC's default privilege on a database, not revoked here):
    refused while read-only (the role's default, and the service's own transactions, which are
    READ ONLY), allowed once a session turns that off, and then private to the session."""
    assert refused(reader, "create temp table t (x int)", errors.ReadOnlySqlTransaction) == \
        "cannot execute CREATE TABLE in a read-only transaction"
    # The service's way: each request in a READ ONLY transaction, rolled back. Turning the default
    # off inside it neither makes that transaction writable nor outlives the rollback.
    with reader.transaction(force_rollback=True):
        reader.execute("set transaction read only")
        reader.execute("select set_config('default_transaction_read_only', 'off', false)")
        assert refused(reader, "create temp table t (x int)", errors.ReadOnlySqlTransaction) == \
            "cannot execute CREATE TABLE in a read-only transaction"
    assert reader.execute("show default_transaction_read_only").fetchone() == ("on",)
    # A session of its own that turns it off may make a temporary table, in its own pg_temp schema.
    reader.execute("select set_config('default_transaction_read_only', 'off', false)")
    reader.execute("create temp table t (x int)")
    assert reader.execute("select count(*) from t").fetchone() == (0,)
    assert reader.execute("select n.nspname like 'pg_temp_%%' from pg_class c join pg_namespace n "
                          "on n.oid = c.relnamespace where c.relname = 't'").fetchone() == (True,)


def test_upgrade_twice_is_idempotent_and_keeps_the_grants_exact(catalogue):
    def acl() -> list:
        with psycopg.connect(catalogue) as conn:
            return conn.execute(
                "select c.relname, c.relacl::text from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where n.nspname = 'hfc' order by 1").fetchall() + conn.execute(
                "select nspname, nspacl::text from pg_namespace where nspname = 'hfc'").fetchall()

    before = acl()
    proc = db_upgrade(catalogue)
    assert proc.returncode == 0, proc.stderr
    assert "schema hfc is up to date" in proc.stdout
    assert "HQI roles: hfc_hqi_reader and hfc_hqi are up to date" in proc.stdout
    assert "password unchanged (none given)" in proc.stdout
    assert acl() == before


def test_a_stray_grant_is_revoked_and_a_view_added_later_is_granted(catalogue, site):
    with psycopg.connect(catalogue, autocommit=True) as conn:
        conn.execute("grant select, insert on hfc.batch to hfc_hqi_reader")
        conn.execute("grant insert on hfc.frc_info to hfc_hqi_reader")
        conn.execute("create view hfc.view_zz_hqi as select 42 as answer")
        conn.execute("create view hfc.view_zz_other as select 43 as answer")
    proc = db_upgrade(catalogue)
    assert proc.returncode == 0, proc.stderr
    for change in ("revoked all on hfc.batch from hfc_hqi_reader", "revoked all on hfc.frc_info from hfc_hqi_reader",
                   "granted select on hfc.frc_info to hfc_hqi_reader",
                   "granted select on hfc.view_zz_hqi to hfc_hqi_reader"):
        assert change in proc.stdout
    assert "view_zz_other" not in proc.stdout
    dsn = with_db(site["HFC_HQI_DSN"], urlsplit(catalogue).path.lstrip("/"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("select answer from hfc.view_zz_hqi").fetchone() == (42,)
        refused(conn, "select * from hfc.view_zz_other", errors.InsufficientPrivilege)
        refused(conn, "select * from hfc.batch", errors.InsufficientPrivilege)
        conn.execute("set default_transaction_read_only = off")
        refused(conn, WRITES["insert"], errors.InsufficientPrivilege)
        assert conn.execute("select count(*) from hfc.frc_info").fetchone() == (0,)  # still readable


def test_a_second_catalogue_database_on_the_same_server(catalogue, site):
    """The roles are the server's: a second database upgrades (the roles exist), and hfc_hqi
    reads both, each by its own grants."""
    second = f"hfc_test_{secrets.token_hex(6)}"
    admin = site["HFC_CATALOGUE_DSN"]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'create database "{second}"')
    try:
        proc = db_upgrade(with_db(admin, second))
        assert proc.returncode == 0, proc.stderr
        assert "applied: 0001_core" in proc.stdout
        assert "HQI roles: hfc_hqi_reader and hfc_hqi are up to date" in proc.stdout
        for db in (second, urlsplit(catalogue).path.lstrip("/")):
            with psycopg.connect(with_db(site["HFC_HQI_DSN"], db)) as conn:
                assert conn.execute("select count(*) from hfc.view_sp_hqi").fetchone() == (0,)
                refused(conn, "select * from hfc.night_claim", errors.InsufficientPrivilege)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{second}" with (force)')


def test_the_pipeline_role_cannot_make_a_new_role_and_says_so(catalogue):
    name = f"hfc_hqi_t{secrets.token_hex(4)}"
    proc = db_upgrade(catalogue, "--hqi-role", name)
    assert proc.returncode == 1
    assert "permission denied to create role" in proc.stderr and "CREATEROLE" in proc.stderr
    assert "schema hfc is up to date" in proc.stdout  # the migrations are applied all the same
    proc = db_upgrade(catalogue, "--hqi-role", "hfc")
    assert proc.returncode == 1 and "cannot be the role running the upgrade" in proc.stderr


@pytest.fixture
def admin_db(site):
    """A catalogue database owned by an administrator who may create roles (CREATEROLE, not a
    superuser), as production's DBA would run `hfc db upgrade`; its DSN and a login role name."""
    lay = Layout.current()
    admin, password = f"hfc_admin_t{secrets.token_hex(4)}", secrets.token_urlsafe(18)
    login = f"hfc_hqi_t{secrets.token_hex(4)}"
    postgres._psql(lay, f"create role {admin} login createrole password '{password}'", secrets=(password,))
    db = f"hfc_test_{secrets.token_hex(6)}"
    postgres._psql(lay, f'create database "{db}" owner {admin}')
    try:
        yield with_login(with_db(site["HFC_CATALOGUE_DSN"], db), admin, password), login
    finally:
        postgres._psql(lay, f'drop database if exists "{db}" with (force)')
        postgres._psql(lay, f"drop role if exists {login}; drop role if exists {admin}")


def test_an_administrator_makes_the_login_role_with_its_password(admin_db, tmp_path):
    dsn, login = admin_db
    password = secrets.token_urlsafe(18)
    pw_file = tmp_path / "pw"
    pw_file.write_text(password + "\n")
    proc = db_upgrade(dsn, "--hqi-role", login, "--hqi-password-file", str(pw_file))
    assert proc.returncode == 0, proc.stderr
    assert password not in proc.stdout + proc.stderr
    assert f"created role {login}" in proc.stdout and f"{login} made a member of hfc_hqi_reader" in proc.stdout
    assert f"HQI role {login}: password set" in proc.stdout
    with psycopg.connect(with_login(dsn, login, password)) as conn:
        assert conn.execute("select current_user, current_setting('statement_timeout')").fetchone() == (login, "30s")
        assert conn.execute("select count(*) from hfc.frc_info").fetchone() == (0,)
        refused(conn, "select * from hfc.batch", errors.InsufficientPrivilege)
    # Again, without a password: nothing to change, the password stays.
    proc = db_upgrade(dsn, "--hqi-role", login)
    assert proc.returncode == 0, proc.stderr
    assert f"{login} are up to date" in proc.stdout and "password unchanged" in proc.stdout
    # A new password through the environment replaces the old one.
    new = secrets.token_urlsafe(18)
    proc = db_upgrade(dsn, "--hqi-role", login, env={readers_role.PASSWORD_ENV: new})
    assert proc.returncode == 0 and "password set" in proc.stdout and new not in proc.stdout + proc.stderr
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(with_login(dsn, login, password)).close()
    psycopg.connect(with_login(dsn, login, new)).close()


def test_a_new_role_without_a_password_is_said(admin_db):
    dsn, login = admin_db
    proc = db_upgrade(dsn, "--hqi-role", login)
    assert proc.returncode == 0, proc.stderr
    assert f"HQI role {login} was created WITHOUT a password" in proc.stdout
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(with_login(dsn, login, "anything")).close()


_argv: list[list[str]] = []
_recording = [False]


def _audit(event: str, args: tuple) -> None:
    if _recording[0] and event == "subprocess.Popen":
        _argv.append([str(a) for a in (args[1] or [])])


sys.addaudithook(_audit)


def test_the_site_sets_the_password_again_when_it_drifted(site):
    """`hfc site up` (postgres.ensure_hqi_role): the role's password follows the site's secret
    file, sent as a SCRAM verifier: neither the password nor the verifier reaches an argv."""
    lay = Layout.current()
    other = secrets.token_urlsafe(18)
    postgres._psql(lay, f"alter role hfc_hqi password '{other}'", secrets=(other,))
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(site["HFC_HQI_DSN"]).close()
    _argv.clear()
    _recording[0] = True
    try:
        assert postgres.ensure_hqi_role(lay) is True  # set again to the file's password
    finally:
        _recording[0] = False
    psycopg.connect(site["HFC_HQI_DSN"]).close()
    assert postgres.ensure_hqi_role(lay) is False  # it logs in: nothing to set
    pw = postgres.hqi_password(lay)
    assert any("psql" in " ".join(a) for a in _argv), _argv
    assert [a for a in _argv if pw in " ".join(a) or "SCRAM-SHA-256" in " ".join(a)] == []
