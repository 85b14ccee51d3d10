"""Test DAGs for tests/integration/test_slurm_stage.py: one submit → wait pair per test FRC.

The registry and the knobs come from the environment the test sets for `airflow dags test`.
"""

import datetime as dt
import os

from airflow.sdk import DAG, Param

from hfc_tasks.provider.operators import SlurmSubmitOperator
from hfc_tasks.provider.sensors import SlurmJobSensor
from hfc_tasks.registry import load_registry

REGISTRY = os.environ.get("HFC_TEST_REGISTRY")

if REGISTRY:
    for frc in load_registry(REGISTRY).frcs:
        with DAG(
            dag_id=f"test_slurm_{frc.name.replace('-', '_')}",
            schedule=None,
            start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
            params={"night": Param(None, type=["null", "string"])},
        ):
            job_id = os.environ.get("HFC_TEST_JOB_ID")
            # HFC_TEST_RESCHEDULE=1: the fallback for sites without a triggerer.
            mode = {"deferrable": False, "mode": "reschedule", "poke_interval": 1} if os.environ.get(
                "HFC_TEST_RESCHEDULE") else {}
            notify = {}
            if os.environ.get("HFC_TEST_NOTIFY"):
                from hfc_tasks.provider.notifiers import failure_notifiers
                from hfc_tasks.registry import Notify

                notify = {"on_failure_callback": failure_notifiers(
                    Notify(apprise_conn_id=os.environ["HFC_TEST_NOTIFY"]))}
            wait = SlurmJobSensor(
                **mode,
                **notify,
                task_id="wait",
                frc=frc.name,
                registry_path=REGISTRY,
                poll_interval=1,
                missing_timeout=float(os.environ.get("HFC_TEST_MISSING_TIMEOUT", "300")),
                job_id=job_id or "{{ ti.xcom_pull(task_ids='submit') }}",
                retries=0,
            )
            if not job_id:
                SlurmSubmitOperator(task_id="submit", frc=frc.name, registry_path=REGISTRY, retries=0) >> wait
