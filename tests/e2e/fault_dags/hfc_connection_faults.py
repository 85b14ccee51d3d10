"""DAG of tests/e2e/test_connection_faults.py (issue 16, items 8 and 9): every stage of the
project's operators, each task group given a site of the test registry whose connection is
broken in one way. Loaded only by that test's own Airflow instance (its DAG bundle).

Task groups by FRC name (the registry is the test's, ``HFC_REGISTRY``):

- ``h2w-<site>``: ``submit`` on site ``good`` → ``wait`` on site ``<site>`` (the wait's own
  connection is the broken one, so the failure happens in the triggerer);
- ``h2s-<site>``: ``submit`` alone on site ``<site>``;
- ``h2a-<site>``: ``archive`` and ``catalogue`` alone on site ``<site>`` (its archive connection).
"""

import datetime as dt

from airflow.sdk import DAG, Param, TaskGroup

from hfc_tasks.provider.operators import ArchiveProductsOperator, CatalogueLoadOperator, SlurmSubmitOperator
from hfc_tasks.provider.sensors import SlurmJobSensor
from hfc_tasks.registry import load_registry

registry = load_registry()

with DAG(
    dag_id="hfc_connection_faults",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    # Retries as in hfc_nightly: a configuration error must not use them.
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=2)},
    params={"night": Param(None, type=["null", "string"])},
):
    for frc in registry.frcs:
        kind, _, site = frc.name.partition("-")
        with TaskGroup(group_id=frc.name):
            if kind == "h2w":
                job = f"{{{{ ti.xcom_pull(task_ids='{frc.name}.submit') }}}}"
                SlurmSubmitOperator(task_id="submit", frc=frc.name, site="good") >> SlurmJobSensor(
                    task_id="wait", frc=frc.name, site=site, job_id=job, poll_interval=1, max_poll_interval=2)
            elif kind == "h2s":
                SlurmSubmitOperator(task_id="submit", frc=frc.name, site=site)
            elif kind == "h2a":
                ArchiveProductsOperator(task_id="archive", frc=frc.name, site=site)
                CatalogueLoadOperator(task_id="catalogue", frc=frc.name, site=site)
