"""Airflow layer: the connection to the HFC catalogue (PostgreSQL).

Every process (workers, triggerer, api-server's status page, the ``hfc`` command line) reaches the
catalogue through one Airflow connection id (``hfc_catalogue`` by default), so a connection's TLS
and libpq extras apply everywhere the same way.
"""

from __future__ import annotations

from airflow.providers.postgres.hooks.postgres import PostgresHook

# The connection's extras that are libpq options (TLS above all: ``sslmode: verify-full`` with
# ``sslrootcert``), passed through as the operator wrote them; other extras are not libpq's.
LIBPQ_EXTRAS = frozenset({"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword",
                          "sslnegotiation", "ssl_min_protocol_version", "ssl_max_protocol_version",
                          "connect_timeout", "target_session_attrs", "options", "keepalives",
                          "keepalives_idle", "keepalives_interval", "keepalives_count"})


def catalogue_params(conn, *, application_name: str = "hfc-pipeline") -> dict:
    """libpq parameters of an Airflow postgres connection: its fields and its libpq extras
    (e.g. ``sslmode``/``sslrootcert``: never a silent fall back to no check). One place for the
    workers' sync connections and the triggerer's async ones."""
    extras = {k: str(v) for k, v in conn.extra_dejson.items() if k in LIBPQ_EXTRAS}
    return {
        "host": conn.host,
        "port": conn.port or 5432,
        "user": conn.login,
        "password": conn.password,
        "dbname": conn.schema or "hfc",
        "application_name": application_name,
        **extras,
    }


def catalogue_connect(conn_id: str):
    """A psycopg 3 connection to the catalogue, from the Airflow postgres connection."""
    import psycopg

    return psycopg.connect(**catalogue_params(PostgresHook.get_connection(conn_id)))
