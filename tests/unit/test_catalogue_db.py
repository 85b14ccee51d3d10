"""The catalogue connection: PostgresHook with psycopg 3, every libpq extra passed to libpq."""

from __future__ import annotations

import json

import psycopg
import pytest
from airflow.providers.postgres.hooks import postgres as provider

from hfc_tasks.provider import catalogue_db


def test_the_provider_uses_psycopg_3():
    # With SQLAlchemy < 2 the provider silently falls back to psycopg2 (another driver, other extras).
    assert provider.USE_PSYCOPG3


def test_every_extra_reaches_psycopg_and_the_fields_too(monkeypatch):
    extra = {"sslmode": "verify-full", "sslrootcert": "/site/ca.crt", "options": "-c statement_timeout=5s",
             "connect_timeout": 7, "target_session_attrs": "read-write"}
    monkeypatch.setenv("AIRFLOW_CONN_HFC_UNIT_CATALOGUE", json.dumps({
        "conn_type": "postgres", "host": "db.example", "port": 6432, "login": "hfc", "password": "pw",
        "extra": extra}))
    seen = {}

    def connect(**kwargs):
        seen.update(kwargs)
        raise psycopg.OperationalError("connection failed: certificate verify failed")

    monkeypatch.setattr(psycopg.connection.Connection, "connect", staticmethod(connect))
    with pytest.raises(catalogue_db.CatalogueConnectionError) as err:
        catalogue_db.catalogue_connect("hfc_unit_catalogue")
    assert seen == {"host": "db.example", "port": 6432, "user": "hfc", "password": "pw", "dbname": "hfc",
                    "application_name": "hfc-pipeline", **extra}
    assert str(err.value) == (
        "cannot connect to the catalogue through the Airflow connection 'hfc_unit_catalogue' "
        "(db.example:6432/hfc, sslmode=verify-full, sslrootcert=/site/ca.crt): "
        "connection failed: certificate verify failed")


def test_an_unknown_connection_id_says_how_to_define_it():
    with pytest.raises(catalogue_db.CatalogueConnectionError, match=r"no Airflow connection 'hfc_nowhere' "
                       r"for the catalogue: define it as AIRFLOW_CONN_HFC_NOWHERE"):
        catalogue_db.catalogue_connect("hfc_nowhere")
