"""
### hfc_campaign: reprocess one FRC over a range of nights

Triggered by hand (UI "Trigger" with the form below, REST API, `hfc campaign start`): FRC `frc`
from night `first` to night `last` (both included), optionally as FRC version `version`, named
`campaign_id` (empty: derived from the run id). Each night ends as the nightly DAG's batch
(FRC, night): same archive layout, manifest (plus the campaign id), catalogue batch.

- `plan`: the nights cut into SLURM array chunks (`hfc.<frc>.campaign.<id>.<label>`) and into
  batches for `archive`/`catalogue`.
- `submit`: one `sbatch --array` per chunk, or adopts the chunk already submitted (never twice).
- `wait`: waits in the triggerer until every array task has ended.
- `archive`, `catalogue`: mapped over the batches; the nightly stages for each night whose array
  task completed. A night that fails does not stop the others of its batch.
- `report`: red when a night is not done, listing each with its reason.

Retry failed nights alone: `retry_nights` with a new `retry_attempt` (1, 2, ...) and the same
`campaign_id` (`hfc campaign retry ID --night D`). Cancel: `hfc campaign cancel ID`
(pending array tasks are cancelled, done nights are kept). Runbook: `docs/runbook.md`.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param

from hfc_tasks.provider.campaign_ops import (
    CampaignArchiveOperator,
    CampaignCatalogueOperator,
    CampaignPlanOperator,
    CampaignReportOperator,
    CampaignSubmitOperator,
    CampaignWaitOperator,
)
from hfc_tasks.provider.runs import stage_default_args
from hfc_tasks.registry import load_registry

registry = load_registry()
site = registry.site()
frc_names = [f.name for f in registry.enabled_frcs]

default_args = stage_default_args(site)

BATCH_LABEL = "{{ task.nights[0] }} .. {{ task.nights[-1] }}"

with DAG(
    dag_id="hfc_campaign",
    description="HFC reprocessing campaign: one FRC over a range of nights as SLURM job arrays",
    schedule=None,
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=4,
    default_args=default_args,
    params={
        "frc": Param(frc_names[0] if frc_names else None, type="string", enum=frc_names or [""], title="FRC",
                     description="The FRC to reprocess (enabled on this site)."),
        "first": Param(type="string", format="date", title="First night", description="YYYY-MM-DD (UTC), included."),
        "last": Param(type="string", format="date", title="Last night", description="YYYY-MM-DD (UTC), included."),
        "version": Param(None, type=["null", "string"], title="FRC version",
                         description="Version of the FRC the products are of (provenance). Empty: the registry's."),
        "campaign_id": Param(None, type=["null", "string"], pattern="^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
                             title="Campaign id",
                             description="Letters, digits, '-', '_'. Empty: derived from the run id."),
        "retry_nights": Param([], type="array", items={"type": "string", "format": "date"}, uniqueItems=True,
                              title="Retry nights",
                              description="Only these nights of the campaign, again (with retry_attempt)."),
        "retry_attempt": Param(None, type=["null", "integer"], minimum=1, title="Retry attempt",
                               description="1 for the first retry of the campaign, 2 for the next..."),
    },
    tags=["hfc", "campaign", "slurm"],
    doc_md=__doc__,
) as dag:
    plan = CampaignPlanOperator(
        task_id="plan", retries=0,
        doc_md="The run's SLURM array chunks and batches of nights, from its conf.")
    submit = CampaignSubmitOperator(
        task_id="submit", pool=site.cluster_pool,
        doc_md="Claims every night, then adopts or submits each chunk (`sbatch --array`). Returns the array ids.")
    wait = CampaignWaitOperator(
        task_id="wait",
        doc_md="Waits in the triggerer for every array task; returns each night's SLURM end. Cancels nothing.")
    archive = CampaignArchiveOperator.partial(
        task_id="archive", pool=site.archive_pool, map_index_template=BATCH_LABEL,
        doc_md="The nightly archive stage for each completed night of the batch (manifest with the campaign id).",
    ).expand(nights=plan.output)
    catalogue = CampaignCatalogueOperator.partial(
        task_id="catalogue", pool=site.archive_pool, map_index_template=BATCH_LABEL,
        # Every batch whose archive succeeded is loaded, even when another batch's archive failed
        # (plan's success is the "one success" when all archives failed: each night is checked).
        trigger_rule="all_done_min_one_success",
        doc_md="The nightly catalogue stage for each archived night of the batch: batch (FRC, night) of this run.",
    ).expand(nights=plan.output)
    report = CampaignReportOperator(
        task_id="report", trigger_rule="all_done", retries=0,
        doc_md="Red when a night is not done, listing each with its reason.")
    plan >> submit >> wait >> archive >> catalogue >> report
