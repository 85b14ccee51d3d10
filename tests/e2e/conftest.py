"""Fixtures for end-to-end tests on the real Airflow stack (api-server, scheduler,
dag-processor, triggerer; LocalExecutor) driven through Airflow's REST API."""

from __future__ import annotations

import json
import os

import ops_instance  # tests/e2e is on sys.path (pytest prepend import mode)
import pytest

from hfc_tasks.airflow_api import AirflowAPI
from hfc_tasks.ops import airflow_stack
from hfc_tasks.ops.localsite import procs

# Whether this test session started (or restarted) the main stack: then it stops it at the end.
_session_started: list[bool] = []


def start_stack(registry: str | None) -> AirflowAPI:
    """The stack running with ``registry`` (restarted if it runs with another one)."""
    wanted = registry or ""
    running = airflow_stack.running_registry()
    if running != wanted:
        _session_started.append(True)
    if running not in (None, wanted):
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


@pytest.fixture(scope="session", autouse=True)
def _stop_what_the_session_started():
    """Finaliser, pass or fail: the stacks this session started (the main one, the ``ops``
    instance with its Redis and Celery workers) are stopped when the session ends; a stack that
    was already running before (an operator's) is left as it was."""
    yield
    errors = []
    if _session_started:
        try:
            airflow_stack.down()
            left = [p.describe() for p in procs.instance_processes(airflow_stack.run_dir())]
            assert not left, f"processes of the main stack left after down: {left}"
        except Exception as exc:  # noqa: BLE001 - report, and still stop the ops instance
            errors.append(f"main stack: {exc}")
    try:
        if ops_instance.stop_if_started():
            left = [p.describe() for p in procs.instance_processes(ops_instance.run_dir())]
            assert not left, f"processes of the ops instance left after down: {left}"
    except Exception as exc:  # noqa: BLE001
        errors.append(f"ops instance: {exc}")
    assert not errors, errors


@pytest.fixture(scope="session")
def stack_starter():
    """``start(registry_path_or_None) -> AirflowAPI``: restart the stack on another registry."""
    return start_stack


@pytest.fixture(scope="module")
def stack_api(site) -> AirflowAPI:
    """The stack with the project's registry (config/registry.yaml)."""
    return start_stack(None)
