"""Shared fixtures: the local embedded site (real PostgreSQL, sshd, SLURM on loopback)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest


@pytest.fixture(scope="session")
def site() -> dict[str, str]:
    """Bring the local site up (fast when already running) and export its connection variables."""
    from hfc_tasks import localsite

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
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            # FORCE: a test that leaked a connection must not leave the database behind.
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
