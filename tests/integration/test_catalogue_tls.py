"""The catalogue connection honours its TLS extras on the local site (issue 14).

The site's PostgreSQL serves TLS with a certificate for 127.0.0.1 signed by the site CA, and
``AIRFLOW_CONN_HFC_CATALOGUE`` says ``sslmode: verify-full`` with that CA as ``sslrootcert``. With
the site's CA the pipeline's connection (``catalogue_connect``, through PostgresHook) and the
``hfc`` command line go over verified TLS; with another CA both refuse, naming the connection.
Before issue 14 the extras were dropped: the wrong CA connected silently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hfc_tasks.provider.catalogue_db import CatalogueConnectionError, catalogue_connect

pytestmark = pytest.mark.site

HFC = str(Path(sys.executable).with_name("hfc"))
WRONG = "hfc_tls_wrong_ca"


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory) -> Path:
    """A CA that did not sign the site's server certificate."""
    folder = tmp_path_factory.mktemp("wrong_ca")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"), "-days", "1",
                    "-subj", "/CN=not the HFC site CA"], check=True, capture_output=True)
    return folder / "ca.crt"


@pytest.fixture
def wrong_conn(site, wrong_ca, monkeypatch) -> str:
    """The site's catalogue connection, but trusting ``wrong_ca``."""
    conn = json.loads(site["AIRFLOW_CONN_HFC_CATALOGUE"])
    conn["extra"] = {**conn["extra"], "sslrootcert": str(wrong_ca)}
    monkeypatch.setenv(f"AIRFLOW_CONN_{WRONG.upper()}", json.dumps(conn))
    return WRONG


def ssl_in_use(conn) -> bool:
    (ssl,) = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    return ssl


def test_the_site_connection_verifies_the_server_against_the_site_ca(site):
    extra = json.loads(site["AIRFLOW_CONN_HFC_CATALOGUE"])["extra"]
    assert extra["sslmode"] == "verify-full"
    assert "BEGIN CERTIFICATE" in Path(extra["sslrootcert"]).read_text()


def test_catalogue_connect_goes_over_verified_tls(site):
    with catalogue_connect("hfc_catalogue") as conn:
        assert ssl_in_use(conn) is True
        assert conn.info.get_parameters().get("application_name") == "hfc-pipeline"


def test_the_cli_goes_over_verified_tls(site, fresh_db, monkeypatch):
    from hfc_tasks.ops import cli

    with cli._catalogue("hfc_catalogue") as conn:  # the connection of `hfc db|ingest|catalogue`
        assert ssl_in_use(conn) is True
    # The site's connection (its TLS extras) to a database of the test's own.
    conn = json.loads(site["AIRFLOW_CONN_HFC_CATALOGUE"])
    conn["schema"] = fresh_db.rsplit("/", 1)[1]
    monkeypatch.setenv("AIRFLOW_CONN_HFC_TLS_OWN", json.dumps(conn))
    run = subprocess.run([HFC, "catalogue", "stats", "--conn-id", "hfc_tls_own"], capture_output=True, text=True,
                         env=dict(os.environ), timeout=120)
    assert run.returncode == 0, run.stderr
    assert "rows per table" in run.stdout


def test_another_ca_is_refused_by_catalogue_connect_naming_the_connection(wrong_conn):
    with pytest.raises(CatalogueConnectionError) as err:
        catalogue_connect(wrong_conn).close()
    message = str(err.value)
    assert f"Airflow connection {WRONG!r}" in message and "certificate verify failed" in message
    assert "sslmode=verify-full" in message


def test_another_ca_is_refused_by_the_cli_naming_the_connection(wrong_conn):
    run = subprocess.run([HFC, "catalogue", "stats", "--conn-id", wrong_conn], capture_output=True, text=True,
                         env=dict(os.environ), timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    assert f"Airflow connection {WRONG!r}" in run.stderr and "certificate verify failed" in run.stderr
    assert "Traceback" not in run.stderr


def test_the_shared_cert_function_serves_both_shapes(site, tmp_path):
    """One home for the site CA and the server certificate (localsite/tls.py): the multihost shape
    calls it for its catalogue's address as the single-host site does for 127.0.0.1."""
    from hfc_tasks.ops.localsite import tls

    ca, key, crt = tmp_path / "tls" / "ca.crt", tmp_path / "pg" / "server.key", tmp_path / "pg" / "server.crt"
    tls.ensure_server_cert(tls_dir=ca.parent, ca_cert=ca, key=key, crt=crt, ca_name="a test CA", cn="catalogue",
                           san="IP:10.55.0.6,DNS:catalogue")
    made = crt.stat().st_mtime_ns
    tls.ensure_server_cert(tls_dir=ca.parent, ca_cert=ca, key=key, crt=crt, ca_name="a test CA", cn="catalogue",
                           san="IP:10.55.0.6,DNS:catalogue")
    assert crt.stat().st_mtime_ns == made  # idempotent: `up` on a running site makes nothing again
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(crt)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    text = subprocess.run(["openssl", "x509", "-in", str(crt), "-noout", "-text"], capture_output=True,
                          text=True, check=True).stdout
    assert "IP Address:10.55.0.6" in text and "DNS:catalogue" in text
    assert key.stat().st_mode & 0o077 == 0
