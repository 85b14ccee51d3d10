"""
### hfc_nightly: one night of the Heliophysics Feature Catalogue

Every FRC of the registry (`config/registry.yaml`) that runs on this site gets a task group
named after it:

- `submit`: `sbatch` over SSH (job `hfc.<frc>.<YYYYMMDD>`), or adopts the live job of
  that name. Clear it to recompute the night.
- `wait`: waits in the triggerer for the job's end state (no worker slot held). Clearing or
  marking it while the job runs **cancels the job**.
- `archive`: copies the products to the HFC archive, sha256-verified, then deletes them on
  the cluster. Clear it to copy again (files already archived are skipped).
- `catalogue`: replaces the night's batch of the FRC in the catalogue (same rows on re-run).

Trackers start after the `catalogue` task of the FRC they read (`after:` in the registry).
Each scheduled run covers one UTC day (its data interval). A manual run may name a `night`
and a subset of `frcs`. Runbook: `docs/runbook.md`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TaskGroup

from hfc_tasks.provider.operators import ArchiveProductsOperator, CatalogueLoadOperator, SlurmSubmitOperator
from hfc_tasks.provider.runs import stage_default_args
from hfc_tasks.provider.sensors import SlurmJobSensor
from hfc_tasks.registry import load_registry

registry = load_registry()
site = registry.site()
frcs = registry.enabled_frcs

default_args = stage_default_args(site)
deadline = None
if site.notify:  # imported only then: apprise costs ~50 ms of every parse
    from hfc_tasks.provider.notifiers import catalogue_deadline_alert

    # The site's "every FRC's night is in the catalogue by HH:MM UTC" (None: no deadline).
    deadline = catalogue_deadline_alert(site, [f.name for f in frcs])

with DAG(
    dag_id="hfc_nightly",
    description="HFC nightly: run the FRCs on SLURM, archive their products, load the catalogue",
    # Each run covers one UTC day (its data interval) and starts when that day is over.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=3,
    default_args=default_args,
    deadline=deadline,
    params={
        "night": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Night",
            description="Night to process (YYYY-MM-DD, UTC). Empty: the run's data interval.",
        ),
        "frcs": Param(
            [],
            type="array",
            items={"type": "string", "enum": [f.name for f in frcs]},
            uniqueItems=True,
            title="FRCs",
            description="Run only these FRCs (the others are skipped). Empty: all.",
        ),
    },
    tags=["hfc", "catalogue", "slurm"],
    doc_md=__doc__,
) as dag:
    groups: dict[str, TaskGroup] = {}
    submits: dict[str, SlurmSubmitOperator] = {}
    for frc in frcs:
        with TaskGroup(
            group_id=frc.name,
            tooltip=f"{frc.name} {frc.version}: {frc.feature} from {frc.observatory}/{frc.instrument}",
            doc_md=f"#### {frc.name} {frc.version}\n\n{frc.doc or ''}\n\nFeature: {frc.feature}; "
            f"instrument: {frc.observatory}/{frc.instrument}; runs after: {', '.join(frc.after) or 'nothing'}.",
        ) as group:
            job = f"{{{{ ti.xcom_pull(task_ids='{frc.name}.submit') }}}}"
            submit = SlurmSubmitOperator(
                task_id="submit",
                frc=frc.name,
                pool=site.cluster_pool,
                # A tracker still runs when the FRC it reads was skipped (not chosen), never
                # when that FRC failed.
                trigger_rule="none_failed" if frc.after else "all_success",
            )
            wait = SlurmJobSensor(task_id="wait", frc=frc.name, job_id=job, deferrable=True)
            archive = ArchiveProductsOperator(task_id="archive", frc=frc.name, slurm_job_id=job, pool=site.archive_pool)
            catalogue = CatalogueLoadOperator(task_id="catalogue", frc=frc.name, pool=site.archive_pool)
            submit >> wait >> archive >> catalogue
        groups[frc.name] = group
        submits[frc.name] = submit
    # Trackers read their detector's published results: they start after its catalogue stage.
    for frc in frcs:
        for dep in frc.after:
            if dep in groups:
                groups[dep] >> submits[frc.name]
