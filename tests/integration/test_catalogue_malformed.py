"""Malformed files in one night: each rejected with its located error, the good files loaded,
and nothing already stored lost. Also idempotence, failures and concurrent nights."""

from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest
from catalogue_files import Archive, csv_bytes, header_of, stamp, values_for
from test_catalogue_formats import SDOSS_INIT, init_rows, sdoss_night

from hfc_tasks import status
from hfc_tasks.catalogue import formats, tables

pytestmark = pytest.mark.site

N1, N2, N3 = dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)
FEAT = formats.KNOWN.kinds["sdoss_feat"]
HEADER = header_of(FEAT)


@pytest.fixture
def conn(fresh_db):
    with psycopg.connect(fresh_db) as c:
        yield c


def feat_rows(t: dt.datetime, name: str, n: int = 3) -> list[dict]:
    return [values_for(FEAT, k, t, ID_SUNSPOT=k, FRC_INFO_ID=1, OBSERVATIONS_ID_IC=1, OBSERVATIONS_ID_M=2,
                       FEAT_FILENAME=name) for k in range(1, n + 1)]


def text_of(rows, header=HEADER, sep=";") -> str:
    return "\n".join([sep.join(header)] + [sep.join(str(r[c]) for c in header) for r in rows]) + "\n"


def set_cell(rows, line: int, column: str, value):
    rows[line - 2][column] = value
    return text_of(rows)


# name -> (bytes builder, expected line, column, words in the reason)
def cases(t: dt.datetime, name: str):
    r = lambda: feat_rows(t, name)  # noqa: E731
    long_header = [c if c != "RS_LENGTH" else "RS_LENGTH" for c in HEADER]
    return {
        "empty": (b"", 1, None, "empty file"),
        "blank_lines_only": (b"\n\r\n\n", 1, None, "empty file"),
        "wrong_separator": (text_of(r(), sep=",").encode(), 1, "ID_SUNSPOT", "required column missing"),
        "missing_required_column": (text_of(r(), [c for c in HEADER if c != "RS_LENGTH"]).encode(), 1, "RS_LENGTH",
                                    "required column missing"),
        "duplicated_header": (text_of(r(), long_header + ["CC"]).replace("\n", ";x\n").encode(), 1, "CC",
                              "named twice"),
        "empty_header_name": (text_of(r()).replace(";CC;", ";;", 1).encode(), 1, "#", "empty column name"),
        "text_in_number": (set_cell(r(), 3, "FEAT_AREA_DEG2", "12.5x").encode(), 3, "FEAT_AREA_DEG2", "not a number"),
        "text_in_id": (set_cell(r(), 2, "ID_SUNSPOT", "one").encode(), 2, "ID_SUNSPOT", "not an integer"),
        "float_in_int": (set_cell(r(), 4, "FEAT_X_PIX", "12.5").encode(), 4, "FEAT_X_PIX", "not an integer"),
        "int_out_of_range": (set_cell(r(), 2, "UMBRA_NUMBER", "3000000000").encode(), 2, "UMBRA_NUMBER",
                             "out of range"),
        "non_utf8_in_number": (set_cell(r(), 3, "BR_X0_PIX", "\udcff").encode("utf-8", "surrogateescape"), 3,
                               "BR_X0_PIX", "not an integer"),
        "impossible_date": (set_cell(r(), 2, "RUN_DATE", "2024-02-30T00:00:00").encode(), 2, "RUN_DATE",
                            "impossible date"),
        "hour_24": (set_cell(r(), 4, "RUN_DATE", "2024-03-01T24:00:00").encode(), 4, "RUN_DATE", "impossible date"),
        "not_a_date": (set_cell(r(), 3, "RUN_DATE", "01/03/2024 10:00").encode(), 3, "RUN_DATE", "not a date"),
        "null_in_not_null": (set_cell(r(), 3, "FEAT_X_ARCSEC", "NULL").encode(), 3, "FEAT_X_ARCSEC", "NOT NULL"),
        "empty_in_not_null": (set_cell(r(), 2, "RS", "").encode(), 2, "RS", "NOT NULL"),
        "nan_in_not_null": (set_cell(r(), 4, "FEAT_MEAN2QSUN", "NaN").encode(), 4, "FEAT_MEAN2QSUN", "not a number"),
        "huge_field": (set_cell(r(), 3, "SNAPSHOT_FN", "s" * 100_000).encode(), 3, "SNAPSHOT_FN", "longer than 200"),
        "duplicate_id": (set_cell(r(), 4, "ID_SUNSPOT", "1").encode(), 4, "ID_SUNSPOT", "duplicate id 1"),
        "id_pointing_nowhere": (set_cell(r(), 3, "OBSERVATIONS_ID_IC", "7").encode(), 3, "OBSERVATIONS_ID_IC",
                                "is not an id of"),
        "frc_info_nowhere": (set_cell(r(), 2, "FRC_INFO_ID", "5").encode(), 2, "FRC_INFO_ID", "is not an id of"),
        "too_few_fields": (text_of(r()).replace("\n", "\n3;4\n", 2).replace("\n3;4\n", "\n", 1).encode(), 3, None,
                           "2 fields"),
        "too_many_fields": ((text_of(r())[:-1] + ";extra\n").encode(), 4, None, "86 fields"),
        "bad_quoting": (set_cell(r(), 3, "CC", '"unterminated').encode(), 4, None, "quoting"),  # seen at the end
    }


def test_twenty_odd_malformed_files_each_located_good_files_loaded_nothing_lost(conn):
    # A first good night, already in the catalogue: it must come out untouched.
    assert sdoss_night(N1).load(conn).ok
    before = conn.execute("select id_sunspot, feat_x_pix from hfc.sunspots order by 1").fetchall()

    night = Archive("sdoss", N2, "sdoss")
    night.sample("sdoss_106_frc_info.csv", "frc_info")
    night.sample("sdoss_106_observatory.csv", "observatory")
    start = dt.datetime.combine(N2, dt.time())
    expected, good = {}, []
    names = list(cases(start, "x"))
    for i, case in enumerate([*names, "good_a", "good_b"]):
        t = start + dt.timedelta(minutes=i)
        stem = f"sdoss_106_{stamp(t)}_sdo"
        night.add(f"{stem}_init.csv", "init", csv_bytes(SDOSS_INIT, init_rows(SDOSS_INIT, t), crlf=True))
        if case.startswith("good"):
            night.add(f"{stem}_feat.csv", "feat", text_of(feat_rows(t, f"{stem}_feat.csv")).encode())
            good.append(f"{stem}_feat.csv")
            continue
        data, line, column, words = cases(t, f"{stem}_feat.csv")[case]
        night.add(f"{stem}_feat.csv", "feat", data)
        expected[f"{stem}_feat.csv"] = (case, line, column, words)
    # And a file-level one: a bad name. (A file gone or whose sha256 is not the manifest's is an
    # archive fault, not a rejection: test_catalogue_load.py::test_archive_fault_raises_...)
    night.add("notes.csv", "feat", b"A;B\n1;2\n")
    expected["notes.csv"] = ("name", None, None, "not an HFC product file name")
    assert len(expected) >= 23

    report = night.load(conn)
    firsts = {}
    for r in report.rejected:
        firsts.setdefault(r.file, r)
    assert set(firsts) == set(expected), set(firsts) ^ set(expected)
    for name, (case, line, column, words) in expected.items():
        got = firsts[name]
        assert words in got.reason, (case, str(got))
        assert got.line == line, (case, str(got))
        if column == "#":
            assert got.column.startswith("#"), (case, str(got))
        else:
            assert got.column == column, (case, str(got))
    # The good files of the night are in; every rejected problem is stored with the batch.
    assert sorted(report.files_loaded) == sorted(
        [e["name"] for e in night.entries if e["name"] not in expected])
    assert set(good) <= set(report.files_loaded)
    assert report.rows["sunspots"] == 3 * len(good)
    stored = conn.execute("select count(distinct file) from hfc.rejected_file").fetchone()[0]
    assert stored == len(expected)
    # The summary groups by column and kind of problem: one line each, naming file and line.
    by_case = {case: name for name, (case, *_) in expected.items()}
    lines = report.summary().splitlines()[1:]
    shown = "\n".join(lines)
    assert f"  column FEAT_X_ARCSEC: NULL in 1 row of 1 file ({by_case['null_in_not_null']} line 3)" in lines, shown
    assert f"  column RS: NULL in 1 row of 1 file ({by_case['empty_in_not_null']} line 2)" in lines, shown
    assert "  notes.csv: not an HFC product file name" in lines, shown
    assert conn.execute("select status from hfc.batch where night = %s", (N2,)).fetchone() == ("partial",)
    # Nothing of the first night was lost or changed.
    assert conn.execute(
        "select id_sunspot, feat_x_pix from hfc.sunspots s join hfc.batch b on b.id = s.batch_id"
        " where b.night = %s order by 1", (N1,)).fetchall() == before


def test_one_null_column_in_28_rows_of_4_files_is_one_line_and_28_stored_rows(conn):
    # Issue 13 ("Rejections flood"): one line in the summary, one row per problem in hfc.rejected_file.
    night = Archive("sdoss", N2, "sdoss")
    night.sample("sdoss_106_frc_info.csv", "frc_info")
    night.sample("sdoss_106_observatory.csv", "observatory")
    start = dt.datetime.combine(N2, dt.time())
    names, where = [], []
    for i, bad in enumerate([range(2, 8), range(3, 10), [4], range(2, 16)]):  # 6 + 7 + 1 + 14 = 28
        t = start + dt.timedelta(minutes=i)
        stem = f"sdoss_106_{stamp(t)}_sdo"
        night.add(f"{stem}_init.csv", "init", csv_bytes(SDOSS_INIT, init_rows(SDOSS_INIT, t), crlf=True))
        rows = feat_rows(t, f"{stem}_feat.csv", n=15)
        for line in bad:
            rows[line - 2]["RS"] = "NULL"
        night.add(f"{stem}_feat.csv", "feat", text_of(rows).encode())
        names.append(f"{stem}_feat.csv")
        where.append(f"{stem}_feat.csv line 4" if len(bad) == 1 else f"{stem}_feat.csv lines {bad[0]}-{bad[-1]}")
    report = night.load(conn)
    assert report.summary().splitlines()[1:] == [f"  column RS: NULL in 28 rows of 4 files ({', '.join(where)})"]
    assert sorted(report.rejected_files) == sorted(names)
    assert conn.execute("select count(*) from hfc.rejected_file where column_name = 'RS'").fetchone() == (28,)
    # The status page's batch: the same line, grouped from the stored rows.
    details = status.batch_details(conn, "sdoss", N2)
    assert len(details["rejected"]) == 28
    assert [g["text"] for g in details["rejected_groups"]] == [report.summary().splitlines()[1].strip()]


def test_latin1_text_is_loaded_with_a_warning(conn):
    night = sdoss_night(N1)
    name = next(e["name"] for e in night.entries if e["kind"] == "feat")
    t = dt.datetime.combine(N1, dt.time(6))
    rows = feat_rows(t, name)
    rows[0]["SNAPSHOT_PATH"] = "Nançay/"
    night.replace(name, text_of(rows).encode("latin-1"))
    report = night.load(conn)
    assert report.ok and any("Latin-1" in w for w in report.warnings)
    assert conn.execute("select count(*) from hfc.sunspots where snapshot_path = 'Nançay/'").fetchone() == (1,)


def test_unknown_columns_are_reported_and_known_variants_tolerated(conn):
    night = sdoss_night(N1)
    name = next(e["name"] for e in night.entries if e["kind"] == "feat")
    t = dt.datetime.combine(N1, dt.time(6))
    rows = feat_rows(t, name)
    for r in rows:
        r["SOLAR_B0"] = 7
        r["FEAT_X_PIX"] = "12.0"  # an integer written as a float: PostgreSQL wants 12
    night.replace(name, text_of(rows, HEADER + ["SOLAR_B0"]).encode())
    report = night.load(conn)
    assert report.ok, report.summary()
    assert any("unknown column(s) ignored: SOLAR_B0" in w for w in report.warnings)
    assert conn.execute("select distinct feat_x_pix from hfc.sunspots").fetchall() == [(12,)]


def counts_by_night(conn) -> dict:
    return dict(conn.execute(
        "select b.night, count(s.*) from hfc.batch b left join hfc.sunspots s on s.batch_id = b.id group by 1"
    ).fetchall())


def test_same_night_five_times_same_counts_untouched_nights_keep_their_ids(conn):
    assert sdoss_night(N1).load(conn).ok
    assert sdoss_night(N3, spots=4).load(conn).ok
    q = ("select o.id_observations, s.id_sunspot, s.local_id from hfc.sunspots s join hfc.observations o "
         "on o.id_observations = s.observations_id_ic join hfc.batch b on b.id = s.batch_id where b.night = %s "
         "order by 1, 2")
    others = {n: conn.execute(q, (n,)).fetchall() for n in (N1, N3)}
    night = sdoss_night(N2, spots=5)
    seen = []
    for _ in range(5):
        report = night.load(conn)
        assert report.ok
        tables = {t: conn.execute(f"select count(*) from hfc.{t}").fetchone()[0]
                  for t in ("observations", "sunspots", "observatory", "frc_info", "batch", "batch_file")}
        seen.append((report.rows, tables, counts_by_night(conn)))
    assert all(s == seen[0] for s in seen)
    assert seen[0][1] == {"observations": 6, "sunspots": 12, "observatory": 2, "frc_info": 1, "batch": 3,
                          "batch_file": 15}
    assert {n: conn.execute(q, (n,)).fetchall() for n in (N1, N3)} == others


def test_a_failing_load_keeps_the_previous_batch(conn, monkeypatch):
    night = sdoss_night(N1)
    first = night.load(conn)
    rows = conn.execute("select id_sunspot from hfc.sunspots order by 1").fetchall()

    def broken(*args, **kwargs):
        raise ConnectionError("archive went away (simulated)")

    bigger = sdoss_night(N1, spots=9)
    monkeypatch.setattr(tables, "reserve_ids", broken)
    with pytest.raises(ConnectionError):
        bigger.load(conn)
    conn.rollback()
    assert conn.execute("select id_sunspot from hfc.sunspots order by 1").fetchall() == rows
    assert conn.execute("select id from hfc.batch").fetchall() == [(first.batch_id,)]


def test_two_nights_loaded_concurrently(fresh_db):
    nights = {N1: sdoss_night(N1, spots=30), N2: sdoss_night(N2, spots=20), N3: sdoss_night(N3, spots=10)}
    errors, reports = [], {}
    barrier = threading.Barrier(len(nights))

    def run(n):
        try:
            with psycopg.connect(fresh_db) as c:
                barrier.wait()
                reports[n] = nights[n].load(c)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in nights]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(r.ok for r in reports.values())
    with psycopg.connect(fresh_db) as c:
        assert counts_by_night(c) == {N1: 30, N2: 20, N3: 10}
        # One observatory pair and one frc_info for all: matched by content under concurrency.
        assert c.execute("select (select count(*) from hfc.observatory), (select count(*) from hfc.frc_info)"
                         ).fetchone() == (2, 1)
        assert c.execute("select count(*) from hfc.view_sp_hqi").fetchone() == (60,)
