"""Airflow listener (registered by the ``hfc_status`` plugin): an FRC's ``wait`` marked failed or
success by hand cancels the FRC's SLURM job, whether or not the triggerer was running its trigger.

Airflow calls these hooks in the API server when a task instance's state is set by hand (the task,
its task group or its whole DAG run marked; ``previous_state`` is None there) and in the workers
when a task ends by itself (``previous_state`` RUNNING: nothing to do, the job has ended). The
trigger's own ``on_kill`` only runs if the triggerer had the trigger running at that moment; a wait
marked in the seconds after it deferred had none, and its job stayed queued (CI, multihost site).
The cancellation runs in a thread: the operator's request does not wait on SSH. See
:mod:`hfc_tasks.provider.cancellation` for the rule (only while the run holds the night's claim).
"""

from __future__ import annotations

import logging
import threading

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)

WAIT_OPERATOR = "SlurmJobSensor"


def _night(dag_run):
    from hfc_tasks import products

    return products.night_of_run((dag_run.conf or {}).get("night"), dag_run.data_interval_start)


def _marked_by_hand(task_instance, new_state: str) -> None:
    if getattr(task_instance, "operator", None) != WAIT_OPERATOR or not task_instance.task_id.endswith(".wait"):
        return
    # Plain values only: the ORM object expires when the request's session commits.
    task_id, dag_id, run_id = task_instance.task_id, task_instance.dag_id, task_instance.run_id
    frc = task_id.rsplit(".", 1)[0]
    try:
        from hfc_tasks.registry import load_registry

        registry = load_registry()
        names = {f.name for f in registry.frcs}
        if frc not in names:
            return  # not one of this registry's FRC groups
        site = registry.site()
        night = _night(task_instance.dag_run)  # read now: the request's database session is open
    except Exception as exc:  # noqa: BLE001 - never break the operator's request; say what to do
        log.error("%s of run %s marked %s: cannot tell which SLURM job to cancel (%s); check with "
                  "squeue --name=hfc.%s.<YYYYMMDD> and scancel it by hand", task_id, run_id,
                  new_state, exc, frc)
        return

    def cancel() -> None:
        from hfc_tasks.claims import RunRef
        from hfc_tasks.provider.cancellation import cancel_if_held

        try:
            cancel_if_held(catalogue_conn_id=site.catalogue_conn_id, cluster_conn_id=site.cluster_conn_id,
                           frc=frc, night=night, run=RunRef(dag_id, run_id), logger=log)
        except Exception as exc:  # noqa: BLE001 - a thread's error goes to the log, with what to do
            log.error("%s of run %s marked %s: cancelling its SLURM job failed (%s); check with squeue "
                      "--name=hfc.%s.%s and scancel it by hand", task_id, run_id, new_state, exc,
                      frc, night.strftime("%Y%m%d"))

    log.info("%s of run %s marked %s by hand: cancelling its SLURM job if the run holds night %s",
             task_id, run_id, new_state, night)
    threading.Thread(target=cancel, name=f"hfc-cancel-{frc}-{night}", daemon=True).start()


@hookimpl
def on_task_instance_failed(previous_state, task_instance, error):
    if previous_state is None:
        _marked_by_hand(task_instance, "failed")


@hookimpl
def on_task_instance_success(previous_state, task_instance):
    if previous_state is None:
        _marked_by_hand(task_instance, "success")
