"""Rows of product files on their way to ``COPY``: the exact path and the bulk path.

The loader resolves ids and COPYs *rows*, whichever way they were read:

* :class:`ExactRows` — one file parsed by :func:`readers.read_product`: every cell converted
  and checked in Python, COPY text re-built from the checked values. Used for metadata files,
  formats with embedded metadata or links (SoSoFT), and any file the bulk path hands back.
* :class:`BulkRows` — many files of one kind sharing one header, read together: the lines go to
  ``COPY`` nearly as written (``FORMAT csv``, ``;`` separated; the null tokens rewritten to
  empty fields, the id columns replaced by catalogue ids, unstored columns cut out), and Python
  only parses and checks the columns the loader needs (ids, references, dates, file names).
  PostgreSQL checks the rest while it reads the COPY stream (numbers, lengths, NOT NULL) and
  names the line and column of anything it refuses; the loader then rolls back to its savepoint
  and sends that file through the exact path, which reports every problem of the file in the
  readers' own words. A good file costs no Python per cell, which is what makes a night of a
  million sunspots load at the speed of ``COPY``.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from operator import itemgetter

import numpy as np
import pandas as pd

from hfc_tasks.catalogue import readers
from hfc_tasks.catalogue.formats import Column, KindSpec
from hfc_tasks.catalogue.readers import INT_MAX, INT_MIN, ProductTable

SEP = readers.SEPARATOR
# Any field that spells a non-finite number: PostgreSQL would store NaN/Infinity where the
# readers store NULL or refuse (the exact path decides).
_NON_FINITE = re.compile(r"(?:^|;)[ \t]*[+-]?(?:[nN][aA][nN]|[iI][nN][fF])", re.M)


def _maybe_non_finite(text: str) -> bool:
    """Cheap first look for nan/inf (a lower-cased bytes copy searched at memory speed; the
    regex alone is much slower): false positives only cost the regex."""
    low = text.encode("utf-8").lower()
    return (b"nan" in low or b"inf" in low) and _NON_FINITE.search(text) is not None


_LOADER_FILLED = ("qclk_fname", "qclk_url", "feat_filename")


@dataclass
class Rows:
    """Rows of one or more files of one kind, aligned arrays (one entry per row)."""

    spec: KindSpec
    names: list[str]  # the files
    file_idx: np.ndarray  # row -> index into names
    lines: np.ndarray  # row -> line number in its file (header = 1)
    local: np.ndarray  # row -> file-local id (float, NaN = none)
    values: dict[str, pd.Series]  # target (or "@HEADER" raw key) -> values, for the loader
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.file_idx)

    def render(self, keep: np.ndarray, supplied: dict[str, np.ndarray]) -> tuple[list[str], str, list[str]]:
        """(COPY columns, COPY options, lines) of the kept rows; ``supplied`` values (object
        arrays of text, None = NULL) replace or add catalogue columns."""
        raise NotImplementedError


def _copied(spec: KindSpec, supplied: dict) -> list[str]:
    """Stored columns COPYed from the file itself: not supplied by the loader, and never the
    file-local id (it is not a catalogue id: the loader supplies one or the identity draws it)."""
    lid = spec.local_id.target if spec.local_id else None
    return [c.target for c in spec.stored_columns if c.target not in supplied and c.target != lid]


# ---------------------------------------------------------------------------------- exact


_ESCAPES = (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r"))


def _text_column(values: np.ndarray) -> np.ndarray:
    """One column (object array) in COPY text format: \\N for NULL, escapes only where needed."""
    values = np.array(values, dtype=object)
    missing = np.array(pd.isna(values), dtype=bool)
    values[missing] = "\\N"
    sample = "".join(values[~missing])  # one C-speed scan instead of a test per cell
    if any(ch in sample for ch, _ in _ESCAPES):
        for i in np.flatnonzero(~missing):
            v = values[i]
            for ch, esc in _ESCAPES:
                v = v.replace(ch, esc)
            values[i] = v
    return values


@dataclass
class ExactRows(Rows):
    db_text: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, table: ProductTable) -> ExactRows:
        n = len(table)
        values = {c: table.frame[c] for c in table.frame.columns}
        local = table.local_ids.astype(float)
        return cls(table.spec, [table.file], np.zeros(n, dtype=np.int64), table.lines, local, values,
                   list(table.warnings), table.db_text)

    def render(self, keep, supplied):
        columns = [t for t in _copied(self.spec, supplied)] + list(supplied)
        cols = [self.db_text[c][keep] for c in columns[: len(columns) - len(supplied)]]
        cols += [np.asarray(v, dtype=object)[keep] for v in supplied.values()]
        text = [_text_column(c).tolist() for c in cols]
        return columns, "", ["\t".join(row) for row in zip(*text, strict=True)]


# ---------------------------------------------------------------------------------- bulk


def _csv_field(values: np.ndarray, null: str = "") -> np.ndarray:
    """Object array of text/None as COPY csv fields: None -> the null string; quoted when the
    value would otherwise read differently (separator, quote, line end, the null string)."""
    out = np.array(values, dtype=object)
    missing = np.array(pd.isna(out), dtype=bool)
    present = out[~missing]
    if len(present):
        sample = "".join(present)
        risky = any(ch in sample for ch in ';"\n\r') or (null in sample if null else min(map(len, present)) == 0)
        if risky:
            for i in np.flatnonzero(~missing):
                v = out[i]
                if v == null or any(ch in v for ch in ';"\n\r'):
                    out[i] = '"' + v.replace('"', '""') + '"'
    out[missing] = null
    return out


@dataclass
class BulkRows(Rows):
    text_lines: np.ndarray = None  # object array: each row's line as written (nulls rewritten)
    width: int = 0  # fields per line
    position: dict[str, int] = field(default_factory=dict)  # stored target -> field index
    null: str = ""  # how the lines spell NULL (COPY's null string)

    def render(self, keep, supplied):
        copied = set(_copied(self.spec, supplied))
        rest_targets = [t for t, _ in sorted(self.position.items(), key=lambda kv: kv[1]) if t in copied]
        keep_pos = [self.position[t] for t in rest_targets]
        cut = _cutter(self.width, keep_pos)
        lines = self.text_lines[keep].tolist()
        rest = [cut(line) for line in lines]
        columns = list(supplied) + rest_targets
        if supplied:
            fields = [_csv_field(np.asarray(v, dtype=object)[keep], self.null).tolist() for v in supplied.values()]
            if rest_targets:
                fields.append(rest)
            out = [SEP.join(parts) for parts in zip(*fields, strict=True)]
        else:
            out = rest
        null = f", null '{self.null}'" if self.null else ""
        return columns, f" (format csv, delimiter ';'{null})", out


def _cutter(width: int, keep: list[int]):
    """A function line -> the fields at ``keep`` (in that order), fast for the usual shapes."""
    if not keep:
        return lambda line: ""
    first, last = keep[0], keep[-1]
    if keep == list(range(first, last + 1)):  # one run of fields: at most two C-level splits
        head, tail = first, width - 1 - last
        if head == 0 and tail == 0:
            return lambda line: line
        if tail == 0:
            return lambda line: line.split(SEP, head)[head]
        if head == 0:
            return lambda line: line.rsplit(SEP, tail)[0]
        return lambda line: line.split(SEP, head)[head].rsplit(SEP, tail)[0]
    getter = itemgetter(*keep)
    if len(keep) == 1:
        return lambda line: getter(line.split(SEP))
    return lambda line: SEP.join(getter(line.split(SEP)))


def _normalise_nulls(text: str) -> str:
    """Rewrite whole fields ``NULL`` and ``\\N`` to empty fields (COPY csv reads them as NULL).
    ``text`` is whole lines, each ending with a newline."""
    text = "\n" + text
    for token in ("NULL", "\\N"):
        if token not in text:
            continue
        for _ in range(2):  # ";NULL;NULL;": the second one overlaps the first replacement
            text = text.replace(f"{SEP}{token}{SEP}", SEP + SEP)
        text = text.replace(f"\n{token}{SEP}", "\n" + SEP).replace(f"{SEP}{token}\n", SEP + "\n")
    return text[1:]


def needed_columns(spec: KindSpec) -> list[Column]:
    """Columns the loader reads itself (everything else only goes through COPY)."""
    by = {c.ref_by for c in spec.columns if c.ref_by}
    return [
        c
        for c in spec.columns
        if c.target
        and (
            c.local_id or c.ref or c.ref_table or c.type == "datetime" or c.fill_file or c.default is not None
            or c.name in by or c.target in _LOADER_FILLED
        )
    ]


def bulk_eligible(spec: KindSpec) -> bool:
    return not spec.is_metadata and not spec.embeds and not spec.links


def read_bulk(spec: KindSpec, files: list[tuple[str, str]]) -> tuple[list[BulkRows], list[str]]:
    """Read files of one kind in bulk. ``files``: (name, decoded text with ``\n`` line ends).

    Returns the rows by header, and the names of the files to read with the exact path
    (anything unusual: quotes, blank lines, a header problem, a value the bulk checks refuse).
    A line with a wrong number of fields is left to PostgreSQL, which names it.
    """
    exact: list[str] = []
    groups: dict[str, list[tuple[str, str]]] = {}
    for name, text in files:
        header, _, body = text.partition("\n")
        if '"' in text or not body.strip() or "\n\n" in body or body.startswith(("\n", " \n")):
            exact.append(name)  # quoting, blank lines, header only or empty: the exact path
            continue
        if not body.endswith("\n"):
            body += "\n"
        groups.setdefault(header, []).append((name, body))
    out = []
    for header, members in groups.items():
        head = readers.analyse_header(members[0][0], header.split(SEP), spec)
        if head.problems:
            exact.extend(n for n, _ in members)
            continue
        rows, refused = _bulk_group(spec, head, members)
        exact.extend(refused)
        if rows is not None:
            if head.warnings:
                rows.warnings.append(
                    f"{len(rows.names)} {spec.kind} file(s) with header {rows.names[0]}..: " + "; ".join(
                        w.split(": ", 1)[-1] for w in head.warnings)
                )
            out.append(rows)
    return out, exact


def _null_token(text: str) -> tuple[str, str]:
    """(text, COPY null string): the file's own NULL token when it is the only one used (no
    rewriting at all), else every null token rewritten to an empty field."""
    has_n = "\\N" in text
    has_null = "NULL" in text
    empty = ";;" in text or "\n;" in text or ";\n" in text or text.startswith(SEP)
    if not has_n and not (has_null and empty):
        return text, ("NULL" if has_null else "")
    return _normalise_nulls(text), ""


def _tail(line: str, b: int) -> list[str] | None:
    """The last ``b`` fields of a line without copying the rest of it."""
    end = len(line)
    cut = end
    for _ in range(b):
        cut = line.rfind(SEP, 0, cut)
        if cut < 0:
            return None
    return line[cut + 1 : end].split(SEP)


def _bulk_group(spec, head: readers.HeaderMap, members: list[tuple[str, str]]):
    names = [n for n, _ in members]
    text, null = _null_token("".join(b for _, b in members))
    refused: set[str] = set()
    if _maybe_non_finite(text):
        refused.update(n for n, b in members if _NON_FINITE.search(b))
    lines = text.split("\n")
    lines.pop()
    counts = np.array([b.count("\n") for _, b in members], dtype=np.int64)
    if counts.sum() != len(lines):
        return None, names
    file_idx = np.repeat(np.arange(len(names)), counts)
    starts = np.cumsum(counts) - counts
    row_lines = np.arange(len(file_idx)) - np.repeat(starts, counts) + 2

    width = head.width
    needed = [c for c in needed_columns(spec) if c.name in head.position]
    pos = {c.name: head.position[c.name] for c in needed}
    stored = {head.position[c.name] for c in spec.stored_columns if c.name in head.position}
    lid = spec.local_id
    # Fields COPY never takes from the line: the local id, the references (the loader supplies
    # catalogue ids), columns not stored. When they lead the line, one split per line cuts them.
    cut = {p for p in range(width) if p not in stored}
    cut |= {head.position[c.name] for c in spec.columns if c.name in head.position and c.target
            and (c.local_id or (c.ref and not c.ref_by))}
    lead = len(cut)
    tail_pos = sorted(p for p in pos.values() if p >= lead)
    fast = cut == set(range(lead)) and (not tail_pos or width - tail_pos[0] <= 4)
    raw: dict[str, list] = {}
    if fast:
        b = width - tail_pos[0] if tail_pos else 0
        if lead:
            parts = [line.split(SEP, lead) for line in lines]
            short = [i for i, p in enumerate(parts) if len(p) != lead + 1]
            if short:  # too few fields: the exact reader names the line
                refused.update(names[i] for i in np.unique(file_idx[short]))
                parts = [p if len(p) == lead + 1 else [""] * (lead + 1) for p in parts]
            rests = [p[lead] for p in parts]
        else:
            parts, rests = None, lines
        tails = [_tail(r, b) for r in rests] if b else None
        if tails is not None and any(t is None for t in tails):
            bad = [i for i, t in enumerate(tails) if t is None]
            refused.update(names[i] for i in np.unique(file_idx[bad]))
            tails = [t if t is not None else [""] * b for t in tails]
        for name, p in pos.items():
            if p < lead:
                raw[name] = [q[p] for q in parts]
            else:
                raw[name] = [t[p - (width - b)] for t in tails]
        text_lines = np.array(rests, dtype=object)
        position = {c.target: head.position[c.name] - lead for c in spec.stored_columns
                    if c.name in head.position and head.position[c.name] >= lead}
        line_width = width - lead
    else:
        try:
            frame = pd.read_csv(io.StringIO(text), sep=SEP, header=None, names=list(range(width)),
                                usecols=sorted(set(pos.values())) or [0], dtype=object, na_filter=False,
                                quoting=csv.QUOTE_NONE, engine="c")
        except (ValueError, pd.errors.ParserError):
            return None, names
        if len(frame) != len(lines):
            return None, names
        raw = {name: frame[p].tolist() for name, p in pos.items()}
        text_lines = np.array(lines, dtype=object)
        position = {c.target: head.position[c.name] for c in spec.stored_columns if c.name in head.position}
        line_width = width

    bad_rows = np.zeros(len(lines), dtype=bool)
    values: dict[str, pd.Series] = {}
    for col in needed:
        v = pd.Series(raw[col.name], dtype=object)
        is_null = v.isin(readers.NULL_TOKENS).to_numpy()
        if col.type in ("int", "float"):
            num = pd.to_numeric(v.where(~is_null), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            bad = ~is_null & ~np.isfinite(num)
            if col.type == "int":
                with np.errstate(invalid="ignore"):
                    bad |= ~is_null & ((np.mod(num, 1) != 0) | (num < INT_MIN) | (num > INT_MAX))
            bad_rows |= bad
            v = pd.Series(num)
        else:
            v = v.where(~is_null, None)
            if col.type == "datetime":
                uniq = v.dropna().unique()
                shaped = pd.Series(uniq, dtype=object).str.fullmatch(readers.DATE.pattern).to_numpy(dtype=bool)
                parsed = pd.to_datetime(pd.Series(uniq, dtype=object).where(shaped), format="ISO8601",
                                        errors="coerce")
                wrong = uniq[~shaped | parsed.isna().to_numpy()]
                if len(wrong):
                    bad_rows |= v.isin(wrong).to_numpy()
        if not col.nullable and not col.fill_file:
            bad_rows |= is_null
        values[col.target] = v
    if lid is not None:
        local = values[lid.target].to_numpy(dtype=float)
        bad_rows |= pd.DataFrame({"f": file_idx, "id": local}).duplicated().to_numpy()
    else:
        local = (row_lines - 1).astype(float)
    refused.update(names[i] for i in np.unique(file_idx[bad_rows]))
    rows = BulkRows(spec, names, file_idx, row_lines, local, values, [], text_lines=text_lines,
                    width=line_width, position=position, null=null)
    if refused:
        rows = _drop(rows, refused)
    return rows, sorted(refused)


def _drop(rows: BulkRows, names: set[str]) -> BulkRows | None:
    keep_files = [i for i, n in enumerate(rows.names) if n not in names]
    if not keep_files:
        return None
    mask = np.isin(rows.file_idx, keep_files)
    renumber = np.full(len(rows.names), -1, dtype=np.int64)
    renumber[keep_files] = np.arange(len(keep_files))
    return BulkRows(
        rows.spec,
        [rows.names[i] for i in keep_files],
        renumber[rows.file_idx[mask]],
        rows.lines[mask],
        rows.local[mask],
        {k: v[mask].reset_index(drop=True) for k, v in rows.values.items()},
        rows.warnings,
        text_lines=rows.text_lines[mask],
        width=rows.width,
        position=rows.position,
        null=rows.null,
    )


def drop_files(rows: Rows, names: set[str]) -> Rows | None:
    """The same rows without those files' rows (None when nothing is left)."""
    if isinstance(rows, BulkRows):
        return _drop(rows, names)
    return None if rows.names[0] in names else rows
