"""``hfc campaign`` against a tiny Airflow REST server and a fake login node: the body that
``start`` and ``retry`` send (the DAG's conf contract), the retry attempt (past Airflow's and
SLURM's), the campaign found by conf id or by its run id, and bad input refused naming what."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hfc_tasks import slurm
from hfc_tasks.ops import cli


class Airflow(BaseHTTPRequestHandler):
    runs: list = []
    posted: list = []
    paused = False

    def log_message(self, *args) -> None:
        pass

    def _answer(self, code: int, body) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/auth/token":
            self._answer(201, {"access_token": "T"} if body["password"] == "pw" else {"detail": "no"})
            return
        assert self.headers["Authorization"] == "Bearer T"
        if self.path == "/api/v2/dags/hfc_campaign/dagRuns":
            self.posted.append(body)
            run = {"dag_run_id": f"manual__2026-12-03T08:0{len(self.posted)}:00.000001+00:00", "state": "queued",
                   "conf": body["conf"], "run_after": "2026-12-03T08:00:00Z"}
            self.runs.append(run)
            self._answer(200, run)
        else:
            self._answer(404, {"detail": f"no {self.path}"})

    def do_GET(self) -> None:  # noqa: N802
        if self.path.startswith("/api/v2/dags/hfc_campaign/dagRuns"):
            self._answer(200, {"dag_runs": list(reversed(self.runs)), "total_entries": len(self.runs)})
        elif self.path == "/api/v2/dags/hfc_campaign":
            self._answer(200, {"dag_id": "hfc_campaign", "is_paused": self.paused})
        else:
            self._answer(404, {"detail": f"no {self.path}"})


@pytest.fixture
def airflow(monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Airflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Airflow.runs, Airflow.posted, Airflow.paused = [], [], False
    monkeypatch.setenv("HFC_AIRFLOW_URL", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HFC_AIRFLOW_PASSWORD", "pw")
    monkeypatch.delenv("HFC_AIRFLOW_TOKEN", raising=False)
    yield Airflow
    server.shutdown()
    server.server_close()


@pytest.fixture
def cluster(monkeypatch):
    """The login node: answers the chunks listing with ``cluster.listing``; records the commands."""

    class Cluster:
        listing = ""
        sacct = ""
        commands: list = []

    def runner(site):
        def run(command):
            Cluster.commands.append(command)
            if "sacct -X -n -P --starttime" in command:
                return Cluster.listing
            return Cluster.sacct if command.startswith("sacct -X -n -P -j") else ""
        return run, lambda: None

    monkeypatch.setattr(cli, "_cluster_runner", runner)
    return Cluster


def test_start_sends_the_dag_conf_and_prints_id_and_run(airflow, capsys):
    assert cli.main(["campaign", "start", "--frc", "demo-sunspots", "--first", "2024-03-01", "--last",
                     "2024-03-30", "--version", "2.1", "--campaign-id", "dss-v21"]) == 0
    assert airflow.posted == [{"logical_date": None, "conf": {
        "frc": "demo-sunspots", "first": "2024-03-01", "last": "2024-03-30", "version": "2.1",
        "campaign_id": "dss-v21", "retry_nights": []}}]
    out = capsys.readouterr().out
    assert "campaign dss-v21: FRC demo-sunspots, nights 2024-03-01..2024-03-30 (30, version 2.1)" in out
    assert "run manual__2026-12-03T08:01:00.000001+00:00 of DAG hfc_campaign" in out
    # the same id again: refused, nothing triggered
    assert cli.main(["campaign", "start", "--frc", "demo-sunspots", "--first", "2024-03-01", "--last",
                     "2024-03-02", "--campaign-id", "dss-v21"]) == 2
    assert "campaign 'dss-v21' exists already" in capsys.readouterr().err and len(airflow.posted) == 1


def test_start_without_id_is_named_after_its_run(airflow, capsys):
    airflow.paused = True
    assert cli.main(["campaign", "start", "--frc", "demo-sunspots", "--first", "2024-03-01",
                     "--last", "2024-03-01"]) == 0
    assert airflow.posted[0]["conf"]["campaign_id"] is None
    captured = capsys.readouterr()
    assert "campaign manual-20261203T080100000001:" in captured.out
    assert "DAG hfc_campaign is paused" in captured.err


def test_retry_takes_the_next_attempt_past_airflow_and_slurm(airflow, cluster, capsys):
    first = {"frc": "demo-sunspots", "first": "2024-03-01", "last": "2024-03-30", "version": None,
             "campaign_id": None, "retry_nights": []}
    airflow.runs = [{"dag_run_id": "manual__2026-12-01T10:00:00+00:00", "state": "failed", "conf": first,
                     "run_after": "2026-12-01T10:00:00Z"},
                    {"dag_run_id": "r-1", "state": "failed", "run_after": "2026-12-02T10:00:00Z",
                     "conf": {**first, "campaign_id": "manual-20261201T100000", "retry_nights": ["2024-03-04"],
                              "retry_attempt": 1}}]
    # SLURM knows a chunk of attempt 2 whose run is gone: its name is never used again
    cluster.listing = "501_0|hfc.demo-sunspots.campaign.manual-20261201T100000.r2-0\n"
    assert cli.main(["campaign", "retry", "manual-20261201T100000", "--night", "2024-03-09",
                     "--night", "2024-03-04"]) == 0
    assert airflow.posted == [{"logical_date": None, "conf": {
        **first, "campaign_id": "manual-20261201T100000", "retry_nights": ["2024-03-04", "2024-03-09"],
        "retry_attempt": 3}}]
    assert "--starttime=2026-11-30T10:00:00" in cluster.commands[0]
    assert "retry 3 of 2 night(s) 2024-03-04, 2024-03-09" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["start", "--frc", "nope", "--first", "2024-03-01", "--last", "2024-03-02"], "unknown FRC 'nope'"),
    (["start", "--frc", "demo-sunspots", "--first", "2024-13-01", "--last", "2024-03-02"],
     "night '2024-13-01' is not a date"),
    (["start", "--frc", "demo-sunspots", "--first", "2024-03-05", "--last", "2024-03-02"],
     "last night 2024-03-02 is before the first 2024-03-05"),
    (["start", "--frc", "demo-sunspots", "--first", "2024-03-01", "--last", "2024-03-02", "--campaign-id",
      "x;rm -rf ~"], "campaign id 'x;rm -rf ~'"),
    (["status", "a$(id)"], "campaign id 'a$(id)'"),
    (["cancel", "`id`"], "campaign id '`id`'"),
    (["status", "ghost"], "no campaign 'ghost': no run of DAG hfc_campaign has it"),
    (["retry", "ghost", "--night", "2024-03-01"], "no campaign 'ghost'"),
])
def test_bad_input_is_refused_naming_what(airflow, cluster, capsys, argv, message):
    assert cli.main(["campaign", *argv]) == 2
    assert message in capsys.readouterr().err
    assert airflow.posted == [] and cluster.commands == []


def test_retry_of_a_night_outside_the_campaign_is_refused(airflow, cluster, capsys):
    airflow.runs = [{"dag_run_id": "r0", "state": "success", "run_after": "2026-12-01T10:00:00Z",
                     "conf": {"frc": "demo-sunspots", "first": "2024-03-01", "last": "2024-03-30",
                              "campaign_id": "c1", "retry_nights": []}}]
    assert cli.main(["campaign", "retry", "c1", "--night", "2024-04-01"]) == 2
    assert "nights ['2024-04-01'] are not in campaign c1 (2024-03-01 to 2024-03-30)" in capsys.readouterr().err
    assert airflow.posted == []


def test_airflow_unreachable_is_named(monkeypatch, capsys):
    monkeypatch.setenv("HFC_AIRFLOW_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HFC_AIRFLOW_PASSWORD", "pw")
    assert cli.main(["campaign", "status", "c1"]) == 2
    assert "Airflow at http://127.0.0.1:9 cannot be reached" in capsys.readouterr().err


def test_status_prints_counts_eta_and_failed_nights_with_reasons(airflow, cluster, capsys):
    airflow.runs = [{"dag_run_id": "r0", "state": "running", "run_after": "2026-12-01T10:00:00Z",
                     "conf": {"frc": "demo-sunspots", "first": "2024-03-01", "last": "2024-03-04",
                              "campaign_id": "c1", "retry_nights": []}}]
    cluster.listing = "700_0|hfc.demo-sunspots.campaign.c1.0\n700_[2-3%1]|hfc.demo-sunspots.campaign.c1.0\n"
    cluster.sacct = ("700_0|n|COMPLETED|0:0|00:00:10|s|e|vm|None|t\n700_1|n|FAILED|3:0|00:00:02|s|e|vm|None|t\n"
                     "700_[2-3%1]|n|PENDING|0:0|00:00:00|s|e|None|JobArrayTaskLimit|t\n")
    assert cli.main(["campaign", "status", "c1", "--no-catalogue"]) == 0
    out = capsys.readouterr().out
    assert "campaign c1: FRC demo-sunspots, nights 2024-03-01..2024-03-04 (4)" in out
    assert "arrays: 0=700" in out and "runs: r0 (running)" in out
    assert "1/4 done, 1 failed, 0 cancelled, 0 running, 2 pending; ETA 0:00:20" in out
    assert "  2024-03-02  job 700_1, state FAILED, exit code 3" in out
    assert cluster.commands[1] == "sacct -X -n -P -j 700 -o " + ",".join(slurm.SACCT_FIELDS)
    assert cli.main(["campaign", "status", "c1", "--no-catalogue", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["counts"] == {"done": 1, "failed": 1, "cancelled": 0, "running": 0, "pending": 2}
    assert d["failed"]["2024-03-02"].startswith("job 700_1, state FAILED") and d["runs"][0]["run_id"] == "r0"
