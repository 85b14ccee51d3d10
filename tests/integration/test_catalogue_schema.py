"""The catalogue schema against the HFC V12 listing: every table, every view, keys and cascades."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from hfc_tasks.catalogue import schema, upgrade

pytestmark = pytest.mark.site

V12 = json.loads((Path(__file__).parents[1] / "data" / "hfc_v12_columns.json").read_text())
PIPELINE_COLUMNS = {"batch_id", "local_id", "src_file"}


@pytest.fixture
def db(fresh_db):
    with psycopg.connect(fresh_db) as conn:
        upgrade(conn)
        yield conn


def columns(conn, name: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "select column_name from information_schema.columns where table_schema = 'hfc' and table_name = %s"
            " order by ordinal_position",
            (name,),
        )
    ]


def test_all_shipped_migrations_apply_in_order(db):
    applied = [r[0] for r in db.execute("select version from hfc.schema_migrations order by version")]
    assert applied == [m.version for m in schema.migrations()]
    assert applied[:3] == ["0001_core", "0002_full_v12", "0003_source_file"]
    assert upgrade(db) == []


@pytest.mark.parametrize("table", sorted(V12["tables"]))
def test_every_v12_table_has_its_columns_in_order(db, table):
    got = columns(db, table)
    assert [c for c in got if c not in PIPELINE_COLUMNS] == V12["tables"][table]


@pytest.mark.parametrize("view", sorted(V12["views"]))
def test_every_v12_view_has_its_columns_in_order(db, view):
    assert columns(db, view) == V12["views"][view]
    db.execute(f"select * from hfc.{view} limit 1")  # and it runs


def test_counts_of_tables_and_views(db):
    kinds = dict(
        db.execute(
            "select table_type, count(*) from information_schema.tables where table_schema = 'hfc' group by 1"
        ).fetchall()
    )
    # 21 V12 tables + sunspots_tracking + 5 pipeline tables (batch, batch_file, rejected_file,
    # schema_migrations, night_claim); 18 V12 views.
    assert kinds == {"BASE TABLE": 21 + 1 + 5, "VIEW": 18}


def test_types_are_proper(db):
    types = dict(
        db.execute(
            "select table_name || '.' || column_name, data_type from information_schema.columns "
            "where table_schema = 'hfc'"
        ).fetchall()
    )
    assert types["observations.date_obs"] == "timestamp without time zone"
    assert types["sunspots.feat_area_deg2"] == "double precision"
    assert types["type_iii.cc_x_utc"] == "double precision"
    assert types["type_ii.ske_cc_x_utc"] == "timestamp without time zone"
    assert types["prominences.cc_x_pix"] == "text"
    assert types["pp_output.efit"] == "smallint"
    assert types["activeregions.feat_x_pix"] == "integer"


def test_cascade_rules_of_the_original(db):
    rules = dict(
        db.execute(
            """
            select tc.table_name || '.' || kcu.column_name, rc.delete_rule
            from information_schema.referential_constraints rc
            join information_schema.table_constraints tc
              on tc.constraint_name = rc.constraint_name and tc.table_schema = 'hfc'
            join information_schema.key_column_usage kcu
              on kcu.constraint_name = rc.constraint_name and kcu.table_schema = 'hfc'
            """
        ).fetchall()
    )
    cascade = {k for k, v in rules.items() if v == "CASCADE" and not k.endswith(".batch_id")}
    assert cascade == {
        "activeregions_tracking.ar_id",
        "coronalholes_tracking.ch_id",
        "filaments.pp_output_id",
        "filaments_tracking.fil_id",
        "noaa_ar.ar_id",
        "noaa_ar.noaa_id",
        "noaa_sp.noaa_id",
        "noaa_sp.sunspot_id",
        "pp_output.observations_id",
        "prominences.pp_output_id",
        "sunspots.observations_id_ic",
        "sunspots_tracking.sunspot_id",
    }
    assert rules["sunspots.observations_id_m"] == "NO ACTION"
    assert rules["coronalholes.chgroups_id"] == "NO ACTION"
    # Every table loaded from FRC files points at its batch, and the batch delete cascades.
    owned = {k.split(".")[0] for k, v in rules.items() if k.endswith(".batch_id") and v == "CASCADE"}
    assert {"observations", "sunspots", "activeregions", "coronalholes", "filaments", "pp_output",
            "prominences", "radiosources", "type_ii", "type_iii", "filaments_tracking",
            "activeregions_tracking", "coronalholes_tracking", "sunspots_tracking"} <= owned
    # NOAA rows and links an FRC writes are its batch's too (0009; nullable: imported ones own none).
    assert {"noaa", "noaa_sp", "noaa_ar", "chgroups"} <= owned


def test_indexes_on_dates_and_file_names(db):
    indexed = {
        (r[0], r[1])
        for r in db.execute(
            """
            select t.relname, a.attname from pg_index i
            join pg_class t on t.oid = i.indrelid join pg_namespace n on n.oid = t.relnamespace
            join pg_attribute a on a.attrelid = t.oid and a.attnum = i.indkey[0]
            where n.nspname = 'hfc'
            """
        )
    }
    for pair in [
        ("observations", "date_obs"),
        ("observations", "loc_filename"),
        ("observations", "filename"),
        ("activeregions", "feat_date"),
        ("coronalholes", "feat_date"),
        ("sunspots", "feat_filename"),
        ("type_iii", "time_start"),
        ("filaments", "feat_filename"),
        ("filaments_tracking", "fil_id"),
        ("pp_output", "pr_locfname"),
        ("batch_file", "name"),
    ]:
        assert pair in indexed, pair
