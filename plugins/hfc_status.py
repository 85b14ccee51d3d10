"""Airflow plugin: the HFC catalogue status page and the extra links of the HFC stages.

Thin on purpose: the app is :mod:`hfc_tasks.provider.status_app` (logic in :mod:`hfc_tasks.status`
and :mod:`hfc_tasks.gallery`), the links are :mod:`hfc_tasks.provider.links`, the listener is
:mod:`hfc_tasks.provider.listeners`.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from hfc_tasks.provider import listeners as hfc_listeners
from hfc_tasks.provider.links import HFC_LINKS
from hfc_tasks.provider.status_app import PREFIX, create_app


class HfcStatusPlugin(AirflowPlugin):
    name = "hfc_status"
    fastapi_apps = [{"app": create_app(), "url_prefix": PREFIX, "name": "HFC catalogue status"}]
    # A navigation entry; url_route makes the UI show the page inside Airflow (an iframe).
    external_views = [
        {
            "name": "HFC catalogue",
            "href": f"{PREFIX.lstrip('/')}/",
            "url_route": "hfc-catalogue",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
    operator_extra_links = list(HFC_LINKS)
    # A wait marked by hand cancels its SLURM job even when no trigger runs for it.
    listeners = [hfc_listeners]
