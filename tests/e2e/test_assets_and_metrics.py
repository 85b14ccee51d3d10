"""Assets and metrics of one night on the real scheduler (issue 14).

One night of one FRC in ``hfc_nightly`` on an instance of its own:

- its ``catalogue`` task publishes the asset ``hfc_catalogue/<frc>`` with the night as the
  event's partition key and in its extra (batch id, rows); the example consumer
  ``hfc_published_example`` (``PartitionedAssetTimetable``) runs for that night and succeeds,
  reporting the batch it read from the catalogue;
- a UDP listener standing in for StatsD receives Airflow's own metrics and the pipeline's
  (``airflow.hfc.<frc>.*``) with the values of that night: files archived = the manifest's
  files, rows = the batch's rows in the catalogue, a SLURM run time > 0.

Instance ``h5assets`` (metadata database ``airflow_h5assets``, port 8105, LocalExecutor,
catalogue database ``hfc_h5assets``), its own registry, run folders and archive tree; stopped at
the end, pass or fail.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import psycopg
import pytest
from helpers import Instance, a_spotted_night, local_registry

from hfc_tasks import products
from hfc_tasks.ops.localsite import state_dir

pytestmark = [pytest.mark.site, pytest.mark.slow]
DAG = "hfc_nightly"
CONSUMER = "hfc_published_example"
FRC = "h5-assets"
PORT = 8105
REGISTRY = local_registry("h5assets", "tests/e2e/test_assets_and_metrics.py", """\
  - name: h5-assets
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    # sleep 2: a run time sacct measures as more than 0 s (it counts whole seconds).
    command: sleep 2; /usr/bin/python3 {frc_root}/demo_sunspots.py -s {start} -e {end} -c {cadence} -o {run_dir}
    cadence_seconds: 21600
    slurm: {time: "00:10:00", mem: 256M, cpus: 1}
""")


class StatsdListener:
    """A UDP socket on 127.0.0.1 collecting StatsD lines (``name:value|type``) in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.lines.extend(line for line in data.decode("utf-8", "replace").splitlines() if line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def values(self, name: str) -> list[tuple[float, str]]:
        """(value, type) of every line of metric ``name``."""
        out = []
        for line in list(self.lines):
            stat, _, rest = line.partition(":")
            if stat == name:
                value, _, kind = rest.partition("|")
                out.append((float(value), kind.split("|")[0]))
        return out

    def names(self) -> set[str]:
        return {line.partition(":")[0] for line in list(self.lines)}


@pytest.fixture(scope="module")
def listener():
    lst = StatsdListener()
    yield lst
    lst.close()


@pytest.fixture(scope="module")
def instance(site, listener):
    """The h5assets instance up, both DAGs unpaused: (API client, catalogue DSN). Always stopped after."""
    registry = state_dir() / "h5assets" / "registry.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    registry.write_text(REGISTRY)
    h5 = Instance({
        **os.environ,
        "HFC_AIRFLOW_INSTANCE": "h5assets",
        "HFC_AIRFLOW_PORT": str(PORT),
        "HFC_AIRFLOW_EXECUTOR": "LocalExecutor",
        "HFC_AIRFLOW_CATALOGUE_DB": "hfc_h5assets",
        "HFC_REGISTRY": str(registry),
        "HFC_STATSD_PORT": str(listener.port),
    })
    try:
        api = h5.up()
        for dag in (DAG, CONSUMER):
            api.wait_for_dag(dag, timeout=180)
            api.patch(f"/dags/{dag}", {"is_paused": False})
        # Unpausing starts the scheduled run of the last day (catchup=False): its night sends
        # metrics of the same names, so it ends before the test's night starts, and what the
        # listener got until then is dropped.
        scheduled = wait_scheduled_run(api)
        assert api.wait_run(DAG, scheduled, timeout=600) in ("success", "failed")
        listener.lines.clear()
        yield api, h5.stack_env()["HFC_CATALOGUE_DSN"]
        for dag in (DAG, CONSUMER):
            api.patch(f"/dags/{dag}", {"is_paused": True})
    finally:
        down = h5.hfc("airflow", "down", timeout=200)
        assert down.returncode == 0, down.stderr[-2000:]


def wait_scheduled_run(api, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [r for r in api.get(f"/dags/{DAG}/dagRuns?limit=100")["dag_runs"] if r["run_type"] == "scheduled"]
        if runs:
            return runs[0]["dag_run_id"]
        time.sleep(2)
    raise TimeoutError(f"no scheduled run of {DAG} within {timeout} s of unpausing it")


def wait_consumer_run(api, night: str, timeout: float = 300) -> dict:
    """The consumer's run for partition ``night``, once it has ended."""
    deadline = time.monotonic() + timeout
    runs: list = []
    while time.monotonic() < deadline:
        runs = [r for r in api.get(f"/dags/{CONSUMER}/dagRuns?limit=100")["dag_runs"]
                if r.get("partition_key") == night]
        if runs and runs[0]["state"] in ("success", "failed"):
            return runs[0]
        time.sleep(2)
    raise TimeoutError(f"no ended run of {CONSUMER} for partition {night} within {timeout} s: {runs}")


def test_a_published_night_starts_the_consumer_and_the_metrics_arrive(instance, listener):
    api, dsn = instance
    night = a_spotted_night(dt.date(2062, 1, 1), 3000)
    run_id = api.post(f"/dags/{DAG}/dagRuns",
                      {"logical_date": None, "conf": {"night": night, "frcs": [FRC]}})["dag_run_id"]
    assert api.wait_run(DAG, run_id, timeout=600) == "success", api.task_states(DAG, run_id)

    with psycopg.connect(dsn) as conn:
        batch_id, row_counts = conn.execute(
            "select id, row_counts from hfc.batch where frc = %s and night = %s", (FRC, night)).fetchone()
    assert sum(row_counts.values()) > 0, row_counts

    # The asset event: partition = the night, the night and the batch in its extra.
    events = api.get("/assets/events?" + urllib.parse.urlencode(
        {"source_dag_id": DAG, "source_run_id": run_id, "limit": 100}))["asset_events"]
    assert [(e["name"], e["uri"], e["source_task_id"]) for e in events] == [
        (f"hfc_catalogue/{FRC}", f"x-hfc://catalogue/{FRC}", f"{FRC}.catalogue")], events
    (event,) = events
    assert event["partition_key"] == night
    assert {k: event["extra"][k] for k in ("frc", "night", "batch_id", "rows", "dag_run_id")} == {
        "frc": FRC, "night": night, "batch_id": batch_id, "rows": row_counts, "dag_run_id": run_id}

    # The consumer ran for that night, started by that event, and read that batch.
    consumer = wait_consumer_run(api, night)
    assert consumer["state"] == "success", api.task_states(CONSUMER, consumer["dag_run_id"])
    quoted = urllib.parse.quote(consumer["dag_run_id"], safe="")
    report = api.get(f"/dags/{CONSUMER}/dagRuns/{quoted}/taskInstances/report_night/xcomEntries/return_value"
                     "?deserialize=true")["value"]
    report = json.loads(report) if isinstance(report, str) else report
    assert report["night"] == night and report["published_by"] == [FRC], report
    assert report["batches"][FRC] == {"batch_id": batch_id, "status": "loaded", "rows": row_counts}, report

    # Metrics: Airflow's own and the pipeline's, with this night's values.
    manifest = json.loads((Path(os.environ["HFC_SITE_DIR"]) / "home" / "archive" / "hfc" / "_h5assets"
                           / products.manifest_relpath(FRC, FRC, dt.date.fromisoformat(night))).read_text())
    prefix = f"airflow.hfc.{FRC}."
    deadline = time.monotonic() + 30  # UDP in flight, the scheduler's heartbeat
    while time.monotonic() < deadline and not (
        listener.values("airflow.scheduler_heartbeat") and listener.values(prefix + "catalogue.rows")
    ):
        time.sleep(1)
    names = listener.names()
    assert listener.values("airflow.scheduler_heartbeat"), sorted(names)[:200]
    assert any(n.startswith("airflow.ti.finish") or n.startswith("airflow.ti_successes") for n in names), \
        sorted(names)[:200]
    assert listener.values(prefix + "archive.files") == [(len(manifest["files"]), "c")], sorted(names)
    assert listener.values(prefix + "archive.bytes")[0][0] == sum(f["size"] for f in manifest["files"])
    assert listener.values(prefix + "catalogue.rows") == [(sum(row_counts.values()), "c")]
    assert listener.values(prefix + "catalogue.rejected_files") == [(0, "c")]
    ((run_seconds, kind),) = listener.values(prefix + "slurm.run_seconds")
    assert kind == "g" and run_seconds >= 2
    ((queue_seconds, _),) = listener.values(prefix + "slurm.queue_seconds")
    assert 0 <= queue_seconds < 300
