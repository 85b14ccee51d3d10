"""The HQI operations on a real catalogue (the site's PostgreSQL, migrated by the project's own
migrations, one SDOSS night loaded by the loader): the rows and types a client gets, paging, and
the bounds that keep SQLSelect's fragments harmless (timeout, one statement, one page, row size,
nothing outliving a request)."""

from __future__ import annotations

import datetime as dt
import time

import psycopg
import pytest
from test_catalogue_load import Night

from hfc_tasks.catalogue import schema
from hfc_tasks.hqi.reader import Reader

pytestmark = pytest.mark.site

NIGHT = dt.date(2024, 3, 1)
DAY = (["2024-03-01T00:00:00"], ["2024-03-02T00:00:00"])


@pytest.fixture
def catalogue(fresh_db):
    with psycopg.connect(fresh_db) as conn:
        schema.upgrade(conn)
        Night(NIGHT, spots=(3, 2, 4)).load(conn)
        conn.commit()
    return fresh_db


@pytest.fixture
def reader(catalogue):
    r = Reader(catalogue, statement_timeout_s=2)
    yield r
    r.close()


def typed(result) -> list[tuple]:
    """The rows as a client types them from the fields (the reader gives PostgreSQL's text)."""
    def one(field, v):
        if v is None:
            return None
        if field.timestamp:
            return dt.datetime.fromisoformat(v)
        if field.datatype in ("short", "int", "long"):
            return int(v)
        if field.datatype in ("float", "double"):
            return float(v)
        return v
    return [tuple(one(f, v) for f, v in zip(result.fields, row, strict=True)) for row in result.rows]


def spots(dsn) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("select date_obs, id_sunspot, feat_x_pix, feat_area_deg2 from hfc.view_sp_hqi "
                            "order by date_obs, id_sunspot").fetchall()


def test_table_names_are_the_served_ones_only(reader):
    answer = reader.table_names()
    names = [r[0] for r in answer.results[0].rows]
    assert answer.status == "OK" and "VIEW_SP_HQI" in names and "FRC_INFO" in names
    assert not any(n in names for n in ("SUNSPOTS", "BATCH", "NIGHT_CLAIM", "SCHEMA_MIGRATIONS"))


def test_sql_select_gives_the_loaded_rows_typed(reader, catalogue):
    answer = reader.sql_select("DATE_OBS, ID_SUNSPOT, FEAT_X_PIX, FEAT_AREA_DEG2", ["view_sp_hqi"],
                               "FEAT_X_PIX > 0", "DATE_OBS, ID_SUNSPOT", None, None)
    assert answer.status == "OK", answer.error
    result = answer.results[0]
    assert result.table == "VIEW_SP_HQI"
    assert [(f.name, f.datatype, f.timestamp) for f in result.fields] == [
        ("DATE_OBS", "char", True), ("ID_SUNSPOT", "int", False), ("FEAT_X_PIX", "int", False),
        ("FEAT_AREA_DEG2", "double", False)]
    assert typed(result) == spots(catalogue) and len(result.rows) == 9
    assert all(isinstance(v, str) for row in result.rows for v in row)  # PostgreSQL's text, for the VOTable


def test_a_page_and_its_overflow_then_the_next_pages_cover_every_row_once(reader, catalogue):
    expected = spots(catalogue)
    seen = []
    for start in (0, 4, 8):
        answer = reader.time_query(*DAY, ["VIEW_SP_HQI"], 4, start)
        assert answer.status == ("OVERFLOW" if start < 8 else "OK"), answer.error
        names = [f.name for f in answer.results[0].fields]
        at = names.index("DATE_OBS"), names.index("ID_SUNSPOT")
        seen += [(r[at[0]], r[at[1]]) for r in typed(answer.results[0])]
    assert seen == [(d, i) for d, i, *_ in expected]  # in order: the time, then the identifier


def test_query_applies_the_hqi_where_and_the_time_rule(reader, catalogue):
    answer = reader.query(*DAY, ["VIEW_SP_HQI"], "FEAT_X_PIX,21/31")
    assert answer.status == "OK", answer.error
    at = [f.name for f in answer.results[0].fields].index("FEAT_X_PIX")
    assert answer.results[0].rows and all(21 <= row[at] <= 31 for row in typed(answer.results[0]))
    assert len(answer.results[0].rows) == sum(1 for s in spots(catalogue) if 21 <= s[2] <= 31)
    other_day = reader.time_query(["2024-03-02T00:00:00"], ["2024-03-03T00:00:00"], ["VIEW_SP_HQI"])
    assert other_day.status == "OK" and other_day.results[0].rows == []


def test_fragments_keep_their_percent_signs_and_comments_cannot_lift_the_limit(reader):
    like = reader.sql_select("CODE", ["VIEW_SP_HQI"], "CODE like '%OSS%'", None, None, None)
    assert like.status == "OK", like.error
    assert len(like.results[0].rows) == 9
    commented = reader.sql_select("*", ["VIEW_SP_HQI"], None, "DATE_OBS --", 1, None)
    assert commented.status == "OVERFLOW" and len(commented.results[0].rows) == 1


def test_a_second_statement_is_refused_and_nothing_is_deleted(reader, catalogue):
    before = spots(catalogue)
    answer = reader.sql_select("*", ["VIEW_SP_HQI"], "true; delete from hfc.sunspots", None, None, None)
    assert answer.status == "ERROR" and "syntax error" in answer.error
    assert spots(catalogue) == before


def test_a_query_longer_than_the_timeout_is_stopped_and_a_session_setting_does_not_outlive_its_request(reader):
    began = time.monotonic()
    slow = reader.sql_select("pg_sleep(5)", ["FRC_INFO"], None, None, None, None)
    assert slow.status == "ERROR" and "longer than the service's limit of 2 s" in slow.error
    assert time.monotonic() - began < 4.5
    # A fragment lifting the timeout for the session: rolled back with its request.
    lifted = reader.sql_select("set_config('statement_timeout', '0', false) as t", ["FRC_INFO"], None, None, None,
                               None)
    assert lifted.status == "OK", lifted.error
    began = time.monotonic()
    again = reader.sql_select("pg_sleep(5)", ["FRC_INFO"], None, None, None, None)
    assert again.status == "ERROR" and time.monotonic() - began < 4.5


def test_a_huge_row_is_stopped_in_the_database(reader):
    answer = reader.sql_select("repeat('x', 5000000) as big", ["FRC_INFO"], None, None, None, None)
    assert answer.status == "ERROR"
    assert "larger than this service's limit of 262144 bytes" in answer.error
    assert reader.table_names().status == "OK"  # the connection is still usable


def test_an_answer_larger_than_its_bound_is_an_error_not_a_memory_spike(catalogue):
    r = Reader(catalogue, max_answer_bytes=2000)
    try:
        answer = r.sql_select("repeat('y', 500) as wide", ["VIEW_SP_HQI"], None, None, None, None)
        assert answer.status == "ERROR" and "larger than 2000 bytes" in answer.error
        assert "ask fewer rows" in answer.error
    finally:
        r.close()


def test_unknown_table_and_bad_where_name_what_to_fix(reader):
    unknown = reader.time_query(*DAY, ["VIEW_XX_HQI"])
    assert unknown.status == "ERROR" and "unknown table 'VIEW_XX_HQI'" in unknown.error
    assert "VIEW_SP_HQI" in unknown.error
    bad = reader.query(*DAY, ["VIEW_SP_HQI"], "FEAT_X_PIX,abc")
    assert bad.status == "ERROR" and "FEAT_X_PIX" in bad.error and "abc" in bad.error
    backwards = reader.time_query(["2024-03-02T00:00:00"], ["2024-03-01T00:00:00"], ["VIEW_SP_HQI"])
    assert backwards.status == "ERROR" and "before" in backwards.error


@pytest.fixture
def role_reader(catalogue, site):
    """The reader as the service runs it: logged in as the read-only role hfc_hqi."""
    from urllib.parse import urlsplit, urlunsplit

    from hfc_tasks.catalogue import readers_role

    with psycopg.connect(catalogue) as conn:
        readers_role.ensure(conn)  # this database's grants (the site made the roles)
        conn.commit()
    name = urlsplit(catalogue).path
    r = Reader(urlunsplit(urlsplit(site["HFC_HQI_DSN"])._replace(path=name)), statement_timeout_s=2)
    yield r
    r.close()


@pytest.mark.parametrize("what, where", [
    ("(select count(*) from hfc.batch) as n", None),
    ("*", "exists (select 1 from hfc.sunspots)"),
    ("(select count(*) from hfc.night_claim) as n", None),
    ("(select count(*) from pg_catalog.pg_authid) as n", None),
])
def test_as_the_service_role_a_fragment_cannot_read_beyond_the_served_views(role_reader, what, where):
    answer = role_reader.sql_select(what, ["VIEW_SP_HQI"], where, None, None, None)
    assert answer.status == "ERROR" and "permission denied" in answer.error, answer.error
    assert "getTableNames" in answer.error


def test_as_the_service_role_a_fragment_cannot_write(role_reader, catalogue):
    before = spots(catalogue)
    for what in ("nextval('hfc.batch_id_seq') as n", "setval('hfc.batch_id_seq', 1) as n",
                 "pg_advisory_lock(1) as l, (select count(*) from hfc.batch) as n"):
        answer = role_reader.sql_select(what, ["VIEW_SP_HQI"], None, None, 1, None)
        assert answer.status == "ERROR", what
    assert spots(catalogue) == before
    ok = role_reader.sql_select("COUNT(*) AS N", ["VIEW_SP_HQI"], None, None, None, None)
    assert ok.status == "OK" and typed(ok.results[0]) == [(9,)]


def test_a_session_lock_taken_by_a_fragment_is_released_with_its_request(role_reader, catalogue):
    """pg_advisory_lock in a fragment outlives a rollback: on the migration lock's key it would
    block every later `hfc db upgrade` and load that has a migration to apply."""
    key = schema.MIGRATION_LOCK_KEY
    answer = role_reader.sql_select(f"pg_advisory_lock({key}) as l", ["FRC_INFO"], None, None, None, None)
    assert answer.status == "OK", answer.error
    with psycopg.connect(catalogue, autocommit=True) as other:
        assert other.execute("select pg_try_advisory_lock(%s)", (key,)).fetchone()[0] is True


def test_a_view_made_after_the_service_started_is_served_at_once(empty_db):
    """The catalogue is migrated (a deploy) after the service read its (empty) table list."""
    r = Reader(empty_db)
    try:
        assert r.table_names().results[0].rows == []
        with psycopg.connect(empty_db) as conn:
            schema.upgrade(conn)
            Night(NIGHT).load(conn)
            conn.commit()
        answer = r.time_query(*DAY, ["VIEW_SP_HQI"])
        assert answer.status == "OK", answer.error
        assert len(answer.results[0].rows) == 5
    finally:
        r.close()


def test_times_with_a_zone_come_in_utc_and_twice_the_same_name_still_reads(reader):
    zoned = reader.sql_select("TIMESTAMPTZ '2024-03-01 12:00:00+02' AS T, 1.5::real AS R, true AS B",
                              ["FRC_INFO"], None, None, 1, None)
    assert zoned.status in ("OK", "OVERFLOW"), zoned.error
    assert [(f.name, f.datatype, f.timestamp) for f in zoned.results[0].fields] == [
        ("T", "char", True), ("R", "float", False), ("B", "boolean", False)]
    assert zoned.results[0].rows == [("2024-03-01 10:00:00", "1.5", "true")]
    twice = reader.sql_select("DATE_OBS, DATE_OBS", ["VIEW_SP_HQI"], None, "DATE_OBS", 1, None)
    assert twice.status == "OVERFLOW", twice.error
    assert [f.name for f in twice.results[0].fields] == ["DATE_OBS", "DATE_OBS"]
    assert twice.results[0].rows == [(dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 1))]
