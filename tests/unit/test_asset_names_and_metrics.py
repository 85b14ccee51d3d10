"""Names of the published assets and of the pipeline's metrics; queue/run seconds from sacct."""

from __future__ import annotations

import datetime as dt

from hfc_tasks import assets, metrics, slurm
from hfc_tasks.metrics import Metric


def test_asset_per_frc_named_in_one_place():
    from hfc_tasks.provider.assets import catalogue_asset

    asset = catalogue_asset("demo-sunspots")
    assert asset.name == "hfc_catalogue/demo-sunspots" == assets.asset_name("demo-sunspots")
    # An x- scheme: Airflow keeps the URI as written (no provider normaliser rewrites it).
    assert asset.uri == "x-hfc://catalogue/demo-sunspots" == assets.asset_uri("demo-sunspots")
    assert asset.group == "hfc_catalogue"
    assert assets.partition_key(dt.date(2061, 3, 4)) == "2061-03-04"


def test_event_extra_carries_the_night_and_the_batch():
    extra = assets.event_extra(frc="f", night=dt.date(2061, 3, 4), batch_id=7, rows={"a": 2, "b": 3},
                               dag_run_id="manual__x", status="loaded")
    assert extra == {"frc": "f", "night": "2061-03-04", "batch_id": 7, "rows": {"a": 2, "b": 3}, "rows_total": 5,
                     "status": "loaded", "dag_run_id": "manual__x"}


def test_catalogue_task_has_its_frcs_asset_as_outlet():
    from hfc_tasks.provider.operators import CatalogueLoadOperator

    op = CatalogueLoadOperator(task_id="catalogue", frc="demo-sunspots")
    assert [o.name for o in op.outlets] == ["hfc_catalogue/demo-sunspots"]


def test_metric_names_put_the_frc_in_the_name_made_safe():
    assert metrics.metric_name("demo-sunspots", "archive.files") == "hfc.demo-sunspots.archive.files"
    # A dot would add a level to the StatsD hierarchy, ':' and '|' break the line format.
    assert metrics.metric_name("a.b:c|d e", "catalogue.rows") == "hfc.a_b_c_d_e.catalogue.rows"


def test_archive_and_catalogue_metrics():
    assert metrics.archive_metrics("f", copied=12, bytes_copied=3456) == [
        Metric("incr", "hfc.f.archive.files", 12), Metric("incr", "hfc.f.archive.bytes", 3456)]
    assert metrics.catalogue_metrics("f", rows={"t1": 5, "t2": 7}, rejected_files=2) == [
        Metric("incr", "hfc.f.catalogue.rows", 12), Metric("incr", "hfc.f.catalogue.rejected_files", 2)]


def test_slurm_seconds_from_sacct_times():
    got = metrics.slurm_metrics("f", submit="2026-12-02T22:40:01", start="2026-12-02T22:40:05",
                                end="2026-12-02T22:41:05")
    assert got == [Metric("gauge", "hfc.f.slurm.queue_seconds", 4.0), Metric("gauge", "hfc.f.slurm.run_seconds", 60.0)]
    # Cancelled while pending: never started, so no queue or run time rather than a wrong one.
    assert metrics.slurm_metrics("f", submit="2026-12-02T22:40:01", start="Unknown", end="2026-12-02T22:50:00") == []
    assert metrics.slurm_metrics("f", submit="", start="", end="") == []


def test_sacct_gives_submit_and_still_reads_lines_without_it():
    line = ("11|hfc.a.20240301|COMPLETED|0:0|00:01:00|2024-03-02T00:00:05|2024-03-02T00:01:05|node1|None|"
            "2024-03-02T00:00:01")
    assert slurm.SACCT_FIELDS[-1] == "Submit"
    job = slurm.parse_sacct(line + "\n")["11"]
    assert (job.submit, job.start, job.end) == ("2024-03-02T00:00:01", "2024-03-02T00:00:05", "2024-03-02T00:01:05")
    old = slurm.parse_sacct(line.rsplit("|", 1)[0] + "\n")["11"]  # an older poller's line
    assert old.submit == "" and old.succeeded
    # The trigger's event carries the status as a dict: submit goes along, and old events still load.
    assert slurm.JobStatus(**job.to_dict()) == job
    legacy = {k: v for k, v in job.to_dict().items() if k != "submit"}
    assert slurm.JobStatus(**legacy).submit == ""


class _Client:
    def __init__(self, fail: str | None = None):
        self.sent, self.fail = [], fail

    def incr(self, stat, count=None, rate=None):
        if stat == self.fail:
            raise OSError("no route")
        self.sent.append(("incr", stat, count))

    def gauge(self, stat, value, rate=None, delta=None):
        self.sent.append(("gauge", stat, value))


def test_send_uses_counters_and_gauges_and_never_fails_the_task():
    client, warnings = _Client(fail="hfc.f.archive.files"), []
    metrics.send(client, metrics.archive_metrics("f", copied=3, bytes_copied=10)
                 + [Metric("gauge", "hfc.f.slurm.run_seconds", 1.5)], warn=lambda *a: warnings.append(a))
    assert client.sent == [("incr", "hfc.f.archive.bytes", 10), ("gauge", "hfc.f.slurm.run_seconds", 1.5)]
    assert warnings and warnings[0][1] == "hfc.f.archive.files"


def test_airflow_stats_client_accepts_our_names(monkeypatch):
    """The operators send through Airflow's Stats: with StatsD on, our names reach the wire."""
    import socket

    from airflow.sdk._shared.observability.metrics import stats as sdk_stats
    from airflow.sdk._shared.observability.metrics.statsd_logger import get_statsd_logger
    from airflow.sdk.observability.stats import Stats
    from statsd import StatsClient

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    sdk_stats.initialize(factory=lambda: get_statsd_logger(stats_class=StatsClient, host="127.0.0.1", port=port,
                                                           prefix="airflow"), export_legacy_names=False)
    try:
        metrics.send(Stats, metrics.archive_metrics("demo-x", copied=4, bytes_copied=99)
                     + metrics.slurm_metrics("demo-x", submit="2026-01-01T00:00:00", start="2026-01-01T00:00:02",
                                             end="2026-01-01T00:00:09"))
        got = {sock.recv(4096).decode() for _ in range(4)}
    finally:
        sock.close()
        sdk_stats.initialize(factory=sdk_stats.NoStatsLogger, export_legacy_names=True)
    assert got == {"airflow.hfc.demo-x.archive.files:4|c", "airflow.hfc.demo-x.archive.bytes:99|c",
                   "airflow.hfc.demo-x.slurm.queue_seconds:2.0|g", "airflow.hfc.demo-x.slurm.run_seconds:7.0|g"}
