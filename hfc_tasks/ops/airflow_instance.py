"""What an Airflow instance on the local site runs with: its settings, components and environment.

- ``airflow_env``: the Airflow settings of the local site (AIRFLOW_HOME, DAGs, API, login), also
  printed by ``hfc site env``;
- the instance chosen by environment variables read at import (``HFC_AIRFLOW_INSTANCE``, port,
  executor, Celery workers, Redis port, own catalogue database), its components and their
  commands, its run folder and metadata database;
- ``stack_env``: the environment every component of the instance is started with.

Starting and stopping the processes is :mod:`hfc_tasks.ops.airflow_stack`. No Airflow import.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

from hfc_tasks.ops.localsite import procs
from hfc_tasks.ops.localsite._util import write_secret
from hfc_tasks.registry import REPO_ROOT

COMPONENTS = {
    "api-server": ["api-server", "--host", "127.0.0.1", "--port", "{port}"],
    "scheduler": ["scheduler", "--skip-serve-logs"],
    "dag-processor": ["dag-processor"],
    "triggerer": ["triggerer", "--skip-serve-logs"],
}
PORT = int(os.environ.get("HFC_AIRFLOW_PORT", "8080"))
# Several stacks can run side by side (a LocalExecutor one and a CeleryExecutor one, say):
# each instance has its own metadata database, pid files and port (HFC_AIRFLOW_PORT).
INSTANCE = os.environ.get("HFC_AIRFLOW_INSTANCE", "main")
EXECUTOR = os.environ.get("HFC_AIRFLOW_EXECUTOR", "LocalExecutor")
# CeleryExecutor instances also run their own Redis broker (127.0.0.1:HFC_REDIS_PORT) and
# HFC_CELERY_WORKERS workers, each a separate Celery node (worker1@<host>, worker2@<host>...).
REDIS_PORT = int(os.environ.get("HFC_REDIS_PORT", "6380"))
CELERY_WORKERS = int(os.environ.get("HFC_CELERY_WORKERS", "2"))
CELERY_CONCURRENCY = int(os.environ.get("HFC_CELERY_CONCURRENCY", "2"))
# An instance may use its own catalogue database on the site's PostgreSQL (tests that must not
# touch the shared catalogue): HFC_AIRFLOW_CATALOGUE_DB=<name>, created if missing.
CATALOGUE_DB = os.environ.get("HFC_AIRFLOW_CATALOGUE_DB") or None
# Airflow's StatsD metrics and the pipeline's own (hfc_tasks.metrics) go to 127.0.0.1:HFC_STATSD_PORT
# (UDP: with no listener there they are dropped, nothing waits or fails).
STATSD_PORT_DEFAULT = "8125"


def airflow_env(state: Path) -> dict[str, str]:
    """Airflow settings for running the project on the local site (all on 127.0.0.1)."""
    home = state / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    # Secrets are created mode 0600 from their first byte (never written 0644, chmod-ed after).
    secret_file = home / "jwt_secret"
    if not secret_file.exists():
        write_secret(secret_file, secrets.token_urlsafe(32), replace=False)
    # The UI login of the local site: user admin, a password generated once (not in code or logs).
    passwords = home / "passwords.json"
    if not passwords.exists():
        write_secret(passwords, json.dumps({"admin": secrets.token_urlsafe(12)}), replace=False)
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": "8080",
        "AIRFLOW__API_AUTH__JWT_SECRET": secret_file.read_text().strip(),
        # User admin, role admin; a test instance may add users ("viewer:viewer,...").
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": os.environ.get("HFC_AIRFLOW_USERS") or "admin:admin",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }


def celery() -> bool:
    return EXECUTOR == "CeleryExecutor"


def instance_components() -> dict[str, list[str]]:
    """The processes of this instance, in start order (Redis and workers only with Celery)."""
    if not celery():
        return dict(COMPONENTS)
    comps: dict[str, list[str]] = {"redis": []}
    comps.update(COMPONENTS)
    for i in range(1, CELERY_WORKERS + 1):
        comps[f"worker{i}"] = ["celery", "worker", "--celery-hostname", f"worker{i}@%h",
                               "--concurrency", str(CELERY_CONCURRENCY), "--skip-serve-logs", "--without-mingle"]
    return comps


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the Celery workers of an instance: ``worker1@<host>``...

    Several workers on one machine would otherwise all record the same host name in their task
    instances; with this, the UI and the API say which worker ran each task.
    """
    import socket

    name = os.environ.get("HFC_WORKER_NAME")
    return f"{name}@{socket.getfqdn()}" if name else socket.getfqdn()


def component_env(name: str, env: dict[str, str], run_dir: Path) -> dict[str, str]:
    # Markers inherited by the component's children too: `down` and `hfc site status` find every
    # process of the instance by them, also when a pid file is lost (see localsite.procs).
    env = {**env, procs.MARK_DIR: str(run_dir), procs.MARK_INSTANCE: INSTANCE, procs.MARK_COMPONENT: name}
    if not name.startswith("worker"):
        return env
    return {**env, "HFC_WORKER_NAME": name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "hfc_tasks.ops.airflow_instance.worker_hostname"}


def component_port(name: str) -> tuple[int, str] | None:
    """The port a component binds, and the setting that chooses it."""
    if name == "api-server":
        return PORT, "HFC_AIRFLOW_PORT"
    if name == "redis":
        return REDIS_PORT, "HFC_REDIS_PORT"
    return None


def command(name: str, args: list[str], run_dir: Path) -> list[str]:
    if name == "redis":
        # Settings and password in a 0600 file, never in argv (readable by every local user).
        return ["redis-server", str(_redis_conf(run_dir))]
    return [airflow_bin(), *[a.format(port=PORT) for a in args]]


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _redis_conf(run_dir: Path) -> Path:
    return run_dir / "redis.conf"


def write_redis_conf(run_dir: Path) -> None:
    """The broker's configuration with its password (generated once per instance), both 0600.

    Written before Redis starts; a Redis started before this existed runs without a password,
    and the instance's broker URL then has none either (see _redis_password)."""
    pw_file = run_dir / "redis.password"
    if not pw_file.exists():
        write_secret(pw_file, secrets.token_urlsafe(24) + "\n", replace=False)
    pw = pw_file.read_text().strip()
    write_secret(_redis_conf(run_dir), (
        "# Written by hfc_tasks.ops.airflow_stack when the instance's Redis starts.\n"
        f"bind 127.0.0.1\nport {REDIS_PORT}\nprotected-mode yes\n"
        f'dir "{run_dir}"\nsave ""\nappendonly no\n'
        f"requirepass {pw}\n"))


def _redis_password(run_dir: Path) -> str | None:
    """The password of the instance's Redis if it was started with one (its conf exists)."""
    try:
        for line in _redis_conf(run_dir).read_text().splitlines():
            if line.startswith("requirepass "):
                return line.split(" ", 1)[1].strip()
    except OSError:
        pass
    return None


def instance_run_dir(env: dict[str, str]) -> Path:
    """The run folder (pid files, logs) of this instance under ``env``'s AIRFLOW_HOME."""
    path = Path(env["AIRFLOW_HOME"]) / ("stack" if INSTANCE == "main" else f"stack-{INSTANCE}")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_dir() -> Path:
    """This instance's run folder (pid files, logs): its processes run in it (see airflow_stack.down)."""
    return instance_run_dir(stack_env())


def database() -> str:
    """The instance's metadata database on the site's PostgreSQL."""
    return "airflow" if INSTANCE == "main" else f"airflow_{INSTANCE}"


def stack_env() -> dict[str, str]:
    """The environment of every component: the site's connections and Airflow settings."""
    from hfc_tasks.ops import localsite

    site = localsite.env_vars()
    env = {**os.environ, **site, **airflow_env(localsite.state_dir())}
    dsn = site["HFC_CATALOGUE_DSN"]  # postgresql://hfc:pw@127.0.0.1:port/hfc
    base = dsn.rsplit("/", 1)[0]
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": base.replace("postgresql://", "postgresql+psycopg2://")
            + f"/{database()}",
            "AIRFLOW__CORE__EXECUTOR": os.environ.get("HFC_AIRFLOW_EXECUTOR", "LocalExecutor"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{PORT}/execution/",
            "AIRFLOW__API__PORT": str(PORT),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{PORT}",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            "AIRFLOW__TRIGGERER__CAPACITY": "1000",
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": os.environ.get("HFC_STATSD_PORT") or STATSD_PORT_DEFAULT,
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
    )
    if env.get("HFC_REGISTRY"):
        # The components run in their run folder: a relative registry path would not be found.
        env["HFC_REGISTRY"] = os.path.abspath(env["HFC_REGISTRY"])
    if CATALOGUE_DB:
        env["HFC_CATALOGUE_DSN"] = f"{base}/{CATALOGUE_DB}"
        conn = json.loads(env["AIRFLOW_CONN_HFC_CATALOGUE"])
        conn["schema"] = CATALOGUE_DB
        env["AIRFLOW_CONN_HFC_CATALOGUE"] = json.dumps(conn)
    if celery():
        redis_pw = _redis_password(instance_run_dir(env))
        auth = f":{redis_pw}@" if redis_pw else ""  # token_urlsafe: nothing to quote
        env.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": f"redis://{auth}127.0.0.1:{REDIS_PORT}/0",
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+"
                + env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", ""),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CELERY_CONCURRENCY),
                # Tasks must be picked up at once in tests and demos (no prefetch of a whole batch).
                "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            }
        )
    return env
