"""Extra links of the HFC stages: buttons on every task of ``hfc_nightly`` in the Airflow UI.

* **SLURM output**: the tail of the job's output file on the cluster (read over SSH);
* **Archive folder**: the night's manifest on the archive (files, sizes, public URLs);
* **Quicklooks**: the night's images with the catalogue's contours drawn;
* **Catalogue batch**: the batch (FRC, night): provenance, rows per table, rejected files.

All four open pages of the catalogue status app (``/hfc-status``, :mod:`hfc_tasks.provider.status_app`).
In Airflow 3 a link is computed on the worker when the task ends (any end state, so a failed
``wait`` still links to the job's output) and stored as an XCom the UI reads; the links only
need the FRC and the night, so they work for every stage and every re-run.
"""

from __future__ import annotations

import os
from urllib.parse import quote, urlencode

from airflow.sdk import BaseOperatorLink

from hfc_tasks import products
from hfc_tasks.provider.runs import night_of

PREFIX = "/hfc-status"


def _base() -> str:
    """The UI's base URL ([api] base_url) so a link opens from any page; '' = same origin."""
    base = os.environ.get("AIRFLOW__API__BASE_URL")
    if base is None:
        try:
            from airflow.sdk.configuration import conf

            base = conf.get("api", "base_url", fallback="") or ""
        except Exception:  # noqa: BLE001 - a link must never fail a task
            base = ""
    return base.rstrip("/") + PREFIX


def _frc_night(operator, ti_key) -> tuple[str, str] | None:
    frc = getattr(operator, "frc", None)
    get_context = getattr(ti_key, "get_template_context", None)
    if not frc or get_context is None:
        return None
    return frc, products.night_key(night_of(get_context()))


class _HfcLink(BaseOperatorLink):
    path = ""

    def url(self, frc: str, night: str, operator, ti_key) -> str:
        return f"{_base()}/{self.path}/{quote(frc)}/{night}"

    def get_link(self, operator, *, ti_key) -> str:
        which = _frc_night(operator, ti_key)
        if which is None:
            return ""
        return self.url(*which, operator, ti_key)


class SlurmOutputLink(_HfcLink):
    name = "SLURM output"
    path = "job-output"

    def url(self, frc, night, operator, ti_key) -> str:
        url = super().url(frc, night, operator, ti_key)
        try:
            job_id = ti_key.xcom_pull(task_ids=f"{frc}.submit")
        except Exception:  # noqa: BLE001 - no job yet: the page falls back to the batch's job id
            job_id = None
        return f"{url}?{urlencode({'job_id': job_id})}" if job_id else url


class ArchiveFolderLink(_HfcLink):
    name = "Archive folder"
    path = "archive"


class QuicklooksLink(_HfcLink):
    name = "Quicklooks"

    def url(self, frc, night, operator, ti_key) -> str:
        return f"{_base()}/gallery?{urlencode({'frc': frc, 'night': night})}"


class CatalogueBatchLink(_HfcLink):
    name = "Catalogue batch"
    path = "batch"


HFC_LINKS = (SlurmOutputLink(), ArchiveFolderLink(), QuicklooksLink(), CatalogueBatchLink())
