"""Readers of HFC product CSV files, driven by a table of column specs per product kind.

The files are read by header NAME (column order is not reliable), with the quirks the real
codes produce: ``;`` separator, minimal ``"`` quoting, CRLF or LF line ends, an optional missing
final newline, an optional trailing ``;`` on every line (SoSoFT), nulls written as ``NULL``, as
an empty field or as ``\\N``, dates as ``YYYY-MM-DDTHH:MM:SS``.

Every kind of file is described by data (a :class:`~hfc_tasks.catalogue.formats.KindSpec`, from
formats.yaml), so supporting another FRC format means adding specs there, not code. The reader
checks everything that would otherwise make the database refuse the whole load (a null in a
NOT NULL column, a number that is not one, an impossible date, an over-long string, an integer
out of range) and reports it located as (file, line, column, reason); line numbers are those of
the file, header = line 1. A file lists at most :data:`MAX_PROBLEMS` problems; the rest are
counted, per column and kind of problem, in "N more row(s) not listed" problems, so that the
grouped report (:mod:`~hfc_tasks.catalogue.grouping`) gives true counts.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hfc_tasks.catalogue.formats import Column, KindSpec
from hfc_tasks.catalogue.grouping import MAX_PROBLEMS, kind_of, unlisted_count, unlisted_text

SEPARATOR = ";"
NULL_TOKENS = ("", "NULL", "\\N")
# Non-finite numbers: the MySQL catalogue could not store them; a nullable column gets NULL.
NON_FINITE = ("nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity")
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # PostgreSQL integer
DATE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?$")


# ---------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    column: str | None
    reason: str

    def __str__(self) -> str:
        where = [self.file]
        if self.line is not None:
            where.append(f"line {self.line}")
        if self.column:
            where.append(f"column {self.column}")
        return ", ".join(where) + ": " + self.reason


class ProductFileError(ValueError):
    """A product file that cannot be loaded; names the file, line, column and reason.

    ``problems`` lists the problems found in the file (up to :data:`MAX_PROBLEMS`, then one
    "N more row(s) not listed" problem per column and kind for the rest), the first being the
    one in the message, which counts them all.
    """

    def __init__(
        self,
        file: str,
        line: int | None,
        column: str | None,
        reason: str,
        problems: list[Problem] | None = None,
    ):
        self.file, self.line, self.column, self.reason = file, line, column, reason
        first = Problem(file, line, column, reason)
        self.problems = list(problems) if problems else [first]
        more = sum(unlisted_count(p.reason) for p in self.problems) - 1
        super().__init__(str(first) + (f" (and {more} more problem(s) in this file)" if more > 0 else ""))

    @classmethod
    def from_problems(cls, problems: list[Problem]) -> ProductFileError:
        p = problems[0]
        return cls(p.file, p.line, p.column, p.reason, problems)


# ---------------------------------------------------------------------------------- reading


@dataclass
class ProductTable:
    """A parsed file: one row per data line, columns = the spec's catalogue columns, typed
    (``Int64``, ``float64``, ``datetime64``, object str; missing optional columns are all null)."""

    file: str
    spec: KindSpec
    frame: pd.DataFrame
    lines: np.ndarray  # file line number of each row (header = line 1)
    # Per catalogue column, each row's value as text PostgreSQL's input reads to the same value
    # (None = NULL): what the loader COPYs, without re-formatting every number.
    db_text: dict[str, np.ndarray] = field(default_factory=dict)
    unknown_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def local_ids(self) -> np.ndarray:
        """Each row's file-local id: its id column, or 1..N for files without ids (SoSoFT)."""
        lid = self.spec.local_id
        if lid is None:
            return np.arange(1, len(self.frame) + 1, dtype=np.int64)
        return self.frame[lid.target].to_numpy(dtype=np.int64)

    def __len__(self) -> int:
        return len(self.frame)


def _decode(name: str, data: bytes, warnings: list[str]) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        # Older IDL codes wrote Latin-1 (e.g. "Nançay"); every byte decodes, so nothing is lost.
        warnings.append(f"{name}: not UTF-8 ({exc.reason} at byte {exc.start}), read as Latin-1")
        text = data.decode("latin-1")
    # One line-end convention for both parsers below (CRLF, LF or a stray CR).
    return text.replace("\r\n", "\n").replace("\r", "\n")


def split_cells(name: str, data: bytes) -> tuple[list[str], pd.DataFrame]:
    """A product file's header fields and data cells as strings, decoded and split exactly as
    :func:`read_product` does, before any column is checked (``hfc formats check`` reports the
    columns of a file the reader refuses); :class:`ProductFileError` if it has no header or its
    quoting is broken."""
    header, cells, _, _ = _split_records(name, _decode(name, data, []))
    return header, cells


def _split_records(name: str, text: str) -> tuple[list[str], pd.DataFrame, np.ndarray, np.ndarray]:
    """Header fields, the data cells as strings, each record's line and field count."""
    if '"' not in text:
        # Fast path (the usual file): no quoting, one record per line, pandas' C parser.
        lines = text.split("\n")
        numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
        if not numbered:
            raise ProductFileError(name, 1, None, "empty file (no header line)")
        header = numbered[0][1].split(SEPARATOR)
        body = numbered[1:]
        line_nos = np.array([n for n, _ in body], dtype=np.int64)
        counts = np.array([ln.count(SEPARATOR) + 1 for _, ln in body], dtype=np.int64)
        width = int(max(counts.max(initial=0), len(header)))
        if body:
            cells = pd.read_csv(
                io.StringIO("\n".join(ln for _, ln in body)),
                sep=SEPARATOR,
                header=None,
                names=list(range(width)),
                dtype=str,
                na_filter=False,
                quoting=csv.QUOTE_NONE,
                skip_blank_lines=False,
                engine="c",
            )
        else:
            cells = pd.DataFrame(columns=list(range(width)), dtype=str)
        return header, cells, line_nos, counts
    # Quoted fields may hold separators or line ends: the csv module tracks real line numbers.
    reader = csv.reader(io.StringIO(text), delimiter=SEPARATOR, quotechar='"', strict=True)
    records, line_nos = [], []
    start = 1
    try:
        for rec in reader:
            if rec and any(cell.strip() for cell in rec):
                records.append(rec)
                line_nos.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ProductFileError(name, reader.line_num, None, f"bad CSV quoting: {exc}") from None
    if not records:
        raise ProductFileError(name, 1, None, "empty file (no header line)")
    header, body = records[0], records[1:]
    width = max([len(header), *(len(r) for r in body)])
    cells = pd.DataFrame([r + [""] * (width - len(r)) for r in body], columns=list(range(width)), dtype=str)
    counts = np.array([len(r) for r in body], dtype=np.int64)
    return header, cells, np.array(line_nos[1:], dtype=np.int64), counts


@dataclass
class HeaderMap:
    """Where each spec column is in a file's header, and what the header got wrong."""

    names: list[str]  # upper-cased names, a trailing empty one (SoSoFT's final ";") removed
    width: int  # fields of the header line as written
    position: dict[str, int]  # spec column name -> field index
    unknown: list[str]
    problems: list[Problem]
    warnings: list[str]


def analyse_header(name: str, header: list[str], spec: KindSpec) -> HeaderMap:
    """Match a header to a spec: located problems for duplicates and missing required columns."""
    problems: list[Problem] = []
    warnings: list[str] = []
    names = [h.strip().upper() for h in header]
    width = len(names)
    if names and names[-1] == "":
        names.pop()
    for i, n in enumerate(names):
        if not n:
            problems.append(Problem(name, 1, f"#{i + 1}", "empty column name in the header"))
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen and n:
            problems.append(Problem(name, 1, n, f"column named twice in the header (fields {seen[n] + 1} and {i + 1})"))
        seen.setdefault(n, i)
    position: dict[str, int] = {}
    known: set[str] = set()
    for col in spec.columns:
        found = [n for n in col.headers if n in seen]
        known.update(found)
        if len(found) > 1:
            warnings.append(f"{name}: columns {' and '.join(found)} both present; using {found[0]}")
        if found:
            position[col.name] = seen[found[0]]
        elif col.required:
            problems.append(Problem(name, 1, col.name, "required column missing from the header"))
    for link in spec.links:
        if link.by and link.by[0] not in seen:
            reason = f"required column missing from the header (links to {link.kind})"
            problems.append(Problem(name, 1, link.by[0], reason))
    unknown = [n for n in names if n and n not in known]
    if unknown:
        warnings.append(f"{name}: unknown column(s) ignored: {', '.join(unknown)}")
    return HeaderMap(names, width, position, unknown, problems, warnings)


def read_product(name: str, data: bytes, spec: KindSpec) -> ProductTable:
    """Parse one product file against its spec; raise :class:`ProductFileError` if unusable."""
    warnings: list[str] = []
    text = _decode(name, data, warnings)
    header, cells, line_nos, counts = _split_records(name, text)
    head = analyse_header(name, header, spec)
    warnings.extend(head.warnings)
    problems: list[Problem] = []
    # Beyond MAX_PROBLEMS, problems are counted per (column, kind): [first reason, count].
    unlisted: dict[tuple, list] = {}

    def problem(line, column, reason, more: int = 0):
        """One problem, and ``more`` like it (same column and kind) on further rows."""
        if len(problems) < MAX_PROBLEMS:
            problems.append(Problem(name, int(line) if line is not None else None, column, reason))
        else:
            more += 1
        if more:
            unlisted.setdefault((column, kind_of(reason)[0]), [reason, 0])[1] += more

    def problems_at(rows: np.ndarray, column, reason) -> None:
        """The rows (indexes) with one kind of problem: the first listed, the rest counted
        without formatting a reason for each (a column may be wrong on a million rows).

        A row without the header's fields is that one problem: its cells, shifted or missing,
        are not also reported column by column (a cut line would be NULL in every column)."""
        if column is not None:
            rows = rows[ok_width[rows]]
        for k, i in enumerate(rows[:MAX_PROBLEMS]):
            more = len(rows) - MAX_PROBLEMS if k == MAX_PROBLEMS - 1 else 0
            problem(line_nos[i], column, reason(i), max(more, 0))

    # Header problems are all listed (at most about one per column; grouped in the report), and
    # count towards the cap of the rows' problems.
    problems.extend(head.problems)

    # -- records: as many fields as the header, give or take one empty trailing field.
    names = head.names
    ok_width = (counts == len(names)) | (counts == head.width)
    for i in np.flatnonzero(~ok_width & (counts == len(names) + 1)):
        ok_width[i] = cells.iat[i, len(names)] == ""  # e.g. "...;;" after an empty last field
    problems_at(np.flatnonzero(~ok_width), None, lambda i: f"{counts[i]} fields, the header has {len(names)}")

    # -- convert and validate, vectorised per column.
    out: dict[str, pd.Series] = {}
    db_text: dict[str, np.ndarray] = {}
    nrows = len(cells)
    for col in spec.read_columns:
        if col.name not in head.position:
            out[col.target] = _null_series(col.type, nrows)
            db_text[col.target] = np.full(nrows, None, dtype=object)
        else:
            raw = cells[head.position[col.name]].astype(str)
            out[col.target], db_text[col.target] = _convert(col, raw, problems_at, warnings, name)
        if col.fill_file or col.default is not None:
            value = name if col.fill_file else col.default
            missing = np.array(pd.isna(db_text[col.target]), dtype=bool)
            if missing.any():
                db_text[col.target][missing] = value
                filled = out[col.target].copy()
                filled[missing] = value if col.type == "text" else pd.to_numeric(value)
                out[col.target] = filled
    for link in spec.links:
        if link.by and link.by[0] in head.position:
            key = f"@{link.by[0]}"  # the raw key text, for the loader's lookup
            out[key] = cells[head.position[link.by[0]]].astype(str).where(lambda s: ~s.isin(NULL_TOKENS), None)

    lid = spec.local_id
    if lid is not None and lid.target in out and nrows:
        ids = out[lid.target]
        dup = ids.duplicated(keep="first") & ids.notna()

        def duplicate(i) -> str:
            first = int(np.flatnonzero((ids == ids.iat[i]).to_numpy())[0])
            return f"duplicate id {ids.iat[i]} (first on line {line_nos[first]})"

        problems_at(np.flatnonzero(dup.to_numpy()), lid.name, duplicate)

    if problems:
        problems.extend(Problem(name, None, column, unlisted_text(n, reason))
                        for (column, _), (reason, n) in unlisted.items())
        raise ProductFileError.from_problems(problems)
    frame = pd.DataFrame(out, index=pd.RangeIndex(nrows))
    return ProductTable(name, spec, frame, line_nos, db_text, head.unknown, warnings)


def _null_series(typ: str, n: int) -> pd.Series:
    if typ == "int":
        return pd.Series(pd.array([pd.NA] * n, dtype="Int64"))
    if typ == "float":
        return pd.Series(np.full(n, np.nan))
    if typ == "datetime":
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[us]")
    return pd.Series([None] * n, dtype=object)


# Characters of a number PostgreSQL's integer / double precision input reads exactly as written.
_INT_CHARS = frozenset("0123456789+- ")
_FLOAT_CHARS = frozenset("0123456789+-.eE ")


def _plain(values: np.ndarray, allowed: frozenset) -> bool:
    """True if every string only uses ``allowed`` characters (one C-speed pass, no per-cell loop)."""
    return set("".join(values)) <= allowed


def _convert(col: Column, raw: pd.Series, problems_at, warnings, name) -> tuple[pd.Series, np.ndarray]:
    """(typed values, database text) of one column; problems go to ``problems_at(rows, column, reason)``.

    The database text is the file's own text wherever PostgreSQL reads it to the same value
    (re-formatting millions of floats would cost more than parsing the whole file), None = NULL.
    """
    cells = np.array(raw.to_numpy(dtype=object))  # writable copies (pandas 3 hands out read-only views)
    is_null = np.array(raw.isin(NULL_TOKENS).to_numpy())
    text = cells.copy()
    if col.type in ("int", "float"):
        values = pd.to_numeric(raw.where(~is_null), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        bad = ~is_null & ~np.isfinite(values)
        if bad.any():
            # "NaN"/"inf": the MySQL catalogue could not store them; NULL if the column allows it.
            tokens = np.array([str(c).strip().lower() in NON_FINITE for c in cells[bad]])
            non_finite = np.zeros(len(cells), dtype=bool)
            non_finite[np.flatnonzero(bad)[tokens]] = True
            if non_finite.any() and col.nullable:
                warnings.append(f"{name}: {int(non_finite.sum())} non-finite value(s) in {col.name} stored as NULL")
                is_null = is_null | non_finite
                bad = bad & ~non_finite
        reason = "not an integer" if col.type == "int" else "not a number"
        problems_at(np.flatnonzero(bad), col.name, lambda i: f"{reason}: {cells[i]!r}")
        ok = ~is_null & ~bad
        if col.type == "int":
            with np.errstate(invalid="ignore"):
                frac = ok & (np.mod(values, 1) != 0)
                rng = ok & ~frac & ((values < INT_MIN) | (values > INT_MAX))
            problems_at(np.flatnonzero(frac), col.name, lambda i: f"not an integer: {cells[i]!r}")
            problems_at(np.flatnonzero(rng), col.name, lambda i: f"integer out of range: {cells[i]!r}")
            ok &= ~frac & ~rng
            ints = np.where(ok, values, 0).astype(np.int64)
            result = pd.Series(pd.array(ints, dtype="Int64"))
            result[~ok] = pd.NA
            if not _plain(cells[ok], _INT_CHARS):  # e.g. "12.0" or "1e3": PostgreSQL wants "12"
                text = ints.astype(str).astype(object)
        else:
            result = pd.Series(np.where(ok, values, np.nan))
            if not _plain(cells[ok], _FLOAT_CHARS):
                text = np.array([repr(v) for v in values.tolist()], dtype=object)
        text[~ok] = None
    elif col.type == "datetime":
        shaped = np.array(raw.str.match(DATE.pattern).to_numpy(dtype=bool, na_value=False))
        retry = ~is_null & ~shaped
        if retry.any():  # surrounding blanks: rare, so stripped only where needed
            stripped = np.array([str(c).strip() for c in cells[retry]], dtype=object)
            cells[retry] = stripped
            text[retry] = stripped
            shaped[retry] = [bool(DATE.match(c)) for c in stripped]
        parsed = pd.to_datetime(pd.Series(cells).where(~is_null & shaped), format="ISO8601", errors="coerce")
        parsed = parsed.astype("datetime64[us]")
        bad = ~is_null & (~shaped | parsed.isna().to_numpy())
        # Two kinds of problem, each listed and counted on its own.
        kinds = ((bad & shaped, "impossible date"), (bad & ~shaped, "not a date (expected YYYY-MM-DDTHH:MM:SS)"))
        for wrong, why in kinds:
            problems_at(np.flatnonzero(wrong), col.name, lambda i, why=why: f"{why}: {raw.iat[i]!r}")
        text[is_null | bad] = None
        result = parsed.reset_index(drop=True)
    else:
        text[is_null] = None
        result = pd.Series(text, dtype=object)
        if col.max_len is not None:
            too_long = (raw.str.len().to_numpy() > col.max_len) & ~is_null
            problems_at(np.flatnonzero(too_long), col.name,
                        lambda i: f"longer than {col.max_len} characters ({len(cells[i])})")
    if not col.nullable:
        problems_at(np.flatnonzero(is_null), col.name,
                    lambda i: f"missing value ({cells[i] or 'empty'}) in a NOT NULL column")
    return result, text
