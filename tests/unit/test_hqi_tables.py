"""Which catalogue tables the HQI serves, with which types and time columns (pure)."""

from __future__ import annotations

import pytest

from hfc_tasks.hqi.tables import served_tables, table
from hfc_tasks.hqi.where import HqiError

ROWS = [
    ("frc_info", "id_frc_info", "integer"), ("frc_info", "code", "character varying"),
    ("view_sp_hqi", "date_obs", "timestamp without time zone"),
    ("view_sp_hqi", "date_end", "timestamp without time zone"),
    ("view_sp_hqi", "feat_area_deg2", "double precision"), ("view_sp_hqi", "enc_met", "text"),
    ("view_t3_hqi", "date_obs", "timestamp without time zone"),
    ("view_t3_hqi", "date_end", "timestamp without time zone"),
    ("view_t3_hqi", "time_start", "timestamp without time zone"),
    ("view_t3_hqi", "time_end", "timestamp without time zone"),
    ("sunspots", "id_sunspots", "integer"),  # a base table: not served
    ("night_claim", "frc", "text"),  # the pipeline's own bookkeeping: not served
]


def test_served_tables_types_and_time_columns():
    tables = served_tables(ROWS)
    assert list(tables) == ["FRC_INFO", "VIEW_SP_HQI", "VIEW_T3_HQI"]
    sp = tables["VIEW_SP_HQI"]
    assert [(c.name, c.type) for c in sp.columns.values()] == [
        ("DATE_OBS", "datetime"), ("DATE_END", "datetime"), ("FEAT_AREA_DEG2", "float"), ("ENC_MET", "text")]
    assert [c.name for c in sp.time_columns] == ["DATE_OBS", "DATE_END"]
    assert [c.name for c in tables["VIEW_T3_HQI"].time_columns] == ["TIME_START", "TIME_END"]
    assert tables["FRC_INFO"].time_columns is None
    assert tables["FRC_INFO"].columns["ID_FRC_INFO"].type == "int"
    assert sp.ident == '"hfc"."view_sp_hqi"'


def test_a_table_is_found_by_its_unquoted_name_in_any_case():
    tables = served_tables(ROWS)
    assert table(tables, " view_sp_hqi ").sql_name == "view_sp_hqi"
    with pytest.raises(HqiError, match="unknown table 'SUNSPOTS'; the tables are: FRC_INFO, VIEW_SP_HQI, VIEW_T3_HQI"):
        table(tables, "SUNSPOTS")
