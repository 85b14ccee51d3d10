"""The real pipeline on the multihost site (issue 10): one night of the demo detector and its
tracker, run by the real Airflow stack with the CeleryExecutor.

Airflow (api-server, scheduler, dag-processor, triggerer, Redis and two Celery workers: instance
``mh``, port 8110, Redis 6410, metadata in the single-host site's PostgreSQL) runs in the root
namespace and reaches the hosts only by their addresses, through the multihost connections
(``AIRFLOW_CONN_HFC_MH_*`` from ``hfc site env --shape multihost``). The night is triggered
through the REST API; then every task succeeded, on both workers; the SLURM jobs ran on both
nodes (sacct over SSH on login); the archive host holds every file with its manifest's sha256;
the catalogue host (PostgreSQL, TLS verify-full) has one batch per FRC with rows; `hfc audit`
exits 0. Run alone: ``pytest -m multihost tests/multihost`` (as root).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import psycopg
import pytest

from hfc_tasks.airflow_api import AirflowAPI
from hfc_tasks.localsite import multihost

pytestmark = pytest.mark.multihost

REPO = Path(__file__).resolve().parents[2]
DAG = "hfc_nightly"
NIGHT = "2024-03-14"
YMD = NIGHT.replace("-", "")
PORT, REDIS_PORT, INSTANCE = 8110, 6410, "mh"
DETECTOR, TRACKER = "demo-sunspots", "demo-sunspot-tracking"
TIMINGS: dict[str, float] = {}

REGISTRY = """\
# Registry of the multihost night test (tests/multihost/test_multihost_night.py): the
# production registry's shape on the multihost site; only site values differ.
default_site: multihost
sites:
  multihost:
    description: Multihost test site (login, node1, node2, archive, catalogue as namespaces)
    cluster_conn_id: hfc_mh_cluster
    archive_conn_id: hfc_mh_archive
    catalogue_conn_id: hfc_mh_catalogue
    products_root: {products}
    frc_root: {frcs}
    archive_root: {archive}
    public_url_base: file://{archive}
    default_partition: hfc
    stagger_seconds: 3
    cluster_unreachable_seconds: 300
    wait_margin_seconds: 600
frcs:
  - name: demo-sunspots
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    command: /usr/bin/python3 {{frc_root}}/demo_sunspots.py -s {{start}} -e {{end}} -c {{cadence}} -o {{run_dir}}
    cadence_seconds: 14400
    slurm: {{time: "00:10:00", mem: 256M, cpus: 1, partition: short}}
  - name: demo-sunspot-tracking
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    after: [demo-sunspots]
    archive_name: demo-sunspots
    rewrites: true
    command: >-
      /usr/bin/python3 {{frc_root}}/demo_sunspot_tracking.py -s {{start}} -e {{end}} -o {{run_dir}}
      --archive-url {{archive_url}} --detector demo-sunspots --detector-folder demo-sunspots
    slurm: {{time: "00:10:00", mem: 256M, cpus: 2, partition: hfc}}
"""


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def mh():
    """The multihost site: used as found when it runs, else brought up and taken down at the end."""
    started = not all(multihost.status(print_table=False).values())
    t0 = time.monotonic()
    if started:
        multihost.up(verbose=False)
    TIMINGS["site up"] = time.monotonic() - t0
    try:
        yield multihost.env_vars()
    finally:
        if started:
            multihost.down()
        print(f"\n[multihost night] timings (s): {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


def _load(path: Path, mh_env: dict[str, str]):
    from unittest import mock

    from hfc_tasks.registry import load_registry

    with mock.patch.dict(os.environ, mh_env):
        return load_registry(path)


def _registry_path(mh_env: dict[str, str]) -> Path:
    """This test's own registry (detector and tracker in one folder, partitions named, stagger);
    HFC_MH_NIGHT_PROJECT_REGISTRY=1 runs config/registry.multihost.yaml instead, when it validates
    (its tracker, with lag_nights 1, still fails its night here: exit 3; see the issue)."""
    shipped = REPO / "config" / "registry.multihost.yaml"
    if os.environ.get("HFC_MH_NIGHT_PROJECT_REGISTRY") == "1" and shipped.exists():
        from hfc_tasks.registry import RegistryError

        try:
            _load(shipped, mh_env)
            return shipped
        except RegistryError as exc:
            print(f"[multihost night] {shipped} does not validate, the test's own registry is used: {exc}")
    from hfc_tasks.localsite import state_dir

    path = state_dir() / "multihost-night" / "registry.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(REGISTRY.format(products=mh_env["HFC_MH_PRODUCTS_ROOT"],
                                    frcs=str(Path(mh_env["HFC_MH_SITE_DIR"]) / "home" / "cluster" / "frcs"),
                                    archive=mh_env["HFC_MH_ARCHIVE_ROOT"]))
    return path


def _env(mh_env: dict[str, str], registry: Path) -> dict[str, str]:
    return {**os.environ, **mh_env,
            "HFC_AIRFLOW_INSTANCE": INSTANCE, "HFC_AIRFLOW_PORT": str(PORT),
            "HFC_AIRFLOW_EXECUTOR": "CeleryExecutor", "HFC_REDIS_PORT": str(REDIS_PORT),
            "HFC_CELERY_WORKERS": "2", "HFC_REGISTRY": str(registry)}


def _hfc(env: dict[str, str], *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("hfc")), *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _stack_env(env: dict[str, str]) -> dict[str, str]:
    code = "import json; from hfc_tasks import airflow_stack; print(json.dumps(airflow_stack.stack_env()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stack(site, mh):
    """Instance ``mh`` (Redis, two Celery workers, Airflow components) with the multihost
    connections in its environment; stopped at the end, pass or fail."""
    registry = _registry_path(mh)
    env = _env(mh, registry)
    t0 = time.monotonic()
    try:
        proc = _hfc(env, "airflow", "up")
        assert proc.returncode == 0, f"hfc airflow up (mh) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        senv = _stack_env(env)
        with open(senv["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]) as f:
            api = AirflowAPI(f"http://127.0.0.1:{PORT}", "admin", json.load(f)["admin"])
        api.wait_for_dag(DAG, timeout=180)
        TIMINGS["stack up"] = time.monotonic() - t0
        yield {"api": api, "env": env, "registry": registry, "reg": _load(registry, mh)}
    finally:
        t1 = time.monotonic()
        down = _hfc(env, "airflow", "down", timeout=300)
        TIMINGS["stack down"] = time.monotonic() - t1
        assert down.returncode == 0, f"hfc airflow down (mh) failed:\n{down.stdout[-3000:]}\n{down.stderr[-3000:]}"


# ------------------------------------------------------------------------------------- helpers
def _client(conn_json: str) -> paramiko.SSHClient:
    """An SSH client as the connection says (key file, pinned host key, no trust on first use)."""
    conn = json.loads(conn_json)
    kind, b64 = conn["extra"]["host_key"].split()[:2]
    key = paramiko.Ed25519Key(data=base64.b64decode(b64))
    client = paramiko.SSHClient()
    client.get_host_keys().add(conn["host"], kind, key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(conn["host"], port=conn["port"], username=conn["login"], key_filename=conn["extra"]["key_file"],
                   look_for_keys=False, allow_agent=False, timeout=10)
    return client


def _exec(client: paramiko.SSHClient, cmd: str) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(cmd, timeout=60)
    out, err = stdout.read().decode(), stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


# --------------------------------------------------------------------------------------- tests
def test_catalogue_connection_honours_its_tls_extras(mh, tmp_path, monkeypatch):
    """The pipeline's catalogue connection verifies the server as the connection's extras say
    (sslmode verify-full, sslrootcert): with another CA it must refuse, not fall back."""
    from hfc_tasks import hooks

    conn = json.loads(mh["AIRFLOW_CONN_HFC_MH_CATALOGUE"])
    monkeypatch.setenv("AIRFLOW_CONN_HFC_MH_CATALOGUE", json.dumps(conn))
    with hooks.catalogue_connect("hfc_mh_catalogue") as c:
        ssl, = c.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert ssl is True
    other_ca = tmp_path / "other-ca.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(tmp_path / "k"), "-out", str(other_ca), "-days", "1",
                    "-subj", "/CN=impostor CA"], check=True, capture_output=True)
    conn["extra"]["sslrootcert"] = str(other_ca)
    monkeypatch.setenv("AIRFLOW_CONN_HFC_MH_CATALOGUE", json.dumps(conn))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        hooks.catalogue_connect("hfc_mh_catalogue").close()


def test_one_night_on_the_multihost_site(stack, mh):
    api: AirflowAPI = stack["api"]
    reg = stack["reg"]
    site = reg.site()
    frcs = {f.name: f for f in reg.enabled_frcs}  # the FRCs of the DAG on this site
    assert {DETECTOR, TRACKER} <= set(frcs) and frcs[TRACKER].archive_dir == DETECTOR, sorted(frcs)
    assert site.stagger_seconds > 0 and all(f.slurm.partition for f in frcs.values())
    # sacct -S on login (the same clock): only this test's jobs are counted by the audit.
    since = dt.datetime.now().replace(microsecond=0).isoformat()
    # A run left unfinished by a killed earlier session would hold the night: end it first.
    for old in api.get(f"/dags/{DAG}/dagRuns?limit=100")["dag_runs"]:
        if old["state"] not in ("success", "failed"):
            api.patch(f"/dags/{DAG}/dagRuns/{old['dag_run_id']}", {"state": "failed"})
    t0 = time.monotonic()
    api.patch(f"/dags/{DAG}", {"is_paused": False})
    try:
        run = api.post(f"/dags/{DAG}/dagRuns", {"logical_date": None, "conf": {"night": NIGHT}})
        state = api.wait_run(DAG, run["dag_run_id"], timeout=600)
        TIMINGS["night run"] = time.monotonic() - t0
    finally:
        # Unpausing a new DAG also starts its latest scheduled interval (catchup=False): let every
        # run end before pausing (a paused DAG's runs stop being scheduled), so that no job or
        # task is left behind when the stack stops.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = api.get(f"/dags/{DAG}/dagRuns?limit=100")["dag_runs"]
            if all(r["state"] in ("success", "failed") for r in runs):
                break
            time.sleep(2)
        api.patch(f"/dags/{DAG}", {"is_paused": True})
        TIMINGS["all runs ended"] = time.monotonic() - t0
    tis = api.get(f"/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances?limit=100")["task_instances"]
    table = "\n".join(f"  {ti['task_id']:<34} {ti['state']:<8} {ti['hostname']:<28} try {ti['try_number']} "
                      f"{(ti.get('duration') or 0):6.1f} s" for ti in sorted(tis, key=lambda t: t["task_id"]))
    print(f"\n[multihost night] run {run['dag_run_id']} night {NIGHT}: {state}\n{table}")

    # Every task succeeded, at its first try, and the tasks ran on both Celery workers.
    assert state == "success", table
    assert {ti["task_id"] for ti in tis} == {f"{f}.{s}" for f in frcs
                                            for s in ("submit", "wait", "archive", "catalogue")}, table
    assert all(ti["state"] == "success" for ti in tis), table
    assert all(ti["try_number"] == 1 for ti in tis), f"a task needed a retry:\n{table}"
    workers = {ti["hostname"].split("@", 1)[0] for ti in tis}
    assert workers == {"worker1", "worker2"}, f"tasks ran on {workers}, not on both Celery workers:\n{table}"

    # SLURM: one job per FRC, completed, on the node its partition and CPUs allow (sacct on login).
    login = _client(mh["AIRFLOW_CONN_HFC_MH_CLUSTER"])
    try:
        jobs = {}
        for frc in frcs:
            rc, out, err = _exec(login, f"sacct -X -n -P --name=hfc.{frc}.{YMD} -S {since} -E now "
                                        "-o JobIDRaw,State,NodeList,Partition,AllocCPUS")
            assert rc == 0, f"sacct on login: {err}"
            rows = [r.split("|") for r in out.split()]
            assert len(rows) == 1, f"{frc} {NIGHT}: jobs since {since}: {rows}"
            jobs[frc] = rows[0]
    finally:
        login.close()
    print(f"[multihost night] SLURM jobs: {jobs}")
    for frc, (_, job_state, nodelist, part, cpus) in jobs.items():
        want = frcs[frc].slurm
        # Where the partition and the CPUs allow: a 2-CPU job fits on node2 only.
        nodes = {n for n in multihost.PARTITIONS[want.partition] if multihost.NODE_CPUS[n] >= want.cpus}
        assert job_state == "COMPLETED" and part == want.partition and cpus == str(want.cpus), (frc, jobs[frc])
        assert nodelist in nodes, (frc, jobs[frc], nodes)
    assert {j[2] for j in jobs.values()} == {"node1", "node2"}, f"the jobs did not use both nodes: {jobs}"

    # The archive host holds every file of each (FRC, night) manifest with its sha256 (computed
    # on the archive host through its forced command), both FRCs in the detector's folder.
    root = mh["HFC_MH_ARCHIVE_ROOT"]
    archive = _client(mh["AIRFLOW_CONN_HFC_MH_ARCHIVE"])
    try:
        sftp = archive.open_sftp()
        manifests = {}
        for frc in frcs:
            with sftp.open(f"{root}/{frcs[frc].archive_dir}/manifests/{frc}/{YMD}.json") as fh:
                manifests[frc] = json.loads(fh.read())
        sftp.close()
        for frc, manifest in manifests.items():
            assert manifest["frc"] == frc and manifest["night"] == NIGHT
            assert manifest["slurm_job_id"] == jobs[frc][0], (frc, manifest["slurm_job_id"], jobs[frc])
            assert manifest["files"], f"{frc}: empty manifest"
            for entry in manifest["files"]:
                assert entry["archive_path"].startswith(f"{frcs[frc].archive_dir}/"), entry
                rc, out, err = _exec(archive, f"sha256sum -- {root}/{entry['archive_path']}")
                assert rc == 0, f"{frc}: {entry['archive_path']}: {err}"
                assert out.split()[0] == entry["sha256"], f"{frc}: {entry['archive_path']} differs from its manifest"
        assert "track" in {e["kind"] for e in manifests[TRACKER]["files"]}, manifests[TRACKER]["files"]
    finally:
        archive.close()

    # The catalogue host: one batch per FRC for the night, loaded by this run, with rows.
    with psycopg.connect(mh["HFC_MH_CATALOGUE_DSN"], connect_timeout=10) as conn:
        batches = conn.execute("SELECT frc, status, row_counts, dag_run_id FROM hfc.batch WHERE night = %s "
                               "AND frc = ANY(%s) ORDER BY frc", (NIGHT, sorted(frcs))).fetchall()
    print(f"[multihost night] batches: {batches}")
    assert [b[0] for b in batches] == sorted(frcs), batches
    assert all(b[1] == "loaded" and b[3] == run["dag_run_id"] for b in batches), batches
    by_frc = {b[0]: b[2] for b in batches}
    assert by_frc[DETECTOR].get("sunspots", 0) > 0 and by_frc[DETECTOR].get("observations", 0) > 0, by_frc
    assert all(sum(counts.values()) > 0 for counts in by_frc.values()), by_frc

    # The check after each fault, with the multihost connections and the same registry.
    t1 = time.monotonic()
    audit = _hfc(stack["env"], "--registry", str(stack["registry"]), "audit", "--night", NIGHT, "--since", since,
                 timeout=120)
    TIMINGS["audit"] = time.monotonic() - t1
    print(f"[multihost night] hfc audit:\n{audit.stdout}{audit.stderr}")
    assert audit.returncode == 0, f"hfc audit --night {NIGHT}: exit {audit.returncode}\n{audit.stdout}\n{audit.stderr}"
