"""The HQI operations run on the catalogue: ``getTableNames``, ``getTableFields``, ``SQLSelect``,
``TimeQuery`` and ``Query``, each giving an :class:`~hfc_tasks.hqi.answer.Answer`.

``SQLSelect`` takes SQL fragments (WHAT, WHERE, ORDER_BY) by design: the HFC's clients build
them (pyhfc's ``select``, ``nearest``, ``previous``...). What keeps them harmless is not parsing
but the database:

- the service logs in as a role that can only read the served views (``hfc db upgrade`` makes
  it): another table, another schema or a write is refused by PostgreSQL itself;
- every request runs in its own ``READ ONLY`` transaction, with ``statement_timeout`` set for it,
  and is **rolled back** at the end: even a ``set_config(..., false)`` hidden in a fragment does
  not outlive its request; session advisory locks, which a rollback keeps, are released;
- parameters are always sent apart from the text (the extended protocol), so a fragment cannot
  carry a second statement; the table of ``FROM`` must be one of the served tables;
- a page is never more than ``LIMIT``/``MAXRECORDS`` (at most 10,000, like the original
  service) plus one row to tell an OVERFLOW, and both its size bounds are kept by the database
  as the rows are produced: a row larger than ``max_row_bytes`` (``hfc.hqi_row_within``) or a
  page larger than ``max_answer_bytes`` (``hfc.hqi_answer_within``) stops the query there, so
  one request holds at most one bounded page in memory.

``TimeQuery`` and ``Query`` take no SQL: their WHERE is the HQI syntax (:mod:`.where`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import threading
import time
from collections.abc import Sequence

import psycopg
from psycopg import errors as pg_errors

from hfc_tasks.hqi import tables as tables_mod
from hfc_tasks.hqi.answer import Answer, Field, Result
from hfc_tasks.hqi.where import MAX_RECORDS, Column, HqiError, Sql, page, parse_where, time_condition

log = logging.getLogger(__name__)

# PostgreSQL type OIDs -> VOTable datatype (anything else is written as text).
_DATATYPES = {16: "boolean", 20: "long", 21: "short", 23: "int", 26: "long",
              700: "float", 701: "double", 1700: "double"}
_TIMESTAMPS = {1114, 1184}
_HQI_TYPES = {"int": "long", "float": "double", "bool": "boolean", "text": "char", "datetime": "char"}
TABLES_TTL = 60.0  # seconds: a view added by a migration is served within a minute


def _as_list(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return [str(v) for v in value if str(v).strip()]


_TEXT_TYPES = {25, 1043, 1042, 19}  # text, varchar, char, name: already text


def _as_text(desc) -> tuple[str, int]:
    """The select list reading each column of the page ``hqi_w`` as PostgreSQL's text of it
    (times with a zone in UTC), and how many trailing columns to drop from each row: when two
    columns share a name (WHAT "a, a") they cannot be named, ``hqi_w.*`` is read as is and the
    guard's two size columns are cut off in Python."""
    names = [d.name for d in desc]
    if len(set(names)) != len(names):
        return "hqi_w.*", 2
    out = []
    for d in desc:
        name = '"' + d.name.replace('"', '""') + '"'
        if d.type_code in _TEXT_TYPES:
            out.append(f"hqi_w.{name}")
        elif d.type_code == 1184:
            out.append(f"(hqi_w.{name} at time zone 'UTC')::text as {name}")
        else:
            out.append(f"hqi_w.{name}::text as {name}")
    return ", ".join(out), 0


class Reader:
    """Runs HQI operations on the catalogue at ``dsn``, one connection per serving thread."""

    def __init__(self, dsn: str, *, statement_timeout_s: float = 30.0, page_cap: int = MAX_RECORDS,
                 max_row_bytes: int = 256 * 1024, max_answer_bytes: int = 64 * 1024 * 1024,
                 connect_timeout_s: float = 10.0) -> None:
        self.dsn = dsn
        self.statement_timeout_ms = int(statement_timeout_s * 1000)
        self.page_cap = page_cap
        self.max_row_bytes = max_row_bytes
        self.max_answer_bytes = max_answer_bytes
        self.connect_timeout_s = connect_timeout_s
        self._local = threading.local()
        self._tables: dict[str, tables_mod.Table] | None = None
        self._tables_at = 0.0
        self._lock = threading.Lock()
        self._connections: list[psycopg.Connection] = []
        self._described: dict[str, list] = {}
        self._described_at = 0.0

    # ---- connections and transactions ----

    def _connection(self) -> psycopg.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = psycopg.connect(self.dsn, connect_timeout=int(self.connect_timeout_s),
                                   application_name="hfc-hqi")
            conn.read_only = True  # every transaction: BEGIN READ ONLY
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def _begin(self, conn: psycopg.Connection) -> None:
        # DateStyle ISO and shortest exact floats: the text of values is what the VOTable writes.
        conn.execute("select set_config('statement_timeout', %s, true), set_config('search_path', 'hfc', true), "
                     "set_config('datestyle', 'ISO, YMD', true), set_config('extra_float_digits', '1', true)",
                     (str(self.statement_timeout_ms),))

    def tables(self, conn: psycopg.Connection, fresh: bool = False) -> dict[str, tables_mod.Table]:
        """The served tables, read in the request's transaction on ``conn`` again after
        TABLES_TTL, or at once when ``fresh`` (a name not found: a view added by a migration,
        or a catalogue migrated after the service started)."""
        if fresh or self._tables is None or time.monotonic() - self._tables_at > TABLES_TTL:
            self._tables, self._tables_at = tables_mod.load(conn), time.monotonic()
        return self._tables

    def _run(self, query: str, build) -> Answer:
        """Run ``build(conn) -> list[Result]`` in one read-only transaction, rolled back after;
        a user error or a database refusal becomes an ERROR answer naming what to change."""
        try:
            conn = self._connection()
        except psycopg.OperationalError as exc:
            log.error("HQI: the catalogue database is not reachable: %s", exc)
            return Answer.failed("the catalogue database is not reachable; try again later", query)
        try:
            self._begin(conn)
            return Answer(results=build(conn), query=query)
        except HqiError as exc:
            return Answer.failed(str(exc), query)
        except pg_errors.QueryCanceled:
            return Answer.failed(
                f"the query ran longer than the service's limit of {self.statement_timeout_ms / 1000:g} s "
                "and was stopped: narrow the time range, the WHERE, or ask fewer rows", query)
        except pg_errors.InsufficientPrivilege as exc:
            return Answer.failed(f"{exc.diag.message_primary}: this service reads only the tables "
                                 "getTableNames lists", query)
        except pg_errors.ReadOnlySqlTransaction as exc:
            return Answer.failed(f"{exc.diag.message_primary}: this service only reads", query)
        except pg_errors.ProgramLimitExceeded as exc:  # hfc.hqi_row_within's refusal, among others
            return Answer.failed(exc.diag.message_primary or str(exc), query)
        except psycopg.OperationalError as exc:
            log.error("HQI: lost the catalogue database: %s", exc)
            return Answer.failed("the catalogue database connection was lost; try again", query)
        except psycopg.Error as exc:
            diag = exc.diag
            where = f" (at character {diag.statement_position})" if diag.statement_position else ""
            return Answer.failed(f"{diag.message_primary or exc}{where}", query)
        finally:
            self._end(conn)

    @staticmethod
    def _end(conn: psycopg.Connection) -> None:
        """Undo everything a request may have left on its connection: the rollback ends its
        transaction-scoped state (set_config, locks); session advisory locks (pg_advisory_lock
        in a fragment, which could block the loader's migrations for ever) outlive a rollback
        and are released on their own."""
        if conn.closed or conn.broken:
            return
        try:
            conn.rollback()
            conn.execute("select pg_advisory_unlock_all()")
            conn.rollback()
        except psycopg.Error as exc:
            log.warning("HQI: closing a connection that could not be reset: %s", exc)
            conn.close()

    # ---- reading one query, one page at most ----

    def _page(self, conn: psycopg.Connection, table: str, sql: str, params: tuple, limit: int) -> Result:
        desc = self._describe(conn, sql, params)
        fields = [self._field(d) for d in desc]
        select_list, extra = _as_text(desc)
        # Both bounds run in the database, as the rows are produced: a huge computed value, or an
        # answer beyond max_answer_bytes, stops the query there and never reaches the service,
        # which can then read its page (at most limit + 1 rows) in one round trip.
        guarded = (f"select {select_list} from (select hqi_q.*, pg_column_size(hqi_q.*) as hqi_row_bytes, "
                   "sum(pg_column_size(hqi_q.*)) over (rows unbounded preceding) as hqi_answer_bytes "
                   f"from (\n{sql}\n) as hqi_q) as hqi_w\n"
                   "where hfc.hqi_row_within(hqi_row_bytes, %s) and hfc.hqi_answer_within(hqi_answer_bytes, %s)")
        rows = conn.execute(guarded, (*params, self.max_row_bytes, self.max_answer_bytes)).fetchall()
        if extra:
            rows = [row[:-extra] for row in rows]
        overflow = len(rows) > limit
        return Result(table=table, fields=fields, rows=rows[:limit], overflow=overflow)

    def _describe(self, conn: psycopg.Connection, sql: str, params: tuple):
        """The result's columns and types (LIMIT 0: planned, not run), so that the page can be
        read as PostgreSQL's text of each value: formatting a double or a time costs ~1 us in
        Python, far less in PostgreSQL, and the VOTable wants text (bench/hqi_service.py).
        Kept per SQL text (Query and TimeQuery repeat theirs) until the table list is read again."""
        with self._lock:
            if self._described_at != self._tables_at:
                self._described.clear()
                self._described_at = self._tables_at
            desc = self._described.get(sql)
        if desc is None:
            desc = conn.execute(f"select * from (\n{sql}\n) as hqi_q limit 0", params).description
            with self._lock:
                if len(self._described) >= 512:
                    self._described.clear()
                self._described[sql] = desc
        return desc

    @staticmethod
    def _field(desc) -> Field:
        oid = desc.type_code
        if oid in _TIMESTAMPS:
            return Field(desc.name.upper(), "char", timestamp=True)
        return Field(desc.name.upper(), _DATATYPES.get(oid, "char"))

    def _from(self, conn, from_) -> list[tables_mod.Table]:
        names = _as_list(from_)
        if not names:
            raise HqiError("FROM is empty: name a table (getTableNames lists them)")
        return [self._table(conn, n) for n in names]

    def _table(self, conn, name: str) -> tables_mod.Table:
        served = self.tables(conn)
        if str(name).strip().upper() not in served:
            served = self.tables(conn, fresh=True)
        return tables_mod.table(served, name)

    # ---- the operations ----

    def table_names(self) -> Answer:
        def build(conn):
            names = sorted(self.tables(conn))
            return [Result("TABLE_NAMES", [Field("TABLE_NAMES")], [(n,) for n in names])]
        return self._run("getTableNames", build)

    def table_fields(self, table_name: str) -> Answer:
        def build(conn):
            t = self._table(conn, table_name or "")
            rows = [(c.name, _HQI_TYPES[c.type]) for c in t.columns.values()]
            return [Result(t.name, [Field("FIELD_NAMES"), Field("DATATYPE")], rows)]
        return self._run(f"getTableFields {table_name}", build)

    def sql_select(self, what: str | None, from_, where: str | None = None, order_by: str | None = None,
                   limit=None, offset=None) -> Answer:
        what = (what or "").strip() or "*"
        texts: list[str] = []

        def build(conn):
            n, skip = page(limit, offset, self.page_cap)
            results = []
            for t in self._from(conn, from_):
                # Each fragment on its own line: a '--' comment in one cannot swallow the rest.
                shown = f"select {what}\nfrom {t.ident}"
                if where and where.strip():
                    shown += f"\nwhere {where}"
                if order_by and order_by.strip():
                    shown += f"\norder by {order_by}"
                texts.append(f"{shown}\nlimit {n + 1} offset {skip}")
                sql = _fragment(shown) + "\nlimit %s offset %s"
                results.append(self._page(conn, t.name, sql, (n + 1, skip), n))
            return results

        answer = self._run(f"SQLSelect {what} FROM {', '.join(_as_list(from_))}", build)
        if texts:
            answer.query = ";\n".join(texts)
        return answer

    def time_query(self, starts, ends, from_, max_records=None, start_index=None) -> Answer:
        return self.query(starts, ends, from_, max_records=max_records, start_index=start_index,
                          operation="TimeQuery")

    def query(self, starts, ends, from_, where: str | None = None, instrument: str | None = None,
              max_records=None, start_index=None, join: str | None = None, *, what: str | None = None,
              sql_where: str | None = None, order_by: str | None = None, operation: str = "Query") -> Answer:
        """The time rule on each FROM table, and the HQI ``where``; the GET service adds ``what``,
        ``sql_where`` and ``order_by``, SQL fragments as SQLSelect's (read its safety notes)."""
        texts: list[str] = []
        fragment = _fragment

        def build(conn):
            if join and join.strip():
                raise HqiError("JOIN is not supported by this service: query the tables one by one")
            n, skip = page(max_records, start_index, self.page_cap)
            start_list, end_list = _as_list(starts), _as_list(ends)
            if len(start_list) != len(end_list):
                raise HqiError(f"{len(start_list)} STARTTIME for {len(end_list)} ENDTIME: give them in pairs")
            results = []
            for t in self._from(conn, from_):
                parts = []
                times = t.time_columns
                if times is not None and start_list:
                    parts.append(time_condition(start_list, end_list, *times))
                parts.append(parse_where(where, t.columns, t.name))
                if instrument and instrument.strip():
                    parts.append(_instrument(t, instrument.strip()))
                if sql_where and sql_where.strip():
                    parts.append(Sql(f"(\n{fragment(sql_where)}\n)"))
                cond = Sql.all_of([p for p in parts if p is not None])
                if order_by and order_by.strip():
                    order = fragment(order_by)
                else:
                    order = ", ".join(c.ident for c in _stable_order(t))
                sql = f"select {fragment(what) if what and what.strip() else '*'}\nfrom {t.ident}"
                params: tuple = ()
                if cond is not None:
                    sql += f"\nwhere {cond.text}"
                    params = cond.params
                sql += f"\norder by {order}\nlimit %s offset %s"
                texts.append(f"{sql.replace('%%', '%')}\n-- parameters {_show(params + (n + 1, skip))}")
                results.append(self._page(conn, t.name, sql, (*params, n + 1, skip), n))
            return results

        answer = self._run(f"{operation} FROM {', '.join(_as_list(from_))}", build)
        if texts:
            answer.query = ";\n".join(texts)
        return answer


def _stable_order(t: tables_mod.Table) -> list[Column]:
    """The order of a page: the start time, then the identifiers (ID_*), so that paging with
    STARTINDEX neither repeats nor skips rows; the first column when there is nothing else."""
    times = t.time_columns
    cols = [times[0]] if times is not None else []
    cols += [c for c in t.columns.values() if c.name.startswith("ID_") and c not in cols]
    return cols or [next(iter(t.columns.values()))]


def _fragment(text: str) -> str:
    """A client's SQL fragment in a query sent with parameters: its '%' (LIKE '%x%') are text."""
    return text.replace("%", "%%")


def _instrument(t: tables_mod.Table, instrument: str) -> Sql:
    col: Column | None = t.columns.get("INSTRUME") or t.columns.get("INSTRUMENT")
    if col is None:
        raise HqiError(f"INSTRUMENT {instrument!r}: table {t.name} has no INSTRUME column")
    return Sql(f"upper({col.ident}) = upper(%s)", (instrument,))


def _show(params: Sequence) -> str:
    def one(v):
        if isinstance(v, dt.datetime):
            return v.isoformat(timespec="seconds")
        if isinstance(v, decimal.Decimal):
            return str(v)
        return repr(v)
    return "(" + ", ".join(one(v) for v in params) + ")"
