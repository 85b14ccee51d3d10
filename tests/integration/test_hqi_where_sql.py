"""The SQL that hfc_tasks.hqi.where builds, run by the real PostgreSQL of the site: the values
arrive typed, LIKE escaping holds, and a hostile value stays a value."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from hfc_tasks.hqi.where import Column, Sql, columns_by_name, parse_where, time_condition

pytestmark = pytest.mark.site

COLS = columns_by_name([
    Column("NAME", "name", "text"), Column("AREA", "area", "float"), Column("ID", "id", "int"),
    Column("DATE_OBS", "date_obs", "datetime"), Column("DATE_END", "date_end", "datetime"),
])
ROWS = [
    (1, "SDO_HMI", 12.5, dt.datetime(2024, 3, 1, 10), dt.datetime(2024, 3, 1, 11)),
    (2, "SDO%AIA", None, dt.datetime(2024, 3, 1, 23), dt.datetime(2024, 3, 2, 1)),
    (3, "x') OR ('1'='1", 3.0, dt.datetime(2024, 3, 5), dt.datetime(2024, 3, 5, 1)),
]


@pytest.fixture
def db(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("create table t (id int, name text, area double precision, date_obs timestamp, "
                     "date_end timestamp)")
        with conn.cursor() as cur:
            cur.executemany("insert into t values (%s, %s, %s, %s, %s)", ROWS)
        yield conn


def ids(conn, sql: Sql | None) -> list[int]:
    where = f" where {sql.text}" if sql else ""
    return [r[0] for r in conn.execute(f"select id from t{where} order by id", sql.params if sql else ())]


@pytest.mark.parametrize(("where", "expected"), [
    ("ID,1,3", [1, 3]),
    ("AREA,5/", [1]),
    ("AREA,null", [2]),
    ("AREA,!null;ID,/2", [1]),
    ("NAME,SDO*", [1, 2]),
    ("NAME,*%*", [2]),  # '%' is a literal character, not a wildcard
    ("NAME,SDO_*", [1]),  # '_' too
    ("NAME,x') OR ('1'='1", [3]),  # a hostile value is just a value
    ("DATE_OBS,2024-03-01T00:00:00/2024-03-01T12:00:00", [1]),
])
def test_where_on_postgres(db, where, expected):
    assert ids(db, parse_where(where, COLS)) == expected


def test_time_rule_on_postgres(db):
    day = time_condition(["2024-03-01T00:00:00"], ["2024-03-02T00:00:00"], COLS["DATE_OBS"], COLS["DATE_END"])
    assert ids(db, day) == [1]  # row 2 ends after the interval
    two = time_condition(["2024-03-01", "2024-03-05"], ["2024-03-02T02:00:00", "2024-03-06"],
                         COLS["DATE_OBS"], COLS["DATE_END"])
    assert ids(db, two) == [1, 2, 3]
