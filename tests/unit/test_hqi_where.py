"""The HQI WHERE syntax and time rule into parameterised SQL (hfc_tasks.hqi.where)."""

from __future__ import annotations

import datetime as dt

import pytest

from hfc_tasks.hqi.where import (
    Column,
    HqiError,
    columns_by_name,
    page,
    parse_where,
    time_condition,
)

COLS = columns_by_name([
    Column("OBSERVAT", "observat", "text"),
    Column("FEAT_AREA_DEG2", "feat_area_deg2", "float"),
    Column("SUNSPOT_ID", "sunspot_id", "int"),
    Column("DATE_OBS", "date_obs", "datetime"),
    Column("DATE_END", "date_end", "datetime"),
])


def test_pyhfc_examples_equality_open_range_and_and():
    # The example of pyhfc's HQIClient.query docstring, as hqi_where writes it.
    sql = parse_where("OBSERVAT,SDO;FEAT_AREA_DEG2,10/", COLS)
    assert sql.text == '("observat" = %s) AND ("feat_area_deg2" >= %s)'
    assert sql.params == ("SDO", 10.0)


def test_values_or_between_like_and_nulls():
    one_of = parse_where("sunspot_id,1,2,3", COLS)
    assert one_of.text == '("sunspot_id" = %s) OR ("sunspot_id" = %s) OR ("sunspot_id" = %s)'
    assert one_of.params == (1, 2, 3)
    between = parse_where("DATE_OBS,2024-03-01T00:00:00/2024-03-02T12:00:00", COLS)
    assert between.text == '"date_obs" BETWEEN %s AND %s'
    assert between.params == (dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 2, 12))
    assert parse_where("FEAT_AREA_DEG2,/5.5", COLS).params == (5.5,)
    like = parse_where("OBSERVAT,*SD_O%*", COLS)
    assert like.text == '"observat" LIKE %s' and like.params == ("%SD\\_O\\%%",)
    assert parse_where("OBSERVAT,null", COLS).text == '"observat" IS NULL'
    assert parse_where("OBSERVAT,!NULL;", COLS).text == '"observat" IS NOT NULL'
    assert parse_where("  ", COLS) is None and parse_where(None, COLS) is None


@pytest.mark.parametrize(("where", "message"), [
    ("NOPE,1", "unknown field 'NOPE' of VIEW_SP_HQI; its fields are: DATE_END, DATE_OBS,"),
    ('OBSERVAT" OR 1=1 --,1', "unknown field 'OBSERVAT\" OR 1=1 --'"),
    ("OBSERVAT,x;DELETE FROM hfc.batch", "condition #2 'DELETE FROM hfc.batch' has no value"),
    ("SUNSPOT_ID,1 OR 1=1", "field SUNSPOT_ID: '1 OR 1=1' is not a int value"),
    ("FEAT_AREA_DEG2,abc/", "is not a float value"),
    ("DATE_OBS,yesterday/", "is not a date"),
    ("SUNSPOT_ID,/", "has no bound"),
    ("SUNSPOT_ID,*1*", "the wildcard '*' applies to text fields"),
    ("OBSERVAT", "has no value (expected FIELD,value)"),
    ("OBSERVAT,", "empty value"),
])
def test_bad_conditions_are_errors_naming_what_and_where(where, message):
    with pytest.raises(HqiError) as err:
        parse_where(where, COLS, "VIEW_SP_HQI")
    assert message in str(err.value)


def test_nothing_of_the_request_reaches_the_sql_text_but_known_column_names():
    sql = parse_where("OBSERVAT,x') OR ('1'='1", COLS)
    assert sql.text == '"observat" = %s' and sql.params == ("x') OR ('1'='1",)


def test_time_rule_pairs_are_ored_and_checked():
    sql = time_condition(["2024-03-01T00:00:00", "2024-04-01"], ["2024-03-02T00:00:00Z", "2024-04-02 06:00"],
                         COLS["DATE_OBS"], COLS["DATE_END"])
    assert sql.text == '("date_obs" >= %s AND "date_end" <= %s) OR ("date_obs" >= %s AND "date_end" <= %s)'
    assert sql.params == (dt.datetime(2024, 3, 1), dt.datetime(2024, 3, 2), dt.datetime(2024, 4, 1),
                          dt.datetime(2024, 4, 2, 6))
    with pytest.raises(HqiError, match="ENDTIME #1 '2024-01-01' is before STARTTIME #1"):
        time_condition(["2024-03-01"], ["2024-01-01"], COLS["DATE_OBS"], COLS["DATE_END"])
    with pytest.raises(HqiError, match="give them in pairs"):
        time_condition(["2024-03-01"], [], COLS["DATE_OBS"], COLS["DATE_END"])


def test_page_caps_max_records_like_the_original_service():
    assert page(None, None) == (10_000, 0)
    assert page("50", "100") == (50, 100)
    assert page(1_000_000, 0) == (10_000, 0)
    with pytest.raises(HqiError, match="MAXRECORDS 'ten' is not a whole number"):
        page("ten", 0)
    with pytest.raises(HqiError, match="STARTINDEX -1 is negative"):
        page(5, -1)
