"""Rejections grouped by column and kind of problem (issue 13, "Rejections flood"): one line for
one missing value in one column of many rows, true counts beyond the readers' listing cap, and
the same lines in the load report."""

from __future__ import annotations

import datetime as dt

import pytest

from hfc_tasks.catalogue.formats import KNOWN
from hfc_tasks.catalogue.grouping import MAX_PROBLEMS, group_problems, grouped_lines, kind_of, line_ranges
from hfc_tasks.catalogue.readers import Problem, ProductFileError, read_product
from hfc_tasks.catalogue.report import LoadReport, RejectedFile

OBSERVATORY = KNOWN.kinds["observatory"]
OBS_HEADER = "ID_OBSERVATORY;OBSERVAT;INSTRUME;TELESCOP;UNITS;WAVEMIN;WAVEMAX;WAVENAME;WAVEUNIT;COMMENT"
NULL = "missing value (NULL) in a NOT NULL column"
# The operator's example: one NULL in column RS of 28 rows of 4 files.
RS_LINES = {"a.csv": range(2, 8), "b.csv": range(3, 10), "c.csv": [4], "d.csv": [*range(2, 14), 20, 30]}


def rs_problems() -> list[Problem]:
    return [Problem(f, n, "RS", NULL) for f, lines in RS_LINES.items() for n in lines]


def test_28_nulls_in_one_column_of_4_files_are_one_line():
    assert sum(len(v) for v in RS_LINES.values()) == 28
    assert grouped_lines(rs_problems()) == [
        "column RS: NULL in 28 rows of 4 files (a.csv lines 2-7, b.csv lines 3-9, c.csv line 4, "
        "d.csv lines 2-13, 20, 30)"
    ]


def test_the_value_is_not_part_of_the_kind_up_to_3_examples_are_kept():
    problems = [Problem("a.csv", 2, "RS", "not a number: 'abc'"), Problem("a.csv", 3, "RS", "not a number: 'x'"),
                Problem("b.csv", 5, "RS", "not a number: '1,5'"), Problem("b.csv", 6, "RS", "not a number: 'y'"),
                Problem("b.csv", 7, "RS", "not a number: 'abc'"), Problem("b.csv", 8, "RA", "not a number: 'z'")]
    (rs, ra) = group_problems(problems)
    assert (rs.column, rs.kind, rs.rows, rs.examples) == ("RS", "not a number", 5, ["'abc'", "'x'", "'1,5'"])
    assert str(rs) == ("column RS: not a number (e.g. 'abc', 'x', '1,5') in 5 rows of 2 files "
                       "(a.csv lines 2-3, b.csv lines 5-7)")
    assert str(ra) == "column RA: not a number (e.g. 'z') in 1 row of 1 file (b.csv line 8)"


@pytest.mark.parametrize("a, b", [
    ("not an integer: 'one'", "not an integer: '12.5'"),
    ("integer out of range: '3000000000'", "integer out of range: '-9999999999'"),
    ("impossible date: '2024-02-30T00:00:00'", "impossible date: '2024-03-01T24:00:00'"),
    ("not a date (expected YYYY-MM-DDTHH:MM:SS): '01/03/2024'", "not a date (expected YYYY-MM-DDTHH:MM:SS): 'x'"),
    ("longer than 200 characters (100000)", "longer than 200 characters (201)"),
    ("duplicate id 1 (first on line 2)", "duplicate id 7 (first on line 9)"),
    ("missing value (NULL) in a NOT NULL column", "missing value (empty) in a NOT NULL column"),
    ("3 fields, the header has 10", "12 fields, the header has 10"),
    ("id 7 is not an id of a_init.csv", "id 9 is not an id of b_init.csv"),
    ("999 is not an id of hfc.filaments (the catalogue has no such row)",
     "5 is not an id of hfc.filaments (the catalogue has no such row)"),
    ("id 9 of f1.csv is not in this manifest", "id 3 of f2.csv is not in this manifest"),
    ("'k1' is not the KEY of any row of a.csv", "'k2' is not the KEY of any row of b.csv"),
    ('invalid input syntax for type integer: "abc"', 'invalid input syntax for type integer: "x"'),
])
def test_every_kind_of_reason_groups_without_its_value(a, b):
    assert kind_of(a)[0] == kind_of(b)[0]
    assert kind_of(a)[1] is not None or kind_of(a)[0] == "NULL"


def test_different_kinds_in_one_column_are_different_lines():
    lines = grouped_lines([Problem("a.csv", 2, "D", "impossible date: '2024-02-30T00:00:00'"),
                           Problem("a.csv", 3, "D", "not a date (expected YYYY-MM-DDTHH:MM:SS): 'x'"),
                           Problem("a.csv", 4, "D", "impossible date: '2024-02-31T00:00:00'")])
    assert lines == [
        "column D: impossible date (e.g. '2024-02-30T00:00:00', '2024-02-31T00:00:00') in 2 rows of 1 file "
        "(a.csv lines 2, 4)",
        "column D: not a date (expected YYYY-MM-DDTHH:MM:SS) (e.g. 'x') in 1 row of 1 file (a.csv line 3)",
    ]


@pytest.mark.parametrize("lines, text", [
    ([2, 3, 4, 5], "2-5"), ([2, 4], "2, 4"), ([7], "7"), ([9, 2, 3, 3, 10, 5], "2-3, 5, 9-10"), ([], ""),
])
def test_line_ranges(lines, text):
    assert line_ranges(lines) == text


def test_many_files_name_five_then_say_how_many_more():
    problems = [Problem(f"f{i:02}.csv", 2 + i % 2, "RS", NULL) for i in range(12)]
    (g,) = group_problems(problems)
    assert str(g) == (
        "column RS: NULL in 12 rows of 12 files (f00.csv line 2, f01.csv line 3, f02.csv line 2, "
        "f03.csv line 3, f04.csv line 2, and 7 more files)"
    )
    assert [f.file for f in g.files] == [f"f{i:02}.csv" for i in range(12)]  # all kept for the JSON


def test_whole_file_problems_stay_one_line_each_naming_the_file():
    problems = [Problem("notes.csv", None, None, "not an HFC product file name"),
                Problem("e.csv", 1, None, "empty file (no header line)"),
                Problem("q.csv", 4, None, "bad CSV quoting: unexpected end of data"),
                Problem("x.csv", None, None, "not an HFC product file name"),
                *rs_problems()]
    assert grouped_lines(problems) == [
        "notes.csv: not an HFC product file name",
        "e.csv, line 1: empty file (no header line)",
        "q.csv, line 4: bad CSV quoting: unexpected end of data",
        "x.csv: not an HFC product file name",
        "column RS: NULL in 28 rows of 4 files (a.csv lines 2-7, b.csv lines 3-9, c.csv line 4, "
        "d.csv lines 2-13, 20, 30)",
    ]


def test_header_problems_group_by_column_over_files_without_rows():
    problems = [Problem(f, 1, "RS_LENGTH", "required column missing from the header") for f in ("a.csv", "b.csv")]
    assert grouped_lines(problems) == [
        "column RS_LENGTH: required column missing from the header in 2 files (a.csv, b.csv)"]


def test_rows_of_the_wrong_width_group_without_a_column():
    problems = [Problem("a.csv", 3, None, "2 fields, the header has 10"),
                Problem("a.csv", 4, None, "11 fields, the header has 10")]
    assert grouped_lines(problems) == [
        "not as many fields as the header (e.g. 2 of 10, 11 of 10) in 2 rows of 1 file (a.csv lines 3-4)"]


def test_dicts_as_stored_in_hfc_rejected_file_group_too():
    rows = [{"file": p.file, "line": p.line, "column": p.column, "reason": p.reason} for p in rs_problems()]
    assert grouped_lines(rows) == grouped_lines(rs_problems())
    d = group_problems(rows)[0].to_dict()
    assert d["rows"] == 28 and d["count"] == "28 rows of 4 files" and d["files"][0] == {
        "file": "a.csv", "lines": "2-7", "unlisted": 0}


def test_a_file_that_stopped_at_the_cap_without_counting_says_at_least():
    # The id resolution lists MAX_PROBLEMS per file and counts no more.
    problems = [Problem("a.csv", n, "OBS_ID", f"id {n} is not an id of a_init.csv") for n in range(2, 2 + MAX_PROBLEMS)]
    problems.append(Problem("b.csv", 2, "OBS_ID", "id 1 is not an id of b_init.csv"))
    (g,) = group_problems(problems)
    assert g.at_least and str(g) == (
        f"column OBS_ID: not an id of its companion file (e.g. 2, 3, 4) in at least {MAX_PROBLEMS + 1} rows "
        "of 2 files (a.csv lines 2-21, b.csv line 2)")


# ------------------------------------------------------------- the readers count beyond their cap


def obs_file(nulls: int, bad_numbers: int = 0, ok: int = 3) -> bytes:
    rows = [f"{i};SDO;HMI;C;Counts;1;2;a;nm;" for i in range(1, ok + 1)]
    rows += [f"{i};;HMI;C;Counts;1;2;a;nm;" for i in range(100, 100 + nulls)]
    rows += [f"{i};SDO;HMI;C;Counts;x{i};2;a;nm;" for i in range(500, 500 + bad_numbers)]
    return ("\n".join([OBS_HEADER, *rows]) + "\n").encode()


def read_errors(name: str, data: bytes) -> ProductFileError:
    with pytest.raises(ProductFileError) as info:
        read_product(name, data, OBSERVATORY)
    return info.value


def test_a_reader_lists_at_most_the_cap_and_counts_the_rest_per_column_and_kind():
    err = read_errors("m_1_observatory.csv", obs_file(nulls=50, bad_numbers=7))
    listed = [p for p in err.problems if p.line is not None]
    assert len(listed) == MAX_PROBLEMS
    assert "and 56 more problem(s) in this file" in str(err)  # 57 in all, the first in the message
    lines = grouped_lines(err.problems)
    # OBSERVAT: header + 3 good rows, so the NULLs are on lines 5-54; 20 listed, 30 counted.
    assert lines == [
        "column OBSERVAT: NULL in 50 rows of 1 file (m_1_observatory.csv lines 5-24 and 30 more rows)",
        "column WAVEMIN: not a number (e.g. 'x500') in 7 rows of 1 file "
        "(m_1_observatory.csv: 7 rows, lines not listed)",
    ]


def test_a_file_under_the_cap_lists_every_problem_and_counts_nothing_more():
    err = read_errors("m_1_observatory.csv", obs_file(nulls=7, bad_numbers=2))
    assert len(err.problems) == 9 and "and 8 more problem(s)" in str(err)
    assert grouped_lines(err.problems) == [
        "column OBSERVAT: NULL in 7 rows of 1 file (m_1_observatory.csv lines 5-11)",
        "column WAVEMIN: not a number (e.g. 'x500', 'x501') in 2 rows of 1 file (m_1_observatory.csv lines 12-13)",
    ]


def test_exactly_the_cap_is_exact_and_one_more_is_counted():
    # Listed MAX_PROBLEMS, counted none: as for the id resolution, which does not count beyond the
    # cap, "at least" (true, if not precise).
    err = read_errors("m.csv", obs_file(nulls=MAX_PROBLEMS))
    assert grouped_lines(err.problems) == [
        f"column OBSERVAT: NULL in at least {MAX_PROBLEMS} rows of 1 file (m.csv lines 5-24)"]
    err = read_errors("m.csv", obs_file(nulls=MAX_PROBLEMS + 1))
    (g,) = group_problems(err.problems)
    assert (g.rows, g.at_least) == (MAX_PROBLEMS + 1, False)
    assert str(g) == f"column OBSERVAT: NULL in {MAX_PROBLEMS + 1} rows of 1 file (m.csv lines 5-24 and 1 more row)"


# ------------------------------------------------------------------------------ the load report


def test_the_load_report_summary_groups_its_rejections():
    rejected = [RejectedFile(p.file, p.line, p.column, p.reason) for p in rs_problems()]
    rejected.append(RejectedFile("notes.csv", None, None, "not an HFC product file name"))
    report = LoadReport("sdoss", dt.date(2024, 3, 1), 7, {"sunspots": 3}, ["g.csv"], rejected, [])
    assert report.summary().splitlines()[1:] == [
        "  column RS: NULL in 28 rows of 4 files (a.csv lines 2-7, b.csv lines 3-9, c.csv line 4, "
        "d.csv lines 2-13, 20, 30)",
        "  notes.csv: not an HFC product file name",
    ]
    assert "5 file(s) REJECTED" in report.summary().splitlines()[0]
    d = report.to_dict()
    assert len(d["rejected"]) == 29  # one per problem, as stored
    assert [g["text"] for g in d["rejected_groups"]] == [s.strip() for s in report.summary().splitlines()[1:]]


def test_one_kind_on_the_same_rows_of_several_columns_is_one_line():
    rs = [p for p in rs_problems() if p.file != "d.csv"]  # d.csv would list MAX_PROBLEMS: "at least"
    problems = [*rs, *(Problem(p.file, p.line, "RA", p.reason) for p in rs), Problem("a.csv", 2, "RB", NULL)]
    assert grouped_lines(problems) == [
        "columns RS, RA: NULL in 14 rows of 3 files (a.csv lines 2-7, b.csv lines 3-9, c.csv line 4)",
        "column RB: NULL in 1 row of 1 file (a.csv line 2)",
    ]
    header = [Problem("x.csv", 1, f"C{i}", "required column missing from the header") for i in range(12)]
    (g,) = group_problems(header)
    assert str(g) == ("columns C0, C1, C2, C3, C4, C5, C6, C7, C8, C9 and 2 more: required column missing from the "
                      "header in 1 file (x.csv)")
    assert g.to_dict()["columns"] == [f"C{i}" for i in range(12)]


def test_a_row_without_the_headers_fields_is_one_problem_not_one_per_column():
    # A cut line: 2 fields where the header has 10; its missing cells are not also NULLs.
    data = (OBS_HEADER + "\n1;SDO;HMI;C;Counts;1;2;a;nm;\n2;SDO\n3;;HMI;C;Counts;1;2;a;nm;\n").encode()
    err = read_errors("m.csv", data)
    assert grouped_lines(err.problems) == [
        "not as many fields as the header (e.g. 2 of 10) in 1 row of 1 file (m.csv line 3)",
        "column OBSERVAT: NULL in 1 row of 1 file (m.csv line 4)",
    ]
