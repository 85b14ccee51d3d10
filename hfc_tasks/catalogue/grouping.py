"""Rejections grouped: one line per (column, kind of problem) instead of one line per row.

One missing value in one column of 28 rows used to give 28 lines in the report, 28 more in the
task's failure and 28 on the status page. :func:`group_problems` turns the problems into::

    column RS: NULL in 28 rows of 4 files (a.csv lines 2-7, b.csv lines 3-9, c.csv line 4, ...)

The kind of a problem is its reason without the offending value ("not a number: 'abc'" and
"not a number: 'x'" are one kind; up to three values are kept as examples). It is read from the
reason TEXT because that is all the report and ``hfc.rejected_file`` keep; every reason the
readers, the id resolution and PostgreSQL's COPY give has a pattern below, anything else falls
back to the reason without a trailing quoted value.

A problem with neither column nor row (a file not named like a product, an empty file, bad
quoting) stays one line naming its file. Groups of one kind on exactly the same rows (or, for
the header, the same files) are one line over their columns: ``columns A, B, C: required column
missing from the header in 1 file (x.csv)``, ``columns RS, RA: NULL in 28 rows of 4 files (...)``.

Counts are true: a file lists at most :data:`MAX_PROBLEMS` problems (``hfc.rejected_file`` and
the logs stay bounded), the readers count the rest in "N more row(s) not listed: <reason>"
problems (:func:`unlisted_text`), which add N rows to their group. A file that lists
:data:`MAX_PROBLEMS` problems and counts none (the id resolution stops there) may have had more:
its groups say "at least".

Pure: no pandas, no database, no Airflow (the report, the operator, the status page and
``hfc formats check`` share it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MAX_PROBLEMS = 20  # problems listed per file: enough to fix a file in one go, the rest counted
MAX_FILES_NAMED = 5  # per grouped line, then "and N more files"
MAX_COLUMNS_NAMED = 10  # per grouped line of header problems, then "and N more"
MAX_EXAMPLES = 3  # offending values kept per group

_UNLISTED = re.compile(r"^(\d+) more row\(s\) not listed: (.*)$", re.S)

# (pattern, kind, example): kind and example are templates over the pattern's named groups; the
# first pattern that matches the whole reason wins. Values are never part of a kind.
_KINDS: list[tuple[re.Pattern, str, str | None]] = [
    (re.compile(p, re.S), kind, example)
    for p, kind, example in [
        # readers.py
        (r"missing value \(.*\) in a NOT NULL column", "NULL", None),
        (r"(?P<k>not an integer|not a number|integer out of range|impossible date"
         r"|not a date \(expected [^)]*\)): (?P<v>.*)", "{k}", "{v}"),
        (r"longer than (?P<n>\d+) characters \((?P<v>\d+)\)", "longer than {n} characters", "{v} characters"),
        (r"duplicate id (?P<v>.*) \(first on line \d+\)", "duplicate id", "{v}"),
        (r"(?P<v>\d+) fields, the header has (?P<h>\d+)", "not as many fields as the header", "{v} of {h}"),
        (r"column named twice in the header \(fields .*\)", "column named twice in the header", None),
        # resolve.py (ids pointing nowhere)
        (r"id (?P<v>-?\d+) of (?P<f>.*) is not in (?P<w>this manifest|the catalogue)",
         "id of the named file not in {w}", "{v} of {f}"),
        (r"id (?P<v>-?\d+) is not an id of (?P<f>.*)", "not an id of its companion file", "{v}"),
        (r"(?P<v>-?\d+) is not an id of (?P<t>\S+) \(the catalogue has no such row\)",
         "not an id of {t} (the catalogue has no such row)", "{v}"),
        (r"(?P<v>.*) is not the (?P<c>\S+) of any row of (?P<f>.*)", "not the {c} of any row of its companion file",
         "{v}"),
        (r"its (?P<k>\S+) file (?P<f>.*) (?P<w>was rejected|was not loaded)", "its {k} file {w}", "{f}"),
        (r"(?P<k>\S+) file (?P<f>.*) (?P<w>was rejected|is not loaded)", "its {k} file {w}", "{f}"),
        # copying.py (what PostgreSQL refused in a COPY)
        (r"null value in column .* violates not-null constraint.*", "NULL", None),
        (r"(?P<k>.*) \(Key \((?P<c>.*?)\)=\((?P<v>.*)\) already exists\.\)", "{k}", "{v}"),
        # anything else: the reason without a trailing quoted value
        (r"(?P<k>.*?): (?P<v>'.*'|\".*\")", "{k}", "{v}"),
    ]
]

# Kinds of problems located on a row but in no column: grouped like the others (without "column").
_ROW_KINDS = {"not as many fields as the header"}


def kind_of(reason: str) -> tuple[str, str | None]:
    """(kind of problem, the offending value or None) of a reason text."""
    for pattern, kind, example in _KINDS:
        m = pattern.fullmatch(reason)
        if m:
            values = m.groupdict()
            return kind.format(**values), example.format(**values) if example else None
    return reason, None


def unlisted_text(count: int, reason: str) -> str:
    """The reason of a problem standing for ``count`` more rows like ``reason``, not listed."""
    return f"{count} more row(s) not listed: {reason}"


def unlisted_count(reason: str) -> int:
    """How many problems a reason stands for: N for an :func:`unlisted_text`, else 1."""
    m = _UNLISTED.fullmatch(reason)
    return int(m.group(1)) if m else 1


def line_ranges(lines: Iterable[int]) -> str:
    """``2, 3, 4, 5, 9, 11`` -> ``"2-5, 9, 11"`` (sorted, duplicates dropped)."""
    out: list[str] = []
    run: list[int] = []
    for n in sorted(set(lines)):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [n]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(out)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@dataclass
class FileRows:
    """One file's part of a group: the listed lines and the rows counted but not listed."""

    file: str
    lines: list[int] = field(default_factory=list)
    unlisted: int = 0

    @property
    def rows(self) -> int:
        return len(self.lines) + self.unlisted

    def __str__(self) -> str:
        if not self.lines:
            return self.file + (f": {_plural(self.unlisted, 'row')}, lines not listed" if self.unlisted else "")
        text = f"{self.file} line{'s' if len(self.lines) > 1 else ''} {line_ranges(self.lines)}"
        return text + (f" and {_plural(self.unlisted, 'more row')}" if self.unlisted else "")


@dataclass
class Group:
    """Problems of one kind in one column, over every file; or one whole-file problem."""

    column: str | None
    kind: str
    files: list[FileRows] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)
    at_least: bool = False  # a file may have had more than it listed (it stopped at MAX_PROBLEMS)
    whole_file: bool = False  # one problem of one file with neither column nor row: not grouped
    line: int | None = None  # whole_file: the line it names, if any
    more_columns: list[str] = field(default_factory=list)  # header problems: the other columns

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def columns(self) -> str:
        """``RS``, or for header problems over several columns ``A, B, C and 4 more``."""
        every = [c for c in [self.column, *self.more_columns] if c]
        named = ", ".join(every[:MAX_COLUMNS_NAMED])
        return named + (f" and {len(every) - MAX_COLUMNS_NAMED} more" if len(every) > MAX_COLUMNS_NAMED else "")

    @property
    def what(self) -> str:
        """The kind with its example values: ``not a number (e.g. 'abc', 'x')``."""
        return self.kind + (f" (e.g. {', '.join(self.examples)})" if self.examples else "")

    @property
    def count(self) -> str:
        """``28 rows of 4 files``, ``at least 20 rows of 1 file`` or ``3 files`` (no rows)."""
        files = _plural(len(self.files), "file")
        if not self.rows:  # problems of the header or of the whole file: no row to count
            return files
        return f"{'at least ' if self.at_least else ''}{_plural(self.rows, 'row')} of {files}"

    @property
    def where(self) -> str:
        """The files and their lines, the first :data:`MAX_FILES_NAMED`, then how many more."""
        if self.whole_file:
            return self.files[0].file + (f" line {self.line}" if self.line is not None else "")
        named = [str(f) for f in self.files[:MAX_FILES_NAMED]]
        if len(self.files) > MAX_FILES_NAMED:
            named.append(f"and {_plural(len(self.files) - MAX_FILES_NAMED, 'more file')}")
        return ", ".join(named)

    def __str__(self) -> str:
        if self.whole_file:
            line = f", line {self.line}" if self.line is not None else ""
            return f"{self.files[0].file}{line}: {self.kind}"
        column = f"column{'s' if self.more_columns else ''} {self.columns}: " if self.column else ""
        return f"{column}{self.what} in {self.count} ({self.where})"

    def to_dict(self) -> dict:
        """JSON-friendly (the status page's batch JSON)."""
        return {
            "column": self.column,
            "columns": [c for c in [self.column, *self.more_columns] if c],
            "columns_text": self.columns,
            "kind": self.kind,
            "examples": list(self.examples),
            "rows": self.rows,
            "at_least": self.at_least,
            "files": [{"file": f.file, "lines": line_ranges(f.lines), "unlisted": f.unlisted} for f in self.files],
            "whole_file": self.whole_file,
            "what": self.what,
            "count": self.count,
            "where": self.where,
            "text": str(self),
        }


def _field(problem, name: str):
    return problem.get(name) if isinstance(problem, Mapping) else getattr(problem, name, None)


def group_problems(problems: Iterable, cap: int = MAX_PROBLEMS) -> list[Group]:
    """Group problems (anything with ``file``, ``line``, ``column``, ``reason``: a readers
    ``Problem``, a report's ``RejectedFile``, a ``hfc.rejected_file`` row as a dict) by (column,
    kind of problem), in the order each group first appears.

    ``cap``: the problems a file lists at most; a file that lists that many and counts no more
    (no :func:`unlisted_text` problem) may have had more, so its groups say "at least".
    """
    groups: dict[tuple, Group] = {}
    parts: dict[tuple, FileRows] = {}  # (group key, file) -> its part of the group
    listed: dict[str, int] = {}
    counted: set[str] = set()  # files whose problems beyond the cap were counted
    for p in problems:
        file, line, column, reason = (_field(p, k) for k in ("file", "line", "column", "reason"))
        text = str(reason or "")
        m = _UNLISTED.fullmatch(text)
        if m:
            counted.add(file)
        else:
            listed[file] = listed.get(file, 0) + 1
        kind, example = kind_of(m.group(2) if m else text)
        row = line is not None and line > 1  # line 1 is the header: a problem of the whole file
        if not column and not (kind in _ROW_KINDS and (row or m)):
            key = ("file", len(groups))  # a whole-file problem: one line each, never merged
            groups[key] = Group(None, text, [FileRows(file)], whole_file=True, line=line)
            continue
        group = groups.setdefault((column, kind), Group(column, kind))
        part = parts.get((column, kind, file))
        if part is None:
            part = parts[column, kind, file] = FileRows(file)
            group.files.append(part)
        if m:
            part.unlisted += int(m.group(1))
        elif row:
            part.lines.append(int(line))
        if example is not None and example not in group.examples and len(group.examples) < MAX_EXAMPLES:
            group.examples.append(example)
    capped = {f for f, n in listed.items() if n >= cap and f not in counted}
    for group in groups.values():
        group.at_least = not group.whole_file and any(f.file in capped for f in group.files)
        for part in group.files:
            part.lines.sort()
    # One kind on the same rows (header problems: in the same files) in several columns: one line
    # over the columns (a file written with the wrong separator misses every required column).
    merged: dict[tuple, Group] = {}
    out: list[Group] = []
    for group in groups.values():
        if group.whole_file or not group.column:
            out.append(group)
            continue
        key = (group.kind, group.at_least, tuple((f.file, tuple(f.lines), f.unlisted) for f in group.files))
        if key in merged:
            first = merged[key]
            first.more_columns.append(group.column)
            first.examples.extend(e for e in group.examples if e not in first.examples)
            del first.examples[MAX_EXAMPLES:]
        else:
            merged[key] = group
            out.append(group)
    return out


def grouped_lines(problems: Iterable, cap: int = MAX_PROBLEMS) -> list[str]:
    """:func:`group_problems` as text, one line per group."""
    return [str(g) for g in group_problems(problems, cap)]
