"""The assets the pipeline publishes: one per FRC, ``hfc_catalogue/<frc>``, partitioned by night.

The ``catalogue`` task of each FRC (:class:`hfc_tasks.provider.operators.CatalogueLoadOperator`)
has this asset (the Airflow object: :func:`hfc_tasks.provider.assets.catalogue_asset`) as its
outlet: when it succeeds (every file of the night loaded, none rejected), Airflow records an
asset event whose **partition key is the night** (``YYYY-MM-DD``, Airflow 3.3's runtime
partitions, ``outlet_events[asset].add_partitions``) and whose ``extra`` is :func:`event_extra`
(night, batch id, rows loaded, DAG run id). A downstream DAG subscribes with
``schedule=PartitionedAssetTimetable(assets=catalogue_asset("<frc>"))`` and gets one run per
published night (``dag_run.partition_key``): ``dags/hfc_published_example.py`` is the example.

Names, URIs, partition keys and extras are made here only (no Airflow import: the domain layer).
The URI scheme is ``x-hfc``: Airflow leaves ``x-`` schemes alone (no provider normaliser claims
them), and it names what is published, the FRC's part of the catalogue, not a database address
that differs between sites.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

ASSET_GROUP = "hfc_catalogue"


def asset_name(frc: str) -> str:
    """``hfc_catalogue/<frc>``: the name consumers write (``Asset.ref(name=...)``)."""
    return f"{ASSET_GROUP}/{frc}"


def asset_uri(frc: str) -> str:
    return f"x-hfc://catalogue/{frc}"


def partition_key(night: dt.date) -> str:
    """The partition of a night: ``YYYY-MM-DD`` (an ``IdentityMapper`` consumer gets it as is)."""
    return night.isoformat()


def event_extra(*, frc: str, night: dt.date, batch_id: int, rows: dict[str, int], dag_run_id: str,
                status: str) -> dict[str, Any]:
    """The ``extra`` of a publication event: enough for a consumer to find the batch without a query."""
    return {"frc": frc, "night": night.isoformat(), "batch_id": batch_id, "rows": dict(rows),
            "rows_total": sum(rows.values()), "status": status, "dag_run_id": dag_run_id}
