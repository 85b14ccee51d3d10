"""The HQI query language, turned into parameterised SQL for PostgreSQL.

The ``Query`` operation and the ``HelioQueryService`` GET take a ``WHERE`` string in the HQI
syntax (as pyhfc's ``hqi_where`` writes it, and the IDL/SolarSoft clients by hand)::

    FIELD,value             FIELD = value ("*" in the value: LIKE, "*" standing for any text)
    FIELD,v1,v2             FIELD = v1 OR FIELD = v2
    FIELD,min/max           FIELD BETWEEN min AND max   ("min/" and "/max": one bound)
    FIELD,null  FIELD,!null FIELD IS NULL, FIELD IS NOT NULL
    cond1;cond2             cond1 AND cond2

and the time rule of ``TimeQuery``/``Query``: a row is in ``[start, end]`` when
``<start column> >= start AND <end column> <= end`` (``DATE_OBS``/``DATE_END`` but for the tables
that have their own time columns); several (start, end) pairs are ORed.

Nothing of the request reaches the SQL text but column names found in the table's own list
(:class:`Column`, matched without regard to case, as pyhfc sends unquoted names) and
placeholders: every value is a parameter, converted to the column's type first, so a bad value
is an :class:`HqiError` naming the field and the value, never a database error.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

TYPES = ("int", "float", "text", "datetime", "bool")


class HqiError(ValueError):
    """A request the user can fix: the message says what and where."""


@dataclass(frozen=True)
class Column:
    """A column a client may name: its HQI (upper-case) name, its name in PostgreSQL, its type."""

    name: str
    sql_name: str
    type: str = "text"

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"column {self.name}: type {self.type!r} is not one of {TYPES}")

    @property
    def ident(self) -> str:
        return '"' + self.sql_name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Sql:
    """A condition: SQL text with ``%s`` placeholders and its parameters, in order."""

    text: str
    params: tuple = ()

    @staticmethod
    def all_of(parts: Iterable[Sql], glue: str = "AND") -> Sql | None:
        parts = [p for p in parts if p is not None]
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0]
        return Sql(f" {glue} ".join(f"({p.text})" for p in parts), tuple(x for p in parts for x in p.params))


def columns_by_name(columns: Iterable[Column]) -> dict[str, Column]:
    return {c.name.upper(): c for c in columns}


def column(columns: Mapping[str, Column], name: str, table: str = "") -> Column:
    found = columns.get(name.strip().upper())
    if found is None:
        where = f" of {table}" if table else ""
        known = ", ".join(sorted(columns)) or "(none)"
        raise HqiError(f"unknown field {name.strip()!r}{where}; its fields are: {known}")
    return found


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)?Z?$")


def parse_time(text: str, what: str = "time") -> dt.datetime:
    """An HQI date: ``YYYY-MM-DD``, ``YYYY-MM-DDTHH:MM[:SS[.ffffff]]`` (``T`` or a space, optional
    ``Z``), taken as UTC without time zone as the catalogue stores it."""
    value = text.strip()
    if not _ISO.match(value):
        raise HqiError(f"{what} {text!r} is not a date (expected YYYY-MM-DDTHH:MM:SS)")
    try:
        return dt.datetime.fromisoformat(value.rstrip("Z").replace(" ", "T"))
    except ValueError as exc:
        raise HqiError(f"{what} {text!r} is not a date ({exc})") from None


def typed(col: Column, text: str):
    """``text`` as a value of ``col``'s type (the parameter sent to PostgreSQL)."""
    value = text.strip()
    try:
        if col.type == "int":
            return int(value)
        if col.type == "float":
            return float(value)
        if col.type == "bool":
            if value.lower() in ("true", "t", "1", "yes"):
                return True
            if value.lower() in ("false", "f", "0", "no"):
                return False
            raise ValueError
    except ValueError:
        raise HqiError(f"field {col.name}: {text!r} is not a {col.type} value") from None
    if col.type == "datetime":
        return parse_time(value, f"field {col.name}: value")
    return value


def _like(text: str) -> str:
    # "*" is the HQI wildcard; "%" and "_" of the value are literal characters.
    return re.sub(r"([\\%_])", r"\\\1", text).replace("*", "%")


def _one_value(col: Column, text: str) -> Sql:
    value = text.strip()
    if value.lower() == "null":
        return Sql(f"{col.ident} IS NULL")
    if value.lower() == "!null":
        return Sql(f"{col.ident} IS NOT NULL")
    if "/" in value and col.type != "text":
        low, _, high = value.partition("/")
        if not low.strip() and not high.strip():
            raise HqiError(f"field {col.name}: range {text!r} has no bound")
        if low.strip() and high.strip():
            return Sql(f"{col.ident} BETWEEN %s AND %s", (typed(col, low), typed(col, high)))
        if low.strip():
            return Sql(f"{col.ident} >= %s", (typed(col, low),))
        return Sql(f"{col.ident} <= %s", (typed(col, high),))
    if "*" in value:
        if col.type != "text":
            raise HqiError(f"field {col.name}: the wildcard '*' applies to text fields, not {col.type}")
        return Sql(f"{col.ident} LIKE %s", (_like(value),))
    if not value:
        raise HqiError(f"field {col.name}: empty value")
    return Sql(f"{col.ident} = %s", (typed(col, value),))


def parse_where(where: str | None, columns: Mapping[str, Column], table: str = "") -> Sql | None:
    """The SQL of an HQI ``WHERE`` string (None when it is empty)."""
    if where is None or not where.strip():
        return None
    conditions = []
    for i, part in enumerate(p for p in where.split(";") if p.strip()):
        field, sep, values = part.partition(",")
        if not sep:
            raise HqiError(f"WHERE condition #{i + 1} {part.strip()!r} has no value (expected FIELD,value)")
        col = column(columns, field, table)
        ors = [_one_value(col, v) for v in values.split(",")]
        conditions.append(Sql.all_of(ors, "OR"))
    return Sql.all_of(conditions)


def time_condition(starts: Sequence[str], ends: Sequence[str], start_col: Column, end_col: Column) -> Sql | None:
    """The time rule for (start, end) pairs: ``start_col >= start AND end_col <= end``, pairs ORed."""
    if len(starts) != len(ends):
        raise HqiError(f"{len(starts)} STARTTIME for {len(ends)} ENDTIME: give them in pairs")
    pairs = []
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        low, high = parse_time(start, f"STARTTIME #{i + 1}"), parse_time(end, f"ENDTIME #{i + 1}")
        if high < low:
            raise HqiError(f"ENDTIME #{i + 1} {end!r} is before STARTTIME #{i + 1} {start!r}")
        pairs.append(Sql(f"{start_col.ident} >= %s AND {end_col.ident} <= %s", (low, high)))
    return Sql.all_of(pairs, "OR")


MAX_RECORDS = 10_000  # the original service's cap


def page(max_records, start_index, cap: int = MAX_RECORDS) -> tuple[int, int]:
    """(LIMIT, OFFSET) of a request: MAXRECORDS/LIMIT capped at ``cap`` (absent: ``cap``),
    STARTINDEX/OFFSET from 0. Ask the database for one row more than the limit to tell an
    OVERFLOW from a full page."""
    def number(value, what: str, default: int) -> int:
        if value in (None, ""):
            return default
        try:
            n = int(str(value).strip())
        except ValueError:
            raise HqiError(f"{what} {value!r} is not a whole number") from None
        if n < 0:
            raise HqiError(f"{what} {value!r} is negative")
        return n

    return min(number(max_records, "MAXRECORDS", cap), cap), number(start_index, "STARTINDEX", 0)
