"""The tables the HQI service serves, read from the catalogue itself: ``FRC_INFO`` and every
``VIEW_*_HQI`` / ``VIEW_*_GUI`` view of schema ``hfc``, with their columns and types. Clients
name them in upper case and unquoted (pyhfc does); the names found here are the allow-list of
``FROM`` and of the fields of ``WHERE`` (:mod:`hfc_tasks.hqi.where`).

The time rule's columns: ``TIME_START``/``TIME_END`` where a table has them (the radio bursts of
``VIEW_T2_*``/``VIEW_T3_*``: a burst's own times, not its observation's), else
``DATE_OBS``/``DATE_END``; a table with neither (``FRC_INFO``) has no time rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from hfc_tasks.hqi.where import Column, HqiError

SCHEMA = "hfc"
SERVED = re.compile(r"^(frc_info|view_[a-z0-9]+_(hqi|gui))$")
CATALOG_SQL = (
    "select table_name, column_name, data_type from information_schema.columns "
    "where table_schema = %s order by table_name, ordinal_position"
)
# information_schema.columns.data_type -> the types of hfc_tasks.hqi.where
PG_TYPES = {
    "smallint": "int", "integer": "int", "bigint": "int",
    "real": "float", "double precision": "float", "numeric": "float",
    "timestamp without time zone": "datetime", "timestamp with time zone": "datetime", "date": "datetime",
    "boolean": "bool",
}
TIME_COLUMNS = (("TIME_START", "TIME_END"), ("DATE_OBS", "DATE_END"))


@dataclass(frozen=True)
class Table:
    name: str  # as clients write it: VIEW_SP_HQI
    sql_name: str  # as PostgreSQL knows it: view_sp_hqi
    columns: Mapping[str, Column] = field(default_factory=dict)  # by upper-case name, in table order

    @property
    def ident(self) -> str:
        return f'"{SCHEMA}"."' + self.sql_name.replace('"', '""') + '"'

    @property
    def time_columns(self) -> tuple[Column, Column] | None:
        for start, end in TIME_COLUMNS:
            if start in self.columns and end in self.columns:
                return self.columns[start], self.columns[end]
        return None


def served_tables(rows: Iterable[tuple[str, str, str]]) -> dict[str, Table]:
    """The served tables from (table, column, data type) rows of ``information_schema``."""
    columns: dict[str, dict[str, Column]] = {}
    for table, col, data_type in rows:
        if not SERVED.match(table):
            continue
        columns.setdefault(table, {})[col.upper()] = Column(col.upper(), col, PG_TYPES.get(data_type, "text"))
    return {t.upper(): Table(t.upper(), t, cols) for t, cols in sorted(columns.items())}


def load(conn) -> dict[str, Table]:
    """The served tables of the catalogue behind ``conn`` (a psycopg connection)."""
    return served_tables(conn.execute(CATALOG_SQL, (SCHEMA,)).fetchall())


def table(tables: Mapping[str, Table], name: str) -> Table:
    """The table a client names (any case, surrounding blanks ignored), or an HqiError listing them."""
    found = tables.get(str(name).strip().upper())
    if found is None:
        raise HqiError(f"unknown table {str(name).strip()!r}; the tables are: {', '.join(sorted(tables))}")
    return found
