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

import os
import subprocess
import time
from pathlib import Path

from helpers import Instance, local_registry

from hfc_tasks.airflow_api import AirflowAPI

PORT = 8093
FRCS = ("ops-sunspots", "ops-spots-b")

REGISTRY = local_registry("ops", "tests/e2e/ops_instance.py", """\
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
""")


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


def instance() -> Instance:
    return Instance(env())


def hfc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return instance().hfc(*args, timeout=timeout)


def stack_env() -> dict[str, str]:
    """The environment the instance's components run with (catalogue DSN, passwords file...)."""
    return instance().stack_env()


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
    api = instance().up(timeout=400)
    return api, time.monotonic() - t0


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
    return instance().password()


def run_dir() -> Path:
    from hfc_tasks.ops.localsite import state_dir

    return state_dir() / "airflow" / "stack-ops"
