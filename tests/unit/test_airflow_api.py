"""The one REST client of Airflow's API against a tiny local HTTP server: login or token, the
query string, and errors as ApiError naming method, path, status and body."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hfc_tasks.airflow_api import AirflowAPI, ApiError


class Handler(BaseHTTPRequestHandler):
    seen: list = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _answer(self, code: int, body) -> None:
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"null")
        if self.path == "/auth/token":
            ok = body == {"username": "admin", "password": "secret"}
            self._answer(201 if ok else 401, {"access_token": "T1"} if ok else {"detail": "Invalid credentials"})
            return
        self.seen.append(("POST", self.path, self.headers["Authorization"], body))
        self._answer(201, {"id": 7})

    def do_GET(self) -> None:  # noqa: N802
        self.seen.append(("GET", self.path, self.headers["Authorization"], None))
        if self.path.startswith("/api/v2/dags/missing"):
            self._answer(404, {"detail": "The Dag with ID: `missing` was not found"})
        elif self.path.startswith("/api/v2/broken"):
            self._answer(500, b"Internal Server Error")
        else:
            self._answer(200, {"backfills": [{"id": 1}], "path": self.path})


@pytest.fixture
def base():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Handler.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_login_or_token(base):
    api = AirflowAPI(base, "admin", "secret")
    assert api.token == "T1"
    assert api.post("/backfills", {"a": 1}) == {"id": 7}
    assert Handler.seen[-1] == ("POST", "/api/v2/backfills", "Bearer T1", {"a": 1})
    user = AirflowAPI(base, token="U")
    assert user.backfills("hfc_nightly") == [{"id": 1}]
    assert Handler.seen[-1] == ("GET", "/api/v2/backfills?dag_id=hfc_nightly&limit=100", "Bearer U", None)
    assert user.call("GET", "/x?a=1", query={"b": 2})["path"] == "/api/v2/x?a=1&b=2"
    with pytest.raises(ValueError, match="either a token or a username"):
        AirflowAPI(base)


def test_errors_name_method_path_status_and_body(base):
    with pytest.raises(ApiError) as err:
        AirflowAPI(base, "admin", "wrong")
    assert (err.value.method, err.value.path, err.value.status) == ("POST", "/auth/token", 401)
    api = AirflowAPI(base, token="U")
    with pytest.raises(ApiError) as err:
        api.get("/dags/missing")
    e = err.value
    assert (e.method, e.path, e.status, e.message) == ("GET", "/dags/missing", 404,
                                                       "The Dag with ID: `missing` was not found")
    assert json.loads(e.body) == {"detail": e.message}
    assert str(e) == "Airflow API answered 404 to GET /dags/missing: The Dag with ID: `missing` was not found"
    with pytest.raises(ApiError, match="answered 500 to GET /broken: Internal Server Error"):
        api.get("/broken")
    assert not isinstance(e, AssertionError)


def test_waits_time_out_with_timeout_error(base):
    api = AirflowAPI(base, token="U")
    with pytest.raises(TimeoutError, match="DAG missing not parsed within 0 s"):
        api.wait_for_dag("missing", timeout=0)
