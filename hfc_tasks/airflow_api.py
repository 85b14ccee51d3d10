"""A small client of Airflow 3's public REST API (``/api/v2``): used by the operators' CLI
(backfills, status) and by the end-to-end tests. Plain urllib, no Airflow import."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


class AirflowAPI:
    """A small client of Airflow 3's public REST API (/api/v2), logged in as the site's admin."""

    def __init__(self, base: str, username: str, password: str) -> None:
        self.base = base.rstrip("/")
        body = json.dumps({"username": username, "password": password}).encode()
        req = urllib.request.Request(f"{self.base}/auth/token", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            self.token = json.loads(resp.read())["access_token"]

    def call(self, method: str, path: str, body: dict | None = None, ok=(200, 201, 204)):
        req = urllib.request.Request(
            f"{self.base}/api/v2{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return None
            raise AssertionError(f"{method} {path} → {exc.code}: {exc.read().decode()[:2000]}") from None

    def get(self, path):
        return self.call("GET", path)

    def post(self, path, body):
        return self.call("POST", path, body)

    def patch(self, path, body):
        return self.call("PATCH", path, body)

    # -- conveniences ---------------------------------------------------------------------
    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                dag = self.get(f"/dags/{dag_id}")
                if dag and not dag.get("has_import_errors"):
                    return dag
            except AssertionError:
                pass
            time.sleep(2)
        raise AssertionError(f"DAG {dag_id} not parsed within {timeout} s")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        tis = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise AssertionError(f"run {run_id} still {state} after {timeout} s: {self.task_states(dag_id, run_id)}")

    def wait_task(self, dag_id, run_id, task_id, states, timeout=300) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.task_states(dag_id, run_id).get(task_id)
            if state in states:
                return state
            time.sleep(1)
        raise AssertionError(f"{task_id} still {state} after {timeout} s")
