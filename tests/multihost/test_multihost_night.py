"""The real pipeline on the multihost site (issue 10): the scheduled night of every FRC of the
production-shaped registry (``config/registry.multihost.yaml``: detector, its tracker in the
detector's archive folder, an active-region code needing 2 CPUs), run by the real Airflow stack
with the CeleryExecutor (the session's stack ``mh``, tests/multihost/conftest.py).

Airflow runs in the root namespace and reaches the hosts only by their addresses, through the
multihost connections (``AIRFLOW_CONN_HFC_MH_*`` from ``hfc site env --shape multihost``). The
DAG is unpaused and the scheduler starts the latest night itself; then every task succeeded, on
both workers; the SLURM jobs ran on the nodes their partition and CPUs allow (sacct over SSH on
login); the archive host holds every file with its manifest's sha256; the catalogue host
(PostgreSQL, TLS verify-full) has one batch per FRC with rows; `hfc audit` exits 0.
Run alone: ``pytest -m multihost tests/multihost`` (as root).
"""

from __future__ import annotations

import json
import subprocess
import time

import psycopg
import pytest

from hfc_tasks.ops.localsite import multihost

from .conftest import DAG, DETECTOR, STAGES, TIMINGS, TRACKER, MHStack, now_on_login, ssh_client, ssh_exec

pytestmark = pytest.mark.multihost


# --------------------------------------------------------------------------------------- tests
def test_catalogue_connection_honours_its_tls_extras(mh, tmp_path, monkeypatch):
    """The pipeline's catalogue connection verifies the server as the connection's extras say
    (sslmode verify-full, sslrootcert): with another CA it must refuse, not fall back."""
    from hfc_tasks.provider import catalogue_db

    conn = json.loads(mh["AIRFLOW_CONN_HFC_MH_CATALOGUE"])
    monkeypatch.setenv("AIRFLOW_CONN_HFC_MH_CATALOGUE", json.dumps(conn))
    with catalogue_db.catalogue_connect("hfc_mh_catalogue") as c:
        ssl, = c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert ssl is True
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "k"), "-out", str(other_ca), "-days", "1",
                    "-subj", "/CN=impostor CA"], check=True, capture_output=True)
    conn["extra"]["sslrootcert"] = str(other_ca)
    monkeypatch.setenv("AIRFLOW_CONN_HFC_MH_CATALOGUE", json.dumps(conn))
    with pytest.raises(catalogue_db.CatalogueConnectionError, match="certificate verify failed"):
        catalogue_db.catalogue_connect("hfc_mh_catalogue").close()


def _scheduled_run(stack: MHStack, timeout: float = 120) -> tuple[dict, bool]:
    """The scheduler's run of the latest complete night (catchup off), once the DAG is unpaused.
    A run of that interval left by an earlier session is cleared, so that it runs again now."""
    api = stack.api
    dag = api.get(f"/dags/{DAG}")
    was_paused = dag["is_paused"]
    runs = api.get(f"/dags/{DAG}/dagRuns?run_type=scheduled&order_by=-logical_date&limit=1")["dag_runs"]
    if was_paused:
        api.patch(f"/dags/{DAG}", {"is_paused": False})
    if runs and runs[0]["state"] in ("success", "failed"):
        latest = runs[0]
        api.post(f"/dags/{DAG}/dagRuns/{latest['dag_run_id']}/clear", {"dry_run": False})
        return api.get(f"/dags/{DAG}/dagRuns/{latest['dag_run_id']}"), True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.get(f"/dags/{DAG}/dagRuns?run_type=scheduled&order_by=-logical_date&limit=1")["dag_runs"]
        if runs:
            return runs[0], False
        time.sleep(2)
    raise AssertionError(f"no scheduled run of {DAG} {timeout} s after unpausing it")


def test_scheduled_night_on_the_multihost_site(mh_stack: MHStack, mh):
    stack = mh_stack
    reg = stack.reg
    site = reg.site()
    frcs = {f.name: f for f in reg.enabled_frcs}  # the FRCs of the DAG on this site
    assert {DETECTOR, TRACKER} <= set(frcs) and frcs[TRACKER].archive_dir == DETECTOR, sorted(frcs)
    assert site.stagger_seconds > 0 and all(f.slurm.partition for f in frcs.values())
    assert any(f.slurm.cpus == 2 for f in frcs.values()) and all(f.lag_nights == 1 for f in frcs.values())
    since = now_on_login()  # sacct -S on login (the same clock): only this test's jobs count
    t0 = time.monotonic()
    run, cleared = _scheduled_run(stack)
    night = run["data_interval_start"][:10]
    ymd = night.replace("-", "")
    state = stack.wait_run(run["dag_run_id"], timeout=900)
    TIMINGS["scheduled night"] = time.monotonic() - t0
    tis = stack.tis(run["dag_run_id"])
    table = stack.table(run["dag_run_id"])
    print(f"\n[multihost night] scheduled run {run['dag_run_id']} night {night}: {state}\n{table}")

    # Every task succeeded, at its first try, and the tasks ran on both Celery workers.
    assert state == "success", table
    assert {ti["task_id"] for ti in tis} == {f"{f}.{s}" for f in frcs for s in STAGES}, table
    assert all(ti["state"] == "success" for ti in tis), table
    if not cleared:  # a cleared run's tries go on counting
        assert all(ti["try_number"] == 1 for ti in tis), f"a task needed a retry:\n{table}"
    workers = {ti["hostname"].split("@", 1)[0] for ti in tis}
    assert workers == {"worker1", "worker2"}, f"tasks ran on {workers}, not on both Celery workers:\n{table}"

    # SLURM: one job per FRC, completed, on the node its partition and CPUs allow (sacct on login).
    jobs = {}
    for frc in frcs:
        rows = stack.jobs(frc, night, since)
        assert len(rows) == 1, f"{frc} {night}: jobs since {since}: {rows}"
        jobs[frc] = rows[0]
    print(f"[multihost night] SLURM jobs: {jobs}")
    for frc, (_, job_state, nodelist, part, cpus) in jobs.items():
        want = frcs[frc].slurm
        # Where the partition and the CPUs allow: a 2-CPU job fits on node2 only.
        nodes = {n for n in multihost.PARTITIONS[want.partition] if multihost.NODE_CPUS[n] >= want.cpus}
        assert job_state == "COMPLETED" and part == want.partition and cpus == str(want.cpus), (frc, jobs[frc])
        assert nodelist in nodes, (frc, jobs[frc], nodes)
    assert {j[2] for j in jobs.values()} == {"node1", "node2"}, f"the jobs did not use both nodes: {jobs}"

    # The archive host holds every file of each (FRC, night) manifest with its sha256 (computed
    # on the archive host through its forced command), the tracker in the detector's folder.
    root = mh["HFC_MH_ARCHIVE_ROOT"]
    archive = ssh_client(mh["AIRFLOW_CONN_HFC_MH_ARCHIVE"])
    try:
        sftp = archive.open_sftp()
        manifests = {}
        for frc in frcs:
            with sftp.open(f"{root}/{frcs[frc].archive_dir}/manifests/{frc}/{ymd}.json") as fh:
                manifests[frc] = json.loads(fh.read())
        sftp.close()
        for frc, manifest in manifests.items():
            assert manifest["frc"] == frc and manifest["night"] == night
            assert manifest["slurm_job_id"] == jobs[frc][0], (frc, manifest["slurm_job_id"], jobs[frc])
            assert manifest["files"], f"{frc}: empty manifest"
            for entry in manifest["files"]:
                assert entry["archive_path"].startswith(f"{frcs[frc].archive_dir}/"), entry
                rc, out, err = ssh_exec(archive, f"sha256sum -- {root}/{entry['archive_path']}")
                assert rc == 0, f"{frc}: {entry['archive_path']}: {err}"
                assert out.split()[0] == entry["sha256"], f"{frc}: {entry['archive_path']} differs from its manifest"
        assert "track" in {e["kind"] for e in manifests[TRACKER]["files"]}, manifests[TRACKER]["files"]
    finally:
        archive.close()

    # The catalogue host: one batch per FRC for the night, loaded by this run, with rows.
    with psycopg.connect(mh["HFC_MH_CATALOGUE_DSN"], connect_timeout=10) as conn:
        batches = conn.execute("SELECT frc, status, row_counts, dag_run_id FROM hfc.batch WHERE night = %s "
                               "AND frc = ANY(%s) ORDER BY frc", (night, sorted(frcs))).fetchall()
    print(f"[multihost night] batches: {batches}")
    assert [b[0] for b in batches] == sorted(frcs), batches
    assert all(b[1] == "loaded" and b[3] == run["dag_run_id"] for b in batches), batches
    by_frc = {b[0]: b[2] for b in batches}
    assert by_frc[DETECTOR].get("sunspots", 0) > 0 and by_frc[DETECTOR].get("observations", 0) > 0, by_frc
    assert all(sum(counts.values()) > 0 for counts in by_frc.values()), by_frc

    # The check after each fault, with the multihost connections and the same registry.
    t1 = time.monotonic()
    stack.assert_audit(night, since=since)
    TIMINGS["audit"] = time.monotonic() - t1
