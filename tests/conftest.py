"""Shared fixtures: the local embedded site (real PostgreSQL, sshd, SLURM on loopback)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

UNIT = Path(__file__).resolve().parent / "unit"


def _only_unit_tests(config: pytest.Config) -> bool:
    """Whether every path pytest was given lies under tests/unit (the pure tests)."""
    paths = [Path(config.invocation_params.dir, arg.split("::")[0]).resolve() for arg in config.args]
    return bool(paths) and all(path.is_relative_to(UNIT) for path in paths)


def pytest_configure(config: pytest.Config) -> None:
    # Airflow reads its configuration when first imported (no conftest imports it): point it at
    # an AIRFLOW_HOME before any test module does, also when pytest is run directly rather than
    # through `make`. The pure tests (tests/unit alone, `make unit`) get a temporary one, so that
    # they need neither root nor the site nor write into the checkout; any other run gets the
    # local site's (SQLite metadata under .site/airflow). Settings already exported win.
    from hfc_tasks.ops.airflow_instance import airflow_env

    if _only_unit_tests(config):
        state = Path(tempfile.mkdtemp(prefix="hfc-unit-"))
        config.add_cleanup(lambda: shutil.rmtree(state, ignore_errors=True))
    else:
        from hfc_tasks.ops.localsite import state_dir

        state = state_dir()
    for key, value in airflow_env(state).items():
        os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def site() -> dict[str, str]:
    """Bring the local site up (fast when already running) and export its connection variables."""
    from hfc_tasks.ops import localsite

    localsite.up(verbose=False)
    env = localsite.env_vars()
    os.environ.update(env)
    return env


@pytest.fixture
def fresh_db(empty_db: str) -> str:
    """A catalogue database of its own, migrated as a deploy migrates it (``hfc db upgrade``: the
    loads and claims only check the schema); its DSN, dropped afterwards (empty_db)."""
    import psycopg

    from hfc_tasks.catalogue import schema

    with psycopg.connect(empty_db) as conn:
        schema.upgrade(conn)
        conn.commit()
    return empty_db


@pytest.fixture
def empty_db(site: dict[str, str]) -> Iterator[str]:
    """A brand-new empty database owned by role hfc (no schema: for the migrations' own tests);
    yields its DSN and drops it afterwards."""
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
