"""Airflow layer of :mod:`hfc_tasks.assets`: the ``Asset`` a night of an FRC is published as."""

from __future__ import annotations

from airflow.sdk import Asset

from hfc_tasks.assets import ASSET_GROUP, asset_name, asset_uri


def catalogue_asset(frc: str) -> Asset:
    """The asset a night of ``frc`` in the catalogue is published as (outlet of its ``catalogue``
    task; what a consumer schedules on)."""
    return Asset(name=asset_name(frc), uri=asset_uri(frc), group=ASSET_GROUP,
                 extra={"frc": frc, "what": "the FRC's nightly batches in the HFC catalogue"})
