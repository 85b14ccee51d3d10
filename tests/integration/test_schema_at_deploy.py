"""Migrations run at deploy only (issue 14): a night's claim on a catalogue whose schema is behind
fails with "run `hfc db upgrade`" and creates nothing (no DDL from a task); after the deploy step
it claims. (The load's own check: test_catalogue_cli.py.)"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from hfc_tasks import claims
from hfc_tasks.catalogue import schema

pytestmark = pytest.mark.site

RUN = claims.RunRef("hfc_nightly", "scheduled__2024-03-01T00:00:00+00:00")


def test_a_claim_on_a_schema_behind_fails_and_creates_nothing(empty_db):
    with psycopg.connect(empty_db, autocommit=True) as conn:  # claim commits its own transactions
        with pytest.raises(schema.SchemaBehind, match=r"catalogue schema is behind \(pending: 0001_core, .*"
                                                      r"run `hfc db upgrade`"):
            claims.claim(conn, "demo-sunspots", dt.date(2024, 3, 1), RUN, lambda run: False)
        assert conn.execute("select to_regnamespace('hfc')").fetchone()[0] is None
        schema.upgrade(conn)  # the deploy step
        assert claims.claim(conn, "demo-sunspots", dt.date(2024, 3, 1), RUN, lambda run: False) is None
        assert claims.holder(conn, "demo-sunspots", dt.date(2024, 3, 1)) == RUN
