"""hfc_nightly: one night of the Heliophysics Feature Catalogue, every FRC of the registry.

Thin on purpose: the FRCs come from ``config/registry.yaml``, everything the tasks do lives
in the installed ``hfc_tasks`` package.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TaskGroup

from hfc_tasks.operators import ArchiveProductsOperator, CatalogueLoadOperator, SlurmSubmitOperator
from hfc_tasks.registry import load_registry
from hfc_tasks.sensors import SlurmJobSensor

registry = load_registry()
site = registry.site()

with DAG(
    dag_id="hfc_nightly",
    description="HFC nightly: run the FRCs on SLURM, archive their products, load the catalogue",
    # Each run covers one UTC day (its data interval) and starts when that day is over.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=3,
    default_args={
        "owner": "hfc-operators",
        "retries": 2,
        "retry_delay": dt.timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
    },
    params={
        "night": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Night to process (YYYY-MM-DD); empty = the run's data interval",
        ),
    },
    tags=["hfc", "catalogue"],
    doc_md=__doc__,
) as dag:
    groups: dict[str, TaskGroup] = {}
    for frc in registry.enabled_frcs:
        with TaskGroup(group_id=frc.name, tooltip=frc.doc or frc.name) as group:
            submit = SlurmSubmitOperator(task_id="submit", frc=frc.name, pool=site.cluster_pool)
            wait = SlurmJobSensor(
                task_id="wait",
                frc=frc.name,
                job_id=f"{{{{ ti.xcom_pull(task_ids='{frc.name}.submit') }}}}",
                deferrable=True,
            )
            archive = ArchiveProductsOperator(
                task_id="archive",
                frc=frc.name,
                slurm_job_id=f"{{{{ ti.xcom_pull(task_ids='{frc.name}.submit') }}}}",
                pool=site.archive_pool,
            )
            catalogue = CatalogueLoadOperator(task_id="catalogue", frc=frc.name, pool=site.archive_pool)
            submit >> wait >> archive >> catalogue
        groups[frc.name] = group
    # Trackers read their detector's published results: they start after its catalogue stage.
    for frc in registry.enabled_frcs:
        for dep in frc.after:
            if dep in groups:
                groups[dep] >> groups[frc.name]
