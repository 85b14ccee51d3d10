"""Test DAG for tests/integration/test_catalogue_archive_faults.py: the ``catalogue`` stage alone.

The registry and the FRC come from the environment the test sets for `airflow dags test`.
"""

import datetime as dt
import os

from airflow.sdk import DAG, Param

from hfc_tasks.provider.operators import CatalogueLoadOperator

REGISTRY = os.environ.get("HFC_TEST_CATALOGUE_REGISTRY")

if REGISTRY:
    with DAG(
        dag_id="test_catalogue_stage",
        schedule=None,
        start_date=dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
        params={"night": Param(None, type=["null", "string"])},
    ):
        CatalogueLoadOperator(task_id="catalogue", frc=os.environ["HFC_TEST_CATALOGUE_FRC"], registry_path=REGISTRY,
                              retries=0)
