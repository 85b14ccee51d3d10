"""The HQI's served tables, read from a catalogue migrated by the project's own migrations."""

from __future__ import annotations

import psycopg
import pytest

from hfc_tasks.catalogue import schema
from hfc_tasks.hqi import tables

pytestmark = pytest.mark.site


def test_the_served_tables_of_the_real_catalogue(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        schema.upgrade(conn)
        served = tables.load(conn)
    assert "FRC_INFO" in served and "SUNSPOTS" not in served and "NIGHT_CLAIM" not in served
    views = {n for n in served if n.startswith("VIEW_")}
    assert {"VIEW_SP_HQI", "VIEW_AR_HQI", "VIEW_FIL_HQI", "VIEW_T3_HQI", "VIEW_T3_GUI", "VIEW_SP_GUI"} <= views
    assert all(n.endswith(("_HQI", "_GUI")) for n in views)
    sp = served["VIEW_SP_HQI"]
    assert [c.name for c in sp.time_columns] == ["DATE_OBS", "DATE_END"]
    assert sp.columns["DATE_OBS"].type == "datetime"
    assert [c.name for c in served["VIEW_T3_HQI"].time_columns] == ["TIME_START", "TIME_END"]
    # every column of every served table has a type the WHERE syntax knows how to convert to
    assert {c.type for t in served.values() for c in t.columns.values()} <= {"int", "float", "text", "datetime",
                                                                              "bool"}
