"""What a task knows of its DAG run, read the same way by every stage: the night it works on
(:func:`night_of`, the Airflow face of :func:`hfc_tasks.products.night_of_run`), the run's claim
on (FRC, night) (:func:`claim_night`, :func:`release_night`; the rule is :mod:`hfc_tasks.claims`)
and the submit task's chain of tries (:func:`submit_attempt`); and what every HFC DAG's tasks
share (:func:`stage_default_args`)."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from hfc_tasks import products
from hfc_tasks.catalogue.schema import SchemaBehind
from hfc_tasks.registry import Site


def night_of(context: Context) -> dt.date:
    """The night a task works on (:func:`hfc_tasks.products.night_of_run` on its context)."""
    params = context.get("params") or {}
    try:
        return products.night_of_run(params.get("night"), context.get("data_interval_start"))
    except ValueError as exc:
        raise AirflowException(str(exc)) from None


def claim_night(context: Context, site: Site, frc: str, night: dt.date, log) -> None:
    """Take or check this run's claim on (FRC, night) before a stage changes anything.

    Another run of the same night that is still queued or running holds it: the task fails at
    once, without retries (:class:`AirflowFailException`), naming that run. A claim left by a
    run that is no longer active (failed, succeeded, marked, deleted) is taken over. Whether a
    run is active comes from Airflow through the Task SDK (``get_dr_count``). See
    :mod:`hfc_tasks.claims`.
    """
    refused = claim_nights(context, site, frc, [night], log)
    if refused:
        raise AirflowFailException(refused[night])


def claim_nights(context: Context, site: Site, frc: str, nights, log) -> dict[dt.date, str]:
    """:func:`claim_night` for several nights over one catalogue connection (a campaign's batch).

    Returns night -> why the claim was refused (another active run holds it) for the nights this
    run may not touch; the others are this run's. A schema behind the code fails the task at once
    (:class:`AirflowFailException`: a deploy step is missing, no night can go on)."""
    from hfc_tasks import claims
    from hfc_tasks.provider.catalogue_db import catalogue_connect

    ti = context["ti"]
    me = claims.RunRef(ti.dag_id, ti.run_id)

    def active(run: claims.RunRef) -> bool:
        return ti.get_dr_count(dag_id=run.dag_id, run_ids=[run.run_id], states=list(claims.ACTIVE_RUN_STATES)) > 0

    refused: dict[dt.date, str] = {}
    with catalogue_connect(site.catalogue_conn_id) as conn:
        for night in nights:
            try:
                previous = claims.claim(conn, frc, night, me, active)
            except claims.ClaimRefused as exc:
                refused[night] = str(exc)
                continue
            except SchemaBehind as exc:  # retries cannot help: a deploy step is missing
                raise AirflowFailException(str(exc)) from exc
            if previous is not None:
                log.info("night %s of FRC %s: took over the claim of run %s (no longer queued or running)",
                         night, frc, previous)
    return refused


def release_night(context: Context, site: Site, frc: str, night: dt.date, log) -> None:
    """The night is done (its catalogue stage succeeded): another run may process it now."""
    release_nights(context, site, frc, [night], log)


def release_nights(context: Context, site: Site, frc: str, nights, log) -> None:
    """:func:`release_night` for several nights over one catalogue connection."""
    from hfc_tasks import claims
    from hfc_tasks.provider.catalogue_db import catalogue_connect

    ti = context["ti"]
    me = claims.RunRef(ti.dag_id, ti.run_id)
    with catalogue_connect(site.catalogue_conn_id) as conn:
        for night in nights:
            if not claims.release(conn, frc, night, me):
                log.warning("night %s of FRC %s: this run did not hold its claim at the end", night, frc)


def submit_attempt(context: Context) -> str:
    """The key of this submit task's chain of tries: its retries share it, a clear starts a new one.

    Airflow raises ``max_tries`` by the task's retries when a task instance is cleared, so
    ``max_tries - retries + 1`` is the first try of the current chain (Airflow's own reading,
    see ``RuntimeTaskInstance.get_first_reschedule_date``). A retry adopts the job an earlier
    try of the chain submitted even when that try never heard the answer.
    """
    ti = context["ti"]
    first_try = int(ti.max_tries or 0) - int(ti.task.retries or 0) + 1
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{first_try}"


def stage_default_args(site: Site) -> dict:
    """``default_args`` of every HFC DAG (nightly, campaign): two retries with exponential back-off
    from the site's ``retry_delay_seconds`` (capped at 30 min), and the site's failure notifiers."""
    args: dict = {
        "owner": "hfc-operators",
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=site.retry_delay_seconds),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
    }
    if site.notify:  # imported only then: apprise costs ~50 ms of every parse
        from hfc_tasks.provider.notifiers import failure_notifiers

        # The smtp/apprise providers' notifiers, on the connections the site names.
        args["on_failure_callback"] = failure_notifiers(site.notify)
    return args
