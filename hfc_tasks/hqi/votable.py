"""An HQI :class:`~hfc_tasks.hqi.answer.Answer` written as a VOTable 1.1 document.

The document is the one the HFC's clients read (pyhfc's ElementTree parser, its ``to_astropy``,
SunPy's HELIO client through astropy): namespace ``http://www.ivoa.net/xml/VOTable/v1.1``, one
RESOURCE per :class:`~hfc_tasks.hqi.answer.Result`, each carrying the INFOs ``QUERY_STATUS``
(``OK``; ``OVERFLOW`` when that table had more rows than the page; ``ERROR``), ``QUERY_ERROR`` on
error, ``QUERY_STRING`` and ``EXECUTED_AT``; its TABLE is named ``hqi-<TABLE>``. An error answer
without results is one RESOURCE holding these INFOs only.

How a value is written, so that a NULL (None) reads back as NULL in every client:

- ``short``/``int``/``long``: decimal text; NULL is the FIELD's ``VALUES null`` (VOTable 1.1 has
  no empty integer cell): the type's smallest value, or one the column does not hold;
- ``float``/``double`` (``Decimal`` too): Python's shortest round-trip text, ``NaN``, ``+InF``,
  ``-InF``; NULL is an empty TD (a ``NaN`` would read back as a number in pyhfc);
- ``boolean``: ``T``/``F``; NULL is an empty TD (pyhfc would read astropy's ``?`` as False);
- ``char`` (``arraysize="*"``): the text, XML-escaped, a CR as ``&#13;``; characters XML 1.0
  cannot carry (C0 controls but TAB/LF/CR, lone surrogates, U+FFFE/U+FFFF) become U+FFFD; NULL
  is an empty TD. Times (``datetime``; ``date`` in a timestamp field) are
  ``YYYY-MM-DDTHH:MM:SS``, ``.ffffff`` only when the microseconds are not zero, UTC, no zone.

Values may also come as the text PostgreSQL prints for them (a reader selecting ``col::text``):
numbers are kept (``Infinity`` becomes ``+InF``), ``t``/``f`` become ``T``/``F``, and a timestamp
field's ``YYYY-MM-DD HH:MM:SS[.fff]`` gets its ``T`` (and loses a ``.000000``). That is the
fastest input: formatting a double in Python costs about 1 µs, in PostgreSQL far less.

Speed: astropy's default TABLEDATA path calls a Python converter and ``numpy.all`` for every cell
(about 1 s of CPU per 1,000 rows of 40 columns here). Instead astropy writes the document
(VOTABLE, RESOURCE, INFO; each distinct TABLE header with its FIELDs and VALUES, rendered once
and kept, as rendering 40 FIELDs is most of a small answer's time) and its C TABLEDATA writer
(``astropy.io.votable.tablewriter``) writes the rows, fed with cells formatted column by column
beforehand (:class:`_TableElement`); ``tests/unit/test_hqi_votable.py`` compares the two paths.
"""

from __future__ import annotations

import datetime as dt
import io
import operator
import re
from collections.abc import Callable, Sequence
from typing import Any

from astropy.io.votable import tablewriter
from astropy.io.votable.tree import Field as VOField
from astropy.io.votable.tree import Info, Resource, TableElement, VOTableFile

from hfc_tasks.hqi.answer import Answer, Field, Result

NAMESPACE = "http://www.ivoa.net/xml/VOTable/v1.1"
DESCRIPTION = "HFC Query Interface"

INT_RANGE = {"short": (-(2**15), 2**15 - 1), "int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_SPECIAL_FLOATS = {
    "nan": "NaN", "inf": "+InF", "-inf": "-InF",  # Python's repr
    "NaN": "NaN", "Infinity": "+InF", "-Infinity": "-InF",  # PostgreSQL's text
}
_BOOLEANS = {True: "T", False: "F", "t": "T", "f": "F", "true": "T", "false": "F", "T": "T", "F": "F"}
# What XML 1.0 cannot hold at all: C0 controls but TAB/LF/CR, lone surrogates, U+FFFE, U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NOT_XML_BUT_NUL = re.compile("[\x01-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# A column's cells are joined by NUL for one pass of escaping; no cell holds a NUL by then.
_SEP = "\x00"
_TO_ESCAPE = re.compile("[&<>\r\x01-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ASCII_TO_ESCAPE = bytes([*range(1, 9), 11, 12, *range(14, 32)]) + b"&<>\r"
_NONE = type(None)


def write(answer: Answer) -> bytes:
    """The VOTable 1.1 document (UTF-8, with its XML declaration) of an answer."""
    votable = VOTableFile(version="1.1")
    # Given to every element: astropy would otherwise recompute it (parsing version numbers)
    # for each FIELD, a cost that dominates small answers.
    config = votable._get_version_checks()
    results: Sequence[Result | None] = answer.results or [None]
    for result in results:
        resource = Resource()
        resource.description = DESCRIPTION
        votable.resources.append(resource)
        if answer.error is not None:
            status = "ERROR"
        else:
            status = "OVERFLOW" if result is not None and result.overflow else "OK"
        resource.infos.append(_info("QUERY_STATUS", status, config))
        if answer.error is not None:
            resource.infos.append(_info("QUERY_ERROR", answer.error, config))
        resource.infos.append(_info("QUERY_STRING", answer.query, config))
        resource.infos.append(_info("EXECUTED_AT", _timestamp(answer.executed_at), config))
        if result is not None:
            resource.tables.append(_table(result))
    out = io.BytesIO()
    # A text stream with an encoding: astropy writes to it without a codecs wrapper.
    with io.TextIOWrapper(out, encoding="utf-8", newline="\n") as stream:
        votable.to_xml(stream)
        stream.flush()
        return out.getvalue()


def text(value: str) -> str:
    """``value`` without the characters XML 1.0 cannot hold (each becomes U+FFFD)."""
    return _NOT_XML.sub("\ufffd", value) if _NOT_XML.search(value) else value


def _info(name: str, value: str, config: dict[str, Any]) -> Info:
    info = Info(ID="_", name=name, value=text(value), config=config)
    info.ID = None  # the names repeat in every RESOURCE; an XML ID may not
    return info


class _TableElement(TableElement):
    """A TABLE written from a header astropy rendered (:func:`_header`) and ready cells:
    ``cells`` holds the columns, each a sequence of XML-ready strings (``""``: an empty TD)."""

    header: str  # "<TABLE ...>" and its FIELDs, without the closing tag
    cells: list[Sequence[str]]
    row_count: int

    def to_xml(self, w: Any, **kwargs: Any) -> None:
        w._flush()  # close a start tag astropy may still hold open
        w.write(w.get_indentation_spaces() + self.header)
        if self.row_count:
            ncols = len(self.cells)
            rows = list(zip(*self.cells, strict=True))
            w.write("<DATA>\n<TABLEDATA>\n")
            # astropy's C TABLEDATA writer calls converter(cell, mask) for every cell whose mask
            # is not True, and writes <TD/> for an empty result: with each row's mask entries ""
            # and operator.add as converter, it writes each cell as it is.
            tablewriter.write_tabledata(
                w.write, rows, [("",) * ncols] * self.row_count, [operator.add] * ncols, [False] * ncols, 0, 1 << 16
            )
            w.write("</TABLEDATA>\n</DATA>\n")
        w.write("</TABLE>\n")


# TABLE headers astropy rendered, by (table name, ((field, datatype, null), ...)): rendering 40
# FIELDs costs some 4 ms, the bulk of a small answer's time. Bounded; a race renders twice.
_HEADERS: dict[tuple[str, tuple[tuple[str, str, int | None], ...]], str] = {}
_HEADERS_MAX = 256


def _header(name: str, fields: tuple[tuple[str, str, int | None], ...]) -> str:
    key = (name, fields)
    header = _HEADERS.get(key)
    if header is None:
        header = _render_header(name, fields)
        if len(_HEADERS) >= _HEADERS_MAX:
            _HEADERS.clear()
        _HEADERS[key] = header
    return header


def _render_header(name: str, fields: tuple[tuple[str, str, int | None], ...]) -> str:
    """astropy's TABLE element (name, FIELDs, VALUES null) for a table without rows, open."""
    votable = VOTableFile(version="1.1")
    config = votable._get_version_checks()
    resource = Resource()
    votable.resources.append(resource)
    table = TableElement(votable, ID="_", name=name, config=config)
    table.ID = None  # FROM may name a table twice: no XML ID
    for field_name, datatype, null in fields:
        field = VOField(
            votable,
            ID="_",
            name=field_name,
            datatype=datatype,
            arraysize="*" if datatype == "char" else None,
            config=config,
        )
        field.ID = None  # column names may repeat (SELECT A, A) or not be XML names (?COLUMN?)
        if null is not None:
            field.values.null = null
        table.fields.append(field)
    resource.tables.append(table)
    out = io.BytesIO()
    with io.TextIOWrapper(out, encoding="utf-8", newline="\n") as stream:
        votable.to_xml(stream)
        stream.flush()
        document = out.getvalue().decode("utf-8")
    element = document[document.index("<TABLE") : document.index("</RESOURCE>")].rstrip()
    if element.endswith("</TABLE>"):
        return element[: -len("</TABLE>")]
    if element.endswith("/>"):  # no FIELD: astropy closed the empty element
        return element[:-2] + ">\n"
    raise AssertionError(f"unexpected TABLE from astropy: {element[:200]!r}")


def _table(result: Result) -> TableElement:
    if result.rows:
        columns: list[Sequence[Any]] = list(zip(*result.rows, strict=True))
    else:
        columns = [() for _ in result.fields]
    if len(columns) != len(result.fields):
        raise ValueError(f"{result.table}: {len(result.fields)} fields but rows of {len(columns)} values")
    cells: list[Sequence[str]] = []
    specs = []
    for spec, column in zip(result.fields, columns, strict=True):
        null = None
        if spec.datatype in INT_RANGE:
            null = _int_null(spec, column)
            cells.append(_int_cells(column, "" if null is None else str(null)))
        elif spec.datatype in ("float", "double"):
            cells.append(_float_cells(column))
        elif spec.datatype == "boolean":
            cells.append(["" if v is None else _BOOLEANS.get(v) or ("T" if v else "F") for v in column])
        else:
            cells.append(_char_cells(column, spec.timestamp))
        specs.append((text(spec.name.upper()), spec.datatype, null))
    table = _TableElement(None, ID="_", name="_")
    table.header = _header(text(f"hqi-{result.table}"), tuple(specs))
    table.cells = cells
    table.row_count = len(result.rows)
    return table


def _int_null(spec: Field, column: Sequence[Any]) -> int | None:
    """The VALUES null of an integer column holding NULLs (None without any): the type's
    smallest value, else its largest, else the first value the column does not hold."""
    if None not in column:
        return None
    low, high = INT_RANGE[spec.datatype]
    present = set(column)  # ints, or PostgreSQL's text of them
    for candidate in (low, high):
        if candidate not in present and str(candidate) not in present:
            return candidate
    present = {int(v) for v in present if v is not None}
    return next(c for c in range(low + 1, high) if c not in present)


def _int_cells(column: Sequence[Any], null: str) -> list[str]:
    kinds = _kinds(column)
    if kinds <= {int, _NONE}:
        return [null if v is None else str(v) for v in column]
    if kinds <= {str, _NONE}:  # PostgreSQL's text
        return _escaped([null if v is None else v for v in column])
    return [null if v is None else str(int(v)) for v in column]


def _float_cells(column: Sequence[Any]) -> list[str]:
    kinds = _kinds(column)
    if kinds <= {float, _NONE}:
        cells = _memo(column, repr)
    elif kinds <= {str, _NONE}:  # PostgreSQL's text
        cells = _escaped(["" if v is None else v for v in column])
    else:
        cells = _memo(column, lambda v: repr(float(v)))
    if not _SPECIAL_FLOATS.keys().isdisjoint(cells):
        cells = [_SPECIAL_FLOATS.get(c, c) for c in cells]
    return cells


def _char_cells(column: Sequence[Any], timestamp: bool) -> list[str]:
    kinds = _kinds(column)
    if kinds <= {str, _NONE}:
        values = ["" if v is None else v for v in column]
    else:
        values = _memo(column, lambda v: _to_text(v, timestamp))
    return _escaped(values, pg_timestamps=timestamp)


def _kinds(column: Sequence[Any]) -> set[type]:
    return set(map(type, column))


def _memo(column: Sequence[Any], convert: Callable[[Any], str]) -> list[str]:
    """``convert`` of each value, ``""`` for None; each distinct value converted once when
    values repeat (the rows of one observation share their times, instrument, ...)."""
    sample = column[:64]
    if len(set(sample)) * 4 > len(sample) * 3:  # mostly distinct: no dictionary
        return ["" if v is None else convert(v) for v in column]
    done = {v: convert(v) for v in set(column) if v is not None}
    done[None] = ""
    return [done[v] for v in column]


def _timestamp(value: dt.datetime | dt.date) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat()
    return f"{value.isoformat()}T00:00:00"


def _to_text(value: Any, timestamp: bool) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        return _timestamp(value)
    if isinstance(value, dt.date):
        return _timestamp(value) if timestamp else value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat()
    if isinstance(value, float):
        text_ = repr(value)
        return _SPECIAL_FLOATS.get(text_, text_)
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


def _escaped(values: list[str], pg_timestamps: bool = False) -> list[str]:
    """The cells XML-escaped and made XML-safe, in one pass over the whole column (the list
    itself when no cell needs it)."""
    if not values:
        return values
    joined = _SEP.join(values)
    if pg_timestamps and (" " in joined or ".000000" in joined):
        if joined.count(" ") == len(values) - values.count(""):  # one blank per time: the T's place
            joined = joined.replace(" ", "T")
        else:
            joined = _SEP.join(v[:10] + "T" + v[11:] if v[10:11] == " " else v for v in values)
        if ".000000" in joined:
            joined = (joined + _SEP).replace(".000000" + _SEP, _SEP)[:-1]
        values = joined.split(_SEP)
    if joined.count(_SEP) != len(values) - 1:  # a cell holds a NUL
        joined = _SEP.join(text(v) for v in values)
    elif not _needs_escaping(joined):
        return values  # (a timestamp column's values are already the new ones)
    elif _NOT_XML_BUT_NUL.search(joined):
        joined = _SEP.join(text(v) for v in values)
    if "&" in joined:
        joined = joined.replace("&", "&amp;")
    if "<" in joined:
        joined = joined.replace("<", "&lt;")
    if ">" in joined:
        joined = joined.replace(">", "&gt;")
    if "\r" in joined:
        joined = joined.replace("\r", "&#13;")  # a literal CR would read back as a LF
    return joined.split(_SEP)


def _needs_escaping(joined: str) -> bool:
    """Whether a joined column holds a character to escape or to replace (bytes.translate
    scans ASCII text some ten times faster than a regular expression)."""
    if joined.isascii():
        data = joined.encode("ascii")
        return len(data.translate(None, _ASCII_TO_ESCAPE)) != len(data)
    return _TO_ESCAPE.search(joined) is not None
