"""Pure logic of the run claims (issue 16 item 2); the SQL is tested on the real PostgreSQL in
tests/integration/test_night_claims.py and the whole on the scheduler in tests/e2e/test_night_claim.py."""

from __future__ import annotations

import datetime as dt

from hfc_tasks.claims import ClaimRefused, RunRef, decide

ME = RunRef("hfc_nightly", "manual__2026-12-02T01:00:00+00:00")
OTHER = RunRef("hfc_nightly", "scheduled__2026-12-01T00:00:00+00:00")


def never():
    raise AssertionError("the holder's state must not be asked")


def test_free_or_own_claim_is_taken_without_asking_airflow():
    assert decide(ME, None, never) == "take"
    assert decide(ME, RunRef(ME.dag_id, ME.run_id), never) == "keep"


def test_claim_of_another_run_depends_on_whether_it_is_active():
    assert decide(ME, OTHER, lambda: True) == "refuse"
    assert decide(ME, OTHER, lambda: False) == "take"
    # the same run id in another DAG is another run
    assert decide(ME, RunRef("other_dag", ME.run_id), lambda: True) == "refuse"


def test_refusal_names_frc_night_and_run():
    exc = ClaimRefused("demo-sunspots", dt.date(2024, 3, 1), OTHER,
                       dt.datetime(2026, 12, 2, 0, 5, tzinfo=dt.UTC))
    text = str(exc)
    assert text.startswith(f"night 2024-03-01 of FRC demo-sunspots is being processed by run {OTHER.run_id} "
                           "(DAG hfc_nightly) since 2026-12-02 00:05:00 UTC")
    assert "submits, archives or loads anything" in text
