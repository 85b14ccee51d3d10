"""What an HQI operation answers, before it is written as a VOTable (:mod:`hfc_tasks.hqi.votable`).

One :class:`Result` per table of ``FROM`` (one VOTable RESOURCE each, its TABLE named
``hqi-<TABLE>``), holding at most one page of rows; the :class:`Answer` carries the INFOs every
HQI response has: ``QUERY_STATUS`` (OK, OVERFLOW when a table had more rows than the page, ERROR
with ``QUERY_ERROR``), ``QUERY_STRING`` and ``EXECUTED_AT``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

# VOTable datatypes a field may have; pyhfc types short/int/long as int, float/double as float,
# boolean as bool, and a char matching YYYY-MM-DDTHH:MM:SS[.fff] as a datetime.
DATATYPES = ("short", "int", "long", "float", "double", "boolean", "char")


@dataclass(frozen=True)
class Field:
    """A column of a result: upper-case name, VOTable datatype, and whether it holds times
    (written as ISO 8601 ``YYYY-MM-DDTHH:MM:SS[.ffffff]`` text, no time zone)."""

    name: str
    datatype: str = "char"
    timestamp: bool = False

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise ValueError(f"field {self.name}: datatype {self.datatype!r} is not one of {DATATYPES}")


@dataclass
class Result:
    """The rows of one FROM table: values as psycopg gives them (int, float, Decimal, str,
    bool, datetime, date, None for NULL), in the order of ``fields``."""

    table: str
    fields: list[Field]
    rows: list[tuple] = field(default_factory=list)
    overflow: bool = False  # the table had more rows than this page


@dataclass
class Answer:
    results: list[Result]
    query: str  # QUERY_STRING: the request as the service ran it (SQL text, no parameter values hidden)
    executed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC).replace(tzinfo=None))
    error: str | None = None  # set: QUERY_STATUS=ERROR with this QUERY_ERROR

    @property
    def status(self) -> str:
        if self.error is not None:
            return "ERROR"
        return "OVERFLOW" if any(r.overflow for r in self.results) else "OK"

    @classmethod
    def failed(cls, message: str, query: str = "") -> Answer:
        return cls(results=[], query=query, error=message)
