"""The database roles of the HQI query service (issue 12): what its readers may do, enforced
by PostgreSQL itself.

- ``hfc_hqi_reader`` (NOLOGIN, made by migration ``0006_hqi_reader`` when the migrating role
  may create roles): USAGE on schema ``hfc``, SELECT on the served relations (``frc_info`` and
  every ``view_*_hqi`` / ``view_*_gui``: :data:`hfc_tasks.hqi.tables.SERVED`), nothing else. A
  privilege it holds on any other relation of the schema is revoked.
- the service's LOGIN role (``hfc_hqi`` by default), a member of it: NOSUPERUSER NOCREATEDB
  NOCREATEROLE NOREPLICATION NOBYPASSRLS, and by default read-only with a statement timeout
  (:data:`SETTINGS`, ``ALTER ROLE ... SET``).

:func:`ensure` does all of it, idempotently, on every ``hfc db upgrade`` (after the
migrations, so a served view added by a later migration is granted there). Roles are
server-wide and several catalogue databases may share a server: a role is created only when
missing, and another database's upgrade creating it meanwhile is not an error; the grants are
per database. What is already right is left alone, so a role without CREATEROLE (the pipeline's
own) may run it once the roles exist. The password is never sent: only its SCRAM-SHA-256
verifier, computed by libpq (``PQencryptPasswordConn``), reaches the server.

:func:`ensure_sql` is the same work as one SQL text, for a superuser's psql (the local site
makes the roles that way: ``hfc_tasks.ops.localsite.postgres.ensure_hqi_role``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hfc_tasks.hqi.tables import SERVED

SCHEMA = "hfc"
READER = "hfc_hqi_reader"
LOGIN = "hfc_hqi"
# ALTER ROLE <login> SET ...: what every session of the service starts with.
SETTINGS = (
    ("default_transaction_read_only", "on"),
    ("statement_timeout", "30s"),
    ("search_path", SCHEMA),
    ("idle_in_transaction_session_timeout", "1min"),
)
ATTRIBUTES = "login nosuperuser nocreatedb nocreaterole noreplication nobypassrls inherit"
NOTICE = "hqi-role: "  # prefix of the notices that say what changed
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_VERIFIER = re.compile(r"^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$")
PASSWORD_ENV = "HFC_HQI_DB_PASSWORD"


class ReaderRoleError(RuntimeError):
    """The HQI roles could not be made as asked; the message says what to do."""


@dataclass
class Outcome:
    login: str
    changes: list[str] = field(default_factory=list)  # what this run changed, in words
    password_given: bool = False

    @property
    def created_login(self) -> bool:
        return f"created role {self.login}" in self.changes

    def lines(self) -> list[str]:
        out = [f"HQI roles: {', '.join(self.changes)}" if self.changes
               else f"HQI roles: {READER} and {self.login} are up to date"]
        if self.password_given:
            out.append(f"HQI role {self.login}: password set")
        elif self.created_login:
            out.append(f"HQI role {self.login} was created WITHOUT a password: it cannot log in until one is "
                       f"set (hfc db upgrade --hqi-password-file PATH, or ${PASSWORD_ENV})")
        else:
            out.append(f"HQI role {self.login}: password unchanged (none given)")
        return out


def check_role_name(name: str) -> str:
    if not _ROLE_NAME.match(name or ""):
        raise ReaderRoleError(f"invalid role name {name!r}: lower-case letters, digits and _, at most 63")
    if name == READER:
        raise ReaderRoleError(f"the login role cannot be the group role {READER}")
    return name


def _literal(value: str) -> str:
    """A SQL string literal (standard_conforming_strings, the default since PostgreSQL 9.1)."""
    if "\\" in value or "\0" in value:
        raise ReaderRoleError("unexpected character in a value of the role's SQL")
    return "'" + value.replace("'", "''") + "'"


def ensure_sql(login: str = LOGIN, verifier: str | None = None) -> str:
    """One SQL text (a DO block) that makes both roles and the grants of the current database.

    ``verifier``: a SCRAM-SHA-256 verifier to set as the login role's password (None: leave the
    password as it is). Raises an exception (PostgreSQL's) when something to change is not
    allowed to the role running it.
    """
    check_role_name(login)
    if verifier is not None and not _VERIFIER.match(verifier):
        raise ReaderRoleError("the password must be given as a SCRAM-SHA-256 verifier")
    settings = ", ".join(_literal(f"{k}={v}") for k, v in SETTINGS)
    return f"""\
do $hqi$
declare
    reader constant text := {_literal(READER)};
    login constant text := {_literal(login)};
    verifier constant text := {_literal(verifier) if verifier else 'null'};
    served constant text := {_literal(SERVED.pattern)};
    setting text;
    rel record;
    reader_oid oid;
begin
    -- the roles: server-wide, created only when missing (another database may be making them)
    if not exists (select from pg_roles where rolname = reader) then
        begin
            execute format('create role %I nologin', reader);
            raise notice '{NOTICE}created role %', reader;
        exception when duplicate_object or unique_violation then null;
        end;
    end if;
    if exists (select from pg_roles r where r.rolname = login and (r.rolsuper
               or exists (select from pg_namespace n where n.nspname = {_literal(SCHEMA)} and n.nspowner = r.oid))) then
        raise exception 'role % is a superuser or owns schema {SCHEMA}: choose another role for the HQI service', login;
    end if;
    if not exists (select from pg_roles where rolname = login) then
        begin
            execute format('create role %I login', login);
            raise notice '{NOTICE}created role %', login;
        exception when duplicate_object or unique_violation then null;
        end;
    end if;
    if not exists (select from pg_roles where rolname = login and rolcanlogin and not rolsuper and not rolcreatedb
                   and not rolcreaterole and not rolreplication and not rolbypassrls and rolinherit) then
        execute format('alter role %I {ATTRIBUTES}', login);
        raise notice '{NOTICE}% made {ATTRIBUTES}', login;
    end if;
    if not exists (select from pg_auth_members m join pg_roles g on g.oid = m.roleid join pg_roles u on u.oid = m.member
                   where g.rolname = reader and u.rolname = login) then
        execute format('grant %I to %I', reader, login);
        raise notice '{NOTICE}% made a member of %', login, reader;
    end if;
    foreach setting in array array[{settings}] loop
        if not exists (select from pg_roles where rolname = login and rolconfig @> array[setting]) then
            execute format('alter role %I set %I = %L', login,
                           split_part(setting, '=', 1), split_part(setting, '=', 2));
            raise notice '{NOTICE}% set %', login, setting;
        end if;
    end loop;
    if verifier is not null then
        execute format('alter role %I password %L', login, verifier);
    end if;

    -- the grants of this database: USAGE on the schema, SELECT on the served relations, nothing else
    if to_regnamespace({_literal(SCHEMA)}) is null then
        return;
    end if;
    select oid into reader_oid from pg_roles where rolname = reader;
    if not has_schema_privilege(reader, {_literal(SCHEMA)}, 'USAGE') then
        execute format('grant usage on schema %I to %I', {_literal(SCHEMA)}, reader);
        raise notice '{NOTICE}granted usage on schema {SCHEMA} to %', reader;
    end if;
    if exists (select from pg_namespace n, aclexplode(n.nspacl) a
               where n.nspname = {_literal(SCHEMA)} and a.grantee = reader_oid and a.privilege_type <> 'USAGE') then
        execute format('revoke create on schema %I from %I', {_literal(SCHEMA)}, reader);
        raise notice '{NOTICE}revoked create on schema {SCHEMA} from %', reader;
    end if;
    for rel in
        select c.relname, c.relkind, c.relname ~ served and c.relkind <> 'S' as is_served,
               exists (select from aclexplode(c.relacl) a where a.grantee = reader_oid
                       and a.privilege_type = 'SELECT') as can_select,
               exists (select from aclexplode(c.relacl) a where a.grantee = reader_oid
                       and a.privilege_type <> 'SELECT') as can_more
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = {_literal(SCHEMA)} and c.relkind in ('r', 'v', 'm', 'p', 'f', 'S')
        order by c.relname
    loop
        if rel.can_more or (rel.can_select and not rel.is_served) then
            execute format('revoke all on %I.%I from %I', {_literal(SCHEMA)}, rel.relname, reader);
            raise notice '{NOTICE}revoked all on {SCHEMA}.% from %', rel.relname, reader;
        end if;
        if rel.is_served and (rel.can_more or not rel.can_select) then
            execute format('grant select on %I.%I to %I', {_literal(SCHEMA)}, rel.relname, reader);
            raise notice '{NOTICE}granted select on {SCHEMA}.% to %', rel.relname, reader;
        end if;
    end loop;
end
$hqi$;
"""


def verifier_of(conn, login: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier of ``password`` for ``login``, computed by libpq on this side."""
    if not password:
        raise ReaderRoleError(f"the password of {login} is empty")
    raw = conn.pgconn.encrypt_password(password.encode(), login.encode(), b"scram-sha-256")
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def ensure(conn, login: str = LOGIN, password: str | None = None) -> Outcome:
    """Make the HQI roles and the grants of the database behind ``conn`` (a psycopg connection,
    connected as the catalogue's owner or an administrator). Idempotent.

    ``password``: set as the login role's password (None: leave it). Runs in the caller's
    transaction when there is one, else in its own, committed.
    """
    import psycopg

    check_role_name(login)
    if login == conn.info.user:
        raise ReaderRoleError(f"the HQI login role cannot be the role running the upgrade ({login})")
    verifier = verifier_of(conn, login, password) if password is not None else None
    changes: list[str] = []

    def on_notice(diag) -> None:
        message = diag.message_primary or ""
        if message.startswith(NOTICE):
            changes.append(message[len(NOTICE):])

    conn.add_notice_handler(on_notice)
    try:
        with conn.transaction():
            if verifier is not None:
                _no_statement_in_the_log(conn)
            conn.execute(ensure_sql(login, verifier))
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ReaderRoleError(
            f"the HQI roles: {exc.diag.message_primary} (as {conn.info.user}): run `hfc db upgrade` once as a "
            "role with CREATEROLE (or a superuser) to make them; afterwards the catalogue's owner keeps the "
            "grants up to date") from None
    except psycopg.errors.RaiseException as exc:
        raise ReaderRoleError(f"the HQI roles: {exc.diag.message_primary}") from None
    finally:
        conn.remove_notice_handler(on_notice)
    return Outcome(login, changes, password_given=password is not None)


def _no_statement_in_the_log(conn) -> None:
    """A failing statement is not copied into the server's log (it would hold the verifier):
    ``log_min_error_statement`` may be set by a superuser only; otherwise nothing to do."""
    import psycopg

    try:
        with conn.transaction():
            conn.execute("set local log_min_error_statement = panic")
    except psycopg.errors.InsufficientPrivilege:
        pass
