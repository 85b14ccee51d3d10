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
from hfc_tasks.catalogue.readers import INT_MAX, INT_MIN, KindSpec, ProductTable

SEP = readers.SEPARATOR
# Any field that spells a non-finite number: PostgreSQL would store NaN/Infinity where the
# readers store NULL or refuse (the exact path decides).
_NON_FINITE = re.compile(r"(?:^|;)[ \t]*[+-]?(?:[nN][aA][nN]|[iI][nN][fF])", re.M)
# Cheap first look (plain substring searches run at memory speed; the regex does not).
_NON_FINITE_HINTS = ("nan", "inf")
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

    def rows_of(self, name: str) -> np.ndarray:
        return self.file_idx == self.names.index(name)

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


def _csv_field(values: np.ndarray) -> np.ndarray:
    """Object array of text/None as COPY csv fields (None -> empty = NULL; quoted when needed)."""
    out = np.array(values, dtype=object)
    missing = np.array(pd.isna(out), dtype=bool)
    out[missing] = ""
    sample = "".join(out[~missing])
    if any(ch in sample for ch in ';"\n\r') or "" in out[~missing].tolist():
        for i in np.flatnonzero(~missing):
            v = out[i]
            if v == "" or any(ch in v for ch in ';"\n\r'):
                out[i] = '"' + v.replace('"', '""') + '"'
    return out


@dataclass
class BulkRows(Rows):
    text_lines: np.ndarray = None  # object array: each row's line as written (nulls rewritten)
    width: int = 0  # fields per line
    position: dict[str, int] = field(default_factory=dict)  # stored target -> field index

    def render(self, keep, supplied):
        copied = set(_copied(self.spec, supplied))
        rest_targets = [t for t, _ in sorted(self.position.items(), key=lambda kv: kv[1]) if t in copied]
        keep_pos = [self.position[t] for t in rest_targets]
        cut = _cutter(self.width, keep_pos)
        lines = self.text_lines[keep].tolist()
        rest = [cut(line) for line in lines]
        columns = list(supplied) + rest_targets
        if supplied:
            fields = [_csv_field(np.asarray(v, dtype=object)[keep]).tolist() for v in supplied.values()]
            if rest_targets:
                fields.append(rest)
            out = [SEP.join(parts) for parts in zip(*fields, strict=True)]
        else:
            out = rest
        return columns, " (format csv, delimiter ';')", out


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


def needed_columns(spec: KindSpec) -> list[readers.Column]:
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
    """Read files of one kind in bulk. ``files``: (name, decoded text with ``\\n`` line ends).

    Returns the rows by header, and the names of the files to read with the exact path
    (anything unusual: quotes, blank lines, a header problem, a value the bulk checks refuse).
    """
    exact: list[str] = []
    groups: dict[str, list[tuple[str, str]]] = {}
    for name, text in files:
        header, nl, body = text.partition("\n")
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
        width = head.width
        good = []
        for name, body in members:
            rows = body.count("\n")
            if body.count(SEP) != rows * (width - 1):
                exact.append(name)  # a line with too many or too few fields: located by the exact path
            else:
                good.append((name, body, rows))
        if not good:
            continue
        rows, refused = _bulk_group(spec, head, good)
        exact.extend(refused)
        if rows is not None:
            if head.unknown or head.warnings:
                rows.warnings.append(
                    f"{len(rows.names)} {spec.kind} file(s) with header {rows.names[0]}..: " + "; ".join(
                        w.split(": ", 1)[-1] for w in head.warnings)
                )
            out.append(rows)
    return out, exact


def _bulk_group(spec, head: readers.HeaderMap, good: list[tuple[str, str, int]]):
    names = [n for n, _, _ in good]
    counts = np.array([r for _, _, r in good], dtype=np.int64)
    text = _normalise_nulls("".join(b for _, b, _ in good))
    refused: set[str] = set()
    lowered = text.lower()
    if any(hint in lowered for hint in _NON_FINITE_HINTS) and _NON_FINITE.search(text):
        refused.update(n for n, b, _ in good if _NON_FINITE.search(b))
    needed = [c for c in needed_columns(spec) if c.name in head.position]
    usecols = sorted({head.position[c.name] for c in needed})
    dtypes = {head.position[c.name]: ("float64" if c.type in ("int", "float") else object) for c in needed}
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            sep=SEP,
            header=None,
            names=list(range(head.width)),
            usecols=usecols or [0],
            dtype=dtypes or None,
            na_values=[""],
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
            engine="c",
        )
    except (ValueError, pd.errors.ParserError):
        if len(good) == 1:
            return None, names
        half = len(good) // 2  # one bad file: find it in log2(n) bulk reads, not n exact ones
        out = []
        for part in (good[:half], good[half:]):
            rows, bad = _bulk_group(spec, head, part)
            refused.update(bad)
            if rows is not None:
                out.append(rows)
        return _concat(out, spec), sorted(refused)
    if len(frame) != counts.sum():
        return None, names
    file_idx = np.repeat(np.arange(len(names)), counts)
    starts = np.cumsum(counts) - counts
    lines = np.arange(len(file_idx)) - np.repeat(starts, counts) + 2
    bad_rows = np.zeros(len(frame), dtype=bool)
    values: dict[str, pd.Series] = {}
    for col in needed:
        v = frame[head.position[col.name]].reset_index(drop=True)
        if col.type == "int":
            arr = v.to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                bad_rows |= ~np.isnan(arr) & ((np.mod(arr, 1) != 0) | (arr < INT_MIN) | (arr > INT_MAX))
        elif col.type == "float":
            bad_rows |= np.isinf(v.to_numpy(dtype=float))
        elif col.type == "datetime":
            present = v.notna().to_numpy()
            shaped = v.str.fullmatch(readers._DATE.pattern).to_numpy(dtype=bool, na_value=False)
            parsed = pd.to_datetime(v.where(present & shaped), format="ISO8601", errors="coerce")
            bad_rows |= present & (~shaped | parsed.isna().to_numpy())
        if not col.nullable and not col.fill_file:
            bad_rows |= v.isna().to_numpy()
        values[col.target] = v
        if col.ref_by is None and any(c.ref_by == col.name for c in spec.columns):
            values[f"@{col.name}"] = v
    lid = spec.local_id
    if lid is not None:
        local = values[lid.target].to_numpy(dtype=float)
        dup = pd.DataFrame({"f": file_idx, "id": local}).duplicated().to_numpy()
        bad_rows |= dup
    else:
        local = (lines - 1).astype(float)
    refused.update(names[i] for i in np.unique(file_idx[bad_rows]))
    raw = np.array(text.split("\n")[:-1], dtype=object)
    rows = BulkRows(spec, names, file_idx, lines, local, values, [], text_lines=raw, width=head.width,
                    position={c.target: head.position[c.name] for c in spec.stored_columns if c.name in head.position})
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
    )


def drop_files(rows: Rows, names: set[str]) -> Rows | None:
    """The same rows without those files' rows (None when nothing is left)."""
    if isinstance(rows, BulkRows):
        return _drop(rows, names)
    return None if rows.names[0] in names else rows


def _concat(parts: list[BulkRows], spec) -> BulkRows | None:
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0]
    names, offsets = [], []
    for p in parts:
        offsets.append(len(names))
        names.extend(p.names)
    return BulkRows(
        spec,
        names,
        np.concatenate([p.file_idx + o for p, o in zip(parts, offsets, strict=True)]),
        np.concatenate([p.lines for p in parts]),
        np.concatenate([p.local for p in parts]),
        {k: pd.concat([p.values[k] for p in parts], ignore_index=True) for k in parts[0].values},
        [w for p in parts for w in p.warnings],
        text_lines=np.concatenate([p.text_lines for p in parts]),
        width=parts[0].width,
        position=parts[0].position,
    )
