"""Shared fixtures: the local embedded site (real PostgreSQL, sshd, SLURM on loopback)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest


def _airflow_settings() -> None:
    # Airflow reads its configuration when first imported: point it at the local site's
    # AIRFLOW_HOME (SQLite metadata under .site/airflow) before any test module imports it,
    # also when pytest is run directly rather than through `make test`.
    from hfc_tasks.ops.cli import airflow_env
    from hfc_tasks.ops.localsite import state_dir

    for key, value in airflow_env(state_dir()).items():
        os.environ.setdefault(key, value)


_airflow_settings()


@pytest.fixture(scope="session")
def site() -> dict[str, str]:
    """Bring the local site up (fast when already running) and export its connection variables."""
    from hfc_tasks.ops import localsite

    localsite.up(verbose=False)
    env = localsite.env_vars()
    os.environ.update(env)
    return env


@pytest.fixture
def fresh_db(site: dict[str, str]) -> Iterator[str]:
    """A brand-new empty database owned by role hfc; yields its DSN and drops it afterwards."""
    import psycopg

    name = f"hfc_test_{secrets.token_hex(6)}"
    admin_dsn = site["HFC_CATALOGUE_DSN"]
    # Role hfc has CREATEDB, so the database it creates is its own; no superuser involved.
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(admin_dsn)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        import time

        # FORCE: a test that leaked a connection must not leave the database behind. It cannot
        # end a superuser's backend (an autovacuum worker analysing the tables the test filled,
        # seen in CI): such a backend is gone within seconds, so try again for a while.
        for attempt in range(20):
            try:
                with psycopg.connect(admin_dsn, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectInUse):
                if attempt == 19:
                    raise
                time.sleep(1)


@pytest.fixture(scope="session")
def airflow_db(site: dict[str, str]) -> str:
    """Airflow's metadata database (SQLite under .site/airflow), migrated once; returns AIRFLOW_HOME."""
    import subprocess
    import sys
    from pathlib import Path

    home = Path(os.environ["AIRFLOW_HOME"])
    marker = home / ".db-migrated"
    if not marker.exists():
        subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], check=True,
                       capture_output=True)
        marker.touch()
    return str(home)


@pytest.fixture(scope="module")
def test_airflow_db(airflow_db: str, tmp_path_factory) -> tuple[dict[str, str], object]:
    """A metadata DB of its own (SQLite), so that parsing tests/dags never touches the project's
    DAG records; returns (environment for `airflow dags test`, database path)."""
    import subprocess
    import sys
    from pathlib import Path

    db = tmp_path_factory.mktemp("airflow") / "airflow.db"
    env = {**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{db}"}
    subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env, check=True,
                   capture_output=True)
    return env, db
