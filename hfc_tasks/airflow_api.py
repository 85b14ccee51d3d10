"""The one client of Airflow 3's public REST API (``/api/v2``). Plain urllib, no Airflow import.

:class:`AirflowAPI` talks either with a bearer token it is given (the status page: the *user's
own* token, so Airflow checks the user's rights exactly as for its own UI and records who asked)
or with a token it gets by logging in (``/auth/token``; the end-to-end and multihost tests,
``bench/scheduler_runs.py``). Every error answer raises :class:`ApiError`, naming the method, the path,
the status and the body; the waits raise :class:`TimeoutError`.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence


class ApiError(RuntimeError):
    """Airflow's REST API answered ``status`` to ``method path``.

    ``message`` is the answer's ``detail`` when it has one (else its text), ``body`` the text as
    it came.
    """

    def __init__(self, method: str, path: str, status: int, message: str, body: str = "") -> None:
        super().__init__(f"Airflow API answered {status} to {method} {path}: {message[:2000]}")
        self.method = method
        self.path = path
        self.status = status
        self.message = message
        self.body = body


def _error(method: str, path: str, exc: urllib.error.HTTPError) -> ApiError:
    text = exc.read().decode(errors="replace")
    try:
        detail = json.loads(text).get("detail", text)
    except (ValueError, AttributeError):
        detail = text
    return ApiError(method, path, exc.code, detail if isinstance(detail, str) else json.dumps(detail), text)


class AirflowAPI:
    """Airflow's public REST API, with ``token`` or logged in as ``username``/``password``."""

    def __init__(self, base: str, username: str | None = None, password: str | None = None, *,
                 token: str | None = None, timeout: float = 60) -> None:
        if (token is None) == (username is None or password is None):
            raise ValueError("AirflowAPI needs either a token or a username and a password")
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.token = token if token is not None else self._login(username, password)

    def _login(self, username: str, password: str) -> str:
        body = json.dumps({"username": username, "password": password}).encode()
        req = urllib.request.Request(f"{self.base}/auth/token", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=min(self.timeout, 30)) as resp:
                return json.loads(resp.read())["access_token"]
        except urllib.error.HTTPError as exc:
            raise _error("POST", "/auth/token", exc) from None

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None):
        """``method /api/v2{path}`` (``path`` may hold a query string; ``query`` adds one); the
        answer's JSON, None if it has no body."""
        if query:
            path += ("&" if "?" in path else "?") + urllib.parse.urlencode(query, doseq=True)
        req = urllib.request.Request(
            f"{self.base}/api/v2{path}", method=method, data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json",
                     "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
                return json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raise _error(method, path, exc) from None

    def get(self, path: str):
        return self.call("GET", path)

    def post(self, path: str, body: dict):
        return self.call("POST", path, body)

    def patch(self, path: str, body: dict):
        return self.call("PATCH", path, body)

    # -- what the status page reads and creates ------------------------------------------------

    def dag_runs(self, dag_id: str, first: dt.date, last: dt.date, limit: int = 2000) -> list[dict]:
        """Runs that may be about nights ``first..last``: those whose data interval starts in
        the range, and every run created since the range began (manual runs naming a night)."""
        runs: dict[str, dict] = {}
        start = dt.datetime.combine(first, dt.time(), dt.UTC).isoformat()
        end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), dt.UTC).isoformat()
        for query in ({"logical_date_gte": start, "logical_date_lt": end}, {"run_after_gte": start}):
            offset = 0
            while offset < limit:
                page = self.call("GET", f"/dags/{dag_id}/dagRuns",
                                 query={**query, "limit": 100, "offset": offset, "order_by": "-run_after"})
                for run in page["dag_runs"]:
                    runs[run["dag_run_id"]] = run
                offset += 100
                if offset >= page["total_entries"]:
                    break
        return list(runs.values())

    def task_instances(self, dag_id: str, run_ids: Sequence[str]) -> list[dict]:
        tis: list[dict] = []
        for i in range(0, len(run_ids), 50):
            offset = 0
            while True:  # pages of 100 (the API's default maximum page size)
                body = {"dag_ids": [dag_id], "dag_run_ids": list(run_ids[i:i + 50]), "page_limit": 100,
                        "page_offset": offset}
                page = self.call("POST", "/dags/~/dagRuns/~/taskInstances/list", body)["task_instances"]
                tis.extend(page)
                offset += len(page)
                if len(page) < 100:
                    break
        return tis

    def dag_params(self, dag_id: str) -> dict:
        return (self.call("GET", f"/dags/{dag_id}/details") or {}).get("params") or {}

    def backfills(self, dag_id: str) -> list[dict]:
        return self.call("GET", "/backfills", query={"dag_id": dag_id, "limit": 100})["backfills"]

    def create_backfill(self, body: dict) -> dict:
        return self.call("POST", "/backfills", body)

    # -- waits (tools and tests) ---------------------------------------------------------------

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                dag = self.get(f"/dags/{dag_id}")
                if dag and not dag.get("has_import_errors"):
                    return dag
            except ApiError:
                pass
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} not parsed within {timeout} s")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        tis = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> list[str]:
        """One try's log as lines (``event`` of each structured record; trigger records included)."""
        path = (f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/"
                f"{task_id}/logs/{try_number}")
        got = self.call("GET", path, query={"full_content": "true", "map_index": str(map_index)})
        content = got.get("content") if isinstance(got, dict) else got
        lines = []
        for rec in content or []:
            if isinstance(rec, dict):
                lines.append(f"{rec.get('timestamp', '')[11:23]} {rec.get('level', '')} {rec.get('event', '')}")
            else:
                lines.append(str(rec))
        return lines

    def explain_run(self, dag_id: str, run_id: str, tail: int = 25) -> str:
        """What a failing test prints: the run's task states, then the last ``tail`` log lines of every
        try of each task that failed or is waiting for a retry (the reason, not just the colour)."""
        tis = self.get(f"/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances?limit=1000")
        out = [f"run {run_id}: " + ", ".join(f"{t['task_id']}={t['state']}" for t in tis["task_instances"])]
        for t in tis["task_instances"]:
            if t["state"] not in ("failed", "up_for_retry"):
                continue
            for attempt in range(1, (t.get("try_number") or 1) + 1):
                try:
                    lines = self.task_log(dag_id, run_id, t["task_id"], attempt, t.get("map_index", -1))
                except ApiError as exc:
                    lines = [f"(log not readable: {exc})"]
                lines = [line for line in lines if " [conn=" not in line]  # asyncssh's per-channel chatter
                out.append(f"--- {t['task_id']} try {attempt}, last {tail} lines:")
                out.extend(lines[-tail:])
        return "\n".join(out)

    def wait_run(self, dag_id: str, run_id: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in ("success", "failed"):
                return state
            time.sleep(2)
        raise TimeoutError(f"run {run_id} still {state} after {timeout} s: {self.task_states(dag_id, run_id)}")

    def wait_task(self, dag_id: str, run_id: str, task_id: str, states, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.task_states(dag_id, run_id).get(task_id)
            if state in states:
                return state
            time.sleep(1)
        raise TimeoutError(f"{task_id} still {state} after {timeout} s")
