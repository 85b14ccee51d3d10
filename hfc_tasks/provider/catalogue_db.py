"""Airflow layer: the connection to the HFC catalogue (PostgreSQL).

Every process (workers, triggerer, api-server's status page, the ``hfc`` command line) reaches the
catalogue through one Airflow connection id (``hfc_catalogue`` by default: ``AIRFLOW_CONN_HFC_CATALOGUE``
or the secrets backend), so a connection's TLS and libpq extras apply everywhere the same way.

Sync connections are the postgres provider's ``PostgresHook.get_conn()``: with SQLAlchemy 2 and
psycopg 3 installed (both are runtime requirements) the provider uses psycopg 3
(``USE_PSYCOPG3``), and it passes every extra that is not one of its own (``iam``, ``cursor``,
``sqlalchemy_*``, ...) to ``psycopg.connect`` as a libpq keyword: ``sslmode``, ``sslrootcert``,
``options``, ``connect_timeout``... reach libpq unchanged. The hook has no ``application_name``
argument, so ours is given as a default extra (an extra the operator wrote wins).

The triggerer's async connection (``psycopg.AsyncConnection``; the provider's hook is sync only)
takes :func:`catalogue_params`: the same fields and the libpq extras.
"""

from __future__ import annotations

import json
from copy import deepcopy

from airflow.providers.postgres.hooks.postgres import PostgresHook

DEFAULT_DATABASE = "hfc"
# The connection's extras that are libpq options (TLS above all: ``sslmode: verify-full`` with
# ``sslrootcert``), passed through as the operator wrote them; other extras are not libpq's.
LIBPQ_EXTRAS = frozenset({"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword",
                          "sslnegotiation", "ssl_min_protocol_version", "ssl_max_protocol_version",
                          "connect_timeout", "target_session_attrs", "options", "keepalives",
                          "keepalives_idle", "keepalives_interval", "keepalives_count", "application_name"})


class CatalogueConnectionError(RuntimeError):
    """The catalogue connection id is not defined, or the database refused it (the message names
    the connection id, the server and libpq's reason, e.g. ``certificate verify failed``)."""


def _how_to_define(conn_id: str) -> str:
    return (f"define it as AIRFLOW_CONN_{conn_id.upper()} (e.g. '{{\"conn_type\": \"postgres\", \"host\": ..., "
            f"\"login\": ..., \"password\": ..., \"schema\": \"hfc\", \"extra\": {{\"sslmode\": \"verify-full\", "
            f"\"sslrootcert\": ...}}}}'), with `airflow connections add {conn_id} --conn-type postgres ...` or in "
            "the secrets backend (docs/connections.md; `eval \"$(hfc site env)\"` defines it for the local site)")


def catalogue_connection(conn_id: str):
    """The Airflow connection ``conn_id``; :class:`CatalogueConnectionError` when it is not defined."""
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return PostgresHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise CatalogueConnectionError(f"no Airflow connection {conn_id!r} for the catalogue: "
                                       + _how_to_define(conn_id)) from None


def catalogue_params(conn, *, application_name: str = "hfc-pipeline") -> dict:
    """libpq parameters of an Airflow postgres connection: its fields and its libpq extras
    (e.g. ``sslmode``/``sslrootcert``: never a silent fall back to no check), for the triggerer's
    async connections."""
    extras = {k: str(v) for k, v in conn.extra_dejson.items() if k in LIBPQ_EXTRAS}
    return {
        "host": conn.host,
        "port": conn.port or 5432,
        "user": conn.login,
        "password": conn.password,
        "dbname": conn.schema or DEFAULT_DATABASE,
        "application_name": application_name,
        **extras,
    }


def catalogue_connect(conn_id: str, *, application_name: str = "hfc-pipeline"):
    """A psycopg 3 connection to the catalogue, made by ``PostgresHook`` from the Airflow
    connection ``conn_id`` with all its extras. Raises :class:`CatalogueConnectionError` (naming
    the connection and the server) when the id is unknown or the server cannot be reached or
    verified; the driver's error is its ``__cause__``."""
    import psycopg

    conn = deepcopy(catalogue_connection(conn_id))
    conn.schema = conn.schema or DEFAULT_DATABASE
    conn.extra = json.dumps({"application_name": application_name, **conn.extra_dejson})
    hook = PostgresHook(postgres_conn_id=conn_id, connection=conn)
    try:
        return hook.get_conn()
    except psycopg.OperationalError as exc:
        extra = conn.extra_dejson
        tls = f"sslmode={extra.get('sslmode', 'prefer')}" + (
            f", sslrootcert={extra['sslrootcert']}" if "sslrootcert" in extra else "")
        raise CatalogueConnectionError(
            f"cannot connect to the catalogue through the Airflow connection {conn_id!r} "
            f"({conn.host}:{conn.port or 5432}/{conn.schema}, {tls}): {' '.join(str(exc).split())}"
        ) from exc
