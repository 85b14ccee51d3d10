"""
### hfc_published_example: a downstream consumer of the published nights

An example for teams that use the catalogue: **one run per night an FRC publishes**, started by
Airflow when that FRC's `catalogue` task in `hfc_nightly` succeeds, never on a clock.

- Each FRC's `catalogue` task has the asset `hfc_catalogue/<frc>` (URI `x-hfc://catalogue/<frc>`)
  as its outlet (`hfc_tasks/assets.py`, `hfc_tasks/provider/assets.py`). Its event is
  **partitioned by night**: the partition key is the night, `YYYY-MM-DD`, and the event's
  extra carries `frc`, `night`, `batch_id`, `rows` (per table), `rows_total`, `status` and the
  producing `dag_run_id`.
- This DAG is scheduled with `PartitionedAssetTimetable` on the assets of every FRC of the
  site (any of them): a run's `dag_run.partition_key` is the published night, and its
  triggering asset events say which FRC(s) published it.
- Its one task, `report_night`, reads the night's batches from the catalogue (one query,
  read-only) and logs one line per FRC with its batch and row counts; it returns them (XCom).

To consume one FRC only, schedule on `catalogue_asset("<frc>")` (or
`Asset.ref(name="hfc_catalogue/<frc>")` from another project). A night published again (its
`catalogue` task cleared) starts another run for the same partition. Paused at creation like
every DAG here: unpause it to use it.
"""

from __future__ import annotations

import datetime as dt
import logging

from airflow.sdk import DAG, AssetAny, PartitionedAssetTimetable, task

from hfc_tasks.provider.assets import catalogue_asset
from hfc_tasks.registry import load_registry

registry = load_registry()
site = registry.site()
log = logging.getLogger(__name__)


@task(multiple_outputs=False)  # one XCom: the whole report
def report_night(*, dag_run=None, triggering_asset_events=None) -> dict:
    """The night's batches in the catalogue, per FRC: batch id, status, rows per table."""
    from hfc_tasks.provider.catalogue_db import catalogue_connect

    events = [e for evs in (triggering_asset_events or {}).values() for e in evs]
    published = sorted({e.extra.get("frc") for e in events if e.extra.get("frc")})
    night = dag_run.partition_key or next((e.extra["night"] for e in events if e.extra.get("night")), None)
    if not night:
        raise ValueError("this run has no night: it is started by a published night (partition key YYYY-MM-DD)")
    night = dt.date.fromisoformat(night).isoformat()  # a malformed key fails here, naming it
    log.info("night %s published by %s", night, ", ".join(published) or "(no event extra)")
    with catalogue_connect(site.catalogue_conn_id, application_name="hfc-published-example") as conn:
        rows = conn.execute(
            "select frc, id, status, row_counts from hfc.batch where night = %s order by frc", (night,)
        ).fetchall()
    batches = {frc: {"batch_id": bid, "status": status, "rows": counts or {}} for frc, bid, status, counts in rows}
    for frc, b in batches.items():
        log.info("%s %s: batch %s (%s), rows %s", frc, night, b["batch_id"], b["status"],
                 ", ".join(f"{t}={n}" for t, n in b["rows"].items()) or "none")
    return {"night": night, "published_by": published, "batches": batches}


with DAG(
    dag_id="hfc_published_example",
    description="Example consumer: one run per night an FRC publishes to the catalogue",
    schedule=PartitionedAssetTimetable(assets=AssetAny(*(catalogue_asset(f.name) for f in registry.enabled_frcs))),
    start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["hfc", "example", "assets"],
    doc_md=__doc__,
):
    report_night()
