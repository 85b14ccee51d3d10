"""A separate Airflow instance for the operations tests (status page, CeleryExecutor).

Instance ``ops``: its own metadata database (``airflow_ops``), port 8093, CeleryExecutor with
its own Redis (127.0.0.1:6393) and two Celery workers, its own catalogue database
(``hfc_ops``) and a registry whose FRCs, cluster run folders and archive tree are its own
(``ops-*`` FRCs under ``products/_ops`` and ``hfc/_ops``): nothing it does touches the main
instance or the shared catalogue that other tests use. Started and stopped through the
``hfc airflow`` command in a subprocess, since an instance is chosen by environment variables
read when :mod:`hfc_tasks.ops.airflow_stack` is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hfc_tasks.airflow_api import AirflowAPI

REPO = Path(__file__).resolve().parents[2]
PORT = 8093
FRCS = ("ops-sunspots", "ops-spots-b")

REGISTRY = """\
# Registry of the 'ops' test instance (written by tests/e2e/ops_instance.py).
default_site: local
sites:
  local:
    description: Local site, folders of the ops test instance
    products_root: ${HFC_SITE_DIR}/home/cluster/products/_ops
    frc_root: ${HFC_SITE_DIR}/home/cluster/frcs
    archive_root: ${HFC_SITE_DIR}/home/archive/hfc/_ops
    public_url_base: file://${HFC_SITE_DIR}/home/archive/hfc/_ops
    default_partition: debug
    stagger_seconds: 0
frcs:
  - name: ops-sunspots
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    command: /usr/bin/python3 {frc_root}/demo_sunspots.py -s {start} -e {end} -c {cadence} -o {run_dir}
    cadence_seconds: 21600
    slurm: {time: "00:10:00", mem: 256M, cpus: 1}
  - name: ops-spots-b
    version: 1.0.0
    feature: SUNSPOTS
    observatory: SDO
    instrument: HMI
    product_format: sdoss
    command: /usr/bin/python3 {frc_root}/demo_sunspots.py -s {start} -e {end} -c {cadence} -o {run_dir} --seed-salt b
    cadence_seconds: 43200
    slurm: {time: "00:10:00", mem: 256M, cpus: 1}
"""


def ensure_packages() -> None:
    """Debian packages the operations tests need: redis-server (the broker) and chromium (the
    browser test). Installed with apt-get when missing (the machine may be new)."""
    import shutil

    missing = [pkg for pkg, binary in (("redis-server", "redis-server"), ("chromium", "chromium"))
               if shutil.which(binary) is None]
    if missing:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def env() -> dict[str, str]:
    from hfc_tasks.ops.localsite import state_dir

    registry = state_dir() / "ops" / "registry.yaml"
    registry.parent.mkdir(parents=True, exist_ok=True)
    if not registry.exists() or registry.read_text() != REGISTRY:
        registry.write_text(REGISTRY)
    return {
        **os.environ,
        "HFC_AIRFLOW_INSTANCE": "ops",
        "HFC_AIRFLOW_PORT": str(PORT),
        "HFC_AIRFLOW_EXECUTOR": "CeleryExecutor",
        "HFC_REDIS_PORT": "6393",
        "HFC_CELERY_WORKERS": "2",
        "HFC_AIRFLOW_CATALOGUE_DB": "hfc_ops",
        "HFC_REGISTRY": str(registry),
        # The status page's permission tests: a read-only user, and one with no role (no right).
        "HFC_AIRFLOW_USERS": "admin:admin,viewer:viewer,nobody:",
    }


def hfc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("hfc")), *args], env=env(), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def stack_env() -> dict[str, str]:
    """The environment the instance's components run with (catalogue DSN, passwords file...)."""
    code = "import json; from hfc_tasks import airflow_stack; print(json.dumps(airflow_stack.stack_env()))"
    out = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# Set by up() when it started the instance (it was not already running, e.g. for another test
# session): the session's finaliser (tests/e2e/conftest.py) then stops it.
_started: list[bool] = []


def up() -> tuple[AirflowAPI, float]:
    """Start the instance (or find it running); returns a logged-in API client and the seconds taken.

    The instance (Redis, Celery workers, Airflow components) is stopped when the test session
    ends, pass or fail (``stop_if_started``, called by the session finaliser)."""
    t0 = time.monotonic()
    if not _started and hfc("airflow", "status", timeout=120).returncode != 0:
        _started.append(True)
    proc = hfc("airflow", "up", timeout=400)
    assert proc.returncode == 0, f"hfc airflow up (ops) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    senv = stack_env()
    with open(senv["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]) as f:
        password = json.load(f)["admin"]
    return AirflowAPI(f"http://127.0.0.1:{PORT}", "admin", password), time.monotonic() - t0


def down() -> None:
    """Stop every process of the instance (`hfc airflow down`: pid files and a process scan)."""
    proc = hfc("airflow", "down", timeout=300)
    assert proc.returncode == 0, f"hfc airflow down (ops) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


def stop_if_started() -> bool:
    """Stop the instance if this session started it; True if it did."""
    if not _started:
        return False
    _started.clear()
    down()
    return True


def password() -> str:
    with open(stack_env()["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]) as f:
        return json.load(f)["admin"]


def run_dir() -> Path:
    from hfc_tasks.ops.localsite import state_dir

    return state_dir() / "airflow" / "stack-ops"
