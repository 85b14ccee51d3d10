"""The HQI roles' SQL, without a database: one list of served names (the migration's pattern is the
HQI's), role names and verifiers checked before they reach SQL, what `hfc db upgrade` says.
Run on PostgreSQL: tests/integration/test_hqi_reader_role.py."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from hfc_tasks.catalogue import readers_role
from hfc_tasks.hqi.tables import SERVED

VERIFIER = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0$c3RvcmVka2V5:c2VydmVya2V5"


def test_the_migration_serves_the_names_the_hqi_serves():
    sql = (resources.files("hfc_tasks.catalogue") / "migrations" / "0006_hqi_reader.sql").read_text()
    assert re.findall(r"relname ~ '([^']+)'", sql) == [SERVED.pattern]
    assert f"'{SERVED.pattern}'" in readers_role.ensure_sql()
    for name, served in (("frc_info", True), ("view_sp_hqi", True), ("view_t3_gui", True), ("night_claim", False),
                         ("batch", False), ("sunspots", False), ("view_sp_hqi_x", False), ("schema_migrations", False)):
        assert bool(SERVED.match(name)) is served, name


@pytest.mark.parametrize("name", ["", "HFC_HQI", "hfc-hqi", "x" * 64, "a;drop role x", "hfc_hqi_reader", "1abc"])
def test_role_names_are_plain(name):
    with pytest.raises(readers_role.ReaderRoleError):
        readers_role.ensure_sql(name)


@pytest.mark.parametrize("verifier", ["secret", "md5abc", VERIFIER + "'", "SCRAM-SHA-256$4096:a$b"])
def test_only_a_scram_verifier_is_sent_as_the_password(verifier):
    with pytest.raises(readers_role.ReaderRoleError):
        readers_role.ensure_sql("hfc_hqi", verifier)


def test_the_sql_names_the_role_its_settings_and_the_verifier():
    sql = readers_role.ensure_sql("hfc_hqi_x", VERIFIER)
    assert "login constant text := 'hfc_hqi_x';" in sql and f"verifier constant text := '{VERIFIER}';" in sql
    for key, value in readers_role.SETTINGS:
        assert f"'{key}={value}'" in sql
    assert "verifier constant text := null;" in readers_role.ensure_sql("hfc_hqi_x")


def test_what_the_upgrade_says():
    fresh = readers_role.Outcome("hfc_hqi", ["created role hfc_hqi", "hfc_hqi made a member of hfc_hqi_reader"])
    assert fresh.lines()[0] == "HQI roles: created role hfc_hqi, hfc_hqi made a member of hfc_hqi_reader"
    assert "created WITHOUT a password" in fresh.lines()[1]
    same = readers_role.Outcome("hfc_hqi", [])
    assert same.lines() == ["HQI roles: hfc_hqi_reader and hfc_hqi are up to date",
                            "HQI role hfc_hqi: password unchanged (none given)"]
    assert readers_role.Outcome("hfc_hqi", [], password_given=True).lines()[1] == "HQI role hfc_hqi: password set"
