"""docker-compose.yaml: the production stack, checked without a Docker engine.

Structure (PyYAML, anchors resolved): Airflow's official shape with the CeleryExecutor, the HFC
catalogue database, SSH keys and known_hosts in the workers *and* the triggerer, the example
SLURM head/compute nodes and SFTP archive; every published port on 127.0.0.1. Then
``docker-compose config -q`` (Debian's docker-compose 1.29) validates it against the compose
schema, when the tool is installed (``make test`` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init"}
SSH_SERVICES = {"airflow-worker", "airflow-triggerer", "airflow-apiserver"}
SITE_SERVICES = {"slurm-head", "slurm-compute", "sftp-archive"}
ENV = {"AIRFLOW_JWT_SECRET": "x" * 32, "AIRFLOW_CONN_HFC_CLUSTER": "ssh://cluster@slurm-head",
       "AIRFLOW_CONN_HFC_ARCHIVE": "sftp://archive@sftp-archive", "HFC_HQI_DB_PASSWORD": "y" * 24,
       "HFC_REDIS_PASSWORD": "z" * 24}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _target(mount: str) -> str:
    """The container path of a short-syntax mount (the source may be ``${VAR:-default}/x``)."""
    source_end = mount.index("}") + 1 if mount.startswith("${") else 0
    return mount[source_end:].split(":")[1]


def _env(service: dict) -> dict:
    env = service.get("environment") or {}
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def test_official_shape_with_celery_redis_postgres(compose):
    services = compose["services"]
    assert AIRFLOW_SERVICES | {"postgres", "redis", "catalogue-db"} <= set(services)
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        env = _env(svc)
        assert svc["image"].startswith("${HFC_AIRFLOW_IMAGE:-hfc-airflow"), name
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://") and "@redis:6379" in env[
            "AIRFLOW__CELERY__BROKER_URL"], name
        assert "@postgres/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"].startswith("${AIRFLOW_JWT_SECRET:?"), name
        assert "catalogue-db" in env["AIRFLOW_CONN_HFC_CATALOGUE"], name
    commands = {n: services[n].get("command") for n in AIRFLOW_SERVICES - {"airflow-init"}}
    assert commands == {"airflow-apiserver": "api-server", "airflow-scheduler": "scheduler",
                        "airflow-dag-processor": "dag-processor", "airflow-triggerer": "triggerer",
                        "airflow-worker": "celery worker"}
    init = "\n".join(services["airflow-init"]["command"])
    assert "airflow db migrate" in init and "hfc db upgrade" in init and "airflow pools import" in init
    assert services["airflow-worker"]["deploy"]["replicas"] not in (0, 1, "1")


def test_health_and_start_order(compose):
    services = compose["services"]
    for name in ("postgres", "redis", "catalogue-db", "airflow-apiserver", "airflow-scheduler",
                 "airflow-worker", "airflow-triggerer", "airflow-dag-processor", "slurm-head", "hqi"):
        assert "healthcheck" in services[name], name
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] in ("service_healthy", "service_completed_successfully", "service_started")
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_ssh_keys_and_known_hosts_in_workers_and_triggerer(compose):
    services = compose["services"]
    for name in SSH_SERVICES:
        mounts = services[name]["volumes"]
        targets = {_target(m): m for m in mounts}
        assert "/opt/airflow/ssh" in targets and targets["/opt/airflow/ssh"].endswith(":ro"), name
        assert "/home/airflow/.ssh/known_hosts" in targets, name
        assert targets["/home/airflow/.ssh/known_hosts"].endswith(":ro"), name
    # ...and nowhere else: the scheduler and the dag-processor never open SSH sessions.
    for name in ("airflow-scheduler", "airflow-dag-processor"):
        assert not any("/opt/airflow/ssh" in m for m in services[name]["volumes"]), name


def test_example_site_services(compose):
    services = compose["services"]
    assert SITE_SERVICES <= set(services)
    for name in SITE_SERVICES:
        assert services[name].get("profiles") == ["site"], name
    roles = {n: services[n]["command"] for n in SITE_SERVICES}
    assert roles == {"slurm-head": ["head"], "slurm-compute": ["compute"], "sftp-archive": ["archive"]}
    # Head and compute nodes share the munge key and the products file system.
    head = {_target(m) for m in services["slurm-head"]["volumes"]}
    compute = {_target(m) for m in services["slurm-compute"]["volumes"]}
    assert {"/etc/munge", "/data/hfc/products"} <= head & compute
    site_dir = REPO / services["slurm-head"]["build"]
    for name in ("Dockerfile", "entrypoint.sh", "slurm.conf", "slurmdbd.conf", "sshd_config", "make-secrets.sh"):
        assert (site_dir / name).exists(), name
    slurm_conf = (site_dir / "slurm.conf").read_text()
    assert "SlurmctldHost=slurm-head" in slurm_conf and "NodeName=slurm-compute" in slurm_conf
    assert "accounting_storage/slurmdbd" in slurm_conf  # sacct needs slurmdbd
    # The production site of the registry uses the example site's paths.
    registry = yaml.safe_load((REPO / "config" / "registry.yaml").read_text())
    prod = registry["sites"]["production"]
    assert prod["products_root"] == "/data/hfc/products" and prod["archive_root"] == "/pub/hfc"
    assert prod["frc_root"] == "/opt/hfc/frcs"


def test_the_hqi_query_service(compose):
    """The readers' service: the project's image, `hfc hqi serve` outside Airflow's entrypoint and
    settings, the read-only role's DSN to the catalogue database, after `hfc db upgrade` made it."""
    services = compose["services"]
    hqi, init = services["hqi"], services["airflow-init"]
    assert hqi["build"] == "." and hqi["image"] == services["airflow-apiserver"]["image"]
    assert (REPO / "Dockerfile").exists()
    assert hqi["entrypoint"] == ["/usr/bin/dumb-init", "--"]
    assert hqi["command"] == ["hfc", "hqi", "serve", "--host", "0.0.0.0", "--port", "8191"]
    env = _env(hqi)
    assert set(env) == {"HFC_HQI_DSN", "HFC_HQI_URL"}  # nothing of Airflow's: no JWT secret, no connection
    assert env["HFC_HQI_DSN"].startswith("postgresql://hfc_hqi:${HFC_HQI_DB_PASSWORD:?")
    assert env["HFC_HQI_DSN"].endswith("@catalogue-db:5432/hfc")
    assert env["HFC_HQI_URL"] == "${HFC_HQI_URL:-http://127.0.0.1:8191/hfc-hqi}"
    assert not hqi.get("volumes")  # no SSH key, no secret, no DAG
    assert hqi["depends_on"] == {"catalogue-db": {"condition": "service_healthy"},
                                 "airflow-init": {"condition": "service_completed_successfully"}}
    # airflow-init's `hfc db upgrade` makes the role with the same password.
    assert "hfc db upgrade" in "\n".join(init["command"])
    assert _env(init)["HFC_HQI_DB_PASSWORD"].startswith("${HFC_HQI_DB_PASSWORD:?")
    assert hqi["ports"] == ["127.0.0.1:8191:8191"]
    check = hqi["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"] and "/HelioTavernaService?wsdl" in check[3]
    assert "os.environ['HFC_HQI_URL']" in check[3]


def test_the_hqi_healthcheck_asks_for_the_wsdl_at_the_public_path(compose, tmp_path):
    """The healthcheck's program, run here against a stand-in server: it asks for the WSDL at the
    path of HFC_HQI_URL (a proxy's base URL may have another path than /hfc-hqi) and fails on 404."""
    import http.server
    import threading

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(200 if self.path == "/hfc/hqi/HelioTavernaService?wsdl" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    program = compose["services"]["hqi"]["healthcheck"]["test"][3].replace("8191", str(server.server_port))
    try:
        for url, code in (("https://example.org/hfc/hqi/", 0), ("http://127.0.0.1:8191/hfc-hqi", 1)):
            proc = subprocess.run([sys.executable, "-c", program], env={"HFC_HQI_URL": url}, capture_output=True,
                                  timeout=30)
            assert (proc.returncode != 0) == bool(code), (url, proc.stderr)
    finally:
        server.shutdown()
    assert seen == ["/hfc/hqi/HelioTavernaService?wsdl", "/hfc-hqi/HelioTavernaService?wsdl"]


def test_published_ports_are_loopback_only(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_image_installs_the_package():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM apache/airflow:3.3.2-python3.11" in dockerfile
    assert "constraints.txt" in dockerfile and "/opt/hfc" in dockerfile


def test_init_imports_the_pools_the_registry_sizes(compose):
    init = "\n".join(compose["services"]["airflow-init"]["command"])
    assert "pools set" not in init  # no sizes written here: the registry's site has them
    assert "hfc config pools > /tmp/hfc-pools.json" in init and "airflow pools import /tmp/hfc-pools.json" in init


def pins(path: Path) -> dict[str, str]:
    """name -> version of a requirements file's own lines (not its -r includes)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-r"):
            name, sep, version = line.partition("==")
            assert sep and version, f"{path.name}: {line!r} is not pinned with =="
            found[name.lower()] = version
    return found


def test_the_image_installs_the_runtime_only_and_every_pin_is_locked():
    runtime, dev = pins(REPO / "requirements.txt"), pins(REPO / "requirements-dev.txt")
    # Tests, lint and the browser test stay out of the production image.
    assert not {"pytest", "pytest-timeout", "ruff", "playwright", "suds", "zeep"} & set(runtime)
    assert {"pytest", "ruff", "playwright"} <= set(dev)
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "-r /opt/hfc/requirements.txt" in dockerfile and "requirements-dev" not in dockerfile
    assert "-r requirements-dev.txt -c constraints.txt" in (REPO / "Makefile").read_text()
    locked = {k.lower(): v for k, _, v in (ln.strip().partition("==") for ln in
              (REPO / "constraints.txt").read_text().splitlines() if "==" in ln)}
    for name, version in {**runtime, **dev}.items():
        assert locked.get(name) == version, f"{name}=={version} is not what constraints.txt locks ({locked.get(name)})"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_validates():
    for profile in ([], ["--profile", "site"]):
        proc = subprocess.run(["docker-compose", "-f", str(COMPOSE), *profile, "config", "-q"],
                              cwd=REPO, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr


def test_every_airflow_service_sends_statsd_metrics_to_the_exporter(compose):
    """Airflow's StatsD client (and the pipeline's metrics through it) on in every Airflow process,
    to the statsd-exporter service unless .env names another StatsD host."""
    services = compose["services"]
    for name in AIRFLOW_SERVICES | {"airflow-cli", "flower"}:
        env = _env(services[name])
        assert env["AIRFLOW__METRICS__STATSD_ON"] == "True", name
        assert env["AIRFLOW__METRICS__STATSD_HOST"] == "${HFC_STATSD_HOST:-statsd-exporter}", name
        assert env["AIRFLOW__METRICS__STATSD_PORT"] == "${HFC_STATSD_PORT:-9125}", name
        assert env["AIRFLOW__METRICS__STATSD_PREFIX"] == "airflow", name
    exporter = services["statsd-exporter"]
    assert exporter["image"].startswith("prom/statsd-exporter:v")  # a pinned release, not latest
    assert "9125/udp" in exporter["expose"] and exporter["ports"] == ["127.0.0.1:9102:9102"]
    assert "healthcheck" in exporter
    # the HQI service stays outside Airflow: no metrics settings either
    assert not any(k.startswith("AIRFLOW__") for k in _env(services["hqi"]))


def test_migrations_run_only_in_the_init_service(compose):
    """`airflow db migrate` and `hfc db upgrade` (DDL rights) only in airflow-init: no other service's
    command or entrypoint runs them, and none asks the image's entrypoint to (_AIRFLOW_DB_MIGRATE)."""
    services = compose["services"]
    init = services["airflow-init"]
    assert "hfc db upgrade" in "\n".join(init["command"]) and "airflow db migrate" in "\n".join(init["command"])
    assert _env(init)["_AIRFLOW_DB_MIGRATE"] == "true"
    for name, svc in services.items():
        if name == "airflow-init":
            continue
        run = []
        for key in ("command", "entrypoint"):
            value = svc.get(key) or []
            run += [value] if isinstance(value, str) else [str(v) for v in value]
        text = " ".join(run)
        assert "db upgrade" not in text and "db migrate" not in text, f"{name} runs a migration: {text}"
        assert "_AIRFLOW_DB_MIGRATE" not in _env(svc), name
        assert "HFC_HQI_DB_PASSWORD" not in _env(svc) or name == "hqi", name
