"""The catalogue stage's pure logic: schema migrations, product formats and readers, the night loader.

No Airflow here: the operator, the CLI, the tests and the benchmarks call the same code.

Modules: ``formats`` (formats.yaml: what each kind of file holds; no pandas, the registry reads it
too), ``readers`` (one product file, exactly), ``bulk`` (many files on their way to COPY),
``loader`` (``load_night``: the night's transaction), ``fetch`` (the archive's bytes, checked),
``state``, ``resolve``, ``tables``, ``copying``, ``report`` (the loader's pieces), ``schema`` (migrations).

The names below are imported on first use, so that importing ``hfc_tasks.catalogue.formats``
(the registry does, hence the DAG file) does not import pandas, numpy or psycopg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hfc_tasks.catalogue.fetch import ArchiveReadError, archive_fault
    from hfc_tasks.catalogue.loader import load_night
    from hfc_tasks.catalogue.readers import ProductFileError, read_product
    from hfc_tasks.catalogue.report import LoadReport, RejectedFile
    from hfc_tasks.catalogue.schema import MigrationError, upgrade
    from hfc_tasks.manifest import ManifestError

_HOMES = {
    "ArchiveReadError": "hfc_tasks.catalogue.fetch",
    "archive_fault": "hfc_tasks.catalogue.fetch",
    "LoadReport": "hfc_tasks.catalogue.report",
    "ManifestError": "hfc_tasks.manifest",
    "MigrationError": "hfc_tasks.catalogue.schema",
    "ProductFileError": "hfc_tasks.catalogue.readers",
    "RejectedFile": "hfc_tasks.catalogue.report",
    "load_night": "hfc_tasks.catalogue.loader",
    "read_product": "hfc_tasks.catalogue.readers",
    "upgrade": "hfc_tasks.catalogue.schema",
}

__all__ = [
    "ArchiveReadError",
    "LoadReport",
    "ManifestError",
    "MigrationError",
    "ProductFileError",
    "RejectedFile",
    "archive_fault",
    "load_night",
    "read_product",
    "upgrade",
]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
