"""Cancel an FRC's SLURM job when an operator stops its ``wait`` by hand: one home for the rule
"cancel only while this run holds the night's claim, never blind".

Three paths reach it, so that cancelling never depends on which process happens to hold the wait:

- the trigger's ``on_kill`` (:mod:`hfc_tasks.provider.triggers`, async twin of this rule) when the triggerer
  runs the wait's trigger at the moment the task is cleared or marked;
- the sensor's ``on_kill`` (worker side, non-deferrable mode);
- the API server's listener (:mod:`hfc_tasks.provider.listeners`) when a ``wait`` is **marked** failed or
  success (the task, its group or its DAG run): a wait marked before the triggerer had picked its
  trigger up has no running trigger, hence no ``on_kill`` (the race CI found on the multihost
  site). The listener does not know the job id: it cancels our live jobs named after the night
  (``hfc.<frc>.<YYYYMMDD>``); while the run holds the claim, no other run has such a job.

Cancelling twice is harmless (``scancel`` of an ended job is a no-op). Airflow only through the
hooks that open the catalogue and cluster connections.
"""

from __future__ import annotations

import datetime as dt
import logging

from hfc_tasks import products, slurm
from hfc_tasks.claims import RunRef, holder

log = logging.getLogger(__name__)


def cancel_if_held(*, catalogue_conn_id: str, cluster_conn_id: str, frc: str, night: dt.date, run: RunRef,
                   job_ids: list[str] | None = None, logger: logging.Logger | None = None) -> list[str]:
    """Cancel ``job_ids`` (or, when None, our live jobs named ``hfc.<frc>.<YYYYMMDD>``) if ``run``
    holds the claim on (frc, night). Returns the ids cancelled; logs why when nothing is."""
    from hfc_tasks.provider.catalogue_db import catalogue_connect
    from hfc_tasks.provider.hooks import SlurmHook

    say = logger or log
    name = products.job_name(frc, night)
    what = f"SLURM job {', '.join(job_ids)}" if job_ids else f"the live SLURM job {name}"
    try:
        with catalogue_connect(catalogue_conn_id) as conn:
            owner = holder(conn, frc, night)
    except Exception as exc:  # noqa: BLE001 - whatever the database says, never cancel blind
        say.error("cannot read the claim on night %s of FRC %s (%s): %s NOT cancelled; cancel it by hand if "
                  "it must stop (squeue --name=%s; scancel <id>)", night, frc, exc, what, name)
        return []
    if owner != run:
        say.warning("night %s of FRC %s is held by run %s, not run %s: %s NOT cancelled",
                    night, frc, owner or "(nobody)", run, what)
        return []
    hook = SlurmHook(cluster_conn_id)
    try:
        if job_ids is None:
            job_ids = slurm.parse_job_ids(hook.check(slurm.live_jobs_command(name), what="squeue"))
        for job_id in job_ids:
            hook.cancel(str(job_id))
    finally:
        hook.close()
    if job_ids:
        say.info("cancelled SLURM job %s (night %s of FRC %s, run %s)", ", ".join(job_ids), night, frc, run)
    else:
        say.info("night %s of FRC %s: no live SLURM job named %s to cancel", night, frc, name)
    return list(job_ids)
