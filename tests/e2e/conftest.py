"""Fixtures for end-to-end tests on the real Airflow stack (api-server, scheduler,
dag-processor, triggerer; LocalExecutor) driven through Airflow's REST API."""

from __future__ import annotations

import json
import os

import pytest

from hfc_tasks import airflow_stack
from hfc_tasks.airflow_api import AirflowAPI


def start_stack(registry: str | None) -> AirflowAPI:
    """The stack running with ``registry`` (restarted if it runs with another one)."""
    wanted = registry or ""
    if airflow_stack.running_registry() not in (None, wanted):
        airflow_stack.down()
    if wanted:
        os.environ["HFC_REGISTRY"] = wanted
    else:
        os.environ.pop("HFC_REGISTRY", None)
    airflow_stack.up(verbose=False)
    env = airflow_stack.stack_env()
    with open(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]) as f:
        password = json.load(f)["admin"]
    return AirflowAPI(f"http://127.0.0.1:{airflow_stack.PORT}", "admin", password)


@pytest.fixture(scope="session")
def stack_starter():
    """``start(registry_path_or_None) -> AirflowAPI``: restart the stack on another registry."""
    return start_stack


@pytest.fixture(scope="module")
def stack_api(site) -> AirflowAPI:
    """The stack with the project's registry (config/registry.yaml)."""
    return start_stack(None)
